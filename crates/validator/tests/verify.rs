//! The verifier on answers produced by the real model (fetched like `agora model fetch` when
//! missing): honest answers pass, each kind of forgery fails, verdicts are deterministic.

mod common;

use agora_inference::{Engine, FinishReason, GenerateRequest, Sampling};
use agora_primitives::Hash;
use agora_validator::challenge::challenges;
use agora_validator::verify::{Answer, Failure, Finish, Mode, Verdict, verify};
use common::{engine, prompt};

fn generate(prompt: &[u32], max: usize, sampling: Sampling) -> (Vec<u32>, Finish) {
    let out = engine()
        .generate(
            &GenerateRequest {
                prompt: prompt.to_vec(),
                max_tokens: max,
                sampling,
                stop: vec![],
                logprobs: false,
                top_logprobs: 0,
            },
            &mut |_| true,
        )
        .unwrap();
    let finish = match out.finish {
        FinishReason::Stop => Finish::Stop,
        _ => Finish::Length,
    };
    (out.tokens.iter().map(|t| t.id).collect(), finish)
}

fn check(prompt: &[u32], tokens: &[u32], mode: Mode, finish: Finish, max: usize) -> Verdict {
    let answer = Answer {
        prompt,
        tokens,
        mode,
        finish,
        max_tokens: max,
        claimed_tokens: tokens.len(),
        logprobs: None,
    };
    verify(engine(), &answer, engine().info().eos_token).unwrap()
}

fn sampled(seed: u64) -> Sampling {
    Sampling {
        temperature: 0.7,
        top_p: 0.95,
        top_k: 0,
        seed,
    }
}

#[test]
fn honest_answers_pass_and_verdicts_are_deterministic() {
    let c = challenges(&Hash([7; 32]), 6);
    for (i, ch) in c.iter().enumerate() {
        let p = prompt(&ch.prompt);
        let max = ch.max_tokens as usize;
        let (mode, sampling) = match ch.sampled_seed {
            Some(seed) => (Mode::Sampled, sampled(seed)),
            None => (Mode::Greedy, Sampling::greedy()),
        };
        let (tokens, finish) = generate(&p, max, sampling);
        let v = check(&p, &tokens, mode, finish, max);
        assert_eq!(
            v,
            Verdict::Pass,
            "challenge {i} ({:?}): {}",
            mode,
            ch.prompt
        );
        assert_eq!(check(&p, &tokens, mode, finish, max), v);
    }
    // An answer that ends with the stop token passes too.
    let stopped = [
        "Say hello.",
        "Reply with one word: is the sky blue?",
        "What is 2 + 2?",
        "Name a colour.",
    ]
    .iter()
    .map(|q| {
        let p = prompt(q);
        let (tokens, finish) = generate(&p, 128, Sampling::greedy());
        (p, tokens, finish)
    })
    .find(|(_, _, finish)| *finish == Finish::Stop)
    .expect("one of these short questions ends with the stop token");
    let (p, tokens, finish) = stopped;
    assert_eq!(check(&p, &tokens, Mode::Greedy, finish, 128), Verdict::Pass);
}

#[test]
fn each_kind_of_forgery_fails() {
    let p = prompt("Explain photosynthesis in two sentences.");
    let (honest, finish) = generate(&p, 32, Sampling::greedy());
    assert_eq!(finish, Finish::Length);

    // Another model (a token it would not choose).
    let mut wrong = honest.clone();
    wrong[5] = if wrong[5] == 1234 { 1235 } else { 1234 };
    assert!(matches!(
        check(&p, &wrong, Mode::Greedy, Finish::Length, 32),
        Verdict::Fail(Failure::NotArgmax { position: 5, .. })
    ));

    // Plausible-looking random tokens, even when claimed as sampled.
    let mut x = 12345u64;
    let random: Vec<u32> = (0..32)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 40_000) as u32 + 100
        })
        .collect();
    assert!(matches!(
        check(&p, &random, Mode::Sampled, Finish::Length, 32),
        Verdict::Fail(Failure::Impossible { .. } | Failure::TooUnlikely { .. })
    ));

    // A copycat: the right answer to another prompt.
    let other = prompt("Write a short poem about volcanoes.");
    let (copied, _) = generate(&other, 32, Sampling::greedy());
    assert!(matches!(
        check(&p, &copied, Mode::Greedy, Finish::Length, 32),
        Verdict::Fail(Failure::NotArgmax { .. })
    ));

    // Counts: claiming more tokens than given, stopping early, or ending for length too soon.
    let answer = Answer {
        prompt: &p,
        tokens: &honest,
        mode: Mode::Greedy,
        finish: Finish::Length,
        max_tokens: 32,
        claimed_tokens: 40,
        logprobs: None,
    };
    assert!(matches!(
        verify(engine(), &answer, engine().info().eos_token).unwrap(),
        Verdict::Fail(Failure::CountMismatch {
            claimed: 40,
            given: 32
        })
    ));
    assert!(matches!(
        check(&p, &honest[..20], Mode::Greedy, Finish::Stop, 32),
        Verdict::Fail(Failure::StopMisplaced)
    ));
    assert!(matches!(
        check(&p, &honest[..20], Mode::Greedy, Finish::Length, 32),
        Verdict::Fail(Failure::LengthMismatch {
            tokens: 20,
            max: 32
        })
    ));
}

#[test]
fn the_real_engines_log_probabilities_are_its_scores_and_made_up_ones_fail() {
    use agora_validator::verify::{ClaimedLogprob, Claims};
    let p = prompt("Explain photosynthesis in two sentences.");
    for (mode, sampling) in [
        (Mode::Greedy, Sampling::greedy()),
        (Mode::Sampled, sampled(11)),
    ] {
        let out = engine()
            .generate(
                &GenerateRequest {
                    prompt: p.clone(),
                    max_tokens: 24,
                    sampling,
                    stop: vec![],
                    logprobs: true,
                    top_logprobs: 2,
                },
                &mut |_| true,
            )
            .unwrap();
        let tokens: Vec<u32> = out.tokens.iter().map(|t| t.id).collect();
        let finish = match out.finish {
            FinishReason::Stop => Finish::Stop,
            _ => Finish::Length,
        };
        // What the miner's engine reported while generating, as a miner claims it.
        let claims: Vec<ClaimedLogprob> = out
            .tokens
            .iter()
            .map(|t| ClaimedLogprob {
                logprob: t.logprob.expect("asked for"),
                top: t.top.clone(),
            })
            .collect();
        let judge = |claims: &[ClaimedLogprob]| {
            let answer = Answer {
                prompt: &p,
                tokens: &tokens,
                mode,
                finish,
                max_tokens: 24,
                claimed_tokens: tokens.len(),
                logprobs: Some(Claims {
                    alternatives: 2,
                    tokens: claims,
                }),
            };
            verify(engine(), &answer, engine().info().eos_token).unwrap()
        };
        assert_eq!(judge(&claims), Verdict::Pass, "{mode:?}");
        // Generation reports the scoring pass's own numbers, bit for bit, alternatives too.
        let scores = engine().score_top(&p, &tokens, 2).unwrap();
        for (c, s) in claims.iter().zip(&scores) {
            assert_eq!(c.logprob.to_bits(), s.score.logprob.to_bits());
            assert_eq!(c.top.len(), 2);
            assert_eq!(c.top[0].1.to_bits(), s.score.best_logprob.to_bits());
            for (a, b) in c.top.iter().zip(&s.top) {
                assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
            }
        }
        let mut made_up = claims.clone();
        made_up[5].logprob -= 0.01;
        // An alternative swapped for another token, or its number changed.
        let mut swapped = claims.clone();
        swapped[7].top[1].0 += 1;
        let mut nudged = claims.clone();
        nudged[9].top[1].1 += 0.01;
        let mut fewer = claims.clone();
        fewer[2].top.pop();
        for (forged, at) in [(made_up, 5), (swapped, 7), (nudged, 9), (fewer, 2)] {
            let verdict = judge(&forged);
            assert!(
                matches!(verdict, Verdict::Fail(Failure::WrongLogprob { position, .. }) if position == at),
                "{mode:?}: {verdict:?}"
            );
        }
    }
}
