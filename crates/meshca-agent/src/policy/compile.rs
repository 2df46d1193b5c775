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

/// The JWKS to inline: the fetched ones, and a key nobody holds for every failed fetch
/// ([`meshca_envoy::fail_closed_jwks`]).
pub fn jwks(u: &PolicyUpdate) -> BTreeMap<String, String> {
    meshca_envoy::fail_closed_jwks(u.jwks.clone(), u.jwks_errors.keys().cloned())
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
