//! Integration tests of the ledger state machine.

mod copier;
mod escrow;
mod harness;
mod properties;
mod rejections;
