//! csp-ledger: the service. Domain decisions (`domain`), the sled log (`log`), the ledger that
//! ties them together (`ledger`), the audit walk (`audit`) and the CLI (`cli`).

pub mod apply;
pub mod audit;
pub mod bench;
pub mod checkpoint;
pub use csp_ledger_domain as domain;
pub mod history;
pub mod kafka;
pub mod kafka_bench;
pub mod lease;
pub mod ledger;
pub mod loadgen;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod rebuild;
pub mod server;
pub mod standby;
pub mod testkit;
pub mod workload;
