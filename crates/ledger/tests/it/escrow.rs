//! Serving escrow and receipt settlement.

use agora_crypto::Keypair;
use agora_ledger::{BlockError, State, TxError};
use agora_primitives::{Amount, Call, Hash, Receipt, SignedReceipt};

use crate::harness::{CHAIN, apply, conserved, key, step, tx};

fn receipt(gateway: &Keypair, miner: &Keypair, nonce: u64, expiry: u64) -> Receipt {
    Receipt {
        netuid: 1,
        miner: miner.address(),
        gateway: gateway.address(),
        request_hash: Hash([1; 32]),
        response_hash: Hash([2; 32]),
        model_hash: Hash([3; 32]),
        prompt_tokens: 200,
        completion_tokens: 800,
        price_per_1k_tokens: Amount::agora(2),
        nonce,
        expiry_height: expiry,
    }
}

fn signed(r: Receipt, miner: &Keypair, gateway: &Keypair) -> SignedReceipt {
    let bytes = r.signing_bytes(CHAIN);
    SignedReceipt {
        miner_signature: miner.sign(&bytes),
        gateway_signature: gateway.sign(&bytes),
        receipt: r,
    }
}

fn rejected(state: &State, call: Call, signer: &Keypair) -> TxError {
    match apply(state, vec![tx(state, signer, call)]) {
        Err(BlockError::Tx { error, .. }) => *error,
        other => panic!("expected a transaction error, got {other:?}"),
    }
}

#[test]
fn receipts_pay_miners_from_escrow_once_and_only_with_both_signatures() {
    let (gateway, miner, stranger) = (key(1), key(2), key(3));
    let s = crate::harness::genesis();
    let s = step(
        &s,
        vec![tx(
            &s,
            &gateway,
            Call::EscrowDeposit {
                amount: Amount::agora(5),
            },
        )],
    );
    assert_eq!(s.escrow_of(&gateway.address()), Amount::agora(5));
    assert!(conserved(&s));

    let good = signed(receipt(&gateway, &miner, 1, 50), &miner, &gateway);
    // 1000 tokens at 2 AGORA per 1k tokens.
    let before = s.account(&miner.address()).balance;
    let settle = Call::Settle {
        receipts: vec![good.clone()],
    };
    let s2 = step(&s, vec![tx(&s, &stranger, settle.clone())]);
    assert_eq!(
        s2.account(&miner.address()).balance,
        before.checked_add(Amount::agora(2)).unwrap()
    );
    assert_eq!(s2.escrow_of(&gateway.address()), Amount::agora(3));
    assert!(conserved(&s2));

    // Paid at most once, by anyone who submits it.
    assert!(matches!(
        rejected(&s2, settle, &miner),
        TxError::ReceiptAlreadySettled { index: 0, .. }
    ));
    // Twice in one settlement is refused as well.
    let twice = Call::Settle {
        receipts: vec![good.clone(), good],
    };
    assert!(matches!(
        rejected(&s, twice, &miner),
        TxError::ReceiptAlreadySettled { index: 1, .. }
    ));

    // A receipt the gateway never authorised (countersigned by someone else).
    let mut forged = signed(receipt(&gateway, &miner, 2, 50), &miner, &stranger);
    assert!(matches!(
        rejected(&s2, Call::Settle { receipts: vec![forged.clone()] }, &miner),
        TxError::InvalidReceipt { index: 0, reason } if reason.contains("never authorised")
    ));
    // A miner signature that does not verify.
    forged = signed(receipt(&gateway, &miner, 3, 50), &stranger, &gateway);
    assert!(matches!(
        rejected(&s2, Call::Settle { receipts: vec![forged] }, &miner),
        TxError::InvalidReceipt { index: 0, reason } if reason.contains("miner")
    ));
    // Expired, and not enough escrow.
    let old = signed(receipt(&gateway, &miner, 4, 1), &miner, &gateway);
    assert!(matches!(
        rejected(&s2, Call::Settle { receipts: vec![old] }, &miner),
        TxError::InvalidReceipt { index: 0, reason } if reason.contains("expired")
    ));
    let mut big = receipt(&gateway, &miner, 5, 50);
    big.completion_tokens = 10_000_000;
    let big = signed(big, &miner, &gateway);
    assert!(matches!(
        rejected(
            &s2,
            Call::Settle {
                receipts: vec![big]
            },
            &miner
        ),
        TxError::InsufficientEscrow { .. }
    ));
    // Nothing moved in any refused block.
    assert!(conserved(&s2));
}

#[test]
fn escrow_withdrawal_returns_after_the_unbonding_period() {
    let gateway = key(1);
    let s = crate::harness::genesis();
    let s = step(
        &s,
        vec![tx(
            &s,
            &gateway,
            Call::EscrowDeposit {
                amount: Amount::agora(5),
            },
        )],
    );
    assert!(matches!(
        rejected(
            &s,
            Call::EscrowWithdraw {
                amount: Amount::agora(6)
            },
            &gateway
        ),
        TxError::InsufficientEscrow { .. }
    ));
    let balance = s.account(&gateway.address()).balance;
    let mut s = step(
        &s,
        vec![tx(
            &s,
            &gateway,
            Call::EscrowWithdraw {
                amount: Amount::agora(5),
            },
        )],
    );
    assert_eq!(s.escrow_of(&gateway.address()), Amount::ZERO);
    let fee = Amount(1_000);
    assert_eq!(
        s.account(&gateway.address()).balance,
        balance.checked_sub(fee).unwrap()
    );
    for _ in 0..s.params.unbonding_blocks {
        s = step(&s, vec![]);
    }
    assert_eq!(
        s.account(&gateway.address()).balance,
        balance
            .checked_sub(fee)
            .unwrap()
            .checked_add(Amount::agora(5))
            .unwrap()
    );
    assert!(conserved(&s));
}
