//! The candle inference engine: SmolLM2 from its GGUF, tokenizer and chat template from the
//! GGUF's own metadata.
//!
//! Stability: internal to the node; the interface is `agora_inference::Engine`.
//!
//! # Design
//! The only home of candle. [`CandleEngine::load`] reads the GGUF once: the quantized weights
//! (`model`, our own llama forward pass that returns logits for every position), the byte-level
//! BPE tokenizer (`tokenizer`, llama.cpp's "smollm" pre-tokenizer), the chat template (rendered
//! with minijinja) and the end-of-sequence id. Each generation has its own key-value cache, so
//! requests do not share state.
//!
//! [`Device`] picks where passes run: the CPU (the default) or an NVIDIA GPU through
//! `agora-inference-cuda` (`AGORA_DEVICE=cuda`), which computes the same bits.
//!
//! # Example
//! ```no_run
//! use agora_inference::{ChatMessage, Engine, GenerateRequest};
//! let dir = agora_inference::model::default_dir();
//! let engine = agora_inference_candle::CandleEngine::load(&agora_inference::model::model_path(&dir))?;
//! let prompt = engine.render_chat(&[ChatMessage::user("What is the capital of France?")])?;
//! let ids = engine.tokenize(&prompt)?;
//! let out = engine.generate(&GenerateRequest::greedy(ids, 32), &mut |t| { print!("{}", t.text); true })?;
//! # Ok::<(), agora_inference::Error>(())
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::float_arithmetic)] // Not consensus-visible: logits and probabilities are floats.

#[doc(hidden)] // Public for `--example attention` only.
pub mod attention;
mod engine;
mod exp;
mod model;
#[doc(hidden)] // Public for `--example kernels` only.
pub mod pool;
pub mod quant;
pub mod tokenizer;

pub use agora_inference::Error;
pub use engine::{CandleEngine, NUMERICS};
pub use model::Device;
pub use quant::Kernel;
