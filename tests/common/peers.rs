//! A peer row for tests that need one (peer tokens), written straight into
//! the server's database.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::store::schema::peers;
use fedreg::with_db;

use super::TestServer;

/// Registers a peer named `peername` in `server`'s database; returns its id.
pub async fn insert_peer(server: &TestServer, peername: &str) -> i64 {
    let store = &server.server.as_ref().expect("server running").app().store;
    let mut conn = store.write().await.expect("database connection");
    with_db!(conn, |c| {
        diesel::insert_into(peers::table)
            .values((
                peers::peername.eq(peername),
                peers::peer_url.eq(format!("http://{peername}.example.org:50051")),
                peers::date_created.eq(0_i64),
            ))
            .returning(peers::peer_id)
            .get_result::<i64>(c)
            .await
    })
    .expect("insert peer")
}
