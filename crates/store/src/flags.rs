//! Feature flags: who has a gradually rolled-out feature.
//!
//! A flag has a [`FlagMode`] — `Off` (nobody), `Everyone`, or `Targeted`
//! (allowlisted organizations and users, plus `percent` of the other users by
//! a stable hash of the user id; the hash is the server's business) — and per
//! organization an optional [`OrgRule`] (opted in, or opted out). The server
//! evaluates it; the store keeps it and its history: every change writes
//! audit entries (who, before, after) in the same transaction as the change.
//!
//! Tenancy: an organization's admin changes the flag only within their
//! organization (`scope: Some(org)`: their org's rule and their org's users)
//! and their audit entries show only their organization's part of the flag.

use std::collections::{BTreeMap, BTreeSet};

use hirewire_domain::ids::{OrgId, UserId};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::time::{ms, opt_ts};
use crate::{Store, StoreError};

/// The flag of Email Connect (issue 8).
pub const EMAIL_CONNECT: &str = "email_connect";

/// Who a flag is on for, before per-org and per-user rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagMode {
    /// Nobody, whatever the lists say (the kill switch).
    Off,
    /// Everybody but opted-out organizations.
    Everyone,
    /// Allowlisted organizations and users, and `percent` of the others.
    Targeted,
}

impl FlagMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagMode::Off => "off",
            FlagMode::Everyone => "everyone",
            FlagMode::Targeted => "targeted",
        }
    }

    pub fn parse(s: &str) -> Option<FlagMode> {
        match s {
            "off" => Some(FlagMode::Off),
            "everyone" => Some(FlagMode::Everyone),
            "targeted" => Some(FlagMode::Targeted),
            _ => None,
        }
    }
}

/// An organization's own setting of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrgRule {
    /// Every user of the organization has it (unless the flag is `Off`).
    In,
    /// No user of the organization has it, except allowlisted users.
    Out,
}

impl OrgRule {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRule::In => "in",
            OrgRule::Out => "out",
        }
    }
}

/// A stored flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFlag {
    pub name: String,
    pub mode: FlagMode,
    /// 0..=100; used in `Targeted` mode.
    pub percent: u8,
    pub orgs: BTreeMap<OrgId, OrgRule>,
    /// Allowlisted users, each with their organization.
    pub users: BTreeMap<UserId, OrgId>,
    /// Changes so far.
    pub version: i64,
    pub updated_at: Option<Timestamp>,
}

impl FeatureFlag {
    /// `org`'s own rule, if any.
    pub fn org_rule(&self, org: OrgId) -> Option<OrgRule> {
        self.orgs.get(&org).copied()
    }

    /// The allowlisted users of `org`.
    pub fn users_of(&self, org: OrgId) -> BTreeSet<UserId> {
        self.users
            .iter()
            .filter(|(_, o)| **o == org)
            .map(|(u, _)| *u)
            .collect()
    }

    /// The whole flag, as audit entries record it.
    pub fn to_json(&self) -> Value {
        let orgs = |rule: OrgRule| -> Vec<i64> {
            self.orgs
                .iter()
                .filter(|(_, r)| **r == rule)
                .map(|(o, _)| o.get())
                .collect()
        };
        json!({
            "mode": self.mode.as_str(),
            "percent": self.percent,
            "orgs_in": orgs(OrgRule::In),
            "orgs_out": orgs(OrgRule::Out),
            "users": self.users.keys().map(|u| u.get()).collect::<Vec<_>>(),
        })
    }

    /// What `org` may see of the flag: the operator's mode and percentage, its
    /// own rule and its own allowlisted users (never another organization's).
    pub fn org_json(&self, org: OrgId) -> Value {
        json!({
            "mode": self.mode.as_str(),
            "percent": self.percent,
            "org": self.org_rule(org).map_or("default", OrgRule::as_str),
            "users": self.users_of(org).iter().map(|u| u.get()).collect::<Vec<_>>(),
        })
    }
}

/// A change to a flag; `None` / empty leaves that part as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagEdit {
    pub mode: Option<FlagMode>,
    pub percent: Option<u8>,
    /// Sets (`Some`) or clears (`None`) organizations' rules.
    pub orgs: Vec<(OrgId, Option<OrgRule>)>,
    pub add_users: Vec<UserId>,
    pub remove_users: Vec<UserId>,
}

/// Who changes a flag, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct FlagActor<'a> {
    /// The signed-in user; `None` for the operator's CLI.
    pub user: Option<UserId>,
    /// `cli`, or the user's role and email, e.g. `admin ada@acme.example`.
    pub label: &'a str,
    pub ip: Option<&'a str>,
}

/// The audit action of a flag change.
pub const FLAG_CHANGED: &str = "feature_flag.changed";

#[derive(sqlx::FromRow)]
struct FlagRow {
    mode: String,
    percent: i64,
    version: i64,
    updated_at: Option<i64>,
}

/// Reads a flag through `$exec` (a pool or a transaction).
macro_rules! read_flag {
    ($name:expr, $exec:expr) => {{
        let name: &str = $name;
        let row: Option<FlagRow> = sqlx::query_as(
            "SELECT mode, percent, version, updated_at FROM feature_flags WHERE name = $1",
        )
        .bind(name)
        .fetch_optional($exec)
        .await?;
        match row {
            None => None,
            Some(row) => {
                let orgs: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT org_id, enabled FROM feature_flag_orgs WHERE flag = $1 ORDER BY org_id",
                )
                .bind(name)
                .fetch_all($exec)
                .await?;
                let users: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT f.user_id, u.org_id FROM feature_flag_users f \
                     JOIN users u ON u.id = f.user_id WHERE f.flag = $1 ORDER BY f.user_id",
                )
                .bind(name)
                .fetch_all($exec)
                .await?;
                Some(assemble(name, row, orgs, users)?)
            }
        }
    }};
}

fn assemble(
    name: &str,
    row: FlagRow,
    orgs: Vec<(i64, i64)>,
    users: Vec<(i64, i64)>,
) -> Result<FeatureFlag, StoreError> {
    Ok(FeatureFlag {
        name: name.to_owned(),
        mode: FlagMode::parse(&row.mode)
            .ok_or_else(|| StoreError::Corrupt(format!("feature flag mode {:?}", row.mode)))?,
        percent: u8::try_from(row.percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| StoreError::Corrupt(format!("feature flag percent {}", row.percent)))?,
        orgs: orgs
            .into_iter()
            .map(|(o, e)| (OrgId(o), if e == 1 { OrgRule::In } else { OrgRule::Out }))
            .collect(),
        users: users
            .into_iter()
            .map(|(u, o)| (UserId(u), OrgId(o)))
            .collect(),
        version: row.version,
        updated_at: opt_ts(row.updated_at)?,
    })
}

impl FeatureFlag {
    /// The flag as `edit` would leave it, without writing anything (what
    /// [`Store::update_feature_flag`] stores). `user_orgs` gives the
    /// organization of every added and removed user. With `scope: Some(org)`
    /// (an organization's admin) only that organization's rule and users may
    /// change. Errors: `Invalid` (percentage over 100, a change outside the
    /// scope), `NotFound` (a user not in `user_orgs` or outside the scope).
    pub fn applied(
        &self,
        edit: &FlagEdit,
        scope: Option<OrgId>,
        user_orgs: &BTreeMap<UserId, OrgId>,
    ) -> Result<FeatureFlag, StoreError> {
        let flag = self;
        let mut next = flag.clone();
        if let Some(org) = scope {
            if edit.mode.is_some() || edit.percent.is_some() {
                return Err(StoreError::Invalid(
                    "only the operator can change the mode or the percentage of a flag".into(),
                ));
            }
            if edit.orgs.iter().any(|(o, _)| *o != org) {
                return Err(StoreError::Invalid(
                    "an organization's admin can change only their own organization".into(),
                ));
            }
            if edit
                .add_users
                .iter()
                .chain(&edit.remove_users)
                .any(|u| user_orgs.get(u) != Some(&org))
            {
                return Err(StoreError::NotFound);
            }
        }
        if let Some(mode) = edit.mode {
            next.mode = mode;
        }
        if let Some(p) = edit.percent {
            if p > 100 {
                return Err(StoreError::Invalid(format!(
                    "the percentage is {p}; it must be 0 to 100"
                )));
            }
            next.percent = p;
        }
        for (org, rule) in &edit.orgs {
            match rule {
                Some(r) => next.orgs.insert(*org, *r),
                None => next.orgs.remove(org),
            };
        }
        for u in &edit.remove_users {
            next.users.remove(u);
        }
        for u in &edit.add_users {
            let org = user_orgs.get(u).copied().ok_or(StoreError::NotFound)?;
            next.users.insert(*u, org);
        }
        Ok(next)
    }
}

impl Store {
    /// The flag `name`; `None` when no such flag exists.
    pub async fn feature_flag(&self, name: &str) -> Result<Option<FeatureFlag>, StoreError> {
        on_pool!(self, |pool| Ok(read_flag!(name, pool)))
    }

    /// Applies `edit` to flag `name` and returns it (before, after). With
    /// `scope: Some(org)` (an organization's admin) only that organization's
    /// rule and users may change. The change and its audit entries are one
    /// transaction: an entry without organization (`org_id` NULL) with the
    /// whole flag before and after when the operator changes it, and one per
    /// organization whose part of the flag changed, showing only that part.
    /// Nothing is written when nothing changes.
    ///
    /// Errors: `NotFound` for an unknown flag, organization or user (or a
    /// user outside `scope`); `Invalid` for a percentage over 100 or a
    /// change outside `scope`.
    pub async fn update_feature_flag(
        &self,
        name: &str,
        scope: Option<OrgId>,
        edit: &FlagEdit,
        actor: &FlagActor<'_>,
        now: Timestamp,
    ) -> Result<(FeatureFlag, FeatureFlag), StoreError> {
        let pair = write_tx!(self, |tx| {
            // Taking the row's write lock first serializes concurrent changes
            // (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already does).
            let locked = sqlx::query("UPDATE feature_flags SET version = version WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(StoreError::NotFound);
            }
            let before = read_flag!(name, &mut *tx).ok_or(StoreError::NotFound)?;
            for (org, _) in &edit.orgs {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
                        .bind(org.get())
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::NotFound);
                }
            }
            let mut user_orgs = BTreeMap::new();
            for u in edit.add_users.iter().chain(&edit.remove_users) {
                let org: Option<i64> = sqlx::query_scalar("SELECT org_id FROM users WHERE id = $1")
                    .bind(u.get())
                    .fetch_optional(&mut *tx)
                    .await?;
                match (org, scope) {
                    (Some(o), Some(s)) if o != s.get() => return Err(StoreError::NotFound),
                    (Some(o), _) => {
                        user_orgs.insert(*u, OrgId(o));
                    }
                    (None, _) => return Err(StoreError::NotFound),
                }
            }
            let mut after = before.applied(edit, scope, &user_orgs)?;
            if after == before {
                return Ok((before.clone(), before));
            }
            after.version = before.version + 1;
            after.updated_at = Some(crate::time::ts(ms(now))?);
            sqlx::query(
                "UPDATE feature_flags SET mode = $2, percent = $3, version = $4, updated_at = $5 \
                 WHERE name = $1",
            )
            .bind(name)
            .bind(after.mode.as_str())
            .bind(i64::from(after.percent))
            .bind(after.version)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            for (org, _) in &edit.orgs {
                sqlx::query("DELETE FROM feature_flag_orgs WHERE flag = $1 AND org_id = $2")
                    .bind(name)
                    .bind(org.get())
                    .execute(&mut *tx)
                    .await?;
                if let Some(rule) = after.org_rule(*org) {
                    sqlx::query(
                        "INSERT INTO feature_flag_orgs (flag, org_id, enabled) VALUES ($1, $2, $3)",
                    )
                    .bind(name)
                    .bind(org.get())
                    .bind(i64::from(rule == OrgRule::In))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for u in edit.add_users.iter().chain(&edit.remove_users) {
                sqlx::query("DELETE FROM feature_flag_users WHERE flag = $1 AND user_id = $2")
                    .bind(name)
                    .bind(u.get())
                    .execute(&mut *tx)
                    .await?;
                if after.users.contains_key(u) {
                    sqlx::query("INSERT INTO feature_flag_users (flag, user_id) VALUES ($1, $2)")
                        .bind(name)
                        .bind(u.get())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let mut entries: Vec<(Option<OrgId>, Value)> = Vec::new();
            let detail = |b: Value, a: Value| json!({"flag": name, "actor": actor.label, "before": b, "after": a});
            if scope.is_none() {
                entries.push((None, detail(before.to_json(), after.to_json())));
            }
            let touched: BTreeSet<OrgId> = edit
                .orgs
                .iter()
                .map(|(o, _)| *o)
                .chain(user_orgs.values().copied())
                .chain(scope)
                .collect();
            for org in touched {
                let (b, a) = (before.org_json(org), after.org_json(org));
                if b != a {
                    entries.push((Some(org), detail(b, a)));
                }
            }
            for (org, detail) in entries {
                sqlx::query(
                    "INSERT INTO audit_events (org_id, actor_user_id, action, target, detail, ip, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(org.map(OrgId::get))
                .bind(actor.user.map(UserId::get))
                .bind(FLAG_CHANGED)
                .bind(name)
                .bind(detail.to_string())
                .bind(actor.ip)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            }
            (before, after)
        });
        Ok(pair)
    }

    /// Queued (not yet sent) outbox messages per sender, for "N scheduled
    /// emails will be held": (org, user, count). `org: None` counts every
    /// organization.
    pub async fn queued_outbox_by_user(
        &self,
        org: Option<OrgId>,
    ) -> Result<Vec<(OrgId, UserId, u64)>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT org_id, user_id, COUNT(*) FROM outbox \
             WHERE status IN ('queued', 'sending') AND ($1 IS NULL OR org_id = $1) \
             GROUP BY org_id, user_id ORDER BY org_id, user_id"
        )
        .bind(org.map(OrgId::get))
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(o, u, n)| (OrgId(o), UserId(u), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Makes queued messages that wait on a hold (a flag, a permission,
    /// pacing) due again at `at`, so a flag change is acted on promptly
    /// rather than at the hold's next re-check. `org: None`: every
    /// organization. Returns how many were moved.
    pub async fn release_outbox_holds(
        &self,
        org: Option<OrgId>,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let n = write_tx!(self, |tx| sqlx::query(
            "UPDATE outbox SET due_at = $2 \
             WHERE status = 'queued' AND hold_reason IS NOT NULL AND due_at > $2 \
             AND ($1 IS NULL OR org_id = $1)"
        )
        .bind(org.map(OrgId::get))
        .bind(ms(at))
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(n)
    }
}
