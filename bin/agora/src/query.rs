//! `agora query`: read accounts, subnets, neurons and the metagraph from a node's data directory.

use std::path::PathBuf;

use agora_chain::views;
use agora_ledger::State;
use agora_primitives::{Address, NetUid};
use agora_store::Store;
use anyhow::{Context, Result, anyhow};
use serde_json::Value;

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
            views::account(&state, &address)
        }
        Command::Subnet { netuid } => views::subnet(&state, netuid)
            .ok_or_else(|| anyhow!("subnet {netuid} does not exist"))?,
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
    views::metagraph(state, netuid).ok_or_else(|| anyhow!("subnet {netuid} does not exist"))
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
