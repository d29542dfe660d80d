//! The Scheduler end to end at HTTP level, against the provider sandbox's
//! calendars, on both storage backends: links, slots, booking, reschedule,
//! cancel, bad links, and racing candidates.

use std::collections::BTreeSet;

use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::OrgId;
use hirewire_server::testing::World;
use hirewire_store::testing::TestDb;
use hirewire_store::{CapabilityKind, GrantStatus, User, both_backends};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

struct Setup {
    world: World,
    org: OrgId,
    riley: User,
    /// Riley's API token.
    token: String,
    /// The sandbox account whose calendar Riley authorized.
    calendar: &'static str,
}

/// An org on `provider`, recruiter Riley (Europe/Berlin) with the calendar
/// authorized as the sandbox account, and scheduling settings for tests:
/// Mon-Fri 09:00-17:00, no notice, same-day allowed.
async fn setup(db: &TestDb, provider: &str) -> Setup {
    let world = World::start(db).await;
    let r = world.recruiter_with_calendar(provider).await;
    let grant = world
        .app
        .store
        .grant(r.user.id, CapabilityKind::Calendar)
        .await
        .unwrap()
        .expect("calendar grant");
    assert_eq!(grant.status, GrantStatus::Active);
    let (org, riley, token, calendar) = (r.org, r.user, r.token, r.calendar);
    let s = Setup {
        world,
        org,
        riley,
        token,
        calendar,
    };
    let settings = json!({
        "working_hours": [{"days": [1,2,3,4,5], "start": "09:00", "end": "17:00"}],
        "overrides": [],
        "meeting_types": [
            {"kind": "phone_screen", "duration_minutes": 30, "before_buffer_minutes": 0, "after_buffer_minutes": 0, "location": "phone"},
            {"kind": "interview", "duration_minutes": 60, "before_buffer_minutes": 0, "after_buffer_minutes": 0, "location": "video"}
        ],
        "minimum_notice_minutes": 0, "no_same_day": false, "horizon_days": 28, "max_per_day": null, "tentative_is_busy": true
    });
    let res = s
        .api()
        .put("/me/scheduling-settings")
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    s
}

impl Setup {
    fn api(&self) -> hirewire_server::testing::Api {
        self.world.app.api(&self.token)
    }

    async fn candidate(&self, name: &str, email: &str) -> i64 {
        self.world
            .app
            .store
            .create_candidate(
                self.org,
                name,
                &[EmailAddress::parse(email).unwrap()],
                self.world.app.now(),
            )
            .await
            .unwrap()
            .id
            .get()
    }

    /// A link for `candidate`; returns (link resource, token).
    async fn link(&self, candidate: i64, body: Value) -> (Value, String) {
        let res = self
            .api()
            .post(&format!("/candidates/{candidate}/scheduling-links"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let link: Value = res.json().await.unwrap();
        let url = link["url"]
            .as_str()
            .expect("the link has its URL")
            .to_owned();
        let token = url.rsplit('/').next().unwrap().to_owned();
        (link, token)
    }

    fn public(&self, path: &str) -> String {
        self.world.app.at(&format!("/api/v1{path}"))
    }

    async fn slots(&self, token: &str, query: &str) -> Vec<String> {
        let res = reqwest::get(self.public(&format!("/booking/{token}/slots?{query}")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let body: Value = res.json().await.unwrap();
        body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["start"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(self.public(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The sandbox calendar's live (not cancelled) events.
    async fn events(&self) -> Vec<Value> {
        let v = self
            .world
            .control(
                Method::GET,
                &format!("/_sandbox/calendars/{}/events", self.calendar),
                None,
            )
            .await;
        v["events"].as_array().unwrap().clone()
    }

    async fn invitations(&self, to: &str) -> Vec<Value> {
        let v = self
            .world
            .control(Method::GET, &format!("/_sandbox/invitations?to={to}"), None)
            .await;
        v["invitations"].as_array().unwrap().clone()
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn book_reschedule_and_cancel_one_interview(db: TestDb, provider: &str) {
    let s = setup(&db, provider).await;
    let jo = s.candidate("Jo Candidate", "jo@candidates.example").await;
    // Tuesday 2027-01-05, Berlin: busy 09:00-10:00 (08:00-09:00Z).
    s.world
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{}/events", s.calendar),
            Some(json!({"events": [{"start": "2027-01-05T08:00:00Z", "end": "2027-01-05T09:00:00Z", "subject": "Team sync"}]})),
        )
        .await;
    let (link, token) = s.link(jo, json!({"meeting_kind": "interview"})).await;
    assert_eq!(link["status"], "sent");
    assert_eq!(
        link["duration_minutes"], 60,
        "the interview's length from the settings"
    );
    assert!(token.len() >= 22, "at least 128 random bits");

    let info: Value = reqwest::get(s.public(&format!("/booking/{token}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["status"], "opened", "opening the link is recorded");
    assert_eq!(info["candidate_email"], "jo@candidates.example");

    // Kolkata is UTC+05:30: the grid is the candidate's half hours.
    let slots = s
        .slots(&token, "tz=Asia/Kolkata&from=2027-01-05&to=2027-01-06")
        .await;
    assert_eq!(
        slots.first().map(String::as_str),
        Some("2027-01-05T09:00:00Z"),
        "09:00-10:00 Berlin is busy: {slots:?}"
    );
    assert!(
        slots.contains(&"2027-01-05T15:00:00Z".to_owned()),
        "16:00 Berlin, the last hour"
    );
    assert!(
        !slots.contains(&"2027-01-05T15:30:00Z".to_owned()),
        "a 60-minute meeting must end by 17:00 Berlin"
    );

    let (status, booking) = s
        .post(&format!("/booking/{token}"), json!({"start": "2027-01-05T10:00:00Z", "name": "Jo Candidate", "phone": "", "note": "Looking forward", "time_zone": "Asia/Kolkata"}))
        .await;
    assert_eq!(status, 201, "{booking}");
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(
        booking["attendee"]["email"], "jo@candidates.example",
        "the known address by default"
    );
    assert_eq!(booking["calendar_event"], "created");
    let uid = booking["ical_uid"]
        .as_str()
        .expect("the invitation's UID")
        .to_owned();

    let events = s.events().await;
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| e["ical_uid"] == uid.as_str())
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one event on the recruiter's calendar: {events:?}"
    );
    assert_eq!(
        ours[0]["start"].as_str().map(ts),
        Some(ts("2027-01-05T10:00:00Z"))
    );
    assert!(
        ours[0]["attendees"]
            .to_string()
            .contains("jo@candidates.example")
    );
    let invites = s.invitations("jo@candidates.example").await;
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert_eq!(
        (invites[0]["kind"].as_str(), invites[0]["ical_uid"].as_str()),
        (Some("invite"), Some(uid.as_str()))
    );

    // The slot is gone for everyone; the link cannot book twice.
    let other = s.candidate("Al Other", "al@candidates.example").await;
    let (_, other_token) = s
        .link(
            other,
            json!({"meeting_kind": "phone_screen", "duration_minutes": 15}),
        )
        .await;
    let free = s
        .slots(
            &other_token,
            "tz=Europe/Berlin&from=2027-01-05&to=2027-01-06",
        )
        .await;
    assert!(
        !free
            .iter()
            .any(|t| ts(t) >= ts("2027-01-05T10:00:00Z") && ts(t) < ts("2027-01-05T11:00:00Z")),
        "{free:?}"
    );
    let (status, again) = s
        .post(
            &format!("/booking/{token}"),
            json!({"start": "2027-01-05T13:00:00Z", "name": "Jo", "time_zone": "Asia/Kolkata"}),
        )
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("link_used"))
    );

    // Reschedule: the same event moves; the attendee gets an update with a higher sequence.
    let (status, moved) = s
        .post(
            &format!("/booking/{token}/reschedule"),
            json!({"start": "2027-01-06T12:00:00Z", "time_zone": "Asia/Kolkata"}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        moved["start"].as_str().map(ts),
        Some(ts("2027-01-06T12:00:00Z"))
    );
    let events = s.events().await;
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| e["ical_uid"] == uid.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "still one event, moved: {events:?}");
    assert_eq!(
        ours[0]["start"].as_str().map(ts),
        Some(ts("2027-01-06T12:00:00Z"))
    );
    let invites = s.invitations("jo@candidates.example").await;
    let update = invites.last().unwrap();
    assert_eq!(
        (update["kind"].as_str(), update["ical_uid"].as_str()),
        (Some("update"), Some(uid.as_str()))
    );
    assert!(
        update["sequence"].as_i64() > invites[0]["sequence"].as_i64(),
        "{invites:?}"
    );

    // The .ics reuses the provider's UID.
    let ics = reqwest::get(s.world.app.at(&format!("/book/{token}/invite.ics")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Long lines are folded (RFC 5545 §3.1): unfold before looking.
    let ics = ics.replace("\r\n ", "").replace("\n ", "");
    assert!(ics.contains(&format!("UID:{uid}")), "{ics}");
    assert!(ics.contains("DTSTART:20270106T120000Z"), "{ics}");
    let parsed = parse_ics_independently(&ics);
    assert_eq!(
        parsed,
        format!("{uid}|2027-01-06 12:00:00+00:00|2027-01-06 13:00:00+00:00|PUBLISH")
    );

    // Cancel: the event is deleted and the candidate told.
    let (status, cancelled) = s.post(&format!("/booking/{token}/cancel"), json!({})).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert!(
        s.events()
            .await
            .iter()
            .all(|e| e["ical_uid"] != uid.as_str()),
        "the event is gone"
    );
    let invites = s.invitations("jo@candidates.example").await;
    assert_eq!(invites.last().unwrap()["kind"], "cancel");
    let (status, err) = s.post(&format!("/booking/{token}/cancel"), json!({})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (410, Some("booking_cancelled"))
    );

    // The recruiter sees the link as booked, with the booking cancelled.
    let links: Value = s
        .api()
        .get(&format!("/candidates/{jo}/scheduling-links"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(links[0]["status"], "booked");
    assert_eq!(links[0]["booking"]["status"], "cancelled");
    // The booking is on the candidate's timeline, by its last change.
    let timeline: Value = s
        .api()
        .get(&format!("/candidates/{jo}/timeline"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = timeline["data"].as_array().unwrap();
    let bookings: Vec<&Value> = items.iter().filter(|i| i["kind"] == "booking").collect();
    assert_eq!(bookings.len(), 1, "{timeline}");
    assert_eq!(bookings[0]["booking"]["status"], "cancelled");
    assert_eq!(
        bookings[0]["booking"]["attendee"]["note"],
        "Looking forward"
    );
    let _ = &s.riley;
}

both_backends! {
    async fn a_candidate_books_reschedules_and_cancels_an_interview_on_a_microsoft_calendar(db: TestDb) {
        book_reschedule_and_cancel_one_interview(db, "microsoft").await;
    }

    async fn a_candidate_books_reschedules_and_cancels_an_interview_on_a_google_calendar(db: TestDb) {
        book_reschedule_and_cancel_one_interview(db, "google").await;
    }

    async fn bad_links_get_a_clear_page_and_a_stable_code(db: TestDb) {
        let s = setup(&db, "microsoft").await;
        let jo = s.candidate("Jo Candidate", "jo@candidates.example").await;
        let body = json!({"start": "2027-01-05T10:00:00Z", "name": "Jo", "phone": "+49 30 1234567", "time_zone": "Europe/Berlin"});

        let (status, err) = s.post("/booking/not-a-real-token", body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (404, Some("link_not_found")));
        let page = reqwest::get(s.world.app.at("/book/not-a-real-token")).await.unwrap();
        assert_eq!(page.status(), 404);
        assert!(page.text().await.unwrap().contains("This scheduling link does not exist"));

        let (revoked, revoked_token) = s.link(jo, json!({"meeting_kind": "phone_screen"})).await;
        let res = s.api().post(&format!("/scheduling-links/{}/revoke", revoked["id"])).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let (status, err) = s.post(&format!("/booking/{revoked_token}"), body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (410, Some("link_revoked")));
        let page = reqwest::get(s.world.app.at(&format!("/book/{revoked_token}"))).await.unwrap();
        assert_eq!(page.status(), 410);
        assert!(page.text().await.unwrap().contains("withdrew this link"));

        let (_, used_token) = s.link(jo, json!({"meeting_kind": "phone_screen"})).await;
        let (status, _) = s.post(&format!("/booking/{used_token}"), body.clone()).await;
        assert_eq!(status, 201);
        let (status, err) = s.post(&format!("/booking/{used_token}"), body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (409, Some("link_used")));

        let (_, expiring) = s.link(jo, json!({"meeting_kind": "phone_screen", "expires_in_weeks": 1})).await;
        s.world.app.clock.advance(SignedDuration::from_hours(24 * 7 + 1));
        let (status, err) = s.post(&format!("/booking/{expiring}"), body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (410, Some("link_expired")));
        let page = reqwest::get(s.world.app.at(&format!("/book/{expiring}"))).await.unwrap();
        assert_eq!(page.status(), 410);
        assert!(page.text().await.unwrap().contains("has expired"));
    }

    async fn the_booking_api_says_exactly_what_is_wrong_with_a_request(db: TestDb) {
        let s = setup(&db, "microsoft").await;
        let jo = s.candidate("Jo Candidate", "jo@candidates.example").await;
        let (_, token) = s.link(jo, json!({"meeting_kind": "phone_screen"})).await;
        let (status, err) = s.post(&format!("/booking/{token}"), json!({"start": "tomorrow", "name": " ", "email": "nope", "time_zone": "Mars/Olympus"})).await;
        assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid")), "{err}");
        let fields: BTreeSet<&str> = err["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
        assert_eq!(fields, BTreeSet::from(["start", "name", "email", "phone", "time_zone"]), "a phone screen needs a phone");
        let res = reqwest::get(s.public(&format!("/booking/{token}/slots?tz=Nowhere/Land"))).await.unwrap();
        assert_eq!(res.status(), 400);
        let res = reqwest::get(s.public(&format!("/booking/{token}/slots?from=2027-01-05&to=2027-06-05"))).await.unwrap();
        assert_eq!((res.status().as_u16(), res.json::<Value>().await.unwrap()["error"]["code"].clone()), (400, json!("window_too_long")));
        // A start off the offered grid is refused with fresh slots.
        let (status, err) = s.post(&format!("/booking/{token}"), json!({"start": "2027-01-05T10:07:00Z", "name": "Jo", "phone": "+1 555 0100", "time_zone": "Europe/Berlin"})).await;
        assert_eq!((status, err["error"]["code"].as_str()), (409, Some("slot_taken")));
        assert!(!err["error"]["slots"].as_array().unwrap().is_empty());
        // No link without a usable calendar.
        let res = s.api().delete("/me/integrations/calendar").send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        let res = s.api().post(&format!("/candidates/{jo}/scheduling-links")).json(&json!({"meeting_kind": "interview"})).send().await.unwrap();
        assert_eq!(res.status(), 409);
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "calendar_not_ready");
        assert!(err["error"]["message"].as_str().unwrap().contains("Authorize it"), "{err}");
    }

    async fn racing_candidates_never_double_book_a_recruiter_whatever_the_lengths_and_buffers(db: TestDb) {
        let s = setup(&db, "microsoft").await;
        // Buffers on both sides make neighbouring slots collide too.
        let mut settings: Value = s.api().get("/me/scheduling-settings").send().await.unwrap().json().await.unwrap();
        for m in settings["meeting_types"].as_array_mut().unwrap() {
            m["before_buffer_minutes"] = json!(5);
            m["after_buffer_minutes"] = json!(10);
        }
        assert_eq!(s.api().put("/me/scheduling-settings").json(&settings).send().await.unwrap().status(), 200);
        // 200 links, one per candidate, 15/30/60 minutes.
        let mut links = Vec::new();
        for i in 0..200 {
            let c = s.candidate(&format!("Candidate {i}"), &format!("c{i}@candidates.example")).await;
            let (kind, minutes) = [("phone_screen", 15), ("phone_screen", 30), ("interview", 60)][i % 3];
            let (_, token) = s.link(c, json!({"meeting_kind": kind, "duration_minutes": minutes})).await;
            links.push((token, minutes));
        }
        // 20 overlapping starts from 09:00 Berlin (08:00Z), a quarter hour apart;
        // the 30- and 60-minute meetings start on half hours.
        let base = ts("2027-01-05T08:00:00Z");
        let attempts = links.into_iter().enumerate().map(|(i, (token, minutes))| {
            let step = if minutes == 15 { i % 20 } else { (i % 10) * 2 };
            let start = base + SignedDuration::from_mins(15 * step as i64);
            let url = s.public(&format!("/booking/{token}"));
            tokio::spawn(async move {
                let res = reqwest::Client::new()
                    .post(url)
                    .json(&json!({"start": start.to_string(), "name": "Racer", "phone": "+1 555 0100", "time_zone": "Europe/Berlin"}))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap(), minutes)
            })
        });
        let mut won = Vec::new();
        for a in futures_join(attempts).await {
            let (status, body, minutes) = a;
            match status {
                201 => won.push((ts(body["start"].as_str().unwrap()), ts(body["end"].as_str().unwrap()), minutes, body["ical_uid"].as_str().unwrap().to_owned())),
                409 => assert_eq!(body["error"]["code"], "slot_taken", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert!(!won.is_empty(), "someone wins");
        // No two winners' blocked ranges (5 min before, 10 after) overlap.
        let blocked: Vec<(Timestamp, Timestamp)> = won.iter().map(|(a, b, _, _)| (*a - SignedDuration::from_mins(5), *b + SignedDuration::from_mins(10))).collect();
        for (i, x) in blocked.iter().enumerate() {
            for y in &blocked[i + 1..] {
                assert!(x.1 <= y.0 || y.1 <= x.0, "overlap: {x:?} and {y:?}");
            }
        }
        // The calendar holds exactly the booked events.
        let on_calendar: BTreeSet<String> = s.events().await.iter().filter_map(|e| e["ical_uid"].as_str().map(str::to_owned)).collect();
        let booked: BTreeSet<String> = won.iter().map(|w| w.3.clone()).collect();
        assert_eq!(on_calendar, booked);
    }
}

/// Parses an .ics with Python's `icalendar` (set up by `./scripts/test`):
/// "uid|start|end|method" of its one event.
/// Requests the sandbox counted for `endpoint`.
async fn requests(s: &Setup, endpoint: &str) -> u64 {
    let v = s
        .world
        .control(Method::GET, "/_sandbox/counters", None)
        .await;
    v["endpoints"][endpoint]["requests"].as_u64().unwrap_or(0)
}

async fn a_calendar_change_reaches_the_booking_page_at_the_next_change_check(
    db: TestDb,
    provider: &str,
) {
    use hirewire_server::scheduling::{RefreshReport, refresh_calendars};
    let s = setup(&db, provider).await;
    let free_busy = match provider {
        "microsoft" => "graph.calendar.getSchedule",
        _ => "calendar.freebusy.query",
    };
    let state = &s.world.app.state;
    let jo = s.candidate("Jo Candidate", "jo@candidates.example").await;
    let (_, token) = s.link(jo, json!({"meeting_kind": "interview"})).await;
    let day = "tz=Europe/Berlin&from=2027-01-05&to=2027-01-06";
    // Tuesday 11:00 Berlin is 10:00Z.
    let eleven = "2027-01-05T10:00:00Z";
    assert!(s.slots(&token, day).await.iter().any(|x| x == eleven));
    let fetched = requests(&s, free_busy).await;

    // Nothing changed: the check keeps the copy, and page loads keep using it.
    let quiet = refresh_calendars(state).await;
    assert_eq!(
        quiet,
        RefreshReport {
            checked: 1,
            dropped: 0,
            idle: 0
        }
    );
    assert!(s.slots(&token, day).await.iter().any(|x| x == eleven));
    assert_eq!(
        requests(&s, free_busy).await,
        fetched,
        "served from the cache"
    );

    // The recruiter accepts a meeting at 11:00 in their own calendar app.
    s.world
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{}/events", s.calendar),
            Some(json!({"events": [{"start": eleven, "end": "2027-01-05T11:00:00Z", "subject": "Hiring committee"}]})),
        )
        .await;
    let changed = refresh_calendars(state).await;
    assert_eq!(
        changed.dropped, 1,
        "the change feed reported the new meeting"
    );
    let slots = s.slots(&token, day).await;
    assert!(
        !slots.iter().any(|x| x == eleven),
        "11:00 is gone from the page well before the cache's lifetime: {slots:?}"
    );
    assert_eq!(
        requests(&s, free_busy).await,
        fetched + 1,
        "read again once"
    );

    // A cursor the provider no longer accepts drops the copy too, and the
    // next page load starts a new watch.
    s.world
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{}/sync-tokens/expire", s.calendar),
            None,
        )
        .await;
    assert_eq!(refresh_calendars(state).await.dropped, 1);
    s.slots(&token, day).await;
    assert_eq!(requests(&s, free_busy).await, fetched + 2);
    assert_eq!(refresh_calendars(state).await.dropped, 0);

    // A calendar no page has read for the watched lifetime is no longer asked.
    s.world
        .app
        .clock
        .advance(SignedDuration::try_from(state.config.scheduler.watched_busy_ttl).unwrap());
    let idle = refresh_calendars(state).await;
    assert_eq!((idle.idle, idle.checked), (1, 0));
}

both_backends! {
    async fn a_meeting_added_to_a_microsoft_calendar_leaves_the_booking_page_at_the_next_change_check(db: TestDb) {
        a_calendar_change_reaches_the_booking_page_at_the_next_change_check(db, "microsoft").await;
    }

    async fn a_meeting_added_to_a_google_calendar_leaves_the_booking_page_at_the_next_change_check(db: TestDb) {
        a_calendar_change_reaches_the_booking_page_at_the_next_change_check(db, "google").await;
    }
}

fn parse_ics_independently(ics: &str) -> String {
    let python = std::env::var("HIREWIRE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import sys, icalendar\n\
cal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())\n\
ev = [c for c in cal.walk('VEVENT')]\n\
assert len(ev) == 1, ev\n\
e = ev[0]\n\
print(f\"{e['UID']}|{e.decoded('DTSTART')}|{e.decoded('DTEND')}|{cal['METHOD']}\")\n";
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{python}: {e}; run ./scripts/test, which sets up Python's icalendar")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "icalendar (from ./scripts/test's venv) rejected the file: {}\n{ics}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Awaits every task (the test crate has no `futures` dependency).
async fn futures_join<T: Send + 'static>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

// ---- in a real browser (SQLite, one browser for this binary) -----------------------

mod browser {
    use super::*;
    use hirewire_store::Backend;
    use hirewire_testkit::page::{element, fill, follow, text};

    #[tokio::test]
    async fn a_candidate_in_kolkata_books_from_the_recruiters_link_reschedules_and_cancels_in_the_browser()
     {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        let s = setup(&db, "microsoft").await;
        let jo = s.candidate("Jo Candidate", "jo@candidates.example").await;
        let b = hirewire_testkit::browser().await;

        // The recruiter makes a phone-screen link on the candidate's page.
        b.goto(&s.world.app.at("/sign-in")).await.unwrap();
        fill(&b, "#email", "riley@talent.example").await;
        fill(&b, "#password", "riley-password").await;
        follow(&b, "#sign-in").await;
        b.goto(&s.world.app.at(&format!("/candidates/{jo}")))
            .await
            .unwrap();
        element(&b, "#meeting_kind")
            .await
            .select_by_value("phone_screen")
            .await
            .unwrap();
        follow(&b, "#create-link").await;
        assert!(text(&b, "#scheduler-notice").await.contains("Link created"));
        let row = text(&b, "#scheduling-links").await;
        assert!(row.contains("Sent, not opened yet"), "{row}");
        let url = element(&b, ".link-url")
            .await
            .prop("value")
            .await
            .unwrap()
            .expect("the link's URL");
        assert!(url.starts_with(&s.world.app.url), "{url}");

        // The candidate opens it; the zone is detected, and they pick Kolkata.
        b.goto(&url).await.unwrap();
        element(&b, "#tz-form").await;
        element(&b, "#tz")
            .await
            .select_by_value("Asia/Kolkata")
            .await
            .unwrap();
        follow(&b, "#tz-apply").await;
        assert_eq!(
            element(&b, "#tz")
                .await
                .prop("value")
                .await
                .unwrap()
                .as_deref(),
            Some("Asia/Kolkata")
        );
        // Monday 09:00 UTC now: the first free half hour is 10:00 Berlin = 14:30 Kolkata.
        let first_day = element(&b, "#days a").await.attr("data-day").await.unwrap();
        assert_eq!(first_day.as_deref(), Some("2027-01-04"));
        let first_slot = element(&b, "#slots input[name=start]").await;
        assert_eq!(
            first_slot.attr("value").await.unwrap().as_deref(),
            Some("2027-01-04T09:00:00Z")
        );
        assert!(
            text(&b, "#slots").await.contains("14:30"),
            "slots are shown in Kolkata time"
        );
        // The one after: a meeting starting this very minute could not be changed any more.
        element(&b, "#slots input[value='2027-01-04T09:30:00Z']")
            .await
            .click()
            .await
            .unwrap();
        fill(&b, "#name", "Jo Candidate").await;
        assert_eq!(
            element(&b, "#email")
                .await
                .prop("value")
                .await
                .unwrap()
                .as_deref(),
            Some("jo@candidates.example"),
            "prefilled"
        );
        fill(&b, "#phone", "+91 98765 43210").await;
        fill(&b, "#note", "Calling from Bangalore").await;
        follow(&b, "#book").await;
        assert!(text(&b, "#booking-notice").await.contains("You're booked"));
        let when = text(&b, "#booking-when").await;
        assert!(
            when.contains("15:00–15:30") && when.contains("Asia/Kolkata"),
            "{when}"
        );
        assert!(
            element(&b, "#ics")
                .await
                .attr("href")
                .await
                .unwrap()
                .unwrap()
                .ends_with("/invite.ics")
        );
        let events = s.events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        let uid = events[0]["ical_uid"].as_str().unwrap().to_owned();
        let sequence = events[0]["sequence"].as_i64().unwrap();

        // Reschedule to the next day's first time.
        follow(&b, "#reschedule").await;
        assert!(text(&b, "#current-booking").await.contains("15:00"));
        follow(&b, "#days a[data-day='2027-01-05']").await;
        element(&b, "#slots input[name=start]")
            .await
            .click()
            .await
            .unwrap();
        follow(&b, "#book").await;
        assert!(text(&b, "#booking-notice").await.contains("moved"));
        let events = s.events().await;
        assert_eq!(events.len(), 1, "one event, moved: {events:?}");
        assert_eq!(
            events[0]["ical_uid"].as_str(),
            Some(uid.as_str()),
            "the same iCalUID"
        );
        assert_eq!(
            events[0]["start"].as_str().map(ts),
            Some(ts("2027-01-05T08:00:00Z"))
        );
        assert!(
            events[0]["sequence"].as_i64().unwrap() > sequence,
            "a higher sequence"
        );

        // Cancel: the event is gone.
        element(&b, "#cancel-confirm").await.click().await.unwrap();
        follow(&b, "#cancel").await;
        assert!(text(&b, "#booking-notice").await.contains("cancelled"));
        assert!(s.events().await.is_empty());

        // The recruiter sees what happened.
        b.goto(&s.world.app.at(&format!("/candidates/{jo}")))
            .await
            .unwrap();
        let row = text(&b, "#scheduling-links").await;
        assert!(row.contains("Booked") && row.contains("cancelled"), "{row}");
        let timeline = text(&b, "#timeline").await;
        assert!(
            timeline.contains("Phone screen with riley cancelled")
                && timeline.contains("Calling from Bangalore"),
            "{timeline}"
        );
    }
}

both_backends! {
    async fn the_scheduling_settings_page_saves_what_the_recruiter_typed_or_says_what_is_wrong(db: TestDb) {
        let s = setup(&db, "google").await;
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let page = client.get(s.world.app.at("/settings/scheduling")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Only Microsoft 365 reports tentative events"), "the setting says where it applies");
        let csrf = hirewire_server::testing::hidden_csrf(&page).unwrap();
        let mut form = vec![
            ("_csrf", csrf.as_str()), ("day1", "09:00-12:00, 13:00-17:00"), ("day3", "10:00-16:00"),
            ("overrides", "2027-01-06 off\n2027-01-08 10:00-12:00"),
            ("interview_offered", "on"), ("interview_duration", "45"), ("interview_before", "5"), ("interview_after", "10"),
            ("interview_location", "address"), ("interview_address", "1 Main St, Berlin"),
            ("notice_hours", "2"), ("no_same_day", "on"), ("horizon_days", "21"), ("max_per_day", "3"),
        ];
        let res = client.post(s.world.app.at("/settings/scheduling")).form(&form).send().await.unwrap();
        assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
        let saved: Value = s.api().get("/me/scheduling-settings").send().await.unwrap().json().await.unwrap();
        assert_eq!(saved["working_hours"].as_array().unwrap().len(), 3, "{saved}");
        assert_eq!(saved["overrides"][0], json!({"date": "2027-01-06", "ranges": []}));
        assert_eq!(saved["meeting_types"], json!([{"kind": "interview", "duration_minutes": 45, "before_buffer_minutes": 5, "after_buffer_minutes": 10, "location": {"address": "1 Main St, Berlin"}}]));
        assert_eq!((saved["minimum_notice_minutes"].as_u64(), saved["no_same_day"].as_bool(), saved["max_per_day"].as_u64()), (Some(120), Some(true), Some(3)));
        assert_eq!(saved["tentative_is_busy"], false, "unchecked");

        form[1] = ("day1", "9-5");
        form[5] = ("interview_duration", "200");
        let res = client.post(s.world.app.at("/settings/scheduling")).form(&form).send().await.unwrap();
        assert_eq!(res.status(), 422);
        let page = res.text().await.unwrap();
        assert!(page.contains("Nothing was saved") && page.contains("value=\"9-5\""), "the typed value is kept");
        let unchanged: Value = s.api().get("/me/scheduling-settings").send().await.unwrap().json().await.unwrap();
        assert_eq!(unchanged, saved);
    }
}

both_backends! {
    async fn a_link_goes_to_the_candidate_by_email_from_the_recruiters_own_mailbox(db: TestDb) {
        let s = setup(&db, "microsoft").await;
        // The candidate's address is another sandbox mailbox, so the mail can be seen arriving.
        let jo = s.candidate("Jo Candidate", "hank@globex.example").await;
        let (link, token) = s.link(jo, json!({"meeting_kind": "interview"})).await;
        let client = s.world.app.signed_in("riley@talent.example", "riley-password").await;
        let card = client.get(s.world.app.at(&format!("/candidates/{jo}"))).send().await.unwrap().text().await.unwrap();
        assert!(!card.contains("Send by email"), "no inbox authorized yet: no email button");

        let landing = s.world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], s.calendar, hirewire_server::testing::Answer::AcceptAll).await;
        let hirewire_server::testing::Landing::Redirect(back) = landing else { panic!("stuck at the sandbox") };
        client.get(back).send().await.unwrap();
        let card = client.get(s.world.app.at(&format!("/candidates/{jo}"))).send().await.unwrap().text().await.unwrap();
        assert!(card.contains("Send by email"), "{card}");
        let csrf = hirewire_server::testing::hidden_csrf(&card).unwrap();
        let res = client.post(s.world.app.at(&format!("/scheduling-links/{}/email", link["id"]))).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        assert!(res.headers()["location"].to_str().unwrap().contains("scheduling=emailed"));
        while hirewire_server::outbox::run_one(&s.world.app.state, "test").await.unwrap().is_some() {}

        let inbox = s.world.control(Method::GET, "/_sandbox/mailboxes/hank@globex.example/messages", None).await;
        let mut found = false;
        for m in inbox["messages"].as_array().unwrap() {
            let one = s.world.control(Method::GET, &format!("/_sandbox/mailboxes/hank@globex.example/messages/{}", m["id"].as_str().unwrap()), None).await;
            let raw = one["raw"].as_str().unwrap().replace("=\r\n", "");
            found |= raw.contains(&token) && raw.contains("Pick a time for our interview");
        }
        assert!(found, "the candidate's mailbox received the link");
    }
}
