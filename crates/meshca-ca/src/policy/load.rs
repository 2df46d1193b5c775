//! Loading `--policy-dir`: every policy file parsed and validated with
//! `meshca-policy`, the whole set or nothing.

use super::files;
use meshca_policy::model::{Object, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Errors quoted in one refusal (the count of the rest is added).
const SHOWN_ERRORS: usize = 20;

/// One object as served to agents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServedObject {
    /// `file.yaml:12`, the file relative to the policy directory.
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The parsed object as Kubernetes JSON.
    pub json: String,
    /// JWKS this object needs fetched: `jwksUri`, or the issuer when only
    /// the issuer is given (OIDC discovery). Inline `jwks` needs nothing.
    pub jwks_keys: Vec<JwksKey>,
}

/// Where the keys of one jwtRule come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct JwksKey {
    /// The key of `PolicyUpdate.jwks`: the jwksUri, or the issuer.
    pub key: String,
    pub issuer: String,
    /// True when `key` is an issuer to discover (`/.well-known/openid-configuration`).
    pub discovery: bool,
}

fn jwks_keys(o: &Object) -> Vec<JwksKey> {
    let Spec::RequestAuthentication(ra) = &o.spec else { return Vec::new() };
    ra.jwt_rules
        .iter()
        .filter(|r| r.jwks.is_empty())
        .map(|r| {
            if r.jwks_uri.is_empty() {
                JwksKey { key: r.issuer.clone(), issuer: r.issuer.clone(), discovery: true }
            } else {
                JwksKey { key: r.jwks_uri.clone(), issuer: r.issuer.clone(), discovery: false }
            }
        })
        .collect()
}

/// Load and validate every policy file under `dir`. `Err` is the refusal,
/// one `file:line: field: error` a line, naming files relative to `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<ServedObject>, String> {
    let paths = files::policy_files(&[dir.to_path_buf()]).map_err(|e| e.to_string())?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for p in &paths {
        let name = p.strip_prefix(dir).unwrap_or(p).display().to_string();
        let text = files::read_text(p).map_err(|e| e.to_string())?;
        match meshca_policy::load::load_str(&name, &text) {
            Ok(o) => objects.extend(o),
            Err(e) => errors.extend(e.iter().map(ToString::to_string)),
        }
    }
    let mut seen = BTreeMap::new();
    for o in &objects {
        let id = (o.kind(), o.namespace().to_string(), o.meta.name.clone());
        if let Some(first) = seen.insert(id, o.source.to_string()) {
            errors.push(format!(
                "{}: {} {} is defined again (first at {first}); names must be unique per kind and namespace",
                o.source,
                o.kind(),
                o.display_name()
            ));
        }
    }
    if !errors.is_empty() {
        let more = errors.len().saturating_sub(SHOWN_ERRORS);
        errors.truncate(SHOWN_ERRORS);
        if more > 0 {
            errors.push(format!("... and {more} more error(s)"));
        }
        return Err(errors.join("\n"));
    }
    Ok(objects
        .iter()
        .map(|o| ServedObject {
            source: o.source.to_string(),
            kind: o.kind().to_string(),
            namespace: o.namespace().to_string(),
            name: o.meta.name.clone(),
            json: o.to_json().to_string(),
            jwks_keys: jwks_keys(o),
        })
        .collect())
}

/// Every JWKS key the objects need, once.
pub fn needed_keys<'a>(objects: impl Iterator<Item = &'a ServedObject>) -> BTreeSet<JwksKey> {
    objects.flat_map(|o| o.jwks_keys.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RA: &str = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: a\nspec:\n  jwtRules:\n  - issuer: https://idp.example\n  - issuer: https://other.example\n    jwksUri: https://other.example/keys\n  - issuer: inline\n    jwks: '{\"keys\":[]}'\n";

    #[test]
    fn a_broken_file_refuses_the_whole_set_with_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ra.yaml"), RA).unwrap();
        let objs = load_dir(d.path()).unwrap();
        assert_eq!(objs.len(), 1);
        let keys: Vec<String> = needed_keys(objs.iter()).into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["https://idp.example", "https://other.example/keys"]);
        std::fs::write(
            d.path().join("bad.yaml"),
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\nspec:\n  action: ALOW\n",
        )
        .unwrap();
        let err = load_dir(d.path()).unwrap_err();
        assert!(err.starts_with("bad.yaml:6: spec.action"), "{err}");
        std::fs::write(d.path().join("bad.yaml"), RA).unwrap();
        assert!(load_dir(d.path()).unwrap_err().contains("defined again"));
    }
}
