//! HTTPS for `serve --tls-cert/--tls-key` (SPEC.md section 10): the server answers over TLS to a
//! client that trusts its certificate, gives no HTTP answer in clear, and refuses to start with
//! TLS files it cannot serve. The certificate is tests/fixtures/tls (scripts/make-test-keys.sh):
//! self-signed for localhost and 127.0.0.1.

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csp_ledger::api::tls::{server_config, TlsError, TlsFiles};
use csp_ledger::app::{ServeOptions, Server, ServerError};
use csp_ledger::auth::{Authenticator, Directory};
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::Ledger;
use csp_ledger_testkit::http::{read_response, write_request, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn files(cert: &str, key: &str) -> TlsFiles {
    TlsFiles {
        cert: fixture(cert),
        key: fixture(key),
    }
}

/// A client that trusts only the fixture certificate.
fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTPS request (`Connection: close`) to `addr`, for the server name `host`.
fn https(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let connection =
        rustls::ClientConnection::new(client_config(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    let mut request = Vec::new();
    write_request(&mut request, host, "GET", path, &all, b"").map_err(|e| e.to_string())?;
    stream.write_all(&request).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, false)
        .map(|(response, _)| response)
        .map_err(|e| e.to_string())
}

fn options(auth: Authenticator, tls: TlsFiles) -> ServeOptions {
    let mut options = ServeOptions::new(Arc::new(auth));
    options.tls = Some(tls);
    options
}

#[test]
fn https_serves_health_and_authenticated_reads() {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let keys = tempfile::tempdir().unwrap();
    let (directory, key) = Directory::embedded(keys.path()).unwrap();
    let key = key.unwrap();
    let addr = support::start_server_with_options(
        dir.path(),
        options(
            Authenticator::fixed(directory, None),
            files("cert.pem", "key.pem"),
        ),
    );

    for host in ["localhost", "127.0.0.1"] {
        let health = https(addr, host, "/healthz", &[]).unwrap();
        assert_eq!(health.status, 200, "{}", health.text());
        assert!(health.text().contains("alive"), "{}", health.text());
    }

    let path = format!("/v1/partners/{}", support::DIST);
    let bearer = format!("Bearer {key}");
    let read = https(addr, "localhost", &path, &[("Authorization", &bearer)]).unwrap();
    assert_eq!(read.status, 200, "{}", read.text());
    assert!(read.text().contains(support::DIST), "{}", read.text());

    let anonymous = https(addr, "localhost", &path, &[]).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

#[test]
fn the_tls_port_gives_no_http_answer_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let addr = support::start_server_with_options(
        dir.path(),
        options(Authenticator::insecure(), files("cert.pem", "key.pem")),
    );
    let answer = csp_ledger_testkit::http::Connection::open_timeout(
        addr,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap()
    .get("/healthz");
    assert!(answer.is_err(), "a plain-HTTP answer: {answer:?}");

    // A client that does not trust the certificate is refused by its own TLS stack, and the
    // server name must be one of the certificate's.
    let wrong_name = https(addr, "ledger.example", "/healthz", &[]);
    assert!(wrong_name.is_err(), "{wrong_name:?}");
    // The server still serves after those.
    assert_eq!(
        https(addr, "localhost", "/healthz", &[]).unwrap().status,
        200
    );
}

#[test]
fn tls_files_that_cannot_be_served_are_refused_with_a_reason() {
    let missing = server_config(&files("absent.pem", "key.pem")).unwrap_err();
    assert!(matches!(missing, TlsError::Read { .. }), "{missing}");
    assert!(missing.to_string().contains("absent.pem"), "{missing}");

    let no_cert = server_config(&files("key.pem", "key.pem")).unwrap_err();
    assert!(
        matches!(no_cert, TlsError::NoCertificate { .. }),
        "{no_cert}"
    );

    let no_key = server_config(&files("cert.pem", "cert.pem")).unwrap_err();
    assert!(matches!(no_key, TlsError::NoPrivateKey { .. }), "{no_key}");

    let mismatch = server_config(&files("cert.pem", "other-key.pem")).unwrap_err();
    assert!(
        matches!(mismatch, TlsError::KeyMismatch { .. }),
        "{mismatch}"
    );
    let key_pem = std::fs::read_to_string(fixture("other-key.pem")).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!mismatch.to_string().contains(key_body));

    assert!(server_config(&files("cert.pem", "key.pem")).is_ok());

    // At bind time, before the server listens.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LogOptions { fsync: false }).unwrap();
    let bound = Server::bind(
        ledger,
        "127.0.0.1:0",
        options(
            Authenticator::insecure(),
            files("cert.pem", "other-key.pem"),
        ),
    );
    assert!(matches!(
        bound,
        Err(ServerError::Tls(TlsError::KeyMismatch { .. }))
    ));
}

/// Runs `csp-ledger serve` with `args`; its exit status and stderr, or None when it was still
/// running after 30 seconds (then it is killed).
fn serve_exits(data: &Path, args: &[&str]) -> Option<(bool, String)> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--http", "127.0.0.1:0", "--insecure-no-auth"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return Some((status.success(), stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn the_binary_takes_both_flags_or_neither_and_checks_the_files() {
    let data = tempfile::tempdir().unwrap();
    let cert = fixture("cert.pem");
    let other = fixture("other-key.pem");
    let (cert, other) = (cert.to_str().unwrap(), other.to_str().unwrap());

    let (ok, stderr) = serve_exits(data.path(), &["--tls-cert", cert]).expect("still running");
    assert!(!ok);
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let (ok, stderr) =
        serve_exits(data.path(), &["--tls-cert", cert, "--tls-key", other]).expect("still running");
    assert!(!ok);
    assert!(stderr.contains("does not belong"), "{stderr}");
}

#[test]
fn a_tls_server_stops_on_shutdown_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let ledger = Ledger::open(dir.path(), LogOptions { fsync: false }).unwrap();
    let (server, addr) = Server::bind(
        ledger,
        "127.0.0.1:0",
        options(Authenticator::insecure(), files("cert.pem", "key.pem")),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = std::thread::spawn(move || {
        server.run_until(async move {
            let _ = stopped.await;
        })
    });
    assert_eq!(
        https(addr, "localhost", "/healthz", &[]).unwrap().status,
        200
    );
    stop.send(()).unwrap();
    running.join().unwrap().unwrap();
    // The writer stopped and released the log: it opens again.
    assert!(Ledger::open(dir.path(), LogOptions { fsync: false }).is_ok());
    assert!(
        TcpStream::connect(addr).is_err() || https(addr, "localhost", "/healthz", &[]).is_err()
    );
}
