//! What a partner records towards the program requirements: `RecordRevenue`,
//! `PurchaseSupportPlan`, `AttestInfrastructure`, `RegisterManagedService`.

use csp_ledger_schemas::command::{self as cmd, RevenueCategory};
use csp_ledger_schemas::event::{self as ev, Event};
use csp_ledger_schemas::RejectionCode as Code;

use crate::context::{ensure, events, Context};
use crate::Decided;

pub(crate) fn record_revenue(ctx: &Context, c: &cmd::RecordRevenue) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator")?;
    let p = ctx.partner(c.partner_id)?;
    // Exact whatever the amounts: a total is i128 cents (see `UsdTotal`), so a large positive
    // amount cannot wrap the total below zero.
    let total = p.revenue_total(c.month, c.category).plus(c.amount_usd);
    ensure(total.cents >= 0, Code::NegativeRevenueTotal, || {
        format!(
            "the {} total of {} would drop to {}",
            category_name(c.category),
            c.month,
            total
        )
    })?;
    events(vec![Event::RevenueRecorded(ev::RevenueRecorded {
        amount_usd: c.amount_usd,
        category: c.category,
        month: c.month,
        partner_id: c.partner_id,
    })])
}

fn category_name(category: RevenueCategory) -> &'static str {
    match category {
        RevenueCategory::Cloud => "cloud",
        RevenueCategory::PerpetualSoftware => "perpetual_software",
    }
}

pub(crate) fn purchase_support_plan(ctx: &Context, c: &cmd::PurchaseSupportPlan) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    ctx.partner(c.partner_id)?;
    events(vec![Event::SupportPlanPurchased(
        ev::SupportPlanPurchased {
            partner_id: c.partner_id,
            plan: c.plan,
        },
    )])
}

pub(crate) fn attest_infrastructure(ctx: &Context, c: &cmd::AttestInfrastructure) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    ctx.partner(c.partner_id)?;
    events(vec![Event::InfrastructureAttested(
        ev::InfrastructureAttested {
            billing: c.billing,
            partner_id: c.partner_id,
            provisioning: c.provisioning,
        },
    )])
}

pub(crate) fn register_managed_service(ctx: &Context, c: &cmd::RegisterManagedService) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    ctx.partner(c.partner_id)?;
    events(vec![Event::ManagedServiceRegistered(
        ev::ManagedServiceRegistered {
            kind: c.kind,
            name: c.name.clone(),
            partner_id: c.partner_id,
        },
    )])
}
