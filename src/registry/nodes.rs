//! Nodes: the translations of a node (a peer's message → its fields,
//! checked by the same rules as an admin's; fields → the message served to
//! peers and the admin API's message) and the admin API's operations
//! (create, read, update, delete, and the slice whitelist of a node).
//!
//! A node belongs to a local site; its hostname is a lowercase DNS name,
//! unique in the registry; its node type and boot state are values of the
//! `node_types` and `boot_states` tables. Node secrets are never returned.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, slices as slice_ops, validate};
use crate::store::cache::{self, Enumeration, NodeFieldChanges, NodeFields};
use crate::store::nodes::{self, NewNode, NodeChanges, NodeRelations, NodeRow};
use crate::store::sites;
use crate::store::{DbConn, Store, now};

/// Node type of a node created without one.
pub const DEFAULT_NODE_TYPE: &str = "regular";
/// Boot state of a node created without one.
pub const DEFAULT_BOOT_STATE: &str = "boot";

/// Longest run level, model, version and SSH host key accepted.
const MAX_RUN_LEVEL: usize = 32;
const MAX_MODEL: usize = 255;
const MAX_VERSION: usize = 64;
const MAX_SSH_RSA_KEY: usize = 1024;

/// The values a node's enumerated fields may take (the `node_types` and
/// `boot_states` tables).
#[derive(Debug, Clone, Default)]
pub struct NodeEnumerations {
    /// Known boot states.
    pub boot_states: HashSet<String>,
    /// Known node types.
    pub node_types: HashSet<String>,
}

impl NodeEnumerations {
    /// Reads them.
    pub async fn load(conn: &mut DbConn) -> Result<NodeEnumerations> {
        Ok(NodeEnumerations {
            boot_states: cache::known_values(conn, Enumeration::BootStates).await?,
            node_types: cache::known_values(conn, Enumeration::NodeTypes).await?,
        })
    }
}

/// Builds `$target` from `$src`, copying the columns a node's fields share
/// by name and type with its peer and admin messages and its create
/// request (and, as `optional`, its update request).
macro_rules! node_fields {
    ($src:ident => $($target:tt)*) => {
        copy_fields!([hostname, model, version, ssh_rsa_key] $src => $($target)*)
    };
}

/// A node's fields checked by the rules every node obeys, whether an admin
/// writes it or a peer sends it; normalised. The site is the caller's to
/// check.
pub fn checked(mut f: NodeFields, known: &NodeEnumerations) -> Result<NodeFields> {
    f.hostname = validate::hostname(&f.hostname)?;
    f.node_type = validate::one_of("node_type", &f.node_type, &known.node_types)?;
    f.boot_state = validate::one_of("boot_state", &f.boot_state, &known.boot_states)?;
    f.run_level = validate::optional_text("run_level", &f.run_level, MAX_RUN_LEVEL)?;
    f.model = validate::optional_text("model", &f.model, MAX_MODEL)?;
    f.version = validate::optional_text("version", &f.version, MAX_VERSION)?;
    f.ssh_rsa_key = validate::optional_text("ssh_rsa_key", &f.ssh_rsa_key, MAX_SSH_RSA_KEY)?;
    Ok(f)
}

/// The fields of a node a peer sent, at the local site `site_id` (the
/// caller's translation of the peer's site id), [`checked`].
pub fn from_peer(
    n: pb::ExportedNode,
    site_id: i64,
    known: &NodeEnumerations,
) -> Result<NodeFields> {
    checked(
        node_fields!(n => NodeFields {
        sync_digest: None,
            site_id,
            node_type: n.node_type,
            boot_state: n.boot_state,
            run_level: n.run_level,
            verified: n.verified,
        }),
        known,
    )
}

/// A local node as it is served to peers.
pub fn to_peer(node_id: i64, f: NodeFields) -> pb::ExportedNode {
    node_fields!(f => pb::ExportedNode {
        node_id,
        site_id: f.site_id,
        node_type: f.node_type,
        boot_state: f.boot_state,
        run_level: f.run_level,
        verified: f.verified,
    })
}

/// The admin API's message of a stored node with its relations.
pub fn to_message(row: NodeRow, rel: NodeRelations) -> pb::Node {
    let f = row.fields;
    node_fields!(f => pb::Node {
        node_id: row.node_id,
        site_id: f.site_id,
        node_type: f.node_type,
        boot_state: f.boot_state,
        run_level: f.run_level,
        verified: f.verified,
        origin: registry::origin(row.peer_id, row.peer_node_id),
        date_created: registry::timestamp(row.date_created),
        last_updated: registry::timestamp(row.last_updated),
        last_contact: row.last_contact.and_then(registry::timestamp),
        slice_ids: rel.slice_ids,
        slice_ids_whitelist: rel.slice_ids_whitelist,
    })
}

/// Reads a node's relations and returns it as a message.
pub async fn load(conn: &mut DbConn, row: NodeRow) -> Result<pb::Node> {
    let mut rels = nodes::relations(conn, &[row.node_id]).await?;
    let rel = rels.remove(&row.node_id).unwrap_or_default();
    Ok(to_message(row, rel))
}

/// The node with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, node_id: i64) -> Result<NodeRow> {
    nodes::by_id(conn, node_id)
        .await?
        .ok_or_else(|| Error::not_found("node", "node_id", node_id))
}

/// Fails with FAILED_PRECONDITION when the node is cached from a peer.
pub fn require_local(node: &NodeRow) -> Result<()> {
    registry::require_local("node", &node.fields.hostname, node.peer_id)
}

async fn ensure_hostname_free(conn: &mut DbConn, hostname: &str) -> Result<()> {
    match nodes::by_hostname(conn, hostname).await? {
        Some(_) => Err(Error::exists("hostname", hostname)),
        None => Ok(()),
    }
}

/// A node type checked against the `node_types` table.
async fn node_type(conn: &mut DbConn, value: &str) -> Result<String> {
    validate::one_of(
        "node_type",
        value,
        &cache::known_values(conn, Enumeration::NodeTypes).await?,
    )
}

/// A boot state checked against the `boot_states` table.
async fn boot_state(conn: &mut DbConn, value: &str) -> Result<String> {
    validate::one_of(
        "boot_state",
        value,
        &cache::known_values(conn, Enumeration::BootStates).await?,
    )
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.trim().is_empty() {
        default
    } else {
        value
    }
}

/// Creates a local node at a local site.
pub async fn create(store: &Store, req: pb::CreateNodeRequest) -> Result<pb::Node> {
    let now = now();
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let node = NewNode {
                peer_id: None,
                peer_node_id: None,
                fields: checked(
                    node_fields!(req => NodeFields {
        sync_digest: None,
                        site_id: req.site_id,
                        node_type: or_default(&req.node_type, DEFAULT_NODE_TYPE).to_owned(),
                        boot_state: or_default(&req.boot_state, DEFAULT_BOOT_STATE).to_owned(),
                        run_level: String::new(),
                        verified: false,
                    }),
                    &NodeEnumerations::load(c).await?,
                )?,
                date_created: now,
                last_updated: now,
                last_contact: None,
            };
            let site_id = node.fields.site_id;
            let site = sites::by_id(c, site_id)
                .await?
                .ok_or_else(|| Error::not_found("site", "site_id", site_id))?;
            if let Some(peer) = site.peer_id {
                return Err(Error::FailedPrecondition(format!(
                    "site_id {} (site {}) is cached from peer {peer}: nodes are created at local sites only",
                    site.site_id, site.fields.login_base
                )));
            }
            ensure_hostname_free(c, &node.fields.hostname).await?;
            let row = nodes::insert(c, &node).await?;
            load(c, row).await
        })
    })
    .await
}

/// Gets a node by id or hostname.
pub async fn get(store: &Store, req: pb::GetNodeRequest) -> Result<pb::Node> {
    let mut conn = store.read().await?;
    let row = match req.key {
        Some(pb::get_node_request::Key::NodeId(id)) => require(&mut conn, id).await?,
        Some(pb::get_node_request::Key::Hostname(name)) => {
            nodes::by_hostname(&mut conn, &name.trim().to_ascii_lowercase())
                .await?
                .ok_or_else(|| Error::not_found("node", "hostname", name))?
        }
        None => return Err(Error::invalid("key", "", "set node_id or hostname")),
    };
    load(&mut conn, row).await
}

/// Lists nodes.
pub async fn list(store: &Store, req: pb::ListRequest) -> Result<pb::ListNodesResponse> {
    let (nodes, next_page_token) = registry::list::<NodeRow, _>(store, &req, to_message).await?;
    Ok(pb::ListNodesResponse {
        nodes,
        next_page_token,
    })
}

/// Changes a local node.
pub async fn update(store: &Store, mut req: pb::UpdateNodeRequest) -> Result<pb::Node> {
    let text = |field, value: &Option<String>, max| {
        value
            .as_deref()
            .map(|v| validate::optional_text(field, v, max))
            .transpose()
    };
    // The new values are checked in place, by the rules of `checked`; the
    // node type and boot state against their tables, below.
    req.hostname = req
        .hostname
        .as_deref()
        .map(validate::hostname)
        .transpose()?;
    req.run_level = text("run_level", &req.run_level, MAX_RUN_LEVEL)?;
    req.model = text("model", &req.model, MAX_MODEL)?;
    req.version = text("version", &req.version, MAX_VERSION)?;
    req.ssh_rsa_key = text("ssh_rsa_key", &req.ssh_rsa_key, MAX_SSH_RSA_KEY)?;
    let node_id = req.node_id;
    let (new_type, new_state) = (req.node_type.take(), req.boot_state.take());
    let mut changes = NodeChanges {
        fields: node_fields!(req => NodeFieldChanges {
                sync_digest: None,
            site_id: None,
            node_type: None,
            boot_state: None,
            run_level: req.run_level,
            verified: req.verified,
        }),
        last_updated: Some(now()),
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            if let Some(v) = &new_type {
                changes.fields.node_type = Some(node_type(c, v).await?);
            }
            if let Some(v) = &new_state {
                changes.fields.boot_state = Some(boot_state(c, v).await?);
            }
            let current = require(c, node_id).await?;
            require_local(&current)?;
            if let Some(hostname) = &changes.fields.hostname
                && *hostname != current.fields.hostname
            {
                ensure_hostname_free(c, hostname).await?;
            }
            let row = nodes::update(c, node_id, &changes).await?;
            load(c, row).await
        })
    })
    .await
}

/// Deletes a local node with its slice memberships and whitelist.
pub async fn delete(store: &Store, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, req.id).await?;
            require_local(&current)?;
            nodes::delete(c, req.id).await?;
            Ok(pb::DeleteResponse {})
        })
    })
    .await
}

/// The node and slice of a whitelist change, both local, or the error.
async fn whitelist_pair(conn: &mut DbConn, req: &pb::NodeWhitelistRequest) -> Result<NodeRow> {
    let node = require(conn, req.node_id).await?;
    let slice = slice_ops::require(conn, req.slice_id).await?;
    require_local(&node)?;
    slice_ops::require_local(&slice)?;
    Ok(node)
}

/// Puts a local slice on a local node's whitelist; already there is not an
/// error. A node with a whitelist accepts only the slices on it.
pub async fn add_slice_to_whitelist(
    store: &Store,
    req: pb::NodeWhitelistRequest,
) -> Result<pb::Node> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let node = whitelist_pair(c, &req).await?;
            nodes::add_to_whitelist(c, req.node_id, req.slice_id).await?;
            load(c, node).await
        })
    })
    .await
}

/// Takes a slice off a local node's whitelist; not there is not an error.
pub async fn remove_slice_from_whitelist(
    store: &Store,
    req: pb::NodeWhitelistRequest,
) -> Result<pb::Node> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let node = whitelist_pair(c, &req).await?;
            nodes::remove_from_whitelist(c, req.node_id, req.slice_id).await?;
            load(c, node).await
        })
    })
    .await
}
