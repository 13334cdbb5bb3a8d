//! Helpers shared by the tests that run the real binary against a chain.

use agora_crypto::Keypair;
use agora_primitives::{Amount, Call, Transaction, to_hex};
use std::process::Command;

/// The binary under test.
pub fn agora() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agora"))
}

/// Kills the child when the test ends, pass or fail.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of `POST /chain/tx` for `call` signed by `key` with `nonce` on `chain` (a 1,000
/// base-unit fee, no practical expiry).
pub fn tx_body(chain: &str, key: &Keypair, nonce: u64, call: Call) -> serde_json::Value {
    let t = agora_crypto::sign_tx(
        key,
        Transaction {
            chain_id: chain.to_owned(),
            sender: key.address(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 1_000_000,
            call,
        },
    );
    serde_json::json!({"tx": to_hex(&agora_codec::encode_to_vec(&t))})
}
