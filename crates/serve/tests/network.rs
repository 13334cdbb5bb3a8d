//! Miners and a gateway over real libp2p on loopback (the tiny engine stands in for the model):
//! served and paid, a miner dying mid-stream, a bad receipt signature, busy miners, and the
//! OpenAI HTTP API.

use std::sync::Arc;
use std::time::Duration;

use agora_crypto::Keypair;
use agora_inference::TinyEngine;
use agora_p2p::{Event, P2p, P2pConfig};
use agora_primitives::{Amount, Call, Transaction};
use agora_serve::gateway::{ChatRequest, Gateway, GatewayConfig, GatewayError};
use agora_serve::miner::{Miner, MinerConfig, MinerMode};
use agora_serve::protocol::{ADVERT_TOPIC, Message};

const CHAIN: &str = "agora-serve-test";

fn p2p_config(bootstrap: Vec<agora_p2p::Addr>) -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        topics: vec![ADVERT_TOPIC.to_owned()],
        ..P2pConfig::default()
    }
}

struct World {
    gateway: Arc<Gateway>,
    gateway_key: Arc<Keypair>,
    miners: Vec<Arc<Miner>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn world(modes: &[(MinerMode, usize)]) -> World {
    let gateway_key = Arc::new(Keypair::from_seed(&[200; 32]));
    let (g2p, mut g_events) = P2p::start(*gateway_key.seed(), p2p_config(vec![]))
        .await
        .unwrap();
    let mut addr = None;
    for _ in 0..100 {
        if let Some(a) = g2p.listen_addrs().await.unwrap().into_iter().next() {
            addr = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g_addr = addr.unwrap();
    let gateway = Gateway::new(
        g2p.clone(),
        gateway_key.clone(),
        GatewayConfig {
            chain_id: CHAIN.into(),
            first_token_timeout: Duration::from_secs(10),
            ..GatewayConfig::default()
        },
    );
    let g = gateway.clone();
    let mut tasks = vec![tokio::spawn(async move {
        while let Some(e) = g_events.recv().await {
            if let Event::Gossip { topic, from, data } = e
                && topic == ADVERT_TOPIC
            {
                g.on_advert(from, &data);
            }
        }
    })];
    let mut miners = Vec::new();
    for (i, (mode, capacity)) in modes.iter().enumerate() {
        let key = Arc::new(Keypair::from_seed(&[10 + i as u8; 32]));
        let (p2p, _events) = P2p::start(*key.seed(), p2p_config(vec![g_addr.clone()]))
            .await
            .unwrap();
        let miner = Miner::new(
            key,
            Arc::new(TinyEngine::new()),
            MinerConfig {
                netuid: 1,
                chain_id: CHAIN.into(),
                price_per_1k: Amount(1_000_000 * (1 + i as u128)),
                capacity: *capacity,
                mode: *mode,
                board: None,
            },
        );
        tasks.extend(miner.spawn(&p2p, Duration::from_millis(200)).unwrap());
        // Keep the event receiver alive so the p2p task keeps running.
        tasks.push(tokio::spawn(async move {
            let mut ev = _events;
            while ev.recv().await.is_some() {}
        }));
        miners.push(miner);
    }
    // Wait until every miner's advert has arrived.
    for _ in 0..200 {
        if gateway.known_miners().len() == modes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gateway.known_miners().len(),
        modes.len(),
        "adverts did not arrive"
    );
    World {
        gateway,
        gateway_key,
        miners,
        _tasks: tasks,
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: "user".into(),
            content: text.into(),
        }],
        max_tokens: 12,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
        max_price_per_1k: None,
        logprobs: None,
    }
}

/// Wait until `n` countersigned receipts are waiting at the miner (they arrive just after
/// each answer), and take them.
async fn receipts_of(miner: &Miner, n: usize) -> Vec<agora_primitives::SignedReceipt> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(miner.take_receipts(100));
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_served_sealed_and_paid_on_the_ledger() {
    let w = world(&[(MinerMode::Honest, 4)]).await;
    let c = w.gateway.complete(&ask("hello there"), None).await.unwrap();
    assert_eq!(c.completion_tokens, 12);
    assert_eq!(c.finish_reason, "length");
    let receipt = c.receipt.clone().expect("countersigned receipt");
    assert_eq!(receipt.miner, w.miners[0].hotkey());
    assert_eq!(receipt.gateway, w.gateway_key.address());
    assert!(receipt.prompt_tokens > 0);
    let signed = receipts_of(&w.miners[0], 1).await;
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0].receipt, receipt);

    // Settle on the ledger: the gateway deposits escrow, the miner submits its receipts.
    let gateway = &w.gateway_key;
    let miner_key = Keypair::from_seed(&[10; 32]);
    let state = agora_ledger::genesis::Genesis {
        chain_id: CHAIN.into(),
        params: agora_ledger::state::ChainParams::devnet(),
        balances: vec![
            (gateway.address(), Amount::agora(100)),
            (miner_key.address(), Amount::agora(1)),
        ],
        stakes: vec![],
        subnets: vec![],
    }
    .into_state()
    .unwrap();
    let tx = |k: &Keypair, nonce: u64, call: Call| {
        agora_crypto::sign_tx(
            k,
            Transaction {
                chain_id: CHAIN.into(),
                sender: k.address(),
                nonce,
                fee: Amount(1_000),
                expiry_height: 100,
                call,
            },
        )
    };
    let (block, _) = agora_ledger::build_block(
        &state,
        vec![
            tx(
                gateway,
                0,
                Call::EscrowDeposit {
                    amount: Amount::agora(10),
                },
            ),
            tx(&miner_key, 0, Call::Settle { receipts: signed }),
        ],
        miner_key.address(),
        agora_primitives::Hash::default(),
    )
    .unwrap();
    let after = agora_ledger::apply_block(&state, &block).unwrap().state;
    let cost = receipt.cost().unwrap();
    assert!(cost > Amount::ZERO);
    assert_eq!(
        after.escrow_of(&gateway.address()),
        Amount::agora(10).checked_sub(cost).unwrap()
    );
}

/// Only the first miner (the cheapest) is within this cap.
fn only_first_miner(mut r: ChatRequest) -> ChatRequest {
    r.max_price_per_1k = Some(Amount(1_000_000));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_dying_mid_stream_fails_the_request_and_the_next_goes_elsewhere() {
    let w = world(&[(MinerMode::DieMidStream, 4), (MinerMode::Honest, 4)]).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let e = w
        .gateway
        .complete(&only_first_miner(ask("q")), Some(tx))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::MidStream(m) if m.contains("closed")),
        "{e}"
    );
    // The client saw the first pieces before the clear error.
    assert!(drain.await.unwrap() > 0);
    // The next requests go to the other miner.
    for i in 0..4 {
        let c = w
            .gateway
            .complete(&ask(&format!("q{i}")), None)
            .await
            .unwrap();
        assert_eq!(c.miner, w.miners[1].hotkey());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_receipt_signature_is_not_paid_and_the_miner_is_avoided() {
    let w = world(&[(MinerMode::BadReceiptSignature, 4), (MinerMode::Honest, 4)]).await;
    let c = w
        .gateway
        .complete(&only_first_miner(ask("r")), None)
        .await
        .unwrap();
    assert_eq!(c.miner, w.miners[0].hotkey());
    assert!(
        c.receipt.is_none(),
        "a bad receipt must not be countersigned"
    );
    for i in 0..4 {
        let c = w
            .gateway
            .complete(&ask(&format!("r{i}")), None)
            .await
            .unwrap();
        assert_eq!(
            c.miner,
            w.miners[1].hotkey(),
            "the cheating miner is avoided"
        );
        assert!(c.receipt.is_some());
    }
    // With the cap that only the cheater meets, nobody is left.
    let e = w
        .gateway
        .complete(&only_first_miner(ask("again")), None)
        .await
        .unwrap_err();
    assert_eq!(e, GatewayError::NoMiners(1));
    assert!(w.miners[0].take_receipts(100).is_empty(), "nothing payable");
    assert_eq!(receipts_of(&w.miners[1], 4).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_miner_busy_is_a_busy_error() {
    let w = world(&[(MinerMode::Honest, 0), (MinerMode::Honest, 0)]).await;
    let e = w.gateway.complete(&ask("anyone?"), None).await.unwrap_err();
    assert_eq!(e, GatewayError::Busy);
    // Over HTTP that is a 429 with an OpenAI-style error.
    let app = agora_serve::openai::router(w.gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = agora_chain_free_client(addr);
    let body = r#"{"messages": [{"role": "user", "content": "anyone?"}], "max_tokens": 4}"#;
    let (status, v) = client("POST", "/v1/chat/completions", body.to_owned()).await;
    assert_eq!(status, 429, "{v}");
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // A price cap below every miner's price finds nobody.
    let mut cheap = ask("cheap");
    cheap.max_price_per_1k = Some(Amount(1));
    let e = w.gateway.complete(&cheap, None).await.unwrap_err();
    assert_eq!(e, GatewayError::NoMiners(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_api_answers_json_and_events_and_refuses_bad_requests() {
    let w = world(&[(MinerMode::Honest, 4)]).await;
    let app = agora_serve::openai::router(w.gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = agora_chain_free_client(addr);
    let body = serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0
    });
    let (status, v) = client("POST", "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny");
    // A model nobody serves is refused, naming the one served, not answered under its name.
    let mut other = body.clone();
    other["model"] = serde_json::json!("gpt-4");
    let (status, e) = client("POST", "/v1/chat/completions", other.to_string()).await;
    assert_eq!(status, 404, "{e}");
    let e: serde_json::Value = serde_json::from_str(&e).unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
    assert_eq!(e["error"]["param"], "model");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-4") && message.contains("tiny"),
        "{message}"
    );
    // Content as OpenAI's text parts, and the `developer` role, are taken as text and system;
    // an image part or a tool message is refused by name.
    let parts = serde_json::json!({
        "model": "tiny",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}
        ],
        "max_tokens": 3
    });
    let (status, answered) = client("POST", "/v1/chat/completions", parts.to_string()).await;
    assert_eq!(status, 200, "{answered}");
    let refused = [
        (
            serde_json::json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "\"image_url\"",
        ),
        (
            serde_json::json!([{"role": "tool", "content": "42"}]),
            "\"tool\"",
        ),
        (
            serde_json::json!([{"role": "user", "content": null}]),
            "content must be",
        ),
        (
            serde_json::json!([{"role": "user", "content": [{"type": "text"}]}]),
            "string `text`",
        ),
    ];
    for (messages, says) in refused {
        let body = serde_json::json!({"messages": messages, "max_tokens": 3});
        let (status, e) = client("POST", "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 400, "{e}");
        let e: serde_json::Value = serde_json::from_str(&e).unwrap();
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message} should say {says}");
        assert_eq!(e["error"]["param"], "messages");
    }
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap() + 5
    );

    let mut streaming = body.clone();
    streaming["stream"] = serde_json::json!(true);
    streaming["stream_options"] = serde_json::json!({"include_usage": true});
    let (status, text) = client("POST", "/v1/chat/completions", streaming.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let content: usize = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(content >= 5, "{text}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length")
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);

    // A stop sequence and what follows it are left out of the answer, as one JSON body and as
    // streamed pieces. (The miner stops at it, having sent the whole token that completed it;
    // the gateway cuts the text.)
    let whole = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let chars: Vec<char> = whole.chars().collect();
    assert!(chars.len() >= 4, "{whole:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let before = whole[..whole.find(&stop).unwrap()].to_owned();
    let mut stopped = body.clone();
    stopped["stop"] = serde_json::json!([stop]);
    let (status, got) = client("POST", "/v1/chat/completions", stopped.to_string()).await;
    assert_eq!(status, 200, "{got}");
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["choices"][0]["message"]["content"], before.as_str());
    assert_eq!(got["choices"][0]["finish_reason"], "stop");
    stopped["stream"] = serde_json::json!(true);
    let (status, events) = client("POST", "/v1/chat/completions", stopped.to_string()).await;
    assert_eq!(status, 200, "{events}");
    let streamed: String = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let c: serde_json::Value = serde_json::from_str(d).unwrap();
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, before, "stop {stop:?} in {whole:?}");

    // OpenAI fields this gateway does not implement pass at values that ask for nothing (as
    // frameworks send them), and `null` counts as left out...
    let mut neutral = body.clone();
    for (field, v) in [
        ("presence_penalty", serde_json::json!(0)),
        ("frequency_penalty", serde_json::json!(0.0)),
        ("logprobs", serde_json::json!(false)),
        ("user", serde_json::json!("alice")),
        ("logit_bias", serde_json::json!({})),
        ("tools", serde_json::json!([])),
        ("tool_choice", serde_json::json!("none")),
        ("response_format", serde_json::json!({"type": "text"})),
        ("stream", serde_json::Value::Null),
        ("seed", serde_json::Value::Null),
    ] {
        neutral[field] = v;
    }
    let (status, v) = client("POST", "/v1/chat/completions", neutral.to_string()).await;
    assert_eq!(status, 200, "{v}");
    // ...and are refused, by name, when they ask for something; so is a field OpenAI does not
    // have.
    for (field, v, says) in [
        ("presence_penalty", serde_json::json!(-1), "not supported"),
        ("frequency_penalty", serde_json::json!(0.5), "not supported"),
        (
            "tools",
            serde_json::json!([{"type": "function"}]),
            "not supported",
        ),
        (
            "bogus",
            serde_json::json!(1),
            "unrecognized request argument",
        ),
    ] {
        let mut asks = body.clone();
        asks[field] = v;
        let (status, v) = client("POST", "/v1/chat/completions", asks.to_string()).await;
        assert_eq!(status, 400, "{v}");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["error"]["param"], field, "{v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says) && message.contains(field), "{v}");
    }

    // Log-probabilities: each token's, and its most likely alternatives', from the miner's
    // engine (greedy here, so every token is its position's first alternative).
    let mut with = body.clone();
    with["logprobs"] = serde_json::json!(true);
    with["top_logprobs"] = serde_json::json!(3);
    let (status, v) = client("POST", "/v1/chat/completions", with.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 5, "{v}");
    let mut all = Vec::new();
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{t}");
        assert_eq!(t["token"], top[0]["token"], "{t}");
        assert_eq!(t["logprob"], top[0]["logprob"], "{t}");
        let lp = |x: &serde_json::Value| x["logprob"].as_f64().unwrap();
        assert!(lp(t) <= 0.0 && lp(&top[1]) <= lp(&top[0]) && lp(&top[2]) <= lp(&top[1]));
        let bytes: Vec<u8> = serde_json::from_value(t["bytes"].clone()).unwrap();
        assert!(!bytes.is_empty(), "{t}");
        assert_eq!(t["token"], String::from_utf8_lossy(&bytes).as_ref(), "{t}");
        all.extend(bytes);
    }
    // The answer's text is its tokens' bytes as generation streams them: complete characters,
    // an invalid byte as U+FFFD, a character the last token leaves unfinished left out (the
    // tiny engine's tokens are single bytes; the real model's are checked in
    // `scripts/openai_check.py`).
    let (text, _) = agora_inference::complete_text(&all);
    assert_eq!(text, v["choices"][0]["message"]["content"], "{v}");
    // Streamed: each token's chunk carries its own.
    with["stream"] = serde_json::json!(true);
    let (status, text) = client("POST", "/v1/chat/completions", with.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let carried = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .inspect(|c| assert_eq!(c.len(), 1))
        .count();
    assert_eq!(carried, 5, "{text}");
    // Not asked for: none.
    assert!(chunks.iter().all(|c| c["choices"][0]["logprobs"].is_null()));
    let (_, plain) = client("POST", "/v1/chat/completions", body.to_string()).await;
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
    for (top, logprobs) in [(21, true), (2, false)] {
        let mut bad = body.clone();
        bad["top_logprobs"] = serde_json::json!(top);
        bad["logprobs"] = serde_json::json!(logprobs);
        let (status, v) = client("POST", "/v1/chat/completions", bad.to_string()).await;
        assert_eq!(status, 400, "{v}");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["error"]["param"], "top_logprobs", "{v}");
    }

    for (body, status, code) in [
        ("{not json".to_owned(), 400, "invalid_request"),
        (r#"{"messages": []}"#.to_owned(), 400, "invalid_request"),
        (
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#.to_owned(),
            400,
            "invalid_request",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#.to_owned(),
            400,
            "invalid_request",
        ),
        (" ".repeat(2 << 20), 413, "request_too_large"),
    ] {
        let (got, v) = client("POST", "/v1/chat/completions", body).await;
        assert_eq!(got, status, "{v}");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string());
    }
    let (status, v) = client("GET", "/v1/models", String::new()).await;
    assert_eq!(status, 200);
    assert!(v.contains("\"object\":\"list\""), "{v}");
    let (status, _) = client("GET", "/nope", String::new()).await;
    assert_eq!(status, 404);
}

type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send>>;

/// A minimal HTTP/1.1 client returning status and body text.
fn agora_chain_free_client(addr: std::net::SocketAddr) -> impl Fn(&str, &str, String) -> Reply {
    move |method: &str, path: &str, body: String| {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let _ = s.write_all(body.as_bytes()).await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
            // Chunked bodies: keep the data lines, drop the chunk sizes.
            let body = if text
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                body.lines()
                    .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()) || l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                body.to_owned()
            };
            (status, body)
        })
    }
}
