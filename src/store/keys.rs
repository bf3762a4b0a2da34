//! Keys: rows, and the queries on them and on their owners.
//!
//! A key belongs to one person through `person_key`, whose `key_id` is
//! unique; the key row itself does not name its owner, so that keys and
//! person-key links can be synced from peers as separate classes.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::cache::{KeyFieldChanges, KeyFields};
use super::listing::{Listed, Page};
use super::schema::{keys, person_key};
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::{load_page, with_db};

/// A key as stored: its synced columns ([`KeyFields`]) with its ids.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = keys)]
pub struct KeyRow {
    pub key_id: i64,
    pub peer_id: Option<i64>,
    pub peer_key_id: Option<i64>,
    #[diesel(embed)]
    pub fields: KeyFields,
}

/// A new key row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = keys, treat_none_as_default_value = false)]
pub struct NewKey {
    pub peer_id: Option<i64>,
    pub peer_key_id: Option<i64>,
    #[diesel(embed)]
    pub fields: KeyFields,
}

/// Inserts a key; returns the stored row. The key has no owner until
/// [`set_owner`].
pub async fn insert(conn: &mut DbConn, key: &NewKey) -> Result<KeyRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(keys::table)
            .values(key)
            .returning(KeyRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Gives a key without an owner to `person_id`.
pub async fn set_owner(conn: &mut DbConn, key_id: i64, person_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::insert_into(person_key::table)
            .values((
                person_key::person_id.eq(person_id),
                person_key::key_id.eq(key_id),
            ))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// The key with this id.
pub async fn by_id(conn: &mut DbConn, key_id: i64) -> Result<Option<KeyRow>> {
    Ok(with_db!(conn, |c| {
        keys::table
            .find(key_id)
            .select(KeyRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

impl Listed for KeyRow {
    type Relations = Option<i64>;

    fn id(&self) -> i64 {
        self.key_id
    }

    async fn page(conn: &mut DbConn, page: Page) -> Result<Vec<KeyRow>> {
        Ok(load_page!(conn, keys, key_id, KeyRow, page)?)
    }

    async fn relations(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, Option<i64>>> {
        // A key's one relation: its owner.
        let owners = owners(conn, ids).await?;
        Ok(owners
            .into_iter()
            .map(|(key, person)| (key, Some(person)))
            .collect())
    }
}

/// Applies `changes` to a key; returns the new row.
pub async fn update(conn: &mut DbConn, key_id: i64, changes: &KeyFieldChanges) -> Result<KeyRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(keys::table.find(key_id))
            .set(changes)
            .returning(KeyRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Deletes a key; its owner link goes with it (cascade).
pub async fn delete(conn: &mut DbConn, key_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(keys::table.find(key_id)).execute(c).await
    })?)
}

/// The owners of the given keys, in one query; keys without an owner are
/// missing from the map.
pub async fn owners(conn: &mut DbConn, key_ids: &[i64]) -> Result<HashMap<i64, i64>> {
    let pairs: Vec<(i64, i64)> = with_db!(conn, |c| {
        person_key::table
            .filter(in_list(person_key::key_id, key_ids))
            .select((person_key::key_id, person_key::person_id))
            .load(c)
            .await
    })?;
    Ok(pairs.into_iter().collect())
}
