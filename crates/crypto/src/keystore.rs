//! Keys at rest: a secret seed encrypted under a passphrase.
//!
//! The passphrase goes through Argon2id (memory-hard, parameters stored with the key) to a
//! 32-byte key for XChaCha20-Poly1305; the account address is the associated data, so a file
//! whose address was edited does not decrypt. The file format (JSON, written by the CLI) is in
//! `docs/ARCHITECTURE.md`.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::{Address, Keypair};

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Agora's default: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
}

/// An encrypted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The account (also authenticated as associated data).
    pub address: Address,
    /// KDF parameters.
    pub kdf: KdfParams,
    /// KDF salt.
    pub salt: [u8; 16],
    /// AEAD nonce.
    pub nonce: [u8; 24],
    /// Encrypted seed with its tag.
    pub ciphertext: Vec<u8>,
}

/// Why a key cannot be sealed or opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// Wrong passphrase, or the file was altered.
    #[error("wrong passphrase (or the key file was altered)")]
    WrongPassphrase,
    /// Unusable KDF parameters.
    #[error("invalid key-derivation parameters: {0}")]
    Kdf(String),
    /// No randomness.
    #[error("cannot read randomness from the operating system: {0}")]
    Randomness(String),
}

fn derive(
    passphrase: &[u8],
    salt: &[u8; 16],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Encrypt a key under a passphrase.
pub fn seal(key: &Keypair, passphrase: &[u8], kdf: KdfParams) -> Result<Sealed, KeystoreError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    getrandom::getrandom(&mut salt).map_err(|e| KeystoreError::Randomness(e.to_string()))?;
    getrandom::getrandom(&mut nonce).map_err(|e| KeystoreError::Randomness(e.to_string()))?;
    let wrapping = derive(passphrase, &salt, kdf)?;
    let cipher = XChaCha20Poly1305::new(wrapping.as_ref().into());
    let address = key.address();
    let seed = key.seed();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: seed.as_ref(),
                aad: &address.0,
            },
        )
        .map_err(|_| KeystoreError::Kdf("encryption failed".into()))?;
    Ok(Sealed {
        address,
        kdf,
        salt,
        nonce,
        ciphertext,
    })
}

/// Decrypt a key with its passphrase.
pub fn open(sealed: &Sealed, passphrase: &[u8]) -> Result<Keypair, KeystoreError> {
    let wrapping = derive(passphrase, &sealed.salt, sealed.kdf)?;
    let cipher = XChaCha20Poly1305::new(wrapping.as_ref().into());
    let seed = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &sealed.address.0,
                },
            )
            .map_err(|_| KeystoreError::WrongPassphrase)?,
    );
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| KeystoreError::WrongPassphrase)?;
    let key = Keypair::from_seed(seed);
    if key.address() != sealed.address {
        return Err(KeystoreError::WrongPassphrase);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let key = Keypair::from_seed(&[7; 32]);
        let sealed = seal(&key, b"correct horse", FAST).unwrap();
        assert_eq!(
            open(&sealed, b"correct horse").unwrap().address(),
            key.address()
        );
        assert_eq!(
            open(&sealed, b"wrong").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        let mut moved = sealed.clone();
        moved.address = Keypair::from_seed(&[8; 32]).address();
        assert_eq!(
            open(&moved, b"correct horse").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        let mut flipped = sealed;
        flipped.ciphertext[0] ^= 1;
        assert_eq!(
            open(&flipped, b"correct horse").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
    }
}
