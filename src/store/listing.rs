//! Listing objects page by page, filtered by origin, with the relations
//! of each page's rows ([`Listed`]).

use std::collections::HashMap;
use std::future::Future;

use super::DbConn;
use crate::error::Result;

/// Which objects a listing returns, by authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Local and foreign.
    All,
    /// Only local objects.
    Local,
    /// Only objects cached from peers.
    Foreign,
    /// Only objects cached from this peer.
    Peer(i64),
}

/// One page of a listing: objects with ids above `after_id`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Which objects.
    pub origin: Origin,
    /// Exclusive lower bound on the id (the last id of the previous page).
    pub after_id: i64,
    /// Maximum number of rows.
    pub limit: i64,
}

/// Rows of a class listed page by page, each with its relations (the ids
/// of the objects it is linked to).
pub trait Listed: Sized + Send {
    /// The relations of one row.
    type Relations: Default + Send;

    /// The row's id.
    fn id(&self) -> i64;

    /// One page of rows.
    fn page(conn: &mut DbConn, page: Page) -> impl Future<Output = Result<Vec<Self>>> + Send;

    /// The relations of the rows `ids`, by id, a few queries whatever
    /// their number.
    fn relations(
        conn: &mut DbConn,
        ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, Self::Relations>>> + Send;
}

/// Loads one [`Page`] of `$row` from `$table`, ordered by `$id`.
///
/// Every object table has a nullable `peer_id`; the macro applies the
/// origin filter and keyset pagination once for all of them.
#[macro_export]
macro_rules! load_page {
    ($conn:expr, $table:ident, $id:ident, $row:ty, $page:expr) => {{
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use $crate::store::listing::Origin;
        use $crate::store::schema::$table;
        let page: $crate::store::listing::Page = $page;
        $crate::with_db!($conn, |c| {
            let mut query = $table::table
                .select(<$row>::as_select())
                .filter($table::$id.gt(page.after_id))
                .order($table::$id)
                .limit(page.limit)
                .into_boxed();
            query = match page.origin {
                Origin::All => query,
                Origin::Local => query.filter($table::peer_id.is_null()),
                Origin::Foreign => query.filter($table::peer_id.is_not_null()),
                Origin::Peer(id) => query.filter($table::peer_id.eq(id)),
            };
            query.load(c).await
        })
    }};
}
