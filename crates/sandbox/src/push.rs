//! Push: the provider side of Graph change notifications (PROVIDERS.md §3.11) and Gmail `users.watch` with
//! Pub/Sub push (§6.6).
//!
//! Every mailbox change (control API, send, delete, move) goes through [`App::mail`], which wakes one dispatcher
//! task whenever anything is subscribed. The dispatcher reads the mailboxes' change logs (and calendars' change
//! counters) past a cursor per owner, turns them into Graph notification batches (one POST per subscription per
//! wake-up) and Gmail pushes (one per watch per wake-up, carrying the mailbox's current `historyId`), and hands
//! each to its own delivery task, so no control or API call waits on a webhook.
//!
//! Delivery: a POST with a per-attempt timeout (`push_timeout_ms`). A 2xx (Pub/Sub: 102, 200, 201, 202, 204)
//! acknowledges it. Anything else is retried after `push_retry_initial_ms`, doubling up to `push_retry_max_ms`,
//! at most `push_max_attempts` attempts, and never past the provider's retry horizon measured on the sandbox
//! clock from the first attempt (Graph 4 h, Pub/Sub 7 days); a subscription deleted or expired meanwhile stops
//! its retries. Graph documents "exponential backoff for up to 4 hours" without the exact schedule; the attempt
//! cap keeps a dead endpoint from being hammered in tests. Every attempt is recorded (status, error, latency).
//!
//! Not modelled: Gmail's 1-notification-per-second-per-user cap (pushes are coalesced per wake-up instead),
//! Graph's throttling of slow endpoints, rich notifications (`includeResourceData`), and the https-only rule for
//! `notificationUrl` (the sandbox posts to http on 127.0.0.1).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::mailbox::{Placement, labels};
use crate::mailview::change_key;

/// How many delivery records are kept (oldest dropped first).
const MAX_RECORDS: usize = 10_000;

/// Most notifications in one Graph POST.
const MAX_BATCH: usize = 1000;

/// What a Graph subscription watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
    /// Messages, in one folder (`Some(folder number)`) or all of them.
    Messages(Option<u8>),
    /// Calendar events.
    Events,
}

/// A Graph subscription.
#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    /// Id (GUID).
    pub id: String,
    /// Mailbox owner (address).
    pub owner: String,
    /// Owner's Graph object id.
    pub owner_id: String,
    /// Owner's tenant GUID.
    pub tenant_id: String,
    /// The client (application) that created it.
    pub client_id: String,
    /// `resource` as the client gave it.
    pub resource: String,
    /// What it watches.
    pub watched: Watched,
    /// `created`, `updated`, `deleted`.
    pub change_types: Vec<String>,
    /// Where notifications go.
    pub notification_url: String,
    /// Where lifecycle notifications go.
    pub lifecycle_url: Option<String>,
    /// Echoed in every notification.
    pub client_state: Option<String>,
    /// Unix seconds (sandbox clock).
    pub expiration: i64,
    /// Created with `Prefer: IdType="ImmutableId"`: notifications carry immutable ids.
    pub immutable_ids: bool,
    /// A `subscriptionRemoved` lifecycle event was sent: it delivers nothing more.
    pub removed: bool,
}

impl Subscription {
    fn active(&self, now: i64) -> bool {
        !self.removed && self.expiration > now
    }
}

/// A Pub/Sub topic with its push subscription, as configured through the control API.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    /// `projects/{project}/topics/{topic}`.
    pub name: String,
    /// Where pushes go.
    pub push_endpoint: String,
    /// `aud` of the push JWT (Pub/Sub's default: the endpoint URL).
    pub audience: String,
    /// `email` of the push JWT: the service account the push subscription authenticates as.
    pub service_account: String,
    /// `projects/{project}/subscriptions/{name}`, sent in every push.
    pub subscription: String,
}

/// A Gmail `users.watch`.
#[derive(Debug, Clone, Serialize)]
pub struct Watch {
    /// Mailbox owner.
    pub owner: String,
    /// Topic name.
    pub topic: String,
    /// `labelIds`.
    pub label_ids: Vec<String>,
    /// `include` or `exclude`.
    pub label_filter_behavior: String,
    /// Unix seconds (sandbox clock).
    pub expiration: i64,
    /// The mailbox history id when the watch was made.
    pub history_id: u64,
}

/// One delivery attempt (or a dropped notification).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Increasing.
    pub seq: u64,
    /// `validation`, `notification`, `lifecycle` or `pubsub`.
    pub kind: &'static str,
    /// Subscription id (Graph) or mailbox owner (Gmail).
    pub target: String,
    /// URL posted to.
    pub url: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Sandbox time, unix seconds.
    pub at: i64,
    /// HTTP status received.
    pub status: Option<u16>,
    /// Transport error or why the answer was refused.
    pub error: Option<String>,
    /// Real milliseconds the receiver took.
    pub latency_ms: u64,
    /// Wall-clock unix milliseconds when the attempt was sent (or the notification dropped), for freshness
    /// measurements against the real clock (the sandbox clock may be a manual one).
    pub sent_unix_ms: i64,
    /// Dropped on purpose (the drop switch): never sent.
    pub dropped: bool,
    /// Acknowledged.
    pub ok: bool,
    /// The body posted.
    pub body: Value,
}

/// Runtime push state.
#[derive(Debug, Default)]
pub struct PushBook {
    /// Graph subscriptions by id.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Pub/Sub topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Gmail watches by owner.
    pub watches: BTreeMap<String, Watch>,
    /// Drop (do not deliver) this many next notifications (Graph notifications count one per change, Gmail pushes
    /// one per push).
    pub drop_next: u64,
    /// Delivery attempts, oldest first.
    pub deliveries: VecDeque<Delivery>,
    mail_cursors: HashMap<String, usize>,
    cal_cursors: HashMap<String, u64>,
    next_seq: u64,
}

impl PushBook {
    /// Whether the dispatcher has anything to watch.
    pub fn is_active(&self) -> bool {
        !self.subscriptions.is_empty() || !self.watches.is_empty()
    }

    fn record(&mut self, mut d: Delivery) {
        self.next_seq += 1;
        d.seq = self.next_seq;
        if self.deliveries.len() >= MAX_RECORDS {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(d);
    }

    fn take_drop(&mut self) -> bool {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            true
        } else {
            false
        }
    }
}

/// Graph's timestamp format for subscriptions (`2025-03-04T11:00:00.0000000Z`).
pub fn graph_datetime(secs: i64) -> String {
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        .to_string()
}

/// The Graph `subscription` resource.
pub fn subscription_json(s: &Subscription, base: &str, context: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "resource": s.resource,
        "applicationId": s.client_id,
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": null,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": graph_datetime(s.expiration),
        "creatorId": s.owner_id,
        "includeResourceData": false,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    });
    if context {
        v["@odata.context"] = json!(format!("{base}/v1.0/$metadata#subscriptions/$entity"));
    }
    v
}

fn client() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        // reqwest is built with rustls but no provider; only http is used, yet the builder wants one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("push HTTP client")
    })
}

/// Starts the dispatcher (once per sandbox).
pub fn spawn_dispatcher(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            app.push_wake().notified().await;
            dispatch(&app);
        }
    })
}

/// Where `owner`'s change logs stand now: (mailbox change count, calendar change counter).
pub(crate) fn cursors_now(app: &App, owner: &str) -> (usize, u64) {
    let mail = app.mail_quiet(|m| m.by_owner.get(owner).map_or(0, |mb| mb.changes.len()));
    let cal = app.cal_quiet(|c| c.by_owner.get(owner).map_or(0, |cal| cal.change));
    (mail, cal)
}

impl PushBook {
    /// Starts watching `owner`'s changes from `at` (see [`cursors_now`]), unless something already does. Call it
    /// in the same [`App::push`] as the insertion of the subscription or watch, so the dispatcher never sees one
    /// without the other.
    pub(crate) fn watch_from(&mut self, owner: &str, at: (usize, u64)) {
        self.mail_cursors.entry(owner.to_string()).or_insert(at.0);
        self.cal_cursors.entry(owner.to_string()).or_insert(at.1);
    }
}

/// One mailbox or calendar change, with everything a notification needs.
#[derive(Debug, Clone)]
struct Seen {
    events: bool,
    before: Option<Placement>,
    after: Option<Placement>,
    rest_id: String,
    immutable_id: String,
    etag: String,
    created: bool,
    deleted: bool,
}

/// News of one owner found by a dispatch pass.
struct News {
    owner: String,
    mail: Vec<Seen>,
    cal: Vec<Seen>,
    mail_len: usize,
    cal_change: u64,
    history_id: Option<u64>,
}

/// One pass: reads every watched owner's changes past its cursors and starts their deliveries. Locks each store
/// once per pass, so a pass costs O(owners + subscriptions + new changes).
fn dispatch(app: &App) {
    let now = app.now();
    let cursors: BTreeMap<String, (Option<usize>, Option<u64>)> = app.push(|p| {
        let owners: std::collections::BTreeSet<String> = p
            .subscriptions
            .values()
            .filter(|s| s.active(now))
            .map(|s| s.owner.clone())
            .chain(
                p.watches
                    .values()
                    .filter(|w| w.expiration > now)
                    .map(|w| w.owner.clone()),
            )
            .collect();
        p.mail_cursors.retain(|o, _| owners.contains(o));
        p.cal_cursors.retain(|o, _| owners.contains(o));
        owners
            .into_iter()
            .map(|o| {
                let c = (
                    p.mail_cursors.get(&o).copied(),
                    p.cal_cursors.get(&o).copied(),
                );
                (o, c)
            })
            .collect()
    });
    if cursors.is_empty() {
        return;
    }
    let mut news: BTreeMap<String, News> = BTreeMap::new();
    app.mail_quiet(|m| {
        for (owner, (mail_cursor, _)) in &cursors {
            let Some(mb) = m.by_owner.get(owner) else {
                continue;
            };
            let len = mb.changes.len();
            // A missing cursor or a replaced mailbox (shorter log): start from now, never replay.
            let from = mail_cursor.unwrap_or(len).min(len);
            if from == len && mail_cursor.is_some_and(|c| c <= len) {
                continue;
            }
            let seen = mb.changes[from..]
                .iter()
                .map(|c| {
                    let view = mb.view(c.seq);
                    let place = c.after.or(c.before).unwrap_or(view.place);
                    Seen {
                        events: false,
                        before: c.before,
                        after: c.after,
                        rest_id: mb.rest_id_at(c.seq, place),
                        immutable_id: view.immutable_id.clone(),
                        etag: format!("W/\"{}\"", change_key(&view)),
                        created: c.before.is_none(),
                        deleted: c.after.is_none(),
                    }
                })
                .collect();
            news.insert(
                owner.clone(),
                News {
                    owner: owner.clone(),
                    mail: seen,
                    cal: Vec::new(),
                    mail_len: len,
                    cal_change: 0,
                    history_id: Some(mb.history_id),
                },
            );
        }
    });
    app.cal_quiet(|c| {
        for (owner, (_, cal_cursor)) in &cursors {
            let Some(cal) = c.by_owner.get(owner) else {
                continue;
            };
            // A missing cursor starts from now (the entry below records it), never replays.
            let from = cal_cursor.unwrap_or(cal.change);
            if cal.change <= from && cal_cursor.is_some() {
                continue;
            }
            let seen: Vec<Seen> = cal
                .events
                .iter()
                .filter(|e| e.change > from)
                .map(|e| Seen {
                    events: true,
                    before: None,
                    after: None,
                    rest_id: e.graph_id.clone(),
                    immutable_id: e.immutable_id.clone(),
                    etag: format!("W/\"{}\"", STANDARD.encode(e.change.to_be_bytes())),
                    created: !e.cancelled && e.created_ms == e.updated_ms,
                    deleted: e.cancelled,
                })
                .collect();
            let n = news.entry(owner.clone()).or_insert_with(|| News {
                owner: owner.clone(),
                mail: Vec::new(),
                cal: Vec::new(),
                mail_len: 0,
                cal_change: 0,
                history_id: None,
            });
            n.cal = seen;
            n.cal_change = cal.change;
        }
    });
    if news.is_empty() {
        return;
    }
    let (graph_jobs, gmail_jobs) = app.push(|p| {
        let mut by_owner: HashMap<String, Vec<Subscription>> = HashMap::new();
        for s in p.subscriptions.values().filter(|s| s.active(now)) {
            if news.contains_key(&s.owner) {
                by_owner.entry(s.owner.clone()).or_default().push(s.clone());
            }
        }
        let mut graph_jobs = Vec::new();
        let mut gmail_jobs = Vec::new();
        for n in news.values() {
            if n.history_id.is_some() {
                p.mail_cursors.insert(n.owner.clone(), n.mail_len);
            }
            if n.cal_change > 0 {
                p.cal_cursors.insert(n.owner.clone(), n.cal_change);
            }
            for s in by_owner.get(&n.owner).into_iter().flatten() {
                let mut items = Vec::new();
                for seen in n.mail.iter().chain(n.cal.iter()) {
                    let Some(item) = notification_item(s, seen) else {
                        continue;
                    };
                    if p.take_drop() {
                        p.record(Delivery {
                            seq: 0,
                            kind: "notification",
                            target: s.id.clone(),
                            url: s.notification_url.clone(),
                            attempt: 0,
                            at: now,
                            status: None,
                            error: None,
                            latency_ms: 0,
                            sent_unix_ms: wall_ms(),
                            dropped: true,
                            ok: false,
                            body: json!({"value": [item]}),
                        });
                        continue;
                    }
                    items.push(item);
                }
                for chunk in items.chunks(MAX_BATCH) {
                    graph_jobs.push((
                        s.id.clone(),
                        s.notification_url.clone(),
                        json!({"value": chunk}),
                    ));
                }
            }
            let Some(hid) = n.history_id else {
                continue;
            };
            let Some(w) = p.watches.get(&n.owner).cloned() else {
                continue;
            };
            if w.expiration <= now || !n.mail.iter().any(|seen| watch_matches(&w, seen)) {
                continue;
            }
            let Some(topic) = p.topics.get(&w.topic).cloned() else {
                continue;
            };
            if p.take_drop() {
                p.record(Delivery {
                    seq: 0,
                    kind: "pubsub",
                    target: n.owner.clone(),
                    url: topic.push_endpoint.clone(),
                    attempt: 0,
                    at: now,
                    status: None,
                    error: None,
                    latency_ms: 0,
                    sent_unix_ms: wall_ms(),
                    dropped: true,
                    ok: false,
                    body: json!({"emailAddress": n.owner, "historyId": hid.to_string()}),
                });
            } else {
                gmail_jobs.push((n.owner.clone(), topic, hid));
            }
        }
        (graph_jobs, gmail_jobs)
    });
    for (sub_id, url, body) in graph_jobs {
        let app = app.clone();
        tokio::spawn(async move {
            deliver(&app, Target::Graph(sub_id), url, body).await;
        });
    }
    for (owner, topic, hid) in gmail_jobs {
        let app = app.clone();
        let body = pubsub_body(&app, &topic, &owner, hid);
        tokio::spawn(async move {
            let url = topic.push_endpoint.clone();
            deliver(&app, Target::PubSub(owner, topic), url, body).await;
        });
    }
}

/// The notification for one change, if the subscription wants it.
fn notification_item(s: &Subscription, seen: &Seen) -> Option<Value> {
    let change_type = match (&s.watched, seen.events) {
        (Watched::Events, true) => {
            if seen.deleted {
                "deleted"
            } else if seen.created {
                "created"
            } else {
                "updated"
            }
        }
        (Watched::Messages(folder), false) => {
            let inside = |p: Option<Placement>| match (p, folder) {
                (Some(_), None) => true,
                (Some(p), Some(f)) => p.folder == *f,
                (None, _) => false,
            };
            match (inside(seen.before), inside(seen.after)) {
                (false, true) => "created",
                (true, true) => "updated",
                (true, false) => "deleted",
                (false, false) => return None,
            }
        }
        _ => return None,
    };
    if !s.change_types.iter().any(|c| c == change_type) {
        return None;
    }
    let id = if s.immutable_ids {
        seen.immutable_id.clone()
    } else {
        seen.rest_id.clone()
    };
    let (kind, collection) = if seen.events {
        ("#Microsoft.Graph.Event", "Events")
    } else {
        ("#Microsoft.Graph.Message", "Messages")
    };
    let resource = format!("Users/{}/{collection}/{id}", s.owner_id);
    Some(json!({
        "id": crate::wire::random_token(9),
        "subscriptionId": s.id,
        "subscriptionExpirationDateTime": graph_datetime(s.expiration),
        "clientState": s.client_state,
        "changeType": change_type,
        "tenantId": s.tenant_id,
        "resource": resource,
        "resourceData": {
            "@odata.type": kind,
            "@odata.id": resource,
            "@odata.etag": seen.etag,
            "id": id,
        },
    }))
}

fn watch_matches(w: &Watch, seen: &Seen) -> bool {
    if w.label_ids.is_empty() {
        return true;
    }
    let touched: Vec<&str> = [seen.before, seen.after]
        .into_iter()
        .flatten()
        .flat_map(labels)
        .collect();
    let any = w
        .label_ids
        .iter()
        .any(|l| touched.iter().any(|t| t.eq_ignore_ascii_case(l)));
    if w.label_filter_behavior == "exclude" {
        !any
    } else {
        any
    }
}

fn pubsub_body(app: &App, topic: &Topic, owner: &str, hid: u64) -> Value {
    let as_number = app.read(|s| s.settings.gmail_push_history_id_as_number);
    let data = if as_number {
        json!({"emailAddress": owner, "historyId": hid})
    } else {
        json!({"emailAddress": owner, "historyId": hid.to_string()})
    };
    let publish = Timestamp::from_second(app.now())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string();
    let message_id: u64 = rand::random::<u64>() % 9_000_000_000_000_000 + 1_000_000_000_000_000;
    json!({
        "message": {
            "data": STANDARD.encode(data.to_string()),
            "messageId": message_id.to_string(),
            "publishTime": publish,
        },
        "subscription": topic.subscription,
    })
}

/// The push JWT Pub/Sub sends with each push (RS256, sandbox test key; see [`crate::jwt`]).
pub fn push_token(app: &App, topic: &Topic) -> String {
    let now = app.now();
    let digest = Sha256::digest(topic.service_account.as_bytes());
    let sub: String = std::iter::once('1')
        .chain(digest.iter().take(20).map(|b| char::from(b'0' + b % 10)))
        .collect();
    crate::jwt::sign_rs256(&json!({
        "aud": topic.audience,
        "azp": sub,
        "email": topic.service_account,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": sub,
    }))
}

/// Who a delivery is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Graph subscription's notifications.
    Graph(String),
    /// A Graph subscription's lifecycle notifications.
    Lifecycle(String),
    /// A Gmail watch's pushes (owner, topic).
    PubSub(String, Topic),
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Graph(_) => "notification",
            Target::Lifecycle(_) => "lifecycle",
            Target::PubSub(..) => "pubsub",
        }
    }

    fn name(&self) -> String {
        match self {
            Target::Graph(id) | Target::Lifecycle(id) => id.clone(),
            Target::PubSub(owner, _) => owner.clone(),
        }
    }

    /// Whether retrying still makes sense.
    fn wanted(&self, app: &App) -> bool {
        let now = app.now();
        match self {
            Target::Graph(id) => {
                app.push(|p| p.subscriptions.get(id).is_some_and(|s| s.active(now)))
            }
            Target::Lifecycle(_) => true,
            Target::PubSub(owner, _) => app.push(|p| p.watches.contains_key(owner)),
        }
    }
}

/// POSTs `body` to `url` until acknowledged or given up (see the module docs).
pub async fn deliver(app: &App, target: Target, url: String, body: Value) {
    let (timeout, initial, max_delay, max_attempts, horizon) = app.read(|s| {
        let st = &s.settings;
        let horizon = match target {
            Target::PubSub(..) => st.pubsub_retry_secs,
            _ => st.graph_notification_retry_secs,
        };
        (
            st.push_timeout_ms,
            st.push_retry_initial_ms,
            st.push_retry_max_ms,
            st.push_max_attempts.max(1),
            horizon,
        )
    });
    let first = app.now();
    let mut delay = initial;
    for attempt in 1..=max_attempts {
        if attempt > 1 && !target.wanted(app) {
            return;
        }
        let mut rq = client()
            .post(&url)
            .timeout(Duration::from_millis(timeout))
            .json(&body);
        if let Target::PubSub(_, topic) = &target {
            rq = rq.bearer_auth(push_token(app, topic));
        }
        let t0 = Instant::now();
        let sent_unix_ms = wall_ms();
        let (status, error) = match rq.send().await {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(describe(&e))),
        };
        let latency_ms = t0.elapsed().as_millis() as u64;
        let ok = match (&target, status) {
            (Target::PubSub(..), Some(s)) => matches!(s, 102 | 200 | 201 | 202 | 204),
            (_, Some(s)) => (200..300).contains(&s),
            _ => false,
        };
        let at = app.now();
        app.push(|p| {
            p.record(Delivery {
                seq: 0,
                kind: target.kind(),
                target: target.name(),
                url: url.clone(),
                attempt,
                at,
                status,
                error,
                latency_ms,
                sent_unix_ms,
                dropped: false,
                ok,
                body: body.clone(),
            })
        });
        if ok || at - first >= horizon {
            return;
        }
        if attempt < max_attempts {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            delay = delay.saturating_mul(2).min(max_delay);
        }
    }
}

fn wall_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// Graph's validation call: POST `{url}?validationToken=…` and expect the decoded token back as
/// `text/plain` with 200 within `graph_validation_timeout_ms`. `Err` carries Graph's message.
pub async fn validate(app: &App, target: &str, url: &str) -> Result<(), String> {
    let timeout = app.read(|s| s.settings.graph_validation_timeout_ms);
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        crate::wire::random_guid()
    );
    let mut u = url::Url::parse(url).map_err(|_| "Invalid notification url.".to_string())?;
    u.query_pairs_mut().append_pair("validationToken", &token);
    let t0 = Instant::now();
    let sent_unix_ms = wall_ms();
    let sent = client()
        .post(u.as_str())
        .header("content-type", "text/plain; charset=utf-8")
        .timeout(Duration::from_millis(timeout))
        .send()
        .await;
    let (status, error, result) = match sent {
        Err(e) if e.is_timeout() => (
            None,
            Some("timed out".to_string()),
            Err("Subscription validation request timed out.".to_string()),
        ),
        Err(e) => (
            None,
            Some(describe(&e)),
            Err("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.".to_string()),
        ),
        Ok(r) => {
            let status = r.status().as_u16();
            let plain = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/plain"));
            let text = r.text().await.unwrap_or_default();
            if status != 200 {
                (
                    Some(status),
                    None,
                    Err("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.".to_string()),
                )
            } else if !plain || text != token {
                (
                    Some(status),
                    Some("the answer was not the token as text/plain".to_string()),
                    Err("Subscription validation request failed. Response must exactly match validationToken query parameter.".to_string()),
                )
            } else {
                (Some(status), None, Ok(()))
            }
        }
    };
    let latency_ms = t0.elapsed().as_millis() as u64;
    let at = app.now();
    let ok = result.is_ok();
    app.push(|p| {
        p.record(Delivery {
            seq: 0,
            kind: "validation",
            target: target.to_string(),
            url: u.to_string(),
            attempt: 1,
            at,
            status,
            error,
            latency_ms,
            sent_unix_ms,
            dropped: false,
            ok,
            body: json!(token),
        })
    });
    result
}

/// The lifecycle notification body for a subscription.
pub fn lifecycle_body(s: &Subscription, event: &str) -> Value {
    json!({"value": [{
        "subscriptionId": s.id,
        "subscriptionExpirationDateTime": graph_datetime(s.expiration),
        "tenantId": s.tenant_id,
        "clientState": s.client_state,
        "lifecycleEvent": event,
    }]})
}
