//! Persistence for hirewire: one store API, SQLite and PostgreSQL backends.
//!
//! [`Store`] is a cheap handle (clone it freely) over a connection pool of
//! either backend. Every SQL statement is written once and expanded against
//! whichever pool or transaction is active by the private `on_pool!` /
//! `write_tx!` macros; the few statements whose dialects differ (job claims)
//! are written per backend side by side.
//!
//! Rules every method follows:
//! - Instants are stored as unix milliseconds (UTC) and always come from the
//!   caller (`now` parameters); the database clock is never read. Sub-millisecond
//!   precision is truncated.
//! - Case-insensitive keys (user email, candidate address, candidate name) are
//!   computed in Rust ([`AddressKey`], `str::to_lowercase`) and stored beside
//!   the original text; SQL `lower()`/`NOCASE` are never used.
//! - Everything that belongs to an organization is read and written through the
//!   org id: a query for org A never returns org B's rows.
//! - Every write runs in one transaction (`BEGIN IMMEDIATE` on SQLite, so
//!   concurrent writers queue on the busy timeout instead of failing), so no
//!   method leaves half-written records.
//!
//! [`AddressKey`]: hirewire_domain::email::AddressKey

/// Expands `$body` once per backend with `$pool` bound to that backend's pool.
/// For reads (and nothing else).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// Expands `$body` once per backend inside a write transaction bound to `$tx`
/// (use `&mut *$tx` as the executor). SQLite transactions start with
/// `BEGIN IMMEDIATE`. The transaction commits after `$body` evaluates; an early
/// `return` or `?` inside `$body` drops it, which rolls back.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

mod audit;
mod candidates;
mod error;
mod flags;
mod idempotency;
mod inmail;
mod integrations;
mod jobs;
mod mail;
mod model;
mod orgs;
mod outbox;
mod scheduling;
mod store;
mod sync_health;
mod time;
mod users;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;
pub use flags::*;
pub use hirewire_domain::ids::{
    ApiTokenId, AuditId, BookingId, CandidateId, GrantId, InMailId, JobId, OrgId, SchedulingLinkId,
    UserId,
};
pub use hirewire_domain::ids::{MailMessageId, MailThreadId};
pub use integrations::*;
pub use mail::*;
pub use model::*;
pub use outbox::*;
pub use scheduling::*;
pub use store::{Backend, Store, StoreConfig};
pub use sync_health::*;

pub(crate) use store::Db;

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
