-- Meetings and their host secrets. The secret itself is never stored: only its SHA-256
-- (it is 128 random bits, so a slow hash adds nothing).
CREATE TABLE meetings (
    id TEXT PRIMARY KEY NOT NULL,
    host_secret_sha256 BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    ended_at INTEGER
);
