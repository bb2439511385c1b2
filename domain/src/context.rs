//! What every decision function needs besides its payload: the state, the envelope's actor
//! checks (SPEC.md sections 4 and 10), lookups that reject when an entity is missing, and the
//! small helpers the families share.

use csp_ledger_projections::state::{Customer, LedgerState, Partner};
use csp_ledger_schemas::command::{ActorKind, CommandEnvelope};
use csp_ledger_schemas::event::{Event, VerificationStatus};
use csp_ledger_schemas::values::{Commitment, Email};
use csp_ledger_schemas::RejectionCode as Code;
use uuid::Uuid;

use crate::{commit, Decided, Decision, PersonalValue, Rejection};

/// The state and the command envelope a decision is made against.
pub(crate) struct Context<'a> {
    pub state: &'a LedgerState,
    pub envelope: &'a CommandEnvelope,
}

impl<'a> Context<'a> {
    pub fn new(state: &'a LedgerState, envelope: &'a CommandEnvelope) -> Self {
        Context { state, envelope }
    }

    /// The actor is partner `id` itself, acting as global admin or admin agent.
    pub fn is_partner(&self, id: Uuid) -> bool {
        let actor = &self.envelope.actor;
        let partner_roles_ok =
            matches!(actor.role.as_deref(), Some("global_admin" | "admin_agent"));
        actor.kind == ActorKind::Partner && actor.id == Some(id) && partner_roles_ok
    }

    /// The actor is customer `id` itself.
    pub fn is_customer(&self, id: Uuid) -> bool {
        let actor = &self.envelope.actor;
        actor.kind == ActorKind::Customer && actor.id == Some(id)
    }

    pub fn is_operator(&self) -> bool {
        self.envelope.actor.kind == ActorKind::Operator
    }

    pub fn is_global_admin(&self) -> bool {
        self.envelope.actor.role.as_deref() == Some("global_admin")
    }

    /// `unauthorized_actor`: the command may be issued only by `who`.
    pub fn unauthorized(&self, who: &str) -> Rejection {
        Rejection::new(
            Code::UnauthorizedActor,
            format!(
                "{} may be issued only by {who}",
                self.envelope.command.type_name()
            ),
        )
    }

    pub fn authorize(&self, ok: bool, who: &str) -> Result<(), Rejection> {
        if ok {
            Ok(())
        } else {
            Err(self.unauthorized(who))
        }
    }

    /// The partner, or `partner_not_found`.
    pub fn partner(&self, id: Uuid) -> Result<&'a Partner, Rejection> {
        self.state.partner(id).ok_or_else(|| {
            Rejection::new(
                Code::PartnerNotFound,
                format!("partner {id} is not enrolled"),
            )
        })
    }

    /// The customer, or `customer_not_found`.
    pub fn customer(&self, id: Uuid) -> Result<&'a Customer, Rejection> {
        self.state.customer(id).ok_or_else(|| {
            Rejection::new(
                Code::CustomerNotFound,
                format!("customer {id} is not registered"),
            )
        })
    }
}

/// `partner_not_verified` unless the partner's verification was approved.
pub(crate) fn verified(p: &Partner) -> Result<(), Rejection> {
    ensure(
        p.verification == VerificationStatus::Approved,
        Code::PartnerNotVerified,
        || format!("partner {} is not verified", p.partner_id),
    )
}

/// A rejection with `code` unless `condition` holds; the message is built only when needed.
pub(crate) fn ensure(
    condition: bool,
    code: Code,
    message: impl FnOnce() -> String,
) -> Result<(), Rejection> {
    if condition {
        Ok(())
    } else {
        Err(Rejection::new(code, message()))
    }
}

/// A decision with these events and no personal values.
pub(crate) fn events(events: Vec<Event>) -> Decided {
    Ok(Decision {
        events,
        personal: Vec::new(),
    })
}

/// Invitation ids are unique across reseller and customer invitations (an extension of the
/// contract: reusing one would make `AcceptInvitation` ambiguous).
pub(crate) fn invitation_id_unused(state: &LedgerState, id: Uuid) -> Result<(), Rejection> {
    let used = state.reseller_invitations.contains_key(&id)
        || state.customer_invitations.contains_key(&id);
    ensure(!used, Code::InvitationIdInUse, || {
        format!("invitation id {id} is already used by another invitation")
    })
}

/// The commitment an event carries for `email`, and the clear value to keep beside it.
pub(crate) fn personal_value(
    subject: Uuid,
    email: &Email,
    salt: &mut dyn FnMut() -> [u8; 16],
) -> (Commitment, PersonalValue) {
    let salt = salt();
    let commitment = commit(&salt, &email.0);
    (
        commitment,
        PersonalValue {
            subject,
            commitment,
            salt,
            value: email.0.clone(),
        },
    )
}
