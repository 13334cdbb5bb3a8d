//! Genesis: the chain id, parameters, balances, stakes and subnets of height 0.

use std::collections::BTreeMap;

use agora_primitives::{Address, Amount, NetUid, SubnetParams};

use crate::State;
use crate::state::{Account, ChainParams, Hotkey, Subnet};

/// A genesis stake: `coldkey` stakes `amount` on `hotkey`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisStake {
    /// Staker.
    pub coldkey: Address,
    /// Hotkey (a chain validator if among the top K).
    pub hotkey: Address,
    /// Amount.
    pub amount: Amount,
}

/// A genesis subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisSubnet {
    /// Its id.
    pub netuid: NetUid,
    /// Its owner.
    pub owner: Address,
    /// Share of block emission, parts per million.
    pub emission_share_ppm: u32,
    /// Hyperparameters.
    pub params: SubnetParams,
}

/// Everything at height 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// Chain id.
    pub chain_id: String,
    /// Chain parameters.
    pub params: ChainParams,
    /// Initial balances.
    pub balances: Vec<(Address, Amount)>,
    /// Initial stakes (the initial validators are the top K of these).
    pub stakes: Vec<GenesisStake>,
    /// Initial subnets.
    pub subnets: Vec<GenesisSubnet>,
}

/// Why a genesis is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// Amounts overflow.
    #[error("genesis amounts overflow u128")]
    Overflow,
    /// A subnet appears twice.
    #[error("subnet {0} appears twice in genesis")]
    DuplicateSubnet(NetUid),
    /// Emission shares exceed 100%.
    #[error("subnet emission shares add up to {0} ppm, above 1000000")]
    SharesAboveOne(u64),
    /// The chain id is empty or too long.
    #[error("chain id {0:?} must be 1 to 32 bytes")]
    ChainId(String),
    /// Bad hyperparameters.
    #[error("subnet {netuid}: {error}")]
    Params {
        /// Subnet.
        netuid: NetUid,
        /// Why.
        error: crate::TxError,
    },
}

impl Genesis {
    /// The state at height 0.
    pub fn into_state(self) -> Result<State, GenesisError> {
        if self.chain_id.is_empty() || self.chain_id.len() > agora_primitives::MAX_CHAIN_ID_BYTES {
            return Err(GenesisError::ChainId(self.chain_id));
        }
        let mut accounts: BTreeMap<Address, Account> = BTreeMap::new();
        let mut supply = Amount::ZERO;
        for (a, amount) in &self.balances {
            let acc = accounts.entry(*a).or_default();
            acc.balance = acc
                .balance
                .checked_add(*amount)
                .ok_or(GenesisError::Overflow)?;
            supply = supply.checked_add(*amount).ok_or(GenesisError::Overflow)?;
        }
        let mut hotkeys = BTreeMap::new();
        let mut stakes: BTreeMap<(Address, Address), Amount> = BTreeMap::new();
        for s in &self.stakes {
            hotkeys.entry(s.hotkey).or_insert(Hotkey {
                owner: s.coldkey,
                take: 0,
            });
            let e = stakes.entry((s.hotkey, s.coldkey)).or_default();
            *e = e.checked_add(s.amount).ok_or(GenesisError::Overflow)?;
            supply = supply.checked_add(s.amount).ok_or(GenesisError::Overflow)?;
        }
        let mut subnets = BTreeMap::new();
        let mut shares = 0u64;
        for s in self.subnets {
            crate::subnets::check_params(&s.params).map_err(|error| GenesisError::Params {
                netuid: s.netuid,
                error,
            })?;
            shares += u64::from(s.emission_share_ppm);
            let subnet = Subnet {
                owner: s.owner,
                params: s.params,
                neurons: Vec::new(),
                emission_share_ppm: s.emission_share_ppm,
                pending_emission: Amount::ZERO,
                last_epoch_block: 0,
                burn: self.params.min_burn,
            };
            if subnets.insert(s.netuid, subnet).is_some() {
                return Err(GenesisError::DuplicateSubnet(s.netuid));
            }
        }
        if shares > 1_000_000 {
            return Err(GenesisError::SharesAboveOne(shares));
        }
        Ok(State {
            chain_id: self.chain_id,
            height: 0,
            params: self.params,
            accounts,
            hotkeys,
            stakes,
            unbonding: Vec::new(),
            escrow: BTreeMap::new(),
            settled: BTreeMap::new(),
            subnets,
            genesis_supply: supply,
            issued: Amount::ZERO,
            burned: Amount::ZERO,
        })
    }
}

impl ChainParams {
    /// Agora's defaults for a development chain.
    pub fn devnet() -> Self {
        Self {
            fee_burn_ppm: 500_000,
            unbonding_blocks: 100,
            max_chain_validators: 64,
            subnet_create_cost: Amount::agora(100),
            emission_per_block: Amount::agora(1),
            min_burn: Amount(1_000_000),
            max_burn: Amount::agora(100),
            max_take: 11_796,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Genesis {
        Genesis {
            chain_id: "g".into(),
            params: ChainParams::devnet(),
            balances: vec![],
            stakes: vec![],
            subnets: vec![],
        }
    }

    #[test]
    fn bad_genesis_values_are_refused() {
        assert!(base().into_state().is_ok());
        assert!(matches!(
            Genesis {
                chain_id: String::new(),
                ..base()
            }
            .into_state(),
            Err(GenesisError::ChainId(_))
        ));
        let max = vec![
            (Address([1; 32]), Amount(u128::MAX)),
            (Address([2; 32]), Amount(1)),
        ];
        assert_eq!(
            Genesis {
                balances: max,
                ..base()
            }
            .into_state(),
            Err(GenesisError::Overflow)
        );
        let sub = |netuid, share| GenesisSubnet {
            netuid,
            owner: Address([1; 32]),
            emission_share_ppm: share,
            params: SubnetParams::defaults(),
        };
        assert_eq!(
            Genesis {
                subnets: vec![sub(1, 1), sub(1, 1)],
                ..base()
            }
            .into_state(),
            Err(GenesisError::DuplicateSubnet(1))
        );
        assert_eq!(
            Genesis {
                subnets: vec![sub(1, 600_000), sub(2, 600_000)],
                ..base()
            }
            .into_state(),
            Err(GenesisError::SharesAboveOne(1_200_000))
        );
    }
}
