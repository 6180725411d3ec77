-- Directory sync: the users each LDAP / Active Directory source last returned, with their
-- standing (active, disabled, removed: removed users stay as tombstones so no token is minted
-- for them), and each source's last status (a JSON document, for the API and the CLI).
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
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX directory_users_name ON directory_users (org, username COLLATE NOCASE);
CREATE TABLE directory_status (
    source TEXT PRIMARY KEY,
    status TEXT NOT NULL
);
