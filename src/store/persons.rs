//! Persons: rows, and the queries on them and on their relation ids.
//!
//! E-mail addresses are unique per authority (partial unique indexes on
//! local persons and on each peer's persons), so looking a person up by
//! e-mail may find several rows: [`by_email`] prefers the local one.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::cache::{
    self, PersonFieldChanges, PersonFields, PersonKeys, PersonRoles, RelationTable,
};
use super::listing::{Listed, Page};
use super::schema::{keys, person_key, persons, slice_person};
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::{load_page, with_db};

/// A person as stored, secrets included: its synced columns
/// ([`PersonFields`]) with its ids, secrets and time stamps.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = persons)]
pub struct PersonRow {
    pub person_id: i64,
    pub peer_id: Option<i64>,
    pub peer_person_id: Option<i64>,
    #[diesel(embed)]
    pub fields: PersonFields,
    /// PHC string of the argon2 hash; never leaves the registry.
    pub password_hash: Option<String>,
    pub verification_key: Option<String>,
    pub verification_expires: Option<i64>,
    pub date_created: i64,
    pub last_updated: i64,
}

/// A new person row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = persons, treat_none_as_default_value = false)]
pub struct NewPerson {
    pub peer_id: Option<i64>,
    pub peer_person_id: Option<i64>,
    #[diesel(embed)]
    pub fields: PersonFields,
    pub password_hash: Option<String>,
    pub date_created: i64,
    pub last_updated: i64,
}

/// Changes to a person; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = persons)]
pub struct PersonChanges {
    #[diesel(embed)]
    pub fields: PersonFieldChanges,
    pub password_hash: Option<Option<String>>,
    pub last_updated: Option<i64>,
}

/// Relation ids of a person, each list ordered by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonRelations {
    pub role_ids: Vec<i32>,
    pub site_ids: Vec<i64>,
    pub primary_site_id: Option<i64>,
    pub key_ids: Vec<i64>,
    pub slice_ids: Vec<i64>,
}

/// Inserts a person; returns the stored row.
pub async fn insert(conn: &mut DbConn, person: &NewPerson) -> Result<PersonRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(persons::table)
            .values(person)
            .returning(PersonRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// The person with this id.
pub async fn by_id(conn: &mut DbConn, person_id: i64) -> Result<Option<PersonRow>> {
    Ok(with_db!(conn, |c| {
        persons::table
            .find(person_id)
            .select(PersonRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The person with this e-mail: the local one if there is one, otherwise
/// the foreign one with the lowest id.
pub async fn by_email(conn: &mut DbConn, email: &str) -> Result<Option<PersonRow>> {
    Ok(with_db!(conn, |c| {
        persons::table
            .filter(persons::email.eq(email))
            .order((persons::peer_id.is_not_null(), persons::person_id))
            .select(PersonRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The local person with this e-mail.
pub async fn local_by_email(conn: &mut DbConn, email: &str) -> Result<Option<PersonRow>> {
    Ok(with_db!(conn, |c| {
        persons::table
            .filter(persons::email.eq(email))
            .filter(persons::peer_id.is_null())
            .select(PersonRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

impl Listed for PersonRow {
    type Relations = PersonRelations;

    fn id(&self) -> i64 {
        self.person_id
    }

    async fn page(conn: &mut DbConn, page: Page) -> Result<Vec<PersonRow>> {
        Ok(load_page!(conn, persons, person_id, PersonRow, page)?)
    }

    async fn relations(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, PersonRelations>> {
        relations(conn, ids).await
    }
}

/// Applies `changes` to a person; returns the new row.
pub async fn update(
    conn: &mut DbConn,
    person_id: i64,
    changes: &PersonChanges,
) -> Result<PersonRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(persons::table.find(person_id))
            .set(changes)
            .returning(PersonRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Marks a person changed now, after a change to its memberships.
pub async fn touch(conn: &mut DbConn, person_id: i64, now: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::update(persons::table.find(person_id))
            .set(persons::last_updated.eq(now))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Deletes a person and the person's keys, in two statements whatever the
/// number of keys. Site, role and slice memberships go with the person
/// (cascades); slices the person created keep a null creator. Run it in a
/// transaction.
pub async fn delete(conn: &mut DbConn, person_id: i64) -> Result<usize> {
    with_db!(conn, |c| {
        diesel::delete(
            keys::table.filter(
                keys::key_id.eq_any(
                    person_key::table
                        .filter(person_key::person_id.eq(person_id))
                        .select(person_key::key_id),
                ),
            ),
        )
        .execute(c)
        .await
    })?;
    Ok(with_db!(conn, |c| {
        diesel::delete(persons::table.find(person_id))
            .execute(c)
            .await
    })?)
}

/// Relation ids of the given persons, one read per link table (in
/// batches of ids).
pub async fn relations(
    conn: &mut DbConn,
    person_ids: &[i64],
) -> Result<HashMap<i64, PersonRelations>> {
    let mut out: HashMap<i64, PersonRelations> = person_ids
        .iter()
        .map(|&id| (id, PersonRelations::default()))
        .collect();
    // The membership reads the refresh reconciles with, by person.
    for (person_id, role_id) in PersonRoles::for_owners(conn, person_ids).await? {
        // Read back from an INTEGER column.
        out.entry(person_id)
            .or_default()
            .role_ids
            .push(role_id as i32);
    }
    for (person_id, site_id, primary) in cache::person_sites_of(conn, person_ids).await? {
        let rel = out.entry(person_id).or_default();
        rel.site_ids.push(site_id);
        if primary {
            rel.primary_site_id = Some(site_id);
        }
    }
    for (person_id, key_id) in PersonKeys::for_owners(conn, person_ids).await? {
        out.entry(person_id).or_default().key_ids.push(key_id);
    }
    let slices: Vec<(i64, i64)> = with_db!(conn, |c| {
        slice_person::table
            .filter(in_list(slice_person::person_id, person_ids))
            .select((slice_person::person_id, slice_person::slice_id))
            .order((slice_person::person_id, slice_person::slice_id))
            .load(c)
            .await
    })?;
    for (person_id, slice_id) in slices {
        out.entry(person_id).or_default().slice_ids.push(slice_id);
    }
    Ok(out)
}
