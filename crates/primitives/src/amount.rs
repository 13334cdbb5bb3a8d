//! Amounts of AGORA in base units (`u128`, 9 decimals), with checked arithmetic only.

use std::fmt;
use std::str::FromStr;

use agora_codec::{Decode, Encode, Error, Reader};

/// Base units in one AGORA.
pub const BASE_UNITS_PER_AGORA: u128 = 1_000_000_000;
/// Decimal places of the display form.
pub const DECIMALS: u32 = 9;

/// An amount in base units (`10^-9` AGORA). Arithmetic is checked: it returns `None` instead of
/// wrapping, so an overflow is always a typed error at the call site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u128);

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);

    /// `whole` AGORA.
    pub const fn agora(whole: u64) -> Amount {
        Amount(whole as u128 * BASE_UNITS_PER_AGORA)
    }

    /// `self + rhs`, or `None` on overflow.
    pub fn checked_add(self, rhs: Amount) -> Option<Amount> {
        self.0.checked_add(rhs.0).map(Amount)
    }

    /// `self - rhs`, or `None` if it would go below zero.
    pub fn checked_sub(self, rhs: Amount) -> Option<Amount> {
        self.0.checked_sub(rhs.0).map(Amount)
    }

    /// `self * num / den` rounded down, computed without intermediate overflow where the result
    /// fits; `None` if `den` is 0 or the result does not fit.
    pub fn mul_div(self, num: u128, den: u128) -> Option<Amount> {
        if den == 0 {
            return None;
        }
        // Split to avoid overflow: a*n/d = (a/d)*n + (a%d)*n/d.
        let (q, r) = (self.0 / den, self.0 % den);
        let high = q.checked_mul(num)?;
        let low = r.checked_mul(num)? / den;
        high.checked_add(low).map(Amount)
    }

    /// True when zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Why a decimal amount string does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAmountError {
    /// Not of the form `123` or `123.456`.
    #[error("amount {0:?} is not a decimal number such as 12 or 0.5")]
    Malformed(String),
    /// More than 9 decimals.
    #[error("amount {0:?} has more than 9 decimals; the smallest unit is 0.000000001")]
    TooPrecise(String),
    /// Larger than `u128` base units.
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl FromStr for Amount {
    type Err = ParseAmountError;

    /// Parse `12`, `0.5` or `1.000000001` (AGORA, up to 9 decimals).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ParseAmountError::Malformed(s.to_owned());
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(malformed());
        }
        if frac.len() > DECIMALS as usize {
            return Err(ParseAmountError::TooPrecise(s.to_owned()));
        }
        let overflow = || ParseAmountError::Overflow(s.to_owned());
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut frac_units: u128 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_units += u128::from(b - b'0') * 10u128.pow(DECIMALS - 1 - i as u32);
        }
        whole
            .checked_mul(BASE_UNITS_PER_AGORA)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(overflow)
    }
}

impl fmt::Display for Amount {
    /// `1.5` for 1_500_000_000 base units; trailing zeros of the fraction are dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / BASE_UNITS_PER_AGORA;
        let frac = self.0 % BASE_UNITS_PER_AGORA;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:09}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Encode for Amount {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
}

impl Decode for Amount {
    const MIN_BYTES: usize = 16;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        u128::decode(r).map(Amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays_decimal_agora() {
        assert_eq!("1.5".parse::<Amount>().unwrap(), Amount(1_500_000_000));
        assert_eq!("0.000000001".parse::<Amount>().unwrap(), Amount(1));
        assert_eq!(Amount(1_500_000_000).to_string(), "1.5");
        assert_eq!(Amount::agora(3).to_string(), "3");
        for bad in ["", ".5", "1.", "1,5", "-1", "1e9", "0x10", " 1"] {
            assert!(
                matches!(bad.parse::<Amount>(), Err(ParseAmountError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "1.0000000001".parse::<Amount>(),
            Err(ParseAmountError::TooPrecise(_))
        ));
        assert!(matches!(
            "999999999999999999999999999999999".parse::<Amount>(),
            Err(ParseAmountError::Overflow(_))
        ));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(u128::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(0).checked_sub(Amount(1)), None);
        assert_eq!(
            Amount(u128::MAX).mul_div(3, 4),
            Some(Amount(u128::MAX / 4 * 3 + (u128::MAX % 4) * 3 / 4))
        );
        assert_eq!(Amount(10).mul_div(1, 0), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(x in any::<u128>()) {
            let a = Amount(x);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }

        #[test]
        fn mul_div_matches_wide_arithmetic(a in any::<u64>(), n in 0u128..1_000_000, d in 1u128..1_000_000) {
            prop_assert_eq!(Amount(u128::from(a)).mul_div(n, d), Some(Amount(u128::from(a) * n / d)));
        }
    }
}
