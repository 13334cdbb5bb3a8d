//! Agora's serving network: miners answer chat requests sealed to them, gateways route
//! OpenAI-style requests to miners and pay them per token through signed receipts.
//!
//! - [`seal`]: HPKE (RFC 9180) sealing of requests to a miner, and of the answers back.
//! - [`protocol`]: the `/agora/infer/1` stream frames, miner adverts, receipt checks.
//! - [`miner`]: the miner role. [`gateway`]: miner choice, retries, receipt countersigning.
//! - [`openai`]: `POST /v1/chat/completions` and `GET /v1/models`.

pub mod gateway;
pub mod miner;
pub mod openai;
pub mod protocol;
pub mod seal;
