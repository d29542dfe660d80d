//! Errors the server can map to HTTP statuses.

/// Why a store call failed.
///
/// Suggested HTTP mapping: `NotFound` → 404, `Conflict` → 409, `StaleLease` →
/// (internal: the worker must stop), `Invalid` → 422, everything else → 500/503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist (or belongs to another organization).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; `what` is a sentence for the user.
    #[error("conflict: {what}")]
    Conflict { what: &'static str },
    /// A job worker's lease expired or its fencing token is no longer current:
    /// another worker may own the job now. Nothing was changed.
    #[error("the job lease is no longer held (it expired or the job was reclaimed)")]
    StaleLease,
    /// The caller passed a value the store refuses (empty name, zero limit, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value could not be decoded (bad timestamp, unknown enum value).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The SQLite data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True for errors that are worth retrying (pool timeouts, busy database, I/O).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            ),
            _ => false,
        }
    }
}

/// Maps a unique violation to `Conflict { what }`, any other error to `Database`.
pub(crate) fn conflict(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict { what },
        _ => StoreError::Database(e),
    }
}

/// `Ok` when a write touched a row, else `missing` (e.g. `NotFound`, `StaleLease`).
pub(crate) fn touched(rows: u64, missing: StoreError) -> Result<(), StoreError> {
    if rows == 0 { Err(missing) } else { Ok(()) }
}
