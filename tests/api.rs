//! Every read path of SPEC.md section 7 through HTTP (a real server on 127.0.0.1, port chosen
//! by the OS) and through `csp-ledger query`, on the example scenarios: the same JSON from
//! both, with the fields of the spec; plus errors, paging and the operations endpoints.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};
use support::*;

struct Fixture {
    addr: SocketAddr,
    cli_dir: PathBuf,
    positions: Vec<Vec<u64>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let served = root.join("served");
        let positions = build_fixture(&served);
        let cli_dir = root.join("cli");
        copy_dir(&served, &cli_dir);
        let addr = start_server(&served);
        Fixture {
            addr,
            cli_dir,
            positions,
        }
    })
}

/// GETs `path` over HTTP and through the CLI; asserts both succeed with the same JSON.
/// The answer without `verified_from`: where `/v1/audit/verify` started its walk, the one
/// field in which the server (which remembers the prefix it verified) and the CLI (which walks
/// from position 1) differ.
fn without_verified_from(answer: &Value) -> Value {
    let mut answer = answer.clone();
    if let Some(object) = answer.as_object_mut() {
        object.remove("verified_from");
    }
    answer
}

fn both(path: &str) -> Value {
    let fixture = fixture();
    let response = get(fixture.addr, path);
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    let http = response.json();
    assert!(
        response
            .headers
            .contains(&format!("x-ledger-position: {}", http["position"])),
        "{}",
        response.headers
    );
    let (ok, cli) = cli_query(&fixture.cli_dir, path);
    assert!(ok, "{path}: {cli}");
    assert_eq!(
        without_verified_from(&http),
        without_verified_from(&cli),
        "HTTP and CLI differ for {path}"
    );
    let head = fixture.positions.iter().flatten().max().copied().unwrap();
    assert_eq!(http["position"], head);
    assert_eq!(http["head_hash"].as_str().unwrap().len(), 64);
    http
}

fn has_fields(value: &Value, fields: &[&str]) {
    for field in fields {
        assert!(value.get(*field).is_some(), "missing {field} in {value}");
    }
}

#[test]
fn partner_profile() {
    let partner = both(&format!("/v1/partners/{TAIL}"));
    has_fields(
        &partner,
        &[
            "partner_id",
            "legal_name",
            "country",
            "region",
            "roles",
            "verification",
            "mpn",
            "mpa",
            "direct_bill",
            "version",
        ],
    );
    assert_eq!(partner["legal_name"], "Tailspin Consulting B.V.");
    assert_eq!(partner["region"], "europe");
    // Direct bill in onboarding, back to indirect reseller at the end of the lifecycle.
    assert_eq!(partner["roles"], json!(["indirect_reseller"]));
    assert_eq!(partner["mpn"]["mpn_id"], "5520987");
    assert_eq!(partner["verification"]["status"], "approved");
}

#[test]
fn partner_eligibility() {
    let eligibility = both(&format!("/v1/partners/{FAB}/eligibility"));
    assert_eq!(eligibility["partner_id"], FAB);
    assert_eq!(eligibility["can_transact"], true);
    assert_eq!(eligibility["unmet"], json!([]));
    let pending = both(&format!("/v1/partners/{PENDING}/eligibility"));
    assert_eq!(pending["can_transact"], false);
    assert_eq!(
        pending["unmet"],
        json!([
            "partner_not_verified",
            "mpn_not_associated",
            "mpa_not_signed"
        ])
    );
}

#[test]
fn direct_bill_readiness() {
    let readiness = both(&format!(
        "/v1/partners/{TAIL}/direct-bill-readiness?date=2026-02-15"
    ));
    has_fields(
        &readiness,
        &["ready", "unmet", "recommendations", "ttm_cloud_revenue_usd"],
    );
    assert_eq!(readiness["ready"], true);
    assert_eq!(readiness["ttm_cloud_revenue_usd"], "313750.00");
    assert_eq!(readiness["recommendations"], json!([]));
    // A year later the trailing window holds no revenue.
    let later = both(&format!(
        "/v1/partners/{TAIL}/direct-bill-readiness?date=2027-03-01"
    ));
    assert_eq!(later["ready"], false);
    assert_eq!(later["unmet"], json!(["revenue_below_threshold"]));
    let fab = both(&format!(
        "/v1/partners/{FAB}/direct-bill-readiness?date=2026-02-15"
    ));
    assert_eq!(
        fab["unmet"],
        json!([
            "support_plan_missing",
            "infrastructure_not_attested",
            "revenue_below_threshold"
        ])
    );
    assert_eq!(fab["recommendations"], json!(["managed_service_missing"]));
}

#[test]
fn providers_resellers_with_paging() {
    let page = both(&format!("/v1/providers/{DIST}/resellers"));
    let items = page["items"].as_array().unwrap();
    let status: Vec<(&str, &str)> = items
        .iter()
        .map(|r| {
            (
                r["reseller_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(status, [(FAB, "ended"), (TAIL, "active"), (LIT, "revoked")]);
    for row in items {
        has_fields(
            row,
            &[
                "provider_id",
                "reseller_id",
                "status",
                "admin_access",
                "since",
                "ended_at",
            ],
        );
    }
    assert!(items[0]["ended_at"].is_string());
    assert_eq!(page["next_cursor"], Value::Null);
    let first = both(&format!("/v1/providers/{DIST}/resellers?limit=2"));
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_cursor"], TAIL);
    let second = both(&format!(
        "/v1/providers/{DIST}/resellers?limit=2&cursor={TAIL}"
    ));
    assert_eq!(second["items"][0]["reseller_id"], LIT);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[test]
fn resellers_providers() {
    let page = both(&format!("/v1/resellers/{FAB}/providers"));
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["provider_id"], DIST);
    assert_eq!(page["items"][0]["status"], "ended");
    assert_eq!(page["items"][0]["admin_access"], false);
}

#[test]
fn relationship_eligibility() {
    let active = both(&format!("/v1/relationships/{DIST}/{TAIL}"));
    has_fields(
        &active,
        &["status", "admin_access", "can_transact", "unmet"],
    );
    assert_eq!(active["status"], "active");
    assert_eq!(active["admin_access"], true);
    assert_eq!(active["can_transact"], true);
    let ended = both(&format!("/v1/relationships/{DIST}/{FAB}"));
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["can_transact"], false);
    assert_eq!(ended["unmet"], json!(["relationship_not_active"]));
    let never = both(&format!("/v1/relationships/{DIST}/{PENDING}"));
    assert_eq!(never["status"], "none");
    assert_eq!(
        never["unmet"],
        json!([
            "relationship_not_active",
            "reseller.partner_not_verified",
            "reseller.mpn_not_associated",
            "reseller.mpa_not_signed"
        ])
    );
}

#[test]
fn customer_with_partners_and_mca() {
    let customer = both(&format!("/v1/customers/{CUST1}"));
    has_fields(
        &customer,
        &[
            "customer_id",
            "country",
            "region",
            "mca_accepted",
            "partners",
        ],
    );
    assert_eq!(customer["country"], "FR");
    assert_eq!(customer["region"], "europe");
    assert_eq!(customer["mca_accepted"], true);
    let partners: Vec<(&str, &str)> = customer["partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partner_id"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(partners, [(DIST, "active"), (FAB, "ended")]);
}

#[test]
fn order_eligibility() {
    let direct = both(&format!(
        "/v1/customers/{CUST2}/order-eligibility?partner={TAIL}"
    ));
    has_fields(&direct, &["can_order", "unmet"]);
    assert_eq!(direct["can_order"], true);
    // Fabrikam's customer relationship ended: the distributor shares no reseller with it now.
    let provider = both(&format!(
        "/v1/customers/{CUST1}/order-eligibility?partner={DIST}"
    ));
    assert_eq!(provider["can_order"], false);
    assert_eq!(provider["unmet"], json!(["no_shared_reseller"]));
    let ended = both(&format!(
        "/v1/customers/{CUST1}/order-eligibility?partner={FAB}"
    ));
    assert_eq!(ended["unmet"], json!(["customer_relationship_not_active"]));
}

#[test]
fn stream_events_with_paging() {
    let stream = format!("partner-{TAIL}");
    let all = both(&format!("/v1/streams/{stream}/events?limit=1000"));
    let items = all["items"].as_array().unwrap();
    assert!(items.len() > 20);
    for (i, event) in items.iter().enumerate() {
        assert_eq!(event["stream"], stream.as_str());
        assert_eq!(event["stream_version"], i as u64 + 1);
        has_fields(
            event,
            &[
                "event_id",
                "position",
                "type",
                "schema_version",
                "occurred_at",
                "recorded_at",
                "command_id",
                "correlation_id",
                "actor",
                "prev_hash",
                "hash",
                "data",
            ],
        );
    }
    assert_eq!(
        items[0]["personal_data"]["primary_contact_email"],
        "office@tailspin-consulting.example"
    );
    let first = both(&format!("/v1/streams/{stream}/events?limit=5"));
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = both(&format!(
        "/v1/streams/{stream}/events?limit=5&cursor={cursor}"
    ));
    assert_eq!(second["items"][0], items[5]);
}

#[test]
fn events_in_position_order() {
    let page = both("/v1/events?from=3&limit=4");
    let positions: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [3, 4, 5, 6]);
    assert_eq!(page["next_cursor"], "7");
    assert_eq!(page["items"][1]["prev_hash"], page["items"][0]["hash"]);
}

#[test]
fn audit_verify() {
    let report = both("/v1/audit/verify");
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], report["position"]);
    assert_eq!(report["first_bad_position"], Value::Null);
    let last = both(&format!("/v1/events?from={}&limit=1", report["position"]));
    assert_eq!(report["head_hash"], last["items"][0]["hash"]);
    let early = both_at("/v1/audit/verify?as_of=10");
    assert_eq!(early["ok"], true);
    assert_eq!(early["events"], 10);
    // Incremental: the prefix verified once is not walked again; full=true walks it all.
    let fixture = fixture();
    let again = get(fixture.addr, "/v1/audit/verify").json();
    assert_eq!(again["ok"], true);
    assert_eq!(again["head_hash"], report["head_hash"]);
    assert_eq!(
        again["verified_from"].as_u64(),
        report["position"].as_u64().map(|p| p + 1),
        "{again}"
    );
    let full = get(fixture.addr, "/v1/audit/verify?full=true").json();
    assert_eq!(full["verified_from"], 1, "{full}");
    assert_eq!(full["ok"], true);
    assert_eq!(full["head_hash"], report["head_hash"]);
    let (_, cli) = cli_query(&fixture.cli_dir, "/v1/audit/verify");
    assert_eq!(
        cli["verified_from"], 1,
        "the CLI always walks from position 1"
    );
    error("/v1/audit/verify?full=yes", 400, "invalid_full");
}

#[test]
fn overdue_verifications() {
    let page = both("/v1/verifications/overdue?date=2026-03-20");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["partner_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [PENDING]);
    assert_eq!(page["items"][0]["business_days_pending"], 8);
    let early = both("/v1/verifications/overdue?date=2026-03-13");
    assert_eq!(early["items"], json!([]));
}

fn error(path: &str, status: u16, code: &str) {
    let fixture = fixture();
    let response = get(fixture.addr, path);
    assert_eq!(response.status, status, "{path}: {}", response.body);
    assert_eq!(response.json()["code"], code);
    let (ok, cli) = cli_query(&fixture.cli_dir, path);
    assert!(!ok);
    assert_eq!(cli["code"], code);
    assert_eq!(cli["status"], status);
}

#[test]
fn errors_are_json_with_a_code() {
    error(
        "/v1/partners/00000000-0000-4000-8000-00000000dead",
        404,
        "partner_not_found",
    );
    error(
        "/v1/customers/00000000-0000-4000-8000-00000000dead",
        404,
        "customer_not_found",
    );
    error("/v1/partners/not-a-uuid", 400, "invalid_id");
    error(
        &format!("/v1/partners/{TAIL}?as_of=yesterday"),
        400,
        "invalid_as_of",
    );
    // A position beyond the head is valid but not there yet (issue 11 item 7).
    error(
        &format!("/v1/partners/{TAIL}?as_of=999999"),
        503,
        "not_yet_at_position",
    );
    error(&format!("/v1/partners/{TAIL}?as_of="), 400, "invalid_as_of");
    error("/v1/events?limit=5000", 400, "invalid_limit");
    error("/v1/nothing/here", 404, "route_not_found");
    error(
        &format!("/v1/streams/partner-{PENDING}x/events"),
        400,
        "invalid_stream",
    );
    error(
        &format!("/v1/customers/{CUST1}/order-eligibility"),
        400,
        "missing_partner",
    );
}

#[test]
fn as_of_partner_eligibility_before_and_after_the_mpa_by_position_and_time() {
    let fixture = fixture();
    // Line 12 of onboarding.jsonl: Fabrikam signs the MPA (commands are recorded one per minute).
    let signed_at = fixture.positions[11][0];
    let before = both_at(&format!(
        "/v1/partners/{FAB}/eligibility?as_of={}",
        signed_at - 1
    ));
    assert_eq!(before["can_transact"], false);
    assert_eq!(before["unmet"], json!(["mpa_not_signed"]));
    assert_eq!(before["position"], signed_at - 1);
    let after = both_at(&format!("/v1/partners/{FAB}/eligibility?as_of={signed_at}"));
    assert_eq!(after["can_transact"], true);
    let minute = |m: i64| {
        (base_time() + chrono::Duration::minutes(m))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let before = both_at(&format!(
        "/v1/partners/{FAB}/eligibility?as_of={}",
        minute(11)
    ));
    assert_eq!(before["unmet"], json!(["mpa_not_signed"]));
    let after = both_at(&format!(
        "/v1/partners/{FAB}/eligibility?as_of={}",
        minute(12)
    ));
    assert_eq!(after["can_transact"], true);
    // An encoded offset works too, and a time before the first event knows no partner.
    let offset = both_at(&format!(
        "/v1/partners/{FAB}/eligibility?as_of=2026-06-01T02:12:00%2B02:00"
    ));
    assert_eq!(offset["can_transact"], true);
    let response = get(
        fixture.addr,
        &format!("/v1/partners/{FAB}?as_of=2026-05-01T00:00:00Z"),
    );
    assert_eq!(response.status, 404);
}

#[test]
fn as_of_relationship_status_before_and_after_it_ended() {
    let fixture = fixture();
    // Line 15 of lifecycle.jsonl (command 45 + 15): the operator ends Northwind-Fabrikam.
    let ended_at = fixture.positions[59][0];
    let before = both_at(&format!(
        "/v1/relationships/{DIST}/{FAB}?as_of={}",
        ended_at - 1
    ));
    assert_eq!(before["status"], "active");
    // Fabrikam had removed the provider's admin access earlier in the lifecycle.
    assert_eq!(before["admin_access"], false);
    assert_eq!(before["can_transact"], true);
    let after = both_at(&format!("/v1/relationships/{DIST}/{FAB}?as_of={ended_at}"));
    assert_eq!(after["status"], "ended");
    assert_eq!(after["can_transact"], false);
    let list_before = both_at(&format!(
        "/v1/resellers/{FAB}/providers?as_of={}",
        ended_at - 1
    ));
    assert_eq!(list_before["items"][0]["status"], "active");
    let minute = (base_time() + chrono::Duration::minutes(59))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let by_time = both_at(&format!("/v1/relationships/{DIST}/{FAB}?as_of={minute}"));
    assert_eq!(by_time["status"], "active");
    assert_eq!(by_time["position"], ended_at - 1);
}

/// As `both`, for answers at a past position.
fn both_at(path: &str) -> Value {
    let fixture = fixture();
    let response = get(fixture.addr, path);
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    let http = response.json();
    let (ok, cli) = cli_query(&fixture.cli_dir, path);
    assert!(ok, "{path}: {cli}");
    assert_eq!(
        without_verified_from(&http),
        without_verified_from(&cli),
        "HTTP and CLI differ for {path}"
    );
    let verify = get(
        fixture.addr,
        &format!("/v1/events?from={}&limit=1", http["position"]),
    );
    assert_eq!(
        verify.json()["items"][0]["hash"],
        http["head_hash"],
        "head_hash is the hash at the answer's position"
    );
    http
}

#[test]
fn operations_endpoints() {
    let fixture = fixture();
    let health = get(fixture.addr, "/healthz");
    assert_eq!(health.status, 200);
    let ready = get(fixture.addr, "/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    let _ = get(fixture.addr, &format!("/v1/partners/{TAIL}"));
    let metrics = get(fixture.addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers.contains("text/plain"));
    for name in [
        "csp_ledger_commands_total",
        "csp_ledger_events_appended_total",
        "csp_ledger_apply_seconds_bucket",
        "csp_ledger_query_seconds_bucket{route=\"/v1/partners/{id}\"",
        "csp_ledger_projection_position",
        "csp_ledger_head_position",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
}

#[test]
fn openapi_documents_every_routed_path() {
    let fixture = fixture();
    let document = get(fixture.addr, "/openapi.json").json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for route in csp_ledger::api::query::READ_ROUTES {
        assert!(
            paths
                .get(route.template)
                .and_then(|p| p.get("get"))
                .is_some(),
            "{} is not documented",
            route.template
        );
        // Every documented read route is routed: it answers something other than route_not_found.
        let concrete = route
            .template
            .replace("{id}", TAIL)
            .replace("{provider_id}", DIST)
            .replace("{reseller_id}", TAIL)
            .replace("{stream}", &format!("partner-{TAIL}"));
        let response = get(fixture.addr, &concrete);
        assert_ne!(response.json()["code"], "route_not_found", "{concrete}");
    }
    for (path, method) in [
        ("/v1/commands", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/audit/checkpoint", "get"),
        ("/v1/audit/proof/inclusion", "get"),
        ("/v1/audit/proof/consistency", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
        // Routed: anything but route_not_found.
        if method == "get" {
            let response = get(fixture.addr, path);
            assert!(
                !response.body.contains("route_not_found"),
                "{path}: {}",
                response.body
            );
        }
    }
    assert_eq!(
        paths.len(),
        csp_ledger::api::query::READ_ROUTES.len() + 8,
        "a documented path that is not routed"
    );
}
