//! Push notifications: Graph change-notification subscriptions and Gmail `users.watch` with Pub/Sub push
//! (PROVIDERS.md §3.11, §6.6).
//!
//! Two halves, split by whether they talk to the provider:
//!
//! - **Provider calls** ([`PushClient`]): create, renew and delete a Graph subscription; start and stop a Gmail
//!   watch. These run in background jobs (subscribe on grant, renew before expiry), never in a webhook.
//! - **Webhook decoding** (no provider I/O, so a webhook answers within Graph's 3 s): the Graph validation
//!   handshake ([`graph_validation_token`]), notification bodies ([`parse_graph_notifications`]) with a
//!   constant-time `clientState` check ([`client_state_matches`]), and Pub/Sub push deliveries
//!   ([`PubSubVerifier::verify`] for the `Authorization: Bearer` JWT, [`decode_pubsub_push`] for the body).
//!   Each yields the key the server looks the grant up by (Graph `subscriptionId`, Gmail `emailAddress`) and what
//!   to enqueue; the sync job then reads the changes with [`crate::MailReader::changes`].
//!
//! The JWT check fetches Google's signing keys (JWKS) only when its cache lacks the token's key; call
//! [`PubSubVerifier::refresh_keys`] at start-up and from a periodic job so the webhook path normally does none.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::endpoints::Endpoints;
use crate::error::ProviderError;
use crate::http::{
    HttpClient, Request, Response, api_error, get_request, json_or_api_error, json_request,
    parse_json,
};
use crate::pacing::{GmailMethod, Op, PaceKey, Pacer, send_paced};
use crate::{Provider, Secret};

/// The longest Graph allows for an Outlook message / event subscription in the older docs (4,230 minutes, just
/// under 3 days). Newer docs say 10,080 minutes (7 days); [`PushConfig::graph_max_lifetime`] decides.
pub const GRAPH_MAX_LIFETIME_LEGACY: Duration = Duration::from_secs(4230 * 60);
/// Google's Pub/Sub push signing keys.
pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The issuers of Google-signed Pub/Sub push tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];

/// Settings of the push clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The longest lifetime asked of Graph for a subscription (default 4,230 minutes).
    pub graph_max_lifetime: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            graph_max_lifetime: GRAPH_MAX_LIFETIME_LEGACY,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Provider calls

/// A Graph change notification subscription to create.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// What to watch, e.g. `/me/mailFolders('inbox')/messages`, `me/messages`, `me/events`.
    pub resource: String,
    /// Which changes, e.g. `[Created, Updated, Deleted]`.
    pub change_types: Vec<ChangeType>,
    /// Where Graph posts notifications (public https; it first posts the validation handshake there).
    pub notification_url: String,
    /// Where Graph posts lifecycle notifications (`reauthorizationRequired`, `subscriptionRemoved`, `missed`).
    pub lifecycle_notification_url: Option<String>,
    /// The secret Graph echoes in every notification ([`new_client_state`]); the caller stores it.
    pub client_state: Secret,
    /// How long the subscription should last; capped at [`PushConfig::graph_max_lifetime`].
    pub lifetime: Duration,
}

/// A Graph subscription as Graph returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Graph's id: the key notifications carry (`subscriptionId`).
    pub id: String,
    /// The watched resource.
    pub resource: String,
    /// When Graph drops it unless renewed.
    pub expires_at: Timestamp,
}

/// A Gmail watch as `users.watch` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmailWatch {
    /// The mailbox's history id when the watch started (a starting point for `history.list`).
    pub history_id: String,
    /// When the watch ends unless `watch` is called again (at most 7 days; Google recommends daily).
    pub expires_at: Timestamp,
}

/// Starts and ends push subscriptions for one recruiter's mailbox. Cheap to clone. The access token is passed to
/// each call.
#[derive(Debug, Clone)]
pub struct PushClient {
    provider: Provider,
    endpoints: Endpoints,
    http: HttpClient,
    config: PushConfig,
    pacing: Option<(Pacer, PaceKey)>,
}

impl PushClient {
    /// A client for `provider`'s push API at `endpoints`.
    pub fn new(
        provider: Provider,
        endpoints: Endpoints,
        http: HttpClient,
        config: PushConfig,
    ) -> Self {
        PushClient {
            provider,
            endpoints,
            http,
            config,
            pacing: None,
        }
    }

    /// This client with its requests paced as the mailbox `key` (see [`crate::pacing`]; `watch` costs 100 Gmail
    /// units, `stop` 50).
    pub fn with_pacer(mut self, pacer: Pacer, key: PaceKey) -> Self {
        self.pacing = Some((pacer, key));
        self
    }

    /// Whose push API this talks to.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Graph: creates the subscription (`POST /v1.0/subscriptions`). Graph first calls the notification URL with
    /// a `validationToken` that the server must echo ([`graph_validation_token`]); only then does this return.
    /// When that call fails, the error is [`ProviderError::Misconfigured`] with
    /// [`crate::ConfigProblem::NotificationUrl`] (the public URL does not reach this server).
    /// The expiry is `now + min(lifetime, max lifetime)`.
    pub async fn create_subscription(
        &self,
        token: &Secret,
        new: &NewSubscription,
        now: Timestamp,
    ) -> Result<Subscription, ProviderError> {
        self.only(Provider::Microsoft, "Graph subscriptions")?;
        if new.client_state.expose().len() > 128 {
            return Err(ProviderError::Protocol(
                "clientState is longer than Graph's 128 characters".into(),
            ));
        }
        let change_type = new
            .change_types
            .iter()
            .map(ChangeType::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let body = GraphSubscriptionOut {
            change_type: &change_type,
            notification_url: &new.notification_url,
            lifecycle_notification_url: new.lifecycle_notification_url.as_deref(),
            resource: &new.resource,
            expiration_date_time: self.expiry(now, new.lifetime)?,
            client_state: Some(new.client_state.expose()),
        };
        let url = format!("{}/v1.0/subscriptions", self.endpoints.graph);
        let mut req = json_request(::http::Method::POST, &url, token, &body)?;
        // Message ids in notifications then match the immutable ids `MailReader` uses.
        req.headers_mut().insert(
            "Prefer",
            ::http::HeaderValue::from_static("IdType=\"ImmutableId\""),
        );
        let resp = self.send(Op::Graph, req, false).await?;
        if resp.status() == 400 && validation_failed(resp.body()) {
            return Err(ProviderError::Misconfigured {
                provider: Provider::Microsoft,
                what: crate::ConfigProblem::NotificationUrl,
            });
        }
        let sub: GraphSubscriptionIn = self.json_or_error(&url, resp)?;
        sub.into_subscription()
    }

    /// Graph: moves the subscription's expiry to `now + min(lifetime, max lifetime)` (`PATCH`). A subscription
    /// Graph no longer has (404) is [`ProviderError::SubscriptionGone`]: create a new one.
    pub async fn renew_subscription(
        &self,
        token: &Secret,
        id: &str,
        lifetime: Duration,
        now: Timestamp,
    ) -> Result<Subscription, ProviderError> {
        self.only(Provider::Microsoft, "Graph subscriptions")?;
        let url = self.subscription_url(id)?;
        let body = serde_json::json!({ "expirationDateTime": self.expiry(now, lifetime)? });
        let resp = self
            .send(
                Op::Graph,
                json_request(::http::Method::PATCH, &url, token, &body)?,
                true,
            )
            .await?;
        if resp.status() == 404 {
            return Err(ProviderError::SubscriptionGone {
                provider: Provider::Microsoft,
            });
        }
        let sub: GraphSubscriptionIn = self.json_or_error(&url, resp)?;
        sub.into_subscription()
    }

    /// Graph: deletes the subscription (204). One Graph no longer has (404) counts as deleted.
    pub async fn delete_subscription(&self, token: &Secret, id: &str) -> Result<(), ProviderError> {
        self.only(Provider::Microsoft, "Graph subscriptions")?;
        let url = self.subscription_url(id)?;
        let req = ::http::Request::delete(&url)
            .header(
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .body(Vec::new())
            .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))?;
        let resp = self.send(Op::Graph, req, true).await?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            s => Err(api_error(Provider::Microsoft, s, resp.body())),
        }
    }

    /// Gmail: starts (or renews) push for the mailbox to the Pub/Sub `topic` (`projects/…/topics/…`), for
    /// messages with any of `label_ids` (all mail when empty).
    pub async fn gmail_watch(
        &self,
        token: &Secret,
        topic: &str,
        label_ids: &[&str],
    ) -> Result<GmailWatch, ProviderError> {
        self.only(Provider::Google, "Gmail watch")?;
        let url = format!("{}/gmail/v1/users/me/watch", self.endpoints.gmail);
        let body = GmailWatchOut {
            topic_name: topic,
            label_ids,
            label_filter_behavior: (!label_ids.is_empty()).then_some("include"),
        };
        let resp = self
            .send(
                Op::Gmail(GmailMethod::Watch, 1),
                json_request(::http::Method::POST, &url, token, &body)?,
                true,
            )
            .await?;
        let w: GmailWatchIn = self.json_or_error(&url, resp)?;
        let ms: i64 = w.expiration.as_str().parse().map_err(|_| {
            ProviderError::Protocol("Gmail watch expiration is not epoch ms".into())
        })?;
        Ok(GmailWatch {
            history_id: w.history_id.into_string(),
            expires_at: Timestamp::from_millisecond(ms)
                .map_err(|e| ProviderError::Protocol(format!("Gmail watch expiration: {e}")))?,
        })
    }

    /// Gmail: stops push for the mailbox (`users.stop`).
    pub async fn gmail_stop(&self, token: &Secret) -> Result<(), ProviderError> {
        self.only(Provider::Google, "Gmail watch")?;
        let url = format!("{}/gmail/v1/users/me/stop", self.endpoints.gmail);
        let req = ::http::Request::post(&url)
            .header(
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(::http::header::CONTENT_LENGTH, "0")
            .body(Vec::new())
            .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))?;
        let resp = self
            .send(Op::Gmail(GmailMethod::Stop, 1), req, true)
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(api_error(
                Provider::Google,
                resp.status().as_u16(),
                resp.body(),
            ))
        }
    }

    fn only(&self, provider: Provider, what: &'static str) -> Result<(), ProviderError> {
        if self.provider == provider {
            Ok(())
        } else {
            Err(ProviderError::NotSupported {
                provider: self.provider,
                what,
            })
        }
    }

    fn expiry(&self, now: Timestamp, lifetime: Duration) -> Result<String, ProviderError> {
        let lifetime = lifetime.min(self.config.graph_max_lifetime);
        let at = now
            .checked_add(SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::ZERO))
            .map_err(|e| ProviderError::Protocol(format!("subscription expiry: {e}")))?;
        // Whole seconds, UTC, as Graph's examples write it.
        Ok(Timestamp::from_second(at.as_second())
            .unwrap_or(at)
            .to_string())
    }

    fn subscription_url(&self, id: &str) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/v1.0", self.endpoints.graph))
            .map_err(|e| ProviderError::Protocol(format!("bad Graph base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("bad Graph base URL".into()))?
            .extend(["subscriptions", id]);
        Ok(url.into())
    }

    async fn send(
        &self,
        op: Op,
        request: Request,
        idempotent: bool,
    ) -> Result<Response, ProviderError> {
        send_paced(&self.http, self.pacing.as_ref(), op, request, idempotent).await
    }

    fn json_or_error<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        resp: Response,
    ) -> Result<T, ProviderError> {
        json_or_api_error(self.provider, url, resp)
    }
}

/// Whether a Graph 400 says the notification URL failed the validation call ("Subscription validation request
/// failed…", "…validation request timed out").
fn validation_failed(body: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.to_ascii_lowercase().contains("validation"))
}

// ---------------------------------------------------------------------------------------------------------------
// Graph webhooks

/// A new random `clientState`: 32 bytes from the OS RNG, base64url (43 characters, within Graph's 128).
pub fn new_client_state() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a notification's `clientState` is the stored one, compared in constant time. A missing one never
/// matches.
pub fn client_state_matches(expected: &Secret, received: Option<&str>) -> bool {
    match received {
        Some(r) => bool::from(expected.expose().as_bytes().ct_eq(r.as_bytes())),
        None => false,
    }
}

/// The decoded `validationToken` of Graph's subscription handshake, from the notification URL's query string,
/// if this request is one. Answer it with **200**, `Content-Type: text/plain` and exactly this text as the body.
pub fn graph_validation_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned())
}

/// A Graph `changeType`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// `created`.
    Created,
    /// `updated`.
    Updated,
    /// `deleted`.
    Deleted,
    /// Anything else Graph sends.
    Other(String),
}

impl ChangeType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
            ChangeType::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "created" => ChangeType::Created,
            "updated" => ChangeType::Updated,
            "deleted" => ChangeType::Deleted,
            other => ChangeType::Other(other.to_owned()),
        }
    }
}

/// A Graph lifecycle event (sent to the `lifecycleNotificationUrl`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    /// The subscription needs renewing (its access is about to lapse): renew it, refreshing the token first.
    ReauthorizationRequired,
    /// Graph removed the subscription: create a new one, and catch up by polling.
    SubscriptionRemoved,
    /// Graph dropped notifications: catch up by polling (a delta round).
    Missed,
    /// An event this version does not know.
    Other(String),
}

impl LifecycleEvent {
    fn parse(s: &str) -> Self {
        match s {
            "reauthorizationRequired" => LifecycleEvent::ReauthorizationRequired,
            "subscriptionRemoved" => LifecycleEvent::SubscriptionRemoved,
            "missed" => LifecycleEvent::Missed,
            other => LifecycleEvent::Other(other.to_owned()),
        }
    }
}

/// What a Graph notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationKind {
    /// A resource changed: enqueue an incremental sync of the mailbox.
    Change {
        /// `created`, `updated`, `deleted`.
        change_type: ChangeType,
        /// e.g. `Users/{userId}/Messages/{messageId}`.
        resource: String,
        /// `resourceData.id` (the message or event id), when given.
        resource_id: Option<String>,
    },
    /// A lifecycle event about the subscription itself.
    Lifecycle(LifecycleEvent),
}

/// One item of a Graph notification POST.
#[derive(Clone, PartialEq, Eq)]
pub struct GraphNotification {
    /// The subscription it is for: look the grant up by it.
    pub subscription_id: String,
    /// The `clientState` it carries; check it with [`GraphNotification::client_state_matches`].
    client_state: Option<String>,
    /// The tenant.
    pub tenant_id: Option<String>,
    /// The subscription's current expiry, when given.
    pub subscription_expires_at: Option<Timestamp>,
    /// What happened.
    pub kind: NotificationKind,
}

impl std::fmt::Debug for GraphNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphNotification")
            .field("subscription_id", &self.subscription_id)
            .field(
                "client_state",
                &self.client_state.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_id", &self.tenant_id)
            .field("subscription_expires_at", &self.subscription_expires_at)
            .field("kind", &self.kind)
            .finish()
    }
}

impl GraphNotification {
    /// Whether it carries the stored `clientState` (constant time). Drop notifications that do not.
    pub fn client_state_matches(&self, expected: &Secret) -> bool {
        client_state_matches(expected, self.client_state.as_deref())
    }
}

/// Why a push delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The body is not what the provider sends (answer 400).
    #[error("malformed push body: {0}")]
    Malformed(String),
    /// No `Authorization: Bearer` token (answer 401).
    #[error("push delivery carries no bearer token")]
    MissingToken,
    /// The token is not a valid RS256 JWT signed by one of the provider's keys (answer 401).
    #[error("push token is invalid: {0}")]
    InvalidToken(String),
    /// The token is signed by a key not in the (refreshed) key set (answer 401).
    #[error("push token is signed by an unknown key")]
    UnknownKey,
    /// Issuer, audience, expiry or service account is not the expected one (answer 403).
    #[error("push token is not for this endpoint: {0}")]
    WrongClaims(&'static str),
    /// The signing keys could not be fetched (answer 503: Pub/Sub will deliver again).
    #[error("fetching the push signing keys failed: {0}")]
    Keys(ProviderError),
}

/// Reads a Graph notification POST body (`{"value": [...]}`) into its items. Items without a `subscriptionId`
/// make the body malformed; unknown fields are ignored.
pub fn parse_graph_notifications(body: &[u8]) -> Result<Vec<GraphNotification>, PushError> {
    let outer: GraphNotificationsIn =
        serde_json::from_slice(body).map_err(|e| PushError::Malformed(e.to_string()))?;
    outer
        .value
        .into_iter()
        .map(|n| {
            let kind = match (n.lifecycle_event, n.change_type) {
                (Some(e), _) => NotificationKind::Lifecycle(LifecycleEvent::parse(&e)),
                (None, Some(c)) => NotificationKind::Change {
                    change_type: ChangeType::parse(&c),
                    resource: n.resource.unwrap_or_default(),
                    resource_id: n.resource_data.and_then(|d| d.id),
                },
                (None, None) => {
                    return Err(PushError::Malformed(
                        "a notification has neither changeType nor lifecycleEvent".into(),
                    ));
                }
            };
            Ok(GraphNotification {
                subscription_id: n.subscription_id,
                client_state: n.client_state,
                tenant_id: n.tenant_id,
                subscription_expires_at: n
                    .subscription_expiration_date_time
                    .as_deref()
                    .and_then(|s| s.parse().ok()),
                kind,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Gmail Pub/Sub push

/// A Gmail push delivery: the mailbox that changed and its history id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmailPush {
    /// The mailbox: look the grant up by it (lowercased here).
    pub email_address: String,
    /// The mailbox's history id after the change (a uint64 as a string). The sync reads `history.list` from
    /// its own stored cursor, not from this.
    pub history_id: String,
    /// Pub/Sub's message id (deliveries may repeat: dedupe by it if needed).
    pub message_id: String,
    /// When Pub/Sub published it.
    pub publish_time: Option<Timestamp>,
    /// The Pub/Sub subscription it came through.
    pub subscription: String,
}

/// Decodes a Pub/Sub push body: `message.data` is base64 JSON `{emailAddress, historyId}`. Check the bearer
/// token first ([`PubSubVerifier::verify`]).
pub fn decode_pubsub_push(body: &[u8]) -> Result<GmailPush, PushError> {
    let push: PubSubPushIn =
        serde_json::from_slice(body).map_err(|e| PushError::Malformed(e.to_string()))?;
    let data = push.message.data.trim();
    // Pub/Sub uses standard base64; accept base64url too.
    let bytes = STANDARD
        .decode(data)
        .or_else(|_| URL_SAFE_NO_PAD.decode(data.trim_end_matches('=')))
        .map_err(|_| PushError::Malformed("message.data is not base64".into()))?;
    let notice: GmailNoticeIn = serde_json::from_slice(&bytes)
        .map_err(|e| PushError::Malformed(format!("message.data: {e}")))?;
    Ok(GmailPush {
        email_address: notice.email_address.trim().to_ascii_lowercase(),
        history_id: notice.history_id.into_string(),
        message_id: push
            .message
            .message_id
            .or(push.message.message_id_alt)
            .unwrap_or_default(),
        publish_time: push
            .message
            .publish_time
            .or(push.message.publish_time_alt)
            .and_then(|s| s.parse().ok()),
        subscription: push.subscription.unwrap_or_default(),
    })
}

/// Settings of the Pub/Sub push token check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubAuthConfig {
    /// Where Google publishes its signing keys as a JWKS ([`GOOGLE_CERTS_URL`]; the sandbox serves its own).
    pub certs_url: String,
    /// The audience configured on the Pub/Sub push subscription (usually the push endpoint URL).
    pub audience: String,
    /// The service account the subscription pushes as (`email` claim), when it should be checked.
    pub service_account: Option<String>,
    /// Allowed clock skew on `exp` / `iat`.
    pub leeway: Duration,
    /// How long fetched keys are used before being fetched again.
    pub keys_ttl: Duration,
    /// An unknown `kid` fetches the keys again at most this often (junk tokens cannot make us fetch in a loop).
    pub min_refetch: Duration,
    /// The accepted issuers ([`GOOGLE_ISSUERS`]).
    pub issuers: Vec<String>,
    /// The longest a key fetch may take on the webhook path ([`PubSubVerifier::verify`]), so the endpoint still
    /// answers within Pub/Sub's and Graph's few seconds; [`PubSubVerifier::refresh_keys`] is not bounded by it.
    pub fetch_timeout: Duration,
}

impl PubSubAuthConfig {
    /// Google's keys and issuers, for `audience`.
    pub fn google(audience: impl Into<String>) -> Self {
        PubSubAuthConfig {
            certs_url: GOOGLE_CERTS_URL.into(),
            audience: audience.into(),
            service_account: None,
            leeway: Duration::from_secs(60),
            keys_ttl: Duration::from_secs(3600),
            min_refetch: Duration::from_secs(60),
            issuers: GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect(),
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

/// The checked claims of a push token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushClaims {
    /// The signing service account (`email`), when present.
    pub email: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `exp`.
    pub expires_at: Timestamp,
}

struct KeyCache {
    keys: Option<jsonwebtoken::jwk::JwkSet>,
    fetched_at: Option<Instant>,
}

/// Verifies the `Authorization: Bearer` JWT of Pub/Sub push deliveries: RS256 signed by a key of the configured
/// JWKS (cached), issuer `accounts.google.com` (either form), the configured audience, not expired (with leeway),
/// and optionally the service account. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct PubSubVerifier {
    config: Arc<PubSubAuthConfig>,
    http: HttpClient,
    cache: Arc<Mutex<KeyCache>>,
    now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    instant: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl std::fmt::Debug for PubSubVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct PushTokenClaims {
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
}

impl PubSubVerifier {
    /// A verifier fetching keys with `http`. A fetch on the webhook path is cut off after
    /// [`PubSubAuthConfig::fetch_timeout`]; give `http` no retries of its own so that bound is its whole budget.
    pub fn new(config: PubSubAuthConfig, http: HttpClient) -> Self {
        PubSubVerifier {
            config: Arc::new(config),
            http,
            cache: Arc::new(Mutex::new(KeyCache {
                keys: None,
                fetched_at: None,
            })),
            now: Arc::new(Timestamp::now),
            instant: Arc::new(Instant::now),
        }
    }

    /// Replaces the clock used for `exp` and for the key cache's age (tests).
    pub fn with_clock(
        mut self,
        now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
        instant: Arc<dyn Fn() -> Instant + Send + Sync>,
    ) -> Self {
        self.now = now;
        self.instant = instant;
        self
    }

    /// Fetches the signing keys now (start-up, and a periodic job).
    pub async fn refresh_keys(&self) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(get_request(&self.config.certs_url, None, &[])?, true)
            .await?;
        if !resp.status().is_success() {
            return Err(ProviderError::Transient(format!(
                "the push signing keys answered {}",
                resp.status()
            )));
        }
        let keys: jsonwebtoken::jwk::JwkSet = parse_json(&self.config.certs_url, resp.body())?;
        let mut c = self.cache.lock().expect("key cache lock");
        c.keys = Some(keys);
        c.fetched_at = Some((self.instant)());
        Ok(())
    }

    /// Checks the `Authorization` header value of a push delivery. Uses the cached keys; fetches them when
    /// the cache is empty, stale, or lacks the token's key (at most once per [`PubSubAuthConfig::min_refetch`]).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<PushClaims, PushError> {
        let token = bearer(authorization)?;
        let kid = kid_of(token)?;
        let (have_key, age) = {
            let c = self.cache.lock().expect("key cache lock");
            let have = c.keys.as_ref().is_some_and(|k| k.find(&kid).is_some());
            (
                have,
                c.fetched_at
                    .map(|t| (self.instant)().saturating_duration_since(t)),
            )
        };
        let stale = age.is_none_or(|a| a >= self.config.keys_ttl);
        let may_refetch = age.is_none_or(|a| a >= self.config.min_refetch);
        if (stale || (!have_key && may_refetch))
            && let Err(e) =
                match tokio::time::timeout(self.config.fetch_timeout, self.refresh_keys()).await {
                    Ok(r) => r,
                    Err(_) => Err(ProviderError::Transient(
                        "fetching the push signing keys timed out".into(),
                    )),
                }
        {
            // Stale keys still verify a token they know; only a missing key needs the fetch to succeed.
            if !have_key {
                return Err(PushError::Keys(e));
            }
            tracing::warn!(error = %e, "refreshing the push signing keys failed; using the cached ones");
        }
        self.verify_cached(authorization)
    }

    /// [`PubSubVerifier::verify`] with the cached keys only: never any I/O ([`PushError::UnknownKey`] when the
    /// key is not cached).
    pub fn verify_cached(&self, authorization: Option<&str>) -> Result<PushClaims, PushError> {
        let token = bearer(authorization)?;
        let kid = kid_of(token)?;
        let key = {
            let c = self.cache.lock().expect("key cache lock");
            let jwk = c
                .keys
                .as_ref()
                .and_then(|k| k.find(&kid))
                .ok_or(PushError::UnknownKey)?;
            jsonwebtoken::DecodingKey::from_jwk(jwk)
                .map_err(|e| PushError::InvalidToken(format!("signing key: {e}")))?
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[&self.config.audience]);
        v.set_issuer(&self.config.issuers);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // `exp` is checked below against the injected clock.
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<PushTokenClaims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidAudience => PushError::WrongClaims("audience"),
                K::InvalidIssuer => PushError::WrongClaims("issuer"),
                _ => PushError::InvalidToken(e.to_string()),
            }
        })?;
        let claims = data.claims;
        let now = (self.now)().as_second();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
        if claims.exp.saturating_add(leeway) < now {
            return Err(PushError::WrongClaims("expired"));
        }
        if claims
            .iat
            .is_some_and(|iat| iat.saturating_sub(leeway) > now)
        {
            return Err(PushError::WrongClaims("issued in the future"));
        }
        if let Some(expected) = &self.config.service_account {
            let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
                || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
            let same = claims
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(expected));
            if !(same && verified) {
                return Err(PushError::WrongClaims("service account"));
            }
        }
        Ok(PushClaims {
            email: claims.email,
            subject: claims.sub,
            expires_at: Timestamp::from_second(claims.exp)
                .map_err(|e| PushError::InvalidToken(format!("exp: {e}")))?,
        })
    }
}

fn bearer(authorization: Option<&str>) -> Result<&str, PushError> {
    let v = authorization.ok_or(PushError::MissingToken)?.trim();
    let (scheme, token) = v.split_once(' ').ok_or(PushError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(PushError::MissingToken);
    }
    Ok(token.trim())
}

fn kid_of(token: &str) -> Result<String, PushError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| PushError::InvalidToken(e.to_string()))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(PushError::InvalidToken(format!(
            "algorithm {:?}, not RS256",
            header.alg
        )));
    }
    header
        .kid
        .ok_or_else(|| PushError::InvalidToken("no key id (kid)".into()))
}

// ---- Wire shapes (private) ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphSubscriptionOut<'a> {
    change_type: &'a str,
    notification_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle_notification_url: Option<&'a str>,
    resource: &'a str,
    expiration_date_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_state: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphSubscriptionIn {
    id: String,
    #[serde(default)]
    resource: String,
    expiration_date_time: String,
}

impl GraphSubscriptionIn {
    fn into_subscription(self) -> Result<Subscription, ProviderError> {
        Ok(Subscription {
            expires_at: self.expiration_date_time.parse().map_err(|e| {
                ProviderError::Protocol(format!("subscription expirationDateTime: {e}"))
            })?,
            id: self.id,
            resource: self.resource,
        })
    }
}

#[derive(Deserialize)]
struct GraphNotificationsIn {
    value: Vec<GraphNotificationIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphNotificationIn {
    subscription_id: String,
    subscription_expiration_date_time: Option<String>,
    client_state: Option<String>,
    change_type: Option<String>,
    lifecycle_event: Option<String>,
    tenant_id: Option<String>,
    resource: Option<String>,
    resource_data: Option<GraphResourceDataIn>,
}

#[derive(Deserialize)]
struct GraphResourceDataIn {
    id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GmailWatchOut<'a> {
    topic_name: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    label_ids: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    label_filter_behavior: Option<&'a str>,
}

/// A uint64 Google sends as a string (or, in some payloads, a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum U64Text {
    Text(String),
    Number(u64),
}

impl U64Text {
    fn into_string(self) -> String {
        match self {
            U64Text::Text(s) => s,
            U64Text::Number(n) => n.to_string(),
        }
    }

    fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            U64Text::Text(s) => s.as_str().into(),
            U64Text::Number(n) => n.to_string().into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailWatchIn {
    history_id: U64Text,
    expiration: U64Text,
}

#[derive(Deserialize)]
struct PubSubPushIn {
    message: PubSubMessageIn,
    subscription: Option<String>,
}

#[derive(Deserialize)]
struct PubSubMessageIn {
    data: String,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    /// Pub/Sub sends both spellings.
    #[serde(rename = "message_id")]
    message_id_alt: Option<String>,
    #[serde(rename = "publishTime")]
    publish_time: Option<String>,
    #[serde(rename = "publish_time")]
    publish_time_alt: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailNoticeIn {
    email_address: String,
    history_id: U64Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_states_are_random_short_enough_and_compared_exactly() {
        let a = new_client_state();
        let b = new_client_state();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().len() <= 128 && a.expose().len() >= 40);
        assert!(client_state_matches(&a, Some(a.expose())));
        assert!(!client_state_matches(&a, Some(b.expose())));
        assert!(!client_state_matches(&a, Some(&a.expose()[1..])));
        assert!(!client_state_matches(&a, None));
    }

    #[test]
    fn the_validation_token_is_read_url_decoded_from_the_query() {
        assert_eq!(
            graph_validation_token("validationToken=Validation%3a+Testing+client+application")
                .as_deref(),
            Some("Validation: Testing client application")
        );
        assert_eq!(
            graph_validation_token("?a=1&validationToken=x%2By").as_deref(),
            Some("x+y")
        );
        assert_eq!(graph_validation_token("a=1"), None);
    }

    #[test]
    fn a_notification_never_shows_its_client_state_in_debug_output() {
        let n = parse_graph_notifications(
            br#"{"value":[{"subscriptionId":"s","clientState":"top-secret","lifecycleEvent":"missed"}]}"#,
        )
        .unwrap();
        assert!(!format!("{n:?}").contains("top-secret"));
        assert_eq!(
            n[0].kind,
            NotificationKind::Lifecycle(LifecycleEvent::Missed)
        );
    }
}
