//! The inference engine interface: generate, score, tokenize; model files and their fetching.
//!
//! Stability: the trait is used by miners and validators; the candle engine implements it in
//! `agora-inference-candle`.
//!
//! # Design
//! An [`Engine`] turns chat messages into a prompt (the model's own chat template), tokenizes,
//! generates a token stream (greedy or seeded sampling, stop sequences, a token budget, the end
//! of sequence), and scores a given continuation in one forward pass (what validators use to
//! verify a miner's answer). [`TinyEngine`] is a deterministic stand-in for unit tests of other
//! crates; tests of the real path use the real model. [`model`] fetches and verifies the model
//! file.
//!
//! Inference is not consensus-visible: floats are allowed here (the crate allows
//! `clippy::float_arithmetic`), but greedy output must not depend on thread count.
//!
//! # Example
//! ```
//! use agora_inference::{Engine, GenerateRequest, TinyEngine};
//! let engine = TinyEngine::new();
//! let prompt = engine.tokenize("hello").unwrap();
//! let out = engine.generate(&GenerateRequest::greedy(prompt, 5), &mut |_| true).unwrap();
//! assert_eq!(out.tokens.len(), 5);
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::float_arithmetic)] // Not consensus-visible: logits and probabilities are floats.

pub mod model;
pub mod scheduler;
mod tiny;

pub use tiny::TinyEngine;

/// The text of generated `bytes` as generation streams it, and how many of the bytes it
/// covers: every complete character, each invalid sequence as one U+FFFD (exactly as
/// `String::from_utf8_lossy` replaces them), and an incomplete character at the end left out,
/// since the next token may complete it. A token can end inside a character (byte-level BPE),
/// so a generation's text is this function of its tokens' bytes: engines emit it piece by
/// piece (each call continuing from the bytes the last one covered gives the same text as one
/// call over them all), and validators check an answer's text against it. A generation that
/// ends inside a character leaves that character out.
pub fn complete_text(bytes: &[u8]) -> (String, usize) {
    let mut text = String::new();
    let mut at = 0;
    while at < bytes.len() {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(s) => {
                text.push_str(s);
                at = bytes.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                text.push_str(&String::from_utf8_lossy(&bytes[at..at + good]));
                at += good;
                match e.error_len() {
                    Some(n) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        at += n;
                    }
                    // Incomplete: the next bytes may complete it.
                    None => break,
                }
            }
        }
    }
    (text, at)
}

/// Where the first of `stops` begins in `text`, looking at or after byte `from` (moved back to
/// a character boundary); empty stop strings stop nothing. Generation cuts its text there
/// ([`GenerateRequest::stop`]), and a gateway the text it shows its client.
pub fn first_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    let from = (0..=from.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|at| from + at))
        .min()
}

/// Why inference failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file is missing.
    #[error("model file not found at {0}; run \"agora model fetch\"")]
    ModelMissing(std::path::PathBuf),
    /// The model file does not load.
    #[error("model file {path} is unusable: {reason}")]
    ModelInvalid {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The prompt plus the requested tokens exceed the context window.
    #[error(
        "context limit: {needed} tokens needed but the model's context is {limit}; shorten the prompt or lower max_tokens"
    )]
    ContextLimit {
        /// Tokens needed.
        needed: usize,
        /// The model's context length.
        limit: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {0} is not in the vocabulary")]
    UnknownToken(u32),
    /// Invalid sampling parameters.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The engine is at capacity.
    #[error("busy: {queued} requests are waiting (limit {limit}); retry later")]
    Busy {
        /// Requests waiting.
        queued: usize,
        /// The queue limit.
        limit: usize,
    },
    /// A backend failure.
    #[error("inference backend: {0}")]
    Backend(String),
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: usize,
    /// Seed of the sampler (sampling is deterministic for a given seed).
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }

    /// True when decoding is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Check the parameters.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0 && self.temperature <= 10.0) {
            return Err(Error::InvalidRequest(format!(
                "temperature {} must be in [0, 10]",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidRequest(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A generation request on already tokenized input.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: Sampling,
    /// Stop at the first of these in the generated text: [`GenerateOutput::text`] ends where
    /// it begins. Token events stream as tokens are made, so the token that completes a stop
    /// sequence has already gone out with its whole text; a consumer that shows text to a user
    /// cuts it there (the gateway does, holding back text that could begin one).
    pub stop: Vec<String>,
    /// Report each token's log-probability ([`TokenEvent::logprob`]). A greedy generation
    /// that does not ask skips computing it: the log-sum over the whole vocabulary costs about
    /// as much per token as the rest of picking it, on every token of every stream.
    pub logprobs: bool,
    /// How many alternatives to report per token (0: none; more than 0 reports each token's
    /// own log-probability too, as if `logprobs` were set).
    pub top_logprobs: usize,
}

impl GenerateRequest {
    /// Greedy generation of at most `max_tokens`, without log-probabilities.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            sampling: Sampling::greedy(),
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
        }
    }

    /// Whether each token's log-probability is to be reported.
    pub fn wants_logprobs(&self) -> bool {
        self.logprobs || self.top_logprobs > 0
    }
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// Its id.
    pub id: u32,
    /// The text it adds (may be empty while a multi-byte character is incomplete).
    pub text: String,
    /// Its log-probability under the model (natural log, before temperature), when the
    /// request asked for log-probabilities ([`GenerateRequest::wants_logprobs`]); engines may
    /// leave it out otherwise.
    pub logprob: Option<f32>,
    /// The most likely alternatives `(id, logprob)`, best first.
    pub top: Vec<(u32, f32)>,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence, or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The consumer stopped it (the client went away).
    Cancelled,
}

/// The result of a generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOutput {
    /// The generated tokens, as their events went out (each with its whole text, a stop
    /// sequence's included).
    pub tokens: Vec<TokenEvent>,
    /// The generated text, ending where the first stop sequence begins.
    pub text: String,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// The score of one continuation token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// The token.
    pub id: u32,
    /// Its log-probability given everything before it.
    pub logprob: f32,
    /// Whether it was the most likely token.
    pub is_argmax: bool,
    /// The log-probability of the most likely token there.
    pub best_logprob: f32,
}

/// What greedy decoding makes of one continuation token ([`Engine::score_greedy`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GreedyScore {
    /// The token.
    pub id: u32,
    /// Whether greedy decoding picks it (the first of equal best logits).
    pub is_argmax: bool,
    /// How far its logit lies below the best one there, in nats (0 for the best; NaN where
    /// the model's numbers are). Log-probabilities differ by the same amount.
    pub gap: f32,
}

impl From<TokenScore> for GreedyScore {
    fn from(s: TokenScore) -> GreedyScore {
        GreedyScore {
            id: s.id,
            is_argmax: s.is_argmax,
            gap: if s.is_argmax {
                0.0
            } else {
                s.best_logprob - s.logprob
            },
        }
    }
}

/// A continuation token's score with its position's most likely tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TopScore {
    /// The token's score.
    pub score: TokenScore,
    /// The most likely tokens at its position `(id, logprob)`, best first, ties to the lower
    /// id: what generation reports as the token's alternatives ([`TokenEvent::top`]).
    pub top: Vec<(u32, f32)>,
}

/// What a model is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// A name for humans and the OpenAI `model` field.
    pub name: String,
    /// BLAKE3 of the model file (hex).
    pub hash: String,
    /// Context window, in tokens.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// End-of-sequence token.
    pub eos_token: u32,
    /// The engine's numerics version. Engines (and devices) that share it compute the same
    /// logits, bit for bit, for the same model file, so that a validator can teacher-force a
    /// miner's greedy answer and find the miner's own choice at every position; engines that
    /// do not share it round differently, and a greedy answer from one fails on the other at
    /// the first position where two tokens are close. Miners advertise it; a validator
    /// names a difference instead of failing the answers token by token. 0 means not known.
    pub numerics: u32,
}

/// An inference engine.
pub trait Engine: Send + Sync {
    /// What the model is.
    fn info(&self) -> ModelInfo;
    /// Text to token ids (special tokens such as `<|im_start|>` are recognised).
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, Error>;
    /// Token ids to text.
    fn detokenize(&self, ids: &[u32]) -> Result<String, Error>;
    /// One token's own bytes (a token may hold part of a UTF-8 character, which its text
    /// alone would show as U+FFFD). By default the token detokenized alone.
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        self.detokenize(&[id]).map(String::into_bytes)
    }
    /// The prompt for a conversation, in the model's chat template, ready for the assistant.
    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, Error>;
    /// Generate; `on_token` sees each token as it is produced and returns false to cancel.
    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput, Error>;
    /// Score `continuation` after `prompt` in one forward pass.
    fn score(&self, prompt: &[u32], continuation: &[u32]) -> Result<Vec<TokenScore>, Error> {
        Ok(self
            .score_top(prompt, continuation, 0)?
            .into_iter()
            .map(|t| t.score)
            .collect())
    }
    /// For each token of `continuation` after `prompt`, in one forward pass: whether greedy
    /// decoding picks it, and how far below the best it lies. What a validator checks of a
    /// greedy answer sent without log-probabilities; an engine may compute it without the
    /// log-sum over the vocabulary that [`Engine::score`] takes per token. By default from
    /// [`Engine::score`].
    fn score_greedy(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<GreedyScore>, Error> {
        Ok(self
            .score(prompt, continuation)?
            .into_iter()
            .map(GreedyScore::from)
            .collect())
    }
    /// Get ready to score many answers: what a validator calls when its role starts, so that
    /// tables only scoring uses are built then, not inside the first check (the candle engine
    /// builds its output matrix's screen for [`Engine::score_greedy`]). Nothing by default.
    fn prepare_scoring(&self) {}
    /// [`Engine::score`], with each position's `top` most likely tokens as generation reports
    /// them (a validator checks a miner's claimed alternatives with them).
    fn score_top(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        top: usize,
    ) -> Result<Vec<TopScore>, Error>;
}

#[cfg(test)]
mod tests {
    use super::complete_text;

    /// Byte strings of every kind a token sequence can spell: ASCII, two- to four-byte
    /// characters, invalid bytes, a lone continuation byte, an overlong form, an encoded
    /// surrogate, and characters cut short.
    fn samples() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            "plain text",
            "caf\u{e9} \u{4e2d}\u{6587} \u{1f600}!",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        v.push(b"ab\xffcd".to_vec());
        v.push(b"\x80\x80x".to_vec());
        v.push(b"x\xc0\x80y".to_vec());
        v.push(b"\xed\xa0\x80z".to_vec());
        v.push(b"ok \xe4\xb8".to_vec());
        v.push(b"\xf0\x9f\x98".to_vec());
        v.push(b"\xe4\xb8a\xf0\x9f".to_vec());
        v
    }

    #[test]
    fn complete_text_is_the_lossy_text_less_an_unfinished_last_character() {
        for bytes in samples() {
            let (text, used) = complete_text(&bytes);
            let lossy = String::from_utf8_lossy(&bytes);
            if used == bytes.len() {
                assert_eq!(text, lossy, "{bytes:?}");
            } else {
                // The tail it leaves is one unfinished character, which the lossy text shows
                // as one replacement character.
                assert!(bytes.len() - used < 4, "{bytes:?}");
                assert_eq!(format!("{text}\u{fffd}"), lossy, "{bytes:?}");
            }
        }
        assert_eq!(complete_text(b"ok \xe4\xb8"), ("ok ".to_string(), 3));
        assert_eq!(complete_text(b"ab\xffcd"), ("ab\u{fffd}cd".to_string(), 5));
    }

    #[test]
    fn piece_by_piece_gives_the_text_of_one_call() {
        for bytes in samples() {
            let whole = complete_text(&bytes);
            // Bytes arriving one token at a time, tokens of every length up to four bytes.
            for step in 1..=4 {
                let (mut text, mut used) = (String::new(), 0);
                let mut seen = 0;
                while seen < bytes.len() {
                    seen = (seen + step).min(bytes.len());
                    let (piece, n) = complete_text(&bytes[used..seen]);
                    text.push_str(&piece);
                    used += n;
                }
                assert_eq!((text, used), whole, "{bytes:?} in steps of {step}");
            }
        }
    }
}
