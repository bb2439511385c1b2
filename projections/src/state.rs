//! `LedgerState`: partners, relationships, invitations and customers, folded from events.
//!
//! `apply` never rejects: an event that cannot follow the state is a bug in the domain (it
//! decided an event its own state does not allow) or a damaged log, and panics.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use csp_ledger_schemas::command::{ManagedServiceKind, RevenueCategory, SupportPlan};
use csp_ledger_schemas::event::{
    CustomerPartnerRole, Event, ProgramRole, StreamId, VerificationStatus,
};
use csp_ledger_schemas::values::{Country, Month, UsdAmount, UsdTotal};
use serde::{Deserialize, Serialize};

use crate::compact::{Roles, VecMap, VecSet};
use csp_ledger_schemas::regions::RegionId;
use uuid::Uuid;

/// What the fold needs from an envelope besides the event itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    pub position: u64,
    pub stream_version: u64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// An event that cannot follow the state: [`LedgerState::check`] refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldRefused {
    pub position: u64,
    pub reason: String,
}

impl std::fmt::Display for FoldRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {} does not fold: {}", self.position, self.reason)
    }
}

impl std::error::Error for FoldRefused {}

/// An MPN ID association.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mpn {
    pub mpn_id: String,
    pub mpn_country: Country,
}

/// A signed agreement (MPA or MCA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub agreement_version: String,
    pub signed_at: DateTime<Utc>,
}

/// Credit state of an open direct-bill application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreditState {
    Pending,
    Approved { credit_limit_usd: Option<UsdAmount> },
}

/// An open direct-bill application (closed by a declined credit check or by activation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectBillApplication {
    pub submitted_at: DateTime<Utc>,
    pub credit: CreditState,
}

/// A partner as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    pub partner_id: Uuid,
    pub legal_name: String,
    pub country: Country,
    pub region: RegionId,
    pub tenant_id: Uuid,
    pub roles: Roles,
    pub verification: VerificationStatus,
    pub enrolled_at: DateTime<Utc>,
    pub mpn: Option<Mpn>,
    pub mpa: Option<Agreement>,
    pub application: Option<DirectBillApplication>,
    pub direct_bill_since: Option<DateTime<Utc>>,
    pub support_plan: Option<SupportPlan>,
    /// The latest attestation: (billing, provisioning).
    pub infrastructure: Option<(bool, bool)>,
    pub managed_services: Vec<(ManagedServiceKind, String)>,
    /// Revenue total in cents by (month index, category): the cents of a [`UsdTotal`], in
    /// `i128` so that sums of many large amounts cannot wrap.
    pub revenue: VecMap<(i32, RevenueCategory), i128>,
    /// Version of the partner's stream.
    pub version: u64,
}

impl Partner {
    pub fn has_role(&self, role: ProgramRole) -> bool {
        self.roles.contains(role)
    }

    /// Revenue total of one month and category (exact: see [`UsdTotal`]).
    pub fn revenue_total(&self, month: Month, category: RevenueCategory) -> UsdTotal {
        UsdTotal::from_cents(
            self.revenue
                .get(&(month.index(), category))
                .copied()
                .unwrap_or(0),
        )
    }
}

/// Status of a provider-reseller pair, as the read models report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RelationshipStatus {
    Invited,
    Active,
    Ended,
    Declined,
    Revoked,
}

impl RelationshipStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipStatus::Invited => "invited",
            RelationshipStatus::Active => "active",
            RelationshipStatus::Ended => "ended",
            RelationshipStatus::Declined => "declined",
            RelationshipStatus::Revoked => "revoked",
        }
    }
}

/// A provider-reseller pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    pub provider_id: Uuid,
    pub reseller_id: Uuid,
    pub status: RelationshipStatus,
    pub admin_access: bool,
    /// When the current status began.
    pub since: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub pending_invitation: Option<Uuid>,
    pub version: u64,
}

/// State of an invitation (reseller or customer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
}

/// A provider's invitation to a reseller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResellerInvitation {
    pub provider_id: Uuid,
    pub reseller_id: Uuid,
    pub status: InvitationStatus,
}

/// A partner's invitation to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerInvitation {
    pub customer_id: Uuid,
    pub reseller_id: Uuid,
    pub provider_id: Option<Uuid>,
    pub status: InvitationStatus,
}

/// One partner's relationship with a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPartner {
    pub active: bool,
    pub role: CustomerPartnerRole,
    pub since: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A customer tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: Uuid,
    pub company_name: String,
    pub country: Country,
    pub region: RegionId,
    pub tenant_id: Uuid,
    pub affiliated_partner_id: Option<Uuid>,
    pub registered_by: Uuid,
    pub mca: Option<Agreement>,
    pub partners: VecMap<Uuid, CustomerPartner>,
    pub version: u64,
}

impl Customer {
    pub fn relationship_active(&self, partner_id: Uuid) -> bool {
        self.partners.get(&partner_id).is_some_and(|p| p.active)
    }
}

/// Who holds a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TenantOwner {
    Partner(Uuid),
    Customer(Uuid),
}

/// The whole ledger state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Position of the last event folded (0 before the first).
    pub position: u64,
    pub partners: HashMap<Uuid, Partner>,
    pub customers: HashMap<Uuid, Customer>,
    pub relationships: HashMap<(Uuid, Uuid), Relationship>,
    pub resellers_by_provider: HashMap<Uuid, BTreeSet<Uuid>>,
    pub providers_by_reseller: HashMap<Uuid, VecSet<Uuid>>,
    pub reseller_invitations: HashMap<Uuid, ResellerInvitation>,
    pub customer_invitations: HashMap<Uuid, CustomerInvitation>,
    pub tenants: HashMap<Uuid, TenantOwner>,
    pub mpn_ids: HashMap<String, Uuid>,
    /// Positions of every stream's events, in order (the stream version is the index + 1).
    pub streams: HashMap<StreamId, Vec<u64>>,
    /// (first position, recorded_at) each time the ledger clock value changes: maps a time to
    /// the last position recorded at or before it (`as_of` by time).
    pub recorded: Vec<(u64, DateTime<Utc>)>,
    /// Per partner, the position of the first event that decided its verification
    /// (`PartnerVerified`, `PartnerVerificationRejected`): with the enrollment position (the
    /// first of its stream) this says whether it was pending at any position, so an `as_of`
    /// overdue list needs no refold (`views::overdue_verifications_at`).
    pub verification_decided_at: HashMap<Uuid, u64>,
}

impl LedgerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The version the next event of `stream` gets.
    pub fn next_stream_version(&self, stream: &StreamId) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |positions| positions.len() as u64)
            + 1
    }

    /// The last position recorded at or before `time` (0 when none).
    pub fn position_at(&self, time: DateTime<Utc>) -> u64 {
        let after = self.recorded.partition_point(|(_, at)| *at <= time);
        match after {
            0 => 0,
            i if i == self.recorded.len() => self.position,
            i => self.recorded[i].0 - 1,
        }
    }

    pub fn partner(&self, id: Uuid) -> Option<&Partner> {
        self.partners.get(&id)
    }

    pub fn customer(&self, id: Uuid) -> Option<&Customer> {
        self.customers.get(&id)
    }

    pub fn relationship(&self, provider_id: Uuid, reseller_id: Uuid) -> Option<&Relationship> {
        self.relationships.get(&(provider_id, reseller_id))
    }

    pub fn relationship_active(&self, provider_id: Uuid, reseller_id: Uuid) -> bool {
        self.relationship(provider_id, reseller_id)
            .is_some_and(|r| r.status == RelationshipStatus::Active)
    }

    /// Folds one event.
    ///
    /// # Panics
    ///
    /// When the event cannot follow the state (it names a partner, customer, invitation or
    /// relationship that does not exist, or positions go backwards). The domain never decides
    /// such an event, so this means a bug or a damaged log.
    pub fn apply(&mut self, meta: &EventMeta, event: &Event) {
        // A full fold sees every position; a fold of some streams only (as-of queries) sees
        // increasing positions with gaps. Either way a stream's versions are contiguous.
        assert!(
            meta.position > self.position,
            "event positions must increase"
        );
        self.position = meta.position;
        let stream = event.stream();
        let expected_version = self.next_stream_version(&stream);
        assert_eq!(
            meta.stream_version, expected_version,
            "stream {stream} versions must be contiguous"
        );
        self.streams.entry(stream).or_default().push(meta.position);
        if self
            .recorded
            .last()
            .is_none_or(|(_, at)| *at != meta.recorded_at)
        {
            self.recorded.push((meta.position, meta.recorded_at));
        }
        let at = meta.occurred_at;
        match event {
            Event::PartnerEnrolled(_)
            | Event::PartnerVerified(_)
            | Event::PartnerVerificationRejected(_)
            | Event::MpnIdAssociated(_)
            | Event::MpaSigned(_)
            | Event::IndirectProviderAuthorized(_) => self.apply_onboarding(event, at),
            Event::ResellerInvited(_)
            | Event::InvitationAccepted(_)
            | Event::RelationshipEstablished(_)
            | Event::AdminAccessGranted(_)
            | Event::InvitationDeclined(_)
            | Event::InvitationRevoked(_)
            | Event::AdminAccessRemoved(_)
            | Event::RelationshipEnded(_) => self.apply_indirect(event, at),
            Event::CustomerRegistered(_)
            | Event::CustomerAgreementAccepted(_)
            | Event::CustomerInvited(_)
            | Event::CustomerRelationshipEstablished(_)
            | Event::CustomerRelationshipEnded(_) => self.apply_customer(event, at),
            Event::RevenueRecorded(_)
            | Event::SupportPlanPurchased(_)
            | Event::InfrastructureAttested(_)
            | Event::ManagedServiceRegistered(_)
            | Event::DirectBillApplicationSubmitted(_)
            | Event::CreditCheckApproved(_)
            | Event::CreditCheckDeclined(_)
            | Event::DirectBillActivated(_)
            | Event::TransitionedToIndirectReseller(_) => self.apply_program(event, at),
        }
        match stream {
            StreamId::Partner(id) => self.partner_mut(id).version = meta.stream_version,
            StreamId::Customer(id) => self.customer_mut(id).version = meta.stream_version,
            StreamId::Relationship { provider, reseller } => {
                self.relationship_mut(provider, reseller).version = meta.stream_version
            }
        }
    }

    /// Partner onboarding: enrollment, verification, MPN ID, MPA, indirect provider.
    fn apply_onboarding(&mut self, event: &Event, at: DateTime<Utc>) {
        match event {
            Event::PartnerEnrolled(e) => {
                let partner = Partner {
                    partner_id: e.partner_id,
                    legal_name: e.legal_name.clone(),
                    country: e.country,
                    region: RegionId::intern(&e.region),
                    tenant_id: e.tenant_id,
                    roles: Roles::of(e.role),
                    verification: e.verification,
                    enrolled_at: at,
                    mpn: None,
                    mpa: None,
                    application: None,
                    direct_bill_since: None,
                    support_plan: None,
                    infrastructure: None,
                    managed_services: Vec::new(),
                    revenue: VecMap::default(),
                    version: 0,
                };
                let previous = self.partners.insert(e.partner_id, partner);
                assert!(
                    previous.is_none(),
                    "partner {} enrolled twice",
                    e.partner_id
                );
                self.tenants
                    .insert(e.tenant_id, TenantOwner::Partner(e.partner_id));
            }
            Event::PartnerVerified(e) => {
                self.partner_mut(e.partner_id).verification = VerificationStatus::Approved;
                self.verification_decided_at
                    .entry(e.partner_id)
                    .or_insert(self.position);
            }
            Event::PartnerVerificationRejected(e) => {
                self.partner_mut(e.partner_id).verification = VerificationStatus::Rejected;
                self.verification_decided_at
                    .entry(e.partner_id)
                    .or_insert(self.position);
            }
            Event::MpnIdAssociated(e) => {
                if let Some(old) = &e.replaced_mpn_id {
                    self.mpn_ids.remove(old);
                }
                self.mpn_ids.insert(e.mpn_id.clone(), e.partner_id);
                self.partner_mut(e.partner_id).mpn = Some(Mpn {
                    mpn_id: e.mpn_id.clone(),
                    mpn_country: e.mpn_country,
                });
            }
            Event::MpaSigned(e) => {
                self.partner_mut(e.partner_id).mpa = Some(Agreement {
                    agreement_version: e.agreement_version.clone(),
                    signed_at: at,
                })
            }
            Event::IndirectProviderAuthorized(e) => {
                let partner = self.partner_mut(e.partner_id);
                partner.roles.remove(ProgramRole::IndirectReseller);
                partner.roles.insert(ProgramRole::IndirectProvider);
            }
            other => unreachable!("{} is not an onboarding event", other.type_name()),
        }
    }

    /// Reseller invitations and provider-reseller relationships.
    fn apply_indirect(&mut self, event: &Event, at: DateTime<Utc>) {
        match event {
            Event::ResellerInvited(e) => {
                self.reseller_invitations.insert(
                    e.invitation_id,
                    ResellerInvitation {
                        provider_id: e.provider_id,
                        reseller_id: e.reseller_id,
                        status: InvitationStatus::Pending,
                    },
                );
                self.resellers_by_provider
                    .entry(e.provider_id)
                    .or_default()
                    .insert(e.reseller_id);
                self.providers_by_reseller
                    .entry(e.reseller_id)
                    .or_default()
                    .insert(e.provider_id);
                let relationship = self
                    .relationships
                    .entry((e.provider_id, e.reseller_id))
                    .or_insert(Relationship {
                        provider_id: e.provider_id,
                        reseller_id: e.reseller_id,
                        status: RelationshipStatus::Invited,
                        admin_access: false,
                        since: at,
                        ended_at: None,
                        pending_invitation: None,
                        version: 0,
                    });
                relationship.status = RelationshipStatus::Invited;
                relationship.since = at;
                relationship.ended_at = None;
                relationship.admin_access = false;
                relationship.pending_invitation = Some(e.invitation_id);
            }
            Event::InvitationAccepted(e) => {
                self.invitation_mut(e.invitation_id).status = InvitationStatus::Accepted;
                self.relationship_mut(e.provider_id, e.reseller_id)
                    .pending_invitation = None;
            }
            Event::RelationshipEstablished(e) => {
                let relationship = self.relationship_mut(e.provider_id, e.reseller_id);
                relationship.status = RelationshipStatus::Active;
                relationship.since = at;
                relationship.ended_at = None;
            }
            Event::AdminAccessGranted(e) => {
                self.relationship_mut(e.provider_id, e.reseller_id)
                    .admin_access = true
            }
            Event::InvitationDeclined(e) => {
                self.invitation_mut(e.invitation_id).status = InvitationStatus::Declined;
                let relationship = self.relationship_mut(e.provider_id, e.reseller_id);
                relationship.pending_invitation = None;
                relationship.status = RelationshipStatus::Declined;
                relationship.since = at;
            }
            Event::InvitationRevoked(e) => {
                self.invitation_mut(e.invitation_id).status = InvitationStatus::Revoked;
                let relationship = self.relationship_mut(e.provider_id, e.reseller_id);
                relationship.pending_invitation = None;
                relationship.status = RelationshipStatus::Revoked;
                relationship.since = at;
            }
            Event::AdminAccessRemoved(e) => {
                self.relationship_mut(e.provider_id, e.reseller_id)
                    .admin_access = false
            }
            Event::RelationshipEnded(e) => {
                let relationship = self.relationship_mut(e.provider_id, e.reseller_id);
                relationship.status = RelationshipStatus::Ended;
                relationship.admin_access = false;
                relationship.ended_at = Some(at);
            }
            other => unreachable!("{} is not an indirect event", other.type_name()),
        }
    }

    /// Customers, their agreement, invitations and relationships.
    fn apply_customer(&mut self, event: &Event, at: DateTime<Utc>) {
        match event {
            Event::CustomerRegistered(e) => {
                let customer = Customer {
                    customer_id: e.customer_id,
                    company_name: e.company_name.clone(),
                    country: e.country,
                    region: RegionId::intern(&e.region),
                    tenant_id: e.tenant_id,
                    affiliated_partner_id: e.affiliated_partner_id,
                    registered_by: e.registered_by,
                    mca: None,
                    partners: VecMap::default(),
                    version: 0,
                };
                let previous = self.customers.insert(e.customer_id, customer);
                assert!(
                    previous.is_none(),
                    "customer {} registered twice",
                    e.customer_id
                );
                self.tenants
                    .insert(e.tenant_id, TenantOwner::Customer(e.customer_id));
            }
            Event::CustomerAgreementAccepted(e) => {
                self.customer_mut(e.customer_id).mca = Some(Agreement {
                    agreement_version: e.agreement_version.clone(),
                    signed_at: at,
                })
            }
            Event::CustomerInvited(e) => {
                self.customer_mut(e.customer_id);
                self.customer_invitations.insert(
                    e.invitation_id,
                    CustomerInvitation {
                        customer_id: e.customer_id,
                        reseller_id: e.reseller_id,
                        provider_id: e.provider_id,
                        status: InvitationStatus::Pending,
                    },
                );
            }
            Event::CustomerRelationshipEstablished(e) => {
                let invitation = self
                    .customer_invitations
                    .get_mut(&e.invitation_id)
                    .unwrap_or_else(|| panic!("customer invitation {} not found", e.invitation_id));
                invitation.status = InvitationStatus::Accepted;
                self.customer_mut(e.customer_id).partners.insert(
                    e.partner_id,
                    CustomerPartner {
                        active: true,
                        role: e.partner_role,
                        since: at,
                        ended_at: None,
                    },
                );
            }
            Event::CustomerRelationshipEnded(e) => {
                let customer = self.customer_mut(e.customer_id);
                let partner = customer.partners.get_mut(&e.partner_id).unwrap_or_else(|| {
                    panic!(
                        "customer relationship {} / {} not found",
                        e.customer_id, e.partner_id
                    )
                });
                partner.active = false;
                partner.ended_at = Some(at);
            }
            other => unreachable!("{} is not a customer event", other.type_name()),
        }
    }

    /// Revenue, support plan, infrastructure, managed services and the direct-bill path.
    fn apply_program(&mut self, event: &Event, at: DateTime<Utc>) {
        match event {
            Event::RevenueRecorded(e) => {
                let total = self
                    .partner_mut(e.partner_id)
                    .revenue
                    .entry_or_insert_with((e.month.index(), e.category), || 0);
                *total = UsdTotal::from_cents(*total).plus(e.amount_usd).cents;
            }
            Event::SupportPlanPurchased(e) => {
                self.partner_mut(e.partner_id).support_plan = Some(e.plan)
            }
            Event::InfrastructureAttested(e) => {
                self.partner_mut(e.partner_id).infrastructure = Some((e.billing, e.provisioning))
            }
            Event::ManagedServiceRegistered(e) => self
                .partner_mut(e.partner_id)
                .managed_services
                .push((e.kind, e.name.clone())),
            Event::DirectBillApplicationSubmitted(e) => {
                self.partner_mut(e.partner_id).application = Some(DirectBillApplication {
                    submitted_at: at,
                    credit: CreditState::Pending,
                })
            }
            Event::CreditCheckApproved(e) => {
                let partner = self.partner_mut(e.partner_id);
                let application = partner
                    .application
                    .as_mut()
                    .expect("credit check without an application");
                application.credit = CreditState::Approved {
                    credit_limit_usd: e.credit_limit_usd,
                };
            }
            Event::CreditCheckDeclined(e) => self.partner_mut(e.partner_id).application = None,
            Event::DirectBillActivated(e) => {
                let partner = self.partner_mut(e.partner_id);
                partner.application = None;
                partner.direct_bill_since = Some(at);
                partner.roles.remove(ProgramRole::IndirectReseller);
                partner.roles.insert(ProgramRole::DirectBill);
            }
            Event::TransitionedToIndirectReseller(e) => {
                let partner = self.partner_mut(e.partner_id);
                partner.direct_bill_since = None;
                partner.roles.remove(ProgramRole::DirectBill);
                partner.roles.insert(ProgramRole::IndirectReseller);
            }
            other => unreachable!("{} is not a program event", other.type_name()),
        }
    }

    /// Folds one event after checking that it can follow the state; an event that cannot is
    /// refused and the state is left as it was. For events from outside this instance (a
    /// replicated `csp.events` record), where [`LedgerState::apply`] would panic.
    pub fn try_apply(&mut self, meta: &EventMeta, event: &Event) -> Result<(), FoldRefused> {
        self.check(meta, event)?;
        self.apply(meta, event);
        Ok(())
    }

    /// Whether [`LedgerState::apply`] can fold the event: every assertion and lookup it makes,
    /// without changing anything.
    pub fn check(&self, meta: &EventMeta, event: &Event) -> Result<(), FoldRefused> {
        let refused = |reason: String| FoldRefused {
            position: meta.position,
            reason,
        };
        if meta.position <= self.position {
            return Err(refused(format!(
                "position does not follow {}",
                self.position
            )));
        }
        let stream = event.stream();
        let expected_version = self.next_stream_version(&stream);
        if meta.stream_version != expected_version {
            return Err(refused(format!(
                "stream {stream} has version {}, expected {expected_version}",
                meta.stream_version
            )));
        }
        let partner = |id: Uuid| match self.partners.get(&id) {
            Some(partner) => Ok(partner),
            None => Err(refused(format!("partner {id} not found"))),
        };
        let customer = |id: Uuid| match self.customers.get(&id) {
            Some(customer) => Ok(customer),
            None => Err(refused(format!("customer {id} not found"))),
        };
        let relationship = |provider: Uuid, reseller: Uuid| {
            if self.relationships.contains_key(&(provider, reseller)) {
                Ok(())
            } else {
                Err(refused(format!(
                    "relationship {provider} / {reseller} not found"
                )))
            }
        };
        let invitation = |id: Uuid| {
            if self.reseller_invitations.contains_key(&id) {
                Ok(())
            } else {
                Err(refused(format!("invitation {id} not found")))
            }
        };
        // The entity an event's stream names exists, except for the events that create it.
        let exists = |stream: &StreamId| match *stream {
            StreamId::Partner(id) => partner(id).map(drop),
            StreamId::Customer(id) => customer(id).map(drop),
            StreamId::Relationship { provider, reseller } => relationship(provider, reseller),
        };
        match event {
            Event::PartnerEnrolled(e) => {
                if self.partners.contains_key(&e.partner_id) {
                    return Err(refused(format!("partner {} enrolled twice", e.partner_id)));
                }
            }
            Event::CustomerRegistered(e) => {
                if self.customers.contains_key(&e.customer_id) {
                    return Err(refused(format!(
                        "customer {} registered twice",
                        e.customer_id
                    )));
                }
            }
            // Creates the relationship when it is missing.
            Event::ResellerInvited(_) => {}
            Event::InvitationAccepted(e) => {
                invitation(e.invitation_id)?;
                exists(&stream)?;
            }
            Event::InvitationDeclined(e) => {
                invitation(e.invitation_id)?;
                exists(&stream)?;
            }
            Event::InvitationRevoked(e) => {
                invitation(e.invitation_id)?;
                exists(&stream)?;
            }
            Event::CustomerRelationshipEstablished(e) => {
                if !self.customer_invitations.contains_key(&e.invitation_id) {
                    return Err(refused(format!(
                        "customer invitation {} not found",
                        e.invitation_id
                    )));
                }
                exists(&stream)?;
            }
            Event::CustomerRelationshipEnded(e) => {
                if customer(e.customer_id)?
                    .partners
                    .get(&e.partner_id)
                    .is_none()
                {
                    return Err(refused(format!(
                        "customer relationship {} / {} not found",
                        e.customer_id, e.partner_id
                    )));
                }
            }
            Event::CreditCheckApproved(e) => {
                if partner(e.partner_id)?.application.is_none() {
                    return Err(refused("credit check without an application".to_string()));
                }
            }
            _ => exists(&stream)?,
        }
        // Every event's stream is the entity it names first, which exists by now or which the
        // event creates (enrolment, registration, invitation): `apply` sets its version.
        Ok(())
    }

    fn partner_mut(&mut self, id: Uuid) -> &mut Partner {
        self.partners
            .get_mut(&id)
            .unwrap_or_else(|| panic!("partner {id} not found"))
    }

    fn customer_mut(&mut self, id: Uuid) -> &mut Customer {
        self.customers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("customer {id} not found"))
    }

    fn relationship_mut(&mut self, provider: Uuid, reseller: Uuid) -> &mut Relationship {
        self.relationships
            .get_mut(&(provider, reseller))
            .unwrap_or_else(|| panic!("relationship {provider} / {reseller} not found"))
    }

    fn invitation_mut(&mut self, id: Uuid) -> &mut ResellerInvitation {
        self.reseller_invitations
            .get_mut(&id)
            .unwrap_or_else(|| panic!("invitation {id} not found"))
    }
}
