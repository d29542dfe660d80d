//! The mail-read adapter ([`MailReader`]) against the in-process sandbox, for both providers: a token from the
//! real sign-in, a generated mailbox, window paging, raw messages through `hirewire_mail`, incremental changes,
//! expired cursors, throttling, missing permissions and address search.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use hirewire_providers::scopes;
use hirewire_providers::{
    AccessLevel, Capability, MailReader, MessageRef, PageCursor, Provider, ProviderError,
    ReauthReason, Secret,
};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

const CANDIDATES: [&str; 3] = [
    "ana.lima@candidates.example",
    "bo.chen@talentmail.example",
    "chidi@devs.example",
];

fn user_of(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "adele@acme.example",
        Provider::Google => "hank@globex.example",
    }
}

/// The control API's id field that the adapter's ids correspond to (Graph: immutable ids).
fn id_field(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "immutable_id",
        Provider::Google => "id",
    }
}

/// A bearer token for `capability` from the real sign-in (authorize, consent page, code exchange).
async fn token_for(w: &World, provider: Provider, capability: Capability) -> Secret {
    let client = w.client(provider);
    let a = begin(
        &client,
        scopes::request(provider, capability, AccessLevel::ViewOnly),
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

async fn setup(provider: Provider, n: usize) -> (World, MailReader, Secret) {
    let w = start().await;
    let token = token_for(&w, provider, Capability::Inbox).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{}/generate", user_of(provider)),
        Some(json!({
            "n": n, "seed": 42, "candidates": CANDIDATES, "candidate_share": 0.3,
            "start": "2026-01-01", "end": "2026-11-01"
        })),
    )
    .await;
    let reader = MailReader::new(provider, w.endpoints(), w.http());
    (w, reader, token)
}

/// Every live message as the sandbox knows it.
async fn sandbox_messages(w: &World, provider: Provider) -> Vec<Value> {
    let v = w
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{}/messages", user_of(provider)),
            None,
        )
        .await;
    v["messages"].as_array().unwrap().clone()
}

async fn sandbox_raw(w: &World, provider: Provider, id: &str) -> Vec<u8> {
    let v = w
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{}/messages/{id}", user_of(provider)),
            None,
        )
        .await;
    v["raw"].as_str().unwrap().as_bytes().to_vec()
}

async fn inject(w: &World, provider: Provider, body: Value) -> String {
    let v = w
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{}/messages", user_of(provider)),
            Some(body),
        )
        .await;
    v[id_field(provider)]
        .as_str()
        .unwrap_or_else(|| panic!("inject answered {v}"))
        .to_owned()
}

async fn list_all(
    reader: &MailReader,
    token: &Secret,
    since: Timestamp,
    page_size: u32,
) -> Vec<MessageRef> {
    let mut out = Vec::new();
    let mut cursor: Option<PageCursor> = None;
    loop {
        let page = reader
            .list_page(token, cursor.as_ref(), since, page_size)
            .await
            .unwrap();
        assert!(page.items.len() <= page_size as usize);
        out.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn paging_covers_the_window_newest_first(provider: Provider) {
    let (w, reader, token) = setup(provider, 300).await;
    let all = sandbox_messages(&w, provider).await;
    assert_eq!(all.len(), 300);
    let received: HashMap<String, Timestamp> = all
        .iter()
        .map(|m| {
            (
                m[id_field(provider)].as_str().unwrap().to_owned(),
                ts(m["received"].as_str().unwrap()),
            )
        })
        .collect();

    for (since, page_size) in [("2026-01-01T00:00:00Z", 37), ("2026-06-01T00:00:30Z", 50)] {
        let since = ts(since);
        let listed = list_all(&reader, &token, since, page_size).await;
        let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a message was listed twice");
        let expected: BTreeSet<&str> = received
            .iter()
            .filter(|(_, t)| **t >= since)
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(unique, expected, "the window since {since}");
        let times: Vec<Timestamp> = ids.iter().map(|id| received[*id]).collect();
        assert!(
            times.windows(2).all(|p| p[0] >= p[1]),
            "listing is not newest first"
        );
        for m in &listed {
            match provider {
                Provider::Microsoft => {
                    assert_eq!(m.received_at, Some(received[&m.id]));
                    assert!(m.thread_id.is_some());
                }
                Provider::Google => assert!(m.thread_id.is_some()),
            }
        }
    }
}

#[tokio::test]
async fn paging_a_microsoft_window_returns_every_message_once_newest_first() {
    paging_covers_the_window_newest_first(Provider::Microsoft).await;
}

#[tokio::test]
async fn paging_a_gmail_window_returns_every_message_once_newest_first() {
    paging_covers_the_window_newest_first(Provider::Google).await;
}

async fn raw_messages_feed_the_mail_pipeline(provider: Provider) {
    let (w, reader, token) = setup(provider, 120).await;
    let all = sandbox_messages(&w, provider).await;
    let mut with_candidate = 0;
    let mut with_attachments = 0;
    for m in &all {
        let id = m[id_field(provider)].as_str().unwrap();
        let fetched = reader.fetch_raw(&token, id).await.unwrap();
        assert_eq!(fetched.id, id);
        assert_eq!(
            fetched.received_at.map(|t| t.as_second()),
            Some(ts(m["received"].as_str().unwrap()).as_second()),
            "received time of {id}"
        );
        if provider == Provider::Google {
            assert_eq!(fetched.thread_id.as_deref(), m["thread_id"].as_str());
        }

        let original = sandbox_raw(&w, provider, id).await;
        let got = hirewire_mail::parse_envelope(&fetched.raw);
        let want = hirewire_mail::parse_envelope(&original);
        assert_eq!(got.participants, want.participants, "participants of {id}");
        assert_eq!(got.message_id, want.message_id);
        assert_eq!(got.in_reply_to, want.in_reply_to);
        assert_eq!(got.references, want.references);
        assert_eq!(got.subject, want.subject);
        assert_eq!(got.date, want.date);
        assert_eq!(
            got.participants.from[0].address.to_ascii_lowercase(),
            m["from"].as_str().unwrap().to_ascii_lowercase()
        );
        if provider == Provider::Google {
            assert_eq!(fetched.raw, original, "Gmail raw is the exact bytes");
        }
        if got.participants.iter().any(|(_, mb)| {
            CANDIDATES
                .iter()
                .any(|c| mb.address.eq_ignore_ascii_case(c))
        }) {
            with_candidate += 1;
        }

        let full_got = hirewire_mail::parse_full(&fetched.raw);
        let full_want = hirewire_mail::parse_full(&original);
        let names = |p: &hirewire_mail::ParsedMessage| {
            p.attachments
                .iter()
                .map(|a| (a.filename.clone(), a.content_type.clone(), a.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&full_got), names(&full_want), "attachments of {id}");
        if !full_got.attachments.is_empty() {
            with_attachments += 1;
        }
    }
    assert!(with_candidate > 10, "{with_candidate} candidate messages");
    assert!(
        with_attachments > 0,
        "no message with attachments was checked"
    );
}

#[tokio::test]
async fn a_fetched_graph_message_gives_the_pipeline_the_same_envelope_and_attachments_as_the_original()
 {
    raw_messages_feed_the_mail_pipeline(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_fetched_gmail_message_is_the_exact_original_bytes() {
    raw_messages_feed_the_mail_pipeline(Provider::Google).await;
}

async fn incremental_sees_injection_and_deletion(provider: Provider) {
    let (w, reader, token) = setup(provider, 40).await;
    let cursor = reader.start_incremental(&token).await.unwrap();
    let quiet = reader.changes(&token, &cursor).await.unwrap();
    assert!(
        quiet.added.is_empty() && quiet.removed.is_empty(),
        "{quiet:?}"
    );

    let reply = inject(
        &w,
        provider,
        json!({"from": CANDIDATES[0], "from_name": "Ana Lima", "subject": "Re: Rust role", "folder": "inbox"}),
    )
    .await;
    let sent = inject(
        &w,
        provider,
        json!({"from": user_of(provider), "to": [CANDIDATES[1]], "subject": "Interview times", "folder": "sentitems"}),
    )
    .await;
    let c = reader.changes(&token, &quiet.next).await.unwrap();
    let added: BTreeSet<&str> = c.added.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(added, BTreeSet::from([reply.as_str(), sent.as_str()]));
    assert!(c.removed.is_empty(), "{c:?}");
    assert!(c.added.iter().all(|m| m.thread_id.is_some()));
    // What changes reports can be fetched and parsed.
    let raw = reader.fetch_raw(&token, &reply).await.unwrap();
    let env = hirewire_mail::parse_envelope(&raw.raw);
    assert_eq!(env.participants.from[0].address, CANDIDATES[0]);

    w.control(
        Method::DELETE,
        &format!("/_sandbox/mailboxes/{}/messages/{reply}", user_of(provider)),
        None,
    )
    .await;
    let d = reader.changes(&token, &c.next).await.unwrap();
    assert_eq!(d.removed, std::slice::from_ref(&reply));
    assert!(d.added.is_empty(), "{d:?}");

    // The cursor survives being saved and restored.
    let saved = hirewire_providers::SyncCursor::from_saved(d.next.as_str().to_owned());
    let again = reader.changes(&token, &saved).await.unwrap();
    assert!(again.added.is_empty() && again.removed.is_empty());
}

#[tokio::test]
async fn graph_delta_reports_an_injected_message_and_then_its_deletion() {
    incremental_sees_injection_and_deletion(Provider::Microsoft).await;
}

#[tokio::test]
async fn gmail_history_reports_an_injected_message_and_then_its_deletion() {
    incremental_sees_injection_and_deletion(Provider::Google).await;
}

async fn expired_cursor_asks_for_a_resync(provider: Provider, expire: &str) {
    let (w, reader, token) = setup(provider, 30).await;
    let cursor = reader.start_incremental(&token).await.unwrap();
    inject(&w, provider, json!({"from": CANDIDATES[2]})).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{}/{expire}", user_of(provider)),
        None,
    )
    .await;
    let e = reader.changes(&token, &cursor).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::CursorExpired { provider: p } if p == provider),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    // The way out: a fresh cursor works.
    let fresh = reader.start_incremental(&token).await.unwrap();
    reader.changes(&token, &fresh).await.unwrap();
}

#[tokio::test]
async fn an_expired_graph_delta_token_is_cursor_expired() {
    expired_cursor_asks_for_a_resync(Provider::Microsoft, "delta-tokens/expire").await;
}

#[tokio::test]
async fn a_stale_gmail_history_id_is_cursor_expired() {
    expired_cursor_asks_for_a_resync(Provider::Google, "history/expire").await;
}

#[tokio::test]
async fn graph_throttling_longer_than_the_client_waits_is_throttled_with_retry_after() {
    let (w, reader, token) = setup(Provider::Microsoft, 10).await;
    w.arm_fault(json!({"endpoint": "graph.messages.list", "fault": {"kind": "throttle", "retry_after_secs": 120}}))
        .await;
    let e = reader
        .list_page(&token, None, ts("2026-01-01T00:00:00Z"), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{e:?}"
    );
    assert!(w.sleeps().is_empty(), "a long Retry-After is not slept on");
}

#[tokio::test]
async fn graph_throttling_that_outlasts_the_retries_is_throttled() {
    let (w, reader, token) = setup(Provider::Microsoft, 10).await;
    w.arm_fault(json!({"endpoint": "graph.messages.delta", "fault": {"kind": "throttle", "retry_after_secs": 2}}))
        .await;
    let e = reader.start_incremental(&token).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(2)),
        "{e:?}"
    );
    assert_eq!(
        w.sleeps(),
        [Duration::from_secs(2); 3],
        "Retry-After honoured"
    );
}

#[tokio::test]
async fn gmail_rate_limits_are_throttled() {
    let (w, reader, token) = setup(Provider::Google, 10).await;
    w.arm_fault(json!({"endpoint": "gmail.users.messages.get", "fault": {"kind": "user_rate_limit"}, "count": 1}))
        .await;
    let id = sandbox_messages(&w, Provider::Google).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = reader.fetch_raw(&token, &id).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Throttled { retry_after: None }),
        "{e:?}"
    );
    w.arm_fault(json!({"endpoint": "gmail.users.history.list", "fault": {"kind": "throttle"}}))
        .await;
    let cursor = reader.start_incremental(&token).await.unwrap();
    let e = reader.changes(&token, &cursor).await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    assert_eq!(w.sleeps().len(), 3, "429 is retried before giving up");
}

async fn without_mail_permission(provider: Provider) {
    let w = start().await;
    let token = token_for(&w, provider, Capability::Calendar).await;
    let reader = MailReader::new(provider, w.endpoints(), w.http());
    let e = reader
        .list_page(&token, None, ts("2026-01-01T00:00:00Z"), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::MissingPermissions,
                provider: p
            } if p == provider
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_microsoft_token_without_mail_read_needs_reauthorization_for_permissions() {
    without_mail_permission(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_google_token_without_gmail_readonly_needs_reauthorization_for_permissions() {
    without_mail_permission(Provider::Google).await;
}

#[tokio::test]
async fn a_rejected_access_token_is_token_rejected_for_both_providers() {
    for (provider, endpoint) in [
        (Provider::Microsoft, "graph.messages.get"),
        (Provider::Google, "gmail.users.messages.get"),
    ] {
        let (w, reader, token) = setup(provider, 5).await;
        let id = sandbox_messages(&w, provider).await[0][id_field(provider)]
            .as_str()
            .unwrap()
            .to_owned();
        w.arm_fault(json!({"endpoint": endpoint, "fault": {"kind": "invalid_token"}, "count": 1}))
            .await;
        let e = reader.fetch_raw(&token, &id).await.unwrap_err();
        assert!(matches!(e, ProviderError::TokenRejected), "{e:?}");
        reader.fetch_raw(&token, &id).await.unwrap();
    }
}

async fn search_finds_from_and_to(provider: Provider) {
    let w = start().await;
    let token = token_for(&w, provider, Capability::Inbox).await;
    w.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{}/generate", user_of(provider)),
        Some(json!({"n": 80, "seed": 7, "candidates": ["someone.else@example.net"], "candidate_share": 0.4,
                    "start": "2026-01-01", "end": "2026-11-01"})),
    )
    .await;
    let target = "jordan.reyes@candidates.example";
    let mut expected = BTreeSet::new();
    for (body, when) in [
        (
            json!({"from": target, "subject": "My CV", "folder": "inbox"}),
            "2026-11-02T10:00:00Z",
        ),
        (
            json!({"from": "Jordan.Reyes@Candidates.example", "subject": "Availability", "folder": "archive"}),
            "2026-11-03T10:00:00Z",
        ),
        (
            json!({"from": user_of(provider), "to": [target], "subject": "Next steps", "folder": "sentitems"}),
            "2026-11-04T10:00:00Z",
        ),
    ] {
        let mut body = body;
        body["received_at"] = json!(when);
        expected.insert(inject(&w, provider, body).await);
    }
    // Before the window: not found.
    inject(
        &w,
        provider,
        json!({"from": target, "subject": "Old", "received_at": "2025-06-01T10:00:00Z"}),
    )
    .await;

    let reader = MailReader::new(provider, w.endpoints(), w.http());
    let found = reader
        .search_by_address(&token, target, ts("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let ids: BTreeSet<String> = found.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), found.len(), "no duplicates");
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn searching_a_graph_mailbox_by_address_finds_mail_from_and_to_it_in_the_window() {
    search_finds_from_and_to(Provider::Microsoft).await;
}

#[tokio::test]
async fn searching_a_gmail_mailbox_by_address_finds_mail_from_and_to_it_in_the_window() {
    search_finds_from_and_to(Provider::Google).await;
}

#[tokio::test]
async fn moving_a_message_to_the_archive_is_a_graph_removal_and_no_gmail_change() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, reader, token) = setup(provider, 20).await;
        let id = inject(
            &w,
            provider,
            json!({"from": CANDIDATES[0], "folder": "inbox"}),
        )
        .await;
        let cursor = reader.start_incremental(&token).await.unwrap();
        w.control(
            Method::PATCH,
            &format!("/_sandbox/mailboxes/{}/messages/{id}", user_of(provider)),
            Some(json!({"folder": "archive"})),
        )
        .await;
        let c = reader.changes(&token, &cursor).await.unwrap();
        assert!(c.added.is_empty(), "{provider:?}: {c:?}");
        match provider {
            // Graph says only "@removed" when a message leaves a watched folder: the engine must not take it
            // for a deletion (see `Changes::removed`).
            Provider::Microsoft => assert_eq!(c.removed, [id]),
            // Gmail archives by removing the INBOX label: not a message added or deleted.
            Provider::Google => assert!(c.removed.is_empty(), "{c:?}"),
        }
    }
}

#[tokio::test]
async fn a_paging_link_or_cursor_that_is_not_this_providers_is_refused() {
    let (w, reader, token) = setup(Provider::Microsoft, 5).await;
    let foreign = PageCursor::from_saved("http://127.0.0.1:9/v1.0/me/messages?$skip=10");
    let e = reader
        .list_page(&token, Some(&foreign), ts("2026-01-01T00:00:00Z"), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("outside Microsoft Graph")),
        "{e:?}"
    );
    let gmail_token = token_for(&w, Provider::Google, Capability::Inbox).await;
    let gmail = MailReader::new(Provider::Google, w.endpoints(), w.http());
    let gmail_cursor = gmail.start_incremental(&gmail_token).await.unwrap();
    let e = reader.changes(&token, &gmail_cursor).await.unwrap_err();
    assert!(matches!(e, ProviderError::Protocol(_)), "{e:?}");
    let e = reader
        .changes(
            &token,
            &hirewire_providers::SyncCursor::from_saved("garbage"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Protocol(_)), "{e:?}");
}

#[tokio::test]
async fn fetching_a_message_deleted_since_it_was_listed_is_message_gone() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, reader, token) = setup(provider, 5).await;
        let id = inject(&w, provider, json!({"from": CANDIDATES[1]})).await;
        w.control(
            Method::DELETE,
            &format!("/_sandbox/mailboxes/{}/messages/{id}", user_of(provider)),
            None,
        )
        .await;
        let e = reader.fetch_raw(&token, &id).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::MessageGone { provider: p } if p == provider),
            "{e:?}"
        );
        assert!(!e.is_retryable());
    }
}

async fn many_messages_come_back_in_order(provider: Provider) {
    let (w, reader, token) = setup(provider, 120).await;
    let all = sandbox_messages(&w, provider).await;
    let gone = inject(&w, provider, json!({"from": CANDIDATES[0]})).await;
    w.control(
        Method::DELETE,
        &format!("/_sandbox/mailboxes/{}/messages/{gone}", user_of(provider)),
        None,
    )
    .await;
    let mut ids: Vec<String> = all
        .iter()
        .map(|m| m[id_field(provider)].as_str().unwrap().to_owned())
        .collect();
    ids.insert(5, gone.clone());
    let results = reader.fetch_raw_many(&token, &ids).await.unwrap();
    assert_eq!(results.len(), ids.len());
    for (id, r) in ids.iter().zip(&results) {
        if *id == gone {
            assert!(matches!(r, Err(ProviderError::MessageGone { .. })), "{r:?}");
            continue;
        }
        let m = r.as_ref().unwrap();
        assert_eq!(&m.id, id);
        let original = sandbox_raw(&w, provider, id).await;
        match provider {
            Provider::Google => assert_eq!(m.raw, original),
            Provider::Microsoft => assert_eq!(
                hirewire_mail::parse_envelope(&m.raw).participants,
                hirewire_mail::parse_envelope(&original).participants
            ),
        }
    }
}

#[tokio::test]
async fn fetching_many_gmail_messages_in_batches_keeps_their_order_and_reports_a_gone_one_in_place()
{
    many_messages_come_back_in_order(Provider::Google).await;
}

#[tokio::test]
async fn fetching_many_graph_messages_keeps_their_order_and_reports_a_gone_one_in_place() {
    many_messages_come_back_in_order(Provider::Microsoft).await;
}

#[tokio::test]
async fn a_throttled_part_of_a_gmail_batch_ends_the_results_so_the_rest_is_rescheduled() {
    let (w, reader, token) = setup(Provider::Google, 10).await;
    let ids: Vec<String> = sandbox_messages(&w, Provider::Google)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    w.arm_fault(
        json!({"endpoint": "gmail.users.messages.get", "fault": {"kind": "throttle"}, "count": 1}),
    )
    .await;
    let results = reader.fetch_raw_many(&token, &ids).await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        matches!(results[0], Err(ProviderError::Throttled { .. })),
        "{results:?}"
    );
    let results = reader.fetch_raw_many(&token, &ids).await.unwrap();
    assert_eq!(results.len(), ids.len());
    assert!(results.iter().all(Result::is_ok));
}
