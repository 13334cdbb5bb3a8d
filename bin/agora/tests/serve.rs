//! The serving network end to end with the real binary and the real model: `agora devnet
//! --demo` serves and settles; the official `openai` Python package talks to the gateway.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agora() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agora"))
}

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
    let mut node = agora()
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
        .unwrap();
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
    let python = Command::new(concat!(
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
    let check = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/openai_check.py"
        ))
        .arg("http://127.0.0.1:20301/v1")
        .output()
        .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.contains("plain: "), "{out}");
    assert!(out.contains("stream: "), "{out}");
    assert!(out.contains("bad request: 400"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
