//! `jwt`: a caller or end-user token (`--token FILE`) against the trusted
//! issuers (`--jwt-issuer ISSUER=SOURCE`, as `meshca serve` takes them).

use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::fetch::explain;
use crate::Context;
use base64::Engine as _;
use meshca_jwt::{JwtError, KeySet, Validation};
use serde_json::Value;

pub const PARSE: CheckDef =
    CheckDef { id: "jwt.well-formed", description: "the token is a well-formed JWT", severity: Severity::Fatal };
pub const ISSUER: CheckDef = CheckDef {
    id: "jwt.issuer-trusted",
    description: "the token's issuer is a trusted issuer",
    severity: Severity::Error,
};
pub const KEYS: CheckDef = CheckDef {
    id: "jwt.jwks-reachable",
    description: "the issuer's keys are reachable (OIDC discovery, JWKS)",
    severity: Severity::Fatal,
};
pub const KID: CheckDef = CheckDef {
    id: "jwt.kid-known",
    description: "the token's key id is published by the issuer",
    severity: Severity::Error,
};
pub const SIGNATURE: CheckDef = CheckDef {
    id: "jwt.signature",
    description: "the signature verifies with the issuer's key",
    severity: Severity::Error,
};
pub const AUDIENCE: CheckDef =
    CheckDef { id: "jwt.audience", description: "the token carries the expected audience", severity: Severity::Error };
pub const EXPIRY: CheckDef = CheckDef {
    id: "jwt.validity",
    description: "the token is not expired and already valid",
    severity: Severity::Error,
};

pub const ALL: [CheckDef; 7] = [PARSE, ISSUER, KEYS, KID, SIGNATURE, AUDIENCE, EXPIRY];

struct Token {
    raw: String,
    kid: Option<String>,
    claims: Value,
}

fn parse(raw: &str) -> Result<Token, String> {
    let raw = raw.trim().to_string();
    let header = meshca_jwt::decode_header(&raw).map_err(|e| e.to_string())?;
    let payload = raw.split('.').nth(1).ok_or("the token has no payload part")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the payload is not base64url: {e}"))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the payload is not JSON: {e}"))?;
    if !claims.is_object() {
        return Err("the payload is not a JSON object".into());
    }
    Ok(Token { raw, kid: header.kid, claims })
}

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    let t = &ctx.targets;
    let Some(path) = &t.token else {
        c.skip_all(&ALL, "no --token given");
        return c.into_results();
    };
    let tok = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot be read: {e}", path.display()))
        .and_then(|s| parse(&s).map_err(|e| format!("{}: {e}", path.display())));
    let tok = match tok {
        Ok(tok) => {
            c.record(&PARSE, Outcome::Ok);
            tok
        }
        Err(e) => {
            c.record(&PARSE, Outcome::fail(e, "the file must hold one compact JWS token (header.payload.signature)"));
            for d in &ALL[1..] {
                c.run(d, || Outcome::Ok);
            }
            return c.into_results();
        }
    };
    let iss = tok.claims["iss"].as_str().unwrap_or("").to_string();
    // The source of the issuer's keys: the configured one, else OIDC discovery.
    let source = t.jwt_issuers.iter().find(|(i, _)| *i == iss).map(|(_, s)| s.clone());
    c.record(&ISSUER, issuer(&iss, &t.jwt_issuers, source.is_some()));
    let keys = keys(ctx, &iss, source.as_deref().unwrap_or("oidc")).await;
    let keys = match keys {
        Ok(k) => {
            c.record(&KEYS, Outcome::Ok);
            k
        }
        Err(o) => {
            c.record(&KEYS, o);
            for d in &ALL[3..] {
                c.run(d, || Outcome::Ok);
            }
            return c.into_results();
        }
    };
    c.run(&KID, || match &tok.kid {
        Some(k) if !keys.contains_kid(k) => Outcome::fail(
            format!("kid {k:?} is not in the issuer's JWKS (it has {:?})", keys.kids()),
            "the issuer rotated its signing key and this token is signed with a key no longer (or not yet) published, \
             or the token comes from another issuer. Get a fresh token, or refresh the JWKS",
        ),
        _ => Outcome::Ok,
    });
    let aud = t.token_audience.clone();
    let result = meshca_jwt::verify(&tok.raw, &keys, &Validation::new(iss.clone(), aud.clone()).with_now(ctx.now));
    c.run(&SIGNATURE, || match &result {
        Err(JwtError::BadSignature) => Outcome::fail(
            "the signature does not verify with the published key",
            "the token was signed by another key than the one published under its kid (a forged token, or a key \
             replaced without a new kid)",
        ),
        Err(e @ (JwtError::UnsupportedAlgorithm(_) | JwtError::UnknownKid(_) | JwtError::Malformed(_))) => {
            Outcome::fail(e.to_string(), "meshca accepts ES256 and RS256 tokens whose kid is in the issuer's JWKS")
        }
        _ => Outcome::Ok,
    });
    c.run(&AUDIENCE, || {
        let auds: Vec<String> = match &tok.claims["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        if auds.contains(&aud) {
            Outcome::Ok
        } else {
            Outcome::fail(
                format!("the token's audience is {auds:?}, expected {aud:?}"),
                format!("request the token for audience {aud:?} (projected token audience), or set --token-audience to what the verifier expects"),
            )
        }
    });
    c.run(&EXPIRY, || expiry(&tok.claims, crate::certs::unix(ctx.now)));
    c.into_results()
}

fn issuer(iss: &str, trusted: &[(String, String)], known: bool) -> Outcome {
    if iss.is_empty() {
        return Outcome::fail(
            "the token has no iss claim",
            "every verifier needs iss to pick the keys; issue a token with iss",
        );
    }
    if trusted.is_empty() || known {
        return Outcome::Ok;
    }
    let list: Vec<&str> = trusted.iter().map(|(i, _)| i.as_str()).collect();
    Outcome::fail(
        format!("the token's issuer {iss:?} is not among the trusted issuers {list:?}"),
        "the verifier rejects it (\"Jwt issuer is not configured\"). Add --jwt-issuer ISSUER=SOURCE for it (exact \
         string match, including a trailing slash), or use a token from a trusted issuer",
    )
}

async fn keys(ctx: &Context, iss: &str, source: &str) -> Result<KeySet, Outcome> {
    let fetch_hint = |e: &str| format!("{}. The JWKS must be reachable from the verifier", explain(e));
    let jwks_url = if source == "oidc" {
        if !(iss.starts_with("https://") || iss.starts_with("http://")) {
            return Err(Outcome::fail(
                format!("the issuer {iss:?} is not a URL and no JWKS (jwksUri) is configured for it"),
                "keys are found by OIDC discovery at <issuer>/.well-known/openid-configuration only when the issuer is \
                 a URL. Configure the issuer's JWKS explicitly: --jwt-issuer 'ISSUER=https://.../jwks' (jwksUri) or a \
                 JWKS file",
            ));
        }
        let url = format!("{}/.well-known/openid-configuration", iss.trim_end_matches('/'));
        let doc = ctx.http.get_json(&url).await.map_err(|e| {
            Outcome::fail(
                format!("OIDC discovery failed: {e}"),
                format!("{}; <issuer>/.well-known/openid-configuration must be served", fetch_hint(&e)),
            )
        })?;
        if doc["issuer"].as_str().is_some_and(|i| i != iss) {
            return Err(Outcome::fail(
                format!("the discovery document at {url} names issuer {:?}, the token {iss:?}", doc["issuer"]),
                "the issuer string must match exactly (a trailing slash counts)",
            ));
        }
        doc["jwks_uri"].as_str().map(str::to_string).ok_or_else(|| {
            Outcome::fail(format!("the discovery document at {url} has no jwks_uri"), "publish jwks_uri in it")
        })?
    } else if source.starts_with("http://") || source.starts_with("https://") {
        source.to_string()
    } else {
        let bytes = std::fs::read(source).map_err(|e| {
            Outcome::fail(format!("the JWKS file {source} cannot be read: {e}"), "fix the path in --jwt-issuer")
        })?;
        return KeySet::from_jwks_json(&bytes).map_err(|e| {
            Outcome::fail(format!("{source}: {e}"), "the file must be a JWKS document ({\"keys\": [...]})")
        });
    };
    let body = ctx
        .http
        .get_ok(&jwks_url)
        .await
        .map_err(|e| Outcome::fail(format!("the JWKS is unreachable: {e}"), fetch_hint(&e)))?;
    KeySet::from_jwks_json(body.as_bytes()).map_err(|e| {
        Outcome::fail(format!("{jwks_url}: {e}"), "the URL must serve a JWKS document ({\"keys\": [...]})")
    })
}

fn expiry(claims: &Value, now: i64) -> Outcome {
    let leeway = meshca_jwt::DEFAULT_LEEWAY.as_secs() as i64;
    match claims["exp"].as_f64().map(|x| x as i64) {
        None => return Outcome::fail("the token has no exp claim", "meshca requires an expiry; issue tokens with exp"),
        Some(exp) if now > exp + leeway => return Outcome::fail(
            format!("the token expired {} ago (exp {exp})", crate::certs::human_secs(now - exp)),
            "an expired token is rejected (Jwt is expired). Get a fresh token; projected tokens are refreshed by the \
                 kubelet, a copied token is not",
        ),
        _ => {}
    }
    if let Some(nbf) = claims["nbf"].as_f64().map(|x| x as i64) {
        if now + leeway < nbf {
            return Outcome::fail(
                format!("the token is not valid for another {} (nbf {nbf})", crate::certs::human_secs(nbf - now)),
                "clock skew between the issuer and this host; fix time synchronisation",
            );
        }
    }
    Outcome::Ok
}
