-- The change log's triggers, planned once per session.
--
-- A trigger function's EXECUTE parses and plans its statement at every
-- firing; a static statement is planned once per session. A refresh writes
-- cached rows only, which the log ignores, so the object triggers first ask,
-- with a static query, whether the statement changed a local row at all,
-- and the membership triggers name their owner table statically.

CREATE OR REPLACE FUNCTION log_exported_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM changed WHERE peer_id IS NULL) THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'INSERT INTO export_log (kind, object_id, revision, changed_at)
         SELECT %s, id, export_revision(), extract(epoch FROM now())::BIGINT
         FROM (SELECT DISTINCT %I AS id FROM changed WHERE peer_id IS NULL) ids
         ON CONFLICT (kind, object_id) DO UPDATE
         SET revision = excluded.revision, changed_at = excluded.changed_at',
        TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END $$;

-- Arguments as before (kind, owner id column, owner table); the owner
-- table is persons or slices, whose id column the statement names.
CREATE OR REPLACE FUNCTION log_exported_owners() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[2] = 'persons' THEN
        INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT TG_ARGV[0]::INTEGER, id, export_revision(), extract(epoch FROM now())::BIGINT
        FROM (SELECT DISTINCT c.person_id AS id FROM changed c
              JOIN persons o ON o.person_id = c.person_id WHERE o.peer_id IS NULL) ids
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
    ELSE
        INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT TG_ARGV[0]::INTEGER, id, export_revision(), extract(epoch FROM now())::BIGINT
        FROM (SELECT DISTINCT c.slice_id AS id FROM changed c
              JOIN slices o ON o.slice_id = c.slice_id WHERE o.peer_id IS NULL) ids
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
    END IF;
    RETURN NULL;
END $$;
