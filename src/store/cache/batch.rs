//! Reading and writing rows in batches: ids read as one range when they
//! are dense and as lists of [`CHUNK`] otherwise ([`IdReads`]), and
//! PostgreSQL's one-statement upserts through `UNNEST`.

use foldhash::HashSet;

use diesel::dsl::Between;
use diesel::expression::{AsExpression, Expression};
use diesel::prelude::*;
use diesel::query_dsl::methods::FilterDsl;
use diesel::sql_types::{SingleValue, SqlType};

use crate::store::prepared::{InList, in_list};

/// Rows per multi-row statement: well under SQLite's limit on bound
/// parameters (32766) for the widest row.
pub(super) const CHUNK: usize = 1000;

/// One read of rows by id: a dense run of ids as one range (whose
/// statement the connection keeps prepared, and which the index walks in
/// order), or a list.
#[derive(Debug, Clone, Copy)]
pub enum IdBatch<'a> {
    /// Ids `lo..=hi`.
    Span(i64, i64),
    /// These ids.
    List(&'a [i64]),
}

/// `query` (a boxed query) filtered to the rows whose `column` holds one
/// of the ids of `batch`: a range or a list.
pub(super) fn in_batch<Q, C>(query: Q, column: C, batch: IdBatch<'_>) -> Q
where
    C: Expression,
    C::SqlType: SqlType + SingleValue,
    i64: AsExpression<C::SqlType>,
    Q: FilterDsl<Between<C, i64, i64>, Output = Q> + FilterDsl<InList<C, i64>, Output = Q>,
{
    match batch {
        IdBatch::Span(lo, hi) => FilterDsl::filter(query, column.between(lo, hi)),
        IdBatch::List(ids) => FilterDsl::filter(query, in_list(column, ids)),
    }
}

/// How the rows of a set of ids are read: one range when the ids are dense
/// (a chunk of a full dump, a page of owners: ids in order, few gaps),
/// otherwise lists of [`CHUNK`]. A range may also hold rows of ids not
/// asked for, which [`IdReads::keeps`] drops.
pub(super) struct IdReads<'a> {
    pub(super) batches: Vec<IdBatch<'a>>,
    /// The ids asked for, when a range reads more.
    wanted: Option<HashSet<i64>>,
}

impl<'a> IdReads<'a> {
    pub(super) fn of(ids: &'a [i64]) -> IdReads<'a> {
        let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) else {
            return IdReads {
                batches: Vec::new(),
                wanted: None,
            };
        };
        // At most half of the range is ids not asked for.
        if ids.len() > 1 && hi.abs_diff(lo) < 2 * ids.len() as u64 {
            return IdReads {
                batches: vec![IdBatch::Span(lo, hi)],
                wanted: Some(ids.iter().copied().collect()),
            };
        }
        IdReads {
            batches: ids.chunks(CHUNK).map(IdBatch::List).collect(),
            wanted: None,
        }
    }

    /// Whether a row of `id` was asked for.
    pub(super) fn keeps(&self, id: i64) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.contains(&id))
    }
}

/// Rows up to which SQLite upserts a class's rows one statement per row,
/// each kept prepared, rather than in one multi-row statement (PostgreSQL
/// does so for a single row: each statement is a round trip there).
pub(super) const ROW_BY_ROW: usize = 32;

/// Rows from which PostgreSQL writes go through `UNNEST`. Its statement is
/// raw SQL, prepared anew at each call (two round trips); a smaller batch
/// goes through one multi-row statement (one round trip), which a small
/// delta can tell.
pub(super) const UNNEST_FROM: usize = 16;

/// The PostgreSQL upsert of a cached class's rows as one statement whose
/// parameters are `$1` the peer, `$2` the time stamp, `$3` the array of the
/// peer's ids and then one array per column: the rows come out of
/// `UNNEST`, which spares PostgreSQL parsing and planning a statement of
/// thousands of parameters per chunk.
pub(super) fn unnest_upsert_sql(
    table: &str,
    peer_col: &str,
    columns: &[&str],
    insert_stamps: &[&str],
    update_stamps: &[&str],
) -> String {
    let arrays: Vec<String> = (0..=columns.len()).map(|i| format!("${}", i + 3)).collect();
    let mut set: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    set.extend(update_stamps.iter().map(|s| format!("{s} = $2")));
    format!(
        "INSERT INTO {table} (peer_id, {peer_col}, {}{}) \
         SELECT $1, u.*{} FROM UNNEST({}) AS u \
         ON CONFLICT (peer_id, {peer_col}) DO UPDATE SET {}",
        columns.join(", "),
        insert_stamps
            .iter()
            .map(|s| format!(", {s}"))
            .collect::<String>(),
        insert_stamps.iter().map(|_| ", $2").collect::<String>(),
        arrays.join(", "),
        set.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_are_read_as_one_range_and_sparse_ones_as_lists() {
        // A chunk of a full dump: ids in order with a few gaps.
        let dense = [3, 4, 6, 7, 9];
        let reads = IdReads::of(&dense);
        assert!(matches!(reads.batches[..], [IdBatch::Span(3, 9)]));
        assert!(reads.keeps(6));
        assert!(
            !reads.keeps(5),
            "a row in the range but not asked for is dropped"
        );

        // A delta's ids: far apart.
        let sparse = [10, 5_000, 90_000];
        let reads = IdReads::of(&sparse);
        assert!(matches!(reads.batches[..], [IdBatch::List(ids)] if ids == sparse));
        assert!(reads.keeps(5_000));

        // Lists stay within the statement's parameter limit.
        let many: Vec<i64> = (0..2500).map(|i| i * 1000).collect();
        let reads = IdReads::of(&many);
        let sizes: Vec<usize> = reads
            .batches
            .iter()
            .map(|b| match b {
                IdBatch::List(ids) => ids.len(),
                IdBatch::Span(..) => 0,
            })
            .collect();
        assert_eq!(sizes, [CHUNK, CHUNK, 500]);

        // One id, and none.
        assert!(matches!(
            IdReads::of(&[42]).batches[..],
            [IdBatch::List([42])]
        ));
        assert!(IdReads::of(&[]).batches.is_empty());
    }
}
