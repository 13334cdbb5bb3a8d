//! A chain node: configuration, start-up and shutdown.
//!
//! The configuration file is TOML (see [`NodeConfig`]); relative paths in it are relative to
//! the file's directory. A node with `validator_key` set votes with that key when the key's
//! hotkey is in the validator set; without it the node is a full node that follows and syncs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_crypto::Keypair;
use agora_ledger::State;
use agora_primitives::{Hash, SignedTransaction};
use agora_store::Store;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, DiscoveryConfig, NodeConfig as MalachiteNodeConfig, P2pConfig, ValueSyncConfig,
};
use malachitebft_app_channel::app::types::Keypair as NetKeypair;
use malachitebft_app_channel::{
    ConsensusContext, EngineBuilder, EngineHandle, NetworkContext, NetworkIdentity, RequestContext,
    SyncContext, WalContext,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::ApiState;
use crate::context::{AgoraContext, ChainSigner, ChainVerifier, NodeAddress};
use crate::host::{BlockConfig, Host};
use crate::mempool::MempoolConfig;
use crate::shared::{Shared, Snapshot};
use crate::wire::ChainCodec;

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config file is missing or wrong.
    #[error("config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The genesis cannot be used.
    #[error("genesis: {0}")]
    Genesis(String),
    /// The key file cannot be used.
    #[error("validator key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] agora_store::Error),
    /// A port cannot be bound.
    #[error("cannot listen on {addr}: {reason}; pick a free port in the config")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Malachite did not start.
    #[error("consensus engine: {0}")]
    Engine(String),
}

fn default_moniker() -> String {
    "agora-node".to_owned()
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8800))
}

fn default_p2p() -> String {
    "/ip4/127.0.0.1/tcp/27000".to_owned()
}

/// The node's configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A name for logs.
    #[serde(default = "default_moniker")]
    pub moniker: String,
    /// Data directory (store and consensus WAL). Default: the config file's directory.
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// Genesis JSON file; omitted: the embedded one-validator devnet genesis.
    #[serde(default)]
    pub genesis: Option<PathBuf>,
    /// File with the validator's secret seed as 64 hex characters (mode 0600); omitted: a
    /// full node.
    #[serde(default)]
    pub validator_key: Option<PathBuf>,
    /// Peer-to-peer settings.
    #[serde(default)]
    pub p2p: P2pSection,
    /// API settings.
    #[serde(default)]
    pub api: ApiSection,
    /// Block production.
    #[serde(default)]
    pub block: BlockSection,
    /// Mempool limits.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// Deliberate faults, for tests only.
    #[serde(default)]
    pub faults: FaultSection,
    /// Serving roles (miner, gateway) run beside the chain by `agora node`.
    #[serde(default)]
    pub serve: Option<ServeSection>,
}

/// `[serve]`: the serving network's roles on this node (see `agora node`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Listen multiaddress of the serving swarm.
    pub listen: String,
    /// Serving peers to dial (multiaddresses of gateways or miners).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Subnet served or routed to.
    #[serde(default = "default_netuid")]
    pub netuid: u16,
    /// Run the gateway, paying from the escrow of this key (file with the seed in hex).
    #[serde(default)]
    pub gateway_key: Option<PathBuf>,
    /// The gateway's price cap per 1k tokens (decimal AGORA).
    #[serde(default)]
    pub max_price_per_1k: Option<String>,
    /// Run the miner with this hotkey (file with the seed in hex); it must already be
    /// registered on the subnet with serve info (`agora tx register`, `agora tx serve`).
    #[serde(default)]
    pub miner_key: Option<PathBuf>,
    /// The miner's price per 1k tokens (decimal AGORA).
    #[serde(default)]
    pub price_per_1k: Option<String>,
    /// Requests the miner runs at once.
    #[serde(default)]
    pub capacity: Option<usize>,
    /// Model cache directory for the miner and validator (default as `agora model fetch`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// How the miner behaves: `honest` (the default), or an adversary for tests of the
    /// validators: `wrong-model`, `random`, `copycat`, `slow`, `buffer`, `flaky`.
    #[serde(default)]
    pub miner_mode: Option<String>,
    /// Run a subnet validator with this hotkey (file with the seed in hex); it must already be
    /// registered on the subnet and staked (`agora tx register`, `agora tx stake`), and its
    /// account must hold escrow (its challenges are paid like any request).
    #[serde(default)]
    pub validator_key: Option<PathBuf>,
    /// The validator copies the others' revealed weights instead of evaluating (tests only).
    #[serde(default)]
    pub validator_copier: bool,
}

fn default_netuid() -> u16 {
    1
}

/// `[faults]`: make this node misbehave on purpose (tests of the honest majority).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    /// Corrupt every block this node proposes: `bad-signature`, `wrong-state-root` or
    /// `oversized`.
    pub proposer: Option<crate::host::ProposerFault>,
}

/// `[p2p]`: consensus networking (Malachite on libp2p).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pSection {
    /// Listen multiaddress, e.g. `/ip4/127.0.0.1/tcp/27000`.
    #[serde(default = "default_p2p")]
    pub listen: String,
    /// Peers to stay connected to (multiaddresses).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Listen multiaddress of the gossip network (transactions); omitted: no gossip.
    #[serde(default)]
    pub gossip_listen: Option<String>,
    /// Gossip peers to dial (multiaddresses).
    #[serde(default)]
    pub gossip_peers: Vec<String>,
}

impl Default for P2pSection {
    fn default() -> Self {
        Self {
            listen: default_p2p(),
            peers: Vec::new(),
            gossip_listen: None,
            gossip_peers: Vec::new(),
        }
    }
}

/// `[api]`: the chain API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address, e.g. `127.0.0.1:8800`.
    #[serde(default = "default_api")]
    pub listen: SocketAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_api(),
        }
    }
}

/// `[block]`: block limits and pacing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSection {
    /// Most transactions per block.
    pub max_txs: Option<usize>,
    /// Most transaction bytes per block.
    pub max_bytes: Option<usize>,
    /// Least milliseconds between blocks.
    pub min_interval_ms: Option<u64>,
    /// Milliseconds to wait for transactions before proposing an empty block.
    pub empty_interval_ms: Option<u64>,
}

/// `[mempool]`: mempool limits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolSection {
    /// Most transactions waiting.
    pub max_txs: Option<usize>,
    /// Most bytes waiting.
    pub max_bytes: Option<usize>,
}

impl NodeConfig {
    /// Read a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let err = |reason: String| NodeError::Config {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read it ({e}); create one with `agora testnet init`"
            ))
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            }
        };
        config.home = Some(config.home.as_deref().map_or_else(|| dir.clone(), abs));
        config.genesis = config.genesis.as_deref().map(abs);
        config.validator_key = config.validator_key.as_deref().map(abs);
        if let Some(serve) = config.serve.as_mut() {
            serve.gateway_key = serve.gateway_key.as_deref().map(abs);
            serve.miner_key = serve.miner_key.as_deref().map(abs);
            serve.validator_key = serve.validator_key.as_deref().map(abs);
            serve.model_dir = serve.model_dir.as_deref().map(abs);
        }
        Ok(config)
    }

    /// The data directory.
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| PathBuf::from("."))
    }

    fn block_config(&self) -> BlockConfig {
        let d = BlockConfig::default();
        let b = &self.block;
        BlockConfig {
            max_txs: b.max_txs.unwrap_or(d.max_txs),
            max_bytes: b.max_bytes.unwrap_or(d.max_bytes),
            min_interval: b
                .min_interval_ms
                .map_or(d.min_interval, Duration::from_millis),
            empty_interval: b
                .empty_interval_ms
                .map_or(d.empty_interval, Duration::from_millis),
            fault: self.faults.proposer,
        }
    }

    fn mempool_config(&self) -> MempoolConfig {
        let d = MempoolConfig::default();
        MempoolConfig {
            max_txs: self.mempool.max_txs.unwrap_or(d.max_txs),
            max_bytes: self.mempool.max_bytes.unwrap_or(d.max_bytes),
            ..d
        }
    }
}

/// Read a validator key file: the 32-byte secret seed as 64 hex characters.
pub fn read_key(path: &Path) -> Result<Keypair, NodeError> {
    let err = |reason: String| NodeError::Key {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let bytes = agora_primitives::from_hex(text.trim())
        .ok_or_else(|| err("must hold 64 hex characters (the secret seed)".to_owned()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| err("must hold exactly 32 bytes (64 hex characters)".to_owned()))?;
    Ok(Keypair::from_seed(&seed))
}

/// Write a validator key file (mode 0600 on Unix).
pub fn write_key(path: &Path, key: &Keypair) -> std::io::Result<()> {
    let text = format!("{}\n", agora_primitives::to_hex(key.seed().as_slice()));
    write_private(path, text.as_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

struct MalachiteConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl MalachiteNodeConfig for MalachiteConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn consensus_mut(&mut self) -> &mut ConsensusConfig {
        &mut self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}

fn multiaddr(text: &str) -> Result<malachitebft_app_channel::app::net::Multiaddr, String> {
    text.parse().map_err(|e| {
        format!("{text:?} is not a multiaddress ({e}); write /ip4/127.0.0.1/tcp/27000")
    })
}

/// A running node.
pub struct RunningNode {
    /// Shared chain state (for in-process users such as `agora devnet`).
    pub shared: Arc<Shared>,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// The validator address, when this node holds a validator key.
    pub validator: Option<NodeAddress>,
    engine: EngineHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("api_addr", &self.api_addr)
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// Stop consensus, the API and the relay.
    pub async fn shutdown(self) {
        let _ = self.engine.actor.kill_and_wait(None).await;
        self.engine.handle.abort();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Resolves when the host loop or the API stops on its own (an error).
    pub async fn wait(&mut self) {
        if self.tasks.is_empty() {
            std::future::pending::<()>().await;
        }
        let (_, index, _) = futures::future::select_all(self.tasks.iter_mut()).await;
        self.tasks.remove(index);
    }
}

/// The genesis state named by the config (or the embedded devnet genesis).
pub fn genesis_state(config: &NodeConfig) -> Result<State, NodeError> {
    let genesis = match &config.genesis {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| NodeError::Genesis(format!("cannot read {}: {e}", path.display())))?;
            crate::genesis_file::parse(&text)
                .map_err(|e| NodeError::Genesis(format!("{}: {e:#}", path.display())))?
        }
        None => crate::devnet::genesis(),
    };
    genesis
        .into_state()
        .map_err(|e| NodeError::Genesis(e.to_string()))
}

/// Start a node: open (or initialise) the store, start Malachite, the host loop, the API and
/// the relay. Must run inside a multi-threaded Tokio runtime.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    start_with(config, None).await
}

/// [`start`], serving `extra` routes (for example the OpenAI gateway) on the API port too.
pub async fn start_with(
    config: NodeConfig,
    extra: Option<axum::Router>,
) -> Result<RunningNode, NodeError> {
    let home = config.home();
    let genesis = genesis_state(&config)?;
    let store = Arc::new(Store::open(&home.join("data"))?);
    store.init(&genesis)?;
    let state = store.state()?;
    let tip_hash = match store.block(state.height)? {
        Some(b) => agora_crypto::hash_of(&b.header),
        None => Hash::default(),
    };
    let state_root = store.tip()?.map_or_else(|| state.root(), |t| t.root);
    let chain_id = state.chain_id.clone();
    info!(moniker = %config.moniker, chain = %chain_id, height = state.height, "opening node");

    let key = match &config.validator_key {
        Some(path) => Some(Arc::new(read_key(path)?)),
        None => None,
    };
    // The node's libp2p identity: the validator key, or a fresh key for a full node.
    let net_seed: [u8; 32] = match &key {
        Some(k) => *k.seed(),
        None => *Keypair::try_generate()
            .map_err(|e| NodeError::Engine(e.to_string()))?
            .seed(),
    };
    let mut seed_bytes = net_seed;
    let net_key = NetKeypair::ed25519_from_bytes(&mut seed_bytes)
        .map_err(|e| NodeError::Engine(e.to_string()))?;

    let shared = Arc::new(Shared::new(
        store.clone(),
        Snapshot {
            state: Arc::new(state),
            tip_hash,
            state_root,
        },
        config.mempool_config(),
    ));

    let listen = multiaddr(&config.p2p.listen).map_err(|reason| NodeError::Config {
        path: home.clone(),
        reason,
    })?;
    let peers = config
        .p2p
        .peers
        .iter()
        .map(|p| multiaddr(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| NodeError::Config {
            path: home.clone(),
            reason,
        })?;
    let p2p = P2pConfig {
        listen_addr: listen,
        persistent_peers: peers,
        discovery: DiscoveryConfig {
            enabled: false,
            max_connections_per_ip: 256,
            ..DiscoveryConfig::default()
        },
        ..P2pConfig::default()
    };
    let consensus = ConsensusConfig {
        p2p,
        ..ConsensusConfig::default()
    };
    let value_sync = ValueSyncConfig {
        status_update_interval: Duration::from_millis(1000),
        request_timeout: Duration::from_secs(5),
        batch_size: 16,
        ..ValueSyncConfig::default()
    };
    let mcfg = MalachiteConfig {
        moniker: config.moniker.clone(),
        consensus,
        value_sync,
    };

    let ctx = AgoraContext::new(&chain_id);
    let verifier = Box::new(ChainVerifier::new(&chain_id));
    let signer = key.as_ref().map(|k| ChainSigner::new(&chain_id, k.clone()));
    let address =
        signer
            .as_ref()
            .map(|s| s.address())
            .unwrap_or(NodeAddress(agora_primitives::Address(net_seed_public(
                &net_key,
            ))));
    let identity = NetworkIdentity::new(
        config.moniker.clone(),
        net_key,
        signer.as_ref().map(|s| s.address().to_string()),
    );
    let consensus_ctx = match &signer {
        Some(s) => ConsensusContext::new_validator(address, verifier, Box::new(s.clone())),
        None => ConsensusContext::new_full_node(address, verifier),
    };
    let wal_dir = home.join("wal");
    std::fs::create_dir_all(&wal_dir).map_err(|e| NodeError::Config {
        path: wal_dir.clone(),
        reason: format!("cannot create the WAL directory: {e}"),
    })?;

    // Bind the API before starting consensus, so a busy port fails fast.
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| NodeError::Listen {
            addr: config.api.listen.to_string(),
            reason: e.to_string(),
        })?;
    let api_addr = api_listener.local_addr().map_err(|e| NodeError::Listen {
        addr: config.api.listen.to_string(),
        reason: e.to_string(),
    })?;

    let (channels, engine) = EngineBuilder::new(ctx, mcfg)
        .with_default_wal(WalContext::new(wal_dir.join("consensus.wal"), ChainCodec))
        .with_default_network(NetworkContext::new(identity, ChainCodec))
        .with_default_sync(SyncContext::new(ChainCodec))
        .with_default_consensus(consensus_ctx)
        .with_default_request(RequestContext::new(64))
        .build()
        .await
        .map_err(|e| NodeError::Engine(format!("{e:#}")))?;

    let mut tasks = Vec::new();
    let host = Host::new(shared.clone(), signer.clone(), config.block_config());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = host.run(channels).await {
            warn!(error = %e, "host loop stopped");
        }
    }));

    let (relay, p2p) = match &config.p2p.gossip_listen {
        None => (None, None),
        Some(listen) => {
            let bad = |reason: String| NodeError::Config {
                path: home.clone(),
                reason,
            };
            let listen = multiaddr(listen).map_err(bad)?;
            let bootstrap = config
                .p2p
                .gossip_peers
                .iter()
                .map(|p| multiaddr(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let (p2p, events) = agora_p2p::P2p::start(
                net_seed,
                agora_p2p::P2pConfig {
                    listen: vec![listen],
                    bootstrap,
                    topics: vec![TX_TOPIC.to_owned()],
                    ..agora_p2p::P2pConfig::default()
                },
            )
            .await
            .map_err(|e| NodeError::Engine(e.to_string()))?;
            let (tx, rx) = mpsc::channel(50_000);
            tasks.push(tokio::spawn(gossip_out(rx, p2p.clone())));
            tasks.push(tokio::spawn(regossip(shared.clone(), tx.clone())));
            tasks.push(tokio::spawn(gossip_in(events, p2p.clone(), shared.clone())));
            (Some(tx), Some(p2p))
        }
    };
    let router = crate::api::router(ApiState {
        shared: shared.clone(),
        relay,
        p2p,
    });
    let router = match extra {
        Some(extra) => router.merge(extra),
        None => router,
    };
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router).await {
            warn!(error = %e, "API server stopped");
        }
    }));
    info!(api = %api_addr, validator = ?signer.as_ref().map(|s| s.address().to_string()), "node started");
    Ok(RunningNode {
        shared,
        api_addr,
        validator: signer.map(|s| s.address()),
        engine,
        tasks,
    })
}

fn net_seed_public(key: &NetKeypair) -> [u8; 32] {
    key.public()
        .try_into_ed25519()
        .map(|k| k.to_bytes())
        .unwrap_or([0u8; 32])
}

/// The gossip topic of transactions.
pub const TX_TOPIC: &str = "agora/txs/1";
/// Most transactions in one gossip message.
const MAX_GOSSIP_TXS: usize = 1_000;

/// Gossip admitted transactions in batches (one message holds up to `MAX_GOSSIP_TXS`).
async fn gossip_out(mut rx: mpsc::Receiver<SignedTransaction>, p2p: agora_p2p::P2p) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        let mut bytes = 0usize;
        while batch.len() < MAX_GOSSIP_TXS && bytes < (512 << 10) {
            match rx.try_recv() {
                Ok(tx) => {
                    bytes += 200;
                    batch.push(tx);
                }
                Err(_) => break,
            }
        }
        let mut out = Vec::with_capacity(batch.len() * 200);
        agora_codec::encode_slice(&batch, &mut out);
        // With no peer in the topic yet the batch is not lost: the rebroadcast picks it up.
        match p2p.publish(TX_TOPIC, out).await {
            Ok(()) | Err(agora_p2p::P2pError::NoPeers(_)) => {}
            Err(e) => warn!(error = %e, "cannot gossip transactions"),
        }
    }
}

/// Every `REGOSSIP` re-send what still waits in the mempool after `REGOSSIP` (peers that were
/// not connected, restarted or dropped a message get it again; duplicates are cheap to drop).
async fn regossip(shared: Arc<Shared>, relay: mpsc::Sender<SignedTransaction>) {
    const REGOSSIP: Duration = Duration::from_secs(2);
    let mut tick = tokio::time::interval(REGOSSIP);
    loop {
        tick.tick().await;
        let due = shared.mempool().due_for_gossip(REGOSSIP, 5_000);
        for tx in due {
            if relay.try_send(tx).is_err() {
                break;
            }
        }
    }
}

/// Admit gossiped transactions; penalise peers that send undecodable or badly signed ones.
async fn gossip_in(
    mut events: mpsc::Receiver<agora_p2p::Event>,
    p2p: agora_p2p::P2p,
    shared: Arc<Shared>,
) {
    use agora_p2p::{Event, Misbehaviour};
    while let Some(event) = events.recv().await {
        let Event::Gossip { topic, from, data } = event else {
            continue;
        };
        if topic != TX_TOPIC {
            p2p.report(from, Misbehaviour::Protocol);
            continue;
        }
        let mut r = agora_codec::Reader::new(&data);
        let txs: Result<Vec<SignedTransaction>, _> = r.vec(MAX_GOSSIP_TXS, "gossiped txs");
        let txs = match txs {
            Ok(t) if r.remaining() == 0 => t,
            _ => {
                warn!(peer = %from, "undecodable transaction gossip");
                p2p.report(from, Misbehaviour::Malformed);
                continue;
            }
        };
        let shared = shared.clone();
        let bad = tokio::task::spawn_blocking(move || {
            txs.into_iter()
                .filter(|tx| {
                    matches!(
                        shared.submit(tx.clone()),
                        Err(crate::mempool::AdmitError::Invalid(
                            agora_ledger::TxError::BadSignature(_)
                        ))
                    )
                })
                .count()
        })
        .await
        .unwrap_or(0);
        if bad > 0 {
            warn!(peer = %from, bad, "gossiped transactions with bad signatures");
            p2p.report(from, Misbehaviour::BadSignature);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path in a config file, `[serve]`'s keys included, is taken from the file's
    /// directory (a `[serve] validator_key` once was not, and the node looked for it in its
    /// working directory).
    #[test]
    fn relative_paths_are_taken_from_the_config_files_directory() {
        let dir = std::env::temp_dir().join(format!("agora-node-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "validator_key = \"v.key\"\ngenesis = \"../genesis.json\"\n\n[serve]\nlisten = \"/ip4/127.0.0.1/tcp/1\"\ngateway_key = \"g.key\"\nminer_key = \"m.key\"\nvalidator_key = \"sv.key\"\nmodel_dir = \"models\"\n",
        )
        .unwrap();
        let config = NodeConfig::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(config.home(), dir);
        assert_eq!(config.validator_key, Some(dir.join("v.key")));
        assert_eq!(config.genesis, Some(dir.join("../genesis.json")));
        let serve = config.serve.expect("a [serve] section");
        assert_eq!(serve.gateway_key, Some(dir.join("g.key")));
        assert_eq!(serve.miner_key, Some(dir.join("m.key")));
        assert_eq!(serve.validator_key, Some(dir.join("sv.key")));
        assert_eq!(serve.model_dir, Some(dir.join("models")));
    }
}
