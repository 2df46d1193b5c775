//! A small Vault/OpenBao HTTP API client: JSON in and out, the token header,
//! and errors that say what to do (the capability a policy lacks, the mount
//! that is missing, a sealed or unreachable server).

use super::auth::Auth;
use super::VaultConfig;
use meshca_pki::MaterialError;
use reqwest::Method;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Why a Vault call failed, phrased for an operator.
#[derive(Debug, Clone)]
pub enum VaultError {
    /// No TCP/TLS connection, or no answer in time.
    Unreachable {
        addr: String,
        detail: String,
    },
    Sealed {
        addr: String,
    },
    Uninitialized {
        addr: String,
    },
    /// 403 on an authenticated call.
    Forbidden {
        method: Method,
        path: String,
        capability: &'static str,
        errors: String,
    },
    /// 404 "no handler for route": nothing is mounted there.
    MountMissing {
        method: Method,
        path: String,
        mount: String,
        what: String,
    },
    /// 404 on an existing mount: the secret (or issuer) does not exist.
    NotFound {
        method: Method,
        path: String,
        what: String,
        warnings: Vec<String>,
    },
    /// Any other unexpected status.
    Status {
        method: Method,
        path: String,
        status: u16,
        errors: String,
    },
    /// A 2xx answer without what was expected.
    Invalid {
        path: String,
        problem: String,
    },
    /// A login was refused or could not be attempted.
    Auth(String),
    /// Vault answered, but the material does not make a valid CA set.
    Material(MaterialError),
    /// Local problems (key generation, configuration files).
    Local(String),
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { addr, detail } => write!(
                f,
                "Vault at {addr} is unreachable ({detail}). Check --vault-addr, that Vault is running and reachable \
                 from here, and --vault-ca-file for HTTPS"
            ),
            Self::Sealed { addr } => {
                write!(f, "Vault at {addr} is sealed (503). Unseal it (bao operator unseal) and meshca will resume")
            }
            Self::Uninitialized { addr } => {
                write!(f, "Vault at {addr} is not initialized (bao operator init), so it holds no CA")
            }
            Self::Forbidden { method, path, capability, errors } => write!(
                f,
                "Vault denied {method} /v1/{path} (403: {errors}): the token's policies lack the \"{capability}\" \
                 capability on \"{path}\" (or the token has expired or been revoked). A policy granting it:\n    \
                 path \"{path}\" {{ capabilities = [\"{capability}\"] }}"
            ),
            Self::MountMissing { method, path, mount, what } => write!(
                f,
                "Vault has nothing mounted at \"{mount}/\" ({method} /v1/{path} for {what}: no handler for route). \
                 Enable the engine there (e.g. `bao secrets enable -path={mount} pki`) or point meshca at the mount \
                 that exists"
            ),
            Self::NotFound { method, path, what, .. } => write!(
                f,
                "Vault has no {what} at \"{path}\" ({method} /v1/{path}: 404 not found). Create it there or correct \
                 the path meshca is configured with"
            ),
            Self::Status { method, path, status, errors } => {
                write!(f, "Vault answered {method} /v1/{path} with {status}: {errors}")
            }
            Self::Invalid { path, problem } => write!(f, "Vault's answer for /v1/{path} is unusable: {problem}"),
            Self::Auth(m) => write!(f, "{m}"),
            Self::Material(e) => write!(f, "Vault returned CA material that was refused: {e}"),
            Self::Local(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for VaultError {}

/// The capability a policy needs for `method` on a path.
pub fn capability(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "update",
    }
}

/// The mount a path belongs to, as far as the path alone tells: the first
/// segment, or the first two under `auth/`.
pub fn mount_of(path: &str) -> String {
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("auth"), Some(m)) => format!("auth/{m}"),
        (Some(m), _) => m.to_string(),
        _ => path.to_string(),
    }
}

fn joined_errors(body: &Value) -> String {
    let errs: Vec<String> = body["errors"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|e| e.as_str()).map(|s| s.trim().replace("\n\t", " ").replace('\n', " ")).collect()
        })
        .unwrap_or_default();
    if errs.is_empty() {
        "no detail".into()
    } else {
        errs.join("; ")
    }
}

fn warnings(body: &Value) -> Vec<String> {
    body["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub struct VaultClient {
    http: reqwest::Client,
    addr: String,
    namespace: Option<String>,
    pub(crate) auth: Auth,
}

impl VaultClient {
    pub fn new(cfg: &VaultConfig) -> Result<Self, VaultError> {
        let addr = cfg.addr.trim_end_matches('/').trim_end_matches("/v1").to_string();
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(VaultError::Local(format!(
                "--vault-addr {addr:?} must start with http:// or https:// (e.g. https://vault.vault.svc:8200)"
            )));
        }
        if addr.starts_with("http://") {
            tracing::warn!(addr = %addr, "--vault-addr is plain http://: the Vault token and login secrets cross the network unencrypted");
        }
        // Never follow a redirect: it would re-send X-Vault-Token (and a login
        // secret in the body) to wherever the answer points, plain HTTP included.
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(5).min(cfg.timeout))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(file) = &cfg.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| VaultError::Local(format!("--vault-ca-file {}: cannot be read: {e}", file.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                VaultError::Local(format!("--vault-ca-file {}: not a PEM certificate bundle: {e}", file.display()))
            })?;
            if certs.is_empty() {
                return Err(VaultError::Local(format!("--vault-ca-file {}: holds no certificate", file.display())));
            }
            b = b.tls_certs_only(certs);
        }
        let http = b.build().map_err(|e| VaultError::Local(format!("HTTP client for Vault: {e}")))?;
        Ok(Self { http, addr, namespace: cfg.namespace.clone(), auth: Auth::new(cfg.auth.clone()) })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One HTTP call. `what` names the item for 404 messages.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        what: &str,
    ) -> Result<Value, VaultError> {
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        req = req.header("X-Vault-Request", "true");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| VaultError::Unreachable { addr: self.addr.clone(), detail: error_chain(&e) })?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let to = resp.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("?");
            return Err(VaultError::Status {
                method,
                path: path.into(),
                status,
                errors: format!(
                    "redirect to {} not followed (meshca never re-sends Vault credentials to another address); \
                     point --vault-addr at the active node or a load balancer that does not redirect",
                    crate::sanitize::short(to)
                ),
            });
        }
        let text = resp.text().await.map_err(|e| VaultError::Unreachable {
            addr: self.addr.clone(),
            detail: format!("reading the answer to {method} /v1/{path}: {}", error_chain(&e)),
        })?;
        let json: Value =
            if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        let errors = joined_errors(&json);
        match status {
            200..=299 => Ok(json),
            403 => Err(VaultError::Forbidden { capability: capability(&method), method, path: path.into(), errors }),
            404 if errors.contains("no handler for route") => {
                Err(VaultError::MountMissing { method, path: path.into(), mount: mount_of(path), what: what.into() })
            }
            404 => {
                Err(VaultError::NotFound { method, path: path.into(), what: what.into(), warnings: warnings(&json) })
            }
            503 if errors.to_ascii_lowercase().contains("sealed") => {
                Err(VaultError::Sealed { addr: self.addr.clone() })
            }
            501 => Err(VaultError::Uninitialized { addr: self.addr.clone() }),
            _ => Err(VaultError::Status { method, path: path.into(), status, errors }),
        }
    }

    /// An authenticated call; a 403 with a login method logs in again once
    /// (the token may have expired) before giving up.
    pub async fn authed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, VaultError> {
        let token = self.auth.token(self).await?;
        match self.call(method.clone(), path, body, Some(&token), what).await {
            Err(VaultError::Forbidden { .. }) if self.auth.can_login() => {
                tracing::info!(
                    "Vault refused {method} /v1/{path} with 403; logging in again in case the token expired"
                );
                self.auth.invalidate().await;
                let token = self.auth.token(self).await?;
                self.call(method, path, body, Some(&token), what).await
            }
            r => r,
        }
    }

    pub async fn read(&self, path: &str, what: &str) -> Result<Value, VaultError> {
        self.authed(Method::GET, path, None, what).await
    }

    pub async fn write(&self, path: &str, body: &Value, what: &str) -> Result<Value, VaultError> {
        self.authed(Method::POST, path, Some(body), what).await
    }

    /// `sys/health`: reachable, initialized, unsealed.
    pub async fn health(&self) -> Result<(), VaultError> {
        // Standby and performance-standby nodes answer 200 with these flags.
        let path = "sys/health?standbyok=true&perfstandbyok=true";
        match self.call(Method::GET, path, None, None, "the health endpoint").await {
            Ok(v) if v["sealed"] == Value::Bool(true) => Err(VaultError::Sealed { addr: self.addr.clone() }),
            Ok(v) if v["initialized"] == Value::Bool(false) => {
                Err(VaultError::Uninitialized { addr: self.addr.clone() })
            }
            Ok(_) => Ok(()),
            Err(VaultError::Status { status: 503, .. }) => Err(VaultError::Sealed { addr: self.addr.clone() }),
            Err(e) => Err(e),
        }
    }

    /// Log in (or check the configured token).
    pub async fn login(&self) -> Result<(), VaultError> {
        self.auth.invalidate().await;
        self.auth.token(self).await.map(|_| ())
    }

    /// Renew or replace the token when it is due.
    pub async fn maintain_token(&self) -> Result<(), VaultError> {
        self.auth.maintain(self).await
    }

    /// How long until the token should be renewed, if it expires at all.
    pub async fn renew_due_in(&self) -> Option<Duration> {
        self.auth.renew_due_in().await
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A string field of `data`, or an error naming it.
pub fn data_str<'a>(v: &'a Value, path: &str, field: &str) -> Result<&'a str, VaultError> {
    v["data"][field]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| VaultError::Invalid { path: path.into(), problem: format!("no \"{field}\" in its data") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_carries_a_policy_snippet() {
        let e = VaultError::Forbidden {
            method: Method::POST,
            path: "pki_int/root/sign-intermediate".into(),
            capability: capability(&Method::POST),
            errors: "permission denied".into(),
        };
        let m = e.to_string();
        assert!(m.contains(r#"path "pki_int/root/sign-intermediate" { capabilities = ["update"] }"#), "{m}");
    }

    #[test]
    fn mounts_from_paths() {
        assert_eq!(mount_of("pki_int/cert/ca"), "pki_int");
        assert_eq!(mount_of("auth/approle/login"), "auth/approle");
        assert_eq!(capability(&Method::GET), "read");
    }
}
