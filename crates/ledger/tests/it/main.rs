//! Integration tests of the ledger state machine.

mod copier;
mod harness;
mod properties;
mod rejections;
