//! Subnets: creation (burning the cost), owner-only hyperparameter updates within bounds.

use agora_primitives::{Address, NetUid, SubnetParams};

use crate::state::Subnet;
use crate::{Event, State, TxError};

/// Check every hyperparameter against its bounds.
pub fn check_params(p: &SubnetParams) -> Result<(), TxError> {
    let check = |name: &'static str, value: i64, lo: i64, hi: i64, bounds: &'static str| {
        if value < lo || value > hi {
            Err(TxError::ParamOutOfBounds {
                name,
                value,
                bounds,
            })
        } else {
            Ok(())
        }
    };
    check("tempo", p.tempo.into(), 1, 10_000, "1..=10000")?;
    check(
        "bonds_moving_average",
        p.bonds_moving_average as i64,
        0,
        1_000_000,
        "0..=1000000 ppm",
    )?;
    check("max_uids", p.max_uids.into(), 1, 4096, "1..=4096")?;
    check(
        "max_validators",
        p.max_validators.into(),
        1,
        p.max_uids.into(),
        "1..=max_uids",
    )?;
    check(
        "alpha_low",
        p.alpha_low.into(),
        1638,
        p.alpha_high.into(),
        "1638..=alpha_high",
    )?;
    check(
        "min_allowed_weights",
        p.min_allowed_weights.into(),
        0,
        p.max_uids.into(),
        "0..=max_uids",
    )?;
    check(
        "commit_reveal_period",
        p.commit_reveal_period.into(),
        0,
        100,
        "0..=100 tempos",
    )?;
    Ok(())
}

impl State {
    pub(crate) fn create_subnet(
        &mut self,
        owner: &Address,
        params: SubnetParams,
        events: &mut Vec<Event>,
    ) -> Result<NetUid, TxError> {
        check_params(&params)?;
        let netuid = (1..=u16::MAX)
            .find(|id| !self.subnets.contains_key(id))
            .ok_or(TxError::ParamOutOfBounds {
                name: "netuid",
                value: 65536,
                bounds: "1..=65535",
            })?;
        let cost = self.params.subnet_create_cost;
        self.debit(owner, cost)?;
        self.burn(cost)?;
        let burn = self.params.min_burn;
        self.subnets.insert(
            netuid,
            Subnet {
                owner: *owner,
                params,
                neurons: Vec::new(),
                emission_share_ppm: 0,
                pending_emission: Default::default(),
                last_epoch_block: 0,
                burn,
            },
        );
        events.push(Event::SubnetCreated {
            netuid,
            owner: *owner,
        });
        Ok(netuid)
    }

    pub(crate) fn set_subnet(
        &mut self,
        sender: &Address,
        netuid: NetUid,
        params: SubnetParams,
    ) -> Result<(), TxError> {
        let subnet = self
            .subnets
            .get_mut(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        if subnet.owner != *sender {
            return Err(TxError::NotSubnetOwner { netuid });
        }
        check_params(&params)?;
        if usize::from(params.max_uids) < subnet.neurons.len() {
            return Err(TxError::ParamOutOfBounds {
                name: "max_uids",
                value: params.max_uids.into(),
                bounds: "at least the registered neurons",
            });
        }
        subnet.params = params;
        Ok(())
    }
}
