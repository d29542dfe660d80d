//! Test helpers (cargo feature `testing`): a fresh, migrated database per test
//! on either backend, and [`both_backends!`](crate::both_backends) to run one
//! test body against both.
//!
//! - SQLite: a new file in a temporary directory, deleted with the last
//!   [`TestDb`] clone.
//! - PostgreSQL: the database at `HIREWIRE_TEST_DATABASE_URL` (default
//!   [`DEFAULT_TEST_DATABASE_URL`]), in a fresh schema
//!   `hw_test_<unix seconds>_<random>` selected through `search_path`; the
//!   schema is dropped with the last [`TestDb`] clone. Schemas left behind by
//!   killed test runs are removed by [`drop_stale_test_schemas`], or by hand:
//!   `SELECT format('DROP SCHEMA %I CASCADE;', nspname) FROM pg_namespace
//!   WHERE nspname LIKE 'hw\_test\_%' \gexec` (in psql).
//!
//! If PostgreSQL is unreachable, a PostgreSQL test fails with a message that
//! says so; it never passes silently.

use std::future::Future;
use std::ops::Deref;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{Backend, Store, StoreError};

/// Used when `HIREWIRE_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Pool size of test stores.
const TEST_POOL_SIZE: u32 = 5;

/// The PostgreSQL URL tests use.
pub fn test_database_url() -> String {
    std::env::var("HIREWIRE_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

enum Place {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

struct Guard {
    place: Place,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Place::Postgres { url, schema } = &self.place {
            // Drop may run inside or outside a runtime: use a private one on
            // its own thread.
            let (url, schema) = (url.clone(), schema.clone());
            let joined = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = PgConnection::connect(&url).await {
                            // A test that panicked mid-transaction may still hold
                            // locks: give up rather than hang (drop_stale_test_schemas
                            // cleans up later).
                            let _ = sqlx::query("SET lock_timeout = '5s'")
                                .execute(&mut conn)
                                .await;
                            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                                .execute(&mut conn)
                                .await;
                            let _ = conn.close().await;
                        }
                    });
                }
            })
            .join();
            drop(joined);
        }
    }
}

/// A fresh, migrated database for one test. Derefs to its [`Store`]; cheap to
/// clone; the database goes away with the last clone.
#[derive(Clone)]
pub struct TestDb {
    store: Store,
    guard: Arc<Guard>,
}

impl Deref for TestDb {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

fn pg_options(url: &str, schema: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)?.options([("search_path", schema)]))
}

impl TestDb {
    /// Creates and migrates a fresh database on `backend`.
    pub async fn new(backend: Backend) -> Result<TestDb, StoreError> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|source| StoreError::DataDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
                let path = dir.path().join("hirewire.db");
                let store = Store::connect_sqlite_file(path.clone(), TEST_POOL_SIZE).await?;
                store.migrate().await?;
                Ok(TestDb {
                    store,
                    guard: Arc::new(Guard {
                        place: Place::Sqlite { _dir: dir, path },
                    }),
                })
            }
            Backend::Postgres => {
                let url = test_database_url();
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let schema = format!("hw_test_{secs}_{:016x}", rand::random::<u64>());
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                // From here on the guard drops the schema, whatever happens.
                let guard = Arc::new(Guard {
                    place: Place::Postgres {
                        url: url.clone(),
                        schema: schema.clone(),
                    },
                });
                let store =
                    Store::connect_postgres(pg_options(&url, &schema)?, TEST_POOL_SIZE).await?;
                store.migrate().await?;
                Ok(TestDb { store, guard })
            }
        }
    }

    /// A handle on this test database (keep the `TestDb` alive while using it).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// How another process (the `hirewire` binary under test) opens this
    /// database: `DATABASE_URL` for PostgreSQL (the test schema selected
    /// through the URL's `options[search_path]`), or `--data-dir` for SQLite
    /// (the directory holding `hirewire.db`).
    pub fn for_another_process(&self) -> ProcessDb {
        match &self.guard.place {
            Place::Sqlite { path, .. } => ProcessDb::DataDir(
                path.parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default(),
            ),
            Place::Postgres { url, schema } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                ProcessDb::DatabaseUrl(format!("{url}{sep}options[search_path]={schema}"))
            }
        }
    }

    /// A second, independent [`Store`] (its own pool) on the same database
    /// and schema, as another server instance would have.
    pub async fn open_another(&self) -> Result<Store, StoreError> {
        match &self.guard.place {
            Place::Sqlite { path, .. } => {
                Store::connect_sqlite_file(path.clone(), TEST_POOL_SIZE).await
            }
            Place::Postgres { url, schema } => {
                Store::connect_postgres(pg_options(url, schema)?, TEST_POOL_SIZE).await
            }
        }
    }
}

/// See [`TestDb::for_another_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessDb {
    /// Pass as `--data-dir` (SQLite).
    DataDir(PathBuf),
    /// Pass as `DATABASE_URL` (PostgreSQL).
    DatabaseUrl(String),
}

/// Same as [`TestDb::new`].
pub async fn fresh_store(backend: Backend) -> Result<TestDb, StoreError> {
    TestDb::new(backend).await
}

/// Drops `hw_test_*` schemas created more than `older_than` ago (by the time
/// in their name) in the test database; returns how many were dropped.
/// `Duration::ZERO` drops them all (only when no test is running).
pub async fn drop_stale_test_schemas(older_than: Duration) -> Result<u64, StoreError> {
    let mut conn = PgConnection::connect(&test_database_url()).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'hw\\_test\\_%'",
    )
    .fetch_all(&mut conn)
    .await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut dropped = 0;
    for name in names {
        let created: Option<u64> = name
            .strip_prefix("hw_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse().ok());
        let stale = created.is_none_or(|c| now.saturating_sub(c) >= older_than.as_secs());
        if stale && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&mut conn)
            .await?;
            dropped += 1;
        }
    }
    conn.close().await?;
    Ok(dropped)
}

/// What a [`both_backends!`](crate::both_backends) test takes: a [`Store`] or
/// the whole [`TestDb`] (to open a second store).
pub trait FromTestDb {
    fn from_test_db(db: &TestDb) -> Self;
}

impl FromTestDb for Store {
    fn from_test_db(db: &TestDb) -> Self {
        db.store()
    }
}

impl FromTestDb for TestDb {
    fn from_test_db(db: &TestDb) -> Self {
        db.clone()
    }
}

/// Runs one async test body on a fresh database of `backend`, on a
/// multi-threaded runtime. Panics (fails the test) when the database cannot be
/// set up, saying why.
pub fn run<A, F, Fut>(backend: Backend, test: F)
where
    A: FromTestDb,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    rt.block_on(async {
        let db = match TestDb::new(backend).await {
            Ok(db) => db,
            Err(e) => match backend {
                Backend::Postgres => panic!(
                    "cannot set up a PostgreSQL test database at {} ({e}); start PostgreSQL or set \
                     HIREWIRE_TEST_DATABASE_URL",
                    test_database_url()
                ),
                Backend::Sqlite => panic!("cannot set up a SQLite test database: {e}"),
            },
        };
        test(A::from_test_db(&db)).await;
        db.store.close().await;
    });
}

/// Generates one test per backend from an async body:
///
/// ```ignore
/// hirewire_store::both_backends! {
///     async fn candidates_are_scoped_to_their_org(store: Store) { /* ... */ }
///     async fn two_instances_share_the_queue(db: TestDb) { let other = db.open_another().await.unwrap(); }
/// }
/// ```
///
/// expands to a module per test with `#[test] fn sqlite()` and
/// `#[test] fn postgres()` (run as `name::sqlite`, `name::postgres`; filter a
/// backend with `cargo test sqlite`). The module sees the enclosing file's
/// imports through `use super::*`.
#[macro_export]
macro_rules! both_backends {
    ($($(#[doc = $doc:literal])* async fn $name:ident($arg:ident : $ty:ty) $body:block)*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                $crate::testing::run($crate::Backend::Sqlite, |$arg: $ty| async move $body)
            }

            #[test]
            fn postgres() {
                $crate::testing::run($crate::Backend::Postgres, |$arg: $ty| async move $body)
            }
        }
    )*};
}

/// Everything the database holds on disk, as bytes, for scanning tests
/// ("no secret in plaintext"): the SQLite file with its `-wal` and `-shm`, or
/// a `pg_dump` of the test schema (data and definitions).
pub async fn raw_dump(db: &TestDb) -> Vec<u8> {
    match &db.guard.place {
        Place::Sqlite { path, .. } => {
            let mut out = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                if let Ok(bytes) = std::fs::read(&p) {
                    out.extend(bytes);
                }
            }
            assert!(!out.is_empty(), "the SQLite file exists");
            out
        }
        Place::Postgres { url, schema } => {
            let out = tokio::process::Command::new("pg_dump")
                .arg("--dbname")
                .arg(url)
                .arg("--schema")
                .arg(schema)
                .output()
                .await
                .expect("run pg_dump (Debian postgresql-client)");
            assert!(
                out.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}
