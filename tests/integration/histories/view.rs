//! What must agree after a refresh, read through the admin API: the objects
//! a registry serves (its local ones, reduced to what it exports) and the
//! objects another registry caches of it, both described by the serving
//! registry's ids and natural keys, memberships included, so that they
//! compare line by line; and the per-class changes between two reads of a
//! cache, to hold a refresh's report to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fedreg::proto::v1 as pb;

use crate::common::TestServer;

/// The five classes, in sync order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Sites.
    Sites,
    /// Keys.
    Keys,
    /// Persons.
    Persons,
    /// Nodes.
    Nodes,
    /// Slices.
    Slices,
}

impl Class {
    /// Its name in refresh reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Sites => "sites",
            Class::Keys => "keys",
            Class::Persons => "persons",
            Class::Nodes => "nodes",
            Class::Slices => "slices",
        }
    }
}

/// An object named by the serving registry's id.
pub type Served = (Class, i64);

/// Objects of one registry as its admin API lists them, one scope.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Sites.
    pub sites: Vec<pb::Site>,
    /// Keys.
    pub keys: Vec<pb::Key>,
    /// Persons.
    pub persons: Vec<pb::Person>,
    /// Nodes.
    pub nodes: Vec<pb::Node>,
    /// Slices.
    pub slices: Vec<pb::Slice>,
}

impl Objects {
    /// Every object of `scope` on `server`, every page.
    pub async fn read(server: &TestServer, scope: pb::Scope) -> Objects {
        Objects {
            sites: list_all!(server, list_sites, sites, scope),
            keys: list_all!(server, list_keys, keys, scope),
            persons: list_all!(server, list_persons, persons, scope),
            nodes: list_all!(server, list_nodes, nodes, scope),
            slices: list_all!(server, list_slices, slices, scope),
        }
    }

    /// For cached objects: the serving registry's id of each → the local
    /// id here.
    pub fn local_ids(&self) -> BTreeMap<Served, i64> {
        let mut out = BTreeMap::new();
        let mut add = |class: Class, rows: Vec<(i64, Option<&pb::Origin>)>| {
            for (local, origin) in rows {
                if let Some(origin) = origin {
                    out.insert((class, origin.peer_object_id), local);
                }
            }
        };
        add(Class::Sites, rows(&self.sites));
        add(Class::Keys, rows(&self.keys));
        add(Class::Persons, rows(&self.persons));
        add(Class::Nodes, rows(&self.nodes));
        add(Class::Slices, rows(&self.slices));
        out
    }

    /// Per class, what changed from `before` to `self` (by local id): rows
    /// added, rows whose synced fields changed, rows deleted.
    pub fn changes_since(&self, before: &Objects) -> BTreeMap<Class, Changes> {
        BTreeMap::from([
            (Class::Sites, changes(&before.sites, &self.sites)),
            (Class::Keys, changes(&before.keys, &self.keys)),
            (Class::Persons, changes(&before.persons, &self.persons)),
            (Class::Nodes, changes(&before.nodes, &self.nodes)),
            (Class::Slices, changes(&before.slices, &self.slices)),
        ])
    }
}

fn rows<T: Listed>(objects: &[T]) -> Vec<(i64, Option<&pb::Origin>)> {
    objects.iter().map(|o| (o.local_id(), o.origin())).collect()
}

/// Rows added, updated and deleted in one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    /// Rows added.
    pub added: i64,
    /// Rows whose synced fields changed.
    pub updated: i64,
    /// Rows deleted.
    pub deleted: i64,
}

impl Changes {
    /// The counts a refresh report gives for `class` (zero when the
    /// report does not name the class).
    pub fn reported(report: &pb::RefreshReport, class: Class) -> Changes {
        report
            .classes
            .iter()
            .find(|c| c.class == class.name())
            .map(|c| Changes {
                added: c.added,
                updated: c.updated,
                deleted: c.deleted,
            })
            .unwrap_or_default()
    }
}

/// A listed object: its local id, its origin, and the row as a refresh
/// writes it (without memberships and timestamps).
trait Listed: Clone + PartialEq {
    fn local_id(&self) -> i64;
    fn origin(&self) -> Option<&pb::Origin>;
    fn synced(&self) -> Self;
}

impl Listed for pb::Site {
    fn local_id(&self) -> i64 {
        self.site_id
    }
    fn origin(&self) -> Option<&pb::Origin> {
        self.origin.as_ref()
    }
    fn synced(&self) -> Self {
        pb::Site {
            date_created: None,
            last_updated: None,
            person_ids: Vec::new(),
            primary_person_ids: Vec::new(),
            node_ids: Vec::new(),
            slice_ids: Vec::new(),
            ..self.clone()
        }
    }
}

impl Listed for pb::Key {
    fn local_id(&self) -> i64 {
        self.key_id
    }
    fn origin(&self) -> Option<&pb::Origin> {
        self.origin.as_ref()
    }
    fn synced(&self) -> Self {
        pb::Key {
            person_id: 0,
            ..self.clone()
        }
    }
}

impl Listed for pb::Person {
    fn local_id(&self) -> i64 {
        self.person_id
    }
    fn origin(&self) -> Option<&pb::Origin> {
        self.origin.as_ref()
    }
    fn synced(&self) -> Self {
        pb::Person {
            date_created: None,
            last_updated: None,
            role_ids: Vec::new(),
            site_ids: Vec::new(),
            primary_site_id: None,
            key_ids: Vec::new(),
            slice_ids: Vec::new(),
            ..self.clone()
        }
    }
}

impl Listed for pb::Node {
    fn local_id(&self) -> i64 {
        self.node_id
    }
    fn origin(&self) -> Option<&pb::Origin> {
        self.origin.as_ref()
    }
    fn synced(&self) -> Self {
        pb::Node {
            date_created: None,
            last_updated: None,
            last_contact: None,
            slice_ids: Vec::new(),
            slice_ids_whitelist: Vec::new(),
            ..self.clone()
        }
    }
}

impl Listed for pb::Slice {
    fn local_id(&self) -> i64 {
        self.slice_id
    }
    fn origin(&self) -> Option<&pb::Origin> {
        self.origin.as_ref()
    }
    fn synced(&self) -> Self {
        pb::Slice {
            node_ids: Vec::new(),
            person_ids: Vec::new(),
            ..self.clone()
        }
    }
}

fn changes<T: Listed>(before: &[T], after: &[T]) -> Changes {
    let before: HashMap<i64, T> = before.iter().map(|o| (o.local_id(), o.synced())).collect();
    let after: HashMap<i64, T> = after.iter().map(|o| (o.local_id(), o.synced())).collect();
    let mut out = Changes::default();
    for (id, row) in &after {
        match before.get(id) {
            None => out.added += 1,
            Some(old) if old != row => out.updated += 1,
            Some(_) => {}
        }
    }
    out.deleted = before.keys().filter(|id| !after.contains_key(id)).count() as i64;
    out
}

/// Objects described by the serving registry's ids: one line per object
/// with its natural key, a few fields and its memberships (ids of the
/// serving registry; an id that is not a cached object of that registry
/// shows as its local id, negated).
pub type Described = BTreeMap<Served, String>;

/// What a registry serves to its peers, described.
#[derive(Debug, Default)]
pub struct Expected {
    /// Objects the cache must hold, exactly so.
    pub required: Described,
    /// Objects the cache may hold (exactly so) or not: the keys of
    /// persons that are not federated (disabled), which the serving
    /// registry sends while the caching one drops their owners.
    pub optional: Described,
}

impl Expected {
    /// Reduces a registry's local objects to what it federates: persons
    /// that are enabled, nodes without a slice whitelist, slices that are
    /// not system slices; memberships to those.
    pub fn of(served: &Objects) -> Expected {
        let persons: BTreeSet<i64> = served
            .persons
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.person_id)
            .collect();
        let nodes: BTreeSet<i64> = served
            .nodes
            .iter()
            .filter(|n| n.slice_ids_whitelist.is_empty())
            .map(|n| n.node_id)
            .collect();
        let mut out = Expected::default();
        for s in &served.sites {
            out.required.insert((Class::Sites, s.site_id), site(s));
        }
        let federated_keys: BTreeSet<i64> = served
            .persons
            .iter()
            .filter(|p| persons.contains(&p.person_id))
            .flat_map(|p| p.key_ids.iter().copied())
            .collect();
        for k in &served.keys {
            let into = match federated_keys.contains(&k.key_id) {
                true => &mut out.required,
                false => &mut out.optional,
            };
            into.insert((Class::Keys, k.key_id), key(k));
        }
        let same = |ids: &[i64]| ids.to_vec();
        for p in served
            .persons
            .iter()
            .filter(|p| persons.contains(&p.person_id))
        {
            out.required.insert(
                (Class::Persons, p.person_id),
                person(p, same(&p.site_ids), p.primary_site_id, same(&p.key_ids)),
            );
        }
        for n in served.nodes.iter().filter(|n| nodes.contains(&n.node_id)) {
            out.required
                .insert((Class::Nodes, n.node_id), node(n, n.site_id));
        }
        for s in served.slices.iter().filter(|s| !s.is_system) {
            let members = |ids: &[i64], of: &BTreeSet<i64>| -> Vec<i64> {
                ids.iter().filter(|id| of.contains(id)).copied().collect()
            };
            out.required.insert(
                (Class::Slices, s.slice_id),
                slice(
                    s,
                    s.site_id,
                    s.creator_person_id.filter(|p| persons.contains(p)),
                    members(&s.node_ids, &nodes),
                    members(&s.person_ids, &persons),
                ),
            );
        }
        out
    }

    /// Whether the serving registry federates this object now.
    pub fn federates(&self, object: Served) -> bool {
        self.required.contains_key(&object)
    }

    /// How `cached` differs from this, one line per object.
    pub fn differences(&self, cached: &Described) -> Vec<String> {
        let mut out = Vec::new();
        for (object, line) in &self.required {
            match cached.get(object) {
                None => out.push(format!(
                    "{} #{} missing from the cache: served {line}",
                    object.0.name(),
                    object.1
                )),
                Some(cached) if cached != line => out.push(format!(
                    "{} #{} differs: served {line} / cached {cached}",
                    object.0.name(),
                    object.1
                )),
                Some(_) => {}
            }
        }
        for (object, cached) in cached {
            if self.required.contains_key(object) {
                continue;
            }
            match self.optional.get(object) {
                None => out.push(format!(
                    "{} #{} cached but not served: {cached}",
                    object.0.name(),
                    object.1
                )),
                Some(line) if line != cached => out.push(format!(
                    "{} #{} differs: served {line} / cached {cached}",
                    object.0.name(),
                    object.1
                )),
                Some(_) => {}
            }
        }
        out
    }
}

/// Describes the objects a registry caches of one peer by the peer's ids
/// (their origins), memberships translated to the peer's ids; persons not
/// cached from the peer (local ones) are left out of slice memberships,
/// which the caching registry keeps as its own.
pub fn cached(cache: &Objects) -> Described {
    let origin_of = |rows: Vec<(i64, Option<&pb::Origin>)>| -> HashMap<i64, i64> {
        rows.into_iter()
            .filter_map(|(local, o)| Some((local, o?.peer_object_id)))
            .collect()
    };
    let sites = origin_of(rows(&cache.sites));
    let keys = origin_of(rows(&cache.keys));
    let persons = origin_of(rows(&cache.persons));
    let nodes = origin_of(rows(&cache.nodes));
    let peer = |map: &HashMap<i64, i64>, id: i64| map.get(&id).copied().unwrap_or(-id);
    let peers = |map: &HashMap<i64, i64>, ids: &[i64]| -> Vec<i64> {
        ids.iter().map(|&id| peer(map, id)).collect()
    };
    let mut out = Described::new();
    for s in &cache.sites {
        if let Some(o) = &s.origin {
            out.insert((Class::Sites, o.peer_object_id), site(s));
        }
    }
    for k in &cache.keys {
        if let Some(o) = &k.origin {
            out.insert((Class::Keys, o.peer_object_id), key(k));
        }
    }
    for p in &cache.persons {
        if let Some(o) = &p.origin {
            out.insert(
                (Class::Persons, o.peer_object_id),
                person(
                    p,
                    peers(&sites, &p.site_ids),
                    p.primary_site_id.map(|s| peer(&sites, s)),
                    peers(&keys, &p.key_ids),
                ),
            );
        }
    }
    for n in &cache.nodes {
        if let Some(o) = &n.origin {
            out.insert(
                (Class::Nodes, o.peer_object_id),
                node(n, peer(&sites, n.site_id)),
            );
        }
    }
    for s in &cache.slices {
        if let Some(o) = &s.origin {
            let members: Vec<i64> = s
                .person_ids
                .iter()
                .filter_map(|p| persons.get(p).copied())
                .collect();
            out.insert(
                (Class::Slices, o.peer_object_id),
                slice(
                    s,
                    peer(&sites, s.site_id),
                    s.creator_person_id.map(|p| peer(&persons, p)),
                    peers(&nodes, &s.node_ids),
                    members,
                ),
            );
        }
    }
    out
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

fn site(s: &pb::Site) -> String {
    format!(
        "site {:?} name={:?} enabled={}",
        s.login_base, s.name, s.enabled
    )
}

fn key(k: &pb::Key) -> String {
    let body = k.key.split_whitespace().nth(2).unwrap_or_default();
    format!("key {body:?} blacklisted={}", k.is_blacklisted)
}

fn person(p: &pb::Person, sites: Vec<i64>, primary: Option<i64>, keys: Vec<i64>) -> String {
    format!(
        "person {:?} enabled={} title={:?} sites={:?} primary={:?} roles={:?} keys={:?}",
        p.email,
        p.enabled,
        p.title,
        sorted(sites),
        primary,
        sorted(p.role_ids.iter().map(|&r| i64::from(r)).collect()),
        sorted(keys)
    )
}

fn node(n: &pb::Node, site: i64) -> String {
    format!(
        "node {:?} site={site} boot_state={:?}",
        n.hostname, n.boot_state
    )
}

fn slice(
    s: &pb::Slice,
    site: i64,
    creator: Option<i64>,
    nodes: Vec<i64>,
    persons: Vec<i64>,
) -> String {
    format!(
        "slice {:?} site={site} description={:?} creator={creator:?} nodes={:?} persons={:?}",
        s.name,
        s.description,
        sorted(nodes),
        sorted(persons)
    )
}
