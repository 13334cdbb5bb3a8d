//! Sealing requests to a miner with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305) and the responses back with a key exported from the same
//! context, so only the chosen miner can read the prompt and only the gateway the answer.
//!
//! A miner's HPKE key pair is derived from its Ed25519 seed (`"agora/hpke/v1"` as the derivation
//! input prefix); its public half travels in the miner's signed advert.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

type Kem = X25519HkdfSha256;

/// HPKE `info` for inference requests.
const INFO: &[u8] = b"agora/infer/v1";
/// Exporter label of the response key.
const RESPONSE_LABEL: &[u8] = b"agora/infer/v1 response";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// A key or encapsulation is not 32 bytes of a valid X25519 point.
    #[error("{0} is not a valid X25519 key")]
    BadKey(&'static str),
    /// Decryption failed: wrong recipient, tampered or out of order.
    #[error("sealed data does not open: it was sealed for another key, altered or replayed")]
    Open,
    /// Randomness unavailable.
    #[error("no randomness: {0}")]
    Random(String),
}

/// A miner's HPKE key pair.
pub struct MinerKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    /// The public key to put in adverts.
    pub public: [u8; 32],
}

impl std::fmt::Debug for MinerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MinerKey({})", agora_primitives::to_hex(&self.public))
    }
}

impl MinerKey {
    /// Derive from the miner's Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut ikm = b"agora/hpke/v1".to_vec();
        ikm.extend_from_slice(seed);
        let (secret, public) = Kem::derive_keypair(&ikm);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        Self { secret, public: pk }
    }
}

struct OsRng;

impl hpke::rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // The rand_core 0.9 interface cannot fail; an OS without randomness cannot run a node.
        if getrandom::getrandom(dest).is_err() {
            dest.fill(0);
        }
    }
}

impl hpke::rand_core::CryptoRng for OsRng {}

/// The symmetric half of a session: seals and opens response frames in order.
pub struct ResponseKey {
    key: [u8; 32],
    sent: u64,
    received: u64,
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseKey(..)")
    }
}

impl ResponseKey {
    fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            sent: 0,
            received: 0,
        }
    }

    fn nonce(counter: u64, from_miner: bool) -> chacha20poly1305::Nonce {
        let mut n = [0u8; 12];
        n[0] = u8::from(from_miner);
        n[4..].copy_from_slice(&counter.to_le_bytes());
        n.into()
    }

    /// Seal the next frame in this direction.
    pub fn seal(&mut self, plaintext: &[u8], from_miner: bool) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.key.into());
        let nonce = Self::nonce(self.sent, from_miner);
        self.sent += 1;
        // Encryption with a valid key and nonce cannot fail.
        cipher.encrypt(&nonce, plaintext).unwrap_or_default()
    }

    /// Open the next frame from the other direction.
    pub fn open(&mut self, ciphertext: &[u8], from_miner: bool) -> Result<Vec<u8>, SealError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.key.into());
        let nonce = Self::nonce(self.received, from_miner);
        let out = cipher
            .decrypt(&nonce, ciphertext)
            .map_err(|_| SealError::Open)?;
        self.received += 1;
        Ok(out)
    }
}

/// Seal `plaintext` to a miner's public key: `(encapsulated key, ciphertext, response key)`.
pub fn seal_request(
    miner_public: &[u8; 32],
    plaintext: &[u8],
) -> Result<([u8; 32], Vec<u8>, ResponseKey), SealError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(miner_public)
        .map_err(|_| SealError::BadKey("miner public key"))?;
    let (enc, mut ctx) = hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        INFO,
        &mut OsRng,
    )
    .map_err(|e| SealError::Random(e.to_string()))?;
    let ciphertext = ctx
        .seal(plaintext, b"")
        .map_err(|e| SealError::Random(e.to_string()))?;
    let mut key = [0u8; 32];
    ctx.export(RESPONSE_LABEL, &mut key)
        .map_err(|_| SealError::Open)?;
    let mut e = [0u8; 32];
    e.copy_from_slice(&enc.to_bytes());
    Ok((e, ciphertext, ResponseKey::new(key)))
}

/// Open a request sealed to this miner: `(plaintext, response key)`.
pub fn open_request(
    key: &MinerKey,
    enc: &[u8; 32],
    ciphertext: &[u8],
) -> Result<(Vec<u8>, ResponseKey), SealError> {
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| SealError::BadKey("encapsulated key"))?;
    let mut ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &key.secret,
        &enc,
        INFO,
    )
    .map_err(|_| SealError::Open)?;
    let plaintext = ctx.open(ciphertext, b"").map_err(|_| SealError::Open)?;
    let mut rk = [0u8; 32];
    ctx.export(RESPONSE_LABEL, &mut rk)
        .map_err(|_| SealError::Open)?;
    Ok((plaintext, ResponseKey::new(rk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_miner_opens_the_request_and_responses_flow_back() {
        let miner = MinerKey::from_seed(&[1; 32]);
        let other = MinerKey::from_seed(&[2; 32]);
        assert_eq!(miner.public, MinerKey::from_seed(&[1; 32]).public);
        let (enc, ct, mut gw) = seal_request(&miner.public, b"the prompt").unwrap();
        assert_eq!(
            open_request(&other, &enc, &ct).unwrap_err(),
            SealError::Open
        );
        let (pt, mut mk) = open_request(&miner, &enc, &ct).unwrap();
        assert_eq!(pt, b"the prompt");
        let a = mk.seal(b"token 1", true);
        let b = mk.seal(b"token 2", true);
        // In order only: the second frame does not open first.
        assert!(gw.open(&b, true).is_err());
        assert_eq!(gw.open(&a, true).unwrap(), b"token 1");
        assert_eq!(gw.open(&b, true).unwrap(), b"token 2");
        // Gateway to miner uses the other nonce space.
        let c = gw.seal(b"countersign", false);
        assert_eq!(mk.open(&c, false).unwrap(), b"countersign");
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        assert!(open_request(&miner, &enc, &tampered).is_err());
    }
}
