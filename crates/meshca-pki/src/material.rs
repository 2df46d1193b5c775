//! CA material: a signing certificate and key, the chain above it and the
//! root bundle, validated as one set before anything signs with it.
//!
//! The checks, in order: every part parses; the key matches the signing
//! certificate; the certificate is a CA allowed to sign certificates and is
//! inside its validity period; each chain link is signed by the next; the
//! top of the chain is issued by a root of the bundle; and finally a
//! throwaway leaf signed with the set verifies against the bundle with
//! rustls-webpki. A set that fails any check is never used.

use crate::leaf::{to_system_time, LeafProfile};
use crate::verify::{anchors, is_signed_by, verify_leaf, Usage};
use crate::{pem, CertDer, PrivateKey, Signer};
use rustls_pki_types::TrustAnchor;
use std::fmt;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::*;

/// One input file: its name (for messages) and contents.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub name: &'a str,
    pub pem: &'a [u8],
}

/// The parts of a plug-in CA set.
#[derive(Debug, Clone, Copy)]
pub struct MaterialInput<'a> {
    /// The signing CA certificate (the first certificate is used).
    pub cert: Part<'a>,
    pub key: Part<'a>,
    /// Signing certificate plus intermediates; certificates that are also in
    /// the root bundle are dropped. `None`: the signing certificate alone.
    pub chain: Option<Part<'a>>,
    pub roots: Part<'a>,
}

/// Why a CA set was refused: the file at fault, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialError {
    pub file: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for MaterialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, ". Fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for MaterialError {}

fn err(file: &str, problem: impl Into<String>, fix: impl Into<String>) -> MaterialError {
    MaterialError { file: file.to_string(), problem: problem.into(), fix: fix.into() }
}

/// RFC 3339, seconds precision, UTC.
pub fn fmt_time(t: SystemTime) -> String {
    ::time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{t:?}"))
}

/// A validated, immutable CA set, ready to sign. Everything a request needs
/// (PEM of the chain and bundle, trust anchors) is prepared here once.
pub struct CaMaterial {
    /// Shared so a root can be published ahead of its signer (see [`CaMaterial::with_roots`]).
    signer: std::sync::Arc<Signer>,
    chain: Vec<CertDer>,
    roots: Vec<CertDer>,
    anchors: Vec<TrustAnchor<'static>>,
    chain_pem: Vec<String>,
    roots_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn parse_one<'a>(der: &'a CertDer, file: &str) -> Result<X509Certificate<'a>, MaterialError> {
    parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| {
        err(file, format!("a certificate could not be parsed ({e})"), "replace the file with a valid PEM certificate")
    })
}

fn parse_pem_certs(part: &Part<'_>, what: &str) -> Result<Vec<CertDer>, MaterialError> {
    pem::parse_certs(part.pem).map_err(|e| {
        err(part.name, format!("{e} (truncated or not PEM?)"), format!("write the {what} as PEM certificates"))
    })
}

/// Roots must be CA certificates allowed to sign certificates, and the root
/// that issued the chain must allow as many CA certificates below it as the
/// chain holds (rustls-webpki does not check a trust anchor's own
/// constraints, OpenSSL and Go do: every leaf would fail there).
fn check_root_constraints(
    roots: &[X509Certificate<'_>],
    chain: &[X509Certificate<'_>],
    top: &X509Certificate<'_>,
    roots_file: &str,
) -> Result<(), MaterialError> {
    for r in roots {
        let subject = crate::name::to_go_string(r.subject());
        match r.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => {
                return Err(err(
                    roots_file,
                    format!("root \"{subject}\" is not a CA certificate (basicConstraints CA:TRUE is missing)"),
                    "put only CA certificates in the root bundle",
                ))
            }
        }
        if let Ok(Some(ku)) = r.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(err(
                    roots_file,
                    format!("root \"{subject}\" may not sign certificates (keyUsage lacks keyCertSign)"),
                    "issue the root with keyUsage keyCertSign",
                ));
            }
        }
    }
    // CA certificates below each link: chain[i] is followed by i CAs; a root that
    // issued the top of the chain is followed by all of them.
    let limit =
        |c: &X509Certificate<'_>| c.basic_constraints().ok().flatten().and_then(|bc| bc.value.path_len_constraint);
    for (i, c) in chain.iter().enumerate() {
        if let Some(n) = limit(c) {
            if (n as usize) < i {
                return Err(err(
                    roots_file,
                    format!(
                        "\"{}\" allows {n} CA certificate(s) below it (pathLen) but the chain has {i}",
                        crate::name::to_go_string(c.subject())
                    ),
                    "issue that CA with a larger pathLen, or shorten the chain",
                ));
            }
        }
    }
    let below = chain.len();
    for r in roots.iter().filter(|r| r.as_raw() != top.as_raw() && is_signed_by(top, r)) {
        if let Some(n) = limit(r) {
            if (n as usize) < below {
                return Err(err(
                    roots_file,
                    format!(
                        "root \"{}\" allows {n} CA certificate(s) below it (pathLen:{n}) but the chain below it has {below}: \
                         every certificate issued would fail verification (path length exceeded)",
                        crate::name::to_go_string(r.subject())
                    ),
                    "use a root with a larger (or no) pathLen constraint, or a shorter chain",
                ));
            }
        }
    }
    Ok(())
}

impl CaMaterial {
    /// Validate a CA set at `now`; see the module documentation for the checks.
    pub fn from_input(input: &MaterialInput<'_>, now: SystemTime) -> Result<Self, MaterialError> {
        let cert_file = input.cert.name;
        let key_file = input.key.name;
        let roots_file = input.roots.name;
        let cert = parse_pem_certs(&input.cert, "signing CA certificate")?.remove(0);
        let key = PrivateKey::from_pem(input.key.pem)
            .map_err(|e| err(key_file, e.to_string(), "write the CA private key as PEM (PKCS#8, PKCS#1 or SEC1)"))?;
        let roots = parse_pem_certs(&input.roots, "root certificate bundle")?;
        let chain_file = input.chain.map_or(cert_file, |c| c.name);
        let mut chain = match &input.chain {
            Some(part) => parse_pem_certs(part, "certificate chain")?,
            None => vec![cert.clone()],
        };
        if chain.first() != Some(&cert) {
            chain.insert(0, cert.clone());
        }
        // Roots travel as the bundle (the last response element), not in the chain.
        chain.retain(|c| !roots.contains(c));

        let parsed = parse_one(&cert, cert_file)?;
        let subject = crate::name::to_go_string(parsed.subject());
        if parsed.public_key().raw != key.public_key_spki().as_slice() {
            return Err(err(
                key_file,
                format!("the private key does not match the certificate in {cert_file} (\"{subject}\")"),
                format!("use the key that was generated together with {cert_file}"),
            ));
        }
        match parsed.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => {
                return Err(err(
                    cert_file,
                    format!("\"{subject}\" is not a CA certificate (basicConstraints CA:TRUE is missing)"),
                    "plug in an intermediate CA certificate, not a workload or server certificate",
                ))
            }
        }
        if let Ok(Some(ku)) = parsed.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(err(
                    cert_file,
                    format!("\"{subject}\" may not sign certificates (keyUsage lacks keyCertSign)"),
                    "issue the CA certificate with keyUsage keyCertSign",
                ));
            }
        }
        let nb = to_system_time(&parsed.validity().not_before);
        let na = to_system_time(&parsed.validity().not_after);
        if now >= na {
            return Err(err(
                cert_file,
                format!("\"{subject}\" expired at {}", fmt_time(na)),
                "plug in a new intermediate CA",
            ));
        }
        if now < nb {
            return Err(err(
                cert_file,
                format!("\"{subject}\" is not valid before {}", fmt_time(nb)),
                "check the clocks, or wait until the certificate becomes valid",
            ));
        }

        // Each link of the chain is signed by the next, and the top by a root.
        let parsed_chain: Vec<X509Certificate<'_>> =
            chain.iter().map(|c| parse_one(c, chain_file)).collect::<Result<_, _>>()?;
        for pair in parsed_chain.windows(2) {
            if !is_signed_by(&pair[0], &pair[1]) {
                return Err(err(
                    chain_file,
                    format!(
                        "\"{}\" is not signed by the next certificate in the chain, \"{}\"",
                        crate::name::to_go_string(pair[0].subject()),
                        crate::name::to_go_string(pair[1].subject())
                    ),
                    "list the chain from the signing certificate upwards, each certificate followed by its issuer",
                ));
            }
        }
        let parsed_roots: Vec<X509Certificate<'_>> =
            roots.iter().map(|c| parse_one(c, roots_file)).collect::<Result<_, _>>()?;
        let top = parsed_chain.last().unwrap_or(&parsed);
        if !parsed_roots.iter().any(|r| r.as_raw() == top.as_raw() || is_signed_by(top, r)) {
            return Err(err(
                roots_file,
                format!(
                    "no root in {roots_file} issued \"{}\" (its issuer is \"{}\"), so the chain does not reach a trusted root",
                    crate::name::to_go_string(top.subject()),
                    crate::name::to_go_string(top.issuer())
                ),
                format!("add the root that issued the intermediate to {roots_file}, or complete {chain_file}"),
            ));
        }
        check_root_constraints(&parsed_roots, &parsed_chain, top, roots_file)?;
        let anchors = anchors(&roots).map_err(|e| {
            err(roots_file, e.to_string(), "every certificate in the bundle must be a valid CA certificate")
        })?;
        drop(parsed_chain);
        drop(parsed_roots);
        drop(parsed);

        let signer = Signer::new(cert, key).map_err(|e| err(cert_file, e.to_string(), ""))?;
        let material = Self::assemble(signer, chain, roots, anchors);
        material.probe(now).map_err(|e| {
            err(
                cert_file,
                format!("a test certificate signed with this set does not verify against {roots_file}: {e}"),
                "check that the chain and root bundle belong to this signing certificate",
            )
        })?;
        Ok(material)
    }

    /// A self-signed root that signs leaves directly.
    pub fn self_signed(root: crate::NewAuthority) -> Result<Self, MaterialError> {
        let roots = vec![root.cert.clone()];
        let anchors = anchors(&roots).map_err(|e| err("self-signed root", e.to_string(), ""))?;
        let signer = Signer::new(root.cert, root.key).map_err(|e| err("self-signed root", e.to_string(), ""))?;
        Ok(Self::assemble(signer, Vec::new(), roots, anchors))
    }

    fn assemble(signer: Signer, chain: Vec<CertDer>, roots: Vec<CertDer>, anchors: Vec<TrustAnchor<'static>>) -> Self {
        Self::assemble_shared(std::sync::Arc::new(signer), chain, roots, anchors)
    }

    fn assemble_shared(
        signer: std::sync::Arc<Signer>,
        chain: Vec<CertDer>,
        roots: Vec<CertDer>,
        anchors: Vec<TrustAnchor<'static>>,
    ) -> Self {
        let chain_pem = chain.iter().map(|c| pem::cert_to_pem(c)).collect();
        let roots_pem = pem::certs_to_pem(&roots);
        Self { signer, chain, roots, anchors, chain_pem, roots_pem }
    }

    /// The same signer and chain with another root bundle, validated like any
    /// set (a throwaway leaf must verify against `roots`). This is how a new
    /// root is published while the current signer keeps signing.
    pub fn with_roots(&self, roots: Vec<CertDer>, now: SystemTime) -> Result<Self, MaterialError> {
        let anchors = anchors(&roots)
            .map_err(|e| err("root bundle", e.to_string(), "every certificate in the bundle must be a valid CA"))?;
        let m = Self::assemble_shared(self.signer.clone(), self.chain.clone(), roots, anchors);
        m.probe(now).map_err(|e| {
            err("root bundle", format!("the current signer does not verify against the new bundle: {e}"), "")
        })?;
        Ok(m)
    }

    /// The root of the bundle that issued the top of the chain (or the signer itself).
    pub fn signing_root(&self) -> Option<&CertDer> {
        let top = self.chain.last().unwrap_or(self.signer.cert());
        let (_, top_parsed) = parse_x509_certificate(top).ok()?;
        self.roots.iter().find(|r| {
            *r == top || parse_x509_certificate(r).map(|(_, p)| is_signed_by(&top_parsed, &p)).unwrap_or(false)
        })
    }

    /// Sign a throwaway leaf and verify it against the bundle.
    pub fn probe(&self, now: SystemTime) -> Result<(), crate::verify::VerifyError> {
        let key = PrivateKey::generate(crate::KeyKind::EcP256)
            .map_err(|e| crate::verify::VerifyError::Parse(e.to_string()))?;
        let profile = LeafProfile {
            uris: vec!["spiffe://meshca.invalid/ns/meshca/sa/probe".into()],
            dns_names: vec![],
            ttl: Duration::from_secs(300),
        };
        let leaf = self
            .signer
            .sign_leaf(&key.public_key_spki(), &profile, now)
            .map_err(|e| crate::verify::VerifyError::Chain(e.to_string()))?;
        self.verify(&leaf, &[], now, Usage::Client)
    }

    /// Verify a leaf (plus any intermediates it brought) against this bundle.
    pub fn verify(
        &self,
        leaf: &CertDer,
        extra: &[CertDer],
        now: SystemTime,
        usage: Usage,
    ) -> Result<(), crate::verify::VerifyError> {
        if extra.is_empty() {
            verify_leaf(leaf, &self.chain, &self.anchors, now, usage)
        } else {
            let mut all = self.chain.clone();
            all.extend_from_slice(extra);
            verify_leaf(leaf, &all, &self.anchors, now, usage)
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// Signing certificate and intermediates, without roots (empty for a self-signed root).
    pub fn chain(&self) -> &[CertDer] {
        &self.chain
    }
    pub fn roots(&self) -> &[CertDer] {
        &self.roots
    }
    /// The root bundle as one PEM string (the last element of every response).
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// Istio's `cert_chain`: the leaf, each intermediate, then the whole root bundle.
    pub fn response_chain(&self, leaf: &[u8]) -> Vec<String> {
        let mut out = Vec::with_capacity(self.chain_pem.len() + 2);
        out.push(pem::cert_to_pem(leaf));
        out.extend(self.chain_pem.iter().cloned());
        out.push(self.roots_pem.clone());
        out
    }

    /// The signing certificate followed by its chain and the roots, for logs.
    pub fn certs_for_log(&self) -> Vec<&CertDer> {
        let mut v = vec![self.signer.cert()];
        v.extend(self.chain.iter().filter(|c| *c != self.signer.cert()));
        v.extend(self.roots.iter().filter(|c| *c != self.signer.cert()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{new_intermediate, new_root, AuthorityOptions};

    fn opts(cn: &str, path_len: Option<u8>) -> AuthorityOptions {
        AuthorityOptions {
            common_name: cn.into(),
            organization: "test".into(),
            locality: None,
            ttl: Duration::from_secs(3600),
            key: crate::KeyKind::EcP256,
            path_len,
        }
    }

    /// root(pathLen) -> int1 -> int2 (signing); the material as plug-in files would give it.
    fn two_below(root_path_len: Option<u8>) -> Result<CaMaterial, MaterialError> {
        let now = SystemTime::now();
        let root = new_root(&opts("root", root_path_len), now).unwrap();
        let root_signer = Signer::new(root.cert.clone(), root.key).unwrap();
        let int1 = new_intermediate(&opts("int1", None), &root_signer, now).unwrap();
        let int1_signer = Signer::new(int1.cert.clone(), int1.key).unwrap();
        let int2 = new_intermediate(&opts("int2", None), &int1_signer, now).unwrap();
        let cert_pem = pem::cert_to_pem(&int2.cert);
        let key_pem = int2.key.to_pkcs8_pem();
        let chain_pem = pem::certs_to_pem([&int2.cert, &int1.cert]);
        let roots_pem = pem::cert_to_pem(&root.cert);
        let input = MaterialInput {
            cert: Part { name: "ca-cert.pem", pem: cert_pem.as_bytes() },
            key: Part { name: "ca-key.pem", pem: key_pem.as_bytes() },
            chain: Some(Part { name: "cert-chain.pem", pem: chain_pem.as_bytes() }),
            roots: Part { name: "root-cert.pem", pem: roots_pem.as_bytes() },
        };
        CaMaterial::from_input(&input, now)
    }

    #[test]
    fn root_path_len_is_checked_against_the_chain_below() {
        let e = two_below(Some(0)).unwrap_err();
        assert_eq!(e.file, "root-cert.pem");
        assert!(e.problem.contains("pathLen:0") && e.problem.contains("has 2"), "{e}");
        assert!(two_below(Some(1)).is_err());
        assert!(two_below(Some(2)).is_ok());
        assert!(two_below(None).is_ok());
    }
}
