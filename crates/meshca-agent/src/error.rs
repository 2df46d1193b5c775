//! Errors of the agent. `Clone` so a failure can be broadcast to every
//! watcher of an identity.

use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("reading the token file {path}: {source}")]
    Token { path: String, source: Arc<std::io::Error> },
    #[error("generating the key or CSR: {0}")]
    Key(String),
    #[error("connecting to the CA: {0}")]
    Connect(String),
    #[error("the CA refused the request: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the CA's response is not usable: {0}")]
    BadResponse(String),
    #[error("the certificate manager has stopped")]
    Stopped,
}

impl AgentError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Key(_) => "key",
            Self::Connect(_) => "connect",
            Self::Refused { .. } => "refused",
            Self::BadResponse(_) => "bad_response",
            Self::Stopped => "stopped",
        }
    }
}
