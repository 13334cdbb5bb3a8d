//! Golden vectors: the encoding, hash and signature of one transaction of every kind, and of a
//! block, are pinned in `tests/golden/transactions.txt`. A change here is a hard fork; regenerate
//! deliberately with `AGORA_BLESS=1 cargo test -p agora-crypto --test golden`.

use agora_codec::{decode_exact, encode_to_vec};

use agora_crypto::{Keypair, hash, sign_tx, tx_root, verify_tx, weights_commit};
use agora_primitives::{
    Address, Amount, Block, Call, Hash, Header, ServeInfo, SignedTransaction, SubnetParams,
    Transaction, to_hex,
};

fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

fn calls() -> Vec<Call> {
    let hot = key(2).address();
    vec![
        Call::Transfer {
            to: key(3).address(),
            amount: Amount(1_500_000_000),
        },
        Call::Stake {
            hotkey: hot,
            amount: Amount::agora(10),
        },
        Call::Unstake {
            hotkey: hot,
            amount: Amount(7),
        },
        Call::SubnetCreate {
            params: SubnetParams::defaults(),
        },
        Call::SubnetSet {
            netuid: 1,
            params: SubnetParams {
                tempo: 99,
                model_hash: hash(b"model"),
                numerics: 2,
                ..SubnetParams::defaults()
            },
        },
        Call::Register {
            netuid: 1,
            hotkey: hot,
            max_burn: Amount::agora(1),
        },
        Call::Serve {
            netuid: 1,
            info: ServeInfo {
                peer_id: vec![0, 36, 8, 1],
                addresses: vec!["/ip4/127.0.0.1/tcp/7000".into()],
                model_hash: hash(b"model"),
                price_per_1k_tokens: Amount(1_000),
            },
        },
        Call::CommitWeights {
            netuid: 1,
            commit: weights_commit(1, &[0, 1], &[65535, 100], &[9; 32]),
        },
        Call::RevealWeights {
            netuid: 1,
            uids: vec![0, 1],
            values: vec![65535, 100],
            salt: [9; 32],
        },
        Call::SetTake { take: 11796 },
        Call::EscrowDeposit {
            amount: Amount::agora(25),
        },
        Call::EscrowWithdraw { amount: Amount(7) },
        Call::Settle {
            receipts: vec![agora_primitives::SignedReceipt {
                receipt: agora_primitives::Receipt {
                    netuid: 1,
                    miner: Address([4; 32]),
                    gateway: Address([5; 32]),
                    request_hash: Hash([6; 32]),
                    response_hash: Hash([7; 32]),
                    model_hash: Hash([8; 32]),
                    prompt_tokens: 31,
                    completion_tokens: 64,
                    price_per_1k_tokens: Amount(1_000_000),
                    nonce: 77,
                    expiry_height: 5_000,
                },
                miner_signature: [10; 64],
                gateway_signature: [11; 64],
            }],
        },
    ]
}

fn render() -> String {
    let mut out = String::new();
    let mut txs = Vec::new();
    for (nonce, call) in calls().into_iter().enumerate() {
        let tx = Transaction {
            chain_id: "agora-golden".into(),
            sender: key(1).address(),
            nonce: nonce as u64,
            fee: Amount(1_000),
            expiry_height: 1_000,
            call,
        };
        let kind = tx.call.kind();
        let signed = sign_tx(&key(1), tx);
        let bytes = encode_to_vec(&signed);
        out += &format!("{kind} {} {}\n", to_hex(&bytes), hash(&bytes));
        txs.push(signed);
    }
    let block = Block {
        header: Header {
            chain_id: "agora-golden".into(),
            height: 1,
            parent: Hash::default(),
            proposer: key(4).address(),
            tx_root: tx_root(&txs[..2]),
            state_root: hash(b"state"),
        },
        txs: txs[..2].to_vec(),
    };
    let bytes = encode_to_vec(&block);
    assert_eq!(decode_exact::<Block>(&bytes).expect("block decodes"), block);
    out += &format!("block {} {}\n", to_hex(&bytes), hash(&bytes));
    out
}

#[test]
fn encodings_hashes_and_signatures_match_the_golden_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/transactions.txt");
    let got = render();
    if std::env::var_os("AGORA_BLESS").is_some() {
        std::fs::write(path, &got).expect("write golden file");
    }
    let want = std::fs::read_to_string(path).expect("golden file (bless with AGORA_BLESS=1)");
    assert_eq!(got, want, "encodings changed: this is a hard fork");
}

#[test]
fn every_golden_transaction_decodes_verifies_and_re_encodes() {
    for (nonce, call) in calls().into_iter().enumerate() {
        let tx = Transaction {
            chain_id: "agora-golden".into(),
            sender: key(1).address(),
            nonce: nonce as u64,
            fee: Amount(1),
            expiry_height: 5,
            call,
        };
        let signed = sign_tx(&key(1), tx);
        let bytes = signed.to_bytes();
        let back = SignedTransaction::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, signed);
        assert!(verify_tx(&back).is_ok());
        let mut tampered = back.clone();
        tampered.tx.nonce += 1;
        assert!(
            verify_tx(&tampered).is_err(),
            "{}: a changed field must break the signature",
            signed.tx.call.kind()
        );
        // Truncation and trailing bytes are refused.
        assert!(SignedTransaction::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SignedTransaction::from_bytes(&longer).is_err());
    }
    assert_ne!(key(1).address(), Address::default());
}
