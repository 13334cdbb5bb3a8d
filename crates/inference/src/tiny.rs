//! A tiny deterministic engine for unit tests of other crates (not a language model).
//!
//! Tokens are bytes (ids 0 to 255) plus an end-of-sequence id 256. The "model" prefers the
//! token `(sum of the context) mod 251 + 1` with log-probability about -0.1 and gives every
//! other token an equal share of the rest, so generation and scoring agree exactly.

use crate::{
    ChatMessage, Engine, Error, FinishReason, GenerateOutput, GenerateRequest, ModelInfo,
    TokenEvent, TokenScore, TopScore,
};

const EOS: u32 = 256;
const VOCAB: usize = 257;
/// The tiny engine's numerics version ([`ModelInfo::numerics`]): its logits are integers.
const NUMERICS: u32 = 1;

/// The tiny engine.
#[derive(Clone, Debug, Default)]
pub struct TinyEngine {
    _private: (),
}

impl TinyEngine {
    /// A new tiny engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn favourite(context: &[u32]) -> u32 {
        let sum: u64 = context.iter().map(|&t| u64::from(t)).sum();
        (sum % 251) as u32 + 1
    }

    /// The `n` most likely tokens after `context`: the favourite first, then every other
    /// token alike, lower ids first.
    fn top(context: &[u32], n: usize) -> Vec<(u32, f32)> {
        let best = Self::favourite(context);
        std::iter::once(best)
            .chain((0..VOCAB as u32).filter(|&t| t != best))
            .take(n)
            .map(|t| (t, Self::logprob(context, t)))
            .collect()
    }

    fn logprob(context: &[u32], token: u32) -> f32 {
        let best = 0.9f32;
        if token == Self::favourite(context) {
            best.ln()
        } else {
            ((1.0 - best) / (VOCAB as f32 - 1.0)).ln()
        }
    }
}

impl Engine for TinyEngine {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "tiny".into(),
            hash: "0".repeat(64),
            context_length: 4096,
            vocab_size: VOCAB,
            eos_token: EOS,
            numerics: NUMERICS,
        }
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, Error> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        match id {
            EOS => Ok(Vec::new()),
            _ => Ok(vec![u8::try_from(id).map_err(|_| Error::UnknownToken(id))?]),
        }
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        let bytes: Result<Vec<u8>, Error> = ids
            .iter()
            .filter(|&&t| t != EOS)
            .map(|&t| u8::try_from(t).map_err(|_| Error::UnknownToken(t)))
            .collect();
        Ok(String::from_utf8_lossy(&bytes?).into_owned())
    }

    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, Error> {
        Ok(messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect::<String>()
            + "assistant: ")
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput, Error> {
        request.sampling.validate()?;
        let mut context = request.prompt.clone();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        // Its tokens are bytes: the text streams as `complete_text` spells them.
        let (mut bytes, mut emitted) = (Vec::new(), 0);
        for _ in 0..request.max_tokens {
            let id = Self::favourite(&context);
            let top = Self::top(&context, request.top_logprobs);
            bytes.extend(self.token_bytes(id)?);
            let (piece, used) = crate::complete_text(&bytes[emitted..]);
            emitted += used;
            let event = TokenEvent {
                id,
                text: piece,
                logprob: request
                    .wants_logprobs()
                    .then(|| Self::logprob(&context, id)),
                top,
            };
            context.push(id);
            let keep_going = on_token(&event);
            text.push_str(&event.text);
            tokens.push(event);
            if !keep_going {
                finish = FinishReason::Cancelled;
                break;
            }
            // Stop sequences as the trait states them: the token that completes one has gone
            // out whole; the text ends where the first one begins.
            if let Some(at) = crate::first_stop(&text, &request.stop, 0) {
                text.truncate(at);
                finish = FinishReason::Stop;
                break;
            }
        }
        Ok(GenerateOutput {
            tokens,
            text,
            finish,
        })
    }

    fn score_top(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        top: usize,
    ) -> Result<Vec<TopScore>, Error> {
        let mut context = prompt.to_vec();
        continuation
            .iter()
            .map(|&id| {
                if id as usize >= VOCAB {
                    return Err(Error::UnknownToken(id));
                }
                let best = Self::favourite(&context);
                let s = TopScore {
                    score: TokenScore {
                        id,
                        logprob: Self::logprob(&context, id),
                        is_argmax: id == best,
                        best_logprob: Self::logprob(&context, best),
                    },
                    top: Self::top(&context, top),
                };
                context.push(id);
                Ok(s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_scores_as_argmax() {
        let e = TinyEngine::new();
        let prompt = e.tokenize("abc").unwrap();
        let a = e
            .generate(&GenerateRequest::greedy(prompt.clone(), 8), &mut |_| true)
            .unwrap();
        let b = e
            .generate(&GenerateRequest::greedy(prompt.clone(), 8), &mut |_| true)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.finish, FinishReason::Length);
        let ids: Vec<u32> = a.tokens.iter().map(|t| t.id).collect();
        assert!(e.score(&prompt, &ids).unwrap().iter().all(|s| s.is_argmax));
        let mut seen = 0;
        let c = e
            .generate(&GenerateRequest::greedy(prompt, 8), &mut |_| {
                seen += 1;
                seen < 3
            })
            .unwrap();
        assert_eq!(c.finish, FinishReason::Cancelled);
        // Alternatives as asked: the token first, then the others.
        let mut asked = GenerateRequest::greedy(e.tokenize("abc").unwrap(), 2);
        asked.top_logprobs = 3;
        let d = e.generate(&asked, &mut |_| true).unwrap();
        for t in &d.tokens {
            assert_eq!(t.top.len(), 3);
            assert_eq!(Some(t.top[0]), t.logprob.map(|l| (t.id, l)));
            assert!(t.top[1].1 <= t.top[0].1 && t.top[1].0 != t.id);
        }
        assert!(
            a.tokens
                .iter()
                .all(|t| t.top.is_empty() && t.logprob.is_none())
        );
        assert_eq!(c.tokens.len(), 3);
    }

    #[test]
    fn a_stop_sequence_ends_the_text_where_it_begins() {
        let e = TinyEngine::new();
        let prompt = e.tokenize("abc").unwrap();
        let whole = e
            .generate(&GenerateRequest::greedy(prompt.clone(), 8), &mut |_| true)
            .unwrap();
        // A stop made of the third and fourth tokens' text.
        let stop: String = whole.tokens[2..4].iter().map(|t| t.text.as_str()).collect();
        let mut asked = GenerateRequest::greedy(prompt, 8);
        asked.stop = vec![stop.clone()];
        let mut streamed = String::new();
        let out = e
            .generate(&asked, &mut |t| {
                streamed.push_str(&t.text);
                true
            })
            .unwrap();
        assert_eq!(out.finish, FinishReason::Stop);
        let at = whole.text.find(&stop).unwrap();
        assert_eq!(out.text, whole.text[..at]);
        // The events went out whole, the completing token included, and no further.
        assert_eq!(out.tokens.len(), 4);
        assert_eq!(streamed, whole.text[..at + stop.len()]);
    }
}
