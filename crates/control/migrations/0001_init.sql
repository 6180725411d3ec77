-- CloudSignal store, version 1. Timestamps are Unix seconds.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Public halves of the control plane's signing keys; the private key lives in a 0600 file.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    public_jwk  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- published until this time (tokens it signed have expired by then); NULL = current
    retire_at   INTEGER
);

-- API keys: only a bcrypt of a SHA-256 of the secret is stored.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org          TEXT NOT NULL REFERENCES orgs(id),
    kind         TEXT NOT NULL CHECK (kind IN ('sk', 'rk')),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    scopes       TEXT NOT NULL,           -- JSON array of scope strings
    allow_cidrs  TEXT NOT NULL,           -- JSON array of CIDRs; empty = anywhere
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER
);

-- The revocation feed: seq is the cursor of GET /v1/revocations?after=.
CREATE TABLE revocations (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    at    INTEGER NOT NULL,
    entry TEXT NOT NULL                   -- JSON of core::revocation::Revocation
);
