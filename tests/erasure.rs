//! Physical erasure (SPEC.md section 12, "Erasure is physical"): when `erase-personal-data`
//! returns, no byte of the erased e-mail addresses or their salts is left in any file under
//! the data directory, while `verify`, the Merkle root and every inclusion proof of the
//! subject's events stay as they were; and a store from before the personal-data store (its
//! values in sled) has them moved out of sled at open.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use csp_ledger::store::log::{sled_config, Log, LogOptions};
use csp_ledger::store::personal::PERSONAL_FILE;
use csp_ledger_schemas::merkle::{self, leaf_hash, verify_inclusion, Hash};
use csp_ledger_testkit::Kit;
use serde_json::Value;
use uuid::Uuid;

fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn apply(dir: &Path, lines: &str) -> Vec<Value> {
    let output = cli(dir, &["apply", "-"], Some(lines));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn history(dir: &Path) -> Vec<Value> {
    let output = cli(dir, &["history"], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn jsonl(commands: &[csp_ledger_schemas::command::CommandEnvelope]) -> String {
    commands.iter().map(|c| c.to_json() + "\n").collect()
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// The files under `dir` whose raw bytes contain `needle` anywhere.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(needle.len()).any(|window| window == needle)
        })
        .collect()
}

/// The salts and values stored for `subject`, read with SQLite directly (as a forensic tool
/// would).
fn stored_values(dir: &Path, subject: Uuid) -> Vec<([u8; 16], String)> {
    let connection = rusqlite::Connection::open_with_flags(
        dir.join(PERSONAL_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = connection
        .prepare("SELECT salt, value FROM personal WHERE subject = ?1")
        .unwrap();
    let rows = statement
        .query_map([&subject.as_bytes()[..]], |row| {
            let salt: Vec<u8> = row.get(0)?;
            Ok((salt.try_into().unwrap(), row.get(1)?))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn hash_of(event: &Value) -> Hash {
    hex::decode(event["hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn erasure_leaves_no_byte_of_the_values_or_their_salts_and_every_proof_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let generated = csp_ledger_testkit::workload::generated_jsonl(600, 7);
    let generated: Vec<&str> = generated.lines().collect();
    let mut kit = Kit::new();
    let partner = kit.id();
    let other = kit.id();
    let email = "erase.me.please@contoso-erasure.example";

    // Three applies (three processes, several SQLite transactions and page splits): the
    // subject's values land among hundreds of others, and more commands follow them.
    apply(&dir, &(generated[..250].join("\n") + "\n"));
    let subject_commands = jsonl(&[
        kit.enroll(partner, "DE", email),
        kit.enroll(other, "FR", "stays@contoso-erasure.example"),
        kit.verify(partner),
        kit.associate_mpn(partner, "7654321", "DE"),
        kit.sign_mpa(partner),
    ]);
    let outcomes = apply(&dir, &subject_commands);
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "accepted"),
        "{outcomes:?}"
    );
    apply(&dir, &(generated[250..].join("\n") + "\n"));

    // Before: the value and both salts are on disk (so the scan below can fail).
    let values = stored_values(&dir, partner);
    assert_eq!(values.len(), 2, "the contact e-mail and the MPA signer's");
    assert!(values.iter().any(|(_, value)| value == email));
    assert!(!holding(&dir, email.as_bytes()).is_empty());
    for (salt, _) in &values {
        assert!(!holding(&dir, salt).is_empty(), "salt found before");
    }
    let before = history(&dir);
    let size = before.len() as u64;
    assert!(size > 600, "{size} events");
    let root = merkle::root(
        &before
            .iter()
            .map(|e| leaf_hash(&hash_of(e)))
            .collect::<Vec<_>>(),
    );
    let stream = format!("partner-{partner}");
    let subject_positions: Vec<u64> = before
        .iter()
        .filter(|e| e["stream"] == stream.as_str())
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(subject_positions.len(), 4);
    assert_eq!(
        before[subject_positions[0] as usize - 1]["personal_data"]["primary_contact_email"],
        email
    );

    let erased = cli(&dir, &["erase-personal-data", &partner.to_string()], None);
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let report: Value = serde_json::from_slice(&erased.stdout).unwrap();
    assert_eq!(report["erased_values"], 2);

    // At once: no byte of the value or of either salt in any file under the data directory.
    let left = holding(&dir, email.as_bytes());
    assert!(left.is_empty(), "the erased e-mail is still in {left:?}");
    let left = holding(&dir, b"erase.me.please");
    assert!(
        left.is_empty(),
        "part of the erased e-mail is still in {left:?}"
    );
    for (salt, _) in &values {
        let left = holding(&dir, salt);
        assert!(left.is_empty(), "an erased salt is still in {left:?}");
    }
    // Another subject's value is untouched.
    assert!(!holding(&dir, b"stays@contoso-erasure.example").is_empty());
    assert_eq!(stored_values(&dir, other).len(), 1);
    assert!(stored_values(&dir, partner).is_empty());

    // The chain verifies; the events keep their commitments, without clear values.
    let verify = cli(&dir, &["verify"], None);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let verified: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["events"], size);
    let after = history(&dir);
    assert_eq!(after.len(), before.len());
    for position in &subject_positions {
        let (was, is) = (
            &before[*position as usize - 1],
            &after[*position as usize - 1],
        );
        assert_eq!(is["hash"], was["hash"]);
        assert_eq!(is["data"], was["data"]);
        assert!(is.get("personal_data").is_none(), "{is}");
    }
    assert!(
        after[subject_positions[0] as usize - 1]["data"]["primary_contact_email"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The same Merkle root, and the inclusion proof of each of the subject's events verifies
    // against it.
    let log = Log::open(&dir, LogOptions { fsync: true }).unwrap();
    assert_eq!(log.tree_root(size).unwrap(), root);
    for position in &subject_positions {
        let index = position - 1;
        let proof = log.inclusion_proof(index, size).unwrap();
        let leaf = leaf_hash(&hash_of(&after[index as usize]));
        verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        let smaller = size - 17;
        let proof = log.inclusion_proof(index, smaller).unwrap();
        verify_inclusion(
            &leaf,
            index,
            smaller,
            &proof,
            &log.tree_root(smaller).unwrap(),
        )
        .unwrap();
    }

    // An erasure through a log that stays open (its write-ahead log in use, as in a long-lived
    // process) leaves nothing either, before the log is closed.
    let values = stored_values(&dir, other);
    assert!(!holding(&dir, values[0].1.as_bytes()).is_empty());
    assert_eq!(log.erase_subject(other).unwrap(), 1);
    let left = holding(&dir, values[0].1.as_bytes());
    assert!(left.is_empty(), "the erased e-mail is still in {left:?}");
    let left = holding(&dir, &values[0].0);
    assert!(left.is_empty(), "the erased salt is still in {left:?}");
    assert_eq!(log.tree_root(size).unwrap(), root);
}

#[test]
fn values_an_older_store_kept_in_sled_move_to_the_personal_data_store_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut kit = Kit::new();
    let partner = kit.id();
    let email = "moved.out.of.sled@contoso-migration.example";
    apply(
        &dir,
        &jsonl(&[kit.enroll(partner, "DE", email), kit.verify(partner)]),
    );
    // Make it a store of the earlier layout: the value and salt under `P` in sled, none in
    // SQLite.
    let values = stored_values(&dir, partner);
    assert_eq!(values.len(), 1);
    let commitment = {
        let events = history(&dir);
        let hex = events[0]["data"]["primary_contact_email"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        hex::decode(hex).unwrap()
    };
    {
        let connection = rusqlite::Connection::open(dir.join(PERSONAL_FILE)).unwrap();
        connection.execute("DELETE FROM personal", []).unwrap();
    }
    {
        let db = sled_config(&dir).open().unwrap();
        let mut key = vec![b'P'];
        key.extend_from_slice(partner.as_bytes());
        key.extend_from_slice(&commitment);
        let mut value = values[0].0.to_vec();
        value.extend_from_slice(email.as_bytes());
        db.insert(key, value).unwrap();
        db.flush().unwrap();
    }

    // The next open moves it: history answers it, SQLite holds it, sled no longer does.
    let events = history(&dir);
    assert_eq!(events[0]["personal_data"]["primary_contact_email"], email);
    assert_eq!(stored_values(&dir, partner), values);
    let db = sled_config(&dir).open().unwrap();
    assert_eq!(db.scan_prefix(b"P").count(), 0);
    drop(db);
    // And the move left no copy in sled's files (they were rewritten): an erasure now leaves
    // no byte of the value or its salt anywhere under the data directory.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let output = cli(&dir, &["erase-personal-data", &partner.to_string()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(holding(&dir, email.as_bytes()), Vec::<PathBuf>::new());
    assert_eq!(holding(&dir, &values[0].0), Vec::<PathBuf>::new());
    assert!(!dir.join("sled.old").exists() && !dir.join("sled.rewrite").exists());
    let verified = cli(&dir, &["verify"], None);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

/// A rewrite of sled cut off by a crash: an incomplete one is discarded at the next open, a
/// complete one (marked) is swapped in, and the old store removed; the log is intact either way.
#[test]
fn an_interrupted_rewrite_of_sled_is_finished_or_discarded_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut kit = Kit::new();
    let partner = kit.id();
    apply(
        &dir,
        &jsonl(&[
            kit.enroll(partner, "DE", "rewrite@contoso.example"),
            kit.verify(partner),
        ]),
    );
    let head = Log::open(&dir, LogOptions { fsync: false }).unwrap().head();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let copy = |to: &str| {
        let target = dir.join(to);
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(dir.join("sled")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
            }
        }
    };
    // Incomplete: no mark.
    copy("sled.rewrite");
    let log = Log::open(&dir, LogOptions { fsync: false }).unwrap();
    assert_eq!(log.head(), head);
    drop(log);
    assert!(!dir.join("sled.rewrite").exists());
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Complete: marked, the old store still in place.
    copy("sled.rewrite");
    std::fs::write(dir.join("sled.rewrite.complete"), b"").unwrap();
    let log = Log::open(&dir, LogOptions { fsync: false }).unwrap();
    assert_eq!(log.head(), head);
    drop(log);
    for leftover in ["sled.rewrite", "sled.rewrite.complete", "sled.old"] {
        assert!(!dir.join(leftover).exists(), "{leftover}");
    }
    let verified = cli(&dir, &["verify"], None);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
