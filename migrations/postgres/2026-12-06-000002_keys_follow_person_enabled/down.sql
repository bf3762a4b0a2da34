CREATE OR REPLACE FUNCTION log_slices_of_flipped_persons() RETURNS trigger LANGUAGE plpgsql AS $$
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
