//! The serving protocol `/agora/infer/1` on a libp2p stream, and miner adverts.
//!
//! 1. Gateway -> miner, one sealed frame = 32-byte HPKE encapsulation || ciphertext of an
//!    [`InferRequest`] (JSON).
//! 2. Miner -> gateway, frames sealed with the response key: [`MinerFrame`] JSON, first any
//!    number of `token` frames, then one `done` (with the signed receipt) or `error`.
//! 3. Gateway -> miner, one frame sealed with the response key: [`GatewayFrame::Countersign`]
//!    with the gateway's signature over the receipt (or `Refuse` with the reason).
//!
//! Frames are at most [`MAX_FRAME`] bytes. Adverts are gossiped on [`ADVERT_TOPIC`].

use agora_primitives::{Address, Amount, Hash, Receipt};
use serde::{Deserialize, Serialize};

/// Stream protocol name.
pub const PROTOCOL: &str = "/agora/infer/1";
/// Gossip topic of miner adverts.
pub const ADVERT_TOPIC: &str = "agora/adverts/1";
/// Largest frame on the stream.
pub const MAX_FRAME: usize = 256 << 10;
/// Longest conversation accepted, in bytes of message content.
pub const MAX_PROMPT_BYTES: usize = 64 << 10;

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// What the gateway asks a miner (sealed to the miner).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// The paying gateway account (hex).
    pub gateway: String,
    /// Receipt nonce chosen by the gateway.
    pub receipt_nonce: u64,
    /// Receipt expiry height.
    pub expiry_height: u64,
    /// The most the gateway pays per 1k tokens (decimal AGORA).
    pub max_price_per_1k: String,
    /// Log-probabilities wanted: `None`, none; `Some(n)`, each token's and its `n` most likely
    /// alternatives' (at most [`MAX_TOP_LOGPROBS`]). Left out of the JSON when `None`, so a
    /// request without it is what miners from before the field read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u8>,
}

/// Most alternatives a request may ask for per token (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// What a log-probability of minus infinity is sent as (JSON has no infinities; OpenAI writes
/// the same value).
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// A generated token's log-probabilities (natural log, under the model before temperature),
/// sent with it when the request asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLogprobs {
    /// The token's own bytes (part of a UTF-8 character, possibly).
    pub bytes: Vec<u8>,
    /// Its log-probability, at least [`LOGPROB_FLOOR`].
    pub logprob: f32,
    /// The most likely tokens at its position, best first (ties to the lower id).
    pub top: Vec<Alternative>,
}

/// One of the most likely tokens at a position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// Token id.
    pub id: u32,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability, at least [`LOGPROB_FLOOR`].
    pub logprob: f32,
}

impl TokenLogprobs {
    /// A log-probability as sent: [`LOGPROB_FLOOR`] for minus infinity (and NaN, which a
    /// model never gives), anything else as it is.
    pub fn sendable(logprob: f32) -> f32 {
        if logprob >= LOGPROB_FLOOR {
            logprob
        } else {
            LOGPROB_FLOOR
        }
    }
}

/// Frames from the miner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MinerFrame {
    /// One generated token: its id in the registered model's vocabulary and the text it adds
    /// (validators teacher-force the ids; the text is what a client shows).
    Token {
        /// Text.
        text: String,
        /// Token id.
        id: u32,
        /// Its log-probabilities, when the request asked (left out otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprobs: Option<TokenLogprobs>,
    },
    /// The end: finish reason, usage and the receipt signed by the miner.
    Done {
        /// `stop` or `length`.
        finish_reason: String,
        /// Hex of the canonical encoding of the [`Receipt`].
        receipt: String,
        /// Hex of the miner's signature over the receipt's signing bytes.
        miner_signature: String,
    },
    /// The request failed before or during generation.
    Error {
        /// Machine-readable code (`busy`, `invalid_request`, `context_limit`, `internal`).
        code: String,
        /// Human-readable reason.
        message: String,
    },
}

/// Frames from the gateway after `done`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GatewayFrame {
    /// The gateway's signature over the receipt's signing bytes (hex).
    Countersign {
        /// Signature.
        signature: String,
    },
    /// The gateway will not pay, and why.
    Refuse {
        /// Why.
        reason: String,
    },
}

/// A miner's signed advert of where and how it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advert {
    /// Subnet.
    pub netuid: u16,
    /// Miner hotkey (hex).
    pub hotkey: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// HPKE public key (hex).
    pub hpke_key: String,
    /// BLAKE3 of the model file (hex).
    pub model_hash: String,
    /// Model name.
    pub model: String,
    /// The engine's numerics version (`agora_inference::ModelInfo::numerics`): validators
    /// verify greedy answers only from miners computing the same bits. 0: not said (an
    /// advert from before the field, which parses as 0; a 0 is left out of the JSON, so such
    /// an advert's signed bytes are what its miner signed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub numerics: u32,
    /// Price per 1k tokens (decimal AGORA).
    pub price_per_1k: String,
    /// Requests queued or running now.
    pub load: u32,
    /// Most requests it runs at once.
    pub capacity: u32,
    /// Milliseconds since the Unix epoch when signed (adverts older than a minute are ignored).
    pub time_ms: u64,
    /// Hex signature by the hotkey over [`Advert::signing_bytes`].
    pub signature: String,
}

impl Advert {
    /// The signed bytes: domain, then every field but the signature, as JSON.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = String::new();
        let mut out = b"agora/advert/v1".to_vec();
        out.extend_from_slice(
            serde_json::to_string(&unsigned)
                .unwrap_or_default()
                .as_bytes(),
        );
        out
    }

    /// Whether the signature verifies against the hotkey.
    pub fn verify(&self) -> bool {
        let (Ok(hotkey), Some(sig)) = (
            self.hotkey.parse::<Address>(),
            agora_primitives::from_hex(&self.signature).and_then(|s| <[u8; 64]>::try_from(s).ok()),
        ) else {
            return false;
        };
        agora_crypto::verify(&hotkey, &self.signing_bytes(), &sig).is_ok()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the gateway expects of the receipt for one request.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The paying gateway.
    pub gateway: Address,
    /// The miner asked.
    pub miner: Address,
    /// BLAKE3 of the request plaintext sent.
    pub request_hash: Hash,
    /// BLAKE3 of the text received.
    pub response_hash: Hash,
    /// Token frames received.
    pub completion_tokens: u32,
    /// The price cap.
    pub max_price: Amount,
    /// The receipt nonce asked for.
    pub nonce: u64,
}

/// Why a receipt from a miner is not countersigned (`Ok` when it is what was agreed).
pub fn check_receipt(receipt: &Receipt, e: &Expected) -> Result<(), String> {
    if receipt.gateway != e.gateway {
        return Err("receipt names another gateway".into());
    }
    if receipt.miner != e.miner {
        return Err("receipt names another miner".into());
    }
    if receipt.request_hash != e.request_hash {
        return Err("receipt's request hash is not the request sent".into());
    }
    if receipt.response_hash != e.response_hash {
        return Err("receipt's response hash is not the response received".into());
    }
    if receipt.completion_tokens != e.completion_tokens {
        return Err(format!(
            "receipt claims {} completion tokens, {} arrived",
            receipt.completion_tokens, e.completion_tokens
        ));
    }
    if receipt.price_per_1k_tokens > e.max_price {
        return Err("receipt's price is above the gateway's cap".into());
    }
    if receipt.nonce != e.nonce {
        return Err("receipt's nonce is not the one asked for".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_crypto::Keypair;

    fn signed(key: &Keypair, numerics: u32) -> Advert {
        let mut advert = Advert {
            netuid: 1,
            hotkey: key.address().to_string(),
            peer_id: "12D3KooWExample".into(),
            hpke_key: "00".repeat(32),
            model_hash: "11".repeat(32),
            model: "smollm2-135m-instruct-q4_1".into(),
            numerics,
            price_per_1k: "0.001".into(),
            load: 0,
            capacity: 4,
            time_ms: 1,
            signature: String::new(),
        };
        advert.signature = agora_primitives::to_hex(&key.sign(&advert.signing_bytes()));
        advert
    }

    #[test]
    fn an_advert_signs_its_numerics_and_one_from_before_the_field_still_verifies() {
        let key = Keypair::from_seed(&[5; 32]);
        let advert = signed(&key, 2);
        let json = serde_json::to_string(&advert).unwrap();
        assert!(json.contains("\"numerics\":2"), "{json}");
        let back: Advert = serde_json::from_str(&json).unwrap();
        assert!(back.verify());
        // The version is signed: a relay cannot change it.
        let mut forged = back.clone();
        forged.numerics = 1;
        assert!(!forged.verify());
        // An advert from before the field: its miner signed JSON without it.
        let old = signed(&key, 0);
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("numerics"), "{json}");
        let back: Advert = serde_json::from_str(&json).unwrap();
        assert_eq!(back.numerics, 0);
        assert!(back.verify());
    }

    #[test]
    fn log_probabilities_travel_only_when_asked() {
        let mut req = InferRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            max_tokens: 4,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            gateway: "00".repeat(32),
            receipt_nonce: 1,
            expiry_height: 10,
            max_price_per_1k: "1".into(),
            logprobs: None,
        };
        // Not asked: the request and the token frames are what parties from before the field
        // read.
        let json = serde_json::to_string(&req).unwrap();
        assert!(!json.contains("logprobs"), "{json}");
        let plain = MinerFrame::Token {
            text: "a".into(),
            id: 7,
            logprobs: None,
        };
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("logprobs"), "{json}");
        req.logprobs = Some(2);
        let back: InferRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let with = MinerFrame::Token {
            text: "a".into(),
            id: 7,
            logprobs: Some(TokenLogprobs {
                bytes: b"a".to_vec(),
                logprob: TokenLogprobs::sendable(f32::NEG_INFINITY),
                top: vec![Alternative {
                    id: 8,
                    bytes: vec![0xE2, 0x82],
                    logprob: -0.5,
                }],
            }),
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains("-9999"),
            "minus infinity is sent as OpenAI writes it: {json}"
        );
        let back: MinerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, with);
        assert!(TokenLogprobs::sendable(f32::NAN) == LOGPROB_FLOOR);
        assert!(TokenLogprobs::sendable(-1.5) == -1.5);
    }
}
