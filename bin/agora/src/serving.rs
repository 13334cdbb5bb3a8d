//! The serving roles of `agora node` (`[serve]` in its config): a gateway whose OpenAI API is
//! served on the node's API port, and a miner serving the model. Both use one libp2p swarm of
//! their own; both read the chain from the node they run in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_chain::node::{ServeSection, read_key};
use agora_chain::shared::Shared;
use agora_inference::Engine;
use agora_p2p::{Event, P2p, P2pConfig};
use agora_primitives::{Amount, Call, Transaction};
use agora_serve::gateway::{Gateway, GatewayConfig};
use agora_serve::miner::{Miner, MinerConfig, MinerMode};
use agora_serve::protocol::ADVERT_TOPIC;
use anyhow::{Context, Result, anyhow};

/// The serving swarms and gateway, made before the node starts (its routes join the node's API).
pub struct Prepared {
    /// The miner's swarm (listening on `[serve] listen`).
    miner: Option<(P2p, tokio::sync::mpsc::Receiver<Event>)>,
    /// The gateway's swarm: on `listen` when the node runs no miner, else on a port of its own
    /// that dials the local miner too (gossip never returns a node's own messages, and a swarm
    /// cannot open a stream to itself).
    gateway_swarm: Option<(P2p, tokio::sync::mpsc::Receiver<Event>)>,
    /// The gateway, when this node runs one.
    pub gateway: Option<Arc<Gateway>>,
    /// The subnet validator's swarm and key, when this node runs one.
    validator: Option<(
        P2p,
        tokio::sync::mpsc::Receiver<Event>,
        Arc<agora_crypto::Keypair>,
    )>,
    section: ServeSection,
}

async fn swarm(
    seed: [u8; 32],
    listen: agora_p2p::Addr,
    bootstrap: Vec<agora_p2p::Addr>,
) -> Result<(P2p, tokio::sync::mpsc::Receiver<Event>)> {
    P2p::start(
        seed,
        P2pConfig {
            listen: vec![listen],
            bootstrap,
            topics: vec![ADVERT_TOPIC.to_owned()],
            ..P2pConfig::default()
        },
    )
    .await
    .map_err(|e| anyhow!("serving swarm: {e}"))
}

/// Start the serving swarms and (if configured) build the gateway.
pub async fn prepare(section: &ServeSection, chain_id: &str) -> Result<Prepared> {
    if section.gateway_key.is_none()
        && section.miner_key.is_none()
        && section.validator_key.is_none()
    {
        return Err(anyhow!(
            "[serve] needs gateway_key, miner_key or validator_key; see docs/ARCHITECTURE.md"
        ));
    }
    if let Some(mode) = &section.miner_mode {
        mode.parse::<MinerMode>()
            .map_err(|e| anyhow!("[serve] miner_mode: {e}"))?;
    }
    let listen: agora_p2p::Addr = section
        .listen
        .parse()
        .with_context(|| format!("[serve] listen {:?} is not a multiaddress", section.listen))?;
    let peers = section
        .peers
        .iter()
        .map(|p| {
            p.parse()
                .with_context(|| format!("[serve] peer {p:?} is not a multiaddress"))
        })
        .collect::<Result<Vec<agora_p2p::Addr>>>()?;
    let miner = match &section.miner_key {
        Some(path) => Some(swarm(*read_key(path)?.seed(), listen.clone(), peers.clone()).await?),
        None => None,
    };
    let (gateway_swarm, gateway) = match &section.gateway_key {
        Some(path) => {
            let key = read_key(path)?;
            let (gateway_listen, mut bootstrap) = if miner.is_some() {
                ("/ip4/127.0.0.1/tcp/0".parse()?, peers.clone())
            } else {
                (listen.clone(), peers.clone())
            };
            if miner.is_some() {
                bootstrap.push(listen.clone());
            }
            let (p2p, events) = swarm(*key.seed(), gateway_listen, bootstrap).await?;
            let max_price = match &section.max_price_per_1k {
                Some(p) => p
                    .parse::<Amount>()
                    .map_err(|e| anyhow!("[serve] max_price_per_1k: {e}"))?,
                None => GatewayConfig::default().max_price_per_1k,
            };
            let gateway = Gateway::new(
                p2p.clone(),
                Arc::new(key),
                GatewayConfig {
                    netuid: section.netuid,
                    chain_id: chain_id.to_owned(),
                    max_price_per_1k: max_price,
                    ..GatewayConfig::default()
                },
            );
            (Some((p2p, events)), Some(gateway))
        }
        None => (None, None),
    };
    // The validator's own swarm on an ephemeral port, bootstrapped like the others (and to the
    // local serving swarm, whose gossip it then hears).
    let validator = match &section.validator_key {
        Some(path) => {
            let key = Arc::new(read_key(path)?);
            let mut bootstrap = peers.clone();
            bootstrap.push(listen.clone());
            let (p2p, events) =
                swarm(*key.seed(), "/ip4/0.0.0.0/tcp/0".parse()?, bootstrap).await?;
            Some((p2p, events, key))
        }
        None => None,
    };
    Ok(Prepared {
        miner,
        gateway_swarm,
        gateway,
        validator,
        section: section.clone(),
    })
}

/// Run the roles against the node's chain state; returns their tasks.
pub fn run(prepared: Prepared, shared: Arc<Shared>) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let Prepared {
        miner,
        gateway_swarm,
        gateway,
        validator,
        section,
    } = prepared;
    let dir = section
        .model_dir
        .clone()
        .unwrap_or_else(agora_inference::model::default_dir);
    let mut engine: Option<Arc<dyn Engine>> = None;
    let mut load_engine = || -> Result<Arc<dyn Engine>> {
        if let Some(e) = &engine {
            return Ok(e.clone());
        }
        let model = agora_inference::model::locate(&dir)?;
        let e: Arc<dyn Engine> = Arc::new(
            agora_inference_candle::CandleEngine::load(&model)
                .with_context(|| format!("loading {}", model.display()))?,
        );
        engine = Some(e.clone());
        Ok(e)
    };
    let mut tasks = Vec::new();
    if let (Some(g), Some((_, events))) = (gateway.clone(), gateway_swarm) {
        tasks.push(tokio::spawn(pump_adverts(g, events)));
    }
    if let Some(g) = gateway {
        tasks.push(tokio::spawn(follow_chain(
            g,
            shared.clone(),
            section.netuid,
        )));
    }
    if let (Some(path), Some((p2p, mut events))) = (&section.miner_key, miner) {
        tasks.push(tokio::spawn(async move {
            while events.recv().await.is_some() {}
        }));
        let key = Arc::new(read_key(path)?);
        let mode = match &section.miner_mode {
            Some(m) => m
                .parse::<MinerMode>()
                .map_err(|e| anyhow!("[serve] miner_mode: {e}"))?,
            None => MinerMode::Honest,
        };
        let miner_engine: Arc<dyn Engine> = if mode == MinerMode::WrongModel {
            let model = agora_inference::model::locate(&dir)?;
            Arc::new(
                agora_inference_candle::CandleEngine::load_perturbed(&model, 1)
                    .with_context(|| format!("loading a perturbed {}", model.display()))?,
            )
        } else {
            load_engine()?
        };
        let price = match &section.price_per_1k {
            Some(p) => p
                .parse::<Amount>()
                .map_err(|e| anyhow!("[serve] price_per_1k: {e}"))?,
            None => Amount(10_000_000),
        };
        tasks.push(tokio::spawn(watch_registration(
            shared.clone(),
            section.netuid,
            miner_engine.clone(),
        )));
        let miner = Miner::new(
            key.clone(),
            miner_engine,
            MinerConfig {
                netuid: section.netuid,
                chain_id: shared.chain_id.clone(),
                price_per_1k: price,
                capacity: section.capacity.unwrap_or(4),
                mode,
                board: None,
            },
        );
        tasks.extend(
            miner
                .spawn(&p2p, Duration::from_secs(2))
                .map_err(|e| anyhow!("{e}"))?,
        );
        tasks.push(tokio::spawn(settle(miner, key, shared.clone())));
    }
    if let Some((p2p, events, key)) = validator {
        let gateway = Gateway::new(
            p2p,
            key.clone(),
            GatewayConfig {
                netuid: section.netuid,
                chain_id: shared.chain_id.clone(),
                first_token_timeout: Duration::from_secs(60),
                ..GatewayConfig::default()
            },
        );
        tasks.push(tokio::spawn(pump_adverts(gateway.clone(), events)));
        tasks.push(tokio::spawn(follow_chain(
            gateway.clone(),
            shared.clone(),
            section.netuid,
        )));
        let engine = if section.validator_copier {
            Arc::new(agora_inference::TinyEngine::new()) as Arc<dyn Engine>
        } else {
            load_engine()?
        };
        let validator = agora_validator::role::Validator::new(
            key.address(),
            engine,
            gateway,
            Arc::new(LocalChain { shared, key }),
            agora_validator::role::ValidatorConfig {
                netuid: section.netuid,
                copier: section.validator_copier,
                ..agora_validator::role::ValidatorConfig::default()
            },
        );
        tasks.extend(validator.spawn());
    }
    Ok(tasks)
}

/// The chain as a validator running inside a node sees it: the node's latest finalized state,
/// and its mempool for the validator's transactions.
pub struct LocalChain {
    /// The node's shared state.
    pub shared: Arc<Shared>,
    /// The validator's hotkey (signs its weights).
    pub key: Arc<agora_crypto::Keypair>,
}

impl agora_validator::role::ChainAccess for LocalChain {
    fn latest(&self) -> (Arc<agora_ledger::State>, agora_primitives::Hash) {
        let s = self.shared.snapshot();
        (s.state, s.tip_hash)
    }

    fn submit(&self, call: Call) -> Result<(), String> {
        self.shared
            .submit(sign(&self.shared, &self.key, call))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Sign `call` from `key` with the next nonce the node's mempool expects, a 1,000 base-unit fee
/// and an expiry 100 blocks ahead.
pub fn sign(
    shared: &Shared,
    key: &agora_crypto::Keypair,
    call: Call,
) -> agora_primitives::SignedTransaction {
    let snapshot = shared.snapshot();
    let nonce = shared.mempool().next_nonce(&snapshot.state, &key.address());
    agora_crypto::sign_tx(
        key,
        Transaction {
            chain_id: shared.chain_id.clone(),
            sender: key.address(),
            nonce,
            fee: Amount(1_000),
            expiry_height: snapshot.state.height + 100,
            call,
        },
    )
}

/// Hand gossiped miner adverts to the gateway.
pub async fn pump_adverts(gateway: Arc<Gateway>, mut events: tokio::sync::mpsc::Receiver<Event>) {
    while let Some(e) = events.recv().await {
        if let Event::Gossip { topic, from, data } = e
            && topic == ADVERT_TOPIC
        {
            gateway.on_advert(from, &data);
        }
    }
}

/// Keep the gateway's view of the chain current every 500 ms: the height, the subnet's
/// registered miners with their incentive, and a dial to registered miners its swarm is not
/// connected to, at their on-chain serve addresses (at most every 10 s each). Hearing a
/// miner's advert is not enough: adverts are relayed by gossip, and a stream to the miner
/// needs a connection (or at least an address) of its own.
pub async fn follow_chain(gateway: Arc<Gateway>, shared: Arc<Shared>, netuid: u16) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut dialled: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    loop {
        tick.tick().await;
        let state = shared.snapshot().state;
        gateway.set_height(state.height);
        let Some(subnet) = state.subnets.get(&netuid) else {
            gateway.set_metagraph(BTreeMap::new());
            continue;
        };
        let connected = gateway.connected_peers().await;
        // Only miners of the subnet's registered model (any, when none is registered): a
        // client of the subnet asked for that model.
        let serves = |n: &&agora_ledger::state::Neuron| {
            n.serve
                .as_ref()
                .is_some_and(|info| subnet.params.admits_model(&info.model_hash))
        };
        let to_dial: Vec<String> = subnet
            .neurons
            .iter()
            .filter(serves)
            .filter_map(|n| n.serve.as_ref())
            .filter(|info| {
                agora_p2p::PeerId::from_bytes(&info.peer_id)
                    .map_or(true, |p| !connected.contains(&p))
            })
            .flat_map(|info| info.addresses.clone())
            .collect();
        for addr in to_dial {
            let due = dialled
                .get(&addr)
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
            if due {
                dialled.insert(addr.clone(), std::time::Instant::now());
                gateway.dial(&addr).await;
            }
        }
        gateway.set_metagraph(
            subnet
                .neurons
                .iter()
                .filter(serves)
                .map(|n| (n.hotkey, n.outputs.incentive))
                .collect(),
        );
    }
}

/// Warn a miner's operator, whenever it changes, that its engine is not the subnet's registered
/// model or numerics: validators then fail its answers (and gateways skip a miner of another
/// model), so it earns nothing there until it runs what the subnet registers.
pub async fn watch_registration(shared: Arc<Shared>, netuid: u16, engine: Arc<dyn Engine>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut last: Option<String> = None;
    loop {
        tick.tick().await;
        let state = shared.snapshot().state;
        let Some(subnet) = state.subnets.get(&netuid) else {
            continue;
        };
        let why = agora_validator::role::abstention(netuid, &subnet.params, engine.as_ref());
        if why != last {
            if let Some(reason) = &why {
                tracing::warn!("this miner's answers will fail the subnet's validators: {reason}");
            }
            last = why;
        }
    }
}

/// Submit countersigned receipts every few seconds, through this node's mempool.
pub async fn settle(miner: Arc<Miner>, key: Arc<agora_crypto::Keypair>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tick.tick().await;
        let receipts = miner.take_receipts(agora_primitives::MAX_RECEIPTS);
        if receipts.is_empty() {
            continue;
        }
        let tx = sign(
            &shared,
            &key,
            Call::Settle {
                receipts: receipts.clone(),
            },
        );
        if let Err(e) = shared.submit(tx) {
            tracing::warn!(error = %e, "settlement refused; keeping the receipts");
            miner.return_receipts(receipts);
        }
    }
}
