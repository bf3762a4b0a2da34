ALTER TABLE peers DROP COLUMN follow;

CREATE OR REPLACE FUNCTION export_revision() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    taken BIGINT := nullif(current_setting('fedreg.export_revision', true), '')::BIGINT;
BEGIN
    IF taken IS NULL THEN
        UPDATE export_meta SET revision = revision + 1 RETURNING revision INTO taken;
        PERFORM set_config('fedreg.export_revision', taken::TEXT, true);
    END IF;
    RETURN taken;
END $$;
