//! Errors of the shared store. Every variant names what failed and where, so
//! an operator can act on the message alone; none ever carries key material.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time: with etcd, usually a lost majority.
    #[error(
        "store {store}: {op} got no answer within {timeout:?} (with etcd: is a majority of the members up and \
         reachable?)"
    )]
    Timeout { store: String, op: String, timeout: Duration },
    /// The store answered with an error.
    #[error("store {store}: {op} failed: {message}")]
    Backend { store: String, op: String, message: String },
    /// A file of the local store could not be read or written.
    #[error("{path}: {problem}")]
    Io { path: PathBuf, problem: String },
    /// The `--store-key-file` is missing, unreadable or not a 32-byte key.
    #[error("store key file {path}: {problem}")]
    KeyFile { path: PathBuf, problem: String },
    /// A sealed value could not be opened (wrong key, or altered in the store).
    #[error("store value {key}: {problem}")]
    Sealed { key: String, problem: String },
    /// A value in the store is not what meshca wrote there.
    #[error("store value {key}: {problem}")]
    Record { key: String, problem: String },
    /// `--store` or a store key name is malformed.
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;
