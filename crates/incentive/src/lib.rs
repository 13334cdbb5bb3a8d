//! Yuma Consensus: one epoch of one subnet, bit-exact with subtensor's sparse epoch.
//!
//! Stability: the numbers are the contract (`specs/yuma.md`); the Rust API may still change.
//!
//! # Design
//! [`epoch`] takes an [`EpochInput`] (stake, permits, activity, stored weights and bonds,
//! hyperparameters) and returns an [`EpochOutput`] (consensus, incentive, dividends, trust, new
//! bonds and emission amounts). The arithmetic is the reference's own (`substrate-fixed`'s
//! `I32F32`, `I64F64` and `I96F32`), step for step, so every output matches bit for bit; the
//! algorithms are sparse (see [`epoch`]'s module) so the cost is linear in the stored entries.
//! [`json`] reads and writes the conformance-vector format.
//!
//! # Invariants
//! - Pure: no I/O, no clock, no randomness, no floats, no hash-map order.
//! - Never panics: a malformed input is an [`InputError`] naming the field.
//! - The emitted total never exceeds `emission`.
//!
//! # Example
//! ```
//! use agora_incentive::{epoch, EpochInput, Hyperparameters};
//! let input = EpochInput {
//!     n: 2, current_block: 10, tempo: 10, last_mechanism_step_block: 0, activity_cutoff: 100,
//!     stake_threshold: 0, owner_uid: None, stake: vec![100, 0],
//!     validator_permits: vec![true, false], last_update: vec![9, 0],
//!     block_at_registration: vec![0, 0], weights: vec![vec![(1, 65535)], vec![]],
//!     bonds: vec![vec![], vec![]], emission: 1_000,
//!     hyperparameters: Hyperparameters {
//!         kappa: 32767, bonds_penalty: 65535, bonds_moving_average: 900_000, yuma3: true,
//!         liquid_alpha: false, alpha_low: 45875, alpha_high: 58982,
//!         alpha_sigmoid_steepness: 1000, max_allowed_validators: 64,
//!     },
//! };
//! let out = epoch(&input).unwrap();
//! assert_eq!(out.incentive, vec![0, 65535]);
//! assert!(out.server_emission[1] > 0 && out.validator_emission[0] > 0);
//! ```
#![forbid(unsafe_code)]

mod epoch;
mod exp;
mod fixed;
pub mod json;
mod sparse;
pub mod synthetic;
mod types;

pub use epoch::epoch;
pub use fixed::max_upscale_u16;
pub use types::{EpochInput, EpochOutput, Hyperparameters, InputError};
