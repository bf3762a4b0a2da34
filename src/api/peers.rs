//! `fedreg.v1.PeerService`: peer records, `RefreshPeer` and peering by
//! invitation, for admins; the operations are [`crate::registry::peers`],
//! [`Refresher::refresh_peer`], [`crate::registry::invitations::create`]
//! and [`crate::peering::join::join`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::peering::follow::Followers;
use crate::peering::join;
use crate::peering::refresh::Refresher;
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_server::PeerService;
use crate::registry::invitations::{self, Serving};
use crate::registry::peers;

/// Serves the peer records, refreshes and invitations.
#[derive(Clone)]
pub struct PeerApi {
    refresher: Refresher,
    followers: Followers,
    serving: Arc<Serving>,
}

impl PeerApi {
    /// A service that refreshes with `refresher` (and uses its store and
    /// client certificate), tells `followers` when peer records change,
    /// and invites and joins as the registry `serving` describes.
    pub fn new(refresher: Refresher, followers: Followers, serving: Arc<Serving>) -> PeerApi {
        PeerApi {
            refresher,
            followers,
            serving,
        }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn create_peer(
        &self,
        request: Request<pb::CreatePeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        Ok(Response::new(
            peers::create(&self.refresher.store, &self.followers, request.into_inner()).await?,
        ))
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
        Ok(Response::new(
            peers::update(&self.refresher.store, &self.followers, request.into_inner()).await?,
        ))
    }

    async fn delete_peer(
        &self,
        request: Request<pb::DeletePeerRequest>,
    ) -> Result<Response<pb::DeletePeerResponse>, Status> {
        Ok(Response::new(
            peers::delete(&self.refresher.store, &self.followers, request.into_inner()).await?,
        ))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        Ok(Response::new(
            invitations::create(&self.refresher.store, &self.serving, request.into_inner()).await?,
        ))
    }

    async fn list_invitations(
        &self,
        _request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        Ok(Response::new(
            invitations::list(&self.refresher.store).await?,
        ))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        Ok(Response::new(
            invitations::revoke(&self.refresher.store, request.into_inner()).await?,
        ))
    }

    async fn join_peer(
        &self,
        request: Request<pb::JoinPeerRequest>,
    ) -> Result<Response<pb::JoinPeerResponse>, Status> {
        Ok(Response::new(
            join::join(
                &self.refresher.store,
                &self.followers,
                &self.serving,
                self.refresher.clients.identity(),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn refresh_peer(
        &self,
        request: Request<pb::RefreshPeerRequest>,
    ) -> Result<Response<pb::RefreshReport>, Status> {
        Ok(Response::new(
            self.refresher.refresh_peer(request.into_inner()).await?,
        ))
    }
}
