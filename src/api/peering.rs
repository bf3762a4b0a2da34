//! `fedreg.v1.PeeringService`: `GetPeerData` and `Follow`, called by peers.

use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::auth::Principal;
use crate::peering::announce::{self, FollowStream};
use crate::peering::export::{self, PeerDataStream};
use crate::proto::v1 as pb;
use crate::proto::v1::peering_service_server::PeeringService;
use crate::store::Store;

/// Serves this registry's local objects to peers.
#[derive(Clone)]
pub struct PeeringApi {
    store: Store,
    registry_name: String,
    stop: watch::Receiver<bool>,
}

impl PeeringApi {
    /// A service over `store`, announcing itself as `registry_name`; its
    /// follow streams end when `stop` turns true.
    pub fn new(store: Store, registry_name: String, stop: watch::Receiver<bool>) -> PeeringApi {
        PeeringApi {
            store,
            registry_name,
            stop,
        }
    }
}

#[tonic::async_trait]
impl PeeringService for PeeringApi {
    type GetPeerDataStream = BoxStream<pb::PeerDataChunk>;
    type FollowStream = FollowStream;

    async fn get_peer_data(
        &self,
        request: Request<pb::GetPeerDataRequest>,
    ) -> Result<Response<Self::GetPeerDataStream>, Status> {
        // A peer gets its own nodes as cached here (PeerNodes); an admin
        // calling by hand gets the local objects only.
        let caller_peer = request
            .extensions()
            .get::<Principal>()
            .and_then(|p| p.peer_id);
        let request = export::Request {
            registry_name: self.registry_name.clone(),
            caller_peer,
            since: request.into_inner().since,
        };
        let stream: PeerDataStream = export::stream(self.store.clone(), request);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn follow(
        &self,
        request: Request<pb::FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let request = request.into_inner();
        let subscription = announce::Subscription {
            heartbeat: announce::heartbeat(request.heartbeat_seconds)?,
            token_id: principal.as_ref().map(|p| p.token_id),
            changes: request.include_changes.then(|| export::Request {
                registry_name: self.registry_name.clone(),
                caller_peer: principal.as_ref().and_then(|p| p.peer_id),
                since: None,
            }),
            since: request.since,
        };
        Ok(Response::new(announce::stream(
            self.store.clone(),
            subscription,
            self.stop.clone(),
        )))
    }
}
