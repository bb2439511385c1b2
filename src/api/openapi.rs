//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`. A test checks that
//! every routed path is documented here.

use csp_ledger_schemas::OutcomeKind;
use serde_json::{json, Value};

fn param(name: &str, location: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "description": description, "schema": schema})
}

fn common_read_params() -> Vec<Value> {
    vec![
        param(
            "as_of",
            "query",
            "A log position, or an RFC 3339 time matched against recorded_at: answer as of then",
            json!({"type": "string"}),
            false,
        ),
        param(
            "min_position",
            "query",
            "Read-your-writes: wait (bounded) until the read models reach this position, else 503",
            json!({"type": "integer", "minimum": 0}),
            false,
        ),
    ]
}

fn page_params() -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            "Items per page (1 to 1000, default 100)",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            false,
        ),
        param(
            "cursor",
            "query",
            "next_cursor of the previous page",
            json!({"type": "string"}),
            false,
        ),
    ]
}

fn id(name: &str) -> Value {
    param(
        name,
        "path",
        "UUID",
        json!({"type": "string", "format": "uuid"}),
        true,
    )
}

fn answer(properties: Value) -> Value {
    let mut properties = properties;
    properties["position"] =
        json!({"type": "integer", "description": "Log position the answer reflects"});
    properties["head_hash"] =
        json!({"type": "string", "description": "Hash of the event at that position"});
    json!({"type": "object", "properties": properties})
}

fn list(item: Value) -> Value {
    answer(
        json!({"items": {"type": "array", "items": item}, "next_cursor": {"type": ["string", "null"]}}),
    )
}

fn get(summary: &str, parameters: Vec<Value>, schema: Value, not_found: bool) -> Value {
    let mut responses = json!({
        "200": {"description": "The answer", "content": {"application/json": {"schema": schema}}},
        "400": {"description": "A malformed parameter (invalid_as_of, invalid_id, invalid_limit, invalid_date)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "min_position not reached within the wait; carries the current position", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    });
    if not_found {
        responses["404"] = json!({"description": "Unknown id (partner_not_found, customer_not_found, stream_not_found)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    }
    json!({"get": {"summary": summary, "parameters": parameters, "responses": responses}})
}

fn with(mut base: Vec<Value>, more: Vec<Value>) -> Vec<Value> {
    base.extend(more);
    base
}

/// Adds SPEC.md section 10 to every operation: public paths need no credentials, the others
/// answer 401 and 403; `POST /v1/commands` also 415.
fn secure(mut document: Value) -> Value {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    if let Some(paths) = document["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(operations) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in operations.iter_mut() {
                if crate::api::http::is_public_path(path) {
                    operation["security"] = json!([]);
                    continue;
                }
                let responses = &mut operation["responses"];
                responses["401"] = json!({"description": "unauthenticated: missing, unknown, malformed or expired credentials (with WWW-Authenticate: Bearer)", "content": error});
                responses["403"] = json!({"description": "forbidden: the principal lacks the grant this path needs (read models, or any act_as for commands)", "content": error});
                if method == "post" {
                    responses["415"] = json!({"description": "unsupported_media_type: the body is not Content-Type: application/json", "content": error});
                }
            }
        }
    }
    document["components"]["securitySchemes"] = json!({"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API key of the principals file (stored as its SHA-256), or a JWT checked against --jwks (EdDSA, ES256, RS256; aud, exp, nbf; sub is the principal, csp_act_as and csp_read its grants)"}});
    document["security"] = json!([{"bearer": []}]);
    document
}

/// The document.
pub fn document() -> Value {
    secure(contents())
}

fn contents() -> Value {
    let relationship_row = json!({"type": "object", "properties": {
        "provider_id": {"type": "string", "format": "uuid"}, "reseller_id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["invited", "active", "ended", "declined", "revoked"]}, "admin_access": {"type": "boolean"},
        "since": {"type": "string", "format": "date-time"}, "ended_at": {"type": ["string", "null"], "format": "date-time"}}});
    let unmet = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "csp-ledger", "version": env!("CARGO_PKG_VERSION"), "description": "Event-sourced relationship ledger of a CSP partner program. Every read answers with the log position it reflects."},
        "paths": {
            "/v1/partners/{id}": get("Partner profile", with(vec![id("id")], common_read_params()), answer(json!({
                "partner_id": {"type": "string"}, "legal_name": {"type": "string"}, "country": {"type": "string"}, "region": {"type": "string"},
                "roles": {"type": "array", "items": {"enum": ["indirect_reseller", "indirect_provider", "direct_bill"]}},
                "verification": {"type": "object"}, "mpn": {"type": ["object", "null"]}, "mpa": {"type": ["object", "null"]},
                "direct_bill": {"type": "object"}, "version": {"type": "integer"}})), true),
            "/v1/partners/{id}/eligibility": get("Can the partner transact", with(vec![id("id")], common_read_params()), answer(json!({
                "partner_id": {"type": "string"}, "can_transact": {"type": "boolean"}, "unmet": unmet})), true),
            "/v1/partners/{id}/direct-bill-readiness": get("Direct-bill readiness on a date", with(vec![id("id"), param("date", "query", "YYYY-MM-DD (default: the date of the answer's position)", json!({"type": "string", "format": "date"}), false)], common_read_params()), answer(json!({
                "ready": {"type": "boolean"}, "unmet": unmet, "recommendations": unmet, "ttm_cloud_revenue_usd": {"type": "string"}})), true),
            "/v1/providers/{id}/resellers": get("A provider's resellers", with(with(vec![id("id")], common_read_params()), page_params()), list(relationship_row.clone()), true),
            "/v1/resellers/{id}/providers": get("A reseller's providers", with(with(vec![id("id")], common_read_params()), page_params()), list(relationship_row), true),
            "/v1/relationships/{provider_id}/{reseller_id}": get("May the provider transact through the reseller", with(vec![id("provider_id"), id("reseller_id")], common_read_params()), answer(json!({
                "status": {"enum": ["none", "invited", "active", "ended", "declined", "revoked"]}, "admin_access": {"type": "boolean"}, "can_transact": {"type": "boolean"}, "unmet": unmet})), true),
            "/v1/customers/{id}": get("Customer with its partners and MCA", with(vec![id("id")], common_read_params()), answer(json!({
                "customer_id": {"type": "string"}, "country": {"type": "string"}, "region": {"type": "string"}, "mca_accepted": {"type": "boolean"},
                "partners": {"type": "array", "items": {"type": "object", "properties": {"partner_id": {"type": "string"}, "status": {"enum": ["active", "ended"]}}}}})), true),
            "/v1/customers/{id}/order-eligibility": get("May the partner order for the customer", with(vec![id("id"), param("partner", "query", "Partner id", json!({"type": "string", "format": "uuid"}), true)], common_read_params()), answer(json!({
                "can_order": {"type": "boolean"}, "unmet": unmet})), true),
            "/v1/streams/{stream}/events": get("Events of one stream", with(with(vec![param("stream", "path", "partner-<id>, customer-<id> or relationship-<provider>-<reseller>", json!({"type": "string"}), true)], common_read_params()), page_params()), list(json!({"$ref": "#/components/schemas/EventEnvelope"})), true),
            "/v1/events": get("Events in position order", with(with(vec![param("from", "query", "First position (default 1)", json!({"type": "integer", "minimum": 1}), false)], common_read_params()), page_params()), list(json!({"$ref": "#/components/schemas/EventEnvelope"})), false),
            "/v1/audit/verify": get("Walk the hash chain (up to as_of)", common_read_params(), answer(json!({
                "ok": {"type": "boolean"}, "events": {"type": "integer"}, "head_hash": {"type": ["string", "null"]}, "first_bad_position": {"type": ["integer", "null"]}})), false),
            "/v1/verifications/overdue": get("Pending verifications older than five business days", with(with(vec![param("date", "query", "YYYY-MM-DD", json!({"type": "string", "format": "date"}), false)], common_read_params()), page_params()), list(json!({"type": "object"})), false),
            "/v1/commands": {"post": {
                "summary": "Submit one command envelope or an array of them (embedded mode, without Kafka)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}},
                "responses": {
                    "200": {"description": "One outcome per command (accepted, rejected with a code, duplicate), answered after the commit is durable", "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Outcome"}, {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}}]}}}},
                    "400": {"description": "The body is not JSON", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    "413": {"description": "payload_too_large: the body is over --max-body-bytes (default 8 MiB); too_many_commands: an array of more than 4,096", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}},
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "The store is open and the read models have caught up with the log", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "position": {"type": "integer"}}},
            "EventEnvelope": {"type": "object", "description": "See schemas/json/events/*.schema.json", "properties": {"position": {"type": "integer"}, "stream": {"type": "string"}, "type": {"type": "string"}, "hash": {"type": "string"}, "prev_hash": {"type": "string"}, "data": {"type": "object"}}},
            "Outcome": {"type": "object", "required": ["command_id", "outcome", "events"], "properties": {
                "command_id": {"type": ["string", "null"]}, "outcome": {"enum": ([OutcomeKind::Accepted, OutcomeKind::Rejected, OutcomeKind::Duplicate].map(OutcomeKind::as_str))},
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventEnvelope"}},
                "rejection": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}
        }}
    })
}
