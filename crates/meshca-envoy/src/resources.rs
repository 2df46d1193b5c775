//! Compiled policies of a workload as one ECDS resource per slot.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use meshca_policy::compile::{compile_report, CompileOptions};
use meshca_policy::model::{Action, MeshSettings, MtlsMode, PolicySet, Protocol, Spec, Workload};
use serde_json::Value;

use crate::slots::{port_slots, PortProtocol, PortSpec, Slot, SlotKind};
use crate::{effective_mtls, json_to_envoy_any, EncodeError};

/// Everything [`policy_resources`] needs.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInputs<'a> {
    /// The policies the server sent for this workload (others are filtered out again here).
    pub set: &'a PolicySet,
    pub workload: &'a Workload,
    pub mesh: &'a MeshSettings,
    /// The inbound ports, as declared to the agent and the bootstrap.
    pub ports: &'a [PortSpec],
    /// JWKS documents (JSON text) keyed by `jwksUri` or issuer, inlined into jwt_authn as
    /// `local_jwks` (see `meshca_policy::compile::CompileOptions::jwks`). A jwksUri with no entry
    /// here compiles to `remote_jwks` on a cluster the bootstrap does not have, which Envoy
    /// rejects: fetch the keys first (or let the fetch failure fail closed).
    pub jwks: &'a BTreeMap<String, String>,
}

/// One ECDS resource: the config of one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The slot name (`meshca.<port>.<kind>`), equal to `config.name`.
    pub name: String,
    /// What the agent sends as `TypedExtensionConfig` (resource type
    /// `type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig`).
    pub config: TypedExtensionConfig,
    /// The slot the resource fills.
    pub slot: Slot,
    /// The protobuf-JSON typed config (with `@type`) the resource was encoded from, for status
    /// pages and debugging.
    pub json: Value,
}

/// The ECDS resources for every slot of every port (see [`crate::port_slots`] for the order):
/// exactly one per slot, each of the slot's declared type, so the agent can always send the full
/// set.
///
/// Per port: `peer_tls`/`peer_plaintext` from [`effective_mtls`]; the policy slots from
/// `compile_report` for the port's protocol, filled by filter type and RBAC action (jwt_authn,
/// LOG, DENY, ALLOW; a dry-run-only policy's filter by its shadow action); a slot with no compiled
/// filter gets the pass-through config of its type. The compiler's notes (skipped rules) are
/// dropped here; `meshca policy compile` shows them.
///
/// # Errors
///
/// * [`EncodeError::Unsupported`] when a CUSTOM AuthorizationPolicy applies to the workload:
///   there is no ext_authz server in this setup, and dropping the policy would fail open, so the
///   whole set is refused (the agent keeps enforcing the previous one and reports the error).
/// * [`EncodeError::Unsupported`] when a port is declared twice (the slot names would clash).
/// * [`EncodeError::Compile`] for invalid mesh settings; [`EncodeError::Json`] if a compiled
///   config does not match Envoy's schema (a compiler bug).
pub fn policy_resources(inputs: &PolicyInputs<'_>) -> Result<Vec<Resource>, EncodeError> {
    let applicable = inputs.set.applicable(inputs.workload, inputs.mesh);
    if let Some(custom) = applicable
        .authorization
        .iter()
        .find(|o| matches!(&o.spec, Spec::AuthorizationPolicy(p) if p.action == Action::Custom))
    {
        return Err(EncodeError::Unsupported(format!(
            "CUSTOM AuthorizationPolicy {} ({}) needs an ext_authz server, which meshca does not run; \
             use ALLOW/DENY policies",
            custom.display_name(),
            custom.source
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = inputs.ports.iter().find(|p| !seen.insert(p.port)) {
        return Err(EncodeError::Unsupported(format!("port {} is declared twice", dup.port)));
    }
    let options = CompileOptions { jwks: inputs.jwks.clone() };
    let mut out = Vec::new();
    for port in inputs.ports {
        let protocol = match port.protocol {
            PortProtocol::Http => Protocol::Http,
            PortProtocol::Tcp => Protocol::Tcp,
        };
        let compiled = compile_report(inputs.set, inputs.workload, inputs.mesh, protocol, Some(port.port), &options)
            .map_err(|e| EncodeError::Compile(e.to_string()))?;
        let key = if protocol == Protocol::Http { "http_filters" } else { "network_filters" };
        let filters = compiled.filters[key].as_array().cloned().unwrap_or_default();
        let mut by_slot: BTreeMap<SlotKind, Value> = BTreeMap::new();
        for filter in filters {
            let config = filter["typed_config"].clone();
            let kind = classify(&config).ok_or_else(|| {
                EncodeError::Unsupported(format!("port {}: unexpected filter {}", port.port, filter["name"]))
            })?;
            if by_slot.insert(kind, config).is_some() {
                return Err(EncodeError::Unsupported(format!(
                    "port {}: the compiler emitted two {} filters",
                    port.port,
                    kind.suffix()
                )));
            }
        }
        let mtls = effective_mtls(inputs.set, inputs.workload, inputs.mesh, port.port);
        for slot in port_slots(port) {
            let json = match slot.kind {
                SlotKind::PeerTls if mtls == MtlsMode::Disable => {
                    slot.deny_all_named(meshca_policy::eval::MTLS_DISABLED_POLICY)
                }
                SlotKind::PeerPlaintext if mtls == MtlsMode::Strict => {
                    slot.deny_all_named(meshca_policy::eval::MTLS_STRICT_POLICY)
                }
                SlotKind::PeerTls | SlotKind::PeerPlaintext => slot.pass_through(),
                kind => by_slot.remove(&kind).unwrap_or_else(|| slot.pass_through()),
            };
            out.push(resource(slot, json)?);
        }
    }
    Ok(out)
}

/// Wraps a typed config as the slot's resource, checking its type against the slot's.
fn resource(slot: Slot, json: Value) -> Result<Resource, EncodeError> {
    let any = json_to_envoy_any(&json)?;
    if any.type_url != slot.type_url() {
        return Err(EncodeError::Unsupported(format!(
            "slot {} is declared as {} but the config is {}",
            slot.name,
            slot.type_url(),
            any.type_url
        )));
    }
    let config = TypedExtensionConfig { name: slot.name.clone(), typed_config: Some(any) };
    Ok(Resource { name: slot.name.clone(), config, slot, json })
}

/// The policy slot a compiled typed config belongs to.
fn classify(config: &Value) -> Option<SlotKind> {
    let type_url = config["@type"].as_str()?;
    if type_url == crate::JWT_AUTHN_TYPE {
        return Some(SlotKind::JwtAuthn);
    }
    if type_url != crate::HTTP_RBAC_TYPE && type_url != crate::NETWORK_RBAC_TYPE {
        return None;
    }
    let rules = if config.get("rules").is_some() { &config["rules"] } else { &config["shadowRules"] };
    match rules["action"].as_str().unwrap_or("ALLOW") {
        "ALLOW" => Some(SlotKind::RbacAllow),
        "DENY" => Some(SlotKind::RbacDeny),
        "LOG" => Some(SlotKind::RbacAudit),
        _ => None,
    }
}
