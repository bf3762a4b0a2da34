//! Slices: rows, the queries on them, and their memberships (the nodes of a
//! slice in `slice_node`, the persons of a slice in `slice_person`).
//!
//! Membership changes are set-based: adding or removing any number of nodes
//! is one statement, and adding what is already there (or removing what is
//! not) is not an error.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::cache::{RelationTable, SliceFieldChanges, SliceFields, SliceNodes, SlicePersons};
use super::listing::{Listed, Page};
use diesel::sql_types::BigInt;

use super::schema::{nodes, slice_node, slice_person, slices};
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::{load_page, with_db};

/// A slice as stored: its synced columns ([`SliceFields`]) with its ids
/// and system flag.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = slices)]
pub struct SliceRow {
    /// Id in this registry.
    pub slice_id: i64,
    /// The peer the slice is cached from; `None` for a local slice.
    pub peer_id: Option<i64>,
    /// The slice's id at that peer.
    pub peer_slice_id: Option<i64>,
    /// The columns synced with peers.
    #[diesel(embed)]
    pub fields: SliceFields,
    /// System slices are never exported to peers.
    pub is_system: bool,
}

/// A new slice row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = slices, treat_none_as_default_value = false)]
pub struct NewSlice {
    /// The peer the slice is cached from; `None` for a local slice.
    pub peer_id: Option<i64>,
    /// The slice's id at that peer.
    pub peer_slice_id: Option<i64>,
    /// The columns synced with peers.
    #[diesel(embed)]
    pub fields: SliceFields,
    /// System flag.
    pub is_system: bool,
}

/// Changes to a slice; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = slices)]
pub struct SliceChanges {
    /// New values of the synced columns.
    #[diesel(embed)]
    pub fields: SliceFieldChanges,
    /// New system flag.
    pub is_system: Option<bool>,
}

/// Relation ids of a slice.
#[derive(Debug, Clone, Default)]
pub struct SliceRelations {
    /// Nodes of the slice.
    pub node_ids: Vec<i64>,
    /// Persons of the slice.
    pub person_ids: Vec<i64>,
}

/// Inserts a slice; returns the stored row.
pub async fn insert(conn: &mut DbConn, slice: &NewSlice) -> Result<SliceRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(slices::table)
            .values(slice)
            .returning(SliceRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// The slice with this id.
pub async fn by_id(conn: &mut DbConn, slice_id: i64) -> Result<Option<SliceRow>> {
    Ok(with_db!(conn, |c| {
        slices::table
            .find(slice_id)
            .select(SliceRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The slice with this name.
pub async fn by_name(conn: &mut DbConn, name: &str) -> Result<Option<SliceRow>> {
    Ok(with_db!(conn, |c| {
        slices::table
            .filter(slices::name.eq(name))
            .select(SliceRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

impl Listed for SliceRow {
    type Relations = SliceRelations;

    fn id(&self) -> i64 {
        self.slice_id
    }

    async fn page(conn: &mut DbConn, page: Page) -> Result<Vec<SliceRow>> {
        Ok(load_page!(conn, slices, slice_id, SliceRow, page)?)
    }

    async fn relations(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, SliceRelations>> {
        relations(conn, ids).await
    }
}

/// Applies `changes` to a slice; returns the new row.
pub async fn update(conn: &mut DbConn, slice_id: i64, changes: &SliceChanges) -> Result<SliceRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(slices::table.find(slice_id))
            .set(changes)
            .returning(SliceRow::as_returning())
            .get_result(c)
            .await
    })?)
}

diesel::define_sql_function! {
    /// The characters of a text from a 1-based position on (`substr` on
    /// both backends).
    fn substr(text: diesel::sql_types::Text, from: diesel::sql_types::Integer) -> diesel::sql_types::Text;
}

/// Renames the slices of a site named after its old login_base
/// (`<old_base>_<rest>`) to `<new_base>_<rest>`, when the site's
/// login_base changes; returns how many. Slices with another prefix keep
/// their names.
pub async fn rename_prefix(
    conn: &mut DbConn,
    site_id: i64,
    old_base: &str,
    new_base: &str,
) -> Result<usize> {
    // A login_base holds neither `_` nor `%`: only the separator needs
    // escaping in the pattern.
    let pattern = format!("{old_base}\\_%");
    let rest_from = old_base.len() as i32 + 1;
    let new_prefix = new_base.to_owned();
    Ok(with_db!(conn, |c| {
        diesel::update(
            slices::table
                .filter(slices::site_id.eq(site_id))
                .filter(slices::name.like(&pattern).escape('\\')),
        )
        .set(
            slices::name.eq(new_prefix
                .clone()
                .into_sql::<diesel::sql_types::Text>()
                .concat(substr(slices::name, rest_from))),
        )
        .execute(c)
        .await
    })?)
}

/// The names of a site's slices.
pub async fn names_at_site(conn: &mut DbConn, site_id: i64) -> Result<Vec<String>> {
    Ok(with_db!(conn, |c| {
        slices::table
            .filter(slices::site_id.eq(site_id))
            .select(slices::name)
            .load(c)
            .await
    })?)
}

/// Deletes a slice; its memberships and whitelist entries go with it
/// (cascades).
pub async fn delete(conn: &mut DbConn, slice_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(slices::table.find(slice_id))
            .execute(c)
            .await
    })?)
}

/// Relation ids of the given slices, one read per link table (in batches
/// of ids).
pub async fn relations(
    conn: &mut DbConn,
    slice_ids: &[i64],
) -> Result<HashMap<i64, SliceRelations>> {
    let mut out: HashMap<i64, SliceRelations> = slice_ids
        .iter()
        .map(|&id| (id, SliceRelations::default()))
        .collect();
    // The membership reads the refresh reconciles with, by slice.
    for (slice_id, node_id) in SliceNodes::for_owners(conn, slice_ids).await? {
        out.entry(slice_id).or_default().node_ids.push(node_id);
    }
    for (slice_id, person_id) in SlicePersons::for_owners(conn, slice_ids).await? {
        out.entry(slice_id).or_default().person_ids.push(person_id);
    }
    Ok(out)
}

/// Adds nodes to a slice in one `INSERT ... SELECT`; nodes already in it
/// stay, ids that are not nodes are skipped (callers check them first).
pub async fn add_nodes(conn: &mut DbConn, slice_id: i64, node_ids: &[i64]) -> Result<()> {
    with_db!(conn, |c| {
        let already = slice_node::table
            .filter(slice_node::slice_id.eq(slice_id))
            .filter(slice_node::node_id.eq(nodes::node_id));
        let new_rows = nodes::table
            .filter(in_list(nodes::node_id, node_ids))
            .filter(diesel::dsl::not(diesel::dsl::exists(already)))
            .select((slice_id.into_sql::<BigInt>(), nodes::node_id));
        diesel::insert_into(slice_node::table)
            .values(new_rows)
            .into_columns((slice_node::slice_id, slice_node::node_id))
            .on_conflict_do_nothing()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Removes nodes from a slice in one statement; nodes not in it are ignored.
pub async fn remove_nodes(conn: &mut DbConn, slice_id: i64, node_ids: &[i64]) -> Result<()> {
    with_db!(conn, |c| {
        diesel::delete(
            slice_node::table
                .filter(slice_node::slice_id.eq(slice_id))
                .filter(in_list(slice_node::node_id, node_ids)),
        )
        .execute(c)
        .await
    })?;
    Ok(())
}

/// Adds a person to a slice; already a member is not an error.
pub async fn add_person(conn: &mut DbConn, slice_id: i64, person_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::insert_into(slice_person::table)
            .values((
                slice_person::slice_id.eq(slice_id),
                slice_person::person_id.eq(person_id),
            ))
            .on_conflict_do_nothing()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Removes a person from a slice; not a member is not an error.
pub async fn remove_person(conn: &mut DbConn, slice_id: i64, person_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::delete(
            slice_person::table
                .filter(slice_person::slice_id.eq(slice_id))
                .filter(slice_person::person_id.eq(person_id)),
        )
        .execute(c)
        .await
    })?;
    Ok(())
}
