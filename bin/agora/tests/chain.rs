//! Multi-node chain tests with real `agora node` processes on loopback: Malachite over libp2p
//! TCP, the chain API over HTTP, redb stores on disk. Named by topology.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_chain::client::Client;
use agora_crypto::Keypair;
use agora_primitives::{Address, Amount, Call, SignedTransaction, Transaction, to_hex};
use serde_json::{Value, json};

struct Net {
    dir: PathBuf,
    api_port: u16,
    configs: Vec<PathBuf>,
    procs: Vec<Option<Child>>,
    rt: tokio::runtime::Runtime,
}

impl Net {
    /// Write a testnet with `validators` + `full` nodes; start none yet.
    fn init(name: &str, base: u16, validators: usize, full: usize, extra: &str) -> Net {
        let dir = std::env::temp_dir().join(format!("agora-chain-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([
                "testnet",
                "init",
                "--validators",
                &validators.to_string(),
                "--full-nodes",
                &full.to_string(),
                "--dir",
                dir.to_str().unwrap(),
                "--api-port",
                &base.to_string(),
                "--p2p-port",
                &(base + 50).to_string(),
                "--gossip-port",
                &(base + 75).to_string(),
                "--empty-interval-ms",
                "200",
            ])
            .output()
            .expect("run agora testnet init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut configs = Vec::new();
        for (i, line) in stdout.lines().enumerate() {
            assert!(
                line.starts_with(&format!("node{i} api=http://127.0.0.1:")),
                "{line}"
            );
            let config = line.split("config=").nth(1).expect("config=").to_owned();
            configs.push(PathBuf::from(config));
        }
        assert_eq!(configs.len(), validators + full);
        if !extra.is_empty() {
            for c in &configs {
                let mut text = std::fs::read_to_string(c).unwrap();
                text.push_str(extra);
                std::fs::write(c, text).unwrap();
            }
        }
        let procs = (0..configs.len()).map(|_| None).collect();
        Net {
            dir,
            api_port: base,
            configs,
            procs,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn append_config(&self, i: usize, text: &str) {
        let mut t = std::fs::read_to_string(&self.configs[i]).unwrap();
        t.push_str(text);
        std::fs::write(&self.configs[i], t).unwrap();
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("node{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["node", "--config", self.configs[i].to_str().unwrap()])
            .env(
                "AGORA_LOG",
                "warn,agora_chain=info,arc_malachitebft_network=off",
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agora node");
        self.procs[i] = Some(child);
    }

    fn start_all(&mut self) {
        for i in 0..self.configs.len() {
            self.start(i);
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&format!("http://127.0.0.1:{}", self.api_port as usize + i)).unwrap()
    }

    fn get(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        self.rt.block_on(self.client(i).get(path)).ok()
    }

    fn post(&self, i: usize, path: &str, body: &Value) -> (u16, Value) {
        self.rt
            .block_on(self.client(i).post(path, body))
            .expect("node answers")
    }

    fn height(&self, i: usize) -> Option<u64> {
        let (code, v) = self.get(i, "/chain/status")?;
        (code == 200).then(|| v["height"].as_u64()).flatten()
    }

    fn wait_height(&self, i: usize, h: u64, secs: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(got) = self.height(i)
                && got >= h
            {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "node{i} did not reach height {h} in {secs} s (at {:?}); log: {}",
                self.height(i),
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// (hash, state_root, proposer) of the block at `h` on node `i`.
    fn block(&self, i: usize, h: u64) -> (String, String, String) {
        let (code, v) = self
            .get(i, &format!("/chain/block/{h}"))
            .expect("node answers");
        assert_eq!(code, 200, "node{i} block {h}: {v}");
        (
            v["hash"].as_str().unwrap().to_owned(),
            v["state_root"].as_str().unwrap().to_owned(),
            v["proposer"].as_str().unwrap().to_owned(),
        )
    }

    /// Every listed node has the same block hash and state root at every height up to `h`.
    fn assert_agree(&self, nodes: &[usize], h: u64) {
        for height in 1..=h {
            let first = self.block(nodes[0], height);
            for &i in &nodes[1..] {
                assert_eq!(
                    self.block(i, height),
                    first,
                    "node{i} and node{} differ at height {height}",
                    nodes[0]
                );
            }
        }
    }

    fn faucet(&self) -> Keypair {
        let text = std::fs::read_to_string(self.dir.join("faucet.key")).unwrap();
        let seed: [u8; 32] = agora_primitives::from_hex(text.trim())
            .unwrap()
            .try_into()
            .unwrap();
        Keypair::from_seed(&seed)
    }

    fn chain_id(&self) -> String {
        self.get(0, "/chain/status").unwrap().1["chain_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

fn transfer(
    chain_id: &str,
    key: &Keypair,
    nonce: u64,
    to: Address,
    amount: u64,
) -> SignedTransaction {
    agora_crypto::sign_tx(
        key,
        Transaction {
            chain_id: chain_id.to_owned(),
            sender: key.address(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 1_000_000,
            call: Call::Transfer {
                to,
                amount: Amount(u128::from(amount)),
            },
        },
    )
}

fn tx_hex(tx: &SignedTransaction) -> String {
    to_hex(&agora_codec::encode_to_vec(tx))
}

fn wait_included(net: &Net, node: usize, hash: &str, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some((200, v)) = net.get(node, &format!("/chain/tx/{hash}")) {
            match v["status"].as_str() {
                Some("included") => return v["height"].as_u64().unwrap(),
                Some("rejected") => panic!("{hash} rejected: {v}"),
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "{hash} not included in {secs} s: node{node} says {:?}, status {:?}",
            net.get(node, &format!("/chain/tx/{hash}")),
            net.get(node, "/chain/status").map(|s| s.1["p2p"].clone())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn balance(net: &Net, node: usize, who: &Address) -> (String, u64) {
    let (code, v) = net.get(node, &format!("/chain/account/{who}")).unwrap();
    assert_eq!(code, 200, "{v}");
    (
        v["balance"].as_str().unwrap().to_owned(),
        v["nonce"].as_u64().unwrap(),
    )
}

#[test]
fn n4_validators_finalize_and_agree_on_every_state_root() {
    let mut net = Net::init("agree", 19100, 4, 0, "");
    net.start_all();
    net.wait_height(0, 3, 60);
    // Transactions sent to one node reach the proposers through the relay.
    let faucet = net.faucet();
    let chain = net.chain_id();
    let to = Address([42; 32]);
    let mut last = String::new();
    for nonce in 0..20u64 {
        let tx = transfer(&chain, &faucet, nonce, to, 1_000 + nonce);
        let (code, v) = net.post(
            (nonce % 4) as usize,
            "/chain/tx",
            &json!({"tx": tx_hex(&tx)}),
        );
        assert_eq!(code, 200, "{v}");
        last = v["hash"].as_str().unwrap().to_owned();
    }
    let included_at = wait_included(&net, 2, &last, 60);
    let h = net.wait_height(0, included_at + 2, 60);
    for i in 1..4 {
        net.wait_height(i, h, 60);
    }
    net.assert_agree(&[0, 1, 2, 3], h);
    let expected: u64 = (0..20u64).map(|n| 1_000 + n).sum();
    for i in 0..4 {
        let (bal, _) = balance(&net, i, &to);
        assert_eq!(bal, Amount(u128::from(expected)).to_string());
    }
    // The event stream delivers finalized blocks as they come.
    let (code, text) = net
        .rt
        .block_on(
            net.client(1)
                .read_stream("/chain/events", 200, Duration::from_secs(10)),
        )
        .expect("events stream");
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("event: block"), "{text}");
    assert!(text.contains("\"state_root\""), "{text}");
}

#[test]
fn n4_one_crashed_chain_continues_and_it_catches_up_on_restart() {
    let mut net = Net::init("crash1", 19200, 4, 0, "");
    net.start_all();
    let h0 = net.wait_height(0, 3, 60);
    net.kill(3);
    let h1 = net.wait_height(0, h0 + 5, 60);
    for i in 1..3 {
        net.wait_height(i, h1, 30);
    }
    net.assert_agree(&[0, 1, 2], h1);
    net.start(3);
    let h2 = net.wait_height(0, h1 + 2, 60);
    net.wait_height(3, h2, 60);
    net.assert_agree(&[0, 1, 2, 3], h2);
}

#[test]
fn n4_two_stopped_finalization_halts_without_fork_then_resumes() {
    let mut net = Net::init("halt", 19300, 4, 0, "");
    net.start_all();
    net.wait_height(0, 3, 60);
    net.kill(2);
    net.kill(3);
    // Let in-flight heights settle, then check that nothing finalizes.
    std::thread::sleep(Duration::from_secs(2));
    let stuck = net.height(0).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        net.height(0).unwrap(),
        stuck,
        "two of four validators must not finalize"
    );
    assert_eq!(net.height(1).unwrap(), stuck);
    net.assert_agree(&[0, 1], stuck);
    net.start(2);
    let h = net.wait_height(0, stuck + 3, 90);
    net.wait_height(1, h, 30);
    net.wait_height(2, h, 60);
    net.assert_agree(&[0, 1, 2], h);
}

#[test]
fn n4_plus_full_node_joining_late_syncs_to_the_same_root() {
    let mut net = Net::init("late", 19400, 4, 1, "");
    for i in 0..4 {
        net.start(i);
    }
    let h = net.wait_height(0, 12, 90);
    net.start(4);
    let h2 = net.wait_height(4, h + 2, 90);
    net.wait_height(0, h2, 30);
    net.assert_agree(&[0, 4], h2);
    let (code, status) = net.get(4, "/chain/status").unwrap();
    assert_eq!(code, 200);
    assert_eq!(status["validators"].as_array().unwrap().len(), 4);
}

#[test]
fn n4_validator_killed_during_commits_always_restarts_cleanly() {
    let mut net = Net::init("kill9", 19500, 4, 0, "");
    net.start_all();
    net.wait_height(0, 2, 60);
    let faucet = net.faucet();
    let chain = net.chain_id();
    let mut nonce = 0u64;
    for round in 0..10u64 {
        // Keep blocks busy so kills land inside commits.
        for _ in 0..20 {
            let tx = transfer(&chain, &faucet, nonce, Address([7; 32]), 1);
            let (code, v) = net.post(0, "/chain/tx", &json!({"tx": tx_hex(&tx)}));
            assert_eq!(code, 200, "{v}");
            nonce += 1;
        }
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        net.kill(3);
        net.start(3);
        let h = net.wait_height(0, net.height(0).unwrap() + 1, 60);
        net.wait_height(3, h, 60);
    }
    let h = net.wait_height(0, net.height(0).unwrap() + 1, 60);
    net.wait_height(3, h, 60);
    net.assert_agree(&[0, 1, 2, 3], h);
}

fn byzantine(fault: &str, name: &str, base: u16) {
    let mut net = Net::init(name, base, 4, 0, "");
    // Small blocks so an oversized one is cheap to build; node 3 misbehaves.
    for config in &net.configs {
        let text = std::fs::read_to_string(config).unwrap();
        let text = text.replace("\n[block]\n", "\n[block]\nmax_bytes = 65536\n");
        std::fs::write(config, text).unwrap();
    }
    net.append_config(3, &format!("\n[faults]\nproposer = \"{fault}\"\n"));
    net.start_all();
    let h = net.wait_height(0, 12, 120);
    for i in 1..4 {
        net.wait_height(i, h, 60);
    }
    net.assert_agree(&[0, 1, 2, 3], h);
    let bad = std::fs::read_to_string(net.dir.join("node3/validator.key")).unwrap();
    let bad = Keypair::from_seed(
        &agora_primitives::from_hex(bad.trim())
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .address()
    .to_string();
    for height in 1..=h {
        let (_, _, proposer) = net.block(0, height);
        assert_ne!(
            proposer, bad,
            "a faulty block from node3 was committed at {height}"
        );
    }
}

#[test]
fn n4_byzantine_proposer_bad_signature_is_voted_down() {
    byzantine("bad-signature", "byz-sig", 19600);
}

#[test]
fn n4_byzantine_proposer_wrong_state_root_is_voted_down() {
    byzantine("wrong-state-root", "byz-root", 19700);
}

#[test]
fn n4_byzantine_proposer_oversized_block_is_voted_down() {
    byzantine("oversized", "byz-size", 19800);
}

/// Method, path, body, expected status, expected error code.
type Case = (
    &'static str,
    &'static str,
    Option<Vec<u8>>,
    u16,
    &'static str,
);

#[test]
fn n1_malformed_api_requests_get_4xx_and_change_nothing() {
    let mut net = Net::init("api", 19900, 1, 0, "");
    net.start_all();
    net.wait_height(0, 2, 60);
    let faucet = net.faucet();
    let chain = net.chain_id();
    let before = balance(&net, 0, &faucet.address());
    let client = net.client(0);
    let raw = |method: &str, path: &str, body: Option<Vec<u8>>| {
        net.rt
            .block_on(client.send(method, path, body.map(Into::into), &[]))
            .expect("node answers")
    };
    let mut bad_sig = transfer(&chain, &faucet, 0, Address([1; 32]), 5);
    bad_sig.signature[0] ^= 1;
    let stale = {
        // Nonce far in the future of the faucet's.
        transfer(&chain, &faucet, 10_000, Address([1; 32]), 5)
    };
    let wrong_chain = transfer("other-chain", &faucet, 0, Address([1; 32]), 5);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/chain/tx",
            Some(b"{not json".to_vec()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/chain/tx",
            Some(br#"{"tx": "zz"}"#.to_vec()),
            400,
            "bad_hex",
        ),
        (
            "POST",
            "/chain/tx",
            Some(br#"{"tx": "00ff"}"#.to_vec()),
            400,
            "malformed_transaction",
        ),
        (
            "POST",
            "/chain/tx",
            Some(br#"{"tx": "00", "extra": 1}"#.to_vec()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/chain/tx",
            Some(vec![b' '; 300_000]),
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/chain/tx",
            Some(json!({"tx": tx_hex(&bad_sig)}).to_string().into_bytes()),
            400,
            "bad_signature",
        ),
        (
            "POST",
            "/chain/tx",
            Some(json!({"tx": tx_hex(&stale)}).to_string().into_bytes()),
            400,
            "nonce_gap",
        ),
        (
            "POST",
            "/chain/tx",
            Some(json!({"tx": tx_hex(&wrong_chain)}).to_string().into_bytes()),
            400,
            "wrong_chain",
        ),
        ("GET", "/chain/nope", None, 404, "not_found"),
        ("GET", "/chain/tx", None, 405, "method_not_allowed"),
        ("GET", "/chain/tx/xyz", None, 400, "bad_hash"),
        ("GET", "/chain/block/minus-one", None, 400, "bad_height"),
        ("GET", "/chain/block/99999999", None, 404, "not_found"),
        ("GET", "/chain/account/12", None, 400, "bad_address"),
        ("GET", "/chain/subnet/77", None, 404, "not_found"),
        ("GET", "/chain/proof", None, 400, "bad_query"),
        ("GET", "/chain/proof?key=qq", None, 400, "bad_key"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, v) = raw(method, path, body);
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "{method} {path}: message should explain: {v}"
        );
    }
    // A stale nonce: spend nonce 0, then send another nonce-0 transaction.
    let ok = transfer(&chain, &faucet, 0, Address([1; 32]), 5);
    let (code, v) = net.post(0, "/chain/tx", &json!({"tx": tx_hex(&ok)}));
    assert_eq!(code, 200, "{v}");
    let hash = v["hash"].as_str().unwrap().to_owned();
    wait_included(&net, 0, &hash, 30);
    let again = transfer(&chain, &faucet, 0, Address([2; 32]), 5);
    let (code, v) = net.post(0, "/chain/tx", &json!({"tx": tx_hex(&again)}));
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("stale_nonce")),
        "{v}"
    );
    let (code, v) = net.post(0, "/chain/tx", &json!({"tx": tx_hex(&ok)}));
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("duplicate")),
        "{v}"
    );
    // Only the one good transfer changed the faucet; the node still serves.
    let after = balance(&net, 0, &faucet.address());
    assert_eq!(after.1, before.1 + 1);
    assert!(net.height(0).is_some());
    // The proof endpoint answers for the faucet's account key.
    let key = to_hex(&agora_ledger::entries::account_key(&faucet.address()));
    let (code, v) = net.get(0, &format!("/chain/proof?key={key}")).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["present"], true);
    assert!(v["state_root"].as_str().is_some());

    // `agora tx --node` reads chain id and nonce from the node, submits, waits for inclusion.
    let home = net.dir.join("home");
    let agora = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .env("AGORA_HOME", &home)
            .env("AGORA_PASSPHRASE", "pass")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let seed = std::fs::read_to_string(net.dir.join("faucet.key")).unwrap();
    let out = agora(&["keys", "import", "faucet"], Some(&seed));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("http://127.0.0.1:{}", net.api_port);
    let to = Address([3; 32]).to_string();
    let out = agora(
        &[
            "tx", "--from", "faucet", "--node", &url, "transfer", "--to", &to, "--amount", "2.5",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("included at height"), "{text}");
    assert_eq!(balance(&net, 0, &Address([3; 32])).0, "2.5");
    // `agora tx --node subnet-set`: the fields a params file leaves out keep the subnet's
    // current values, read from the node (node0's key owns subnet 1); changing the numerics
    // must not reset the tempo.
    let owner = std::fs::read_to_string(net.dir.join("node0/validator.key")).unwrap();
    let out = agora(&["keys", "import", "owner"], Some(&owner));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, params) in [
        ("tempo", r#"{"tempo": 77}"#),
        ("numerics", r#"{"numerics": 3}"#),
    ] {
        let file = net.dir.join(format!("{name}.json"));
        std::fs::write(&file, params).unwrap();
        let out = agora(
            &[
                "tx",
                "--from",
                "owner",
                "--node",
                &url,
                "subnet-set",
                "--netuid",
                "1",
                "--params",
                file.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, subnet) = net.get(0, "/chain/subnet/1").unwrap();
    assert_eq!(code, 200, "{subnet}");
    assert_eq!(subnet["params"]["tempo"], 77, "{subnet}");
    assert_eq!(subnet["params"]["numerics"], 3, "{subnet}");
    // A node that is not there: a one-line error naming the URL.
    let out = agora(
        &[
            "tx",
            "--from",
            "faucet",
            "--node",
            "http://127.0.0.1:1",
            "transfer",
            "--to",
            &to,
            "--amount",
            "1",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("cannot reach the node at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn testnet_init_refuses_bad_arguments() {
    let dir = std::env::temp_dir().join(format!("agora-chain-args-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.to_str().unwrap();
    let out = run(&["testnet", "init", "--validators", "0", "--dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--validators must be 1 to 64"));
    let out = run(&[
        "testnet",
        "init",
        "--validators",
        "2",
        "--dir",
        d,
        "--api-port",
        "65535",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ports run past 65535"));
    let out = run(&["testnet", "init", "--validators", "1", "--dir", d]);
    assert!(out.status.success());
    let out = run(&["testnet", "init", "--validators", "1", "--dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a testnet"));
    let out = run(&["node", "--config", &format!("{d}/missing.toml")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agora testnet init"));
    let _ = std::fs::remove_dir_all(Path::new(d));
}

#[test]
fn n1_devnet_starts_with_no_configuration_and_produces_blocks() {
    let dir = std::env::temp_dir().join(format!("agora-chain-devnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([
                "devnet",
                "--dir",
                dir.to_str().unwrap(),
                "--api-port",
                "19990",
                "--p2p-port",
                "19991",
                "--blocks",
                "3",
                "--miners",
                "0",
            ])
            .env("AGORA_LOG", "error")
            .output()
            .unwrap()
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("chain API   http://127.0.0.1:19990/chain/status"),
        "{text}"
    );
    let heights = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("block "))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    let first = heights(&text);
    assert_eq!(first.len(), 3, "{text}");
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
    // A second run resumes where the first stopped.
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let second = heights(&text);
    assert_eq!(second.len(), 3, "{text}");
    assert!(second[0] > first[2], "{first:?} then {second:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn n1_gossip_peer_flooding_malformed_transactions_is_banned_and_the_chain_goes_on() {
    let mut net = Net::init("flood", 20000, 1, 0, "");
    net.start_all();
    let h0 = net.wait_height(0, 2, 60);
    let faucet = net.faucet();
    let chain = net.chain_id();
    let node_gossip: agora_p2p::Addr = "/ip4/127.0.0.1/tcp/20075".parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rogue_id = rt.block_on(async {
        let (rogue, _events) = agora_p2p::P2p::start(
            [66; 32],
            agora_p2p::P2pConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap: vec![node_gossip],
                topics: vec!["agora/txs/1".to_owned()],
                max_message_bytes: 4 << 20,
                ..agora_p2p::P2pConfig::default()
            },
        )
        .await
        .unwrap();
        // A well-formed batch whose one transaction has a bad signature, an oversized message,
        // and plain garbage, again and again.
        let mut forged = transfer(&chain, &faucet, 0, Address([1; 32]), 5);
        forged.signature[3] ^= 0xff;
        let mut forged_batch = Vec::new();
        agora_codec::encode_slice(&[forged], &mut forged_batch);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0u32;
        loop {
            let msg = match i % 3 {
                0 => forged_batch.clone(),
                1 => vec![0xAB; 2 << 20],
                _ => {
                    let mut g = b"garbage".to_vec();
                    g.extend_from_slice(&i.to_le_bytes());
                    g
                }
            };
            let _ = rogue.publish("agora/txs/1", msg).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = net.client(0).get("/chain/status").await.unwrap().1;
            let banned: Vec<String> = status["p2p"]["banned"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            if banned.contains(&rogue.peer_id().to_string()) {
                break rogue.peer_id();
            }
            assert!(
                Instant::now() < deadline,
                "the flooding peer was never banned"
            );
        }
    });
    // Dropped: no longer connected; the chain keeps finalizing; the forged transfer never landed.
    let status = net.get(0, "/chain/status").unwrap().1;
    assert_eq!(status["p2p"]["peers"], 0, "{status}");
    assert!(
        status["p2p"]["banned"]
            .to_string()
            .contains(&rogue_id.to_string())
    );
    net.wait_height(0, h0 + 3, 60);
    assert_eq!(balance(&net, 0, &faucet.address()).1, 0);
}

#[test]
fn n1_plus_standby_validator_joins_at_the_height_after_its_stake_commits() {
    let mut net = Net::init("join", 20100, 1, 1, "");
    // Node 1 holds a key but no stake: it follows as a full node until staked.
    let standby = Keypair::from_seed(&[77; 32]);
    std::fs::write(
        net.dir.join("node1/validator.key"),
        to_hex(standby.seed().as_slice()),
    )
    .unwrap();
    let text = std::fs::read_to_string(&net.configs[1]).unwrap();
    std::fs::write(
        &net.configs[1],
        format!("validator_key = \"validator.key\"\n{text}"),
    )
    .unwrap();
    net.start_all();
    net.wait_height(0, 2, 60);
    net.wait_height(1, 2, 60);
    let faucet = net.faucet();
    let chain = net.chain_id();
    let stake = agora_crypto::sign_tx(
        &faucet,
        Transaction {
            chain_id: chain,
            sender: faucet.address(),
            nonce: 0,
            fee: Amount(1_000),
            expiry_height: 1_000_000,
            call: Call::Stake {
                hotkey: standby.address(),
                amount: Amount::agora(20_000),
            },
        },
    );
    let (code, v) = net.post(1, "/chain/tx", &json!({"tx": tx_hex(&stake)}));
    assert_eq!(code, 200, "{v}");
    let h = wait_included(&net, 0, v["hash"].as_str().unwrap(), 60);
    let signers = |height: u64| -> Vec<String> {
        let (_, b) = net.get(0, &format!("/chain/block/{height}")).unwrap();
        b["certificate"]["signers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let me = standby.address().to_string();
    // Not a validator when the stake committed; from the next height on, 2/3 of the power is
    // its own, so no block can finalize without its vote.
    assert!(!signers(h).contains(&me));
    let later = net.wait_height(0, h + 4, 60);
    for height in h + 1..=later {
        assert!(
            signers(height).contains(&me),
            "height {height}: {:?}",
            signers(height)
        );
    }
    let status = net.get(0, "/chain/status").unwrap().1;
    assert_eq!(
        status["validators"].as_array().unwrap().len(),
        2,
        "{status}"
    );
    net.assert_agree(&[0, 1], later);
}
