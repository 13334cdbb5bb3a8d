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
const PARALLEL_MIN: usize = 1 << 16;

/// Fewest (row, key-value head) items for which heads are grouped (see [`causal`]).
const GROUPED_MIN_ITEMS: usize = 8;

/// `q` holds `seq` query rows for positions `start..start + seq`, laid out `[row][head][dim]`;
/// `keys` and `values` hold positions `0..start + seq` in f16 (the cache keeps them so; llama.cpp
/// does too), laid out `[position][kv_head][dim]`. Returns the attention output laid out
/// `[row][head][dim]`. `pass_rows` is how many rows the whole pass holds (for how work is
/// split; the numbers do not depend on it).
///
/// In a pass with rows enough, the query heads that share a key-value head are computed
/// together, so each cached row is read (and converted) once for all of them; each head's
/// numbers are still computed in the order described above, so every split gives the same bits
/// (`a_row_gets_the_same_numbers_alone_or_in_a_batch_and_on_any_thread_count`).
pub fn causal(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    shape: Shape,
    start: usize,
    seq: usize,
    pass_rows: usize,
) -> Vec<f32> {
    let Shape {
        heads,
        kv_heads,
        head_dim: hd,
    } = shape;
    let kv_heads = kv_heads.max(1);
    let rep = (heads / kv_heads).max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    // The query rounded to f16 once, as llama.cpp multiplies it with its f16 keys.
    let q16: Vec<f32> = q.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    let mut out = vec![0f32; seq * heads * hd];
    // One item per row and key-value head (its `rep` query heads together) when the pass this
    // call belongs to (`pass_rows` rows over all its sequences) gives the threads enough items;
    // otherwise one per row and head (a one-sequence decoding step would have only `kv_heads`
    // items, too few to share two or more threads evenly).
    let grouped = seq.max(pass_rows) * kv_heads >= GROUPED_MIN_ITEMS;
    let per_item = if grouped { rep } else { 1 };
    let positions = start + seq;
    // In a grouped pass the cached rows this call reads are converted to f32 once, up front
    // (one vectorised pass each), into this thread's scratch buffers (taken, not borrowed: a
    // thread waiting inside the parallel loop below may run another call, which then makes its
    // own). A one-sequence decoding step instead converts each row as its items read it, so
    // that the conversion runs on every thread rather than before them, and nothing is
    // allocated or written back.
    let mut scratch = SCRATCH.with(std::cell::Cell::take);
    if grouped {
        let n = positions * kv_heads * hd;
        to_f32(&keys[..n], &mut scratch.0);
        to_f32(&values[..n], &mut scratch.1);
    }
    let (keys, values) = if grouped {
        (Cached::F32(&scratch.0[..]), Cached::F32(&scratch.1[..]))
    } else {
        (Cached::F16(keys), Cached::F16(values))
    };
    let one = |item: usize, o: &mut [f32]| {
        let first = item * per_item * hd;
        let (i, h) = (item * per_item / heads, item * per_item % heads);
        let rows = Rows {
            keys,
            values,
            kv_heads,
            kvh: h / rep,
            hd,
        };
        attend_group(
            &q16[first..first + per_item * hd],
            &rows,
            start + i,
            scale,
            o,
        );
    };
    let work = seq * heads * (start + seq) * hd;
    let group = per_item * hd;
    if work >= PARALLEL_MIN {
        out.par_chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o));
    } else {
        out.chunks_mut(group)
            .enumerate()
            .for_each(|(item, o)| one(item, o));
    }
    SCRATCH.with(|c| c.set(scratch));
    out
}

thread_local! {
    /// Keys and values converted to f32, kept between calls so that a decoding step does not
    /// allocate (and fault in) fresh buffers for every layer.
    static SCRATCH: std::cell::Cell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// f16 values as f32 into the front of `out` (grown as needed).
fn to_f32(x: &[half::f16], out: &mut Vec<f32>) {
    if out.len() < x.len() {
        out.resize(x.len(), 0.0);
    }
    to_f32_slice(x, &mut out[..x.len()]);
}

/// f16 values as f32 (F16C instructions where the CPU has them).
fn to_f32_slice(x: &[half::f16], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    x.convert_to_f32_slice(out);
}

/// Cached keys or values: converted to f32 already, or f16 converted row by row as read.
#[derive(Clone, Copy)]
enum Cached<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl Cached<'_> {
    /// The values in `range`, as f32 (in `buf` when they need converting; `buf` holds a row).
    #[inline(always)]
    fn row<'b>(&'b self, range: std::ops::Range<usize>, buf: &'b mut [f32]) -> &'b [f32] {
        match *self {
            Cached::F32(x) => &x[range],
            Cached::F16(x) => {
                to_f32_slice(&x[range], buf);
                buf
            }
        }
    }
}

/// Where one key-value head's rows are.
struct Rows<'a> {
    keys: Cached<'a>,
    values: Cached<'a>,
    kv_heads: usize,
    kvh: usize,
    hd: usize,
}

impl Rows<'_> {
    fn at(&self, j: usize) -> std::ops::Range<usize> {
        let s = (j * self.kv_heads + self.kvh) * self.hd;
        s..s + self.hd
    }
}

/// One query row of the heads sharing one key-value head (`qrows`: `rep` heads of `hd`)
/// against positions `0..=last`. Compiled for AVX-512 and AVX2 besides the baseline; every
/// version does the same operations in the same order.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn attend_group(qrows: &[f32], rows: &Rows<'_>, last: usize, scale: f32, o: &mut [f32]) {
    let hd = rows.hd;
    let rep = qrows.len() / hd;
    let n = last + 1;
    let mut buf = vec![0f32; hd];
    // Scores, head by head: scores[r * n + j].
    let mut scores = vec![0f32; rep * n];
    for j in 0..n {
        let k = rows.keys.row(rows.at(j), &mut buf);
        for (r, q) in qrows.chunks_exact(hd).enumerate() {
            scores[r * n + j] = dot(q, k) * scale;
        }
    }
    // Each head's softmax: maximum, exponentials, their sum in position order; probabilities
    // rounded to f16 as llama.cpp feeds them to its f16 product with the values.
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
    // The weighted sums of values, in position order.
    for j in 0..n {
        let v = rows.values.row(rows.at(j), &mut buf);
        for (r, out) in o.chunks_exact_mut(hd).enumerate() {
            let w = scores[r * n + j];
            for (od, vd) in out.iter_mut().zip(v) {
                *od += w * vd;
            }
        }
    }
}

/// A dot product in eight lanes, summed in a fixed tree (vectorisable, and the same result
/// everywhere it runs).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
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
        let got = causal(&q, &k, &v, shape, start, seq, seq);
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

    #[test]
    fn a_row_gets_the_same_numbers_alone_or_in_a_batch_and_on_any_thread_count() {
        let shape = Shape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let seq = 40;
        let q = numbers(shape.heads * seq * shape.head_dim, 4);
        let k = halves(seq * shape.kv_heads * shape.head_dim, 5);
        let v = halves(seq * shape.kv_heads * shape.head_dim, 6);
        let batched = causal(&q, &k, &v, shape, 0, seq, seq);
        let row = shape.heads * shape.head_dim;
        for i in [0, 1, 17, 39] {
            let alone = causal(&q[i * row..(i + 1) * row], &k, &v, shape, i, 1, 1);
            assert_eq!(alone, batched[i * row..(i + 1) * row], "row {i}");
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(
                pool.install(|| causal(&q, &k, &v, shape, 0, seq, seq)),
                batched
            );
        }
    }
}
