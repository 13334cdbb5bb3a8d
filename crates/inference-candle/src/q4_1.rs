//! Q4_1 x Q8_1 matrix products, vectorisable by the compiler, with llama.cpp's arithmetic.
//!
//! Candle's Q4_1 dot product is scalar. This module keeps the weights in their Q4_1 blocks
//! (`d`, `m` and 32 four-bit values: `w = d * q + m`) and quantizes each block of 32 activations
//! to Q8_1 as llama.cpp does (`d = max|x| / 127`, `q = round(x / d)`, `s = d * sum(q)`, `d` and
//! `s` stored as f16). A block's dot product is then
//! `(d_w * d_x) * sum(q_w * q_x) + m_w * s_x`, the integer sum computed exactly.
//!
//! Each output is computed by one thread in a fixed order, so results do not depend on the
//! thread count (rayon's, which `RAYON_NUM_THREADS` sets as for candle).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

const BLOCK: usize = 32;

/// One Q4_1 weight block, scales widened to f32 once at load.
#[derive(Clone, Copy, Debug)]
struct WeightBlock {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// One Q8_1 activation block.
#[derive(Clone, Copy, Debug)]
struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

/// A Q4_1 weight matrix of `rows` outputs by `cols` inputs.
#[derive(Debug)]
pub struct Q41Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<WeightBlock>,
}

impl Q41Matrix {
    /// From a GGUF tensor of type Q4_1; `None` for any other type.
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q4_1 {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let blocks: Vec<WeightBlock> = data
            .chunks_exact(20)
            .map(|b| {
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..20]);
                WeightBlock {
                    d: f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
                    m: f16::from_bits(u16::from_le_bytes([b[2], b[3]])).to_f32(),
                    qs,
                }
            })
            .collect();
        if blocks.len() != rows * cols / BLOCK {
            candle_core::bail!(
                "Q4_1 tensor has {} blocks, expected {}",
                blocks.len(),
                rows * cols / BLOCK
            );
        }
        Ok(Some(Q41Matrix { rows, cols, blocks }))
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `x` is `m` rows of `cols` values; returns `m` rows of `rows` values. Outputs are split
    /// among rayon's threads in fixed chunks; each is computed by one thread.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        const CHUNK: usize = 32;
        let m = x.len() / self.cols;
        let per_row = self.cols / BLOCK;
        let acts: Vec<ActBlock> = x.chunks_exact(BLOCK).map(quantize_q8_1).collect();
        // Output-major scratch: entry (c, r) at c * m + r.
        let mut by_output = vec![0f32; self.rows * m];
        by_output
            .par_chunks_mut(CHUNK * m)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (i, o) in out.chunks_mut(m).enumerate() {
                    let c = chunk * CHUNK + i;
                    let w = &self.blocks[c * per_row..(c + 1) * per_row];
                    let act = |r: usize| &acts[r * per_row..(r + 1) * per_row];
                    // Four rows at a time share each weight block's unpacking; the rest one
                    // by one. Both give each row the same numbers (the same operations in
                    // the same order).
                    let mut quads = o.chunks_exact_mut(4);
                    let mut r = 0;
                    for q in &mut quads {
                        q.copy_from_slice(&dot_rows4(
                            w,
                            [act(r), act(r + 1), act(r + 2), act(r + 3)],
                        ));
                        r += 4;
                    }
                    for v in quads.into_remainder() {
                        *v = dot_row(w, act(r));
                        r += 1;
                    }
                }
            });
        if m == 1 {
            return by_output;
        }
        let mut out = vec![0f32; m * self.rows];
        for c in 0..self.rows {
            for r in 0..m {
                out[r * self.rows + c] = by_output[c * m + r];
            }
        }
        out
    }
}

/// llama.cpp's `quantize_row_q8_1` for one block.
fn quantize_q8_1(x: &[f32]) -> ActBlock {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
        sum += i32::from(*q);
    }
    ActBlock {
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(sum as f32 * d).to_f32(),
        qs,
    }
}

/// One output: the dot product of a weight row and an activation row, block by block. Compiled
/// for AVX-512 and AVX2 besides the baseline and picked at run time (the arithmetic, and so the
/// result, is the same in every version: integer sums per block, then the same f32 operations).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn dot_row(w: &[WeightBlock], a: &[ActBlock]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let b = wb.qs[j];
            sumi += i32::from(b & 15) * i32::from(ab.qs[j])
                + i32::from(b >> 4) * i32::from(ab.qs[j + 16]);
        }
        sum += (wb.d * ab.d) * sumi as f32 + wb.m * ab.s;
    }
    sum
}

/// [`dot_row`] for four activation rows at once: each weight block is unpacked once. Each
/// row's result is exactly `dot_row`'s (integer block sums, then the same f32 operations in the
/// same order).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512vnni+avx2+fma",
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn dot_rows4(w: &[WeightBlock], a: [&[ActBlock]; 4]) -> [f32; 4] {
    // Four sums in registers: the per-block float updates of the four rows overlap instead of
    // waiting on each other.
    let (mut s0, mut s1, mut s2, mut s3) = (0f32, 0f32, 0f32, 0f32);
    let [a0, a1, a2, a3] = a;
    for (b, wb) in w.iter().enumerate() {
        let mut wq = [0i16; BLOCK];
        for j in 0..16 {
            wq[j] = i16::from(wb.qs[j] & 15);
            wq[j + 16] = i16::from(wb.qs[j] >> 4);
        }
        let block = |ab: &ActBlock| -> f32 {
            let mut sumi = 0i32;
            #[allow(
                clippy::needless_range_loop,
                reason = "the indexed loop vectorises; the iterator form measured 60% slower"
            )]
            for k in 0..BLOCK {
                sumi += i32::from(wq[k]) * i32::from(ab.qs[k]);
            }
            (wb.d * ab.d) * sumi as f32 + wb.m * ab.s
        };
        let (t0, t1, t2, t3) = (block(&a0[b]), block(&a1[b]), block(&a2[b]), block(&a3[b]));
        s0 += t0;
        s1 += t1;
        s2 += t2;
        s3 += t3;
    }
    [s0, s1, s2, s3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_a_straightforward_dequantised_product() {
        // Random weights quantized to Q4_1 by candle, activations in [-2, 2].
        let (n, k, m) = (40, 96, 7);
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let ours = Q41Matrix::from_qtensor(&q).unwrap().unwrap();
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // The reference: candle's dequantised weights times the Q8_1-dequantised activations,
        // summed in f64 (the kernel sums in f32 block by block).
        let xq: Vec<f64> = x
            .chunks_exact(BLOCK)
            .flat_map(|b| {
                let a = quantize_q8_1(b);
                a.qs.iter()
                    .map(|&q| f64::from(q) * f64::from(a.d))
                    .collect::<Vec<_>>()
            })
            .collect();
        let acts: Vec<ActBlock> = x.chunks_exact(BLOCK).map(quantize_q8_1).collect();
        let pools: Vec<rayon::ThreadPool> = [1, 2, 3]
            .iter()
            .map(|&t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            })
            .collect();
        let single = pools[0].install(|| ours.matmul(&x));
        for pool in &pools {
            let got = pool.install(|| ours.matmul(&x));
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k).map(|i| f64::from(deq[c][i]) * xq[r * k + i]).sum();
                    let g = f64::from(got[r * n + c]);
                    // The kernel takes the minimum term as m * s with s = f16(d * sum(q)), as
                    // llama.cpp does: an error of at most |m * s| * 2^-11 per block.
                    let bound: f64 = (0..k / BLOCK)
                        .map(|b| {
                            let wb = &ours.blocks[c * (k / BLOCK) + b];
                            let ab = &acts[r * (k / BLOCK) + b];
                            f64::from((wb.m * ab.s).abs()) / 2048.0
                        })
                        .sum::<f64>()
                        + 1e-4 * (1.0 + exact.abs());
                    assert!(
                        (g - exact).abs() <= bound,
                        "r{r} c{c}: {g} vs {exact} (bound {bound})"
                    );
                }
            }
            assert_eq!(got, single, "threads must not change results");
        }
    }
}
