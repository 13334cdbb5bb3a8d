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
    println!(
        "{:<6} {:>7} {:>12} {:>12} {:>7} {:>14}",
        "prompt", "tokens", "generate ms", "verify ms", "share", "full scores ms"
    );
    for _ in 0..runs {
        for (p, text) in PROMPTS.iter().enumerate() {
            let rendered = engine.render_chat(&[
                ChatMessage {
                    role: "system".into(),
                    content: "You are a helpful AI assistant.".into(),
                },
                ChatMessage::user(*text),
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
            let verdict = verify::verify(&validator, &answer, eos)?;
            let verified = start.elapsed();
            if verdict != Verdict::Pass {
                bail!("the engine's own answer to prompt {p} failed verification: {verdict:?}");
            }
            let as_sampled = Answer {
                mode: Mode::Sampled,
                ..answer
            };
            let start = Instant::now();
            let verdict = verify::verify(&full, &as_sampled, eos)?;
            let scored = start.elapsed();
            if verdict != Verdict::Pass {
                bail!("the engine's own answer to prompt {p} failed full scoring: {verdict:?}");
            }
            println!(
                "{:<6} {:>7} {:>12} {:>12} {:>7} {:>14}",
                p,
                ids.len(),
                generated.as_millis(),
                verified.as_millis(),
                share(verified, generated),
                scored.as_millis()
            );
            gen_total += generated;
            verify_total += verified;
            full_total += scored;
            answered += ids.len();
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

/// `a / b` with three decimals, in integers.
fn share(a: Duration, b: Duration) -> String {
    let x1000 = a.as_micros() * 1000 / b.as_micros().max(1);
    format!("{}.{:03}", x1000 / 1000, x1000 % 1000)
}
