//! Diesel table definitions, one set for both backends.
//!
//! Mirrors `migrations/postgres` and `migrations/sqlite`, which declare the same
//! columns with each database's types (an identity column on PostgreSQL is an
//! `INTEGER PRIMARY KEY AUTOINCREMENT` on SQLite; both read as `BigInt`).
//! `tests/integration/schema.rs` checks that every column here exists in both databases.

diesel::table! {
    peers (peer_id) {
        peer_id -> BigInt,
        peername -> Text,
        peer_url -> Text,
        cacert -> Nullable<Text>,
        outbound_token -> Nullable<Text>,
        shortname -> Text,
        hrn_root -> Text,
        refresh_interval_seconds -> BigInt,
        max_delete_fraction -> Nullable<Double>,
        date_created -> BigInt,
        last_refresh_time -> Nullable<BigInt>,
        last_refresh_outcome -> Integer,
        last_refresh_report -> Nullable<Binary>,
        checkpoint_epoch -> Nullable<Text>,
        checkpoint_revision -> Nullable<BigInt>,
        follow -> Bool,
        client_identity -> Nullable<Text>,
        last_success_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    export_meta (only_row) {
        only_row -> Integer,
        epoch -> Text,
        revision -> BigInt,
        compacted_through -> BigInt,
    }
}

diesel::table! {
    export_log (kind, object_id) {
        kind -> Integer,
        object_id -> BigInt,
        revision -> BigInt,
        changed_at -> BigInt,
    }
}

diesel::table! {
    export_digests (kind, object_id) {
        kind -> Integer,
        object_id -> BigInt,
        digest -> BigInt,
    }
}

diesel::table! {
    sync_applying (peer_id) {
        peer_id -> BigInt,
    }
}

diesel::table! {
    export_digest_meta (only_row) {
        only_row -> Integer,
        epoch -> Text,
        revision -> BigInt,
    }
}

diesel::table! {
    roles (role_id) {
        role_id -> Integer,
        name -> Text,
    }
}

diesel::table! {
    key_types (key_type) {
        key_type -> Text,
    }
}

diesel::table! {
    boot_states (boot_state) {
        boot_state -> Text,
    }
}

diesel::table! {
    node_types (node_type) {
        node_type -> Text,
    }
}

diesel::table! {
    slice_instantiations (instantiation) {
        instantiation -> Text,
    }
}

diesel::table! {
    sites (site_id) {
        site_id -> BigInt,
        peer_id -> Nullable<BigInt>,
        peer_site_id -> Nullable<BigInt>,
        login_base -> Text,
        name -> Text,
        abbreviated_name -> Text,
        enabled -> Bool,
        is_public -> Bool,
        max_slices -> Integer,
        max_slivers -> Integer,
        latitude -> Nullable<Double>,
        longitude -> Nullable<Double>,
        url -> Text,
        ext_consortium_id -> Nullable<BigInt>,
        date_created -> BigInt,
        last_updated -> BigInt,
        sync_digest -> Nullable<BigInt>,
    }
}

diesel::table! {
    persons (person_id) {
        person_id -> BigInt,
        peer_id -> Nullable<BigInt>,
        peer_person_id -> Nullable<BigInt>,
        email -> Text,
        first_name -> Text,
        last_name -> Text,
        title -> Text,
        phone -> Text,
        url -> Text,
        bio -> Text,
        enabled -> Bool,
        password_hash -> Nullable<Text>,
        verification_key -> Nullable<Text>,
        verification_expires -> Nullable<BigInt>,
        date_created -> BigInt,
        last_updated -> BigInt,
        sync_digest -> Nullable<BigInt>,
    }
}

diesel::table! {
    keys (key_id) {
        key_id -> BigInt,
        peer_id -> Nullable<BigInt>,
        peer_key_id -> Nullable<BigInt>,
        key_type -> Text,
        key -> Text,
        is_blacklisted -> Bool,
        sync_digest -> Nullable<BigInt>,
    }
}

diesel::table! {
    nodes (node_id) {
        node_id -> BigInt,
        peer_id -> Nullable<BigInt>,
        peer_node_id -> Nullable<BigInt>,
        hostname -> Text,
        site_id -> BigInt,
        node_type -> Text,
        boot_state -> Text,
        run_level -> Text,
        model -> Text,
        version -> Text,
        ssh_rsa_key -> Text,
        verified -> Bool,
        boot_nonce -> Nullable<Text>,
        node_key -> Nullable<Text>,
        session -> Nullable<Text>,
        date_created -> BigInt,
        last_updated -> BigInt,
        last_contact -> Nullable<BigInt>,
        sync_digest -> Nullable<BigInt>,
    }
}

diesel::table! {
    slices (slice_id) {
        slice_id -> BigInt,
        peer_id -> Nullable<BigInt>,
        peer_slice_id -> Nullable<BigInt>,
        site_id -> BigInt,
        name -> Text,
        instantiation -> Text,
        url -> Text,
        description -> Text,
        max_nodes -> Integer,
        creator_person_id -> Nullable<BigInt>,
        is_system -> Bool,
        created -> BigInt,
        expires -> BigInt,
        sync_digest -> Nullable<BigInt>,
    }
}

diesel::table! {
    person_site (person_id, site_id) {
        person_id -> BigInt,
        site_id -> BigInt,
        is_primary -> Bool,
    }
}

diesel::table! {
    person_role (person_id, role_id) {
        person_id -> BigInt,
        role_id -> Integer,
    }
}

diesel::table! {
    person_key (person_id, key_id) {
        person_id -> BigInt,
        key_id -> BigInt,
    }
}

diesel::table! {
    slice_node (slice_id, node_id) {
        slice_id -> BigInt,
        node_id -> BigInt,
    }
}

diesel::table! {
    slice_person (slice_id, person_id) {
        slice_id -> BigInt,
        person_id -> BigInt,
    }
}

diesel::table! {
    node_slice_whitelist (node_id, slice_id) {
        node_id -> BigInt,
        slice_id -> BigInt,
    }
}

diesel::table! {
    tokens (token_id) {
        token_id -> BigInt,
        name -> Text,
        token_hash -> Text,
        role -> Text,
        peer_id -> Nullable<BigInt>,
        created -> BigInt,
        last_used -> Nullable<BigInt>,
    }
}

diesel::table! {
    invitations (invitation_id) {
        invitation_id -> BigInt,
        peername -> Text,
        secret_hash -> Text,
        created -> BigInt,
        expires -> BigInt,
        used -> Nullable<BigInt>,
    }
}

diesel::joinable!(sites -> peers (peer_id));
diesel::joinable!(persons -> peers (peer_id));
diesel::joinable!(keys -> peers (peer_id));
diesel::joinable!(nodes -> sites (site_id));
diesel::joinable!(slices -> sites (site_id));
diesel::joinable!(person_site -> persons (person_id));
diesel::joinable!(person_site -> sites (site_id));
diesel::joinable!(person_role -> persons (person_id));
diesel::joinable!(person_key -> persons (person_id));
diesel::joinable!(person_key -> keys (key_id));
diesel::joinable!(slice_node -> slices (slice_id));
diesel::joinable!(slice_node -> nodes (node_id));
diesel::joinable!(slice_person -> slices (slice_id));
diesel::joinable!(slice_person -> persons (person_id));
diesel::joinable!(node_slice_whitelist -> nodes (node_id));
diesel::joinable!(node_slice_whitelist -> slices (slice_id));
diesel::joinable!(tokens -> peers (peer_id));

diesel::allow_tables_to_appear_in_same_query!(
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
    tokens,
    export_meta,
    export_log,
    export_digests,
    export_digest_meta,
    sync_applying,
    invitations,
);
