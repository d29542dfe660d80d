//! The PROVIDERS.md example bodies in `fixtures/golden/` (the same files the sandbox is held to), served by a
//! tiny local HTTP server and read through the real client path: `oauth2` token parsing, the HTTP client and
//! error classification. Every file in the folder must be covered here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use hirewire_providers::{
    AppCredentials, Attendee, Busy, BusyStatus, CalendarClient, Capability, ConfigProblem,
    Endpoints, HttpClient, HttpConfig, IdentityClient, Location, MailReader, NewEvent,
    PkceVerifier, Provider, ProviderError, ReauthReason, RetryPolicy, Revocation, Secret, TokenSet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const COVERED: &[&str] = &[
    "google/api-error-insufficient-scope.json",
    "google/api-error-not-found.json",
    "google/api-error-unauthenticated.json",
    "google/calendar-error-duplicate.json",
    "google/calendar-error-full-sync-required.json",
    "google/calendar-event.json",
    "google/calendar-events-list.json",
    "google/calendar-freebusy.json",
    "google/gmail-history.json",
    "google/gmail-message-full.json",
    "google/gmail-messages-list.json",
    "google/gmail-profile.json",
    // Push (PROVIDERS.md §3.11, §6.6) is read in tests/push.rs: the watch answer, the Pub/Sub delivery and its
    // decoded data, the push token's claims (re-signed with a test key) and the JWKS shape.
    "google/gmail-watch.json",
    "google/oauth2-certs.json",
    "google/pubsub-push-data.json",
    "google/pubsub-push-token-claims.json",
    "google/pubsub-push.json",
    // Sending (issue 8): decoded by the send adapter's unit tests (src/send.rs) and exercised against the
    // sandbox in tests/send.rs.
    "google/gmail-draft.json",
    "google/gmail-send.json",
    "google/gmail-send-error-no-recipient.json",
    // Decoded by the Graph batch unit test in src/mail.rs.
    "microsoft/batch-response.json",
    "microsoft/send-error-invalid-mime.json",
    "microsoft/upload-session.json",
    "google/refresh-success.json",
    "google/revoke-error.json",
    "google/token-error-bad-code.json",
    "google/token-error-invalid-client.json",
    "google/token-error-revoked.json",
    "google/token-success.json",
    "google/tokeninfo.json",
    "microsoft/event-created.json",
    "microsoft/get-schedule.json",
    // Subscriptions and notifications: tests/push.rs.
    "microsoft/change-notification.json",
    "microsoft/lifecycle-notification.json",
    "microsoft/subscription.json",
    "microsoft/graph-error.json",
    "microsoft/graph-throttled.json",
    "microsoft/me.json",
    "microsoft/message.json",
    "microsoft/messages-delta-removed.json",
    "microsoft/token-error-consent-required.json",
    "microsoft/token-success.json",
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden")
}

/// Serves `fixture` with `status` to every request; returns the base URL.
async fn serve(status: u16, fixture: &str) -> String {
    let body = std::fs::read(golden_dir().join(fixture)).expect("fixture exists");
    serve_body(status, move |_| body.clone()).await
}

/// Serves the body `make(base URL)` with `status` to every request; returns the base URL.
async fn serve_body(status: u16, make: impl FnOnce(&str) -> Vec<u8>) -> String {
    serve_sequence(move |base| vec![(status, make(base))]).await
}

/// Serves the answers `make(base URL)` in order, one per request, the last one again to every later request;
/// returns the base URL.
async fn serve_sequence(make: impl FnOnce(&str) -> Vec<(u16, Vec<u8>)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = make(&format!("http://{addr}"));
    assert!(!answers.is_empty());
    tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (status, body) = answers[served.min(answers.len() - 1)].clone();
            served += 1;
            tokio::spawn(async move {
                // Read the request head and its body (Content-Length), then answer and close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}")
}

fn no_retry_http() -> HttpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpClient::new(HttpConfig {
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap()
}

fn reader(provider: Provider, base: &str) -> MailReader {
    MailReader::new(provider, Endpoints::all_at(base), no_retry_http())
}

fn client(provider: Provider, base: &str) -> IdentityClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = HttpClient::new(HttpConfig {
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap();
    IdentityClient::new(
        provider,
        Endpoints::all_at(base),
        AppCredentials {
            client_id: "client".into(),
            client_secret: Secret::new("secret"),
            tenant: None,
        },
        http,
    )
    .with_clock(Arc::new(|| "2026-11-27T09:00:00Z".parse().unwrap()))
}

fn tokens() -> TokenSet {
    TokenSet {
        access_token: Secret::new("at"),
        refresh_token: Some(Secret::new("rt")),
        expires_at: "2026-11-27T10:00:00Z".parse().unwrap(),
        scopes: Vec::new(),
        id_claims: None,
    }
}

async fn exchange(
    provider: Provider,
    status: u16,
    fixture: &str,
) -> Result<TokenSet, ProviderError> {
    let c = client(provider, &serve(status, fixture).await);
    c.exchange_code(
        &Secret::new("code"),
        "http://localhost:8080/cb",
        &PkceVerifier::generate(),
    )
    .await
}

async fn refresh(
    provider: Provider,
    status: u16,
    fixture: &str,
) -> Result<TokenSet, ProviderError> {
    let c = client(provider, &serve(status, fixture).await);
    c.refresh(&Secret::new("old-refresh")).await
}

#[test]
fn every_golden_fixture_is_covered_by_these_tests() {
    let mut found = BTreeSet::new();
    for sub in ["google", "microsoft"] {
        for e in std::fs::read_dir(golden_dir().join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                found.insert(format!("{sub}/{name}"));
            }
        }
    }
    let covered: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, covered, "add new fixtures to COVERED and test them");
}

#[tokio::test]
async fn microsoft_token_success_parses_into_normalized_scopes_and_an_expiry() {
    let t = exchange(Provider::Microsoft, 200, "microsoft/token-success.json")
        .await
        .unwrap();
    assert_eq!(
        t.scopes,
        [
            "Calendars.ReadWrite",
            "Mail.ReadWrite",
            "Mail.Send",
            "User.Read",
            "email",
            "openid",
            "profile"
        ]
    );
    assert_eq!(t.expires_at.to_string(), "2026-11-27T09:59:59Z");
    assert_eq!(t.refresh_token.unwrap().expose(), "0.AAAA…");
    assert_eq!(t.access_token.expose(), "eyJ0eXAi…");
    assert_eq!(
        t.id_claims, None,
        "the example id_token is elided, so it has no readable claims"
    );
}

#[tokio::test]
async fn microsoft_consent_required_error_needs_reauthorization_for_consent() {
    let e = refresh(
        Provider::Microsoft,
        400,
        "microsoft/token-error-consent-required.json",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::ConsentRevoked,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn google_token_success_and_refresh_success_parse_and_refresh_keeps_the_old_refresh_token() {
    let t = exchange(Provider::Google, 200, "google/token-success.json")
        .await
        .unwrap();
    assert_eq!(
        t.scopes,
        [
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/userinfo.email",
            "openid"
        ]
    );
    assert_eq!(t.refresh_token.unwrap().expose(), "1//0g…");
    let r = refresh(Provider::Google, 200, "google/refresh-success.json")
        .await
        .unwrap();
    assert_eq!(r.refresh_token.unwrap().expose(), "old-refresh");
    assert_eq!(r.scopes, ["…"]);
}

#[tokio::test]
async fn a_google_first_exchange_without_a_refresh_token_is_an_error() {
    let e = exchange(Provider::Google, 200, "google/refresh-success.json")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::NoRefreshToken,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.user_message()
            .contains("did not give hirewire lasting access")
    );
}

#[tokio::test]
async fn google_token_errors_map_to_what_the_server_must_do() {
    let e = refresh(Provider::Google, 400, "google/token-error-revoked.json")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::ExpiredOrRevoked,
                ..
            }
        ),
        "{e:?}"
    );
    let e = exchange(Provider::Google, 400, "google/token-error-bad-code.json")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::CodeRejected,
                ..
            }
        ),
        "{e:?}"
    );
    let e = exchange(
        Provider::Google,
        401,
        "google/token-error-invalid-client.json",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Misconfigured {
                what: ConfigProblem::ClientSecret,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn google_revoke_of_an_unknown_token_is_already_invalid() {
    let c = client(
        Provider::Google,
        &serve(400, "google/revoke-error.json").await,
    );
    assert_eq!(
        c.revoke(&Secret::new("x")).await.unwrap(),
        Revocation::AlreadyInvalid
    );
}

#[tokio::test]
async fn profile_bodies_give_the_account_address() {
    let ms = client(Provider::Microsoft, &serve(200, "microsoft/me.json").await);
    assert_eq!(
        ms.account_address(Capability::Inbox, &tokens())
            .await
            .unwrap(),
        "AdeleV@contoso.com"
    );
    let g = client(
        Provider::Google,
        &serve(200, "google/gmail-profile.json").await,
    );
    assert_eq!(
        g.account_address(Capability::Inbox, &tokens())
            .await
            .unwrap(),
        "r@corp.com"
    );
    let g = client(Provider::Google, &serve(200, "google/tokeninfo.json").await);
    assert_eq!(
        g.account_address(Capability::Calendar, &tokens())
            .await
            .unwrap(),
        "r@corp.com"
    );
}

#[tokio::test]
async fn api_error_bodies_map_to_typed_errors() {
    let call = |provider, status, fixture: &'static str| async move {
        let c = client(provider, &serve(status, fixture).await);
        c.account_address(Capability::Inbox, &tokens())
            .await
            .unwrap_err()
    };
    let e = call(
        Provider::Google,
        403,
        "google/api-error-insufficient-scope.json",
    )
    .await;
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::MissingPermissions,
                ..
            }
        ),
        "{e:?}"
    );
    let e = call(
        Provider::Google,
        401,
        "google/api-error-unauthenticated.json",
    )
    .await;
    assert!(matches!(e, ProviderError::TokenRejected), "{e:?}");
    let e = call(Provider::Google, 404, "google/api-error-not-found.json").await;
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("Requested entity was not found")),
        "{e:?}"
    );
    let e = call(Provider::Microsoft, 404, "microsoft/graph-error.json").await;
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("not found in the store")),
        "{e:?}"
    );
    let e = call(Provider::Microsoft, 429, "microsoft/graph-throttled.json").await;
    assert!(
        matches!(e, ProviderError::Throttled { retry_after: None }),
        "{e:?}"
    );
}

fn window() -> jiff::Timestamp {
    "2025-01-01T00:00:00Z".parse().unwrap()
}

#[tokio::test]
async fn a_gmail_messages_list_body_is_a_page_of_refs_with_a_next_cursor() {
    let r = reader(
        Provider::Google,
        &serve(200, "google/gmail-messages-list.json").await,
    );
    let page = r
        .list_page(&Secret::new("at"), None, window(), 100)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, "18f2c1a2b3c4d5e6");
    assert_eq!(page.items[0].thread_id.as_deref(), Some("18f2c1a2b3c4d5e6"));
    assert_eq!(
        page.items[0].received_at, None,
        "Gmail listings carry no time"
    );
    assert_eq!(page.next.unwrap().as_str(), "09876543210987654321");
}

#[tokio::test]
async fn a_gmail_history_body_after_a_profile_history_id_gives_added_messages_and_the_next_history_id()
 {
    let token = Secret::new("at");
    let start = reader(
        Provider::Google,
        &serve(200, "google/gmail-profile.json").await,
    )
    .start_incremental(&token)
    .await
    .unwrap();
    let r = reader(
        Provider::Google,
        &serve(200, "google/gmail-history.json").await,
    );
    let c = r.changes(&token, &start).await.unwrap();
    assert_eq!(c.added.len(), 1);
    assert_eq!(c.added[0].id, "18f2…");
    assert_eq!(c.added[0].thread_id.as_deref(), Some("18f2…"));
    assert!(c.removed.is_empty());
    assert_ne!(c.next, start);
    assert!(c.next.as_str().contains("987731"), "{}", c.next.as_str());
}

#[tokio::test]
async fn a_gmail_format_full_body_is_not_taken_for_a_raw_message() {
    // The adapter asks for `format=raw` and never rebuilds MIME from a `full` payload tree: a body without
    // `raw` is a protocol error, not a guess.
    let r = reader(
        Provider::Google,
        &serve(200, "google/gmail-message-full.json").await,
    );
    let e = r
        .fetch_raw(&Secret::new("at"), "18f2c1a2b3c4d5e6")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("raw")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_graph_message_body_without_transport_headers_becomes_mime_the_mail_pipeline_reads() {
    let r = reader(
        Provider::Microsoft,
        &serve(200, "microsoft/message.json").await,
    );
    let m = r
        .fetch_raw(&Secret::new("at"), "AAMkAGI2…AAA=")
        .await
        .unwrap();
    assert_eq!(m.id, "AAMkAGI2…AAA=");
    assert_eq!(m.thread_id.as_deref(), Some("AAQkAGI2…"));
    assert_eq!(m.received_at, Some("2025-03-01T09:58:12Z".parse().unwrap()));
    let env = hirewire_mail::parse_envelope(&m.raw);
    assert_eq!(env.participants.from.len(), 1);
    assert_eq!(env.participants.from[0].address, "jane@example.com");
    assert_eq!(env.participants.from[0].name.as_deref(), Some("Jane Doe"));
    assert_eq!(env.participants.to[0].address, "AdeleV@contoso.com");
    assert!(env.participants.cc.is_empty());
    assert_eq!(env.subject.as_deref(), Some("Re: Senior Rust role"));
    assert_eq!(
        env.message_id.as_deref(),
        Some("CAF=abc123@mail.example.com")
    );
    let sent: jiff::Timestamp = "2025-03-01T09:58:09Z".parse().unwrap();
    assert_eq!(env.date, Some(sent.as_second()));
    let full = hirewire_mail::parse_full(&m.raw);
    assert!(full.attachments.is_empty());
    assert!(
        full.html.as_deref().is_some_and(|h| h.contains("…")),
        "{:?}",
        full.html
    );
}

#[tokio::test]
async fn a_graph_delta_page_with_a_removed_item_reports_the_removal() {
    let item = std::fs::read_to_string(golden_dir().join("microsoft/messages-delta-removed.json"))
        .unwrap();
    let base = serve_body(200, |base| {
        format!(
            r#"{{"@odata.context":"{base}/v1.0/$metadata#Collection(message)","@odata.deltaLink":"{base}/v1.0/me/mailFolders('inbox')/messages/delta?$deltatoken=GwcBoTmP","value":[{item}]}}"#
        )
        .into_bytes()
    })
    .await;
    let r = reader(Provider::Microsoft, &base);
    let token = Secret::new("at");
    let cursor = r.start_incremental(&token).await.unwrap();
    let c = r.changes(&token, &cursor).await.unwrap();
    assert_eq!(c.removed, ["AAMkADk0…"]);
    assert!(c.added.is_empty());
}

// ---- Calendar ----

fn calendar(provider: Provider, base: &str) -> CalendarClient {
    CalendarClient::new(provider, Endpoints::all_at(base), no_retry_http())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(golden_dir().join(name)).expect("fixture exists")
}

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn golden_interview() -> NewEvent {
    NewEvent {
        idempotency_key: "I-42".into(),
        subject: "Interview: Jane Doe — Senior Rust Engineer".into(),
        body_text: "Agenda…".into(),
        start: at("2025-03-10T14:00:00Z"),
        end: at("2025-03-10T15:00:00Z"),
        time_zone: "America/New_York".into(),
        attendee: Attendee {
            name: "Jane Doe".into(),
            email: "jane@example.com".into(),
        },
        location: Location::Video,
    }
}

#[tokio::test]
async fn a_graph_get_schedule_body_in_pacific_time_gives_busy_blocks_in_utc() {
    let c = calendar(
        Provider::Microsoft,
        &serve(200, "microsoft/get-schedule.json").await,
    );
    let busy = c
        .busy(
            &Secret::new("at"),
            "AdeleV@contoso.com",
            at("2025-03-15T00:00:00Z"),
            at("2025-03-16T00:00:00Z"),
        )
        .await
        .unwrap();
    // 12:00–14:00 Pacific Daylight Time on 15 March 2025 (items win over the availability view).
    assert_eq!(
        busy,
        [Busy {
            start: at("2025-03-15T19:00:00Z"),
            end: at("2025-03-15T21:00:00Z"),
            status: BusyStatus::Busy,
        }]
    );
}

#[tokio::test]
async fn a_google_free_busy_body_gives_busy_blocks_and_per_calendar_errors() {
    let c = calendar(
        Provider::Google,
        &serve(200, "google/calendar-freebusy.json").await,
    );
    let token = Secret::new("at");
    let (from, to) = (at("2025-03-10T00:00:00Z"), at("2025-03-15T00:00:00Z"));
    assert_eq!(
        c.busy(&token, "primary", from, to).await.unwrap(),
        [Busy {
            start: at("2025-03-10T14:00:00Z"),
            end: at("2025-03-10T15:00:00Z"),
            status: BusyStatus::Busy,
        }]
    );
    assert_eq!(c.busy(&token, "hm@corp.com", from, to).await.unwrap(), []);
    let e = c
        .busy(&token, "nobody@corp.com", from, to)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::CalendarUnavailable { address, reason, .. }
            if address == "nobody@corp.com" && reason == "notFound"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_graph_created_event_body_gives_the_id_ical_uid_and_teams_link() {
    let c = calendar(
        Provider::Microsoft,
        &serve(201, "microsoft/event-created.json").await,
    );
    let token = Secret::new("at");
    let created = c.create_event(&token, &golden_interview()).await.unwrap();
    assert_eq!(created.provider_event_id, "AAMkAGI1AAAt9AHjAAA=");
    assert_eq!(created.ical_uid, "040000008200E00074C5B7101A82E008…");
    assert_eq!(
        created.join_url.as_deref(),
        Some("https://teams.microsoft.com/l/meetup-join/…")
    );
    // The same body read back: "Eastern Standard Time" is New York time, daylight saving on 10 March 2025.
    let e = c.get_event(&token, "AAMkAGI1AAAt9AHjAAA=").await.unwrap();
    assert_eq!(
        (e.start, e.end),
        (at("2025-03-10T14:00:00Z"), at("2025-03-10T15:00:00Z"))
    );
    assert_eq!(e.attendees, ["jane@example.com"]);
    assert!(!e.cancelled);
}

#[tokio::test]
async fn a_google_event_body_gives_times_attendees_and_the_meet_link() {
    let c = calendar(
        Provider::Google,
        &serve(200, "google/calendar-event.json").await,
    );
    let e = c
        .get_event(&Secret::new("at"), "a1b2c3d4e5f60718293a4b5c6d7e8f90")
        .await
        .unwrap();
    assert_eq!(e.provider_event_id, "a1b2c3d4e5f60718293a4b5c6d7e8f90");
    assert_eq!(e.ical_uid, "a1b2c3d4e5f60718293a4b5c6d7e8f90@google.com");
    // The written offset decides the instant (`-05:00`, though New York was on daylight time that day).
    assert_eq!(
        (e.start, e.end),
        (at("2025-03-10T15:00:00Z"), at("2025-03-10T16:00:00Z"))
    );
    assert_eq!(e.attendees, ["jane@example.com", "hm@corp.com"]);
    assert_eq!(
        e.join_url.as_deref(),
        Some("https://meet.google.com/abc-defg-hij")
    );
    assert!(!e.cancelled);
}

#[tokio::test]
async fn a_google_duplicate_on_insert_is_answered_by_reading_the_existing_event() {
    let base = serve_sequence(|_| {
        vec![
            (409, fixture("google/calendar-error-duplicate.json")),
            (200, fixture("google/calendar-event.json")),
        ]
    })
    .await;
    let created = calendar(Provider::Google, &base)
        .create_event(&Secret::new("at"), &golden_interview())
        .await
        .unwrap();
    assert_eq!(
        created.provider_event_id,
        "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    );
    assert_eq!(
        created.ical_uid,
        "a1b2c3d4e5f60718293a4b5c6d7e8f90@google.com"
    );
    assert_eq!(
        created.join_url.as_deref(),
        Some("https://meet.google.com/abc-defg-hij")
    );
}

#[tokio::test]
async fn a_google_events_list_body_is_a_page_with_a_next_cursor() {
    let c = calendar(
        Provider::Google,
        &serve(200, "google/calendar-events-list.json").await,
    );
    let page = c
        .list_events(
            &Secret::new("at"),
            at("2025-03-01T00:00:00Z"),
            at("2025-04-01T00:00:00Z"),
            None,
        )
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert!(page.next.is_some());
}

#[tokio::test]
async fn a_google_full_sync_required_410_is_not_taken_for_a_deleted_event() {
    // Only 410 `deleted` means the event is gone (a cancel then succeeds); a 410 about a sync token is an error.
    let c = calendar(
        Provider::Google,
        &serve(410, "google/calendar-error-full-sync-required.json").await,
    );
    let e = c
        .cancel_event(&Secret::new("at"), "a1b2c3d4e5f60718293a4b5c6d7e8f90")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("full sync is required")),
        "{e:?}"
    );
}
