//! The RFC 6962 Merkle tree over a log's leaves (SPEC.md section 12): leaf and node hashing,
//! roots, inclusion and consistency proofs (RFC 6962 §2.1.1, §2.1.2; the algorithms of
//! RFC 9162 §2.1.3, §2.1.4) and their verifiers (RFC 9162 §2.1.3.2, §2.1.4.2).
//!
//! Pure: no I/O of its own. Roots and proofs read *complete subtrees* through a
//! [`NodeSource`] (the node at level `k`, index `j` covers leaves `[j·2^k, (j+1)·2^k)`), so a
//! store that keeps those nodes answers any root or proof from O(log n) of them, and an
//! auditor's code can use [`LeafHashes`] over the leaves it holds.
//!
//! Invariant: every range this module hashes is one of RFC 6962's splits of `[0, n)`, and each
//! such range decomposes into aligned complete subtrees (the binary decomposition of its
//! length), so a source is only ever asked for complete subtrees inside the tree it claims.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 hash: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of no bytes (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Highest node level: a tree of `u64` leaves has no subtree above level 63.
pub const LEVEL_MAX: u8 = 63;

/// Leaf hash: SHA-256(0x00 ‖ data). The ledger's leaf data is the 32 raw bytes of an event's
/// chain hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// RFC 6962's split of `n > 1` leaves: the largest power of two smaller than `n`.
pub fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A size, index or range a tree of the given sizes does not have. Edge: HTTP 400
/// `invalid_range`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// Size 0: the empty tree has no proofs (and the ledger signs no empty checkpoint).
    #[error("tree size 0 has no proofs")]
    EmptyTree,
    /// A tree larger than the leaves the source holds.
    #[error("tree size {size} is beyond the {available} leaves held")]
    BeyondSize { size: u64, available: u64 },
    /// A leaf index outside `0..size`.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof from `old` to `new` needs `0 < old <= new`.
    #[error("no consistency proof from size {old} to size {new}")]
    InvalidConsistencyRange { old: u64, new: u64 },
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The index or sizes themselves admit no proof.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has the wrong number of hashes")]
    ProofLength,
    /// The recomputed root differs from the one given.
    #[error("the proof does not lead to the given root")]
    RootMismatch,
}

/// Where the complete subtrees of a tree come from.
pub trait NodeSource {
    /// Failures of the source; a [`RangeError`] is one of them.
    type Error: From<RangeError>;

    /// How many leaves the source holds: the largest tree it can answer for.
    fn leaf_count(&self) -> u64;

    /// The hash of the complete subtree at `level`, `index`: leaves
    /// `[index·2^level, (index+1)·2^level)`, all below [`NodeSource::leaf_count`].
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// A [`NodeSource`] over leaf hashes in memory (leaf `i` at index `i`); computes each node from
/// its leaves, so a level-`k` node costs 2^k − 1 hashes. The reference the stored tree is
/// tested against.
pub struct LeafHashes<'a>(pub &'a [Hash]);

impl NodeSource for LeafHashes<'_> {
    type Error = RangeError;

    fn leaf_count(&self) -> u64 {
        self.0.len() as u64
    }

    fn node(&self, level: u8, index: u64) -> Result<Hash, RangeError> {
        let width = 1u64 << level;
        let start = index
            .checked_mul(width)
            .filter(|start| start.saturating_add(width) <= self.leaf_count())
            .ok_or(RangeError::BeyondSize {
                size: index.saturating_add(1).saturating_mul(width),
                available: self.leaf_count(),
            })?;
        if level == 0 {
            return Ok(self.0[start as usize]);
        }
        let left = self.node(level - 1, 2 * index)?;
        let right = self.node(level - 1, 2 * index + 1)?;
        Ok(node_hash(&left, &right))
    }
}

/// The root of the tree of these leaf hashes (the empty root for none).
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return EMPTY_ROOT;
    }
    tree_root(&LeafHashes(leaves), leaves.len() as u64).unwrap_or(EMPTY_ROOT)
}

/// MTH of leaves `[start, start + len)`, `len > 0`, where the range is one of RFC 6962's
/// splits: its complete subtrees (the binary decomposition of `len`, largest first) are
/// aligned, so it is hashed from at most 64 source nodes, right to left.
fn range_hash<S: NodeSource>(source: &S, start: u64, len: u64) -> Result<Hash, S::Error> {
    let mut acc: Option<Hash> = None;
    let mut end = start + len;
    let mut remaining = len;
    while remaining > 0 {
        let level = remaining.trailing_zeros() as u8;
        let width = 1u64 << level;
        end -= width;
        let node = source.node(level, end >> level)?;
        acc = Some(match acc {
            None => node,
            Some(right) => node_hash(&node, &right),
        });
        remaining -= width;
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

fn check_size<S: NodeSource>(source: &S, size: u64) -> Result<(), RangeError> {
    if size == 0 {
        return Err(RangeError::EmptyTree);
    }
    if size > source.leaf_count() {
        return Err(RangeError::BeyondSize {
            size,
            available: source.leaf_count(),
        });
    }
    Ok(())
}

/// The root of the tree of the first `size` leaves (`0 < size <= leaf_count`).
pub fn tree_root<S: NodeSource>(source: &S, size: u64) -> Result<Hash, S::Error> {
    check_size(source, size)?;
    range_hash(source, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of size `size` (RFC 6962 §2.1.1, PATH),
/// from the leaf's sibling up to the root's child.
pub fn prove_inclusion<S: NodeSource>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    check_size(source, size)?;
    if index >= size {
        return Err(RangeError::IndexOutOfRange { index, size }.into());
    }
    // Walk down from the root, collecting siblings top-down; reversed at the end.
    let mut path = Vec::new();
    let (mut start, mut len, mut m) = (0u64, size, index);
    while len > 1 {
        let k = split(len);
        if m < k {
            path.push(range_hash(source, start + k, len - k)?);
            len = k;
        } else {
            path.push(range_hash(source, start, k)?);
            start += k;
            len -= k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof from the tree of size `old` to the tree of size `new`
/// (RFC 6962 §2.1.2, PROOF = SUBPROOF(m, D[n], true)); empty when `old == new`.
pub fn prove_consistency<S: NodeSource>(
    source: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    if old == 0 || old > new {
        return Err(RangeError::InvalidConsistencyRange { old, new }.into());
    }
    check_size(source, new)?;
    let mut proof = Vec::new();
    let (mut start, mut len, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == len {
            if !whole {
                proof.push(range_hash(source, start, len)?);
            }
            break;
        }
        let k = split(len);
        if m <= k {
            proof.push(range_hash(source, start + k, len - k)?);
            len = k;
        } else {
            proof.push(range_hash(source, start, k)?);
            start += k;
            len -= k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of size `size` whose root
/// is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(RangeError::IndexOutOfRange { index, size }.into());
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(VerifyError::ProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::ProofLength);
    }
    if r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of size `old` with root `old_root` is a prefix of the tree of size
/// `new` with root `new_root` (RFC 9162 §2.1.4.2). `old == new` needs an empty proof and
/// equal roots; `old` 0 or `old > new` is a range error.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), VerifyError> {
    if old == 0 || old > new {
        return Err(RangeError::InvalidConsistencyRange { old, new }.into());
    }
    if old == new {
        if !proof.is_empty() {
            return Err(VerifyError::ProofLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(VerifyError::ProofLength);
    }
    // Step 2: when `old` is a power of two its root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(VerifyError::ProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::ProofLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of the complete subtrees of its size's binary
/// decomposition, largest (leftmost) first. Appending a leaf completes the subtrees that it
/// closes, which [`Frontier::push`] returns so that a store can keep them.
///
/// Invariant: `nodes[i].0` strictly decrease and `Σ 2^level = size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The frontier of the first `size` leaves of `source`: one node per set bit of `size`.
    pub fn load<S: NodeSource>(source: &S, size: u64) -> Result<Frontier, S::Error> {
        if size > source.leaf_count() {
            return Err(RangeError::BeyondSize {
                size,
                available: source.leaf_count(),
            }
            .into());
        }
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..=LEVEL_MAX).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push((level, source.node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns every subtree it completes, as (level, index, hash), the
    /// leaf itself (level 0) first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let mut completed = vec![(0u8, index, leaf)];
        let mut hash = leaf;
        let mut level = 0u8;
        while let Some(&(top, left)) = self.nodes.last() {
            if top != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            completed.push((level, index >> level, hash));
        }
        self.nodes.push((level, hash));
        self.size += 1;
        completed
    }

    /// The root of the tree so far (the empty root for none).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, first)) = nodes.next() else {
            return EMPTY_ROOT;
        };
        nodes.fold(first, |right, (_, left)| node_hash(left, &right))
    }
}
