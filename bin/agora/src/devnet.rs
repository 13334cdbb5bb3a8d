//! `agora devnet`: the whole network on this machine, in one process.
//!
//! A one-validator chain from the embedded genesis, `--miners` honest miners and the
//! `--adversaries` (each registered on subnet 1 with its serve info, serving through its own
//! libp2p swarm, settling its receipts every few seconds), `--validators` subnet validators and
//! `--copiers` (see `devnet_subnet`), and a gateway paying from the devnet client's escrow. The
//! chain API (`/chain/...`) and the OpenAI API (`/v1/...`) share `--api-port` (8700).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_chain::devnet;
use agora_chain::node::{self, NodeConfig, RunningNode};
use agora_chain::shared::Shared;
use agora_inference::Engine;
use agora_p2p::{P2p, P2pConfig};
use agora_primitives::{Amount, Call, ServeInfo, SignedTransaction};
use agora_serve::gateway::{Gateway, GatewayConfig};
use agora_serve::miner::{Miner, MinerConfig, MinerMode};
use agora_serve::protocol::ADVERT_TOPIC;
use anyhow::{Context, Result, anyhow, bail};

use crate::node::{init_logging_with, runtime, until_ctrl_c};
pub(crate) use crate::serving::sign;

/// `agora devnet`: the whole network on this machine.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Port of the gateway's OpenAI API and the chain API.
    #[arg(long, default_value_t = 8700)]
    api_port: u16,
    /// Consensus peer-to-peer port of the validator (gossip and miners use the next ports).
    #[arg(long, default_value_t = 27100)]
    p2p_port: u16,
    /// Honest miners to run.
    #[arg(long, default_value_t = 3)]
    miners: usize,
    /// Adversarial miners to run besides, by mode, comma-separated: wrong-model, random,
    /// copycat, slow, buffer, flaky (for watching the validators catch them).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    adversaries: Vec<MinerMode>,
    /// Subnet validators that challenge the miners and set weights (none run without miners).
    #[arg(long, default_value_t = 1)]
    validators: usize,
    /// Validators that copy the others' revealed weights instead of evaluating.
    #[arg(long, default_value_t = 0)]
    copiers: usize,
    /// Subnet 1's tempo in blocks (default: keep the chain's, 360).
    #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u16).range(1..=10_000))]
    tempo: Option<u16>,
    /// With --demo: once every validator's weights are on chain, run this many epochs, print
    /// the metagraph and exit (instead of the chat demo).
    #[arg(long, value_name = "K", requires = "demo")]
    epochs: Option<u64>,
    /// With --demo --epochs: print the final metagraph of subnet 1 as a JSON array on stdout
    /// (everything else goes to stderr).
    #[arg(long, requires = "epochs")]
    json: bool,
    /// Data directory (default `$AGORA_HOME/devnet`).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Start from genesis, deleting the devnet's data first.
    #[arg(long)]
    fresh: bool,
    /// Exit after this many new blocks are finalized (default: run until Ctrl-C).
    #[arg(long, value_name = "N")]
    blocks: Option<u64>,
    /// Send a few requests through the gateway, print the answers and the payments, and exit.
    #[arg(long)]
    demo: bool,
    /// Serve the tiny test engine instead of the model (for quick checks; not a language model).
    #[arg(long)]
    tiny: bool,
    /// Model cache directory (default as `agora model fetch`).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
}

/// The engine, and the model file it came from (`None` for the tiny engine).
fn load_engine(args: &DevnetArgs) -> Result<(Arc<dyn Engine>, Option<PathBuf>)> {
    if args.tiny {
        return Ok((Arc::new(agora_inference::TinyEngine::new()), None));
    }
    let dir = args
        .model_dir
        .clone()
        .unwrap_or_else(agora_inference::model::default_dir);
    let path = match agora_inference::model::locate(&dir) {
        Ok(p) => p,
        Err(_) => {
            println!("fetching the model into {} (once) ...", dir.display());
            agora_inference::model::fetch(&dir, &mut |_| {})
                .with_context(|| format!("fetching the model into {}", dir.display()))?
        }
    };
    let engine = agora_inference_candle::CandleEngine::load(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok((Arc::new(engine), Some(path)))
}

pub(crate) async fn submit_and_wait(shared: &Shared, tx: SignedTransaction) -> Result<u64> {
    let hash = shared
        .submit(tx)
        .map_err(|e| anyhow!("transaction refused: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match shared.mempool().status(&hash) {
            Some(agora_chain::mempool::TxStatus::Included { height }) => return Ok(height),
            Some(agora_chain::mempool::TxStatus::Rejected { reason }) => {
                bail!("rejected: {reason}")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("transaction {hash} not included within 60 s")
}

pub(crate) fn p2p_config(port: u16, bootstrap: Vec<agora_p2p::Addr>) -> Result<P2pConfig> {
    Ok(P2pConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse()?],
        bootstrap,
        topics: vec![ADVERT_TOPIC.to_owned()],
        ..P2pConfig::default()
    })
}

/// Miners: register (if new) and publish serve info, then serve and settle. The honest ones
/// first, then the adversaries; a `wrong-model` miner serves the model with perturbed weights.
async fn start_miners(
    args: &DevnetArgs,
    shared: &Arc<Shared>,
    (engine, model_path): &(Arc<dyn Engine>, Option<PathBuf>),
    gateway_addr: agora_p2p::Addr,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Vec<Arc<Miner>>> {
    let modes: Vec<MinerMode> = std::iter::repeat_n(MinerMode::Honest, args.miners)
        .chain(args.adversaries.iter().copied())
        .collect();
    let board = agora_serve::miner::AnswerBoard::new();
    let model_hash = agora_serve::miner::model_hash(engine.as_ref());
    let mut miners = Vec::new();
    for (i, mode) in modes.iter().copied().enumerate() {
        let key = Arc::new(devnet::miner_key(i));
        let miner_engine: Arc<dyn Engine> = match (mode, model_path) {
            (MinerMode::WrongModel, Some(path)) => Arc::new(
                agora_inference_candle::CandleEngine::load_perturbed(path, i as u64)
                    .with_context(|| format!("loading a perturbed {}", path.display()))?,
            ),
            (MinerMode::WrongModel, None) => {
                bail!("the wrong-model adversary needs the real model (drop --tiny)")
            }
            _ => engine.clone(),
        };
        let port = args.p2p_port + 10 + i as u16;
        let (p2p, mut events) =
            P2p::start(*key.seed(), p2p_config(port, vec![gateway_addr.clone()])?)
                .await
                .map_err(|e| anyhow!("miner {i}: {e}"))?;
        // 0.01 AGORA per 1k tokens for miner 0, 0.02 for miner 1, ...
        let price = Amount(10_000_000 * (1 + i as u128));
        let state = shared.snapshot().state;
        let registered = state
            .subnets
            .get(&1)
            .is_some_and(|s| s.neurons.iter().any(|n| n.hotkey == key.address()));
        if !registered {
            submit_and_wait(
                shared,
                sign(
                    shared,
                    &key,
                    Call::Register {
                        netuid: 1,
                        hotkey: key.address(),
                        max_burn: Amount::agora(100),
                    },
                ),
            )
            .await
            .with_context(|| format!("registering miner {i}"))?;
        }
        submit_and_wait(
            shared,
            sign(
                shared,
                &key,
                Call::Serve {
                    netuid: 1,
                    info: ServeInfo {
                        peer_id: p2p.peer_id().to_bytes(),
                        addresses: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
                        model_hash,
                        price_per_1k_tokens: price,
                    },
                },
            ),
        )
        .await
        .with_context(|| format!("publishing miner {i}'s serve info"))?;
        let miner = Miner::new(
            key.clone(),
            miner_engine,
            MinerConfig {
                netuid: 1,
                chain_id: shared.chain_id.clone(),
                price_per_1k: price,
                capacity: 4,
                mode,
                board: Some(board.clone()),
            },
        );
        tasks.extend(
            miner
                .spawn(&p2p, Duration::from_secs(2))
                .map_err(|e| anyhow!("{e}"))?,
        );
        tasks.push(tokio::spawn(async move {
            while events.recv().await.is_some() {}
        }));
        // Settle countersigned receipts every few seconds.
        tasks.push(tokio::spawn(crate::serving::settle(
            miner.clone(),
            key.clone(),
            shared.clone(),
        )));
        miners.push(miner);
    }
    Ok(miners)
}

/// `agora devnet`.
pub fn run(args: DevnetArgs) -> Result<()> {
    // One validator has no consensus peers: Malachite's "no peers" errors are noise here.
    init_logging_with("warn,arc_malachitebft_network=off");
    if args.miners + args.adversaries.len() > devnet::MAX_DEVNET_MINERS {
        bail!(
            "--miners plus --adversaries must be at most {}",
            devnet::MAX_DEVNET_MINERS
        );
    }
    if args.validators + args.copiers > devnet::MAX_DEVNET_VALIDATORS {
        bail!(
            "--validators plus --copiers must be at most {}",
            devnet::MAX_DEVNET_VALIDATORS
        );
    }
    if args.copiers > 0 && args.validators == 0 {
        bail!("--copiers need at least one honest validator to copy (--validators 1 or more)");
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| crate::home::home().join("devnet"));
    if args.fresh && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let engine = if args.miners + args.adversaries.len() > 0 {
        Some(load_engine(&args)?)
    } else {
        None
    };
    let key_path = dir.join("validator.key");
    node::write_key(&key_path, &devnet::validator_key())
        .with_context(|| format!("writing {}", key_path.display()))?;
    let config_text = format!(
        "moniker = \"devnet\"\nvalidator_key = \"validator.key\"\n\n[p2p]\nlisten = \"/ip4/127.0.0.1/tcp/{}\"\n\n[api]\nlisten = \"127.0.0.1:{}\"\n",
        args.p2p_port, args.api_port
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config_text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = NodeConfig::load(&config_path)?;
    let rt = runtime()?;
    rt.block_on(async move {
        // The gateway's swarm first, so miners can bootstrap to it.
        let client = Arc::new(devnet::client_key());
        let gateway_port = args.p2p_port + 1;
        let (g2p, g_events) = P2p::start(*client.seed(), p2p_config(gateway_port, vec![])?)
            .await
            .map_err(|e| anyhow!("gateway: {e}"))?;
        let gateway = Gateway::new(
            g2p.clone(),
            client.clone(),
            GatewayConfig {
                chain_id: devnet::CHAIN_ID.to_owned(),
                ..GatewayConfig::default()
            },
        );
        let mut running =
            node::start_with(config, Some(agora_serve::openai::routes(gateway.clone()))).await?;
        let shared = running.shared.clone();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::serving::pump_adverts(
            gateway.clone(),
            g_events,
        )));
        // Keep the gateway's view of the chain current: height and the subnet's miners.
        tasks.push(tokio::spawn(crate::serving::follow_chain(
            gateway.clone(),
            shared.clone(),
            1,
        )));
        let result = devnet_body(&args, &mut running, &gateway, engine, &mut tasks, &dir).await;
        for t in &tasks {
            t.abort();
        }
        running.shutdown().await;
        result
    })
}

async fn devnet_body(
    args: &DevnetArgs,
    running: &mut RunningNode,
    gateway: &Arc<Gateway>,
    engine: Option<(Arc<dyn Engine>, Option<PathBuf>)>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    dir: &std::path::Path,
) -> Result<()> {
    let shared = running.shared.clone();
    // With --json, stdout carries the JSON alone.
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    crate::devnet_subnet::configure_subnet(
        &shared,
        args.tempo,
        engine.as_ref().map(|(e, _)| e.as_ref()),
    )
    .await?;
    let api = format!("http://{}", running.api_addr);
    // The client funds its escrow once.
    let client = devnet::client_key();
    if shared.snapshot().state.escrow_of(&client.address()) < Amount::agora(100) {
        submit_and_wait(
            &shared,
            sign(
                &shared,
                &client,
                Call::EscrowDeposit {
                    amount: Amount::agora(1_000),
                },
            ),
        )
        .await
        .context("funding the client's escrow")?;
    }
    let gateway_addr: agora_p2p::Addr =
        format!("/ip4/127.0.0.1/tcp/{}", args.p2p_port + 1).parse()?;
    let miners = match &engine {
        Some(e) => start_miners(args, &shared, e, gateway_addr.clone(), tasks).await?,
        None => Vec::new(),
    };
    let validators = match &engine {
        Some((e, _)) => {
            let plan = crate::devnet_subnet::ValidatorPlan {
                honest: args.validators,
                copiers: args.copiers,
                port: args.p2p_port + 40,
                bootstrap: gateway_addr,
                // A demo of epochs wants answers fast; an interactive devnet leaves the CPU to
                // its user between rounds.
                pause: if args.epochs.is_some() {
                    Duration::ZERO
                } else {
                    Duration::from_secs(30)
                },
            };
            crate::devnet_subnet::start_validators(&plan, &shared, e, tasks).await?
        }
        None => Vec::new(),
    };
    // Wait for the miners' adverts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.routable_miners() < miners.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let model = gateway.models().into_iter().next().unwrap_or_default();
    say(format!(
        "agora devnet: chain {} on one validator, {} miners ({} adversarial), {} subnet validators ({} copiers), a gateway",
        devnet::CHAIN_ID,
        miners.len(),
        args.adversaries.len(),
        validators.len(),
        args.copiers,
    ));
    say(format!("  data        {}", dir.display()));
    say(format!("  OpenAI API  {api}/v1 (model {model})"));
    say(format!("  chain API   {api}/chain/status"));
    say(format!(
        "  client      {} (funded, escrow for the gateway; devnet keys are public, never use them for value)",
        client.address()
    ));
    say(format!(
        "  try         curl -s {api}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"system\",\"content\":\"You are a helpful AI assistant.\"}},{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}],\"max_tokens\":32,\"temperature\":0}}'"
    ));
    say(format!("  blocks      curl -sN {api}/chain/events"));
    say(format!(
        "Ctrl-C stops it; run it again to resume from {}.",
        dir.display()
    ));
    if let Some(k) = args.epochs {
        if validators.is_empty() {
            bail!("--epochs needs at least one validator (--validators)");
        }
        crate::devnet_subnet::run_epochs(&shared, &validators, k).await?;
        let mut roles = crate::devnet_subnet::Roles::new();
        let modes = std::iter::repeat_n(MinerMode::Honest, args.miners)
            .chain(args.adversaries.iter().copied());
        for (m, mode) in miners.iter().zip(modes) {
            roles.insert(m.hotkey(), ("miner", mode.name().to_owned()));
        }
        for v in &validators {
            let mode = if v.is_copier() { "copier" } else { "honest" };
            roles.insert(v.hotkey(), ("validator", mode.to_owned()));
        }
        let json = crate::devnet_subnet::metagraph_json(&shared.snapshot().state, &roles);
        if args.json {
            println!("{json}");
        } else {
            crate::devnet_subnet::print_metagraph(&json);
        }
        return Ok(());
    }
    if args.demo {
        return demo(&api, &shared, &miners).await;
    }
    let mut events = shared.finalized.subscribe();
    let start = shared.snapshot().state.height;
    match args.blocks {
        Some(n) => {
            let goal = start + n;
            let deadline = Instant::now() + Duration::from_secs(60 + 5 * n);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, events.recv()).await {
                    Ok(Ok(b)) => {
                        println!(
                            "block {} hash {} root {} txs {}",
                            b.height, b.hash, b.state_root, b.txs
                        );
                        if b.height >= goal {
                            return Ok(());
                        }
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(_)) => return Err(anyhow!("the node stopped")),
                    Err(_) => {
                        return Err(anyhow!("no block {goal} within the deadline; see the log"));
                    }
                }
            }
        }
        None => until_ctrl_c(running).await,
    }
}

async fn demo(api: &str, shared: &Shared, miners: &[Arc<Miner>]) -> Result<()> {
    if miners.is_empty() {
        bail!("--demo needs at least one miner");
    }
    let client = agora_chain::client::Client::new(api)?;
    let balances = |s: &Shared| -> Vec<Amount> {
        let state = s.snapshot().state;
        miners
            .iter()
            .map(|m| state.account(&m.hotkey()).balance)
            .collect()
    };
    let before = balances(shared);
    let questions = [
        "What is the capital of France?",
        "Name three primary colours.",
        "What is 2 + 2?",
    ];
    for q in questions {
        let body = serde_json::json!({
            "messages": [
                {"role": "system", "content": "You are a helpful AI assistant."},
                {"role": "user", "content": q},
            ],
            "max_tokens": 32,
            "temperature": 0,
        });
        let (code, v) = client.post("/v1/chat/completions", &body).await?;
        if code != 200 {
            bail!("the gateway answered {code}: {v}");
        }
        println!(
            "Q: {q}\nA: {}\n   ({} prompt + {} completion tokens)",
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .trim(),
            v["usage"]["prompt_tokens"],
            v["usage"]["completion_tokens"]
        );
    }
    // Wait for the miners' settlements to be finalized.
    let deadline = Instant::now() + Duration::from_secs(60);
    // Miners also answer the validators' challenges; count the demo's own requests.
    let served = questions.len();
    loop {
        let now = balances(shared);
        let paid = now.iter().zip(&before).filter(|(a, b)| a > b).count();
        let served_by: usize = miners.iter().filter(|m| m.served() > 0).count();
        if paid >= served_by && served_by > 0 {
            for (m, (a, b)) in miners.iter().zip(now.iter().zip(&before)) {
                let earned = a.checked_sub(*b).unwrap_or(Amount::ZERO);
                println!(
                    "miner {} served {} requests, paid {} AGORA on the ledger",
                    m.hotkey(),
                    m.served(),
                    earned
                );
            }
            println!("{served} requests served and settled");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("payments were not settled within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
