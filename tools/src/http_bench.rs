//! `csp-ledger-tools bench-http`: `POST /v1/commands` throughput against `apply` on the same
//! workload, in one process and one run. A generated workload is cut, in order, into arrays of
//! `batch` commands; `clients` keep-alive connections take the next array as soon as their last
//! one is answered. The same lines are then applied with the `apply` pipeline to a second fresh
//! directory. Both go through the one writer, so the figures differ only by the transport.
//!
//! Arrays taken by different clients may be decided in another order than generated, so a
//! few commands that depend on an earlier one are rejected over HTTP where `apply` accepts
//! them; the report gives both counts.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use csp_ledger::app::{ServeOptions, Server};
use csp_ledger::auth::directory::api_key_sha256;
use csp_ledger::auth::{Authenticator, Directory, Principal};
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::pipeline::apply_lines;
use csp_ledger::writer::Ledger;
use csp_ledger_testkit::http::Connection;
use csp_ledger_testkit::workload::Generator;
use serde::Serialize;

/// How an accepted outcome line starts (`"command_id":"…",` comes before it).
const ACCEPTED: &[u8] = b"\"outcome\":\"accepted\"";

/// How the benchmark's clients authenticate (SPEC.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HttpAuth {
    /// `--insecure-no-auth`: no credentials.
    None,
    /// An API key in `Authorization: Bearer`, looked up by its SHA-256.
    ApiKey,
    /// An EdDSA JWT in `Authorization: Bearer`, checked against the test fixtures' JWKS
    /// (signature, `exp`, `aud`, claims) on every request.
    Jwt,
}

/// The JWT fixtures of the tests (`scripts/make-test-keys.sh`).
const JWT_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

/// An EdDSA token for an administrator, valid for an hour.
fn bench_token() -> anyhow::Result<String> {
    let pem = std::fs::read(format!("{JWT_FIXTURES}/ed25519.pem"))?;
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem)?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    let claims = serde_json::json!({
        "sub": "bench", "aud": csp_ledger::auth::jwt::DEFAULT_AUDIENCE,
        "exp": chrono::Utc::now().timestamp() + 3600,
        "csp_act_as": ["operator", "partner:*", "customer:*"], "csp_read": ["models", "personal"],
    });
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// The API key of the benchmark's administrator.
const BENCH_API_KEY: &str = "csp_bench_0123456789abcdef0123456789abcdef";

fn authenticator(auth: HttpAuth) -> anyhow::Result<Authenticator> {
    Ok(match auth {
        HttpAuth::None => Authenticator::insecure(),
        HttpAuth::ApiKey => {
            let mut directory = Directory::default();
            directory
                .insert(
                    Principal::administrator("bench".parse().map_err(anyhow::Error::msg)?),
                    Some(api_key_sha256(BENCH_API_KEY)),
                    None,
                )
                .map_err(anyhow::Error::msg)?;
            Authenticator::fixed(directory, None)
        }
        HttpAuth::Jwt => {
            let jwks = std::path::PathBuf::from(format!("{JWT_FIXTURES}/jwks.json"));
            let verifier = csp_ledger::auth::jwt::JwtVerifier::from_jwks_file(
                &jwks,
                csp_ledger::auth::jwt::DEFAULT_AUDIENCE,
            )?;
            Authenticator::fixed(Directory::default(), Some(verifier))
        }
    })
}

/// What `bench-http` measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    pub auth: HttpAuth,
    pub commands: usize,
    pub clients: usize,
    pub batch: usize,
    pub fsync: bool,
    pub http_seconds: f64,
    pub http_commands_per_second: f64,
    pub http_accepted: usize,
    pub apply_seconds: f64,
    pub apply_commands_per_second: f64,
    pub apply_accepted: u64,
    /// HTTP throughput over apply throughput.
    pub http_over_apply: f64,
}

/// Runs both phases in fresh directories under `dir`.
pub fn run(
    dir: &Path,
    commands: usize,
    clients: usize,
    batch: usize,
    seed: u64,
    options: LogOptions,
    auth: HttpAuth,
) -> anyhow::Result<HttpBenchReport> {
    let lines: Vec<String> = Generator::new(seed)
        .take(commands)
        .map(|e| e.to_json())
        .collect();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(batch.max(1))
        .map(|chunk| format!("[{}]", chunk.join(",")).into_bytes())
        .collect();

    let ledger = Ledger::open(&dir.join("http"), options)?;
    let (server, addr) = Server::bind(
        ledger,
        "127.0.0.1:0",
        ServeOptions::new(Arc::new(authenticator(auth)?)),
    )?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        server.run_until(async {
            let _ = stop_rx.await;
        })
    });
    let bearer = Arc::new(match auth {
        HttpAuth::None => String::new(),
        HttpAuth::ApiKey => format!("Bearer {BENCH_API_KEY}"),
        HttpAuth::Jwt => format!("Bearer {}", bench_token()?),
    });
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (bodies, next, bearer) =
                (Arc::clone(&bodies), Arc::clone(&next), Arc::clone(&bearer));
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut connection = Connection::open(addr)?;
                let mut headers = vec![("content-type", "application/json")];
                if auth != HttpAuth::None {
                    headers.push(("authorization", bearer.as_str()));
                }
                let mut accepted = 0;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else {
                        return Ok(accepted);
                    };
                    let response = connection.request("POST", "/v1/commands", &headers, body)?;
                    anyhow::ensure!(response.status == 200, "status {}", response.status);
                    // Counted without parsing, so that the clients (on the same cores) cost the
                    // server as little as possible.
                    accepted += response
                        .body
                        .windows(ACCEPTED.len())
                        .filter(|w| *w == ACCEPTED)
                        .count();
                }
            })
        })
        .collect();
    let mut http_accepted = 0;
    for worker in workers {
        http_accepted += worker
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let http_seconds = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    serving
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;

    let mut input = Vec::with_capacity(commands * 450);
    for line in &lines {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    let ledger = Ledger::open(&dir.join("apply"), options)?;
    let (stats, _ledger) = apply_lines(ledger, Cursor::new(input), &mut std::io::sink())?;
    let http_rate = commands as f64 / http_seconds;
    let apply_rate = stats.commands as f64 / stats.seconds;
    Ok(HttpBenchReport {
        auth,
        commands,
        clients,
        batch,
        fsync: options.fsync,
        http_seconds,
        http_commands_per_second: http_rate,
        http_accepted,
        apply_seconds: stats.seconds,
        apply_commands_per_second: apply_rate,
        apply_accepted: stats.accepted,
        http_over_apply: http_rate / apply_rate,
    })
}
