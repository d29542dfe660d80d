//! Users, browser sessions and API tokens.

use hirewire_domain::email::AddressKey;
use hirewire_domain::ids::{ApiTokenId, OrgId, UserId};
use jiff::Timestamp;

use crate::error::conflict;
use crate::model::{decode_address, decode_enum};
use crate::time::{ms, opt_ts, ts};
use crate::{ApiToken, NewSession, NewUser, Session, Store, StoreError, User};

const EMAIL_TAKEN: &str = "a user with this email address already exists";

/// `last_used_at` of API tokens is written at most this often (milliseconds).
const API_TOKEN_TOUCH_MS: i64 = 60_000;

macro_rules! user_cols {
    () => {
        "u.id, u.org_id, u.email, u.email_key, u.display_name, u.role, u.time_zone, u.password_hash, u.created_at"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: i64,
    org_id: i64,
    email: String,
    email_key: String,
    display_name: String,
    role: String,
    time_zone: String,
    password_hash: Option<String>,
    created_at: i64,
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        let email = decode_address(&self.email)?;
        Ok(User {
            id: UserId(self.id),
            org_id: OrgId(self.org_id),
            email_key: AddressKey::of(&self.email_key),
            email,
            display_name: self.display_name,
            role: decode_enum(&self.role)?,
            time_zone: self.time_zone,
            password_hash: self.password_hash,
            created_at: ts(self.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionUserRow {
    s_token_digest: Vec<u8>,
    s_user_id: i64,
    s_csrf_token: String,
    s_created_at: i64,
    s_expires_at: i64,
    s_last_seen_at: i64,
    s_user_agent: Option<String>,
    s_ip: Option<String>,
    #[sqlx(flatten)]
    user: UserRow,
}

#[derive(sqlx::FromRow)]
struct ApiTokenRow {
    id: i64,
    user_id: i64,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl ApiTokenRow {
    fn into_token(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: ApiTokenId(self.id),
            user_id: UserId(self.user_id),
            name: self.name,
            created_at: ts(self.created_at)?,
            last_used_at: opt_ts(self.last_used_at)?,
            revoked_at: opt_ts(self.revoked_at)?,
        })
    }
}

impl Store {
    /// Creates a user. The email key is unique across all organizations
    /// (sign-in is by email alone) → `Conflict`. Unknown org → `NotFound`.
    pub async fn create_user(&self, new: &NewUser<'_>, now: Timestamp) -> Result<User, StoreError> {
        let display_name = new.display_name.trim();
        if display_name.is_empty() {
            return Err(StoreError::Invalid("the display name is empty".into()));
        }
        let id: i64 = write_tx!(self, |tx| {
            let org: Option<i64> = sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
                .bind(new.org_id.get())
                .fetch_optional(&mut *tx)
                .await?;
            if org.is_none() {
                return Err(StoreError::NotFound);
            }
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO users (org_id, email, email_key, display_name, role, time_zone, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(new.org_id.get())
            .bind(new.email.as_str())
            .bind(new.email.key().as_str())
            .bind(display_name)
            .bind(new.role.as_str())
            .bind(new.time_zone)
            .bind(new.password_hash)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict(EMAIL_TAKEN))?
        });
        self.user_by_id(UserId(id))
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users u WHERE u.id = $1"
        ))
        .bind(id.get())
        .fetch_optional(pool)
        .await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Looks a user up by sign-in key (any organization).
    pub async fn user_by_email_key(&self, key: &AddressKey) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users u WHERE u.email_key = $1"
        ))
        .bind(key.as_str())
        .fetch_optional(pool)
        .await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// The users of one organization, by id.
    pub async fn list_users(&self, org: OrgId) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users u WHERE u.org_id = $1 ORDER BY u.id"
        ))
        .bind(org.get())
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    /// Replaces the password hash (an argon2 PHC string computed by the caller).
    pub async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<(), StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "UPDATE users SET password_hash = $1 WHERE id = $2"
        )
        .bind(hash)
        .bind(user.get())
        .execute(&mut *tx)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Stores a session (keyed by the digest of its token). Unknown user →
    /// `NotFound`; a digest collision → `Conflict`.
    pub async fn create_session(
        &self,
        new: &NewSession<'_>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(new.user_id.get())
                .fetch_optional(&mut *tx)
                .await?;
            if user.is_none() {
                return Err(StoreError::NotFound);
            }
            sqlx::query(
                "INSERT INTO sessions (token_digest, user_id, csrf_token, created_at, expires_at, last_seen_at, user_agent, ip) \
                 VALUES ($1, $2, $3, $4, $5, $4, $6, $7)",
            )
            .bind(new.token_digest)
            .bind(new.user_id.get())
            .bind(new.csrf_token)
            .bind(ms(now))
            .bind(ms(new.expires_at))
            .bind(new.user_agent)
            .bind(new.ip)
            .execute(&mut *tx)
            .await
            .map_err(conflict("a session with this token already exists"))?;
        });
        Ok(())
    }

    /// The session and its user, if the session exists and `now` is before
    /// its expiry. Read-only (see [`Store::touch_session`]).
    pub async fn session_with_user(
        &self,
        digest: &[u8],
        now: Timestamp,
    ) -> Result<Option<(Session, User)>, StoreError> {
        let row: Option<SessionUserRow> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
            "SELECT s.token_digest AS s_token_digest, s.user_id AS s_user_id, s.csrf_token AS s_csrf_token, \
             s.created_at AS s_created_at, s.expires_at AS s_expires_at, s.last_seen_at AS s_last_seen_at, \
             s.user_agent AS s_user_agent, s.ip AS s_ip, ",
            user_cols!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_digest = $1 AND s.expires_at > $2"
        ))
        .bind(digest)
        .bind(ms(now))
        .fetch_optional(pool)
        .await
        })?;
        let Some(row) = row else { return Ok(None) };
        let session = Session {
            token_digest: row.s_token_digest,
            user_id: UserId(row.s_user_id),
            csrf_token: row.s_csrf_token,
            created_at: ts(row.s_created_at)?,
            expires_at: ts(row.s_expires_at)?,
            last_seen_at: ts(row.s_last_seen_at)?,
            user_agent: row.s_user_agent,
            ip: row.s_ip,
        };
        Ok(Some((session, row.user.into_user()?)))
    }

    /// Records activity and optionally slides the expiry (`expires_at`).
    /// Returns false when the session is gone or expired.
    pub async fn touch_session(
        &self,
        digest: &[u8],
        now: Timestamp,
        new_expires_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "UPDATE sessions SET last_seen_at = $1, expires_at = COALESCE($2, expires_at) \
             WHERE token_digest = $3 AND expires_at > $1"
        )
        .bind(ms(now))
        .bind(new_expires_at.map(ms))
        .bind(digest)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    /// Signs a session out (no error if it is already gone).
    pub async fn delete_session(&self, digest: &[u8]) -> Result<(), StoreError> {
        write_tx!(self, |tx| sqlx::query(
            "DELETE FROM sessions WHERE token_digest = $1"
        )
        .bind(digest)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Signs a user out everywhere; returns how many sessions were removed.
    pub async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1"
        )
        .bind(user.get())
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(done)
    }

    /// Removes sessions whose expiry is at or before `now`; returns the count.
    pub async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let done = write_tx!(self, |tx| sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= $1"
        )
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(done)
    }

    /// Stores an API token by the digest of its secret.
    pub async fn create_api_token(
        &self,
        user: UserId,
        name: &str,
        token_digest: &[u8],
        now: Timestamp,
    ) -> Result<ApiToken, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("the token name is empty".into()));
        }
        let row: ApiTokenRow = write_tx!(self, |tx| {
            let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user.get())
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            sqlx::query_as(
                "INSERT INTO api_tokens (user_id, name, token_digest, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id, user_id, name, created_at, last_used_at, revoked_at",
            )
            .bind(user.get())
            .bind(name)
            .bind(token_digest)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict("an API token with this secret already exists"))?
        });
        row.into_token()
    }

    /// The token and its user for an unrevoked token digest. Records the use
    /// (`last_used_at`, written at most once a minute to spare the write lock).
    pub async fn user_by_api_token(
        &self,
        digest: &[u8],
        now: Timestamp,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        let row: Option<ApiTokenRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, user_id, name, created_at, last_used_at, revoked_at FROM api_tokens \
             WHERE token_digest = $1 AND revoked_at IS NULL"
        )
        .bind(digest)
        .fetch_optional(pool)
        .await)?;
        let Some(row) = row else { return Ok(None) };
        let mut token = row.into_token()?;
        let stale = token
            .last_used_at
            .is_none_or(|t| ms(now) - ms(t) >= API_TOKEN_TOUCH_MS);
        if stale {
            write_tx!(self, |tx| sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2"
            )
            .bind(ms(now))
            .bind(token.id.get())
            .execute(&mut *tx)
            .await?
            .rows_affected());
            token.last_used_at = Some(ts(ms(now))?);
        }
        let Some(user) = self.user_by_id(token.user_id).await? else {
            return Ok(None);
        };
        Ok(Some((token, user)))
    }

    /// A user's tokens (revoked ones included), by id.
    pub async fn list_api_tokens(&self, user: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<ApiTokenRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, user_id, name, created_at, last_used_at, revoked_at FROM api_tokens \
             WHERE user_id = $1 ORDER BY id"
        )
        .bind(user.get())
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(ApiTokenRow::into_token).collect()
    }

    /// Revokes one of `user`'s tokens (idempotent: the first revocation time
    /// stays). Another user's token → `NotFound`.
    pub async fn revoke_api_token(
        &self,
        user: UserId,
        id: ApiTokenId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let done = write_tx!(self, |tx| {
            sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3"
        )
        .bind(ms(now))
        .bind(id.get())
        .bind(user.get())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
