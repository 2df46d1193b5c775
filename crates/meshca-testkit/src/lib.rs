//! Helpers shared by meshca's integration tests and benchmarks: start the
//! real server binary, make CSRs and tokens, call the CA over TLS, and check
//! results with the openssl CLI. Missing tools are loud failures.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod csr;
pub mod envoy;
pub mod http;
pub mod openssl;
pub mod server;

pub use client::{connect, connect_plaintext, request, CaClient};
pub use csr::{make_csr, KeyType};
pub use server::{free_port, Server, ServerOptions};
