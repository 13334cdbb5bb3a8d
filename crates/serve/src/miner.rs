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
    ADVERT_TOPIC, Advert, Alternative, GatewayFrame, InferRequest, MAX_FRAME, MAX_PROMPT_BYTES,
    MAX_TOP_LOGPROBS, MinerFrame, PROTOCOL, TokenLogprobs,
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
    /// Serves another model while claiming the registered one (the caller hands it a
    /// perturbed engine; the miner itself behaves honestly).
    WrongModel,
    /// Streams plausible random word tokens instead of running the model.
    Random,
    /// Replays another miner's answer to the most similar prompt it has seen (from the
    /// [`AnswerBoard`]), without running the model.
    Copycat,
    /// Runs the model but sends every token [`SLOW_FACTOR`] times later than it could.
    Slow,
    /// Runs the model but holds every token until the answer is complete, then bursts them.
    Buffer,
    /// Drops about half of its requests (closes the stream without a word).
    Flaky,
}

impl MinerMode {
    /// Every mode with its name, as flags and JSON spell them.
    pub const NAMED: [(&'static str, MinerMode); 9] = [
        ("honest", MinerMode::Honest),
        ("bad-receipt", MinerMode::BadReceiptSignature),
        ("die-mid-stream", MinerMode::DieMidStream),
        ("wrong-model", MinerMode::WrongModel),
        ("random", MinerMode::Random),
        ("copycat", MinerMode::Copycat),
        ("slow", MinerMode::Slow),
        ("buffer", MinerMode::Buffer),
        ("flaky", MinerMode::Flaky),
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("honest", |(n, _)| n)
    }
}

impl std::str::FromStr for MinerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMED.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown miner mode {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How much later than it could a `slow` miner sends each token.
pub const SLOW_FACTOR: u32 = 5;

/// Answers other miners gave, for the `copycat` adversary (in one process: the devnet and
/// tests). Bounded: the oldest answers go first.
#[derive(Debug, Default)]
pub struct AnswerBoard {
    answers: Mutex<std::collections::VecDeque<BoardAnswer>>,
}

#[derive(Clone, Debug)]
struct BoardAnswer {
    words: std::collections::BTreeSet<String>,
    pieces: Vec<(u32, String)>,
    finish: agora_inference::FinishReason,
}

/// Most answers an [`AnswerBoard`] keeps.
pub const BOARD_CAPACITY: usize = 512;

fn words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl AnswerBoard {
    /// An empty board.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<BoardAnswer>> {
        match self.answers.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        }
    }

    fn post(
        &self,
        prompt: &str,
        pieces: Vec<(u32, String)>,
        finish: agora_inference::FinishReason,
    ) {
        let mut a = self.lock();
        if a.len() >= BOARD_CAPACITY {
            a.pop_front();
        }
        a.push_back(BoardAnswer {
            words: words(prompt),
            pieces,
            finish,
        });
    }

    /// The answer to the prompt sharing the most words with `prompt` (Jaccard similarity).
    fn most_similar(&self, prompt: &str) -> Option<BoardAnswer> {
        let mine = words(prompt);
        let a = self.lock();
        let score = |b: &BoardAnswer| {
            let common = b.words.intersection(&mine).count();
            let all = b.words.union(&mine).count().max(1);
            // Compare common/all as fractions without floats: common * 2^20 / all.
            (common << 20) / all
        };
        a.iter().max_by_key(|b| score(b)).cloned()
    }
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
    /// Where honest miners post their answers and `copycat` miners copy them from (optional).
    pub board: Option<Arc<AnswerBoard>>,
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
    /// Word-like token ids (for the `random` adversary), found on first use.
    word_tokens: std::sync::OnceLock<Vec<u32>>,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner")
            .field("hotkey", &self.key.address())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The hash a miner registers and signs receipts with for `engine`'s model: the model file's
/// BLAKE3 (or, for an engine whose hash is not one, such as the tiny test engine, the BLAKE3 of
/// what it reports).
pub fn model_hash(engine: &dyn Engine) -> Hash {
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
            word_tokens: std::sync::OnceLock::new(),
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
            numerics: info.numerics,
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
        if self.config.mode == MinerMode::Flaky && request_hash.0[0] & 1 == 1 {
            // Drop it on the floor: the stream closes without a word.
            return Err("dropping this request on purpose (flaky)".into());
        }
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
        if req.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err((
                "invalid_request",
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
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

    /// Word-like tokens (a space then three or more ASCII letters) of the vocabulary.
    fn word_tokens(&self) -> &[u32] {
        self.word_tokens.get_or_init(|| {
            (0..self.engine.info().vocab_size as u32)
                .filter(|&id| {
                    self.engine.detokenize(&[id]).is_ok_and(|t| {
                        t.len() >= 4
                            && t.starts_with(' ')
                            && t[1..].bytes().all(|b| b.is_ascii_alphabetic())
                    })
                })
                .collect()
        })
    }

    /// What an adversary that does not run the model sends instead: `None` for modes that run
    /// the engine.
    fn canned(
        &self,
        req: &InferRequest,
        request_hash: &Hash,
    ) -> Option<(Vec<(u32, String)>, agora_inference::FinishReason)> {
        match self.config.mode {
            MinerMode::Random => {
                let words = self.word_tokens();
                if words.is_empty() {
                    return Some((Vec::new(), agora_inference::FinishReason::Stop));
                }
                let pieces = (0..req.max_tokens)
                    .map(|i| {
                        let h =
                            agora_crypto::hash(&[&request_hash.0[..], &i.to_le_bytes()].concat());
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&h.0[..8]);
                        let id = words[(u64::from_le_bytes(b) % words.len() as u64) as usize];
                        (id, self.engine.detokenize(&[id]).unwrap_or_default())
                    })
                    .collect();
                Some((pieces, agora_inference::FinishReason::Length))
            }
            MinerMode::Copycat => {
                let prompt = req
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map_or("", |m| m.content.as_str());
                let copied = self
                    .config
                    .board
                    .as_ref()
                    .and_then(|b| b.most_similar(prompt));
                Some(match copied {
                    Some(a) => {
                        let mut pieces = a.pieces;
                        let max = req.max_tokens as usize;
                        let finish = if pieces.len() > max {
                            pieces.truncate(max);
                            agora_inference::FinishReason::Length
                        } else {
                            a.finish
                        };
                        (pieces, finish)
                    }
                    None => {
                        let text = "I am not sure.";
                        let ids = self.engine.tokenize(text).unwrap_or_default();
                        let pieces = ids
                            .iter()
                            .map(|&id| (id, self.engine.detokenize(&[id]).unwrap_or_default()))
                            .collect();
                        (pieces, agora_inference::FinishReason::Stop)
                    }
                })
            }
            _ => None,
        }
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
            logprobs: req.logprobs.is_some(),
            top_logprobs: usize::from(req.logprobs.unwrap_or(0)),
        };
        let want = req.logprobs.is_some();
        // Each piece carries its log-probabilities when asked, and the moment it was ready
        // (the `slow` adversary paces by it).
        let (tx, mut rx) = mpsc::channel::<(u32, String, Option<TokenLogprobs>, Duration)>(256);
        let started = std::time::Instant::now();
        let worker: tokio::task::JoinHandle<
            Result<agora_inference::FinishReason, agora_inference::Error>,
        > = match self.canned(req, &request_hash) {
            Some((pieces, finish)) => {
                // Adversaries that do not run the model make their log-probabilities up.
                let made_up: Vec<Option<TokenLogprobs>> = pieces
                    .iter()
                    .map(|(id, _)| {
                        want.then(|| TokenLogprobs {
                            bytes: self.engine.token_bytes(*id).unwrap_or_default(),
                            logprob: 0.0,
                            top: Vec::new(),
                        })
                    })
                    .collect();
                tokio::spawn(async move {
                    for ((id, text), logprobs) in pieces.into_iter().zip(made_up) {
                        if tx
                            .send((id, text, logprobs, started.elapsed()))
                            .await
                            .is_err()
                        {
                            return Ok(agora_inference::FinishReason::Cancelled);
                        }
                    }
                    Ok(finish)
                })
            }
            None => {
                let engine = self.engine.clone();
                tokio::task::spawn_blocking(move || {
                    let e = engine.as_ref();
                    engine
                        .generate(&request, &mut |t| {
                            let logprobs = want.then(|| logprobs_of(e, t));
                            tx.blocking_send((t.id, t.text.clone(), logprobs, started.elapsed()))
                                .is_ok()
                        })
                        .map(|o| o.finish)
                })
            }
        };
        let mut text = String::new();
        let mut pieces: Vec<(u32, String)> = Vec::new();
        let mut held: Vec<MinerFrame> = Vec::new();
        let clock = tokio::time::Instant::from_std(started);
        while let Some((id, piece, logprobs, ready)) = rx.recv().await {
            text.push_str(&piece);
            pieces.push((id, piece.clone()));
            let count = pieces.len();
            if self.config.mode == MinerMode::DieMidStream && count == 3 {
                // Drop everything, as a killed process would.
                drop(rx);
                let _ = worker.await;
                return Err("dying mid-stream on purpose".into());
            }
            let frame = MinerFrame::Token {
                text: piece,
                id,
                logprobs,
            };
            match self.config.mode {
                MinerMode::Buffer => {
                    held.push(frame);
                    continue;
                }
                MinerMode::Slow => {
                    // Send at SLOW_FACTOR times the moment it was ready.
                    tokio::time::sleep_until(clock + ready * SLOW_FACTOR).await;
                }
                _ => {}
            }
            if Self::send(stream, rk, &frame).await.is_err() {
                // The gateway went away: dropping the receiver cancels generation.
                drop(rx);
                let _ = worker.await;
                return Err("gateway went away".into());
            }
        }
        for frame in held {
            Self::send(stream, rk, &frame).await?;
        }
        let count = pieces.len() as u32;
        let finish = match worker.await {
            Ok(Ok(f)) => f,
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
        let finish_reason = match finish {
            agora_inference::FinishReason::Length => "length",
            _ => "stop",
        };
        if self.config.mode == MinerMode::Honest
            && let Some(board) = &self.config.board
            && let Some(user) = req.messages.iter().rev().find(|m| m.role == "user")
        {
            board.post(&user.content, pieces, finish);
        }
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

/// A generated token's log-probabilities as a token frame carries them (the request asked, so
/// the engine reported them; one that did not is sent as [`LOGPROB_FLOOR`], which no checked
/// answer passes with).
fn logprobs_of(engine: &dyn Engine, t: &agora_inference::TokenEvent) -> TokenLogprobs {
    TokenLogprobs {
        bytes: engine.token_bytes(t.id).unwrap_or_default(),
        logprob: TokenLogprobs::sendable(t.logprob.unwrap_or(f32::NEG_INFINITY)),
        top: t
            .top
            .iter()
            .map(|&(id, logprob)| Alternative {
                id,
                bytes: engine.token_bytes(id).unwrap_or_default(),
                logprob: TokenLogprobs::sendable(logprob),
            })
            .collect(),
    }
}
