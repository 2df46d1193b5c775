//! The fixed ECDS filter slots of each inbound port, their filter types, and the pass-through and
//! deny-all configs of each type.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::jwks::UNUSABLE_JWKS;

/// Type URL of `envoy.extensions.filters.http.rbac.v3.RBAC`.
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// Type URL of `envoy.extensions.filters.network.rbac.v3.RBAC`.
pub const NETWORK_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// Type URL of `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`.
pub const JWT_AUTHN_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// The name of the policy every deny-all default config carries; Envoy's RBAC stats and
/// `%RESPONSE_CODE_DETAILS%` (`rbac_access_denied_matched_policy[meshca-no-policy-yet]`) show it.
pub const NO_POLICY_YET: &str = "meshca-no-policy-yet";

/// The protocol Envoy speaks on an inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    /// HTTP/1.1 or HTTP/2 (an HTTP connection manager with HTTP filters).
    Http,
    /// Opaque TCP (network filters and `tcp_proxy`).
    Tcp,
}

/// One inbound port of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// The port Envoy listens on (`127.0.0.1:<port>`, see [`crate::bootstrap()`]). Policies use
    /// this number: `to.operation.ports`, `destination.port` and the PeerAuthentication
    /// `portLevelMtls` keys (Envoy's RBAC matches the listener's local port).
    pub port: u16,
    pub protocol: PortProtocol,
    /// Where Envoy forwards accepted traffic (the application).
    pub app: SocketAddr,
}

/// The two filter chains of each inbound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chain {
    /// `transport_protocol: tls`: mTLS with SDS certificates, client certificate required.
    Tls,
    /// `transport_protocol: raw_buffer`: plaintext.
    Plaintext,
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKind {
    /// Network RBAC on the TLS chain: allow-all under STRICT/PERMISSIVE, deny-all under DISABLE.
    PeerTls,
    /// Network RBAC on the plaintext chain: deny-all under STRICT, allow-all otherwise.
    PeerPlaintext,
    /// HTTP ports only: `jwt_authn` from the RequestAuthentications.
    JwtAuthn,
    /// RBAC for AUDIT policies (action LOG).
    RbacAudit,
    /// RBAC for DENY policies.
    RbacDeny,
    /// RBAC for ALLOW policies.
    RbacAllow,
}

impl SlotKind {
    /// The suffix in the slot name (`meshca.<port>.<suffix>`).
    pub fn suffix(self) -> &'static str {
        match self {
            SlotKind::PeerTls => "peer_tls",
            SlotKind::PeerPlaintext => "peer_plaintext",
            SlotKind::JwtAuthn => "jwt_authn",
            SlotKind::RbacAudit => "rbac_audit",
            SlotKind::RbacDeny => "rbac_deny",
            SlotKind::RbacAllow => "rbac_allow",
        }
    }
}

/// One ECDS filter slot: a filter in the bootstrap whose config comes from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    /// `meshca.<port>.<kind suffix>`: the filter name in the bootstrap, the ECDS resource name and
    /// the `TypedExtensionConfig.name`.
    pub name: String,
    pub port: u16,
    pub kind: SlotKind,
    /// True for an HTTP filter (inside the HTTP connection manager), false for a network filter.
    pub http: bool,
}

/// The name of a slot: `meshca.<port>.<suffix>`.
pub fn slot_name(port: u16, kind: SlotKind) -> String {
    format!("meshca.{port}.{}", kind.suffix())
}

impl Slot {
    fn new(port: u16, kind: SlotKind, http: bool) -> Self {
        Slot { name: slot_name(port, kind), port, kind, http }
    }

    /// The type URL the bootstrap declares for this slot; every resource for it has this type.
    pub fn type_url(&self) -> &'static str {
        match (self.kind, self.http) {
            (SlotKind::JwtAuthn, _) => JWT_AUTHN_TYPE,
            (SlotKind::PeerTls | SlotKind::PeerPlaintext, _) | (_, false) => NETWORK_RBAC_TYPE,
            (_, true) => HTTP_RBAC_TYPE,
        }
    }

    /// Network RBAC needs a stat prefix; the slot's own keeps stats apart per slot.
    fn stat_prefix(&self) -> String {
        format!("{}.", self.name)
    }

    /// A config of the slot's type that lets everything through: RBAC without `rules`, jwt_authn
    /// without providers or requirements.
    pub fn pass_through(&self) -> Value {
        let mut v = json!({"@type": self.type_url()});
        if self.type_url() == NETWORK_RBAC_TYPE {
            v["statPrefix"] = json!(self.stat_prefix());
        }
        v
    }

    /// A config of the slot's type that refuses everything: RBAC with a DENY rule
    /// ([`NO_POLICY_YET`]) matching every request or connection (HTTP: 403, TCP: connection
    /// closed); jwt_authn requiring a token from an issuer whose only key nobody can sign with (401).
    pub fn deny_all(&self) -> Value {
        self.deny_all_named(NO_POLICY_YET)
    }

    /// [`Slot::deny_all`] with another policy name (shows up in Envoy's stats and access logs).
    pub fn deny_all_named(&self, policy: &str) -> Value {
        if self.kind == SlotKind::JwtAuthn {
            return json!({
                "@type": JWT_AUTHN_TYPE,
                "providers": {policy: {"issuer": policy, "localJwks": {"inlineString": UNUSABLE_JWKS}}},
                "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": policy}}],
            });
        }
        let mut v = self.pass_through();
        v["rules"] = json!({"action": "DENY", "policies": {policy: {
            "permissions": [{"any": true}], "principals": [{"any": true}]}}});
        v
    }
}

/// Every ECDS slot of one port, in resource order: `peer_tls`, `peer_plaintext`, then (HTTP only)
/// `jwt_authn`, then `rbac_audit`, `rbac_deny`, `rbac_allow`.
pub fn port_slots(port: &PortSpec) -> Vec<Slot> {
    let http = port.protocol == PortProtocol::Http;
    let mut slots =
        vec![Slot::new(port.port, SlotKind::PeerTls, false), Slot::new(port.port, SlotKind::PeerPlaintext, false)];
    if http {
        slots.push(Slot::new(port.port, SlotKind::JwtAuthn, true));
    }
    for kind in [SlotKind::RbacAudit, SlotKind::RbacDeny, SlotKind::RbacAllow] {
        slots.push(Slot::new(port.port, kind, http));
    }
    slots
}

/// Every ECDS slot of all ports (the names the agent must serve).
pub fn all_slots(ports: &[PortSpec]) -> Vec<Slot> {
    ports.iter().flat_map(port_slots).collect()
}

/// The ECDS slots of one filter chain, in filter order: the chain's peer slot, then the policy
/// slots (network filters before `tcp_proxy` on TCP ports, HTTP filters before `router` on HTTP
/// ports).
pub fn chain_slots(port: &PortSpec, chain: Chain) -> Vec<Slot> {
    let skip = match chain {
        Chain::Tls => SlotKind::PeerPlaintext,
        Chain::Plaintext => SlotKind::PeerTls,
    };
    port_slots(port).into_iter().filter(|s| s.kind != skip).collect()
}

/// For the bootstrap: per port and chain, the ECDS slot names in filter order.
pub fn slot_names(ports: &[PortSpec]) -> Vec<(u16, Chain, Vec<String>)> {
    ports
        .iter()
        .flat_map(|p| {
            [Chain::Tls, Chain::Plaintext]
                .map(|c| (p.port, c, chain_slots(p, c).into_iter().map(|s| s.name).collect::<Vec<_>>()))
        })
        .collect()
}
