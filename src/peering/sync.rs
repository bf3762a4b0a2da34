//! Applying a peer's spooled dump or delta to the cache, inside the
//! refresh's transaction.
//!
//! A delta goes the same way as a full dump: it holds the changed objects
//! whole, memberships included, and the deleted ids; what differs is which
//! cached objects go ([`ClassSpool::doomed`]). Objects it does not hold
//! are unchanged at the peer and stay as they are.
//!
//! Classes go in the order sites, keys, persons, nodes, slices. Each class
//! is read back from the [`Spool`] in chunks, so memory is bounded by the
//! chunk and by compact id maps, never by the dump. For each class, cached
//! objects the peer no longer has are deleted first (which frees their
//! natural keys); then each chunk is translated (the peer's relation ids to
//! local ids), validated object by object (a bad object is skipped with a
//! warning, the rest goes on), checked for natural-key conflicts, diffed
//! against its cached rows and written with multi-row statements. Then the
//! memberships (person-keys, slice-nodes, slice-persons, site-persons,
//! person-roles), again in rounds over the spooled persons and slices, each
//! as remove-stale / add-missing for the round's owners. Everything is
//! written in this one pass, so memberships of objects created by this
//! refresh are complete at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::diff::{Plan, diff, diff_memberships, diff_sets};
use super::report::ReportBuilder;
use super::spool::{ClassSpool, PeerObject, Spool};
use crate::error::Result;
use crate::proto::v1 as pb;
use crate::registry::nodes::NodeEnumerations;
use crate::registry::{keys as key_rules, nodes as node_rules, persons as person_rules};
use crate::registry::{sites as site_rules, slices as slice_rules};
use crate::store::cache::{
    self, CachedKeys, CachedKind, CachedNodes, CachedPersons, CachedSites, CachedSlices,
    Enumeration, KeyFields, NodeFields, PairTable, PersonFields, PersonKeys, PersonRoles,
    PersonSites, Relation, SiteFields, SliceFields, SliceNodes, SlicePersons,
};
use crate::store::{DbConn, now};

/// The peer's ids → local ids, per class, as the refresh goes.
#[derive(Debug, Default)]
struct IdMaps {
    sites: HashMap<i64, i64>,
    keys: HashMap<i64, i64>,
    persons: HashMap<i64, i64>,
    nodes: HashMap<i64, i64>,
    /// The peer's ids of our own local nodes → their ids here.
    local_nodes: HashMap<i64, i64>,
    slices: HashMap<i64, i64>,
}

/// What is cached from a peer when its refresh begins, per class: the
/// peer's ids → local ids; for a delta, only of the ids it touches.
#[derive(Debug, Default)]
pub struct CachedIds {
    /// Sites.
    pub sites: HashMap<i64, i64>,
    /// Keys.
    pub keys: HashMap<i64, i64>,
    /// Persons.
    pub persons: HashMap<i64, i64>,
    /// Nodes.
    pub nodes: HashMap<i64, i64>,
    /// Slices.
    pub slices: HashMap<i64, i64>,
    /// Who holds the keys the refresh brings.
    key_owners: KeyOwners,
    /// For a delta, the ids loaded.
    touched: Option<Touched>,
}

/// Who holds the keys of a refresh. A key belongs to one person, so a key
/// that no person of the peer lists is not cached (and is deleted when it
/// was); the keys of a person that cleaning drops (a disabled one) go with
/// it, without a warning.
#[derive(Debug, Default)]
struct KeyOwners {
    /// Keys the spooled persons list.
    listed: HashSet<i64>,
    /// Keys of the persons cleaning dropped.
    dropped: HashSet<i64>,
    /// For a delta: keys it brings that its persons do not list, whose
    /// cached owner it leaves as it is (a key changed alone).
    kept: HashSet<i64>,
}

impl KeyOwners {
    /// Reads them off the spool (and, for a delta, off the cache of the
    /// keys it brings alone).
    async fn load(
        conn: &mut DbConn,
        peer_id: i64,
        spool: &mut Spool,
        cached_keys: &HashMap<i64, i64>,
    ) -> Result<KeyOwners> {
        let mut owners = KeyOwners {
            dropped: spool.dropped_person_keys.iter().copied().collect(),
            ..KeyOwners::default()
        };
        if spool.keys.is_empty() && spool.persons.is_empty() {
            return Ok(owners);
        }
        spool
            .persons
            .for_each(|p| owners.listed.extend(&p.key_ids))?;
        if !spool.is_delta() {
            return Ok(owners);
        }
        let alone: HashMap<i64, i64> = spool
            .keys
            .ids()
            .filter(|id| !owners.listed.contains(id) && !owners.dropped.contains(id))
            .filter_map(|id| cached_keys.get(&id).map(|&local| (local, id)))
            .collect();
        if alone.is_empty() {
            return Ok(owners);
        }
        let local_keys: Vec<i64> = alone.keys().copied().collect();
        let holders = crate::store::keys::owners(conn, &local_keys).await?;
        let holder_ids: Vec<i64> = holders.values().copied().collect();
        let holders_at_peer =
            cache::peer_ids_of::<CachedPersons>(conn, peer_id, &holder_ids).await?;
        let touched_persons: HashSet<i64> = spool
            .persons
            .ids()
            .chain(spool.persons.gone_ids())
            .collect();
        owners.kept = holders
            .into_iter()
            .filter(|(_, person)| {
                holders_at_peer
                    .get(person)
                    .is_some_and(|at_peer| !touched_persons.contains(at_peer))
            })
            .filter_map(|(key, _)| alone.get(&key).copied())
            .collect();
        Ok(owners)
    }

    /// Whether a key the peer sent is taken: `Ok(true)` when a person
    /// holds it, `Ok(false)` when its person was dropped (it goes silently),
    /// `Err(reason)` when no person of the peer holds it.
    fn holds(&self, key_id: i64) -> std::result::Result<bool, &'static str> {
        if self.listed.contains(&key_id) || self.kept.contains(&key_id) {
            Ok(true)
        } else if self.dropped.contains(&key_id) {
            Ok(false)
        } else {
            Err("no person of the peer lists it (a key belongs to one person)")
        }
    }
}

/// The peer's ids a delta touches, per class, sorted: its objects, its
/// deletions, and the ids its objects refer to. A delta is applied knowing
/// the cache of these only, so its cost follows its size, not the cache's.
#[derive(Debug, Default)]
struct Touched {
    sites: Vec<i64>,
    keys: Vec<i64>,
    persons: Vec<i64>,
    nodes: Vec<i64>,
    slices: Vec<i64>,
}

impl Touched {
    /// Reads them off a spooled delta.
    fn of(spool: &mut Spool) -> Result<Touched> {
        fn own<T: PeerObject>(class: &ClassSpool<T>) -> Vec<i64> {
            class.ids().chain(class.gone_ids()).collect()
        }
        let mut touched = Touched {
            sites: own(&spool.sites),
            keys: own(&spool.keys),
            persons: own(&spool.persons),
            nodes: own(&spool.nodes),
            slices: own(&spool.slices),
        };
        touched.keys.extend(&spool.dropped_person_keys);
        spool.persons.for_each(|p| {
            touched.keys.extend(&p.key_ids);
            touched.sites.extend(&p.site_ids);
        })?;
        spool.nodes.for_each(|n| touched.sites.push(n.site_id))?;
        spool.slices.for_each(|s| {
            touched.sites.push(s.site_id);
            touched.nodes.extend(&s.node_ids);
            touched.persons.extend(&s.person_ids);
            touched.persons.extend(s.creator_person_id);
        })?;
        for ids in [
            &mut touched.sites,
            &mut touched.keys,
            &mut touched.persons,
            &mut touched.nodes,
            &mut touched.slices,
        ] {
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(touched)
    }
}

impl CachedIds {
    /// The cached objects loaded, all classes together (for a full dump,
    /// the whole cache).
    pub fn loaded(&self) -> usize {
        self.sites.len()
            + self.keys.len()
            + self.persons.len()
            + self.nodes.len()
            + self.slices.len()
    }

    /// Whether the whole cache was loaded (a full dump): then
    /// [`CachedIds::loaded`] is the size of the cache; a delta loads only
    /// the ids it touches.
    pub fn is_whole(&self) -> bool {
        self.touched.is_none()
    }

    /// Loads them, inside the refresh's transaction: all of them for a full
    /// dump, those of the ids it touches for a delta.
    pub async fn load(conn: &mut DbConn, peer_id: i64, spool: &mut Spool) -> Result<CachedIds> {
        let mut cached = if !spool.is_delta() {
            CachedIds {
                sites: CachedSites::ids(conn, peer_id).await?,
                keys: CachedKeys::ids(conn, peer_id).await?,
                persons: CachedPersons::ids(conn, peer_id).await?,
                nodes: CachedNodes::ids(conn, peer_id).await?,
                slices: CachedSlices::ids(conn, peer_id).await?,
                ..CachedIds::default()
            }
        } else {
            let touched = Touched::of(spool)?;
            CachedIds {
                sites: CachedSites::ids_among(conn, peer_id, &touched.sites).await?,
                keys: CachedKeys::ids_among(conn, peer_id, &touched.keys).await?,
                persons: CachedPersons::ids_among(conn, peer_id, &touched.persons).await?,
                nodes: CachedNodes::ids_among(conn, peer_id, &touched.nodes).await?,
                slices: CachedSlices::ids_among(conn, peer_id, &touched.slices).await?,
                touched: Some(touched),
                ..CachedIds::default()
            }
        };
        cached.key_owners = KeyOwners::load(conn, peer_id, spool, &cached.keys).await?;
        Ok(cached)
    }

    /// How many cached objects applying `spool` deletes for sure: those
    /// the peer no longer has, the nodes and slices that go with their
    /// sites, and the keys of the persons cleaning dropped. The mass-delete
    /// guard counts these.
    pub async fn doomed(&self, conn: &mut DbConn, peer_id: i64, spool: &Spool) -> Result<usize> {
        let delta = spool.is_delta();
        let sites = spool.sites.doomed(&self.sites, delta);
        let nodes: HashSet<i64> = spool.nodes.doomed(&self.nodes, delta).into_iter().collect();
        let slices: HashSet<i64> = spool
            .slices
            .doomed(&self.slices, delta)
            .into_iter()
            .collect();
        let mut keys: HashSet<i64> = spool.keys.doomed(&self.keys, delta).into_iter().collect();
        keys.extend(
            self.key_owners
                .dropped
                .iter()
                .filter(|id| self.keys.contains_key(id) && !self.key_owners.listed.contains(id)),
        );
        let persons = spool.persons.doomed(&self.persons, delta).len();
        let site_ids: Vec<i64> = sites
            .iter()
            .filter_map(|id| self.sites.get(id))
            .copied()
            .collect();
        let (site_nodes, site_slices) = match site_ids.is_empty() {
            true => (Vec::new(), Vec::new()),
            false => cache::cached_at_sites(conn, peer_id, &site_ids).await?,
        };
        let cascaded = site_nodes.iter().filter(|id| !nodes.contains(id)).count()
            + site_slices.iter().filter(|id| !slices.contains(id)).count();
        Ok(sites.len() + keys.len() + persons + nodes.len() + slices.len() + cascaded)
    }
}

/// Applies the spooled dump of peer `peer_id`, whose cache held `cached`
/// when the transaction began, `chunk` objects per round; the caller holds
/// the transaction.
pub async fn apply(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    cached: CachedIds,
    chunk: usize,
    report: &mut ReportBuilder,
) -> Result<()> {
    let mut ids = IdMaps::default();
    let touched = cached.touched.as_ref();
    // A delta's scope per class: the ids it touches; `None` for everything.
    let scope = |class: fn(&Touched) -> &Vec<i64>| touched.map(|t| class(t).as_slice());
    let mut rounds = Rounds {
        chunk,
        delta: spool.is_delta(),
        validating: Duration::ZERO,
    };
    let mut cascade = Cascade::default();

    ids.sites = sync_class::<CachedSites, _>(
        conn,
        peer_id,
        &mut spool.sites,
        (cached.sites, scope(|t| &t.sites)),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        prepare_site,
    )
    .await?;

    let key_types = known_values_for(conn, Enumeration::KeyTypes, &spool.keys).await?;
    let owners = &cached.key_owners;
    ids.keys = sync_class::<CachedKeys, _>(
        conn,
        peer_id,
        &mut spool.keys,
        (cached.keys, scope(|t| &t.keys)),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        |key, report| prepare_key(key, &key_types, owners, report),
    )
    .await?;

    ids.persons = sync_class::<CachedPersons, _>(
        conn,
        peer_id,
        &mut spool.persons,
        (cached.persons, scope(|t| &t.persons)),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        prepare_person,
    )
    .await?;
    delete_keys_of_gone_persons(conn, peer_id, &mut cascade, owners, &mut ids.keys, report).await?;

    let known = match spool.nodes.is_empty() {
        true => NodeEnumerations::default(),
        false => NodeEnumerations::load(conn).await?,
    };
    let site_nodes = Cascaded {
        deleted: std::mem::take(&mut cascade.nodes),
        changed: Vec::new(),
    };
    ids.nodes = sync_class::<CachedNodes, _>(
        conn,
        peer_id,
        &mut spool.nodes,
        (cached.nodes, scope(|t| &t.nodes)),
        (site_nodes, &mut cascade),
        &mut rounds,
        report,
        |node, report| prepare_node(node, &ids.sites, &known, report),
    )
    .await?;

    let started = Instant::now();
    ids.local_nodes = map_local_nodes(conn, &mut spool.peer_nodes, report).await?;
    report.timer("local_nodes", started.elapsed());

    let instantiations = known_values_for(conn, Enumeration::Instantiations, &spool.slices).await?;
    // A slice's name starts with its site's login_base, as cached now.
    let login_bases = match spool.slices.is_empty() {
        true => HashMap::new(),
        false => cache::login_bases(conn, peer_id, scope(|t| &t.sites)).await?,
    };
    let site_slices = Cascaded {
        deleted: std::mem::take(&mut cascade.slices),
        changed: std::mem::take(&mut cascade.slices_losing_creator),
    };
    ids.slices = sync_class::<CachedSlices, _>(
        conn,
        peer_id,
        &mut spool.slices,
        (cached.slices, scope(|t| &t.slices)),
        (site_slices, &mut cascade),
        &mut rounds,
        report,
        |slice, report| prepare_slice(slice, &ids, &login_bases, &instantiations, report),
    )
    .await?;
    report.timer("validate", rounds.validating);

    sync_relations(conn, peer_id, spool, &rounds, &ids, report).await
}

/// The values of `enumeration` that objects of `class` are checked
/// against; none read when the class brought no object (a small delta).
async fn known_values_for<T: PeerObject>(
    conn: &mut DbConn,
    enumeration: Enumeration,
    class: &ClassSpool<T>,
) -> Result<HashSet<String>> {
    match class.is_empty() {
        true => Ok(HashSet::new()),
        false => cache::known_values(conn, enumeration).await,
    }
}

/// Rows a class adds before its table's planner statistics are worth
/// refreshing (see [`cache::refresh_statistics`]).
const STATISTICS_FLOOR: usize = 2000;

/// How classes are applied: objects per round, whether the spool is a
/// delta, and the time spent translating and validating the peer's
/// objects, all classes together (the class timers hold the rest).
struct Rounds {
    chunk: usize,
    delta: bool,
    validating: Duration,
}

/// What goes with the objects a class deletes, for the classes after it:
/// a site's nodes and slices (the database's cascade; the peer's ids), a
/// person's keys (a key belongs to its person; local ids).
#[derive(Debug, Default)]
struct Cascade {
    nodes: Vec<i64>,
    slices: Vec<i64>,
    keys_of_persons: Vec<i64>,
    /// Slices whose creator went (the database sets it to null): the
    /// peer's ids.
    slices_losing_creator: Vec<i64>,
}

/// What an earlier class's deletions did to the cached objects of a class:
/// objects deleted with them, objects changed by them (the peer's ids).
#[derive(Debug, Default)]
struct Cascaded {
    deleted: Vec<i64>,
    changed: Vec<i64>,
}

impl Cascade {
    /// Notes what goes with the cached objects of class `K` whose local ids
    /// are `local_ids`, before they are deleted.
    async fn note<K: CachedKind>(
        &mut self,
        conn: &mut DbConn,
        peer_id: i64,
        local_ids: &[i64],
    ) -> Result<()> {
        if local_ids.is_empty() {
            return Ok(());
        }
        if K::CLASS == CachedSites::CLASS {
            let (nodes, slices) = cache::cached_at_sites(conn, peer_id, local_ids).await?;
            self.nodes.extend(nodes);
            self.slices.extend(slices);
        } else if K::CLASS == CachedPersons::CLASS {
            let pairs = PersonKeys::for_owners(conn, local_ids).await?;
            self.keys_of_persons
                .extend(pairs.into_iter().map(|(_, key)| key));
            self.slices_losing_creator
                .extend(cache::cached_slices_created_by(conn, peer_id, local_ids).await?);
        }
        Ok(())
    }
}

/// Deletes the cached keys whose persons this refresh deleted, unless a
/// person of the peer still lists them (a key that moved); counts them in
/// the keys' report.
async fn delete_keys_of_gone_persons(
    conn: &mut DbConn,
    peer_id: i64,
    cascade: &mut Cascade,
    owners: &KeyOwners,
    keys: &mut HashMap<i64, i64>,
    report: &mut ReportBuilder,
) -> Result<()> {
    let local = std::mem::take(&mut cascade.keys_of_persons);
    if local.is_empty() {
        return Ok(());
    }
    let gone: Vec<i64> = cache::peer_ids_of::<CachedKeys>(conn, peer_id, &local)
        .await?
        .into_values()
        .filter(|key| !owners.listed.contains(key))
        .collect();
    let deleted = CachedKeys::delete(conn, peer_id, &gone).await?;
    for key in &gone {
        keys.remove(key);
    }
    report.add_cascaded(CachedKeys::CLASS, deleted);
    Ok(())
}

/// Deletes cached objects of class `K` by the peer's ids, noting first in
/// `cascade` what goes with them; returns how many went.
async fn delete_noting<K: CachedKind>(
    conn: &mut DbConn,
    peer_id: i64,
    peer_object_ids: &[i64],
    local_ids: &HashMap<i64, i64>,
    cascade: &mut Cascade,
) -> Result<usize> {
    if peer_object_ids.is_empty() {
        return Ok(0);
    }
    let local: Vec<i64> = peer_object_ids
        .iter()
        .filter_map(|id| local_ids.get(id))
        .copied()
        .collect();
    cascade.note::<K>(conn, peer_id, &local).await?;
    K::delete(conn, peer_id, peer_object_ids).await
}

/// Writes one class from its spool, given what was cached of it when the
/// refresh began (`cached_ids`: the peer's ids → local ids, of the ids in
/// `scope` only for a delta) less what went since with objects of an
/// earlier class (`cascaded`, the peer's ids): deletes the cached objects
/// the peer no longer has, then per chunk validates (`prepare` turns an
/// object into its cached fields, or skips it with a warning), checks
/// natural keys (moving aside those of the peer's own objects that are
/// renamed, see [`NaturalKeys`]), diffs against the cache and writes.
/// Returns the peer's ids → local ids of the class after the write.
#[allow(clippy::too_many_arguments)]
async fn sync_class<K: CachedKind, T: PeerObject>(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut ClassSpool<T>,
    (mut cached_ids, scope): (HashMap<i64, i64>, Option<&[i64]>),
    (cascaded, cascade): (Cascaded, &mut Cascade),
    rounds: &mut Rounds,
    report: &mut ReportBuilder,
    mut prepare: impl FnMut(T, &mut ReportBuilder) -> Option<(i64, K::Fields)> + Send,
) -> Result<HashMap<i64, i64>> {
    let started = Instant::now();
    let validated_before = rounds.validating;
    let warned_before = report.warning_count(K::CLASS);
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
    for chunk in spool.chunks(rounds.chunk)? {
        let chunk = chunk?;
        // Only ids cached when the refresh began can have a row (a first
        // refresh reads none).
        let chunk_ids: Vec<i64> = chunk
            .iter()
            .map(PeerObject::peer_object_id)
            .filter(|id| cached_ids.contains_key(id) && !removed.contains(id))
            .collect();
        let cached = K::load(conn, peer_id, &chunk_ids).await?;

        let validation = Instant::now();
        let candidates: Vec<(i64, K::Fields)> = chunk
            .into_iter()
            .filter_map(|object| {
                let id = object.peer_object_id();
                match crate::registry::validate::peer_object_id("id", id) {
                    Ok(_) => prepare(object, report),
                    Err(e) => {
                        report.warn(K::CLASS, id, "", e.to_string());
                        None
                    }
                }
            })
            .collect();
        rounds.validating += validation.elapsed();

        let accepted = keys
            .check::<K>(conn, peer_id, candidates, &cached, report)
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
            for (id, _) in &plan.upserts {
                changed_by_cascade.remove(id);
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
            K::CLASS,
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
        class: K::CLASS.to_owned(),
        received: spool.len() as i64,
        added: added as i64,
        updated: updated as i64,
        deleted: (deleted + cascaded_count) as i64,
        // Every warning of the class, from validation and from the checks
        // of natural keys, is one skipped object.
        skipped: (report.warning_count(K::CLASS) - warned_before) as i64,
        cascaded: cascaded_count as i64,
    });
    let validated_here = rounds.validating - validated_before;
    report.timer(K::CLASS, started.elapsed().saturating_sub(validated_here));
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
struct NaturalKeys {
    /// Peer's ids accepted so far.
    accepted: HashSet<i64>,
    /// Natural keys accepted so far.
    claimed: HashSet<String>,
    /// Peer's ids of cached objects parked so far.
    parked: HashSet<i64>,
}

impl NaturalKeys {
    /// Drops, with a warning, candidates whose id appeared before, whose
    /// natural key another authority uses here, or an earlier candidate
    /// claimed; parks the peer's other cached objects that hold the keys
    /// of the candidates accepted.
    async fn check<K: CachedKind>(
        &mut self,
        conn: &mut DbConn,
        peer_id: i64,
        candidates: Vec<(i64, K::Fields)>,
        cached: &HashMap<i64, K::Fields>,
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
            } else if !key.is_empty() && self.claimed.contains(key) {
                Some(format!("{field} {key:?} appears twice in the peer's data"))
            } else {
                None
            };
            match problem {
                Some(reason) => report.warn(K::CLASS, id, key, reason),
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

/// Runs a validator on a peer's value: `Some(value)`, or `None` with a
/// warning naming the object.
fn checked<T>(
    report: &mut ReportBuilder,
    class: &str,
    id: i64,
    natural: &str,
    result: Result<T>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            report.warn(class, id, natural, e.to_string());
            None
        }
    }
}

/// A site the peer sent, checked as the admin API checks one.
fn prepare_site(s: pb::ExportedSite, report: &mut ReportBuilder) -> Option<(i64, SiteFields)> {
    let label = crate::error::quoted(&s.login_base);
    let fields = SiteFields {
        login_base: s.login_base,
        name: s.name,
        abbreviated_name: s.abbreviated_name,
        enabled: s.enabled,
        is_public: s.is_public,
        max_slices: s.max_slices,
        max_slivers: s.max_slivers,
        latitude: s.latitude,
        longitude: s.longitude,
        url: s.url,
        ext_consortium_id: s.ext_consortium_id,
    };
    let fields = checked(
        report,
        CachedSites::CLASS,
        s.site_id,
        &label,
        site_rules::checked(fields),
    )?;
    Some((s.site_id, fields))
}

/// A key the peer sent, checked as the admin API checks one, and taken
/// only when a person of the peer holds it ([`KeyOwners`]).
fn prepare_key(
    k: pb::ExportedKey,
    key_types: &HashSet<String>,
    owners: &KeyOwners,
    report: &mut ReportBuilder,
) -> Option<(i64, KeyFields)> {
    let class = CachedKeys::CLASS;
    let label = key_label(&k.key);
    match owners.holds(k.key_id) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(reason) => {
            report.warn(class, k.key_id, &label, reason);
            return None;
        }
    }
    if !key_types.contains(&k.key_type) {
        report.warn(
            class,
            k.key_id,
            &label,
            format!("unknown key_type {:?}", crate::error::quoted(&k.key_type)),
        );
        return None;
    }
    let fields = KeyFields {
        key_type: k.key_type,
        key: k.key,
        is_blacklisted: k.is_blacklisted,
    };
    let fields = checked(report, class, k.key_id, &label, key_rules::checked(fields))?;
    Some((k.key_id, fields))
}

/// A short name for a key in warnings: its comment, or its start.
fn key_label(key: &str) -> String {
    match key.split_whitespace().nth(2) {
        Some(comment) => crate::error::quoted(comment),
        None => key.chars().take(24).collect(),
    }
}

/// A person the peer sent, checked as the admin API checks one.
fn prepare_person(
    p: pb::ExportedPerson,
    report: &mut ReportBuilder,
) -> Option<(i64, PersonFields)> {
    let label = crate::error::quoted(&p.email);
    let fields = PersonFields {
        email: p.email,
        first_name: p.first_name,
        last_name: p.last_name,
        title: p.title,
        phone: p.phone,
        url: p.url,
        bio: p.bio,
        enabled: p.enabled,
    };
    let fields = checked(
        report,
        CachedPersons::CLASS,
        p.person_id,
        &label,
        person_rules::checked(fields),
    )?;
    Some((p.person_id, fields))
}

/// A node the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites.
fn prepare_node(
    n: pb::ExportedNode,
    sites: &HashMap<i64, i64>,
    known: &NodeEnumerations,
    report: &mut ReportBuilder,
) -> Option<(i64, NodeFields)> {
    let class = CachedNodes::CLASS;
    let label = crate::error::quoted(&n.hostname);
    let Some(&site_id) = sites.get(&n.site_id) else {
        report.warn(
            class,
            n.node_id,
            &label,
            format!(
                "its site {} is not among the peer's synced sites",
                n.site_id
            ),
        );
        return None;
    };
    let fields = NodeFields {
        hostname: n.hostname,
        site_id,
        node_type: n.node_type,
        boot_state: n.boot_state,
        run_level: n.run_level,
        model: n.model,
        version: n.version,
        ssh_rsa_key: n.ssh_rsa_key,
        verified: n.verified,
    };
    let fields = checked(
        report,
        class,
        n.node_id,
        &label,
        node_rules::checked(fields, known),
    )?;
    Some((n.node_id, fields))
}

/// `PeerNodes`: the peer's ids of our own nodes → our ids, keeping only
/// the nodes this registry exports (local, without a slice whitelist): a
/// peer may place its slices only on nodes it was given.
async fn map_local_nodes(
    conn: &mut DbConn,
    spool: &mut ClassSpool<pb::PeerNode>,
    report: &mut ReportBuilder,
) -> Result<HashMap<i64, i64>> {
    let mut claims = Vec::with_capacity(spool.len());
    spool.for_each(|n| claims.push((n.node_id, n.peer_node_id)))?;
    let claimed: Vec<i64> = claims.iter().map(|&(_, local)| local).collect();
    let exported = cache::exported_node_ids(conn, &claimed).await?;
    let mut out = HashMap::with_capacity(claims.len());
    for (node_id, peer_node_id) in claims {
        if exported.contains(&peer_node_id) {
            out.insert(node_id, peer_node_id);
        } else {
            report.warn(
                "peer_nodes",
                node_id,
                "",
                format!("node {peer_node_id} is not a node this registry exports"),
            );
        }
    }
    Ok(out)
}

/// A slice the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites, and its name must start with
/// that site's login_base.
fn prepare_slice(
    s: pb::ExportedSlice,
    ids: &IdMaps,
    login_bases: &HashMap<i64, String>,
    instantiations: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Option<(i64, SliceFields)> {
    let class = CachedSlices::CLASS;
    let label = crate::error::quoted(&s.name);
    let Some(&site_id) = ids.sites.get(&s.site_id) else {
        report.warn(
            class,
            s.slice_id,
            &label,
            format!(
                "its site {} is not among the peer's synced sites",
                s.site_id
            ),
        );
        return None;
    };
    let fields = SliceFields {
        site_id,
        name: s.name,
        instantiation: s.instantiation,
        url: s.url,
        description: s.description,
        max_nodes: s.max_nodes,
        creator_person_id: s
            .creator_person_id
            .and_then(|p| ids.persons.get(&p).copied()),
        created: s.created.map(|t| t.seconds).unwrap_or_default(),
        expires: s.expires.map(|t| t.seconds).unwrap_or_default(),
    };
    let fields = checked(
        report,
        class,
        s.slice_id,
        &label,
        slice_rules::checked(fields, instantiations),
    )?;
    let login_base = login_bases.get(&s.site_id).map_or("", String::as_str);
    if slice_rules::login_base_of(&fields.name) != login_base {
        report.warn(
            class,
            s.slice_id,
            &label,
            format!("name must start with its site's login_base {login_base:?}"),
        );
        return None;
    }
    Some((s.slice_id, fields))
}

/// What one relation did over the rounds of a refresh.
#[derive(Debug, Default)]
struct Tally {
    added: usize,
    removed: usize,
    took: Duration,
}

impl Tally {
    /// Removes the pairs of `owners` that `desired` no longer lists;
    /// returns the missing pairs, for the caller to insert.
    async fn remove_stale<R: Relation>(
        &mut self,
        conn: &mut DbConn,
        owners: &[i64],
        desired: &HashSet<(i64, i64)>,
    ) -> Result<Vec<(i64, i64)>> {
        let started = Instant::now();
        let existing: HashSet<(i64, i64)> =
            R::for_owners(conn, owners).await?.into_iter().collect();
        let (add, remove) = diff_sets(desired, &existing);
        self.removed += cache::delete_pairs::<R>(conn, &remove).await?;
        self.took += started.elapsed();
        Ok(add)
    }

    /// Inserts pairs.
    async fn insert<R: Relation>(&mut self, conn: &mut DbConn, pairs: &[(i64, i64)]) -> Result<()> {
        let started = Instant::now();
        self.added += R::insert(conn, pairs).await?;
        self.took += started.elapsed();
        Ok(())
    }

    /// Like [`Tally::remove_stale`] then the insertion of what is missing,
    /// for pairs the caller already read (`existing`, filtered as it
    /// needs).
    async fn reconcile_read<R: Relation>(
        &mut self,
        conn: &mut DbConn,
        existing: &HashSet<(i64, i64)>,
        desired: &HashSet<(i64, i64)>,
    ) -> Result<()> {
        let started = Instant::now();
        let (add, remove) = diff_sets(desired, existing);
        self.removed += cache::delete_pairs::<R>(conn, &remove).await?;
        self.took += started.elapsed();
        self.insert::<R>(conn, &add).await
    }

    /// [`Tally::remove_stale`], then the insertion of what is missing.
    async fn reconcile<R: Relation>(
        &mut self,
        conn: &mut DbConn,
        owners: &[i64],
        desired: &HashSet<(i64, i64)>,
    ) -> Result<()> {
        let missing = self.remove_stale::<R>(conn, owners, desired).await?;
        self.insert::<R>(conn, &missing).await
    }
}

/// The relations of a refresh, in report order.
#[derive(Debug, Default)]
struct Tallies {
    person_keys: Tally,
    slice_nodes: Tally,
    slice_persons: Tally,
    site_persons: Tally,
    person_roles: Tally,
}

/// Reconciles the memberships of the peer's cached objects, round by round
/// over the spooled persons (their keys, sites and roles), then over the
/// slices (their nodes and persons): each round loads the memberships its
/// owners have, removes the stale ones and adds the missing ones. When an
/// id appears twice in the dump, its first occurrence counts.
async fn sync_relations(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    rounds: &Rounds,
    ids: &IdMaps,
    report: &mut ReportBuilder,
) -> Result<()> {
    let started = Instant::now();
    let mut tallies = Tallies::default();
    sync_person_memberships(conn, spool, rounds.chunk, ids, &mut tallies, report).await?;
    sync_slice_memberships(conn, peer_id, spool, rounds, ids, &mut tallies, report).await?;
    let took = started.elapsed();
    let Tallies {
        person_keys,
        slice_nodes,
        slice_persons,
        site_persons,
        person_roles,
    } = tallies;
    let relations = [
        (PersonKeys::NAME, person_keys),
        (SliceNodes::NAME, slice_nodes),
        (SlicePersons::NAME, slice_persons),
        (PersonSites::NAME, site_persons),
        (PersonRoles::NAME, person_roles),
    ];
    // The rest: reading the spooled persons and slices again and building
    // the pairs they list.
    let reconciling: Duration = relations.iter().map(|(_, tally)| tally.took).sum();
    report.timer("pairs", took.saturating_sub(reconciling));
    for (name, tally) in relations {
        report.relation(name, tally.added, tally.removed, tally.took);
    }
    Ok(())
}

/// The keys, sites and roles of the spooled persons.
async fn sync_person_memberships(
    conn: &mut DbConn,
    spool: &mut Spool,
    chunk: usize,
    ids: &IdMaps,
    tallies: &mut Tallies,
    report: &mut ReportBuilder,
) -> Result<()> {
    let roles = match spool.persons.is_empty() {
        true => HashSet::new(),
        false => cache::known_roles(conn).await?,
    };
    // A key belongs to one person: the first person that lists it keeps it.
    // A key may move from a person of a later round to one of an earlier
    // round, so keys are added once every round has removed its stale ones.
    let mut owner_of_key: HashMap<i64, i64> = HashMap::new();
    let mut missing_keys = Vec::new();
    let mut seen = HashSet::new();
    for persons in spool.persons.chunks(chunk)? {
        let mut owners = Vec::new();
        let mut keys = HashSet::new();
        let mut sites = HashMap::new();
        let mut person_roles = HashSet::new();
        for p in persons? {
            let Some(person) = first_occurrence(&ids.persons, &mut seen, p.person_id) else {
                continue;
            };
            owners.push(person);
            for k in &p.key_ids {
                let Some(&key) = ids.keys.get(k) else {
                    if !spool.keys.contains(*k) {
                        report.warn(
                            "person_keys",
                            p.person_id,
                            &p.email,
                            format!("key {k} is not among the peer's keys"),
                        );
                    }
                    continue;
                };
                match owner_of_key.get(&key) {
                    Some(&first) if first != p.person_id => report.warn(
                        "person_keys",
                        p.person_id,
                        &p.email,
                        format!("key {k} already belongs to person {first}"),
                    ),
                    _ => {
                        owner_of_key.insert(key, p.person_id);
                        keys.insert((person, key));
                    }
                }
            }
            for s in &p.site_ids {
                if let Some(&site) = ids.sites.get(s) {
                    sites.insert((person, site), p.primary_site_id == Some(*s));
                } else if !spool.sites.contains(*s) {
                    report.warn(
                        "site_persons",
                        p.person_id,
                        &p.email,
                        format!("site {s} is not among the peer's sites"),
                    );
                }
            }
            for &role in &p.role_ids {
                if roles.contains(&role) {
                    person_roles.insert((person, i64::from(role)));
                } else {
                    report.warn(
                        "person_roles",
                        p.person_id,
                        &p.email,
                        format!("unknown role_id {role}"),
                    );
                }
            }
        }
        missing_keys.extend(
            tallies
                .person_keys
                .remove_stale::<PersonKeys>(conn, &owners, &keys)
                .await?,
        );
        sync_site_memberships(conn, &owners, &sites, &mut tallies.site_persons).await?;
        tallies
            .person_roles
            .reconcile::<PersonRoles>(conn, &owners, &person_roles)
            .await?;
    }
    tallies
        .person_keys
        .insert::<PersonKeys>(conn, &missing_keys)
        .await
}

/// The nodes and persons of the spooled slices.
async fn sync_slice_memberships(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    rounds: &Rounds,
    ids: &IdMaps,
    tallies: &mut Tallies,
    report: &mut ReportBuilder,
) -> Result<()> {
    let mut seen = HashSet::new();
    // Local persons that a local admin added to a cached slice are not the
    // peer's to remove: only the peer's own persons are reconciled. A
    // delta's id maps hold the persons it touches only: the members of its
    // slices are looked up.
    let mut peer_persons: HashSet<i64> = ids.persons.values().copied().collect();
    for slices in spool.slices.chunks(rounds.chunk)? {
        let mut owners = Vec::new();
        let mut nodes = HashSet::new();
        let mut persons = HashSet::new();
        for s in slices? {
            let Some(slice) = first_occurrence(&ids.slices, &mut seen, s.slice_id) else {
                continue;
            };
            owners.push(slice);
            // A member the peer sent but that was skipped (with its own
            // warning) or not claimed is left out; one it never sent is a
            // dangling reference.
            for n in &s.node_ids {
                match ids.nodes.get(n).or_else(|| ids.local_nodes.get(n)) {
                    Some(&node) => {
                        nodes.insert((slice, node));
                    }
                    None if !spool.nodes.contains(*n) && !spool.peer_nodes.contains(*n) => {
                        report.warn(
                            "slice_nodes",
                            s.slice_id,
                            &s.name,
                            format!("node {n} is not among the peer's nodes"),
                        );
                    }
                    None => {}
                }
            }
            for p in &s.person_ids {
                match ids.persons.get(p) {
                    Some(&person) => {
                        persons.insert((slice, person));
                    }
                    None if !spool.persons.contains(*p) && !spool.persons.is_gone(*p) => {
                        report.warn(
                            "slice_persons",
                            s.slice_id,
                            &s.name,
                            format!("person {p} is not among the peer's persons"),
                        );
                    }
                    None => {}
                }
            }
        }
        tallies
            .slice_nodes
            .reconcile::<SliceNodes>(conn, &owners, &nodes)
            .await?;
        let started = Instant::now();
        let existing = SlicePersons::for_owners(conn, &owners).await?;
        if rounds.delta {
            let members: Vec<i64> = existing.iter().map(|&(_, person)| person).collect();
            peer_persons.extend(cache::persons_of_peer(conn, peer_id, &members).await?);
        }
        let existing: HashSet<(i64, i64)> = existing
            .into_iter()
            .filter(|(_, person)| peer_persons.contains(person))
            .collect();
        tallies.slice_persons.took += started.elapsed();
        tallies
            .slice_persons
            .reconcile_read::<SlicePersons>(conn, &existing, &persons)
            .await?;
    }

    Ok(())
}

/// The local id of an owner the first time the dump lists it; `None` when
/// it is not cached (skipped) or was listed before (only the first
/// occurrence of an id counts).
fn first_occurrence(
    local_ids: &HashMap<i64, i64>,
    seen: &mut HashSet<i64>,
    peer_object_id: i64,
) -> Option<i64> {
    let local = *local_ids.get(&peer_object_id)?;
    seen.insert(peer_object_id).then_some(local)
}

/// Site memberships of one round of persons: a change of the primary flag
/// is a removal and an addition.
async fn sync_site_memberships(
    conn: &mut DbConn,
    owners: &[i64],
    desired: &HashMap<(i64, i64), bool>,
    tally: &mut Tally,
) -> Result<()> {
    let started = Instant::now();
    let existing: HashMap<(i64, i64), bool> = cache::person_sites_of(conn, owners)
        .await?
        .into_iter()
        .map(|(person, site, primary)| ((person, site), primary))
        .collect();
    let (add, remove) = diff_memberships(desired, &existing);
    tally.removed += cache::delete_pairs::<PersonSites>(conn, &remove).await?;
    tally.added += cache::insert_person_sites(conn, &add).await?;
    tally.took += started.elapsed();
    Ok(())
}
