//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`. A test checks that
//! every routed path is documented here.
//!
//! The document is as precise as the server (issue 11 item 7), so that a client generated
//! from it, or a fuzzer run against it, sends nothing the server refuses and expects nothing
//! it does not answer:
//!
//! - every parameter has the schema its parser in `api/query.rs` accepts, no more and no
//!   less: ids are `format: uuid` (the hyphenated form only), `as_of` is a position (the
//!   pattern `^[0-9]+$`) or an RFC 3339 `date-time`, `date` is `format: date`, `limit` is an
//!   integer from 1 to 1000, `min_position` and `from` integers from 0, and `cursor` is
//!   what each path hands out in `next_cursor` (a UUID or a position);
//! - every operation lists every status it can answer, each error with the `Error` schema
//!   and, per status, the `code`s it can carry; `tests/openapi_conformance.rs` provokes each
//!   of them and checks that the answer is documented;
//! - the bearer scheme of SPEC.md section 10 applies to every path but the public ones.
//!
//! Limits that are not a property of a parameter's value (the body size, the number of
//! commands in an array, the request target and header sizes) are documented as the
//! responses they cause (413, 414, 431), not as schema bounds.

use csp_ledger_schemas::OutcomeKind;
use serde_json::{json, Value};

use crate::api::query::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};

/// A UUID as `parse_id` reads it (8-4-4-4-12 hex digits), for patterns that embed one.
const UUID: &str = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

/// A position as a string (`as_of`, a position `cursor`): digits, at least one.
const POSITION_PATTERN: &str = "^[0-9]+$";

fn param(name: &str, location: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "description": description, "schema": schema})
}

fn common_read_params() -> Vec<Value> {
    vec![
        param(
            "as_of",
            "query",
            "Answer as of a log position (digits), or as of an RFC 3339 date-time matched \
             against recorded_at (encode a + offset as %2B). A position beyond the head is \
             503 not_yet_at_position; leave as_of out for the head (an empty as_of is 400).",
            // Both branches need at least one character: `as_of=` is refused (400
            // invalid_as_of) rather than read as the head, which leaving it out says.
            json!({"anyOf": [
                {"type": "string", "pattern": POSITION_PATTERN, "description": "a log position"},
                {"type": "string", "format": "date-time", "description": "an RFC 3339 date-time"}
            ]}),
            false,
        ),
        param(
            "min_position",
            "query",
            "Read-your-writes: wait (at most 2 s) until the read models reach this position, \
             else 503 not_yet_at_position. Every other parameter is checked first: a \
             malformed request is 400 at once.",
            json!({"type": "integer", "minimum": 0}),
            false,
        ),
    ]
}

/// `limit` and `cursor`; `cursor` is what the path hands out as `next_cursor`.
fn page_params(cursor: Value, cursor_description: &str) -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            "Items per page",
            json!({"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX, "default": PAGE_LIMIT_DEFAULT}),
            false,
        ),
        param("cursor", "query", cursor_description, cursor, false),
    ]
}

fn uuid_cursor() -> Vec<Value> {
    page_params(
        json!({"type": "string", "format": "uuid"}),
        "next_cursor of the previous page: the id of its last item",
    )
}

fn position_cursor(description: &str) -> Vec<Value> {
    page_params(
        json!({"type": "string", "pattern": POSITION_PATTERN}),
        description,
    )
}

/// A path id; `example` is an id of the example scenarios (`examples/*.jsonl`).
fn id(name: &str, example: &str) -> Value {
    let mut id = param(
        name,
        "path",
        "UUID (hyphenated)",
        json!({"type": "string", "format": "uuid"}),
        true,
    );
    id["example"] = json!(example);
    id
}

/// Ids of the example scenarios: Northwind (a distributor), Fabrikam (its reseller), and the
/// French customer they sell to.
const NORTHWIND: &str = "00000000-0000-4000-8000-000000000101";
const FABRIKAM: &str = "00000000-0000-4000-8000-000000000102";
const CUSTOMER: &str = "00000000-0000-4000-8000-000000000201";

fn date(description: &str) -> Value {
    param(
        "date",
        "query",
        description,
        json!({"type": "string", "format": "date"}),
        false,
    )
}

fn answer(properties: Value) -> Value {
    let mut properties = properties;
    properties["position"] =
        json!({"type": "integer", "minimum": 0, "description": "Log position the answer reflects"});
    properties["head_hash"] = json!({"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Hash of the event at that position (zeros for position 0)"});
    json!({"type": "object", "required": ["position", "head_hash"], "properties": properties})
}

fn list(item: Value) -> Value {
    answer(
        json!({"items": {"type": "array", "items": item}, "next_cursor": {"type": ["string", "null"]}}),
    )
}

/// An error response: the `Error` schema, its `code` one of `codes`.
fn error(description: &str, codes: &[&str]) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"allOf": [
        {"$ref": "#/components/schemas/Error"},
        {"properties": {"code": {"enum": codes}}}
    ]}}}})
}

fn ledger_position_header() -> Value {
    json!({"X-Ledger-Position": {"required": true, "description": "The position of the answer", "schema": {"type": "integer", "minimum": 0}}})
}

/// What a read route can answer besides 200 and the statuses every operation shares
/// ([`everywhere`]): the 400 codes of its parameters, its 404 codes (none: no 404), and
/// whether it can be an expensive read (429 `busy`, SPEC.md section 11).
#[derive(Clone, Copy)]
struct Refusals<'a> {
    bad: &'a [&'a str],
    missing: &'a [&'a str],
    expensive: bool,
}

fn get(summary: &str, parameters: Vec<Value>, schema: Value, refusals: Refusals<'_>) -> Value {
    let mut bad = vec!["invalid_as_of", "invalid_min_position"];
    bad.extend(refusals.bad);
    let mut responses = json!({
        "200": {"description": "The answer", "headers": ledger_position_header(), "content": {"application/json": {"schema": schema}}},
        "400": error("A malformed parameter (checked before any min_position wait)", &bad),
        "500": error("Reading the log failed", &["internal_error"]),
        "503": {"description": "not_yet_at_position: min_position not reached within the wait, or an as_of position beyond the head; carries the current position", "content": {"application/json": {"schema": {"allOf": [
            {"$ref": "#/components/schemas/Error"},
            {"required": ["position"], "properties": {"code": {"enum": ["not_yet_at_position"]}}}
        ]}}}},
    });
    if !refusals.missing.is_empty() {
        responses["404"] = error("Unknown at the answer's position", refusals.missing);
    }
    if refusals.expensive {
        responses["429"] = json!({
        "description": "busy: an expensive read (an as_of answer that must read more than 10,000 events, or /v1/audit/verify) while the expensive-read pool (--expensive-reads-max) is full",
        "headers": {"Retry-After": {"required": true, "description": "Seconds to wait", "schema": {"type": "integer", "minimum": 0}}},
        "content": {"application/json": {"schema": {"allOf": [
            {"$ref": "#/components/schemas/Error"},
            {"properties": {"code": {"enum": ["busy"]}}}
        ]}}}});
    }
    json!({"get": {"summary": summary, "parameters": parameters, "responses": responses}})
}

fn with(mut base: Vec<Value>, more: Vec<Value>) -> Vec<Value> {
    base.extend(more);
    base
}

/// What every path says about the methods it does not serve: 405 with `Allow`.
const METHODS: &str = "A method this path does not serve is answered 405 method_not_allowed (Error schema) with an Allow header.";

/// Adds what every operation can answer: SPEC.md section 10 (public paths need no
/// credentials, the others answer 401 and 403) and the request limits of section 11 (414,
/// 431); and, to every path item, the 405 of the methods it does not serve.
fn everywhere(mut document: Value) -> Value {
    if let Some(paths) = document["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(operations) = item.as_object_mut() else {
                continue;
            };
            for (_, operation) in operations.iter_mut() {
                let responses = &mut operation["responses"];
                responses["414"] = error(
                    "uri_too_long: the request target is over 8 KiB",
                    &["uri_too_long"],
                );
                responses["431"] = error(
                    "headers_too_large: over 64 request headers or 16 KiB of them",
                    &["headers_too_large"],
                );
                if responses.get("408").is_none() {
                    responses["408"] = error(
                        "request_timeout: the request headers did not arrive within --header-timeout-ms (10 s) of connecting or of the previous response",
                        &["request_timeout"],
                    );
                }
                if crate::api::http::is_public_path(path) {
                    responses["403"] = error(
                        "host_not_allowed: only with --insecure-no-auth, for a Host that is not a loopback name",
                        &["host_not_allowed"],
                    );
                    operation["security"] = json!([]);
                    continue;
                }
                let mut unauthenticated = error(
                    "unauthenticated: missing, unknown, malformed or expired credentials",
                    &["unauthenticated"],
                );
                unauthenticated["headers"] = json!({"WWW-Authenticate": {"required": true, "description": "Bearer realm=\"csp-ledger\" (with error=\"invalid_token\" for refused credentials)", "schema": {"type": "string", "pattern": "^Bearer "}}});
                responses["401"] = unauthenticated;
                responses["403"] = error(
                    "forbidden: the principal lacks the grant this path needs (read models; any act_as for commands); host_not_allowed: only with --insecure-no-auth, for a Host that is not a loopback name",
                    &["forbidden", "host_not_allowed"],
                );
            }
            item["description"] = json!(METHODS);
        }
    }
    document["components"]["securitySchemes"] = json!({"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "Authorization: Bearer <token> (SPEC.md section 10): an API key of the principals file (stored as its SHA-256; without --principals and --jwks, the administrator key of <data-dir>/admin.key), or a JWT checked against --jwks (EdDSA, ES256, RS256; aud, exp, nbf; sub is the principal, csp_act_as and csp_read its grants). Read paths need the read grant \"models\"; POST /v1/commands needs an act_as grant. /healthz, /readyz, /metrics, /openapi.json, /v1/audit/checkpoint and /v1/audit/proof/* need no credentials."}});
    document["components"]["responses"] = json!({"MethodNotAllowed": {
    "description": METHODS,
    "headers": {"Allow": {"required": true, "schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"allOf": [
        {"$ref": "#/components/schemas/Error"},
        {"properties": {"code": {"enum": ["method_not_allowed"]}}}
    ]}}}}});
    document["security"] = json!([{"bearer": []}]);
    document
}

/// The document.
pub fn document() -> Value {
    personal_reads(everywhere(contents()))
}

/// The reads that join clear personal values back into events (for the `personal` grant) also
/// fail with 500 `personal_data_mismatch` when a stored value does not match the commitment
/// its event carries (SPEC.md section 12).
fn personal_reads(mut document: Value) -> Value {
    for path in ["/v1/streams/{stream}/events", "/v1/events"] {
        document["paths"][path]["get"]["responses"]["500"] = error(
            "Reading the log failed (internal_error), or a stored personal value does not match its event's commitment (personal_data_mismatch: the personal-data store was edited)",
            &["internal_error", "personal_data_mismatch"],
        );
    }
    document
}

fn contents() -> Value {
    let relationship_row = json!({"type": "object", "properties": {
        "provider_id": {"type": "string", "format": "uuid"}, "reseller_id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["invited", "active", "ended", "declined", "revoked"]}, "admin_access": {"type": "boolean"},
        "since": {"type": "string", "format": "date-time"}, "ended_at": {"type": ["string", "null"], "format": "date-time"}}});
    let unmet = json!({"type": "array", "items": {"type": "string"}});
    let partner = Refusals {
        bad: &["invalid_id"],
        missing: &["partner_not_found"],
        expensive: true,
    };
    let partner_list = || Refusals {
        bad: &["invalid_id", "invalid_limit"],
        missing: &["partner_not_found"],
        expensive: true,
    };
    let stream = param(
        "stream",
        "path",
        "partner-<id>, customer-<id> or relationship-<provider id>-<reseller id>",
        json!({"type": "string", "pattern": format!("^(?:partner-{UUID}|customer-{UUID}|relationship-{UUID}-{UUID})$")}),
        true,
    );
    let mut stream = stream;
    stream["example"] = json!(format!("partner-{NORTHWIND}"));
    json!({
        "openapi": "3.1.0",
        "info": {"title": "csp-ledger", "version": env!("CARGO_PKG_VERSION"), "description": "Event-sourced relationship ledger of a CSP partner program. Every read answers with the log position it reflects. Every error is JSON {\"code\",\"message\"} (the Error schema), whatever layer refuses; a connection that does not send its request in time gets 408 request_timeout where the protocol allows."},
        "paths": {
            "/v1/partners/{id}": get("Partner profile", with(vec![id("id", FABRIKAM)], common_read_params()), answer(json!({
                "partner_id": {"type": "string", "format": "uuid"}, "legal_name": {"type": "string"}, "country": {"type": "string"}, "region": {"type": "string"},
                "roles": {"type": "array", "items": {"enum": ["indirect_reseller", "indirect_provider", "direct_bill"]}},
                "verification": {"type": "object"}, "mpn": {"type": ["object", "null"]}, "mpa": {"type": ["object", "null"]},
                "direct_bill": {"type": "object"}, "version": {"type": "integer"}})), partner),
            "/v1/partners/{id}/eligibility": get("Can the partner transact", with(vec![id("id", FABRIKAM)], common_read_params()), answer(json!({
                "partner_id": {"type": "string", "format": "uuid"}, "can_transact": {"type": "boolean"}, "unmet": unmet})), Refusals { ..partner }),
            "/v1/partners/{id}/direct-bill-readiness": get("Direct-bill readiness on a date", with(vec![id("id", FABRIKAM), date("YYYY-MM-DD (default: the date of the answer's position, today at the head)")], common_read_params()), answer(json!({
                "ready": {"type": "boolean"}, "unmet": unmet, "recommendations": unmet, "ttm_cloud_revenue_usd": {"type": "string"}})), Refusals { bad: &["invalid_id", "invalid_date"], ..partner }),
            "/v1/providers/{id}/resellers": get("A provider's resellers", with(with(vec![id("id", NORTHWIND)], common_read_params()), uuid_cursor()), list(relationship_row.clone()), partner_list()),
            "/v1/resellers/{id}/providers": get("A reseller's providers", with(with(vec![id("id", FABRIKAM)], common_read_params()), uuid_cursor()), list(relationship_row), partner_list()),
            "/v1/relationships/{provider_id}/{reseller_id}": get("May the provider transact through the reseller", with(vec![id("provider_id", NORTHWIND), id("reseller_id", FABRIKAM)], common_read_params()), answer(json!({
                "status": {"enum": ["none", "invited", "active", "ended", "declined", "revoked"]}, "admin_access": {"type": "boolean"}, "can_transact": {"type": "boolean"}, "unmet": unmet})), Refusals { ..partner }),
            "/v1/customers/{id}": get("Customer with its partners and MCA", with(vec![id("id", CUSTOMER)], common_read_params()), answer(json!({
                "customer_id": {"type": "string", "format": "uuid"}, "country": {"type": "string"}, "region": {"type": "string"}, "mca_accepted": {"type": "boolean"},
                "partners": {"type": "array", "items": {"type": "object", "properties": {"partner_id": {"type": "string", "format": "uuid"}, "status": {"enum": ["active", "ended"]}}}}})),
                Refusals { missing: &["customer_not_found"], ..partner }),
            "/v1/customers/{id}/order-eligibility": get("May the partner order for the customer", with(vec![id("id", CUSTOMER), { let mut partner = param("partner", "query", "Partner id (hyphenated UUID)", json!({"type": "string", "format": "uuid"}), true); partner["example"] = json!(FABRIKAM); partner }], common_read_params()), answer(json!({
                "can_order": {"type": "boolean"}, "unmet": unmet})),
                Refusals { bad: &["invalid_id", "missing_partner"], missing: &["customer_not_found", "partner_not_found"], expensive: true }),
            "/v1/streams/{stream}/events": get("Events of one stream", with(with(vec![stream], common_read_params()), position_cursor("next_cursor of the previous page: the position of its last event")), list(json!({"$ref": "#/components/schemas/EventEnvelope"})),
                Refusals { bad: &["invalid_stream", "invalid_limit", "invalid_cursor"], missing: &["stream_not_found"], expensive: false }),
            "/v1/events": get("Events in position order", with(with(vec![param("from", "query", "First position (default 1; 0 reads from 1 too); wins over cursor", json!({"type": "integer", "minimum": 0, "default": 1}), false)], common_read_params()), position_cursor("next_cursor of the previous page: the first position of the next one")), list(json!({"$ref": "#/components/schemas/EventEnvelope"})),
                Refusals { bad: &["invalid_limit", "invalid_from", "invalid_cursor"], missing: &[], expensive: false }),
            "/v1/audit/verify": get("Walk the hash chain (up to as_of): the tail after the prefix this server verified before, or all of it with full=true", with(vec![param("full", "query", "Walk from position 1 (default false)", json!({"type": "boolean", "default": false}), false)], common_read_params()), answer(json!({
                "ok": {"type": "boolean"}, "events": {"type": "integer"}, "first_bad_position": {"type": ["integer", "null"]}, "verified_from": {"type": "integer"}})),
                Refusals { bad: &["invalid_full"], missing: &[], expensive: true }),
            "/v1/verifications/overdue": get("Pending verifications older than five business days", with(with(vec![date("YYYY-MM-DD (default: the date of the answer's position, today at the head)")], common_read_params()), uuid_cursor()), list(json!({"type": "object"})),
                Refusals { bad: &["invalid_date", "invalid_limit", "invalid_id"], missing: &[], expensive: true }),
            "/v1/commands": {"post": {
                "summary": "Submit one command envelope or an array of them (embedded mode, without Kafka)",
                // The server decides every JSON value but `[]`: what is not a valid command
                // envelope (an object of the wrong shape, a scalar, an array element of any
                // kind) is a `malformed_command` outcome in a 200, as on every intake (SPEC.md
                // sections 7 and 11), so the document allows it; only a body that is not
                // JSON, and the empty array, are 400. The 4,096 commands of an array are a
                // limit (413), not a schema bound, like the body size.
                "requestBody": {"required": true, "description": "A command envelope (schemas/json/command-envelope and the commands' schemas), or a non-empty array of them (at most 4,096, else 413). Anything else that is JSON is decided too: each value that is not a valid envelope gets a malformed_command outcome.", "content": {"application/json": {"schema": {"not": {"type": "array", "maxItems": 0}}}}},
                "responses": {
                    "200": {"description": "One outcome per command (accepted, rejected with a code, duplicate), answered after the commit is durable; an array for an array", "headers": ledger_position_header(), "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Outcome"}, {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}}]}}}},
                    "400": error("invalid_json: the body is not JSON, or an empty array; bad_request: the body broke off", &["invalid_json", "bad_request"]),
                    "408": error("request_timeout: the body did not arrive within 30 s of the headers, or the headers within 10 s", &["request_timeout"]),
                    "409": error("kafka_mode: this ledger takes its commands from Kafka", &["kafka_mode"]),
                    "413": error("payload_too_large: the body is over --max-body-bytes (default 8 MiB); too_many_commands: an array of more than 4,096", &["payload_too_large", "too_many_commands"]),
                    "415": error("unsupported_media_type: the body is not Content-Type: application/json", &["unsupported_media_type"]),
                    "500": error("The commit failed", &["internal_error"]),
                    "503": error("shutting_down: the ledger is stopping", &["shutting_down"])}}},
            "/v1/audit/checkpoint": {"get": {"summary": "The latest signed checkpoint (C2SP tlog-checkpoint in a signed-note, Ed25519), or the one signed at tree_size (SPEC.md section 12)",
                "parameters": [param("tree_size", "query", "The tree size a checkpoint was signed at (default: the latest)", json!({"type": "integer", "minimum": 0}), false)],
                "responses": {
                    "200": {"description": "<origin>\\n<tree size>\\n<base64 root>\\n, an empty line, and signature lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "400": error("invalid_range: tree_size is not a number", &["invalid_range"]),
                    "404": error("checkpoint_not_found: none was signed at that size (or none yet)", &["checkpoint_not_found"]),
                    "500": error("Reading the log failed", &["internal_error"])}}},
            "/v1/audit/proof/inclusion": {"get": {"summary": "The RFC 6962 inclusion proof of the event at position in the tree of tree_size events",
                "parameters": [
                    param("position", "query", "The event's position, 1..=tree_size", json!({"type": "integer", "minimum": 1}), true),
                    param("tree_size", "query", "The tree size (default: the head); at most the head", json!({"type": "integer", "minimum": 1}), false)],
                "responses": {
                    "200": {"description": "The proof: leaf hash and the audit path, leaf's sibling first", "content": {"application/json": {"schema": {"type": "object", "required": ["position", "tree_size", "leaf_hash", "hashes"], "properties": {
                        "position": {"type": "integer"}, "tree_size": {"type": "integer"}, "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "hashes": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}}}}},
                    "400": error("invalid_range: a missing or non-numeric parameter, a tree_size beyond the head, or a position outside 1..=tree_size", &["invalid_range"]),
                    "500": error("Reading the log failed", &["internal_error"])}}},
            "/v1/audit/proof/consistency": {"get": {"summary": "The RFC 6962 consistency proof from the tree of from events to that of to",
                "parameters": [
                    param("from", "query", "The older tree size, 1..=to", json!({"type": "integer", "minimum": 1}), true),
                    param("to", "query", "The newer tree size (default: the head); at most the head", json!({"type": "integer", "minimum": 1}), false)],
                "responses": {
                    "200": {"description": "The proof (empty when from = to)", "content": {"application/json": {"schema": {"type": "object", "required": ["from", "to", "hashes"], "properties": {
                        "from": {"type": "integer"}, "to": {"type": "integer"},
                        "hashes": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}}}}},
                    "400": error("invalid_range: a missing or non-numeric parameter, from 0, from beyond to, or a size beyond the head", &["invalid_range"]),
                    "500": error("Reading the log failed", &["internal_error"])}}},
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "alive", "content": {"application/json": {"schema": {"type": "object", "required": ["status", "role"], "properties": {"status": {"enum": ["alive"]}, "role": {"type": "string"}}}}}}}}},
            "/readyz": {"get": {"summary": "The store is open and the read models have caught up with the log", "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
                "503": {"description": "not ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "position": {"type": "integer", "description": "503 not_yet_at_position: the current position"},
                "details": {"type": "object"}}},
            "Readiness": {"type": "object", "required": ["ready", "position", "head_position"], "properties": {"ready": {"type": "boolean"}, "position": {"type": "integer"}, "head_position": {"type": "integer"}}},
            "EventEnvelope": {"type": "object", "description": "See schemas/json/events/*.schema.json", "properties": {"position": {"type": "integer"}, "stream": {"type": "string"}, "type": {"type": "string"}, "hash": {"type": "string"}, "prev_hash": {"type": "string"}, "data": {"type": "object"}}},
            "Outcome": {"type": "object", "required": ["command_id", "outcome", "events"], "properties": {
                "command_id": {"type": ["string", "null"]}, "outcome": {"enum": ([OutcomeKind::Accepted, OutcomeKind::Rejected, OutcomeKind::Duplicate].map(OutcomeKind::as_str))},
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventEnvelope"}},
                "rejection": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}
        }}
    })
}
