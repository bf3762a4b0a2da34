//! Statement parts that let the connection keep a statement prepared where
//! diesel's own would not.
//!
//! diesel keeps a statement prepared (per connection) unless some part of
//! it says that its SQL may vary from call to call. A list of binds
//! (`eq_any`, `IN (?, ?, …)` on SQLite) and an upsert's `DO UPDATE` say so,
//! and such a statement is prepared anew at every call. On SQLite that
//! means parsing it and compiling every trigger and foreign-key action it
//! fires, which for a refresh's small writes costs several times more than
//! running them. The parts here say nothing of the kind: [`InList`] is
//! `IN (…)` with its binds padded to a power of two (so a statement has few
//! shapes, each kept by its SQL text), and a cached class's one-row upsert
//! ([`UpsertRow`], its SQL declared with the class) is fixed SQL.

use std::marker::PhantomData;

use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, Bool, HasSqlType, SingleValue};
use diesel::sqlite::Sqlite;

use crate::error::Result;
use crate::store::{Db, DbConn};

/// `column IN (values)`: on SQLite a list of binds padded to the next power
/// of two by repeating the last value (a repeated value changes no result),
/// on PostgreSQL `column = ANY(array)`. Built by [`in_list`].
#[derive(Debug, Clone)]
pub struct InList<C, T> {
    column: C,
    values: Vec<T>,
}

/// `column IN (values)`, as a statement the connection keeps prepared.
pub fn in_list<C, T>(column: C, values: impl Into<Vec<T>>) -> InList<C, T> {
    InList {
        column,
        values: values.into(),
    }
}

// `Bool` for a nullable column too: a NULL is in no list, which a filter
// takes as false either way.
impl<C: Expression, T> Expression for InList<C, T> {
    type SqlType = Bool;
}

impl<C, T> ValidGrouping<()> for InList<C, T>
where
    C: ValidGrouping<(), IsAggregate = is_aggregate::No>,
{
    type IsAggregate = is_aggregate::No;
}

impl<C: AppearsOnTable<QS>, T, QS> AppearsOnTable<QS> for InList<C, T> where InList<C, T>: Expression
{}

impl<C: SelectableExpression<QS>, T, QS> SelectableExpression<QS> for InList<C, T> where
    InList<C, T>: AppearsOnTable<QS>
{
}

impl<C, T> QueryId for InList<C, T> {
    type QueryId = ();
    // The SQL varies with the length of the list: kept by its text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C, T> QueryFragment<Sqlite> for InList<C, T>
where
    C: Expression + QueryFragment<Sqlite>,
    C::SqlType: SingleValue,
    Sqlite: HasSqlType<C::SqlType>,
    T: ToSql<C::SqlType, Sqlite>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let Some(last) = self.values.last() else {
            out.push_sql("1=0");
            return Ok(());
        };
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(" IN (");
        let padded = self.values.len().next_power_of_two();
        for i in 0..padded {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<C::SqlType, T>(self.values.get(i).unwrap_or(last))?;
        }
        out.push_sql(")");
        Ok(())
    }
}

impl<C, T> QueryFragment<Pg> for InList<C, T>
where
    C: Expression + QueryFragment<Pg>,
    C::SqlType: SingleValue,
    Pg: HasSqlType<Array<C::SqlType>>,
    Vec<T>: ToSql<Array<C::SqlType>, Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(" = ANY(");
        out.push_bind_param::<Array<C::SqlType>, Vec<T>>(&self.values)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The statement that upserts one row of a cached class `C` (declared with
/// the class, whose type keys the prepared statement): its peer's id, the
/// peer's id of the object, its fields and the time stamp of the write.
#[derive(Debug)]
pub struct UpsertRow<'a, C, F> {
    /// The peer the row is cached from.
    pub(crate) peer_id: i64,
    /// The peer's id of the object.
    pub(crate) peer_object_id: i64,
    /// The row's synced columns.
    pub(crate) fields: &'a F,
    /// The time stamp of the write (for the classes that keep one).
    pub(crate) now: i64,
    /// The class.
    pub(crate) class: PhantomData<C>,
}

impl<'a, C, F> UpsertRow<'a, C, F> {
    /// The upsert of `row` (the peer's id of the object and its fields),
    /// cached from peer `peer_id`, stamped `now`.
    pub fn new(peer_id: i64, row: &'a (i64, F), now: i64) -> Self {
        UpsertRow {
            peer_id,
            peer_object_id: row.0,
            fields: &row.1,
            now,
            class: PhantomData,
        }
    }
}

impl<C: 'static, F> QueryId for UpsertRow<'_, C, F> {
    type QueryId = C;
}

impl<C, F, Conn> diesel::RunQueryDsl<Conn> for UpsertRow<'_, C, F> {}

/// Upserts `rows` of class `C` cached from peer `peer_id`, one statement
/// per row, each kept prepared, stamped `now`; returns the rows written.
/// On SQLite the rows are written in one go on the database's thread.
pub async fn upsert_each<C, F>(
    conn: &mut DbConn,
    peer_id: i64,
    rows: &[(i64, F)],
    now: i64,
) -> Result<usize>
where
    C: Send + 'static,
    F: Clone + Send + Sync + 'static,
    for<'a> UpsertRow<'a, C, F>: QueryFragment<Sqlite> + QueryFragment<Pg> + QueryId,
{
    match conn.db() {
        Db::Sqlite(c) => {
            let rows = rows.to_vec();
            Ok(c.spawn_blocking(move |sync| {
                rows.iter().try_fold(0, |written, row| {
                    Ok(written
                        + diesel::RunQueryDsl::execute(UpsertRow::new(peer_id, row, now), sync)?)
                })
            })
            .await?)
        }
        Db::Pg(c) => {
            let mut written = 0;
            for row in rows {
                written += diesel_async::RunQueryDsl::execute(UpsertRow::new(peer_id, row, now), c)
                    .await?;
            }
            Ok(written)
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::query_builder::QueryFragment;

    use super::*;
    use crate::store::cache::{CachedSites, SiteFields};
    use crate::store::schema::sites;

    fn ids_among(ids: Vec<i64>) -> impl QueryFragment<Sqlite> + QueryFragment<Pg> {
        sites::table
            .filter(in_list(sites::site_id, ids))
            .select(sites::site_id)
    }

    #[test]
    fn an_in_list_is_padded_to_a_power_of_two_on_sqlite_and_an_array_on_postgresql() {
        let sqlite = diesel::debug_query::<Sqlite, _>(&ids_among(vec![7, 8, 9])).to_string();
        assert!(
            sqlite.contains("IN (?, ?, ?, ?)") && sqlite.ends_with("binds: [7, 8, 9, 9]"),
            "{sqlite}"
        );
        let one = diesel::debug_query::<Sqlite, _>(&ids_among(vec![7])).to_string();
        assert!(
            one.contains("IN (?)") && one.ends_with("binds: [7]"),
            "{one}"
        );
        let none = diesel::debug_query::<Sqlite, _>(&ids_among(vec![])).to_string();
        assert!(none.contains("WHERE 1=0"), "{none}");
        let pg = diesel::debug_query::<Pg, _>(&ids_among(vec![7, 8, 9])).to_string();
        assert!(pg.contains("= ANY($1)"), "{pg}");
    }

    #[test]
    fn the_statements_may_be_kept_prepared_where_diesels_own_may_not() {
        let ours = ids_among(vec![1, 2, 3]);
        let diesels = sites::table
            .filter(sites::site_id.eq_any(vec![1, 2, 3]))
            .select(sites::site_id);
        assert!(QueryFragment::<Sqlite>::is_safe_to_cache_prepared(&ours, &Sqlite).unwrap());
        assert!(!QueryFragment::<Sqlite>::is_safe_to_cache_prepared(&diesels, &Sqlite).unwrap());

        let row = (42, site_fields());
        let upsert = UpsertRow::<CachedSites, SiteFields>::new(1, &row, 1_000);
        assert!(QueryFragment::<Sqlite>::is_safe_to_cache_prepared(&upsert, &Sqlite).unwrap());
        assert!(QueryFragment::<Pg>::is_safe_to_cache_prepared(&upsert, &Pg).unwrap());
    }

    #[test]
    fn a_row_upsert_writes_every_synced_column_and_stamps_it() {
        let row = (42, site_fields());
        let upsert = UpsertRow::<CachedSites, SiteFields>::new(1, &row, 1_000);
        let sql = diesel::debug_query::<Pg, _>(&upsert).to_string();
        assert!(
            sql.starts_with("INSERT INTO sites (peer_id, peer_site_id, login_base, name,"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "ON CONFLICT (peer_id, peer_site_id) DO UPDATE SET login_base = excluded.login_base, name = excluded.name"
            ),
            "{sql}"
        );
        assert!(sql.contains(", last_updated = $"), "{sql}");
        assert!(sql.contains("\"site-one\""), "{sql}");
    }

    fn site_fields() -> SiteFields {
        SiteFields {
            login_base: "one".into(),
            name: "site-one".into(),
            abbreviated_name: String::new(),
            enabled: true,
            is_public: true,
            max_slices: 10,
            max_slivers: 1000,
            latitude: None,
            longitude: None,
            url: String::new(),
            ext_consortium_id: None,
            sync_digest: None,
        }
    }
}
