//! meshca's own token issuer: a signing key kept in the data directory, used
//! by `meshca token create` to mint service-account-style JWTs that `serve`
//! always trusts. This is how a VM, or someone trying meshca without
//! Kubernetes, gets a first certificate.

use crate::fsutil;
use meshca_jwt::SigningKey;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The `iss` of tokens minted by meshca itself.
pub const LOCAL_ISSUER: &str = "meshca-local";

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token").join("token-key.pem")
}

/// Load the token signing key, creating it (mode 0600) on first use.
pub fn load_or_create_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = key_path(data_dir);
    if path.exists() {
        let text =
            zeroize::Zeroizing::new(std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        return parse_key(&text, &path.display().to_string());
    }
    let key = SigningKey::generate_es256()?;
    write_key_file(data_dir, &key_to_pem(&key))?;
    Ok(key)
}

/// Parse a PKCS#8 PEM token signing key; `origin` names it in errors.
pub fn parse_key(pem: &[u8], origin: &str) -> anyhow::Result<SigningKey> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| anyhow::anyhow!("{origin}: not a PKCS#8 PEM key: {e}"))?;
    SigningKey::from_pkcs8_der(der.secret_pkcs8_der()).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

/// The PKCS#8 PEM form of `key`, as kept in `token-key.pem`.
pub fn key_to_pem(key: &SigningKey) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(meshca_pki::pem::encode("PRIVATE KEY", &key.to_pkcs8_der()))
}

/// Write `pem` as the data directory's token key (atomically, mode 0600).
pub fn write_key_file(data_dir: &Path, pem: &str) -> anyhow::Result<()> {
    let path = key_path(data_dir);
    fsutil::ensure_private_dir(data_dir)?;
    fsutil::ensure_private_dir(path.parent().unwrap_or(data_dir))?;
    fsutil::write_secret(&path, pem.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A token for `system:serviceaccount:<ns>:<sa>` valid for `ttl`.
pub fn mint(
    key: &SigningKey,
    ns: &str,
    sa: &str,
    audience: &str,
    ttl: Duration,
    now: SystemTime,
) -> anyhow::Result<String> {
    meshca_pki::SpiffeId::new("td", ns, sa)?;
    let iat = now.duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": LOCAL_ISSUER,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": [audience],
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl.as_secs(),
        "kubernetes.io": { "namespace": ns, "serviceaccount": { "name": sa } },
    });
    Ok(key.sign(&claims)?)
}
