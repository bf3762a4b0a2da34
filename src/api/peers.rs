//! `fedreg.v1.PeerService`: peer records and `RefreshPeer`, for admins.

use tonic::{Request, Response, Status};

use crate::peering::peers;
use crate::peering::refresh::{PeerRef, Refresher};
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_server::PeerService;

/// Serves the peer records and refreshes.
#[derive(Clone)]
pub struct PeerApi {
    refresher: Refresher,
}

impl PeerApi {
    /// A service that refreshes with `refresher` (and uses its store).
    pub fn new(refresher: Refresher) -> PeerApi {
        PeerApi { refresher }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn create_peer(
        &self,
        request: Request<pb::CreatePeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        Ok(Response::new(
            peers::create(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn get_peer(
        &self,
        request: Request<pb::GetPeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        Ok(Response::new(
            peers::get(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        Ok(Response::new(
            peers::list(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn update_peer(
        &self,
        request: Request<pb::UpdatePeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        Ok(Response::new(
            peers::update(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn delete_peer(
        &self,
        request: Request<pb::DeletePeerRequest>,
    ) -> Result<Response<pb::DeletePeerResponse>, Status> {
        Ok(Response::new(
            peers::delete(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn refresh_peer(
        &self,
        request: Request<pb::RefreshPeerRequest>,
    ) -> Result<Response<pb::RefreshReport>, Status> {
        let req = request.into_inner();
        let target = match req.peer {
            Some(pb::refresh_peer_request::Peer::PeerId(id)) => PeerRef::Id(id),
            Some(pb::refresh_peer_request::Peer::Peername(name)) => PeerRef::Name(name),
            None => {
                return Err(
                    crate::error::Error::invalid("peer", "", "set peer_id or peername").into(),
                );
            }
        };
        Ok(Response::new(
            self.refresher.refresh(target, req.force, req.full).await?,
        ))
    }
}
