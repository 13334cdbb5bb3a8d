//! Decoding rates of the real model as `agora bench inference` measures them, without the
//! binary's long link: one stream's generation, then `STREAMS` concurrent greedy generations
//! (their steady state: the tokens emitted while all of them generate): `cargo run --release
//! -p agora-inference-candle --example streams [STREAMS] [TOKENS]` (default 8 and 128; the
//! model from `agora model fetch`). A third argument, `SCORES`, first times that many scoring
//! passes of 168 tokens (a validator's check of a 128-token answer), each processing its whole
//! prompt (the engine's reuse of the last prompt's cache is off, as in `agora bench
//! inference`); `STREAMS` 0 then stops there.
#![allow(clippy::float_arithmetic, reason = "timing arithmetic")]

use agora_inference::{Engine, GenerateRequest};
use agora_inference_candle::CandleEngine;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (streams, tokens) = (arg(1, 8), arg(2, 128));
    let path = agora_inference::model::locate(&agora_inference::model::default_dir())?;
    let engine = Arc::new(CandleEngine::load(&path)?);
    // The bench's 108-token prompt.
    let mut prompt =
        engine.tokenize(&"The quick brown fox jumps over the lazy dog. ".repeat(12))?;
    prompt.truncate(108);
    engine.score(&prompt[..8], &prompt[8..9])?;
    // Every pass processes its whole prompt (the same one each time here).
    engine.reuse_prompts(false);
    let scores = arg(3, 0);
    if scores > 0 {
        let long: Vec<u32> = prompt.iter().cycle().take(168).copied().collect();
        let mut best = Duration::MAX;
        for _ in 0..scores {
            let t = Instant::now();
            engine.score(&long[..40], &long[40..])?;
            best = best.min(t.elapsed());
        }
        println!(
            "bench streams/score_168_ms {:.1} ms",
            best.as_secs_f64() * 1e3
        );
    }
    if streams == 0 {
        return Ok(());
    }

    let start = Instant::now();
    let mut first = None;
    let out = engine.generate(
        &GenerateRequest::greedy(prompt.clone(), tokens),
        &mut |_| {
            first.get_or_insert(start.elapsed());
            true
        },
    )?;
    let gen_time = start.elapsed() - first.unwrap_or_default();
    let one = out.tokens.len().saturating_sub(1).max(1) as f64 / gen_time.as_secs_f64();
    println!("bench streams/gen_tokens_per_s {one:.1} tok/s");

    let start = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let engine = Arc::clone(&engine);
            let req = GenerateRequest::greedy(prompt.clone(), tokens);
            std::thread::spawn(move || {
                let mut times: Vec<Duration> = Vec::new();
                engine
                    .generate(&req, &mut |_| {
                        times.push(start.elapsed());
                        true
                    })
                    .map(|_| times)
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.push(h.join().map_err(|_| "a stream panicked")??);
    }
    let going = all.iter().filter_map(|t| t.first()).max().copied();
    let done = all.iter().filter_map(|t| t.last()).min().copied();
    if let (Some(a), Some(b)) = (going, done)
        && b > a
    {
        let n = all.iter().flatten().filter(|&&t| t > a && t <= b).count();
        // As `agora bench inference` requires: at least eight steps of every stream in the
        // window, or the figure measures a moment (the streams start at different times).
        if n >= 8 * streams {
            let rate = n as f64 / (b - a).as_secs_f64();
            println!("bench streams/streams{streams}_tokens_per_s {rate:.1} tok/s");
            println!("bench streams/streams{streams}_vs_1 {:.2} x", rate / one);
        } else {
            println!(
                "all {streams} streams generated together for fewer than 8 steps: run again or raise TOKENS"
            );
        }
    }
    println!("largest batch {}", engine.largest_batch());
    Ok(())
}
