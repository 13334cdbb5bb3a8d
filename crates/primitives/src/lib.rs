//! Ids, amounts, transactions and blocks: the types every node agrees on.
//!
//! Stability: consensus-visible; the encodings are pinned by golden vectors
//! (`crates/crypto/tests/golden.rs`, which also pins hashes and signatures), and changing one is
//! a hard fork.
//!
//! # Design
//! Plain data with canonical encodings ([`agora_codec`]). Amounts are `u128` base units with 9
//! decimals and checked arithmetic only. Addresses are Ed25519 public keys; hashing and signing
//! live in `agora-crypto`, so this crate has no cryptographic dependency.
//!
//! # Invariants
//! - Every type here has exactly one encoding; decoding is bounded by the `MAX_*` constants.
//! - A transaction names its chain, the sender's next nonce and an expiry height, so a signature
//!   cannot be replayed on another chain, twice, or late.
//!
//! # Example
//! ```
//! use agora_primitives::Amount;
//! let fee: Amount = "0.001".parse().unwrap();
//! assert_eq!(fee, Amount(1_000_000));
//! assert_eq!(fee.to_string(), "0.001");
//! ```
#![forbid(unsafe_code)]

mod amount;
mod block;
mod ids;
mod receipt;
mod tx;

pub use amount::{Amount, BASE_UNITS_PER_AGORA, DECIMALS, ParseAmountError};
pub use block::{Block, Header, MAX_BLOCK_TXS};
pub use ids::{Address, Hash, NetUid, ParseIdError, Uid, from_hex, to_hex};
pub use receipt::{MAX_RECEIPT_TTL, MAX_RECEIPTS, RECEIPT_SIGNING_DOMAIN, Receipt, SignedReceipt};
pub use tx::{
    Call, MAX_ADDRESS_BYTES, MAX_ADDRESSES, MAX_CHAIN_ID_BYTES, MAX_PEER_ID_BYTES, MAX_TX_BYTES,
    MAX_WEIGHTS, ServeInfo, SignedTransaction, SubnetParams, TX_SIGNING_DOMAIN, Transaction,
};

/// Write the `u32` count of a slice (for sequences whose items encode specially).
pub(crate) fn encode_len_of<T>(items: &[T], out: &mut Vec<u8>) {
    agora_codec::encode_len(items.len(), out);
}
