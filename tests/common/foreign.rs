//! Foreign objects for tests, written straight into a test server's
//! database as a refresh from a peer would leave them: a peer row, then
//! objects with `peer_id` and their id at that peer.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::store::schema::{
    keys as keys_table, peers, person_key, person_role, person_site, slice_person, slices,
};
use fedreg::store::{Store, keys, persons, sites};
use fedreg::with_db;

use super::TestServer;

/// Writes foreign objects into a test server's database.
pub struct Foreign {
    store: Store,
}

impl Foreign {
    /// Uses the running server's own store (on SQLite, its single writer).
    pub fn of(server: &TestServer) -> Foreign {
        let store = server
            .server
            .as_ref()
            .expect("server running")
            .app()
            .store
            .clone();
        Foreign { store }
    }

    /// The server's store, for checks on stored rows.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds a peer named `name`; returns its id.
    pub async fn peer(&self, name: &str) -> i64 {
        let mut conn = self.store.write().await.unwrap();
        with_db!(conn, |c| {
            diesel::insert_into(peers::table)
                .values((
                    peers::peername.eq(name),
                    peers::peer_url.eq(format!("http://{name}.example.org:50051")),
                    peers::date_created.eq(0i64),
                ))
                .returning(peers::peer_id)
                .get_result::<i64>(c)
                .await
        })
        .unwrap()
    }

    /// Caches a person of `peer_id` (id `peer_person_id` there); returns its local id.
    pub async fn person(&self, peer_id: i64, peer_person_id: i64, email: &str) -> i64 {
        let mut conn = self.store.write().await.unwrap();
        let row = persons::insert(
            &mut conn,
            &persons::NewPerson {
                peer_id: Some(peer_id),
                peer_person_id: Some(peer_person_id),
                email: email.into(),
                first_name: "Foreign".into(),
                last_name: format!("Person {peer_person_id}"),
                title: String::new(),
                phone: String::new(),
                url: String::new(),
                bio: String::new(),
                enabled: true,
                password_hash: None,
                date_created: 0,
                last_updated: 0,
            },
        )
        .await
        .unwrap();
        row.person_id
    }

    /// Caches a site of `peer_id`; returns its local id.
    pub async fn site(&self, peer_id: i64, peer_site_id: i64, login_base: &str) -> i64 {
        let mut conn = self.store.write().await.unwrap();
        let row = sites::insert(
            &mut conn,
            &sites::NewSite {
                peer_id: Some(peer_id),
                peer_site_id: Some(peer_site_id),
                login_base: login_base.into(),
                name: format!("Foreign site {login_base}"),
                abbreviated_name: String::new(),
                enabled: true,
                is_public: true,
                max_slices: 10,
                max_slivers: 1000,
                latitude: None,
                longitude: None,
                url: String::new(),
                ext_consortium_id: None,
                date_created: 0,
                last_updated: 0,
            },
        )
        .await
        .unwrap();
        row.site_id
    }

    /// Caches a key of `peer_id` owned by `person_id`; returns its local id.
    pub async fn key(&self, peer_id: i64, peer_key_id: i64, person_id: i64, key: &str) -> i64 {
        let mut conn = self.store.write().await.unwrap();
        let row = keys::insert(
            &mut conn,
            &keys::NewKey {
                peer_id: Some(peer_id),
                peer_key_id: Some(peer_key_id),
                key_type: "ssh".into(),
                key: key.into(),
                is_blacklisted: false,
            },
        )
        .await
        .unwrap();
        keys::set_owner(&mut conn, row.key_id, person_id)
            .await
            .unwrap();
        row.key_id
    }

    /// Adds a local slice of `site_id` created by `creator`, with `members`
    /// (there is no slice API yet); returns its id.
    pub async fn slice_with(&self, site_id: i64, name: &str, creator: i64, members: &[i64]) -> i64 {
        let mut conn = self.store.write().await.unwrap();
        let slice_id = with_db!(conn, |c| {
            diesel::insert_into(slices::table)
                .values((
                    slices::site_id.eq(site_id),
                    slices::name.eq(name),
                    slices::instantiation.eq("plc-instantiated"),
                    slices::creator_person_id.eq(Some(creator)),
                    slices::created.eq(0i64),
                    slices::expires.eq(0i64),
                ))
                .returning(slices::slice_id)
                .get_result::<i64>(c)
                .await
        })
        .unwrap();
        // One statement per member: diesel's multi-row insert is not
        // available for SQLite through diesel-async; fine for a fixture.
        for &person_id in members {
            with_db!(conn, |c| {
                diesel::insert_into(slice_person::table)
                    .values((
                        slice_person::slice_id.eq(slice_id),
                        slice_person::person_id.eq(person_id),
                    ))
                    .execute(c)
                    .await
            })
            .unwrap();
        }
        slice_id
    }

    /// The creator of a slice, read from the database.
    pub async fn slice_creator(&self, slice_id: i64) -> Option<i64> {
        let mut conn = self.store.read().await.unwrap();
        with_db!(conn, |c| {
            slices::table
                .find(slice_id)
                .select(slices::creator_person_id)
                .first::<Option<i64>>(c)
                .await
        })
        .unwrap()
    }

    /// The stored row of a person, secrets included.
    pub async fn person_row(&self, person_id: i64) -> persons::PersonRow {
        let mut conn = self.store.read().await.unwrap();
        persons::by_id(&mut conn, person_id).await.unwrap().unwrap()
    }

    /// Rows left in each link table of a person, and the number of keys:
    /// `[person_site, person_role, person_key, slice_person, keys]`.
    pub async fn links_of(&self, person_id: i64, key_ids: &[i64]) -> [i64; 5] {
        let mut conn = self.store.read().await.unwrap();
        let sites: i64 = with_db!(conn, |c| {
            person_site::table
                .filter(person_site::person_id.eq(person_id))
                .count()
                .get_result(c)
                .await
        })
        .unwrap();
        let roles: i64 = with_db!(conn, |c| {
            person_role::table
                .filter(person_role::person_id.eq(person_id))
                .count()
                .get_result(c)
                .await
        })
        .unwrap();
        let owned: i64 = with_db!(conn, |c| {
            person_key::table
                .filter(person_key::person_id.eq(person_id))
                .count()
                .get_result(c)
                .await
        })
        .unwrap();
        let slices: i64 = with_db!(conn, |c| {
            slice_person::table
                .filter(slice_person::person_id.eq(person_id))
                .count()
                .get_result(c)
                .await
        })
        .unwrap();
        let keys: i64 = with_db!(conn, |c| {
            keys_table::table
                .filter(keys_table::key_id.eq_any(key_ids))
                .count()
                .get_result(c)
                .await
        })
        .unwrap();
        [sites, roles, owned, slices, keys]
    }
}
