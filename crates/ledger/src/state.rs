//! The ledger state: every account, stake, subnet and neuron, in ordered maps so that iteration
//! (and therefore the state root) is deterministic.

use std::collections::BTreeMap;

use agora_codec::Encode;
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
    /// Outputs of the last epoch.
    pub outputs: NeuronOutputs,
}

/// What the last epoch decided for one neuron (all proportions are `u16`, 65535 = 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeuronOutputs {
    /// Set weights within the activity cutoff.
    pub active: bool,
    /// Normalised stake.
    pub stake_weight: u16,
    /// Consensus on this uid.
    pub consensus: u16,
    /// Incentive (miner share).
    pub incentive: u16,
    /// Dividends (validator share).
    pub dividends: u16,
    /// Validator trust.
    pub validator_trust: u16,
    /// Paid as a miner, base units.
    pub server_emission: Amount,
    /// Paid as a validator, base units.
    pub validator_emission: Amount,
}

impl Encode for NeuronOutputs {
    fn encode(&self, out: &mut Vec<u8>) {
        self.active.encode(out);
        self.stake_weight.encode(out);
        self.consensus.encode(out);
        self.incentive.encode(out);
        self.dividends.encode(out);
        self.validator_trust.encode(out);
        self.server_emission.encode(out);
        self.validator_emission.encode(out);
    }
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
    /// Serving escrow by account (what its gateway's receipts are paid from).
    pub escrow: BTreeMap<Address, Amount>,
    /// Ids of settled receipts, with their expiry height (kept until it passes).
    pub settled: BTreeMap<Hash, u64>,
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
    /// emission + escrow. With `burned`, this equals `genesis_supply + issued` (conservation).
    pub fn held_total(&self) -> u128 {
        let balances: u128 = self.accounts.values().map(|a| a.balance.0).sum();
        let stakes: u128 = self.stakes.values().map(|s| s.0).sum();
        let unbonding: u128 = self.unbonding.iter().map(|u| u.amount.0).sum();
        let pending: u128 = self.subnets.values().map(|s| s.pending_emission.0).sum();
        let escrow: u128 = self.escrow.values().map(|e| e.0).sum();
        balances + stakes + unbonding + pending + escrow
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

    /// The state root: the Merkle root over [`State::entries`] (see `agora_crypto::merkle`).
    pub fn root(&self) -> Hash {
        let leaves: Vec<Hash> = self
            .entries()
            .iter()
            .map(|(k, v)| agora_crypto::merkle::leaf_hash(k, v))
            .collect();
        agora_crypto::merkle::root(&leaves)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::genesis::{Genesis, GenesisStake};

    pub(crate) fn addr(i: u8) -> Address {
        Address([i; 32])
    }

    /// Accounts 1..=3 with 1000 AGORA; account 9 stakes 50 on hotkey 10 and 20 on hotkey 11.
    pub(crate) fn small() -> State {
        Genesis {
            chain_id: "unit".into(),
            params: ChainParams::devnet(),
            balances: (1..=3).map(|i| (addr(i), Amount::agora(1000))).collect(),
            stakes: vec![
                GenesisStake {
                    coldkey: addr(9),
                    hotkey: addr(10),
                    amount: Amount::agora(50),
                },
                GenesisStake {
                    coldkey: addr(9),
                    hotkey: addr(11),
                    amount: Amount::agora(20),
                },
            ],
            subnets: vec![],
        }
        .into_state()
        .unwrap()
    }

    #[test]
    fn the_validator_set_orders_by_stake_and_truncates_to_k() {
        let mut s = small();
        assert_eq!(
            s.chain_validators(),
            vec![(addr(10), Amount::agora(50)), (addr(11), Amount::agora(20))]
        );
        s.params.max_chain_validators = 1;
        assert_eq!(s.chain_validators(), vec![(addr(10), Amount::agora(50))]);
        assert_eq!(s.hotkey_stake(&addr(11)), Amount::agora(20));
        assert_eq!(s.held_total(), Amount::agora(3070).0);
    }
}
