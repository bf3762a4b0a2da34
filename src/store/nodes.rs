//! Nodes: rows, the queries on them and on their relation ids (slice
//! memberships and slice whitelist).
//!
//! A node's secrets (`boot_nonce`, `node_key`, `session`) are never selected
//! here: [`NodeRow`] leaves them out, so no listing can leak them.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::cache::{NodeFieldChanges, NodeFields};
use super::listing::{Listed, Page};
use super::schema::{node_slice_whitelist, nodes, slice_node};
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::{load_page, with_db};

/// A node as stored, without its secrets: its synced columns
/// ([`NodeFields`]) with its ids and time stamps.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = nodes)]
pub struct NodeRow {
    /// Id in this registry.
    pub node_id: i64,
    /// The peer the node is cached from; `None` for a local node.
    pub peer_id: Option<i64>,
    /// The node's id at that peer.
    pub peer_node_id: Option<i64>,
    /// The columns synced with peers.
    #[diesel(embed)]
    pub fields: NodeFields,
    /// Unix seconds.
    pub date_created: i64,
    /// Unix seconds.
    pub last_updated: i64,
    /// Unix seconds, when the node last contacted its registry.
    pub last_contact: Option<i64>,
}

/// A new node row; its secrets start unset.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = nodes, treat_none_as_default_value = false)]
pub struct NewNode {
    /// The peer the node is cached from; `None` for a local node.
    pub peer_id: Option<i64>,
    /// The node's id at that peer.
    pub peer_node_id: Option<i64>,
    /// The columns synced with peers.
    #[diesel(embed)]
    pub fields: NodeFields,
    /// Unix seconds.
    pub date_created: i64,
    /// Unix seconds.
    pub last_updated: i64,
    /// Unix seconds.
    pub last_contact: Option<i64>,
}

/// Changes to a node; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = nodes)]
pub struct NodeChanges {
    /// New values of the synced columns.
    #[diesel(embed)]
    pub fields: NodeFieldChanges,
    /// Time of the change.
    pub last_updated: Option<i64>,
}

/// Relation ids of a node.
#[derive(Debug, Clone, Default)]
pub struct NodeRelations {
    /// Slices with a sliver on the node.
    pub slice_ids: Vec<i64>,
    /// Slices on the node's whitelist.
    pub slice_ids_whitelist: Vec<i64>,
}

/// Inserts a node; returns the stored row.
pub async fn insert(conn: &mut DbConn, node: &NewNode) -> Result<NodeRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(nodes::table)
            .values(node)
            .returning(NodeRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// The node with this id.
pub async fn by_id(conn: &mut DbConn, node_id: i64) -> Result<Option<NodeRow>> {
    Ok(with_db!(conn, |c| {
        nodes::table
            .find(node_id)
            .select(NodeRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The node with this (lowercase) hostname.
pub async fn by_hostname(conn: &mut DbConn, hostname: &str) -> Result<Option<NodeRow>> {
    Ok(with_db!(conn, |c| {
        nodes::table
            .filter(nodes::hostname.eq(hostname))
            .select(NodeRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The ids among `node_ids` that are nodes, sorted.
pub async fn existing_ids(conn: &mut DbConn, node_ids: &[i64]) -> Result<Vec<i64>> {
    Ok(with_db!(conn, |c| {
        nodes::table
            .filter(in_list(nodes::node_id, node_ids))
            .select(nodes::node_id)
            .order(nodes::node_id)
            .load(c)
            .await
    })?)
}

impl Listed for NodeRow {
    type Relations = NodeRelations;

    fn id(&self) -> i64 {
        self.node_id
    }

    async fn page(conn: &mut DbConn, page: Page) -> Result<Vec<NodeRow>> {
        Ok(load_page!(conn, nodes, node_id, NodeRow, page)?)
    }

    async fn relations(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, NodeRelations>> {
        relations(conn, ids).await
    }
}

/// Applies `changes` to a node; returns the new row.
pub async fn update(conn: &mut DbConn, node_id: i64, changes: &NodeChanges) -> Result<NodeRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(nodes::table.find(node_id))
            .set(changes)
            .returning(NodeRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Deletes a node; its slice memberships and whitelist go with it (cascades).
pub async fn delete(conn: &mut DbConn, node_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(nodes::table.find(node_id)).execute(c).await
    })?)
}

/// Relation ids of the given nodes, in two queries whatever their number.
pub async fn relations(conn: &mut DbConn, node_ids: &[i64]) -> Result<HashMap<i64, NodeRelations>> {
    let mut out: HashMap<i64, NodeRelations> = node_ids
        .iter()
        .map(|&id| (id, NodeRelations::default()))
        .collect();
    let slivers: Vec<(i64, i64)> = with_db!(conn, |c| {
        slice_node::table
            .filter(in_list(slice_node::node_id, node_ids))
            .select((slice_node::node_id, slice_node::slice_id))
            .order((slice_node::node_id, slice_node::slice_id))
            .load(c)
            .await
    })?;
    for (node_id, slice_id) in slivers {
        out.entry(node_id).or_default().slice_ids.push(slice_id);
    }
    let whitelisted: Vec<(i64, i64)> = whitelist_of(conn, node_ids).await?;
    for (node_id, slice_id) in whitelisted {
        out.entry(node_id)
            .or_default()
            .slice_ids_whitelist
            .push(slice_id);
    }
    Ok(out)
}

/// The whitelist entries of the given nodes, as `(node_id, slice_id)`,
/// ordered by node then slice.
pub async fn whitelist_of(conn: &mut DbConn, node_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
    Ok(with_db!(conn, |c| {
        node_slice_whitelist::table
            .filter(in_list(node_slice_whitelist::node_id, node_ids))
            .select((
                node_slice_whitelist::node_id,
                node_slice_whitelist::slice_id,
            ))
            .order((
                node_slice_whitelist::node_id,
                node_slice_whitelist::slice_id,
            ))
            .load(c)
            .await
    })?)
}

/// Every node that has a slice whitelist (few: reserving a node is rare).
pub async fn whitelisted_ids(conn: &mut DbConn) -> Result<HashSet<i64>> {
    let ids: Vec<i64> = with_db!(conn, |c| {
        node_slice_whitelist::table
            .select(node_slice_whitelist::node_id)
            .distinct()
            .load(c)
            .await
    })?;
    Ok(ids.into_iter().collect())
}

/// Puts a slice on a node's whitelist; already there is not an error.
pub async fn add_to_whitelist(conn: &mut DbConn, node_id: i64, slice_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::insert_into(node_slice_whitelist::table)
            .values((
                node_slice_whitelist::node_id.eq(node_id),
                node_slice_whitelist::slice_id.eq(slice_id),
            ))
            .on_conflict_do_nothing()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Takes a slice off a node's whitelist; not there is not an error.
pub async fn remove_from_whitelist(conn: &mut DbConn, node_id: i64, slice_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::delete(
            node_slice_whitelist::table
                .filter(node_slice_whitelist::node_id.eq(node_id))
                .filter(node_slice_whitelist::slice_id.eq(slice_id)),
        )
        .execute(c)
        .await
    })?;
    Ok(())
}
