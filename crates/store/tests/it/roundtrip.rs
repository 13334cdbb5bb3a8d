use agora_crypto::merkle::verify_key;
use agora_ledger::entries::account_key;
use agora_store::{Error, Store};

use crate::*;

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agora-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_store_of_another_format_is_refused_by_name_with_the_fix() {
    let dir = tempdir("format");
    {
        let store = Store::open(&dir).unwrap();
        store.init(&genesis()).unwrap();
    }
    // Written by an older agora: format 1 (before subnet hyperparameters held the model).
    {
        let db = redb::Database::open(dir.join("chain.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut meta = txn.open_table(def).unwrap();
            meta.insert("format", 1u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let Err(err) = Store::open(&dir) else {
        panic!("a format-1 store was opened");
    };
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{text}");
    assert!(text.contains("store format 1"), "{text}");
    assert!(text.contains("--fresh"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn committed_blocks_and_state_survive_reopening() {
    let dir = tempdir("reopen");
    let mut state = genesis();
    {
        let store = Store::open(&dir).unwrap();
        assert!(store.tip().unwrap().is_none());
        store.init(&state).unwrap();
        for _ in 0..5 {
            state = commit_next(&store, &state, 10);
        }
    }
    let store = Store::open(&dir).unwrap();
    let tip = store.tip().unwrap().unwrap();
    assert_eq!(tip.height, 5);
    assert_eq!(tip.root, state.root());
    assert_eq!(store.state().unwrap(), state);
    for h in 1..=5 {
        assert_eq!(store.block(h).unwrap().unwrap().header.height, h);
    }
    // Re-initialising with the same chain is a no-op; another chain is refused.
    store.init(&genesis()).unwrap();
    let mut other = genesis();
    other.chain_id = "other".into();
    assert!(matches!(store.init(&other), Err(Error::WrongChain { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proofs_verify_for_present_and_absent_accounts_against_the_block_root() {
    let dir = tempdir("proofs");
    let store = Store::open(&dir).unwrap();
    let mut state = genesis();
    store.init(&state).unwrap();
    state = commit_next(&store, &state, 8);
    let header_root = store.block(1).unwrap().unwrap().header.state_root;

    let present = store.prove(&account_key(&key(1).address())).unwrap();
    assert_eq!(present.root, header_root);
    let value = verify_key(&header_root, &present.key, &present.proof)
        .unwrap()
        .expect("present");
    let (balance, nonce): (agora_primitives::Amount, u64) =
        agora_codec::decode_exact(value).unwrap();
    assert_eq!(balance, state.account(&key(1).address()).balance);
    assert_eq!(nonce, 1);

    let absent = store.prove(&account_key(&key(250).address())).unwrap();
    assert_eq!(
        verify_key(&header_root, &absent.key, &absent.proof).unwrap(),
        None
    );
    // A proof for one key says nothing about another.
    assert!(
        verify_key(
            &header_root,
            &account_key(&key(2).address()),
            &present.proof
        )
        .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_block_that_does_not_extend_the_tip_is_refused() {
    let dir = tempdir("extend");
    let store = Store::open(&dir).unwrap();
    let state = genesis();
    store.init(&state).unwrap();
    let next = commit_next(&store, &state, 1);
    // Committing the same height again is refused, and the store is unchanged.
    let block = store.block(1).unwrap().unwrap();
    assert!(matches!(
        store.commit(&block, &next),
        Err(Error::NotNext { .. })
    ));
    assert_eq!(store.tip().unwrap().unwrap().height, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificates_commit_with_their_block_and_pending_proposals_clear() {
    let dir = tempdir("certs");
    let store = Store::open(&dir).unwrap();
    let state = genesis();
    store.init(&state).unwrap();
    let a = Hash([1; 32]);
    let b = Hash([2; 32]);
    store.put_pending(1, &a, b"proposal a").unwrap();
    store.put_pending(1, &b, b"proposal b").unwrap();
    store.put_pending(2, &a, b"later").unwrap();
    assert_eq!(
        store.pending(1).unwrap(),
        vec![(a, b"proposal a".to_vec()), (b, b"proposal b".to_vec())]
    );
    // Build block 1 and commit it with a certificate.
    let txs = Vec::new();
    let (block, applied) =
        agora_ledger::build_block(&state, txs, key(1).address(), Hash::default()).unwrap();
    store
        .commit_with_certificate(&block, &applied.state, Some(b"certificate 1"))
        .unwrap();
    assert_eq!(
        store.certificate(1).unwrap(),
        Some(b"certificate 1".to_vec())
    );
    assert_eq!(store.certificate(2).unwrap(), None);
    assert!(store.pending(1).unwrap().is_empty());
    assert_eq!(store.pending(2).unwrap(), vec![(a, b"later".to_vec())]);
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert_eq!(
        store.certificate(1).unwrap(),
        Some(b"certificate 1".to_vec())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
