//! Slices: the translations of a slice (a peer's message → its fields,
//! checked by the same rules as an admin's; fields → the message served to
//! peers and the admin API's message) and the admin API's operations
//! (create, read, update, delete, and their nodes and persons).
//!
//! A slice is named `<login_base>_<rest>` after the local site that owns it;
//! its instantiation is a value of the `slice_instantiations` table.
//!
//! Memberships follow the reference behaviour: the nodes of a slice (local or
//! cached from peers) can be changed only on a local slice, all listed nodes
//! at once or none; a person can join a slice when the slice or the person is
//! local, so local users can be added to a peer's slice.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, validate};
use crate::store::cache::{self, Enumeration, SliceFieldChanges, SliceFields};
use crate::store::sites;
use crate::store::slices::{self, NewSlice, SliceChanges, SliceRelations, SliceRow};
use crate::store::{DbConn, Store, now};
use crate::store::{nodes, persons};

/// Instantiation of a slice created without one.
pub const DEFAULT_INSTANTIATION: &str = "plc-instantiated";
/// Node limit of a slice created without one.
pub const DEFAULT_MAX_NODES: i32 = 100;
/// Lifetime of a slice created without an expiry: four weeks.
pub const DEFAULT_LIFETIME_SECS: i64 = 4 * 7 * 24 * 3600;
/// Most node ids one AddNodesToSlice or RemoveNodesFromSlice may carry.
pub const MAX_NODES_PER_CALL: usize = 10_000;

const MAX_URL: usize = 254;
const MAX_DESCRIPTION: usize = 2048;

/// Builds `$target` from `$src`, copying the columns a slice's fields share
/// by name and type with its peer and admin messages and its create
/// request (and, as `optional`, its update request).
macro_rules! slice_fields {
    ($src:ident => $($target:tt)*) => {
        copy_fields!([url, description] $src => $($target)*)
    };
}

/// A slice's fields checked by the rules every slice obeys, whether an
/// admin writes it or a peer sends it; normalised. The site is the
/// caller's to check, and the name's prefix against it
/// ([`login_base_of`]).
pub fn checked(mut f: SliceFields, instantiations: &HashSet<String>) -> Result<SliceFields> {
    f.name = validate::slice_name(&f.name)?.0;
    f.instantiation = validate::one_of("instantiation", &f.instantiation, instantiations)?;
    f.url = validate::optional_text("url", &f.url, MAX_URL)?;
    f.description = validate::optional_text("description", &f.description, MAX_DESCRIPTION)?;
    f.max_nodes = validate::non_negative("max_nodes", f.max_nodes)?;
    Ok(f)
}

/// The login_base a checked slice name starts with.
pub fn login_base_of(name: &str) -> &str {
    name.split_once('_').map_or(name, |(base, _)| base)
}

/// The fields of a slice a peer sent, at the local site `site_id` and
/// created by the local person `creator_person_id` (the caller's
/// translations of the peer's ids), [`checked`]; its memberships are
/// reconciled apart.
pub fn from_peer(
    s: pb::ExportedSlice,
    site_id: i64,
    creator_person_id: Option<i64>,
    instantiations: &HashSet<String>,
) -> Result<SliceFields> {
    checked(
        slice_fields!(s => SliceFields {
        sync_digest: None,
            site_id,
            name: s.name,
            instantiation: s.instantiation,
            max_nodes: s.max_nodes,
            creator_person_id,
            created: s.created.map(|t| t.seconds).unwrap_or_default(),
            expires: s.expires.map(|t| t.seconds).unwrap_or_default(),
        }),
        instantiations,
    )
}

/// A local slice as it is served to peers, without memberships: the
/// caller reads those in bulk and sets `node_ids` and `person_ids`.
pub fn to_peer(slice_id: i64, f: SliceFields) -> pb::ExportedSlice {
    slice_fields!(f => pb::ExportedSlice {
        slice_id,
        site_id: f.site_id,
        name: f.name,
        instantiation: f.instantiation,
        max_nodes: f.max_nodes,
        creator_person_id: f.creator_person_id,
        created: registry::timestamp(f.created),
        expires: registry::timestamp(f.expires),
        node_ids: Vec::new(),
        person_ids: Vec::new(),
    })
}

/// The admin API's message of a stored slice with its relations.
pub fn to_message(row: SliceRow, rel: SliceRelations) -> pb::Slice {
    let f = row.fields;
    slice_fields!(f => pb::Slice {
        slice_id: row.slice_id,
        site_id: f.site_id,
        name: f.name,
        instantiation: f.instantiation,
        max_nodes: f.max_nodes,
        creator_person_id: f.creator_person_id,
        is_system: row.is_system,
        origin: registry::origin(row.peer_id, row.peer_slice_id),
        created: registry::timestamp(f.created),
        expires: registry::timestamp(f.expires),
        node_ids: rel.node_ids,
        person_ids: rel.person_ids,
    })
}

/// Reads a slice's relations and returns it as a message.
pub async fn load(conn: &mut DbConn, row: SliceRow) -> Result<pb::Slice> {
    let mut rels = slices::relations(conn, &[row.slice_id]).await?;
    let rel = rels.remove(&row.slice_id).unwrap_or_default();
    Ok(to_message(row, rel))
}

/// The slice with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, slice_id: i64) -> Result<SliceRow> {
    slices::by_id(conn, slice_id)
        .await?
        .ok_or_else(|| Error::not_found("slice", "slice_id", slice_id))
}

/// Fails with FAILED_PRECONDITION when the slice is cached from a peer.
pub fn require_local(slice: &SliceRow) -> Result<()> {
    registry::require_local("slice", &slice.fields.name, slice.peer_id)
}

/// An instantiation checked against the `slice_instantiations` table.
async fn instantiation(conn: &mut DbConn, value: &str) -> Result<String> {
    validate::one_of(
        "instantiation",
        value,
        &cache::known_values(conn, Enumeration::Instantiations).await?,
    )
}

/// The local site a new slice name belongs to, by its login_base prefix.
async fn owning_site(conn: &mut DbConn, name: &str, login_base: &str) -> Result<i64> {
    let site = sites::by_login_base(conn, login_base)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "name",
                name,
                format!("the prefix {login_base:?} is not the login_base of any site"),
            )
        })?;
    if let Some(peer) = site.peer_id {
        return Err(Error::FailedPrecondition(format!(
            "name {name:?}: site {login_base} is cached from peer {peer}; slices are created at local sites only"
        )));
    }
    Ok(site.site_id)
}

/// Creates a local slice, owned by the site its name starts with.
pub async fn create(store: &Store, req: pb::CreateSliceRequest) -> Result<pb::Slice> {
    let now = now();
    let expires = match &req.expires {
        Some(ts) => validate::future_time("expires", registry::seconds(ts), now)?,
        None => now + DEFAULT_LIFETIME_SECS,
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let requested = req.instantiation.trim();
            let mut fields = checked(
                slice_fields!(req => SliceFields {
                sync_digest: None,
                            site_id: 0,
                            name: req.name,
                            instantiation: match requested {
                                "" => DEFAULT_INSTANTIATION,
                                other => other,
                            }
                            .to_owned(),
                            max_nodes: req.max_nodes.unwrap_or(DEFAULT_MAX_NODES),
                            creator_person_id: req.creator_person_id,
                            created: now,
                            expires,
                        }),
                &cache::known_values(c, Enumeration::Instantiations).await?,
            )?;
            fields.site_id = owning_site(c, &fields.name, login_base_of(&fields.name)).await?;
            if slices::by_name(c, &fields.name).await?.is_some() {
                return Err(Error::exists("name", &fields.name));
            }
            if let Some(creator) = fields.creator_person_id
                && persons::by_id(c, creator).await?.is_none()
            {
                return Err(Error::not_found("person", "creator_person_id", creator));
            }
            let slice = NewSlice {
                peer_id: None,
                peer_slice_id: None,
                fields,
                is_system: req.is_system,
            };
            let row = slices::insert(c, &slice).await?;
            load(c, row).await
        })
    })
    .await
}

/// Gets a slice by id or name.
pub async fn get(store: &Store, req: pb::GetSliceRequest) -> Result<pb::Slice> {
    let mut conn = store.read().await?;
    let row = match req.key {
        Some(pb::get_slice_request::Key::SliceId(id)) => require(&mut conn, id).await?,
        Some(pb::get_slice_request::Key::Name(name)) => slices::by_name(&mut conn, name.trim())
            .await?
            .ok_or_else(|| Error::not_found("slice", "name", name))?,
        None => return Err(Error::invalid("key", "", "set slice_id or name")),
    };
    load(&mut conn, row).await
}

/// Lists slices.
pub async fn list(store: &Store, req: pb::ListRequest) -> Result<pb::ListSlicesResponse> {
    let (slices, next_page_token) = registry::list::<SliceRow, _>(store, &req, to_message).await?;
    Ok(pb::ListSlicesResponse {
        slices,
        next_page_token,
    })
}

/// Changes a local slice.
pub async fn update(store: &Store, mut req: pb::UpdateSliceRequest) -> Result<pb::Slice> {
    let now = now();
    // The new values are checked in place, by the rules of `checked`; the
    // instantiation against its table, below.
    req.url = req
        .url
        .as_deref()
        .map(|v| validate::optional_text("url", v, MAX_URL))
        .transpose()?;
    req.description = req
        .description
        .as_deref()
        .map(|v| validate::optional_text("description", v, MAX_DESCRIPTION))
        .transpose()?;
    let max_nodes = req
        .max_nodes
        .map(|v| validate::non_negative("max_nodes", v))
        .transpose()?;
    let expires = req
        .expires
        .as_ref()
        .map(|ts| validate::future_time("expires", registry::seconds(ts), now))
        .transpose()?;
    let (slice_id, new_instantiation) = (req.slice_id, req.instantiation.take());
    let mut changes = SliceChanges {
        fields: slice_fields!(req => SliceFieldChanges {
                sync_digest: None,
            site_id: None,
            name: None,
            instantiation: None,
            max_nodes,
            creator_person_id: None,
            created: None,
            expires,
        }),
        is_system: req.is_system,
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            if let Some(v) = &new_instantiation {
                changes.fields.instantiation = Some(instantiation(c, v).await?);
            }
            let current = require(c, slice_id).await?;
            require_local(&current)?;
            let row = slices::update(c, slice_id, &changes).await?;
            load(c, row).await
        })
    })
    .await
}

/// Deletes a local slice with its memberships and whitelist entries.
pub async fn delete(store: &Store, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, req.id).await?;
            require_local(&current)?;
            slices::delete(c, req.id).await?;
            Ok(pb::DeleteResponse {})
        })
    })
    .await
}

/// The node ids of a membership request: at least one, at most
/// [`MAX_NODES_PER_CALL`], sorted and without duplicates.
fn node_ids(req: &pb::SliceNodesRequest) -> Result<Vec<i64>> {
    let ids = validate::id_list("node_ids", &req.node_ids)?;
    if ids.len() > MAX_NODES_PER_CALL {
        return Err(Error::invalid(
            "node_ids",
            format!("{} ids", ids.len()),
            format!("at most {MAX_NODES_PER_CALL} nodes per call"),
        ));
    }
    Ok(ids)
}

/// The local slice of a node membership change, after checking that every
/// listed node exists (NOT_FOUND naming the missing ones otherwise).
async fn slice_and_nodes(conn: &mut DbConn, slice_id: i64, node_ids: &[i64]) -> Result<SliceRow> {
    let slice = require(conn, slice_id).await?;
    require_local(&slice)?;
    let found: BTreeSet<i64> = nodes::existing_ids(conn, node_ids)
        .await?
        .into_iter()
        .collect();
    let missing: Vec<String> = node_ids
        .iter()
        .filter(|id| !found.contains(id))
        .map(i64::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(Error::not_found("node", "node_id", missing.join(", ")));
    }
    Ok(slice)
}

/// Fails with FAILED_PRECONDITION when a node has a slice whitelist that
/// does not hold `slice`: such a node accepts only the slices on it.
async fn check_whitelists(conn: &mut DbConn, slice: &SliceRow, node_ids: &[i64]) -> Result<()> {
    let mut whitelists: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (node_id, slice_id) in nodes::whitelist_of(conn, node_ids).await? {
        whitelists.entry(node_id).or_default().push(slice_id);
    }
    let refused: Vec<String> = whitelists
        .into_iter()
        .filter(|(_, allowed)| !allowed.contains(&slice.slice_id))
        .map(|(node_id, _)| node_id.to_string())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "node_id {} has a slice whitelist without slice {} (slice_id {})",
            refused.join(", "),
            slice.fields.name,
            slice.slice_id
        )))
    }
}

/// Adds nodes (local or cached from peers) to a local slice: all of them or,
/// when one is unknown or refuses the slice, none.
pub async fn add_nodes(store: &Store, req: pb::SliceNodesRequest) -> Result<pb::Slice> {
    let ids = node_ids(&req)?;
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let slice = slice_and_nodes(c, req.slice_id, &ids).await?;
            check_whitelists(c, &slice, &ids).await?;
            slices::add_nodes(c, slice.slice_id, &ids).await?;
            load(c, slice).await
        })
    })
    .await
}

/// Removes nodes from a local slice; nodes not in it are ignored, an
/// unknown node id fails the whole call.
pub async fn remove_nodes(store: &Store, req: pb::SliceNodesRequest) -> Result<pb::Slice> {
    let ids = node_ids(&req)?;
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let slice = slice_and_nodes(c, req.slice_id, &ids).await?;
            slices::remove_nodes(c, slice.slice_id, &ids).await?;
            load(c, slice).await
        })
    })
    .await
}

/// The slice of a person membership change, after checking that both
/// exist (NOT_FOUND) and that at least one of them is local
/// (FAILED_PRECONDITION otherwise: the membership of a peer's person in a
/// peer's slice belongs to that peer).
async fn slice_and_person(conn: &mut DbConn, slice_id: i64, person_id: i64) -> Result<SliceRow> {
    let slice = require(conn, slice_id).await?;
    let person = registry::persons::require(conn, person_id).await?;
    if slice.peer_id.is_some() && person.peer_id.is_some() {
        return Err(Error::FailedPrecondition(format!(
            "slice {} (slice_id {}) and person {} (person_id {}) are both cached from peers: \
             their membership is managed by their authority",
            slice.fields.name, slice.slice_id, person.fields.email, person.person_id
        )));
    }
    Ok(slice)
}

/// Adds a person to a slice, the slice or the person being local; adding a
/// member succeeds and changes nothing.
pub async fn add_person(store: &Store, req: pb::SlicePersonRequest) -> Result<pb::Slice> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let slice = slice_and_person(c, req.slice_id, req.person_id).await?;
            slices::add_person(c, slice.slice_id, req.person_id).await?;
            load(c, slice).await
        })
    })
    .await
}

/// Removes a person from a slice, the slice or the person being local;
/// removing a non-member succeeds and changes nothing.
pub async fn remove_person(store: &Store, req: pb::SlicePersonRequest) -> Result<pb::Slice> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let slice = slice_and_person(c, req.slice_id, req.person_id).await?;
            slices::remove_person(c, slice.slice_id, req.person_id).await?;
            load(c, slice).await
        })
    })
    .await
}
