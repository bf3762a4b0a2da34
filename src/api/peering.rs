//! `fedreg.v1.PeeringService`: `GetPeerData` and `Follow`, called by peers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::auth::Principal;
use super::sessions::{Sessions, StreamSlot};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::peering::announce::{self, Checkpoints, FollowStream};
use crate::peering::digest_service;
use crate::peering::export::{self, Audience, PeerDataStream};
use crate::peering::outbox::Delivery;
use crate::proto::v1 as pb;
use crate::proto::v1::peering_service_server::PeeringService;
use crate::store::Store;

/// Ids a `GetPeerData` call may list in `only`.
const MAX_LISTED_IDS: usize = 100_000;

/// Serves this registry's local objects to peers.
#[derive(Clone)]
pub struct PeeringApi {
    store: Store,
    registry_name: String,
    stop: CancellationToken,
    sessions: Arc<Sessions>,
    send_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The checkpoints the follow streams announce, read from the first
    /// `Follow` call on.
    checkpoints: Arc<OnceLock<Checkpoints>>,
    /// Held by the `GetDigest` call bringing the digests up to date.
    catching_up: Arc<tokio::sync::Mutex<()>>,
}

impl PeeringApi {
    /// A service over `store`, announcing itself as `registry_name`; its
    /// follow streams end when `stop` is cancelled. Streams take their slots
    /// in `sessions`; a caller that reads nothing for `send_timeout` loses
    /// its stream. Streams are counted in `metrics`.
    pub fn new(
        store: Store,
        registry_name: String,
        stop: CancellationToken,
        sessions: Arc<Sessions>,
        send_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> PeeringApi {
        PeeringApi {
            store,
            registry_name,
            stop,
            sessions,
            send_timeout,
            metrics,
            checkpoints: Arc::default(),
            catching_up: Arc::default(),
        }
    }

    /// A stream slot for the caller's token (none without a token).
    fn slot(
        &self,
        principal: Option<&Principal>,
        call: &str,
    ) -> Result<Option<StreamSlot>, Status> {
        principal
            .map(|p| self.sessions.open_stream(p.token_id, call))
            .transpose()
            .map_err(Status::from)
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
        let principal = request.extensions().get::<Principal>();
        let audience = Audience::of(principal.and_then(|p| p.peer_id));
        let slot = self.slot(principal, "GetPeerData")?;
        let request = request.into_inner();
        if let Some(only) = &request.only {
            let listed = only.site_ids.len()
                + only.key_ids.len()
                + only.person_ids.len()
                + only.node_ids.len()
                + only.slice_ids.len();
            if listed > MAX_LISTED_IDS {
                return Err(Error::invalid(
                    "only",
                    format!("{listed} ids"),
                    format!("at most {MAX_LISTED_IDS}"),
                )
                .into());
            }
        }
        let request = export::Request {
            registry_name: self.registry_name.clone(),
            audience,
            since: request.since,
            // Checked when the call was authenticated.
            token_id: None,
            only: request.only,
        };
        let delivery = Delivery {
            send_timeout: self.send_timeout,
            slot,
            meter: Some(self.metrics.peer_data_stream()),
        };
        let stream: PeerDataStream = export::stream(self.store.clone(), request, delivery);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn follow(
        &self,
        request: Request<pb::FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let request = request.into_inner();
        let heartbeat = announce::heartbeat(request.heartbeat_seconds)?;
        let slot = self.slot(principal.as_ref(), "Follow")?;
        let subscription = announce::Subscription {
            heartbeat,
            token_id: principal.as_ref().map(|p| p.token_id),
            changes: request.include_changes.then(|| export::Request {
                registry_name: self.registry_name.clone(),
                audience: Audience::of(principal.as_ref().and_then(|p| p.peer_id)),
                since: None,
                token_id: principal.as_ref().map(|p| p.token_id),
                only: None,
            }),
            since: request.since,
            slot,
        };
        let checkpoints = self.checkpoints.get_or_init(|| {
            let reads = self.metrics.follow_reads();
            Checkpoints::start(
                self.store.clone(),
                self.registry_name.clone(),
                reads,
                self.stop.clone(),
            )
        });
        Ok(Response::new(announce::stream(
            self.store.clone(),
            checkpoints,
            subscription,
            self.send_timeout,
            self.metrics.follow_stream(),
            self.stop.clone(),
        )))
    }

    async fn get_digest(
        &self,
        request: Request<pb::GetDigestRequest>,
    ) -> Result<Response<pb::GetDigestResponse>, Status> {
        let response =
            digest_service::get_digest(&self.store, &self.catching_up, request.into_inner())
                .await?;
        Ok(Response::new(response))
    }
}
