//! The Envoy 1.40 bootstrap that takes certificates (SDS) and policies (ECDS) from the agent.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::slots::{chain_slots, Chain, PortProtocol, PortSpec, Slot};

/// The static cluster that reaches the agent's unix socket (ADS and ALS).
pub const AGENT_CLUSTER: &str = "meshca-agent";
/// `log_name` of the gRPC access log (ALS) stream Envoy opens to the agent.
pub const ALS_LOG_NAME: &str = "meshca";
/// SDS name of the workload certificate and key.
pub const WORKLOAD_SECRET: &str = "default";
/// SDS name of the trust bundle used to verify peers.
pub const ROOT_CA_SECRET: &str = "ROOTCA";

/// What [`bootstrap`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Envoy's `node.id` (the agent may use it to name the proxy in its status).
    pub node_id: String,
    /// Envoy's `node.cluster`.
    pub cluster: String,
    /// Where Envoy's admin interface listens.
    pub admin: SocketAddr,
    /// The agent's unix socket, serving ADS (SDS + ECDS) and ALS over gRPC.
    pub agent_socket: PathBuf,
    /// The inbound ports; each becomes a listener on `127.0.0.1:<port>` forwarding to `app`.
    pub ports: Vec<PortSpec>,
}

/// A complete Envoy 1.40 bootstrap as JSON (Envoy accepts it as `-c file.json` or as YAML).
///
/// * `dynamic_resources.ads_config`: gRPC to the static cluster [`AGENT_CLUSTER`] (HTTP/2 over
///   the unix socket `agent_socket`), V3, node sent on the first message only.
/// * Per port a listener `meshca.inbound.<port>` on `127.0.0.1:<port>` with the `tls_inspector`
///   and two filter chains: `tls` (DownstreamTlsContext, client certificate required, SDS
///   secrets [`WORKLOAD_SECRET`] and [`ROOT_CA_SECRET`] over ADS) and `plaintext`
///   (`raw_buffer`). Each chain starts with its ECDS peer slot (`meshca.<port>.peer_tls` /
///   `peer_plaintext`); TCP ports follow with the network RBAC slots and `tcp_proxy` to the
///   cluster `meshca.app.<port>`; HTTP ports with an HTTP connection manager whose HTTP filters
///   are the jwt_authn and RBAC slots and `router` (route `/` to `meshca.app.<port>`; XFCC
///   `SANITIZE_SET` with the peer URI).
/// * Every ECDS slot: `config_discovery` over ADS with `default_config` = the slot's deny-all
///   config and `apply_default_config_without_warming: true`, and `type_urls` = the slot's type.
///   The listener is therefore serving from the start, and it fails CLOSED (403 for HTTP, 401 from
///   the jwt_authn default, closed connections for TCP) until the agent's first policy push.
/// * Access logs on each HTTP connection manager: gRPC ALS to the agent (log name
///   [`ALS_LOG_NAME`]), filtered to status 401 so the agent sees "unknown kid" denials (response
///   code details `jwt_authn_access_denied{Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt}`)
///   and can refresh the JWKS; and a stdout line per request with `%RESPONSE_CODE_DETAILS%`.
/// * `admin` on `opts.admin`.
pub fn bootstrap(opts: &BootstrapOptions) -> Value {
    let mut clusters = vec![agent_cluster(opts)];
    clusters.extend(opts.ports.iter().map(app_cluster));
    json!({
        "node": {"id": opts.node_id, "cluster": opts.cluster},
        "admin": {"address": socket_address(opts.admin)},
        "dynamic_resources": {"ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": true,
            "grpc_services": [{"envoy_grpc": {"cluster_name": AGENT_CLUSTER}}],
        }},
        "static_resources": {
            "listeners": opts.ports.iter().map(listener).collect::<Vec<_>>(),
            "clusters": clusters,
        },
    })
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn ads_source() -> Value {
    json!({"ads": {}, "resource_api_version": "V3"})
}

fn agent_cluster(opts: &BootstrapOptions) -> Value {
    json!({
        "name": AGENT_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "load_assignment": {"cluster_name": AGENT_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"pipe": {"path": opts.agent_socket.display().to_string()}}}}]}]},
    })
}

fn app_cluster_name(port: &PortSpec) -> String {
    format!("meshca.app.{}", port.port)
}

fn app_cluster(port: &PortSpec) -> Value {
    let name = app_cluster_name(port);
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": socket_address(port.app)}}]}]},
    })
}

/// An ECDS-backed filter (network or HTTP; both use the same shape).
fn ecds_filter(slot: &Slot) -> Value {
    json!({
        "name": slot.name,
        "config_discovery": {
            "config_source": ads_source(),
            "default_config": slot.deny_all(),
            "apply_default_config_without_warming": true,
            "type_urls": [slot.type_url()],
        },
    })
}

fn listener(port: &PortSpec) -> Value {
    let chains: Vec<Value> = [Chain::Tls, Chain::Plaintext].iter().map(|c| filter_chain(port, *c)).collect();
    json!({
        "name": format!("meshca.inbound.{}", port.port),
        "address": socket_address(SocketAddr::from(([127, 0, 0, 1], port.port))),
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": chains,
    })
}

fn filter_chain(port: &PortSpec, chain: Chain) -> Value {
    let slots = chain_slots(port, chain);
    let (network_slots, http_slots): (Vec<&Slot>, Vec<&Slot>) = slots.iter().partition(|s| !s.http);
    let mut filters: Vec<Value> = network_slots.into_iter().map(ecds_filter).collect();
    let cluster = app_cluster_name(port);
    let stat = format!("meshca_inbound_{}", port.port);
    match port.protocol {
        PortProtocol::Tcp => filters.push(json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat,
            "cluster": cluster,
            "access_log": [stdout_log(&format!(
                "[%START_TIME%] meshca.{} tcp %DOWNSTREAM_REMOTE_ADDRESS% peer=%DOWNSTREAM_PEER_URI_SAN% \
                 %RESPONSE_FLAGS% %CONNECTION_TERMINATION_DETAILS%\n",
                port.port
            ))],
        }})),
        PortProtocol::Http => {
            let mut http: Vec<Value> = http_slots.into_iter().map(ecds_filter).collect();
            http.push(json!({"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
            filters.push(json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": stat,
                "codec_type": "AUTO",
                "normalize_path": true,
                "forward_client_cert_details": "SANITIZE_SET",
                "set_current_client_cert_details": {"uri": true},
                "route_config": {"name": format!("meshca.inbound.{}", port.port), "virtual_hosts": [{
                    "name": "app", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
                "http_filters": http,
                "access_log": [als_log(), stdout_log(&format!(
                    "[%START_TIME%] meshca.{} %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% \
                     peer=%DOWNSTREAM_PEER_URI_SAN%\n",
                    port.port
                ))],
            }}));
        }
    }
    let mut out =
        json!({"name": match chain { Chain::Tls => "tls", Chain::Plaintext => "plaintext" }, "filters": filters});
    match chain {
        Chain::Tls => {
            out["filter_chain_match"] = json!({"transport_protocol": "tls"});
            out["transport_socket"] = downstream_tls(port);
        }
        Chain::Plaintext => out["filter_chain_match"] = json!({"transport_protocol": "raw_buffer"}),
    }
    out
}

fn downstream_tls(port: &PortSpec) -> Value {
    let mut common = json!({
        "tls_certificate_sds_secret_configs": [{"name": WORKLOAD_SECRET, "sds_config": ads_source()}],
        "validation_context_sds_secret_config": {"name": ROOT_CA_SECRET, "sds_config": ads_source()},
    });
    if port.protocol == PortProtocol::Http {
        common["alpn_protocols"] = json!(["h2", "http/1.1"]);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": common,
    }})
}

fn als_log() -> Value {
    json!({
        "name": "envoy.access_loggers.http_grpc",
        "filter": {"status_code_filter": {"comparison": {"op": "EQ",
            "value": {"default_value": 401, "runtime_key": "meshca.als.status_code"}}}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": ALS_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": AGENT_CLUSTER}},
            },
        },
    })
}

fn stdout_log(format: &str) -> Value {
    json!({"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "log_format": {"text_format_source": {"inline_string": format}},
    }})
}
