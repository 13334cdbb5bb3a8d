//! `agora query`: read accounts, subnets, neurons and the metagraph from a node's data directory.

use std::path::PathBuf;

use agora_ledger::State;
use agora_primitives::{Address, NetUid};
use agora_store::Store;
use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

/// Query the ledger.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's data directory (default `$AGORA_HOME/data`).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// An account's balance, nonce and stakes.
    Account {
        /// The address (64 hex digits).
        address: String,
    },
    /// A subnet's owner, hyperparameters and registration price.
    Subnet {
        /// The subnet id.
        netuid: NetUid,
    },
    /// One neuron of a subnet.
    Neuron {
        /// The subnet id.
        #[arg(long)]
        subnet: NetUid,
        /// The uid.
        #[arg(long)]
        uid: u16,
    },
    /// Every uid of a subnet with its last epoch's outputs.
    Metagraph {
        /// The subnet id.
        #[arg(long)]
        subnet: NetUid,
    },
}

/// Open the store in `dir` and read its state.
pub fn open_state(dir: Option<PathBuf>) -> Result<State> {
    let dir = dir.unwrap_or_else(crate::home::data_dir);
    if !dir.join("chain.redb").exists() {
        return Err(anyhow!(
            "no chain data in {}; initialise it with `agora init --genesis FILE --data-dir {}` or pass --data-dir",
            dir.display(),
            dir.display()
        ));
    }
    let store = Store::open(&dir)?;
    Ok(store.state()?)
}

pub fn run(args: Args) -> Result<()> {
    let state = open_state(args.data_dir)?;
    let value = match args.command {
        Command::Account { address } => {
            let address: Address = address.parse().context("address")?;
            let acc = state.account(&address);
            let stakes: Vec<Value> = state
                .stakes
                .iter()
                .filter(|((_, c), _)| *c == address)
                .map(|((h, _), s)| json!({ "hotkey": h.to_string(), "amount": s.to_string() }))
                .collect();
            json!({
                "address": address.to_string(),
                "balance": acc.balance.to_string(),
                "nonce": acc.nonce,
                "stakes": stakes,
                "height": state.height,
            })
        }
        Command::Subnet { netuid } => {
            let s = state
                .subnets
                .get(&netuid)
                .ok_or_else(|| anyhow!("subnet {netuid} does not exist"))?;
            let p = &s.params;
            json!({
                "netuid": netuid,
                "owner": s.owner.to_string(),
                "neurons": s.neurons.len(),
                "registration_price": s.burn.to_string(),
                "pending_emission": s.pending_emission.to_string(),
                "last_epoch_block": s.last_epoch_block,
                "emission_share_ppm": s.emission_share_ppm,
                "params": {
                    "tempo": p.tempo, "kappa": p.kappa, "bonds_penalty": p.bonds_penalty,
                    "bonds_moving_average": p.bonds_moving_average, "yuma3": p.yuma3,
                    "liquid_alpha": p.liquid_alpha, "alpha_low": p.alpha_low, "alpha_high": p.alpha_high,
                    "alpha_sigmoid_steepness": p.alpha_sigmoid_steepness, "max_uids": p.max_uids,
                    "max_validators": p.max_validators, "immunity_period": p.immunity_period,
                    "activity_cutoff": p.activity_cutoff, "min_allowed_weights": p.min_allowed_weights,
                    "weights_rate_limit": p.weights_rate_limit, "commit_reveal_period": p.commit_reveal_period,
                },
            })
        }
        Command::Neuron { subnet, uid } => {
            let rows = metagraph(&state, subnet)?;
            rows.into_iter()
                .nth(usize::from(uid))
                .ok_or_else(|| anyhow!("subnet {subnet} has no uid {uid}"))?
        }
        Command::Metagraph { subnet } => Value::Array(metagraph(&state, subnet)?),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_text(&value);
    }
    Ok(())
}

/// One JSON object per uid.
pub fn metagraph(state: &State, netuid: NetUid) -> Result<Vec<Value>> {
    let s = state
        .subnets
        .get(&netuid)
        .ok_or_else(|| anyhow!("subnet {netuid} does not exist"))?;
    Ok(s
        .neurons
        .iter()
        .enumerate()
        .map(|(uid, n)| {
            let o = &n.outputs;
            json!({
                "uid": uid,
                "hotkey": n.hotkey.to_string(),
                "stake": state.hotkey_stake(&n.hotkey).to_string(),
                "registered_at": n.registered_at,
                "last_update": n.last_update,
                "validator_permit": n.validator_permit,
                "active": o.active,
                "stake_weight": o.stake_weight,
                "consensus": o.consensus,
                "incentive": o.incentive,
                "dividends": o.dividends,
                "validator_trust": o.validator_trust,
                "emission": agora_primitives::Amount(o.server_emission.0 + o.validator_emission.0).to_string(),
                "weights": n.weights,
                "bonds": n.bonds,
                "serving": n.serve.as_ref().map(|s| s.addresses.clone()),
            })
        })
        .collect())
}

fn print_text(value: &Value) {
    match value {
        Value::Array(rows) => {
            println!(
                "uid  permit  stake  consensus  incentive  dividends  trust  emission  hotkey"
            );
            for r in rows {
                println!(
                    "{:<4} {:<7} {:<6} {:<10} {:<10} {:<10} {:<6} {:<9} {}",
                    r["uid"],
                    r["validator_permit"],
                    r["stake"].as_str().unwrap_or(""),
                    r["consensus"],
                    r["incentive"],
                    r["dividends"],
                    r["validator_trust"],
                    r["emission"].as_str().unwrap_or(""),
                    r["hotkey"].as_str().unwrap_or("")
                );
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => println!("{k}: {s}"),
                    other => println!("{k}: {other}"),
                }
            }
        }
        other => println!("{other}"),
    }
}
