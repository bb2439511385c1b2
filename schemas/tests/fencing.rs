//! The term rule of `csp.events` (schemas::fencing): a deposed leader's records are never
//! accepted once its successor's term-start is in the partition, a reader never takes part of a
//! round, and every reader of the same partition accepts the same log.

use std::borrow::Cow;

use csp_ledger_schemas::fencing::{EventsRecord, FencingError, TermReader, Verdict};
use csp_ledger_schemas::wire::PublishedEvent;
use uuid::Uuid;

/// An event at `position` after `prev`, its hash standing for its value (`variant` makes a
/// second value for the same position).
fn event(position: u64, prev: [u8; 32], variant: u8) -> PublishedEvent<'static> {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&position.to_be_bytes());
    hash[8] = variant;
    hash[9..].copy_from_slice(&prev[..23]);
    PublishedEvent {
        position,
        canonical: Cow::Owned(
            format!(r#"{{"position":{position},"stream":"partner-00000000-0000-4000-8000-000000000001"}}"#)
                .into_bytes(),
        ),
        hash,
        prev_hash: prev,
    }
}

fn ev(term: u64, e: &PublishedEvent<'static>) -> EventsRecord<'static> {
    EventsRecord::Event {
        term: Some(term),
        event: e.clone(),
    }
}

fn commit(term: u64, e: &PublishedEvent<'static>) -> EventsRecord<'static> {
    EventsRecord::Commit {
        term,
        last_position: e.position,
        last_hash: e.hash,
        last_outcome: e.position * 10,
        consumed: [("csp.commands/0".to_string(), e.position as i64)].into(),
    }
}

fn start(term: u64) -> EventsRecord<'static> {
    EventsRecord::TermStart {
        term,
        instance: Uuid::from_u128(term as u128),
    }
}

/// Applies records in order; returns the accepted events.
fn read(records: &[EventsRecord<'static>]) -> Result<Vec<PublishedEvent<'static>>, FencingError> {
    let mut reader = TermReader::new();
    let mut accepted = Vec::new();
    for record in records {
        if let Verdict::Accepted(events) = reader.push(record.clone())? {
            accepted.extend(events);
        }
    }
    Ok(accepted)
}

fn chain(first: u64, count: u64, prev: [u8; 32], variant: u8) -> Vec<PublishedEvent<'static>> {
    let mut out = Vec::new();
    let mut prev = prev;
    for position in first..first + count {
        let e = event(position, prev, variant);
        prev = e.hash;
        out.push(e);
    }
    out
}

#[test]
fn events_are_accepted_only_once_committed() {
    let a = chain(1, 3, [0; 32], 1);
    let mut reader = TermReader::new();
    assert!(matches!(
        reader.push(start(1)),
        Ok(Verdict::TermStarted {
            term: 1,
            head: 0,
            dropped: 0
        })
    ));
    for e in &a {
        assert_eq!(reader.push(ev(1, e)), Ok(Verdict::Held));
    }
    assert_eq!(
        reader.push(commit(1, &a[1])),
        Ok(Verdict::Accepted(a[..2].to_vec()))
    );
    assert_eq!(reader.head().0, 2);
    assert_eq!(reader.held(), 1);
    assert_eq!(
        reader.push(commit(1, &a[2])),
        Ok(Verdict::Accepted(a[2..].to_vec()))
    );
    // A retried commit or event changes nothing.
    assert_eq!(
        reader.push(commit(1, &a[2])),
        Ok(Verdict::Accepted(Vec::new()))
    );
    assert_eq!(reader.push(ev(1, &a[2])), Ok(Verdict::Ignored));
}

/// Issue 10's fork: the leader of term 1 is paused after publishing part of a round; term 2
/// starts; the old leader wakes up and publishes the rest of its round and its commit.
#[test]
fn a_paused_leader_that_wakes_up_behind_its_successors_term_start_is_ignored() {
    let committed = chain(1, 3, [0; 32], 1);
    let head = committed[2].hash;
    // The old round: a command of three events, of which two reach the broker before the pause.
    let old_round = chain(4, 3, head, 1);
    // The successor continues from the accepted head with other values for positions 4..
    let new_round = chain(4, 2, head, 2);
    let records = vec![
        start(1),
        ev(1, &committed[0]),
        ev(1, &committed[1]),
        ev(1, &committed[2]),
        commit(1, &committed[2]),
        ev(1, &old_round[0]),
        ev(1, &old_round[1]),
        start(2),
        // Woken up: the rest of its round, its commit.
        ev(1, &old_round[2]),
        commit(1, &old_round[2]),
        ev(2, &new_round[0]),
        ev(2, &new_round[1]),
        commit(2, &new_round[1]),
    ];
    let accepted = read(&records).unwrap();
    let positions: Vec<u64> = accepted.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        accepted[3], new_round[0],
        "position 4 has the successor's value only"
    );
    assert!(!accepted.contains(&old_round[0]) && !accepted.contains(&old_round[1]));
    // Part of a command is never accepted: the term-start dropped the two held events.
    let mut reader = TermReader::new();
    let mut started = None;
    for record in &records {
        if let Ok(Verdict::TermStarted {
            term: 2,
            head,
            dropped,
        }) = reader.push(record.clone())
        {
            started = Some((head, dropped));
        }
    }
    assert_eq!(started, Some((3, 2)));
}

/// A commit that the broker takes in before the term-start is final for every reader,
/// including the successor, which reads up to its own term-start before it leads.
#[test]
fn a_round_committed_before_the_term_start_stands() {
    let a = chain(1, 4, [0; 32], 1);
    let b = chain(5, 1, a[3].hash, 2);
    let records = vec![
        start(1),
        ev(1, &a[0]),
        commit(1, &a[0]),
        ev(1, &a[1]),
        ev(1, &a[2]),
        ev(1, &a[3]),
        commit(1, &a[3]),
        start(2),
        ev(2, &b[0]),
        commit(2, &b[0]),
    ];
    let accepted = read(&records).unwrap();
    assert_eq!(accepted.len(), 5);
    assert_eq!(accepted[4], b[0]);
}

#[test]
fn records_that_break_the_rule_are_refused() {
    let a = chain(1, 3, [0; 32], 1);
    // A term's records before its term-start.
    assert_eq!(
        read(&[start(1), ev(2, &a[0])]),
        Err(FencingError::TermNotStarted {
            term: 2,
            current: 1
        })
    );
    assert!(matches!(
        read(&[commit(1, &a[0])]),
        Err(FencingError::TermNotStarted { .. })
    ));
    // A commit whose chain has a gap, a broken chain, a commit beyond the events, a commit
    // naming another hash.
    assert_eq!(
        read(&[start(1), ev(1, &a[1]), commit(1, &a[1])]),
        Err(FencingError::CommitHash {
            term: 1,
            last_position: 2,
            missing: 1
        })
    );
    let forged = event(2, [9; 32], 1);
    assert!(matches!(
        read(&[start(1), ev(1, &a[0]), ev(1, &forged), commit(1, &forged)]),
        Err(FencingError::CommitHash { missing: 1, .. })
    ));
    assert!(matches!(
        read(&[start(1), ev(1, &a[0]), commit(1, &a[1])]),
        Err(FencingError::CommitBeyondEvents { .. })
    ));
    let other = event(1, [0; 32], 7);
    assert!(matches!(
        read(&[start(1), ev(1, &a[0]), commit(1, &other)]),
        Err(FencingError::CommitHash { .. })
    ));
}

#[test]
fn a_commit_selects_its_chain_among_two_leaders_values_for_a_position() {
    // Untagged events, as the publisher writes them: a deposed leader's event and its
    // successor's at the same positions, interleaved after the successor's term-start.
    let old = chain(1, 2, [0; 32], 1);
    let new = chain(1, 2, [0; 32], 2);
    let untagged = |e: &PublishedEvent<'static>| EventsRecord::Event {
        term: None,
        event: e.clone(),
    };
    let mut records = vec![start(1), start(2)];
    records.extend([untagged(&old[0]), untagged(&new[0]), untagged(&old[1])]);
    records.extend([untagged(&new[1]), commit(1, &old[1]), commit(2, &new[1])]);
    assert_eq!(read(&records).unwrap(), new);
    // The deposed leader's commit alone selects nothing.
    let mut reader = TermReader::new();
    for record in &records[..7] {
        assert!(!matches!(
            reader.push(record.clone()).unwrap(),
            Verdict::Accepted(ref events) if !events.is_empty()
        ));
    }
    assert_eq!(reader.head().0, 0);
    assert_eq!(reader.held(), 4);
}

#[test]
fn records_before_the_rule_are_taken_until_the_first_term_start() {
    let a = chain(1, 3, [0; 32], 1);
    let legacy = |e: &PublishedEvent<'static>| EventsRecord::Event {
        term: None,
        event: e.clone(),
    };
    let accepted = read(&[legacy(&a[0]), legacy(&a[1]), start(1), legacy(&a[2])]).unwrap();
    assert_eq!(accepted, a[..2].to_vec());
}

#[test]
fn records_round_trip_through_their_messages() {
    let e = event(7, [3; 32], 1);
    let untagged = EventsRecord::Event {
        term: None,
        event: e.clone(),
    };
    for record in [untagged, commit(4, &e), start(5)] {
        let message = record.encode();
        let headers: Vec<(String, String)> = message
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if !matches!(record, EventsRecord::Event { .. }) {
            assert_eq!(message.key, csp_ledger_schemas::fencing::CONTROL_KEY);
        }
        assert_eq!(
            EventsRecord::decode(&message.value, &headers).unwrap(),
            record
        );
    }
    // A control record whose term header disagrees with its value is refused.
    let message = start(5).encode();
    let headers = vec![
        ("csp-record".to_string(), "term-start".to_string()),
        ("csp-term".to_string(), "6".to_string()),
    ];
    assert!(EventsRecord::decode(&message.value, &headers).is_err());
}

/// A small deterministic generator (no dependency): xorshift.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random takeovers: each term's leader starts from the head it read (the accepted head at its
/// term-start, computed by the rule), publishes rounds, and may be deposed mid-round; a deposed
/// leader's later records land anywhere after its successor's term-start. Every reader accepts
/// one gap-free chain, every prefix of the partition gives a prefix of that chain, and no
/// accepted event comes from a term whose successor had started when it was written.
#[test]
fn random_takeovers_never_give_two_values_for_a_position_nor_part_of_a_round() {
    for seed in 1..300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut partition: Vec<EventsRecord<'static>> = Vec::new();
        // The deposed leaders' records still to come, by term.
        let mut zombies: Vec<Vec<EventsRecord<'static>>> = Vec::new();
        for term in 1..=1 + rng.below(6) {
            partition.push(start(term));
            let mut view = TermReader::new();
            for r in &partition {
                view.push(r.clone()).unwrap();
            }
            let (mut head, mut hash) = view.head();
            let mut own = Vec::new();
            for _ in 0..rng.below(5) {
                let round = chain(head + 1, 1 + rng.below(4), hash, term as u8);
                for e in &round {
                    // Odd seeds: untagged events, as the publisher writes them (the commits
                    // select the chain); even seeds: events tagged with their term.
                    own.push(if seed % 2 == 1 {
                        EventsRecord::Event {
                            term: None,
                            event: e.clone(),
                        }
                    } else {
                        ev(term, e)
                    });
                }
                let last = round.last().unwrap();
                own.push(commit(term, last));
                head = last.position;
                hash = last.hash;
            }
            // Deposed after `cut` of its records; the rest comes late, interleaved below.
            let cut = rng.below(own.len() as u64 + 1) as usize;
            let late = own.split_off(cut);
            partition.extend(own);
            for zombie in &mut zombies {
                let n = rng.below(zombie.len() as u64 + 1) as usize;
                partition.extend(zombie.drain(..n));
            }
            zombies.push(late);
        }
        for zombie in zombies {
            partition.extend(zombie);
        }
        let all = read(&partition).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "seed {seed}");
            let prev = if i == 0 { [0; 32] } else { all[i - 1].hash };
            assert_eq!(e.prev_hash, prev, "seed {seed}");
        }
        for cut in 0..=partition.len() {
            let prefix = read(&partition[..cut]).unwrap();
            assert_eq!(prefix[..], all[..prefix.len()], "seed {seed}, prefix {cut}");
        }
        // No accepted event was written after a newer term-start by its (older) term.
        let mut newest = 0;
        for record in &partition {
            match record {
                EventsRecord::TermStart { term, .. } => newest = newest.max(*term),
                EventsRecord::Event {
                    term: Some(term),
                    event,
                } if *term < newest => {
                    assert!(
                        !all.contains(event),
                        "seed {seed}: a fenced event of term {term} was accepted"
                    );
                }
                _ => {}
            }
        }
    }
}

#[test]
fn results_are_final_once_a_commit_of_their_term_covers_them() {
    let a = chain(1, 2, [0; 32], 1);
    let mut reader = TermReader::new();
    for record in [start(1), ev(1, &a[0]), commit(1, &a[0]), ev(1, &a[1])] {
        reader.push(record).unwrap();
    }
    // commit(1, a[0]) covers outcomes up to 10.
    assert!(reader.is_final_result(1, 10));
    assert!(
        !reader.is_final_result(1, 11),
        "its round was not committed"
    );
    reader.push(start(2)).unwrap();
    // Term 1's round with a[1] (outcomes 11..20) is void; its late commit is ignored.
    reader.push(commit(1, &a[1])).unwrap();
    assert!(reader.is_final_result(1, 10));
    assert!(!reader.is_final_result(1, 20));
    assert!(!reader.is_final_result(2, 1));
    assert!(!reader.is_final_result(3, 1));
}

#[test]
fn a_reader_resumed_with_its_finals_judges_results_as_before_the_restart() {
    let a = chain(1, 3, [0; 32], 1);
    let mut reader = TermReader::new();
    for record in [start(1), ev(1, &a[0]), commit(1, &a[0]), start(2)] {
        reader.push(record).unwrap();
    }
    for record in [ev(2, &a[1]), commit(2, &a[1])] {
        reader.push(record).unwrap();
    }
    let (head, hash) = reader.head();
    let resumed = TermReader::resume_with(reader.term(), head, hash, &reader.finals());
    for (term, seq) in [(1, 10), (1, 11), (2, 20), (2, 21), (3, 1)] {
        assert_eq!(
            resumed.is_final_result(term, seq),
            reader.is_final_result(term, seq),
            "term {term}, outcome {seq}"
        );
    }
    assert_eq!(resumed.final_outcome(1), 10);
    assert_eq!(resumed.final_outcome(2), 20);
    // The resumed reader goes on where the first one would.
    let mut resumed = resumed;
    resumed.push(ev(2, &a[2])).unwrap();
    assert_eq!(
        resumed.push(commit(2, &a[2])).unwrap(),
        Verdict::Accepted(vec![a[2].clone()])
    );
}

#[test]
fn a_commit_carries_the_consumed_offsets_through_its_message() {
    let a = chain(1, 1, [0; 32], 1);
    let record = commit(4, &a[0]);
    let message = record.encode();
    let headers: Vec<(String, String)> = message
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let decoded = EventsRecord::decode(&message.value, &headers).unwrap();
    assert_eq!(decoded, record);
    let EventsRecord::Commit { consumed, .. } = decoded else {
        panic!("not a commit")
    };
    assert_eq!(consumed.get("csp.commands/0"), Some(&1));
}
