//! Quantized matrix products with SIMD kernels (AVX-512 VNNI, AVX2) and a scalar reference that
//! compute the same numbers bit for bit.
//!
//! Candle's Q4_1 dot product is scalar; these kernels keep the file's quantized weights (Q4_1
//! and Q8_0, the same bytes per weight) and quantize each block of 32 activations to 8 bits as
//! llama.cpp does (`d = max|x| / 127`, `q = round(x / d)`, `d` rounded to f16; Q8_1's
//! `s = f16(d * sum(q))` for Q4_1).
//!
//! # Layout
//!
//! Weights are stored in *panels*: one block (32 inputs) of 16 consecutive output rows, the rows
//! interleaved four inputs at a time, so that one 64-byte vector holds four inputs of sixteen
//! rows. A SIMD lane is then one output row: an AVX-512 `vpdpbusd` multiplies four weights of
//! each of 16 rows by the same four activations (broadcast) and adds them into that row's lane,
//! and no horizontal sums are needed. Rows are padded to a multiple of 16.
//!
//! # The arithmetic (every kernel computes exactly this)
//!
//! For output row `c` and activation row `r`, over the blocks `b` of the row in order:
//!
//! ```text
//! P    = sum over the block of q_w * q_x                  an exact integer
//! A    = fma(P, d_w[b] * d_x[b], A)                        d_w * d_x rounded to f32
//! M    = fma(m_w[b], s_x[b], M)                            Q4_1 only (its minimums)
//! out  = A + M                                             (Q8_0: A)
//! ```
//!
//! starting from `A = M = 0`. The integer sums are exact whatever order the instructions take
//! them in and every float operation is fixed (fused multiply-adds included), so the AVX-512,
//! AVX2 and scalar kernels agree bit for bit: a validator on one CPU reproduces a miner's numbers
//! on another (the tests compare all three). Each output is computed by one thread, so the
//! thread count does not change results either, and a row's outputs do not depend on the other
//! rows it is multiplied with.

pub mod q4_1;
pub mod q8_0;
pub mod screen;

use half::f16;

/// Values per quantization block.
pub(crate) const BLOCK: usize = 32;
/// Output rows per panel (one SIMD lane each).
const PANEL: usize = 16;

/// Which kernel computes the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 as Ice Lake and later have it: F, BW, VL and VNNI, and the other
    /// extensions `multiversion` requires of its AVX-512 versions (GFNI among them).
    Avx512Vnni,
    /// [`Kernel::Avx512Vnni`] and Intel AMX (AMX-TILE and AMX-INT8, Sapphire Rapids and
    /// later, granted to the process by the system: [`agora_amx::available`]): products of
    /// 32 or more activation rows (`AMX_ROWS`) go through the tiles (see `x86::outputs_amx`),
    /// fewer through the AVX-512 kernel. The same bits as every other kernel.
    Amx,
}

/// The fewest activation rows whose product the AMX kernel takes through the tiles: a
/// decoding pass's few rows stream their weights from memory, and unpacking each panel row's
/// weights into the tiles' layout pays off only over several tiles of rows.
pub(crate) const AMX_ROWS: usize = 32;

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c");
            // Every feature `multiversion` adds to an AVX-512 target: without one of them the
            // kernels' dispatch runs their AVX2 versions, and this names what runs.
            if avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512cd")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512ifma")
                && std::is_x86_feature_detected!("avx512vbmi")
                && std::is_x86_feature_detected!("avx512vbmi2")
                && std::is_x86_feature_detected!("avx512bitalg")
                && std::is_x86_feature_detected!("avx512vpopcntdq")
                && std::is_x86_feature_detected!("gfni")
                && std::is_x86_feature_detected!("vaes")
                && std::is_x86_feature_detected!("vpclmulqdq")
            {
                return if agora_amx::available() {
                    Kernel::Amx
                } else {
                    Kernel::Avx512Vnni
                };
            }
            if avx2 {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Amx => "amx",
        }
    }
}

/// One block of 32 activations quantized to 8 bits. Plain bytes (`Pod`, no padding) so that
/// the AMX kernel reads a tile's rows straight out of a product's activations.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct ActBlock {
    pub(crate) q: [i8; BLOCK],
    /// The scale, rounded to f16.
    pub(crate) d: f32,
    /// `d * sum(q)` rounded to f16 (Q8_1's `s`).
    pub(crate) s: f32,
    /// `-128 * sum(q)`: the correction when weights are fed to `vpdpbusd` as `q_w + 128`.
    pub(crate) offset: i32,
}

pub(crate) const ZERO_ACT: ActBlock = ActBlock {
    q: [0; BLOCK],
    d: 0.0,
    s: 0.0,
    offset: 0,
};

/// Quantize one row of activations, appending `blocks` blocks (zero blocks after its end).
#[cfg(test)]
fn quantize_row(x: &[f32], blocks: usize, out: &mut Vec<ActBlock>) {
    let at = out.len();
    out.resize(at + blocks, ZERO_ACT);
    quantize_into(x, &mut out[at..]);
}

/// Quantize one row of activations into `out` (one block per 32 values; zero blocks after the
/// row's end): with AVX-512 where the CPU has it, else [`quantize_scalar`]; both compute the
/// same bits (`simd_quantization_gives_the_scalar_bits`).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c"))]
pub(crate) fn quantize_into(x: &[f32], out: &mut [ActBlock]) {
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx2+fma+f16c" => x86::quantize_avx512(x, out),
        _ => quantize_scalar(x, out),
    }
}

/// The reference quantization, block by block as the module documentation states. Compiled
/// for AVX2 besides the baseline (the rounding is then instructions, not calls).
#[multiversion::multiversion(targets("x86_64+avx2+fma+f16c"))]
fn quantize_scalar(x: &[f32], out: &mut [ActBlock]) {
    let mut chunks = x.chunks_exact(BLOCK);
    for o in out.iter_mut() {
        let Some(b) = chunks.next() else {
            *o = ZERO_ACT;
            continue;
        };
        let amax = b.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0i8; BLOCK];
        for (q, &v) in q.iter_mut().zip(b) {
            *q = (v * id).round() as i8;
        }
        let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
        *o = ActBlock {
            q,
            d: f16::from_f32(d).to_f32(),
            s: f16::from_f32(sum as f32 * d).to_f32(),
            offset: -128 * sum,
        };
    }
}

/// Quantize the rows of `x` (each `stride` values, of which the first `cols` are the row's) to
/// `blocks` blocks each, into `acts` (its contents replaced: every block is written, so only
/// its growth is cleared), on rayon's threads when there are enough of them (each row on its
/// own, so the result is the same either way).
fn quantize_rows(x: &[f32], cols: usize, stride: usize, blocks: usize, acts: &mut Vec<ActBlock>) {
    use rayon::prelude::*;
    /// Values per parallel task.
    const PER_TASK: usize = 8192;
    let stride = stride.max(cols).max(1);
    let m = x.len() / stride;
    acts.truncate(m * blocks);
    acts.resize(m * blocks, ZERO_ACT);
    let rows_per_task = (PER_TASK / cols.max(1)).max(1);
    // Rows of whole blocks that lie end to end are quantized as one run of blocks: alone, a
    // row of 18 blocks (SmolLM2's 576 values) is a SIMD group of 16 blocks and one of 2, which
    // costs about what 16 do (168 such rows on one thread: 23 us a row at a time, 16 us as one
    // run). Each block's numbers are its own either way.
    let contiguous = stride == cols && cols == blocks * BLOCK;
    let quantize = |out: &mut [ActBlock], xs: &[f32]| {
        if contiguous {
            quantize_into(xs, out);
            return;
        }
        for (o, row) in out.chunks_mut(blocks).zip(xs.chunks_exact(stride)) {
            quantize_into(&row[..cols], o);
        }
    };
    if m > rows_per_task {
        acts.par_chunks_mut(rows_per_task * blocks)
            .zip(x[..m * stride].par_chunks(rows_per_task * stride))
            .for_each(|(out, xs)| quantize(out, xs));
    } else {
        quantize(acts, x);
    }
}

/// The largest activation buffer, in bytes, that a thread keeps for its next product
/// ([`ACTS`]): a scoring pass's largest (168 rows of the down projection's 48 blocks, about
/// 355 KB) with room to spare; a long prompt's are allocated for it and freed.
const KEPT_ACTS: usize = 1 << 20;

thread_local! {
    /// The quantized activations of this thread's last product, kept for its next one. A
    /// scoring pass allocated and cleared them anew for each of its 120 layer products, on
    /// the calling thread while the other waited: quantizing took 29-99 us per product on two
    /// threads, 18-67 us with the buffer kept (temporary timers, session 21), about 2 ms of a
    /// 168-row pass's 86. Taken out while a product uses it, so that a product this thread
    /// runs meanwhile (another pass's, picked up while this one waits for its tasks)
    /// allocates its own.
    static ACTS: std::cell::Cell<Vec<ActBlock>> = const { std::cell::Cell::new(Vec::new()) };
    /// The AMX kernel's copy of this thread's last product's activations ([`pack_tiles`]),
    /// kept as [`ACTS`] is.
    static TILE_ACTS: std::cell::Cell<Vec<ActTile>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One block of 16 activation rows as the AMX kernel takes it: the tile's 16 rows of 32 bytes
/// (its rows read straight out of the activation rows were 32 bytes from 16 lines, many across
/// two lines), then the rows' scales and `s`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub struct ActTile {
    pub(crate) q: [[i8; BLOCK]; 16],
    pub(crate) d: [f32; 16],
    pub(crate) s: [f32; 16],
}

/// The rows of `acts` (rows of `blocks` blocks) as tiles of 16 rows into `out` (replaced), tile
/// after tile, each tile's blocks in order; a last tile's missing rows are zeros (their sums are
/// zero and their outputs are not written).
fn pack_tiles(acts: &[ActBlock], blocks: usize, out: &mut Vec<ActTile>) {
    let blocks = blocks.max(1);
    out.clear();
    out.reserve(acts.len().div_ceil(16 * blocks) * blocks);
    for rows in acts.chunks(16 * blocks) {
        for b in 0..blocks {
            let mut t = ActTile {
                q: [[0; BLOCK]; 16],
                d: [0.0; 16],
                s: [0.0; 16],
            };
            for (r, ab) in rows.iter().skip(b).step_by(blocks).enumerate() {
                t.q[r] = ab.q;
                t.d[r] = ab.d;
                t.s[r] = ab.s;
            }
            out.push(t);
        }
    }
}

/// A weight format: its panel, and the kernels.
pub trait Format {
    /// One block of 16 rows.
    type Panel: Sync + Send + std::fmt::Debug;
    /// Every output of a chunk: `panels` holds whole panel rows (`blocks` panels each); `out`
    /// holds one slice per activation row (`acts.len() / blocks` of them), the chunk's outputs
    /// of that row: 16 per panel row, fewer for a last, partial panel. `tiles`: the same
    /// activations as tiles of 16 rows for the AMX kernel (`pack_tiles`), or empty.
    fn outputs(
        kernel: Kernel,
        panels: &[Self::Panel],
        blocks: usize,
        acts: &[ActBlock],
        tiles: &[ActTile],
        out: &mut [&mut [f32]],
    );
}

/// A weight matrix of `rows` outputs by `cols` inputs in format `F`.
#[derive(Debug)]
pub struct QMatrix<F: Format> {
    rows: usize,
    cols: usize,
    /// Blocks per row (the last zero-padded when `cols` is not a multiple of 32).
    blocks: usize,
    /// Panel rows (of 16 output rows) by blocks.
    panels: Vec<F::Panel>,
}

impl<F: Format> QMatrix<F> {
    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Several matrices with the same inputs and whole panels (rows a multiple of 16) as one,
    /// their rows in order; the parts back otherwise.
    pub fn stack(parts: Vec<QMatrix<F>>) -> Result<QMatrix<F>, Vec<QMatrix<F>>> {
        let Some(first) = parts.first() else {
            return Err(parts);
        };
        let (cols, blocks) = (first.cols, first.blocks);
        if parts.iter().any(|p| p.cols != cols || p.rows % PANEL != 0) {
            return Err(parts);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut panels = Vec::with_capacity(rows / PANEL * blocks);
        for p in parts {
            panels.extend(p.panels);
        }
        Ok(QMatrix {
            rows,
            cols,
            blocks,
            panels,
        })
    }

    /// `x` is `m` rows of `cols` values; returns `m` rows of `rows` values, with the best
    /// kernel for this CPU.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_with(Kernel::best(), x)
    }

    /// [`QMatrix::matmul`] with a given kernel (at most the best this CPU runs). Output rows are
    /// split among rayon's threads in parts of whole panels (see `task_bounds`); each
    /// output is computed by one thread, so the split does not change the numbers. Each chunk
    /// writes its columns of every output row in place (one slice per row and chunk): no
    /// panel-ordered scratch to clear and copy back, which cost a scoring pass of 168 rows
    /// about a seventh of its time.
    pub fn matmul_with(&self, kernel: Kernel, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.product(kernel, x, self.cols, &mut out);
        out
    }

    /// [`QMatrix::matmul`] into `out` (its contents replaced, its allocation reused: a pass's
    /// products of the same shape, layer after layer, neither allocate nor clear their
    /// outputs), of rows that lie `stride` values apart in `x`, each row's inputs the first
    /// `cols` of them (the rest not read: part of a wider result, without copying it out).
    pub fn matmul_into(&self, x: &[f32], stride: usize, out: &mut Vec<f32>) {
        self.product(Kernel::best(), x, stride, out);
    }

    /// [`QMatrix::matmul_into`] with a given kernel (at most the best this CPU runs), rows
    /// `cols` apart.
    pub fn matmul_into_with(&self, kernel: Kernel, x: &[f32], out: &mut Vec<f32>) {
        self.product(kernel, x, self.cols, out);
    }

    fn product(&self, kernel: Kernel, x: &[f32], stride: usize, out: &mut Vec<f32>) {
        use rayon::prelude::*;
        let kernel = kernel.min(Kernel::best());
        let mut buffer = ACTS.take();
        quantize_rows(x, self.cols, stride, self.blocks, &mut buffer);
        let acts = &buffer;
        let m = acts.len() / self.blocks.max(1);
        // The AMX kernel's copy of the activations as tiles, once per product (every task
        // reads all of it), in a buffer kept per thread as the activations' is.
        let mut packed = TILE_ACTS.take();
        packed.clear();
        if kernel == Kernel::Amx && m >= AMX_ROWS {
            pack_tiles(acts, self.blocks, &mut packed);
        }
        let tiles = &packed;
        let panel_rows = self.panels.len() / self.blocks.max(1);
        let bounds = task_bounds(panel_rows, m, rayon::current_num_threads());
        // Every value is written below: only a buffer's growth is cleared.
        out.truncate(m * self.rows);
        out.resize(m * self.rows, 0.0);
        let mut parts: Vec<Vec<&mut [f32]>> =
            bounds.windows(2).map(|_| Vec::with_capacity(m)).collect();
        for row in out.chunks_mut(self.rows.max(1)) {
            let mut rest = row;
            for (part, task) in parts.iter_mut().zip(bounds.windows(2)) {
                let width = (task[1] - task[0]) * PANEL;
                let (mine, others) = rest.split_at_mut(width.min(rest.len()));
                part.push(mine);
                rest = others;
            }
        }
        parts
            .par_iter_mut()
            .zip(bounds.par_windows(2))
            .for_each(|(part, task)| {
                let (first, n) = (task[0] * self.blocks, (task[1] - task[0]) * self.blocks);
                F::outputs(
                    kernel,
                    &self.panels[first..first + n],
                    self.blocks,
                    acts,
                    tiles,
                    part,
                );
            });
        if buffer.capacity() * std::mem::size_of::<ActBlock>() <= KEPT_ACTS {
            ACTS.set(buffer);
        }
        if packed.capacity() * std::mem::size_of::<ActTile>() <= KEPT_ACTS * 2 {
            TILE_ACTS.set(packed);
        }
    }
}

/// The reference kernels' loop (both formats): every output of a chunk as [`Format::outputs`]
/// lays them out, one `dot(panel_row, lane, activation_row)` each.
fn scalar_outputs<P>(
    panels: &[P],
    blocks: usize,
    acts: &[ActBlock],
    out: &mut [&mut [f32]],
    dot: impl Fn(&[P], usize, &[ActBlock]) -> f32,
) {
    for (g, p) in panels.chunks_exact(blocks).enumerate() {
        for (a, o) in acts.chunks_exact(blocks).zip(out.iter_mut()) {
            for (i, v) in o[g * PANEL..].iter_mut().take(PANEL).enumerate() {
                *v = dot(p, i, a);
            }
        }
    }
}

/// Where each parallel task's panel rows begin in a product of `panel_rows` panel rows by `m`
/// activation rows, and where the last one ends: parts as equal as whole panel rows allow
/// (sizes differ by at most one). Four tasks per thread, so that the threads finish together
/// while each task holds enough work that scheduling it costs little (a pass of one row used
/// to spend more on scheduling its tasks of two panel rows than on computing them) and reuses
/// the activations it has in cache across its panel rows.
///
/// A batched decoding pass (2 to [`FEW_ROWS`] rows) takes one task per thread on the layers'
/// matrices (up to [`FEW_PANEL_ROWS`] panel rows): each of its tasks starts with its first
/// blocks' weights coming from memory while the arithmetic waits on them (a single row's
/// product streams them anyway, and a long prompt's tasks are long), and a layer's product of
/// eight rows is only about 20-70 us, so four starts per thread cost more than the finer split
/// saves. `--example streams 8 128`, two sets of four alternated pairs: 8 streams 777 against
/// 743 and 744 against 711 tok/s (about +5%; one stream unchanged). The output matrix (3,072
/// panel rows) gained nothing from it and keeps four tasks per thread, which a thread held up
/// elsewhere leaves less to wait on.
///
/// A pass of more rows (a prompt, a scored answer) takes two tasks per thread: each task is
/// long, and the last ones left one thread waiting. Before, tasks had a fixed size and the
/// last took what was left: SmolLM2's 36-panel-row products (`wo`, `down`) split as seven
/// tasks of five and one of one. A 168-row scoring pass, `--example streams 0 128 20`, seven
/// alternated rounds (session 21): four tasks per thread of a fixed size 87.4 ms on average,
/// of equal sizes 85.9, two per thread of equal sizes 84.7.
///
/// Only how work is split: every output is the same.
fn task_bounds(panel_rows: usize, m: usize, threads: usize) -> Vec<usize> {
    /// The most rows of a pass that takes one task per thread.
    const FEW_ROWS: usize = 32;
    /// The largest matrix, in panel rows, that a few-row pass splits one task per thread.
    const FEW_PANEL_ROWS: usize = 256;
    let per_thread = if (2..=FEW_ROWS).contains(&m) && panel_rows <= FEW_PANEL_ROWS {
        1
    } else if m > FEW_ROWS {
        2
    } else {
        4
    };
    let tasks = (per_thread * threads.max(1)).clamp(1, panel_rows.max(1));
    (0..=tasks).map(|k| k * panel_rows / tasks).collect()
}

/// Activation rows a kernel takes through all its panel rows before the next rows: as many as
/// fit in about 24 KiB (half a typical L1 data cache), in whole tiles of `tile` rows. A kernel
/// that ran each panel row over every row of a long prompt read the activations from L2 for
/// every panel row, about a third slower. But a chunk of `weight_bytes` too large to stay in L2
/// (the output matrix: about 3.7 MB per task) is read from memory again for every group, so
/// there the groups are larger: the output matrix's 48-row chunks of a scoring pass are one
/// group, not two. `--example kernels` on the output matrix's shape, 48 rows, with the Q8_0
/// tile's accumulators in registers: 233-245 -> 292-314 billion multiply-adds/s (both steps).
fn act_group(blocks: usize, tile: usize, weight_bytes: usize) -> usize {
    /// Bytes of activations a group may hold.
    const BUDGET: usize = 24 << 10;
    /// Weights of a chunk above which a group holds [`BIG_BUDGET`] bytes of activations.
    const BIG_WEIGHTS: usize = 512 << 10;
    /// Bytes of activations a group may hold when the chunk's weights do not stay in L2.
    const BIG_BUDGET: usize = 64 << 10;
    let budget = if weight_bytes > BIG_WEIGHTS {
        BIG_BUDGET
    } else {
        BUDGET
    };
    let rows = budget / (blocks.max(1) * std::mem::size_of::<ActBlock>());
    (rows / tile * tile).max(tile)
}

/// Split a GGUF tensor's bytes into rows of `blocks` blocks of `block_bytes` each and build
/// panels with `panel(rows_of_the_panel, block_index)`; rows past the end are `None`.
fn panels<P>(
    data: &[u8],
    rows: usize,
    blocks: usize,
    block_bytes: usize,
    panel: impl Fn(&[Option<&[u8]>; PANEL]) -> P,
) -> Vec<P> {
    let row_bytes = blocks * block_bytes;
    let mut out = Vec::with_capacity(rows.div_ceil(PANEL) * blocks);
    for g in 0..rows.div_ceil(PANEL) {
        for b in 0..blocks {
            let rows_here: [Option<&[u8]>; PANEL] = std::array::from_fn(|i| {
                let row = g * PANEL + i;
                (row < rows).then(|| {
                    let at = row * row_bytes + b * block_bytes;
                    &data[at..at + block_bytes]
                })
            });
            out.push(panel(&rows_here));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Pieces the SIMD kernels share, and the AVX-512 quantization of activations.

    use super::{ActBlock, ActTile, BLOCK, ZERO_ACT};
    use bytemuck::cast;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn quantize_avx512(x: &[f32], out: &mut [ActBlock]) {
        let (blocks, _) = x.as_chunks::<BLOCK>();
        let n = blocks.len().min(out.len());
        // Sixteen blocks at a time: their maxima and sums come out of one butterfly each
        // (lane `j` for block `j`), and their scales from one vector division each.
        for (b, o) in blocks[..n].chunks(16).zip(out[..n].chunks_mut(16)) {
            quantize_group(b, o);
        }
        for o in &mut out[n..] {
            *o = ZERO_ACT;
        }
    }

    /// The `permutex2var` indices of one butterfly level that halves groups of `2w` lanes of
    /// two vectors into groups of `w` (the first vector's groups, then the second's), the
    /// group's first (`hi` false) or second half.
    const fn halves(w: usize, hi: bool) -> [i32; 16] {
        let mut idx = [0i32; 16];
        let mut i = 0;
        while i < 16 {
            let k = i % 8;
            let lane = 16 * (i / 8) + (k / w) * 2 * w + k % w + if hi { w } else { 0 };
            idx[i] = lane as i32;
            i += 1;
        }
        idx
    }

    /// The four levels' indices (halves of 16, 8, 4 and 2 lanes).
    const LEVELS: [([i32; 16], [i32; 16]); 4] = [
        (halves(8, false), halves(8, true)),
        (halves(4, false), halves(4, true)),
        (halves(2, false), halves(2, true)),
        (halves(1, false), halves(1, true)),
    ];

    /// Lane `j` of the result: `v[j]`'s sixteen lanes merged by `merge` (a maximum or a sum:
    /// exact in any order), by four levels of `permutex2var` that each halve the groups. The
    /// permutes move bits, so f32 vectors go through as their bits.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    fn reduce_lanes(v: [__m512i; 16], merge: impl Fn(__m512i, __m512i) -> __m512i) -> __m512i {
        let mut v = v;
        let mut count = 16;
        for (lo, hi) in LEVELS {
            let (lo, hi): (__m512i, __m512i) = (cast(lo), cast(hi));
            for p in 0..count / 2 {
                let (a, b) = (v[2 * p], v[2 * p + 1]);
                v[p] = merge(
                    _mm512_permutex2var_epi32(a, lo, b),
                    _mm512_permutex2var_epi32(a, hi, b),
                );
            }
            count /= 2;
        }
        v[0]
    }

    /// [`super::quantize_scalar`]'s numbers for up to sixteen blocks: the largest magnitude
    /// (NaN ignored, as `f32::max` does), `d = amax / 127`, `q = round(x / d)` half away from
    /// zero, NaN to 0 and saturation to `i8` as `as i8` does. The rounding: clamp to
    /// `[-128, 127]` (NaN passes), add `0.5 - 2^-25` with the value's sign and truncate. For
    /// every f32 `t` with `|t| <= 128` that is `t.round()` (checked over all 2,248,146,946 of
    /// them, both signs, when this was written); the clamp covers what saturates (infinities
    /// where `d` is subnormal).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn quantize_group(blocks: &[[f32; BLOCK]], out: &mut [ActBlock]) {
        let n = blocks.len().min(out.len()).min(16);
        let zero = _mm512_setzero_ps();
        let values: [[__m512; 2]; 16] =
            std::array::from_fn(|j| blocks.get(j).map_or([zero; 2], |b| cast(*b)));
        // max(a, b) gives b when either is NaN: a NaN value leaves the running maximum.
        let amax = _mm512_castsi512_ps(reduce_lanes(
            values.map(|v| {
                _mm512_castps_si512(_mm512_max_ps(
                    _mm512_abs_ps(v[1]),
                    _mm512_max_ps(_mm512_abs_ps(v[0]), zero),
                ))
            }),
            |a, b| {
                _mm512_castps_si512(_mm512_max_ps(
                    _mm512_castsi512_ps(a),
                    _mm512_castsi512_ps(b),
                ))
            },
        ));
        let d = _mm512_div_ps(amax, _mm512_set1_ps(127.0));
        let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(d, zero);
        let id = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), d);
        // 0.5 - 2^-25, the largest f32 below a half.
        let below_half = _mm512_set1_epi32(0x3EFF_FFFF);
        let sign = _mm512_set1_epi32(i32::MIN);
        let (lowest, highest) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
        let mut q = [[0i8; BLOCK]; 16];
        let mut sums = [_mm512_setzero_si512(); 16];
        for j in 0..n {
            let idj = _mm512_permutexvar_ps(_mm512_set1_epi32(j as i32), id);
            let wide: [__m512i; 2] = values[j].map(|v| {
                let y = _mm512_mul_ps(v, idj);
                // `max` and `min` return their second operand when either is NaN: NaN stays.
                let t = _mm512_min_ps(highest, _mm512_max_ps(lowest, y));
                // below_half | (t & sign): the bits of 0.5 - 2^-25 with t's sign.
                let h = _mm512_ternarylogic_epi32::<0xF8>(below_half, _mm512_castps_si512(t), sign);
                let r = _mm512_cvttps_epi32(_mm512_add_ps(t, _mm512_castsi512_ps(h)));
                // NaN converts to i32::MIN; `as i8` gives 0. In -128..=127 otherwise: the 32-bit
                // integers are the 8-bit values.
                _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y), r)
            });
            q[j] = cast(wide.map(|w| _mm512_cvtepi32_epi8(w)));
            sums[j] = _mm512_add_epi32(wide[0], wide[1]);
        }
        let sum = reduce_lanes(sums, |a, b| _mm512_add_epi32(a, b));
        // The scale and `sum * d` rounded to f16 (to nearest, ties to even, as `half` rounds).
        let to_f16 = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
        let dh: [f32; 16] = cast(to_f16(d));
        let sh: [f32; 16] = cast(to_f16(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), d)));
        let offset: [i32; 16] = cast(_mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_slli_epi32::<7>(sum),
        ));
        for (j, o) in out.iter_mut().enumerate().take(n) {
            *o = ActBlock {
                q: q[j],
                d: dh[j],
                s: sh[j],
                offset: offset[j],
            };
        }
    }

    /// Ask for the cache lines `i` of `x` with `i % of == part` ahead of their use (a hint: it
    /// changes no result and cannot fault): a panel's lines spread over a tile's `of`
    /// activation rows, so that no burst of prefetches waits on the memory while the products
    /// behind it could run (`of = 1`: every line). `HINT` is the level (`_MM_HINT_T0` into L1,
    /// `_MM_HINT_T1` into L2).
    #[target_feature(enable = "sse")]
    #[inline]
    fn prefetch_part<const HINT: i32, T>(x: &T, part: usize, of: usize) {
        let at = (x as *const T).cast::<i8>();
        for line in (part * 64..std::mem::size_of::<T>()).step_by(64 * of.max(1)) {
            std::arch::x86_64::_mm_prefetch::<HINT>(at.wrapping_add(line));
        }
    }

    /// Prefetch for block `b` of panel row `p` (`next`: the chunk's panels after it): the
    /// block `near` blocks ahead into L1, its lines spread over `of` calls (this is call
    /// `part`, see [`prefetch_part`]), and with `far` (a product of one to three activation
    /// rows; a tile asks once, for its first row) also the block about [`FAR_BYTES`] ahead into
    /// L2.
    ///
    /// A core has only so many misses to L1 in flight, so a single row, which does little
    /// arithmetic per byte of weights, streams them at what those misses allow (about 10 GB/s
    /// per core here). Requests to L2 further ahead raise that: one core streaming 115 MB of
    /// panels went from about 10 to 16 GB/s, and one stream's generation got about 9% faster
    /// (see "Session 10's steps" in BENCHMARKS.md); two and three rows gained too (session
    /// 17). Products of more rows do not ask: there it gained nothing in eight-row passes, and
    /// it slowed a scoring pass by a fifth.
    #[target_feature(enable = "sse")]
    #[inline]
    pub(crate) fn prefetch_ahead<T>(
        p: &[T],
        next: &[T],
        b: usize,
        near: usize,
        (part, of): (usize, usize),
        far: bool,
    ) {
        let n = p.len();
        let at = |k: usize| p.get(b + k).or_else(|| next.get(b + k - n));
        if let Some(t) = at(near) {
            prefetch_part::<{ _MM_HINT_T0 }, T>(t, part, of);
        }
        if far && let Some(t) = at(near.max(FAR_BYTES / std::mem::size_of::<T>().max(1))) {
            prefetch_part::<{ _MM_HINT_T1 }, T>(t, 0, 1);
        }
    }

    /// Prefetch for block `b` of panel row `p` (`next`: the chunk's panels after it) in a
    /// product of a few rows whose weights come from memory (see [`L2_ROWS`]): the block
    /// `2 * near` blocks ahead into L2 only, its lines spread over `of` calls (this is call
    /// `part`, see [`prefetch_part`]), instead of [`prefetch_ahead`]'s `near` into L1.
    #[target_feature(enable = "sse")]
    #[inline]
    pub(crate) fn prefetch_ahead_l2<T>(
        p: &[T],
        next: &[T],
        b: usize,
        near: usize,
        (part, of): (usize, usize),
    ) {
        let n = p.len();
        if let Some(t) = p.get(b + 2 * near).or_else(|| next.get(b + 2 * near - n)) {
            prefetch_part::<{ _MM_HINT_T1 }, T>(t, part, of);
        }
    }

    /// The most rows of a product whose tiles of four or more rows ask L2 ahead for the
    /// weights ([`prefetch_ahead_l2`]): a batched decoding pass of a few streams, whose
    /// weights come from memory. An L1 request holds one of the core's few miss buffers until
    /// its line arrives, and with an eight-row tile's arithmetic between the requests the
    /// stream fell short of them. Q4_1, eight rows (session 20, alternated with the previous
    /// binary): `--example kernels avx512-vnni 8 cold:200`, 190-195 against 165-174 billion
    /// multiply-adds/s (the AVX2 kernel, 104-112 against 60-63); `--example streams 8 128`,
    /// 8 streams 768 against 733 tok/s on average over six runs, every one faster (+5% to
    /// +10% over four sets, BENCHMARKS.md). Products of 32 rows were slower so (150-175
    /// against 191-227 in the kernels example): their later tiles of a panel row find it in
    /// L1 when the first tile asked L1 for it.
    pub(crate) const L2_ROWS: usize = 12;

    /// How far ahead of its use a single row's product asks L2 for a panel.
    const FAR_BYTES: usize = 20 << 10;

    /// `$body` once for each `$r` in `0..$n` (`$n` a constant, at most 8, or 16), each copy
    /// with `$r` a constant: a tile's per-row accumulators are then indexed by constants and
    /// stay in registers. Left to the compiler, the Q8_0 tile's row loop stayed a loop in one of its
    /// versions and kept its eight accumulators on the stack (a load and a store per row and
    /// block), about a third slower than the Q4_1 tile at 168 rows.
    macro_rules! each_row {
        (16, |$r:ident| $body:block) => {
            each_row!(@ 16, $r, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
        };
        ($n:expr, |$r:ident| $body:block) => {
            each_row!(@ $n, $r, $body, 0 1 2 3 4 5 6 7)
        };
        (@ $n:expr, $r:ident, $body:block, $($i:literal)*) => {
            const { assert!($n <= 16, "each_row! unrolls at most 16 rows") };
            $(
                if $i < $n {
                    let $r: usize = $i;
                    $body
                }
            )*
        };
    }
    pub(super) use each_row;

    /// A weight panel as the AMX kernel takes it: one block of 16 rows in the tiles' layout,
    /// and its scales.
    pub(crate) trait AmxPanel {
        /// Whether the block's bytes in the tiles' layout are signed.
        const WEIGHTS: agora_amx::Weights;
        /// Whether the format has minimums (Q4_1: `out = A + M`; Q8_0: `out = A`).
        const MINIMUMS: bool;
        /// The block in the tiles' layout: row `k` holds inputs `4k..4k + 4` of each of the 16
        /// rows (see `agora_amx`).
        fn tile_bytes(&self, out: &mut [u8; agora_amx::WEIGHT_BYTES]);
        /// The rows' scales, f16 bits.
        fn scales(&self) -> [u16; 16];
        /// The rows' minimums, f16 bits (zeros where the format has none).
        fn minimums(&self) -> [u16; 16];
    }

    /// A chunk's outputs with the AMX tiles when the product has [`super::AMX_ROWS`] or more
    /// activation rows, its tiles were packed (`packed`: [`super::pack_tiles`]) and this thread
    /// gets the tiles ([`agora_amx::Tiles::configure`]), through [`amx_tiles`]. Returns how
    /// many rows it computed: all of them, or none (the caller then runs the AVX-512 kernel).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,gfni")]
    pub(crate) fn outputs_amx<P: AmxPanel>(
        panels: &[P],
        blocks: usize,
        acts: &[ActBlock],
        packed: &[ActTile],
        out: &mut [&mut [f32]],
    ) -> usize {
        let m = acts.len() / blocks.max(1);
        if m < super::AMX_ROWS || blocks == 0 || packed.len() != m.div_ceil(16) * blocks {
            return 0;
        }
        let Some(mut tiles) = agora_amx::Tiles::configure() else {
            return 0;
        };
        amx_tiles(&mut tiles, panels, blocks, packed, &mut out[..m]);
        m
    }

    /// A thread's buffers for [`amx_tiles`]: a chunk of panel rows' weights unpacked into the
    /// tiles' layout, their scales and their minimums as f32.
    #[derive(Default)]
    struct AmxScratch {
        weights: Vec<[u8; agora_amx::WEIGHT_BYTES]>,
        scales: Vec<[f32; 16]>,
        minimums: Vec<[f32; 16]>,
    }

    thread_local! {
        /// This thread's [`AmxScratch`], kept from one task to the next (taken while in use).
        static AMX_SCRATCH: std::cell::Cell<AmxScratch> =
            std::cell::Cell::new(AmxScratch::default());
    }

    /// Every output of a chunk with the AMX tiles, its activations as tiles of 16 rows
    /// (`packed`, a last tile padded with zero rows, whose outputs are not written). The chunk's
    /// panel rows go in chunks of about [`CHUNK_BYTES`] once unpacked into the tiles' layout;
    /// for each tile of activation rows (about 10-30 KB, in L1) and each panel row of the
    /// chunk (in L2), block after block: the integer sums `P` of 16 rows by 16 outputs in one
    /// `tdp` instruction, stored, and scaled into each row's chain exactly as the module's
    /// arithmetic states (`A = fma(P, d_w * d_x, A)`, [`agora_amx::scale_sums`]; the
    /// minimums' chain apart): the same bits as every other kernel.
    ///
    /// Four sum tiles in turn, so that a block's sums are stored two blocks after its `tdp`
    /// (the store waits for the product's result) and scaled one block after that (the scaling
    /// reads what the store wrote); two operand pairs, so that the next block's tiles load
    /// while this one's product waits. In C (`scripts/bench/amx_tile.c`), one thread: storing
    /// right after the product 339-345, deferred so 386-387 billion multiply-adds/s; the
    /// AVX-512 tile 208-224. Here (`--example kernels amx 160`, one thread, alternated):
    /// loading each block right before its product 271-281 (Q4_1) and 291-301 (Q8_0), a block
    /// ahead 277-304 and 303-328.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,gfni")]
    fn amx_tiles<P: AmxPanel>(
        tiles: &mut agora_amx::Tiles,
        panels: &[P],
        blocks: usize,
        packed: &[ActTile],
        out: &mut [&mut [f32]],
    ) {
        use agora_amx::WEIGHT_BYTES;
        let chunk = (CHUNK_BYTES / (blocks * WEIGHT_BYTES)).max(1);
        let mut scratch = AMX_SCRATCH.take();
        scratch.weights.resize(chunk * blocks, [0; WEIGHT_BYTES]);
        scratch.scales.resize(chunk * blocks, [0.0; 16]);
        scratch.minimums.resize(chunk * blocks, [0.0; 16]);
        let AmxScratch {
            weights,
            scales: dws,
            minimums: mws,
        } = &mut scratch;
        let mut sums = [[[0i32; 16]; 16]; agora_amx::SUM_TILES];
        let zero = _mm512_setzero_ps();
        for (ci, pc) in panels.chunks(chunk * blocks).enumerate() {
            for (b, pb) in pc.iter().enumerate() {
                pb.tile_bytes(&mut weights[b]);
                dws[b] = cast(_mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.scales())));
                if P::MINIMUMS {
                    mws[b] = cast(_mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.minimums())));
                }
            }
            for (g, rows) in packed.chunks_exact(blocks).enumerate() {
                for pj in 0..pc.len() / blocks {
                    let pi = ci * chunk + pj;
                    let at = pj * blocks..(pj + 1) * blocks;
                    let (w, dw, mw) = (&weights[at.clone()], &dws[at.clone()], &mws[at]);
                    // Only a matrix's last panel row can be partial.
                    let whole = out.first().is_none_or(|o| o.len() >= (pi + 1) * 16);
                    // The minimums' chains first, then kept in memory (`black_box`) rather
                    // than in 16 registers through the products' loop beside its 16 chains.
                    let mut mins = [zero; 16];
                    if P::MINIMUMS {
                        for (m, t) in mw.iter().zip(rows) {
                            let m: __m512 = cast(*m);
                            each_row!(16, |r| {
                                mins[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(t.s[r]), mins[r]);
                            });
                        }
                    }
                    let mins: [[f32; 16]; 16] = std::hint::black_box(mins.map(cast));
                    let mut acc = [zero; 16];
                    let k = P::WEIGHTS;
                    // Block `b`'s sums scaled into the rows' chains.
                    macro_rules! scale {
                        ($b:expr, $s:expr) => {
                            agora_amx::scale_sums(&mut acc, $s, cast(dw[$b]), &rows[$b].d)
                        };
                    }
                    // Block `i`'s operands into pair `i % 2`.
                    macro_rules! load {
                        ($x:literal, $i:expr) => {
                            tiles.load::<$x>(bytemuck::bytes_of(&rows[$i].q), 32, &w[$i])
                        };
                    }
                    // Step `i`: block `i + 1`'s operands loaded (into the other pair), block
                    // `i`'s product into tile `i % 4`, block `i - 2`'s sums out of tile
                    // `(i - 2) % 4`, block `i - 3`'s sums scaled.
                    macro_rules! step {
                        ($i:expr, $t:literal, $x:literal, $nx:literal, $st:literal) => {{
                            let i = $i;
                            load!($nx, i + 1);
                            tiles.multiply::<$t, $x>(k);
                            tiles.store::<$st>(&mut sums[$st]);
                            scale!(i - 3, &sums[($st + 3) % 4]);
                        }};
                    }
                    load!(0, 0);
                    let mut i = 0;
                    while i < blocks + 3 {
                        if i % 4 == 0 && i >= 4 && i + 4 < blocks {
                            // Four whole steps, every tile named by a constant.
                            step!(i, 0, 0, 1, 2);
                            step!(i + 1, 1, 1, 0, 3);
                            step!(i + 2, 2, 0, 1, 0);
                            step!(i + 3, 3, 1, 0, 1);
                            i += 4;
                            continue;
                        }
                        if i + 1 < blocks {
                            if i % 2 == 0 {
                                load!(1, i + 1);
                            } else {
                                load!(0, i + 1);
                            }
                        }
                        if i < blocks {
                            match i % 4 {
                                0 => tiles.multiply::<0, 0>(k),
                                1 => tiles.multiply::<1, 1>(k),
                                2 => tiles.multiply::<2, 0>(k),
                                _ => tiles.multiply::<3, 1>(k),
                            }
                        }
                        if (2..blocks + 2).contains(&i) {
                            match (i - 2) % 4 {
                                0 => tiles.store::<0>(&mut sums[0]),
                                1 => tiles.store::<1>(&mut sums[1]),
                                2 => tiles.store::<2>(&mut sums[2]),
                                _ => tiles.store::<3>(&mut sums[3]),
                            }
                        }
                        if i >= 3 {
                            scale!(i - 3, &sums[(i - 3) % 4]);
                        }
                        i += 1;
                    }
                    // Row by constant row, as everywhere `acc` is indexed: an index
                    // the compiler cannot resolve keeps the chains in memory.
                    each_row!(16, |r| {
                        let v = if P::MINIMUMS {
                            _mm512_add_ps(acc[r], cast(mins[r]))
                        } else {
                            acc[r]
                        };
                        let lanes: [f32; 16] = cast(v);
                        // A last tile's padding rows (zeros) have no outputs.
                        if let Some(o) = out.get_mut(g * 16 + r) {
                            if whole {
                                o[pi * 16..pi * 16 + 16].copy_from_slice(&lanes);
                            } else {
                                let o = &mut o[pi * 16..];
                                let n = o.len().min(16);
                                o[..n].copy_from_slice(&lanes[..n]);
                            }
                        }
                    });
                }
            }
        }
        AMX_SCRATCH.set(scratch);
    }

    /// Unpacked weights [`amx_tiles`] holds at a time: 128 KB, in L2 with the activations.
    /// In a 168-row scoring pass (`--example streams 0 128 20`, two runs each, session 22,
    /// before the operand pairs): 32 KB
    /// 76-80 ms, 64 KB 75-76, 128 KB 70-77, 256 KB 75-76, 768 KB 81; one panel row at a time
    /// (each tile of activations read from L2 for every panel row) 84-85.
    const CHUNK_BYTES: usize = 128 << 10;

    /// Every output of a chunk: activation rows in groups small enough to stay in the L1 cache
    /// ([`super::act_group`]), and for each group every panel row of the chunk against its rows
    /// `$big` at a time, then four, then the last one to three rows together, with
    /// `$tile::<R>(panel_row, later_panel_rows, far, act_rows) -> [[f32; 16]; R]` (the chunk's
    /// later panel rows are only prefetched: with about 100 MB of weights, more than this
    /// machine's share of L3, the hardware prefetchers alone kept an eight-row product at about
    /// 95 billion multiply-adds/s; prefetching 16 blocks ahead, about 127-185, `--example
    /// kernels avx512-vnni 8 cold:200`; `far`, for a product of one to three rows, also asks L2
    /// further ahead, see [`prefetch_ahead`]). Each output is the same whatever group or tile
    /// computes it.
    macro_rules! outputs_tiled {
        ($panels:expr, $blocks:expr, $acts:expr, $out:expr, $tile:ident, $big:literal) => {{
            let blocks: usize = $blocks;
            let m = $acts.len() / blocks;
            let group = super::super::act_group(blocks, $big, std::mem::size_of_val($panels));
            let mut g0 = 0;
            while g0 < m {
                let g1 = (g0 + group).min(m);
                let acts = &$acts[g0 * blocks..g1 * blocks];
                // The group's rows as tiles of `$big`, then of four, then the rest, built
                // once per group, not for every panel row (building them in the panel loop took
                // out-of-line calls, about 8% of a large product's samples).
                let mut bigs = acts.chunks_exact($big * blocks);
                let big_tiles: Vec<[&[_]; $big]> = (&mut bigs)
                    .map(|a| std::array::from_fn(|r| &a[r * blocks..(r + 1) * blocks]))
                    .collect();
                let mut quads = bigs.remainder().chunks_exact(4 * blocks);
                let quad_tiles: Vec<[&[_]; 4]> = (&mut quads)
                    .map(|a| std::array::from_fn(|r| &a[r * blocks..(r + 1) * blocks]))
                    .collect();
                let rest: Vec<&[_]> = quads.remainder().chunks_exact(blocks).collect();
                for (pi, p) in $panels.chunks_exact(blocks).enumerate() {
                    // The next panel row, whose weights the kernel asks the memory for while
                    // it computes this one.
                    let next: &[_] = $panels.get((pi + 1) * blocks..).unwrap_or(&[]);
                    let out: &mut [&mut [f32]] = &mut $out[g0..g1];
                    // A whole panel's 16 outputs are one fixed-size store: a copy of variable
                    // length was a `memcpy` call per row and panel row (about 4% of a scoring
                    // pass). Only a matrix's last panel row can be partial.
                    let whole = out.first().is_none_or(|o| o.len() >= (pi + 1) * 16);
                    let mut put = |r0: usize, v: &[[f32; 16]]| {
                        for (o, lanes) in out[r0..].iter_mut().zip(v) {
                            if whole {
                                o[pi * 16..pi * 16 + 16].copy_from_slice(lanes);
                            } else {
                                let o = &mut o[pi * 16..];
                                let n = o.len().min(16);
                                o[..n].copy_from_slice(&lanes[..n]);
                            }
                        }
                    };
                    // A few rows' tiles ask L2 ahead (`L2_ROWS`); which, is decided at compile
                    // time (the request sits in the tile's innermost loop).
                    let l2 = m <= super::super::x86::L2_ROWS;
                    let mut r0 = 0;
                    for &a in &big_tiles {
                        put(
                            r0,
                            &if l2 {
                                $tile::<$big, true>(p, next, false, a)
                            } else {
                                $tile::<$big, false>(p, next, false, a)
                            },
                        );
                        r0 += $big;
                    }
                    for &a in &quad_tiles {
                        put(
                            r0,
                            &if l2 {
                                $tile::<4, true>(p, next, false, a)
                            } else {
                                $tile::<4, false>(p, next, false, a)
                            },
                        );
                        r0 += 4;
                    }
                    // The last one to three rows as one tile: as single rows, each tile
                    // unpacked the panel row's weights again, so three rows cost about what
                    // eight do. `far` (see `prefetch_ahead`) when these are all the product's
                    // rows: two or three rows are still bound by the weights' stream
                    // (`--example streams 2 128`, six alternated pairs, every row of the tile
                    // asking: 496 against 427 tok/s on average; 3 streams, five pairs: 441
                    // against 418). Four rows with it
                    // were not faster (639 against 657), and eight slower (sessions 15 and 16).
                    let far = m <= 3;
                    match rest[..] {
                        [a] => put(r0, &$tile::<1, false>(p, next, far, [a])),
                        [a, b] => put(r0, &$tile::<2, false>(p, next, far, [a, b])),
                        [a, b, c] => put(r0, &$tile::<3, false>(p, next, far, [a, b, c])),
                        _ => {}
                    }
                }
                g0 = g1;
            }
        }};
    }
    pub(super) use outputs_tiled;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    pub(super) fn numbers(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Random weights quantized by candle to `dtype`.
    pub(super) fn quantized(n: usize, k: usize, seed: u64, dtype: GgmlDType) -> QTensor {
        let wt = Tensor::from_vec(numbers(n * k, seed), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&wt, dtype).unwrap()
    }

    /// The product against candle's dequantized weights and our quantized activations, in f64.
    /// `slack(c, r)` bounds the error beyond f32 rounding.
    pub(super) fn matches_dequantized<F: Format>(
        dtype: GgmlDType,
        load: impl Fn(&QTensor) -> QMatrix<F>,
        slack: impl Fn(&QMatrix<F>, &[ActBlock], usize, usize) -> f64,
    ) {
        // 18 blocks per row and 40 rows: a partial last panel.
        let (n, k, m) = (40, 576, 7);
        let q = quantized(n, k, 1, dtype);
        let ours = load(&q);
        let x = numbers(m * k, 2);
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut acts = Vec::new();
        for row in x.chunks_exact(k) {
            quantize_row(row, ours.blocks, &mut acts);
        }
        let value = |r: usize, i: usize| {
            let a = &acts[r * ours.blocks + i / BLOCK];
            f64::from(a.q[i % BLOCK]) * f64::from(a.d)
        };
        let got = ours.matmul(&x);
        for r in 0..m {
            for c in 0..n {
                let exact: f64 = (0..k).map(|i| f64::from(deq[c][i]) * value(r, i)).sum();
                let g = f64::from(got[r * n + c]);
                let bound = slack(&ours, &acts, c, r) + 1e-4 * (1.0 + exact.abs());
                assert!(
                    (g - exact).abs() <= bound,
                    "r{r} c{c}: {g} vs {exact} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn tasks_cover_every_panel_row_once_in_parts_of_near_equal_size() {
        for panel_rows in [1, 2, 5, 36, 60, 192, 3072] {
            for m in [1, 8, 33, 168] {
                for threads in [1, 2, 3, 16] {
                    let b = task_bounds(panel_rows, m, threads);
                    assert_eq!((b[0], b[b.len() - 1]), (0, panel_rows));
                    let sizes: Vec<usize> = b.windows(2).map(|w| w[1] - w[0]).collect();
                    let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                    assert!(lo >= Some(&1), "an empty task: {sizes:?}");
                    assert!(
                        hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
                        "{panel_rows} panel rows, {m} rows, {threads} threads: {sizes:?}"
                    );
                    assert!(sizes.len() <= 4 * threads);
                }
            }
        }
        // SmolLM2's 36-panel-row products: two tasks per thread of nine for a scoring pass,
        // no longer seven of five and one of one.
        assert_eq!(task_bounds(36, 168, 2), [0, 9, 18, 27, 36]);
        assert_eq!(task_bounds(36, 1, 2), [0, 4, 9, 13, 18, 22, 27, 31, 36]);
    }

    /// Every kernel this CPU runs, on 1 to 3 threads, gives the scalar kernel's bits; a row
    /// alone gives the same bits as in a batch.
    pub(super) fn every_kernel_agrees<F: Format>(
        dtype: GgmlDType,
        load: impl Fn(&QTensor) -> QMatrix<F>,
    ) {
        let best = Kernel::best();
        eprintln!("best kernel here: {}", best.name());
        let kernels: Vec<Kernel> = [
            Kernel::Scalar,
            Kernel::Avx2,
            Kernel::Avx512Vnni,
            Kernel::Amx,
        ]
        .into_iter()
        .filter(|&k| k <= best)
        .collect();
        let pools: Vec<rayon::ThreadPool> = [1, 2, 3]
            .iter()
            .map(|&t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            })
            .collect();
        // Whole and partial panels, odd block counts; row counts that exercise the eight-row,
        // four-row and one-, two- and three-row tiles, with and without the requests to L2
        // (`x86::L2_ROWS`: 12 rows and fewer ask L2).
        for (n, k, m) in [
            (37, 512, 9),
            (40, 128, 12),
            (48, 576, 7),
            (33, 96, 5),
            (40, 128, 13),
            (70, 1536, 1),
            (19, 160, 2),
            (33, 96, 6),
            // More rows than a decoding pass's split takes (see `task_bounds`): two panel
            // rows, one partial; ten panel rows in parts of one and two (three threads).
            (21, 256, 33),
            (150, 64, 40),
            // The AMX kernel's tiles of 16 rows (`AMX_ROWS` and more): three whole tiles; a
            // last tile padded with zero rows; a partial panel row; block counts of every
            // remainder modulo its four sum tiles, with and without its unrolled steps.
            (48, 576, 48),
            (37, 96, 47),
            (33, 160, 32),
            (19, 224, 64),
            (40, 384, 35),
        ] {
            let ours = load(&quantized(n, k, 7, dtype));
            let x = numbers(m * k, k as u64);
            let reference = pools[0].install(|| ours.matmul_with(Kernel::Scalar, &x));
            for &kernel in &kernels {
                for pool in &pools {
                    let got = pool.install(|| ours.matmul_with(kernel, &x));
                    let same = got
                        .iter()
                        .zip(&reference)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} differs from scalar at {n}x{k}, {m} rows",
                        kernel.name()
                    );
                }
            }
            let alone = ours.matmul(&x[..k]);
            assert_eq!(alone[..], pools[1].install(|| ours.matmul(&x))[..n]);
            // Rows read out of a wider buffer (NaN where a row's inputs end), into a used
            // buffer (longer, NaN), give the same bits.
            let stride = k + 37;
            let mut wide = vec![f32::NAN; m * stride];
            for (w, r) in wide.chunks_exact_mut(stride).zip(x.chunks_exact(k)) {
                w[..k].copy_from_slice(r);
            }
            let mut strided = vec![f32::NAN; m * n + 5];
            pools[1].install(|| ours.matmul_into(&wide, stride, &mut strided));
            assert_eq!(strided.len(), reference.len());
            assert!(
                strided
                    .iter()
                    .zip(&reference)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "strided rows differ at {n}x{k}, {m} rows"
            );
        }
    }

    /// The dispatched quantization (AVX-512 where the CPU has it) gives the reference's bits, on
    /// random rows and on the edge cases: exact halves, zeros, signed zeros, NaN, infinities,
    /// subnormals and huge values.
    #[test]
    fn simd_quantization_gives_the_scalar_bits() {
        eprintln!(
            "AVX-512 quantization here: {}",
            std::is_x86_feature_detected!("avx512f")
        );
        let mut x = numbers(BLOCK * 64, 11);
        for (i, b) in x.chunks_exact_mut(BLOCK).enumerate() {
            // Magnitudes from tiny to huge.
            let scale = [1e-30, 1e-3, 1.0, 7.0, 1e3, 1e30][i % 6];
            b.iter_mut().for_each(|v| *v *= scale);
        }
        // Block 64: exact halves (d = 1), then a block with NaN among numbers, one with
        // infinities, one with subnormals, and whole blocks of zeros, negative zeros and NaN.
        let mut special: Vec<f32> = vec![127.0, -127.0, 2.5, -2.5, 0.5, -0.5, 126.5, -126.5];
        special.extend([
            1.5,
            -1.5,
            0.49999997,
            -0.49999997,
            3.5000002,
            0.0,
            -0.0,
            64.5,
        ]);
        special.extend((0..16).map(|i| i as f32 - 7.5));
        special.extend((0..32).map(|i| {
            if i % 7 == 3 {
                f32::NAN
            } else {
                i as f32 - 16.5
            }
        }));
        special.extend((0..32).map(|i| match i {
            4 => f32::INFINITY,
            9 => f32::NEG_INFINITY,
            _ => i as f32,
        }));
        special.extend((0..32).map(|i| f32::MIN_POSITIVE / (i as f32 + 2.0) * (i as f32 - 9.0)));
        special.extend([0.0; 32]);
        special.extend([-0.0; 32]);
        special.extend([f32::NAN; 32]);
        x.extend(special);
        let blocks = x.len() / BLOCK + 3;
        let (mut simd, mut scalar) = (vec![ZERO_ACT; blocks], vec![ZERO_ACT; blocks]);
        quantize_into(&x, &mut simd);
        quantize_scalar(&x, &mut scalar);
        for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
            assert_eq!(a.q, b.q, "block {i}");
            assert_eq!(a.d.to_bits(), b.d.to_bits(), "block {i}");
            assert_eq!(a.s.to_bits(), b.s.to_bits(), "block {i}");
            assert_eq!(a.offset, b.offset, "block {i}");
        }
        // The exact halves round away from zero.
        let halves = &scalar[64];
        assert_eq!(halves.q[..8], [127, -127, 3, -3, 1, -1, 127, -127]);
        // Every count of blocks around the SIMD groups of sixteen, with the specials among
        // them, and zero blocks past the values.
        for count in 1..=40 {
            let x = &x[x.len() - count * BLOCK..];
            let (mut simd, mut scalar) = (vec![ZERO_ACT; count + 2], vec![ZERO_ACT; count + 2]);
            quantize_into(x, &mut simd);
            quantize_scalar(x, &mut scalar);
            for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                assert_eq!(a.q, b.q, "{count} blocks, block {i}");
                assert_eq!(a.d.to_bits(), b.d.to_bits(), "{count} blocks, block {i}");
                assert_eq!(a.s.to_bits(), b.s.to_bits(), "{count} blocks, block {i}");
                assert_eq!(a.offset, b.offset, "{count} blocks, block {i}");
            }
        }
    }

    #[test]
    fn stacking_keeps_every_row() {
        let a = q4_1::Q41Matrix::from_qtensor(&quantized(32, 64, 1, GgmlDType::Q4_1))
            .unwrap()
            .unwrap();
        let b = q4_1::Q41Matrix::from_qtensor(&quantized(16, 64, 2, GgmlDType::Q4_1))
            .unwrap()
            .unwrap();
        let x = numbers(3 * 64, 3);
        let (ya, yb) = (a.matmul(&x), b.matmul(&x));
        let both = QMatrix::stack(vec![a, b]).unwrap();
        let y = both.matmul(&x);
        for r in 0..3 {
            assert_eq!(y[r * 48..r * 48 + 32], ya[r * 32..r * 32 + 32]);
            assert_eq!(y[r * 48 + 32..r * 48 + 48], yb[r * 16..r * 16 + 16]);
        }
        let odd = q4_1::Q41Matrix::from_qtensor(&quantized(20, 64, 4, GgmlDType::Q4_1))
            .unwrap()
            .unwrap();
        let c = q4_1::Q41Matrix::from_qtensor(&quantized(16, 64, 5, GgmlDType::Q4_1))
            .unwrap()
            .unwrap();
        assert!(
            QMatrix::stack(vec![odd, c]).is_err(),
            "a partial panel cannot be stacked"
        );
    }
}
