//! Record the answers that `tests/recorded.rs` verifies: honest answers from the registered
//! model and forgeries (another model, random tokens, a copied answer, a wrong stop), with the
//! verdict each must get.
//!
//! `cargo run --release -p agora-validator --example record_answers > crates/validator/tests/fixtures/answers.json`

use agora_inference::{Engine, FinishReason, GenerateRequest, Sampling};
use agora_inference_candle::CandleEngine;
use agora_primitives::Hash;
use agora_validator::challenge;

fn prompt(e: &dyn Engine, q: &str) -> Vec<u32> {
    agora_validator::role::prompt_tokens(e, q).expect("render and tokenize")
}

fn generate(e: &dyn Engine, p: &[u32], max: u32, seed: Option<u64>) -> (Vec<u32>, &'static str) {
    let sampling = match seed {
        Some(seed) => Sampling {
            temperature: 0.7,
            top_p: 1.0,
            top_k: 0,
            seed,
        },
        None => Sampling::greedy(),
    };
    let out = e
        .generate(
            &GenerateRequest {
                prompt: p.to_vec(),
                max_tokens: max as usize,
                sampling,
                stop: vec![],
                logprobs: false,
                top_logprobs: 0,
            },
            &mut |_| true,
        )
        .expect("generate");
    let finish = if out.finish == FinishReason::Length {
        "length"
    } else {
        "stop"
    };
    (out.tokens.iter().map(|t| t.id).collect(), finish)
}

fn main() {
    let dir = agora_inference::model::default_dir();
    let path = agora_inference::model::fetch(&dir, &mut |_| {}).expect("fetch the model");
    let honest = CandleEngine::load(&path).expect("load");
    let wrong = CandleEngine::load_perturbed(&path, 3).expect("load perturbed");
    let rounds = challenge::round(&Hash([42; 32]), 8, 2, 24..=40);
    let mut out = Vec::new();
    let mut record = |kind: &str,
                      q: &str,
                      seed: Option<u64>,
                      max: u32,
                      tokens: Vec<u32>,
                      finish: &str,
                      expect: &str| {
        out.push(serde_json::json!({
            "kind": kind,
            "prompt": q,
            "sampled_seed": seed,
            "max_tokens": max,
            "tokens": tokens,
            "finish": finish,
            "expect": expect,
        }));
    };
    for (i, per) in rounds.iter().enumerate() {
        for c in per {
            let p = prompt(&honest, &c.prompt);
            let (tokens, finish) = generate(&honest, &p, c.max_tokens, c.sampled_seed);
            record(
                "honest",
                &c.prompt,
                c.sampled_seed,
                c.max_tokens,
                tokens.clone(),
                finish,
                "pass",
            );
            // Another model: the perturbed weights' own answer.
            let (w, wf) = generate(&wrong, &p, c.max_tokens, c.sampled_seed);
            if c.sampled_seed.is_none() && w != tokens {
                record("wrong-model", &c.prompt, None, c.max_tokens, w, wf, "fail");
            }
            // A copycat: the honest answer to the next challenge's prompt.
            let next = &rounds[(i + 1) % rounds.len()][0];
            let np = prompt(&honest, &next.prompt);
            let (copied, cf) = generate(&honest, &np, c.max_tokens, c.sampled_seed);
            if c.sampled_seed.is_none() && copied != tokens {
                record("copycat", &c.prompt, None, c.max_tokens, copied, cf, "fail");
            }
            // Random word tokens, claimed as sampled.
            let random: Vec<u32> = (0..c.max_tokens)
                .map(|k| {
                    let h = agora_crypto::hash(&[i as u8, k as u8]);
                    2_000 + u32::from(u16::from_le_bytes([h.0[0], h.0[1]])) % 40_000
                })
                .collect();
            record(
                "random",
                &c.prompt,
                Some(1),
                c.max_tokens,
                random,
                "length",
                "fail",
            );
            // A truncated greedy answer that claims to have stopped (for a sampled answer an
            // early stop is itself a plausible draw, which the rules do not judge).
            if c.sampled_seed.is_none() && finish == "length" && tokens.len() > 8 {
                record(
                    "early-stop",
                    &c.prompt,
                    c.sampled_seed,
                    c.max_tokens,
                    tokens[..tokens.len() / 2].to_vec(),
                    "stop",
                    "fail",
                );
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
