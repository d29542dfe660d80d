//! Idempotency keys for API writes (`Idempotency-Key` header).
//!
//! A key is scoped to a user. `begin` claims it; the handler then calls
//! `finish` with the response to replay, or `abandon` on error so a retry can
//! run. Keys live [`IDEMPOTENCY_TTL_MS`] (24 h): an older key counts as new,
//! and `purge_idempotency_keys` deletes them.

use hirewire_domain::ids::UserId;
use jiff::Timestamp;

use crate::time::ms;
use crate::{IdemBegin, Store, StoreError};

/// How long a key is remembered, in milliseconds.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(sqlx::FromRow)]
struct IdemRow {
    request_fingerprint: String,
    response_status: Option<i64>,
    response_body: Option<Vec<u8>>,
    created_at: i64,
}

impl Store {
    /// Claims `(user, key)` for a request with `fingerprint` (e.g. a hash of
    /// method, path and body).
    pub async fn idempotency_begin(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<IdemBegin, StoreError> {
        if key.is_empty() || key.len() > 255 {
            return Err(StoreError::Invalid(
                "the idempotency key must be 1 to 255 bytes".into(),
            ));
        }
        let outcome = write_tx!(self, |tx| {
            let existing: Option<IdemRow> = sqlx::query_as(
                "SELECT request_fingerprint, response_status, response_body, created_at \
                 FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            )
            .bind(user.get())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                Some(row) if row.created_at > ms(now) - IDEMPOTENCY_TTL_MS => {
                    if row.request_fingerprint != fingerprint {
                        IdemBegin::Mismatch
                    } else {
                        match (row.response_status, row.response_body) {
                            (Some(status), body) => IdemBegin::Replay {
                                status: u16::try_from(status).map_err(|_| {
                                    StoreError::Corrupt(format!("response status {status}"))
                                })?,
                                body: body.unwrap_or_default(),
                            },
                            (None, _) => IdemBegin::InProgress,
                        }
                    }
                }
                _ => {
                    // New, or expired: (re)claim. On PostgreSQL two requests may
                    // race here; the loser's insert hits the primary key and
                    // does nothing, so it reports InProgress.
                    let inserted = sqlx::query(
                        "INSERT INTO idempotency_keys (user_id, key, request_fingerprint, response_status, response_body, created_at) \
                         VALUES ($1, $2, $3, NULL, NULL, $4) \
                         ON CONFLICT (user_id, key) DO UPDATE SET request_fingerprint = excluded.request_fingerprint, \
                           response_status = NULL, response_body = NULL, created_at = excluded.created_at \
                         WHERE idempotency_keys.created_at <= $5",
                    )
                    .bind(user.get())
                    .bind(key)
                    .bind(fingerprint)
                    .bind(ms(now))
                    .bind(ms(now) - IDEMPOTENCY_TTL_MS)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        IdemBegin::New
                    } else {
                        IdemBegin::InProgress
                    }
                }
            }
        });
        Ok(outcome)
    }

    /// Stores the response of a claimed key. `NotFound` if the key is not
    /// in progress (never begun, abandoned or already finished).
    pub async fn idempotency_finish(
        &self,
        user: UserId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2 \
             WHERE user_id = $3 AND key = $4 AND response_status IS NULL"
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(user.get())
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Releases an in-progress key (the request failed), so a retry runs anew.
    /// A finished key is kept.
    pub async fn idempotency_abandon(&self, user: UserId, key: &str) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response_status IS NULL"
        )
        .bind(user.get())
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Deletes keys created more than 24 h before `now`; returns the count.
    pub async fn purge_idempotency_keys(&self, now: Timestamp) -> Result<u64, StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at <= $1"
        )
        .bind(ms(now) - IDEMPOTENCY_TTL_MS)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(done)
    }
}
