//! Canonical binary encoding with bounded decoding: one encoding per value, every length capped.
//!
//! Stability: the byte format is consensus-visible; changing it is a hard fork.
//!
//! # Design
//! Everything another node or the disk sees is encoded with [`Encode`] and read back with
//! [`Decode`]. The format is deliberately plain:
//! - integers: fixed width, little endian (`u8`, `u16`, `u32`, `u64`, `u128`; `i16` in two's
//!   complement);
//! - `bool`: one byte, `0` or `1` (any other byte is an error);
//! - `Option<T>`: a tag byte `0` (none) or `1` followed by `T`;
//! - byte arrays `[u8; N]`: the `N` bytes;
//! - variable-length sequences (`Vec<T>`, byte strings, UTF-8 strings): a `u32` count, then the
//!   items. Every call site names the largest count it accepts ([`Reader::len`]), so a hostile
//!   length can never make the decoder allocate more than the bytes it was given allow;
//! - enums: a `u8` tag, then the variant's fields in declaration order.
//!
//! # Invariants
//! - `decode(encode(v)) == v` and `encode(decode(b)) == b` for every `b` that decodes: fixed
//!   widths, strict tags and strict booleans leave exactly one encoding per value.
//! - [`decode_exact`] rejects trailing bytes.
//! - Decoding never panics and never allocates more than `O(input length)`.
//!
//! # Example
//! ```
//! use agora_codec::{decode_exact, encode_to_vec};
//! let bytes = encode_to_vec(&(7u16, Some(true)));
//! assert_eq!(bytes, [7, 0, 1, 1]);
//! assert_eq!(decode_exact::<(u16, Option<bool>)>(&bytes).unwrap(), (7, Some(true)));
//! assert!(decode_exact::<(u16, Option<bool>)>(&[7, 0, 1, 2]).is_err()); // 2 is not a bool
//! ```
#![forbid(unsafe_code)]

/// Why bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside a value.
    #[error("input ends early: {needed} more bytes needed while reading {what}")]
    UnexpectedEnd {
        /// What was being read.
        what: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes remain after the value.
    #[error("{count} trailing bytes after the value; the encoding must end where the value ends")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A length prefix is above the cap for its field.
    #[error("{what}: length {len} exceeds the limit {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A tag or boolean byte has no meaning.
    #[error("{what}: invalid tag {tag}")]
    InvalidTag {
        /// The field.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// A string is not UTF-8.
    #[error("{what}: not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A decoded value breaks a rule of its type (for example a non-canonical ordering).
    #[error("{what}: {reason}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
}

/// A cursor over input bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::UnexpectedEnd {
                what,
                needed: n - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A `u32` length prefix, refused above `max`, and refused when the remaining input cannot
    /// hold `len` items of at least `min_item_bytes` each (so no allocation outruns the input).
    pub fn len(
        &mut self,
        max: usize,
        min_item_bytes: usize,
        what: &'static str,
    ) -> Result<usize, Error> {
        let len = u32::decode(self)? as usize;
        if len > max {
            return Err(Error::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
        }
        let need = len.saturating_mul(min_item_bytes);
        if need > self.remaining() {
            return Err(Error::UnexpectedEnd {
                what,
                needed: need - self.remaining(),
            });
        }
        Ok(len)
    }

    /// A byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, Error> {
        let len = self.len(max, 1, what)?;
        Ok(self.take(len, what)?.to_vec())
    }

    /// A UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, Error> {
        String::from_utf8(self.bytes(max, what)?).map_err(|_| Error::InvalidUtf8 { what })
    }

    /// A sequence of at most `max` items.
    pub fn vec<T: Decode>(&mut self, max: usize, what: &'static str) -> Result<Vec<T>, Error> {
        let len = self.len(max, T::MIN_BYTES.max(1), what)?;
        (0..len).map(|_| T::decode(self)).collect()
    }

    /// A one-byte enum tag.
    pub fn tag(&mut self) -> Result<u8, Error> {
        u8::decode(self)
    }
}

/// Writes the canonical encoding of a value.
pub trait Encode {
    /// Append the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// Reads a value back from its canonical encoding.
pub trait Decode: Sized {
    /// The fewest bytes any value of this type encodes to (bounds allocations).
    const MIN_BYTES: usize;
    /// Read one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error>;
}

/// The encoding of a value.
pub fn encode_to_vec<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

/// Decode a value that must take exactly all of `bytes`.
pub fn decode_exact<T: Decode>(bytes: &[u8]) -> Result<T, Error> {
    let mut r = Reader::new(bytes);
    let value = T::decode(&mut r)?;
    match r.remaining() {
        0 => Ok(value),
        count => Err(Error::TrailingBytes { count }),
    }
}

/// Write a `u32` length prefix (callers keep their lengths under their decode caps).
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    len.encode(out);
}

/// Write a sequence: its `u32` count, then each item.
pub fn encode_slice<T: Encode>(items: &[T], out: &mut Vec<u8>) {
    encode_len(items.len(), out);
    for item in items {
        item.encode(out);
    }
}

/// Write a byte string: its `u32` length, then the bytes.
pub fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_len(bytes.len(), out);
    out.extend_from_slice(bytes);
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Decode for $t {
            const MIN_BYTES: usize = std::mem::size_of::<$t>();
            fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
                Ok(<$t>::from_le_bytes(r.array(stringify!($t))?))
            }
        }
    )*};
}
int!(u8, u16, u32, u64, u128, i16);

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Decode for bool {
    const MIN_BYTES: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        match r.tag()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(Error::InvalidTag { what: "bool", tag }),
        }
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<const N: usize> Decode for [u8; N] {
    const MIN_BYTES: usize = N;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.array("byte array")
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    const MIN_BYTES: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        match r.tag()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            tag => Err(Error::InvalidTag {
                what: "option",
                tag,
            }),
        }
    }
}

macro_rules! tuple {
    ($($name:ident)+) => {
        impl<$($name: Encode),+> Encode for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(out);)+
            }
        }
        impl<$($name: Decode),+> Decode for ($($name,)+) {
            const MIN_BYTES: usize = 0 $(+ $name::MIN_BYTES)+;
            fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
                Ok(($($name::decode(r)?,)+))
            }
        }
    };
}
tuple!(A B);
tuple!(A B C);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_are_fixed_width_little_endian() {
        assert_eq!(encode_to_vec(&0x0102u16), [2, 1]);
        assert_eq!(encode_to_vec(&1u64), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_to_vec(&u128::MAX), [0xff; 16]);
    }

    #[test]
    fn strict_tags_and_trailing_bytes_are_refused() {
        assert_eq!(
            decode_exact::<bool>(&[2]),
            Err(Error::InvalidTag {
                what: "bool",
                tag: 2
            })
        );
        assert_eq!(
            decode_exact::<Option<u8>>(&[3, 0]),
            Err(Error::InvalidTag {
                what: "option",
                tag: 3
            })
        );
        assert_eq!(
            decode_exact::<u8>(&[1, 2]),
            Err(Error::TrailingBytes { count: 1 })
        );
        assert!(matches!(
            decode_exact::<u32>(&[1, 2]),
            Err(Error::UnexpectedEnd { .. })
        ));
    }

    #[test]
    fn a_hostile_length_is_refused_before_any_allocation() {
        let mut bytes = encode_to_vec(&u32::MAX);
        bytes.extend_from_slice(&[0; 8]);
        let mut r = Reader::new(&bytes);
        assert!(matches!(
            r.vec::<u64>(usize::MAX, "items"),
            Err(Error::UnexpectedEnd { .. })
        ));
        let mut r = Reader::new(&bytes);
        assert!(matches!(
            r.vec::<u64>(10, "items"),
            Err(Error::TooLong { max: 10, .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips_and_re_encodes_identically(a in any::<u64>(), b in any::<Option<u128>>(), c in any::<bool>()) {
            let v = (a, b, c);
            let bytes = encode_to_vec(&v);
            let back: (u64, Option<u128>, bool) = decode_exact(&bytes).unwrap();
            prop_assert_eq!(back, v);
            prop_assert_eq!(encode_to_vec(&back), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_decoded_values_re_encode_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = decode_exact::<(u16, Option<u64>, bool)>(&bytes) {
                prop_assert_eq!(encode_to_vec(&v), bytes);
            }
        }
    }
}
