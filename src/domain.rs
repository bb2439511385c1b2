//! The decision rules: `decide(state, command) -> events or rejection` for every command of
//! SPEC.md section 4, with its checks in the order given there. Pure and synchronous: no I/O,
//! no clock; the salts of personal-data commitments come in as an argument.

use csp_ledger_projections::eligibility::{self, DirectBillReadiness};
use csp_ledger_projections::state::{
    CreditState, InvitationStatus, LedgerState, Partner, TenantOwner,
};
use csp_ledger_schemas::command::{
    self as cmd, ActorKind, Command, CommandEnvelope, CreditOutcome, VerificationOutcome,
};
use csp_ledger_schemas::event::{
    self as ev, CustomerPartnerRole, Event, ProgramRole, VerificationStatus,
};
use csp_ledger_schemas::regions;
use csp_ledger_schemas::values::{Commitment, Email, UsdAmount};
use csp_ledger_schemas::RejectionCode as Code;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Most events one command may produce (AcceptInvitation produces three).
pub const EVENTS_PER_COMMAND_MAX: usize = 4;

/// Domains of web-based e-mail services not accepted for a primary contact (004 step 4).
pub const FREE_EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
];

pub use csp_ledger_schemas::outcome::Rejection;

/// A clear personal value to keep in the personal-data store, beside its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalValue {
    /// The data subject (partner or customer id): erasure deletes by subject.
    pub subject: Uuid,
    pub commitment: Commitment,
    pub salt: [u8; 16],
    pub value: String,
}

/// The events a command produces and the personal values they commit to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub events: Vec<Event>,
    pub personal: Vec<PersonalValue>,
}

/// Commitment to a personal value: SHA-256(salt || UTF-8 value).
pub fn commit(salt: &[u8; 16], value: &str) -> Commitment {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(value.as_bytes());
    Commitment(hasher.finalize().into())
}

type Decided = Result<Decision, Rejection>;

fn ensure(condition: bool, code: Code, message: impl FnOnce() -> String) -> Result<(), Rejection> {
    if condition {
        Ok(())
    } else {
        Err(Rejection::new(code, message()))
    }
}

fn events(events: Vec<Event>) -> Decided {
    Ok(Decision {
        events,
        personal: Vec::new(),
    })
}

/// Decides one command against the state.
pub fn decide(
    state: &LedgerState,
    envelope: &CommandEnvelope,
    salt: &mut dyn FnMut() -> [u8; 16],
) -> Decided {
    let actor = &envelope.actor;
    let partner_roles_ok = matches!(actor.role.as_deref(), Some("global_admin" | "admin_agent"));
    let is_partner =
        |id: Uuid| actor.kind == ActorKind::Partner && actor.id == Some(id) && partner_roles_ok;
    let is_customer = |id: Uuid| actor.kind == ActorKind::Customer && actor.id == Some(id);
    let is_operator = actor.kind == ActorKind::Operator;
    let is_global_admin = actor.role.as_deref() == Some("global_admin");
    let unauthorized = |who: &str| {
        Rejection::new(
            Code::UnauthorizedActor,
            format!(
                "{} may be issued only by {who}",
                envelope.command.type_name()
            ),
        )
    };
    let authorize = |ok: bool, who: &str| if ok { Ok(()) } else { Err(unauthorized(who)) };
    let partner = |id: Uuid| {
        state.partner(id).ok_or_else(|| {
            Rejection::new(
                Code::PartnerNotFound,
                format!("partner {id} is not enrolled"),
            )
        })
    };
    let customer = |id: Uuid| {
        state.customer(id).ok_or_else(|| {
            Rejection::new(
                Code::CustomerNotFound,
                format!("customer {id} is not registered"),
            )
        })
    };
    let verified = |p: &Partner| {
        ensure(
            p.verification == VerificationStatus::Approved,
            Code::PartnerNotVerified,
            || format!("partner {} is not verified", p.partner_id),
        )
    };

    match &envelope.command {
        Command::EnrollPartner(c) => {
            authorize(is_partner(c.partner_id), "the enrolling partner itself")?;
            ensure(
                state.partner(c.partner_id).is_none(),
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
                !state.tenants.contains_key(&c.tenant_id),
                Code::TenantInUse,
                || {
                    format!(
                        "tenant {} is already held by another partner or customer",
                        c.tenant_id
                    )
                },
            )?;
            let (commitment, personal) =
                personal_value(c.partner_id, &c.primary_contact_email, salt);
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
        Command::VerifyPartner(c) => {
            authorize(is_operator, "the operator")?;
            let p = partner(c.partner_id)?;
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
        Command::AssociateMpnId(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            let p = partner(c.partner_id)?;
            ensure(c.mpn_country == p.country, Code::MpnCountryMismatch, || {
                format!(
                    "MPN ID country {} differs from the CSP account country {}",
                    c.mpn_country, p.country
                )
            })?;
            let holder = state.mpn_ids.get(&c.mpn_id);
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
        Command::SignMPA(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            let p = partner(c.partner_id)?;
            ensure(is_global_admin, Code::SignerNotGlobalAdmin, || {
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
        Command::AuthorizeIndirectProvider(c) => {
            authorize(is_operator, "the operator")?;
            let p = partner(c.partner_id)?;
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
        Command::InviteReseller(c) => {
            authorize(is_partner(c.provider_id), "the inviting provider")?;
            let provider = partner(c.provider_id)?;
            let reseller = partner(c.reseller_id)?;
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
                !state.relationship_active(c.provider_id, c.reseller_id),
                Code::RelationshipAlreadyActive,
                || "the relationship is already active".to_string(),
            )?;
            let pending = state
                .relationship(c.provider_id, c.reseller_id)
                .and_then(|r| r.pending_invitation);
            ensure(pending.is_none(), Code::InvitationAlreadyPending, || {
                format!(
                    "invitation {} to this reseller is still pending",
                    pending.unwrap_or_default()
                )
            })?;
            invitation_id_unused(state, c.invitation_id)?;
            events(vec![Event::ResellerInvited(ev::ResellerInvited {
                invitation_id: c.invitation_id,
                provider_id: c.provider_id,
                reseller_id: c.reseller_id,
            })])
        }
        Command::AcceptInvitation(cmd::AcceptInvitation {
            invitation_id,
            reseller_id,
        })
        | Command::DeclineInvitation(cmd::DeclineInvitation {
            invitation_id,
            reseller_id,
        }) => {
            authorize(is_partner(*reseller_id), "the invited reseller")?;
            let invitation = state
                .reseller_invitations
                .get(invitation_id)
                .ok_or_else(|| {
                    Rejection::new(
                        Code::InvitationNotFound,
                        format!("invitation {invitation_id} not found"),
                    )
                })?;
            ensure(
                invitation.reseller_id == *reseller_id,
                Code::InvitationAddressedToOtherPartner,
                || format!("invitation {invitation_id} is addressed to another reseller"),
            )?;
            ensure(
                invitation.status == InvitationStatus::Pending,
                Code::InvitationNotPending,
                || format!("invitation {invitation_id} is no longer pending"),
            )?;
            let (provider_id, reseller_id, invitation_id) =
                (invitation.provider_id, *reseller_id, *invitation_id);
            if matches!(envelope.command, Command::AcceptInvitation(_)) {
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
        Command::RevokeInvitation(c) => {
            authorize(is_partner(c.provider_id), "the inviting provider")?;
            let invitation = state
                .reseller_invitations
                .get(&c.invitation_id)
                .ok_or_else(|| {
                    Rejection::new(
                        Code::InvitationNotFound,
                        format!("invitation {} not found", c.invitation_id),
                    )
                })?;
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
        Command::RemoveAdminAccess(c) => {
            authorize(is_partner(c.reseller_id), "the reseller")?;
            let relationship = state
                .relationship(c.provider_id, c.reseller_id)
                .filter(|_| state.relationship_active(c.provider_id, c.reseller_id));
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
        Command::EndRelationship(c) => {
            authorize(is_operator, "the operator (through support)")?;
            ensure(
                state.relationship_active(c.provider_id, c.reseller_id),
                Code::RelationshipNotActive,
                || "the relationship is not active".to_string(),
            )?;
            events(vec![Event::RelationshipEnded(ev::RelationshipEnded {
                provider_id: c.provider_id,
                reason: c.reason.clone(),
                reseller_id: c.reseller_id,
            })])
        }
        Command::RegisterCustomer(c) => {
            let registrar = actor
                .id
                .filter(|id| is_partner(*id) && state.partner(*id).is_some());
            let registered_by = registrar.ok_or_else(|| unauthorized("an enrolled partner"))?;
            ensure(
                state.customer(c.customer_id).is_none(),
                Code::CustomerAlreadyRegistered,
                || format!("customer {} is already registered", c.customer_id),
            )?;
            let region = regions::region_of(c.country).ok_or_else(|| {
                Rejection::new(
                    Code::InvalidCountry,
                    format!("country {} is not in the CSP regions table", c.country),
                )
            })?;
            let owner = state.tenants.get(&c.tenant_id);
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
                partner(affiliated)?;
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
        Command::AcceptCustomerAgreement(c) => {
            authorize(is_customer(c.customer_id), "the customer itself")?;
            let customer = customer(c.customer_id)?;
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
        Command::InviteCustomer(c) => {
            authorize(is_partner(c.reseller_id), "the inviting partner")?;
            let reseller = partner(c.reseller_id)?;
            if let Some(provider_id) = c.provider_id {
                partner(provider_id)?;
            }
            let customer = customer(c.customer_id)?;
            let affiliated = customer.affiliated_partner_id;
            ensure(
                affiliated.is_none()
                    || (affiliated != Some(c.reseller_id) && affiliated != c.provider_id),
                Code::SelfSaleProhibited,
                || {
                    "a partner may not sell to itself or to its own organisation (002 scenario 5)"
                        .to_string()
                },
            )?;
            if let (Some(provider_id), Some(affiliated)) = (c.provider_id, affiliated) {
                ensure(
                    !state.relationship_active(provider_id, affiliated),
                    Code::ResellerCannotBuyFromOwnProvider,
                    || {
                        format!("the customer belongs to partner {affiliated}, which has an active reseller relationship with provider {provider_id} (002 scenario 6)")
                    },
                )?;
            }
            match c.provider_id {
                Some(provider_id) => ensure(
                    state.relationship_active(provider_id, c.reseller_id),
                    Code::RelationshipNotActive,
                    || "the provider-reseller relationship is not active".to_string(),
                )?,
                None => {
                    ensure(
                        reseller.has_role(ProgramRole::DirectBill),
                        Code::NotADirectBillPartner,
                        || {
                            format!("partner {} is not a direct-bill partner; name the indirect provider", c.reseller_id)
                        },
                    )?
                }
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
            invitation_id_unused(state, c.invitation_id)?;
            events(vec![Event::CustomerInvited(ev::CustomerInvited {
                customer_id: c.customer_id,
                invitation_id: c.invitation_id,
                provider_id: c.provider_id,
                reseller_id: c.reseller_id,
            })])
        }
        Command::AcceptCustomerInvitation(c) => {
            authorize(is_customer(c.customer_id), "the invited customer")?;
            let invitation = state
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
        Command::EndCustomerRelationship(c) => {
            authorize(
                is_operator || is_partner(c.partner_id),
                "the operator or the partner itself",
            )?;
            let active = state
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
        Command::RecordRevenue(c) => {
            authorize(is_operator, "the operator")?;
            let p = partner(c.partner_id)?;
            let total = p.revenue_total(c.month, c.category) + c.amount_usd.cents;
            ensure(total >= 0, Code::NegativeRevenueTotal, || {
                format!(
                    "the {} total of {} would drop to {}",
                    category_name(c.category),
                    c.month,
                    UsdAmount::from_cents(total)
                )
            })?;
            events(vec![Event::RevenueRecorded(ev::RevenueRecorded {
                amount_usd: c.amount_usd,
                category: c.category,
                month: c.month,
                partner_id: c.partner_id,
            })])
        }
        Command::PurchaseSupportPlan(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            partner(c.partner_id)?;
            events(vec![Event::SupportPlanPurchased(
                ev::SupportPlanPurchased {
                    partner_id: c.partner_id,
                    plan: c.plan,
                },
            )])
        }
        Command::AttestInfrastructure(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            partner(c.partner_id)?;
            events(vec![Event::InfrastructureAttested(
                ev::InfrastructureAttested {
                    billing: c.billing,
                    partner_id: c.partner_id,
                    provisioning: c.provisioning,
                },
            )])
        }
        Command::RegisterManagedService(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            partner(c.partner_id)?;
            events(vec![Event::ManagedServiceRegistered(
                ev::ManagedServiceRegistered {
                    kind: c.kind,
                    name: c.name.clone(),
                    partner_id: c.partner_id,
                },
            )])
        }
        Command::ApplyForDirectBill(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            let p = partner(c.partner_id)?;
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
            let readiness = eligibility::direct_bill_readiness(p, envelope.issued_at.date_naive());
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
        Command::RecordCreditCheck(c) => {
            authorize(is_operator, "the operator")?;
            let application = state
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
        Command::AcceptDirectBillTerms(c) => {
            authorize(is_partner(c.partner_id), "the partner itself")?;
            let application = state
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
            ensure(is_global_admin, Code::SignerNotGlobalAdmin, || {
                "the direct-bill terms must be accepted with global admin credentials".to_string()
            })?;
            events(vec![Event::DirectBillActivated(ev::DirectBillActivated {
                partner_id: c.partner_id,
            })])
        }
        Command::TransitionToIndirectReseller(c) => {
            authorize(is_operator, "the operator")?;
            let direct = state
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
    }
}

/// `details` of `direct_bill_requirements_unmet`: every unmet requirement, the
/// recommendations and the revenue figure.
pub fn readiness_details(readiness: &DirectBillReadiness) -> Value {
    json!({
        "unmet": readiness.unmet,
        "recommendations": readiness.recommendations,
        "ttm_cloud_revenue_usd": readiness.ttm_cloud_revenue_usd.to_string(),
    })
}

fn category_name(category: cmd::RevenueCategory) -> &'static str {
    match category {
        cmd::RevenueCategory::Cloud => "cloud",
        cmd::RevenueCategory::PerpetualSoftware => "perpetual_software",
    }
}

/// Invitation ids are unique across reseller and customer invitations (an extension of the
/// contract: reusing one would make `AcceptInvitation` ambiguous).
fn invitation_id_unused(state: &LedgerState, id: Uuid) -> Result<(), Rejection> {
    let used = state.reseller_invitations.contains_key(&id)
        || state.customer_invitations.contains_key(&id);
    ensure(!used, Code::InvitationIdInUse, || {
        format!("invitation id {id} is already used by another invitation")
    })
}

fn personal_value(
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
