//! Change revisions of the exported objects: what a delta `GetPeerData`
//! sends.
//!
//! The migrations' triggers number every change to a local, exported object
//! (created, updated, deleted, a membership changed) in `export_log`, in the
//! transaction of the change; `export_meta` holds the last revision, the
//! database's epoch and the compaction horizon. This module reads them and
//! compacts the log. See the migration `export_revisions` for the triggers.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::schema::{export_log, export_meta};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::with_db;

/// Where the change history of this database stands.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = export_meta)]
pub struct History {
    /// A random name drawn when the database was created.
    pub epoch: String,
    /// The last revision handed out.
    pub revision: i64,
    /// Changes up to this revision were compacted away: a caller whose
    /// checkpoint is older needs a full snapshot.
    pub compacted_through: i64,
}

/// Reads the history's state (inside a snapshot, the state of that
/// snapshot).
pub async fn history(conn: &mut DbConn) -> Result<History> {
    Ok(with_db!(conn, |c| {
        export_meta::table
            .select(History::as_select())
            .first(c)
            .await
    })?)
}

/// The entries the change log holds: one per object changed since the
/// compaction horizon (an object changed again keeps one entry).
pub async fn log_entries(conn: &mut DbConn) -> Result<i64> {
    Ok(with_db!(conn, |c| {
        export_log::table.count().get_result(c).await
    })?)
}

/// The ids of the objects changed after revision `since`, per class, by
/// id.
pub async fn changed_since(conn: &mut DbConn, since: i64) -> Result<PerClass<Vec<i64>>> {
    // Sorted here, not in SQL: with an ORDER BY on the primary key, SQLite
    // prefers walking the whole log in key order to the revision's range.
    let rows: Vec<(i32, i64)> = with_db!(conn, |c| {
        export_log::table
            .filter(export_log::revision.gt(since))
            .select((export_log::kind, export_log::object_id))
            .load(c)
            .await
    })?;
    let mut changed: PerClass<Vec<i64>> = PerClass::default();
    for (code, id) in rows {
        if let Some(class) = Class::of_log_code(code) {
            changed[class].push(id);
        }
    }
    for ids in changed.values_mut() {
        ids.sort_unstable();
    }
    Ok(changed)
}

/// Drops the log entries of changes made before `cutoff` (Unix seconds)
/// and moves the compaction horizon past them; returns the new horizon, or
/// `None` when nothing was old enough. Callers whose checkpoint is older
/// than the horizon get a full snapshot.
pub async fn compact(conn: &mut DbConn, cutoff: i64) -> Result<Option<i64>> {
    conn.transaction(|c| {
        Box::pin(async move {
            let horizon: Option<i64> = with_db!(c, |c| {
                export_log::table
                    .filter(export_log::changed_at.lt(cutoff))
                    .select(diesel::dsl::max(export_log::revision))
                    .first(c)
                    .await
            })?;
            let Some(horizon) = horizon else {
                return Ok(None);
            };
            with_db!(c, |c| {
                diesel::delete(export_log::table.filter(export_log::revision.le(horizon)))
                    .execute(c)
                    .await
            })?;
            with_db!(c, |c| {
                diesel::update(
                    export_meta::table.filter(export_meta::compacted_through.lt(horizon)),
                )
                .set(export_meta::compacted_through.eq(horizon))
                .execute(c)
                .await
            })?;
            Ok(Some(horizon))
        })
    })
    .await
}
