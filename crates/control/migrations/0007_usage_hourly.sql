-- Usage per hour (UTC) and subject, beside the daily table: `day` holds the hour here,
-- `YYYY-MM-DDTHH`, so both tables share their columns and their upsert.
CREATE TABLE usage_hourly (
    day              TEXT NOT NULL,
    subject_kind     TEXT NOT NULL CHECK (subject_kind IN ('key', 'user')),
    subject          TEXT NOT NULL,
    connects         INTEGER NOT NULL DEFAULT 0,
    auth_failures    INTEGER NOT NULL DEFAULT 0,
    published        INTEGER NOT NULL DEFAULT 0,
    published_bytes  INTEGER NOT NULL DEFAULT 0,
    delivered        INTEGER NOT NULL DEFAULT 0,
    delivered_bytes  INTEGER NOT NULL DEFAULT 0,
    last_used        INTEGER,
    last_ip          TEXT,
    PRIMARY KEY (day, subject_kind, subject)
);
