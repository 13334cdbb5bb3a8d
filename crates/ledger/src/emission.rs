//! Emission: per-block issuance accrues to subnets by their share; every `tempo` blocks a
//! subnet's epoch is due (the incentive engine runs it; see [`State::epochs_due`]).

use agora_primitives::{Amount, NetUid};

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
    ///
    /// This is the hook for the incentive engine: build each due subnet's epoch input from the
    /// state, run `agora_incentive::epoch`, pay the pending emission, store the outputs.
    pub fn epochs_due(&self, height: u64) -> Vec<NetUid> {
        self.subnets
            .iter()
            .filter(|(_, s)| height.saturating_sub(s.last_epoch_block) >= u64::from(s.params.tempo))
            .map(|(id, _)| *id)
            .collect()
    }
}
