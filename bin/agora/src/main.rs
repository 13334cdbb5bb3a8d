//! The agora binary: every role of the network behind one command line.

mod bench;
mod epoch;

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
    }
}

fn devnet() -> ExitCode {
    println!("agora devnet: the chain (Malachite), miners and gateway are not built yet.");
    println!("What runs today is the incentive engine; one epoch of a synthetic subnet follows.");
    println!("(`agora bench ledger` exercises the ledger state machine.)");
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
