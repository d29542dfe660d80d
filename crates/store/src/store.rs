//! Connecting, migrating and probing.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::StoreError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for the write lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…` or `postgresql://…` selects PostgreSQL; anything else
    /// (including `None`) selects the SQLite file `data_dir/hirewire.db`.
    pub database_url: Option<String>,
    /// Directory of the SQLite file (created if missing).
    pub data_dir: PathBuf,
    /// Pool size.
    pub max_connections: u32,
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The persistence handle. Cloning is cheap (it clones a pool handle).
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// True when `url` selects PostgreSQL.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens a pool (does not migrate; call [`Store::migrate`]).
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let max = config.max_connections.max(1);
        match config.database_url.as_deref() {
            Some(url) if is_postgres_url(url) => {
                let options = PgConnectOptions::from_str(url)?;
                Self::connect_postgres(options, max).await
            }
            Some(url) if !url.trim().is_empty() => {
                // Refuse rather than quietly use SQLite: someone who set a
                // database URL expects their data to go there.
                let scheme = url.split(':').next().unwrap_or_default();
                Err(StoreError::Invalid(format!(
                    "unsupported database URL scheme {scheme:?}: use postgres://…, or unset it for the embedded SQLite file"
                )))
            }
            _ => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    StoreError::DataDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
                Self::connect_sqlite_file(config.data_dir.join("hirewire.db"), max).await
            }
        }
    }

    pub(crate) async fn connect_sqlite_file(
        path: PathBuf,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(Store {
            db: Db::Sqlite(pool),
        })
    }

    pub(crate) async fn connect_postgres(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        tracing::debug!("opened PostgreSQL store");
        Ok(Store {
            db: Db::Postgres(pool),
        })
    }

    /// Applies pending migrations; a no-op when the schema is current. Safe to
    /// run from several instances at once on PostgreSQL (advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Round-trips one statement (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool, waiting for checked-out connections to return.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            database_url: Some(String::new()),
            data_dir: dir.path().to_owned(),
            max_connections: 1,
        };
        let store = Store::connect(&config).await.unwrap();
        let Db::Sqlite(pool) = &store.db else {
            panic!("expected SQLite")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!((mode.as_str(), fk, busy, sync), ("wal", 1, 5000, 1));
        assert!(!is_postgres_url("sqlite://x.db"));
        assert!(is_postgres_url("postgresql://h/db") && is_postgres_url("postgres://h/db"));
    }
}
