//! Crash test in sled's style: a child `csp-ledger apply` is killed with SIGKILL at random
//! moments while it applies a large command file; after every kill the parent reopens the log
//! and checks that every command reported accepted is there exactly once, positions are
//! gap-free and the chain verifies. Then the file is applied again from the start.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csp_ledger::store::audit::verify;
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::Ledger;
use csp_ledger_schemas::event::EventEnvelope;

const KILLS: usize = 24;
const COMMANDS: usize = 40_000;

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Runs `apply` until killed after `delay` (or until it ends); returns the outcome lines it
/// printed completely and whether it was killed.
fn run_child(
    binary: &str,
    dir: &std::path::Path,
    file: &std::path::Path,
    delay: Option<Duration>,
) -> (Vec<String>, bool) {
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir)
        .arg("apply")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // Only complete lines count as reported.
            if line.ends_with('\n') {
                lines.push(line.trim_end().to_string());
            }
            line.clear();
        }
        lines
    });
    let mut killed = false;
    if let Some(delay) = delay {
        let started = Instant::now();
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed || status.success(),
        "apply failed on its own: {status}"
    );
    (reader.join().unwrap(), killed)
}

/// Reopens the log and checks it; returns the command ids that have events.
fn check_log(dir: &std::path::Path, reported_accepted: &HashSet<String>) -> HashSet<String> {
    let ledger = Ledger::open(dir, LogOptions::default()).expect("the log reopens after a kill");
    let report = verify(ledger.log());
    assert!(report.ok, "verify after a kill: {report:?}");
    let mut seen = HashSet::new();
    let mut last = None;
    let mut position = 0;
    for item in ledger.log().events_from(1) {
        let stored = item.unwrap();
        position += 1;
        assert_eq!(stored.position, position, "positions are gap-free");
        let envelope = EventEnvelope::decode(&stored.canonical).unwrap();
        let id = envelope.command_id.to_string();
        if last.as_ref() != Some(&id) {
            assert!(seen.insert(id.clone()), "command {id} was applied twice");
            last = Some(id);
        }
    }
    for id in reported_accepted {
        assert!(
            seen.contains(id),
            "command {id} was reported accepted but is not in the log"
        );
    }
    seen
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let binary = env!("CARGO_BIN_EXE_csp-ledger");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("commands.jsonl");
    let generated = csp_ledger_testkit::workload::generated_jsonl(COMMANDS, 11);
    std::fs::write(&file, generated).unwrap();
    let dir = work.path().join("data");

    let seed = seed();
    eprintln!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = csp_ledger_testkit::workload::Rng::new(seed);
    let mut reported_accepted: HashSet<String> = HashSet::new();
    let mut outcome_of: HashMap<String, String> = HashMap::new();
    let mut kills = 0;
    let mut runs = 0;
    while kills < KILLS {
        runs += 1;
        assert!(
            runs < KILLS * 4,
            "the child finished too quickly to be killed {KILLS} times"
        );
        let delay = Duration::from_millis(10 + rng.below(500));
        let (lines, killed) = run_child(binary, &dir, &file, Some(delay));
        for line in &lines {
            let outcome: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = outcome["command_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind = outcome["outcome"].as_str().unwrap().to_string();
            if kind == "accepted" {
                assert!(
                    reported_accepted.insert(id.clone()),
                    "command {id} reported accepted twice"
                );
            }
            // A command reported accepted earlier is a duplicate on every later run.
            if reported_accepted.contains(&id) && kind != "accepted" {
                assert_eq!(kind, "duplicate", "{line}");
            }
            outcome_of.entry(id).or_insert(kind);
        }
        if killed {
            kills += 1;
        }
        check_log(&dir, &reported_accepted);
    }
    // Finally the whole file applies to the end, and every command has its outcome.
    let (lines, killed) = run_child(binary, &dir, &file, None);
    assert!(!killed);
    assert_eq!(lines.len(), COMMANDS);
    let in_log = check_log(&dir, &reported_accepted);
    for line in &lines {
        let outcome: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = outcome["command_id"].as_str().unwrap();
        if outcome["outcome"] == "duplicate" && !outcome["events"].as_array().unwrap().is_empty() {
            assert!(in_log.contains(id));
        }
    }
    eprintln!(
        "{kills} kills, {} commands reported accepted before the final run",
        reported_accepted.len()
    );
    // sled 0.34 never fsyncs its blob files: the log must keep every page in the synced file.
    let blobs = std::fs::read_dir(dir.join("sled").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "sled wrote blob files, which it does not fsync");
}
