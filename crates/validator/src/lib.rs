//! Agora's subnet validator: the parts that decide whether a miner's answer is real.
//!
//! - [`challenge`]: challenge prompts drawn from a seed (the latest finalized block hash), from
//!   templates and topics; no dataset download.
//! - [`verify`]: an answer teacher-forced through the validator's own copy of the registered
//!   model, with the rules of the subnet-validator issue.
//!
//! The validator role (sending challenges through the serving network, scoring, weights) is
//! not built yet; see `docs/ARCHITECTURE.md`.

pub mod challenge;
pub mod verify;
