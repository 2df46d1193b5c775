//! The effective PeerAuthentication mode of a port, with Istio's inheritance.

use meshca_policy::model::{MeshSettings, MtlsMode, Object, PeerAuthentication, PolicySet, Spec, Workload};

/// The mTLS mode that applies to `port` of `workload` (never [`MtlsMode::Unset`]).
///
/// Istio's semantics (`ComposePeerAuthentication`): three levels, mesh (a PeerAuthentication
/// without selector in the root namespace), namespace (without selector in the workload's
/// namespace) and workload (with a selector matching the workload's labels, in its namespace). At
/// each level the oldest policy (creation timestamp, then load order) wins. `UNSET` (or no `mtls`)
/// inherits from the level above; with nothing set anywhere the mode is PERMISSIVE. The workload
/// policy's `portLevelMtls[port]` overrides the mode for that port (UNSET there inherits the
/// workload level). `port` is the port Envoy listens on ([`crate::PortSpec::port`]), the same
/// number policies use as the destination port. Legacy `authentication.istio.io` policies are not
/// considered.
pub fn effective_mtls(set: &PolicySet, workload: &Workload, mesh: &MeshSettings, port: u16) -> MtlsMode {
    let applicable = set.applicable(workload, mesh);
    let peer: Vec<(&Object, &PeerAuthentication)> = applicable
        .peer_authentication
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::PeerAuthentication(p) => Some((*o, p)),
            _ => None,
        })
        .collect();
    let oldest = |pred: &dyn Fn(&Object, &PeerAuthentication) -> bool| {
        peer.iter()
            .filter(|(o, p)| pred(o, p))
            .min_by(|(a, _), (b, _)| a.meta.creation_timestamp.cmp(&b.meta.creation_timestamp))
            .map(|(_, p)| *p)
    };
    let root = mesh.root_namespace.as_str();
    let mesh_level = oldest(&|o, p| p.selector.is_none() && o.namespace() == root);
    let ns_level = oldest(&|o, p| p.selector.is_none() && o.namespace() == workload.namespace);
    let workload_level = oldest(&|_, p| p.selector.is_some());

    let inherit = |policy: Option<&PeerAuthentication>, parent: MtlsMode| match mode_of(policy) {
        MtlsMode::Unset => parent,
        m => m,
    };
    let mode = inherit(mesh_level, MtlsMode::Permissive);
    let mode = inherit(ns_level, mode);
    let mode = inherit(workload_level, mode);
    let port_mode = workload_level
        .and_then(|p| p.port_level_mtls.as_ref())
        .and_then(|m| m.get(&u32::from(port)))
        .map_or(MtlsMode::Unset, |m| m.mode);
    match port_mode {
        MtlsMode::Unset => mode,
        m => m,
    }
}

fn mode_of(policy: Option<&PeerAuthentication>) -> MtlsMode {
    policy.and_then(|p| p.mtls.as_ref()).map_or(MtlsMode::Unset, |m| m.mode)
}
