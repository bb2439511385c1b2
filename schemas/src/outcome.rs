//! Rejection codes (SPEC.md section 4) and the outcome kinds of a command.

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! codes {
    ($($variant:ident => $code:literal),* $(,)?) => {
        /// Every rejection code of the contract. The string is a wire key: never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum RejectionCode { $(#[serde(rename = $code)] $variant),* }

        impl RejectionCode {
            /// Every code.
            pub const ALL: &'static [RejectionCode] = &[$(RejectionCode::$variant),*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $(RejectionCode::$variant => $code),* }
            }
        }
    };
}

codes!(
    MalformedCommand => "malformed_command",
    CommandIdConflict => "command_id_conflict",
    ActorNotPermitted => "actor_not_permitted",
    UnauthorizedActor => "unauthorized_actor",
    PartnerAlreadyEnrolled => "partner_already_enrolled",
    InvalidCountry => "invalid_country",
    FreeEmailDomain => "free_email_domain",
    TenantInUse => "tenant_in_use",
    PartnerNotFound => "partner_not_found",
    VerificationAlreadyDecided => "verification_already_decided",
    MpnCountryMismatch => "mpn_country_mismatch",
    MpnIdInUse => "mpn_id_in_use",
    SignerNotGlobalAdmin => "signer_not_global_admin",
    PartnerNotVerified => "partner_not_verified",
    MpnNotAssociated => "mpn_not_associated",
    MpaAlreadySigned => "mpa_already_signed",
    AlreadyIndirectProvider => "already_indirect_provider",
    CannotInviteSelf => "cannot_invite_self",
    NotAnIndirectProvider => "not_an_indirect_provider",
    NotAnIndirectReseller => "not_an_indirect_reseller",
    RegionMismatch => "region_mismatch",
    RelationshipAlreadyActive => "relationship_already_active",
    InvitationAlreadyPending => "invitation_already_pending",
    InvitationIdInUse => "invitation_id_in_use",
    InvitationNotFound => "invitation_not_found",
    InvitationAddressedToOtherPartner => "invitation_addressed_to_other_partner",
    InvitationNotPending => "invitation_not_pending",
    RelationshipNotActive => "relationship_not_active",
    AdminAccessAlreadyRemoved => "admin_access_already_removed",
    CustomerAlreadyRegistered => "customer_already_registered",
    CspTenantCannotBeCustomer => "csp_tenant_cannot_be_customer",
    CustomerNotFound => "customer_not_found",
    CustomerAgreementAlreadyAccepted => "customer_agreement_already_accepted",
    SelfSaleProhibited => "self_sale_prohibited",
    ResellerCannotBuyFromOwnProvider => "reseller_cannot_buy_from_own_provider",
    NotADirectBillPartner => "not_a_direct_bill_partner",
    CustomerRelationshipAlreadyActive => "customer_relationship_already_active",
    CustomerRelationshipNotActive => "customer_relationship_not_active",
    NegativeRevenueTotal => "negative_revenue_total",
    AlreadyDirectBill => "already_direct_bill",
    DirectBillApplicationPending => "direct_bill_application_pending",
    DirectBillRequirementsUnmet => "direct_bill_requirements_unmet",
    NoDirectBillApplication => "no_direct_bill_application",
    CreditCheckNotApproved => "credit_check_not_approved",
);

impl std::fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Decided and appended; the outcome lists the events.
    Accepted,
    /// A business rule or the envelope failed; the outcome carries the code.
    Rejected,
    /// The `command_id` was seen before with the same body; nothing new was recorded.
    Duplicate,
}

impl OutcomeKind {
    /// The wire string (`accepted`, `rejected`, `duplicate`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Accepted => "accepted",
            OutcomeKind::Rejected => "rejected",
            OutcomeKind::Duplicate => "duplicate",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A broken business rule: the code of SPEC.md, a message for people, optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
    pub details: Option<Value>,
}

impl Rejection {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn code(&self) -> RejectionCode {
        self.code
    }
}
