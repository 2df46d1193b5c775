//! Replays the fuzz corpus of the CA's gRPC messages (fuzz/corpus/
//! {grpc_request,agent_report}) with the calls of the fuzz targets
//! (fuzz/src/lib.rs): decoding never panics, a decoded message re-encodes
//! stably, and the named seeds decode as expected.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use meshca_proto::prost_types::value::Kind;
use meshca_proto::{AgentReport, IstioCertificateRequest, IMPERSONATED_IDENTITY_KEY};
use prost::Message;

fn round_trip<M: Message + Default>(msg: &M) {
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes.len(), msg.encoded_len());
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes, "protobuf round trip is not stable");
}

/// Decode as tonic does, then look up `ImpersonatedIdentity` as the CA does.
fn request(data: &[u8]) -> Result<(IstioCertificateRequest, Option<Kind>), prost::DecodeError> {
    let req = IstioCertificateRequest::decode(data)?;
    round_trip(&req);
    let kind = req.metadata.as_ref().and_then(|m| m.fields.get(IMPERSONATED_IDENTITY_KEY)).and_then(|v| v.kind.clone());
    Ok((req, kind))
}

#[test]
fn grpc_request_corpus_decodes_or_is_refused() {
    let n = replay::replay("grpc_request", |_, data| drop(request(data)));
    assert!(n >= 10, "grpc_request corpus has only {n} inputs");
    let seed = |name: &str| request(&replay::input("grpc_request", name));
    let (plain, kind) = seed("plain").expect("valid request");
    assert!(plain.csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert_eq!((plain.validity_duration, kind), (86400, None));
    let (_, kind) = seed("impersonate").expect("valid request");
    assert_eq!(kind, Some(Kind::StringValue("spiffe://cluster.local/ns/default/sa/httpbin".into())));
    assert!(matches!(seed("impersonate_number"), Ok((_, Some(Kind::NumberValue(_))))));
    assert_eq!(seed("negative_ttl").map(|(r, _)| r.validity_duration).ok(), Some(-1));
    for bad in ["deep_list", "huge_len_prefix", "truncated"] {
        assert!(seed(bad).is_err(), "{bad}: decoded");
    }
}

#[test]
fn agent_report_corpus_decodes_or_is_refused() {
    let decode = |data: &[u8]| AgentReport::decode(data).inspect(round_trip);
    let n = replay::replay("agent_report", |_, data| drop(decode(data)));
    assert!(n >= 3, "agent_report corpus has only {n} inputs");
    assert_eq!(decode(&replay::input("agent_report", "plain")).map(|r| r.generation).ok(), Some(7));
    assert_eq!(decode(&replay::input("agent_report", "max_gen")).map(|r| r.generation).ok(), Some(u64::MAX));
    assert!(decode(&replay::input("agent_report", "bad_utf8")).is_err());
    assert!(decode(&replay::input("agent_report", "wrong_wire")).is_err());
}
