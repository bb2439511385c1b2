//! Issue 11 item 7: the OpenAPI document is as precise as the server. Every parameter's
//! documented schema accepts exactly the values the server accepts (checked on a corpus per
//! parameter with a JSON Schema validator), every answer the server gives is documented for
//! its operation (status, `Error` body and code, headers), parameters are checked before the
//! `min_position` wait, and an `as_of` beyond the head is "not yet" rather than malformed.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use csp_ledger::auth::directory::api_key_sha256;
use csp_ledger::auth::Authenticator;
use csp_ledger::intake::COMMANDS_PER_REQUEST_MAX;
use csp_ledger_testkit::http::request_once;
use serde_json::{json, Value};
use support::{CUST1, DIST, FAB, TAIL};

const ADMIN_KEY: &str = "conformance-admin-key-0123456789abcdef";
const READER_KEY: &str = "conformance-reader-key-0123456789abcd";
const NOBODY_KEY: &str = "conformance-nobody-key-0123456789abcd";

/// Read routes that can answer 404 (an unknown id or stream).
const NOT_FOUND_ROUTES: &[&str] = &[
    "/v1/partners/{id}",
    "/v1/partners/{id}/eligibility",
    "/v1/partners/{id}/direct-bill-readiness",
    "/v1/providers/{id}/resellers",
    "/v1/resellers/{id}/providers",
    "/v1/relationships/{provider_id}/{reseller_id}",
    "/v1/customers/{id}",
    "/v1/customers/{id}/order-eligibility",
    "/v1/streams/{stream}/events",
];

/// Read routes that are never expensive (SPEC.md section 11): they read at most `limit`
/// events, whatever `as_of` says. Every other read route can answer 429 `busy`.
const NEVER_EXPENSIVE_ROUTES: &[&str] = &["/v1/streams/{stream}/events", "/v1/events"];

struct Served {
    addr: SocketAddr,
    document: Value,
}

/// The served log's head now (a test of this file posts commands).
fn head() -> u64 {
    call(served().addr, "GET", "/readyz", None, &[], "").json()["position"]
        .as_u64()
        .unwrap()
}

/// One server for the whole file: the fixture log, principals with and without grants.
fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        support::build_fixture(dir.path());
        let file = principals(dir.path());
        let auth = Authenticator::from_file(file, None).unwrap();
        let addr = support::start_server_with(dir.path(), auth);
        let document = call(addr, "GET", "/openapi.json", None, &[], "").json();
        Served { addr, document }
    })
}

fn principals(dir: &Path) -> std::path::PathBuf {
    let entry = |id: &str, key: &str, act_as: &str, read: &str| {
        format!(
            "[[principal]]\nid = \"{id}\"\napi_key_sha256 = \"{}\"\nact_as = [{act_as}]\nread = [{read}]\n\n",
            hex::encode(api_key_sha256(key))
        )
    };
    let text = [
        entry(
            "conformance-admin",
            ADMIN_KEY,
            r#""operator", "partner:*", "customer:*""#,
            r#""models", "personal""#,
        ),
        entry("conformance-reader", READER_KEY, "", r#""models""#),
        entry("conformance-nobody", NOBODY_KEY, "", ""),
    ]
    .concat();
    let path = dir.join("principals.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    elapsed: Duration,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(bearer) = &bearer {
        all.push(("Authorization", bearer));
    }
    let started = Instant::now();
    let response = request_once(addr, method, path, &all, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Answer {
        status: response.status,
        headers: response.headers.clone(),
        body: response.text(),
        elapsed: started.elapsed(),
    }
}

fn get(path: &str) -> Answer {
    call(served().addr, "GET", path, Some(ADMIN_KEY), &[], "")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON Schema validator of `schema`, its `$ref`s resolved in the document, formats checked.
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = served().document["components"].clone();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{schema}: {e}"))
}

fn operation<'a>(document: &'a Value, template: &str, method: &str) -> &'a Value {
    let operation = &document["paths"][template][method];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    operation
}

/// The documented schema of parameter `name` of `GET template`.
fn parameter_schema(template: &str, name: &str) -> Value {
    operation(&served().document, template, "get")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{template} documents no parameter {name}"))["schema"]
        .clone()
}

/// A query value as the document types it: an integer or boolean parameter's value is that
/// JSON value when the text is one, else the (invalid) string.
fn typed(schema: &Value, raw: &str) -> Value {
    match schema["type"].as_str() {
        Some("integer" | "boolean") => serde_json::from_str::<Value>(raw)
            .ok()
            .filter(|_| raw.trim() == raw)
            .filter(|v| v.is_number() || v.is_boolean())
            .unwrap_or_else(|| json!(raw)),
        _ => json!(raw),
    }
}

/// Checks that `answer` is documented for `method template`: its status, its body against the
/// status's schema (the `Error` schema and its codes for an error), its required headers.
fn assert_documented(template: &str, method: &str, what: &str, answer: &Answer) {
    let document = &served().document;
    let status = answer.status.to_string();
    if answer.status == 405 {
        assert!(
            document["paths"][template]["description"]
                .as_str()
                .is_some_and(|d| d.contains("405")),
            "{template} does not say it answers 405"
        );
        let schema = &document["components"]["responses"]["MethodNotAllowed"]["content"]
            ["application/json"]["schema"];
        assert!(
            validator(schema).is_valid(&answer.json()),
            "{what}: {}",
            answer.body
        );
        assert!(
            answer.header("allow").is_some(),
            "{what}: 405 without Allow"
        );
        return;
    }
    let response = &operation(document, template, method)["responses"][&status];
    assert!(
        response.is_object(),
        "{what}: {method} {template} answered {status}, which it does not document: {}",
        answer.body
    );
    if let Some(content) = response["content"].as_object() {
        let (media, body) = content.iter().next().unwrap();
        if media == "application/json" {
            let value = answer.json();
            let validator = validator(&body["schema"]);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{what}: {status} {}: {errors:?}",
                answer.body
            );
        }
    }
    if let Some(headers) = response["headers"].as_object() {
        for (name, header) in headers {
            if header["required"] == true {
                assert!(
                    answer.header(name).is_some(),
                    "{what}: {status} without its {name} header"
                );
            }
        }
    }
}

/// The read routes with a concrete path that answers 200, and the query parameters that
/// path needs.
fn read_routes() -> Vec<(&'static str, String)> {
    csp_ledger::api::query::READ_ROUTES
        .iter()
        .map(|route| {
            let path = route
                .template
                .replace(
                    "{id}",
                    if route.template.starts_with("/v1/customers") {
                        CUST1
                    } else {
                        DIST
                    },
                )
                .replace("{provider_id}", DIST)
                .replace("{reseller_id}", FAB)
                .replace("{stream}", &format!("partner-{TAIL}"));
            let query = if route.template.ends_with("order-eligibility") {
                format!("?partner={FAB}")
            } else {
                String::new()
            };
            (route.template, format!("{path}{query}"))
        })
        .collect()
}

fn with_param(path: &str, name: &str, raw: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{name}={}", encode(raw))
}

#[test]
fn every_operation_documents_every_status_it_can_answer() {
    let document = &served().document;
    let statuses = |template: &str, method: &str| -> Vec<String> {
        let mut statuses: Vec<String> = operation(document, template, method)["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        statuses.sort();
        statuses
    };
    let sorted = |codes: &[&str]| {
        let mut codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
        codes.sort();
        codes
    };
    for route in csp_ledger::api::query::READ_ROUTES {
        let mut expected = vec![
            "200", "400", "401", "403", "408", "414", "431", "500", "503",
        ];
        if NOT_FOUND_ROUTES.contains(&route.template) {
            expected.push("404");
        }
        if !NEVER_EXPENSIVE_ROUTES.contains(&route.template) {
            expected.push("429");
        }
        assert_eq!(
            statuses(route.template, "get"),
            sorted(&expected),
            "GET {}",
            route.template
        );
        let responses = &operation(document, route.template, "get")["responses"];
        assert_eq!(
            responses["200"]["headers"]["X-Ledger-Position"]["required"],
            true
        );
        if let Some(busy) = responses.get("429") {
            assert_eq!(busy["headers"]["Retry-After"]["required"], true);
        }
        assert_eq!(
            operation(document, route.template, "get").get("security"),
            None
        );
    }
    assert_eq!(
        statuses("/v1/commands", "post"),
        sorted(&[
            "200", "400", "401", "403", "408", "409", "413", "414", "415", "431", "500", "503"
        ])
    );
    for (path, extra) in [
        ("/healthz", &[][..]),
        ("/readyz", &["503"][..]),
        ("/metrics", &[][..]),
        ("/openapi.json", &[][..]),
        ("/v1/audit/checkpoint", &["400", "404", "500"][..]),
        ("/v1/audit/proof/inclusion", &["400", "500"][..]),
        ("/v1/audit/proof/consistency", &["400", "500"][..]),
    ] {
        let mut expected = vec!["200", "403", "408", "414", "431"];
        expected.extend(extra);
        assert_eq!(statuses(path, "get"), sorted(&expected), "GET {path}");
        assert_eq!(operation(document, path, "get")["security"], json!([]));
    }
    // Every error answer has the Error schema; 401 says how to authenticate.
    for (template, item) in document["paths"].as_object().unwrap() {
        assert!(
            item["description"].as_str().unwrap().contains("405"),
            "{template}"
        );
        for (method, operation) in item.as_object().unwrap() {
            if method == "description" {
                continue;
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let schema = &response["content"]["application/json"]["schema"];
                if status.starts_with('4') || (status.starts_with('5') && template != "/readyz") {
                    assert_eq!(
                        schema["allOf"][0]["$ref"], "#/components/schemas/Error",
                        "{method} {template} {status}"
                    );
                }
                if status == "401" {
                    assert_eq!(response["headers"]["WWW-Authenticate"]["required"], true);
                }
            }
        }
    }
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(document["security"], json!([{"bearer": []}]));
    assert_eq!(
        document["components"]["schemas"]["Error"]["required"],
        json!(["code", "message"])
    );
}

#[test]
fn every_answer_the_server_gives_is_documented() {
    let addr = served().addr;
    for (template, path) in read_routes() {
        let ok = get(&path);
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        assert_documented(template, "get", &path, &ok);

        // 400: a parameter every read takes, and one of the route's own.
        let bad = get(&with_param(&path, "as_of", "yesterday"));
        assert_eq!(bad.status, 400);
        assert_documented(template, "get", "as_of=yesterday", &bad);
        let own = match template {
            "/v1/partners/{id}/direct-bill-readiness" | "/v1/verifications/overdue" => {
                Some(with_param(&path, "date", "2026-1-1"))
            }
            "/v1/providers/{id}/resellers" | "/v1/resellers/{id}/providers" => {
                Some(with_param(&path, "cursor", "not-a-uuid"))
            }
            "/v1/streams/{stream}/events" => Some(with_param(&path, "cursor", "-1")),
            "/v1/events" => Some(with_param(&path, "from", "x")),
            "/v1/audit/verify" => Some(with_param(&path, "full", "yes")),
            "/v1/customers/{id}/order-eligibility" => {
                Some(format!("/v1/customers/{CUST1}/order-eligibility"))
            }
            _ => Some(
                path.replacen(DIST, "not-a-uuid", 1)
                    .replacen(CUST1, "not-a-uuid", 1),
            ),
        };
        if let Some(own) = own {
            let bad = get(&own);
            assert_eq!(bad.status, 400, "{own}: {}", bad.body);
            assert_documented(template, "get", &own, &bad);
        }

        // 401 without credentials, 403 without the read grant.
        let anonymous = call(addr, "GET", &path, None, &[], "");
        assert_eq!(anonymous.status, 401);
        assert_documented(template, "get", "no credentials", &anonymous);
        let nobody = call(addr, "GET", &path, Some(NOBODY_KEY), &[], "");
        assert_eq!(nobody.status, 403);
        assert_documented(template, "get", "no read grant", &nobody);

        // 404 for an unknown id where the route has one.
        if NOT_FOUND_ROUTES.contains(&template) {
            let unknown = "00000000-0000-4000-8000-00000000dead";
            let missing = path
                .replace(DIST, unknown)
                .replace(CUST1, unknown)
                .replace(TAIL, unknown);
            let answer = get(&missing);
            assert_eq!(answer.status, 404, "{missing}: {}", answer.body);
            assert_documented(template, "get", &missing, &answer);
        }

        // 503 for an as_of beyond the head, at once.
        let later = get(&with_param(&path, "as_of", &(head() + 1000).to_string()));
        assert_eq!(later.status, 503, "{path}: {}", later.body);
        assert_documented(template, "get", "as_of beyond the head", &later);

        // 405 for a method the path does not serve.
        let delete = call(addr, "DELETE", &path, Some(ADMIN_KEY), &[], "");
        assert_eq!(delete.status, 405);
        assert_documented(template, "delete", "DELETE", &delete);
    }

    // POST /v1/commands.
    let json = [("Content-Type", "application/json")];
    let post = |key: Option<&str>, headers: &[(&str, &str)], body: &str| {
        call(addr, "POST", "/v1/commands", key, headers, body)
    };
    let enroll = r#"{"command_id":"00000000-0000-4000-8000-0000009a0001","type":"EnrollPartner","issued_at":"2026-03-10T09:00:00Z","actor":{"kind":"partner","id":"00000000-0000-4000-8000-0000000a0001","role":"global_admin"},"payload":{"partner_id":"00000000-0000-4000-8000-0000000a0001","legal_name":"Conformance GmbH","country":"DE","tenant_id":"00000000-0000-4000-8000-0000000a0002","primary_contact_email":"hello@conformance.example"}}"#;
    let too_many = format!("[{}]", vec!["{}"; COMMANDS_PER_REQUEST_MAX + 1].join(","));
    for (what, answer, status) in [
        ("a command", post(Some(ADMIN_KEY), &json, enroll), 200),
        (
            "an array",
            post(Some(ADMIN_KEY), &json, &format!("[{enroll}, null]")),
            200,
        ),
        ("a scalar", post(Some(ADMIN_KEY), &json, "5"), 200),
        ("not JSON", post(Some(ADMIN_KEY), &json, "{"), 400),
        ("an empty array", post(Some(ADMIN_KEY), &json, "[]"), 400),
        ("no credentials", post(None, &json, enroll), 401),
        ("no act_as", post(Some(READER_KEY), &json, enroll), 403),
        ("too many", post(Some(ADMIN_KEY), &json, &too_many), 413),
        (
            "text/plain",
            post(Some(ADMIN_KEY), &[("Content-Type", "text/plain")], enroll),
            415,
        ),
    ] {
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_documented("/v1/commands", "post", what, &answer);
    }
    let get_commands = call(addr, "GET", "/v1/commands", Some(ADMIN_KEY), &[], "");
    assert_eq!(get_commands.status, 405);
    assert_documented("/v1/commands", "get", "GET /v1/commands", &get_commands);

    // The public paths.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let answer = call(addr, "GET", path, None, &[], "");
        assert_eq!(answer.status, 200, "{path}");
        assert_documented(path, "get", path, &answer);
        let post = call(addr, "POST", path, None, &json, "{}");
        assert_eq!(post.status, 405, "POST {path}");
        assert_documented(path, "post", path, &post);
    }

    // 414 and 431, which every operation documents.
    let long = get(&format!(
        "/v1/partners/{DIST}?as_of={}",
        "1".repeat(9 * 1024)
    ));
    assert_eq!(long.status, 414);
    assert_documented("/v1/partners/{id}", "get", "a long target", &long);
    let many: Vec<(String, String)> = (0..70).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let crowded = call(addr, "GET", "/v1/events", Some(ADMIN_KEY), &many, "");
    assert_eq!(crowded.status, 431);
    assert_documented("/v1/events", "get", "many headers", &crowded);
}

/// `(route, parameter, value)`: the route's 200 path with that parameter set to the value.
fn corpus() -> Vec<(&'static str, &'static str, &'static str)> {
    let overdue = "/v1/verifications/overdue";
    let lists = "/v1/providers/{id}/resellers";
    let stream = "/v1/streams/{stream}/events";
    let events = "/v1/events";
    let mut cases = Vec::new();
    for value in [
        // as_of: a position (digits) or an RFC 3339 date-time.
        "0",
        "5",
        "007",
        "63",
        "64",
        "99999999999999999999999",
        "2026-06-01T00:10:00Z",
        "2026-06-01t00:10:00z",
        "2026-06-01T02:10:00.123456789+02:00",
        "2026-06-01T00:10:00-00:00",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00+23:59",
        "",
        " ",
        "+5",
        "-1",
        "5.0",
        "0x10",
        "yesterday",
        "2026-06-01",
        "2026-06-01T00:10:00",
        "2026-06-01 00:10:00Z",
        "2026-06-01T00:10:00+0200",
        "2026-6-01T00:10:00Z",
        "2026-06-01T24:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-06-01T00:10:00.Z",
        "2026-06-01T00:10Z",
        "12026-06-01T00:10:00Z",
    ] {
        cases.push((events, "as_of", value));
    }
    for value in ["0", "5", "", "-1", "1.5", "abc", "+1", " 1"] {
        cases.push((events, "min_position", value));
    }
    for value in [
        "1",
        "100",
        "1000",
        "0",
        "1001",
        "-1",
        "",
        "abc",
        "99999999999999999999",
    ] {
        cases.push((events, "limit", value));
        cases.push((lists, "limit", value));
    }
    for value in ["0", "1", "63", "99999999999999999999", "", "-1", "x", "+1"] {
        cases.push((events, "from", value));
        cases.push((events, "cursor", value));
        cases.push((stream, "cursor", value));
    }
    for value in [
        "00000000-0000-4000-8000-000000000102",
        "ABCDEF01-0000-4000-8000-00000000A102",
        "",
        "x",
        "{00000000-0000-4000-8000-000000000102}",
        "00000000000040008000000000000102",
        "urn:uuid:00000000-0000-4000-8000-000000000102",
        "00000000-0000-4000-8000-0000000001020",
    ] {
        cases.push((lists, "cursor", value));
        cases.push((overdue, "cursor", value));
        cases.push(("/v1/customers/{id}/order-eligibility", "partner", value));
    }
    for value in [
        "2026-06-01",
        "0000-01-01",
        "9999-12-31",
        "2024-02-29",
        "",
        "2026-1-1",
        "+2026-01-01",
        "2026-02-30",
        "2025-02-29",
        "20260601",
        "2026-06-01T00:00:00Z",
        "26-06-01",
    ] {
        cases.push((overdue, "date", value));
        cases.push(("/v1/partners/{id}/direct-bill-readiness", "date", value));
    }
    for value in ["true", "false", "", "1", "TRUE", "yes"] {
        cases.push(("/v1/audit/verify", "full", value));
    }
    cases
}

#[test]
fn every_documented_parameter_format_is_exactly_what_the_server_accepts() {
    let routes: std::collections::HashMap<_, _> = read_routes().into_iter().collect();
    for (template, name, raw) in corpus() {
        let schema = parameter_schema(template, name);
        let documented = validator(&schema).is_valid(&typed(&schema, raw));
        let base = &routes[template];
        // Replace the parameter if the route's path has it already (order-eligibility).
        let base = match base.split_once(&format!("{name}=")) {
            Some((before, _)) => before.trim_end_matches(['?', '&']).to_string(),
            None => base.clone(),
        };
        let answer = get(&with_param(&base, name, raw));
        assert_eq!(
            answer.status != 400,
            documented,
            "{template} {name}={raw:?}: the document says {}, the server answered {} {}",
            if documented { "valid" } else { "invalid" },
            answer.status,
            answer.body
        );
    }
    // Path parameters: ids and streams.
    for (raw, valid) in [
        ("00000000-0000-4000-8000-000000000101", true),
        ("00000000-0000-4000-8000-00000000DEAD", true),
        ("not-a-uuid", false),
        ("00000000000040008000000000000101", false),
        ("%7B00000000-0000-4000-8000-000000000101%7D", false),
    ] {
        let schema =
            &served().document["paths"]["/v1/partners/{id}"]["get"]["parameters"][0]["schema"];
        let decoded = raw.replace("%7B", "{").replace("%7D", "}");
        assert_eq!(validator(schema).is_valid(&json!(decoded)), valid, "{raw}");
        let answer = get(&format!("/v1/partners/{raw}"));
        assert_eq!(
            answer.status != 400,
            valid,
            "/v1/partners/{raw}: {}",
            answer.body
        );
    }
    let schema = parameter_schema("/v1/streams/{stream}/events", "stream");
    for (raw, valid) in [
        (format!("partner-{TAIL}"), true),
        (format!("customer-{CUST1}"), true),
        (format!("relationship-{DIST}-{FAB}"), true),
        (format!("partner-{}", TAIL.to_uppercase()), true),
        (format!("partner-{TAIL}x"), false),
        (format!("partner-{}", TAIL.replace('-', "")), false),
        (format!("relationship-{DIST}"), false),
        (format!("stream-{TAIL}"), false),
        ("partner-".to_string(), false),
    ] {
        assert_eq!(validator(&schema).is_valid(&json!(raw)), valid, "{raw}");
        let answer = get(&format!("/v1/streams/{raw}/events"));
        assert_eq!(answer.status != 400, valid, "{raw}: {}", answer.body);
    }
}

#[test]
fn a_malformed_parameter_is_400_at_once_even_with_min_position_beyond_the_head() {
    let later = (head() + 1000).to_string();
    for (template, path) in read_routes() {
        let waiting = with_param(&path, "min_position", &later);
        let documented = |name: &str| {
            operation(&served().document, template, "get")["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == name)
        };
        for (name, value) in [
            ("as_of", ""),
            ("limit", "0"),
            ("date", "2026-1-1"),
            ("full", "1"),
            ("cursor", "x"),
            ("from", "-1"),
        ] {
            if !documented(name) {
                continue;
            }
            let bad = with_param(&waiting, name, value);
            let answer = get(&bad);
            assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
            assert!(
                answer.elapsed < Duration::from_millis(700),
                "{bad}: answered after {:?}, after the wait",
                answer.elapsed
            );
            assert_documented(template, "get", &bad, &answer);
        }
        let bad_id = waiting
            .replacen(DIST, "not-a-uuid", 1)
            .replacen(CUST1, "not-a-uuid", 1);
        if bad_id != waiting {
            let answer = get(&bad_id);
            assert_eq!(answer.status, 400, "{bad_id}");
            assert!(answer.elapsed < Duration::from_millis(700), "{bad_id}");
        }
    }
    // An unknown route is 404 at once too; min_position itself malformed is 400.
    let answer = get(&format!("/v1/nothing?min_position={later}"));
    assert_eq!(
        (answer.status, answer.json()["code"].clone()),
        (404, json!("route_not_found"))
    );
    assert!(answer.elapsed < Duration::from_millis(700));
    let answer = get("/v1/events?min_position=-1");
    assert_eq!(answer.json()["code"], "invalid_min_position");
    // A valid request beyond the head waits, then is 503 with the position.
    let answer = get(&format!("/v1/events?min_position={later}"));
    assert_eq!(answer.status, 503);
    assert!(
        answer.elapsed >= Duration::from_millis(1400),
        "{:?}",
        answer.elapsed
    );
    assert!(answer.json()["position"].as_u64().unwrap() < later.parse().unwrap());
}

#[test]
fn as_of_empty_is_malformed_and_as_of_beyond_the_head_is_not_yet() {
    // A server of its own, whose head does not move.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let positions = support::build_fixture(dir.path());
    let head = positions.iter().flatten().copied().max().unwrap();
    let addr = support::start_server(dir.path());
    let get = |path: &str| call(addr, "GET", path, None, &[], "");
    let partner = format!("/v1/partners/{FAB}");
    let empty = get(&format!("{partner}?as_of="));
    assert_eq!(
        (empty.status, empty.json()["code"].clone()),
        (400, json!("invalid_as_of"))
    );
    // Without as_of: the head.
    assert_eq!(get(&partner).json()["position"], head);
    assert_eq!(
        get(&format!("{partner}?as_of={head}")).json()["position"],
        head
    );
    for beyond in [
        (head + 1).to_string(),
        "99999999999999999999999".to_string(),
    ] {
        let answer = get(&format!("{partner}?as_of={beyond}"));
        assert_eq!(answer.status, 503, "{beyond}");
        let body = answer.json();
        assert_eq!(body["code"], "not_yet_at_position");
        assert_eq!(body["position"], head);
        assert!(
            body["message"].as_str().unwrap().contains("as_of"),
            "{body}"
        );
        assert!(
            answer.elapsed < Duration::from_millis(700),
            "as_of does not wait"
        );
    }
    // The CLI answers the same (on a log of its own: the server holds this one's lock).
    let cli_dir = tempfile::tempdir().unwrap();
    support::build_fixture(cli_dir.path());
    let (ok, cli) = support::cli_query(cli_dir.path(), &format!("{partner}?as_of={}", head + 1));
    assert!(!ok);
    assert_eq!(
        (cli["code"].clone(), cli["status"].clone()),
        (json!("not_yet_at_position"), json!(503))
    );
}

#[test]
fn as_of_with_the_same_min_position_waits_for_a_write_then_answers_as_of_it() {
    // A server of its own: this test writes.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let positions = support::build_fixture(dir.path());
    let head = positions.iter().flatten().copied().max().unwrap();
    let addr = support::start_server(dir.path());
    let next = head + 1;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let enroll = r#"{"command_id":"00000000-0000-4000-8000-0000009b0001","type":"EnrollPartner","issued_at":"2026-03-10T09:00:00Z","actor":{"kind":"partner","id":"00000000-0000-4000-8000-0000000b0001","role":"global_admin"},"payload":{"partner_id":"00000000-0000-4000-8000-0000000b0001","legal_name":"Later GmbH","country":"DE","tenant_id":"00000000-0000-4000-8000-0000000b0002","primary_contact_email":"hello@later.example"}}"#;
        support::http(addr, "POST", "/v1/commands", Some(enroll))
    });
    let answer = support::get(
        addr,
        &format!(
            "/v1/partners/00000000-0000-4000-8000-0000000b0001?as_of={next}&min_position={next}"
        ),
    );
    assert_eq!(writer.join().unwrap().json()["outcome"], "accepted");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["position"], next);
}
