//! Control API for calendars (`/_sandbox/calendars/...`, `/_sandbox/invitations`): seed busy events (given or
//! generated from a seed), list events, drop a calendar, expire sync and delta tokens, list recorded
//! invitations.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::calendar::{
    Attendee, Event, blank_event, outlook_ical_uid, parse_local, random_base32hex, rfc3339_ms,
};
use crate::mailgen::Rng;
use crate::scenario::Provider;
use crate::state::User;
use crate::wire::{Params, json_response};

/// Routes under `/_sandbox/calendars/` and `/_sandbox/invitations`.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/_sandbox/calendars/{user}",
            get(summary).delete(remove_calendar),
        )
        .route(
            "/_sandbox/calendars/{user}/events",
            get(list_events).post(seed_events),
        )
        .route(
            "/_sandbox/calendars/{user}/sync-tokens/expire",
            post(expire_tokens),
        )
        .route(
            "/_sandbox/invitations",
            get(list_invitations).delete(clear_invitations),
        )
}

type Reply = Result<Json<Value>, Response>;

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"error": msg.into()}))
}

fn user(app: &App, email: &str) -> Result<User, Response> {
    app.read(|s| s.user(email).cloned())
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("unknown user {email}")))
}

fn time(s: &str) -> Result<i64, Response> {
    parse_local(s, "UTC")
        .or_else(|| crate::mailview::parse_ts_ms(s))
        .ok_or_else(|| bad(StatusCode::BAD_REQUEST, format!("bad time {s}")))
}

fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id,
        "graph_id": e.graph_id,
        "immutable_id": e.immutable_id,
        "ical_uid": e.ical_uid,
        "subject": e.subject,
        "start": rfc3339_ms(e.start_ms, false),
        "end": rfc3339_ms(e.end_ms, false),
        "show_as": e.show_as,
        "is_private": e.is_private,
        "location": e.location,
        "attendees": e.attendees.iter().map(|a| json!({"email": a.email, "name": a.name, "type": a.kind})).collect::<Vec<_>>(),
        "sequence": e.sequence,
        "cancelled": e.cancelled,
        "transaction_id": e.transaction_id,
        "online_url": e.online_url,
        "source": e.source,
        "change": e.change,
    })
}

async fn summary(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    Ok(Json(app.cal(|c| {
        let cal = c.of(&u.email);
        json!({
            "user": cal.owner,
            "events": cal.events.iter().filter(|e| !e.cancelled).count(),
            "cancelled": cal.events.iter().filter(|e| e.cancelled).count(),
            "change": cal.change,
            "sync_floor": cal.sync_floor,
            "channels": cal.channels.iter().map(|ch| json!({
                "id": ch.id, "resource_id": ch.resource_id, "address": ch.address, "token": ch.token,
                "expiration": rfc3339_ms(ch.expiration_ms, false),
            })).collect::<Vec<_>>(),
        })
    })))
}

async fn remove_calendar(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    let existed = app.cal(|c| c.by_owner.remove(&u.email.to_ascii_lowercase()).is_some());
    Ok(Json(json!({"removed": existed})))
}

async fn list_events(
    State(app): State<App>,
    Path(email): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    let u = user(&app, &email)?;
    let all = Params::parse(q.as_deref().unwrap_or("")).get("include_cancelled") == Some("true");
    Ok(Json(app.cal(|c| {
        let cal = c.of(&u.email);
        let mut evs: Vec<&Event> = cal.events.iter().filter(|e| all || !e.cancelled).collect();
        evs.sort_by_key(|e| (e.start_ms, e.change));
        json!({"events": evs.into_iter().map(event_json).collect::<Vec<_>>()})
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedEvent {
    start: String,
    end: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    show_as: Option<String>,
    #[serde(default)]
    is_private: bool,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    attendees: Vec<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

fn one() -> u64 {
    1
}
fn three() -> u64 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    start: String,
    end: String,
    #[serde(default = "one")]
    seed: u64,
    /// Events per weekday (on average; 0..=2×).
    #[serde(default = "three")]
    per_day: u64,
    /// Working hours, UTC `[from, to)`.
    #[serde(default)]
    hours: Option<[u32; 2]>,
}

/// `POST /_sandbox/calendars/{user}/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedBody {
    #[serde(default)]
    events: Vec<SeedEvent>,
    #[serde(default)]
    generate: Option<Generate>,
    /// Remove existing events first.
    #[serde(default)]
    replace: bool,
}

const SUBJECTS: &[&str] = &[
    "1:1",
    "Team sync",
    "Pipeline review",
    "Hiring committee",
    "Lunch",
    "Focus time",
    "Interview debrief",
    "Sourcing block",
    "All hands",
];

fn generated(g: &Generate) -> Result<Vec<SeedEvent>, Response> {
    let from = time(&g.start)?;
    let to = time(&g.end)?;
    if to <= from || to - from > 366 * 86_400_000 {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "generate: end must be after start, within a year",
        ));
    }
    let [h0, h1] = g.hours.unwrap_or([9, 17]);
    if h0 >= h1 || h1 > 24 {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "generate: hours must be [from, to) within 0..=24",
        ));
    }
    let mut rng = Rng::new(g.seed);
    let mut out = Vec::new();
    let mut day = from.div_euclid(86_400_000) * 86_400_000;
    while day < to {
        // 1970-01-01 was a Thursday: weekday index 0 = Monday.
        let weekday = (day / 86_400_000 + 3).rem_euclid(7);
        if weekday < 5 {
            let n = rng.below(g.per_day * 2 + 1);
            let slots = u64::from((h1 - h0) * 2);
            for _ in 0..n {
                let slot = rng.below(slots) as i64;
                let len = (1 + rng.below(3)) as i64 * 30 * 60_000;
                let start = day + i64::from(h0) * 3_600_000 + slot * 30 * 60_000;
                let end = (start + len).min(day + i64::from(h1) * 3_600_000);
                if start < from || end > to {
                    continue;
                }
                let show = match rng.below(10) {
                    0 => "tentative",
                    1 => "oof",
                    _ => "busy",
                };
                out.push(SeedEvent {
                    start: rfc3339_ms(start, false),
                    end: rfc3339_ms(end, false),
                    subject: Some((*rng.pick(SUBJECTS)).to_string()),
                    show_as: Some(show.to_string()),
                    is_private: rng.chance(0.1),
                    location: None,
                    attendees: Vec::new(),
                    time_zone: None,
                });
            }
        }
        day += 86_400_000;
    }
    Ok(out)
}

async fn seed_events(
    State(app): State<App>,
    Path(email): Path<String>,
    body: Option<Json<Value>>,
) -> Reply {
    let u = user(&app, &email)?;
    let v = body.map(|Json(v)| v).unwrap_or_else(|| json!({}));
    let b: SeedBody =
        serde_json::from_value(v).map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut specs = b.events;
    if let Some(g) = &b.generate {
        specs.extend(generated(g)?);
    }
    let now = app.now();
    let mut events = Vec::new();
    for s in &specs {
        let tz = s.time_zone.clone().unwrap_or_else(|| "UTC".into());
        let start = parse_local(&s.start, &tz)
            .ok_or_else(|| bad(StatusCode::BAD_REQUEST, format!("bad start {}", s.start)))?;
        let end = parse_local(&s.end, &tz)
            .ok_or_else(|| bad(StatusCode::BAD_REQUEST, format!("bad end {}", s.end)))?;
        if end <= start {
            return Err(bad(StatusCode::BAD_REQUEST, "end must be after start"));
        }
        let show = s.show_as.clone().unwrap_or_else(|| "busy".into());
        if !["free", "tentative", "busy", "oof", "workingElsewhere"].contains(&show.as_str()) {
            return Err(bad(StatusCode::BAD_REQUEST, format!("bad show_as {show}")));
        }
        let mut e = blank_event(now * 1000);
        e.subject = s.subject.clone().unwrap_or_else(|| "Busy".into());
        e.start_ms = start;
        e.end_ms = end;
        e.time_zone = s.time_zone.clone();
        e.show_as = show;
        e.is_private = s.is_private;
        e.location = s.location.clone();
        e.attendees = s
            .attendees
            .iter()
            .map(|a| Attendee {
                email: a.clone(),
                name: None,
                kind: "required".into(),
            })
            .collect();
        e.source = "control".into();
        events.push(e);
    }
    let google = u.provider == Provider::Google;
    let out = app.cal(|c| {
        if b.replace {
            let cal = c.of(&u.email);
            let change = cal.bump();
            for e in cal.events.iter_mut().filter(|e| !e.cancelled) {
                e.cancelled = true;
                e.change = change;
            }
        }
        let mut out = Vec::new();
        for mut e in events {
            let (gid, iid) = c.graph_ids(&u.email);
            e.graph_id = gid;
            e.immutable_id = iid;
            e.id = random_base32hex(26);
            e.ical_uid = if google {
                format!("{}@google.com", e.id)
            } else {
                outlook_ical_uid()
            };
            let cal = c.of(&u.email);
            e.change = cal.bump();
            out.push(event_json(&e));
            cal.events.push(e);
        }
        out
    });
    Ok(Json(json!({"created": out.len(), "events": out})))
}

async fn expire_tokens(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    let floor = app.cal(|c| {
        let cal = c.of(&u.email);
        cal.sync_floor = cal.bump();
        cal.sync_floor
    });
    Ok(Json(json!({"sync_floor": floor})))
}

async fn list_invitations(State(app): State<App>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q.as_deref().unwrap_or(""));
    let to = p.get("to").map(str::to_ascii_lowercase);
    let ical = p.get("ical_uid");
    Ok(Json(app.cal(|c| {
        let v: Vec<&crate::calendar::Invitation> = c
            .invitations
            .iter()
            .filter(|i| to.as_ref().is_none_or(|t| i.to.eq_ignore_ascii_case(t)))
            .filter(|i| ical.is_none_or(|u| i.ical_uid == u))
            .collect();
        json!({"invitations": v})
    })))
}

async fn clear_invitations(State(app): State<App>) -> Reply {
    let n = app.cal(|c| std::mem::take(&mut c.invitations).len());
    Ok(Json(json!({"removed": n})))
}
