-- The identity (certificate subject CN or a subject alternative name) that
-- callers with this peer's tokens must present in a verified TLS client
-- certificate; NULL when none is required.
ALTER TABLE peers ADD COLUMN client_identity TEXT;
