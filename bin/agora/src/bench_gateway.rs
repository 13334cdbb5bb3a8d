//! `agora bench gateway`: what going through the gateway and libp2p costs, against calling the
//! engine in the same process, with the served model.
//!
//! - In-process: for each prompt, render the chat template, tokenize and generate greedily
//!   (`--tokens` tokens); the latency of each.
//! - Gateway: the same prompt as an OpenAI request over HTTP to a gateway, which seals it to a
//!   miner (one miner, same engine) over libp2p on loopback and streams the answer back, with a
//!   signed and countersigned receipt.
//! - After one warm-up of each path, the two run in pairs, prompt by prompt, alternating which
//!   goes first.
//! - Added latency: for each request through the gateway, its end-to-end time minus the time
//!   the miner's engine spent generating that very request (the engine is wrapped with a
//!   timer), p50 and p99: everything the path adds (HTTP, sealing, libp2p, per-token frames,
//!   the chat template and tokenizer on the miner, the receipt exchange), without the
//!   engine's own run-to-run variance, which is ten times larger than the goal. Two checks
//!   beside it: the paired difference (gateway minus in-process, prompt by prompt; noisy), and
//!   the engine's generation time when serving through the gateway over its time in-process
//!   (p50 of the per-prompt ratio: does the path's work slow the model down?).
//! - Throughput: prompts per second of the gateway path over the in-process path.
//! - 64 clients: 64 requests at once; every answer that is neither 200 nor 429 counts as an
//!   error.
#![allow(
    clippy::float_arithmetic,
    reason = "benchmark figures for people, not consensus-visible"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_crypto::Keypair;
use agora_inference::{ChatMessage, Engine, GenerateRequest};
use agora_p2p::{P2p, P2pConfig};
use agora_primitives::Amount;
use agora_serve::gateway::{Gateway, GatewayConfig};
use agora_serve::miner::{Miner, MinerConfig, MinerMode};
use agora_serve::protocol::ADVERT_TOPIC;
use anyhow::{Context, Result, anyhow};

const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 2 + 2?",
    "Write a haiku about the sea.",
    "Who wrote Romeo and Juliet?",
    "Give me a synonym for happy.",
    "What is the boiling point of water?",
    "Translate 'good morning' to Spanish.",
];

fn messages(q: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage {
            role: "system".into(),
            content: "You are a helpful AI assistant.".into(),
        },
        ChatMessage::user(q),
    ]
}

/// An engine that records how long each generation took.
struct Timed {
    inner: Arc<dyn Engine>,
    last: std::sync::Mutex<Option<f64>>,
}

impl Timed {
    fn take(&self) -> Option<f64> {
        match self.last.lock() {
            Ok(mut l) => l.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

impl Engine for Timed {
    fn info(&self) -> agora_inference::ModelInfo {
        self.inner.info()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, agora_inference::Error> {
        self.inner.tokenize(text)
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, agora_inference::Error> {
        self.inner.detokenize(ids)
    }
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, agora_inference::Error> {
        self.inner.token_bytes(id)
    }
    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, agora_inference::Error> {
        self.inner.render_chat(messages)
    }
    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(&agora_inference::TokenEvent) -> bool,
    ) -> Result<agora_inference::GenerateOutput, agora_inference::Error> {
        let t = Instant::now();
        let out = self.inner.generate(request, on_token);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match self.last.lock() {
            Ok(mut l) => *l = Some(ms),
            Err(p) => *p.into_inner() = Some(ms),
        }
        out
    }
    fn score_top(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        top: usize,
    ) -> Result<Vec<agora_inference::TopScore>, agora_inference::Error> {
        self.inner.score_top(prompt, continuation, top)
    }
    fn prepare_scoring(&self) {
        self.inner.prepare_scoring()
    }
    fn score_greedy(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<agora_inference::GreedyScore>, agora_inference::Error> {
        self.inner.score_greedy(prompt, continuation)
    }
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// `agora bench gateway`.
pub fn bench_gateway(
    tokens: usize,
    rounds: usize,
    model_dir: Option<std::path::PathBuf>,
    tiny: bool,
) -> Result<()> {
    let engine: Arc<dyn Engine> = if tiny {
        Arc::new(agora_inference::TinyEngine::new())
    } else {
        let dir = model_dir.unwrap_or_else(agora_inference::model::default_dir);
        let path = agora_inference::model::locate(&dir)?;
        Arc::new(
            agora_inference_candle::CandleEngine::load(&path)
                .with_context(|| format!("loading {}", path.display()))?,
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(engine, tokens, rounds.max(1)))
}

async fn run(engine: Arc<dyn Engine>, tokens: usize, rounds: usize) -> Result<()> {
    let timed = Arc::new(Timed {
        inner: engine,
        last: std::sync::Mutex::new(None),
    });
    let engine: Arc<dyn Engine> = timed.clone();
    let prompts: Vec<&str> = (0..rounds).flat_map(|_| PROMPTS).collect();
    // Gateway and one miner over libp2p on loopback.
    let listen = || P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        topics: vec![ADVERT_TOPIC.to_owned()],
        ..P2pConfig::default()
    };
    let gkey = Arc::new(Keypair::from_seed(&[1; 32]));
    let (g2p, g_events) = P2p::start(*gkey.seed(), listen()).await?;
    let g_addr = loop {
        if let Some(a) = g2p.listen_addrs().await?.into_iter().next() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gateway = Gateway::new(
        g2p,
        gkey,
        GatewayConfig {
            chain_id: "bench".into(),
            ..GatewayConfig::default()
        },
    );
    tokio::spawn(crate::serving::pump_adverts(gateway.clone(), g_events));
    let mkey = Arc::new(Keypair::from_seed(&[2; 32]));
    let (m2p, mut m_events) = P2p::start(
        *mkey.seed(),
        P2pConfig {
            bootstrap: vec![g_addr],
            ..listen()
        },
    )
    .await?;
    tokio::spawn(async move { while m_events.recv().await.is_some() {} });
    let miner = Miner::new(
        mkey,
        engine.clone(),
        MinerConfig {
            netuid: 1,
            chain_id: "bench".into(),
            price_per_1k: Amount(1_000),
            capacity: 4,
            mode: MinerMode::Honest,
            board: None,
        },
    );
    let _tasks = miner.spawn(&m2p, Duration::from_millis(500))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.known_miners().is_empty() {
        if Instant::now() > deadline {
            return Err(anyhow!("the miner's advert never reached the gateway"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = agora_serve::openai::router(gateway.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = agora_chain::client::Client::new(&format!("http://{addr}"))?;
    let body = |q: &str, n: usize| {
        serde_json::json!({
            "messages": [
                {"role": "system", "content": "You are a helpful AI assistant."},
                {"role": "user", "content": q},
            ],
            "max_tokens": n,
            "temperature": 0,
        })
    };
    let local = |q: String| {
        let e = engine.clone();
        async move {
            let t = Instant::now();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let prompt = e.tokenize(&e.render_chat(&messages(&q))?)?;
                e.generate(&GenerateRequest::greedy(prompt, tokens), &mut |_| true)?;
                Ok(())
            })
            .await??;
            Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1e3)
        }
    };
    // Each path's engine time for the request just made.
    let engine_ms = || {
        timed
            .take()
            .ok_or_else(|| anyhow!("the engine did not run"))
    };
    let remote = |q: String| {
        let (c, b) = (client.clone(), body(&q, tokens));
        async move {
            let t = Instant::now();
            let (code, v) = c.post("/v1/chat/completions", &b).await?;
            if code != 200 {
                return Err(anyhow!("gateway answered {code}: {v}"));
            }
            Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1e3)
        }
    };
    // Warm both paths, then measure them in pairs, prompt by prompt, so drift hits both alike.
    local(PROMPTS[0].to_owned()).await?;
    remote(PROMPTS[0].to_owned()).await?;
    let (mut inproc, mut via) = (Vec::new(), Vec::new());
    let (mut overhead, mut slowdown) = (Vec::new(), Vec::new());
    timed.take();
    for (i, q) in prompts.iter().enumerate() {
        // Alternate which path goes first, so neither gains from the other's warm caches.
        let (mut e_in, mut e_via) = (0.0, 0.0);
        for step in 0..2 {
            if (i + step) % 2 == 0 {
                inproc.push(local(q.to_string()).await?);
                e_in = engine_ms()?;
            } else {
                let total = remote(q.to_string()).await?;
                e_via = engine_ms()?;
                via.push(total);
                overhead.push(total - e_via);
            }
        }
        slowdown.push(e_via / e_in.max(1e-9));
    }
    overhead.sort_by(f64::total_cmp);
    slowdown.sort_by(f64::total_cmp);
    let inproc_total: f64 = inproc.iter().sum::<f64>() / 1e3;
    let via_total: f64 = via.iter().sum::<f64>() / 1e3;
    let mut added: Vec<f64> = via.iter().zip(&inproc).map(|(g, i)| g - i).collect();
    added.sort_by(f64::total_cmp);
    let ratio = inproc_total / via_total;

    // 64 clients at once.
    let mut handles = Vec::new();
    for i in 0..64 {
        let c = client.clone();
        let b = body(PROMPTS[i % PROMPTS.len()], 8);
        handles.push(tokio::spawn(async move {
            c.post("/v1/chat/completions", &b)
                .await
                .map(|(code, _)| code)
        }));
    }
    let (mut ok, mut busy, mut errors) = (0, 0, 0);
    for h in handles {
        match h.await {
            Ok(Ok(200)) => ok += 1,
            Ok(Ok(429)) => busy += 1,
            _ => errors += 1,
        }
    }
    println!("| path | requests | p50 ms | p99 ms | requests/s |\n|---|---|---|---|---|");
    let mut sorted_in = inproc.clone();
    sorted_in.sort_by(f64::total_cmp);
    let mut sorted_via = via.clone();
    sorted_via.sort_by(f64::total_cmp);
    println!(
        "| in-process | {} | {:.1} | {:.1} | {:.2} |",
        prompts.len(),
        percentile(&sorted_in, 50),
        percentile(&sorted_in, 99),
        prompts.len() as f64 / inproc_total
    );
    println!(
        "| gateway + libp2p | {} | {:.1} | {:.1} | {:.2} |",
        prompts.len(),
        percentile(&sorted_via, 50),
        percentile(&sorted_via, 99),
        prompts.len() as f64 / via_total
    );
    println!("64 clients at once: {ok} answered, {busy} told 429, {errors} other errors");
    println!(
        "bench gateway/added_latency_p50_ms {:.2} ms",
        percentile(&overhead, 50)
    );
    println!(
        "bench gateway/added_latency_p99_ms {:.2} ms",
        percentile(&overhead, 99)
    );
    println!(
        "bench gateway/paired_difference_p50_ms {:.2} ms",
        percentile(&added, 50)
    );
    println!(
        "bench gateway/paired_difference_p99_ms {:.2} ms",
        percentile(&added, 99)
    );
    println!(
        "bench gateway/engine_time_via_over_inprocess_p50 {:.3} x",
        percentile(&slowdown, 50)
    );
    println!("bench gateway/throughput_vs_inprocess {ratio:.3} x");
    println!("bench gateway/errors_64_clients {errors} errors");
    println!("bench gateway/answered_64_clients {ok} requests");
    Ok(())
}
