//! The direct-bill path: `ApplyForDirectBill`, `RecordCreditCheck`, `AcceptDirectBillTerms`,
//! `TransitionToIndirectReseller`.

use csp_ledger_projections::eligibility;
use csp_ledger_projections::state::CreditState;
use csp_ledger_schemas::command::{self as cmd, CreditOutcome};
use csp_ledger_schemas::event::{self as ev, Event, ProgramRole};
use csp_ledger_schemas::RejectionCode as Code;

use crate::context::{ensure, events, Context};
use crate::{readiness_details, Decided, Rejection};

pub(crate) fn apply(ctx: &Context, c: &cmd::ApplyForDirectBill) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    let p = ctx.partner(c.partner_id)?;
    ensure(
        !p.has_role(ProgramRole::DirectBill),
        Code::AlreadyDirectBill,
        || format!("partner {} is already a direct-bill partner", c.partner_id),
    )?;
    ensure(
        p.application.is_none(),
        Code::DirectBillApplicationPending,
        || "a direct-bill application is already open".to_string(),
    )?;
    let readiness = eligibility::direct_bill_readiness(p, ctx.envelope.issued_at.date_naive());
    if !readiness.ready {
        return Err(Rejection::new(
            Code::DirectBillRequirementsUnmet,
            format!(
                "direct-bill requirements unmet: {}",
                readiness.unmet.join(", ")
            ),
        )
        .with_details(readiness_details(&readiness)));
    }
    events(vec![Event::DirectBillApplicationSubmitted(
        ev::DirectBillApplicationSubmitted {
            partner_id: c.partner_id,
            ttm_cloud_revenue_usd: readiness.ttm_cloud_revenue_usd,
        },
    )])
}

pub(crate) fn record_credit_check(ctx: &Context, c: &cmd::RecordCreditCheck) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator")?;
    let application = ctx
        .state
        .partner(c.partner_id)
        .and_then(|p| p.application.as_ref());
    ensure(application.is_some(), Code::NoDirectBillApplication, || {
        format!(
            "partner {} has no open direct-bill application",
            c.partner_id
        )
    })?;
    events(vec![match c.outcome {
        CreditOutcome::Approved => Event::CreditCheckApproved(ev::CreditCheckApproved {
            credit_limit_usd: c.credit_limit_usd,
            partner_id: c.partner_id,
        }),
        CreditOutcome::Declined => Event::CreditCheckDeclined(ev::CreditCheckDeclined {
            partner_id: c.partner_id,
        }),
    }])
}

pub(crate) fn accept_terms(ctx: &Context, c: &cmd::AcceptDirectBillTerms) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    let application = ctx
        .state
        .partner(c.partner_id)
        .and_then(|p| p.application.as_ref());
    let application = application.ok_or_else(|| {
        Rejection::new(
            Code::NoDirectBillApplication,
            format!(
                "partner {} has no open direct-bill application",
                c.partner_id
            ),
        )
    })?;
    ensure(
        matches!(application.credit, CreditState::Approved { .. }),
        Code::CreditCheckNotApproved,
        || "the credit check has not been approved".to_string(),
    )?;
    ensure(ctx.is_global_admin(), Code::SignerNotGlobalAdmin, || {
        "the direct-bill terms must be accepted with global admin credentials".to_string()
    })?;
    events(vec![Event::DirectBillActivated(ev::DirectBillActivated {
        partner_id: c.partner_id,
    })])
}

pub(crate) fn transition_to_indirect_reseller(
    ctx: &Context,
    c: &cmd::TransitionToIndirectReseller,
) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator")?;
    let direct = ctx
        .state
        .partner(c.partner_id)
        .is_some_and(|p| p.has_role(ProgramRole::DirectBill));
    ensure(direct, Code::NotADirectBillPartner, || {
        format!("partner {} is not a direct-bill partner", c.partner_id)
    })?;
    events(vec![Event::TransitionedToIndirectReseller(
        ev::TransitionedToIndirectReseller {
            partner_id: c.partner_id,
        },
    )])
}
