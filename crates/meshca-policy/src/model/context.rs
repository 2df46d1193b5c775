//! The context policies are applied in: workload, mesh settings, protocol (re-exported by
//! [`crate::model`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Context: workload, mesh, protocol
// ---------------------------------------------------------------------------------------------

/// The workload policies are applied to (a sidecar; not a gateway or waypoint).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl Workload {
    /// A workload with the given namespace and labels.
    pub fn new(namespace: impl Into<String>, labels: BTreeMap<String, String>) -> Self {
        Workload { namespace: namespace.into(), labels, service_account: None }
    }

    /// True for a Kubernetes Gateway-API gateway pod (label `gateway.networking.k8s.io/gateway-name`).
    pub fn is_gateway_api(&self) -> bool {
        self.labels.contains_key(GATEWAY_NAME_LABEL)
    }
}

/// Label carried by Gateway-API gateway pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The mesh-wide settings that change what policies mean (a subset of MeshConfig).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshSettings {
    /// Default `istio-system`.
    pub root_namespace: String,
    /// Default `cluster.local`.
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    pub extension_providers: Vec<ExtensionProvider>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            trust_domain_aliases: Vec::new(),
            extension_providers: Vec::new(),
        }
    }
}

impl MeshSettings {
    /// The extension provider with this name.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

/// `meshConfig.extensionProviders[i]`; only the ext_authz kinds are typed, others are kept raw.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpcProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttpProvider>,
    /// Any other provider kind (tracing, logging, ...), by its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_kind: Option<String>,
}

/// `envoyExtAuthzGrpc`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzGrpcProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    pub fail_open: bool,
    pub clear_route_cache: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_on_error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<BodyInCheck>,
}

/// `envoyExtAuthzHttp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzHttpProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    pub fail_open: bool,
    pub clear_route_cache: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_on_error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<BodyInCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BodyInCheck {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

/// The filter chain a policy is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}
