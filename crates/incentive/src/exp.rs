//! `exp` on `I32F32`, bit-identical to `substrate_fixed::transcendental::exp`, and faster.
//!
//! The reference evaluates the Taylor series `1 + x + x^2/2! + ... + x^31/31!` term by term in
//! `I32F32`: each term is `floor(term * x)` followed by an exact division by the integer `i`, and
//! a negative argument is handled as `1 / exp(-x)`. In raw bits (value * 2^32) a fixed-point
//! product is `(a * b) >> 32` and dividing by the fixed-point integer `i` is the integer quotient
//! `a / i`, so the same series can be summed on `i64`/`i128` without going through the generic
//! fixed-point machinery, and stops early once a term is 0 (every later term is then 0 as well).
//! The equality with the reference is checked by tests over millions of arguments.

use crate::fixed::{Fx, ONE, ZERO};

/// The reference's `exp_safe`: the argument is clamped to `[-20, 20]`; an internal overflow gives 0
/// for a non-positive argument and the largest value otherwise.
pub(crate) fn exp_safe(input: Fx) -> Fx {
    let lo = Fx::from_num(-20);
    let hi = Fx::from_num(20);
    let x = if input < lo {
        lo
    } else if hi < input {
        hi
    } else {
        input
    };
    match exp(x) {
        Some(v) => v,
        None if x <= ZERO => ZERO,
        None => Fx::max_value(),
    }
}

/// A direct-mapped memo of a pure function of one fixed-point argument (the liquid alpha, which
/// is a function of the `exp` argument alone within one epoch). Arguments repeat a lot (every
/// bond at or below its weight on a consensus-clipped entry has distance 0); remembering recent
/// results changes nothing but the time.
#[derive(Debug)]
pub(crate) struct Memo {
    slots: Vec<(i64, Fx)>,
}

const MEMO_BITS: u32 = 10;
/// No clamped argument has these bits (they are far outside `[-20, 20]`).
const EMPTY: i64 = i64::MIN;

impl Memo {
    pub(crate) fn new() -> Self {
        Self {
            slots: vec![(EMPTY, ZERO); 1 << MEMO_BITS],
        }
    }

    /// `f(x)`, from the memo when `x` was seen recently. `f` must be the same pure function on
    /// every call of one memo, and `x` must not have the bits `i64::MIN`.
    #[inline]
    pub(crate) fn get(&mut self, x: Fx, f: impl FnOnce(Fx) -> Fx) -> Fx {
        let bits = x.to_bits();
        let slot = (bits as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMO_BITS);
        let entry = &mut self.slots[slot as usize];
        if entry.0 != bits {
            *entry = (bits, f(x));
        }
        entry.1
    }
}

/// The series of `substrate_fixed::transcendental::exp::<I32F32, I32F32>`; `None` where the
/// reference returns an error (an intermediate value overflows).
pub(crate) fn exp(x: Fx) -> Option<Fx> {
    if x == ZERO {
        return Some(ONE);
    }
    if x == ONE {
        // The reference returns its stored constant `e` here; defer to it for this one argument.
        return substrate_fixed::transcendental::exp::<Fx, Fx>(x).ok();
    }
    let negative = x < ZERO;
    let op = if negative {
        x.to_bits().checked_neg()?
    } else {
        x.to_bits()
    };
    let result = series(op as u64)?;
    if negative {
        if result == 0 {
            return None;
        }
        let quotient = (1u128 << 64) / result as u128;
        return i64::try_from(quotient).ok().map(Fx::from_bits);
    }
    Some(Fx::from_bits(result))
}

/// One term of the series: `term * op` in fixed point, then divided by the integer `I`.
///
/// The reference multiplies in `i128` as `term * (op << 32)` and reports overflow when that
/// product leaves `i128`, i.e. when `term * op >= 2^95`; both operands are non-negative here.
/// The divisor is a constant so the division compiles to a multiplication.
#[inline(always)]
fn term<const I: u64>(term: u64, op: u64) -> Option<u64> {
    let product = u128::from(term) * u128::from(op);
    if product >> 95 != 0 {
        return None;
    }
    Some(((product >> 32) as u64) / I)
}

/// `1 + x + x^2/2! + ... + x^31/31!` on raw bits of a non-negative `x`, with the reference's
/// overflow rules (`None` where it errs). A zero term ends the sum early: all later terms are 0.
fn series(op: u64) -> Option<i64> {
    let mut result = (op as i64).checked_add(1 << 32)?;
    let mut t = op;
    macro_rules! steps {
        ($($i:literal)*) => {$(
            t = term::<$i>(t, op)?;
            if t == 0 {
                return Some(result);
            }
            result = result.checked_add(t as i64)?;
        )*};
    }
    steps!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: Fx) -> Option<Fx> {
        substrate_fixed::transcendental::exp::<Fx, Fx>(x).ok()
    }

    #[test]
    fn matches_reference_on_a_dense_sweep_of_the_clamped_range() {
        // Every 2^-12 step across [-20, 20], plus a small odd offset so low bits vary too.
        let lo = Fx::from_num(-20).to_bits();
        let hi = Fx::from_num(20).to_bits();
        let mut bits = lo;
        let mut checked = 0u32;
        while bits <= hi {
            for offset in [0i64, 1, 12_345, 1 << 19] {
                let x = Fx::from_bits(bits.saturating_add(offset));
                assert_eq!(exp(x), reference(x), "exp({x}) differs from the reference");
                checked += 1;
            }
            bits += 1 << 20;
        }
        assert!(checked > 600_000);
    }

    #[test]
    fn the_memo_returns_what_exp_safe_returns() {
        let mut memo = Memo::new();
        for k in -50_000i64..50_000 {
            // Revisit arguments so that hits, misses and evictions all happen.
            let x = Fx::from_bits((k % 7_919) * 1_234_567);
            assert_eq!(memo.get(x, exp_safe), exp_safe(x));
        }
    }

    #[test]
    fn matches_reference_on_special_and_extreme_arguments() {
        for x in [
            ZERO,
            ONE,
            -ONE,
            Fx::from_bits(1),
            Fx::from_bits(-1),
            Fx::from_num(20),
            Fx::from_num(-20),
            Fx::from_num(21),
            Fx::from_num(-21),
            Fx::from_num(0.5),
            Fx::from_num(-0.5),
        ] {
            assert_eq!(exp(x), reference(x), "exp({x})");
        }
        assert_eq!(exp_safe(Fx::from_num(1000)), exp_safe(Fx::from_num(20)));
        assert_eq!(exp_safe(Fx::from_num(-1000)), exp_safe(Fx::from_num(-20)));
    }
}
