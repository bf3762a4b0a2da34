//! `GetDigest`: the digests of this registry's exported objects over id
//! ranges.
//!
//! The exported digests ([`crate::store::digests`]) are brought up to date
//! before each answer: the objects the change log numbers after the
//! digests' revision are read as a delta `GetPeerData` would send them (to
//! no peer in particular), digested, and stored with the new revision, in
//! one write transaction. Reading happens first, outside it; the write
//! keeps whichever catch-up reached further. The first call, or one after
//! the log was compacted past the digests' revision, reads everything.
//!
//! The digests count what a peer keeps of the export: a disabled person is
//! exported but dropped by the receiver ([`super::diff::keep_person`]), and
//! so are the keys of persons it does not cache; neither is digested.

use std::collections::HashSet;

use futures_util::StreamExt;

use super::digest::{ALGORITHM, Digested};
use super::export;
use super::outbox::Delivery;
use crate::class::{Class, PerClass};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::store::digests::{self, Side, Split};
use crate::store::{Store, revisions};

/// Ranges one call may ask for.
pub const MAX_RANGES: usize = 4096;
/// Buckets one range may be split into.
pub const MAX_BUCKETS: u32 = 1024;
/// Objects one listed range may hold.
pub const MAX_LISTED: usize = 4096;
/// Digests written by a catch-up from which the table's statistics are
/// refreshed.
const ANALYZE_FROM: usize = 10_000;
/// Objects the listed ranges of one call may hold in all.
pub const MAX_LISTED_IN_ALL: usize = 262_144;

/// Answers a `GetDigest` call; `catching_up` lets one call of this
/// process at a time bring the digests up to date (the calls that waited
/// find them current).
pub async fn get_digest(
    store: &Store,
    catching_up: &tokio::sync::Mutex<()>,
    req: pb::GetDigestRequest,
) -> Result<pb::GetDigestResponse> {
    let class = Class::ALL
        .into_iter()
        .find(|c| c.name() == req.class)
        .ok_or_else(|| {
            Error::invalid(
                "class",
                &req.class,
                "not one of sites, keys, persons, nodes, slices",
            )
        })?;
    if req.ranges.len() > MAX_RANGES {
        return Err(Error::invalid(
            "ranges",
            format!("{} ranges", req.ranges.len()),
            format!("at most {MAX_RANGES} per call"),
        ));
    }
    let splits = req
        .ranges
        .iter()
        .enumerate()
        .map(|(i, r)| checked_split(i, r))
        .collect::<Result<Vec<_>>>()?;
    {
        let _one_at_a_time = catching_up.lock().await;
        catch_up(store).await?;
    }
    let mut conn = store.read().await?;
    let req = &req;
    let splits = &splits;
    conn.snapshot(|c| {
        Box::pin(async move {
            let (epoch, revision) = digests::exported_checkpoint(c).await?;
            let ranges = answer_ranges(c, class, Side::Exported, &req.ranges, splits).await?;
            Ok(pb::GetDigestResponse {
                checkpoint: Some(pb::Checkpoint { epoch, revision }),
                algorithm: ALGORITHM,
                ranges,
            })
        })
    })
    .await
}

/// Checks range `index` of a request and says how it splits (one bucket
/// for a listed range).
pub fn checked_split(index: usize, r: &pb::DigestRange) -> Result<Split> {
    let range = format!("[{index}] {}..={}", r.first_id, r.last_id);
    if r.first_id > r.last_id {
        return Err(Error::invalid("ranges", range, "first_id is above last_id"));
    }
    if r.buckets > MAX_BUCKETS {
        return Err(Error::invalid(
            "ranges",
            range,
            format!("{} buckets, at most {MAX_BUCKETS}", r.buckets),
        ));
    }
    let buckets = if r.list { 1 } else { r.buckets };
    Split::new(r.first_id, r.last_id, buckets).ok_or_else(|| {
        Error::invalid(
            "ranges",
            range,
            format!("too wide to split into {} buckets", r.buckets),
        )
    })
}

/// The digests of `ranges` on `side`, split as `splits` say: each
/// range's buckets, or its objects when listed (the listed ranges in one
/// query). INVALID_ARGUMENT when a listed range holds more than
/// [`MAX_LISTED`] objects, or all of them more than [`MAX_LISTED_IN_ALL`].
/// Runs in a transaction ([`digests::size_aggregates`]).
pub async fn answer_ranges(
    conn: &mut crate::store::DbConn,
    class: Class,
    side: Side,
    ranges: &[pb::DigestRange],
    splits: &[Split],
) -> Result<Vec<pb::RangeDigest>> {
    digests::size_aggregates(conn).await?;
    let mut out = vec![pb::RangeDigest::default(); ranges.len()];
    let split: Vec<usize> = (0..ranges.len()).filter(|&i| !ranges[i].list).collect();
    let split_ranges: Vec<Split> = split.iter().map(|&i| splits[i]).collect();
    let buckets = digests::buckets(conn, class, side, &split_ranges).await?;
    for (i, buckets) in split.into_iter().zip(buckets) {
        out[i].buckets = buckets;
    }
    let listed: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].list).collect();
    let bounds: Vec<(i64, i64)> = listed
        .iter()
        .map(|&i| (ranges[i].first_id, ranges[i].last_id))
        .collect();
    let lists = digests::lists(
        conn,
        class,
        side,
        &bounds,
        MAX_LISTED + 1,
        MAX_LISTED_IN_ALL + 1,
    )
    .await?;
    if lists.iter().map(Vec::len).sum::<usize>() > MAX_LISTED_IN_ALL {
        return Err(Error::invalid(
            "ranges",
            format!("{} listed ranges", listed.len()),
            format!("they hold more than {MAX_LISTED_IN_ALL} objects; list fewer per call"),
        ));
    }
    for (i, objects) in listed.into_iter().zip(lists) {
        if objects.len() > MAX_LISTED {
            let range = &ranges[i];
            return Err(Error::invalid(
                "ranges",
                format!("[{i}] {}..={}", range.first_id, range.last_id),
                format!("holds more than {MAX_LISTED} objects to list; ask for buckets"),
            ));
        }
        out[i].objects = objects;
    }
    Ok(out)
}

/// What a catch-up read: the digests of the objects exported now, and the
/// ids of those no longer exported (or not kept by a receiver).
#[derive(Default)]
struct Digests {
    full: bool,
    checkpoint: Option<pb::Checkpoint>,
    digested: Vec<(Class, i64, i64)>,
    gone: PerClass<Vec<i64>>,
    /// Keys read, with their digests, before it is known whether a peer
    /// keeps them.
    keys: Vec<(i64, i64)>,
    /// Keys that the enabled persons read list.
    held_keys: HashSet<i64>,
}

/// Brings the exported digests up to the database's current revision.
pub async fn catch_up(store: &Store) -> Result<()> {
    let (since, current) = {
        let mut conn = store.read().await?;
        let (epoch, revision) = digests::exported_checkpoint(&mut conn).await?;
        let history = revisions::history(&mut conn).await?;
        (
            (!epoch.is_empty()).then_some(pb::Checkpoint { epoch, revision }),
            history,
        )
    };
    if since
        .as_ref()
        .is_some_and(|s| s.epoch == current.epoch && s.revision == current.revision)
    {
        return Ok(());
    }
    let read = read_changes(store, since).await?;
    let Some(reached) = read.checkpoint.clone() else {
        return Err(Error::Internal(
            "digests: the export ended without a checkpoint".into(),
        ));
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let (epoch, revision) = digests::lock_exported(c).await?;
            if epoch == reached.epoch && revision >= reached.revision {
                // Another catch-up got as far.
                return Ok(());
            }
            // The keys the read's enabled persons list are held; the others
            // (a key changed without its person) are looked up.
            let mut held = read.held_keys;
            let unknown: Vec<i64> = read
                .keys
                .iter()
                .map(|&(id, _)| id)
                .filter(|id| !held.contains(id))
                .collect();
            held.extend(digests::keys_of_enabled_persons(c, &unknown).await?);
            let mut gone = read.gone;
            let mut digested = read.digested;
            for &(id, digest) in &read.keys {
                match held.contains(&id) {
                    true => digested.push((Class::Keys, id, digest)),
                    false => gone[Class::Keys].push(id),
                }
            }
            // A delta read from another epoch's digests is a full read.
            if read.full || epoch != reached.epoch {
                digests::clear_exported(c).await?;
            }
            for class in Class::ALL {
                digests::remove_exported(c, class, &gone[class]).await?;
            }
            digests::store_exported(c, &digested).await?;
            if digested.len() >= ANALYZE_FROM {
                digests::refresh_exported_statistics(c).await?;
            }
            digests::set_exported_checkpoint(c, &reached.epoch, reached.revision).await
        })
    })
    .await
}

/// Reads the exported objects changed since `since` (all without it) and
/// digests them.
async fn read_changes(store: &Store, since: Option<pb::Checkpoint>) -> Result<Digests> {
    let mut stream = export::stream(
        store.clone(),
        export::Request {
            registry_name: String::new(),
            audience: export::Audience::Admin,
            since,
            token_id: None,
            only: None,
        },
        Delivery::default(),
    );
    let mut read = Digests::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| Error::Internal(format!("digests: {}", s.message())))?;
        match chunk.part {
            Some(pb::peer_data_chunk::Part::Header(h)) => {
                read.full = h.kind() != pb::SnapshotKind::Delta;
            }
            Some(pb::peer_data_chunk::Part::Batch(b)) => read.batch(b),
            Some(pb::peer_data_chunk::Part::Trailer(t)) => {
                read.checkpoint = t.checkpoint;
                break;
            }
            None => {}
        }
    }
    Ok(read)
}

impl Digests {
    fn batch(&mut self, b: pb::PeerDataBatch) {
        let digested = &mut self.digested;
        digested.extend(
            b.sites
                .iter()
                .map(|o| (Class::Sites, o.site_id, o.digest())),
        );
        digested.extend(
            b.nodes
                .iter()
                .map(|o| (Class::Nodes, o.node_id, o.digest())),
        );
        digested.extend(
            b.slices
                .iter()
                .map(|o| (Class::Slices, o.slice_id, o.digest())),
        );
        for person in &b.persons {
            match super::diff::keep_person(&mut person.clone()) {
                true => {
                    digested.push((Class::Persons, person.person_id, person.digest()));
                    self.held_keys.extend(&person.key_ids);
                }
                false => self.gone[Class::Persons].push(person.person_id),
            }
        }
        self.keys
            .extend(b.keys.iter().map(|k| (k.key_id, k.digest())));
        if let Some(mut deleted) = b.deleted {
            for class in Class::ALL {
                self.gone[class].append(deleted.ids_mut(class));
            }
        }
    }
}
