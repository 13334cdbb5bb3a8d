//! Fixed-point helpers with the reference's exact semantics.
//!
//! Every helper here mirrors one operation of subtensor's `epoch/math.rs` bit for bit: division
//! by zero or division that overflows yields 0, products saturate unless stated otherwise, and
//! sums saturate (the reference uses plain addition; on every input whose sums fit, which is every
//! input the reference itself can process, the two agree).

use substrate_fixed::types::{I32F32, I64F64};

/// The reference's `I32F32` number type: 32 integer bits, 32 fractional bits.
pub(crate) type Fx = I32F32;

pub(crate) const ZERO: Fx = Fx::from_bits(0);
pub(crate) const ONE: Fx = Fx::from_bits(1 << 32);
const U16_MAX: Fx = Fx::from_bits((u16::MAX as i64) << 32);

/// `x / y`, or 0 when `y` is 0 or the quotient overflows (`safe_div`).
///
/// Same result as `I32F32::checked_div` (`(x << 32) / y`, truncated toward zero). For a
/// non-negative dividend and a positive divisor, common factors of two are removed from both
/// first (the quotient is unchanged), which lets the usual cases (proportions below 1, and
/// integer-valued weights over an integer sum) run on native 64-bit division instead of a
/// 128-bit library call.
#[inline]
pub(crate) fn div(x: Fx, y: Fx) -> Fx {
    let (a, b) = (x.to_bits(), y.to_bits());
    if a >= 0 && b > 0 {
        let shift = (a | (1 << 62)).trailing_zeros().min(b.trailing_zeros());
        let (a, b) = ((a >> shift) as u64, (b >> shift) as u64);
        if a < 1 << 32 {
            let q = (a << 32) / b;
            return i64::try_from(q).map_or(ZERO, Fx::from_bits);
        }
    }
    x.checked_div(y).unwrap_or(ZERO)
}

/// `1 / y` for `y >= 1`, as `I32F32::saturating_div` computes it (no overflow is possible).
#[inline]
pub(crate) fn recip_of_at_least_one(y: Fx) -> Fx {
    debug_assert!(y >= ONE);
    let b = y.to_bits() as u64;
    // floor(2^64 / b): equal to floor((2^64 - 1) / b) unless b divides 2^64.
    let q = if b.is_power_of_two() {
        1u64 << (64 - b.trailing_zeros())
    } else {
        u64::MAX / b
    };
    Fx::from_bits(q as i64)
}

/// The exact product `x * y` as `(floor((x * y) >> 32), overflowed)`, with the reference's
/// overflow rule: it overflows when `x * y * 2^32` leaves `i128`.
#[inline]
fn mul_overflow(x: Fx, y: Fx) -> (i64, bool) {
    let p = i128::from(x.to_bits()) * i128::from(y.to_bits());
    let high = p >> 95;
    ((p >> 32) as i64, high != 0 && high != -1)
}

/// `I32F32::saturating_mul`, without the 128-bit overflow-checked library call.
#[inline]
pub(crate) fn mul(x: Fx, y: Fx) -> Fx {
    match mul_overflow(x, y) {
        (bits, false) => Fx::from_bits(bits),
        (_, true) if (x < ZERO) != (y < ZERO) => Fx::min_value(),
        (_, true) => Fx::max_value(),
    }
}

/// `I32F32::checked_mul`, 0 on overflow.
#[inline]
pub(crate) fn mul_or_zero(x: Fx, y: Fx) -> Fx {
    match mul_overflow(x, y) {
        (bits, false) => Fx::from_bits(bits),
        (_, true) => ZERO,
    }
}

/// `x / y` in `I64F64`, or 0 when `y` is 0 or the quotient overflows.
#[inline]
pub(crate) fn div64(x: I64F64, y: I64F64) -> I64F64 {
    x.checked_div(y).unwrap_or_else(|| I64F64::from_bits(0))
}

/// `x + y`, saturating: the same bits as `I32F32::saturating_add`.
#[inline]
pub(crate) fn add(x: Fx, y: Fx) -> Fx {
    Fx::from_bits(x.to_bits().saturating_add(y.to_bits()))
}

/// Sum of a sequence of values (saturating).
#[inline]
pub(crate) fn sum<I: IntoIterator<Item = Fx>>(values: I) -> Fx {
    values.into_iter().fold(ZERO, add)
}

/// Division of many dividends by one divisor, `x / d` exactly as [`div`], with the quotient
/// computed by a multiplication and shifts (the invariant-divisor method of Granlund and
/// Montgomery) instead of a hardware division per dividend.
///
/// A non-negative dividend below 1 (`a < 2^32` in bits) gives a 64-bit numerator `a << 32`
/// directly. A larger one whose low bits share the divisor's trailing zeros (integer weights
/// over an integer sum) gives one after removing those common factors of two, which does not
/// change the quotient. Anything else falls back to [`div`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Divisor {
    d: Fx,
    /// Common factors of two removed for the reduced core.
    k: u32,
    full: Reciprocal,
    reduced: Reciprocal,
}

/// `n / dd` for a fixed `dd` by multiply-high and shifts.
#[derive(Clone, Copy, Debug)]
struct Reciprocal {
    magic: u64,
    /// All ones when the 65-bit multiplier's add-and-halve step applies, else zero.
    add_mask: u64,
    shift: u32,
    /// `dd` is 1.
    one: bool,
}

impl Reciprocal {
    fn new(dd: u64) -> Self {
        debug_assert!(dd > 0);
        let floor_log2 = 63 - dd.leading_zeros();
        let base = Reciprocal {
            magic: 0,
            add_mask: 0,
            shift: floor_log2,
            one: dd == 1,
        };
        if dd.is_power_of_two() {
            // q = 0, t = n >> 1, result t >> (l - 1) = n >> l (l >= 1 here; dd == 1 is `one`).
            return Reciprocal {
                add_mask: u64::MAX,
                shift: floor_log2.saturating_sub(1),
                ..base
            };
        }
        // m = floor(2^(64 + l) / dd) fits in 64 bits because dd > 2^l.
        let wide = 1u128 << (64 + floor_log2);
        let (m, rem) = (
            (wide / u128::from(dd)) as u64,
            (wide % u128::from(dd)) as u64,
        );
        if dd - rem < (1u64 << floor_log2) {
            Reciprocal {
                magic: m.wrapping_add(1),
                ..base
            }
        } else {
            // The 65-bit multiplier case: 2m (+1), applied with an add-and-halve step.
            let mut m2 = m.wrapping_add(m);
            let twice_rem = rem.wrapping_add(rem);
            if twice_rem >= dd || twice_rem < rem {
                m2 = m2.wrapping_add(1);
            }
            Reciprocal {
                magic: m2.wrapping_add(1),
                add_mask: u64::MAX,
                ..base
            }
        }
    }

    /// `n / dd`, without a branch on the divisor's kind (columns alternate between kinds, and a
    /// mispredicted branch costs more than computing both forms).
    #[inline]
    fn divide(&self, n: u64) -> u64 {
        if self.one {
            return n;
        }
        let q = ((u128::from(n) * u128::from(self.magic)) >> 64) as u64;
        let t = ((n - q) >> 1) + q;
        ((q & !self.add_mask) | (t & self.add_mask)) >> self.shift
    }
}

impl Divisor {
    /// Dividing by this leaves values unchanged (for columns that sum to 0, which the reference
    /// leaves as they are).
    pub(crate) fn identity() -> Self {
        let one = Reciprocal::new(1);
        Divisor {
            d: ZERO,
            k: 0,
            full: one,
            reduced: one,
        }
    }

    /// The divisor for normalising by `total`: the identity when `total` is 0.
    pub(crate) fn or_identity(total: Fx) -> Self {
        if total == ZERO {
            Self::identity()
        } else {
            Self::new(total)
        }
    }

    pub(crate) fn new(d: Fx) -> Self {
        let bits = d.to_bits();
        if bits <= 0 {
            // Every division by a non-positive divisor takes the general path.
            let one = Reciprocal::new(1);
            return Divisor {
                d,
                k: 0,
                full: one,
                reduced: one,
            };
        }
        let k = bits.trailing_zeros().min(32);
        Divisor {
            d,
            k,
            full: Reciprocal::new(bits as u64),
            reduced: Reciprocal::new((bits >> k) as u64),
        }
    }

    /// `x / d`, equal to `div(x, d)`.
    #[inline]
    pub(crate) fn divide(&self, x: Fx) -> Fx {
        let a = x.to_bits();
        let d = self.d.to_bits();
        if d == 0 {
            return x;
        }
        if d > 0 && (0..1i64 << 32).contains(&a) {
            let q = self.full.divide((a as u64) << 32);
            return i64::try_from(q).map_or(ZERO, Fx::from_bits);
        }
        let low_mask = (1i64 << self.k) - 1;
        if d > 0 && a >= 0 && a & low_mask == 0 && (a >> self.k) < 1 << 32 {
            let q = self.reduced.divide(((a >> self.k) as u64) << 32);
            return i64::try_from(q).map_or(ZERO, Fx::from_bits);
        }
        div(x, self.d)
    }
}

/// A `u16` proportion (`0..=65535` meaning `0..=1`) as a fixed-point number.
#[inline]
pub(crate) fn u16_proportion(x: u16) -> Fx {
    // (x << 64) / (65535 << 32) = (x << 32) / 65535: a division by a constant.
    Fx::from_bits(((u64::from(x) << 32) / 65535) as i64)
}

/// A proportion exported as `floor(x * 65535)`, saturating to `0..=65535`.
#[inline]
pub(crate) fn proportion_to_u16(x: Fx) -> u16 {
    // `saturating_to_num` floors toward minus infinity and clamps to `0..=65535`.
    let bits = mul(x, U16_MAX).to_bits();
    if bits <= 0 {
        0
    } else {
        u16::try_from(bits >> 32).unwrap_or(u16::MAX)
    }
}

/// Normalise in place to sum 1; a vector that sums to 0 is left as it is.
pub(crate) fn normalize(x: &mut [Fx]) {
    let total = sum(x.iter().copied());
    if total == ZERO {
        return;
    }
    let d = Divisor::new(total);
    for v in x.iter_mut() {
        *v = d.divide(*v);
    }
}

/// `min(max(value, low), high)` in the reference's order: first `min(high)`, then `max(low)`.
#[inline]
pub(crate) fn clamp(value: Fx, low: Fx, high: Fx) -> Fx {
    value.min(high).max(low)
}

/// Store a submitted weight row: max-upscaled so its largest entry is 65535, exactly as the
/// reference's `vec_u16_max_upscale_to_u16` (if the max is above 32768, `round(e * (65535 /
/// max))`, else `round(e * 65535 / max)`, rounding half away from zero; an all-zero row stays
/// zero).
pub fn max_upscale_u16(values: &[u16]) -> Vec<u16> {
    let fx: Vec<Fx> = values.iter().map(|&v| Fx::from_num(v)).collect();
    let Some(&max) = fx.iter().max() else {
        return Vec::new();
    };
    if max == ZERO {
        return values.iter().map(|_| 0).collect();
    }
    let upscale = |x: Fx| x.round().saturating_to_num::<u16>();
    if max > Fx::from_num(32768) {
        let factor = div(U16_MAX, max);
        fx.iter().map(|&e| upscale(mul(e, factor))).collect()
    } else {
        fx.iter()
            .map(|&e| upscale(div(mul(e, U16_MAX), max)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_fx() -> impl Strategy<Value = Fx> {
        prop_oneof![
            any::<i64>().prop_map(Fx::from_bits),
            (-(1i64 << 34)..(1i64 << 34)).prop_map(Fx::from_bits),
            (0..=(1i64 << 32)).prop_map(Fx::from_bits),
            (0..(1i64 << 24)).prop_map(|k| Fx::from_bits(k << 32)),
        ]
    }

    proptest! {
        #[test]
        fn proportion_to_u16_matches_the_library(bits in any::<i64>()) {
            let x = Fx::from_bits(bits);
            prop_assert_eq!(proportion_to_u16(x), x.saturating_mul(U16_MAX).saturating_to_num::<u16>());
        }
    }

    #[test]
    fn u16_proportions_match_the_library() {
        for x in 0..=u16::MAX {
            assert_eq!(
                u16_proportion(x),
                Fx::from_num(x).checked_div(U16_MAX).unwrap()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn invariant_divisors_divide_exactly(d in 1u64..u64::MAX, n in any::<u64>()) {
            // Exercise the 64-bit core directly, divisors of every size.
            // Any divisor, powers of two, and three times a power of two.
            prop_assert_eq!(Reciprocal::new(d).divide(n), n / d);
            let p = 1u64 << (d % 64);
            prop_assert_eq!(Reciprocal::new(p).divide(n), n / p);
            let p3 = (1u64 << (d % 62)) * 3;
            prop_assert_eq!(Reciprocal::new(p3).divide(n), n / p3);
        }
    }

    #[test]
    fn max_upscale_matches_the_reference_examples() {
        assert_eq!(max_upscale_u16(&[0, 0]), vec![0, 0]);
        assert_eq!(max_upscale_u16(&[1, 2]), vec![32768, 65535]);
        assert_eq!(max_upscale_u16(&[65535, 100]), vec![65535, 100]);
        assert_eq!(
            max_upscale_u16(&[16383, 32767, 49149, 65535]),
            vec![16383, 32767, 49149, 65535]
        );
        assert_eq!(max_upscale_u16(&[]), Vec::<u16>::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn mul_and_div_match_substrate_fixed(x in any_fx(), y in any_fx()) {
            prop_assert_eq!(mul(x, y), x.saturating_mul(y));
            prop_assert_eq!(mul_or_zero(x, y), x.checked_mul(y).unwrap_or(ZERO));
            prop_assert_eq!(div(x, y), x.checked_div(y).unwrap_or(ZERO));
            prop_assert_eq!(Divisor::new(y).divide(x), x.checked_div(y).unwrap_or(ZERO));
            prop_assert_eq!(add(x, y), x.saturating_add(y));
            if y >= ONE {
                prop_assert_eq!(recip_of_at_least_one(y), ONE.saturating_div(y));
            }
        }
    }
}
