//! Neurons: registration for a burn price that rises with demand and decays, pruning of the
//! lowest-scoring neuron outside its immunity period when the subnet is full, serve info.

use agora_primitives::{Address, Amount, NetUid, ServeInfo};

use crate::state::{Hotkey, Neuron};
use crate::{Event, State, TxError};

/// Each registration raises the price by half.
const BURN_RISE_NUM: u128 = 3;
const BURN_RISE_DEN: u128 = 2;
/// Each block the price decays by 1/1000 toward the minimum.
const BURN_DECAY_PER_BLOCK: u128 = 1000;

impl State {
    pub(crate) fn register(
        &mut self,
        coldkey: &Address,
        netuid: NetUid,
        hotkey: &Address,
        max_burn: Amount,
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<u16, TxError> {
        let subnet = self
            .subnets
            .get(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        if subnet.neurons.iter().any(|n| n.hotkey == *hotkey) {
            return Err(TxError::DuplicateRegistration {
                netuid,
                hotkey: *hotkey,
            });
        }
        if let Some(h) = self.hotkeys.get(hotkey)
            && h.owner != *coldkey
        {
            return Err(TxError::HotkeyOwnedByOther { hotkey: *hotkey });
        }
        let price = subnet.burn;
        if price > max_burn {
            return Err(TxError::BurnTooHigh { price, max_burn });
        }
        let full = subnet.neurons.len() >= usize::from(subnet.params.max_uids);
        let slot = if full {
            Some(
                prune_candidate(&subnet.neurons, subnet.params.immunity_period, height)
                    .ok_or(TxError::SubnetFull(netuid))?,
            )
        } else {
            None
        };
        self.debit(coldkey, price)?;
        self.burn(price)?;
        self.hotkeys.entry(*hotkey).or_insert(Hotkey {
            owner: *coldkey,
            take: 0,
        });
        let max = self.params.max_burn;
        let subnet = self
            .subnets
            .get_mut(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        subnet.burn = price
            .mul_div(BURN_RISE_NUM, BURN_RISE_DEN)
            .unwrap_or(max)
            .min(max);
        let neuron = Neuron {
            hotkey: *hotkey,
            registered_at: height,
            last_update: 0,
            weights: Vec::new(),
            bonds: Vec::new(),
            validator_permit: false,
            last_emission: Amount::ZERO,
            serve: None,
            commit: None,
            outputs: Default::default(),
        };
        let uid = match slot {
            Some(uid) => {
                let old = std::mem::replace(&mut subnet.neurons[usize::from(uid)], neuron);
                // Nobody keeps weights or bonds on the replaced neuron.
                for n in subnet.neurons.iter_mut() {
                    n.weights.retain(|&(j, _)| j != uid);
                    n.bonds.retain(|&(j, _)| j != uid);
                }
                events.push(Event::Deregistered {
                    netuid,
                    uid,
                    hotkey: old.hotkey,
                });
                uid
            }
            None => {
                subnet.neurons.push(neuron);
                (subnet.neurons.len() - 1) as u16
            }
        };
        events.push(Event::Registered {
            netuid,
            uid,
            hotkey: *hotkey,
            burned: price,
        });
        Ok(uid)
    }

    pub(crate) fn serve(
        &mut self,
        hotkey: &Address,
        netuid: NetUid,
        info: ServeInfo,
    ) -> Result<(), TxError> {
        let subnet = self
            .subnets
            .get_mut(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        let neuron = subnet
            .neurons
            .iter_mut()
            .find(|n| n.hotkey == *hotkey)
            .ok_or(TxError::NotRegistered {
                netuid,
                hotkey: *hotkey,
            })?;
        neuron.serve = Some(info);
        Ok(())
    }

    /// Registration prices decay toward the minimum, once per block.
    pub(crate) fn decay_burns(&mut self) {
        let min = self.params.min_burn;
        for subnet in self.subnets.values_mut() {
            let step = Amount(subnet.burn.0 / BURN_DECAY_PER_BLOCK);
            subnet.burn = Amount(subnet.burn.0 - step.0).max(min);
        }
    }
}

/// The uid to replace: lowest pruning score (last emission) among neurons past their immunity
/// period; ties go to the earliest registration, then the lowest uid.
fn prune_candidate(neurons: &[Neuron], immunity: u16, height: u64) -> Option<u16> {
    neurons
        .iter()
        .enumerate()
        .filter(|(_, n)| height.saturating_sub(n.registered_at) >= u64::from(immunity))
        .min_by_key(|(uid, n)| (n.last_emission, n.registered_at, *uid))
        .map(|(uid, _)| uid as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{addr, small};
    use agora_primitives::SubnetParams;

    #[test]
    fn the_price_rises_with_registrations_decays_per_block_and_a_full_subnet_prunes() {
        let mut s = small();
        let params = SubnetParams {
            max_uids: 2,
            max_validators: 2,
            immunity_period: 10,
            ..SubnetParams::defaults()
        };
        let id = s.create_subnet(&addr(1), params, &mut Vec::new()).unwrap();
        let p0 = s.subnets[&id].burn;
        let mut ev = Vec::new();
        s.register(&addr(1), id, &addr(20), Amount::agora(1), 1, &mut ev)
            .unwrap();
        let p1 = s.subnets[&id].burn;
        assert_eq!(p1, Amount(p0.0 * 3 / 2));
        s.decay_burns();
        assert!(s.subnets[&id].burn < p1);
        s.register(&addr(1), id, &addr(21), Amount::agora(1), 2, &mut ev)
            .unwrap();
        // Full, and both neurons are immune until block 11/12.
        assert!(matches!(
            s.register(&addr(1), id, &addr(22), Amount::agora(1), 5, &mut ev),
            Err(TxError::SubnetFull(_))
        ));
        // Past immunity, the neuron with the lowest last emission (uid 1) is replaced.
        s.subnets.get_mut(&id).unwrap().neurons[0].last_emission = Amount(5);
        let uid = s
            .register(&addr(1), id, &addr(22), Amount::agora(1), 20, &mut ev)
            .unwrap();
        assert_eq!(uid, 1);
        assert_eq!(s.subnets[&id].neurons[1].hotkey, addr(22));
    }
}
