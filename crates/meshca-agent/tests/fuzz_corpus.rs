//! Replays the fuzz corpus of SDS requests (fuzz/corpus/sds_request) with the
//! call of the fuzz target (fuzz/src/lib.rs): a `DiscoveryRequest` from Envoy
//! decodes, as the agent's SDS server decodes it, without panicking, and
//! re-encodes stably; the named seeds decode as expected.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use meshca_agent::envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn decode(data: &[u8]) -> Result<DiscoveryRequest, prost::DecodeError> {
    let req = DiscoveryRequest::decode(data)?;
    let bytes = req.encode_to_vec();
    assert_eq!(bytes.len(), req.encoded_len());
    let again = DiscoveryRequest::decode(bytes.as_slice()).expect("a re-encoded request decodes");
    assert_eq!(again.encode_to_vec(), bytes, "protobuf round trip is not stable");
    Ok(req)
}

#[test]
fn sds_request_corpus_decodes_or_is_refused() {
    let n = replay::replay("sds_request", |_, data| drop(decode(data)));
    assert!(n >= 5, "sds_request corpus has only {n} inputs");
    let seed = |name: &str| decode(&replay::input("sds_request", name));
    let initial = seed("initial").expect("valid request");
    assert_eq!(
        (initial.resource_names.as_slice(), initial.type_url.as_str()),
        (&["default".to_string()][..], SECRET_TYPE)
    );
    assert!(initial.node.is_some_and(|n| n.id.starts_with("sidecar~")));
    let nack = seed("nack").expect("valid request");
    assert_eq!(nack.error_detail.map(|s| (s.code, s.message)), Some((3, "bad cert".to_string())));
    assert_eq!(seed("many_names").map(|r| r.resource_names.len()).ok(), Some(51));
    assert!(seed("bad_utf8_name").is_err());
}
