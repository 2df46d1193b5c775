//! `ha`: a CA running as one of several replicas on a shared store
//! (`meshca serve --store`), through the `store` section of its `/status`:
//! the store answers, every replica signs with the same material, and no
//! root renewal is stuck.

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

pub const ALL: [CheckDef; 3] = [STORE_HEALTHY, REPLICAS_AGREE, RENEWAL];

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
