//! Control API for mailboxes (`/_sandbox/mailboxes/...`): generate, inject, delete, move / mark read, expire
//! Graph delta tokens, make Gmail history ids stale, list.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::mail_api::ids_of;
use crate::mailbox::{FOLDERS, Mailbox, Placement, meta_from_raw};
use crate::mailgen::{GenerateSpec, MessageMeta, generate, quoted_printable, rfc5322_date};
use crate::mailview::parse_ts_ms;
use crate::state::User;
use crate::wire::{Params, json_response, random_token};

/// Routes under `/_sandbox/mailboxes/`.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/_sandbox/mailboxes/{user}",
            get(summary).delete(remove_mailbox),
        )
        .route(
            "/_sandbox/mailboxes/{user}/generate",
            post(generate_mailbox),
        )
        .route(
            "/_sandbox/mailboxes/{user}/messages",
            get(list_messages).post(inject),
        )
        .route(
            "/_sandbox/mailboxes/{user}/messages/{id}",
            get(get_message)
                .patch(update_message)
                .delete(delete_message),
        )
        .route(
            "/_sandbox/mailboxes/{user}/delta-tokens/expire",
            post(expire_delta_tokens),
        )
        .route(
            "/_sandbox/mailboxes/{user}/history/expire",
            post(expire_history),
        )
}

type Reply = Result<Json<Value>, Response>;

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"error": msg.into()}))
}

fn parse<T: serde::de::DeserializeOwned>(body: Option<Json<Value>>) -> Result<T, Response> {
    let v = body.map(|Json(v)| v).unwrap_or_else(|| json!({}));
    serde_json::from_value(v).map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

fn user(app: &App, email: &str) -> Result<User, Response> {
    app.read(|s| s.user(email).cloned())
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("unknown user {email}")))
}

/// Runs `f` on a user's mailbox (created empty when missing).
fn on_mailbox<R>(app: &App, u: &User, f: impl FnOnce(&mut Mailbox) -> R) -> R {
    app.mail(|m| {
        let mb = m
            .by_owner
            .entry(u.email.clone())
            .or_insert_with(|| Mailbox::new(&u.email, &u.id, u.history_id));
        f(mb)
    })
}

fn folder_or_400(mb: &Mailbox, f: &str) -> Result<u8, Response> {
    mb.folder_index(f).ok_or_else(|| {
        bad(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown folder {f}; use one of {}",
                FOLDERS.map(|(n, _)| n).join(", ")
            ),
        )
    })
}

fn summary_of(mb: &Mailbox) -> Value {
    let mut folders = serde_json::Map::new();
    for (i, (name, _)) in FOLDERS.iter().enumerate() {
        let n = mb.live().filter(|m| m.place.folder as usize == i).count();
        folders.insert((*name).to_string(), json!(n));
    }
    json!({
        "user": mb.owner,
        "messages": mb.live().count(),
        "threads": mb.thread_count(),
        "folders": folders,
        "history_id": mb.history_id.to_string(),
        "history_floor": mb.history_floor.to_string(),
        "delta_tokens": mb.delta_tokens.len(),
    })
}

async fn summary(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    Ok(Json(on_mailbox(&app, &u, |mb| summary_of(mb))))
}

async fn remove_mailbox(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    let existed = app.mail(|m| m.by_owner.remove(&u.email).is_some());
    Ok(Json(json!({"removed": existed})))
}

/// `POST /_sandbox/mailboxes/{user}/generate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    n: usize,
    #[serde(default = "one")]
    seed: u64,
    #[serde(default)]
    candidates: Vec<String>,
    #[serde(default)]
    candidate_share: f64,
    /// RFC 3339 or date; default: one year before `end`.
    #[serde(default)]
    start: Option<String>,
    /// RFC 3339 or date; default: now.
    #[serde(default)]
    end: Option<String>,
}

fn one() -> u64 {
    1
}

/// Replaces a user's mailbox with a generated one. Earlier Gmail history ids become stale and earlier Graph
/// delta tokens unknown, as after a mailbox import.
async fn generate_mailbox(
    State(app): State<App>,
    Path(email): Path<String>,
    body: Option<Json<Value>>,
) -> Reply {
    let b: GenerateBody = parse(body)?;
    let u = user(&app, &email)?;
    if b.n > crate::mailbox::MAX_MESSAGES {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("n must be at most {}", crate::mailbox::MAX_MESSAGES),
        ));
    }
    let now = app.now();
    let ts = |s: &Option<String>, default: i64| -> Result<i64, Response> {
        match s {
            None => Ok(default),
            Some(s) => parse_ts_ms(s)
                .map(|ms| ms / 1000)
                .ok_or_else(|| bad(StatusCode::BAD_REQUEST, format!("not a timestamp: {s}"))),
        }
    };
    let end = ts(&b.end, now)?;
    let start = ts(&b.start, end - 365 * 86_400)?;
    if start >= end {
        return Err(bad(StatusCode::BAD_REQUEST, "start must be before end"));
    }
    if !(0.0..=1.0).contains(&b.candidate_share) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "candidate_share must be within 0..=1",
        ));
    }
    let spec = GenerateSpec {
        owner: u.email.clone(),
        owner_name: u.display_name.clone(),
        n: b.n,
        seed: b.seed,
        candidates: b.candidates,
        candidate_share: b.candidate_share,
        start,
        end,
    };
    let t0 = Instant::now();
    let msgs = tokio::task::spawn_blocking(move || generate(&spec))
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let start_hid = app.mail(|m| m.by_owner.get(&u.email).map(|mb| mb.history_id));
    let mut mb = Mailbox::new(&u.email, &u.id, start_hid.unwrap_or(u.history_id));
    for g in msgs {
        let place = Placement {
            folder: mb.folder_index(g.folder).unwrap_or(0),
            is_read: g.is_read,
            moves: 0,
        };
        mb.insert(Arc::new(g.raw), g.meta, g.received_ms, place, now, false)
            .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    }
    mb.expire_history();
    let out = summary_of(&mb);
    app.mail(|m| m.by_owner.insert(u.email.clone(), mb));
    let mut out = out;
    out["millis"] = json!(t0.elapsed().as_millis() as u64);
    Ok(Json(out))
}

async fn list_messages(
    State(app): State<App>,
    Path(email): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    let u = user(&app, &email)?;
    let params = Params::parse(q.as_deref().unwrap_or(""));
    on_mailbox(&app, &u, |mb| {
        let folder = match params.get("folder") {
            Some(f) => Some(folder_or_400(mb, f)?),
            None => None,
        };
        let list: Vec<Value> = mb
            .live()
            .filter(|m| folder.is_none_or(|f| m.place.folder == f))
            .map(|m| ids_of(mb, m.seq))
            .collect();
        Ok(Json(json!({"messages": list})))
    })
}

async fn get_message(State(app): State<App>, Path((email, id)): Path<(String, String)>) -> Reply {
    let u = user(&app, &email)?;
    on_mailbox(&app, &u, |mb| {
        let seq = mb
            .find_any(&id)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("no message {id}")))?;
        let mut v = ids_of(mb, seq);
        v["raw"] = json!(String::from_utf8_lossy(&mb.msgs[seq as usize].raw));
        Ok(Json(v))
    })
}

/// `POST /_sandbox/mailboxes/{user}/messages`: raw MIME, or simple fields.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InjectBody {
    /// The message as text (RFC 5322), stored byte for byte.
    #[serde(default)]
    raw: Option<String>,
    /// The message as base64 or base64url bytes (for 8-bit content).
    #[serde(default)]
    raw_base64: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    from_name: Option<String>,
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body: Option<String>,
    /// Any id of a message in the mailbox (Gmail, Graph, or Message-ID) this one replies to.
    #[serde(default)]
    in_reply_to: Option<String>,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    is_read: bool,
    /// RFC 3339; default now.
    #[serde(default)]
    received_at: Option<String>,
}

fn header_text(s: &str) -> String {
    if s.is_ascii() {
        s.to_string()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(s.as_bytes()))
    }
}

fn build_simple(b: &InjectBody, u: &User, parent: Option<&MessageMeta>, date: i64) -> Vec<u8> {
    let from = b
        .from
        .clone()
        .unwrap_or_else(|| "candidate@example.com".into());
    let from_name = b.from_name.clone().unwrap_or_default();
    let to = b.to.clone().unwrap_or_else(|| vec![u.email.clone()]);
    let mut subject = b.subject.clone().unwrap_or_else(|| "(no subject)".into());
    if let Some(p) = parent
        && b.subject.is_none()
    {
        subject = if p.subject.starts_with("Re: ") {
            p.subject.clone()
        } else {
            format!("Re: {}", p.subject)
        };
    }
    let domain = from.split_once('@').map_or("sandbox.example", |(_, d)| d);
    let mut out = String::new();
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(date)));
    out.push_str(&format!(
        "Message-ID: <inj.{}@{domain}>\r\n",
        random_token(12).replace(['-', '_'], "x")
    ));
    if let Some(p) = parent {
        out.push_str(&format!("In-Reply-To: {}\r\n", p.message_id));
        let mut refs: Vec<String> = p.parents.iter().rev().cloned().collect();
        refs.push(p.message_id.clone());
        out.push_str(&format!("References: {}\r\n", refs.join("\r\n ")));
    }
    out.push_str(&format!("Subject: {}\r\n", header_text(&subject)));
    if from_name.is_empty() {
        out.push_str(&format!("From: {from}\r\n"));
    } else {
        out.push_str(&format!("From: {} <{from}>\r\n", header_text(&from_name)));
    }
    out.push_str(&format!("To: {}\r\n", to.join(", ")));
    out.push_str("Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend(quoted_printable(
        b.body.clone().unwrap_or_default().as_bytes(),
    ));
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// Adds one message (a candidate's reply, say); it is logged as a change, so Graph delta and Gmail history
/// report it.
async fn inject(
    State(app): State<App>,
    Path(email): Path<String>,
    body: Option<Json<Value>>,
) -> Reply {
    let b: InjectBody = parse(body)?;
    let u = user(&app, &email)?;
    let now = app.now();
    let received_ms = match &b.received_at {
        Some(s) => parse_ts_ms(s)
            .ok_or_else(|| bad(StatusCode::BAD_REQUEST, format!("not a timestamp: {s}")))?,
        None => now * 1000,
    };
    on_mailbox(&app, &u, |mb| {
        let folder = folder_or_400(mb, b.folder.as_deref().unwrap_or("inbox"))?;
        let raw: Vec<u8> = match (&b.raw, &b.raw_base64) {
            (Some(r), None) => r.clone().into_bytes(),
            (None, Some(r)) => {
                let clean: String = r.chars().filter(|c| !c.is_whitespace()).collect();
                STANDARD
                    .decode(&clean)
                    .or_else(|_| URL_SAFE.decode(&clean))
                    .or_else(|_| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(clean.trim_end_matches('='))
                    })
                    .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("raw_base64: {e}")))?
            }
            (None, None) => {
                let parent = match &b.in_reply_to {
                    Some(id) => {
                        let seq = mb.find_any(id).ok_or_else(|| {
                            bad(
                                StatusCode::NOT_FOUND,
                                format!("no message {id} to reply to"),
                            )
                        })?;
                        Some(mb.msgs[seq as usize].meta.clone())
                    }
                    None => None,
                };
                build_simple(&b, &u, parent.as_ref(), received_ms / 1000)
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    "give raw or raw_base64, not both",
                ));
            }
        };
        let meta = meta_from_raw(&raw).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        let place = Placement {
            folder,
            is_read: b.is_read,
            moves: 0,
        };
        let seq = mb
            .insert(Arc::new(raw), meta, received_ms, place, now, true)
            .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        Ok(Json(ids_of(mb, seq)))
    })
}

/// `PATCH /_sandbox/mailboxes/{user}/messages/{id}`: move and/or mark read.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    is_read: Option<bool>,
}

async fn update_message(
    State(app): State<App>,
    Path((email, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Reply {
    let b: UpdateBody = parse(body)?;
    let u = user(&app, &email)?;
    let now = app.now();
    on_mailbox(&app, &u, |mb| {
        let seq = mb
            .find_any(&id)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("no message {id}")))?;
        let folder = match &b.folder {
            Some(f) => Some(folder_or_400(mb, f)?),
            None => None,
        };
        mb.update(seq, folder, b.is_read, now);
        Ok(Json(ids_of(mb, seq)))
    })
}

async fn delete_message(
    State(app): State<App>,
    Path((email, id)): Path<(String, String)>,
) -> Reply {
    let u = user(&app, &email)?;
    let now = app.now();
    on_mailbox(&app, &u, |mb| {
        let seq = mb
            .find_any(&id)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("no message {id}")))?;
        let ids = ids_of(mb, seq);
        mb.delete(seq, now);
        Ok(Json(json!({"deleted": ids})))
    })
}

async fn expire_delta_tokens(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    let n = on_mailbox(&app, &u, |mb| {
        let mut n = 0;
        for t in mb.delta_tokens.values_mut() {
            if !t.expired {
                t.expired = true;
                n += 1;
            }
        }
        n
    });
    Ok(Json(json!({"expired": n})))
}

async fn expire_history(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let u = user(&app, &email)?;
    let floor = on_mailbox(&app, &u, |mb| mb.expire_history());
    Ok(Json(json!({"history_floor": floor.to_string()})))
}
