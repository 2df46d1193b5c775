//! Who is calling: Kubernetes-style service-account JWTs from configured
//! issuers (JWKS from a file, a URL or OIDC discovery), or a client
//! certificate issued earlier by this mesh. Then, optionally, impersonation
//! by a trusted node account.

use crate::clock::SharedClock;
use arc_swap::ArcSwap;
use meshca_jwt::{JwtError, KeySet, Validation};
use meshca_pki::verify::Usage;
use meshca_pki::{CaMaterial, CertDer, SpiffeId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least time between two JWKS fetches for one issuer when tokens with
/// unknown key IDs arrive (a flood of bad tokens must not become a flood of fetches).
pub const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

pub use crate::jwks::JwksSource;
use crate::sanitize;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity the credential proves.
    pub identity: SpiffeId,
    /// "jwt:<issuer>" or "mtls".
    pub credential: String,
}

/// A caller whose bearer token was verified before the request body was
/// read (by the gRPC guard); the service uses it instead of verifying again.
#[derive(Debug, Clone)]
pub struct Verified(pub Caller);

/// Why authentication failed; logged and audited, never sent to the client.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credential: neither a bearer token nor a client certificate was presented")]
    NoCredential,
    #[error("bearer token: {0}")]
    Token(String),
    #[error("token issuer \"{0}\" is not trusted")]
    UnknownIssuer(String),
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("{caller} may not impersonate {target}: not a trusted node account")]
    Impersonation { caller: String, target: String },
    #[error("impersonated identity \"{0}\" is invalid")]
    BadImpersonation(String),
}

struct IssuerKeys {
    issuer: String,
    source: JwksSource,
    keys: ArcSwap<KeySet>,
    last_fetch: Mutex<Option<Instant>>,
}

pub struct Authenticator {
    issuers: HashMap<String, Arc<IssuerKeys>>,
    audience: String,
    trust_domain: String,
    trusted_nodes: HashSet<String>,
    clock: SharedClock,
    http: reqwest::Client,
    allow_http: bool,
}

impl Authenticator {
    /// Build the authenticator and fetch every issuer's keys once. A file that
    /// cannot be read is fatal, and so is a plain-HTTP source without
    /// `allow_http`; a URL that does not answer is retried on demand.
    pub async fn new(
        issuers: Vec<(String, JwksSource)>,
        audience: String,
        trust_domain: String,
        trusted_nodes: HashSet<String>,
        clock: SharedClock,
        allow_http: bool,
    ) -> anyhow::Result<Self> {
        let http = crate::jwks::client()?;
        let mut map = HashMap::new();
        for (issuer, source) in issuers {
            crate::jwks::check_source(&issuer, &source, allow_http).map_err(|e| anyhow::anyhow!("{e}"))?;
            let keys = match crate::jwks::fetch_keys(&http, &issuer, &source, allow_http).await {
                Ok(k) => k,
                Err(e) if matches!(source, JwksSource::File(_)) => {
                    anyhow::bail!("JWKS for issuer {issuer}: {e}")
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer, error = %e, "JWKS not available yet; will retry when a token arrives");
                    KeySet::default()
                }
            };
            tracing::info!(issuer = %issuer, keys = keys.len(), "trusting JWT issuer");
            map.insert(
                issuer.clone(),
                Arc::new(IssuerKeys {
                    issuer,
                    source,
                    keys: ArcSwap::from_pointee(keys),
                    last_fetch: Mutex::new(Some(Instant::now())),
                }),
            );
        }
        Ok(Self { issuers: map, audience, trust_domain, trusted_nodes, clock, http, allow_http })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Refetch an issuer's keys unless that happened very recently.
    async fn refresh(&self, ik: &IssuerKeys) -> bool {
        {
            let mut last = ik.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match crate::jwks::fetch_keys(&self.http, &ik.issuer, &ik.source, self.allow_http).await {
            Ok(k) => {
                tracing::info!(issuer = %ik.issuer, keys = k.len(), "refreshed JWKS");
                ik.keys.store(Arc::new(k));
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %ik.issuer, error = %e, "JWKS refresh failed");
                false
            }
        }
    }

    /// A cheap check made before a request body is read: the token parses
    /// and names a trusted issuer (its signature is checked later).
    pub fn precheck_token(&self, token: &str) -> Result<(), AuthError> {
        let issuer = meshca_jwt::peek_issuer(token).map_err(|e| AuthError::Token(e.to_string()))?;
        if self.issuers.contains_key(&issuer) {
            Ok(())
        } else {
            Err(AuthError::UnknownIssuer(sanitize::short(&issuer)))
        }
    }

    /// Authenticate a bearer token.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, AuthError> {
        let issuer = meshca_jwt::peek_issuer(token).map_err(|e| AuthError::Token(e.to_string()))?;
        let ik = self.issuers.get(&issuer).ok_or_else(|| AuthError::UnknownIssuer(sanitize::short(&issuer)))?;
        let validation = Validation::new(issuer.clone(), self.audience.clone()).with_now(self.clock.now());
        let mut result = meshca_jwt::verify(token, &ik.keys.load(), &validation);
        if matches!(result, Err(JwtError::UnknownKid(_))) && self.refresh(ik).await {
            result = meshca_jwt::verify(token, &ik.keys.load(), &validation);
        }
        let claims = result.map_err(|e| AuthError::Token(e.to_string()))?;
        let (ns, sa) = claims
            .kubernetes_service_account()
            .ok_or_else(|| AuthError::Token("no Kubernetes service account in the token claims".into()))?;
        let identity = SpiffeId::new(&self.trust_domain, &ns, &sa).map_err(|e| AuthError::Token(e.to_string()))?;
        Ok(Caller { identity, credential: format!("jwt:{issuer}") })
    }

    /// Authenticate a client certificate chain against the current trust bundle.
    pub fn authenticate_cert(&self, chain: &[CertDer], material: &CaMaterial) -> Result<Caller, AuthError> {
        let (leaf, rest) = chain.split_first().ok_or(AuthError::NoCredential)?;
        material
            .verify(leaf, rest, self.clock.now(), Usage::Client)
            .map_err(|e| AuthError::Certificate(sanitize::clean(&e.to_string(), sanitize::LONG)))?;
        let info = meshca_pki::inspect::cert_info(leaf).map_err(|e| AuthError::Certificate(e.to_string()))?;
        let uri = info.spiffe_id.ok_or_else(|| AuthError::Certificate("no SPIFFE ID in the certificate".into()))?;
        let identity: SpiffeId =
            uri.parse().map_err(|e: meshca_pki::SpiffeError| AuthError::Certificate(e.to_string()))?;
        if identity.trust_domain() != self.trust_domain {
            return Err(AuthError::Certificate(format!("{identity} is not in trust domain {}", self.trust_domain)));
        }
        Ok(Caller { identity, credential: "mtls".into() })
    }

    /// First match wins: the bearer token if one is sent, else the client certificate.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        peer_chain: Option<&[CertDer]>,
        material: &CaMaterial,
    ) -> Result<Caller, AuthError> {
        let mut errors = Vec::new();
        if let Some(token) = bearer {
            match self.authenticate_token(token).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(e),
            }
        }
        if let Some(chain) = peer_chain.filter(|c| !c.is_empty()) {
            match self.authenticate_cert(chain, material) {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.into_iter().next().unwrap_or(AuthError::NoCredential))
    }

    /// Apply `ImpersonatedIdentity`: only trusted node accounts may ask for
    /// another workload's identity.
    pub fn impersonate(&self, caller: &Caller, target: &str) -> Result<SpiffeId, AuthError> {
        if !self.trusted_nodes.contains(&caller.identity.short()) {
            return Err(AuthError::Impersonation {
                caller: caller.identity.to_string(),
                target: sanitize::short(target),
            });
        }
        let id: SpiffeId = target.parse().map_err(|_| AuthError::BadImpersonation(sanitize::short(target)))?;
        if id.trust_domain() != self.trust_domain {
            return Err(AuthError::BadImpersonation(sanitize::short(target)));
        }
        Ok(id)
    }
}
