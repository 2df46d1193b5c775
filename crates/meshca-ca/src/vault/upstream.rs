//! `vault-upstream`: meshca's own intermediate, signed by Vault.
//!
//! Each round generates a fresh key in memory, sends a CSR (CA basic
//! constraints requested) to `<mount>/root/sign-intermediate` with
//! `use_csr_values=false` and a short TTL, validates what comes back as a
//! complete set, and hands it to the swapper. The next round starts at the
//! half-life of the certificate just obtained (SPIRE's schedule): prepare,
//! publish (the bundle is unchanged while the root stays the same; when Vault's
//! root changes, the previous roots stay in the bundle until they expire),
//! activate, drop the old intermediate. The key is never written anywhere.

use super::client::{VaultClient, VaultError};
use super::kv::check_roots_self_signed;
use super::UpstreamConfig;
use crate::clock::SharedClock;
use meshca_pki::material::{MaterialInput, Part};
use meshca_pki::{pem, CaMaterial, CertDer, PrivateKey};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

pub struct Upstream {
    cfg: UpstreamConfig,
    rotate_at: SystemTime,
    not_after: SystemTime,
    /// Roots published so far, kept in the bundle while they are valid.
    roots: Vec<CertDer>,
}

/// A CSR for a CA certificate with `key`.
pub fn ca_csr(key: &PrivateKey, common_name: &str) -> Result<String, VaultError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
        .serialize_request(key.key_pair())
        .and_then(|c| c.pem())
        .map_err(|e| VaultError::Local(format!("could not build the intermediate's CSR: {e}")))
}

fn not_after_of(der: &CertDer) -> Option<SystemTime> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let ts = c.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64))
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig) -> Self {
        Self { cfg, rotate_at: SystemTime::UNIX_EPOCH, not_after: SystemTime::UNIX_EPOCH, roots: Vec::new() }
    }

    /// When the next intermediate should be prepared.
    pub fn rotate_at(&self) -> SystemTime {
        self.rotate_at
    }

    /// Expiry of the intermediate obtained last.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    fn sign_path(&self) -> String {
        format!("{}/root/sign-intermediate", self.cfg.mount.trim_matches('/'))
    }

    /// Obtain, validate and return a new intermediate.
    pub async fn issue(&mut self, client: &VaultClient, clock: &SharedClock) -> Result<CaMaterial, VaultError> {
        let key = PrivateKey::generate(self.cfg.key).map_err(|e| VaultError::Local(e.to_string()))?;
        let csr = ca_csr(&key, &self.cfg.common_name)?;
        let path = self.sign_path();
        let body = json!({
            "csr": csr,
            "common_name": self.cfg.common_name,
            "ttl": format!("{}s", self.cfg.ttl.as_secs().max(1)),
            "format": "pem",
            "use_csr_values": false,
            "exclude_cn_from_sans": true,
        });
        let v = client.write(&path, &body, "PKI mount signing meshca's intermediate (--vault-pki-mount)").await?;
        let cert_pem = v["data"]["certificate"].as_str().filter(|s| s.contains("BEGIN")).ok_or_else(|| {
            VaultError::Invalid { path: path.clone(), problem: "no certificate in the answer".into() }
        })?;
        let mut chain_pem = String::from(cert_pem.trim_end());
        chain_pem.push('\n');
        let ca_chain: Vec<String> = match v["data"]["ca_chain"].as_array() {
            Some(a) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            None => v["data"]["issuing_ca"].as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        };
        let cert_der = pem::parse_certs(cert_pem.as_bytes()).ok().and_then(|mut c| c.drain(..).next());
        for c in &ca_chain {
            // Some versions repeat the new certificate at the head of ca_chain.
            if pem::parse_certs(c.as_bytes()).ok().and_then(|v| v.into_iter().next()) == cert_der {
                continue;
            }
            chain_pem.push_str(c.trim_end());
            chain_pem.push('\n');
        }

        let (roots_pem, roots_source, fix) = match &self.cfg.root_path {
            Some(rp) => {
                let v = client.read(rp, "root certificate (--vault-root-path)").await?;
                let pem = super::client::data_str(&v, rp, "certificate")?.to_string();
                (pem, format!("vault:{rp}"), "point --vault-root-path at the mount holding the self-signed root")
            }
            None => {
                // The self-signed certificate at the top of the chain Vault returned.
                let top = ca_chain.iter().rev().find(|c| check_roots_self_signed(c, "", "").is_ok()).cloned();
                let Some(top) = top else {
                    return Err(VaultError::Invalid {
                        path,
                        problem: format!(
                            "the chain Vault returned ({} certificates) ends without a self-signed root; set \
                             --vault-root-path to where the root is (e.g. pki/cert/ca)",
                            ca_chain.len()
                        ),
                    });
                };
                (top, format!("vault:{path} (top of ca_chain)"), "set --vault-root-path (e.g. pki/cert/ca)")
            }
        };
        check_roots_self_signed(&roots_pem, &roots_source, fix)?;
        let now = clock.now();
        let fresh_roots = pem::parse_certs(roots_pem.as_bytes())
            .map_err(|e| VaultError::Invalid { path: roots_source.clone(), problem: e.to_string() })?;
        let mut bundle: Vec<CertDer> = fresh_roots.clone();
        for old in &self.roots {
            if !bundle.contains(old) && not_after_of(old).is_some_and(|na| na > now) {
                tracing::info!("Vault's root changed; the previous root stays in the trust bundle until it expires");
                bundle.push(old.clone());
            }
        }
        let bundle_pem = pem::certs_to_pem(&bundle);
        let key_pem = key.to_pkcs8_pem();
        let names = [format!("vault:{path} (certificate)"), format!("vault:{path} (ca_chain)")];
        let input = MaterialInput {
            cert: Part { name: &names[0], pem: cert_pem.as_bytes() },
            key: Part { name: "meshca's in-memory intermediate key", pem: key_pem.as_bytes() },
            chain: Some(Part { name: &names[1], pem: chain_pem.as_bytes() }),
            roots: Part { name: &roots_source, pem: bundle_pem.as_bytes() },
        };
        let material = CaMaterial::from_input(&input, now).map_err(VaultError::Material)?;
        drop(key_pem);
        let not_after = material.signer().not_after();
        let life = not_after.duration_since(now).unwrap_or_default();
        self.not_after = not_after;
        self.rotate_at = now + life / 2;
        self.roots = bundle;
        tracing::info!(
            valid_for_s = life.as_secs(),
            next_rotation_in_s = (life / 2).as_secs(),
            "Vault signed a new meshca intermediate ({})",
            self.cfg.common_name
        );
        if life < self.cfg.ttl / 2 {
            tracing::warn!(
                requested_s = self.cfg.ttl.as_secs(),
                granted_s = life.as_secs(),
                "Vault granted a much shorter intermediate lifetime than requested (mount max TTL or the issuer's \
                 own expiry); tune the mount's max-lease-ttl"
            );
        }
        Ok(material)
    }
}
