//! What the agent's tests against a fake CA (the `Signer` seam) share: a
//! self-signed issuer and signing a CSR for a test identity.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, SanType,
};
use std::time::Duration;

/// A self-signed CA to sign with.
pub fn issuer() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// `[leaf, issuer]` for `csr`, carrying `spiffe://cluster.local/ns/test/sa/<name>`, valid
/// from a second ago for `validity`.
pub fn sign(issuer: &CertifiedIssuer<'static, KeyPair>, csr: &str, name: &str, validity: Duration) -> Vec<String> {
    let mut req = CertificateSigningRequestParams::from_pem(csr).unwrap();
    let uri = format!("spiffe://cluster.local/ns/test/sa/{name}");
    req.params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    req.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    req.params.not_before = now - time::Duration::seconds(1);
    req.params.not_after = now + validity;
    vec![req.signed_by(issuer).unwrap().pem(), issuer.pem()]
}
