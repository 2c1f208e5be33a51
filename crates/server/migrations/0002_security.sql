-- Meeting security: passcodes, invitations, bans, accounts and the audit log.

-- Accounts (optional: guests never have one). Passwords as argon2id PHC strings.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Passcodes are stored as argon2id PHC strings (they are short and human-chosen, so a slow
-- hash matters). `permissions` is the JSON of proto::Permissions; NULL means the defaults.
ALTER TABLE meetings ADD COLUMN passcode_hash TEXT;
ALTER TABLE meetings ADD COLUMN require_invitation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meetings ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meetings ADD COLUMN permissions TEXT;
ALTER TABLE meetings ADD COLUMN owner_user_id INTEGER REFERENCES users(id) ON DELETE SET NULL;

-- Only the SHA-256 of a session token is stored: a copy of the database does not log anyone in.
CREATE TABLE user_sessions (
    token_sha256 BLOB PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE invitations (
    id TEXT PRIMARY KEY NOT NULL,
    meeting_id TEXT NOT NULL REFERENCES meetings(id),
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    single_use INTEGER NOT NULL DEFAULT 0,
    skip_lobby INTEGER NOT NULL DEFAULT 0,
    used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX invitations_by_meeting ON invitations (meeting_id);

-- A ban matches on any of its non-NULL columns. Device ids are stored as SHA-256.
CREATE TABLE bans (
    id INTEGER PRIMARY KEY,
    meeting_id TEXT NOT NULL REFERENCES meetings(id),
    name TEXT,
    device_sha256 BLOB,
    invitation_id TEXT,
    user_id INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX bans_by_meeting ON bans (meeting_id);

-- Security events only (who was admitted, refused, removed...): never meeting content.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    meeting_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    subject TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_by_meeting ON audit_log (meeting_id, at);

-- Server-wide secrets, generated on first start; `invitation_hmac` signs invitation tokens so
-- that they survive restarts.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY NOT NULL,
    key BLOB NOT NULL
);
