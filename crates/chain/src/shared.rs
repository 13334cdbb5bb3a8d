//! What the consensus host and the API share: the last committed state, the mempool and the
//! stream of finalized blocks.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use agora_ledger::State;
use agora_primitives::{Block, Hash, SignedTransaction};
use agora_store::Store;
use tokio::sync::{Notify, broadcast};

use crate::mempool::{AdmitError, Mempool, MempoolConfig};

/// A finalized block as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalized {
    /// Height.
    pub height: u64,
    /// Header hash.
    pub hash: Hash,
    /// State root after it.
    pub state_root: Hash,
    /// Transactions in it.
    pub txs: usize,
    /// The round that decided it.
    pub round: u32,
    /// Signatures in its commit certificate.
    pub signatures: usize,
}

/// The last committed state and its block.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// State after the tip.
    pub state: Arc<State>,
    /// The tip's header hash (zero at genesis).
    pub tip_hash: Hash,
    /// The root of `state` (from the tip's header, or the store at start).
    pub state_root: Hash,
}

/// Shared between the host loop, the API and the relay.
#[derive(Debug)]
pub struct Shared {
    /// The chain id.
    pub chain_id: String,
    /// The store.
    pub store: Arc<Store>,
    snapshot: RwLock<Snapshot>,
    mempool: Mutex<Mempool>,
    /// Woken when a transaction enters the mempool.
    pub tx_arrived: Notify,
    /// Finalized blocks, for `GET /chain/events` (bounded; slow readers miss blocks).
    pub finalized: broadcast::Sender<Finalized>,
}

impl Shared {
    /// Shared state starting from `snapshot`.
    pub fn new(store: Arc<Store>, snapshot: Snapshot, mempool: MempoolConfig) -> Self {
        let (finalized, _) = broadcast::channel(1024);
        Self {
            chain_id: snapshot.state.chain_id.clone(),
            store,
            snapshot: RwLock::new(snapshot),
            mempool: Mutex::new(Mempool::new(mempool)),
            tx_arrived: Notify::new(),
            finalized,
        }
    }

    /// The last committed state.
    pub fn snapshot(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_snapshot(&self, snapshot: Snapshot) {
        match self.snapshot.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// The mempool, locked.
    pub fn mempool(&self) -> MutexGuard<'_, Mempool> {
        match self.mempool.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Admit a transaction against the last committed state; wakes a waiting proposer.
    pub fn submit(&self, tx: SignedTransaction) -> Result<Hash, AdmitError> {
        let snapshot = self.snapshot();
        let hash = agora_crypto::tx_hash(&tx);
        let result = self.mempool().add(&snapshot.state, tx);
        match &result {
            Ok(_) => self.tx_arrived.notify_one(),
            Err(AdmitError::Duplicate(_)) => {}
            Err(e) => self.mempool().record_rejection(hash, e.to_string()),
        }
        result
    }

    pub(crate) fn publish(&self, block: &Block, hash: Hash, round: u32, signatures: usize) {
        // Nobody listening is fine.
        let _ = self.finalized.send(Finalized {
            height: block.header.height,
            hash,
            state_root: block.header.state_root,
            txs: block.txs.len(),
            round,
            signatures,
        });
    }
}
