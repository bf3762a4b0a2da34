//! `fedreg.v1.PeerService`: peer records and `RefreshPeer`, for admins.

use tonic::{Request, Response, Status};

use crate::peering::follow::Followers;
use crate::peering::peers;
use crate::peering::refresh::{PeerRef, RefreshOptions, Refresher};
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_server::PeerService;

/// Serves the peer records and refreshes.
#[derive(Clone)]
pub struct PeerApi {
    refresher: Refresher,
    followers: Followers,
}

impl PeerApi {
    /// A service that refreshes with `refresher` (and uses its store) and
    /// tells `followers` when peer records change.
    pub fn new(refresher: Refresher, followers: Followers) -> PeerApi {
        PeerApi {
            refresher,
            followers,
        }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn create_peer(
        &self,
        request: Request<pb::CreatePeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        let peer =
            peers::create(&self.refresher.store, &self.followers, request.into_inner()).await?;
        self.followers.peers_changed();
        Ok(Response::new(peer))
    }

    async fn get_peer(
        &self,
        request: Request<pb::GetPeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        Ok(Response::new(
            peers::get(&self.refresher.store, &self.followers, request.into_inner()).await?,
        ))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        Ok(Response::new(
            peers::list(&self.refresher.store, &self.followers, request.into_inner()).await?,
        ))
    }

    async fn update_peer(
        &self,
        request: Request<pb::UpdatePeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        let peer =
            peers::update(&self.refresher.store, &self.followers, request.into_inner()).await?;
        self.followers.peers_changed();
        Ok(Response::new(peer))
    }

    async fn delete_peer(
        &self,
        request: Request<pb::DeletePeerRequest>,
    ) -> Result<Response<pb::DeletePeerResponse>, Status> {
        let removed = peers::delete(&self.refresher.store, request.into_inner()).await?;
        self.followers.peers_changed();
        Ok(Response::new(removed))
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
            self.refresher
                .refresh(
                    target,
                    RefreshOptions {
                        force: req.force,
                        full: req.full,
                        mode: pb::SyncMode::Manual,
                    },
                )
                .await?,
        ))
    }
}
