//! The chain API: JSON over HTTP on the node's API port.
//!
//! | route | answer |
//! |---|---|
//! | `POST /chain/tx` `{"tx": "<hex>"}` | `{"hash"}`; 4xx `{"error": {"code", "message"}}` |
//! | `POST /chain/txs` `{"txs": ["<hex>", ...]}` | `{"results": [{"hash"} or {"error"}]}` |
//! | `GET /chain/tx/{hash}` | `pending`, `included` with `height`, or `rejected` with `reason` |
//! | `GET /chain/block/{height}`, `/chain/block/latest` | header fields, tx hashes, certificate |
//! | `GET /chain/account/{address}` | balance, nonce, `next_nonce` (counting the mempool), stakes |
//! | `GET /chain/subnet/{id}`, `/chain/metagraph/{id}` | as `agora query` |
//! | `GET /chain/proof?key=<hex>` | value and Merkle proof against the tip's state root |
//! | `GET /chain/events` | server-sent events, one `block` event per finalized block |
//! | `GET /chain/status` | height, tip hash, validators, mempool size |
//!
//! Bodies above the limits get 413, unknown routes 404, wrong methods 405, all as JSON errors.

use std::sync::Arc;
use std::time::Duration;

use agora_codec::decode_exact;
use agora_primitives::{Address, Hash, NetUid, SignedTransaction, from_hex, to_hex};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::context::ValidatorSet;
use crate::mempool::{AdmitError, TxStatus};
use crate::shared::Shared;
use crate::views;

/// Largest body of `POST /chain/tx`.
pub const MAX_TX_BODY: usize = 256 << 10;
/// Largest body of `POST /chain/txs`.
pub const MAX_BATCH_BODY: usize = 16 << 20;
/// Most transactions in one `POST /chain/txs`.
pub const MAX_BATCH_TXS: usize = 10_000;

/// What the API handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Chain state, mempool and events.
    pub shared: Arc<Shared>,
    /// Where newly admitted transactions go to be gossiped to peers (`None`: no gossip).
    pub relay: Option<mpsc::Sender<SignedTransaction>>,
    /// The peer-to-peer layer, when the node gossips.
    pub p2p: Option<agora_p2p::P2p>,
}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let status = match e {
            AdmitError::Duplicate(_) => StatusCode::CONFLICT,
            AdmitError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

type ApiResult = Result<axum::Json<Value>, ApiError>;

fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "body_too_large",
            "request body is above the limit; send fewer or smaller transactions",
        )
    } else {
        ApiError::new(status, "bad_body", e.body_text())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "invalid_json",
            format!("request body is not the expected JSON: {e}"),
        )
    })
}

fn decode_tx(hex: &str) -> Result<SignedTransaction, ApiError> {
    let bytes = from_hex(hex.trim()).ok_or_else(|| {
        ApiError::bad(
            "bad_hex",
            "tx must be the hex encoding of a signed transaction (as `agora tx` prints)",
        )
    })?;
    decode_exact::<SignedTransaction>(&bytes)
        .map_err(|e| ApiError::bad("malformed_transaction", format!("transaction bytes: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxBody {
    tx: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxsBody {
    txs: Vec<String>,
}

fn relay(api: &ApiState, tx: SignedTransaction) {
    if let Some(relay) = &api.relay {
        // A full relay queue drops the copy: the transaction still waits here.
        let _ = relay.try_send(tx);
    }
}

async fn submit_tx(State(api): State<ApiState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = body.map_err(body_error)?;
    let parsed: TxBody = parse_json(&body)?;
    let tx = decode_tx(&parsed.tx)?;
    let copy = api.relay.is_some().then(|| tx.clone());
    let hash = api.shared.submit(tx)?;
    if let Some(tx) = copy {
        relay(&api, tx);
    }
    Ok(axum::Json(json!({ "hash": hash.to_string() })))
}

async fn submit_txs(State(api): State<ApiState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = body.map_err(body_error)?;
    let parsed: TxsBody = parse_json(&body)?;
    if parsed.txs.len() > MAX_BATCH_TXS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
            format!(
                "{} transactions in one batch; the limit is {MAX_BATCH_TXS}",
                parsed.txs.len()
            ),
        ));
    }
    let relay_on = api.relay.is_some();
    let mut results = Vec::with_capacity(parsed.txs.len());
    for hex in &parsed.txs {
        let result = decode_tx(hex).and_then(|tx| {
            let copy = relay_on.then(|| tx.clone());
            let hash = api.shared.submit(tx).map_err(ApiError::from)?;
            if let Some(tx) = copy {
                relay(&api, tx);
            }
            Ok(hash)
        });
        results.push(match result {
            Ok(hash) => json!({ "hash": hash.to_string() }),
            Err(e) => e.body(),
        });
    }
    Ok(axum::Json(json!({ "results": results })))
}

fn parse_hash(text: &str) -> Result<Hash, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad("bad_hash", "a hash is 64 hex characters"))
}

async fn tx_status(State(api): State<ApiState>, Path(hash): Path<String>) -> ApiResult {
    let hash = parse_hash(&hash)?;
    let status = api.shared.mempool().status(&hash);
    let body = match status {
        Some(TxStatus::Pending) => json!({"hash": hash.to_string(), "status": "pending"}),
        Some(TxStatus::Included { height }) => {
            json!({"hash": hash.to_string(), "status": "included", "height": height})
        }
        Some(TxStatus::Rejected { reason }) => {
            json!({"hash": hash.to_string(), "status": "rejected", "reason": reason})
        }
        None => {
            return Err(ApiError::not_found(format!(
                "transaction {hash} is not known to this node (it keeps the most recent outcomes only)"
            )));
        }
    };
    Ok(axum::Json(body))
}

fn block_json(api: &ApiState, height: u64) -> ApiResult {
    let store = &api.shared.store;
    if height == 0 {
        return Err(ApiError::not_found(
            "height 0 is the genesis state, not a block",
        ));
    }
    let block = store
        .block(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height} yet")))?;
    let cert = store
        .certificate(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .and_then(|c| crate::wire::decode_commit_certificate(&c).ok());
    let h = &block.header;
    let txs: Vec<String> = block
        .txs
        .iter()
        .map(|t| agora_crypto::tx_hash(t).to_string())
        .collect();
    Ok(axum::Json(json!({
        "height": h.height,
        "hash": agora_crypto::hash_of(h).to_string(),
        "parent": h.parent.to_string(),
        "proposer": h.proposer.to_string(),
        "tx_root": h.tx_root.to_string(),
        "state_root": h.state_root.to_string(),
        "chain_id": h.chain_id,
        "txs": txs,
        "certificate": cert.map(|c| json!({
            "round": c.round.as_u32(),
            "signers": c.commit_signatures.iter().map(|s| s.address.to_string()).collect::<Vec<_>>(),
        })),
    })))
}

async fn block_at(State(api): State<ApiState>, Path(which): Path<String>) -> ApiResult {
    let height = if which == "latest" {
        api.shared.snapshot().state.height
    } else {
        which.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "bad_height",
                "height must be a non-negative integer or `latest`",
            )
        })?
    };
    block_json(&api, height)
}

async fn account(State(api): State<ApiState>, Path(address): Path<String>) -> ApiResult {
    let address: Address = address
        .parse()
        .map_err(|_| ApiError::bad("bad_address", "an address is 64 hex characters"))?;
    let snapshot = api.shared.snapshot();
    let mut body = views::account(&snapshot.state, &address);
    let next = api.shared.mempool().next_nonce(&snapshot.state, &address);
    body["next_nonce"] = json!(next);
    Ok(axum::Json(body))
}

fn parse_netuid(text: &str) -> Result<NetUid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad("bad_subnet", "a subnet id is an integer 0..=65535"))
}

async fn subnet(State(api): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let netuid = parse_netuid(&id)?;
    let snapshot = api.shared.snapshot();
    views::subnet(&snapshot.state, netuid)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("subnet {netuid} does not exist")))
}

async fn metagraph(State(api): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let netuid = parse_netuid(&id)?;
    let snapshot = api.shared.snapshot();
    views::metagraph(&snapshot.state, netuid)
        .map(|rows| axum::Json(Value::Array(rows)))
        .ok_or_else(|| ApiError::not_found(format!("subnet {netuid} does not exist")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofQuery {
    key: String,
}

fn proof_json(p: &agora_crypto::merkle::Proof) -> Value {
    json!({
        "index": p.index,
        "count": p.count,
        "siblings": p.siblings.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    })
}

async fn proof(
    State(api): State<ApiState>,
    query: Result<Query<ProofQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError::bad(
            "bad_query",
            format!("{e}; ask /chain/proof?key=<hex state key>"),
        )
    })?;
    let key = from_hex(&q.key)
        .filter(|k| !k.is_empty() && k.len() <= 1024)
        .ok_or_else(|| ApiError::bad("bad_key", "key must be 1 to 1024 bytes of hex"))?;
    let shared = api.shared.clone();
    let proof = tokio::task::spawn_blocking(move || shared.store.prove(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let header_hash = match api.shared.store.block(proof.height) {
        Ok(Some(b)) => Some(agora_crypto::hash_of(&b.header).to_string()),
        _ => None,
    };
    let body = match &proof.proof {
        agora_crypto::merkle::KeyProof::Present { value, proof: p } => json!({
            "present": true,
            "value": to_hex(value),
            "proof": proof_json(p),
        }),
        agora_crypto::merkle::KeyProof::Absent { left, right, count } => {
            let n = |n: &Option<agora_crypto::merkle::Neighbour>| {
                n.as_ref().map(|n| {
                    json!({
                        "key": to_hex(&n.key),
                        "value_hash": n.value_hash.to_string(),
                        "proof": proof_json(&n.proof),
                    })
                })
            };
            json!({"present": false, "left": n(left), "right": n(right), "count": count})
        }
    };
    let mut body = body;
    body["height"] = json!(proof.height);
    body["state_root"] = json!(proof.root.to_string());
    body["block_hash"] = json!(header_hash);
    body["key"] = json!(to_hex(&proof.key));
    Ok(axum::Json(body))
}

async fn status(State(api): State<ApiState>) -> ApiResult {
    let snapshot = api.shared.snapshot();
    let set = ValidatorSet::from_stakes(&snapshot.state.chain_validators());
    let (txs, bytes) = {
        let m = api.shared.mempool();
        (m.len(), m.bytes())
    };
    let p2p = match &api.p2p {
        Some(p) => {
            let peers = p.peers().await.map(|v| v.len()).unwrap_or(0);
            let banned: Vec<String> = p
                .banned()
                .await
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect();
            json!({"peer_id": p.peer_id().to_string(), "peers": peers, "banned": banned})
        }
        None => Value::Null,
    };
    Ok(axum::Json(json!({
        "chain_id": api.shared.chain_id,
        "height": snapshot.state.height,
        "hash": snapshot.tip_hash.to_string(),
        "state_root": snapshot.state_root.to_string(),
        "validators": set.validators.iter().map(|v| json!({
            "address": v.address.to_string(), "power": v.power
        })).collect::<Vec<_>>(),
        "mempool": {"txs": txs, "bytes": bytes},
        "p2p": p2p,
    })))
}

async fn events(State(api): State<ApiState>) -> impl IntoResponse {
    let rx = api.shared.finalized.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(b) => {
                    let data = json!({
                        "height": b.height,
                        "hash": b.hash.to_string(),
                        "state_root": b.state_root.to_string(),
                        "txs": b.txs,
                        "round": b.round,
                        "signatures": b.signatures,
                    });
                    let event = Event::default().event("block").data(data.to_string());
                    return Some((Ok::<Event, std::convert::Infallible>(event), rx));
                }
                // A slow reader skips what it missed and goes on.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route; see GET /chain/status and docs/ARCHITECTURE.md")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The chain API's routes.
pub fn router(api: ApiState) -> Router {
    Router::new()
        .route(
            "/chain/tx",
            post(submit_tx)
                .layer(DefaultBodyLimit::max(MAX_TX_BODY))
                .fallback(wrong_method),
        )
        .route(
            "/chain/txs",
            post(submit_txs)
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY))
                .fallback(wrong_method),
        )
        .route("/chain/tx/{hash}", get(tx_status).fallback(wrong_method))
        .route("/chain/block/{which}", get(block_at).fallback(wrong_method))
        .route(
            "/chain/account/{address}",
            get(account).fallback(wrong_method),
        )
        .route("/chain/subnet/{id}", get(subnet).fallback(wrong_method))
        .route(
            "/chain/metagraph/{id}",
            get(metagraph).fallback(wrong_method),
        )
        .route("/chain/proof", get(proof).fallback(wrong_method))
        .route("/chain/events", get(events).fallback(wrong_method))
        .route("/chain/status", get(status).fallback(wrong_method))
        .fallback(unknown_route)
        .with_state(api)
}
