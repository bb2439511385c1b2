//! Signed checkpoints, proofs and rollback detection (SPEC.md section 12), through the binary:
//! `apply` signs a checkpoint at its end, `audit` prints keys, checkpoints and proofs that the
//! contract crate's verifiers accept, `serve` signs on its timer and answers the auditor's
//! paths, and a witness file refuses an older copy of the data directory, a fork of the same
//! size and a deleted store with exit 4. The forged projection checkpoint is not served.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use csp_ledger_schemas::merkle::{self, Hash};
use csp_ledger_schemas::note::{self, VerifierKey};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
}

/// The binary with `--data-dir dir`, `--fsync false` and `extra` global flags.
fn ledger(dir: &Path, extra: &[&str]) -> Command {
    let mut command = bin();
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--fsync", "false", "--origin", "csp-ledger/test"])
        .args(extra);
    command
}

fn run(mut command: Command) -> Output {
    command.output().unwrap()
}

fn apply(dir: &Path, extra: &[&str], lines: &str) -> Output {
    let mut child = ledger(dir, extra)
        .arg("apply")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn workload(commands: usize, seed: u64) -> String {
    csp_ledger_testkit::workload::generated_jsonl(commands, seed)
}

fn verifier(dir: &Path, extra: &[&str]) -> VerifierKey {
    ok(&run({
        let mut c = ledger(dir, extra);
        c.args(["audit", "key"]);
        c
    }))
    .trim()
    .parse()
    .unwrap()
}

fn audit(dir: &Path, extra: &[&str], args: &[&str]) -> Output {
    let mut command = ledger(dir, extra);
    command.arg("audit").args(args);
    run(command)
}

fn unhex(text: &Value) -> Hash {
    hex::decode(text.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn head(dir: &Path) -> u64 {
    let out = ok(&run({
        let mut c = ledger(dir, &[]);
        c.arg("verify");
        c
    }));
    serde_json::from_str::<Value>(&out).unwrap()["events"]
        .as_u64()
        .unwrap()
}

#[test]
fn apply_signs_a_checkpoint_whose_proofs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&apply(&data, &[], &workload(300, 1)));
    let first = head(&data);
    ok(&apply(&data, &[], &workload(200, 2)));
    let second = head(&data);
    assert!(second > first && first > 0);
    // The key file: created on first use, mode 0600, never printed by `audit key`.
    let key_file = std::fs::read_to_string(data.join("signing.key")).unwrap();
    assert!(key_file.starts_with("PRIVATE+KEY+csp-ledger/test+"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = verifier(&data, &[]);
    assert!(!key.to_string().contains("PRIVATE"));

    // One checkpoint per apply, each kept: the latest, and the earlier one by size.
    let latest = ok(&audit(&data, &[], &["checkpoint"]));
    let latest = note::open(&latest, &key).unwrap();
    assert_eq!(
        (latest.origin.as_str(), latest.size),
        ("csp-ledger/test", second)
    );
    let earlier = ok(&audit(
        &data,
        &[],
        &["checkpoint", "--tree-size", &first.to_string()],
    ));
    let earlier = note::open(&earlier, &key).unwrap();
    assert_eq!(earlier.size, first);
    let missing = audit(
        &data,
        &[],
        &["checkpoint", "--tree-size", &(first + 1).to_string()],
    );
    assert!(!missing.status.success());
    let body: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(body["code"], "checkpoint_not_found");

    // Inclusion of events of the first apply in the earlier tree and the latest one.
    for (position, checkpoint) in [
        (1, &earlier),
        (first, &earlier),
        (first / 2, &latest),
        (second, &latest),
    ] {
        let out = ok(&audit(
            &data,
            &[],
            &[
                "prove",
                "--position",
                &position.to_string(),
                "--tree-size",
                &checkpoint.size.to_string(),
            ],
        ));
        let proof: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(proof["position"], position);
        let hashes: Vec<Hash> = proof["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(unhex)
            .collect();
        merkle::verify_inclusion(
            &unhex(&proof["leaf_hash"]),
            position - 1,
            checkpoint.size,
            &hashes,
            &checkpoint.root,
        )
        .unwrap_or_else(|e| panic!("inclusion of {position} at {}: {e:?}", checkpoint.size));
        // A changed leaf does not verify.
        let mut leaf = unhex(&proof["leaf_hash"]);
        leaf[0] ^= 1;
        assert!(merkle::verify_inclusion(
            &leaf,
            position - 1,
            checkpoint.size,
            &hashes,
            &checkpoint.root
        )
        .is_err());
    }
    // Consistency from the earlier checkpoint to the latest.
    let out = ok(&audit(
        &data,
        &[],
        &["consistency", "--from", &first.to_string()],
    ));
    let proof: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (proof["from"].as_u64(), proof["to"].as_u64()),
        (Some(first), Some(second))
    );
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    merkle::verify_consistency(first, second, &hashes, &earlier.root, &latest.root).unwrap();

    // Bad ranges are JSON errors.
    for args in [
        vec!["prove", "--position", "0"],
        vec!["prove", "--position", &(second + 1).to_string()],
        vec![
            "prove",
            "--position",
            "1",
            "--tree-size",
            &(second + 1).to_string(),
        ],
        vec!["consistency", "--from", "0"],
        vec!["consistency", "--from", "5", "--to", "4"],
        vec!["prove", "--position", "x"],
    ] {
        let out = audit(&data, &[], &args);
        assert!(!out.status.success(), "{args:?}");
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (body["code"].as_str(), body["status"].as_u64()),
            (Some("invalid_range"), Some(400)),
            "{args:?}"
        );
    }
}

/// Exit 4 with `rollback_detected` on stderr, naming both sizes.
fn assert_rollback(output: &Output, own: u64, checkpoint: u64) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("rollback_detected"))
        .unwrap_or_else(|| panic!("no rollback_detected: {stderr}"));
    let body: Value = serde_json::from_str(line).unwrap();
    assert_eq!(body["code"], "rollback_detected");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&own.to_string()) && message.contains(&checkpoint.to_string()),
        "{message}"
    );
}

fn serve_exits(data: &Path, extra: &[&str]) -> Output {
    let mut command = ledger(data, extra);
    command.args(["serve", "--http", "127.0.0.1:0"]);
    // A server that did not refuse would run forever: the test's timeout is its own.
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve did not refuse: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_witness_file_refuses_an_older_copy_a_fork_and_a_deleted_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let witness_dir = tempfile::tempdir().unwrap();
    let witness: PathBuf = witness_dir.path().join("witness");
    let key: PathBuf = witness_dir.path().join("signing.key");
    let flags = [
        "--witness-file",
        witness.to_str().unwrap(),
        "--signing-key",
        key.to_str().unwrap(),
    ];
    let lines = workload(200, 3);
    ok(&apply(&data, &flags, &lines));
    let older_size = head(&data);
    let older = dir.path().join("older");
    support::copy_dir(&data, &older);
    ok(&apply(&data, &flags, &workload(100, 4)));
    let size = head(&data);
    let witnessed = note::open(
        &std::fs::read_to_string(&witness).unwrap(),
        &verifier(&data, &flags),
    )
    .unwrap();
    assert_eq!(witnessed.size, size);

    // The real directory still starts.
    ok(&apply(&data, &flags, ""));

    // An older copy swapped in: refused by apply and serve, naming both sizes.
    let swapped = dir.path().join("swapped");
    support::copy_dir(&older, &swapped);
    assert_rollback(&apply(&swapped, &flags, ""), older_size, size);
    assert_rollback(&serve_exits(&swapped, &flags), older_size, size);
    // Without the witness, the older copy is a valid, shorter ledger: that is the attack.
    ok(&apply(
        &swapped,
        &["--signing-key", key.to_str().unwrap()],
        "",
    ));

    // A fork of the same size: the same 300 commands decided again (other times, other
    // hashes) in another directory under the same key.
    let fork = dir.path().join("fork");
    let fork_flags = ["--signing-key", key.to_str().unwrap()];
    ok(&apply(&fork, &fork_flags, &lines));
    ok(&apply(&fork, &fork_flags, &workload(100, 4)));
    assert_eq!(head(&fork), size);
    let out = apply(&fork, &flags, "");
    assert_rollback(&out, size, size);
    assert!(String::from_utf8_lossy(&out.stderr).contains("fork"));

    // A deleted store: an empty ledger now, refused.
    std::fs::remove_dir_all(data.join("sled")).unwrap();
    assert_rollback(&serve_exits(&data, &flags), 0, size);
}

#[test]
fn serve_signs_on_its_timer_and_answers_the_auditors_paths_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&apply(&data, &[], &workload(50, 5)));
    let mut child = ledger(&data, &[])
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--checkpoint-interval-ms",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    for _ in 0..4 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        if let Some(listening) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["listening"].as_str().map(str::to_string))
        {
            addr = Some(listening.parse().unwrap());
            break;
        }
    }
    let addr: std::net::SocketAddr = addr.expect("the server said where it listens");
    let admin = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let key = {
        let text = std::fs::read_to_string(data.join("signing.key")).unwrap();
        csp_ledger_schemas::note::NoteSigner::from_private_key(&text)
            .unwrap()
            .verifier()
    };
    let size_before = support::get(addr, "/v1/audit/proof/consistency?from=1").json()["to"]
        .as_u64()
        .unwrap();

    // Commands over HTTP grow the log; the timer signs the new head within a few intervals.
    let body = format!(
        "[{}]",
        workload(40, 6).lines().collect::<Vec<_>>().join(",")
    );
    let posted = csp_ledger_testkit::http::request_once(
        addr,
        "POST",
        "/v1/commands",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {}", admin.trim())),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(posted.status, 200);
    let head = support::get(addr, "/v1/audit/proof/consistency?from=1").json()["to"]
        .as_u64()
        .unwrap();
    assert!(head > size_before);
    let started = std::time::Instant::now();
    let signed = loop {
        let response = support::get(addr, "/v1/audit/checkpoint");
        if response.status == 200 {
            let checkpoint = note::open(&response.body, &key).unwrap();
            if checkpoint.size == head {
                assert!(response.headers.contains("content-type: text/plain"));
                break checkpoint;
            }
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "no checkpoint of size {head}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The one `apply` signed is still there by its size.
    let earlier = support::get(
        addr,
        &format!("/v1/audit/checkpoint?tree_size={size_before}"),
    );
    assert_eq!(earlier.status, 200);
    let earlier = note::open(&earlier.body, &key).unwrap();
    let proof = support::get(
        addr,
        &format!("/v1/audit/proof/consistency?from={size_before}&to={head}"),
    )
    .json();
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    merkle::verify_consistency(size_before, head, &hashes, &earlier.root, &signed.root).unwrap();
    let proof = support::get(
        addr,
        &format!("/v1/audit/proof/inclusion?position=7&tree_size={head}"),
    )
    .json();
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    merkle::verify_inclusion(&unhex(&proof["leaf_hash"]), 6, head, &hashes, &signed.root).unwrap();

    for (path, status, code) in [
        (
            "/v1/audit/checkpoint?tree_size=3",
            404,
            "checkpoint_not_found",
        ),
        ("/v1/audit/checkpoint?tree_size=x", 400, "invalid_range"),
        ("/v1/audit/proof/inclusion?position=0", 400, "invalid_range"),
        ("/v1/audit/proof/inclusion", 400, "invalid_range"),
        (
            &*format!(
                "/v1/audit/proof/inclusion?position=1&tree_size={}",
                head + 1
            ),
            400,
            "invalid_range",
        ),
        (
            &*format!("/v1/audit/proof/inclusion?position={}&tree_size=2", 3),
            400,
            "invalid_range",
        ),
        ("/v1/audit/proof/consistency?from=0", 400, "invalid_range"),
        (
            "/v1/audit/proof/consistency?from=9&to=8",
            400,
            "invalid_range",
        ),
        (
            &*format!("/v1/audit/proof/consistency?from=1&to={}", head + 1),
            400,
            "invalid_range",
        ),
    ] {
        let response = support::get(addr, path);
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let empty = support::get(
        addr,
        &format!("/v1/audit/proof/consistency?from={head}&to={head}"),
    )
    .json();
    assert_eq!(empty["hashes"], serde_json::json!([]));

    // A clean stop signs nothing new (the head was signed); the key stays the same.
    unsafe { libc_kill(child.id()) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let latest = ok(&audit(&data, &[], &["checkpoint"]));
    assert_eq!(note::open(&latest, &key).unwrap().size, head);
}

/// SIGTERM.
unsafe fn libc_kill(pid: u32) {
    extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    kill(pid as i32, 15);
}

/// The legal name of the first partner of the workload, read through `query`.
fn first_partner(dir: &Path, extra: &[&str], lines: &str) -> (String, String) {
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let id = first["payload"]["partner_id"].as_str().unwrap().to_string();
    let out = ok(&run({
        let mut c = ledger(dir, extra);
        c.args(["query", &format!("/v1/partners/{id}")]);
        c
    }));
    let body: Value = serde_json::from_str(&out).unwrap();
    (id, body["legal_name"].as_str().unwrap().to_string())
}

/// Replaces the checkpoint's legal name of `id` with "Forged Partner", sealed with `seal`.
fn forge_checkpoint(data: &Path, key_file: Option<&Path>, id: &str, seal: Option<[u8; 32]>) {
    use csp_ledger::store::checkpoint::{self, MacKey};
    let settings = csp_ledger::notary::NotarySettings {
        key_file: key_file.map(Path::to_path_buf),
        origin: Some("csp-ledger/test".into()),
        witness: None,
    };
    let (notary, created) = csp_ledger::notary::Notary::load_or_create(data, &settings).unwrap();
    assert!(!created);
    let real = notary.checkpoint_key();
    let mut loaded = checkpoint::load_untrusted(data, &real)
        .unwrap()
        .expect("a checkpoint");
    let id: uuid::Uuid = id.parse().unwrap();
    loaded.state.partners.get_mut(&id).unwrap().legal_name = "Forged Partner".into();
    let key = match seal {
        Some(guess) => MacKey::new(guess, true),
        None => real,
    };
    checkpoint::save(data, &loaded.state, loaded.hash, &key).unwrap();
}

#[test]
fn a_forged_projection_checkpoint_is_not_served() {
    let lines = workload(100, 7);
    let keys = tempfile::tempdir().unwrap();
    let outside = keys.path().join("signing.key");
    let outside_flags = ["--signing-key", outside.to_str().unwrap()];
    // (key file, its flags, the attacker's MAC key (None: the real one), whether the forged
    // name is served)
    let cases: [(Option<&Path>, &[&str], Option<[u8; 32]>, bool); 4] = [
        // The key outside the directory: a forger without it cannot seal a checkpoint...
        (Some(&outside), &outside_flags, Some([0; 32]), false),
        (Some(&outside), &outside_flags, Some([7; 32]), false),
        // ...and one sealed with the real key is used (the control: the checkpoint is read).
        (Some(&outside), &outside_flags, None, true),
        // The key inside the directory: whoever edits the directory reads the key, so the
        // checkpoint is never trusted and start-up refolds.
        (None, &[], None, false),
    ];
    for (key_file, flags, seal, served_forged) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ok(&apply(&data, flags, &lines));
        ok(&run({
            let mut c = ledger(&data, flags);
            c.args(["rebuild", "--write"]);
            c
        }));
        let (id, name) = first_partner(&data, flags, &lines);
        forge_checkpoint(&data, key_file, &id, seal);
        let (_, served) = first_partner(&data, flags, &lines);
        let expected = if served_forged {
            "Forged Partner"
        } else {
            name.as_str()
        };
        assert_eq!(served, expected, "key file {key_file:?}, seal {seal:?}");
        // `rebuild` tells the auditor which: the refold disagrees with a forged checkpoint.
        if served_forged {
            let out = run({
                let mut c = ledger(&data, flags);
                c.arg("rebuild");
                c
            });
            assert_eq!(out.status.code(), Some(2));
        }
    }
}
