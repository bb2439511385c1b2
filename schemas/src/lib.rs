//! The wire contract of csp-ledger: command and event types, value types, the regions table,
//! rejection codes, the JSON Schema files generated from these types, and the wire formats
//! of outcomes, results, event lines and dead letters (`wire`), and the RFC 6962 Merkle tree
//! over the event hashes (`merkle`) and its signed checkpoints (`note`), so that an auditor's Rust code proves what the ledger proves.
//!
//! Everything here is a persistence or wire key: type names, field names and codes are never
//! renamed, only versioned (see `event::SCHEMA_VERSION` and `upcast`).

pub mod command;
pub mod event;
pub mod fencing;
pub mod json_schema;
pub mod merkle;
pub mod note;
pub mod outcome;
pub mod regions;
pub mod upcast;
pub mod values;
pub mod wire;

pub use command::{Actor, ActorKind, Command, CommandEnvelope, MalformedCommand};
pub use event::{Event, EventEnvelope, StreamId};
pub use outcome::{OutcomeKind, Rejection, RejectionCode};
pub use values::{Commitment, Country, Month, UsdAmount, UsdTotal};
pub use wire::{
    DeadLetter, DlqMessage, EventLine, OutcomeLine, PublishedEvent, ResultMessage, TopicMessage,
    WireError,
};
