//! The miner role: serve sealed chat requests with the inference engine, stream sealed tokens,
//! sign a receipt per request, keep the countersigned receipts for settlement, and gossip a
//! signed advert of where and at what price it serves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_crypto::Keypair;
use agora_inference::{ChatMessage, Engine, GenerateRequest, Sampling};
use agora_p2p::{P2p, read_frame, write_frame};
use agora_primitives::{Address, Amount, Hash, Receipt, SignedReceipt, to_hex};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::protocol::{
    ADVERT_TOPIC, Advert, GatewayFrame, InferRequest, MAX_FRAME, MAX_PROMPT_BYTES, MinerFrame,
    PROTOCOL,
};
use crate::seal::{MinerKey, ResponseKey, open_request};

/// Most countersigned receipts kept waiting for settlement.
pub const MAX_PENDING_RECEIPTS: usize = 100_000;

/// How a miner behaves (everything but `Honest` is for tests of the network's defences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinerMode {
    /// Serves as it should.
    Honest,
    /// Signs receipts with a key that is not its hotkey.
    BadReceiptSignature,
    /// Stops the stream after a few tokens (as if killed mid-stream).
    DieMidStream,
}

/// Miner settings.
#[derive(Clone, Debug)]
pub struct MinerConfig {
    /// Subnet served.
    pub netuid: u16,
    /// Chain id (receipts are bound to it).
    pub chain_id: String,
    /// Price per 1k tokens.
    pub price_per_1k: Amount,
    /// Requests served at once; more are answered `busy`.
    pub capacity: usize,
    /// Behaviour.
    pub mode: MinerMode,
}

/// A running miner.
pub struct Miner {
    key: Arc<Keypair>,
    hpke: MinerKey,
    engine: Arc<dyn Engine>,
    config: MinerConfig,
    model_hash: Hash,
    active: AtomicUsize,
    receipts: Mutex<Vec<SignedReceipt>>,
    served: AtomicUsize,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner")
            .field("hotkey", &self.key.address())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn model_hash(engine: &dyn Engine) -> Hash {
    engine
        .info()
        .hash
        .parse::<Hash>()
        .unwrap_or_else(|_| agora_crypto::hash(engine.info().hash.as_bytes()))
}

impl Miner {
    /// A miner with its hotkey (the libp2p identity too) and engine.
    pub fn new(key: Arc<Keypair>, engine: Arc<dyn Engine>, config: MinerConfig) -> Arc<Self> {
        let hpke = MinerKey::from_seed(&key.seed());
        let model_hash = model_hash(engine.as_ref());
        Arc::new(Self {
            key,
            hpke,
            engine,
            config,
            model_hash,
            active: AtomicUsize::new(0),
            receipts: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
        })
    }

    /// The hotkey.
    pub fn hotkey(&self) -> Address {
        self.key.address()
    }

    /// Requests answered to the end.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Take up to `max` countersigned receipts for a settlement transaction.
    pub fn take_receipts(&self, max: usize) -> Vec<SignedReceipt> {
        let mut r = match self.receipts.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let n = r.len().min(max);
        r.drain(..n).collect()
    }

    /// Put receipts back (a settlement that did not go through).
    pub fn return_receipts(&self, mut back: Vec<SignedReceipt>) {
        let mut r = match self.receipts.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        back.append(&mut r);
        back.truncate(MAX_PENDING_RECEIPTS);
        *r = back;
    }

    /// This miner's current signed advert.
    pub fn advert(&self, peer_id: &str) -> Advert {
        #[allow(
            clippy::disallowed_methods,
            reason = "adverts carry wall-clock time for freshness; not consensus-visible"
        )]
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let info = self.engine.info();
        let mut advert = Advert {
            netuid: self.config.netuid,
            hotkey: self.key.address().to_string(),
            peer_id: peer_id.to_owned(),
            hpke_key: to_hex(&self.hpke.public),
            model_hash: self.model_hash.to_string(),
            model: info.name,
            price_per_1k: self.config.price_per_1k.to_string(),
            load: self.active.load(Ordering::Relaxed) as u32,
            capacity: self.config.capacity as u32,
            time_ms,
            signature: String::new(),
        };
        advert.signature = to_hex(&self.key.sign(&advert.signing_bytes()));
        advert
    }

    /// Serve `/agora/infer/1` on `p2p` and gossip adverts every `every`.
    pub fn spawn(
        self: &Arc<Self>,
        p2p: &P2p,
        every: Duration,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, agora_p2p::P2pError> {
        let mut incoming = p2p.accept(PROTOCOL)?;
        let me = self.clone();
        let serve = tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let me = me.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.handle(stream).await {
                        debug!(%peer, error = %e, "request ended with an error");
                    }
                });
            }
        });
        let me = self.clone();
        let p2p = p2p.clone();
        let advertise = tokio::spawn(async move {
            let peer_id = p2p.peer_id().to_string();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let advert = me.advert(&peer_id);
                if let Ok(bytes) = serde_json::to_vec(&advert) {
                    // Nobody listening yet is fine: the next tick tries again.
                    let _ = p2p.publish(ADVERT_TOPIC, bytes).await;
                }
            }
        });
        Ok(vec![serve, advertise])
    }

    async fn send(
        stream: &mut agora_p2p::Stream,
        rk: &mut ResponseKey,
        frame: &MinerFrame,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(frame).map_err(|e| e.to_string())?;
        write_frame(stream, &rk.seal(&bytes, true))
            .await
            .map_err(|e| e.to_string())
    }

    async fn handle(self: Arc<Self>, mut stream: agora_p2p::Stream) -> Result<(), String> {
        let frame = read_frame(&mut stream, MAX_FRAME)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("stream closed before the request")?;
        if frame.len() < 32 {
            return Err("request frame too short".into());
        }
        let mut enc = [0u8; 32];
        enc.copy_from_slice(&frame[..32]);
        let (plaintext, mut rk) =
            open_request(&self.hpke, &enc, &frame[32..]).map_err(|e| e.to_string())?;
        let request_hash = agora_crypto::hash(&plaintext);
        let fail = |code: &str, message: String| MinerFrame::Error {
            code: code.to_owned(),
            message,
        };
        let req: InferRequest = match serde_json::from_slice(&plaintext) {
            Ok(r) => r,
            Err(e) => {
                let f = fail("invalid_request", format!("request JSON: {e}"));
                return Self::send(&mut stream, &mut rk, &f).await;
            }
        };
        let checked = self.check(&req);
        let (gateway, prompt) = match checked {
            Ok(v) => v,
            Err((code, message)) => {
                return Self::send(&mut stream, &mut rk, &fail(code, message)).await;
            }
        };
        // Admission: a bounded number of requests at once.
        if self.active.fetch_add(1, Ordering::SeqCst) >= self.config.capacity {
            self.active.fetch_sub(1, Ordering::SeqCst);
            let f = fail("busy", "the miner is at capacity; try another".into());
            return Self::send(&mut stream, &mut rk, &f).await;
        }
        let result = self
            .generate(&mut stream, &mut rk, &req, gateway, prompt, request_hash)
            .await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn check(&self, req: &InferRequest) -> Result<(Address, Vec<u32>), (&'static str, String)> {
        let gateway: Address = req
            .gateway
            .parse()
            .map_err(|_| ("invalid_request", "gateway is not an address".to_owned()))?;
        let cap: Amount = req.max_price_per_1k.parse().map_err(|_| {
            (
                "invalid_request",
                "max_price_per_1k is not an amount".to_owned(),
            )
        })?;
        if self.config.price_per_1k > cap {
            return Err((
                "price_above_cap",
                format!(
                    "this miner charges {} per 1k tokens, above the cap {cap}",
                    self.config.price_per_1k
                ),
            ));
        }
        let bytes: usize = req.messages.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_PROMPT_BYTES || req.messages.is_empty() {
            return Err((
                "invalid_request",
                format!("messages must hold 1 to {MAX_PROMPT_BYTES} bytes of content"),
            ));
        }
        let messages: Vec<ChatMessage> = req
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let text = self
            .engine
            .render_chat(&messages)
            .map_err(|e| ("invalid_request", e.to_string()))?;
        let prompt = self
            .engine
            .tokenize(&text)
            .map_err(|e| ("invalid_request", e.to_string()))?;
        Ok((gateway, prompt))
    }

    async fn generate(
        &self,
        stream: &mut agora_p2p::Stream,
        rk: &mut ResponseKey,
        req: &InferRequest,
        gateway: Address,
        prompt: Vec<u32>,
        request_hash: Hash,
    ) -> Result<(), String> {
        let prompt_tokens = prompt.len() as u32;
        let request = GenerateRequest {
            prompt,
            max_tokens: req.max_tokens as usize,
            sampling: Sampling {
                temperature: req.temperature,
                top_p: req.top_p,
                top_k: 0,
                seed: req.seed,
            },
            stop: req.stop.clone(),
            top_logprobs: 0,
        };
        let (tx, mut rx) = mpsc::channel::<String>(256);
        let engine = self.engine.clone();
        let worker = tokio::task::spawn_blocking(move || {
            engine.generate(&request, &mut |t| tx.blocking_send(t.text.clone()).is_ok())
        });
        let mut text = String::new();
        let mut count = 0u32;
        while let Some(piece) = rx.recv().await {
            count += 1;
            text.push_str(&piece);
            if self.config.mode == MinerMode::DieMidStream && count == 3 {
                // Drop everything, as a killed process would.
                drop(rx);
                let _ = worker.await;
                return Err("dying mid-stream on purpose".into());
            }
            if Self::send(stream, rk, &MinerFrame::Token { text: piece })
                .await
                .is_err()
            {
                // The gateway went away: dropping the receiver cancels generation.
                drop(rx);
                let _ = worker.await;
                return Err("gateway went away".into());
            }
        }
        let output = match worker.await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let code = match e {
                    agora_inference::Error::ContextLimit { .. } => "context_limit",
                    agora_inference::Error::InvalidRequest(_) => "invalid_request",
                    agora_inference::Error::Busy { .. } => "busy",
                    _ => "internal",
                };
                let f = MinerFrame::Error {
                    code: code.into(),
                    message: e.to_string(),
                };
                return Self::send(stream, rk, &f).await;
            }
            Err(e) => return Err(e.to_string()),
        };
        let finish_reason = match output.finish {
            agora_inference::FinishReason::Length => "length",
            _ => "stop",
        };
        let receipt = Receipt {
            netuid: self.config.netuid,
            miner: self.key.address(),
            gateway,
            request_hash,
            response_hash: agora_crypto::hash(text.as_bytes()),
            model_hash: self.model_hash,
            prompt_tokens,
            completion_tokens: count,
            price_per_1k_tokens: self.config.price_per_1k,
            nonce: req.receipt_nonce,
            expiry_height: req.expiry_height,
        };
        let bytes = receipt.signing_bytes(&self.config.chain_id);
        let miner_signature = match self.config.mode {
            MinerMode::BadReceiptSignature => Keypair::from_seed(&[0xEE; 32]).sign(&bytes),
            _ => self.key.sign(&bytes),
        };
        let done = MinerFrame::Done {
            finish_reason: finish_reason.to_owned(),
            receipt: to_hex(&agora_codec::encode_to_vec(&receipt)),
            miner_signature: to_hex(&miner_signature),
        };
        Self::send(stream, rk, &done).await?;
        self.served.fetch_add(1, Ordering::Relaxed);
        // The gateway's countersignature makes the receipt payable.
        let reply = tokio::time::timeout(Duration::from_secs(10), read_frame(stream, MAX_FRAME))
            .await
            .map_err(|_| "no countersignature in time".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("stream closed before the countersignature")?;
        let reply = rk.open(&reply, false).map_err(|e| e.to_string())?;
        match serde_json::from_slice::<GatewayFrame>(&reply) {
            Ok(GatewayFrame::Countersign { signature }) => {
                let sig = agora_primitives::from_hex(&signature)
                    .and_then(|s| <[u8; 64]>::try_from(s).ok())
                    .ok_or("countersignature is not 64 bytes of hex")?;
                if agora_crypto::verify(&gateway, &bytes, &sig).is_err() {
                    warn!(%gateway, "countersignature does not verify; receipt dropped");
                    return Err("bad countersignature".into());
                }
                let mut r = match self.receipts.lock() {
                    Ok(r) => r,
                    Err(p) => p.into_inner(),
                };
                if r.len() < MAX_PENDING_RECEIPTS {
                    r.push(SignedReceipt {
                        receipt,
                        miner_signature,
                        gateway_signature: sig,
                    });
                }
                Ok(())
            }
            Ok(GatewayFrame::Refuse { reason }) => {
                info!(%gateway, %reason, "gateway refused the receipt");
                Ok(())
            }
            Err(e) => Err(format!("gateway frame: {e}")),
        }
    }
}
