//! The cache of peers' objects, read and written in bulk.
//!
//! A refresh compares what a peer serves with what is cached from it and
//! writes only the difference. Every query here is set-based: the cached
//! rows of a peer load in one query per kind, changed and new rows go in
//! multi-row upserts keyed on `(peer_id, peer_<kind>_id)`, gone rows in
//! multi-row deletes; relation rows likewise. Nothing issues a statement per
//! object.
//!
//! [`CachedKind`] describes one kind of object (its table, the columns a
//! refresh compares, its natural key); the `cached_kind!` macro implements it
//! for sites, keys, persons, nodes and slices from one column list each.
//! [`Relation`] does the same for the membership tables.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use diesel::dsl::SqlTypeOf;
use diesel::sql_types::{Array, BigInt};

use super::schema::{
    keys, node_slice_whitelist, nodes, person_key, person_role, person_site, persons, sites,
    slice_node, slice_person, slices,
};
use super::{Db, DbConn};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::{execute_batch, load_rows, with_db};

/// Rows per multi-row statement: well under SQLite's limit on bound
/// parameters (32766) for the widest row.
const CHUNK: usize = 1000;

/// One read of rows by id: a dense run of ids as one range (whose
/// statement the connection keeps prepared, and which the index walks in
/// order), or a list.
#[derive(Debug, Clone, Copy)]
enum IdBatch<'a> {
    /// Ids `lo..=hi`.
    Span(i64, i64),
    /// These ids.
    List(&'a [i64]),
}

/// How the rows of a set of ids are read: one range when the ids are dense
/// (a chunk of a full dump, a page of owners: ids in order, few gaps),
/// otherwise lists of [`CHUNK`]. A range may also hold rows of ids not
/// asked for, which [`IdReads::keeps`] drops.
struct IdReads<'a> {
    batches: Vec<IdBatch<'a>>,
    /// The ids asked for, when a range reads more.
    wanted: Option<HashSet<i64>>,
}

impl<'a> IdReads<'a> {
    fn of(ids: &'a [i64]) -> IdReads<'a> {
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
    fn keeps(&self, id: i64) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.contains(&id))
    }
}

/// Rows from which PostgreSQL writes go through `UNNEST`. Its statement is
/// raw SQL, prepared anew at each call (two round trips); a smaller batch
/// goes through a multi-row statement that the connection keeps prepared
/// (one round trip), which a followed change of one row can tell.
const UNNEST_FROM: usize = 16;

/// The PostgreSQL upsert of a cached kind's rows as one statement whose
/// parameters are `$1` the peer, `$2` the time stamp, `$3` the array of the
/// peer's ids and then one array per column: the rows come out of
/// `UNNEST`, which spares PostgreSQL parsing and planning a statement of
/// thousands of parameters per chunk.
fn unnest_upsert_sql(
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

/// One kind of object cached from peers.
pub trait CachedKind: Sized {
    /// The columns a refresh compares and writes, as they are stored here
    /// (relation ids already translated to local ids).
    type Fields: Clone + PartialEq + Send + Sync + std::fmt::Debug;

    /// The class of the objects.
    const CLASS: Class;

    /// Name of the natural key's column, empty for kinds without one.
    const NATURAL_KEY: &'static str;

    /// Name of the table.
    const TABLE: &'static str;

    /// Name of the column holding the peer's id of a row.
    const PEER_COLUMN: &'static str;

    /// Name of the column holding the local id of a row.
    const ID_COLUMN: &'static str;

    /// The natural key of a row (`login_base`, `hostname`, ...), unique
    /// across authorities; `None` for kinds without one.
    fn natural_key(fields: &Self::Fields) -> Option<&str>;

    /// The cached rows of a peer among `peer_object_ids`: peer's id →
    /// fields.
    fn load(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, Self::Fields>>> + Send;

    /// Number of a peer's cached rows.
    fn count(conn: &mut DbConn, peer_id: i64) -> impl Future<Output = Result<i64>> + Send;

    /// Local ids of a peer's cached rows: peer's id → local id.
    fn ids(
        conn: &mut DbConn,
        peer_id: i64,
    ) -> impl Future<Output = Result<HashMap<i64, i64>>> + Send;

    /// Local ids of a peer's cached rows among `peer_object_ids`: peer's id
    /// → local id.
    fn ids_among(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, i64>>> + Send;

    /// Inserts or updates rows of a peer, keyed on the peer's ids; returns
    /// the number of rows written.
    fn upsert(
        conn: &mut DbConn,
        peer_id: i64,
        rows: &[(i64, Self::Fields)],
        now: i64,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Deletes cached rows of a peer by the peer's ids.
    fn delete(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Up to `limit` local rows that are served to peers, with ids above
    /// `after_id`, by id.
    fn local_page(
        conn: &mut DbConn,
        after_id: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(i64, Self::Fields)>>> + Send;

    /// The local rows served to peers among `ids`, by id.
    fn local_rows(
        conn: &mut DbConn,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, Self::Fields)>>> + Send;

    /// The rows that hold one of `natural_keys` within the key's scope:
    /// anywhere for keys unique everywhere, among the peer's rows for keys
    /// unique per authority. Each as (key, holder's peer or `None` for a
    /// local row, holder's id at that peer).
    fn holders(
        conn: &mut DbConn,
        peer_id: i64,
        natural_keys: &[String],
    ) -> impl Future<Output = Result<Vec<Holder>>> + Send;
}

/// Evaluates `$body` with the type `$k` standing for the [`CachedKind`]
/// of `$class` (a [`Class`]): the one place a class becomes its type.
#[macro_export]
macro_rules! with_kind {
    ($class:expr, $k:ident => $body:expr) => {
        match $class {
            $crate::class::Class::Sites => {
                type $k = $crate::store::cache::CachedSites;
                $body
            }
            $crate::class::Class::Keys => {
                type $k = $crate::store::cache::CachedKeys;
                $body
            }
            $crate::class::Class::Persons => {
                type $k = $crate::store::cache::CachedPersons;
                $body
            }
            $crate::class::Class::Nodes => {
                type $k = $crate::store::cache::CachedNodes;
                $body
            }
            $crate::class::Class::Slices => {
                type $k = $crate::store::cache::CachedSlices;
                $body
            }
        }
    };
}

/// A row holding a natural key: (key, its peer or `None` when local, its id
/// at that peer).
pub type Holder = (String, Option<i64>, Option<i64>);

/// Implements [`CachedKind`] for a table from its list of synced columns.
macro_rules! cached_kind {
    (
        $(#[$doc:meta])*
        $kind:ident / $fields:ident: $table:ident ($class:ident, $id:ident, $peer_col:ident),
        natural key $natural:tt unique $scope:ident,
        exported where [$($export_filter:expr),*],
        stamped on insert [$($insert_stamp:ident),*] on update [$($update_stamp:ident),*],
        { $( $(#[$fdoc:meta])* $col:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$doc])*
        pub struct $kind;

        #[doc = concat!("The columns of `", stringify!($table), "` a refresh compares and writes.")]
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
        #[diesel(table_name = $table, treat_none_as_default_value = false)]
        pub struct $fields {
            $( $(#[$fdoc])* pub $col: $ty, )*
        }

        impl CachedKind for $kind {
            type Fields = $fields;
            const CLASS: Class = Class::$class;
            const NATURAL_KEY: &'static str = cached_kind!(@name $natural);
            const TABLE: &'static str = stringify!($table);
            const PEER_COLUMN: &'static str = stringify!($peer_col);
            const ID_COLUMN: &'static str = stringify!($id);

            fn natural_key(fields: &$fields) -> Option<&str> {
                cached_kind!(@natural fields $natural)
            }

            async fn load(
                conn: &mut DbConn,
                peer_id: i64,
                peer_object_ids: &[i64],
            ) -> Result<HashMap<i64, $fields>> {
                let mut cached = HashMap::with_capacity(peer_object_ids.len());
                let reads = IdReads::of(peer_object_ids);
                for &batch in &reads.batches {
                    let rows: Vec<(i64, $fields)> = load_rows!(conn, {
                        let query = $table::table
                            .filter($table::peer_id.eq(peer_id))
                            .select(($table::$peer_col.assume_not_null(), $fields::as_select()))
                            .into_boxed();
                        match batch {
                            IdBatch::Span(lo, hi) => query.filter($table::$peer_col.between(lo, hi)),
                            IdBatch::List(ids) => query.filter($table::$peer_col.eq_any(ids.to_vec())),
                        }
                    })?;
                    cached.extend(rows.into_iter().filter(|(id, _)| reads.keeps(*id)));
                }
                Ok(cached)
            }

            async fn count(conn: &mut DbConn, peer_id: i64) -> Result<i64> {
                Ok(with_db!(conn, |c| $table::table
                    .filter($table::peer_id.eq(peer_id))
                    .count()
                    .get_result::<i64>(c)
                    .await)?)
            }

            async fn ids(conn: &mut DbConn, peer_id: i64) -> Result<HashMap<i64, i64>> {
                let rows: Vec<(i64, i64)> = load_rows!(
                    conn,
                    $table::table
                        .filter($table::peer_id.eq(peer_id))
                        .select(($table::$peer_col.assume_not_null(), $table::$id))
                )?;
                Ok(rows.into_iter().collect())
            }

            async fn ids_among(
                conn: &mut DbConn,
                peer_id: i64,
                peer_object_ids: &[i64],
            ) -> Result<HashMap<i64, i64>> {
                let mut ids = HashMap::with_capacity(peer_object_ids.len());
                let reads = IdReads::of(peer_object_ids);
                for &batch in &reads.batches {
                    let rows: Vec<(i64, i64)> = load_rows!(conn, {
                        let query = $table::table
                            .filter($table::peer_id.eq(peer_id))
                            .select(($table::$peer_col.assume_not_null(), $table::$id))
                            .into_boxed();
                        match batch {
                            IdBatch::Span(lo, hi) => query.filter($table::$peer_col.between(lo, hi)),
                            IdBatch::List(ids) => query.filter($table::$peer_col.eq_any(ids.to_vec())),
                        }
                    })?;
                    ids.extend(rows.into_iter().filter(|(id, _)| reads.keeps(*id)));
                }
                Ok(ids)
            }

            async fn upsert(
                conn: &mut DbConn,
                peer_id: i64,
                rows: &[(i64, $fields)],
                now: i64,
            ) -> Result<usize> {
                use diesel::upsert::excluded;
                if rows.is_empty() {
                    return Ok(0);
                }
                if let (Db::Pg(c), true) = (conn.db(), rows.len() >= UNNEST_FROM) {
                    // One statement, one array per column (see `unnest_upsert_sql`).
                    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
                    $( let $col: Vec<$ty> = rows.iter().map(|(_, f)| f.$col.clone()).collect(); )*
                    let query = diesel::sql_query(unnest_upsert_sql(
                        stringify!($table),
                        stringify!($peer_col),
                        &[$(stringify!($col)),*],
                        &[$(stringify!($insert_stamp)),*],
                        &[$(stringify!($update_stamp)),*],
                    ))
                    .bind::<BigInt, _>(peer_id)
                    .bind::<BigInt, _>(now)
                    .bind::<Array<BigInt>, _>(ids);
                    $( let query = query.bind::<Array<SqlTypeOf<$table::$col>>, _>($col); )*
                    return Ok(diesel_async::RunQueryDsl::execute(query, c).await?);
                }
                // Kinds without time stamps do not use `now`.
                let _ = now;
                let mut written = 0;
                for chunk in rows.chunks(CHUNK) {
                    let values: Vec<_> = chunk
                        .iter()
                        .map(|(peer_object_id, fields)| {
                            (
                                $table::peer_id.eq(Some(peer_id)),
                                $table::$peer_col.eq(Some(*peer_object_id)),
                                fields.clone(),
                                $( $table::$insert_stamp.eq(now), )*
                            )
                        })
                        .collect();
                    written += execute_batch!(conn, {
                        diesel::insert_into($table::table)
                            .values(values)
                            .on_conflict(($table::peer_id, $table::$peer_col))
                            .do_update()
                            .set((
                                $( $table::$col.eq(excluded($table::$col)), )*
                                $( $table::$update_stamp.eq(now), )*
                            ))
                    })?;
                }
                Ok(written)
            }

            async fn delete(
                conn: &mut DbConn,
                peer_id: i64,
                peer_object_ids: &[i64],
            ) -> Result<usize> {
                let mut deleted = 0;
                for chunk in peer_object_ids.chunks(CHUNK) {
                    deleted += with_db!(conn, |c| {
                        diesel::delete(
                            $table::table
                                .filter($table::peer_id.eq(peer_id))
                                .filter($table::$peer_col.eq_any(chunk)),
                        )
                        .execute(c)
                        .await
                    })?;
                }
                Ok(deleted)
            }

            async fn local_page(
                conn: &mut DbConn,
                after_id: i64,
                limit: i64,
            ) -> Result<Vec<(i64, $fields)>> {
                Ok(load_rows!(
                    conn,
                    $table::table
                        .filter($table::peer_id.is_null())
                        $( .filter($export_filter) )*
                        .filter($table::$id.gt(after_id))
                        .order($table::$id)
                        .limit(limit)
                        .select(($table::$id, $fields::as_select()))
                )?)
            }

            async fn local_rows(conn: &mut DbConn, ids: &[i64]) -> Result<Vec<(i64, $fields)>> {
                let mut rows = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(CHUNK) {
                    let found: Vec<(i64, $fields)> = load_rows!(
                        conn,
                        $table::table
                            .filter($table::peer_id.is_null())
                            $( .filter($export_filter) )*
                            .filter($table::$id.eq_any(chunk.to_vec()))
                            .order($table::$id)
                            .select(($table::$id, $fields::as_select()))
                    )?;
                    rows.extend(found);
                }
                Ok(rows)
            }

            async fn holders(
                conn: &mut DbConn,
                peer_id: i64,
                natural_keys: &[String],
            ) -> Result<Vec<Holder>> {
                cached_kind!(@holders conn, peer_id, natural_keys, $table, $peer_col, $scope $natural)
            }
        }
    };
    (@name none) => { "" };
    (@name $col:ident) => { stringify!($col) };
    (@natural $fields:ident none) => { { let _ = $fields; None } };
    (@natural $fields:ident $col:ident) => { Some($fields.$col.as_str()) };
    (@holders $conn:ident, $peer_id:ident, $keys:ident, $table:ident, $peer_col:ident, per_peer none) => {
        { let _ = (&$conn, $peer_id, $keys); Ok(Vec::new()) }
    };
    (@holders $conn:ident, $peer_id:ident, $keys:ident, $table:ident, $peer_col:ident, per_peer $col:ident) => {
        cached_kind!(@holders_where $conn, $keys, $table, $col, $peer_col, $table::peer_id.eq($peer_id))
    };
    (@holders $conn:ident, $peer_id:ident, $keys:ident, $table:ident, $peer_col:ident, everywhere $col:ident) => {
        { let _ = $peer_id; cached_kind!(@holders_where $conn, $keys, $table, $col, $peer_col) }
    };
    (@holders_where $conn:ident, $keys:ident, $table:ident, $col:ident, $peer_col:ident $(, $scope:expr)?) => {{
        let mut holders = Vec::new();
        for chunk in $keys.chunks(CHUNK) {
            let found: Vec<Holder> = with_db!($conn, |c| {
                $table::table
                    .filter($table::$col.eq_any(chunk))
                    $( .filter($scope) )?
                    .select(($table::$col, $table::peer_id, $table::$peer_col))
                    .load(c)
                    .await
            })?;
            holders.extend(found);
        }
        Ok(holders)
    }};
}

cached_kind! {
    /// Sites cached from peers.
    CachedSites / SiteFields: sites (Sites, site_id, peer_site_id),
    natural key login_base unique everywhere,
    exported where [],
    stamped on insert [date_created, last_updated] on update [last_updated],
    {
        /// Unique short name.
        login_base: String,
        /// Full name.
        name: String,
        /// Abbreviated name.
        abbreviated_name: String,
        /// Whether the site is enabled.
        enabled: bool,
        /// Whether the site is listed publicly.
        is_public: bool,
        /// Slice quota.
        max_slices: i32,
        /// Sliver quota.
        max_slivers: i32,
        /// Latitude in degrees.
        latitude: Option<f64>,
        /// Longitude in degrees.
        longitude: Option<f64>,
        /// Home page.
        url: String,
        /// Consortium id.
        ext_consortium_id: Option<i64>,
    }
}

cached_kind! {
    /// Keys cached from peers.
    CachedKeys / KeyFields: keys (Keys, key_id, peer_key_id),
    natural key none unique per_peer,
    exported where [],
    stamped on insert [] on update [],
    {
        /// Key type (`ssh`).
        key_type: String,
        /// The public key.
        key: String,
        /// Whether the key is blacklisted.
        is_blacklisted: bool,
    }
}

cached_kind! {
    /// Persons cached from peers.
    CachedPersons / PersonFields: persons (Persons, person_id, peer_person_id),
    // An e-mail is unique among the persons of one authority only.
    natural key email unique per_peer,
    exported where [],
    stamped on insert [date_created, last_updated] on update [last_updated],
    {
        /// E-mail, unique among the persons of one authority.
        email: String,
        /// Given name.
        first_name: String,
        /// Family name.
        last_name: String,
        /// Title.
        title: String,
        /// Phone number.
        phone: String,
        /// Home page.
        url: String,
        /// Biography.
        bio: String,
        /// Whether the account is enabled.
        enabled: bool,
    }
}

cached_kind! {
    /// Nodes cached from peers.
    CachedNodes / NodeFields: nodes (Nodes, node_id, peer_node_id),
    natural key hostname unique everywhere,
    // Nodes reserved to some slices stay home.
    exported where [diesel::dsl::not(diesel::dsl::exists(
        node_slice_whitelist::table.filter(node_slice_whitelist::node_id.eq(nodes::node_id))
    ))],
    stamped on insert [date_created, last_updated] on update [last_updated],
    {
        /// DNS name.
        hostname: String,
        /// Local id of the node's site.
        site_id: i64,
        /// Node type.
        node_type: String,
        /// Boot state.
        boot_state: String,
        /// Run level.
        run_level: String,
        /// Hardware model.
        model: String,
        /// Software version.
        version: String,
        /// Host SSH key.
        ssh_rsa_key: String,
        /// Whether the node is verified.
        verified: bool,
    }
}

cached_kind! {
    /// Slices cached from peers.
    CachedSlices / SliceFields: slices (Slices, slice_id, peer_slice_id),
    natural key name unique everywhere,
    // System slices stay home.
    exported where [slices::is_system.eq(false)],
    stamped on insert [] on update [],
    {
        /// Local id of the slice's site.
        site_id: i64,
        /// Unique name, `<login_base>_...`.
        name: String,
        /// Instantiation.
        instantiation: String,
        /// Home page.
        url: String,
        /// Description.
        description: String,
        /// Node quota.
        max_nodes: i32,
        /// Local id of the creator, when cached.
        creator_person_id: Option<i64>,
        /// Unix seconds.
        created: i64,
        /// Unix seconds.
        expires: i64,
    }
}

/// A membership table keyed on two ids.
pub trait PairTable {
    /// Name in reports.
    const NAME: &'static str;
    /// SQL name of the table and of its two id columns.
    const SQL: (&'static str, &'static str, &'static str);
}

/// A membership table whose rows a refresh reconciles, as pairs of local
/// ids `(owner, member)`: the owner is an object cached from the peer.
pub trait Relation: PairTable {
    /// The pairs whose owner is one of `owner_ids`, by owner.
    fn for_owners(
        conn: &mut DbConn,
        owner_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, i64)>>> + Send;

    /// Inserts pairs.
    fn insert(
        conn: &mut DbConn,
        pairs: &[(i64, i64)],
    ) -> impl Future<Output = Result<usize>> + Send;
}

/// Implements [`Relation`] for a two-column membership table whose first
/// column is the owner.
macro_rules! relation {
    (
        $(#[$doc:meta])*
        $name:ident: $table:ident ($a:ident: $a_ty:ty, $b:ident: $b_ty:ty),
        $label:literal
    ) => {
        $(#[$doc])*
        pub struct $name;

        impl PairTable for $name {
            const NAME: &'static str = $label;
            const SQL: (&'static str, &'static str, &'static str) =
                (stringify!($table), stringify!($a), stringify!($b));
        }

        impl Relation for $name {
            async fn for_owners(conn: &mut DbConn, owner_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
                let mut out = Vec::new();
                let reads = IdReads::of(owner_ids);
                for &batch in &reads.batches {
                    let pairs: Vec<($a_ty, $b_ty)> = load_rows!(conn, {
                        let query = $table::table
                            .order(($table::$a, $table::$b))
                            .select(($table::$a, $table::$b))
                            .into_boxed();
                        match batch {
                            IdBatch::Span(lo, hi) => query.filter($table::$a.between(lo, hi)),
                            IdBatch::List(ids) => query.filter($table::$a.eq_any(ids.to_vec())),
                        }
                    })?;
                    out.extend(
                        pairs
                            .into_iter()
                            .map(|(a, b)| (i64::from(a), i64::from(b)))
                            .filter(|&(a, _)| reads.keeps(a)),
                    );
                }
                Ok(out)
            }

            async fn insert(conn: &mut DbConn, pairs: &[(i64, i64)]) -> Result<usize> {
                if pairs.is_empty() {
                    return Ok(0);
                }
                if let (Db::Pg(c), true) = (conn.db(), pairs.len() >= UNNEST_FROM) {
                    // One statement, one array per column.
                    let (a, b): (Vec<$a_ty>, Vec<$b_ty>) =
                        pairs.iter().map(|&(a, b)| (a as $a_ty, b as $b_ty)).unzip();
                    let query = diesel::sql_query(concat!(
                        "INSERT INTO ", stringify!($table),
                        " (", stringify!($a), ", ", stringify!($b), ") SELECT * FROM UNNEST($1, $2)"
                    ))
                    .bind::<Array<SqlTypeOf<$table::$a>>, _>(a)
                    .bind::<Array<SqlTypeOf<$table::$b>>, _>(b);
                    return Ok(diesel_async::RunQueryDsl::execute(query, c).await?);
                }
                let mut inserted = 0;
                for chunk in pairs.chunks(CHUNK) {
                    let values: Vec<_> = chunk
                        .iter()
                        .map(|&(a, b)| {
                            (
                                $table::$a.eq(a as $a_ty),
                                $table::$b.eq(b as $b_ty),
                            )
                        })
                        .collect();
                    inserted += execute_batch!(conn, {
                        diesel::insert_into($table::table).values(values)
                    })?;
                }
                Ok(inserted)
            }
        }
    };
}

relation! {
    /// Keys of cached persons: (person, key).
    PersonKeys: person_key (person_id: i64, key_id: i64), "person_keys"
}

relation! {
    /// Nodes of cached slices, foreign and local: (slice, node).
    SliceNodes: slice_node (slice_id: i64, node_id: i64), "slice_nodes"
}

relation! {
    /// Persons of cached slices: (slice, person); a refresh reconciles the
    /// pairs whose person is cached from the same peer only.
    SlicePersons: slice_person (slice_id: i64, person_id: i64), "slice_persons"
}

relation! {
    /// Roles of cached persons: (person, role).
    PersonRoles: person_role (person_id: i64, role_id: i32), "person_roles"
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

/// Moves the natural keys of a peer's cached rows out of the way, within
/// the refresh's transaction: each becomes a placeholder that no valid
/// key can equal (`#parked.<peer>.<peer's id>`), freeing its key for
/// another of the peer's objects that took it (a rename, a swap, a
/// chain). The row keeps its local id and memberships; the refresh
/// writes its own new key later, or deletes it.
///
/// Only integers reach the SQL text.
pub async fn park<K: CachedKind>(
    conn: &mut DbConn,
    peer_id: i64,
    peer_object_ids: &[i64],
) -> Result<()> {
    let (table, key, peer_col) = (K::TABLE, K::NATURAL_KEY, K::PEER_COLUMN);
    for chunk in peer_object_ids.chunks(CHUNK) {
        let ids: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "UPDATE {table} SET {key} = '#parked.' || CAST(peer_id AS TEXT) || '.' || CAST({peer_col} AS TEXT) \
             WHERE peer_id = {peer_id} AND {peer_col} IN ({})",
            ids.join(",")
        );
        with_db!(conn, |c| c.batch_execute(&sql).await)?;
    }
    Ok(())
}

/// A peer's cached nodes and slices at the given (local) sites, which go
/// with them when they are deleted: the peer's ids of the nodes, then of
/// the slices.
pub async fn cached_at_sites(
    conn: &mut DbConn,
    peer_id: i64,
    site_ids: &[i64],
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (mut node_ids, mut slice_ids) = (Vec::new(), Vec::new());
    for chunk in site_ids.chunks(CHUNK) {
        let found: Vec<i64> = with_db!(conn, |c| {
            nodes::table
                .filter(nodes::peer_id.eq(peer_id))
                .filter(nodes::site_id.eq_any(chunk))
                .select(nodes::peer_node_id.assume_not_null())
                .load(c)
                .await
        })?;
        node_ids.extend(found);
        let found: Vec<i64> = with_db!(conn, |c| {
            slices::table
                .filter(slices::peer_id.eq(peer_id))
                .filter(slices::site_id.eq_any(chunk))
                .select(slices::peer_slice_id.assume_not_null())
                .load(c)
                .await
        })?;
        slice_ids.extend(found);
    }
    Ok((node_ids, slice_ids))
}

/// The peer's ids of a peer's cached slices created by one of the given
/// (local) persons, whose creator the database sets to null when those go.
pub async fn cached_slices_created_by(
    conn: &mut DbConn,
    peer_id: i64,
    person_ids: &[i64],
) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for chunk in person_ids.chunks(CHUNK) {
        let found: Vec<i64> = with_db!(conn, |c| {
            slices::table
                .filter(slices::peer_id.eq(peer_id))
                .filter(slices::creator_person_id.eq_any(chunk))
                .select(slices::peer_slice_id.assume_not_null())
                .load(c)
                .await
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// A row's local id and its id at its peer.
#[derive(QueryableByName)]
struct IdPair {
    #[diesel(sql_type = BigInt)]
    local: i64,
    #[diesel(sql_type = BigInt)]
    peer: i64,
}

/// The peer's ids of rows cached from peer `peer_id` among the local
/// `ids`: local id → the peer's id. Only integers reach the SQL text.
pub async fn peer_ids_of<K: CachedKind>(
    conn: &mut DbConn,
    peer_id: i64,
    ids: &[i64],
) -> Result<HashMap<i64, i64>> {
    let (table, id, peer_col) = (K::TABLE, K::ID_COLUMN, K::PEER_COLUMN);
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT {id} AS local, {peer_col} AS peer FROM {table} \
             WHERE peer_id = {peer_id} AND {id} IN ({})",
            list.join(",")
        );
        let rows: Vec<IdPair> = with_db!(conn, |c| diesel::sql_query(&sql).load(c).await)?;
        found.extend(rows.into_iter().map(|r| (r.local, r.peer)));
    }
    Ok(found)
}

/// Refreshes the planner's statistics of a cached kind's table after it
/// grew within the open transaction (PostgreSQL; SQLite plans without
/// them).
///
/// Statistics gathered while a table was small make PostgreSQL plan the
/// lookups of the next rounds as if it still were (a scan of the peer's
/// rows with a filter instead of the natural key's index), so a large
/// first refresh would slow down round after round. ANALYZE inside the
/// transaction samples its own uncommitted rows too.
pub async fn refresh_statistics<K: CachedKind>(conn: &mut DbConn) -> Result<()> {
    if let super::Db::Pg(c) = conn.db() {
        c.batch_execute(&format!("ANALYZE {}", K::TABLE)).await?;
    }
    Ok(())
}

/// The login_bases of a peer's cached sites, all of them or those among
/// `peer_site_ids`: peer's site id → login_base.
pub async fn login_bases(
    conn: &mut DbConn,
    peer_id: i64,
    peer_site_ids: Option<&[i64]>,
) -> Result<HashMap<i64, String>> {
    let mut out = HashMap::new();
    let chunks: Vec<Option<&[i64]>> = match peer_site_ids {
        None => vec![None],
        Some(ids) => ids.chunks(CHUNK).map(Some).collect(),
    };
    for chunk in chunks {
        let rows: Vec<(i64, String)> = with_db!(conn, |c| {
            let mut query = sites::table
                .filter(sites::peer_id.eq(peer_id))
                .select((sites::peer_site_id.assume_not_null(), sites::login_base))
                .into_boxed();
            if let Some(ids) = chunk {
                query = query.filter(sites::peer_site_id.eq_any(ids));
            }
            query.load(c).await
        })?;
        out.extend(rows);
    }
    Ok(out)
}

/// Which of `person_ids` are persons cached from peer `peer_id`.
pub async fn persons_of_peer(
    conn: &mut DbConn,
    peer_id: i64,
    person_ids: &[i64],
) -> Result<HashSet<i64>> {
    let mut found = HashSet::new();
    for chunk in person_ids.chunks(CHUNK) {
        let ids: Vec<i64> = with_db!(conn, |c| {
            persons::table
                .filter(persons::peer_id.eq(peer_id))
                .filter(persons::person_id.eq_any(chunk))
                .select(persons::person_id)
                .load(c)
                .await
        })?;
        found.extend(ids);
    }
    Ok(found)
}

/// The nodes of the given slices that this registry exports to `caller`,
/// as pairs (slice, node) by slice: its own nodes, and the caller's nodes
/// cached here (which the caller maps back through `PeerNodes`); a third
/// registry's nodes stay out, as every object of a third registry does.
pub async fn exported_slice_nodes(
    conn: &mut DbConn,
    slice_ids: &[i64],
    caller: Option<i64>,
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let reads = IdReads::of(slice_ids);
    for &batch in &reads.batches {
        let pairs: Vec<(i64, i64)> = load_rows!(conn, {
            let query = slice_node::table
                .inner_join(nodes::table)
                .filter(nodes::peer_id.is_null().or(nodes::peer_id.eq(caller)))
                .order((slice_node::slice_id, slice_node::node_id))
                .select((slice_node::slice_id, slice_node::node_id))
                .into_boxed();
            match batch {
                IdBatch::Span(lo, hi) => query.filter(slice_node::slice_id.between(lo, hi)),
                IdBatch::List(ids) => query.filter(slice_node::slice_id.eq_any(ids.to_vec())),
            }
        })?;
        out.extend(pairs.into_iter().filter(|&(slice, _)| reads.keeps(slice)));
    }
    Ok(out)
}

/// The persons of the given slices that this registry exports, as pairs
/// (slice, person) by slice: its own enabled persons (a disabled person is
/// not federated; a peer's persons are its own to serve).
pub async fn exported_slice_persons(
    conn: &mut DbConn,
    slice_ids: &[i64],
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let reads = IdReads::of(slice_ids);
    for &batch in &reads.batches {
        let pairs: Vec<(i64, i64)> = load_rows!(conn, {
            let query = slice_person::table
                .inner_join(persons::table)
                .filter(persons::peer_id.is_null())
                .filter(persons::enabled.eq(true))
                .order((slice_person::slice_id, slice_person::person_id))
                .select((slice_person::slice_id, slice_person::person_id))
                .into_boxed();
            match batch {
                IdBatch::Span(lo, hi) => query.filter(slice_person::slice_id.between(lo, hi)),
                IdBatch::List(ids) => query.filter(slice_person::slice_id.eq_any(ids.to_vec())),
            }
        })?;
        out.extend(pairs.into_iter().filter(|&(slice, _)| reads.keeps(slice)));
    }
    Ok(out)
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
            match batch {
                IdBatch::Span(lo, hi) => query.filter(person_site::person_id.between(lo, hi)),
                IdBatch::List(ids) => query.filter(person_site::person_id.eq_any(ids.to_vec())),
            }
        })?;
        out.extend(
            rows.into_iter()
                .filter(|&(person, _, _)| reads.keeps(person)),
        );
    }
    Ok(out)
}

/// A peer's nodes as cached here: (local id, the peer's id), by local id.
pub async fn nodes_of_peer(
    conn: &mut DbConn,
    peer_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, i64)>> {
    Ok(with_db!(conn, |c| {
        nodes::table
            .filter(nodes::peer_id.eq(peer_id))
            .filter(nodes::node_id.gt(after_id))
            .order(nodes::node_id)
            .limit(limit)
            .select((nodes::node_id, nodes::peer_node_id.assume_not_null()))
            .load(c)
            .await
    })?)
}

/// A peer's nodes as cached here among `node_ids`: (local id, the peer's
/// id).
pub async fn nodes_of_peer_among(
    conn: &mut DbConn,
    peer_id: i64,
    node_ids: &[i64],
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for chunk in node_ids.chunks(CHUNK) {
        let rows: Vec<(i64, i64)> = with_db!(conn, |c| {
            nodes::table
                .filter(nodes::peer_id.eq(peer_id))
                .filter(nodes::node_id.eq_any(chunk))
                .select((nodes::node_id, nodes::peer_node_id.assume_not_null()))
                .load(c)
                .await
        })?;
        out.extend(rows);
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
    const NAME: &'static str = "site_persons";
    const SQL: (&'static str, &'static str, &'static str) = ("person_site", "person_id", "site_id");
}

/// The local nodes among `node_ids` that this registry exports (those
/// without a slice whitelist), for checking the ids a peer claims in
/// `PeerNodes`: a peer may place its slices only on nodes it was given.
pub async fn exported_node_ids(conn: &mut DbConn, node_ids: &[i64]) -> Result<HashSet<i64>> {
    let mut found = HashSet::new();
    for chunk in node_ids.chunks(CHUNK) {
        let ids: Vec<i64> = with_db!(conn, |c| {
            nodes::table
                .filter(nodes::node_id.eq_any(chunk))
                .filter(nodes::peer_id.is_null())
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    node_slice_whitelist::table
                        .filter(node_slice_whitelist::node_id.eq(nodes::node_id)),
                )))
                .select(nodes::node_id)
                .load(c)
                .await
        })?;
        found.extend(ids);
    }
    Ok(found)
}

/// The values of an enumeration table.
pub async fn known_values(conn: &mut DbConn, table: Enumeration) -> Result<HashSet<String>> {
    use super::schema::{boot_states, key_types, node_types, slice_instantiations};
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
    use super::schema::roles;
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

/// Numbers of objects cached from a peer, per class.
pub async fn counts(conn: &mut DbConn, peer_id: i64) -> Result<PerClass<i64>> {
    let mut counts = PerClass::default();
    for class in Class::ALL {
        counts[class] = with_kind!(class, K => K::count(conn, peer_id).await?);
    }
    Ok(counts)
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
