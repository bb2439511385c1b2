//! The Merkle tree against published RFC 6962 test vectors, and against a direct transcription
//! of RFC 6962 §2.1's recursive definitions for every size up to 64.
//!
//! Vectors: transparency-dev/merkle, `testonly/constants.go` (leaf inputs, node hashes, roots
//! of the 8-leaf tree) and `proof/verify_test.go` (inclusion and consistency proofs), the
//! same data as google/certificate-transparency-go's merkle tests.

use csp_ledger_schemas::merkle::{
    leaf_hash, node_hash, prove_consistency, prove_inclusion, root, split, tree_root,
    verify_consistency, verify_inclusion, Frontier, Hash, LeafHashes, RangeError, VerifyError,
    EMPTY_ROOT,
};

fn h(hex: &str) -> Hash {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

fn inputs() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        (0x60..=0x6f).collect(),
    ]
}

fn leaves() -> Vec<Hash> {
    inputs().iter().map(|data| leaf_hash(data)).collect()
}

/// Roots of the trees of the first 1..=8 leaves (`RootHashes()[1..]`).
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `NodeHashes()`: every complete subtree of the 8-leaf tree, by level.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// `inclusionProofs` of verify_test.go: (1-based leaf, tree size, proof).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            3,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            2,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// `consistencyProofs` of verify_test.go: (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

#[test]
fn empty_tree_root_is_sha256_of_nothing() {
    assert_eq!(
        EMPTY_ROOT,
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(root(&[]), EMPTY_ROOT);
}

#[test]
fn roots_and_nodes_match_the_published_vectors() {
    let leaves = leaves();
    for (size, expected) in ROOTS.iter().enumerate() {
        let size = size + 1;
        assert_eq!(root(&leaves[..size]), h(expected), "root of size {size}");
        let mut frontier = Frontier::default();
        for leaf in &leaves[..size] {
            frontier.push(*leaf);
        }
        assert_eq!(frontier.root(), h(expected), "frontier root of size {size}");
    }
    let source = LeafHashes(&leaves);
    for (level, nodes) in NODES.iter().enumerate() {
        for (index, expected) in nodes.iter().enumerate() {
            use csp_ledger_schemas::merkle::NodeSource;
            assert_eq!(source.node(level as u8, index as u64).unwrap(), h(expected));
        }
    }
    // Every node the frontier reports completed is the published one.
    let mut frontier = Frontier::default();
    for leaf in &leaves {
        for (level, index, hash) in frontier.push(*leaf) {
            assert_eq!(hash, h(NODES[level as usize][index as usize]));
        }
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let leaves = leaves();
    let source = LeafHashes(&leaves);
    for (leaf, size, expected) in inclusion_vectors() {
        let index = leaf - 1;
        let proof = prove_inclusion(&source, index, size).unwrap();
        assert_eq!(proof, expected, "inclusion of leaf {index} in {size}");
        let root = h(ROOTS[size as usize - 1]);
        verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        // The corrupted probes of verify_test.go.
        let leaf_hash = leaves[index as usize];
        let mut probes: Vec<(u64, u64, Hash, Vec<Hash>, Hash)> = vec![
            (index.wrapping_sub(1), size, leaf_hash, proof.clone(), root),
            (index + 1, size, leaf_hash, proof.clone(), root),
            (index ^ 2, size, leaf_hash, proof.clone(), root),
            (index, size * 2, leaf_hash, proof.clone(), root),
            (index, size / 2, leaf_hash, proof.clone(), root),
            (index, size, [7; 32], proof.clone(), root),
            (index, size, leaf_hash, proof.clone(), EMPTY_ROOT),
            (
                index,
                size,
                leaf_hash,
                [proof.clone(), vec![root]].concat(),
                root,
            ),
            (
                index,
                size,
                leaf_hash,
                [vec![root], proof.clone()].concat(),
                root,
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            probes.push((index, size, leaf_hash, wrong, root));
        }
        if !proof.is_empty() {
            probes.push((
                index,
                size,
                leaf_hash,
                proof[..proof.len() - 1].to_vec(),
                root,
            ));
        }
        for (i, (index, size, leaf, proof, root)) in probes.iter().enumerate() {
            assert!(
                verify_inclusion(leaf, *index, *size, proof, root).is_err(),
                "probe {i} of leaf {leaf:?} verified"
            );
        }
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let leaves = leaves();
    let source = LeafHashes(&leaves);
    for (old, new, expected) in consistency_vectors() {
        let proof = prove_consistency(&source, old, new).unwrap();
        assert_eq!(proof, expected, "consistency {old} -> {new}");
        let (r1, r2) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        verify_consistency(old, new, &proof, &r1, &r2).unwrap();
        if proof.is_empty() {
            continue;
        }
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (old - 1, new, r1, r2, proof.clone()),
            (old + 1, new, r1, r2, proof.clone()),
            (old ^ 2, new, r1, r2, proof.clone()),
            (old, new * 2, r1, r2, proof.clone()),
            (old, new / 2, r1, r2, proof.clone()),
            (old, new, [7; 32], r2, proof.clone()),
            (old, new, r1, [7; 32], proof.clone()),
            (old, new, r2, r1, proof.clone()),
            (old, new, r1, r2, vec![]),
            (old, new, r1, r2, [proof.clone(), vec![r1]].concat()),
            (old, new, r1, r2, [proof.clone(), vec![r2]].concat()),
            (old, new, r1, r2, [vec![r1], proof.clone()].concat()),
            (old, new, r1, r2, [vec![r2], proof.clone()].concat()),
            (old, new, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (old, new, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 16;
            probes.push((old, new, r1, r2, wrong));
        }
        for (i, (old, new, r1, r2, proof)) in probes.iter().enumerate() {
            assert!(
                verify_consistency(*old, *new, proof, r1, r2).is_err(),
                "probe {i} ({old} -> {new}) verified"
            );
        }
    }
}

#[test]
fn bad_ranges_are_named() {
    let leaves = leaves();
    let source = LeafHashes(&leaves);
    assert_eq!(tree_root(&source, 0), Err(RangeError::EmptyTree));
    assert_eq!(
        tree_root(&source, 9),
        Err(RangeError::BeyondSize {
            size: 9,
            available: 8
        })
    );
    assert_eq!(
        prove_inclusion(&source, 5, 5),
        Err(RangeError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        prove_consistency(&source, 0, 5),
        Err(RangeError::InvalidConsistencyRange { old: 0, new: 5 })
    );
    assert_eq!(
        prove_consistency(&source, 6, 5),
        Err(RangeError::InvalidConsistencyRange { old: 6, new: 5 })
    );
    assert_eq!(
        verify_consistency(0, 1, &[], &EMPTY_ROOT, &EMPTY_ROOT),
        Err(VerifyError::Range(RangeError::InvalidConsistencyRange {
            old: 0,
            new: 1
        }))
    );
}

// RFC 6962 §2.1, transcribed on slices.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = split(n as u64) as usize;
    if m < k {
        [path(m, &d[..k]), vec![mth(&d[k..])]].concat()
    } else {
        [path(m - k, &d[k..]), vec![mth(&d[..k])]].concat()
    }
}

fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = split(n as u64) as usize;
    if m <= k {
        [subproof(m, &d[..k], b), vec![mth(&d[k..])]].concat()
    } else {
        [subproof(m - k, &d[k..], false), vec![mth(&d[..k])]].concat()
    }
}

#[test]
fn every_proof_up_to_64_leaves_equals_the_rfc_definitions_and_verifies() {
    let leaves: Vec<Hash> = (0u32..64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let source = LeafHashes(&leaves);
    for n in 1..=64usize {
        let d = &leaves[..n];
        let r = mth(d);
        assert_eq!(root(d), r);
        for m in 0..n {
            let proof = prove_inclusion(&source, m as u64, n as u64).unwrap();
            assert_eq!(proof, path(m, d), "PATH({m}, {n})");
            verify_inclusion(&d[m], m as u64, n as u64, &proof, &r).unwrap();
        }
        for m in 1..=n {
            let proof = prove_consistency(&source, m as u64, n as u64).unwrap();
            assert_eq!(proof, subproof(m, d, true), "PROOF({m}, {n})");
            verify_consistency(m as u64, n as u64, &proof, &mth(&d[..m]), &r).unwrap();
            for i in 0..proof.len() {
                let mut wrong = proof.clone();
                wrong[i][31] ^= 1;
                assert!(verify_consistency(m as u64, n as u64, &wrong, &mth(&d[..m]), &r).is_err());
            }
        }
    }
}
