//! The incentive loop of `agora devnet`: subnet validators (honest ones and copiers), the
//! subnet's tempo, `--demo --epochs K` and the final metagraph (`--json`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_chain::devnet;
use agora_chain::shared::Shared;
use agora_crypto::Keypair;
use agora_inference::Engine;
use agora_ledger::State;
use agora_p2p::P2p;
use agora_primitives::{Address, Amount, Call};
use agora_serve::gateway::{Gateway, GatewayConfig};
use agora_validator::role::{Validator, ValidatorConfig};
use anyhow::{Context, Result, anyhow, bail};

use crate::devnet::{p2p_config, sign, submit_and_wait};

/// Stake each devnet subnet validator puts on its own hotkey (below the chain validator's, so
/// it never joins consensus).
const VALIDATOR_STAKE: u64 = 1_000;

/// Configure subnet 1 (the devnet's chain validator owns it): the tempo, when given (weights
/// may then be set once per tempo), and the model its miners serve, when the devnet runs one:
/// the model file's hash and the engine's numerics version are registered in the subnet's
/// hyperparameters, as a subnet owner registers them, so that miners of another model are not
/// the subnet's and validators of another engine abstain (docs/ARCHITECTURE.md, "The
/// registered model"). One transaction, and none when nothing changes.
pub async fn configure_subnet(
    shared: &Shared,
    tempo: Option<u16>,
    engine: Option<&dyn Engine>,
) -> Result<()> {
    let state = shared.snapshot().state;
    let subnet = state
        .subnets
        .get(&1)
        .ok_or_else(|| anyhow!("the devnet has no subnet 1"))?;
    let mut params = subnet.params.clone();
    if let Some(tempo) = tempo {
        params.tempo = tempo;
        params.weights_rate_limit = (tempo / 2).max(1);
    }
    if let Some(engine) = engine {
        params.model_hash = agora_serve::miner::model_hash(engine);
        params.numerics = engine.info().numerics;
    }
    if params == subnet.params {
        return Ok(());
    }
    submit_and_wait(
        shared,
        sign(
            shared,
            &devnet::validator_key(),
            Call::SubnetSet { netuid: 1, params },
        ),
    )
    .await
    .context("configuring subnet 1 (tempo, registered model)")?;
    Ok(())
}

/// Fund, register and stake subnet validator `i`, and fund its escrow (its challenges are paid
/// like any client's requests).
async fn enrol(shared: &Shared, key: &Keypair) -> Result<()> {
    let me = key.address();
    let state = shared.snapshot().state;
    if state.params.max_chain_validators != 1 {
        bail!(
            "this devnet's data predates subnet validators (its chain would take them into consensus); run `agora devnet --fresh`"
        );
    }
    let faucet = devnet::validator_key();
    if state.account(&me).balance < Amount::agora(VALIDATOR_STAKE + 1_000)
        && state.hotkey_stake(&me).is_zero()
    {
        submit_and_wait(
            shared,
            sign(
                shared,
                &faucet,
                Call::Transfer {
                    to: me,
                    amount: Amount::agora(VALIDATOR_STAKE + 2_000),
                },
            ),
        )
        .await
        .context("funding a subnet validator")?;
    }
    let state = shared.snapshot().state;
    let registered = state
        .subnets
        .get(&1)
        .is_some_and(|s| s.neurons.iter().any(|n| n.hotkey == me));
    if !registered {
        submit_and_wait(
            shared,
            sign(
                shared,
                key,
                Call::Register {
                    netuid: 1,
                    hotkey: me,
                    max_burn: Amount::agora(100),
                },
            ),
        )
        .await
        .context("registering a subnet validator")?;
    }
    if state.hotkey_stake(&me).is_zero() {
        submit_and_wait(
            shared,
            sign(
                shared,
                key,
                Call::Stake {
                    hotkey: me,
                    amount: Amount::agora(VALIDATOR_STAKE),
                },
            ),
        )
        .await
        .context("staking a subnet validator")?;
    }
    if state.escrow_of(&me) < Amount::agora(100) {
        submit_and_wait(
            shared,
            sign(
                shared,
                key,
                Call::EscrowDeposit {
                    amount: Amount::agora(500),
                },
            ),
        )
        .await
        .context("funding a subnet validator's escrow")?;
    }
    Ok(())
}

/// Settings of the devnet's validators.
pub struct ValidatorPlan {
    /// Honest validators.
    pub honest: usize,
    /// Copiers.
    pub copiers: usize,
    /// First libp2p port (validator i listens on `port + i`).
    pub port: u16,
    /// Where the gateway's swarm listens (validators bootstrap to it).
    pub bootstrap: agora_p2p::Addr,
    /// Pause between rounds.
    pub pause: Duration,
}

/// Start the devnet's subnet validators (honest first, then copiers).
pub async fn start_validators(
    plan: &ValidatorPlan,
    shared: &Arc<Shared>,
    engine: &Arc<dyn Engine>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Vec<Arc<Validator>>> {
    let mut validators = Vec::new();
    for i in 0..plan.honest + plan.copiers {
        let key = Arc::new(devnet::subnet_validator_key(i));
        enrol(shared, &key)
            .await
            .with_context(|| format!("subnet validator {i}"))?;
        let (p2p, events) = P2p::start(
            *key.seed(),
            p2p_config(plan.port + i as u16, vec![plan.bootstrap.clone()])?,
        )
        .await
        .map_err(|e| anyhow!("subnet validator {i}: {e}"))?;
        let gateway = Gateway::new(
            p2p,
            key.clone(),
            GatewayConfig {
                chain_id: devnet::CHAIN_ID.to_owned(),
                first_token_timeout: Duration::from_secs(60),
                ..GatewayConfig::default()
            },
        );
        tasks.push(tokio::spawn(crate::serving::pump_adverts(
            gateway.clone(),
            events,
        )));
        // Dial the registered miners at their on-chain addresses, as any gateway does.
        tasks.push(tokio::spawn(crate::serving::follow_chain(
            gateway.clone(),
            shared.clone(),
            1,
        )));
        let validator = Validator::new(
            key.address(),
            engine.clone(),
            gateway,
            Arc::new(crate::serving::LocalChain {
                shared: shared.clone(),
                key: key.clone(),
            }),
            ValidatorConfig {
                netuid: 1,
                copier: i >= plan.honest,
                per_miner: 4,
                tokens: 16..=28,
                pause: plan.pause,
                parallel: 3,
            },
        );
        tasks.extend(validator.spawn());
        validators.push(validator);
    }
    Ok(validators)
}

/// What the devnet knows of each hotkey: role and mode.
pub type Roles = BTreeMap<Address, (&'static str, String)>;

/// Wait until every validator's weights are on chain, then for `epochs` more epochs of subnet
/// 1; print progress to stderr.
pub async fn run_epochs(shared: &Shared, validators: &[Arc<Validator>], epochs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600 + 120 * epochs);
    let weights_on_chain = |state: &State| {
        let Some(subnet) = state.subnets.get(&1) else {
            return false;
        };
        validators.iter().all(|v| {
            subnet
                .neurons
                .iter()
                .any(|n| n.hotkey == v.hotkey() && !n.weights.is_empty())
        })
    };
    let mut counted = 0u64;
    let mut last_epoch = None;
    loop {
        if Instant::now() > deadline {
            bail!("only {counted} of {epochs} epochs within the deadline; see the log");
        }
        let state = shared.snapshot().state;
        let epoch_block = state.subnets.get(&1).map(|s| s.last_epoch_block);
        if epoch_block != last_epoch {
            if last_epoch.is_some() && weights_on_chain(&state) {
                counted += 1;
                let rounds: Vec<String> =
                    validators.iter().map(|v| v.rounds().to_string()).collect();
                eprintln!(
                    "epoch {counted}/{epochs} at block {} (validator rounds so far: {})",
                    state.height,
                    rounds.join(", ")
                );
                if counted >= epochs {
                    return Ok(());
                }
            }
            last_epoch = epoch_block;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The metagraph of subnet 1 as JSON: one object per uid.
pub fn metagraph_json(state: &State, roles: &Roles) -> serde_json::Value {
    let Some(subnet) = state.subnets.get(&1) else {
        return serde_json::json!([]);
    };
    let proportion = |v: u16| f64_from(u128::from(v), 65535);
    let agora = |a: Amount| f64_from(a.0, Amount::agora(1).0);
    let rows: Vec<serde_json::Value> = subnet
        .neurons
        .iter()
        .enumerate()
        .map(|(uid, n)| {
            let (role, mode) = roles.get(&n.hotkey).cloned().unwrap_or_else(|| {
                let role = if n.serve.is_some() {
                    "miner"
                } else {
                    "validator"
                };
                (role, "unknown".to_owned())
            });
            let o = &n.outputs;
            let emission = Amount(o.server_emission.0 + o.validator_emission.0);
            serde_json::json!({
                "uid": uid,
                "hotkey": n.hotkey.to_string(),
                "role": role,
                "mode": mode,
                "stake": agora(state.hotkey_stake(&n.hotkey)),
                "validator_permit": n.validator_permit,
                "incentive": proportion(o.incentive),
                "dividends": proportion(o.dividends),
                "consensus": proportion(o.consensus),
                "validator_trust": proportion(o.validator_trust),
                "emission": agora(emission),
                "emission_base_units": emission.0.to_string(),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// `num / den` as a float for display (not consensus-visible).
fn f64_from(num: u128, den: u128) -> f64 {
    #[allow(
        clippy::float_arithmetic,
        reason = "a display value in the devnet's JSON report, not consensus state"
    )]
    let v = num as f64 / den.max(1) as f64;
    v
}

/// A table of the metagraph for people.
pub fn print_metagraph(json: &serde_json::Value) {
    println!(
        "{:>4} {:<10} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "uid", "role", "mode", "stake", "incentive", "dividends", "consensus", "vtrust", "emission"
    );
    for row in json.as_array().into_iter().flatten() {
        println!(
            "{:>4} {:<10} {:<12} {:>9.1} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>12.4}",
            row["uid"],
            row["role"].as_str().unwrap_or(""),
            row["mode"].as_str().unwrap_or(""),
            row["stake"].as_f64().unwrap_or(0.0),
            row["incentive"].as_f64().unwrap_or(0.0),
            row["dividends"].as_f64().unwrap_or(0.0),
            row["consensus"].as_f64().unwrap_or(0.0),
            row["validator_trust"].as_f64().unwrap_or(0.0),
            row["emission"].as_f64().unwrap_or(0.0),
        );
    }
}
