//! `agora chat`: stream an answer from the local model to the terminal.

use std::io::Write;
use std::path::PathBuf;

use agora_inference::{ChatMessage, Engine, GenerateRequest, Sampling};
use anyhow::{Context, Result};

/// Ask the local model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question.
    prompt: String,
    /// Most tokens to generate (at least 1).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sample only among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The system message. The model's template otherwise inserts its own, with which this
    /// 135M model answers worse.
    #[arg(long, default_value = "You are a helpful AI assistant.")]
    system: String,
    /// Model cache directory (default as `agora model fetch`).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Where the model runs: cpu, cuda or cuda:N (default: AGORA_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let dir = args
        .model_dir
        .unwrap_or_else(agora_inference::model::default_dir);
    let path = agora_inference::model::locate(&dir)?;
    let device = match &args.device {
        Some(d) => agora_inference_candle::Device::parse(d).map_err(anyhow::Error::msg)?,
        None => agora_inference_candle::Device::from_env().map_err(anyhow::Error::msg)?,
    };
    let engine = agora_inference_candle::CandleEngine::load_on(&path, device)
        .with_context(|| format!("loading {} on {device}", path.display()))?;
    let mut messages = Vec::new();
    if !args.system.is_empty() {
        messages.push(ChatMessage {
            role: "system".into(),
            content: args.system,
        });
    }
    messages.push(ChatMessage::user(args.prompt));
    let prompt = engine.tokenize(&engine.render_chat(&messages)?)?;
    let request = GenerateRequest {
        prompt,
        max_tokens: args.max_tokens as usize,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: args.seed,
        },
        stop: Vec::new(),
        logprobs: false,
        top_logprobs: 0,
    };
    let mut stdout = std::io::stdout();
    engine.generate(&request, &mut |t| {
        // A closed stdout (the reader went away) cancels generation.
        stdout
            .write_all(t.text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_ok()
    })?;
    println!();
    Ok(())
}
