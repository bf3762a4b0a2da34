//! The five classes as cached tables: [`CachedClass`] describes one (its
//! table, the columns a refresh compares, its natural key) and the
//! `cached_class!` macro declares it for sites, keys, persons, nodes and
//! slices from one column list each; the same declaration serves the
//! local rows the export reads.

use std::collections::HashMap;
use std::future::Future;

use diesel::dsl::SqlTypeOf;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};
use diesel_async::RunQueryDsl;

use super::batch::{CHUNK, IdReads, UNNEST_FROM, in_batch, unnest_upsert_sql};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::store::schema::{keys, node_slice_whitelist, nodes, persons, sites, slices};
use crate::store::{Db, DbConn};
use crate::{execute_batch, load_rows, with_db};

/// One class of objects cached from peers.
pub trait CachedClass: Sized {
    /// The columns a refresh compares and writes, as they are stored here
    /// (relation ids already translated to local ids).
    type Fields: Clone + PartialEq + Send + Sync + std::fmt::Debug;

    /// The class of the objects.
    const CLASS: Class;

    /// Name of the natural key's column, empty for classes without one.
    const NATURAL_KEY: &'static str;

    /// Name of the table.
    const TABLE: &'static str;

    /// Name of the column holding the peer's id of a row.
    const PEER_COLUMN: &'static str;

    /// Name of the column holding the local id of a row.
    const ID_COLUMN: &'static str;

    /// The natural key of a row (`login_base`, `hostname`, ...), unique
    /// across authorities; `None` for classes without one.
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

/// Evaluates `$body` with the type `$k` standing for the [`CachedClass`]
/// of `$class` (a [`Class`]): the one place a class becomes its type.
#[macro_export]
macro_rules! with_class {
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

/// Implements [`CachedClass`] for a table from its list of synced columns.
macro_rules! cached_class {
    (
        $(#[$doc:meta])*
        $cached:ident / $fields:ident: $table:ident ($class:ident, $id:ident, $peer_col:ident),
        natural key $natural:tt unique $scope:ident,
        exported where [$($export_filter:expr),*],
        stamped on insert [$($insert_stamp:ident),*] on update [$($update_stamp:ident),*],
        { $( $(#[$fdoc:meta])* $col:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$doc])*
        pub struct $cached;

        #[doc = concat!("The columns of `", stringify!($table), "` a refresh compares and writes.")]
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
        #[diesel(table_name = $table, treat_none_as_default_value = false)]
        pub struct $fields {
            $( $(#[$fdoc])* pub $col: $ty, )*
        }

        impl CachedClass for $cached {
            type Fields = $fields;
            const CLASS: Class = Class::$class;
            const NATURAL_KEY: &'static str = cached_class!(@name $natural);
            const TABLE: &'static str = stringify!($table);
            const PEER_COLUMN: &'static str = stringify!($peer_col);
            const ID_COLUMN: &'static str = stringify!($id);

            fn natural_key(fields: &$fields) -> Option<&str> {
                cached_class!(@natural fields $natural)
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
                        in_batch!(query, $table::$peer_col, batch)
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
                        in_batch!(query, $table::$peer_col, batch)
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
                cached_class!(@holders conn, peer_id, natural_keys, $table, $peer_col, $scope $natural)
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
        cached_class!(@holders_where $conn, $keys, $table, $col, $peer_col, $table::peer_id.eq($peer_id))
    };
    (@holders $conn:ident, $peer_id:ident, $keys:ident, $table:ident, $peer_col:ident, everywhere $col:ident) => {
        { let _ = $peer_id; cached_class!(@holders_where $conn, $keys, $table, $col, $peer_col) }
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

cached_class! {
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

cached_class! {
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

cached_class! {
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

cached_class! {
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

cached_class! {
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

/// Numbers of objects cached from a peer, per class.
pub async fn counts(conn: &mut DbConn, peer_id: i64) -> Result<PerClass<i64>> {
    let mut counts = PerClass::default();
    for class in Class::ALL {
        counts[class] = with_class!(class, K => K::count(conn, peer_id).await?);
    }
    Ok(counts)
}
