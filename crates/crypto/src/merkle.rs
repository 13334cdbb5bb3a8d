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
    let value_hash = crate::hash(value);
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

/// The root over leaf hashes (in key order).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut level = leaves.to_vec();
    if level.is_empty() {
        return bind(0, &Hash::default());
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
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
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
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
}
