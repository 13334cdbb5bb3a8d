//! `agora bench chain`: finalized transfers per second and finality latency, for 1 and for 4
//! validators on loopback (real Malachite over libp2p TCP, real stores, the chain API).
//!
//! All nodes run in this process on one Tokio runtime. The load is signed transfers from
//! `SENDERS` funded accounts, posted in batches to node 0's `POST /chain/txs` (with 4
//! validators node 0 relays them to the others).
//!
//! - Throughput: `SATURATE` transfers are offered at once; the rate is transfers divided by the
//!   time from the first submission to the block holding the last one.
//! - Finality: then transfers are offered at half that rate for a few seconds; each one's
//!   latency runs from its submission to the finalized block that holds it (as node 0 sees it).
#![allow(
    clippy::float_arithmetic,
    reason = "benchmark figures for people, not consensus-visible"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agora_chain::client::Client;
use agora_chain::node::{self, NodeConfig, RunningNode};
use agora_crypto::Keypair;
use agora_primitives::{Address, Amount, Call, Hash, SignedTransaction, Transaction, to_hex};
use anyhow::{Context, Result, anyhow};

const SENDERS: usize = 256;
const BATCH: usize = 500;

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

struct Cluster {
    nodes: Vec<RunningNode>,
    dir: std::path::PathBuf,
    chain_id: String,
}

async fn start_cluster(validators: usize, senders: &[Keypair]) -> Result<Cluster> {
    let dir = std::env::temp_dir().join(format!(
        "agora-bench-chain-v{validators}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let keys: Vec<Keypair> = (0..validators)
        .map(|_| Keypair::try_generate())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    let chain_id = format!("bench-v{validators}");
    let balances: Vec<serde_json::Value> = keys
        .iter()
        .chain(senders)
        .map(|k| serde_json::json!({"address": k.address().to_string(), "amount": "1000000"}))
        .collect();
    let stakes: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            let a = k.address().to_string();
            serde_json::json!({"coldkey": a, "hotkey": a, "amount": "10000"})
        })
        .collect();
    let genesis = serde_json::json!({"chain_id": chain_id, "balances": balances, "stakes": stakes});
    std::fs::write(dir.join("genesis.json"), genesis.to_string())?;
    let p2p: Vec<u16> = (0..validators)
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let api: Vec<u16> = (0..validators)
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let gossip: Vec<u16> = (0..validators)
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let mut nodes = Vec::with_capacity(validators);
    for i in 0..validators {
        let home = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&home)?;
        node::write_key(&home.join("validator.key"), &keys[i])?;
        let peers: Vec<String> = (0..validators)
            .filter(|j| *j != i)
            .map(|j| format!("\"/ip4/127.0.0.1/tcp/{}\"", p2p[j]))
            .collect();
        let gossip_peers: Vec<String> = (0..validators)
            .filter(|j| *j != i)
            .map(|j| format!("\"/ip4/127.0.0.1/tcp/{}\"", gossip[j]))
            .collect();
        let text = format!(
            "moniker = \"bench{i}\"\ngenesis = \"../genesis.json\"\nvalidator_key = \"validator.key\"\n\n[p2p]\nlisten = \"/ip4/127.0.0.1/tcp/{}\"\npeers = [{}]\ngossip_listen = \"/ip4/127.0.0.1/tcp/{}\"\ngossip_peers = [{}]\n\n[api]\nlisten = \"127.0.0.1:{}\"\n\n[block]\nempty_interval_ms = 200\n",
            p2p[i],
            peers.join(", "),
            gossip[i],
            gossip_peers.join(", "),
            api[i]
        );
        let path = home.join("config.toml");
        std::fs::write(&path, text)?;
        nodes.push(node::start(NodeConfig::load(&path)?).await?);
    }
    Ok(Cluster {
        nodes,
        dir,
        chain_id,
    })
}

fn transfer(chain_id: &str, key: &Keypair, nonce: u64) -> SignedTransaction {
    agora_crypto::sign_tx(
        key,
        Transaction {
            chain_id: chain_id.to_owned(),
            sender: key.address(),
            nonce,
            fee: Amount(1_000),
            expiry_height: u64::MAX,
            call: Call::Transfer {
                to: Address([9; 32]),
                amount: Amount(1),
            },
        },
    )
}

/// Pre-signed transfers, round-robin over the senders so every block can take many senders.
fn sign_load(
    chain_id: &str,
    senders: &[Keypair],
    nonces: &mut [u64],
    n: usize,
) -> Vec<(Hash, String)> {
    (0..n)
        .map(|i| {
            let s = i % senders.len();
            let tx = transfer(chain_id, &senders[s], nonces[s]);
            nonces[s] += 1;
            (
                agora_crypto::tx_hash(&tx),
                to_hex(&agora_codec::encode_to_vec(&tx)),
            )
        })
        .collect()
}

async fn submit(client: &Client, batch: &[(Hash, String)]) -> Result<()> {
    let txs: Vec<&str> = batch.iter().map(|(_, h)| h.as_str()).collect();
    let (code, body) = client
        .post("/chain/txs", &serde_json::json!({ "txs": txs }))
        .await?;
    if code != 200 {
        return Err(anyhow!("node refused the batch ({code}): {body}"));
    }
    let refused = body["results"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|x| x.get("error").is_some()).count());
    if refused > 0 {
        return Err(anyhow!("{refused} transfers refused: {body}"));
    }
    Ok(())
}

/// Watch node 0's finalized blocks; record when each awaited transaction lands.
async fn collect(
    node: &RunningNode,
    rx: &mut tokio::sync::broadcast::Receiver<agora_chain::shared::Finalized>,
    waiting: &mut BTreeMap<Hash, Instant>,
    latencies: &mut Vec<Duration>,
    deadline: Instant,
) -> Result<Instant> {
    let mut last = Instant::now();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, rx.recv())
            .await
            .map_err(|_| anyhow!("{} transfers not finalized in time", waiting.len()))?;
        let b = match event {
            Ok(b) => b,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => return Err(anyhow!("event stream: {e}")),
        };
        let now = Instant::now();
        let block = node
            .shared
            .store
            .block(b.height)?
            .ok_or_else(|| anyhow!("block {} missing", b.height))?;
        for tx in &block.txs {
            if let Some(sent) = waiting.remove(&agora_crypto::tx_hash(tx)) {
                latencies.push(now - sent);
                last = now;
            }
        }
    }
    Ok(last)
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

async fn run_one(validators: usize, saturate: usize, seconds: u64) -> Result<(f64, f64, f64)> {
    let senders: Vec<Keypair> = (0..SENDERS)
        .map(|i| Keypair::from_seed(&agora_crypto::hash(format!("bench sender {i}").as_bytes()).0))
        .collect();
    let cluster = start_cluster(validators, &senders).await?;
    let result = drive(&cluster, &senders, saturate, seconds).await;
    let dir = cluster.dir.clone();
    for n in cluster.nodes {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(dir);
    result
}

async fn drive(
    cluster: &Cluster,
    senders: &[Keypair],
    saturate: usize,
    seconds: u64,
) -> Result<(f64, f64, f64)> {
    let node0 = &cluster.nodes[0];
    let client = Client::new(&format!("http://{}", node0.api_addr))?;
    let mut rx = node0.shared.finalized.subscribe();
    // Wait for the first block: every validator is connected and voting.
    let start = Instant::now();
    while node0.shared.snapshot().state.height < 2 {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("the chain did not start within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut nonces = vec![0u64; senders.len()];

    // Phase 1: saturation.
    let load = sign_load(&cluster.chain_id, senders, &mut nonces, saturate);
    let mut waiting: BTreeMap<Hash, Instant> = BTreeMap::new();
    let mut latencies = Vec::new();
    let first = Instant::now();
    let collector_deadline = first + Duration::from_secs(120);
    // Submit in a task so collection runs at the same time.
    let batches: Vec<Vec<(Hash, String)>> = load.chunks(BATCH).map(<[_]>::to_vec).collect();
    let sub_client = client.clone();
    for b in &batches {
        for (h, _) in b {
            waiting.insert(*h, first);
        }
    }
    let submitter = tokio::spawn(async move {
        for b in batches {
            submit(&sub_client, &b).await?;
        }
        Ok::<(), anyhow::Error>(())
    });
    let last = collect(
        node0,
        &mut rx,
        &mut waiting,
        &mut latencies,
        collector_deadline,
    )
    .await?;
    submitter.await??;
    let tps = saturate as f64 / (last - first).as_secs_f64();

    // Phase 2: latency at half the measured rate, in batches every 50 ms.
    let rate = (tps / 2.0).max(100.0);
    let per_tick = ((rate / 20.0).round() as usize).max(1);
    let ticks = (seconds * 20) as usize;
    let load = sign_load(&cluster.chain_id, senders, &mut nonces, per_tick * ticks);
    let mut latencies = Vec::new();
    let mut waiting: BTreeMap<Hash, Instant> = BTreeMap::new();
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    let mut chunks = load.chunks(per_tick);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let Some(chunk) = chunks.next() else { break };
                let now = Instant::now();
                for (h, _) in chunk {
                    waiting.insert(*h, now);
                }
                submit(&client, chunk).await?;
            }
            event = rx.recv() => {
                if let Ok(b) = event {
                    let now = Instant::now();
                    if let Some(block) = node0.shared.store.block(b.height)? {
                        for tx in &block.txs {
                            if let Some(sent) = waiting.remove(&agora_crypto::tx_hash(tx)) {
                                latencies.push(now - sent);
                            }
                        }
                    }
                }
            }
        }
    }
    collect(
        node0,
        &mut rx,
        &mut waiting,
        &mut latencies,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    latencies.sort();
    Ok((tps, percentile(&latencies, 50), percentile(&latencies, 99)))
}

/// `agora bench chain`.
pub fn bench_chain(validators: &[usize], saturate: usize, seconds: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("| validators | finalized transfers/s | finality p50 | finality p99 |");
    println!("|---|---|---|---|");
    let mut lines = Vec::new();
    for &v in validators {
        let (tps, p50, p99) = rt.block_on(run_one(v, saturate, seconds))?;
        println!("| {v} | {tps:.0} | {p50:.0} ms | {p99:.0} ms |");
        lines.push(format!("bench chain/v{v}_transfers_per_s {tps:.0} tx/s"));
        lines.push(format!("bench chain/v{v}_finality_p50_ms {p50:.1} ms"));
        lines.push(format!("bench chain/v{v}_finality_p99_ms {p99:.1} ms"));
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
