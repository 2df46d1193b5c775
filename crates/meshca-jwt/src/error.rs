//! The crate's error type.

/// Everything that can go wrong while parsing, verifying or signing a token.
///
/// Messages never contain the token. Attacker-controlled fragments that are
/// carried (the `alg` name, the `kid`) are either length-limited and
/// sanitized ([`JwtError::UnsupportedAlgorithm`]) or escaped when displayed
/// ([`JwtError::UnknownKid`]).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The token (or a key set, or a header/claim) is structurally invalid:
    /// wrong number of parts, bad base64url, not a JSON object, over the
    /// length cap, a claim of the wrong JSON type, ...
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The `alg` is not ES256/RS256 (`none`, `HS256`, `PS256`, ...), or it
    /// does not match the type of the selected key.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// No key in the key set matches the token's `kid` (`None` when the
    /// token has no `kid` and no single key of the right type exists).
    #[error("unknown key id {}", match .0 { Some(k) => sanitize(k), None => "(none: the token has no kid)".to_string() })]
    UnknownKid(Option<String>),
    /// The signature does not verify under the selected key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` (plus leeway) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is absent or does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is absent or not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim is absent.
    #[error("missing claim {0:?}")]
    MissingClaim(&'static str),
    /// A key (JWK or PKCS#8) is invalid or unsupported.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Signing failed, or the claims cannot be signed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Maximum number of characters of an attacker-supplied string that is
/// copied into an error.
const MAX_ECHO: usize = 32;

/// Makes an attacker-controlled name safe to embed in an error message:
/// printable ASCII only and at most [`MAX_ECHO`] characters.
pub(crate) fn sanitize(name: &str) -> String {
    let printable = name.bytes().all(|b| b.is_ascii_graphic());
    if printable && !name.is_empty() && name.len() <= MAX_ECHO {
        name.to_string()
    } else {
        let mut out: String = name.chars().take(MAX_ECHO).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
        out.push_str("...");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_short_names_and_truncates_long_ones() {
        assert_eq!(sanitize("HS256"), "HS256");
        assert_eq!(sanitize("a\nb"), "a?b...");
        assert_eq!(sanitize(&"x".repeat(100)), format!("{}...", "x".repeat(32)));
        assert_eq!(sanitize(""), "...");
    }
}
