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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{addr, small};

    #[test]
    fn hyperparameters_are_checked_against_their_bounds() {
        assert!(check_params(&SubnetParams::defaults()).is_ok());
        let bad = [
            SubnetParams {
                tempo: 0,
                ..SubnetParams::defaults()
            },
            SubnetParams {
                bonds_moving_average: 1_000_001,
                ..SubnetParams::defaults()
            },
            SubnetParams {
                max_validators: 300,
                max_uids: 256,
                ..SubnetParams::defaults()
            },
            SubnetParams {
                alpha_low: 60000,
                alpha_high: 50000,
                ..SubnetParams::defaults()
            },
        ];
        for p in bad {
            assert!(
                matches!(check_params(&p), Err(TxError::ParamOutOfBounds { .. })),
                "{p:?}"
            );
        }
    }

    #[test]
    fn creating_a_subnet_burns_its_cost_and_only_the_owner_changes_it() {
        let mut s = small();
        s.params.subnet_create_cost = Amount::agora(10);
        let id = s
            .create_subnet(&addr(1), SubnetParams::defaults(), &mut Vec::new())
            .unwrap();
        assert_eq!(id, 1);
        assert_eq!(s.burned, Amount::agora(10));
        assert!(matches!(
            s.set_subnet(&addr(2), id, SubnetParams::defaults()),
            Err(TxError::NotSubnetOwner { .. })
        ));
        s.set_subnet(
            &addr(1),
            id,
            SubnetParams {
                tempo: 5,
                ..SubnetParams::defaults()
            },
        )
        .unwrap();
        assert_eq!(s.subnets[&id].params.tempo, 5);
    }

    use agora_primitives::Amount;
}
