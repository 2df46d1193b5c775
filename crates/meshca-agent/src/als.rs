//! Envoy's gRPC access log service (`StreamAccessLogs`) on the agent's socket.
//! The bootstrap logs the requests the JWT filter refused; when one was
//! refused because the inlined JWKS has no key for the token's `kid` (the IdP
//! rotated its key), the policy client asks the server to refetch the JWKS at
//! once, so the new key is served within a second or two instead of waiting
//! for the periodic refresh.

use crate::policy::PolicyHandle;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{StreamAccessLogsMessage, StreamAccessLogsResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Envoy's response code detail for a token whose `kid` the JWKS lacks.
pub const UNKNOWN_KID_DETAIL: &str = "Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt";

#[derive(Clone)]
pub struct AlsService {
    policy: Arc<PolicyHandle>,
}

impl AlsService {
    pub fn new(policy: Arc<PolicyHandle>) -> Self {
        Self { policy }
    }

    pub fn into_server(self) -> AccessLogServiceServer<Self> {
        AccessLogServiceServer::new(self)
    }
}

/// True when any HTTP entry of the message was refused for an unknown `kid`.
pub fn unknown_kid(msg: &StreamAccessLogsMessage) -> bool {
    match &msg.log_entries {
        Some(LogEntries::HttpLogs(h)) => h
            .log_entry
            .iter()
            .any(|e| e.response.as_ref().is_some_and(|r| r.response_code_details.contains(UNKNOWN_KID_DETAIL))),
        _ => false,
    }
}

#[tonic::async_trait]
impl AccessLogService for AlsService {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut inbound = request.into_inner();
        loop {
            match inbound.message().await {
                Ok(Some(msg)) => {
                    if unknown_kid(&msg) {
                        tracing::info!("Envoy refused a token whose kid the JWKS lacks: refreshing the JWKS");
                        self.policy.jwks_unknown_kid();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("access log stream error: {e}");
                    break;
                }
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::data::accesslog::v3::{HttpAccessLogEntry, HttpResponseProperties};
    use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::HttpAccessLogEntries;

    fn msg(details: &[&str]) -> StreamAccessLogsMessage {
        let log_entry = details
            .iter()
            .map(|d| HttpAccessLogEntry {
                response: Some(HttpResponseProperties { response_code_details: d.to_string(), ..Default::default() }),
                ..Default::default()
            })
            .collect();
        StreamAccessLogsMessage {
            log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries { log_entry })),
            ..Default::default()
        }
    }

    #[test]
    fn only_an_unknown_kid_asks_for_a_refresh() {
        assert!(unknown_kid(&msg(&["via_upstream", &format!("jwt_authn_access_denied{{{UNKNOWN_KID_DETAIL}}}")])));
        assert!(!unknown_kid(&msg(&[
            "jwt_authn_access_denied{Jwt_is_expired}",
            "rbac_access_denied_matched_policy[x]"
        ])));
        assert!(!unknown_kid(&StreamAccessLogsMessage::default()));
    }
}
