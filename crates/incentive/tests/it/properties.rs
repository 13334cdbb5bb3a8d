//! Property tests of the epoch: permutation invariance, emission conservation, output ranges,
//! and bond decay of a validator that stops setting weights.
#![allow(clippy::needless_range_loop)] // Index loops read best when renaming uids.

use agora_incentive::synthetic::SplitMix64;
use agora_incentive::{EpochInput, EpochOutput, Hyperparameters, epoch};
use proptest::prelude::*;

/// An entry for uid `j` with a random value, present with probability 2/3 (`dense`) or 1/3.
fn draw(rng: &mut SplitMix64, j: u16, dense: bool) -> Option<(u16, u16)> {
    let present = (rng.below(3) != 0) == dense;
    if present {
        Some((j, rng.below(65536) as u16))
    } else {
        None
    }
}

/// A random subnet from a seed: every hyperparameter path, distinct stakes.
fn random_subnet(seed: u64) -> EpochInput {
    let mut rng = SplitMix64::new(seed);
    let n = 1 + rng.below(40) as usize;
    let current_block = 1000 + rng.below(1000);
    let mut stake: Vec<u64> = Vec::with_capacity(n);
    while stake.len() < n {
        let s = if rng.below(4) == 0 {
            0
        } else {
            1 + rng.below(1_000_000_000_000)
        };
        if s == 0 || !stake.contains(&s) {
            stake.push(s);
        }
    }
    let weights = (0..n)
        .map(|_| {
            let mut row: Vec<(u16, u16)> = (0..n as u16)
                .filter_map(|j| draw(&mut rng, j, true))
                .collect();
            if let Some(max) = row.iter().map(|e| e.1).max().filter(|&m| m > 0) {
                for e in row.iter_mut() {
                    e.1 = (u32::from(e.1) * 65535 / u32::from(max)) as u16;
                }
            }
            row
        })
        .collect();
    let bonds = (0..n)
        .map(|_| {
            (0..n as u16)
                .filter_map(|j| draw(&mut rng, j, false))
                .collect()
        })
        .collect();
    let low = rng.below(65536) as u16;
    let high = low.max(rng.below(65536) as u16);
    EpochInput {
        n: n as u16,
        current_block,
        tempo: 1 + rng.below(400),
        last_mechanism_step_block: if rng.below(2) == 0 {
            0
        } else {
            current_block - 1 - rng.below(500)
        },
        activity_cutoff: rng.below(1000),
        stake_threshold: if rng.below(3) == 0 {
            rng.below(1_000_000_000)
        } else {
            0
        },
        owner_uid: if rng.below(4) == 0 {
            Some(rng.below(n as u64) as u16)
        } else {
            None
        },
        stake,
        validator_permits: (0..n).map(|_| rng.below(4) != 0).collect(),
        last_update: (0..n)
            .map(|_| current_block - rng.below(1200).min(current_block))
            .collect(),
        block_at_registration: (0..n).map(|_| rng.below(current_block)).collect(),
        weights,
        bonds,
        emission: rng.next_u64() >> rng.below(64),
        hyperparameters: Hyperparameters {
            kappa: rng.below(65536) as u16,
            bonds_penalty: rng.below(65536) as u16,
            bonds_moving_average: rng.below(1_000_001),
            yuma3: rng.below(2) == 0,
            liquid_alpha: rng.below(2) == 0,
            alpha_low: low,
            alpha_high: high,
            alpha_sigmoid_steepness: rng.next_u64() as i16,
            max_allowed_validators: 1 + rng.below(n as u64 + 4) as u16,
        },
    }
}

/// Rename uid `i` to `perm[i]` everywhere in the input.
fn permute_input(input: &EpochInput, perm: &[u16]) -> EpochInput {
    let n = perm.len();
    let mut out = input.clone();
    let place = |dst: &mut Vec<u64>, src: &[u64]| {
        for i in 0..n {
            dst[usize::from(perm[i])] = src[i];
        }
    };
    place(&mut out.stake, &input.stake);
    place(&mut out.last_update, &input.last_update);
    place(&mut out.block_at_registration, &input.block_at_registration);
    for i in 0..n {
        out.validator_permits[usize::from(perm[i])] = input.validator_permits[i];
    }
    out.owner_uid = input.owner_uid.map(|o| perm[usize::from(o)]);
    let rows = |m: &[Vec<(u16, u16)>]| {
        let mut res = vec![Vec::new(); n];
        for i in 0..n {
            let mut row: Vec<(u16, u16)> = m[i]
                .iter()
                .map(|&(j, v)| (perm[usize::from(j)], v))
                .collect();
            row.sort_unstable();
            res[usize::from(perm[i])] = row;
        }
        res
    };
    out.weights = rows(&input.weights);
    out.bonds = rows(&input.bonds);
    out
}

fn permute_output(o: &EpochOutput, perm: &[u16]) -> EpochOutput {
    let n = perm.len();
    fn place<T: Clone>(src: &[T], perm: &[u16]) -> Vec<T> {
        let mut dst = src.to_vec();
        for (i, v) in src.iter().enumerate() {
            dst[usize::from(perm[i])] = v.clone();
        }
        dst
    }
    let mut bonds = vec![Vec::new(); n];
    for i in 0..n {
        let mut row: Vec<(u16, u16)> = o.bonds[i]
            .iter()
            .map(|&(j, v)| (perm[usize::from(j)], v))
            .collect();
        row.sort_unstable();
        bonds[usize::from(perm[i])] = row;
    }
    EpochOutput {
        active: place(&o.active, perm),
        stake_weight: place(&o.stake_weight, perm),
        validator_permits: place(&o.validator_permits, perm),
        consensus: place(&o.consensus, perm),
        incentive: place(&o.incentive, perm),
        dividends: place(&o.dividends, perm),
        validator_trust: place(&o.validator_trust, perm),
        bonds,
        server_emission: place(&o.server_emission, perm),
        validator_emission: place(&o.validator_emission, perm),
        combined_emission: place(&o.combined_emission, perm),
    }
}

fn shuffle(n: usize, seed: u64) -> Vec<u16> {
    let mut rng = SplitMix64::new(seed ^ 0xA5A5);
    let mut perm: Vec<u16> = (0..n as u16).collect();
    for k in (1..n).rev() {
        perm.swap(k, rng.below(k as u64 + 1) as usize);
    }
    perm
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn renaming_uids_permutes_every_output(seed in any::<u64>()) {
        let input = random_subnet(seed);
        // Non-zero stakes are distinct (see `random_subnet`), so no permit tie is broken by uid.
        let perm = shuffle(usize::from(input.n), seed);
        let base = epoch(&input).expect("valid input");
        let renamed = epoch(&permute_input(&input, &perm)).expect("valid input");
        prop_assert_eq!(renamed, permute_output(&base, &perm), "seed {}", seed);
    }

    #[test]
    fn emission_is_never_exceeded_and_short_only_by_rounding(seed in any::<u64>()) {
        let input = random_subnet(seed);
        let out = epoch(&input).expect("valid input");
        let n = u128::from(input.n);
        let emission = u128::from(input.emission);
        let paid: u128 = out.server_emission.iter().chain(&out.validator_emission).map(|&x| u128::from(x)).sum();
        prop_assert!(paid <= emission, "paid {} of {} (seed {})", paid, emission, seed);
        // Each normalised share is truncated (< 2^-32 each, two shares per uid, and the stake
        // fallback loses as much) and each amount is floored (< 1 base unit each).
        let bound = 2 * n + (emission * 2 * n).div_ceil(1 << 32) + 1;
        // With no stake left after the threshold nothing is emitted at all (reference behaviour).
        let stake_counts = input.stake.iter().enumerate().any(|(i, &s)| {
            s > 0 && (s >= input.stake_threshold || input.owner_uid == Some(i as u16))
        });
        if stake_counts {
            prop_assert!(emission - paid <= bound, "short by {} > {} (seed {})", emission - paid, bound, seed);
        }
    }

    #[test]
    fn every_output_stays_within_its_range(seed in any::<u64>()) {
        let input = random_subnet(seed);
        let out = epoch(&input).expect("valid input");
        let total = |v: &[u16]| v.iter().map(|&x| u64::from(x)).sum::<u64>();
        prop_assert!(total(&out.incentive) <= 65535);
        prop_assert!(total(&out.dividends) <= 65535);
        prop_assert!(total(&out.stake_weight) <= 65535);
        for (i, row) in out.bonds.iter().enumerate() {
            prop_assert!(row.is_empty() || out.validator_permits[i]);
            prop_assert!(row.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(row.iter().all(|&(j, _)| j < input.n));
        }
        for i in 0..usize::from(input.n) {
            let weighted = input.weights.iter().any(|row| row.iter().any(|&(j, w)| usize::from(j) == i && w > 0));
            if !weighted {
                prop_assert_eq!(out.server_emission[i], 0, "uid {} has no weight on it", i);
            }
            prop_assert!(out.server_emission[i] <= input.emission);
            prop_assert!(out.validator_emission[i] <= input.emission);
            prop_assert!(out.combined_emission[i] <= input.emission);
        }
        let permits = out.validator_permits.iter().filter(|&&p| p).count();
        prop_assert!(permits <= usize::from(input.hyperparameters.max_allowed_validators) + 1);
    }
}

#[test]
fn a_validator_that_sets_no_weights_earns_no_dividends_once_its_bonds_decay() {
    for (seed, yuma3, liquid_alpha) in [(1u64, false, false), (2, true, false), (3, true, true)] {
        let mut rng = SplitMix64::new(seed);
        let n = 8usize;
        let v = 3usize;
        let mut input = EpochInput {
            n: n as u16,
            current_block: 100,
            tempo: 10,
            last_mechanism_step_block: 0,
            activity_cutoff: 1_000_000,
            stake_threshold: 0,
            owner_uid: None,
            stake: (0..n)
                .map(|i| if i < v { 1000 + i as u64 } else { 0 })
                .collect(),
            validator_permits: (0..n).map(|i| i < v).collect(),
            last_update: vec![99; n],
            block_at_registration: vec![0; n],
            weights: (0..n)
                .map(|i| {
                    if i < v {
                        (v..n)
                            .map(|j| (j as u16, 1 + rng.below(65535) as u16))
                            .collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            bonds: vec![Vec::new(); n],
            emission: 1_000_000_000,
            hyperparameters: Hyperparameters {
                kappa: 32767,
                bonds_penalty: 65535,
                bonds_moving_average: 900_000,
                yuma3,
                liquid_alpha,
                alpha_low: 45875,
                alpha_high: 58982,
                alpha_sigmoid_steepness: 1000,
                max_allowed_validators: 8,
            },
        };
        // Build up bonds with everyone evaluating, then validator 0 goes silent (stays active).
        for _ in 0..20 {
            let out = epoch(&input).expect("valid");
            input.bonds = out.bonds;
            input.validator_permits = out.validator_permits;
            input.current_block += 10;
            input.last_update = vec![input.current_block - 1; n];
        }
        let before = epoch(&input).expect("valid").dividends[0];
        assert!(before > 0, "validator 0 earns while it evaluates");
        input.weights[0].clear();
        let mut decayed_after = None;
        for e in 0..400 {
            let out = epoch(&input).expect("valid");
            if out.dividends[0] == 0 && out.bonds[0].iter().all(|&(_, b)| b == 0) {
                decayed_after = Some(e);
                break;
            }
            input.bonds = out.bonds;
            input.validator_permits = out.validator_permits;
            input.current_block += 10;
            input.last_update = vec![input.current_block - 1; n];
        }
        assert!(
            decayed_after.is_some(),
            "yuma3={yuma3} liquid_alpha={liquid_alpha}: dividends never reached 0"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rows_out_of_uid_order_give_the_same_epoch(seed in any::<u64>()) {
        let input = random_subnet(seed);
        let mut shuffled = input.clone();
        for row in shuffled.weights.iter_mut().chain(shuffled.bonds.iter_mut()) {
            row.reverse();
        }
        prop_assert_eq!(epoch(&shuffled).expect("valid"), epoch(&input).expect("valid"));
    }
}
