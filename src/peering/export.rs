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
//! The snapshot's connection is lent by [`Store::read_for_stream`], and
//! its hold is bounded: the producer hands its batches over through an
//! [`outbox`], so when the caller reads nothing for the send timeout the
//! stream ends with `DEADLINE_EXCEEDED` and the connection goes back to
//! the pool; it ends with `UNAUTHENTICATED` as soon as its token is
//! revoked.
//!
//! A caller that sends a checkpoint (the epoch and revision its cache
//! reflects) gets a delta: per class, the objects the change log
//! ([`crate::store::revisions`]) numbers after that revision, as they are
//! now, and the ids of those that were deleted or left the export. Both
//! kinds of stream end at the snapshot's revision, the caller's next
//! checkpoint. A checkpoint of another epoch, older than the compacted
//! history or newer than the database gets a full snapshot, with the
//! reason in the header.
//!
//! A delta can also be read into memory whole, within bounds ([`collect`]):
//! the changes a `Follow` event carries. Read for every peer at once
//! ([`Audience::EveryPeer`]), it is cut to each caller afterwards
//! ([`Collected::for_audience`]).
//!
//! Only local objects leave (never objects cached from a third registry),
//! without secrets: the columns read here are the synced ones of
//! [`crate::store::cache`], which hold no password, verification key, node
//! key, boot nonce or session. Nodes with a slice whitelist and system
//! slices stay home.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prost::Message;

use super::outbox::{self, Delivery, Inbox, Outbox};
use crate::class::PerClass;
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry;
use crate::store::cache::{
    self, CachedClass, CachedKeys, CachedNodes, CachedPersons, CachedSites, CachedSlices,
    PersonKeys, PersonRoles, RelationTable,
};
use crate::store::revisions::{self, History};
use crate::store::{DbConn, Store, nodes, now, tokens};

pub use crate::store::cache::Audience;

/// Version of the dump's layout, sent in the header.
pub const SCHEMA_VERSION: i32 = 1;

/// Rows read per query. Larger pages stream a large dump faster on both
/// backends (fewer statements, each with its fixed cost) for a few MiB
/// more at the serving registry's peak; two pages are in memory at a time,
/// whatever the registry's size.
const PAGE: i64 = 2000;
/// A batch is sent once its encoded size reaches this (well under gRPC's
/// default 4 MiB message limit, whatever the size of one object).
const BATCH_BYTES: usize = 512 * 1024;
/// Batches buffered between the reader and the network.
const CHANNEL_DEPTH: usize = 4;

/// The stream of a `GetPeerData` call: the chunks, then the status of a
/// failure, if any.
pub type PeerDataStream = Inbox<pb::PeerDataChunk>;

/// What a `GetPeerData` call asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The name this registry announces.
    pub registry_name: String,
    /// Whom the stream is for: a peer gets its own nodes cached here (as
    /// `PeerNodes` and among its slices' nodes), an admin none.
    pub audience: Audience,
    /// The caller's checkpoint, for a delta.
    pub since: Option<pb::Checkpoint>,
    /// A token that must still exist in the snapshot (the token of the
    /// `Follow` stream an event is read for), checked in the same read.
    pub token_id: Option<i64>,
    /// Only these objects, as a delta (`since` is then ignored): those
    /// exported come whole, the others as deletions.
    pub only: Option<pb::DeletedObjects>,
}

/// Starts streaming the local objects.
pub fn stream(store: Store, request: Request, delivery: Delivery) -> PeerDataStream {
    outbox::spawn("GetPeerData", CHANNEL_DEPTH, delivery, |out| async move {
        let mut conn = store.read_for_stream().await?;
        let packer = Packer::new(Link::Stream(out));
        conn.snapshot(|c| Box::pin(write(c, &request, packer)))
            .await
            .map(drop)
    })
}

/// How much a delta read into memory ([`collect`]) may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most revisions between the caller's checkpoint and the snapshot's.
    pub revisions: i64,
    /// Most encoded bytes.
    pub bytes: usize,
}

/// A delta read into memory, whole, for an [`Audience`].
#[derive(Debug)]
pub struct Collected {
    /// The chunks, from the header to the trailer.
    chunks: Vec<pb::PeerDataChunk>,
    /// The peer of each cached node the chunks show.
    owners: HashMap<i64, i64>,
}

impl Collected {
    /// The checkpoint the delta reaches.
    pub fn reached(&self) -> Option<&pb::Checkpoint> {
        match self.chunks.first()?.part.as_ref()? {
            pb::peer_data_chunk::Part::Header(header) => header.checkpoint.as_ref(),
            _ => None,
        }
    }

    /// The chunks as a stream for `audience` carries them: of the nodes
    /// cached here, only those of the audience's peer, in the slices' node
    /// lists, the `PeerNodes` and the trailer's count.
    pub fn for_audience(&self, audience: Audience) -> Vec<pb::PeerDataChunk> {
        use pb::peer_data_chunk::Part;
        let shown = |node_id: &i64| {
            self.owners
                .get(node_id)
                .is_none_or(|&peer_id| audience.shown(peer_id))
        };
        let mut peer_nodes = 0;
        let mut chunks = self.chunks.clone();
        for chunk in &mut chunks {
            match &mut chunk.part {
                Some(Part::Batch(batch)) => {
                    batch.peer_nodes.retain(|n| shown(&n.node_id));
                    peer_nodes += batch.peer_nodes.len() as i64;
                    for slice in &mut batch.slices {
                        slice.node_ids.retain(shown);
                    }
                }
                Some(Part::Trailer(trailer)) => trailer.peer_nodes = peer_nodes,
                _ => {}
            }
        }
        chunks
    }
}

/// Reads the delta that `request` asks for into memory, in one snapshot.
/// Fails when it would not be a delta within `bounds`, besides the
/// failures of a stream.
pub async fn collect(store: &Store, request: &Request, bounds: Bounds) -> Result<Collected> {
    let mut conn = store.read().await?;
    let packer = Packer::new(Link::Collect {
        bounds,
        chunks: Vec::new(),
        bytes: 0,
    });
    let packer = conn
        .snapshot(|c| Box::pin(write(c, request, packer)))
        .await?;
    match packer.link {
        Link::Collect { chunks, .. } => Ok(Collected {
            chunks,
            owners: packer.owners,
        }),
        Link::Stream(_) => unreachable!("collected into memory"),
    }
}

/// Writes the snapshot that `request` asks for, read through `c`, to
/// `out`; returns the packer once the trailer is written.
async fn write(c: &mut DbConn, request: &Request, mut out: Packer) -> Result<Packer> {
    if let Some(token_id) = request.token_id
        && !tokens::exists(c, token_id).await?
    {
        return Err(Error::Unauthenticated(format!(
            "token {token_id} was revoked; the stream ends"
        )));
    }
    let history = revisions::history(c).await?;
    let (selection, full_reason) = match &request.only {
        Some(_) => (Selection::Listed, String::new()),
        None => Selection::serving(request.since.as_ref(), &history),
    };
    let checkpoint = pb::Checkpoint {
        epoch: history.epoch,
        revision: history.revision,
    };
    // What is read into memory, or for every peer at once (whose full
    // snapshot would lack the peers' `PeerNodes`), is a bounded delta.
    let most_revisions = match (&out.link, request.audience) {
        (Link::Collect { bounds, .. }, _) => Some(bounds.revisions),
        (Link::Stream(_), Audience::EveryPeer) => Some(i64::MAX),
        (Link::Stream(_), Audience::Admin | Audience::Peer(_)) => None,
    };
    if let Some(most) = most_revisions {
        let within =
            matches!(selection, Selection::ChangedSince(since) if history.revision - since <= most);
        if !within {
            return Err(Error::FailedPrecondition(format!(
                "not a delta within {most} revisions"
            )));
        }
    }
    if let Selection::ChangedSince(revision) = selection {
        out.changed = out.read(revisions::changed_since(c, revision)).await?;
    }
    if let Some(only) = &request.only {
        out.changed = listed(only);
    }
    out.send(pb::peer_data_chunk::Part::Header(pb::PeerDataHeader {
        registry_name: request.registry_name.clone(),
        schema_version: SCHEMA_VERSION,
        snapshot_time: registry::timestamp(now()),
        checkpoint: Some(checkpoint.clone()),
        kind: selection.kind() as i32,
        full_reason,
    }))
    .await?;
    export(&mut Sites, c, &mut out, selection).await?;
    export(&mut Keys, c, &mut out, selection).await?;
    export(&mut Persons, c, &mut out, selection).await?;
    export(&mut Nodes, c, &mut out, selection).await?;
    if let (Audience::Peer(peer_id), Selection::Everything) = (request.audience, selection) {
        export_peer_nodes(c, peer_id, &mut out).await?;
    }
    let mut slices = Slices {
        audience: request.audience,
        delta: selection != Selection::Everything,
        reserved: None,
    };
    export(&mut slices, c, &mut out, selection).await?;
    out.finish(checkpoint).await?;
    Ok(out)
}

/// Which objects a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Every exported object.
    Everything,
    /// The objects changed after this revision, and deletions.
    ChangedSince(i64),
    /// The objects the caller listed, those no longer exported as
    /// deletions.
    Listed,
}

/// The ids of `only`, per class, sorted and without repeats.
fn listed(only: &pb::DeletedObjects) -> PerClass<Vec<i64>> {
    let mut only = only.clone();
    let mut ids = PerClass::default();
    for class in crate::class::Class::ALL {
        let list: &mut Vec<i64> = &mut ids[class];
        *list = std::mem::take(only.ids_mut(class));
        list.sort_unstable();
        list.dedup();
    }
    ids
}

impl Selection {
    /// What to serve a caller at checkpoint `since`, given the database's
    /// `history`: a delta when the checkpoint can be served, everything
    /// (with the reason) otherwise.
    fn serving(since: Option<&pb::Checkpoint>, history: &History) -> (Selection, String) {
        let Some(since) = since else {
            return (Selection::Everything, String::new());
        };
        let reason = if since.epoch != history.epoch {
            format!(
                "the checkpoint is of epoch {:?}, this database's is {:?} (rebuilt or restored)",
                since.epoch, history.epoch
            )
        } else if since.revision < history.compacted_through {
            format!(
                "the checkpoint's revision {} is older than the kept history, which starts after revision {}",
                since.revision, history.compacted_through
            )
        } else if since.revision > history.revision {
            format!(
                "the checkpoint's revision {} is ahead of this database's revision {}",
                since.revision, history.revision
            )
        } else {
            return (Selection::ChangedSince(since.revision), String::new());
        };
        (Selection::Everything, reason)
    }

    fn kind(self) -> pb::SnapshotKind {
        match self {
            Selection::Everything => pb::SnapshotKind::Full,
            Selection::ChangedSince(_) | Selection::Listed => pb::SnapshotKind::Delta,
        }
    }
}

/// Where a [`Packer`]'s chunks go.
enum Link {
    /// To a stream's caller.
    Stream(Outbox<pb::PeerDataChunk>),
    /// Into memory, within bounds.
    Collect {
        bounds: Bounds,
        chunks: Vec<pb::PeerDataChunk>,
        bytes: usize,
    },
}

/// Packs objects into batches of bounded size and sends them.
struct Packer {
    link: Link,
    /// The peer of each cached node sent as a `PeerNode` with the slices.
    owners: HashMap<i64, i64>,
    /// For a delta, the changed ids per class, taken by each class's pages.
    changed: PerClass<Vec<i64>>,
    batch: pb::PeerDataBatch,
    bytes: usize,
    trailer: pb::PeerDataTrailer,
    db_time: Duration,
}

impl Packer {
    fn new(link: Link) -> Packer {
        Packer {
            link,
            owners: HashMap::new(),
            changed: PerClass::default(),
            batch: pb::PeerDataBatch::default(),
            bytes: 0,
            trailer: pb::PeerDataTrailer::default(),
            db_time: Duration::ZERO,
        }
    }

    /// Adds the ids of deleted objects of class `K`.
    async fn deleted<K: CachedClass>(&mut self, ids: Vec<i64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let deleted = self.batch.deleted.get_or_insert_with(Default::default);
        let list = deleted.ids_mut(K::CLASS);
        self.bytes += 10 * ids.len();
        self.trailer.deleted += ids.len() as i64;
        list.extend(ids);
        if self.bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
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

    async fn send(&mut self, part: pb::peer_data_chunk::Part) -> Result<()> {
        let chunk = pb::PeerDataChunk { part: Some(part) };
        match &mut self.link {
            Link::Stream(outbox) => outbox.send(chunk).await,
            Link::Collect {
                bounds,
                chunks,
                bytes,
            } => {
                *bytes += chunk.encoded_len();
                if *bytes > bounds.bytes {
                    return Err(Error::ResourceExhausted(format!(
                        "the delta outgrows {} bytes",
                        bounds.bytes
                    )));
                }
                chunks.push(chunk);
                Ok(())
            }
        }
    }

    /// Times a database read.
    async fn read<T>(&mut self, query: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let value = query.await?;
        self.db_time += started.elapsed();
        Ok(value)
    }

    async fn finish(&mut self, checkpoint: pb::Checkpoint) -> Result<()> {
        self.flush().await?;
        self.trailer.db_seconds = self.db_time.as_secs_f64();
        self.trailer.checkpoint = Some(checkpoint);
        let trailer = std::mem::take(&mut self.trailer);
        self.send(pb::peer_data_chunk::Part::Trailer(trailer)).await
    }
}

/// The exported rows of one class that a stream carries, page by page.
enum Pages {
    /// Every row, by id: the last id sent, and whether the last page was
    /// read.
    All { after: i64, done: bool },
    /// The rows of the changed ids, and how many of them were read.
    Changed { ids: Vec<i64>, read: usize },
}

impl Pages {
    fn new<K: CachedClass>(changed: &mut PerClass<Vec<i64>>, selection: Selection) -> Pages {
        match selection {
            Selection::Everything => Pages::All {
                after: 0,
                done: false,
            },
            Selection::ChangedSince(_) | Selection::Listed => Pages::Changed {
                ids: std::mem::take(&mut changed[K::CLASS]),
                read: 0,
            },
        }
    }

    /// The next page of rows, with the changed ids met on the way that are
    /// no longer exported (deleted, or now filtered out); `None` at the end.
    async fn next<K: CachedClass>(
        &mut self,
        conn: &mut DbConn,
    ) -> Result<Option<(Vec<(i64, K::Fields)>, Vec<i64>)>> {
        match self {
            Pages::All { after, done } => {
                if *done {
                    return Ok(None);
                }
                let rows = K::local_page(conn, *after, PAGE).await?;
                *done = (rows.len() as i64) < PAGE;
                let Some(&(last, _)) = rows.last() else {
                    return Ok(None);
                };
                *after = last;
                Ok(Some((rows, Vec::new())))
            }
            Pages::Changed { ids, read } => {
                let mut gone = Vec::new();
                while *read < ids.len() {
                    let page = &ids[*read..ids.len().min(*read + PAGE as usize)];
                    *read += page.len();
                    let rows = K::local_rows(conn, page).await?;
                    let present: HashSet<i64> = rows.iter().map(|(id, _)| *id).collect();
                    gone.extend(page.iter().filter(|id| !present.contains(id)));
                    if !rows.is_empty() {
                        return Ok(Some((rows, gone)));
                    }
                }
                Ok((!gone.is_empty()).then(|| (Vec::new(), gone)))
            }
        }
    }
}

/// The stored columns of an exported class's rows.
type Fields<E> = <<E as Exported>::Cached as CachedClass>::Fields;

/// How the objects of one class leave: what is read with each page of
/// their rows, and how a page becomes messages.
trait Exported {
    /// The class whose rows are read.
    type Cached: CachedClass;
    /// What a page's objects carry besides their own columns.
    type Extra: Default + Send;

    /// Reads what the objects `ids` (a page, in order) carry.
    fn extra(
        &mut self,
        _conn: &mut DbConn,
        _ids: &[i64],
    ) -> impl Future<Output = Result<Self::Extra>> + Send {
        async { Ok(Self::Extra::default()) }
    }

    /// Packs a page's objects.
    fn pack(
        rows: Vec<(i64, Fields<Self>)>,
        extra: Self::Extra,
        out: &mut Packer,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// One page of a class as read from the database, ready to be packed.
struct Page<E: Exported> {
    rows: Vec<(i64, Fields<E>)>,
    extra: E::Extra,
    /// Changed ids found no longer exported: sent as deletions.
    gone: Vec<i64>,
    /// Time spent reading the page.
    db_time: Duration,
}

async fn read_page<E: Exported>(
    class: &mut E,
    pages: &mut Pages,
    conn: &mut DbConn,
) -> Result<Option<Page<E>>> {
    let started = Instant::now();
    let Some((rows, gone)) = pages.next::<E::Cached>(conn).await? else {
        return Ok(None);
    };
    let extra = if rows.is_empty() {
        E::Extra::default()
    } else {
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        class.extra(conn, &ids).await?
    };
    Ok(Some(Page {
        rows,
        extra,
        gone,
        db_time: started.elapsed(),
    }))
}

impl Packer {
    /// Packs and sends one page of class `E`.
    async fn page<E: Exported>(&mut self, page: Page<E>) -> Result<()> {
        self.db_time += page.db_time;
        self.deleted::<E::Cached>(page.gone).await?;
        E::pack(page.rows, page.extra, self).await
    }
}

/// Streams the objects of one class that `selection` selects. The next
/// page is read while the current one is packed and sent, so that the
/// database's work (in the PostgreSQL server's process, or on SQLite's
/// blocking thread) overlaps fedreg's.
async fn export<E: Exported>(
    class: &mut E,
    conn: &mut DbConn,
    out: &mut Packer,
    selection: Selection,
) -> Result<()> {
    let mut pages = Pages::new::<E::Cached>(&mut out.changed, selection);
    let mut current = read_page(class, &mut pages, conn).await?;
    while let Some(page) = current {
        let (next, ()) = tokio::try_join!(read_page(class, &mut pages, conn), out.page(page))?;
        current = next;
    }
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

/// Sites: their own columns.
struct Sites;

impl Exported for Sites {
    type Cached = CachedSites;
    type Extra = ();

    async fn pack(rows: Vec<(i64, Fields<Self>)>, (): (), out: &mut Packer) -> Result<()> {
        for (site_id, f) in rows {
            let site = registry::sites::to_peer(site_id, f);
            out.push(site, |b, t, o| {
                b.sites.push(o);
                t.sites += 1;
            })
            .await?;
        }
        Ok(())
    }
}

/// Keys: their own columns.
struct Keys;

impl Exported for Keys {
    type Cached = CachedKeys;
    type Extra = ();

    async fn pack(rows: Vec<(i64, Fields<Self>)>, (): (), out: &mut Packer) -> Result<()> {
        for (key_id, f) in rows {
            let key = registry::keys::to_peer(key_id, f);
            out.push(key, |b, t, o| {
                b.keys.push(o);
                t.keys += 1;
            })
            .await?;
        }
        Ok(())
    }
}

/// Persons, with their keys, roles and sites.
struct Persons;

/// The keys, roles and sites of a page of persons, by person.
#[derive(Default)]
struct PersonLinks {
    keys: HashMap<i64, Vec<i64>>,
    roles: HashMap<i64, Vec<i64>>,
    /// The sites and the primary one.
    sites: HashMap<i64, (Vec<i64>, Option<i64>)>,
}

impl Exported for Persons {
    type Cached = CachedPersons;
    type Extra = PersonLinks;

    async fn extra(&mut self, conn: &mut DbConn, ids: &[i64]) -> Result<PersonLinks> {
        let mut links = PersonLinks {
            keys: group(PersonKeys::for_owners(conn, ids).await?),
            roles: group(PersonRoles::for_owners(conn, ids).await?),
            sites: HashMap::new(),
        };
        for (person, site, primary) in cache::person_sites_of(conn, ids).await? {
            let entry = links.sites.entry(person).or_default();
            entry.0.push(site);
            if primary {
                entry.1 = Some(site);
            }
        }
        Ok(links)
    }

    async fn pack(
        rows: Vec<(i64, Fields<Self>)>,
        mut links: PersonLinks,
        out: &mut Packer,
    ) -> Result<()> {
        for (person_id, f) in rows {
            let (site_ids, primary_site_id) = links.sites.remove(&person_id).unwrap_or_default();
            let person = pb::ExportedPerson {
                key_ids: links.keys.remove(&person_id).unwrap_or_default(),
                role_ids: links
                    .roles
                    .remove(&person_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r as i32)
                    .collect(),
                site_ids,
                primary_site_id,
                ..registry::persons::to_peer(person_id, f)
            };
            out.push(person, |b, t, o| {
                b.persons.push(o);
                t.persons += 1;
            })
            .await?;
        }
        Ok(())
    }
}

/// Nodes: their own columns.
struct Nodes;

impl Exported for Nodes {
    type Cached = CachedNodes;
    type Extra = ();

    async fn pack(rows: Vec<(i64, Fields<Self>)>, (): (), out: &mut Packer) -> Result<()> {
        for (node_id, f) in rows {
            let node = registry::nodes::to_peer(node_id, f);
            out.push(node, |b, t, o| {
                b.nodes.push(o);
                t.nodes += 1;
            })
            .await?;
        }
        Ok(())
    }
}

async fn push_peer_node(out: &mut Packer, (node_id, peer_node_id): (i64, i64)) -> Result<()> {
    let node = pb::PeerNode {
        node_id,
        peer_node_id,
    };
    out.push(node, |b, t, o| {
        b.peer_nodes.push(o);
        t.peer_nodes += 1;
    })
    .await
}

async fn export_peer_nodes(conn: &mut DbConn, peer_id: i64, out: &mut Packer) -> Result<()> {
    let mut after = 0;
    loop {
        let rows = out
            .read(cache::nodes_of_peer(conn, peer_id, after, PAGE))
            .await?;
        let Some(&(last, _)) = rows.last() else { break };
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            push_peer_node(out, row).await?;
        }
        after = last;
        if !full {
            break;
        }
    }
    Ok(())
}

/// The local non-system slices. Their node lists hold the nodes exported
/// (local ones without a slice whitelist, so that a peer never learns of
/// those) and the caller's own nodes; their person lists the local enabled
/// persons. Every id a peer receives is of an object it receives too, or
/// of its own.
struct Slices {
    /// Whom the stream is for.
    audience: Audience,
    /// Whether the stream is a delta.
    delta: bool,
    /// The nodes with a slice whitelist, read with the first page (a delta
    /// without slices needs none).
    reserved: Option<HashSet<i64>>,
}

/// The nodes and persons of a page of slices, by slice, and the nodes
/// cached here that they hold and the audience is shown (for a delta):
/// (local id, the peer's id, the peer).
#[derive(Default)]
struct SliceLinks {
    nodes: HashMap<i64, Vec<i64>>,
    persons: HashMap<i64, Vec<i64>>,
    peer_nodes: Vec<(i64, i64, i64)>,
}

impl Exported for Slices {
    type Cached = CachedSlices;
    type Extra = SliceLinks;

    async fn extra(&mut self, conn: &mut DbConn, ids: &[i64]) -> Result<SliceLinks> {
        let reserved = match &mut self.reserved {
            Some(reserved) => reserved,
            unread => unread.insert(nodes::whitelisted_ids(conn).await?),
        };
        let pairs = cache::exported_slice_nodes(conn, ids, self.audience).await?;
        let nodes = group(
            pairs
                .into_iter()
                .filter(|(_, node_id)| !reserved.contains(node_id))
                .collect(),
        );
        let persons = group(cache::exported_slice_persons(conn, ids).await?);
        // A delta carries, of the caller's nodes cached here, those that its
        // slices hold (a full snapshot carries them all, before the slices).
        let peer_nodes = if self.delta {
            let held: Vec<i64> = nodes.values().flatten().copied().collect();
            cache::shown_peer_nodes_among(conn, self.audience, &held).await?
        } else {
            Vec::new()
        };
        Ok(SliceLinks {
            nodes,
            persons,
            peer_nodes,
        })
    }

    async fn pack(
        rows: Vec<(i64, Fields<Self>)>,
        mut links: SliceLinks,
        out: &mut Packer,
    ) -> Result<()> {
        for (node_id, peer_node_id, peer_id) in std::mem::take(&mut links.peer_nodes) {
            out.owners.insert(node_id, peer_id);
            push_peer_node(out, (node_id, peer_node_id)).await?;
        }
        for (slice_id, f) in rows {
            let slice = pb::ExportedSlice {
                node_ids: links.nodes.remove(&slice_id).unwrap_or_default(),
                person_ids: links.persons.remove(&slice_id).unwrap_or_default(),
                ..registry::slices::to_peer(slice_id, f)
            };
            out.push(slice, |b, t, o| {
                b.slices.push(o);
                t.slices += 1;
            })
            .await?;
        }
        Ok(())
    }
}
