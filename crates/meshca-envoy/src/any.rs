//! Protobuf-JSON filter configs (`{"@type": ..., ...}`) to binary [`prost_types::Any`], through a
//! [`prost_reflect::DescriptorPool`] built from the committed `envoy_descriptors.bin`.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};

use crate::EncodeError;

/// The committed `FileDescriptorSet` (no source info) of the Envoy filter configs policies use:
/// HTTP and network RBAC, jwt_authn, HTTP and network ext_authz, the URI-template path matcher
/// and everything they import. Regenerate with
/// `MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-envoy --test drift`.
pub const ENVOY_DESCRIPTORS: &[u8] = include_bytes!("envoy_descriptors.bin");

/// The proto files (relative to Envoy's `data-plane-api`) whose messages the descriptor set covers;
/// the drift test compiles exactly these with `include_imports`.
pub const DESCRIPTOR_ROOTS: &[&str] = &[
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/network/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/path/match/uri_template/v3/uri_template_match.proto",
];

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The descriptor pool decoded once from [`ENVOY_DESCRIPTORS`].
///
/// # Panics
///
/// Only if the committed descriptor set is corrupt, which the crate's tests rule out.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(ENVOY_DESCRIPTORS).expect("committed envoy_descriptors.bin is a valid FileDescriptorSet")
    })
}

/// Converts a protobuf-JSON object carrying `"@type"` (the `typed_config` shape
/// `meshca_policy::compile` emits) to a binary `Any` with the same type URL.
///
/// Deserialization is strict: unknown fields, wrong value types and unknown nested `@type`s are
/// errors. Errors name the message type and the JSON path of the offending field
/// (e.g. `rules.policies.ns[foo]-policy[x]-rule[0].permissions[0].bogus`).
pub fn json_to_any(value: &serde_json::Value) -> Result<prost_types::Any, EncodeError> {
    let type_url = value
        .get("@type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| EncodeError::MissingType { json: truncate(&value.to_string()) })?;
    let type_name = type_url.strip_prefix(TYPE_URL_PREFIX).unwrap_or(type_url);
    let desc = descriptor_pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| EncodeError::UnknownType { type_url: type_url.to_string() })?;
    let mut body = value.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("@type");
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(&body, &mut track);
    let message = DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| EncodeError::Json {
        type_url: type_url.to_string(),
        path: track.path().to_string(),
        message: e.to_string(),
    })?;
    Ok(prost_types::Any { type_url: type_url.to_string(), value: message.encode_to_vec() })
}

/// [`json_to_any`] as envoy-types' own `google.protobuf.Any` (what
/// `TypedExtensionConfig::typed_config` holds).
pub fn json_to_envoy_any(value: &serde_json::Value) -> Result<envoy_types::pb::google::protobuf::Any, EncodeError> {
    let any = json_to_any(value)?;
    Ok(envoy_types::pb::google::protobuf::Any { type_url: any.type_url, value: any.value })
}

fn truncate(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
