//! A leased work queue shared by every server instance.
//!
//! A worker `claim`s a due job and holds a lease on it until `lease_until`.
//! Each claim increments the job's fencing token; `heartbeat`, `complete` and
//! `fail` must present the current token *and* a lease that has not expired,
//! otherwise they change nothing and return [`StoreError::StaleLease`] (the
//! job may already be running elsewhere). A job whose lease expired is
//! claimable again; if that was its last attempt it is marked `failed`
//! instead. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`; SQLite claims in
//! a `BEGIN IMMEDIATE` transaction.

use std::time::Duration;

use hirewire_domain::ids::JobId;
use jiff::Timestamp;

use crate::model::decode_enum;
use crate::time::{duration_ms, ms, opt_ts, ts};
use crate::{ClaimedJob, Db, Job, JobStatus, NewJob, Store, StoreError};

const LEASE_LOST_ON_LAST_ATTEMPT: &str = "the worker's lease expired during the last attempt";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    kind: String,
    payload: String,
    status: String,
    attempts: i64,
    max_attempts: i64,
    run_at: i64,
    lease_until: Option<i64>,
    lease_owner: Option<String>,
    fencing_token: i64,
    last_error: Option<String>,
    dedupe_key: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: i64,
    kind: String,
    payload: String,
    attempts: i64,
    fencing_token: i64,
    lease_until: Option<i64>,
}

fn payload(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("job payload: {e}")))
}

fn count(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("job counter {n}")))
}

impl Store {
    /// Adds a job. With a `dedupe_key` that an unfinished (queued or running)
    /// job already has, returns that job's id and adds nothing.
    pub async fn enqueue(&self, job: &NewJob<'_>, now: Timestamp) -> Result<JobId, StoreError> {
        if job.kind.is_empty() {
            return Err(StoreError::Invalid("the job kind is empty".into()));
        }
        if job.max_attempts == 0 {
            return Err(StoreError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        let payload = job.payload.to_string();
        // PostgreSQL: the existing job may finish between our conflicting
        // insert and the look-up; then insert again.
        for _ in 0..5 {
            let id: Option<i64> = write_tx!(self, |tx| {
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, fencing_token, dedupe_key, created_at) \
                     VALUES ($1, $2, 'queued', 0, $3, $4, 0, $5, $6) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(job.kind)
                .bind(payload.as_str())
                .bind(i64::from(job.max_attempts))
                .bind(ms(job.run_at))
                .bind(job.dedupe_key)
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await?;
                match inserted {
                    Some(id) => Some(id),
                    None => {
                        sqlx::query_scalar(
                            "SELECT id FROM jobs WHERE dedupe_key = $1 AND status IN ('queued', 'running')",
                        )
                        .bind(job.dedupe_key)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                }
            });
            if let Some(id) = id {
                return Ok(JobId(id));
            }
        }
        Err(StoreError::Conflict {
            what: "the job's dedupe key is contended; try again",
        })
    }

    /// Claims the next due job of one of `kinds` for `owner`: a queued job
    /// whose `run_at` has come (oldest `run_at` first) or a running job whose
    /// lease has expired. Returns `None` when there is nothing to do (on
    /// PostgreSQL also, rarely, when racing claimers took every candidate row:
    /// just poll again). `kinds` must not be empty.
    pub async fn claim(
        &self,
        owner: &str,
        kinds: &[&str],
        now: Timestamp,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        if kinds.is_empty() {
            return Err(StoreError::Invalid(
                "claim needs at least one job kind".into(),
            ));
        }
        let now_ms = ms(now);
        let until = now_ms.saturating_add(duration_ms(lease));
        let row: Option<ClaimRow> = match &self.db {
            Db::Postgres(pool) => {
                let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "UPDATE jobs SET status = 'failed', finished_at = $1, lease_until = NULL, last_error = $2 \
                     WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND lease_until <= $1 \
                                  AND attempts >= max_attempts FOR UPDATE SKIP LOCKED)",
                )
                .bind(now_ms)
                .bind(LEASE_LOST_ON_LAST_ATTEMPT)
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query_as(
                    "WITH next AS ( \
                       SELECT id FROM jobs \
                       WHERE kind = ANY($1) \
                         AND ((status = 'queued' AND run_at <= $2) \
                           OR (status = 'running' AND lease_until <= $2 AND attempts < max_attempts)) \
                       ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, lease_owner = $3, \
                       lease_until = $4, fencing_token = j.fencing_token + 1, rerun_requested = 0 \
                     FROM next WHERE j.id = next.id \
                     RETURNING j.id, j.kind, j.payload, j.attempts, j.fencing_token, j.lease_until",
                )
                .bind(&kinds)
                .bind(now_ms)
                .bind(owner)
                .bind(until)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row
            }
            Db::Sqlite(pool) => {
                let kinds = serde_json::to_string(kinds)
                    .map_err(|e| StoreError::Invalid(format!("job kinds: {e}")))?;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(
                    "UPDATE jobs SET status = 'failed', finished_at = $1, lease_until = NULL, last_error = $2 \
                     WHERE status = 'running' AND lease_until <= $1 AND attempts >= max_attempts",
                )
                .bind(now_ms)
                .bind(LEASE_LOST_ON_LAST_ATTEMPT)
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query_as(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $3, \
                       lease_until = $4, fencing_token = fencing_token + 1, rerun_requested = 0 \
                     WHERE id = ( \
                       SELECT id FROM jobs \
                       WHERE kind IN (SELECT value FROM json_each($1)) \
                         AND ((status = 'queued' AND run_at <= $2) \
                           OR (status = 'running' AND lease_until <= $2 AND attempts < max_attempts)) \
                       ORDER BY run_at, id LIMIT 1) \
                     RETURNING id, kind, payload, attempts, fencing_token, lease_until",
                )
                .bind(kinds)
                .bind(now_ms)
                .bind(owner)
                .bind(until)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row
            }
        };
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedJob {
            id: JobId(row.id),
            kind: row.kind,
            payload: payload(&row.payload)?,
            attempt: count(row.attempts)?,
            fencing_token: row.fencing_token,
            lease_until: ts(row.lease_until.unwrap_or(until))?,
        }))
    }

    /// Extends a held lease to `now + lease`; returns the new `lease_until`.
    pub async fn heartbeat(
        &self,
        id: JobId,
        fencing_token: i64,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Timestamp, StoreError> {
        let until = ms(now).saturating_add(duration_ms(lease));
        let done = write_tx!(self, |tx| sqlx::query(
            "UPDATE jobs SET lease_until = $1 \
             WHERE id = $2 AND status = 'running' AND fencing_token = $3 AND lease_until > $4"
        )
        .bind(until)
        .bind(id.get())
        .bind(fencing_token)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(self.lease_refusal(id).await);
        }
        ts(until)
    }

    /// Marks a held job done.
    pub async fn complete(
        &self,
        id: JobId,
        fencing_token: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "UPDATE jobs SET status = 'done', finished_at = $1, lease_until = NULL \
             WHERE id = $2 AND status = 'running' AND fencing_token = $3 AND lease_until > $1"
        )
        .bind(ms(now))
        .bind(id.get())
        .bind(fencing_token)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(self.lease_refusal(id).await);
        }
        Ok(())
    }

    /// Records a failed attempt of a held job. With `retry_at` and attempts
    /// left, the job goes back to `queued` at `retry_at` (compute it with
    /// `hirewire_domain::retry::Backoff`); otherwise it becomes `failed`.
    /// Returns the job's new status.
    pub async fn fail(
        &self,
        id: JobId,
        fencing_token: i64,
        now: Timestamp,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<JobStatus, StoreError> {
        let status: Option<String> = write_tx!(self, |tx| {
            sqlx::query_scalar(
            "UPDATE jobs SET \
               status = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
               run_at = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN $1 ELSE run_at END, \
               finished_at = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE $2 END, \
               lease_until = NULL, last_error = $3 \
             WHERE id = $4 AND status = 'running' AND fencing_token = $5 AND lease_until > $2 \
             RETURNING status"
        )
        .bind(retry_at.map(ms))
        .bind(ms(now))
        .bind(error)
        .bind(id.get())
        .bind(fencing_token)
        .fetch_optional(&mut *tx)
        .await?
        });
        match status {
            Some(s) => decode_enum(&s),
            None => Err(self.lease_refusal(id).await),
        }
    }

    /// `NotFound` for an unknown job, else `StaleLease`.
    async fn lease_refusal(&self, id: JobId) -> StoreError {
        match self.job(id).await {
            Ok(Some(_)) => StoreError::StaleLease,
            Ok(None) => StoreError::NotFound,
            Err(e) => e,
        }
    }

    /// A job as stored.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, kind, payload, status, attempts, max_attempts, run_at, lease_until, lease_owner, \
             fencing_token, last_error, dedupe_key, created_at, finished_at FROM jobs WHERE id = $1"
        )
        .bind(id.get())
        .fetch_optional(pool)
        .await
        })?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Job {
            id: JobId(r.id),
            kind: r.kind,
            payload: payload(&r.payload)?,
            status: decode_enum(&r.status)?,
            attempts: count(r.attempts)?,
            max_attempts: count(r.max_attempts)?,
            run_at: ts(r.run_at)?,
            lease_until: opt_ts(r.lease_until)?,
            lease_owner: r.lease_owner,
            fencing_token: r.fencing_token,
            last_error: r.last_error,
            dedupe_key: r.dedupe_key,
            created_at: ts(r.created_at)?,
            finished_at: opt_ts(r.finished_at)?,
        }))
    }

    /// How many jobs have `status`.
    pub async fn count_jobs(&self, status: JobStatus) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status = $1"
        )
        .bind(status.as_str())
        .fetch_one(pool)
        .await)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))
    }
}
