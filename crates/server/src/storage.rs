//! The server's database: SQLite through sqlx, schema by migrations.

use std::path::Path;
use std::str::FromStr;

use proto::MeetingId;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unreadable value in the database: {0}")]
    Corrupt(serde_json::Error),
}

fn permissions_column(p: &proto::Permissions) -> Result<String, StorageError> {
    serde_json::to_string(p).map_err(StorageError::Corrupt)
}

/// Device ids are chosen by clients and may identify a person across meetings: only a digest
/// is kept, enough to match a ban.
fn device_digest(device_id: &str) -> Vec<u8> {
    Sha256::digest(device_id.as_bytes()).to_vec()
}

fn invitation_from_row(row: &sqlx::sqlite::SqliteRow) -> InvitationRecord {
    InvitationRecord {
        id: row.get(0),
        meeting_id: row.get(1),
        label: row.get(2),
        created_at: row.get(3),
        expires_at: row.get(4),
        single_use: row.get(5),
        skip_lobby: row.get(6),
        used_at: row.get(7),
        revoked_at: row.get(8),
        token_sha256: row.get(9),
    }
}

pub(crate) fn unix_now_secs() -> i64 {
    unix_now_ms() / 1000
}

pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A meeting as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRecord {
    pub id: MeetingId,
    pub host_secret_sha256: Vec<u8>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// argon2id PHC string of the passcode, when the meeting has one.
    pub passcode_hash: Option<String>,
    /// Only per-invitee invitation links (and hosts) get in.
    pub require_invitation: bool,
    pub locked: bool,
    pub permissions: proto::Permissions,
    /// The account that created the meeting: a host of it without the host secret.
    pub owner_user_id: Option<i64>,
}

impl MeetingRecord {
    /// A meeting with no passcode, no invitation requirement, unlocked, default permissions.
    pub fn new(id: MeetingId, host_secret_sha256: Vec<u8>, created_at: i64) -> Self {
        MeetingRecord {
            id,
            host_secret_sha256,
            created_at,
            ended_at: None,
            passcode_hash: None,
            require_invitation: false,
            locked: false,
            permissions: proto::Permissions::default(),
            owner_user_id: None,
        }
    }
}

/// Who is banned from a meeting: a knock matching any non-None field is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ban {
    /// The display name at the time, for the audit trail only (names are not identities).
    pub name: Option<String>,
    /// The client's device id; stored as its SHA-256.
    pub device_id: Option<String>,
    pub invitation_id: Option<String>,
    pub user_id: Option<i64>,
}

/// One security event of a meeting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub event: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub detail: String,
}

/// A per-invitee invitation as stored: never its secret, only the digest of the token a host's
/// client derived from it (see `invitation.rs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvitationRecord {
    pub id: String,
    pub meeting_id: String,
    pub label: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
    pub skip_lobby: bool,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// SHA-256 of the token the host's client derived from the invitation's secret (never the
    /// secret). Missing on invitations from before clients made them: those admit no one.
    #[serde(skip)]
    pub token_sha256: Option<Vec<u8>>,
}

/// A user account (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

#[derive(Clone)]
pub struct Storage {
    pool: SqlitePool,
}

impl Storage {
    /// Opens (creating if needed) `conclave.db` in `data_dir` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let file = data_dir.join("conclave.db");
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL sync: a crash can lose the last commits but never corrupts.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Storage { pool })
    }

    pub async fn create_meeting(&self, record: &MeetingRecord) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO meetings (id, host_secret_sha256, created_at, ended_at, passcode_hash, \
             require_invitation, locked, permissions, owner_user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(record.id.as_str())
        .bind(&record.host_secret_sha256)
        .bind(record.created_at)
        .bind(record.ended_at)
        .bind(&record.passcode_hash)
        .bind(record.require_invitation)
        .bind(record.locked)
        .bind(permissions_column(&record.permissions)?)
        .bind(record.owner_user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn meeting(&self, id: &MeetingId) -> Result<Option<MeetingRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT host_secret_sha256, created_at, ended_at, passcode_hash, require_invitation, \
             locked, permissions, owner_user_id FROM meetings WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let permissions: Option<String> = row.get(6);
        let permissions = match permissions {
            None => proto::Permissions::default(),
            Some(json) => serde_json::from_str(&json).map_err(StorageError::Corrupt)?,
        };
        Ok(Some(MeetingRecord {
            id: id.clone(),
            host_secret_sha256: row.get(0),
            created_at: row.get(1),
            ended_at: row.get(2),
            passcode_hash: row.get(3),
            require_invitation: row.get(4),
            locked: row.get(5),
            permissions,
            owner_user_id: row.get(7),
        }))
    }

    pub async fn set_locked(&self, id: &MeetingId, locked: bool) -> Result<(), StorageError> {
        sqlx::query("UPDATE meetings SET locked = ? WHERE id = ?")
            .bind(locked)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_permissions(
        &self,
        id: &MeetingId,
        p: &proto::Permissions,
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE meetings SET permissions = ? WHERE id = ?")
            .bind(permissions_column(p)?)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the meeting ended at `at` (unix seconds); the first end wins.
    pub async fn end_meeting(&self, id: &MeetingId, at: i64) -> Result<(), StorageError> {
        sqlx::query("UPDATE meetings SET ended_at = ? WHERE id = ? AND ended_at IS NULL")
            .bind(at)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_ban(&self, id: &MeetingId, ban: &Ban) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO bans (meeting_id, name, device_sha256, invitation_id, user_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(&ban.name)
        .bind(ban.device_id.as_deref().map(device_digest))
        .bind(&ban.invitation_id)
        .bind(ban.user_id)
        .bind(unix_now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// true if any of the given (non-None) device / invitation / user matches a ban of this meeting
    pub async fn is_banned(
        &self,
        id: &MeetingId,
        device_id: Option<&str>,
        invitation_id: Option<&str>,
        user_id: Option<i64>,
    ) -> Result<bool, StorageError> {
        if device_id.is_none() && invitation_id.is_none() && user_id.is_none() {
            return Ok(false);
        }
        // A NULL parameter never equals anything, so absent identifiers match no ban.
        let row = sqlx::query(
            "SELECT 1 FROM bans WHERE meeting_id = ? AND \
             (device_sha256 = ? OR invitation_id = ? OR user_id = ?) LIMIT 1",
        )
        .bind(id.as_str())
        .bind(device_id.map(device_digest))
        .bind(invitation_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Records a security event of a meeting (never meeting content).
    pub async fn audit(
        &self,
        id: &MeetingId,
        event: &str,
        actor: Option<&str>,
        subject: Option<&str>,
        detail: &str,
    ) -> Result<(), StorageError> {
        self.audit_at(id, unix_now_ms(), event, actor, subject, detail)
            .await
    }

    /// [`Storage::audit`] with the time given (unix milliseconds), for callers with their own clock.
    pub async fn audit_at(
        &self,
        id: &MeetingId,
        at_ms: i64,
        event: &str,
        actor: Option<&str>,
        subject: Option<&str>,
        detail: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO audit_log (meeting_id, at, event, actor, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(at_ms)
        .bind(event)
        .bind(actor)
        .bind(subject)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The meeting's security events, oldest first.
    pub async fn audit_log(&self, id: &MeetingId) -> Result<Vec<AuditRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT at, event, actor, subject, detail FROM audit_log WHERE meeting_id = ? ORDER BY at, id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditRecord {
                at_ms: row.get(0),
                event: row.get(1),
                actor: row.get(2),
                subject: row.get(3),
                detail: row.get(4),
            })
            .collect())
    }

    pub async fn create_invitation(&self, inv: &InvitationRecord) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO invitations (id, meeting_id, label, created_at, expires_at, single_use, \
             skip_lobby, used_at, revoked_at, token_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&inv.id)
        .bind(&inv.meeting_id)
        .bind(&inv.label)
        .bind(inv.created_at)
        .bind(inv.expires_at)
        .bind(inv.single_use)
        .bind(inv.skip_lobby)
        .bind(inv.used_at)
        .bind(inv.revoked_at)
        .bind(&inv.token_sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    const INVITATION_COLUMNS: &'static str = "id, meeting_id, label, created_at, expires_at, \
        single_use, skip_lobby, used_at, revoked_at, token_sha256";

    pub async fn invitation(&self, inv_id: &str) -> Result<Option<InvitationRecord>, StorageError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM invitations WHERE id = ?",
            Self::INVITATION_COLUMNS
        ))
        .bind(inv_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| invitation_from_row(&row)))
    }

    /// The meeting's invitations, newest first.
    pub async fn invitations(&self, id: &MeetingId) -> Result<Vec<InvitationRecord>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM invitations WHERE meeting_id = ? ORDER BY created_at DESC, id",
            Self::INVITATION_COLUMNS
        ))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(invitation_from_row).collect())
    }

    /// Revokes an invitation of this meeting; false if it has no such invitation.
    pub async fn revoke_invitation(
        &self,
        id: &MeetingId,
        inv_id: &str,
        at: i64,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND meeting_id = ?",
        )
        .bind(at)
        .bind(inv_id)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a single-use invitation used. The condition is in the UPDATE itself, so of two
    /// racing redemptions exactly one gets `true`.
    pub async fn redeem_invitation(&self, inv_id: &str, at: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE invitations SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(inv_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates an account; `Ok(None)` if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        at: i64,
    ) -> Result<Option<i64>, StorageError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then(|| done.last_insert_rowid()))
    }

    /// The account called `name` and its password hash.
    pub async fn user_by_name(
        &self,
        name: &str,
    ) -> Result<Option<(UserRecord, String)>, StorageError> {
        let row =
            sqlx::query("SELECT id, name, created_at, password_hash FROM users WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| {
            (
                UserRecord {
                    id: row.get(0),
                    name: row.get(1),
                    created_at: row.get(2),
                },
                row.get(3),
            )
        }))
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StorageError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| UserRecord {
                id: row.get(0),
                name: row.get(1),
                created_at: row.get(2),
            })
            .collect())
    }

    /// Deletes an account and its sessions; its meetings lose their owner. false if unknown.
    pub async fn remove_user(&self, name: &str) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn create_user_session(
        &self,
        token_sha256: &[u8],
        user_id: i64,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        // Logins are rare: a good moment to forget sessions that have run out.
        sqlx::query("DELETE FROM user_sessions WHERE expires_at <= ?")
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO user_sessions (token_sha256, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(token_sha256)
        .bind(user_id)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account a session token (by its SHA-256) belongs to, if the session has not expired.
    pub async fn session_user(
        &self,
        token_sha256: &[u8],
        now: i64,
    ) -> Result<Option<UserRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT users.id, users.name, users.created_at FROM user_sessions \
             JOIN users ON users.id = user_sessions.user_id \
             WHERE user_sessions.token_sha256 = ? AND user_sessions.expires_at > ?",
        )
        .bind(token_sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| UserRecord {
            id: row.get(0),
            name: row.get(1),
            created_at: row.get(2),
        }))
    }

    pub async fn delete_user_session(&self, token_sha256: &[u8]) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM user_sessions WHERE token_sha256 = ?")
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Flushes and closes every connection: called on shutdown so nothing is half-written.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meetings_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let id = MeetingId::from_random_bytes([3; 16]);
        let record = MeetingRecord {
            passcode_hash: Some("$argon2id$placeholder".into()),
            require_invitation: true,
            owner_user_id: None,
            ..MeetingRecord::new(id.clone(), vec![1, 2, 3], 42)
        };
        {
            let storage = Storage::open(dir.path()).await.unwrap();
            storage.create_meeting(&record).await.unwrap();
            assert!(
                storage.create_meeting(&record).await.is_err(),
                "ids are unique"
            );
            storage.close().await;
        }
        let storage = Storage::open(dir.path()).await.unwrap();
        assert_eq!(storage.meeting(&id).await.unwrap(), Some(record));
        let other = MeetingId::from_random_bytes([4; 16]);
        assert_eq!(storage.meeting(&other).await.unwrap(), None);
    }

    #[tokio::test]
    async fn lock_permissions_users_and_sessions_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let id = MeetingId::from_random_bytes([6; 16]);
        storage
            .create_meeting(&MeetingRecord::new(id.clone(), vec![1], 1))
            .await
            .unwrap();
        let permissions = proto::Permissions {
            allow_unmute: false,
            max_participants: 7,
            ..proto::Permissions::default()
        };
        storage.set_locked(&id, true).await.unwrap();
        storage.set_permissions(&id, &permissions).await.unwrap();
        storage.end_meeting(&id, 50).await.unwrap();
        storage.end_meeting(&id, 60).await.unwrap();
        let record = storage.meeting(&id).await.unwrap().unwrap();
        assert!(record.locked);
        assert_eq!(record.permissions, permissions);
        assert_eq!(record.ended_at, Some(50), "the first end wins");

        let user = storage
            .create_user("ann", "hash", 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(storage.create_user("ann", "other", 2).await.unwrap(), None);
        storage
            .create_user_session(b"token", user, 10, 20)
            .await
            .unwrap();
        assert_eq!(
            storage
                .session_user(b"token", 19)
                .await
                .unwrap()
                .map(|u| u.name),
            Some("ann".to_owned())
        );
        assert_eq!(storage.session_user(b"token", 20).await.unwrap(), None);
        assert!(storage.remove_user("ann").await.unwrap());
        assert_eq!(storage.session_user(b"token", 11).await.unwrap(), None);
        assert!(!storage.remove_user("ann").await.unwrap());
    }
}
