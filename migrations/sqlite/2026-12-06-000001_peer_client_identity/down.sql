ALTER TABLE peers DROP COLUMN client_identity;
