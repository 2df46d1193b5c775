//! PeerAuthentication: the effective mTLS mode of a port, with Istio's inheritance, and the
//! connection-level gate it puts in front of the HTTP/TCP filters.

use serde::Serialize;

use crate::model::{MeshSettings, MtlsMode, Object, PeerAuthentication, PolicySet, Spec, Workload};

/// The PeerAuthentication (and its field) that set a port's mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtlsSource {
    /// `PeerAuthentication <namespace>/<name>`.
    pub object: String,
    /// `file:line` of the mode field (the object's first line when the field has no line).
    pub location: String,
    /// `mesh`, `namespace`, `workload` or `port <N>`.
    pub level: String,
}

/// The effective mode of one port and where it comes from (`None`: the PERMISSIVE default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveMtls {
    /// Never [`MtlsMode::Unset`].
    pub mode: MtlsMode,
    /// The deciding policy; `None` when nothing is set anywhere.
    pub source: Option<MtlsSource>,
}

/// The mTLS mode that applies to `port` of `workload` (never [`MtlsMode::Unset`]).
///
/// Istio's semantics (`ComposePeerAuthentication`): three levels, mesh (a PeerAuthentication
/// without selector in the root namespace), namespace (without selector in the workload's
/// namespace) and workload (with a selector matching the workload's labels, in its namespace). At
/// each level the oldest policy (creation timestamp, then load order) wins. `UNSET` (or no `mtls`)
/// inherits from the level above; with nothing set anywhere the mode is PERMISSIVE. The workload
/// policy's `portLevelMtls[port]` overrides the mode for that port (UNSET there inherits the
/// workload level). `port` is the port Envoy listens on, the same number policies use as the
/// destination port. Legacy `authentication.istio.io` policies are not considered.
#[must_use]
pub fn effective_mtls(set: &PolicySet, workload: &Workload, mesh: &MeshSettings, port: u16) -> MtlsMode {
    effective_mtls_source(set, workload, mesh, port).mode
}

/// [`effective_mtls`] with the PeerAuthentication that decided, for explanations.
#[must_use]
pub fn effective_mtls_source(set: &PolicySet, workload: &Workload, mesh: &MeshSettings, port: u16) -> EffectiveMtls {
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
            .copied()
    };
    let root = mesh.root_namespace.as_str();
    let levels = [
        ("mesh", oldest(&|o, p| p.selector.is_none() && o.namespace() == root)),
        ("namespace", oldest(&|o, p| p.selector.is_none() && o.namespace() == workload.namespace)),
        ("workload", oldest(&|_, p| p.selector.is_some())),
    ];
    let mut out = EffectiveMtls { mode: MtlsMode::Permissive, source: None };
    for (level, policy) in levels {
        let Some((o, p)) = policy else { continue };
        let mode = p.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode);
        if mode != MtlsMode::Unset {
            out = EffectiveMtls { mode, source: Some(source(o, level.to_string(), &["spec.mtls.mode", "spec.mtls"])) };
        }
    }
    let workload_level = levels[2].1;
    if let Some((o, p)) = workload_level {
        let port_mode =
            p.port_level_mtls.as_ref().and_then(|m| m.get(&u32::from(port))).map_or(MtlsMode::Unset, |m| m.mode);
        if port_mode != MtlsMode::Unset {
            let key = format!("spec.portLevelMtls[{port}]");
            let mode_key = format!("{key}.mode");
            out =
                EffectiveMtls { mode: port_mode, source: Some(source(o, format!("port {port}"), &[&mode_key, &key])) };
        }
    }
    out
}

fn source(o: &Object, level: String, fields: &[&str]) -> MtlsSource {
    let line = fields.iter().find_map(|f| o.lines.get(*f)).copied().unwrap_or(o.source.line);
    MtlsSource {
        object: format!("PeerAuthentication {}/{}", o.namespace(), o.meta.name),
        location: format!("{}:{line}", o.source.file),
        level,
    }
}

/// The connection-level refusal of `mtls` for a peer with (`tls = true`) or without a
/// certificate, or `None` when the mode lets the connection through.
#[must_use]
pub fn refusal(mtls: &EffectiveMtls, tls: bool) -> Option<String> {
    let refused = match mtls.mode {
        MtlsMode::Strict => !tls,
        MtlsMode::Disable => tls,
        MtlsMode::Permissive | MtlsMode::Unset => false,
    };
    if !refused {
        return None;
    }
    let (mode, what) = match mtls.mode {
        MtlsMode::Strict => ("STRICT", "a plaintext connection (no peer certificate)"),
        _ => ("DISABLE", "an mTLS connection"),
    };
    let by = match &mtls.source {
        Some(s) => format!("{} ({}, {} level)", s.object, s.location, s.level),
        None => "the mesh default".to_string(),
    };
    Some(format!("connection closed: mTLS mode {mode}, set by {by}, refuses {what}"))
}
