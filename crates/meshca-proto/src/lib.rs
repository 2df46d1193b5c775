#![forbid(unsafe_code)]
//! Istio's certificate authority gRPC API (`istio.v1.auth`) for meshca.
//!
//! The message types (prost) and the tonic client and server are generated
//! from `proto/istio/v1/auth/ca.proto` and committed under `src/generated/`,
//! so building this crate needs neither `protoc` nor a build script.
//! `google.protobuf.Struct` is mapped to [`prost_types::Struct`].
//!
//! After editing the `.proto`, regenerate with:
//!
//! ```text
//! MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-proto --test drift
//! ```
//!
//! A plain `cargo test -p meshca-proto` fails if the committed code is stale.

/// Generated code, laid out by protobuf package.
pub mod istio {
    /// `istio.v1`
    pub mod v1 {
        /// `istio.v1.auth`: the Istio CA service and its messages.
        pub mod auth {
            include!("generated/istio.v1.auth.rs");
        }
    }
}

/// `meshca.v1`: meshca's extension to the CA API, served on the same port.
pub mod meshca {
    /// `meshca.v1`: the CA change stream ([`CaEventsServer`]) and policy delivery
    /// ([`PolicyDeliveryServer`]).
    pub mod v1 {
        include!("generated/meshca.v1.rs");
    }
}

pub use meshca::v1::ca_events_client::CaEventsClient;
pub use meshca::v1::ca_events_server::{CaEvents, CaEventsServer};
pub use meshca::v1::policy_delivery_client::PolicyDeliveryClient;
pub use meshca::v1::policy_delivery_server::{PolicyDelivery, PolicyDeliveryServer};
pub use meshca::v1::{AgentReport, CaEvent};
pub use meshca::v1::{
    PolicyObject, PolicyReport, PolicyUpdate, RefreshJwksRequest, RefreshJwksResponse, ResourceState,
};

/// Full gRPC path of the `Watch` method of meshca's policy delivery stream.
pub const POLICY_WATCH_PATH: &str = "/meshca.v1.PolicyDelivery/Watch";
/// Full gRPC path of `PolicyDelivery/RefreshJwks`.
pub const POLICY_REFRESH_JWKS_PATH: &str = "/meshca.v1.PolicyDelivery/RefreshJwks";

/// Full gRPC path of the `Watch` method of meshca's change stream.
pub const CA_EVENTS_WATCH_PATH: &str = "/meshca.v1.CaEvents/Watch";

pub use istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
pub use istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer, SERVICE_NAME,
};
pub use istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};

/// Re-export so callers can build [`IstioCertificateRequest::metadata`]
/// without depending on `prost-types` themselves.
pub use prost_types;

/// Full gRPC path of the `CreateCertificate` method.
pub const CREATE_CERTIFICATE_PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// Key in [`IstioCertificateRequest::metadata`] under which a trusted node
/// agent names the identity it requests a certificate for.
pub const IMPERSONATED_IDENTITY_KEY: &str = "ImpersonatedIdentity";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_types::{value::Kind, Struct, Value};

    /// Reads one base-128 varint from `buf` starting at `*pos`.
    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = buf[*pos];
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
        }
        panic!("varint too long");
    }

    /// Splits an encoded message into its top-level `(field number, wire
    /// type, payload)` records.
    fn fields(buf: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos);
            let (field, wire_type) = (key >> 3, (key & 7) as u8);
            let payload = match wire_type {
                0 => {
                    let start = pos;
                    read_varint(buf, &mut pos);
                    buf[start..pos].to_vec()
                }
                2 => {
                    let len = usize::try_from(read_varint(buf, &mut pos)).unwrap();
                    pos += len;
                    buf[pos - len..pos].to_vec()
                }
                other => panic!("unexpected wire type {other} for field {field}"),
            };
            out.push((field, wire_type, payload));
        }
        out
    }

    fn sample_request() -> IstioCertificateRequest {
        let mut metadata = Struct::default();
        metadata.fields.insert(
            IMPERSONATED_IDENTITY_KEY.to_owned(),
            Value { kind: Some(Kind::StringValue("spiffe://cluster.local/ns/default/sa/app".to_owned())) },
        );
        IstioCertificateRequest {
            csr: "-----BEGIN CERTIFICATE REQUEST-----\n...".to_owned(),
            validity_duration: 86_400,
            metadata: Some(metadata),
        }
    }

    #[test]
    fn request_round_trips_with_metadata() {
        let req = sample_request();
        let bytes = req.encode_to_vec();
        let decoded = IstioCertificateRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, req);

        let identity = decoded
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY_KEY))
            .and_then(|v| v.kind.as_ref());
        assert_eq!(identity, Some(&Kind::StringValue("spiffe://cluster.local/ns/default/sa/app".to_owned())));
    }

    #[test]
    fn request_field_numbers_on_the_wire() {
        let req = sample_request();
        let bytes = req.encode_to_vec();

        // Key byte = (field number << 3) | wire type.
        assert_eq!(bytes[0], (1 << 3) | 2, "csr must be field 1, length-delimited");

        let parsed = fields(&bytes);
        let layout: Vec<(u64, u8)> = parsed.iter().map(|(f, w, _)| (*f, *w)).collect();
        assert_eq!(layout, vec![(1, 2), (3, 0), (4, 2)]);

        assert_eq!(parsed[0].2, req.csr.as_bytes());
        let mut pos = 0;
        assert_eq!(read_varint(&parsed[1].2, &mut pos), 86_400);
        let metadata = Struct::decode(parsed[2].2.as_slice()).unwrap();
        assert_eq!(Some(metadata), req.metadata);

        // Field 2 is reserved and never emitted.
        assert!(parsed.iter().all(|(f, _, _)| *f != 2));
        // Raw key bytes: validity_duration = (3 << 3) | 0, metadata = (4 << 3) | 2.
        let key_of_field_3 = 1 + 1 + req.csr.len();
        assert_eq!(bytes[key_of_field_3], 0x18);
        let key_of_field_4 = key_of_field_3 + 1 + parsed[1].2.len();
        assert_eq!(bytes[key_of_field_4], 0x22);
    }

    #[test]
    fn response_cert_chain_is_repeated_field_1() {
        let resp = IstioCertificateResponse { cert_chain: vec!["leaf".to_owned(), "root".to_owned()] };
        let bytes = resp.encode_to_vec();
        assert_eq!(fields(&bytes), vec![(1, 2, b"leaf".to_vec()), (1, 2, b"root".to_vec())]);
        assert_eq!(IstioCertificateResponse::decode(bytes.as_slice()).unwrap(), resp);
    }

    #[test]
    fn names_match_istio() {
        assert_eq!(SERVICE_NAME, "istio.v1.auth.IstioCertificateService");
        assert_eq!(CREATE_CERTIFICATE_PATH, format!("/{SERVICE_NAME}/CreateCertificate"));
    }
}
