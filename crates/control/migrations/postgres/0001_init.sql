-- CloudSignal store on PostgreSQL: the schema SQLite reaches with migrations 0001-0007, in one
-- step. Timestamps are Unix seconds (BIGINT); JSON documents are TEXT, as in SQLite.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retire_at   BIGINT
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org          TEXT NOT NULL REFERENCES orgs(id),
    kind         TEXT NOT NULL CHECK (kind IN ('sk', 'rk')),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    allow_cidrs  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org, created_at);

CREATE TABLE revocations (
    seq   BIGSERIAL PRIMARY KEY,
    at    BIGINT NOT NULL,
    entry TEXT NOT NULL
);

CREATE TABLE usage (
    day              TEXT NOT NULL,
    subject_kind     TEXT NOT NULL CHECK (subject_kind IN ('key', 'user')),
    subject          TEXT NOT NULL,
    connects         BIGINT NOT NULL DEFAULT 0,
    auth_failures    BIGINT NOT NULL DEFAULT 0,
    published        BIGINT NOT NULL DEFAULT 0,
    published_bytes  BIGINT NOT NULL DEFAULT 0,
    delivered        BIGINT NOT NULL DEFAULT 0,
    delivered_bytes  BIGINT NOT NULL DEFAULT 0,
    last_used        BIGINT,
    last_ip          TEXT,
    PRIMARY KEY (day, subject_kind, subject)
);

CREATE TABLE usage_hourly (
    day              TEXT NOT NULL,
    subject_kind     TEXT NOT NULL CHECK (subject_kind IN ('key', 'user')),
    subject          TEXT NOT NULL,
    connects         BIGINT NOT NULL DEFAULT 0,
    auth_failures    BIGINT NOT NULL DEFAULT 0,
    published        BIGINT NOT NULL DEFAULT 0,
    published_bytes  BIGINT NOT NULL DEFAULT 0,
    delivered        BIGINT NOT NULL DEFAULT 0,
    delivered_bytes  BIGINT NOT NULL DEFAULT 0,
    last_used        BIGINT,
    last_ip          TEXT,
    PRIMARY KEY (day, subject_kind, subject)
);

CREATE VIEW users_seen AS
    SELECT subject AS "user", MIN(day) AS first_day, MAX(last_used) AS last_seen,
           SUM(connects)::BIGINT AS connects
    FROM usage WHERE subject_kind = 'user' GROUP BY subject;

CREATE VIEW service_accounts AS
    SELECT k.id AS key_id, k.org, k.name, k.kind, k.created_at, k.revoked_at,
           MAX(u.last_used) AS last_seen, COALESCE(SUM(u.connects), 0)::BIGINT AS connects
    FROM api_keys k LEFT JOIN usage u ON u.subject_kind = 'key' AND u.subject = k.id
    GROUP BY k.id;

-- Append-only: UPDATE and DELETE are refused by a trigger, as in SQLite.
CREATE TABLE audit_log (
    seq        BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    org        TEXT NOT NULL,
    actor      TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    peer       TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_org ON audit_log (org, seq);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE directory_users (
    source     TEXT NOT NULL,
    id         TEXT NOT NULL,
    org        TEXT NOT NULL,
    username   TEXT NOT NULL,
    dn         TEXT NOT NULL,
    email      TEXT,
    name       TEXT,
    groups     TEXT NOT NULL DEFAULT '[]',
    standing   TEXT NOT NULL CHECK (standing IN ('active', 'disabled', 'removed')),
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX directory_users_name ON directory_users (org, lower(username));
CREATE INDEX directory_users_email ON directory_users (org, lower(email));
CREATE TABLE directory_status (
    source TEXT PRIMARY KEY,
    status TEXT NOT NULL
);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);
CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));
CREATE TABLE invitations (
    digest     TEXT PRIMARY KEY,
    org        TEXT NOT NULL,
    email      TEXT,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE TABLE oauth_requests (
    id             TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE TABLE oauth_codes (
    digest         TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    used_at        BIGINT,
    session_id     TEXT
);
CREATE TABLE auth_sessions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    org          TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    revoked_at   BIGINT,
    peer         TEXT
);
CREATE INDEX auth_sessions_org ON auth_sessions (org, created_at);
CREATE TABLE auth_tokens (
    digest     TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id),
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX auth_tokens_session ON auth_tokens (session_id);
