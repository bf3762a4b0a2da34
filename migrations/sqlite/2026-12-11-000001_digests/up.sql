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

ALTER TABLE sites ADD COLUMN sync_digest BIGINT;
CREATE INDEX sites_peer_digest ON sites (peer_id, peer_site_id, sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER sites_digest_stale AFTER UPDATE ON sites
WHEN NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE sites SET sync_digest = NULL WHERE site_id = NEW.site_id;
END;

ALTER TABLE keys ADD COLUMN sync_digest BIGINT;
CREATE INDEX keys_peer_digest ON keys (peer_id, peer_key_id, sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER keys_digest_stale AFTER UPDATE ON keys
WHEN NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE keys SET sync_digest = NULL WHERE key_id = NEW.key_id;
END;

ALTER TABLE persons ADD COLUMN sync_digest BIGINT;
CREATE INDEX persons_peer_digest ON persons (peer_id, peer_person_id, sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER persons_digest_stale AFTER UPDATE ON persons
WHEN NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE persons SET sync_digest = NULL WHERE person_id = NEW.person_id;
END;

ALTER TABLE nodes ADD COLUMN sync_digest BIGINT;
CREATE INDEX nodes_peer_digest ON nodes (peer_id, peer_node_id, sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER nodes_digest_stale AFTER UPDATE ON nodes
WHEN NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE nodes SET sync_digest = NULL WHERE node_id = NEW.node_id;
END;

ALTER TABLE slices ADD COLUMN sync_digest BIGINT;
CREATE INDEX slices_peer_digest ON slices (peer_id, peer_slice_id, sync_digest) WHERE peer_id IS NOT NULL;
CREATE TRIGGER slices_digest_stale AFTER UPDATE ON slices
WHEN NEW.peer_id IS NOT NULL AND NEW.sync_digest IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE slices SET sync_digest = NULL WHERE slice_id = NEW.slice_id;
END;

-- Memberships: their owner's digest, unless the member is a local object
-- (this registry's own person in a cached slice is local state, not part of
-- what the peer sent; a member deleted with the membership counts as not
-- local).
CREATE TRIGGER person_key_digest_insert AFTER INSERT ON person_key
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM keys WHERE key_id = NEW.key_id AND peer_id IS NULL) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = NEW.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_key_digest_delete AFTER DELETE ON person_key
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM keys WHERE key_id = OLD.key_id AND peer_id IS NULL) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = OLD.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_site_digest_insert AFTER INSERT ON person_site
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM sites WHERE site_id = NEW.site_id AND peer_id IS NULL) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = NEW.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_site_digest_delete AFTER DELETE ON person_site
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM sites WHERE site_id = OLD.site_id AND peer_id IS NULL) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = OLD.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_site_digest_update AFTER UPDATE ON person_site
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM sites WHERE site_id = NEW.site_id AND peer_id IS NULL) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = NEW.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_role_digest_insert AFTER INSERT ON person_role
WHEN NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = NEW.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER person_role_digest_delete AFTER DELETE ON person_role
WHEN NOT EXISTS (SELECT 1 FROM sync_applying) BEGIN
    UPDATE persons SET sync_digest = NULL
    WHERE person_id = OLD.person_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER slice_node_digest_insert AFTER INSERT ON slice_node
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM nodes WHERE node_id = NEW.node_id AND peer_id IS NULL) BEGIN
    UPDATE slices SET sync_digest = NULL
    WHERE slice_id = NEW.slice_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER slice_node_digest_delete AFTER DELETE ON slice_node
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM nodes WHERE node_id = OLD.node_id AND peer_id IS NULL) BEGIN
    UPDATE slices SET sync_digest = NULL
    WHERE slice_id = OLD.slice_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER slice_person_digest_insert AFTER INSERT ON slice_person
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM persons WHERE person_id = NEW.person_id AND peer_id IS NULL) BEGIN
    UPDATE slices SET sync_digest = NULL
    WHERE slice_id = NEW.slice_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;
CREATE TRIGGER slice_person_digest_delete AFTER DELETE ON slice_person
WHEN NOT EXISTS (SELECT 1 FROM sync_applying)
     AND NOT EXISTS (SELECT 1 FROM persons WHERE person_id = OLD.person_id AND peer_id IS NULL) BEGIN
    UPDATE slices SET sync_digest = NULL
    WHERE slice_id = OLD.slice_id AND peer_id IS NOT NULL AND sync_digest IS NOT NULL;
END;

-- kind: as in export_log.
CREATE TABLE export_digests (
    kind INTEGER NOT NULL,
    object_id BIGINT NOT NULL,
    digest BIGINT NOT NULL,
    PRIMARY KEY (kind, object_id)
) WITHOUT ROWID;

CREATE TABLE export_digest_meta (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch TEXT NOT NULL,
    revision BIGINT NOT NULL
);
INSERT INTO export_digest_meta VALUES (1, '', 0);
