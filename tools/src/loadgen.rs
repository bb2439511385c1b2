//! `csp-ledger loadgen`: an open-loop HTTP load generator for the query benchmark. Requests are
//! scheduled at a fixed rate; each latency is measured from the request's *scheduled* time, so
//! a slow server cannot hide queueing delay (no coordinated omission). Runs in its own process
//! on loopback: one OS thread per keep-alive connection, sleeping with `nanosleep` precision
//! (an async runtime's millisecond timer would add up to a millisecond to every sample).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_micros: u64,
    pub p90_micros: u64,
    pub p99_micros: u64,
    pub p999_micros: u64,
    pub max_micros: u64,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Sends `rate` GET requests per second for `duration` over `connections` keep-alive
/// connections to `target`, cycling through `paths`.
pub fn run(
    target: &str,
    paths: Vec<String>,
    rate: u64,
    duration: Duration,
    connections: usize,
) -> std::io::Result<LoadReport> {
    let total = rate * duration.as_secs();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let paths = Arc::new(paths);
    let interval_nanos = 1_000_000_000 / rate.max(1);
    let started = Instant::now() + Duration::from_millis(200);
    let mut threads = Vec::new();
    for _ in 0..connections.max(1) {
        let (next, errors, paths, target) = (
            next.clone(),
            errors.clone(),
            paths.clone(),
            target.to_string(),
        );
        threads.push(std::thread::spawn(move || -> Vec<u64> {
            let mut latencies = Vec::new();
            let Ok(stream) = TcpStream::connect(&target) else {
                errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            };
            let _ = stream.set_nodelay(true);
            let Ok(mut writer) = stream.try_clone() else {
                return latencies;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let mut body = Vec::with_capacity(4096);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let scheduled = started + Duration::from_nanos(index * interval_nanos);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let path = &paths[(index as usize) % paths.len()];
                let sent = write!(writer, "GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n");
                let status = sent.and_then(|_| read_response(&mut reader, &mut line, &mut body));
                match status {
                    Ok(200) => latencies.push(scheduled.elapsed().as_micros() as u64),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            latencies
        }));
    }
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(LoadReport {
        target_rate: rate,
        achieved_rate: all.len() as f64 / seconds,
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_micros: percentile(&all, 0.50),
        p90_micros: percentile(&all, 0.90),
        p99_micros: percentile(&all, 0.99),
        p999_micros: percentile(&all, 0.999),
        max_micros: all.last().copied().unwrap_or(0),
    })
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
fn read_response(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    body: &mut Vec<u8>,
) -> std::io::Result<u16> {
    line.clear();
    reader.read_line(line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    body.resize(length, 0);
    reader.read_exact(body)?;
    Ok(status)
}
