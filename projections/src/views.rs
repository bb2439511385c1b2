//! The read models of SPEC.md section 6 as answers: pure functions from `LedgerState` to the
//! JSON shapes of section 7. The HTTP server and `csp-ledger query` serialize these.

use chrono::{DateTime, NaiveDate, Utc};
use csp_ledger_schemas::event::{CustomerPartnerRole, ProgramRole, StreamId, VerificationStatus};
use serde::Serialize;
use uuid::Uuid;

use crate::eligibility::{
    self, business_days_between, order_unmet, partner_unmet, relationship_unmet,
};
use crate::state::{CreditState, LedgerState, Relationship};

fn role_name(role: ProgramRole) -> &'static str {
    match role {
        ProgramRole::IndirectReseller => "indirect_reseller",
        ProgramRole::IndirectProvider => "indirect_provider",
        ProgramRole::DirectBill => "direct_bill",
    }
}

/// `verification` of a partner profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationView {
    pub status: VerificationStatus,
    pub enrolled_at: DateTime<Utc>,
}

/// `mpn` of a partner profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MpnView {
    pub mpn_id: String,
    pub mpn_country: String,
}

/// `mpa` of a partner profile (also `mca` of a customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgreementView {
    pub agreement_version: String,
    pub signed_at: DateTime<Utc>,
}

/// `direct_bill` of a partner profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectBillView {
    /// `none`, `application_pending`, `credit_approved` or `active`.
    pub status: &'static str,
    pub application_submitted_at: Option<DateTime<Utc>>,
    pub credit_limit_usd: Option<String>,
    pub active_since: Option<DateTime<Utc>>,
}

/// `/v1/partners/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerProfile {
    pub partner_id: Uuid,
    pub legal_name: String,
    pub country: String,
    pub region: &'static str,
    pub roles: Vec<&'static str>,
    pub verification: VerificationView,
    pub mpn: Option<MpnView>,
    pub mpa: Option<AgreementView>,
    pub direct_bill: DirectBillView,
    pub version: u64,
}

pub fn partner_profile(state: &LedgerState, id: Uuid) -> Option<PartnerProfile> {
    let p = state.partner(id)?;
    let (status, credit_limit_usd) = match (&p.application, p.direct_bill_since) {
        (_, Some(_)) => ("active", None),
        (Some(application), None) => match application.credit {
            CreditState::Pending => ("application_pending", None),
            CreditState::Approved { credit_limit_usd } => {
                ("credit_approved", credit_limit_usd.map(|c| c.to_string()))
            }
        },
        (None, None) => ("none", None),
    };
    Some(PartnerProfile {
        partner_id: p.partner_id,
        legal_name: p.legal_name.clone(),
        country: p.country.to_string(),
        region: p.region.as_str(),
        roles: p.roles.iter().map(role_name).collect(),
        verification: VerificationView {
            status: p.verification,
            enrolled_at: p.enrolled_at,
        },
        mpn: p.mpn.as_ref().map(|m| MpnView {
            mpn_id: m.mpn_id.clone(),
            mpn_country: m.mpn_country.to_string(),
        }),
        mpa: p.mpa.as_ref().map(|a| AgreementView {
            agreement_version: a.agreement_version.clone(),
            signed_at: a.signed_at,
        }),
        direct_bill: DirectBillView {
            status,
            application_submitted_at: p.application.as_ref().map(|a| a.submitted_at),
            credit_limit_usd,
            active_since: p.direct_bill_since,
        },
        version: p.version,
    })
}

/// `/v1/partners/{id}/eligibility`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerEligibility {
    pub partner_id: Uuid,
    pub can_transact: bool,
    pub unmet: Vec<&'static str>,
}

pub fn partner_eligibility(state: &LedgerState, id: Uuid) -> Option<PartnerEligibility> {
    let unmet = partner_unmet(state.partner(id)?);
    Some(PartnerEligibility {
        partner_id: id,
        can_transact: unmet.is_empty(),
        unmet,
    })
}

/// `/v1/partners/{id}/direct-bill-readiness?date=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectBillReadinessView {
    pub partner_id: Uuid,
    pub date: NaiveDate,
    pub ready: bool,
    pub unmet: Vec<&'static str>,
    pub recommendations: Vec<&'static str>,
    pub ttm_cloud_revenue_usd: String,
}

pub fn direct_bill_readiness(
    state: &LedgerState,
    id: Uuid,
    date: NaiveDate,
) -> Option<DirectBillReadinessView> {
    let readiness = eligibility::direct_bill_readiness(state.partner(id)?, date);
    Some(DirectBillReadinessView {
        partner_id: id,
        date,
        ready: readiness.ready,
        unmet: readiness.unmet,
        recommendations: readiness.recommendations,
        ttm_cloud_revenue_usd: readiness.ttm_cloud_revenue_usd.to_string(),
    })
}

/// One row of `/v1/providers/{id}/resellers` and `/v1/resellers/{id}/providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelationshipRow {
    pub provider_id: Uuid,
    pub reseller_id: Uuid,
    pub status: &'static str,
    pub admin_access: bool,
    pub since: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

fn row(relationship: &Relationship) -> RelationshipRow {
    RelationshipRow {
        provider_id: relationship.provider_id,
        reseller_id: relationship.reseller_id,
        status: relationship.status.as_str(),
        admin_access: relationship.admin_access,
        since: relationship.since,
        ended_at: relationship.ended_at,
    }
}

/// The provider's resellers, ordered by reseller id, starting after `after`.
pub fn resellers_of(
    state: &LedgerState,
    provider: Uuid,
    after: Option<Uuid>,
    limit: usize,
) -> Vec<RelationshipRow> {
    let Some(resellers) = state.resellers_by_provider.get(&provider) else {
        return Vec::new();
    };
    let range = match after {
        Some(after) => {
            resellers.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        }
        None => resellers.range(..),
    };
    range
        .filter_map(|r| state.relationship(provider, *r))
        .take(limit)
        .map(row)
        .collect()
}

/// The reseller's providers, ordered by provider id, starting after `after`.
pub fn providers_of(
    state: &LedgerState,
    reseller: Uuid,
    after: Option<Uuid>,
    limit: usize,
) -> Vec<RelationshipRow> {
    let Some(providers) = state.providers_by_reseller.get(&reseller) else {
        return Vec::new();
    };
    providers
        .after(after)
        .filter_map(|p| state.relationship(*p, reseller))
        .take(limit)
        .map(row)
        .collect()
}

/// `/v1/relationships/{provider_id}/{reseller_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelationshipView {
    pub provider_id: Uuid,
    pub reseller_id: Uuid,
    /// `invited`, `active`, `ended`, `declined`, `revoked`, or `none` for a pair never invited.
    pub status: &'static str,
    pub admin_access: bool,
    pub since: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub can_transact: bool,
    pub unmet: Vec<String>,
}

pub fn relationship(state: &LedgerState, provider: Uuid, reseller: Uuid) -> RelationshipView {
    let found = state.relationship(provider, reseller);
    let unmet = relationship_unmet(state, provider, reseller);
    RelationshipView {
        provider_id: provider,
        reseller_id: reseller,
        status: found.map_or("none", |r| r.status.as_str()),
        admin_access: found.is_some_and(|r| r.admin_access),
        since: found.map(|r| r.since),
        ended_at: found.and_then(|r| r.ended_at),
        can_transact: unmet.is_empty(),
        unmet,
    }
}

/// One partner of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerPartnerView {
    pub partner_id: Uuid,
    /// `active` or `ended`.
    pub status: &'static str,
    pub role: CustomerPartnerRole,
    pub since: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// `/v1/customers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerView {
    pub customer_id: Uuid,
    pub company_name: String,
    pub country: String,
    pub region: &'static str,
    pub affiliated_partner_id: Option<Uuid>,
    pub mca_accepted: bool,
    pub mca: Option<AgreementView>,
    pub partners: Vec<CustomerPartnerView>,
    pub version: u64,
}

pub fn customer(state: &LedgerState, id: Uuid) -> Option<CustomerView> {
    let c = state.customer(id)?;
    Some(CustomerView {
        customer_id: c.customer_id,
        company_name: c.company_name.clone(),
        country: c.country.to_string(),
        region: c.region.as_str(),
        affiliated_partner_id: c.affiliated_partner_id,
        mca_accepted: c.mca.is_some(),
        mca: c.mca.as_ref().map(|a| AgreementView {
            agreement_version: a.agreement_version.clone(),
            signed_at: a.signed_at,
        }),
        partners: c
            .partners
            .iter()
            .map(|(id, p)| CustomerPartnerView {
                partner_id: *id,
                status: if p.active { "active" } else { "ended" },
                role: p.role,
                since: p.since,
                ended_at: p.ended_at,
            })
            .collect(),
        version: c.version,
    })
}

/// `/v1/customers/{id}/order-eligibility?partner=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderEligibility {
    pub customer_id: Uuid,
    pub partner_id: Uuid,
    pub can_order: bool,
    pub unmet: Vec<String>,
}

pub fn order_eligibility(state: &LedgerState, customer: Uuid, partner: Uuid) -> OrderEligibility {
    let unmet = order_unmet(state, customer, partner);
    OrderEligibility {
        customer_id: customer,
        partner_id: partner,
        can_order: unmet.is_empty(),
        unmet,
    }
}

/// One row of `/v1/verifications/overdue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverdueVerification {
    pub partner_id: Uuid,
    pub legal_name: String,
    pub enrolled_at: DateTime<Utc>,
    pub business_days_pending: u32,
}

/// Pending verifications older than five business days on `today`, ordered by partner id.
pub fn overdue_verifications(
    state: &LedgerState,
    today: NaiveDate,
    after: Option<Uuid>,
    limit: usize,
) -> Vec<OverdueVerification> {
    let mut rows: Vec<OverdueVerification> = state
        .partners
        .values()
        .filter(|p| {
            eligibility::verification_overdue(p, today) && after.is_none_or(|a| p.partner_id > a)
        })
        .map(|p| OverdueVerification {
            partner_id: p.partner_id,
            legal_name: p.legal_name.clone(),
            enrolled_at: p.enrolled_at,
            business_days_pending: business_days_between(p.enrolled_at.date_naive(), today),
        })
        .collect();
    rows.sort_by_key(|r| r.partner_id);
    rows.truncate(limit);
    rows
}

/// As [`overdue_verifications`], for the state as it was at `position` (at most the state's
/// own), from the state's indexes alone: a partner was enrolled by then if its stream's first
/// event is at or before `position`, and pending then if its verification was pending at
/// enrollment and not decided at or before `position` (`verification_decided_at`). Legal
/// name and enrollment time never change after enrollment. Equal to the list of a refold up to
/// `position` (tests/api.rs checks every position of its fixture).
pub fn overdue_verifications_at(
    state: &LedgerState,
    position: u64,
    today: NaiveDate,
    after: Option<Uuid>,
    limit: usize,
) -> Vec<OverdueVerification> {
    let mut rows: Vec<OverdueVerification> = state
        .partners
        .values()
        .filter(|p| after.is_none_or(|a| p.partner_id > a))
        .filter(|p| {
            let enrolled = state
                .streams
                .get(&StreamId::Partner(p.partner_id))
                .and_then(|positions| positions.first())
                .is_some_and(|first| *first <= position);
            let pending_then = match state.verification_decided_at.get(&p.partner_id) {
                Some(decided) => *decided > position,
                None => p.verification == VerificationStatus::Pending,
            };
            enrolled
                && pending_then
                && business_days_between(p.enrolled_at.date_naive(), today)
                    > eligibility::VERIFICATION_OVERDUE_BUSINESS_DAYS
        })
        .map(|p| OverdueVerification {
            partner_id: p.partner_id,
            legal_name: p.legal_name.clone(),
            enrolled_at: p.enrolled_at,
            business_days_pending: business_days_between(p.enrolled_at.date_naive(), today),
        })
        .collect();
    rows.sort_by_key(|r| r.partner_id);
    rows.truncate(limit);
    rows
}

/// The streams an answer about these entities depends on: what an as-of query must fold.
pub fn streams_for_partner(id: Uuid) -> Vec<StreamId> {
    vec![StreamId::Partner(id)]
}

/// Streams of a provider's (or reseller's) relationships known to `state`.
pub fn relationship_streams(
    state: &LedgerState,
    provider: Option<Uuid>,
    reseller: Option<Uuid>,
) -> Vec<StreamId> {
    let mut out = Vec::new();
    if let Some(provider) = provider {
        for reseller in state
            .resellers_by_provider
            .get(&provider)
            .into_iter()
            .flatten()
        {
            out.push(StreamId::Relationship {
                provider,
                reseller: *reseller,
            });
        }
    }
    if let Some(reseller) = reseller {
        for provider in state
            .providers_by_reseller
            .get(&reseller)
            .into_iter()
            .flat_map(|providers| providers.iter())
        {
            out.push(StreamId::Relationship {
                provider: *provider,
                reseller,
            });
        }
    }
    out
}
