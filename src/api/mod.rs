//! The read side and the HTTP transport: the query router shared by HTTP and the CLI
//! (`query`), event history (`history`), the axum server's routes (`http`), the OpenAPI
//! document (`openapi`), the auditor's checkpoints and proofs (`proof`), the Prometheus metrics (`metrics`), HTTPS (`tls`) and the pool of
//! expensive reads (`expensive`).

pub mod expensive;
pub mod history;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod proof;
pub mod query;
pub mod serve;
pub mod tls;
