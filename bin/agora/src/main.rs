//! The agora binary: every role of the network behind one command line.

mod bench;
mod chat;
mod epoch;
mod genesis_file;
mod home;
mod keys;
mod model;
mod query;
mod tx;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Agora: the open network for AI that nobody owns.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole network on this machine (what exists of it today: see --help).
    Devnet(DevnetArgs),
    /// Run one Yuma Consensus epoch from a JSON input, or check conformance vectors.
    Epoch(epoch::Args),
    /// Time the engines and print `bench <name> <value> <unit>` lines.
    Bench(bench::Args),
    /// Create a node's data directory from a genesis file.
    Init(InitArgs),
    /// Manage keys in an encrypted keystore.
    Keys(keys::Args),
    /// Build and sign a transaction.
    Tx(tx::Args),
    /// Read accounts, subnets, neurons and the metagraph from a data directory.
    Query(query::Args),
    /// Fetch and verify the served model.
    Model(model::Args),
    /// Ask the local model; the answer streams to the terminal.
    Chat(chat::Args),
}

/// Write the genesis state into a new data directory.
#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The genesis file (JSON; see docs/ARCHITECTURE.md).
    #[arg(long, value_name = "FILE")]
    genesis: std::path::PathBuf,
    /// The data directory (default `$AGORA_HOME/data`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = std::fs::read_to_string(&args.genesis).with_context(|| {
        format!(
            "genesis file {} not found or unreadable",
            args.genesis.display()
        )
    })?;
    let genesis =
        genesis_file::parse(&text).with_context(|| format!("in {}", args.genesis.display()))?;
    let state = genesis
        .into_state()
        .with_context(|| format!("in {}", args.genesis.display()))?;
    let dir = args.data_dir.unwrap_or_else(home::data_dir);
    let store = agora_store::Store::open(&dir)?;
    store.init(&state)?;
    println!(
        "initialised {} for chain {} (root {})",
        dir.display(),
        state.chain_id,
        state.root()
    );
    Ok(())
}

/// Print an error on one line (with its causes) and return the failure exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `agora devnet` will start a one-validator chain, miners and a gateway on loopback. Until the
/// chain and serving-network issues land it says so and runs the one engine that exists.
#[derive(Debug, clap::Args)]
struct DevnetArgs {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Devnet(_) => devnet(),
        Command::Epoch(args) => epoch::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Init(args) => report(init(args)),
        Command::Keys(args) => report(keys::run(args)),
        Command::Tx(args) => report(tx::run(args)),
        Command::Query(args) => report(query::run(args)),
        Command::Model(args) => report(model::run(args)),
        Command::Chat(args) => report(chat::run(args)),
    }
}

fn devnet() -> ExitCode {
    println!("agora devnet: the chain (Malachite), miners and gateway are not built yet.");
    println!("What runs today: the incentive engine (one epoch of a synthetic subnet follows),");
    println!("the ledger and store (`agora bench ledger`, `agora init`, `agora query`), and the");
    println!("model (`agora model fetch`, then `agora chat \"What is the capital of France?\"`).");
    let (name, shape) = agora_incentive::synthetic::bench_cases()[0];
    let input = agora_incentive::synthetic::subnet(shape, 1);
    match agora_incentive::epoch(&input) {
        Ok(out) => {
            let paid: u64 = out
                .server_emission
                .iter()
                .chain(&out.validator_emission)
                .sum();
            println!(
                "{name}: {} uids, {} validator permits, {paid} of {} base units emitted",
                input.n,
                out.validator_permits.iter().filter(|p| **p).count(),
                input.emission
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
