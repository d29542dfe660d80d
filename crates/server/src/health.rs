//! Sync health: what each inbox's mail sync is doing, in words a recruiter and
//! an admin can act on.
//!
//! A mailbox's state is computed, never stored: from the grant (its status),
//! the org's provider settings, the sync state (`mail_sync_state`: phase,
//! counters, last success, last error), the provider's estimate of the
//! backfill's size (saved from the first listing page), the grant's sync job
//! (when its retry is due) and the shared [`Pacer`](hirewire_providers::Pacer)
//! (the backfill ETA, from the quota). States:
//!
//! - **starting**: authorized, the first step has not run yet;
//! - **backfilling**: *n of about m* messages, a progress bar and an ETA;
//! - **up to date**: incremental sync runs;
//! - **paused**: the grant needs reauthorization (or an admin's approval), or
//!   the admin turned email access off;
//! - **failing**: the last attempt failed: the error in plain words and when
//!   the next retry is.
//!
//! "Needs attention" is paused for a reason someone must act on, or failing.

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hirewire_domain::ids::{GrantId, OrgId, UserId};
use hirewire_providers::{PaceKey, Provider, Service};
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, Grant, GrantStatus, JobStatus, ProviderSettings,
    StoreError, SyncPhase, User,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{AdminViewer, ApiCaller};
use crate::error::{ApiError, ErrorBody, PageError};
use crate::integrations;
use crate::pages::Nav;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/sync-health", get(admin_page))
        .route("/api/v1/me/sync-health", get(api_me))
        .route("/api/v1/admin/sync-health", get(api_admin))
}

#[derive(OpenApi)]
#[openapi(
    paths(api_me, api_admin),
    components(schemas(MailboxHealth, SyncHealthState))
)]
pub struct SyncHealthDoc;

/// What a mailbox's sync is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncHealthState {
    /// Authorized; the first step has not run yet.
    Starting,
    /// Importing the mail of the sync window.
    Backfilling,
    /// Incremental sync runs.
    UpToDate,
    /// Not syncing until someone acts (or the admin turned access on again).
    Paused,
    /// The last attempt failed; it is retried.
    Failing,
}

impl SyncHealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Backfilling => "backfilling",
            Self::UpToDate => "up_to_date",
            Self::Paused => "paused",
            Self::Failing => "failing",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Backfilling => "Importing",
            Self::UpToDate => "Up to date",
            Self::Paused => "Paused",
            Self::Failing => "Failing",
        }
    }
}

/// One inbox's sync health.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MailboxHealth {
    pub grant_id: i64,
    pub user_id: i64,
    pub user_name: String,
    pub user_email: String,
    /// The synced account, as the provider reported it.
    pub mailbox: Option<String>,
    /// `microsoft` or `google`.
    pub provider: String,
    pub state: SyncHealthState,
    /// Paused for a reason someone must act on, or failing.
    pub needs_attention: bool,
    /// What is going on, in one sentence.
    pub summary: String,
    /// Paused: why (e.g. `needs_reauthorization`, `waiting_admin`, `access_off`, `provider_changed`).
    pub paused_reason: Option<String>,
    /// Messages the provider listed so far.
    pub messages_seen: u64,
    /// The provider's estimate of the backfill's size ("about m").
    pub messages_estimate: Option<u64>,
    /// Backfilling with an estimate: 0..=99.
    pub progress_percent: Option<u8>,
    /// Backfilling: seconds left at the mailbox's quota (none when no quota applies).
    pub eta_seconds: Option<u64>,
    /// Candidate messages held.
    pub messages_stored: u64,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    /// Failing: the last error in plain words.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_error_at: Option<String>,
    /// Failing: when the next attempt runs (RFC 3339); none when it will not be retried by itself.
    pub next_retry_at: Option<String>,
    /// Error class for metrics (`throttled`, `provider_unavailable`, `token`, `protocol`, `storage`, `other`).
    pub error_class: Option<&'static str>,
    #[serde(skip)]
    pub last_success: Option<Timestamp>,
    #[serde(skip)]
    pub next_retry: Option<Timestamp>,
}

/// The pacer key of `grant`'s mailbox under the app `client_id`; the sync's
/// readers and the health page share it.
pub fn pace_key(client_id: &str, grant: &Grant) -> PaceKey {
    match &grant.account_address {
        Some(a) => PaceKey::new(client_id, a),
        None => PaceKey::new(client_id, format!("grant:{}", grant.id.get())),
    }
}

/// `reader` paced by the server's shared pacer as `grant`'s mailbox (keyed by
/// the org's app registration, so mailboxes of one app share its ceiling).
pub async fn paced(
    state: &AppState,
    grant: &Grant,
    reader: hirewire_providers::MailReader,
) -> hirewire_providers::MailReader {
    let client_id = match state.store.provider_settings(grant.org_id).await {
        Ok(Some(s)) => s.client_id,
        _ => String::new(),
    };
    reader.with_pacer(state.pacer.clone(), pace_key(&client_id, grant))
}

/// The pacer's service for a provider's mail.
pub fn mail_service(provider: Provider) -> Service {
    match provider {
        Provider::Microsoft => Service::Graph,
        Provider::Google => Service::Gmail,
    }
}

/// The class of a recorded sync error (the sync stores the error's text).
pub fn error_class(error: &str) -> &'static str {
    if error.starts_with("throttled") {
        "throttled"
    } else if error.starts_with("temporary provider failure") {
        "provider_unavailable"
    } else if error.starts_with("access token rejected") || error.starts_with("no access token") {
        "token"
    } else if error.starts_with("provider protocol error") {
        "protocol"
    } else if ["storing", "reading", "loading", "removing", "resetting"]
        .iter()
        .any(|p| error.starts_with(p))
    {
        "storage"
    } else {
        "other"
    }
}

/// A recorded sync error in words for the settings page.
pub fn plain_words(error: &str, provider: &str) -> String {
    let p = match provider {
        "microsoft" => "Microsoft 365",
        "google" => "Google Workspace",
        _ => "The provider",
    };
    match error_class(error) {
        "throttled" => format!("{p} asked hirewire to slow down (too many requests)."),
        "provider_unavailable" => format!("{p} had a temporary problem and did not answer."),
        "token" => format!("{p} did not accept hirewire's access for a moment."),
        "protocol" => format!("{p} sent an answer hirewire did not understand."),
        "storage" => "hirewire could not save what it read (a database problem).".to_owned(),
        _ => "The sync stopped on an unexpected error.".to_owned(),
    }
}

/// Called by the sync with each backfill listing page: the first page's
/// estimate of the listing's size is saved for the progress and ETA.
pub async fn page_listed(
    state: &AppState,
    grant: GrantId,
    first_page: bool,
    estimate: Option<u64>,
) {
    if let (true, Some(n)) = (first_page, estimate)
        && let Err(e) = state
            .store
            .set_mail_sync_estimate(grant, n, state.now())
            .await
    {
        tracing::warn!(grant = grant.get(), error = %e, "could not save the backfill estimate");
    }
}

/// The health of `grant` (an inbox grant of `user`).
pub async fn compute(
    state: &AppState,
    grant: &Grant,
    user: &User,
    settings: Option<&ProviderSettings>,
) -> Result<MailboxHealth, StoreError> {
    let now = state.now();
    let sync = state.store.mail_sync_state(grant.id).await?;
    let estimate = state.store.mail_sync_estimate(grant.id).await?;
    let job = state
        .store
        .latest_job_with_key(&format!("{}:{}", crate::sync::JOB_KIND, grant.id.get()))
        .await?;
    let provider = grant.provider.as_str();
    let mut h = MailboxHealth {
        grant_id: grant.id.get(),
        user_id: user.id.get(),
        user_name: user.display_name.clone(),
        user_email: user.email.to_string(),
        mailbox: grant.account_address.clone(),
        provider: provider.to_owned(),
        state: SyncHealthState::Starting,
        needs_attention: false,
        summary: String::new(),
        paused_reason: None,
        messages_seen: sync.as_ref().map_or(0, |s| s.messages_seen),
        messages_estimate: estimate,
        progress_percent: None,
        eta_seconds: None,
        messages_stored: sync.as_ref().map_or(0, |s| s.messages_stored),
        last_success_at: None,
        last_error: None,
        last_error_at: None,
        next_retry_at: None,
        error_class: None,
        last_success: sync.as_ref().and_then(|s| s.last_success_at),
        next_retry: None,
    };
    h.last_success_at = h.last_success.map(|t| t.to_string());
    let paused = |h: &mut MailboxHealth, reason: &str, summary: String, attention: bool| {
        h.state = SyncHealthState::Paused;
        h.paused_reason = Some(reason.to_owned());
        h.summary = summary;
        h.needs_attention = attention;
    };
    if grant.status != GrantStatus::Active {
        let (reason, default) = match grant.status {
            GrantStatus::WaitingAdmin => (
                "waiting_admin",
                "Waiting for an admin to approve hirewire.".to_owned(),
            ),
            _ => (
                "needs_reauthorization",
                "Needs reauthorization: authorize your inbox again to resume.".to_owned(),
            ),
        };
        let summary = match &grant.status_reason {
            Some(r) => format!("Needs reauthorization: {r}"),
            None => default,
        };
        paused(&mut h, reason, summary, true);
        return Ok(h);
    }
    match settings {
        Some(s) if s.provider != grant.provider => {
            paused(
                &mut h,
                "provider_changed",
                "Your organization now uses another email provider.".to_owned(),
                true,
            );
            return Ok(h);
        }
        Some(s) if s.access_level == AccessLevelSetting::Off => {
            paused(
                &mut h,
                "access_off",
                "Your admin turned email access off.".to_owned(),
                false,
            );
            return Ok(h);
        }
        _ => {}
    }
    let Some(sync) = sync else {
        h.summary = "Starting: the first import begins shortly.".to_owned();
        return Ok(h);
    };
    let failing = match (sync.last_error_at, sync.last_success_at) {
        (Some(e), Some(s)) => e > s,
        (Some(_), None) => true,
        _ => false,
    };
    if failing && let Some(error) = &sync.last_error {
        h.state = SyncHealthState::Failing;
        h.needs_attention = true;
        h.error_class = Some(error_class(error));
        h.last_error = Some(plain_words(error, provider));
        h.last_error_at = sync.last_error_at.map(|t| t.to_string());
        h.next_retry = job
            .as_ref()
            .filter(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
            .map(|j| j.run_at.max(now));
        h.next_retry_at = h.next_retry.map(|t| t.to_string());
        h.summary = match h.next_retry {
            Some(_) => format!(
                "Failing: {} hirewire tries again automatically.",
                h.last_error.as_deref().unwrap_or_default()
            ),
            None => format!(
                "Failing: {} hirewire will try again at the next sync round.",
                h.last_error.as_deref().unwrap_or_default()
            ),
        };
        return Ok(h);
    }
    match sync.phase {
        SyncPhase::Backfill | SyncPhase::Resync => {
            h.state = SyncHealthState::Backfilling;
            if let Some(m) = estimate.filter(|m| *m > 0) {
                let m = m.max(sync.messages_seen);
                h.messages_estimate = Some(m);
                h.progress_percent = Some(((sync.messages_seen * 100) / m).min(99) as u8);
                let remaining = m.saturating_sub(sync.messages_seen);
                if let (Some(p), Some(s)) = (integrations::provider_of(grant.provider), settings) {
                    let service = mail_service(p);
                    let key = pace_key(&s.client_id, grant);
                    h.eta_seconds = state
                        .pacer
                        .eta(
                            &key,
                            service,
                            remaining,
                            state.pacer.backfill_cost_per_message(service),
                        )
                        .map(|d| d.as_secs());
                }
                h.summary = format!("Importing: {} of about {} messages.", sync.messages_seen, m);
            } else {
                h.summary = format!("Importing: {} messages so far.", sync.messages_seen);
            }
        }
        SyncPhase::Incremental => {
            h.state = SyncHealthState::UpToDate;
            h.summary = "Up to date.".to_owned();
        }
    }
    Ok(h)
}

/// The health of `user`'s inbox; `None` when no inbox is authorized.
pub async fn for_user(state: &AppState, user: &User) -> Result<Option<MailboxHealth>, StoreError> {
    let Some(grant) = state.store.grant(user.id, CapabilityKind::Inbox).await? else {
        return Ok(None);
    };
    let settings = state.store.provider_settings(user.org_id).await?;
    compute(state, &grant, user, settings.as_ref())
        .await
        .map(Some)
}

/// The health of every inbox of `org` (only those needing attention when `attention_only`).
pub async fn for_org(
    state: &AppState,
    org: OrgId,
    attention_only: bool,
) -> Result<Vec<MailboxHealth>, StoreError> {
    let settings = state.store.provider_settings(org).await?;
    let users: std::collections::HashMap<UserId, User> = state
        .store
        .list_users(org)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let mut out = Vec::new();
    for g in state.store.org_grants(org).await? {
        if g.capability != CapabilityKind::Inbox {
            continue;
        }
        let Some(user) = users.get(&g.user_id) else {
            continue;
        };
        let h = compute(state, &g, user, settings.as_ref()).await?;
        if !attention_only || h.needs_attention {
            out.push(h);
        }
    }
    out.sort_by(|a, b| {
        b.needs_attention
            .cmp(&a.needs_attention)
            .then_with(|| a.user_name.cmp(&b.user_name))
    });
    Ok(out)
}

/// "in 3 min", "in 2 h 5 min" for an ETA.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => "less than a minute".to_owned(),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} days {} h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// `t` in the viewer's zone, for pages.
pub fn local_time(t: Timestamp, zone: &str) -> String {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    t.to_zoned_datetime(tz)
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// A mailbox's health as a page shows it.
pub struct HealthView {
    pub h: MailboxHealth,
    pub eta: Option<String>,
    pub last_success: Option<String>,
    pub next_retry: Option<String>,
}

impl HealthView {
    pub fn of(h: MailboxHealth, zone: &str) -> Self {
        HealthView {
            eta: h.eta_seconds.map(human_duration),
            last_success: h.last_success.map(|t| local_time(t, zone)),
            next_retry: h.next_retry.map(|t| local_time(t, zone)),
            h,
        }
    }
}

/// The signed-in user's inbox health for the Email & calendar page (errors are logged: the page still renders).
pub async fn view_for(state: &AppState, user: &User) -> Option<HealthView> {
    match for_user(state, user).await {
        Ok(h) => h.map(|h| HealthView::of(h, &user.time_zone)),
        Err(e) => {
            tracing::error!(error = %e, "could not compute the sync health");
            None
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AttentionQuery {
    /// `1`/`true`: only mailboxes that need attention.
    #[serde(default)]
    attention: Option<String>,
}

impl AttentionQuery {
    fn only(&self) -> bool {
        matches!(self.attention.as_deref(), Some("1" | "true" | "yes"))
    }
}

#[derive(Template)]
#[template(path = "admin_sync_health.html")]
struct AdminPage {
    nav: Option<Nav>,
    rows: Vec<HealthView>,
    attention_only: bool,
    push: crate::push_hooks::PushStatus,
}

async fn admin_page(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(q): Query<AttentionQuery>,
) -> Result<Response, PageError> {
    let rows = for_org(&state, viewer.user.org_id, q.only()).await?;
    let page = AdminPage {
        nav: Nav::of(&viewer, "admin"),
        rows: rows
            .into_iter()
            .map(|h| HealthView::of(h, &viewer.user.time_zone))
            .collect(),
        attention_only: q.only(),
        push: crate::push_hooks::PushStatus::of(&state.config),
    };
    Ok(Html(page.render()?).into_response())
}

/// The signed-in user's inbox sync health (`null` when no inbox is authorized).
#[utoipa::path(get, path = "/me/sync-health", tag = "sync",
    responses((status = 200, body = Option<MailboxHealth>), (status = 401, body = ErrorBody)))]
async fn api_me(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<Option<MailboxHealth>>, ApiError> {
    Ok(Json(for_user(&state, &user).await?))
}

/// Every inbox's sync health in the organization (admins only); `?attention=1`: only those that need attention.
#[utoipa::path(get, path = "/admin/sync-health", tag = "admin", params(AttentionQuery),
    responses((status = 200, body = Vec<MailboxHealth>), (status = 403, body = ErrorBody)))]
async fn api_admin(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Query(q): Query<AttentionQuery>,
) -> Result<Json<Vec<MailboxHealth>>, ApiError> {
    if user.role != hirewire_store::Role::Admin {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "only organization admins can do this",
        ));
    }
    Ok(Json(for_org(&state, user.org_id, q.only()).await?))
}
