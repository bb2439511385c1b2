//! Commands: the envelope of SPEC.md section 3 and the 24 payloads of section 4.
//!
//! Parsing is strict: unknown fields anywhere, a wrong type name, a malformed id, country,
//! amount or month all give a [`MalformedCommand`] with a reason a person can act on.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::values::{Country, Email, Month, UsdAmount, CONTROL_CLASS, SPACE_CLASS};

/// Largest command envelope accepted, in bytes. Larger input is malformed (and goes to the
/// dead-letter topic when it arrives from Kafka).
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;

/// Longest free-text field (names, reasons, agreement versions), in bytes.
pub const TEXT_BYTES_MAX: usize = 512;

/// Longest `correlation_id`, in bytes.
pub const CORRELATION_ID_BYTES_MAX: usize = 256;

/// Longest MPN ID, in digits.
pub const MPN_ID_DIGITS_MAX: usize = 20;

// JSON Schemas of the limited fields, made from the same constants as the checks in
// `Command::check_limits`. Byte limits are stated twice: as `maxLength`, which JSON Schema
// counts in characters (equal to bytes for ASCII, looser for other text), and exactly as the
// `x-max-bytes` annotation.

/// The pattern of a free-text field as [`Command::check_limits`] checks it: no control
/// characters, and at least one character that is not white space.
pub fn text_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}][^{CONTROL_CLASS}]*$")
}

fn text_limits() -> serde_json::Map<String, serde_json::Value> {
    let schema = json_schema!({
        "minLength": 1,
        "maxLength": TEXT_BYTES_MAX,
        "x-max-bytes": TEXT_BYTES_MAX,
        "pattern": text_pattern(),
        "description": format!("Free text: at most {TEXT_BYTES_MAX} bytes of UTF-8 (x-max-bytes; maxLength counts characters, the same only for ASCII), not blank, no control characters"),
    });
    schema.as_object().cloned().unwrap_or_default()
}

/// Schema of a required free-text field.
fn text_schema(_: &mut SchemaGenerator) -> Schema {
    let mut map = text_limits();
    map.insert("type".into(), "string".into());
    Schema::from(map)
}

/// Schema of an optional free-text field (absent or null means none).
fn optional_text_schema(_: &mut SchemaGenerator) -> Schema {
    let mut map = text_limits();
    map.insert("type".into(), serde_json::json!(["string", "null"]));
    Schema::from(map)
}

/// The pattern of an MPN ID: 1 to [`MPN_ID_DIGITS_MAX`] ASCII digits.
pub fn mpn_id_pattern() -> String {
    format!("^[0-9]{{1,{MPN_ID_DIGITS_MAX}}}$")
}

fn mpn_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": mpn_id_pattern(),
        "description": format!("MPN ID: 1 to {MPN_ID_DIGITS_MAX} digits")})
}

/// Who issues a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Partner,
    Customer,
    Operator,
}

/// The issuer of a command: `{"kind": "partner", "id": "uuid", "role": "admin_agent"}`.
/// `role` is kept as given: an unknown role is a business rejection (`unauthorized_actor`),
/// not a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub kind: ActorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Actor {
    pub fn operator() -> Actor {
        Actor {
            id: None,
            kind: ActorKind::Operator,
            role: None,
        }
    }
    pub fn partner(id: Uuid, role: &str) -> Actor {
        Actor {
            id: Some(id),
            kind: ActorKind::Partner,
            role: Some(role.to_string()),
        }
    }
    pub fn customer(id: Uuid) -> Actor {
        Actor {
            id: Some(id),
            kind: ActorKind::Customer,
            role: None,
        }
    }
}

/// `approved` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationOutcome {
    Approved,
    Rejected,
}

/// `approved` or `declined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreditOutcome {
    Approved,
    Declined,
}

/// Revenue category; perpetual software does not count toward the direct-bill threshold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RevenueCategory {
    Cloud,
    PerpetualSoftware,
}

/// `advanced` (Advanced Support for Partners) or `premier` (Premier Support for Partners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SupportPlan {
    Advanced,
    Premier,
}

/// What a partner registers to show its capabilities (a direct-bill recommendation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManagedServiceKind {
    ManagedService,
    IpService,
    CustomerSolution,
}

macro_rules! payload {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }
    };
}

payload!(/// A partner enrolls itself; it starts as an indirect reseller with verification pending.
    EnrollPartner { partner_id: Uuid, #[schemars(schema_with = "text_schema")] legal_name: String, country: Country, tenant_id: Uuid, primary_contact_email: Email });
payload!(/// The operator's verification desk decides a pending enrollment.
    VerifyPartner { partner_id: Uuid, outcome: VerificationOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "optional_text_schema")] reason: Option<String> });
payload!(/// A partner associates its location MPN ID (same country as the CSP account).
    AssociateMpnId { partner_id: Uuid, #[schemars(schema_with = "mpn_id_schema")] mpn_id: String, mpn_country: Country });
payload!(/// A global admin signs the partner agreement (MPA).
    SignMPA { partner_id: Uuid, signer_email: Email, #[schemars(schema_with = "text_schema")] agreement_version: String });
payload!(/// The operator authorises a verified partner as indirect provider (distributor).
    AuthorizeIndirectProvider { partner_id: Uuid });
payload!(/// An indirect provider invites an indirect reseller of its region.
    InviteReseller { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
payload!(/// The reseller accepts: relationship established, provider gets admin access.
    AcceptInvitation { invitation_id: Uuid, reseller_id: Uuid });
payload!(/// The reseller declines a pending invitation.
    DeclineInvitation { invitation_id: Uuid, reseller_id: Uuid });
payload!(/// The provider withdraws a pending invitation.
    RevokeInvitation { invitation_id: Uuid, provider_id: Uuid });
payload!(/// The reseller removes the provider's admin access; the relationship stays.
    RemoveAdminAccess { provider_id: Uuid, reseller_id: Uuid });
payload!(/// The operator (through support) ends a provider-reseller relationship.
    EndRelationship { provider_id: Uuid, reseller_id: Uuid, #[schemars(schema_with = "text_schema")] reason: String });
payload!(/// A partner registers a customer tenant.
    RegisterCustomer { customer_id: Uuid, #[schemars(schema_with = "text_schema")] company_name: String, country: Country, tenant_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")] affiliated_partner_id: Option<Uuid> });
payload!(/// The customer accepts the customer agreement (MCA).
    AcceptCustomerAgreement { customer_id: Uuid, signer_email: Email, #[schemars(schema_with = "text_schema")] agreement_version: String });
payload!(/// A reseller (with its provider) or a direct-bill partner (without) invites a customer.
    InviteCustomer { invitation_id: Uuid, reseller_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")] provider_id: Option<Uuid>,
        customer_id: Uuid });
payload!(/// The customer accepts; relationships with the reseller and the provider start together.
    AcceptCustomerInvitation { invitation_id: Uuid, customer_id: Uuid });
payload!(/// The operator or the partner ends a partner-customer relationship.
    EndCustomerRelationship { customer_id: Uuid, partner_id: Uuid });
payload!(/// The operator records a month's revenue (negative amounts are adjustments).
    RecordRevenue { partner_id: Uuid, month: Month, category: RevenueCategory, amount_usd: UsdAmount });
payload!(/// A partner buys a support plan.
    PurchaseSupportPlan { partner_id: Uuid, plan: SupportPlan });
payload!(/// A partner attests its billing and provisioning infrastructure (the latest counts).
    AttestInfrastructure { partner_id: Uuid, billing: bool, provisioning: bool });
payload!(/// A partner registers a managed service, IP service or customer solution.
    RegisterManagedService { partner_id: Uuid, kind: ManagedServiceKind, #[schemars(schema_with = "text_schema")] name: String });
payload!(/// A partner applies to become a direct-bill partner.
    ApplyForDirectBill { partner_id: Uuid });
payload!(/// The operator's credit desk decides an open direct-bill application.
    RecordCreditCheck { partner_id: Uuid, outcome: CreditOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")] credit_limit_usd: Option<UsdAmount> });
payload!(/// A global admin accepts the direct-bill terms: the partner becomes direct bill.
    AcceptDirectBillTerms { partner_id: Uuid });
payload!(/// The operator moves a direct-bill partner back to indirect reseller.
    TransitionToIndirectReseller { partner_id: Uuid });

macro_rules! commands {
    ($($name:ident),* $(,)?) => {
        /// A command payload, tagged by the envelope's `type`.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Command { $($name($name)),* }

        impl Command {
            /// Every command type name, in SPEC.md order.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The `type` string of this command.
            pub fn type_name(&self) -> &'static str {
                match self { $(Command::$name(_) => stringify!($name)),* }
            }

            /// Decodes a payload given its type name.
            pub fn from_parts(type_name: &str, payload: &str) -> Result<Command, String> {
                match type_name {
                    $(stringify!($name) => serde_json::from_str::<$name>(payload)
                        .map(Command::$name)
                        .map_err(|error| format!("payload of {}: {error}", stringify!($name))),)*
                    other => Err(format!("unknown command type {other:?}")),
                }
            }

            /// The JSON Schema of each payload, by type name.
            pub fn payload_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$((stringify!($name), generator.root_schema_for::<$name>())),*]
            }
        }
    };
}

commands!(
    EnrollPartner,
    VerifyPartner,
    AssociateMpnId,
    SignMPA,
    AuthorizeIndirectProvider,
    InviteReseller,
    AcceptInvitation,
    DeclineInvitation,
    RevokeInvitation,
    RemoveAdminAccess,
    EndRelationship,
    RegisterCustomer,
    AcceptCustomerAgreement,
    InviteCustomer,
    AcceptCustomerInvitation,
    EndCustomerRelationship,
    RecordRevenue,
    PurchaseSupportPlan,
    AttestInfrastructure,
    RegisterManagedService,
    ApplyForDirectBill,
    RecordCreditCheck,
    AcceptDirectBillTerms,
    TransitionToIndirectReseller,
);

impl Command {
    /// Checks the limits that serde cannot express: text lengths, MPN digits. The JSON Schemas
    /// state the same limits ([`text_pattern`], [`mpn_id_pattern`]); a test runs boundary
    /// values through both.
    fn check_limits(&self) -> Result<(), String> {
        fn text(name: &str, value: &str) -> Result<(), String> {
            if value.trim().is_empty() {
                return Err(format!("{name} is empty"));
            }
            if value.len() > TEXT_BYTES_MAX {
                return Err(format!("{name} is longer than {TEXT_BYTES_MAX} bytes"));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("{name} contains control characters"));
            }
            Ok(())
        }
        match self {
            Command::EnrollPartner(c) => text("legal_name", &c.legal_name),
            Command::VerifyPartner(c) => c.reason.as_deref().map_or(Ok(()), |r| text("reason", r)),
            Command::AssociateMpnId(c) => {
                if c.mpn_id.is_empty()
                    || c.mpn_id.len() > MPN_ID_DIGITS_MAX
                    || !c.mpn_id.bytes().all(|b| b.is_ascii_digit())
                {
                    Err(format!(
                        "mpn_id {:?} is not 1 to {MPN_ID_DIGITS_MAX} digits",
                        c.mpn_id
                    ))
                } else {
                    Ok(())
                }
            }
            Command::SignMPA(c) => text("agreement_version", &c.agreement_version),
            Command::EndRelationship(c) => text("reason", &c.reason),
            Command::RegisterCustomer(c) => text("company_name", &c.company_name),
            Command::AcceptCustomerAgreement(c) => text("agreement_version", &c.agreement_version),
            Command::RegisterManagedService(c) => text("name", &c.name),
            _ => Ok(()),
        }
    }
}

/// A parsed command envelope (SPEC.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub issued_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: Option<String>,
    pub command: Command,
}

/// Input that is not a valid command: the reason, and the `command_id` when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedCommand {
    pub command_id: Option<Uuid>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    command_id: Uuid,
    #[serde(rename = "type", borrow)]
    command_type: Cow<'a, str>,
    issued_at: DateTime<Utc>,
    actor: Actor,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct CommandIdOnly {
    command_id: Option<Uuid>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    command_id: Uuid,
    #[serde(rename = "type")]
    command_type: &'static str,
    issued_at: &'a DateTime<Utc>,
    actor: &'a Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    payload: &'a Command,
}

#[derive(Serialize)]
struct BodyOut<'a> {
    #[serde(rename = "type")]
    command_type: &'static str,
    issued_at: &'a DateTime<Utc>,
    actor: &'a Actor,
    payload: &'a Command,
}

impl CommandEnvelope {
    /// Parses one envelope from JSON bytes, strictly.
    pub fn parse(bytes: &[u8]) -> Result<CommandEnvelope, MalformedCommand> {
        let command_id = || {
            serde_json::from_slice::<CommandIdOnly>(bytes)
                .ok()
                .and_then(|c| c.command_id)
        };
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(MalformedCommand {
                command_id: None,
                reason: format!(
                    "command is {} bytes, above the limit of {COMMAND_BYTES_MAX}",
                    bytes.len()
                ),
            });
        }
        let raw: RawEnvelope<'_> =
            serde_json::from_slice(bytes).map_err(|error| MalformedCommand {
                command_id: command_id(),
                reason: format!("envelope: {error}"),
            })?;
        let malformed = |reason: String| MalformedCommand {
            command_id: Some(raw.command_id),
            reason,
        };
        let command =
            Command::from_parts(&raw.command_type, raw.payload.get()).map_err(malformed)?;
        command
            .check_limits()
            .map_err(|r| malformed(format!("payload of {}: {r}", command.type_name())))?;
        if let Some(correlation_id) = &raw.correlation_id {
            if correlation_id.len() > CORRELATION_ID_BYTES_MAX {
                return Err(malformed(format!(
                    "correlation_id is longer than {CORRELATION_ID_BYTES_MAX} bytes"
                )));
            }
        }
        Ok(CommandEnvelope {
            command_id: raw.command_id,
            issued_at: raw.issued_at,
            actor: raw.actor,
            correlation_id: raw.correlation_id,
            command,
        })
    }

    /// The envelope as one JSON line (the form upstream systems send).
    pub fn to_json(&self) -> String {
        let out = EnvelopeOut {
            command_id: self.command_id,
            command_type: self.command.type_name(),
            issued_at: &self.issued_at,
            actor: &self.actor,
            correlation_id: self.correlation_id.as_deref(),
            payload: &self.command,
        };
        serde_json::to_string(&out).unwrap_or_default()
    }

    /// The bytes that identify the command apart from its id and correlation id: the same
    /// `command_id` with other body bytes is a `command_id_conflict`. Deterministic for a
    /// given build; field order follows the type definitions.
    pub fn body_bytes(&self) -> Vec<u8> {
        let body = BodyOut {
            command_type: self.command.type_name(),
            issued_at: &self.issued_at,
            actor: &self.actor,
            payload: &self.command,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENROLL: &str = r#"{"command_id":"6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e0001","type":"EnrollPartner","issued_at":"2026-01-05T10:00:00Z","actor":{"kind":"partner","id":"6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e0002","role":"global_admin"},"payload":{"partner_id":"6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e0002","legal_name":"Contoso","country":"DE","tenant_id":"6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e0003","primary_contact_email":"ana@contoso.example"}}"#;

    #[test]
    fn parses_and_round_trips_an_envelope() {
        let envelope = CommandEnvelope::parse(ENROLL.as_bytes()).unwrap();
        assert_eq!(envelope.command.type_name(), "EnrollPartner");
        let again = CommandEnvelope::parse(envelope.to_json().as_bytes()).unwrap();
        assert_eq!(again, envelope);
    }

    #[test]
    fn unknown_fields_are_malformed_with_the_command_id() {
        let typo = ENROLL.replace("\"legal_name\"", "\"legal_nam\"");
        let error = CommandEnvelope::parse(typo.as_bytes()).unwrap_err();
        assert!(error.reason.contains("legal_nam"), "{}", error.reason);
        assert!(error.command_id.is_some());
        let extra = ENROLL.replace("\"actor\"", "\"colour\":1,\"actor\"");
        let error = CommandEnvelope::parse(extra.as_bytes()).unwrap_err();
        assert!(error.reason.contains("colour"), "{}", error.reason);
    }

    #[test]
    fn unknown_type_and_garbage_are_malformed() {
        let unknown = ENROLL.replace("EnrollPartner", "EnrolPartner");
        assert!(CommandEnvelope::parse(unknown.as_bytes())
            .unwrap_err()
            .reason
            .contains("unknown command type"));
        let garbage = CommandEnvelope::parse(b"\xff\x00not json").unwrap_err();
        assert_eq!(garbage.command_id, None);
    }
}
