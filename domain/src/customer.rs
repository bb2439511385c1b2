//! Customers: `RegisterCustomer`, `AcceptCustomerAgreement`, `InviteCustomer`,
//! `AcceptCustomerInvitation`, `EndCustomerRelationship`.

use csp_ledger_projections::state::{InvitationStatus, TenantOwner};
use csp_ledger_schemas::command as cmd;
use csp_ledger_schemas::event::{self as ev, CustomerPartnerRole, Event, ProgramRole};
use csp_ledger_schemas::regions;
use csp_ledger_schemas::RejectionCode as Code;

use crate::context::{ensure, events, invitation_id_unused, personal_value, Context};
use crate::{Decided, Decision, Rejection};

pub(crate) fn register(ctx: &Context, c: &cmd::RegisterCustomer) -> Decided {
    let registrar = ctx
        .envelope
        .actor
        .id
        .filter(|id| ctx.is_partner(*id) && ctx.state.partner(*id).is_some());
    let registered_by = registrar.ok_or_else(|| ctx.unauthorized("an enrolled partner"))?;
    ensure(
        ctx.state.customer(c.customer_id).is_none(),
        Code::CustomerAlreadyRegistered,
        || format!("customer {} is already registered", c.customer_id),
    )?;
    let region = regions::region_of(c.country).ok_or_else(|| {
        Rejection::new(
            Code::InvalidCountry,
            format!("country {} is not in the CSP regions table", c.country),
        )
    })?;
    let owner = ctx.state.tenants.get(&c.tenant_id);
    ensure(
        !matches!(owner, Some(TenantOwner::Partner(_))),
        Code::CspTenantCannotBeCustomer,
        || {
            format!("tenant {} is a partner's CSP tenant; a partner buying for its own use needs another tenant", c.tenant_id)
        },
    )?;
    ensure(owner.is_none(), Code::TenantInUse, || {
        format!(
            "tenant {} is already registered to another customer",
            c.tenant_id
        )
    })?;
    if let Some(affiliated) = c.affiliated_partner_id {
        ctx.partner(affiliated)?;
    }
    events(vec![Event::CustomerRegistered(ev::CustomerRegistered {
        affiliated_partner_id: c.affiliated_partner_id,
        company_name: c.company_name.clone(),
        country: c.country,
        customer_id: c.customer_id,
        region: region.id.to_string(),
        registered_by,
        tenant_id: c.tenant_id,
    })])
}

pub(crate) fn accept_agreement(
    ctx: &Context,
    c: &cmd::AcceptCustomerAgreement,
    salt: &mut dyn FnMut() -> [u8; 16],
) -> Decided {
    ctx.authorize(ctx.is_customer(c.customer_id), "the customer itself")?;
    let customer = ctx.customer(c.customer_id)?;
    ensure(
        customer.mca.is_none(),
        Code::CustomerAgreementAlreadyAccepted,
        || {
            format!(
                "customer {} already accepted the customer agreement",
                c.customer_id
            )
        },
    )?;
    let (commitment, personal) = personal_value(c.customer_id, &c.signer_email, salt);
    Ok(Decision {
        events: vec![Event::CustomerAgreementAccepted(
            ev::CustomerAgreementAccepted {
                agreement_version: c.agreement_version.clone(),
                customer_id: c.customer_id,
                signer_email: commitment,
            },
        )],
        personal: vec![personal],
    })
}

pub(crate) fn invite(ctx: &Context, c: &cmd::InviteCustomer) -> Decided {
    ctx.authorize(ctx.is_partner(c.reseller_id), "the inviting partner")?;
    let reseller = ctx.partner(c.reseller_id)?;
    if let Some(provider_id) = c.provider_id {
        ctx.partner(provider_id)?;
    }
    let customer = ctx.customer(c.customer_id)?;
    let affiliated = customer.affiliated_partner_id;
    ensure(
        affiliated.is_none() || (affiliated != Some(c.reseller_id) && affiliated != c.provider_id),
        Code::SelfSaleProhibited,
        || {
            "a partner may not sell to itself or to its own organisation (002 scenario 5)"
                .to_string()
        },
    )?;
    if let (Some(provider_id), Some(affiliated)) = (c.provider_id, affiliated) {
        ensure(
            !ctx.state.relationship_active(provider_id, affiliated),
            Code::ResellerCannotBuyFromOwnProvider,
            || {
                format!("the customer belongs to partner {affiliated}, which has an active reseller relationship with provider {provider_id} (002 scenario 6)")
            },
        )?;
    }
    match c.provider_id {
        Some(provider_id) => ensure(
            ctx.state.relationship_active(provider_id, c.reseller_id),
            Code::RelationshipNotActive,
            || "the provider-reseller relationship is not active".to_string(),
        )?,
        None => ensure(
            reseller.has_role(ProgramRole::DirectBill),
            Code::NotADirectBillPartner,
            || {
                format!(
                    "partner {} is not a direct-bill partner; name the indirect provider",
                    c.reseller_id
                )
            },
        )?,
    }
    ensure(
        customer.region == reseller.region,
        Code::RegionMismatch,
        || {
            format!(
                "customer region {} differs from partner region {}",
                customer.region, reseller.region
            )
        },
    )?;
    ensure(
        !customer.relationship_active(c.reseller_id),
        Code::CustomerRelationshipAlreadyActive,
        || "the customer relationship is already active".to_string(),
    )?;
    invitation_id_unused(ctx.state, c.invitation_id)?;
    events(vec![Event::CustomerInvited(ev::CustomerInvited {
        customer_id: c.customer_id,
        invitation_id: c.invitation_id,
        provider_id: c.provider_id,
        reseller_id: c.reseller_id,
    })])
}

pub(crate) fn accept_invitation(ctx: &Context, c: &cmd::AcceptCustomerInvitation) -> Decided {
    ctx.authorize(ctx.is_customer(c.customer_id), "the invited customer")?;
    let invitation = ctx
        .state
        .customer_invitations
        .get(&c.invitation_id)
        .ok_or_else(|| {
            Rejection::new(
                Code::InvitationNotFound,
                format!("invitation {} not found", c.invitation_id),
            )
        })?;
    ensure(
        invitation.customer_id == c.customer_id,
        Code::InvitationAddressedToOtherPartner,
        || {
            format!(
                "invitation {} is addressed to another customer",
                c.invitation_id
            )
        },
    )?;
    ensure(
        invitation.status == InvitationStatus::Pending,
        Code::InvitationNotPending,
        || format!("invitation {} is no longer pending", c.invitation_id),
    )?;
    let mut out = vec![Event::CustomerRelationshipEstablished(
        ev::CustomerRelationshipEstablished {
            customer_id: c.customer_id,
            invitation_id: c.invitation_id,
            partner_id: invitation.reseller_id,
            partner_role: CustomerPartnerRole::Reseller,
        },
    )];
    if let Some(provider_id) = invitation.provider_id {
        out.push(Event::CustomerRelationshipEstablished(
            ev::CustomerRelationshipEstablished {
                customer_id: c.customer_id,
                invitation_id: c.invitation_id,
                partner_id: provider_id,
                partner_role: CustomerPartnerRole::Provider,
            },
        ));
    }
    events(out)
}

pub(crate) fn end_relationship(ctx: &Context, c: &cmd::EndCustomerRelationship) -> Decided {
    ctx.authorize(
        ctx.is_operator() || ctx.is_partner(c.partner_id),
        "the operator or the partner itself",
    )?;
    let active = ctx
        .state
        .customer(c.customer_id)
        .is_some_and(|cu| cu.relationship_active(c.partner_id));
    ensure(active, Code::CustomerRelationshipNotActive, || {
        format!(
            "partner {} has no active relationship with customer {}",
            c.partner_id, c.customer_id
        )
    })?;
    events(vec![Event::CustomerRelationshipEnded(
        ev::CustomerRelationshipEnded {
            customer_id: c.customer_id,
            partner_id: c.partner_id,
        },
    )])
}
