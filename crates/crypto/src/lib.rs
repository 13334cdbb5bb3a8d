//! Ed25519 accounts and BLAKE3 hashing: signing and verifying what the ledger accepts.
//!
//! Stability: consensus-visible (hash and signature formats).
//!
//! # Design
//! The only home of `ed25519-dalek` and `blake3`. A [`Keypair`] is an Ed25519 signing key whose
//! public key is the account [`Address`]. Transactions are signed over
//! [`Transaction::signing_bytes`] (a domain tag, then the canonical encoding); [`verify_batch`]
//! checks many signatures at once for block application. Weight commitments are
//! [`weights_commit`]; the state commitment is [`merkle`].
//!
//! # Invariants
//! - Secret key bytes are zeroized on drop and never printed (`Debug` shows the address only).
//! - Verification is strict (`verify_strict`): malleable or small-order signatures are refused.
//!
//! # Example
//! ```
//! use agora_crypto::{Keypair, sign_tx, verify_tx};
//! use agora_primitives::{Amount, Call, Transaction};
//! let alice = Keypair::generate();
//! let tx = Transaction {
//!     chain_id: "agora-devnet".into(), sender: alice.address(), nonce: 0, fee: Amount(1_000),
//!     expiry_height: 100,
//!     call: Call::Transfer { to: Keypair::generate().address(), amount: Amount::agora(1) },
//! };
//! let signed = sign_tx(&alice, tx);
//! assert!(verify_tx(&signed).is_ok());
//! ```
#![forbid(unsafe_code)]

pub mod keystore;
pub mod merkle;

use std::fmt;

use agora_codec::{Encode, encode_slice};
use agora_primitives::{Address, Hash, NetUid, SignedTransaction, Transaction};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Why a signature or key is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is not a valid Ed25519 public key.
    #[error("address {0} is not a valid Ed25519 public key")]
    BadPublicKey(Address),
    /// The signature does not verify for the sender.
    #[error(
        "signature does not verify for sender {0}; sign the exact transaction bytes with the sender's key"
    )]
    BadSignature(Address),
    /// The operating system's randomness is unavailable.
    #[error("cannot read randomness from the operating system: {0}")]
    Randomness(String),
}

/// BLAKE3 of bytes.
pub fn hash(bytes: &[u8]) -> Hash {
    Hash(*blake3::hash(bytes).as_bytes())
}

/// BLAKE3 of a value's canonical encoding.
pub fn hash_of<T: Encode + ?Sized>(value: &T) -> Hash {
    hash(&agora_codec::encode_to_vec(value))
}

/// An incremental BLAKE3 hasher (for roots over many items).
#[derive(Debug, Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// A new hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Absorb bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }
    /// The hash.
    pub fn finalize(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// An Ed25519 key pair: the secret that signs for an [`Address`].
pub struct Keypair(SigningKey);

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl Keypair {
    /// A fresh key from the operating system's randomness.
    ///
    /// # Panics
    /// If the OS has no randomness source (see [`Keypair::try_generate`] to handle that).
    pub fn generate() -> Self {
        Self::try_generate().expect("operating system randomness")
    }

    /// A fresh key from the operating system's randomness.
    pub fn try_generate() -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| Error::Randomness(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key whose secret seed is `seed` (deterministic; tests and keystores).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The secret seed (handle with care; zeroized when dropped).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The account address (public key).
    pub fn address(&self) -> Address {
        Address(self.0.verifying_key().to_bytes())
    }

    /// Sign bytes.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

fn verifying_key(address: &Address) -> Result<VerifyingKey, Error> {
    VerifyingKey::from_bytes(&address.0).map_err(|_| Error::BadPublicKey(*address))
}

/// Verify a signature by `address` over `message`.
pub fn verify(address: &Address, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
    let key = verifying_key(address)?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature(*address))
}

/// Sign a transaction with its sender's key.
pub fn sign_tx(key: &Keypair, tx: Transaction) -> SignedTransaction {
    let signature = key.sign(&tx.signing_bytes());
    SignedTransaction { tx, signature }
}

/// Check a signed transaction's signature.
pub fn verify_tx(signed: &SignedTransaction) -> Result<(), Error> {
    verify(
        &signed.tx.sender,
        &signed.tx.signing_bytes(),
        &signed.signature,
    )
}

/// Check many transaction signatures at once (faster than one by one). On failure, checks one
/// by one to name the first bad one: `Err((index, error))`.
pub fn verify_batch(txs: &[SignedTransaction]) -> Result<(), (usize, Error)> {
    let messages: Vec<Vec<u8>> = txs.iter().map(|s| s.tx.signing_bytes()).collect();
    let mut keys = Vec::with_capacity(txs.len());
    for (i, s) in txs.iter().enumerate() {
        keys.push(verifying_key(&s.tx.sender).map_err(|e| (i, e))?);
    }
    let signatures: Vec<Signature> = txs
        .iter()
        .map(|s| Signature::from_bytes(&s.signature))
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    // Batch verification accepts what `verify` accepts (it already refuses a non-canonical S);
    // `verify_strict` additionally refuses small-order ("weak") keys, so refuse those here.
    if let Some(i) = keys.iter().position(VerifyingKey::is_weak) {
        return Err((i, Error::BadPublicKey(txs[i].tx.sender)));
    }
    if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (i, s) in txs.iter().enumerate() {
        verify_tx(s).map_err(|e| (i, e))?;
    }
    // Unreachable for honest inputs: a failing batch has a signature that fails alone.
    Err((
        0,
        Error::BadSignature(txs.first().map(|s| s.tx.sender).unwrap_or_default()),
    ))
}

/// The hash of a signed transaction (its id): BLAKE3 of its canonical encoding.
pub fn tx_hash(signed: &SignedTransaction) -> Hash {
    hash_of(signed)
}

/// The header's commitment to a block's transactions:
/// `BLAKE3("agora/txs/v1" || count || tx_hash(tx_0) || ...)`.
pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let mut h = Hasher::new();
    h.update(b"agora/txs/v1\0")
        .update(&(txs.len() as u64).to_le_bytes());
    for tx in txs {
        h.update(&tx_hash(tx).0);
    }
    h.finalize()
}

/// The commitment a validator publishes before revealing weights:
/// `BLAKE3("agora/weights/v1" || netuid || uids || values || salt)`.
pub fn weights_commit(netuid: NetUid, uids: &[u16], values: &[u16], salt: &[u8; 32]) -> Hash {
    let mut bytes = b"agora/weights/v1\0".to_vec();
    netuid.encode(&mut bytes);
    encode_slice(uids, &mut bytes);
    encode_slice(values, &mut bytes);
    salt.encode(&mut bytes);
    hash(&bytes)
}
