//! The Merkle tree the log keeps (SPEC.md section 12): the stored nodes, written with each
//! append, give the same roots and proofs as the pure tree over all leaves; proofs verify and
//! a flipped byte fails; a store from before the tree is upgraded once at open.

use csp_ledger::store::log::{Commit, Log, LogOptions, ProofError, StoredEvent};
use csp_ledger_schemas::merkle::{
    self, leaf_hash, verify_consistency, verify_inclusion, Hash, LeafHashes, RangeError,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn options() -> LogOptions {
    LogOptions { fsync: false }
}

/// The (made-up) chain hash of the event at `position`; the log checks links, not contents.
fn event_hash(position: u64) -> [u8; 32] {
    Sha256::digest(position.to_be_bytes()).into()
}

/// Appends `count` events as one commit; canonical bytes of ~600 bytes so that a chunk holds
/// about a hundred events and blocks of 256 leaves span chunks.
fn append(log: &Log, count: u64) {
    let head = log.head();
    let events: Vec<StoredEvent> = (head.position + 1..=head.position + count)
        .map(|position| StoredEvent {
            position,
            hash: event_hash(position),
            canonical: format!(
                "{{\"position\":{position},\"pad\":\"{}\"}}",
                "x".repeat(560 + (position % 97) as usize)
            )
            .into_bytes(),
        })
        .collect();
    let refs: Vec<&StoredEvent> = events.iter().collect();
    log.append(Commit {
        prev_hash: head.hash,
        events: &refs,
        outcomes: &[],
        personal: &[],
        offsets: &[],
        cursors: &[],
        round_mark: false,
    })
    .unwrap();
}

fn leaves(count: u64) -> Vec<Hash> {
    (1..=count).map(|p| leaf_hash(&event_hash(p))).collect()
}

#[test]
fn stored_root_equals_the_pure_root_at_every_size_through_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let batches = [1u64, 1, 3, 250, 1, 256, 257, 511, 2, 1024, 7, 600, 100];
    let total: u64 = batches.iter().sum();
    let all = leaves(total);
    for count in batches {
        append(&log, count);
        let head = log.head().position;
        assert_eq!(
            log.tree_root(head).unwrap(),
            merkle::root(&all[..head as usize]),
            "head {head}"
        );
    }
    for size in 1..=total {
        assert_eq!(
            log.tree_root(size).unwrap(),
            merkle::root(&all[..size as usize]),
            "size {size}"
        );
    }
    // Reopened: the right edge comes from the stored nodes.
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.tree_root(total).unwrap(), merkle::root(&all));
    append(&log, 300);
    let all = leaves(total + 300);
    assert_eq!(log.tree_root(total + 300).unwrap(), merkle::root(&all));
    // About one stored node per 128 events.
    let nodes = log.tree_node_count() as u64;
    assert!(nodes > 0 && nodes <= (total + 300) / 128, "{nodes} nodes");
}

#[test]
fn bad_ranges_are_range_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    assert!(matches!(
        log.tree_root(1),
        Err(ProofError::Range(RangeError::BeyondSize {
            size: 1,
            available: 0
        }))
    ));
    append(&log, 10);
    assert!(matches!(
        log.tree_root(0),
        Err(ProofError::Range(RangeError::EmptyTree))
    ));
    assert!(matches!(
        log.tree_root(11),
        Err(ProofError::Range(RangeError::BeyondSize {
            size: 11,
            available: 10
        }))
    ));
    assert!(matches!(
        log.inclusion_proof(10, 10),
        Err(ProofError::Range(RangeError::IndexOutOfRange {
            index: 10,
            size: 10
        }))
    ));
    assert!(matches!(
        log.inclusion_proof(0, 11),
        Err(ProofError::Range(RangeError::BeyondSize { .. }))
    ));
    assert!(matches!(
        log.consistency_proof(0, 5),
        Err(ProofError::Range(RangeError::InvalidConsistencyRange {
            old: 0,
            new: 5
        }))
    ));
    assert!(matches!(
        log.consistency_proof(6, 5),
        Err(ProofError::Range(
            RangeError::InvalidConsistencyRange { .. }
        ))
    ));
    assert!(matches!(
        log.consistency_proof(5, 11),
        Err(ProofError::Range(RangeError::BeyondSize { .. }))
    ));
    assert_eq!(log.consistency_proof(7, 7).unwrap(), Vec::<Hash>::new());
}

/// Every proof of the stored tree of `n` events, for every size `size` in `sizes`: equals the
/// pure proof over all leaves, verifies against the pure root, fails with a flipped byte.
fn check_all_proofs(log: &Log, all: &[Hash], sizes: &[u64]) {
    let pure = LeafHashes(all);
    for &size in sizes {
        let root = merkle::root(&all[..size as usize]);
        for index in 0..size {
            let proof = log.inclusion_proof(index, size).unwrap();
            assert_eq!(
                proof,
                merkle::prove_inclusion(&pure, index, size).unwrap(),
                "inclusion {index} in {size}"
            );
            verify_inclusion(&all[index as usize], index, size, &proof, &root).unwrap();
            if let Some(first) = proof.first() {
                let mut wrong = proof.clone();
                wrong[0][(index % 32) as usize] ^= 1 + first[0] % 2;
                assert!(
                    verify_inclusion(&all[index as usize], index, size, &wrong, &root).is_err()
                );
            }
            let mut wrong_leaf = all[index as usize];
            wrong_leaf[0] ^= 0x80;
            assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &root).is_err());
        }
        for old in 1..=size {
            let proof = log.consistency_proof(old, size).unwrap();
            assert_eq!(
                proof,
                merkle::prove_consistency(&pure, old, size).unwrap(),
                "consistency {old} -> {size}"
            );
            let old_root = merkle::root(&all[..old as usize]);
            verify_consistency(old, size, &proof, &old_root, &root).unwrap();
            if !proof.is_empty() {
                let last = proof.len() - 1;
                let mut wrong = proof.clone();
                wrong[(old as usize) % proof.len()][last % 32] ^= 0x01;
                assert!(verify_consistency(old, size, &wrong, &old_root, &root).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn stored_proofs_equal_pure_proofs_and_verify(
        n in 1u64..=300,
        cuts in proptest::collection::vec(1u64..=120, 1..8),
        other in 1u64..=300,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        // Append n events in batches of the drawn sizes (the last cut takes the rest).
        let mut left = n;
        for cut in cuts.iter().cycle() {
            if left == 0 { break; }
            let count = (*cut).min(left);
            append(&log, count);
            left -= count;
        }
        let all = leaves(n);
        check_all_proofs(&log, &all, &[n, other.min(n)]);
    }
}

#[test]
fn proofs_across_stored_levels_at_a_larger_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    for count in [700u64, 1300, 1, 1000] {
        append(&log, count);
    }
    let all = leaves(3001);
    let pure = LeafHashes(&all);
    for (index, size) in [
        (0u64, 3001u64),
        (255, 256),
        (256, 257),
        (1023, 2048),
        (2047, 3000),
        (3000, 3001),
        (1500, 2049),
    ] {
        let proof = log.inclusion_proof(index, size).unwrap();
        assert_eq!(proof, merkle::prove_inclusion(&pure, index, size).unwrap());
        verify_inclusion(
            &all[index as usize],
            index,
            size,
            &proof,
            &merkle::root(&all[..size as usize]),
        )
        .unwrap();
    }
    for (old, new) in [
        (1u64, 3001u64),
        (256, 3001),
        (257, 2048),
        (1000, 1001),
        (2048, 3001),
        (3000, 3001),
    ] {
        let proof = log.consistency_proof(old, new).unwrap();
        assert_eq!(proof, merkle::prove_consistency(&pure, old, new).unwrap());
        verify_consistency(
            old,
            new,
            &proof,
            &merkle::root(&all[..old as usize]),
            &merkle::root(&all[..new as usize]),
        )
        .unwrap();
    }
}

#[test]
fn a_store_without_tree_nodes_is_upgraded_once_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let total = 5000u64;
    let stored = {
        let log = Log::open(dir.path(), options()).unwrap();
        for count in [1000u64, 2000, 2000] {
            append(&log, count);
        }
        let stored = log.tree_node_count();
        assert!(log.remove_tree_nodes_for_test().unwrap() == stored && stored > 0);
        stored
    };
    // A store as before the tree: the open builds the nodes.
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.tree_node_count(), stored);
    let all = leaves(total);
    assert_eq!(log.tree_root(total).unwrap(), merkle::root(&all));
    assert_eq!(log.tree_root(3333).unwrap(), merkle::root(&all[..3333]));
    append(&log, 44);
    let all = leaves(total + 44);
    assert_eq!(log.tree_root(total + 44).unwrap(), merkle::root(&all));
    let proof = log.inclusion_proof(4321, total + 44).unwrap();
    verify_inclusion(&all[4321], 4321, total + 44, &proof, &merkle::root(&all)).unwrap();
}
