//! Causal attention over the key-value cache, computed the same way for every query row
//! however many rows are processed at once.
//!
//! Each output row `(i, head)` is computed by one thread (together with the other heads that
//! share its key-value head), in a fixed order: scores
//! `q . k_j / sqrt(head_dim)` (q rounded to f16 as llama.cpp does; an 8-lane dot product, lanes
//! summed in a fixed tree), a softmax over positions `0..=start + i` (maximum, then `exp` and
//! the sum in position order; probabilities rounded to f16 as llama.cpp does), and the weighted
//! sum of values in position order. Nothing depends on the batch: a position scored
//! in one pass of many tokens gets exactly the numbers it gets when decoded on its own, so
//! scoring reproduces generation bit for bit, and the thread count changes nothing.
#![allow(
    clippy::float_arithmetic,
    reason = "inference is not consensus-visible; the arithmetic is fixed-order and tested"
)]

use rayon::prelude::*;

/// Heads and their size.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Query heads.
    pub heads: usize,
    /// Key-value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// Work below this many multiply-adds runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 18;

/// Positions per block of the key cache (see [`push_keys`]).
pub const KEY_BLOCK: usize = 16;

/// Append the keys of positions `start..start + rows.len() / width` (each row
/// `kv_heads * head_dim` values, rounded to f16) to a key cache, which holds positions
/// `0..start` already. Keys are kept in blocks of [`KEY_BLOCK`] positions, each laid out
/// `[kv_head][dim][position in block]` (a block is allocated whole), so that the same dimension
/// of sixteen consecutive positions is one vector: the scores of sixteen positions are then
/// computed together, each in the order described in the module documentation. Values stay
/// `[position][kv_head][dim]`. Many rows (a prompt, a scored continuation) are written block by
/// block on rayon's threads.
pub fn push_keys(keys: &mut Vec<half::f16>, start: usize, shape: Shape, rows: &[f32]) {
    let width = shape.kv_heads * shape.head_dim;
    let seq = rows.len() / width.max(1);
    if seq == 0 {
        return;
    }
    let block = width * KEY_BLOCK;
    let end = start + seq;
    let need = end.div_ceil(KEY_BLOCK) * block;
    if keys.len() < need {
        keys.resize(need, half::f16::ZERO);
    }
    let first = start / KEY_BLOCK;
    keys[first * block..need]
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(b, chunk)| {
            let b = first + b;
            for pos in (b * KEY_BLOCK).max(start)..((b + 1) * KEY_BLOCK).min(end) {
                let row = &rows[(pos - start) * width..(pos - start + 1) * width];
                for (i, &v) in row.iter().enumerate() {
                    chunk[i * KEY_BLOCK + pos % KEY_BLOCK] = half::f16::from_f32(v);
                }
            }
        });
}

/// `q` holds `seq` query rows for positions `start..start + seq`, laid out `[row][head][dim]`;
/// `keys` holds positions `0..start + seq` as [`push_keys`] lays them out and `values` the same
/// positions `[position][kv_head][dim]`, both in f16 (the cache keeps them so; llama.cpp does
/// too). Returns the attention output laid out `[row][head][dim]`.
///
/// The query heads that share a key-value head are computed together (one item per row and
/// key-value head), so each cached value row is read and converted once for all of them; each
/// head's numbers are computed in the order described above, so every split gives the same bits
/// (`a_row_gets_the_same_numbers_alone_or_in_a_batch_and_on_any_thread_count`).
pub fn causal(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    shape: Shape,
    start: usize,
    seq: usize,
) -> Vec<f32> {
    // The query rounded to f16 once, as llama.cpp multiplies it with its f16 keys.
    let mut q16 = q.to_vec();
    round_to_f16(&mut q16);
    let mut out = Vec::new();
    causal_into(&q16, keys, values, shape, start, seq, &mut out);
    out
}

/// [`causal`] of a query already rounded to f16 ([`round_to_f16`]), into `out` (its contents
/// replaced, its allocation reused: every value is written, each output row by the task that
/// computes it).
pub fn causal_into(
    q16: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    shape: Shape,
    start: usize,
    seq: usize,
    out: &mut Vec<f32>,
) {
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
    let one = |item: usize, o: &mut [f32]| {
        // The reference kernel adds into its output.
        o.fill(0.0);
        let (i, kvh) = (item / kv_heads, item % kv_heads);
        let first = item * group;
        let cache = Kv {
            keys,
            values,
            kv_heads,
            kvh,
            hd,
        };
        attend_group(&q16[first..first + group], &cache, start + i, scale, o);
    };
    let work = seq * heads * (start + seq) * hd;
    if work >= PARALLEL_MIN {
        out.par_chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o));
    } else {
        out.chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o));
    }
}

/// One key-value head's cached keys and values.
struct Kv<'a> {
    keys: &'a [half::f16],
    values: &'a [half::f16],
    kv_heads: usize,
    kvh: usize,
    hd: usize,
}

impl Kv<'_> {
    /// This head's keys in block `b`: `[dim][position in block]`.
    fn key_block(&self, b: usize) -> &[half::f16] {
        let at = (b * self.kv_heads + self.kvh) * self.hd * KEY_BLOCK;
        &self.keys[at..at + self.hd * KEY_BLOCK]
    }

    /// This head's values at position `j`.
    fn value(&self, j: usize) -> &[half::f16] {
        let at = (j * self.kv_heads + self.kvh) * self.hd;
        &self.values[at..at + self.hd]
    }
}

/// One query row of the heads sharing one key-value head (`qrows`: `rep` heads of `hd`)
/// against positions `0..=last`. Compiled for AVX-512 and AVX2 besides the baseline; every
/// version does the same operations in the same order.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn attend_group(qrows: &[f32], kv: &Kv<'_>, last: usize, scale: f32, o: &mut [f32]) {
    let hd = kv.hd;
    let rep = qrows.len() / hd;
    let n = last + 1;
    // Scores, head by head: scores[r * n + j], every one written before it is read, in this
    // thread's buffer (nothing here calls back into the pool, so no other item can take it
    // over halfway): a decoding step had allocated and cleared one per row, key-value head
    // and layer.
    SCORES.with_borrow_mut(|buffer| {
        if buffer.len() < rep * n {
            buffer.resize(rep * n, 0.0);
        }
        let scores = &mut buffer[..rep * n];
        // Then the softmax and the weighted sums of values, in position order.
        multiversion::target::match_target! {
            "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => {
                x86::scores(qrows, kv, n, scale, scores);
                x86::softmax(scores, n);
                x86::weighted_values(scores, kv, n, o);
            },
            _ => {
                scores_scalar(qrows, kv, n, scale, scores);
                softmax(scores, n);
                values_scalar(scores, kv, n, o);
            },
        }
    });
}

thread_local! {
    /// [`attend_group`]'s scores, kept per thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every value of `x` rounded to f16 (to nearest, ties to even), as f32, in place.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c"))]
pub fn round_to_f16(x: &mut [f32]) {
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => x86::round_to_f16(x, 1.0),
        _ => x.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
    }
}

/// Each head's softmax (rows of `n` scores): maximum, exponentials, their sum in position
/// order; probabilities rounded to f16 as llama.cpp feeds them to its f16 product with the
/// values.
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

/// The scores of positions `0..n` for each head of `qrows`, the reference way: per position and
/// head, a dot product in eight lanes (lane `l` sums dimensions `l, l + 8, ...` in order, products
/// then sums, unfused), the lanes summed in a fixed tree, the dimensions past the last eight
/// summed apart and added last, times `scale`.
fn scores_scalar(qrows: &[f32], kv: &Kv<'_>, n: usize, scale: f32, scores: &mut [f32]) {
    let hd = kv.hd;
    let lanes = hd / 8 * 8;
    for j in 0..n {
        let k = kv.key_block(j / KEY_BLOCK);
        let at = j % KEY_BLOCK;
        for (r, q) in qrows.chunks_exact(hd).enumerate() {
            let mut acc = [0f32; 8];
            for d in 0..lanes {
                acc[d % 8] += q[d] * k[d * KEY_BLOCK + at].to_f32();
            }
            let mut tail = 0f32;
            for d in lanes..hd {
                tail += q[d] * k[d * KEY_BLOCK + at].to_f32();
            }
            let tree =
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            scores[r * n + j] = (tree + tail) * scale;
        }
    }
}

/// `o[r] += p[r][j] * v[j]` over positions `j` in order, for each head `r`.
fn values_scalar(probs: &[f32], kv: &Kv<'_>, n: usize, o: &mut [f32]) {
    let hd = kv.hd;
    for j in 0..n {
        let v = kv.value(j);
        for (r, out) in o.chunks_exact_mut(hd).enumerate() {
            let w = probs[r * n + j];
            for (od, vd) in out.iter_mut().zip(v) {
                *od += w * vd.to_f32();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 scores and weighted values: the reference's operations, sixteen positions
    //! (scores) or sixteen dimensions (values) to a vector.

    use super::{KEY_BLOCK, Kv};
    use bytemuck::cast;
    use half::slice::HalfFloatSliceExt;
    use std::arch::x86_64::*;

    /// Ask for the cache lines of `x` ahead of their use (a hint: no result changes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    fn prefetch_lines(x: &[half::f16]) {
        let at = x.as_ptr().cast::<i8>();
        for line in (0..std::mem::size_of_val(x)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line));
        }
    }

    /// Sixteen f16 values as f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    fn load16(x: &[half::f16]) -> __m512 {
        let bits: [u16; 16] = x.reinterpret_cast()[..16].try_into().unwrap_or([0; 16]);
        _mm512_cvtph_ps(cast::<[u16; 16], __m256i>(bits))
    }

    /// Heads computed together (each cached vector converted once for all of them); more
    /// heads per key-value head are taken this many at a time.
    const HEADS: usize = 3;

    /// `x[i] * scale` rounded to f16 (to nearest, ties to even, as `half` rounds), as f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn round_to_f16(x: &mut [f32], scale: f32) {
        let sc = _mm512_set1_ps(scale);
        let round = |v: [f32; 16]| -> [f32; 16] {
            let p = _mm512_mul_ps(cast(v), sc);
            cast(_mm512_cvtph_ps(
                _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p),
            ))
        };
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            let v: [f32; 16] = (&*c).try_into().unwrap_or([0.0; 16]);
            c.copy_from_slice(&round(v));
        }
        let tail = chunks.into_remainder();
        let mut v = [0f32; 16];
        v[..tail.len()].copy_from_slice(tail);
        let len = tail.len();
        tail.copy_from_slice(&round(v)[..len]);
    }

    /// The reference softmax ([`super::softmax`]) with the same operations in the same order
    /// for each head: the maximum (exact in any order) over vectors, the sums of up to three
    /// heads as interleaved chains (each still in position order), the rounding to f16 over
    /// vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn softmax(scores: &mut [f32], n: usize) {
        for group in scores.chunks_mut(HEADS * n) {
            let h = group.len() / n;
            for s in group.chunks_exact_mut(n) {
                let mut chunks = s.chunks_exact(16);
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in &mut chunks {
                    let v: [f32; 16] = c.try_into().unwrap_or([f32::NEG_INFINITY; 16]);
                    // A NaN score is passed over, as `f32::max` passes it over.
                    m = _mm512_max_ps(cast(v), m);
                }
                let max = chunks
                    .remainder()
                    .iter()
                    .fold(_mm512_reduce_max_ps(m), |a, &b| a.max(b));
                for x in s.iter_mut() {
                    *x = crate::exp::exp(*x - max);
                }
            }
            let mut sums = [0f32; HEADS];
            for j in 0..n {
                for (r, sum) in sums.iter_mut().enumerate().take(h) {
                    *sum += group[r * n + j];
                }
            }
            for (s, sum) in group.chunks_exact_mut(n).zip(sums) {
                round_to_f16(s, 1.0 / sum);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn scores(qrows: &[f32], kv: &Kv<'_>, n: usize, scale: f32, scores: &mut [f32]) {
        let hd = kv.hd;
        let lanes = hd / 8;
        let sc = _mm512_set1_ps(scale);
        let blocks = n.div_ceil(KEY_BLOCK);
        for b in 0..blocks {
            let k = kv.key_block(b);
            if b + 2 < blocks {
                prefetch_lines(kv.key_block(b + 2));
            }
            let count = (n - b * KEY_BLOCK).min(KEY_BLOCK);
            for (g, group) in qrows.chunks(HEADS * hd).enumerate() {
                let h = group.len() / hd;
                let mut acc = [[_mm512_setzero_ps(); 8]; HEADS];
                for c in 0..lanes {
                    for l in 0..8 {
                        let d = c * 8 + l;
                        let kd = load16(&k[d * KEY_BLOCK..]);
                        for (a, q) in acc.iter_mut().zip(group.chunks_exact(hd)) {
                            a[l] = _mm512_add_ps(a[l], _mm512_mul_ps(_mm512_set1_ps(q[d]), kd));
                        }
                    }
                }
                let mut tail = [_mm512_setzero_ps(); HEADS];
                for d in lanes * 8..hd {
                    let kd = load16(&k[d * KEY_BLOCK..]);
                    for (t, q) in tail.iter_mut().zip(group.chunks_exact(hd)) {
                        *t = _mm512_add_ps(*t, _mm512_mul_ps(_mm512_set1_ps(q[d]), kd));
                    }
                }
                for (r, (acc, tail)) in acc.iter().zip(tail).take(h).enumerate() {
                    let tree = _mm512_add_ps(
                        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])),
                        _mm512_add_ps(_mm512_add_ps(acc[4], acc[5]), _mm512_add_ps(acc[6], acc[7])),
                    );
                    let s: [f32; 16] = cast(_mm512_mul_ps(_mm512_add_ps(tree, tail), sc));
                    let at = (g * HEADS + r) * n + b * KEY_BLOCK;
                    scores[at..at + count].copy_from_slice(&s[..count]);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn weighted_values(probs: &[f32], kv: &Kv<'_>, n: usize, o: &mut [f32]) {
        let hd = kv.hd;
        if !hd.is_multiple_of(16) {
            super::values_scalar(probs, kv, n, o);
            return;
        }
        let rep = o.len() / hd;
        if hd.is_multiple_of(64) && rep.is_multiple_of(HEADS) {
            values_whole(probs, kv, n, o);
            return;
        }
        for g0 in (0..rep).step_by(HEADS) {
            let h = (rep - g0).min(HEADS);
            // Four vectors of dimensions at a time for up to three heads: twelve independent
            // sums, each value vector converted once for all the heads.
            for c4 in 0..hd.div_ceil(64) {
                let parts = (hd - c4 * 64).min(64) / 16;
                let mut acc = [[_mm512_setzero_ps(); 4]; HEADS];
                for j in 0..n {
                    let v = &kv.value(j)[c4 * 64..];
                    let vs: [__m512; 4] = std::array::from_fn(|t| {
                        if t < parts {
                            load16(&v[t * 16..])
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    for (r, a) in acc.iter_mut().enumerate().take(h) {
                        let wv = _mm512_set1_ps(probs[(g0 + r) * n + j]);
                        for (a, v) in a.iter_mut().zip(vs).take(parts) {
                            *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, v));
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(h) {
                    let out = &mut o[(g0 + r) * hd + c4 * 64..];
                    for (t, a) in a.iter().enumerate().take(parts) {
                        out[t * 16..t * 16 + 16].copy_from_slice(&cast::<__m512, [f32; 16]>(*a));
                    }
                }
            }
        }
    }

    /// [`weighted_values`] where the heads come in whole groups of [`HEADS`] and the head size
    /// in whole groups of 64 (SmolLM2's case): the same sums in the same order, without the
    /// general case's per-position branches.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn values_whole(probs: &[f32], kv: &Kv<'_>, n: usize, o: &mut [f32]) {
        let hd = kv.hd;
        let stride = kv.kv_heads * hd;
        let values = &kv.values[kv.kvh * hd..];
        for (og, pg) in o
            .chunks_exact_mut(HEADS * hd)
            .zip(probs.chunks_exact(HEADS * n))
        {
            let p: [&[f32]; HEADS] = std::array::from_fn(|r| &pg[r * n..(r + 1) * n]);
            for c4 in 0..hd / 64 {
                let mut acc = [[_mm512_setzero_ps(); 4]; HEADS];
                for j in 0..n {
                    if let Some(ahead) =
                        values.get((j + 8) * stride + c4 * 64..(j + 8) * stride + c4 * 64 + 64)
                    {
                        prefetch_lines(ahead);
                    }
                    let v = &values[j * stride + c4 * 64..j * stride + c4 * 64 + 64];
                    let vs: [__m512; 4] = std::array::from_fn(|t| load16(&v[t * 16..]));
                    for (a, p) in acc.iter_mut().zip(p) {
                        let wv = _mm512_set1_ps(p[j]);
                        for (a, v) in a.iter_mut().zip(vs) {
                            *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, v));
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let out = &mut og[r * hd + c4 * 64..];
                    for (t, a) in a.iter().enumerate() {
                        out[t * 16..t * 16 + 16].copy_from_slice(&cast::<__m512, [f32; 16]>(*a));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn halves(n: usize, seed: u64) -> Vec<half::f16> {
        numbers(n, seed)
            .into_iter()
            .map(half::f16::from_f32)
            .collect()
    }

    /// Keys laid out `[position][kv_head][dim]` in the cache's blocked layout.
    fn blocked(k: &[half::f16], shape: Shape) -> Vec<half::f16> {
        let width = shape.kv_heads * shape.head_dim;
        let mut out = Vec::new();
        for (pos, row) in k.chunks_exact(width).enumerate() {
            let row: Vec<f32> = row.iter().map(|x| x.to_f32()).collect();
            push_keys(&mut out, pos, shape, &row);
        }
        out
    }

    #[test]
    fn keys_appended_together_are_laid_out_as_one_by_one() {
        let shape = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 12,
        };
        let width = shape.kv_heads * shape.head_dim;
        let rows = numbers(70 * width, 11);
        let one_by_one = blocked(
            &rows
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect::<Vec<_>>(),
            shape,
        );
        // Appended in runs that start and end inside blocks, and in one run.
        for cuts in [vec![0, 5, 21, 22, 53, 70], vec![0, 70], vec![0, 16, 32, 70]] {
            let mut keys = Vec::new();
            for run in cuts.windows(2) {
                push_keys(
                    &mut keys,
                    run[0],
                    shape,
                    &rows[run[0] * width..run[1] * width],
                );
            }
            assert_eq!(keys, one_by_one, "runs {cuts:?}");
        }
    }

    #[test]
    fn matches_a_straightforward_softmax_attention() {
        let shape = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 12,
        };
        let (start, seq) = (3, 5);
        let total = start + seq;
        let q = numbers(shape.heads * seq * shape.head_dim, 1);
        let k = halves(total * shape.kv_heads * shape.head_dim, 2);
        let v = halves(total * shape.kv_heads * shape.head_dim, 3);
        let got = causal(&q, &blocked(&k, shape), &v, shape, start, seq);
        let hd = shape.head_dim;
        for i in 0..seq {
            for h in 0..shape.heads {
                let kvh = h / 3;
                let s: Vec<f64> = (0..=start + i)
                    .map(|j| {
                        (0..hd)
                            .map(|d| {
                                f64::from(q[(i * shape.heads + h) * hd + d])
                                    * f64::from(k[(j * 2 + kvh) * hd + d].to_f32())
                            })
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
                        .map(|(j, w)| w * f64::from(v[(j * 2 + kvh) * hd + d].to_f32()))
                        .sum::<f64>()
                        / z;
                    let g = f64::from(got[(i * shape.heads + h) * hd + d]);
                    // q and the probabilities are rounded to f16 (relative error 2^-11).
                    assert!(
                        (g - want).abs() < 2e-3,
                        "row {i} head {h} dim {d}: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// The SIMD scores and weighted sums (where the CPU runs them) give the reference's bits:
    /// uneven block ends, a head size with a tail past the last eight dimensions, one not a
    /// multiple of sixteen.
    #[test]
    fn simd_attention_gives_the_reference_bits() {
        for (heads, kv_heads, hd, start, seq) in
            [(9, 3, 64, 37, 5), (4, 2, 20, 3, 17), (2, 1, 8, 0, 1)]
        {
            let shape = Shape {
                heads,
                kv_heads,
                head_dim: hd,
            };
            let total = start + seq;
            let q = numbers(heads * seq * hd, 7);
            let k = blocked(&halves(total * kv_heads * hd, 8), shape);
            let v = halves(total * kv_heads * hd, 9);
            let got = causal(&q, &k, &v, shape, start, seq);
            let q16: Vec<f32> = q.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            let rep = heads / kv_heads;
            let scale = 1.0 / (hd as f32).sqrt();
            for i in 0..seq {
                for kvh in 0..kv_heads {
                    let kv = Kv {
                        keys: &k,
                        values: &v,
                        kv_heads,
                        kvh,
                        hd,
                    };
                    let n = start + i + 1;
                    let at = (i * heads + kvh * rep) * hd;
                    let mut scores = vec![0f32; rep * n];
                    scores_scalar(&q16[at..at + rep * hd], &kv, n, scale, &mut scores);
                    softmax(&mut scores, n);
                    let mut want = vec![0f32; rep * hd];
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
        let shape = Shape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let seq = 40;
        let q = numbers(shape.heads * seq * shape.head_dim, 4);
        let k = blocked(&halves(seq * shape.kv_heads * shape.head_dim, 5), shape);
        let v = halves(seq * shape.kv_heads * shape.head_dim, 6);
        let batched = causal(&q, &k, &v, shape, 0, seq);
        let row = shape.heads * shape.head_dim;
        for i in [0, 1, 17, 39] {
            let alone = causal(&q[i * row..(i + 1) * row], &k, &v, shape, i, 1);
            assert_eq!(alone, batched[i * row..(i + 1) * row], "row {i}");
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| causal(&q, &k, &v, shape, 0, seq)), batched);
        }
    }
}
