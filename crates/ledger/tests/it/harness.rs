//! A tiny chain driver: genesis, signing, block building.

use agora_crypto::{Keypair, sign_tx};
use agora_ledger::genesis::{Genesis, GenesisStake, GenesisSubnet};
use agora_ledger::state::ChainParams;
use agora_ledger::{Applied, BlockError, State, apply_block, build_block};
use agora_primitives::{Amount, Call, Hash, SignedTransaction, SubnetParams, Transaction};

pub const CHAIN: &str = "agora-test";

pub fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// Keys 1..=4 funded with 1000 AGORA, hotkeys 10, 20, 30 with 10 for fees; key 9 stakes 500 on key 10; subnet 1 owned by key 1.
pub fn genesis() -> State {
    let mut params = SubnetParams::defaults();
    params.tempo = 10;
    params.weights_rate_limit = 0;
    params.immunity_period = 5;
    params.max_uids = 4;
    params.max_validators = 4;
    Genesis {
        chain_id: CHAIN.into(),
        params: ChainParams::devnet(),
        balances: (1..=4)
            .map(|i| (key(i).address(), Amount::agora(1000)))
            .chain([10, 20, 30].map(|i| (key(i).address(), Amount::agora(10))))
            .collect(),
        stakes: vec![GenesisStake {
            coldkey: key(9).address(),
            hotkey: key(10).address(),
            amount: Amount::agora(500),
        }],
        subnets: vec![GenesisSubnet {
            netuid: 1,
            owner: key(1).address(),
            emission_share_ppm: 1_000_000,
            params,
        }],
    }
    .into_state()
    .expect("valid genesis")
}

pub fn tx(state: &State, signer: &Keypair, call: Call) -> SignedTransaction {
    tx_with(state, signer, call, |_| {})
}

pub fn tx_with(
    state: &State,
    signer: &Keypair,
    call: Call,
    edit: impl FnOnce(&mut Transaction),
) -> SignedTransaction {
    let mut t = Transaction {
        chain_id: CHAIN.into(),
        sender: signer.address(),
        nonce: state.account(&signer.address()).nonce,
        fee: Amount(1_000),
        expiry_height: state.height + 100,
        call,
    };
    edit(&mut t);
    sign_tx(signer, t)
}

/// Build the next block as its proposer (key 10) would, then apply it as a validator would.
pub fn apply(state: &State, txs: Vec<SignedTransaction>) -> Result<Applied, BlockError> {
    let (block, built) = build_block(state, txs, key(10).address(), Hash::default())?;
    let applied = apply_block(state, &block).expect("a built block applies");
    assert_eq!(applied.root, built.root);
    assert_eq!(
        State::from_entries(&applied.state.entries()).expect("entries decode"),
        applied.state
    );
    Ok(applied)
}

/// Apply a block that must succeed.
pub fn step(state: &State, txs: Vec<SignedTransaction>) -> State {
    apply(state, txs).expect("block applies").state
}

pub fn conserved(state: &State) -> bool {
    state.held_total() + state.burned.0 == state.genesis_supply.0 + state.issued.0
}
