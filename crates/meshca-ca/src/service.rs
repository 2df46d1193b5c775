//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! Status codes follow Istio: authentication failure -> Unauthenticated with
//! the fixed message "request authenticate failure" (details only in the
//! server log and audit line); bad CSR or TTL -> InvalidArgument; signing
//! failure -> Internal.

use crate::active::ActiveCa;
use crate::audit::{AuditLog, Record};
use crate::authn::{AuthError, Authenticator, Caller};
use crate::clock::SharedClock;
use crate::metrics::{Metrics, Refusal};
use meshca_pki::csr::{self, CsrPolicy};
use meshca_pki::material::fmt_time;
use meshca_pki::{CertDer, LeafProfile};
use meshca_proto::{
    IstioCertificateRequest, IstioCertificateResponse, IstioCertificateService, IMPERSONATED_IDENTITY_KEY,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status};

/// Issuance rules.
#[derive(Debug, Clone)]
pub struct IssuancePolicy {
    /// Used when the request asks for 0 or less.
    pub default_ttl: Duration,
    /// Requests above this are refused (InvalidArgument), as Istio does.
    pub max_ttl: Duration,
    pub csr: CsrPolicy,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            csr: CsrPolicy::default(),
        }
    }
}

impl IssuancePolicy {
    /// The lifetime for a request's `validity_duration` (seconds).
    pub fn ttl_for(&self, requested: i64) -> Result<Duration, String> {
        if requested <= 0 {
            return Ok(self.default_ttl);
        }
        let d = Duration::from_secs(requested as u64);
        if d > self.max_ttl {
            return Err(format!(
                "requested TTL {}s is greater than the max allowed TTL {}s",
                requested,
                self.max_ttl.as_secs()
            ));
        }
        Ok(d)
    }
}

pub struct CaService {
    pub active: Arc<ActiveCa>,
    pub auth: Arc<Authenticator>,
    pub policy: IssuancePolicy,
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub clock: SharedClock,
}

pub const AUTH_FAILURE_MESSAGE: &str = "request authenticate failure";

fn peer(req: &Request<IstioCertificateRequest>) -> String {
    req.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

impl CaService {
    fn refuse(
        &self,
        caller: String,
        identity: Option<String>,
        why: Refusal,
        code: Code,
        reason: String,
        message: String,
    ) -> Status {
        self.metrics.refused(why);
        tracing::info!(caller = %caller, identity = identity.as_deref().unwrap_or("-"), reason = %reason, "certificate request refused");
        self.audit.record(Record {
            time: fmt_time(self.clock.now()),
            caller,
            identity,
            serial: None,
            not_after: None,
            outcome: "refused",
            reason: Some(reason),
            code: Some(format!("{code:?}")),
        });
        Status::new(code, message)
    }

    async fn authenticate(
        &self,
        req: &Request<IstioCertificateRequest>,
        material: &meshca_pki::CaMaterial,
    ) -> Result<Caller, AuthError> {
        authenticate(&self.auth, req, material).await
    }
}

/// The `authorization: Bearer ...` token of a request, if any.
pub fn bearer<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Authenticate any gRPC request of the CA port, as `CreateCertificate` does.
pub async fn authenticate<T>(
    auth: &Authenticator,
    req: &Request<T>,
    material: &meshca_pki::CaMaterial,
) -> Result<Caller, AuthError> {
    if let Some(crate::authn::Verified(caller)) = req.extensions().get::<crate::authn::Verified>() {
        return Ok(caller.clone());
    }
    let certs: Option<Arc<Vec<CertDer>>> = req.peer_certs();
    auth.authenticate(bearer(req), certs.as_deref().map(|v| v.as_slice()), material).await
}

/// The `ImpersonatedIdentity` metadata value, if any; a non-string value is an error.
fn impersonated(req: &IstioCertificateRequest) -> Result<Option<String>, String> {
    use prost_types::value::Kind;
    let Some(v) = req.metadata.as_ref().and_then(|m| m.fields.get(IMPERSONATED_IDENTITY_KEY)) else {
        return Ok(None);
    };
    match &v.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Kind::StringValue(_)) | Some(Kind::NullValue(_)) | None => Ok(None),
        Some(_) => Err(format!("metadata {IMPERSONATED_IDENTITY_KEY} must be a string")),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let started = Instant::now();
        self.metrics.csr_count.fetch_add(1, Ordering::Relaxed);
        let snapshot = self.active.load();
        let material = &snapshot.material;
        let peer = peer(&request);

        let caller = match self.authenticate(&request, material).await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                return Err(self.refuse(
                    peer,
                    None,
                    Refusal::Authentication,
                    Code::Unauthenticated,
                    e.to_string(),
                    AUTH_FAILURE_MESSAGE.into(),
                ));
            }
        };
        let who = format!("{peer} {} {}", caller.credential, caller.identity);
        let req = request.into_inner();
        let identity = match impersonated(&req) {
            Err(e) => return Err(self.refuse(who, None, Refusal::Csr, Code::InvalidArgument, e.clone(), e)),
            Ok(None) => caller.identity.clone(),
            Ok(Some(target)) => match self.auth.impersonate(&caller, &target) {
                Ok(id) => id,
                Err(e) => {
                    self.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(self.refuse(
                        who,
                        Some(target),
                        Refusal::Authentication,
                        Code::Unauthenticated,
                        e.to_string(),
                        AUTH_FAILURE_MESSAGE.into(),
                    ));
                }
            },
        };
        let id = identity.to_string();
        let ttl = match self.policy.ttl_for(req.validity_duration) {
            Ok(t) => t,
            Err(e) => return Err(self.refuse(who, Some(id), Refusal::Ttl, Code::InvalidArgument, e.clone(), e)),
        };
        let csr = match csr::validate(&req.csr, &id, &self.policy.csr) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("invalid CSR: {e}");
                return Err(self.refuse(who, Some(id), Refusal::Csr, Code::InvalidArgument, msg.clone(), msg));
            }
        };
        let now = self.clock.now();
        self.active.staging.note_issued(ttl);
        let profile = LeafProfile { uris: vec![id.clone()], dns_names: Vec::new(), ttl };
        let issued = match material.signer().issue(&csr.spki_der, &profile, now) {
            Ok(l) => l,
            Err(e) => {
                self.metrics.sign_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "signing failed");
                return Err(self.refuse(
                    who,
                    Some(id),
                    Refusal::Signing,
                    Code::Internal,
                    e.to_string(),
                    format!("failed to sign the certificate: {e}"),
                ));
            }
        };
        let chain = material.response_chain(&issued.cert);
        self.metrics.issued.fetch_add(1, Ordering::Relaxed);
        self.metrics.observe_issuance(started.elapsed());
        self.audit.record(Record {
            time: fmt_time(now),
            caller: who,
            identity: Some(id),
            serial: Some(issued.serial_hex),
            not_after: Some(fmt_time(issued.not_after)),
            outcome: "issued",
            reason: None,
            code: None,
        });
        Ok(Response::new(IstioCertificateResponse { cert_chain: chain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules_follow_istio() {
        let p = IssuancePolicy::default();
        assert_eq!(p.ttl_for(0), Ok(Duration::from_secs(86400)));
        assert_eq!(p.ttl_for(-5), Ok(Duration::from_secs(86400)));
        assert_eq!(p.ttl_for(3600), Ok(Duration::from_secs(3600)));
        assert_eq!(p.ttl_for(90 * 86400), Ok(Duration::from_secs(90 * 86400)));
        let err = p.ttl_for(90 * 86400 + 1).unwrap_err();
        assert!(err.contains("greater than the max allowed TTL"), "{err}");
        assert!(p.ttl_for(i64::MAX).is_err());
    }
}
