//! Email & calendar authorization: per-org provider settings, per-user grants
//! (one per capability) and single-use OAuth `state` records.
//!
//! Secret columns hold values sealed by the server (`*_sealed`); the store
//! never sees plaintext tokens. Token refresh is serialized per grant across
//! instances with a small lease on the grant row (`claim_grant_refresh` /
//! `finish_grant_refresh`), fenced by a counter like jobs are.

use std::time::Duration;

use hirewire_domain::ids::{GrantId, OrgId, UserId};
use jiff::Timestamp;

use crate::model::{decode_enum, string_enum};
use crate::time::{duration_ms, ms, opt_ts, ts};
use crate::{Store, StoreError};

string_enum! {
    /// The org admin's provider choice.
    ProviderChoice { Microsoft = "microsoft", Google = "google", None = "none" }
}

string_enum! {
    /// What hirewire may do with recruiters' mail (calendars are unaffected).
    AccessLevelSetting { SendAndView = "send_and_view", ViewOnly = "view_only", Off = "off" }
}

string_enum! {
    /// Whether the provider's admin has approved the app.
    /// `needed` is learned from a real failure ("Need admin approval").
    ConsentState { Recorded = "recorded", NotRequired = "not_required", Unknown = "unknown", Needed = "needed" }
}

string_enum! {
    /// What a grant is for.
    CapabilityKind { Inbox = "inbox", Calendar = "calendar" }
}

string_enum! {
    /// Whether a grant can be used.
    GrantStatus { Active = "active", NeedsReauth = "needs_reauth", WaitingAdmin = "waiting_admin" }
}

/// An organization's provider settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    pub org_id: OrgId,
    pub provider: ProviderChoice,
    pub client_id: String,
    /// Sealed by the server; `None` until entered.
    pub client_secret_sealed: Option<String>,
    /// Microsoft tenant (GUID or verified domain).
    pub tenant: Option<String>,
    pub access_level: AccessLevelSetting,
    pub consent_state: ConsentState,
    pub consent_by: Option<UserId>,
    pub consent_at: Option<Timestamp>,
    /// What was learned (e.g. the provider's error), for the admin page.
    pub consent_detail: Option<String>,
    /// Deauthorizing an inbox deletes its synced mail when set.
    pub purge_on_deauthorize: bool,
    pub updated_at: Timestamp,
}

/// A recruiter's grant of one capability.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub capability: CapabilityKind,
    /// `microsoft` or `google`.
    pub provider: ProviderChoice,
    pub status: GrantStatus,
    /// Why it is not active, for people.
    pub status_reason: Option<String>,
    /// The synced account, as the provider reported it.
    pub account_address: Option<String>,
    /// Granted scopes, normalized, space-separated.
    pub scopes: String,
    pub permission_version: u32,
    /// Imported from the older, calendar-only scheduling integration.
    pub legacy: bool,
    pub access_token_sealed: Option<String>,
    pub refresh_token_sealed: Option<String>,
    pub access_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("capability", &self.capability)
            .field("provider", &self.provider)
            .field("status", &self.status)
            .field("account_address", &self.account_address)
            .field("scopes", &self.scopes)
            .field("permission_version", &self.permission_version)
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

/// Input of [`Store::put_grant`].
#[derive(Debug, Clone, Copy)]
pub struct NewGrant<'a> {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub capability: CapabilityKind,
    pub provider: ProviderChoice,
    pub status: GrantStatus,
    pub status_reason: Option<&'a str>,
    pub account_address: Option<&'a str>,
    pub scopes: &'a str,
    pub permission_version: u32,
    pub legacy: bool,
    pub access_token_sealed: Option<&'a str>,
    pub refresh_token_sealed: Option<&'a str>,
    pub access_expires_at: Option<Timestamp>,
}

/// Fresh tokens after a refresh.
#[derive(Debug, Clone, Copy)]
pub struct RefreshedTokens<'a> {
    pub access_token_sealed: &'a str,
    /// `None` keeps the stored refresh token (Google does not rotate).
    pub refresh_token_sealed: Option<&'a str>,
    pub access_expires_at: Timestamp,
    pub scopes: &'a str,
}

/// A pending OAuth authorization (the `state` value is only stored as a digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthState {
    pub user_id: UserId,
    pub session_digest: Vec<u8>,
    /// `inbox`, `calendar` or `admin_consent`.
    pub purpose: String,
    pub pkce_verifier_sealed: Option<String>,
    pub redirect_uri: String,
    pub scopes: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Input of [`Store::create_oauth_state`].
#[derive(Debug, Clone, Copy)]
pub struct NewOAuthState<'a> {
    pub state_digest: &'a [u8],
    pub user_id: UserId,
    pub session_digest: &'a [u8],
    pub purpose: &'a str,
    pub pkce_verifier_sealed: Option<&'a str>,
    pub redirect_uri: &'a str,
    pub scopes: &'a str,
    pub expires_at: Timestamp,
}

/// Outcome of [`Store::take_oauth_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeState {
    /// First use, in time: it is now spent.
    Valid(OAuthState),
    Expired,
    AlreadyUsed,
    Unknown,
}

#[derive(sqlx::FromRow)]
struct SettingsRow {
    org_id: i64,
    provider: String,
    client_id: String,
    client_secret_sealed: Option<String>,
    tenant: Option<String>,
    access_level: String,
    consent_state: String,
    consent_by: Option<i64>,
    consent_at: Option<i64>,
    consent_detail: Option<String>,
    purge_on_deauthorize: bool,
    updated_at: i64,
}

impl TryFrom<SettingsRow> for ProviderSettings {
    type Error = StoreError;
    fn try_from(r: SettingsRow) -> Result<Self, StoreError> {
        Ok(Self {
            org_id: OrgId(r.org_id),
            provider: decode_enum(&r.provider)?,
            client_id: r.client_id,
            client_secret_sealed: r.client_secret_sealed,
            tenant: r.tenant,
            access_level: decode_enum(&r.access_level)?,
            consent_state: decode_enum(&r.consent_state)?,
            consent_by: r.consent_by.map(UserId),
            consent_at: opt_ts(r.consent_at)?,
            consent_detail: r.consent_detail,
            purge_on_deauthorize: r.purge_on_deauthorize,
            updated_at: ts(r.updated_at)?,
        })
    }
}

/// The grant columns, as a literal (sqlx only takes literal SQL).
macro_rules! grant_cols {
    () => {
        "id, org_id, user_id, capability, provider, status, status_reason, account_address, scopes, \
         permission_version, legacy, access_token_sealed, refresh_token_sealed, access_expires_at, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: i64,
    org_id: i64,
    user_id: i64,
    capability: String,
    provider: String,
    status: String,
    status_reason: Option<String>,
    account_address: Option<String>,
    scopes: String,
    permission_version: i64,
    legacy: bool,
    access_token_sealed: Option<String>,
    refresh_token_sealed: Option<String>,
    access_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: GrantId(r.id),
            org_id: OrgId(r.org_id),
            user_id: UserId(r.user_id),
            capability: decode_enum(&r.capability)?,
            provider: decode_enum(&r.provider)?,
            status: decode_enum(&r.status)?,
            status_reason: r.status_reason,
            account_address: r.account_address,
            scopes: r.scopes,
            permission_version: u32::try_from(r.permission_version).map_err(|_| {
                StoreError::Corrupt(format!("permission version {}", r.permission_version))
            })?,
            legacy: r.legacy,
            access_token_sealed: r.access_token_sealed,
            refresh_token_sealed: r.refresh_token_sealed,
            access_expires_at: opt_ts(r.access_expires_at)?,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StateRow {
    user_id: i64,
    session_digest: Vec<u8>,
    purpose: String,
    pkce_verifier_sealed: Option<String>,
    redirect_uri: String,
    scopes: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl Store {
    // ---- provider settings ------------------------------------------------------

    pub async fn provider_settings(
        &self,
        org: OrgId,
    ) -> Result<Option<ProviderSettings>, StoreError> {
        let row: Option<SettingsRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT org_id, provider, client_id, client_secret_sealed, tenant, access_level, consent_state, \
             consent_by, consent_at, consent_detail, purge_on_deauthorize, updated_at \
             FROM provider_settings WHERE org_id = $1"
        )
        .bind(org.get())
        .fetch_optional(pool)
        .await
        })?;
        row.map(TryInto::try_into).transpose()
    }

    /// Inserts or replaces the org's provider settings.
    pub async fn save_provider_settings(&self, s: &ProviderSettings) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO provider_settings (org_id, provider, client_id, client_secret_sealed, tenant, \
                 access_level, consent_state, consent_by, consent_at, consent_detail, purge_on_deauthorize, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (org_id) DO UPDATE SET provider = excluded.provider, client_id = excluded.client_id, \
                 client_secret_sealed = excluded.client_secret_sealed, tenant = excluded.tenant, \
                 access_level = excluded.access_level, consent_state = excluded.consent_state, \
                 consent_by = excluded.consent_by, consent_at = excluded.consent_at, \
                 consent_detail = excluded.consent_detail, purge_on_deauthorize = excluded.purge_on_deauthorize, \
                 updated_at = excluded.updated_at",
            )
            .bind(s.org_id.get())
            .bind(s.provider.as_str())
            .bind(&s.client_id)
            .bind(&s.client_secret_sealed)
            .bind(&s.tenant)
            .bind(s.access_level.as_str())
            .bind(s.consent_state.as_str())
            .bind(s.consent_by.map(UserId::get))
            .bind(s.consent_at.map(ms))
            .bind(&s.consent_detail)
            .bind(s.purge_on_deauthorize)
            .bind(ms(s.updated_at))
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Records what is known about admin consent.
    pub async fn set_consent_state(
        &self,
        org: OrgId,
        state: ConsentState,
        by: Option<UserId>,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let n = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE provider_settings SET consent_state = $2, consent_by = $3, consent_at = $4, \
                 consent_detail = $5, updated_at = $4 WHERE org_id = $1",
            )
            .bind(org.get())
            .bind(state.as_str())
            .bind(by.map(UserId::get))
            .bind(ms(now))
            .bind(detail)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        crate::error::touched(n, StoreError::NotFound)
    }

    // ---- grants -----------------------------------------------------------------

    /// Stores the grant for (user, capability), replacing an earlier one.
    pub async fn put_grant(&self, g: &NewGrant<'_>, now: Timestamp) -> Result<Grant, StoreError> {
        let sql = concat!(
            "INSERT INTO grants (org_id, user_id, capability, provider, status, status_reason, account_address, \
             scopes, permission_version, legacy, access_token_sealed, refresh_token_sealed, access_expires_at, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
             ON CONFLICT (user_id, capability) DO UPDATE SET provider = excluded.provider, status = excluded.status, \
             status_reason = excluded.status_reason, account_address = excluded.account_address, \
             scopes = excluded.scopes, permission_version = excluded.permission_version, legacy = excluded.legacy, \
             access_token_sealed = excluded.access_token_sealed, refresh_token_sealed = excluded.refresh_token_sealed, \
             access_expires_at = excluded.access_expires_at, refresh_lease_until = NULL, updated_at = excluded.updated_at \
             RETURNING ",
            grant_cols!()
        );
        let row: GrantRow = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(g.org_id.get())
                .bind(g.user_id.get())
                .bind(g.capability.as_str())
                .bind(g.provider.as_str())
                .bind(g.status.as_str())
                .bind(g.status_reason)
                .bind(g.account_address)
                .bind(g.scopes)
                .bind(i64::from(g.permission_version))
                .bind(g.legacy)
                .bind(g.access_token_sealed)
                .bind(g.refresh_token_sealed)
                .bind(g.access_expires_at.map(ms))
                .bind(ms(now))
                .fetch_one(&mut *tx)
                .await?
        });
        row.try_into()
    }

    pub async fn grant(
        &self,
        user: UserId,
        capability: CapabilityKind,
    ) -> Result<Option<Grant>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_cols!(),
            " FROM grants WHERE user_id = $1 AND capability = $2"
        );
        let row: Option<GrantRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(user.get())
            .bind(capability.as_str())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    pub async fn grant_by_id(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        let sql = concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1");
        let row: Option<GrantRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id.get())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Every grant of an organization, by user then capability.
    pub async fn org_grants(&self, org: OrgId) -> Result<Vec<Grant>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_cols!(),
            " FROM grants WHERE org_id = $1 ORDER BY user_id, capability"
        );
        let rows: Vec<GrantRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(org.get())
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Every grant (for re-sealing under a new key).
    pub async fn all_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let sql = concat!("SELECT ", grant_cols!(), " FROM grants ORDER BY id");
        let rows: Vec<GrantRow> = on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Deletes the grant (tokens included); returns what was deleted.
    pub async fn delete_grant(
        &self,
        user: UserId,
        capability: CapabilityKind,
    ) -> Result<Option<Grant>, StoreError> {
        let sql = concat!(
            "DELETE FROM grants WHERE user_id = $1 AND capability = $2 RETURNING ",
            grant_cols!()
        );
        let row: Option<GrantRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(user.get())
                .bind(capability.as_str())
                .fetch_optional(&mut *tx)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// Marks a grant `needs_reauth`/`waiting_admin`/`active` with a reason.
    pub async fn set_grant_status(
        &self,
        id: GrantId,
        status: GrantStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let n = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE grants SET status = $2, status_reason = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id.get())
            .bind(status.as_str())
            .bind(reason)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        crate::error::touched(n, StoreError::NotFound)
    }

    /// Replaces a grant's sealed secrets in place (key rotation).
    pub async fn reseal_grant(
        &self,
        id: GrantId,
        access: Option<&str>,
        refresh: Option<&str>,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("UPDATE grants SET access_token_sealed = $2, refresh_token_sealed = $3 WHERE id = $1")
                .bind(id.get())
                .bind(access)
                .bind(refresh)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// All provider settings (for re-sealing under a new key).
    pub async fn all_provider_settings(&self) -> Result<Vec<ProviderSettings>, StoreError> {
        let rows: Vec<SettingsRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT org_id, provider, client_id, client_secret_sealed, tenant, access_level, consent_state, \
             consent_by, consent_at, consent_detail, purge_on_deauthorize, updated_at FROM provider_settings"
        )
        .fetch_all(pool)
        .await
        })?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Takes the right to refresh this grant's tokens for `lease`. Returns a
    /// fencing token, or `None` while another worker (of any instance) holds it.
    ///
    /// Only a grant whose access token expires before `stale_before` (or has
    /// none) is claimed: an instance that read the grant before another one
    /// finished refreshing gets `None`, re-reads, and uses the fresh token.
    pub async fn claim_grant_refresh(
        &self,
        id: GrantId,
        now: Timestamp,
        stale_before: Timestamp,
        lease: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let token: Option<i64> = write_tx!(self, |tx| {
            sqlx::query_scalar(
                "UPDATE grants SET refresh_lease_until = $2, refresh_lease_token = refresh_lease_token + 1 \
                 WHERE id = $1 AND (refresh_lease_until IS NULL OR refresh_lease_until <= $3) \
                 AND (access_expires_at IS NULL OR access_expires_at <= $4) \
                 RETURNING refresh_lease_token",
            )
            .bind(id.get())
            .bind(ms(now).saturating_add(duration_ms(lease)))
            .bind(ms(now))
            .bind(ms(stale_before))
            .fetch_optional(&mut *tx)
            .await?
        });
        Ok(token)
    }

    /// Saves refreshed tokens and releases the refresh lease, atomically.
    /// `StaleLease` when the lease lapsed and someone else took it.
    pub async fn finish_grant_refresh(
        &self,
        id: GrantId,
        token: i64,
        fresh: Option<&RefreshedTokens<'_>>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let n = write_tx!(self, |tx| {
            match fresh {
                Some(f) => sqlx::query(
                    "UPDATE grants SET access_token_sealed = $3, \
                     refresh_token_sealed = COALESCE($4, refresh_token_sealed), access_expires_at = $5, scopes = $6, \
                     refresh_lease_until = NULL, updated_at = $7 WHERE id = $1 AND refresh_lease_token = $2",
                )
                .bind(id.get())
                .bind(token)
                .bind(f.access_token_sealed)
                .bind(f.refresh_token_sealed)
                .bind(ms(f.access_expires_at))
                .bind(f.scopes)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "UPDATE grants SET refresh_lease_until = NULL WHERE id = $1 AND refresh_lease_token = $2",
                )
                .bind(id.get())
                .bind(token)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            }
        });
        crate::error::touched(n, StoreError::StaleLease)
    }

    // ---- OAuth states -------------------------------------------------------------

    pub async fn create_oauth_state(
        &self,
        s: &NewOAuthState<'_>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
                .bind(ms(now) - 24 * 3600 * 1000)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO oauth_states (state_digest, user_id, session_digest, purpose, pkce_verifier_sealed, \
                 redirect_uri, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(s.state_digest)
            .bind(s.user_id.get())
            .bind(s.session_digest)
            .bind(s.purpose)
            .bind(s.pkce_verifier_sealed)
            .bind(s.redirect_uri)
            .bind(s.scopes)
            .bind(ms(now))
            .bind(ms(s.expires_at))
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Spends a state: valid exactly once, before it expires.
    pub async fn take_oauth_state(
        &self,
        digest: &[u8],
        now: Timestamp,
    ) -> Result<TakeState, StoreError> {
        let row: Option<StateRow> = write_tx!(self, |tx| {
            let row: Option<StateRow> = sqlx::query_as(
                "SELECT user_id, session_digest, purpose, pkce_verifier_sealed, redirect_uri, scopes, created_at, \
                 expires_at, used_at FROM oauth_states WHERE state_digest = $1",
            )
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
            if row.as_ref().is_some_and(|r| r.used_at.is_none()) {
                sqlx::query("UPDATE oauth_states SET used_at = $2 WHERE state_digest = $1 AND used_at IS NULL")
                    .bind(digest)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
            }
            row
        });
        let Some(r) = row else {
            return Ok(TakeState::Unknown);
        };
        if r.used_at.is_some() {
            return Ok(TakeState::AlreadyUsed);
        }
        if r.expires_at <= ms(now) {
            return Ok(TakeState::Expired);
        }
        Ok(TakeState::Valid(OAuthState {
            user_id: UserId(r.user_id),
            session_digest: r.session_digest,
            purpose: r.purpose,
            pkce_verifier_sealed: r.pkce_verifier_sealed,
            redirect_uri: r.redirect_uri,
            scopes: r.scopes,
            created_at: ts(r.created_at)?,
            expires_at: ts(r.expires_at)?,
        }))
    }
}

/// Parses a stored enum (used by the server for query parameters too).
pub fn parse_capability(s: &str) -> Option<CapabilityKind> {
    decode_enum(s).ok()
}
