//! csp-ledger: the service. Domain decisions (`domain`), the sled log (`log`), the ledger that
//! ties them together (`ledger`), the audit walk (`audit`) and the CLI (`cli`).

pub mod domain;
pub mod log;
pub mod audit;
pub mod ledger;
pub mod apply;
pub mod workload;
pub mod bench;
pub mod history;
pub mod testkit;
