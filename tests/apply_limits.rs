//! `apply` reads input with a bounded line buffer (issue 11 item 5): a line longer than any
//! command is skipped as it streams past, answered `malformed_command`, and the lines after it
//! are applied as usual.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

#[test]
fn an_oversized_line_is_answered_malformed_and_the_next_lines_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = std::fs::read_to_string(root.join("examples/onboarding.jsonl")).unwrap();
    let mut lines = examples.lines();
    let first = lines.next().unwrap();
    let second = lines.next().unwrap();
    // 8 MiB of a single line, streamed through a pipe.
    let huge = 8 * 1024 * 1024;
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--fsync", "false", "apply", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{first}").unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..huge / chunk.len() {
            stdin.write_all(&chunk).unwrap();
        }
        writeln!(stdin).unwrap();
        writeln!(stdin, "{second}").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let outcomes: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0]["outcome"], "accepted");
    assert_eq!(outcomes[1]["outcome"], "rejected");
    assert_eq!(outcomes[1]["rejection"]["code"], "malformed_command");
    assert_eq!(outcomes[1]["rejection"]["details"]["line"], 2);
    let reason = outcomes[1]["rejection"]["details"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains(&format!("{} bytes", huge + 1)), "{reason}");
    assert_eq!(outcomes[2]["outcome"], "accepted", "{}", outcomes[2]);
}
