//! Causal attention over an 8-bit key-value cache, computed the same way for every query row
//! however many rows are processed at once.
//!
//! The cache keeps keys and values quantized per 32 dimensions of a head, as the activations
//! of a product are ([`crate::quant`]: `q = round(x / d)`, `d = max|x| / 127` rounded to f16;
//! llama.cpp's `q8_0` cache type does the same). The query is quantized the same way in two
//! parts (`quantize_query`: `hi`, then `lo` of what `hi` leaves), about 16 bits. Each output
//! row `(i, head)` is computed by one thread (together with the other heads that share its
//! key-value head), in a fixed order:
//! - scores: per position `j`, for each 32-dimension block `b` in order, the exact integer dot
//!   products `P = q_b . k_jb` of `hi` and then of `lo`, each followed by
//!   `s = fma(P, d_qb * d_kjb, s)` (from `s = 0`), and the score `s * scale`
//!   (`scale = 1 / sqrt(head_dim)`);
//! - a softmax over positions `0..=start + i`: the maximum, `exp` of each score less it, their
//!   sum in position order, and each probability `p_j = e_j * (1 / sum)` rounded to f16;
//! - the values: for each position `j` in order and each dimension `t` of block `b`,
//!   `o_t = fma(p_j * d_vjb, v_jt, o_t)` from `o_t = 0`.
//!
//! Nothing depends on the batch: a position scored in one pass of many tokens gets exactly the
//! numbers it gets when decoded on its own, so scoring reproduces generation bit for bit, and
//! the thread count changes nothing. The GPU kernels (`crates/inference-cuda/src/kernels.cu`)
//! do the same operations in the same order.
//!
//! Why 8 bits: a decoding pass of several streams reads every stream's cache for every layer,
//! and those reads, not the arithmetic, bound its attention (f16 caches read from memory took
//! about twice as long per row as from L3). 8-bit keys and values halve the bytes, and the
//! scores become integer dot products (`vpdpbusd`, sixteen positions at a time).
#![allow(
    clippy::float_arithmetic,
    reason = "inference is not consensus-visible; the arithmetic is fixed-order and tested"
)]

use crate::quant::{ActBlock, BLOCK, ZERO_ACT, quantize_into};
use rayon::prelude::*;

/// Heads and their size.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Query heads.
    pub heads: usize,
    /// Key-value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Values per head (a multiple of 32: see [`Shape::check`]).
    pub head_dim: usize,
}

impl Shape {
    /// Whether the cache can hold this shape: whole 32-value blocks per head, and a whole
    /// number of query heads per key-value head.
    pub fn check(&self) -> Result<(), String> {
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(BLOCK)
            || self.kv_heads == 0
            || self.heads == 0
            || !self.heads.is_multiple_of(self.kv_heads)
        {
            return Err(format!(
                "unsupported attention shape: {} heads, {} key-value heads, head size {} (the \
                 8-bit cache needs head sizes that are multiples of {BLOCK})",
                self.heads, self.kv_heads, self.head_dim
            ));
        }
        Ok(())
    }

    /// Values in one position's keys (or values): all key-value heads.
    fn width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// 32-value blocks per head.
    fn blocks(&self) -> usize {
        self.head_dim / BLOCK
    }
}

/// Work below this many multiply-adds runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 18;

/// [`PARALLEL_MIN`] for a pass whose tasks (one per sequence) do not divide evenly among the
/// threads: about 28 positions of one decoded row. Above it a row's key-value heads are items
/// of their own, which an idle thread can take. With an odd count of sequences on two threads
/// one thread used to attend for one more sequence than the other while that one waited:
/// `--example streams N 128`, four alternated pairs each (with the split on for every pass,
/// for these contexts the same split), 3 streams 537 against 418 tok/s on average and 7
/// streams 730 against 664. Where the sequences divide evenly the finer split
/// costs more than it saves (8 streams, three pairs: 799 / 767 / 836 against 819 / 801 / 826).
const SPREAD_MIN: usize = 1 << 14;

/// Positions per block of the key cache (see [`LayerCache`]).
pub const KEY_BLOCK: usize = 16;

/// One sequence's keys and values for one layer, 8-bit.
///
/// Keys come in blocks of [`KEY_BLOCK`] positions (a block is allocated whole), each laid out
/// `[kv_head][dim / 4][position in block][dim % 4]` as `k + 128` in a byte, so that four
/// dimensions of sixteen positions are one 64-byte vector, the operand of `vpdpbusd`; their
/// scales per block `[kv_head][32-dim block][position in block]`. Values are
/// `[position][kv_head][dim]` (signed bytes); their scales come in the keys' blocks of
/// positions, laid out as the keys' scales, so that a head's scales of sixteen positions are
/// one vector (the weighted values multiply them by sixteen probabilities at once).
#[derive(Clone, Debug)]
pub struct LayerCache {
    shape: Shape,
    keys: Vec<u8>,
    key_scales: Vec<f32>,
    values: Vec<i8>,
    value_scales: Vec<f32>,
    len: usize,
}

impl LayerCache {
    /// An empty cache for heads of `shape` (which must pass [`Shape::check`]).
    pub fn new(shape: Shape) -> LayerCache {
        LayerCache {
            shape,
            keys: Vec::new(),
            key_scales: Vec::new(),
            values: Vec::new(),
            value_scales: Vec::new(),
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append positions `len..len + rows.len() / (2 * width)`: each row holds a position's keys
    /// (rotated, all key-value heads) and then its values, `width = kv_heads * head_dim` each.
    /// Many rows (a prompt, a scored continuation) are quantized and written block by block on
    /// rayon's threads; each position's bytes are the same however they are split.
    pub fn push(&mut self, rows: &[f32]) {
        let shape = self.shape;
        let width = shape.width();
        let seq = rows.len() / (2 * width).max(1);
        if seq == 0 {
            return;
        }
        let (nb, start) = (shape.blocks(), self.len);
        let end = start + seq;
        let row_blocks = shape.kv_heads * nb;
        // Whole blocks of positions: keys and both kinds of scales.
        let (key_block, scale_block) = (width * KEY_BLOCK, row_blocks * KEY_BLOCK);
        let blocks = end.div_ceil(KEY_BLOCK);
        if self.keys.len() < blocks * key_block {
            self.keys.resize(blocks * key_block, 128);
            self.key_scales.resize(blocks * scale_block, 0.0);
            self.value_scales.resize(blocks * scale_block, 0.0);
        }
        self.values.resize(end * width, 0);
        let first = start / KEY_BLOCK;
        // The values of each block's new positions (the first block's may start inside it).
        let mut values = Vec::with_capacity(blocks - first);
        let mut rest = &mut self.values[start * width..];
        for b in first..blocks {
            let to = ((b + 1) * KEY_BLOCK).min(end);
            let from = (b * KEY_BLOCK).max(start);
            let (here, after) = rest.split_at_mut((to - from) * width);
            values.push(here);
            rest = after;
        }
        let hd = shape.head_dim;
        self.keys[first * key_block..blocks * key_block]
            .par_chunks_mut(key_block)
            .zip(
                self.key_scales[first * scale_block..blocks * scale_block]
                    .par_chunks_mut(scale_block),
            )
            .zip(
                self.value_scales[first * scale_block..blocks * scale_block]
                    .par_chunks_mut(scale_block),
            )
            .zip(values)
            .enumerate()
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(buffer, gathered), (b, (((keys, scales), value_scales), values))| {
                    let b = first + b;
                    let (from, to) = ((b * KEY_BLOCK).max(start), ((b + 1) * KEY_BLOCK).min(end));
                    let positions = (from - start)..(to - start);
                    let q =
                        positions_quantized(rows, positions.clone(), 0, width, buffer, gathered);
                    for (pos, q) in (from..to).zip(q.chunks_exact(row_blocks)) {
                        let at = pos % KEY_BLOCK;
                        for (kb, block) in q.iter().enumerate() {
                            let (kvh, blk) = (kb / nb, kb % nb);
                            scales[kb * KEY_BLOCK + at] = block.d;
                            let head = &mut keys[kvh * hd * KEY_BLOCK..(kvh + 1) * hd * KEY_BLOCK];
                            // Four dimensions at a time: their bytes lie together.
                            for (t, four) in block.q.chunks_exact(4).enumerate() {
                                let d = blk * BLOCK + 4 * t;
                                let to = (d / 4) * 4 * KEY_BLOCK + at * 4;
                                for (k, &v) in head[to..to + 4].iter_mut().zip(four) {
                                    *k = (v as u8) ^ 0x80;
                                }
                            }
                        }
                    }
                    let q = positions_quantized(rows, positions, width, width, buffer, gathered);
                    for ((pos, v), q) in (from..to)
                        .zip(values.chunks_exact_mut(width))
                        .zip(q.chunks_exact(row_blocks))
                    {
                        let at = pos % KEY_BLOCK;
                        for ((kb, block), v) in q.iter().enumerate().zip(v.chunks_exact_mut(BLOCK))
                        {
                            value_scales[kb * KEY_BLOCK + at] = block.d;
                            v.copy_from_slice(&block.q);
                        }
                    }
                },
            );
        self.len = end;
    }

    /// Keep the first `n` positions (at most [`LayerCache::len`]): a pass that failed halfway
    /// may have appended to some layers, and the next pass writes its positions again.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len);
        // Keys and scales keep whole blocks; positions past `n` are written over as the cache
        // grows.
        self.values.truncate(n * self.shape.width());
        self.len = n;
    }

    /// A copy of the first `n` positions (at most [`LayerCache::len`]).
    pub fn prefix(&self, n: usize) -> LayerCache {
        let n = n.min(self.len);
        let width = self.shape.width();
        let row_blocks = self.shape.kv_heads * self.shape.blocks();
        let blocks = n.div_ceil(KEY_BLOCK);
        // The last block's positions past `n` are written over as the copy grows.
        LayerCache {
            shape: self.shape,
            keys: self.keys[..blocks * width * KEY_BLOCK].to_vec(),
            key_scales: self.key_scales[..blocks * row_blocks * KEY_BLOCK].to_vec(),
            values: self.values[..n * width].to_vec(),
            value_scales: self.value_scales[..blocks * row_blocks * KEY_BLOCK].to_vec(),
            len: n,
        }
    }
}

/// Another cache's bytes, asked for into L2 a few lines at a time while this thread computes
/// an attention ([`causal_into`]), so that they are near when their own attention comes.
///
/// In a decoding pass each thread attends for its sequences one after another, and each
/// sequence's cache comes from memory (a pass reads about 100 MB of weights between two reads
/// of it). Asked for all at once before its attention, a cache stalled the thread for as long
/// as it took to arrive (session 16); asked for line by line during the previous sequence's
/// attention, its arrival overlaps that arithmetic. Only addresses are kept, never read
/// through: a cache that grows or moves meanwhile costs a wasted request, nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ahead {
    /// `[from, to)` address ranges still to ask for, in order.
    regions: [(usize, usize); 4],
    /// The first range not yet done.
    next: usize,
}

impl LayerCache {
    /// This cache's keys, values and their scales, to ask for ahead of its attention.
    pub fn ahead(&self) -> Ahead {
        fn range<T>(v: &[T]) -> (usize, usize) {
            let from = v.as_ptr() as usize;
            (from, from + std::mem::size_of_val(v))
        }
        Ahead {
            regions: [
                range(&self.keys),
                range(&self.key_scales),
                range(&self.values),
                range(&self.value_scales),
            ],
            next: 0,
        }
    }
}

impl Ahead {
    /// Whether no line is left to ask for.
    fn is_done(&self) -> bool {
        self.regions
            .get(self.next..)
            .is_none_or(|left| left.iter().all(|r| r.0 >= r.1))
    }

    /// The next `lines` cache lines still to ask for (fewer at the end), each handed to `ask`.
    fn take(&mut self, lines: usize, mut ask: impl FnMut(usize)) {
        let mut left = lines;
        while left > 0 {
            let Some(r) = self.regions.get_mut(self.next) else {
                return;
            };
            if r.0 >= r.1 {
                self.next += 1;
                continue;
            }
            ask(r.0);
            r.0 += 64;
            left -= 1;
        }
    }
}

/// `q` holds `seq` query rows for positions `start..start + seq` (rotated, f32), laid out
/// `[row][head][dim]`; `cache` holds positions `0..start + seq` (the rows' own keys and values
/// appended). Returns the attention output laid out `[row][head][dim]`.
pub fn causal(q: &[f32], cache: &LayerCache, start: usize, seq: usize) -> Vec<f32> {
    let mut out = Vec::new();
    causal_into(q, cache, start, seq, false, &mut Ahead::default(), &mut out);
    out
}

/// [`causal`] into `out` (its contents replaced, its allocation reused: every value is
/// written, each output row by the task that computes it). `spread`: split even short work
/// into items for idle threads to take (`SPREAD_MIN`), for a pass whose tasks leave a
/// thread idle. `ahead`: another cache to ask for meanwhile (where the work runs on this
/// thread alone; [`Ahead`]); it changes no number.
///
/// The query heads that share a key-value head are computed together (one item per row and
/// key-value head), so each cached vector is read once for all of them; each head's numbers
/// are computed in the order the module documentation states, so every split gives the same
/// bits (`a_row_gets_the_same_numbers_alone_or_in_a_batch_and_on_any_thread_count`).
pub fn causal_into(
    q: &[f32],
    cache: &LayerCache,
    start: usize,
    seq: usize,
    spread: bool,
    ahead: &mut Ahead,
    out: &mut Vec<f32>,
) {
    let shape = cache.shape;
    let Shape {
        heads,
        head_dim: hd,
        ..
    } = shape;
    let kv_heads = shape.kv_heads.max(1);
    let rep = (heads / kv_heads).max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    out.truncate(seq * heads * hd);
    out.resize(seq * heads * hd, 0.0);
    let group = rep * hd;
    // Every row's query in its two parts first, all blocks at once (each block's numbers are
    // its own, so this changes none): quantized item by item, six blocks at a time, they cost
    // about a sixth of a 168-row pass's attention, mostly the fixed cost of each call's group
    // of sixteen blocks.
    let row = heads * hd;
    let blocks = (seq * row) / BLOCK;
    let (mut qb, mut residual) = QUERY.with_borrow_mut(std::mem::take);
    qb.resize(2 * blocks, ZERO_ACT);
    let (hi, lo) = qb.split_at_mut(blocks);
    let q = &q[..blocks * BLOCK];
    if seq > QUERY_ROWS_PER_TASK {
        let per = QUERY_ROWS_PER_TASK * row;
        q.par_chunks(per)
            .zip(hi.par_chunks_mut(per / BLOCK))
            .zip(lo.par_chunks_mut(per / BLOCK))
            .for_each_init(Vec::new, |residual, ((x, hi), lo)| {
                quantize_parts(x, hi, lo, residual)
            });
    } else {
        quantize_parts(q, hi, lo, &mut residual);
    }
    let (hi, lo) = qb.split_at(blocks);
    let per_item = group / BLOCK;
    let one = |item: usize, o: &mut [f32], ahead: &mut Ahead| {
        let (i, kvh) = (item / kv_heads, item % kv_heads);
        let kv = Kv {
            cache,
            kvh,
            hd,
            nb: shape.blocks(),
        };
        let at = item * per_item;
        let (hi, lo) = (&hi[at..at + per_item], &lo[at..at + per_item]);
        attend_group(hi, lo, &kv, start + i, scale, o, ahead);
    };
    let work = seq * heads * (start + seq) * hd;
    let min = if spread { SPREAD_MIN } else { PARALLEL_MIN };
    if work >= min {
        // Items on any thread: nothing is asked for ahead.
        out.par_chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o, &mut Ahead::default()));
    } else {
        out.chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o, ahead));
    }
    // Kept for the next call unless a long prompt made it large.
    if std::mem::size_of_val(qb.as_slice()) <= KEPT_QUERY_BYTES {
        QUERY.with_borrow_mut(|buffers| *buffers = (qb, residual));
    }
}

/// The keys (`offset` 0) or the values (`offset` `width`) of positions `range` of `rows` (a
/// position's keys, then its values, `width` each) quantized as one run of blocks into `q`,
/// through `gathered` (their copy end to end): one call of the SIMD quantization for them all,
/// where a call per position took SmolLM2's six blocks as a group of sixteen (a 168-row
/// pass's appends over 30 layers in a temporary example: 506-521 -> 460-467 us). Each block's
/// numbers are its own either way.
fn positions_quantized<'a>(
    rows: &[f32],
    range: std::ops::Range<usize>,
    offset: usize,
    width: usize,
    q: &'a mut Vec<ActBlock>,
    gathered: &mut Vec<f32>,
) -> &'a [ActBlock] {
    gathered.clear();
    for row in rows
        .chunks_exact(2 * width)
        .skip(range.start)
        .take(range.len())
    {
        gathered.extend_from_slice(&row[offset..offset + width]);
    }
    q.resize(gathered.len() / BLOCK, ZERO_ACT);
    quantize_into(gathered, q);
    q
}

/// Query rows quantized per parallel task in [`causal_into`].
const QUERY_ROWS_PER_TASK: usize = 8;

/// The largest quantized queries, in bytes, a thread keeps for its next [`causal_into`]: a
/// 168-row scoring pass's are about 270 KB.
const KEPT_QUERY_BYTES: usize = 512 << 10;

/// The query `x` (whole 32-value blocks) in two 8-bit parts, as the cache's quantization makes
/// them: `hi` quantizes `x`, `lo` quantizes what `hi` leaves, `x - q * d` per value. The scores
/// take both, so the query keeps about 16 bits (8 bits alone cost agreement with llama.cpp's
/// f16 query: 303 instead of 308 of its 320 greedy tokens as our argmax, one 0.42 nats off).
#[cfg(test)]
fn quantize_query<'a>(
    x: &[f32],
    blocks: &'a mut Vec<ActBlock>,
    residual: &mut Vec<f32>,
) -> (&'a [ActBlock], &'a [ActBlock]) {
    let nb = x.len() / BLOCK;
    blocks.resize(2 * nb, ZERO_ACT);
    let (hi, lo) = blocks.split_at_mut(nb);
    quantize_parts(x, hi, lo, residual);
    (hi, lo)
}

/// [`quantize_query`]'s two parts of `x` into `hi` and `lo` (a block each per 32 values),
/// `residual` a buffer for what `hi` leaves.
fn quantize_parts(x: &[f32], hi: &mut [ActBlock], lo: &mut [ActBlock], residual: &mut Vec<f32>) {
    quantize_into(x, hi);
    residual.truncate(x.len());
    residual.resize(x.len(), 0.0);
    residuals(x, hi, residual);
    quantize_into(residual, lo);
}

/// What the blocks `hi` leave of `x`, `x - q * d` per value (a product, then a difference),
/// into `out`. Compiled for AVX-512 besides the baseline: built for the baseline alone, the
/// loop took four values at a time, and a 168-row pass's queries' quantization took 785-795
/// us (30 layers, temporary timers) against 638-650 with this. The AVX-512 version is written
/// with intrinsics: the same loop left to the compiler was vectorised across blocks, with
/// gathers, and took 1,590 us.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c"))]
fn residuals(x: &[f32], hi: &[ActBlock], out: &mut [f32]) {
    let (xs, _) = x.as_chunks::<BLOCK>();
    let (outs, _) = out.as_chunks_mut::<BLOCK>();
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => x86::residuals(xs, hi, outs),
        _ => {
            for ((o, xs), b) in outs.iter_mut().zip(xs).zip(hi) {
                for ((o, &v), &q) in o.iter_mut().zip(xs).zip(&b.q) {
                    *o = v - f32::from(q) * b.d;
                }
            }
        },
    }
}

/// One key-value head's cached keys and values.
struct Kv<'a> {
    cache: &'a LayerCache,
    kvh: usize,
    hd: usize,
    /// 32-value blocks per head.
    nb: usize,
}

impl Kv<'_> {
    /// This head's keys in position block `b`: `[dim / 4][position in block][dim % 4]`.
    fn key_block(&self, b: usize) -> &[u8] {
        let kv_heads = self.cache.shape.kv_heads;
        let at = (b * kv_heads + self.kvh) * self.hd * KEY_BLOCK;
        &self.cache.keys[at..at + self.hd * KEY_BLOCK]
    }

    /// This head's key scales in position block `b`: `[32-dim block][position in block]`.
    fn key_scales(&self, b: usize) -> &[f32] {
        let kv_heads = self.cache.shape.kv_heads;
        let at = (b * kv_heads + self.kvh) * self.nb * KEY_BLOCK;
        &self.cache.key_scales[at..at + self.nb * KEY_BLOCK]
    }

    /// This head's values at position `j`.
    fn value(&self, j: usize) -> &[i8] {
        let at = j * self.cache.shape.kv_heads + self.kvh;
        &self.cache.values[at * self.hd..(at + 1) * self.hd]
    }

    /// This head's value scales in position block `b`: `[32-dim block][position in block]`.
    fn value_scales(&self, b: usize) -> &[f32] {
        let kv_heads = self.cache.shape.kv_heads;
        let at = (b * kv_heads + self.kvh) * self.nb * KEY_BLOCK;
        &self.cache.value_scales[at..at + self.nb * KEY_BLOCK]
    }

    /// The scale of this head's values at position `j`, dimension block `b`.
    fn value_scale(&self, j: usize, b: usize) -> f32 {
        self.value_scales(j / KEY_BLOCK)[b * KEY_BLOCK + j % KEY_BLOCK]
    }
}

/// One query row of the heads sharing one key-value head (`qb`: `rep` heads of `nb` quantized
/// blocks) against positions `0..=last`, into `o` (`rep` heads of `hd`). Compiled for AVX-512
/// with VNNI besides the baseline; both do the same operations in the same order.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512vnni+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn attend_group(
    qb: &[ActBlock],
    ql: &[ActBlock],
    kv: &Kv<'_>,
    last: usize,
    scale: f32,
    o: &mut [f32],
    ahead: &mut Ahead,
) {
    let rep = qb.len() / kv.nb;
    let n = last + 1;
    // Scores, head by head: scores[r * n + j] (the SIMD kernels': scores[r * ns + j], rows
    // padded to whole blocks of sixteen, see `x86::padded`), every one written before it is
    // read, in this thread's buffer (nothing here calls back into the pool, so no other item
    // can take it over halfway).
    SCORES.with_borrow_mut(|buffer| {
        multiversion::target::match_target! {
            "x86_64+avx512f+avx512bw+avx512vl+avx512vnni+avx2+fma+f16c" => {
                let len = rep * x86::padded(n);
                if buffer.len() < len {
                    buffer.resize(len, 0.0);
                }
                let scores = &mut buffer[..len];
                x86::scores(qb, ql, kv, n, scale, scores, ahead);
                x86::softmax_values(scores, kv, n, o, ahead);
            },
            _ => {
                let _ = ahead;
                if buffer.len() < rep * n {
                    buffer.resize(rep * n, 0.0);
                }
                let scores = &mut buffer[..rep * n];
                scores_scalar(qb, ql, kv, n, scale, scores);
                softmax(scores, n);
                values_scalar(scores, kv, n, o);
            },
        }
    });
}

thread_local! {
    /// [`attend_group`]'s scores, kept per thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// [`causal_into`]'s quantized queries (and a buffer for their residuals), kept per
    /// thread.
    static QUERY: std::cell::RefCell<(Vec<ActBlock>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Each head's softmax (rows of `n` scores): maximum, exponentials, their sum in position
/// order; probabilities rounded to f16 (as llama.cpp rounds them for its f16 product with the
/// values; kept with the 8-bit cache, the GPU kernels round the same way).
fn softmax(scores: &mut [f32], n: usize) {
    for s in scores.chunks_exact_mut(n) {
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in s.iter_mut() {
            *x = crate::exp::exp(*x - max);
        }
        let mut sum = 0f32;
        for x in s.iter() {
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in s.iter_mut() {
            *x = half::f16::from_f32(*x * inv).to_f32();
        }
    }
}

/// The scores of positions `0..n` for each head of `qb`, the reference way (the module
/// documentation's steps, one position and head at a time).
fn scores_scalar(
    qb: &[ActBlock],
    ql: &[ActBlock],
    kv: &Kv<'_>,
    n: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let nb = kv.nb;
    for j in 0..n {
        let keys = kv.key_block(j / KEY_BLOCK);
        let key_scales = kv.key_scales(j / KEY_BLOCK);
        let at = j % KEY_BLOCK;
        for (r, (hi, lo)) in qb.chunks_exact(nb).zip(ql.chunks_exact(nb)).enumerate() {
            let mut s = 0f32;
            for (b, parts) in hi.iter().zip(lo).enumerate() {
                let dk = key_scales[b * KEY_BLOCK + at];
                for qa in [parts.0, parts.1] {
                    let mut dot = 0i32;
                    for (t, &x) in qa.q.iter().enumerate() {
                        let d = b * BLOCK + t;
                        let k = (keys[(d / 4) * 4 * KEY_BLOCK + at * 4 + d % 4] ^ 0x80) as i8;
                        dot += i32::from(x) * i32::from(k);
                    }
                    s = (dot as f32).mul_add(qa.d * dk, s);
                }
            }
            scores[r * n + j] = s * scale;
        }
    }
}

/// `o[r] = sum_j fma(p[r][j] * d_vj, v_j)` over positions `j` in order, for each head `r`.
fn values_scalar(probs: &[f32], kv: &Kv<'_>, n: usize, o: &mut [f32]) {
    let hd = kv.hd;
    o.fill(0.0);
    for j in 0..n {
        let v = kv.value(j);
        for (r, out) in o.chunks_exact_mut(hd).enumerate() {
            let p = probs[r * n + j];
            for (b, (out, v)) in out
                .chunks_exact_mut(BLOCK)
                .zip(v.chunks_exact(BLOCK))
                .enumerate()
            {
                let w = p * kv.value_scale(j, b);
                for (od, &vd) in out.iter_mut().zip(v) {
                    *od = w.mul_add(f32::from(vd), *od);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 scores (sixteen positions to a vector, `vpdpbusd` for the integer dot
    //! products) and weighted values (sixteen dimensions to a vector): the reference's
    //! operations.

    use super::{ActBlock, Ahead, BLOCK, KEY_BLOCK, Kv};
    use bytemuck::cast;
    use std::arch::x86_64::*;

    /// Ask for the cache lines of `x` ahead of their use (a hint: no result changes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    fn prefetch_lines<T>(x: &[T]) {
        let at = x.as_ptr().cast::<i8>();
        for line in (0..std::mem::size_of_val(x)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line));
        }
    }

    /// Lines of the next cache ([`Ahead`]) asked for per block of sixteen positions in the
    /// scores and per position in the weighted values: about the whole cache of an equally long
    /// sequence by the end of one attention (a decoded row of SmolLM2 at 170 positions: 33
    /// key blocks and 510 value rows for about 1,160 lines). Eight streams, `--example streams
    /// 8 128`, against nothing asked for: see BENCHMARKS.md, "Session 19".
    const AHEAD_PER_KEY_BLOCK: usize = 4;
    const AHEAD_PER_POSITION: usize = 2;

    /// Ask for the next lines of the cache after this one into L2 (a hint: no result changes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    fn ask_ahead(ahead: &mut Ahead, lines: usize) {
        ahead.take(lines, |at| {
            _mm_prefetch::<_MM_HINT_T1>(std::ptr::without_provenance::<i8>(at));
        });
    }

    /// [`super::residuals`], sixteen values to a vector: the same product and difference.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn residuals(xs: &[[f32; BLOCK]], hi: &[ActBlock], outs: &mut [[f32; BLOCK]]) {
        for ((o, x), b) in outs.iter_mut().zip(xs).zip(hi) {
            let d = _mm512_set1_ps(b.d);
            let q: [__m128i; 2] = cast(b.q);
            let x: [__m512; 2] = cast(*x);
            let r: [__m512; 2] = std::array::from_fn(|h| {
                let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q[h]));
                _mm512_sub_ps(x[h], _mm512_mul_ps(q, d))
            });
            *o = cast(r);
        }
    }

    /// Heads computed together (each cached vector loaded once for all of them); more heads
    /// per key-value head are taken this many at a time.
    const HEADS: usize = 3;

    /// `x[i] * scale` rounded to f16 (to nearest, ties to even, as `half` rounds), as f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn round_to_f16(x: &mut [f32], scale: f32) {
        let sc = _mm512_set1_ps(scale);
        let (chunks, _) = x.as_chunks_mut::<16>();
        for c in chunks {
            let p = _mm512_mul_ps(cast(*c), sc);
            *c = cast(_mm512_cvtph_ps(
                _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p),
            ));
        }
    }

    /// The softmax and the weighted values of one query row's heads ([`softmax`], then
    /// [`weighted_values`]). Where the values take whole groups (SmolLM2's case), the
    /// probabilities' rounding to f16 (`p = f16(e * (1 / sum))`) is left to the values'
    /// weights, which compute each sixteen of them once anyway: the same numbers, without a
    /// pass that stored and reloaded every probability.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) fn softmax_values(
        scores: &mut [f32],
        kv: &Kv<'_>,
        n: usize,
        o: &mut [f32],
        ahead: &mut Ahead,
    ) {
        /// The most heads per key-value head whose inverse sums are kept on the stack.
        const MOST: usize = 32;
        let rep = o.len() / kv.hd.max(1);
        if values_take_whole(kv, rep) && rep <= MOST {
            let mut inv = [0f32; MOST];
            softmax(scores, n, Some(&mut inv[..rep]));
            values_whole_dispatch(scores, kv, n, o, ahead, Some(&inv[..rep]));
        } else {
            softmax(scores, n, None);
            weighted_values(scores, kv, n, o, ahead);
        }
    }

    /// The reference softmax ([`super::softmax`]) with the same operations in the same order
    /// for each head: the maximum (exact in any order) over vectors, the sums of up to three
    /// heads as interleaved chains (each still in position order), the rounding to f16 over
    /// vectors.
    ///
    /// With `inv`, each head's `1 / sum` goes into it and the exponentials are left unrounded
    /// (for [`values_whole`] to round).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn softmax(scores: &mut [f32], n: usize, mut inv: Option<&mut [f32]>) {
        let ns = padded(n);
        for (g, group) in scores.chunks_mut(HEADS * ns).enumerate() {
            let h = group.len() / ns;
            for s in group.chunks_exact_mut(ns) {
                // Whole vectors only: the row's padding holds minus infinity (see
                // [`padded`]), which changes no maximum and whose exponential is zero.
                let (s, _) = s.as_chunks_mut::<16>();
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in s.iter() {
                    // A NaN score is passed over, as `f32::max` passes it over.
                    m = _mm512_max_ps(cast(*c), m);
                }
                // Sixteen at a time ([`crate::exp::exp16`], the same bits as `exp`).
                let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
                for c in s.iter_mut() {
                    *c = cast(crate::exp::exp16(_mm512_sub_ps(cast(*c), m)));
                }
            }
            let mut sums = [0f32; HEADS];
            if group.len() == HEADS * ns {
                // A whole group (SmolLM2's case): the three chains without a per-head branch.
                const { assert!(HEADS == 3, "one chain per head of a group") };
                let (a, rest) = group.split_at(ns);
                let (b, c) = rest.split_at(ns);
                for ((x, y), z) in a[..n].iter().zip(&b[..n]).zip(&c[..n]) {
                    sums[0] += x;
                    sums[1] += y;
                    sums[2] += z;
                }
            } else {
                for j in 0..n {
                    for (r, sum) in sums.iter_mut().enumerate().take(h) {
                        *sum += group[r * ns + j];
                    }
                }
            }
            for (r, (s, sum)) in group.chunks_exact_mut(ns).zip(sums).enumerate() {
                match inv.as_deref_mut().and_then(|i| i.get_mut(g * HEADS + r)) {
                    Some(i) => *i = 1.0 / sum,
                    None => round_to_f16(s, 1.0 / sum),
                }
            }
        }
    }

    /// Sixteen positions' scores at a time for up to three heads: per 32-dimension block,
    /// eight `vpdpbusd` (keys as `k + 128`, four dimensions of the sixteen positions to a
    /// vector, against the query's four bytes broadcast) and the query's `-128 * sum(q)`
    /// correction give the exact integer dot products; then the block's `fma` and the scale.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) fn scores(
        qb: &[ActBlock],
        ql: &[ActBlock],
        kv: &Kv<'_>,
        n: usize,
        scale: f32,
        scores: &mut [f32],
        ahead: &mut Ahead,
    ) {
        let nb = kv.nb;
        if qb.len().is_multiple_of(HEADS * nb) && ql.len() == qb.len() {
            scores_whole(qb, ql, kv, n, scale, scores, ahead);
            return;
        }
        let ns = padded(n);
        let sc = _mm512_set1_ps(scale);
        let blocks = n.div_ceil(KEY_BLOCK);
        for pb in 0..blocks {
            let keys = kv.key_block(pb);
            let key_scales = kv.key_scales(pb);
            if pb + 2 < blocks {
                prefetch_lines(kv.key_block(pb + 2));
            }
            let count = (n - pb * KEY_BLOCK).min(KEY_BLOCK);
            ask_ahead(ahead, AHEAD_PER_KEY_BLOCK);
            for (g, (group, lows)) in qb.chunks(HEADS * nb).zip(ql.chunks(HEADS * nb)).enumerate() {
                let h = group.len() / nb;
                let mut s = [_mm512_setzero_ps(); HEADS];
                for b in 0..nb {
                    let mut dots = [[_mm512_setzero_si512(); 2]; HEADS];
                    let kb = &keys[b * BLOCK * KEY_BLOCK..(b + 1) * BLOCK * KEY_BLOCK];
                    for (t, k) in kb.chunks_exact(64).enumerate() {
                        let k: [u8; 64] = k.try_into().unwrap_or([128; 64]);
                        let k: __m512i = cast(k);
                        for ((dot, q), l) in dots
                            .iter_mut()
                            .zip(group.chunks_exact(nb))
                            .zip(lows.chunks_exact(nb))
                            .take(h)
                        {
                            let x: [i32; 8] = cast(q[b].q);
                            let y: [i32; 8] = cast(l[b].q);
                            dot[0] = _mm512_dpbusd_epi32(dot[0], k, _mm512_set1_epi32(x[t]));
                            dot[1] = _mm512_dpbusd_epi32(dot[1], k, _mm512_set1_epi32(y[t]));
                        }
                    }
                    let ks: [f32; 16] = key_scales[b * KEY_BLOCK..(b + 1) * KEY_BLOCK]
                        .try_into()
                        .unwrap_or([0.0; 16]);
                    let ks: __m512 = cast(ks);
                    for (((s, dot), q), l) in s
                        .iter_mut()
                        .zip(dots)
                        .zip(group.chunks_exact(nb))
                        .zip(lows.chunks_exact(nb))
                        .take(h)
                    {
                        for (dot, qa) in dot.into_iter().zip([&q[b], &l[b]]) {
                            let exact = _mm512_add_epi32(dot, _mm512_set1_epi32(qa.offset));
                            let w = _mm512_mul_ps(_mm512_set1_ps(qa.d), ks);
                            *s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), w, *s);
                        }
                    }
                }
                for (r, s) in s.iter().take(h).enumerate() {
                    let v = _mm512_mul_ps(*s, sc);
                    let at = (g * HEADS + r) * ns + pb * KEY_BLOCK;
                    put_scores(&mut scores[at..at + KEY_BLOCK], v, count);
                }
            }
        }
    }

    /// [`scores`] where the heads come in whole groups of [`HEADS`] (SmolLM2's case): the same
    /// operations in the same order, each head's named by a constant, so that the sums stay
    /// in registers without the general case's per-head branches and reloads; each product's
    /// eight steps in two chains of four (integer sums: the same integers).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn scores_whole(
        qb: &[ActBlock],
        ql: &[ActBlock],
        kv: &Kv<'_>,
        n: usize,
        scale: f32,
        scores: &mut [f32],
        ahead: &mut Ahead,
    ) {
        let nb = kv.nb;
        let ns = padded(n);
        let sc = _mm512_set1_ps(scale);
        let blocks = n.div_ceil(KEY_BLOCK);
        let zero = _mm512_setzero_si512();
        for pb in 0..blocks {
            let keys = kv.key_block(pb);
            let key_scales = kv.key_scales(pb);
            if pb + 2 < blocks {
                prefetch_lines(kv.key_block(pb + 2));
            }
            let count = (n - pb * KEY_BLOCK).min(KEY_BLOCK);
            ask_ahead(ahead, AHEAD_PER_KEY_BLOCK);
            for (g, (group, lows)) in qb
                .chunks_exact(HEADS * nb)
                .zip(ql.chunks_exact(HEADS * nb))
                .enumerate()
            {
                let mut s = [_mm512_setzero_ps(); HEADS];
                for b in 0..nb {
                    let q: [&ActBlock; HEADS] = std::array::from_fn(|r| &group[r * nb + b]);
                    let l: [&ActBlock; HEADS] = std::array::from_fn(|r| &lows[r * nb + b]);
                    let x: [[i32; 8]; HEADS] = q.map(|a| cast(a.q));
                    let y: [[i32; 8]; HEADS] = l.map(|a| cast(a.q));
                    let kb = &keys[b * BLOCK * KEY_BLOCK..(b + 1) * BLOCK * KEY_BLOCK];
                    let (kb, _) = kb.as_chunks::<64>();
                    // Dimensions 0-15 and 16-31 of the block in two chains each.
                    let mut dots = [[[zero; 2]; 2]; HEADS];
                    for (t, k) in kb.iter().take(BLOCK / 4).enumerate() {
                        let k: __m512i = cast(*k);
                        let c = t % 2;
                        for r in 0..HEADS {
                            dots[r][0][c] =
                                _mm512_dpbusd_epi32(dots[r][0][c], k, _mm512_set1_epi32(x[r][t]));
                            dots[r][1][c] =
                                _mm512_dpbusd_epi32(dots[r][1][c], k, _mm512_set1_epi32(y[r][t]));
                        }
                    }
                    let ks: [f32; 16] = key_scales[b * KEY_BLOCK..(b + 1) * KEY_BLOCK]
                        .try_into()
                        .unwrap_or([0.0; 16]);
                    let ks: __m512 = cast(ks);
                    for r in 0..HEADS {
                        for (dot, qa) in dots[r].into_iter().zip([q[r], l[r]]) {
                            let exact = _mm512_add_epi32(
                                _mm512_add_epi32(dot[0], dot[1]),
                                _mm512_set1_epi32(qa.offset),
                            );
                            let w = _mm512_mul_ps(_mm512_set1_ps(qa.d), ks);
                            s[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), w, s[r]);
                        }
                    }
                }
                for (r, s) in s.iter().enumerate() {
                    let v = _mm512_mul_ps(*s, sc);
                    let at = (g * HEADS + r) * ns + pb * KEY_BLOCK;
                    put_scores(&mut scores[at..at + KEY_BLOCK], v, count);
                }
            }
        }
    }

    /// A block's scores into `out` (a whole block of sixteen, one store): the first `count`
    /// lanes of `v` and minus infinity after them (a row's padding, see [`padded`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    fn put_scores(out: &mut [f32], v: __m512, count: usize) {
        let keep: __mmask16 = if count >= KEY_BLOCK {
            u16::MAX
        } else {
            (1u16 << count) - 1
        };
        let v = _mm512_mask_blend_ps(keep, _mm512_set1_ps(f32::NEG_INFINITY), v);
        if let Ok(whole) = <&mut [f32; 16]>::try_from(out) {
            *whole = cast(v);
        }
    }

    /// The length of a row of scores in the SIMD kernels' buffer: `n` positions rounded up to
    /// whole blocks of sixteen, the padding minus infinity (so its exponentials and
    /// probabilities are zero and it changes no maximum), so that every vector of a row is
    /// whole. Tails of 8, 4, 2 and 1 copied into a vector on the stack and loaded as one
    /// stalled on the stores' forwarding (the softmax's and the weights' last blocks).
    pub(super) fn padded(n: usize) -> usize {
        n.next_multiple_of(KEY_BLOCK)
    }

    /// Sixteen signed bytes as f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    fn widen(x: [i8; 16]) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(cast::<[i8; 16], __m128i>(x)))
    }

    /// Up to three heads' weighted sums, two 32-dimension blocks (four vectors) at a time:
    /// twelve independent sums, each value vector widened once for all the heads.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn weighted_values(probs: &[f32], kv: &Kv<'_>, n: usize, o: &mut [f32], ahead: &mut Ahead) {
        let (hd, nb) = (kv.hd, kv.nb);
        let ns = padded(n);
        let rep = o.len() / hd;
        if values_take_whole(kv, rep) {
            values_whole_dispatch(probs, kv, n, o, ahead, None);
            return;
        }
        for g0 in (0..rep).step_by(HEADS) {
            let h = (rep - g0).min(HEADS);
            let p: [&[f32]; HEADS] =
                std::array::from_fn(|r| probs.get((g0 + r) * ns..(g0 + r) * ns + n).unwrap_or(&[]));
            for b0 in (0..nb).step_by(2) {
                let parts = (nb - b0).min(2);
                let mut acc = [[_mm512_setzero_ps(); 4]; HEADS];
                for j in 0..n {
                    if j + 8 < n {
                        prefetch_lines(&kv.value(j + 8)[b0 * BLOCK..(b0 + parts) * BLOCK]);
                    }
                    ask_ahead(ahead, AHEAD_PER_POSITION);
                    let v = kv.value(j);
                    let vecs: [__m512; 4] = std::array::from_fn(|t| {
                        if t < 2 * parts {
                            let at = b0 * BLOCK + t * 16;
                            widen(v[at..at + 16].try_into().unwrap_or([0; 16]))
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    for (a, p) in acc.iter_mut().zip(p).take(h) {
                        for (half, pair) in a.chunks_exact_mut(2).enumerate().take(parts) {
                            let w = _mm512_set1_ps(p[j] * kv.value_scale(j, b0 + half));
                            for (a, v) in pair.iter_mut().zip(&vecs[2 * half..]) {
                                *a = _mm512_fmadd_ps(w, *v, *a);
                            }
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(h) {
                    let out = &mut o[(g0 + r) * hd + b0 * BLOCK..];
                    for (t, a) in a.iter().enumerate().take(2 * parts) {
                        out[t * 16..t * 16 + 16].copy_from_slice(&cast::<__m512, [f32; 16]>(*a));
                    }
                }
            }
        }
    }

    /// Whether [`values_whole`] takes `rep` heads of this cache's shape.
    fn values_take_whole(kv: &Kv<'_>, rep: usize) -> bool {
        kv.nb.is_multiple_of(2) && rep.is_multiple_of(HEADS)
    }

    /// [`values_whole`], asking for `ahead`'s lines where it has any left.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn values_whole_dispatch(
        probs: &[f32],
        kv: &Kv<'_>,
        n: usize,
        o: &mut [f32],
        ahead: &mut Ahead,
        inv: Option<&[f32]>,
    ) {
        if ahead.is_done() {
            values_whole::<false>(probs, kv, n, o, ahead, inv);
        } else {
            values_whole::<true>(probs, kv, n, o, ahead, inv);
        }
    }

    /// [`weighted_values`] where the heads come in whole groups of [`HEADS`] and the blocks in
    /// pairs (SmolLM2's case): the same sums in the same order, without the general case's
    /// per-position branches and bounds.
    ///
    /// Each head's weights `p_j * d_vjb` are computed first, sixteen positions at a time (the
    /// scales of sixteen positions lie together, see [`super::LayerCache`]), into
    /// [`WEIGHTS`]; the positions' loop then takes them as broadcast operands of its fused
    /// adds from memory. Computed in that loop, each was a scalar multiply and a broadcast, on
    /// the same ports as the fused adds: six of each per position beside its twelve adds.
    ///
    /// `ASK`: whether `ahead` has lines left to ask for (a scoring pass's attention has none,
    /// and checking at every position cost about 3% of its attention). `inv`: each head's
    /// `1 / sum` where [`softmax`] left its probabilities' rounding to here (`probs` then holds
    /// the exponentials): a head with an entry gets `p = f16(e * inv)`, exactly the softmax's
    /// rounding; a head without one takes `probs` as they are.
    #[allow(
        clippy::needless_range_loop,
        reason = "a position indexes its values (strided) and six rows of weights alike"
    )]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn values_whole<const ASK: bool>(
        probs: &[f32],
        kv: &Kv<'_>,
        n: usize,
        o: &mut [f32],
        ahead: &mut Ahead,
        inv: Option<&[f32]>,
    ) {
        let (hd, nb) = (kv.hd, kv.nb);
        let kv_heads = kv.cache.shape.kv_heads;
        let stride = kv_heads * hd;
        let values = &kv.cache.values[kv.kvh * hd..];
        let padded = padded(n);
        WEIGHTS.with_borrow_mut(|weights| {
            if weights.len() < padded / KEY_BLOCK * W_BLOCK {
                weights.resize(padded / KEY_BLOCK * W_BLOCK, 0.0);
            }
            for (g, (og, pg)) in o
                .chunks_exact_mut(HEADS * hd)
                .zip(probs.chunks_exact(HEADS * padded))
                .enumerate()
            {
                for b0 in (0..nb).step_by(2) {
                    // weights[pb * W_BLOCK + (2 * r + half) * 16 + t] = p_rj * d_vj(b0 + half),
                    // j = 16 pb + t: a block's six rows of weights together.
                    for pb in 0..padded / KEY_BLOCK {
                        let scales = kv.value_scales(pb);
                        let d: [__m512; 2] = std::array::from_fn(|half| {
                            let at = (b0 + half) * KEY_BLOCK;
                            let d: [f32; KEY_BLOCK] = scales[at..at + KEY_BLOCK]
                                .try_into()
                                .unwrap_or([0.0; KEY_BLOCK]);
                            cast(d)
                        });
                        for r in 0..HEADS {
                            let from = r * padded + pb * KEY_BLOCK;
                            let p: [f32; KEY_BLOCK] = pg
                                .get(from..from + KEY_BLOCK)
                                .and_then(|p| p.try_into().ok())
                                .unwrap_or([0.0; KEY_BLOCK]);
                            let mut p: __m512 = cast(p);
                            // The softmax's rounding, where it was left to here.
                            if let Some(&i) = inv.and_then(|i| i.get(g * HEADS + r)) {
                                p = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
                                    _mm512_mul_ps(p, _mm512_set1_ps(i)),
                                ));
                            }
                            for (half, d) in d.iter().enumerate() {
                                let at = pb * W_BLOCK + (2 * r + half) * KEY_BLOCK;
                                let w: [f32; KEY_BLOCK] = cast(_mm512_mul_ps(p, *d));
                                if let Some(out) = weights.get_mut(at..at + KEY_BLOCK) {
                                    out.copy_from_slice(&w);
                                }
                            }
                        }
                    }
                    let mut acc = [[_mm512_setzero_ps(); 4]; HEADS];
                    let (blocks, _) =
                        weights[..padded / KEY_BLOCK * W_BLOCK].as_chunks::<W_BLOCK>();
                    for (pb, wb) in blocks.iter().enumerate() {
                        for t in 0..(n - pb * KEY_BLOCK).min(KEY_BLOCK) {
                            let j = pb * KEY_BLOCK + t;
                            // Each weight at a constant offset from one base (no bounds checks:
                            // `t < 16`).
                            let t = t % KEY_BLOCK;
                            let at = j * stride + b0 * BLOCK;
                            if let Some(near) = values.get(at + 8 * stride..at + 8 * stride + 64) {
                                prefetch_lines(near);
                            }
                            if ASK {
                                ask_ahead(ahead, AHEAD_PER_POSITION);
                            }
                            let v: [i8; 64] = values[at..at + 64].try_into().unwrap_or([0; 64]);
                            let vecs: [__m512; 4] = std::array::from_fn(|t| {
                                widen(v[t * 16..t * 16 + 16].try_into().unwrap_or([0; 16]))
                            });
                            for (r, a) in acc.iter_mut().enumerate() {
                                let (w0, w1) = (
                                    _mm512_set1_ps(wb[2 * r * KEY_BLOCK + t]),
                                    _mm512_set1_ps(wb[(2 * r + 1) * KEY_BLOCK + t]),
                                );
                                a[0] = _mm512_fmadd_ps(w0, vecs[0], a[0]);
                                a[1] = _mm512_fmadd_ps(w0, vecs[1], a[1]);
                                a[2] = _mm512_fmadd_ps(w1, vecs[2], a[2]);
                                a[3] = _mm512_fmadd_ps(w1, vecs[3], a[3]);
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        let out = &mut og[r * hd + b0 * BLOCK..];
                        for (t, a) in a.iter().enumerate() {
                            out[t * 16..t * 16 + 16]
                                .copy_from_slice(&cast::<__m512, [f32; 16]>(*a));
                        }
                    }
                }
            }
        });
    }

    /// [`values_whole`]'s weights of one block of sixteen positions: six rows (three heads,
    /// two dimension blocks) of sixteen.
    const W_BLOCK: usize = 2 * HEADS * KEY_BLOCK;

    thread_local! {
        /// [`values_whole`]'s weights, kept per thread.
        static WEIGHTS: std::cell::RefCell<Vec<f32>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's attention.
    const SMOLLM: Shape = Shape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
    };

    fn numbers(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A cache of `total` positions of random keys and values.
    fn filled(shape: Shape, total: usize, seed: u64) -> (LayerCache, Vec<f32>) {
        let rows = numbers(total * 2 * shape.width(), seed);
        let mut cache = LayerCache::new(shape);
        cache.push(&rows);
        (cache, rows)
    }

    /// `x` through the cache's quantization: what the cache holds, as f32.
    fn quantized(x: &[f32]) -> Vec<f32> {
        let mut q = vec![ZERO_ACT; x.len() / BLOCK];
        quantize_into(x, &mut q);
        q.iter()
            .flat_map(|b| b.q.iter().map(move |&v| f32::from(v) * b.d))
            .collect()
    }

    #[test]
    fn positions_appended_in_runs_are_laid_out_as_one_by_one() {
        let shape = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 64,
        };
        let total = 70;
        let (whole, rows) = filled(shape, total, 11);
        let w = 2 * shape.width();
        let mut one_by_one = LayerCache::new(shape);
        for pos in 0..total {
            one_by_one.push(&rows[pos * w..(pos + 1) * w]);
        }
        for cuts in [vec![0, 5, 21, 22, 53, 70], vec![0, 16, 32, 70]] {
            let mut cache = LayerCache::new(shape);
            for run in cuts.windows(2) {
                cache.push(&rows[run[0] * w..run[1] * w]);
            }
            for c in [&cache, &one_by_one] {
                assert_eq!(c.keys, whole.keys, "runs {cuts:?}");
                assert_eq!(c.key_scales, whole.key_scales);
                assert_eq!(c.values, whole.values);
                assert_eq!(c.value_scales, whole.value_scales);
                assert_eq!(c.len(), total);
            }
        }
        // A prefix continued with the same rows is the whole again, and so is a cache cut
        // back after other rows were appended.
        let other = numbers(total * w, 99);
        for n in [0, 1, 15, 16, 17, 40, 70] {
            let mut c = whole.prefix(n);
            assert_eq!(c.len(), n);
            c.push(&rows[n * w..]);
            let mut cut = whole.prefix(n);
            cut.push(&other[..(total - n) * w]);
            cut.truncate(n);
            assert_eq!(cut.len(), n);
            cut.push(&rows[n * w..]);
            for c in [&c, &cut] {
                assert_eq!(c.keys, whole.keys, "prefix {n}");
                assert_eq!(c.key_scales, whole.key_scales);
                assert_eq!(c.values, whole.values);
                assert_eq!(c.value_scales, whole.value_scales);
            }
        }
    }

    #[test]
    fn shapes_the_cache_cannot_hold_are_refused() {
        for (heads, kv_heads, head_dim) in [(6, 2, 12), (6, 4, 64), (0, 1, 64), (4, 2, 0)] {
            let shape = Shape {
                heads,
                kv_heads,
                head_dim,
            };
            assert!(shape.check().is_err(), "{shape:?}");
        }
        let ok = SMOLLM;
        assert!(ok.check().is_ok());
    }

    /// Against softmax attention in f64 over the quantized keys and values: the scores' only
    /// other error is the query's (16-bit) quantization, the outputs' the probabilities'
    /// rounding to f16.
    #[test]
    fn matches_a_straightforward_softmax_attention() {
        let shape = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 64,
        };
        let (start, seq) = (3, 5);
        let total = start + seq;
        let (hd, width) = (shape.head_dim, shape.width());
        let q = numbers(shape.heads * seq * hd, 1);
        let (cache, rows) = filled(shape, total, 2);
        let got = causal(&q, &cache, start, seq);
        let kq: Vec<Vec<f32>> = (0..total)
            .map(|j| quantized(&rows[j * 2 * width..j * 2 * width + width]))
            .collect();
        let vq: Vec<Vec<f32>> = (0..total)
            .map(|j| quantized(&rows[j * 2 * width + width..(j + 1) * 2 * width]))
            .collect();
        let mut worst = 0f64;
        for i in 0..seq {
            for h in 0..shape.heads {
                let kvh = h / 3;
                let qh = &q[(i * shape.heads + h) * hd..(i * shape.heads + h + 1) * hd];
                let s: Vec<f64> = (0..=start + i)
                    .map(|j| {
                        (0..hd)
                            .map(|d| f64::from(qh[d]) * f64::from(kq[j][kvh * hd + d]))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = e
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * f64::from(vq[j][kvh * hd + d]))
                        .sum::<f64>()
                        / z;
                    let g = f64::from(got[(i * shape.heads + h) * hd + d]);
                    worst = worst.max((g - want).abs());
                }
            }
        }
        // Probabilities in f16 (relative error 2^-11); values are at most 1.
        assert!(worst < 2e-3, "largest difference {worst}");
        assert!(worst > 0.0, "the comparison must see the quantization");
    }

    /// The SIMD scores and weighted sums (where the CPU runs them) give the reference's bits:
    /// uneven block ends, one and several blocks per head, a head group not a multiple of three.
    #[test]
    fn simd_attention_gives_the_reference_bits() {
        for (heads, kv_heads, hd, start, seq) in [
            (9, 3, 64, 37, 5),
            // Rows of 1 to 33 positions: blocks of sixteen partial, whole and more than one.
            (9, 3, 64, 0, 33),
            (6, 2, 96, 10, 4),
            (4, 2, 32, 3, 17),
            (2, 1, 96, 0, 1),
            (8, 2, 64, 20, 3),
        ] {
            let shape = Shape {
                heads,
                kv_heads,
                head_dim: hd,
            };
            let total = start + seq;
            let q = numbers(heads * seq * hd, 7);
            let (cache, _) = filled(shape, total, 8);
            let got = causal(&q, &cache, start, seq);
            let rep = heads / kv_heads;
            let scale = 1.0 / (hd as f32).sqrt();
            for i in 0..seq {
                for kvh in 0..kv_heads {
                    let kv = Kv {
                        cache: &cache,
                        kvh,
                        hd,
                        nb: shape.blocks(),
                    };
                    let n = start + i + 1;
                    let at = (i * heads + kvh * rep) * hd;
                    let (mut blocks, mut residual) = (Vec::new(), Vec::new());
                    let (hi, lo) =
                        quantize_query(&q[at..at + rep * hd], &mut blocks, &mut residual);
                    let mut scores = vec![0f32; rep * n];
                    scores_scalar(hi, lo, &kv, n, scale, &mut scores);
                    softmax(&mut scores, n);
                    let mut want = vec![1f32; rep * hd];
                    values_scalar(&scores, &kv, n, &mut want);
                    let same = want
                        .iter()
                        .zip(&got[at..at + rep * hd])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "hd {hd}, row {i}, kv head {kvh}");
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_numbers_alone_or_in_a_batch_and_on_any_thread_count() {
        let shape = SMOLLM;
        let seq = 40;
        let q = numbers(shape.heads * seq * shape.head_dim, 4);
        let (cache, _) = filled(shape, seq, 5);
        let batched = causal(&q, &cache, 0, seq);
        let row = shape.heads * shape.head_dim;
        for i in [0, 1, 17, 39] {
            let alone = causal(&q[i * row..(i + 1) * row], &cache, i, 1);
            assert_eq!(alone, batched[i * row..(i + 1) * row], "row {i}");
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| causal(&q, &cache, 0, seq)), batched);
            // A decoded row split per key-value head (as a pass whose sequences leave a
            // thread idle asks): the same numbers.
            for i in [17, 39] {
                let mut spread = Vec::new();
                pool.install(|| {
                    let q = &q[i * row..(i + 1) * row];
                    causal_into(q, &cache, i, 1, true, &mut Ahead::default(), &mut spread)
                });
                assert_eq!(spread, batched[i * row..(i + 1) * row], "row {i} spread");
            }
        }
    }

    #[test]
    fn asking_for_another_cache_meanwhile_changes_no_number_even_once_it_is_gone() {
        let shape = SMOLLM;
        let seq = 70;
        let q = numbers(shape.heads * seq * shape.head_dim, 6);
        let (cache, _) = filled(shape, seq, 7);
        let row = shape.heads * shape.head_dim;
        let (other, _) = filled(shape, 120, 8);
        let live = other.ahead();
        // The addresses of a cache that has since been freed: requests for them are hints
        // the processor may drop; nothing is read through them.
        let gone = filled(shape, 50, 9).0.ahead();
        for i in [0, 33, 69] {
            let q = &q[i * row..(i + 1) * row];
            let plain = causal(q, &cache, i, 1);
            for ahead in [live, gone] {
                let mut ahead = ahead;
                let mut out = Vec::new();
                causal_into(q, &cache, i, 1, false, &mut ahead, &mut out);
                let same = plain
                    .iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && plain.len() == out.len(), "row {i}");
            }
        }
        // The SIMD kernel asks as it goes: after one row's attention over 70 positions, 60
        // lines for its 5 key blocks (three key-value heads, 4 each) and 420 for its values
        // (70 positions, three heads, 2 each) of the other cache's 840 are asked for (its
        // value scales, like its key scales, in whole blocks of 16 positions).
        let mut total = 0;
        other.ahead().take(usize::MAX, |_| total += 1);
        assert_eq!(total, (24_576 + 3_072 + 23_040 + 3_072) / 64);
        let mut ahead = other.ahead();
        let mut out = Vec::new();
        causal_into(
            &q[69 * row..70 * row],
            &cache,
            69,
            1,
            false,
            &mut ahead,
            &mut out,
        );
        let mut left = 0;
        ahead.take(usize::MAX, |_| left += 1);
        // The features `attend_group`'s SIMD version is built for.
        #[cfg(target_arch = "x86_64")]
        let simd = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        if simd {
            assert_eq!(total - left, 480);
        } else {
            assert_eq!(left, total, "the other kernels ask for nothing");
        }
    }
}
