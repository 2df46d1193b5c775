//! The crypto floor: what one certificate costs in cryptography alone, with
//! the library meshca uses (aws-lc-rs), single-threaded: verifying one CSR's
//! signature (public key parsed from the CSR each time, as the server must)
//! plus signing one certificate's TBS bytes with the CA key.

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use meshca_pki::{KeyKind, LeafProfile, PrivateKey, Signer};
use rustls_pki_types::pem::PemObject;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256};
use x509_parser::prelude::FromDer;

/// Median single-threaded cost of each half, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub verify_us: f64,
    pub sign_us: f64,
    /// Not part of the floor: one ES256 signature verification over a
    /// message as long as the bearer tokens' signing input, the cryptography
    /// that JWT authentication adds to every request.
    pub jwt_verify_us: f64,
}

impl Floor {
    /// The floor the targets are stated against: CSR verify + certificate sign.
    pub fn total_us(&self) -> f64 {
        self.verify_us + self.sign_us
    }

    /// The floor plus the token's signature check.
    pub fn with_jwt_us(&self) -> f64 {
        self.total_us() + self.jwt_verify_us
    }
}

enum CaKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl CaKey {
    fn from_pem(kind: KeyKind, pem: &str) -> anyhow::Result<Self> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .context("the CA key is not a PKCS#8 PEM")?;
        let der = der.secret_pkcs8_der();
        Ok(match kind {
            KeyKind::EcP256 => CaKey::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der)
                    .map_err(|e| anyhow::anyhow!("CA key: {e}"))?,
            ),
            KeyKind::Rsa2048 => CaKey::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|e| anyhow::anyhow!("CA key: {e}"))?),
            other => anyhow::bail!("no crypto floor for a {other} CA (ec-p256, rsa-2048)"),
        })
    }

    fn sign(&self, rng: &SystemRandom, msg: &[u8], buf: &mut [u8]) -> anyhow::Result<usize> {
        match self {
            CaKey::Ec(k) => {
                let sig = k.sign(rng, msg).map_err(|_| anyhow::anyhow!("ECDSA sign failed"))?;
                Ok(sig.as_ref().len())
            }
            CaKey::Rsa(k) => {
                let n = k.public_modulus_len();
                k.sign(&signature::RSA_PKCS1_SHA256, rng, msg, &mut buf[..n])
                    .map_err(|_| anyhow::anyhow!("RSA sign failed"))?;
                Ok(n)
            }
        }
    }

    fn public_key_len(&self) -> usize {
        match self {
            CaKey::Ec(k) => k.public_key().as_ref().len(),
            CaKey::Rsa(k) => k.public_modulus_len(),
        }
    }
}

/// The TBS of a certificate exactly as meshca would issue it for `csr_pem`
/// (same CA, same profile), so the floor signs a message of the real size.
pub fn leaf_tbs(ca_cert_pem: &str, ca_key_pem: &str, csr_pem: &str, identity: &str) -> anyhow::Result<Vec<u8>> {
    let cert = meshca_pki::pem::parse_certs(ca_cert_pem.as_bytes())?.remove(0);
    let key = PrivateKey::from_pem(ca_key_pem.as_bytes())?;
    let signer = Signer::new(cert, key)?;
    let csr = meshca_pki::csr::validate(csr_pem, identity, &Default::default())?;
    let profile = LeafProfile { uris: vec![identity.to_string()], dns_names: vec![], ttl: Duration::from_secs(86400) };
    let issued = signer.issue(&csr.spki_der, &profile, SystemTime::now())?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.cert).map_err(|e| anyhow::anyhow!("leaf: {e}"))?;
    Ok(leaf.tbs_certificate.as_ref().to_vec())
}

/// Run `op` repeatedly for about `budget` per round, `rounds` times; the
/// median time per operation in microseconds. Time is this thread's CPU time
/// (so other processes competing for the core do not inflate it), or wall
/// time where the kernel does not report it.
fn median_us(rounds: usize, budget: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut per_op = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (start, cpu0) = (Instant::now(), crate::procstat::thread_cpu_ns());
        let mut n = 0u64;
        while start.elapsed() < budget || n < 10 {
            op()?;
            n += 1;
        }
        let wall_us = start.elapsed().as_secs_f64() * 1e6;
        let us = match (cpu0, crate::procstat::thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e3,
            _ => wall_us,
        };
        per_op.push(us / n as f64);
    }
    per_op.sort_by(f64::total_cmp);
    Ok(per_op[per_op.len() / 2])
}

/// Measure the floor for CSRs like `csr_pem` signed by a `ca_kind` CA key.
pub fn measure(
    ca_kind: KeyKind,
    ca_key_pem: &str,
    csr_pem: &str,
    tbs: &[u8],
    token: &str,
    budget: Duration,
) -> anyhow::Result<Floor> {
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).context("CSR is not PEM")?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).map_err(|e| anyhow::anyhow!("CSR: {e}"))?;
    let info = &csr.certification_request_info;
    let alg: &'static dyn signature::VerificationAlgorithm = match &csr.signature_algorithm.algorithm {
        o if *o == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        o if *o == OID_PKCS1_SHA256WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA256,
        o => anyhow::bail!("no crypto floor for CSR signature algorithm {o}"),
    };
    let public_key = info.subject_pki.subject_public_key.data.as_ref();
    let (message, sig) = (info.raw, csr.signature_value.data.as_ref());
    UnparsedPublicKey::new(alg, public_key).verify(message, sig).map_err(|_| anyhow::anyhow!("CSR does not verify"))?;

    let ca = CaKey::from_pem(ca_kind, ca_key_pem)?;
    let rng = SystemRandom::new();
    let mut buf = vec![0u8; ca.public_key_len().max(1024)];
    let rounds = 5;
    let verify_us = median_us(rounds, budget, || {
        UnparsedPublicKey::new(alg, black_box(public_key))
            .verify(black_box(message), black_box(sig))
            .map_err(|_| anyhow::anyhow!("CSR does not verify"))
    })?;
    let sign_us = median_us(rounds, budget, || {
        black_box(ca.sign(&rng, black_box(tbs), &mut buf)?);
        Ok(())
    })?;
    // ES256 as a JWT carries it: fixed-width r || s over the header.payload text.
    let signing_input = token.rsplit_once('.').map_or(token, |(input, _)| input).as_bytes();
    let jwt_pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("ES256 key generation failed"))?;
    let jwt_key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, jwt_pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("ES256 key"))?;
    let jwt_sig = jwt_key.sign(&rng, signing_input).map_err(|_| anyhow::anyhow!("ES256 sign failed"))?;
    let jwt_pub = jwt_key.public_key().as_ref().to_vec();
    let jwt_verify_us = median_us(rounds, budget, || {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, black_box(&jwt_pub))
            .verify(black_box(signing_input), black_box(jwt_sig.as_ref()))
            .map_err(|_| anyhow::anyhow!("ES256 does not verify"))
    })?;
    Ok(Floor { verify_us, sign_us, jwt_verify_us })
}
