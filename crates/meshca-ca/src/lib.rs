//! The meshca CA server: CA material sources, the active signer behind an
//! atomic swap, issuance policy, caller authentication, and the gRPC and
//! HTTP endpoints.
#![forbid(unsafe_code)]

pub mod active;
pub mod agents;
pub mod audit;
pub mod authn;
pub mod clock;
pub mod config;
/// Safe file writes, re-exported from `meshca-files` (shared with the agent).
pub use meshca_files as fsutil;
pub mod events;
pub mod grpc_guard;
pub mod ha;
pub mod http;
pub mod http_serve;
pub mod jwks;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod peer_slots;
pub mod policy;
pub mod reload;
pub mod rotation;
pub mod sanitize;
pub mod server;
pub mod service;
pub mod source;
pub mod swap;
pub mod tls;
pub mod tokens;
pub mod vault;
pub mod watch;
