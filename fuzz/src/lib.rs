//! Entry points of the fuzz targets: each takes arbitrary bytes, feeds them to
//! one parser of outside input the way meshca does, and checks properties of
//! the outcome. A panic (or, under libFuzzer, an allocation above
//! `-malloc_limit_mb`) is a finding. The replay tests in the owning crates
//! (`crates/*/tests/fuzz_corpus.rs`) run the same calls over `corpus/`.
#![forbid(unsafe_code)]

pub mod config;

use meshca_jwt::{KeySet, Validation};
use meshca_pki::csr::{self, CsrPolicy};
use meshca_pki::material::Part;
use meshca_pki::{CaMaterial, MaterialInput};
use prost::Message;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The identity CSRs are checked against (the corpus CSRs ask for it).
pub const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/httpbin";
/// Issuer and audience of the corpus tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc";
pub const AUDIENCE: &str = "istio-ca";
/// The JWKS the `jwt` target verifies against (public keys only).
pub const JWKS: &str = include_str!("../keys/jwks.json");
/// Two valid tokens signed by the keys of [`JWKS`], verified against each fuzzed key set.
pub const TOKENS: &str = include_str!("../keys/tokens.json");

/// A fixed "now" (2027-01-15), inside the validity of the corpus certificates and tokens.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// PEM certificate bundles (trust bundles, chains, certificate files), then
/// each certificate's inspection as the agent and `meshca doctor` do it.
pub fn pem_certs(data: &[u8]) {
    let Ok(certs) = meshca_pki::pem::parse_certs(data) else { return };
    assert!(!certs.is_empty(), "parse_certs returned Ok with no certificate");
    let again = meshca_pki::pem::parse_certs(meshca_pki::pem::certs_to_pem(&certs).as_bytes())
        .expect("re-encoded certificates parse");
    assert_eq!(certs, again, "PEM round trip changed the certificates");
    for der in &certs {
        let _ = meshca_pki::inspect::cert_info(der);
        let _ = meshca_pki::inspect::istiod_line(der);
    }
}

fn check_csr(result: Result<meshca_pki::ValidatedCsr, meshca_pki::CsrError>) {
    if let Ok(v) = result {
        assert!(!v.spki_der.is_empty());
        assert!(v.uri_sans.is_empty() || v.uri_sans == [IDENTITY], "accepted a CSR for {:?}", v.uri_sans);
        assert!(meshca_pki::inspect::describe_spki(&v.spki_der).is_some());
    }
}

/// A CSR as the CA receives it in `IstioCertificateRequest.csr` (PEM text).
pub fn csr_pem(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_csr(csr::validate(&text, IDENTITY, &CsrPolicy::default()));
}

/// A DER CSR.
pub fn csr_der(data: &[u8]) {
    check_csr(csr::validate_der(data, IDENTITY, &CsrPolicy::default()));
}

/// A plug-in CA set: the input is the four files separated by NUL bytes
/// (signing certificate, key, chain — empty for none — and root bundle).
pub fn ca_material(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (cert, key, chain, roots) = (next(), next(), next(), next());
    let input = MaterialInput {
        cert: Part { name: "ca-cert.pem", pem: cert },
        key: Part { name: "ca-key.pem", pem: key },
        chain: (!chain.is_empty()).then_some(Part { name: "cert-chain.pem", pem: chain }),
        roots: Part { name: "root-cert.pem", pem: roots },
    };
    match CaMaterial::from_input(&input, now()) {
        Ok(m) => {
            assert!(!m.roots().is_empty(), "an accepted CA set has no root");
            m.probe(now()).expect("an accepted CA set signs a verifiable leaf");
        }
        Err(e) => assert!(!e.file.is_empty() && !e.problem.is_empty()),
    }
}

fn keyset() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| KeySet::from_jwks_json(JWKS.as_bytes()).expect("keys/jwks.json is a valid JWKS"))
}

fn validation() -> Validation {
    Validation::new(ISSUER, AUDIENCE).with_now(now())
}

fn check_verified(result: Result<meshca_jwt::Claims, meshca_jwt::JwtError>) {
    if let Ok(claims) = result {
        assert_eq!(claims.issuer(), Some(ISSUER));
        assert!(claims.audiences().contains(&AUDIENCE));
    }
}

/// A bearer token: `peek_issuer` (issuer routing before verification),
/// `decode_header`, and a full `verify` against the fixed key set.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = meshca_jwt::peek_issuer(token);
    let _ = meshca_jwt::decode_header(token);
    check_verified(meshca_jwt::verify(token, keyset(), &validation()));
}

/// A JWKS document (file, URL or OIDC discovery), both ways it is parsed,
/// then the corpus tokens verified against the resulting key set.
pub fn jwks(data: &[u8]) {
    if let Ok(doc) = serde_json::from_slice::<meshca_jwt::Jwks>(data) {
        for key in &doc.keys {
            let _ = key.thumbprint();
        }
        let _ = KeySet::from_jwks(&doc);
    }
    let Ok(set) = KeySet::from_jwks_json(data) else { return };
    assert!(set.len() >= set.kids().len());
    for token in tokens() {
        check_verified(meshca_jwt::verify(token, &set, &validation()));
    }
}

fn tokens() -> &'static [String] {
    static TOKS: OnceLock<Vec<String>> = OnceLock::new();
    TOKS.get_or_init(|| TOKENS.split('"').filter(|s| s.split('.').count() == 3).map(str::to_string).collect())
}

/// `CreateCertificate`'s request message as tonic decodes it, then the
/// `ImpersonatedIdentity` lookup the CA does on its `Struct` metadata.
pub fn grpc_request(data: &[u8]) {
    let Ok(req) = meshca_proto::IstioCertificateRequest::decode(data) else { return };
    if let Some(v) = req.metadata.as_ref().and_then(|m| m.fields.get(meshca_proto::IMPERSONATED_IDENTITY_KEY)) {
        let _ = matches!(&v.kind, Some(meshca_proto::prost_types::value::Kind::StringValue(s)) if !s.is_empty());
    }
    let _ = csr::validate(&req.csr, IDENTITY, &CsrPolicy::default());
    round_trip(&req);
}

/// The agent's report on the CA change stream.
pub fn agent_report(data: &[u8]) {
    let Ok(report) = meshca_proto::AgentReport::decode(data) else { return };
    round_trip(&report);
}

/// An SDS `DiscoveryRequest` as the agent's SDS server decodes it from Envoy.
pub fn sds_request(data: &[u8]) {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let Ok(req) = DiscoveryRequest::decode(data) else { return };
    let names: std::collections::BTreeSet<&str> = req.resource_names.iter().map(String::as_str).collect();
    assert!(names.len() <= req.resource_names.len());
    round_trip(&req);
}

/// Encoding a decoded message and decoding it again is stable.
fn round_trip<M: Message + Default>(msg: &M) {
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes.len(), msg.encoded_len());
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes, "protobuf round trip is not stable");
}

/// The TOML configuration file of `meshca serve`; see [`config`].
pub fn serve_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = config::parse(text);
}
