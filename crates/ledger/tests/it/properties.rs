//! Properties over random transaction sequences: tokens are conserved, nonces strictly
//! increase by one, and no input overflows or panics.

use agora_ledger::State;
use agora_primitives::{Amount, Call};
use proptest::prelude::*;

use crate::harness::*;

fn call_for(kind: u8, raw: u128, to: u8) -> Call {
    let amount = Amount(raw);
    let hotkey = key(10 + to % 3).address();
    match kind % 6 {
        0 => Call::Transfer {
            to: key(1 + to % 6).address(),
            amount,
        },
        1 => Call::Stake { hotkey, amount },
        2 => Call::Unstake { hotkey, amount },
        3 => Call::Register {
            netuid: 1,
            hotkey: key(20 + to % 30).address(),
            max_burn: amount,
        },
        4 => Call::SetTake {
            take: (raw % 20_000) as u16,
        },
        _ => Call::Transfer {
            to: key(1).address(),
            amount: Amount(u128::MAX - raw),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tokens_are_conserved_and_nonces_increase(ops in proptest::collection::vec((1u8..=4, any::<u8>(), 0u128..3_000_000_000_000, any::<u8>()), 1..40)) {
        let mut state: State = genesis();
        prop_assert!(conserved(&state));
        for (signer, kind, amount, to) in ops {
            let signer = key(signer);
            let nonce_before = state.account(&signer.address()).nonce;
            let t = tx(&state, &signer, call_for(kind, amount, to));
            match apply(&state, vec![t]) {
                Ok(applied) => {
                    prop_assert_eq!(applied.state.account(&signer.address()).nonce, nonce_before + 1);
                    prop_assert!(conserved(&applied.state), "conservation broken");
                    prop_assert_eq!(applied.root, applied.state.root());
                    state = applied.state;
                }
                Err(_) => {
                    // Refused: nothing happened. Advance with an empty block (issuance, unbonding).
                    state = step(&state, vec![]);
                    prop_assert!(conserved(&state));
                }
            }
        }
    }
}

#[test]
fn unstaked_tokens_return_after_the_unbonding_period() {
    let s = genesis();
    let staker = key(9);
    let before = s.account(&staker.address()).balance;
    let s = step(
        &s,
        vec![tx(
            &s,
            &key(1),
            Call::Transfer {
                to: staker.address(),
                amount: Amount::agora(1),
            },
        )],
    );
    let s = step(
        &s,
        vec![tx(
            &s,
            &staker,
            Call::Unstake {
                hotkey: key(10).address(),
                amount: Amount::agora(100),
            },
        )],
    );
    let mut s = s;
    let released_at = s.unbonding[0].release_height;
    while s.height < released_at - 1 {
        s = step(&s, vec![]);
    }
    let fee = Amount(1_000);
    assert_eq!(
        s.account(&staker.address()).balance,
        Amount(before.0 + Amount::agora(1).0 - fee.0)
    );
    s = step(&s, vec![]);
    assert_eq!(
        s.account(&staker.address()).balance,
        Amount(before.0 + Amount::agora(101).0 - fee.0)
    );
    assert!(conserved(&s));
}

#[test]
fn the_chain_validator_set_is_the_top_stakers() {
    let s = genesis();
    let s = step(
        &s,
        vec![tx(
            &s,
            &key(1),
            Call::Stake {
                hotkey: key(11).address(),
                amount: Amount::agora(600),
            },
        )],
    );
    let set = s.chain_validators();
    assert_eq!(set[0], (key(11).address(), Amount::agora(600)));
    assert_eq!(set[1], (key(10).address(), Amount::agora(500)));
}
