-- People and their sign-in sessions (the control plane as an OAuth 2.1 authorization server for
-- its own CLI and dashboard). Secrets (invitation links, codes, access and refresh tokens) are
-- kept as SHA-256 digests only; passwords as argon2id PHC strings.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
);
CREATE UNIQUE INDEX accounts_email ON accounts (email COLLATE NOCASE);
-- one-time links: the first owner's (printed at first start) and `cloudsignal admin create-user`
CREATE TABLE invitations (
    digest     TEXT PRIMARY KEY,
    org        TEXT NOT NULL,
    email      TEXT,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE TABLE oauth_requests (
    id             TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE TABLE oauth_codes (
    digest         TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    used_at        INTEGER,
    session_id     TEXT
);
CREATE TABLE auth_sessions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    org          TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    revoked_at   INTEGER,
    peer         TEXT
);
CREATE INDEX auth_sessions_org ON auth_sessions (org, created_at);
CREATE TABLE auth_tokens (
    digest     TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id),
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    rotated_at INTEGER
);
CREATE INDEX auth_tokens_session ON auth_tokens (session_id);
