//! `csp-ledger loadgen`: an open-loop HTTP load generator for the query benchmark. Requests are
//! scheduled at a fixed rate; each latency is measured from the request's *scheduled* time, so
//! a slow server cannot hide queueing delay (no coordinated omission). Runs in its own process
//! on loopback: one OS thread per keep-alive connection, sleeping with `nanosleep` precision
//! (an async runtime's millisecond timer would add up to a millisecond to every sample).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csp_ledger_testkit::http::Connection;
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
            let Ok(mut connection) = Connection::open(target.as_str()) else {
                errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            };
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
                match connection.get(path) {
                    Ok(response) if response.status == 200 => {
                        latencies.push(scheduled.elapsed().as_micros() as u64)
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                // The server ended the connection: this thread's share goes to the others.
                if connection.is_closed() {
                    break;
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
