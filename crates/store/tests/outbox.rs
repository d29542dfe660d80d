//! The Email Connect outbox: queued messages, edits and cancellation only
//! while queued, fenced claims and outcomes — the same specification on
//! SQLite and PostgreSQL.

use std::time::Duration;

use hirewire_domain::email::EmailAddress;
use hirewire_store::testing::TestDb;
use hirewire_store::*;
use jiff::Timestamp;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

const LEASE: Duration = Duration::from_secs(120);
const LIMIT: u64 = 1_000_000;

struct World {
    org: OrgId,
    user: User,
    cand: CandidateId,
    grant: Grant,
}

async fn world(store: &Store, name: &str) -> World {
    let org = store.create_org(name, &[], t(0)).await.unwrap().id;
    let email = EmailAddress::parse(&format!("r@{}.example", name.to_lowercase())).unwrap();
    let user = store
        .create_user(
            &NewUser {
                org_id: org,
                email: &email,
                display_name: "R",
                role: Role::Recruiter,
                time_zone: "UTC",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap();
    let grant = store
        .put_grant(
            &NewGrant {
                org_id: org,
                user_id: user.id,
                capability: CapabilityKind::Inbox,
                provider: ProviderChoice::Google,
                status: GrantStatus::Active,
                status_reason: None,
                account_address: None,
                scopes: "gmail.send",
                permission_version: 1,
                legacy: false,
                access_token_sealed: None,
                refresh_token_sealed: None,
                access_expires_at: None,
            },
            t(0),
        )
        .await
        .unwrap();
    let cand = store
        .create_candidate(
            org,
            "Cand",
            &[EmailAddress::parse("cand@mail.example").unwrap()],
            t(0),
        )
        .await
        .unwrap()
        .id;
    World {
        org,
        user,
        cand,
        grant,
    }
}

async fn queue(
    store: &Store,
    w: &World,
    message_id: &str,
    send_at: Option<Timestamp>,
    files: &[OutboxAttachment],
) -> OutboxItem {
    let to = vec!["cand@mail.example".to_owned()];
    store
        .create_outbox(
            w.org,
            &NewOutboxItem {
                user_id: w.user.id,
                candidate_id: w.cand,
                grant_id: w.grant.id,
                to: &to,
                cc: &[],
                subject: "Hello",
                body_markdown: "**Hi**",
                attachments: files,
                message_id,
                in_reply_to: None,
                references: &[],
                thread_hint: None,
                send_at,
            },
            LIMIT,
            t(0),
        )
        .await
        .unwrap()
}

both_backends! {
    async fn a_queued_message_keeps_everything_the_recruiter_wrote_and_its_message_id(store: Store) {
        let w = world(&store, "Acme").await;
        let file = OutboxAttachment { filename: "cv.pdf".into(), content_type: "application/pdf".into(), bytes: vec![7; 1000] };
        let item = queue(&store, &w, "m1@hirewire.test", Some(t(600)), std::slice::from_ref(&file)).await;
        assert_eq!(item.status, OutboxStatus::Queued);
        assert_eq!(item.message_id, "m1@hirewire.test");
        assert_eq!(item.to, vec!["cand@mail.example".to_owned()]);
        assert_eq!(item.send_at, Some(t(600)));
        assert_eq!(item.due_at, t(600));
        assert_eq!(item.attachments, vec![OutboxAttachmentInfo { filename: "cv.pdf".into(), content_type: "application/pdf".into(), size: 1000 }]);
        assert_eq!(store.outbox_attachments(item.id).await.unwrap(), vec![file]);
        let listed = store.list_outbox(w.org, OutboxFilter { candidate: Some(w.cand), ..Default::default() }).await.unwrap();
        assert_eq!(listed, vec![item.clone()]);
        let queued = store.list_outbox(w.org, OutboxFilter { statuses: &[OutboxStatus::Queued], ..Default::default() }).await.unwrap();
        assert_eq!(queued.len(), 1);
        let sent = store.list_outbox(w.org, OutboxFilter { statuses: &[OutboxStatus::Sent], ..Default::default() }).await.unwrap();
        assert!(sent.is_empty());
    }

    async fn the_list_pages_newest_first_by_id(store: Store) {
        let w = world(&store, "Acme").await;
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(queue(&store, &w, &format!("m{n}@hirewire.test"), None, &[]).await.id);
        }
        let org = w.org;
        let page = |before: Option<OutboxId>, limit: u32| {
            let store = store.clone();
            async move {
                store
                    .list_outbox(org, OutboxFilter { before, limit: Some(limit), ..Default::default() })
                    .await
                    .unwrap()
                    .iter()
                    .map(|i| i.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(page(None, 2).await, vec![ids[4], ids[3]]);
        assert_eq!(page(Some(ids[3]), 2).await, vec![ids[2], ids[1]]);
        assert_eq!(page(Some(ids[1]), 2).await, vec![ids[0]]);
        assert_eq!(page(Some(ids[0]), 2).await, Vec::<OutboxId>::new());
        assert_eq!(page(None, 0).await.len(), 1, "a limit below 1 is 1");
        assert_eq!(page(None, 10_000).await.len(), 5);
    }

    async fn another_org_never_sees_or_changes_the_message(store: Store) {
        let w = world(&store, "Acme").await;
        let other = world(&store, "Globex").await;
        let item = queue(&store, &w, "m1@hirewire.test", None, &[]).await;
        assert_eq!(store.outbox_item(other.org, item.id).await.unwrap(), None);
        assert!(store.list_outbox(other.org, OutboxFilter::default()).await.unwrap().is_empty());
        assert!(matches!(store.cancel_outbox(other.org, item.id, t(1)).await, Err(StoreError::NotFound)));
    }

    async fn a_message_id_is_used_once_and_oversized_attachments_are_refused(store: Store) {
        let w = world(&store, "Acme").await;
        queue(&store, &w, "same@hirewire.test", None, &[]).await;
        let to = vec!["cand@mail.example".to_owned()];
        let new = NewOutboxItem {
            user_id: w.user.id, candidate_id: w.cand, grant_id: w.grant.id, to: &to, cc: &[],
            subject: "s", body_markdown: "b", attachments: &[], message_id: "same@hirewire.test",
            in_reply_to: None, references: &[], thread_hint: None, send_at: None,
        };
        assert!(matches!(store.create_outbox(w.org, &new, LIMIT, t(0)).await, Err(StoreError::Conflict { .. })));
        let big = [OutboxAttachment { filename: "big.bin".into(), content_type: "application/octet-stream".into(), bytes: vec![0; 11] }];
        let new = NewOutboxItem { message_id: "other@hirewire.test", attachments: &big, ..new };
        assert!(matches!(store.create_outbox(w.org, &new, 10, t(0)).await, Err(StoreError::Invalid(_))));
        let new = NewOutboxItem { attachments: &[], to: &[], ..new };
        assert!(matches!(store.create_outbox(w.org, &new, LIMIT, t(0)).await, Err(StoreError::Invalid(_))));
    }

    async fn a_queued_message_can_be_edited_and_cancelled_but_not_once_a_worker_holds_it(store: Store) {
        let w = world(&store, "Acme").await;
        let item = queue(&store, &w, "m1@hirewire.test", Some(t(600)), &[]).await;
        let edited = store.edit_outbox(w.org, item.id, &OutboxEdit { subject: Some("New subject"), send_at: Some(Some(t(900))), ..Default::default() }, t(1)).await.unwrap();
        assert_eq!(edited.subject, "New subject");
        assert_eq!(edited.body_markdown, "**Hi**");
        assert_eq!(edited.due_at, t(900));
        // Not due yet: nothing to claim.
        assert!(store.claim_outbox("w1", t(899), LEASE).await.unwrap().is_none());
        let claimed = store.claim_outbox("w1", t(900), LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.item.subject, "New subject");
        assert_eq!(claimed.item.status, OutboxStatus::Sending);
        assert!(matches!(store.edit_outbox(w.org, item.id, &OutboxEdit { subject: Some("late"), ..Default::default() }, t(901)).await, Err(StoreError::Conflict { .. })));
        assert!(matches!(store.cancel_outbox(w.org, item.id, t(901)).await, Err(StoreError::Conflict { .. })));

        let second = queue(&store, &w, "m2@hirewire.test", Some(t(600)), &[]).await;
        let cancelled = store.cancel_outbox(w.org, second.id, t(2)).await.unwrap();
        assert_eq!(cancelled.status, OutboxStatus::Cancelled);
        assert!(store.claim_outbox("w2", t(1000), LEASE).await.unwrap().is_none(), "a cancelled message is never claimed");
        assert!(matches!(store.edit_outbox(w.org, second.id, &OutboxEdit { subject: Some("x"), ..Default::default() }, t(3)).await, Err(StoreError::Conflict { .. })));
    }

    async fn outcomes_need_the_current_fencing_token_and_a_live_lease(store: Store) {
        let w = world(&store, "Acme").await;
        let item = queue(&store, &w, "m1@hirewire.test", None, &[]).await;
        let first = store.claim_outbox("w1", t(0), LEASE).await.unwrap().unwrap();
        store.begin_outbox_send(item.id, first.fencing_token, t(1), LEASE).await.unwrap();
        assert!(
            store.claim_outbox("w2", t(120), LEASE).await.unwrap().is_none(),
            "starting the provider call renewed the lease: a whole lease from then"
        );
        // The first worker stalls past its lease; a second one reclaims the row, which must be looked up first.
        let second = store.claim_outbox("w2", t(200), LEASE).await.unwrap().unwrap();
        assert!(second.fencing_token > first.fencing_token);
        assert!(second.item.needs_lookup, "a row whose send may have started is looked up before any resend");
        assert_eq!(second.item.attempts, 1);
        let sent = OutboxOutcome::Sent { provider_message_id: "p1", provider_thread_id: Some("t1") };
        assert!(matches!(store.finish_outbox(item.id, first.fencing_token, &sent, t(201)).await, Err(StoreError::StaleLease)));
        assert!(matches!(store.begin_outbox_send(item.id, first.fencing_token, t(201), LEASE).await, Err(StoreError::StaleLease)));
        store.finish_outbox(item.id, second.fencing_token, &sent, t(202)).await.unwrap();
        let done = store.outbox_item(w.org, item.id).await.unwrap().unwrap();
        assert_eq!(done.status, OutboxStatus::Sent);
        assert_eq!(done.provider_message_id.as_deref(), Some("p1"));
        assert_eq!(done.provider_thread_id.as_deref(), Some("t1"));
        assert_eq!(done.sent_at, Some(t(202)));
        assert!(!done.needs_lookup);
        assert!(store.claim_outbox("w3", t(10_000), LEASE).await.unwrap().is_none());
    }

    async fn due_rows_are_claimed_oldest_first_and_a_lapsed_send_before_them(store: Store) {
        let w = world(&store, "Acme").await;
        let later = queue(&store, &w, "m3@hirewire.test", Some(t(30)), &[]).await;
        let first = queue(&store, &w, "m1@hirewire.test", Some(t(10)), &[]).await;
        let second = queue(&store, &w, "m2@hirewire.test", Some(t(20)), &[]).await;
        queue(&store, &w, "m4@hirewire.test", Some(t(500)), &[]).await;
        let c = store.claim_outbox("w1", t(100), LEASE).await.unwrap().unwrap();
        assert_eq!(c.item.id, first.id, "the earliest due first, whatever the insertion order");
        store.begin_outbox_send(first.id, c.fencing_token, t(100), LEASE).await.unwrap();
        // w1 dies mid-send. Once its lease lapses, its row is settled before the queued ones.
        let c = store.claim_outbox("w2", t(101), LEASE).await.unwrap().unwrap();
        assert_eq!(c.item.id, second.id);
        store.finish_outbox(second.id, c.fencing_token, &OutboxOutcome::Failed { error: "x" }, t(101)).await.unwrap();
        let c = store.claim_outbox("w2", t(300), LEASE).await.unwrap().unwrap();
        assert_eq!(c.item.id, first.id, "the lapsed send comes first");
        assert!(c.item.needs_lookup);
        let c = store.claim_outbox("w2", t(300), LEASE).await.unwrap().unwrap();
        assert_eq!(c.item.id, later.id);
        assert!(store.claim_outbox("w2", t(300), LEASE).await.unwrap().is_none(), "the one due at 500 waits");
    }

    async fn a_row_claimed_but_never_started_is_not_marked_for_lookup(store: Store) {
        let w = world(&store, "Acme").await;
        queue(&store, &w, "m1@hirewire.test", None, &[]).await;
        store.claim_outbox("w1", t(0), LEASE).await.unwrap().unwrap();
        let again = store.claim_outbox("w2", t(200), LEASE).await.unwrap().unwrap();
        assert!(!again.item.needs_lookup);
    }

    async fn retries_waits_and_final_states_are_recorded_with_their_reasons(store: Store) {
        let w = world(&store, "Acme").await;
        let item = queue(&store, &w, "m1@hirewire.test", None, &[]).await;
        let c = store.claim_outbox("w1", t(0), LEASE).await.unwrap().unwrap();
        store.finish_outbox(item.id, c.fencing_token, &OutboxOutcome::Wait { at: t(30), reason: "pacing" }, t(1)).await.unwrap();
        let waiting = store.outbox_item(w.org, item.id).await.unwrap().unwrap();
        assert_eq!((waiting.status, waiting.due_at, waiting.attempts), (OutboxStatus::Queued, t(30), 0));
        assert_eq!(waiting.hold_reason.as_deref(), Some("pacing"));

        let c = store.claim_outbox("w1", t(30), LEASE).await.unwrap().unwrap();
        store.begin_outbox_send(item.id, c.fencing_token, t(30), LEASE).await.unwrap();
        assert_eq!(store.outbox_sends_since(w.grant.id, t(0)).await.unwrap(), vec![t(30)]);
        store.finish_outbox(item.id, c.fencing_token, &OutboxOutcome::Retry { at: t(90), error: "timed out", needs_lookup: true, draft_id: Some("d1") }, t(31)).await.unwrap();
        let retry = store.outbox_item(w.org, item.id).await.unwrap().unwrap();
        assert_eq!((retry.status, retry.due_at, retry.attempts, retry.needs_lookup), (OutboxStatus::Queued, t(90), 1, true));
        assert_eq!(retry.draft_id.as_deref(), Some("d1"));
        assert_eq!(retry.last_error.as_deref(), Some("timed out"));
        assert_eq!(retry.hold_reason, None);

        let c = store.claim_outbox("w1", t(90), LEASE).await.unwrap().unwrap();
        store.finish_outbox(item.id, c.fencing_token, &OutboxOutcome::NeedsAttention { error: "cannot tell" }, t(91)).await.unwrap();
        let attention = store.outbox_item(w.org, item.id).await.unwrap().unwrap();
        assert_eq!(attention.status, OutboxStatus::NeedsAttention);
        assert_eq!(attention.last_error.as_deref(), Some("cannot tell"));

        let other = queue(&store, &w, "m2@hirewire.test", None, &[]).await;
        let c = store.claim_outbox("w1", t(100), LEASE).await.unwrap().unwrap();
        assert_eq!(c.item.id, other.id);
        store.finish_outbox(other.id, c.fencing_token, &OutboxOutcome::Failed { error: "bad recipient" }, t(101)).await.unwrap();
        let failed = store.outbox_item(w.org, other.id).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.last_error.as_deref()), (OutboxStatus::Failed, Some("bad recipient")));
        assert!(store.claim_outbox("w1", t(10_000), LEASE).await.unwrap().is_none());
    }

    async fn two_instances_never_claim_the_same_message(db: TestDb) {
        let a = db.store();
        let b = db.open_another().await.unwrap();
        let w = world(&a, "Acme").await;
        for i in 0..20 {
            queue(&a, &w, &format!("m{i}@hirewire.test"), None, &[]).await;
        }
        let (mut seen, mut handles) = (std::collections::BTreeSet::new(), Vec::new());
        for (n, s) in [a, b].into_iter().enumerate() {
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(c) = s.claim_outbox(&format!("w{n}"), t(1), LEASE).await.unwrap() {
                    got.push(c.item.id);
                }
                got
            }));
        }
        for h in handles {
            for id in h.await.unwrap() {
                assert!(seen.insert(id), "claimed twice: {id}");
            }
        }
        assert_eq!(seen.len(), 20);
    }
}
