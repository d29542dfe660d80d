//! Scheduling settings, links and bookings: the same specification on SQLite
//! and PostgreSQL. The central rule: a recruiter's confirmed bookings never
//! overlap, buffers included, even when several server instances book at once.

use std::sync::Arc;

use hirewire_domain::email::EmailAddress;
use hirewire_store::testing::TestDb;
use hirewire_store::*;
use jiff::{SignedDuration, Timestamp};

/// The injected clock: `t(s)` is `s` seconds after 2026-01-01T00:00:00Z.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

/// `m` minutes after `t(0)` plus one day (meetings happen after links are made).
fn at(m: i64) -> Timestamp {
    t(86_400 + m * 60)
}

const WEEK: i64 = 7 * 86_400;

struct Fixture {
    org: OrgId,
    recruiter: UserId,
    candidate: CandidateId,
}

async fn fixture(store: &Store, org_name: &str) -> Fixture {
    let org = store.create_org(org_name, &[], t(0)).await.unwrap().id;
    let email = EmailAddress::parse(&format!("rita@{}.example", org_name.to_lowercase())).unwrap();
    let recruiter = store
        .create_user(
            &NewUser {
                org_id: org,
                email: &email,
                display_name: "Rita Recruiter",
                role: Role::Recruiter,
                time_zone: "Europe/Paris",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap()
        .id;
    let candidate = store
        .create_candidate(org, "Jane Doe", &[], t(0))
        .await
        .unwrap()
        .id;
    Fixture {
        org,
        recruiter,
        candidate,
    }
}

const MEETING: MeetingType = MeetingType {
    kind: MeetingKind::Interview,
    duration_minutes: 45,
    before_buffer_minutes: 5,
    after_buffer_minutes: 10,
    location: MeetingLocation::Video,
};

async fn link(store: &Store, f: &Fixture, digest: &[u8]) -> SchedulingLink {
    store
        .create_link(
            &NewSchedulingLink {
                org_id: f.org,
                user_id: f.recruiter,
                candidate_id: f.candidate,
                meeting_kind: MeetingKind::Interview,
                token_digest: digest,
                token_sealed: Some("v1.k.sealed"),
                meeting: Some(&MEETING),
                expires_at: t(2 * WEEK),
            },
            t(0),
        )
        .await
        .unwrap()
}

/// A meeting from minute `start` to minute `end` (of [`at`]) with buffers.
fn slot(start: i64, end: i64, before: u32, after: u32) -> Slot {
    Slot::with_buffers(at(start), at(end), before, after)
}

fn booking_of(org: OrgId, link: SchedulingLinkId, slot: Slot) -> NewBooking<'static> {
    NewBooking {
        org_id: org,
        link_id: link,
        slot,
        attendee_name: "Jane Doe",
        attendee_email: "jane@example.org",
        attendee_phone: Some("+33 6 12 34 56 78"),
        attendee_note: Some("Looking forward"),
        attendee_time_zone: "America/New_York",
        daily_cap: None,
    }
}

fn settings() -> SchedulingSettings {
    SchedulingSettings {
        working_hours: vec![
            WorkingHours {
                days: vec![1, 2, 3, 4, 5],
                start: "09:00".into(),
                end: "12:00".into(),
            },
            WorkingHours {
                days: vec![1, 2, 3, 4],
                start: "13:30".into(),
                end: "17:00".into(),
            },
        ],
        overrides: vec![
            DateOverride {
                date: "2026-12-24".into(),
                ranges: vec![],
            },
            DateOverride {
                date: "2026-12-19".into(),
                ranges: vec![TimeRange {
                    start: "10:00".into(),
                    end: "24:00".into(),
                }],
            },
        ],
        meeting_types: vec![
            MeetingType {
                kind: MeetingKind::PhoneScreen,
                duration_minutes: 15,
                before_buffer_minutes: 0,
                after_buffer_minutes: 5,
                location: MeetingLocation::Phone,
            },
            MeetingType {
                kind: MeetingKind::Interview,
                duration_minutes: 90,
                before_buffer_minutes: 15,
                after_buffer_minutes: 15,
                location: MeetingLocation::Address("1 rue de Rivoli, Paris".into()),
            },
        ],
        minimum_notice_minutes: 240,
        no_same_day: true,
        horizon_days: 30,
        max_per_day: Some(4),
        tentative_is_busy: false,
    }
}

fn conflict(r: Result<impl std::fmt::Debug, StoreError>) -> &'static str {
    match r {
        Err(StoreError::Conflict { what }) => what,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

both_backends! {
    async fn scheduling_settings_round_trip_are_replaced_validated_and_scoped_to_their_org(store: Store) {
        let a = fixture(&store, "Acme").await;
        let b = fixture(&store, "Globex").await;
        assert_eq!(store.get_scheduling_settings(a.org, a.recruiter).await.unwrap(), None);
        let mut s = settings();
        store.save_scheduling_settings(a.org, a.recruiter, &s, t(1)).await.unwrap();
        assert_eq!(store.get_scheduling_settings(a.org, a.recruiter).await.unwrap(), Some(s.clone()));
        s.meeting_types[0].location = MeetingLocation::Video;
        s.max_per_day = None;
        s.tentative_is_busy = true;
        store.save_scheduling_settings(a.org, a.recruiter, &s, t(2)).await.unwrap();
        assert_eq!(store.get_scheduling_settings(a.org, a.recruiter).await.unwrap(), Some(s.clone()));
        assert_eq!(s.meeting_type(MeetingKind::Interview).unwrap().duration_minutes, 90);

        assert_eq!(store.get_scheduling_settings(b.org, a.recruiter).await.unwrap(), None, "not through another org");
        assert!(matches!(store.save_scheduling_settings(b.org, a.recruiter, &s, t(3)).await, Err(StoreError::NotFound)));

        let broken: [fn(&mut SchedulingSettings); 7] = [
            |s| s.meeting_types[0].duration_minutes = 10,
            |s| s.meeting_types[1].duration_minutes = 121,
            |s| s.working_hours[0].days.push(0),
            |s| s.working_hours[1].end = "13:00".into(),
            |s| s.overrides[0].date = "2026-02-30".into(),
            |s| s.meeting_types[1].kind = MeetingKind::PhoneScreen,
            |s| s.max_per_day = Some(0),
        ];
        for (i, f) in broken.iter().enumerate() {
            let mut bad = settings();
            f(&mut bad);
            assert!(matches!(store.save_scheduling_settings(a.org, a.recruiter, &bad, t(4)).await, Err(StoreError::Invalid(_))), "case {i}");
        }
        assert_eq!(store.get_scheduling_settings(a.org, a.recruiter).await.unwrap(), Some(s), "refused saves change nothing");
    }

    async fn a_link_is_found_by_its_token_digest_opened_once_and_expires_at_read_time(store: Store) {
        let a = fixture(&store, "Acme").await;
        let b = fixture(&store, "Globex").await;
        let l = link(&store, &a, b"digest-1").await;
        assert_eq!((l.status, l.booking_id, l.opened_at), (LinkStatus::Sent, None, None));
        assert_eq!(l.token_sealed.as_deref(), Some("v1.k.sealed"), "the sealed token is kept as given");
        assert_eq!(l.meeting.as_ref(), Some(&MEETING), "the meeting offered is fixed with the link");
        let wrong_kind = NewSchedulingLink { org_id: a.org, user_id: a.recruiter, candidate_id: a.candidate, meeting_kind: MeetingKind::PhoneScreen, token_digest: b"digest-9", token_sealed: None, meeting: Some(&MEETING), expires_at: t(WEEK) };
        assert!(matches!(store.create_link(&wrong_kind, t(1)).await, Err(StoreError::Invalid(_))));
        let too_long = MeetingType { duration_minutes: 121, ..MEETING.clone() };
        let bad_duration = NewSchedulingLink { meeting_kind: MeetingKind::Interview, meeting: Some(&too_long), ..wrong_kind };
        assert!(matches!(store.create_link(&bad_duration, t(1)).await, Err(StoreError::Invalid(_))));
        assert_eq!(store.link_by_digest(b"digest-1", t(10)).await.unwrap(), Some(l.clone()));
        assert_eq!(store.link_by_digest(b"unknown", t(10)).await.unwrap(), None);

        assert!(store.mark_link_opened(l.id, t(20)).await.unwrap());
        assert!(!store.mark_link_opened(l.id, t(30)).await.unwrap(), "the first opening counts");
        let opened = store.link_by_digest(b"digest-1", t(40)).await.unwrap().unwrap();
        assert_eq!((opened.status, opened.opened_at), (LinkStatus::Opened, Some(t(20))));

        let expired = store.link_by_digest(b"digest-1", t(2 * WEEK)).await.unwrap().unwrap();
        assert_eq!(expired.status, LinkStatus::Expired, "expired from expires_at on");
        assert!(!expired.is_bookable());
        let other = link(&store, &a, b"digest-2").await;
        assert!(!store.mark_link_opened(other.id, t(2 * WEEK)).await.unwrap(), "an expired link is not opened");

        assert_eq!(conflict(store.create_link(&NewSchedulingLink { org_id: a.org, user_id: a.recruiter, candidate_id: a.candidate, meeting_kind: MeetingKind::PhoneScreen, token_digest: b"digest-1", token_sealed: None, meeting: None, expires_at: t(WEEK) }, t(1)).await), "the link token is already in use");
        let foreign_candidate = NewSchedulingLink { org_id: a.org, user_id: a.recruiter, candidate_id: b.candidate, meeting_kind: MeetingKind::PhoneScreen, token_digest: b"digest-3", token_sealed: None, meeting: None, expires_at: t(WEEK) };
        assert!(matches!(store.create_link(&foreign_candidate, t(1)).await, Err(StoreError::NotFound)));
        let foreign_recruiter = NewSchedulingLink { user_id: b.recruiter, candidate_id: a.candidate, ..foreign_candidate };
        assert!(matches!(store.create_link(&foreign_recruiter, t(1)).await, Err(StoreError::NotFound)));

        let by_candidate = store.list_links(a.org, LinkFilter::Candidate(a.candidate), t(50)).await.unwrap();
        assert_eq!(by_candidate.iter().map(|l| l.id).collect::<Vec<_>>(), vec![other.id, l.id], "newest first");
        assert_eq!(store.list_links(a.org, LinkFilter::User(a.recruiter), t(50)).await.unwrap(), by_candidate);
        assert!(store.list_links(b.org, LinkFilter::Candidate(a.candidate), t(50)).await.unwrap().is_empty());
    }

    async fn a_link_books_once_and_then_is_the_bookings_manage_link(store: Store) {
        let a = fixture(&store, "Acme").await;
        let l = link(&store, &a, b"digest-1").await;
        store.mark_link_opened(l.id, t(5)).await.unwrap();
        let b = store.book(&booking_of(a.org, l.id, slot(60, 150, 15, 10)), t(10)).await.unwrap();
        assert_eq!((b.user_id, b.candidate_id, b.link_id, b.meeting_kind, b.status), (a.recruiter, a.candidate, l.id, MeetingKind::Interview, BookingStatus::Confirmed));
        assert_eq!((b.slot.blocked_start, b.slot.blocked_end), (at(45), at(160)));
        assert_eq!(b.attendee.phone.as_deref(), Some("+33 6 12 34 56 78"));
        assert_eq!((b.provider_event_id.as_deref(), b.created_at), (None, t(10)));
        assert!(b.idempotency_key.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(&c)));

        let booked = store.link_by_digest(b"digest-1", t(3 * WEEK)).await.unwrap().unwrap();
        assert_eq!((booked.status, booked.booking_id), (LinkStatus::Booked, Some(b.id)), "booked links do not expire");
        assert_eq!(store.booking_by_link_digest(b"digest-1").await.unwrap(), Some(b.clone()));
        assert_eq!(store.booking_by_link_digest(b"unknown").await.unwrap(), None);

        assert_eq!(conflict(store.book(&booking_of(a.org, l.id, slot(600, 660, 0, 0)), t(11)).await), LINK_USED, "single use");
        assert_eq!(conflict(store.revoke_link(a.org, l.id, t(12)).await), LINK_USED);

        store.set_booking_provider_event(a.org, b.id, "AAMkAD-event", Some("uid-1@example"), t(13)).await.unwrap();
        let moved = store.reschedule(a.org, b.id, &slot(120, 210, 15, 10), None, t(14)).await.unwrap();
        assert_eq!((moved.provider_event_id.as_deref(), moved.ical_uid.as_deref()), (Some("AAMkAD-event"), Some("uid-1@example")), "rescheduling keeps the event");
        assert_eq!((moved.idempotency_key.as_str(), moved.slot.starts_at, moved.updated_at), (b.idempotency_key.as_str(), at(120), t(14)));
        assert_eq!(store.booking(a.org, b.id).await.unwrap(), Some(moved));
    }

    async fn revoked_and_expired_links_cannot_book_and_write_nothing(store: Store) {
        let a = fixture(&store, "Acme").await;
        let revoked = link(&store, &a, b"digest-1").await;
        let r = store.revoke_link(a.org, revoked.id, t(5)).await.unwrap();
        assert_eq!((r.status, r.revoked_at), (LinkStatus::Revoked, Some(t(5))));
        assert_eq!(store.revoke_link(a.org, revoked.id, t(6)).await.unwrap().revoked_at, Some(t(5)), "revoking twice is a no-op");
        assert!(!store.mark_link_opened(revoked.id, t(7)).await.unwrap());
        assert_eq!(conflict(store.book(&booking_of(a.org, revoked.id, slot(60, 90, 0, 0)), t(8)).await), LINK_REVOKED);

        let expiring = link(&store, &a, b"digest-2").await;
        assert_eq!(conflict(store.book(&booking_of(a.org, expiring.id, slot(60, 90, 0, 0)), t(2 * WEEK)).await), LINK_EXPIRED);
        assert_eq!(store.revoke_link(a.org, expiring.id, t(2 * WEEK)).await.unwrap().status, LinkStatus::Revoked, "an expired link can still be revoked");

        let fine = link(&store, &a, b"digest-3").await;
        let backwards = Slot { starts_at: at(90), ends_at: at(60), blocked_start: at(60), blocked_end: at(90) };
        assert!(matches!(store.book(&booking_of(a.org, fine.id, backwards), t(9)).await, Err(StoreError::Invalid(_))));
        let buffer_inside = Slot { starts_at: at(60), ends_at: at(90), blocked_start: at(70), blocked_end: at(90) };
        assert!(matches!(store.book(&booking_of(a.org, fine.id, buffer_inside), t(9)).await, Err(StoreError::Invalid(_))));
        assert!(store.confirmed_bookings(a.org, a.recruiter, at(0), at(1000)).await.unwrap().is_empty());
        assert_eq!(store.link(a.org, fine.id, t(9)).await.unwrap().unwrap().status, LinkStatus::Sent);
    }

    async fn overlapping_blocked_ranges_are_refused_and_touching_ones_allowed(store: Store) {
        let a = fixture(&store, "Acme").await;
        let other_recruiter = {
            let email = EmailAddress::parse("olga@acme.example").unwrap();
            store.create_user(&NewUser { org_id: a.org, email: &email, display_name: "Olga", role: Role::Recruiter, time_zone: "UTC", password_hash: None }, t(0)).await.unwrap().id
        };
        let links: Vec<SchedulingLink> = {
            let mut v = Vec::new();
            for i in 0..6u8 {
                v.push(link(&store, &a, &[b'd', i]).await);
            }
            v
        };
        // Blocked 09:50–10:35.
        let first = store.book(&booking_of(a.org, links[0].id, slot(600, 630, 10, 5)), t(1)).await.unwrap();
        // Buffers overlap buffers: 10:30 (before buffer of 10) < 10:35.
        assert_eq!(conflict(store.book(&booking_of(a.org, links[1].id, slot(640, 655, 10, 0)), t(2)).await), SLOT_TAKEN);
        // A short meeting inside the long one's after buffer.
        assert_eq!(conflict(store.book(&booking_of(a.org, links[1].id, slot(631, 634, 0, 0)), t(2)).await), SLOT_TAKEN);
        // A long meeting around the whole first range.
        assert_eq!(conflict(store.book(&booking_of(a.org, links[1].id, slot(540, 720, 0, 0)), t(2)).await), SLOT_TAKEN);
        let loser = store.link(a.org, links[1].id, t(3)).await.unwrap().unwrap();
        assert_eq!((loser.status, loser.booking_id), (LinkStatus::Sent, None), "the refused booking left the link usable");

        // Touching on both sides: blocked 10:35–11:00 and 09:00–09:50.
        let after = store.book(&booking_of(a.org, links[1].id, slot(640, 660, 5, 0)), t(4)).await.unwrap();
        let before = store.book(&booking_of(a.org, links[2].id, slot(540, 580, 0, 10)), t(4)).await.unwrap();
        let mine = store.confirmed_bookings(a.org, a.recruiter, at(0), at(1440)).await.unwrap();
        assert_eq!(mine.iter().map(|b| b.id).collect::<Vec<_>>(), vec![before.id, first.id, after.id], "by start time");
        // The window matches blocked ranges: 10:34 is inside the first booking's after buffer.
        let window = store.confirmed_bookings(a.org, a.recruiter, at(634), at(635)).await.unwrap();
        assert_eq!(window.iter().map(|b| b.id).collect::<Vec<_>>(), vec![first.id]);

        // Another recruiter's calendar is independent.
        let f2 = Fixture { org: a.org, recruiter: other_recruiter, candidate: a.candidate };
        let theirs = link(&store, &f2, b"olga").await;
        store.book(&booking_of(a.org, theirs.id, slot(600, 630, 10, 5)), t(5)).await.unwrap();
    }

    async fn cancelled_bookings_free_their_range(store: Store) {
        let a = fixture(&store, "Acme").await;
        let l1 = link(&store, &a, b"d1").await;
        let l2 = link(&store, &a, b"d2").await;
        let l3 = link(&store, &a, b"d3").await;
        let b1 = store.book(&booking_of(a.org, l1.id, slot(600, 660, 0, 0)), t(1)).await.unwrap();
        assert_eq!(conflict(store.book(&booking_of(a.org, l2.id, slot(630, 690, 0, 0)), t(2)).await), SLOT_TAKEN);
        let c = store.cancel_booking(a.org, b1.id, t(3)).await.unwrap();
        assert_eq!((c.status, c.cancelled_at, c.updated_at), (BookingStatus::Cancelled, Some(t(3)), t(3)));
        assert_eq!(store.cancel_booking(a.org, b1.id, t(4)).await.unwrap(), c, "cancelling twice is a no-op");
        assert!(store.confirmed_bookings(a.org, a.recruiter, at(0), at(1440)).await.unwrap().is_empty());
        let b2 = store.book(&booking_of(a.org, l2.id, slot(630, 690, 0, 0)), t(5)).await.unwrap();
        assert_eq!(conflict(store.reschedule(a.org, b1.id, &slot(900, 960, 0, 0), None, t(6)).await), BOOKING_CANCELLED);
        assert_eq!(store.link(a.org, l1.id, t(6)).await.unwrap().unwrap().status, LinkStatus::Booked, "a cancelled booking's link stays used");
        assert_eq!(store.booking_by_link_digest(b"d1").await.unwrap().unwrap().status, BookingStatus::Cancelled);
        assert_eq!(conflict(store.book(&booking_of(a.org, l3.id, slot(600, 640, 0, 0)), t(7)).await), SLOT_TAKEN, "the new booking holds the range");
        assert_eq!(store.confirmed_bookings(a.org, a.recruiter, at(0), at(1440)).await.unwrap(), vec![b2]);
    }

    async fn rescheduling_onto_a_taken_range_is_refused_and_leaves_the_booking_unchanged(store: Store) {
        let a = fixture(&store, "Acme").await;
        let l1 = link(&store, &a, b"d1").await;
        let l2 = link(&store, &a, b"d2").await;
        let b1 = store.book(&booking_of(a.org, l1.id, slot(600, 660, 10, 10)), t(1)).await.unwrap();
        let b2 = store.book(&booking_of(a.org, l2.id, slot(720, 780, 0, 0)), t(1)).await.unwrap();
        assert_eq!(conflict(store.reschedule(a.org, b2.id, &slot(665, 725, 0, 0), None, t(2)).await), SLOT_TAKEN, "into b1's after buffer");
        assert_eq!(conflict(store.reschedule(a.org, b2.id, &slot(680, 700, 15, 0), None, t(2)).await), SLOT_TAKEN, "b2's own buffer reaches b1's");
        assert_eq!(store.booking(a.org, b2.id).await.unwrap(), Some(b2.clone()), "unchanged");
        // Overlapping its own old range is fine; touching b1 is fine.
        let moved = store.reschedule(a.org, b2.id, &slot(690, 750, 20, 0), None, t(3)).await.unwrap();
        assert_eq!((moved.slot.blocked_start, moved.slot.ends_at, moved.status), (at(670), at(750), BookingStatus::Confirmed));
        assert_eq!(store.confirmed_bookings(a.org, a.recruiter, at(0), at(1440)).await.unwrap(), vec![b1, moved]);
        assert!(matches!(store.reschedule(a.org, BookingId(9999), &slot(0, 30, 0, 0), None, t(4)).await, Err(StoreError::NotFound)));
    }

    async fn links_and_bookings_are_scoped_to_their_org(store: Store) {
        let a = fixture(&store, "Acme").await;
        let b = fixture(&store, "Globex").await;
        let l = link(&store, &a, b"d1").await;
        assert_eq!(store.link(b.org, l.id, t(1)).await.unwrap(), None);
        assert!(matches!(store.revoke_link(b.org, l.id, t(1)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.book(&booking_of(b.org, l.id, slot(600, 630, 0, 0)), t(1)).await, Err(StoreError::NotFound)));
        let booked = store.book(&booking_of(a.org, l.id, slot(600, 630, 0, 0)), t(2)).await.unwrap();
        assert_eq!(store.booking(b.org, booked.id).await.unwrap(), None);
        assert!(matches!(store.cancel_booking(b.org, booked.id, t(3)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.reschedule(b.org, booked.id, &slot(700, 730, 0, 0), None, t(3)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.set_booking_provider_event(b.org, booked.id, "evil", None, t(3)).await, Err(StoreError::NotFound)));
        assert!(store.confirmed_bookings(b.org, a.recruiter, at(0), at(1440)).await.unwrap().is_empty());
        assert!(store.list_links(b.org, LinkFilter::User(a.recruiter), t(3)).await.unwrap().is_empty());
        assert_eq!(store.booking(a.org, booked.id).await.unwrap(), Some(booked), "untouched by the other org");
        // Another org's recruiter books the same time without conflict.
        let theirs = link(&store, &b, b"d2").await;
        store.book(&booking_of(b.org, theirs.id, slot(600, 630, 0, 0)), t(4)).await.unwrap();
    }

    async fn racing_bookings_of_overlapping_slots_from_two_instances_let_exactly_one_win(db: TestDb) {
        const ROUNDS: i64 = 20;
        const PER_STORE: usize = 4;
        let stores = [db.store(), db.open_another().await.unwrap()];
        let a = fixture(&stores[0], "Acme").await;
        let durations = [15, 30, 45, 60, 90, 120];
        for round in 0..ROUNDS {
            // Every contender's blocked range contains minute `pivot` of the
            // round's day, whatever its duration, offset and buffers.
            let pivot = round * 1440 + 600;
            let mut contenders = Vec::new();
            for i in 0..2 * PER_STORE {
                let digest = format!("round-{round}-{i}");
                let l = link(&stores[0], &a, digest.as_bytes()).await;
                let duration = durations[(i + round as usize) % durations.len()];
                let before = (i as u32 * 5) % 20;
                let after = (i as u32 * 7) % 25;
                let start = pivot - (i as i64 * 13 + round) % duration;
                contenders.push((l.id, slot(start, start + duration, before, after)));
            }
            let barrier = Arc::new(tokio::sync::Barrier::new(contenders.len()));
            let mut tasks = Vec::new();
            for (i, (link_id, s)) in contenders.iter().copied().enumerate() {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                let org = a.org;
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    (link_id, store.book(&booking_of(org, link_id, s), t(60)).await)
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    (link_id, Ok(b)) => winners.push((link_id, b)),
                    (_, Err(StoreError::Conflict { what })) => assert_eq!(what, SLOT_TAKEN, "round {round}"),
                    (_, Err(e)) => panic!("round {round}: unexpected error {e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one booking wins");
            let (winning_link, winner) = &winners[0];
            let day = stores[1].confirmed_bookings(a.org, a.recruiter, at(round * 1440), at((round + 1) * 1440)).await.unwrap();
            assert_eq!(day, vec![winner.clone()], "round {round}: nothing else was written");
            for (link_id, _) in &contenders {
                let l = stores[1].link(a.org, *link_id, t(61)).await.unwrap().unwrap();
                if link_id == winning_link {
                    assert_eq!((l.status, l.booking_id), (LinkStatus::Booked, Some(winner.id)));
                } else {
                    assert_eq!((l.status, l.booking_id), (LinkStatus::Sent, None), "round {round}: a loser's link stays usable");
                }
            }
        }
        // Across all rounds, no two confirmed blocked ranges overlap.
        let all = stores[0].confirmed_bookings(a.org, a.recruiter, at(-1440), at((ROUNDS + 1) * 1440)).await.unwrap();
        assert_eq!(all.len(), ROUNDS as usize);
        for pair in all.windows(2) {
            assert!(pair[0].slot.blocked_end <= pair[1].slot.blocked_start, "{pair:?}");
        }
        stores[1].close().await;
    }

    async fn racing_bookings_of_one_link_for_different_slots_book_it_once(db: TestDb) {
        let stores = [db.store(), db.open_another().await.unwrap()];
        let a = fixture(&stores[0], "Acme").await;
        for round in 0..10i64 {
            let l = link(&stores[0], &a, format!("r{round}").as_bytes()).await;
            let barrier = Arc::new(tokio::sync::Barrier::new(6));
            let mut tasks = Vec::new();
            for i in 0..6i64 {
                let store = stores[(i % 2) as usize].clone();
                let barrier = barrier.clone();
                let (org, link_id) = (a.org, l.id);
                // Far apart: only the link is contended.
                let s = slot(round * 1440 + i * 120, round * 1440 + i * 120 + 30, 0, 0);
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    store.book(&booking_of(org, link_id, s), t(60)).await
                }));
            }
            let mut wins = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(_) => wins += 1,
                    Err(e) => assert!(matches!(e, StoreError::Conflict { what: LINK_USED }), "{e:?}"),
                }
            }
            assert_eq!(wins, 1, "round {round}");
        }
        assert_eq!(stores[0].confirmed_bookings(a.org, a.recruiter, at(-1440), at(20 * 1440)).await.unwrap().len(), 10);
        stores[1].close().await;
    }
}

#[test]
fn slots_with_buffers_widen_the_blocked_range() {
    let s = Slot::with_buffers(at(60), at(90), 15, 5);
    assert_eq!(
        (s.blocked_start, s.blocked_end),
        (
            at(60) - SignedDuration::from_mins(15),
            at(90) + SignedDuration::from_mins(5)
        )
    );
}

both_backends! {
    async fn a_revoke_racing_a_booking_of_the_same_link_leaves_one_consistent_outcome(db: TestDb) {
        let stores = [db.store(), db.open_another().await.unwrap()];
        let a = fixture(&stores[0], "Acme").await;
        for round in 0..10i64 {
            let l = link(&stores[0], &a, format!("r{round}").as_bytes()).await;
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let (booker, revoker) = (stores[(round % 2) as usize].clone(), stores[((round + 1) % 2) as usize].clone());
            let (org, link_id) = (a.org, l.id);
            let s = slot(round * 1440 + 600, round * 1440 + 630, 5, 5);
            let b = barrier.clone();
            let booking = tokio::spawn(async move {
                b.wait().await;
                booker.book(&booking_of(org, link_id, s), t(60)).await
            });
            let revoke = tokio::spawn(async move {
                barrier.wait().await;
                revoker.revoke_link(org, link_id, t(60)).await
            });
            let (booking, revoke) = (booking.await.unwrap(), revoke.await.unwrap());
            let now = stores[0].link(a.org, l.id, t(61)).await.unwrap().unwrap();
            match (booking, revoke) {
                (Ok(b), Err(StoreError::Conflict { what: LINK_USED })) => {
                    assert_eq!((now.status, now.booking_id), (LinkStatus::Booked, Some(b.id)));
                }
                (Err(StoreError::Conflict { what: LINK_REVOKED }), Ok(r)) => {
                    assert_eq!((now.status, now.booking_id, r.status), (LinkStatus::Revoked, None, LinkStatus::Revoked));
                    assert!(stores[0].booking_by_link_digest(format!("r{round}").as_bytes()).await.unwrap().is_none(), "round {round}: no booking left behind");
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        stores[1].close().await;
    }

    async fn a_reschedule_racing_a_new_booking_for_the_same_range_lets_one_win(db: TestDb) {
        let stores = [db.store(), db.open_another().await.unwrap()];
        let a = fixture(&stores[0], "Acme").await;
        for round in 0..10i64 {
            let day = round * 1440;
            let existing = link(&stores[0], &a, format!("e{round}").as_bytes()).await;
            let b1 = stores[0].book(&booking_of(a.org, existing.id, slot(day + 300, day + 330, 0, 0)), t(1)).await.unwrap();
            let fresh = link(&stores[0], &a, format!("f{round}").as_bytes()).await;
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let (mover, booker) = (stores[(round % 2) as usize].clone(), stores[((round + 1) % 2) as usize].clone());
            let org = a.org;
            let b = barrier.clone();
            let moved = tokio::spawn(async move {
                b.wait().await;
                mover.reschedule(org, b1.id, &slot(day + 600, day + 660, 10, 10), None, t(60)).await
            });
            let fresh_id = fresh.id;
            let booked = tokio::spawn(async move {
                barrier.wait().await;
                booker.book(&booking_of(org, fresh_id, slot(day + 640, day + 700, 0, 0)), t(60)).await
            });
            let results = (moved.await.unwrap(), booked.await.unwrap());
            let confirmed = stores[0].confirmed_bookings(a.org, a.recruiter, at(day), at(day + 1440)).await.unwrap();
            match results {
                (Ok(m), Err(StoreError::Conflict { what: SLOT_TAKEN })) => {
                    assert_eq!(confirmed, vec![m], "round {round}");
                    assert_eq!(stores[0].link(a.org, fresh.id, t(61)).await.unwrap().unwrap().status, LinkStatus::Sent);
                }
                (Err(StoreError::Conflict { what: SLOT_TAKEN }), Ok(n)) => {
                    assert_eq!(confirmed.len(), 2, "round {round}");
                    assert_eq!(confirmed[0].slot.starts_at, at(day + 300), "round {round}: the refused reschedule left b1 alone");
                    assert_eq!(confirmed[1], n);
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        stores[1].close().await;
    }
}

/// The day `d` (0 = the day of [`at`]'s minute 0), as a cap of `max`.
fn cap(d: i64, max: u32) -> Option<DailyCap> {
    Some(DailyCap {
        max,
        day_start: at(d * 1440),
        day_end: at((d + 1) * 1440),
    })
}

both_backends! {
    async fn the_daily_cap_is_checked_with_the_write_even_when_bookings_race(db: TestDb) {
        let stores = [db.store(), db.open_another().await.unwrap()];
        let a = fixture(&stores[0], "Acme").await;
        for round in 0..20i64 {
            let mut tasks = Vec::new();
            let barrier = Arc::new(tokio::sync::Barrier::new(6));
            for i in 0..6i64 {
                let l = link(&stores[0], &a, format!("r{round}-{i}").as_bytes()).await;
                let store = stores[(i % 2) as usize].clone();
                let barrier = barrier.clone();
                let org = a.org;
                // Six disjoint slots of the same day.
                let s = slot(round * 1440 + 480 + i * 60, round * 1440 + 510 + i * 60, 5, 5);
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let mut b = booking_of(org, l.id, s);
                    b.daily_cap = cap(round, 2);
                    store.book(&b, t(60)).await
                }));
            }
            let mut wins = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(_) => wins += 1,
                    Err(e) => assert!(matches!(e, StoreError::Conflict { what: DAY_FULL }), "round {round}: {e:?}"),
                }
            }
            assert_eq!(wins, 2, "round {round}: exactly the cap");
        }
        stores[1].close().await;
    }

    async fn rescheduling_respects_the_daily_cap_of_the_new_day_without_counting_itself(store: Store) {
        let a = fixture(&store, "Acme").await;
        let mut booked = Vec::new();
        for (i, (start, day)) in [(600, 0), (720, 0), (2040, 1)].into_iter().enumerate() {
            let l = link(&store, &a, format!("d{i}").as_bytes()).await;
            let mut b = booking_of(a.org, l.id, slot(start, start + 30, 0, 0));
            b.daily_cap = cap(day, 2);
            booked.push(store.book(&b, t(1)).await.unwrap());
        }
        let l = link(&store, &a, b"full").await;
        let mut b = booking_of(a.org, l.id, slot(900, 930, 0, 0));
        b.daily_cap = cap(0, 2);
        assert_eq!(conflict(store.book(&b, t(2)).await), DAY_FULL);
        assert_eq!(store.link(a.org, l.id, t(2)).await.unwrap().unwrap().status, LinkStatus::Sent, "the refused booking left the link usable");
        b.daily_cap = cap(1, 2);
        assert!(matches!(store.book(&b, t(2)).await, Err(StoreError::Invalid(_))), "the slot must start within the cap's day");

        // Within its own day: it does not count itself.
        store.reschedule(a.org, booked[0].id, &slot(660, 690, 0, 0), cap(0, 2), t(3)).await.unwrap();
        // Day 1 already has one booking; moving a second one there fills it, a third is refused.
        store.reschedule(a.org, booked[1].id, &slot(2100, 2130, 0, 0), cap(1, 2), t(4)).await.unwrap();
        assert_eq!(conflict(store.reschedule(a.org, booked[0].id, &slot(2200, 2230, 0, 0), cap(1, 2), t(5)).await), DAY_FULL);
        assert_eq!(store.booking(a.org, booked[0].id).await.unwrap().unwrap().slot.starts_at, at(660), "unchanged");
    }
}
