//! Throughput of the quantized matrix kernels on random weights, in billions of multiply-adds
//! per second: `cargo run --release -p agora-inference-candle --example kernels [KERNEL] [ROWS]
//! [cold | cold:N]`. Products run as a model pass runs them: on rayon's pool, its other threads
//! kept awake between calls.
#![allow(clippy::float_arithmetic, reason = "timing arithmetic")]

use agora_inference_candle::quant::Kernel;
use agora_inference_candle::quant::q4_1::Q41Matrix;
use agora_inference_candle::quant::q8_0::Q80Matrix;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::time::Instant;

mod common;
use common::random;

/// A matrix product under test.
type Product<'a> = &'a (dyn Fn(&[f32]) -> usize + Sync);

/// Each matrix quantized to `dtype` and loaded with `from` (a matrix type's `from_qtensor`).
fn load<M>(
    weights: &[Tensor],
    dtype: GgmlDType,
    from: impl Fn(&QTensor) -> candle_core::Result<Option<M>>,
) -> Vec<M> {
    weights
        .iter()
        .map(|w| {
            from(&QTensor::quantize(w, dtype).unwrap())
                .unwrap()
                .unwrap()
        })
        .collect()
}

fn main() {
    // An optional argument picks one kernel by name.
    let only = std::env::args().nth(1);
    // An optional second argument: one row count.
    let rows: Vec<usize> = match std::env::args().nth(2).and_then(|m| m.parse().ok()) {
        Some(m) => vec![m],
        None => vec![1, 4, 168],
    };
    // An optional third argument, `cold`: cycle through 24 different matrices (13 MB in Q4_1,
    // more than the L2 caches hold), as a pass through the model's layers does, instead of one
    // that stays in L2; `cold:N`: N matrices (the model's layers hold about 67 MB of Q4_1
    // weights and its output matrix 30 MB of Q8_0: `cold:200` is about 110 MB in Q4_1).
    let copies = match std::env::args().nth(3).as_deref() {
        Some("cold") => 24,
        Some(c) => c
            .strip_prefix("cold:")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1),
        None => 1,
    };
    let (n, k) = (1536, 576);
    let weights: Vec<Tensor> = (0..copies)
        .map(|c| Tensor::from_vec(random(n * k, 1 + c as u64), (n, k), &Device::Cpu).unwrap())
        .collect();
    let q41 = load(&weights, GgmlDType::Q4_1, Q41Matrix::from_qtensor);
    let q80 = load(&weights, GgmlDType::Q8_0, Q80Matrix::from_qtensor);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let pick = || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % copies;
    for m in rows {
        let x = random(m * k, 2);
        for kernel in [
            Kernel::Amx,
            Kernel::Avx512Vnni,
            Kernel::Avx2,
            Kernel::Scalar,
        ] {
            if kernel > Kernel::best() || only.as_deref().is_some_and(|o| o != kernel.name()) {
                continue;
            }
            let reps = (2000 / m).max(20);
            // Into a buffer kept from one product to the next, as a model pass does.
            let out = std::sync::Mutex::new(Vec::new());
            let runs: [(&str, Product); 2] = [
                ("q4_1", &|x| {
                    let mut out = out.lock().unwrap();
                    q41[pick()].matmul_into_with(kernel, x, &mut out);
                    out.len()
                }),
                ("q8_0", &|x| {
                    let mut out = out.lock().unwrap();
                    q80[pick()].matmul_into_with(kernel, x, &mut out);
                    out.len()
                }),
            ];
            for (name, f) in runs {
                // The best of five rounds: this is a shared machine, and slow rounds measure
                // the neighbours.
                let s = (0..5)
                    .map(|_| {
                        agora_inference_candle::pool::on_pool(|| {
                            let t = Instant::now();
                            for _ in 0..reps {
                                std::hint::black_box(f(&x));
                            }
                            t.elapsed().as_secs_f64() / reps as f64
                        })
                    })
                    .fold(f64::INFINITY, f64::min);
                let gmacs = (n * k * m) as f64 / s / 1e9;
                println!(
                    "bench kernels/{name}_{}_m{m} {gmacs:.1} GMAC/s",
                    kernel.name()
                );
            }
        }
    }
}
