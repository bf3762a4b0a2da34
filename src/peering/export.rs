//! `GetPeerData`: this registry's local objects, streamed to a peer.
//!
//! One read transaction is one consistent snapshot (REPEATABLE READ on
//! PostgreSQL; a WAL read transaction on SQLite). A producer task reads
//! the objects page by page, in the order sites, keys, persons, nodes,
//! peer nodes, slices, and packs them into batches of bounded size; a channel
//! of a few batches between it and the gRPC stream gives back-pressure, so
//! memory stays bounded on both ends whatever the registry's size. The
//! stream opens with a header and closes with a trailer of counts, so a
//! receiver can tell a complete dump from a truncated one.
//!
//! Only local objects leave (never objects cached from a third registry),
//! without secrets: the columns read here are the synced ones of
//! [`crate::store::cache`], which hold no password, verification key, node
//! key, boot nonce or session. Nodes with a slice whitelist and system
//! slices stay home.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry;
use crate::store::cache::{
    self, CachedKeys, CachedKind, CachedNodes, CachedPersons, CachedSites, CachedSlices,
    PersonKeys, PersonRoles, Relation, SliceNodes, SlicePersons,
};
use crate::store::{Db, DbConn, Store, nodes, now};

/// Version of the dump's layout, sent in the header.
pub const SCHEMA_VERSION: i32 = 1;

/// Rows read per query.
const PAGE: i64 = 500;
/// A batch is sent once its encoded size reaches this (well under gRPC's
/// default 4 MiB message limit, whatever the size of one object).
const BATCH_BYTES: usize = 512 * 1024;
/// Batches buffered between the reader and the network.
const CHANNEL_DEPTH: usize = 4;

/// The stream of a `GetPeerData` call.
pub type PeerDataStream = ReceiverStream<std::result::Result<pb::PeerDataChunk, Status>>;

/// Starts streaming the local objects; `caller_peer` is the calling peer,
/// whose own nodes cached here are sent as `PeerNodes`.
pub fn stream(store: Store, registry_name: String, caller_peer: Option<i64>) -> PeerDataStream {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let result = produce(&store, &registry_name, caller_peer, &tx).await;
        if let Err(e) = result {
            if !matches!(e, Error::Aborted(_)) {
                tracing::warn!(error = %e, "GetPeerData failed");
            }
            let _ = tx.send(Err(Status::from(e))).await;
        }
    });
    ReceiverStream::new(rx)
}

type Sender = mpsc::Sender<std::result::Result<pb::PeerDataChunk, Status>>;

async fn produce(
    store: &Store,
    registry_name: &str,
    caller_peer: Option<i64>,
    tx: &Sender,
) -> Result<()> {
    let mut conn = store.read().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            snapshot(c).await?;
            let mut out = Packer::new(tx);
            out.send(pb::peer_data_chunk::Part::Header(pb::PeerDataHeader {
                registry_name: registry_name.to_owned(),
                schema_version: SCHEMA_VERSION,
                snapshot_time: registry::timestamp(now()),
            }))
            .await?;
            export_sites(c, &mut out).await?;
            export_keys(c, &mut out).await?;
            export_persons(c, &mut out).await?;
            export_nodes(c, &mut out).await?;
            if let Some(peer_id) = caller_peer {
                export_peer_nodes(c, peer_id, &mut out).await?;
            }
            export_slices(c, &mut out).await?;
            out.finish().await
        })
    })
    .await
}

/// Makes the open transaction a consistent, read-only snapshot.
async fn snapshot(conn: &mut DbConn) -> Result<()> {
    use diesel_async::SimpleAsyncConnection;
    match conn.db() {
        Db::Pg(c) => {
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?
        }
        // A WAL read transaction sees one snapshot from its first read on.
        Db::Sqlite(_) => {}
    }
    Ok(())
}

/// Packs objects into batches of bounded size and sends them.
struct Packer<'a> {
    tx: &'a Sender,
    batch: pb::PeerDataBatch,
    bytes: usize,
    trailer: pb::PeerDataTrailer,
    db_time: Duration,
}

impl<'a> Packer<'a> {
    fn new(tx: &'a Sender) -> Packer<'a> {
        Packer {
            tx,
            batch: pb::PeerDataBatch::default(),
            bytes: 0,
            trailer: pb::PeerDataTrailer::default(),
            db_time: Duration::ZERO,
        }
    }

    /// Adds one object to the batch with `place`, sending the batch when full.
    async fn push<T: Message>(
        &mut self,
        object: T,
        place: fn(&mut pb::PeerDataBatch, &mut pb::PeerDataTrailer, T),
    ) -> Result<()> {
        self.bytes += object.encoded_len() + 8;
        place(&mut self.batch, &mut self.trailer, object);
        if self.bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.send(pb::peer_data_chunk::Part::Batch(batch)).await
    }

    async fn send(&self, part: pb::peer_data_chunk::Part) -> Result<()> {
        self.tx
            .send(Ok(pb::PeerDataChunk { part: Some(part) }))
            .await
            .map_err(|_| Error::Aborted("the caller closed the GetPeerData stream".into()))
    }

    /// Times a database read.
    async fn read<T>(&mut self, query: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let value = query.await?;
        self.db_time += started.elapsed();
        Ok(value)
    }

    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        self.trailer.db_seconds = self.db_time.as_secs_f64();
        let trailer = self.trailer;
        self.send(pb::peer_data_chunk::Part::Trailer(trailer)).await
    }
}

/// Pages through the exported rows of a kind: `$body` runs for each page
/// with `$rows` bound to it.
macro_rules! for_each_page {
    ($conn:ident, $out:ident, $kind:ty, |$rows:ident| $body:block) => {{
        let mut after = 0;
        loop {
            let $rows = $out.read(<$kind>::local_page($conn, after, PAGE)).await?;
            let Some(&(last, _)) = $rows.last() else { break };
            let full = $rows.len() as i64 == PAGE;
            $body
            after = last;
            if !full {
                break;
            }
        }
    }};
}

async fn export_sites(conn: &mut DbConn, out: &mut Packer<'_>) -> Result<()> {
    for_each_page!(conn, out, CachedSites, |rows| {
        for (site_id, f) in rows {
            let site = pb::ExportedSite {
                site_id,
                login_base: f.login_base,
                name: f.name,
                abbreviated_name: f.abbreviated_name,
                enabled: f.enabled,
                is_public: f.is_public,
                max_slices: f.max_slices,
                max_slivers: f.max_slivers,
                latitude: f.latitude,
                longitude: f.longitude,
                url: f.url,
                ext_consortium_id: f.ext_consortium_id,
            };
            out.push(site, |b, t, o| {
                b.sites.push(o);
                t.sites += 1;
            })
            .await?;
        }
    });
    Ok(())
}

async fn export_keys(conn: &mut DbConn, out: &mut Packer<'_>) -> Result<()> {
    for_each_page!(conn, out, CachedKeys, |rows| {
        for (key_id, f) in rows {
            let key = pb::ExportedKey {
                key_id,
                key_type: f.key_type,
                key: f.key,
                is_blacklisted: f.is_blacklisted,
            };
            out.push(key, |b, t, o| {
                b.keys.push(o);
                t.keys += 1;
            })
            .await?;
        }
    });
    Ok(())
}

/// Groups `(owner, member)` pairs by owner.
fn group(pairs: Vec<(i64, i64)>) -> HashMap<i64, Vec<i64>> {
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    for (owner, member) in pairs {
        out.entry(owner).or_default().push(member);
    }
    out
}

async fn export_persons(conn: &mut DbConn, out: &mut Packer<'_>) -> Result<()> {
    for_each_page!(conn, out, CachedPersons, |rows| {
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let mut keys = group(out.read(PersonKeys::for_owners(conn, &ids)).await?);
        let mut roles = group(out.read(PersonRoles::for_owners(conn, &ids)).await?);
        let mut sites: HashMap<i64, (Vec<i64>, Option<i64>)> = HashMap::new();
        for (person, site, primary) in out.read(cache::person_sites_of(conn, &ids)).await? {
            let entry = sites.entry(person).or_default();
            entry.0.push(site);
            if primary {
                entry.1 = Some(site);
            }
        }
        for (person_id, f) in rows {
            let (site_ids, primary_site_id) = sites.remove(&person_id).unwrap_or_default();
            let person = pb::ExportedPerson {
                person_id,
                email: f.email,
                first_name: f.first_name,
                last_name: f.last_name,
                title: f.title,
                phone: f.phone,
                url: f.url,
                bio: f.bio,
                enabled: f.enabled,
                key_ids: keys.remove(&person_id).unwrap_or_default(),
                role_ids: roles
                    .remove(&person_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r as i32)
                    .collect(),
                site_ids,
                primary_site_id,
            };
            out.push(person, |b, t, o| {
                b.persons.push(o);
                t.persons += 1;
            })
            .await?;
        }
    });
    Ok(())
}

async fn export_nodes(conn: &mut DbConn, out: &mut Packer<'_>) -> Result<()> {
    for_each_page!(conn, out, CachedNodes, |rows| {
        for (node_id, f) in rows {
            let node = pb::ExportedNode {
                node_id,
                hostname: f.hostname,
                site_id: f.site_id,
                node_type: f.node_type,
                boot_state: f.boot_state,
                run_level: f.run_level,
                model: f.model,
                version: f.version,
                ssh_rsa_key: f.ssh_rsa_key,
                verified: f.verified,
            };
            out.push(node, |b, t, o| {
                b.nodes.push(o);
                t.nodes += 1;
            })
            .await?;
        }
    });
    Ok(())
}

async fn export_peer_nodes(conn: &mut DbConn, peer_id: i64, out: &mut Packer<'_>) -> Result<()> {
    let mut after = 0;
    loop {
        let rows = out
            .read(cache::nodes_of_peer(conn, peer_id, after, PAGE))
            .await?;
        let Some(&(last, _)) = rows.last() else { break };
        let full = rows.len() as i64 == PAGE;
        for (node_id, peer_node_id) in rows {
            let node = pb::PeerNode {
                node_id,
                peer_node_id,
            };
            out.push(node, |b, t, o| {
                b.peer_nodes.push(o);
                t.peer_nodes += 1;
            })
            .await?;
        }
        after = last;
        if !full {
            break;
        }
    }
    Ok(())
}

/// Exports the local non-system slices. Their node lists leave out the
/// nodes that are not exported (those with a slice whitelist), so that a
/// peer never learns of them.
async fn export_slices(conn: &mut DbConn, out: &mut Packer<'_>) -> Result<()> {
    let reserved = out.read(nodes::whitelisted_ids(conn)).await?;
    for_each_page!(conn, out, CachedSlices, |rows| {
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let pairs = out.read(SliceNodes::for_owners(conn, &ids)).await?;
        let mut nodes = group(
            pairs
                .into_iter()
                .filter(|(_, node_id)| !reserved.contains(node_id))
                .collect(),
        );
        let mut persons = group(out.read(SlicePersons::for_owners(conn, &ids)).await?);
        for (slice_id, f) in rows {
            let slice = pb::ExportedSlice {
                slice_id,
                site_id: f.site_id,
                name: f.name,
                instantiation: f.instantiation,
                url: f.url,
                description: f.description,
                max_nodes: f.max_nodes,
                creator_person_id: f.creator_person_id,
                created: registry::timestamp(f.created),
                expires: registry::timestamp(f.expires),
                node_ids: nodes.remove(&slice_id).unwrap_or_default(),
                person_ids: persons.remove(&slice_id).unwrap_or_default(),
            };
            out.push(slice, |b, t, o| {
                b.slices.push(o);
                t.slices += 1;
            })
            .await?;
        }
    });
    Ok(())
}
