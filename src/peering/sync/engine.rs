//! One class of a refresh, chunk by chunk: the cached objects the peer no
//! longer has go first (freeing their natural keys), then each chunk is
//! validated, checked for natural-key conflicts ([`NaturalKeys`]), diffed
//! against its cached rows and written with multi-row statements.

use foldhash::{HashMap, HashSet, HashSetExt};
use std::time::{Duration, Instant};

use super::cascade::{Cascade, Cascaded, delete_noting};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::peering::diff::{Plan, diff};
use crate::peering::digest::{self, Digested};
use crate::peering::report::ReportBuilder;
use crate::peering::spool::{ClassSpool, PeerObject, SpooledClass};
use crate::proto::v1 as pb;
use crate::store::cache::{self, CachedClass};
use crate::store::{DbConn, now};

/// Rows a class adds before its table's planner statistics are worth
/// refreshing (see [`cache::refresh_statistics`]).
pub(super) const STATISTICS_FLOOR: usize = 2000;

/// How classes are applied: objects per round, whether the spool is a
/// delta, and the time spent translating and validating the peer's
/// objects, all classes together (the class timers hold the rest); for a
/// full dump, the digests stored with the cached rows and what was found
/// unchanged so far.
pub(super) struct Rounds {
    pub(super) chunk: usize,
    pub(super) delta: bool,
    pub(super) validating: Duration,
    /// Per class, the peer's ids → the digest stored with the cached row
    /// ([`super::CachedIds`]; empty for a delta).
    pub(super) digests: PerClass<HashMap<i64, i64>>,
    /// The objects found unchanged so far.
    pub(super) unchanged: Unchanged,
    /// Which classes' memberships are all as cached.
    pub(super) settled: Settled,
    /// The peer's ids of the nodes it says are ours, left out of its
    /// slices' digests (known once the nodes are done).
    pub(super) own_nodes: HashSet<i64>,
}

/// Whether the memberships of a class (a person's keys, sites and roles;
/// a slice's nodes and persons) are all as cached, so that the refresh
/// skips reading them: every object of the class is unchanged and so are
/// all its members, each role is known, and no key is listed twice (its
/// owner would then be decided again).
#[derive(Debug)]
pub(super) struct Settled {
    /// Per class, whether all its objects so far were settled.
    pub(super) classes: PerClass<bool>,
    /// The roles known here (loaded when persons were sent).
    pub(super) roles: HashSet<i32>,
    /// The keys the persons listed so far.
    keys_listed: HashSet<i64>,
}

impl Default for Settled {
    fn default() -> Settled {
        Settled {
            classes: PerClass::from_fn(|_| true),
            roles: HashSet::new(),
            keys_listed: HashSet::new(),
        }
    }
}

/// Per class, the peer's ids of the cached objects a full refresh found
/// unchanged: what the peer sent has the digest stored with the cached row
/// (which no write outside a refresh left in place), and the objects it
/// refers to are unchanged too. Their rows are neither read nor written,
/// and neither are their memberships when their members are unchanged.
pub(super) type Unchanged = PerClass<HashSet<i64>>;

/// Whether every one of `ids` of `class` is unchanged.
fn all_unchanged(unchanged: &Unchanged, class: Class, ids: &[i64]) -> bool {
    ids.iter().all(|id| unchanged[class].contains(id))
}

/// The other objects of the refresh a peer's object depends on. Its
/// translated columns depend on those it refers to (a node's site, a
/// slice's site and creator): it is unchanged only when those are, since a
/// new local id or a newly accepted creator would change its row while its
/// digest stays the same. Its memberships depend on its members likewise.
pub(super) trait Referring: Digested {
    /// The object's digest as received, given its digest as spooled and
    /// the peer's ids of the nodes that are ours (`own_nodes`).
    fn received_digest(&self, spooled: i64, _own_nodes: &HashSet<i64>) -> i64 {
        spooled
    }

    /// Whether every object it refers to is unchanged.
    fn refers_to_unchanged(&self, unchanged: &Unchanged) -> bool;

    /// Whether all its members are unchanged (a person's keys and sites,
    /// its roles known; a slice's nodes and persons).
    fn members_unchanged(&self, _unchanged: &Unchanged, _roles: &HashSet<i32>) -> bool {
        true
    }

    /// The keys it lists (a person's), each of which belongs to one owner.
    fn listed_keys(&self) -> &[i64] {
        &[]
    }
}

impl Settled {
    /// Whether `object`'s memberships would be as cached were it
    /// unchanged; notes the keys it lists, which no later object may list.
    fn members_settled<T: Referring>(&mut self, object: &T, unchanged: &Unchanged) -> bool {
        let mut settled = object.members_unchanged(unchanged, &self.roles);
        for key in object.listed_keys() {
            settled &= self.keys_listed.insert(*key);
        }
        settled
    }
}

/// Objects that refer to no other object in their own columns.
macro_rules! refers_to_nothing {
    ($($type:ident),*) => {
        $(
            impl Referring for pb::$type {
                fn refers_to_unchanged(&self, _: &Unchanged) -> bool {
                    true
                }
            }
        )*
    };
}

refers_to_nothing!(ExportedSite);

impl Referring for pb::ExportedKey {
    fn refers_to_unchanged(&self, _: &Unchanged) -> bool {
        true
    }
}

impl Referring for pb::ExportedPerson {
    fn refers_to_unchanged(&self, _: &Unchanged) -> bool {
        true
    }

    fn members_unchanged(&self, unchanged: &Unchanged, roles: &HashSet<i32>) -> bool {
        all_unchanged(unchanged, Class::Keys, &self.key_ids)
            && all_unchanged(unchanged, Class::Sites, &self.site_ids)
            && self.role_ids.iter().all(|r| roles.contains(r))
    }

    fn listed_keys(&self) -> &[i64] {
        &self.key_ids
    }
}

impl Referring for pb::ExportedNode {
    fn refers_to_unchanged(&self, unchanged: &Unchanged) -> bool {
        unchanged[Class::Sites].contains(&self.site_id)
    }
}

impl Referring for pb::ExportedSlice {
    fn received_digest(&self, spooled: i64, own_nodes: &HashSet<i64>) -> i64 {
        digest::of_received_slice(self, spooled, own_nodes)
    }

    fn refers_to_unchanged(&self, unchanged: &Unchanged) -> bool {
        unchanged[Class::Sites].contains(&self.site_id)
            && self
                .creator_person_id
                .is_none_or(|person| unchanged[Class::Persons].contains(&person))
    }

    fn members_unchanged(&self, unchanged: &Unchanged, _: &HashSet<i32>) -> bool {
        all_unchanged(unchanged, Class::Nodes, &self.node_ids)
            && all_unchanged(unchanged, Class::Persons, &self.person_ids)
    }
}

/// How the objects of a class the peer sent are checked.
///
/// An object whose digest as received equals its cached row's (and whose
/// references are unchanged) is kept without [`Checks::prepare`]: the row
/// holds the checked fields already, and the checks depend only on the
/// object and on what it refers to. [`Checks::admit`] runs on every object,
/// for what depends on the rest of the refresh.
pub(super) trait Checks<T, F> {
    /// Whether the object may be cached at all, decided before its digest
    /// is compared (a key: whether a person of the peer lists it); `false`
    /// skips it (with a warning where it is an error).
    fn admit(&mut self, _object: &T, _report: &mut ReportBuilder) -> bool {
        true
    }

    /// The object's id and cached fields, checked as the admin API checks
    /// them, with its digest as received; `None` skips it with a warning.
    fn prepare(&mut self, object: T, digest: i64, report: &mut ReportBuilder) -> Option<(i64, F)>;
}

impl<T, F, P> Checks<T, F> for P
where
    P: FnMut(T, i64, &mut ReportBuilder) -> Option<(i64, F)>,
{
    fn prepare(&mut self, object: T, digest: i64, report: &mut ReportBuilder) -> Option<(i64, F)> {
        self(object, digest, report)
    }
}

/// Writes one class from its spool, given what was cached of it when the
/// refresh began (`cached_ids`: the peer's ids → local ids, of the ids in
/// `scope` only for a delta) less what went since with objects of an
/// earlier class (`cascaded`, the peer's ids): deletes the cached objects
/// the peer no longer has, then per chunk validates (`checks` turns an
/// object into its cached fields, or skips it with a warning), checks
/// natural keys (moving aside those of the peer's own objects that are
/// renamed, see [`NaturalKeys`]), diffs against the cache and writes.
/// Returns the peer's ids → local ids of the class after the write.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_class<K: CachedClass, T: PeerObject + Referring>(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut ClassSpool<T>,
    (mut cached_ids, scope): (HashMap<i64, i64>, Option<&[i64]>),
    (cascaded, cascade): (Cascaded, &mut Cascade),
    rounds: &mut Rounds,
    report: &mut ReportBuilder,
    mut checks: impl Checks<T, K::Fields> + Send,
) -> Result<HashMap<i64, i64>> {
    let started = Instant::now();
    let validated_before = rounds.validating;
    let warned_before = report.warning_count(K::CLASS.name());
    let now = now();
    // Every id cascaded was an object of this class cached from the peer
    // (a delta's map holds only the ids it touches).
    let Cascaded {
        deleted: cascaded,
        changed: cascade_changed,
    } = cascaded;
    let cascaded_count = cascaded.len();
    for id in &cascaded {
        cached_ids.remove(id);
    }
    // Objects an earlier deletion changed count as updated, unless the
    // refresh updates or deletes them anyway.
    let mut changed_by_cascade: HashSet<i64> = cascade_changed.into_iter().collect();
    let gone = spool.doomed(&cached_ids, rounds.delta);
    let mut deleted = delete_noting::<K>(conn, peer_id, &gone, &cached_ids, cascade).await?;
    let mut removed: HashSet<i64> = gone.into_iter().collect();
    removed.extend(cascaded);

    let mut keys = NaturalKeys::default();
    let (mut added, mut updated) = (0, 0);
    // Rows the planner's statistics count, roughly, and rows added since;
    // statistics are refreshed each time the class doubles, once it is
    // past a small size.
    let (mut counted, mut added_since) = (cached_ids.len().max(STATISTICS_FLOOR), 0);
    for chunk in spool.chunks(rounds.chunk)?.with_digests() {
        let chunk = chunk?;
        // Only ids cached when the refresh began can have a row (a first
        // refresh reads none).
        let mut chunk_ids: Vec<i64> = chunk
            .iter()
            .map(|(object, _)| object.peer_object_id())
            .filter(|id| cached_ids.contains_key(id) && !removed.contains(id))
            .collect();

        let validation = Instant::now();
        let mut candidates: Vec<(i64, K::Fields)> = Vec::with_capacity(chunk.len());
        let unchanged_before = rounds.unchanged[K::CLASS].len();
        for (object, spooled_digest) in chunk {
            let id = object.peer_object_id();
            // Settled until shown otherwise below.
            let settled = &mut rounds.settled.classes[K::CLASS];
            let was_settled = std::mem::replace(settled, false);
            if let Err(e) = crate::registry::validate::peer_object_id("id", id) {
                report.warn(K::CLASS.name(), id, "", e.to_string());
                continue;
            }
            let references_unchanged = object.refers_to_unchanged(&rounds.unchanged);
            let members_settled = rounds.settled.members_settled(&object, &rounds.unchanged);
            let digest = object.received_digest(spooled_digest, &rounds.own_nodes);
            if !checks.admit(&object, report) {
                continue;
            }
            if references_unchanged
                && !removed.contains(&id)
                && keys.keep_unchanged(
                    id,
                    digest,
                    &rounds.digests[K::CLASS],
                    &mut rounds.unchanged[K::CLASS],
                )
            {
                rounds.settled.classes[K::CLASS] = was_settled && members_settled;
                continue;
            }
            let Some((id, fields)) = checks.prepare(object, digest, report) else {
                continue;
            };
            candidates.push((id, fields));
        }
        rounds.validating += validation.elapsed();
        if rounds.unchanged[K::CLASS].len() > unchanged_before {
            let unchanged = &rounds.unchanged[K::CLASS];
            chunk_ids.retain(|id| !unchanged.contains(id));
        }
        let cached = K::load(conn, peer_id, &chunk_ids).await?;

        let accepted = keys
            .check::<K>(
                conn,
                peer_id,
                candidates,
                (&cached, &rounds.unchanged[K::CLASS]),
                report,
            )
            .await?;
        let plan: Plan<K::Fields> = diff(accepted, &cached);
        // Cached objects the peer still has but that failed their checks
        // this time go; an id accepted in an earlier chunk (and repeated
        // in this one) stays.
        let stale: Vec<i64> = plan
            .deletes
            .into_iter()
            .filter(|id| !keys.accepted.contains(id))
            .collect();
        deleted += delete_noting::<K>(conn, peer_id, &stale, &cached_ids, cascade).await?;
        removed.extend(stale);
        if !changed_by_cascade.is_empty() {
            // Counted below when the peer changed nothing else of them.
            let restamped: HashSet<&i64> = plan.restamped.iter().collect();
            for (id, _) in &plan.upserts {
                if !restamped.contains(id) {
                    changed_by_cascade.remove(id);
                }
            }
        }
        K::upsert(conn, peer_id, &plan.upserts, now).await?;
        added += plan.added;
        updated += plan.updated;
        added_since += plan.added;
        if added_since > counted {
            cache::refresh_statistics::<K>(conn).await?;
            counted += added_since;
            added_since = 0;
        }
    }

    // Objects whose natural key went to another of the peer's objects
    // and that the peer did not send again: the peer's data has two
    // objects for one key (a delta missing a rename); the one it sent wins.
    let displaced: Vec<i64> = keys
        .parked
        .iter()
        .filter(|id| !keys.accepted.contains(id) && !removed.contains(id))
        .copied()
        .collect();
    for &id in &displaced {
        report.warn(
            K::CLASS.name(),
            id,
            "",
            format!(
                "another of the peer's objects took its {} and the peer did not send it again",
                K::NATURAL_KEY
            ),
        );
    }
    deleted += delete_noting::<K>(conn, peer_id, &displaced, &cached_ids, cascade).await?;
    removed.extend(displaced);

    updated += changed_by_cascade
        .iter()
        .filter(|id| !removed.contains(id))
        .count();

    let ids = if added > 0 {
        match scope {
            Some(ids) => K::ids_among(conn, peer_id, ids).await?,
            None => K::ids(conn, peer_id).await?,
        }
    } else {
        cached_ids
            .into_iter()
            .filter(|(peer_object_id, _)| !removed.contains(peer_object_id))
            .collect()
    };
    report.class(pb::ClassReport {
        class: K::CLASS.name().to_owned(),
        received: spool.len() as i64,
        added: added as i64,
        updated: updated as i64,
        deleted: (deleted + cascaded_count) as i64,
        // Every warning of the class, from validation and from the checks
        // of natural keys, is one skipped object.
        skipped: (report.warning_count(K::CLASS.name()) - warned_before) as i64,
        cascaded: cascaded_count as i64,
        unchanged: rounds.unchanged[K::CLASS].len() as i64,
    });
    let validated_here = rounds.validating - validated_before;
    report.timer(
        K::CLASS.name(),
        started.elapsed().saturating_sub(validated_here),
    );
    Ok(ids)
}

/// The uniqueness checks of one class, across its chunks.
///
/// A natural key (login_base, e-mail, hostname, slice name) must be unique
/// in the peer's final state, not at every step of its history: between
/// two refreshes the peer may have swapped two keys, or renamed a chain of
/// objects each into the key of the next. So when an object takes a key
/// that another object cached from the same peer still holds, the holder
/// is parked (its key moved to a placeholder, [`cache::park`]) rather
/// than the object skipped; the holder gets its own new key when its turn
/// comes, in place, keeping its local id and memberships.
#[derive(Debug, Default)]
pub(super) struct NaturalKeys {
    /// Peer's ids accepted so far.
    pub(super) accepted: HashSet<i64>,
    /// Natural keys accepted so far.
    pub(super) claimed: HashSet<String>,
    /// Peer's ids of cached objects parked so far.
    pub(super) parked: HashSet<i64>,
}

impl NaturalKeys {
    /// Keeps an object without checking it again or reading its cached
    /// row when what the peer sent has the digest stored with that row
    /// (`digests`, the peer's ids → stored digests): the row holds its
    /// checked columns and its natural key already. Not when its id came
    /// earlier in the dump, or its row was parked (another object took its
    /// key): then it goes the usual way. Its key is not claimed here: a
    /// later object that wants it finds this row holding it
    /// ([`NaturalKeys::check`]). A kept object's id goes to `kept`.
    pub(super) fn keep_unchanged(
        &mut self,
        id: i64,
        digest: i64,
        digests: &HashMap<i64, i64>,
        kept: &mut HashSet<i64>,
    ) -> bool {
        if digests.get(&id) != Some(&digest)
            || self.accepted.contains(&id)
            || self.parked.contains(&id)
        {
            return false;
        }
        self.accepted.insert(id);
        kept.insert(id);
        true
    }

    /// Drops, with a warning, candidates whose id appeared before, whose
    /// natural key another authority uses here, or an earlier object
    /// claimed (a candidate accepted, or one `kept` unchanged, whose row
    /// holds its key); parks the peer's other cached objects that hold the
    /// keys of the candidates accepted. `cached` holds the candidates'
    /// cached rows.
    pub(super) async fn check<K: CachedClass>(
        &mut self,
        conn: &mut DbConn,
        peer_id: i64,
        candidates: Vec<(i64, K::Fields)>,
        (cached, kept): (&HashMap<i64, K::Fields>, &HashSet<i64>),
        report: &mut ReportBuilder,
    ) -> Result<Vec<(i64, K::Fields)>> {
        // A key the object's own cached row already holds is unique here
        // (the database enforces it), so only new and changed keys are
        // looked up.
        let lookup: Vec<String> = candidates
            .iter()
            .filter_map(|(id, fields)| {
                let key = K::natural_key(fields)?;
                let own = cached.get(id).and_then(K::natural_key);
                (own != Some(key)).then(|| key.to_owned())
            })
            .collect();
        let holders: HashMap<String, (Option<i64>, Option<i64>)> =
            K::holders(conn, peer_id, &lookup)
                .await?
                .into_iter()
                .map(|(key, holder_peer, holder_id)| (key, (holder_peer, holder_id)))
                .collect();
        let field = K::NATURAL_KEY;
        let mut accepted = Vec::with_capacity(candidates.len());
        let mut park = Vec::new();
        for (id, fields) in candidates {
            let key = K::natural_key(&fields).unwrap_or_default();
            let holder = holders.get(key);
            let problem = if self.accepted.contains(&id) {
                Some("its id appears twice in the peer's data".to_owned())
            } else if holder.is_some_and(|(holder_peer, _)| *holder_peer != Some(peer_id)) {
                Some(format!(
                    "{field} {key:?} is already used here by another authority"
                ))
            } else if !key.is_empty()
                && (self.claimed.contains(key)
                    || matches!(holder, Some(&(_, Some(h))) if h != id && kept.contains(&h)))
            {
                Some(format!("{field} {key:?} appears twice in the peer's data"))
            } else {
                None
            };
            match problem {
                Some(reason) => report.warn(K::CLASS.name(), id, key, reason),
                None => {
                    if let Some(&(_, Some(holder_id))) = holder
                        && holder_id != id
                        && self.parked.insert(holder_id)
                    {
                        park.push(holder_id);
                    }
                    self.accepted.insert(id);
                    if !key.is_empty() {
                        self.claimed.insert(key.to_owned());
                    }
                    accepted.push((id, fields));
                }
            }
        }
        cache::park::<K>(conn, peer_id, &park).await?;
        Ok(accepted)
    }
}
