//! Calendar endpoints on the shared pipeline ([`crate::apis::call`]: authentication, concurrency, faults,
//! scopes, counters), over the runtime calendars of [`crate::calendar`].
//!
//! Graph: `getSchedule`, `calendarView` (and its delta, and `/me/events/delta`), `POST /me/events` with
//! `transactionId`, `GET`/`PATCH`/`DELETE /me/events/{id}`. Google Calendar: `freeBusy.query`,
//! `events.insert`/`get`/`patch`/`delete`/`list` (with `syncToken`) and `events.watch`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::apis::{Needs, Principal, call, check_alt};
use crate::app::App;
use crate::calendar::{
    Attendee, Calendar, Channel, Event, SyncToken, blank_event, google_local, graph_local,
    meet_code, outlook_ical_uid, parse_local, random_base32hex, rfc3339_ms, valid_google_id,
};
use crate::scenario::Provider;
use crate::state::User;
use crate::wire::{
    GraphPrefer, Params, PreferScope, get_ci, graph_applied, graph_bad_request, graph_error,
    graph_not_found, json_response, link_base, random_token,
};

/// Routes of the calendar endpoints.
pub fn routes() -> Router<App> {
    let graph = Router::new()
        .route("/v1.0/me/calendar/getSchedule", post(graph_get_schedule))
        .route("/v1.0/me/calendarView", get(graph_calendar_view))
        .route("/v1.0/me/calendar/calendarView", get(graph_calendar_view))
        .route("/v1.0/me/calendarView/delta", get(graph_delta))
        .route("/v1.0/me/calendar/calendarView/delta", get(graph_delta))
        .route("/v1.0/me/events/delta", get(graph_delta))
        .route("/v1.0/me/events", post(graph_create).get(graph_list))
        .route(
            "/v1.0/me/calendar/events",
            post(graph_create).get(graph_list),
        )
        .route(
            "/v1.0/me/events/{id}",
            get(graph_get).patch(graph_patch).delete(graph_delete),
        )
        .route(
            "/v1.0/me/calendar/events/{id}",
            get(graph_get).patch(graph_patch).delete(graph_delete),
        )
        .layer(middleware::from_fn(crate::apis::graph_headers));
    Router::new()
        .merge(graph)
        .route("/calendar/v3/freeBusy", post(google_freebusy))
        .route(
            "/calendar/v3/calendars/{cid}/events",
            post(google_insert).get(google_list),
        )
        .route(
            "/calendar/v3/calendars/{cid}/events/watch",
            post(google_watch),
        )
        .route(
            "/calendar/v3/calendars/{cid}/events/{eid}",
            get(google_get).patch(google_patch).delete(google_delete),
        )
}

/// Graph scopes that allow reading calendars.
pub const CAL_READ: &[&str] = &[
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
];
/// Graph scopes that allow `getSchedule` (free/busy): any calendar permission.
pub const CAL_SCHEDULE: &[&str] = &[
    "Calendars.ReadBasic",
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
];
/// Graph scopes that allow changing events.
pub const CAL_WRITE: &[&str] = &["Calendars.ReadWrite", "Calendars.ReadWrite.Shared"];

fn graph_needs(any_of: &'static [&'static str]) -> Needs<'static> {
    Needs::Graph {
        any_of,
        code: "ErrorAccessDenied",
        message: "Access is denied. Check credentials and try again.",
    }
}

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------

fn owner_key(p: &Principal) -> String {
    p.user.email.to_ascii_lowercase()
}

/// A query value, with `+` that form decoding turned into a space put back (offsets in date-times).
fn qv(params: &Params, key: &str) -> Option<String> {
    params.get(key).map(|v| v.replace(' ', "+"))
}

/// A Google API error with an optional `location`.
fn cal_error(
    status: StatusCode,
    reason: &str,
    domain: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Response {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((kind, loc)) = location {
        item["locationType"] = json!(kind);
        item["location"] = json!(loc);
    }
    let status_name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        410 => "NOT_FOUND",
        _ => "INTERNAL",
    };
    json_response(
        status,
        json!({"error": {"errors": [item], "code": status.as_u16(), "message": message, "status": status_name}}),
    )
}

fn cal_not_found() -> Response {
    cal_error(
        StatusCode::NOT_FOUND,
        "notFound",
        "global",
        "Not Found",
        None,
    )
}

fn cal_invalid(message: &str, location: Option<&str>) -> Response {
    cal_error(
        StatusCode::BAD_REQUEST,
        "invalid",
        "global",
        message,
        location.map(|l| ("parameter", l)),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice::<Value>(body)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err("not a JSON object".into())
            }
        })
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

// ---------------------------------------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------------------------------------

fn change_key(e: &Event) -> String {
    URL_SAFE_NO_PAD.encode(format!("ck{}:{}", e.change, e.updated_ms))
}

/// The Graph event resource.
fn graph_event(e: &Event, owner: &User, tz: &str, immutable: bool) -> Value {
    let id = if immutable {
        &e.immutable_id
    } else {
        &e.graph_id
    };
    let ck = change_key(e);
    let preview: String = if e.body_type == "html" {
        strip_tags(&e.body)
    } else {
        e.body.clone()
    }
    .chars()
    .take(255)
    .collect();
    let loc = e.location.clone().unwrap_or_default();
    let mut location =
        json!({"displayName": loc, "locationType": "default", "uniqueIdType": "unknown"});
    let mut locations = json!([]);
    if !loc.is_empty() {
        location["uniqueId"] = json!(loc);
        location["uniqueIdType"] = json!("private");
        locations = json!([location.clone()]);
    }
    let attendees: Vec<Value> = e
        .attendees
        .iter()
        .map(|a| {
            json!({
                "type": a.kind,
                "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": a.name.clone().unwrap_or_else(|| a.email.clone()), "address": a.email},
            })
        })
        .collect();
    let orig_tz = e.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let mut head = json!({
        "@odata.etag": format!("W/\"{ck}\""),
        "id": id,
        "createdDateTime": rfc3339_ms(e.created_ms, false),
        "lastModifiedDateTime": rfc3339_ms(e.updated_ms, false),
        "changeKey": ck,
        "categories": [],
        "transactionId": e.transaction_id,
        "originalStartTimeZone": orig_tz,
        "originalEndTimeZone": orig_tz,
        "iCalUId": e.ical_uid,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": true,
        "hasAttachments": false,
        "subject": e.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "sensitivity": if e.is_private { "private" } else { "normal" },
        "isAllDay": false,
        "isCancelled": e.cancelled,
        "isOrganizer": true,
        "responseRequested": true,
        "seriesMasterId": null,
        "showAs": e.show_as,
        "type": "singleInstance",
        "webLink": format!("https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item", url_enc(id)),
        "onlineMeetingUrl": null,
        "isOnlineMeeting": e.online_url.is_some(),
        "onlineMeetingProvider": if e.online_url.is_some() { "teamsForBusiness" } else { "unknown" },
    });
    let rest = json!({
        "allowNewTimeProposals": true,
        "isDraft": false,
        "hideAttendees": false,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": e.body_type, "content": e.body},
        "start": {"dateTime": graph_local(e.start_ms, tz), "timeZone": tz},
        "end": {"dateTime": graph_local(e.end_ms, tz), "timeZone": tz},
        "location": location,
        "locations": locations,
        "recurrence": null,
        "attendees": attendees,
        "organizer": {"emailAddress": {"name": owner.display_name, "address": owner.email}},
        "onlineMeeting": e.online_url.as_ref().map(|u| json!({"joinUrl": u})),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut head, rest) {
        a.extend(b);
    }
    head
}

fn url_enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Keeps only the `$select`ed properties (plus `id` and `@odata.etag`, as Graph does).
fn select(v: Value, sel: Option<&[String]>) -> Value {
    let Some(sel) = sel else { return v };
    let Value::Object(m) = v else { return v };
    Value::Object(
        m.into_iter()
            .filter(|(k, _)| {
                k == "id" || k == "@odata.etag" || sel.iter().any(|s| s.eq_ignore_ascii_case(k))
            })
            .collect(),
    )
}

fn parse_select(params: &Params) -> Option<Vec<String>> {
    params.get("$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    })
}

/// Graph `dateTimeTimeZone` in a request body.
fn graph_dt(v: Option<&Value>) -> Option<(i64, String)> {
    let v = v?;
    let dt = get_ci(v, "dateTime")?.as_str()?;
    let tz = get_ci(v, "timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    parse_local(dt, tz).map(|ms| (ms, tz.to_string()))
}

const RANK: &[(&str, char, u8)] = &[
    ("free", '0', 0),
    ("tentative", '1', 1),
    ("workingElsewhere", '4', 2),
    ("busy", '2', 3),
    ("oof", '3', 4),
];

fn view_digit(events: &[&Event], from: i64, to: i64) -> char {
    let mut best = ('0', 0u8);
    for e in events.iter().filter(|e| e.overlaps(from, to)) {
        if let Some((_, d, r)) = RANK.iter().find(|(s, _, _)| *s == e.show_as)
            && *r > best.1
        {
            best = (*d, *r);
        }
    }
    best.0
}

async fn graph_get_schedule(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let base = link_base(&headers);
    let h2 = headers.clone();
    call(
        &app,
        "graph.calendar.getSchedule",
        &headers,
        graph_needs(CAL_SCHEDULE),
        |p| {
            let b = match parse_body(&body) {
                Ok(b) => b,
                Err(e) => return graph_bad_request(app.now(), &h2, "BadRequest", &format!("Unable to read JSON request payload: {e}")),
            };
            let Some(schedules) = get_ci(&b, "schedules").and_then(Value::as_array) else {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidParameter", "The parameter 'Schedules' is missing or invalid.");
            };
            if schedules.len() > 100 {
                return graph_bad_request(app.now(), &h2,
                    "ErrorMailboxDataArrayTooBig",
                    "The number of mailboxes requested exceeded the allowed size = 100.",
                );
            }
            let (Some((from, _)), Some((to, _))) =
                (graph_dt(get_ci(&b, "startTime")), graph_dt(get_ci(&b, "endTime")))
            else {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidParameter", "The parameters 'StartTime' and 'EndTime' are required dateTimeTimeZone values.");
            };
            let interval = match get_ci(&b, "availabilityViewInterval") {
                None | Some(Value::Null) => 30,
                Some(v) => match v.as_i64() {
                    Some(n) if (5..=1440).contains(&n) => n,
                    _ => {
                        return graph_bad_request(app.now(), &h2,
                            "ErrorInvalidParameter",
                            "The value of availabilityViewInterval must be between 5 and 1440 minutes.",
                        );
                    }
                },
            };
            if to <= from {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidTimeInterval", "The time interval is invalid: the end time must be after the start time.");
            }
            if to - from > 62 * DAY_MS {
                return graph_bad_request(app.now(), &h2,
                    "ErrorTimeIntervalTooBig",
                    "The requested time duration is too long. The allowed limit = 62 days.",
                );
            }
            let tz = pf.tz.clone().unwrap_or_else(|| "UTC".into());
            let mut out = Vec::new();
            for s in schedules {
                let addr = s.as_str().unwrap_or_default().to_string();
                let target = app.read(|st| {
                    st.users
                        .iter()
                        .find(|u| {
                            u.provider == Provider::Microsoft
                                && u.org == p.user.org
                                && u.email.eq_ignore_ascii_case(&addr)
                        })
                        .cloned()
                });
                let Some(u) = target else {
                    out.push(json!({
                        "scheduleId": addr,
                        "availabilityView": "",
                        "scheduleItems": [],
                        "error": {"message": format!("The specified SMTP address '{addr}' couldn't be resolved to a mailbox in this organization."), "responseCode": "ErrorMailboxNotFound"},
                    }));
                    continue;
                };
                let events: Vec<Event> = app.cal(|c| {
                    c.of(&u.email).live_in(from, to).into_iter().cloned().collect()
                });
                let refs: Vec<&Event> = events.iter().collect();
                let step = interval * 60_000;
                let mut view = String::new();
                let mut t = from;
                while t < to {
                    view.push(view_digit(&refs, t, (t + step).min(to)));
                    t += step;
                }
                let items: Vec<Value> = events
                    .iter()
                    .filter(|e| e.show_as != "free")
                    .map(|e| {
                        let mut it = json!({
                            "isPrivate": e.is_private,
                            "status": e.show_as,
                            "start": {"dateTime": graph_local(e.start_ms, &tz), "timeZone": tz},
                            "end": {"dateTime": graph_local(e.end_ms, &tz), "timeZone": tz},
                        });
                        if !e.is_private {
                            it["subject"] = json!(e.subject);
                            it["location"] = json!(e.location.clone().unwrap_or_default());
                        }
                        it
                    })
                    .collect();
                out.push(json!({
                    "scheduleId": addr,
                    "availabilityView": view,
                    "scheduleItems": items,
                    "workingHours": {
                        "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                        "startTime": "08:00:00.0000000",
                        "endTime": "17:00:00.0000000",
                        "timeZone": {"name": tz},
                    },
                }));
            }
            graph_applied(
                json_response(
                    StatusCode::OK,
                    json!({
                        "@odata.context": format!("{base}/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)"),
                        "value": out,
                    }),
                ),
                &pf,
            )
        },
    )
    .await
}

/// `startDateTime` / `endDateTime` of a calendarView request.
fn window(params: &Params) -> Option<(i64, i64)> {
    let a = parse_local(&qv(params, "startDateTime")?, "UTC")?;
    let b = parse_local(&qv(params, "endDateTime")?, "UTC")?;
    Some((a, b))
}

fn page_size(params: &Params, pf: &GraphPrefer, default: usize) -> Result<usize, ()> {
    match params.get("$top") {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or(()),
        None => Ok(pf.max_page.unwrap_or(default).clamp(1, 1000)),
    }
}

/// A page of events for `calendarView` or `/me/events`.
#[allow(clippy::too_many_arguments)]
fn graph_page(
    app: &App,
    headers: &HeaderMap,
    p: &Principal,
    uri: &Uri,
    params: &Params,
    pf: &GraphPrefer,
    events: Vec<Event>,
    context: &str,
) -> Response {
    let Ok(top) = page_size(params, pf, 10) else {
        return graph_bad_request(
            app.now(),
            headers,
            "ErrorInvalidParameter",
            "Invalid value for $top.",
        );
    };
    let skip: usize = params
        .get("$skip")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let sel = parse_select(params);
    let tz = pf.tz.clone().unwrap_or_else(|| "UTC".into());
    let base = link_base(headers);
    let value: Vec<Value> = events
        .iter()
        .skip(skip)
        .take(top)
        .map(|e| select(graph_event(e, &p.user, &tz, pf.immutable), sel.as_deref()))
        .collect();
    let mut body = json!({
        "@odata.context": format!("{base}/v1.0/$metadata#users('{}')/{context}", url_enc(&p.user.email)),
        "value": value,
    });
    if skip + top < events.len() {
        let mut next = Params(
            params
                .0
                .iter()
                .filter(|(k, _)| k != "$skip")
                .cloned()
                .collect(),
        );
        next.push("$skip", &(skip + top).to_string());
        body["@odata.nextLink"] = json!(format!("{base}{}?{}", uri.path(), next.encode()));
    }
    graph_applied(json_response(StatusCode::OK, body), pf)
}

async fn graph_calendar_view(
    State(app): State<App>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let h2 = headers.clone();
    call(&app, "graph.calendarView.list", &headers, graph_needs(CAL_READ), |p| {
        let Some((from, to)) = window(&params) else {
            return graph_bad_request(app.now(), &h2,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            );
        };
        let events: Vec<Event> = app.cal(|c| {
            c.of(&owner_key(p)).live_in(from, to).into_iter().cloned().collect()
        });
        graph_page(&app, &h2, p, &uri, &params, &pf, events, "calendarView")
    })
    .await
}

async fn graph_list(
    State(app): State<App>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let h2 = headers.clone();
    call(
        &app,
        "graph.events.list",
        &headers,
        graph_needs(CAL_READ),
        |p| {
            let events: Vec<Event> = app.cal(|c| {
                c.of(&owner_key(p))
                    .live_in(i64::MIN, i64::MAX)
                    .into_iter()
                    .cloned()
                    .collect()
            });
            graph_page(&app, &h2, p, &uri, &params, &pf, events, "events")
        },
    )
    .await
}

fn graph_delta_expired(app: &App, headers: &HeaderMap, restart: &str) -> Response {
    let (status, code) = app.read(|s| {
        (
            s.settings.graph_delta_expired_status,
            s.settings.graph_delta_expired_code.clone(),
        )
    });
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::GONE);
    let mut r = graph_error(
        st,
        &code,
        "The sync state generation is not found or has expired. Restart the sync from an empty token.",
        headers,
        app.now(),
    );
    if let Ok(v) = HeaderValue::from_str(restart) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// calendarView delta and events delta. `$skiptoken` = a token for the round's base (`change` = what the
/// round reports changes after; 0 for the first round) plus `.snapshot.offset`; `$deltatoken` = a token
/// whose `change` is the counter at the end of the previous round.
async fn graph_delta(
    State(app): State<App>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let h2 = headers.clone();
    let path = uri.path().to_string();
    let windowed = path.contains("calendarView");
    call(&app, "graph.calendarView.delta", &headers, graph_needs(CAL_READ), |p| {
        let owner = owner_key(p);
        let base = link_base(&h2);
        let tz = pf.tz.clone().unwrap_or_else(|| "UTC".into());
        let page = pf.max_page.unwrap_or(10).clamp(1, 1000);
        // (since, snapshot, offset, window)
        let round = if let Some(dt) = params.get("$deltatoken") {
            let Some(t) = SyncToken::decode(dt).filter(|t| t.owner == owner) else {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidParameter", "The delta token is invalid.");
            };
            let floor = app.cal(|c| c.of(&owner).sync_floor);
            if t.change < floor {
                let mut restart = format!("{base}{path}");
                if let (Some(a), Some(b)) = (t.from, t.to) {
                    restart.push_str(&format!(
                        "?startDateTime={}&endDateTime={}",
                        rfc3339_ms(a, false),
                        rfc3339_ms(b, false)
                    ));
                }
                return graph_delta_expired(&app, &h2, &restart);
            }
            let snap = app.cal(|c| c.of(&owner).change);
            (t.change, snap, 0usize, (t.from, t.to))
        } else if let Some(st) = params.get("$skiptoken") {
            let mut parts = st.rsplitn(3, '.');
            let (Some(off), Some(snap), Some(tok)) = (parts.next(), parts.next(), parts.next()) else {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidParameter", "The skip token is invalid.");
            };
            let (Some(t), Ok(snap), Ok(off)) = (
                SyncToken::decode(tok).filter(|t| t.owner == owner),
                snap.parse::<u64>(),
                off.parse::<usize>(),
            ) else {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidParameter", "The skip token is invalid.");
            };
            (t.change, snap, off, (t.from, t.to))
        } else {
            let w = if windowed {
                match window(&params) {
                    Some((a, b)) => (Some(a), Some(b)),
                    None => {
                        return graph_bad_request(app.now(), &h2,
                            "ErrorInvalidParameter",
                            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
                        );
                    }
                }
            } else {
                (None, None)
            };
            let snap = app.cal(|c| c.of(&owner).change);
            (0, snap, 0, w)
        };
        let (since, snap, off, (wf, wt)) = round;
        let (from, to) = (wf.unwrap_or(i64::MIN), wt.unwrap_or(i64::MAX));
        let items: Vec<Value> = app.cal(|c| {
            let cal = c.of(&owner);
            let mut evs: Vec<&Event> = cal
                .events
                .iter()
                .filter(|e| {
                    if since == 0 {
                        !e.cancelled && e.overlaps(from, to)
                    } else {
                        e.change > since
                    }
                })
                .collect();
            evs.sort_by_key(|e| (e.change, e.start_ms));
            evs.into_iter()
                .map(|e| {
                    let id = if pf.immutable { &e.immutable_id } else { &e.graph_id };
                    if e.cancelled || !e.overlaps(from, to) {
                        json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}})
                    } else {
                        let mut v = graph_event(e, &p.user, &tz, pf.immutable);
                        v["@odata.type"] = json!("#microsoft.graph.event");
                        v
                    }
                })
                .collect()
        });
        let value: Vec<Value> = items.iter().skip(off).take(page).cloned().collect();
        let mut body = json!({
            "@odata.context": format!("{base}/v1.0/$metadata#Collection(event)"),
            "value": value,
        });
        if off + page < items.len() {
            let tok = SyncToken { owner: owner.clone(), change: since, from: wf, to: wt }.encode();
            body["@odata.nextLink"] =
                json!(format!("{base}{path}?$skiptoken={tok}.{snap}.{}", off + page));
        } else {
            let tok = SyncToken { owner: owner.clone(), change: snap, from: wf, to: wt }.encode();
            body["@odata.deltaLink"] = json!(format!("{base}{path}?$deltatoken={tok}"));
        }
        graph_applied(json_response(StatusCode::OK, body), &pf)
    })
    .await
}

fn graph_attendees(v: &Value) -> Result<Vec<Attendee>, String> {
    let Some(arr) = v.as_array() else {
        return Err("attendees must be an array".into());
    };
    arr.iter()
        .map(|a| {
            let ea = get_ci(a, "emailAddress").ok_or("attendee without emailAddress")?;
            let email = get_ci(ea, "address")
                .and_then(Value::as_str)
                .ok_or("attendee without address")?;
            let kind = get_ci(a, "type")
                .and_then(Value::as_str)
                .unwrap_or("required")
                .to_string();
            if !["required", "optional", "resource"].contains(&kind.as_str()) {
                return Err(format!("invalid attendee type '{kind}'"));
            }
            Ok(Attendee {
                email: email.to_string(),
                name: str_of(get_ci(ea, "name")),
                kind,
            })
        })
        .collect()
}

/// Applies Graph event properties in `b` to `e`.
fn apply_graph(e: &mut Event, b: &Value, owner: &str) -> Result<(), String> {
    if let Some(v) = get_ci(b, "subject") {
        e.subject = v.as_str().unwrap_or_default().to_string();
    }
    if let Some(v) = get_ci(b, "body") {
        e.body = str_of(get_ci(v, "content")).unwrap_or_default();
        e.body_type = str_of(get_ci(v, "contentType"))
            .unwrap_or_else(|| "text".into())
            .to_ascii_lowercase();
    }
    if let Some(v) = get_ci(b, "start") {
        let (ms, tz) = graph_dt(Some(v)).ok_or("invalid start")?;
        e.start_ms = ms;
        e.time_zone = Some(tz);
    }
    if let Some(v) = get_ci(b, "end") {
        let (ms, _) = graph_dt(Some(v)).ok_or("invalid end")?;
        e.end_ms = ms;
    }
    if let Some(v) = get_ci(b, "location") {
        e.location = str_of(get_ci(v, "displayName")).filter(|s| !s.is_empty());
    }
    if let Some(v) = get_ci(b, "attendees") {
        e.attendees = graph_attendees(v)?;
    }
    if let Some(v) = get_ci(b, "showAs").and_then(Value::as_str) {
        if !RANK.iter().any(|(s, _, _)| *s == v) && v != "unknown" {
            return Err(format!("invalid showAs '{v}'"));
        }
        e.show_as = v.to_string();
    }
    if let Some(v) = get_ci(b, "sensitivity").and_then(Value::as_str) {
        e.is_private = v == "private" || v == "confidential";
    }
    if let Some(v) = get_ci(b, "isOnlineMeeting").and_then(Value::as_bool) {
        if v && e.online_url.is_none() {
            e.online_url = Some(format!(
                "https://teams.microsoft.com/l/meetup-join/19%3ameeting_{}%40thread.v2/0?context=%7b%22Tid%22%3a%22{owner}%22%7d",
                random_token(24)
            ));
        } else if !v {
            e.online_url = None;
        }
    }
    if e.end_ms < e.start_ms {
        return Err("The end time must not be before the start time.".into());
    }
    Ok(())
}

fn emails(a: &[Attendee]) -> Vec<String> {
    a.iter().map(|x| x.email.clone()).collect()
}

async fn graph_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let base = link_base(&headers);
    let h2 = headers.clone();
    call(
        &app,
        "graph.events.create",
        &headers,
        graph_needs(CAL_WRITE),
        |p| {
            let b = match parse_body(&body) {
                Ok(b) => b,
                Err(e) => {
                    return graph_bad_request(
                        app.now(),
                        &h2,
                        "BadRequest",
                        &format!("Unable to read JSON request payload: {e}"),
                    );
                }
            };
            if get_ci(&b, "start").is_none() || get_ci(&b, "end").is_none() {
                return graph_bad_request(
                    app.now(),
                    &h2,
                    "ErrorInvalidRequest",
                    "Your request can't be completed. An event needs a start and an end time.",
                );
            }
            let owner = owner_key(p);
            let now = app.now();
            let txn = str_of(get_ci(&b, "transactionId"));
            let repeat = app.read(|s| s.settings.graph_transaction_id_repeat.clone());
            let context = format!(
                "{base}/v1.0/$metadata#users('{}')/events/$entity",
                url_enc(&p.user.email)
            );
            if let Some(t) = &txn
                && repeat != "ignore"
            {
                let existing = app.cal(|c| {
                    c.of(&owner)
                        .events
                        .iter()
                        .find(|e| e.transaction_id.as_deref() == Some(t.as_str()))
                        .cloned()
                });
                if let Some(e) = existing {
                    if repeat == "conflict" {
                        return graph_error(
                            StatusCode::CONFLICT,
                            "ErrorDuplicateTransactionId",
                            "An event with the same transactionId already exists.",
                            &h2,
                            now,
                        );
                    }
                    let tz = pf
                        .tz
                        .clone()
                        .or(e.time_zone.clone())
                        .unwrap_or_else(|| "UTC".into());
                    let mut v = graph_event(&e, &p.user, &tz, pf.immutable);
                    v["@odata.context"] = json!(context);
                    return graph_applied(json_response(StatusCode::CREATED, v), &pf);
                }
            }
            let mut e = blank_event(now * 1000);
            e.transaction_id = txn;
            if let Err(msg) = apply_graph(&mut e, &b, &p.user.org) {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidRequest", &msg);
            }
            e.source = "graph".into();
            e.ical_uid = outlook_ical_uid();
            let e = app.cal(|c| {
                let (gid, iid) = c.graph_ids(&owner);
                e.graph_id = gid;
                e.immutable_id = iid;
                e.id = random_base32hex(26);
                let cal = c.of(&owner);
                e.change = cal.bump();
                cal.events.push(e.clone());
                c.invite(
                    &e,
                    &owner,
                    &emails(&e.attendees),
                    "invite",
                    "microsoft",
                    now,
                );
                e
            });
            let tz = pf
                .tz
                .clone()
                .or(e.time_zone.clone())
                .unwrap_or_else(|| "UTC".into());
            let mut v = graph_event(&e, &p.user, &tz, pf.immutable);
            v["@odata.context"] = json!(context);
            let mut r = graph_applied(json_response(StatusCode::CREATED, v), &pf);
            if let Ok(loc) = HeaderValue::from_str(&format!(
                "{base}/v1.0/me/events/{}",
                if pf.immutable {
                    &e.immutable_id
                } else {
                    &e.graph_id
                }
            )) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        },
    )
    .await
}

fn graph_id_ok(id: &str) -> bool {
    id.starts_with("AAMkAG") || id.starts_with("AAkALg")
}

async fn graph_get(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let base = link_base(&headers);
    let h2 = headers.clone();
    call(
        &app,
        "graph.events.get",
        &headers,
        graph_needs(CAL_READ),
        |p| {
            if !graph_id_ok(&id) {
                return graph_bad_request(
                    app.now(),
                    &h2,
                    "ErrorInvalidIdMalformed",
                    "Id is malformed.",
                );
            }
            let owner = owner_key(p);
            let Some(e) = app
                .cal(|c| {
                    let cal = c.of(&owner);
                    cal.find(&id).map(|i| cal.events[i].clone())
                })
                .filter(|e| !e.cancelled)
            else {
                return graph_not_found(app.now(), &h2);
            };
            let tz = pf.tz.clone().unwrap_or_else(|| "UTC".into());
            let mut v = select(
                graph_event(&e, &p.user, &tz, pf.immutable),
                parse_select(&params).as_deref(),
            );
            if let Value::Object(m) = &mut v {
                let mut out = Map::new();
                out.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "{base}/v1.0/$metadata#users('{}')/events/$entity",
                        url_enc(&p.user.email)
                    )),
                );
                out.extend(std::mem::take(m));
                v = Value::Object(out);
            }
            graph_applied(json_response(StatusCode::OK, v), &pf)
        },
    )
    .await
}

async fn graph_patch(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pf = GraphPrefer::only(&headers, PreferScope::Calendar);
    let base = link_base(&headers);
    let h2 = headers.clone();
    call(
        &app,
        "graph.events.update",
        &headers,
        graph_needs(CAL_WRITE),
        |p| {
            if !graph_id_ok(&id) {
                return graph_bad_request(
                    app.now(),
                    &h2,
                    "ErrorInvalidIdMalformed",
                    "Id is malformed.",
                );
            }
            let b = match parse_body(&body) {
                Ok(b) => b,
                Err(e) => {
                    return graph_bad_request(
                        app.now(),
                        &h2,
                        "BadRequest",
                        &format!("Unable to read JSON request payload: {e}"),
                    );
                }
            };
            let owner = owner_key(p);
            let now = app.now();
            let res: Result<Event, Option<String>> = app.cal(|c| {
                let cal = c.of(&owner);
                let Some(i) = cal.find(&id).filter(|i| !cal.events[*i].cancelled) else {
                    return Err(None);
                };
                let mut e = cal.events[i].clone();
                let before = emails(&e.attendees);
                apply_graph(&mut e, &b, &p.user.org).map_err(Some)?;
                e.sequence += 1;
                e.updated_ms = now * 1000;
                e.change = cal.bump();
                cal.events[i] = e.clone();
                let after = emails(&e.attendees);
                let removed: Vec<String> =
                    before.into_iter().filter(|x| !after.contains(x)).collect();
                c.invite(&e, &owner, &after, "update", "microsoft", now);
                c.invite(&e, &owner, &removed, "cancel", "microsoft", now);
                Ok(e)
            });
            match res {
                Err(None) => graph_not_found(app.now(), &h2),
                Err(Some(msg)) => graph_bad_request(app.now(), &h2, "ErrorInvalidRequest", &msg),
                Ok(e) => {
                    let tz = pf.tz.clone().unwrap_or_else(|| "UTC".into());
                    let mut v = graph_event(&e, &p.user, &tz, pf.immutable);
                    v["@odata.context"] = json!(format!(
                        "{base}/v1.0/$metadata#users('{}')/events/$entity",
                        url_enc(&p.user.email)
                    ));
                    graph_applied(json_response(StatusCode::OK, v), &pf)
                }
            }
        },
    )
    .await
}

async fn graph_delete(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let h2 = headers.clone();
    call(
        &app,
        "graph.events.delete",
        &headers,
        graph_needs(CAL_WRITE),
        |p| {
            if !graph_id_ok(&id) {
                return graph_bad_request(
                    app.now(),
                    &h2,
                    "ErrorInvalidIdMalformed",
                    "Id is malformed.",
                );
            }
            let owner = owner_key(p);
            let now = app.now();
            let ok = app.cal(|c| cancel_event(c, &owner, &id, None, "microsoft", now));
            if ok == Cancel::Done {
                StatusCode::NO_CONTENT.into_response()
            } else {
                graph_not_found(app.now(), &h2)
            }
        },
    )
    .await
}

#[derive(PartialEq, Eq)]
enum Cancel {
    Done,
    Missing,
    AlreadyDeleted,
}

/// Cancels an event (tombstone, sequence + 1) and records cancellations to `notify` (all attendees when
/// `None`).
fn cancel_event(
    c: &mut crate::calendar::Calendars,
    owner: &str,
    id: &str,
    notify: Option<&dyn Fn(&str) -> bool>,
    via: &str,
    now: i64,
) -> Cancel {
    let cal = c.of(owner);
    let Some(i) = cal.find(id) else {
        return Cancel::Missing;
    };
    if cal.events[i].cancelled {
        return Cancel::AlreadyDeleted;
    }
    let change = cal.bump();
    let e = &mut cal.events[i];
    e.cancelled = true;
    e.sequence += 1;
    e.updated_ms = now * 1000;
    e.change = change;
    let e = e.clone();
    let to: Vec<String> = emails(&e.attendees)
        .into_iter()
        .filter(|a| notify.is_none_or(|f| f(a)))
        .collect();
    c.invite(&e, owner, &to, "cancel", via, now);
    Cancel::Done
}

// ---------------------------------------------------------------------------------------------------------
// Google Calendar
// ---------------------------------------------------------------------------------------------------------

fn own_calendar(p: &Principal, cid: &str) -> bool {
    cid == "primary" || cid.eq_ignore_ascii_case(&p.user.email)
}

/// The Google Event resource (`minimal`: the few fields of a cancelled event in a sync list).
fn google_event(e: &Event, owner: &User, minimal: bool) -> Value {
    let etag = format!("\"{}\"", e.updated_ms * 1000 + (e.change % 1000) as i64);
    if minimal && e.cancelled {
        return json!({"kind": "calendar#event", "etag": etag, "id": e.id, "status": "cancelled"});
    }
    let mut dt_start = json!({"dateTime": google_local(e.start_ms, e.time_zone.as_deref())});
    let mut dt_end = json!({"dateTime": google_local(e.end_ms, e.time_zone.as_deref())});
    if let Some(tz) = &e.time_zone {
        dt_start["timeZone"] = json!(tz);
        dt_end["timeZone"] = json!(tz);
    }
    let mut v = json!({
        "kind": "calendar#event",
        "etag": etag,
        "id": e.id,
        "status": if e.cancelled { "cancelled" } else { "confirmed" },
        "htmlLink": format!("https://www.google.com/calendar/event?eid={}", URL_SAFE_NO_PAD.encode(format!("{} {}", e.id, owner.email))),
        "created": rfc3339_ms(e.created_ms, true),
        "updated": rfc3339_ms(e.updated_ms, true),
        "summary": e.subject,
        "creator": {"email": owner.email, "self": true},
        "organizer": {"email": owner.email, "self": true},
        "start": dt_start,
        "end": dt_end,
        "iCalUID": e.ical_uid,
        "sequence": e.sequence,
        "reminders": {"useDefault": true},
        "eventType": "default",
    });
    if !e.body.is_empty() {
        v["description"] = json!(e.body);
    }
    if let Some(l) = &e.location {
        v["location"] = json!(l);
    }
    if e.show_as == "free" {
        v["transparency"] = json!("transparent");
    }
    if e.is_private {
        v["visibility"] = json!("private");
    }
    if !e.attendees.is_empty() {
        v["attendees"] = json!(
            e.attendees
                .iter()
                .map(|a| {
                    let mut x = json!({"email": a.email, "responseStatus": "needsAction"});
                    if let Some(n) = &a.name {
                        x["displayName"] = json!(n);
                    }
                    if a.kind == "optional" {
                        x["optional"] = json!(true);
                    }
                    x
                })
                .collect::<Vec<_>>()
        );
    }
    if let Some(url) = &e.online_url {
        let code = url.rsplit('/').next().unwrap_or_default().to_string();
        v["hangoutLink"] = json!(url);
        let mut cd = json!({
            "entryPoints": [{"entryPointType": "video", "uri": url, "label": url.trim_start_matches("https://")}],
            "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet",
                "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png"},
            "conferenceId": code,
        });
        if let Some(rid) = &e.conference_request_id {
            cd["createRequest"] = json!({"requestId": rid, "conferenceSolutionKey": {"type": "hangoutsMeet"},
                "status": {"statusCode": "success"}});
        }
        v["conferenceData"] = cd;
    }
    if !e.extended_private.is_empty() || !e.extended_shared.is_empty() {
        let mut ep = json!({});
        if !e.extended_private.is_empty() {
            ep["private"] = Value::Object(e.extended_private.clone());
        }
        if !e.extended_shared.is_empty() {
            ep["shared"] = Value::Object(e.extended_shared.clone());
        }
        v["extendedProperties"] = ep;
    }
    v
}

/// Google `EventDateTime` in a request body.
fn google_dt(v: &Value) -> Option<(i64, Option<String>)> {
    let tz = str_of(v.get("timeZone"));
    if let Some(dt) = v.get("dateTime").and_then(Value::as_str) {
        return parse_local(dt, tz.as_deref().unwrap_or("UTC")).map(|ms| (ms, tz));
    }
    let d = v.get("date").and_then(Value::as_str)?;
    parse_local(&format!("{d}T00:00:00"), tz.as_deref().unwrap_or("UTC")).map(|ms| (ms, tz))
}

/// What `sendUpdates` (or the deprecated `sendNotifications`) asks for: `all`, `externalOnly` or `none`.
fn send_updates(params: &Params) -> Result<String, Response> {
    match params.get("sendUpdates") {
        Some(v @ ("all" | "externalOnly" | "none")) => Ok(v.to_string()),
        Some(other) => Err(cal_invalid(
            &format!("Invalid value '{other}' for sendUpdates."),
            Some("sendUpdates"),
        )),
        None => Ok(if params.get("sendNotifications") == Some("true") {
            "all".into()
        } else {
            "none".into()
        }),
    }
}

fn conference_version(params: &Params) -> Result<i64, Response> {
    match params.get("conferenceDataVersion") {
        None => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=1).contains(n))
            .ok_or_else(|| {
                cal_invalid(
                    &format!("Invalid conference data version: {v}."),
                    Some("conferenceDataVersion"),
                )
            }),
    }
}

fn recipients(mode: &str, owner: &str, to: &[String]) -> Vec<String> {
    let domain = owner
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    to.iter()
        .filter(|a| !a.eq_ignore_ascii_case(owner))
        .filter(|a| match mode {
            "all" => true,
            "externalOnly" => !a.to_ascii_lowercase().ends_with(&format!("@{domain}")),
            _ => false,
        })
        .cloned()
        .collect()
}

/// Applies Google Event fields in `b` to `e`.
fn apply_google(e: &mut Event, b: &Value, conference: i64) -> Result<(), Response> {
    if let Some(v) = b.get("summary") {
        e.subject = v.as_str().unwrap_or_default().to_string();
    }
    if let Some(v) = b.get("description") {
        e.body = v.as_str().unwrap_or_default().to_string();
    }
    if let Some(v) = b.get("location") {
        e.location = v.as_str().map(str::to_string).filter(|s| !s.is_empty());
    }
    if let Some(v) = b.get("start") {
        let (ms, tz) = google_dt(v).ok_or_else(|| cal_invalid("Invalid start time.", None))?;
        e.start_ms = ms;
        e.time_zone = tz;
    }
    if let Some(v) = b.get("end") {
        let (ms, _) = google_dt(v).ok_or_else(|| cal_invalid("Invalid end time.", None))?;
        e.end_ms = ms;
    }
    if let Some(v) = b.get("attendees") {
        let arr = v
            .as_array()
            .ok_or_else(|| cal_invalid("Invalid attendees.", None))?;
        let mut out = Vec::new();
        for a in arr {
            let email = a
                .get("email")
                .and_then(Value::as_str)
                .filter(|s| s.contains('@'))
                .ok_or_else(|| {
                    cal_error(
                        StatusCode::BAD_REQUEST,
                        "required",
                        "global",
                        "Missing attendee email.",
                        None,
                    )
                })?;
            out.push(Attendee {
                email: email.to_string(),
                name: str_of(a.get("displayName")),
                kind: if a.get("optional").and_then(Value::as_bool) == Some(true) {
                    "optional".into()
                } else if a.get("resource").and_then(Value::as_bool) == Some(true) {
                    "resource".into()
                } else {
                    "required".into()
                },
            });
        }
        e.attendees = out;
    }
    if let Some(v) = b.get("transparency").and_then(Value::as_str) {
        e.show_as = if v == "transparent" { "free" } else { "busy" }.into();
    }
    if let Some(v) = b.get("visibility").and_then(Value::as_str) {
        e.is_private = v == "private" || v == "confidential";
    }
    if let Some(ep) = b.get("extendedProperties") {
        if let Some(m) = ep.get("private").and_then(Value::as_object) {
            e.extended_private.extend(m.clone());
        }
        if let Some(m) = ep.get("shared").and_then(Value::as_object) {
            e.extended_shared.extend(m.clone());
        }
    }
    if conference == 1
        && let Some(cr) = b.get("conferenceData").and_then(|c| c.get("createRequest"))
        && e.online_url.is_none()
    {
        let kind = cr
            .get("conferenceSolutionKey")
            .and_then(|k| k.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("hangoutsMeet");
        if kind != "hangoutsMeet" {
            return Err(cal_invalid("Invalid conference type value.", None));
        }
        e.conference_request_id = str_of(cr.get("requestId"));
        e.online_url = Some(format!("https://meet.google.com/{}", meet_code()));
    }
    if e.end_ms < e.start_ms {
        return Err(cal_error(
            StatusCode::BAD_REQUEST,
            "timeRangeEmpty",
            "calendar",
            "The specified time range is empty.",
            Some(("parameter", "end.dateTime")),
        ));
    }
    Ok(())
}

async fn google_freebusy(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(&app, "calendar.freebusy.query", &headers, Needs::Google, |p| {
        let b = match parse_body(&body) {
            Ok(b) => b,
            Err(e) => return cal_error(StatusCode::BAD_REQUEST, "parseError", "global", &format!("Parse Error: {e}"), None),
        };
        let tmin = b.get("timeMin").and_then(Value::as_str).and_then(|s| parse_local(s, "UTC"));
        let tmax = b.get("timeMax").and_then(Value::as_str).and_then(|s| parse_local(s, "UTC"));
        let (Some(from), Some(to)) = (tmin, tmax) else {
            return cal_error(StatusCode::BAD_REQUEST, "required", "global",
                if tmin.is_none() { "Missing timeMin parameter." } else { "Missing timeMax parameter." }, None);
        };
        if to <= from {
            return cal_error(StatusCode::BAD_REQUEST, "timeRangeEmpty", "calendar",
                "The specified time range is empty.", Some(("parameter", "timeMax")));
        }
        let max = b.get("calendarExpansionMax").and_then(Value::as_u64).unwrap_or(50);
        if max > 50 {
            return cal_invalid("Invalid value for calendarExpansionMax: must be at most 50.", Some("calendarExpansionMax"));
        }
        let items = b.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut cals = Map::new();
        for (i, it) in items.iter().enumerate() {
            let id = it.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            if i as u64 >= max {
                cals.insert(id, json!({"errors": [{"domain": "global", "reason": "tooManyCalendarsRequested"}], "busy": []}));
                continue;
            }
            let target = if own_calendar(p, &id) {
                Some(p.user.email.clone())
            } else {
                app.read(|s| {
                    s.users
                        .iter()
                        .find(|u| u.provider == Provider::Google && u.org == p.user.org && u.email.eq_ignore_ascii_case(&id))
                        .map(|u| u.email.clone())
                })
            };
            let Some(who) = target else {
                cals.insert(id, json!({"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}));
                continue;
            };
            let mut blocks: Vec<(i64, i64)> = app.cal(|c| {
                c.of(&who)
                    .live_in(from, to)
                    .into_iter()
                    .filter(|e| e.show_as == "busy" || e.show_as == "oof")
                    .map(|e| (e.start_ms.max(from), e.end_ms.min(to)))
                    .collect()
            });
            blocks.sort();
            let mut merged: Vec<(i64, i64)> = Vec::new();
            for (a, z) in blocks {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(z),
                    _ => merged.push((a, z)),
                }
            }
            let busy: Vec<Value> = merged
                .iter()
                .map(|(a, z)| json!({"start": rfc3339_ms(*a, false), "end": rfc3339_ms(*z, false)}))
                .collect();
            cals.insert(id, json!({"busy": busy}));
        }
        json_response(
            StatusCode::OK,
            json!({
                "kind": "calendar#freeBusy",
                "timeMin": rfc3339_ms(from, true),
                "timeMax": rfc3339_ms(to, true),
                "calendars": cals,
            }),
        )
    })
    .await
}

async fn google_insert(
    State(app): State<App>,
    Path(cid): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(
        &app,
        "calendar.events.insert",
        &headers,
        Needs::Google,
        |p| {
            if !own_calendar(p, &cid) {
                return cal_not_found();
            }
            let mode = match send_updates(&params) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let conf = match conference_version(&params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let b = match parse_body(&body) {
                Ok(b) => b,
                Err(e) => {
                    return cal_error(
                        StatusCode::BAD_REQUEST,
                        "parseError",
                        "global",
                        &format!("Parse Error: {e}"),
                        None,
                    );
                }
            };
            if b.get("start").is_none() {
                return cal_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "global",
                    "Missing start time.",
                    None,
                );
            }
            if b.get("end").is_none() {
                return cal_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "global",
                    "Missing end time.",
                    None,
                );
            }
            let client_id = str_of(b.get("id"));
            if let Some(id) = &client_id
                && !valid_google_id(id)
            {
                return cal_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "global",
                    "Invalid resource id value.",
                    None,
                );
            }
            let owner = owner_key(p);
            let now = app.now();
            let mut e = blank_event(now * 1000);
            if let Err(r) = apply_google(&mut e, &b, conf) {
                return r;
            }
            e.source = "google".into();
            let res = app.cal(|c| {
                if let Some(id) = &client_id
                    && c.of(&owner).find(id).is_some()
                {
                    return None;
                }
                let (gid, iid) = c.graph_ids(&owner);
                e.graph_id = gid;
                e.immutable_id = iid;
                e.id = client_id.clone().unwrap_or_else(|| random_base32hex(26));
                e.ical_uid = match str_of(b.get("iCalUID")) {
                    Some(u) if client_id.is_none() => u,
                    _ => format!("{}@google.com", e.id),
                };
                let cal = c.of(&owner);
                e.change = cal.bump();
                cal.events.push(e.clone());
                let to = recipients(&mode, &owner, &emails(&e.attendees));
                c.invite(&e, &owner, &to, "invite", "google", now);
                Some(e)
            });
            match res {
                None => cal_error(
                    StatusCode::CONFLICT,
                    "duplicate",
                    "global",
                    "The requested identifier already exists.",
                    None,
                ),
                Some(e) => json_response(StatusCode::OK, google_event(&e, &p.user, false)),
            }
        },
    )
    .await
}

async fn google_get(
    State(app): State<App>,
    Path((cid, eid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(&app, "calendar.events.get", &headers, Needs::Google, |p| {
        if !own_calendar(p, &cid) {
            return cal_not_found();
        }
        let owner = owner_key(p);
        match app.cal(|c| {
            let cal = c.of(&owner);
            cal.find(&eid).map(|i| cal.events[i].clone())
        }) {
            Some(e) => json_response(StatusCode::OK, google_event(&e, &p.user, false)),
            None => cal_not_found(),
        }
    })
    .await
}

fn deleted() -> Response {
    cal_error(
        StatusCode::GONE,
        "deleted",
        "global",
        "Resource has been deleted",
        None,
    )
}

async fn google_patch(
    State(app): State<App>,
    Path((cid, eid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(
        &app,
        "calendar.events.patch",
        &headers,
        Needs::Google,
        |p| {
            if !own_calendar(p, &cid) {
                return cal_not_found();
            }
            let mode = match send_updates(&params) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let conf = match conference_version(&params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let b = match parse_body(&body) {
                Ok(b) => b,
                Err(e) => {
                    return cal_error(
                        StatusCode::BAD_REQUEST,
                        "parseError",
                        "global",
                        &format!("Parse Error: {e}"),
                        None,
                    );
                }
            };
            let owner = owner_key(p);
            let now = app.now();
            let res = app.cal(|c| {
                let cal = c.of(&owner);
                let Some(i) = cal.find(&eid) else {
                    return Err(cal_not_found());
                };
                if cal.events[i].cancelled {
                    return Err(deleted());
                }
                let mut e = cal.events[i].clone();
                let before = emails(&e.attendees);
                apply_google(&mut e, &b, conf)?;
                e.sequence += 1;
                e.updated_ms = now * 1000;
                e.change = cal.bump();
                cal.events[i] = e.clone();
                let after = emails(&e.attendees);
                let removed: Vec<String> =
                    before.into_iter().filter(|x| !after.contains(x)).collect();
                c.invite(
                    &e,
                    &owner,
                    &recipients(&mode, &owner, &after),
                    "update",
                    "google",
                    now,
                );
                c.invite(
                    &e,
                    &owner,
                    &recipients(&mode, &owner, &removed),
                    "cancel",
                    "google",
                    now,
                );
                Ok(e)
            });
            match res {
                Ok(e) => json_response(StatusCode::OK, google_event(&e, &p.user, false)),
                Err(r) => r,
            }
        },
    )
    .await
}

async fn google_delete(
    State(app): State<App>,
    Path((cid, eid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(
        &app,
        "calendar.events.delete",
        &headers,
        Needs::Google,
        |p| {
            if !own_calendar(p, &cid) {
                return cal_not_found();
            }
            let mode = match send_updates(&params) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let owner = owner_key(p);
            let now = app.now();
            let notify = |a: &str| !recipients(&mode, &owner, &[a.to_string()]).is_empty();
            match app.cal(|c| cancel_event(c, &owner, &eid, Some(&notify), "google", now)) {
                Cancel::Done => StatusCode::NO_CONTENT.into_response(),
                Cancel::Missing => cal_not_found(),
                Cancel::AlreadyDeleted => deleted(),
            }
        },
    )
    .await
}

const SYNC_EXCLUSIVE: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

fn full_sync_required() -> Response {
    cal_error(
        StatusCode::GONE,
        "fullSyncRequired",
        "calendar",
        "Sync token is no longer valid, a full sync is required.",
        Some(("parameter", "syncToken")),
    )
}

async fn google_list(
    State(app): State<App>,
    Path(cid): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(&app, "calendar.events.list", &headers, Needs::Google, |p| {
        if !own_calendar(p, &cid) {
            return cal_not_found();
        }
        let owner = owner_key(p);
        let max = match params.get("maxResults") {
            None => 250,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(2500),
                _ => {
                    return cal_invalid(
                        &format!("Invalid value '{v}' for maxResults."),
                        Some("maxResults"),
                    );
                }
            },
        };
        let offset: usize = match params.get("pageToken") {
            None => 0,
            Some(t) => match URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("page:").and_then(|n| n.parse().ok()))
            {
                Some(n) => n,
                None => return cal_invalid("Invalid page token.", Some("pageToken")),
            },
        };
        let show_deleted = params.get("showDeleted") == Some("true");
        let sync = match params.get("syncToken") {
            None => None,
            Some(t) => {
                if let Some(bad) = SYNC_EXCLUSIVE.iter().find(|k| params.get(k).is_some()) {
                    return cal_invalid(
                        &format!("The syncToken parameter cannot be combined with {bad}."),
                        Some("syncToken"),
                    );
                }
                let Some(tok) = SyncToken::decode(t).filter(|x| x.owner == owner) else {
                    return cal_invalid("Invalid sync token value.", Some("syncToken"));
                };
                if tok.change < app.cal(|c| c.of(&owner).sync_floor) {
                    return full_sync_required();
                }
                Some(tok.change)
            }
        };
        let order = params.get("orderBy");
        match order {
            None | Some("updated") => {}
            Some("startTime") if params.get("singleEvents") == Some("true") => {}
            Some("startTime") => {
                return cal_invalid(
                    "The requested ordering is not available for the particular query.",
                    Some("orderBy"),
                );
            }
            Some(o) => {
                return cal_invalid(
                    &format!("Invalid value '{o}' for orderBy."),
                    Some("orderBy"),
                );
            }
        }
        let time_min = qv(&params, "timeMin").map(|s| parse_local(&s, "UTC"));
        let time_max = qv(&params, "timeMax").map(|s| parse_local(&s, "UTC"));
        let updated_min = qv(&params, "updatedMin").map(|s| parse_local(&s, "UTC"));
        if matches!(time_min, Some(None))
            || matches!(time_max, Some(None))
            || matches!(updated_min, Some(None))
        {
            return cal_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "global",
                "Bad Request",
                None,
            );
        }
        let (time_min, time_max, updated_min) = (
            time_min.flatten(),
            time_max.flatten(),
            updated_min.flatten(),
        );
        let q_text = params.get("q").map(str::to_lowercase);
        let ical = params.get("iCalUID");
        let props: Vec<(String, String)> = params
            .all("privateExtendedProperty")
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let (mut events, change) = app.cal(|c| {
            let cal: &Calendar = c.of(&owner);
            let evs: Vec<Event> = cal
                .events
                .iter()
                .filter(|e| match sync {
                    Some(since) => e.change > since,
                    None => {
                        (show_deleted || !e.cancelled)
                            && time_min.is_none_or(|t| e.end_ms > t)
                            && time_max.is_none_or(|t| e.start_ms < t)
                            && updated_min.is_none_or(|t| e.updated_ms >= t)
                            && q_text.as_ref().is_none_or(|q| {
                                e.subject.to_lowercase().contains(q)
                                    || e.body.to_lowercase().contains(q)
                                    || e.location
                                        .as_deref()
                                        .unwrap_or("")
                                        .to_lowercase()
                                        .contains(q)
                            })
                            && ical.is_none_or(|u| e.ical_uid == u)
                            && props.iter().all(|(k, v)| {
                                e.extended_private.get(k).and_then(Value::as_str) == Some(v)
                            })
                    }
                })
                .cloned()
                .collect();
            (evs, cal.change)
        });
        if order == Some("updated") {
            events.sort_by_key(|e| (e.updated_ms, e.change));
        } else {
            events.sort_by_key(|e| (e.start_ms, e.change));
        }
        let updated = events.iter().map(|e| e.updated_ms).max().unwrap_or(0);
        let items: Vec<Value> = events
            .iter()
            .skip(offset)
            .take(max)
            .map(|e| google_event(e, &p.user, true))
            .collect();
        let mut body = json!({
            "kind": "calendar#events",
            "etag": format!("\"p3{change}\""),
            "summary": p.user.email,
            "updated": rfc3339_ms(updated.max(0), true),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": items,
        });
        if offset + max < events.len() {
            body["nextPageToken"] = json!(URL_SAFE_NO_PAD.encode(format!("page:{}", offset + max)));
        } else {
            body["nextSyncToken"] = json!(
                SyncToken {
                    owner: owner.clone(),
                    change,
                    from: None,
                    to: None
                }
                .encode()
            );
        }
        json_response(StatusCode::OK, body)
    })
    .await
}

async fn google_watch(
    State(app): State<App>,
    Path(cid): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(&app, "calendar.events.watch", &headers, Needs::Google, |p| {
        if !own_calendar(p, &cid) {
            return cal_not_found();
        }
        let b = match parse_body(&body) {
            Ok(b) => b,
            Err(e) => return cal_error(StatusCode::BAD_REQUEST, "parseError", "global", &format!("Parse Error: {e}"), None),
        };
        let (Some(id), Some(address)) = (str_of(b.get("id")), str_of(b.get("address"))) else {
            return cal_error(StatusCode::BAD_REQUEST, "required", "global", "Required", None);
        };
        match b.get("type").and_then(Value::as_str) {
            Some("web_hook" | "webhook") => {}
            _ => return cal_invalid("Invalid channel type.", None),
        }
        if !address.starts_with("https://") && !address.starts_with("http://") {
            return cal_error(StatusCode::BAD_REQUEST, "push.webhookUrlUnauthorized", "global",
                &format!("Unauthorized WebHook callback channel: {address}"), None);
        }
        let now_ms = app.now() * 1000;
        let expiration = b
            .get("expiration")
            .and_then(|v| v.as_str().and_then(|s| s.parse::<i64>().ok()).or(v.as_i64()))
            .filter(|x| *x > now_ms)
            .map_or(now_ms + 7 * DAY_MS, |x| x.min(now_ms + 30 * DAY_MS));
        let ch = Channel {
            id: id.clone(),
            resource_id: random_token(20),
            address,
            token: str_of(b.get("token")),
            expiration_ms: expiration,
        };
        let owner = owner_key(p);
        app.cal(|c| c.of(&owner).channels.push(ch.clone()));
        let mut v = json!({
            "kind": "api#channel",
            "id": ch.id,
            "resourceId": ch.resource_id,
            "resourceUri": format!("https://www.googleapis.com/calendar/v3/calendars/{}/events?alt=json", url_enc(&cid)),
            "expiration": ch.expiration_ms.to_string(),
        });
        if let Some(t) = &ch.token {
            v["token"] = json!(t);
        }
        json_response(StatusCode::OK, v)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::zone;

    #[test]
    fn availability_digits_rank_oof_over_busy_over_tentative() {
        let mut a = blank_event(0);
        a.start_ms = 0;
        a.end_ms = 10;
        a.show_as = "tentative".into();
        let mut b = a.clone();
        b.show_as = "oof".into();
        assert_eq!(view_digit(&[&a], 0, 10), '1');
        assert_eq!(view_digit(&[&a, &b], 0, 10), '3');
        assert_eq!(view_digit(&[&a], 10, 20), '0');
        assert!(zone("Eastern Standard Time").is_some());
    }

    #[test]
    fn external_only_skips_the_organizers_domain() {
        let to = vec![
            "x@globex.example".to_string(),
            "jane@example.com".to_string(),
        ];
        assert_eq!(
            recipients("externalOnly", "hank@globex.example", &to),
            ["jane@example.com"]
        );
        assert_eq!(recipients("none", "hank@globex.example", &to).len(), 0);
        assert_eq!(recipients("all", "hank@globex.example", &to).len(), 2);
    }
}
