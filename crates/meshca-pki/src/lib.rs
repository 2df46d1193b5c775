//! Pure X.509 for meshca: key generation, CA and workload certificate
//! profiles, CSR checks, chain verification, SPIFFE IDs and certificate
//! inspection. Nothing here reads files or the clock: callers pass bytes and
//! the current time in, which keeps every rule testable.
#![forbid(unsafe_code)]

pub mod authority;
pub mod csr;
pub mod inspect;
pub mod keys;
pub mod leaf;
pub mod material;
pub mod name;
pub mod pem;
pub mod spiffe;
pub mod verify;

pub use authority::{AuthorityOptions, NewAuthority};
pub use csr::{CsrError, CsrKey, CsrPolicy, ValidatedCsr};
pub use keys::{KeyError, KeyKind, PrivateKey};
pub use leaf::{LeafProfile, Signer, SignerError};
pub use material::{CaMaterial, MaterialError, MaterialInput};
pub use pem::PemError;
pub use spiffe::{SpiffeError, SpiffeId};

/// A DER certificate owned by us.
pub type CertDer = rustls_pki_types::CertificateDer<'static>;
