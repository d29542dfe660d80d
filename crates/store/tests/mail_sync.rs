//! Email sync storage: pages with their cursor, threads, visibility, the
//! candidate timeline and purging — the same specification on SQLite and
//! PostgreSQL.

use std::future::Future;
use std::task::Poll;

use hirewire_domain::email::EmailAddress;
use hirewire_store::testing::TestDb;
use hirewire_store::*;
use jiff::Timestamp;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

async fn user(store: &Store, org: OrgId, email: &str, role: Role) -> User {
    let email = EmailAddress::parse(email).unwrap();
    store
        .create_user(
            &NewUser {
                org_id: org,
                email: &email,
                display_name: "U",
                role,
                time_zone: "UTC",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap()
}

async fn inbox(store: &Store, u: &User) -> Grant {
    store
        .put_grant(
            &NewGrant {
                org_id: u.org_id,
                user_id: u.id,
                capability: CapabilityKind::Inbox,
                provider: ProviderChoice::Google,
                status: GrantStatus::Active,
                status_reason: None,
                account_address: None,
                scopes: "gmail.readonly",
                permission_version: 1,
                legacy: false,
                access_token_sealed: None,
                refresh_token_sealed: None,
                access_expires_at: None,
            },
            t(0),
        )
        .await
        .unwrap()
}

/// One org with two recruiters (with inbox grants), an admin and a candidate.
struct World {
    org: OrgId,
    a: User,
    b: User,
    admin: User,
    cand: CandidateId,
    ga: Grant,
    gb: Grant,
}

async fn world(store: &Store, name: &str) -> World {
    let org = store.create_org(name, &[], t(0)).await.unwrap().id;
    let domain = name.to_lowercase();
    let a = user(store, org, &format!("a@{domain}.example"), Role::Recruiter).await;
    let b = user(store, org, &format!("b@{domain}.example"), Role::Recruiter).await;
    let admin = user(store, org, &format!("admin@{domain}.example"), Role::Admin).await;
    let cand = store
        .create_candidate(
            org,
            "Cand",
            &[EmailAddress::parse(&format!("c@{domain}-mail.example")).unwrap()],
            t(0),
        )
        .await
        .unwrap()
        .id;
    let ga = inbox(store, &a).await;
    let gb = inbox(store, &b).await;
    World {
        org,
        a,
        b,
        admin,
        cand,
        ga,
        gb,
    }
}

fn viewer(u: &User) -> MailViewer {
    MailViewer {
        user: u.id,
        is_admin: u.role == Role::Admin,
    }
}

fn msg(
    provider_id: &str,
    key: &str,
    message_id: Option<&str>,
    at: i64,
    cand: CandidateId,
) -> NewMailMessage {
    NewMailMessage {
        provider_message_id: provider_id.into(),
        thread_key: key.into(),
        message_id_header: message_id.map(Into::into),
        direction: Direction::Inbound,
        from: MailAddress {
            name: Some("Cand".into()),
            address: "c@cand.example".into(),
        },
        to: vec![MailAddress {
            name: None,
            address: "a@acme.example".into(),
        }],
        cc: vec![],
        subject: Some(format!("Re: {key}")),
        sent_at: t(at),
        snippet: "hello".into(),
        body_html_sanitized: Some("<p>hello</p>".into()),
        body_text: Some("hello".into()),
        attachments: vec![MailAttachment {
            name: Some("cv.pdf".into()),
            content_type: "application/pdf".into(),
            size: 1234,
        }],
        candidates: vec![cand],
    }
}

fn backfill(cursor: &str, seen: u64) -> PageProgress<'_> {
    PageProgress {
        phase: SyncPhase::Backfill,
        backfill_cursor: Some(cursor),
        incremental_cursor: None,
        seen,
    }
}

/// Stores `page` as the next page of `grant` (starting the sync if needed).
async fn put(store: &Store, grant: GrantId, page: &[NewMailMessage]) -> PageStored {
    let state = store
        .start_mail_sync(grant, t(-365 * 86_400), t(0))
        .await
        .unwrap();
    let cursor = format!("after-v{}", state.version);
    store
        .store_page(
            grant,
            state.version,
            page,
            &backfill(&cursor, page.len() as u64),
            t(1),
        )
        .await
        .unwrap()
}

/// Every item of the timeline, read `limit` at a time.
async fn whole_timeline(
    store: &Store,
    org: OrgId,
    cand: CandidateId,
    v: MailViewer,
    limit: u32,
) -> Vec<TimelineItem> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .candidate_timeline(org, cand, v, before, limit)
            .await
            .unwrap();
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.next {
            Some(c) => before = Some(c),
            None => return out,
        }
    }
}

fn email_keys(items: &[TimelineItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            TimelineItem::Email(e) => Some(e.thread_key.clone()),
            TimelineItem::InMail(_) | TimelineItem::Booking(_) => None,
        })
        .collect()
}

/// Runs `fut` for at most `polls` polls, then drops it where it stands (as a
/// killed process stops): `None` when it was cut off.
async fn cut_after<F: Future>(polls: usize, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

both_backends! {
    async fn a_backfill_interrupted_at_random_points_stores_exactly_the_candidate_mail(store: Store) {
        // Each attempt is cut off after a few polls (as a killed process would
        // stop), then the worker starts over from the saved state.
        let w = world(&store, "Acme").await;
        const PAGES: usize = 12;
        const PER_PAGE: usize = 5;
        let polls = [1, 3, 6, 10, 15, 25, 40, usize::MAX];
        let (mut attempts, mut cut) = (0usize, 0usize);
        loop {
            let state = store.start_mail_sync(w.ga.id, t(-365 * 86_400), t(0)).await.unwrap();
            if state.phase == SyncPhase::Incremental {
                break;
            }
            let page_no: usize = state.backfill_cursor.as_deref().map_or(0, |c| c.parse().unwrap());
            // Odd messages involve no candidate: listed (seen), never stored.
            let page: Vec<NewMailMessage> = (0..PER_PAGE)
                .filter(|i| i.is_multiple_of(2))
                .map(|i| {
                    let n = page_no * PER_PAGE + i;
                    msg(&format!("p{n}"), &format!("k{}", n % 7), Some(&format!("m{n}@x")), 10_000 - n as i64, w.cand)
                })
                .collect();
            let next = (page_no + 1).to_string();
            let progress = if page_no + 1 == PAGES {
                PageProgress { phase: SyncPhase::Incremental, backfill_cursor: None, incremental_cursor: Some("delta-0"), seen: PER_PAGE as u64 }
            } else {
                backfill(&next, PER_PAGE as u64)
            };
            let limit = polls[attempts % polls.len()];
            attempts += 1;
            match cut_after(limit, store.store_page(w.ga.id, state.version, &page, &progress, t(1))).await {
                Some(done) => { done.unwrap(); }
                None => cut += 1,
            }
        }
        assert!(cut > 0, "some attempts were cut off");
        let state = store.mail_sync_state(w.ga.id).await.unwrap().unwrap();
        let wanted = PAGES * PER_PAGE.div_ceil(2);
        assert_eq!((state.messages_seen, state.messages_stored), ((PAGES * PER_PAGE) as u64, wanted as u64));
        let mut stored = Vec::new();
        for item in whole_timeline(&store, w.org, w.cand, viewer(&w.a), 3).await {
            let TimelineItem::Email(c) = item else { panic!() };
            for m in store.thread_messages(w.org, c.thread_id, viewer(&w.a)).await.unwrap() {
                stored.push(m.provider_message_id);
            }
        }
        stored.sort();
        let mut expected: Vec<String> = (0..PAGES * PER_PAGE).filter(|n| (n % PER_PAGE).is_multiple_of(2)).map(|n| format!("p{n}")).collect();
        expected.sort();
        assert_eq!(stored, expected, "nothing lost, nothing duplicated ({attempts} attempts, {cut} cut off)");
    }

    async fn a_page_stored_again_after_a_crash_stores_each_message_once_and_counts_once(db: TestDb) {
        let store = db.store();
        let w = world(&store, "Acme").await;
        let s0 = store.start_mail_sync(w.ga.id, t(-100), t(0)).await.unwrap();
        assert_eq!((s0.phase, s0.version, s0.backfill_cursor.as_deref()), (SyncPhase::Backfill, 0, None));
        assert_eq!(store.start_mail_sync(w.ga.id, t(-5), t(9)).await.unwrap(), s0, "starting again keeps the state");
        let page = [msg("p1", "k1", Some("<m1@x>"), 10, w.cand), msg("p2", "k1", Some("<m2@x>"), 20, w.cand)];
        let done = store.store_page(w.ga.id, s0.version, &page, &backfill("c1", 3), t(30)).await.unwrap();
        assert_eq!((done.stored, done.already_stored), (2, 0));
        assert_eq!((done.state.messages_seen, done.state.messages_stored), (3, 2));
        assert_eq!(done.state.backfill_cursor.as_deref(), Some("c1"));
        assert_eq!(done.state.last_success_at, Some(t(30)));

        // The worker died before it learned that the page committed, and replays it.
        let replay = store.store_page(w.ga.id, s0.version, &page, &backfill("c1", 3), t(31)).await;
        assert!(matches!(replay, Err(StoreError::StaleLease)), "{replay:?}");
        assert_eq!(store.mail_sync_state(w.ga.id).await.unwrap().unwrap(), done.state, "nothing counted twice");

        // Two instances racing with the same page: exactly one stores it.
        let other = db.open_another().await.unwrap();
        let v = done.state.version;
        let next = [msg("p3", "k2", None, 40, w.cand)];
        let progress = backfill("c2", 1);
        let (x, y) = tokio::join!(
            store.store_page(w.ga.id, v, &next, &progress, t(41)),
            other.store_page(w.ga.id, v, &next, &progress, t(41)),
        );
        assert_eq!([&x, &y].iter().filter(|r| r.is_ok()).count(), 1, "{x:?} {y:?}");
        other.close().await;

        // A rejected cursor: resync from scratch; everything comes again and is stored once.
        let reset = store.reset_mail_sync(w.ga.id, SyncPhase::Resync, t(-100), t(50)).await.unwrap();
        assert_eq!((reset.phase, reset.backfill_cursor, reset.incremental_cursor), (SyncPhase::Resync, None, None));
        assert!(reset.version > v + 1);
        let all = [page[0].clone(), page[1].clone(), next[0].clone()];
        let again = store.store_page(w.ga.id, reset.version, &all, &backfill("r1", 3), t(51)).await.unwrap();
        assert_eq!((again.stored, again.already_stored), (0, 3));
        assert_eq!(again.state.messages_stored, 3);
        // The last page lists five messages that involve no candidate: only the cursor and counter move.
        let done = PageProgress { phase: SyncPhase::Incremental, backfill_cursor: None, incremental_cursor: Some("h9"), seen: 5 };
        let inc = store.save_page_progress(w.ga.id, again.state.version, &done, t(52)).await.unwrap();
        assert_eq!((inc.phase, inc.incremental_cursor.as_deref()), (SyncPhase::Incremental, Some("h9")));
        assert_eq!((inc.messages_seen, inc.messages_stored), (again.state.messages_seen + 5, 3));
        store.record_mail_sync_error(w.ga.id, "throttled", t(53)).await.unwrap();
        let failed = store.mail_sync_state(w.ga.id).await.unwrap().unwrap();
        assert_eq!((failed.last_error.as_deref(), failed.last_error_at, failed.version), (Some("throttled"), Some(t(53)), inc.version));

        let items = whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await;
        assert_eq!(email_keys(&items), ["k2", "k1"]);
        let TimelineItem::Email(k1) = &items[1] else { panic!() };
        assert_eq!(store.thread_messages(w.org, k1.thread_id, viewer(&w.a)).await.unwrap().len(), 2);
    }

    async fn store_page_is_atomic_and_a_failing_message_leaves_neither_messages_nor_cursor(store: Store) {
        let w = world(&store, "Acme").await;
        let foreign = world(&store, "Globex").await;
        let s0 = store.start_mail_sync(w.ga.id, t(-100), t(0)).await.unwrap();
        let good = msg("p1", "k1", Some("m1@x"), 10, w.cand);
        let bad = msg("p2", "k2", Some("m2@x"), 20, foreign.cand);
        let failed = store.store_page(w.ga.id, s0.version, &[good.clone(), bad], &backfill("c1", 2), t(30)).await;
        assert!(failed.is_err(), "a candidate of another org is refused");
        assert_eq!(store.mail_sync_state(w.ga.id).await.unwrap().unwrap(), s0, "cursor, counters and version unchanged");
        assert!(whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await.is_empty(), "no message, no thread");

        let mut orphan = msg("p3", "k3", None, 5, w.cand);
        orphan.candidates.clear();
        assert!(matches!(
            store.store_page(w.ga.id, s0.version, &[orphan], &backfill("c1", 1), t(30)).await,
            Err(StoreError::Invalid(_))
        ));

        // The page is fetched again from the old cursor and now succeeds.
        let ok = store.store_page(w.ga.id, s0.version, &[good], &backfill("c1", 2), t(31)).await.unwrap();
        assert_eq!((ok.stored, ok.state.messages_seen, ok.state.messages_stored), (1, 2, 1));
        assert!(matches!(
            store.store_page(w.gb.id, 0, &[], &backfill("c1", 0), t(31)).await,
            Err(StoreError::NotFound)
        ), "a sync that was never started");
    }

    async fn the_timeline_is_newest_first_and_keyset_pages_return_every_conversation_once(store: Store) {
        let w = world(&store, "Acme").await;
        // Email threads with ties on their latest instant, and a thread that grows later.
        let page: Vec<NewMailMessage> = [("k1", 100), ("k2", 300), ("k3", 300), ("k4", 200), ("k5", 300), ("k1", 400), ("k6", 50)]
            .iter()
            .enumerate()
            .map(|(i, (k, at))| msg(&format!("p{i}"), k, None, *at, w.cand))
            .collect();
        put(&store, w.ga.id, &page).await;
        // InMail: two recruiters and one inbound, one of them tied with email at 300.
        for (author, dir, at) in [(Some(w.a.id), Direction::Outbound, 250), (Some(w.a.id), Direction::Outbound, 300), (Some(w.b.id), Direction::Outbound, 20), (None, Direction::Inbound, 350)] {
            store.create_inmail(w.org, &NewInMail { candidate_id: w.cand, author_user_id: author, direction: dir, body: "hi", sent_at: t(at) }, t(at)).await.unwrap();
        }
        let full = store.candidate_timeline(w.org, w.cand, viewer(&w.a), None, 100).await.unwrap();
        assert_eq!(full.next, None);
        assert_eq!(full.items.len(), 6 + 3);
        let latest: Vec<Timestamp> = full.items.iter().map(TimelineItem::latest_at).collect();
        assert!(latest.windows(2).all(|p| p[0] >= p[1]), "newest first: {latest:?}");
        assert_eq!(full.items[0].latest_at(), t(400));
        let TimelineItem::Email(first) = &full.items[0] else { panic!() };
        assert_eq!(first.thread_key, "k1", "ordered by the latest message of the conversation");
        assert_eq!(first.threads[0].subject.as_deref(), Some("Re: k1"));
        let cursors: Vec<TimelineCursor> = full.items.iter().map(TimelineItem::cursor).collect();
        for limit in 1..=4 {
            let paged = whole_timeline(&store, w.org, w.cand, viewer(&w.a), limit).await;
            assert_eq!(paged, full.items, "limit {limit}");
        }
        let mut unique = cursors.clone();
        unique.sort_by_key(|c| (c.latest_at, c.kind, c.id));
        unique.dedup();
        assert_eq!(unique.len(), cursors.len());
    }

    async fn a_recruiter_sees_own_and_shared_threads_and_admins_do_not_read_private_mail(store: Store) {
        let w = world(&store, "Acme").await;
        put(&store, w.ga.id, &[msg("p1", "k1", Some("m1@x"), 10, w.cand)]).await;
        let keys = |v: &User| {
            let store = store.clone();
            let v = viewer(v);
            async move { email_keys(&whole_timeline(&store, w.org, w.cand, v, 10).await) }
        };
        assert_eq!(keys(&w.a).await, ["k1"]);
        assert!(keys(&w.b).await.is_empty(), "another recruiter does not see private mail");
        assert!(keys(&w.admin).await.is_empty(), "nor does an admin");
        let TimelineItem::Email(conv) = whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await.remove(0) else { panic!() };
        let thread = conv.thread_id;
        assert!(matches!(store.thread_messages(w.org, thread, viewer(&w.b)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.share_thread(w.org, thread, viewer(&w.admin), t(20)).await, Err(StoreError::NotFound)), "an admin cannot share private mail");
        assert!(matches!(store.unshare_thread(w.org, thread, viewer(&w.admin), t(20)).await, Err(StoreError::NotFound)), "nor touch it");

        let shared = store.share_thread(w.org, thread, viewer(&w.a), t(20)).await.unwrap();
        assert_eq!((shared.shared, shared.shared_by, shared.shared_at), (true, Some(w.a.id), Some(t(20))));
        assert_eq!(keys(&w.b).await, ["k1"]);
        assert_eq!(keys(&w.admin).await, ["k1"]);
        let seen = store.thread_messages(w.org, thread, viewer(&w.b)).await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].attachments[0].name.as_deref(), Some("cv.pdf"));
        assert_eq!(seen[0].message_id_header.as_deref(), Some("m1@x"));
        assert!(matches!(store.unshare_thread(w.org, thread, viewer(&w.b), t(21)).await, Err(StoreError::NotFound)), "only the owner or an admin takes it back");

        store.unshare_thread(w.org, thread, viewer(&w.a), t(22)).await.unwrap();
        assert!(keys(&w.b).await.is_empty(), "unsharing takes it back");
        store.share_thread(w.org, thread, viewer(&w.a), t(23)).await.unwrap();
        let back = store.unshare_thread(w.org, thread, viewer(&w.admin), t(24)).await.unwrap();
        assert!(!back.shared && back.shared_by.is_none());
        assert!(keys(&w.admin).await.is_empty());
        assert_eq!(keys(&w.a).await, ["k1"], "the owner still sees it");
        let own = inbox(&store, &w.admin).await;
        put(&store, own.id, &[msg("x1", "k9", None, 5, w.cand)]).await;
        assert_eq!(keys(&w.admin).await, ["k9"], "an admin sees their own mail");
        assert_eq!(keys(&w.a).await, ["k1"], "and nobody else does");
    }

    async fn the_same_message_in_two_recruiters_shared_threads_shows_once(store: Store) {
        let w = world(&store, "Acme").await;
        // Both recruiters were on the candidate's mail: same Message-ID, own copies.
        put(&store, w.ga.id, &[msg("a1", "root@x", Some("<root@x>"), 10, w.cand), msg("a2", "root@x", Some("<reply@x>"), 20, w.cand)]).await;
        put(&store, w.gb.id, &[msg("b1", "root@x", Some("<ROOT@x>"), 10, w.cand), msg("b2", "root@x", None, 30, w.cand)]).await;
        let conv = |v: MailViewer| {
            let store = store.clone();
            async move {
                let items = whole_timeline(&store, w.org, w.cand, v, 10).await;
                assert_eq!(items.len(), 1, "one conversation per thread key");
                let TimelineItem::Email(c) = items.into_iter().next().unwrap() else { panic!() };
                c
            }
        };
        assert_eq!(conv(viewer(&w.a)).await.threads.len(), 1, "b's thread is private");
        for thread in [conv(viewer(&w.a)).await.thread_id, conv(viewer(&w.b)).await.thread_id] {
            let owner = if thread == conv(viewer(&w.a)).await.thread_id { &w.a } else { &w.b };
            store.share_thread(w.org, thread, viewer(owner), t(40)).await.unwrap();
        }
        let c = conv(viewer(&w.admin)).await;
        assert_eq!((c.threads.len(), c.latest_at), (2, t(30)));
        let msgs = store.thread_messages(w.org, c.thread_id, viewer(&w.admin)).await.unwrap();
        let ids: Vec<Option<&str>> = msgs.iter().map(|m| m.message_id_header.as_deref()).collect();
        assert_eq!(ids, [Some("root@x"), Some("reply@x"), None], "the shared message once");
        let own = store.thread_messages(w.org, c.thread_id, viewer(&w.b)).await.unwrap();
        assert_eq!(own.len(), 3);
        assert_eq!(own[0].owner_user_id, w.b.id, "the viewer's own copy is shown");
        assert_eq!(own[0].provider_message_id, "b1");
    }

    async fn all_inmail_between_one_recruiter_and_the_candidate_is_one_conversation(store: Store) {
        let w = world(&store, "Acme").await;
        for (author, dir, at) in [(Some(w.a.id), Direction::Outbound, 10), (Some(w.b.id), Direction::Outbound, 20), (Some(w.a.id), Direction::Outbound, 30), (None, Direction::Inbound, 25)] {
            store.create_inmail(w.org, &NewInMail { candidate_id: w.cand, author_user_id: author, direction: dir, body: "hi", sent_at: t(at) }, t(at)).await.unwrap();
        }
        let items = whole_timeline(&store, w.org, w.cand, viewer(&w.b), 10).await;
        let convs: Vec<(Option<UserId>, u64, Timestamp)> = items
            .iter()
            .map(|i| match i {
                TimelineItem::InMail(c) => (c.recruiter, c.messages, c.latest_at),
                TimelineItem::Email(_) | TimelineItem::Booking(_) => panic!("only InMail"),
            })
            .collect();
        assert_eq!(convs, [(Some(w.a.id), 2, t(30)), (None, 1, t(25)), (Some(w.b.id), 1, t(20))]);
        let a = store.inmail_conversation(w.org, w.cand, Some(w.a.id)).await.unwrap();
        assert_eq!(a.iter().map(|m| m.sent_at).collect::<Vec<_>>(), [t(10), t(30)]);
        assert_eq!(store.inmail_conversation(w.org, w.cand, None).await.unwrap().len(), 1);
    }

    async fn deauthorizing_stops_the_sync_and_purging_removes_that_grants_mail_only(store: Store) {
        let w = world(&store, "Acme").await;
        put(&store, w.ga.id, &[msg("a1", "k1", None, 10, w.cand), msg("a2", "k2", None, 50, w.cand)]).await;
        put(&store, w.gb.id, &[msg("b1", "k1", None, 40, w.cand)]).await;
        let state = store.mail_sync_state(w.ga.id).await.unwrap().unwrap();
        store.delete_grant(w.a.id, CapabilityKind::Inbox).await.unwrap().unwrap();
        assert_eq!(store.mail_sync_state(w.ga.id).await.unwrap(), None, "the sync state goes with the grant");
        assert!(matches!(
            store.store_page(w.ga.id, state.version, &[msg("a3", "k1", None, 60, w.cand)], &backfill("x", 1), t(60)).await,
            Err(StoreError::NotFound)
        ), "a page in flight after deauthorizing is refused");
        assert_eq!(email_keys(&whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await), ["k2", "k1"], "without purge, the mail stays");

        // Re-authorized: a new grant continues the same thread.
        let ga2 = inbox(&store, &w.a).await;
        assert_ne!(ga2.id, w.ga.id);
        put(&store, ga2.id, &[msg("a1", "k1", None, 20, w.cand)]).await;
        let purged = store.purge_grant_mail(w.org, w.ga.id).await.unwrap();
        assert_eq!(purged, PurgedMail { messages: 2, threads: 1 });
        let items = whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await;
        assert_eq!(email_keys(&items), ["k1"]);
        let TimelineItem::Email(k1) = &items[0] else { panic!() };
        assert_eq!(k1.latest_at, t(20), "recomputed from what is left");
        let left = store.thread_messages(w.org, k1.thread_id, viewer(&w.a)).await.unwrap();
        assert_eq!(left.iter().map(|m| m.grant_id).collect::<Vec<_>>(), [ga2.id]);
        assert_eq!(email_keys(&whole_timeline(&store, w.org, w.cand, viewer(&w.b), 10).await), ["k1"], "b's mail is untouched");
        assert_eq!(store.purge_grant_mail(w.org, w.ga.id).await.unwrap(), PurgedMail::default());
    }

    async fn mail_is_scoped_to_its_organization(store: Store) {
        let w = world(&store, "Acme").await;
        let g = world(&store, "Globex").await;
        put(&store, w.ga.id, &[msg("p1", "k1", Some("m@x"), 10, w.cand)]).await;
        put(&store, g.ga.id, &[msg("p1", "k1", Some("m@x"), 10, g.cand)]).await;
        let TimelineItem::Email(mine) = whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await.remove(0) else { panic!() };
        store.share_thread(w.org, mine.thread_id, viewer(&w.a), t(20)).await.unwrap();
        assert!(whole_timeline(&store, g.org, w.cand, viewer(&g.admin), 10).await.is_empty(), "another org's candidate");
        assert!(matches!(store.thread_messages(g.org, mine.thread_id, viewer(&g.a)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.share_thread(g.org, mine.thread_id, viewer(&w.a), t(21)).await, Err(StoreError::NotFound)));
        assert_eq!(store.purge_grant_mail(g.org, w.ga.id).await.unwrap(), PurgedMail::default());
        let theirs = whole_timeline(&store, g.org, g.cand, viewer(&g.a), 10).await;
        let TimelineItem::Email(c) = &theirs[0] else { panic!() };
        assert_eq!(c.threads.len(), 1, "the same thread key in another org is another conversation");
        assert_eq!(store.thread_messages(g.org, c.thread_id, viewer(&g.a)).await.unwrap().len(), 1);
    }

    async fn found_mail_is_stored_without_moving_the_cursor_and_known_mail_gains_the_new_candidate(store: Store) {
        let w = world(&store, "Acme").await;
        assert!(matches!(
            store.store_found_mail(w.ga.id, &[msg("p1", "k1", Some("m1@x"), 10, w.cand)], t(2)).await,
            Err(StoreError::NotFound)
        ), "no sync state yet: the backfill will find it");
        put(&store, w.ga.id, &[msg("p1", "k1", Some("m1@x"), 10, w.cand)]).await;
        let before = store.mail_sync_state(w.ga.id).await.unwrap().unwrap();
        let later = store
            .create_candidate(w.org, "Later", &[EmailAddress::parse("later@cand.example").unwrap()], t(3))
            .await
            .unwrap()
            .id;
        // p1 also names the new candidate; p2 only them.
        let mut p1 = msg("p1", "k1", Some("m1@x"), 10, w.cand);
        p1.candidates.push(later);
        let p2 = msg("p2", "k2", Some("m2@x"), 5, later);
        let found = store.store_found_mail(w.ga.id, &[p1.clone(), p2], t(4)).await.unwrap();
        assert_eq!((found.stored, found.already_stored), (1, 1));
        assert_eq!(found.state.version, before.version, "pages in flight are not superseded");
        assert_eq!(found.state.backfill_cursor, before.backfill_cursor);
        assert_eq!(found.state.phase, before.phase);
        assert_eq!(found.state.messages_stored, 2);
        let theirs = whole_timeline(&store, w.org, later, viewer(&w.a), 10).await;
        assert_eq!(email_keys(&theirs), ["k1", "k2"], "the known message is linked to them too");
        assert_eq!(email_keys(&whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await), ["k1"]);
        // Again: nothing new.
        let again = store.store_found_mail(w.ga.id, &[p1], t(5)).await.unwrap();
        assert_eq!((again.stored, again.already_stored), (0, 1));
        assert_eq!(
            store.grant_message_ids(w.ga.id).await.unwrap(),
            [Some("m1@x".to_owned()), Some("m2@x".to_owned())]
        );
    }

    async fn removing_synced_mail_deletes_those_messages_and_empty_threads_only(store: Store) {
        let w = world(&store, "Acme").await;
        put(&store, w.ga.id, &[
            msg("p1", "k1", Some("m1@x"), 10, w.cand),
            msg("p2", "k1", Some("m2@x"), 20, w.cand),
            msg("p3", "k2", Some("m3@x"), 30, w.cand),
        ]).await;
        put(&store, w.gb.id, &[msg("p3", "k2", Some("m3@x"), 30, w.cand)]).await;
        assert!(store.has_synced_message(w.ga.id, "p2").await.unwrap());
        assert!(!store.has_synced_message(w.ga.id, "nope").await.unwrap());
        let n = store
            .remove_synced_mail(w.ga.id, &["p2".into(), "p3".into(), "nope".into()], t(40))
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(!store.has_synced_message(w.ga.id, "p2").await.unwrap());
        assert_eq!(store.grant_message_ids(w.ga.id).await.unwrap(), [Some("m1@x".to_owned())]);
        assert_eq!(store.grant_message_ids(w.gb.id).await.unwrap(), [Some("m3@x".to_owned())], "another mailbox's copy stays");
        let items = whole_timeline(&store, w.org, w.cand, viewer(&w.a), 10).await;
        assert_eq!(email_keys(&items), ["k1"], "a's thread k2 is gone with its last message");
        let TimelineItem::Email(k1) = &items[0] else { panic!() };
        assert_eq!(k1.latest_at, t(10), "recomputed from what is left");
        assert_eq!(store.mail_sync_state(w.ga.id).await.unwrap().unwrap().messages_stored, 1);
        assert_eq!(store.remove_synced_mail(w.ga.id, &["p2".into()], t(41)).await.unwrap(), 0, "idempotent");
        store.delete_grant(w.a.id, CapabilityKind::Inbox).await.unwrap();
        assert!(matches!(
            store.remove_synced_mail(w.ga.id, &["p1".into()], t(42)).await,
            Err(StoreError::NotFound)
        ), "no sync state once deauthorized");
    }
}
