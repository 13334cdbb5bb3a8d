//! `exp` for the forward pass, written out so that every machine computes the same bits.
//!
//! The softmax and SiLU need `e^x`. The C libraries' `expf` (glibc on the CPU, CUDA's on a GPU)
//! are accurate to an ulp or two but not identical, and one ulp, re-quantized to 8 bits at the
//! next product, is enough to move a near-tie 30 layers later: with the libraries' functions, a
//! GPU miner's greedy tokens were the CPU's argmax for 98% of tokens only. This one uses only
//! IEEE-exact operations (products, sums, fused multiply-adds, rounding to an integer), so the
//! CPU kernels and the CUDA kernel (`exp_agora` in `agora-inference-cuda`'s `kernels.cu`, the same
//! steps) agree bit for bit. It is within 2 ulp of the true value (tested).
//!
//! `e^x = 2^n * e^r` with `n = round(x * log2(e))` (ties to even) and `r = x - n * ln 2` (two
//! fused steps, `ln 2` split in a high part exact in 16 bits and a low part), `e^r` by its Taylor
//! polynomial of degree 7 in Horner form (`|r| <= 0.35`, truncation below 1e-8 relative), and
//! `2^n` applied as two exact powers of two.
#![allow(
    clippy::float_arithmetic,
    reason = "inference is not consensus-visible; every operation is IEEE-exact and fixed"
)]

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` to 16 significant bits (`0x3F317200`), so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = 1.428_606_8e-6;
/// Above this `e^x` overflows f32.
const MAX_ARG: f32 = 88.722_84;
/// Below this `e^x` rounds to zero.
const MIN_ARG: f32 = -103.972_08;

/// `2^k` for `-126 <= k <= 127`.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// 1.5 * 2^23: adding it to an integer-valued `f32` of magnitude below 2^22 leaves that integer,
/// in two's complement, in the sum's low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;

/// The integer an integer-valued `n` (|n| < 2^22) holds, exactly as `n as i32`, from the bits of
/// `n + ROUNDER` (an exact sum). `as i32` saturates, and its NaN and range checks kept loops over
/// [`exp`] from vectorising (sixteen scalar conversions per vector: SiLU ran at about 1 ns per
/// value). For a NaN `n` the result is meaningless, and [`exp`] returns NaN anyway.
#[inline(always)]
fn to_int(n: f32) -> i32 {
    ((n + ROUNDER).to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32)
}

/// `e^x`; `inf` above [`MAX_ARG`], `0` below [`MIN_ARG`], NaN for NaN. Written without early
/// returns (the polynomial runs on the clamped argument and the edge cases are selected after),
/// so that loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(MIN_ARG, MAX_ARG);
    let n = (xc * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let mut p: f32 = 1.0 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n is an integer in [-150, 128] (NaN for NaN): two halves, each a normal power of two.
    let k = to_int(n);
    let a = k / 2;
    let y = p * pow2(a) * pow2(k - a);
    if x > MAX_ARG {
        f32::INFINITY
    } else if x < MIN_ARG {
        0.0
    } else {
        y
    }
}

/// [`exp`] of sixteen values at once, for the AVX-512 kernels (SiLU, the softmax): the same
/// operations, except that `2^n` is applied by one `vscalefps` (`p * 2^n`, rounded once)
/// instead of the two multiplications by powers of two, of which the first is exact (`p` is in
/// `[0.7, 1.5)` and `2^(n / 2)` keeps it normal), so the same single rounding: the same bits
/// (`sixteen_at_once_gives_the_same_bits`). That step, `to_int` and the halving of `n` were
/// about twelve of about thirty operations per vector (counted in the source): a SiLU of 168
/// rows of 1,536 values on one thread, 68 -> 53 us on AMD Zen 5 (a throwaway copy of both); a
/// 168-row pass's SiLU phase 1.13-1.25 -> 0.90-1.01 ms (pass timers, four alternated runs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // `max` and `min` return their second operand when either is NaN: a NaN `x` stays NaN, as
    // `f32::clamp` keeps it.
    let xc = _mm512_min_ps(
        _mm512_set1_ps(MAX_ARG),
        _mm512_max_ps(_mm512_set1_ps(MIN_ARG), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), xc);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0f32,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_scalef_ps(p, n);
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(MAX_ARG));
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(MIN_ARG));
    let y = _mm512_mask_blend_ps(above, y, _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_blend_ps(below, y, _mm512_setzero_ps())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`exp16`] of `v` where the CPU has AVX-512 (`None` elsewhere).
    #[multiversion::multiversion(targets("x86_64+avx512f"))]
    fn sixteen(v: [f32; 16]) -> Option<[f32; 16]> {
        multiversion::target::match_target! {
            "x86_64+avx512f" => Some(bytemuck::cast(exp16(bytemuck::cast(v)))),
            _ => {
                let _ = v;
                None
            },
        }
    }

    #[test]
    fn sixteen_at_once_gives_the_same_bits() {
        let mut xs: Vec<f32> = (0..1_600_000)
            .map(|i| -110.0 + i as f32 * 0.000_128)
            .collect();
        xs.extend([
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            MAX_ARG,
            MAX_ARG.next_up(),
            MIN_ARG,
            MIN_ARG.next_down(),
            f32::MAX,
            f32::MIN,
            1e-30,
            -1e-30,
        ]);
        xs.resize(xs.len().next_multiple_of(16), 1.0);
        let mut checked = 0;
        for chunk in xs.chunks_exact(16) {
            let v: [f32; 16] = chunk.try_into().unwrap();
            let Some(got) = sixteen(v) else { continue };
            for (&x, g) in chunk.iter().zip(got) {
                let want = exp(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp16({x:e}) = {g:e}, exp = {want:e}"
                );
                checked += 1;
            }
        }
        eprintln!("exp16 checked against exp on {checked} values (0 without AVX-512)");
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_two_ulp_of_the_true_value_over_the_normal_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp() as f32;
            let got = exp(x);
            worst = worst.max(ulps(got, want));
            x += 0.001_37;
        }
        // Small arguments, where softmax and SiLU spend most of their time.
        for i in -20_000..20_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max(ulps(exp(x), f64::from(x).exp() as f32));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn the_integer_conversion_is_a_cast_over_the_range_used() {
        for n in -150..=128 {
            assert_eq!(to_int(n as f32), n);
        }
        for n in [-(1 << 21), (1 << 21) - 1, -1_000_000, 999_999] {
            assert_eq!(to_int(n as f32), n);
        }
    }

    #[test]
    fn edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results stay finite, positive and ordered.
        let (a, b) = (exp(-100.0), exp(-95.0));
        assert!(a > 0.0 && a < b && b < f32::MIN_POSITIVE);
    }
}
