//! Memberships: the link tables between objects.
//!
//! One section per link table (`person_site`, `person_role`; slice members
//! and slice nodes belong here too). Each function changes one table and
//! trusts its caller to have checked that both ends exist and may be
//! changed. Adding a link that exists leaves it as it is (except for the
//! primary flag a caller asks for); removing one that does not exist
//! changes nothing.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::schema::{person_role, person_site};
use crate::error::Result;
use crate::with_db;

// person_site ---------------------------------------------------------------

/// Affiliates a person with a site. With `is_primary` the site becomes the
/// person's primary site and the previous primary site, if any, is demoted:
/// two statements, to run in a transaction (a partial unique index allows
/// one primary site per person). Without it an existing link keeps its flag.
pub async fn add_person_site(
    conn: &mut DbConn,
    person_id: i64,
    site_id: i64,
    is_primary: bool,
) -> Result<()> {
    let link = (
        person_site::person_id.eq(person_id),
        person_site::site_id.eq(site_id),
        person_site::is_primary.eq(is_primary),
    );
    if is_primary {
        with_db!(conn, |c| {
            diesel::update(
                person_site::table
                    .filter(person_site::person_id.eq(person_id))
                    .filter(person_site::site_id.ne(site_id))
                    .filter(person_site::is_primary),
            )
            .set(person_site::is_primary.eq(false))
            .execute(c)
            .await
        })?;
        with_db!(conn, |c| {
            diesel::insert_into(person_site::table)
                .values(link)
                .on_conflict((person_site::person_id, person_site::site_id))
                .do_update()
                .set(person_site::is_primary.eq(true))
                .execute(c)
                .await
        })?;
    } else {
        with_db!(conn, |c| {
            diesel::insert_into(person_site::table)
                .values(link)
                .on_conflict_do_nothing()
                .execute(c)
                .await
        })?;
    }
    Ok(())
}

/// Removes a person from a site; returns the number of links removed (0 or 1).
/// When it was the person's primary site, the person has none left.
pub async fn remove_person_site(conn: &mut DbConn, person_id: i64, site_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(person_site::table.find((person_id, site_id)))
            .execute(c)
            .await
    })?)
}

// person_role ---------------------------------------------------------------

/// Grants a role to a person; returns the number of links added (0 or 1).
pub async fn add_person_role(conn: &mut DbConn, person_id: i64, role_id: i32) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(person_role::table)
            .values((
                person_role::person_id.eq(person_id),
                person_role::role_id.eq(role_id),
            ))
            .on_conflict_do_nothing()
            .execute(c)
            .await
    })?)
}

/// Revokes a role from a person; returns the number of links removed (0 or 1).
pub async fn remove_person_role(conn: &mut DbConn, person_id: i64, role_id: i32) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(person_role::table.find((person_id, role_id)))
            .execute(c)
            .await
    })?)
}
