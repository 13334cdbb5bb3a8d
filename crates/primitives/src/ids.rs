//! Identifiers: account addresses (Ed25519 public keys), 32-byte hashes, subnet ids.

use std::fmt;
use std::str::FromStr;

use agora_codec::{Decode, Encode, Error, Reader};

macro_rules! bytes32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&to_hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), to_hex(&self.0))
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            /// 64 hexadecimal digits, optionally prefixed by `0x`.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let hex = s.strip_prefix("0x").unwrap_or(s);
                let bytes = from_hex(hex).ok_or_else(|| ParseIdError { what: $what, input: s.to_owned() })?;
                let array: [u8; 32] = bytes.try_into().map_err(|_| ParseIdError { what: $what, input: s.to_owned() })?;
                Ok($name(array))
            }
        }

        impl Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out);
            }
        }

        impl Decode for $name {
            const MIN_BYTES: usize = 32;
            fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
                Ok($name(r.array($what)?))
            }
        }
    };
}

bytes32!(
    /// An account: the 32-byte Ed25519 public key that signs for it. Coldkeys (holding funds)
    /// and hotkeys (operating neurons) are both addresses.
    Address,
    "address"
);
bytes32!(
    /// A BLAKE3 hash.
    Hash,
    "hash"
);

/// Why a hex identifier does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?} is not 64 hexadecimal digits (32 bytes)")]
pub struct ParseIdError {
    what: &'static str,
    input: String,
}

/// A subnet id (subnet 1 serves chat completion).
pub type NetUid = u16;
/// A neuron's slot on a subnet.
pub type Uid = u16;

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Bytes from hex (either case); `None` if the length is odd or a digit is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}
