//! SPEC.md section 10 over HTTP: principals from a file, API keys, 401/403/415, personal data
//! only for the `personal` grant, actor binding (`actor_not_permitted`) and the attacks of
//! issue 9 by an authenticated caller who claims someone else's actor.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use csp_ledger::auth::directory::api_key_sha256;
use csp_ledger::auth::Authenticator;
use csp_ledger_schemas::command::Actor;
use csp_ledger_testkit::http::request_once;
use csp_ledger_testkit::Kit;
use serde_json::Value;
use uuid::Uuid;

const OPERATOR_KEY: &str = "operator-desk-key-0123456789abcdef";
const PORTAL_KEY: &str = "partner-portal-key-0123456789abcdef";
const READER_KEY: &str = "downstream-reader-key-0123456789ab";
const AUDITOR_KEY: &str = "audit-team-key-0123456789abcdef012";
const NOBODY_KEY: &str = "health-probe-key-0123456789abcdef0";
const CUSTOMER_KEY: &str = "contoso-tenant-key-0123456789abcdef";

/// The customer the `contoso-tenant` principal may act for.
fn own_customer() -> Uuid {
    Uuid::from_u128(0xc0_5705_0000_4000_8000_0000_0000_0001)
}

/// A principal scoped to one partner, whose key is built per test.
fn scoped_key(partner: Uuid) -> String {
    format!("scoped-{partner}")
}

fn principals_file(dir: &Path, own_partner: Uuid) -> std::path::PathBuf {
    let entry = |id: &str, key: &str, act_as: &str, read: &str| {
        format!(
            "[[principal]]\nid = \"{id}\"\napi_key_sha256 = \"{}\"\nact_as = [{act_as}]\nread = [{read}]\n\n",
            hex::encode(api_key_sha256(key))
        )
    };
    let text = [
        entry(
            "operator-desk",
            OPERATOR_KEY,
            r#""operator""#,
            r#""models""#,
        ),
        entry(
            "partner-portal",
            PORTAL_KEY,
            r#""partner:*", "customer:*""#,
            r#""models""#,
        ),
        entry("downstream", READER_KEY, "", r#""models""#),
        entry("audit-team", AUDITOR_KEY, "", r#""models", "personal""#),
        entry("health-probe", NOBODY_KEY, "", ""),
        entry(
            "contoso-tenant",
            CUSTOMER_KEY,
            &format!("\"customer:{}\"", own_customer()),
            r#""models""#,
        ),
        entry(
            "litware-admin",
            &scoped_key(own_partner),
            &format!("\"partner:{own_partner}\""),
            r#""models""#,
        ),
    ]
    .concat();
    let path = dir.join("principals.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let response = request_once(addr, method, path, headers, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let body = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", response.text()));
    Answer {
        status: response.status,
        headers: response.headers,
        body,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn get_as(addr: SocketAddr, key: &str, path: &str) -> Answer {
    call(addr, "GET", path, &[("Authorization", &bearer(key))], "")
}

fn post_as(addr: SocketAddr, key: &str, body: &str) -> Answer {
    call(
        addr,
        "POST",
        "/v1/commands",
        &[
            ("Authorization", &bearer(key)),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// A served ledger holding one onboarded partner (posted by the portal) and its id.
fn served(dir: &Path) -> (SocketAddr, Uuid, Kit) {
    let mut kit = Kit::new();
    let partner = kit.id();
    let file = principals_file(dir, partner);
    let auth = Authenticator::from_file(file, None).unwrap();
    let addr = support::start_server_with(&dir.join("data"), auth);
    let enroll = kit.enroll(partner, "DE", "contact@litware.example");
    let answer = post_as(addr, PORTAL_KEY, &enroll.to_json());
    assert_eq!(answer.body["outcome"], "accepted", "{}", answer.body);
    (addr, partner, kit)
}

#[test]
fn every_non_public_path_needs_credentials_and_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, partner, _) = served(dir.path());
    let path = format!("/v1/partners/{partner}");
    let cases: [(&str, Option<String>); 5] = [
        ("missing", None),
        ("unknown key", Some(bearer("not-a-key-anyone-has"))),
        ("other scheme", Some(format!("Basic {PORTAL_KEY}"))),
        ("no token", Some("Bearer ".into())),
        ("no scheme", Some(PORTAL_KEY.into())),
    ];
    for (case, header) in cases {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        for (method, target) in [
            ("GET", path.as_str()),
            ("POST", "/v1/commands"),
            ("GET", "/v1/audit/verify"),
        ] {
            let answer = call(addr, method, target, &headers, "");
            assert_eq!(answer.status, 401, "{case}: {method} {target}");
            assert_eq!(answer.code(), "unauthenticated", "{case}");
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
            assert!(!answer.body.to_string().contains(PORTAL_KEY), "{case}");
        }
    }
    assert_eq!(get_as(addr, READER_KEY, &path).status, 200);
}

#[test]
fn public_paths_answer_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = served(dir.path());
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(call(addr, "GET", path, &[], "").status, 200, "{path}");
    }
    let metrics = request_once(addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(metrics.status, 200);
}

#[test]
fn a_principal_without_the_grant_a_path_needs_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, partner, mut kit) = served(dir.path());
    for path in [
        format!("/v1/partners/{partner}"),
        "/v1/events?from=1".to_string(),
        "/v1/audit/verify".to_string(),
    ] {
        let answer = get_as(addr, NOBODY_KEY, &path);
        assert_eq!(answer.status, 403, "{path}");
        assert_eq!(answer.code(), "forbidden");
        assert_eq!(answer.body["details"]["principal"], "health-probe");
    }
    // A reader that may claim no actor may not post commands at all.
    let other = kit.id();
    let enroll = kit.enroll(other, "FR", "ops@other.example").to_json();
    let answer = post_as(addr, READER_KEY, &enroll);
    assert_eq!(answer.status, 403);
    assert_eq!(answer.code(), "forbidden");
    let answer = get_as(addr, READER_KEY, &format!("/v1/partners/{other}"));
    assert_eq!(answer.status, 404, "nothing was recorded: {}", answer.body);
}

#[test]
fn commands_must_be_posted_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _, mut kit) = served(dir.path());
    let other = kit.id();
    let enroll = kit.enroll(other, "FR", "ops@other.example").to_json();
    let auth = bearer(PORTAL_KEY);
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        None,
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(value) = content_type {
            headers.push(("Content-Type", value));
        }
        let answer = call(addr, "POST", "/v1/commands", &headers, &enroll);
        assert_eq!(answer.status, 415, "{content_type:?}");
        assert_eq!(answer.code(), "unsupported_media_type");
    }
    let answer = get_as(addr, READER_KEY, &format!("/v1/partners/{other}"));
    assert_eq!(answer.status, 404, "a refused post records nothing");
    let answer = call(
        addr,
        "POST",
        "/v1/commands",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        &enroll,
    );
    assert_eq!(answer.body["outcome"], "accepted", "{}", answer.body);
}

fn personal_data_of(events: &Value) -> Vec<Value> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("personal_data").cloned())
        .collect()
}

#[test]
fn clear_personal_data_only_for_the_personal_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, partner, mut kit) = served(dir.path());
    let email = "contact@litware.example";
    let stream = format!("/v1/streams/partner-{partner}/events");
    for path in ["/v1/events?from=1", stream.as_str()] {
        let models = get_as(addr, READER_KEY, path);
        assert_eq!(models.status, 200);
        assert!(
            personal_data_of(&models.body["items"]).is_empty(),
            "{}",
            models.body
        );
        assert!(!models.body.to_string().contains(email));
        let audit = get_as(addr, AUDITOR_KEY, path);
        assert_eq!(
            personal_data_of(&audit.body["items"]).len(),
            1,
            "{}",
            audit.body
        );
        assert!(audit.body.to_string().contains(email));
    }
    // Outcomes returned to a principal without the grant: commitments only, duplicates too.
    let other = kit.id();
    let enroll = kit
        .enroll(other, "FR", "secret-contact@other.example")
        .to_json();
    for round in ["first", "duplicate"] {
        let answer = post_as(addr, PORTAL_KEY, &enroll);
        assert_eq!(answer.status, 200, "{round}");
        assert!(
            !answer
                .body
                .to_string()
                .contains("secret-contact@other.example"),
            "{round}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["events"].as_array().map(Vec::len),
            Some(1),
            "{round}"
        );
    }
}

#[test]
fn a_principal_cannot_claim_an_actor_it_was_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, litware, mut kit) = served(dir.path());
    let scoped = scoped_key(litware);
    // The operator onboards a second partner and a relationship exists to attack.
    let fabrikam = kit.id();
    let mut setup = vec![kit.enroll(fabrikam, "DE", "ops@fabrikam.example")];
    setup.push(kit.verify(fabrikam));
    setup.push(kit.associate_mpn(fabrikam, "4444", "DE"));
    for command in &setup {
        let key = if command.actor == Actor::operator() {
            OPERATOR_KEY
        } else {
            PORTAL_KEY
        };
        let answer = post_as(addr, key, &command.to_json());
        assert_eq!(answer.body["outcome"], "accepted", "{}", answer.body);
    }
    // Issue 9's attacks, now by an authenticated principal scoped to litware.
    let mut verify_self = kit.verify(litware);
    let mut revenue = kit.record_revenue(
        litware,
        "2026-01",
        csp_ledger_schemas::command::RevenueCategory::Cloud,
        "999999999999.00",
    );
    let mut authorize = kit.authorize_provider(litware);
    let mut steal_mpn = kit.associate_mpn(fabrikam, "9999", "DE");
    let mut end = kit.end_relationship(fabrikam, litware);
    for command in [
        &mut verify_self,
        &mut revenue,
        &mut authorize,
        &mut steal_mpn,
        &mut end,
    ] {
        let answer = post_as(addr, &scoped, &command.to_json());
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["outcome"], "rejected", "{}", answer.body);
        assert_eq!(
            answer.body["rejection"]["code"], "actor_not_permitted",
            "{}",
            answer.body
        );
        assert_eq!(
            answer.body["rejection"]["details"]["principal"],
            "litware-admin"
        );
    }
    // Its own actor is fine.
    let own_mpn = kit.associate_mpn(litware, "5555", "DE");
    assert_eq!(
        post_as(addr, &scoped, &own_mpn.to_json()).body["outcome"],
        "accepted"
    );
    // Nothing of the attacks reached the log: fabrikam keeps its MPN ID, litware is unverified.
    let fab = get_as(addr, READER_KEY, &format!("/v1/partners/{fabrikam}"));
    assert_eq!(fab.body["mpn"]["mpn_id"], "4444", "{}", fab.body);
    let lit = get_as(addr, READER_KEY, &format!("/v1/partners/{litware}"));
    assert_eq!(
        lit.body["verification"]["status"], "pending",
        "{}",
        lit.body
    );
    // The attempt is recorded: the same command id, later sent by the operator, is a duplicate
    // of the recorded actor_not_permitted rejection.
    let answer = post_as(addr, OPERATOR_KEY, &verify_self.to_json());
    assert_eq!(answer.body["outcome"], "duplicate", "{}", answer.body);
    assert_eq!(answer.body["rejection"]["code"], "actor_not_permitted");
    // A replay of someone else's accepted command by a principal who may not claim its actor
    // is refused too, not answered as a duplicate.
    let answer = post_as(addr, &scoped, &setup[0].to_json());
    assert_eq!(
        answer.body["rejection"]["code"], "actor_not_permitted",
        "{}",
        answer.body
    );
    // ... and records nothing under that id: its outcome stays the accepted one.
    let answer = post_as(addr, PORTAL_KEY, &setup[0].to_json());
    assert_eq!(answer.body["outcome"], "duplicate", "{}", answer.body);
    assert!(answer.body["rejection"].is_null(), "{}", answer.body);
    assert_eq!(answer.body["events"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_log_says_who_submitted_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = served(dir.path());
    let events = get_as(addr, AUDITOR_KEY, "/v1/events?from=1");
    let first = &events.body["items"][0];
    assert_eq!(first["schema_version"], 2, "{first}");
    assert_eq!(first["submitted_by"], "partner-portal", "{first}");
}

#[test]
fn a_customer_scoped_principal_acts_for_its_own_customer_only() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, litware, mut kit) = served(dir.path());
    let other = kit.id();
    for customer in [own_customer(), other] {
        let register = kit.register_customer(litware, customer, "DE", None);
        assert_eq!(
            post_as(addr, PORTAL_KEY, &register.to_json()).body["outcome"],
            "accepted"
        );
    }
    let own = kit.accept_customer_agreement(own_customer());
    assert_eq!(
        post_as(addr, CUSTOMER_KEY, &own.to_json()).body["outcome"],
        "accepted"
    );
    let foreign = kit.accept_customer_agreement(other);
    let answer = post_as(addr, CUSTOMER_KEY, &foreign.to_json());
    assert_eq!(
        answer.body["rejection"]["code"], "actor_not_permitted",
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["rejection"]["details"]["principal"],
        "contoso-tenant"
    );
    let customer = get_as(addr, READER_KEY, &format!("/v1/customers/{other}"));
    assert_eq!(customer.body["mca_accepted"], false, "{}", customer.body);
    // A partner claim is not a customer claim, nor the other way round.
    let newcomer = kit.id();
    let enroll = kit.enroll(newcomer, "DE", "ops@x.example");
    let answer = post_as(addr, CUSTOMER_KEY, &enroll.to_json());
    assert_eq!(answer.body["rejection"]["code"], "actor_not_permitted");
    let answer = post_as(addr, PORTAL_KEY, &kit.verify(litware).to_json());
    assert_eq!(
        answer.body["rejection"]["code"], "actor_not_permitted",
        "partner:* is not operator"
    );
}

#[test]
fn the_api_document_states_who_may_call_what() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = served(dir.path());
    let document = call(addr, "GET", "/openapi.json", &[], "").body;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        document["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([])
    );
    let post = &document["paths"]["/v1/commands"]["post"]["responses"];
    for status in ["401", "403", "415"] {
        assert!(
            post.get(status).is_some(),
            "POST /v1/commands documents {status}"
        );
    }
    assert!(document["paths"]["/v1/events"]["get"]["responses"]
        .get("401")
        .is_some());
}

#[test]
fn a_reader_cannot_inject_into_or_grow_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, partner, _) = served(dir.path());
    for i in 0..50 {
        get_as(addr, READER_KEY, &format!("/v1/junk{i}"));
        get_as(addr, READER_KEY, &format!("/v1/customers/{:032x}", i));
    }
    get_as(addr, READER_KEY, &format!("/v1/partners/{partner}"));
    let raw = request_once(
        addr,
        "GET",
        "/v1/a\"}_injected_total{x=\"1",
        &[("Authorization", &bearer(READER_KEY))],
        b"",
    )
    .unwrap();
    assert_ne!(raw.status, 200);
    let metrics = request_once(addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    assert!(!metrics.contains("_injected_total"), "{metrics}");
    assert!(!metrics.contains("junk") && !metrics.contains(&format!("{:032x}", 7)));
    let routes: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.split("route=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(routes.contains("/v1/partners/{id}"), "{routes:?}");
    assert!(routes.contains("unmatched"), "{routes:?}");
    // 50 junk paths and the injection attempt; 50 ids in the dashless form (400 invalid_id:
    // ids are hyphenated UUIDs, issue 11 item 7) are one series.
    assert!(
        metrics.contains(r#"csp_ledger_query_seconds_count{route="unmatched",code="404"} 51"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"csp_ledger_query_seconds_count{route="/v1/customers/{id}",code="400"} 50"#
        ),
        "{metrics}"
    );
    assert!(
        routes.len() <= csp_ledger::api::query::READ_ROUTES.len() + 1,
        "{routes:?}"
    );
}

#[test]
fn a_public_prefix_without_a_route_is_not_found_and_leads_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = served(dir.path());
    for path in [
        "/v1/audit/proof/../events",
        "/v1/audit/proof/%2e%2e/events",
        "/v1/audit/proof/x",
    ] {
        let answer = call(addr, "GET", path, &[], "");
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.code(), "route_not_found");
    }
}
