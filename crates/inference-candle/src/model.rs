//! The llama architecture (as SmolLM2 uses it) over quantized GGUF weights, written for this
//! engine: logits for every position of a chunk (so scoring a continuation is one forward pass)
//! and a key-value cache for generation.
//!
//! ```text
//! x = embed(tokens)
//! for each block: x += Wo * attention(rope(Wq * norm(x)), rope(Wk * norm(x)), Wv * norm(x))
//!                 x += Wdown * (silu(Wgate * norm(x)) * (Wup * norm(x)))
//! logits = Woutput * norm(x)
//! ```

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{Module, Tensor};

use crate::quant::Kernel;
use crate::quant::q4_1::Q41Matrix;
use crate::quant::q8_0::Q80Matrix;
use crate::quant::screen::{Best, Screen};

/// Hyperparameters read from the GGUF.
#[derive(Clone, Debug)]
pub struct Config {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub embedding: usize,
    pub rms_eps: f64,
    pub context_length: usize,
}

/// A weight matrix: Q4_1 and Q8_0 through our kernels, anything else through candle.
enum Linear {
    Q41(Q41Matrix),
    Q80(Q80Matrix),
    Candle(QMatMul, usize),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        if let Some(m) = Q41Matrix::from_qtensor(&t)? {
            return Ok(Linear::Q41(m));
        }
        if let Some(m) = Q80Matrix::from_qtensor(&t)? {
            return Ok(Linear::Q80(m));
        }
        let (rows, _) = t.shape().dims2()?;
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?, rows))
    }

    /// Outputs per row.
    fn rows(&self) -> usize {
        match self {
            Linear::Q41(m) => m.rows(),
            Linear::Q80(m) => m.rows(),
            Linear::Candle(_, rows) => *rows,
        }
    }

    /// `x` holds rows of inputs; the result the same number of rows of outputs.
    fn forward(&self, x: &[f32], cols: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_into(x, cols, cols, &mut out)?;
        Ok(out)
    }

    /// [`Linear::forward`] into `out` (its allocation reused), of rows `stride` values apart in
    /// `x`, each row's inputs its first `cols`.
    fn forward_into(
        &self,
        x: &[f32],
        cols: usize,
        stride: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        match self {
            Linear::Q41(m) => m.matmul_into(x, stride, out),
            Linear::Q80(m) => m.matmul_into(x, stride, out),
            Linear::Candle(q, _) => {
                let rows: Vec<f32> = x
                    .chunks_exact(stride.max(cols).max(1))
                    .flat_map(|r| &r[..cols])
                    .copied()
                    .collect();
                let t = Tensor::from_slice(
                    &rows,
                    (rows.len() / cols, cols),
                    &candle_core::Device::Cpu,
                )?;
                *out = q.forward(&t)?.flatten_all()?.to_vec1()?;
            }
        }
        Ok(())
    }
}

/// Projections of the same input computed as one matrix (their rows stacked) when they share a
/// format: one pass over the input and one parallel region instead of several. Each output
/// row holds the projections side by side.
enum Stacked {
    One(Linear),
    Parts(Vec<Linear>),
}

impl Stacked {
    fn new(parts: Vec<Linear>) -> Stacked {
        if !parts.iter().all(|p| matches!(p, Linear::Q41(_))) {
            return Stacked::Parts(parts);
        }
        let ms: Vec<Q41Matrix> = parts
            .into_iter()
            .filter_map(|p| match p {
                Linear::Q41(m) => Some(m),
                _ => None,
            })
            .collect();
        match Q41Matrix::stack(ms) {
            Ok(m) => Stacked::One(Linear::Q41(m)),
            Err(ms) => Stacked::Parts(ms.into_iter().map(Linear::Q41).collect()),
        }
    }

    /// Outputs per row, all projections together.
    fn width(&self) -> usize {
        match self {
            Stacked::One(l) => l.rows(),
            Stacked::Parts(ps) => ps.iter().map(Linear::rows).sum(),
        }
    }

    /// [`Linear::forward_into`] of the stacked projections.
    fn forward_into(&self, x: &[f32], cols: usize, out: &mut Vec<f32>) -> Result<()> {
        match self {
            Stacked::One(l) => l.forward_into(x, cols, cols, out),
            Stacked::Parts(ps) => {
                let m = x.len() / cols;
                let width = self.width();
                out.truncate(m * width);
                out.resize(m * width, 0.0);
                let mut at = 0;
                for p in ps {
                    let n = p.rows();
                    let y = p.forward(x, cols)?;
                    for (o, yr) in out.chunks_exact_mut(width).zip(y.chunks_exact(n)) {
                        o[at..at + n].copy_from_slice(yr);
                    }
                    at += n;
                }
                Ok(())
            }
        }
    }
}

struct Block {
    attn_norm: Vec<f32>,
    /// Query, key and value projections side by side.
    qkv: Stacked,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// Gate and up projections side by side.
    gate_up: Stacked,
    down: Linear,
}

/// The weights (shared, read-only).
pub struct Weights {
    pub config: Config,
    /// The token embeddings, dequantized; `None` when they are the Q8_0 output matrix (tied
    /// embeddings), whose rows are then dequantized one token at a time.
    embeddings: Option<Vec<f32>>,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Linear,
    /// Rotary tables `[position][i]` for `i < head_dim / 2`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    ffn: usize,
    /// The same model on a GPU, which then runs every pass (the CPU weights above stay loaded
    /// but idle).
    gpu: Option<agora_inference_cuda::Model>,
    /// The output matrix's screen for [`Weights::forward_argmax`], made on first use (or by
    /// [`Weights::prepare_screen`]); `None` inside when the matrix has none.
    screen: std::sync::OnceLock<Option<Screen>>,
    /// Rows whose argmax the screen found, since loading.
    screened: std::sync::atomic::AtomicU64,
}

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// This machine's CPU cores, with the best SIMD kernels they run.
    Cpu,
    /// NVIDIA GPU number `n` (`cuda:n`).
    Cuda(usize),
}

impl Device {
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    pub fn parse(s: &str) -> std::result::Result<Device, String> {
        match s.trim() {
            "" | "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {other:?}: use cpu, cuda or cuda:N")),
        }
    }

    /// The device `AGORA_DEVICE` names (the CPU when it is unset).
    pub fn from_env() -> std::result::Result<Device, String> {
        match std::env::var("AGORA_DEVICE") {
            Ok(v) => Device::parse(&v).map_err(|e| format!("AGORA_DEVICE: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(Device::Cpu),
            Err(e) => Err(format!("AGORA_DEVICE: {e}")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("config", &self.config)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// One sequence's key-value cache: per layer, keys and values quantized to 8 bits
/// ([`crate::attention::LayerCache`]).
#[derive(Debug, Default)]
pub struct Cache {
    /// Per layer.
    layers: Vec<crate::attention::LayerCache>,
    /// The cache on the GPU, for a GPU model.
    gpu: Option<agora_inference_cuda::Cache>,
    /// Tokens already in the cache.
    pub len: usize,
}

impl Cache {
    /// A copy of this cache's first `n` positions (at most [`Cache::len`]), for a sequence that
    /// starts with the same tokens. Every position is computed on its own (see
    /// [`Weights::forward_segments`]), so a sequence continued from the copy gets the numbers a
    /// fresh cache would give it, bit for bit. `None` for a GPU cache (not copied).
    pub fn prefix(&self, n: usize) -> Option<Cache> {
        if self.gpu.is_some() {
            return None;
        }
        let n = n.min(self.len);
        Some(Cache {
            layers: self.layers.iter().map(|l| l.prefix(n)).collect(),
            gpu: None,
            len: n,
        })
    }
}

type Result<T> = candle_core::Result<T>;

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    match ct.metadata.get(key) {
        Some(v) => Ok(v.to_u32()? as usize),
        None => candle_core::bail!("GGUF metadata {key} is missing"),
    }
}

/// [`rms_norm_into`] into a new vector, without a residual (the tests' entry).
#[cfg(test)]
fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::new();
    rms_norm_into(&mut x.to_vec(), None, weight, eps, &mut out);
    out
}

/// RMS norm of each row of `x`: `x / sqrt(mean(x^2) + eps) * weight`, all in f32, the squares
/// summed in order. (llama.cpp sums the squares in f64 and multiplies by the reciprocal; that
/// variant measured slightly further from llama.cpp's own greedy tokens on the fixture prompts,
/// 303 instead of 307 of 320 teacher-forced argmax agreements, because activations are
/// re-quantized to 8 bits at every product and small differences move roundings.)
///
/// A row's sum is one chain of dependent additions, which leaves the adder waiting on each
/// one; [`NORM_ROWS`] rows' chains are therefore run side by side (each still in order, so
/// every row gets the bits it gets alone), and groups of rows are split over rayon's threads.
/// With AVX-512, a whole group's chains are the 16 lanes of one vector, fed by 16 x 16
/// transposes of the rows (`x86::sum_squares`); the rest is compiled for the CPU's vectors
/// too (it was baseline x86-64, scalar sums and four-lane divisions).
///
/// Into `out` (its allocation reused), with `residual` first added to `x`, value by value (the
/// residual connection), in the same pass over the rows and the same split over the threads:
/// the additions of a scoring pass's 168 rows had run on one thread, twice a layer, while the
/// pool's other thread waited.
fn rms_norm_into(
    x: &mut [f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    eps: f32,
    out: &mut Vec<f32>,
) {
    use rayon::prelude::*;
    let n = weight.len();
    out.truncate(x.len());
    out.resize(x.len(), 0.0);
    if n == 0 {
        return;
    }
    let chunk = NORM_ROWS * n;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(i, (out, x))| {
            let r = residual.and_then(|r| r.get(i * chunk..i * chunk + x.len()));
            norm_rows(x, r, weight, eps, out);
        });
}

/// Rows of a segment rotated and appended to its cache by one task (a long segment's rows are
/// split over the pool).
const ROWS_PER_TASK: usize = 16;

/// Rows whose squares [`rms_norm_into`] sums side by side.
const NORM_ROWS: usize = 16;

/// [`rms_norm_into`] of up to [`NORM_ROWS`] rows into `out`, `residual` (the same rows')
/// added to `x` first.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn norm_rows(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    if let Some(r) = residual {
        for (xv, &rv) in x.iter_mut().zip(r) {
            *xv += rv;
        }
    }
    let mut sums = [0f32; NORM_ROWS];
    if x.len() == NORM_ROWS * n {
        multiversion::target::match_target! {
            "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => {
                sums = x86::sum_squares(x, n);
            },
            _ => {
                let rows: [&[f32]; NORM_ROWS] =
                    std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
                for j in 0..n {
                    for (sum, row) in sums.iter_mut().zip(rows) {
                        *sum += row[j] * row[j];
                    }
                }
            },
        }
    } else if x.len() == 8 * n {
        // An eight-stream decoding pass's rows: their eight chains side by side.
        let rows: [&[f32]; 8] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
        for j in 0..n {
            for (sum, row) in sums.iter_mut().zip(rows) {
                *sum += row[j] * row[j];
            }
        }
    } else {
        for (sum, row) in sums.iter_mut().zip(x.chunks_exact(n)) {
            *sum = row.iter().fold(0.0, |a, &v| a + v * v);
        }
    }
    for ((o, row), sum) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(sums) {
        let m = (sum / n as f32 + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = v / m * w;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The norm's sums of squares and the rotation of queries and keys with AVX-512.

    use super::NORM_ROWS;
    use bytemuck::cast;
    use std::arch::x86_64::*;

    /// [`super::rope`] for heads of `2 * cos.len()` values, `cos.len()` a multiple of 8: eight
    /// pairs to a vector, each angle's cosine and sine in both lanes of its pair. With `x` the
    /// pairs as they lie and `y` each pair swapped, the even lanes are `x * cos - y * sin`
    /// (`a cos - b sin`) and the odd ones `x * cos + y * sin` (`b cos + a sin`, the reference's
    /// sum with its terms swapped: the same number).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let twice = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let (cos, _) = cos.as_chunks::<8>();
        let (sin, _) = sin.as_chunks::<8>();
        let pairs = |v: &[f32; 8]| {
            let v: __m256 = cast(*v);
            _mm512_permutexvar_ps(twice, _mm512_castps256_ps512(v))
        };
        for head in x.chunks_exact_mut(2 * half) {
            let (chunks, _) = head.as_chunks_mut::<16>();
            for ((c, cv), sv) in chunks.iter_mut().zip(cos).zip(sin) {
                let v: __m512 = cast(*c);
                let swapped = _mm512_permute_ps::<0b1011_0001>(v);
                let p = _mm512_mul_ps(v, pairs(cv));
                let q = _mm512_mul_ps(swapped, pairs(sv));
                let r = _mm512_mask_sub_ps(_mm512_add_ps(p, q), 0x5555, p, q);
                *c = cast(r);
            }
        }
    }

    /// The squares of each of 16 rows of `n` values (`x`, row after row) summed in order, one
    /// row per lane: each 16 x 16 block of the rows transposed (so that one vector holds a
    /// column, one value of each row), then its columns' squares added in order; the columns
    /// after the last whole block one by one. The same operations, in the same order, as
    /// `sum += v * v` over each row alone.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn sum_squares(x: &[f32], n: usize) -> [f32; NORM_ROWS] {
        let rows: [&[f32]; 16] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
        let mut sums = _mm512_setzero_ps();
        let whole = n / 16 * 16;
        for j in (0..whole).step_by(16) {
            let r: [__m512; 16] = std::array::from_fn(|i| {
                let block: [f32; 16] = rows[i][j..j + 16].try_into().unwrap_or([0.0; 16]);
                cast(block)
            });
            for c in transpose(r) {
                sums = _mm512_add_ps(sums, _mm512_mul_ps(c, c));
            }
        }
        let mut sums: [f32; 16] = cast(sums);
        for (sum, row) in sums.iter_mut().zip(rows) {
            for &v in &row[whole..] {
                *sum += v * v;
            }
        }
        sums
    }

    /// Columns of a 16 x 16 block given as its rows: `out[c]` lane `r` is `rows[r]` lane `c`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    fn transpose(rows: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved within each 128-bit lane.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (rows[i & !1], rows[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // Then pairs of pairs: `u[4g + k]`, 128-bit lane `l`, holds column `4l + k` of rows
        // `4g..4g + 4`.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let (a, b) = if k < 2 {
                (t[4 * g], t[4 * g + 2])
            } else {
                (t[4 * g + 1], t[4 * g + 3])
            };
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            _mm512_castpd_ps(if k % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        let mut out = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            // 128-bit lanes 0 and 2 (then 1 and 3) of rows 0-7 and of rows 8-15.
            let v = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
            let w = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
            let v1 = _mm512_shuffle_f32x4::<0xdd>(u[k], u[4 + k]);
            let w1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + k], u[12 + k]);
            out[k] = _mm512_shuffle_f32x4::<0x88>(v, w);
            out[8 + k] = _mm512_shuffle_f32x4::<0xdd>(v, w);
            out[4 + k] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
            out[12 + k] = _mm512_shuffle_f32x4::<0xdd>(v1, w1);
        }
        out
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {}

/// Rotate interleaved pairs `(x[2i], x[2i + 1])` of each head by the position's angles
/// (compiled for AVX-512 besides the baseline, eight pairs at a time there: the same products,
/// each rounded, and the same sums).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c"))]
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => {
            if half.is_multiple_of(8) {
                x86::rope(x, cos, sin);
                return;
            }
        },
        _ => {},
    }
    for head in x.chunks_exact_mut(2 * half) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }
}

/// `g = silu(g) * u` for each pair, in place (compiled for AVX-512 and AVX2 besides the
/// baseline, so that [`crate::exp::exp`]'s fused multiply-adds are instructions; with AVX-512,
/// sixteen at a time through [`crate::exp::exp16`], the same bits).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn silu_mul(g: &mut [f32], u: &[f32]) {
    let one = |g: &mut f32, u: f32| *g = *g / (1.0 + crate::exp::exp(-*g)) * u;
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => {
            use std::arch::x86_64::*;
            let mut gs = g.chunks_exact_mut(16);
            let mut us = u.chunks_exact(16);
            for (gc, uc) in (&mut gs).zip(&mut us) {
                let gv: __m512 = bytemuck::cast(<[f32; 16]>::try_from(&*gc).unwrap_or_default());
                let uv: __m512 = bytemuck::cast(<[f32; 16]>::try_from(uc).unwrap_or_default());
                let e = crate::exp::exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
                let s = _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0), e)), uv);
                gc.copy_from_slice(&bytemuck::cast::<__m512, [f32; 16]>(s));
            }
            for (g, &u) in gs.into_remainder().iter_mut().zip(us.remainder()) {
                one(g, u);
            }
        },
        _ => {
            for (g, &u) in g.iter_mut().zip(u) {
                one(g, u);
            }
        },
    }
}

impl Weights {
    /// Load from a GGUF file, onto `target`.
    pub fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        target: Device,
    ) -> Result<Self> {
        let device = &candle_core::Device::Cpu;
        let heads = md_u32(ct, "llama.attention.head_count")?;
        let kv_heads = md_u32(ct, "llama.attention.head_count_kv")?;
        let embedding = md_u32(ct, "llama.embedding_length")?;
        let layers = md_u32(ct, "llama.block_count")?;
        let context_length = md_u32(ct, "llama.context_length")?;
        let ffn = md_u32(ct, "llama.feed_forward_length")?;
        let rms_eps = match ct.metadata.get("llama.attention.layer_norm_rms_epsilon") {
            Some(v) => f64::from(v.to_f32()?),
            None => 1e-5,
        };
        let rope_base = match ct.metadata.get("llama.rope.freq_base") {
            Some(v) => v.to_f32()?,
            None => 10_000.0,
        };
        if heads == 0
            || kv_heads == 0
            || embedding == 0
            || embedding % heads != 0
            || heads % kv_heads != 0
        {
            candle_core::bail!(
                "unsupported head layout: {heads} heads, {kv_heads} key-value heads, embedding {embedding}"
            );
        }
        let head_dim = embedding / heads;
        let shape = crate::attention::Shape {
            heads,
            kv_heads,
            head_dim,
        };
        if let Err(e) = shape.check() {
            candle_core::bail!("{e}");
        }
        let tensor = |r: &mut R, name: &str| ct.tensor(r, name, device);
        let vector = |r: &mut R, name: &str| -> Result<Vec<f32>> {
            tensor(r, name)?.dequantize(device)?.to_vec1::<f32>()
        };
        let embd = tensor(r, "token_embd.weight")?;
        let dequantized = |t: &QTensor| -> Result<Vec<f32>> {
            t.dequantize(device)?.flatten_all()?.to_vec1::<f32>()
        };
        let (embeddings, output) = if ct.tensor_infos.contains_key("output.weight") {
            (
                Some(dequantized(&embd)?),
                Linear::new(tensor(r, "output.weight")?)?,
            )
        } else {
            // Tied embeddings: the output projection is the embedding matrix, kept once.
            match Q80Matrix::from_qtensor(&embd)? {
                Some(m) => (None, Linear::Q80(m)),
                None => (Some(dequantized(&embd)?), Linear::new(embd)?),
            }
        };
        let norm = vector(r, "output_norm.weight")?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("blk.{i}");
            let q = |r: &mut R, n: &str| -> Result<Linear> {
                Linear::new(tensor(r, &format!("{p}.{n}.weight"))?)
            };
            blocks.push(Block {
                attn_norm: vector(r, &format!("{p}.attn_norm.weight"))?,
                qkv: Stacked::new(vec![q(r, "attn_q")?, q(r, "attn_k")?, q(r, "attn_v")?]),
                wo: q(r, "attn_output")?,
                ffn_norm: vector(r, &format!("{p}.ffn_norm.weight"))?,
                gate_up: Stacked::new(vec![q(r, "ffn_gate")?, q(r, "ffn_up")?]),
                down: q(r, "ffn_down")?,
            });
        }
        // Rotary tables for every position of the context.
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / rope_base.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(context_length * half);
        let mut sin = Vec::with_capacity(context_length * half);
        for pos in 0..context_length {
            for &f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let config = Config {
            heads,
            kv_heads,
            head_dim,
            embedding,
            rms_eps,
            context_length,
        };
        let mut weights = Weights {
            config,
            embeddings,
            blocks,
            norm,
            output,
            cos,
            sin,
            ffn,
            gpu: None,
            screen: std::sync::OnceLock::new(),
            screened: std::sync::atomic::AtomicU64::new(0),
        };
        if let Device::Cuda(ordinal) = target {
            weights.gpu = Some(weights.load_gpu(ct, r, ordinal)?);
        }
        Ok(weights)
    }

    /// Where passes run: the CPU's kernel, or the GPU's name.
    pub fn device_name(&self) -> String {
        match &self.gpu {
            Some(g) => g.device().to_string(),
            None => format!("cpu ({})", crate::quant::Kernel::best().name()),
        }
    }

    /// The same model on GPU `ordinal`: the layers' quantized blocks as the file holds them
    /// (read again from it), with the norms, embeddings and rotary tables already loaded.
    fn load_gpu<R: std::io::Read + std::io::Seek>(
        &self,
        ct: &gguf_file::Content,
        r: &mut R,
        ordinal: usize,
    ) -> Result<agora_inference_cuda::Model> {
        use agora_inference_cuda::{Format, HostEmbeddings, HostLayer, HostMatrix, HostModel};
        use candle_core::quantized::GgmlDType;
        // Raw blocks of one or more matrices stacked by rows (same format and width).
        let raw = |r: &mut R, names: &[String]| -> Result<(Format, usize, usize, Vec<u8>)> {
            let mut out: Option<(Format, usize, usize, Vec<u8>)> = None;
            for name in names {
                let t = ct.tensor(r, name, &candle_core::Device::Cpu)?;
                let format = match t.dtype() {
                    GgmlDType::Q4_1 => Format::Q4_1,
                    GgmlDType::Q8_0 => Format::Q8_0,
                    other => candle_core::bail!(
                        "the CUDA path runs Q4_1 and Q8_0 weights; {name} is {other:?}"
                    ),
                };
                let (rows, cols) = t.shape().dims2()?;
                let data = t.data()?;
                match &mut out {
                    None => out = Some((format, rows, cols, data.into_owned())),
                    Some((f, n, c, bytes)) if *f == format && *c == cols => {
                        *n += rows;
                        bytes.extend_from_slice(&data);
                    }
                    Some(_) => candle_core::bail!("{names:?} differ in format or width"),
                }
            }
            out.ok_or_else(|| candle_core::Error::Msg("no tensors named".into()))
        };
        let names = |p: &str, ns: &[&str]| -> Vec<String> {
            ns.iter().map(|n| format!("{p}.{n}.weight")).collect()
        };
        let mut mats = Vec::with_capacity(self.blocks.len());
        for i in 0..self.blocks.len() {
            let p = format!("blk.{i}");
            mats.push([
                raw(r, &names(&p, &["attn_q", "attn_k", "attn_v"]))?,
                raw(r, &names(&p, &["attn_output"]))?,
                raw(r, &names(&p, &["ffn_gate", "ffn_up"]))?,
                raw(r, &names(&p, &["ffn_down"]))?,
            ]);
        }
        let output_name = if ct.tensor_infos.contains_key("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = raw(r, &[output_name.to_string()])?;
        fn view(m: &(Format, usize, usize, Vec<u8>)) -> HostMatrix<'_> {
            HostMatrix {
                format: m.0,
                rows: m.1,
                cols: m.2,
                bytes: &m.3,
            }
        }
        let layers = self
            .blocks
            .iter()
            .zip(&mats)
            .map(|(b, m)| HostLayer {
                attn_norm: &b.attn_norm,
                qkv: view(&m[0]),
                wo: view(&m[1]),
                ffn_norm: &b.ffn_norm,
                gate_up: view(&m[2]),
                down: view(&m[3]),
            })
            .collect();
        let c = &self.config;
        let host = HostModel {
            config: agora_inference_cuda::Config {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                embedding: c.embedding,
                ffn: self.ffn,
                eps: c.rms_eps as f32,
                context_length: c.context_length,
            },
            embeddings: match &self.embeddings {
                Some(e) => HostEmbeddings::F32(e),
                None => HostEmbeddings::Tied,
            },
            layers,
            norm: &self.norm,
            output: view(&output),
            cos: &self.cos,
            sin: &self.sin,
        };
        agora_inference_cuda::Model::load(ordinal, &host)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// A pass on the GPU: the same contract as [`Weights::forward_segments`].
    fn forward_gpu(
        gpu: &agora_inference_cuda::Model,
        segments: &mut [Segment<'_>],
    ) -> Result<Vec<f32>> {
        let mut parts = Vec::with_capacity(segments.len());
        for seg in segments.iter_mut() {
            let start = seg.cache.len;
            let Some(cache) = seg.cache.gpu.as_mut() else {
                candle_core::bail!("the cache was not made for this model");
            };
            parts.push(agora_inference_cuda::Segment {
                tokens: seg.tokens,
                cache,
                start,
                first_row: seg.first_row,
            });
        }
        let logits = gpu
            .forward(&mut parts)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        drop(parts);
        for seg in segments.iter_mut() {
            seg.cache.len += seg.tokens.len();
        }
        Ok(logits)
    }
    /// Scale every RMS-norm weight by a factor drawn from `[1 - spread, 1 + spread]` with `seed`
    /// (a splitmix64 stream): the same architecture and file hash, another model. For testing
    /// that validators catch a miner serving the wrong model.
    pub fn perturb_norms(&mut self, seed: u64, spread: f32) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // A uniform draw in [-1, 1).
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let mut scale = |v: &mut Vec<f32>| {
            for x in v.iter_mut() {
                *x *= 1.0 + spread * next();
            }
        };
        for b in &mut self.blocks {
            scale(&mut b.attn_norm);
            scale(&mut b.ffn_norm);
        }
        scale(&mut self.norm);
    }

    /// The attention's heads.
    fn shape(&self) -> crate::attention::Shape {
        crate::attention::Shape {
            heads: self.config.heads,
            kv_heads: self.config.kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    /// A fresh cache.
    pub fn cache(&self) -> Cache {
        if self.gpu.is_some() {
            return Cache {
                layers: Vec::new(),
                gpu: Some(agora_inference_cuda::Cache::default()),
                len: 0,
            };
        }
        Cache {
            layers: vec![crate::attention::LayerCache::new(self.shape()); self.blocks.len()],
            gpu: None,
            len: 0,
        }
    }

    /// Vocabulary size (rows of the output projection).
    pub fn vocab(&self) -> usize {
        self.output.rows()
    }

    /// Feed `tokens` after what the cache holds; logits for the fed positions from `first_row`
    /// on, row-major `(len - first_row, vocab)`.
    pub fn forward_from(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        first_row: usize,
    ) -> Result<Vec<f32>> {
        self.forward_segments(&mut [Segment {
            tokens,
            cache,
            first_row,
        }])
    }

    /// Feed several sequences at once, each after what its own cache holds (batched decoding:
    /// one pass over the weights for every sequence); logits for each segment's positions from
    /// its `first_row` on, the segments' rows one after another.
    ///
    /// Every operation treats each position on its own (per-row quantization and norms, one
    /// dot product per row and output, attention row by row in [`crate::attention`] against the
    /// row's own cache), so a position's logits are the same, bit for bit, whether it is fed
    /// alone (decoding), with the rest of its sequence (a prompt, or a continuation being
    /// scored) or beside other sequences. The output projection (the largest matrix) runs only
    /// for the rows asked for.
    ///
    /// The pass runs on rayon's pool (the calling thread waits), so its serial parts and its
    /// parallel products share the pool's threads instead of competing with them. The pool's
    /// other threads are kept awake for the pass (see [`crate::pool::on_pool`]).
    pub fn forward_segments(&self, segments: &mut [Segment<'_>]) -> Result<Vec<f32>> {
        if let Some(gpu) = &self.gpu {
            return Self::forward_gpu(gpu, segments);
        }
        crate::pool::on_pool(|| {
            let x = self.hidden_on_pool(segments)?;
            self.output.forward(&x, self.config.embedding)
        })
    }

    /// [`Weights::forward_from`], with each wanted row's logits handed to `each(row, logits)`
    /// (rows in parallel) instead of returned: the output projection runs [`HEAD_ROWS`] rows at
    /// a time into one reused buffer, so a long continuation's logits (49,152 values a row) are
    /// never all held at once, and each chunk is read while it is still in cache.
    pub fn forward_from_each<T: Send>(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        first_row: usize,
        each: impl Fn(usize, &[f32]) -> T + Sync + Send,
    ) -> Result<Vec<T>> {
        use rayon::prelude::*;
        let vocab = self.vocab().max(1);
        let mut segments = [Segment {
            tokens,
            cache,
            first_row,
        }];
        if let Some(gpu) = &self.gpu {
            let logits = Self::forward_gpu(gpu, &mut segments)?;
            return Ok(logits
                .par_chunks(vocab)
                .enumerate()
                .map(|(k, row)| each(k, row))
                .collect());
        }
        crate::pool::on_pool(|| {
            let emb = self.config.embedding;
            let x = self.hidden_on_pool(&mut segments)?;
            let mut out = Vec::with_capacity(x.len() / emb.max(1));
            let mut logits = Vec::new();
            for (c, rows) in x.chunks(HEAD_ROWS * emb.max(1)).enumerate() {
                self.output.forward_into(rows, emb, emb, &mut logits)?;
                out.par_extend(
                    logits
                        .par_chunks(vocab)
                        .enumerate()
                        .map(|(k, row)| each(c * HEAD_ROWS + k, row)),
                );
            }
            Ok(out)
        })
    }

    /// The output matrix and its screen, where greedy scoring screens its argmax: a Q8_0
    /// output matrix on the CPU, with AMX tiles or AVX-512 VNNI (the screen's integer sums run
    /// on them; with AVX2 alone it would cost more than the product it saves). Makes the
    /// screen on first call.
    fn screened_output(&self) -> Option<(&Q80Matrix, &Screen)> {
        match &self.output {
            Linear::Q80(m) if self.gpu.is_none() && Kernel::best() >= Kernel::Avx512Vnni => self
                .screen
                .get_or_init(|| Screen::new(m))
                .as_ref()
                .map(|s| (m, s)),
            _ => None,
        }
    }

    /// Rows whose argmax the screen found ([`Weights::forward_argmax`]), since loading.
    pub fn screened_rows(&self) -> u64 {
        self.screened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Make the output matrix's screen now (about 28 MiB for SmolLM2, built on this thread in
    /// about 0.25 s) rather than in the first [`Weights::forward_argmax`]: what a validator
    /// does when its role starts. Nothing where the screen is not used.
    pub fn prepare_screen(&self) {
        let _ = self.screened_output();
    }

    /// [`Weights::forward_from`]'s wanted rows' largest logit (`argmax`: which, on a row of
    /// logits, as generation picks it) and the logit of that row's target token (`targets`,
    /// one per row): what a greedy check needs of each position. Where the output matrix has
    /// a screen ([`crate::quant::screen`]) only a few logits per row are computed, the same
    /// numbers, bit for bit, as the whole row's (the argmax too: the first of equal largest
    /// logits, which `argmax` must also pick); rows the screen hands back, and every row
    /// elsewhere, are computed in full.
    pub fn forward_argmax(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        first_row: usize,
        targets: &[u32],
        argmax: impl Fn(&[f32]) -> u32 + Sync + Send,
    ) -> Result<Vec<Best>> {
        use rayon::prelude::*;
        let full = |k: usize, row: &[f32]| -> Result<Best> {
            let id = argmax(row);
            let at = |t: u32| {
                row.get(t as usize)
                    .copied()
                    .ok_or_else(|| candle_core::Error::Msg(format!("no logit for token {t}")))
            };
            let t = *targets
                .get(k)
                .ok_or_else(|| candle_core::Error::Msg(format!("no target for row {k}")))?;
            Ok(Best {
                id,
                logit: at(id)?,
                target: at(t)?,
            })
        };
        let Some((matrix, screen)) = self.screened_output() else {
            return self
                .forward_from_each(tokens, cache, first_row, full)?
                .into_iter()
                .collect();
        };
        let mut segments = [Segment {
            tokens,
            cache,
            first_row,
        }];
        crate::pool::on_pool(|| {
            let emb = self.config.embedding;
            let x = self.hidden_on_pool(&mut segments)?;
            if x.len() != targets.len() * emb {
                candle_core::bail!(
                    "{} targets for {} rows",
                    targets.len(),
                    x.len() / emb.max(1)
                );
            }
            let mut found = screen
                .argmax(matrix, Kernel::best(), &x, targets)
                .unwrap_or_else(|| vec![None; targets.len()]);
            // The rows handed back, in full (as `forward_from_each` computes them).
            let rest: Vec<usize> = (0..found.len()).filter(|&k| found[k].is_none()).collect();
            self.screened.fetch_add(
                (found.len() - rest.len()) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let vocab = self.vocab().max(1);
            let mut logits = Vec::new();
            for part in rest.chunks(HEAD_ROWS) {
                let rows: Vec<f32> = part
                    .iter()
                    .flat_map(|&k| &x[k * emb..(k + 1) * emb])
                    .copied()
                    .collect();
                self.output.forward_into(&rows, emb, emb, &mut logits)?;
                let bests: Vec<Result<Best>> = logits
                    .par_chunks(vocab)
                    .zip(part.par_iter())
                    .map(|(row, &k)| full(k, row))
                    .collect();
                for (&k, b) in part.iter().zip(bests) {
                    found[k] = Some(b?);
                }
            }
            found
                .into_iter()
                .map(|b| b.ok_or_else(|| candle_core::Error::Msg("a row was not scored".into())))
                .collect()
        })
    }

    /// The layers of a pass: the wanted rows' final hidden states, normed (the output
    /// projection's input), rows as [`Weights::forward_segments`] orders them.
    fn hidden_on_pool(&self, segments: &mut [Segment<'_>]) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let c = &self.config;
        let emb = c.embedding;
        let vocab = self.vocab();
        let starts: Vec<usize> = segments.iter().map(|s| s.cache.len).collect();
        // Where each segment's rows start in the pass.
        let offsets: Vec<usize> = segments
            .iter()
            .scan(0, |at, s| {
                let here = *at;
                *at += s.tokens.len();
                Some(here)
            })
            .collect();
        let mut x: Vec<f32> = Vec::new();
        for (seg, &start) in segments.iter().zip(&starts) {
            if start + seg.tokens.len() > c.context_length {
                candle_core::bail!(
                    "{} positions exceed the context of {}",
                    start + seg.tokens.len(),
                    c.context_length
                );
            }
            if seg.cache.layers.len() != self.blocks.len() {
                candle_core::bail!("the cache was not made for this model");
            }
            if seg.cache.layers.iter().any(|l| l.len() < start) {
                candle_core::bail!("the cache holds fewer positions than its length says");
            }
            for &t in seg.tokens {
                let t = t as usize;
                if t >= vocab {
                    candle_core::bail!("token {t} is outside the vocabulary");
                }
                match (&self.embeddings, &self.output) {
                    (Some(e), _) => x.extend_from_slice(&e[t * emb..(t + 1) * emb]),
                    (None, Linear::Q80(m)) => x.extend(m.row(t)),
                    (None, _) => candle_core::bail!("tied embeddings must be a Q8_0 matrix"),
                }
            }
        }
        let half = c.head_dim / 2;
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let eps = c.rms_eps as f32;
        // The pass's intermediate results, reused layer after layer (the products write every
        // value, so a reused buffer is neither reallocated nor cleared).
        let (mut h, mut qkv, mut gu, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Each segment's rotated queries and keys and its attention output, reused the same
        // way (clearing a scoring pass's 0.9 MB of them, layer after layer, was serial work).
        let mut scratch: Vec<[Vec<f32>; 3]> = segments.iter().map(|_| Default::default()).collect();
        let mut attn = Vec::new();
        // Sequences that do not divide evenly among the threads: their attention is split
        // finer, so that the thread with one sequence fewer can help.
        let spread = !segments
            .len()
            .is_multiple_of(rayon::current_num_threads().max(1));
        for (layer, block) in self.blocks.iter().enumerate() {
            // The last layer's output (in `o`) is added to `x` as this layer's first norm
            // reads it.
            let last = (layer > 0).then_some(&o[..]);
            rms_norm_into(&mut x, last, &block.attn_norm, eps, &mut h);
            block.qkv.forward_into(&h, emb, &mut qkv)?;
            // Per segment, on the pool (one task each, so that no serial stretch lets the
            // pool's threads fall asleep before attention): its queries rotated, its keys and
            // values appended to its cache, then its attention. A long segment (a prompt, a
            // scored continuation) also splits its rows over the pool; rows are independent.
            let width = qn + 2 * kvn;
            // A thread attends for its segments in order: while one decoded row attends, the
            // next segment's cache is asked for (`attention::Ahead`; only its addresses are
            // taken here). Not where the attention is split finer (`spread`): its items run on
            // any thread.
            let aheads: Vec<crate::attention::Ahead> = if spread {
                Vec::new()
            } else {
                segments
                    .iter()
                    .map(|s| s.cache.layers[layer].ahead())
                    .collect()
            };
            segments
                .par_iter_mut()
                .zip(scratch.par_iter_mut())
                .zip(&starts)
                .zip(&offsets)
                .enumerate()
                .for_each(|(k, (((seg, [q, kv, out]), &start), &off))| {
                    let seq = seg.tokens.len();
                    let cache = &mut seg.cache.layers[layer];
                    // Every value is written below: only a buffer's growth is cleared. `kv`
                    // holds each row's rotated keys, then its values.
                    q.resize(seq * qn, 0.0);
                    kv.resize(seq * 2 * kvn, 0.0);
                    q.par_chunks_mut(qn)
                        .zip(kv.par_chunks_mut(2 * kvn))
                        .zip(qkv[off * width..(off + seq) * width].par_chunks(width))
                        .enumerate()
                        .with_min_len(ROWS_PER_TASK)
                        .for_each(|(i, ((q, kv), row))| {
                            let pos = start + i;
                            let (cos, sin) = (
                                &self.cos[pos * half..(pos + 1) * half],
                                &self.sin[pos * half..(pos + 1) * half],
                            );
                            q.copy_from_slice(&row[..qn]);
                            rope(q, cos, sin);
                            kv.copy_from_slice(&row[qn..]);
                            rope(&mut kv[..kvn], cos, sin);
                        });
                    // Positions from `start` on are written (again, after a failed pass).
                    cache.truncate(start);
                    cache.push(kv);
                    let mut ahead = match seq {
                        1 => aheads.get(k + 1).copied().unwrap_or_default(),
                        _ => Default::default(),
                    };
                    crate::attention::causal_into(q, cache, start, seq, spread, &mut ahead, out);
                });
            let attn: &[f32] = match &scratch[..] {
                [[_, _, out]] => out,
                _ => {
                    attn.clear();
                    for [_, _, out] in &scratch {
                        attn.extend_from_slice(out);
                    }
                    &attn
                }
            };
            block.wo.forward_into(attn, qn, qn, &mut o)?;
            rms_norm_into(&mut x, Some(&o), &block.ffn_norm, eps, &mut h);
            // SiLU of the gate times the up projection, in place of the gate: the down
            // projection reads each row's first half.
            block.gate_up.forward_into(&h, emb, &mut gu)?;
            gu.par_chunks_mut(2 * self.ffn)
                .with_min_len(4)
                .for_each(|row| {
                    let (g, u) = row.split_at_mut(self.ffn);
                    silu_mul(g, u);
                });
            block
                .down
                .forward_into(&gu, self.ffn, 2 * self.ffn, &mut o)?;
        }
        // The rows asked for: each segment's from its first_row on, with the last layer's
        // output added as the final norm reads them. Every row's activations are quantized on
        // their own and each output is one dot product per row and column, so projecting the
        // rows together gives each row's numbers exactly.
        let (mut wanted, mut last) = (Vec::new(), Vec::new());
        let mut at = 0;
        for seg in segments.iter_mut() {
            let seq = seg.tokens.len();
            let first = seg.first_row.min(seq);
            let rows = (at + first) * emb..(at + seq) * emb;
            wanted.extend_from_slice(&x[rows.clone()]);
            if !self.blocks.is_empty() {
                last.extend_from_slice(&o[rows]);
            }
            at += seq;
            seg.cache.len += seq;
        }
        let mut normed = Vec::new();
        let last = (!self.blocks.is_empty()).then_some(&last[..]);
        rms_norm_into(&mut wanted, last, &self.norm, eps, &mut normed);
        Ok(normed)
    }
}

/// Rows of logits [`Weights::forward_from_each`] computes at a time: 9 MB of logits, and a
/// multiple of the rows the output projection's kernel takes through its weights at once (24
/// for 576-wide rows), so that chunking does not read the weights more often.
const HEAD_ROWS: usize = 48;

/// One sequence's part of a batched pass: tokens fed after what its cache holds, and from which
/// of them logits are wanted.
#[derive(Debug)]
pub struct Segment<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut Cache,
    pub first_row: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of every magnitude the activations take, some zero, some negative.
    fn numbers(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let unit = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if i % 17 == 0 {
                    0.0
                } else {
                    unit * (1 << (i % 13)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn silu_gives_the_reference_bits() {
        // Lengths around the sixteen-value vectors, values of every magnitude, and the edges.
        for n in [1, 15, 16, 17, 1536, 1549] {
            let mut g = numbers(n, 5);
            for (i, v) in g.iter_mut().enumerate().filter(|(i, _)| i % 29 == 3) {
                *v = [
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    -120.0,
                    100.0,
                    -0.0,
                ][i % 6];
            }
            let u = numbers(n, 6);
            let want: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g / (1.0 + crate::exp::exp(-g)) * u)
                .collect();
            silu_mul(&mut g, &u);
            for (i, (a, b)) in g.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{n} values, value {i}: {a:e} against {b:e}"
                );
            }
        }
    }

    #[test]
    fn rope_gives_the_reference_bits() {
        // SmolLM2's heads (32 pairs) and others whose pairs fill vectors (8, 16) or do not
        // (4, 12: the loop's way); angles of real positions and values of every magnitude.
        for half in [4, 8, 12, 16, 32] {
            for pos in [0usize, 1, 7, 1000, 8191] {
                let (cos, sin): (Vec<f32>, Vec<f32>) = (0..half)
                    .map(|i| {
                        let theta = 10_000f64.powf(-2.0 * i as f64 / (2 * half) as f64);
                        let a = pos as f64 * theta;
                        (a.cos() as f32, a.sin() as f32)
                    })
                    .unzip();
                let mut x = numbers(6 * 2 * half, (half * 31 + pos) as u64);
                x[3] = f32::NAN;
                x[2 * half + 1] = f32::INFINITY;
                let mut want = x.clone();
                for head in want.chunks_exact_mut(2 * half) {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                }
                rope(&mut x, &cos, &sin);
                for (i, (a, b)) in x.iter().zip(&want).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{half} pairs, position {pos}, value {i}: {a:e} against {b:e}"
                    );
                }
            }
        }
    }

    /// The norm as its documentation states it, one row at a time.
    fn rms_norm_reference(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
        let n = weight.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(n) {
            let mut sum = 0f32;
            for &v in row {
                sum += v * v;
            }
            let m = (sum / n as f32 + eps).sqrt();
            out.extend(row.iter().zip(weight).map(|(&v, &w)| v / m * w));
        }
        out
    }

    #[test]
    fn norms_side_by_side_give_each_row_its_own_bits() {
        let n = 576;
        let weight = numbers(n, 7);
        // Whole groups of rows, a partial group, a single row.
        for rows in [1, 3, 8, 16, 21, 168] {
            let x = numbers(rows * n, rows as u64);
            let got = rms_norm(&x, &weight, 1e-5);
            let want = rms_norm_reference(&x, &weight, 1e-5);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{rows} rows, value {i}");
            }
        }
        // Row widths with a partial 16-column block (and none whole), groups of 16 rows.
        for (n, rows) in [(100, 32), (40, 16), (7, 17), (16, 48)] {
            let weight = numbers(n, 3);
            let x = numbers(rows * n, n as u64);
            let got = rms_norm(&x, &weight, 1e-5);
            let want = rms_norm_reference(&x, &weight, 1e-5);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{rows} rows of {n}, value {i}");
            }
        }
    }
}
