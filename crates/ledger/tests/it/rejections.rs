//! Every kind of bad transaction is refused with its own typed error and leaves the state
//! untouched.

use agora_crypto::{sign_tx, weights_commit};
use agora_ledger::{BlockError, State, TxError};
use agora_primitives::{Amount, Call, MAX_WEIGHTS, SubnetParams};

use crate::harness::*;

/// Subnet 1 with key 2's hotkey (key 20) and key 3's hotkey (key 30) registered.
fn with_neurons() -> State {
    let s = genesis();
    let s = step(
        &s,
        vec![tx(
            &s,
            &key(2),
            Call::Register {
                netuid: 1,
                hotkey: key(20).address(),
                max_burn: Amount::agora(1),
            },
        )],
    );
    step(
        &s,
        vec![tx(
            &s,
            &key(3),
            Call::Register {
                netuid: 1,
                hotkey: key(30).address(),
                max_burn: Amount::agora(1),
            },
        )],
    )
}

fn expect(
    state: &State,
    txs: Vec<agora_primitives::SignedTransaction>,
    check: impl Fn(&TxError) -> bool,
    name: &str,
) {
    let before = state.clone();
    match apply(state, txs) {
        Err(BlockError::Tx { error, .. }) => {
            assert!(check(&error), "{name}: wrong error {error:?}")
        }
        other => panic!("{name}: expected a transaction error, got {other:?}"),
    }
    assert_eq!(*state, before, "{name}: state changed");
}

#[test]
fn every_kind_of_bad_transaction_is_refused_with_its_own_error() {
    let s = with_neurons();
    let a = key(1);
    let bob = key(5).address();
    let transfer = |amount| Call::Transfer { to: bob, amount };

    let mut bad_sig = tx(&s, &a, transfer(Amount(1)));
    bad_sig.signature[0] ^= 1;
    expect(
        &s,
        vec![bad_sig],
        |e| matches!(e, TxError::BadSignature(_)),
        "bad signature",
    );

    let wrong_chain = tx_with(&s, &a, transfer(Amount(1)), |t| t.chain_id = "other".into());
    expect(
        &s,
        vec![wrong_chain],
        |e| matches!(e, TxError::WrongChain { .. }),
        "wrong chain id",
    );

    let s2 = step(&s, vec![tx(&s, &a, transfer(Amount(1)))]);
    let stale = tx_with(&s2, &a, transfer(Amount(1)), |t| t.nonce = 0);
    expect(
        &s2,
        vec![stale],
        |e| {
            matches!(
                e,
                TxError::StaleNonce {
                    got: 0,
                    want: 1,
                    ..
                }
            )
        },
        "stale nonce",
    );
    let future = tx_with(&s2, &a, transfer(Amount(1)), |t| t.nonce = 5);
    expect(
        &s2,
        vec![future],
        |e| {
            matches!(
                e,
                TxError::FutureNonce {
                    got: 5,
                    want: 1,
                    ..
                }
            )
        },
        "future nonce",
    );

    let expired = tx_with(&s, &a, transfer(Amount(1)), |t| t.expiry_height = s.height);
    expect(
        &s,
        vec![expired],
        |e| matches!(e, TxError::Expired { .. }),
        "expired",
    );

    expect(
        &s,
        vec![tx(&s, &a, transfer(Amount::agora(5000)))],
        |e| matches!(e, TxError::InsufficientBalance { .. }),
        "insufficient balance",
    );
    expect(
        &s,
        vec![tx(&s, &a, transfer(Amount(u128::MAX - 1_000)))],
        |e| matches!(e, TxError::InsufficientBalance { .. }),
        "amount beyond any balance",
    );
    let overflowing = tx_with(&s, &a, transfer(Amount(u128::MAX)), |t| t.fee = Amount(2));
    expect(
        &s,
        vec![overflowing],
        |e| matches!(e, TxError::AmountOverflow(_)),
        "amount overflow",
    );
    let overflow_fee = tx_with(&s, &a, transfer(Amount(1)), |t| {
        t.fee = Amount(u128::MAX - 1)
    });
    expect(
        &s,
        vec![overflow_fee],
        |e| matches!(e, TxError::InsufficientBalance { .. }),
        "fee beyond any balance",
    );

    let huge = Call::RevealWeights {
        netuid: 1,
        uids: (0..MAX_WEIGHTS as u16).collect(),
        values: vec![1; MAX_WEIGHTS],
        salt: [0; 32],
    };
    let mut oversized = tx(&s, &a, huge);
    if let Call::RevealWeights { uids, values, .. } = &mut oversized.tx.call {
        uids.extend(0..4 * MAX_WEIGHTS as u16);
        values.extend(vec![1; 4 * MAX_WEIGHTS]);
    }
    let oversized = sign_tx(&a, oversized.tx);
    expect(
        &s,
        vec![oversized],
        |e| matches!(e, TxError::Oversized { .. }),
        "oversized",
    );

    let reg = |netuid, hot: u8| Call::Register {
        netuid,
        hotkey: key(hot).address(),
        max_burn: Amount::agora(1),
    };
    expect(
        &s,
        vec![tx(&s, &a, reg(7, 40))],
        |e| matches!(e, TxError::UnknownSubnet(7)),
        "unknown subnet",
    );
    expect(
        &s,
        vec![tx(&s, &key(2), reg(1, 20))],
        |e| matches!(e, TxError::DuplicateRegistration { .. }),
        "duplicate registration",
    );
    let cheap = Call::Register {
        netuid: 1,
        hotkey: key(40).address(),
        max_burn: Amount(1),
    };
    expect(
        &s,
        vec![tx(&s, &a, cheap)],
        |e| matches!(e, TxError::BurnTooHigh { .. }),
        "burn above max_burn",
    );

    let other_owner = tx(
        &s,
        &key(2),
        Call::SubnetSet {
            netuid: 1,
            params: SubnetParams::defaults(),
        },
    );
    expect(
        &s,
        vec![other_owner],
        |e| matches!(e, TxError::NotSubnetOwner { netuid: 1 }),
        "not the owner",
    );
    let bad_params = tx(
        &s,
        &a,
        Call::SubnetSet {
            netuid: 1,
            params: SubnetParams {
                tempo: 0,
                ..SubnetParams::defaults()
            },
        },
    );
    expect(
        &s,
        vec![bad_params],
        |e| matches!(e, TxError::ParamOutOfBounds { name: "tempo", .. }),
        "out-of-bounds hyperparameter",
    );

    // Weights (subnet 1 has commit-reveal on, period 1, tempo 10).
    let hot = key(20);
    let reveal = |uids: Vec<u16>, values: Vec<u16>| Call::RevealWeights {
        netuid: 1,
        uids,
        values,
        salt: [7; 32],
    };
    expect(
        &s,
        vec![tx(&s, &hot, reveal(vec![1], vec![5]))],
        |e| matches!(e, TxError::CommitRequired(1)),
        "reveal without commit",
    );
    let commit = |uids: &[u16], values: &[u16]| Call::CommitWeights {
        netuid: 1,
        commit: weights_commit(1, uids, values, &[7; 32]),
    };
    let c = step(&s, vec![tx(&s, &hot, commit(&[1], &[5]))]);
    expect(
        &c,
        vec![tx(&c, &hot, reveal(vec![1], vec![5]))],
        |e| matches!(e, TxError::RevealTooEarly { .. }),
        "reveal too early",
    );
    let mut open = c.clone();
    while open.height < 10 {
        open = step(&open, vec![]);
    }
    expect(
        &open,
        vec![tx(&open, &hot, reveal(vec![1], vec![6]))],
        |e| matches!(e, TxError::RevealMismatch(_)),
        "reveal that does not match",
    );
    let mut late = open.clone();
    while late.height < 20 {
        late = step(&late, vec![]);
    }
    expect(
        &late,
        vec![tx(&late, &hot, reveal(vec![1], vec![5]))],
        |e| matches!(e, TxError::RevealTooLate { .. }),
        "reveal too late",
    );
    // The matching reveal in the window is accepted.
    let done = step(&open, vec![tx(&open, &hot, reveal(vec![1], vec![5]))]);
    assert_eq!(done.subnets[&1].neurons[0].weights, vec![(1, 65535)]);

    // Direct weights on a subnet without commit-reveal: unknown uid, too few weights.
    let mut params = s.subnets[&1].params.clone();
    params.commit_reveal_period = 0;
    params.min_allowed_weights = 2;
    let direct = step(&s, vec![tx(&s, &a, Call::SubnetSet { netuid: 1, params })]);
    expect(
        &direct,
        vec![tx(&direct, &hot, reveal(vec![0, 9], vec![1, 1]))],
        |e| matches!(e, TxError::UnknownUid { uid: 9, n: 2 }),
        "weights on unknown uid",
    );
    expect(
        &direct,
        vec![tx(&direct, &hot, reveal(vec![1], vec![5]))],
        |e| matches!(e, TxError::TooFewWeights { got: 1, min: 2 }),
        "too few weights",
    );

    // Staking.
    let unstake = Call::Unstake {
        hotkey: key(10).address(),
        amount: Amount::agora(1),
    };
    expect(
        &s,
        vec![tx(&s, &a, unstake)],
        |e| matches!(e, TxError::InsufficientStake { .. }),
        "unstake more than staked",
    );
    expect(
        &s,
        vec![tx(&s, &key(10), Call::SetTake { take: u16::MAX })],
        |e| matches!(e, TxError::TakeTooHigh { .. }),
        "take too high",
    );
}

#[test]
fn a_refused_block_names_the_first_bad_transaction() {
    let s = genesis();
    let good = tx(
        &s,
        &key(1),
        Call::Transfer {
            to: key(5).address(),
            amount: Amount(1),
        },
    );
    let bad = tx(
        &s,
        &key(2),
        Call::Transfer {
            to: key(5).address(),
            amount: Amount::agora(99_999),
        },
    );
    match apply(&s, vec![good, bad]) {
        Err(BlockError::Tx {
            index: 1, error, ..
        }) => {
            assert!(
                matches!(*error, TxError::InsufficientBalance { .. }),
                "{error:?}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_block_with_a_wrong_header_is_refused_and_changes_nothing() {
    let s = genesis();
    let t = tx(
        &s,
        &key(1),
        Call::Transfer {
            to: key(5).address(),
            amount: Amount(1),
        },
    );
    let (block, _) = agora_ledger::build_block(&s, vec![t], key(10).address(), Default::default())
        .expect("builds");
    let before = s.clone();
    let mut wrong_root = block.clone();
    wrong_root.header.state_root.0[0] ^= 1;
    assert!(matches!(
        agora_ledger::apply_block(&s, &wrong_root),
        Err(BlockError::StateRootMismatch { .. })
    ));
    let mut wrong_txs = block.clone();
    wrong_txs.header.tx_root.0[0] ^= 1;
    assert!(matches!(
        agora_ledger::apply_block(&s, &wrong_txs),
        Err(BlockError::TxRootMismatch)
    ));
    let mut wrong_height = block.clone();
    wrong_height.header.height = 5;
    assert!(matches!(
        agora_ledger::apply_block(&s, &wrong_height),
        Err(BlockError::WrongHeight { got: 5, want: 1 })
    ));
    let mut wrong_chain = block;
    wrong_chain.header.chain_id = "elsewhere".into();
    assert!(matches!(
        agora_ledger::apply_block(&s, &wrong_chain),
        Err(BlockError::WrongChain { .. })
    ));
    assert_eq!(s, before);
}
