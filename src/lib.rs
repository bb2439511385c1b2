//! csp-ledger: the service. Commands come in through three intakes (`apply` JSON lines,
//! `POST /v1/commands`, the Kafka commands topic) and all go to one writer; reads are answered
//! from the durable state. The modules follow that data flow:
//!
//! - [`intake`]: bytes in, typed submissions out (strict parsing, body hashes).
//! - [`domain`]: the pure decisions, re-exported from the `csp-ledger-domain` crate.
//! - [`writer`]: the single writer: decide, chain, group commit, idempotency, replication.
//! - [`store`]: sled log, checkpoint, audit walk, replays and answer reads, rebuild.
//! - [`ingest`]: Kafka topics, consumer, publisher, submit, leader lease, hot standby.
//! - [`api`]: the query router, history, OpenAPI document, metrics, the auditor's proofs.
//! - [`notary`]: signed checkpoints of the Merkle tree, the witness, rollback detection.
//! - [`app`]: `serve`: wires the writer, the HTTP server and the Kafka threads together.
//!
//! The binary (`src/bin/csp-ledger.rs`) only parses the command line and calls into these.

pub mod api;
pub mod app;
pub mod auth;
pub use csp_ledger_domain as domain;
pub mod ingest;
pub mod intake;
pub mod notary;
pub mod store;
pub mod writer;
