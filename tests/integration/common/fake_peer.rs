//! A scripted peer: a `PeeringService` that serves whatever dump a test
//! gives it, whole, cut short, or stalled, so refreshes can be tested
//! against bad data and broken streams, or so a registry caches exactly
//! the foreign objects a test needs (chosen peer ids, an e-mail that a
//! local person also uses, objects of several peers); and builders of the
//! exported objects it serves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use fedreg::proto::v1 as pb;
use fedreg::proto::v1::peering_service_server::{PeeringService, PeeringServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::TestServer;
use super::federation::refresh;

/// How a scripted stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With the trailer the script holds.
    Complete,
    /// With an error after the first `n` chunks.
    BreakAfter(usize),
    /// Silently stalled after the first `n` chunks, never finishing.
    StallAfter(usize),
    /// After the first `n` chunks, an empty batch every `every`, never
    /// finishing (a peer that keeps a refresh waiting while looking alive).
    DripAfter(usize, std::time::Duration),
}

/// What the fake peer serves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Chunks in order (header, batches, trailer).
    pub chunks: Vec<pb::PeerDataChunk>,
    /// How the stream ends.
    pub ending: Ending,
}

/// A fake peer serving on a loopback port until dropped.
pub struct FakePeer {
    script: Arc<Mutex<Script>>,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakePeer {
    /// Starts a fake peer serving `batch` as a complete dump.
    pub async fn start(batch: pb::PeerDataBatch) -> FakePeer {
        let script = Arc::new(Mutex::new(Script {
            chunks: dump(batch),
            ending: Ending::Complete,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = PeeringServiceServer::new(Scripted(script.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        FakePeer {
            script,
            addr,
            _stop: stop,
        }
    }

    /// The URL to store on a peer record.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers this fake on `server` as peer `peername` (its outbound
    /// token is never checked); returns the peer's id there.
    pub async fn register(&self, server: &TestServer, peername: &str) -> i64 {
        server
            .peers()
            .await
            .create_peer(pb::CreatePeerRequest {
                peername: peername.into(),
                peer_url: self.url(),
                outbound_token: "fr_any".into(),
                ..Default::default()
            })
            .await
            .expect("create peer")
            .into_inner()
            .peer_id
    }

    /// Serves `batch` as a complete dump from now on.
    pub fn serve(&self, batch: pb::PeerDataBatch) {
        self.set(dump(batch), Ending::Complete);
    }

    /// Replaces the script.
    pub fn set(&self, chunks: Vec<pb::PeerDataChunk>, ending: Ending) {
        *self.script.lock().unwrap() = Script { chunks, ending };
    }
}

/// Caches `batch` on `server` as the objects of peer `peername`: serves it
/// from a fake peer registered there and refreshes that peer once; returns
/// the peer's id. The fake stops afterwards; the cache stays.
pub async fn cache(server: &TestServer, peername: &str, batch: pb::PeerDataBatch) -> i64 {
    let fake = FakePeer::start(batch).await;
    let peer_id = fake.register(server, peername).await;
    refresh(server, peer_id).await;
    peer_id
}

/// A complete dump of `batch`: header, the batch, a matching trailer.
pub fn dump(batch: pb::PeerDataBatch) -> Vec<pb::PeerDataChunk> {
    snapshot(batch, pb::SnapshotKind::Unspecified as i32, None)
}

/// A complete stream of `batch` as a snapshot of `kind` (a
/// [`pb::SnapshotKind`], or any number) reaching `checkpoint`: header, the
/// batch, a matching trailer.
pub fn snapshot(
    batch: pb::PeerDataBatch,
    kind: i32,
    checkpoint: Option<pb::Checkpoint>,
) -> Vec<pb::PeerDataChunk> {
    use pb::peer_data_chunk::Part;
    let deleted = batch.deleted.as_ref().map_or(0, |d| {
        d.site_ids.len()
            + d.key_ids.len()
            + d.person_ids.len()
            + d.node_ids.len()
            + d.slice_ids.len()
    });
    let trailer = pb::PeerDataTrailer {
        deleted: deleted as i64,
        checkpoint: checkpoint.clone(),
        sites: batch.sites.len() as i64,
        keys: batch.keys.len() as i64,
        persons: batch.persons.len() as i64,
        nodes: batch.nodes.len() as i64,
        slices: batch.slices.len() as i64,
        peer_nodes: batch.peer_nodes.len() as i64,
        db_seconds: 0.0,
    };
    vec![
        pb::PeerDataChunk {
            part: Some(Part::Header(pb::PeerDataHeader {
                registry_name: "fake".into(),
                schema_version: 1,
                snapshot_time: None,
                kind,
                checkpoint,
                ..Default::default()
            })),
        },
        pb::PeerDataChunk {
            part: Some(Part::Batch(batch)),
        },
        pb::PeerDataChunk {
            part: Some(Part::Trailer(trailer)),
        },
    ]
}

/// An enabled site with id `id` at the peer.
pub fn site(id: i64, login_base: &str) -> pb::ExportedSite {
    pb::ExportedSite {
        site_id: id,
        login_base: login_base.into(),
        name: format!("Site {login_base}"),
        enabled: true,
        ..Default::default()
    }
}

/// An ssh key with id `id` at the peer.
pub fn key(id: i64, key: &str) -> pb::ExportedKey {
    pb::ExportedKey {
        key_id: id,
        key_type: "ssh".into(),
        key: key.into(),
        is_blacklisted: false,
    }
}

/// An enabled person (Ada Lovelace) with id `id` at the peer, without
/// keys, roles or sites.
pub fn person(id: i64, email: &str) -> pb::ExportedPerson {
    pb::ExportedPerson {
        person_id: id,
        email: email.into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        enabled: true,
        ..Default::default()
    }
}

/// A regular node in boot state `boot` with id `id` at the peer, of the
/// peer's site `site_id` (other fields: `pb::ExportedNode { boot_state,
/// ..node(...) }`).
pub fn node(id: i64, hostname: &str, site_id: i64) -> pb::ExportedNode {
    pb::ExportedNode {
        node_id: id,
        hostname: hostname.into(),
        site_id,
        node_type: "regular".into(),
        boot_state: "boot".into(),
        ..Default::default()
    }
}

/// A `plc-instantiated` slice with id `id` at the peer, of the peer's site
/// `site_id`, without nodes or persons (other fields: `pb::ExportedSlice {
/// instantiation, ..slice(...) }`).
pub fn slice(id: i64, name: &str, site_id: i64) -> pb::ExportedSlice {
    pb::ExportedSlice {
        slice_id: id,
        site_id,
        name: name.into(),
        instantiation: "plc-instantiated".into(),
        max_nodes: 10,
        ..Default::default()
    }
}

struct Scripted(Arc<Mutex<Script>>);

#[tonic::async_trait]
impl PeeringService for Scripted {
    type GetPeerDataStream = BoxStream<pb::PeerDataChunk>;
    type FollowStream = BoxStream<pb::FollowEvent>;

    /// A scripted peer serves snapshots only, as a registry that predates
    /// follow mode would.
    async fn follow(
        &self,
        _request: Request<pb::FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        Err(Status::unimplemented("this peer does not serve Follow"))
    }

    /// Nor digests.
    async fn get_digest(
        &self,
        _request: Request<pb::GetDigestRequest>,
    ) -> Result<Response<pb::GetDigestResponse>, Status> {
        Err(Status::unimplemented("this peer does not serve GetDigest"))
    }

    async fn get_peer_data(
        &self,
        _request: Request<pb::GetPeerDataRequest>,
    ) -> Result<Response<Self::GetPeerDataStream>, Status> {
        let script = self.0.lock().unwrap().clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let limit = match script.ending {
                Ending::Complete => script.chunks.len(),
                Ending::BreakAfter(n) | Ending::StallAfter(n) | Ending::DripAfter(n, _) => n,
            };
            for chunk in script.chunks.into_iter().take(limit) {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            match script.ending {
                Ending::Complete => {}
                Ending::BreakAfter(_) => {
                    let _ = tx.send(Err(Status::internal("disk on fire"))).await;
                }
                Ending::StallAfter(_) => {
                    // Keep the stream open until the client gives up.
                    tx.closed().await;
                }
                Ending::DripAfter(_, every) => loop {
                    tokio::time::sleep(every).await;
                    let empty = pb::PeerDataChunk {
                        part: Some(pb::peer_data_chunk::Part::Batch(Default::default())),
                    };
                    if tx.send(Ok(empty)).await.is_err() {
                        return;
                    }
                },
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
