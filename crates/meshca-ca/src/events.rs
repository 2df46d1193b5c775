//! `meshca.v1.CaEvents/Watch`: the change stream for meshca agents, on the
//! gRPC port next to `CreateCertificate` and authenticated the same way.
//!
//! The CA sends the current state at once and an event on every change of
//! signer or bundle; the agent renews early on a change and reports the
//! bundle it then holds, which is how a prepared root switch learns that
//! every connected agent has the new root (see `rotation`).

use crate::active::{ActiveCa, Snapshot};
use crate::authn::Authenticator;
use crate::clock::SharedClock;
use crate::service::{authenticate, AUTH_FAILURE_MESSAGE};
use meshca_pki::inspect::sha256_hex;
use meshca_proto::{AgentReport, CaEvent, CaEvents};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Largest report an agent may send (a report is two short fields).
pub const MAX_REPORT_BYTES: usize = 4096;

pub struct EventsService {
    pub active: Arc<ActiveCa>,
    pub auth: Arc<Authenticator>,
    pub clock: SharedClock,
}

/// The event describing `snap`.
pub fn event(snap: &Snapshot, root_prepared: bool) -> CaEvent {
    let m = &snap.material;
    CaEvent {
        generation: snap.generation,
        signer_sha256: sha256_hex(m.signer().cert()),
        bundle_pem: m.roots_pem().to_string(),
        bundle_sha256: sha256_hex(m.roots_pem().as_bytes()),
        root_prepared,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<CaEvent, Status>> + Send>>;

#[tonic::async_trait]
impl CaEvents for EventsService {
    type WatchStream = EventStream;

    async fn watch(&self, request: Request<Streaming<AgentReport>>) -> Result<Response<EventStream>, Status> {
        let peer = request.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let snap = self.active.load();
        let caller = match authenticate(&self.auth, &request, &snap.material).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(caller = %peer, reason = %e, "change stream refused");
                return Err(Status::unauthenticated(AUTH_FAILURE_MESSAGE));
            }
        };
        let agents = self.active.staging.agents.clone();
        let Some(id) = agents.register(caller.identity.to_string(), peer.clone(), self.clock.now()) else {
            return Err(Status::resource_exhausted("too many agents connected to this CA"));
        };
        tracing::debug!(identity = %caller.identity, %peer, "agent connected to the change stream");
        let mut inbound = request.into_inner();
        let active = self.active.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<CaEvent, Status>>(4);
        tokio::spawn(async move {
            let _registered = agents.guard(id);
            let mut changes = active.subscribe();
            changes.mark_unchanged();
            let send = |snap: Arc<Snapshot>| event(&snap, active.staging.has_prepared());
            if tx.send(Ok(send(active.load()))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(r)) => agents.report(id, &r.bundle_sha256),
                        _ => return,
                    },
                    r = changes.changed() => {
                        if r.is_err() || tx.send(Ok(send(active.load()))).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
