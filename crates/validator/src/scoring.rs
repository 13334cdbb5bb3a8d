//! From observed answers to weights.
//!
//! Per challenge a miner scores in `[0, 1]`:
//! - 0 when the answer fails verification, or never comes (dropped, timed out, refused);
//! - otherwise a speed factor, relative to the median of the miners that passed in the same
//!   round (so a slow machine class is not punished for the network's speed, only for being
//!   slower than its peers): `min(1, 2 * ttft_median / ttft)^3 * min(1, 2 * tpot_median / tpot)^3`,
//!   where `ttft` is the time to the first token and `tpot` the time per token after it, both
//!   from arrival times at the validator. Within twice the median costs nothing; beyond it the
//!   factor falls with the cube.
//! - A miner that holds its tokens back and bursts them (at least [`BURST_MIN_TOKENS`] tokens
//!   whose time per token after the first is under a tenth of the round's median) breaks the
//!   streaming contract clients rely on: that counts as a failure, whatever the answer.
//!
//! Each miner keeps an exponential moving average of its scores ([`EMA_ALPHA`] per challenge,
//! starting at its first score) and the outcomes of its last [`WINDOW`] challenges. Its weight
//! is `ema^2 / 8^failures`: every failure among the last [`WINDOW`] challenges divides the
//! weight by [`FAILURE_PENALTY`]. Clients need miners that answer every time: a miner that drops
//! half of its requests is worth far less than half of one that does not, and a moving average
//! alone (which forgets within a few challenges) would let it earn on a lucky streak.
//!
//! The weight vector gives full weight to every miner at least [`FULL_WEIGHT_SHARE`] as good as
//! the best one, and proportionally less below: differences within the noise of timing on a
//! shared machine are not worth paying for, and validators that judge the same miners the same
//! way then agree exactly, so consensus sits on their weights and not between them.
//!
//! Floats are fine here: these are one validator's local judgements; what reaches consensus is
//! the `u16` weight vector.
#![allow(
    clippy::float_arithmetic,
    reason = "scores are a validator's local judgement; only the u16 weights reach the chain"
)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use agora_primitives::Address;

/// Moving-average weight of each new challenge score.
pub const EMA_ALPHA: f64 = 0.3;
/// Challenges remembered for the failure count.
pub const WINDOW: usize = 32;
/// Each failure in the window divides the weight by this.
pub const FAILURE_PENALTY: f64 = 8.0;
/// Within this multiple of the round's median, speed costs nothing.
pub const SPEED_TOLERANCE: f64 = 2.0;

/// Answers shorter than this are not judged for bursting.
pub const BURST_MIN_TOKENS: usize = 8;
/// A time per token under the round's median divided by this is a burst.
pub const BURST_RATIO: f64 = 10.0;

/// A miner with at least this share of the best miner's weight gets full weight.
pub const FULL_WEIGHT_SHARE: f64 = 0.5;

/// What the validator saw of one challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The answer came and passed verification.
    pub passed: bool,
    /// Time from sending the request to the first token.
    pub ttft: Duration,
    /// Time from sending the request to the last token.
    pub total: Duration,
    /// Tokens received.
    pub tokens: usize,
}

impl Observation {
    /// A challenge that failed (no answer, or a wrong one).
    pub fn failed() -> Self {
        Self {
            passed: false,
            ttft: Duration::ZERO,
            total: Duration::ZERO,
            tokens: 0,
        }
    }

    /// Seconds per token after the first, when there are at least two.
    fn tpot(&self) -> Option<f64> {
        (self.tokens >= 2).then(|| {
            (self.total.saturating_sub(self.ttft)).as_secs_f64() / (self.tokens - 1) as f64
        })
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The score of each observation of one round (same order), and whether it counts as passed
/// (a burst does not).
pub fn round_scores(round: &[Observation]) -> Vec<(f64, bool)> {
    let passed: Vec<&Observation> = round.iter().filter(|o| o.passed).collect();
    let ttft_med = median(passed.iter().map(|o| o.ttft.as_secs_f64()).collect());
    let tpot_med = median(passed.iter().filter_map(|o| o.tpot()).collect());
    let factor = |reference: Option<f64>, mine: Option<f64>| -> f64 {
        match (reference, mine) {
            (Some(r), Some(m)) if m > 0.0 => (SPEED_TOLERANCE * r / m).min(1.0).powi(3),
            _ => 1.0,
        }
    };
    round
        .iter()
        .map(|o| {
            if !o.passed {
                return (0.0, false);
            }
            let burst = match (tpot_med, o.tpot()) {
                (Some(m), Some(t)) => o.tokens >= BURST_MIN_TOKENS && t * BURST_RATIO < m,
                _ => false,
            };
            if burst {
                return (0.0, false);
            }
            let s = factor(ttft_med, Some(o.ttft.as_secs_f64())) * factor(tpot_med, o.tpot());
            (s, true)
        })
        .collect()
}

/// One miner's record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MinerScore {
    /// Moving average of challenge scores (`None` before the first).
    pub ema: Option<f64>,
    /// Outcomes of the last [`WINDOW`] challenges (true: passed).
    pub recent: VecDeque<bool>,
    /// Challenges sent in all.
    pub challenges: u64,
}

impl MinerScore {
    /// Failures among the recent challenges.
    pub fn failures(&self) -> usize {
        self.recent.iter().filter(|ok| !**ok).count()
    }

    /// The weight this record earns (before normalisation).
    pub fn weight(&self) -> f64 {
        let ema = self.ema.unwrap_or(0.0);
        ema * ema / FAILURE_PENALTY.powi(self.failures() as i32)
    }
}

/// Every miner's record, by hotkey.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    miners: BTreeMap<Address, MinerScore>,
}

impl Scores {
    /// Record one challenge's score for `miner`.
    pub fn record(&mut self, miner: Address, score: f64, passed: bool) {
        let m = self.miners.entry(miner).or_default();
        let score = score.clamp(0.0, 1.0);
        m.ema = Some(match m.ema {
            None => score,
            Some(e) => e * (1.0 - EMA_ALPHA) + score * EMA_ALPHA,
        });
        m.recent.push_back(passed);
        while m.recent.len() > WINDOW {
            m.recent.pop_front();
        }
        m.challenges += 1;
    }

    /// Record a whole round: `(miner, observation)` pairs scored together.
    pub fn record_round(&mut self, round: &[(Address, Observation)]) {
        let observations: Vec<Observation> = round.iter().map(|(_, o)| o.clone()).collect();
        for ((miner, _), (s, passed)) in round.iter().zip(round_scores(&observations)) {
            self.record(*miner, s, passed);
        }
    }

    /// One line per miner for logs: `hotkey-prefix ema/failures/challenges`.
    pub fn summary(&self) -> String {
        self.miners
            .iter()
            .map(|(a, m)| {
                format!(
                    "{}:{:.3}/{}/{}",
                    &a.to_string()[..8],
                    m.ema.unwrap_or(0.0),
                    m.failures(),
                    m.challenges
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A miner's record.
    pub fn get(&self, miner: &Address) -> Option<&MinerScore> {
        self.miners.get(miner)
    }

    /// The weight vector for `uids` (`(uid, hotkey)`, in increasing uid order): 65535 for every
    /// miner with at least [`FULL_WEIGHT_SHARE`] of the best one's weight, proportionally less
    /// below; uids without a record or with zero weight are left out. `None` when nobody has
    /// earned anything.
    pub fn weights(&self, uids: &[(u16, Address)]) -> Option<(Vec<u16>, Vec<u16>)> {
        let raw: Vec<(u16, f64)> = uids
            .iter()
            .filter_map(|(uid, hotkey)| self.miners.get(hotkey).map(|m| (*uid, m.weight())))
            .collect();
        let best = raw.iter().map(|(_, w)| *w).fold(0.0, f64::max);
        if best <= 0.0 {
            return None;
        }
        let (ids, values): (Vec<u16>, Vec<u16>) = raw
            .into_iter()
            .map(|(uid, w)| {
                let share = (w / best / FULL_WEIGHT_SHARE).min(1.0);
                (uid, (share * 65535.0).round() as u16)
            })
            .filter(|(_, v)| *v > 0)
            .unzip();
        Some((ids, values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ttft_ms: u64, total_ms: u64, tokens: usize) -> Observation {
        Observation {
            passed: true,
            ttft: Duration::from_millis(ttft_ms),
            total: Duration::from_millis(total_ms),
            tokens,
        }
    }

    #[test]
    fn honest_miners_score_one_and_slow_or_bursting_ones_little() {
        let round = [
            ok(300, 2_300, 41),    // honest
            ok(400, 2_600, 41),    // honest, a bit slower
            ok(350, 2_400, 41),    // honest
            ok(1_750, 12_000, 41), // slow: five times later
            ok(2_300, 2_310, 41),  // buffer: everything at the end
            Observation::failed(),
        ];
        let s = round_scores(&round);
        assert_eq!(&s[..3], &[(1.0, true), (1.0, true), (1.0, true)]);
        assert!(s[3].1 && s[3].0 < 0.02, "slow {:?}", s[3]);
        // The buffered answer is a burst: a failure.
        assert_eq!(s[4], (0.0, false));
        assert_eq!(s[5], (0.0, false));
        // A short answer is not judged for bursting.
        let short = [ok(300, 2_300, 41), ok(350, 2_400, 41), ok(400, 401, 3)];
        assert!(round_scores(&short)[2].1);
    }

    #[test]
    fn failures_in_the_window_cost_more_than_their_share() {
        let a = Address([1; 32]);
        let b = Address([2; 32]);
        let mut scores = Scores::default();
        for i in 0..12 {
            scores.record(a, 1.0, true);
            // b drops every other request.
            if i % 2 == 0 {
                scores.record(b, 0.0, false);
            } else {
                scores.record(b, 1.0, true);
            }
        }
        let (uids, values) = scores.weights(&[(0, a), (1, b)]).unwrap();
        assert_eq!(uids, vec![0]);
        assert_eq!(values, vec![65535]);
        assert!(scores.get(&b).unwrap().weight() < 1e-4);
        // Old failures leave the window.
        for _ in 0..WINDOW {
            scores.record(b, 1.0, true);
        }
        assert!(scores.get(&b).unwrap().weight() > 0.99);
    }

    #[test]
    fn weights_are_scaled_to_the_best_and_empty_without_records() {
        let mut scores = Scores::default();
        assert_eq!(scores.weights(&[(3, Address([3; 32]))]), None);
        scores.record(Address([3; 32]), 1.0, true);
        scores.record(Address([4; 32]), 0.5, true); // weight 0.25: half of full
        scores.record(Address([5; 32]), 0.8, true); // weight 0.64: full
        let (uids, values) = scores
            .weights(&[
                (3, Address([3; 32])),
                (4, Address([4; 32])),
                (5, Address([5; 32])),
                (6, Address([6; 32])),
            ])
            .unwrap();
        assert_eq!(uids, vec![3, 4, 5]);
        assert_eq!(values, vec![65535, 32768, 65535]);
    }
}
