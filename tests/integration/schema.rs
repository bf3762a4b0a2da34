//! The hand-written `schema.rs` matches both migration sets: every table and
//! column it declares exists in a freshly migrated SQLite and PostgreSQL
//! database (selecting all of a table's columns fails otherwise).

use crate::common::{Backend, TestServer};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::store::Store;
use fedreg::store::schema::*;
use fedreg::with_db;

macro_rules! check_tables {
    ($conn:expr, $($table:ident),* $(,)?) => {
        $(
            let selected = with_db!($conn, |c| {
                $table::table.select($table::all_columns).limit(0).execute(c).await
            });
            assert!(selected.is_ok(), "table {}: {:?}", stringify!($table), selected.err());
        )*
    };
}

async fn schema_matches_migrations(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = Store::connect(&server.database_url).await.unwrap();
    let mut conn = store.read().await.unwrap();
    check_tables!(
        conn,
        peers,
        roles,
        key_types,
        boot_states,
        node_types,
        slice_instantiations,
        sites,
        persons,
        keys,
        nodes,
        slices,
        person_site,
        person_role,
        person_key,
        slice_node,
        slice_person,
        node_slice_whitelist,
        export_meta,
        export_log,
        tokens,
        invitations,
    );
    let roles: Vec<(i32, String)> = with_db!(conn, |c| {
        roles::table.order(roles::role_id).load(c).await
    })
    .unwrap();
    let roles: Vec<_> = roles
        .iter()
        .map(|(id, name)| (*id, name.as_str()))
        .collect();
    assert_eq!(
        roles,
        [(10, "admin"), (20, "pi"), (30, "user"), (40, "tech")]
    );
    let boot_states: Vec<String> = with_db!(conn, |c| {
        boot_states::table
            .select(boot_states::boot_state)
            .order(boot_states::boot_state)
            .load(c)
            .await
    })
    .unwrap();
    assert_eq!(boot_states, ["boot", "disabled", "reinstall", "safeboot"]);
}

backend_tests!(schema_matches_migrations);
