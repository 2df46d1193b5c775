//! The effective PeerAuthentication mode of a port: computed by meshca-policy (which `meshca
//! policy check` shares), re-exported here for the `peer_*` slots.

pub use meshca_policy::eval::effective_mtls;
