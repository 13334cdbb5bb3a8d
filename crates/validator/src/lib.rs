//! Agora's subnet validator: the parts that decide whether a miner's answer is real.
//!
//! - [`challenge`]: challenge prompts drawn from a seed (the latest finalized block hash), from
//!   templates and topics; no dataset download.
//! - [`verify`]: an answer teacher-forced through the validator's own copy of the registered
//!   model, with the rules of the subnet-validator issue.
//!
//! - [`scoring`]: from verified, timed answers to a moving average per miner and weights.
//! - [`role`]: the running validator: rounds of challenges through the serving network, and
//!   weights committed and revealed on chain.

pub mod challenge;
pub mod role;
pub mod scoring;
pub mod verify;
