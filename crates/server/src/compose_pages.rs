//! Email Connect on the web: the compose card of the candidate page (send now
//! or schedule, reply into a timeline conversation), the outgoing list there
//! and on `/scheduled` (edit or cancel while queued, failures with their
//! reason), and the REST API:
//! `POST /api/v1/candidates/{id}/messages`, `GET /api/v1/outbox`,
//! `GET`/`PATCH`/`DELETE /api/v1/outbox/{id}`.
//!
//! Stable API error codes: `feature_not_enabled` (403), the permission codes
//! of [`Readiness`] (`inbox_not_connected`, `inbox_needs_reauthorization`,
//! `send_permission_missing`, `access_view_only`, `email_access_off`,
//! `no_provider`; 409), input codes (`recipient_not_candidate`,
//! `no_recipient`, `invalid_address`, `header_injection`,
//! `attachment_too_large`, `subject_required`, `body_required`,
//! `send_at_in_past`, `invalid_send_at`, `invalid_attachment`,
//! `invalid_message`; 422), `not_queued` (409), `not_found` (404).

use askama::Template;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use hirewire_domain::ids::{CandidateId, MailThreadId};
use hirewire_store::{
    OutboxAttachment, OutboxEdit, OutboxFilter, OutboxId, OutboxItem, OutboxStatus, StoreError,
    User,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{ApiCaller, CsrfForm, Viewer};
use crate::error::{ApiError, ErrorBody, PageError};
use crate::outbox::{self, ComposeInput, Readiness, SubmitError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/candidates/{id}/email", post(compose_post))
        .route("/outbox/{id}/cancel", post(cancel_post))
        .route("/outbox/{id}/edit", post(edit_post))
        .route("/scheduled", get(scheduled_page))
}

/// The API routes, nested under `/api/v1`.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/candidates/{id}/messages", post(api_create))
        .route("/outbox", get(api_list))
        .route(
            "/outbox/{id}",
            get(api_get).patch(api_patch).delete(api_delete),
        )
}

// ---- pages ----------------------------------------------------------------------------

/// One outgoing message as the pages show it.
pub struct OutRow {
    pub id: i64,
    pub candidate_id: i64,
    pub subject: String,
    pub body: String,
    pub to: String,
    pub status: String,
    pub status_code: &'static str,
    /// When it goes (or went), in the recruiter's zone.
    pub when: String,
    /// `datetime-local` value of `send_at`, for the edit form.
    pub when_local: String,
    pub reason: Option<String>,
    pub editable: bool,
    pub message_id: String,
}

/// The compose card of a candidate page.
pub struct ComposeCard {
    /// `None`: the form is shown; else why not (exactly what is missing).
    pub blocked: Option<String>,
    /// Offer to authorize the inbox again.
    pub reauthorize: bool,
    pub not_enabled: bool,
    pub from: String,
    pub addresses: Vec<String>,
    pub zone: String,
    /// Email conversations to reply into: (thread id, subject).
    pub threads: Vec<(i64, String)>,
    pub outgoing: Vec<OutRow>,
    pub error: Option<String>,
    pub max_attachment_mb: u64,
}

fn zone_of(user: &User) -> TimeZone {
    TimeZone::get(&user.time_zone).unwrap_or(TimeZone::UTC)
}

fn row(user: &User, item: &OutboxItem) -> OutRow {
    let tz = zone_of(user);
    let show = |t: Timestamp| {
        t.to_zoned_datetime(tz.clone())
            .strftime("%a %-d %b %Y %H:%M %Z")
            .to_string()
    };
    let when = match item.status {
        OutboxStatus::Sent => item.sent_at.map(show).unwrap_or_default(),
        _ => show(item.due_at),
    };
    let reason = match item.status {
        OutboxStatus::Failed | OutboxStatus::NeedsAttention => item.last_error.clone(),
        OutboxStatus::Queued => item.hold_reason.clone().or(item.last_error.clone()),
        _ => None,
    };
    OutRow {
        id: item.id.get(),
        candidate_id: item.candidate_id.get(),
        subject: item.subject.clone(),
        body: item.body_markdown.clone(),
        to: item.to.join(", "),
        status: outbox::status_words(item).to_owned(),
        status_code: item.status.as_str(),
        when,
        when_local: item
            .send_at
            .map(|t| {
                t.to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M")
                    .to_string()
            })
            .unwrap_or_default(),
        reason,
        editable: item.status == OutboxStatus::Queued && outbox::may_manage(user, item),
        message_id: item.message_id.clone(),
    }
}

/// Loads the compose card for `viewer` on `candidate`'s page.
pub async fn card(
    state: &AppState,
    viewer: &Viewer,
    candidate: CandidateId,
    addresses: &[String],
    error: Option<String>,
) -> Result<ComposeCard, PageError> {
    let user = &viewer.user;
    let readiness = outbox::readiness(state, user).await?;
    let (blocked, reauthorize, not_enabled, from) = match &readiness {
        Readiness::Ready { from, .. } => (None, false, false, from.clone()),
        Readiness::NotEnabled => (Some(readiness.message()), false, true, String::new()),
        Readiness::Blocked { reauthorize, .. } => (
            Some(readiness.message()),
            *reauthorize,
            false,
            String::new(),
        ),
    };
    let mut threads = Vec::new();
    if blocked.is_none() {
        let viewer_id = hirewire_store::MailViewer {
            user: user.id,
            is_admin: user.role == hirewire_store::Role::Admin,
        };
        let page = state
            .store
            .candidate_timeline(user.org_id, candidate, viewer_id, None, 20)
            .await?;
        for item in page.items {
            if let hirewire_store::TimelineItem::Email(c) = item {
                let subject = c
                    .threads
                    .iter()
                    .find_map(|t| t.subject.clone())
                    .unwrap_or_else(|| "(no subject)".into());
                threads.push((c.thread_id.get(), subject));
            }
        }
    }
    let outgoing = state
        .store
        .list_outbox(
            user.org_id,
            OutboxFilter {
                user: Some(user.id),
                candidate: Some(candidate),
                statuses: &[],
            },
        )
        .await?
        .iter()
        .map(|i| row(user, i))
        .collect();
    Ok(ComposeCard {
        blocked,
        reauthorize,
        not_enabled,
        from,
        addresses: addresses.to_vec(),
        zone: user.time_zone.clone(),
        threads,
        outgoing,
        error,
        max_attachment_mb: (state.config.outbox.max_attachment_bytes as u64) / (1024 * 1024),
    })
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn all(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Parses a `datetime-local` value in `user`'s zone.
fn local_time(user: &User, value: &str) -> Result<Timestamp, String> {
    let dt = jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M", value.trim())
        .or_else(|_| jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%S", value.trim()))
        .map_err(|_| format!("'{value}' is not a date and time"))?;
    dt.to_zoned_datetime(zone_of(user))
        .map(|z| z.timestamp())
        .map_err(|e| format!("'{value}' is not a time in {}: {e}", user.time_zone))
}

fn split_addresses(s: &str) -> Vec<String> {
    s.split([',', ';'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn compose_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let cid: CandidateId = id.parse().map_err(|_| PageError::not_found())?;
    let schedule = field(&fields, "mode") == Some("schedule");
    let send_at = if schedule {
        match local_time(&viewer.user, field(&fields, "send_at").unwrap_or("")) {
            Ok(t) => Some(t),
            Err(e) => return back(&cid, &e),
        }
    } else {
        None
    };
    let reply = field(&fields, "reply_to")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<i64>().ok())
        .map(MailThreadId);
    let input = ComposeInput {
        to: all(&fields, "to"),
        cc: split_addresses(field(&fields, "cc").unwrap_or("")),
        subject: field(&fields, "subject").unwrap_or("").to_owned(),
        body_markdown: field(&fields, "body").unwrap_or("").to_owned(),
        attachments: Vec::new(),
        reply_to_thread: reply,
        send_at,
    };
    match outbox::submit(&state, &viewer.user, cid, input).await {
        Ok(_) => Ok(Redirect::to(&format!("/candidates/{cid}#outgoing")).into_response()),
        Err(SubmitError::CandidateNotFound) => Err(PageError::not_found()),
        Err(SubmitError::Store(e)) => Err(e.into()),
        Err(e) => back(&cid, &e.to_string()),
    }
}

/// Back to the candidate page with the error shown on the compose card.
fn back(cid: &CandidateId, message: &str) -> Result<Response, PageError> {
    let q = serde_urlencoded::to_string([("email_error", message)]).unwrap_or_default();
    Ok(Redirect::to(&format!("/candidates/{cid}?{q}#compose")).into_response())
}

async fn owned(state: &AppState, user: &User, id: &str) -> Result<OutboxItem, PageError> {
    let id: i64 = id.parse().map_err(|_| PageError::not_found())?;
    let item = state
        .store
        .outbox_item(user.org_id, OutboxId(id))
        .await?
        .filter(|i| outbox::may_manage(user, i))
        .ok_or_else(PageError::not_found)?;
    Ok(item)
}

fn after(fields: &[(String, String)], item: &OutboxItem) -> String {
    match field(fields, "from") {
        Some("scheduled") => "/scheduled".into(),
        _ => format!("/candidates/{}#outgoing", item.candidate_id),
    }
}

async fn cancel_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let item = owned(&state, &viewer.user, &id).await?;
    match state
        .store
        .cancel_outbox(viewer.user.org_id, item.id, state.now())
        .await
    {
        Ok(_) | Err(StoreError::Conflict { .. }) => {
            Ok(Redirect::to(&after(&fields, &item)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn edit_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let item = owned(&state, &viewer.user, &id).await?;
    let send_at = match field(&fields, "send_at").filter(|v| !v.is_empty()) {
        Some(v) => Some(Some(
            local_time(&viewer.user, v).map_err(PageError::bad_request)?,
        )),
        None => None,
    };
    let subject = field(&fields, "subject").filter(|s| !s.trim().is_empty());
    if subject.is_some_and(|s| s.contains(['\r', '\n'])) {
        return Err(PageError::bad_request(
            "the subject contains a line break, which is not allowed",
        ));
    }
    let edit = OutboxEdit {
        subject,
        body_markdown: field(&fields, "body").filter(|s| !s.trim().is_empty()),
        send_at,
        ..OutboxEdit::default()
    };
    match state
        .store
        .edit_outbox(viewer.user.org_id, item.id, &edit, state.now())
        .await
    {
        Ok(_) | Err(StoreError::Conflict { .. }) => {
            Ok(Redirect::to(&after(&fields, &item)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "scheduled.html")]
struct ScheduledPage {
    nav: Option<crate::pages::Nav>,
    zone: String,
    rows: Vec<OutRow>,
    csrf: String,
}

async fn scheduled_page(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let user = &viewer.user;
    let items = state
        .store
        .list_outbox(
            user.org_id,
            OutboxFilter {
                user: Some(user.id),
                candidate: None,
                statuses: &[
                    OutboxStatus::Queued,
                    OutboxStatus::Sending,
                    OutboxStatus::Failed,
                    OutboxStatus::NeedsAttention,
                ],
            },
        )
        .await?;
    let page = ScheduledPage {
        nav: crate::pages::Nav::of(&viewer, "scheduled"),
        zone: user.time_zone.clone(),
        rows: items.iter().map(|i| row(user, i)).collect(),
        csrf: viewer.csrf.clone(),
    };
    let body = page.render().map_err(PageError::internal)?;
    Ok(axum::response::Html(body).into_response())
}

// ---- API ------------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    paths(api_create, api_list, api_get, api_patch, api_delete),
    components(schemas(
        MessageResource,
        AttachmentResource,
        NewMessageBody,
        AttachmentBody,
        PatchBody,
        MessageList
    ))
)]
pub struct EmailDoc;

/// A file of an outbox message.
#[derive(Serialize, ToSchema)]
pub struct AttachmentResource {
    pub filename: String,
    pub content_type: String,
    /// Bytes.
    pub size: u64,
}

/// An outbox message.
#[derive(Serialize, ToSchema)]
pub struct MessageResource {
    pub id: i64,
    pub candidate_id: i64,
    /// `queued`, `sending`, `sent`, `failed`, `needs_attention` or `cancelled`.
    pub status: &'static str,
    /// hirewire's `Message-ID` (without angle brackets), fixed before any send.
    pub message_id: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_markdown: String,
    pub attachments: Vec<AttachmentResource>,
    pub in_reply_to: Option<String>,
    /// RFC 3339; null: at once.
    pub send_at: Option<String>,
    /// When a worker will next take it.
    pub due_at: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Why it waits although due (pacing, a hold).
    pub hold_reason: Option<String>,
    /// Gmail message id / Graph immutable id, once sent.
    pub provider_message_id: Option<String>,
    /// Gmail threadId / Graph conversationId, once sent.
    pub provider_thread_id: Option<String>,
    pub sent_at: Option<String>,
    pub created_at: String,
}

fn resource(i: &OutboxItem) -> MessageResource {
    MessageResource {
        id: i.id.get(),
        candidate_id: i.candidate_id.get(),
        status: i.status.as_str(),
        message_id: i.message_id.clone(),
        to: i.to.clone(),
        cc: i.cc.clone(),
        subject: i.subject.clone(),
        body_markdown: i.body_markdown.clone(),
        attachments: i
            .attachments
            .iter()
            .map(|a| AttachmentResource {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
            })
            .collect(),
        in_reply_to: i.in_reply_to.clone(),
        send_at: i.send_at.map(|t| t.to_string()),
        due_at: i.due_at.to_string(),
        attempts: i.attempts,
        last_error: i.last_error.clone(),
        hold_reason: i.hold_reason.clone(),
        provider_message_id: i.provider_message_id.clone(),
        provider_thread_id: i.provider_thread_id.clone(),
        sent_at: i.sent_at.map(|t| t.to_string()),
        created_at: i.created_at.to_string(),
    }
}

/// A file to send.
#[derive(Deserialize, ToSchema)]
struct AttachmentBody {
    filename: String,
    #[serde(default = "octet")]
    content_type: String,
    /// Standard base64.
    content_base64: String,
}

fn octet() -> String {
    "application/octet-stream".into()
}

/// A message to send now or schedule.
#[derive(Deserialize, ToSchema)]
struct NewMessageBody {
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    subject: String,
    #[serde(default)]
    body_markdown: String,
    #[serde(default)]
    attachments: Vec<AttachmentBody>,
    /// Reply into this email conversation (thread id from the timeline).
    #[serde(default)]
    reply_to_thread_id: Option<i64>,
    /// RFC 3339; absent: now.
    #[serde(default)]
    send_at: Option<String>,
}

fn parse_time(s: &str) -> Result<Timestamp, ApiError> {
    s.parse().map_err(|_| {
        ApiError::unprocessable(
            "invalid_send_at",
            "send_at must be an RFC 3339 instant with an offset",
        )
    })
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::NotReady(Readiness::NotEnabled) => ApiError::new(
            StatusCode::FORBIDDEN,
            "feature_not_enabled",
            outbox::NOT_ENABLED,
        ),
        SubmitError::NotReady(r) => ApiError::conflict(r.code(), r.message()),
        SubmitError::CandidateNotFound => ApiError::not_found("candidate"),
        SubmitError::ThreadNotFound => ApiError::not_found("conversation"),
        SubmitError::Invalid { code, message } => ApiError::unprocessable(code, message),
        SubmitError::Store(e) => e.into(),
    }
}

#[utoipa::path(post, path = "/candidates/{id}/messages", tag = "email", params(("id" = i64, Path)), request_body = NewMessageBody,
    responses((status = 201, description = "Queued (sent at once or at `send_at` by the outbox worker)", body = MessageResource),
        (status = 403, description = "`feature_not_enabled`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "What is missing to send: `inbox_not_connected`, `inbox_needs_reauthorization`, `send_permission_missing`, `access_view_only`, `email_access_off`, `no_provider`", body = ErrorBody),
        (status = 422, description = "`recipient_not_candidate`, `no_recipient`, `invalid_address`, `header_injection`, `attachment_too_large`, `subject_required`, `body_required`, `send_at_in_past`, `invalid_send_at`, `invalid_attachment`, `invalid_message`", body = ErrorBody)))]
/// `Idempotency-Key` is honoured: a retry with the same key and body gets the
/// first answer (and the same message) again.
async fn api_create(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/candidates/{id}/messages");
    crate::api::idempotent(&state, &user, &headers, Method::POST, &path, &body, async {
        let cid: CandidateId = id.parse().map_err(|_| ApiError::not_found("candidate"))?;
        let b: NewMessageBody = crate::api::parse_json(&body)?;
        let mut attachments = Vec::new();
        for a in b.attachments {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.content_base64.as_bytes())
                .map_err(|_| {
                    ApiError::unprocessable(
                        "invalid_attachment",
                        format!("the attachment '{}' is not valid base64", a.filename),
                    )
                })?;
            attachments.push(OutboxAttachment {
                filename: a.filename,
                content_type: a.content_type,
                bytes,
            });
        }
        let input = ComposeInput {
            to: b.to,
            cc: b.cc,
            subject: b.subject,
            body_markdown: b.body_markdown,
            attachments,
            reply_to_thread: b.reply_to_thread_id.map(MailThreadId),
            send_at: b.send_at.as_deref().map(parse_time).transpose()?,
        };
        let item = outbox::submit(&state, &user, cid, input)
            .await
            .map_err(submit_error)?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(resource(&item)).map_err(ApiError::internal)?,
        ))
    })
    .await
}

#[derive(Deserialize)]
struct ListQuery {
    /// Comma-separated statuses.
    status: Option<String>,
    candidate_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct MessageList {
    data: Vec<MessageResource>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/outbox", tag = "email", params(("status" = Option<String>, Query, description = "Comma-separated statuses"), ("candidate_id" = Option<i64>, Query)),
    responses((status = 200, description = "The caller's messages, newest first", body = MessageList)))]
async fn api_list(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Query(q): Query<ListQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let mut statuses = Vec::new();
    for s in q
        .status
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let st = OutboxStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim())
            .ok_or_else(|| {
                ApiError::unprocessable("invalid_field", format!("unknown status '{s}'"))
            })?;
        statuses.push(st);
    }
    let items = state
        .store
        .list_outbox(
            user.org_id,
            OutboxFilter {
                user: Some(user.id),
                candidate: q.candidate_id.map(CandidateId),
                statuses: &statuses,
            },
        )
        .await?;
    Ok(Json(MessageList {
        data: items.iter().map(resource).collect(),
        next_cursor: None,
    }))
}

async fn api_item(state: &AppState, user: &User, id: &str) -> Result<OutboxItem, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("message"))?;
    state
        .store
        .outbox_item(user.org_id, OutboxId(id))
        .await?
        .filter(|i| outbox::may_manage(user, i))
        .ok_or_else(|| ApiError::not_found("message"))
}

#[utoipa::path(get, path = "/outbox/{id}", tag = "email", params(("id" = i64, Path)),
    responses((status = 200, description = "Status, with the provider message and thread ids once sent", body = MessageResource), (status = 404, body = ErrorBody)))]
async fn api_get(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<MessageResource>, ApiError> {
    Ok(Json(resource(&api_item(&state, &user, &id).await?)))
}

/// Changes to a queued message (absent fields stay).
#[derive(Deserialize, ToSchema)]
struct PatchBody {
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    cc: Option<Vec<String>>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body_markdown: Option<String>,
    /// RFC 3339, or null to send at once; absent: unchanged.
    #[serde(default, deserialize_with = "double_option")]
    send_at: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn not_queued(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { what } => ApiError::conflict("not_queued", what),
        StoreError::Invalid(m) => ApiError::unprocessable("invalid_message", m),
        e => e.into(),
    }
}

#[utoipa::path(patch, path = "/outbox/{id}", tag = "email", params(("id" = i64, Path)), request_body = PatchBody,
    responses((status = 200, body = MessageResource), (status = 404, body = ErrorBody), (status = 409, description = "`not_queued`", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn api_patch(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<MessageResource>, ApiError> {
    let item = api_item(&state, &user, &id).await?;
    let b: PatchBody = crate::api::parse_json(&body)?;
    if b.subject
        .as_deref()
        .is_some_and(|s| s.contains(['\r', '\n']))
    {
        return Err(ApiError::unprocessable(
            "header_injection",
            "the subject contains a line break or control character, which is not allowed",
        ));
    }
    let cand = state
        .store
        .candidate(user.org_id, item.candidate_id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    if let Some(to) = &b.to {
        for a in to {
            let key = hirewire_domain::email::AddressKey::of(a.trim());
            if !cand.emails.iter().any(|e| e.key == key) {
                return Err(ApiError::unprocessable(
                    "recipient_not_candidate",
                    format!("'{a}' is not an address of {}", cand.name),
                ));
            }
        }
    }
    let send_at = match b.send_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => Some(Some(parse_time(&s)?)),
    };
    let edit = OutboxEdit {
        to: b.to.as_deref(),
        cc: b.cc.as_deref(),
        subject: b.subject.as_deref(),
        body_markdown: b.body_markdown.as_deref(),
        send_at,
    };
    let item = state
        .store
        .edit_outbox(user.org_id, item.id, &edit, state.now())
        .await
        .map_err(not_queued)?;
    Ok(Json(resource(&item)))
}

#[utoipa::path(delete, path = "/outbox/{id}", tag = "email", params(("id" = i64, Path)),
    responses((status = 200, description = "Cancelled", body = MessageResource), (status = 404, body = ErrorBody), (status = 409, description = "`not_queued`", body = ErrorBody)))]
async fn api_delete(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<MessageResource>, ApiError> {
    let item = api_item(&state, &user, &id).await?;
    let item = state
        .store
        .cancel_outbox(user.org_id, item.id, state.now())
        .await
        .map_err(not_queued)?;
    Ok(Json(resource(&item)))
}
