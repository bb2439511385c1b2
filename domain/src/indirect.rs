//! The indirect model: `AuthorizeIndirectProvider`, reseller invitations (`InviteReseller`,
//! `AcceptInvitation`, `DeclineInvitation`, `RevokeInvitation`) and provider-reseller
//! relationships (`RemoveAdminAccess`, `EndRelationship`).

use csp_ledger_projections::state::{InvitationStatus, ResellerInvitation};
use csp_ledger_schemas::command as cmd;
use csp_ledger_schemas::event::{self as ev, Event, ProgramRole};
use csp_ledger_schemas::RejectionCode as Code;
use uuid::Uuid;

use crate::context::{ensure, events, invitation_id_unused, verified, Context};
use crate::{Decided, Rejection};

pub(crate) fn authorize_provider(ctx: &Context, c: &cmd::AuthorizeIndirectProvider) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator")?;
    let p = ctx.partner(c.partner_id)?;
    verified(p)?;
    ensure(
        !p.has_role(ProgramRole::IndirectProvider),
        Code::AlreadyIndirectProvider,
        || format!("partner {} is already an indirect provider", c.partner_id),
    )?;
    events(vec![Event::IndirectProviderAuthorized(
        ev::IndirectProviderAuthorized {
            partner_id: c.partner_id,
        },
    )])
}

pub(crate) fn invite_reseller(ctx: &Context, c: &cmd::InviteReseller) -> Decided {
    ctx.authorize(ctx.is_partner(c.provider_id), "the inviting provider")?;
    let provider = ctx.partner(c.provider_id)?;
    let reseller = ctx.partner(c.reseller_id)?;
    ensure(
        c.provider_id != c.reseller_id,
        Code::CannotInviteSelf,
        || "a provider cannot invite itself".to_string(),
    )?;
    ensure(
        provider.has_role(ProgramRole::IndirectProvider),
        Code::NotAnIndirectProvider,
        || format!("partner {} is not an indirect provider", c.provider_id),
    )?;
    ensure(
        reseller.has_role(ProgramRole::IndirectReseller),
        Code::NotAnIndirectReseller,
        || format!("partner {} is not an indirect reseller", c.reseller_id),
    )?;
    ensure(
        provider.region == reseller.region,
        Code::RegionMismatch,
        || {
            format!(
                "provider region {} differs from reseller region {}",
                provider.region, reseller.region
            )
        },
    )?;
    ensure(
        !ctx.state.relationship_active(c.provider_id, c.reseller_id),
        Code::RelationshipAlreadyActive,
        || "the relationship is already active".to_string(),
    )?;
    let pending = ctx
        .state
        .relationship(c.provider_id, c.reseller_id)
        .and_then(|r| r.pending_invitation);
    ensure(pending.is_none(), Code::InvitationAlreadyPending, || {
        format!(
            "invitation {} to this reseller is still pending",
            pending.unwrap_or_default()
        )
    })?;
    invitation_id_unused(ctx.state, c.invitation_id)?;
    events(vec![Event::ResellerInvited(ev::ResellerInvited {
        invitation_id: c.invitation_id,
        provider_id: c.provider_id,
        reseller_id: c.reseller_id,
    })])
}

/// The reseller invitation, or `invitation_not_found`.
fn reseller_invitation<'a>(
    ctx: &Context<'a>,
    id: Uuid,
) -> Result<&'a ResellerInvitation, Rejection> {
    ctx.state.reseller_invitations.get(&id).ok_or_else(|| {
        Rejection::new(
            Code::InvitationNotFound,
            format!("invitation {id} not found"),
        )
    })
}

/// `AcceptInvitation` (`accept`) or `DeclineInvitation`: the same checks, different events.
pub(crate) fn answer_invitation(
    ctx: &Context,
    invitation_id: Uuid,
    reseller_id: Uuid,
    accept: bool,
) -> Decided {
    ctx.authorize(ctx.is_partner(reseller_id), "the invited reseller")?;
    let invitation = reseller_invitation(ctx, invitation_id)?;
    ensure(
        invitation.reseller_id == reseller_id,
        Code::InvitationAddressedToOtherPartner,
        || format!("invitation {invitation_id} is addressed to another reseller"),
    )?;
    ensure(
        invitation.status == InvitationStatus::Pending,
        Code::InvitationNotPending,
        || format!("invitation {invitation_id} is no longer pending"),
    )?;
    let provider_id = invitation.provider_id;
    if accept {
        events(vec![
            Event::InvitationAccepted(ev::InvitationAccepted {
                invitation_id,
                provider_id,
                reseller_id,
            }),
            Event::RelationshipEstablished(ev::RelationshipEstablished {
                invitation_id,
                provider_id,
                reseller_id,
            }),
            Event::AdminAccessGranted(ev::AdminAccessGranted {
                provider_id,
                reseller_id,
            }),
        ])
    } else {
        events(vec![Event::InvitationDeclined(ev::InvitationDeclined {
            invitation_id,
            provider_id,
            reseller_id,
        })])
    }
}

pub(crate) fn revoke_invitation(ctx: &Context, c: &cmd::RevokeInvitation) -> Decided {
    ctx.authorize(ctx.is_partner(c.provider_id), "the inviting provider")?;
    let invitation = reseller_invitation(ctx, c.invitation_id)?;
    ensure(
        invitation.provider_id == c.provider_id,
        Code::InvitationAddressedToOtherPartner,
        || {
            format!(
                "invitation {} was sent by another provider",
                c.invitation_id
            )
        },
    )?;
    ensure(
        invitation.status == InvitationStatus::Pending,
        Code::InvitationNotPending,
        || format!("invitation {} is no longer pending", c.invitation_id),
    )?;
    events(vec![Event::InvitationRevoked(ev::InvitationRevoked {
        invitation_id: c.invitation_id,
        provider_id: c.provider_id,
        reseller_id: invitation.reseller_id,
    })])
}

pub(crate) fn remove_admin_access(ctx: &Context, c: &cmd::RemoveAdminAccess) -> Decided {
    ctx.authorize(ctx.is_partner(c.reseller_id), "the reseller")?;
    let relationship = ctx
        .state
        .relationship(c.provider_id, c.reseller_id)
        .filter(|_| ctx.state.relationship_active(c.provider_id, c.reseller_id));
    let relationship = relationship.ok_or_else(|| {
        Rejection::new(
            Code::RelationshipNotActive,
            "the relationship is not active",
        )
    })?;
    ensure(
        relationship.admin_access,
        Code::AdminAccessAlreadyRemoved,
        || "the provider's admin access was already removed".to_string(),
    )?;
    events(vec![Event::AdminAccessRemoved(ev::AdminAccessRemoved {
        provider_id: c.provider_id,
        reseller_id: c.reseller_id,
    })])
}

pub(crate) fn end_relationship(ctx: &Context, c: &cmd::EndRelationship) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator (through support)")?;
    ensure(
        ctx.state.relationship_active(c.provider_id, c.reseller_id),
        Code::RelationshipNotActive,
        || "the relationship is not active".to_string(),
    )?;
    events(vec![Event::RelationshipEnded(ev::RelationshipEnded {
        provider_id: c.provider_id,
        reason: c.reason.clone(),
        reseller_id: c.reseller_id,
    })])
}
