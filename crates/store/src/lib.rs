//! Blocks and state on disk (redb): one atomic write per block, state proofs against a
//! finalized root.
//!
//! Stability: the on-disk layout is versioned (`meta["format"]`); a change needs a migration,
//! or, where the transactions' encoding itself changed (format 2), a refusal that names the fix.
//!
//! # Design
//! One redb file, `<dir>/chain.redb`, with three tables:
//! ```text
//! blocks: u64 height -> encoded Block
//! state:  entry key  -> entry value      (agora_ledger::entries: the state as sorted pairs)
//! meta:   "format" -> u32, "height" -> u64, "root" -> 32 bytes, "chain_id" -> utf-8
//! ```
//! [`Store::commit`] writes the block, the changed state entries and the new height and root in
//! one redb write transaction: after a crash (even `kill -9` mid-write) the file reopens at the
//! last committed block, never in between. [`Store::open`] re-derives the root from the stored
//! entries and refuses a store whose root does not match the one recorded with the last block.
//!
//! # Invariants
//! - `meta.height == h` implies blocks `1..=h` are present, and the state entries are exactly
//!   the state after block `h`, whose root is `meta.root == blocks[h].header.state_root`.
//! - Each committed block's `parent` is the hash of the previous block's header.
//!
//! # Example
//! ```no_run
//! # fn main() -> Result<(), agora_store::Error> {
//! let store = agora_store::Store::open(std::path::Path::new("/tmp/agora-data"))?;
//! if let Some(tip) = store.tip()? {
//!     println!("height {} root {}", tip.height, tip.root);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use agora_codec::{decode_exact, encode_to_vec};
use agora_crypto::merkle::{self, KeyProof};
use agora_ledger::State;
use agora_primitives::{Block, Hash};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The commit certificate of each block, written in the same transaction as the block.
const CERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("certificates");
/// Proposals seen but not yet decided, keyed by height (big-endian) then block hash; removed
/// when their height commits. They let a restarted validator finish a round it voted in.
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// The layout of what is stored. 2: subnet hyperparameters carry the registered model and
/// engine numerics (the state's encoding changed; a format-1 store is refused by name).
const FORMAT: u32 = 2;

/// The state as sorted key-value pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened, read or written.
    #[error("store at {path}: {source}")]
    Db {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes do not decode or do not agree with each other.
    #[error("store at {path} is corrupt: {reason}; restore it from a backup or resync the node")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store holds another chain.
    #[error("store at {path} holds chain {found:?}, not {wanted:?}; use another data directory")]
    WrongChain {
        /// The file.
        path: PathBuf,
        /// Stored chain id.
        found: String,
        /// Requested chain id.
        wanted: String,
    },
    /// A block does not extend the stored chain.
    #[error("block {got} does not extend the store at height {height}: {reason}")]
    NotNext {
        /// The store's height.
        height: u64,
        /// The block's height.
        got: u64,
        /// Why.
        reason: &'static str,
    },
    /// The store has no genesis yet.
    #[error("store at {0} is empty; initialise it with a genesis first")]
    Empty(PathBuf),
}

/// The last committed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tip {
    /// Height (0: genesis only).
    pub height: u64,
    /// State root after it.
    pub root: Hash,
}

/// A value (or its absence) with a Merkle proof against the root at `height`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateProof {
    /// The height whose state was read.
    pub height: u64,
    /// That state's root (the `state_root` of block `height`).
    pub root: Hash,
    /// The key.
    pub key: Vec<u8>,
    /// The proof (with the value when present).
    pub proof: KeyProof,
}

/// The chain on disk.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("chain.redb");
        let db = Database::create(&path).map_err(|e| db_err(&path, e))?;
        let store = Store { db, path };
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        {
            // Make sure the tables exist, so readers never see "table does not exist".
            txn.open_table(BLOCKS).map_err(|e| store.err(e))?;
            txn.open_table(STATE).map_err(|e| store.err(e))?;
            txn.open_table(CERTS).map_err(|e| store.err(e))?;
            txn.open_table(PENDING).map_err(|e| store.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| store.err(e))?;
            let format = meta
                .get("format")
                .map_err(|e| store.err(e))?
                .map(|v| v.value().to_vec());
            match format {
                None => {
                    meta.insert("format", FORMAT.to_le_bytes().as_slice())
                        .map_err(|e| store.err(e))?;
                }
                Some(v) if v == FORMAT.to_le_bytes() => {}
                Some(v) => {
                    let found = <[u8; 4]>::try_from(v.as_slice())
                        .map(|b| u32::from_le_bytes(b).to_string())
                        .unwrap_or_else(|_| "unreadable".into());
                    return Err(store.corrupt(format!(
                        "store format {found}, but this agora reads format {FORMAT}: start from a fresh data directory (`agora devnet --fresh`, or a new `--data-dir`)"
                    )));
                }
            }
        }
        txn.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        db_err(&self.path, e)
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The last committed block, or `None` for a store without genesis.
    pub fn tip(&self) -> Result<Option<Tip>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let height = meta
            .get("height")
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec());
        let root = meta
            .get("root")
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec());
        match (height, root) {
            (None, None) => Ok(None),
            (Some(h), Some(r)) => {
                let height =
                    u64::from_le_bytes(h.try_into().map_err(|_| self.corrupt("meta.height"))?);
                let root = Hash(r.try_into().map_err(|_| self.corrupt("meta.root"))?);
                Ok(Some(Tip { height, root }))
            }
            _ => Err(self.corrupt("meta has a height without a root or the reverse")),
        }
    }

    /// Write the genesis state (height 0) into an empty store; on a store that already holds
    /// the same chain, do nothing.
    pub fn init(&self, genesis: &State) -> Result<(), Error> {
        if self.tip()?.is_some() {
            let state = self.state()?;
            if state.chain_id != genesis.chain_id {
                return Err(Error::WrongChain {
                    path: self.path.clone(),
                    found: state.chain_id,
                    wanted: genesis.chain_id.clone(),
                });
            }
            return Ok(());
        }
        self.write(None, genesis, None)
    }

    /// Commit a finalized block and the state after it, atomically.
    pub fn commit(&self, block: &Block, state: &State) -> Result<(), Error> {
        self.commit_with_certificate(block, state, None)
    }

    /// Commit a decided block, the state after it and the consensus certificate that decided
    /// it, in one atomic write; pending proposals at or below its height are dropped.
    pub fn commit_with_certificate(
        &self,
        block: &Block,
        state: &State,
        certificate: Option<&[u8]>,
    ) -> Result<(), Error> {
        let tip = self.tip()?.ok_or_else(|| Error::Empty(self.path.clone()))?;
        let got = block.header.height;
        let not_next = |reason| Error::NotNext {
            height: tip.height,
            got,
            reason,
        };
        if got != tip.height + 1 || state.height != got {
            return Err(not_next("heights are not consecutive"));
        }
        let parent = match self.block(tip.height)? {
            Some(prev) => agora_crypto::hash_of(&prev.header),
            None => Hash::default(),
        };
        if block.header.parent != parent {
            return Err(not_next("its parent is not the stored tip"));
        }
        self.write(Some(block), state, certificate)
    }

    /// The commit certificate stored with the block at `height`.
    pub fn certificate(&self, height: u64) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let certs = txn.open_table(CERTS).map_err(|e| self.err(e))?;
        Ok(certs
            .get(height)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec()))
    }

    /// Remember a proposal seen at `height` (durably, before voting on it).
    pub fn put_pending(&self, height: u64, hash: &Hash, record: &[u8]) -> Result<(), Error> {
        let mut key = height.to_be_bytes().to_vec();
        key.extend_from_slice(&hash.0);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.err(e))?;
            pending
                .insert(key.as_slice(), record)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The pending proposal records at `height`, in hash order.
    pub fn pending(&self, height: u64) -> Result<Vec<(Hash, Vec<u8>)>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let pending = txn.open_table(PENDING).map_err(|e| self.err(e))?;
        let lo = height.to_be_bytes();
        let hi = (height.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in pending
            .range(lo.as_slice()..hi.as_slice())
            .map_err(|e| self.err(e))?
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.value();
            let hash: [u8; 32] = key
                .get(8..)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| self.corrupt("pending key is not height + hash"))?;
            out.push((Hash(hash), v.value().to_vec()));
        }
        Ok(out)
    }

    fn write(
        &self,
        block: Option<&Block>,
        state: &State,
        certificate: Option<&[u8]>,
    ) -> Result<(), Error> {
        let entries = state.entries();
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|(k, v)| merkle::leaf_hash(k, v))
            .collect();
        let root = merkle::root(&leaves);
        if let Some(b) = block
            && b.header.state_root != root
        {
            return Err(Error::NotNext {
                height: state.height.saturating_sub(1),
                got: b.header.height,
                reason: "its state_root is not the root of the given state",
            });
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            if let Some(b) = block {
                let mut blocks = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
                blocks
                    .insert(b.header.height, encode_to_vec(b).as_slice())
                    .map_err(|e| self.err(e))?;
                if let Some(cert) = certificate {
                    let mut certs = txn.open_table(CERTS).map_err(|e| self.err(e))?;
                    certs
                        .insert(b.header.height, cert)
                        .map_err(|e| self.err(e))?;
                }
                let mut pending = txn.open_table(PENDING).map_err(|e| self.err(e))?;
                let hi = b.header.height.saturating_add(1).to_be_bytes();
                pending
                    .retain_in(..hi.as_slice(), |_, _| false)
                    .map_err(|e| self.err(e))?;
            }
            let mut table = txn.open_table(STATE).map_err(|e| self.err(e))?;
            // Write the difference from the stored state: delete what is gone, put what changed.
            let stored: Entries = table
                .iter()
                .map_err(|e| self.err(e))?
                .map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
            let (mut i, mut j) = (0, 0);
            while i < stored.len() || j < entries.len() {
                match (stored.get(i), entries.get(j)) {
                    (Some(old), Some(new)) if old.0 == new.0 => {
                        if old.1 != new.1 {
                            table
                                .insert(new.0.as_slice(), new.1.as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        i += 1;
                        j += 1;
                    }
                    (Some(old), Some(new)) if old.0 < new.0 => {
                        table.remove(old.0.as_slice()).map_err(|e| self.err(e))?;
                        i += 1;
                    }
                    (Some(old), None) => {
                        table.remove(old.0.as_slice()).map_err(|e| self.err(e))?;
                        i += 1;
                    }
                    (_, Some(new)) => {
                        table
                            .insert(new.0.as_slice(), new.1.as_slice())
                            .map_err(|e| self.err(e))?;
                        j += 1;
                    }
                    (None, None) => break,
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("height", state.height.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            meta.insert("root", root.0.as_slice())
                .map_err(|e| self.err(e))?;
            meta.insert("chain_id", state.chain_id.as_bytes())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, Error> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let blocks = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
        let Some(bytes) = blocks.get(height).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        decode_exact(bytes.value())
            .map(Some)
            .map_err(|e| self.corrupt(format!("block {height} does not decode: {e}")))
    }

    fn entries(&self) -> Result<(Tip, Entries), Error> {
        // One read transaction: the entries and the tip are from the same commit.
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let height = meta.get("height").map_err(|e| self.err(e))?;
        let root = meta.get("root").map_err(|e| self.err(e))?;
        let (Some(height), Some(root)) = (height, root) else {
            return Err(Error::Empty(self.path.clone()));
        };
        let tip = Tip {
            height: u64::from_le_bytes(
                height
                    .value()
                    .try_into()
                    .map_err(|_| self.corrupt("meta.height"))?,
            ),
            root: Hash(
                root.value()
                    .try_into()
                    .map_err(|_| self.corrupt("meta.root"))?,
            ),
        };
        let table = txn.open_table(STATE).map_err(|e| self.err(e))?;
        let entries = table
            .iter()
            .map_err(|e| self.err(e))?
            .map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok((tip, entries))
    }

    /// The state after the last committed block, checked against the recorded root.
    pub fn state(&self) -> Result<State, Error> {
        let (tip, entries) = self.entries()?;
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|(k, v)| merkle::leaf_hash(k, v))
            .collect();
        if merkle::root(&leaves) != tip.root {
            return Err(self.corrupt("state entries do not hash to the recorded root"));
        }
        let state =
            State::from_entries(&entries).map_err(|e| self.corrupt(format!("state entry: {e}")))?;
        if state.height != tip.height {
            return Err(self.corrupt("state height differs from the recorded height"));
        }
        if tip.height > 0 {
            let block = self
                .block(tip.height)?
                .ok_or_else(|| self.corrupt("the tip block is missing"))?;
            if block.header.state_root != tip.root {
                return Err(
                    self.corrupt("the tip block's state_root differs from the recorded root")
                );
            }
        }
        Ok(state)
    }

    /// A key's value (or absence) with a Merkle proof against the latest finalized root.
    pub fn prove(&self, key: &[u8]) -> Result<StateProof, Error> {
        let (tip, entries) = self.entries()?;
        Ok(StateProof {
            height: tip.height,
            root: tip.root,
            key: key.to_vec(),
            proof: merkle::prove_key(&entries, key),
        })
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Db {
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}
