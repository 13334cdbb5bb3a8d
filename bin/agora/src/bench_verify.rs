//! `agora bench verify`: the validator's cost of checking an answer against the miner's cost of
//! producing it, on the served model.

use std::time::{Duration, Instant};

use agora_inference::{ChatMessage, Engine, GenerateRequest};
use agora_validator::verify::{self, Answer, Finish, Mode, Verdict};
use anyhow::{Result, bail};

const PROMPTS: [&str; 4] = [
    "Write a long, detailed essay about the history of the printing press.",
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in great detail how the human heart works.",
    "Write a detailed guide to growing tomatoes at home.",
];

/// The untimed first answer's prompt (not one of [`PROMPTS`], so that no timed check finds its
/// prompt in the validator's cache).
const WARM_UP: &str = "Write a long letter to a friend about a journey by train.";

/// Time generating `tokens`-token greedy answers and verifying them, `runs` times per prompt.
///
/// The miner and the validator are two engines, as they are two machines: each keeps its last
/// prompt's cache and starts the next prompt from the part they share (the chat template's
/// system turn), and the validator has not seen the prompt it verifies before, since it did not
/// generate the answer. Consecutive prompts differ (the prompts are the inner loop), as a
/// validator's challenges do.
///
/// The share is that of a greedy challenge sent without log-probabilities (the argmax rule,
/// `Engine::score_greedy`). A third engine, a validator of its own, verifies each answer again
/// as a sampled challenge's is verified (full scores: each position's log-sum over the
/// vocabulary, as for challenges that ask for log-probabilities too), printed beside it.
pub fn bench_verify(
    tokens: usize,
    runs: usize,
    model_dir: Option<std::path::PathBuf>,
) -> Result<()> {
    let dir = model_dir.unwrap_or_else(agora_inference::model::default_dir);
    let path = agora_inference::model::locate(&dir)?;
    let engine = agora_inference_candle::CandleEngine::load(&path)?;
    let validator = agora_inference_candle::CandleEngine::load(&path)?;
    let full = agora_inference_candle::CandleEngine::load(&path)?;
    // As a validator's role does when it starts (`Engine::prepare_scoring`).
    validator.prepare_scoring();
    let eos = engine.info().eos_token;
    let mut gen_total = Duration::ZERO;
    let mut verify_total = Duration::ZERO;
    let mut full_total = Duration::ZERO;
    let mut answered = 0usize;
    // Each answer's share, in thousandths (for the spread printed beside the total's).
    let mut shares: Vec<u128> = Vec::new();
    println!(
        "{:<6} {:>7} {:>12} {:>12} {:>7} {:>14}",
        "prompt", "tokens", "generate ms", "verify ms", "share", "full scores ms"
    );
    // One answer to a prompt of its own, untimed, through all three engines first: a running
    // validator has its buffers, its caches' pages and the chat template's system turn from
    // its earlier checks, and the first check after loading pays for them once (about 49
    // against 40 ms, session 27).
    answer_and_verify([&engine, &validator, &full], WARM_UP, tokens, eos)?;
    for _ in 0..runs {
        for (p, text) in PROMPTS.iter().enumerate() {
            let timed = answer_and_verify([&engine, &validator, &full], text, tokens, eos)
                .map_err(|e| anyhow::anyhow!("prompt {p}: {e}"))?;
            println!(
                "{:<6} {:>7} {:>12} {:>12} {:>7} {:>14}",
                p,
                timed.tokens,
                timed.generated.as_millis(),
                timed.verified.as_millis(),
                share(timed.verified, timed.generated),
                timed.scored.as_millis()
            );
            shares.push(thousandths(timed.verified, timed.generated));
            gen_total += timed.generated;
            verify_total += timed.verified;
            full_total += timed.scored;
            answered += timed.tokens;
        }
    }
    let n = (PROMPTS.len() * runs).max(1) as u32;
    println!(
        "bench verify/answer_tokens_mean {} tokens",
        answered / n as usize
    );
    println!(
        "bench verify/generate_ms_mean {} ms",
        (gen_total / n).as_millis()
    );
    println!(
        "bench verify/verify_ms_mean {} ms",
        (verify_total / n).as_millis()
    );
    println!(
        "bench verify/share_of_generation {}",
        share(verify_total, gen_total)
    );
    // The spread over the answers: the machine's bursts of noise slow a verification (bound by
    // arithmetic) by up to a quarter and not a generation (bound by memory), so single answers
    // read higher in them; the share above is the whole run's.
    shares.sort_unstable();
    println!(
        "bench verify/share_per_answer_median {}",
        milli(shares.get(shares.len() / 2).copied().unwrap_or(0))
    );
    println!(
        "bench verify/share_per_answer_max {}",
        milli(shares.last().copied().unwrap_or(0))
    );
    println!(
        "bench verify/verify_full_scores_ms_mean {} ms",
        (full_total / n).as_millis()
    );
    println!(
        "bench verify/share_of_generation_full_scores {}",
        share(full_total, gen_total)
    );
    // Prompt positions the validator took from its last prompt's cache (the shared system turn).
    println!(
        "bench verify/validator_reused_positions_mean {} positions",
        validator.reused_positions() / u64::from(n)
    );
    Ok(())
}

/// The times of one answer: generated by the miner's engine, verified as a greedy challenge by
/// the validator's, and as a sampled one (full scores) by the third.
struct Timed {
    tokens: usize,
    generated: Duration,
    verified: Duration,
    scored: Duration,
}

/// Generate a greedy answer of up to `tokens` tokens to `text` on `engines[0]` and verify it on
/// `engines[1]` (as a greedy challenge) and `engines[2]` (as a sampled one), timing each.
fn answer_and_verify(
    engines: [&agora_inference_candle::CandleEngine; 3],
    text: &str,
    tokens: usize,
    eos: u32,
) -> Result<Timed> {
    let [engine, validator, full] = engines;
    let rendered = engine.render_chat(&[
        ChatMessage {
            role: "system".into(),
            content: "You are a helpful AI assistant.".into(),
        },
        ChatMessage::user(text),
    ])?;
    let prompt = engine.tokenize(&rendered)?;
    let start = Instant::now();
    let out = engine.generate(
        &GenerateRequest::greedy(prompt.clone(), tokens),
        &mut |_| true,
    )?;
    let generated = start.elapsed();
    let ids: Vec<u32> = out.tokens.iter().map(|t| t.id).collect();
    let finish = match out.finish {
        agora_inference::FinishReason::Length => Finish::Length,
        _ => Finish::Stop,
    };
    let answer = Answer {
        prompt: &prompt,
        tokens: &ids,
        mode: Mode::Greedy,
        finish,
        max_tokens: tokens,
        claimed_tokens: ids.len(),
        logprobs: None,
    };
    let start = Instant::now();
    let verdict = verify::verify(validator, &answer, eos)?;
    let verified = start.elapsed();
    if verdict != Verdict::Pass {
        bail!("the engine's own answer failed verification: {verdict:?}");
    }
    let as_sampled = Answer {
        mode: Mode::Sampled,
        ..answer
    };
    let start = Instant::now();
    let verdict = verify::verify(full, &as_sampled, eos)?;
    let scored = start.elapsed();
    if verdict != Verdict::Pass {
        bail!("the engine's own answer failed full scoring: {verdict:?}");
    }
    Ok(Timed {
        tokens: ids.len(),
        generated,
        verified,
        scored,
    })
}

/// `a / b` in thousandths, in integers.
fn thousandths(a: Duration, b: Duration) -> u128 {
    a.as_micros() * 1000 / b.as_micros().max(1)
}

/// `a / b` with three decimals, in integers.
fn share(a: Duration, b: Duration) -> String {
    milli(thousandths(a, b))
}

/// Thousandths with three decimals.
fn milli(x: u128) -> String {
    format!("{}.{:03}", x / 1000, x % 1000)
}
