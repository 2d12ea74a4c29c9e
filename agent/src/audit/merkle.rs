//! Merkle tree over the audit records exactly as RFC 9162 (Certificate
//! Transparency v2) section 2.1 defines it: leaf hash `SHA-256(0x00 || d)`,
//! node hash `SHA-256(0x01 || left || right)`, the split at the largest
//! power of two below the size, the empty tree's hash `SHA-256("")`;
//! inclusion proofs (2.1.3) and consistency proofs (2.1.4) with their
//! verification algorithms.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (n > 1).
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a growing tree: the roots of its perfect subtrees,
/// largest (leftmost) first. Appending is amortised O(1), the root O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from its stored parts; `None` if the node count
    /// does not match the size (one node per set bit).
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() as u32 == size.count_ones()).then_some(Self { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf (its leaf hash).
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a perfect subtree of the
        // same height as `node` so far: merge.
        for _ in 0..self.size.trailing_ones() {
            let left = self.nodes.pop().unwrap_or_default();
            node = node_hash(&left, &node);
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// MTH of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// A whole tree kept level by level (perfect subtrees only), for proofs.
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// From the leaf hashes, in order.
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let up = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Self { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// MTH(D[a:b]) for the subtrees the RFC's recursion visits (a aligned
    /// to the largest power of two not above b - a).
    fn subtree(&self, a: u64, b: u64) -> Hash {
        let n = b - a;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && a.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(a >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.subtree(a, a + k), &self.subtree(a + k, b))
    }

    /// MTH of the first `n` leaves (`n <= size`).
    pub fn root(&self, n: u64) -> Hash {
        self.subtree(0, n)
    }

    /// PATH(m, D[n]): the audit path of leaf `m` in the tree of the first
    /// `n` leaves (RFC 9162 2.1.3.1).
    pub fn inclusion_proof(&self, m: u64, n: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        self.path(m, 0, n, &mut out);
        out
    }

    fn path(&self, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) {
        let n = b - a;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, a, a + k, out);
            out.push(self.subtree(a + k, b));
        } else {
            self.path(m - k, a + k, b, out);
            out.push(self.subtree(a, a + k));
        }
    }

    /// PROOF(m, D[n]): the consistency proof from the tree of size `m` to
    /// the tree of size `n` (RFC 9162 2.1.4.1), `0 < m <= n <= size`.
    pub fn consistency_proof(&self, m: u64, n: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        if m > 0 && m < n {
            self.subproof(m, 0, n, true, &mut out);
        }
        out
    }

    fn subproof(&self, m: u64, a: u64, b: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = b - a;
        if m == n {
            if !whole {
                out.push(self.subtree(a, b));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, a, a + k, whole, out);
            out.push(self.subtree(a + k, b));
        } else {
            self.subproof(m - k, a + k, b, false, out);
            out.push(self.subtree(a, a + k));
        }
    }
}

/// RFC 9162 2.1.3.2: does `proof` show leaf `index` (hash `leaf`) in the
/// tree of `size` leaves with root `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
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
    snode == 0 && r == *root
}

/// RFC 9162 2.1.4.2: does `proof` show that the tree of `first` leaves with
/// root `first_root` is a prefix of the tree of `second` leaves with root
/// `second_root`?
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        // Every tree extends the empty one.
        return proof.is_empty() && *first_root == empty_root();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if snode == 0 {
            return false;
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
    fr == *first_root && sr == *second_root && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn frontier_matches_tree_and_proofs_verify() {
        let all = leaves(70);
        let tree = Tree::new(all.clone());
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for n in 1..=70u64 {
            f.push(all[n as usize - 1]);
            assert_eq!(f.root(), tree.root(n), "size {n}");
            for m in 0..n {
                let p = tree.inclusion_proof(m, n);
                assert!(verify_inclusion(m, n, &all[m as usize], &p, &tree.root(n)));
                let other = &all[(m as usize + 1) % 70];
                assert!(!verify_inclusion(m, n, other, &p, &tree.root(n)));
            }
            for m in 1..=n {
                let p = tree.consistency_proof(m, n);
                assert!(
                    verify_consistency(m, n, &tree.root(m), &tree.root(n), &p),
                    "{m}->{n}"
                );
                if m < n {
                    let wrong = leaf_hash(b"x");
                    assert!(!verify_consistency(m, n, &wrong, &tree.root(n), &p));
                }
            }
        }
    }
}
