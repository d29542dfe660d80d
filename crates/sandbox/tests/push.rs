//! Push, provider side: Graph subscriptions (validation handshake, notifications with `clientState`, renewal,
//! expiry, lifecycle events, dropped notifications, retries) and Gmail `users.watch` with Pub/Sub-style pushes
//! signed by a key the JWKS endpoint publishes. Each test runs its own webhook receiver on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ADELE: &str = "adele@acme.example";
const HANK: &str = "hank@globex.example";

// ---- a webhook receiver -----------------------------------------------------------------------------

/// How the receiver answers.
#[derive(Clone)]
struct Behaviour {
    /// Validation: echo the token (true) or answer 200 with something else (false).
    echo: bool,
    /// Validation: wait this long first.
    validation_delay_ms: u64,
    /// Notifications: answer this many with 500 before acknowledging with 202.
    fail_first: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            echo: true,
            validation_delay_ms: 0,
            fail_first: 0,
        }
    }
}

#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Rx {
    behaviour: Arc<Mutex<Behaviour>>,
    validations: mpsc::UnboundedSender<HashMap<String, String>>,
    posts: mpsc::UnboundedSender<Received>,
}

struct Receiver {
    url: String,
    validations: mpsc::UnboundedReceiver<HashMap<String, String>>,
    posts: mpsc::UnboundedReceiver<Received>,
}

async fn hook(
    State(rx): State<Rx>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let b = rx.behaviour.lock().unwrap().clone();
    if let Some(token) = q.get("validationToken") {
        let _ = rx.validations.send(q.clone());
        if b.validation_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(b.validation_delay_ms)).await;
        }
        let answer = if b.echo {
            token.clone()
        } else {
            "ok".to_string()
        };
        return (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            answer,
        )
            .into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let _ = rx.posts.send(Received { headers, body });
    let fail = {
        let mut g = rx.behaviour.lock().unwrap();
        if g.fail_first > 0 {
            g.fail_first -= 1;
            true
        } else {
            false
        }
    };
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else {
        StatusCode::ACCEPTED.into_response()
    }
}

async fn receiver(behaviour: Behaviour) -> Receiver {
    let behaviour = Arc::new(Mutex::new(behaviour));
    let (vtx, vrx) = mpsc::unbounded_channel();
    let (ptx, prx) = mpsc::unbounded_channel();
    let app = Router::new().fallback(hook).with_state(Rx {
        behaviour,
        validations: vtx,
        posts: ptx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hooks/graph?tenant=acme"),
        validations: vrx,
        posts: prx,
    }
}

impl Receiver {
    /// The next POST (a guard against hanging, not a timing assertion).
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.posts.recv())
            .await
            .expect("a notification arrives")
            .expect("receiver open")
    }

    fn nothing_yet(&mut self) -> bool {
        self.posts.try_recv().is_err()
    }
}

// ---- helpers ------------------------------------------------------------------------------------------

async fn graph_token(t: &Ctx) -> String {
    s(&t.ms_tokens(ADELE).await["access_token"]).to_string()
}

async fn graph(
    t: &Ctx,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rq = t.http.request(method, t.url(path)).bearer_auth(token);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn iso(t: &Ctx, secs_from_now: i64) -> String {
    let now = t.sb.app().now();
    jiff::Timestamp::from_second(now + secs_from_now)
        .unwrap()
        .to_string()
}

async fn subscribe(t: &Ctx, token: &str, rx: &Receiver, lifecycle: Option<&Receiver>) -> Value {
    let mut body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": rx.url,
        "resource": "me/mailFolders('Inbox')/messages",
        "expirationDateTime": iso(t, 3600),
        "clientState": "s3cret-state",
    });
    if let Some(l) = lifecycle {
        body["lifecycleNotificationUrl"] = json!(l.url);
    }
    let (st, sub) = graph(t, Method::POST, token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{sub}");
    sub
}

async fn inject(t: &Ctx, user: &str, subject: &str) -> Value {
    let (st, m) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{user}/messages"),
            Some(json!({"from": "cand@example.org", "subject": subject, "body": "hello"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{m}");
    m
}

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn assert_shape(rel: &str, actual: &Value) {
    let errs = common::shape::diff(&golden(rel), actual, &[]);
    assert!(errs.is_empty(), "{rel}: {errs:?}\nsandbox sent: {actual}");
}

async fn settings(t: &Ctx, patch: Value) {
    let (st, body) = t
        .control(Method::PATCH, "/_sandbox/settings", Some(patch))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

async fn deliveries(t: &Ctx, query: &str) -> Vec<Value> {
    let (_, v) = t
        .control(
            Method::GET,
            &format!("/_sandbox/push/deliveries{query}"),
            None,
        )
        .await;
    v.as_array().unwrap().clone()
}

// ---- Graph subscriptions --------------------------------------------------------------------------------

#[tokio::test]
async fn a_subscription_is_created_only_after_the_notification_url_echoes_the_validation_token() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &token, &rx, None).await;
    assert_shape("microsoft/subscription.json", &sub);
    let errs = common::schema::check_graph("subscription", &sub);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(sub["clientState"], "s3cret-state");
    assert_eq!(sub["resource"], "me/mailFolders('Inbox')/messages");

    let q = rx
        .validations
        .try_recv()
        .expect("the validation call came first");
    assert!(
        q["validationToken"].starts_with("Validation: Testing client application reachability"),
        "the token arrives url-decoded: {q:?}"
    );
    assert_eq!(
        q["tenant"], "acme",
        "the notification URL's own query is kept"
    );

    let (st, list) = graph(&t, Method::GET, &token, "/v1.0/subscriptions", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["value"][0]["id"], sub["id"]);
    let v = deliveries(&t, "?kind=validation").await;
    assert_eq!(
        (v.len(), v[0]["status"].as_u64(), v[0]["ok"].as_bool()),
        (1, Some(200), Some(true))
    );
}

#[tokio::test]
async fn a_notification_url_that_does_not_echo_the_token_or_answers_too_late_gets_400_and_no_subscription()
 {
    let t = start().await;
    let token = graph_token(&t).await;
    let wrong = receiver(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let body = |url: &str| {
        json!({"changeType": "created", "notificationUrl": url, "resource": "/me/messages",
               "expirationDateTime": iso(&t, 3600), "clientState": "x"})
    };
    let (st, err) = graph(
        &t,
        Method::POST,
        &token,
        "/v1.0/subscriptions",
        Some(body(&wrong.url)),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "InvalidRequest");
    assert!(
        s(&err["error"]["message"]).contains("validationToken"),
        "{err}"
    );

    settings(&t, json!({"graph_validation_timeout_ms": 200})).await;
    let slow = receiver(Behaviour {
        validation_delay_ms: 2_000,
        ..Behaviour::default()
    })
    .await;
    let (st, err) = graph(
        &t,
        Method::POST,
        &token,
        "/v1.0/subscriptions",
        Some(body(&slow.url)),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
    assert!(s(&err["error"]["message"]).contains("timed out"), "{err}");

    let (_, list) = graph(&t, Method::GET, &token, "/v1.0/subscriptions", None).await;
    assert_eq!(list["value"], json!([]));
}

#[tokio::test]
async fn a_new_inbox_message_is_notified_with_the_client_state_and_the_message_id() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &token, &rx, None).await;
    let m = inject(&t, ADELE, "Re: the role").await;
    let got = rx.next().await;
    assert_shape("microsoft/change-notification.json", &got.body);
    assert_eq!(got.headers["content-type"], "application/json");
    let n = &got.body["value"][0];
    assert_eq!(n["subscriptionId"], sub["id"]);
    assert_eq!(n["clientState"], "s3cret-state");
    assert_eq!(n["changeType"], "created");
    let user_id = t.sb.read(|s| s.user(ADELE).unwrap().id.clone());
    let tenant = t.sb.read(|s| s.user(ADELE).unwrap().org.clone());
    assert_eq!(n["tenantId"], tenant.as_str());
    assert_eq!(n["resourceData"]["id"], m["graph_id"]);
    assert_eq!(
        n["resource"],
        format!("Users/{user_id}/Messages/{}", s(&m["graph_id"])).as_str()
    );
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.Message");

    // The id is one the API serves.
    let (st, msg) = graph(
        &t,
        Method::GET,
        &token,
        &format!("/v1.0/me/messages/{}", s(&n["resourceData"]["id"])),
        None,
    )
    .await;
    assert_eq!((st, s(&msg["subject"])), (StatusCode::OK, "Re: the role"));

    // Deleting it is a `deleted` change; mail in other folders is not this subscription's business.
    let (st, _) = t
        .control(
            Method::DELETE,
            &format!("/_sandbox/mailboxes/{ADELE}/messages/{}", s(&m["graph_id"])),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let got = rx.next().await;
    assert_eq!(got.body["value"][0]["changeType"], "deleted");
    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{ADELE}/messages"),
            Some(json!({"from": "x@example.org", "subject": "junk", "folder": "junkemail"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    inject(&t, ADELE, "second").await;
    let got = rx.next().await;
    assert_eq!(
        got.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        got.body
    );
    assert_eq!(got.body["value"][0]["changeType"], "created");
}

#[tokio::test]
async fn expiry_is_capped_at_the_maximum_lifetime_renewal_extends_it_and_an_expired_subscription_stops_delivering()
 {
    let t = start().await;
    settings(&t, json!({"ms_access_token_lifetime_secs": 30 * 86_400})).await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let mut other = receiver(Behaviour::default()).await;
    let body = json!({"changeType": "created", "notificationUrl": rx.url, "resource": "me/messages",
                      "expirationDateTime": iso(&t, 10_080 * 60), "clientState": "a"});
    let (st, sub) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        s(&sub["expirationDateTime"])
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second(),
        t.sb.app().now() + 4230 * 60,
        "capped at the default 4,230 minutes"
    );
    let id = s(&sub["id"]).to_string();

    t.clock.advance_secs(4000 * 60);
    let (st, renewed) = graph(
        &t,
        Method::PATCH,
        &token,
        &format!("/v1.0/subscriptions/{id}"),
        Some(json!({"expirationDateTime": iso(&t, 3600)})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{renewed}");
    assert_shape("microsoft/subscription.json", &renewed);
    t.clock.advance_secs(1800);
    inject(&t, ADELE, "still subscribed").await;
    assert_eq!(rx.next().await.body["value"][0]["changeType"], "created");

    // A second subscription outlives the first: once it has its notification, the first had its chance.
    let body = json!({"changeType": "created", "notificationUrl": other.url, "resource": "me/messages",
                      "expirationDateTime": iso(&t, 4 * 3600), "clientState": "b"});
    let (st, _) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    t.clock.advance_secs(1801);
    inject(&t, ADELE, "after expiry").await;
    assert_eq!(other.next().await.body["value"][0]["clientState"], "b");
    assert!(rx.nothing_yet(), "the expired subscription delivered");
    let (st, _) = graph(
        &t,
        Method::GET,
        &token,
        &format!("/v1.0/subscriptions/{id}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = graph(
        &t,
        Method::PATCH,
        &token,
        &format!("/v1.0/subscriptions/{id}"),
        Some(json!({"expirationDateTime": iso(&t, 3600)})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "an expired subscription cannot be renewed"
    );

    // Deleting the live one: 204, and it is gone.
    let (_, list) = graph(&t, Method::GET, &token, "/v1.0/subscriptions", None).await;
    let live = s(&list["value"][0]["id"]).to_string();
    let r = t
        .http
        .delete(t.url(&format!("/v1.0/subscriptions/{live}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, list) = graph(&t, Method::GET, &token, "/v1.0/subscriptions", None).await;
    assert_eq!(list["value"], json!([]));
}

#[tokio::test]
async fn over_the_maximum_lifetime_can_be_refused_instead_of_capped() {
    let t = start().await;
    settings(
        &t,
        json!({"graph_subscription_max_minutes": 10_080, "graph_subscription_reject_over_max": true}),
    )
    .await;
    let token = graph_token(&t).await;
    let rx = receiver(Behaviour::default()).await;
    let body = json!({"changeType": "created", "notificationUrl": rx.url, "resource": "me/messages",
                      "expirationDateTime": iso(&t, 10_081 * 60)});
    let (st, err) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        s(&err["error"]["message"]).contains("10080 minutes"),
        "{err}"
    );
}

#[tokio::test]
async fn lifecycle_events_go_to_the_lifecycle_url_and_subscription_removed_stops_delivery() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let mut life = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &token, &rx, Some(&life)).await;
    assert!(
        life.validations.try_recv().is_ok(),
        "the lifecycle URL is validated too"
    );
    let id = s(&sub["id"]);
    for event in ["reauthorizationRequired", "missed", "subscriptionRemoved"] {
        let (st, _) = t
            .control(
                Method::POST,
                &format!("/_sandbox/push/subscriptions/{id}/lifecycle"),
                Some(json!({"event": event})),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        let got = life.next().await;
        assert_shape("microsoft/lifecycle-notification.json", &got.body);
        let n = &got.body["value"][0];
        assert_eq!(
            (
                s(&n["lifecycleEvent"]),
                s(&n["clientState"]),
                s(&n["subscriptionId"])
            ),
            (event, "s3cret-state", id)
        );
    }
    // After subscriptionRemoved the subscription is gone and delivers nothing.
    let (st, _) = graph(
        &t,
        Method::GET,
        &token,
        &format!("/v1.0/subscriptions/{id}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut other = receiver(Behaviour::default()).await;
    subscribe(&t, &token, &other, None).await;
    inject(&t, ADELE, "after removal").await;
    other.next().await;
    assert!(rx.nothing_yet(), "a removed subscription delivered");

    let (st, err) = t
        .control(
            Method::POST,
            &format!("/_sandbox/push/subscriptions/{id}/lifecycle"),
            Some(json!({"event": "nonsense"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn reauthorize_answers_204_for_a_live_subscription() {
    let t = start().await;
    let token = graph_token(&t).await;
    let rx = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &token, &rx, None).await;
    let r = t
        .http
        .post(t.url(&format!(
            "/v1.0/subscriptions/{}/reauthorize",
            s(&sub["id"])
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn dropped_notifications_are_recorded_but_never_sent() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &token, &rx, None).await;
    let (st, _) = t
        .control(
            Method::POST,
            "/_sandbox/push/drop",
            Some(json!({"count": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let first = inject(&t, ADELE, "dropped").await;
    let second = inject(&t, ADELE, "delivered").await;
    let got = rx.next().await;
    let ids: Vec<&Value> = got.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["resourceData"]["id"])
        .collect();
    assert_eq!(ids, vec![&second["graph_id"]]);
    let dropped: Vec<Value> = deliveries(&t, &format!("?target={}", s(&sub["id"])))
        .await
        .into_iter()
        .filter(|d| d["dropped"] == true)
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        dropped[0]["body"]["value"][0]["resourceData"]["id"],
        first["graph_id"]
    );
    let (_, overview) = t.control(Method::GET, "/_sandbox/push", None).await;
    assert_eq!(overview["drop_next"], 0);
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_backoff_and_every_attempt_is_recorded() {
    let t = start().await;
    settings(
        &t,
        json!({"push_retry_initial_ms": 10, "push_retry_max_ms": 40}),
    )
    .await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour {
        fail_first: 2,
        ..Behaviour::default()
    })
    .await;
    let sub = subscribe(&t, &token, &rx, None).await;
    inject(&t, ADELE, "retry me").await;
    let a = rx.next().await;
    let b = rx.next().await;
    let c = rx.next().await;
    assert_eq!(a.body, b.body);
    assert_eq!(b.body, c.body);
    // The third answer (202) is recorded after the receiver sent it; wait for the record.
    let mut attempts = Vec::new();
    for _ in 0..200 {
        attempts = deliveries(&t, &format!("?kind=notification&target={}", s(&sub["id"]))).await;
        if attempts.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary: Vec<(u64, u64, bool)> = attempts
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["status"].as_u64().unwrap(),
                d["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(1, 500, false), (2, 500, false), (3, 202, true)]
    );
}

#[tokio::test]
async fn an_events_subscription_is_notified_of_calendar_changes() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    let body = json!({"changeType": "created,updated,deleted", "notificationUrl": rx.url, "resource": "me/events",
                      "expirationDateTime": iso(&t, 3600), "clientState": "cal"});
    let (st, _) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, created) = graph(
        &t,
        Method::POST,
        &token,
        "/v1.0/me/events",
        Some(json!({"subject": "Interview", "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"},
                    "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "UTC"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let got = rx.next().await;
    let n = &got.body["value"][0];
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.Event");
    assert_eq!(n["resourceData"]["id"], created["id"]);
}

#[tokio::test]
async fn a_subscription_needs_a_mail_scope_and_a_supported_resource() {
    let t = start().await;
    let token = graph_token(&t).await;
    let rx = receiver(Behaviour::default()).await;
    let body = json!({"changeType": "created", "notificationUrl": rx.url, "resource": "me/contacts",
                      "expirationDateTime": iso(&t, 3600)});
    let (st, err) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(
        (st, s(&err["error"]["code"])),
        (StatusCode::BAD_REQUEST, "InvalidRequest")
    );
    let body = json!({"changeType": "created,read", "notificationUrl": rx.url, "resource": "me/messages",
                      "expirationDateTime": iso(&t, 3600)});
    let (st, _) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let body = json!({"changeType": "created", "notificationUrl": rx.url, "resource": "me/messages",
                      "expirationDateTime": iso(&t, -60)});
    let (st, _) = graph(&t, Method::POST, &token, "/v1.0/subscriptions", Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "an expiry in the past");
    let (st, err) = graph(&t, Method::POST, "not-a-token", "/v1.0/subscriptions",
        Some(json!({"changeType": "created", "notificationUrl": rx.url, "resource": "me/messages", "expirationDateTime": iso(&t, 3600)}))).await;
    assert_eq!(
        (st, s(&err["error"]["code"])),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
    );
}

// ---- Gmail watch and Pub/Sub push ------------------------------------------------------------------------

async fn gmail_token(t: &Ctx) -> String {
    s(&t.google_tokens(HANK, GMAIL_READ).await["access_token"]).to_string()
}

async fn gmail(t: &Ctx, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = t
        .http
        .post(t.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

const TOPIC: &str = "projects/hirewire-test/topics/gmail";
const AUDIENCE: &str = "https://hirewire.test/hooks/gmail";

async fn topic(t: &Ctx, rx: &Receiver) {
    let (st, body) = t
        .control(
            Method::POST,
            "/_sandbox/push/topics",
            Some(
                json!({"name": TOPIC, "push_endpoint": rx.url, "audience": AUDIENCE,
                        "service_account": "push@hirewire-test.iam.gserviceaccount.com"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

/// Verifies an RS256 JWT against a JWKS document, as a push endpoint would; returns the claims.
fn verify(jwt: &str, jwks: &Value) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let key = jwks["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kid"] == header["kid"])?;
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str()?).ok()?;
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str()?).ok()?;
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{h}.{p}").as_bytes(),
            &URL_SAFE_NO_PAD.decode(sig).ok()?,
        )
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

#[tokio::test]
async fn gmail_watch_pushes_a_signed_notification_that_verifies_with_the_jwks_and_the_audience() {
    let t = start().await;
    let token = gmail_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    topic(&t, &rx).await;
    let (st, watch) = gmail(
        &t,
        &token,
        "/gmail/v1/users/me/watch",
        json!({"topicName": TOPIC, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{watch}");
    assert_shape("google/gmail-watch.json", &watch);
    let errs = common::schema::check_google(common::schema::gmail(), "WatchResponse", &watch);
    assert!(errs.is_empty(), "{errs:?}");
    let expiration: i64 = s(&watch["expiration"]).parse().unwrap();
    assert_eq!(
        expiration,
        (t.sb.app().now() + 7 * 86_400) * 1000,
        "7 days, epoch ms"
    );
    let start_hid: u64 = s(&watch["historyId"]).parse().unwrap();

    inject(&t, HANK, "Re: interview").await;
    let got = rx.next().await;
    assert_shape("google/pubsub-push.json", &got.body);
    assert_eq!(
        got.body["subscription"],
        "projects/hirewire-test/subscriptions/gmail-push"
    );
    let data: Value =
        serde_json::from_slice(&STANDARD.decode(s(&got.body["message"]["data"])).unwrap()).unwrap();
    assert_shape("google/pubsub-push-data.json", &data);
    assert_eq!(data["emailAddress"], HANK);
    let hid: u64 = s(&data["historyId"]).parse().unwrap();
    assert!(hid > start_hid, "{hid} > {start_hid}");

    let auth = got.headers["authorization"].to_str().unwrap();
    let jwt = auth.strip_prefix("Bearer ").expect("a bearer token");
    let (_, _, jwks) = t.api("", "/oauth2/v3/certs").await;
    assert_shape("google/oauth2-certs.json", &jwks);
    let claims = verify(jwt, &jwks).expect("the push JWT verifies with the published keys");
    assert_shape("google/pubsub-push-token-claims.json", &claims);
    assert_eq!(claims["iss"], "https://accounts.google.com");
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(
        claims["email"],
        "push@hirewire-test.iam.gserviceaccount.com"
    );
    assert_eq!(claims["email_verified"], true);
    let now = t.sb.app().now();
    assert!(claims["iat"].as_i64().unwrap() <= now && claims["exp"].as_i64().unwrap() > now);
    let mut tampered = jwt.to_string();
    tampered.insert(jwt.find('.').unwrap() + 2, 'x');
    assert!(
        verify(&tampered, &jwks).is_none(),
        "a changed token does not verify"
    );

    // The history the push points at is readable.
    let (st, _, history) = t
        .api(
            &token,
            &format!("/gmail/v1/users/me/history?startHistoryId={start_hid}"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(history["historyId"], data["historyId"]);
}

#[tokio::test]
async fn gmail_pushes_follow_the_label_filter_stop_and_the_seven_day_expiry() {
    let t = start().await;
    let token = gmail_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    topic(&t, &rx).await;
    let watch =
        json!({"topicName": TOPIC, "labelIds": ["INBOX"], "labelFilterBehavior": "include"});
    assert_eq!(
        gmail(&t, &token, "/gmail/v1/users/me/watch", watch.clone())
            .await
            .0,
        StatusCode::OK
    );

    // Spam is outside the filter; the inbox message after it is pushed (and is the first push).
    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{HANK}/messages"),
            Some(json!({"from": "x@example.org", "subject": "spam", "folder": "junkemail"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let inbox = inject(&t, HANK, "inbox").await;
    let first = rx.next().await;
    let data: Value =
        serde_json::from_slice(&STANDARD.decode(s(&first.body["message"]["data"])).unwrap())
            .unwrap();
    assert_eq!(
        data["historyId"], inbox["history_id"],
        "the first push is the inbox message's"
    );

    // stop: 204, nothing more.
    let r = t
        .http
        .post(t.url("/gmail/v1/users/me/stop"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, overview) = t.control(Method::GET, "/_sandbox/push", None).await;
    assert_eq!(overview["watches"], json!([]));

    // A new watch lasts 7 days on the sandbox clock.
    assert_eq!(
        gmail(&t, &token, "/gmail/v1/users/me/watch", watch).await.0,
        StatusCode::OK
    );
    t.clock.advance_secs(7 * 86_400 + 1);
    let (_, overview) = t.control(Method::GET, "/_sandbox/push", None).await;
    assert_eq!(overview["watches"][0]["expired"], true);
    inject(&t, HANK, "after expiry").await;
    // A Graph subscription on another mailbox proves the dispatcher has run past this change.
    let ms = graph_token(&t).await;
    let mut other = receiver(Behaviour::default()).await;
    subscribe(&t, &ms, &other, None).await;
    inject(&t, ADELE, "sentinel").await;
    other.next().await;
    assert!(rx.nothing_yet(), "an expired watch pushed");
}

#[tokio::test]
async fn gmail_watch_refuses_a_malformed_or_unconfigured_topic() {
    let t = start().await;
    let token = gmail_token(&t).await;
    let (st, err) = gmail(
        &t,
        &token,
        "/gmail/v1/users/me/watch",
        json!({"topicName": "gmail"}),
    )
    .await;
    assert_eq!(
        (st, s(&err["error"]["errors"][0]["reason"])),
        (StatusCode::BAD_REQUEST, "invalidArgument")
    );
    let (st, err) = gmail(
        &t,
        &token,
        "/gmail/v1/users/me/watch",
        json!({"topicName": "projects/p/topics/unknown"}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(
        c["gmail_units"][HANK], 200,
        "watch costs 100 units per call"
    );
}

#[tokio::test]
async fn gmail_push_history_id_can_be_sent_as_a_number() {
    let t = start().await;
    settings(&t, json!({"gmail_push_history_id_as_number": true})).await;
    let token = gmail_token(&t).await;
    let mut rx = receiver(Behaviour::default()).await;
    topic(&t, &rx).await;
    assert_eq!(
        gmail(
            &t,
            &token,
            "/gmail/v1/users/me/watch",
            json!({"topicName": TOPIC})
        )
        .await
        .0,
        StatusCode::OK
    );
    inject(&t, HANK, "n").await;
    let got = rx.next().await;
    let data: Value =
        serde_json::from_slice(&STANDARD.decode(s(&got.body["message"]["data"])).unwrap()).unwrap();
    assert!(data["historyId"].is_u64(), "{data}");
}

#[tokio::test]
async fn a_new_subscription_hears_only_of_later_changes_and_can_ask_for_immutable_ids() {
    let t = start().await;
    let token = graph_token(&t).await;
    for i in 0..3 {
        inject(&t, ADELE, &format!("before {i}")).await;
    }
    let mut rx = receiver(Behaviour::default()).await;
    let r = t
        .http
        .post(t.url("/v1.0/subscriptions"))
        .bearer_auth(&token)
        .header("Prefer", "IdType=\"ImmutableId\"")
        .json(
            &json!({"changeType": "created", "notificationUrl": rx.url, "resource": "/me/messages",
                      "expirationDateTime": iso(&t, 3600), "clientState": "imm"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = inject(&t, ADELE, "after").await;
    let got = rx.next().await;
    let value = got.body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1, "{}", got.body);
    assert_eq!(value[0]["resourceData"]["id"], m["immutable_id"]);
}

#[tokio::test]
async fn mail_sent_through_the_api_is_notified_to_the_recipients_inbox_subscription() {
    let t = start().await;
    let adele = graph_token(&t).await;
    let ben = s(&t.ms_tokens("ben@acme.example").await["access_token"]).to_string();
    let mut rx = receiver(Behaviour::default()).await;
    let sub = subscribe(&t, &ben, &rx, None).await;
    let (st, err) = graph(
        &t,
        Method::POST,
        &adele,
        "/v1.0/me/sendMail",
        Some(json!({"message": {"subject": "Interview slots", "body": {"contentType": "Text", "content": "Tuesday?"},
                                "toRecipients": [{"emailAddress": {"address": "ben@acme.example"}}]}})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{err}");
    let got = rx.next().await;
    let n = &got.body["value"][0];
    assert_eq!(
        (s(&n["subscriptionId"]), s(&n["changeType"])),
        (s(&sub["id"]), "created")
    );
    let (st, msg) = graph(
        &t,
        Method::GET,
        &ben,
        &format!("/v1.0/me/messages/{}", s(&n["resourceData"]["id"])),
        None,
    )
    .await;
    assert_eq!(
        (st, s(&msg["subject"])),
        (StatusCode::OK, "Interview slots")
    );
}
