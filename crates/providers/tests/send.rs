//! The send adapter ([`MailSender`]) against the in-process sandbox, for both providers: a token from the real
//! sign-in with "Send & view", a message sent and found in Sent and with the recipient (across providers),
//! stable ids, Gmail threading, deferred Graph send, large Gmail messages through `/upload`, error classes,
//! and the reconcile lookup after an uncertain outcome.

mod common;

use std::time::Duration;

use common::*;
use hirewire_providers::scopes;
use hirewire_providers::{
    AccessLevel, Capability, HttpClient, HttpConfig, Lookup, MailSender, Outgoing, Provider,
    Rejection, Secret, SendError, Sent,
};
use reqwest::Method;
use serde_json::{Value, json};

fn user_of(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "adele@acme.example",
        Provider::Google => "hank@globex.example",
    }
}

fn other(provider: Provider) -> Provider {
    match provider {
        Provider::Microsoft => Provider::Google,
        Provider::Google => Provider::Microsoft,
    }
}

async fn token(w: &World, provider: Provider, access: AccessLevel) -> Secret {
    let client = w.client(provider);
    let a = begin(
        &client,
        scopes::request(provider, Capability::Inbox, access),
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

fn message(from: &str, to: &str, subject: &str, id: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Fri, 27 Nov 2026 09:00:00 +0000\r\nMessage-ID: {id}\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from hirewire.\r\n"
    )
    .into_bytes()
}

fn out(raw: &[u8]) -> Outgoing<'_> {
    Outgoing {
        raw,
        gmail_thread_id: None,
        send_at: None,
    }
}

async fn folder(w: &World, user: &str, f: &str) -> Vec<Value> {
    let v = w
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/messages?folder={f}"),
            None,
        )
        .await;
    v["messages"].as_array().unwrap().clone()
}

async fn sent_records(w: &World, user: &str) -> Vec<Value> {
    let v = w
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/sent"),
            None,
        )
        .await;
    v["value"].as_array().unwrap().clone()
}

async fn setup(provider: Provider) -> (World, MailSender, Secret) {
    let w = start().await;
    let t = token(&w, provider, AccessLevel::SendAndView).await;
    let sender = MailSender::new(provider, w.endpoints(), w.http());
    (w, sender, t)
}

#[tokio::test]
async fn a_sent_message_is_in_sent_and_with_a_recipient_at_the_other_provider_under_the_same_message_id()
 {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, sender, t) = setup(provider).await;
        let to = user_of(other(provider));
        let raw = message(
            user_of(provider),
            to,
            "Interview",
            "<hw-a@hirewire.example>",
            "",
        );
        let sent: Sent = sender.send(&t, &out(&raw)).await.unwrap();
        let sent_folder = folder(&w, user_of(provider), "sentitems").await;
        assert_eq!(sent_folder.len(), 1, "{provider:?}");
        assert_eq!(
            sent_folder[0]["internet_message_id"],
            "<hw-a@hirewire.example>"
        );
        let id_field = match provider {
            Provider::Microsoft => "immutable_id",
            Provider::Google => "id",
        };
        assert_eq!(
            sent_folder[0][id_field],
            sent.provider_message_id.as_str(),
            "{provider:?}: the returned id is the Sent copy's"
        );
        assert!(sent.thread_id.is_some());
        let inbox = folder(&w, to, "inbox").await;
        assert_eq!(inbox.len(), 1, "{provider:?}");
        assert_eq!(inbox[0]["internet_message_id"], "<hw-a@hirewire.example>");
        // The reconcile lookup finds it under the same id.
        match sender
            .find_by_message_id(&t, "<hw-a@hirewire.example>")
            .await
            .unwrap()
        {
            Lookup::Found(found) => {
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].id, sent.provider_message_id);
            }
            other => panic!("{provider:?}: {other:?}"),
        }
        assert_eq!(
            sender
                .find_by_message_id(&t, "never-sent@hirewire.example")
                .await
                .unwrap(),
            Lookup::NotFound
        );
    }
}

#[tokio::test]
async fn a_gmail_reply_with_the_thread_id_joins_the_conversation() {
    let (_w, sender, t) = setup(Provider::Google).await;
    let first = message(
        user_of(Provider::Google),
        "jane@candidates.example",
        "Senior Rust role",
        "<root@hirewire.example>",
        "",
    );
    let a = sender.send(&t, &out(&first)).await.unwrap();
    let reply = message(
        user_of(Provider::Google),
        "jane@candidates.example",
        "Re: Senior Rust role",
        "<reply@hirewire.example>",
        "In-Reply-To: <root@hirewire.example>\r\nReferences: <root@hirewire.example>\r\n",
    );
    let b = sender
        .send(
            &t,
            &Outgoing {
                raw: &reply,
                gmail_thread_id: a.thread_id.as_deref(),
                send_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(b.thread_id, a.thread_id);
    assert_ne!(b.provider_message_id, a.provider_message_id);
}

#[tokio::test]
async fn a_deferred_graph_send_waits_for_its_time_and_keeps_its_id() {
    let (w, sender, t) = setup(Provider::Microsoft).await;
    let raw = message(
        user_of(Provider::Microsoft),
        user_of(Provider::Google),
        "Later",
        "<later@hirewire.example>",
        "",
    );
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let sent = sender
        .send(
            &t,
            &Outgoing {
                raw: &raw,
                gmail_thread_id: None,
                send_at: Some(at),
            },
        )
        .await
        .unwrap();
    assert!(
        folder(&w, user_of(Provider::Google), "inbox")
            .await
            .is_empty()
    );
    let pending = w
        .control(
            Method::GET,
            "/_sandbox/mailboxes/adele@acme.example/scheduled",
            None,
        )
        .await;
    assert_eq!(
        pending["value"][0]["graph_id"],
        sent.provider_message_id.as_str()
    );
    // Accepted and waiting counts as found: it must not be sent again.
    assert!(matches!(
        sender
            .find_by_message_id(&t, "<later@hirewire.example>")
            .await
            .unwrap(),
        Lookup::Found(_)
    ));
    w.sandbox.app().advance_clock(3 * 3600);
    assert_eq!(
        folder(&w, user_of(Provider::Google), "inbox").await.len(),
        1
    );
    assert_eq!(
        folder(&w, user_of(Provider::Microsoft), "sentitems").await[0]["immutable_id"],
        sent.provider_message_id.as_str()
    );
}

#[tokio::test]
async fn gmail_asked_for_a_deferred_send_refuses_instead_of_sending_now() {
    let (w, sender, t) = setup(Provider::Google).await;
    let raw = message(
        "hank@globex.example",
        "x@y.example",
        "s",
        "<d@h.example>",
        "",
    );
    let e = sender
        .send(
            &t,
            &Outgoing {
                raw: &raw,
                gmail_thread_id: None,
                send_at: Some(jiff::Timestamp::now()),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        SendError::Rejected {
            reason: Rejection::Invalid,
            ..
        }
    ));
    assert!(sent_records(&w, "hank@globex.example").await.is_empty());
}

#[tokio::test]
async fn a_large_gmail_message_goes_through_the_upload_endpoint() {
    let (w, sender, t) = setup(Provider::Google).await;
    let mut raw = message(
        "hank@globex.example",
        "adele@acme.example",
        "Big",
        "<big@hirewire.example>",
        "",
    );
    raw.extend(std::iter::repeat_n(b'x', 6 << 20));
    raw.extend_from_slice(b"\r\n");
    sender.send(&t, &out(&raw)).await.unwrap();
    let rec = &sent_records(&w, "hank@globex.example").await[0];
    assert_eq!(rec["via"], "gmail.upload.messages.send");
    assert_eq!(rec["size"], raw.len());
}

#[tokio::test]
async fn errors_say_whether_the_message_may_have_gone_out() {
    // Bad recipients: rejected for good, in both providers' words.
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, sender, t) = setup(provider).await;
        let raw =
            b"From: a@b.example\r\nSubject: nobody\r\nMessage-ID: <n@h.example>\r\n\r\nhi\r\n";
        let e = sender.send(&t, &out(raw)).await.unwrap_err();
        assert!(
            matches!(
                e,
                SendError::Rejected {
                    reason: Rejection::InvalidRecipients,
                    ..
                }
            ),
            "{provider:?}: {e:?}"
        );
        // Throttled: retryable with the provider's Retry-After, surely not sent.
        let endpoint = match provider {
            Provider::Microsoft => "graph.messages.send",
            Provider::Google => "gmail.users.messages.send",
        };
        w.arm_fault(json!({"endpoint": endpoint, "fault": {"kind": "throttle", "retry_after_secs": 120}, "count": 1}))
            .await;
        let raw = message(user_of(provider), "x@y.example", "s", "<t@h.example>", "");
        let e = sender.send(&t, &out(&raw)).await.unwrap_err();
        match &e {
            SendError::Retryable { retry_after, .. } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(120)), "{provider:?}")
            }
            other => panic!("{provider:?}: {other:?}"),
        }
        assert!(e.surely_not_sent());
        // A token without send permission: reauthorize, not a provider 403 passed on.
        let view_only = token(&w, provider, AccessLevel::ViewOnly).await;
        let e = sender.send(&view_only, &out(&raw)).await.unwrap_err();
        assert!(
            matches!(e, SendError::NeedsReauthorization(_)),
            "{provider:?}: {e:?}"
        );
        let e = sender
            .send(&Secret::new("expired"), &out(&raw))
            .await
            .unwrap_err();
        assert!(matches!(e, SendError::TokenRejected), "{provider:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_send_accepted_but_never_answered_is_uncertain_and_the_lookup_finds_it() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, _, t) = setup(provider).await;
        let short = HttpClient::new(HttpConfig {
            timeout: Duration::from_millis(400),
            ..HttpConfig::default()
        })
        .unwrap();
        let sender = MailSender::new(provider, w.endpoints(), short);
        w.control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"mode": "hang", "hang_millis": 30_000, "count": 1})),
        )
        .await;
        let raw = message(
            user_of(provider),
            user_of(other(provider)),
            "Lost",
            "<lost@hirewire.example>",
            "",
        );
        let e = sender.send(&t, &out(&raw)).await.unwrap_err();
        assert!(
            matches!(e, SendError::Uncertain { .. }),
            "{provider:?}: {e:?}"
        );
        assert!(!e.surely_not_sent());
        assert!(
            matches!(
                sender
                    .find_by_message_id(&t, "<lost@hirewire.example>")
                    .await
                    .unwrap(),
                Lookup::Found(_)
            ),
            "{provider:?}"
        );
        // The 504 variant is uncertain too.
        w.control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"mode": "gateway_timeout", "count": 1})),
        )
        .await;
        let raw = message(
            user_of(provider),
            user_of(other(provider)),
            "Lost 2",
            "<lost2@hirewire.example>",
            "",
        );
        let e = sender.send(&t, &out(&raw)).await.unwrap_err();
        assert!(
            matches!(e, SendError::Uncertain { .. }),
            "{provider:?}: {e:?}"
        );
        assert_eq!(folder(&w, user_of(other(provider)), "inbox").await.len(), 2);
    }
}

#[tokio::test]
async fn a_mailbox_that_refuses_the_message_id_search_gives_an_inconclusive_lookup_not_an_error() {
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, sender, t) = setup(provider).await;
        let raw = message(
            user_of(provider),
            user_of(other(provider)),
            "Refused",
            "<refused@hirewire.example>",
            "",
        );
        sender.send(&t, &out(&raw)).await.unwrap();
        w.control(
            Method::POST,
            "/_sandbox/send/lookup_refusals",
            Some(json!({"user": user_of(provider), "count": 1})),
        )
        .await;
        match sender
            .find_by_message_id(&t, "<refused@hirewire.example>")
            .await
        {
            Ok(Lookup::Inconclusive(why)) => {
                let words = match provider {
                    Provider::Microsoft => "InefficientFilter",
                    Provider::Google => "failedPrecondition",
                };
                assert!(why.contains(words), "{provider:?}: {why}");
            }
            other => panic!("{provider:?}: {other:?}"),
        }
        assert!(
            matches!(
                sender
                    .find_by_message_id(&t, "<refused@hirewire.example>")
                    .await
                    .unwrap(),
                Lookup::Found(_)
            ),
            "{provider:?}: the next lookup answers"
        );
    }
}

#[tokio::test]
async fn a_graph_draft_that_was_never_sent_is_found_as_unsent_and_sending_it_again_makes_one_message()
 {
    let (w, sender, t) = setup(Provider::Microsoft).await;
    // The draft was made, then /send failed before reaching the provider's send logic (a 500 on /send is
    // uncertain; here the sandbox refuses /send once with a 503, which is retryable: nothing was sent).
    w.arm_fault(json!({"endpoint": "graph.messages.send", "fault": {"kind": "server_error", "status": 503}, "count": 10}))
        .await;
    let raw = message(
        user_of(Provider::Microsoft),
        user_of(Provider::Google),
        "Once",
        "<once@hirewire.example>",
        "",
    );
    let e = sender.send(&t, &out(&raw)).await.unwrap_err();
    assert!(e.surely_not_sent(), "{e:?}");
    w.control(Method::DELETE, "/_sandbox/faults", None).await;
    let Lookup::Unsent { draft_id } = sender
        .find_by_message_id(&t, "<once@hirewire.example>")
        .await
        .unwrap()
    else {
        panic!("the draft should be found unsent");
    };
    sender.send_draft(&t, &draft_id).await.unwrap();
    // A second send of the same draft is refused: no duplicate is possible.
    assert!(sender.send_draft(&t, &draft_id).await.is_err());
    assert_eq!(
        folder(&w, user_of(Provider::Google), "inbox").await.len(),
        1
    );
    assert!(matches!(
        sender
            .find_by_message_id(&t, "<once@hirewire.example>")
            .await
            .unwrap(),
        Lookup::Found(_)
    ));
}

#[tokio::test]
async fn a_composed_message_with_a_file_over_3_mb_arrives_whole_through_both_providers() {
    use hirewire_mail::{ComposeLimits, Draft, FileAttachment, Recipient, compose};
    for provider in [Provider::Microsoft, Provider::Google] {
        let (w, sender, t) = setup(provider).await;
        let to = user_of(other(provider));
        let big: Vec<u8> = (0..3_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let draft = Draft {
            from: Recipient::named("Rita Recruiter", user_of(provider)),
            to: vec![Recipient::named("Ana Lima", to)],
            cc: vec![Recipient::address("hm@corp.example")],
            bcc: vec![],
            subject: "Offer — next steps".into(),
            body_markdown: "Hi **Ana**,\n\nThe offer is attached.".into(),
            attachments: vec![
                FileAttachment {
                    filename: "offer letter.pdf".into(),
                    content_type: "application/pdf".into(),
                    bytes: big.clone(),
                },
                FileAttachment {
                    filename: "notes.txt".into(),
                    content_type: "text/plain".into(),
                    bytes: b"small".to_vec(),
                },
            ],
            message_id: "<offer-1@hirewire.example>".into(),
            reply: None,
            date: 1_764_230_400,
        };
        let c = compose(&draft, &ComposeLimits::default()).unwrap();
        let sent = sender.send(&t, &out(&c.raw)).await.unwrap();
        assert!(!sent.provider_message_id.is_empty());
        let inbox = folder(&w, to, "inbox").await;
        assert_eq!(inbox.len(), 1, "{provider:?}");
        let v = w
            .control(
                Method::GET,
                &format!(
                    "/_sandbox/mailboxes/{to}/messages/{}",
                    inbox[0]["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        let raw = v["raw"].as_str().unwrap().as_bytes().to_vec();
        let p = hirewire_mail::parse_full(&raw);
        assert_eq!(
            p.envelope.message_id.as_deref(),
            Some("offer-1@hirewire.example")
        );
        assert_eq!(p.envelope.subject.as_deref(), Some("Offer — next steps"));
        let mut names: Vec<String> = p
            .attachments
            .iter()
            .filter_map(|a| a.filename.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["notes.txt", "offer letter.pdf"], "{provider:?}");
        let pdf = p
            .attachments
            .iter()
            .find(|a| a.filename.as_deref() == Some("offer letter.pdf"))
            .unwrap();
        assert_eq!(pdf.size, big.len(), "{provider:?}");
        assert!(p.html.unwrap().contains("<strong>Ana</strong>"));
        if provider == Provider::Microsoft {
            // Too large for one Graph request: the file went through an upload session, in chunks.
            let counters = w.control(Method::GET, "/_sandbox/counters", None).await;
            let chunks = counters["endpoints"]["graph.attachments.upload"]["requests"]
                .as_u64()
                .unwrap_or(0);
            assert_eq!(chunks, 2, "{counters}");
        }
    }
}

#[tokio::test]
async fn with_a_pacer_sends_count_against_the_mailbox_and_a_429_pauses_it() {
    use hirewire_providers::{PaceKey, Pacer, PacingConfig, Service};
    let (w, _, t) = setup(Provider::Google).await;
    let pacer = Pacer::new(PacingConfig::default()).unwrap();
    let key = PaceKey::new("app", "hank@globex.example");
    let sender = MailSender::new(Provider::Google, w.endpoints(), w.http())
        .with_pacer(pacer.clone(), key.clone());
    let raw = message(
        "hank@globex.example",
        "adele@acme.example",
        "Paced",
        "<p1@h.example>",
        "",
    );
    sender.send(&t, &out(&raw)).await.unwrap();
    let pace = pacer.mailbox(&key, Service::Gmail);
    assert_eq!(pace.requests, 1);
    assert_eq!(pace.units, 100, "messages.send costs 100 units");
    w.arm_fault(json!({"endpoint": "gmail.users.messages.send", "fault": {"kind": "throttle", "retry_after_secs": 600}, "count": 1}))
        .await;
    let raw = message(
        "hank@globex.example",
        "adele@acme.example",
        "Paced",
        "<p2@h.example>",
        "",
    );
    assert!(matches!(
        sender.send(&t, &out(&raw)).await.unwrap_err(),
        SendError::Retryable { .. }
    ));
    let pace = pacer.mailbox(&key, Service::Gmail);
    assert_eq!(pace.throttled, 1);
    assert!(pace.current_wait > Duration::from_secs(500), "{pace:?}");
}
