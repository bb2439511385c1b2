//! Events: the 29 event types, their streams, and the stored envelope of SPEC.md section 5.
//!
//! Canonical bytes: an envelope serializes with its keys in sorted order and no whitespace
//! (see `schemas/CANONICAL.md`); every data struct declares its fields alphabetically so that
//! direct serialization already is canonical (a test checks this against a sorted map).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::command::{Actor, ManagedServiceKind, RevenueCategory, SupportPlan};
use crate::upcast::{self, Member, Upcast};
use crate::values::{Commitment, Country, Month, UsdAmount, UsdTotal};

/// Schema version written into every new envelope. Raised when the envelope or an event's data
/// changes shape; stored envelopes of older versions keep their bytes and are upcast on decode
/// (`crate::upcast`). Version 2 added `submitted_by`.
pub const SCHEMA_VERSION: u32 = 2;

/// The longest principal id (`submitted_by`), in characters (all ASCII).
pub const PRINCIPAL_ID_CHARS_MAX: usize = 128;

/// The JSON Schema pattern of a principal id: what [`check_principal_id`] accepts.
pub const PRINCIPAL_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// Checks a principal id: 1 to [`PRINCIPAL_ID_CHARS_MAX`] ASCII letters, digits, `.`, `_`, `-`
/// (opaque ids, never an e-mail address: `submitted_by` is hashed and cannot be erased).
pub fn check_principal_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > PRINCIPAL_ID_CHARS_MAX {
        return Err(format!(
            "a principal id has 1 to {PRINCIPAL_ID_CHARS_MAX} characters, not {}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "principal id {id:?} contains {bad:?}: ids are opaque (letters, digits, '.', '_', '-'), never an e-mail address"
        ));
    }
    Ok(())
}

/// A stream: the history of one partner, one customer or one provider-reseller pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    Partner(Uuid),
    Customer(Uuid),
    Relationship { provider: Uuid, reseller: Uuid },
}

impl StreamId {
    /// The data subject whose personal data an event of this stream may carry.
    pub fn subject(&self) -> Option<Uuid> {
        match self {
            StreamId::Partner(id) | StreamId::Customer(id) => Some(*id),
            StreamId::Relationship { .. } => None,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Partner(id) => write!(f, "partner-{id}"),
            StreamId::Customer(id) => write!(f, "customer-{id}"),
            StreamId::Relationship { provider, reseller } => {
                write!(f, "relationship-{provider}-{reseller}")
            }
        }
    }
}

impl FromStr for StreamId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a stream (partner-<id>, customer-<id>, relationship-<provider>-<reseller>)")
        };
        let uuid = |t: &str| Uuid::parse_str(t).map_err(|_| bad());
        if let Some(rest) = s.strip_prefix("partner-") {
            Ok(StreamId::Partner(uuid(rest)?))
        } else if let Some(rest) = s.strip_prefix("customer-") {
            Ok(StreamId::Customer(uuid(rest)?))
        } else if let Some(rest) = s.strip_prefix("relationship-") {
            if rest.len() != 73 || rest.as_bytes()[36] != b'-' {
                return Err(bad());
            }
            Ok(StreamId::Relationship {
                provider: uuid(&rest[..36])?,
                reseller: uuid(&rest[37..])?,
            })
        } else {
            Err(bad())
        }
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Cow<'de, str>>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Program roles a partner holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProgramRole {
    IndirectReseller,
    IndirectProvider,
    DirectBill,
}

/// Verification state of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    Pending,
    Approved,
    Rejected,
}

/// In which capacity a partner serves a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerPartnerRole {
    /// The partner that invited the customer (an indirect reseller or a direct-bill partner).
    Reseller,
    /// The indirect provider named in the invitation.
    Provider,
}

macro_rules! event_data {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $(pub $field: $ty),* }
    };
}

// Fields in alphabetical order: serialization is then canonical without a sorting pass.
event_data!(/// A partner enrolled as indirect reseller, verification pending.
    PartnerEnrolled { country: Country, legal_name: String, partner_id: Uuid, primary_contact_email: Commitment, region: String, role: ProgramRole, tenant_id: Uuid, verification: VerificationStatus });
event_data!(/// Verification approved.
    PartnerVerified { partner_id: Uuid });
event_data!(/// Verification rejected.
    PartnerVerificationRejected { partner_id: Uuid, reason: Option<String> });
event_data!(/// An MPN ID associated (replacing an earlier one, if any).
    MpnIdAssociated { mpn_country: Country, mpn_id: String, partner_id: Uuid, replaced_mpn_id: Option<String> });
event_data!(/// The MPA signed by a global admin.
    MpaSigned { agreement_version: String, partner_id: Uuid, signer_email: Commitment });
event_data!(/// The partner is an indirect provider (its indirect reseller role ends).
    IndirectProviderAuthorized { partner_id: Uuid });
event_data!(/// A provider invited a reseller.
    ResellerInvited { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The reseller accepted the invitation.
    InvitationAccepted { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The provider-reseller relationship is active.
    RelationshipEstablished { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The provider has admin access to the reseller's work account.
    AdminAccessGranted { provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The reseller declined the invitation.
    InvitationDeclined { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The provider revoked the invitation.
    InvitationRevoked { invitation_id: Uuid, provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The reseller removed the provider's admin access.
    AdminAccessRemoved { provider_id: Uuid, reseller_id: Uuid });
event_data!(/// The relationship ended (through support).
    RelationshipEnded { provider_id: Uuid, reason: String, reseller_id: Uuid });
event_data!(/// A customer tenant registered.
    CustomerRegistered { affiliated_partner_id: Option<Uuid>, company_name: String, country: Country, customer_id: Uuid, region: String, registered_by: Uuid, tenant_id: Uuid });
event_data!(/// The customer accepted the MCA.
    CustomerAgreementAccepted { agreement_version: String, customer_id: Uuid, signer_email: Commitment });
event_data!(/// A partner invited a customer (with its provider, or alone as direct-bill partner).
    CustomerInvited { customer_id: Uuid, invitation_id: Uuid, provider_id: Option<Uuid>, reseller_id: Uuid });
event_data!(/// A partner-customer relationship is active.
    CustomerRelationshipEstablished { customer_id: Uuid, invitation_id: Uuid, partner_id: Uuid, partner_role: CustomerPartnerRole });
event_data!(/// A partner-customer relationship ended.
    CustomerRelationshipEnded { customer_id: Uuid, partner_id: Uuid });
event_data!(/// Revenue recorded for a month and category.
    RevenueRecorded { amount_usd: UsdAmount, category: RevenueCategory, month: Month, partner_id: Uuid });
event_data!(/// A support plan purchased.
    SupportPlanPurchased { partner_id: Uuid, plan: SupportPlan });
event_data!(/// Infrastructure attested (replaces the previous attestation).
    InfrastructureAttested { billing: bool, partner_id: Uuid, provisioning: bool });
event_data!(/// A managed service, IP service or customer solution registered.
    ManagedServiceRegistered { kind: ManagedServiceKind, name: String, partner_id: Uuid });
event_data!(/// A direct-bill application submitted with the requirements met.
    DirectBillApplicationSubmitted { partner_id: Uuid, ttm_cloud_revenue_usd: UsdTotal });
event_data!(/// Credit approved for the open application.
    CreditCheckApproved { credit_limit_usd: Option<UsdAmount>, partner_id: Uuid });
event_data!(/// Credit declined: the application is closed.
    CreditCheckDeclined { partner_id: Uuid });
event_data!(/// The partner is now a direct-bill partner.
    DirectBillActivated { partner_id: Uuid });
event_data!(/// The partner moved from direct bill back to indirect reseller.
    TransitionedToIndirectReseller { partner_id: Uuid });

macro_rules! events {
    ($($name:ident => $stream:expr),* $(,)?) => {
        /// An event's data, tagged by the envelope's `type`.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Event { $($name($name)),* }

        impl Event {
            /// Every event type name.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The `type` string of this event.
            pub fn type_name(&self) -> &'static str {
                match self { $(Event::$name(_) => stringify!($name)),* }
            }

            /// The stream this event belongs to.
            pub fn stream(&self) -> StreamId {
                match self { $(Event::$name(e) => ($stream)(e)),* }
            }

            /// Decodes event data given its type name.
            pub fn from_parts(type_name: &str, data: &str) -> Result<Event, String> {
                match type_name {
                    $(stringify!($name) => serde_json::from_str::<$name>(data)
                        .map(Event::$name)
                        .map_err(|error| format!("data of {}: {error}", stringify!($name))),)*
                    other => Err(format!("unknown event type {other:?}")),
                }
            }

            /// The JSON Schema of each event's data, by type name.
            pub fn data_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$((stringify!($name), generator.root_schema_for::<$name>())),*]
            }
        }
    };
}

fn partner(id: Uuid) -> StreamId {
    StreamId::Partner(id)
}
fn customer(id: Uuid) -> StreamId {
    StreamId::Customer(id)
}
fn pair(provider: Uuid, reseller: Uuid) -> StreamId {
    StreamId::Relationship { provider, reseller }
}

events!(
    PartnerEnrolled => |e: &PartnerEnrolled| partner(e.partner_id),
    PartnerVerified => |e: &PartnerVerified| partner(e.partner_id),
    PartnerVerificationRejected => |e: &PartnerVerificationRejected| partner(e.partner_id),
    MpnIdAssociated => |e: &MpnIdAssociated| partner(e.partner_id),
    MpaSigned => |e: &MpaSigned| partner(e.partner_id),
    IndirectProviderAuthorized => |e: &IndirectProviderAuthorized| partner(e.partner_id),
    ResellerInvited => |e: &ResellerInvited| pair(e.provider_id, e.reseller_id),
    InvitationAccepted => |e: &InvitationAccepted| pair(e.provider_id, e.reseller_id),
    RelationshipEstablished => |e: &RelationshipEstablished| pair(e.provider_id, e.reseller_id),
    AdminAccessGranted => |e: &AdminAccessGranted| pair(e.provider_id, e.reseller_id),
    InvitationDeclined => |e: &InvitationDeclined| pair(e.provider_id, e.reseller_id),
    InvitationRevoked => |e: &InvitationRevoked| pair(e.provider_id, e.reseller_id),
    AdminAccessRemoved => |e: &AdminAccessRemoved| pair(e.provider_id, e.reseller_id),
    RelationshipEnded => |e: &RelationshipEnded| pair(e.provider_id, e.reseller_id),
    CustomerRegistered => |e: &CustomerRegistered| customer(e.customer_id),
    CustomerAgreementAccepted => |e: &CustomerAgreementAccepted| customer(e.customer_id),
    CustomerInvited => |e: &CustomerInvited| customer(e.customer_id),
    CustomerRelationshipEstablished => |e: &CustomerRelationshipEstablished| customer(e.customer_id),
    CustomerRelationshipEnded => |e: &CustomerRelationshipEnded| customer(e.customer_id),
    RevenueRecorded => |e: &RevenueRecorded| partner(e.partner_id),
    SupportPlanPurchased => |e: &SupportPlanPurchased| partner(e.partner_id),
    InfrastructureAttested => |e: &InfrastructureAttested| partner(e.partner_id),
    ManagedServiceRegistered => |e: &ManagedServiceRegistered| partner(e.partner_id),
    DirectBillApplicationSubmitted => |e: &DirectBillApplicationSubmitted| partner(e.partner_id),
    CreditCheckApproved => |e: &CreditCheckApproved| partner(e.partner_id),
    CreditCheckDeclined => |e: &CreditCheckDeclined| partner(e.partner_id),
    DirectBillActivated => |e: &DirectBillActivated| partner(e.partner_id),
    TransitionedToIndirectReseller => |e: &TransitionedToIndirectReseller| partner(e.partner_id),
);

impl Event {
    /// The personal fields of this event: field name and commitment. Their clear values live
    /// in the personal-data store under the stream's subject.
    pub fn personal_fields(&self) -> Vec<(&'static str, Commitment)> {
        match self {
            Event::PartnerEnrolled(e) => vec![("primary_contact_email", e.primary_contact_email)],
            Event::MpaSigned(e) => vec![("signer_email", e.signer_email)],
            Event::CustomerAgreementAccepted(e) => vec![("signer_email", e.signer_email)],
            _ => Vec::new(),
        }
    }
}

/// An event envelope without its chain fields (`prev_hash`, `hash`): exactly what the
/// canonical bytes encode.
///
/// `schema_version` is the version the envelope is stored as, and its canonical bytes are
/// written in that version's shape, so a decoded envelope serializes to its stored bytes; the
/// other fields are the current shape, upcast on decode (`crate::upcast`). New envelopes are
/// [`SCHEMA_VERSION`] with `submitted_by` set.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub position: u64,
    pub stream: StreamId,
    pub stream_version: u64,
    pub schema_version: u32,
    /// The authenticated principal that submitted the command (`"local"` for the CLI);
    /// `None` for a version 1 envelope, which did not record it.
    pub submitted_by: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub command_id: Uuid,
    pub correlation_id: Option<String>,
    pub actor: Actor,
    pub event: Event,
}

impl Serialize for EventEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Keys in sorted order: this is the canonical form. Written in the shape of the stored
        // version: version 1 has no `submitted_by` (its bytes stay as they were hashed).
        let with_submitter = self.schema_version >= 2;
        let mut s =
            serializer.serialize_struct("EventEnvelope", 12 + usize::from(with_submitter))?;
        s.serialize_field("actor", &self.actor)?;
        s.serialize_field("command_id", &self.command_id)?;
        s.serialize_field("correlation_id", &self.correlation_id)?;
        s.serialize_field("data", &self.event)?;
        s.serialize_field("event_id", &self.event_id)?;
        s.serialize_field("occurred_at", &self.occurred_at)?;
        s.serialize_field("position", &self.position)?;
        s.serialize_field("recorded_at", &self.recorded_at)?;
        s.serialize_field("schema_version", &self.schema_version)?;
        s.serialize_field("stream", &self.stream)?;
        s.serialize_field("stream_version", &self.stream_version)?;
        if with_submitter {
            s.serialize_field("submitted_by", &self.submitted_by)?;
        }
        s.serialize_field("type", self.event.type_name())?;
        s.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventEnvelope<'a> {
    actor: Actor,
    command_id: Uuid,
    correlation_id: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    position: u64,
    recorded_at: DateTime<Utc>,
    schema_version: u32,
    stream: StreamId,
    stream_version: u64,
    #[serde(default, borrow)]
    submitted_by: Member<'a>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
}

/// The part of an envelope a fold needs, decoded without the rest (faster than
/// [`EventEnvelope::decode`]: ids, actor and correlation are skipped, not parsed). Any stored
/// version this build reads, checked and upcast as by a full decode (`crate::upcast`).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldEvent {
    pub position: u64,
    pub stream_version: u64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub event: Event,
}

#[derive(Deserialize)]
struct RawFoldEnvelope<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    occurred_at: DateTime<Utc>,
    position: u64,
    recorded_at: DateTime<Utc>,
    schema_version: u32,
    stream_version: u64,
    #[serde(default, borrow)]
    submitted_by: Member<'a>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
}

impl FoldEvent {
    /// Decodes the fold view of canonical bytes.
    pub fn decode(bytes: &[u8]) -> Result<FoldEvent, String> {
        let raw: RawFoldEnvelope<'_> =
            serde_json::from_slice(bytes).map_err(|e| format!("envelope: {e}"))?;
        let mut members = Upcast {
            version: raw.schema_version,
            event_type: raw.event_type,
            data: Cow::Borrowed(raw.data.get()),
            submitted_by: raw.submitted_by,
        };
        upcast::to_current(&mut members)?;
        Ok(FoldEvent {
            position: raw.position,
            stream_version: raw.stream_version,
            occurred_at: raw.occurred_at,
            recorded_at: raw.recorded_at,
            event: Event::from_parts(&members.event_type, &members.data)?,
        })
    }
}

impl EventEnvelope {
    /// The canonical bytes: sorted keys, no whitespace, UTF-8. What the hash chain covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out);
        out
    }

    /// Appends the canonical bytes to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        debug_assert!(
            (self.schema_version >= 2) == self.submitted_by.is_some(),
            "a version 2 envelope has a submitter, a version 1 envelope none"
        );
        // Serializing plain data into a Vec cannot fail.
        if let Err(error) = serde_json::to_writer(&mut *out, self) {
            unreachable!("serializing an event envelope failed: {error}");
        }
    }

    /// Decodes canonical bytes of any version this build reads, upcast to the current shape
    /// (`schema_version` stays the stored one).
    pub fn decode(bytes: &[u8]) -> Result<EventEnvelope, String> {
        let raw: RawEventEnvelope<'_> =
            serde_json::from_slice(bytes).map_err(|e| format!("envelope: {e}"))?;
        let mut members = Upcast {
            version: raw.schema_version,
            event_type: raw.event_type,
            data: Cow::Borrowed(raw.data.get()),
            submitted_by: raw.submitted_by,
        };
        upcast::to_current(&mut members)?;
        let event = Event::from_parts(&members.event_type, &members.data)?;
        if event.stream() != raw.stream {
            return Err(format!(
                "stream {} does not match the event's data",
                raw.stream
            ));
        }
        Ok(EventEnvelope {
            event_id: raw.event_id,
            position: raw.position,
            stream: raw.stream,
            stream_version: raw.stream_version,
            schema_version: raw.schema_version,
            submitted_by: members.submitted_by.into_option().map(Cow::into_owned),
            occurred_at: raw.occurred_at,
            recorded_at: raw.recorded_at,
            command_id: raw.command_id,
            correlation_id: raw.correlation_id,
            actor: raw.actor,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip() {
        let p = Uuid::from_u128(1);
        let r = Uuid::from_u128(2);
        for s in [
            StreamId::Partner(p),
            StreamId::Customer(r),
            StreamId::Relationship {
                provider: p,
                reseller: r,
            },
        ] {
            assert_eq!(s.to_string().parse::<StreamId>().unwrap(), s);
        }
        assert!("relationship-x".parse::<StreamId>().is_err());
    }
}
