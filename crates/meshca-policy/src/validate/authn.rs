//! RequestAuthentication and PeerAuthentication rules.

use super::{non_empty, selector, target_refs, Out};
use crate::model::{PeerAuthentication, RequestAuthentication};

pub(super) fn request_authentication(p: &RequestAuthentication, out: &mut Out) {
    selector(p.selector.as_ref(), out);
    target_refs(p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs, out);
    for (i, r) in p.jwt_rules.iter().enumerate() {
        let rp = format!("spec.jwtRules[{i}]");
        if r.issuer.is_empty() && r.jwks_uri.is_empty() {
            out.err(&rp, "issuer or jwksUri must be set");
        }
        non_empty(&r.audiences, "audiences", &format!("{rp}.audiences"), out);
        if !r.jwks_uri.is_empty() {
            let ok = (r.jwks_uri.starts_with("http://") && r.jwks_uri.len() > 7)
                || (r.jwks_uri.starts_with("https://") && r.jwks_uri.len() > 8);
            if !ok {
                out.err(
                    format!("{rp}.jwksUri"),
                    format!("invalid jwksUri {:?}: scheme must be http or https", r.jwks_uri),
                );
            }
            if r.jwks_uri.len() > 2048 {
                out.err(format!("{rp}.jwksUri"), "jwksUri must be at most 2048 characters");
            }
            if !r.jwks.is_empty() {
                out.err(&rp, "only one of jwks or jwksUri can be set");
            }
        }
        if !r.jwks.is_empty() {
            match serde_json::from_str::<serde_json::Value>(&r.jwks) {
                Ok(v) if v.get("keys").is_some_and(serde_json::Value::is_array) => {
                    for (k, key) in v["keys"].as_array().into_iter().flatten().enumerate() {
                        if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|f| key.get(f).is_some()) {
                            out.warn(
                                format!("{rp}.jwks"),
                                format!("jwks key at index {k} contains private key material"),
                            );
                        }
                    }
                }
                _ => out.err(
                    format!("{rp}.jwks"),
                    "jwks parse error: not a JSON Web Key Set (an object with a `keys` list)",
                ),
            }
        }
        for (h, header) in r.from_headers.iter().enumerate() {
            if header.name.is_empty() {
                out.err(format!("{rp}.fromHeaders[{h}].name"), "location header name must be non-empty");
            }
        }
        non_empty(&r.from_params, "fromParams", &format!("{rp}.fromParams"), out);
        non_empty(&r.from_cookies, "fromCookies", &format!("{rp}.fromCookies"), out);
        for (c, cth) in r.output_claim_to_headers.iter().enumerate() {
            let cp = format!("{rp}.outputClaimToHeaders[{c}]");
            if cth.claim.is_empty() {
                out.err(format!("{cp}.claim"), "outputClaimToHeaders claim must be non-empty");
            }
            let valid =
                !cth.header.is_empty() && cth.header.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !valid {
                out.err(
                    format!("{cp}.header"),
                    format!("outputClaimToHeaders header {:?} is not a valid header name", cth.header),
                );
            }
        }
        if let Some(t) = &r.timeout {
            if parse_duration_ms(t).is_none() {
                out.err(format!("{rp}.timeout"), format!("invalid duration {t:?}"));
            }
        }
    }
}

/// Parses a protobuf/Go duration (`5s`, `0.002s`, `100ms`, `1m30s`) to milliseconds (fractional).
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total)
}

pub(super) fn peer_authentication(p: &PeerAuthentication, out: &mut Out) {
    selector(p.selector.as_ref(), out);
    if let Some(ports) = &p.port_level_mtls {
        if p.selector.is_none() {
            out.err("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS");
        }
        if ports.is_empty() {
            out.err("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element");
        }
        for port in ports.keys() {
            if *port == 0 || *port > 65535 {
                out.err(format!("spec.portLevelMtls[{port}]"), format!("port must be in range 1..65535, found {port}"));
            }
        }
    }
}
