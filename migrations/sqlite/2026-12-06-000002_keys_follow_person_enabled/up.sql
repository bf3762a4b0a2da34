-- A person's enabled flag decides whether peers cache the person, and so
-- its keys (a key goes with its person) and the persons and creators of
-- slices that name it: those keys and local slices change too.
DROP TRIGGER persons_log_enabled;
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
    INSERT INTO export_log (kind, object_id, revision, changed_at)
        SELECT 2, person_key.key_id, (SELECT revision FROM export_meta), unixepoch()
        FROM person_key
        WHERE person_key.person_id = NEW.person_id
        ON CONFLICT (kind, object_id) DO UPDATE
        SET revision = excluded.revision, changed_at = excluded.changed_at;
END;
