//! Email Connect (issue 8): recruiters send and schedule email to candidates
//! through their own mailbox, against the provider sandbox on both storage
//! backends. The outbox worker is run step by step (`outbox::run_one`) on the
//! app's manual clock.

use std::sync::Arc;
use std::time::Duration;

use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::{CandidateId, OrgId};
use hirewire_server::AppState;
use hirewire_server::flags;
use hirewire_server::outbox::{self, ComposeInput, Readiness, SubmitError, Turn};
use hirewire_server::sync;
use hirewire_server::testing::{Answer, Landing, RECRUITER, World};
use hirewire_store::testing::TestDb;
use hirewire_store::{
    AccessLevelSetting, FlagActor, FlagEdit, FlagMode, MailViewer, OutboxAttachment, OutboxStatus,
    TimelineItem, User, both_backends, normalize_message_id,
};
use jiff::SignedDuration;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Scenario {
    world: World,
    org: OrgId,
    riley: User,
    /// Riley's sandbox mailbox.
    mailbox: &'static str,
    /// A sandbox user at the other provider: the candidate's address.
    candidate_mailbox: &'static str,
    candidate: CandidateId,
}

fn mailboxes(provider: &str) -> (&'static str, &'static str, &'static str) {
    if provider == "microsoft" {
        ("adele@acme.example", "acme.example", "hank@globex.example")
    } else {
        (
            "hank@globex.example",
            "globex.example",
            "adele@acme.example",
        )
    }
}

/// An org on `provider` at `access`, the recruiter Riley (inbox authorized
/// when `authorize`), and a candidate whose address is a sandbox mailbox.
async fn scenario(
    db: &TestDb,
    provider: &str,
    access: AccessLevelSetting,
    authorize: bool,
) -> Scenario {
    let world = World::start(db).await;
    let (mailbox, domain, candidate_mailbox) = mailboxes(provider);
    let org = world.app.org("Talent Co", &[domain]).await;
    world
        .app
        .user(org, "riley@talent.example", RECRUITER, "riley-password")
        .await;
    world.use_provider(org, provider, None, access).await;
    let candidate = world
        .app
        .store
        .create_candidate(
            org,
            "Jordan Rivers",
            &[
                EmailAddress::parse(candidate_mailbox).unwrap(),
                EmailAddress::parse("jordan.other@talentmail.example").unwrap(),
            ],
            world.app.now(),
        )
        .await
        .unwrap()
        .id;
    if authorize {
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
        candidate_mailbox,
        candidate,
    }
}

impl Scenario {
    /// An instance on the same store, keys and clock with test-speed outbox settings.
    fn worker(&self, edit: impl FnOnce(&mut hirewire_server::outbox::OutboxConfig)) -> AppState {
        let app = &self.world.app;
        let mut config = app.state.config.clone();
        config.outbox.pacing = None;
        config.outbox.max_attempts = 3;
        config.outbox.backoff_base = Duration::from_secs(10);
        edit(&mut config.outbox);
        AppState::new(
            config,
            app.store.clone(),
            app.state.keyring.clone(),
            Arc::new(app.clock.clone()),
        )
    }

    fn input(&self, subject: &str) -> ComposeInput {
        ComposeInput {
            to: vec![self.candidate_mailbox.to_owned()],
            subject: subject.to_owned(),
            body_markdown: "Hello **Jordan**,\n\nAre you free on Tuesday?".into(),
            ..ComposeInput::default()
        }
    }

    async fn sent_records(&self) -> Vec<Value> {
        let r = self
            .world
            .control(
                Method::GET,
                &format!("/_sandbox/mailboxes/{}/sent", self.mailbox),
                None,
            )
            .await;
        r["value"].as_array().cloned().unwrap_or_default()
    }

    /// Sends recorded by the sandbox with this Message-ID.
    async fn sends_of(&self, message_id: &str) -> usize {
        self.sent_records()
            .await
            .iter()
            .filter(|r| {
                r["message_id"]
                    .as_str()
                    .and_then(normalize_message_id)
                    .as_deref()
                    == Some(message_id)
            })
            .count()
    }

    /// Message-IDs in a sandbox mailbox.
    async fn mailbox_ids(&self, mailbox: &str) -> Vec<String> {
        let list = self
            .world
            .control(
                Method::GET,
                &format!("/_sandbox/mailboxes/{mailbox}/messages"),
                None,
            )
            .await;
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["internet_message_id"]
                    .as_str()
                    .and_then(normalize_message_id)
            })
            .collect()
    }

    fn advance(&self, secs: i64) {
        self.world
            .app
            .clock
            .advance(SignedDuration::from_secs(secs));
    }
}

async fn send_now_lands_with_the_candidate_and_syncs_once(db: TestDb, provider: &str) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    let mut input = s.input("Interview next week");
    input.attachments = vec![OutboxAttachment {
        filename: "role.pdf".into(),
        content_type: "application/pdf".into(),
        bytes: b"%PDF-1.4 the role".to_vec(),
    }];
    let item = outbox::submit(&w, &s.riley, s.candidate, input)
        .await
        .unwrap();
    assert_eq!(item.status, OutboxStatus::Queued);
    assert_eq!(
        s.sends_of(&item.message_id).await,
        0,
        "nothing is sent before the worker runs"
    );
    let client = s
        .world
        .app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    let url = s.world.app.at(&format!("/candidates/{}", s.candidate));
    let row = |page: &str| {
        let start = page
            .find(&format!("id=\"outbox-{}\"", item.id))
            .expect("the message is listed");
        page[start..].split("</li>").next().unwrap().to_owned()
    };
    let page = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        row(&page).contains("<strong class=\"status\">Sending</strong>"),
        "shown at once as sending: {}",
        row(&page)
    );
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(item.id))
    );
    let sent = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.status, OutboxStatus::Sent);
    assert!(sent.provider_message_id.is_some(), "{sent:?}");
    let page = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        row(&page).contains("<strong class=\"status\">Sent</strong>"),
        "then as sent: {}",
        row(&page)
    );
    assert_eq!(s.sends_of(&item.message_id).await, 1);
    assert!(
        s.mailbox_ids(s.candidate_mailbox)
            .await
            .contains(&item.message_id),
        "delivered to the candidate"
    );
    let record = s
        .sent_records()
        .await
        .into_iter()
        .find(|r| {
            r["message_id"]
                .as_str()
                .and_then(normalize_message_id)
                .as_deref()
                == Some(item.message_id.as_str())
        })
        .unwrap();
    assert_eq!(record["subject"], "Interview next week");
    assert_eq!(record["attachments"], json!(["role.pdf"]));

    // After a sync, the timeline shows it once.
    let steps = sync::run_until_idle(&w, "w1", 100).await;
    assert!(!steps.is_empty());
    sync::run_until_idle(&w, "w1", 100).await;
    let page = s
        .world
        .app
        .store
        .candidate_timeline(
            s.org,
            s.candidate,
            MailViewer {
                user: s.riley.id,
                is_admin: false,
            },
            None,
            100,
        )
        .await
        .unwrap();
    let mut copies = 0;
    for i in page.items {
        if let TimelineItem::Email(c) = i {
            let msgs = s
                .world
                .app
                .store
                .thread_messages(
                    s.org,
                    c.thread_id,
                    MailViewer {
                        user: s.riley.id,
                        is_admin: false,
                    },
                )
                .await
                .unwrap();
            copies += msgs
                .iter()
                .filter(|m| m.message_id_header.as_deref() == Some(item.message_id.as_str()))
                .count();
        }
    }
    assert_eq!(
        copies, 1,
        "the sent message appears exactly once in the timeline"
    );
}

async fn a_scheduled_send_fires_at_its_time_and_can_be_edited_or_cancelled_before(
    db: TestDb,
    provider: &str,
) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    let store = &s.world.app.store;
    let at = s.world.app.now() + SignedDuration::from_hours(2);
    let mut input = s.input("Later");
    input.send_at = Some(at);
    let later = outbox::submit(&w, &s.riley, s.candidate, input.clone())
        .await
        .unwrap();
    input.subject = "Never".into();
    let never = outbox::submit(&w, &s.riley, s.candidate, input)
        .await
        .unwrap();
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        None,
        "nothing is due yet"
    );
    let edited = store
        .edit_outbox(
            s.org,
            later.id,
            &hirewire_store::OutboxEdit {
                subject: Some("Later, edited"),
                ..Default::default()
            },
            s.world.app.now(),
        )
        .await
        .unwrap();
    assert_eq!(edited.subject, "Later, edited");
    store
        .cancel_outbox(s.org, never.id, s.world.app.now())
        .await
        .unwrap();
    s.advance(2 * 3600 - 1);
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        None,
        "one second early"
    );
    s.advance(1);
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(later.id))
    );
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        None,
        "the cancelled one never goes out"
    );
    assert_eq!(s.sends_of(&later.message_id).await, 1);
    assert_eq!(s.sends_of(&never.message_id).await, 0);
    let record = s.sent_records().await;
    assert!(record.iter().any(|r| r["subject"] == "Later, edited"));
}

async fn an_uncertain_send_is_reconciled_as_sent_without_a_second_send(db: TestDb, provider: &str) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    s.world
        .control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"mode": "gateway_timeout", "count": 1})),
        )
        .await;
    let item = outbox::submit(&w, &s.riley, s.candidate, s.input("Uncertain"))
        .await
        .unwrap();
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Retry(item.id))
    );
    let pending = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    assert!(pending.needs_lookup, "{pending:?}");
    assert_eq!(
        s.sends_of(&item.message_id).await,
        1,
        "the provider did take it"
    );
    s.advance(60);
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Reconciled(item.id))
    );
    let done = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, OutboxStatus::Sent);
    assert_eq!(s.sends_of(&item.message_id).await, 1, "no second send");
}

async fn a_lookup_that_cannot_settle_the_outcome_needs_attention_and_never_resends(
    db: TestDb,
    provider: &str,
) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|c| c.max_attempts = 2);
    s.world
        .control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"mode": "gateway_timeout", "count": 1})),
        )
        .await;
    let item = outbox::submit(&w, &s.riley, s.candidate, s.input("Unknown"))
        .await
        .unwrap();
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Retry(item.id))
    );
    let endpoint = if provider == "microsoft" {
        "graph.messages.list"
    } else {
        "gmail.users.messages.list"
    };
    s.world
        .control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": endpoint, "fault": {"kind": "server_error", "status": 503}, "count": 100})))
        .await;
    s.advance(60);
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::NeedsAttention(item.id))
    );
    let item = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, OutboxStatus::NeedsAttention);
    assert!(
        item.last_error
            .as_deref()
            .unwrap_or("")
            .contains("will not send it again"),
        "{item:?}"
    );
    s.advance(3600);
    assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), None);
    assert_eq!(s.sends_of(&item.message_id).await, 1);
}

/// The provider did take the message but answered 504; the lookup that
/// follows is refused by the mailbox (it cannot search by Message-ID), so
/// nobody can tell whether it went out: the message needs a person, the
/// recruiter is told on the candidate page and the Scheduled list, and it is
/// never sent again.
async fn an_uncertain_send_then_an_inconclusive_lookup_needs_attention_and_is_never_resent(
    db: TestDb,
    provider: &str,
) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|c| c.max_attempts = 5);
    s.world
        .control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"mode": "gateway_timeout", "count": 1})),
        )
        .await;
    let item = outbox::submit(&w, &s.riley, s.candidate, s.input("Did it go?"))
        .await
        .unwrap();
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Retry(item.id))
    );
    assert_eq!(
        s.sends_of(&item.message_id).await,
        1,
        "the provider took it"
    );
    s.world
        .control(
            Method::POST,
            "/_sandbox/send/lookup_refusals",
            Some(json!({"user": s.mailbox})),
        )
        .await;
    s.advance(60);
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::NeedsAttention(item.id)),
        "settled by the first refused lookup, with attempts to spare"
    );
    let held = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.status, OutboxStatus::NeedsAttention);
    assert_eq!(held.attempts, 2, "one send and one lookup: {held:?}");
    let why = held.last_error.clone().unwrap_or_default();
    let provider_words = if provider == "microsoft" {
        "InefficientFilter"
    } else {
        "failedPrecondition"
    };
    assert!(
        why.contains(provider_words) && why.contains("will not send it again"),
        "the reason names the mailbox's answer and that nothing is resent: {why}"
    );
    let client = s
        .world
        .app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    for path in [format!("/candidates/{}", s.candidate), "/scheduled".into()] {
        let page = client
            .get(s.world.app.at(&path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let start = page
            .find(&format!("id=\"outbox-{}\"", item.id))
            .unwrap_or_else(|| panic!("{path} lists the message: {page}"));
        let row = page[start..].split("</li>").next().unwrap();
        assert!(
            row.contains("Needs attention")
                && row.contains(provider_words)
                && row.contains("will not send it again"),
            "{path} shows the recruiter it needs attention and why: {row}"
        );
    }
    // Nothing ever sends it again, however long the workers keep going.
    s.world
        .control(Method::DELETE, "/_sandbox/send/lookup_refusals", None)
        .await;
    s.advance(24 * 3600);
    assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), None);
    assert_eq!(s.sends_of(&item.message_id).await, 1, "never resent");
}

async fn a_reply_continues_the_timeline_conversation(db: TestDb, provider: &str) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    let injected = s
        .world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{}/messages", s.mailbox),
            Some(json!({"from": s.candidate_mailbox, "to": [s.mailbox], "subject": "Interview", "body": "When can we talk?"})),
        )
        .await;
    let parent = normalize_message_id(injected["internet_message_id"].as_str().unwrap()).unwrap();
    sync::run_until_idle(&w, "w1", 100).await;
    let viewer = MailViewer {
        user: s.riley.id,
        is_admin: false,
    };
    let page = s
        .world
        .app
        .store
        .candidate_timeline(s.org, s.candidate, viewer, None, 100)
        .await
        .unwrap();
    let thread = page
        .items
        .iter()
        .find_map(|i| match i {
            TimelineItem::Email(c) if c.thread_key == parent => Some(c.thread_id),
            _ => None,
        })
        .expect("the candidate's mail is on the timeline");
    let mut input = s.input("");
    input.reply_to_thread = Some(thread);
    let item = outbox::submit(&w, &s.riley, s.candidate, input)
        .await
        .unwrap();
    assert_eq!(item.subject, "Re: Interview");
    assert_eq!(item.in_reply_to.as_deref(), Some(parent.as_str()));
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(item.id))
    );
    let record = s
        .sent_records()
        .await
        .into_iter()
        .find(|r| {
            r["message_id"]
                .as_str()
                .and_then(normalize_message_id)
                .as_deref()
                == Some(item.message_id.as_str())
        })
        .unwrap();
    let refs: Vec<String> = record["references"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str().and_then(normalize_message_id))
        .collect();
    // The sandbox lists the parents named by In-Reply-To and References together.
    let mut refs = refs;
    refs.dedup();
    assert_eq!(refs, vec![parent.clone()], "{record}");
    let sent = s
        .world
        .app
        .store
        .outbox_item(s.org, item.id)
        .await
        .unwrap()
        .unwrap();
    if provider == "google" {
        assert_eq!(
            sent.provider_thread_id.as_deref(),
            injected["thread_id"].as_str(),
            "Gmail keeps it in the thread"
        );
    }
    // After the next sync the reply is in the same conversation, once.
    s.advance(3600);
    sync::run_until_idle(&w, "w1", 100).await;
    let msgs = s
        .world
        .app
        .store
        .thread_messages(s.org, thread, viewer)
        .await
        .unwrap();
    let ids: Vec<_> = msgs
        .iter()
        .filter_map(|m| m.message_id_header.clone())
        .collect();
    assert_eq!(ids, vec![parent, item.message_id.clone()]);
}

async fn a_worker_that_died_mid_send_is_followed_by_a_lookup_and_exactly_one_send(
    db: TestDb,
    provider: &str,
) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|c| c.lease = Duration::from_secs(120));
    let item = outbox::submit(&w, &s.riley, s.candidate, s.input("After a crash"))
        .await
        .unwrap();
    // A worker claims it, records the attempt, and dies before the provider answers.
    let store = &s.world.app.store;
    let claimed = store
        .claim_outbox("dead", s.world.app.now(), Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    store
        .begin_outbox_send(
            item.id,
            claimed.fencing_token,
            s.world.app.now(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(
        outbox::run_one(&w, "w2").await.unwrap(),
        None,
        "held by the dead worker's lease"
    );
    s.advance(121);
    assert_eq!(
        outbox::run_one(&w, "w2").await.unwrap(),
        Some(Turn::Sent(item.id)),
        "not found by the lookup, so sent"
    );
    assert_eq!(s.sends_of(&item.message_id).await, 1);
    assert!(
        matches!(
            store
                .finish_outbox(
                    item.id,
                    claimed.fencing_token,
                    &hirewire_store::OutboxOutcome::Failed { error: "late" },
                    s.world.app.now()
                )
                .await,
            Err(hirewire_store::StoreError::StaleLease)
        ),
        "the dead worker's token changes nothing"
    );
}

/// Serves `state` (an instance on the scenario's store, keys and clock) on a
/// new loopback port; returns its base URL.
async fn serve(state: AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hirewire_server::serve(
        state,
        listener,
        std::future::pending(),
    ));
    url
}

/// `n` bytes that are not a repeating pattern.
fn file_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The compose form as a browser sends it (multipart), without files.
fn compose_form(csrf: &str, to: &str, subject: &str) -> Form {
    Form::new()
        .text("_csrf", csrf.to_owned())
        .text("to", to.to_owned())
        .text("cc", "lee@talent.example")
        .text("subject", subject.to_owned())
        .text("body", "Please **sign** by Friday.")
        .text("mode", "now")
}

fn file(name: &str, mime: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

impl Scenario {
    /// The files of the message with `message_id` as the candidate's mailbox got it.
    async fn delivered_attachments(&self, message_id: &str) -> Vec<(String, Vec<u8>)> {
        let m = self
            .world
            .control(
                Method::GET,
                &format!(
                    "/_sandbox/mailboxes/{}/messages/{message_id}",
                    self.candidate_mailbox
                ),
                None,
            )
            .await;
        let raw = m["raw"].as_str().expect("the delivered message");
        use mail_parser::MimeHeaders;
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("delivered MIME parses");
        // The transfer-decoded bytes of each file. mail-parser hands a text/*
        // part back as text (converted from its charset), so a base64 part is
        // decoded here from the raw message instead.
        parsed
            .attachments()
            .map(|a| {
                let header = &raw[a.raw_header_offset() as usize..a.raw_body_offset() as usize];
                let bytes = if header
                    .to_ascii_lowercase()
                    .contains("content-transfer-encoding: base64")
                {
                    let b64: String = raw
                        [a.raw_body_offset() as usize..a.raw_end_offset() as usize]
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("a base64 attachment")
                } else {
                    a.contents().to_vec()
                };
                (a.attachment_name().unwrap_or_default().to_owned(), bytes)
            })
            .collect()
    }
}

async fn the_compose_form_sends_attachments_that_arrive_byte_for_byte(db: TestDb, provider: &str) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    let client = s
        .world
        .app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    let url = s.world.app.at(&format!("/candidates/{}", s.candidate));
    let page = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("enctype=\"multipart/form-data\""), "{page}");
    assert!(
        page.contains("id=\"compose-attachments\" name=\"attachments\" type=\"file\" multiple"),
        "{page}"
    );
    assert!(
        page.contains("up to 20 MB each, 25 MB in all"),
        "the limits are shown"
    );
    let csrf = hirewire_server::testing::hidden_csrf(&page).unwrap();
    let small = b"Role: Staff engineer\nTeam: Platform\n".to_vec();
    // Over 3 MB: Graph takes it through an upload session, Gmail through /upload.
    let big = file_bytes(3 * 1024 * 1024 + 512 * 1024, 7);
    let form = compose_form(&csrf, s.candidate_mailbox, "Role details")
        .part("attachments", file("role.txt", "text/plain", small.clone()))
        .part(
            "attachments",
            file("portfolio.bin", "application/octet-stream", big.clone()),
        );
    let resp = client
        .post(
            s.world
                .app
                .at(&format!("/candidates/{}/email", s.candidate)),
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "queued, back to the page");
    let items = s
        .world
        .app
        .store
        .list_outbox(s.org, Default::default())
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    let files: Vec<(&str, &str, u64)> = item
        .attachments
        .iter()
        .map(|a| (a.filename.as_str(), a.content_type.as_str(), a.size))
        .collect();
    assert_eq!(
        files,
        vec![
            ("role.txt", "text/plain", small.len() as u64),
            (
                "portfolio.bin",
                "application/octet-stream",
                big.len() as u64
            )
        ]
    );
    let page = client.get(&url).send().await.unwrap().text().await.unwrap();
    let start = page.find(&format!("id=\"outbox-{}\"", item.id)).unwrap();
    let row = page[start..].split("</li>").next().unwrap();
    assert!(
        row.contains("role.txt (36 B)") && row.contains("portfolio.bin (3.5 MB)"),
        "the outgoing item names its files with their sizes: {row}"
    );
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(item.id))
    );
    let record = s
        .sent_records()
        .await
        .into_iter()
        .find(|r| {
            r["message_id"]
                .as_str()
                .and_then(normalize_message_id)
                .as_deref()
                == Some(item.message_id.as_str())
        })
        .expect("in the sender's Sent");
    assert_eq!(record["attachments"], json!(["role.txt", "portfolio.bin"]));
    let delivered = s.delivered_attachments(&item.message_id).await;
    let names: Vec<&str> = delivered.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["role.txt", "portfolio.bin"],
        "the candidate got both files"
    );
    assert!(delivered[0].1 == small, "role.txt arrives byte for byte");
    assert!(
        delivered[1].1.len() == big.len() && delivered[1].1 == big,
        "portfolio.bin arrives byte for byte ({} of {} bytes)",
        delivered[1].1.len(),
        big.len()
    );
}

async fn the_api_sends_now_and_reports_status_with_the_provider_ids(db: TestDb, provider: &str) {
    let s = scenario(&db, provider, AccessLevelSetting::SendAndView, true).await;
    let w = s.worker(|_| {});
    let token = s.world.app.api_token(&s.riley).await;
    let api = s.world.app.api(&token);
    let resp = api
        .post(&format!("/candidates/{}/emails", s.candidate))
        .json(&json!({"to": [s.candidate_mailbox], "subject": "Now", "body_markdown": "Hello **Jordan**",
            "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["status"], "sending", "{created}");
    assert_eq!(created["editable"], true);
    assert_eq!(created["provider_message_id"], Value::Null);
    assert_eq!(created["attachments"][0]["size"], 5);
    let id = created["id"].as_i64().unwrap();
    let message_id = created["message_id"].as_str().unwrap().to_owned();
    assert!(
        message_id.contains('@'),
        "fixed before any send: {message_id}"
    );
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(hirewire_store::OutboxId(id)))
    );
    let email: Value = api
        .get(&format!("/emails/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(email["status"], "sent", "{email}");
    assert_eq!(email["editable"], false);
    assert_eq!(email["message_id"], message_id.as_str());
    assert!(
        email["provider_message_id"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{email}"
    );
    assert!(
        email["provider_thread_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{email}"
    );
    assert!(email["sent_at"].is_string());
    assert_eq!(s.sends_of(&message_id).await, 1);
    // A sent email can no longer be changed.
    for resp in [
        api.patch(&format!("/scheduled-emails/{id}"))
            .json(&json!({"subject": "Too late"}))
            .send()
            .await
            .unwrap(),
        api.delete(&format!("/scheduled-emails/{id}"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(resp.status(), 409);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "already_sent", "{body}");
    }
    // Sent emails are left out of the scheduled list unless asked for.
    let open: Value = api
        .get("/scheduled-emails")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(open["data"], json!([]));
    let sent: Value = api
        .get("/scheduled-emails?status=sent")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["data"][0]["id"], id);
    assert_eq!(
        sent["data"][0]["provider_message_id"],
        email["provider_message_id"]
    );
}

both_backends! {
    async fn graph_send_now_lands_with_the_candidate_and_appears_once_in_the_timeline(db: TestDb) {
        send_now_lands_with_the_candidate_and_syncs_once(db, "microsoft").await;
    }

    async fn gmail_send_now_lands_with_the_candidate_and_appears_once_in_the_timeline(db: TestDb) {
        send_now_lands_with_the_candidate_and_syncs_once(db, "google").await;
    }

    async fn graph_scheduled_send_fires_at_its_time_edited_and_the_cancelled_one_never(db: TestDb) {
        a_scheduled_send_fires_at_its_time_and_can_be_edited_or_cancelled_before(db, "microsoft").await;
    }

    async fn gmail_scheduled_send_fires_at_its_time_edited_and_the_cancelled_one_never(db: TestDb) {
        a_scheduled_send_fires_at_its_time_and_can_be_edited_or_cancelled_before(db, "google").await;
    }

    async fn graph_uncertain_send_is_reconciled_as_sent_without_a_second_send(db: TestDb) {
        an_uncertain_send_is_reconciled_as_sent_without_a_second_send(db, "microsoft").await;
    }

    async fn gmail_uncertain_send_is_reconciled_as_sent_without_a_second_send(db: TestDb) {
        an_uncertain_send_is_reconciled_as_sent_without_a_second_send(db, "google").await;
    }

    async fn graph_unsettled_lookup_needs_attention_and_never_resends(db: TestDb) {
        a_lookup_that_cannot_settle_the_outcome_needs_attention_and_never_resends(db, "microsoft").await;
    }

    async fn gmail_unsettled_lookup_needs_attention_and_never_resends(db: TestDb) {
        a_lookup_that_cannot_settle_the_outcome_needs_attention_and_never_resends(db, "google").await;
    }

    async fn graph_uncertain_send_then_inconclusive_lookup_needs_attention_never_resent(db: TestDb) {
        an_uncertain_send_then_an_inconclusive_lookup_needs_attention_and_is_never_resent(db, "microsoft").await;
    }

    async fn gmail_uncertain_send_then_inconclusive_lookup_needs_attention_never_resent(db: TestDb) {
        an_uncertain_send_then_an_inconclusive_lookup_needs_attention_and_is_never_resent(db, "google").await;
    }

    async fn graph_reply_continues_the_timeline_conversation(db: TestDb) {
        a_reply_continues_the_timeline_conversation(db, "microsoft").await;
    }

    async fn gmail_reply_continues_the_timeline_conversation_in_its_thread(db: TestDb) {
        a_reply_continues_the_timeline_conversation(db, "google").await;
    }

    async fn graph_send_after_a_worker_died_mid_send_is_looked_up_then_sent_once(db: TestDb) {
        a_worker_that_died_mid_send_is_followed_by_a_lookup_and_exactly_one_send(db, "microsoft").await;
    }

    async fn gmail_send_after_a_worker_died_mid_send_is_looked_up_then_sent_once(db: TestDb) {
        a_worker_that_died_mid_send_is_followed_by_a_lookup_and_exactly_one_send(db, "google").await;
    }

    async fn a_send_the_provider_keeps_refusing_is_retried_with_backoff_then_failed_with_the_reason(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let w = s.worker(|c| c.max_attempts = 2);
        s.world
            .control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": "gmail.users.messages.send", "fault": {"kind": "throttle", "retry_after_secs": 600}, "count": 100})))
            .await;
        let item = outbox::submit(&w, &s.riley, s.candidate, s.input("Busy")).await.unwrap();
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Retry(item.id)));
        let waiting = s.world.app.store.outbox_item(s.org, item.id).await.unwrap().unwrap();
        assert!(waiting.due_at >= s.world.app.now() + SignedDuration::from_secs(600), "the provider's Retry-After is honoured");
        assert!(!waiting.needs_lookup, "a refused send is surely not sent");
        s.advance(600);
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Failed(item.id)));
        let failed = s.world.app.store.outbox_item(s.org, item.id).await.unwrap().unwrap();
        assert_eq!(failed.status, OutboxStatus::Failed);
        assert!(failed.last_error.as_deref().unwrap_or("").contains("Not sent after 2 attempts"), "{failed:?}");
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page = client.get(s.world.app.at("/scheduled")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Not sent after 2 attempts"), "the failure and its reason are listed: {page}");
        assert_eq!(s.sends_of(&item.message_id).await, 0);
    }

    async fn an_attachment_over_the_configured_limit_is_refused_with_a_clear_error(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let w = s.worker(|c| c.max_attachment_bytes = 1024);
        let mut input = s.input("Big file");
        input.attachments = vec![OutboxAttachment { filename: "big.bin".into(), content_type: "application/octet-stream".into(), bytes: vec![0; 2048] }];
        let err = outbox::submit(&w, &s.riley, s.candidate, input).await.unwrap_err();
        assert_eq!(err.code(), "attachment_too_large");
        assert!(err.to_string().contains("big.bin"), "{err}");
        assert!(s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap().is_empty());
    }

    async fn each_permission_gap_says_what_is_missing_on_the_page_and_in_the_api(db: TestDb) {
        // No inbox grant.
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, false).await;
        let r = outbox::readiness(&s.world.app.state, &s.riley).await.unwrap();
        assert_eq!(r.code(), "inbox_not_connected");
        assert!(matches!(r, Readiness::Blocked { reauthorize: true, .. }));
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page = client.get(s.world.app.at(&format!("/candidates/{}", s.candidate))).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Your inbox is not connected"), "{page}");
        assert!(page.contains("id=\"compose-reauthorize\""));
        let token = s.world.app.api_token(&s.riley).await;
        let api = s.world.app.api(&token);
        let resp = api
            .post(&format!("/candidates/{}/emails", s.candidate))
            .json(&json!({"to": [s.candidate_mailbox], "subject": "Hi", "body_markdown": "Hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 409);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "inbox_not_connected");
    }

    async fn a_grant_without_send_permission_or_a_view_only_org_cannot_send(db: TestDb) {
        // Authorized while the org was View only: the grant has no send scope.
        let s = scenario(&db, "google", AccessLevelSetting::ViewOnly, true).await;
        let r = outbox::readiness(&s.world.app.state, &s.riley).await.unwrap();
        assert_eq!(r.code(), "access_view_only");
        assert!(matches!(r, Readiness::Blocked { reauthorize: false, .. }));
        assert!(r.message().contains("Ask your admin"), "{}", r.message());
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page = client.get(s.world.app.at(&format!("/candidates/{}", s.candidate))).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("View only"), "{page}");
        assert!(!page.contains("id=\"compose-form\""));
        // The admin turns on Send & view: now the grant lacks the send scope.
        s.world.use_provider(s.org, "google", None, AccessLevelSetting::SendAndView).await;
        let r = outbox::readiness(&s.world.app.state, &s.riley).await.unwrap();
        assert_eq!(r.code(), "send_permission_missing");
        assert!(r.message().contains("gmail.send"), "{}", r.message());
        assert!(matches!(r, Readiness::Blocked { reauthorize: true, .. }));
        let err = outbox::submit(&s.world.app.state, &s.riley, s.candidate, s.input("Hi")).await.unwrap_err();
        assert_eq!(err.code(), "send_permission_missing");
    }

    async fn the_rollout_flag_gates_compose_and_a_message_queued_before_it_was_turned_off_is_held(db: TestDb) {
        let s = scenario(&db, "microsoft", AccessLevelSetting::SendAndView, true).await;
        let on = s.worker(|_| {});
        let item = outbox::submit(&on, &s.riley, s.candidate, s.input("Held")).await.unwrap();
        // The operator turns Email Connect off (the flag lives in the database).
        let operator = FlagActor { user: None, label: "cli", ip: None };
        let off = FlagEdit { mode: Some(FlagMode::Off), ..FlagEdit::default() };
        let changed = flags::change_email_connect(&on, None, &off, &Default::default(), &operator, true).await.unwrap();
        assert!(matches!(changed, flags::Changed::Saved { .. }));
        let err = outbox::submit(&on, &s.riley, s.candidate, s.input("No")).await.unwrap_err();
        assert!(matches!(err, SubmitError::NotReady(Readiness::NotEnabled)));
        assert_eq!(err.code(), "feature_not_enabled");
        assert_eq!(outbox::run_one(&on, "w1").await.unwrap(), Some(Turn::Waiting(item.id)));
        let held = s.world.app.store.outbox_item(s.org, item.id).await.unwrap().unwrap();
        assert_eq!(held.status, OutboxStatus::Queued);
        assert!(held.hold_reason.as_deref().unwrap_or("").contains("turned off"), "{held:?}");
        assert_eq!(s.sends_of(&item.message_id).await, 0);
        // Back on: it goes out.
        let back = FlagEdit { mode: Some(FlagMode::Everyone), ..FlagEdit::default() };
        flags::change_email_connect(&on, None, &back, &Default::default(), &operator, true).await.unwrap();
        s.advance(3600);
        assert_eq!(outbox::run_one(&on, "w1").await.unwrap(), Some(Turn::Sent(item.id)));
    }

    async fn pacing_holds_a_send_over_the_mailbox_rate_and_says_so(db: TestDb) {
        let s = scenario(&db, "microsoft", AccessLevelSetting::SendAndView, true).await;
        let w = s.worker(|c| c.pacing = Some(outbox::Pacing { per_window: 1, window: Duration::from_secs(60) }));
        let a = outbox::submit(&w, &s.riley, s.candidate, s.input("One")).await.unwrap();
        let b = outbox::submit(&w, &s.riley, s.candidate, s.input("Two")).await.unwrap();
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Sent(a.id)));
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Waiting(b.id)));
        let waiting = s.world.app.store.outbox_item(s.org, b.id).await.unwrap().unwrap();
        assert!(waiting.hold_reason.as_deref().unwrap_or("").contains("sending pace"), "{waiting:?}");
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page = client.get(s.world.app.at(&format!("/candidates/{}", s.candidate))).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("sending pace"), "the page says why it waits");
        s.advance(60);
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Sent(b.id)));
    }

    async fn graph_compose_form_attachments_arrive_byte_for_byte(db: TestDb) {
        the_compose_form_sends_attachments_that_arrive_byte_for_byte(db, "microsoft").await;
    }

    async fn gmail_compose_form_attachments_arrive_byte_for_byte(db: TestDb) {
        the_compose_form_sends_attachments_that_arrive_byte_for_byte(db, "google").await;
    }

    async fn graph_api_send_now_reports_status_and_provider_ids(db: TestDb) {
        the_api_sends_now_and_reports_status_with_the_provider_ids(db, "microsoft").await;
    }

    async fn gmail_api_send_now_reports_status_and_provider_ids(db: TestDb) {
        the_api_sends_now_and_reports_status_with_the_provider_ids(db, "google").await;
    }

    async fn an_upload_over_the_limits_is_refused_on_the_page_keeping_what_was_typed(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let small = serve(s.worker(|c| {
            c.max_attachment_bytes = 64 * 1024;
            c.max_total_attachment_bytes = 96 * 1024;
        }))
        .await;
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page_url = format!("{small}/candidates/{}", s.candidate);
        let post_url = format!("{small}/candidates/{}/email", s.candidate);
        let page = client.get(&page_url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("up to 64 KB each, 96 KB in all"), "{page}");
        let csrf = hirewire_server::testing::hidden_csrf(&page).unwrap();
        let outbox_len = || async { s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap().len() };

        // One file over the per-file limit.
        let form = compose_form(&csrf, s.candidate_mailbox, "Offer letter")
            .part("attachments", file("offer.pdf", "application/pdf", file_bytes(200 * 1024, 1)));
        let resp = client.post(&post_url).multipart(form).send().await.unwrap();
        assert_eq!(resp.status(), 413, "a clear refusal, not a reset connection");
        let page = resp.text().await.unwrap();
        assert!(page.contains("id=\"compose-error\""), "{page}");
        assert!(page.contains("is 200 KB; attachments can be at most 64 KB each."), "{page}");
        assert!(page.contains("value=\"Offer letter\""), "the subject is kept");
        assert!(page.contains("value=\"lee@talent.example\""), "the Cc is kept");
        assert!(page.contains("Please **sign** by Friday.</textarea>"), "the body is kept");
        assert!(page.contains(&format!("value=\"{}\" checked", s.candidate_mailbox)), "the To is kept");
        assert!(!page.contains("value=\"jordan.other@talentmail.example\" checked"), "only the To that was ticked");
        let again = page.split("id=\"compose-files-again\"").nth(1).expect("asks for the files again");
        assert!(again.split("</div>").next().unwrap().contains("offer.pdf"), "{again}");
        assert_eq!(outbox_len().await, 0);

        // Files each under the limit, together over it.
        let form = compose_form(&csrf, s.candidate_mailbox, "Offer letter")
            .part("attachments", file("one.pdf", "application/pdf", file_bytes(60 * 1024, 2)))
            .part("attachments", file("two.pdf", "application/pdf", file_bytes(60 * 1024, 3)));
        let resp = client.post(&post_url).multipart(form).send().await.unwrap();
        assert_eq!(resp.status(), 413);
        let page = resp.text().await.unwrap();
        assert!(page.contains("The attachments add up to more than 96 KB"), "{page}");
        assert_eq!(outbox_len().await, 0);

        // A forged form (no session CSRF token) is refused, with its files.
        let form = compose_form("forged", s.candidate_mailbox, "Forged")
            .part("attachments", file("x.pdf", "application/pdf", file_bytes(1024, 4)));
        let resp = client.post(&post_url).multipart(form).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(outbox_len().await, 0);

        // Within the limits it is queued.
        let form = compose_form(&csrf, s.candidate_mailbox, "Offer letter")
            .part("attachments", file("offer.pdf", "application/pdf", file_bytes(50 * 1024, 5)));
        let resp = client.post(&post_url).multipart(form).send().await.unwrap();
        assert_eq!(resp.status(), 303);
        let items = s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].attachments[0].size, 50 * 1024);
        assert_eq!(items[0].cc, vec!["lee@talent.example".to_owned()]);

        // The API: one file over the limit is 422, a body over the encoded limit 413.
        let token = s.world.app.api_token(&s.riley).await;
        let http = reqwest::Client::new();
        let post = |attachment: Vec<u8>| {
            let b64 = base64_encode(&attachment);
            http.post(format!("{small}/api/v1/candidates/{}/emails", s.candidate))
                .bearer_auth(&token)
                .json(&json!({"to": [s.candidate_mailbox], "subject": "Big", "body_markdown": "x",
                    "attachments": [{"filename": "big.bin", "content_base64": b64}]}))
                .send()
        };
        let resp = post(file_bytes(100 * 1024, 6)).await.unwrap();
        assert_eq!(resp.status(), 422);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "attachment_too_large");
        let resp = post(file_bytes(2 * 1024 * 1024, 7)).await.unwrap();
        assert_eq!(resp.status(), 413);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "request_too_large");
        assert_eq!(outbox_len().await, 1);
    }

    async fn the_api_schedules_edits_and_cancels_an_email_and_replays_an_idempotent_retry(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let token = s.world.app.api_token(&s.riley).await;
        let api = s.world.app.api(&token);
        let at = (s.world.app.now() + SignedDuration::from_hours(24)).to_string();
        let request = json!({"to": [s.candidate_mailbox], "subject": "Tomorrow", "body_markdown": "Hi", "send_at": at,
            "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="}]});
        let post = |body: &Value| {
            api.post(&format!("/candidates/{}/emails", s.candidate))
                .header("Idempotency-Key", "schedule-1")
                .json(body)
                .send()
        };
        let resp = post(&request).await.unwrap();
        assert_eq!(resp.status(), 201);
        let created: Value = resp.json().await.unwrap();
        assert_eq!(created["status"], "scheduled", "{created}");
        assert_eq!(created["send_at"], at.as_str());
        let replay = post(&request).await.unwrap();
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let repeated: Value = replay.json().await.unwrap();
        assert_eq!(repeated["id"], created["id"], "a retry with the same Idempotency-Key returns the same email");
        assert_eq!(repeated["message_id"], created["message_id"]);
        let other = post(&json!({"to": [s.candidate_mailbox], "subject": "Other", "body_markdown": "Hi"})).await.unwrap();
        assert_eq!(other.status(), 422);
        let body: Value = other.json().await.unwrap();
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
        assert_eq!(s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap().len(), 1, "one email");
        let id = created["id"].as_i64().unwrap();

        let list: Value = api.get("/scheduled-emails").send().await.unwrap().json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        assert_eq!(list["data"][0]["status"], "scheduled");
        assert_eq!(list["next_cursor"], Value::Null);
        let one: Value = api.get(&format!("/scheduled-emails/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(one["subject"], "Tomorrow");

        let later = (s.world.app.now() + SignedDuration::from_hours(48)).to_string();
        let resp = api
            .patch(&format!("/scheduled-emails/{id}"))
            .json(&json!({"subject": "Tomorrow, moved", "send_at": later, "to": [s.candidate_mailbox, "JORDAN.OTHER@talentmail.example"], "cc": ["lee@talent.example"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let patched: Value = resp.json().await.unwrap();
        assert_eq!(patched["subject"], "Tomorrow, moved");
        assert_eq!(patched["send_at"], later.as_str());
        assert_eq!(patched["to"], json!([s.candidate_mailbox, "jordan.other@talentmail.example"]));
        assert_eq!(patched["cc"], json!(["lee@talent.example"]));
        for (change, code) in [
            (json!({"subject": "Hi\r\nBcc: x@evil.example"}), "header_injection"),
            (json!({"subject": "  "}), "subject_required"),
            (json!({"to": ["stranger@elsewhere.example"]}), "recipient_not_candidate"),
            (json!({"to": []}), "no_recipient"),
            (json!({"cc": ["not an address"]}), "invalid_address"),
            (json!({"cc": ["a@b.example\r\nBcc: x@evil.example"]}), "header_injection"),
            (json!({"send_at": "tomorrow"}), "invalid_send_at"),
            (json!({"send_at": "2020-01-01T00:00:00Z"}), "send_at_in_past"),
            (json!({"priority": "high"}), "invalid_field"),
        ] {
            let resp = api.patch(&format!("/scheduled-emails/{id}")).json(&change).send().await.unwrap();
            assert_eq!(resp.status(), 422, "{change}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{change}: {body}");
        }
        let unchanged: Value = api.get(&format!("/emails/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(unchanged["subject"], "Tomorrow, moved", "refused edits change nothing");

        let deleted = api.delete(&format!("/scheduled-emails/{id}")).send().await.unwrap();
        assert_eq!(deleted.status(), 200);
        let deleted: Value = deleted.json().await.unwrap();
        assert_eq!(deleted["status"], "cancelled");
        let again = api.delete(&format!("/scheduled-emails/{id}")).send().await.unwrap();
        assert_eq!(again.status(), 409);
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_editable");
        let resp = api.patch(&format!("/scheduled-emails/{id}")).json(&json!({"subject": "x"})).send().await.unwrap();
        assert_eq!(resp.status(), 409);
        let open: Value = api.get("/scheduled-emails").send().await.unwrap().json().await.unwrap();
        assert_eq!(open["data"], json!([]), "a cancelled email is not listed by default");
        let cancelled: Value = api.get("/scheduled-emails?status=cancelled").send().await.unwrap().json().await.unwrap();
        assert_eq!(cancelled["data"][0]["id"], id);
    }

    async fn the_api_refuses_bad_new_emails_with_stable_codes_and_stores_nothing(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let token = s.world.app.api_token(&s.riley).await;
        let api = s.world.app.api(&token);
        let to = s.candidate_mailbox;
        for (body, status, code) in [
            (json!({"to": [to], "subject": "Hi\r\nBcc: x@evil.example", "body_markdown": "Hi"}), 422, "header_injection"),
            (json!({"to": [to], "cc": ["x@y.example\nBcc: z@evil.example"], "subject": "Hi", "body_markdown": "Hi"}), 422, "header_injection"),
            (json!({"to": ["stranger@elsewhere.example"], "subject": "Hi", "body_markdown": "Hi"}), 422, "recipient_not_candidate"),
            (json!({"to": [], "subject": "Hi", "body_markdown": "Hi"}), 422, "no_recipient"),
            (json!({"to": [to], "cc": ["nobody"], "subject": "Hi", "body_markdown": "Hi"}), 422, "invalid_address"),
            (json!({"to": [to], "subject": "", "body_markdown": "Hi"}), 422, "subject_required"),
            (json!({"to": [to], "subject": "Hi", "body_markdown": "  "}), 422, "body_required"),
            (json!({"to": [to], "subject": "Hi", "body_markdown": "Hi", "send_at": "next week"}), 422, "invalid_send_at"),
            (json!({"to": [to], "subject": "Hi", "body_markdown": "Hi", "send_at": "2020-01-01T00:00:00Z"}), 422, "send_at_in_past"),
            (json!({"to": [to], "subject": "Hi", "body_markdown": "Hi", "attachments": [{"filename": "a", "content_base64": "***"}]}), 422, "invalid_attachment"),
            (json!({"to": [to], "subject": "Hi", "body_markdown": "Hi", "bcc": ["x@y.example"]}), 422, "invalid_field"),
        ] {
            let resp = api.post(&format!("/candidates/{}/emails", s.candidate)).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), status, "{body}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["error"]["code"], code, "{body}: {err}");
        }
        let resp = api.post(&format!("/candidates/{}/emails", s.candidate)).body("{not json").send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let resp = api.post("/candidates/999999/emails").json(&json!({"to": [to], "subject": "Hi", "body_markdown": "Hi"})).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert!(s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap().is_empty());
    }

    async fn another_users_or_another_orgs_email_is_not_found(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let riley = s.world.app.api(&s.world.app.api_token(&s.riley).await);
        let at = (s.world.app.now() + SignedDuration::from_hours(3)).to_string();
        let created: Value = riley
            .post(&format!("/candidates/{}/emails", s.candidate))
            .json(&json!({"to": [s.candidate_mailbox], "subject": "Mine", "body_markdown": "Hi", "send_at": at}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_i64().unwrap();
        let sam = s.world.app.user(s.org, "sam@talent.example", RECRUITER, "sam-password").await;
        let elsewhere = s.world.app.org("Elsewhere", &["elsewhere.example"]).await;
        let eve = s.world.app.user(elsewhere, "eve@elsewhere.example", RECRUITER, "eve-password").await;
        for other in [sam, eve] {
            let api = s.world.app.api(&s.world.app.api_token(&other).await);
            for resp in [
                api.get(&format!("/emails/{id}")).send().await.unwrap(),
                api.get(&format!("/scheduled-emails/{id}")).send().await.unwrap(),
                api.patch(&format!("/scheduled-emails/{id}")).json(&json!({"subject": "Theirs"})).send().await.unwrap(),
                api.delete(&format!("/scheduled-emails/{id}")).send().await.unwrap(),
            ] {
                assert_eq!(resp.status(), 404, "{}", other.email.as_str());
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "not_found");
            }
            let list: Value = api.get("/scheduled-emails?status=scheduled,cancelled,sent").send().await.unwrap().json().await.unwrap();
            assert_eq!(list["data"], json!([]), "{}", other.email.as_str());
        }
        for missing in ["/emails/999999", "/emails/abc", "/scheduled-emails/abc"] {
            assert_eq!(riley.get(missing).send().await.unwrap().status(), 404, "{missing}");
        }
        let still: Value = riley.get(&format!("/emails/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(still["status"], "scheduled");
        assert_eq!(still["subject"], "Mine");
    }

    async fn the_scheduled_list_pages_and_says_why_an_email_is_held(db: TestDb) {
        let s = scenario(&db, "google", AccessLevelSetting::SendAndView, true).await;
        let token = s.world.app.api_token(&s.riley).await;
        let api = s.world.app.api(&token);
        let mut ids = Vec::new();
        for n in 0..3 {
            let at = (s.world.app.now() + SignedDuration::from_hours(1 + n)).to_string();
            let created: Value = api
                .post(&format!("/candidates/{}/emails", s.candidate))
                .json(&json!({"to": [s.candidate_mailbox], "subject": format!("Email {n}"), "body_markdown": "Hi", "send_at": at}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(created["id"].as_i64().unwrap());
        }
        let first: Value = api.get("/scheduled-emails?limit=2").send().await.unwrap().json().await.unwrap();
        let got: Vec<i64> = first["data"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![ids[2], ids[1]], "newest first");
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let second: Value = api.get(&format!("/scheduled-emails?limit=2&cursor={cursor}")).send().await.unwrap().json().await.unwrap();
        let got: Vec<i64> = second["data"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![ids[0]]);
        assert_eq!(second["next_cursor"], Value::Null);
        for (query, code) in [("limit=0", "invalid_limit"), ("limit=201", "invalid_limit"), ("cursor=xyz", "invalid_cursor"), ("status=lost", "invalid_status")] {
            let resp = api.get(&format!("/scheduled-emails?{query}")).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{query}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{query}");
        }
        // The admin sets email access to View only: at its time the first one is held, with why.
        s.world.use_provider(s.org, "google", None, AccessLevelSetting::ViewOnly).await;
        s.advance(3600);
        let w = s.worker(|_| {});
        assert_eq!(outbox::run_one(&w, "w1").await.unwrap(), Some(Turn::Waiting(hirewire_store::OutboxId(ids[0]))));
        let held: Value = api.get(&format!("/emails/{}", ids[0])).send().await.unwrap().json().await.unwrap();
        assert_eq!(held["status"], "held", "{held}");
        assert!(held["status_reason"].as_str().unwrap().contains("View only"), "{held}");
        assert_eq!(held["editable"], true, "a held email can still be edited or cancelled");
        let only_held: Value = api.get("/scheduled-emails?status=held").send().await.unwrap().json().await.unwrap();
        let got: Vec<i64> = only_held["data"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![ids[0]]);
        let only_scheduled: Value = api.get("/scheduled-emails?status=scheduled&limit=1").send().await.unwrap().json().await.unwrap();
        assert_eq!(only_scheduled["data"][0]["id"], ids[2]);
        let cursor = only_scheduled["next_cursor"].as_str().unwrap();
        let rest: Value = api.get(&format!("/scheduled-emails?status=scheduled&limit=1&cursor={cursor}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(rest["data"][0]["id"], ids[1], "the held one is skipped");
        assert_eq!(rest["next_cursor"], Value::Null);
    }

    async fn the_compose_form_sends_now_and_schedules_in_the_recruiters_zone(db: TestDb) {
        let s = scenario(&db, "microsoft", AccessLevelSetting::SendAndView, true).await;
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let url = s.world.app.at(&format!("/candidates/{}", s.candidate));
        let page = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("id=\"compose-form\""), "{page}");
        let zone = s.riley.time_zone.clone();
        assert!(page.contains(&format!("id=\"compose-zone\">{zone}<")), "the zone is shown");
        let csrf = hirewire_server::testing::hidden_csrf(&page).unwrap();
        let form = [
            ("_csrf", csrf.as_str()),
            ("to", s.candidate_mailbox),
            ("to", "jordan.other@talentmail.example"),
            ("subject", "Scheduled from the page"),
            ("body", "See you"),
            ("mode", "schedule"),
            ("send_at", "2027-01-05T10:30"),
        ];
        let resp = client.post(s.world.app.at(&format!("/candidates/{}/email", s.candidate))).form(&form).send().await.unwrap();
        assert!(resp.status().is_redirection() || resp.status().is_success(), "{}", resp.status());
        let items = s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].to.len(), 2);
        let expected = jiff::civil::date(2027, 1, 5).at(10, 30, 0, 0).to_zoned_datetime(jiff::tz::TimeZone::get(&zone).unwrap()).unwrap().timestamp();
        assert_eq!(items[0].send_at, Some(expected), "read in {zone}");
        let page = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Scheduled</strong> — Scheduled from the page"), "{page}");
        let scheduled = client.get(s.world.app.at("/scheduled")).send().await.unwrap().text().await.unwrap();
        assert!(scheduled.contains("Scheduled from the page"), "{scheduled}");
        // A bad address in Cc comes back as an error on the card.
        let form = [("_csrf", csrf.as_str()), ("to", s.candidate_mailbox), ("cc", "not an address"), ("subject", "x"), ("body", "y"), ("mode", "now")];
        let resp = client.post(s.world.app.at(&format!("/candidates/{}/email", s.candidate))).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 422, "refused at once, on the page");
        let page = resp.text().await.unwrap();
        assert!(page.contains("id=\"compose-error\""), "{page}");
        assert!(page.contains("is not a valid email address"), "{page}");
        assert!(page.contains("value=\"not an address\""), "what was typed is kept: {page}");
        assert_eq!(s.world.app.store.list_outbox(s.org, Default::default()).await.unwrap().len(), 1, "nothing more queued");
    }
}

#[tokio::test]
async fn the_email_endpoints_are_in_the_openapi_document() {
    let db = TestDb::new(hirewire_store::Backend::Sqlite).await.unwrap();
    let app = hirewire_server::testing::TestApp::start(&db).await;
    let doc: Value = reqwest::get(app.at("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/candidates/{id}/emails", &["post"][..]),
        ("/scheduled-emails", &["get"]),
        ("/scheduled-emails/{id}", &["get", "patch", "delete"]),
        ("/emails/{id}", &["get"]),
    ] {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path} is documented");
        }
    }
    for gone in ["/candidates/{id}/messages", "/outbox", "/outbox/{id}"] {
        assert!(paths.get(gone).is_none(), "{gone} is no longer an API path");
    }
    let post = &paths["/candidates/{id}/emails"]["post"];
    let text = post.to_string();
    for code in [
        "feature_not_enabled",
        "send_permission_missing",
        "header_injection",
        "attachment_too_large",
        "request_too_large",
        "idempotency_key_reused",
    ] {
        assert!(text.contains(code), "the error code {code} is documented");
    }
    assert!(
        post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key")
    );
    let patch = paths["/scheduled-emails/{id}"]["patch"].to_string();
    assert!(patch.contains("already_sent") && patch.contains("not_editable"));
    let status = &doc["components"]["schemas"]["EmailResource"]["properties"];
    for field in [
        "status",
        "status_reason",
        "message_id",
        "provider_message_id",
        "provider_thread_id",
    ] {
        assert!(status[field].is_object(), "EmailResource.{field}");
    }
}

/// The compose form in headless Chromium: files are chosen in the file input
/// (WebDriver types their paths into it, as a user picks them); one over the
/// limit brings the page back with the reason and the typed input kept; the
/// files chosen again go out byte for byte; a send without files works too.
#[tokio::test]
async fn in_a_browser_the_compose_form_uploads_files_and_keeps_the_input_when_refused() {
    use hirewire_testkit::page::{element, fill, follow, text};
    let db = TestDb::new(hirewire_store::Backend::Sqlite).await.unwrap();
    let s = scenario(&db, "microsoft", AccessLevelSetting::SendAndView, true).await;
    // An instance with small limits, on the same store.
    let base = serve(s.worker(|c| {
        c.max_attachment_bytes = 64 * 1024;
        c.max_total_attachment_bytes = 96 * 1024;
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cv = file_bytes(10 * 1024, 11);
    let cv_path = dir.path().join("cv.txt");
    std::fs::write(&cv_path, &cv).unwrap();
    let big_path = dir.path().join("big.bin");
    std::fs::write(&big_path, file_bytes(200 * 1024, 12)).unwrap();

    let b = hirewire_testkit::browser().await;
    b.goto(&format!("{base}/sign-in")).await.unwrap();
    fill(&b, "#email", "riley@talent.example").await;
    fill(&b, "#password", "riley-password").await;
    follow(&b, "#sign-in").await;
    b.goto(&format!("{base}/candidates/{}", s.candidate))
        .await
        .unwrap();
    fill(&b, "#compose-subject", "Your application").await;
    fill(&b, "#compose-body", "Thanks for applying, **Jordan**.").await;
    element(&b, "#compose-attachments")
        .await
        .send_keys(&format!("{}\n{}", cv_path.display(), big_path.display()))
        .await
        .unwrap();
    follow(&b, "#compose-send").await;
    let error = text(&b, "#compose-error").await;
    assert!(
        error.contains("big.bin") && error.contains("at most 64 KB each"),
        "{error}"
    );
    let again = text(&b, "#compose-files-again").await;
    assert!(again.contains("cv.txt, big.bin"), "{again}");
    let subject = element(&b, "#compose-subject").await;
    assert_eq!(
        subject.prop("value").await.unwrap().as_deref(),
        Some("Your application"),
        "the subject is kept"
    );
    let body = element(&b, "#compose-body").await;
    assert_eq!(
        body.prop("value").await.unwrap().as_deref(),
        Some("Thanks for applying, **Jordan**.")
    );
    assert!(
        s.world
            .app
            .store
            .list_outbox(s.org, Default::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Only the file within the limit, chosen again; the rest as it was kept.
    element(&b, "#compose-attachments")
        .await
        .send_keys(&cv_path.display().to_string())
        .await
        .unwrap();
    follow(&b, "#compose-send").await;
    let items = s
        .world
        .app
        .store
        .list_outbox(s.org, Default::default())
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = items[0].clone();
    assert_eq!(item.subject, "Your application");
    let row = text(&b, &format!("#outbox-{}", item.id)).await;
    assert!(row.contains("cv.txt (10 KB)"), "{row}");
    let w = s.worker(|_| {});
    assert_eq!(
        outbox::run_one(&w, "w1").await.unwrap(),
        Some(Turn::Sent(item.id))
    );
    let delivered = s.delivered_attachments(&item.message_id).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, "cv.txt");
    assert!(delivered[0].1 == cv, "cv.txt arrives byte for byte");

    // No file chosen: the browser still sends the (empty) file field.
    fill(&b, "#compose-subject", "No files").await;
    fill(&b, "#compose-body", "Just text.").await;
    follow(&b, "#compose-send").await;
    let items = s
        .world
        .app
        .store
        .list_outbox(s.org, Default::default())
        .await
        .unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].subject, "No files");
    assert!(items[0].attachments.is_empty());
}
