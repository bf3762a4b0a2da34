//! The enumeration tables (key types, boot states, node types,
//! instantiations) and the roles, which peers' values are checked against.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::Result;
use crate::store::DbConn;
use crate::with_db;

/// The values of an enumeration table.
pub async fn known_values(conn: &mut DbConn, table: Enumeration) -> Result<HashSet<String>> {
    use crate::store::schema::{boot_states, key_types, node_types, slice_instantiations};
    let values: Vec<String> = match table {
        Enumeration::KeyTypes => with_db!(conn, |c| key_types::table
            .select(key_types::key_type)
            .load(c)
            .await)?,
        Enumeration::BootStates => with_db!(conn, |c| boot_states::table
            .select(boot_states::boot_state)
            .load(c)
            .await)?,
        Enumeration::NodeTypes => with_db!(conn, |c| node_types::table
            .select(node_types::node_type)
            .load(c)
            .await)?,
        Enumeration::Instantiations => with_db!(conn, |c| slice_instantiations::table
            .select(slice_instantiations::instantiation)
            .load(c)
            .await)?,
    };
    Ok(values.into_iter().collect())
}

/// The role ids this registry knows.
pub async fn known_roles(conn: &mut DbConn) -> Result<HashSet<i32>> {
    use crate::store::schema::roles;
    let ids: Vec<i32> = with_db!(conn, |c| roles::table.select(roles::role_id).load(c).await)?;
    Ok(ids.into_iter().collect())
}

/// The enumeration tables seeded by the migrations.
#[derive(Debug, Clone, Copy)]
pub enum Enumeration {
    /// `key_types`.
    KeyTypes,
    /// `boot_states`.
    BootStates,
    /// `node_types`.
    NodeTypes,
    /// `slice_instantiations`.
    Instantiations,
}
