//! Shared helpers of the API tests: an in-process server on 127.0.0.1 (port chosen by the OS),
//! requests through the testkit's HTTP/1.1 client, the CLI, and a fixture log built from the example scenarios with a
//! ledger clock that advances one minute per command.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, TimeZone, Utc};
use csp_ledger::app::{ServeOptions, Server};
use csp_ledger::auth::Authenticator;
use csp_ledger::intake::Submission;
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::outcome::Outcome;
use csp_ledger::writer::Ledger;
use serde_json::Value;

pub const DIST: &str = "00000000-0000-4000-8000-000000000101";
pub const FAB: &str = "00000000-0000-4000-8000-000000000102";
pub const TAIL: &str = "00000000-0000-4000-8000-000000000103";
pub const LIT: &str = "00000000-0000-4000-8000-000000000104";
pub const PENDING: &str = "00000000-0000-4000-8000-000000000106";
pub const CUST1: &str = "00000000-0000-4000-8000-000000000201";
pub const CUST2: &str = "00000000-0000-4000-8000-000000000202";

/// The ledger clock of the fixture: command k (1-based) is recorded at BASE + k minutes.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).single().unwrap()
}

/// The example commands plus one enrollment left pending (for the overdue list).
pub fn fixture_commands() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lines: Vec<String> = Vec::new();
    for file in ["examples/onboarding.jsonl", "examples/lifecycle.jsonl"] {
        lines.extend(
            std::fs::read_to_string(root.join(file))
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    lines.push(format!(
        r#"{{"command_id":"00000000-0000-4000-8000-000000990001","type":"EnrollPartner","issued_at":"2026-03-10T09:00:00Z","actor":{{"kind":"partner","id":"{PENDING}","role":"global_admin"}},"payload":{{"partner_id":"{PENDING}","legal_name":"Pending Partner SA","country":"BE","tenant_id":"00000000-0000-4000-8000-000000000306","primary_contact_email":"hello@pending-partner.example"}}}}"#
    ));
    lines
}

/// A log in `dir` holding the fixture, one command per commit; returns the positions of each
/// command's events.
pub fn build_fixture(dir: &Path) -> Vec<Vec<u64>> {
    let mut minute = 0i64;
    let clock = Box::new(move || {
        minute += 1;
        base_time() + Duration::minutes(minute)
    });
    let mut ledger = Ledger::open_with(
        dir,
        LogOptions { fsync: false },
        clock,
        csp_ledger::writer::os_entropy(),
    )
    .unwrap();
    let mut positions = Vec::new();
    for line in fixture_commands() {
        let result = ledger
            .submit(vec![Submission::parse(None, line.as_bytes())])
            .unwrap();
        positions.push(match &result.outcomes[0] {
            Outcome::Accepted { events, .. } => result.events[events.clone()]
                .iter()
                .map(|e| e.stored.position)
                .collect(),
            _ => Vec::new(),
        });
    }
    positions
}

/// Starts an in-process server for the log in `dir`, with authentication off (the tests of
/// section 10 use [`start_server_with`]); it lives as long as the test process.
pub fn start_server(dir: &Path) -> SocketAddr {
    start_server_with(dir, Authenticator::insecure())
}

/// Starts an in-process server for the log in `dir` that authenticates with `auth`.
pub fn start_server_with(dir: &Path, auth: Authenticator) -> SocketAddr {
    start_server_with_options(dir, ServeOptions::new(std::sync::Arc::new(auth)))
}

/// Starts an in-process server for the log in `dir` with `options` (reads wait at most 1.5 s).
pub fn start_server_with_options(dir: &Path, mut options: ServeOptions) -> SocketAddr {
    let ledger = Ledger::open(dir, LogOptions { fsync: false }).unwrap();
    options.read_wait_max = std::time::Duration::from_millis(1500);
    let (server, addr) = Server::bind(ledger, "127.0.0.1:0", options).unwrap();
    std::thread::spawn(move || server.run_until(std::future::pending()));
    addr
}

/// A response: status, headers (lower-case names), body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`, through the testkit's client.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    let response = csp_ledger_testkit::http::request_once(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.unwrap_or("").as_bytes(),
    )
    .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    let headers = response
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_ascii_lowercase()))
        .collect();
    Response {
        status: response.status,
        headers,
        body: String::from_utf8(response.body)
            .unwrap_or_else(|error| panic!("{method} {path}: the body is not UTF-8: {error}")),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, None)
}

/// `csp-ledger query PATH` against a private copy of `dir` (the CLI takes sled's lock).
pub fn cli_query(dir: &Path, path: &str) -> (bool, Value) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(copy.path())
        .args(["query", path])
        .output()
        .unwrap();
    let body = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "query {path}: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), body)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
