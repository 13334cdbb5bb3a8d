//! The inference engine's CUDA path: the llama forward pass of `agora-inference-candle` on an
//! NVIDIA GPU.
//!
//! Stability: internal to the node; the interface is `agora_inference::Engine`, reached through
//! `agora_inference_candle::CandleEngine` with the device set to CUDA (`AGORA_DEVICE=cuda`).
//!
//! # Design
//! - **Nothing CUDA at build time.** The driver (`libcuda.so.1`) and NVRTC, CUDA's run-time
//!   compiler (`libnvrtc.so`), are opened when a GPU model is made, and the kernels
//!   (`kernels.cu`) are compiled then for the GPU at hand. Every Agora build can use a GPU, and a
//!   machine without one never loads either library.
//! - **The CPU engine's arithmetic.** Weights stay in the GGUF's own Q4_1 / Q8_0 blocks;
//!   activations are quantized to 8 bits per 32-block exactly as on the CPU; each product output
//!   is one thread summing blocks in order with the same fused multiply-adds; norms, rotary
//!   embedding, the 8-bit key-value cache and attention do the CPU's operations in the CPU's
//!   order (kernels are compiled with `--fmad=false`, so nothing else is fused), and `exp` (the
//!   softmax and SiLU) follows the CPU's own steps (`crates/inference-candle/src/exp.rs`), not
//!   the CUDA library's. The GPU therefore computes the CPU's bits: on an H200 its greedy
//!   answers equal the CPU engine's token for token (sessions 5, 9 and 12, in BENCHMARKS.md).
//! - **One stream, one pass at a time.** Passes are serialised by a lock and run on one
//!   stream of the model's own (the legacy default stream cannot be captured); the engine
//!   batches concurrent generations into one pass as on the CPU.
//! - **Buffers are reused.** A pass's intermediate results (activations, their quantized
//!   blocks, products, logits) live in device buffers kept from pass to pass and grown when a
//!   pass needs more, so a decoding step launches its kernels and allocates nothing.
//! - **Caches grow.** A sequence's key-value cache is one device buffer, `[layer][keys |
//!   values][position][kv_head * head_dim + kv_head * head_dim / 32]` (the 8-bit values the CPU
//!   engine's cache holds, kept as floats, then their scales), reallocated at twice the size
//!   when a pass needs more positions.
//! - **Every sequence of a pass in one launch.** The cache kernels (storing keys and values,
//!   attention) take a table of each row's cache buffer, its capacity and the row's position
//!   (`RowCaches`, uploaded once per pass), so a layer launches each once however many
//!   sequences a batched pass holds. Launched per sequence, eight decoding streams ran their
//!   attentions one after another, each on nine warps of the whole GPU.
//! - **Fewer launches per layer.** A decoding step pays for each of its launches (a driver
//!   call each), so kernels that feed one another are one launch where the arithmetic allows:
//!   the residual add, the RMS norm and the next product's activation quantization are one
//!   (`norm_quantize`), as are SiLU and the down projection's quantization
//!   (`silu_quantize`), the queries' rotation and the cache's store (`rope_store`), and
//!   attention and the output projection's quantization: 9 launches per layer instead of 16,
//!   the same operations.
//! - **Decoding steps replay a graph.** A decoding step (one new token per sequence) of a
//!   shape already seen (its row count and attention span class) is one `cuGraphLaunch` of the
//!   step's kernels as captured the first time, instead of 280-odd launches: the step reads
//!   its tokens, positions and caches from tables kept at fixed device addresses, uploaded
//!   before the replay, and a graph replays only while every buffer it was captured with is
//!   still in use (`Step`). On an H200, one stream 406 -> 452 tokens/s, eight 2,141 -> 2,352
//!   (`AGORA_CUDA_GRAPHS=0` launches every kernel itself, for comparison); the same bits.
//! - **Wide passes share weight reads.** Passes of at least `WIDE_ROWS` rows (prompts,
//!   scoring) run products whose warps take eight rows each, reading each weight block once
//!   for all of them; decoding steps keep one row per warp, which fills the GPU better.
//!
//! Launching a kernel is `unsafe` (the driver cannot check a kernel's arguments); `Kernels`
//! holds every launch, and each checks the buffer sizes its kernel indexes before launching.
#![allow(clippy::float_arithmetic)] // Not consensus-visible: logits are floats.

use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// The kernels' source.
pub const KERNELS: &str = include_str!("kernels.cu");

/// Kernel entry points, in the order `Kernels` loads them (the `K_*` indices below).
pub const KERNEL_NAMES: [&str; 10] = [
    "matmul_q4_1",
    "matmul_q8_0",
    "embed_q8_0",
    "norm_quantize",
    "rope_store",
    "attention",
    "silu_quantize",
    "add",
    "matmul_q4_1_wide",
    "matmul_q8_0_wide",
];
const K_MATMUL_Q4_1: usize = 0;
const K_MATMUL_Q8_0: usize = 1;
const K_EMBED_Q8_0: usize = 2;
const K_NORM_QUANTIZE: usize = 3;
const K_ROPE_STORE: usize = 4;
const K_ATTENTION: usize = 5;
const K_SILU_QUANTIZE: usize = 6;
const K_ADD: usize = 7;
const K_MATMUL_Q4_1_WIDE: usize = 8;
const K_MATMUL_Q8_0_WIDE: usize = 9;

/// What can go wrong on the CUDA path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no CUDA driver found (libcuda.so.1): install the NVIDIA driver, or run on the CPU (AGORA_DEVICE=cpu)"
    )]
    NoDriver,
    #[error(
        "NVRTC, CUDA's run-time compiler, was not found (libnvrtc.so.13 or .12): install the CUDA toolkit, or the `nvidia-cuda-nvrtc` Python package, and put the directory holding libnvrtc on LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("CUDA driver error: {0}")]
    Driver(String),
    #[error("compiling the CUDA kernels failed: {0}")]
    Compile(String),
    #[error("CUDA model: {0}")]
    Invalid(String),
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Driver(e.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}

/// Whether NVRTC can be opened on this machine (no GPU needed).
#[allow(unsafe_code)]
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be opened on this machine.
#[allow(unsafe_code)]
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Compile [`KERNELS`] to PTX for a virtual architecture such as `compute_90`. Needs NVRTC but
/// no GPU (the tests compile the kernels on machines without one).
pub fn compile(arch: &str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(Error::NoNvrtc);
    }
    let opts = CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("agora_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            Error::Compile(log.to_string_lossy().into_owned())
        }
        other => Error::Compile(other.to_string()),
    })
}

/// Stop the context tracking reads and writes with events (a cost on every launch).
#[allow(unsafe_code)]
fn single_stream(ctx: &Arc<CudaContext>) {
    // SAFETY: every buffer of a model is used on its one stream, so the driver's stream order
    // alone keeps each use after the writes before it.
    unsafe { ctx.disable_event_tracking() };
}

/// A weight matrix's block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 32 weights in 20 bytes: f16 scale, f16 minimum, 16 bytes of nibbles.
    Q4_1,
    /// 32 weights in 34 bytes: f16 scale, 32 signed bytes.
    Q8_0,
}

impl Format {
    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }
}

/// A weight matrix as the GGUF stores it: `rows` rows of `cols / 32` blocks.
#[derive(Clone, Copy, Debug)]
pub struct HostMatrix<'a> {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

/// One transformer block's weights. `qkv` holds the query, key and value rows stacked (in that
/// order), `gate_up` the gate and up rows.
#[derive(Clone, Copy, Debug)]
pub struct HostLayer<'a> {
    pub attn_norm: &'a [f32],
    pub qkv: HostMatrix<'a>,
    pub wo: HostMatrix<'a>,
    pub ffn_norm: &'a [f32],
    pub gate_up: HostMatrix<'a>,
    pub down: HostMatrix<'a>,
}

/// Hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub embedding: usize,
    pub ffn: usize,
    pub eps: f32,
    pub context_length: usize,
}

/// Token embeddings: the rows of the (Q8_0) output matrix when they are tied, or their own f32
/// table `[token][embedding]`.
#[derive(Clone, Copy, Debug)]
pub enum HostEmbeddings<'a> {
    Tied,
    F32(&'a [f32]),
}

/// Everything the GPU model is made from.
#[derive(Clone, Debug)]
pub struct HostModel<'a> {
    pub config: Config,
    pub embeddings: HostEmbeddings<'a>,
    pub layers: Vec<HostLayer<'a>>,
    pub norm: &'a [f32],
    pub output: HostMatrix<'a>,
    /// Rotary tables `[position][head_dim / 2]`.
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// A weight matrix on the device.
#[derive(Debug)]
struct Matrix {
    format: Format,
    rows: usize,
    cols: usize,
    bytes: CudaSlice<u8>,
}

#[derive(Debug)]
struct Layer {
    attn_norm: CudaSlice<f32>,
    qkv: Matrix,
    wo: Matrix,
    ffn_norm: CudaSlice<f32>,
    gate_up: Matrix,
    down: Matrix,
}

#[derive(Debug)]
enum Embeddings {
    Tied,
    F32(CudaSlice<f32>),
}

/// The loaded kernels, and every launch.
#[derive(Debug)]
struct Kernels {
    f: Vec<CudaFunction>,
}

/// The longest row `norm_quantize` takes: its squares fill at most 32 KB of shared memory.
const MAX_NORM: usize = 8192;

/// Threads per block for the element-wise kernels.
const THREADS: u32 = 128;

/// Activation rows each warp of a wide product (`_wide` kernels) takes at once: `MROWS` in
/// `kernels.cu` (`matmul_rows_match_the_kernel`).
const MATMUL_ROWS: usize = 8;

/// Passes of at least this many rows take the wide products: each weight block read once for
/// [`MATMUL_ROWS`] rows. On an H200 that made a 108-row prompt 13% faster, and decoding steps
/// (at most a few rows per sequence) 6-13% slower, with too few warps to fill the GPU.
const WIDE_ROWS: usize = 32;

/// Threads per (row, head) of the attention kernel: `ATTN_WARPS` warps in `kernels.cu`
/// (`attention_threads_match_the_kernel`). One warp per head left a decoding row's attention
/// on nine warps of the whole GPU, each running its positions one after another.
const ATTENTION_THREADS: u32 = 128;

fn blocks_for(n: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(THREADS as usize)).or_else(|_| invalid("launch too large"))
}

fn linear(n: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (blocks_for(n)?, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// One warp per item (`THREADS / 32` items per block), `rows` times over.
fn warps(items: usize, rows: usize) -> Result<LaunchConfig> {
    let per_block = (THREADS / 32) as usize;
    Ok(LaunchConfig {
        grid_dim: (
            u32::try_from(items.div_ceil(per_block)).or_else(|_| invalid("launch too large"))?,
            u32::try_from(rows).or_else(|_| invalid("too many rows"))?,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Floats per cached position of one layer's keys (or values) `kvn` wide: the 8-bit values
/// (exact small integers, kept as floats) and a scale per 32.
fn cache_row(kvn: usize) -> usize {
    kvn + kvn / 32
}

fn int(n: usize) -> Result<i32> {
    i32::try_from(n).or_else(|_| invalid(format!("{n} does not fit a kernel's int")))
}

fn need(what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return invalid(format!("{what}: buffer of {have} where {want} are needed"));
    }
    Ok(())
}

/// A device buffer that the next kernel writes whole before anything reads it (no memset).
#[allow(unsafe_code)]
fn uninit<T: cudarc::driver::DeviceRepr>(s: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller hands the buffer to a kernel (or copies) that writes all `len`
    // elements before any are read; plain-data element types have no invalid bit patterns
    // that a read could observe.
    Ok(unsafe { s.alloc::<T>(len.max(1)) }?)
}

/// `slot`'s buffer, with room for at least `len` elements: the one it holds, or a new one (see
/// [`uninit`]) when it holds less. What a pass writes into it before reading is all it reads.
fn room<'a, T: cudarc::driver::DeviceRepr>(
    s: &Arc<CudaStream>,
    slot: &'a mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<&'a mut CudaSlice<T>> {
    if slot.as_ref().is_none_or(|b| b.len() < len.max(1)) {
        // The old buffer is freed in stream order, after the kernels that use it.
        *slot = None;
        *slot = Some(uninit::<T>(s, len)?);
    }
    match slot {
        Some(b) => Ok(b),
        None => invalid("scratch buffer missing"),
    }
}

/// Activations quantized per 32-block, reused product after product: `rows` rows of `blocks`
/// blocks each, as the last kernel that quantized into them wrote.
#[derive(Debug, Default)]
struct Acts {
    q: Option<CudaSlice<i8>>,
    d: Option<CudaSlice<f32>>,
    s: Option<CudaSlice<f32>>,
    rows: usize,
    blocks: usize,
}

impl Acts {
    /// Room for `rows` rows of `blocks` blocks, recorded as what the buffers now hold (the
    /// kernel launched next writes all of it).
    #[allow(clippy::type_complexity)]
    fn make_room(
        &mut self,
        s: &Arc<CudaStream>,
        rows: usize,
        blocks: usize,
    ) -> Result<(&mut CudaSlice<i8>, &mut CudaSlice<f32>, &mut CudaSlice<f32>)> {
        let count = rows * blocks;
        self.rows = rows;
        self.blocks = blocks;
        Ok((
            room(s, &mut self.q, count * 32)?,
            room(s, &mut self.d, count)?,
            room(s, &mut self.s, count)?,
        ))
    }
}

/// The device buffers of a pass, kept from pass to pass and grown when a pass needs more: a
/// decoding step then allocates nothing. (Each product, norm and activation used to allocate
/// its output and free it after: about 21 allocations and as many frees per layer, 30 layers,
/// besides the launches.)
#[derive(Debug, Default)]
struct Scratch {
    bufs: Buffers,
    /// The pass's tokens, positions and cache tables, uploaded into buffers kept from pass to
    /// pass (so that a captured decoding step finds them where it was captured).
    tables: Option<Tables>,
    /// Captured decoding steps (see [`Step`]).
    steps: Vec<Step>,
    /// Set when a capture failed, or from the start with `AGORA_CUDA_GRAPHS=0`: every pass
    /// launches its kernels itself.
    no_graphs: bool,
}

/// The intermediate results of a pass.
#[derive(Debug, Default)]
struct Buffers {
    x: Option<CudaSlice<f32>>,
    qkv: Option<CudaSlice<f32>>,
    q: Option<CudaSlice<f32>>,
    o: Option<CudaSlice<f32>>,
    gu: Option<CudaSlice<f32>>,
    wanted: Option<CudaSlice<f32>>,
    logits: Option<CudaSlice<f32>>,
    acts: Acts,
}

/// Where a buffer lives and how long it is (zeros for none).
fn place<T>(s: &CudaStream, b: Option<&CudaSlice<T>>) -> [u64; 2] {
    use cudarc::driver::DevicePtr;
    b.map_or([0, 0], |b| [b.device_ptr(s).0, b.len() as u64])
}

impl Buffers {
    /// Every buffer's address and length: a captured step replays only while these are the
    /// ones it was captured with (buffers only grow, so the same address is at least as long).
    fn places(&self, s: &CudaStream) -> Vec<[u64; 2]> {
        let a = &self.acts;
        vec![
            place(s, self.x.as_ref()),
            place(s, self.qkv.as_ref()),
            place(s, self.q.as_ref()),
            place(s, self.o.as_ref()),
            place(s, self.gu.as_ref()),
            place(s, self.wanted.as_ref()),
            place(s, self.logits.as_ref()),
            place(s, a.q.as_ref()),
            place(s, a.d.as_ref()),
            place(s, a.s.as_ref()),
        ]
    }
}

/// A decoding step of `rows` sequences (one new token each, every row's logits wanted) whose
/// attention spans at most `span` positions, captured as a CUDA graph: replaying it launches
/// its 280-odd kernels in one driver call. The step reads everything that changes from step
/// to step (tokens, positions, each row's cache) from the pass's tables, so only the shape is
/// fixed, and it replays only while every buffer it was captured with is still the one in use
/// (`places`).
struct Step {
    rows: usize,
    span: usize,
    places: Vec<[u64; 2]>,
    graph: Graph,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("rows", &self.rows)
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

/// A captured graph, used only under the model's pass lock.
struct Graph(cudarc::driver::CudaGraph);

// SAFETY: CUDA requires that a graph not be used from two threads at once; a `Graph` is only
// reached through `Model::pass`, whose lock serialises every use, so moving it between threads
// (the lock's holder changes) is sound.
#[allow(unsafe_code)]
unsafe impl Send for Graph {}

/// Decoding steps of up to this many sequences are captured (the engine batches at most 32).
const GRAPH_ROWS: usize = 32;

/// The attention span a captured step is made for: `span` rounded up to a power of two, at
/// least 256, at most the context (the attention kernel's shared memory is sized by it; the
/// kernel reads each row's own position from the tables).
fn span_class(span: usize, context: usize) -> usize {
    span.next_power_of_two().max(256).min(context.max(span))
}

/// Whether decoding steps are captured as graphs: yes unless `AGORA_CUDA_GRAPHS=0` (read once,
/// when a model loads).
fn graphs_wanted() -> bool {
    std::env::var("AGORA_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

// SAFETY (for every launch below): the kernels index only within the sizes checked before each
// launch (`need`), with the integer arguments passed; the cache kernels reach each row's cache
// through the addresses in `RowCaches`, whose buffers `HostTables::new` checked to hold every
// layer at their capacity and every row's position, and which the pass's segments keep
// borrowed (neither freed nor reallocated) until the pass ends (a captured step is replayed
// only after the same checks on its pass's tables); every buffer is a live device
// allocation of the element type the kernel expects, on this context; and all work runs on one
// stream, so a buffer is not freed or reused before the kernels using it finish.
#[allow(unsafe_code)]
impl Kernels {
    fn load(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        let (major, minor) = ctx.compute_capability()?;
        if major < 6 || (major == 6 && minor < 1) {
            return invalid(format!(
                "compute capability {major}.{minor} is too old (6.1 or newer is needed)"
            ));
        }
        let ptx = compile(&format!("compute_{major}{minor}"))?;
        let module = ctx.load_module(ptx)?;
        let f = KERNEL_NAMES
            .iter()
            .map(|n| module.load_function(n))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Kernels { f })
    }

    /// `rows` rows of activations already quantized in `acts` times the matrix, into `y`.
    fn product(
        &self,
        s: &Arc<CudaStream>,
        m: &Matrix,
        rows: usize,
        acts: &Acts,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let blocks = m.cols / 32;
        if acts.blocks != blocks || acts.rows < rows || blocks * 32 != m.cols {
            return invalid(format!(
                "product of a {}-column matrix with {} rows of {} quantized blocks",
                m.cols, acts.rows, acts.blocks
            ));
        }
        let (Some(q), Some(d), Some(sx)) = (&acts.q, &acts.d, &acts.s) else {
            return invalid("no quantized activations");
        };
        need("quantized activations", q.len(), rows * blocks * 32)?;
        need("activation scales", d.len().min(sx.len()), rows * blocks)?;
        need(
            "matrix",
            m.bytes.len(),
            m.rows * blocks * m.format.block_bytes(),
        )?;
        need("product output", y.len(), rows * m.rows)?;
        let wide = rows >= WIDE_ROWS;
        let cfg = if wide {
            warps(m.rows, rows.div_ceil(MATMUL_ROWS))?
        } else {
            warps(m.rows, rows)?
        };
        let (n, nb, mr) = (int(m.rows)?, int(blocks)?, int(rows)?);
        match m.format {
            Format::Q4_1 => {
                let f = if wide {
                    K_MATMUL_Q4_1_WIDE
                } else {
                    K_MATMUL_Q4_1
                };
                let mut b = s.launch_builder(&self.f[f]);
                b.arg(&m.bytes)
                    .arg(&n)
                    .arg(&nb)
                    .arg(q)
                    .arg(d)
                    .arg(sx)
                    .arg(&mr)
                    .arg(y);
                unsafe { b.launch(cfg) }?;
            }
            Format::Q8_0 => {
                let f = if wide {
                    K_MATMUL_Q8_0_WIDE
                } else {
                    K_MATMUL_Q8_0
                };
                let mut b = s.launch_builder(&self.f[f]);
                b.arg(&m.bytes)
                    .arg(&n)
                    .arg(&nb)
                    .arg(q)
                    .arg(d)
                    .arg(&mr)
                    .arg(y);
                unsafe { b.launch(cfg) }?;
            }
        }
        Ok(())
    }

    /// The embeddings of the first `n` tokens of `tokens` (the tied output matrix's rows).
    fn embed_q8_0(
        &self,
        s: &Arc<CudaStream>,
        m: &Matrix,
        tokens: &CudaSlice<u32>,
        n: usize,
        x: &mut CudaSlice<f32>,
    ) -> Result<()> {
        need("tokens", tokens.len(), n)?;
        need("embeddings", x.len(), n * m.cols)?;
        let blocks = m.cols / 32;
        need("embedding matrix", m.bytes.len(), m.rows * blocks * 34)?;
        let (nb, nn) = (int(blocks)?, int(n)?);
        let mut b = s.launch_builder(&self.f[K_EMBED_Q8_0]);
        b.arg(&m.bytes).arg(&nb).arg(tokens).arg(&nn).arg(x);
        unsafe { b.launch(linear(n * m.cols)?) }?;
        Ok(())
    }

    /// The RMS norm of `rows` rows of `x` (after `x += add`, written back, when `add` is
    /// given), quantized into `acts` for the next product (see `norm_quantize`).
    #[allow(clippy::too_many_arguments)]
    fn norm_quantize(
        &self,
        s: &Arc<CudaStream>,
        x: &mut CudaSlice<f32>,
        add: Option<&CudaSlice<f32>>,
        w: &CudaSlice<f32>,
        rows: usize,
        eps: f32,
        acts: &mut Acts,
    ) -> Result<()> {
        let n = w.len();
        if !n.is_multiple_of(32) || n == 0 || n > MAX_NORM {
            return invalid(format!(
                "a norm of {n} values (whole 32-blocks, at most {MAX_NORM}, are supported)"
            ));
        }
        need("norm input", x.len(), rows * n)?;
        if let Some(a) = add {
            need("residual", a.len(), rows * n)?;
        }
        let (q, d, sx) = acts.make_room(s, rows, n / 32)?;
        let (r, nn) = (int(rows)?, int(n)?);
        let null: u64 = 0;
        let mut b = s.launch_builder(&self.f[K_NORM_QUANTIZE]);
        b.arg(x);
        match add {
            Some(a) => b.arg(a),
            None => b.arg(&null),
        };
        b.arg(w).arg(&r).arg(&nn).arg(&eps).arg(q).arg(d).arg(sx);
        // A block per row and a thread per value (at most 1,024, each then taking several),
        // the row's squares and its divisor in shared memory.
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(rows).or_else(|_| invalid("too many rows"))?,
                1,
                1,
            ),
            block_dim: (u32::try_from(n.min(1024)).unwrap_or(1024), 1, 1),
            shared_mem_bytes: u32::try_from((n + 1) * 4).unwrap_or(u32::MAX),
        };
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// The pass's `rows` qkv rows for `layer`: their queries rotated into `qout`, their keys
    /// (rotated) and values into their sequences' caches, each row at its position (`pos`),
    /// quantized to 8 bits (a position is [`cache_row`] floats: the values, then a scale per
    /// 32); every sequence in one launch.
    #[allow(clippy::too_many_arguments)]
    fn rope_store(
        &self,
        s: &Arc<CudaStream>,
        qkv: &CudaSlice<f32>,
        rows: usize,
        (width, qn, kvn, half): (usize, usize, usize, usize),
        pos: &CudaSlice<i32>,
        caches: &RowCaches,
        layer: usize,
        tables: (&CudaSlice<f32>, &CudaSlice<f32>),
        qout: &mut CudaSlice<f32>,
    ) -> Result<()> {
        need("qkv", qkv.len(), rows * width)?;
        need("rotated queries", qout.len(), rows * qn)?;
        caches.check(rows, pos, layer)?;
        need(
            "rotary table",
            tables.0.len().min(tables.1.len()),
            caches.span * half,
        )?;
        let (r, w, q, k, h, l) = (
            int(rows)?,
            int(width)?,
            int(qn)?,
            int(kvn)?,
            int(half)?,
            int(layer)?,
        );
        let mut b = s.launch_builder(&self.f[K_ROPE_STORE]);
        b.arg(qkv)
            .arg(&r)
            .arg(&w)
            .arg(&q)
            .arg(&k)
            .arg(&h)
            .arg(pos)
            .arg(&caches.addresses)
            .arg(&caches.capacities)
            .arg(&l)
            .arg(tables.0)
            .arg(tables.1)
            .arg(qout);
        // A warp per cache block of a row, then a warp per 32 query pairs of a row.
        let warps_per_row = 2 * (kvn / 32) + (qn / 2).div_ceil(32);
        unsafe { b.launch(warps(rows * warps_per_row, 1)?) }?;
        Ok(())
    }

    /// Attention of the pass's `rows` query rows for `layer`, each against its own sequence's
    /// cache up to its position (`pos`), every sequence in one launch; the output quantized
    /// into `acts` for the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        s: &Arc<CudaStream>,
        q: &CudaView<'_, f32>,
        rows: usize,
        c: &Config,
        pos: &CudaSlice<i32>,
        caches: &RowCaches,
        layer: usize,
        scale: f32,
        acts: &mut Acts,
    ) -> Result<()> {
        let hd = c.head_dim;
        if !hd.is_multiple_of(32) {
            return invalid(format!("a head of {hd} values is not whole 32-blocks"));
        }
        need("queries", q.len(), rows * c.heads * hd)?;
        caches.check(rows, pos, layer)?;
        let (oq, od, os) = acts.make_room(s, rows, c.heads * hd / 32)?;
        let shared =
            u32::try_from(caches.span * 4 + 64).or_else(|_| invalid("context too long"))?;
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(rows * c.heads).or_else(|_| invalid("too many rows"))?,
                1,
                1,
            ),
            block_dim: (ATTENTION_THREADS, 1, 1),
            shared_mem_bytes: shared,
        };
        let (r, h, kh, d, l) = (
            int(rows)?,
            int(c.heads)?,
            int(c.kv_heads)?,
            int(hd)?,
            int(layer)?,
        );
        let mut b = s.launch_builder(&self.f[K_ATTENTION]);
        b.arg(q)
            .arg(&r)
            .arg(&h)
            .arg(&kh)
            .arg(&d)
            .arg(pos)
            .arg(&caches.addresses)
            .arg(&caches.capacities)
            .arg(&l)
            .arg(&scale)
            .arg(oq)
            .arg(od)
            .arg(os);
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// SiLU of the gates times the ups of `rows` rows of `gu` (`2 * ffn` wide), quantized into
    /// `acts` for the down projection (see `silu_quantize`).
    fn silu_quantize(
        &self,
        s: &Arc<CudaStream>,
        gu: &CudaSlice<f32>,
        rows: usize,
        ffn: usize,
        acts: &mut Acts,
    ) -> Result<()> {
        if !ffn.is_multiple_of(32) {
            return invalid(format!("{ffn} feed-forward values are not whole 32-blocks"));
        }
        need("gate and up", gu.len(), rows * 2 * ffn)?;
        let count = rows * (ffn / 32);
        let (q, d, sx) = acts.make_room(s, rows, ffn / 32)?;
        let (r, f) = (int(rows)?, int(ffn)?);
        let mut b = s.launch_builder(&self.f[K_SILU_QUANTIZE]);
        b.arg(gu).arg(&r).arg(&f).arg(q).arg(d).arg(sx);
        unsafe { b.launch(warps(count, 1)?) }?;
        Ok(())
    }

    /// `x[i] += y[i]` for `i < n`.
    fn add(
        &self,
        s: &Arc<CudaStream>,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        need("sum", x.len(), n)?;
        need("addend", y.len(), n)?;
        let cfg = linear(n)?;
        let n = int(n)?;
        let mut b = s.launch_builder(&self.f[K_ADD]);
        b.arg(x).arg(y).arg(&n);
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

/// One sequence's key-value cache on the device (its length is kept by the caller).
#[derive(Debug, Default)]
pub struct Cache {
    kv: Option<CudaSlice<f32>>,
    /// Positions each layer's keys (and values) have room for.
    capacity: usize,
}

/// Where each row of a pass keeps its keys and values, on the device for the cache kernels:
/// the address of its sequence's cache buffer and that cache's capacity in positions, one of
/// each per row (rows of one sequence repeat them). Rows of different sequences go to
/// different caches, so one launch serves every sequence of a batched pass (a launch per
/// sequence and layer made eight decoding streams pay sixteen launches per layer more than
/// one).
struct RowCaches {
    addresses: CudaSlice<u64>,
    capacities: CudaSlice<i32>,
    /// Rows described.
    rows: usize,
    /// One more than the largest position of the pass's rows (or more: a captured step's
    /// span class): the longest causal span.
    span: usize,
    /// Layers each cache holds.
    layers: usize,
}

/// A pass's tables on the device: its tokens, their positions and their caches, in buffers
/// that grow when a pass has more rows.
struct Tables {
    tokens: CudaSlice<u32>,
    pos: CudaSlice<i32>,
    caches: RowCaches,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("rows", &self.caches.rows)
            .field("span", &self.caches.span)
            .finish_non_exhaustive()
    }
}

/// The host side of a pass's tables.
struct HostTables {
    tokens: Vec<u32>,
    pos: Vec<i32>,
    addresses: Vec<u64>,
    capacities: Vec<i32>,
    span: usize,
}

impl HostTables {
    /// The tables for `segments`, whose caches [`Model::reserve`] has made room in, with the
    /// checks the cache kernels rely on: every cache buffer holds `layers` layers of keys and
    /// values at its capacity, and every row's position is inside it.
    fn new(
        s: &Arc<CudaStream>,
        segments: &mut [Segment<'_>],
        layers: usize,
        row: usize,
    ) -> Result<HostTables> {
        use cudarc::driver::DevicePtrMut;
        let mut t = HostTables {
            tokens: Vec::new(),
            pos: Vec::new(),
            addresses: Vec::new(),
            capacities: Vec::new(),
            span: 0,
        };
        for seg in segments.iter_mut() {
            let n = seg.tokens.len();
            let cap = seg.cache.capacity;
            let Some(kv) = seg.cache.kv.as_mut() else {
                return invalid("cache not reserved");
            };
            need("cache", kv.len(), layers * 2 * cap * row)?;
            need("cache positions", cap, seg.start + n)?;
            let (address, _) = kv.device_ptr_mut(s);
            let cap = int(cap)?;
            t.tokens.extend_from_slice(seg.tokens);
            for p in seg.start..seg.start + n {
                t.pos.push(int(p)?);
                t.addresses.push(address);
                t.capacities.push(cap);
            }
            t.span = t.span.max(seg.start + n);
        }
        Ok(t)
    }
}

impl Tables {
    /// `host` in `slot`'s buffers (new ones when they are too short), for a pass whose caches
    /// span `span` positions.
    fn upload<'a>(
        s: &Arc<CudaStream>,
        slot: &'a mut Option<Tables>,
        host: &HostTables,
        span: usize,
        layers: usize,
    ) -> Result<&'a Tables> {
        let rows = host.tokens.len();
        if slot.as_ref().is_none_or(|t| t.tokens.len() < rows) {
            let n = rows.max(GRAPH_ROWS);
            *slot = None;
            *slot = Some(Tables {
                tokens: uninit(s, n)?,
                pos: uninit(s, n)?,
                caches: RowCaches {
                    addresses: uninit(s, n)?,
                    capacities: uninit(s, n)?,
                    rows: 0,
                    span: 0,
                    layers,
                },
            });
        }
        let Some(t) = slot.as_mut() else {
            return invalid("pass tables missing");
        };
        s.memcpy_htod(&host.tokens, &mut t.tokens)?;
        s.memcpy_htod(&host.pos, &mut t.pos)?;
        s.memcpy_htod(&host.addresses, &mut t.caches.addresses)?;
        s.memcpy_htod(&host.capacities, &mut t.caches.capacities)?;
        t.caches.rows = rows;
        t.caches.span = span;
        t.caches.layers = layers;
        Ok(t)
    }

    /// The tables' buffers (see [`Buffers::places`]).
    fn places(&self, s: &CudaStream) -> Vec<[u64; 2]> {
        vec![
            place(s, Some(&self.tokens)),
            place(s, Some(&self.pos)),
            place(s, Some(&self.caches.addresses)),
            place(s, Some(&self.caches.capacities)),
        ]
    }
}

impl RowCaches {
    /// The sizes a cache kernel over `rows` rows with positions `pos`, at `layer`, indexes.
    fn check(&self, rows: usize, pos: &CudaSlice<i32>, layer: usize) -> Result<()> {
        need("rows with caches", self.rows, rows)?;
        need(
            "cache addresses",
            self.addresses.len().min(self.capacities.len()),
            rows,
        )?;
        need("positions", pos.len(), rows)?;
        if layer >= self.layers {
            return invalid(format!("layer {layer} of {}", self.layers));
        }
        Ok(())
    }
}

/// One sequence's part of a pass: `tokens` fed at positions `start..`, logits wanted from
/// `first_row` on.
#[derive(Debug)]
pub struct Segment<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut Cache,
    pub start: usize,
    pub first_row: usize,
}

/// The model on one GPU.
#[derive(Debug)]
pub struct Model {
    stream: Arc<CudaStream>,
    kernels: Kernels,
    config: Config,
    device: String,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    norm: CudaSlice<f32>,
    output: Matrix,
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    /// One pass at a time, with the buffers passes reuse.
    pass: Mutex<Scratch>,
}

impl Model {
    /// Open GPU `ordinal`, compile the kernels for it and upload the weights.
    pub fn load(ordinal: usize, host: &HostModel<'_>) -> Result<Model> {
        if !driver_present() {
            return Err(Error::NoDriver);
        }
        if !nvrtc_present() {
            return Err(Error::NoNvrtc);
        }
        let count = CudaContext::device_count()?;
        if ordinal >= usize::try_from(count).unwrap_or(0) {
            return invalid(format!(
                "there is no CUDA device {ordinal} (this machine has {count})"
            ));
        }
        let ctx = CudaContext::new(ordinal)?;
        single_stream(&ctx);
        let device = format!("{} (cuda:{ordinal})", ctx.name()?);
        let kernels = Kernels::load(&ctx)?;
        // A stream of its own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream()?;
        let c = host.config;
        if c.heads == 0
            || c.kv_heads == 0
            || !c.heads.is_multiple_of(c.kv_heads)
            || !c.head_dim.is_multiple_of(32)
            || c.head_dim > 256
        {
            // The 8-bit cache quantizes per 32 values of a head; the attention kernel holds a
            // quantized query of at most 256 values.
            return invalid(
                "unsupported head layout (head sizes must be multiples of 32, at most 256)",
            );
        }
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let upload = |m: &HostMatrix<'_>, rows: usize, cols: usize, what: &str| -> Result<Matrix> {
            if m.rows != rows || m.cols != cols || !cols.is_multiple_of(32) {
                return invalid(format!(
                    "{what} is {}x{}, expected {rows}x{cols}",
                    m.rows, m.cols
                ));
            }
            if m.bytes.len() != rows * (cols / 32) * m.format.block_bytes() {
                return invalid(format!("{what} has {} bytes", m.bytes.len()));
            }
            Ok(Matrix {
                format: m.format,
                rows,
                cols,
                bytes: stream.clone_htod(m.bytes)?,
            })
        };
        let vector = |v: &[f32], n: usize, what: &str| -> Result<CudaSlice<f32>> {
            if v.len() != n {
                return invalid(format!("{what} has {} values, expected {n}", v.len()));
            }
            Ok(stream.clone_htod(v)?)
        };
        let emb = c.embedding;
        let mut layers = Vec::with_capacity(host.layers.len());
        for (i, l) in host.layers.iter().enumerate() {
            layers.push(Layer {
                attn_norm: vector(l.attn_norm, emb, &format!("layer {i} attention norm"))?,
                qkv: upload(&l.qkv, qn + 2 * kvn, emb, &format!("layer {i} qkv"))?,
                wo: upload(&l.wo, emb, qn, &format!("layer {i} output projection"))?,
                ffn_norm: vector(l.ffn_norm, emb, &format!("layer {i} ffn norm"))?,
                gate_up: upload(&l.gate_up, 2 * c.ffn, emb, &format!("layer {i} gate/up"))?,
                down: upload(&l.down, emb, c.ffn, &format!("layer {i} down"))?,
            });
        }
        let vocab = host.output.rows;
        let output = upload(&host.output, vocab, emb, "output matrix")?;
        let embeddings = match host.embeddings {
            HostEmbeddings::Tied if output.format == Format::Q8_0 => Embeddings::Tied,
            HostEmbeddings::Tied => return invalid("tied embeddings must be a Q8_0 matrix"),
            HostEmbeddings::F32(t) => Embeddings::F32(vector(t, vocab * emb, "embeddings")?),
        };
        let half = c.head_dim / 2;
        let table = c.context_length * half;
        Ok(Model {
            kernels,
            config: c,
            device,
            embeddings,
            layers,
            norm: vector(host.norm, emb, "output norm")?,
            output,
            cos: vector(host.cos, table, "rotary cosines")?,
            sin: vector(host.sin, table, "rotary sines")?,
            pass: Mutex::new(Scratch {
                no_graphs: !graphs_wanted(),
                ..Scratch::default()
            }),
            stream,
        })
    }

    /// The GPU's name and ordinal, for reports.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.output.rows
    }

    /// Make room in `cache` for `positions` positions, keeping what it holds.
    fn reserve(&self, cache: &mut Cache, positions: usize) -> Result<()> {
        if positions <= cache.capacity && cache.kv.is_some() {
            return Ok(());
        }
        let c = &self.config;
        let row = cache_row(c.kv_heads * c.head_dim);
        let cap = positions.next_power_of_two().max(64).min(c.context_length);
        let layers = self.layers.len();
        let mut kv = self.stream.alloc_zeros::<f32>(layers * 2 * cap * row)?;
        if let Some(old) = &cache.kv {
            let held = cache.capacity * row;
            for part in 0..2 * layers {
                let src = old.slice(part * held..(part + 1) * held);
                let mut dst = kv.slice_mut(part * cap * row..part * cap * row + held);
                self.stream.memcpy_dtod(&src, &mut dst)?;
            }
        }
        cache.kv = Some(kv);
        cache.capacity = cap;
        Ok(())
    }

    /// Feed each segment's tokens after its cache; logits for each segment's rows from its
    /// `first_row` on, the segments' rows one after another (`[row][vocab]`). The caller advances
    /// each segment's length by its tokens.
    ///
    /// A decoding step (one token per sequence, every row's logits wanted) replays a captured
    /// graph of its shape when there is one (see `Step`); the first step of a shape runs its
    /// kernels itself and then captures them. Either way the same kernels run on the same
    /// buffers: the numbers are the same.
    pub fn forward(&self, segments: &mut [Segment<'_>]) -> Result<Vec<f32>> {
        let mut pass = self
            .pass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sc = &mut *pass;
        let c = self.config;
        let s = &self.stream;
        let vocab = self.vocab();
        let kvn = c.kv_heads * c.head_dim;
        for seg in segments.iter_mut() {
            let end = seg.start + seg.tokens.len();
            if end > c.context_length {
                return invalid(format!(
                    "{end} positions exceed the context of {}",
                    c.context_length
                ));
            }
            if let Some(&t) = seg.tokens.iter().find(|&&t| t as usize >= vocab) {
                return invalid(format!("token {t} is outside the vocabulary"));
            }
            self.reserve(seg.cache, end)?;
        }
        let host = HostTables::new(s, segments, self.layers.len(), cache_row(kvn))?;
        let rows = host.tokens.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        // Each segment's rows, and from which of them logits are wanted.
        let plan: Vec<(usize, usize)> = segments
            .iter()
            .map(|seg| (seg.tokens.len(), seg.first_row.min(seg.tokens.len())))
            .collect();
        let step = !sc.no_graphs
            && rows <= GRAPH_ROWS
            && plan.iter().all(|&(n, first)| n == 1 && first == 0)
            && matches!(self.embeddings, Embeddings::Tied);
        let span = if step {
            span_class(host.span, c.context_length)
        } else {
            host.span
        };
        let tables = Tables::upload(s, &mut sc.tables, &host, span, self.layers.len())?;
        let wanted = if step {
            let places = [sc.bufs.places(s), tables.places(s)].concat();
            let found = sc
                .steps
                .iter()
                .find(|g| g.rows == rows && g.span == span && g.places == places);
            match found {
                Some(g) => {
                    g.graph.0.launch()?;
                    rows
                }
                None => {
                    let wanted = self.run(&mut sc.bufs, tables, &host.tokens, &plan)?;
                    // Capture the same launches for the next step of this shape: nothing runs
                    // while capturing, and every buffer is already as large as the step needs.
                    let places = [sc.bufs.places(s), tables.places(s)].concat();
                    let mode = cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
                    let captured = s
                        .begin_capture(mode)
                        .map_err(Error::from)
                        .map(|()| self.run(&mut sc.bufs, tables, &host.tokens, &plan))
                        .and_then(|run| {
                            let graph =
                                s.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
                            Ok((run?, graph?))
                        });
                    let after = [sc.bufs.places(s), tables.places(s)].concat();
                    match captured {
                        Ok((w, Some(graph))) if w == wanted && after == places => {
                            sc.steps.retain(|g| g.rows != rows || g.span != span);
                            sc.steps.push(Step {
                                rows,
                                span,
                                places,
                                graph: Graph(graph),
                            });
                        }
                        // A capture that failed or allocated: launch directly from now on.
                        _ => {
                            sc.no_graphs = true;
                            sc.steps.clear();
                        }
                    }
                    wanted
                }
            }
        } else {
            self.run(&mut sc.bufs, tables, &host.tokens, &plan)?
        };
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let Some(logits) = sc.bufs.logits.as_ref() else {
            return invalid("the pass wrote no logits");
        };
        need("logits", logits.len(), wanted * vocab)?;
        Ok(s.clone_dtoh(&logits.slice(0..wanted * vocab))?)
    }

    /// A pass's kernels, from the embeddings to the wanted rows' logits (in `b.logits`), for
    /// the rows `tables` describes (`tokens` on the host too), segment by segment as `plan`
    /// gives them (rows, first row whose logits are wanted). Returns the wanted rows.
    fn run(
        &self,
        b: &mut Buffers,
        tables: &Tables,
        tokens: &[u32],
        plan: &[(usize, usize)],
    ) -> Result<usize> {
        let c = self.config;
        let s = &self.stream;
        let k = &self.kernels;
        let (emb, vocab) = (c.embedding, self.vocab());
        let (qn, kvn, half) = (
            c.heads * c.head_dim,
            c.kv_heads * c.head_dim,
            c.head_dim / 2,
        );
        let width = qn + 2 * kvn;
        let rows = tokens.len();
        let (pos, caches) = (&tables.pos, &tables.caches);
        let x = room(s, &mut b.x, rows * emb)?;
        match &self.embeddings {
            Embeddings::Tied => k.embed_q8_0(s, &self.output, &tables.tokens, rows, x)?,
            Embeddings::F32(table) => {
                for (r, &t) in tokens.iter().enumerate() {
                    let t = t as usize;
                    let src = table.slice(t * emb..(t + 1) * emb);
                    let mut dst = x.slice_mut(r * emb..(r + 1) * emb);
                    s.memcpy_dtod(&src, &mut dst)?;
                }
            }
        }
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let rotary = (&self.cos, &self.sin);
        for (li, layer) in self.layers.iter().enumerate() {
            // The last layer's output (in `o`) is added to `x` as this layer's first norm
            // reads it.
            let last = if li > 0 { b.o.as_ref() } else { None };
            k.norm_quantize(s, x, last, &layer.attn_norm, rows, c.eps, &mut b.acts)?;
            let qkv = room(s, &mut b.qkv, rows * width)?;
            k.product(s, &layer.qkv, rows, &b.acts, qkv)?;
            let q = room(s, &mut b.q, rows * qn)?;
            k.rope_store(
                s,
                qkv,
                rows,
                (width, qn, kvn, half),
                pos,
                caches,
                li,
                rotary,
                q,
            )?;
            k.attention(
                s,
                &q.as_view(),
                rows,
                &c,
                pos,
                caches,
                li,
                scale,
                &mut b.acts,
            )?;
            let o = room(s, &mut b.o, rows * emb)?;
            k.product(s, &layer.wo, rows, &b.acts, o)?;
            k.norm_quantize(s, x, Some(o), &layer.ffn_norm, rows, c.eps, &mut b.acts)?;
            let gu = room(s, &mut b.gu, rows * 2 * c.ffn)?;
            k.product(s, &layer.gate_up, rows, &b.acts, gu)?;
            k.silu_quantize(s, gu, rows, c.ffn, &mut b.acts)?;
            let o = room(s, &mut b.o, rows * emb)?;
            k.product(s, &layer.down, rows, &b.acts, o)?;
        }
        if !self.layers.is_empty() {
            let Some(o) = b.o.as_ref() else {
                return invalid("the last layer's output is missing");
            };
            k.add(s, x, o, rows * emb)?;
        }
        // The rows asked for; then the output projection for them alone. When every row is
        // wanted (a decoding step) they are `x` itself: the final norm only reads it.
        let wanted_rows: usize = plan.iter().map(|&(n, first)| n - first).sum();
        if wanted_rows == 0 {
            return Ok(0);
        }
        let input = if wanted_rows == rows {
            x
        } else {
            let wanted = room(s, &mut b.wanted, wanted_rows * emb)?;
            let (mut at, mut to) = (0, 0);
            for &(n, first) in plan {
                if first < n {
                    let src = x.slice((at + first) * emb..(at + n) * emb);
                    let mut dst = wanted.slice_mut(to * emb..(to + n - first) * emb);
                    s.memcpy_dtod(&src, &mut dst)?;
                }
                at += n;
                to += n - first;
            }
            wanted
        };
        k.norm_quantize(s, input, None, &self.norm, wanted_rows, c.eps, &mut b.acts)?;
        let logits = room(s, &mut b.logits, wanted_rows * vocab)?;
        k.product(s, &self.output, wanted_rows, &b.acts, logits)?;
        Ok(wanted_rows)
    }
}

#[cfg(test)]
mod tests {
    /// The value of `#define NAME` in `kernels.cu`.
    fn defined(name: &str) -> usize {
        super::KERNELS
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("kernels.cu defines {name}"))
    }

    #[test]
    fn attention_threads_match_the_kernel() {
        assert_eq!(
            super::ATTENTION_THREADS as usize,
            defined("ATTN_WARPS") * 32
        );
    }

    #[test]
    fn matmul_rows_match_the_kernel() {
        assert_eq!(super::MATMUL_ROWS, defined("MROWS"));
    }
}
