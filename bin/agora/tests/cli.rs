//! The real `agora` binary, driven as a user would: keys, genesis, queries, transactions, epoch
//! vectors, and bad input (one-line errors, non-zero exit, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("agora-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Home(dir)
    }

    fn agora(&self, args: &[&str]) -> Output {
        self.agora_with(args, "test-passphrase", None)
    }

    fn agora_with(&self, args: &[&str], passphrase: &str, stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
        cmd.args(args)
            .env("AGORA_HOME", &self.0)
            .env("AGORA_PASSPHRASE", passphrase);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run agora");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("agora output")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure must be a one-line `error: ...` naming the problem, never a panic.
fn assert_clean_failure(o: &Output, mentions: &str) {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(o)
    );
    let err = stderr(o);
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(mentions),
        "{err}"
    );
}

#[test]
fn keys_are_created_listed_exported_imported_and_kept_private() {
    let home = Home::new("keys");
    let o = home.agora(&["keys", "new", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let address = stdout(&o)
        .split_whitespace()
        .nth(1)
        .expect("address")
        .to_owned();
    let file = home.0.join("keys/alice.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&file).unwrap().contains("seed"));

    assert_eq!(
        stdout(&home.agora(&["keys", "show", "alice"])).trim(),
        address
    );
    assert!(stdout(&home.agora(&["keys", "list"])).contains(&address));

    let seed = stdout(&home.agora(&["keys", "export", "alice"]))
        .trim()
        .to_owned();
    assert_eq!(seed.len(), 64);
    let o = home.agora_with(
        &["keys", "import", "alice2"],
        "other",
        Some(&format!("{seed}\n")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&home.agora(&["keys", "show", "alice2"])).trim(),
        address
    );

    assert_clean_failure(
        &home.agora_with(&["keys", "export", "alice"], "wrong", None),
        "wrong passphrase",
    );
    assert_clean_failure(&home.agora(&["keys", "show", "nobody"]), "not found");
    assert_clean_failure(&home.agora(&["keys", "new", "alice"]), "already exists");
    assert_clean_failure(
        &home.agora_with(&["keys", "import", "x"], "p", Some("zz\n")),
        "hexadecimal",
    );
}

fn write_genesis(home: &Home, alice: &str) -> PathBuf {
    let path = home.0.join("genesis.json");
    std::fs::create_dir_all(&home.0).unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{{"chain_id":"agora-cli","balances":[{{"address":"{alice}","amount":"1000"}}],
               "subnets":[{{"netuid":1,"owner":"{alice}","emission_share_ppm":1000000,"params":{{"tempo":10}}}}]}}"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_genesis_initialises_a_data_directory_that_queries_read() {
    let home = Home::new("query");
    let alice = stdout(&home.agora(&["keys", "new", "alice"]))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let genesis = write_genesis(&home, &alice);
    let o = home.agora(&["init", "--genesis", genesis.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = home.agora(&["query", "account", &alice, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["balance"], "1000");
    assert_eq!(v["nonce"], 0);
    let o = home.agora(&["query", "subnet", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["params"]["tempo"], 10);
    let o = home.agora(&["query", "metagraph", "--subnet", "1", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap(),
        serde_json::json!([])
    );
    assert_clean_failure(
        &home.agora(&["query", "subnet", "9"]),
        "subnet 9 does not exist",
    );
    assert_clean_failure(&home.agora(&["query", "account", "xyz"]), "address");
    assert_clean_failure(
        &home.agora(&[
            "query",
            "account",
            &alice,
            "--data-dir",
            "/nonexistent/agora",
        ]),
        "no chain data",
    );

    // A signed transfer from the data directory's nonce and chain id decodes and verifies.
    let bob = "11".repeat(32);
    let o = home.agora(&[
        "tx",
        "transfer",
        "--from",
        "alice",
        "--to",
        &bob,
        "--amount",
        "2.5",
        "--data-dir",
        home.0.join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = agora_primitives::from_hex(stdout(&o).trim()).expect("hex");
    let signed = agora_primitives::SignedTransaction::from_bytes(&bytes).expect("decodes");
    agora_crypto::verify_tx(&signed).expect("verifies");
    assert_eq!(signed.tx.chain_id, "agora-cli");
    assert_eq!(signed.tx.nonce, 0);
    assert_eq!(
        signed.tx.call,
        agora_primitives::Call::Transfer {
            to: bob.parse().unwrap(),
            amount: "2.5".parse().unwrap()
        }
    );

    assert_clean_failure(
        &home.agora(&[
            "tx", "transfer", "--from", "alice", "--to", &bob, "--amount", "abc", "--nonce", "0",
        ]),
        "--amount",
    );
    assert_clean_failure(
        &home.agora(&[
            "tx", "transfer", "--from", "alice", "--to", "12", "--amount", "1", "--nonce", "0",
        ]),
        "--to",
    );
    assert_clean_failure(
        &home.agora(&[
            "tx", "transfer", "--from", "ghost", "--to", &bob, "--amount", "1", "--nonce", "0",
        ]),
        "not found",
    );
    assert_clean_failure(
        &home.agora(&["init", "--genesis", "/nonexistent/genesis.json"]),
        "not found",
    );
    std::fs::write(home.0.join("bad.json"), r#"{"chain_id":"x","surprise":1}"#).unwrap();
    assert_clean_failure(
        &home.agora(&[
            "init",
            "--genesis",
            home.0.join("bad.json").to_str().unwrap(),
        ]),
        "unknown field",
    );
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/yuma")
}

#[test]
fn epoch_check_reports_ok_mismatch_and_malformed_with_distinct_exit_codes() {
    let home = Home::new("epoch");
    std::fs::create_dir_all(&home.0).unwrap();
    let good = vectors().join("bonds_step_block2.json");
    let o = home.agora(&["epoch", "--check", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "ok bonds_step_block2\n1 passed, 0 failed\n");

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    v["expected"]["incentive"][5] = serde_json::json!(1);
    let bad = home.0.join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = home.agora(&["epoch", "--check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "MISMATCH bonds_step_block2 incentive[5]: got 13107 want 1\n0 passed, 1 failed\n"
    );

    v["input"]["weights"][0][0][0] = serde_json::json!(99);
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = home.agora(&["epoch", "--input", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("input.weights[0][0][0]"),
        "{}",
        stderr(&o)
    );

    let o = home.agora(&["epoch", "--input", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    assert_eq!(out, want["expected"]);
}

#[test]
fn chat_answers_paris_and_greedy_output_does_not_depend_on_the_thread_count() {
    let dir = agora_inference::model::default_dir();
    agora_inference::model::fetch(&dir, &mut |_| {}).expect("fetch the model");
    let run = |threads: &str| {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([
                "chat",
                "--max-tokens",
                "32",
                "What is the capital of France?",
            ])
            .env("RAYON_NUM_THREADS", threads)
            .env("AGORA_MODEL_DIR", &dir)
            .output()
            .expect("run agora chat")
    };
    let one = run("1");
    let two = run("2");
    assert!(one.status.success(), "{}", stderr(&one));
    assert!(two.status.success(), "{}", stderr(&two));
    assert_eq!(
        stdout(&one),
        stdout(&two),
        "greedy output changed with the thread count"
    );
    assert!(stdout(&one).contains("Paris"), "{}", stdout(&one));
}

#[test]
fn chat_without_the_model_says_how_to_get_it() {
    let home = Home::new("nomodel");
    let o = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["chat", "hello"])
        .env("AGORA_MODEL_DIR", home.0.join("empty"))
        .output()
        .expect("run agora chat");
    assert_clean_failure(&o, "agora model fetch");
}
