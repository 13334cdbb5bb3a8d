//! The agora binary: every role of the network behind one command line.

mod bench;
mod bench_chain;
mod bench_gateway;
mod bench_verify;
mod chat;
mod devnet;
mod devnet_subnet;
mod epoch;
mod home;
mod keys;
mod model;
mod node;
mod query;
mod serving;
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
    /// Run the whole network on this machine: a one-validator chain, miners serving the model,
    /// and an OpenAI-compatible gateway on port 8700.
    Devnet(devnet::DevnetArgs),
    /// Run a chain node from a config file.
    Node(node::NodeArgs),
    /// Write genesis and configs for a local multi-node network.
    Testnet(node::TestnetArgs),
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
    let genesis = agora_chain::genesis_file::parse(&text)
        .with_context(|| format!("in {}", args.genesis.display()))?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Devnet(args) => report(devnet::run(args)),
        Command::Node(args) => report(node::run_node(args)),
        Command::Testnet(args) => report(node::run_testnet(args)),
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
