//! Time of one decoding step's attention, as a pass runs it: every layer (30, each with its own
//! cache, so that caches come from L3 as in a pass) for `STREAMS` sequences of `CONTEXT`
//! positions, one query row each: `cargo run --release -p agora-inference-candle --example
//! attention [CONTEXT] [STREAMS] [ROWS]` (default 170, 1 and 1). Prints microseconds per row and
//! layer, best of five rounds. With `ROWS` above 1, one sequence's last `ROWS` positions attend
//! at once, as a scoring pass's do (`attention 182 1 168`: a 128-token answer after a 40-token
//! prompt and a 14-position reused prefix), on rayon's pool with its other threads kept awake;
//! it prints milliseconds per pass over the 30 layers.
#![allow(clippy::float_arithmetic, reason = "timing arithmetic")]

use agora_inference_candle::attention::{Ahead, LayerCache, Shape, causal, causal_into};
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
    let (context, streams, rows) = (arg(1, 170), arg(2, 1), arg(3, 1));
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
    if rows > 1 {
        return pass(&caches[..layers], shape, context, rows.min(context));
    }
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

/// A scoring pass's attention: the last `rows` of `context` positions in every layer's cache.
fn pass(caches: &[LayerCache], shape: Shape, context: usize, rows: usize) {
    let q = random(rows * shape.heads * shape.head_dim, 3);
    let start = context - rows;
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    let mut sink = 0f32;
    for _ in 0..20 {
        let t = Instant::now();
        agora_inference_candle::pool::on_pool(|| {
            for cache in caches {
                causal_into(
                    &q,
                    cache,
                    start,
                    rows,
                    false,
                    &mut Ahead::default(),
                    &mut out,
                );
                sink += out[0];
            }
        });
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "attention context {context}, {rows} rows, {} layers: {best:.3} ms per pass ({sink:.1})",
        caches.len()
    );
    println!("bench attention/pass_c{context}_r{rows} {best:.3} ms");
}
