//! Verification: comparing the cache of a peer's objects with the peer's
//! digests ([`super::digest`]), to find what drifted whatever the cause (a
//! lost change, a restored backup, a hand edit on either side).
//!
//! Per class, one `GetDigest` call compares the whole id range: the number
//! of objects and the sum of their digests, at the peer and here. Where
//! they differ and the cache holds many objects, the range is split into
//! ranges of the same number of the cache's objects, summed here from one
//! read of the cache's digests and at the peer in one call (a split by
//! rank stays fine-grained however unevenly the ids are spread). Where a
//! range differs it is split into buckets of equal width, both sides
//! digest the same buckets, and only the buckets that differ are split
//! again, until a bucket holds few enough objects to list their digests
//! one by one. Each level is one call for all the ranges of a class, with
//! the cache's side read at the same time. What comes out is the peer's
//! ids of the objects that differ: missing here, extra here, or with
//! another digest; [`super::refresh`] fetches exactly those again.

use std::time::{Duration, Instant};

use prost::Message;

use super::digest::ALGORITHM;
use super::digest_service::{MAX_LISTED_IN_ALL, MAX_RANGES, answer_ranges, checked_split};
use super::fetch::PeerClient;
use crate::class::{Class, PerClass};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::store::Store;
use crate::store::digests::{self, Side};

/// A range holding at most this many objects (on the larger side) is
/// listed rather than split.
const LEAF: i64 = 512;
/// Objects per bucket aimed at when a range is split.
const PER_BUCKET: i64 = 64;
/// Ranges asked per call: listed ones hold at most [`LEAF`] objects on
/// the larger side, so a call stays within the serving side's cap.
const PER_CALL: usize = {
    let listed = MAX_LISTED_IN_ALL / LEAF as usize;
    if listed < MAX_RANGES {
        listed
    } else {
        MAX_RANGES
    }
};
/// Differing ids a report lists per class.
const REPORTED_IDS: usize = 100;

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The peer's ids of the objects that differ, per class, sorted.
    pub differing: PerClass<Vec<i64>>,
    /// The comparison's part of the refresh report.
    pub report: pb::VerifyReport,
}

impl Comparison {
    /// Whether every class matched.
    pub fn matched(&self) -> bool {
        self.differing.values().all(Vec::is_empty)
    }

    /// The differing ids, as `GetPeerData` `only` takes them.
    pub fn only(&self) -> pb::DeletedObjects {
        let mut only = pb::DeletedObjects::default();
        for class in Class::ALL {
            *only.ids_mut(class) = self.differing[class].clone();
        }
        only
    }
}

/// Compares the cache of peer `peer_id` in `store` with the peer's
/// digests through `client`, each call within `timeout`; the classes at
/// the same time, each on its own connections.
pub async fn compare(
    client: &mut PeerClient,
    store: &Store,
    peer_id: i64,
    timeout: Duration,
) -> Result<Comparison> {
    let started = Instant::now();
    let classes = Class::ALL.map(|class| {
        let mut comparing = Comparing {
            client: client.clone(),
            store,
            peer_id,
            timeout,
            report: pb::VerifyReport::default(),
        };
        async move {
            let found = comparing.class(class).await?;
            Ok::<_, Error>((found, comparing.report))
        }
    });
    let mut differing = PerClass::default();
    let mut report = pb::VerifyReport::default();
    for (class, ((ids, class_report), calls)) in Class::ALL
        .into_iter()
        .zip(futures_util::future::try_join_all(classes).await?)
    {
        differing[class] = ids;
        report.classes.push(class_report);
        report.digest_calls += calls.digest_calls;
        report.digest_bytes += calls.digest_bytes;
        report.revision = report.revision.max(calls.revision);
    }
    report.compare_seconds = started.elapsed().as_secs_f64();
    Ok(Comparison { differing, report })
}

/// The comparison of one class under way.
struct Comparing<'a> {
    client: PeerClient,
    store: &'a Store,
    peer_id: i64,
    timeout: Duration,
    /// Its calls, bytes and the revision the digests reflect.
    report: pb::VerifyReport,
}

/// The range that digests `first..=last`, holding at most `count` objects
/// on either side: listed when small, split otherwise.
fn range_for(first: i64, last: i64, count: i64) -> pb::DigestRange {
    let list = count <= LEAF;
    let buckets = match list {
        true => 0,
        false => {
            (count / PER_BUCKET).clamp(2, i64::from(super::digest_service::MAX_BUCKETS)) as u32
        }
    };
    pb::DigestRange {
        first_id: first,
        last_id: last,
        buckets,
        list,
    }
}

impl Comparing<'_> {
    /// Compares one class: the differing ids, and the class's report.
    async fn class(&mut self, class: Class) -> Result<(Vec<i64>, pb::ClassVerify)> {
        let whole = pb::DigestRange {
            first_id: i64::MIN,
            last_id: i64::MAX,
            buckets: 1,
            list: false,
        };
        let (peer, cached) = self.level(class, std::slice::from_ref(&whole)).await?;
        let (peer, cached) = (first_bucket(&peer[0]), first_bucket(&cached[0]));
        let mut report = pb::ClassVerify {
            class: class.name().to_owned(),
            peer_objects: peer.count,
            cached_objects: cached.count,
            ..Default::default()
        };
        let mut differing = Vec::new();
        if (peer.count, peer.sum) != (cached.count, cached.sum) {
            let (first, last) = span(&peer, &cached);
            let mut pending = match cached.count > LEAF {
                true => self.by_rank(class, first, last, cached.count).await?,
                false => vec![range_for(first, last, peer.count.max(cached.count))],
            };
            while !pending.is_empty() {
                let mut next = Vec::new();
                for ranges in pending.chunks(PER_CALL) {
                    let (peer, cached) = self.level(class, ranges).await?;
                    for ((range, peer), cached) in ranges.iter().zip(peer).zip(cached) {
                        match range.list {
                            true => {
                                differing_objects(&peer.objects, &cached.objects, &mut differing)
                            }
                            false => differing_buckets(&peer.buckets, &cached.buckets, &mut next),
                        }
                    }
                }
                pending = next;
            }
        }
        differing.sort_unstable();
        differing.dedup();
        report.differing = differing.len() as i64;
        report.differing_ids = differing.iter().take(REPORTED_IDS).copied().collect();
        Ok((differing, report))
    }

    /// Compares `first..=last` of `class`, which the cache holds `count`
    /// objects of, in ranges of the same number of the cache's objects
    /// (equal-width buckets would be as wide as a few outlying ids make
    /// the span): reads the cache's digests there, sums them per range,
    /// asks the peer for the same ranges, and returns the ranges that
    /// differ, to look into next.
    async fn by_rank(
        &mut self,
        class: Class,
        first: i64,
        last: i64,
        count: i64,
    ) -> Result<Vec<pb::DigestRange>> {
        let limit = usize::try_from(count).unwrap_or(0) + 1;
        let rows = cached_objects(self.store, self.peer_id, class, first, last, limit).await?;
        let per = (PER_BUCKET as usize).max(rows.len().div_ceil(MAX_RANGES));
        let (ranges, cached) = by_rank(first, last, &rows, per);
        let mut peer = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(MAX_RANGES) {
            let (answer, ()) = self.ask(class, chunk, async { Ok(()) }).await?;
            peer.extend(answer.into_iter().flat_map(|r| r.buckets));
        }
        let mut next = Vec::new();
        differing_buckets(&peer, &cached, &mut next);
        Ok(next)
    }

    /// The digests of `ranges` of `class` at the peer and in the cache,
    /// read at the same time.
    async fn level(
        &mut self,
        class: Class,
        ranges: &[pb::DigestRange],
    ) -> Result<(Vec<pb::RangeDigest>, Vec<pb::RangeDigest>)> {
        let local = cached_digests(self.store, self.peer_id, class, ranges);
        self.ask(class, ranges, local).await
    }

    /// The peer's digests of `ranges` of `class`, asked while `local`
    /// runs, and what `local` returned.
    async fn ask<T>(
        &mut self,
        class: Class,
        ranges: &[pb::DigestRange],
        local: impl Future<Output = Result<T>>,
    ) -> Result<(Vec<pb::RangeDigest>, T)> {
        let request = pb::GetDigestRequest {
            class: class.name().to_owned(),
            ranges: ranges.to_vec(),
        };
        let timeout = self.timeout;
        let client = &mut self.client;
        let remote = async move {
            tokio::time::timeout(timeout, client.get_digest(request))
                .await
                .map_err(|_| {
                    Error::Unavailable(format!(
                        "GetDigest: no answer within {} s",
                        timeout.as_secs_f64()
                    ))
                })?
                .map(tonic::Response::into_inner)
                .map_err(|s| Error::Unavailable(format!("GetDigest: {}", s.message())))
        };
        let (remote, local) = tokio::join!(remote, local);
        let (remote, local) = (remote?, local?);
        self.report.digest_calls += 1;
        self.report.digest_bytes += remote.encoded_len() as i64;
        if remote.algorithm != ALGORITHM {
            return Err(Error::FailedPrecondition(format!(
                "the peer digests with algorithm {}, this registry with {ALGORITHM}: they cannot be compared",
                remote.algorithm
            )));
        }
        if remote.ranges.len() != ranges.len() {
            return Err(Error::Unavailable(format!(
                "GetDigest: {} ranges answered for {} asked",
                remote.ranges.len(),
                ranges.len()
            )));
        }
        if let Some(checkpoint) = &remote.checkpoint {
            self.report.revision = checkpoint.revision;
        }
        Ok((remote.ranges, local))
    }
}

/// The cache's digests of `ranges`, in one read-only transaction.
async fn cached_digests(
    store: &Store,
    peer_id: i64,
    class: Class,
    ranges: &[pb::DigestRange],
) -> Result<Vec<pb::RangeDigest>> {
    let splits = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| checked_split(i, range))
        .collect::<Result<Vec<_>>>()?;
    let mut conn = store.read().await?;
    let splits = &splits;
    conn.snapshot(|c| {
        Box::pin(
            async move { answer_ranges(c, class, Side::Cached(peer_id), ranges, splits).await },
        )
    })
    .await
}

/// The cache's digests of the objects of `class` in `first..=last`, by id,
/// at most `limit`.
async fn cached_objects(
    store: &Store,
    peer_id: i64,
    class: Class,
    first: i64,
    last: i64,
    limit: usize,
) -> Result<Vec<pb::ObjectDigest>> {
    let mut conn = store.read().await?;
    let mut lists = digests::lists(
        &mut conn,
        class,
        Side::Cached(peer_id),
        &[(first, last)],
        limit,
        limit,
    )
    .await?;
    Ok(lists.pop().unwrap_or_default())
}

/// Splits `first..=last` into contiguous ranges of `per` of the cache's
/// objects `rows` (sorted by id) each, the last one up to `last`: the
/// ranges to ask the peer for (one bucket each) and the cache's bucket of
/// each, as the peer would answer them.
fn by_rank(
    first: i64,
    last: i64,
    rows: &[pb::ObjectDigest],
    per: usize,
) -> (Vec<pb::DigestRange>, Vec<pb::DigestBucket>) {
    let mut ranges = Vec::new();
    let mut buckets = Vec::new();
    let mut lo = first;
    let mut chunks = rows.chunks(per.max(1)).peekable();
    while let Some(chunk) = chunks.next() {
        let hi = match chunks.peek() {
            Some(_) => chunk[chunk.len() - 1].id,
            None => last,
        };
        ranges.push(pb::DigestRange {
            first_id: lo,
            last_id: hi,
            buckets: 1,
            list: false,
        });
        buckets.push(pb::DigestBucket {
            first_id: lo,
            last_id: hi,
            count: chunk.len() as i64,
            sum: chunk.iter().map(|o| o.digest).sum(),
            min_id: chunk[0].id,
            max_id: chunk[chunk.len() - 1].id,
        });
        // Ids are unique and sorted: the next range starts after this one.
        lo = hi.saturating_add(1);
    }
    if ranges.is_empty() {
        ranges.push(pb::DigestRange {
            first_id: first,
            last_id: last,
            buckets: 1,
            list: false,
        });
    }
    (ranges, buckets)
}

/// The single bucket of a whole range, empty when it holds nothing.
fn first_bucket(range: &pb::RangeDigest) -> pb::DigestBucket {
    range.buckets.first().cloned().unwrap_or_default()
}

/// The ids both sides' objects span.
fn span(a: &pb::DigestBucket, b: &pb::DigestBucket) -> (i64, i64) {
    match (a.count, b.count) {
        (0, _) => (b.min_id, b.max_id),
        (_, 0) => (a.min_id, a.max_id),
        _ => (a.min_id.min(b.min_id), a.max_id.max(b.max_id)),
    }
}

/// The buckets that differ between the two sides (matched by their first
/// id), as the ranges to look into next.
fn differing_buckets(
    peer: &[pb::DigestBucket],
    cached: &[pb::DigestBucket],
    next: &mut Vec<pb::DigestRange>,
) {
    let (mut p, mut c) = (peer.iter().peekable(), cached.iter().peekable());
    loop {
        let (a, b) = match (p.peek(), c.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) if a.first_id == b.first_id => {
                let pair = (Some(*a), Some(*b));
                p.next();
                c.next();
                pair
            }
            (Some(a), Some(b)) if a.first_id < b.first_id => (p.next(), None),
            (Some(_), Some(_)) | (None, Some(_)) => (None, c.next()),
            (Some(_), None) => (p.next(), None),
        };
        let empty = pb::DigestBucket::default();
        let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
        if (a.count, a.sum) == (b.count, b.sum) {
            continue;
        }
        let (first, last) = span(a, b);
        next.push(range_for(first, last, a.count.max(b.count)));
    }
}

/// The ids of the objects listed on one side only, or with other digests.
fn differing_objects(
    peer: &[pb::ObjectDigest],
    cached: &[pb::ObjectDigest],
    differing: &mut Vec<i64>,
) {
    let (mut p, mut c) = (peer.iter().peekable(), cached.iter().peekable());
    loop {
        match (p.peek(), c.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) if a.id == b.id => {
                if a.digest != b.digest {
                    differing.push(a.id);
                }
                p.next();
                c.next();
            }
            (Some(a), Some(b)) if a.id < b.id => {
                differing.push(a.id);
                p.next();
            }
            (Some(a), None) => {
                differing.push(a.id);
                p.next();
            }
            (_, Some(b)) => {
                differing.push(b.id);
                c.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(id: i64, digest: i64) -> pb::ObjectDigest {
        pb::ObjectDigest { id, digest }
    }

    #[test]
    fn listed_objects_differ_when_missing_extra_or_changed() {
        let peer = [object(1, 10), object(2, 20), object(4, 40)];
        let cached = [object(2, 21), object(3, 30), object(4, 40), object(5, 50)];
        let mut differing = Vec::new();
        differing_objects(&peer, &cached, &mut differing);
        assert_eq!(differing, vec![1, 2, 3, 5]);
    }

    #[test]
    fn only_differing_buckets_are_looked_into() {
        let bucket = |first_id, count, sum| pb::DigestBucket {
            first_id,
            last_id: first_id + 99,
            count,
            sum,
            min_id: first_id,
            max_id: first_id + 99,
        };
        let peer = [bucket(0, 5, 50), bucket(100, 5, 50), bucket(300, 1, 1)];
        let cached = [bucket(0, 5, 50), bucket(100, 5, 51), bucket(200, 1, 1)];
        let mut next = Vec::new();
        differing_buckets(&peer, &cached, &mut next);
        let firsts: Vec<i64> = next.iter().map(|r| r.first_id).collect();
        assert_eq!(firsts, vec![100, 200, 300]);
        assert!(next.iter().all(|r| r.list));
    }

    #[test]
    fn ranks_cover_the_span_with_the_caches_sums() {
        let rows: Vec<_> = [3, 5, 9, 10_000, 10_001, 20_000_000, 20_000_007]
            .into_iter()
            .map(|id| object(id, id % 97))
            .collect();
        let (ranges, buckets) = by_rank(1, 30_000_000, &rows, 3);
        let bounds: Vec<(i64, i64)> = ranges.iter().map(|r| (r.first_id, r.last_id)).collect();
        assert_eq!(
            bounds,
            vec![(1, 9), (10, 20_000_000), (20_000_001, 30_000_000)]
        );
        assert!(ranges.iter().all(|r| r.buckets == 1 && !r.list));
        let counts: Vec<i64> = buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![3, 3, 1]);
        assert_eq!(
            buckets.iter().map(|b| b.sum).sum::<i64>(),
            rows.iter().map(|o| o.digest).sum::<i64>()
        );
        assert_eq!((buckets[1].min_id, buckets[1].max_id), (10_000, 20_000_000));

        let (ranges, buckets) = by_rank(1, 9, &[], 3);
        assert_eq!((ranges.len(), buckets.len()), (1, 0));
        assert_eq!((ranges[0].first_id, ranges[0].last_id), (1, 9));
    }
}
