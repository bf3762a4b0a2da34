//! The operations of a history and how they are generated: admin changes
//! at the serving registry (creates, updates, deletes, renames, swaps and
//! chains of natural keys taken from small pools, so that keys collide,
//! move between objects and come back; memberships; disables), changes at
//! the caching registry that make its local objects refer to cached ones,
//! and refreshes.
//!
//! Slice names change only with their site's login_base, if at all: the
//! admin API has no rename of a slice. Slices are deleted and created
//! again under the same name instead.
//!
//! Objects are picked by index among those made so far (modulo their
//! number), so that a shrunk history still picks objects. An operation
//! the admin API refuses (the object was deleted, the name is taken...)
//! is skipped: only legal changes make a history.

use fedreg::proto::v1 as pb;
use proptest::prelude::*;
use tonic::{Code, Status};

use crate::common::federation::ssh_key;
use crate::common::objects::{Api, get_node, get_site};

/// An index among the objects of a class made so far.
pub type Pick = u8;

/// Login bases of the serving registry's sites.
const SITES: [&str; 5] = ["mit", "ucb", "eth", "tum", "kth"];
/// Local parts of its persons' e-mails.
const PERSONS: [&str; 5] = ["ann", "bob", "cyd", "dan", "eve"];
/// Hostnames of its nodes are `n<1..=NODES>.a.example.org`.
const NODES: u8 = 9;
/// Slice names are `<login_base>_<suffix>`.
const SLICE_SUFFIXES: [&str; 3] = ["web", "db", "exp"];
/// Roles: admin, pi, user, tech.
const ROLES: [i32; 4] = [10, 20, 30, 40];

/// A class whose natural key an admin can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    /// Sites, by login_base.
    Site,
    /// Persons, by e-mail.
    Person,
    /// Nodes, by hostname.
    Node,
}

impl Keyed {
    /// The natural key of pool entry `n`.
    pub fn key(self, n: u8) -> String {
        match self {
            Keyed::Site => SITES[usize::from(n) % SITES.len()].to_owned(),
            Keyed::Person => format!("{}@a.example.org", PERSONS[usize::from(n) % PERSONS.len()]),
            Keyed::Node => format!("n{}.a.example.org", n % NODES + 1),
        }
    }

    /// A key outside the pool, free between the steps of a swap.
    fn spare(self) -> String {
        match self {
            Keyed::Site => "swap".into(),
            Keyed::Person => "swap@a.example.org".into(),
            Keyed::Node => "swap.a.example.org".into(),
        }
    }

    /// The current natural key of object `id`.
    pub async fn key_of(self, api: &mut Api, id: i64) -> Result<String, Status> {
        Ok(match self {
            Keyed::Site => get_site(api, id).await?.login_base,
            Keyed::Person => {
                api.get_person(pb::GetPersonRequest {
                    key: Some(pb::get_person_request::Key::PersonId(id)),
                })
                .await?
                .into_inner()
                .email
            }
            Keyed::Node => get_node(api, id).await?.hostname,
        })
    }

    /// Gives object `id` the natural key `key`.
    pub async fn rename(self, api: &mut Api, id: i64, key: &str) -> Result<(), Status> {
        let key = Some(key.to_owned());
        match self {
            Keyed::Site => api
                .update_site(pb::UpdateSiteRequest {
                    site_id: id,
                    login_base: key,
                    ..Default::default()
                })
                .await
                .map(drop),
            Keyed::Person => api
                .update_person(pb::UpdatePersonRequest {
                    person_id: id,
                    email: key,
                    ..Default::default()
                })
                .await
                .map(drop),
            Keyed::Node => api
                .update_node(pb::UpdateNodeRequest {
                    node_id: id,
                    hostname: key,
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }

    /// Swaps the natural keys of `a` and `b` through a spare key: a takes
    /// the spare, b takes a's, a takes b's.
    pub async fn swap(self, api: &mut Api, a: i64, b: i64) -> Result<(), Status> {
        if a == b {
            return Ok(());
        }
        let (key_a, key_b) = (self.key_of(api, a).await?, self.key_of(api, b).await?);
        self.rename(api, a, &self.spare()).await?;
        self.rename(api, b, &key_a).await?;
        self.rename(api, a, &key_b).await
    }

    /// A chain: b takes pool key `free`, then a takes b's old key.
    pub async fn chain(self, api: &mut Api, a: i64, b: i64, free: u8) -> Result<(), Status> {
        if a == b {
            return Ok(());
        }
        let key_b = self.key_of(api, b).await?;
        self.rename(api, b, &self.key(free)).await?;
        self.rename(api, a, &key_b).await
    }
}

/// One step of a history.
#[derive(Debug, Clone)]
pub enum Op {
    /// A refresh of the serving registry on the caching one: delta and
    /// full alternately.
    Refresh,
    /// Creates a site with a pool login_base.
    CreateSite {
        /// Pool entry.
        name: u8,
    },
    /// Creates a person with a pool e-mail.
    CreatePerson {
        /// Pool entry.
        name: u8,
        /// Whether the account is enabled (federated).
        enabled: bool,
    },
    /// Creates a node with a pool hostname.
    CreateNode {
        /// Its site.
        site: Pick,
        /// Pool entry.
        name: u8,
    },
    /// Renames an object to a pool key.
    Rename {
        /// Class.
        class: Keyed,
        /// The object.
        object: Pick,
        /// Pool entry.
        name: u8,
    },
    /// Swaps the keys of two objects through a spare key.
    Swap {
        /// Class.
        class: Keyed,
        /// One object.
        a: Pick,
        /// The other.
        b: Pick,
    },
    /// b takes a pool key, then a takes b's old key.
    Chain {
        /// Class.
        class: Keyed,
        /// The object taking b's key.
        a: Pick,
        /// The object moving to the free key.
        b: Pick,
        /// Pool entry.
        free: u8,
    },
    /// Deletes an object (a site takes its nodes and slices along).
    Delete {
        /// Class.
        class: Keyed,
        /// The object.
        object: Pick,
    },
    /// Enables or disables a person (a disabled one is not federated).
    EnablePerson {
        /// The person.
        person: Pick,
        /// The flag.
        enabled: bool,
    },
    /// Adds a person to a site or removes them.
    PersonSite {
        /// The person.
        person: Pick,
        /// The site.
        site: Pick,
        /// As primary site (when adding).
        primary: bool,
        /// Add or remove.
        add: bool,
    },
    /// Adds a role to a person or removes it.
    PersonRole {
        /// The person.
        person: Pick,
        /// Index in [`ROLES`].
        role: u8,
        /// Add or remove.
        add: bool,
    },
    /// Creates a key for a person.
    CreateKey {
        /// The owner.
        person: Pick,
    },
    /// Deletes a key.
    DeleteKey {
        /// The key.
        key: Pick,
    },
    /// Changes a node's boot state.
    BootNode {
        /// The node.
        node: Pick,
        /// Index among the boot states.
        state: u8,
    },
    /// Adds a slice to a node's whitelist (the node leaves the export) or
    /// removes it.
    Whitelist {
        /// The node.
        node: Pick,
        /// The slice.
        slice: Pick,
        /// Add or remove.
        add: bool,
    },
    /// Creates a slice of a site, named after the site's current login_base.
    CreateSlice {
        /// The site.
        site: Pick,
        /// Index in [`SLICE_SUFFIXES`].
        suffix: u8,
    },
    /// Changes a slice's description, and whether it is a system slice
    /// (not exported).
    UpdateSlice {
        /// The slice.
        slice: Pick,
        /// The system flag.
        system: bool,
    },
    /// Deletes a slice.
    DeleteSlice {
        /// The slice.
        slice: Pick,
    },
    /// Adds a node to a slice or removes it.
    SliceNode {
        /// The slice.
        slice: Pick,
        /// The node.
        node: Pick,
        /// Add or remove.
        add: bool,
    },
    /// Adds a person to a slice or removes them.
    SlicePerson {
        /// The slice.
        slice: Pick,
        /// The person.
        person: Pick,
        /// Add or remove.
        add: bool,
    },
    /// At the caching registry: adds a cached node to a local slice.
    LinkNode {
        /// Which local slice.
        local_slice: u8,
        /// Among the cached nodes.
        node: Pick,
    },
    /// At the caching registry: adds a cached person to a local slice.
    LinkPerson {
        /// Which local slice.
        local_slice: u8,
        /// Among the cached persons.
        person: Pick,
    },
    /// At the caching registry: adds its local person to a cached slice.
    JoinSlice {
        /// Among the cached slices.
        slice: Pick,
    },
}

fn keyed() -> impl Strategy<Value = Keyed> {
    prop_oneof![Just(Keyed::Site), Just(Keyed::Person), Just(Keyed::Node)]
}

/// A random operation; renames, swaps, chains and refreshes weigh most.
pub fn op() -> impl Strategy<Value = Op> {
    let pick = any::<Pick>;
    prop_oneof![
        6 => Just(Op::Refresh),
        2 => (0..5u8).prop_map(|name| Op::CreateSite { name }),
        2 => (0..5u8, prop::bool::weighted(0.8))
            .prop_map(|(name, enabled)| Op::CreatePerson { name, enabled }),
        2 => (pick(), 0..NODES).prop_map(|(site, name)| Op::CreateNode { site, name }),
        5 => (keyed(), pick(), 0..8u8).prop_map(|(class, object, name)| Op::Rename {
            class,
            object,
            name
        }),
        5 => (keyed(), pick(), pick()).prop_map(|(class, a, b)| Op::Swap { class, a, b }),
        3 => (keyed(), pick(), pick(), 0..8u8).prop_map(|(class, a, b, free)| Op::Chain {
            class,
            a,
            b,
            free
        }),
        2 => (keyed(), pick()).prop_map(|(class, object)| Op::Delete { class, object }),
        2 => (pick(), any::<bool>())
            .prop_map(|(person, enabled)| Op::EnablePerson { person, enabled }),
        2 => (pick(), pick(), any::<bool>(), prop::bool::weighted(0.7)).prop_map(
            |(person, site, primary, add)| Op::PersonSite {
                person,
                site,
                primary,
                add
            }
        ),
        1 => (pick(), 0..4u8, prop::bool::weighted(0.6))
            .prop_map(|(person, role, add)| Op::PersonRole { person, role, add }),
        1 => pick().prop_map(|person| Op::CreateKey { person }),
        1 => pick().prop_map(|key| Op::DeleteKey { key }),
        1 => (pick(), 0..4u8).prop_map(|(node, state)| Op::BootNode { node, state }),
        1 => (pick(), pick(), prop::bool::weighted(0.4))
            .prop_map(|(node, slice, add)| Op::Whitelist { node, slice, add }),
        2 => (pick(), 0..3u8).prop_map(|(site, suffix)| Op::CreateSlice { site, suffix }),
        1 => (pick(), prop::bool::weighted(0.2))
            .prop_map(|(slice, system)| Op::UpdateSlice { slice, system }),
        1 => pick().prop_map(|slice| Op::DeleteSlice { slice }),
        2 => (pick(), pick(), prop::bool::weighted(0.7))
            .prop_map(|(slice, node, add)| Op::SliceNode { slice, node, add }),
        2 => (pick(), pick(), prop::bool::weighted(0.7))
            .prop_map(|(slice, person, add)| Op::SlicePerson { slice, person, add }),
        2 => (0..2u8, pick()).prop_map(|(local_slice, node)| Op::LinkNode { local_slice, node }),
        1 => (0..2u8, pick())
            .prop_map(|(local_slice, person)| Op::LinkPerson { local_slice, person }),
        1 => pick().prop_map(|slice| Op::JoinSlice { slice }),
    ]
}

/// A history of 1 to `len` operations.
pub fn history(len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=len.max(1))
}

/// Ids the serving registry made, deleted ones included (an operation on
/// a deleted id is refused, and skipped).
#[derive(Debug, Clone, Default)]
pub struct Made {
    /// Sites.
    pub sites: Vec<i64>,
    /// Persons.
    pub persons: Vec<i64>,
    /// Keys.
    pub keys: Vec<i64>,
    /// Nodes.
    pub nodes: Vec<i64>,
    /// Slices.
    pub slices: Vec<i64>,
    /// Makes keys and descriptions distinct.
    pub counter: usize,
}

impl Made {
    fn of(&self, class: Keyed) -> &[i64] {
        match class {
            Keyed::Site => &self.sites,
            Keyed::Person => &self.persons,
            Keyed::Node => &self.nodes,
        }
    }
}

/// The object `pick` designates among `ids`; `None` when there is none.
pub fn pick(ids: &[i64], pick: Pick) -> Option<i64> {
    (!ids.is_empty()).then(|| ids[usize::from(pick) % ids.len()])
}

/// Whether the admin API refused a change as illegal now (the change is
/// then skipped); any other failure is a defect.
pub fn refused(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition | Code::NotFound
    )
}

/// Applies an operation of the serving registry through its admin API.
/// `Ok(false)` when it is not one of the serving registry's.
pub async fn apply_at_peer(api: &mut Api, made: &mut Made, op: &Op) -> Result<bool, Status> {
    made.counter += 1;
    let n = made.counter;
    // A missing object is id 0, which the API refuses (skipped).
    let get = |ids: &[i64], p: Pick| pick(ids, p).unwrap_or(0);
    match op.clone() {
        Op::Refresh | Op::LinkNode { .. } | Op::LinkPerson { .. } | Op::JoinSlice { .. } => {
            return Ok(false);
        }
        Op::CreateSite { name } => {
            let site = api
                .create_site(pb::CreateSiteRequest {
                    login_base: Keyed::Site.key(name),
                    name: format!("Site {n}"),
                    ..Default::default()
                })
                .await?;
            made.sites.push(site.into_inner().site_id);
        }
        Op::CreatePerson { name, enabled } => {
            let person = api
                .create_person(pb::CreatePersonRequest {
                    email: Keyed::Person.key(name),
                    first_name: "P".into(),
                    last_name: format!("{n}"),
                    enabled: Some(enabled),
                    ..Default::default()
                })
                .await?;
            made.persons.push(person.into_inner().person_id);
        }
        Op::CreateNode { site, name } => {
            let site_id = get(&made.sites, site);
            let node = api
                .create_node(pb::CreateNodeRequest {
                    site_id,
                    hostname: Keyed::Node.key(name),
                    ..Default::default()
                })
                .await?;
            made.nodes.push(node.into_inner().node_id);
        }
        Op::Rename {
            class,
            object,
            name,
        } => {
            let id = get(made.of(class), object);
            class.rename(api, id, &class.key(name)).await?;
        }
        Op::Swap { class, a, b } => {
            let (a, b) = (get(made.of(class), a), get(made.of(class), b));
            class.swap(api, a, b).await?;
        }
        Op::Chain { class, a, b, free } => {
            let (a, b) = (get(made.of(class), a), get(made.of(class), b));
            class.chain(api, a, b, free).await?;
        }
        Op::Delete { class, object } => {
            let id = get(made.of(class), object);
            let request = pb::DeleteRequest { id };
            match class {
                Keyed::Site => api.delete_site(request).await?,
                Keyed::Person => api.delete_person(request).await?,
                Keyed::Node => api.delete_node(request).await?,
            };
        }
        Op::EnablePerson { person, enabled } => {
            api.update_person(pb::UpdatePersonRequest {
                person_id: get(&made.persons, person),
                enabled: Some(enabled),
                ..Default::default()
            })
            .await?;
        }
        Op::PersonSite {
            person,
            site,
            primary,
            add,
        } => {
            let request = pb::PersonSiteRequest {
                person_id: get(&made.persons, person),
                site_id: get(&made.sites, site),
                is_primary: primary,
            };
            match add {
                true => api.add_person_to_site(request).await?,
                false => api.remove_person_from_site(request).await?,
            };
        }
        Op::PersonRole { person, role, add } => {
            let request = pb::PersonRoleRequest {
                person_id: get(&made.persons, person),
                role_id: ROLES[usize::from(role) % ROLES.len()],
            };
            match add {
                true => api.add_role_to_person(request).await?,
                false => api.remove_role_from_person(request).await?,
            };
        }
        Op::CreateKey { person } => {
            let key = api
                .create_key(pb::CreateKeyRequest {
                    person_id: get(&made.persons, person),
                    key_type: "ssh".into(),
                    key: ssh_key(n, &format!("k{n}")),
                })
                .await?;
            made.keys.push(key.into_inner().key_id);
        }
        Op::DeleteKey { key } => {
            api.delete_key(pb::DeleteRequest {
                id: get(&made.keys, key),
            })
            .await?;
        }
        Op::BootNode { node, state } => {
            let states = ["boot", "safeboot", "reinstall", "disabled"];
            api.update_node(pb::UpdateNodeRequest {
                node_id: get(&made.nodes, node),
                boot_state: Some(states[usize::from(state) % states.len()].into()),
                ..Default::default()
            })
            .await?;
        }
        Op::Whitelist { node, slice, add } => {
            let request = pb::NodeWhitelistRequest {
                node_id: get(&made.nodes, node),
                slice_id: get(&made.slices, slice),
            };
            match add {
                true => api.add_slice_to_node_whitelist(request).await?,
                false => api.remove_slice_from_node_whitelist(request).await?,
            };
        }
        Op::CreateSlice { site, suffix } => {
            let login_base = Keyed::Site.key_of(api, get(&made.sites, site)).await?;
            let suffix = SLICE_SUFFIXES[usize::from(suffix) % SLICE_SUFFIXES.len()];
            let slice = api
                .create_slice(pb::CreateSliceRequest {
                    name: format!("{login_base}_{suffix}"),
                    ..Default::default()
                })
                .await?;
            made.slices.push(slice.into_inner().slice_id);
        }
        Op::UpdateSlice { slice, system } => {
            api.update_slice(pb::UpdateSliceRequest {
                slice_id: get(&made.slices, slice),
                description: Some(format!("d{n}")),
                is_system: Some(system),
                ..Default::default()
            })
            .await?;
        }
        Op::DeleteSlice { slice } => {
            api.delete_slice(pb::DeleteRequest {
                id: get(&made.slices, slice),
            })
            .await?;
        }
        Op::SliceNode { slice, node, add } => {
            let request = pb::SliceNodesRequest {
                slice_id: get(&made.slices, slice),
                node_ids: vec![get(&made.nodes, node)],
            };
            match add {
                true => api.add_nodes_to_slice(request).await?,
                false => api.remove_nodes_from_slice(request).await?,
            };
        }
        Op::SlicePerson { slice, person, add } => {
            let request = pb::SlicePersonRequest {
                slice_id: get(&made.slices, slice),
                person_id: get(&made.persons, person),
            };
            match add {
                true => api.add_person_to_slice(request).await?,
                false => api.remove_person_from_slice(request).await?,
            };
        }
    }
    Ok(true)
}
