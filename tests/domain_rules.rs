//! Every check of SPEC.md section 4, provoked from a realistic sequence of commands through the
//! pure domain (given these commands, when this one, then these events or this rejection),
//! plus the seed scenarios of 002 and the MPA gates of 002/004.

use csp_ledger_projections::eligibility::{partner_unmet, relationship_unmet, ttm_cloud_revenue};
use csp_ledger_schemas::command::{Actor, CreditOutcome, RevenueCategory};
use csp_ledger_schemas::event::{Event, ProgramRole};
use csp_ledger_schemas::RejectionCode as Code;
use csp_ledger_testkit::{Harness, Kit};

/// A provider in Germany and a reseller in France (one region, europe), both onboarded.
fn europe() -> (Kit, Harness, uuid::Uuid, uuid::Uuid) {
    let mut kit = Kit::new();
    let mut world = Harness::new();
    let provider = kit.id();
    let reseller = kit.id();
    world
        .given(kit.onboard_provider(provider, "DE"))
        .given(kit.onboard(reseller, "FR"));
    (kit, world, provider, reseller)
}

// ---- actors -------------------------------------------------------------------------------

#[test]
fn unauthorized_actor_when_a_partner_enrolls_another_partner() {
    let mut kit = Kit::new();
    let (someone, victim) = (kit.id(), kit.id());
    let mut command = kit.enroll(victim, "DE", "ops@victim.example");
    command.actor = Actor::partner(someone, "global_admin");
    assert_eq!(Harness::new().rejects(&command), Code::UnauthorizedActor);
}

#[test]
fn unauthorized_actor_when_a_partner_verifies_itself_checked_before_partner_not_found() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut command = kit.verify(partner);
    command.actor = Actor::partner(partner, "global_admin");
    // The partner does not even exist: the actor check comes first.
    assert_eq!(Harness::new().rejects(&command), Code::UnauthorizedActor);
}

#[test]
fn unauthorized_actor_for_a_partner_role_other_than_global_admin_or_admin_agent() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.onboard(partner, "DE"));
    let mut command = kit.purchase_support_plan(partner);
    command.actor = Actor::partner(partner, "billing_admin");
    assert_eq!(world.rejects(&command), Code::UnauthorizedActor);
    command.actor.role = None;
    assert_eq!(world.rejects(&command), Code::UnauthorizedActor);
}

#[test]
fn unauthorized_actor_when_a_customer_accepts_for_another_customer_or_an_unknown_partner_registers()
{
    let (mut kit, mut world, provider, reseller) = europe();
    let (customer, other) = (kit.id(), kit.id());
    world.given(kit.connect(provider, reseller)).given([
        kit.register_customer(reseller, customer, "FR", None),
        kit.register_customer(reseller, other, "FR", None),
    ]);
    let mut command = kit.accept_customer_agreement(customer);
    command.actor = Actor::customer(other);
    assert_eq!(world.rejects(&command), Code::UnauthorizedActor);
    let stranger = kit.id();
    let third = kit.id();
    assert_eq!(
        world.rejects(&kit.register_customer(stranger, third, "FR", None)),
        Code::UnauthorizedActor
    );
}

// ---- enrollment -----------------------------------------------------------------------------

#[test]
fn enroll_partner_starts_as_pending_indirect_reseller() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    let events = world
        .when(&kit.enroll(partner, "DE", "ops@contoso.example"))
        .unwrap();
    let Event::PartnerEnrolled(enrolled) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(enrolled.role, ProgramRole::IndirectReseller);
    assert_eq!(enrolled.region, "europe");
    assert_eq!(
        partner_unmet(world.state.partner(partner).unwrap()),
        [
            "partner_not_verified",
            "mpn_not_associated",
            "mpa_not_signed"
        ]
    );
}

#[test]
fn partner_already_enrolled() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([kit.enroll(partner, "DE", "ops@contoso.example")]);
    assert_eq!(
        world.rejects(&kit.enroll(partner, "DE", "ops@contoso.example")),
        Code::PartnerAlreadyEnrolled
    );
}

#[test]
fn invalid_country_is_checked_before_the_email_domain() {
    let mut kit = Kit::new();
    let partner = kit.id();
    assert_eq!(
        Harness::new().rejects(&kit.enroll(partner, "ZZ", "someone@gmail.com")),
        Code::InvalidCountry
    );
}

#[test]
fn free_email_domain_compared_case_insensitively() {
    let mut kit = Kit::new();
    let mut world = Harness::new();
    for address in [
        "Owner@GMAIL.com",
        "x@hotmail.com",
        "y@Outlook.COM",
        "z@icloud.com",
    ] {
        let partner = kit.id();
        assert_eq!(
            world.rejects(&kit.enroll(partner, "DE", address)),
            Code::FreeEmailDomain,
            "{address}"
        );
    }
    let partner = kit.id();
    world.given([kit.enroll(partner, "DE", "owner@gmail.com.contoso.example")]);
}

#[test]
fn tenant_in_use_by_another_partner_or_a_customer() {
    let (mut kit, mut world, _provider, reseller) = europe();
    let reseller_tenant = world.state.partner(reseller).unwrap().tenant_id;
    let newcomer = kit.id();
    assert_eq!(
        world.rejects(&kit.enroll_with_tenant(
            newcomer,
            "DE",
            "a@newcomer.example",
            reseller_tenant
        )),
        Code::TenantInUse
    );
    let (customer, customer_tenant) = (kit.id(), kit.id());
    world.given([kit.register_customer_with_tenant(
        reseller,
        customer,
        "FR",
        customer_tenant,
        None,
    )]);
    assert_eq!(
        world.rejects(&kit.enroll_with_tenant(
            newcomer,
            "DE",
            "a@newcomer.example",
            customer_tenant
        )),
        Code::TenantInUse
    );
}

// ---- verification, MPN, MPA ---------------------------------------------------------------------

#[test]
fn partner_not_found_for_operator_commands_on_unknown_partners() {
    let mut kit = Kit::new();
    let ghost = kit.id();
    let mut world = Harness::new();
    assert_eq!(world.rejects(&kit.verify(ghost)), Code::PartnerNotFound);
    assert_eq!(
        world.rejects(&kit.authorize_provider(ghost)),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.record_revenue(ghost, "2026-01", RevenueCategory::Cloud, "10.00")),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.purchase_support_plan(ghost)),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.attest_infrastructure(ghost, true, true)),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.register_managed_service(ghost)),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.apply_for_direct_bill(ghost)),
        Code::PartnerNotFound
    );
    assert_eq!(
        world.rejects(&kit.associate_mpn(ghost, "123", "DE")),
        Code::PartnerNotFound
    );
    assert_eq!(world.rejects(&kit.sign_mpa(ghost)), Code::PartnerNotFound);
}

#[test]
fn verification_already_decided() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([
        kit.enroll(partner, "DE", "ops@contoso.example"),
        kit.reject_verification(partner),
    ]);
    assert_eq!(
        world.rejects(&kit.verify(partner)),
        Code::VerificationAlreadyDecided
    );
}

#[test]
fn mpn_country_mismatch_004_step_5() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([kit.enroll(partner, "DE", "ops@contoso.example")]);
    assert_eq!(
        world.rejects(&kit.associate_mpn(partner, "1234567", "FR")),
        Code::MpnCountryMismatch
    );
}

#[test]
fn mpn_id_in_use_by_another_partner_but_reassociation_by_the_holder_is_fine() {
    let mut kit = Kit::new();
    let (first, second) = (kit.id(), kit.id());
    let mut world = Harness::new();
    world.given([
        kit.enroll(first, "DE", "a@first.example"),
        kit.enroll(second, "DE", "b@second.example"),
        kit.associate_mpn(first, "1234567", "DE"),
    ]);
    assert_eq!(
        world.rejects(&kit.associate_mpn(second, "1234567", "DE")),
        Code::MpnIdInUse
    );
    world.given([
        kit.associate_mpn(first, "1234567", "DE"),
        kit.associate_mpn(first, "7654321", "DE"),
    ]);
    // The old MPN ID is free again once replaced.
    world.given([kit.associate_mpn(second, "1234567", "DE")]);
}

#[test]
fn mpa_gate_004_step_6_signing_requires_global_admin() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([
        kit.enroll(partner, "DE", "ops@contoso.example"),
        kit.verify(partner),
        kit.associate_mpn(partner, "1234567", "DE"),
    ]);
    assert_eq!(
        world.rejects(&kit.sign_mpa_as(partner, "admin_agent")),
        Code::SignerNotGlobalAdmin
    );
    assert_eq!(world.accepts(&kit.sign_mpa(partner)), ["MpaSigned"]);
}

#[test]
fn mpa_gate_004_step_6_signing_requires_completed_verification() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([
        kit.enroll(partner, "DE", "ops@contoso.example"),
        kit.associate_mpn(partner, "1234567", "DE"),
    ]);
    assert_eq!(
        world.rejects(&kit.sign_mpa(partner)),
        Code::PartnerNotVerified
    );
    world.given([kit.reject_verification(partner)]);
    assert_eq!(
        world.rejects(&kit.sign_mpa(partner)),
        Code::PartnerNotVerified
    );
}

#[test]
fn mpa_gate_004_step_5e_signing_requires_an_associated_mpn_id() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([
        kit.enroll(partner, "DE", "ops@contoso.example"),
        kit.verify(partner),
    ]);
    assert_eq!(
        world.rejects(&kit.sign_mpa(partner)),
        Code::MpnNotAssociated
    );
}

#[test]
fn mpa_already_signed() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.onboard(partner, "DE"));
    assert_eq!(
        world.rejects(&kit.sign_mpa(partner)),
        Code::MpaAlreadySigned
    );
}

#[test]
fn mpa_gate_002_partner_cannot_transact_until_it_signs_the_mpa() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([
        kit.enroll(partner, "DE", "ops@contoso.example"),
        kit.verify(partner),
        kit.associate_mpn(partner, "1234567", "DE"),
    ]);
    assert_eq!(
        partner_unmet(world.state.partner(partner).unwrap()),
        ["mpa_not_signed"]
    );
    world.given([kit.sign_mpa(partner)]);
    assert!(partner_unmet(world.state.partner(partner).unwrap()).is_empty());
}

#[test]
fn mpa_gate_002_provider_cannot_transact_through_a_reseller_that_has_not_signed_the_mpa() {
    let mut kit = Kit::new();
    let (provider, reseller) = (kit.id(), kit.id());
    let mut world = Harness::new();
    world.given(kit.onboard_provider(provider, "DE"));
    world.given([
        kit.enroll(reseller, "FR", "ops@reseller.example"),
        kit.verify(reseller),
        kit.associate_mpn(reseller, "7777777", "FR"),
    ]);
    world.given(kit.connect(provider, reseller));
    assert_eq!(
        relationship_unmet(&world.state, provider, reseller),
        ["reseller.mpa_not_signed"]
    );
    world.given([kit.sign_mpa(reseller)]);
    assert!(relationship_unmet(&world.state, provider, reseller).is_empty());
}

// ---- providers and resellers --------------------------------------------------------------------

#[test]
fn partner_not_verified_blocks_provider_authorisation() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([kit.enroll(partner, "DE", "ops@distributor.example")]);
    assert_eq!(
        world.rejects(&kit.authorize_provider(partner)),
        Code::PartnerNotVerified
    );
}

#[test]
fn already_indirect_provider() {
    let (mut kit, mut world, provider, _) = europe();
    assert_eq!(
        world.rejects(&kit.authorize_provider(provider)),
        Code::AlreadyIndirectProvider
    );
}

#[test]
fn accepting_an_invitation_establishes_the_relationship_and_grants_admin_access() {
    let (mut kit, mut world, provider, reseller) = europe();
    let invitation = kit.id();
    assert_eq!(
        world.accepts(&kit.invite_reseller(invitation, provider, reseller)),
        ["ResellerInvited"]
    );
    assert_eq!(
        world.accepts(&kit.accept_invitation(invitation, reseller)),
        [
            "InvitationAccepted",
            "RelationshipEstablished",
            "AdminAccessGranted"
        ]
    );
    let relationship = world.state.relationship(provider, reseller).unwrap();
    assert!(relationship.admin_access);
}

#[test]
fn partner_not_found_when_inviting_an_unknown_reseller() {
    let (mut kit, mut world, provider, _) = europe();
    let (invitation, ghost) = (kit.id(), kit.id());
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, ghost)),
        Code::PartnerNotFound
    );
}

#[test]
fn cannot_invite_self() {
    let (mut kit, mut world, provider, _) = europe();
    let invitation = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, provider)),
        Code::CannotInviteSelf
    );
}

#[test]
fn not_an_indirect_provider_when_a_reseller_invites() {
    let (mut kit, mut world, _, reseller) = europe();
    let (other, invitation) = (kit.id(), kit.id());
    world.given(kit.onboard(other, "NL"));
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, reseller, other)),
        Code::NotAnIndirectProvider
    );
}

#[test]
fn not_an_indirect_reseller_when_a_provider_invites_another_provider() {
    let (mut kit, mut world, provider, _) = europe();
    let (other, invitation) = (kit.id(), kit.id());
    world.given(kit.onboard_provider(other, "NL"));
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, other)),
        Code::NotAnIndirectReseller
    );
}

#[test]
fn scenario_8_provider_and_reseller_in_different_regions() {
    let (mut kit, mut world, provider, _) = europe();
    let (american, invitation) = (kit.id(), kit.id());
    world.given(kit.onboard(american, "US"));
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, american)),
        Code::RegionMismatch
    );
    // Same region, different countries (DE provider, FR reseller) is fine: see europe().
}

#[test]
fn relationship_already_active() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let invitation = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, reseller)),
        Code::RelationshipAlreadyActive
    );
}

#[test]
fn invitation_already_pending_for_the_same_pair() {
    let (mut kit, mut world, provider, reseller) = europe();
    let (first, second) = (kit.id(), kit.id());
    world.given([kit.invite_reseller(first, provider, reseller)]);
    assert_eq!(
        world.rejects(&kit.invite_reseller(second, provider, reseller)),
        Code::InvitationAlreadyPending
    );
    world.given([
        kit.revoke_invitation(first, provider),
        kit.invite_reseller(second, provider, reseller),
    ]);
}

#[test]
fn invitation_id_in_use_when_an_id_is_reused() {
    let (mut kit, mut world, provider, reseller) = europe();
    let other = kit.id();
    world.given(kit.onboard(other, "IT"));
    let invitation = kit.id();
    world.given([kit.invite_reseller(invitation, provider, reseller)]);
    assert_eq!(
        world.rejects(&kit.invite_reseller(invitation, provider, other)),
        Code::InvitationIdInUse
    );
}

#[test]
fn invitation_not_found() {
    let (mut kit, mut world, provider, reseller) = europe();
    let ghost = kit.id();
    assert_eq!(
        world.rejects(&kit.accept_invitation(ghost, reseller)),
        Code::InvitationNotFound
    );
    assert_eq!(
        world.rejects(&kit.decline_invitation(ghost, reseller)),
        Code::InvitationNotFound
    );
    assert_eq!(
        world.rejects(&kit.revoke_invitation(ghost, provider)),
        Code::InvitationNotFound
    );
}

#[test]
fn invitation_addressed_to_other_partner() {
    let (mut kit, mut world, provider, reseller) = europe();
    let (bystander, other_provider, invitation) = (kit.id(), kit.id(), kit.id());
    world
        .given(kit.onboard(bystander, "ES"))
        .given(kit.onboard_provider(other_provider, "AT"));
    world.given([kit.invite_reseller(invitation, provider, reseller)]);
    assert_eq!(
        world.rejects(&kit.accept_invitation(invitation, bystander)),
        Code::InvitationAddressedToOtherPartner
    );
    assert_eq!(
        world.rejects(&kit.decline_invitation(invitation, bystander)),
        Code::InvitationAddressedToOtherPartner
    );
    assert_eq!(
        world.rejects(&kit.revoke_invitation(invitation, other_provider)),
        Code::InvitationAddressedToOtherPartner
    );
}

#[test]
fn invitation_not_pending_after_decline_accept_or_revoke() {
    let (mut kit, mut world, provider, reseller) = europe();
    let invitation = kit.id();
    world.given([kit.invite_reseller(invitation, provider, reseller)]);
    assert_eq!(
        world.accepts(&kit.decline_invitation(invitation, reseller)),
        ["InvitationDeclined"]
    );
    assert_eq!(
        world.rejects(&kit.accept_invitation(invitation, reseller)),
        Code::InvitationNotPending
    );
    let second = kit.id();
    world.given(vec![
        kit.invite_reseller(second, provider, reseller),
        kit.accept_invitation(second, reseller),
    ]);
    assert_eq!(
        world.rejects(&kit.revoke_invitation(second, provider)),
        Code::InvitationNotPending
    );
    assert_eq!(
        world.rejects(&kit.accept_invitation(second, reseller)),
        Code::InvitationNotPending
    );
}

#[test]
fn relationship_not_active_for_admin_access_and_ending() {
    let (mut kit, mut world, provider, reseller) = europe();
    let invitation = kit.id();
    world.given([kit.invite_reseller(invitation, provider, reseller)]);
    assert_eq!(
        world.rejects(&kit.remove_admin_access(provider, reseller)),
        Code::RelationshipNotActive
    );
    assert_eq!(
        world.rejects(&kit.end_relationship(provider, reseller)),
        Code::RelationshipNotActive
    );
    world.given([
        kit.accept_invitation(invitation, reseller),
        kit.end_relationship(provider, reseller),
    ]);
    assert_eq!(
        world.rejects(&kit.end_relationship(provider, reseller)),
        Code::RelationshipNotActive
    );
}

#[test]
fn admin_access_removed_keeps_the_relationship_then_admin_access_already_removed() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    assert_eq!(
        world.accepts(&kit.remove_admin_access(provider, reseller)),
        ["AdminAccessRemoved"]
    );
    assert!(world.state.relationship_active(provider, reseller));
    assert_eq!(
        world.rejects(&kit.remove_admin_access(provider, reseller)),
        Code::AdminAccessAlreadyRemoved
    );
}

#[test]
fn ending_a_relationship_is_for_the_operator_only() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let mut command = kit.end_relationship(provider, reseller);
    command.actor = Actor::partner(provider, "global_admin");
    assert_eq!(world.rejects(&command), Code::UnauthorizedActor);
    command.actor = Actor::operator();
    assert_eq!(world.accepts(&command), ["RelationshipEnded"]);
}

// ---- customers --------------------------------------------------------------------------------

#[test]
fn customer_already_registered() {
    let (mut kit, mut world, _, reseller) = europe();
    let customer = kit.id();
    world.given([kit.register_customer(reseller, customer, "FR", None)]);
    assert_eq!(
        world.rejects(&kit.register_customer(reseller, customer, "FR", None)),
        Code::CustomerAlreadyRegistered
    );
}

#[test]
fn invalid_country_for_a_customer() {
    let (mut kit, mut world, _, reseller) = europe();
    let customer = kit.id();
    assert_eq!(
        world.rejects(&kit.register_customer(reseller, customer, "QQ", None)),
        Code::InvalidCountry
    );
}

#[test]
fn tenant_in_use_by_another_customer() {
    let (mut kit, mut world, _, reseller) = europe();
    let (first, second, tenant) = (kit.id(), kit.id(), kit.id());
    world.given([kit.register_customer_with_tenant(reseller, first, "FR", tenant, None)]);
    assert_eq!(
        world.rejects(&kit.register_customer_with_tenant(reseller, second, "FR", tenant, None)),
        Code::TenantInUse
    );
}

#[test]
fn scenario_4_partner_buying_for_own_use_needs_a_tenant_other_than_its_csp_tenant() {
    let (mut kit, mut world, provider, reseller) = europe();
    let other_reseller = kit.id();
    world
        .given(kit.onboard(other_reseller, "BE"))
        .given(kit.connect(provider, other_reseller));
    let csp_tenant = world.state.partner(reseller).unwrap().tenant_id;
    let own_use = kit.id();
    assert_eq!(
        world.rejects(&kit.register_customer_with_tenant(
            other_reseller,
            own_use,
            "FR",
            csp_tenant,
            Some(reseller)
        )),
        Code::CspTenantCannotBeCustomer
    );
    // With a separate tenant designated for internal use, the partner can be a customer.
    world.given([
        kit.register_customer(other_reseller, own_use, "FR", Some(reseller)),
        kit.accept_customer_agreement(own_use),
    ]);
    let invitation = kit.id();
    assert_eq!(
        world.accepts(&kit.invite_customer(invitation, other_reseller, Some(provider), own_use)),
        ["CustomerInvited"]
    );
}

#[test]
fn customer_not_found() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (ghost, invitation) = (kit.id(), kit.id());
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, Some(provider), ghost)),
        Code::CustomerNotFound
    );
    assert_eq!(
        world.rejects(&kit.accept_customer_agreement(ghost)),
        Code::CustomerNotFound
    );
}

#[test]
fn customer_agreement_already_accepted() {
    let (mut kit, mut world, _, reseller) = europe();
    let customer = kit.id();
    world.given([
        kit.register_customer(reseller, customer, "FR", None),
        kit.accept_customer_agreement(customer),
    ]);
    assert_eq!(
        world.rejects(&kit.accept_customer_agreement(customer)),
        Code::CustomerAgreementAlreadyAccepted
    );
}

#[test]
fn scenario_5_partner_may_not_sell_to_itself_or_its_own_organisation() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let own = kit.id();
    world.given([kit.register_customer(reseller, own, "FR", Some(reseller))]);
    let invitation = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, Some(provider), own)),
        Code::SelfSaleProhibited
    );
    // The provider's own organisation is protected the same way.
    let provider_own = kit.id();
    world.given([kit.register_customer(reseller, provider_own, "DE", Some(provider))]);
    let invitation = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, Some(provider), provider_own)),
        Code::SelfSaleProhibited
    );
}

#[test]
fn scenario_6_reseller_cannot_buy_as_customer_from_its_own_provider() {
    let (mut kit, mut world, provider, reseller) = europe();
    let (seller, other_provider) = (kit.id(), kit.id());
    world
        .given(kit.onboard(seller, "NL"))
        .given(kit.onboard_provider(other_provider, "AT"));
    world
        .given(kit.connect(provider, reseller))
        .given(kit.connect(provider, seller))
        .given(kit.connect(other_provider, seller));
    // The reseller's own organisation as a customer (its own tenant for internal use).
    let own_use = kit.id();
    world.given([kit.register_customer(seller, own_use, "FR", Some(reseller))]);
    let invitation = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, seller, Some(provider), own_use)),
        Code::ResellerCannotBuyFromOwnProvider
    );
    // Option 2 of the seed: buy through a provider the reseller has no relationship with.
    let invitation = kit.id();
    assert_eq!(
        world.accepts(&kit.invite_customer(invitation, seller, Some(other_provider), own_use)),
        ["CustomerInvited"]
    );
    // Or end the relationship through support, after which the first provider is fine too.
    world.given([kit.end_relationship(provider, reseller)]);
    let invitation = kit.id();
    assert_eq!(
        world.accepts(&kit.invite_customer(invitation, seller, Some(provider), own_use)),
        ["CustomerInvited"]
    );
}

#[test]
fn relationship_not_active_when_inviting_a_customer_through_an_unconnected_provider() {
    let (mut kit, mut world, provider, reseller) = europe();
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([kit.register_customer(reseller, customer, "FR", None)]);
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, Some(provider), customer)),
        Code::RelationshipNotActive
    );
}

#[test]
fn not_a_direct_bill_partner_when_an_indirect_reseller_invites_without_a_provider() {
    let (mut kit, mut world, _, reseller) = europe();
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([kit.register_customer(reseller, customer, "FR", None)]);
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, None, customer)),
        Code::NotADirectBillPartner
    );
    assert_eq!(
        world.rejects(&kit.transition_to_indirect_reseller(reseller)),
        Code::NotADirectBillPartner
    );
}

#[test]
fn scenario_7_reseller_cannot_sell_to_a_customer_in_another_region() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (american, invitation) = (kit.id(), kit.id());
    world.given([kit.register_customer(reseller, american, "US", None)]);
    assert_eq!(
        world.rejects(&kit.invite_customer(invitation, reseller, Some(provider), american)),
        Code::RegionMismatch
    );
    // A customer in another country of the same region is fine.
    let (swiss, invitation) = (kit.id(), kit.id());
    world.given([kit.register_customer(reseller, swiss, "CH", None)]);
    assert_eq!(
        world.accepts(&kit.invite_customer(invitation, reseller, Some(provider), swiss)),
        ["CustomerInvited"]
    );
}

#[test]
fn accepting_a_customer_invitation_starts_both_relationships_at_once() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([
        kit.register_customer(reseller, customer, "FR", None),
        kit.invite_customer(invitation, reseller, Some(provider), customer),
    ]);
    assert_eq!(
        world.accepts(&kit.accept_customer_invitation(invitation, customer)),
        [
            "CustomerRelationshipEstablished",
            "CustomerRelationshipEstablished"
        ]
    );
    let state = world.state.customer(customer).unwrap();
    assert!(state.relationship_active(reseller) && state.relationship_active(provider));
}

#[test]
fn customer_relationship_already_active() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([
        kit.register_customer(reseller, customer, "FR", None),
        kit.invite_customer(invitation, reseller, Some(provider), customer),
        kit.accept_customer_invitation(invitation, customer),
    ]);
    let again = kit.id();
    assert_eq!(
        world.rejects(&kit.invite_customer(again, reseller, Some(provider), customer)),
        Code::CustomerRelationshipAlreadyActive
    );
}

#[test]
fn customer_invitations_are_checked_like_reseller_invitations() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (customer, other, invitation) = (kit.id(), kit.id(), kit.id());
    world.given([
        kit.register_customer(reseller, customer, "FR", None),
        kit.register_customer(reseller, other, "FR", None),
        kit.invite_customer(invitation, reseller, Some(provider), customer),
    ]);
    let ghost = kit.id();
    assert_eq!(
        world.rejects(&kit.accept_customer_invitation(ghost, customer)),
        Code::InvitationNotFound
    );
    assert_eq!(
        world.rejects(&kit.accept_customer_invitation(invitation, other)),
        Code::InvitationAddressedToOtherPartner
    );
    world.given([kit.accept_customer_invitation(invitation, customer)]);
    assert_eq!(
        world.rejects(&kit.accept_customer_invitation(invitation, customer)),
        Code::InvitationNotPending
    );
}

#[test]
fn customer_relationship_not_active_and_who_may_end_one() {
    let (mut kit, mut world, provider, reseller) = europe();
    world.given(kit.connect(provider, reseller));
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([kit.register_customer(reseller, customer, "FR", None)]);
    assert_eq!(
        world.rejects(&kit.end_customer_relationship(Actor::operator(), customer, reseller)),
        Code::CustomerRelationshipNotActive
    );
    world.given([
        kit.invite_customer(invitation, reseller, Some(provider), customer),
        kit.accept_customer_invitation(invitation, customer),
    ]);
    // Another partner may not end it; the partner itself and the operator may.
    assert_eq!(
        world.rejects(&kit.end_customer_relationship(
            Actor::partner(provider, "admin_agent"),
            customer,
            reseller
        )),
        Code::UnauthorizedActor
    );
    assert_eq!(
        world.accepts(&kit.end_customer_relationship(
            Actor::partner(reseller, "admin_agent"),
            customer,
            reseller
        )),
        ["CustomerRelationshipEnded"]
    );
    assert_eq!(
        world.accepts(&kit.end_customer_relationship(Actor::operator(), customer, provider)),
        ["CustomerRelationshipEnded"]
    );
    assert_eq!(
        world.rejects(&kit.end_customer_relationship(Actor::operator(), customer, provider)),
        Code::CustomerRelationshipNotActive
    );
}

// ---- revenue and direct bill ----------------------------------------------------------------------

#[test]
fn negative_revenue_total_per_month_and_category() {
    let (mut kit, mut world, _, reseller) = europe();
    world.given([
        kit.record_revenue(reseller, "2025-11", RevenueCategory::Cloud, "1000.00"),
        kit.record_revenue(reseller, "2025-11", RevenueCategory::Cloud, "-400.50"),
    ]);
    assert_eq!(
        world.rejects(&kit.record_revenue(reseller, "2025-11", RevenueCategory::Cloud, "-599.51")),
        Code::NegativeRevenueTotal
    );
    assert_eq!(
        world.rejects(&kit.record_revenue(
            reseller,
            "2025-11",
            RevenueCategory::PerpetualSoftware,
            "-0.01"
        )),
        Code::NegativeRevenueTotal
    );
    world.given([kit.record_revenue(reseller, "2025-11", RevenueCategory::Cloud, "-599.50")]);
}

/// Bug: cent totals were summed in `i64` and wrapped. Amounts at the per-command limit
/// (USD 10^15) made the trailing-twelve-month figure negative after a dozen months of ten
/// amounts, and made a month's total wrap after 93 amounts, so that a positive amount was
/// rejected as `negative_revenue_total`.
#[test]
fn revenue_totals_do_not_overflow() {
    let (mut kit, mut world, _, reseller) = europe();
    let largest = "1000000000000000.00"; // USD_AMOUNT_MAX_CENTS, the largest amount accepted
                                         // Ten of the largest amounts in each of the twelve months before January 2026: every month
                                         // total (10^18 cents) fits in i64, their sum (1.2 * 10^19 cents) does not.
    for month in 1..=12 {
        let month = if month == 12 {
            "2025-12".to_string()
        } else {
            format!("2025-{month:02}")
        };
        for _ in 0..10 {
            world.given([kit.record_revenue(reseller, &month, RevenueCategory::Cloud, largest)]);
        }
    }
    let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let ttm = |world: &Harness| {
        ttm_cloud_revenue(world.state.partner(reseller).unwrap(), today).to_string()
    };
    assert_eq!(ttm(&world), "120000000000000000.00");
    // Ninety more in one month: its total passes i64::MAX cents (about 9.22 * 10^18) at the
    // 93rd amount. Every positive amount is accepted.
    for i in 0..90 {
        let outcome =
            world.when(&kit.record_revenue(reseller, "2025-11", RevenueCategory::Cloud, largest));
        assert_eq!(
            outcome.as_ref().map(Vec::len),
            Ok(1),
            "amount {} of 2025-11 was not accepted",
            i + 11
        );
    }
    assert_eq!(ttm(&world), "210000000000000000.00");
    // The total stays exact: a negative adjustment is checked against it, not a wrapped value.
    assert_eq!(
        world.accepts(&kit.record_revenue(
            reseller,
            "2025-11",
            RevenueCategory::Cloud,
            "-1000000000000000.00"
        )),
        ["RevenueRecorded"]
    );
    assert_eq!(ttm(&world), "209000000000000000.00");
    // The direct-bill check sees the same figure: revenue is not what is missing.
    let rejection = world
        .when(&kit.apply_for_direct_bill(reseller))
        .unwrap_err();
    let details = rejection.details.unwrap();
    assert_eq!(details["ttm_cloud_revenue_usd"], "209000000000000000.00");
    assert_eq!(
        details["unmet"],
        serde_json::json!(["support_plan_missing", "infrastructure_not_attested"])
    );
}

#[test]
fn direct_bill_requirements_unmet_lists_every_unmet_requirement() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given([kit.enroll(partner, "DE", "ops@contoso.example")]);
    let rejection = world.when(&kit.apply_for_direct_bill(partner)).unwrap_err();
    assert_eq!(rejection.code, Code::DirectBillRequirementsUnmet);
    let details = rejection.details.unwrap();
    assert_eq!(
        details["unmet"],
        serde_json::json!([
            "partner_not_verified",
            "mpn_not_associated",
            "mpa_not_signed",
            "support_plan_missing",
            "infrastructure_not_attested",
            "revenue_below_threshold"
        ])
    );
    assert_eq!(
        details["recommendations"],
        serde_json::json!(["managed_service_missing"])
    );
}

#[test]
fn direct_bill_revenue_counts_cloud_of_the_twelve_months_before_the_application_month_only() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.onboard(partner, "DE")).given([
        kit.purchase_support_plan(partner),
        kit.attest_infrastructure(partner, true, false),
    ]);
    // USD 299,999.99 of cloud revenue in the trailing twelve months (kit clock is January 2026),
    // plus perpetual software and revenue outside the window, which do not count.
    world.given(kit.trailing_revenue(partner, "24999.99"));
    world.given([kit.record_revenue(partner, "2025-06", RevenueCategory::Cloud, "0.11")]);
    world.given([
        kit.record_revenue(
            partner,
            "2025-03",
            RevenueCategory::PerpetualSoftware,
            "90000.00",
        ),
        kit.record_revenue(partner, "2024-12", RevenueCategory::Cloud, "90000.00"),
        kit.record_revenue(partner, "2026-01", RevenueCategory::Cloud, "90000.00"),
    ]);
    let rejection = world.when(&kit.apply_for_direct_bill(partner)).unwrap_err();
    assert_eq!(
        rejection.details.as_ref().unwrap()["unmet"],
        serde_json::json!(["infrastructure_not_attested", "revenue_below_threshold"])
    );
    assert_eq!(
        rejection.details.as_ref().unwrap()["ttm_cloud_revenue_usd"],
        "299999.99"
    );
    world.given([
        kit.attest_infrastructure(partner, true, true),
        kit.record_revenue(partner, "2025-12", RevenueCategory::Cloud, "0.01"),
    ]);
    let events = world.when(&kit.apply_for_direct_bill(partner)).unwrap();
    let Event::DirectBillApplicationSubmitted(submitted) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(submitted.ttm_cloud_revenue_usd.to_string(), "300000.00");
}

#[test]
fn direct_bill_path_from_application_to_activation_and_back() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.direct_bill_ready(partner, "DE"));
    assert_eq!(
        world.accepts(&kit.apply_for_direct_bill(partner)),
        ["DirectBillApplicationSubmitted"]
    );
    assert_eq!(
        world.rejects(&kit.apply_for_direct_bill(partner)),
        Code::DirectBillApplicationPending
    );
    assert_eq!(
        world.rejects(&kit.accept_direct_bill_terms_as(partner, "global_admin")),
        Code::CreditCheckNotApproved
    );
    world.given([kit.record_credit_check(partner, CreditOutcome::Approved)]);
    assert_eq!(
        world.rejects(&kit.accept_direct_bill_terms_as(partner, "admin_agent")),
        Code::SignerNotGlobalAdmin
    );
    assert_eq!(
        world.accepts(&kit.accept_direct_bill_terms_as(partner, "global_admin")),
        ["DirectBillActivated"]
    );
    assert!(world
        .state
        .partner(partner)
        .unwrap()
        .has_role(ProgramRole::DirectBill));
    assert_eq!(
        world.rejects(&kit.apply_for_direct_bill(partner)),
        Code::AlreadyDirectBill
    );
    assert_eq!(
        world.accepts(&kit.transition_to_indirect_reseller(partner)),
        ["TransitionedToIndirectReseller"]
    );
    assert!(world
        .state
        .partner(partner)
        .unwrap()
        .has_role(ProgramRole::IndirectReseller));
}

#[test]
fn no_direct_bill_application_before_applying_and_after_a_declined_credit_check() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.direct_bill_ready(partner, "DE"));
    assert_eq!(
        world.rejects(&kit.record_credit_check(partner, CreditOutcome::Approved)),
        Code::NoDirectBillApplication
    );
    assert_eq!(
        world.rejects(&kit.accept_direct_bill_terms_as(partner, "global_admin")),
        Code::NoDirectBillApplication
    );
    world.given([
        kit.apply_for_direct_bill(partner),
        kit.record_credit_check(partner, CreditOutcome::Declined),
    ]);
    assert_eq!(
        world.rejects(&kit.accept_direct_bill_terms_as(partner, "global_admin")),
        Code::NoDirectBillApplication
    );
    // A declined application is closed: the partner may apply again.
    assert_eq!(
        world.accepts(&kit.apply_for_direct_bill(partner)),
        ["DirectBillApplicationSubmitted"]
    );
}

#[test]
fn direct_bill_partner_invites_customers_without_a_provider() {
    let mut kit = Kit::new();
    let partner = kit.id();
    let mut world = Harness::new();
    world.given(kit.direct_bill_partner(partner, "JP"));
    let (customer, invitation) = (kit.id(), kit.id());
    world.given([
        kit.register_customer(partner, customer, "JP", None),
        kit.accept_customer_agreement(customer),
    ]);
    assert_eq!(
        world.accepts(&kit.invite_customer(invitation, partner, None, customer)),
        ["CustomerInvited"]
    );
    assert_eq!(
        world.accepts(&kit.accept_customer_invitation(invitation, customer)),
        ["CustomerRelationshipEstablished"]
    );
}

#[test]
fn support_plan_infrastructure_and_managed_services_are_recorded() {
    let (mut kit, mut world, _, reseller) = europe();
    assert_eq!(
        world.accepts(&kit.purchase_support_plan(reseller)),
        ["SupportPlanPurchased"]
    );
    assert_eq!(
        world.accepts(&kit.attest_infrastructure(reseller, true, false)),
        ["InfrastructureAttested"]
    );
    assert_eq!(
        world.accepts(&kit.register_managed_service(reseller)),
        ["ManagedServiceRegistered"]
    );
    let partner = world.state.partner(reseller).unwrap();
    assert_eq!(partner.infrastructure, Some((true, false)));
    assert_eq!(partner.managed_services.len(), 1);
}
