//! Reading and setting stored columns no API exposes: a person's password
//! hash, the link rows a deleted person leaves (or not), the secrets that
//! only the registry's own services set (password reset, boot manager), a
//! peer's outbound token, and the stored invitations. Everything else a
//! test needs goes through the gRPC API.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::store::invitations::InvitationRow;
use fedreg::store::schema::invitations;
use fedreg::store::schema::{
    keys as keys_table, nodes, person_key, person_role, person_site, persons as persons_table,
    slice_person,
};
use fedreg::store::{Store, peers, persons};
use fedreg::with_db;

use super::TestServer;

/// Stored rows of a running test server.
pub struct Rows {
    store: Store,
}

impl Rows {
    /// Uses the running server's own store (on SQLite, its single writer).
    pub fn of(server: &TestServer) -> Rows {
        let store = server
            .server
            .as_ref()
            .expect("server running")
            .app()
            .store
            .clone();
        Rows { store }
    }

    /// Opens the database at `database_url` (of a server that has stopped,
    /// on SQLite).
    pub async fn open(database_url: &str) -> Rows {
        let store = Store::connect(database_url)
            .await
            .expect("open the database");
        Rows { store }
    }

    /// Runs SQL by hand, as an operator at the database's prompt would;
    /// returns the rows it changed.
    pub async fn execute(&self, sql: &str) -> usize {
        let mut conn = self.store.write().await.unwrap();
        with_db!(conn, |c| diesel::sql_query(sql).execute(c).await)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The one integer a query selects `AS value`.
    pub async fn value(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            value: i64,
        }
        let mut conn = self.store.read().await.unwrap();
        let row: Value = with_db!(conn, |c| diesel::sql_query(sql).get_result(c).await)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.value
    }

    /// The outbound token stored for the peer named `peername`.
    pub async fn outbound_token(&self, peername: &str) -> Option<String> {
        let mut conn = self.store.read().await.unwrap();
        let row = peers::by_name(&mut conn, peername).await.unwrap();
        row.expect("the peer exists").outbound_token
    }

    /// The stored row of a person, secrets included.
    pub async fn person_row(&self, person_id: i64) -> persons::PersonRow {
        let mut conn = self.store.read().await.unwrap();
        persons::by_id(&mut conn, person_id).await.unwrap().unwrap()
    }

    /// Rows left in each link table of a person, and how many of `key_ids`
    /// are left: `[person_site, person_role, person_key, slice_person, keys]`.
    pub async fn links_of(&self, person_id: i64, key_ids: &[i64]) -> [i64; 5] {
        let mut conn = self.store.read().await.unwrap();
        macro_rules! count {
            ($table:ident, $column:expr) => {
                with_db!(conn, |c| {
                    $table::table
                        .filter($column)
                        .count()
                        .get_result::<i64>(c)
                        .await
                })
                .unwrap()
            };
        }
        [
            count!(person_site, person_site::person_id.eq(person_id)),
            count!(person_role, person_role::person_id.eq(person_id)),
            count!(person_key, person_key::person_id.eq(person_id)),
            count!(slice_person, slice_person::person_id.eq(person_id)),
            count!(keys_table, keys_table::key_id.eq_any(key_ids)),
        ]
    }

    /// Sets a person's password-reset verification key and its expiry.
    pub async fn set_verification(&self, person_id: i64, key: &str, expires: i64) {
        let mut conn = self.store.write().await.unwrap();
        with_db!(conn, |c| {
            diesel::update(persons_table::table.find(person_id))
                .set((
                    persons_table::verification_key.eq(key),
                    persons_table::verification_expires.eq(expires),
                ))
                .execute(c)
                .await
        })
        .unwrap();
    }

    /// Sets the boot nonce, node key and session of every node.
    pub async fn set_node_secrets(&self, boot_nonce: &str, node_key: &str, session: &str) {
        let mut conn = self.store.write().await.unwrap();
        with_db!(conn, |c| {
            diesel::update(nodes::table)
                .set((
                    nodes::boot_nonce.eq(boot_nonce),
                    nodes::node_key.eq(node_key),
                    nodes::session.eq(session),
                ))
                .execute(c)
                .await
        })
        .unwrap();
    }

    /// Every stored invitation, by id.
    pub async fn invitations(&self) -> Vec<InvitationRow> {
        let mut conn = self.store.read().await.unwrap();
        with_db!(conn, |c| {
            invitations::table
                .order(invitations::invitation_id)
                .select(InvitationRow::as_select())
                .load(c)
                .await
        })
        .unwrap()
    }
}
