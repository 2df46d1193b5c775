//! `meshca.v1.PolicyDelivery` on the CA's gRPC port, behind the same guard
//! and authentication as `CreateCertificate`. The caller's SPIFFE namespace
//! decides what it may read: its namespace's objects and the root
//! namespace's, never another namespace's.

use super::Policy;
use crate::active::ActiveCa;
use crate::authn::{Authenticator, Caller};
use crate::service::{authenticate, AUTH_FAILURE_MESSAGE};
use meshca_proto::{PolicyDelivery, PolicyReport, PolicyUpdate, RefreshJwksRequest, RefreshJwksResponse};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct PolicyService {
    pub policy: Arc<Policy>,
    pub active: Arc<ActiveCa>,
    pub auth: Arc<Authenticator>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<PolicyUpdate, Status>> + Send>>;

impl PolicyService {
    /// The caller and its namespace, before any other work.
    async fn caller<T>(&self, request: &Request<T>, what: &str) -> Result<(Caller, String), Status> {
        let peer = request.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let snap = self.active.load();
        let caller = authenticate(&self.auth, request, &snap.material).await.map_err(|e| {
            tracing::info!(caller = %peer, reason = %e, "{what} refused");
            Status::unauthenticated(AUTH_FAILURE_MESSAGE)
        })?;
        let ns = caller.identity.namespace().to_string();
        if ns.is_empty() {
            tracing::info!(caller = %peer, identity = %caller.identity, "{what} refused: the identity names no namespace");
            return Err(Status::permission_denied(
                "policies are served to workload identities (spiffe://<td>/ns/<ns>/sa/<sa>) only",
            ));
        }
        Ok((caller, ns))
    }
}

#[tonic::async_trait]
impl PolicyDelivery for PolicyService {
    type WatchStream = UpdateStream;

    async fn watch(&self, request: Request<Streaming<PolicyReport>>) -> Result<Response<UpdateStream>, Status> {
        let (caller, ns) = self.caller(&request, "policy stream").await?;
        let peer = request.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let state = self.policy.state.clone();
        let Some(reg) = state.agents.register(caller.identity.to_string(), ns.clone(), peer.clone(), state.now())
        else {
            return Err(Status::resource_exhausted("too many agents connected to this CA"));
        };
        tracing::debug!(identity = %caller.identity, %peer, "agent connected to policy delivery");
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<PolicyUpdate, Status>>(4);
        tokio::spawn(async move {
            let id = reg.id;
            let _reg = reg;
            let mut changes = state.subscribe();
            let mut last: Option<(String, String)> = None;
            let mut changed = true;
            loop {
                if changed {
                    let snap = changes.borrow_and_update().clone();
                    if snap.loaded {
                        let u = state.update_for(&snap, &ns);
                        let key = (u.version.clone(), u.refused.clone());
                        if last.as_ref() != Some(&key) {
                            let names =
                                u.objects.iter().map(|o| format!("{}/{}/{}", o.kind, o.namespace, o.name)).collect();
                            state.agents.sent(id, &u.version, names);
                            if tx.send(Ok(u)).await.is_err() {
                                return;
                            }
                            state.count_sent();
                            last = Some(key);
                        }
                    }
                }
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(r)) => {
                            state.agents.report(id, &r, state.now());
                            changed = false;
                        }
                        _ => return,
                    },
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                        changed = true;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn refresh_jwks(
        &self,
        request: Request<RefreshJwksRequest>,
    ) -> Result<Response<RefreshJwksResponse>, Status> {
        let (_, ns) = self.caller(&request, "JWKS refresh").await?;
        let key = request.into_inner().key;
        let state = &self.policy.state;
        let snap = state.load();
        let known = snap
            .objects
            .iter()
            .filter(|o| state.visible(&ns, &o.namespace))
            .flat_map(|o| o.jwks_keys.iter())
            .find(|k| k.key == key)
            .cloned();
        let answer = |started: bool, reason: &str| {
            Ok(Response::new(RefreshJwksResponse { started, reason: reason.to_string() }))
        };
        let Some(k) = known else {
            return answer(
                false,
                "unknown key: not a jwksUri or issuer of a RequestAuthentication served to this caller",
            );
        };
        match self.policy.refresh_now(k) {
            Ok(()) => answer(true, ""),
            Err(reason) => answer(false, reason),
        }
    }
}
