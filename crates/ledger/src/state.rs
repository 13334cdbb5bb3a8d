//! The ledger state: every account, stake, subnet and neuron, in ordered maps so that iteration
//! (and therefore the state root) is deterministic.

use std::collections::BTreeMap;

use agora_codec::{Encode, encode_len};
use agora_primitives::{Address, Amount, Hash, NetUid, ServeInfo, SubnetParams};

/// Chain-wide parameters fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// Parts per million of every fee that is burned; the rest goes to the proposer.
    pub fee_burn_ppm: u32,
    /// Blocks an unstaked amount waits before it returns to the balance.
    pub unbonding_blocks: u64,
    /// Chain validators: the top K hotkeys by total stake.
    pub max_chain_validators: u16,
    /// Burned to create a subnet.
    pub subnet_create_cost: Amount,
    /// Base units issued per block, split among subnets by `emission_share_ppm`.
    pub emission_per_block: Amount,
    /// Lowest registration price.
    pub min_burn: Amount,
    /// Highest registration price.
    pub max_burn: Amount,
    /// Highest validator take (`u16` proportion).
    pub max_take: u16,
}

/// An account: spendable balance and the next nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// Next expected nonce.
    pub nonce: u64,
}

/// A hotkey's owner and take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hotkey {
    /// The coldkey that registered it.
    pub owner: Address,
    /// Validator take on delegated dividends (`u16` proportion).
    pub take: u16,
}

/// Stake on its way back to a balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unbonding {
    /// Height at which it is released.
    pub release_height: u64,
    /// Who receives it.
    pub coldkey: Address,
    /// How much.
    pub amount: Amount,
}

/// A weight commitment waiting for its reveal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The committed hash.
    pub hash: Hash,
    /// Block of the commit.
    pub block: u64,
}

/// One neuron (uid) of a subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neuron {
    /// Its hotkey.
    pub hotkey: Address,
    /// Block of registration.
    pub registered_at: u64,
    /// Block of the last weight setting (0: never).
    pub last_update: u64,
    /// Stored (max-upscaled) weights.
    pub weights: Vec<(u16, u16)>,
    /// Stored bonds.
    pub bonds: Vec<(u16, u16)>,
    /// Validator permit from the last epoch.
    pub validator_permit: bool,
    /// Emission of the last epoch (its pruning score).
    pub last_emission: Amount,
    /// Serve info, once published.
    pub serve: Option<ServeInfo>,
    /// Pending weight commit.
    pub commit: Option<Commit>,
}

/// A subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Its owner (a coldkey).
    pub owner: Address,
    /// Hyperparameters.
    pub params: SubnetParams,
    /// Neurons by uid.
    pub neurons: Vec<Neuron>,
    /// Share of block emission, parts per million.
    pub emission_share_ppm: u32,
    /// Emission accrued since the last epoch (held by the ledger until paid).
    pub pending_emission: Amount,
    /// Block of the last epoch (0: none yet).
    pub last_epoch_block: u64,
    /// Current registration price.
    pub burn: Amount,
}

/// The whole ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Chain id.
    pub chain_id: String,
    /// Height of the last applied block (0 at genesis).
    pub height: u64,
    /// Chain parameters.
    pub params: ChainParams,
    /// Accounts.
    pub accounts: BTreeMap<Address, Account>,
    /// Hotkeys.
    pub hotkeys: BTreeMap<Address, Hotkey>,
    /// Stake by `(hotkey, coldkey)`.
    pub stakes: BTreeMap<(Address, Address), Amount>,
    /// Unbonding entries, in release order.
    pub unbonding: Vec<Unbonding>,
    /// Subnets.
    pub subnets: BTreeMap<NetUid, Subnet>,
    /// Tokens in existence at genesis.
    pub genesis_supply: Amount,
    /// Tokens issued since genesis.
    pub issued: Amount,
    /// Tokens burned since genesis.
    pub burned: Amount,
}

impl State {
    /// The account of `address` (a default one if it never received funds).
    pub fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).cloned().unwrap_or_default()
    }

    /// Total stake on a hotkey (own plus delegated).
    pub fn hotkey_stake(&self, hotkey: &Address) -> Amount {
        self.stakes
            .range((*hotkey, Address([0; 32]))..=(*hotkey, Address([0xff; 32])))
            .fold(Amount::ZERO, |acc, (_, &s)| {
                Amount(acc.0.saturating_add(s.0))
            })
    }

    /// Every token the ledger holds, by kind: balances + stakes + unbonding + subnet pending
    /// emission. With `burned`, this equals `genesis_supply + issued` (conservation).
    pub fn held_total(&self) -> u128 {
        let balances: u128 = self.accounts.values().map(|a| a.balance.0).sum();
        let stakes: u128 = self.stakes.values().map(|s| s.0).sum();
        let unbonding: u128 = self.unbonding.iter().map(|u| u.amount.0).sum();
        let pending: u128 = self.subnets.values().map(|s| s.pending_emission.0).sum();
        balances + stakes + unbonding + pending
    }

    /// The chain validator set: the top `max_chain_validators` hotkeys by total stake (ties: the
    /// lower address first), with their stake. Changes committed at height H apply from H + 1.
    pub fn chain_validators(&self) -> Vec<(Address, Amount)> {
        let mut totals: BTreeMap<Address, u128> = BTreeMap::new();
        for ((hotkey, _), stake) in &self.stakes {
            let t = totals.entry(*hotkey).or_default();
            *t = t.saturating_add(stake.0);
        }
        let mut set: Vec<(Address, Amount)> = totals
            .into_iter()
            .filter(|(_, s)| *s > 0)
            .map(|(h, s)| (h, Amount(s)))
            .collect();
        set.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        set.truncate(usize::from(self.params.max_chain_validators));
        set
    }

    /// The state root: BLAKE3 over the canonical encoding of the whole state, in key order.
    ///
    /// This is a full commitment to the state. The store replaces it with a sparse Merkle root
    /// (with inclusion and absence proofs) over the same key-value pairs.
    pub fn root(&self) -> Hash {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"agora/state/v1\0");
        agora_codec::encode_bytes(self.chain_id.as_bytes(), &mut out);
        self.height.encode(&mut out);
        encode_len(self.accounts.len(), &mut out);
        for (a, acc) in &self.accounts {
            a.encode(&mut out);
            acc.balance.encode(&mut out);
            acc.nonce.encode(&mut out);
        }
        encode_len(self.hotkeys.len(), &mut out);
        for (h, hk) in &self.hotkeys {
            h.encode(&mut out);
            hk.owner.encode(&mut out);
            hk.take.encode(&mut out);
        }
        encode_len(self.stakes.len(), &mut out);
        for ((h, c), s) in &self.stakes {
            h.encode(&mut out);
            c.encode(&mut out);
            s.encode(&mut out);
        }
        encode_len(self.unbonding.len(), &mut out);
        for u in &self.unbonding {
            u.release_height.encode(&mut out);
            u.coldkey.encode(&mut out);
            u.amount.encode(&mut out);
        }
        encode_len(self.subnets.len(), &mut out);
        for (id, s) in &self.subnets {
            id.encode(&mut out);
            s.owner.encode(&mut out);
            s.params.encode(&mut out);
            s.emission_share_ppm.encode(&mut out);
            s.pending_emission.encode(&mut out);
            s.last_epoch_block.encode(&mut out);
            s.burn.encode(&mut out);
            encode_len(s.neurons.len(), &mut out);
            for n in &s.neurons {
                n.hotkey.encode(&mut out);
                n.registered_at.encode(&mut out);
                n.last_update.encode(&mut out);
                agora_codec::encode_slice(&n.weights, &mut out);
                agora_codec::encode_slice(&n.bonds, &mut out);
                n.validator_permit.encode(&mut out);
                n.last_emission.encode(&mut out);
                n.serve.encode(&mut out);
                n.commit
                    .as_ref()
                    .map(|c| (c.hash, c.block))
                    .encode(&mut out);
            }
        }
        self.genesis_supply.encode(&mut out);
        self.issued.encode(&mut out);
        self.burned.encode(&mut out);
        agora_crypto::hash(&out)
    }
}
