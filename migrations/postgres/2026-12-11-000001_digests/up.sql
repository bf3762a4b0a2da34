-- Digests, for verifying a cache against its peer (RefreshPeer verify,
-- GetDigest).
--
-- A cached row keeps sync_digest: the digest of the object as the peer sent
-- it, memberships included, written with the row by a refresh. A refresh
-- marks its transaction with a row of sync_applying (inserted when it
-- starts writing, deleted before it commits, so no other transaction ever
-- sees it). Any other write to a cached row, or to the memberships of a
-- cached person or slice (a hand edit, a cascade of a hand delete), clears
-- the digest of the row or of the owner, which then differs from the
-- peer's until a refresh writes it again. Local rows leave it NULL.
--
-- export_digests holds the digest of every exported object as of
-- export_digest_meta's revision; GetDigest brings it up to date from the
-- change log (export_log) before answering.

CREATE TABLE sync_applying (
    peer_id BIGINT PRIMARY KEY
);

CREATE FUNCTION cached_digest_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sync_applying) THEN
        NEW.sync_digest := NULL;
    END IF;
    RETURN NEW;
END $$;

-- Clears the digests of the cached owners of a membership table's
-- statement whose member is not local, unless a refresh writes it.
-- Arguments: owner table, owner id column, and, for members that are
-- objects, member table and member id column.
CREATE FUNCTION cached_owner_digest_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sync_applying) THEN
        RETURN NULL;
    END IF;
    IF TG_NARGS = 2 THEN
        EXECUTE format(
            'UPDATE %1$I o SET sync_digest = NULL
             FROM (SELECT DISTINCT %2$I AS id FROM changed) c
             WHERE o.%2$I = c.id AND o.peer_id IS NOT NULL AND o.sync_digest IS NOT NULL',
            TG_ARGV[0], TG_ARGV[1]);
    ELSE
        EXECUTE format(
            'UPDATE %1$I o SET sync_digest = NULL
             FROM (SELECT DISTINCT c.%2$I AS id FROM changed c
                   WHERE NOT EXISTS (SELECT 1 FROM %3$I m
                                     WHERE m.%4$I = c.%4$I AND m.peer_id IS NULL)) c
             WHERE o.%2$I = c.id AND o.peer_id IS NOT NULL AND o.sync_digest IS NOT NULL',
            TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], TG_ARGV[3]);
    END IF;
    RETURN NULL;
END $$;

ALTER TABLE sites ADD COLUMN sync_digest BIGINT;
CREATE INDEX sites_peer_digest ON sites (peer_id, peer_site_id) INCLUDE (sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER sites_digest_stale BEFORE UPDATE ON sites FOR EACH ROW
    WHEN (NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL)
    EXECUTE FUNCTION cached_digest_stale();

ALTER TABLE keys ADD COLUMN sync_digest BIGINT;
CREATE INDEX keys_peer_digest ON keys (peer_id, peer_key_id) INCLUDE (sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER keys_digest_stale BEFORE UPDATE ON keys FOR EACH ROW
    WHEN (NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL)
    EXECUTE FUNCTION cached_digest_stale();

ALTER TABLE persons ADD COLUMN sync_digest BIGINT;
CREATE INDEX persons_peer_digest ON persons (peer_id, peer_person_id) INCLUDE (sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER persons_digest_stale BEFORE UPDATE ON persons FOR EACH ROW
    WHEN (NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL)
    EXECUTE FUNCTION cached_digest_stale();

ALTER TABLE nodes ADD COLUMN sync_digest BIGINT;
CREATE INDEX nodes_peer_digest ON nodes (peer_id, peer_node_id) INCLUDE (sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER nodes_digest_stale BEFORE UPDATE ON nodes FOR EACH ROW
    WHEN (NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL)
    EXECUTE FUNCTION cached_digest_stale();

ALTER TABLE slices ADD COLUMN sync_digest BIGINT;
CREATE INDEX slices_peer_digest ON slices (peer_id, peer_slice_id) INCLUDE (sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER slices_digest_stale BEFORE UPDATE ON slices FOR EACH ROW
    WHEN (NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL)
    EXECUTE FUNCTION cached_digest_stale();

-- Memberships: their owner's digest, unless the member is a local object
-- (this registry's own person in a cached slice is local state, not part of
-- what the peer sent; a member deleted with the membership counts as not
-- local).
CREATE TRIGGER person_key_digest_insert AFTER INSERT ON person_key
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id', 'keys', 'key_id');
CREATE TRIGGER person_key_digest_delete AFTER DELETE ON person_key
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id', 'keys', 'key_id');
CREATE TRIGGER person_site_digest_insert AFTER INSERT ON person_site
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id', 'sites', 'site_id');
CREATE TRIGGER person_site_digest_delete AFTER DELETE ON person_site
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id', 'sites', 'site_id');
CREATE TRIGGER person_site_digest_update AFTER UPDATE ON person_site
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id', 'sites', 'site_id');
CREATE TRIGGER person_role_digest_insert AFTER INSERT ON person_role
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id');
CREATE TRIGGER person_role_digest_delete AFTER DELETE ON person_role
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('persons', 'person_id');
CREATE TRIGGER slice_node_digest_insert AFTER INSERT ON slice_node
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('slices', 'slice_id', 'nodes', 'node_id');
CREATE TRIGGER slice_node_digest_delete AFTER DELETE ON slice_node
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('slices', 'slice_id', 'nodes', 'node_id');
CREATE TRIGGER slice_person_digest_insert AFTER INSERT ON slice_person
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('slices', 'slice_id', 'persons', 'person_id');
CREATE TRIGGER slice_person_digest_delete AFTER DELETE ON slice_person
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cached_owner_digest_stale('slices', 'slice_id', 'persons', 'person_id');

-- kind: as in export_log.
CREATE TABLE export_digests (
    kind INTEGER NOT NULL,
    object_id BIGINT NOT NULL,
    digest BIGINT NOT NULL,
    PRIMARY KEY (kind, object_id)
);

CREATE TABLE export_digest_meta (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch TEXT NOT NULL,
    revision BIGINT NOT NULL
);
INSERT INTO export_digest_meta VALUES (1, '', 0);
