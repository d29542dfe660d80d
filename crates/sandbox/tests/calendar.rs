//! Calendar endpoints over HTTP: Graph getSchedule, calendarView (and delta), events with transactionId;
//! Google freeBusy, events insert/get/patch/delete/list (syncToken) and watch; recorded invitations; scopes,
//! faults, the calendar control API, golden shapes and schema checks.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADELE: &str = "adele@acme.example";
const BEN: &str = "ben@acme.example";
const HANK: &str = "hank@globex.example";
const MINDY: &str = "mindy@globex.example";
const CAL: &str = "https://www.googleapis.com/auth/calendar";
const CAL_FREEBUSY: &str = "https://www.googleapis.com/auth/calendar.freebusy";

type Reply = (StatusCode, reqwest::header::HeaderMap, Value);

async fn send(
    t: &Ctx,
    method: Method,
    token: &str,
    path_or_url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_string()
    } else {
        t.url(path_or_url)
    };
    let mut rq = t.http.request(method, url).bearer_auth(token);
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.unwrap();
    let st = r.status();
    let h = r.headers().clone();
    (st, h, r.json().await.unwrap_or(Value::Null))
}

async fn graph_token(t: &Ctx) -> String {
    s(&t.ms_tokens(ADELE).await["access_token"]).to_string()
}

async fn ms_token_with(t: &Ctx, scope: &str) -> String {
    let q = t.ms_sign_in("organizations", ADELE, scope).await;
    let (st, body) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    s(&body["access_token"]).to_string()
}

async fn google_token(t: &Ctx, scope: &str) -> String {
    s(&t.google_tokens(HANK, scope).await["access_token"]).to_string()
}

async fn seed(t: &Ctx, user: &str, body: Value) -> Value {
    let (st, v) = t
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{user}/events"),
            Some(body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn invitations(t: &Ctx, to: &str) -> Vec<Value> {
    let (st, v) = t
        .control(Method::GET, &format!("/_sandbox/invitations?to={to}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    v["invitations"].as_array().unwrap().clone()
}

fn schedule_body(schedules: &[String], start: &str, end: &str, interval: Option<i64>) -> Value {
    // PascalCase action parameters, as the Graph SDK sends them (PROVIDERS.md §13).
    let mut b = json!({
        "Schedules": schedules,
        "StartTime": {"@odata.type": "#microsoft.graph.dateTimeTimeZone", "dateTime": start, "timeZone": "UTC"},
        "EndTime": {"dateTime": end, "timeZone": "UTC"},
    });
    if let Some(i) = interval {
        b["AvailabilityViewInterval"] = json!(i);
    }
    b
}

fn assert_graph(ty: &str, v: &Value) {
    let errs = schema::check_graph(ty, v);
    assert!(errs.is_empty(), "{errs:?}\n{v}");
}

fn assert_google(schema_name: &str, v: &Value) {
    let errs = schema::check_google(schema::calendar(), schema_name, v);
    assert!(errs.is_empty(), "{schema_name}: {errs:?}\n{v}");
}

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn assert_shape(fixture: &Value, actual: &Value, extra_ok: &[&str]) {
    let errs = shape::diff(fixture, actual, extra_ok);
    assert!(errs.is_empty(), "{errs:?}\nsandbox sent: {actual}");
}

/// Checks a Graph event and the complex types inside it.
fn assert_graph_event(v: &Value) {
    assert_graph("event", v);
    for a in v["attendees"].as_array().unwrap() {
        assert_graph("attendee", a);
        assert_graph("responseStatus", &a["status"]);
        assert_graph("emailAddress", &a["emailAddress"]);
    }
    assert_graph("dateTimeTimeZone", &v["start"]);
    assert_graph("dateTimeTimeZone", &v["end"]);
    assert_graph("location", &v["location"]);
    assert_graph("responseStatus", &v["responseStatus"]);
    assert_graph("itemBody", &v["body"]);
    assert_graph("recipient", &v["organizer"]);
    assert_graph("emailAddress", &v["organizer"]["emailAddress"]);
    if v["onlineMeeting"].is_object() {
        assert_graph("onlineMeetingInfo", &v["onlineMeeting"]);
    }
}

#[tokio::test]
async fn get_schedule_reports_one_availability_digit_per_interval_and_the_busy_items() {
    let t = start().await;
    seed(
        &t,
        ADELE,
        json!({"events": [
            {"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:30:00Z", "show_as": "tentative", "subject": "Maybe"},
            {"start": "2026-12-01T12:00:00Z", "end": "2026-12-01T14:00:00Z", "subject": "Lunch", "location": "Harry's Bar"},
            {"start": "2026-12-01T15:00:00Z", "end": "2026-12-01T16:00:00Z", "is_private": true},
            {"start": "2026-12-01T16:00:00Z", "end": "2026-12-01T17:00:00Z", "show_as": "free"},
        ]}),
    )
    .await;
    seed(
        &t,
        BEN,
        json!({"events": [{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T18:00:00Z", "show_as": "oof"}]}),
    )
    .await;
    let tok = graph_token(&t).await;
    let schedules = vec![
        ADELE.to_string(),
        BEN.to_string(),
        "nobody@acme.example".to_string(),
    ];
    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/calendar/getSchedule",
        &[],
        Some(schedule_body(
            &schedules,
            "2026-12-01T09:00:00",
            "2026-12-01T18:00:00",
            Some(60),
        )),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v = body["value"].as_array().unwrap();
    assert_eq!(v[0]["scheduleId"], ADELE);
    assert_eq!(v[0]["availabilityView"], "010220200");
    let items = v[0]["scheduleItems"].as_array().unwrap();
    assert_eq!(
        items.len(),
        3,
        "free time is not a schedule item: {items:?}"
    );
    assert_eq!(items[1]["subject"], "Lunch");
    assert_eq!(items[1]["location"], "Harry's Bar");
    assert_eq!(items[1]["status"], "busy");
    assert_eq!(items[1]["start"]["dateTime"], "2026-12-01T12:00:00.0000000");
    assert_eq!(items[2]["isPrivate"], true);
    assert!(items[2].get("subject").is_none(), "private: no details");
    assert_eq!(v[1]["availabilityView"], "333333333");
    assert!(v[2]["error"]["responseCode"].is_string(), "{}", v[2]);
    for info in v {
        assert_graph("scheduleInformation", info);
        if info["workingHours"].is_object() {
            assert_graph("workingHours", &info["workingHours"]);
        }
        for it in info["scheduleItems"].as_array().unwrap() {
            assert_graph("scheduleItem", it);
        }
    }
    assert_graph("freeBusyError", &v[2]["error"]);
    assert_shape(
        &golden("microsoft/get-schedule.json"),
        // Private items leave out `subject` and `location`, so only the others are held to the example.
        &json!({"@odata.context": body["@odata.context"], "value": [{
            "scheduleId": v[0]["scheduleId"], "availabilityView": v[0]["availabilityView"],
            "workingHours": v[0]["workingHours"], "scheduleItems": [items[0], items[1]],
        }]}),
        &[],
    );

    // The default interval is 30 minutes; Prefer: outlook.timezone changes the times the response shows.
    let (st, h, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/calendar/getSchedule",
        &[("Prefer", "outlook.timezone=\"Pacific Standard Time\"")],
        Some(schedule_body(
            &[ADELE.to_string()],
            "2026-12-01T12:00:00",
            "2026-12-01T14:00:00",
            None,
        )),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        h["preference-applied"]
            .to_str()
            .unwrap()
            .contains("outlook.timezone")
    );
    let info = &body["value"][0];
    assert_eq!(info["availabilityView"], "2222");
    assert_eq!(
        info["scheduleItems"][0]["start"]["dateTime"],
        "2026-12-01T04:00:00.0000000"
    );
    assert_eq!(
        info["scheduleItems"][0]["start"]["timeZone"],
        "Pacific Standard Time"
    );
}

#[tokio::test]
async fn get_schedule_refuses_more_than_62_days_and_more_than_100_schedules() {
    let t = start().await;
    let tok = graph_token(&t).await;
    let one = vec![ADELE.to_string()];
    let ask = |schedules: Vec<String>, end: &'static str| {
        let tok = tok.clone();
        let t = &t;
        async move {
            send(
                t,
                Method::POST,
                &tok,
                "/v1.0/me/calendar/getSchedule",
                &[],
                Some(schedule_body(
                    &schedules,
                    "2026-12-01T00:00:00",
                    end,
                    Some(1440),
                )),
            )
            .await
        }
    };
    let (st, _, body) = ask(one.clone(), "2027-01-31T00:00:00").await;
    assert_eq!(st, StatusCode::OK, "exactly 62 days is allowed: {body}");
    assert_eq!(s(&body["value"][0]["availabilityView"]).len(), 61);
    let (st, _, body) = ask(one.clone(), "2027-02-02T00:00:00").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorTimeIntervalTooBig");
    assert!(s(&body["error"]["message"]).contains("62 days"));
    let (st, _, body) = ask(one.clone(), "2026-11-30T00:00:00").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidTimeInterval");

    let many = |n: usize| {
        (0..n)
            .map(|i| format!("person{i}@acme.example"))
            .collect::<Vec<_>>()
    };
    let (st, _, body) = ask(many(100), "2026-12-02T00:00:00").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["value"].as_array().unwrap().len(), 100);
    let (st, _, body) = ask(many(101), "2026-12-02T00:00:00").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorMailboxDataArrayTooBig");
    assert!(s(&body["error"]["message"]).contains("100"));

    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/calendar/getSchedule",
        &[],
        Some(json!({"schedules": [ADELE], "startTime": {"dateTime": "2026-12-01T00:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2026-12-02T00:00:00", "timeZone": "UTC"}, "availabilityViewInterval": 4})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn calendar_view_returns_the_events_overlapping_the_window_in_pages() {
    let t = start().await;
    seed(
        &t,
        ADELE,
        json!({"events": [
            {"start": "2026-11-30T23:00:00Z", "end": "2026-12-01T01:00:00Z", "subject": "straddles the start"},
            {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "subject": "inside 1"},
            {"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T10:00:00Z", "subject": "inside 2"},
            {"start": "2026-12-03T00:00:00Z", "end": "2026-12-03T01:00:00Z", "subject": "starts at the end"},
            {"start": "2026-11-29T09:00:00Z", "end": "2026-11-29T10:00:00Z", "subject": "before"},
        ]}),
    )
    .await;
    let tok = graph_token(&t).await;
    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        "/v1.0/me/calendarView?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-03T00:00:00Z&$top=2",
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let mut subjects: Vec<String> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["subject"]).to_string())
        .collect();
    for e in body["value"].as_array().unwrap() {
        assert_graph_event(e);
    }
    let next = s(&body["@odata.nextLink"]).to_string();
    assert!(
        next.starts_with(&t.base),
        "links lead back to the sandbox: {next}"
    );
    let (st, _, body) = send(&t, Method::GET, &tok, &next, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    subjects.extend(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| s(&e["subject"]).to_string()),
    );
    assert!(body.get("@odata.nextLink").is_none());
    assert_eq!(subjects, ["straddles the start", "inside 1", "inside 2"]);

    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        "/v1.0/me/calendarView?startDateTime=2026-12-01T00:00:00Z",
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidParameter");
}

fn interview(txn: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.event",
        "subject": "Interview: Jane Doe — Senior Rust Engineer",
        "body": {"contentType": "HTML", "content": "<p>Agenda…</p>"},
        "start": {"dateTime": "2026-12-10T10:00:00", "timeZone": "Eastern Standard Time"},
        "end": {"dateTime": "2026-12-10T11:00:00", "timeZone": "Eastern Standard Time"},
        "location": {"displayName": "Teams"},
        "attendees": [
            {"emailAddress": {"address": "jane@example.com", "name": "Jane Doe"}, "type": "required"},
            {"emailAddress": {"address": "hm@acme.example", "name": "Hiring Manager"}, "type": "optional"}],
        "isOnlineMeeting": true,
        "onlineMeetingProvider": "teamsForBusiness",
        "allowNewTimeProposals": true,
        "transactionId": txn,
    })
}

#[tokio::test]
async fn a_repeated_transaction_id_returns_the_original_event_unless_switched_off() {
    let t = start().await;
    let tok = graph_token(&t).await;
    let txn = "7E163156-7762-4BEB-A1C6-729EA81755A7";
    let (st, h, first) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/events",
        &[],
        Some(interview(txn)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    assert!(h.contains_key("location"));
    assert_graph_event(&first);
    assert_eq!(first["transactionId"], txn);
    assert_eq!(first["start"]["timeZone"], "Eastern Standard Time");
    assert_eq!(first["start"]["dateTime"], "2026-12-10T10:00:00.0000000");
    assert!(s(&first["onlineMeeting"]["joinUrl"]).starts_with("https://teams.microsoft.com/"));
    let extra: Vec<String> = first
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| {
            golden("microsoft/event-created.json")
                .get(k.as_str())
                .is_none()
        })
        .cloned()
        .collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    assert_shape(&golden("microsoft/event-created.json"), &first, &extra);

    let (st, _, again) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/calendar/events",
        &[],
        Some(interview(txn)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        again["id"], first["id"],
        "a retry returns the original event"
    );
    let (_, list) = t
        .control(
            Method::GET,
            &format!("/_sandbox/calendars/{ADELE}/events"),
            None,
        )
        .await;
    assert_eq!(list["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        invitations(&t, "jane@example.com").await.len(),
        1,
        "no second invitation"
    );

    let (st, _) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"graph_transaction_id_repeat": "conflict"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/events",
        &[],
        Some(interview(txn)),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ErrorDuplicateTransactionId");

    t.control(
        Method::PATCH,
        "/_sandbox/settings",
        Some(json!({"graph_transaction_id_repeat": "ignore"})),
    )
    .await;
    let (st, _, dup) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/events",
        &[],
        Some(interview(txn)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_ne!(dup["id"], first["id"], "switched off: a second event");
}

#[tokio::test]
async fn graph_patch_and_delete_bump_the_sequence_and_send_update_and_cancel_invitations() {
    let t = start().await;
    let tok = graph_token(&t).await;
    let immutable = [("Prefer", "IdType=\"ImmutableId\"")];
    let (st, h, created) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/events",
        &immutable,
        Some(interview("t-1")),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(
        h["preference-applied"]
            .to_str()
            .unwrap()
            .contains("ImmutableId")
    );
    let id = s(&created["id"]).to_string();
    assert!(id.starts_with("AAkALg"), "{id}");
    let uid = s(&created["iCalUId"]).to_string();

    let (st, _, got) = send(
        &t,
        Method::GET,
        &tok,
        &format!("/v1.0/me/events/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert!(
        s(&got["id"]).starts_with("AAMkAG"),
        "REST id without the Prefer header"
    );
    let rest_id = s(&got["id"]).to_string();
    assert_eq!(got["start"]["timeZone"], "UTC");
    assert_eq!(got["start"]["dateTime"], "2026-12-10T15:00:00.0000000");
    assert_graph_event(&got);

    let (st, _, patched) = send(
        &t,
        Method::PATCH,
        &tok,
        &format!("/v1.0/me/events/{rest_id}"),
        &[],
        Some(json!({"start": {"dateTime": "2026-12-10T16:00:00", "timeZone": "UTC"},
                    "end": {"dateTime": "2026-12-10T17:00:00", "timeZone": "UTC"},
                    "attendees": [{"emailAddress": {"address": "jane@example.com"}, "type": "required"}]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{patched}");
    assert_eq!(patched["start"]["dateTime"], "2026-12-10T16:00:00.0000000");

    let (st, _, _) = send(
        &t,
        Method::DELETE,
        &tok,
        &format!("/v1.0/me/events/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        &format!("/v1.0/me/events/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ErrorItemNotFound");
    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        "/v1.0/me/events/not-an-id",
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidIdMalformed");

    let jane: Vec<(String, i64)> = invitations(&t, "jane@example.com")
        .await
        .iter()
        .map(|i| {
            assert_eq!(i["ical_uid"], uid.as_str());
            (s(&i["kind"]).to_string(), i["sequence"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        jane,
        [
            ("invite".into(), 0),
            ("update".into(), 1),
            ("cancel".into(), 2)
        ]
    );
    let hm: Vec<String> = invitations(&t, "hm@acme.example")
        .await
        .iter()
        .map(|i| format!("{}:{}:{}", i["kind"], i["method"], i["sequence"]))
        .collect();
    assert_eq!(
        hm,
        ["\"invite\":\"REQUEST\":0", "\"cancel\":\"CANCEL\":1"],
        "a removed attendee gets a cancellation"
    );
}

#[tokio::test]
async fn graph_calendar_view_delta_reports_changes_and_removals_then_410_after_expiry() {
    let t = start().await;
    let seeded = seed(
        &t,
        ADELE,
        json!({"events": [
            {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "subject": "a"},
            {"start": "2026-12-01T11:00:00Z", "end": "2026-12-01T12:00:00Z", "subject": "b"},
            {"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T14:00:00Z", "subject": "c"},
        ]}),
    )
    .await;
    let tok = graph_token(&t).await;
    let page = [("Prefer", "odata.maxpagesize=2")];
    let mut url = "/v1.0/me/calendarView/delta()?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-02T00:00:00Z".to_string();
    let mut seen = Vec::new();
    let delta = loop {
        let (st, _, body) = send(&t, Method::GET, &tok, &url, &page, None).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        seen.extend(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| s(&e["subject"]).to_string()),
        );
        if let Some(d) = body.get("@odata.deltaLink") {
            break s(d).to_string();
        }
        url = s(&body["@odata.nextLink"]).to_string();
        assert!(url.starts_with(&t.base));
    };
    assert_eq!(seen, ["a", "b", "c"]);

    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/events",
        &[],
        Some(json!({
        "subject": "d", "start": {"dateTime": "2026-12-01T15:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T16:00:00", "timeZone": "UTC"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let b_id = s(&seeded["events"][1]["graph_id"]).to_string();
    let (st, _, _) = send(
        &t,
        Method::DELETE,
        &tok,
        &format!("/v1.0/me/events/{b_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let (st, _, body) = send(&t, Method::GET, &tok, &delta, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    let v = body["value"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["subject"], "d");
    assert_graph_event(&v[0]);
    assert_graph("event", &v[1]);
    assert_eq!(v[1]["id"], b_id.as_str());
    assert_eq!(v[1]["@removed"]["reason"], "deleted");
    assert!(body["@odata.deltaLink"].is_string());

    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{ADELE}/sync-tokens/expire"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, h, body) = send(&t, Method::GET, &tok, &delta, &[], None).await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(body["error"]["code"], "SyncStateNotFound");
    assert!(h["location"].to_str().unwrap().contains("startDateTime="));
}

fn google_interview(id: &str) -> Value {
    json!({
        "id": id,
        "summary": "Interview: Jane Doe — Senior Rust Engineer",
        "description": "Agenda…",
        "start": {"dateTime": "2026-12-10T10:00:00-05:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-12-10T11:00:00-05:00", "timeZone": "America/New_York"},
        "attendees": [{"email": "jane@example.com", "displayName": "Jane Doe"},
                      {"email": "mindy@globex.example", "displayName": "Mindy", "optional": true}],
        "conferenceData": {"createRequest": {"requestId": "7f3c8b6a-2c1d-4e5f-9a8b-0c1d2e3f4a5b",
                                             "conferenceSolutionKey": {"type": "hangoutsMeet"}}},
        "reminders": {"useDefault": true},
        "extendedProperties": {"private": {"atsInterviewId": "I-42"}},
    })
}

const EVENTS: &str = "/calendar/v3/calendars/primary/events";

#[tokio::test]
async fn google_insert_with_a_client_id_then_a_repeat_is_a_409_duplicate_and_a_bad_id_a_400() {
    let t = start().await;
    let tok = google_token(&t, CAL).await;
    let id = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let (st, _, ev) = send(
        &t,
        Method::POST,
        &tok,
        &format!("{EVENTS}?alt=json&sendUpdates=all"),
        &[],
        Some(google_interview(id)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "Google inserts answer 200: {ev}");
    assert_eq!(ev["id"], id);
    assert_eq!(ev["iCalUID"], format!("{id}@google.com"));
    assert_eq!(ev["sequence"], 0);
    assert_eq!(ev["start"]["dateTime"], "2026-12-10T10:00:00-05:00");
    assert_eq!(ev["attendees"][1]["optional"], true);
    assert!(
        ev.get("hangoutLink").is_none(),
        "no Meet link without conferenceDataVersion=1"
    );
    assert_google("Event", &ev);

    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        EVENTS,
        &[],
        Some(google_interview(id)),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_shape(
        &golden("google/calendar-error-duplicate.json"),
        &body,
        &["error.status"],
    );
    assert_eq!(body["error"]["errors"][0]["reason"], "duplicate");

    for bad in ["Event-1234", "abcd", "wxyz0123"] {
        let (st, _, body) = send(
            &t,
            Method::POST,
            &tok,
            EVENTS,
            &[],
            Some(google_interview(bad)),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["errors"][0]["reason"], "invalid");
    }

    let (st, _, got) = send(&t, Method::GET, &tok, &format!("{EVENTS}/{id}"), &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["iCalUID"], ev["iCalUID"]);
    let (st, _, _) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}/unknown00"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = send(
        &t,
        Method::GET,
        &tok,
        &format!("/calendar/v3/calendars/{MINDY}/events/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "only the caller's own calendar");

    // Without an id the sandbox picks a base32hex one.
    let mut no_id = google_interview("x");
    no_id.as_object_mut().unwrap().remove("id");
    let (st, _, ev) = send(
        &t,
        Method::POST,
        &tok,
        &format!("/calendar/v3/calendars/{HANK}/events"),
        &[],
        Some(no_id),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        s(&ev["id"])
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
    );

    let jane = invitations(&t, "jane@example.com").await;
    assert_eq!(
        jane.len(),
        1,
        "sendUpdates=all sent one; the default (none) sent none"
    );
    assert_eq!(jane[0]["ical_uid"], format!("{id}@google.com"));
}

#[tokio::test]
async fn conference_data_version_1_gives_a_meet_link() {
    let t = start().await;
    let tok = google_token(&t, CAL).await;
    let id = "a1b2c3d4e5f60718293a4b5c6d7e8f91";
    let (st, _, ev) = send(
        &t,
        Method::POST,
        &tok,
        &format!("{EVENTS}?conferenceDataVersion=1&sendUpdates=all"),
        &[],
        Some(google_interview(id)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    let link = s(&ev["hangoutLink"]);
    assert!(link.starts_with("https://meet.google.com/"), "{link}");
    assert_eq!(
        ev["conferenceData"]["createRequest"]["status"]["statusCode"],
        "success"
    );
    assert_eq!(ev["conferenceData"]["entryPoints"][0]["uri"], link);
    assert_google("Event", &ev);
    // The shape walker holds every array item to the example's first one: the optional attendee adds
    // `optional`.
    assert_shape(
        &golden("google/calendar-event.json"),
        &ev,
        &["description", "attendees[1].optional"],
    );
    assert_eq!(
        invitations(&t, "jane@example.com").await[0]["online_url"],
        link,
        "the invitation carries the Meet link"
    );
    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        &format!("{EVENTS}?conferenceDataVersion=2"),
        &[],
        Some(google_interview("a1b2c3d4e5f60718293a4b5c6d7e8f92")),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn google_patch_and_delete_bump_the_sequence_and_record_update_and_cancel_invitations() {
    let t = start().await;
    let tok = google_token(&t, CAL).await;
    let id = "0123456789abcdefghijklmnopqrstuv";
    let (st, _, ev) = send(
        &t,
        Method::POST,
        &tok,
        &format!("{EVENTS}?sendUpdates=externalOnly"),
        &[],
        Some(google_interview(id)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(
        invitations(&t, MINDY).await.len(),
        0,
        "externalOnly skips the organizer's domain"
    );

    let (st, _, p) = send(&t, Method::PATCH, &tok, &format!("{EVENTS}/{id}?sendUpdates=all"), &[], Some(json!({
        "summary": "Interview (moved)",
        "start": {"dateTime": "2026-12-11T10:00:00-05:00"}, "end": {"dateTime": "2026-12-11T11:00:00-05:00"}}))).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["sequence"], 1);
    assert_eq!(p["summary"], "Interview (moved)");
    assert_eq!(
        p["extendedProperties"]["private"]["atsInterviewId"], "I-42",
        "patch keeps other fields"
    );
    assert_google("Event", &p);

    let (st, _, p) = send(
        &t,
        Method::PATCH,
        &tok,
        &format!("{EVENTS}/{id}"),
        &[],
        Some(json!({"location": "Room 1"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p["sequence"], 2);

    let r = t
        .http
        .delete(t.url(&format!("{EVENTS}/{id}?sendUpdates=all")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _, gone) = send(&t, Method::GET, &tok, &format!("{EVENTS}/{id}"), &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(gone["status"], "cancelled");
    assert_eq!(gone["sequence"], 3);
    let (st, _, body) = send(
        &t,
        Method::PATCH,
        &tok,
        &format!("{EVENTS}/{id}"),
        &[],
        Some(json!({"summary": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(body["error"]["errors"][0]["reason"], "deleted");

    let jane: Vec<String> = invitations(&t, "jane@example.com")
        .await
        .iter()
        .map(|i| {
            assert_eq!(i["ical_uid"], format!("{id}@google.com"));
            assert_eq!(i["via"], "google");
            format!("{}/{}/{}", s(&i["kind"]), s(&i["method"]), i["sequence"])
        })
        .collect();
    assert_eq!(
        jane,
        ["invite/REQUEST/0", "update/REQUEST/1", "cancel/CANCEL/3"],
        "the sendUpdates=none patch (sequence 2) sent nothing"
    );
    let mindy: Vec<String> = invitations(&t, MINDY)
        .await
        .iter()
        .map(|i| s(&i["kind"]).to_string())
        .collect();
    assert_eq!(mindy, ["update", "cancel"]);
}

#[tokio::test]
async fn events_list_sync_token_returns_only_changes_then_410_after_expiry() {
    let t = start().await;
    seed(
        &t,
        HANK,
        json!({"events": [
            {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "subject": "one"},
            {"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T10:00:00Z", "subject": "two"},
            {"start": "2026-12-03T09:00:00Z", "end": "2026-12-03T10:00:00Z", "subject": "three"},
        ]}),
    )
    .await;
    let tok = google_token(&t, CAL).await;
    let (st, _, p1) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?maxResults=2&alt=json"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p1}");
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    assert!(
        p1.get("nextSyncToken").is_none(),
        "only the last page has nextSyncToken"
    );
    assert_google("Events", &p1);
    let fixture = golden("google/calendar-events-list.json");
    assert_shape(&fixture, &p1, &[]);
    let (_, _, p2) = send(
        &t,
        Method::GET,
        &tok,
        &format!(
            "{EVENTS}?maxResults=2&pageToken={}",
            s(&p1["nextPageToken"])
        ),
        &[],
        None,
    )
    .await;
    assert_eq!(p2["items"][0]["summary"], "three");
    assert!(p2.get("nextPageToken").is_none());
    let sync = s(&p2["nextSyncToken"]).to_string();

    // Window filters on a full listing.
    let (_, _, w) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?timeMin=2026-12-02T00:00:00Z&timeMax=2026-12-03T00:00:00Z"),
        &[],
        None,
    )
    .await;
    assert_eq!(w["items"].as_array().unwrap().len(), 1);

    let (_, _, ins) = send(&t, Method::POST, &tok, EVENTS, &[], Some(json!({"summary": "four",
        "start": {"dateTime": "2026-12-04T09:00:00Z"}, "end": {"dateTime": "2026-12-04T10:00:00Z"}}))).await;
    let one_id = s(&p1["items"][0]["id"]).to_string();
    let r = t
        .http
        .delete(t.url(&format!("{EVENTS}/{one_id}")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let (st, _, inc) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?syncToken={sync}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{inc}");
    let items = inc["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0]["id"], one_id.as_str());
    assert_eq!(items[0]["status"], "cancelled");
    assert_eq!(items[1]["id"], ins["id"]);
    assert_google("Events", &inc);
    let next = s(&inc["nextSyncToken"]).to_string();
    let (_, _, empty) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?syncToken={next}"),
        &[],
        None,
    )
    .await;
    assert_eq!(empty["items"].as_array().unwrap().len(), 0);

    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?syncToken={next}&timeMin=2026-12-01T00:00:00Z"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "syncToken can't be combined with timeMin: {body}"
    );

    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{HANK}/sync-tokens/expire"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?syncToken={next}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::GONE);
    assert_shape(
        &golden("google/calendar-error-full-sync-required.json"),
        &body,
        &["error.status"],
    );
    // A full sync after the 410 gives a working token again.
    let (_, _, full) = send(&t, Method::GET, &tok, EVENTS, &[], None).await;
    let fresh = s(&full["nextSyncToken"]).to_string();
    let (st, _, _) = send(
        &t,
        Method::GET,
        &tok,
        &format!("{EVENTS}?syncToken={fresh}"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn freebusy_reports_merged_busy_blocks_and_a_per_calendar_not_found() {
    let t = start().await;
    seed(
        &t,
        HANK,
        json!({"events": [
            {"start": "2026-12-01T14:00:00Z", "end": "2026-12-01T15:00:00Z"},
            {"start": "2026-12-01T14:30:00Z", "end": "2026-12-01T15:30:00Z"},
            {"start": "2026-12-01T16:00:00Z", "end": "2026-12-01T17:00:00Z", "show_as": "tentative"},
            {"start": "2026-12-01T18:00:00Z", "end": "2026-12-01T19:00:00Z", "show_as": "free"},
            {"start": "2026-12-01T23:00:00Z", "end": "2026-12-02T02:00:00Z"},
        ]}),
    )
    .await;
    seed(
        &t,
        MINDY,
        json!({"events": [{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z"}]}),
    )
    .await;
    let tok = google_token(&t, CAL_FREEBUSY).await;
    let (st, _, fb) = send(
        &t,
        Method::POST,
        &tok,
        "/calendar/v3/freeBusy?alt=json",
        &[],
        Some(json!({
        "timeMin": "2026-12-01T00:00:00Z", "timeMax": "2026-12-02T00:00:00Z", "timeZone": "UTC",
        "items": [{"id": "primary"}, {"id": MINDY}, {"id": "nobody@globex.example"}]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["timeMin"], "2026-12-01T00:00:00.000Z");
    assert_eq!(
        fb["calendars"]["primary"]["busy"],
        json!([
            {"start": "2026-12-01T14:00:00Z", "end": "2026-12-01T15:30:00Z"},
            {"start": "2026-12-01T23:00:00Z", "end": "2026-12-02T00:00:00Z"},
        ]),
        "overlaps merged, tentative and free left out, clipped to the window"
    );
    assert_eq!(fb["calendars"][MINDY]["busy"].as_array().unwrap().len(), 1);
    let nobody = &fb["calendars"]["nobody@globex.example"];
    assert_eq!(nobody["errors"][0]["reason"], "notFound");
    assert_eq!(nobody["busy"], json!([]));
    assert_google("FreeBusyResponse", &fb);
    let f = golden("google/calendar-freebusy.json");
    assert_shape(&f["calendars"]["primary"], &fb["calendars"]["primary"], &[]);
    assert_shape(&f["calendars"]["nobody@corp.com"], nobody, &[]);
    assert_shape(
        &json!({"kind": f["kind"], "timeMin": f["timeMin"], "timeMax": f["timeMax"]}),
        &json!({"kind": fb["kind"], "timeMin": fb["timeMin"], "timeMax": fb["timeMax"]}),
        &[],
    );

    let (st, _, body) = send(&t, Method::POST, &tok, "/calendar/v3/freeBusy", &[], Some(json!({
        "timeMin": "2026-12-02T00:00:00Z", "timeMax": "2026-12-01T00:00:00Z", "items": [{"id": "primary"}]}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["errors"][0]["reason"], "timeRangeEmpty");
    assert_eq!(body["error"]["errors"][0]["domain"], "calendar");
}

#[tokio::test]
async fn events_watch_returns_a_channel() {
    let t = start().await;
    let tok = google_token(&t, CAL_READ).await;
    let (st, _, ch) = send(&t, Method::POST, &tok, &format!("{EVENTS}/watch"), &[], Some(json!({
        "id": "chan-1", "type": "web_hook", "address": "https://hirewire.example/hooks/google-calendar", "token": "t=1"}))).await;
    assert_eq!(st, StatusCode::OK, "{ch}");
    assert_eq!(ch["kind"], "api#channel");
    assert_eq!(ch["id"], "chan-1");
    assert_eq!(ch["token"], "t=1");
    assert!(ch["resourceId"].is_string());
    assert!(ch["expiration"].is_string(), "int64 travels as a string");
    assert_google("Channel", &ch);
    let (_, summary) = t
        .control(Method::GET, &format!("/_sandbox/calendars/{HANK}"), None)
        .await;
    assert_eq!(summary["channels"][0]["id"], "chan-1");
    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        &format!("{EVENTS}/watch"),
        &[],
        Some(json!({"id": "x", "type": "web_hook"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn calls_without_calendar_scopes_get_the_providers_403s() {
    let t = start().await;
    let mail_only = ms_token_with(&t, "openid offline_access User.Read Mail.Read").await;
    let (st, _, body) = send(
        &t,
        Method::POST,
        &mail_only,
        "/v1.0/me/calendar/getSchedule",
        &[],
        Some(schedule_body(
            &[ADELE.into()],
            "2026-12-01T00:00:00",
            "2026-12-02T00:00:00",
            None,
        )),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    let read_only = ms_token_with(&t, "openid offline_access User.Read Calendars.Read").await;
    let (st, _, _) = send(
        &t,
        Method::GET,
        &read_only,
        "/v1.0/me/calendarView?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-02T00:00:00Z",
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = send(
        &t,
        Method::POST,
        &read_only,
        "/v1.0/me/events",
        &[],
        Some(interview("t")),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");

    let readonly = google_token(&t, CAL_READ).await;
    let (st, h, body) = send(
        &t,
        Method::POST,
        &readonly,
        EVENTS,
        &[],
        Some(google_interview("a1b2c3d4e5")),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["errors"][0]["reason"],
        "insufficientPermissions"
    );
    assert_eq!(
        body["error"]["details"][0]["metadata"]["service"],
        "calendar-json.googleapis.com"
    );
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("calendar.events")
    );
    let (st, _, _) = send(&t, Method::GET, &readonly, EVENTS, &[], None).await;
    assert_eq!(st, StatusCode::OK);

    let freebusy_only = google_token(&t, CAL_FREEBUSY).await;
    let (st, _, _) = send(&t, Method::GET, &freebusy_only, EVENTS, &[], None).await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "calendar.freebusy does not open events.list"
    );
    let (st, _, _) = send(&t, Method::POST, &freebusy_only, "/calendar/v3/freeBusy", &[], Some(json!({
        "timeMin": "2026-12-01T00:00:00Z", "timeMax": "2026-12-02T00:00:00Z", "items": [{"id": "primary"}]}))).await;
    assert_eq!(st, StatusCode::OK);
    let events_scope = google_token(&t, CAL_EVENTS).await;
    let (st, _, _) = send(&t, Method::POST, &events_scope, "/calendar/v3/freeBusy", &[], Some(json!({
        "timeMin": "2026-12-01T00:00:00Z", "timeMax": "2026-12-02T00:00:00Z", "items": [{"id": "primary"}]}))).await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "freeBusy takes the scopes its discovery entry lists"
    );
}

#[tokio::test]
async fn a_fault_on_a_calendar_endpoint_answers_in_the_providers_shape_and_is_counted() {
    let t = start().await;
    let g = graph_token(&t).await;
    let tok = google_token(&t, CAL).await;
    for spec in [
        json!({"endpoint": "graph.calendar.getSchedule", "fault": {"kind": "throttle", "retry_after_secs": 3}, "count": 1}),
        json!({"endpoint": "calendar.events.*", "user": HANK, "fault": {"kind": "user_rate_limit"}, "count": 1}),
    ] {
        let (st, _) = t
            .control(Method::POST, "/_sandbox/faults", Some(spec))
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let body = schedule_body(
        &[ADELE.into()],
        "2026-12-01T00:00:00",
        "2026-12-02T00:00:00",
        None,
    );
    let (st, h, err) = send(
        &t,
        Method::POST,
        &g,
        "/v1.0/me/calendar/getSchedule",
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "3");
    assert_eq!(err["error"]["code"], "ApplicationThrottled");
    let (st, _, _) = send(
        &t,
        Method::POST,
        &g,
        "/v1.0/me/calendar/getSchedule",
        &[],
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the fault disarmed itself");

    let (st, _, err) = send(
        &t,
        Method::POST,
        &tok,
        EVENTS,
        &[],
        Some(google_interview("a1b2c3d4e5")),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["errors"][0]["reason"], "userRateLimitExceeded");
    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        EVENTS,
        &[],
        Some(google_interview("a1b2c3d4e5")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the retry creates it");

    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["endpoints"]["graph.calendar.getSchedule"]["requests"], 2);
    assert_eq!(c["endpoints"]["graph.calendar.getSchedule"]["faulted"], 1);
    assert_eq!(c["endpoints"]["calendar.events.insert"]["by_user"][HANK], 2);
    assert_eq!(c["endpoints"]["calendar.events.insert"]["faulted"], 1);
}

#[tokio::test]
async fn seeding_generates_the_same_weekday_events_for_the_same_seed() {
    let t = start().await;
    let spec = json!({"generate": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-15T00:00:00Z", "seed": 7, "per_day": 3}});
    let a = seed(&t, ADELE, spec.clone()).await;
    let b = seed(&t, BEN, spec).await;
    let times = |v: &Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    s(&e["start"]).to_string(),
                    s(&e["end"]).to_string(),
                    s(&e["show_as"]).to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(a["created"].as_u64().unwrap() > 5, "{a}");
    assert_eq!(times(&a), times(&b));
    for (start, _, _) in times(&a) {
        let day: jiff::Timestamp = start.parse().unwrap();
        let wd = day.to_zoned_datetime(jiff::tz::TimeZone::UTC).weekday();
        assert!(
            !matches!(
                wd,
                jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
            ),
            "{start}"
        );
    }
    // Replace drops what was there; the listing shows what remains.
    let c = seed(&t, ADELE, json!({"replace": true, "events": [{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z"}]})).await;
    assert_eq!(c["created"], 1);
    let (_, list) = t
        .control(
            Method::GET,
            &format!("/_sandbox/calendars/{ADELE}/events"),
            None,
        )
        .await;
    assert_eq!(list["events"].as_array().unwrap().len(), 1);
    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/calendars/{ADELE}/events"),
            Some(json!({"events": [{"start": "x", "end": "y"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = t
        .control(
            Method::GET,
            "/_sandbox/calendars/nobody@nowhere.example",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn calendar_batch_runs_each_part_as_its_own_call() {
    let t = start().await;
    let tok = google_token(&t, CAL).await;
    // Bare LF line ends and a JSON body in a part, as the Python client sends them (PROVIDERS.md §13).
    let insert = json!({"id": "batch00001", "summary": "from a batch",
        "start": {"dateTime": "2026-12-01T09:00:00Z"}, "end": {"dateTime": "2026-12-01T10:00:00Z"}})
    .to_string();
    let body = format!(
        "--B\nContent-Type: application/http\nContent-ID: <a>\n\nPOST /calendar/v3/calendars/primary/events?alt=json\nContent-Type: application/json\n\n{insert}\n--B\nContent-Type: application/http\nContent-ID: <b>\n\nGET /calendar/v3/calendars/primary/events/batch00001?alt=json\n\n--B\nContent-Type: application/http\nContent-ID: <c>\n\nGET /gmail/v1/users/me/profile\n\n--B--\n"
    );
    let r = t
        .http
        .post(t.url("/batch/calendar/v3"))
        .bearer_auth(&tok)
        .header("content-type", "multipart/mixed; boundary=B")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let parts: Vec<&str> = text
        .split("--batch_")
        .filter(|p| p.contains("HTTP/1.1"))
        .collect();
    assert_eq!(parts.len(), 3, "{text}");
    assert!(parts[0].contains("Content-ID: <response-a>") && parts[0].contains("HTTP/1.1 200 OK"));
    assert!(
        parts[1].contains("\"summary\":\"from a batch\""),
        "{}",
        parts[1]
    );
    assert!(
        parts[2].contains("HTTP/1.1 404"),
        "only Calendar paths: {}",
        parts[2]
    );
    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["endpoints"]["calendar.events.insert"]["requests"], 1);
    assert_eq!(c["endpoints"]["calendar.events.get"]["requests"], 1);
}
