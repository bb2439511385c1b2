//! Refusals made below the handlers (routing, extractors, limits) answer the same JSON
//! `{"code","message"}` as every other error, and writes to read routes are refused with 405.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

/// Status, headers and JSON body of the answer to `request` (raw bytes, `Connection: close`).
fn send(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    // A refused request may be answered before all of it was written.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(&raw).unwrap() else {
        panic!("incomplete response: {}", String::from_utf8_lossy(&raw));
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let body: Value = serde_json::from_slice(&raw[head..]).unwrap_or_else(|e| {
        panic!(
            "status {:?}: body is not JSON ({e}): {:?}",
            response.code,
            String::from_utf8_lossy(&raw[head..])
        )
    });
    (response.code.unwrap(), headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn server() -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let addr = support::start_server(dir.path());
    std::mem::forget(dir);
    addr
}

#[test]
fn framework_refusals_answer_json_and_writes_on_read_routes_are_405() {
    let addr = server();
    let partner = format!("/v1/partners/{}", support::DIST);

    // DELETE and PUT on a read route: 405, not the read's 200.
    for method in ["DELETE", "PUT", "POST"] {
        let request = format!(
            "{method} {partner} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let (status, headers, body) = send(addr, request.as_bytes());
        assert_eq!(status, 405, "{method}: {body}");
        assert_eq!(body["code"], "method_not_allowed", "{method}");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    }
    // GET on the command route (refused by axum's router).
    let (status, _, body) = send(
        addr,
        b"GET /v1/commands HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert_eq!(body["code"], "method_not_allowed");
    assert!(body["message"].is_string());

    // A body over the limit (refused by the body extractor while it streams).
    let size = csp_ledger::api::http::COMMAND_BODY_BYTES_MAX + 1;
    let mut request = format!(
        "POST /v1/commands HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b' ', size));
    let (status, _, body) = send(addr, &request);
    assert_eq!(status, 413);
    assert_eq!(body["code"], "payload_too_large");

    // A request target over the limit.
    let long = format!(
        "{partner}?pad={}",
        "a".repeat(csp_ledger::api::http::URI_BYTES_MAX)
    );
    let request = format!("GET {long} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (status, _, body) = send(addr, request.as_bytes());
    assert_eq!(status, 414);
    assert_eq!(body["code"], "uri_too_long");

    // Too many headers.
    let mut request = format!("GET {partner} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..=csp_ledger::api::http::HEADERS_MAX {
        request.push_str(&format!("x-pad-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let (status, _, body) = send(addr, request.as_bytes());
    assert_eq!(status, 431);
    assert_eq!(body["code"], "headers_too_large");

    // A chunked body whose chunk size is not hexadecimal.
    let (status, _, body) = send(
        addr,
        b"POST /v1/commands HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_request");

    // A body that is not JSON at all.
    let (status, _, body) = send(
        addr,
        b"POST /v1/commands HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\nnot",
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_json");
}

/// SPEC.md section 11: an array of more than 4,096 commands is refused whole (413
/// `too_many_commands`, nothing decided); an element over 64 KiB is a `malformed_command`
/// outcome of its own while the others are decided.
#[test]
fn command_arrays_are_bounded_in_count_and_in_element_size() {
    let addr = server();
    let max = csp_ledger::intake::COMMANDS_PER_REQUEST_MAX;
    let array = |n: usize| format!("[{}]", vec!["{}"; n].join(","));
    let refused = support::http(addr, "POST", "/v1/commands", Some(&array(max + 1)));
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert_eq!(refused.json()["code"], "too_many_commands");
    let before = support::get(addr, "/v1/events?limit=1").json()["position"].clone();
    let answered = support::http(addr, "POST", "/v1/commands", Some(&array(max)));
    assert_eq!(answered.status, 200);
    assert_eq!(answered.json().as_array().map(Vec::len), Some(max));

    let huge = format!(
        r#"{{"command_id":"00000000-0000-4000-8000-00000000abcd","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let valid = r#"{"command_id":"00000000-0000-4000-8000-0000000000ee","type":"VerifyPartner","issued_at":"2026-06-01T00:00:00Z","actor":{"kind":"operator"},"payload":{"partner_id":"00000000-0000-4000-8000-000000000106","outcome":"approved"}}"#;
    let answer = support::http(
        addr,
        "POST",
        "/v1/commands",
        Some(&format!("[{huge},{valid}]")),
    );
    let outcomes = answer.json();
    assert_eq!(
        outcomes[0]["rejection"]["code"], "malformed_command",
        "{}",
        outcomes[0]
    );
    assert!(outcomes[0]["rejection"]["message"]
        .as_str()
        .unwrap()
        .contains("above the limit"));
    assert_eq!(outcomes[1]["outcome"], "accepted", "{}", outcomes[1]);
    let after = support::get(addr, "/v1/events?limit=1").json()["position"].clone();
    assert_eq!(
        after.as_u64(),
        before.as_u64().map(|p| p + 1),
        "only the valid element appended"
    );
}
