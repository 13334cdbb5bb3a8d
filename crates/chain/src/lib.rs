//! Agora's chain node: Malachite BFT consensus over the ledger.
//!
//! - [`context`]: the consensus types (height, validator set from stake, block id as the value,
//!   proposal parts, votes, Ed25519 signing bound to the chain id).
//! - [`wire`]: the canonical encoding of every consensus, sync and WAL message.
//! - [`host`]: the loop answering Malachite (build, validate by executing, commit, sync).
//! - [`mempool`]: bounded, nonce-ordered, fee-prioritised.
//! - [`api`]: the chain API; [`client`]: a small client for it.
//! - [`node`]: configuration and start-up; [`devnet`]: the embedded devnet and testnets.

pub mod api;
pub mod client;
pub mod context;
pub mod devnet;
pub mod genesis_file;
pub mod host;
pub mod mempool;
pub mod node;
pub mod shared;
pub mod views;
pub mod wire;
