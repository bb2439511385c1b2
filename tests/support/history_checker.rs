//! An independent checker of a ledger group's history after a fault run: the topics are read
//! from their beginning and judged with the contract crate only (`csp_ledger_schemas`: the
//! term rule of `fencing`, the wire formats of `wire`), and the instances' data directories
//! with the log reader only. Nothing of the ledger's own publish, follow or rebuild paths is
//! used, so a bug there cannot hide itself.
//!
//! What it checks (each a violation kind, reported with examples):
//!
//! - `csp.events`, in offset order through a [`TermReader`]: no [`FencingError`], no record
//!   that does not decode, and an accepted log that is a gap-free hash chain from position 1
//!   (hash recomputed from the canonical bytes).
//! - `csp.command-results`: a result is final iff its fence (`term`, `outcome_seq` in the
//!   value, `wire::ResultFence`) names an outcome a commit of that term covers (after the whole events topic is read). Every
//!   produced command has a final result; at most one distinct final outcome per command
//!   (exact repeats allowed); a final accepted result's events are exactly that command's
//!   events in the accepted log; the log holds no events of a command whose final result is
//!   not accepted; a command's events are contiguous; no final result has a zero body hash.
//! - Instances: each log's (position, hash) sequence is a prefix of the accepted log, and so
//!   of every other instance's.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use csp_ledger_schemas::fencing::{EventsRecord, FencingError, TermReader, Verdict};
use csp_ledger_schemas::wire::{PublishedEvent, ResultMessage};
use csp_ledger_schemas::OutcomeKind;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::kafka_cluster::{read_all, Record, Tail};

pub const COMMANDS_TOPIC: &str = "csp.commands";
pub const EVENTS_TOPIC: &str = "csp.events";
pub const RESULTS_TOPIC: &str = "csp.command-results";

/// The violation kinds, in report order.
pub const FENCING_ERROR: &str = "fencing_error";
pub const UNDECODABLE_RECORD: &str = "undecodable_record";
pub const CHAIN_BREAK: &str = "chain_break";
pub const LOST: &str = "lost_command";
pub const MULTIPLE_FINAL_OUTCOMES: &str = "multiple_final_outcomes";
pub const HALF_APPLIED: &str = "half_applied";
pub const EVENTS_WITHOUT_ACCEPTED_RESULT: &str = "events_without_accepted_result";
pub const NON_CONTIGUOUS_EVENTS: &str = "non_contiguous_events";
pub const ACCEPTED_EVENTS_NOT_IN_LOG: &str = "accepted_result_events_not_in_log";
pub const ZERO_BODY_HASH: &str = "zero_body_hash";
pub const EVENTS_OF_UNPRODUCED_COMMAND: &str = "events_of_unproduced_command";
pub const INSTANCE_NOT_PREFIX: &str = "instance_log_not_prefix_of_accepted_log";
pub const INSTANCES_DIVERGE: &str = "instance_logs_diverge";
pub const INSTANCE_LOG_UNREADABLE: &str = "instance_log_unreadable";
pub const COMMITTED_OFFSET_BACKWARDS: &str = "committed_offset_backwards";

pub const KINDS: &[&str] = &[
    FENCING_ERROR,
    UNDECODABLE_RECORD,
    CHAIN_BREAK,
    LOST,
    MULTIPLE_FINAL_OUTCOMES,
    HALF_APPLIED,
    EVENTS_WITHOUT_ACCEPTED_RESULT,
    NON_CONTIGUOUS_EVENTS,
    ACCEPTED_EVENTS_NOT_IN_LOG,
    ZERO_BODY_HASH,
    EVENTS_OF_UNPRODUCED_COMMAND,
    INSTANCE_NOT_PREFIX,
    INSTANCES_DIVERGE,
    INSTANCE_LOG_UNREADABLE,
    COMMITTED_OFFSET_BACKWARDS,
];

/// Violations by kind, each with a one-line description.
pub type Violations = BTreeMap<&'static str, Vec<String>>;

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Violations,
    /// Counts that explain the run (not asserted).
    pub diagnostics: BTreeMap<String, u64>,
    /// The result checks again, counting results without fencing headers as final: what
    /// the checker would say if untagged results were trusted (only when there are any).
    pub legacy_view: Option<Violations>,
    /// Head of the accepted log.
    pub accepted_head: u64,
}

impl Report {
    pub fn count(&self, kind: &str) -> usize {
        self.violations.get(kind).map_or(0, Vec::len)
    }

    pub fn total(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    /// A violation found outside the topics and logs (e.g. by a watcher during the run).
    pub fn add_violation(&mut self, kind: &'static str, detail: String) {
        self.add(kind, detail);
    }

    fn add(&mut self, kind: &'static str, detail: String) {
        self.violations.entry(kind).or_default().push(detail);
    }

    fn note(&mut self, name: &str, by: u64) {
        *self.diagnostics.entry(name.to_string()).or_default() += by;
    }

    /// Prints every kind with its count and up to five examples, then the diagnostics.
    pub fn print(&self, title: &str) {
        eprintln!("== {title}: {} violation(s)", self.total());
        print_violations(&self.violations, 5);
        eprintln!("-- diagnostics");
        for (name, value) in &self.diagnostics {
            eprintln!("   {name}: {value}");
        }
        if let Some(legacy) = &self.legacy_view {
            eprintln!("-- legacy view (results without a fence counted as final; not asserted)");
            print_violations(legacy, 3);
        }
    }

    /// Panics with the counts by kind unless there are none.
    pub fn assert_clean(&self) {
        let counts: Vec<String> = KINDS
            .iter()
            .filter(|k| self.count(k) > 0)
            .map(|k| format!("{k}: {}", self.count(k)))
            .collect();
        assert!(
            counts.is_empty(),
            "the history has violations: {}",
            counts.join(", ")
        );
    }
}

fn print_violations(violations: &Violations, examples: usize) {
    for kind in KINDS {
        let found = violations.get(kind).map_or(&[][..], Vec::as_slice);
        eprintln!("   {kind}: {}", found.len());
        for detail in found.iter().take(examples) {
            eprintln!("      {detail}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// The fencing tag of a result: its term and outcome sequence (`None`: written before the
/// rule, so never final here).
fn result_tag(message: &ResultMessage<'_>) -> Option<(u64, u64)> {
    message.fence.map(|fence| (fence.term, fence.outcome_seq))
}

fn command_id_of(canonical: &[u8]) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Cid {
        command_id: Uuid,
    }
    serde_json::from_slice::<Cid>(canonical)
        .ok()
        .map(|c| c.command_id)
}

/// SHA-256 over the previous hash (64 lower-case hex digits) and the canonical bytes, as
/// SPEC.md's chain is defined (`store::audit::chain_hash`, not called here).
pub fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hex::encode(prev_hash).as_bytes());
    hasher.update(canonical);
    hasher.finalize().into()
}

fn short(hash: &[u8]) -> String {
    hex::encode(&hash[..hash.len().min(6)])
}

/// A result as the checks need it.
#[derive(Debug, Clone)]
struct Result_ {
    offset: i64,
    command_id: Uuid,
    tag: Option<(u64, u64)>,
    is_final: bool,
    /// The outcome's identity: kind, events, rejection (exact repeats compare equal).
    shape: Shape,
    zero_body_hash: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Shape {
    kind: &'static str,
    events: Vec<(u64, [u8; 32])>,
    rejection: Option<String>,
}

impl Shape {
    fn brief(&self) -> String {
        let positions = match (self.events.first(), self.events.last()) {
            (Some(first), Some(last)) => format!(" events {}..={}", first.0, last.0),
            _ => String::new(),
        };
        let rejection = self
            .rejection
            .as_deref()
            .map(|r| format!(" {}", r.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        format!("{}{positions}{rejection}", self.kind)
    }
}

fn kind_str(kind: OutcomeKind) -> &'static str {
    kind.as_str()
}

// ---------------------------------------------------------------------------------------------
// The check

/// The accepted log and what the events topic said, from its beginning.
struct EventsPass {
    reader: TermReader,
    log: Vec<PublishedEvent<'static>>,
}

fn events_pass(records: &[Record], report: &mut Report) -> EventsPass {
    let mut reader = TermReader::new();
    let mut log: Vec<PublishedEvent<'static>> = Vec::new();
    // Raw topic: the hashes seen at each position, per term and overall.
    let mut same_term: HashMap<(Option<u64>, u64), BTreeSet<[u8; 32]>> = HashMap::new();
    let mut any_term: HashMap<u64, BTreeSet<[u8; 32]>> = HashMap::new();
    let mut terms = BTreeSet::new();
    for record in records {
        let decoded = match EventsRecord::decode(&record.value, &record.headers) {
            Ok(decoded) => decoded,
            Err(error) => {
                report.add(
                    UNDECODABLE_RECORD,
                    format!("{EVENTS_TOPIC} offset {}: {error}", record.offset),
                );
                continue;
            }
        };
        match &decoded {
            EventsRecord::Event { term, event } => {
                report.note("events.records.event", 1);
                if term.is_none() {
                    report.note("events.records.event_without_term", 1);
                }
                same_term
                    .entry((*term, event.position))
                    .or_default()
                    .insert(event.hash);
                any_term
                    .entry(event.position)
                    .or_default()
                    .insert(event.hash);
                terms.insert(term.unwrap_or(0));
            }
            EventsRecord::Commit { .. } => report.note("events.records.commit", 1),
            EventsRecord::TermStart { term, .. } => {
                report.note("events.records.term_start", 1);
                terms.insert(*term);
            }
        }
        let event_at = match &decoded {
            EventsRecord::Event { event, .. } => Some((event.position, event.hash)),
            _ => None,
        };
        match reader.push(decoded) {
            Ok(Verdict::Accepted(events)) => log.extend(events),
            Ok(Verdict::Held) => report.note("events.verdict.held", 1),
            Ok(Verdict::Ignored) => report.note("events.verdict.ignored", 1),
            Ok(Verdict::TermStarted { dropped, .. }) => {
                report.note("events.verdict.term_started", 1);
                report.note("events.verdict.dropped_at_term_start", dropped as u64);
            }
            Err(error) => {
                // An event the accepted log already holds, byte for byte (a republish).
                let repeat = event_at.is_some_and(|(position, hash)| {
                    position >= 1
                        && log
                            .get(position as usize - 1)
                            .is_some_and(|accepted| accepted.hash == hash)
                });
                let what = match &error {
                    FencingError::TermNotStarted { .. } => "term not started",
                    FencingError::Gap { .. } if repeat => {
                        "gap (an exact repeat of an accepted event)"
                    }
                    FencingError::Gap { .. } => "gap",
                    FencingError::Chain { .. } => "chain",
                    FencingError::CommitBeyondEvents { .. } => "commit beyond events",
                    FencingError::CommitHash { .. } => "commit hash",
                };
                report.note(&format!("events.fencing_error.{what}"), 1);
                report.add(
                    FENCING_ERROR,
                    format!("{EVENTS_TOPIC} offset {}: {what}: {error}", record.offset),
                );
            }
        }
    }
    report.note("events.records", records.len() as u64);
    report.note("events.terms_seen", terms.len() as u64);
    report.note("events.held_uncommitted_at_end", reader.held() as u64);
    report.note(
        "events.raw.positions_with_two_hashes_in_one_term (diagnostic)",
        same_term.values().filter(|h| h.len() > 1).count() as u64,
    );
    report.note(
        "events.raw.positions_with_two_hashes_across_terms",
        any_term.values().filter(|h| h.len() > 1).count() as u64,
    );
    report.note("events.accepted", log.len() as u64);
    EventsPass { reader, log }
}

/// The accepted log is a gap-free chain from position 1, each hash recomputed.
fn check_chain(log: &[PublishedEvent<'static>], report: &mut Report) {
    let mut prev_hash = [0u8; 32];
    for (index, event) in log.iter().enumerate() {
        let expected = index as u64 + 1;
        if event.position != expected {
            report.add(
                CHAIN_BREAK,
                format!(
                    "accepted event {index} has position {} (expected {expected})",
                    event.position
                ),
            );
        }
        if event.prev_hash != prev_hash {
            report.add(
                CHAIN_BREAK,
                format!(
                    "position {}: prev_hash does not name the event before",
                    event.position
                ),
            );
        }
        if chain_hash(&event.prev_hash, &event.canonical) != event.hash {
            report.add(
                CHAIN_BREAK,
                format!(
                    "position {}: hash does not match its bytes and prev_hash",
                    event.position
                ),
            );
        }
        prev_hash = event.hash;
    }
}

/// Each command's events in the accepted log: (first index, events), after checking that
/// they are one run.
fn events_by_command(
    log: &[PublishedEvent<'static>],
    report: &mut Report,
) -> HashMap<Uuid, Vec<(u64, [u8; 32])>> {
    let mut by_command: HashMap<Uuid, Vec<(u64, [u8; 32])>> = HashMap::new();
    let mut previous: Option<Uuid> = None;
    let mut finished: HashSet<Uuid> = HashSet::new();
    for event in log {
        let Some(id) = command_id_of(&event.canonical) else {
            report.add(
                UNDECODABLE_RECORD,
                format!("accepted event {} has no command_id", event.position),
            );
            previous = None;
            continue;
        };
        if previous != Some(id) {
            if let Some(before) = previous {
                finished.insert(before);
            }
            if finished.contains(&id) {
                report.add(
                    NON_CONTIGUOUS_EVENTS,
                    format!("command {id}: events again at position {}", event.position),
                );
            }
            previous = Some(id);
        }
        by_command
            .entry(id)
            .or_default()
            .push((event.position, event.hash));
    }
    by_command
}

fn decode_results(records: &[Record], reader: &TermReader, report: &mut Report) -> Vec<Result_> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let message = match ResultMessage::decode(&record.value, &record.headers) {
            Ok(message) => message,
            Err(error) => {
                report.add(
                    UNDECODABLE_RECORD,
                    format!("{RESULTS_TOPIC} offset {}: {error}", record.offset),
                );
                continue;
            }
        };
        let tag = result_tag(&message);
        let rejection = message.rejection.as_ref().map(|r| {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let is_final = tag.is_some_and(|(term, seq)| reader.is_final_result(term, seq));
        match (tag, is_final) {
            (None, _) => report.note("results.without_fence (legacy, not final)", 1),
            (Some(_), true) => report.note("results.final", 1),
            (Some(_), false) => report.note("results.tagged_not_final", 1),
        }
        out.push(Result_ {
            offset: record.offset,
            command_id: message.command_id,
            tag,
            is_final,
            shape: Shape {
                kind: kind_str(message.outcome),
                events: message
                    .events
                    .iter()
                    .map(|e| (e.position, e.hash))
                    .collect(),
                rejection,
            },
            zero_body_hash: message.body_hash == [0u8; 16],
        });
    }
    report.note("results.records", records.len() as u64);
    out
}

/// The result checks, with `is_final` deciding which results count.
/// `stored_twice`: commands the broker holds more than once on `csp.commands` (a producer
/// retry the broker did not deduplicate): for them a `duplicate` after the decision is the
/// right answer to the second copy, not a second outcome.
fn check_results(
    produced: &HashSet<Uuid>,
    uncertain: &HashSet<Uuid>,
    stored_twice: &HashSet<Uuid>,
    results: &[Result_],
    is_final: impl Fn(&Result_) -> bool,
    log: &[PublishedEvent<'static>],
    by_command: &HashMap<Uuid, Vec<(u64, [u8; 32])>>,
) -> Violations {
    let mut found = Violations::new();
    let mut add = |kind: &'static str, detail: String| found.entry(kind).or_default().push(detail);
    let mut any: HashMap<Uuid, usize> = HashMap::new();
    let mut finals: HashMap<Uuid, Vec<&Result_>> = HashMap::new();
    for result in results {
        *any.entry(result.command_id).or_default() += 1;
        if is_final(result) {
            finals.entry(result.command_id).or_default().push(result);
        }
    }
    let mut lost: Vec<&Uuid> = produced
        .iter()
        .filter(|id| !finals.contains_key(id) && !uncertain.contains(id))
        .collect();
    lost.sort();
    for id in lost {
        add(
            LOST,
            format!(
                "command {id}: {} result(s), none final; {} event(s) in the accepted log",
                any.get(id).copied().unwrap_or(0),
                by_command.get(id).map_or(0, Vec::len)
            ),
        );
    }
    let mut ids: Vec<&Uuid> = finals.keys().collect();
    ids.sort();
    for id in ids {
        let results = &finals[id];
        let shapes: BTreeSet<&Shape> = results.iter().map(|r| &r.shape).collect();
        let decisions = shapes.iter().filter(|s| s.kind != "duplicate").count();
        let distinct = if stored_twice.contains(id) && decisions > 0 {
            decisions
        } else {
            shapes.len()
        };
        if distinct > 1 {
            add(
                MULTIPLE_FINAL_OUTCOMES,
                format!(
                    "command {id}: {}",
                    results
                        .iter()
                        .map(|r| format!(
                            "[offset {} term/seq {:?}: {}]",
                            r.offset,
                            r.tag,
                            r.shape.brief()
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            );
        }
        if let Some(zero) = results.iter().find(|r| r.zero_body_hash) {
            add(
                ZERO_BODY_HASH,
                format!(
                    "command {id}: result at offset {} has body_hash 0",
                    zero.offset
                ),
            );
        }
        let in_log = by_command.get(id);
        let mut accepted = false;
        for shape in shapes.iter().filter(|s| s.kind == "accepted") {
            accepted = true;
            let missing = shape.events.iter().find(|(position, hash)| {
                !(*position >= 1
                    && log
                        .get(*position as usize - 1)
                        .is_some_and(|e| e.position == *position && e.hash == *hash))
            });
            if let Some((position, hash)) = missing {
                add(
                    ACCEPTED_EVENTS_NOT_IN_LOG,
                    format!(
                        "command {id}: its accepted result names event {position} ({}) that the accepted log does not hold",
                        short(hash)
                    ),
                );
            } else if in_log != Some(&shape.events) {
                add(
                    HALF_APPLIED,
                    format!(
                        "command {id}: the result has {} event(s) ({}), the accepted log {} ({})",
                        shape.events.len(),
                        shape.brief(),
                        in_log.map_or(0, Vec::len),
                        in_log
                            .map(|e| e
                                .iter()
                                .map(|(p, _)| p.to_string())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        if !accepted {
            if let Some(events) = in_log {
                add(
                    EVENTS_WITHOUT_ACCEPTED_RESULT,
                    format!(
                        "command {id}: final result {} but {} event(s) in the accepted log from {}",
                        shapes
                            .iter()
                            .map(|s| s.brief())
                            .collect::<Vec<_>>()
                            .join(" / "),
                        events.len(),
                        events[0].0
                    ),
                );
            }
        }
    }
    let mut unproduced: Vec<&Uuid> = by_command
        .keys()
        .filter(|id| !produced.contains(id) && !uncertain.contains(id))
        .collect();
    unproduced.sort();
    for id in unproduced {
        add(
            EVENTS_OF_UNPRODUCED_COMMAND,
            format!("command {id} was never produced but has events in the accepted log"),
        );
    }
    found
}

/// (position, hash) of every event of the log at `dir`.
pub fn instance_log(dir: &std::path::Path) -> InstanceLog {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let log = csp_ledger::store::log::Log::open(dir, csp_ledger::store::log::LogOptions::default())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for item in log.events_from(1) {
        let event = item.map_err(|e| e.to_string())?;
        out.push((event.position, event.hash));
    }
    Ok(out)
}

/// Where `a` and `b` first differ, if neither is a prefix of the other.
fn divergence(a: &[(u64, [u8; 32])], b: &[(u64, [u8; 32])]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The events of one instance's log, or why it could not be read.
pub type InstanceLog = Result<Vec<(u64, [u8; 32])>, String>;

fn check_instances(
    instances: &[(String, InstanceLog)],
    forked: &[InstanceLog],
    log: &[PublishedEvent<'static>],
    report: &mut Report,
) {
    let accepted: Vec<(u64, [u8; 32])> = log.iter().map(|e| (e.position, e.hash)).collect();
    // A log moved aside as forked should differ from the accepted log (else the fork was
    // spurious: a good log rebuilt for nothing). Diagnostics only.
    for moved in forked {
        let name = match moved {
            Ok(events) if divergence(events, &accepted).is_some() => {
                "instances.forked_logs_moved_aside.diverging"
            }
            Ok(events) if events.len() > accepted.len() => {
                "instances.forked_logs_moved_aside.beyond_accepted_head"
            }
            Ok(_) => "instances.forked_logs_moved_aside.prefix_of_accepted (spurious)",
            Err(_) => "instances.forked_logs_moved_aside.unreadable",
        };
        report.note(name, 1);
    }
    let mut logs = Vec::new();
    for (name, read) in instances {
        match read {
            Ok(events) => {
                report.note(&format!("instance.{name}.head"), events.len() as u64);
                let gap = events
                    .iter()
                    .enumerate()
                    .find(|(index, (position, _))| *position != *index as u64 + 1);
                if let Some((index, (position, _))) = gap {
                    report.add(
                        INSTANCE_NOT_PREFIX,
                        format!("instance {name}: slot {index} holds position {position}"),
                    );
                }
                if let Some(at) = divergence(events, &accepted) {
                    report.add(
                        INSTANCE_NOT_PREFIX,
                        format!(
                            "instance {name}: differs from the accepted log at position {} (instance {}, accepted {})",
                            events[at].0,
                            short(&events[at].1),
                            short(&accepted[at].1)
                        ),
                    );
                } else if events.len() > accepted.len() {
                    report.add(
                        INSTANCE_NOT_PREFIX,
                        format!(
                            "instance {name}: {} event(s) beyond the accepted head {}",
                            events.len() - accepted.len(),
                            accepted.len()
                        ),
                    );
                }
                logs.push((name, events));
            }
            Err(error) => report.add(INSTANCE_LOG_UNREADABLE, format!("instance {name}: {error}")),
        }
    }
    for (x, (i, a)) in logs.iter().enumerate() {
        for (j, b) in logs.iter().skip(x + 1) {
            if let Some(at) = divergence(a, b) {
                report.add(
                    INSTANCES_DIVERGE,
                    format!("instances {i} and {j} differ at position {}", a[at].0),
                );
            }
        }
    }
}

/// Everything the checker judges.
pub struct History {
    /// `csp.commands` from its beginning (to tell which commands the broker holds twice).
    pub commands: Vec<Record>,
    /// `csp.events` from its beginning, in offset order.
    pub events: Vec<Record>,
    /// `csp.command-results` from its beginning, in offset order.
    pub results: Vec<Record>,
    /// Each instance's log, by name.
    pub instances: Vec<(String, InstanceLog)>,
    /// The logs the instances moved aside as forked (diagnostics only).
    pub forked: Vec<InstanceLog>,
}

/// Reads both topics from their beginning and the data directories (whose instances must
/// have stopped).
pub fn read_history(brokers: &str, data_dirs: &[PathBuf], forked_dirs: &[PathBuf]) -> History {
    History {
        commands: read_all(brokers, COMMANDS_TOPIC, Duration::from_secs(180)),
        events: read_all(brokers, EVENTS_TOPIC, Duration::from_secs(180)),
        results: read_all(brokers, RESULTS_TOPIC, Duration::from_secs(180)),
        instances: data_dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| (format!("i{i}"), instance_log(dir)))
            .collect(),
        forked: forked_dirs.iter().map(|dir| instance_log(dir)).collect(),
    }
}

/// Reads the history ([`read_history`]) and judges it ([`judge`]).
pub fn check(
    brokers: &str,
    produced: &HashSet<Uuid>,
    uncertain: &HashSet<Uuid>,
    data_dirs: &[PathBuf],
    forked_dirs: &[PathBuf],
) -> Report {
    judge(
        &read_history(brokers, data_dirs, forked_dirs),
        produced,
        uncertain,
    )
}

/// Every violation of `history`. `produced`: the commands the broker acknowledged (each
/// must have a final result); `uncertain`: commands whose delivery is unknown (they may or
/// may not appear).
pub fn judge(history: &History, produced: &HashSet<Uuid>, uncertain: &HashSet<Uuid>) -> Report {
    let mut report = Report::default();
    for kind in KINDS {
        report.violations.insert(kind, Vec::new());
    }
    let EventsPass { reader, log } = events_pass(&history.events, &mut report);
    report.accepted_head = log.len() as u64;
    check_chain(&log, &mut report);
    let by_command = events_by_command(&log, &mut report);
    report.note("commands.produced", produced.len() as u64);
    report.note("commands.uncertain", uncertain.len() as u64);
    report.note(
        "commands.with_events_in_accepted_log",
        by_command.len() as u64,
    );

    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    for record in &history.commands {
        if let Some(id) = command_id_of(&record.value) {
            *copies.entry(id).or_default() += 1;
        }
    }
    let stored_twice: HashSet<Uuid> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    report.note("commands.on_topic", history.commands.len() as u64);
    report.note("commands.stored_twice_on_topic", stored_twice.len() as u64);
    report.note(
        "commands.acknowledged_but_not_on_topic",
        produced
            .iter()
            .filter(|id| !copies.contains_key(id))
            .count() as u64,
    );

    let results = decode_results(&history.results, &reader, &mut report);
    let answered: HashSet<Uuid> = results.iter().map(|r| r.command_id).collect();
    report.note(
        "commands.with_any_result",
        produced.iter().filter(|id| answered.contains(id)).count() as u64,
    );
    report.note(
        "results.of_unproduced_commands",
        results
            .iter()
            .filter(|r| !produced.contains(&r.command_id))
            .count() as u64,
    );
    for (kind, found) in check_results(
        produced,
        uncertain,
        &stored_twice,
        &results,
        |r| r.is_final,
        &log,
        &by_command,
    ) {
        report.violations.entry(kind).or_default().extend(found);
    }
    if results.iter().any(|r| r.tag.is_none()) {
        report.legacy_view = Some(check_results(
            produced,
            uncertain,
            &stored_twice,
            &results,
            |r| r.is_final || r.tag.is_none(),
            &log,
            &by_command,
        ));
    }
    check_instances(&history.instances, &history.forked, &log, &mut report);
    report
}

// ---------------------------------------------------------------------------------------------
// Waiting for the system to settle

/// Follows both topics (with its own [`TermReader`]) to tell when every produced command
/// has a final result.
pub struct Progress {
    events: Tail,
    results: Tail,
    reader: TermReader,
    /// Results not yet final: (command, term, seq).
    pending: Vec<(Uuid, u64, u64)>,
    answered: HashSet<Uuid>,
    final_ids: HashSet<Uuid>,
}

/// Why [`settle`] stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every produced command has a final result.
    AllFinal,
    /// Every produced command has a result, not all final, and nothing was published for a
    /// while (the ledger will not make them final).
    AllAnsweredQuiet,
    /// Nothing was published for a long while and commands are missing results.
    Stalled,
    /// The deadline passed.
    Deadline,
}

impl Progress {
    pub fn new(brokers: &str) -> Progress {
        Progress {
            events: Tail::new(brokers, EVENTS_TOPIC),
            results: Tail::new(brokers, RESULTS_TOPIC),
            reader: TermReader::new(),
            pending: Vec::new(),
            answered: HashSet::new(),
            final_ids: HashSet::new(),
        }
    }

    /// Reads what arrived; returns whether anything did.
    pub fn update(&mut self) -> bool {
        let events = self.events.poll(Duration::from_millis(500));
        let results = self.results.poll(Duration::from_millis(500));
        for record in &events {
            if let Ok(decoded) = EventsRecord::decode(&record.value, &record.headers) {
                let _ = self.reader.push(decoded);
            }
        }
        for record in &results {
            let Ok(message) = ResultMessage::decode(&record.value, &record.headers) else {
                continue;
            };
            self.answered.insert(message.command_id);
            if let Some((term, seq)) = result_tag(&message) {
                self.pending.push((message.command_id, term, seq));
            }
        }
        let reader = &self.reader;
        let final_ids = &mut self.final_ids;
        self.pending.retain(|(id, term, seq)| {
            if reader.is_final_result(*term, *seq) {
                final_ids.insert(*id);
                false
            } else {
                true
            }
        });
        !events.is_empty() || !results.is_empty()
    }

    /// (with a final result, with any result) among `produced`.
    pub fn counts(&self, produced: &HashSet<Uuid>) -> (usize, usize) {
        (
            produced
                .iter()
                .filter(|id| self.final_ids.contains(id))
                .count(),
            produced
                .iter()
                .filter(|id| self.answered.contains(id))
                .count(),
        )
    }
}

/// Waits until every produced command has a final result; or every one has some result and
/// the topics were quiet for `quiet`; or nothing moved for `stall`; or `deadline` passed.
pub fn settle(
    brokers: &str,
    produced: &HashSet<Uuid>,
    quiet: Duration,
    stall: Duration,
    deadline: Duration,
) -> (Settled, Duration) {
    let started = Instant::now();
    let mut progress = Progress::new(brokers);
    let mut last_change = Instant::now();
    let mut last_print = Instant::now();
    loop {
        if progress.update() {
            last_change = Instant::now();
        }
        let (finals, answered) = progress.counts(produced);
        let outcome = if finals == produced.len() {
            Some(Settled::AllFinal)
        } else if answered == produced.len() && last_change.elapsed() >= quiet {
            Some(Settled::AllAnsweredQuiet)
        } else if last_change.elapsed() >= stall {
            Some(Settled::Stalled)
        } else if started.elapsed() >= deadline {
            Some(Settled::Deadline)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            eprintln!(
                "settled ({outcome:?}) after {:.1?}: {finals} final, {answered} answered of {}",
                started.elapsed(),
                produced.len()
            );
            return (outcome, started.elapsed());
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "settling: {finals} final, {answered} answered of {} after {:.0?}",
                produced.len(),
                started.elapsed()
            );
            last_print = Instant::now();
        }
    }
}
