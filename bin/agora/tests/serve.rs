//! The serving network end to end with the real binary and the real model: `agora devnet
//! --demo` serves and settles; the official `openai` Python package talks to the gateway.

mod common;

use common::{Running, agora, tx_body};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn devnet_serves_settles_and_the_openai_package_talks_to_the_gateway() {
    let dir = std::env::temp_dir().join(format!("agora-serve-devnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    // --demo: three requests through the gateway, answered by miners, paid on the ledger.
    let out = agora()
        .args([
            "devnet",
            "--dir",
            d,
            "--api-port",
            "20300",
            "--p2p-port",
            "20400",
            "--demo",
        ])
        .env("AGORA_LOG", "error,arc_malachitebft_network=off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("OpenAI API  http://127.0.0.1:20300/v1"),
        "{text}"
    );
    assert!(text.contains("3 requests served and settled"), "{text}");
    let paid: Vec<&str> = text.lines().filter(|l| l.contains("paid")).collect();
    assert_eq!(paid.len(), 3, "{text}");
    assert!(
        paid.iter().any(|l| !l.contains("paid 0 AGORA")),
        "someone was paid: {text}"
    );

    // The same devnet again (resumed), driven by the openai package.
    let node = Running(
        agora()
            .args([
                "devnet",
                "--dir",
                d,
                "--api-port",
                "20301",
                "--p2p-port",
                "20410",
            ])
            .env("AGORA_LOG", "error,arc_malachitebft_network=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = agora_chain::client::Client::new("http://127.0.0.1:20301").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((200, v)) = rt.block_on(client.get("/v1/models"))
            && v["data"].as_array().is_some_and(|d| !d.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never listed a model"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let python = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/openai_venv"
    ))
    .output()
    .expect("scripts/openai_venv runs");
    assert!(
        python.status.success(),
        "installing the openai package failed: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    let check = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/openai_check.py"
        ))
        .arg("http://127.0.0.1:20301/v1")
        .output()
        .unwrap();
    drop(node);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.contains("plain: "), "{out}");
    assert!(out.contains("stream: "), "{out}");
    assert!(out.contains("logprobs: "), "{out}");
    assert!(out.contains("content parts: same answer"), "{out}");
    assert!(out.contains("unknown model: 404"), "{out}");
    assert!(out.contains("bad request: 400"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agora_node_runs_a_gateway_and_a_miner_from_its_config() {
    use agora_crypto::Keypair;
    use agora_primitives::{Amount, Call, Hash, ServeInfo};
    let dir = std::env::temp_dir().join(format!("agora-serve-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let out = agora()
        .args([
            "testnet",
            "init",
            "--validators",
            "1",
            "--dir",
            d,
            "--api-port",
            "20500",
            "--p2p-port",
            "20550",
            "--gossip-port",
            "20575",
            "--empty-interval-ms",
            "200",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| agora_chain::node::read_key(&dir.join(p)).unwrap();
    // The validator's key also serves as the miner's hotkey; the faucet pays as the gateway.
    let miner = read("node0/validator.key");
    let gateway = read("faucet.key");
    let config = dir.join("node0/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[serve]\nlisten = \"/ip4/127.0.0.1/tcp/20590\"\nminer_key = \"validator.key\"\ngateway_key = \"../faucet.key\"\nprice_per_1k = \"0.01\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let node = Running(
        agora()
            .args(["node", "--config", config.to_str().unwrap()])
            .env("AGORA_LOG", "error,arc_malachitebft_network=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = agora_chain::client::Client::new("http://127.0.0.1:20500").unwrap();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(
        "the chain",
        &|| matches!(rt.block_on(client.get("/chain/status")), Ok((200, v)) if v["height"].as_u64() >= Some(1)),
    );
    let status = rt.block_on(client.get("/chain/status")).unwrap().1;
    let chain = status["chain_id"].as_str().unwrap().to_owned();
    let tx = |k: &Keypair, nonce: u64, call: Call| tx_body(&chain, k, nonce, call);
    let peer_id = agora_p2p::peer_id_from_seed(*miner.seed());
    for body in [
        tx(
            &miner,
            0,
            Call::Register {
                netuid: 1,
                hotkey: miner.address(),
                max_burn: Amount::agora(100),
            },
        ),
        tx(
            &miner,
            1,
            Call::Serve {
                netuid: 1,
                info: ServeInfo {
                    peer_id: peer_id.to_bytes(),
                    addresses: vec!["/ip4/127.0.0.1/tcp/20590".into()],
                    model_hash: Hash::default(),
                    price_per_1k_tokens: Amount(10_000_000),
                },
            },
        ),
        tx(
            &gateway,
            0,
            Call::EscrowDeposit {
                amount: Amount::agora(100),
            },
        ),
    ] {
        let (code, v) = rt.block_on(client.post("/chain/tx", &body)).unwrap();
        assert_eq!(code, 200, "{v}");
    }
    let ask = serde_json::json!({
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    // Once registered and advertised, the node's own gateway routes to its own miner.
    wait("an answer", &|| {
        matches!(
            rt.block_on(client.post("/v1/chat/completions", &ask)),
            Ok((200, _))
        )
    });
    let escrow = || {
        rt.block_on(client.get(&format!("/chain/account/{}", gateway.address())))
            .unwrap()
            .1["escrow"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait("the settlement", &|| escrow() != "100");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
