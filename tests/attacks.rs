//! The attacks of issue 11, sent to the binary on loopback as an attacker with a valid key
//! would (here: `--insecure-no-auth`, every caller an administrator), each asserting the JSON
//! error and the limit that holds (SPEC.md section 11).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Serving {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path, args: &[&str]) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--fsync", "false", "serve", "--http", "127.0.0.1:0"])
        .arg("--insecure-no-auth")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
    Serving {
        addr: listening["listening"].as_str().unwrap().parse().unwrap(),
        child,
    }
}

/// (VmRSS, VmHWM) of a process in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One request on a new connection; the whole answer (status line, headers, body).
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before the whole body is sent: that is the point.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

#[test]
fn a_15_mb_array_of_5_million_empty_objects_is_refused_within_64_mb() {
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(dir.path(), &[]);
    let _ = get(serving.addr, "/healthz");
    let (rss_before, _) = memory(serving.child.id());
    let body = format!("[{}]", vec!["{}"; 5_000_000].join(","));
    assert!(body.len() > 14_000_000);
    let head = format!(
        "POST /v1/commands HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = request(serving.addr, &head, body.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    let (_, peak) = memory(serving.child.id());
    eprintln!(
        "15 MB body: peak {peak} KiB, {} KiB above the RSS before",
        peak.saturating_sub(rss_before)
    );
    assert!(
        peak.saturating_sub(rss_before) < 64 * 1024,
        "the refused body cost {} KiB",
        peak - rss_before
    );
    drop(serving);
    // Under the body limit, but too many commands: refused by count, before any is decided.
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(dir.path(), &["--max-body-bytes", "20000000"]);
    let _ = get(serving.addr, "/healthz");
    let (rss_before, _) = memory(serving.child.id());
    let answer = request(serving.addr, &head, body.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.contains(r#""code":"too_many_commands""#), "{answer}");
    assert!(
        answer.len() < 4096,
        "the refusal is short: {} bytes",
        answer.len()
    );
    let (_, peak) = memory(serving.child.id());
    eprintln!(
        "5 million elements: peak {peak} KiB, {} KiB above the RSS before",
        peak.saturating_sub(rss_before)
    );
    assert!(
        peak.saturating_sub(rss_before) < 64 * 1024,
        "the refused array cost {} KiB",
        peak - rss_before
    );
    let events = get(serving.addr, "/v1/events?limit=1");
    assert!(
        events.contains(r#""position":0"#),
        "nothing was appended: {events}"
    );
}

/// The `/metrics` lines of the query histogram (one series per route template and code).
fn query_series(addr: SocketAddr) -> Vec<String> {
    get(addr, "/metrics")
        .lines()
        .filter(|l| l.starts_with("csp_ledger_query_seconds_count"))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_string()
        })
        .collect()
}

#[test]
fn ten_thousand_unique_paths_add_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(dir.path(), &[]);
    // One of each kind first: a malformed id, an unknown partner, an unknown path with
    // characters the exposition format must escape.
    let kinds = |i: usize| {
        [
            format!("/v1/partners/not-a-uuid-{i}"),
            format!("/v1/partners/00000000-0000-4000-8000-{i:012}"),
            format!("/v1/x%22%7D{i}/%5C%0A"),
        ]
    };
    let mut stream = TcpStream::connect(serving.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut send = |path: &str| {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap();
        // Read the answer: status, headers up to the blank line, then the body.
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
    };
    for path in kinds(0) {
        send(&path);
    }
    let series_before = query_series(serving.addr);
    let metrics_before = get(serving.addr, "/metrics").len();
    let (rss_before, _) = memory(serving.child.id());
    let started = Instant::now();
    for i in 1..=3_334 {
        for path in kinds(i) {
            send(&path);
        }
    }
    eprintln!("10,002 requests in {:?}", started.elapsed());
    let series_after = query_series(serving.addr);
    assert_eq!(series_after, series_before, "no new series");
    assert!(
        series_after
            .iter()
            .all(|s| !s.contains("not-a-uuid") && !s.contains("%22")),
        "{series_after:?}"
    );
    let metrics_after = get(serving.addr, "/metrics").len();
    assert!(
        metrics_after < metrics_before + 2_048,
        "/metrics grew from {metrics_before} to {metrics_after} bytes"
    );
    let (rss_after, _) = memory(serving.child.id());
    assert!(
        rss_after.saturating_sub(rss_before) < 16 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
}

#[test]
fn a_connection_flood_beyond_the_cap_leaves_healthz_answering_once_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(
        dir.path(),
        &[
            "--max-connections",
            "16",
            "--header-timeout-ms",
            "20000",
            "--idle-timeout-ms",
            "20000",
        ],
    );
    // Seven times the cap, all idle (the attacker's sockets; the ones beyond the cap wait in
    // the listen backlog, which is why the flood stays under its size here).
    let opening = Instant::now();
    let flood: Vec<TcpStream> = (0..112)
        .filter_map(|_| TcpStream::connect(serving.addr).ok())
        .collect();
    assert!(flood.len() > 100, "only {} connections opened", flood.len());
    // While it lasts, /healthz waits in the backlog too (the cap holds).
    let mut waiting = TcpStream::connect(serving.addr).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(waiting.read(&mut byte).is_err(), "served beyond the cap");
    eprintln!(
        "{} connections opened in {:?}",
        flood.len(),
        opening.elapsed()
    );
    drop(flood);
    let ended = Instant::now();
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = waiting.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the waiting request: {answer}"
    );
    let deadline = ended + Duration::from_secs(10);
    loop {
        let answer = get(serving.addr, "/healthz");
        if answer.starts_with("HTTP/1.1 200") {
            assert!(answer.contains(r#""status":"alive""#), "{answer}");
            eprintln!(
                "/healthz answered {:?} after the flood ended",
                ended.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz does not answer: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
