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
    /// Time the inference engine on the served model (prompt processing, generation at 1 and 8
    /// streams, time to first token, peak memory), beside llama.cpp when llama-cpp-python is
    /// importable by `--llama-python` (default `python3`).
    Inference {
        /// Tokens to generate per stream.
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Rounds, each timing prompt processing, one stream and eight streams in turn (and
        /// llama.cpp as many times); every figure is the median over the rounds, and the
        /// 8-stream ratio the median of each round's own ratio.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The Python that has llama-cpp-python (for the side-by-side figures).
        #[arg(long, default_value = "python3")]
        llama_python: String,
        /// Model cache directory (default as `agora model fetch`).
        #[arg(long, value_name = "DIR")]
        model_dir: Option<std::path::PathBuf>,
        /// Where the engine runs: cpu, cuda or cuda:N (default: AGORA_DEVICE, else cpu). On a
        /// GPU, also how its greedy answers re-score on the CPU (as a validator would).
        #[arg(long)]
        device: Option<String>,
    },
    /// Run 1 and 4 validators on loopback and measure finalized transfers/s (saturated) and
    /// finality latency p50/p99 (at half that rate).
    Chain {
        /// Validator counts to measure, comma-separated.
        #[arg(long, default_value = "1,4")]
        validators: String,
        /// Transfers offered at once for the throughput figure.
        #[arg(long, default_value_t = 20_000)]
        saturate: usize,
        /// Seconds of steady load for the latency figures.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Latency and throughput of a chat request through the gateway and libp2p against calling
    /// the engine in-process (the served model), and errors at 64 concurrent clients.
    Gateway {
        /// Tokens generated per request.
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        /// Passes over the eight prompts.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Model cache directory (default as `agora model fetch`).
        #[arg(long, value_name = "DIR")]
        model_dir: Option<std::path::PathBuf>,
        /// Serve the tiny test engine (no model compute): isolates the path's own cost.
        #[arg(long)]
        tiny: bool,
    },
    /// Time to verify an answer (teacher forcing through the model) as a share of the time to
    /// generate it, on greedy answers of up to `--tokens` tokens to four prompts.
    Verify {
        /// Tokens per answer.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Answers per prompt (8: 32 answers, about 16 s of timed work, so that a short burst
        /// of the machine's noise, ten seconds or so, does not make the whole run).
        #[arg(long, default_value_t = 8)]
        runs: usize,
        /// Model cache directory (default as `agora model fetch`).
        #[arg(long, value_name = "DIR")]
        model_dir: Option<std::path::PathBuf>,
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
        Target::Verify {
            tokens,
            runs,
            model_dir,
        } => match crate::bench_verify::bench_verify(tokens.max(1), runs.max(1), model_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Target::Gateway {
            tokens,
            rounds,
            model_dir,
            tiny,
        } => match crate::bench_gateway::bench_gateway(tokens.max(1), rounds, model_dir, tiny) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Target::Chain {
            validators,
            saturate,
            seconds,
        } => {
            let counts: Result<Vec<usize>, _> = validators
                .split(',')
                .map(|v| v.trim().parse::<usize>())
                .collect();
            let result = match counts {
                Ok(c) if c.iter().all(|v| (1..=16).contains(v)) => {
                    crate::bench_chain::bench_chain(&c, saturate.max(1), seconds.max(1))
                }
                _ => Err(anyhow::anyhow!(
                    "--validators takes counts from 1 to 16, comma-separated (e.g. 1,4)"
                )),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Target::Inference {
            tokens,
            rounds,
            llama_python,
            model_dir,
            device,
        } => match bench_inference(
            tokens.max(1),
            rounds.max(1),
            &llama_python,
            model_dir,
            device.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// Peak resident memory of this process, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn ratio_x100(a_x100: u128, b_x100: u128) -> String {
    let r = a_x100 * 100 / b_x100.max(1);
    format!("{}.{:02}", r / 100, r % 100)
}

fn parse_x100(s: &str) -> Option<u128> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(whole.parse::<u128>().ok()? * 100 + frac.parse::<u128>().ok()?)
}

/// One round of `agora bench inference`: rates in hundredths of a token per second.
struct InferenceRound {
    prompt: u128,
    generation: u128,
    ttft: Duration,
    /// All eight streams' tokens over the time from the first token to the last.
    e2e: u128,
    /// The tokens emitted while all eight streams were generating, per second.
    steady: Option<u128>,
}

impl InferenceRound {
    /// This round's eight-stream steady rate over its own one-stream rate, in hundredths.
    fn ratio(&self) -> Option<u128> {
        self.steady.map(|s| s * 100 / self.generation.max(1))
    }
}

/// Prompt processing, one stream, then eight streams through `sched`; also one stream's tokens.
fn inference_round(
    engine: &std::sync::Arc<agora_inference_candle::CandleEngine>,
    sched: &std::sync::Arc<
        agora_inference::scheduler::Scheduler<agora_inference_candle::CandleEngine>,
    >,
    prompt: &[u32],
    tokens: usize,
) -> anyhow::Result<(InferenceRound, Vec<u32>)> {
    use agora_inference::{Engine, GenerateRequest};
    use std::sync::Arc;

    // Prompt processing: the whole prompt, no generation.
    let start = Instant::now();
    engine.score(&prompt[..prompt.len() - 1], &prompt[prompt.len() - 1..])?;
    let prompt_time = start.elapsed();
    // One stream: time to first token and generation rate.
    let start = Instant::now();
    let mut first: Option<Duration> = None;
    let out = engine.generate(
        &GenerateRequest::greedy(prompt.to_vec(), tokens),
        &mut |_| {
            first.get_or_insert(start.elapsed());
            true
        },
    )?;
    let total = start.elapsed();
    let ttft = first.unwrap_or(total);
    let gen_time = total.saturating_sub(ttft);
    let generated = out.tokens.len().saturating_sub(1).max(1);
    // Each stream notes when it emits every token; the steady-state rate counts the tokens all
    // streams emit while all eight are generating (from the last one's first token to the
    // first one's last), which is what batching decides. The end-to-end rate also counts the
    // eight prompts' processing.
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let sched = Arc::clone(sched);
            let req = GenerateRequest::greedy(prompt.to_vec(), tokens);
            std::thread::spawn(move || {
                let mut times = Vec::new();
                sched
                    .generate(&req, &mut |_| {
                        times.push(start.elapsed());
                        true
                    })
                    .map(|_| times)
            })
        })
        .collect();
    let mut streams = Vec::new();
    for h in handles {
        streams.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("a stream panicked"))??,
        );
    }
    let eight = start.elapsed();
    let streamed: usize = streams.iter().map(Vec::len).sum();
    let all_going = streams.iter().filter_map(|t| t.first()).max().copied();
    let first_done = streams.iter().filter_map(|t| t.last()).min().copied();
    // The streams start at different moments (their prompts are processed one by one), so the
    // window can be short; a window of a few decoding steps measures the moment, not the
    // rate (one such round printed 0.32x), and the round then has no steady figure.
    let steady = match (all_going, first_done) {
        (Some(a), Some(b)) if b > a => {
            let emitted = streams
                .iter()
                .flatten()
                .filter(|&&t| t > a && t <= b)
                .count();
            (emitted >= MIN_STEADY_STEPS * streams.len()).then(|| rate_x100(emitted, b - a))
        }
        _ => None,
    };
    let round = InferenceRound {
        prompt: rate_x100(prompt.len(), prompt_time),
        generation: rate_x100(generated, gen_time),
        ttft,
        e2e: rate_x100(streamed, eight),
        steady,
    };
    Ok((round, out.tokens.iter().map(|t| t.id).collect()))
}

/// Decoding steps of all eight streams a round's steady-state window must hold to count.
const MIN_STEADY_STEPS: usize = 8;

/// `count / d` per second, in hundredths.
fn rate_x100(count: usize, d: Duration) -> u128 {
    (count as u128) * 100_000_000 / d.as_micros().max(1)
}

/// Hundredths as a decimal with two places.
fn x100(v: u128) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

/// The median (the upper one of an even count); 0 for none.
fn median_x100(values: impl Iterator<Item = u128>) -> u128 {
    let mut v: Vec<u128> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The median duration (the upper one of an even count); zero for none.
fn median_duration(values: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// How a GPU engine's greedy answers fare on the CPU engine: the tokens both generate alike
/// before they first differ, and the share of the GPU's tokens that the CPU, teacher-forced
/// (as a validator re-scores a miner), also ranks first, and how far below the CPU's best the
/// others fall (a validator accepts gaps up to its near-tie tolerance).
#[allow(clippy::float_arithmetic)] // Reporting log-probability gaps.
fn gpu_against_cpu(
    gpu: &agora_inference_candle::CandleEngine,
    path: &std::path::Path,
    bench_answer: &[u32],
    bench_prompt: &[u32],
) -> anyhow::Result<()> {
    use agora_inference::{ChatMessage, Engine, GenerateRequest};
    let cpu =
        agora_inference_candle::CandleEngine::load_on(path, agora_inference_candle::Device::Cpu)?;
    let questions = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Explain what a hash function is in two sentences.",
        "List three prime numbers.",
        "How do I reverse a string in Python?",
    ];
    let mut cases = vec![(bench_prompt.to_vec(), bench_answer.to_vec())];
    for q in questions {
        let prompt = gpu.tokenize(&gpu.render_chat(&[ChatMessage::user(q)])?)?;
        let answer = gpu.generate(&GenerateRequest::greedy(prompt.clone(), 48), &mut |_| true)?;
        cases.push((prompt, answer.tokens.iter().map(|t| t.id).collect()));
    }
    let (mut same_prefix, mut total, mut argmax) = (0usize, 0usize, 0usize);
    let (mut worst_gap, mut rejected) = (0f32, 0usize);
    for (prompt, answer) in &cases {
        let mine = cpu.generate(
            &GenerateRequest::greedy(prompt.clone(), answer.len()),
            &mut |_| true,
        )?;
        same_prefix += mine
            .tokens
            .iter()
            .zip(answer)
            .take_while(|(a, b)| a.id == **b)
            .count();
        if answer.is_empty() {
            continue;
        }
        let scores = cpu.score(prompt, answer)?;
        argmax += scores.iter().filter(|s| s.is_argmax).count();
        for s in &scores {
            let gap = s.best_logprob - s.logprob;
            worst_gap = worst_gap.max(gap);
            if !s.is_argmax && gap > agora_validator::verify::NEAR_TIE {
                rejected += 1;
            }
        }
        total += answer.len();
    }
    println!(
        "the GPU's greedy answers on the CPU engine ({} prompts, {total} tokens):",
        cases.len()
    );
    println!("bench inference/gpu_cpu_same_prefix {same_prefix} tokens");
    println!("bench inference/gpu_total_tokens {total} tokens");
    println!(
        "bench inference/gpu_tokens_argmax_on_cpu {} %",
        ratio_x100(argmax as u128 * 100, total.max(1) as u128)
    );
    println!("bench inference/gpu_worst_gap_on_cpu {worst_gap:.4} nats");
    println!(
        "tokens a validator would reject (gap above its near-tie tolerance of {} nats):",
        agora_validator::verify::NEAR_TIE
    );
    println!("bench inference/gpu_tokens_beyond_near_tie {rejected} tokens");
    Ok(())
}

fn bench_inference(
    tokens: usize,
    rounds: usize,
    llama_python: &str,
    model_dir: Option<std::path::PathBuf>,
    device: Option<&str>,
) -> anyhow::Result<()> {
    use std::sync::Arc;

    use agora_inference::scheduler::{Limits, Scheduler};
    use agora_inference_candle::{CandleEngine, Device};

    let dir = model_dir.unwrap_or_else(agora_inference::model::default_dir);
    let path = agora_inference::model::locate(&dir)?;
    let device = match device {
        Some(d) => Device::parse(d).map_err(anyhow::Error::msg)?,
        None => Device::from_env().map_err(anyhow::Error::msg)?,
    };
    let engine = Arc::new(CandleEngine::load_on(&path, device)?);
    // Every figure processes the whole prompt, as llama.cpp does beside it: the same prompt is
    // fed again and again here, and a real server's prompts share only their start.
    engine.reuse_prompts(false);
    // A 108-token prompt, as in the reference measurement.
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(12);
    let mut prompt = agora_inference::Engine::tokenize(&*engine, &text)?;
    prompt.truncate(108);
    // The engine's thread count (every core unless RAYON_NUM_THREADS says otherwise), which
    // llama.cpp gets too.
    let threads = engine.threads().to_string();
    // Eight concurrent streams go through the scheduler, as a miner's requests do.
    let sched = Arc::new(Scheduler::new(
        Arc::clone(&engine),
        Limits {
            workers: 8,
            queue: 0,
        },
    ));
    // Warm up with one whole round, untimed (llama.cpp's script does the same): a first round
    // measured cold ran prompt processing at about half the speed of the next ones.
    inference_round(&engine, &sched, &prompt, tokens)?;
    let on = match device {
        Device::Cpu => format!("{threads} threads"),
        Device::Cuda(_) => engine.device_name(),
    };
    println!(
        "agora (own kernels), {on}, {} prompt tokens, {tokens} generated, {rounds} rounds after an untimed one:",
        prompt.len()
    );
    println!(
        "{:<6} {:>14} {:>12} {:>9} {:>16} {:>9}",
        "round", "prompt tok/s", "gen tok/s", "ttft ms", "8 streams tok/s", "8 vs 1"
    );
    let mut all = Vec::with_capacity(rounds);
    let mut answer = Vec::new();
    for r in 0..rounds {
        let (round, tokens_out) = inference_round(&engine, &sched, &prompt, tokens)?;
        answer = tokens_out;
        println!(
            "{:<6} {:>14} {:>12} {:>9} {:>16} {:>9}",
            r,
            x100(round.prompt),
            x100(round.generation),
            millis(round.ttft),
            round.steady.map_or("-".into(), x100),
            round.ratio().map_or("-".into(), x100),
        );
        all.push(round);
    }
    let ours_prompt = median_x100(all.iter().map(|r| r.prompt));
    let ours_gen = median_x100(all.iter().map(|r| r.generation));
    let ttft = median_duration(all.iter().map(|r| r.ttft));
    println!(
        "bench inference/prompt_tokens_per_s {} tok/s",
        x100(ours_prompt)
    );
    println!("bench inference/gen_tokens_per_s {} tok/s", x100(ours_gen));
    println!("bench inference/ttft {} ms", millis(ttft));
    println!(
        "bench inference/streams8_e2e_tokens_per_s {} tok/s",
        x100(median_x100(all.iter().map(|r| r.e2e)))
    );
    let steady: Vec<u128> = all.iter().filter_map(|r| r.steady).collect();
    let ratios: Vec<u128> = all.iter().filter_map(InferenceRound::ratio).collect();
    if steady.is_empty() || ratios.is_empty() {
        println!(
            "8-stream steady state not measured: no round had all eight streams generating for {MIN_STEADY_STEPS} steps (raise --tokens)"
        );
    } else {
        println!(
            "bench inference/streams8_tokens_per_s {} tok/s",
            x100(median_x100(steady.iter().copied()))
        );
        println!(
            "bench inference/streams8_vs_1 {} x",
            x100(median_x100(ratios.iter().copied()))
        );
        println!(
            "bench inference/streams8_vs_1_min {} x",
            x100(ratios.iter().copied().min().unwrap_or(0))
        );
        println!(
            "bench inference/streams8_vs_1_max {} x",
            x100(ratios.iter().copied().max().unwrap_or(0))
        );
        // Rounds whose window held fewer than MIN_STEADY_STEPS steps have no ratio.
        println!(
            "bench inference/streams8_rounds_measured {} rounds",
            ratios.len()
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("bench inference/peak_rss {rss} MiB");
    }
    if device != Device::Cpu {
        gpu_against_cpu(&engine, &path, &answer, &prompt)?;
        return Ok(());
    }

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench/llama_cpp_bench.py"
    );
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let llama = std::process::Command::new(llama_python)
        .args([
            script,
            &path.to_string_lossy(),
            &threads,
            &tokens.to_string(),
            &ids.join(","),
            &rounds.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match llama {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout);
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [p, g, t] = f.as_slice() {
                println!("llama.cpp (llama-cpp-python), {threads} threads, same prompt:");
                println!("bench inference/llamacpp_prompt_tokens_per_s {p} tok/s");
                println!("bench inference/llamacpp_gen_tokens_per_s {g} tok/s");
                println!("bench inference/llamacpp_ttft {t} ms");
                if let (Some(lp), Some(lg)) = (parse_x100(p), parse_x100(g)) {
                    println!(
                        "bench inference/prompt_vs_llamacpp {} x",
                        ratio_x100(ours_prompt, lp)
                    );
                    println!(
                        "bench inference/gen_vs_llamacpp {} x",
                        ratio_x100(ours_gen, lg)
                    );
                }
            }
        }
        _ => println!(
            "llama.cpp figures skipped: `{llama_python}` cannot import llama_cpp (pass --llama-python, see scripts/bench/llama_cpp_bench.py)"
        ),
    }
    Ok(())
}
