//! Test and tool support for csp-ledger, never a dependency of the service library: command
//! builders and the given/when/then harness (`kit`), the deterministic realistic workload
//! generator (`workload`), and the one HTTP/1.1 client of the tests and tools (`http`).

pub mod http;
pub mod kit;
pub mod workload;

pub use kit::{Harness, Kit};
