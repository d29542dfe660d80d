//! The mail sync engine against the provider sandbox, on both storage
//! backends: workers are run step by step (`run_one`) on a manual clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::{CandidateId, OrgId};
use hirewire_server::sync::{self, StopReason, SyncOutcome};
use hirewire_server::testing::{Answer, Landing, RECRUITER, World};
use hirewire_server::{AppState, integrations};
use hirewire_store::testing::TestDb;
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, JobStatus, MailViewer, SyncPhase, User, both_backends,
    normalize_message_id,
};
use jiff::SignedDuration;
use reqwest::Method;
use serde_json::json;

/// External candidates of the generated mailboxes.
const CANDIDATES: [&str; 2] = [
    "jordan.rivers@talentmail.example",
    "sam.okafor@outlook.example",
];

/// In the generated mailboxes too, but no candidate's address until a test adds it.
const LATER: &str = "dana.wu@proton.example";

struct Scenario {
    world: World,
    org: OrgId,
    riley: User,
    /// The sandbox mailbox (the provider account).
    mailbox: &'static str,
    /// Candidates of the org, in `CANDIDATES` order, then the internal one.
    candidates: Vec<CandidateId>,
    /// Message-ID of mail from a candidate on the org's own domain (internal-only).
    internal_mail: String,
}

/// An org using `provider`, a recruiter whose inbox is a generated sandbox
/// mailbox with some candidate mail, the candidates, and the inbox authorized.
async fn scenario(db: &TestDb, provider: &str) -> Scenario {
    let world = World::start(db).await;
    let (mailbox, domain, internal) = if provider == "microsoft" {
        (
            "adele@acme.example",
            "acme.example",
            "alex.intern@acme.example",
        )
    } else {
        (
            "hank@globex.example",
            "globex.example",
            "alex.intern@globex.example",
        )
    };
    let org = world.app.org("Talent Co", &[domain]).await;
    world
        .app
        .user(org, "riley@talent.example", RECRUITER, "riley-password")
        .await;
    world
        .use_provider(org, provider, None, AccessLevelSetting::SendAndView)
        .await;
    world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{mailbox}/generate"),
            Some(json!({
                "n": 40, "seed": 7, "candidates": [CANDIDATES[0], CANDIDATES[1], LATER], "candidate_share": 0.5,
                "start": "2026-03-01", "end": "2026-11-01"
            })),
        )
        .await;
    // A colleague who is also a candidate writes: internal-only, not stored.
    let injected = world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{mailbox}/messages"),
            Some(json!({"from": internal, "to": [mailbox], "subject": "Lunch?", "body": "Internal only.", "received_at": "2026-10-01T10:00:00Z"})),
        )
        .await;
    let mut candidates = Vec::new();
    for (i, a) in CANDIDATES.iter().chain([&internal]).enumerate() {
        let c = world
            .app
            .store
            .create_candidate(
                org,
                &format!("Candidate {i}"),
                &[EmailAddress::parse(a).unwrap()],
                world.app.now(),
            )
            .await
            .unwrap();
        candidates.push(c.id);
    }
    let client = world
        .app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    let landing = world
        .authorize(
            &client,
            "/settings/email-calendar/inbox/authorize",
            &[],
            mailbox,
            Answer::AcceptAll,
        )
        .await;
    match landing {
        Landing::Redirect(url) => {
            let body = client.get(url).send().await.unwrap().text().await.unwrap();
            assert!(body.contains("data-code=\"authorized\""), "{body}");
        }
        Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
    }
    let riley = world
        .app
        .store
        .user_by_email_key(&AddressKey::of("riley@talent.example"))
        .await
        .unwrap()
        .unwrap();
    Scenario {
        world,
        org,
        riley,
        mailbox,
        candidates,
        internal_mail: normalize_message_id(injected["internet_message_id"].as_str().unwrap())
            .unwrap(),
    }
}

impl Scenario {
    /// An instance of the app on the same store and keys, with small pages.
    fn worker(&self) -> AppState {
        let app = &self.world.app;
        let mut config = app.state.config.clone();
        config.sync.page_size = 7;
        AppState::new(
            config,
            app.store.clone(),
            app.state.keyring.clone(),
            Arc::new(app.clock.clone()),
        )
    }

    async fn grant(&self) -> hirewire_store::Grant {
        self.world
            .app
            .store
            .grant(self.riley.id, CapabilityKind::Inbox)
            .await
            .unwrap()
            .unwrap()
    }

    /// Message-IDs of the sandbox mailbox's mail from or to an external candidate.
    async fn candidate_mail(&self) -> BTreeSet<String> {
        self.candidate_mail_of(self.mailbox).await
    }

    async fn candidate_mail_of(&self, mailbox: &str) -> BTreeSet<String> {
        self.mail_with(mailbox, &CANDIDATES).await
    }

    /// Message-IDs of the mailbox's mail whose headers name one of `addresses`.
    async fn mail_with(&self, mailbox: &str, addresses: &[&str]) -> BTreeSet<String> {
        let list = self
            .world
            .control(
                Method::GET,
                &format!("/_sandbox/mailboxes/{}/messages", mailbox),
                None,
            )
            .await;
        let mut out = BTreeSet::new();
        for m in list["messages"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap();
            let one = self
                .world
                .control(
                    Method::GET,
                    &format!("/_sandbox/mailboxes/{}/messages/{id}", mailbox),
                    None,
                )
                .await;
            let raw = one["raw"].as_str().unwrap().to_lowercase();
            let headers = raw.split("\r\n\r\n").next().unwrap_or("");
            if addresses.iter().any(|c| headers.contains(c)) {
                out.insert(
                    normalize_message_id(m["internet_message_id"].as_str().unwrap()).unwrap(),
                );
            }
        }
        out
    }

    /// Message-IDs stored for the org's candidates, as the recruiter sees them.
    async fn stored(&self) -> BTreeSet<String> {
        self.conversations().await.into_iter().flatten().collect()
    }

    /// The Message-IDs of each email conversation on the candidates' timelines.
    async fn conversations(&self) -> Vec<BTreeSet<String>> {
        let store = &self.world.app.store;
        let viewer = MailViewer {
            user: self.riley.id,
            is_admin: false,
        };
        let mut out = Vec::new();
        for &c in &self.candidates {
            let page = store
                .candidate_timeline(self.org, c, viewer, None, 100)
                .await
                .unwrap();
            assert!(page.next.is_none());
            for item in page.items {
                if let hirewire_store::TimelineItem::Email(e) = item {
                    let messages = store
                        .thread_messages(self.org, e.thread_id, viewer)
                        .await
                        .unwrap();
                    out.push(
                        messages
                            .into_iter()
                            .map(|m| m.message_id_header.unwrap())
                            .collect(),
                    );
                }
            }
        }
        out
    }

    async fn inject_reply(&self, from: &str, to: &str) -> String {
        let r = self
            .world
            .control(
                Method::POST,
                &format!("/_sandbox/mailboxes/{}/messages", self.mailbox),
                Some(json!({"from": from, "to": [self.mailbox], "in_reply_to": to, "body": "Thanks, Tuesday works."})),
            )
            .await;
        normalize_message_id(r["internet_message_id"].as_str().unwrap()).unwrap()
    }

    async fn mail_requests(&self) -> u64 {
        let c = self
            .world
            .control(Method::GET, "/_sandbox/counters", None)
            .await;
        c["endpoints"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("graph.") || k.starts_with("gmail."))
                    .map(|(_, v)| v["requests"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A backfill reads who each message involves from its addressing headers
/// (Graph: the listing; Gmail: `format=metadata`) and fetches whole only the
/// candidate mail: the rest of the mailbox is never downloaded.
async fn only_candidate_mail_is_fetched_whole(db: TestDb, provider: &str) {
    let s = scenario(&db, provider).await;
    let worker = s.worker();
    let first = sync::run_one(&worker, "w1").await;
    assert!(
        matches!(first, Some(SyncOutcome::Started { .. })),
        "{first:?}"
    );
    s.world
        .control(Method::DELETE, "/_sandbox/counters", None)
        .await;
    sync::run_until_idle(&worker, "w1", 100).await;
    let expected = s.candidate_mail().await;
    assert_eq!(s.stored().await, expected);
    let state = s
        .world
        .app
        .store
        .mail_sync_state(s.grant().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, SyncPhase::Incremental);
    let listed = state.messages_seen;
    assert_eq!(listed, 41, "40 generated and the colleague's message");
    let c = s
        .world
        .control(Method::GET, "/_sandbox/counters", None)
        .await;
    let requests = |endpoint: &str| c["endpoints"][endpoint]["requests"].as_u64().unwrap_or(0);
    let whole = expected.len() as u64;
    if provider == "microsoft" {
        // The listing carried the addresses: one GET per candidate message, none for the rest.
        assert_eq!(requests("graph.messages.get"), whole, "{c}");
        assert!(whole < listed);
    } else {
        // Every message's addressing headers (Gmail lists ids only), then the candidate mail whole.
        assert_eq!(requests("gmail.users.messages.get"), listed + whole, "{c}");
    }
}

async fn backfill_then_a_reply_arrives(db: TestDb, provider: &str) {
    let s = scenario(&db, provider).await;
    let worker = s.worker();
    let steps = sync::run_until_idle(&worker, "w1", 100).await;
    assert!(
        matches!(steps.first(), Some(SyncOutcome::Started { .. })),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .filter(|o| matches!(o, SyncOutcome::Page { .. }))
            .count()
            >= 5,
        "40 messages in pages of 7: {steps:?}"
    );
    assert!(matches!(
        steps.last(),
        Some(SyncOutcome::Page { done: true, .. } | SyncOutcome::Incremental { .. })
    ));
    let expected = s.candidate_mail().await;
    assert!(
        expected.len() >= 5,
        "the mailbox holds candidate mail: {expected:?}"
    );
    let stored = s.stored().await;
    assert_eq!(stored, expected, "exactly the candidate mail is stored");
    let state = s
        .world
        .app
        .store
        .mail_sync_state(s.grant().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages_stored, expected.len() as u64);
    assert!(
        state.messages_seen >= 41,
        "every message was listed: {state:?}"
    );
    assert!(state.backfill_cursor.is_none() && state.incremental_cursor.is_some());

    // Caught up: nothing is due until the interval has passed.
    sync::run_until_idle(&worker, "w1", 100).await;
    assert!(
        sync::run_one(&worker, "w1").await.is_none(),
        "no tight loop"
    );

    // A candidate replies to one of the synced messages.
    let parent = expected.iter().next().unwrap().clone();
    let reply = s.inject_reply(CANDIDATES[0], &parent).await;
    assert!(
        sync::run_one(&worker, "w1").await.is_none(),
        "not before the interval"
    );
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    let steps = sync::run_until_idle(&worker, "w1", 10).await;
    assert!(
        matches!(steps.as_slice(), [SyncOutcome::Incremental { report, .. }] if report.stored == 1),
        "{steps:?}"
    );
    let stored = s.stored().await;
    assert!(stored.contains(&reply), "the reply is on the timeline");
    let token = s.world.app.api_token(&s.riley).await;
    assert!(
        timeline_message_ids(&s, &token, s.candidates[0])
            .await
            .contains(&reply),
        "the reply is on the candidate's timeline in the API"
    );
    assert!(
        s.conversations()
            .await
            .iter()
            .any(|c| c.contains(&reply) && c.contains(&parent)),
        "the reply joins its parent's conversation (root Message-ID)"
    );
    assert_eq!(stored.len(), expected.len() + 1);
    assert!(
        !stored.contains(&s.internal_mail),
        "internal-only mail is not stored"
    );
}

async fn an_expired_cursor_resyncs_without_duplicates(db: TestDb, provider: &str) {
    let s = scenario(&db, provider).await;
    let worker = s.worker();
    sync::run_until_idle(&worker, "w1", 100).await;
    let before = s.stored().await;
    // The reply arrives, then the cursor (older than the reply) is expired.
    let parent = before.iter().next().unwrap().clone();
    let reply = s.inject_reply(CANDIDATES[1], &parent).await;
    let expire = if provider == "microsoft" {
        "delta-tokens/expire"
    } else {
        "history/expire"
    };
    s.world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{}/{expire}", s.mailbox),
            Some(json!({})),
        )
        .await;
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    let steps = sync::run_until_idle(&worker, "w1", 100).await;
    assert!(
        matches!(steps.first(), Some(SyncOutcome::Resync { .. })),
        "{steps:?}"
    );
    assert!(
        steps.iter().any(|o| matches!(
            o,
            SyncOutcome::Page {
                phase: SyncPhase::Resync,
                done: true,
                ..
            }
        )),
        "{steps:?}"
    );
    let stored = s.stored().await;
    let mut expected = before.clone();
    expected.insert(reply);
    assert_eq!(stored, expected);
    assert_eq!(stored, s.candidate_mail().await);
    let state = s
        .world
        .app
        .store
        .mail_sync_state(s.grant().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, SyncPhase::Incremental);
    assert_eq!(
        state.messages_stored,
        expected.len() as u64,
        "nothing was stored twice"
    );
    // And incremental sync works again with the fresh cursor.
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    let steps = sync::run_until_idle(&worker, "w1", 10).await;
    assert!(
        matches!(steps.as_slice(), [SyncOutcome::Incremental { .. }]),
        "{steps:?}"
    );
}

/// The Message-IDs on a candidate's timeline, read through the HTTP API.
async fn timeline_message_ids(
    s: &Scenario,
    token: &str,
    candidate: CandidateId,
) -> BTreeSet<String> {
    let api = s.world.app.api(token);
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let res = api
            .get(&format!(
                "/candidates/{candidate}/timeline?limit=100&cursor={cursor}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let page: serde_json::Value = res.json().await.unwrap();
        for c in page["data"].as_array().unwrap() {
            for m in c["messages"].as_array().unwrap() {
                if let Some(id) = m["message_id"].as_str() {
                    out.insert(id.to_owned());
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

/// Every Message-ID stored from the recruiter's inbox, asserting none twice.
async fn stored_once(s: &Scenario) -> BTreeSet<String> {
    let rows = s
        .world
        .app
        .store
        .grant_message_ids(s.grant().await.id)
        .await
        .unwrap();
    let set: BTreeSet<String> = rows.iter().flatten().cloned().collect();
    assert_eq!(set.len(), rows.len(), "no message stored twice: {rows:?}");
    set
}

/// Backfill; then a candidate gains `LATER` through the API (added to
/// candidate 0, or a new candidate created with it); the search job runs; the
/// old mail with it is on that candidate's timeline, stored once, and later
/// syncs (incremental, then a full resync) add no copy.
/// How the candidate gains the address.
enum Gains {
    /// `POST /api/v1/candidates/{id}/addresses` on an existing candidate.
    AddedThroughTheApi,
    /// `POST /api/v1/candidates` of a new candidate.
    CreatedThroughTheApi,
    /// The New candidate form.
    CreatedOnThePage,
}

async fn an_added_address_brings_its_old_mail(db: TestDb, provider: &str, how: Gains) {
    let s = scenario(&db, provider).await;
    let worker = s.worker();
    sync::run_until_idle(&worker, "w1", 100).await;
    let before = stored_once(&s).await;
    assert_eq!(before, s.candidate_mail().await);
    let later = s.mail_with(s.mailbox, &[LATER]).await;
    let only_later: BTreeSet<String> = later.difference(&before).cloned().collect();
    assert!(
        !only_later.is_empty(),
        "the mailbox has mail with {LATER} alone"
    );

    let token = s.world.app.api_token(&s.riley).await;
    let api = s.world.app.api(&token);
    let candidate = match how {
        Gains::CreatedOnThePage => {
            let client = s
                .world
                .app
                .signed_in("riley@talent.example", "riley-password")
                .await;
            let form = client
                .get(s.world.app.at("/candidates/new"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let csrf = hirewire_server::testing::hidden_csrf(&form).unwrap();
            let res = client
                .post(s.world.app.at("/candidates/new"))
                .form(&[
                    ("_csrf", csrf.as_str()),
                    ("name", "Dana Wu"),
                    ("emails", LATER),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 303);
            let to = res.headers()["location"].to_str().unwrap();
            CandidateId(to.rsplit('/').next().unwrap().parse().unwrap())
        }
        Gains::CreatedThroughTheApi => {
            let res = api
                .post("/candidates")
                .json(&json!({"name": "Dana Wu", "emails": [LATER]}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            CandidateId(
                res.json::<serde_json::Value>().await.unwrap()["id"]
                    .as_i64()
                    .unwrap(),
            )
        }
        Gains::AddedThroughTheApi => {
            let c = s.candidates[0];
            assert!(
                timeline_message_ids(&s, &token, c)
                    .await
                    .is_disjoint(&only_later)
            );
            let res = api
                .post(&format!("/candidates/{c}/addresses"))
                .json(&json!({"email": LATER}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            c
        }
    };
    // The request queued the search (beside the inbox's next sync step), and
    // asking again queues no second one.
    let queued = || async {
        s.world
            .app
            .store
            .count_jobs(JobStatus::Queued)
            .await
            .unwrap()
    };
    assert_eq!(queued().await, 2, "the sync step and the search");
    sync::candidate_addresses_added(&worker, s.org, &[EmailAddress::parse(LATER).unwrap()]).await;
    assert_eq!(queued().await, 2, "one search per inbox and address");
    let steps = sync::run_until_idle(&worker, "w1", 10).await;
    assert!(
        matches!(
            steps.as_slice(),
            [SyncOutcome::AddressSearched { searched: true, report, .. }] if report.stored == only_later.len() as u64
        ),
        "{steps:?}"
    );
    let on_timeline = timeline_message_ids(&s, &token, candidate).await;
    assert!(
        later.is_subset(&on_timeline),
        "every old message with the address is on the candidate's timeline: missing {:?}",
        later.difference(&on_timeline).collect::<Vec<_>>()
    );
    let mut all = s.candidate_mail().await;
    all.extend(later.iter().cloned());
    assert_eq!(stored_once(&s).await, all);

    // Later syncs find the same messages and store no copy; the address's new mail arrives as usual.
    let reply = s
        .inject_reply(LATER, only_later.iter().next().unwrap())
        .await;
    all.insert(reply.clone());
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    sync::run_until_idle(&worker, "w1", 10).await;
    assert!(
        timeline_message_ids(&s, &token, candidate)
            .await
            .contains(&reply)
    );
    let reply2 = s
        .inject_reply(LATER, only_later.iter().next().unwrap())
        .await;
    all.insert(reply2);
    let expire = if provider == "microsoft" {
        "delta-tokens/expire"
    } else {
        "history/expire"
    };
    s.world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{}/{expire}", s.mailbox),
            Some(json!({})),
        )
        .await;
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    let steps = sync::run_until_idle(&worker, "w1", 100).await;
    assert!(
        matches!(steps.first(), Some(SyncOutcome::Resync { .. })),
        "{steps:?}"
    );
    assert_eq!(stored_once(&s).await, all);
    let state = s
        .world
        .app
        .store
        .mail_sync_state(s.grant().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages_stored, all.len() as u64);
}

/// After the backfill, one stored Inbox message is deleted in the mailbox
/// and another is archived (moved out of Inbox); the next incremental step
/// takes the deleted one off the timeline and keeps the archived one (Graph
/// reports both as `@removed`; only the deleted one is gone).
async fn deleted_mail_leaves_and_archived_mail_stays(db: TestDb, provider: &str) {
    let s = scenario(&db, provider).await;
    let worker = s.worker();
    sync::run_until_idle(&worker, "w1", 100).await;
    let before = stored_once(&s).await;
    let list = s
        .world
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{}/messages?folder=inbox", s.mailbox),
            None,
        )
        .await;
    let in_inbox: Vec<(String, String)> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                normalize_message_id(m["internet_message_id"].as_str().unwrap()).unwrap(),
            )
        })
        .filter(|(_, mid)| before.contains(mid))
        .collect();
    let [(deleted, deleted_mid), (archived, archived_mid), ..] = in_inbox.as_slice() else {
        panic!("two stored Inbox messages: {in_inbox:?}");
    };
    s.world
        .control(
            Method::DELETE,
            &format!("/_sandbox/mailboxes/{}/messages/{deleted}", s.mailbox),
            None,
        )
        .await;
    s.world
        .control(
            Method::PATCH,
            &format!("/_sandbox/mailboxes/{}/messages/{archived}", s.mailbox),
            Some(json!({"folder": "archive"})),
        )
        .await;
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    let steps = sync::run_until_idle(&worker, "w1", 10).await;
    assert!(
        matches!(steps.as_slice(), [SyncOutcome::Incremental { report, .. }] if report.removed == 1),
        "{steps:?}"
    );
    let after = stored_once(&s).await;
    let mut expected = before.clone();
    expected.remove(deleted_mid);
    assert_eq!(after, expected);
    assert!(after.contains(archived_mid), "archived mail stays");
    assert!(
        !s.stored().await.contains(deleted_mid),
        "not on the timeline"
    );
    let state = s
        .world
        .app
        .store
        .mail_sync_state(s.grant().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages_stored, expected.len() as u64);
    // The removal is not replayed into anything on the next step.
    s.world.app.clock.advance(SignedDuration::from_secs(60));
    sync::run_until_idle(&worker, "w1", 10).await;
    assert_eq!(stored_once(&s).await, expected);
}

both_backends! {
    async fn microsoft_mail_deleted_in_the_mailbox_leaves_the_timeline_and_archived_mail_stays(db: TestDb) {
        deleted_mail_leaves_and_archived_mail_stays(db, "microsoft").await;
    }

    async fn gmail_mail_deleted_in_the_mailbox_leaves_the_timeline_and_archived_mail_stays(db: TestDb) {
        deleted_mail_leaves_and_archived_mail_stays(db, "google").await;
    }

    async fn microsoft_a_candidates_added_address_brings_the_old_mail_with_it_to_the_timeline(db: TestDb) {
        an_added_address_brings_its_old_mail(db, "microsoft", Gains::AddedThroughTheApi).await;
    }

    async fn gmail_a_candidates_added_address_brings_the_old_mail_with_it_to_the_timeline(db: TestDb) {
        an_added_address_brings_its_old_mail(db, "google", Gains::AddedThroughTheApi).await;
    }

    async fn a_candidate_created_through_the_api_after_the_backfill_gets_their_old_mail(db: TestDb) {
        an_added_address_brings_its_old_mail(db, "google", Gains::CreatedThroughTheApi).await;
    }

    async fn a_candidate_created_on_the_page_after_the_backfill_gets_their_old_mail(db: TestDb) {
        an_added_address_brings_its_old_mail(db, "microsoft", Gains::CreatedOnThePage).await;
    }

    async fn an_address_search_before_the_sync_started_leaves_it_to_the_backfill(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        // Queued before the sync's first step, the search runs first and finds no state.
        let grant = s.grant().await.id;
        sync::enqueue_address_search_at(&worker, grant, LATER, worker.now() - SignedDuration::from_secs(1))
            .await
            .unwrap();
        let first = sync::run_one(&worker, "w1").await;
        assert!(
            matches!(first, Some(SyncOutcome::AddressSearched { searched: false, .. })),
            "{first:?}"
        );
        sync::run_until_idle(&worker, "w1", 100).await;
        assert_eq!(stored_once(&s).await, s.candidate_mail().await);
    }

    async fn a_graph_backfill_fetches_only_the_candidate_mail_whole(db: TestDb) {
        only_candidate_mail_is_fetched_whole(db, "microsoft").await;
    }

    async fn a_gmail_backfill_reads_headers_first_and_fetches_only_the_candidate_mail_whole(db: TestDb) {
        only_candidate_mail_is_fetched_whole(db, "google").await;
    }

    async fn microsoft_backfill_stores_exactly_the_candidate_mail_and_a_reply_arrives_on_the_next_incremental_step(db: TestDb) {
        backfill_then_a_reply_arrives(db, "microsoft").await;
    }

    async fn gmail_backfill_stores_exactly_the_candidate_mail_and_a_reply_arrives_on_the_next_incremental_step(db: TestDb) {
        backfill_then_a_reply_arrives(db, "google").await;
    }

    async fn an_expired_graph_delta_token_triggers_a_full_resync_without_duplicates(db: TestDb) {
        an_expired_cursor_resyncs_without_duplicates(db, "microsoft").await;
    }

    async fn a_stale_gmail_history_id_triggers_a_full_resync_without_duplicates(db: TestDb) {
        an_expired_cursor_resyncs_without_duplicates(db, "google").await;
    }

    async fn a_throttled_step_is_retried_after_the_providers_delay_and_not_at_once(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        s.world
            .control(
                Method::POST,
                "/_sandbox/faults",
                Some(json!({"endpoint": "graph.messages*", "user": s.mailbox, "fault": {"kind": "throttle", "retry_after_secs": 120}})),
            )
            .await;
        let now = worker.now();
        let outcome = sync::run_one(&worker, "w1").await;
        let Some(SyncOutcome::Retry { retry_at: Some(at), .. }) = outcome else {
            panic!("expected a retry, got {outcome:?}");
        };
        assert!(at >= now + SignedDuration::from_secs(120), "{at} honours Retry-After");
        assert!(sync::run_one(&worker, "w1").await.is_none(), "no tight loop");
        assert_eq!(s.world.app.store.count_jobs(JobStatus::Queued).await.unwrap(), 1);
        let state = s.world.app.store.mail_sync_state(s.grant().await.id).await.unwrap().unwrap();
        assert!(state.last_error.is_some_and(|e| e.contains("throttled")));

        s.world.control(Method::DELETE, "/_sandbox/faults", None).await;
        s.world.app.clock.advance(SignedDuration::from_secs(121));
        let outcome = sync::run_one(&worker, "w1").await;
        assert!(matches!(outcome, Some(SyncOutcome::Started { .. })), "{outcome:?}");
    }

    async fn email_access_turned_off_pauses_the_sync_without_reading_and_raising_it_resumes(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        s.world.use_provider(s.org, "microsoft", None, AccessLevelSetting::Off).await;
        s.world.control(Method::DELETE, "/_sandbox/counters", None).await;
        let outcome = sync::run_one(&worker, "w1").await;
        assert!(matches!(outcome, Some(SyncOutcome::Paused { .. })), "{outcome:?}");
        assert_eq!(s.mail_requests().await, 0, "nothing is read while paused");
        assert!(sync::run_one(&worker, "w1").await.is_none(), "checked again only after the interval");
        s.world.use_provider(s.org, "microsoft", None, AccessLevelSetting::SendAndView).await;
        s.world.app.clock.advance(SignedDuration::from_secs(60));
        let outcome = sync::run_one(&worker, "w1").await;
        assert!(matches!(outcome, Some(SyncOutcome::Started { .. })), "{outcome:?}");
    }

    async fn a_message_that_cannot_be_read_is_skipped_and_counted_and_the_rest_is_stored(db: TestDb) {
        let s = scenario(&db, "google").await;
        let raw = format!(
            "To: {}\r\nSubject: no sender\r\nMessage-ID: <no-from@broken.example>\r\nDate: Thu, 01 Oct 2026 10:00:00 +0000\r\n\r\nHello\r\n",
            CANDIDATES[0]
        );
        s.world
            .control(
                Method::POST,
                &format!("/_sandbox/mailboxes/{}/messages", s.mailbox),
                Some(json!({"raw": raw, "received_at": "2026-10-01T10:00:00Z"})),
            )
            .await;
        let worker = s.worker();
        let steps = sync::run_until_idle(&worker, "w1", 100).await;
        let unreadable: u64 = steps
            .iter()
            .map(|o| match o {
                SyncOutcome::Page { report, .. } => report.unreadable,
                _ => 0,
            })
            .sum();
        assert_eq!(unreadable, 1, "{steps:?}");
        let mut expected = s.candidate_mail().await;
        assert!(expected.remove("no-from@broken.example"));
        assert_eq!(s.stored().await, expected);
    }

    async fn reauthorizing_with_another_mailbox_starts_the_sync_over_for_that_mailbox(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        sync::run_until_idle(&worker, "w1", 100).await;
        let first = s.stored().await;
        let other = "ben@acme.example";
        s.world
            .control(
                Method::POST,
                &format!("/_sandbox/mailboxes/{other}/generate"),
                Some(json!({
                    "n": 20, "seed": 11, "candidates": CANDIDATES, "candidate_share": 0.5,
                    "start": "2026-03-01", "end": "2026-11-01"
                })),
            )
            .await;
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let Landing::Redirect(url) = s
            .world
            .authorize(&client, "/settings/email-calendar/inbox/authorize", &[], other, Answer::AcceptAll)
            .await
        else {
            panic!("stuck at the sandbox")
        };
        client.get(url).send().await.unwrap();
        let grant = s.grant().await;
        assert_eq!(grant.account_address.as_deref(), Some(other));
        let state = s.world.app.store.mail_sync_state(grant.id).await.unwrap().unwrap();
        assert_eq!(state.phase, SyncPhase::Backfill, "started over");
        assert!(state.incremental_cursor.is_none() && state.backfill_cursor.is_none());
        // The queued incremental step (due within one interval) finds the reset state.
        s.world.app.clock.advance(SignedDuration::from_secs(60));
        let steps = sync::run_until_idle(&worker, "w1", 100).await;
        assert!(matches!(steps.first(), Some(SyncOutcome::Started { .. })), "{steps:?}");
        let ben = s.candidate_mail_of(other).await;
        assert!(!ben.is_empty());
        let expected: BTreeSet<String> = first.union(&ben).cloned().collect();
        assert_eq!(s.stored().await, expected, "the earlier mailbox's mail stays, the new one's is added");
    }

    async fn background_workers_sync_a_mailbox_on_their_own(db: TestDb) {
        let s = scenario(&db, "google").await;
        let mut config = s.worker().config.clone();
        config.sync.poll_interval = std::time::Duration::from_millis(10);
        let state = AppState::new(
            config,
            s.world.app.store.clone(),
            s.world.app.state.keyring.clone(),
            Arc::new(s.world.app.clock.clone()),
        );
        let workers = sync::spawn_workers(state, 2);
        let expected = s.candidate_mail().await;
        let mut stored = BTreeSet::new();
        for _ in 0..400 {
            stored = s.stored().await;
            if stored == expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        workers.iter().for_each(tokio::task::JoinHandle::abort);
        assert_eq!(stored, expected);
    }

    async fn deauthorizing_stops_the_sync_within_one_cycle_without_fetching(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        sync::run_until_idle(&worker, "w1", 100).await;
        integrations::deauthorize(&s.world.app.state, &s.riley, CapabilityKind::Inbox)
            .await
            .unwrap();
        s.world.control(Method::DELETE, "/_sandbox/counters", None).await;
        s.world.app.clock.advance(SignedDuration::from_secs(60));
        let outcome = sync::run_one(&worker, "w1").await;
        assert!(
            matches!(outcome, Some(SyncOutcome::Stopped { why: StopReason::GrantGone, .. })),
            "{outcome:?}"
        );
        assert_eq!(s.mail_requests().await, 0, "nothing was fetched");
        s.world.app.clock.advance(SignedDuration::from_secs(3600));
        assert!(sync::run_one(&worker, "w1").await.is_none(), "no further step");
        assert_eq!(s.world.app.store.count_jobs(JobStatus::Queued).await.unwrap(), 0);
    }

    async fn deauthorizing_keeps_synced_mail_unless_the_org_purges_it(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let worker = s.worker();
        sync::run_until_idle(&worker, "w1", 100).await;
        let synced = s.stored().await;
        assert!(!synced.is_empty());
        // Kept by default.
        let kept = integrations::deauthorize(&s.world.app.state, &s.riley, CapabilityKind::Inbox).await.unwrap();
        assert!(kept.message(None).contains("stays"), "{kept:?}");
        assert_eq!(s.stored().await, synced);
        // Reauthorize, sync again, and deauthorize with the org's purge setting on.
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        match s.world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], s.mailbox, Answer::AcceptAll).await {
            Landing::Redirect(url) => {
                client.get(url).send().await.unwrap();
            }
            Landing::Page(status, html) => panic!("{status}: {html}"),
        }
        sync::run_until_idle(&worker, "w1", 100).await;
        let mut settings = s.world.app.store.provider_settings(s.riley.org_id).await.unwrap().unwrap();
        settings.purge_on_deauthorize = true;
        s.world.app.store.save_provider_settings(&settings).await.unwrap();
        let purged = integrations::deauthorize(&s.world.app.state, &s.riley, CapabilityKind::Inbox).await.unwrap();
        // Exactly this grant's copies go; the first grant's kept mail stays.
        assert!(purged.message(None).contains(&format!("The {} email(s) synced from this inbox were deleted", synced.len())), "{purged:?}");
        assert_eq!(s.stored().await, synced, "the mail kept at the first deauthorization is untouched");
    }

    async fn two_instances_never_sync_one_mailbox_at_once(db: TestDb) {
        let s = scenario(&db, "microsoft").await;
        let one = s.worker();
        let other_store = db.open_another().await.unwrap();
        let other = AppState::new(
            one.config.clone(),
            other_store,
            one.keyring.clone(),
            Arc::new(s.world.app.clock.clone()),
        );
        // Slow steps, so both instances try while one holds the lease.
        s.world
            .control(
                Method::POST,
                "/_sandbox/faults",
                Some(json!({"endpoint": "graph.messages*", "fault": {"kind": "delay", "millis": 400}})),
            )
            .await;
        for _ in 0..3 {
            let (a, b) = tokio::join!(sync::run_one(&one, "one"), sync::run_one(&other, "other"));
            assert!(
                a.is_some() != b.is_some(),
                "exactly one instance runs the step: {a:?} / {b:?}"
            );
        }
        s.world.control(Method::DELETE, "/_sandbox/faults", None).await;
        sync::run_until_idle(&other, "other", 100).await;
        assert_eq!(s.stored().await, s.candidate_mail().await);
    }
}
