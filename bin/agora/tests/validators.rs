//! The incentive loop end to end, with the real binary and the real model: subnet validators
//! challenge honest and adversarial miners through the serving network, verify the answers,
//! commit and reveal weights; Yuma pays the honest miners and the evaluating validators.

use std::process::Command;

#[test]
fn validators_pay_honest_miners_and_evaluating_validators() {
    let dir = std::env::temp_dir().join(format!("agora-validators-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
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
