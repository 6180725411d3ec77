-- Case-insensitive lookups are written lower(x) = lower(?) (the SQL SQLite and PostgreSQL both
-- speak); these expression indexes serve them.
CREATE INDEX directory_users_lower_name ON directory_users (org, lower(username));
CREATE INDEX directory_users_lower_email ON directory_users (org, lower(email));
CREATE INDEX accounts_lower_email ON accounts (lower(email));
