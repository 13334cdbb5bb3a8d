//! The state as sorted key-value entries: what the state root commits to, what the store
//! persists, and what proofs are about.
//!
//! Keys (big-endian numbers so that key order is numeric order):
//! ```text
//! "g"                               globals: chain id, height, chain params, supply counters
//! "a" || address                    account: balance, nonce
//! "e" || address                    serving escrow amount
//! "h" || hotkey                     hotkey: owner, take
//! "s" || hotkey || coldkey          stake amount
//! "u" || release_height || seq(u32) unbonding: coldkey, amount
//! "n" || netuid                     subnet: owner, params, share, pending, last epoch, burn, size
//! "r" || receipt id                 settled receipt: expiry height
//! "m" || netuid || uid              neuron
//! ```

use std::collections::BTreeMap;

use agora_codec::{Decode, Encode, Error, Reader, decode_exact, encode_bytes, encode_slice};
use agora_primitives::{
    Address, Amount, Hash, MAX_CHAIN_ID_BYTES, NetUid, ServeInfo, SubnetParams,
};

use crate::state::{
    Account, ChainParams, Commit, Hotkey, Neuron, NeuronOutputs, State, Subnet, Unbonding,
};

/// Most weights or bonds in one stored row.
const MAX_ROW: usize = 4096;

/// Key of an account entry.
pub fn account_key(address: &Address) -> Vec<u8> {
    [b"a".as_slice(), &address.0].concat()
}

/// Key of an escrow entry.
pub fn escrow_key(address: &Address) -> Vec<u8> {
    [b"e".as_slice(), &address.0].concat()
}

/// Key of a subnet entry.
pub fn subnet_key(netuid: NetUid) -> Vec<u8> {
    [b"n".as_slice(), &netuid.to_be_bytes()].concat()
}

/// Key of a neuron entry.
pub fn neuron_key(netuid: NetUid, uid: u16) -> Vec<u8> {
    [b"m".as_slice(), &netuid.to_be_bytes(), &uid.to_be_bytes()].concat()
}

/// Key of a hotkey entry.
pub fn hotkey_key(hotkey: &Address) -> Vec<u8> {
    [b"h".as_slice(), &hotkey.0].concat()
}

/// Parse a key given on a command line or an API: `account:<hex>`, `hotkey:<hex>`,
/// `subnet:<netuid>`, `neuron:<netuid>:<uid>`, or `0x<hex>` for raw bytes.
pub fn parse_key(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("0x") {
        return agora_primitives::from_hex(hex);
    }
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "account" => Some(account_key(&rest.parse().ok()?)),
        "escrow" => Some(escrow_key(&rest.parse().ok()?)),
        "hotkey" => Some(hotkey_key(&rest.parse().ok()?)),
        "subnet" => Some(subnet_key(rest.parse().ok()?)),
        "neuron" => {
            let (n, u) = rest.split_once(':')?;
            Some(neuron_key(n.parse().ok()?, u.parse().ok()?))
        }
        _ => None,
    }
}

impl Encode for ChainParams {
    fn encode(&self, out: &mut Vec<u8>) {
        self.fee_burn_ppm.encode(out);
        self.unbonding_blocks.encode(out);
        self.max_chain_validators.encode(out);
        self.subnet_create_cost.encode(out);
        self.emission_per_block.encode(out);
        self.min_burn.encode(out);
        self.max_burn.encode(out);
        self.max_take.encode(out);
    }
}

impl Decode for ChainParams {
    const MIN_BYTES: usize = 4 + 8 + 2 + 16 * 4 + 2;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            fee_burn_ppm: Decode::decode(r)?,
            unbonding_blocks: Decode::decode(r)?,
            max_chain_validators: Decode::decode(r)?,
            subnet_create_cost: Decode::decode(r)?,
            emission_per_block: Decode::decode(r)?,
            min_burn: Decode::decode(r)?,
            max_burn: Decode::decode(r)?,
            max_take: Decode::decode(r)?,
        })
    }
}

impl Decode for NeuronOutputs {
    const MIN_BYTES: usize = 1 + 2 * 5 + 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            active: Decode::decode(r)?,
            stake_weight: Decode::decode(r)?,
            consensus: Decode::decode(r)?,
            incentive: Decode::decode(r)?,
            dividends: Decode::decode(r)?,
            validator_trust: Decode::decode(r)?,
            server_emission: Decode::decode(r)?,
            validator_emission: Decode::decode(r)?,
        })
    }
}

fn encode_neuron(n: &Neuron, out: &mut Vec<u8>) {
    n.hotkey.encode(out);
    n.registered_at.encode(out);
    n.last_update.encode(out);
    encode_slice(&n.weights, out);
    encode_slice(&n.bonds, out);
    n.validator_permit.encode(out);
    n.last_emission.encode(out);
    n.serve.encode(out);
    n.commit.as_ref().map(|c| (c.hash, c.block)).encode(out);
    n.outputs.encode(out);
}

fn decode_neuron(r: &mut Reader<'_>) -> Result<Neuron, Error> {
    Ok(Neuron {
        hotkey: Decode::decode(r)?,
        registered_at: Decode::decode(r)?,
        last_update: Decode::decode(r)?,
        weights: r.vec(MAX_ROW, "neuron.weights")?,
        bonds: r.vec(MAX_ROW, "neuron.bonds")?,
        validator_permit: Decode::decode(r)?,
        last_emission: Decode::decode(r)?,
        serve: Option::<ServeInfo>::decode(r)?,
        commit: Option::<(Hash, u64)>::decode(r)?.map(|(hash, block)| Commit { hash, block }),
        outputs: Decode::decode(r)?,
    })
}

fn value(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

impl State {
    /// Every entry of the state, in key order.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut e = Vec::with_capacity(
            1 + self.accounts.len() + self.hotkeys.len() + self.stakes.len() + self.unbonding.len(),
        );
        // Keys are built so that pushing kinds in prefix order ("a" < "e" < "g" < "h" < "m" <
        // "n" < "r" < "s" < "u") and each kind in its own order yields a sorted list.
        for (a, acc) in &self.accounts {
            e.push((
                account_key(a),
                value(|o| (acc.balance, acc.nonce).encode(o)),
            ));
        }
        for (a, amount) in &self.escrow {
            e.push((escrow_key(a), value(|o| amount.encode(o))));
        }
        e.push((
            b"g".to_vec(),
            value(|o| {
                encode_bytes(self.chain_id.as_bytes(), o);
                self.height.encode(o);
                self.params.encode(o);
                (self.genesis_supply, self.issued, self.burned).encode(o);
            }),
        ));
        for (h, hk) in &self.hotkeys {
            e.push((hotkey_key(h), value(|o| (hk.owner, hk.take).encode(o))));
        }
        for (netuid, s) in &self.subnets {
            for (uid, n) in s.neurons.iter().enumerate() {
                e.push((
                    neuron_key(*netuid, uid as u16),
                    value(|o| encode_neuron(n, o)),
                ));
            }
        }
        for (netuid, s) in &self.subnets {
            e.push((
                subnet_key(*netuid),
                value(|o| {
                    s.owner.encode(o);
                    s.params.encode(o);
                    (s.emission_share_ppm, s.pending_emission, s.last_epoch_block).encode(o);
                    s.burn.encode(o);
                    (s.neurons.len() as u16).encode(o);
                }),
            ));
        }
        for (id, expiry) in &self.settled {
            e.push((
                [b"r".as_slice(), &id.0].concat(),
                value(|o| expiry.encode(o)),
            ));
        }
        for ((h, c), amount) in &self.stakes {
            e.push((
                [b"s".as_slice(), &h.0, &c.0].concat(),
                value(|o| amount.encode(o)),
            ));
        }
        for (seq, u) in self.unbonding.iter().enumerate() {
            let key = [
                b"u".as_slice(),
                &u.release_height.to_be_bytes(),
                &(seq as u32).to_be_bytes(),
            ]
            .concat();
            e.push((key, value(|o| (u.coldkey, u.amount).encode(o))));
        }
        debug_assert!(
            e.windows(2).all(|w| w[0].0 < w[1].0),
            "entries must be sorted"
        );
        e
    }

    /// Rebuild a state from its entries (as written by [`State::entries`]).
    pub fn from_entries(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<State, Error> {
        let bad = |reason| Error::Invalid {
            what: "state entry",
            reason,
        };
        let mut globals = None;
        let mut accounts = BTreeMap::new();
        let mut hotkeys = BTreeMap::new();
        let mut stakes = BTreeMap::new();
        let mut unbonding = Vec::new();
        let mut escrow = BTreeMap::new();
        let mut settled = BTreeMap::new();
        let mut subnets: BTreeMap<NetUid, Subnet> = BTreeMap::new();
        let mut neurons: BTreeMap<(NetUid, u16), Neuron> = BTreeMap::new();
        let addr = |b: &[u8]| -> Result<Address, Error> { decode_exact(b) };
        for (key, val) in entries {
            let (kind, rest) = key.split_first().ok_or(bad("empty key"))?;
            match kind {
                b'g' => {
                    let mut r = Reader::new(val);
                    let chain_id = r.string(MAX_CHAIN_ID_BYTES, "chain_id")?;
                    let height = u64::decode(&mut r)?;
                    let params = ChainParams::decode(&mut r)?;
                    let (genesis_supply, issued, burned) =
                        <(Amount, Amount, Amount)>::decode(&mut r)?;
                    if r.remaining() != 0 {
                        return Err(Error::TrailingBytes {
                            count: r.remaining(),
                        });
                    }
                    globals = Some((chain_id, height, params, genesis_supply, issued, burned));
                }
                b'a' => {
                    let (balance, nonce): (Amount, u64) = decode_exact(val)?;
                    accounts.insert(addr(rest)?, Account { balance, nonce });
                }
                b'e' => {
                    escrow.insert(addr(rest)?, decode_exact::<Amount>(val)?);
                }
                b'r' if rest.len() == 32 => {
                    let id = Hash(rest.try_into().map_err(|_| bad("receipt key"))?);
                    settled.insert(id, decode_exact::<u64>(val)?);
                }
                b'h' => {
                    let (owner, take): (Address, u16) = decode_exact(val)?;
                    hotkeys.insert(addr(rest)?, Hotkey { owner, take });
                }
                b's' if rest.len() == 64 => {
                    stakes.insert((addr(&rest[..32])?, addr(&rest[32..])?), decode_exact(val)?);
                }
                b'u' if rest.len() == 12 => {
                    let release_height =
                        u64::from_be_bytes(rest[..8].try_into().map_err(|_| bad("key"))?);
                    let (coldkey, amount): (Address, Amount) = decode_exact(val)?;
                    unbonding.push(Unbonding {
                        release_height,
                        coldkey,
                        amount,
                    });
                }
                b'n' if rest.len() == 2 => {
                    let netuid = u16::from_be_bytes([rest[0], rest[1]]);
                    let mut r = Reader::new(val);
                    let owner = Address::decode(&mut r)?;
                    let params = SubnetParams::decode(&mut r)?;
                    let (emission_share_ppm, pending_emission, last_epoch_block) =
                        <(u32, Amount, u64)>::decode(&mut r)?;
                    let burn = Amount::decode(&mut r)?;
                    let _count = u16::decode(&mut r)?;
                    if r.remaining() != 0 {
                        return Err(Error::TrailingBytes {
                            count: r.remaining(),
                        });
                    }
                    subnets.insert(
                        netuid,
                        Subnet {
                            owner,
                            params,
                            neurons: Vec::new(),
                            emission_share_ppm,
                            pending_emission,
                            last_epoch_block,
                            burn,
                        },
                    );
                }
                b'm' if rest.len() == 4 => {
                    let netuid = u16::from_be_bytes([rest[0], rest[1]]);
                    let uid = u16::from_be_bytes([rest[2], rest[3]]);
                    let mut r = Reader::new(val);
                    let neuron = decode_neuron(&mut r)?;
                    if r.remaining() != 0 {
                        return Err(Error::TrailingBytes {
                            count: r.remaining(),
                        });
                    }
                    neurons.insert((netuid, uid), neuron);
                }
                _ => return Err(bad("unknown key kind")),
            }
        }
        for ((netuid, uid), neuron) in neurons {
            let subnet = subnets
                .get_mut(&netuid)
                .ok_or(bad("neuron of a missing subnet"))?;
            if usize::from(uid) != subnet.neurons.len() {
                return Err(bad("neuron uids are not contiguous"));
            }
            subnet.neurons.push(neuron);
        }
        let (chain_id, height, params, genesis_supply, issued, burned) =
            globals.ok_or(bad("missing globals"))?;
        Ok(State {
            chain_id,
            height,
            params,
            accounts,
            hotkeys,
            stakes,
            unbonding,
            escrow,
            settled,
            subnets,
            genesis_supply,
            issued,
            burned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{addr, small};

    #[test]
    fn entries_are_sorted_and_rebuild_the_same_state() {
        let mut s = small();
        let id = s
            .create_subnet(&addr(1), SubnetParams::defaults(), &mut Vec::new())
            .unwrap();
        s.register(
            &addr(1),
            id,
            &addr(30),
            Amount::agora(1),
            1,
            &mut Vec::new(),
        )
        .unwrap();
        s.unstake(&addr(9), &addr(10), Amount(5), 1, &mut Vec::new())
            .unwrap();
        let e = s.entries();
        assert!(e.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(State::from_entries(&e).unwrap(), s);
        let mut broken = e.clone();
        broken.retain(|(k, _)| k[0] != b'g');
        assert!(
            State::from_entries(&broken).is_err(),
            "globals are required"
        );
    }

    #[test]
    fn keys_parse_from_text() {
        assert_eq!(parse_key("subnet:1"), Some(subnet_key(1)));
        assert_eq!(parse_key("neuron:1:2"), Some(neuron_key(1, 2)));
        assert_eq!(
            parse_key(&format!("account:{}", addr(3))),
            Some(account_key(&addr(3)))
        );
        assert_eq!(parse_key("0x6702"), Some(vec![0x67, 2]));
        assert_eq!(parse_key("nonsense"), None);
    }
}
