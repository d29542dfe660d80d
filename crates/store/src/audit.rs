//! The audit log.

use hirewire_domain::ids::{AuditId, OrgId, UserId};
use jiff::Timestamp;

use crate::time::{ms, ts};
use crate::{AuditEvent, NewAudit, Store, StoreError};

/// Largest page [`Store::list_audit`] returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    org_id: Option<i64>,
    actor_user_id: Option<i64>,
    action: String,
    target: String,
    detail: String,
    ip: Option<String>,
    at: i64,
}

impl Store {
    /// Appends an audit event (org-less events, e.g. a failed sign-in for an
    /// unknown address, have `org_id: None`).
    pub async fn record_audit(
        &self,
        new: &NewAudit<'_>,
        at: Timestamp,
    ) -> Result<AuditId, StoreError> {
        if new.action.trim().is_empty() {
            return Err(StoreError::Invalid("the audit action is empty".into()));
        }
        let detail = new.detail.to_string();
        let id: i64 = write_tx!(self, |tx| sqlx::query_scalar(
            "INSERT INTO audit_events (org_id, actor_user_id, action, target, detail, ip, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
        )
        .bind(new.org_id.map(OrgId::get))
        .bind(new.actor_user_id.map(UserId::get))
        .bind(new.action)
        .bind(new.target)
        .bind(detail.as_str())
        .bind(new.ip)
        .bind(ms(at))
        .fetch_one(&mut *tx)
        .await?);
        Ok(AuditId(id))
    }

    /// The newest `limit` audit events of `org`; `None` lists the events
    /// attached to no organization (e.g. failed sign-ins for unknown
    /// addresses). Never mixes organizations.
    pub async fn list_audit(
        &self,
        org: Option<OrgId>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.list_audit_before(org, None, limit).await
    }

    /// Like [`Store::list_audit`], continuing below `before` (the last id of
    /// the previous page). Newest first; `limit` is clamped to
    /// 1..=[`MAX_AUDIT_PAGE`].
    pub async fn list_audit_before(
        &self,
        org: Option<OrgId>,
        before: Option<AuditId>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_AUDIT_PAGE));
        let rows: Vec<AuditRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, org_id, actor_user_id, action, target, detail, ip, at FROM audit_events \
             WHERE (org_id = $1 OR ($1 IS NULL AND org_id IS NULL)) AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )
        .bind(org.map(OrgId::get))
        .bind(before.map(AuditId::get))
        .bind(limit)
        .fetch_all(pool)
        .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: AuditId(r.id),
                    org_id: r.org_id.map(OrgId),
                    actor_user_id: r.actor_user_id.map(UserId),
                    action: r.action,
                    target: r.target,
                    detail: serde_json::from_str(&r.detail)
                        .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
                    ip: r.ip,
                    at: ts(r.at)?,
                })
            })
            .collect()
    }
}
