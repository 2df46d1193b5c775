//! Istio policies as Envoy ECDS resources, and the Envoy bootstrap that consumes them.
//!
//! The crate is pure: no I/O, no clock, no network. The agent compiles the policies of its
//! workload with [`policy_resources`] and serves the result over ADS (ECDS, type
//! `envoy.config.core.v3.TypedExtensionConfig`); `meshca agent envoy-bootstrap` prints
//! [`bootstrap`].
//!
//! # Filter slots
//!
//! ECDS fills filters that the bootstrap names, so the list of filters per listener is fixed while
//! the compiler's output varies (jwt_authn or not, a DENY RBAC or not). Each inbound port `P` gets
//! a fixed set of slots, each an ECDS resource named `meshca.P.<slot>` of one fixed filter type:
//!
//! | slot | filter type | chain | content |
//! |---|---|---|---|
//! | `peer_tls` | network RBAC | TLS | allow-all, deny-all under PeerAuthentication DISABLE |
//! | `peer_plaintext` | network RBAC | plaintext | deny-all under STRICT, allow-all otherwise |
//! | `jwt_authn` (HTTP ports) | `jwt_authn` | both | the RequestAuthentications, JWKS inlined |
//! | `rbac_audit` | HTTP or network RBAC | both | AUDIT policies (action LOG) |
//! | `rbac_deny` | HTTP or network RBAC | both | DENY policies |
//! | `rbac_allow` | HTTP or network RBAC | both | ALLOW policies |
//!
//! A slot without policies holds a pass-through config of its own type (RBAC without `rules`,
//! jwt_authn without providers): Envoy refuses an ECDS update that changes a filter's type unless
//! the bootstrap lists it, so every resource always has the slot's declared type. CUSTOM
//! (ext_authz) policies are refused with [`EncodeError::Unsupported`]: there is no ext_authz
//! server, and dropping them would fail open.
//!
//! Each listener has two filter chains selected by the `tls_inspector`: a TLS chain (mTLS with
//! the SDS certificates `default` and `ROOTCA`, client certificate required) and a plaintext
//! chain. The effective PeerAuthentication mode ([`effective_mtls`]) opens or closes each chain
//! through its `peer_*` slot, so mode changes apply live without a listener drain.
//!
//! # Fail closed
//!
//! Every slot in the bootstrap carries `default_config`, a deny-all config of the slot's type
//! (RBAC with a DENY policy named `meshca-no-policy-yet`; jwt_authn requiring a token signed by a
//! key nobody holds), with `apply_default_config_without_warming: true`. The listener starts at
//! once and refuses every request (HTTP 403/401) or connection (TCP) until the agent's first
//! policy push replaces the defaults. If the agent later goes away Envoy keeps the last pushed
//! configs; it never falls back to "no policy".
//!
//! Envoy's network RBAC decides on a connection's first bytes, and `tcp_proxy` connects to the
//! application as soon as a connection is accepted (Istio's behaviour too): a refused TCP client
//! never gets a byte to the application, but a server-first protocol's greeting (SMTP, MySQL) may
//! reach it before the connection is closed. HTTP ports have no such gap.
//!
//! # Serving the resources
//!
//! The agent answers ECDS requests (type [`ECDS_TYPE_URL`]) on its ADS stream with the
//! [`Resource`]s of [`policy_resources`], by name. Envoy subscribes to every slot name the
//! bootstrap declares ([`all_slots`]); [`policy_resources`] always returns exactly that set.
#![forbid(unsafe_code)]

mod any;
mod bootstrap;
mod jwks;
mod mtls;
mod resources;
mod slots;

pub use any::{descriptor_pool, json_to_any, json_to_envoy_any, DESCRIPTOR_ROOTS, ENVOY_DESCRIPTORS};
pub use bootstrap::{bootstrap, BootstrapOptions, AGENT_CLUSTER, ALS_LOG_NAME, ROOT_CA_SECRET, WORKLOAD_SECRET};
pub use jwks::{fail_closed_jwks, FETCH_FAILED_JWKS, UNUSABLE_JWKS};
pub use meshca_policy::model::MtlsMode;
pub use mtls::effective_mtls;
pub use resources::{policy_resources, PolicyInputs, Resource};
pub use slots::{
    all_slots, chain_slots, port_slots, slot_name, slot_names, Chain, PortProtocol, PortSpec, Slot, SlotKind,
    HTTP_RBAC_TYPE, JWT_AUTHN_TYPE, NETWORK_RBAC_TYPE, NO_POLICY_YET,
};

/// The xDS resource type of ECDS resources.
pub const ECDS_TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Errors turning compiled policies into Envoy resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The JSON object has no string `@type`.
    #[error("typed config has no \"@type\": {json}")]
    MissingType { json: String },
    /// The `@type` is not in the crate's descriptor set.
    #[error("unknown type {type_url} (not in meshca-envoy's descriptor set)")]
    UnknownType { type_url: String },
    /// The JSON does not match the message type; `path` is the JSON path inside the typed config.
    #[error("{type_url} at {path}: {message}")]
    Json { type_url: String, path: String, message: String },
    /// The policy compiler refused its inputs (e.g. an empty trust domain).
    #[error("compile policies: {0}")]
    Compile(String),
    /// Something this setup cannot enforce (a CUSTOM policy) or a compiled filter without a slot.
    #[error("unsupported: {0}")]
    Unsupported(String),
}
