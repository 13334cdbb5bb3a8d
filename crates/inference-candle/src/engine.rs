//! The candle engine: loading, chat template, generation, scoring.

use std::path::Path;

use agora_inference::{
    ChatMessage, Engine, Error, FinishReason, GenerateOutput, GenerateRequest, GreedyScore,
    ModelInfo, Sampling, TokenEvent, TokenScore, TopScore,
};
use candle_core::quantized::gguf_file;

use crate::model::{Cache, Device, Segment, Weights};
use crate::quant::screen::Best;
use crate::tokenizer::Tokenizer;

/// SmolLM2 with our own kernels: on the CPU, or on an NVIDIA GPU (`Device::Cuda`).
#[derive(Debug)]
pub struct CandleEngine {
    weights: Weights,
    tokenizer: Tokenizer,
    template: String,
    info: ModelInfo,
    /// Tokens that end generation: the GGUF's end of sequence and `<|endoftext|>`.
    stop_ids: Vec<u32>,
    batcher: Batcher,
    /// The last prompt's key-value cache (see [`CandleEngine::cached_start`]).
    last_prompt: std::sync::Mutex<Option<(Vec<u32>, Cache)>>,
    /// Prompt positions taken from the last prompt's cache instead of computed, in all.
    reused: std::sync::atomic::AtomicU64,
    /// Whether prompts start from the last prompt's cache (on unless turned off).
    reuse_prompts: std::sync::atomic::AtomicBool,
}

/// Positions of a prompt kept for the next prompt (about 13 KB each with the 8-bit cache: 6.6 MB
/// at most).
const KEPT_POSITIONS: usize = 512;

/// This engine's numerics version ([`ModelInfo::numerics`]); the CUDA kernels compute the
/// CPU's bits and share it. Raise it with every change to what a forward pass computes (not
/// to how fast): 1, the f16 key-value cache (sessions 1-11); 2, the 8-bit key-value cache
/// (session 12; 5 of the validator fixture's 8 greedy answers recorded under 1 fail under
/// it). See `docs/ARCHITECTURE.md`, "Numerics against llama.cpp".
pub const NUMERICS: u32 = 2;

/// Sequences decoded together: at most this many per pass.
const MAX_BATCH: usize = 32;

/// How long a pass waits for members still sampling their last token (see [`Batcher`]). With
/// 2 ms, eight streams on two cores still split at times into a pass of seven and a pass of
/// one that then alternated (session 7's trace after the prefetch step: 39 passes of 7 rows,
/// 37 extra one-row passes and 15 of 8); with 5 ms, 45 and 60 passes of 8 in two runs. The
/// wait ends as soon as every member is back; only a member held up (by its client's
/// callback, say) costs the others up to this much per token.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Batched decoding. Every generation that needs its next token's logits leaves its token and
/// cache here; whichever waiting caller finds no pass running takes everything waiting (up to
/// [`MAX_BATCH`]), runs one pass for all of it and hands each caller its logits and cache
/// back. No extra thread: the callers take turns leading. Concurrent generations thus share
/// each pass over the weights, and since the model treats every row on its own, each gets the
/// same numbers as if it ran alone.
///
/// A pass waits for the batch to gather: generations between their prompt and their end are
/// *members*, and after a pass its members sample their next token and come back at slightly
/// different moments. A leader that would start a pass while some members are still on their
/// way waits for them, for at most [`GATHER`]; otherwise the first one back would run a pass
/// of one and the rest a pass of their own, and every token would cost two passes.
///
/// Two condition variables keep the wake-ups few: the caller gathering a batch waits on
/// `arrivals` (each arrival wakes only it), callers waiting for their results on `results`
/// (woken once per pass). With one variable every arrival woke every waiting caller; on two
/// cores eight streams then took longer than [`GATHER`] to come back, and the batch split
/// into two halves that alternated passes (seen in a traced `agora bench inference`: passes
/// of 2 to 6 rows instead of 8).
#[derive(Debug, Default)]
struct Batcher {
    state: std::sync::Mutex<BatchState>,
    arrivals: std::sync::Condvar,
    results: std::sync::Condvar,
}

type StepResult = (Cache, Result<Row, Error>);

/// One position's logits: a row of a pass's output, shared by the pass's callers (not copied
/// out for each).
#[derive(Clone, Debug)]
struct Row {
    logits: std::sync::Arc<Vec<f32>>,
    at: usize,
    len: usize,
}

impl Row {
    fn logits(&self) -> &[f32] {
        &self.logits[self.at..self.at + self.len]
    }
}

#[derive(Debug, Default)]
struct BatchState {
    next_id: u64,
    waiting: Vec<(u64, u32, Cache)>,
    done: std::collections::BTreeMap<u64, StepResult>,
    leading: bool,
    /// The most sequences decoded in one pass so far.
    largest: usize,
    /// Generations past their prompt and not yet finished (see [`Batcher`]).
    members: usize,
    /// A caller is gathering the next batch (waiting on `arrivals`).
    gathering: bool,
    /// When the oldest caller now waiting arrived.
    waiting_since: Option<std::time::Instant>,
}

/// A generation's membership of the batch, from its first decoding step to its end (however it
/// ends).
struct Member<'a> {
    batcher: &'a Batcher,
}

impl<'a> Member<'a> {
    fn join(batcher: &'a Batcher) -> Self {
        let mut st = batcher
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.members += 1;
        Member { batcher }
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        let mut st = self
            .batcher
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.members = st.members.saturating_sub(1);
        // A leader waiting for this generation to come back need not wait any longer.
        self.batcher.arrivals.notify_all();
    }
}

/// Ends a lead that unwinds: every caller in its pass gets an error, and the lead is free.
struct LeadGuard<'a> {
    batcher: &'a Batcher,
    /// Callers still owed an answer (empty once the pass has answered them).
    ids: Vec<u64>,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut st = self
            .batcher
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in self.ids.drain(..) {
            let failed = Err(Error::Backend("the decoding pass failed".into()));
            st.done.insert(id, (Cache::default(), failed));
        }
        st.leading = false;
        self.batcher.results.notify_all();
    }
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn md_strings(ct: &gguf_file::Content, key: &str) -> Result<Vec<String>, String> {
    let v = ct
        .metadata
        .get(key)
        .ok_or_else(|| format!("{key} is missing"))?;
    v.to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|x| x.to_string().cloned().map_err(|e| e.to_string()))
        .collect()
}

impl CandleEngine {
    /// Load the model file (its BLAKE3 becomes the model hash) onto the device `AGORA_DEVICE`
    /// names (`cpu`, the default, `cuda` or `cuda:N`).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let device = Device::from_env().map_err(Error::Backend)?;
        Self::load_on(path, device)
    }

    /// Load the model file onto `device`.
    pub fn load_on(path: &Path, device: Device) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::ModelMissing(path.to_owned()));
        }
        let invalid = |reason: String| Error::ModelInvalid {
            path: path.to_owned(),
            reason,
        };
        let hash = agora_inference::model::file_blake3(path).map_err(|e| invalid(e.to_string()))?;
        let mut file = std::fs::File::open(path).map_err(|e| invalid(e.to_string()))?;
        let ct = gguf_file::Content::read(&mut file).map_err(|e| invalid(e.to_string()))?;
        let tokens = md_strings(&ct, "tokenizer.ggml.tokens").map_err(invalid)?;
        let merges = md_strings(&ct, "tokenizer.ggml.merges").map_err(invalid)?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| invalid(e.to_string()))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let template = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| invalid("tokenizer.chat_template is missing".into()))?;
        let eos = ct
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| invalid("tokenizer.ggml.eos_token_id is missing".into()))?;
        let tokenizer = Tokenizer::new(tokens, &types, &merges)?;
        let weights = Weights::load(&ct, &mut file, device).map_err(|e| match device {
            Device::Cpu => invalid(e.to_string()),
            Device::Cuda(_) => Error::Backend(format!("loading the model on {device}: {e}")),
        })?;
        let name = ct
            .metadata
            .get("general.basename")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "model".into());
        let mut stop_ids = vec![eos];
        let eot = tokenizer.encode("<|endoftext|>");
        if eot.len() == 1 && eot[0] != eos {
            stop_ids.push(eot[0]);
        }
        let info = ModelInfo {
            name: format!("{name}-135m-instruct-q4_1"),
            hash,
            context_length: weights.config.context_length,
            vocab_size: tokenizer.vocab_size(),
            eos_token: eos,
            numerics: NUMERICS,
        };
        Ok(CandleEngine {
            weights,
            tokenizer,
            template,
            info,
            stop_ids,
            batcher: Batcher::default(),
            last_prompt: std::sync::Mutex::new(None),
            reused: std::sync::atomic::AtomicU64::new(0),
            reuse_prompts: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether a prompt starts from the part it shares with the last prompt (see
    /// `CandleEngine::cached_start`; on by default). `agora bench inference` turns it off:
    /// it feeds the same prompt again and again, and measures what processing all of a prompt
    /// costs. Turning it off also drops the kept prompt.
    pub fn reuse_prompts(&self, on: bool) {
        self.reuse_prompts
            .store(on, std::sync::atomic::Ordering::Relaxed);
        if !on {
            *self
                .last_prompt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// Prompt positions taken from an earlier prompt's cache instead of computed, since the
    /// engine was loaded (see `CandleEngine::cached_start`).
    pub fn reused_positions(&self) -> u64 {
        self.reused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Greedy checks' positions whose argmax the output matrix's screen found (the rest were
    /// computed in full), since the engine was loaded (see `Weights::forward_argmax`).
    pub fn screened_positions(&self) -> u64 {
        self.weights.screened_rows()
    }

    /// [`Engine::score_greedy`] from every logit of every position (the screen not used): the
    /// reference the screened check is tested against.
    #[doc(hidden)]
    pub fn score_greedy_in_full(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<GreedyScore>, Error> {
        self.score_rows(prompt, continuation, |id, row| {
            let best = argmax(row);
            let logit = |t: u32| row.get(t as usize).copied().ok_or(Error::UnknownToken(t));
            let best = Best {
                id: best,
                logit: logit(best)?,
                target: logit(id)?,
            };
            Ok(greedy_score(id, best))
        })
    }

    /// Where the engine's passes run, for reports: `cpu (KERNEL)` or the GPU's name.
    pub fn device_name(&self) -> String {
        self.weights.device_name()
    }

    /// The CPU threads a pass runs on (rayon's pool: `RAYON_NUM_THREADS`, else every core).
    pub fn threads(&self) -> usize {
        rayon::current_num_threads()
    }

    /// The most generations decoded together in one pass so far.
    pub fn largest_batch(&self) -> usize {
        let st = self.batcher.state.lock();
        st.unwrap_or_else(std::sync::PoisonError::into_inner)
            .largest
    }

    /// A cache holding the start that `tokens` shares with the last prompt (never all of
    /// `tokens`: a pass needs a position to produce logits), and how many positions that is.
    ///
    /// Chat prompts begin alike (the template's system turn: 15 to 24 tokens), and a
    /// validator's challenges all do, so the next prompt's pass skips those positions: a
    /// shorter time to first token, and a verification that processes fewer rows. Positions are
    /// computed on their own, so the numbers are the same, bit for bit, as from a fresh cache
    /// (`a_prompt_continued_from_the_last_ones_cache_gets_the_same_numbers`). GPU caches are
    /// not copied: there every prompt starts afresh.
    fn cached_start(&self, tokens: &[u32]) -> (Cache, usize) {
        if !self
            .reuse_prompts
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return (self.weights.cache(), 0);
        }
        let kept = self
            .last_prompt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((saved, cache)) = kept.as_ref() {
            let common = saved
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count()
                .min(tokens.len().saturating_sub(1));
            if common > 0
                && let Some(start) = cache.prefix(common)
            {
                self.reused
                    .fetch_add(common as u64, std::sync::atomic::Ordering::Relaxed);
                return (start, common);
            }
        }
        drop(kept);
        (self.weights.cache(), 0)
    }

    /// Keep the first [`KEPT_POSITIONS`] positions of `prompt` from `cache` (which holds at
    /// least the prompt) for the next prompt.
    fn keep_prompt(&self, prompt: &[u32], cache: &Cache) {
        if !self
            .reuse_prompts
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let n = prompt.len().min(KEPT_POSITIONS);
        if let Some(copy) = cache.prefix(n) {
            *self
                .last_prompt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((prompt[..n].to_vec(), copy));
        }
    }

    /// The next position's logits after feeding `token`, decoded together with whatever other
    /// generations are waiting (see [`Batcher`]).
    fn decode(&self, token: u32, cache: Cache) -> StepResult {
        let b = &self.batcher;
        let lock = || {
            b.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let mut st = lock();
        let id = st.next_id;
        st.next_id += 1;
        st.waiting.push((id, token, cache));
        if st.waiting_since.is_none() {
            st.waiting_since = Some(std::time::Instant::now());
        }
        if st.gathering {
            b.arrivals.notify_all();
        }
        loop {
            if let Some(done) = st.done.remove(&id) {
                return done;
            }
            if st.leading || st.gathering || st.waiting.is_empty() {
                st = b
                    .results
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            // Gather: wait for the members still on their way, a little.
            st.gathering = true;
            loop {
                let gathered = st.waiting.len() >= st.members.min(MAX_BATCH);
                let waited = st.waiting_since.map_or(GATHER, |t| t.elapsed());
                if gathered || waited >= GATHER {
                    break;
                }
                st = b
                    .arrivals
                    .wait_timeout(st, GATHER - waited)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            st.gathering = false;
            // Lead.
            st.leading = true;
            let take = st.waiting.len().min(MAX_BATCH);
            st.largest = st.largest.max(take);
            let mut batch: Vec<(u64, u32, Cache)> = st.waiting.drain(..take).collect();
            st.waiting_since = None;
            drop(st);
            // Should the pass unwind, the callers in it get an error instead of waiting
            // forever, and another caller can lead.
            let mut guard = LeadGuard {
                batcher: b,
                ids: batch.iter().map(|(rid, _, _)| *rid).collect(),
            };
            let tokens: Vec<u32> = batch.iter().map(|(_, t, _)| *t).collect();
            let mut segments: Vec<Segment<'_>> = batch
                .iter_mut()
                .zip(&tokens)
                .map(|((_, _, cache), t)| Segment {
                    tokens: std::slice::from_ref(t),
                    cache,
                    first_row: 0,
                })
                .collect();
            let logits = self
                .weights
                .forward_segments(&mut segments)
                .map(std::sync::Arc::new);
            drop(segments);
            st = lock();
            for (k, (rid, _, cache)) in batch.into_iter().enumerate() {
                let row = match &logits {
                    Ok(l) => self.row(l, k),
                    Err(e) => Err(backend(e)),
                };
                st.done.insert(rid, (cache, row));
            }
            st.leading = false;
            // The members of this pass come back from now on: the gathering time for the
            // next one starts here, even for callers that arrived during this pass.
            if !st.waiting.is_empty() {
                st.waiting_since = Some(std::time::Instant::now());
            }
            guard.ids.clear();
            b.results.notify_all();
        }
    }

    /// Load the model file with its norm weights perturbed by `seed` (see
    /// `Weights::perturb_norms`): a stand-in for a miner that serves another model while
    /// claiming the registered one (its info still names the file's hash).
    pub fn load_perturbed(path: &Path, seed: u64) -> Result<Self, Error> {
        let mut engine = Self::load_on(path, Device::Cpu)?;
        engine.weights.perturb_norms(seed, 0.25);
        Ok(engine)
    }

    fn logits_row<'a>(&self, logits: &'a [f32], row: usize) -> Result<&'a [f32], Error> {
        let vocab = self.weights.vocab();
        logits
            .get(row * vocab..(row + 1) * vocab)
            .ok_or_else(|| Error::Backend(format!("no logits for row {row}")))
    }

    /// Row `k` of a pass's logits, shared.
    fn row(&self, logits: &std::sync::Arc<Vec<f32>>, k: usize) -> Result<Row, Error> {
        let len = self.weights.vocab();
        self.logits_row(logits, k)?;
        Ok(Row {
            logits: logits.clone(),
            at: k * len,
            len,
        })
    }
}

/// Natural-log softmax of a row (the tests' reference; generation subtracts the row's
/// [`log_sum_exp`] from the logits it reports).
#[cfg(test)]
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let log_sum = log_sum_exp(logits);
    logits.iter().map(|&l| l - log_sum).collect()
}

/// `ln(sum(e^l))` over a row, in a fixed order that vectorises: the maximum (NaN ignored), then
/// `e^(l - max)` with [`crate::exp::exp`] (the same bits on every machine, unlike the C
/// library's `expf`) summed in sixteen lanes (lane `i` takes values `i, i + 16, ...` in order),
/// the lanes summed in a fixed tree and the values past the last sixteen added after. Compiled
/// for AVX-512 and AVX2 besides the baseline; every version computes the same bits.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn log_sum_exp(logits: &[f32]) -> f32 {
    const LANES: usize = 16;
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut top = [f32::NEG_INFINITY; LANES];
    for c in chunks.clone() {
        for (m, &v) in top.iter_mut().zip(c) {
            if v > *m {
                *m = v;
            }
        }
    }
    let max = top
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    exp_sum(logits, max).ln() + max
}

/// `sum(e^(l - max))` over a row, in [`lane_sum`]'s order. With AVX-512 the lanes' sums are
/// one vector, sixteen exponentials at a time ([`crate::exp::exp16`], the same bits as
/// `exp`): the same additions in the same order (`exp_sum_gives_the_scalar_bits`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn exp_sum(logits: &[f32], max: f32) -> f32 {
    let total;
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => {
            use std::arch::x86_64::*;
            let (chunks, rest) = logits.as_chunks::<16>();
            let m = _mm512_set1_ps(max);
            let mut acc = _mm512_setzero_ps();
            for &c in chunks {
                let e = crate::exp::exp16(_mm512_sub_ps(bytemuck::cast(c), m));
                acc = _mm512_add_ps(acc, e);
            }
            total = lanes_total(bytemuck::cast(acc), rest, |v| crate::exp::exp(v - max));
        },
        _ => {
            total = lane_sum(logits, |v| crate::exp::exp(v - max));
        },
    }
    total
}

/// `sum(f(v))` over `values` in sixteen lanes (lane `i` takes values `i, i + 16, ...` in
/// order), the lanes summed in a fixed tree, the values past the last sixteen added after.
/// Inlined into its callers, so that it is compiled with their target features.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut acc = [0f32; LANES];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    lanes_total(acc, rest, f)
}

/// [`lane_sum`]'s end: the sixteen lanes summed in its fixed tree, then `f` of the values
/// past the last sixteen added in order.
#[inline(always)]
fn lanes_total(acc: [f32; 16], rest: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = acc;
    let mut width = acc.len();
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    let mut sum = acc[0];
    for &v in rest {
        sum += f(v);
    }
    sum
}

/// What greedy decoding makes of token `id` at a position whose largest logit is `best`'s.
fn greedy_score(id: u32, best: Best) -> GreedyScore {
    GreedyScore {
        id,
        is_argmax: id == best.id,
        gap: if id == best.id {
            0.0
        } else {
            best.logit - best.target
        },
    }
}

/// The index of the largest value (the lowest index on ties, as llama.cpp's argmax): the
/// running-maximum scan of [`argmax_scan`] (NaN values never win; a NaN first value stays
/// the answer, as nothing compares above it), in sixteen lanes that vectorise, each keeping
/// its maximum and where it first reached it. A scan of the 49,152 logits took
/// about 30 us per token, as long as the row's log-sum-exp; every generating caller runs one
/// between passes.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn argmax(values: &[f32]) -> u32 {
    const LANES: usize = 16;
    let Some(&first) = values.first() else {
        return 0;
    };
    if first.is_nan() {
        return 0;
    }
    let (chunks, rest) = values.as_chunks::<LANES>();
    // Each lane's running maximum and where it first reached it (strictly greater only).
    let mut top = [first; LANES];
    let mut at = [0u32; LANES];
    for (k, c) in chunks.iter().enumerate() {
        for l in 0..LANES {
            if c[l] > top[l] {
                top[l] = c[l];
                at[l] = (k * LANES + l) as u32;
            }
        }
    }
    let max = top
        .iter()
        .chain(rest)
        .fold(first, |m, &v| if v > m { v } else { m });
    // The first index holding the maximum: the earliest lane that reached it (a lane still at
    // `first` says index 0; either zero matches a maximum of zero, and the scan keeps the
    // first of them too), else its first place in the tail.
    let lanes = top
        .iter()
        .zip(at)
        .filter(|&(&t, _)| t == max)
        .map(|(_, i)| i)
        .min();
    lanes.unwrap_or_else(|| {
        let tail = rest.iter().position(|&v| v == max).unwrap_or(0);
        (chunks.len() * LANES + tail) as u32
    })
}

/// The straightforward running-maximum scan that [`argmax`] computes.
#[cfg(test)]
fn argmax_scan(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// A small seeded generator for sampling (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Pick the next token: argmax when greedy, else temperature, top-k and top-p sampling
/// (`log_sum`: the row's [`log_sum_exp`], so that `logits[i] - log_sum` is token `i`'s
/// log-probability).
///
/// Tokens are taken most likely first (ties to the lower id), each weighed
/// `e^((logit - log_sum) / temperature)` ([`crate::exp::exp`]: the same bits on every
/// machine). Top-k keeps the `top_k` first; the nucleus, when `top_p < 1`, the shortest prefix
/// whose share of the kept weight reaches `top_p`; one uniform draw then walks the prefix (a
/// draw that rounding carries past its end takes the most likely token).
/// Only as many tokens are ordered as the nucleus and the draw reach: [`SAMPLE_PREFIX`] first,
/// eight times more when that is not enough (a flat distribution), up to the vocabulary.
/// Sorting all 49,152 tokens (and `expf` of each) for every sampled token took about 3 ms,
/// nearly as long as a one-row decoding pass.
fn pick(logits: &[f32], log_sum: f32, s: &Sampling, rng: &mut Rng) -> u32 {
    if s.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let n = logits.len();
    let t = s.temperature;
    let weight = |i: u32| crate::exp::exp((logits[i as usize] - log_sum) / t);
    let draw = rng.next_f32();
    // With top-k, the kept tokens are ordered at once and their weight summed in that order;
    // otherwise the whole vocabulary's weight is summed in id order.
    let (limit, mut k, all) = match s.top_k {
        0 => (
            n,
            SAMPLE_PREFIX.min(n),
            Some(weight_sum(logits, log_sum, t)),
        ),
        top_k => (top_k.min(n), top_k.min(n), None),
    };
    loop {
        let order = first_tokens(logits, k);
        let weights: Vec<f32> = order.iter().map(|&i| weight(i)).collect();
        let total = all.unwrap_or_else(|| weights.iter().sum());
        // The nucleus: how many of the ordered tokens are kept, and their weight; `None` when
        // it reaches past them.
        let kept = if s.top_p >= 1.0 {
            // No nucleus: all `limit` tokens are kept; the draw decides how far the walk goes.
            Some((limit, total))
        } else {
            let mut mass = 0f32;
            let mut sum = 0f32;
            let mut kept = None;
            for (j, w) in weights.iter().enumerate() {
                mass += w / total;
                sum += w;
                if mass >= s.top_p {
                    kept = Some((j + 1, sum));
                    break;
                }
            }
            kept.or((k == limit).then_some((k, sum)))
        };
        if let Some((kept, kept_total)) = kept {
            let mut target = draw * kept_total;
            let walk = kept.min(k);
            for (i, w) in weights[..walk].iter().enumerate() {
                if target < *w {
                    return order[i];
                }
                target -= w;
            }
            if walk == kept {
                // Rounding carried the draw past every kept token (the weights summed in
                // another order than walked, or the subtractions' own rounding): a draw that
                // close to 1 takes the most likely token, not the least.
                return order[0];
            }
        }
        // The nucleus or the draw reaches past the ordered tokens: order more.
        k = (k * 8).min(limit);
    }
}

/// Tokens a sampled [`pick`] orders first.
const SAMPLE_PREFIX: usize = 64;

/// The `k` most likely tokens, most likely first, ties to the lower id (as a full sort by
/// `(logit descending, id ascending)` orders them), in one pass that keeps the best `k` in a
/// heap.
fn first_tokens(logits: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // `f32::total_cmp`'s order as an integer key.
    let key = |v: f32| {
        let b = v.to_bits() as i32;
        b ^ (((b >> 31) as u32) >> 1) as i32
    };
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    // The worst kept token on top: the lowest logit, then the highest id.
    let mut heap: BinaryHeap<Reverse<(i32, Reverse<u32>)>> = BinaryHeap::with_capacity(k + 1);
    for (i, &v) in logits.iter().enumerate() {
        let item = Reverse((key(v), Reverse(i as u32)));
        if heap.len() < k {
            heap.push(item);
        } else if heap.peek().is_some_and(|worst| item < *worst) {
            heap.pop();
            heap.push(item);
        }
    }
    // Ascending `Reverse` order is best first.
    heap.into_sorted_vec()
        .into_iter()
        .map(|Reverse((_, Reverse(i)))| i)
        .collect()
}

/// `sum(e^((l - log_sum) / t))` over a row in id order ([`lane_sum`], as [`log_sum_exp`]
/// sums).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn weight_sum(logits: &[f32], log_sum: f32, t: f32) -> f32 {
    lane_sum(logits, |v| crate::exp::exp((v - log_sum) / t))
}

impl Engine for CandleEngine {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        self.tokenizer.token_bytes(id)
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, Error> {
        Ok(self.tokenizer.encode(text))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        self.tokenizer.decode(ids)
    }

    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, Error> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.template).map_err(backend)?;
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.clone(), content => m.content.clone() })
            .collect();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! { messages => msgs, add_generation_prompt => true })
            })
            .map_err(backend)
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput, Error> {
        request.sampling.validate()?;
        if request.prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if let Some(&bad) = request
            .prompt
            .iter()
            .find(|&&t| t as usize >= self.tokenizer.vocab_size())
        {
            return Err(Error::UnknownToken(bad));
        }
        let limit = self.info.context_length;
        let needed = request.prompt.len() + request.max_tokens;
        if needed > limit {
            return Err(Error::ContextLimit { needed, limit });
        }
        // The start it shares with the last prompt comes from that prompt's cache; only the
        // last position's logits are needed to start generating.
        let (mut cache, skip) = self.cached_start(&request.prompt);
        let logits = self
            .weights
            .forward_from(
                &request.prompt[skip..],
                &mut cache,
                request.prompt.len() - 1 - skip,
            )
            .map_err(backend)?;
        self.keep_prompt(&request.prompt, &cache);
        let mut row = self.row(&std::sync::Arc::new(logits), 0)?;
        let mut rng = Rng(request.sampling.seed);
        let _member = Member::join(&self.batcher);
        let mut tokens = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut emitted = 0usize; // bytes of `bytes` already returned as text
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        // Greedy picks need no log-sum; it is computed only for the log-probabilities asked
        // for (`--example streams`: about 27 us of a token's 34 us of picking on this machine).
        let need_log_sum = request.wants_logprobs() || !request.sampling.is_greedy();
        for _ in 0..request.max_tokens {
            let logits = row.logits();
            // Log-probabilities are `logit - log_sum`, computed for the tokens reported.
            let log_sum = need_log_sum.then(|| log_sum_exp(logits));
            let id = match log_sum {
                Some(log_sum) => pick(logits, log_sum, &request.sampling, &mut rng),
                None => argmax(logits),
            };
            if self.stop_ids.contains(&id) {
                finish = FinishReason::Stop;
                break;
            }
            let mut top: Vec<(u32, f32)> = Vec::new();
            if let Some(log_sum) = log_sum
                && request.top_logprobs > 0
            {
                top = first_tokens(logits, request.top_logprobs)
                    .into_iter()
                    .map(|i| (i, logits[i as usize] - log_sum))
                    .collect();
            }
            bytes.extend(self.tokenizer.token_bytes(id)?);
            // Complete characters only (a character may span tokens), each invalid sequence
            // as U+FFFD: the text validators expect of these tokens. Before, a byte that could
            // never start a character held back every later piece, and an answer that ended
            // inside a character failed validators' text check (its ids spelled U+FFFD there).
            let (piece, used) = agora_inference::complete_text(&bytes[emitted..]);
            emitted += used;
            let event = TokenEvent {
                id,
                text: piece,
                logprob: log_sum
                    .filter(|_| request.wants_logprobs())
                    .map(|l| logits[id as usize] - l),
                top,
            };
            let event_len = event.text.len();
            text.push_str(&event.text);
            let keep_going = on_token(&event);
            tokens.push(event);
            if !keep_going {
                finish = FinishReason::Cancelled;
                break;
            }
            // A stop sequence may end inside a token: look for it in the text this token added
            // (and the longest stop's length before), and cut the text where it starts.
            let longest = request.stop.iter().map(String::len).max().unwrap_or(0);
            let from = text.len().saturating_sub(event_len + longest);
            if let Some(at) = agora_inference::first_stop(&text, &request.stop, from) {
                text.truncate(at);
                finish = FinishReason::Stop;
                break;
            }
            if tokens.len() == request.max_tokens {
                break;
            }
            let (back, next) = self.decode(id, cache);
            cache = back;
            row = next?;
        }
        Ok(GenerateOutput {
            tokens,
            text,
            finish,
        })
    }

    fn score_top(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        top: usize,
    ) -> Result<Vec<TopScore>, Error> {
        // Each row on its own, as the pass produces them (rows in parallel): the
        // log-probabilities of the claimed token and of the argmax, from the row's log-sum-exp,
        // with the numbers `generate` reports, and the row's `top` most likely tokens as
        // `generate` orders them.
        self.score_rows(prompt, continuation, |id, row| {
            let log_sum = log_sum_exp(row);
            let best = argmax(row);
            let at = |t: u32| {
                row.get(t as usize)
                    .map(|&l| l - log_sum)
                    .ok_or(Error::UnknownToken(t))
            };
            Ok(TopScore {
                score: TokenScore {
                    id,
                    logprob: at(id)?,
                    is_argmax: id == best,
                    best_logprob: at(best)?,
                },
                top: first_tokens(row, top)
                    .into_iter()
                    .map(|i| (i, row[i as usize] - log_sum))
                    .collect(),
            })
        })
    }

    fn prepare_scoring(&self) {
        self.weights.prepare_screen();
    }

    /// The argmax and the claimed token's logit per row, without the log-sum over the
    /// vocabulary; on a CPU with AMX or AVX-512 VNNI without most of the logits either (the output matrix's
    /// screen, `quant::screen`: the same numbers, bit for bit).
    fn score_greedy(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<GreedyScore>, Error> {
        // The pass's argmax and target logits per row: on a CPU with AMX or AVX-512 VNNI, screened
        // (`Weights::forward_argmax`): only a few logits per row, the same numbers.
        let bests = self.scored_pass(prompt, continuation, |weights, tokens, cache, first| {
            weights.forward_argmax(tokens, cache, first, continuation, argmax)
        })?;
        Ok(bests
            .into_iter()
            .zip(continuation)
            .map(|(best, &id)| greedy_score(id, best))
            .collect())
    }
}

impl CandleEngine {
    /// `each(token, logits)` for each token of `continuation` after `prompt`, from one pass
    /// over the prompt and the continuation but its last token: row k predicts continuation
    /// token k. The model treats every position on its own, so these are the generator's own
    /// numbers, bit for bit. The start the prompt shares with the last one comes from that
    /// one's cache.
    fn score_rows<T: Send>(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        each: impl Fn(u32, &[f32]) -> Result<T, Error> + Sync + Send,
    ) -> Result<Vec<T>, Error> {
        self.scored_pass(prompt, continuation, |weights, tokens, cache, first| {
            weights.forward_from_each(tokens, cache, first, |k, row| {
                let id = *continuation
                    .get(k)
                    .ok_or_else(|| Error::Backend(format!("no token for row {k}")))?;
                each(id, row)
            })
        })?
        .into_iter()
        .collect()
    }

    /// `pass(weights, tokens, cache, first_row)` over the prompt and the continuation but its
    /// last token, after the checks every scoring pass makes; one result per continuation
    /// token. The start the prompt shares with the last one comes from that one's cache.
    fn scored_pass<T>(
        &self,
        prompt: &[u32],
        continuation: &[u32],
        pass: impl FnOnce(&Weights, &[u32], &mut Cache, usize) -> candle_core::Result<Vec<T>>,
    ) -> Result<Vec<T>, Error> {
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if continuation.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
        if let Some(&bad) = all
            .iter()
            .find(|&&t| t as usize >= self.tokenizer.vocab_size())
        {
            return Err(Error::UnknownToken(bad));
        }
        if all.len() > self.info.context_length {
            return Err(Error::ContextLimit {
                needed: all.len(),
                limit: self.info.context_length,
            });
        }
        let (mut cache, skip) = self.cached_start(prompt);
        let scores = pass(
            &self.weights,
            &all[skip..all.len() - 1],
            &mut cache,
            prompt.len() - 1 - skip,
        )
        .map_err(backend)?;
        self.keep_prompt(prompt, &cache);
        if scores.len() != continuation.len() {
            return Err(Error::Backend(format!(
                "the pass scored {} of {} tokens",
                scores.len(),
                continuation.len()
            )));
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`pick`]'s sampling as its documentation states it, over the whole vocabulary sorted.
    fn pick_reference(logits: &[f32], log_sum: f32, s: &Sampling, rng: &mut Rng) -> u32 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if s.top_k > 0 {
            order.truncate(s.top_k);
        }
        let weights: Vec<f32> = order
            .iter()
            .map(|&i| crate::exp::exp((logits[i as usize] - log_sum) / s.temperature))
            .collect();
        let total = if s.top_k > 0 {
            weights.iter().sum()
        } else {
            weight_sum(logits, log_sum, s.temperature)
        };
        let draw = rng.next_f32();
        let (kept, kept_total) = if s.top_p >= 1.0 {
            (weights.len(), total)
        } else {
            let (mut mass, mut sum, mut kept) = (0f32, 0f32, weights.len());
            for (j, w) in weights.iter().enumerate() {
                mass += w / total;
                sum += w;
                if mass >= s.top_p {
                    kept = j + 1;
                    break;
                }
            }
            (kept, sum)
        };
        let mut target = draw * kept_total;
        for (i, w) in weights[..kept].iter().enumerate() {
            if target < *w {
                return order[i];
            }
            target -= w;
        }
        order[0]
    }

    /// A linear congruential stream of 31-bit numbers for the tests' rows.
    fn numbers(seed: u64) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        }
    }

    #[test]
    fn the_first_tokens_are_a_full_sorts_first() {
        let mut next = numbers(17);
        for n in [1usize, 5, 64, 1000] {
            // Few distinct values (many ties), and the special values.
            let mut row: Vec<f32> = (0..n).map(|_| (next() % 7) as f32 - 3.0).collect();
            for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0]
                .into_iter()
                .enumerate()
            {
                if let Some(x) = row.get_mut(i * 3) {
                    *x = v;
                }
            }
            let mut sorted: Vec<u32> = (0..n as u32).collect();
            sorted.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            for k in [1, 2, 7, 64, n, n + 3] {
                assert_eq!(first_tokens(&row, k), sorted[..k.min(n)], "n {n}, k {k}");
            }
        }
    }

    #[test]
    fn sampling_from_the_first_tokens_picks_what_a_full_sort_picks() {
        let mut bits = numbers(3);
        let mut next = || (bits() >> 7) as f32 / (1u32 << 24) as f32;
        let n = 5000;
        // Peaked (the draw stays in the first tokens) and flat (it reaches past them).
        let rows: Vec<Vec<f32>> = [12.0f32, 3.0, 0.05]
            .iter()
            .map(|&spread| (0..n).map(|_| next() * spread).collect())
            .collect();
        let settings = [
            (1.0, 0, 1.0),
            (0.7, 0, 1.0),
            (1.0, 0, 0.9),
            (0.5, 0, 0.95),
            (2.0, 0, 0.5),
            (1.0, 40, 1.0),
            (0.8, 40, 0.9),
            (1.5, 3000, 0.99),
        ];
        let (mut picks, mut deepest) = (std::collections::BTreeSet::new(), 0);
        for row in &rows {
            let log_sum = log_sum_exp(row);
            let ranked = first_tokens(row, n);
            for &(temperature, top_k, top_p) in &settings {
                let s = Sampling {
                    temperature,
                    top_p,
                    top_k,
                    seed: 0,
                };
                for seed in 0..25 {
                    let got = pick(row, log_sum, &s, &mut Rng(seed));
                    let want = pick_reference(row, log_sum, &s, &mut Rng(seed));
                    assert_eq!(got, want, "T {temperature}, top_k {top_k}, top_p {top_p}");
                    picks.insert(got);
                    deepest = deepest.max(ranked.iter().position(|&i| i == got).unwrap_or(0));
                }
            }
        }
        // The draws spread over many tokens, some ranked past the first ones ordered.
        assert!(picks.len() > 100, "{} distinct picks", picks.len());
        assert!(deepest >= SAMPLE_PREFIX, "deepest rank {deepest}");
    }

    /// The vectorised argmax against the plain scan: ties (the first wins), both zeros, NaN
    /// values (passed over, or kept when first), infinities, and every length around the lanes.
    #[test]
    fn argmax_is_the_first_largest_value_as_a_scan_finds_it() {
        let mut next = numbers(5);
        let specials = [
            f32::NAN,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
            -1.0,
        ];
        for n in [1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 49_152] {
            for round in 0..50 {
                let row: Vec<f32> = (0..n)
                    .map(|_| match next() % 10 {
                        // Few distinct values, so that ties are common.
                        0 | 1 => specials[(next() % specials.len() as u32) as usize],
                        _ if round % 2 == 0 => (next() % 7) as f32 - 3.0,
                        _ => (next() as f32 / u32::MAX as f32) * 40.0 - 20.0,
                    })
                    .collect();
                assert_eq!(
                    argmax(&row),
                    argmax_scan(&row),
                    "n {n} round {round}: {row:?}"
                );
            }
        }
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 0);
        assert_eq!(argmax(&[-0.0, 0.0]), 0);
        assert_eq!(argmax(&[1.0, f32::NAN, 3.0, 3.0]), 2);
    }

    /// `n` logits spread evenly over `-half..half`, from `state` (advanced).
    fn spread_row(n: usize, state: &mut u64, half: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 * half - half
            })
            .collect()
    }

    /// The dispatched sum of exponentials (AVX-512 where the CPU has it) against the scalar
    /// steps, bit for bit, on rows of every length around the lane count, with NaN, infinities
    /// and ties.
    #[test]
    fn exp_sum_gives_the_scalar_bits() {
        let mut state = 7u64;
        for n in [1, 15, 16, 17, 33, 1000, 49_152] {
            let mut row = spread_row(n, &mut state, 40.0);
            if n > 40 {
                row[5] = f32::NAN;
                row[21] = 39.5;
                row[22] = 39.5;
                row[30] = f32::NEG_INFINITY;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let want = lane_sum(&row, |v| crate::exp::exp(v - max));
            let got = exp_sum(&row, max);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "n {n}: {got:e} against {want:e}"
            );
            if n > 40 {
                // And without the NaN, whose sum is NaN whatever the order.
                row[5] = 1.0;
                let want = lane_sum(&row, |v| crate::exp::exp(v - max));
                assert_eq!(exp_sum(&row, max).to_bits(), want.to_bits(), "n {n}");
            }
        }
    }

    /// Against a straightforward f64 log-sum-exp, on rows of every length around the lane count
    /// (tails included), with large and negative values.
    #[test]
    fn log_sum_exp_matches_a_straightforward_sum() {
        let mut state = 3u64;
        for n in [1, 2, 15, 16, 17, 31, 33, 1000, 49_152] {
            let row = spread_row(n, &mut state, 30.0);
            let max = row
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
            let want = row
                .iter()
                .map(|&l| (f64::from(l) - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            let got = f64::from(log_sum_exp(&row));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "n {n}: {got} vs {want}"
            );
            let logprobs = log_softmax(&row);
            let total: f64 = logprobs.iter().map(|&l| f64::from(l).exp()).sum();
            assert!(
                (total - 1.0).abs() < 1e-4,
                "n {n}: probabilities sum to {total}"
            );
        }
    }
}
