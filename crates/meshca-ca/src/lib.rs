//! The meshca CA server: CA material sources, the active signer behind an
//! atomic swap, issuance policy, caller authentication, and the gRPC and
//! HTTP endpoints.
#![forbid(unsafe_code)]

pub mod active;
pub mod audit;
pub mod authn;
pub mod clock;
pub mod config;
pub mod fsutil;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod service;
pub mod source;
pub mod tls;
pub mod tokens;
pub mod vault;
