//! Push clients against a small local server holding the golden fixtures (`fixtures/golden/`, PROVIDERS.md §3.11
//! and §6.6): what hirewire sends to create, renew and delete Graph subscriptions and to start and stop a Gmail
//! watch, how it reads what comes back, and how webhook deliveries are decoded and checked: Graph notifications
//! with their `clientState`, Pub/Sub pushes with their RS256 bearer JWT verified against a JWKS.
//!
//! `tests/data/pubsub-test-key.pem` is a throwaway RSA key made for these tests; it signs nothing real.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::no_retry_http;
use hirewire_providers::push::{
    ChangeType, LifecycleEvent, NewSubscription, NotificationKind, PubSubAuthConfig,
    PubSubVerifier, PushError, client_state_matches, decode_pubsub_push, new_client_state,
    parse_graph_notifications,
};
use hirewire_providers::{Endpoints, Provider, ProviderError, PushClient, PushConfig, Secret};
use jiff::Timestamp;
use serde_json::{Value, json};

fn golden(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/golden")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Answer = Arc<dyn Fn(&Seen) -> (u16, Vec<u8>) + Send + Sync>;

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(answer: Answer) -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                let s = Seen {
                    method,
                    path: uri.path().to_owned(),
                    auth: headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: body.to_vec(),
                };
                log.lock().unwrap().push(s.clone());
                let (status, body) = answer(&s);
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, seen }
}

fn push_client(provider: Provider, server: &Server, max_lifetime: Duration) -> PushClient {
    PushClient::new(
        provider,
        Endpoints::all_at(&server.base),
        no_retry_http(),
        PushConfig {
            graph_max_lifetime: max_lifetime,
        },
    )
}

fn now() -> Timestamp {
    "2025-03-01T11:00:00Z".parse().unwrap()
}

fn new_subscription(state: &Secret, lifetime: Duration) -> NewSubscription {
    NewSubscription {
        resource: "/me/mailFolders('inbox')/messages".into(),
        change_types: vec![
            ChangeType::Created,
            ChangeType::Updated,
            ChangeType::Deleted,
        ],
        notification_url: "https://app.example/hooks/graph?org=7".into(),
        lifecycle_notification_url: Some("https://app.example/hooks/graph-lifecycle".into()),
        client_state: state.clone(),
        lifetime,
    }
}

// ---- Graph subscriptions ----

#[tokio::test]
async fn a_graph_subscription_is_created_with_the_client_state_and_an_expiry_capped_at_the_maximum_lifetime()
 {
    let server = serve(Arc::new(|_| (201, golden("microsoft/subscription.json")))).await;
    let client = push_client(Provider::Microsoft, &server, Duration::from_secs(4230 * 60));
    let state = new_client_state();
    let sub = client
        .create_subscription(
            &Secret::new("at"),
            &new_subscription(&state, Duration::from_secs(30 * 24 * 3600)),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(sub.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
    assert_eq!(sub.resource, "/me/mailFolders('inbox')/messages");
    assert_eq!(sub.expires_at, "2025-03-04T11:00:00Z".parse().unwrap());

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::POST, "/v1.0/subscriptions")
    );
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer at"));
    let body = seen[0].json();
    assert_eq!(body["changeType"], "created,updated,deleted");
    assert_eq!(body["resource"], "/me/mailFolders('inbox')/messages");
    assert_eq!(
        body["notificationUrl"],
        "https://app.example/hooks/graph?org=7"
    );
    assert_eq!(
        body["lifecycleNotificationUrl"],
        "https://app.example/hooks/graph-lifecycle"
    );
    assert_eq!(body["clientState"], state.expose());
    // 30 days asked, 4,230 minutes allowed: now + 70.5 h.
    assert_eq!(body["expirationDateTime"], "2025-03-04T09:30:00Z");
}

#[tokio::test]
async fn a_shorter_lifetime_than_the_maximum_is_asked_as_is_and_renewal_patches_only_the_expiry() {
    let server = serve(Arc::new(|_| (200, golden("microsoft/subscription.json")))).await;
    let client = push_client(
        Provider::Microsoft,
        &server,
        Duration::from_secs(10_080 * 60),
    );
    let sub = client
        .renew_subscription(
            &Secret::new("at"),
            "7f105c7d",
            Duration::from_secs(3600),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(sub.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
    let seen = server.seen();
    assert_eq!(seen[0].method, Method::PATCH);
    assert_eq!(seen[0].path, "/v1.0/subscriptions/7f105c7d");
    assert_eq!(
        seen[0].json(),
        json!({"expirationDateTime": "2025-03-01T12:00:00Z"})
    );
}

#[tokio::test]
async fn renewing_a_subscription_graph_no_longer_has_says_to_create_a_new_one() {
    let server = serve(Arc::new(|_| (404, golden("microsoft/graph-error.json")))).await;
    let client = push_client(Provider::Microsoft, &server, Duration::from_secs(4230 * 60));
    let err = client
        .renew_subscription(&Secret::new("at"), "gone", Duration::from_secs(3600), now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::SubscriptionGone {
                provider: Provider::Microsoft
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn deleting_a_subscription_succeeds_on_204_and_on_one_already_gone() {
    for status in [204u16, 404] {
        let server = serve(Arc::new(move |_| (status, Vec::new()))).await;
        let client = push_client(Provider::Microsoft, &server, Duration::from_secs(4230 * 60));
        client
            .delete_subscription(&Secret::new("at"), "abc")
            .await
            .unwrap();
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.clone(), seen[0].path.as_str()),
            (Method::DELETE, "/v1.0/subscriptions/abc")
        );
    }
}

#[tokio::test]
async fn a_throttled_subscription_call_is_a_typed_throttling_error() {
    let server = serve(Arc::new(|_| {
        (429, golden("microsoft/graph-throttled.json"))
    }))
    .await;
    let client = push_client(Provider::Microsoft, &server, Duration::from_secs(4230 * 60));
    let err = client
        .create_subscription(
            &Secret::new("at"),
            &new_subscription(&new_client_state(), Duration::from_secs(60)),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
}

#[test]
fn a_change_notification_decodes_to_its_subscription_change_and_message() {
    let n = parse_graph_notifications(&golden("microsoft/change-notification.json")).unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].subscription_id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
    assert_eq!(
        n[0].tenant_id.as_deref(),
        Some("84bd8158-6d4d-4958-8b9f-9d6445542f95")
    );
    assert_eq!(
        n[0].subscription_expires_at,
        Some("2025-03-04T11:00:00Z".parse().unwrap())
    );
    assert_eq!(
        n[0].kind,
        NotificationKind::Change {
            change_type: ChangeType::Created,
            resource: "Users/{userId}/Messages/{messageId}".into(),
            resource_id: Some("{messageId}".into()),
        }
    );
    assert!(n[0].client_state_matches(&Secret::new("<secret>")));
    assert!(!n[0].client_state_matches(&Secret::new("<other>")));
}

#[test]
fn a_lifecycle_notification_decodes_to_its_event() {
    let n = parse_graph_notifications(&golden("microsoft/lifecycle-notification.json")).unwrap();
    assert_eq!(
        n[0].kind,
        NotificationKind::Lifecycle(LifecycleEvent::ReauthorizationRequired)
    );
    assert!(n[0].client_state_matches(&Secret::new("<secret>")));
    for (event, expected) in [
        ("subscriptionRemoved", LifecycleEvent::SubscriptionRemoved),
        ("missed", LifecycleEvent::Missed),
        ("somethingNew", LifecycleEvent::Other("somethingNew".into())),
    ] {
        let body =
            json!({"value":[{"subscriptionId":"s","clientState":"c","lifecycleEvent": event}]});
        let n = parse_graph_notifications(body.to_string().as_bytes()).unwrap();
        assert_eq!(n[0].kind, NotificationKind::Lifecycle(expected));
    }
}

#[test]
fn malformed_notifications_and_missing_client_states_are_refused() {
    assert!(matches!(
        parse_graph_notifications(b"not json"),
        Err(PushError::Malformed(_))
    ));
    assert!(matches!(
        parse_graph_notifications(br#"{"value":[{"subscriptionId":"s"}]}"#),
        Err(PushError::Malformed(_))
    ));
    let n =
        parse_graph_notifications(br#"{"value":[{"subscriptionId":"s","changeType":"updated"}]}"#)
            .unwrap();
    assert!(!n[0].client_state_matches(&Secret::new("")));
    assert!(!client_state_matches(&Secret::new("x"), None));
}

// ---- Gmail watch ----

#[tokio::test]
async fn gmail_watch_names_the_topic_and_labels_and_returns_the_history_id_and_expiry() {
    let server = serve(Arc::new(|_| (200, golden("google/gmail-watch.json")))).await;
    let client = push_client(Provider::Google, &server, Duration::ZERO);
    let w = client
        .gmail_watch(
            &Secret::new("at"),
            "projects/p/topics/gmail",
            &["INBOX", "SENT"],
        )
        .await
        .unwrap();
    assert_eq!(w.history_id, "1234567");
    assert_eq!(
        w.expires_at,
        Timestamp::from_millisecond(1_741_900_000_000).unwrap()
    );
    client.gmail_stop(&Secret::new("at")).await.unwrap();
    let seen = server.seen();
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::POST, "/gmail/v1/users/me/watch")
    );
    assert_eq!(
        seen[0].json(),
        json!({"topicName":"projects/p/topics/gmail","labelIds":["INBOX","SENT"],"labelFilterBehavior":"include"})
    );
    assert_eq!(
        (seen[1].method.clone(), seen[1].path.as_str()),
        (Method::POST, "/gmail/v1/users/me/stop")
    );
}

#[tokio::test]
async fn each_push_call_belongs_to_its_provider() {
    let server = serve(Arc::new(|_| (200, Vec::new()))).await;
    let graph = push_client(Provider::Microsoft, &server, Duration::ZERO);
    let err = graph.gmail_stop(&Secret::new("at")).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotSupported { .. }));
    assert!(server.seen().is_empty());
}

// ---- Pub/Sub push ----

#[test]
fn a_pubsub_push_decodes_to_the_mailbox_and_history_id() {
    let p = decode_pubsub_push(&golden("google/pubsub-push.json")).unwrap();
    let data: Value = serde_json::from_slice(&golden("google/pubsub-push-data.json")).unwrap();
    assert_eq!(p.email_address, data["emailAddress"]);
    assert_eq!(p.history_id, data["historyId"]);
    assert_eq!(p.message_id, "2070443601311540");
    assert_eq!(
        p.publish_time,
        Some("2025-03-01T19:13:55.749Z".parse().unwrap())
    );
    assert_eq!(
        p.subscription,
        "projects/myproject/subscriptions/mysubscription"
    );
    // A numeric historyId and an upper-case address are read too.
    let data = STANDARD.encode(br#"{"emailAddress":"R@Corp.Example","historyId":42}"#);
    let body = json!({"message":{"data": data,"messageId":"1"},"subscription":"s"});
    let p = decode_pubsub_push(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        (p.email_address.as_str(), p.history_id.as_str()),
        ("r@corp.example", "42")
    );
    assert!(matches!(
        decode_pubsub_push(br#"{"message":{"data":"%%%"}}"#),
        Err(PushError::Malformed(_))
    ));
}

const AUDIENCE: &str = "https://app.example/hooks/gmail";

fn test_key_der() -> Vec<u8> {
    let pem = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pubsub-test-key.pem"),
    )
    .unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

fn test_key_modulus() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pubsub-test-key.n"),
    )
    .unwrap()
    .trim()
    .to_owned()
}

/// The golden JWKS with its key replaced by the test key, under `kid`.
fn jwks(kid: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&golden("google/oauth2-certs.json")).unwrap();
    v["keys"][0]["kid"] = json!(kid);
    v["keys"][0]["n"] = json!(test_key_modulus());
    serde_json::to_vec(&v).unwrap()
}

/// The golden claims, adjusted by `edit`, signed RS256 with the test key under `kid`.
fn token(kid: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims: Value =
        serde_json::from_slice(&golden("google/pubsub-push-token-claims.json")).unwrap();
    edit(&mut claims);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&test_key_der()),
    )
    .unwrap()
}

struct Keys {
    server: Server,
    fetches: Arc<AtomicUsize>,
    kid: Arc<Mutex<String>>,
}

async fn key_server() -> Keys {
    let fetches = Arc::new(AtomicUsize::new(0));
    let kid = Arc::new(Mutex::new("k1".to_owned()));
    let (f, k) = (fetches.clone(), kid.clone());
    let server = serve(Arc::new(move |_| {
        f.fetch_add(1, Ordering::SeqCst);
        (200, jwks(&k.lock().unwrap()))
    }))
    .await;
    Keys {
        server,
        fetches,
        kid,
    }
}

/// A verifier whose clock reads `2025-03-13T21:06:40Z` (the golden token's `exp`) plus `skew`.
fn verifier(keys: &Keys, skew: i64, elapsed: Arc<Mutex<Duration>>) -> PubSubVerifier {
    let mut config = PubSubAuthConfig::google(AUDIENCE);
    config.certs_url = format!("{}/oauth2/v3/certs", keys.server.base);
    config.leeway = Duration::from_secs(30);
    let start = Instant::now();
    PubSubVerifier::new(config, no_retry_http()).with_clock(
        Arc::new(move || Timestamp::from_second(1_741_900_000 + skew).unwrap()),
        Arc::new(move || start + *elapsed.lock().unwrap()),
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn a_google_signed_push_token_for_our_audience_is_accepted_and_its_keys_are_cached() {
    let keys = key_server().await;
    let v = verifier(&keys, -60, Arc::default());
    let t = token("k1", |_| {});
    let claims = v.verify(Some(&bearer(&t))).await.unwrap();
    assert_eq!(
        claims.email.as_deref(),
        Some("gmail-push@myproject.iam.gserviceaccount.com")
    );
    assert_eq!(
        claims.expires_at,
        Timestamp::from_second(1_741_900_000).unwrap()
    );
    // Both spellings of Google's issuer.
    let t2 = token("k1", |c| c["iss"] = json!("accounts.google.com"));
    v.verify(Some(&bearer(&t2))).await.unwrap();
    v.verify_cached(Some(&bearer(&t))).unwrap();
    assert_eq!(
        keys.fetches.load(Ordering::SeqCst),
        1,
        "the keys were fetched once"
    );
    assert_eq!(keys.server.seen()[0].path, "/oauth2/v3/certs");
}

#[tokio::test]
async fn push_tokens_for_another_audience_issuer_or_signer_or_expired_are_refused() {
    let keys = key_server().await;
    let v = verifier(&keys, 0, Arc::default());
    let check = |t: String| {
        let v = v.clone();
        async move { v.verify(Some(&bearer(&t))).await }
    };
    assert!(matches!(
        check(token("k1", |c| c["aud"] = json!("https://elsewhere.example/hook"))).await,
        Err(PushError::WrongClaims("audience"))
    ));
    assert!(matches!(
        check(token("k1", |c| c["iss"] = json!("https://evil.example"))).await,
        Err(PushError::WrongClaims("issuer"))
    ));
    // Within the 30 s leeway, then beyond it.
    assert!(
        check(token("k1", |c| c["exp"] = json!(1_741_900_000 - 20)))
            .await
            .is_ok()
    );
    assert!(matches!(
        check(token("k1", |c| c["exp"] = json!(1_741_900_000 - 31))).await,
        Err(PushError::WrongClaims("expired"))
    ));
    // A tampered payload breaks the signature.
    let good = token("k1", |_| {});
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(br#"{"aud":"https://app.example/hooks/gmail","iss":"accounts.google.com","exp":1741900000,"email":"attacker@example.com"}"#);
    parts[1] = &forged;
    assert!(matches!(
        check(parts.join(".")).await,
        Err(PushError::InvalidToken(_))
    ));
    // An HS256 token (e.g. signed with the public key as a secret) is refused before any key is used.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &json!({"aud": AUDIENCE, "iss": "accounts.google.com", "exp": 1_741_900_000}),
        &jsonwebtoken::EncodingKey::from_secret(test_key_modulus().as_bytes()),
    )
    .unwrap();
    assert!(matches!(check(hs).await, Err(PushError::InvalidToken(_))));
    assert!(matches!(v.verify(None).await, Err(PushError::MissingToken)));
    assert!(matches!(
        v.verify(Some("Basic abc")).await,
        Err(PushError::MissingToken)
    ));
}

#[tokio::test]
async fn a_configured_service_account_must_be_the_verified_signer() {
    let keys = key_server().await;
    let mut config = PubSubAuthConfig::google(AUDIENCE);
    config.certs_url = format!("{}/oauth2/v3/certs", keys.server.base);
    config.service_account = Some("gmail-push@myproject.iam.gserviceaccount.com".into());
    let v = PubSubVerifier::new(config, no_retry_http()).with_clock(
        Arc::new(|| Timestamp::from_second(1_741_899_000).unwrap()),
        Arc::new(Instant::now),
    );
    assert!(v.verify(Some(&bearer(&token("k1", |_| {})))).await.is_ok());
    assert!(matches!(
        v.verify(Some(&bearer(&token("k1", |c| c["email"] =
            json!("someone@else.iam.gserviceaccount.com")))))
            .await,
        Err(PushError::WrongClaims("service account"))
    ));
    assert!(matches!(
        v.verify(Some(&bearer(
            &token("k1", |c| c["email_verified"] = json!(false))
        )))
        .await,
        Err(PushError::WrongClaims("service account"))
    ));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_junk_key_ids_do_not_fetch_in_a_loop() {
    let keys = key_server().await;
    let elapsed = Arc::new(Mutex::new(Duration::ZERO));
    let v = verifier(&keys, 0, elapsed.clone());
    v.verify(Some(&bearer(&token("k1", |_| {})))).await.unwrap();
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);

    // Google rotates to k2; a minute later a push signed with k2 arrives.
    *keys.kid.lock().unwrap() = "k2".into();
    *elapsed.lock().unwrap() = Duration::from_secs(61);
    v.verify(Some(&bearer(&token("k2", |_| {})))).await.unwrap();
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);

    // Unknown key ids right after: refused without fetching again.
    for _ in 0..3 {
        assert!(matches!(
            v.verify(Some(&bearer(&token("junk", |_| {})))).await,
            Err(PushError::UnknownKey)
        ));
    }
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);
    assert!(matches!(
        v.verify_cached(Some(&bearer(&token("k1", |_| {})))),
        Err(PushError::UnknownKey)
    ));
}

#[tokio::test]
async fn when_the_keys_cannot_be_fetched_the_push_is_refused_as_retryable() {
    let server = serve(Arc::new(|_| (503, Vec::new()))).await;
    let keys = Keys {
        server,
        fetches: Arc::default(),
        kid: Arc::default(),
    };
    let v = verifier(&keys, 0, Arc::default());
    assert!(matches!(
        v.verify(Some(&bearer(&token("k1", |_| {})))).await,
        Err(PushError::Keys(_))
    ));
}

#[tokio::test]
async fn a_key_server_that_does_not_answer_cannot_hold_the_webhook_beyond_the_fetch_timeout() {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        "never"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = PubSubAuthConfig::google(AUDIENCE);
    config.certs_url = format!("{base}/oauth2/v3/certs");
    config.fetch_timeout = Duration::from_millis(100);
    let v = PubSubVerifier::new(config, no_retry_http());
    assert!(matches!(
        v.verify(Some(&bearer(&token("k1", |_| {})))).await,
        Err(PushError::Keys(ProviderError::Transient(_)))
    ));
}
