//! Verify a miner's answer by teacher forcing: score the claimed continuation after the prompt
//! in one forward pass of the validator's own copy of the model, then apply the rules.
//!
//! - Greedy challenges: every token must be the model's argmax, except numerical near-ties: a
//!   token whose log-probability is within [`NEAR_TIE`] nats of the best one passes. Without
//!   claimed log-probabilities the distance is taken as the difference of the two logits:
//!   the same quantity with one rounding fewer, and no log-sum over the vocabulary to compute
//!   ([`Engine::score_greedy`]). On one
//!   machine the engine's scores are the generator's own numbers bit for bit (scoring attends
//!   position by position as decoding does); the tolerance covers other CPUs, whose SIMD paths
//!   round sums differently and can flip an 8-bit activation rounding.
//! - Sampled challenges: the answer fails if any token's log-probability is at most
//!   [`IMPOSSIBLE`] (-13), or if [`UNLIKELY_COUNT`] (5) or more are at most [`UNLIKELY`] (-8).
//! - End of sequence: an answer that ends with `stop` must be followed by a stop token the model
//!   agrees with (argmax or near-tie for greedy; above the impossible line for sampled); one that
//!   ends with `length` must have exactly `max_tokens` tokens.
//! - The count the miner claims (in its receipt) must equal the tokens given.
//! - Log-probabilities the miner claims (when the challenge asked for them, as clients may):
//!   every token's within [`LOGPROB_TOLERANCE`] of the validator's own, and its position's
//!   alternatives as many as asked, the same tokens in the same order, each within the
//!   tolerance. Miners on the validator's numerics compute the same bits, so an honest claim
//!   is exact; the tolerance only absorbs the transport's rounding.
//!
//! The decision is a pure function of the model, the prompt and the answer: the same answer
//! always gets the same verdict on the same machine.
#![allow(
    clippy::float_arithmetic,
    reason = "log-probabilities are floats; verdicts are local decisions, not consensus state"
)]

use agora_inference::{Engine, Error, GreedyScore, TokenScore};
use agora_serve::protocol::LOGPROB_FLOOR;

/// Near-tie tolerance for greedy answers, in nats.
pub const NEAR_TIE: f32 = 0.05;
/// A token at or below this log-probability fails a sampled answer.
pub const IMPOSSIBLE: f32 = -13.0;
/// Tokens at or below this log-probability count as unlikely.
pub const UNLIKELY: f32 = -8.0;
/// This many unlikely tokens fail a sampled answer.
pub const UNLIKELY_COUNT: usize = 5;
/// How far a claimed log-probability may be from the validator's, in nats. A log-probability
/// of minus infinity travels as [`LOGPROB_FLOOR`]; the validator's own are floored the same
/// before comparing.
pub const LOGPROB_TOLERANCE: f32 = 1e-3;

/// The log-probabilities a miner claims for one token of its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedLogprob {
    /// The token's.
    pub logprob: f32,
    /// Its position's most likely tokens `(id, logprob)`, best first.
    pub top: Vec<(u32, f32)>,
}

/// The log-probabilities a miner claims for its answer, and how many alternatives per token
/// were asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Claims<'a> {
    /// Alternatives asked for per token.
    pub alternatives: usize,
    /// One per token of the answer.
    pub tokens: &'a [ClaimedLogprob],
}

/// How the answer was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Temperature 0.
    Greedy,
    /// Any sampling.
    Sampled,
}

/// How the answer ended, as the miner says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token came.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

/// What is checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer<'a> {
    /// The prompt's token ids (the validator renders and tokenizes the challenge itself).
    pub prompt: &'a [u32],
    /// The answer's token ids.
    pub tokens: &'a [u32],
    /// Greedy or sampled.
    pub mode: Mode,
    /// How it ended.
    pub finish: Finish,
    /// The `max_tokens` asked for.
    pub max_tokens: usize,
    /// The completion tokens the miner claims.
    pub claimed_tokens: usize,
    /// The log-probabilities the miner claims, when they were asked for.
    pub logprobs: Option<Claims<'a>>,
}

/// Why an answer fails.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// A greedy answer's token is not the model's choice.
    NotArgmax {
        /// Position in the answer.
        position: usize,
        /// How far its log-probability lies below the best one's, in nats (more than
        /// [`NEAR_TIE`]; NaN where the validator's own numbers are).
        gap: f32,
    },
    /// A sampled answer has a token the model would never produce.
    Impossible {
        /// Position.
        position: usize,
        /// Its log-probability.
        logprob: f32,
    },
    /// A sampled answer has too many unlikely tokens.
    TooUnlikely {
        /// How many.
        count: usize,
    },
    /// The answer stops where the model would not.
    StopMisplaced,
    /// The answer ends for length without reaching `max_tokens`, or runs past it.
    LengthMismatch {
        /// Tokens given.
        tokens: usize,
        /// `max_tokens`.
        max: usize,
    },
    /// No answer came (dropped, timed out, busy or refused), with the reason.
    NoAnswer(String),
    /// The answer came without a receipt the gateway could countersign.
    NoReceipt,
    /// The receipt names another model than the one the miner registered.
    WrongModelHash,
    /// The miner advertises another engine numerics version than the validator's
    /// (`agora_inference::ModelInfo::numerics`): its answers cannot be checked token by
    /// token here, so none is teacher-forced. The miner's operator fixes it by running the
    /// same Agora release as the subnet's validators.
    EngineNumerics {
        /// The miner's.
        miner: u32,
        /// This validator's.
        validator: u32,
    },
    /// The text sent is not the text of the token ids sent.
    TextMismatch,
    /// A claimed log-probability is not the model's, a claimed alternative is not the
    /// model's at its place, or the claims do not cover the answer or the alternatives asked.
    WrongLogprob {
        /// Position in the answer (the answer's length when the claims are too few or many).
        position: usize,
        /// Claimed (NaN when missing).
        claimed: f32,
        /// The validator's (NaN when there is no such token).
        actual: f32,
    },
    /// The miner claims another number of tokens than it gave.
    CountMismatch {
        /// Claimed.
        claimed: usize,
        /// Given.
        given: usize,
    },
}

/// The verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The answer is what the model produces.
    Pass,
    /// The answer is not, and why.
    Fail(Failure),
}

/// Verify `answer` with `engine` (the registered model); `stop` is the model's stop token.
pub fn verify(engine: &dyn Engine, answer: &Answer<'_>, stop: u32) -> Result<Verdict, Error> {
    let fail = |f| Ok(Verdict::Fail(f));
    if answer.claimed_tokens != answer.tokens.len() {
        return fail(Failure::CountMismatch {
            claimed: answer.claimed_tokens,
            given: answer.tokens.len(),
        });
    }
    match answer.finish {
        Finish::Length if answer.tokens.len() != answer.max_tokens => {
            return fail(Failure::LengthMismatch {
                tokens: answer.tokens.len(),
                max: answer.max_tokens,
            });
        }
        Finish::Stop if answer.tokens.len() >= answer.max_tokens.max(1) => {
            return fail(Failure::LengthMismatch {
                tokens: answer.tokens.len(),
                max: answer.max_tokens,
            });
        }
        _ => {}
    }
    // One pass over the answer, and the stop token after it when it claims one.
    let mut forced = answer.tokens.to_vec();
    if answer.finish == Finish::Stop {
        forced.push(stop);
    }
    // A greedy answer without claimed log-probabilities needs only each position's argmax
    // and the token's distance below it, which the engine computes without the log-sum over
    // the vocabulary ([`Engine::score_greedy`]); every other answer is scored in full.
    if answer.mode == Mode::Greedy && answer.logprobs.is_none() {
        let scored = engine.score_greedy(answer.prompt, &forced)?;
        return Ok(greedy_verdict(&scored, answer.tokens.len()));
    }
    let alternatives = answer.logprobs.map_or(0, |c| c.alternatives);
    let scored = engine.score_top(answer.prompt, &forced, alternatives)?;
    let scores: Vec<TokenScore> = scored.iter().map(|t| t.score).collect();
    let (body, tail) = scores.split_at(answer.tokens.len());
    match answer.mode {
        Mode::Greedy => {
            let greedy: Vec<GreedyScore> = scores.iter().copied().map(GreedyScore::from).collect();
            if let Verdict::Fail(f) = greedy_verdict(&greedy, answer.tokens.len()) {
                return fail(f);
            }
        }
        Mode::Sampled => {
            if let Some((position, s)) = body
                .iter()
                .enumerate()
                .find(|(_, s)| s.logprob <= IMPOSSIBLE)
            {
                return fail(Failure::Impossible {
                    position,
                    logprob: s.logprob,
                });
            }
            let count = body.iter().filter(|s| s.logprob <= UNLIKELY).count();
            if count >= UNLIKELY_COUNT {
                return fail(Failure::TooUnlikely { count });
            }
            if let Some(s) = tail.first()
                && s.logprob <= IMPOSSIBLE
            {
                return fail(Failure::StopMisplaced);
            }
        }
    }
    if let Some(claims) = answer.logprobs {
        let claims = claims.tokens;
        if claims.len() != body.len() {
            return fail(Failure::WrongLogprob {
                position: body.len(),
                claimed: f32::NAN,
                actual: f32::NAN,
            });
        }
        let floored = |l: f32| if l >= LOGPROB_FLOOR { l } else { LOGPROB_FLOOR };
        let off = |claimed: f32, actual: f32| {
            claimed.is_nan() || (floored(claimed) - floored(actual)).abs() > LOGPROB_TOLERANCE
        };
        for (position, (c, s)) in claims.iter().zip(&scored).enumerate() {
            if off(c.logprob, s.score.logprob) {
                return fail(Failure::WrongLogprob {
                    position,
                    claimed: c.logprob,
                    actual: s.score.logprob,
                });
            }
            if c.top.len() != s.top.len() {
                return fail(Failure::WrongLogprob {
                    position,
                    claimed: f32::NAN,
                    actual: f32::NAN,
                });
            }
            for (&(id, claimed), &(real, actual)) in c.top.iter().zip(&s.top) {
                if id != real || off(claimed, actual) {
                    return fail(Failure::WrongLogprob {
                        position,
                        claimed,
                        actual,
                    });
                }
            }
        }
    }
    Ok(Verdict::Pass)
}

/// The greedy rule over an answer's `len` tokens' scores and, after them, the stop token's
/// when the answer claims one: every token the argmax or within [`NEAR_TIE`] of it.
fn greedy_verdict(scored: &[GreedyScore], len: usize) -> Verdict {
    let off = |s: &GreedyScore| s.gap.is_nan() || s.gap > NEAR_TIE;
    let (body, tail) = scored.split_at(len.min(scored.len()));
    if let Some((position, s)) = body.iter().enumerate().find(|(_, s)| off(s)) {
        return Verdict::Fail(Failure::NotArgmax {
            position,
            gap: s.gap,
        });
    }
    if tail.first().is_some_and(off) {
        return Verdict::Fail(Failure::StopMisplaced);
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(gaps: &[f32]) -> Vec<GreedyScore> {
        gaps.iter()
            .enumerate()
            .map(|(i, &gap)| GreedyScore {
                id: i as u32,
                is_argmax: gap == 0.0,
                gap,
            })
            .collect()
    }

    #[test]
    fn the_greedy_rule_passes_near_ties_and_nothing_further() {
        // The argmax and near-ties pass, in the answer and at its stop token.
        assert_eq!(
            greedy_verdict(&scores(&[0.0, 0.03, NEAR_TIE, 0.0]), 3),
            Verdict::Pass
        );
        // A token further below the best fails at its position, with its distance.
        assert_eq!(
            greedy_verdict(&scores(&[0.0, 0.0, 0.06, 2.0]), 4),
            Verdict::Fail(Failure::NotArgmax {
                position: 2,
                gap: 0.06
            })
        );
        // A stop token the model would not produce there.
        assert_eq!(
            greedy_verdict(&scores(&[0.0, 0.0, 0.4]), 2),
            Verdict::Fail(Failure::StopMisplaced)
        );
        // Numbers the validator cannot compare fail rather than pass.
        assert!(matches!(
            greedy_verdict(&scores(&[0.0, f32::NAN]), 2),
            Verdict::Fail(Failure::NotArgmax { position: 1, .. })
        ));
        // The full scores' form of the same numbers.
        let full = TokenScore {
            id: 9,
            logprob: -3.5,
            is_argmax: false,
            best_logprob: -0.5,
        };
        assert_eq!(GreedyScore::from(full).gap, 3.0);
    }
}
