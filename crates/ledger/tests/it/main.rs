//! Integration tests of the ledger state machine.

mod harness;
mod properties;
mod rejections;
