//! Istio security policies for meshca: load, validate, compile to Envoy, evaluate, explain, lint,
//! convert and diff.
//!
//! The crate is pure: it never touches files, the network or the clock. Callers (the `meshca policy`
//! CLI) read files and pass their text to [`load::load_str`], build a [`model::PolicySet`] and hand
//! it, with a [`model::Workload`] and [`model::MeshSettings`], to the other modules.
//!
//! * [`model`]: the typed objects (security.istio.io v1/v1beta1, rbac.istio.io and
//!   authentication.istio.io v1alpha1) and the policy set / workload / mesh settings.
//! * [`load`]: YAML/JSON text to objects, with file:line:field errors.
//! * [`validate`]: Istio's validation rules (errors and warnings).
//! * [`compile`]: the Envoy filters Istio would generate for a workload.
#![forbid(unsafe_code)]

pub mod compile;
pub mod convert;
pub mod diff;
pub mod eval;
pub mod explain;
pub mod lint;
pub mod load;
pub mod model;
mod schema;
pub mod validate;
mod yaml;
