//! The writer: the single component that appends to a log directory. It decides batches of
//! submissions against the live state (`ledger`), keeps the idempotency index (`idempotency`),
//! appends what another instance decided (`replicate`), reports what became of each command
//! (`outcome`), and runs group commit with two batches in flight (`pipeline`).

pub mod idempotency;
pub mod ledger;
pub mod outcome;
pub mod pipeline;
pub mod prepare;
pub mod replicate;
pub mod service;

pub use ledger::{
    os_entropy, Clock, Entropy, Ledger, LedgerError, Prepared, SUBMIT_BATCH_COMMANDS_MAX,
};
pub use outcome::{BatchResult, Outcome};
pub use service::{
    Answered, CommitObserver, NoObserver, Pending, ReadModel, Writer, WriterError, WriterHandle,
    WriterOptions, CHECKPOINT_INTERVAL_EVENTS,
};
