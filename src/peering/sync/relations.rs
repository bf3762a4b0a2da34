//! The memberships of a refresh (person-keys, slice-nodes, slice-persons,
//! site-persons, person-roles), reconciled in rounds over the spooled
//! persons and slices: each round loads the pairs its owners have, removes
//! the stale ones and adds the missing ones.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::time::{Duration, Instant};

use super::IdMaps;
use super::engine::{Referring, Rounds};
use crate::class::{Class, PerRelation};
use crate::error::Result;
use crate::peering::diff::{diff_memberships, diff_sets};
use crate::peering::report::ReportBuilder;
use crate::peering::spool::{Spool, SpooledClass};
use crate::store::DbConn;
use crate::store::cache::{
    self, PairTable, PersonKeys, PersonRoles, PersonSites, RelationTable, SliceNodes, SlicePersons,
};

/// What one relation did over the rounds of a refresh.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) added: usize,
    pub(super) removed: usize,
    pub(super) took: Duration,
}

/// What each relation did over the rounds of a refresh; each operation
/// counts in the tally of its table's relation.
#[derive(Debug, Default)]
pub(super) struct Tallies(PerRelation<Tally>);

impl Tallies {
    /// Removes the pairs of `owners` that `desired` no longer lists;
    /// returns the missing pairs, for the caller to insert.
    pub(super) async fn remove_stale<R: RelationTable>(
        &mut self,
        conn: &mut DbConn,
        owners: &[i64],
        desired: &HashSet<(i64, i64)>,
    ) -> Result<Vec<(i64, i64)>> {
        let started = Instant::now();
        let existing: HashSet<(i64, i64)> =
            R::for_owners(conn, owners).await?.into_iter().collect();
        let (add, remove) = diff_sets(desired, &existing);
        let tally = &mut self.0[R::RELATION];
        tally.removed += cache::delete_pairs::<R>(conn, &remove).await?;
        tally.took += started.elapsed();
        Ok(add)
    }

    /// Inserts pairs.
    pub(super) async fn insert<R: RelationTable>(
        &mut self,
        conn: &mut DbConn,
        pairs: &[(i64, i64)],
    ) -> Result<()> {
        let started = Instant::now();
        let tally = &mut self.0[R::RELATION];
        tally.added += R::insert(conn, pairs).await?;
        tally.took += started.elapsed();
        Ok(())
    }

    /// Like [`Tallies::remove_stale`] then the insertion of what is
    /// missing, for pairs the caller already read (`existing`, filtered as
    /// it needs).
    pub(super) async fn reconcile_read<R: RelationTable>(
        &mut self,
        conn: &mut DbConn,
        existing: &HashSet<(i64, i64)>,
        desired: &HashSet<(i64, i64)>,
    ) -> Result<()> {
        let started = Instant::now();
        let (add, remove) = diff_sets(desired, existing);
        let tally = &mut self.0[R::RELATION];
        tally.removed += cache::delete_pairs::<R>(conn, &remove).await?;
        tally.took += started.elapsed();
        self.insert::<R>(conn, &add).await
    }

    /// [`Tallies::remove_stale`], then the insertion of what is missing.
    pub(super) async fn reconcile<R: RelationTable>(
        &mut self,
        conn: &mut DbConn,
        owners: &[i64],
        desired: &HashSet<(i64, i64)>,
    ) -> Result<()> {
        let missing = self.remove_stale::<R>(conn, owners, desired).await?;
        self.insert::<R>(conn, &missing).await
    }
}

/// Reconciles the memberships of the peer's cached objects, round by round
/// over the spooled persons (their keys, sites and roles), then over the
/// slices (their nodes and persons): each round loads the memberships its
/// owners have, removes the stale ones and adds the missing ones. When an
/// id appears twice in the dump, its first occurrence counts.
pub(super) async fn sync_relations(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    rounds: &Rounds,
    ids: &IdMaps,
    report: &mut ReportBuilder,
) -> Result<()> {
    let started = Instant::now();
    let mut tallies = Tallies::default();
    // A class whose memberships are all as cached is not read again.
    if !rounds.settled.classes[Class::Persons] {
        sync_person_memberships(conn, spool, rounds, ids, &mut tallies, report).await?;
    }
    if !rounds.settled.classes[Class::Slices] {
        sync_slice_memberships(conn, peer_id, spool, rounds, ids, &mut tallies, report).await?;
    }
    let took = started.elapsed();
    // The rest: reading the spooled persons and slices again and building
    // the pairs they list.
    let reconciling: Duration = tallies.0.values().map(|tally| tally.took).sum();
    report.timer("pairs", took.saturating_sub(reconciling));
    for (relation, tally) in tallies.0.iter() {
        report.relation(relation.name(), tally.added, tally.removed, tally.took);
    }
    Ok(())
}

/// The keys, sites and roles of the spooled persons.
pub(super) async fn sync_person_memberships(
    conn: &mut DbConn,
    spool: &mut Spool,
    rounds: &Rounds,
    ids: &IdMaps,
    tallies: &mut Tallies,
    report: &mut ReportBuilder,
) -> Result<()> {
    let roles = &rounds.settled.roles;
    // A key belongs to one person: the first person that lists it keeps it.
    // A key may move from a person of a later round to one of an earlier
    // round, so keys are added once every round has removed its stale ones.
    let mut owner_of_key: HashMap<i64, i64> = HashMap::new();
    let mut missing_keys = Vec::new();
    let mut seen = HashSet::new();
    let unchanged = &rounds.unchanged;
    for persons in spool.persons.chunks(rounds.chunk)? {
        let mut owners = Vec::new();
        let mut keys = HashSet::new();
        let mut sites = HashMap::new();
        let mut person_roles = HashSet::new();
        for p in persons? {
            let Some(person) =
                first_occurrence(&ids.classes[Class::Persons], &mut seen, p.person_id)
            else {
                continue;
            };
            // Its memberships stay as cached when it, its keys (still its
            // own) and its sites are unchanged and its roles known; its
            // keys still count as taken.
            let settled = unchanged[Class::Persons].contains(&p.person_id)
                && p.members_unchanged(unchanged, roles)
                && p.key_ids.iter().all(|k| {
                    ids.classes[Class::Keys]
                        .get(k)
                        .and_then(|key| owner_of_key.get(key))
                        .is_none_or(|&first| first == p.person_id)
                });
            if settled {
                for k in &p.key_ids {
                    if let Some(&key) = ids.classes[Class::Keys].get(k) {
                        owner_of_key.insert(key, p.person_id);
                    }
                }
                continue;
            }
            owners.push(person);
            for k in &p.key_ids {
                let Some(&key) = ids.classes[Class::Keys].get(k) else {
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
                if let Some(&site) = ids.classes[Class::Sites].get(s) {
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
                .remove_stale::<PersonKeys>(conn, &owners, &keys)
                .await?,
        );
        sync_site_memberships(conn, &owners, &sites, tallies).await?;
        tallies
            .reconcile::<PersonRoles>(conn, &owners, &person_roles)
            .await?;
    }
    tallies.insert::<PersonKeys>(conn, &missing_keys).await
}

/// The nodes and persons of the spooled slices.
pub(super) async fn sync_slice_memberships(
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
    let mut peer_persons: HashSet<i64> = ids.classes[Class::Persons].values().copied().collect();
    for slices in spool.slices.chunks(rounds.chunk)? {
        let mut owners = Vec::new();
        let mut nodes = HashSet::new();
        let mut persons = HashSet::new();
        for s in slices? {
            let Some(slice) = first_occurrence(&ids.classes[Class::Slices], &mut seen, s.slice_id)
            else {
                continue;
            };
            // Its memberships stay as cached when it and all its members
            // are unchanged (a node of this registry's is not a peer's
            // node, so a slice on one is always reconciled).
            if rounds.unchanged[Class::Slices].contains(&s.slice_id)
                && s.members_unchanged(&rounds.unchanged, &rounds.settled.roles)
            {
                continue;
            }
            owners.push(slice);
            // A member the peer sent but that was skipped (with its own
            // warning) or not claimed is left out; one it never sent is a
            // dangling reference.
            for n in &s.node_ids {
                match ids.classes[Class::Nodes]
                    .get(n)
                    .or_else(|| ids.local_nodes.get(n))
                {
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
                match ids.classes[Class::Persons].get(p) {
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
        tallies.0[SlicePersons::RELATION].took += started.elapsed();
        tallies
            .reconcile_read::<SlicePersons>(conn, &existing, &persons)
            .await?;
    }

    Ok(())
}

/// The local id of an owner the first time the dump lists it; `None` when
/// it is not cached (skipped) or was listed before (only the first
/// occurrence of an id counts).
pub(super) fn first_occurrence(
    local_ids: &HashMap<i64, i64>,
    seen: &mut HashSet<i64>,
    peer_object_id: i64,
) -> Option<i64> {
    let local = *local_ids.get(&peer_object_id)?;
    seen.insert(peer_object_id).then_some(local)
}

/// Site memberships of one round of persons: a change of the primary flag
/// is a removal and an addition.
pub(super) async fn sync_site_memberships(
    conn: &mut DbConn,
    owners: &[i64],
    desired: &HashMap<(i64, i64), bool>,
    tallies: &mut Tallies,
) -> Result<()> {
    let started = Instant::now();
    let tally = &mut tallies.0[PersonSites::RELATION];
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
