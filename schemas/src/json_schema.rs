//! Generates the JSON Schema file of every command envelope and every event envelope from the
//! Rust types, so that the files under `schemas/json/` cannot drift from the code (a test
//! compares them; `UPDATE_SCHEMAS=1 cargo test -p csp-ledger-schemas` rewrites them).
//!
//! The limits the parser checks (text lengths and characters, MPN digits, the amount cap,
//! e-mail shape and length, `correlation_id` length) are in the schemas too, made from the
//! same constants; `tests/schema_limits.rs` runs boundary values through both. One difference
//! remains by nature: the parser limits bytes, JSON Schema's `maxLength` counts characters,
//! so for non-ASCII text the schema is looser. Each byte limit is also stated exactly as the
//! annotation `x-max-bytes`, which a validator ignores and a client can check.

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Value};

use crate::command::{Actor, Command};
use crate::event::Event;

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
        })
        .into_generator()
}

fn strip_root(mut schema: Value) -> Value {
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
    }
    schema
}

/// Every schema file: its path relative to `schemas/json/` and its content.
pub fn all_schema_files() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    let mut generator = generator();
    let actor = strip_root(generator.root_schema_for::<Actor>().to_value());
    for (name, payload) in Command::payload_schemas(&mut generator) {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": format!("csp-ledger/commands/{name}.schema.json"),
            "title": name,
            "description": "A command envelope (SPEC.md section 3) carrying this command's payload. Fields marked x-personal-data are personal data.",
            "type": "object",
            "additionalProperties": false,
            "required": ["command_id", "type", "issued_at", "actor", "payload"],
            "properties": {
                "command_id": {"type": "string", "format": "uuid", "description": "Idempotency key"},
                "type": {"const": name},
                "issued_at": {"type": "string", "format": "date-time"},
                "actor": actor,
                "correlation_id": {"type": ["string", "null"], "maxLength": crate::command::CORRELATION_ID_BYTES_MAX,
                    "x-max-bytes": crate::command::CORRELATION_ID_BYTES_MAX,
                    "description": format!("At most {} bytes of UTF-8 (x-max-bytes; maxLength counts characters, the same only for ASCII)", crate::command::CORRELATION_ID_BYTES_MAX)},
                "payload": strip_root(payload.to_value()),
            }
        });
        files.push((format!("commands/{name}.schema.json"), schema));
    }
    for (name, data) in Event::data_schemas(&mut generator) {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": format!("csp-ledger/events/{name}.schema.json"),
            "title": name,
            "description": "An event envelope (SPEC.md section 5) carrying this event's data. Fields marked x-personal-data hold commitments; the clear values are in the personal-data store and appear only under personal_data, outside the hash.",
            "type": "object",
            "additionalProperties": false,
            "required": ["event_id", "position", "stream", "stream_version", "type", "schema_version",
                "occurred_at", "recorded_at", "command_id", "correlation_id", "actor", "data"],
            // Version 1 envelopes (stored before submitted_by) have none; from version 2 it is required.
            "if": {"properties": {"schema_version": {"const": 1}}, "required": ["schema_version"]},
            "then": {"not": {"required": ["submitted_by"]}},
            "else": {"required": ["submitted_by"]},
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "position": {"type": "integer", "minimum": 1},
                "stream": {"type": "string", "pattern": "^(partner-[0-9a-f-]{36}|customer-[0-9a-f-]{36}|relationship-[0-9a-f-]{36}-[0-9a-f-]{36})$"},
                "stream_version": {"type": "integer", "minimum": 1},
                "type": {"const": name},
                "schema_version": {"enum": (1..=crate::event::SCHEMA_VERSION).collect::<Vec<u32>>(),
                    "description": "The version the envelope was stored as: 1 (no submitted_by) or 2"},
                "submitted_by": {"type": "string", "pattern": crate::event::PRINCIPAL_ID_PATTERN,
                    "description": "The authenticated principal that submitted the command (\"local\" for the CLI); part of the canonical bytes from schema_version 2, absent in version 1"},
                "occurred_at": {"type": "string", "format": "date-time"},
                "recorded_at": {"type": "string", "format": "date-time"},
                "command_id": {"type": "string", "format": "uuid"},
                "correlation_id": {"type": ["string", "null"]},
                "actor": actor,
                "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Not part of the canonical bytes"},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Not part of the canonical bytes"},
                "personal_data": {"type": "object", "description": "Clear personal values joined on read; not part of the canonical bytes", "x-personal-data": true},
                "data": strip_root(data.to_value()),
            }
        });
        files.push((format!("events/{name}.schema.json"), schema));
    }
    files
}
