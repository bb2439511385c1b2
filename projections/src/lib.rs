//! Pure folds from csp-ledger events to state: the ledger state the domain decides against,
//! and the eligibility read models computed from it. No I/O: a downstream service can embed
//! this crate and fold `csp.events` itself.

pub mod compact;
pub mod eligibility;
pub mod state;
pub mod views;

pub use eligibility::{DirectBillReadiness, Unmet};
pub use state::{EventMeta, LedgerState};
