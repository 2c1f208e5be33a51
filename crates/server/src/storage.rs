//! The server's database: SQLite through sqlx, schema by migrations.

use std::path::Path;
use std::str::FromStr;

use proto::MeetingId;
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
}

/// A meeting as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRecord {
    pub id: MeetingId,
    pub host_secret_sha256: Vec<u8>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
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
        sqlx::query("INSERT INTO meetings (id, host_secret_sha256, created_at, ended_at) VALUES (?, ?, ?, ?)")
            .bind(record.id.as_str())
            .bind(&record.host_secret_sha256)
            .bind(record.created_at)
            .bind(record.ended_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn meeting(&self, id: &MeetingId) -> Result<Option<MeetingRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT host_secret_sha256, created_at, ended_at FROM meetings WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| MeetingRecord {
            id: id.clone(),
            host_secret_sha256: row.get(0),
            created_at: row.get(1),
            ended_at: row.get(2),
        }))
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
            id: id.clone(),
            host_secret_sha256: vec![1, 2, 3],
            created_at: 42,
            ended_at: None,
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
}
