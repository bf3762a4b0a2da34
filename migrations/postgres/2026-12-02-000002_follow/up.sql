-- Follow mode.
--
-- A committed change wakes the follow streams of every fedreg process on
-- this database: export_revision() notifies the channel fedreg_export with
-- the revision it takes, once per transaction; PostgreSQL delivers the
-- notification when (and only if) the transaction commits.
CREATE OR REPLACE FUNCTION export_revision() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    taken BIGINT := nullif(current_setting('fedreg.export_revision', true), '')::BIGINT;
BEGIN
    IF taken IS NULL THEN
        UPDATE export_meta SET revision = revision + 1 RETURNING revision INTO taken;
        PERFORM set_config('fedreg.export_revision', taken::TEXT, true);
        PERFORM pg_notify('fedreg_export', taken::TEXT);
    END IF;
    RETURN taken;
END $$;

-- Whether this registry keeps a follow stream open to the peer and applies
-- its changes as they are committed, instead of refreshing on a schedule.
ALTER TABLE peers ADD COLUMN follow BOOLEAN NOT NULL DEFAULT FALSE;
