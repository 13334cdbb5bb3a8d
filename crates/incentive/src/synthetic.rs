//! Deterministic synthetic subnets for benchmarks and tests (no randomness source: a seeded
//! SplitMix64 stream, so every run builds the same subnet).

use crate::{EpochInput, Hyperparameters, epoch};

/// Shape of a synthetic subnet.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Number of uids.
    pub n: u16,
    /// Uids `0..validators` are validators (they hold stake and set weights).
    pub validators: u16,
    /// Weights per validator row.
    pub weights_per_row: u16,
    /// Weights go to miners drawn from the first `pool` non-validator uids.
    pub pool: u16,
    /// Yuma 3 bonds.
    pub yuma3: bool,
    /// Liquid alpha.
    pub liquid_alpha: bool,
}

/// SplitMix64: a tiny, fixed, seeded generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// A subnet of the given shape whose stored bonds are those of one previous epoch, so the timed
/// epoch exercises the bond EMA on realistic data.
pub fn subnet(shape: Shape, seed: u64) -> EpochInput {
    let mut rng = SplitMix64::new(seed);
    let n = usize::from(shape.n);
    let v = usize::from(shape.validators.min(shape.n));
    let miners = n - v;
    let pool = usize::from(shape.pool).min(miners);
    let mut weights = vec![Vec::new(); n];
    for (i, row) in weights.iter_mut().enumerate().take(v) {
        let mut targets: Vec<u16> = if pool == 0 {
            Vec::new()
        } else if usize::from(shape.weights_per_row) >= pool {
            (v..v + pool).map(|j| j as u16).collect()
        } else {
            // Partial Fisher-Yates over the pool.
            let mut all: Vec<u16> = (v..v + pool).map(|j| j as u16).collect();
            for k in 0..usize::from(shape.weights_per_row) {
                let pick = k + rng.below((pool - k) as u64) as usize;
                all.swap(k, pick);
            }
            all.truncate(usize::from(shape.weights_per_row));
            all
        };
        // Rows that also weight other validators when the row is wider than the pool.
        let extra = usize::from(shape.weights_per_row).saturating_sub(targets.len());
        targets.extend((0..v).filter(|&j| j != i).take(extra).map(|j| j as u16));
        targets.sort_unstable();
        let raw: Vec<u64> = targets.iter().map(|_| 1 + rng.below(65535)).collect();
        let max = raw.iter().copied().max().unwrap_or(1);
        *row = targets
            .iter()
            .zip(&raw)
            .map(|(&j, &w)| (j, (w * 65535 / max) as u16))
            .collect();
    }
    let current_block = 10_000;
    let mut input = EpochInput {
        n: shape.n,
        current_block,
        tempo: 360,
        last_mechanism_step_block: current_block - 360,
        activity_cutoff: 5000,
        stake_threshold: 0,
        owner_uid: None,
        stake: (0..n)
            .map(|i| {
                if i < v {
                    1_000_000_000 + rng.below(1_000_000_000_000)
                } else {
                    0
                }
            })
            .collect(),
        validator_permits: (0..n).map(|i| i < v).collect(),
        last_update: (0..n)
            .map(|i| if i < v { current_block - 1 } else { 0 })
            .collect(),
        block_at_registration: vec![1; n],
        weights,
        bonds: vec![Vec::new(); n],
        emission: 1_000_000_000_000,
        hyperparameters: Hyperparameters {
            kappa: 32767,
            bonds_penalty: 65535,
            bonds_moving_average: 900_000,
            yuma3: shape.yuma3,
            liquid_alpha: shape.liquid_alpha,
            alpha_low: 45875,
            alpha_high: 58982,
            alpha_sigmoid_steepness: 1000,
            max_allowed_validators: shape.validators,
        },
    };
    if let Ok(previous) = epoch(&input) {
        input.bonds = previous.bonds;
        input.validator_permits = previous.validator_permits;
    }
    input
}

/// The benchmark cases named by the incentive issue: `(name, shape)`.
pub fn bench_cases() -> [(&'static str, Shape); 3] {
    [
        (
            "epoch/n256_v64_yuma3_la",
            Shape {
                n: 256,
                validators: 64,
                weights_per_row: 255,
                pool: 192,
                yuma3: true,
                liquid_alpha: true,
            },
        ),
        (
            "epoch/n4096_v256_yuma3_la",
            Shape {
                n: 4096,
                validators: 256,
                weights_per_row: 256,
                pool: 320,
                yuma3: true,
                liquid_alpha: true,
            },
        ),
        (
            "epoch/n4096_v256_yuma3",
            Shape {
                n: 4096,
                validators: 256,
                weights_per_row: 256,
                pool: 320,
                yuma3: true,
                liquid_alpha: false,
            },
        ),
    ]
}
