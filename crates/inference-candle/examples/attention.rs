//! Time of one decoding step's attention, as a pass runs it: every layer (30, each with its own
//! cache, so that caches come from L3 as in a pass) for `STREAMS` sequences of `CONTEXT`
//! positions, one query row each: `cargo run --release -p agora-inference-candle --example
//! attention [CONTEXT] [STREAMS]` (default 170 and 1). Prints microseconds per row and layer,
//! best of five rounds.
#![allow(clippy::float_arithmetic, reason = "timing arithmetic")]

use agora_inference_candle::attention::{LayerCache, Shape, causal};
use std::time::Instant;

mod common;
use common::random;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (context, streams) = (arg(1, 170), arg(2, 1));
    let layers = 30;
    // SmolLM2-135M's attention.
    let shape = Shape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
    };
    let width = shape.kv_heads * shape.head_dim;
    let caches: Vec<LayerCache> = (0..layers * streams)
        .map(|c| {
            let mut cache = LayerCache::new(shape);
            cache.push(&random(context * 2 * width, c as u64 + 7));
            cache
        })
        .collect();
    let q = random(shape.heads * shape.head_dim, 3);
    let mut best = f64::INFINITY;
    let mut sink = 0f32;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..20 {
            for cache in &caches {
                let out = causal(&q, cache, context - 1, 1);
                sink += out[0];
            }
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / (20 * layers * streams) as f64;
        best = best.min(per);
    }
    println!(
        "attention context {context}, {streams} streams: {best:.2} us per row and layer ({sink:.1})"
    );
    println!("bench attention/c{context}_s{streams} {best:.2} us");
}
