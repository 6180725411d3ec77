-- Users and service accounts the broker has seen, derived from usage (one place to count).
-- A user is a token's <user>@<org>; a service account is an API key (its name and id).
CREATE VIEW users_seen AS
    SELECT subject AS user, MIN(day) AS first_day, MAX(last_used) AS last_seen,
           SUM(connects) AS connects
    FROM usage WHERE subject_kind = 'user' GROUP BY subject;

CREATE VIEW service_accounts AS
    SELECT k.id AS key_id, k.org, k.name, k.kind, k.created_at, k.revoked_at,
           MAX(u.last_used) AS last_seen, COALESCE(SUM(u.connects), 0) AS connects
    FROM api_keys k LEFT JOIN usage u ON u.subject_kind = 'key' AND u.subject = k.id
    GROUP BY k.id;
