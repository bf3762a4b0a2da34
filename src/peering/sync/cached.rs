//! What is cached from a peer when its refresh begins: the peer's ids →
//! local ids per class (all of them for a full dump, those a delta
//! touches otherwise), and who holds the keys the refresh brings.

use foldhash::{HashMap, HashSet};

use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::peering::spool::{Spool, SpooledClass};
use crate::store::DbConn;
use crate::store::cache::{self, CachedClass, CachedPersons};
use crate::with_class;

/// What is cached from a peer when its refresh begins, per class: the
/// peer's ids → local ids; for a delta, only of the ids it touches.
#[derive(Debug, Default)]
pub struct CachedIds {
    /// Per class, the peer's ids → local ids.
    pub ids: PerClass<HashMap<i64, i64>>,
    /// For a full dump, per class, the peer's ids → the digest stored with
    /// the cached row, for the rows that have one.
    pub(super) digests: PerClass<HashMap<i64, i64>>,
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
            .iter()
            .copied()
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
            .iter()
            .chain(spool.persons.gone_ids())
            .copied()
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
pub(super) type Touched = PerClass<Vec<i64>>;

/// Reads the ids a spooled delta touches.
fn touched_by(spool: &mut Spool) -> Result<Touched> {
    let mut touched: Touched = PerClass::from_fn(|class| {
        let spooled = spool.class(class);
        spooled
            .ids()
            .iter()
            .chain(spooled.gone_ids())
            .copied()
            .collect()
    });
    touched[Class::Keys].extend(&spool.dropped_person_keys);
    spool.persons.for_each(|p| {
        touched[Class::Keys].extend(&p.key_ids);
        touched[Class::Sites].extend(&p.site_ids);
    })?;
    spool
        .nodes
        .for_each(|n| touched[Class::Sites].push(n.site_id))?;
    spool.slices.for_each(|s| {
        touched[Class::Sites].push(s.site_id);
        touched[Class::Nodes].extend(&s.node_ids);
        touched[Class::Persons].extend(&s.person_ids);
        touched[Class::Persons].extend(s.creator_person_id);
    })?;
    for ids in touched.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    Ok(touched)
}

impl CachedIds {
    /// The cached objects loaded, all classes together (for a full dump,
    /// the whole cache).
    pub fn loaded(&self) -> usize {
        self.ids.values().map(HashMap::len).sum()
    }

    /// Whether the whole cache was loaded (a full dump): then
    /// [`CachedIds::loaded`] is the size of the cache; a delta loads only
    /// the ids it touches.
    pub fn is_whole(&self) -> bool {
        self.touched.is_none()
    }

    /// Loads them, inside the refresh's transaction: all of them for a full
    /// dump (`read_ahead` when it was read while the dump arrived), those
    /// of the ids it touches for a delta.
    pub async fn load(
        conn: &mut DbConn,
        peer_id: i64,
        spool: &mut Spool,
        read_ahead: Option<WholeCache>,
    ) -> Result<CachedIds> {
        let mut cached = match spool.is_delta() {
            true => {
                let touched = touched_by(spool)?;
                let mut cached = CachedIds::default();
                for class in Class::ALL {
                    let wanted = &touched[class];
                    cached.ids[class] =
                        with_class!(class, K => K::ids_among(conn, peer_id, wanted).await?);
                }
                cached.touched = Some(touched);
                cached
            }
            false => {
                let whole = match read_ahead {
                    Some(whole) => whole,
                    None => WholeCache::read(conn, peer_id).await?,
                };
                CachedIds {
                    ids: whole.ids,
                    digests: whole.digests,
                    ..CachedIds::default()
                }
            }
        };
        cached.key_owners = KeyOwners::load(conn, peer_id, spool, &cached.ids[Class::Keys]).await?;
        Ok(cached)
    }

    /// How many cached objects applying `spool` deletes for sure: those
    /// the peer no longer has, the nodes and slices that go with their
    /// sites, and the keys of the persons cleaning dropped. The mass-delete
    /// guard counts these.
    pub async fn doomed(&self, conn: &mut DbConn, peer_id: i64, spool: &Spool) -> Result<usize> {
        let delta = spool.is_delta();
        let doomed = |class: Class| spool.class(class).doomed(&self.ids[class], delta);
        let sites = doomed(Class::Sites);
        let nodes: HashSet<i64> = doomed(Class::Nodes).into_iter().collect();
        let slices: HashSet<i64> = doomed(Class::Slices).into_iter().collect();
        let mut keys: HashSet<i64> = doomed(Class::Keys).into_iter().collect();
        keys.extend(self.key_owners.dropped.iter().filter(|id| {
            self.ids[Class::Keys].contains_key(id) && !self.key_owners.listed.contains(id)
        }));
        let persons = doomed(Class::Persons).len();
        let site_ids: Vec<i64> = sites
            .iter()
            .filter_map(|id| self.ids[Class::Sites].get(id))
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

/// Everything cached from a peer, per class: the peer's ids → local ids,
/// and → the digests stored with the rows that have one. A full dump is
/// compared with it.
#[derive(Debug, Default)]
pub struct WholeCache {
    ids: PerClass<HashMap<i64, i64>>,
    digests: PerClass<HashMap<i64, i64>>,
}

impl WholeCache {
    /// Reads it.
    ///
    /// A full refresh reads it while the dump arrives, outside its write
    /// transaction but under the peer's refresh lock: the rows' ids and
    /// stored digests are written only by the refreshes of their peer (and
    /// deleted with the peer), so they are the same when the transaction
    /// opens. A hand edit in between clears the row's stored digest (see
    /// the migration `digests`), as one just after the refresh would: the
    /// next verification finds it.
    pub async fn read(conn: &mut DbConn, peer_id: i64) -> Result<WholeCache> {
        let mut whole = WholeCache::default();
        for class in Class::ALL {
            let rows = with_class!(class, K => K::all_ids_and_digests(conn, peer_id).await?);
            let (ids, digests) = (&mut whole.ids[class], &mut whole.digests[class]);
            ids.reserve(rows.len());
            digests.reserve(rows.len());
            for (peer_object_id, local_id, digest) in rows {
                ids.insert(peer_object_id, local_id);
                if let Some(digest) = digest {
                    digests.insert(peer_object_id, digest);
                }
            }
        }
        Ok(whole)
    }
}
