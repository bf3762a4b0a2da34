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
use crate::registry::validate;
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
    /// For a delta, the ids loaded.
    touched: Option<Touched>,
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
        if !spool.is_delta() {
            return Ok(CachedIds {
                sites: CachedSites::ids(conn, peer_id).await?,
                keys: CachedKeys::ids(conn, peer_id).await?,
                persons: CachedPersons::ids(conn, peer_id).await?,
                nodes: CachedNodes::ids(conn, peer_id).await?,
                slices: CachedSlices::ids(conn, peer_id).await?,
                touched: None,
            });
        }
        let touched = Touched::of(spool)?;
        Ok(CachedIds {
            sites: CachedSites::ids_among(conn, peer_id, &touched.sites).await?,
            keys: CachedKeys::ids_among(conn, peer_id, &touched.keys).await?,
            persons: CachedPersons::ids_among(conn, peer_id, &touched.persons).await?,
            nodes: CachedNodes::ids_among(conn, peer_id, &touched.nodes).await?,
            slices: CachedSlices::ids_among(conn, peer_id, &touched.slices).await?,
            touched: Some(touched),
        })
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

    ids.sites = sync_class::<CachedSites, _>(
        conn,
        peer_id,
        &mut spool.sites,
        (cached.sites, scope(|t| &t.sites)),
        &mut rounds,
        report,
        prepare_site,
    )
    .await?;

    let key_types = known_values_for(conn, Enumeration::KeyTypes, &spool.keys).await?;
    ids.keys = sync_class::<CachedKeys, _>(
        conn,
        peer_id,
        &mut spool.keys,
        (cached.keys, scope(|t| &t.keys)),
        &mut rounds,
        report,
        |key, report| prepare_key(key, &key_types, report),
    )
    .await?;

    ids.persons = sync_class::<CachedPersons, _>(
        conn,
        peer_id,
        &mut spool.persons,
        (cached.persons, scope(|t| &t.persons)),
        &mut rounds,
        report,
        prepare_person,
    )
    .await?;

    let known = NodeEnumerations {
        boot_states: known_values_for(conn, Enumeration::BootStates, &spool.nodes).await?,
        node_types: known_values_for(conn, Enumeration::NodeTypes, &spool.nodes).await?,
    };
    ids.nodes = sync_class::<CachedNodes, _>(
        conn,
        peer_id,
        &mut spool.nodes,
        (cached.nodes, scope(|t| &t.nodes)),
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
    ids.slices = sync_class::<CachedSlices, _>(
        conn,
        peer_id,
        &mut spool.slices,
        (cached.slices, scope(|t| &t.slices)),
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

/// Writes one class from its spool, given what was cached of it when the
/// refresh began (`cached_ids`: the peer's ids → local ids, of the
/// ids in `scope` only for a delta): deletes the
/// cached objects the peer no longer has, then per chunk validates (`prepare` turns an object into
/// its cached fields, or skips it with a warning), skips objects whose
/// natural key is taken, diffs against the cache and writes. Returns the
/// peer's ids → local ids of the class after the write.
async fn sync_class<K: CachedKind, T: PeerObject>(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut ClassSpool<T>,
    (cached_ids, scope): (HashMap<i64, i64>, Option<&[i64]>),
    rounds: &mut Rounds,
    report: &mut ReportBuilder,
    mut prepare: impl FnMut(T, &mut ReportBuilder) -> Option<(i64, K::Fields)> + Send,
) -> Result<HashMap<i64, i64>> {
    let started = Instant::now();
    let validated_before = rounds.validating;
    let now = now();
    let gone = spool.doomed(&cached_ids, rounds.delta);
    let mut deleted = K::delete(conn, peer_id, &gone).await?;
    let mut removed: HashSet<i64> = gone.into_iter().collect();

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
            .filter(|id| cached_ids.contains_key(id))
            .collect();
        let cached = K::load(conn, peer_id, &chunk_ids).await?;

        let validation = Instant::now();
        let candidates: Vec<(i64, K::Fields)> = chunk
            .into_iter()
            .filter_map(|object| prepare(object, report))
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
        deleted += K::delete(conn, peer_id, &stale).await?;
        removed.extend(stale);
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
        deleted: deleted as i64,
        // Every warning of the class, from validation and from the checks
        // of natural keys, is one skipped object.
        skipped: report.warning_count(K::CLASS) as i64,
    });
    let validated_here = rounds.validating - validated_before;
    report.timer(K::CLASS, started.elapsed().saturating_sub(validated_here));
    Ok(ids)
}

/// The uniqueness checks of one class, across its chunks.
#[derive(Debug, Default)]
struct NaturalKeys {
    /// Peer's ids accepted so far.
    accepted: HashSet<i64>,
    /// Natural keys accepted so far.
    claimed: HashSet<String>,
}

impl NaturalKeys {
    /// Drops, with a warning, candidates whose id appeared before, whose
    /// natural key another authority uses here, an earlier candidate
    /// claimed, or another of the peer's cached objects holds.
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
            } else if holder.is_some_and(|(_, holder_id)| *holder_id != Some(id)) {
                Some(format!(
                    "{field} {key:?} is held by another object cached from this peer"
                ))
            } else {
                None
            };
            match problem {
                Some(reason) => report.warn(K::CLASS, id, key, reason),
                None => {
                    self.accepted.insert(id);
                    if !key.is_empty() {
                        self.claimed.insert(key.to_owned());
                    }
                    accepted.push((id, fields));
                }
            }
        }
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

fn prepare_site(s: pb::ExportedSite, report: &mut ReportBuilder) -> Option<(i64, SiteFields)> {
    let class = CachedSites::CLASS;
    let login_base = checked(
        report,
        class,
        s.site_id,
        &s.login_base,
        validate::login_base(&s.login_base),
    )?;
    let coordinates = s
        .latitude
        .map(validate::latitude)
        .transpose()
        .and_then(|lat| Ok((lat, s.longitude.map(validate::longitude).transpose()?)));
    let (latitude, longitude) = checked(report, class, s.site_id, &login_base, coordinates)?;
    Some((
        s.site_id,
        SiteFields {
            login_base,
            name: s.name,
            abbreviated_name: s.abbreviated_name,
            enabled: s.enabled,
            is_public: s.is_public,
            max_slices: s.max_slices,
            max_slivers: s.max_slivers,
            latitude,
            longitude,
            url: s.url,
            ext_consortium_id: s.ext_consortium_id,
        },
    ))
}

fn prepare_key(
    k: pb::ExportedKey,
    key_types: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Option<(i64, KeyFields)> {
    let class = CachedKeys::CLASS;
    if !key_types.contains(&k.key_type) {
        report.warn(
            class,
            k.key_id,
            &key_label(&k.key),
            format!("unknown key_type {:?}", k.key_type),
        );
        return None;
    }
    let key = checked(
        report,
        class,
        k.key_id,
        &key_label(&k.key),
        validate::ssh_key("key", &k.key_type, &k.key),
    )?;
    Some((
        k.key_id,
        KeyFields {
            key_type: k.key_type,
            key,
            is_blacklisted: k.is_blacklisted,
        },
    ))
}

/// A short name for a key in warnings: its comment, or its start.
fn key_label(key: &str) -> String {
    match key.split_whitespace().nth(2) {
        Some(comment) => comment.to_owned(),
        None => key.chars().take(24).collect(),
    }
}

fn prepare_person(
    p: pb::ExportedPerson,
    report: &mut ReportBuilder,
) -> Option<(i64, PersonFields)> {
    let email = checked(
        report,
        CachedPersons::CLASS,
        p.person_id,
        &p.email,
        validate::email(&p.email),
    )?;
    Some((
        p.person_id,
        PersonFields {
            email,
            first_name: p.first_name,
            last_name: p.last_name,
            title: p.title,
            phone: p.phone,
            url: p.url,
            bio: p.bio,
            enabled: p.enabled,
        },
    ))
}

/// The enumerations a node's fields must belong to.
struct NodeEnumerations {
    boot_states: HashSet<String>,
    node_types: HashSet<String>,
}

fn prepare_node(
    n: pb::ExportedNode,
    sites: &HashMap<i64, i64>,
    known: &NodeEnumerations,
    report: &mut ReportBuilder,
) -> Option<(i64, NodeFields)> {
    let class = CachedNodes::CLASS;
    let hostname = checked(
        report,
        class,
        n.node_id,
        &n.hostname,
        validate::hostname(&n.hostname),
    )?;
    let problem = if !sites.contains_key(&n.site_id) {
        Some(format!(
            "its site {} is not among the peer's synced sites",
            n.site_id
        ))
    } else if !known.boot_states.contains(&n.boot_state) {
        Some(format!("unknown boot_state {:?}", n.boot_state))
    } else if !known.node_types.contains(&n.node_type) {
        Some(format!("unknown node_type {:?}", n.node_type))
    } else {
        None
    };
    if let Some(reason) = problem {
        report.warn(class, n.node_id, &hostname, reason);
        return None;
    }
    Some((
        n.node_id,
        NodeFields {
            hostname,
            site_id: sites[&n.site_id],
            node_type: n.node_type,
            boot_state: n.boot_state,
            run_level: n.run_level,
            model: n.model,
            version: n.version,
            ssh_rsa_key: n.ssh_rsa_key,
            verified: n.verified,
        },
    ))
}

/// `PeerNodes`: the peer's ids of our own nodes → our ids, keeping only
/// ids that really are local nodes here.
async fn map_local_nodes(
    conn: &mut DbConn,
    spool: &mut ClassSpool<pb::PeerNode>,
    report: &mut ReportBuilder,
) -> Result<HashMap<i64, i64>> {
    let mut claims = Vec::with_capacity(spool.len());
    spool.for_each(|n| claims.push((n.node_id, n.peer_node_id)))?;
    let claimed: Vec<i64> = claims.iter().map(|&(_, local)| local).collect();
    let local = cache::local_node_ids(conn, &claimed).await?;
    let mut out = HashMap::with_capacity(claims.len());
    for (node_id, peer_node_id) in claims {
        if local.contains(&peer_node_id) {
            out.insert(node_id, peer_node_id);
        } else {
            report.warn(
                "peer_nodes",
                node_id,
                "",
                format!("node {peer_node_id} is not a local node here"),
            );
        }
    }
    Ok(out)
}

fn prepare_slice(
    s: pb::ExportedSlice,
    ids: &IdMaps,
    login_bases: &HashMap<i64, String>,
    instantiations: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Option<(i64, SliceFields)> {
    let class = CachedSlices::CLASS;
    let Some(&site_id) = ids.sites.get(&s.site_id) else {
        report.warn(
            class,
            s.slice_id,
            &s.name,
            format!(
                "its site {} is not among the peer's synced sites",
                s.site_id
            ),
        );
        return None;
    };
    if !instantiations.contains(&s.instantiation) {
        report.warn(
            class,
            s.slice_id,
            &s.name,
            format!("unknown instantiation {:?}", s.instantiation),
        );
        return None;
    }
    let (name, prefix) = checked(
        report,
        class,
        s.slice_id,
        &s.name,
        validate::slice_name(&s.name),
    )?;
    let login_base = login_bases.get(&s.site_id).map_or("", String::as_str);
    if prefix != login_base {
        report.warn(
            class,
            s.slice_id,
            &s.name,
            format!("name must start with its site's login_base {login_base:?}"),
        );
        return None;
    }
    Some((
        s.slice_id,
        SliceFields {
            site_id,
            name,
            instantiation: s.instantiation,
            url: s.url,
            description: s.description,
            max_nodes: s.max_nodes,
            creator_person_id: s
                .creator_person_id
                .and_then(|p| ids.persons.get(&p).copied()),
            created: s.created.map(|t| t.seconds).unwrap_or_default(),
            expires: s.expires.map(|t| t.seconds).unwrap_or_default(),
        },
    ))
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
    sync_slice_memberships(conn, peer_id, spool, rounds, ids, &mut tallies).await?;
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
            // Nodes the peer did not expose (whitelisted, or a third
            // registry's) are dropped here.
            nodes.extend(
                s.node_ids
                    .iter()
                    .filter_map(|n| ids.nodes.get(n).or_else(|| ids.local_nodes.get(n)))
                    .map(|&node| (slice, node)),
            );
            persons.extend(
                s.person_ids
                    .iter()
                    .filter_map(|p| ids.persons.get(p))
                    .map(|&person| (slice, person)),
            );
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
