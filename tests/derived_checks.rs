//! What is derived or kept beside the hashed log is checked before it is trusted (SPEC.md
//! section 12, "Everything derived is checked"): a personal value edited in the personal-data
//! store is never joined back (reads fail with `personal_data_mismatch` over HTTP and the
//! CLI, `verify` reports it, a retried command's answer leaves it out), and `verify` of a
//! directory without a ledger fails with `no_ledger` and creates nothing.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use csp_ledger::store::personal::PERSONAL_FILE;
use csp_ledger_testkit::Kit;
use serde_json::Value;
use support::{cli_query, get, start_server};

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

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {} / {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn a_forged_personal_value_is_never_joined_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut kit = Kit::new();
    let partner = kit.id();
    let enroll = kit.enroll(partner, "DE", "real.contact@contoso-forge.example");
    let lines: String = [enroll.clone(), kit.verify(partner)]
        .iter()
        .map(|c| c.to_json() + "\n")
        .collect();
    let applied = cli(&dir, &["apply", "-"], Some(&lines));
    assert!(applied.status.success());
    let stream = format!("/v1/streams/partner-{partner}/events");
    let (ok, events) = cli_query(&dir, &stream);
    assert!(ok, "{events}");
    assert_eq!(
        events["items"][0]["personal_data"]["primary_contact_email"],
        "real.contact@contoso-forge.example"
    );
    assert_eq!(json(&cli(&dir, &["verify"], None))["ok"], true);

    // The attacker edits the stored value (with SQLite's own tools: the file's checksums, if
    // any, are recomputed).
    {
        let connection = rusqlite::Connection::open(dir.join(PERSONAL_FILE)).unwrap();
        let changed = connection
            .execute(
                "UPDATE personal SET value = 'attacker@evil.example' WHERE subject = ?1",
                [&partner.as_bytes()[..]],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    // The CLI: the read fails with the code, names no value.
    let (ok, body) = cli_query(&dir, &stream);
    assert!(!ok);
    assert_eq!(body["code"], "personal_data_mismatch", "{body}");
    assert_eq!(body["status"], 500);
    assert!(!body.to_string().contains("evil.example"), "{body}");
    assert!(!body.to_string().contains("contoso-forge"), "{body}");
    let (ok, body) = cli_query(&dir, "/v1/events?limit=100");
    assert!(!ok);
    assert_eq!(body["code"], "personal_data_mismatch", "{body}");
    // A read that joins no personal value still answers.
    let (ok, body) = cli_query(&dir, &format!("/v1/partners/{partner}"));
    assert!(ok, "{body}");
    // `history` fails too, and prints no forged value.
    let history = cli(&dir, &["history"], None);
    assert!(!history.status.success());
    assert!(!String::from_utf8_lossy(&history.stdout).contains("evil.example"));
    assert!(
        String::from_utf8_lossy(&history.stderr).contains("does not match its commitment"),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );

    // `verify` checks every stored value against its commitment.
    let verify = cli(&dir, &["verify"], None);
    assert_eq!(verify.status.code(), Some(2));
    let report = json(&verify);
    assert_eq!(report["ok"], false);
    assert_eq!(report["code"], "personal_data_mismatch", "{report}");
    assert!(!report.to_string().contains("evil.example"));

    // A retry of the enrollment is answered (duplicate) without the forged value, and the
    // writer goes on.
    let retried = cli(
        &dir,
        &["apply", "-"],
        Some(
            &(enroll.to_json()
                + "\n"
                + &kit.associate_mpn(partner, "1234567", "DE").to_json()
                + "\n"),
        ),
    );
    assert!(retried.status.success());
    let outcomes: Vec<Value> = String::from_utf8(retried.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes[0]["outcome"], "duplicate");
    assert!(
        outcomes[0]["events"][0].get("personal_data").is_none(),
        "{}",
        outcomes[0]
    );
    assert_eq!(outcomes[1]["outcome"], "accepted");

    // Over HTTP (the insecure principal holds the personal grant): 500 with the code.
    let addr = start_server(&dir);
    let answer = get(addr, &stream);
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(answer.json()["code"], "personal_data_mismatch");
    assert!(!answer.body.contains("evil.example"));
    let answer = get(addr, "/v1/events?from=1&limit=10");
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(answer.json()["code"], "personal_data_mismatch");
    assert_eq!(get(addr, &format!("/v1/partners/{partner}")).status, 200);
}

#[test]
fn verify_of_a_directory_without_a_ledger_fails_with_no_ledger_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();

    // A mistyped path: exit 2, `no_ledger`, and the path still does not exist.
    let missing = tmp.path().join("dtaa");
    let verify = cli(&missing, &["verify"], None);
    assert_eq!(verify.status.code(), Some(2));
    let report = json(&verify);
    assert_eq!(report["ok"], false);
    assert_eq!(report["code"], "no_ledger", "{report}");
    assert!(!missing.exists(), "verify created {}", missing.display());
    // Neither do the other read-only commands create it.
    for args in [
        &["history"][..],
        &["query", "/v1/events"][..],
        &[
            "erase-personal-data",
            "00000000-0000-4000-8000-000000000101",
        ][..],
    ] {
        let output = cli(&missing, args, None);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("holds no ledger"),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }

    // An existing ledger still verifies (and its report has no code).
    let dir = tmp.path().join("data");
    let mut kit = Kit::new();
    let partner = kit.id();
    let lines: String = kit
        .onboard(partner, "DE")
        .iter()
        .map(|c| c.to_json() + "\n")
        .collect();
    assert!(cli(&dir, &["apply", "-"], Some(&lines)).status.success());
    let verify = cli(&dir, &["verify"], None);
    assert_eq!(verify.status.code(), Some(0));
    let report = json(&verify);
    assert_eq!(report["ok"], true);
    assert!(report.get("code").is_none(), "{report}");

    // Its sled/ deleted: `no_ledger`, not an empty valid ledger, and sled/ is not recreated.
    std::fs::remove_dir_all(dir.join("sled")).unwrap();
    let verify = cli(&dir, &["verify"], None);
    assert_eq!(verify.status.code(), Some(2));
    let report = json(&verify);
    assert_eq!(report["code"], "no_ledger", "{report}");
    assert_eq!(report["events"], 0);
    assert!(!dir.join("sled").exists());

    // A personal-data store overwritten with something else: a damaged ledger (exit 2), not an
    // operational failure.
    let other = tmp.path().join("other");
    assert!(cli(&other, &["apply", "-"], Some(&lines)).status.success());
    std::fs::write(other.join(PERSONAL_FILE), vec![0x5a; 8192]).unwrap();
    for wal in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(other.join(format!("{PERSONAL_FILE}{wal}")));
    }
    let verify = cli(&other, &["verify"], None);
    assert_eq!(
        verify.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let report = json(&verify);
    assert_eq!(report["ok"], false);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("personal.sqlite"),
        "{report}"
    );

    // An empty directory (say, a fresh mount) is no ledger either.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let verify = cli(&empty, &["verify"], None);
    assert_eq!(verify.status.code(), Some(2));
    assert_eq!(json(&verify)["code"], "no_ledger");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
