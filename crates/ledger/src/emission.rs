//! Emission: per-block issuance accrues to subnets by their share; every `tempo` blocks each
//! subnet runs its Yuma epoch and pays what it accrued.
//!
//! Payment rules (Agora's choice where the design is silent): a miner's `server_emission` goes to
//! its hotkey owner's balance; a validator's `validator_emission` is split into the take
//! (`take / 65535`, to the hotkey owner) and the rest, shared among everyone staked on the hotkey
//! in proportion to their stake, to their balances. Rounding dust goes to the hotkey owner.
//! Whatever an epoch does not pay (rounding in the epoch itself) stays pending for the next.

use agora_incentive::{EpochInput, Hyperparameters};
use agora_primitives::{Address, Amount, NetUid};

use crate::state::NeuronOutputs;
use crate::{Event, State};

impl State {
    /// Issue this block's emission into the subnets' pending emission.
    pub(crate) fn issue(&mut self, events: &mut Vec<Event>) {
        let per_block = self.params.emission_per_block;
        let mut issued = Amount::ZERO;
        for (netuid, subnet) in self.subnets.iter_mut() {
            let share = per_block
                .mul_div(u128::from(subnet.emission_share_ppm), 1_000_000)
                .unwrap_or(Amount::ZERO);
            if share.is_zero() {
                continue;
            }
            subnet.pending_emission = Amount(subnet.pending_emission.0.saturating_add(share.0));
            issued = Amount(issued.0.saturating_add(share.0));
            events.push(Event::Issued {
                netuid: *netuid,
                amount: share,
            });
        }
        self.issued = Amount(self.issued.0.saturating_add(issued.0));
    }

    /// Subnets whose epoch is due at `height`: `tempo` blocks since their last epoch.
    pub fn epochs_due(&self, height: u64) -> Vec<NetUid> {
        self.subnets
            .iter()
            .filter(|(_, s)| height.saturating_sub(s.last_epoch_block) >= u64::from(s.params.tempo))
            .map(|(id, _)| *id)
            .collect()
    }
}

impl State {
    /// The epoch input of a subnet at `height`, built from state.
    pub fn epoch_input(&self, netuid: NetUid, height: u64) -> Option<EpochInput> {
        let subnet = self.subnets.get(&netuid)?;
        let p = &subnet.params;
        let neurons = &subnet.neurons;
        let stake =
            |hotkey: &Address| u64::try_from(self.hotkey_stake(hotkey).0).unwrap_or(u64::MAX);
        Some(EpochInput {
            n: neurons.len() as u16,
            current_block: height,
            tempo: u64::from(p.tempo),
            last_mechanism_step_block: subnet.last_epoch_block,
            activity_cutoff: u64::from(p.activity_cutoff),
            stake_threshold: 0,
            owner_uid: neurons
                .iter()
                .position(|n| n.hotkey == subnet.owner)
                .map(|u| u as u16),
            stake: neurons.iter().map(|n| stake(&n.hotkey)).collect(),
            validator_permits: neurons.iter().map(|n| n.validator_permit).collect(),
            last_update: neurons.iter().map(|n| n.last_update).collect(),
            block_at_registration: neurons.iter().map(|n| n.registered_at).collect(),
            weights: neurons.iter().map(|n| n.weights.clone()).collect(),
            bonds: neurons.iter().map(|n| n.bonds.clone()).collect(),
            emission: u64::try_from(subnet.pending_emission.0).unwrap_or(u64::MAX),
            hyperparameters: Hyperparameters {
                kappa: p.kappa,
                bonds_penalty: p.bonds_penalty,
                bonds_moving_average: p.bonds_moving_average,
                yuma3: p.yuma3,
                liquid_alpha: p.liquid_alpha,
                alpha_low: p.alpha_low,
                alpha_high: p.alpha_high,
                alpha_sigmoid_steepness: p.alpha_sigmoid_steepness,
                max_allowed_validators: p.max_validators,
            },
        })
    }

    /// Run every due epoch at `height`: store the outputs and pay the emission.
    pub(crate) fn run_epochs(&mut self, height: u64, events: &mut Vec<Event>) {
        for netuid in self.epochs_due(height) {
            self.run_epoch(netuid, height, events);
        }
    }

    fn run_epoch(&mut self, netuid: NetUid, height: u64, events: &mut Vec<Event>) {
        let Some(input) = self.epoch_input(netuid, height) else {
            return;
        };
        // The input is built from state, so it is well formed; a refusal is a broken invariant.
        let out = agora_incentive::epoch(&input).expect("epoch input built from state is valid");
        let mut paid = Amount::ZERO;
        let mut payouts: Vec<(Address, Amount, Amount)> = Vec::with_capacity(input.stake.len());
        if let Some(subnet) = self.subnets.get_mut(&netuid) {
            for (uid, n) in subnet.neurons.iter_mut().enumerate() {
                let server = Amount(u128::from(out.server_emission[uid]));
                let validator = Amount(u128::from(out.validator_emission[uid]));
                n.validator_permit = out.validator_permits[uid];
                n.bonds = out.bonds[uid].clone();
                n.last_emission = Amount(server.0 + validator.0);
                n.outputs = NeuronOutputs {
                    active: out.active[uid],
                    stake_weight: out.stake_weight[uid],
                    consensus: out.consensus[uid],
                    incentive: out.incentive[uid],
                    dividends: out.dividends[uid],
                    validator_trust: out.validator_trust[uid],
                    server_emission: server,
                    validator_emission: validator,
                };
                paid = Amount(paid.0 + server.0 + validator.0);
                payouts.push((n.hotkey, server, validator));
            }
            // The epoch never pays more than `emission` (a property of the engine).
            assert!(
                paid.0 <= subnet.pending_emission.0,
                "epoch paid more than it accrued"
            );
            subnet.pending_emission = Amount(subnet.pending_emission.0 - paid.0);
            subnet.last_epoch_block = height;
        }
        for (uid, (hotkey, server, validator)) in payouts.into_iter().enumerate() {
            self.pay_neuron(&hotkey, server, validator);
            if !server.is_zero() || !validator.is_zero() {
                events.push(Event::EpochPaid {
                    netuid,
                    uid: uid as u16,
                    hotkey,
                    server,
                    validator,
                });
            }
        }
    }

    /// Pay one neuron's epoch emission (see the module docs for the rules).
    fn pay_neuron(&mut self, hotkey: &Address, server: Amount, validator: Amount) {
        let (owner, take) = match self.hotkeys.get(hotkey) {
            Some(h) => (h.owner, h.take),
            None => (*hotkey, 0),
        };
        let mut to_owner = server.0;
        if !validator.is_zero() {
            let take_amount = validator
                .mul_div(u128::from(take), 65535)
                .unwrap_or(Amount::ZERO)
                .0;
            let shared = validator.0 - take_amount;
            to_owner += take_amount;
            let stakers: Vec<(Address, u128)> = self
                .stakes
                .range((*hotkey, Address([0; 32]))..=(*hotkey, Address([0xff; 32])))
                .map(|((_, coldkey), s)| (*coldkey, s.0))
                .collect();
            let total: u128 = stakers.iter().map(|s| s.1).sum();
            let mut distributed = 0u128;
            if total > 0 {
                for (coldkey, s) in stakers {
                    let share = Amount(shared).mul_div(s, total).unwrap_or(Amount::ZERO).0;
                    distributed += share;
                    let acc = self.accounts.entry(coldkey).or_default();
                    acc.balance = Amount(acc.balance.0.saturating_add(share));
                }
            }
            to_owner += shared - distributed;
        }
        let acc = self.accounts.entry(owner).or_default();
        acc.balance = Amount(acc.balance.0.saturating_add(to_owner));
    }
}

#[cfg(test)]
mod tests {
    use crate::state::Hotkey;
    use crate::state::tests::{addr, small};
    use agora_primitives::{Amount, SubnetParams};

    #[test]
    fn issuance_follows_shares_and_validator_emission_is_split_by_take_and_stake() {
        let mut s = small();
        let id = s
            .create_subnet(&addr(1), SubnetParams::defaults(), &mut Vec::new())
            .unwrap();
        s.subnets.get_mut(&id).unwrap().emission_share_ppm = 250_000;
        let mut ev = Vec::new();
        s.issue(&mut ev);
        assert_eq!(
            s.subnets[&id].pending_emission,
            Amount(s.params.emission_per_block.0 / 4)
        );
        assert_eq!(s.issued, s.subnets[&id].pending_emission);

        // Hotkey 10 (owner 9, take 10%) has 50 AGORA from 9; add 50 from account 3.
        s.hotkeys.insert(
            addr(10),
            Hotkey {
                owner: addr(9),
                take: 6553,
            },
        );
        s.stakes.insert((addr(10), addr(3)), Amount::agora(50));
        let before3 = s.account(&addr(3)).balance;
        s.pay_neuron(&addr(10), Amount(7), Amount(1_000_000));
        let take = 1_000_000u128 * 6553 / 65535; // 99_992
        let shared = 1_000_000 - take;
        assert_eq!(s.account(&addr(3)).balance.0 - before3.0, shared / 2);
        assert_eq!(
            s.account(&addr(9)).balance.0,
            7 + take + (shared - shared / 2)
        );
    }
}
