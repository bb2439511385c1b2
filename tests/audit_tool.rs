//! The auditor's tool, `schemas/audit_log.py`, against the real binary (SPEC.md section 12):
//! a generated workload applied in rounds with `csp-ledger apply` (each round signs a
//! checkpoint), served over HTTP with the default authentication (the audit paths need no
//! credentials), and the tool run as an auditor would. It verifies the signature, inclusion of
//! random events at random signed sizes (`?tree_size=N`), and consistency between random pairs of
//! sizes through its state file; and it exits 2 on each tampered variant: a changed event line,
//! an event of another history at that position (a changed leaf), a changed proof hash (a
//! proxy between the tool and the ledger), another key, an edited checkpoint, another origin,
//! an older copy of the data directory served (a rollback), and a store that diverged after a
//! shared prefix (a fork, at the same size and at a larger one).
//!
//! Also runs the pure-Python tests of the tool (`schemas/test_audit_log.py`). Needs `python3`
//! with the `cryptography` package. `AUDIT_SEED=N` repeats a run's random choices.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use csp_ledger_testkit::http::Connection;
use csp_ledger_testkit::workload::{Generator, Rng};
use serde_json::Value;

const ORIGIN: &str = "csp-ledger/audit-test";
/// Commands applied per round (each `apply` signs one checkpoint at its end).
const ROUNDS: [usize; 5] = [120, 300, 45, 500, 260];
/// The rolled-back copy and the fork's shared prefix: the store after this many rounds.
const PREFIX_ROUNDS: usize = 2;

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn seed() -> u64 {
    std::env::var("AUDIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// `csp-ledger --data-dir DIR --fsync false` with `--origin` from the environment.
fn ledger(dir: &Path, origin: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_csp-ledger"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--fsync", "false"])
        .env("CSP_LEDGER_ORIGIN", origin);
    command
}

fn output(mut command: Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn apply(dir: &Path, origin: &str, lines: &[String]) -> u64 {
    let file = dir.with_extension("round.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mut command = ledger(dir, origin);
    command.arg("apply").arg(&file);
    let outcomes = output(command);
    assert_eq!(outcomes.lines().count(), lines.len());
    head(dir, origin)
}

/// The size of the latest signed checkpoint (its second line).
fn head(dir: &Path, origin: &str) -> u64 {
    let mut command = ledger(dir, origin);
    command.args(["audit", "checkpoint"]);
    output(command).lines().nth(1).unwrap().parse().unwrap()
}

fn checkpoint_at(dir: &Path, size: u64) -> String {
    let mut command = ledger(dir, ORIGIN);
    command.args(["audit", "checkpoint", "--tree-size", &size.to_string()]);
    output(command)
}

/// `history` lines by position.
fn history(dir: &Path) -> BTreeMap<u64, String> {
    let mut command = ledger(dir, ORIGIN);
    command.arg("history");
    output(command)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            (event["position"].as_u64().unwrap(), line.to_string())
        })
        .collect()
}

fn verifier_key(dir: &Path) -> String {
    let mut command = ledger(dir, ORIGIN);
    command.args(["audit", "key"]);
    output(command).trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

struct Serving {
    child: Child,
    addr: SocketAddr,
}

impl Serving {
    fn start(dir: &Path) -> Serving {
        let mut command = ledger(dir, ORIGIN);
        let mut child = command
            .args(["serve", "--http", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first start prints the administrator's key first: the audit paths need none.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "serve ended");
            let printed: Value = serde_json::from_str(&line).unwrap();
            if let Some(addr) = printed["listening"].as_str() {
                break addr.parse().unwrap();
            }
        };
        Serving { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn checkpoint(&self, size: Option<u64>) -> String {
        let mut url = format!("{}/v1/audit/checkpoint", self.url());
        if let Some(size) = size {
            url.push_str(&format!("?tree_size={size}"));
        }
        url
    }

    fn get(&self, path: &str) -> (u16, String) {
        let answer = Connection::open(self.addr).unwrap().get(path).unwrap();
        (answer.status, answer.text())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

/// `python3 schemas/audit_log.py --verifier-key KEY --state STATE [extra…] CHECKPOINT`.
fn audit(key: &str, state: &Path, checkpoint: &str, extra: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new("python3")
        .arg(schemas().join("audit_log.py"))
        .args(["--verifier-key", key, "--state"])
        .arg(state)
        .args(extra)
        .arg(checkpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let code = out.status.code().unwrap();
    let report = if code == 0 {
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
        serde_json::from_str(&stdout).unwrap()
    } else {
        assert_eq!(stdout, "", "nothing on stdout on failure");
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
        Value::Null
    };
    Run {
        code,
        report,
        stderr,
    }
}

fn ok(run: Run) -> Value {
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    run.report
}

/// Exit 2 with `words` in the reason, and the state file left as it was.
fn caught(state: &Path, run: impl FnOnce() -> Run, words: &str) {
    let before = std::fs::read(state).ok();
    let run = run();
    assert_eq!(run.code, 2, "expected exit 2 ({words}): {}", run.stderr);
    assert!(
        run.stderr.contains(words),
        "expected {words:?} in: {}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(state).ok(),
        before,
        "the state file is untouched"
    );
}

/// A man in the middle for the proof paths: forwards each request to `ledger` and answers its
/// JSON with the first hash of `hashes` changed.
fn tampering_proxy(ledger: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
            let path = head.split(' ').nth(1).unwrap();
            let answer = Connection::open(ledger).unwrap().get(path).unwrap();
            let mut body: Value = serde_json::from_slice(&answer.body).unwrap();
            if let Some(first) = body["hashes"].get_mut(0) {
                let hex = first.as_str().unwrap();
                let changed = if hex.starts_with('0') { "1" } else { "0" };
                *first = Value::from(format!("{changed}{}", &hex[1..]));
            }
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {} Tampered\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                answer.status,
                body.len()
            );
        }
    });
    addr
}

#[test]
fn python_unit_tests_of_the_tool() {
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_audit_log"])
        .current_dir(schemas())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "python3 -m unittest test_audit_log failed"
    );
    assert!(stderr.contains("\nOK"), "{stderr}");
}

#[test]
fn the_auditor_tool_verifies_the_binary_and_catches_each_tampering() {
    let seed = seed();
    eprintln!("audit tool test seed {seed} (set AUDIT_SEED to repeat)");
    let mut rng = Rng::new(seed);
    let work = tempfile::tempdir().unwrap();
    let main = work.path().join("main");
    let old = work.path().join("old");
    let fork = work.path().join("fork");
    let commands: Vec<String> = Generator::new(seed)
        .take(ROUNDS.iter().sum())
        .map(|envelope| envelope.to_json())
        .collect();
    let mut rounds = Vec::new();
    let mut rest = &commands[..];
    for n in ROUNDS {
        let (round, tail) = rest.split_at(n);
        rounds.push(round.to_vec());
        rest = tail;
    }

    // The ledger: one signed checkpoint per round. After PREFIX_ROUNDS, an older copy of the
    // data directory (the rollback) and a fork that applies the same later rounds again: the
    // same sizes, but other event ids and times, so other hashes after the shared prefix.
    let mut sizes = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        sizes.push(apply(&main, ORIGIN, round));
        if i + 1 == PREFIX_ROUNDS {
            copy_dir(&main, &old);
            copy_dir(&main, &fork);
        }
    }
    eprintln!("signed sizes {sizes:?}");
    assert!(
        sizes.windows(2).all(|w| w[0] < w[1]),
        "every round appends: {sizes:?}"
    );
    let mut fork_sizes = sizes[..PREFIX_ROUNDS].to_vec();
    for round in &rounds[PREFIX_ROUNDS..] {
        fork_sizes.push(apply(&fork, ORIGIN, round));
    }
    assert_eq!(fork_sizes, sizes, "the fork has the same sizes");
    let prefix = sizes[PREFIX_ROUNDS - 1];
    let last = *sizes.last().unwrap();

    // Another origin, signed with the same key; and a stranger's key.
    let other = work.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(main.join("signing.key"), other.join("signing.key")).unwrap();
    apply(&other, "other", &rounds[0]);
    let mut command = ledger(&other, "other");
    command.args(["audit", "checkpoint"]);
    let other_checkpoint = work.path().join("other.checkpoint");
    std::fs::write(&other_checkpoint, output(command)).unwrap();
    let stranger = work.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let stranger_key = verifier_key(&stranger);

    let key = verifier_key(&main);
    let key_file = work.path().join("ledger.vkey");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    assert!(key.starts_with(&format!("{ORIGIN}+")), "{key}");
    let events = history(&main);
    let fork_events = history(&fork);
    assert_eq!(events.len() as u64, last);
    assert_eq!(
        events.range(..=prefix).collect::<Vec<_>>(),
        fork_events.range(..=prefix).collect::<Vec<_>>()
    );
    let files: Vec<(u64, PathBuf)> = sizes
        .iter()
        .map(|&size| {
            let path = work.path().join(format!("checkpoint-{size}"));
            std::fs::write(&path, checkpoint_at(&main, size)).unwrap();
            (size, path)
        })
        .collect();

    let served = Serving::start(&main);
    let state = |name: &str| work.path().join(format!("{name}.state"));
    let event_file = |line: &str| {
        let path = work.path().join(format!("event-{}", file_name(line)));
        std::fs::write(&path, format!("{line}\n")).unwrap();
        path
    };

    // The served checkpoints are the ones the CLI prints, and need no credentials.
    for (size, path) in &files {
        let (status, body) = served.get(&format!("/v1/audit/checkpoint?tree_size={size}"));
        assert_eq!(
            (status, body),
            (200, std::fs::read_to_string(path).unwrap())
        );
    }
    assert_eq!(
        served.get("/v1/audit/checkpoint?tree_size=1").0,
        404,
        "no checkpoint was signed at 1"
    );

    // The signature, and the latest checkpoint: first use of a state file.
    let report = ok(audit(
        &key,
        &state("latest"),
        &served.checkpoint(None),
        &[],
        None,
    ));
    assert_eq!(report["tree_size"], last);
    assert_eq!(report["origin"], ORIGIN);
    assert_eq!(report["consistent_from"], Value::Null);
    let name_and_id: Vec<&str> = key.splitn(3, '+').take(2).collect();
    assert_eq!(report["key"], name_and_id.join("+"));
    // The key from a file, the checkpoint from a file with --ledger.
    let report = ok(audit(
        key_file.to_str().unwrap(),
        &state("files"),
        files[0].1.to_str().unwrap(),
        &[],
        None,
    ));
    assert_eq!(report["tree_size"], sizes[0]);
    let report = ok(audit(
        &key,
        &state("files"),
        files[3].1.to_str().unwrap(),
        &["--ledger", &served.url()],
        None,
    ));
    assert_eq!(
        (
            report["tree_size"].as_u64(),
            report["consistent_from"].as_u64()
        ),
        (Some(sizes[3]), Some(sizes[0]))
    );

    // Inclusion of random events at random signed sizes, each with a fresh state file.
    for i in 0..16 {
        let size = sizes[rng.below(sizes.len() as u64) as usize];
        let position = 1 + rng.below(size);
        let file = event_file(&events[&position]);
        let report = ok(audit(
            &key,
            &state(&format!("inclusion-{i}")),
            &served.checkpoint(Some(size)),
            &["--event", file.to_str().unwrap()],
            None,
        ));
        assert_eq!(
            (
                report["tree_size"].as_u64(),
                report["event_position"].as_u64()
            ),
            (Some(size), Some(position))
        );
    }
    // The first and the last event, the latter from stdin.
    ok(audit(
        &key,
        &state("first"),
        &served.checkpoint(Some(sizes[0])),
        &["--event", event_file(&events[&1]).to_str().unwrap()],
        None,
    ));
    let report = ok(audit(
        &key,
        &state("last"),
        &served.checkpoint(None),
        &["--event", "-"],
        Some(&events[&last]),
    ));
    assert_eq!(report["event_position"], last);

    // Consistency between random pairs of sizes, through the state file.
    for i in 0..10 {
        let a = sizes[rng.below(sizes.len() as u64) as usize];
        let b = sizes[rng.below(sizes.len() as u64) as usize];
        let (from, to) = (a.min(b), a.max(b));
        let file = state(&format!("pair-{i}"));
        ok(audit(
            &key,
            &file,
            &served.checkpoint(Some(from)),
            &[],
            None,
        ));
        let report = ok(audit(&key, &file, &served.checkpoint(Some(to)), &[], None));
        assert_eq!(
            (
                report["consistent_from"].as_u64(),
                report["tree_size"].as_u64()
            ),
            (Some(from), Some(to))
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            std::fs::read_to_string(&files[sizes.iter().position(|&s| s == to).unwrap()].1)
                .unwrap(),
            "the state file holds the checkpoint verified last"
        );
    }
    // And one state file through every size in order.
    let walk = state("walk");
    for (i, &size) in sizes.iter().enumerate() {
        let report = ok(audit(
            &key,
            &walk,
            &served.checkpoint(Some(size)),
            &[],
            None,
        ));
        assert_eq!(
            report["consistent_from"].as_u64(),
            i.checked_sub(1).map(|j| sizes[j])
        );
    }

    // Tampered: a changed event line (its hash no longer matches its canonical bytes).
    let position = 1 + rng.below(last);
    let mut changed: Value = serde_json::from_str(&events[&position]).unwrap();
    changed["recorded_at"] = Value::from("2026-01-01T00:00:00Z");
    let changed = event_file(&changed.to_string());
    caught(
        &walk,
        || {
            audit(
                &key,
                &walk,
                &served.checkpoint(None),
                &["--event", changed.to_str().unwrap()],
                None,
            )
        },
        &format!("changed event: the hash of position {position}"),
    );
    // A changed leaf: the fork's event at a position after the shared prefix, with a valid hash.
    let position = prefix + 1 + rng.below(last - prefix);
    let foreign = event_file(&fork_events[&position]);
    caught(
        &walk,
        || {
            audit(
                &key,
                &walk,
                &served.checkpoint(None),
                &["--event", foreign.to_str().unwrap()],
                None,
            )
        },
        &format!("failed proof: event {position} is not in the checkpoint of {last} events"),
    );
    // Another key.
    caught(
        &walk,
        || audit(&stranger_key, &walk, &served.checkpoint(None), &[], None),
        "bad signature: no signature by key",
    );
    // An edited checkpoint.
    let edited = work.path().join("edited");
    let text = std::fs::read_to_string(&files[1].1).unwrap();
    std::fs::write(
        &edited,
        text.replacen(
            &format!("\n{}\n", sizes[1]),
            &format!("\n{}\n", sizes[1] + 1),
            1,
        ),
    )
    .unwrap();
    caught(
        &walk,
        || audit(&key, &walk, edited.to_str().unwrap(), &[], None),
        "bad signature: the signature by",
    );
    // Another origin, signed with the same key: against the state file, and against --origin.
    caught(
        &walk,
        || audit(&key, &walk, other_checkpoint.to_str().unwrap(), &[], None),
        "another log: the checkpoint's origin is 'other'",
    );
    let fresh = state("fresh-origin");
    caught(
        &fresh,
        || {
            audit(
                &key,
                &fresh,
                other_checkpoint.to_str().unwrap(),
                &["--origin", ORIGIN],
                None,
            )
        },
        "another log",
    );
    // A changed proof hash, between the tool and the ledger: the inclusion fails, and the
    // consistency proof does not hold (reported as a fork: the ledger could not show its log
    // extends the state file's).
    let proxy = format!("http://{}", tampering_proxy(served.addr));
    let position = 1 + rng.below(last);
    let genuine = event_file(&events[&position]);
    caught(
        &walk,
        || {
            audit(
                &key,
                &walk,
                &served.checkpoint(None),
                &["--ledger", &proxy, "--event", genuine.to_str().unwrap()],
                None,
            )
        },
        &format!("failed proof: event {position} is not in the checkpoint of {last} events"),
    );
    let earlier = state("earlier");
    ok(audit(
        &key,
        &earlier,
        &served.checkpoint(Some(sizes[1])),
        &[],
        None,
    ));
    caught(
        &earlier,
        || {
            audit(
                &key,
                &earlier,
                &served.checkpoint(None),
                &["--ledger", &proxy],
                None,
            )
        },
        &format!(
            "fork: the checkpoint of {last} events does not extend the state file's {}",
            sizes[1]
        ),
    );
    ok(audit(&key, &earlier, &served.checkpoint(None), &[], None));
    drop(served);

    // A rollback: the older copy of the data directory is served instead.
    let rolled_back = Serving::start(&old);
    caught(
        &walk,
        || audit(&key, &walk, &rolled_back.checkpoint(None), &[], None),
        &format!("rollback: checkpoint has {prefix} events, the state file {last}"),
    );
    drop(rolled_back);
    // A fork: the diverged store at the same size, and a larger one over a smaller state.
    let forked = Serving::start(&fork);
    caught(
        &walk,
        || audit(&key, &walk, &forked.checkpoint(None), &[], None),
        &format!("fork: checkpoint and state file both have {last} events but different roots"),
    );
    let small = state("small");
    let middle = sizes[PREFIX_ROUNDS];
    ok(audit(
        &key,
        &small,
        files[PREFIX_ROUNDS].1.to_str().unwrap(),
        &[],
        None,
    ));
    caught(
        &small,
        || audit(&key, &small, &forked.checkpoint(None), &[], None),
        &format!("fork: the checkpoint of {last} events does not extend the state file's {middle}"),
    );
    // Up to the shared prefix, the fork is the same log: its later checkpoints extend it.
    let shared = state("shared");
    ok(audit(
        &key,
        &shared,
        files[PREFIX_ROUNDS - 1].1.to_str().unwrap(),
        &[],
        None,
    ));
    let report = ok(audit(&key, &shared, &forked.checkpoint(None), &[], None));
    assert_eq!(report["consistent_from"], prefix);
    drop(forked);

    // After all of that, the state file still holds the last good checkpoint, and it verifies.
    let served = Serving::start(&main);
    let report = ok(audit(&key, &walk, &served.checkpoint(None), &[], None));
    assert_eq!(
        (
            report["consistent_from"].as_u64(),
            report["tree_size"].as_u64()
        ),
        (Some(last), Some(last))
    );
}

/// A file name for an event line: the FNV-1a digest of its text.
fn file_name(line: &str) -> String {
    let hash = line.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A store written before `schema_version` 2 (tests/fixtures/v1-log) and then extended: the tool
/// recomputes the hashes of its version 1 events and of the new version 2 ones, and proves both
/// in one signed tree, and the consistency from the size the store was upgraded at.
#[test]
fn version_1_events_of_an_upgraded_store_are_proven_too() {
    let work = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log/data.tar.gz"))
        .arg("-C")
        .arg(work.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar xzf: {status}");
    let data = work.path().join("data");
    let commands: Vec<String> = Generator::new(7).take(40).map(|e| e.to_json()).collect();
    let upgraded = apply(&data, ORIGIN, &commands[..10]);
    let last = apply(&data, ORIGIN, &commands[10..]);
    let events = history(&data);
    let versions: Vec<u64> = [1, upgraded, last]
        .iter()
        .map(|p| {
            let event: Value = serde_json::from_str(&events[p]).unwrap();
            event["schema_version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(versions[0], 1, "the fixture's first event is version 1");
    assert_eq!(versions[2], 2, "the new events are version 2");
    let key = verifier_key(&data);
    let served = Serving::start(&data);
    let state = work.path().join("audit.state");
    ok(audit(
        &key,
        &state,
        &served.checkpoint(Some(upgraded)),
        &[],
        None,
    ));
    for position in [1, 2, upgraded / 2, upgraded, upgraded + 1, last] {
        let file = work.path().join(format!("event-{position}"));
        std::fs::write(&file, &events[&position]).unwrap();
        let report = ok(audit(
            &key,
            &state,
            &served.checkpoint(None),
            &["--event", file.to_str().unwrap()],
            None,
        ));
        assert_eq!(report["event_position"], position);
        assert_eq!(report["tree_size"], last);
    }
}
