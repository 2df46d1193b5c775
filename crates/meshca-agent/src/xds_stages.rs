//! Staged policy changes. Envoy applies the ECDS resources of one response
//! one filter at a time, so a request can meet a new ALLOW filter with the old
//! DENY filter (and be let through by neither version). A change that
//! modifies a DENY slot is therefore sent in three steps, each waiting for
//! Envoy's ACK of the previous one:
//!
//! 1. the old set, every changed DENY slot holding old ∪ new DENY policies;
//! 2. the new set, the DENY slots still old ∪ new;
//! 3. the new set.
//!
//! Each step changes either DENY slots only or everything but them, and in
//! every intermediate state a request is decided as the old or the new
//! version decides it (a request one of them denies through a DENY rule is
//! denied; otherwise the ALLOW side is either all old or all new).

use crate::xds::EcdsSnapshot;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::rbac::v3::Rbac as RbacRules;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Suffix of the ECDS slots holding DENY policies (see meshca-envoy's slots).
const DENY_SUFFIX: &str = ".rbac_deny";

/// Old ∪ new DENY policies; `None` when either is not an RBAC config this module knows.
fn union_rules(old: Option<RbacRules>, new: Option<RbacRules>) -> Option<RbacRules> {
    match (old, new) {
        (None, n) => n,
        (o, None) => o,
        (Some(o), Some(mut n)) => {
            for (name, p) in o.policies {
                if n.policies.get(&name) != Some(&p) {
                    n.policies.insert(format!("{name} (previous)"), p);
                }
            }
            Some(n)
        }
    }
}

fn union(old: &TypedExtensionConfig, new: &TypedExtensionConfig) -> Option<TypedExtensionConfig> {
    let (o, n) = (old.typed_config.as_ref()?, new.typed_config.as_ref()?);
    if o.type_url != n.type_url {
        return None;
    }
    let value = if n.type_url == HttpRbac::type_url() {
        let (o, mut n) = (HttpRbac::decode(o.value.as_slice()).ok()?, HttpRbac::decode(n.value.as_slice()).ok()?);
        n.rules = union_rules(o.rules, n.rules.take());
        n.encode_to_vec()
    } else if n.type_url == NetworkRbac::type_url() {
        let (o, mut n) = (NetworkRbac::decode(o.value.as_slice()).ok()?, NetworkRbac::decode(n.value.as_slice()).ok()?);
        n.rules = union_rules(o.rules, n.rules.take());
        n.encode_to_vec()
    } else {
        return None;
    };
    Some(TypedExtensionConfig {
        name: new.name.clone(),
        typed_config: Some(Any { type_url: n.type_url.clone(), value }),
    })
}

/// The snapshots to send in order to go from `old` to `new` (the last is `new`).
pub fn stages(old: Option<&EcdsSnapshot>, new: &EcdsSnapshot) -> Vec<EcdsSnapshot> {
    let Some(old) = old else { return vec![new.clone()] };
    let mut merged = Vec::new();
    for (name, n) in &new.resources {
        let Some(o) = old.resources.get(name) else { continue };
        if name.ends_with(DENY_SUFFIX) && o != n {
            match union(o, n) {
                Some(u) => merged.push((name.clone(), u)),
                None => return vec![new.clone()],
            }
        }
    }
    if merged.is_empty() {
        return vec![new.clone()];
    }
    let mut first = old.clone();
    let mut second = new.clone();
    for (name, u) in merged {
        first.resources.insert(name.clone(), u.clone());
        second.resources.insert(name, u);
    }
    first.version = format!("{}~deny-union-1", new.version);
    second.version = format!("{}~deny-union-2", new.version);
    vec![first, second, new.clone()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::rbac::v3::Policy;
    use std::collections::BTreeMap;

    fn deny(names: &[&str]) -> TypedExtensionConfig {
        let policies = names.iter().map(|n| (n.to_string(), Policy::default())).collect();
        let rbac =
            HttpRbac { rules: Some(RbacRules { action: 1, policies, ..Default::default() }), ..Default::default() };
        TypedExtensionConfig {
            name: "meshca.80.rbac_deny".into(),
            typed_config: Some(Any { type_url: HttpRbac::type_url(), value: rbac.encode_to_vec() }),
        }
    }

    fn snap(version: &str, deny_names: &[&str], allow: &str) -> EcdsSnapshot {
        let mut resources = BTreeMap::new();
        resources.insert("meshca.80.rbac_deny".to_string(), deny(deny_names));
        resources.insert(
            "meshca.80.rbac_allow".to_string(),
            TypedExtensionConfig { name: allow.into(), typed_config: None },
        );
        EcdsSnapshot { version: version.into(), resources }
    }

    fn deny_names(s: &EcdsSnapshot) -> Vec<String> {
        let any = s.resources["meshca.80.rbac_deny"].typed_config.as_ref().unwrap();
        let mut v: Vec<String> =
            HttpRbac::decode(any.value.as_slice()).unwrap().rules.unwrap().policies.into_keys().collect();
        v.sort();
        v
    }

    #[test]
    fn a_deny_change_goes_through_the_union_and_others_in_one_step() {
        let (old, new) = (snap("v1", &["a"], "allow-1"), snap("v2", &["b"], "allow-2"));
        let st = stages(Some(&old), &new);
        assert_eq!(st.len(), 3);
        assert_eq!(deny_names(&st[0]), ["a (previous)", "b"]);
        assert_eq!(st[0].resources["meshca.80.rbac_allow"].name, "allow-1", "step 1 keeps the old ALLOW");
        assert_eq!(deny_names(&st[1]), ["a (previous)", "b"]);
        assert_eq!(st[1].resources["meshca.80.rbac_allow"].name, "allow-2", "step 2 has the new ALLOW");
        assert_eq!(st[2], new);
        assert_eq!(stages(None, &new), vec![new.clone()], "nothing to stage from nothing");
        let same_deny = snap("v3", &["b"], "allow-3");
        assert_eq!(stages(Some(&new), &same_deny), vec![same_deny.clone()], "DENY unchanged: one step");
    }
}
