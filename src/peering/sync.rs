//! Applying a peer's dump to the cache, inside the refresh's transaction.
//!
//! Classes go in the order sites, keys, persons, nodes, slices; each is
//! translated (the peer's relation ids to local ids), validated object by
//! object (a bad object is skipped with a warning, the rest goes on),
//! diffed against the cache and written with multi-row statements. Then the
//! memberships: person-keys, slice-nodes, slice-persons, site-persons,
//! person-roles, each as add-missing / remove-stale. Everything is written
//! in this one pass, so memberships of objects created by this refresh are
//! complete at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::diff::{Plan, diff, diff_memberships, diff_sets};
use super::fetch::PeerDump;
use super::report::ReportBuilder;
use crate::error::Result;
use crate::proto::v1 as pb;
use crate::registry::validate;
use crate::store::cache::{
    self, CachedKeys, CachedKind, CachedNodes, CachedPersons, CachedSites, CachedSlices,
    Enumeration, KeyFields, NodeFields, PersonFields, PersonKeys, PersonRoles, PersonSites,
    Relation, SiteFields, SliceFields, SliceNodes, SlicePersons,
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

/// Applies a cleaned dump of peer `peer_id`; the caller holds the
/// transaction.
pub async fn apply(
    conn: &mut DbConn,
    peer_id: i64,
    dump: &PeerDump,
    report: &mut ReportBuilder,
) -> Result<()> {
    let mut ids = IdMaps::default();
    // Time spent translating and validating the peer's objects, all
    // classes together (the class timers hold the database work).
    let mut validating = Duration::ZERO;

    let sites = timed(&mut validating, || prepare_sites(dump, report));
    ids.sites = sync_class::<CachedSites>(conn, peer_id, sites, dump.sites.len(), report).await?;

    let key_types = cache::known_values(conn, Enumeration::KeyTypes).await?;
    let keys = timed(&mut validating, || prepare_keys(dump, &key_types, report));
    ids.keys = sync_class::<CachedKeys>(conn, peer_id, keys, dump.keys.len(), report).await?;

    let persons = timed(&mut validating, || prepare_persons(dump, report));
    ids.persons =
        sync_class::<CachedPersons>(conn, peer_id, persons, dump.persons.len(), report).await?;

    let boot_states = cache::known_values(conn, Enumeration::BootStates).await?;
    let node_types = cache::known_values(conn, Enumeration::NodeTypes).await?;
    let nodes = timed(&mut validating, || {
        prepare_nodes(dump, &ids.sites, &boot_states, &node_types, report)
    });
    ids.nodes = sync_class::<CachedNodes>(conn, peer_id, nodes, dump.nodes.len(), report).await?;

    let started = Instant::now();
    ids.local_nodes = map_local_nodes(conn, dump, report).await?;
    report.timer("local_nodes", started.elapsed());

    let instantiations = cache::known_values(conn, Enumeration::Instantiations).await?;
    let slices = timed(&mut validating, || {
        prepare_slices(dump, &ids, &instantiations, report)
    });
    report.timer("validate", validating);
    ids.slices =
        sync_class::<CachedSlices>(conn, peer_id, slices, dump.slices.len(), report).await?;

    sync_relations(conn, peer_id, dump, &ids, report).await
}

/// Runs `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    *total += started.elapsed();
    value
}

/// Writes one class: skips objects whose natural key is taken, diffs the
/// rest against the cache, deletes, upserts; returns the peer's ids →
/// local ids of the class after the write.
async fn sync_class<K: CachedKind>(
    conn: &mut DbConn,
    peer_id: i64,
    candidates: Vec<(i64, K::Fields)>,
    received: usize,
    report: &mut ReportBuilder,
) -> Result<HashMap<i64, i64>> {
    let started = Instant::now();
    let cached = K::load(conn, peer_id).await?;
    let accepted = check_natural_keys::<K>(conn, peer_id, candidates, &cached, report).await?;
    let Plan {
        upserts,
        deletes,
        added,
        updated,
    } = diff(accepted, &cached);
    let deleted = K::delete(conn, peer_id, &deletes).await?;
    K::upsert(conn, peer_id, &upserts, now()).await?;
    let ids = if upserts.is_empty() {
        let gone: HashSet<i64> = deletes.into_iter().collect();
        cached
            .into_iter()
            .filter(|(peer_object_id, _)| !gone.contains(peer_object_id))
            .map(|(peer_object_id, (id, _))| (peer_object_id, id))
            .collect()
    } else {
        K::ids(conn, peer_id).await?
    };
    report.class(pb::ClassReport {
        class: K::CLASS.to_owned(),
        received: received as i64,
        added: added as i64,
        updated: updated as i64,
        deleted: deleted as i64,
        // Every warning of the class, from validation and from the checks
        // of natural keys, is one skipped object.
        skipped: report.warning_count(K::CLASS) as i64,
    });
    report.timer(K::CLASS, started.elapsed());
    Ok(ids)
}

/// Drops, with a warning, candidates whose id appears twice in the dump or
/// whose natural key another authority already uses, another of the
/// peer's cached objects holds, or an earlier candidate claimed.
async fn check_natural_keys<K: CachedKind>(
    conn: &mut DbConn,
    peer_id: i64,
    candidates: Vec<(i64, K::Fields)>,
    cached: &HashMap<i64, (i64, K::Fields)>,
    report: &mut ReportBuilder,
) -> Result<Vec<(i64, K::Fields)>> {
    // A key the object's own cached row already holds is unique here (the
    // database enforces it), so only new and changed keys are looked up.
    let keys: Vec<String> = candidates
        .iter()
        .filter_map(|(id, f)| {
            let key = K::natural_key(f)?;
            let own = cached.get(id).and_then(|(_, c)| K::natural_key(c));
            (own != Some(key)).then(|| key.to_owned())
        })
        .collect();
    let taken = K::taken_by_others(conn, peer_id, &keys).await?;
    let present: HashSet<i64> = candidates.iter().map(|(id, _)| *id).collect();
    let held: HashMap<&str, i64> = cached
        .iter()
        .filter_map(|(id, (_, f))| K::natural_key(f).map(|k| (k, *id)))
        .collect();
    let mut seen_ids = HashSet::new();
    let mut claimed = HashSet::new();
    let mut accepted = Vec::with_capacity(candidates.len());
    for (id, fields) in candidates {
        let key = K::natural_key(&fields).unwrap_or_default();
        let field = K::NATURAL_KEY;
        let problem = if !seen_ids.insert(id) {
            Some("its id appears twice in the peer's data".to_owned())
        } else if taken.contains(key) {
            Some(format!(
                "{field} {key:?} is already used here by another authority"
            ))
        } else if held
            .get(key)
            .is_some_and(|holder| *holder != id && present.contains(holder))
        {
            Some(format!(
                "{field} {key:?} is held by another object cached from this peer"
            ))
        } else if !key.is_empty() && !claimed.insert(key.to_owned()) {
            Some(format!("{field} {key:?} appears twice in the peer's data"))
        } else {
            None
        };
        match problem {
            Some(reason) => report.warn(K::CLASS, id, key, reason),
            None => accepted.push((id, fields)),
        }
    }
    Ok(accepted)
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

fn prepare_sites(dump: &PeerDump, report: &mut ReportBuilder) -> Vec<(i64, SiteFields)> {
    let mut out = Vec::with_capacity(dump.sites.len());
    for s in &dump.sites {
        let class = CachedSites::CLASS;
        let Some(login_base) = checked(
            report,
            class,
            s.site_id,
            &s.login_base,
            validate::login_base(&s.login_base),
        ) else {
            continue;
        };
        let coordinates = s
            .latitude
            .map(validate::latitude)
            .transpose()
            .and_then(|lat| Ok((lat, s.longitude.map(validate::longitude).transpose()?)));
        let Some((latitude, longitude)) =
            checked(report, class, s.site_id, &login_base, coordinates)
        else {
            continue;
        };
        out.push((
            s.site_id,
            SiteFields {
                login_base,
                name: s.name.clone(),
                abbreviated_name: s.abbreviated_name.clone(),
                enabled: s.enabled,
                is_public: s.is_public,
                max_slices: s.max_slices,
                max_slivers: s.max_slivers,
                latitude,
                longitude,
                url: s.url.clone(),
                ext_consortium_id: s.ext_consortium_id,
            },
        ));
    }
    out
}

fn prepare_keys(
    dump: &PeerDump,
    key_types: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Vec<(i64, KeyFields)> {
    let mut out = Vec::with_capacity(dump.keys.len());
    for k in &dump.keys {
        let class = CachedKeys::CLASS;
        let label = key_label(&k.key);
        if !key_types.contains(&k.key_type) {
            report.warn(
                class,
                k.key_id,
                &label,
                format!("unknown key_type {:?}", k.key_type),
            );
            continue;
        }
        let Some(key) = checked(
            report,
            class,
            k.key_id,
            &label,
            validate::ssh_key("key", &k.key_type, &k.key),
        ) else {
            continue;
        };
        out.push((
            k.key_id,
            KeyFields {
                key_type: k.key_type.clone(),
                key,
                is_blacklisted: k.is_blacklisted,
            },
        ));
    }
    out
}

/// A short name for a key in warnings: its comment, or its start.
fn key_label(key: &str) -> String {
    match key.split_whitespace().nth(2) {
        Some(comment) => comment.to_owned(),
        None => key.chars().take(24).collect(),
    }
}

fn prepare_persons(dump: &PeerDump, report: &mut ReportBuilder) -> Vec<(i64, PersonFields)> {
    let mut out = Vec::with_capacity(dump.persons.len());
    for p in &dump.persons {
        let Some(email) = checked(
            report,
            CachedPersons::CLASS,
            p.person_id,
            &p.email,
            validate::email(&p.email),
        ) else {
            continue;
        };
        out.push((
            p.person_id,
            PersonFields {
                email,
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                title: p.title.clone(),
                phone: p.phone.clone(),
                url: p.url.clone(),
                bio: p.bio.clone(),
                enabled: p.enabled,
            },
        ));
    }
    out
}

fn prepare_nodes(
    dump: &PeerDump,
    sites: &HashMap<i64, i64>,
    boot_states: &HashSet<String>,
    node_types: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Vec<(i64, NodeFields)> {
    let mut out = Vec::with_capacity(dump.nodes.len());
    for n in &dump.nodes {
        let class = CachedNodes::CLASS;
        let Some(hostname) = checked(
            report,
            class,
            n.node_id,
            &n.hostname,
            validate::hostname(&n.hostname),
        ) else {
            continue;
        };
        let Some(&site_id) = sites.get(&n.site_id) else {
            report.warn(
                class,
                n.node_id,
                &hostname,
                format!(
                    "its site {} is not among the peer's synced sites",
                    n.site_id
                ),
            );
            continue;
        };
        if !boot_states.contains(&n.boot_state) {
            report.warn(
                class,
                n.node_id,
                &hostname,
                format!("unknown boot_state {:?}", n.boot_state),
            );
            continue;
        }
        if !node_types.contains(&n.node_type) {
            report.warn(
                class,
                n.node_id,
                &hostname,
                format!("unknown node_type {:?}", n.node_type),
            );
            continue;
        }
        out.push((
            n.node_id,
            NodeFields {
                hostname,
                site_id,
                node_type: n.node_type.clone(),
                boot_state: n.boot_state.clone(),
                run_level: n.run_level.clone(),
                model: n.model.clone(),
                version: n.version.clone(),
                ssh_rsa_key: n.ssh_rsa_key.clone(),
                verified: n.verified,
            },
        ));
    }
    out
}

/// `PeerNodes`: the peer's ids of our own nodes → our ids, keeping only
/// ids that really are local nodes here.
async fn map_local_nodes(
    conn: &mut DbConn,
    dump: &PeerDump,
    report: &mut ReportBuilder,
) -> Result<HashMap<i64, i64>> {
    let claimed: Vec<i64> = dump.peer_nodes.iter().map(|n| n.peer_node_id).collect();
    let local = cache::local_node_ids(conn, &claimed).await?;
    let mut out = HashMap::with_capacity(dump.peer_nodes.len());
    for n in &dump.peer_nodes {
        if local.contains(&n.peer_node_id) {
            out.insert(n.node_id, n.peer_node_id);
        } else {
            report.warn(
                "peer_nodes",
                n.node_id,
                "",
                format!("node {} is not a local node here", n.peer_node_id),
            );
        }
    }
    Ok(out)
}

fn prepare_slices(
    dump: &PeerDump,
    ids: &IdMaps,
    instantiations: &HashSet<String>,
    report: &mut ReportBuilder,
) -> Vec<(i64, SliceFields)> {
    let login_bases: HashMap<i64, &str> = dump
        .sites
        .iter()
        .map(|s| (s.site_id, s.login_base.as_str()))
        .collect();
    let mut out = Vec::with_capacity(dump.slices.len());
    for s in &dump.slices {
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
            continue;
        };
        if !instantiations.contains(&s.instantiation) {
            report.warn(
                class,
                s.slice_id,
                &s.name,
                format!("unknown instantiation {:?}", s.instantiation),
            );
            continue;
        }
        let Some((name, prefix)) = checked(
            report,
            class,
            s.slice_id,
            &s.name,
            validate::slice_name(&s.name),
        ) else {
            continue;
        };
        let login_base = login_bases.get(&s.site_id).copied().unwrap_or_default();
        if prefix != login_base {
            report.warn(
                class,
                s.slice_id,
                &s.name,
                format!("name must start with its site's login_base {login_base:?}"),
            );
            continue;
        }
        out.push((
            s.slice_id,
            SliceFields {
                site_id,
                name,
                instantiation: s.instantiation.clone(),
                url: s.url.clone(),
                description: s.description.clone(),
                max_nodes: s.max_nodes,
                creator_person_id: s
                    .creator_person_id
                    .and_then(|p| ids.persons.get(&p).copied()),
                created: s.created.as_ref().map(|t| t.seconds).unwrap_or_default(),
                expires: s.expires.as_ref().map(|t| t.seconds).unwrap_or_default(),
            },
        ));
    }
    out
}

/// Reconciles the memberships of the peer's cached objects.
async fn sync_relations(
    conn: &mut DbConn,
    peer_id: i64,
    dump: &PeerDump,
    ids: &IdMaps,
    report: &mut ReportBuilder,
) -> Result<()> {
    // A key belongs to one person: the first person that lists it keeps it.
    let mut owner_of_key = HashMap::new();
    let mut person_keys = HashSet::new();
    for p in &dump.persons {
        let Some(&person) = ids.persons.get(&p.person_id) else {
            continue;
        };
        for k in &p.key_ids {
            let Some(&key) = ids.keys.get(k) else {
                continue;
            };
            match owner_of_key.insert(key, p.person_id) {
                Some(first) if first != p.person_id => {
                    owner_of_key.insert(key, first);
                    report.warn(
                        "person_keys",
                        p.person_id,
                        &p.email,
                        format!("key {k} already belongs to person {first}"),
                    );
                }
                _ => {
                    person_keys.insert((person, key));
                }
            }
        }
    }
    sync_pairs::<PersonKeys>(conn, peer_id, &person_keys, report).await?;

    let mut slice_nodes = HashSet::new();
    let mut slice_persons = HashSet::new();
    for s in &dump.slices {
        let Some(&slice) = ids.slices.get(&s.slice_id) else {
            continue;
        };
        // Nodes the peer did not expose (whitelisted, or a third registry's)
        // are dropped here.
        slice_nodes.extend(
            s.node_ids
                .iter()
                .filter_map(|n| ids.nodes.get(n).or_else(|| ids.local_nodes.get(n)))
                .map(|&node| (slice, node)),
        );
        slice_persons.extend(
            s.person_ids
                .iter()
                .filter_map(|p| ids.persons.get(p))
                .map(|&person| (slice, person)),
        );
    }
    sync_pairs::<SliceNodes>(conn, peer_id, &slice_nodes, report).await?;
    sync_pairs::<SlicePersons>(conn, peer_id, &slice_persons, report).await?;

    let started = Instant::now();
    let mut memberships = HashMap::new();
    for p in &dump.persons {
        let Some(&person) = ids.persons.get(&p.person_id) else {
            continue;
        };
        for s in &p.site_ids {
            if let Some(&site) = ids.sites.get(s) {
                memberships.insert((person, site), p.primary_site_id == Some(*s));
            }
        }
    }
    let existing = cache::load_person_sites(conn, peer_id).await?;
    let (add, remove) = diff_memberships(&memberships, &existing);
    cache::delete_pairs::<PersonSites>(conn, &remove).await?;
    cache::insert_person_sites(conn, &add).await?;
    report.relation("site_persons", add.len(), remove.len(), started.elapsed());

    let roles = cache::known_roles(conn).await?;
    let mut person_roles = HashSet::new();
    for p in &dump.persons {
        let Some(&person) = ids.persons.get(&p.person_id) else {
            continue;
        };
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
    sync_pairs::<PersonRoles>(conn, peer_id, &person_roles, report).await
}

/// Adds the missing pairs of a relation and removes the stale ones.
async fn sync_pairs<R: Relation>(
    conn: &mut DbConn,
    peer_id: i64,
    desired: &HashSet<(i64, i64)>,
    report: &mut ReportBuilder,
) -> Result<()> {
    let started = Instant::now();
    let existing = R::load(conn, peer_id).await?;
    let (add, remove) = diff_sets(desired, &existing);
    cache::delete_pairs::<R>(conn, &remove).await?;
    R::insert(conn, &add).await?;
    report.relation(R::NAME, add.len(), remove.len(), started.elapsed());
    Ok(())
}
