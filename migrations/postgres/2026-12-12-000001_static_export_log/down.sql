CREATE OR REPLACE FUNCTION log_exported_objects() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION log_exported_owners() RETURNS trigger LANGUAGE plpgsql AS $$
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
