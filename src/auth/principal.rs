//! Principals and their grants (SPEC.md section 10): who a caller is, which actors its
//! commands may claim, and what it may read. Pure data: loading and authenticating are in
//! [`super::directory`] and [`super::Authenticator`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use csp_ledger_schemas::command::{Actor, ActorKind};
use uuid::Uuid;

/// Longest principal id accepted (the rule is the event envelope's, for `submitted_by`).
pub const PRINCIPAL_ID_CHARS_MAX: usize = csp_ledger_schemas::event::PRINCIPAL_ID_CHARS_MAX;

/// An opaque principal id: letters, digits, `.`, `_` and `-`, 1 to 128 characters. Never an
/// e-mail address, so that `submitted_by` in the (unerasable) log is never personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(Arc<str>);

/// Ids the ledger gives its own principals (the CLI, the embedded administrator,
/// `--insecure-no-auth`, unauthenticated Kafka messages): a principals file or a token may not
/// take them, so that `submitted_by` never misattributes an event to one of them.
pub const RESERVED_IDS: &[&str] = &["local", "admin", "anonymous", "unauthenticated"];

impl PrincipalId {
    /// Parses the id of a principal from outside (a principals file, a token's `sub`): as
    /// [`FromStr`], and not one of [`RESERVED_IDS`].
    pub fn parse_external(s: &str) -> Result<PrincipalId, String> {
        if RESERVED_IDS.contains(&s) {
            return Err(format!(
                "principal id {s:?} is reserved for the ledger's own principals ({})",
                RESERVED_IDS.join(", ")
            ));
        }
        s.parse()
    }

    /// The id of the CLI's local administrator.
    pub fn local() -> PrincipalId {
        PrincipalId::builtin("local")
    }

    /// One of the ledger's own ids ([`RESERVED_IDS`]), valid by construction.
    pub(crate) fn builtin(id: &'static str) -> PrincipalId {
        debug_assert!(RESERVED_IDS.contains(&id) && id.parse::<PrincipalId>().is_ok());
        PrincipalId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PrincipalId {
    type Err = String;
    fn from_str(s: &str) -> Result<PrincipalId, String> {
        // The same rule as a stored envelope's `submitted_by`: an id accepted here is one
        // the log can record.
        csp_ledger_schemas::event::check_principal_id(s)?;
        Ok(PrincipalId(Arc::from(s)))
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One actor claim a principal may make (`act_as`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorGrant {
    /// `"operator"`.
    Operator,
    /// `"partner:*"`.
    AnyPartner,
    /// `"partner:<uuid>"`.
    Partner(Uuid),
    /// `"customer:*"`.
    AnyCustomer,
    /// `"customer:<uuid>"`.
    Customer(Uuid),
}

impl FromStr for ActorGrant {
    type Err = String;
    fn from_str(s: &str) -> Result<ActorGrant, String> {
        let bad = || {
            format!(
                "act_as entry {s:?} is not \"operator\", \"partner:*\", \"partner:<uuid>\", \"customer:*\" or \"customer:<uuid>\""
            )
        };
        if s == "operator" {
            return Ok(ActorGrant::Operator);
        }
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        let id = match id {
            "*" => None,
            id => Some(Uuid::parse_str(id).map_err(|_| bad())?),
        };
        match (kind, id) {
            ("partner", None) => Ok(ActorGrant::AnyPartner),
            ("partner", Some(id)) => Ok(ActorGrant::Partner(id)),
            ("customer", None) => Ok(ActorGrant::AnyCustomer),
            ("customer", Some(id)) => Ok(ActorGrant::Customer(id)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ActorGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorGrant::Operator => f.write_str("operator"),
            ActorGrant::AnyPartner => f.write_str("partner:*"),
            ActorGrant::Partner(id) => write!(f, "partner:{id}"),
            ActorGrant::AnyCustomer => f.write_str("customer:*"),
            ActorGrant::Customer(id) => write!(f, "customer:{id}"),
        }
    }
}

/// What a principal may read (`read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadGrants {
    /// `"models"`: read models, and events with commitments only.
    pub models: bool,
    /// `"personal"`: clear personal data in events and outcomes.
    pub personal: bool,
}

impl ReadGrants {
    /// Parses the `read` strings.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<ReadGrants, String> {
        let mut grants = ReadGrants::default();
        for entry in entries {
            match entry {
                "models" => grants.models = true,
                "personal" => grants.personal = true,
                other => {
                    return Err(format!(
                        "read entry {other:?} is not \"models\" or \"personal\""
                    ))
                }
            }
        }
        Ok(grants)
    }
}

/// An authenticated caller and its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: PrincipalId,
    pub act_as: Vec<ActorGrant>,
    pub read: ReadGrants,
}

impl Principal {
    /// The CLI's local administrator (`submitted_by: "local"`): whoever can open the data
    /// directory can read and write it anyway.
    pub fn local() -> Principal {
        Principal::administrator(PrincipalId::local())
    }

    /// A principal that may claim every actor and read everything.
    pub fn administrator(id: PrincipalId) -> Principal {
        Principal {
            id,
            act_as: vec![
                ActorGrant::Operator,
                ActorGrant::AnyPartner,
                ActorGrant::AnyCustomer,
            ],
            read: ReadGrants {
                models: true,
                personal: true,
            },
        }
    }

    /// Whether this principal may issue a command on behalf of `actor`. A partner or customer
    /// actor without an id matches only a wildcard grant (the business rules then refuse it).
    pub fn may_act_as(&self, actor: &Actor) -> bool {
        self.act_as.iter().any(|grant| match (grant, actor.kind) {
            (ActorGrant::Operator, ActorKind::Operator) => true,
            (ActorGrant::AnyPartner, ActorKind::Partner) => true,
            (ActorGrant::Partner(id), ActorKind::Partner) => actor.id == Some(*id),
            (ActorGrant::AnyCustomer, ActorKind::Customer) => true,
            (ActorGrant::Customer(id), ActorKind::Customer) => actor.id == Some(*id),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_opaque() {
        for good in ["partner-portal", "audit.team_2", "local", "A"] {
            assert!(good.parse::<PrincipalId>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "ops@example.com",
            "two words",
            "slash/y",
            "ümlaut",
            &"x".repeat(129),
        ] {
            assert!(bad.parse::<PrincipalId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_round_trip_and_refuse_unknown_forms() {
        let id = Uuid::from_u128(7);
        for grant in [
            ActorGrant::Operator,
            ActorGrant::AnyPartner,
            ActorGrant::Partner(id),
            ActorGrant::AnyCustomer,
            ActorGrant::Customer(id),
        ] {
            assert_eq!(grant.to_string().parse::<ActorGrant>(), Ok(grant));
        }
        for bad in [
            "operator:*",
            "partner",
            "partner:",
            "partner:12",
            "admin",
            "customer:**",
        ] {
            assert!(bad.parse::<ActorGrant>().is_err(), "{bad}");
        }
        assert!(ReadGrants::parse(["models", "everything"]).is_err());
    }

    #[test]
    fn a_specific_grant_covers_only_its_own_id() {
        let own = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let principal = Principal {
            id: "portal".parse().unwrap(),
            act_as: vec![ActorGrant::Partner(own), ActorGrant::AnyCustomer],
            read: ReadGrants::default(),
        };
        assert!(principal.may_act_as(&Actor::partner(own, "admin_agent")));
        assert!(!principal.may_act_as(&Actor::partner(other, "admin_agent")));
        assert!(principal.may_act_as(&Actor::customer(other)));
        assert!(!principal.may_act_as(&Actor::operator()));
        let anonymous_partner = Actor {
            id: None,
            kind: ActorKind::Partner,
            role: None,
        };
        assert!(!principal.may_act_as(&anonymous_partner));
    }
}
