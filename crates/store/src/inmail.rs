//! In-product messages (InMail) on a candidate's timeline.

use hirewire_domain::ids::{CandidateId, InMailId, OrgId, UserId};
use jiff::Timestamp;

use crate::model::decode_enum;
use crate::time::{ms, ts};
use crate::{Direction, InMail, NewInMail, Store, StoreError};

/// Largest page [`Store::list_inmail`] returns.
pub const MAX_INMAIL_PAGE: u32 = 500;

#[derive(sqlx::FromRow)]
struct InMailRow {
    id: i64,
    org_id: i64,
    candidate_id: i64,
    author_user_id: Option<i64>,
    direction: String,
    body: String,
    sent_at: i64,
    created_at: i64,
}

impl InMailRow {
    fn into_inmail(self) -> Result<InMail, StoreError> {
        Ok(InMail {
            id: InMailId(self.id),
            org_id: OrgId(self.org_id),
            candidate_id: CandidateId(self.candidate_id),
            author_user_id: self.author_user_id.map(UserId),
            direction: decode_enum(&self.direction)?,
            body: self.body,
            sent_at: ts(self.sent_at)?,
            created_at: ts(self.created_at)?,
        })
    }
}

impl Store {
    /// Records an InMail of a candidate of `org`. The candidate and the author
    /// (if any) must belong to `org` → else `NotFound`. Outbound messages need
    /// an author → else `Invalid`.
    pub async fn create_inmail(
        &self,
        org: OrgId,
        new: &NewInMail<'_>,
        now: Timestamp,
    ) -> Result<InMail, StoreError> {
        if new.direction == Direction::Outbound && new.author_user_id.is_none() {
            return Err(StoreError::Invalid(
                "an outbound InMail needs an author".into(),
            ));
        }
        let row: InMailRow = write_tx!(self, |tx| {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM candidates WHERE org_id = $1 AND id = $2")
                    .bind(org.get())
                    .bind(new.candidate_id.get())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            if let Some(author) = new.author_user_id {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM users WHERE org_id = $1 AND id = $2")
                        .bind(org.get())
                        .bind(author.get())
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::NotFound);
                }
            }
            sqlx::query_as(
                "INSERT INTO inmail_messages (org_id, candidate_id, author_user_id, direction, body, sent_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 RETURNING id, org_id, candidate_id, author_user_id, direction, body, sent_at, created_at",
            )
            .bind(org.get())
            .bind(new.candidate_id.get())
            .bind(new.author_user_id.map(UserId::get))
            .bind(new.direction.as_str())
            .bind(new.body)
            .bind(ms(new.sent_at))
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await?
        });
        row.into_inmail()
    }

    /// A candidate's InMail, newest first (by `sent_at`, then id). `before` is
    /// the id of the last message of the previous page. `limit` is clamped to
    /// 1..=[`MAX_INMAIL_PAGE`]. Another org's candidate yields an empty list.
    pub async fn list_inmail(
        &self,
        org: OrgId,
        candidate: CandidateId,
        before: Option<InMailId>,
        limit: u32,
    ) -> Result<Vec<InMail>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_INMAIL_PAGE));
        let rows: Vec<InMailRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT m.id, m.org_id, m.candidate_id, m.author_user_id, m.direction, m.body, m.sent_at, m.created_at \
             FROM inmail_messages m \
             LEFT JOIN inmail_messages b ON b.id = $3 AND b.org_id = m.org_id AND b.candidate_id = m.candidate_id \
             WHERE m.org_id = $1 AND m.candidate_id = $2 \
               AND ($3 IS NULL OR (b.id IS NOT NULL AND (m.sent_at < b.sent_at OR (m.sent_at = b.sent_at AND m.id < b.id)))) \
             ORDER BY m.sent_at DESC, m.id DESC LIMIT $4"
        )
        .bind(org.get())
        .bind(candidate.get())
        .bind(before.map(InMailId::get))
        .bind(limit)
        .fetch_all(pool)
        .await
        })?;
        rows.into_iter().map(InMailRow::into_inmail).collect()
    }
}
