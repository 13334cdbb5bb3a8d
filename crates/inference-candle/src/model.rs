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
use candle_core::{DType, Device, IndexOp, Module, Tensor};

use crate::q4_1::Q41Matrix;

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

/// A weight matrix: Q4_1 through our vectorisable kernel, anything else through candle.
enum Linear {
    Q41(Q41Matrix),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        match Q41Matrix::from_qtensor(&t)? {
            Some(m) => Ok(Linear::Q41(m)),
            None => Ok(Linear::Candle(QMatMul::from_qtensor(t)?)),
        }
    }

    /// `x` is `(1, seq, k)`; the result `(1, seq, n)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(q) => q.forward(x),
            Linear::Q41(m) => {
                let (b, seq, _) = x.dims3()?;
                let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let out = m.matmul(&flat);
                Tensor::from_vec(out, (b, seq, m.rows()), x.device())
            }
        }
    }
}

struct Block {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The weights (shared, read-only).
pub struct Weights {
    pub config: Config,
    embeddings: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("config", &self.config)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// One sequence's key-value cache: per layer, keys and values laid out
/// `[position][kv_head][dim]` (rounded through f16 as llama.cpp keeps them).
#[derive(Debug, Default)]
pub struct Cache {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Tokens already in the cache.
    pub len: usize,
}

type Result<T> = candle_core::Result<T>;

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    match ct.metadata.get(key) {
        Some(v) => Ok(v.to_u32()? as usize),
        None => candle_core::bail!("GGUF metadata {key} is missing"),
    }
}

impl Weights {
    /// Load from a GGUF file.
    pub fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let heads = md_u32(ct, "llama.attention.head_count")?;
        let kv_heads = md_u32(ct, "llama.attention.head_count_kv")?;
        let embedding = md_u32(ct, "llama.embedding_length")?;
        let layers = md_u32(ct, "llama.block_count")?;
        let context_length = md_u32(ct, "llama.context_length")?;
        let rms_eps = match ct.metadata.get("llama.attention.layer_norm_rms_epsilon") {
            Some(v) => f64::from(v.to_f32()?),
            None => 1e-5,
        };
        let rope_base = match ct.metadata.get("llama.rope.freq_base") {
            Some(v) => v.to_f32()?,
            None => 10_000.0,
        };
        let head_dim = embedding / heads;
        let tensor = |r: &mut R, name: &str| ct.tensor(r, name, device);
        let embeddings = tensor(r, "token_embd.weight")?.dequantize(device)?;
        let output = if ct.tensor_infos.contains_key("output.weight") {
            Linear::new(tensor(r, "output.weight")?)?
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            Linear::new(tensor(r, "token_embd.weight")?)?
        };
        let norm = tensor(r, "output_norm.weight")?.dequantize(device)?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("blk.{i}");
            let q = |r: &mut R, n: &str| -> Result<Linear> {
                Linear::new(tensor(r, &format!("{p}.{n}.weight"))?)
            };
            blocks.push(Block {
                attn_norm: tensor(r, &format!("{p}.attn_norm.weight"))?.dequantize(device)?,
                wq: q(r, "attn_q")?,
                wk: q(r, "attn_k")?,
                wv: q(r, "attn_v")?,
                wo: q(r, "attn_output")?,
                ffn_norm: tensor(r, &format!("{p}.ffn_norm.weight"))?.dequantize(device)?,
                gate: q(r, "ffn_gate")?,
                up: q(r, "ffn_up")?,
                down: q(r, "ffn_down")?,
            });
        }
        // Rotary tables for every position of the context.
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / rope_base.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, context_length as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((context_length, 1))?;
        let angles = positions.matmul(&inv_freq)?;
        let config = Config {
            heads,
            kv_heads,
            head_dim,
            embedding,
            rms_eps,
            context_length,
        };
        Ok(Weights {
            config,
            embeddings,
            blocks,
            norm,
            output,
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    /// Scale every RMS-norm weight by a factor drawn from `[1 - spread, 1 + spread]` with `seed`
    /// (a splitmix64 stream): the same architecture and file hash, another model. For testing
    /// that validators catch a miner serving the wrong model.
    pub fn perturb_norms(&mut self, seed: u64, spread: f32) -> Result<()> {
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
        let mut scale = |t: &Tensor| -> Result<Tensor> {
            let v: Vec<f32> = t.to_vec1::<f32>()?;
            let v: Vec<f32> = v.into_iter().map(|x| x * (1.0 + spread * next())).collect();
            Tensor::from_vec(v, t.dims1()?, t.device())
        };
        for b in &mut self.blocks {
            b.attn_norm = scale(&b.attn_norm)?;
            b.ffn_norm = scale(&b.ffn_norm)?;
        }
        self.norm = scale(&self.norm)?;
        Ok(())
    }

    /// A fresh cache.
    pub fn cache(&self) -> Cache {
        Cache {
            layers: vec![(Vec::new(), Vec::new()); self.blocks.len()],
            len: 0,
        }
    }

    /// Feed `tokens` after what the cache holds; logits for every fed position `(len, vocab)`.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Tensor> {
        self.forward_from(tokens, cache, 0)
    }

    /// Feed `tokens` after what the cache holds; logits for the fed positions from `first_row`
    /// on, `(len - first_row, vocab)`.
    ///
    /// Every operation treats each position on its own (per-row quantization and norms, one
    /// dot product per row and output, attention row by row in [`crate::attention`]), so a
    /// position's logits are the same, bit for bit, whether it is fed alone (decoding) or with
    /// others (a prompt, or a continuation being scored). The output projection (the largest
    /// matrix) runs only for the rows asked for.
    pub fn forward_from(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        first_row: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let device = self.embeddings.device();
        let seq = tokens.len();
        let start = cache.len;
        let ids = Tensor::new(tokens, device)?;
        let mut x = self.embeddings.index_select(&ids, 0)?.unsqueeze(0)?; // (1, seq, emb)
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let shape = crate::attention::Shape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, c.rms_eps as f32)?;
            let q = block
                .wq
                .forward(&h)?
                .reshape((1, seq, c.heads, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = block
                .wk
                .forward(&h)?
                .reshape((1, seq, c.kv_heads, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = block
                .wv
                .forward(&h)?
                .reshape((1, seq, c.kv_heads, c.head_dim))?
                .transpose(1, 2)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            // llama.cpp keeps the key-value cache in f16; round the same way so that greedy
            // decoding follows the reference at near-ties.
            let k = k.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
            let v = v.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
            // Append to the cache as [position][kv_head][dim].
            let (keys, values) = &mut cache.layers[layer];
            for (new, store) in [(&k, &mut *keys), (&v, &mut *values)] {
                // (1, kv_heads, seq, dim) -> (seq, kv_heads, dim)
                let t = new.i(0)?.transpose(0, 1)?.contiguous()?;
                store.extend(t.flatten_all()?.to_vec1::<f32>()?);
            }
            let qv = q.flatten_all()?.to_vec1::<f32>()?; // [head][row][dim]
            let out = crate::attention::causal(&qv, keys, values, shape, start, seq);
            let attn = Tensor::from_vec(out, (1, seq, c.embedding), device)?;
            x = (x + block.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, c.rms_eps as f32)?;
            let gated = (block.gate.forward(&h)?.silu()? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&gated)?)?;
        }
        cache.len += seq;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, c.rms_eps as f32)?;
        // Every row's activations are quantized on their own and each output is one dot product
        // per row and column, so projecting the rows together gives each row's numbers exactly.
        let first = first_row.min(seq);
        let logits = self
            .output
            .forward(&x.narrow(1, first, seq - first)?.contiguous()?)?;
        logits.i(0)?.to_dtype(DType::F32)
    }
}
