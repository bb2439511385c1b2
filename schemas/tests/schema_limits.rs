//! Bug: the published JSON Schemas disagreed with the parser (no digits-only pattern for
//! `mpn_id`, no amount cap, no text limits). Boundary values of every limited field go through
//! both the JSON Schema of the command and `CommandEnvelope::parse`; they must agree.
//!
//! JSON Schema's `maxLength` counts characters where the parser counts bytes: the two agree
//! for ASCII, which the boundary values here use. For non-ASCII text the schema is looser;
//! `non_ascii_text_is_where_max_length_and_the_byte_limit_differ` pins that known difference
//! and checks that `x-max-bytes` states the byte limit.

use csp_ledger_schemas::command::{
    CommandEnvelope, CORRELATION_ID_BYTES_MAX, MPN_ID_DIGITS_MAX, TEXT_BYTES_MAX,
};
use csp_ledger_schemas::json_schema::all_schema_files;
use csp_ledger_schemas::values::{EMAIL_LENGTH_MAX, USD_AMOUNT_MAX_CENTS};
use serde_json::{json, Value};

const PARTNER: &str = "00000000-0000-4000-8000-000000000101";
const OTHER: &str = "00000000-0000-4000-8000-000000000102";

/// A valid envelope of `command_type` with `payload`.
fn envelope(command_type: &str, payload: Value) -> Value {
    json!({
        "command_id": "00000000-0000-4000-8000-000000900001",
        "type": command_type,
        "issued_at": "2026-01-12T09:01:00Z",
        "actor": {"kind": "operator"},
        "correlation_id": "c-1",
        "payload": payload,
    })
}

/// One valid envelope per command type that has a limited field.
fn bases() -> Vec<Value> {
    vec![
        envelope(
            "EnrollPartner",
            json!({"partner_id": PARTNER, "legal_name": "Northwind", "country": "DE",
                "tenant_id": OTHER, "primary_contact_email": "ana@northwind.example"}),
        ),
        envelope(
            "VerifyPartner",
            json!({"partner_id": PARTNER, "outcome": "rejected", "reason": "documents"}),
        ),
        envelope(
            "AssociateMpnId",
            json!({"partner_id": PARTNER, "mpn_id": "1234567", "mpn_country": "DE"}),
        ),
        envelope(
            "SignMPA",
            json!({"partner_id": PARTNER, "signer_email": "ana@northwind.example", "agreement_version": "2026-01"}),
        ),
        envelope(
            "EndRelationship",
            json!({"provider_id": PARTNER, "reseller_id": OTHER, "reason": "support case"}),
        ),
        envelope(
            "RegisterCustomer",
            json!({"customer_id": PARTNER, "company_name": "Fabrikam", "country": "DE", "tenant_id": OTHER}),
        ),
        envelope(
            "AcceptCustomerAgreement",
            json!({"customer_id": PARTNER, "signer_email": "bo@fabrikam.example", "agreement_version": "mca-1"}),
        ),
        envelope(
            "RegisterManagedService",
            json!({"partner_id": PARTNER, "kind": "ip_service", "name": "Backup"}),
        ),
        envelope(
            "RecordRevenue",
            json!({"partner_id": PARTNER, "month": "2026-01", "category": "cloud", "amount_usd": "12500.00"}),
        ),
        envelope(
            "RecordCreditCheck",
            json!({"partner_id": PARTNER, "outcome": "approved", "credit_limit_usd": "1000.00"}),
        ),
    ]
}

/// ASCII boundary values of a free-text field.
fn text_values() -> Vec<Value> {
    let mut values: Vec<Value> = vec![
        "a".repeat(TEXT_BYTES_MAX).into(),
        "a".repeat(TEXT_BYTES_MAX + 1).into(),
        format!(" {} ", "a".repeat(TEXT_BYTES_MAX - 2)).into(),
        "".into(),
        " ".into(),
        "   x  ".into(),
        "a\u{7}b".into(),
        "a\nb".into(),
        "a\tb".into(),
        "\u{7f}".into(),
        // Non-ASCII within the limit, white space that is not ASCII, a C1 control, U+FEFF
        // (white space to ECMA-262's \s, not to Rust).
        "Ünïcode €".into(),
        "\u{a0}\u{3000}".into(),
        "x\u{85}".into(),
        "\u{feff}".into(),
        Value::Null,
        json!(5),
    ];
    values.push("é".repeat(TEXT_BYTES_MAX / 2).into());
    values
}

fn amount_values() -> Vec<Value> {
    let cap = USD_AMOUNT_MAX_CENTS / 100;
    [
        format!("{cap}"),
        format!("{cap}.00"),
        format!("{cap}.0"),
        format!("{cap}.01"),
        format!("-{cap}.00"),
        format!("-{cap}.01"),
        format!("{}", cap + 1),
        format!("{}.99", cap - 1),
        format!("0{}.99", cap - 1),
        format!("00{}", cap - 1),
        "0".into(),
        "-0.5".into(),
        "1.234".into(),
        "".into(),
        "1.".into(),
        ".5".into(),
        "+1".into(),
        "1e3".into(),
        "12,00".into(),
        "-".into(),
        " 1".into(),
    ]
    .into_iter()
    .map(Value::from)
    .collect()
}

fn email_values() -> Vec<Value> {
    let at_limit = format!(
        "{}@example.com",
        "a".repeat(EMAIL_LENGTH_MAX - "@example.com".len())
    );
    let past_limit = format!("a{at_limit}");
    [
        at_limit.as_str(),
        past_limit.as_str(),
        "",
        "a@b",
        "a@b.c",
        "a@@b.c",
        "@b.c",
        "a@.b",
        "a@b.",
        "a@b..c",
        "a b@c.d",
        "a@c.d\u{7}",
        "a\u{a0}@c.d",
        "no-at-sign",
    ]
    .into_iter()
    .map(Value::from)
    .collect()
}

/// The limited fields: (command type, payload field, values to try).
fn cases() -> Vec<(&'static str, &'static str, Vec<Value>)> {
    let mut mpn: Vec<Value> = [
        "1".repeat(MPN_ID_DIGITS_MAX),
        "1".repeat(MPN_ID_DIGITS_MAX + 1),
        "1".into(),
        "".into(),
        "12a".into(),
        " 1".into(),
        "-1".into(),
        "١٢".into(),
        "1.5".into(),
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    mpn.push(json!(12));
    let countries: Vec<Value> = ["DE", "de", "D", "DEU", "", "D1"]
        .into_iter()
        .map(Value::from)
        .collect();
    let months: Vec<Value> = [
        "2026-12", "2026-13", "2026-00", "0000-01", "26-01", "2026/01", "",
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    vec![
        ("EnrollPartner", "legal_name", text_values()),
        ("EnrollPartner", "primary_contact_email", email_values()),
        ("EnrollPartner", "country", countries.clone()),
        ("VerifyPartner", "reason", text_values()),
        ("AssociateMpnId", "mpn_id", mpn),
        ("AssociateMpnId", "mpn_country", countries),
        ("SignMPA", "agreement_version", text_values()),
        ("SignMPA", "signer_email", email_values()),
        ("EndRelationship", "reason", text_values()),
        ("RegisterCustomer", "company_name", text_values()),
        (
            "AcceptCustomerAgreement",
            "agreement_version",
            text_values(),
        ),
        ("AcceptCustomerAgreement", "signer_email", email_values()),
        ("RegisterManagedService", "name", text_values()),
        ("RecordRevenue", "amount_usd", amount_values()),
        ("RecordRevenue", "month", months),
        ("RecordCreditCheck", "credit_limit_usd", amount_values()),
    ]
}

struct Judge {
    validators: Vec<(String, jsonschema::Validator)>,
}

impl Judge {
    fn new() -> Judge {
        let validators = all_schema_files()
            .into_iter()
            .filter_map(|(path, schema)| {
                let name = path
                    .strip_prefix("commands/")?
                    .strip_suffix(".schema.json")?;
                // `format` is an annotation in draft 2020-12; the limits are in the keywords.
                let validator = jsonschema::options()
                    .should_validate_formats(false)
                    .build(&schema)
                    .expect("a generated schema compiles");
                Some((name.to_string(), validator))
            })
            .collect();
        Judge { validators }
    }

    /// (schema accepts, parser accepts)
    fn judge(&self, instance: &Value) -> (bool, bool) {
        let name = instance["type"].as_str().unwrap_or_default();
        let validator = &self
            .validators
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no schema for {name}"))
            .1;
        let bytes = serde_json::to_vec(instance).unwrap();
        (
            validator.is_valid(instance),
            CommandEnvelope::parse(&bytes).is_ok(),
        )
    }
}

fn with_field(base: &Value, field: &str, value: &Value) -> Value {
    let mut instance = base.clone();
    instance["payload"][field] = value.clone();
    instance
}

fn base(command_type: &str) -> Value {
    bases()
        .into_iter()
        .find(|b| b["type"] == command_type)
        .unwrap()
}

#[test]
fn json_schemas_agree_with_the_parser_at_every_limit() {
    let judge = Judge::new();
    for base in bases() {
        assert_eq!(judge.judge(&base), (true, true), "base {}", base["type"]);
    }
    let mut disagreements = Vec::new();
    for (command_type, field, values) in cases() {
        let base = base(command_type);
        let (mut accepted, mut rejected) = (0, 0);
        for value in values {
            let instance = with_field(&base, field, &value);
            let (schema, parser) = judge.judge(&instance);
            if schema != parser {
                let shown: String = value.to_string().chars().take(60).collect();
                disagreements.push(format!(
                    "{command_type}.{field} = {shown}: schema {}, parser {}",
                    if schema { "accepts" } else { "rejects" },
                    if parser { "accepts" } else { "rejects" },
                ));
            }
            if parser {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        // Every field is tried on both sides of its limits.
        assert!(accepted > 0 && rejected > 0, "{command_type}.{field}");
    }
    // The envelope's correlation_id.
    let enroll = base("EnrollPartner");
    for value in [
        json!("c".repeat(CORRELATION_ID_BYTES_MAX)),
        json!("c".repeat(CORRELATION_ID_BYTES_MAX + 1)),
        json!(""),
        Value::Null,
        json!(1),
    ] {
        let mut instance = enroll.clone();
        instance["correlation_id"] = value.clone();
        let (schema, parser) = judge.judge(&instance);
        if schema != parser {
            disagreements.push(format!(
                "correlation_id of {} chars: schema {schema}, parser {parser}",
                value.as_str().map_or(0, str::len)
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the JSON Schemas and the parser disagree:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn non_ascii_text_is_where_max_length_and_the_byte_limit_differ() {
    let judge = Judge::new();
    let enroll = base("EnrollPartner");
    // TEXT_BYTES_MAX characters of two bytes each: within maxLength, twice the byte limit.
    let long = json!("é".repeat(TEXT_BYTES_MAX));
    assert_eq!(
        judge.judge(&with_field(&enroll, "legal_name", &long)),
        (true, false)
    );
    // The exact byte limit is stated beside maxLength.
    let files = all_schema_files();
    let schema = &files
        .iter()
        .find(|(p, _)| p == "commands/EnrollPartner.schema.json")
        .unwrap()
        .1;
    let legal_name = &schema["properties"]["payload"]["properties"]["legal_name"];
    assert_eq!(legal_name["x-max-bytes"], json!(TEXT_BYTES_MAX));
    assert_eq!(legal_name["maxLength"], json!(TEXT_BYTES_MAX));
    assert_eq!(
        schema["properties"]["correlation_id"]["x-max-bytes"],
        json!(CORRELATION_ID_BYTES_MAX)
    );
    assert_eq!(
        schema["properties"]["payload"]["properties"]["primary_contact_email"]["x-max-bytes"],
        json!(EMAIL_LENGTH_MAX)
    );
}
