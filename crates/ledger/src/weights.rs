//! Weights: commit a hash of (weights, salt), reveal it in the reveal window; or set directly
//! when commit-reveal is off. Rows are stored max-upscaled exactly as `specs/yuma.md` says.

use agora_primitives::{Address, Hash, NetUid};

use crate::state::Commit;
use crate::{Event, State, TxError};

impl State {
    fn neuron_uid(&self, netuid: NetUid, hotkey: &Address) -> Result<usize, TxError> {
        let subnet = self
            .subnets
            .get(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        subnet
            .neurons
            .iter()
            .position(|n| n.hotkey == *hotkey)
            .ok_or(TxError::NotRegistered {
                netuid,
                hotkey: *hotkey,
            })
    }

    pub(crate) fn commit_weights(
        &mut self,
        hotkey: &Address,
        netuid: NetUid,
        hash: Hash,
        height: u64,
    ) -> Result<(), TxError> {
        let uid = self.neuron_uid(netuid, hotkey)?;
        let subnet = self
            .subnets
            .get_mut(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        subnet.neurons[uid].commit = Some(Commit {
            hash,
            block: height,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reveal_weights(
        &mut self,
        hotkey: &Address,
        netuid: NetUid,
        uids: &[u16],
        values: &[u16],
        salt: &[u8; 32],
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let uid = self.neuron_uid(netuid, hotkey)?;
        let subnet = self
            .subnets
            .get(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        let p = &subnet.params;
        let n = subnet.neurons.len() as u16;
        if uids.len() != values.len() {
            return Err(TxError::InvalidWeights("uids and values differ in length"));
        }
        if let Some(&bad) = uids.iter().find(|&&u| u >= n) {
            return Err(TxError::UnknownUid { uid: bad, n });
        }
        if !uids.windows(2).all(|w| w[0] < w[1]) {
            return Err(TxError::InvalidWeights(
                "uids must be strictly increasing (no duplicates)",
            ));
        }
        let nonzero = values.iter().filter(|&&v| v > 0).count();
        if nonzero < usize::from(p.min_allowed_weights.min(n)) {
            return Err(TxError::TooFewWeights {
                got: nonzero,
                min: p.min_allowed_weights,
            });
        }
        let neuron = &subnet.neurons[uid];
        let since = height.saturating_sub(neuron.last_update);
        if neuron.last_update != 0 && since < u64::from(p.weights_rate_limit) {
            return Err(TxError::RateLimited {
                since,
                limit: p.weights_rate_limit,
            });
        }
        let mut clear_commit = false;
        if p.commit_reveal_period > 0 {
            let commit = neuron
                .commit
                .as_ref()
                .ok_or(TxError::CommitRequired(netuid))?;
            let tempo = u64::from(p.tempo);
            // The commit's epoch is `block / tempo`; it reveals during epoch + period.
            let opens = (commit.block / tempo + u64::from(p.commit_reveal_period)) * tempo;
            let closes = opens + tempo;
            if height < opens {
                return Err(TxError::RevealTooEarly { opens });
            }
            if height >= closes {
                return Err(TxError::RevealTooLate { closed: closes });
            }
            let expected = agora_crypto::weights_commit(netuid, uids, values, salt);
            if expected != commit.hash {
                return Err(TxError::RevealMismatch(commit.hash));
            }
            clear_commit = true;
        }
        let stored = agora_incentive::max_upscale_u16(values);
        let row: Vec<(u16, u16)> = uids.iter().copied().zip(stored).collect();
        let subnet = self
            .subnets
            .get_mut(&netuid)
            .ok_or(TxError::UnknownSubnet(netuid))?;
        let neuron = &mut subnet.neurons[uid];
        neuron.weights = row;
        neuron.last_update = height;
        if clear_commit {
            neuron.commit = None;
        }
        events.push(Event::WeightsSet {
            netuid,
            uid: uid as u16,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{addr, small};
    use agora_primitives::{Amount, SubnetParams};

    #[test]
    fn direct_weights_are_stored_max_upscaled_and_rate_limited() {
        let mut s = small();
        let params = SubnetParams {
            commit_reveal_period: 0,
            weights_rate_limit: 5,
            ..SubnetParams::defaults()
        };
        let id = s.create_subnet(&addr(1), params, &mut Vec::new()).unwrap();
        let mut ev = Vec::new();
        for h in [20, 21, 22] {
            s.register(&addr(1), id, &addr(h), Amount::agora(1), 1, &mut ev)
                .unwrap();
        }
        s.reveal_weights(&addr(20), id, &[1, 2], &[1, 2], &[0; 32], 10, &mut ev)
            .unwrap();
        assert_eq!(
            s.subnets[&id].neurons[0].weights,
            vec![(1, 32768), (2, 65535)]
        );
        assert!(
            s.reveal_weights(&addr(20), id, &[1], &[1], &[0; 32], 12, &mut ev)
                .is_err()
        );
        assert!(
            s.reveal_weights(&addr(20), id, &[2, 1], &[1, 1], &[0; 32], 20, &mut ev)
                .is_err()
        );
        s.reveal_weights(&addr(20), id, &[1], &[1], &[0; 32], 20, &mut ev)
            .unwrap();
    }
}
