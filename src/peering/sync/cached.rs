//! What is cached from a peer when its refresh begins: the peer's ids →
//! local ids per class (all of them for a full dump, those a delta
//! touches otherwise), and who holds the keys the refresh brings.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::peering::spool::{ClassSpool, PeerObject, Spool};
use crate::store::DbConn;
use crate::store::cache::{
    self, CachedKeys, CachedKind, CachedNodes, CachedPersons, CachedSites, CachedSlices,
};

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
    pub(super) key_owners: KeyOwners,
    /// For a delta, the ids loaded.
    pub(super) touched: Option<Touched>,
}

/// Who holds the keys of a refresh. A key belongs to one person, so a key
/// that no person of the peer lists is not cached (and is deleted when it
/// was); the keys of a person that cleaning drops (a disabled one) go with
/// it, without a warning.
#[derive(Debug, Default)]
pub(super) struct KeyOwners {
    /// Keys the spooled persons list.
    pub(super) listed: HashSet<i64>,
    /// Keys of the persons cleaning dropped.
    pub(super) dropped: HashSet<i64>,
    /// For a delta: keys it brings that its persons do not list, whose
    /// cached owner it leaves as it is (a key changed alone).
    pub(super) kept: HashSet<i64>,
}

impl KeyOwners {
    /// Reads them off the spool (and, for a delta, off the cache of the
    /// keys it brings alone).
    pub(super) async fn load(
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
    pub(super) fn holds(&self, key_id: i64) -> std::result::Result<bool, &'static str> {
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
pub(super) struct Touched {
    pub(super) sites: Vec<i64>,
    pub(super) keys: Vec<i64>,
    pub(super) persons: Vec<i64>,
    pub(super) nodes: Vec<i64>,
    pub(super) slices: Vec<i64>,
}

impl Touched {
    /// Reads them off a spooled delta.
    pub(super) fn of(spool: &mut Spool) -> Result<Touched> {
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
