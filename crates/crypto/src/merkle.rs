//! A Merkle tree over sorted key-value leaves, with inclusion and absence proofs.
//!
//! # Design
//! Leaves are the state's `(key, value)` pairs in strictly increasing key order. A leaf hashes
//! as `H(0x00 || len(key) || key || H(value))`, an inner node as `H(0x01 || left || right)`; a
//! level with an odd count promotes its last node unchanged. The root binds the leaf count:
//! `root = H(0x02 || count || top)` (the empty tree's top is all zeros), so a proof's leaf index
//! is trustworthy, and two leaves at adjacent indexes prove that no key lies between them
//! (absence).
//!
//! ```text
//!            top
//!          /     \
//!       n01       n2      <- n2 promoted (odd level)
//!      /   \      |
//!    l0    l1     l2
//! ```

use crate::{Hash, Hasher};

/// The hash of one leaf.
pub fn leaf_hash(key: &[u8], value: &[u8]) -> Hash {
    leaf_hash_of(key, &crate::hash(value))
}

/// The hash of one leaf from its key and the hash of its value.
pub fn leaf_hash_of(key: &[u8], value_hash: &Hash) -> Hash {
    let mut h = Hasher::new();
    h.update(&[0])
        .update(&(key.len() as u32).to_le_bytes())
        .update(key)
        .update(&value_hash.0);
    h.finalize()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Hasher::new();
    h.update(&[1]).update(&left.0).update(&right.0);
    h.finalize()
}

fn bind(count: u64, top: &Hash) -> Hash {
    let mut h = Hasher::new();
    h.update(&[2]).update(&count.to_le_bytes()).update(&top.0);
    h.finalize()
}

/// The next level up: pairs hashed, an odd last node promoted.
fn next_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|p| {
            if p.len() == 2 {
                node(&p[0], &p[1])
            } else {
                p[0]
            }
        })
        .collect()
}

/// The root over leaf hashes (in key order).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut level = leaves.to_vec();
    if level.is_empty() {
        return bind(0, &Hash::default());
    }
    while level.len() > 1 {
        level = next_level(&level);
    }
    bind(leaves.len() as u64, &level[0])
}

/// A path from one leaf to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The leaf's position in key order.
    pub index: u64,
    /// How many leaves the tree has.
    pub count: u64,
    /// Sibling hashes from the leaf level up (levels where the node was promoted have none).
    pub siblings: Vec<Hash>,
}

/// The proof for the leaf at `index`; `None` if out of range.
pub fn prove(leaves: &[Hash], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut siblings = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            siblings.push(level[sibling]);
        }
        level = next_level(&level);
        i /= 2;
    }
    Some(Proof {
        index: index as u64,
        count: leaves.len() as u64,
        siblings,
    })
}

/// Check that `leaf` is at `proof.index` of a tree of `proof.count` leaves with this `root`.
pub fn verify(root_hash: &Hash, leaf: &Hash, proof: &Proof) -> bool {
    if proof.index >= proof.count {
        return false;
    }
    let mut acc = *leaf;
    let (mut i, mut len) = (proof.index, proof.count);
    let mut siblings = proof.siblings.iter();
    while len > 1 {
        let sibling = i ^ 1;
        if sibling < len {
            let Some(s) = siblings.next() else {
                return false;
            };
            acc = if i % 2 == 0 {
                node(&acc, s)
            } else {
                node(s, &acc)
            };
        }
        i /= 2;
        len = len.div_ceil(2);
    }
    siblings.next().is_none() && bind(proof.count, &acc) == *root_hash
}

/// A neighbour leaf in an absence proof: its key, its value's hash and its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's key.
    pub key: Vec<u8>,
    /// BLAKE3 of its value.
    pub value_hash: Hash,
    /// Its path to the root.
    pub proof: Proof,
}

/// Proof that a key has a value, or has none, under a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProof {
    /// The key is present with this value.
    Present {
        /// The value.
        value: Vec<u8>,
        /// The leaf's path.
        proof: Proof,
    },
    /// The key is absent: the leaves just below and above it are adjacent (or the key is
    /// outside the range of keys, or the tree is empty).
    Absent {
        /// The greatest key below, if any.
        left: Option<Neighbour>,
        /// The least key above, if any.
        right: Option<Neighbour>,
        /// Leaves in the tree.
        count: u64,
    },
}

/// Why a key proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A path does not lead to the root.
    #[error("a Merkle path does not lead to the root")]
    BadPath,
    /// The neighbours do not bracket the key, or are not adjacent.
    #[error("the neighbour leaves do not show the key is absent")]
    NotAbsent,
}

/// Prove `key`'s value or absence among sorted `entries`.
pub fn prove_key(entries: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> KeyProof {
    let leaves: Vec<Hash> = entries.iter().map(|(k, v)| leaf_hash(k, v)).collect();
    let neighbour = |i: usize| Neighbour {
        key: entries[i].0.clone(),
        value_hash: crate::hash(&entries[i].1),
        proof: prove(&leaves, i).expect("index in range"),
    };
    match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
        Ok(i) => KeyProof::Present {
            value: entries[i].1.clone(),
            proof: prove(&leaves, i).expect("index in range"),
        },
        Err(i) => KeyProof::Absent {
            left: (i > 0).then(|| neighbour(i - 1)),
            right: (i < entries.len()).then(|| neighbour(i)),
            count: entries.len() as u64,
        },
    }
}

/// Check a key proof against a root: `Ok(Some(value))` if present, `Ok(None)` if absent.
pub fn verify_key<'p>(
    root_hash: &Hash,
    key: &[u8],
    proof: &'p KeyProof,
) -> Result<Option<&'p [u8]>, ProofError> {
    match proof {
        KeyProof::Present { value, proof } => {
            if verify(root_hash, &leaf_hash(key, value), proof) {
                Ok(Some(value))
            } else {
                Err(ProofError::BadPath)
            }
        }
        KeyProof::Absent { left, right, count } => {
            let check = |n: &Neighbour| {
                n.proof.count == *count
                    && verify(root_hash, &leaf_hash_of(&n.key, &n.value_hash), &n.proof)
            };
            match (left, right) {
                (None, None) if *count == 0 && *root_hash == root(&[]) => Ok(None),
                (Some(l), None)
                    if check(l) && l.key.as_slice() < key && l.proof.index + 1 == *count =>
                {
                    Ok(None)
                }
                (None, Some(r)) if check(r) && key < r.key.as_slice() && r.proof.index == 0 => {
                    Ok(None)
                }
                (Some(l), Some(r))
                    if check(l)
                        && check(r)
                        && l.key.as_slice() < key
                        && key < r.key.as_slice()
                        && l.proof.index + 1 == r.proof.index =>
                {
                    Ok(None)
                }
                _ => Err(ProofError::NotAbsent),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_small_tree_proves_and_nothing_else_does() {
        for n in 0..40usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8], b"v")).collect();
            let r = root(&leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                let p = prove(&leaves, i).unwrap();
                assert!(verify(&r, leaf, &p), "n={n} i={i}");
                let other = leaf_hash(&[200], b"x");
                assert!(!verify(&r, &other, &p), "a different leaf must not verify");
                let mut moved = p.clone();
                moved.index = (moved.index + 1) % n as u64;
                assert!(
                    n == 1 || !verify(&r, leaf, &moved),
                    "a wrong index must not verify"
                );
                let mut recounted = p.clone();
                recounted.count += 1;
                assert!(
                    !verify(&r, leaf, &recounted),
                    "a wrong count must not verify"
                );
            }
            assert!(prove(&leaves, n).is_none());
        }
    }

    #[test]
    fn present_and_absent_keys_prove_and_forgeries_fail() {
        for n in 0..12u8 {
            // Keys 10, 20, 30, ...
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                (1..=n).map(|i| (vec![i * 10], vec![i])).collect();
            let leaves: Vec<Hash> = entries.iter().map(|(k, v)| leaf_hash(k, v)).collect();
            let r = root(&leaves);
            for probe in 0..=130u8 {
                let proof = prove_key(&entries, &[probe]);
                let got = verify_key(&r, &[probe], &proof).expect("honest proof verifies");
                let want = entries
                    .iter()
                    .find(|(k, _)| k[0] == probe)
                    .map(|(_, v)| v.as_slice());
                assert_eq!(got, want, "n={n} key={probe}");
                // The same proof never vouches for another key's presence or absence wrongly.
                if let KeyProof::Present { .. } = proof {
                    assert!(verify_key(&r, &[probe + 1], &proof).is_err());
                }
            }
            // An absence claim for a present key is refused.
            if n >= 2 {
                let lie = KeyProof::Absent {
                    left: match prove_key(&entries, &[5]) {
                        KeyProof::Absent { right, .. } => right,
                        _ => None,
                    },
                    right: match prove_key(&entries, &[25]) {
                        KeyProof::Absent { right, .. } => right,
                        _ => None,
                    },
                    count: u64::from(n),
                };
                assert!(
                    verify_key(&r, &[20], &lie).is_err(),
                    "skipping a leaf must not prove absence"
                );
            }
        }
    }
}
