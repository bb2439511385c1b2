//! Builders of realistic commands and a given/when/then harness over the pure domain, for the
//! project's tests and examples. Ids and times are deterministic.

use chrono::{DateTime, Duration, TimeZone, Utc};
use csp_ledger_projections::state::{EventMeta, LedgerState};
use csp_ledger_schemas::command::{
    self as c, Actor, Command, CommandEnvelope, CreditOutcome, ManagedServiceKind, RevenueCategory,
    SupportPlan, VerificationOutcome,
};
use csp_ledger_schemas::event::Event;
use csp_ledger_schemas::values::{Country, Email, Month, UsdAmount};
use csp_ledger_schemas::RejectionCode;
use uuid::Uuid;

use csp_ledger_domain::{decide, Rejection};

/// Makes commands with deterministic ids and a clock that advances one minute per command.
#[derive(Debug, Clone)]
pub struct Kit {
    next_id: u128,
    pub clock: DateTime<Utc>,
}

impl Default for Kit {
    fn default() -> Self {
        Kit::new()
    }
}

fn country(code: &str) -> Country {
    code.parse()
        .unwrap_or_else(|_| panic!("test country {code:?}"))
}

fn email(address: &str) -> Email {
    Email(address.to_string())
}

impl Kit {
    pub fn new() -> Kit {
        Kit {
            next_id: 1,
            clock: Utc
                .with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    /// A fresh id.
    pub fn id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(0x5e5e_0000_0000_4000_8000_0000_0000_0000 | self.next_id)
    }

    /// Wraps a command in an envelope from `actor`.
    pub fn command(&mut self, actor: Actor, command: Command) -> CommandEnvelope {
        self.clock += Duration::minutes(1);
        CommandEnvelope {
            command_id: self.id(),
            issued_at: self.clock,
            actor,
            correlation_id: None,
            command,
        }
    }

    pub fn enroll(
        &mut self,
        partner_id: Uuid,
        country_code: &str,
        contact: &str,
    ) -> CommandEnvelope {
        let tenant_id = self.id();
        self.enroll_with_tenant(partner_id, country_code, contact, tenant_id)
    }

    pub fn enroll_with_tenant(
        &mut self,
        partner_id: Uuid,
        country_code: &str,
        contact: &str,
        tenant_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "global_admin"),
            Command::EnrollPartner(c::EnrollPartner {
                partner_id,
                legal_name: format!("Partner {}", &partner_id.to_string()[24..]),
                country: country(country_code),
                tenant_id,
                primary_contact_email: email(contact),
            }),
        )
    }

    pub fn verify(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::operator(),
            Command::VerifyPartner(c::VerifyPartner {
                partner_id,
                outcome: VerificationOutcome::Approved,
                reason: None,
            }),
        )
    }

    pub fn reject_verification(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::operator(),
            Command::VerifyPartner(c::VerifyPartner {
                partner_id,
                outcome: VerificationOutcome::Rejected,
                reason: Some("address could not be confirmed".into()),
            }),
        )
    }

    pub fn associate_mpn(
        &mut self,
        partner_id: Uuid,
        mpn_id: &str,
        country_code: &str,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "admin_agent"),
            Command::AssociateMpnId(c::AssociateMpnId {
                partner_id,
                mpn_id: mpn_id.into(),
                mpn_country: country(country_code),
            }),
        )
    }

    pub fn sign_mpa_as(&mut self, partner_id: Uuid, role: &str) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, role),
            Command::SignMPA(c::SignMPA {
                partner_id,
                signer_email: email("signer@contoso.example"),
                agreement_version: "MPA-2026-01".into(),
            }),
        )
    }

    pub fn sign_mpa(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.sign_mpa_as(partner_id, "global_admin")
    }

    pub fn authorize_provider(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::operator(),
            Command::AuthorizeIndirectProvider(c::AuthorizeIndirectProvider { partner_id }),
        )
    }

    /// Enrollment, verification, MPN ID in the partner's country and a signed MPA.
    pub fn onboard(&mut self, partner_id: Uuid, country_code: &str) -> Vec<CommandEnvelope> {
        let mpn = format!(
            "{}",
            4_000_000 + (partner_id.as_u128() & 0xffff_ffff) % 1_000_000
        );
        vec![
            self.enroll(
                partner_id,
                country_code,
                &format!("ops@{}.example", &partner_id.to_string()[..8]),
            ),
            self.verify(partner_id),
            self.associate_mpn(partner_id, &mpn, country_code),
            self.sign_mpa(partner_id),
        ]
    }

    /// An onboarded partner authorised as indirect provider.
    pub fn onboard_provider(
        &mut self,
        partner_id: Uuid,
        country_code: &str,
    ) -> Vec<CommandEnvelope> {
        let mut out = self.onboard(partner_id, country_code);
        out.push(self.authorize_provider(partner_id));
        out
    }

    pub fn invite_reseller(
        &mut self,
        invitation_id: Uuid,
        provider_id: Uuid,
        reseller_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(provider_id, "admin_agent"),
            Command::InviteReseller(c::InviteReseller {
                invitation_id,
                provider_id,
                reseller_id,
            }),
        )
    }

    pub fn accept_invitation(&mut self, invitation_id: Uuid, reseller_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(reseller_id, "admin_agent"),
            Command::AcceptInvitation(c::AcceptInvitation {
                invitation_id,
                reseller_id,
            }),
        )
    }

    pub fn decline_invitation(
        &mut self,
        invitation_id: Uuid,
        reseller_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(reseller_id, "admin_agent"),
            Command::DeclineInvitation(c::DeclineInvitation {
                invitation_id,
                reseller_id,
            }),
        )
    }

    pub fn revoke_invitation(&mut self, invitation_id: Uuid, provider_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(provider_id, "admin_agent"),
            Command::RevokeInvitation(c::RevokeInvitation {
                invitation_id,
                provider_id,
            }),
        )
    }

    /// Invitation and acceptance: an active provider-reseller relationship.
    pub fn connect(&mut self, provider_id: Uuid, reseller_id: Uuid) -> Vec<CommandEnvelope> {
        let invitation_id = self.id();
        vec![
            self.invite_reseller(invitation_id, provider_id, reseller_id),
            self.accept_invitation(invitation_id, reseller_id),
        ]
    }

    pub fn remove_admin_access(&mut self, provider_id: Uuid, reseller_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(reseller_id, "admin_agent"),
            Command::RemoveAdminAccess(c::RemoveAdminAccess {
                provider_id,
                reseller_id,
            }),
        )
    }

    pub fn end_relationship(&mut self, provider_id: Uuid, reseller_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::operator(),
            Command::EndRelationship(c::EndRelationship {
                provider_id,
                reseller_id,
                reason: "support ticket 4711".into(),
            }),
        )
    }

    pub fn register_customer(
        &mut self,
        registrar: Uuid,
        customer_id: Uuid,
        country_code: &str,
        affiliated_partner_id: Option<Uuid>,
    ) -> CommandEnvelope {
        let tenant_id = self.id();
        self.register_customer_with_tenant(
            registrar,
            customer_id,
            country_code,
            tenant_id,
            affiliated_partner_id,
        )
    }

    pub fn register_customer_with_tenant(
        &mut self,
        registrar: Uuid,
        customer_id: Uuid,
        country_code: &str,
        tenant_id: Uuid,
        affiliated_partner_id: Option<Uuid>,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(registrar, "admin_agent"),
            Command::RegisterCustomer(c::RegisterCustomer {
                customer_id,
                company_name: format!("Customer {}", &customer_id.to_string()[24..]),
                country: country(country_code),
                tenant_id,
                affiliated_partner_id,
            }),
        )
    }

    pub fn accept_customer_agreement(&mut self, customer_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::customer(customer_id),
            Command::AcceptCustomerAgreement(c::AcceptCustomerAgreement {
                customer_id,
                signer_email: email("it-lead@customer.example"),
                agreement_version: "MCA-2026".into(),
            }),
        )
    }

    pub fn invite_customer(
        &mut self,
        invitation_id: Uuid,
        reseller_id: Uuid,
        provider_id: Option<Uuid>,
        customer_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(reseller_id, "admin_agent"),
            Command::InviteCustomer(c::InviteCustomer {
                invitation_id,
                reseller_id,
                provider_id,
                customer_id,
            }),
        )
    }

    pub fn accept_customer_invitation(
        &mut self,
        invitation_id: Uuid,
        customer_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            Actor::customer(customer_id),
            Command::AcceptCustomerInvitation(c::AcceptCustomerInvitation {
                invitation_id,
                customer_id,
            }),
        )
    }

    pub fn end_customer_relationship(
        &mut self,
        actor: Actor,
        customer_id: Uuid,
        partner_id: Uuid,
    ) -> CommandEnvelope {
        self.command(
            actor,
            Command::EndCustomerRelationship(c::EndCustomerRelationship {
                customer_id,
                partner_id,
            }),
        )
    }

    pub fn record_revenue(
        &mut self,
        partner_id: Uuid,
        month: &str,
        category: RevenueCategory,
        amount: &str,
    ) -> CommandEnvelope {
        let month: Month = month
            .parse()
            .unwrap_or_else(|_| panic!("test month {month:?}"));
        let amount_usd: UsdAmount = amount
            .parse()
            .unwrap_or_else(|_| panic!("test amount {amount:?}"));
        self.command(
            Actor::operator(),
            Command::RecordRevenue(c::RecordRevenue {
                partner_id,
                month,
                category,
                amount_usd,
            }),
        )
    }

    pub fn purchase_support_plan(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "global_admin"),
            Command::PurchaseSupportPlan(c::PurchaseSupportPlan {
                partner_id,
                plan: SupportPlan::Advanced,
            }),
        )
    }

    pub fn attest_infrastructure(
        &mut self,
        partner_id: Uuid,
        billing: bool,
        provisioning: bool,
    ) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "global_admin"),
            Command::AttestInfrastructure(c::AttestInfrastructure {
                partner_id,
                billing,
                provisioning,
            }),
        )
    }

    pub fn register_managed_service(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "admin_agent"),
            Command::RegisterManagedService(c::RegisterManagedService {
                partner_id,
                kind: ManagedServiceKind::ManagedService,
                name: "24/7 Microsoft 365 operations".into(),
            }),
        )
    }

    pub fn apply_for_direct_bill(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, "global_admin"),
            Command::ApplyForDirectBill(c::ApplyForDirectBill { partner_id }),
        )
    }

    pub fn record_credit_check(
        &mut self,
        partner_id: Uuid,
        outcome: CreditOutcome,
    ) -> CommandEnvelope {
        let credit_limit_usd =
            (outcome == CreditOutcome::Approved).then(|| UsdAmount::from_cents(25_000_000));
        self.command(
            Actor::operator(),
            Command::RecordCreditCheck(c::RecordCreditCheck {
                partner_id,
                outcome,
                credit_limit_usd,
            }),
        )
    }

    pub fn accept_direct_bill_terms_as(&mut self, partner_id: Uuid, role: &str) -> CommandEnvelope {
        self.command(
            Actor::partner(partner_id, role),
            Command::AcceptDirectBillTerms(c::AcceptDirectBillTerms { partner_id }),
        )
    }

    pub fn transition_to_indirect_reseller(&mut self, partner_id: Uuid) -> CommandEnvelope {
        self.command(
            Actor::operator(),
            Command::TransitionToIndirectReseller(c::TransitionToIndirectReseller { partner_id }),
        )
    }

    /// Twelve months of cloud revenue of `monthly` USD before the kit's current month.
    pub fn trailing_revenue(&mut self, partner_id: Uuid, monthly: &str) -> Vec<CommandEnvelope> {
        let current = Month::of_date(self.clock.date_naive()).index();
        (current - 12..current)
            .map(|index| {
                let month = format!("{:04}-{:02}", index / 12, index % 12 + 1);
                self.record_revenue(partner_id, &month, RevenueCategory::Cloud, monthly)
            })
            .collect()
    }

    /// Everything a direct-bill application needs: onboarding, support plan, attestation and
    /// USD 300,000 of cloud revenue over the trailing twelve months.
    pub fn direct_bill_ready(
        &mut self,
        partner_id: Uuid,
        country_code: &str,
    ) -> Vec<CommandEnvelope> {
        let mut out = self.onboard(partner_id, country_code);
        out.push(self.purchase_support_plan(partner_id));
        out.push(self.attest_infrastructure(partner_id, true, true));
        out.extend(self.trailing_revenue(partner_id, "25000.00"));
        out
    }

    /// A direct-bill partner: ready, applied, credit approved, terms accepted.
    pub fn direct_bill_partner(
        &mut self,
        partner_id: Uuid,
        country_code: &str,
    ) -> Vec<CommandEnvelope> {
        let mut out = self.direct_bill_ready(partner_id, country_code);
        out.push(self.apply_for_direct_bill(partner_id));
        out.push(self.record_credit_check(partner_id, CreditOutcome::Approved));
        out.push(self.accept_direct_bill_terms_as(partner_id, "global_admin"));
        out
    }
}

/// Given / when / then over the pure domain: no log, no clock.
#[derive(Debug, Default)]
pub struct Harness {
    pub state: LedgerState,
    salt: u64,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::default()
    }

    /// Applies commands that must all be accepted.
    ///
    /// # Panics
    /// When one is rejected: the test's setup is wrong.
    pub fn given(&mut self, commands: impl IntoIterator<Item = CommandEnvelope>) -> &mut Self {
        for command in commands {
            if let Err(rejection) = self.when(&command) {
                panic!(
                    "given {} was rejected: {} ({})",
                    command.command.type_name(),
                    rejection.code,
                    rejection.message
                );
            }
        }
        self
    }

    /// Decides one command; applies its events when accepted.
    pub fn when(&mut self, command: &CommandEnvelope) -> Result<Vec<Event>, Rejection> {
        let salt = &mut self.salt;
        let decision = decide(&self.state, command, &mut || {
            *salt += 1;
            u128::from(*salt).to_be_bytes()
        })?;
        for event in &decision.events {
            let meta = EventMeta {
                position: self.state.position + 1,
                stream_version: self.state.next_stream_version(&event.stream()),
                occurred_at: command.issued_at,
                recorded_at: command.issued_at,
            };
            self.state.apply(&meta, event);
        }
        Ok(decision.events)
    }

    /// The rejection code of a command that must be rejected.
    ///
    /// # Panics
    /// When the command is accepted.
    pub fn rejects(&mut self, command: &CommandEnvelope) -> RejectionCode {
        match self.when(command) {
            Ok(events) => panic!(
                "{} was accepted with {:?}",
                command.command.type_name(),
                events.iter().map(Event::type_name).collect::<Vec<_>>()
            ),
            Err(rejection) => rejection.code,
        }
    }

    /// The event type names of a command that must be accepted.
    pub fn accepts(&mut self, command: &CommandEnvelope) -> Vec<&'static str> {
        match self.when(command) {
            Ok(events) => events.iter().map(Event::type_name).collect(),
            Err(rejection) => panic!(
                "{} was rejected: {} ({})",
                command.command.type_name(),
                rejection.code,
                rejection.message
            ),
        }
    }
}
