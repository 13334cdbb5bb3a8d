//! `agora node`, `agora testnet init` and `agora devnet`: run chain nodes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_chain::client::Client;
use agora_chain::devnet::{self, TestnetPlan};
use agora_chain::node::{self, NodeConfig};
use agora_primitives::Address;
use anyhow::{Context, Result, anyhow, bail};

/// Run a chain node.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's config file (TOML; `agora testnet init` writes them).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Write the files for a local multi-node network.
#[derive(Debug, clap::Args)]
pub struct TestnetArgs {
    #[command(subcommand)]
    command: TestnetCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TestnetCommand {
    /// Write a genesis, a faucet key and one config per node on loopback ports.
    Init {
        /// Validators (each gets a key and equal stake).
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Full nodes (no key) besides the validators.
        #[arg(long, default_value_t = 0)]
        full_nodes: usize,
        /// Output directory (must not hold a testnet already).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// API port of node 0 (node i uses this + i).
        #[arg(long, default_value_t = 8800)]
        api_port: u16,
        /// Consensus peer-to-peer port of node 0 (node i uses this + i).
        #[arg(long, default_value_t = 27000)]
        p2p_port: u16,
        /// Transaction-gossip port of node 0 (node i uses this + i).
        #[arg(long, default_value_t = 28000)]
        gossip_port: u16,
        /// Chain id.
        #[arg(long, default_value = "agora-testnet")]
        chain_id: String,
        /// Milliseconds to wait for transactions before proposing an empty block.
        #[arg(long, default_value_t = 1000)]
        empty_interval_ms: u64,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn init_logging() {
    init_logging_with("warn,agora_chain=info");
}

/// Logging to stderr: `AGORA_LOG` (an `EnvFilter`), else `default`.
pub(crate) fn init_logging_with(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) async fn until_ctrl_c(node: &mut node::RunningNode) -> Result<()> {
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        () = node.wait() => Err(anyhow!("the node stopped on its own; see the log above")),
    }
}

/// `agora node --config FILE`.
pub fn run_node(args: NodeArgs) -> Result<()> {
    init_logging();
    let config = NodeConfig::load(&args.config)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let prepared = match &config.serve {
            Some(section) => {
                let chain_id = node::genesis_state(&config)?.chain_id;
                Some(crate::serving::prepare(section, &chain_id).await?)
            }
            None => None,
        };
        let gateway = prepared.as_ref().and_then(|p| p.gateway.clone());
        let extra = gateway.clone().map(agora_serve::openai::routes);
        let mut running = node::start_with(config, extra).await?;
        let tasks = match prepared {
            Some(p) => crate::serving::run(p, running.shared.clone())?,
            None => Vec::new(),
        };
        println!(
            "node api=http://{} validator={}{}",
            running.api_addr,
            running
                .validator
                .map_or_else(|| "none (full node)".to_owned(), |v| v.to_string()),
            if gateway.is_some() {
                format!(" openai=http://{}/v1", running.api_addr)
            } else {
                String::new()
            }
        );
        let result = until_ctrl_c(&mut running).await;
        for t in &tasks {
            t.abort();
        }
        running.shutdown().await;
        result
    })
}

/// `agora testnet init ...`.
pub fn run_testnet(args: TestnetArgs) -> Result<()> {
    match args.command {
        TestnetCommand::Init {
            validators,
            full_nodes,
            dir,
            api_port,
            p2p_port,
            gossip_port,
            chain_id,
            empty_interval_ms,
        } => {
            let nodes = devnet::init_testnet(&TestnetPlan {
                validators,
                full_nodes,
                dir: dir.clone(),
                api_port,
                p2p_port,
                gossip_port,
                chain_id,
                empty_interval_ms,
            })?;
            for n in &nodes {
                println!(
                    "node{} api={} config={}",
                    n.index,
                    n.api,
                    n.config.display()
                );
            }
            eprintln!(
                "start each with `agora node --config <config>`; the faucet key is {}",
                dir.join("faucet.key").display()
            );
            Ok(())
        }
    }
}

/// What `agora tx --node` needs from the node.
pub struct RemoteAccount {
    pub chain_id: String,
    pub height: u64,
    pub next_nonce: u64,
}

/// Read the chain id, height and the sender's next nonce from a node.
pub async fn remote_account(url: &str, sender: &Address) -> Result<RemoteAccount> {
    let client = Client::new(url)?;
    let (code, status) = client.get("/chain/status").await?;
    if code != 200 {
        bail!("{url}/chain/status answered {code}: {status}");
    }
    let (code, account) = client.get(&format!("/chain/account/{sender}")).await?;
    if code != 200 {
        bail!("{url}/chain/account answered {code}: {account}");
    }
    Ok(RemoteAccount {
        chain_id: status["chain_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{url}/chain/status has no chain_id"))?
            .to_owned(),
        height: status["height"].as_u64().unwrap_or(0),
        next_nonce: account["next_nonce"]
            .as_u64()
            .ok_or_else(|| anyhow!("{url}/chain/account has no next_nonce"))?,
    })
}

/// A subnet's current hyperparameters, as a node's chain API shows them (`None`: no such
/// subnet).
pub async fn remote_subnet_params(
    url: &str,
    netuid: u16,
) -> Result<Option<agora_primitives::SubnetParams>> {
    let client = Client::new(url)?;
    let (code, subnet) = client.get(&format!("/chain/subnet/{netuid}")).await?;
    match code {
        200 => {
            let params =
                agora_chain::genesis_file::SubnetParamsFile::parse(&subnet["params"].to_string())
                    .with_context(|| format!("{url}/chain/subnet/{netuid}: its params"))?;
            Ok(Some(
                params.over(agora_primitives::SubnetParams::defaults())?,
            ))
        }
        404 => Ok(None),
        _ => bail!("{url}/chain/subnet/{netuid} answered {code}: {subnet}"),
    }
}

/// Submit a hex transaction and (optionally) wait until it is included or rejected.
pub async fn submit_and_wait(url: &str, hex: &str, wait: bool) -> Result<()> {
    let client = Client::new(url)?;
    let (code, body) = client
        .post("/chain/tx", &serde_json::json!({ "tx": hex }))
        .await?;
    if code != 200 {
        let msg = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("the node refused the transaction ({code}): {msg}");
    }
    let hash = body["hash"]
        .as_str()
        .ok_or_else(|| anyhow!("the node answered without a hash: {body}"))?
        .to_owned();
    println!("submitted {hash}");
    if !wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (code, status) = client.get(&format!("/chain/tx/{hash}")).await?;
        if code == 200 {
            match status["status"].as_str() {
                Some("included") => {
                    println!("included at height {}", status["height"]);
                    return Ok(());
                }
                Some("rejected") => {
                    bail!("rejected: {}", status["reason"].as_str().unwrap_or("?"));
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{hash} was not included within 60 s; ask {url}/chain/tx/{hash} later")
}
