//! A policy update to ECDS resources: the objects are loaded with
//! meshca-policy (each named by its source `file:line` at the server) and
//! compiled by meshca-envoy for the declared ports, JWKS inlined.

use super::{PortArg, Protocol};
use crate::xds::EcdsSnapshot;
use meshca_policy::model::{MeshSettings, PolicySet, Workload};
use meshca_proto::PolicyUpdate;
use std::collections::BTreeMap;

/// The objects of an update as a policy set.
pub fn policy_set(u: &PolicyUpdate) -> Result<PolicySet, String> {
    let mut objects = Vec::new();
    for o in &u.objects {
        let loaded = meshca_policy::load::load_str(&o.source, &o.json).map_err(|errs| {
            let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            format!("{} {}/{} from {}: {}", o.kind, o.namespace, o.name, o.source, msgs.join("; "))
        })?;
        objects.extend(loaded);
    }
    Ok(PolicySet::from_objects(objects))
}

/// The mesh settings an update carries.
pub fn mesh(u: &PolicyUpdate) -> MeshSettings {
    let mut m = MeshSettings::default();
    if !u.trust_domain.is_empty() {
        m.trust_domain = u.trust_domain.clone();
    }
    if !u.root_namespace.is_empty() {
        m.root_namespace = u.root_namespace.clone();
    }
    m
}

/// The declared ports as meshca-envoy sees them.
pub fn port_specs(ports: &[PortArg]) -> Vec<meshca_envoy::PortSpec> {
    ports
        .iter()
        .map(|p| meshca_envoy::PortSpec {
            port: p.port,
            protocol: match p.protocol {
                Protocol::Http => meshca_envoy::PortProtocol::Http,
                Protocol::Tcp => meshca_envoy::PortProtocol::Tcp,
            },
            app: p.app,
        })
        .collect()
}

/// A JWKS whose only key nobody holds (the private half was discarded): what an issuer whose keys
/// the server could not fetch gets, so its tokens are refused (401, and the access log asks for a
/// refetch) instead of Envoy rejecting a `remote_jwks` without a cluster and running on with the
/// previous policies.
const NO_KEYS_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"meshca-jwks-fetch-failed","alg":"ES256","x":"tbjcrwd6YKtfK665D6RymYQsjfrzPlzQF65r-Iu0kng","y":"5bnHekD8tp6Kz4_vvEYDZJxF3JrT8ulxhViIEcxeUg0"}]}"#;

/// The JWKS to inline: the fetched ones, and [`NO_KEYS_JWKS`] for every failed fetch (fail closed).
pub fn jwks(u: &PolicyUpdate) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = u.jwks.clone().into_iter().collect();
    for key in u.jwks_errors.keys() {
        out.entry(key.clone()).or_insert_with(|| NO_KEYS_JWKS.to_string());
    }
    out
}

/// Every ECDS resource for `workload`, versioned with the update's version.
pub fn snapshot(u: &PolicyUpdate, workload: &Workload, ports: &[PortArg]) -> Result<EcdsSnapshot, String> {
    let set = policy_set(u)?;
    let mesh = mesh(u);
    let jwks = jwks(u);
    let ports = port_specs(ports);
    let inputs = meshca_envoy::PolicyInputs { set: &set, workload, mesh: &mesh, ports: &ports, jwks: &jwks };
    let resources = meshca_envoy::policy_resources(&inputs).map_err(|e| e.to_string())?;
    Ok(EcdsSnapshot {
        version: u.version.clone(),
        resources: resources.into_iter().map(|r| (r.name.clone(), r.config)).collect(),
    })
}
