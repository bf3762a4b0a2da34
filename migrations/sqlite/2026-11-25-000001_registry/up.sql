-- The registry: peers, enumerations, objects (local or cached from a peer),
-- memberships and API tokens. Times are Unix seconds.

CREATE TABLE peers (
    peer_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peername TEXT NOT NULL UNIQUE,
    peer_url TEXT NOT NULL,
    cacert TEXT,
    outbound_token TEXT,
    shortname TEXT NOT NULL DEFAULT '',
    hrn_root TEXT NOT NULL DEFAULT '',
    refresh_interval_seconds BIGINT NOT NULL DEFAULT 0 CHECK (refresh_interval_seconds >= 0),
    max_delete_fraction REAL CHECK (max_delete_fraction >= 0 AND max_delete_fraction <= 1),
    date_created BIGINT NOT NULL,
    last_refresh_time BIGINT,
    last_refresh_outcome INTEGER NOT NULL DEFAULT 0,
    last_refresh_report BLOB
);

CREATE TABLE roles (
    role_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO roles (role_id, name) VALUES (10, 'admin'), (20, 'pi'), (30, 'user'), (40, 'tech');

CREATE TABLE key_types (key_type TEXT PRIMARY KEY);
INSERT INTO key_types VALUES ('ssh');

CREATE TABLE boot_states (boot_state TEXT PRIMARY KEY);
INSERT INTO boot_states VALUES ('boot'), ('safeboot'), ('reinstall'), ('disabled');

CREATE TABLE node_types (node_type TEXT PRIMARY KEY);
INSERT INTO node_types VALUES ('regular'), ('reservable');

CREATE TABLE slice_instantiations (instantiation TEXT PRIMARY KEY);
INSERT INTO slice_instantiations VALUES
    ('not-instantiated'), ('plc-instantiated'), ('delegated'), ('nm-controller');

CREATE TABLE sites (
    site_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    peer_site_id BIGINT,
    login_base TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    abbreviated_name TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    is_public BOOLEAN NOT NULL DEFAULT TRUE,
    max_slices INTEGER NOT NULL DEFAULT 10,
    max_slivers INTEGER NOT NULL DEFAULT 1000,
    latitude REAL,
    longitude REAL,
    url TEXT NOT NULL DEFAULT '',
    ext_consortium_id BIGINT,
    date_created BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    CHECK ((peer_id IS NULL) = (peer_site_id IS NULL)),
    UNIQUE (peer_id, peer_site_id)
);

CREATE TABLE persons (
    person_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    peer_person_id BIGINT,
    email TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash TEXT,
    verification_key TEXT,
    verification_expires BIGINT,
    date_created BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    CHECK ((peer_id IS NULL) = (peer_person_id IS NULL)),
    UNIQUE (peer_id, peer_person_id)
);
-- E-mail addresses are unique per authority: among local persons, and among
-- the persons of each peer.
CREATE UNIQUE INDEX persons_local_email ON persons (email) WHERE peer_id IS NULL;
CREATE UNIQUE INDEX persons_peer_email ON persons (peer_id, email) WHERE peer_id IS NOT NULL;

CREATE TABLE keys (
    key_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    peer_key_id BIGINT,
    key_type TEXT NOT NULL REFERENCES key_types (key_type),
    key TEXT NOT NULL,
    is_blacklisted BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK ((peer_id IS NULL) = (peer_key_id IS NULL)),
    UNIQUE (peer_id, peer_key_id)
);

CREATE TABLE nodes (
    node_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    peer_node_id BIGINT,
    hostname TEXT NOT NULL UNIQUE,
    site_id BIGINT NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    node_type TEXT NOT NULL REFERENCES node_types (node_type),
    boot_state TEXT NOT NULL REFERENCES boot_states (boot_state),
    run_level TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    ssh_rsa_key TEXT NOT NULL DEFAULT '',
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    boot_nonce TEXT,
    node_key TEXT,
    session TEXT,
    date_created BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    last_contact BIGINT,
    CHECK ((peer_id IS NULL) = (peer_node_id IS NULL)),
    UNIQUE (peer_id, peer_node_id)
);
CREATE INDEX nodes_site ON nodes (site_id);

CREATE TABLE slices (
    slice_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    peer_slice_id BIGINT,
    site_id BIGINT NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    name TEXT NOT NULL UNIQUE,
    instantiation TEXT NOT NULL REFERENCES slice_instantiations (instantiation),
    url TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    max_nodes INTEGER NOT NULL DEFAULT 100,
    creator_person_id BIGINT REFERENCES persons (person_id) ON DELETE SET NULL,
    is_system BOOLEAN NOT NULL DEFAULT FALSE,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    CHECK ((peer_id IS NULL) = (peer_slice_id IS NULL)),
    UNIQUE (peer_id, peer_slice_id)
);
CREATE INDEX slices_site ON slices (site_id);
CREATE INDEX slices_creator ON slices (creator_person_id);

CREATE TABLE person_site (
    person_id BIGINT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    site_id BIGINT NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    is_primary BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (person_id, site_id)
);
CREATE INDEX person_site_site ON person_site (site_id);
CREATE UNIQUE INDEX person_site_one_primary ON person_site (person_id) WHERE is_primary;

CREATE TABLE person_role (
    person_id BIGINT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles (role_id),
    PRIMARY KEY (person_id, role_id)
);

CREATE TABLE person_key (
    person_id BIGINT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    key_id BIGINT NOT NULL UNIQUE REFERENCES keys (key_id) ON DELETE CASCADE,
    PRIMARY KEY (person_id, key_id)
);

CREATE TABLE slice_node (
    slice_id BIGINT NOT NULL REFERENCES slices (slice_id) ON DELETE CASCADE,
    node_id BIGINT NOT NULL REFERENCES nodes (node_id) ON DELETE CASCADE,
    PRIMARY KEY (slice_id, node_id)
);
CREATE INDEX slice_node_node ON slice_node (node_id);

CREATE TABLE slice_person (
    slice_id BIGINT NOT NULL REFERENCES slices (slice_id) ON DELETE CASCADE,
    person_id BIGINT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    PRIMARY KEY (slice_id, person_id)
);
CREATE INDEX slice_person_person ON slice_person (person_id);

CREATE TABLE node_slice_whitelist (
    node_id BIGINT NOT NULL REFERENCES nodes (node_id) ON DELETE CASCADE,
    slice_id BIGINT NOT NULL REFERENCES slices (slice_id) ON DELETE CASCADE,
    PRIMARY KEY (node_id, slice_id)
);
CREATE INDEX node_slice_whitelist_slice ON node_slice_whitelist (slice_id);

CREATE TABLE tokens (
    token_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'peer')),
    peer_id BIGINT REFERENCES peers (peer_id) ON DELETE CASCADE,
    created BIGINT NOT NULL,
    last_used BIGINT,
    CHECK ((role = 'peer') = (peer_id IS NOT NULL))
);
