//! `vault`: the Vault/OpenBao CA source, with the flags of `meshca serve`:
//! reachable and unsealed, the token valid, each path's capability, and the
//! "Vault as the Istio CA" layout (seed 003) complete.

use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::fetch::{error_chain, explain, Http};
use crate::{Context, VaultTarget};
use serde_json::{json, Value};

pub const REACHABLE: CheckDef = CheckDef {
    id: "vault.reachable",
    description: "Vault is reachable, initialized and unsealed",
    severity: Severity::Fatal,
};
pub const TOKEN: CheckDef = CheckDef {
    id: "vault.token",
    description: "the Vault token is valid and not about to expire",
    severity: Severity::Fatal,
};
pub const CAPABILITIES: CheckDef = CheckDef {
    id: "vault.capabilities",
    description: "the token's policies grant every path meshca uses",
    severity: Severity::Error,
};
pub const LAYOUT: CheckDef = CheckDef {
    id: "vault.layout",
    description: "the CA layout in Vault is complete (mounts, certificates, key)",
    severity: Severity::Error,
};

pub const ALL: [CheckDef; 4] = [REACHABLE, TOKEN, CAPABILITIES, LAYOUT];

struct Client {
    http: Http,
    addr: String,
    namespace: Option<String>,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = self.http.client().request(method.clone(), &url).header("X-Vault-Request", "true");
        if let Some(t) = self.http.left() {
            req = req.timeout(t);
        }
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {url}: {}", error_chain(&e)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    let Some(v) = ctx.targets.vault.clone() else {
        c.skip_all(&ALL, "no --vault-addr given");
        return c.into_results();
    };
    let http = match &v.ca_file {
        None => Ok(ctx.http.clone()),
        Some(f) => std::fs::read(f).map_err(|e| format!("--vault-ca-file {}: {e}", f.display())).and_then(|pem| {
            Http::with_roots(ctx.targets.timeout, &pem)
                .map(|h| h.until(ctx.deadline))
                .map_err(|e| format!("--vault-ca-file {}: {e}", f.display()))
        }),
    };
    let http = match http {
        Ok(h) => h,
        Err(e) => {
            c.record(&REACHABLE, Outcome::fail(e, "give --vault-ca-file the PEM CA that signed Vault's certificate"));
            for d in &ALL[1..] {
                c.run(d, || Outcome::Ok);
            }
            return c.into_results();
        }
    };
    let client = Client { http, addr: v.addr.trim_end_matches('/').to_string(), namespace: v.namespace.clone() };
    c.record(&REACHABLE, health(&client).await);
    if c.blocked() {
        for d in &ALL[1..] {
            c.run(d, || Outcome::Ok);
        }
        return c.into_results();
    }
    let token = match login(&client, &v).await {
        Ok(t) => t,
        Err(o) => {
            c.record(&TOKEN, o);
            for d in &ALL[2..] {
                c.run(d, || Outcome::Ok);
            }
            return c.into_results();
        }
    };
    c.record(&TOKEN, lookup_self(&client, &token).await);
    let caps = if c.blocked() { Outcome::Ok } else { capabilities(&client, &token, &v).await };
    c.run(&CAPABILITIES, || caps);
    let layout = if c.blocked() { Outcome::Ok } else { layout(&client, &token, &v).await };
    c.run(&LAYOUT, || layout);
    c.into_results()
}

async fn health(client: &Client) -> Outcome {
    let addr = &client.addr;
    match client.call(reqwest::Method::GET, "sys/health?standbyok=true&perfstandbyok=true", None, None).await {
        Err(e) => Outcome::fail(
            format!("Vault at {addr} is unreachable: {e}"),
            format!("{}. Check --vault-addr, that Vault runs, and --vault-ca-file for HTTPS", explain(&e)),
        ),
        Ok((_, v)) if v["sealed"] == json!(true) => Outcome::fail(
            format!("Vault at {addr} is sealed"),
            "a sealed Vault answers every read with 503, so the CA cannot load or rotate its material. Unseal it \
             (bao operator unseal); meshca resumes by itself",
        ),
        Ok((_, v)) if v["initialized"] == json!(false) => Outcome::fail(
            format!("Vault at {addr} is not initialized"),
            "it holds no CA and no secrets yet. Initialize it (bao operator init) and set up the PKI layout",
        ),
        Ok((200 | 429 | 472 | 473, _)) => Outcome::Ok,
        Ok((status, v)) => Outcome::fail(
            format!("Vault at {addr} answered sys/health with {status}: {}", errors(&v)),
            "Vault is not serving requests; check its log",
        ),
    }
}

fn read_file(p: &std::path::Path) -> Result<String, Outcome> {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| {
        Outcome::fail(format!("{}: cannot be read: {e}", p.display()), "fix the path of the credential file")
    })
}

async fn login(client: &Client, v: &VaultTarget) -> Result<String, Outcome> {
    let (mount, body) = match v.auth.as_str() {
        "approle" => {
            let sid = match &v.secret_id_file {
                Some(f) => read_file(f)?,
                None => String::new(),
            };
            (v.auth_mount.clone().unwrap_or("approle".into()), json!({"role_id": v.role_id, "secret_id": sid}))
        }
        kind @ ("jwt" | "kubernetes") => {
            let f = v.jwt_file.clone().unwrap_or("/var/run/secrets/kubernetes.io/serviceaccount/token".into());
            (v.auth_mount.clone().unwrap_or(kind.into()), json!({"role": v.auth_role, "jwt": read_file(&f)?}))
        }
        _ => {
            if let Some(t) = &v.token {
                return Ok(t.clone());
            }
            return match &v.token_file {
                Some(f) => read_file(f),
                None => Err(Outcome::fail(
                    "no Vault token given",
                    "give MESHCA_VAULT_TOKEN, --vault-token-file, or AppRole/JWT credentials as for meshca serve",
                )),
            };
        }
    };
    let path = format!("auth/{mount}/login");
    match client.call(reqwest::Method::POST, &path, None, Some(&body)).await {
        Ok((200, r)) => r["auth"]["client_token"].as_str().map(str::to_string).ok_or_else(|| {
            Outcome::fail(format!("{path}: the answer has no auth.client_token"), "check the auth method")
        }),
        Ok((status, r)) => Err(Outcome::fail(
            format!("login at /v1/{path} refused ({status}: {})", errors(&r)),
            format!(
                "the {} credentials are wrong, expired, or the role does not exist / is not bound to this identity \
                 (role id / secret id, or bound service account and namespace)",
                v.auth
            ),
        )),
        Err(e) => Err(Outcome::fail(e, "Vault stopped answering")),
    }
}

async fn lookup_self(client: &Client, token: &str) -> Outcome {
    match client.call(reqwest::Method::GET, "auth/token/lookup-self", Some(token), None).await {
        Ok((200, v)) => {
            let ttl = v["data"]["ttl"].as_i64().unwrap_or(0);
            if ttl > 0 && ttl < 600 {
                return Outcome::warn(
                    format!("the token expires in {ttl}s (renewable: {})", v["data"]["renewable"]),
                    "renew it or use a login method (AppRole, JWT) that meshca renews by itself",
                );
            }
            Outcome::Ok
        }
        Ok((403, v)) => Outcome::fail(
            format!("Vault refused the token (403: {})", errors(&v)),
            "the token is invalid, expired or revoked. Issue a new one (or use AppRole/JWT login so meshca renews)",
        ),
        Ok((status, v)) => {
            Outcome::fail(format!("auth/token/lookup-self: {status} {}", errors(&v)), "check Vault's log")
        }
        Err(e) => Outcome::fail(e, "Vault stopped answering"),
    }
}

/// The paths meshca reads or writes in this mode, with the capability each needs.
fn needed(v: &VaultTarget) -> Vec<(String, &'static str)> {
    let mut n = Vec::new();
    if v.mode == "vault-kv" {
        n.push((v.cert_path.clone(), "read"));
        n.push((v.chain_path.clone(), "read"));
        n.push((v.root_path.clone().unwrap_or("pki/cert/ca".into()), "read"));
        n.push((v.key_path.clone(), "read"));
    } else {
        n.push((format!("{}/root/sign-intermediate", v.pki_mount), "update"));
        if let Some(r) = &v.root_path {
            n.push((r.clone(), "read"));
        }
    }
    n
}

/// KV v2 keeps data under `<mount>/data/`: `kv/istioca` -> `kv/data/istioca`.
fn kv2(path: &str) -> String {
    match path.split_once('/') {
        Some((m, rest)) => format!("{m}/data/{rest}"),
        None => path.to_string(),
    }
}

async fn capabilities(client: &Client, token: &str, v: &VaultTarget) -> Outcome {
    let need = needed(v);
    let mut paths: Vec<String> = need.iter().map(|(p, _)| p.clone()).collect();
    paths.push(kv2(&v.key_path));
    let r =
        client.call(reqwest::Method::POST, "sys/capabilities-self", Some(token), Some(&json!({"paths": paths}))).await;
    let caps = match r {
        Ok((200, c)) => c,
        Ok((status, b)) => {
            return Outcome::fail(
                format!("sys/capabilities-self: {status} {}", errors(&b)),
                "check the token and Vault's log",
            )
        }
        Err(e) => return Outcome::fail(e, "Vault stopped answering"),
    };
    let has = |p: &str, cap: &str| {
        let list = if caps["data"][p].is_array() { &caps["data"][p] } else { &caps[p] };
        list.as_array().is_some_and(|a| a.iter().any(|x| x == cap || x == "root" || x == "sudo" && cap == "read"))
    };
    let mut missing = Vec::new();
    for (p, cap) in &need {
        let ok = has(p, cap) || (p == &v.key_path && has(&kv2(p), cap));
        if !ok {
            missing.push((p.clone(), *cap));
        }
    }
    if missing.is_empty() {
        return Outcome::Ok;
    }
    let what: Vec<String> = missing.iter().map(|(p, c)| format!("\"{c}\" on \"{p}\"")).collect();
    let policy: Vec<String> =
        missing.iter().map(|(p, c)| format!("path \"{p}\" {{ capabilities = [\"{c}\"] }}")).collect();
    Outcome::fail(
        format!("access denied: the token lacks {}", what.join(", ")),
        format!(
            "Vault answers these requests with 403 permission denied: the token's policy does not cover the path. Add \
             to its policy: {}",
            policy.join(" ")
        ),
    )
}

async fn layout(client: &Client, token: &str, v: &VaultTarget) -> Outcome {
    let mut problems = Vec::new();
    let mut items: Vec<(String, String)> = Vec::new();
    if v.mode == "vault-kv" {
        items.push((v.cert_path.clone(), "the signing certificate (--vault-cert-path)".into()));
        items.push((v.chain_path.clone(), "the CA chain (--vault-chain-path)".into()));
        items.push((
            v.root_path.clone().unwrap_or("pki/cert/ca".into()),
            "the root certificate (--vault-root-path)".into(),
        ));
    } else {
        items.push((
            format!("{}/cert/ca", v.pki_mount),
            "the CA of the PKI mount that signs meshca's intermediate".into(),
        ));
    }
    for (path, what) in &items {
        if let Some(p) = read_problem(client, token, path, what).await {
            problems.push(p);
        }
    }
    if v.mode == "vault-kv" {
        let what = "the KV secret holding the CA key (--vault-key-path)";
        let mut r = client.call(reqwest::Method::GET, &v.key_path, Some(token), None).await;
        let mut path = v.key_path.clone();
        if matches!(&r, Ok((404, b)) if b["warnings"].to_string().contains("versioned")) {
            path = kv2(&v.key_path);
            r = client.call(reqwest::Method::GET, &path, Some(token), None).await;
        }
        match r {
            Ok((200, b)) => {
                let d = if b["data"]["data"].is_object() { &b["data"]["data"] } else { &b["data"] };
                match d[&v.key_field].as_str() {
                    Some(k) if k.contains("PRIVATE KEY") => {}
                    Some(_) => problems.push(format!("field \"{}\" of {path} is not a PEM private key", v.key_field)),
                    None => problems.push(format!(
                        "{path} has no field \"{}\" (fields: {:?})",
                        v.key_field,
                        d.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
                    )),
                }
            }
            Ok((s, b)) => problems.push(describe_status(&path, what, s, &b)),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!("missing secret objects: {}", problems.join("; ")),
        "the layout of \"Vault as the Istio CA\" is incomplete: enable the missing mount (bao secrets enable -path=MOUNT \
         pki|kv), set the signed intermediate (intermediate/set-signed) and store the key (bao kv put kv/istioca \
         ca-key.pem=@key.pem), or point the --vault-*-path flags at what exists",
    )
}

fn describe_status(path: &str, what: &str, status: u16, body: &Value) -> String {
    let e = errors(body);
    match status {
        404 if e.contains("no handler") => {
            format!(
                "nothing is mounted at \"{}/\" ({what}, /v1/{path}: no handler for route)",
                path.split('/').next().unwrap_or(path)
            )
        }
        404 => format!("{what} does not exist at \"{path}\" (404)"),
        403 => format!("{what} at \"{path}\": permission denied (403)"),
        400 if e.contains("issuer") => format!("{what}: the PKI mount at \"{path}\" has no CA yet ({e})"),
        s => format!("{what} at \"{path}\": {s} {e}"),
    }
}

async fn read_problem(client: &Client, token: &str, path: &str, what: &str) -> Option<String> {
    match client.call(reqwest::Method::GET, path, Some(token), None).await {
        Ok((200, b)) => {
            let d = &b["data"];
            let pem = d["certificate"].as_str().or(d["ca_chain"].as_str()).unwrap_or("");
            (!pem.contains("BEGIN CERTIFICATE")).then(|| format!("{what} at \"{path}\" holds no PEM certificate"))
        }
        Ok((s, b)) => Some(describe_status(path, what, s, &b)),
        Err(e) => Some(e),
    }
}
