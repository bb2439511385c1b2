//! The benchmarks and load generators of csp-ledger, as a library for the `csp-ledger-tools`
//! binary: apply and replay throughput (`bench`), Kafka end to end (`kafka_bench`), and the
//! open-loop HTTP load generator of the query benchmark (`loadgen`).

pub mod bench;
pub mod kafka_bench;
pub mod loadgen;
