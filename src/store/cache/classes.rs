//! The five classes as cached tables. [`CachedClass`] describes one: its
//! table, the columns a refresh compares ([`CachedClass::Fields`]), its
//! natural key, and one statement per operation; its provided methods
//! hold the loops over batches of ids and chunks of rows, written once for
//! every class. The `cached_class!` macro declares a class from its table,
//! its columns and its natural key; the same declaration serves the local
//! rows the export reads.

use foldhash::{HashMap, HashMapExt};
use std::future::Future;

use diesel::backend::Backend;
use diesel::dsl::SqlTypeOf;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, BigInt, HasSqlType};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::batch::{CHUNK, IdBatch, IdReads, ROW_BY_ROW, UNNEST_FROM, in_batch, unnest_upsert_sql};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::store::prepared::{UpsertRow, in_list, upsert_each};
use crate::store::schema::{keys, node_slice_whitelist, nodes, persons, sites, slices};
use crate::store::{Db, DbConn};
use crate::{execute_batch, load_rows, with_db};

/// Where a class's natural key is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// The class has no natural key.
    None,
    /// Unique among the objects of one authority (e-mails).
    PerAuthority,
    /// Unique across authorities (login_bases, hostnames, slice names).
    Everywhere,
}

/// One class of objects cached from peers.
///
/// The required methods are one statement each (declared per class by
/// `cached_class!`); the provided ones run them over batches of ids and
/// chunks of rows.
pub trait CachedClass: Sized {
    /// The columns a refresh compares and writes, as they are stored here
    /// (relation ids already translated to local ids).
    type Fields: Clone + PartialEq + crate::peering::diff::Stamped + Send + Sync + std::fmt::Debug;

    /// The class of the objects.
    const CLASS: Class;

    /// Name of the natural key's column, empty for classes without one.
    const NATURAL_KEY: &'static str;

    /// Where the natural key is unique.
    const KEY_SCOPE: KeyScope;

    /// Name of the table.
    const TABLE: &'static str;

    /// Name of the column holding the peer's id of a row.
    const PEER_COLUMN: &'static str;

    /// Name of the column holding the local id of a row.
    const ID_COLUMN: &'static str;

    /// The natural key of a row (`login_base`, `hostname`, ...); `None`
    /// for classes without one.
    fn natural_key(fields: &Self::Fields) -> Option<&str>;

    /// The cached rows of a peer in one batch of the peer's ids (a range
    /// may hold ids not asked for): (peer's id, fields).
    fn fields_in(
        conn: &mut DbConn,
        peer_id: i64,
        batch: IdBatch<'_>,
    ) -> impl Future<Output = Result<Vec<(i64, Self::Fields)>>> + Send;

    /// Local ids and stored digests of all of a peer's cached rows: (peer's
    /// id, local id, digest).
    fn all_ids_and_digests(
        conn: &mut DbConn,
        peer_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, i64, Option<i64>)>>> + Send;

    /// Local ids of a peer's cached rows in one batch of the peer's ids
    /// (a range may hold ids not asked for): (peer's id, local id).
    fn ids_in(
        conn: &mut DbConn,
        peer_id: i64,
        batch: IdBatch<'_>,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>>> + Send;

    /// Number of a peer's cached rows.
    fn count(conn: &mut DbConn, peer_id: i64) -> impl Future<Output = Result<i64>> + Send;

    /// Inserts or updates up to `CHUNK` rows of a peer, keyed on the
    /// peer's ids, in one multi-row statement.
    fn upsert_chunk(
        conn: &mut DbConn,
        peer_id: i64,
        rows: &[(i64, Self::Fields)],
        now: i64,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Inserts or updates rows of a peer, keyed on the peer's ids, in one
    /// PostgreSQL statement through `UNNEST` (see `unnest_upsert_sql`).
    fn upsert_unnest(
        conn: &mut AsyncPgConnection,
        peer_id: i64,
        rows: &[(i64, Self::Fields)],
        now: i64,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Deletes up to `CHUNK` cached rows of a peer by the peer's ids.
    fn delete_chunk(
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

    /// The local rows served to peers among up to `CHUNK` ids, by id.
    fn local_chunk(
        conn: &mut DbConn,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, Self::Fields)>>> + Send;

    /// The rows that hold one of up to `CHUNK` natural keys, among the
    /// rows of peer `within` when given.
    fn holders_chunk(
        conn: &mut DbConn,
        natural_keys: &[String],
        within: Option<i64>,
    ) -> impl Future<Output = Result<Vec<Holder>>> + Send;

    /// The cached rows of a peer among `peer_object_ids`: peer's id →
    /// fields.
    fn load(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, Self::Fields>>> + Send {
        async move {
            let mut cached = HashMap::with_capacity(peer_object_ids.len());
            let reads = IdReads::of(peer_object_ids);
            for &batch in &reads.batches {
                let rows = Self::fields_in(conn, peer_id, batch).await?;
                cached.extend(rows.into_iter().filter(|(id, _)| reads.keeps(*id)));
            }
            Ok(cached)
        }
    }

    /// Local ids of a peer's cached rows: peer's id → local id.
    fn ids(
        conn: &mut DbConn,
        peer_id: i64,
    ) -> impl Future<Output = Result<HashMap<i64, i64>>> + Send {
        async move {
            let rows = Self::all_ids_and_digests(conn, peer_id).await?;
            Ok(rows
                .into_iter()
                .map(|(peer, local, _)| (peer, local))
                .collect())
        }
    }

    /// Local ids of a peer's cached rows among `peer_object_ids`: peer's id
    /// → local id.
    fn ids_among(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, i64>>> + Send {
        async move {
            let mut ids = HashMap::with_capacity(peer_object_ids.len());
            let reads = IdReads::of(peer_object_ids);
            for &batch in &reads.batches {
                let rows = Self::ids_in(conn, peer_id, batch).await?;
                ids.extend(rows.into_iter().filter(|(id, _)| reads.keeps(*id)));
            }
            Ok(ids)
        }
    }

    /// Inserts or updates rows of a peer, keyed on the peer's ids; returns
    /// the number of rows written. On PostgreSQL, from `UNNEST_FROM` rows
    /// on, in one statement; otherwise in chunks of `CHUNK`.
    fn upsert(
        conn: &mut DbConn,
        peer_id: i64,
        rows: &[(i64, Self::Fields)],
        now: i64,
    ) -> impl Future<Output = Result<usize>> + Send {
        async move {
            if rows.is_empty() {
                return Ok(0);
            }
            if let (Db::Pg(c), true) = (conn.db(), rows.len() >= UNNEST_FROM) {
                return Self::upsert_unnest(c, peer_id, rows, now).await;
            }
            let mut written = 0;
            for chunk in rows.chunks(CHUNK) {
                written += Self::upsert_chunk(conn, peer_id, chunk, now).await?;
            }
            Ok(written)
        }
    }

    /// Deletes cached rows of a peer by the peer's ids.
    fn delete(
        conn: &mut DbConn,
        peer_id: i64,
        peer_object_ids: &[i64],
    ) -> impl Future<Output = Result<usize>> + Send {
        async move {
            let mut deleted = 0;
            for chunk in peer_object_ids.chunks(CHUNK) {
                deleted += Self::delete_chunk(conn, peer_id, chunk).await?;
            }
            Ok(deleted)
        }
    }

    /// The local rows served to peers among `ids`, by id.
    fn local_rows(
        conn: &mut DbConn,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, Self::Fields)>>> + Send {
        async move {
            let mut rows = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(CHUNK) {
                rows.extend(Self::local_chunk(conn, chunk).await?);
            }
            Ok(rows)
        }
    }

    /// The rows that hold one of `natural_keys` within the key's
    /// [`KeyScope`]: anywhere for keys unique everywhere, among the peer's
    /// rows for keys unique per authority.
    fn holders(
        conn: &mut DbConn,
        peer_id: i64,
        natural_keys: &[String],
    ) -> impl Future<Output = Result<Vec<Holder>>> + Send {
        async move {
            let within = match Self::KEY_SCOPE {
                KeyScope::None => return Ok(Vec::new()),
                KeyScope::PerAuthority => Some(peer_id),
                KeyScope::Everywhere => None,
            };
            let mut holders = Vec::new();
            for chunk in natural_keys.chunks(CHUNK) {
                holders.extend(Self::holders_chunk(conn, chunk, within).await?);
            }
            Ok(holders)
        }
    }
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

/// Declares a class: its [`CachedClass`] type, and its fields struct and
/// the admin API's changes to them from its list of synced columns, each
/// statement of the trait written once against the table.
macro_rules! cached_class {
    (
        $(#[$doc:meta])*
        $cached:ident / $fields:ident / $changes:ident: $table:ident ($class:ident, $id:ident, $peer_col:ident),
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

        #[doc = concat!("Changes to the synced columns of `", stringify!($table), "` (an admin's update); `None` leaves a column as it is.")]
        #[derive(Debug, Clone, Default, AsChangeset)]
        #[diesel(table_name = $table)]
        pub struct $changes {
            $( $(#[$fdoc])* pub $col: Option<$ty>, )*
        }

        impl $crate::peering::diff::Stamped for $fields {
            fn differs_only_in_digest(&self, other: &Self) -> bool {
                self.sync_digest != other.sync_digest
                    && Self { sync_digest: other.sync_digest, ..self.clone() } == *other
            }

            fn digest(&self) -> Option<i64> {
                self.sync_digest
            }
        }

        impl $changes {
            /// Whether it changes no column.
            pub fn is_empty(&self) -> bool {
                true $( && self.$col.is_none() )*
            }
        }

        impl<DB> QueryFragment<DB> for UpsertRow<'_, $cached, $fields>
        where
            DB: Backend + HasSqlType<BigInt> $( + HasSqlType<SqlTypeOf<$table::$col>> )*,
            i64: ToSql<BigInt, DB>,
            $( $ty: ToSql<SqlTypeOf<$table::$col>, DB>, )*
        {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
                out.push_sql(concat!(
                    "INSERT INTO ", stringify!($table), " (peer_id, ", stringify!($peer_col),
                    $( ", ", stringify!($col), )*
                    $( ", ", stringify!($insert_stamp), )*
                    ") VALUES ("
                ));
                out.push_bind_param::<BigInt, i64>(&self.peer_id)?;
                out.push_sql(", ");
                out.push_bind_param::<BigInt, i64>(&self.peer_object_id)?;
                $(
                    out.push_sql(", ");
                    out.push_bind_param::<SqlTypeOf<$table::$col>, $ty>(&self.fields.$col)?;
                )*
                $(
                    out.push_sql(", ");
                    out.push_bind_param::<SqlTypeOf<$table::$insert_stamp>, i64>(&self.now)?;
                )*
                out.push_sql(concat!(
                    ") ON CONFLICT (peer_id, ", stringify!($peer_col), ") DO UPDATE SET "
                ));
                // The list without its leading ", ".
                out.push_sql(&concat!($( ", ", stringify!($col), " = excluded.", stringify!($col), )*)[2..]);
                $(
                    out.push_sql(concat!(", ", stringify!($update_stamp), " = "));
                    out.push_bind_param::<SqlTypeOf<$table::$update_stamp>, i64>(&self.now)?;
                )*
                Ok(())
            }
        }

        impl CachedClass for $cached {
            type Fields = $fields;
            const CLASS: Class = Class::$class;
            const NATURAL_KEY: &'static str = cached_class!(@name $natural);
            const KEY_SCOPE: KeyScope = cached_class!(@scope $scope $natural);
            const TABLE: &'static str = stringify!($table);
            const PEER_COLUMN: &'static str = stringify!($peer_col);
            const ID_COLUMN: &'static str = stringify!($id);

            fn natural_key(fields: &$fields) -> Option<&str> {
                cached_class!(@natural fields $natural)
            }

            async fn fields_in(
                conn: &mut DbConn,
                peer_id: i64,
                batch: IdBatch<'_>,
            ) -> Result<Vec<(i64, $fields)>> {
                Ok(load_rows!(conn, {
                    let query = $table::table
                        .filter($table::peer_id.eq(peer_id))
                        .select(($table::$peer_col.assume_not_null(), $fields::as_select()))
                        .into_boxed();
                    in_batch(query, $table::$peer_col, batch)
                })?)
            }

            async fn all_ids_and_digests(
                conn: &mut DbConn,
                peer_id: i64,
            ) -> Result<Vec<(i64, i64, Option<i64>)>> {
                Ok(load_rows!(
                    conn,
                    $table::table
                        .filter($table::peer_id.eq(peer_id))
                        .select((
                            $table::$peer_col.assume_not_null(),
                            $table::$id,
                            $table::sync_digest,
                        ))
                )?)
            }

            async fn ids_in(
                conn: &mut DbConn,
                peer_id: i64,
                batch: IdBatch<'_>,
            ) -> Result<Vec<(i64, i64)>> {
                Ok(load_rows!(conn, {
                    let query = $table::table
                        .filter($table::peer_id.eq(peer_id))
                        .select(($table::$peer_col.assume_not_null(), $table::$id))
                        .into_boxed();
                    in_batch(query, $table::$peer_col, batch)
                })?)
            }

            async fn count(conn: &mut DbConn, peer_id: i64) -> Result<i64> {
                Ok(with_db!(conn, |c| $table::table
                    .filter($table::peer_id.eq(peer_id))
                    .count()
                    .get_result::<i64>(c)
                    .await)?)
            }

            async fn upsert_chunk(
                conn: &mut DbConn,
                peer_id: i64,
                rows: &[(i64, $fields)],
                now: i64,
            ) -> Result<usize> {
                use diesel::upsert::excluded;
                // Classes without time stamps do not use `now`.
                let _ = now;
                let row_by_row = match conn.db() {
                    Db::Sqlite(_) => rows.len() <= ROW_BY_ROW,
                    Db::Pg(_) => rows.len() == 1,
                };
                if row_by_row {
                    return upsert_each::<$cached, $fields>(conn, peer_id, rows, now).await;
                }
                let values: Vec<_> = rows
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
                Ok(execute_batch!(conn, {
                    diesel::insert_into($table::table)
                        .values(values)
                        .on_conflict(($table::peer_id, $table::$peer_col))
                        .do_update()
                        .set((
                            $( $table::$col.eq(excluded($table::$col)), )*
                            $( $table::$update_stamp.eq(now), )*
                        ))
                })?)
            }

            async fn upsert_unnest(
                c: &mut AsyncPgConnection,
                peer_id: i64,
                rows: &[(i64, $fields)],
                now: i64,
            ) -> Result<usize> {
                // One array per column.
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
                Ok(diesel_async::RunQueryDsl::execute(query, c).await?)
            }

            async fn delete_chunk(
                conn: &mut DbConn,
                peer_id: i64,
                peer_object_ids: &[i64],
            ) -> Result<usize> {
                Ok(with_db!(conn, |c| {
                    diesel::delete(
                        $table::table
                            .filter($table::peer_id.eq(peer_id))
                            .filter(in_list($table::$peer_col, peer_object_ids)),
                    )
                    .execute(c)
                    .await
                })?)
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

            async fn local_chunk(conn: &mut DbConn, ids: &[i64]) -> Result<Vec<(i64, $fields)>> {
                Ok(load_rows!(
                    conn,
                    $table::table
                        .filter($table::peer_id.is_null())
                        $( .filter($export_filter) )*
                        .filter(in_list($table::$id, ids))
                        .order($table::$id)
                        .select(($table::$id, $fields::as_select()))
                )?)
            }

            async fn holders_chunk(
                conn: &mut DbConn,
                natural_keys: &[String],
                within: Option<i64>,
            ) -> Result<Vec<Holder>> {
                cached_class!(@holders conn, natural_keys, within, $table, $peer_col, $natural)
            }
        }
    };
    (@name none) => { "" };
    (@name $col:ident) => { stringify!($col) };
    (@scope $scope:ident none) => { KeyScope::None };
    (@scope per_authority $col:ident) => { KeyScope::PerAuthority };
    (@scope everywhere $col:ident) => { KeyScope::Everywhere };
    (@natural $fields:ident none) => { { let _ = $fields; None } };
    (@natural $fields:ident $col:ident) => { Some($fields.$col.as_str()) };
    (@holders $conn:ident, $keys:ident, $within:ident, $table:ident, $peer_col:ident, none) => {
        { let _ = (&$conn, $keys, $within); Ok(Vec::new()) }
    };
    (@holders $conn:ident, $keys:ident, $within:ident, $table:ident, $peer_col:ident, $col:ident) => {
        Ok(with_db!($conn, |c| {
            let mut query = $table::table
                .filter(in_list($table::$col, $keys))
                .select(($table::$col, $table::peer_id, $table::$peer_col))
                .into_boxed();
            if let Some(peer_id) = $within {
                query = query.filter($table::peer_id.eq(peer_id));
            }
            query.load(c).await
        })?)
    };
}

cached_class! {
    /// Sites cached from peers.
    CachedSites / SiteFields / SiteFieldChanges: sites (Sites, site_id, peer_site_id),
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
        /// Digest of the object as the peer sent it ([`crate::peering::digest`]);
        /// `None` for local rows, and for cached rows written otherwise
        /// than by a refresh.
        sync_digest: Option<i64>,
    }
}

cached_class! {
    /// Keys cached from peers.
    CachedKeys / KeyFields / KeyFieldChanges: keys (Keys, key_id, peer_key_id),
    natural key none unique nowhere,
    exported where [],
    stamped on insert [] on update [],
    {
        /// Key type (`ssh`).
        key_type: String,
        /// The public key.
        key: String,
        /// Whether the key is blacklisted.
        is_blacklisted: bool,
        /// Digest of the object as the peer sent it ([`crate::peering::digest`]);
        /// `None` for local rows, and for cached rows written otherwise
        /// than by a refresh.
        sync_digest: Option<i64>,
    }
}

cached_class! {
    /// Persons cached from peers.
    CachedPersons / PersonFields / PersonFieldChanges: persons (Persons, person_id, peer_person_id),
    // An e-mail is unique among the persons of one authority only.
    natural key email unique per_authority,
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
        /// Digest of the object as the peer sent it ([`crate::peering::digest`]);
        /// `None` for local rows, and for cached rows written otherwise
        /// than by a refresh.
        sync_digest: Option<i64>,
    }
}

cached_class! {
    /// Nodes cached from peers.
    CachedNodes / NodeFields / NodeFieldChanges: nodes (Nodes, node_id, peer_node_id),
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
        /// Digest of the object as the peer sent it ([`crate::peering::digest`]);
        /// `None` for local rows, and for cached rows written otherwise
        /// than by a refresh.
        sync_digest: Option<i64>,
    }
}

cached_class! {
    /// Slices cached from peers.
    CachedSlices / SliceFields / SliceFieldChanges: slices (Slices, slice_id, peer_slice_id),
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
        /// Digest of the object as the peer sent it ([`crate::peering::digest`]);
        /// `None` for local rows, and for cached rows written otherwise
        /// than by a refresh.
        sync_digest: Option<i64>,
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
