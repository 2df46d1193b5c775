//! Token verification.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::claims::numeric_date;
use crate::token::{b64_decode, malformed, parse_header, parse_object, split};
use crate::{Algorithm, Claims, JwtError, KeySet};

/// Default clock-skew allowance for `exp` and `nbf`: 60 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Length of an ES256 signature: `r || s`, 32 bytes each.
const ES256_SIGNATURE_LEN: usize = 64;

/// What a token must satisfy besides a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Required exact value of `iss`.
    pub issuer: String,
    /// Value that `aud` (a string or an array of strings) must contain.
    pub audience: String,
    /// Clock-skew allowance applied to `exp` and `nbf`.
    pub leeway: Duration,
    /// The time to validate against. [`Validation::new`] sets it to the
    /// current time, so build a fresh `Validation` (or call
    /// [`Validation::with_now`]) for each verification.
    pub now: SystemTime,
}

impl Validation {
    /// Validation for `issuer` and `audience` with the default leeway
    /// ([`DEFAULT_LEEWAY`]) at the current time.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Validation {
        Validation { issuer: issuer.into(), audience: audience.into(), leeway: DEFAULT_LEEWAY, now: SystemTime::now() }
    }

    /// Replaces the validation time.
    #[must_use]
    pub fn with_now(mut self, now: SystemTime) -> Validation {
        self.now = now;
        self
    }

    /// Replaces the leeway.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Validation {
        self.leeway = leeway;
        self
    }
}

/// Verifies a compact JWS token and returns its claims.
///
/// In order:
///
/// 1. at most [`crate::MAX_TOKEN_LEN`] bytes, exactly three non-empty
///    unpadded base64url parts, a JSON-object header with unique member
///    names and no `crit` — else [`JwtError::Malformed`];
/// 2. `alg` is `ES256` or `RS256` — else [`JwtError::UnsupportedAlgorithm`]
///    (before any key lookup);
/// 3. the key is found by `kid`, or, for a token without `kid`, is the only
///    key of the algorithm's type — else [`JwtError::UnknownKid`]; its type
///    must match `alg` — else [`JwtError::UnsupportedAlgorithm`];
/// 4. the signature verifies (ES256: 64-byte `r || s`; RS256: PKCS#1 v1.5,
///    2048..=8192-bit key) — else [`JwtError::BadSignature`];
/// 5. the payload is a JSON object with unique member names — else
///    [`JwtError::Malformed`];
/// 6. `iss` equals `v.issuer` — else [`JwtError::WrongIssuer`];
/// 7. `aud` (string or array of strings) contains `v.audience` — else
///    [`JwtError::WrongAudience`];
/// 8. `exp` is present — else [`JwtError::MissingClaim`]`("exp")` — and
///    `now <= exp + leeway` — else [`JwtError::Expired`];
/// 9. if `nbf` is present, `now + leeway >= nbf` — else
///    [`JwtError::NotYetValid`].
///
/// Registered claims of the wrong JSON type (`iss`/`aud` not strings, `exp`,
/// `nbf` or `iat` not numbers) are [`JwtError::Malformed`]. Dates may be
/// integers or floats.
///
/// # Errors
/// As listed above.
pub fn verify(token: &str, keys: &KeySet, v: &Validation) -> Result<Claims, JwtError> {
    let parts = split(token)?;
    let header = parse_header(&parts)?;
    let alg = header.algorithm()?;
    let payload = b64_decode(parts.payload, "payload")?;
    let signature = b64_decode(parts.signature, "signature")?;

    let entry = keys.select(header.kid.as_deref(), alg)?;
    if alg == Algorithm::ES256 && signature.len() != ES256_SIGNATURE_LEN {
        return Err(JwtError::BadSignature);
    }
    entry.key.verify_sig(parts.signing_input.as_bytes(), &signature).map_err(|_| JwtError::BadSignature)?;

    let claims = parse_object(&payload, "payload")?;
    check_claims(&claims, v)?;
    Ok(Claims::from_map(claims))
}

fn check_claims(claims: &Map<String, Value>, v: &Validation) -> Result<(), JwtError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == v.issuer => {}
        Some(Value::String(_)) | None => return Err(JwtError::WrongIssuer),
        Some(_) => return Err(malformed("claim \"iss\" is not a string")),
    }

    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == v.audience,
        Some(Value::Array(auds)) => {
            let mut found = false;
            for aud in auds {
                let aud = aud.as_str().ok_or_else(|| malformed("claim \"aud\" has a non-string element"))?;
                found |= aud == v.audience;
            }
            found
        }
        None => false,
        Some(_) => return Err(malformed("claim \"aud\" is not a string or array")),
    };
    if !audience_ok {
        return Err(JwtError::WrongAudience);
    }

    let now = seconds_since_epoch(v.now);
    let leeway = v.leeway.as_secs_f64();
    let exp = date_claim(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now > exp + leeway {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = date_claim(claims, "nbf")? {
        if now + leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    date_claim(claims, "iat")?;
    Ok(())
}

/// A NumericDate claim: `Ok(None)` if absent, `Malformed` if not a number.
fn date_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => numeric_date(value)
            .map(Some)
            .ok_or_else(|| JwtError::Malformed(format!("claim \"{name}\" is not a number"))),
    }
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}
