-- Invitations to peer: each lets one registry enrol once, before it
-- expires, as the peer `peername`. Only the secret's SHA-256 is kept.
CREATE TABLE invitations (
    invitation_id INTEGER PRIMARY KEY AUTOINCREMENT,
    peername TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    -- When it was used; NULL while it was not.
    used BIGINT
);
