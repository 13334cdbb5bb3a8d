//! The host loop: answers Malachite's requests with the ledger and the store.
//!
//! - `ConsensusReady`: start at the height after the store's tip, with the validator set read
//!   from the committed state (so a validator-set change committed at H applies from H + 1).
//! - `GetValue`: wait until the mempool has transactions (or the empty-block interval passes),
//!   build a block with `agora_ledger::build_block`, persist it as pending, stream it as parts.
//! - `ReceivedProposalPart`: reassemble a stream (bounded per stream and in number of streams),
//!   check the proposer's `Fin` signature, then execute the block against the committed state;
//!   the block's validity is whether it executes to the header's state root.
//! - `Decided`: commit block, state and certificate in one store write; update the mempool.
//! - `Finalized`: start the next height.
//! - Sync: serve stored blocks with their certificates; execute synced blocks like proposals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_codec::{Encode, decode_exact, encode_to_vec};
use agora_ledger::{Applied, BlockError, State};
use agora_primitives::{Block, Hash};
use bytes::Bytes;
use malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{CommitCertificate, Round, Validity};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::{LocallyProposedValue, PeerId, ProposedValue};
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use tracing::{debug, error, info, warn};

use crate::context::{
    AgoraContext, BlockId, ChainSigner, Height, NodeAddress, ProposalPart, ValidatorSet,
    fin_signing_bytes, timeouts,
};
use crate::shared::{Shared, Snapshot};
use crate::wire;

/// A deliberate fault in the blocks this node proposes, for testing that honest validators
/// vote such blocks down (`[faults] proposer = "..."` in the node config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProposerFault {
    /// A transaction whose signature does not verify.
    BadSignature,
    /// A header whose state root is not what the block executes to.
    WrongStateRoot,
    /// More transaction bytes than the block limit.
    Oversized,
}

/// Block production limits and pacing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Most transactions in a block.
    pub max_txs: usize,
    /// Most encoded bytes of transactions in a block.
    pub max_bytes: usize,
    /// Least time between blocks that carry transactions.
    pub min_interval: Duration,
    /// Longest wait for transactions before proposing an empty block.
    pub empty_interval: Duration,
    /// Testing only: corrupt every block this node proposes.
    pub fault: Option<ProposerFault>,
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self {
            max_txs: 5_000,
            max_bytes: 4 << 20,
            min_interval: Duration::from_millis(20),
            empty_interval: Duration::from_millis(1000),
            fault: None,
        }
    }
}

/// Size of each data part of a streamed block.
const CHUNK: usize = 256 << 10;
/// Most streams being reassembled at once.
const MAX_STREAMS: usize = 64;
/// Most assembled proposals kept for heights we have not reached yet.
const MAX_FUTURE: usize = 32;
/// Most blocks served in one sync response.
const MAX_SYNC_BATCH: u64 = 64;

/// A block seen at the current height, with what executing it gave.
#[derive(Clone, Debug)]
struct Candidate {
    block: Block,
    applied: Option<Arc<Applied>>,
    proposed: ProposedValue<AgoraContext>,
}

#[derive(Debug, Default)]
struct PartStream {
    parts: BTreeMap<u64, ProposalPart>,
    fin_seq: Option<u64>,
    bytes: usize,
    created: Option<Instant>,
}

/// A fully received proposal, before validation.
#[derive(Clone, Debug)]
struct Assembled {
    height: Height,
    round: Round,
    pol_round: Round,
    proposer: NodeAddress,
    data: Vec<u8>,
    signature: [u8; 64],
}

struct BuildRequest {
    height: Height,
    round: Round,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<LocallyProposedValue<AgoraContext>>,
}

/// The host's state.
pub struct Host {
    shared: Arc<Shared>,
    signer: Option<ChainSigner>,
    config: BlockConfig,
    state: Arc<State>,
    tip_hash: Hash,
    height: Height,
    round: Round,
    candidates: BTreeMap<BlockId, Candidate>,
    streams: BTreeMap<(PeerId, StreamId), PartStream>,
    future: BTreeMap<Height, Vec<Assembled>>,
    last_block: Instant,
    build: Option<BuildRequest>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("height", &self.height)
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

fn block_id(block: &Block) -> BlockId {
    BlockId(agora_crypto::hash_of(&block.header))
}

fn params(state: &State) -> HeightParams<AgoraContext> {
    HeightParams::new(
        ValidatorSet::from_stakes(&state.chain_validators()),
        timeouts(),
        None,
    )
}

fn encode_pending(proposed: &ProposedValue<AgoraContext>, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 128);
    agora_codec::encode_bytes(&wire::encode_proposed_value(proposed), &mut out);
    agora_codec::encode_bytes(block, &mut out);
    out
}

fn decode_pending(bytes: &[u8]) -> Option<(ProposedValue<AgoraContext>, Vec<u8>)> {
    let mut r = agora_codec::Reader::new(bytes);
    let pv = r.bytes(1 << 10, "pending proposal").ok()?;
    let block = r.bytes(wire::MAX_VALUE_BYTES, "pending block").ok()?;
    if r.remaining() != 0 {
        return None;
    }
    Some((wire::decode_proposed_value(&pv).ok()?, block))
}

impl Host {
    /// A host over the committed snapshot in `shared`.
    pub fn new(shared: Arc<Shared>, signer: Option<ChainSigner>, config: BlockConfig) -> Self {
        let snapshot = shared.snapshot();
        let height = Height(snapshot.state.height + 1);
        Self {
            shared,
            signer,
            config,
            state: snapshot.state,
            tip_hash: snapshot.tip_hash,
            height,
            round: Round::Nil,
            candidates: BTreeMap::new(),
            streams: BTreeMap::new(),
            future: BTreeMap::new(),
            last_block: Instant::now(),
            build: None,
        }
    }

    /// Serve consensus until its channel closes.
    pub async fn run(mut self, mut channels: Channels<AgoraContext>) -> Result<(), String> {
        loop {
            let build_ready = self.build.as_ref().map(|b| (b.deadline, b.height));
            tokio::select! {
                msg = channels.consensus.recv() => {
                    let Some(msg) = msg else {
                        return Err("consensus stopped".to_owned());
                    };
                    self.handle(msg, &channels).await;
                }
                () = wait_for_txs(&self.shared, self.last_block, &self.config, build_ready.map(|b| b.0)), if build_ready.is_some() => {
                    if let Some(req) = self.build.take() {
                        self.propose(req, &channels).await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, msg: AppMsg<AgoraContext>, channels: &Channels<AgoraContext>) {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                self.load_pending();
                info!(height = %self.height, "consensus ready");
                let _ = reply.send((self.height, params(&self.state)));
            }
            AppMsg::StartedRound {
                height,
                round,
                proposer,
                reply_value,
                ..
            } => {
                debug!(%height, %round, %proposer, "started round");
                self.height = height;
                self.round = round;
                if let Some(waiting) = self.future.remove(&height) {
                    for a in waiting {
                        self.accept(a);
                    }
                }
                let known: Vec<ProposedValue<AgoraContext>> = self
                    .candidates
                    .values()
                    .filter(|c| c.proposed.height == height && c.proposed.round == round)
                    .map(|c| c.proposed.clone())
                    .collect();
                let _ = reply_value.send(known);
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                // Leave a margin inside consensus' timeout for building and streaming.
                let budget = timeout.saturating_sub(timeout / 3);
                let deadline = Instant::now() + budget.min(self.config.empty_interval);
                self.build = Some(BuildRequest {
                    height,
                    round,
                    deadline,
                    reply,
                });
            }
            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }
            AppMsg::VerifyVoteExtensions {
                extensions, reply, ..
            } => {
                let verdicts = extensions.into_iter().map(|(a, _)| (a, Ok(()))).collect();
                let _ = reply.send(verdicts);
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                address,
                value_id,
            } => {
                let ours = self.signer.as_ref().map(|s| s.address()) == Some(address);
                if let (true, Some(c)) = (ours, self.candidates.get(&value_id)) {
                    let block = encode_to_vec(&c.block);
                    self.stream(height, round, valid_round, value_id, &block, channels)
                        .await;
                }
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                let _ = reply.send(Height(1));
            }
            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => {
                let value = self.received_part(published_by.unwrap_or(from), part);
                let _ = reply.send(value);
            }
            AppMsg::Decided {
                certificate, reply, ..
            } => {
                self.decided(certificate).await;
                let _ = reply.send(());
            }
            AppMsg::Finalized {
                certificate, reply, ..
            } => {
                let next = if Height(self.state.height) >= certificate.height {
                    Next::Start(Height(self.state.height + 1), params(&self.state))
                } else {
                    error!(height = %certificate.height, "finalized a height that did not commit; restarting it");
                    Next::Restart(Height(self.state.height + 1), params(&self.state))
                };
                let _ = reply.send(next);
            }
            AppMsg::GetDecidedValues { range, reply } => {
                let _ = reply.send(self.decided_values(*range.start(), *range.end()));
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let _ = reply.send(self.synced(height, round, proposer, &value_bytes));
            }
        }
    }

    /// Re-read the proposals this node had seen at the next height before it stopped.
    fn load_pending(&mut self) {
        let records = match self.shared.store.pending(self.height.0) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read pending proposals");
                return;
            }
        };
        for (_, record) in records {
            let Some((proposed, bytes)) = decode_pending(&record) else {
                warn!("skipping an unreadable pending proposal");
                continue;
            };
            let Ok(block) = decode_exact::<Block>(&bytes) else {
                continue;
            };
            let applied = self.execute(&block).ok().map(Arc::new);
            let mut proposed = proposed;
            proposed.validity = Validity::from_bool(applied.is_some());
            self.candidates.insert(
                proposed.value,
                Candidate {
                    block,
                    applied,
                    proposed,
                },
            );
        }
    }

    fn execute(&self, block: &Block) -> Result<Applied, String> {
        if block.header.parent != self.tip_hash {
            return Err(format!(
                "parent {} is not the tip {}",
                block.header.parent, self.tip_hash
            ));
        }
        let mut bytes = Vec::new();
        block.encode(&mut bytes);
        if bytes.len() > self.config.max_bytes + (64 << 10) {
            return Err(format!(
                "block is {} bytes, above the limit {}",
                bytes.len(),
                self.config.max_bytes
            ));
        }
        agora_ledger::apply_block(&self.state, block).map_err(|e| e.to_string())
    }

    fn build_block(&mut self) -> Option<(Block, Applied)> {
        let proposer = self
            .signer
            .as_ref()
            .map(|s| s.address().0)
            .unwrap_or_default();
        let mut txs =
            self.shared
                .mempool()
                .select(&self.state, self.config.max_txs, self.config.max_bytes);
        let mut tries = 0;
        loop {
            match agora_ledger::build_block(&self.state, txs.clone(), proposer, self.tip_hash) {
                Ok(built) => return Some(built),
                Err(BlockError::Tx { index, hash, error }) => {
                    tries += 1;
                    warn!(%hash, %error, "dropping a transaction that no longer applies");
                    self.shared.mempool().reject(&hash, &error.to_string());
                    let sender = txs[index].tx.sender;
                    if tries > 16 {
                        txs.truncate(index);
                    } else {
                        let mut i = 0;
                        txs.retain(|t| {
                            let keep = i < index || t.tx.sender != sender;
                            i += 1;
                            keep
                        });
                    }
                }
                Err(e) if !txs.is_empty() => {
                    error!(error = %e, "cannot build a block; trying an empty one");
                    txs.clear();
                }
                Err(e) => {
                    // An empty block fails only when the committed state itself is broken.
                    error!(error = %e, height = self.state.height + 1, "cannot build even an empty block");
                    return None;
                }
            }
        }
    }

    async fn propose(&mut self, req: BuildRequest, channels: &Channels<AgoraContext>) {
        if req.height != self.height {
            debug!(height = %req.height, "dropping a stale build request");
            return;
        }
        // Re-propose a block this node already built at this height (any round).
        let existing = self
            .candidates
            .values()
            .find(|c| {
                c.proposed.height == req.height
                    && Some(c.proposed.proposer) == self.signer.as_ref().map(|s| s.address())
                    && c.applied.is_some()
            })
            .map(|c| (c.block.clone(), c.applied.clone()));
        let (mut block, applied) = match existing {
            Some((block, Some(applied))) => (block, applied),
            _ => match self.build_block() {
                Some((block, applied)) => (block, Arc::new(applied)),
                None => return,
            },
        };
        if let Some(fault) = self.config.fault {
            self.corrupt(&mut block, fault);
        }
        let id = block_id(&block);
        let Some(signer) = self.signer.as_ref() else {
            return;
        };
        let proposed = ProposedValue {
            height: req.height,
            round: req.round,
            valid_round: Round::Nil,
            proposer: signer.address(),
            value: id,
            validity: Validity::Valid,
        };
        let bytes = encode_to_vec(&block);
        if let Err(e) =
            self.shared
                .store
                .put_pending(req.height.0, &id.0, &encode_pending(&proposed, &bytes))
        {
            error!(error = %e, "cannot persist the proposal; not proposing");
            return;
        }
        info!(height = %req.height, round = %req.round, txs = block.txs.len(), block = %id, "proposing");
        self.candidates.insert(
            id,
            Candidate {
                block,
                applied: Some(applied),
                proposed,
            },
        );
        let _ = req
            .reply
            .send(LocallyProposedValue::new(req.height, req.round, id));
        self.stream(req.height, req.round, Round::Nil, id, &bytes, channels)
            .await;
    }

    fn corrupt(&self, block: &mut Block, fault: ProposerFault) {
        warn!(
            ?fault,
            height = block.header.height,
            "proposing a faulty block on purpose"
        );
        let Some(signer) = self.signer.as_ref() else {
            return;
        };
        let sender = signer.address().0;
        let nonce = self.state.account(&sender).nonce;
        let junk = |i: u64| agora_primitives::SignedTransaction {
            tx: agora_primitives::Transaction {
                chain_id: self.state.chain_id.clone(),
                sender,
                nonce: nonce + i,
                fee: agora_primitives::Amount(1),
                expiry_height: u64::MAX,
                call: agora_primitives::Call::Transfer {
                    to: sender,
                    amount: agora_primitives::Amount(1),
                },
            },
            signature: [7u8; 64],
        };
        match fault {
            ProposerFault::BadSignature => block.txs.push(junk(0)),
            ProposerFault::WrongStateRoot => {
                block.header.state_root = agora_crypto::hash(b"not the state root");
            }
            ProposerFault::Oversized => {
                let mut i = 0;
                let mut bytes = encode_to_vec(&*block).len();
                while bytes <= self.config.max_bytes + (128 << 10) {
                    let tx = junk(i);
                    bytes += encode_to_vec(&tx).len();
                    block.txs.push(tx);
                    i += 1;
                }
            }
        }
        block.header.tx_root = agora_crypto::tx_root(&block.txs);
    }

    async fn stream(
        &self,
        height: Height,
        round: Round,
        pol_round: Round,
        id: BlockId,
        block: &[u8],
        channels: &Channels<AgoraContext>,
    ) {
        let Some(signer) = self.signer.as_ref() else {
            return;
        };
        let mut stream_id = height.0.to_be_bytes().to_vec();
        stream_id.extend_from_slice(&round.as_u32().unwrap_or(u32::MAX).to_be_bytes());
        let stream_id = StreamId::new(Bytes::from(stream_id));
        let mut parts = vec![ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer: signer.address(),
        }];
        parts.extend(block.chunks(CHUNK).map(|c| ProposalPart::Data(c.to_vec())));
        parts.push(ProposalPart::Fin {
            signature: signer.sign_fin(height, round, &id),
        });
        let mut seq = 0u64;
        for part in parts {
            let msg = StreamMessage::new(stream_id.clone(), seq, StreamContent::Data(part));
            seq += 1;
            if channels
                .network
                .send(NetworkMsg::PublishProposalPart(msg))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = channels
            .network
            .send(NetworkMsg::PublishProposalPart(StreamMessage::new(
                stream_id,
                seq,
                StreamContent::Fin,
            )))
            .await;
    }

    fn received_part(
        &mut self,
        peer: PeerId,
        msg: StreamMessage<ProposalPart>,
    ) -> Option<ProposedValue<AgoraContext>> {
        let key = (peer, msg.stream_id.clone());
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            // Drop the oldest stream to make room.
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let limit = self.config.max_bytes + (1 << 20);
        let stream = self.streams.entry(key.clone()).or_default();
        stream.created.get_or_insert_with(Instant::now);
        match msg.content {
            StreamContent::Fin => stream.fin_seq = Some(msg.sequence),
            StreamContent::Data(part) => {
                if let ProposalPart::Data(d) = &part {
                    stream.bytes += d.len();
                }
                stream.parts.insert(msg.sequence, part);
            }
        }
        if stream.bytes > limit || stream.parts.len() > limit / 1024 + 8 {
            warn!(%peer, bytes = stream.bytes, "dropping an oversized proposal stream");
            self.streams.remove(&key);
            return None;
        }
        let fin = stream.fin_seq?;
        if stream.parts.len() as u64 != fin {
            return None;
        }
        let stream = self.streams.remove(&key)?;
        let assembled = assemble(stream)?;
        if assembled.height < self.height {
            return None;
        }
        if assembled.height > self.height {
            if self.future.len() < MAX_FUTURE || self.future.contains_key(&assembled.height) {
                let slot = self.future.entry(assembled.height).or_default();
                if slot.len() < 8 {
                    slot.push(assembled);
                }
            }
            return None;
        }
        self.accept(assembled)
    }

    /// Check and execute a fully received proposal at the current height.
    fn accept(&mut self, a: Assembled) -> Option<ProposedValue<AgoraContext>> {
        let (id, block) = match decode_exact::<Block>(&a.data) {
            Ok(block) => (block_id(&block), Some(block)),
            Err(e) => {
                warn!(proposer = %a.proposer, error = %e, "proposal does not decode");
                (BlockId(agora_crypto::hash(&a.data)), None)
            }
        };
        let message = fin_signing_bytes(&self.shared.chain_id, a.height, a.round, &id);
        if agora_crypto::verify(&a.proposer.0, &message, &a.signature).is_err() {
            warn!(proposer = %a.proposer, "proposal stream signature does not verify; ignored");
            return None;
        }
        let (applied, block) = match block {
            Some(block) => {
                let result = if block.header.proposer != a.proposer.0 {
                    Err("header proposer differs from the stream's".to_owned())
                } else {
                    self.execute(&block)
                };
                match result {
                    Ok(applied) => (Some(Arc::new(applied)), block),
                    Err(reason) => {
                        warn!(proposer = %a.proposer, height = %a.height, %reason, "invalid block proposed; voting nil");
                        (None, block)
                    }
                }
            }
            None => (None, empty_block()),
        };
        let proposed = ProposedValue {
            height: a.height,
            round: a.round,
            valid_round: a.pol_round,
            proposer: a.proposer,
            value: id,
            validity: Validity::from_bool(applied.is_some()),
        };
        if applied.is_some() {
            let record = encode_pending(&proposed, &a.data);
            if let Err(e) = self.shared.store.put_pending(a.height.0, &id.0, &record) {
                error!(error = %e, "cannot persist a received proposal");
                return None;
            }
        }
        self.candidates.insert(
            id,
            Candidate {
                block,
                applied,
                proposed: proposed.clone(),
            },
        );
        Some(proposed)
    }

    async fn decided(&mut self, certificate: CommitCertificate<AgoraContext>) {
        let height = certificate.height;
        if height.0 != self.state.height + 1 {
            warn!(%height, tip = self.state.height, "decision for a height that is not next; ignored");
            return;
        }
        let Some(candidate) = self.candidates.get(&certificate.value_id).cloned() else {
            error!(%height, value = %certificate.value_id, "decided a block this node does not have");
            return;
        };
        let applied = match candidate.applied {
            Some(a) => a,
            None => match self.execute(&candidate.block) {
                Ok(a) => Arc::new(a),
                Err(reason) => {
                    error!(%height, %reason, "decided block does not execute here");
                    return;
                }
            },
        };
        let cert = wire::encode_commit_certificate(&certificate);
        let store = self.shared.store.clone();
        let block = candidate.block.clone();
        let state = applied.clone();
        let written = tokio::task::spawn_blocking(move || {
            store.commit_with_certificate(&block, &state.state, Some(&cert))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(%height, error = %e, "commit failed");
                return;
            }
            Err(e) => {
                error!(%height, error = %e, "commit task failed");
                return;
            }
        }
        let id = certificate.value_id;
        let block = candidate.block;
        let state = Arc::new(applied.state.clone());
        self.state = state.clone();
        self.tip_hash = id.0;
        self.height = Height(height.0 + 1);
        self.last_block = Instant::now();
        self.candidates.clear();
        self.streams.retain(|_, s| {
            s.parts.values().all(|p| match p {
                ProposalPart::Init { height: h, .. } => h.0 > height.0,
                _ => true,
            })
        });
        self.future = self.future.split_off(&Height(height.0 + 1));
        let included: Vec<Hash> = block.txs.iter().map(agora_crypto::tx_hash).collect();
        self.shared.set_snapshot(Snapshot {
            state: state.clone(),
            tip_hash: id.0,
            state_root: block.header.state_root,
        });
        self.shared.mempool().on_commit(&state, height.0, &included);
        self.shared.publish(
            &block,
            id.0,
            certificate.round.as_u32().unwrap_or(0),
            certificate.commit_signatures.len(),
        );
        info!(%height, txs = block.txs.len(), block = %id, root = %block.header.state_root, "committed");
    }

    fn decided_values(&self, start: Height, end: Height) -> Vec<RawDecidedValue<AgoraContext>> {
        let mut out = Vec::new();
        let end = end.0.min(start.0.saturating_add(MAX_SYNC_BATCH - 1));
        for h in start.0..=end {
            let (Ok(Some(block)), Ok(Some(cert))) =
                (self.shared.store.block(h), self.shared.store.certificate(h))
            else {
                break;
            };
            let Ok(cert) = wire::decode_commit_certificate(&cert) else {
                error!(height = h, "stored certificate does not decode");
                break;
            };
            out.push(RawDecidedValue::new(
                Bytes::from(encode_to_vec(&block)),
                wire::extend_certificate(cert),
            ));
        }
        out
    }

    fn synced(
        &mut self,
        height: Height,
        round: Round,
        proposer: NodeAddress,
        bytes: &Bytes,
    ) -> SyncedValueOutcome<AgoraContext> {
        let block = match decode_exact::<Block>(bytes) {
            Ok(b) => b,
            Err(e) => {
                warn!(%height, error = %e, "synced block does not decode");
                return SyncedValueOutcome::PeerFault;
            }
        };
        if height.0 != self.state.height + 1 || block.header.height != height.0 {
            return SyncedValueOutcome::LocalTransientError;
        }
        let id = block_id(&block);
        let applied = match self.execute(&block) {
            Ok(a) => Some(Arc::new(a)),
            Err(reason) => {
                warn!(%height, %reason, "synced block does not execute");
                None
            }
        };
        let proposed = ProposedValue {
            height,
            round,
            valid_round: Round::Nil,
            proposer,
            value: id,
            validity: Validity::from_bool(applied.is_some()),
        };
        self.candidates.insert(
            id,
            Candidate {
                block,
                applied,
                proposed: proposed.clone(),
            },
        );
        SyncedValueOutcome::Verdict(proposed)
    }
}

fn empty_block() -> Block {
    Block {
        header: agora_primitives::Header {
            chain_id: String::new(),
            height: 0,
            parent: Hash::default(),
            proposer: agora_primitives::Address::default(),
            tx_root: Hash::default(),
            state_root: Hash::default(),
        },
        txs: Vec::new(),
    }
}

fn assemble(stream: PartStream) -> Option<Assembled> {
    let mut parts = stream.parts.into_values();
    let ProposalPart::Init {
        height,
        round,
        pol_round,
        proposer,
    } = parts.next()?
    else {
        return None;
    };
    let mut data = Vec::with_capacity(stream.bytes);
    let mut signature = None;
    for part in parts {
        match part {
            ProposalPart::Data(d) if signature.is_none() => data.extend_from_slice(&d),
            ProposalPart::Fin { signature: s } if signature.is_none() => signature = Some(s),
            _ => return None,
        }
    }
    Some(Assembled {
        height,
        round,
        pol_round,
        proposer,
        data,
        signature: signature?,
    })
}

/// Resolves when a block should be built: at least `min_interval` after the last block and
/// either transactions are waiting or the deadline has come.
async fn wait_for_txs(
    shared: &Shared,
    last_block: Instant,
    config: &BlockConfig,
    deadline: Option<Instant>,
) {
    let deadline = deadline.unwrap_or_else(Instant::now);
    let earliest = (last_block + config.min_interval).min(deadline);
    tokio::time::sleep_until(earliest.into()).await;
    loop {
        if !shared.mempool().is_empty() {
            return;
        }
        tokio::select! {
            () = shared.tx_arrived.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => return,
        }
    }
}
