//! Push and pacing end to end against the in-process sandbox playing the provider side: a Graph subscription with
//! the validation handshake, change and lifecycle notifications checked by `clientState`, renewal and deletion; a
//! Gmail watch whose Pub/Sub pushes carry a JWT verified against the sandbox's JWKS; and paced readers that stay
//! inside the sandbox's quotas (its counters show no 429).

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use hirewire_providers::pacing::{RateLimit, ServicePacing};
use hirewire_providers::push::{
    ChangeType, GmailPush, GraphNotification, LifecycleEvent, NewSubscription, NotificationKind,
    PubSubAuthConfig, PubSubVerifier, decode_pubsub_push, graph_validation_token, new_client_state,
    parse_graph_notifications,
};
use hirewire_providers::scopes;
use hirewire_providers::{
    AccessLevel, Capability, ConfigProblem, MailReader, PaceKey, Pacer, PacingConfig, Provider,
    ProviderError, PushClient, PushConfig, Secret,
};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const MS_USER: &str = "adele@acme.example";
const GOOGLE_USER: &str = "hank@globex.example";

async fn token_for(w: &World, provider: Provider, user: &str) -> Secret {
    let client = w.client(provider);
    let a = begin(
        &client,
        scopes::request(provider, Capability::Inbox, AccessLevel::ViewOnly),
        false,
    );
    let landing = w.sign_in(&a.url, user, Answer::AcceptAll).await;
    let (code, _) = code_of(&client, &a, &landing.query());
    client
        .exchange_code(&code, redirect_uri(provider), &a.verifier)
        .await
        .unwrap()
        .access_token
}

/// What hirewire's webhook endpoints received, as the server would hand it to its queue.
enum Delivery {
    Graph(Vec<GraphNotification>),
    Gmail(Option<String>, GmailPush),
}

/// A webhook server the way the server will build one: answer the validation handshake, decode, enqueue, 202.
/// No provider I/O on this path.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        async move {
            if let Some(token) = graph_validation_token(uri.query().unwrap_or("")) {
                return (StatusCode::OK, [("content-type", "text/plain")], token).into_response();
            }
            let delivery = if uri.path().starts_with("/hooks/gmail") {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match decode_pubsub_push(&body) {
                    Ok(p) => Delivery::Gmail(auth, p),
                    Err(_) => return StatusCode::BAD_REQUEST.into_response(),
                }
            } else {
                match parse_graph_notifications(&body) {
                    Ok(n) => Delivery::Graph(n),
                    Err(_) => return StatusCode::BAD_REQUEST.into_response(),
                }
            };
            let _ = tx.send(delivery);
            StatusCode::ACCEPTED.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, rx)
}

/// The next delivery. The bound only keeps a broken build from hanging CI; nothing here measures speed.
async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a delivery arrives")
        .expect("the webhook is up")
}

async fn settings(w: &World, patch: Value) {
    w.control(Method::PATCH, "/_sandbox/settings", Some(patch))
        .await;
}

/// Delivers a candidate's message to `user`'s inbox; returns the sandbox's ids of it.
async fn inject(w: &World, user: &str, subject: &str) -> Value {
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{user}/messages"),
        Some(json!({"from": "ana.lima@candidates.example", "to": [user], "subject": subject, "body": "hello", "folder": "inbox"})),
    )
    .await
}

fn sandbox_now() -> Timestamp {
    Timestamp::now()
}

/// A Microsoft mailbox's token, a listening webhook (its base URL and deliveries) and a push client, with the
/// sandbox's notification retries shrunk to test scale.
async fn graph_push(
    w: &World,
) -> (
    Secret,
    String,
    mpsc::UnboundedReceiver<Delivery>,
    PushClient,
) {
    settings(
        w,
        json!({"push_retry_initial_ms": 20, "push_retry_max_ms": 100, "push_timeout_ms": 5000}),
    )
    .await;
    let token = token_for(w, Provider::Microsoft, MS_USER).await;
    let (hook, rx) = webhook().await;
    let push = PushClient::new(
        Provider::Microsoft,
        w.endpoints(),
        w.http(),
        PushConfig::default(),
    );
    (token, hook, rx, push)
}

/// A subscription to `resource` for every change, notified at the webhook (`?org=1` kept) with lifecycle events.
fn graph_subscription(
    hook: &str,
    resource: &str,
    state: &Secret,
    lifetime: Duration,
) -> NewSubscription {
    NewSubscription {
        resource: resource.into(),
        change_types: vec![
            ChangeType::Created,
            ChangeType::Updated,
            ChangeType::Deleted,
        ],
        notification_url: format!("{hook}/hooks/graph?org=1"),
        lifecycle_notification_url: Some(format!("{hook}/hooks/graph-lifecycle")),
        client_state: state.clone(),
        lifetime,
    }
}

#[tokio::test]
async fn a_graph_subscription_is_validated_notifies_with_its_client_state_and_is_renewed_and_deleted()
 {
    let w = start().await;
    let (token, hook, mut rx, push) = graph_push(&w).await;
    let state = new_client_state();
    let sub = push
        .create_subscription(
            &token,
            &graph_subscription(
                &hook,
                "me/mailFolders('inbox')/messages",
                &state,
                Duration::from_secs(30 * 24 * 3600),
            ),
            sandbox_now(),
        )
        .await
        .expect("created after the validation handshake");
    // Capped at 4,230 minutes.
    let max = sandbox_now() + jiff::SignedDuration::from_mins(4230);
    assert!(sub.expires_at <= max, "{} > {max}", sub.expires_at);

    let ids = inject(&w, MS_USER, "Re: Senior Rust role").await;
    let Delivery::Graph(notes) = next(&mut rx).await else {
        panic!("a Graph notification")
    };
    assert!(!notes.is_empty());
    for n in &notes {
        assert_eq!(n.subscription_id, sub.id);
        assert!(n.client_state_matches(&state));
        assert!(!n.client_state_matches(&new_client_state()));
        assert!(
            matches!(
                &n.kind,
                NotificationKind::Change {
                    change_type: ChangeType::Created,
                    ..
                }
            ),
            "{n:?}"
        );
        // The subscription asked for immutable ids: the ones MailReader lists and fetches.
        if let NotificationKind::Change { resource_id, .. } = &n.kind {
            assert_eq!(resource_id.as_deref(), ids["immutable_id"].as_str());
        }
    }

    w.control(
        Method::POST,
        &format!("/_sandbox/push/subscriptions/{}/lifecycle", sub.id),
        Some(json!({"event": "missed"})),
    )
    .await;
    let Delivery::Graph(notes) = next(&mut rx).await else {
        panic!("a lifecycle notification")
    };
    assert_eq!(
        notes[0].kind,
        NotificationKind::Lifecycle(LifecycleEvent::Missed)
    );
    assert!(notes[0].client_state_matches(&state));

    let renewed = push
        .renew_subscription(&token, &sub.id, Duration::from_secs(3600), sandbox_now())
        .await
        .unwrap();
    assert_eq!(renewed.id, sub.id);
    assert!(renewed.expires_at < sub.expires_at);

    push.delete_subscription(&token, &sub.id).await.unwrap();
    let err = push
        .renew_subscription(&token, &sub.id, Duration::from_secs(3600), sandbox_now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::SubscriptionGone { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_subscription_whose_endpoint_fails_the_handshake_is_not_created() {
    let w = start().await;
    settings(&w, json!({"graph_validation_timeout_ms": 2000})).await;
    let token = token_for(&w, Provider::Microsoft, MS_USER).await;
    let push = PushClient::new(
        Provider::Microsoft,
        w.endpoints(),
        w.http(),
        PushConfig::default(),
    );
    let err = push
        .create_subscription(
            &token,
            &NewSubscription {
                resource: "me/messages".into(),
                change_types: vec![ChangeType::Created],
                // Nothing listens here.
                notification_url: "http://127.0.0.1:9/hooks/graph".into(),
                lifecycle_notification_url: None,
                client_state: new_client_state(),
                lifetime: Duration::from_secs(3600),
            },
            sandbox_now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Misconfigured {
                what: ConfigProblem::NotificationUrl,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.user_message().contains("webhook address"),
        "{}",
        err.user_message()
    );
}

#[tokio::test]
async fn a_gmail_watch_pushes_a_signed_notice_that_verifies_against_the_sandbox_keys() {
    let w = start().await;
    settings(
        &w,
        json!({"push_retry_initial_ms": 20, "push_retry_max_ms": 100}),
    )
    .await;
    let token = token_for(&w, Provider::Google, GOOGLE_USER).await;
    let (hook, mut rx) = webhook().await;
    let endpoint = format!("{hook}/hooks/gmail");
    w.control(
        Method::POST,
        "/_sandbox/push/topics",
        Some(json!({"name": "projects/p/topics/gmail", "push_endpoint": endpoint})),
    )
    .await;
    let push = PushClient::new(
        Provider::Google,
        w.endpoints(),
        w.http(),
        PushConfig::default(),
    );
    let watch = push
        .gmail_watch(&token, "projects/p/topics/gmail", &["INBOX"])
        .await
        .unwrap();
    assert!(watch.expires_at > sandbox_now());

    let _ = inject(&w, GOOGLE_USER, "Re: interview").await;
    let Delivery::Gmail(auth, notice) = next(&mut rx).await else {
        panic!("a Pub/Sub push")
    };
    assert_eq!(notice.email_address, GOOGLE_USER);
    assert!(notice.history_id.parse::<u64>().unwrap() > watch.history_id.parse::<u64>().unwrap());

    let mut config = PubSubAuthConfig::google(endpoint.clone());
    config.certs_url = format!("{}/oauth2/v3/certs", w.base);
    config.service_account = Some("gmail-push@p.iam.gserviceaccount.com".into());
    let verifier = PubSubVerifier::new(config, w.http());
    verifier.refresh_keys().await.unwrap();
    let claims = verifier
        .verify_cached(auth.as_deref())
        .expect("the push token verifies");
    assert_eq!(
        claims.email.as_deref(),
        Some("gmail-push@p.iam.gserviceaccount.com")
    );
    // The same token is refused at an endpoint with another audience.
    let other = PubSubVerifier::new(
        PubSubAuthConfig {
            certs_url: format!("{}/oauth2/v3/certs", w.base),
            ..PubSubAuthConfig::google("https://elsewhere.example/hooks/gmail")
        },
        w.http(),
    );
    assert!(other.verify(auth.as_deref()).await.is_err());

    push.gmail_stop(&token).await.unwrap();
}

#[tokio::test]
async fn a_paced_graph_reader_stays_under_the_mailbox_concurrency_limit() {
    let w = start().await;
    settings(&w, json!({"quotas": true})).await;
    let token = token_for(&w, Provider::Microsoft, MS_USER).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{MS_USER}/generate"),
        Some(json!({"n": 30, "seed": 7, "start": "2026-01-01", "end": "2026-11-01"})),
    )
    .await;
    w.control(Method::DELETE, "/_sandbox/counters", None).await;
    let pacer = Pacer::new(PacingConfig::default()).unwrap();
    let reader = MailReader::new(Provider::Microsoft, w.endpoints(), w.http())
        .with_pacer(pacer.clone(), PaceKey::new(MS_CLIENT_ID, MS_USER));
    let page = reader
        .list_page(&token, None, "2025-01-01T00:00:00Z".parse().unwrap(), 100)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for m in page.items {
        let (r, t) = (reader.clone(), token.clone());
        tasks.push(tokio::spawn(async move { r.fetch_raw(&t, &m.id).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("fetched");
    }
    let counters = w.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(
        counters["providers"]["graph"]["responses_429"], 0,
        "{counters}"
    );
    assert_eq!(pacer.stats(hirewire_providers::Service::Graph).throttled, 0);
}

#[tokio::test]
async fn a_paced_gmail_reader_stays_under_the_per_user_quota() {
    let w = start().await;
    // Sandbox: 100 units per second per user, a bucket of 100. Pacer: a bucket of 50 refilled at 80 per second.
    settings(&w, json!({"gmail_units_per_user_per_second": 100})).await;
    let token = token_for(&w, Provider::Google, GOOGLE_USER).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{GOOGLE_USER}/generate"),
        Some(json!({"n": 40, "seed": 7, "start": "2026-01-01", "end": "2026-11-01"})),
    )
    .await;
    w.control(Method::DELETE, "/_sandbox/counters", None).await;
    let mut config = PacingConfig::unlimited();
    config.gmail = ServicePacing {
        max_concurrent_per_mailbox: None,
        per_mailbox: Some(RateLimit {
            units: 130,
            per: Duration::from_secs(1),
            burst: 50,
        }),
        per_app: None,
    };
    let pacer = Pacer::new(config).unwrap();
    let reader = MailReader::new(Provider::Google, w.endpoints(), w.http())
        .with_pacer(pacer.clone(), PaceKey::new(GOOGLE_CLIENT_ID, GOOGLE_USER));
    let page = reader
        .list_page(&token, None, "2025-01-01T00:00:00Z".parse().unwrap(), 100)
        .await
        .unwrap();
    let ids: Vec<String> = page.items.into_iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 40);
    // Batches sized to the bucket: 50 units / 5 per get = 10 per batch.
    assert_eq!(pacer.gmail_batch_size(50), 10);
    let fetched = reader.fetch_raw_many(&token, &ids).await.unwrap();
    assert!(fetched.iter().all(Result::is_ok));
    let counters = w.control(Method::GET, "/_sandbox/counters", None).await;
    let gmail = &counters["providers"]["gmail"];
    assert_eq!(gmail["responses_429"], 0, "{counters}");
    assert_eq!(gmail["quota_refusals"], 0, "{counters}");
    let stats = pacer.stats(hirewire_providers::Service::Gmail);
    assert_eq!(stats.units, 5 + 40 * 5, "one list and forty gets");
    assert_eq!(stats.throttled, 0);
}

#[tokio::test]
async fn a_throttled_mailbox_waits_out_its_retry_after_while_another_mailbox_keeps_reading() {
    let w = start().await;
    let adele = token_for(&w, Provider::Microsoft, MS_USER).await;
    let ben = token_for(&w, Provider::Microsoft, "ben@acme.example").await;
    w.arm_fault(json!({"endpoint": "graph.*", "user": MS_USER, "fault": {"kind": "throttle", "retry_after_secs": 1}, "count": 1}))
        .await;
    w.control(Method::DELETE, "/_sandbox/counters", None).await;
    let pacer = Pacer::new(PacingConfig::default()).unwrap();
    let reader = |user: &str| {
        MailReader::new(Provider::Microsoft, w.endpoints(), w.http())
            .with_pacer(pacer.clone(), PaceKey::new(MS_CLIENT_ID, user))
    };
    let since: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    let (a, b) = (reader(MS_USER), reader("ben@acme.example"));
    let started = std::time::Instant::now();
    let (ra, rb) = tokio::join!(
        a.list_page(&adele, None, since, 10),
        b.list_page(&ben, None, since, 10)
    );
    ra.expect("adele's read succeeds after the pause");
    rb.expect("ben's read is not held up");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "adele waited for Retry-After"
    );
    let adele_pace = pacer.mailbox(
        &PaceKey::new(MS_CLIENT_ID, MS_USER),
        hirewire_providers::Service::Graph,
    );
    let ben_pace = pacer.mailbox(
        &PaceKey::new(MS_CLIENT_ID, "ben@acme.example"),
        hirewire_providers::Service::Graph,
    );
    assert_eq!((adele_pace.requests, adele_pace.throttled), (2, 1));
    assert_eq!((ben_pace.requests, ben_pace.throttled), (1, 0));
    let counters = w.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(
        counters["providers"]["graph"]["responses_429"], 1,
        "{counters}"
    );
}

#[tokio::test]
async fn reauthorization_and_removal_lifecycle_events_reach_the_lifecycle_endpoint() {
    let w = start().await;
    let (token, hook, mut rx, push) = graph_push(&w).await;
    let state = new_client_state();
    let sub = push
        .create_subscription(
            &token,
            &graph_subscription(&hook, "me/messages", &state, Duration::from_secs(3600)),
            sandbox_now(),
        )
        .await
        .unwrap();
    for (event, expected) in [
        (
            "reauthorizationRequired",
            LifecycleEvent::ReauthorizationRequired,
        ),
        ("subscriptionRemoved", LifecycleEvent::SubscriptionRemoved),
    ] {
        w.control(
            Method::POST,
            &format!("/_sandbox/push/subscriptions/{}/lifecycle", sub.id),
            Some(json!({ "event": event })),
        )
        .await;
        let Delivery::Graph(notes) = next(&mut rx).await else {
            panic!("a lifecycle notification")
        };
        assert_eq!(notes[0].subscription_id, sub.id);
        assert!(notes[0].client_state_matches(&state));
        assert_eq!(notes[0].kind, NotificationKind::Lifecycle(expected));
    }
    // A removed subscription cannot be renewed: the renewal job creates a new one.
    let err = push
        .renew_subscription(&token, &sub.id, Duration::from_secs(3600), sandbox_now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::SubscriptionGone { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_documented_2026_gmail_limits_keep_a_backfill_inside_the_sandboxs_2026_quota() {
    let w = start().await;
    settings(&w, json!({"quotas": true, "gmail_quota_model": "2026"})).await;
    let token = token_for(&w, Provider::Google, GOOGLE_USER).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{GOOGLE_USER}/generate"),
        Some(json!({"n": 12, "seed": 3, "start": "2026-01-01", "end": "2026-11-01"})),
    )
    .await;
    w.control(Method::DELETE, "/_sandbox/counters", None).await;
    let pacer = Pacer::new(PacingConfig::documented(
        hirewire_providers::GmailCostModel::Y2026,
    ))
    .unwrap();
    let key = PaceKey::new(GOOGLE_CLIENT_ID, GOOGLE_USER);
    let reader = MailReader::new(Provider::Google, w.endpoints(), w.http())
        .with_pacer(pacer.clone(), key.clone());
    let page = reader
        .list_page(&token, None, "2025-01-01T00:00:00Z".parse().unwrap(), 100)
        .await
        .unwrap();
    let ids: Vec<String> = page.items.into_iter().map(|m| m.id).collect();
    let fetched = reader.fetch_raw_many(&token, &ids).await.unwrap();
    assert_eq!(fetched.iter().filter(|r| r.is_ok()).count(), 12);
    let counters = w.control(Method::GET, "/_sandbox/counters", None).await;
    let gmail = &counters["providers"]["gmail"];
    assert_eq!(gmail["responses_429"], 0, "{counters}");
    // One list (5 units) and twelve gets at 20 units, in batches of five (the 100-unit bucket).
    let stats = pacer.stats(hirewire_providers::Service::Gmail);
    assert_eq!((stats.units, stats.requests), (5 + 12 * 20, 1 + 3));
    // The ETA for the next 100,000 messages comes from the same quota: hours, not minutes.
    let eta = pacer
        .eta(
            &key,
            hirewire_providers::Service::Gmail,
            100_000,
            pacer.backfill_cost_per_message(hirewire_providers::Service::Gmail),
        )
        .unwrap();
    assert!(eta > Duration::from_secs(5 * 3600), "{eta:?}");
}
