//! `ha`: a CA running as one of several replicas on a shared store
//! (`meshca serve --store`), through the `store` section of its `/status`:
//! the store answers, every replica signs with the same material, no root
//! renewal is stuck, and the shared policy set (`--policy-dir`) is readable
//! and matches this replica's directory.

use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::Context;
use serde_json::Value;

pub const STORE_HEALTHY: CheckDef = CheckDef {
    id: "ha.store-healthy",
    description: "the shared store (etcd) answers the CA",
    severity: Severity::Error,
};
pub const REPLICAS_AGREE: CheckDef = CheckDef {
    id: "ha.replicas-agree",
    description: "every registered replica signs with the same CA material",
    severity: Severity::Error,
};
pub const RENEWAL: CheckDef = CheckDef {
    id: "ha.root-renewal",
    description: "no renewal of the shared root is waiting",
    severity: Severity::Warning,
};

pub const POLICY_SHARED: CheckDef = CheckDef {
    id: "ha.policy-shared",
    description: "the shared policy set is readable and this replica's policy directory matches it",
    severity: Severity::Error,
};

pub const ALL: [CheckDef; 4] = [STORE_HEALTHY, REPLICAS_AGREE, RENEWAL, POLICY_SHARED];

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    let Some(http) = ctx.targets.ca_http_addr.clone() else {
        c.skip_all(&ALL, "no --ca-http-addr given (the CA's /status is needed)");
        return c.into_results();
    };
    let status = match ctx.http.get_json(&format!("http://{http}/status")).await {
        Ok(s) => s,
        Err(e) => {
            c.skip_all(&ALL, &format!("the CA's /status at {http} did not answer: {e}"));
            return c.into_results();
        }
    };
    let store = &status["store"];
    if store.is_null() {
        c.skip_all(&ALL, "this CA runs without --store (a single replica)");
        return c.into_results();
    }
    c.run(&STORE_HEALTHY, || store_healthy(store));
    c.run(&REPLICAS_AGREE, || replicas_agree(store));
    c.run(&RENEWAL, || renewal(store));
    c.run(&POLICY_SHARED, || policy_shared(&status["policy"]));
    c.into_results()
}

fn store_healthy(store: &Value) -> Outcome {
    if store["healthy"] == true {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!(
            "the {} store has not answered since {}: {}",
            store["backend"].as_str().unwrap_or("shared"),
            store["degraded_since"].as_str().unwrap_or("?"),
            store["last_error"].as_str().unwrap_or("no error recorded")
        ),
        "the CA keeps signing with the material it holds, but cannot renew the root or bootstrap until the store \
         returns. Check the etcd members (`etcdctl endpoint health --cluster`): a majority must be up and reachable",
    )
}

fn replicas_agree(store: &Value) -> Outcome {
    let flagged: Vec<String> = store["material_mismatch"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .map(String::from)
        .collect();
    if flagged.is_empty() {
        return Outcome::Ok;
    }
    let addr = |id: &str| {
        store["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == id)
            .and_then(|r| r["addr"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let list: Vec<String> = flagged.iter().map(|id| format!("{id} ({})", addr(id))).collect();
    Outcome::fail(
        format!("replicas signing with material that differs from the others for more than 5 s: {}", list.join(", ")),
        "compare `/status` signer and roots of these replicas with the others: with plug-in CA files, update their \
         cacerts directory (or its mount) to the same set; with Vault, check their last reload error",
    )
}

fn renewal(store: &Value) -> Outcome {
    match store["renewal"]["waiting_for"].as_str() {
        None => Outcome::Ok,
        Some(why) => Outcome::warn(
            format!("a renewal of the shared root is waiting: {why}"),
            "the renewal happens by itself once the store answers and one replica wins the renewal election; \
             nothing to do unless it keeps waiting",
        ),
    }
}

/// `policy` of `/status`: its `shared` section exists with `--policy-dir` and `--store`.
fn policy_shared(policy: &Value) -> Outcome {
    if policy.is_null() {
        return Outcome::skip("this CA serves no policy set (no --policy-dir)");
    }
    let shared = &policy["shared"];
    if shared.is_null() {
        return Outcome::skip("this CA's policy set is not shared (no --store)");
    }
    let key = shared["record_key"].as_str().unwrap_or("policy/set");
    let error = shared["store_error"].as_str().unwrap_or_default();
    if !error.is_empty() {
        return Outcome::fail(
            format!("the shared policy set cannot be taken from the store: {error}"),
            format!(
                "the last set taken stays served. If the store is down, see ha.store-healthy. If the record `{key}` \
                 is corrupt, a replica whose policy directory holds a valid set replaces it by itself; when none \
                 does, fix a replica's directory (or touch one of its files) to publish it, or inspect it with \
                 `etcdctl get {key}`"
            ),
        );
    }
    if shared["local_differs"] == true {
        let by = shared["published_by"].as_str().unwrap_or("?");
        return Outcome::warn(
            format!(
                "this replica's policy directory (version {}) differs from the shared set (version {}) published \
                 by replica {by} from a newer directory; this replica serves the shared set",
                shared["local_version"].as_str().unwrap_or("?"),
                shared["version"].as_str().unwrap_or("?"),
            ),
            format!(
                "make this replica's --policy-dir match replica {by}'s directory; or, if this directory holds the \
                 set you want, touch one of its policy files: a newer directory is published to every replica"
            ),
        );
    }
    Outcome::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(shared: Value) -> Value {
        let mut shared = shared;
        shared["record_key"] = json!("/meshca/example.org/policy/set");
        json!({"trust_domain": "example.org", "version": "abc", "shared": shared})
    }

    #[test]
    fn policy_shared_passes_when_the_directory_matches_the_shared_set() {
        let p = policy(json!({"from_store": true, "version": "v1", "local_version": "v1", "local_differs": false,
            "published_by": "r0", "store_error": "", "message": ""}));
        assert_eq!(policy_shared(&p), Outcome::Ok);
    }

    #[test]
    fn policy_shared_warns_naming_the_publisher_when_the_directory_differs() {
        let p = policy(json!({"from_store": true, "version": "v2", "local_version": "v1", "local_differs": true,
            "published_by": "r0", "store_error": "", "message": "local policy directory differs from the shared set"}));
        let Outcome::Warn { error, hint } = policy_shared(&p) else { panic!("{:?}", policy_shared(&p)) };
        assert!(error.contains("v1") && error.contains("v2") && error.contains("replica r0"), "{error}");
        assert!(hint.contains("--policy-dir") && hint.contains("touch"), "{hint}");
    }

    #[test]
    fn policy_shared_fails_naming_the_key_when_the_record_is_in_error() {
        let p = policy(json!({"from_store": true, "version": "v1", "local_differs": true, "published_by": "r0",
            "store_error": "policy/set in the store is not a valid policy set record: expected value"}));
        let Outcome::Fail { error, hint } = policy_shared(&p) else { panic!("{:?}", policy_shared(&p)) };
        assert!(error.contains("not a valid policy set record"), "{error}");
        assert!(hint.contains("/meshca/example.org/policy/set"), "{hint}");
    }

    #[test]
    fn policy_shared_skips_without_a_policy_dir_or_a_store() {
        assert!(matches!(policy_shared(&Value::Null), Outcome::Skip(r) if r.contains("--policy-dir")));
        let p = json!({"trust_domain": "example.org", "shared": null});
        assert!(matches!(policy_shared(&p), Outcome::Skip(r) if r.contains("--store")));
        let mut c = Checks::new();
        c.run(&POLICY_SHARED, || policy_shared(&Value::Null));
        assert_eq!(c.into_results()[0].result, crate::check::Status::Skipped);
    }
}
