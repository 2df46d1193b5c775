//! The typed model of Istio's security objects, and the context they are applied in.
//!
//! * Modern API (security.istio.io v1 / v1beta1): [`AuthorizationPolicy`], [`RequestAuthentication`],
//!   [`PeerAuthentication`].
//! * Legacy API (rbac.istio.io/v1alpha1 and authentication.istio.io/v1alpha1): [`ServiceRole`],
//!   [`ServiceRoleBinding`], [`RbacConfig`] (for both `ClusterRbacConfig` and `RbacConfig`) and
//!   [`AuthnPolicy`] (for both `Policy` and `MeshPolicy`).
//!
//! Every loaded object is an [`Object`]: metadata, the typed spec ([`Spec`]), where it came from
//! ([`SourceLocation`]) and a map from field paths (`spec.rules[0].from[0].source.principals[1]`)
//! to line numbers, for diagnostics. A [`PolicySet`] holds all objects; [`PolicySet::applicable`]
//! selects the ones that apply to a [`Workload`] under the given [`MeshSettings`].
//!
//! Field names follow the Kubernetes (camelCase) spelling; the structs (de)serialize with serde in
//! that spelling, so they can be printed back as YAML/JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod context;
mod legacy;

pub use context::*;
pub use legacy::*;

/// Where an object was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The file name as the caller gave it to [`crate::load::load_str`].
    pub file: String,
    /// 1-based line of the object's first line (its document or list item).
    pub line: u32,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The Kubernetes object metadata that matters for policies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    /// Empty when the file did not set it (the CLI may fill in a default namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 timestamp, when present; Istio orders policies by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// One loaded object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `apiVersion` as written, e.g. `security.istio.io/v1`.
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub source: SourceLocation,
    /// Field path (`spec.rules[0].to[0].operation.paths[1]`, `metadata.name`) to 1-based line.
    /// Only paths present in the input are listed.
    pub lines: BTreeMap<String, u32>,
}

impl Object {
    /// The `kind` as written in files.
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    /// The namespace, or `default` when unset (kubectl's behaviour).
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }

    /// `<name>.<namespace>` as Istio prints objects in messages.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.meta.name, self.namespace())
    }

    /// The line of a field path, falling back to the object's own line.
    pub fn line_of(&self, path: &str) -> u32 {
        self.lines.get(path).copied().unwrap_or(self.source.line)
    }

    /// The object as Kubernetes JSON (`apiVersion`, `kind`, `metadata`, `spec`), e.g. to print it.
    pub fn to_json(&self) -> serde_json::Value {
        let spec = match &self.spec {
            Spec::AuthorizationPolicy(s) => serde_json::to_value(s),
            Spec::RequestAuthentication(s) => serde_json::to_value(s),
            Spec::PeerAuthentication(s) => serde_json::to_value(s),
            Spec::ServiceRole(s) => serde_json::to_value(s),
            Spec::ServiceRoleBinding(s) => serde_json::to_value(s),
            Spec::ClusterRbacConfig(s) | Spec::RbacConfig(s) => serde_json::to_value(s),
            Spec::Policy(s) | Spec::MeshPolicy(s) => serde_json::to_value(s),
        };
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind(),
            "metadata": serde_json::to_value(&self.meta).unwrap_or_default(),
            "spec": spec.unwrap_or_default(),
        })
    }

    /// True when the `istio.io/dry-run` annotation parses as true (Go `strconv.ParseBool`).
    /// An unparsable value means enforced, as in Istio.
    pub fn is_dry_run(&self) -> bool {
        self.meta.annotations.get(DRY_RUN_ANNOTATION).is_some_and(|v| parse_go_bool(v) == Some(true))
    }
}

/// The annotation that turns an AuthorizationPolicy into a dry-run (shadow) policy.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The typed spec of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    AuthorizationPolicy(AuthorizationPolicy),
    RequestAuthentication(RequestAuthentication),
    PeerAuthentication(PeerAuthentication),
    ServiceRole(ServiceRole),
    ServiceRoleBinding(ServiceRoleBinding),
    /// The cluster-scoped singleton (should be named `default`).
    ClusterRbacConfig(RbacConfig),
    /// The older, namespaced form of `ClusterRbacConfig`.
    RbacConfig(RbacConfig),
    /// authentication.istio.io/v1alpha1 `Policy`.
    Policy(AuthnPolicy),
    /// authentication.istio.io/v1alpha1 `MeshPolicy` (cluster-wide singleton `default`).
    MeshPolicy(AuthnPolicy),
}

impl Spec {
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Spec::RequestAuthentication(_) => "RequestAuthentication",
            Spec::PeerAuthentication(_) => "PeerAuthentication",
            Spec::ServiceRole(_) => "ServiceRole",
            Spec::ServiceRoleBinding(_) => "ServiceRoleBinding",
            Spec::ClusterRbacConfig(_) => "ClusterRbacConfig",
            Spec::RbacConfig(_) => "RbacConfig",
            Spec::Policy(_) => "Policy",
            Spec::MeshPolicy(_) => "MeshPolicy",
        }
    }

    /// True for the rbac.istio.io / authentication.istio.io v1alpha1 kinds.
    pub fn is_legacy(&self) -> bool {
        !matches!(self, Spec::AuthorizationPolicy(_) | Spec::RequestAuthentication(_) | Spec::PeerAuthentication(_))
    }
}

// ---------------------------------------------------------------------------------------------
// security.istio.io
// ---------------------------------------------------------------------------------------------

/// `selector: {matchLabels: {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Istio's `ShouldAttachPolicy` subset test: every selector label is on the workload.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `targetRef` / `targetRefs[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// AuthorizationPolicy `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// `provider: {name}` of a CUSTOM policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Provider {
    pub name: String,
}

/// security.istio.io AuthorizationPolicy spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// `None` when `rules` is absent; `Some(vec![])` for an explicit `rules: []`. Both mean "no rules".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

impl AuthorizationPolicy {
    /// The rules, empty when there are none.
    pub fn rules(&self) -> &[Rule] {
        self.rules.as_deref().unwrap_or(&[])
    }

    /// True when a `targetRef` or `targetRefs` is set.
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// One rule: `from` (any), `to` (any), `when` (all).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// `None` when absent (means any source); `Some(vec![])` for an explicit, invalid `from: []`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<From>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<To>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

impl Rule {
    pub fn from(&self) -> &[From] {
        self.from.as_deref().unwrap_or(&[])
    }
    pub fn to(&self) -> &[To] {
        self.to.as_deref().unwrap_or(&[])
    }
}

/// `from[i]`: `{source: {...}}`. `source` is `None` for an (invalid) `source: null` or a missing one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct From {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `to[i]`: `{operation: {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct To {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `from[i].source`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

impl Source {
    /// True when no field is set (`source: {}`, rejected by validation).
    pub fn is_empty(&self) -> bool {
        *self == Source::default()
    }
}

/// `to[i].operation`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Ports as written (strings in the API); validation checks they parse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

impl Operation {
    pub fn is_empty(&self) -> bool {
        *self == Operation::default()
    }
}

/// `when[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    pub key: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// security.istio.io RequestAuthentication spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestAuthentication {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// `jwtRules[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtRule {
    pub issuer: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// Inline JWKS (a JSON string).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// A duration string such as `5s` (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// `fromHeaders[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtHeader {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `outputClaimToHeaders[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// PeerAuthentication mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// `mtls: {mode}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerMtls {
    pub mode: MtlsMode,
}

/// security.istio.io PeerAuthentication spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthentication {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Workload (container) port to mode. `None` when absent, `Some(empty)` for an explicit `{}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<u32, PeerMtls>>,
}

// ---------------------------------------------------------------------------------------------
// Policy set
// ---------------------------------------------------------------------------------------------

/// All loaded objects, in load order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    pub objects: Vec<Object>,
}

/// The objects of a [`PolicySet`] that apply to one workload, in Istio's order.
#[derive(Debug, Clone, Default)]
pub struct Applicable<'a> {
    /// AuthorizationPolicies, ordered root namespace first, then by creation time, then by
    /// load order (the order does not change decisions).
    pub authorization: Vec<&'a Object>,
    /// RequestAuthentications whose jwtRules are merged into jwt_authn.
    pub request_authentication: Vec<&'a Object>,
    /// PeerAuthentications that apply (mesh, namespace and workload level).
    pub peer_authentication: Vec<&'a Object>,
}

impl PolicySet {
    /// A policy set from loaded objects (load order is kept).
    pub fn from_objects(objects: Vec<Object>) -> Self {
        PolicySet { objects }
    }

    /// Objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    /// The modern objects that apply to `workload`, following Istio's `ShouldAttachPolicy` for a
    /// sidecar: the object is in the root namespace or the workload's namespace; a `targetRef(s)`
    /// object is ignored unless the workload is a Gateway-API gateway whose name matches a
    /// `Gateway` target in the same namespace; otherwise no selector or a selector whose labels are
    /// a subset of the workload's. PeerAuthentications with a selector in the root namespace are
    /// ignored, as in Istio.
    pub fn applicable<'a>(&'a self, workload: &Workload, mesh: &MeshSettings) -> Applicable<'a> {
        let mut out = Applicable::default();
        for o in &self.objects {
            let ns = o.namespace();
            let in_scope = ns == mesh.root_namespace || ns == workload.namespace;
            if !in_scope {
                continue;
            }
            match &o.spec {
                Spec::AuthorizationPolicy(p)
                    if attaches(p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs, ns, workload) =>
                {
                    out.authorization.push(o);
                }
                Spec::RequestAuthentication(p)
                    if attaches(p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs, ns, workload) =>
                {
                    out.request_authentication.push(o);
                }
                Spec::PeerAuthentication(p) => {
                    let ok = match &p.selector {
                        None => true,
                        Some(_) if ns == mesh.root_namespace && ns != workload.namespace => false,
                        Some(s) => s.matches(&workload.labels),
                    };
                    if ok {
                        out.peer_authentication.push(o);
                    }
                }
                _ => {}
            }
        }
        let root = mesh.root_namespace.as_str();
        let key = |o: &&Object| (o.namespace() != root, o.meta.creation_timestamp.clone().unwrap_or_default());
        out.authorization.sort_by_key(key);
        out.request_authentication.sort_by_key(key);
        out.peer_authentication.sort_by_key(key);
        out
    }
}

fn attaches(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    policy_ns: &str,
    workload: &Workload,
) -> bool {
    let refs: Vec<&PolicyTargetReference> = target_ref.into_iter().chain(target_refs.iter()).collect();
    if !refs.is_empty() {
        let Some(gw) = workload.labels.get(GATEWAY_NAME_LABEL) else {
            return false;
        };
        return refs.iter().any(|r| {
            r.kind == "Gateway"
                && r.name == *gw
                && (r.namespace.is_empty() || r.namespace == workload.namespace)
                && policy_ns == workload.namespace
        });
    }
    match selector {
        None => true,
        Some(s) => s.matches(&workload.labels),
    }
}
