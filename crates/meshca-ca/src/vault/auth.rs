//! Authentication to Vault: a token, AppRole, or a JWT login (the `jwt` and
//! `kubernetes` auth methods take the same `{role, jwt}` body), and keeping
//! the token alive: renewed at two thirds of its TTL, replaced by a fresh
//! login when it cannot be renewed.

use super::client::{VaultClient, VaultError};
use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The default service-account token of a Kubernetes pod.
/// Wait before retrying a failed renewal or login.
const RETRY: Duration = Duration::from_secs(5);

pub const K8S_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Clone)]
pub enum AuthConfig {
    /// A token given directly or read from a file (re-read at every login).
    Token {
        token: Option<Zeroizing<String>>,
        file: Option<PathBuf>,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret_id: Option<Zeroizing<String>>,
        secret_id_file: Option<PathBuf>,
    },
    /// `kind` is `jwt` or `kubernetes` (only the defaults and messages differ).
    Jwt {
        kind: &'static str,
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token { file, .. } => f.debug_struct("Token").field("file", file).finish_non_exhaustive(),
            Self::AppRole { mount, role_id, secret_id_file, .. } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .field("secret_id_file", secret_id_file)
                .finish_non_exhaustive(),
            Self::Jwt { kind, mount, role, jwt_file } => f
                .debug_struct("Jwt")
                .field("kind", kind)
                .field("mount", mount)
                .field("role", role)
                .field("jwt_file", jwt_file)
                .finish(),
        }
    }
}

impl AuthConfig {
    /// Token auth with a token given directly and/or a file to read it from.
    pub fn token(token: Option<String>, file: Option<PathBuf>) -> Self {
        Self::Token { token: token.map(Zeroizing::new), file }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::AppRole { .. } => "approle",
            Self::Jwt { kind, .. } => kind,
        }
    }
}

struct Token {
    value: Zeroizing<String>,
    renewable: bool,
    /// When to renew (two thirds of the TTL); `None`: never expires.
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Token {
    fn new(value: String, ttl_secs: u64, renewable: bool) -> Self {
        let now = Instant::now();
        let (renew_at, expires_at) = if ttl_secs == 0 {
            (None, None)
        } else {
            let ttl = Duration::from_secs(ttl_secs);
            (Some(now + ttl * 2 / 3), Some(now + ttl))
        };
        Self { value: Zeroizing::new(value), renewable, renew_at, expires_at }
    }
}

pub struct Auth {
    cfg: AuthConfig,
    state: tokio::sync::Mutex<Option<Token>>,
}

fn read_secret(file: &PathBuf, what: &str, flag: &str) -> Result<Zeroizing<String>, VaultError> {
    let s = std::fs::read_to_string(file)
        .map_err(|e| VaultError::Auth(format!("{flag} {}: the {what} cannot be read: {e}", file.display())))?;
    let t = s.trim().to_string();
    if t.is_empty() {
        return Err(VaultError::Auth(format!("{flag} {}: the {what} file is empty", file.display())));
    }
    Ok(Zeroizing::new(t))
}

fn login_refused(method: &str, path: &str, e: VaultError, fix: &str) -> VaultError {
    match e {
        VaultError::Status { status, errors, .. } => {
            VaultError::Auth(format!("Vault refused the {method} login at /v1/{path} ({status}: {errors}). {fix}"))
        }
        VaultError::Forbidden { errors, .. } => VaultError::Auth(format!(
            "Vault refused the {method} login at /v1/{path} (403: {errors}). {fix}. Vault also answers 403 when no \
             {method} auth method is mounted at \"{}/\": check `bao auth list` and --vault-auth-mount",
            super::client::mount_of(path)
        )),
        VaultError::MountMissing { mount, .. } => VaultError::Auth(format!(
            "Vault has no auth method mounted at \"{mount}/\" (POST /v1/{path}: no handler for route). Enable it \
             (`bao auth enable -path={} {method}`) or set --vault-auth-mount",
            mount.trim_start_matches("auth/")
        )),
        other => other,
    }
}

impl Auth {
    pub fn new(cfg: AuthConfig) -> Self {
        Self { cfg, state: tokio::sync::Mutex::new(None) }
    }

    /// Can a new token be obtained without the operator (AppRole, JWT)?
    pub fn can_login(&self) -> bool {
        !matches!(&self.cfg, AuthConfig::Token { file: None, .. })
    }

    pub async fn invalidate(&self) {
        *self.state.lock().await = None;
    }

    /// The current token, logging in first if there is none or it has expired.
    pub async fn token(&self, client: &VaultClient) -> Result<Zeroizing<String>, VaultError> {
        let mut st = self.state.lock().await;
        if let Some(t) = st.as_ref() {
            if t.expires_at.is_none_or(|e| Instant::now() < e) {
                return Ok(t.value.clone());
            }
        }
        let t = self.login(client).await?;
        let v = t.value.clone();
        *st = Some(t);
        Ok(v)
    }

    pub async fn renew_due_in(&self) -> Option<Duration> {
        let st = self.state.lock().await;
        st.as_ref().and_then(|t| t.renew_at).map(|r| r.saturating_duration_since(Instant::now()))
    }

    /// Renew the token if due; log in again when renewal is impossible or fails.
    pub async fn maintain(&self, client: &VaultClient) -> Result<(), VaultError> {
        let mut st = self.state.lock().await;
        let r = self.maintain_locked(client, &mut st).await;
        if r.is_err() {
            // Vault is down or refusing: try again in a while rather than at every wake-up.
            if let Some(t) = st.as_mut() {
                t.renew_at = Some(Instant::now() + RETRY);
            }
        }
        r
    }

    async fn maintain_locked(&self, client: &VaultClient, st: &mut Option<Token>) -> Result<(), VaultError> {
        let due = match st.as_ref() {
            None => true,
            Some(t) => t.renew_at.is_some_and(|r| Instant::now() >= r),
        };
        if !due {
            return Ok(());
        }
        if let Some(t) = st.as_ref().filter(|t| t.renewable) {
            let body = json!({});
            match client.call(Method::POST, "auth/token/renew-self", Some(&body), Some(&t.value), "token renewal").await
            {
                Ok(v) => {
                    let ttl = v["auth"]["lease_duration"].as_u64().unwrap_or(0);
                    let renewable = v["auth"]["renewable"].as_bool().unwrap_or(false);
                    // A renewal that grants little (max TTL reached) is followed by a login when possible.
                    if ttl > 5 || !self.can_login() {
                        tracing::info!(ttl_s = ttl, "renewed the Vault token");
                        let value = t.value.clone();
                        *st = Some(Token::new(value.to_string(), ttl, renewable));
                        return Ok(());
                    }
                }
                Err(e) if !self.can_login() => return Err(e),
                Err(e) => tracing::warn!("Vault token renewal failed, logging in again: {e}"),
            }
        }
        if !self.can_login() {
            if let Some(t) = st.as_mut() {
                tracing::warn!(
                    "the Vault token is not renewable and expires in {}s; give meshca a renewable token or use \
                     AppRole/JWT auth",
                    t.expires_at.map(|e| e.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(0)
                );
                t.renew_at = None;
            }
            return Ok(());
        }
        let fresh = self.login(client).await?;
        *st = Some(fresh);
        Ok(())
    }

    async fn login(&self, client: &VaultClient) -> Result<Token, VaultError> {
        match &self.cfg {
            AuthConfig::Token { token, file } => {
                let value = match (token, file) {
                    (_, Some(f)) => read_secret(f, "Vault token", "--vault-token-file")?,
                    (Some(t), None) => t.clone(),
                    (None, None) => {
                        return Err(VaultError::Auth(
                            "no Vault token: set MESHCA_VAULT_TOKEN or --vault-token-file, or choose another \
                             --vault-auth"
                                .into(),
                        ))
                    }
                };
                let v = client
                    .call(Method::GET, "auth/token/lookup-self", None, Some(&value), "token lookup")
                    .await
                    .map_err(|e| match e {
                        VaultError::Forbidden { errors, .. } => VaultError::Auth(format!(
                            "Vault refused the configured token (GET /v1/auth/token/lookup-self: 403 {errors}): it is \
                             invalid, expired or revoked, or lacks the default policy"
                        )),
                        other => other,
                    })?;
                let ttl = v["data"]["ttl"].as_u64().unwrap_or(0);
                let renewable = v["data"]["renewable"].as_bool().unwrap_or(false);
                tracing::info!(ttl_s = ttl, renewable, "authenticated to Vault with a token");
                Ok(Token::new(value.to_string(), ttl, renewable))
            }
            AuthConfig::AppRole { mount, role_id, secret_id, secret_id_file } => {
                let path = format!("auth/{mount}/login");
                let mut body = json!({ "role_id": role_id });
                let secret = match (secret_id_file, secret_id) {
                    (Some(f), _) => Some(read_secret(f, "AppRole secret ID", "--vault-secret-id-file")?),
                    (None, Some(s)) => Some(s.clone()),
                    (None, None) => None,
                };
                if let Some(s) = &secret {
                    body["secret_id"] = Value::String(s.to_string());
                }
                let v =
                    client.call(Method::POST, &path, Some(&body), None, "the AppRole login").await.map_err(|e| {
                        login_refused(
                            "approle",
                            &path,
                            e,
                            "Check --vault-role-id and the secret ID (it may have expired or been used up)",
                        )
                    })?;
                body["secret_id"] = Value::Null;
                Self::from_login(&path, &v, "AppRole")
            }
            AuthConfig::Jwt { kind, mount, role, jwt_file } => {
                let path = format!("auth/{mount}/login");
                let jwt = read_secret(jwt_file, "service-account token", "--vault-jwt-file")?;
                let body = json!({ "role": role, "jwt": jwt.as_str() });
                let v = client.call(Method::POST, &path, Some(&body), None, "the JWT login").await.map_err(|e| {
                    login_refused(
                        kind,
                        &path,
                        e,
                        &format!(
                            "Check --vault-auth-role {role:?} and that the role's bound audiences/subjects match the \
                             token in {}",
                            jwt_file.display()
                        ),
                    )
                })?;
                drop(body);
                Self::from_login(&path, &v, kind)
            }
        }
    }

    fn from_login(path: &str, v: &Value, method: &str) -> Result<Token, VaultError> {
        let token = v["auth"]["client_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
            VaultError::Invalid { path: path.into(), problem: "the login answer carries no auth.client_token".into() }
        })?;
        let ttl = v["auth"]["lease_duration"].as_u64().unwrap_or(0);
        let renewable = v["auth"]["renewable"].as_bool().unwrap_or(false);
        tracing::info!(ttl_s = ttl, renewable, "logged in to Vault with {method}");
        Ok(Token::new(token.to_string(), ttl, renewable))
    }
}
