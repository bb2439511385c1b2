//! Partner onboarding: `EnrollPartner`, `VerifyPartner`, `AssociateMpnId`, `SignMPA`.

use csp_ledger_schemas::command::{self as cmd, VerificationOutcome};
use csp_ledger_schemas::event::{self as ev, Event, ProgramRole, VerificationStatus};
use csp_ledger_schemas::regions;
use csp_ledger_schemas::RejectionCode as Code;

use crate::context::{ensure, events, personal_value, verified, Context};
use crate::{Decided, Decision, Rejection, FREE_EMAIL_DOMAINS};

pub(crate) fn enroll(
    ctx: &Context,
    c: &cmd::EnrollPartner,
    salt: &mut dyn FnMut() -> [u8; 16],
) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the enrolling partner itself")?;
    ensure(
        ctx.state.partner(c.partner_id).is_none(),
        Code::PartnerAlreadyEnrolled,
        || format!("partner {} is already enrolled", c.partner_id),
    )?;
    let region = regions::region_of(c.country).ok_or_else(|| {
        Rejection::new(
            Code::InvalidCountry,
            format!("country {} is not in the CSP regions table", c.country),
        )
    })?;
    let domain = c.primary_contact_email.domain_lowercase();
    ensure(
        !FREE_EMAIL_DOMAINS.contains(&domain.as_str()),
        Code::FreeEmailDomain,
        || format!("primary contact e-mail uses the web-based e-mail domain {domain}"),
    )?;
    ensure(
        !ctx.state.tenants.contains_key(&c.tenant_id),
        Code::TenantInUse,
        || {
            format!(
                "tenant {} is already held by another partner or customer",
                c.tenant_id
            )
        },
    )?;
    let (commitment, personal) = personal_value(c.partner_id, &c.primary_contact_email, salt);
    Ok(Decision {
        events: vec![Event::PartnerEnrolled(ev::PartnerEnrolled {
            country: c.country,
            legal_name: c.legal_name.clone(),
            partner_id: c.partner_id,
            primary_contact_email: commitment,
            region: region.id.to_string(),
            role: ProgramRole::IndirectReseller,
            tenant_id: c.tenant_id,
            verification: VerificationStatus::Pending,
        })],
        personal: vec![personal],
    })
}

pub(crate) fn verify(ctx: &Context, c: &cmd::VerifyPartner) -> Decided {
    ctx.authorize(ctx.is_operator(), "the operator")?;
    let p = ctx.partner(c.partner_id)?;
    ensure(
        p.verification == VerificationStatus::Pending,
        Code::VerificationAlreadyDecided,
        || {
            format!(
                "verification of partner {} was already decided",
                c.partner_id
            )
        },
    )?;
    events(vec![match c.outcome {
        VerificationOutcome::Approved => Event::PartnerVerified(ev::PartnerVerified {
            partner_id: c.partner_id,
        }),
        VerificationOutcome::Rejected => {
            Event::PartnerVerificationRejected(ev::PartnerVerificationRejected {
                partner_id: c.partner_id,
                reason: c.reason.clone(),
            })
        }
    }])
}

pub(crate) fn associate_mpn_id(ctx: &Context, c: &cmd::AssociateMpnId) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    let p = ctx.partner(c.partner_id)?;
    ensure(c.mpn_country == p.country, Code::MpnCountryMismatch, || {
        format!(
            "MPN ID country {} differs from the CSP account country {}",
            c.mpn_country, p.country
        )
    })?;
    let holder = ctx.state.mpn_ids.get(&c.mpn_id);
    ensure(
        holder.is_none_or(|h| *h == c.partner_id),
        Code::MpnIdInUse,
        || format!("MPN ID {} is associated with another partner", c.mpn_id),
    )?;
    events(vec![Event::MpnIdAssociated(ev::MpnIdAssociated {
        mpn_country: c.mpn_country,
        mpn_id: c.mpn_id.clone(),
        partner_id: c.partner_id,
        replaced_mpn_id: p
            .mpn
            .as_ref()
            .map(|m| m.mpn_id.clone())
            .filter(|old| *old != c.mpn_id),
    })])
}

pub(crate) fn sign_mpa(
    ctx: &Context,
    c: &cmd::SignMPA,
    salt: &mut dyn FnMut() -> [u8; 16],
) -> Decided {
    ctx.authorize(ctx.is_partner(c.partner_id), "the partner itself")?;
    let p = ctx.partner(c.partner_id)?;
    ensure(ctx.is_global_admin(), Code::SignerNotGlobalAdmin, || {
        "the MPA must be signed with global admin credentials".to_string()
    })?;
    verified(p)?;
    ensure(p.mpn.is_some(), Code::MpnNotAssociated, || {
        "an MPN ID must be associated before the MPA is signed".to_string()
    })?;
    ensure(p.mpa.is_none(), Code::MpaAlreadySigned, || {
        format!("partner {} already signed the MPA", c.partner_id)
    })?;
    let (commitment, personal) = personal_value(c.partner_id, &c.signer_email, salt);
    Ok(Decision {
        events: vec![Event::MpaSigned(ev::MpaSigned {
            agreement_version: c.agreement_version.clone(),
            partner_id: c.partner_id,
            signer_email: commitment,
        })],
        personal: vec![personal],
    })
}
