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
        /// Only the cases whose name contains this.
        #[arg(long, default_value = "")]
        only: String,
    },
    /// Apply and commit blocks of 1,000 signed transfers (signatures checked, state root
    /// recomputed, one atomic store write per block); prints transfers/s.
    Ledger {
        /// Blocks to apply (the rate is over all of them).
        #[arg(long, default_value_t = 20)]
        blocks: u64,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.target {
        Target::Epoch { runs, only } => bench_epoch(runs.max(1), &only),
        Target::Ledger { blocks } => bench_ledger(blocks.max(1)),
    }
}

fn bench_epoch(runs: usize, only: &str) -> ExitCode {
    for (name, shape) in synthetic::bench_cases()
        .into_iter()
        .filter(|(n, _)| n.contains(only))
    {
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

fn bench_ledger(blocks: u64) -> ExitCode {
    use agora_crypto::{Keypair, sign_tx};
    use agora_ledger::genesis::Genesis;
    use agora_ledger::state::ChainParams;
    use agora_primitives::{Amount, Call, Hash, Transaction};

    const PER_BLOCK: usize = 1000;
    const CHAIN: &str = "agora-bench";
    let senders: Vec<Keypair> = (0..PER_BLOCK)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(&seed)
        })
        .collect();
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        params: ChainParams::devnet(),
        balances: senders
            .iter()
            .map(|k| (k.address(), Amount::agora(1_000_000)))
            .collect(),
        stakes: Vec::new(),
        subnets: Vec::new(),
    };
    let mut state = match genesis.into_state() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: genesis: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Sign every block up front: the timed part is what a validator does with a proposed block.
    let proposer = senders[0].address();
    let signed: Vec<Vec<_>> = (0..blocks)
        .map(|b| {
            senders
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let to = senders[(i + 1) % PER_BLOCK].address();
                    sign_tx(
                        k,
                        Transaction {
                            chain_id: CHAIN.into(),
                            sender: k.address(),
                            nonce: b,
                            fee: Amount(1_000),
                            expiry_height: blocks + 10,
                            call: Call::Transfer {
                                to,
                                amount: Amount(1 + b as u128),
                            },
                        },
                    )
                })
                .collect()
        })
        .collect();
    // Build (as the proposer) before the clock starts; the timed part is what every validator
    // does with a proposed block: verify and apply it, and check its state root.
    let genesis_state = state.clone();
    let mut built = Vec::with_capacity(signed.len());
    let mut parent = Hash::default();
    for txs in signed {
        match agora_ledger::build_block(&state, txs, proposer, parent) {
            Ok((block, applied)) => {
                state = applied.state;
                parent = agora_crypto::hash_of(&block.header);
                built.push(block);
            }
            Err(e) => {
                eprintln!("error: building block: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut state = genesis_state;
    let dir = std::env::temp_dir().join(format!("agora-bench-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = match agora_store::Store::open(&dir).and_then(|s| s.init(&state).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    for block in &built {
        let applied = match agora_ledger::apply_block(&state, block) {
            Ok(applied) => applied,
            Err(e) => {
                eprintln!("error: block {}: {e}", block.header.height);
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = store.commit(block, &applied.state) {
            eprintln!("error: committing block {}: {e}", block.header.height);
            return ExitCode::FAILURE;
        }
        state = applied.state;
    }
    let elapsed = start.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let transfers = u128::from(blocks) * PER_BLOCK as u128;
    let per_s = transfers * 1_000_000 / elapsed.as_micros().max(1);
    println!("bench ledger/transfers_per_s {per_s} tx/s");
    ExitCode::SUCCESS
}
