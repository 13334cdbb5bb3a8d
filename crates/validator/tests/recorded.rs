//! The verifier on recorded answers (`tests/fixtures/answers.json`, written by
//! `examples/record_answers.rs`): honest answers pass, every forgery fails, and the verdict for
//! a given answer is the same every time. Needs the model (fetched like `agora model fetch`).
//!
//! The fixture is tied to the engine's arithmetic: after a change to it, an honest answer
//! recorded before may sit at a near-tie wider than the verifier's 0.05 nats (that is what the
//! tolerance is for across machines, not across engine versions); regenerate the fixture with
//! the example.

mod common;

use agora_inference::Engine;
use agora_inference_candle::CandleEngine;
use agora_validator::verify::{Answer, Finish, Mode, Verdict, verify};
use common::{engine, prompt};

fn verdict(e: &CandleEngine, r: &serde_json::Value) -> Verdict {
    let prompt = prompt(r["prompt"].as_str().unwrap());
    let tokens: Vec<u32> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let answer = Answer {
        prompt: &prompt,
        tokens: &tokens,
        mode: if r["sampled_seed"].is_null() {
            Mode::Greedy
        } else {
            Mode::Sampled
        },
        finish: if r["finish"] == "length" {
            Finish::Length
        } else {
            Finish::Stop
        },
        max_tokens: r["max_tokens"].as_u64().unwrap() as usize,
        claimed_tokens: tokens.len(),
        logprobs: None,
    };
    verify(e, &answer, e.info().eos_token).unwrap()
}

#[test]
fn recorded_honest_answers_pass_and_every_recorded_forgery_fails_deterministically() {
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/answers.json")).unwrap();
    let e = engine();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (i, r) in fixture.iter().enumerate() {
        let v = verdict(e, r);
        let expect = r["expect"].as_str().unwrap();
        match expect {
            "pass" => assert_eq!(
                v,
                Verdict::Pass,
                "answer {i} ({}): {}",
                r["kind"],
                r["prompt"]
            ),
            _ => assert!(
                matches!(v, Verdict::Fail(_)),
                "answer {i} ({}) should fail: {}",
                r["kind"],
                r["prompt"]
            ),
        }
        // The same answer, the same verdict.
        assert_eq!(verdict(e, r), v, "answer {i}");
        *kinds
            .entry(r["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for kind in ["honest", "wrong-model", "copycat", "random", "early-stop"] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) >= 3,
            "{kind}: {kinds:?}"
        );
    }
}
