-- Change revisions of the exported objects, for GetPeerData since a
-- revision (delta refresh).
--
-- export_meta holds one row: the database's epoch (a random name drawn once,
-- so a peer can tell a rebuilt or restored database from the one it
-- followed), the last revision handed out, and the revision through which
-- the log was compacted.
--
-- export_log holds, per exported object, the revision of its last change:
-- created, updated, deleted, or one of its memberships changed (a person
-- owns its keys, sites and roles; a slice its nodes and persons). Triggers
-- write it in the transaction of the change, for local objects only (rows
-- cached from peers are never exported), whatever the code path: the admin
-- API, cascades of a refresh that deletes a peer's node from a local slice,
-- a deleted peer. On SQLite each logged row takes the next revision; the
-- database has one writer at a time, so revisions follow commit order.
CREATE TABLE export_meta (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch TEXT NOT NULL,
    revision BIGINT NOT NULL,
    compacted_through BIGINT NOT NULL
);
INSERT INTO export_meta VALUES (1, lower(hex(randomblob(16))), 0, 0);

-- kind: 1 site, 2 key, 3 person, 4 node, 5 slice (the codes are defined
-- in `Class::log_code`, src/class.rs; the triggers below use the same).
CREATE TABLE export_log (
    kind INTEGER NOT NULL,
    object_id BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (kind, object_id)
);
-- Deltas and compaction read the log by revision.
CREATE INDEX export_log_revision ON export_log (revision);


-- sites

CREATE TRIGGER sites_log_insert AFTER INSERT ON sites
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 1, NEW.site_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER sites_log_update AFTER UPDATE ON sites
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 1, NEW.site_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER sites_log_delete AFTER DELETE ON sites
WHEN OLD.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 1, OLD.site_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- keys

CREATE TRIGGER keys_log_insert AFTER INSERT ON keys
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 2, NEW.key_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER keys_log_update AFTER UPDATE ON keys
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 2, NEW.key_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER keys_log_delete AFTER DELETE ON keys
WHEN OLD.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 2, OLD.key_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- persons

CREATE TRIGGER persons_log_insert AFTER INSERT ON persons
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER persons_log_update AFTER UPDATE ON persons
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER persons_log_delete AFTER DELETE ON persons
WHEN OLD.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, OLD.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- nodes

CREATE TRIGGER nodes_log_insert AFTER INSERT ON nodes
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 4, NEW.node_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER nodes_log_update AFTER UPDATE ON nodes
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 4, NEW.node_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER nodes_log_delete AFTER DELETE ON nodes
WHEN OLD.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 4, OLD.node_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- slices

CREATE TRIGGER slices_log_insert AFTER INSERT ON slices
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, NEW.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER slices_log_update AFTER UPDATE ON slices
WHEN NEW.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, NEW.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER slices_log_delete AFTER DELETE ON slices
WHEN OLD.peer_id IS NULL BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, OLD.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- A person's enabled flag decides whether peers cache the person, and so
-- whether the persons and creators of slices that name it reach them:
-- those local slices change too.
CREATE TRIGGER persons_log_enabled AFTER UPDATE OF enabled ON persons
WHEN NEW.peer_id IS NULL AND OLD.enabled IS NOT NEW.enabled BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, slices.slice_id, (SELECT revision FROM export_meta), unixepoch()
        FROM slices
        WHERE slices.peer_id IS NULL
          AND (slices.creator_person_id = NEW.person_id
               OR slices.slice_id IN (SELECT slice_id FROM slice_person WHERE person_id = NEW.person_id))
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- person_key: changes its person

CREATE TRIGGER person_key_log_insert AFTER INSERT ON person_key
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = NEW.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER person_key_log_delete AFTER DELETE ON person_key
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = OLD.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, OLD.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- person_site: changes its person

CREATE TRIGGER person_site_log_insert AFTER INSERT ON person_site
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = NEW.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER person_site_log_delete AFTER DELETE ON person_site
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = OLD.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, OLD.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER person_site_log_update AFTER UPDATE ON person_site
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = NEW.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- person_role: changes its person

CREATE TRIGGER person_role_log_insert AFTER INSERT ON person_role
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = NEW.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, NEW.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER person_role_log_delete AFTER DELETE ON person_role
WHEN EXISTS (SELECT 1 FROM persons WHERE person_id = OLD.person_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 3, OLD.person_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- slice_node: changes its slice

CREATE TRIGGER slice_node_log_insert AFTER INSERT ON slice_node
WHEN EXISTS (SELECT 1 FROM slices WHERE slice_id = NEW.slice_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, NEW.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER slice_node_log_delete AFTER DELETE ON slice_node
WHEN EXISTS (SELECT 1 FROM slices WHERE slice_id = OLD.slice_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, OLD.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- slice_person: changes its slice

CREATE TRIGGER slice_person_log_insert AFTER INSERT ON slice_person
WHEN EXISTS (SELECT 1 FROM slices WHERE slice_id = NEW.slice_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, NEW.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER slice_person_log_delete AFTER DELETE ON slice_person
WHEN EXISTS (SELECT 1 FROM slices WHERE slice_id = OLD.slice_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 5, OLD.slice_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- node_slice_whitelist: a whitelisted node leaves the export, and so it
-- leaves the node lists of the local slices that hold it.

CREATE TRIGGER node_slice_whitelist_log_insert AFTER INSERT ON node_slice_whitelist
WHEN EXISTS (SELECT 1 FROM nodes WHERE node_id = NEW.node_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 4, NEW.node_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT DISTINCT 5, slice_node.slice_id, (SELECT revision FROM export_meta), unixepoch()
        FROM slice_node JOIN slices ON slices.slice_id = slice_node.slice_id
        WHERE slice_node.node_id = NEW.node_id AND slices.peer_id IS NULL
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

CREATE TRIGGER node_slice_whitelist_log_delete AFTER DELETE ON node_slice_whitelist
WHEN EXISTS (SELECT 1 FROM nodes WHERE node_id = OLD.node_id AND peer_id IS NULL) BEGIN
    UPDATE export_meta SET revision = revision + 1;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 4, OLD.node_id, revision, unixepoch() FROM export_meta WHERE true
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT DISTINCT 5, slice_node.slice_id, (SELECT revision FROM export_meta), unixepoch()
        FROM slice_node JOIN slices ON slices.slice_id = slice_node.slice_id
        WHERE slice_node.node_id = OLD.node_id AND slices.peer_id IS NULL
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;

-- The checkpoint of each peer this registry refreshes from: the peer's
-- epoch and the revision the cache reflects. NULL: the next refresh is a
-- full one.
ALTER TABLE peers ADD COLUMN checkpoint_epoch TEXT;
ALTER TABLE peers ADD COLUMN checkpoint_revision BIGINT;
