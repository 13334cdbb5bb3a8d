//! Integration tests of the incentive engine.

mod conformance;
mod properties;
