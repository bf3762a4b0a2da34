//! Stored digests ([`crate::peering::digest`]) and their sums over ranges
//! of ids: the exported objects' in `export_digests` (as of the revision
//! in `export_digest_meta`), a peer's cached objects' in the `sync_digest`
//! column of their rows. See the migration `digests`.
//!
//! The range queries are written once, in SQL both backends read alike
//! but for how a list of ranges meets a class's rows (`per_range`),
//! from integers this module computes (no text from a caller reaches
//! them). A cached row whose digest was cleared counts as digest -1, so
//! that it differs from any digest a peer sends.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use super::schema::{export_digest_meta, export_digests, person_key, persons, sync_applying};
use super::{BackendKind, DbConn};
use crate::class::Class;
use crate::error::Result;
use crate::proto::v1 as pb;
use crate::store::cache::CachedClass;
use crate::store::prepared::in_list;
use crate::{execute_batch, load_rows, with_class, with_db};

/// Rows written per statement.
const CHUNK: usize = 2000;

/// Whose digests a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This registry's exported objects.
    Exported,
    /// The objects cached from this peer, by the peer's ids.
    Cached(i64),
}

/// The table, id column, digest expression and filter of a class's
/// digests on one side.
struct Source {
    table: &'static str,
    id: &'static str,
    digest: &'static str,
    filter: String,
}

impl Source {
    fn of(class: Class, side: Side) -> Source {
        match side {
            Side::Exported => Source {
                table: "export_digests",
                id: "object_id",
                digest: "digest",
                filter: format!("kind = {}", class.log_code()),
            },
            Side::Cached(peer_id) => with_class!(class, K => Source {
                table: K::TABLE,
                id: K::PEER_COLUMN,
                digest: "COALESCE(sync_digest, -1)",
                filter: format!("peer_id = {peer_id}"),
            }),
        }
    }

    /// The aggregates of one bucket: its count, the sum of its digests and
    /// its first and last ids.
    fn aggregates(&self) -> String {
        format!(
            "COUNT(*) AS count, CAST(COALESCE(SUM({digest}), 0) AS BIGINT) AS sum, \
             MIN({id}) AS min_id, MAX({id}) AS max_id",
            digest = self.digest,
            id = self.id,
        )
    }
}

/// One bucket as the range query reads it, with the index of its range.
#[derive(Debug, QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = BigInt)]
    range_index: i64,
    #[diesel(sql_type = BigInt)]
    bucket: i64,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = BigInt)]
    sum: i64,
    #[diesel(sql_type = BigInt)]
    min_id: i64,
    #[diesel(sql_type = BigInt)]
    max_id: i64,
}

/// One object's digest as the list query reads it, with the index of its
/// range.
#[derive(Debug, QueryableByName)]
struct ListedRow {
    #[diesel(sql_type = BigInt)]
    range_index: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    digest: i64,
}

/// How a range of ids splits into buckets: `count` buckets of `width` ids
/// from `first` (the last one may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    first: i64,
    last: i64,
    width: i64,
}

impl Split {
    /// Splits `first..=last` into at most `buckets` buckets (at least one);
    /// `None` when the range is empty, or too wide to split (its width
    /// overflows 64 bits) into more than one bucket.
    pub fn new(first: i64, last: i64, buckets: u32) -> Option<Split> {
        if first > last {
            return None;
        }
        if buckets <= 1 {
            return Some(Split {
                first,
                last,
                width: 0,
            });
        }
        let span = i128::from(last) - i128::from(first) + 1;
        let width = (span + i128::from(buckets) - 1) / i128::from(buckets);
        let width = i64::try_from(width).ok()?;
        // The query computes `id - first`, which must not overflow.
        last.checked_sub(first)?;
        Some(Split { first, last, width })
    }

    /// The id range of bucket `index`.
    fn range(&self, index: i64) -> (i64, i64) {
        if self.width == 0 {
            return (self.first, self.last);
        }
        let start = i128::from(self.first) + i128::from(index) * i128::from(self.width);
        let end = (start + i128::from(self.width) - 1).min(i128::from(self.last));
        (start as i64, end as i64)
    }
}

/// The condition that `id` is in `first..=last`, leaving out the bounds
/// of the 64-bit range (PostgreSQL reads `-9223372036854775808` as a
/// numeric, which would keep the query off the index).
fn within(id: &str, first: i64, last: i64) -> String {
    let mut condition = String::new();
    if first != i64::MIN {
        condition += &format!(" AND {id} >= {first}");
    }
    if last != i64::MAX {
        condition += &format!(" AND {id} <= {last}");
    }
    condition
}

/// Sizes PostgreSQL's work for the digest queries of the transaction
/// under way: the planner cannot tell that a range's buckets are few (it
/// guesses one group per object), so with the default `work_mem` it sorts
/// a whole class on disk to group it, where hashing in memory takes half
/// the time; and a class's scan runs in one process, as the classes are
/// compared at the same time already. Nothing on SQLite.
pub async fn size_aggregates(conn: &mut DbConn) -> Result<()> {
    if let crate::store::Db::Pg(c) = conn.db() {
        diesel_async::SimpleAsyncConnection::batch_execute(
            c,
            "SET LOCAL work_mem = '32MB'; SET LOCAL max_parallel_workers_per_gather = 0",
        )
        .await?;
    }
    Ok(())
}

/// The non-empty buckets of each of `splits` for `class` on `side`, by
/// id: one range is read with its bounds in the statement (a scan the
/// planner sizes from them), several in one statement over the list of
/// ranges (`per_range`).
pub async fn buckets(
    conn: &mut DbConn,
    class: Class,
    side: Side,
    splits: &[Split],
) -> Result<Vec<Vec<pb::DigestBucket>>> {
    let s = Source::of(class, side);
    let sql = match splits {
        [] => return Ok(Vec::new()),
        [split] => {
            let bucket = match split.width {
                0 => "CAST(0 AS BIGINT)".to_owned(),
                width => format!("({} - {}) / {width}", s.id, split.first),
            };
            format!(
                "SELECT CAST(0 AS BIGINT) AS range_index, {bucket} AS bucket, {aggregates} \
                 FROM {table} WHERE {filter}{within} GROUP BY 2 ORDER BY 2",
                aggregates = s.aggregates(),
                table = s.table,
                filter = s.filter,
                within = within(s.id, split.first, split.last),
            )
        }
        splits => {
            let values: Vec<String> = splits
                .iter()
                .enumerate()
                .map(|(i, split)| {
                    format!(
                        "({i}, {}, {}, {})",
                        bigint(split.first),
                        bigint(split.last),
                        split.width
                    )
                })
                .collect();
            let bucket = format!(
                "CASE WHEN r.width = 0 THEN CAST(0 AS BIGINT) ELSE ({} - r.lo) / r.width END",
                s.id
            );
            let rows = per_range(
                conn,
                &s,
                &format!("{bucket} AS bucket, {}", s.aggregates()),
                PerRange::Grouped,
            );
            format!(
                "WITH r (range_index, lo, hi, width) AS (VALUES {values}) \
                 SELECT CAST(r.range_index AS BIGINT) AS range_index, {rows} ORDER BY 1, 2",
                values = values.join(", "),
            )
        }
    };
    let rows: Vec<BucketRow> = load_rows!(conn, diesel::sql_query(sql))?;
    let mut out = vec![Vec::new(); splits.len()];
    for r in rows {
        let Some((split, list)) = usize::try_from(r.range_index)
            .ok()
            .and_then(|i| Some((splits.get(i)?, out.get_mut(i)?)))
        else {
            continue;
        };
        let (first_id, last_id) = split.range(r.bucket);
        list.push(pb::DigestBucket {
            first_id,
            last_id,
            count: r.count,
            sum: r.sum,
            min_id: r.min_id,
            max_id: r.max_id,
        });
    }
    Ok(out)
}

/// `value` as a 64-bit integer in SQL, whatever its size (PostgreSQL reads
/// `-9223372036854775808` alone as a numeric).
fn bigint(value: i64) -> String {
    format!("CAST({value} AS BIGINT)")
}

/// What a query over a list of ranges reads of each range.
enum PerRange {
    /// Its rows grouped by the first column selected.
    Grouped,
    /// Its first rows by id, at most this many on PostgreSQL.
    First(usize),
}

/// The rest of a `SELECT` of `columns` over a list `r` of ranges
/// (`r.lo..=r.hi`) joined with the rows of each, after `SELECT
/// r.range_index, `. On PostgreSQL, a `LATERAL` query of one range run
/// once per range: an index scan of that range whatever the planner
/// estimates for the list (joined plainly, it may scan the whole class
/// once per range). On SQLite, a join on the id, which it plans as a range
/// scan per listed range.
fn per_range(conn: &DbConn, s: &Source, columns: &str, per: PerRange) -> String {
    let (table, filter, id) = (s.table, &s.filter, s.id);
    match conn.kind() {
        BackendKind::Postgres => {
            let tail = match per {
                PerRange::Grouped => " GROUP BY 1".to_owned(),
                PerRange::First(limit) => format!(" ORDER BY {id} LIMIT {limit}"),
            };
            format!(
                "d.* FROM r CROSS JOIN LATERAL (SELECT {columns} FROM {table} \
                 WHERE {filter} AND {id} BETWEEN r.lo AND r.hi{tail}) d"
            )
        }
        BackendKind::Sqlite => {
            let tail = match per {
                PerRange::Grouped => " GROUP BY 1, 2",
                PerRange::First(_) => "",
            };
            format!(
                "{columns} FROM r JOIN {table} ON {filter} AND {id} BETWEEN r.lo AND r.hi{tail}"
            )
        }
    }
}

/// The digests of the objects of `class` on `side` in each of `ranges`
/// (`first..=last`), by id, in one query; at most `per_range_limit` of a
/// range on PostgreSQL (SQLite reads them all) and `limit` in all (one
/// more of either tells the caller there are too many). Objects in no
/// range are left out; an object in several ranges is listed in each.
pub async fn lists(
    conn: &mut DbConn,
    class: Class,
    side: Side,
    ranges: &[(i64, i64)],
    per_range_limit: usize,
    limit: usize,
) -> Result<Vec<Vec<pb::ObjectDigest>>> {
    let mut out = vec![Vec::new(); ranges.len()];
    if ranges.is_empty() {
        return Ok(out);
    }
    let s = Source::of(class, side);
    let columns = format!("{} AS id, {} AS digest", s.id, s.digest);
    let sql = match ranges {
        // One range (a whole class, read to split it by rank): read in the
        // index's order, where the list's form below sorts every row.
        [(first, last)] => format!(
            "SELECT CAST(0 AS BIGINT) AS range_index, {columns} FROM {table} \
             WHERE {filter} AND {id} BETWEEN {first} AND {last} ORDER BY {id} LIMIT {limit}",
            table = s.table,
            filter = s.filter,
            id = s.id,
            first = bigint(*first),
            last = bigint(*last),
            limit = limit.min(per_range_limit),
        ),
        _ => {
            let values: Vec<String> = ranges
                .iter()
                .enumerate()
                .map(|(i, (first, last))| format!("({i}, {}, {})", bigint(*first), bigint(*last)))
                .collect();
            let rows = per_range(conn, &s, &columns, PerRange::First(per_range_limit));
            format!(
                "WITH r (range_index, lo, hi) AS (VALUES {values}) \
                 SELECT CAST(r.range_index AS BIGINT) AS range_index, {rows} \
                 ORDER BY 1, 2 LIMIT {limit}",
                values = values.join(", "),
            )
        }
    };
    let rows: Vec<ListedRow> = load_rows!(conn, diesel::sql_query(sql))?;
    for r in rows {
        if let Some(list) = usize::try_from(r.range_index)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            list.push(pb::ObjectDigest {
                id: r.id,
                digest: r.digest,
            });
        }
    }
    Ok(out)
}

/// The checkpoint the exported digests reflect: (epoch, revision); an
/// empty epoch before the first digests were computed.
pub async fn exported_checkpoint(conn: &mut DbConn) -> Result<(String, i64)> {
    Ok(with_db!(conn, |c| {
        export_digest_meta::table
            .select((export_digest_meta::epoch, export_digest_meta::revision))
            .first(c)
            .await
    })?)
}

/// Locks the exported digests' state for the transaction (PostgreSQL; an
/// SQLite write transaction holds the database already) and reads it.
pub async fn lock_exported(conn: &mut DbConn) -> Result<(String, i64)> {
    use crate::store::Db;
    let query =
        export_digest_meta::table.select((export_digest_meta::epoch, export_digest_meta::revision));
    Ok(match conn.db() {
        Db::Pg(c) => query.for_update().first(c).await?,
        Db::Sqlite(c) => query.first(c).await?,
    })
}

/// Records that the exported digests reflect `checkpoint`.
pub async fn set_exported_checkpoint(conn: &mut DbConn, epoch: &str, revision: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::update(export_digest_meta::table)
            .set((
                export_digest_meta::epoch.eq(epoch),
                export_digest_meta::revision.eq(revision),
            ))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Forgets every exported digest (before they are computed afresh).
pub async fn clear_exported(conn: &mut DbConn) -> Result<()> {
    with_db!(conn, |c| {
        diesel::delete(export_digests::table).execute(c).await
    })?;
    Ok(())
}

/// Stores exported digests: (class, id, digest).
pub async fn store_exported(conn: &mut DbConn, rows: &[(Class, i64, i64)]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let values: Vec<_> = chunk
            .iter()
            .map(|&(class, id, digest)| {
                (
                    export_digests::kind.eq(class.log_code()),
                    export_digests::object_id.eq(id),
                    export_digests::digest.eq(digest),
                )
            })
            .collect();
        execute_batch!(conn, {
            diesel::insert_into(export_digests::table)
                .values(values)
                .on_conflict((export_digests::kind, export_digests::object_id))
                .do_update()
                .set(export_digests::digest.eq(excluded(export_digests::digest)))
        })?;
    }
    Ok(())
}

/// Refreshes PostgreSQL's statistics of the exported digests after many
/// were written: planned with none, the listed ranges' join scans the
/// whole table once per range.
pub async fn refresh_exported_statistics(conn: &mut DbConn) -> Result<()> {
    if let crate::store::Db::Pg(c) = conn.db() {
        diesel_async::SimpleAsyncConnection::batch_execute(c, "ANALYZE export_digests").await?;
    }
    Ok(())
}

/// Removes the exported digests of objects no longer exported.
pub async fn remove_exported(conn: &mut DbConn, class: Class, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(CHUNK) {
        with_db!(conn, |c| {
            diesel::delete(
                export_digests::table
                    .filter(export_digests::kind.eq(class.log_code()))
                    .filter(in_list(export_digests::object_id, chunk)),
            )
            .execute(c)
            .await
        })?;
    }
    Ok(())
}

/// Marks the transaction as a refresh of peer `peer_id` writing its cache:
/// its writes keep the digests they write (see the migration `digests`).
/// The mark must be taken off before the transaction commits.
pub async fn mark_applying(conn: &mut DbConn, peer_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::insert_into(sync_applying::table)
            .values(sync_applying::peer_id.eq(peer_id))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Takes off the mark of [`mark_applying`].
pub async fn unmark_applying(conn: &mut DbConn, peer_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::delete(sync_applying::table.filter(sync_applying::peer_id.eq(peer_id)))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Of the local keys `key_ids`, those an enabled local person holds: the
/// keys a peer caches (it caches only the keys of the persons it caches).
/// Two lookups by key (the owners), then by person, each on its index.
pub async fn keys_of_enabled_persons(conn: &mut DbConn, key_ids: &[i64]) -> Result<Vec<i64>> {
    let mut owners: Vec<(i64, i64)> = Vec::new();
    for chunk in key_ids.chunks(CHUNK) {
        let rows: Vec<(i64, i64)> = with_db!(conn, |c| {
            person_key::table
                .filter(in_list(person_key::key_id, chunk))
                .select((person_key::key_id, person_key::person_id))
                .load(c)
                .await
        })?;
        owners.extend(rows);
    }
    let mut persons_asked: Vec<i64> = owners.iter().map(|&(_, person)| person).collect();
    persons_asked.sort_unstable();
    persons_asked.dedup();
    let mut enabled = std::collections::HashSet::new();
    for chunk in persons_asked.chunks(CHUNK) {
        let rows: Vec<i64> = with_db!(conn, |c| {
            persons::table
                .filter(in_list(persons::person_id, chunk))
                .filter(persons::enabled.eq(true))
                .filter(persons::peer_id.is_null())
                .select(persons::person_id)
                .load(c)
                .await
        })?;
        enabled.extend(rows);
    }
    Ok(owners
        .into_iter()
        .filter(|(_, person)| enabled.contains(person))
        .map(|(key, _)| key)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_covers_its_range_without_overlap() {
        let split = Split::new(10, 109, 8).unwrap();
        let ranges: Vec<_> = (0..8).map(|i| split.range(i)).collect();
        assert_eq!(ranges[0], (10, 22));
        assert_eq!(ranges[7].1, 109);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0);
        }
        assert_eq!(Split::new(5, 5, 64).unwrap().range(0), (5, 5));
        assert_eq!(Split::new(6, 5, 1), None);
        assert_eq!(Split::new(i64::MIN, i64::MAX, 4), None);
        assert!(Split::new(i64::MIN, i64::MAX, 1).is_some());
    }
}
