//! The legacy rbac.istio.io/v1alpha1 and authentication.istio.io/v1alpha1 objects (re-exported by
//! [`crate::model`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// rbac.istio.io/v1alpha1
// ---------------------------------------------------------------------------------------------

/// ServiceRole spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceRole {
    pub rules: Vec<AccessRule>,
}

/// ServiceRole `rules[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
}

/// AccessRule `constraints[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Constraint {
    pub key: String,
    pub values: Vec<String>,
}

/// ServiceRoleBinding spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceRoleBinding {
    pub subjects: Vec<Subject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<RoleRef>,
    /// `ENFORCED` (default) or `PERMISSIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Hidden inline rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<AccessRule>,
    /// Hidden role name; `/name` means the root namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `roleRef`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    pub kind: String,
    pub name: String,
}

/// ServiceRoleBinding `subjects[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ips: Vec<String>,
}

/// ClusterRbacConfig / RbacConfig spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RbacConfig {
    /// `OFF` (default), `ON`, `ON_WITH_INCLUSION`, `ON_WITH_EXCLUSION`.
    pub mode: RbacMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<RbacTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<RbacTarget>,
    /// `ENFORCED` (default) or `PERMISSIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement_mode: Option<String>,
}

/// ClusterRbacConfig `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RbacMode {
    #[default]
    Off,
    On,
    OnWithInclusion,
    OnWithExclusion,
}

/// `inclusion` / `exclusion`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RbacTarget {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// authentication.istio.io/v1alpha1
// ---------------------------------------------------------------------------------------------

/// Policy / MeshPolicy spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthnPolicy {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerAuthenticationMethod>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub peer_is_optional: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<OriginAuthenticationMethod>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub origin_is_optional: bool,
    /// `USE_PEER` (default) or `USE_ORIGIN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_binding: Option<String>,
}

/// `targets[i]`: a short service name and optional service ports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetSelector {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `targets[i].ports[j]`: `{number}` or `{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `peers[i]`: `{mtls: {...}}` or `{jwt: {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthenticationMethod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<LegacyJwt>,
}

/// `peers[i].mtls`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MutualTls {
    /// `STRICT` (default) or `PERMISSIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_tls: bool,
}

/// `origins[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OriginAuthenticationMethod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<LegacyJwt>,
}

/// v1alpha1 `Jwt`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LegacyJwt {
    pub issuer: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_params: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trigger_rules: Vec<TriggerRule>,
}

/// `triggerRules[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TriggerRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded_paths: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub included_paths: Vec<StringMatch>,
}

/// v1alpha1 `StringMatch`: exactly one of the fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StringMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}
