//! Integration tests of the store: commit and reopen, proofs, and crashes mid-commit.

mod crash;
mod roundtrip;

use agora_crypto::{Keypair, sign_tx};
use agora_ledger::State;
use agora_ledger::genesis::Genesis;
use agora_ledger::state::ChainParams;
use agora_primitives::{Amount, Block, Call, Hash, Transaction};
use agora_store::Store;

pub const CHAIN: &str = "agora-store-test";

pub fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

pub fn genesis() -> State {
    Genesis {
        chain_id: CHAIN.into(),
        params: ChainParams::devnet(),
        balances: (1..=8)
            .map(|i| (key(i).address(), Amount::agora(1_000_000)))
            .collect(),
        stakes: Vec::new(),
        subnets: Vec::new(),
    }
    .into_state()
    .expect("genesis")
}

/// Build, apply and commit one block of `n` transfers on top of the store's tip.
pub fn commit_next(store: &Store, state: &State, n: usize) -> State {
    let height = state.height;
    let txs = (0..n)
        .map(|i| {
            let from = key(1 + (i % 8) as u8);
            let nonce = state.account(&from.address()).nonce + (i / 8) as u64;
            sign_tx(
                &from,
                Transaction {
                    chain_id: CHAIN.into(),
                    sender: from.address(),
                    nonce,
                    fee: Amount(1_000),
                    expiry_height: height + 10,
                    call: Call::Transfer {
                        to: key(100 + (height % 50) as u8).address(),
                        amount: Amount(1 + height as u128),
                    },
                },
            )
        })
        .collect();
    let parent = match store.block(height).expect("read") {
        Some(b) => agora_crypto::hash_of(&b.header),
        None => Hash::default(),
    };
    let (block, applied): (Block, _) =
        agora_ledger::build_block(state, txs, key(1).address(), parent).expect("block builds");
    store.commit(&block, &applied.state).expect("commit");
    applied.state
}
