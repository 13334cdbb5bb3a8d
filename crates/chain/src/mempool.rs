//! The mempool: transactions waiting for a block.
//!
//! - Bounded in count and bytes. When full, a transaction paying a higher fee than the cheapest
//!   waiting one evicts it (taken from the end of its sender's queue, so no sender is left with a
//!   nonce gap); otherwise it is refused with [`AdmitError::Full`].
//! - Per sender, transactions wait in nonce order; a block takes each sender's queue from the
//!   account's next nonce without gaps. Across senders, the higher fee goes first (ties: the
//!   earlier arrival).
//! - Exact duplicates are dropped; a second transaction with the same sender and nonce replaces
//!   the first only with a strictly higher fee.
//! - After each block, included, stale-nonce and expired transactions leave.
//! - What happened to each transaction (pending, included at a height, rejected and why) is
//!   kept for the most recent [`STATUS_HISTORY`] transactions, for `GET /chain/tx/{hash}`.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use agora_codec::Encode;
use agora_ledger::{State, TxError};
use agora_primitives::{Address, Amount, Hash, SignedTransaction};

/// How many finished transactions' outcomes are remembered.
pub const STATUS_HISTORY: usize = 100_000;

/// Mempool limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions waiting.
    pub max_txs: usize,
    /// Most encoded bytes waiting.
    pub max_bytes: usize,
    /// How far past the account's next nonce a transaction may be.
    pub max_nonce_gap: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_txs: 100_000,
            max_bytes: 64 << 20,
            max_nonce_gap: 256,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// It fails a ledger check (signature, chain, expiry, size).
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// The exact transaction is already waiting or was already included.
    #[error("transaction {0} is already known")]
    Duplicate(Hash),
    /// Its nonce is already used.
    #[error("nonce {got} of {sender} is already used; the next nonce is {want}")]
    StaleNonce {
        /// Sender.
        sender: Address,
        /// Nonce given.
        got: u64,
        /// Next nonce the account expects.
        want: u64,
    },
    /// Its nonce is too far ahead of the account's.
    #[error(
        "nonce {got} of {sender} is more than {max_gap} ahead of the next nonce {want}; send the missing nonces first"
    )]
    NonceGap {
        /// Sender.
        sender: Address,
        /// Nonce given.
        got: u64,
        /// Next nonce the account expects.
        want: u64,
        /// The allowed gap.
        max_gap: u64,
    },
    /// The sender cannot pay the fee.
    #[error("{sender} holds {balance} and cannot pay the fee {fee}")]
    CannotPayFee {
        /// Sender.
        sender: Address,
        /// Balance.
        balance: Amount,
        /// Fee.
        fee: Amount,
    },
    /// Same sender and nonce already waiting with a fee at least as high.
    #[error(
        "a transaction with nonce {nonce} from {sender} is already waiting; a replacement must pay a higher fee"
    )]
    Underpriced {
        /// Sender.
        sender: Address,
        /// Nonce.
        nonce: u64,
    },
    /// The mempool is full of transactions paying at least as much.
    #[error(
        "the mempool is full ({count} transactions, {bytes} bytes); retry later or pay a higher fee"
    )]
    Full {
        /// Transactions waiting.
        count: usize,
        /// Bytes waiting.
        bytes: usize,
    },
}

impl AdmitError {
    /// A short machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            AdmitError::Invalid(TxError::BadSignature(_)) => "bad_signature",
            AdmitError::Invalid(TxError::WrongChain { .. }) => "wrong_chain",
            AdmitError::Invalid(TxError::Expired { .. }) => "expired",
            AdmitError::Invalid(TxError::Oversized { .. }) => "oversized",
            AdmitError::Invalid(_) => "invalid_transaction",
            AdmitError::Duplicate(_) => "duplicate",
            AdmitError::StaleNonce { .. } => "stale_nonce",
            AdmitError::NonceGap { .. } => "nonce_gap",
            AdmitError::CannotPayFee { .. } => "insufficient_balance",
            AdmitError::Underpriced { .. } => "underpriced",
            AdmitError::Full { .. } => "mempool_full",
        }
    }
}

/// What became of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Waiting for a block.
    Pending,
    /// In the block at this height.
    Included {
        /// Height.
        height: u64,
    },
    /// Dropped, with the reason.
    Rejected {
        /// Why.
        reason: String,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    tx: SignedTransaction,
    hash: Hash,
    bytes: usize,
    seq: u64,
    /// When it was last handed out for gossip (arrival, then each rebroadcast).
    gossiped: std::time::Instant,
}

/// The mempool (see the module documentation).
#[derive(Debug)]
pub struct Mempool {
    config: MempoolConfig,
    senders: BTreeMap<Address, BTreeMap<u64, Entry>>,
    index: BTreeMap<Hash, (Address, u64)>,
    count: usize,
    bytes: usize,
    seq: u64,
    finished: BTreeMap<Hash, TxStatus>,
    finished_order: VecDeque<Hash>,
}

impl Mempool {
    /// An empty mempool.
    pub fn new(config: MempoolConfig) -> Self {
        Self {
            config,
            senders: BTreeMap::new(),
            index: BTreeMap::new(),
            count: 0,
            bytes: 0,
            seq: 0,
            finished: BTreeMap::new(),
            finished_order: VecDeque::new(),
        }
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The status of a transaction, if known.
    pub fn status(&self, hash: &Hash) -> Option<TxStatus> {
        if self.index.contains_key(hash) {
            return Some(TxStatus::Pending);
        }
        self.finished.get(hash).cloned()
    }

    /// The next nonce `sender` should use, counting transactions already waiting.
    pub fn next_nonce(&self, state: &State, sender: &Address) -> u64 {
        let mut next = state.account(sender).nonce;
        if let Some(queue) = self.senders.get(sender) {
            for nonce in queue.keys() {
                if *nonce == next {
                    next += 1;
                } else if *nonce > next {
                    break;
                }
            }
        }
        next
    }

    /// Admit a transaction for the block after `state`. Returns its hash.
    pub fn add(&mut self, state: &State, tx: SignedTransaction) -> Result<Hash, AdmitError> {
        let hash = agora_crypto::tx_hash(&tx);
        if self.index.contains_key(&hash)
            || matches!(self.finished.get(&hash), Some(TxStatus::Included { .. }))
        {
            return Err(AdmitError::Duplicate(hash));
        }
        let height = state.height + 1;
        agora_ledger::precheck(state, &tx, height)?;
        let sender = tx.tx.sender;
        let account = state.account(&sender);
        let nonce = tx.tx.nonce;
        if nonce < account.nonce {
            return Err(AdmitError::StaleNonce {
                sender,
                got: nonce,
                want: account.nonce,
            });
        }
        if nonce - account.nonce > self.config.max_nonce_gap {
            return Err(AdmitError::NonceGap {
                sender,
                got: nonce,
                want: account.nonce,
                max_gap: self.config.max_nonce_gap,
            });
        }
        if account.balance < tx.tx.fee {
            return Err(AdmitError::CannotPayFee {
                sender,
                balance: account.balance,
                fee: tx.tx.fee,
            });
        }
        let mut encoded = Vec::with_capacity(256);
        tx.encode(&mut encoded);
        let bytes = encoded.len();
        // Replacement of the same sender and nonce.
        if let Some(old) = self.senders.get(&sender).and_then(|q| q.get(&nonce)) {
            if tx.tx.fee <= old.tx.tx.fee {
                return Err(AdmitError::Underpriced { sender, nonce });
            }
            let old_hash = old.hash;
            self.remove(
                &old_hash,
                Some("replaced by a transaction with a higher fee"),
            );
        }
        while self.count + 1 > self.config.max_txs || self.bytes + bytes > self.config.max_bytes {
            match self.cheapest_tail() {
                Some((victim, fee)) if fee < tx.tx.fee && victim.0 != sender => {
                    let victim_hash = self
                        .senders
                        .get(&victim.0)
                        .and_then(|q| q.get(&victim.1))
                        .map(|e| e.hash);
                    match victim_hash {
                        Some(h) => self.remove(&h, Some("evicted by a higher fee: mempool full")),
                        None => break,
                    }
                }
                _ => {
                    return Err(AdmitError::Full {
                        count: self.count,
                        bytes: self.bytes,
                    });
                }
            }
        }
        self.seq += 1;
        let entry = Entry {
            tx,
            hash,
            bytes,
            seq: self.seq,
            gossiped: std::time::Instant::now(),
        };
        self.senders.entry(sender).or_default().insert(nonce, entry);
        self.index.insert(hash, (sender, nonce));
        self.count += 1;
        self.bytes += bytes;
        self.finished.remove(&hash);
        Ok(hash)
    }

    /// The waiting transaction with the lowest fee among each sender's last one.
    fn cheapest_tail(&self) -> Option<((Address, u64), Amount)> {
        self.senders
            .iter()
            .filter_map(|(sender, queue)| {
                queue
                    .iter()
                    .next_back()
                    .map(|(nonce, e)| ((*sender, *nonce), e.tx.tx.fee))
            })
            .min_by(|a, b| a.1.cmp(&b.1))
    }

    fn remove(&mut self, hash: &Hash, rejected: Option<&str>) {
        let Some((sender, nonce)) = self.index.remove(hash) else {
            return;
        };
        if let Some(queue) = self.senders.get_mut(&sender) {
            if let Some(entry) = queue.remove(&nonce) {
                self.count -= 1;
                self.bytes -= entry.bytes;
            }
            if queue.is_empty() {
                self.senders.remove(&sender);
            }
        }
        if let Some(reason) = rejected {
            self.finish(
                *hash,
                TxStatus::Rejected {
                    reason: reason.to_owned(),
                },
            );
        }
    }

    fn finish(&mut self, hash: Hash, status: TxStatus) {
        if self.finished.insert(hash, status).is_none() {
            self.finished_order.push_back(hash);
        }
        while self.finished_order.len() > STATUS_HISTORY {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Record an outcome for a transaction that never waited here (for example one that
    /// failed admission through the API), so its status can be asked for.
    pub fn record_rejection(&mut self, hash: Hash, reason: String) {
        if !self.index.contains_key(&hash) {
            self.finish(hash, TxStatus::Rejected { reason });
        }
    }

    /// Transactions for the block after `state`: per sender from the account's next nonce
    /// without gaps, higher fees first across senders, at most `max_txs` and `max_bytes`.
    pub fn select(
        &self,
        state: &State,
        max_txs: usize,
        max_bytes: usize,
    ) -> Vec<SignedTransaction> {
        // Heap of (fee, -seq) at each sender's next runnable nonce.
        let mut heap: BinaryHeap<(Amount, std::cmp::Reverse<u64>, Address, u64)> =
            BinaryHeap::new();
        for (sender, queue) in &self.senders {
            let next = state.account(sender).nonce;
            if let Some(e) = queue.get(&next) {
                heap.push((e.tx.tx.fee, std::cmp::Reverse(e.seq), *sender, next));
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, _, sender, nonce)) = heap.pop() {
            if out.len() >= max_txs {
                break;
            }
            let Some(queue) = self.senders.get(&sender) else {
                continue;
            };
            let Some(e) = queue.get(&nonce) else {
                continue;
            };
            if bytes + e.bytes > max_bytes {
                continue;
            }
            bytes += e.bytes;
            out.push(e.tx.clone());
            if let Some(n) = queue.get(&(nonce + 1)) {
                heap.push((n.tx.tx.fee, std::cmp::Reverse(n.seq), sender, nonce + 1));
            }
        }
        out
    }

    /// Up to `max` waiting transactions not handed out for gossip in the last `age`, marked as
    /// handed out now (a node rebroadcasts what its peers may have missed).
    pub fn due_for_gossip(
        &mut self,
        age: std::time::Duration,
        max: usize,
    ) -> Vec<SignedTransaction> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        for queue in self.senders.values_mut() {
            for e in queue.values_mut() {
                if out.len() >= max {
                    return out;
                }
                if now.duration_since(e.gossiped) >= age {
                    e.gossiped = now;
                    out.push(e.tx.clone());
                }
            }
        }
        out
    }

    /// Drop a transaction a proposer could not include, with the reason.
    pub fn reject(&mut self, hash: &Hash, reason: &str) {
        self.remove(hash, Some(reason));
    }

    /// After a block at `height` commits with `state` as the result: forget included,
    /// stale-nonce and expired transactions.
    pub fn on_commit(&mut self, state: &State, height: u64, included: &[Hash]) {
        for hash in included {
            self.remove(hash, None);
            self.finish(*hash, TxStatus::Included { height });
        }
        let next_height = height + 1;
        let mut drop: Vec<(Hash, &'static str)> = Vec::new();
        for (sender, queue) in &self.senders {
            let want = state.account(sender).nonce;
            for (nonce, e) in queue {
                if *nonce < want {
                    drop.push((e.hash, "its nonce was used by another transaction"));
                } else if e.tx.tx.expiry_height < next_height {
                    drop.push((e.hash, "expired before it could be included"));
                }
            }
        }
        for (hash, reason) in drop {
            self.remove(&hash, Some(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_crypto::Keypair;
    use agora_primitives::{Call, Transaction};

    fn key(i: u8) -> Keypair {
        Keypair::from_seed(&[i; 32])
    }

    fn state_with(funded: &[&Keypair]) -> State {
        agora_ledger::genesis::Genesis {
            chain_id: "test".into(),
            params: agora_ledger::state::ChainParams::devnet(),
            balances: funded
                .iter()
                .map(|k| (k.address(), Amount::agora(1000)))
                .collect(),
            stakes: Vec::new(),
            subnets: Vec::new(),
        }
        .into_state()
        .unwrap()
    }

    fn tx(k: &Keypair, nonce: u64, fee: u64) -> SignedTransaction {
        agora_crypto::sign_tx(
            k,
            Transaction {
                chain_id: "test".into(),
                sender: k.address(),
                nonce,
                fee: Amount(u128::from(fee)),
                expiry_height: 100,
                call: Call::Transfer {
                    to: Address([7; 32]),
                    amount: Amount(1),
                },
            },
        )
    }

    #[test]
    fn orders_by_nonce_per_sender_and_fee_across_senders() {
        let (a, b) = (key(1), key(2));
        let s = state_with(&[&a, &b]);
        let mut m = Mempool::new(MempoolConfig::default());
        m.add(&s, tx(&a, 1, 100)).unwrap(); // waits for nonce 0
        m.add(&s, tx(&a, 0, 1)).unwrap();
        m.add(&s, tx(&b, 0, 50)).unwrap();
        let picked = m.select(&s, 10, usize::MAX);
        let order: Vec<(Address, u64)> = picked.iter().map(|t| (t.tx.sender, t.tx.nonce)).collect();
        assert_eq!(
            order,
            vec![(b.address(), 0), (a.address(), 0), (a.address(), 1)]
        );
        assert_eq!(m.select(&s, 2, usize::MAX).len(), 2);
    }

    #[test]
    fn duplicates_stale_gaps_and_bad_signatures_are_refused() {
        let a = key(1);
        let mut s = state_with(&[&a]);
        let mut m = Mempool::new(MempoolConfig {
            max_nonce_gap: 4,
            ..MempoolConfig::default()
        });
        let t = tx(&a, 0, 10);
        let h = m.add(&s, t.clone()).unwrap();
        assert_eq!(m.add(&s, t), Err(AdmitError::Duplicate(h)));
        assert!(matches!(
            m.add(&s, tx(&a, 9, 10)),
            Err(AdmitError::NonceGap { .. })
        ));
        assert!(matches!(
            m.add(&s, tx(&a, 0, 9)),
            Err(AdmitError::Underpriced { .. })
        ));
        let mut forged = tx(&a, 1, 10);
        forged.tx.fee = Amount(11);
        assert!(matches!(
            m.add(&s, forged),
            Err(AdmitError::Invalid(TxError::BadSignature(_)))
        ));
        s.accounts.entry(a.address()).or_default().nonce = 1;
        assert!(matches!(
            m.add(&s, tx(&a, 0, 20)),
            Err(AdmitError::StaleNonce { .. })
        ));
        let poor = key(9);
        assert!(matches!(
            m.add(&s, tx(&poor, 0, 1)),
            Err(AdmitError::CannotPayFee { .. })
        ));
    }

    #[test]
    fn full_pool_evicts_the_cheapest_only_for_a_higher_fee() {
        let ks: Vec<Keypair> = (1..=4).map(key).collect();
        let refs: Vec<&Keypair> = ks.iter().collect();
        let s = state_with(&refs);
        let mut m = Mempool::new(MempoolConfig {
            max_txs: 2,
            ..MempoolConfig::default()
        });
        let cheap = m.add(&s, tx(&ks[0], 0, 5)).unwrap();
        m.add(&s, tx(&ks[1], 0, 9)).unwrap();
        assert!(matches!(
            m.add(&s, tx(&ks[2], 0, 5)),
            Err(AdmitError::Full { .. })
        ));
        m.add(&s, tx(&ks[3], 0, 6)).unwrap();
        assert_eq!(m.len(), 2);
        assert!(matches!(m.status(&cheap), Some(TxStatus::Rejected { .. })));
    }

    #[test]
    fn commit_removes_included_stale_and_expired() {
        let (a, b) = (key(1), key(2));
        let mut s = state_with(&[&a, &b]);
        let mut m = Mempool::new(MempoolConfig::default());
        let included = m.add(&s, tx(&a, 0, 1)).unwrap();
        let mut late = tx(&b, 0, 1);
        late.tx.expiry_height = 1;
        let late = agora_crypto::sign_tx(&b, late.tx);
        let late_hash = m.add(&s, late).unwrap();
        s.accounts.entry(a.address()).or_default().nonce = 1;
        s.height = 1;
        m.on_commit(&s, 1, &[included]);
        assert_eq!(m.status(&included), Some(TxStatus::Included { height: 1 }));
        assert!(matches!(
            m.status(&late_hash),
            Some(TxStatus::Rejected { .. })
        ));
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
    }
}
