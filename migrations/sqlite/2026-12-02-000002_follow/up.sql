-- Follow mode: whether this registry keeps a follow stream open to the peer
-- and applies its changes as they are committed, instead of refreshing on a
-- schedule. (On SQLite one process owns the database, so a commit wakes the
-- follow streams in that process; no notification table is needed.)
ALTER TABLE peers ADD COLUMN follow BOOLEAN NOT NULL DEFAULT 0;
