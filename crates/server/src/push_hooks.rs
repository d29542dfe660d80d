//! Push notifications: webhooks for Graph change notifications and Gmail
//! Pub/Sub pushes, and the jobs that keep each inbox's subscription alive.
//! Polling (the sync's incremental interval) stays the safety net: a push only
//! makes the next sync step run now.

use std::time::Duration;

use url::Url;

use crate::config::Config;

/// Push settings (in [`Config::push`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// The base URL providers call back (default: the public URL).
    pub webhook_base: Option<Url>,
    /// Accept a plain-http webhook base (tests and demos against the sandbox only).
    pub allow_http: bool,
    /// Lifetime asked of Graph for a subscription (capped by `graph_max_lifetime`).
    pub graph_lifetime: Duration,
    /// The longest lifetime Graph allows (PROVIDERS.md: 4,230 or 10,080 minutes).
    pub graph_max_lifetime: Duration,
    /// A subscription is renewed when it expires within this.
    pub renew_before: Duration,
    /// The Pub/Sub topic Gmail publishes to (`projects/…/topics/…`); Gmail push is off without it.
    pub gmail_topic: Option<String>,
    /// The audience the Pub/Sub push JWT must carry (default: the Gmail webhook URL).
    pub pubsub_audience: Option<String>,
    /// Where Pub/Sub's signing keys are (default: Google's).
    pub pubsub_certs_url: Option<String>,
    /// How often a Gmail watch is renewed (it lasts 7 days; Google recommends daily).
    pub gmail_renew_every: Duration,
    /// How often the maintenance pass (create missing subscriptions, renew) runs.
    pub maintain_every: Duration,
    /// How long deauthorizing an inbox waits for the provider to delete its subscription (or stop its
    /// watch) before leaving it to a retry job ([`UNSUBSCRIBE_JOB_KIND`]).
    pub unsubscribe_timeout: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            webhook_base: None,
            allow_http: false,
            graph_lifetime: hirewire_providers::push::GRAPH_MAX_LIFETIME_LEGACY,
            graph_max_lifetime: hirewire_providers::push::GRAPH_MAX_LIFETIME_LEGACY,
            renew_before: Duration::from_secs(12 * 3600),
            gmail_topic: None,
            pubsub_audience: None,
            pubsub_certs_url: None,
            gmail_renew_every: Duration::from_secs(24 * 3600),
            maintain_every: Duration::from_secs(300),
            unsubscribe_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether push is on, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushStatus {
    pub enabled: bool,
    /// Why push is off (for the admin page), or what is on.
    pub detail: String,
    /// The webhook base in use.
    pub base: String,
}

impl PushStatus {
    pub fn of(config: &Config) -> Self {
        let base = config
            .push
            .webhook_base
            .clone()
            .unwrap_or_else(|| config.public_url.clone());
        let host_is_local = match base.host() {
            Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_unspecified(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
            None => true,
        };
        let shown = base.as_str().trim_end_matches('/').to_owned();
        if config.push.allow_http {
            return Self {
                enabled: true,
                detail: format!("Push is on (test mode: notifications are accepted at {shown})."),
                base: shown,
            };
        }
        if base.scheme() != "https" {
            return Self {
                enabled: false,
                detail: format!(
                    "Push is off: the public URL {shown} is not https, and Microsoft and Google only call https webhooks. Mail is still synced by polling. Start hirewire with an https --public-url to turn push on."
                ),
                base: shown,
            };
        }
        if host_is_local {
            return Self {
                enabled: false,
                detail: format!(
                    "Push is off: the public URL {shown} is not reachable from the internet. Mail is still synced by polling."
                ),
                base: shown,
            };
        }
        Self {
            enabled: true,
            detail: format!(
                "Push is on: providers notify {shown}/hooks/…; polling stays as the safety net."
            ),
            base: shown,
        }
    }

    /// The absolute URL of a webhook path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// The job kind that creates and renews one inbox's push subscription.
pub const JOB_KIND: &str = "push.maintain";

/// The job kind that retries deleting a deauthorized inbox's subscription (Gmail: stopping its watch) at
/// the provider, when the call made while deauthorizing failed.
pub const UNSUBSCRIBE_JOB_KIND: &str = "push.unsubscribe";

// ---------------------------------------------------------------------------------------------------------------
// Webhooks: no provider I/O, only store reads and an enqueue, so they answer well within Graph's 3 s.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hirewire_domain::ids::GrantId;
use hirewire_providers::push::{
    LifecycleEvent, NotificationKind, decode_pubsub_push, graph_validation_token,
    parse_graph_notifications,
};
use hirewire_providers::{Provider, Secret};
use hirewire_store::{CapabilityKind, GrantStatus, NewPushSubscription, StoreError};
use jiff::SignedDuration;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/hooks/graph", post(graph_hook))
        .route("/hooks/graph/lifecycle", post(graph_lifecycle_hook))
        .route("/hooks/gmail", post(gmail_hook))
}

/// Makes `grant`'s next sync step due now (a queued step waiting for the
/// polling interval is moved up; none queued: one is queued).
pub async fn sync_now(state: &AppState, grant: GrantId) -> Result<(), StoreError> {
    let key = format!("{}:{}", crate::sync::JOB_KIND, grant.get());
    state.store.hasten_job(&key, state.now()).await?;
    crate::sync::enqueue_sync_at(state, grant, state.now()).await?;
    state.sync_wake.notify_one();
    Ok(())
}

fn validation(query: Option<&str>) -> Option<Response> {
    graph_validation_token(query?).map(|token| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            token,
        )
            .into_response()
    })
}

/// The stored subscription of a notification, when its `clientState` matches (constant time).
async fn verified(
    state: &AppState,
    n: &hirewire_providers::push::GraphNotification,
) -> Option<hirewire_store::PushSubscription> {
    let sub = state
        .store
        .push_subscription_by_id(&n.subscription_id)
        .await
        .ok()
        .flatten()?;
    let sealed = sub.client_state_sealed.as_deref()?;
    let plain = state.keyring.open(sealed).ok()?;
    let expected = Secret::new(String::from_utf8(plain).ok()?);
    if n.client_state_matches(&expected) {
        Some(sub)
    } else {
        tracing::warn!(
            subscription = %n.subscription_id,
            "a Graph notification with a wrong clientState was dropped"
        );
        None
    }
}

async fn graph_hook(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let out = graph_notifications(&state, query.as_deref(), &body, false).await;
    state.metrics.webhook("graph", started.elapsed());
    out
}

async fn graph_lifecycle_hook(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let out = graph_notifications(&state, query.as_deref(), &body, true).await;
    state.metrics.webhook("graph_lifecycle", started.elapsed());
    out
}

async fn graph_notifications(
    state: &AppState,
    query: Option<&str>,
    body: &[u8],
    lifecycle: bool,
) -> Response {
    if let Some(r) = validation(query) {
        return r;
    }
    let notes = match parse_graph_notifications(body) {
        Ok(n) => n,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    for n in &notes {
        let Some(sub) = verified(state, n).await else {
            continue;
        };
        let now = state.now();
        let result = match (&n.kind, lifecycle) {
            (NotificationKind::Change { .. }, _) => sync_now(state, sub.grant_id).await,
            // Renew (the maintenance pass refreshes the token first) at once.
            (NotificationKind::Lifecycle(LifecycleEvent::ReauthorizationRequired), _) => {
                state
                    .store
                    .expire_push_subscription(sub.grant_id, now)
                    .await
            }
            // Gone: forget it so the maintenance pass creates a new one; catch up by polling now.
            (NotificationKind::Lifecycle(LifecycleEvent::SubscriptionRemoved), _) => {
                match state.store.delete_push_subscription(sub.grant_id).await {
                    Ok(_) => sync_now(state, sub.grant_id).await,
                    Err(e) => Err(e),
                }
            }
            // Notifications were dropped: a full incremental round catches up.
            (NotificationKind::Lifecycle(_), _) => sync_now(state, sub.grant_id).await,
        };
        if let Err(e) = result {
            tracing::error!(grant = sub.grant_id.get(), error = %e, "could not act on a Graph notification");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    StatusCode::ACCEPTED.into_response()
}

async fn gmail_hook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let out = gmail_push(&state, &headers, &body).await;
    state.metrics.webhook("gmail", started.elapsed());
    out
}

async fn gmail_push(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(verifier) = state.pubsub.as_ref() else {
        return (StatusCode::NOT_FOUND, "Gmail push is not configured").into_response();
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Normally from the key cache; a key never seen before is fetched once.
    if let Err(e) = verifier.verify(auth).await {
        tracing::warn!(error = %e, "a Pub/Sub push with a bad token was refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let push = match decode_pubsub_push(body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let grants = match state.store.all_grants().await {
        Ok(g) => g,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let address = push.email_address.to_ascii_lowercase();
    for g in grants.iter().filter(|g| {
        g.capability == CapabilityKind::Inbox
            && g.provider == hirewire_store::ProviderChoice::Google
            && g.status == GrantStatus::Active
            && g.account_address.as_deref().map(str::to_ascii_lowercase) == Some(address.clone())
    }) {
        if sync_now(state, g.id).await.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    // Acknowledged (2xx) so Pub/Sub does not redeliver.
    StatusCode::NO_CONTENT.into_response()
}

/// The Pub/Sub JWT verifier, when Gmail push is configured (built once per app).
pub fn pubsub_verifier(
    config: &Config,
    http: &hirewire_providers::HttpClient,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
) -> Option<hirewire_providers::push::PubSubVerifier> {
    let status = PushStatus::of(config);
    if !status.enabled {
        return None;
    }
    config.push.gmail_topic.as_ref()?;
    let audience = config
        .push
        .pubsub_audience
        .clone()
        .unwrap_or_else(|| status.url("/hooks/gmail"));
    let mut auth = hirewire_providers::push::PubSubAuthConfig::google(audience);
    if let Some(url) = &config.push.pubsub_certs_url {
        auth.certs_url = url.clone();
    }
    // Token expiry is checked on the app's clock (the key cache's age stays on the monotonic clock).
    Some(
        hirewire_providers::push::PubSubVerifier::new(auth, http.clone()).with_clock(
            std::sync::Arc::new(move || clock.now()),
            std::sync::Arc::new(Instant::now),
        ),
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Subscription maintenance: create after authorization, renew before expiry (background, with provider I/O).

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Maintained {
    pub created: usize,
    pub renewed: usize,
    pub failed: usize,
}

/// Creates the push subscription of every active inbox that has none, and
/// renews those that expire within `renew_before` (Gmail: watched again every
/// `gmail_renew_every`). Nothing when push is off.
pub async fn maintain(state: &AppState) -> Result<Maintained, StoreError> {
    let mut done = Maintained::default();
    if !PushStatus::of(&state.config).enabled {
        return Ok(done);
    }
    for g in state.store.all_grants().await? {
        maintain_grant(state, &g, &mut done).await?;
    }
    Ok(done)
}

/// Subscribes a newly authorized inbox at once (in the background: the
/// provider calls our webhook to validate it), instead of at the next pass.
pub fn inbox_authorized(state: &AppState, grant: GrantId) {
    if !PushStatus::of(&state.config).enabled {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut done = Maintained::default();
        match state.store.grant_by_id(grant).await {
            Ok(Some(g)) => {
                if let Err(e) = maintain_grant(&state, &g, &mut done).await {
                    tracing::warn!(grant = grant.get(), error = %e, "could not subscribe a new inbox to push");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(grant = grant.get(), error = %e, "could not subscribe a new inbox to push")
            }
        }
    });
}

async fn maintain_grant(
    state: &AppState,
    g: &hirewire_store::Grant,
    done: &mut Maintained,
) -> Result<(), StoreError> {
    let status = PushStatus::of(&state.config);
    let now = state.now();
    if g.capability != CapabilityKind::Inbox || g.status != GrantStatus::Active {
        return Ok(());
    }
    let Some(provider) = crate::integrations::provider_of(g.provider) else {
        return Ok(());
    };
    if provider == Provider::Google && state.config.push.gmail_topic.is_none() {
        return Ok(());
    }
    let existing = state.store.push_subscription(g.id).await?;
    let renew_at = |s: &hirewire_store::PushSubscription| match provider {
        Provider::Microsoft => s.expires_at - signed(state.config.push.renew_before),
        Provider::Google => s.updated_at + signed(state.config.push.gmail_renew_every),
    };
    if existing.as_ref().is_some_and(|s| renew_at(s) > now) {
        return Ok(());
    }
    match subscribe(state, g, provider, existing.as_ref(), &status).await {
        Ok(true) => done.renewed += 1,
        Ok(false) => done.created += 1,
        Err(e) => {
            done.failed += 1;
            tracing::warn!(grant = g.id.get(), error = %e, "push subscription not created or renewed; polling continues");
        }
    }
    Ok(())
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Creates or renews one grant's subscription; `Ok(true)` when renewed.
async fn subscribe(
    state: &AppState,
    grant: &hirewire_store::Grant,
    provider: Provider,
    existing: Option<&hirewire_store::PushSubscription>,
    status: &PushStatus,
) -> Result<bool, String> {
    let token = crate::integrations::access_token(state, grant.user_id, CapabilityKind::Inbox)
        .await
        .map_err(|n| format!("no access token: {}", n.code()))?;
    let client_id = state
        .store
        .provider_settings(grant.org_id)
        .await
        .map_err(|e| e.to_string())?
        .map(|s| s.client_id)
        .unwrap_or_default();
    let client = hirewire_providers::PushClient::new(
        provider,
        state.config.provider_endpoints.clone(),
        state.provider_http.clone(),
        hirewire_providers::PushConfig {
            graph_max_lifetime: state.config.push.graph_max_lifetime,
        },
    )
    .with_pacer(
        state.pacer.clone(),
        crate::health::pace_key(&client_id, grant),
    );
    let now = state.now();
    match provider {
        Provider::Microsoft => {
            if let Some(s) = existing {
                match client
                    .renew_subscription(
                        &token,
                        &s.subscription_id,
                        state.config.push.graph_lifetime,
                        now,
                    )
                    .await
                {
                    Ok(sub) => {
                        state
                            .store
                            .put_push_subscription(
                                &NewPushSubscription {
                                    grant_id: grant.id,
                                    provider: grant.provider,
                                    subscription_id: &sub.id,
                                    client_state_sealed: s.client_state_sealed.as_deref(),
                                    expires_at: sub.expires_at,
                                },
                                now,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                        return Ok(true);
                    }
                    // Gone at Graph: create a new one below.
                    Err(hirewire_providers::ProviderError::SubscriptionGone { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let client_state = hirewire_providers::push::new_client_state();
            let new = hirewire_providers::push::NewSubscription {
                resource: "me/messages".into(),
                change_types: vec![
                    hirewire_providers::push::ChangeType::Created,
                    hirewire_providers::push::ChangeType::Updated,
                    hirewire_providers::push::ChangeType::Deleted,
                ],
                notification_url: status.url("/hooks/graph"),
                lifecycle_notification_url: Some(status.url("/hooks/graph/lifecycle")),
                client_state: client_state.clone(),
                lifetime: state.config.push.graph_lifetime,
            };
            let sub = client
                .create_subscription(&token, &new, now)
                .await
                .map_err(|e| e.to_string())?;
            let sealed = state.keyring.seal(client_state.expose().as_bytes());
            state
                .store
                .put_push_subscription(
                    &NewPushSubscription {
                        grant_id: grant.id,
                        provider: grant.provider,
                        subscription_id: &sub.id,
                        client_state_sealed: Some(&sealed),
                        expires_at: sub.expires_at,
                    },
                    now,
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(false)
        }
        Provider::Google => {
            let topic = state.config.push.gmail_topic.as_deref().unwrap_or_default();
            let watch = client
                .gmail_watch(&token, topic, &[])
                .await
                .map_err(|e| e.to_string())?;
            state
                .store
                .put_push_subscription(
                    &NewPushSubscription {
                        grant_id: grant.id,
                        provider: grant.provider,
                        subscription_id: &watch.history_id,
                        client_state_sealed: None,
                        expires_at: watch.expires_at,
                    },
                    now,
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(existing.is_some())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deauthorization: the inbox's subscription is deleted at the provider too (best effort, never blocking).

/// What deleting one inbox's subscription at the provider needs, taken while its grant (and so a token)
/// still exists. The token is never logged ([`Secret`]).
pub struct Unsubscribe {
    provider: Provider,
    grant: GrantId,
    subscription_id: String,
    expires_at: jiff::Timestamp,
    token: Secret,
    token_expires_at: Option<jiff::Timestamp>,
    client_id: String,
    mailbox: String,
}

/// Called while deauthorizing `user`'s inbox, before its grant is deleted: when the inbox has a push
/// subscription (Gmail: a watch), a valid access token to delete it with (refreshed when due, within
/// `unsubscribe_timeout`). `None` when there is nothing to delete or no token can be had (logged; the
/// subscription then lapses at the provider by itself, at most days later, and delivers nowhere meanwhile
/// because its record is gone).
pub async fn prepare_unsubscribe(
    state: &AppState,
    user: hirewire_domain::ids::UserId,
) -> Option<Unsubscribe> {
    let grant = state
        .store
        .grant(user, CapabilityKind::Inbox)
        .await
        .ok()
        .flatten()?;
    let sub = match state.store.push_subscription(grant.id).await {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(grant = grant.id.get(), error = %e, "could not read the push subscription of an inbox being deauthorized");
            return None;
        }
    };
    let provider = crate::integrations::provider_of(grant.provider)?;
    let token = tokio::time::timeout(
        state.config.push.unsubscribe_timeout,
        crate::integrations::access_token(state, user, CapabilityKind::Inbox),
    )
    .await;
    let token = match token {
        Ok(Ok(t)) => t,
        Ok(Err(n)) => {
            tracing::warn!(grant = grant.id.get(), code = n.code(), expires_at = %sub.expires_at,
                "no access token to delete a deauthorized inbox's push subscription; it lapses at the provider by itself");
            return None;
        }
        Err(_) => {
            tracing::warn!(grant = grant.id.get(), expires_at = %sub.expires_at,
                "refreshing the token to delete a deauthorized inbox's push subscription took too long; it lapses at the provider by itself");
            return None;
        }
    };
    // The token's expiry after a possible refresh (a retry job may use it until then).
    let token_expires_at = state
        .store
        .grant(user, CapabilityKind::Inbox)
        .await
        .ok()
        .flatten()
        .and_then(|g| g.access_expires_at);
    let client_id = state
        .store
        .provider_settings(grant.org_id)
        .await
        .ok()
        .flatten()
        .map(|s| s.client_id)
        .unwrap_or_default();
    Some(Unsubscribe {
        provider,
        grant: grant.id,
        subscription_id: sub.subscription_id,
        expires_at: sub.expires_at,
        token,
        token_expires_at,
        client_id,
        mailbox: grant
            .account_address
            .unwrap_or_else(|| format!("grant:{}", grant.id.get())),
    })
}

/// A failure worth another attempt later (with the same token).
fn worth_retrying(e: &hirewire_providers::ProviderError) -> bool {
    matches!(
        e,
        hirewire_providers::ProviderError::Throttled { .. }
            | hirewire_providers::ProviderError::Transient(_)
    )
}

/// One attempt: Graph `DELETE /v1.0/subscriptions/{id}` (a 404 counts as deleted), Gmail `users.stop`.
async fn unsubscribe_once(
    state: &AppState,
    u: &Unsubscribe,
) -> Result<(), hirewire_providers::ProviderError> {
    let client = hirewire_providers::PushClient::new(
        u.provider,
        state.config.provider_endpoints.clone(),
        state.provider_http.clone(),
        hirewire_providers::PushConfig {
            graph_max_lifetime: state.config.push.graph_max_lifetime,
        },
    )
    .with_pacer(
        state.pacer.clone(),
        hirewire_providers::pacing::PaceKey::new(&u.client_id, &u.mailbox),
    );
    let call = async {
        match u.provider {
            Provider::Microsoft => {
                client
                    .delete_subscription(&u.token, &u.subscription_id)
                    .await
            }
            Provider::Google => client.gmail_stop(&u.token).await,
        }
    };
    match tokio::time::timeout(state.config.push.unsubscribe_timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(hirewire_providers::ProviderError::Transient(
            "no answer within the unsubscribe timeout".into(),
        )),
    }
}

/// Deletes the subscription at the provider, waiting at most `unsubscribe_timeout`. A failure is logged
/// (without secrets); when trying again may help (throttled, 5xx, timeout), an [`UNSUBSCRIBE_JOB_KIND`] job
/// retries with the same token until it expires. Never returns an error: deauthorizing goes on regardless.
pub async fn unsubscribe(state: &AppState, u: Unsubscribe) {
    let e = match unsubscribe_once(state, &u).await {
        Ok(()) => {
            tracing::info!(
                grant = u.grant.get(),
                "push subscription deleted at the provider"
            );
            return;
        }
        Err(e) => e,
    };
    if !worth_retrying(&e) {
        tracing::warn!(grant = u.grant.get(), error = %e, expires_at = %u.expires_at,
            "could not delete a deauthorized inbox's push subscription; it lapses at the provider by itself");
        return;
    }
    tracing::warn!(grant = u.grant.get(), error = %e, "could not delete a deauthorized inbox's push subscription yet; a job retries");
    let payload = serde_json::json!({
        "grant_id": u.grant.get(),
        "provider": provider_slug(u.provider),
        "subscription_id": u.subscription_id,
        "expires_at_ms": u.expires_at.as_millisecond(),
        "token_sealed": state.keyring.seal(u.token.expose().as_bytes()),
        "token_expires_at_ms": u.token_expires_at.map(|t| t.as_millisecond()),
        "client_id": u.client_id,
        "mailbox": u.mailbox,
    });
    let now = state.now();
    let retry_at = now + retry_delay(state, 1);
    let key = format!("{UNSUBSCRIBE_JOB_KIND}:{}", u.grant.get());
    let job = hirewire_store::NewJob {
        kind: UNSUBSCRIBE_JOB_KIND,
        payload: &payload,
        run_at: retry_at,
        max_attempts: state.config.sync.max_attempts.max(1),
        dedupe_key: Some(&key),
    };
    if let Err(e) = state.store.enqueue(&job, now).await {
        tracing::error!(grant = u.grant.get(), error = %e, "could not queue the retry of a push subscription's deletion");
    }
}

fn provider_slug(p: Provider) -> &'static str {
    match p {
        Provider::Microsoft => "microsoft",
        Provider::Google => "google",
    }
}

fn retry_delay(state: &AppState, attempt: u32) -> SignedDuration {
    signed(
        state
            .config
            .sync
            .backoff
            .delay(attempt, rand::random::<f64>()),
    )
}

/// Claims one due [`UNSUBSCRIBE_JOB_KIND`] job and makes one attempt; `None` when nothing is due.
pub async fn run_unsubscribe_job(state: &AppState, owner: &str) -> Option<Result<(), String>> {
    let job = match state
        .store
        .claim(
            owner,
            &[UNSUBSCRIBE_JOB_KIND],
            state.now(),
            state.config.sync.lease,
        )
        .await
    {
        Ok(Some(j)) => j,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "claiming a push unsubscribe job failed");
            return None;
        }
    };
    let now = state.now();
    let (outcome, retry) = match unsubscribe_job(state, &job.payload, now).await {
        Ok(()) => (Ok(()), false),
        Err((error, retry)) => (Err(error), retry),
    };
    let settled = match &outcome {
        Ok(()) => state.store.complete(job.id, job.fencing_token, now).await,
        Err(error) => {
            let retry_at = retry.then(|| now + retry_delay(state, job.attempt));
            state
                .store
                .fail(job.id, job.fencing_token, now, error, retry_at)
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "settling a push unsubscribe job failed");
    }
    Some(outcome)
}

/// One retry; `Err((why, retry?))`.
async fn unsubscribe_job(
    state: &AppState,
    p: &serde_json::Value,
    now: jiff::Timestamp,
) -> Result<(), (String, bool)> {
    let give_up = |why: &str| Err((why.to_owned(), false));
    let ms = |k: &str| {
        p[k].as_i64()
            .and_then(|v| jiff::Timestamp::from_millisecond(v).ok())
    };
    let provider = match p["provider"].as_str() {
        Some("microsoft") => Provider::Microsoft,
        Some("google") => Provider::Google,
        _ => return give_up("the job has no provider"),
    };
    let (Some(grant), Some(subscription_id), Some(expires_at), Some(sealed)) = (
        p["grant_id"].as_i64(),
        p["subscription_id"].as_str(),
        ms("expires_at_ms"),
        p["token_sealed"].as_str(),
    ) else {
        return give_up("the job's payload is incomplete");
    };
    if expires_at <= now {
        // Nothing left to delete: it lapsed at the provider.
        return Ok(());
    }
    if ms("token_expires_at_ms").is_some_and(|t| t <= now) {
        tracing::warn!(grant, %expires_at, "the token to delete a deauthorized inbox's push subscription expired; it lapses at the provider by itself");
        return give_up("the access token expired before the subscription could be deleted");
    }
    let token = match state
        .keyring
        .open(sealed)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(t) => Secret::new(t),
        None => return give_up("the sealed token cannot be opened"),
    };
    let u = Unsubscribe {
        provider,
        grant: GrantId(grant),
        subscription_id: subscription_id.to_owned(),
        expires_at,
        token,
        token_expires_at: None,
        client_id: p["client_id"].as_str().unwrap_or_default().to_owned(),
        mailbox: p["mailbox"].as_str().unwrap_or_default().to_owned(),
    };
    match unsubscribe_once(state, &u).await {
        Ok(()) => {
            tracing::info!(grant, "push subscription deleted at the provider (retried)");
            Ok(())
        }
        Err(e) => {
            let retry = worth_retrying(&e);
            tracing::warn!(grant, error = %e, retry, "retrying a push subscription's deletion failed");
            Err((e.to_string(), retry))
        }
    }
}

/// Runs [`maintain`] every `maintain_every` and, in between, the due [`UNSUBSCRIBE_JOB_KIND`] jobs (every
/// `sync.poll_interval`). Started by `serve` with the sync workers.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let owner = format!("push-{:08x}", rand::random::<u32>());
    tokio::spawn(async move {
        let mut maintained: Option<Instant> = None;
        loop {
            if maintained.is_none_or(|t| t.elapsed() >= state.config.push.maintain_every) {
                maintained = Some(Instant::now());
                // Google's signing keys are fetched here, so the webhook normally finds them cached.
                if let Some(verifier) = &state.pubsub
                    && let Err(e) = verifier.refresh_keys().await
                {
                    tracing::warn!(error = %e, "could not refresh the Pub/Sub signing keys");
                }
                if let Err(e) = maintain(&state).await {
                    tracing::warn!(error = %e, "the push maintenance pass failed");
                }
            }
            while run_unsubscribe_job(&state, &owner).await.is_some() {}
            tokio::time::sleep(
                state
                    .config
                    .sync
                    .poll_interval
                    .min(state.config.push.maintain_every),
            )
            .await;
        }
    })
}
