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
-- a deleted peer.
--
-- A transaction takes one revision, at its first logged change, by updating
-- the export_meta row; the row stays locked until the transaction ends, so
-- revisions are handed out in commit order: a reader whose snapshot shows
-- revision r sees every change numbered r or less. The triggers are
-- per statement, over the statement's transition table, so the bulk writes
-- of a refresh pay once per statement, not once per row.
CREATE TABLE export_meta (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch TEXT NOT NULL,
    revision BIGINT NOT NULL,
    compacted_through BIGINT NOT NULL
);
INSERT INTO export_meta VALUES (1, md5(random()::TEXT || clock_timestamp()::TEXT), 0, 0);

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

-- The open transaction's revision, taken at its first call.
CREATE FUNCTION export_revision() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    taken BIGINT := nullif(current_setting('fedreg.export_revision', true), '')::BIGINT;
BEGIN
    IF taken IS NULL THEN
        UPDATE export_meta SET revision = revision + 1 RETURNING revision INTO taken;
        PERFORM set_config('fedreg.export_revision', taken::TEXT, true);
    END IF;
    RETURN taken;
END $$;

-- Logs the local rows of an object table's statement.
-- Arguments: kind, id column.
CREATE FUNCTION log_exported_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO export_log (kind, object_id, revision, changed_at)
         SELECT %s, id, export_revision(), extract(epoch FROM now())::BIGINT
         FROM (SELECT DISTINCT %I AS id FROM changed WHERE peer_id IS NULL) ids
         ON CONFLICT (kind, object_id) DO UPDATE
         SET revision = excluded.revision, changed_at = excluded.changed_at',
        TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END $$;

-- Logs the local owners of a membership table's statement.
-- Arguments: kind, owner id column, owner table.
CREATE FUNCTION log_exported_owners() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO export_log (kind, object_id, revision, changed_at)
         SELECT %1$s, id, export_revision(), extract(epoch FROM now())::BIGINT
         FROM (SELECT DISTINCT c.%2$I AS id FROM changed c
               JOIN %3$I o ON o.%2$I = c.%2$I WHERE o.peer_id IS NULL) ids
         ON CONFLICT (kind, object_id) DO UPDATE
         SET revision = excluded.revision, changed_at = excluded.changed_at',
        TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
    RETURN NULL;
END $$;

-- A whitelisted node leaves the export, and so it leaves the node lists of
-- the local slices that hold it.
CREATE FUNCTION log_whitelisted_nodes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO export_log (kind, object_id, revision, changed_at)
    SELECT kind, id, export_revision(), extract(epoch FROM now())::BIGINT
    FROM (
        SELECT DISTINCT 4 AS kind, c.node_id AS id FROM changed c
        JOIN nodes n ON n.node_id = c.node_id WHERE n.peer_id IS NULL
        UNION
        SELECT DISTINCT 5, s.slice_id FROM changed c
        JOIN slice_node sn ON sn.node_id = c.node_id
        JOIN slices s ON s.slice_id = sn.slice_id WHERE s.peer_id IS NULL
    ) ids
    ON CONFLICT (kind, object_id) DO UPDATE
    SET revision = excluded.revision, changed_at = excluded.changed_at;
    RETURN NULL;
END $$;

-- A person's enabled flag decides whether peers cache the person, and so
-- whether the persons and creators of slices that name it reach them:
-- those local slices change too.
CREATE FUNCTION log_slices_of_flipped_persons() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH flipped AS (
        SELECT n.person_id FROM changed n JOIN previous o ON o.person_id = n.person_id
        WHERE n.peer_id IS NULL AND o.enabled IS DISTINCT FROM n.enabled
    )
    INSERT INTO export_log (kind, object_id, revision, changed_at)
    SELECT 5, id, export_revision(), extract(epoch FROM now())::BIGINT
    FROM (
        SELECT sp.slice_id AS id FROM flipped f
        JOIN slice_person sp ON sp.person_id = f.person_id
        JOIN slices s ON s.slice_id = sp.slice_id WHERE s.peer_id IS NULL
        UNION
        SELECT s.slice_id FROM flipped f
        JOIN slices s ON s.creator_person_id = f.person_id WHERE s.peer_id IS NULL
    ) ids
    ON CONFLICT (kind, object_id) DO UPDATE
    SET revision = excluded.revision, changed_at = excluded.changed_at;
    RETURN NULL;
END $$;

CREATE TRIGGER persons_log_enabled AFTER UPDATE ON persons
    REFERENCING OLD TABLE AS previous NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION log_slices_of_flipped_persons();
CREATE TRIGGER sites_log_insert AFTER INSERT ON sites
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('1', 'site_id');
CREATE TRIGGER sites_log_update AFTER UPDATE ON sites
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('1', 'site_id');
CREATE TRIGGER sites_log_delete AFTER DELETE ON sites
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('1', 'site_id');
CREATE TRIGGER keys_log_insert AFTER INSERT ON keys
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('2', 'key_id');
CREATE TRIGGER keys_log_update AFTER UPDATE ON keys
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('2', 'key_id');
CREATE TRIGGER keys_log_delete AFTER DELETE ON keys
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('2', 'key_id');
CREATE TRIGGER persons_log_insert AFTER INSERT ON persons
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('3', 'person_id');
CREATE TRIGGER persons_log_update AFTER UPDATE ON persons
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('3', 'person_id');
CREATE TRIGGER persons_log_delete AFTER DELETE ON persons
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('3', 'person_id');
CREATE TRIGGER nodes_log_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('4', 'node_id');
CREATE TRIGGER nodes_log_update AFTER UPDATE ON nodes
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('4', 'node_id');
CREATE TRIGGER nodes_log_delete AFTER DELETE ON nodes
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('4', 'node_id');
CREATE TRIGGER slices_log_insert AFTER INSERT ON slices
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('5', 'slice_id');
CREATE TRIGGER slices_log_update AFTER UPDATE ON slices
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('5', 'slice_id');
CREATE TRIGGER slices_log_delete AFTER DELETE ON slices
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_objects('5', 'slice_id');
CREATE TRIGGER person_key_log_insert AFTER INSERT ON person_key
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_key_log_delete AFTER DELETE ON person_key
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_site_log_insert AFTER INSERT ON person_site
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_site_log_delete AFTER DELETE ON person_site
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_site_log_update AFTER UPDATE ON person_site
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_role_log_insert AFTER INSERT ON person_role
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER person_role_log_delete AFTER DELETE ON person_role
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('3', 'person_id', 'persons');
CREATE TRIGGER slice_node_log_insert AFTER INSERT ON slice_node
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('5', 'slice_id', 'slices');
CREATE TRIGGER slice_node_log_delete AFTER DELETE ON slice_node
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('5', 'slice_id', 'slices');
CREATE TRIGGER slice_person_log_insert AFTER INSERT ON slice_person
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('5', 'slice_id', 'slices');
CREATE TRIGGER slice_person_log_delete AFTER DELETE ON slice_person
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_exported_owners('5', 'slice_id', 'slices');
CREATE TRIGGER node_slice_whitelist_log_insert AFTER INSERT ON node_slice_whitelist
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_whitelisted_nodes();
CREATE TRIGGER node_slice_whitelist_log_delete AFTER DELETE ON node_slice_whitelist
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION log_whitelisted_nodes();

-- The checkpoint of each peer this registry refreshes from: the peer's
-- epoch and the revision the cache reflects. NULL: the next refresh is a
-- full one.
ALTER TABLE peers ADD COLUMN checkpoint_epoch TEXT;
ALTER TABLE peers ADD COLUMN checkpoint_revision BIGINT;
