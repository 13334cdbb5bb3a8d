//! The incentive loop end to end, with the real binary and the real model: subnet validators
//! challenge honest and adversarial miners through the serving network, verify the answers,
//! commit and reveal weights; Yuma pays the honest miners and the evaluating validators.

mod common;

use common::{Running, agora, tx_body};

#[test]
fn validators_pay_honest_miners_and_evaluating_validators() {
    let dir = std::env::temp_dir().join(format!("agora-validators-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = agora()
        .args([
            "devnet",
            "--dir",
            dir.to_str().unwrap(),
            "--fresh",
            "--api-port",
            "20700",
            "--p2p-port",
            "20800",
            "--demo",
            "--json",
            "--miners",
            "3",
            "--adversaries",
            "wrong-model,random,copycat,slow,buffer,flaky",
            "--validators",
            "2",
            "--copiers",
            "1",
            "--epochs",
            "4",
            "--tempo",
            "60",
        ])
        .env(
            "AGORA_LOG",
            "warn,agora_validator=info,arc_malachitebft_network=off",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not the JSON metagraph ({e}): {stdout}\n{stderr}"));
    let _ = std::fs::remove_dir_all(&dir);
    // One line per uid for failure messages.
    let report: String = rows
        .iter()
        .map(|r| {
            format!(
                "\n{:>2} {:<9} {:<11} incentive {:.4} dividends {:.4} vtrust {:.4} emission {}",
                r["uid"],
                r["role"].as_str().unwrap_or(""),
                r["mode"].as_str().unwrap_or(""),
                r["incentive"].as_f64().unwrap_or(0.0),
                r["dividends"].as_f64().unwrap_or(0.0),
                r["validator_trust"].as_f64().unwrap_or(0.0),
                r["emission_base_units"].as_str().unwrap_or(""),
            )
        })
        .collect();
    println!("final metagraph:{report}");
    for key in [
        "uid",
        "hotkey",
        "role",
        "mode",
        "stake",
        "incentive",
        "dividends",
        "consensus",
        "validator_trust",
        "emission",
    ] {
        assert!(rows.iter().all(|r| r.get(key).is_some()), "{key}: {report}");
    }
    let emission = |r: &serde_json::Value| -> u128 {
        r["emission_base_units"].as_str().unwrap().parse().unwrap()
    };
    let miners: Vec<&serde_json::Value> = rows.iter().filter(|r| r["role"] == "miner").collect();
    assert_eq!(miners.len(), 9, "{report}");
    let total: u128 = miners.iter().map(|r| emission(r)).sum();
    assert!(total > 0, "no miner emission: {report}");
    let honest: u128 = miners
        .iter()
        .filter(|r| r["mode"] == "honest")
        .map(|r| emission(r))
        .sum();
    // Honest miners hold at least 95% of the miners' emission...
    assert!(
        honest * 100 >= total * 95,
        "honest {honest} of {total}: {report}"
    );
    // ... and every adversary under 2%.
    for r in miners.iter().filter(|r| r["mode"] != "honest") {
        assert!(
            emission(r) * 100 < total * 2,
            "{} holds {} of {total}: {report}",
            r["mode"],
            emission(r)
        );
    }
    // The copier earns less per unit of stake than either honest validator.
    let per_stake = |r: &serde_json::Value| {
        r["dividends"].as_f64().unwrap() / r["stake"].as_f64().unwrap().max(1e-9)
    };
    let validators: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["role"] == "validator").collect();
    let copier = validators
        .iter()
        .find(|r| r["mode"] == "copier")
        .expect("a copier");
    let honest_validators: Vec<&&serde_json::Value> = validators
        .iter()
        .filter(|r| r["mode"] == "honest")
        .collect();
    assert_eq!(honest_validators.len(), 2, "{report}");
    for h in honest_validators {
        assert!(
            per_stake(copier) < per_stake(h),
            "copier {} vs honest {}: {report}",
            per_stake(copier),
            per_stake(h)
        );
    }
}

/// A validator's metagraph view: all rows, its revealed `(uid, weight)` pairs, the height of
/// its last reveal.
type Revealed = (Vec<serde_json::Value>, Vec<(u64, u64)>, u64);

/// A subnet validator run by `agora node` from its config (`[serve] validator_key`): it
/// challenges the two miners it finds on the chain (an honest one on its own node, a `random`
/// one on a second node), verifies their answers with the model, and commits then reveals
/// weights that favour the honest miner.
#[test]
fn agora_node_runs_a_subnet_validator_that_weights_honest_miners() {
    use agora_crypto::Keypair;
    use agora_primitives::{Amount, Call, Hash, ServeInfo, SubnetParams};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("agora-node-validator-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = agora()
        .args([
            "testnet",
            "init",
            "--validators",
            "1",
            "--full-nodes",
            "1",
            "--dir",
            dir.to_str().unwrap(),
            "--api-port",
            "21200",
            "--p2p-port",
            "21250",
            "--gossip-port",
            "21275",
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
    // The chain validator's key is the honest miner's hotkey (and owns subnet 1); the faucet
    // funds the subnet validator and the random miner.
    let miner = read("node0/validator.key");
    let faucet = read("faucet.key");
    let validator = Keypair::from_seed(&[7; 32]);
    let random = Keypair::from_seed(&[8; 32]);
    agora_chain::node::write_key(&dir.join("node0/subnet-validator.key"), &validator).unwrap();
    agora_chain::node::write_key(&dir.join("node1/miner.key"), &random).unwrap();
    let serve = [
        "\n[serve]\nlisten = \"/ip4/127.0.0.1/tcp/21290\"\nminer_key = \"validator.key\"\nvalidator_key = \"subnet-validator.key\"\n",
        "\n[serve]\nlisten = \"/ip4/127.0.0.1/tcp/21291\"\npeers = [\"/ip4/127.0.0.1/tcp/21290\"]\nminer_key = \"miner.key\"\nminer_mode = \"random\"\n",
    ];
    let mut nodes = Vec::new();
    for (i, section) in serve.iter().enumerate() {
        let config = dir.join(format!("node{i}/config.toml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(section);
        std::fs::write(&config, text).unwrap();
        nodes.push(Running(
            agora()
                .args(["node", "--config", config.to_str().unwrap()])
                .env(
                    "AGORA_LOG",
                    "warn,arc_malachitebft_network=off,agora_validator=info,agora_serve=info",
                )
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("node{i}.log"))).unwrap())
                .spawn()
                .unwrap(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = agora_chain::client::Client::new("http://127.0.0.1:21200").unwrap();
    // The nodes' logs, for a failure's message.
    let logs = || {
        (0..2)
            .map(|i| {
                let text =
                    std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "node{i}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let wait = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait(
        "the chain",
        120,
        &|| matches!(rt.block_on(client.get("/chain/status")), Ok((200, v)) if v["height"].as_u64() >= Some(1)),
    );
    let status = rt.block_on(client.get("/chain/status")).unwrap().1;
    let chain = status["chain_id"].as_str().unwrap().to_owned();
    let submit = |k: &Keypair, nonce: u64, call: Call| {
        let body = tx_body(&chain, k, nonce, call);
        let (code, v) = rt.block_on(client.post("/chain/tx", &body)).unwrap();
        assert_eq!(code, 200, "{v}");
    };
    let nonce_of = |k: &Keypair| {
        rt.block_on(client.get(&format!("/chain/account/{}", k.address())))
            .map(|(_, v)| v["nonce"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    submit(
        &faucet,
        0,
        Call::Transfer {
            to: validator.address(),
            amount: Amount::agora(1_000),
        },
    );
    submit(
        &faucet,
        1,
        Call::Transfer {
            to: random.address(),
            amount: Amount::agora(1_000),
        },
    );
    wait("the transfers", 60, &|| nonce_of(&faucet) >= 2);
    let serve_info = |k: &Keypair, port: u16| ServeInfo {
        peer_id: agora_p2p::peer_id_from_seed(*k.seed()).to_bytes(),
        addresses: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        model_hash: agora_inference::model::MODEL_BLAKE3
            .parse::<Hash>()
            .unwrap(),
        price_per_1k_tokens: Amount(10_000_000),
    };
    let register = |k: &Keypair| Call::Register {
        netuid: 1,
        hotkey: k.address(),
        max_burn: Amount::agora(100),
    };
    // Short epochs, so that a commit is revealed within seconds; the subnet registers the
    // model file and the engine numerics its validator checks answers with (a validator of
    // another model or numerics would abstain: `role::abstention`).
    let registered_model = agora_inference::model::MODEL_BLAKE3
        .parse::<Hash>()
        .unwrap();
    let params = SubnetParams {
        tempo: 20,
        weights_rate_limit: 5,
        model_hash: registered_model,
        numerics: agora_inference_candle::NUMERICS,
        ..SubnetParams::defaults()
    };
    submit(&miner, 0, register(&miner));
    submit(
        &miner,
        1,
        Call::Serve {
            netuid: 1,
            info: serve_info(&miner, 21290),
        },
    );
    submit(
        &miner,
        2,
        Call::SubnetSet {
            netuid: 1,
            params: params.clone(),
        },
    );
    submit(&random, 0, register(&random));
    submit(
        &random,
        1,
        Call::Serve {
            netuid: 1,
            info: serve_info(&random, 21291),
        },
    );
    submit(&validator, 0, register(&validator));
    submit(
        &validator,
        1,
        Call::EscrowDeposit {
            amount: Amount::agora(100),
        },
    );
    // The validator's row of the metagraph: all rows, its revealed (uid, weight) pairs and the
    // height of its last reveal.
    let uid_of = |rows: &[serde_json::Value], k: &Keypair| {
        rows.iter()
            .find(|r| r["hotkey"] == k.address().to_string())
            .and_then(|r| r["uid"].as_u64())
    };
    let revealed = || -> Option<Revealed> {
        let (code, v) = rt.block_on(client.get("/chain/metagraph/1")).ok()?;
        if code != 200 {
            return None;
        }
        let rows = v.as_array()?.clone();
        let me = rows
            .iter()
            .find(|r| r["hotkey"] == validator.address().to_string())?;
        let weights: Vec<(u64, u64)> = me["weights"]
            .as_array()?
            .iter()
            .filter_map(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
            .collect();
        let last = me["last_update"].as_u64()?;
        (!weights.is_empty()).then_some((rows, weights, last))
    };
    // The random miner must have been reached and its answers rejected by verification (not
    // merely left unanswered), ...
    let rejection = || {
        let log = std::fs::read_to_string(dir.join("node0.log")).unwrap_or_default();
        log.lines()
            .find(|l| {
                l.contains("challenge failed")
                    && l.contains(&random.address().to_string())
                    && !l.contains("NoAnswer")
            })
            .map(str::to_owned)
    };
    wait(
        "the validator to reject the random miner's answers",
        300,
        &|| rejection().is_some(),
    );
    println!("{}", rejection().unwrap_or_default());
    // ... and two reveals must follow: the second one's weights were committed after that.
    for _ in 0..2 {
        let before = revealed().map_or(0, |(_, _, last)| last);
        wait("the validator's next revealed weights", 120, &|| {
            revealed().is_some_and(|(_, _, last)| last > before)
        });
    }
    let (rows, weights, _) = revealed().unwrap();
    let weight_of = |k: &Keypair| {
        let uid = uid_of(&rows, k).expect("registered");
        weights
            .iter()
            .find(|(u, _)| *u == uid)
            .map_or(0, |(_, w)| *w)
    };
    let (honest, forged) = (weight_of(&miner), weight_of(&random));
    println!(
        "revealed at height {}: {weights:?} (honest miner uid {:?}, random miner uid {:?})",
        rt.block_on(client.get("/chain/status")).unwrap().1["height"],
        uid_of(&rows, &miner),
        uid_of(&rows, &random)
    );
    assert!(
        honest > 0 && forged == 0,
        "honest miner {honest}, random miner {forged}: {weights:?}"
    );
    // The chain shows what the subnet registered, and this validator scored under it.
    let (code, subnet) = rt.block_on(client.get("/chain/subnet/1")).unwrap();
    assert_eq!(code, 200, "{subnet}");
    assert_eq!(
        subnet["params"]["model_hash"],
        registered_model.to_string(),
        "{subnet}"
    );
    assert_eq!(
        subnet["params"]["numerics"],
        agora_inference_candle::NUMERICS,
        "{subnet}"
    );
    // The owner raises the numerics (an engine upgrade these nodes have not taken): the
    // validator stops scoring and says why, and the miner's operator is warned, both naming
    // the two versions.
    let upgraded = agora_inference_candle::NUMERICS + 1;
    let raised = SubnetParams {
        numerics: upgraded,
        ..params
    };
    // The miner's account also settles receipts: a nonce may be taken meanwhile, so resubmit
    // with the current one until the chain shows the new version.
    wait("the raised numerics on chain", 120, &|| {
        let now = rt.block_on(client.get("/chain/subnet/1"));
        if matches!(&now, Ok((200, v)) if v["params"]["numerics"] == upgraded) {
            return true;
        }
        let body = tx_body(
            &chain,
            &miner,
            nonce_of(&miner),
            Call::SubnetSet {
                netuid: 1,
                params: raised.clone(),
            },
        );
        let _ = rt.block_on(client.post("/chain/tx", &body));
        std::thread::sleep(Duration::from_secs(2));
        false
    });
    let logged = |needle: &str| {
        std::fs::read_to_string(dir.join("node0.log"))
            .unwrap_or_default()
            .lines()
            .find(|l| {
                l.contains(needle) && l.contains(&format!("registers engine numerics {upgraded}"))
            })
            .map(str::to_owned)
    };
    wait("the validator to abstain", 180, &|| {
        logged("not scoring").is_some()
    });
    wait("the miner's operator to be warned", 60, &|| {
        logged("this miner's answers will fail").is_some()
    });
    println!("{}", logged("not scoring").unwrap_or_default());
    println!("{}", logged("this miner's answers").unwrap_or_default());
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
