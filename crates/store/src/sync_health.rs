//! What sync health and push need beyond the sync state itself: the
//! provider's estimate of a backfill's size, the job that runs a grant's sync,
//! and each inbox's push subscription (Graph subscription or Gmail watch).

use hirewire_domain::ids::{GrantId, JobId};
use jiff::Timestamp;

use crate::model::decode_enum;
use crate::time::{ms, ts};
use crate::{Job, ProviderChoice, Store, StoreError};

/// An inbox's push subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub grant_id: GrantId,
    pub provider: ProviderChoice,
    /// Graph: the subscription id; Gmail: the history id the watch started at.
    pub subscription_id: String,
    /// Graph's `clientState`, sealed with the keyring (never stored in clear).
    pub client_state_sealed: Option<String>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscription")
            .field("grant_id", &self.grant_id)
            .field("provider", &self.provider)
            .field("subscription_id", &self.subscription_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What [`Store::put_push_subscription`] writes.
#[derive(Clone, Copy)]
pub struct NewPushSubscription<'a> {
    pub grant_id: GrantId,
    pub provider: ProviderChoice,
    pub subscription_id: &'a str,
    pub client_state_sealed: Option<&'a str>,
    pub expires_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    grant_id: i64,
    provider: String,
    subscription_id: String,
    client_state_sealed: Option<String>,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SubscriptionRow> for PushSubscription {
    type Error = StoreError;
    fn try_from(r: SubscriptionRow) -> Result<Self, StoreError> {
        Ok(PushSubscription {
            grant_id: GrantId(r.grant_id),
            provider: decode_enum(&r.provider)?,
            subscription_id: r.subscription_id,
            client_state_sealed: r.client_state_sealed,
            expires_at: ts(r.expires_at)?,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
        })
    }
}

macro_rules! subscription_columns {
    () => {
        "grant_id, provider, subscription_id, client_state_sealed, expires_at, created_at, updated_at"
    };
}

impl Store {
    /// Saves the provider's estimate of how many messages `grant`'s backfill lists.
    /// A grant that no longer exists → `NotFound`.
    pub async fn set_mail_sync_estimate(
        &self,
        grant: GrantId,
        messages_total: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let total = i64::try_from(messages_total).unwrap_or(i64::MAX);
        let exists: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM grants WHERE id = $1"
        )
        .bind(grant.get())
        .fetch_optional(pool)
        .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO mail_sync_estimates (grant_id, messages_total, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (grant_id) DO UPDATE SET messages_total = excluded.messages_total, updated_at = excluded.updated_at",
            )
            .bind(grant.get())
            .bind(total)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The provider's estimate of `grant`'s backfill size, if one was saved.
    pub async fn mail_sync_estimate(&self, grant: GrantId) -> Result<Option<u64>, StoreError> {
        let n: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT messages_total FROM mail_sync_estimates WHERE grant_id = $1"
        )
        .bind(grant.get())
        .fetch_optional(pool)
        .await)?;
        Ok(n.map(|n| u64::try_from(n).unwrap_or(0)))
    }

    /// The newest job with `dedupe_key` (unfinished or not), e.g. a grant's sync step.
    pub async fn latest_job_with_key(&self, dedupe_key: &str) -> Result<Option<Job>, StoreError> {
        let id: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM jobs WHERE dedupe_key = $1 ORDER BY id DESC LIMIT 1"
        )
        .bind(dedupe_key)
        .fetch_optional(pool)
        .await)?;
        match id {
            Some(id) => self.job(JobId(id)).await,
            None => Ok(None),
        }
    }

    /// How many jobs of `kind` are queued (due or not) or running.
    pub async fn count_unfinished_jobs(&self, kind: &str) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND status IN ('queued', 'running')"
        )
        .bind(kind)
        .fetch_one(pool)
        .await)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Creates or replaces `grant`'s push subscription. A grant that no longer exists → `NotFound`.
    pub async fn put_push_subscription(
        &self,
        s: &NewPushSubscription<'_>,
        now: Timestamp,
    ) -> Result<PushSubscription, StoreError> {
        let exists: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM grants WHERE id = $1"
        )
        .bind(s.grant_id.get())
        .fetch_optional(pool)
        .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let sql = concat!(
            "INSERT INTO push_subscriptions (",
            subscription_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (grant_id) DO UPDATE SET provider = excluded.provider, subscription_id = excluded.subscription_id, \
             client_state_sealed = excluded.client_state_sealed, expires_at = excluded.expires_at, updated_at = excluded.updated_at \
             RETURNING ",
            subscription_columns!()
        );
        let row: SubscriptionRow = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(s.grant_id.get())
                .bind(s.provider.as_str())
                .bind(s.subscription_id)
                .bind(s.client_state_sealed)
                .bind(ms(s.expires_at))
                .bind(ms(now))
                .fetch_one(&mut *tx)
                .await?
        });
        row.try_into()
    }

    /// `grant`'s push subscription, if any.
    pub async fn push_subscription(
        &self,
        grant: GrantId,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM push_subscriptions WHERE grant_id = $1"
        );
        let row: Option<SubscriptionRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(grant.get())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The push subscription with the provider's `subscription_id`, if any.
    pub async fn push_subscription_by_id(
        &self,
        subscription_id: &str,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM push_subscriptions WHERE subscription_id = $1 ORDER BY grant_id LIMIT 1"
        );
        let row: Option<SubscriptionRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(subscription_id)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Every push subscription that expires before `before`, soonest first.
    pub async fn push_subscriptions_expiring(
        &self,
        before: Timestamp,
    ) -> Result<Vec<PushSubscription>, StoreError> {
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM push_subscriptions WHERE expires_at < $1 ORDER BY expires_at, grant_id"
        );
        let rows: Vec<SubscriptionRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(ms(before))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Forgets `grant`'s push subscription (true when there was one).
    pub async fn delete_push_subscription(&self, grant: GrantId) -> Result<bool, StoreError> {
        let n = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM push_subscriptions WHERE grant_id = $1")
                .bind(grant.get())
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Moves the queued job with `dedupe_key` up to `now` when it is due later (a push makes the next sync
    /// step run now instead of at the polling interval). When that job is running instead, it is marked so
    /// its worker runs it once more right after (see [`Store::rerun_requested`]): the running step may have
    /// read the mailbox before the pushed change, and the step it queues next would otherwise wait for the
    /// interval. True when a job was moved or marked.
    pub async fn hasten_job(&self, dedupe_key: &str, now: Timestamp) -> Result<bool, StoreError> {
        let n = write_tx!(self, |tx| {
            let queued = sqlx::query(
                "UPDATE jobs SET run_at = $2 WHERE dedupe_key = $1 AND status = 'queued' AND run_at > $2",
            )
            .bind(dedupe_key)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let running = sqlx::query(
                "UPDATE jobs SET rerun_requested = 1 WHERE dedupe_key = $1 AND status = 'running'",
            )
            .bind(dedupe_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            queued + running
        });
        Ok(n > 0)
    }

    /// Whether [`Store::hasten_job`] asked for another run while this job's current (or last) run held it.
    /// Read it after completing the job: a request made before the completion is seen; one made after
    /// finds the next queued job instead.
    pub async fn rerun_requested(&self, id: JobId) -> Result<bool, StoreError> {
        let flag: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT rerun_requested FROM jobs WHERE id = $1"
        )
        .bind(id.get())
        .fetch_optional(pool)
        .await)?;
        Ok(flag.unwrap_or(0) != 0)
    }

    /// Marks `grant`'s push subscription as expiring now, so the next maintenance pass renews it.
    pub async fn expire_push_subscription(
        &self,
        grant: GrantId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("UPDATE push_subscriptions SET expires_at = $2 WHERE grant_id = $1")
                .bind(grant.get())
                .bind(ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}
