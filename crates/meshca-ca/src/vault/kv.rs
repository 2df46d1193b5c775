//! `vault-kv`: the "Vault as the Istio CA" layout read over the HTTP API.
//! The signing certificate and chain come from the intermediate's PKI mount,
//! the root from the root's mount, the key from a KV secret (v1 or v2).

use super::client::{data_str, VaultClient, VaultError};
use super::KvPaths;
use meshca_pki::material::{MaterialInput, Part};
use meshca_pki::CaMaterial;
use serde_json::Value;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// A PEM certificate (bundle) from a PKI `cert/...` endpoint.
async fn read_cert(client: &VaultClient, path: &str, what: &str) -> Result<String, VaultError> {
    let v = client.read(path, what).await.map_err(|e| match e {
        // A PKI mount without a CA answers 400 "no default issuer currently configured".
        VaultError::Status { status: 400, errors, method, path } if errors.contains("issuer") => VaultError::Invalid {
            path,
            problem: format!(
                "{errors} ({method}): the PKI mount has no CA yet; generate or import one (e.g. set-signed) first"
            ),
        },
        other => other,
    })?;
    // `cert/ca_chain` answers with `ca_chain` (newer) or `certificate`.
    let pem = v["data"]["ca_chain"]
        .as_str()
        .filter(|s| s.contains("BEGIN"))
        .map(Ok)
        .unwrap_or_else(|| data_str(&v, path, "certificate"))?;
    Ok(pem.to_string())
}

/// The mount of a KV v2 path and its location below the mount (`sys/internal/ui/mounts`).
async fn kv2_mount(client: &VaultClient, path: &str) -> Option<String> {
    let v = client.read(&format!("sys/internal/ui/mounts/{path}"), "the mount lookup").await.ok()?;
    v["data"]["path"].as_str().map(|m| m.trim_end_matches('/').to_string())
}

/// The data of a KV secret, v1 or v2 (detected from the answer, or from
/// Vault's "versioned K/V" warning when a v2 secret is addressed without `data/`).
pub async fn read_kv(client: &VaultClient, path: &str) -> Result<(String, Value), VaultError> {
    let what = "KV secret holding the CA key (--vault-key-path)";
    match client.read(path, what).await {
        Ok(v) => {
            let d = &v["data"];
            if d["data"].is_object() && d["metadata"].is_object() {
                Ok((path.to_string(), d["data"].clone()))
            } else {
                Ok((path.to_string(), d.clone()))
            }
        }
        Err(VaultError::NotFound { warnings, .. }) if warnings.iter().any(|w| w.contains("versioned K/V")) => {
            let mount = kv2_mount(client, path).await.unwrap_or_else(|| super::client::mount_of(path));
            let rest = path.strip_prefix(&mount).unwrap_or(path).trim_start_matches('/');
            let v2 = format!("{mount}/data/{rest}");
            tracing::debug!(path, v2 = %v2, "KV v2 mount: reading through data/");
            let v = client.read(&v2, what).await?;
            Ok((v2, v["data"]["data"].clone()))
        }
        Err(e) => Err(e),
    }
}

/// Check that every certificate of the bundle is self-signed: an intermediate
/// mistaken for the root would otherwise be trusted as an anchor.
pub fn check_roots_self_signed(pem: &str, source: &str, fix: &str) -> Result<(), VaultError> {
    let certs = meshca_pki::pem::parse_certs(pem.as_bytes()).map_err(|e| {
        VaultError::Material(meshca_pki::MaterialError {
            file: source.into(),
            problem: format!("{e}"),
            fix: "Vault should return PEM certificates here".into(),
        })
    })?;
    for der in &certs {
        let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else { continue };
        if c.subject().as_raw() != c.issuer().as_raw() || !meshca_pki::verify::is_signed_by(&c, &c) {
            return Err(VaultError::Material(meshca_pki::MaterialError {
                file: source.into(),
                problem: format!(
                    "\"{}\" is used as a trust root but is not self-signed: it was issued by \"{}\" (an \
                     intermediate mistaken for the root?)",
                    meshca_pki::name::to_go_string(c.subject()),
                    meshca_pki::name::to_go_string(c.issuer())
                ),
                fix: fix.into(),
            }));
        }
    }
    Ok(())
}

/// Read the four parts and validate them as one set.
pub async fn fetch(client: &VaultClient, paths: &KvPaths, now: SystemTime) -> Result<CaMaterial, VaultError> {
    let cert = read_cert(client, &paths.cert, "signing CA certificate (--vault-cert-path)").await?;
    let chain = read_cert(client, &paths.chain, "CA chain (--vault-chain-path)").await?;
    let root = read_cert(client, &paths.root, "root certificate (--vault-root-path)").await?;
    let (key_path, data) = read_kv(client, &paths.key).await?;
    let key = Zeroizing::new(
        data[&paths.key_field]
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                let fields: Vec<&str> =
                    data.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
                VaultError::Invalid {
                    path: key_path.clone(),
                    problem: format!(
                        "the secret has no field \"{}\" (fields: {}); store the key there (bao kv put {} {}=@ca-key.pem) \
                         or set --vault-key-field",
                        paths.key_field,
                        if fields.is_empty() { "none".into() } else { fields.join(", ") },
                        paths.key,
                        paths.key_field
                    ),
                }
            })?
            .to_string(),
    );
    drop(data);
    check_roots_self_signed(
        &root,
        &format!("vault:{}", paths.root),
        "point --vault-root-path at the mount holding the self-signed root (e.g. pki/cert/ca)",
    )?;
    let names = [
        format!("vault:{}", paths.cert),
        format!("vault:{key_path} (field {})", paths.key_field),
        format!("vault:{}", paths.chain),
        format!("vault:{}", paths.root),
    ];
    let input = MaterialInput {
        cert: Part { name: &names[0], pem: cert.as_bytes() },
        key: Part { name: &names[1], pem: key.as_bytes() },
        chain: Some(Part { name: &names[2], pem: chain.as_bytes() }),
        roots: Part { name: &names[3], pem: root.as_bytes() },
    };
    CaMaterial::from_input(&input, now).map_err(VaultError::Material)
}
