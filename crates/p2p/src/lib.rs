//! Agora's peer-to-peer layer on rust-libp2p 0.56 (the line Malachite runs on).
//!
//! - Identity: the node's Ed25519 key is its libp2p peer id.
//! - Bootstrap peers are persistent: while no dialled connection to one is open, it is redialled
//!   every 2 s (so start-up order does not matter and a restarted peer is found again); an
//!   address that names its peer is not redialled while that peer is connected either way.
//! - Transports: TCP and QUIC; Noise and Yamux on TCP. Every dial takes a fresh local port: with
//!   libp2p's default (reuse the listening port), two nodes that dial each other at the same
//!   moment make one TCP connection by simultaneous open, on which both act as the dialer; its
//!   first messages (gossipsub's subscriptions among them) are lost, and a node never learns
//!   that its peer joined a topic (publishes then fail with `NoPeers` for good).
//! - Behaviours: identify, Kademlia (bootstrap peers from config), gossipsub (signed messages,
//!   bounded size), streams for request/response protocols that send many frames (inference
//!   tokens), connection limits and a block list.
//! - Misbehaviour: the application reports malformed or badly signed messages with
//!   [`P2p::report`]; the layer itself counts gossip messages per peer per second. Each offence
//!   lowers the peer's score; at [`BAN_SCORE`] the peer is disconnected and refused for
//!   `ban_duration`.
//! - Gossip messages above `max_message_bytes` are dropped and count as malformed (up to four
//!   times the limit they are read and penalised; above that the wire codec refuses them).
//! - Frames on streams: `u32` little-endian length, then the bytes; [`read_frame`] refuses a frame
//!   above its limit before reading it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, allow_block_list, identify, noise, tcp, yamux};
pub use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

pub use libp2p::{Multiaddr as Addr, PeerId as Peer};

/// A score at or below this bans the peer.
pub const BAN_SCORE: i32 = -100;

/// Peer-to-peer settings.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Listen addresses (`/ip4/127.0.0.1/tcp/0`, `/ip4/127.0.0.1/udp/0/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (with or without `/p2p/<id>`); those with an id also seed
    /// Kademlia.
    pub bootstrap: Vec<Multiaddr>,
    /// Most established connections in all.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Largest gossip message.
    pub max_message_bytes: usize,
    /// Most gossip messages a peer may send per second before it is penalised.
    pub max_messages_per_sec: u32,
    /// How long a banned peer stays refused.
    pub ban_duration: Duration,
    /// Gossip topics to join at start.
    pub topics: Vec<String>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            max_connections: 128,
            max_connections_per_peer: 2,
            max_message_bytes: 1 << 20,
            max_messages_per_sec: 2_000,
            ban_duration: Duration::from_secs(600),
            topics: Vec::new(),
        }
    }
}

/// What a peer did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A message that does not decode or breaks a size limit.
    Malformed,
    /// A signature that does not verify.
    BadSignature,
    /// More messages than the rate limit allows.
    Flooding,
    /// A request it had no right to make, or an answer that breaks the protocol.
    Protocol,
}

impl Misbehaviour {
    fn penalty(self) -> i32 {
        match self {
            Misbehaviour::Malformed => 20,
            Misbehaviour::BadSignature => 50,
            Misbehaviour::Flooding => 25,
            Misbehaviour::Protocol => 20,
        }
    }
}

/// What the layer tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A gossip message.
    Gossip {
        /// Topic.
        topic: String,
        /// The peer that forwarded it.
        from: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// A peer was banned.
    Banned(PeerId),
}

/// Errors of the peer-to-peer layer.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The transport could not be built.
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The swarm task stopped.
    #[error("the peer-to-peer task has stopped")]
    Stopped,
    /// No connected peer has joined the topic yet (retry later).
    #[error("no peer has joined {0} yet")]
    NoPeers(String),
    /// Publishing failed.
    #[error("cannot publish on {topic}: {reason}")]
    Publish {
        /// Topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Opening a stream failed.
    #[error("cannot open a {protocol} stream to {peer}: {reason}")]
    Stream {
        /// Peer.
        peer: Box<PeerId>,
        /// Protocol.
        protocol: String,
        /// Why.
        reason: String,
    },
    /// A stream protocol is served twice.
    #[error("protocol {0} is already being accepted")]
    AlreadyAccepted(String),
    /// A frame is above its limit.
    #[error("frame of {len} bytes is above the limit of {max}")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    Subscribe {
        topic: String,
    },
    Report {
        peer: PeerId,
        what: Misbehaviour,
    },
    Dial {
        addr: Multiaddr,
    },
    Addresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Banned {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// A handle on the running peer-to-peer layer (cheap to clone).
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// The libp2p key of an Ed25519 secret seed (the node's own key).
pub fn keypair_from_seed(seed: [u8; 32]) -> Keypair {
    let mut bytes = seed;
    // Cannot fail: any 32 bytes are an Ed25519 secret key.
    match Keypair::ed25519_from_bytes(&mut bytes) {
        Ok(k) => k,
        Err(_) => Keypair::generate_ed25519(),
    }
}

/// The peer id of an Ed25519 secret seed.
pub fn peer_id_from_seed(seed: [u8; 32]) -> PeerId {
    keypair_from_seed(seed).public().to_peer_id()
}

impl P2p {
    /// Start the layer with the node's Ed25519 seed. Events arrive on the returned receiver
    /// (bounded: when the application does not keep up, gossip is dropped, never buffered
    /// without limit).
    pub async fn start(
        seed: [u8; 32],
        config: P2pConfig,
    ) -> Result<(P2p, mpsc::Receiver<Event>), P2pError> {
        let key = keypair_from_seed(seed);
        let peer_id = key.public().to_peer_id();
        // The wire accepts up to four times the limit so that an oversized message can be seen
        // and penalised here; beyond that the codec cuts the stream.
        let max_message = config.max_message_bytes.saturating_mul(4);
        let limits = libp2p::connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections));
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(max_message)
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()
                    .map_err(|e| e.to_string())?;
                let gossipsub = gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                let kad = kad::Behaviour::new(
                    key.public().to_peer_id(),
                    MemoryStore::new(key.public().to_peer_id()),
                );
                Ok(Behaviour {
                    blocked: allow_block_list::Behaviour::default(),
                    limits: libp2p::connection_limits::Behaviour::new(limits),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/agora/1.0.0".to_owned(),
                        key.public(),
                    )),
                    kad,
                    gossipsub,
                    stream: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| P2pError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        for topic in &config.topics {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(topic.clone()));
        }
        for addr in &config.bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = swarm.dial(dial_opts(addr)) {
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(1024);
        let (events_tx, events) = mpsc::channel(4096);
        tokio::spawn(run(swarm, rx, events_tx, config));
        Ok((
            P2p {
                peer_id,
                commands,
                control,
            },
            events,
        ))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Publish on a gossip topic (joined first if needed). [`P2pError::NoPeers`] when nobody
    /// can receive it yet.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                topic: topic.to_owned(),
                data,
                reply,
            })
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Join a gossip topic.
    pub async fn subscribe(&self, topic: &str) -> Result<(), P2pError> {
        self.commands
            .send(Command::Subscribe {
                topic: topic.to_owned(),
            })
            .await
            .map_err(|_| P2pError::Stopped)
    }

    /// Report a misbehaving peer (lowers its score; bans it at [`BAN_SCORE`]).
    pub fn report(&self, peer: PeerId, what: Misbehaviour) {
        // A full command queue drops the report rather than block the caller.
        let _ = self.commands.try_send(Command::Report { peer, what });
    }

    /// Dial an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.commands
            .send(Command::Dial { addr })
            .await
            .map_err(|_| P2pError::Stopped)
    }

    /// The addresses this node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Addresses { reply })
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Peers { reply })
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Peers currently banned.
    pub async fn banned(&self) -> Result<Vec<PeerId>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Banned { reply })
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Open a stream to `peer` for `protocol` (for example `/agora/infer/1`).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<Stream, P2pError> {
        let mut control = self.control.clone();
        control
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| P2pError::Stream {
                peer: Box::new(peer),
                protocol: protocol.to_owned(),
                reason: format!("{e:?}"),
            })
    }

    /// Accept incoming streams of `protocol`: `(peer, stream)` pairs.
    pub fn accept(
        &self,
        protocol: &'static str,
    ) -> Result<libp2p_stream::IncomingStreams, P2pError> {
        let mut control = self.control.clone();
        control
            .accept(StreamProtocol::new(protocol))
            .map_err(|_| P2pError::AlreadyAccepted(protocol.to_owned()))
    }
}

/// Write one frame.
pub async fn write_frame(stream: &mut Stream, bytes: &[u8]) -> Result<(), P2pError> {
    let len = u32::try_from(bytes.len()).map_err(|_| P2pError::FrameTooLarge {
        len: bytes.len(),
        max: u32::MAX as usize,
    })?;
    // One write per frame: the length and the bytes travel in the same transport frame.
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

/// Read one frame of at most `max` bytes; `Ok(None)` when the stream ended cleanly.
pub async fn read_frame(stream: &mut Stream, max: usize) -> Result<Option<Vec<u8>>, P2pError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(P2pError::FrameTooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

struct PeerState {
    score: i32,
    window_start: Instant,
    window_count: u32,
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    config: P2pConfig,
) {
    let mut peers: BTreeMap<PeerId, PeerState> = BTreeMap::new();
    let mut bans: BTreeMap<PeerId, Instant> = BTreeMap::new();
    // Bootstrap addresses we hold a dialled connection to; the others are redialled.
    let mut dialled: BTreeMap<Multiaddr, usize> = BTreeMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // The first redial after one period (the start dialled every bootstrap address already).
    let mut redial = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(2),
        Duration::from_secs(2),
    );
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Publish { topic, data, reply } => {
                        let t = IdentTopic::new(topic.clone());
                        let _ = swarm.behaviour_mut().gossipsub.subscribe(&t);
                        let result = match swarm.behaviour_mut().gossipsub.publish(t, data) {
                            Ok(_) => Ok(()),
                            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(P2pError::NoPeers(topic)),
                            Err(gossipsub::PublishError::Duplicate) => Ok(()),
                            Err(e) => Err(P2pError::Publish { topic, reason: e.to_string() }),
                        };
                        let _ = reply.send(result);
                    }
                    Command::Subscribe { topic } => {
                        let _ = swarm.behaviour_mut().gossipsub.subscribe(&IdentTopic::new(topic));
                    }
                    Command::Report { peer, what } => {
                        penalise(&mut swarm, &mut peers, &mut bans, &events, &config, peer, what);
                    }
                    Command::Dial { addr } => {
                        if let Err(e) = swarm.dial(dial_opts(&addr)) {
                            warn!(%addr, error = %e, "dial failed");
                        }
                    }
                    Command::Addresses { reply } => {
                        let _ = reply.send(swarm.listeners().cloned().collect());
                    }
                    Command::Peers { reply } => {
                        let _ = reply.send(swarm.connected_peers().copied().collect());
                    }
                    Command::Banned { reply } => {
                        let _ = reply.send(bans.keys().copied().collect());
                    }
                }
            }
            _ = redial.tick() => {
                for addr in &config.bootstrap {
                    if !dialled.contains_key(addr) {
                        // Refused (and ignored) while a connection to a known peer is open
                        // or being dialled.
                        let _ = swarm.dial(dial_opts(addr));
                    }
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let expired: Vec<PeerId> = bans.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
                for p in expired {
                    bans.remove(&p);
                    peers.remove(&p);
                    swarm.behaviour_mut().blocked.unblock_peer(p);
                    info!(peer = %p, "ban lifted");
                }
            }
            event = swarm.select_next_some() => {
                match event {
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                        propagation_source,
                        message,
                        ..
                    })) => {
                        let state = peers.entry(propagation_source).or_insert(PeerState {
                            score: 0,
                            window_start: Instant::now(),
                            window_count: 0,
                        });
                        if state.window_start.elapsed() >= Duration::from_secs(1) {
                            state.window_start = Instant::now();
                            state.window_count = 0;
                        }
                        state.window_count += 1;
                        if message.data.len() > config.max_message_bytes {
                            warn!(peer = %propagation_source, len = message.data.len(), "oversized gossip message");
                            penalise(&mut swarm, &mut peers, &mut bans, &events, &config, propagation_source, Misbehaviour::Malformed);
                            continue;
                        }
                        if state.window_count > config.max_messages_per_sec {
                            state.window_count = 0;
                            penalise(&mut swarm, &mut peers, &mut bans, &events, &config, propagation_source, Misbehaviour::Flooding);
                            continue;
                        }
                        let event = Event::Gossip {
                            topic: message.topic.into_string(),
                            from: propagation_source,
                            data: message.data,
                        };
                        if events.try_send(event).is_err() {
                            debug!("application is behind; dropping a gossip message");
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                        for addr in info.listen_addrs {
                            swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                        if let libp2p::core::ConnectedPoint::Dialer { address, .. } = &endpoint {
                            *dialled.entry(address.clone()).or_default() += 1;
                        }
                        if num_established.get() == 1 {
                            let _ = events.try_send(Event::Connected(peer_id));
                        }
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established, endpoint, .. } => {
                        if let libp2p::core::ConnectedPoint::Dialer { address, .. } = &endpoint
                            && let Some(n) = dialled.get_mut(address)
                        {
                            *n -= 1;
                            if *n == 0 {
                                dialled.remove(address);
                            }
                        }
                        if num_established == 0 {
                            let _ = events.try_send(Event::Disconnected(peer_id));
                        }
                    }
                    SwarmEvent::NewListenAddr { address, .. } => {
                        debug!(%address, "listening");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// How to dial `addr`: from a fresh local port (see the module documentation), and, when the
/// address names its peer, only while that peer is neither connected nor being dialled.
fn dial_opts(addr: &Multiaddr) -> DialOpts {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .allocate_new_port()
            .build(),
        _ => DialOpts::unknown_peer_id()
            .address(addr.clone())
            .allocate_new_port()
            .build(),
    }
}

fn penalise(
    swarm: &mut Swarm<Behaviour>,
    peers: &mut BTreeMap<PeerId, PeerState>,
    bans: &mut BTreeMap<PeerId, Instant>,
    events: &mpsc::Sender<Event>,
    config: &P2pConfig,
    peer: PeerId,
    what: Misbehaviour,
) {
    if bans.contains_key(&peer) {
        return;
    }
    let state = peers.entry(peer).or_insert(PeerState {
        score: 0,
        window_start: Instant::now(),
        window_count: 0,
    });
    state.score -= what.penalty();
    warn!(%peer, ?what, score = state.score, "peer misbehaved");
    if state.score <= BAN_SCORE {
        bans.insert(peer, Instant::now() + config.ban_duration);
        swarm.behaviour_mut().blocked.block_peer(peer);
        let _ = swarm.disconnect_peer_id(peer);
        warn!(%peer, "peer banned");
        let _ = events.try_send(Event::Banned(peer));
    }
}
