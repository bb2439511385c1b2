//! SPEC.md section 11, connection limits, against the binary with shortened timeouts: slow
//! headers, silent connections and slow bodies are cut off, and at most `--max-connections`
//! are served at once while the rest wait in the backlog.

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
        .args([
            "--fsync",
            "false",
            "serve",
            "--http",
            "127.0.0.1:0",
            "--insecure-no-auth",
        ])
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

/// Reads until the server closes the connection (or `limit` passes); returns what was read
/// and how long it took.
fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn slow_headers_silent_connections_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(
        dir.path(),
        &[
            "--header-timeout-ms",
            "300",
            "--body-timeout-ms",
            "300",
            "--idle-timeout-ms",
            "600",
        ],
    );
    // Headers that never end.
    let mut slow = TcpStream::connect(serving.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let (answer, took) = until_closed(&mut slow, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "slow headers held for {took:?}"
    );
    // The request had begun, so it is answered: 408 request_timeout, as JSON.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "request_timeout", "{answer}");
    // A connection that sends nothing at all is closed without a word.
    let mut silent = TcpStream::connect(serving.addr).unwrap();
    let (answer, took) = until_closed(&mut silent, Duration::from_secs(10));
    assert_eq!(answer, "", "nothing was asked");
    assert!(
        took < Duration::from_secs(5),
        "a silent connection held for {took:?}"
    );
    // A body that stops halfway: 408 request_timeout, as JSON.
    let mut body = TcpStream::connect(serving.addr).unwrap();
    body.write_all(b"POST /v1/commands HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"command").unwrap();
    let (answer, took) = until_closed(&mut body, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(5));
    // A keep-alive connection that goes quiet after a response is closed too.
    let mut kept = TcpStream::connect(serving.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (answer, took) = until_closed(&mut kept, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "an idle keep-alive connection held for {took:?}"
    );
}

#[test]
fn connections_beyond_the_limit_wait_until_others_close() {
    let dir = tempfile::tempdir().unwrap();
    let serving = serve(
        dir.path(),
        &[
            "--max-connections",
            "2",
            "--header-timeout-ms",
            "20000",
            "--idle-timeout-ms",
            "20000",
        ],
    );
    let first = TcpStream::connect(serving.addr).unwrap();
    let second = TcpStream::connect(serving.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(serving.addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.read(&mut byte).is_err(),
        "served while two connections held the limit"
    );
    drop(first);
    drop(second);
    let (answer, _) = until_closed(&mut third, Duration::from_secs(10));
    assert!(
        format!("{}{answer}", byte[0] as char).contains("200 OK") || answer.contains("200 OK"),
        "{answer}"
    );
}
