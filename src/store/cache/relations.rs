//! The membership tables, as pairs of local ids `(owner, member)`:
//! [`RelationTable`] reads a round of owners' pairs and inserts pairs (the loops
//! written once, the statements declared per table by the `relation!`
//! macro); site memberships carry a primary flag and have their own reads
//! and writes.

use std::future::Future;

use diesel::dsl::SqlTypeOf;
use diesel::prelude::*;
use diesel::sql_types::Array;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use super::batch::{CHUNK, IdBatch, IdReads, UNNEST_FROM, in_batch};
use crate::class::Relation;
use crate::error::Result;
use crate::store::schema::{person_key, person_role, person_site, slice_node, slice_person};
use crate::store::{Db, DbConn};
use crate::{execute_batch, load_rows, with_db};

/// A membership table keyed on two ids.
pub trait PairTable {
    /// The relation the table holds.
    const RELATION: Relation;
    /// SQL name of the table and of its two id columns.
    const SQL: (&'static str, &'static str, &'static str);
}

/// A membership table whose rows a refresh reconciles, as pairs of local
/// ids `(owner, member)`: the owner is an object cached from the peer.
///
/// The required methods are one statement each (declared per table by
/// `relation!`); the provided ones run them over batches of owners and
/// chunks of pairs.
pub trait RelationTable: PairTable {
    /// The pairs whose owner is in one batch of owner ids (a range may
    /// hold owners not asked for), by owner.
    fn pairs_in(
        conn: &mut DbConn,
        owners: IdBatch<'_>,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>>> + Send;

    /// Inserts up to `CHUNK` pairs in one multi-row statement.
    fn insert_chunk(
        conn: &mut DbConn,
        pairs: &[(i64, i64)],
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Inserts pairs in one PostgreSQL statement, one array per column.
    fn insert_unnest(
        conn: &mut AsyncPgConnection,
        pairs: &[(i64, i64)],
    ) -> impl Future<Output = Result<usize>> + Send;

    /// The pairs whose owner is one of `owner_ids`, by owner.
    fn for_owners(
        conn: &mut DbConn,
        owner_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, i64)>>> + Send {
        async move {
            let mut out = Vec::new();
            let reads = IdReads::of(owner_ids);
            for &batch in &reads.batches {
                let pairs = Self::pairs_in(conn, batch).await?;
                out.extend(pairs.into_iter().filter(|&(owner, _)| reads.keeps(owner)));
            }
            Ok(out)
        }
    }

    /// Inserts pairs: on PostgreSQL, from `UNNEST_FROM` pairs on, in one
    /// statement; otherwise in chunks of `CHUNK`.
    fn insert(
        conn: &mut DbConn,
        pairs: &[(i64, i64)],
    ) -> impl Future<Output = Result<usize>> + Send {
        async move {
            if pairs.is_empty() {
                return Ok(0);
            }
            if let (Db::Pg(c), true) = (conn.db(), pairs.len() >= UNNEST_FROM) {
                return Self::insert_unnest(c, pairs).await;
            }
            let mut inserted = 0;
            for chunk in pairs.chunks(CHUNK) {
                inserted += Self::insert_chunk(conn, chunk).await?;
            }
            Ok(inserted)
        }
    }
}

/// Declares a two-column membership table whose first column is the
/// owner: its [`PairTable`] and [`RelationTable`] type, each statement written
/// once against the table.
macro_rules! relation {
    (
        $(#[$doc:meta])*
        $name:ident: $table:ident ($a:ident: $a_ty:ty, $b:ident: $b_ty:ty)
    ) => {
        $(#[$doc])*
        pub struct $name;

        impl PairTable for $name {
            const RELATION: Relation = Relation::$name;
            const SQL: (&'static str, &'static str, &'static str) =
                (stringify!($table), stringify!($a), stringify!($b));
        }

        impl RelationTable for $name {
            async fn pairs_in(conn: &mut DbConn, owners: IdBatch<'_>) -> Result<Vec<(i64, i64)>> {
                let pairs: Vec<($a_ty, $b_ty)> = load_rows!(conn, {
                    let query = $table::table
                        .order(($table::$a, $table::$b))
                        .select(($table::$a, $table::$b))
                        .into_boxed();
                    in_batch(query, $table::$a, owners)
                })?;
                Ok(pairs
                    .into_iter()
                    .map(|(a, b)| (i64::from(a), i64::from(b)))
                    .collect())
            }

            async fn insert_chunk(conn: &mut DbConn, pairs: &[(i64, i64)]) -> Result<usize> {
                let values: Vec<_> = pairs
                    .iter()
                    .map(|&(a, b)| ($table::$a.eq(a as $a_ty), $table::$b.eq(b as $b_ty)))
                    .collect();
                Ok(execute_batch!(conn, {
                    diesel::insert_into($table::table).values(values)
                })?)
            }

            async fn insert_unnest(c: &mut AsyncPgConnection, pairs: &[(i64, i64)]) -> Result<usize> {
                let (a, b): (Vec<$a_ty>, Vec<$b_ty>) =
                    pairs.iter().map(|&(a, b)| (a as $a_ty, b as $b_ty)).unzip();
                let query = diesel::sql_query(concat!(
                    "INSERT INTO ", stringify!($table),
                    " (", stringify!($a), ", ", stringify!($b), ") SELECT * FROM UNNEST($1, $2)"
                ))
                .bind::<Array<SqlTypeOf<$table::$a>>, _>(a)
                .bind::<Array<SqlTypeOf<$table::$b>>, _>(b);
                Ok(diesel_async::RunQueryDsl::execute(query, c).await?)
            }
        }
    };
}

relation! {
    /// Keys of cached persons: (person, key).
    PersonKeys: person_key (person_id: i64, key_id: i64)
}

relation! {
    /// Nodes of cached slices, foreign and local: (slice, node).
    SliceNodes: slice_node (slice_id: i64, node_id: i64)
}

relation! {
    /// Persons of cached slices: (slice, person); a refresh reconciles the
    /// pairs whose person is cached from the same peer only.
    SlicePersons: slice_person (slice_id: i64, person_id: i64)
}

relation! {
    /// Roles of cached persons: (person, role).
    PersonRoles: person_role (person_id: i64, role_id: i32)
}

/// Deletes pairs from a relation table, several hundred per statement.
///
/// The pairs are integers formatted into the statement (row values are
/// not expressible in diesel's DSL); nothing from a peer reaches the SQL
/// text but `i64` values.
pub async fn delete_pairs<R: PairTable>(conn: &mut DbConn, pairs: &[(i64, i64)]) -> Result<usize> {
    let (table, a, b) = R::SQL;
    let mut deleted = 0;
    for chunk in pairs.chunks(CHUNK) {
        let values: Vec<String> = chunk.iter().map(|(x, y)| format!("({x},{y})")).collect();
        let sql = format!(
            "DELETE FROM {table} WHERE ({a}, {b}) IN (VALUES {})",
            values.join(",")
        );
        with_db!(conn, |c| c.batch_execute(&sql).await)?;
        deleted += chunk.len();
    }
    Ok(deleted)
}

/// Site memberships `(person, site, is_primary)` of the given persons.
pub async fn person_sites_of(
    conn: &mut DbConn,
    person_ids: &[i64],
) -> Result<Vec<(i64, i64, bool)>> {
    let mut out = Vec::new();
    let reads = IdReads::of(person_ids);
    for &batch in &reads.batches {
        let rows: Vec<(i64, i64, bool)> = load_rows!(conn, {
            let query = person_site::table
                .order((person_site::person_id, person_site::site_id))
                .select((
                    person_site::person_id,
                    person_site::site_id,
                    person_site::is_primary,
                ))
                .into_boxed();
            in_batch(query, person_site::person_id, batch)
        })?;
        out.extend(
            rows.into_iter()
                .filter(|&(person, _, _)| reads.keeps(person)),
        );
    }
    Ok(out)
}

/// Inserts site memberships `(person, site, is_primary)`.
pub async fn insert_person_sites(conn: &mut DbConn, rows: &[(i64, i64, bool)]) -> Result<usize> {
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        let values: Vec<_> = chunk
            .iter()
            .map(|&(p, s, primary)| {
                (
                    person_site::person_id.eq(p),
                    person_site::site_id.eq(s),
                    person_site::is_primary.eq(primary),
                )
            })
            .collect();
        inserted += execute_batch!(conn, {
            diesel::insert_into(person_site::table).values(values)
        })?;
    }
    Ok(inserted)
}

/// The site-membership table, for [`delete_pairs`].
pub struct PersonSites;

impl PairTable for PersonSites {
    const RELATION: Relation = Relation::SitePersons;
    const SQL: (&'static str, &'static str, &'static str) = ("person_site", "person_id", "site_id");
}
