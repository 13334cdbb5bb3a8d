//! The gateway: picks a miner, seals the request to it, streams the answer back, checks and
//! countersigns the receipt.
//!
//! Miner choice: among miners registered on the subnet (the metagraph, once the chain is known)
//! whose signed advert is fresh (under 60 s), which charge at most the price cap, are not at
//! capacity and are not penalised, the gateway draws one at random with weight
//! `(incentive + 0.1) / (price + 1) / (latency_ms + 50)` (`latency_ms` is a moving average of
//! time to first token; unknown counts as 500 ms). A failure before the first
//! token (no stream, `busy`, timeout) tries another miner, up to three; a miner that fails is
//! skipped for 30 s. A bad receipt signature is refused, reported to the p2p layer and the
//! miner is skipped for 10 minutes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_crypto::Keypair;
use agora_p2p::{Misbehaviour, P2p, PeerId, read_frame, write_frame};
use agora_primitives::{Address, Amount, Receipt, to_hex};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::protocol::{
    Advert, Expected, GatewayFrame, InferRequest, MAX_FRAME, Message, MinerFrame, PROTOCOL,
    TokenLogprobs, check_receipt,
};
use crate::seal::seal_request;

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Subnet routed to.
    pub netuid: u16,
    /// Chain id (receipts are bound to it).
    pub chain_id: String,
    /// Default price cap per 1k tokens (a request may lower it).
    pub max_price_per_1k: Amount,
    /// How long to wait for a miner's first token.
    pub first_token_timeout: Duration,
    /// How long a whole answer may take.
    pub request_timeout: Duration,
    /// Receipts expire this many blocks after the current height.
    pub receipt_ttl_blocks: u64,
    /// Miners tried per request.
    pub max_attempts: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            netuid: 1,
            chain_id: String::new(),
            max_price_per_1k: Amount::agora(1),
            first_token_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            receipt_ttl_blocks: 10_000,
            max_attempts: 3,
        }
    }
}

/// A chat request as the gateway receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: f32,
    /// Seed.
    pub seed: u64,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Price cap for this request (at most the gateway's).
    pub max_price_per_1k: Option<Amount>,
    /// Log-probabilities wanted: `None`, none; `Some(n)`, each token's and its `n` most likely
    /// alternatives' (at most [`crate::protocol::MAX_TOP_LOGPROBS`]).
    pub logprobs: Option<u8>,
}

/// A finished answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The text as the client gets it: cut where the first stop sequence begins. (Without stop
    /// sequences, as in a validator's challenges, it is the text of `tokens`, as
    /// `agora_inference::complete_text` spells their bytes; the receipt's response hash covers
    /// the miner's whole text.)
    pub text: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Prompt tokens (the miner's count, in its receipt).
    pub prompt_tokens: u32,
    /// Completion tokens (counted here).
    pub completion_tokens: u32,
    /// The miner that answered.
    pub miner: Address,
    /// The receipt, if it was countersigned.
    pub receipt: Option<Receipt>,
    /// The token ids, as the miner sent them.
    pub tokens: Vec<u32>,
    /// When each token arrived, counted from the moment the request was sent.
    pub arrivals: Vec<Duration>,
    /// The engine numerics version the miner advertised when it was asked (0: not said).
    pub numerics: u32,
    /// Each token's log-probabilities as the miner sent them, when the request asked (the
    /// miner's claim; subnet validators check it in the challenges that ask).
    pub logprobs: Option<Vec<TokenLogprobs>>,
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// No healthy miner is known for the subnet at this price.
    #[error("no healthy miner serves subnet {0} at this price right now")]
    NoMiners(u16),
    /// Every miner is at capacity.
    #[error("every miner is busy; retry shortly")]
    Busy,
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The miner failed after the answer had started (the client saw part of it).
    #[error("the miner failed mid-answer: {0}")]
    MidStream(String),
    /// Every attempt failed.
    #[error("no miner could answer: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug)]
struct MinerEntry {
    advert: Advert,
    peer: PeerId,
    hotkey: Address,
    hpke: [u8; 32],
    price: Amount,
    seen: Instant,
    latency_ms: u64,
    skip_until: Option<Instant>,
    busy_until: Option<Instant>,
    inflight: u32,
}

/// The gateway.
pub struct Gateway {
    p2p: P2p,
    key: Arc<Keypair>,
    config: GatewayConfig,
    miners: Mutex<BTreeMap<Address, MinerEntry>>,
    /// Registered miners of the subnet with their incentive (`u16` proportion); `None` until
    /// the chain is known (then adverts alone decide).
    metagraph: Mutex<Option<BTreeMap<Address, u16>>>,
    height: AtomicU64,
    nonce: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("account", &self.key.address())
            .finish_non_exhaustive()
    }
}

/// One step of an answer, for streaming.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// A generated token: the text it adds (empty while a UTF-8 character is incomplete, or
    /// while it could be the start of a stop sequence) and, when the request asked, its
    /// log-probabilities.
    Token {
        /// Text.
        text: String,
        /// Log-probabilities.
        logprobs: Option<TokenLogprobs>,
    },
    /// Text held back because it could have begun a stop sequence, released when the answer
    /// ended without one.
    Text(String),
}

/// The answer's text as the client gets it: cut where the first stop sequence begins (the stop
/// sequence itself left out, as OpenAI's API does). The miner stops generating at a stop
/// sequence but sends the whole token that completed it; text that could be the start of a
/// stop sequence is held back until the next piece or the end decides.
#[derive(Debug)]
struct StopCut<'a> {
    stops: &'a [String],
    text: String,
    /// Bytes of `text` passed on.
    sent: usize,
    /// A stop sequence was found: nothing more is passed on.
    cut: bool,
}

impl<'a> StopCut<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            text: String::new(),
            sent: 0,
            cut: false,
        }
    }

    /// Add a piece; the text that may go to the client now.
    fn push(&mut self, piece: &str) -> String {
        if self.cut {
            return String::new();
        }
        self.text.push_str(piece);
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A stop sequence can only begin in text not yet passed on (held text included).
        let from = self.sent.min(self.text.len());
        if let Some(at) = agora_inference::first_stop(&self.text, self.stops, from) {
            self.cut = true;
            let out = self.text[from..at].to_owned();
            self.text.truncate(at);
            self.sent = at;
            return out;
        }
        // Hold back the longest end of the text that is the start of a stop sequence.
        let unsent = self.text.len() - from;
        let hold = (1..longest.min(unsent + 1))
            .rev()
            .find(|&k| {
                let start = self.text.len() - k;
                self.text.is_char_boundary(start)
                    && self
                        .stops
                        .iter()
                        .any(|s| s.len() > k && s.as_bytes()[..k] == self.text.as_bytes()[start..])
            })
            .unwrap_or(0);
        let until = self.text.len() - hold;
        let out = self.text[from..until].to_owned();
        self.sent = until;
        out
    }

    /// The answer ended: the held text, if no stop sequence cut it.
    fn finish(&mut self) -> String {
        let from = self.sent.min(self.text.len());
        let out = self.text[from..].to_owned();
        self.sent = self.text.len();
        out
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

impl Gateway {
    /// A gateway paying from `key`'s escrow.
    pub fn new(p2p: P2p, key: Arc<Keypair>, config: GatewayConfig) -> Arc<Self> {
        Arc::new(Self {
            p2p,
            key,
            config,
            miners: Mutex::new(BTreeMap::new()),
            metagraph: Mutex::new(None),
            height: AtomicU64::new(0),
            nonce: AtomicU64::new(random_u64()),
        })
    }

    /// The paying account.
    pub fn account(&self) -> Address {
        self.key.address()
    }

    /// The gateway's settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Tell the gateway which hotkeys are registered miners of its subnet, with their incentive:
    /// only those are routed to, with weight growing with incentive.
    pub fn set_metagraph(&self, miners: BTreeMap<Address, u16>) {
        match self.metagraph.lock() {
            Ok(mut m) => *m = Some(miners),
            Err(p) => *p.into_inner() = Some(miners),
        }
    }

    /// Tell the gateway the chain's height (receipt expiry counts from it).
    pub fn set_height(&self, height: u64) {
        self.height.store(height, Ordering::Relaxed);
    }

    fn miners(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, MinerEntry>> {
        match self.miners.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Model names offered by fresh miners.
    pub fn models(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .miners()
            .values()
            .filter(|m| m.seen.elapsed() < Duration::from_secs(60))
            .map(|m| m.advert.model.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Miners a request could go to now: registered (once the metagraph is known) and with a
    /// fresh advert.
    pub fn routable_miners(&self) -> usize {
        let metagraph = match self.metagraph.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        self.miners()
            .values()
            .filter(|m| m.seen.elapsed() < Duration::from_secs(60))
            .filter(|m| metagraph.as_ref().is_none_or(|g| g.contains_key(&m.hotkey)))
            .count()
    }

    /// Peers this gateway's swarm holds a connection to (empty if the swarm has stopped).
    pub async fn connected_peers(&self) -> Vec<agora_p2p::PeerId> {
        self.p2p.peers().await.unwrap_or_default()
    }

    /// Dial a miner's published serve address (so its adverts reach this gateway).
    pub async fn dial(&self, address: &str) {
        if let Ok(addr) = address.parse() {
            let _ = self.p2p.dial(addr).await;
        }
    }

    /// Whether `miner`'s advert is fresh here (so a request can go to it).
    pub fn knows(&self, miner: &Address) -> bool {
        self.miners()
            .get(miner)
            .is_some_and(|m| m.seen.elapsed() < Duration::from_secs(60))
    }

    /// Miners known now (hotkeys).
    pub fn known_miners(&self) -> Vec<Address> {
        self.miners().keys().copied().collect()
    }

    /// Take in a gossiped advert; a bad signature is reported as misbehaviour of `from`.
    pub fn on_advert(&self, from: PeerId, data: &[u8]) {
        let Ok(advert) = serde_json::from_slice::<Advert>(data) else {
            self.p2p.report(from, Misbehaviour::Malformed);
            return;
        };
        if !advert.verify() {
            self.p2p.report(from, Misbehaviour::BadSignature);
            return;
        }
        if advert.netuid != self.config.netuid {
            return;
        }
        let (Ok(hotkey), Ok(peer), Some(hpke), Ok(price)) = (
            advert.hotkey.parse::<Address>(),
            advert.peer_id.parse::<PeerId>(),
            agora_primitives::from_hex(&advert.hpke_key).and_then(|k| <[u8; 32]>::try_from(k).ok()),
            advert.price_per_1k.parse::<Amount>(),
        ) else {
            self.p2p.report(from, Misbehaviour::Malformed);
            return;
        };
        let mut miners = self.miners();
        let entry = miners.entry(hotkey).or_insert(MinerEntry {
            advert: advert.clone(),
            peer,
            hotkey,
            hpke,
            price,
            seen: Instant::now(),
            latency_ms: 500,
            skip_until: None,
            busy_until: None,
            inflight: 0,
        });
        if advert.time_ms >= entry.advert.time_ms {
            entry.advert = advert;
            entry.peer = peer;
            entry.hpke = hpke;
            entry.price = price;
            entry.seen = Instant::now();
        }
    }

    fn pick(&self, cap: Amount, tried: &[Address]) -> Result<MinerEntry, GatewayError> {
        let now = Instant::now();
        let metagraph = match self.metagraph.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let incentive = |m: &MinerEntry| -> Option<u16> {
            match &metagraph {
                None => Some(0),
                Some(g) => g.get(&m.hotkey).copied(),
            }
        };
        let mut miners = self.miners();
        let healthy: Vec<&MinerEntry> = miners
            .values()
            .filter(|m| incentive(m).is_some())
            .filter(|m| now.duration_since(m.seen) < Duration::from_secs(60))
            .filter(|m| m.price <= cap)
            .filter(|m| !tried.contains(&m.hotkey))
            .filter(|m| m.skip_until.is_none_or(|t| t <= now))
            .collect();
        let any_healthy = !healthy.is_empty();
        let candidates: Vec<&MinerEntry> = healthy
            .into_iter()
            .filter(|m| m.busy_until.is_none_or(|t| t <= now))
            .filter(|m| m.advert.load + m.inflight < m.advert.capacity.max(1))
            .collect();
        if candidates.is_empty() {
            return Err(if any_healthy {
                GatewayError::Busy
            } else {
                GatewayError::NoMiners(self.config.netuid)
            });
        }
        // Weight (incentive + 10%) / ((price + 1) * (latency + 50)), drawn with 64-bit
        // randomness; a new miner (no incentive yet) still gets a tenth of a top miner's share.
        let weights: Vec<u128> = candidates
            .iter()
            .map(|m| {
                let denom = (m.price.0 / 1_000 + 1) * u128::from(m.latency_ms + 50);
                let boost = u128::from(incentive(m).unwrap_or(0)) + 6_554;
                (boost << 48) / denom.max(1)
            })
            .collect();
        let total: u128 = weights.iter().sum();
        let mut draw = u128::from(random_u64()) % total.max(1);
        let mut chosen = candidates[0].hotkey;
        for (m, w) in candidates.iter().zip(&weights) {
            if draw < *w {
                chosen = m.hotkey;
                break;
            }
            draw -= w;
        }
        let entry = miners
            .get_mut(&chosen)
            .ok_or(GatewayError::NoMiners(self.config.netuid))?;
        entry.inflight += 1;
        Ok(entry.clone())
    }

    fn finish_attempt(&self, hotkey: &Address, outcome: Outcome) {
        let mut miners = self.miners();
        if let Some(m) = miners.get_mut(hotkey) {
            m.inflight = m.inflight.saturating_sub(1);
            match outcome {
                Outcome::Answered(latency_ms) => {
                    m.latency_ms = (m.latency_ms * 3 + latency_ms) / 4;
                }
                Outcome::Busy => m.busy_until = Some(Instant::now() + Duration::from_millis(200)),
                Outcome::Failed => m.skip_until = Some(Instant::now() + Duration::from_secs(30)),
            }
        }
    }

    /// Answer a chat request; text pieces go to `pieces` as they arrive (if given).
    pub async fn complete(
        &self,
        request: &ChatRequest,
        pieces: Option<mpsc::Sender<Piece>>,
    ) -> Result<Completion, GatewayError> {
        if request.messages.is_empty() {
            return Err(GatewayError::Invalid("messages must not be empty".into()));
        }
        let cap = request
            .max_price_per_1k
            .map_or(self.config.max_price_per_1k, |c| {
                c.min(self.config.max_price_per_1k)
            });
        let mut tried = Vec::new();
        let mut last_error = String::new();
        for _ in 0..self.config.max_attempts.max(1) {
            let miner = match self.pick(cap, &tried) {
                Ok(m) => m,
                Err(e) if tried.is_empty() => return Err(e),
                Err(GatewayError::Busy) if last_error.is_empty() => return Err(GatewayError::Busy),
                Err(_) => break,
            };
            tried.push(miner.hotkey);
            match self.attempt(&miner, request, cap, pieces.clone()).await {
                Ok((completion, latency)) => {
                    self.finish_attempt(&miner.hotkey, Outcome::Answered(latency));
                    return Ok(completion);
                }
                Err(Attempt::Retry(reason, busy)) => {
                    debug!(miner = %miner.hotkey, %reason, "trying another miner");
                    let outcome = if busy { Outcome::Busy } else { Outcome::Failed };
                    self.finish_attempt(&miner.hotkey, outcome);
                    last_error = reason;
                }
                Err(Attempt::ClientGone) => {
                    self.finish_attempt(&miner.hotkey, Outcome::Answered(500));
                    return Err(GatewayError::MidStream("the client went away".into()));
                }
                Err(Attempt::Fatal(e)) => {
                    let outcome = match e {
                        // The client's own fault or its going away says nothing of the miner.
                        GatewayError::Invalid(_) => Outcome::Answered(500),
                        _ => Outcome::Failed,
                    };
                    self.finish_attempt(&miner.hotkey, outcome);
                    return Err(e);
                }
            }
        }
        if last_error.contains("busy") {
            return Err(GatewayError::Busy);
        }
        Err(GatewayError::Unavailable(last_error))
    }

    /// Send `request` to one chosen miner (registered or not, if its advert is fresh), with no
    /// retry: what a subnet validator does with its challenges. The miner cannot tell it from
    /// any other request; it is paid like any other.
    pub async fn complete_with(
        &self,
        miner: &Address,
        request: &ChatRequest,
    ) -> Result<Completion, GatewayError> {
        let entry = {
            let mut miners = self.miners();
            let entry = miners
                .get_mut(miner)
                .filter(|m| m.seen.elapsed() < Duration::from_secs(60))
                .ok_or(GatewayError::NoMiners(self.config.netuid))?;
            entry.inflight += 1;
            entry.clone()
        };
        let cap = self.config.max_price_per_1k;
        match self.attempt(&entry, request, cap, None).await {
            Ok((completion, latency)) => {
                self.finish_attempt(miner, Outcome::Answered(latency));
                Ok(completion)
            }
            Err(Attempt::Retry(reason, busy)) => {
                self.finish_attempt(miner, if busy { Outcome::Busy } else { Outcome::Failed });
                Err(if busy {
                    GatewayError::Busy
                } else {
                    GatewayError::Unavailable(reason)
                })
            }
            Err(Attempt::Fatal(e)) => {
                self.finish_attempt(miner, Outcome::Failed);
                Err(e)
            }
            Err(Attempt::ClientGone) => {
                self.finish_attempt(miner, Outcome::Answered(500));
                Err(GatewayError::MidStream("cancelled".into()))
            }
        }
    }

    async fn attempt(
        &self,
        miner: &MinerEntry,
        request: &ChatRequest,
        cap: Amount,
        pieces: Option<mpsc::Sender<Piece>>,
    ) -> Result<(Completion, u64), Attempt> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let infer = InferRequest {
            messages: request.messages.clone(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
            stop: request.stop.clone(),
            gateway: self.key.address().to_string(),
            receipt_nonce: nonce,
            expiry_height: self.height.load(Ordering::Relaxed) + self.config.receipt_ttl_blocks,
            max_price_per_1k: cap.to_string(),
            logprobs: request.logprobs,
        };
        let plaintext = serde_json::to_vec(&infer)
            .map_err(|e| Attempt::Fatal(GatewayError::Invalid(e.to_string())))?;
        let request_hash = agora_crypto::hash(&plaintext);
        let (enc, ciphertext, mut rk) = seal_request(&miner.hpke, &plaintext)
            .map_err(|e| Attempt::Retry(e.to_string(), false))?;
        let started = Instant::now();
        let mut stream = tokio::time::timeout(
            self.config.first_token_timeout,
            self.p2p.open_stream(miner.peer, PROTOCOL),
        )
        .await
        .map_err(|_| Attempt::Retry("no stream in time".into(), false))?
        .map_err(|e| Attempt::Retry(e.to_string(), false))?;
        let mut frame = enc.to_vec();
        frame.extend_from_slice(&ciphertext);
        write_frame(&mut stream, &frame)
            .await
            .map_err(|e| Attempt::Retry(e.to_string(), false))?;
        // The miner's text (its receipt hashes it) and the client's (cut at a stop sequence).
        let mut text = String::new();
        let mut shown = String::new();
        let mut cut = StopCut::new(&request.stop);
        let mut count = 0u32;
        let mut latency = None;
        let mut tokens = Vec::new();
        let mut arrivals = Vec::new();
        let mut logprobs_seen = Vec::new();
        let deadline = started + self.config.request_timeout;
        loop {
            let wait = if count == 0 {
                self.config.first_token_timeout
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let read = tokio::time::timeout(wait, read_frame(&mut stream, MAX_FRAME)).await;
            let failed = |reason: String| {
                if count == 0 {
                    Attempt::Retry(reason, false)
                } else {
                    Attempt::Fatal(GatewayError::MidStream(reason))
                }
            };
            let bytes = match read {
                Err(_) => return Err(failed("timed out".into())),
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Ok(Ok(None)) => return Err(failed("the miner closed the stream".into())),
                Ok(Ok(Some(b))) => b,
            };
            let plain = rk.open(&bytes, true).map_err(|e| failed(e.to_string()))?;
            let frame: MinerFrame =
                serde_json::from_slice(&plain).map_err(|e| failed(format!("miner frame: {e}")))?;
            match frame {
                MinerFrame::Token {
                    text: piece,
                    id,
                    logprobs,
                } => {
                    // Asked for, they come with every token, with no more alternatives than
                    // asked; not asked for, they are dropped.
                    let logprobs = match (request.logprobs, logprobs) {
                        (None, _) => None,
                        (Some(n), Some(l)) if l.top.len() <= usize::from(n) => Some(l),
                        (Some(_), _) => {
                            return Err(failed(
                                "the miner's token came without the log-probabilities asked \
                                 for, or with more alternatives than asked"
                                    .into(),
                            ));
                        }
                    };
                    if count == 0 {
                        latency = Some(started.elapsed().as_millis() as u64);
                    }
                    count += 1;
                    tokens.push(id);
                    arrivals.push(started.elapsed());
                    text.push_str(&piece);
                    let visible = cut.push(&piece);
                    shown.push_str(&visible);
                    if let Some(l) = &logprobs {
                        logprobs_seen.push(l.clone());
                    }
                    if let Some(p) = &pieces {
                        // A client that went away cancels the request.
                        let piece = Piece::Token {
                            text: visible,
                            logprobs,
                        };
                        if p.send(piece).await.is_err() {
                            return Err(Attempt::ClientGone);
                        }
                    }
                }
                MinerFrame::Error { code, message } => {
                    if count == 0 && code != "invalid_request" && code != "context_limit" {
                        return Err(Attempt::Retry(format!("{code}: {message}"), code == "busy"));
                    }
                    if count == 0 {
                        return Err(Attempt::Fatal(GatewayError::Invalid(message)));
                    }
                    return Err(Attempt::Fatal(GatewayError::MidStream(message)));
                }
                MinerFrame::Done {
                    finish_reason,
                    receipt,
                    miner_signature,
                } => {
                    let expected = Expected {
                        gateway: self.key.address(),
                        miner: miner.hotkey,
                        request_hash,
                        response_hash: agora_crypto::hash(text.as_bytes()),
                        completion_tokens: count,
                        max_price: cap,
                        nonce,
                    };
                    let decision = self.judge(&receipt, &miner_signature, &expected);
                    let (reply, receipt) = match decision {
                        Ok((r, bytes)) => (
                            GatewayFrame::Countersign {
                                signature: to_hex(&self.key.sign(&bytes)),
                            },
                            Some(r),
                        ),
                        Err(reason) => {
                            warn!(miner = %miner.hotkey, %reason, "refusing a receipt; miner penalised");
                            self.p2p.report(miner.peer, Misbehaviour::BadSignature);
                            if let Some(m) = self.miners().get_mut(&miner.hotkey) {
                                m.skip_until = Some(Instant::now() + Duration::from_secs(600));
                            }
                            (GatewayFrame::Refuse { reason }, None)
                        }
                    };
                    if let Ok(bytes) = serde_json::to_vec(&reply) {
                        let _ = write_frame(&mut stream, &rk.seal(&bytes, false)).await;
                    }
                    let prompt_tokens = receipt.as_ref().map_or(0, |r| r.prompt_tokens);
                    let held = cut.finish();
                    if !held.is_empty() {
                        shown.push_str(&held);
                        if let Some(p) = &pieces
                            && p.send(Piece::Text(held)).await.is_err()
                        {
                            return Err(Attempt::ClientGone);
                        }
                    }
                    return Ok((
                        Completion {
                            text: shown,
                            finish_reason,
                            prompt_tokens,
                            completion_tokens: count,
                            miner: miner.hotkey,
                            receipt,
                            tokens,
                            arrivals,
                            numerics: miner.advert.numerics,
                            logprobs: request.logprobs.map(|_| logprobs_seen),
                        },
                        latency.unwrap_or_else(|| started.elapsed().as_millis() as u64),
                    ));
                }
            }
        }
    }

    fn judge(
        &self,
        receipt_hex: &str,
        signature_hex: &str,
        expected: &Expected,
    ) -> Result<(Receipt, Vec<u8>), String> {
        let bytes = agora_primitives::from_hex(receipt_hex).ok_or("receipt is not hex")?;
        let receipt: Receipt =
            agora_codec::decode_exact(&bytes).map_err(|e| format!("receipt: {e}"))?;
        let sig = agora_primitives::from_hex(signature_hex)
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .ok_or("miner signature is not 64 bytes of hex")?;
        let signing = receipt.signing_bytes(&self.config.chain_id);
        agora_crypto::verify(&expected.miner, &signing, &sig)
            .map_err(|_| "the miner's receipt signature does not verify".to_owned())?;
        check_receipt(&receipt, expected)?;
        Ok((receipt, signing))
    }
}

enum Outcome {
    /// Answered; time to first token in milliseconds.
    Answered(u64),
    /// Said it is at capacity (skipped for 200 ms).
    Busy,
    /// Failed (skipped for 30 s).
    Failed,
}

enum Attempt {
    /// Failed before any token: another miner may answer (the flag: it said `busy`).
    Retry(String, bool),
    /// Failed in a way another miner cannot fix.
    Fatal(GatewayError),
    /// The client stopped reading (dropping the stream cancels the miner's work).
    ClientGone,
}

#[cfg(test)]
mod tests {
    use super::StopCut;

    /// Pieces through a cut: what the client got piece by piece, and in all.
    fn through(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut cut = StopCut::new(&stops);
        let mut out: Vec<String> = pieces.iter().map(|p| cut.push(p)).collect();
        out.push(cut.finish());
        let all = out.concat();
        (out, all)
    }

    #[test]
    fn the_stop_sequence_and_what_follows_it_are_left_out() {
        // Inside one token, with text after it in the same token.
        assert_eq!(through(&["5"], &["1, 2, ", "3, 4, 5, 6"]).1, "1, 2, 3, 4, ");
        // Across tokens: "EN" held until "D" completes "END".
        let (pieces, all) = through(&["END"], &["the ", "EN", "D of it"]);
        assert_eq!(all, "the ");
        assert_eq!(pieces, ["the ", "", "", ""]);
        // The earliest of several.
        assert_eq!(through(&["b", "a"], &["xxab"]).1, "xx");
        // Nothing after a cut, even if more pieces come.
        assert_eq!(through(&["."], &["Paris.", " More"]).1, "Paris");
    }

    #[test]
    fn text_that_only_looked_like_a_stop_is_released() {
        // "EN" is held, then turns out not to be "END": released with the next piece.
        let (pieces, all) = through(&["END"], &["the EN", "TRY"]);
        assert_eq!(pieces, ["the ", "ENTRY", ""]);
        assert_eq!(all, "the ENTRY");
        // Held at the end of the answer: released by `finish`.
        let (pieces, all) = through(&["END"], &["the E"]);
        assert_eq!(pieces, ["the ", "E"]);
        assert_eq!(all, "the E");
        // No stop sequences: every piece as it came.
        let (pieces, all) = through(&[], &["a", "é", "b"]);
        assert_eq!(pieces, ["a", "é", "b", ""]);
        assert_eq!(all, "aéb");
        // An empty stop string stops nothing.
        assert_eq!(through(&[""], &["abc"]).1, "abc");
    }

    #[test]
    fn multibyte_text_is_held_and_cut_on_character_boundaries() {
        assert_eq!(through(&["é!"], &["caf", "é", "!"]).1, "caf");
        assert_eq!(through(&["é!"], &["café", " ok"]).1, "café ok");
        assert_eq!(through(&["→"], &["a→b"]).1, "a");
    }
}
