//! `agora bench`: time the engines; one `bench <name> <value> <unit>` line per figure.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_incentive::{epoch, synthetic};

/// What to time.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
enum Target {
    /// One Yuma epoch on the incentive issue's three synthetic subnets (median of many runs).
    Epoch {
        /// Timed runs per case (the median is printed).
        #[arg(long, default_value_t = 31)]
        runs: usize,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.target {
        Target::Epoch { runs } => bench_epoch(runs.max(1)),
    }
}

fn bench_epoch(runs: usize) -> ExitCode {
    for (name, shape) in synthetic::bench_cases() {
        let input = synthetic::subnet(shape, 7);
        // One untimed run warms caches and checks the input.
        if let Err(e) = epoch(&input) {
            eprintln!("error: {name}: {e}");
            return ExitCode::FAILURE;
        }
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let out = epoch(std::hint::black_box(&input));
                let elapsed = start.elapsed();
                std::hint::black_box(out).ok();
                elapsed
            })
            .collect();
        times.sort_unstable();
        let median = times[times.len() / 2];
        println!("bench {name} {} ms", millis(median));
    }
    ExitCode::SUCCESS
}

/// A duration in milliseconds with three decimals, without floating point.
fn millis(d: Duration) -> String {
    let micros = d.as_micros();
    format!("{}.{:03}", micros / 1000, micros % 1000)
}
