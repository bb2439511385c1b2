//! Eligibility read models (SPEC.md section 6), computed from `LedgerState`. The domain uses
//! the same functions for its checks, so a command is never rejected for a reason a query
//! would not show.

use chrono::{Datelike, NaiveDate, Weekday};
use csp_ledger_schemas::command::RevenueCategory;
use csp_ledger_schemas::event::{ProgramRole, VerificationStatus};
use csp_ledger_schemas::values::{Month, UsdAmount, UsdTotal};
use uuid::Uuid;

use crate::state::{LedgerState, Partner};

/// A requirement that is not met, as a wire code.
pub type Unmet = String;

/// Cloud revenue of the trailing twelve months a direct-bill partner needs: USD 300,000.00.
pub const DIRECT_BILL_REVENUE_THRESHOLD: UsdAmount = UsdAmount { cents: 30_000_000 };

/// Business days after which a pending verification is overdue (004 step 6).
pub const VERIFICATION_OVERDUE_BUSINESS_DAYS: u32 = 5;

/// Why a partner cannot transact (empty: it can). Order: verification, MPN, MPA.
pub fn partner_unmet(partner: &Partner) -> Vec<&'static str> {
    let mut unmet = Vec::new();
    if partner.verification != VerificationStatus::Approved {
        unmet.push("partner_not_verified");
    }
    if partner.mpn.is_none() {
        unmet.push("mpn_not_associated");
    }
    if partner.mpa.is_none() {
        unmet.push("mpa_not_signed");
    }
    unmet
}

fn partner_unmet_prefixed(state: &LedgerState, id: Uuid, prefix: &str, out: &mut Vec<Unmet>) {
    match state.partner(id) {
        Some(partner) => out.extend(
            partner_unmet(partner)
                .into_iter()
                .map(|code| format!("{prefix}.{code}")),
        ),
        None => out.push(format!("{prefix}.partner_not_found")),
    }
}

/// Why a provider cannot transact through a reseller (002: the reseller must have signed the
/// MPA): `relationship_not_active`, then `reseller.`-prefixed, then `provider.`-prefixed codes.
pub fn relationship_unmet(state: &LedgerState, provider_id: Uuid, reseller_id: Uuid) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    if !state.relationship_active(provider_id, reseller_id) {
        unmet.push("relationship_not_active".to_string());
    }
    partner_unmet_prefixed(state, reseller_id, "reseller", &mut unmet);
    partner_unmet_prefixed(state, provider_id, "provider", &mut unmet);
    unmet
}

/// Why a partner cannot order for a customer (empty: it can).
pub fn order_unmet(state: &LedgerState, customer_id: Uuid, partner_id: Uuid) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    let customer = state.customer(customer_id);
    let partner = state.partner(partner_id);
    if !customer.is_some_and(|c| c.relationship_active(partner_id)) {
        unmet.push("customer_relationship_not_active".to_string());
    }
    if !customer.is_some_and(|c| c.mca.is_some()) {
        unmet.push("customer_agreement_not_accepted".to_string());
    }
    if let (Some(c), Some(p)) = (customer, partner) {
        if c.region != p.region {
            unmet.push("region_mismatch".to_string());
        }
    }
    partner_unmet_prefixed(state, partner_id, "partner", &mut unmet);
    if let (Some(c), Some(p)) = (customer, partner) {
        if p.has_role(ProgramRole::IndirectProvider) {
            let shared = state
                .resellers_by_provider
                .get(&partner_id)
                .is_some_and(|resellers| {
                    resellers.iter().any(|r| {
                        state.relationship_active(partner_id, *r) && c.relationship_active(*r)
                    })
                });
            if !shared {
                unmet.push("no_shared_reseller".to_string());
            }
        }
    }
    unmet
}

/// Direct-bill readiness of a partner on a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBillReadiness {
    pub ready: bool,
    pub unmet: Vec<&'static str>,
    pub recommendations: Vec<&'static str>,
    pub ttm_cloud_revenue_usd: UsdTotal,
}

/// Cloud revenue of the twelve calendar months before the month of `date`. Perpetual software
/// is excluded. Summed as a [`UsdTotal`] (`i128` cents), so that twelve large month totals
/// cannot wrap.
pub fn ttm_cloud_revenue(partner: &Partner, date: NaiveDate) -> UsdTotal {
    let current = Month::of_date(date).index();
    partner
        .revenue
        .iter()
        .filter(|((month, category), _)| {
            *category == RevenueCategory::Cloud && (current - 12..current).contains(month)
        })
        .fold(UsdTotal::ZERO, |ttm, (_, cents)| {
            ttm.plus_total(UsdTotal::from_cents(*cents))
        })
}

/// The direct-bill requirements of 000/003 (as of 2020-10-27), evaluated on `date`.
pub fn direct_bill_readiness(partner: &Partner, date: NaiveDate) -> DirectBillReadiness {
    let mut unmet = partner_unmet(partner);
    if partner.support_plan.is_none() {
        unmet.push("support_plan_missing");
    }
    if partner.infrastructure != Some((true, true)) {
        unmet.push("infrastructure_not_attested");
    }
    let ttm = ttm_cloud_revenue(partner, date);
    if ttm < UsdTotal::from(DIRECT_BILL_REVENUE_THRESHOLD) {
        unmet.push("revenue_below_threshold");
    }
    let mut recommendations = Vec::new();
    if partner.managed_services.is_empty() {
        recommendations.push("managed_service_missing");
    }
    DirectBillReadiness {
        ready: unmet.is_empty(),
        unmet,
        recommendations,
        ttm_cloud_revenue_usd: ttm,
    }
}

/// Business days (Monday to Friday) from `start` to `end`, not counting `start`.
pub fn business_days_between(start: NaiveDate, end: NaiveDate) -> u32 {
    let mut days = 0;
    let mut day = start;
    while day < end {
        day = day.succ_opt().unwrap_or(end);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            days += 1;
        }
    }
    days
}

/// A pending verification older than five business days on `today` (004 step 6).
pub fn verification_overdue(partner: &Partner, today: NaiveDate) -> bool {
    partner.verification == VerificationStatus::Pending
        && business_days_between(partner.enrolled_at.date_naive(), today)
            > VERIFICATION_OVERDUE_BUSINESS_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_days_skip_weekends() {
        let friday = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        let next_friday = NaiveDate::from_ymd_opt(2026, 1, 9).unwrap();
        assert_eq!(business_days_between(friday, next_friday), 5);
        assert_eq!(
            business_days_between(friday, NaiveDate::from_ymd_opt(2026, 1, 4).unwrap()),
            0
        );
    }
}
