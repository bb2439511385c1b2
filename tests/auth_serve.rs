//! SPEC.md section 10 as an operator meets it with the binary: the embedded administrator key
//! on first start, `--insecure-no-auth` only on loopback, and the principals file re-read on
//! SIGHUP (a broken file leaves the previous principals in force).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csp_ledger::auth::directory::api_key_sha256;
use csp_ledger_testkit::http::request_once;
use serde_json::Value;

/// A running `csp-ledger serve`, killed when dropped.
struct Serving {
    child: Child,
    addr: SocketAddr,
    /// The JSON lines printed before `listening`.
    printed: Vec<Value>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, args: &[&str]) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(data)
        .args(["--fsync", "false", "serve", "--http", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    loop {
        let mut line = String::new();
        assert!(lines.read_line(&mut line).unwrap() > 0, "serve exited");
        let value: Value = serde_json::from_str(&line).unwrap();
        if let Some(addr) = value["listening"].as_str() {
            return Serving {
                addr: addr.parse().unwrap(),
                child,
                printed,
            };
        }
        printed.push(value);
    }
}

fn status(addr: SocketAddr, key: Option<&str>) -> u16 {
    let header = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    request_once(addr, "GET", "/v1/audit/verify", &headers, b"")
        .unwrap()
        .status
}

#[test]
fn the_first_start_writes_an_administrator_key_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = {
        let first = serve(&data, &[]);
        assert_eq!(first.printed.len(), 1, "{:?}", first.printed);
        let key = first.printed[0]["admin_key"].as_str().unwrap().to_string();
        let file = data.join("admin.key");
        assert_eq!(
            first.printed[0]["admin_key_file"],
            file.display().to_string()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
        assert_eq!(
            status(first.addr, None),
            401,
            "nothing is open to anonymous callers"
        );
        assert_eq!(status(first.addr, Some("guess")), 401);
        assert_eq!(status(first.addr, Some(&key)), 200);
        key
    };
    // The second start finds the key and does not print it again.
    let second = serve(&data, &[]);
    assert!(second.printed.is_empty(), "{:?}", second.printed);
    assert_eq!(status(second.addr, Some(&key)), 200);
}

#[test]
fn insecure_no_auth_is_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--http", "0.0.0.0:0", "--insecure-no-auth"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure-no-auth is refused"), "{stderr}");
    assert!(!dir.path().join("data/admin.key").exists());
    // On loopback it serves without credentials, to loopback names only: a page whose name
    // re-resolves to 127.0.0.1 (DNS rebinding) is refused by its Host header.
    let open = serve(&dir.path().join("data"), &["--insecure-no-auth"]);
    assert_eq!(status(open.addr, None), 200);
    for (host, expected) in [
        ("rebind.attacker.example", 403),
        ("localhost", 200),
        ("127.0.0.1", 200),
    ] {
        let host = format!("{host}:{}", open.addr.port());
        let answer = raw_get(open.addr, &host, "/v1/events");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{host}: {answer}"
        );
        if expected == 403 {
            assert!(answer.contains("host_not_allowed"), "{answer}");
        }
    }
    drop(open);
    // Nor with a broker others can write to: its unsigned commands would be the admin's.
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--kafka",
            "192.0.2.1:9092",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unsigned commands are taken only from a broker on a loopback address"),
        "{stderr}"
    );
}

/// A GET with exactly this Host header (the testkit client writes its own).
fn raw_get(addr: SocketAddr, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn principal(id: &str, key: &str) -> String {
    format!(
        "[[principal]]\nid = \"{id}\"\napi_key_sha256 = \"{}\"\nact_as = []\nread = [\"models\"]\n",
        hex::encode(api_key_sha256(key))
    )
}

fn hang_up(child: &Child) {
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_principals_file_is_reread_on_sighup_and_a_broken_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.toml");
    std::fs::write(&file, principal("reader-one", "key-one-0123456789")).unwrap();
    let serving = serve(
        &dir.path().join("data"),
        &["--principals", file.to_str().unwrap()],
    );
    assert!(
        serving.printed.is_empty(),
        "no admin key with a principals file"
    );
    assert!(!dir.path().join("data/admin.key").exists());
    assert_eq!(status(serving.addr, Some("key-one-0123456789")), 200);
    assert_eq!(status(serving.addr, Some("key-two-0123456789")), 401);

    // Key one revoked, key two added.
    std::fs::write(&file, principal("reader-two", "key-two-0123456789")).unwrap();
    hang_up(&serving.child);
    eventually("the new file is in force", || {
        status(serving.addr, Some("key-two-0123456789")) == 200
    });
    assert_eq!(status(serving.addr, Some("key-one-0123456789")), 401);

    // A file that does not load (unknown key, e-mail as id) leaves reader-two in force.
    for broken in [
        format!(
            "{}admin = true\n",
            principal("reader-three", "key-three-0123456")
        ),
        principal("ops@example.com", "key-three-0123456"),
    ] {
        std::fs::write(&file, broken).unwrap();
        hang_up(&serving.child);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(status(serving.addr, Some("key-two-0123456789")), 200);
        assert_eq!(status(serving.addr, Some("key-three-0123456")), 401);
    }
}

#[test]
fn serve_refuses_a_principals_file_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.toml");
    std::fs::write(&file, "[[principal]]\nid = \"two words\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--http", "127.0.0.1:0", "--principals"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("principals file"), "{stderr}");
}

#[test]
fn new_principal_prints_an_entry_that_loads_and_a_key_that_matches_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("portal.key");
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .args([
            "new-principal",
            "--id",
            "partner-portal",
            "--act-as",
            "partner:*",
        ])
        .args(["--read", "models", "--kafka-key-file"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let entry = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let key = stderr.trim().rsplit(' ').next().unwrap();
    assert!(!entry.contains(key), "the file never holds the key itself");
    let file = dir.path().join("principals.toml");
    std::fs::write(&file, &entry).unwrap();
    let directory = csp_ledger::auth::Directory::load(&file).unwrap();
    let principal = directory.by_api_key(key).unwrap();
    assert_eq!(principal.id.as_str(), "partner-portal");
    assert!(directory.kafka_publisher("partner-portal").is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Bad grants are refused before anything is written.
    let refused = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .args([
            "new-principal",
            "--id",
            "ops@example.com",
            "--act-as",
            "operator",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
