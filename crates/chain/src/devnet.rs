//! The embedded development chain and `agora testnet init`.
//!
//! The devnet's keys are derived from public strings, so anyone can reproduce them: they are for
//! local development only and must never hold value.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agora_crypto::Keypair;
use agora_ledger::genesis::{Genesis, GenesisStake, GenesisSubnet};
use agora_ledger::state::ChainParams;
use agora_primitives::{Amount, SubnetParams};

/// The devnet's chain id.
pub const CHAIN_ID: &str = "agora-devnet";

fn derived(label: &str) -> Keypair {
    Keypair::from_seed(&agora_crypto::hash(label.as_bytes()).0)
}

/// The devnet's one validator (public, well-known key).
pub fn validator_key() -> Keypair {
    derived("agora devnet validator 0")
}

/// A funded client account on the devnet (public, well-known key).
pub fn client_key() -> Keypair {
    derived("agora devnet client 0")
}

/// Most miners `agora devnet` runs (each has a funded, well-known key).
pub const MAX_DEVNET_MINERS: usize = 16;

/// Devnet miner `i` (public, well-known key).
pub fn miner_key(i: usize) -> Keypair {
    derived(&format!("agora devnet miner {i}"))
}

/// Most subnet validators `agora devnet` runs.
pub const MAX_DEVNET_VALIDATORS: usize = 8;

/// Devnet subnet validator `i` (public, well-known key; funded by the devnet at start).
pub fn subnet_validator_key(i: usize) -> Keypair {
    derived(&format!("agora devnet subnet validator {i}"))
}

/// The embedded one-validator genesis. Only the top staker validates the chain
/// (`max_chain_validators` 1), so subnet validators can stake without joining consensus.
pub fn genesis() -> Genesis {
    let v = validator_key().address();
    let c = client_key().address();
    let mut balances = vec![(v, Amount::agora(1_000_000)), (c, Amount::agora(1_000_000))];
    balances.extend((0..MAX_DEVNET_MINERS).map(|i| (miner_key(i).address(), Amount::agora(1_000))));
    Genesis {
        chain_id: CHAIN_ID.to_owned(),
        params: ChainParams {
            max_chain_validators: 1,
            ..ChainParams::devnet()
        },
        balances,
        stakes: vec![GenesisStake {
            coldkey: v,
            hotkey: v,
            amount: Amount::agora(10_000),
        }],
        subnets: vec![GenesisSubnet {
            netuid: 1,
            owner: v,
            emission_share_ppm: 1_000_000,
            params: SubnetParams::defaults(),
        }],
    }
}

/// What `agora testnet init` writes.
#[derive(Clone, Debug)]
pub struct TestnetPlan {
    /// Validators.
    pub validators: usize,
    /// Full nodes (no key) besides them.
    pub full_nodes: usize,
    /// Output directory.
    pub dir: PathBuf,
    /// First API port (node i listens on `api_port + i`).
    pub api_port: u16,
    /// First peer-to-peer port (node i listens on `p2p_port + i`).
    pub p2p_port: u16,
    /// First gossip port (node i listens on `gossip_port + i`).
    pub gossip_port: u16,
    /// Chain id.
    pub chain_id: String,
    /// Milliseconds to wait for transactions before an empty block.
    pub empty_interval_ms: u64,
}

/// One written node.
#[derive(Clone, Debug)]
pub struct TestnetNode {
    /// Index.
    pub index: usize,
    /// API URL.
    pub api: String,
    /// Its config file.
    pub config: PathBuf,
    /// Whether it validates.
    pub validator: bool,
}

/// Why a testnet cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// Bad arguments.
    #[error("{0}")]
    Args(String),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TestnetError + '_ {
    move |source| TestnetError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write a genesis, the faucet key and one directory with `config.toml` per node.
pub fn init_testnet(plan: &TestnetPlan) -> Result<Vec<TestnetNode>, TestnetError> {
    let total = plan.validators + plan.full_nodes;
    if plan.validators == 0 || plan.validators > 64 {
        return Err(TestnetError::Args(
            "--validators must be 1 to 64".to_owned(),
        ));
    }
    let last = |base: u16| usize::from(base) + total;
    if last(plan.api_port) > 65535 || last(plan.p2p_port) > 65535 || last(plan.gossip_port) > 65535
    {
        return Err(TestnetError::Args(
            "ports run past 65535; choose lower base ports".to_owned(),
        ));
    }
    if plan.dir.join("genesis.json").exists() {
        return Err(TestnetError::Args(format!(
            "{} already holds a testnet; choose an empty directory",
            plan.dir.display()
        )));
    }
    std::fs::create_dir_all(&plan.dir).map_err(io(&plan.dir))?;
    let keys: Vec<Keypair> = (0..plan.validators)
        .map(|_| Keypair::try_generate())
        .collect::<Result<_, _>>()
        .map_err(|e| TestnetError::Args(e.to_string()))?;
    let faucet = Keypair::try_generate().map_err(|e| TestnetError::Args(e.to_string()))?;
    let faucet_path = plan.dir.join("faucet.key");
    crate::node::write_key(&faucet_path, &faucet).map_err(io(&faucet_path))?;

    // Genesis JSON, in the format `agora init --genesis` reads.
    let balances: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"address": k.address().to_string(), "amount": "1000000"}))
        .chain(std::iter::once(serde_json::json!({
            "address": faucet.address().to_string(), "amount": "1000000000"
        })))
        .collect();
    let stakes: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "coldkey": k.address().to_string(),
                "hotkey": k.address().to_string(),
                "amount": "10000",
            })
        })
        .collect();
    let genesis = serde_json::json!({
        "chain_id": plan.chain_id,
        "balances": balances,
        "stakes": stakes,
        "subnets": [{
            "netuid": 1,
            "owner": keys[0].address().to_string(),
            "emission_share_ppm": 1_000_000,
        }],
    });
    let genesis_path = plan.dir.join("genesis.json");
    let text =
        serde_json::to_string_pretty(&genesis).map_err(|e| TestnetError::Args(e.to_string()))?;
    std::fs::write(&genesis_path, text + "\n").map_err(io(&genesis_path))?;

    let api = |i: usize| format!("http://127.0.0.1:{}", usize::from(plan.api_port) + i);
    let p2p = |i: usize| format!("/ip4/127.0.0.1/tcp/{}", usize::from(plan.p2p_port) + i);
    let mut nodes = Vec::with_capacity(total);
    for i in 0..total {
        let dir = plan.dir.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let validator = i < plan.validators;
        let mut text = String::new();
        let _ = writeln!(text, "moniker = \"node{i}\"");
        let _ = writeln!(text, "genesis = \"../genesis.json\"");
        if let Some(key) = keys.get(i) {
            let key_path = dir.join("validator.key");
            crate::node::write_key(&key_path, key).map_err(io(&key_path))?;
            let _ = writeln!(text, "validator_key = \"validator.key\"");
        }
        let peers: Vec<String> = (0..total)
            .filter(|j| *j != i)
            .map(|j| format!("\"{}\"", p2p(j)))
            .collect();
        let gossip = |j: usize| format!("/ip4/127.0.0.1/tcp/{}", usize::from(plan.gossip_port) + j);
        let gossip_peers: Vec<String> = (0..total)
            .filter(|j| *j != i)
            .map(|j| format!("\"{}\"", gossip(j)))
            .collect();
        let _ = writeln!(text, "\n[p2p]\nlisten = \"{}\"", p2p(i));
        let _ = writeln!(text, "peers = [{}]", peers.join(", "));
        let _ = writeln!(text, "gossip_listen = \"{}\"", gossip(i));
        let _ = writeln!(text, "gossip_peers = [{}]", gossip_peers.join(", "));
        let _ = writeln!(
            text,
            "\n[api]\nlisten = \"127.0.0.1:{}\"",
            usize::from(plan.api_port) + i
        );
        let _ = writeln!(
            text,
            "\n[block]\nempty_interval_ms = {}",
            plan.empty_interval_ms
        );
        let config = dir.join("config.toml");
        std::fs::write(&config, text).map_err(io(&config))?;
        nodes.push(TestnetNode {
            index: i,
            api: api(i),
            config,
            validator,
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnet_genesis_is_valid_and_has_one_validator() {
        let state = genesis().into_state().unwrap();
        let set = state.chain_validators();
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].0, validator_key().address());
    }
}
