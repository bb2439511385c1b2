//! The store: everything on disk. The sled log (`log`), the personal-data store in SQLite
//! (`personal`), the projection checkpoint
//! (`checkpoint`), atomic whole-file writes (`files`), the chain walk and verification (`audit`), reads of the log for answers and
//! replays (`read`), and the refold that checks a checkpoint (`rebuild`).

pub mod audit;
pub mod checkpoint;
pub mod error;
pub mod files;
pub mod layout;
pub mod log;
pub mod personal;
pub mod read;
pub mod rebuild;
