//! The calendar adapter ([`CalendarClient`]) against the in-process sandbox, for both providers: a token from the
//! real sign-in with the calendar scopes, busy events seeded through the control API, free/busy in UTC, Graph's
//! 62-day chunks, per-calendar errors, and interview events created idempotently, moved and cancelled with the
//! provider's invitations checked in `/_sandbox/invitations`.

mod common;

use common::*;
use hirewire_providers::scopes;
use hirewire_providers::{
    AccessLevel, Attendee, Busy, BusyStatus, CalendarClient, Capability, Location, NewEvent,
    Provider, ProviderError, ReauthReason, Secret,
};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

const CANDIDATE: &str = "ana.lima@candidates.example";

fn user_of(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "adele@acme.example",
        Provider::Google => "hank@globex.example",
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A bearer token for `capability` from the real sign-in (authorize, consent page, code exchange).
async fn token_for(w: &World, provider: Provider, capability: Capability) -> Secret {
    let client = w.client(provider);
    let a = begin(
        &client,
        scopes::request(provider, capability, AccessLevel::SendAndView),
        false,
    );
    let landing = w
        .sign_in(&a.url, user_of(provider), Answer::AcceptAll)
        .await;
    let (code, _) = code_of(&client, &a, &landing.query());
    client
        .exchange_code(&code, redirect_uri(provider), &a.verifier)
        .await
        .unwrap()
        .access_token
}

async fn setup(provider: Provider) -> (World, CalendarClient, Secret) {
    let w = start().await;
    let token = token_for(&w, provider, Capability::Calendar).await;
    let cal = CalendarClient::new(provider, w.endpoints(), w.http());
    (w, cal, token)
}

async fn seed(w: &World, provider: Provider, events: Value) {
    w.control(
        Method::POST,
        &format!("/_sandbox/calendars/{}/events", user_of(provider)),
        Some(json!({ "events": events })),
    )
    .await;
}

async fn sandbox_events(w: &World, provider: Provider, include_cancelled: bool) -> Vec<Value> {
    let v = w
        .control(
            Method::GET,
            &format!(
                "/_sandbox/calendars/{}/events?include_cancelled={include_cancelled}",
                user_of(provider)
            ),
            None,
        )
        .await;
    v["events"].as_array().unwrap().clone()
}

async fn invitations(w: &World, ical_uid: &str) -> Vec<Value> {
    let v = w
        .control(
            Method::GET,
            &format!("/_sandbox/invitations?ical_uid={}", urlenc(ical_uid)),
            None,
        )
        .await;
    v["invitations"].as_array().unwrap().clone()
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn requests(w: &World, endpoint: &str) -> u64 {
    let v = w.control(Method::GET, "/_sandbox/counters", None).await;
    v["endpoints"][endpoint]["requests"].as_u64().unwrap_or(0)
}

fn busy(start: &str, end: &str, status: BusyStatus) -> Busy {
    Busy {
        start: ts(start),
        end: ts(end),
        status,
    }
}

fn interview(key: &str, location: Location) -> NewEvent {
    NewEvent {
        idempotency_key: key.into(),
        subject: "Interview: Ana Lima — Senior Rust Engineer".into(),
        body_text: "Meet the hiring team.".into(),
        start: ts("2026-12-07T14:00:00Z"),
        end: ts("2026-12-07T15:00:00Z"),
        time_zone: "Europe/Paris".into(),
        attendee: Attendee {
            name: "Ana Lima".into(),
            email: CANDIDATE.into(),
        },
        location,
    }
}

fn is_missing_permissions(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::NeedsReauthorization {
            reason: ReauthReason::MissingPermissions,
            ..
        }
    )
}

// ---- Free/busy ----

async fn busy_comes_back_in_utc(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    seed(
        &w,
        provider,
        json!([
            // 10:00–11:00 in Paris is 09:00–10:00 UTC in December.
            {"start": "2026-12-01T10:00:00", "end": "2026-12-01T11:00:00", "time_zone": "Europe/Paris", "subject": "1:1"},
            {"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T13:30:00Z", "show_as": "tentative"},
            {"start": "2026-12-02T00:00:00Z", "end": "2026-12-03T00:00:00Z", "show_as": "oof"},
            {"start": "2026-12-01T15:00:00Z", "end": "2026-12-01T16:00:00Z", "show_as": "free"},
            // Outside the window.
            {"start": "2026-12-10T09:00:00Z", "end": "2026-12-10T10:00:00Z"},
        ]),
    )
    .await;
    let got = cal
        .busy(
            &token,
            user_of(provider),
            ts("2026-12-01T00:00:00Z"),
            ts("2026-12-05T00:00:00Z"),
        )
        .await
        .unwrap();
    let expected = match provider {
        Provider::Microsoft => vec![
            busy(
                "2026-12-01T09:00:00Z",
                "2026-12-01T10:00:00Z",
                BusyStatus::Busy,
            ),
            busy(
                "2026-12-01T13:00:00Z",
                "2026-12-01T13:30:00Z",
                BusyStatus::Tentative,
            ),
            busy(
                "2026-12-02T00:00:00Z",
                "2026-12-03T00:00:00Z",
                BusyStatus::OutOfOffice,
            ),
        ],
        // Google reports busy blocks only: no tentative, out of office as busy.
        Provider::Google => vec![
            busy(
                "2026-12-01T09:00:00Z",
                "2026-12-01T10:00:00Z",
                BusyStatus::Busy,
            ),
            busy(
                "2026-12-02T00:00:00Z",
                "2026-12-03T00:00:00Z",
                BusyStatus::Busy,
            ),
        ],
    };
    assert_eq!(got, expected, "{provider:?}");
}

#[tokio::test]
async fn graph_free_busy_returns_seeded_events_in_utc_with_tentative_and_out_of_office() {
    busy_comes_back_in_utc(Provider::Microsoft).await;
}

#[tokio::test]
async fn google_free_busy_returns_seeded_busy_blocks_in_utc() {
    busy_comes_back_in_utc(Provider::Google).await;
}

#[tokio::test]
async fn a_100_day_graph_window_is_read_in_two_get_schedule_calls_and_an_event_across_the_split_once()
 {
    let (w, cal, token) = setup(Provider::Microsoft).await;
    let start = ts("2027-01-01T00:00:00Z");
    // The first chunk ends 62 days in: 2027-03-04T00:00Z.
    seed(
        &w,
        Provider::Microsoft,
        json!([
            {"start": "2027-01-05T10:00:00Z", "end": "2027-01-05T11:00:00Z"},
            {"start": "2027-03-03T23:00:00Z", "end": "2027-03-04T01:00:00Z"},
            {"start": "2027-03-22T10:00:00Z", "end": "2027-03-22T10:30:00Z", "show_as": "tentative"},
        ]),
    )
    .await;
    w.control(Method::DELETE, "/_sandbox/counters", None).await;
    let got = cal
        .busy(
            &token,
            user_of(Provider::Microsoft),
            start,
            ts("2027-04-11T00:00:00Z"),
        )
        .await
        .expect("no 62-day error");
    assert_eq!(requests(&w, "graph.calendar.getSchedule").await, 2);
    assert_eq!(
        got,
        [
            busy(
                "2027-01-05T10:00:00Z",
                "2027-01-05T11:00:00Z",
                BusyStatus::Busy
            ),
            busy(
                "2027-03-03T23:00:00Z",
                "2027-03-04T01:00:00Z",
                BusyStatus::Busy
            ),
            busy(
                "2027-03-22T10:00:00Z",
                "2027-03-22T10:30:00Z",
                BusyStatus::Tentative
            ),
        ]
    );
}

#[tokio::test]
async fn free_busy_of_an_unknown_address_is_a_typed_per_calendar_error() {
    for (provider, address, reason) in [
        (Provider::Google, "nobody@elsewhere.example", "notFound"),
        (
            Provider::Microsoft,
            "nobody@elsewhere.example",
            "ErrorMailboxNotFound",
        ),
    ] {
        let (_w, cal, token) = setup(provider).await;
        let e = cal
            .busy(
                &token,
                address,
                ts("2026-12-01T00:00:00Z"),
                ts("2026-12-02T00:00:00Z"),
            )
            .await
            .unwrap_err();
        match &e {
            ProviderError::CalendarUnavailable {
                provider: p,
                address: a,
                reason: r,
            } => {
                assert_eq!((*p, a.as_str(), r.as_str()), (provider, address, reason));
            }
            other => panic!("{provider:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn free_busy_without_the_calendar_scope_needs_reauthorization_for_missing_permissions() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let w = start().await;
        let inbox_token = token_for(&w, provider, Capability::Inbox).await;
        let cal = CalendarClient::new(provider, w.endpoints(), w.http());
        let e = cal
            .busy(
                &inbox_token,
                user_of(provider),
                ts("2026-12-01T00:00:00Z"),
                ts("2026-12-02T00:00:00Z"),
            )
            .await
            .unwrap_err();
        assert!(is_missing_permissions(&e), "{provider:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_persistent_throttle_on_free_busy_is_throttled_after_the_retries() {
    for (provider, endpoint) in [
        (Provider::Microsoft, "graph.calendar.getSchedule"),
        (Provider::Google, "calendar.freebusy.query"),
    ] {
        let (w, cal, token) = setup(provider).await;
        w.arm_fault(
            json!({"endpoint": endpoint, "fault": {"kind": "throttle", "retry_after_secs": 3}}),
        )
        .await;
        let e = cal
            .busy(
                &token,
                user_of(provider),
                ts("2026-12-01T00:00:00Z"),
                ts("2026-12-02T00:00:00Z"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProviderError::Throttled { .. }),
            "{provider:?}: {e:?}"
        );
        assert!(!w.sleeps().is_empty(), "{provider:?}: retried first");
    }
}

// ---- Interview events ----

async fn create_invites_the_candidate(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    let created = cal
        .create_event(&token, &interview("booking-1", Location::Video))
        .await
        .unwrap();
    assert!(!created.provider_event_id.is_empty());
    assert!(!created.ical_uid.is_empty());
    assert!(created.join_url.is_some(), "{provider:?}: {created:?}");

    let sent = invitations(&w, &created.ical_uid).await;
    assert_eq!(sent.len(), 1, "{provider:?}: {sent:?}");
    let inv = &sent[0];
    assert_eq!(inv["to"], CANDIDATE);
    assert_eq!(inv["kind"], "invite");
    assert_eq!(inv["method"], "REQUEST");
    assert_eq!(inv["organizer"], user_of(provider));
    assert_eq!(inv["subject"], "Interview: Ana Lima — Senior Rust Engineer");
    assert_eq!(
        ts(inv["start"].as_str().unwrap()),
        ts("2026-12-07T14:00:00Z")
    );
    assert_eq!(ts(inv["end"].as_str().unwrap()), ts("2026-12-07T15:00:00Z"));
    assert_eq!(inv["online_url"].as_str(), created.join_url.as_deref());

    let events = sandbox_events(&w, provider, false).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["ical_uid"].as_str(),
        Some(created.ical_uid.as_str())
    );
    let id_field = match provider {
        Provider::Microsoft => "immutable_id",
        Provider::Google => "id",
    };
    assert_eq!(
        events[0][id_field].as_str(),
        Some(created.provider_event_id.as_str())
    );

    let read = cal
        .get_event(&token, &created.provider_event_id)
        .await
        .unwrap();
    assert_eq!(read.start, ts("2026-12-07T14:00:00Z"));
    assert_eq!(read.end, ts("2026-12-07T15:00:00Z"));
    assert_eq!(read.ical_uid, created.ical_uid);
    assert_eq!(read.attendees, [CANDIDATE]);
    assert!(!read.cancelled);
}

#[tokio::test]
async fn a_graph_event_is_created_and_graph_invites_the_candidate() {
    create_invites_the_candidate(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_google_event_is_created_with_send_updates_and_google_invites_the_candidate() {
    create_invites_the_candidate(Provider::Google).await;
}

async fn a_repeat_returns_the_first_event(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    let ev = interview("booking-retry", Location::Phone("+33 1 23 45 67 89".into()));
    let first = cal.create_event(&token, &ev).await.unwrap();
    // The crash-and-retry case: the same booking again.
    let again = cal.create_event(&token, &ev).await.unwrap();
    assert_eq!(again, first, "{provider:?}");
    assert_eq!(first.join_url, None);
    assert_eq!(
        sandbox_events(&w, provider, true).await.len(),
        1,
        "{provider:?}"
    );
    assert_eq!(
        invitations(&w, &first.ical_uid).await.len(),
        1,
        "{provider:?}"
    );

    // Another booking is another event.
    let other = cal
        .create_event(
            &token,
            &interview(
                "booking-other",
                Location::Address("1 Rue de Rivoli, Paris".into()),
            ),
        )
        .await
        .unwrap();
    assert_ne!(other.provider_event_id, first.provider_event_id);
    assert_eq!(
        sandbox_events(&w, provider, true).await.len(),
        2,
        "{provider:?}"
    );
}

#[tokio::test]
async fn a_repeated_graph_create_with_the_same_key_returns_the_same_event_and_makes_no_second() {
    a_repeat_returns_the_first_event(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_repeated_google_create_with_the_same_key_reads_the_duplicate_and_makes_no_second() {
    a_repeat_returns_the_first_event(Provider::Google).await;
}

#[tokio::test]
async fn a_google_event_id_is_the_base32hex_id_derived_from_the_booking_key() {
    let (_w, cal, token) = setup(Provider::Google).await;
    let created = cal
        .create_event(&token, &interview("booking-7", Location::Video))
        .await
        .unwrap();
    assert_eq!(
        created.provider_event_id,
        hirewire_providers::calendar::google_event_id("booking-7")
    );
    assert_eq!(
        created.ical_uid,
        format!("{}@google.com", created.provider_event_id)
    );
}

async fn reschedule_and_cancel(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    let created = cal
        .create_event(&token, &interview("booking-move", Location::Video))
        .await
        .unwrap();
    cal.update_event_time(
        &token,
        &created.provider_event_id,
        ts("2026-12-08T09:30:00Z"),
        ts("2026-12-08T10:30:00Z"),
        "Europe/Paris",
    )
    .await
    .unwrap();
    let read = cal
        .get_event(&token, &created.provider_event_id)
        .await
        .unwrap();
    assert_eq!(
        (read.start, read.end),
        (ts("2026-12-08T09:30:00Z"), ts("2026-12-08T10:30:00Z"))
    );
    assert_eq!(read.ical_uid, created.ical_uid, "moved in place");

    let sent = invitations(&w, &created.ical_uid).await;
    assert_eq!(sent.len(), 2, "{provider:?}: {sent:?}");
    let (invite, update) = (&sent[0], &sent[1]);
    assert_eq!(update["kind"], "update");
    assert_eq!(update["to"], CANDIDATE);
    assert_eq!(
        ts(update["start"].as_str().unwrap()),
        ts("2026-12-08T09:30:00Z")
    );
    assert!(
        update["sequence"].as_i64() > invite["sequence"].as_i64(),
        "{provider:?}: {sent:?}"
    );

    cal.cancel_event(&token, &created.provider_event_id)
        .await
        .unwrap();
    let sent = invitations(&w, &created.ical_uid).await;
    assert_eq!(sent.len(), 3, "{provider:?}: {sent:?}");
    assert_eq!(sent[2]["kind"], "cancel");
    assert_eq!(sent[2]["method"], "CANCEL");
    assert_eq!(sent[2]["to"], CANDIDATE);
    assert!(sent[2]["sequence"].as_i64() > sent[1]["sequence"].as_i64());
    assert!(sandbox_events(&w, provider, false).await.is_empty());

    // Cancelling again is fine and tells nobody anything new.
    cal.cancel_event(&token, &created.provider_event_id)
        .await
        .unwrap();
    assert_eq!(invitations(&w, &created.ical_uid).await.len(), 3);

    // A cancelled event cannot be moved.
    let e = cal
        .update_event_time(
            &token,
            &created.provider_event_id,
            ts("2026-12-09T09:30:00Z"),
            ts("2026-12-09T10:30:00Z"),
            "Europe/Paris",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::EventGone { .. }),
        "{provider:?}: {e:?}"
    );
}

#[tokio::test]
async fn a_graph_event_is_rescheduled_in_place_then_cancelled_twice_with_the_candidate_told_each_time()
 {
    reschedule_and_cancel(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_google_event_is_rescheduled_in_place_then_cancelled_twice_with_the_candidate_told_each_time()
 {
    reschedule_and_cancel(Provider::Google).await;
}

#[tokio::test]
async fn creating_an_event_with_only_the_free_busy_permission_needs_reauthorization() {
    // Google granular consent: the recruiter ticks free/busy but not events.
    let w = start().await;
    let client = w.client(Provider::Google);
    let a = begin(
        &client,
        scopes::request(
            Provider::Google,
            Capability::Calendar,
            AccessLevel::SendAndView,
        ),
        false,
    );
    let ticked = [
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/calendar.freebusy",
    ];
    let landing = w
        .sign_in(&a.url, user_of(Provider::Google), Answer::Tick(&ticked))
        .await;
    let (code, _) = code_of(&client, &a, &landing.query());
    let token = client
        .exchange_code(&code, redirect_uri(Provider::Google), &a.verifier)
        .await
        .unwrap()
        .access_token;
    let cal = CalendarClient::new(Provider::Google, w.endpoints(), w.http());
    cal.busy(
        &token,
        user_of(Provider::Google),
        ts("2026-12-01T00:00:00Z"),
        ts("2026-12-02T00:00:00Z"),
    )
    .await
    .expect("free/busy is granted");
    let e = cal
        .create_event(&token, &interview("booking-9", Location::Video))
        .await
        .unwrap_err();
    assert!(is_missing_permissions(&e), "{e:?}");
    assert!(sandbox_events(&w, Provider::Google, true).await.is_empty());

    // Graph: an inbox-only token cannot create events either.
    let token = token_for(&w, Provider::Microsoft, Capability::Inbox).await;
    let cal = CalendarClient::new(Provider::Microsoft, w.endpoints(), w.http());
    let e = cal
        .create_event(&token, &interview("booking-9", Location::Video))
        .await
        .unwrap_err();
    assert!(is_missing_permissions(&e), "{e:?}");
}

#[tokio::test]
async fn a_persistent_throttle_on_create_is_throttled_and_a_later_retry_makes_one_event() {
    for (provider, endpoint) in [
        (Provider::Microsoft, "graph.events.create"),
        (Provider::Google, "calendar.events.insert"),
    ] {
        let (w, cal, token) = setup(provider).await;
        w.arm_fault(json!({"endpoint": endpoint, "fault": {"kind": "throttle"}}))
            .await;
        let ev = interview("booking-throttled", Location::Video);
        let e = cal.create_event(&token, &ev).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::Throttled { .. }),
            "{provider:?}: {e:?}"
        );
        w.control(Method::DELETE, "/_sandbox/faults", None).await;
        cal.create_event(&token, &ev).await.unwrap();
        cal.create_event(&token, &ev).await.unwrap();
        assert_eq!(
            sandbox_events(&w, provider, true).await.len(),
            1,
            "{provider:?}"
        );
    }
}

async fn listing_shows_live_events_by_start(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    seed(
        &w,
        provider,
        json!([
            {"start": "2026-12-07T16:00:00Z", "end": "2026-12-07T17:00:00Z", "subject": "Team sync"},
            {"start": "2026-12-07T08:00:00Z", "end": "2026-12-07T09:00:00Z", "show_as": "tentative"},
            {"start": "2026-12-20T08:00:00Z", "end": "2026-12-20T09:00:00Z"},
        ]),
    )
    .await;
    let kept = cal
        .create_event(&token, &interview("booking-kept", Location::Video))
        .await
        .unwrap();
    let mut dropped = interview("booking-dropped", Location::Video);
    dropped.start = ts("2026-12-07T10:00:00Z");
    dropped.end = ts("2026-12-07T10:30:00Z");
    let dropped = cal.create_event(&token, &dropped).await.unwrap();
    cal.cancel_event(&token, &dropped.provider_event_id)
        .await
        .unwrap();

    let page = cal
        .list_events(
            &token,
            ts("2026-12-07T00:00:00Z"),
            ts("2026-12-08T00:00:00Z"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.next, None);
    let starts: Vec<Timestamp> = page.events.iter().map(|e| e.start).collect();
    assert_eq!(
        starts,
        [
            ts("2026-12-07T08:00:00Z"),
            ts("2026-12-07T14:00:00Z"),
            ts("2026-12-07T16:00:00Z")
        ],
        "{provider:?}"
    );
    let listed = &page.events[1];
    assert_eq!(listed.provider_event_id, kept.provider_event_id);
    assert_eq!(listed.ical_uid, kept.ical_uid);
    assert_eq!(listed.join_url, kept.join_url);
    assert_eq!(listed.attendees, [CANDIDATE]);
}

#[tokio::test]
async fn a_graph_listing_shows_the_live_events_of_the_window_by_start() {
    listing_shows_live_events_by_start(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_google_listing_shows_the_live_events_of_the_window_by_start() {
    listing_shows_live_events_by_start(Provider::Google).await;
}

#[tokio::test]
async fn a_repeated_create_after_a_cancel_reports_the_event_gone_instead_of_reviving_it() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, cal, token) = setup(provider).await;
        let ev = interview("booking-cancelled", Location::Video);
        let first = cal.create_event(&token, &ev).await.unwrap();
        cal.cancel_event(&token, &first.provider_event_id)
            .await
            .unwrap();
        let e = cal.create_event(&token, &ev).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::EventGone { .. }),
            "{provider:?}: {e:?}"
        );
        assert!(
            sandbox_events(&w, provider, false).await.is_empty(),
            "{provider:?}"
        );
    }
}

#[tokio::test]
async fn a_graph_that_refuses_a_repeated_transaction_id_is_an_error_and_still_one_event() {
    let (w, cal, token) = setup(Provider::Microsoft).await;
    w.control(
        Method::PATCH,
        "/_sandbox/settings",
        Some(json!({"graph_transaction_id_repeat": "conflict"})),
    )
    .await;
    let ev = interview("booking-conflict", Location::Video);
    let first = cal.create_event(&token, &ev).await.unwrap();
    let e = cal.create_event(&token, &ev).await.unwrap_err();
    assert!(matches!(e, ProviderError::Protocol(_)), "{e:?}");
    assert_eq!(sandbox_events(&w, Provider::Microsoft, true).await.len(), 1);
    assert_eq!(invitations(&w, &first.ical_uid).await.len(), 1);
}

// ---- What changed (free/busy cache refresh) ----

async fn changes_report_each_change_once_and_an_expired_cursor(provider: Provider) {
    let (w, cal, token) = setup(provider).await;
    let (from, to) = (ts("2026-12-01T00:00:00Z"), ts("2026-12-31T00:00:00Z"));
    // More events than one Graph delta page (10), so the round is followed to its end.
    let many: Vec<Value> = (0..12)
        .map(|d| {
            json!({"start": format!("2026-12-{:02}T09:00:00Z", d + 2),
                   "end": format!("2026-12-{:02}T10:00:00Z", d + 2)})
        })
        .chain([json!({"start": "2027-02-01T09:00:00Z", "end": "2027-02-01T10:00:00Z"})])
        .collect();
    seed(&w, provider, Value::Array(many)).await;

    let first = cal.changes(&token, None, from, to).await.unwrap();
    assert_eq!(
        first.changed, 12,
        "{provider:?}: the first round lists the window's events"
    );
    let quiet = cal
        .changes(&token, Some(&first.cursor), from, to)
        .await
        .unwrap();
    assert_eq!(quiet.changed, 0, "{provider:?}: nothing changed since");

    seed(
        &w,
        provider,
        json!([{"start": "2026-12-15T13:00:00Z", "end": "2026-12-15T14:00:00Z"}]),
    )
    .await;
    let added = cal
        .changes(&token, Some(&quiet.cursor), from, to)
        .await
        .unwrap();
    assert_eq!(added.changed, 1, "{provider:?}: the new event, once");

    let made = cal
        .create_event(&token, &interview("booking-changes", Location::Video))
        .await
        .unwrap();
    cal.cancel_event(&token, &made.provider_event_id)
        .await
        .unwrap();
    let churn = cal
        .changes(&token, Some(&added.cursor), from, to)
        .await
        .unwrap();
    assert!(
        churn.changed >= 1,
        "{provider:?}: an event made and cancelled is a change"
    );

    w.control(
        Method::POST,
        &format!(
            "/_sandbox/calendars/{}/sync-tokens/expire",
            user_of(provider)
        ),
        None,
    )
    .await;
    let expired = cal.changes(&token, Some(&churn.cursor), from, to).await;
    assert!(
        matches!(expired, Err(ProviderError::CursorExpired { provider: p }) if p == provider),
        "{provider:?}: {expired:?}"
    );
    let again = cal.changes(&token, None, from, to).await.unwrap();
    assert_eq!(again.changed, 13, "{provider:?}: a new first round");
}

#[tokio::test]
async fn graph_calendar_changes_follow_the_delta_round_and_report_an_expired_token() {
    changes_report_each_change_once_and_an_expired_cursor(Provider::Microsoft).await;
}

#[tokio::test]
async fn google_calendar_changes_follow_the_sync_token_and_report_full_sync_required() {
    changes_report_each_change_once_and_an_expired_cursor(Provider::Google).await;
}
