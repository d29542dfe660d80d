//! Email Connect on the web: the compose card of the candidate page (send now
//! or schedule, attachments, reply into a timeline conversation), the outgoing
//! list there and on `/scheduled` (edit or cancel while queued, failures with
//! their reason), and the REST API:
//! `POST /api/v1/candidates/{id}/emails` (send now or at `send_at`),
//! `GET /api/v1/scheduled-emails`, `GET`/`PATCH`/`DELETE
//! /api/v1/scheduled-emails/{id}` and `GET /api/v1/emails/{id}`.
//!
//! Stable API error codes: `feature_not_enabled` (403), the permission codes
//! of [`Readiness`] (`inbox_not_connected`, `inbox_needs_reauthorization`,
//! `send_permission_missing`, `access_view_only`, `email_access_off`,
//! `no_provider`; 409), input codes (`recipient_not_candidate`,
//! `no_recipient`, `invalid_address`, `header_injection`,
//! `attachment_too_large`, `subject_required`, `body_required`,
//! `send_at_in_past`, `invalid_send_at`, `invalid_attachment`,
//! `invalid_message`; 422), `request_too_large` (413), `already_sent` and
//! `not_editable` (409), `invalid_status`, `invalid_limit`, `invalid_cursor`
//! (400), `not_found` (404).

use askama::Template;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
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
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{ApiCaller, CsrfForm, Viewer};
use crate::error::{ApiError, ErrorBody, PageError};
use crate::outbox::{self, ComposeInput, OutboxConfig, Readiness, SubmitError};

pub fn routes() -> Router<AppState> {
    Router::new()
        // The compose form carries attachments: its handler reads the body
        // itself, enforcing the outbox's attachment limits as it streams (see
        // `read_compose_form`), so axum's 2 MB default must not cut it short.
        .route(
            "/candidates/{id}/email",
            post(compose_post).layer(DefaultBodyLimit::disable()),
        )
        .route("/outbox/{id}/cancel", post(cancel_post))
        .route("/outbox/{id}/edit", post(edit_post))
        .route("/scheduled", get(scheduled_page))
}

/// The API routes, nested under `/api/v1`.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/candidates/{id}/emails", post(api_create))
        .route("/scheduled-emails", get(api_list))
        .route(
            "/scheduled-emails/{id}",
            get(api_get).patch(api_patch).delete(api_delete),
        )
        .route("/emails/{id}", get(api_email))
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
    /// Its files: (name, size in words).
    pub attachments: Vec<(String, String)>,
}

/// What the recruiter typed into the compose form, shown again when it could
/// not be queued.
#[derive(Debug, Clone, Default)]
pub struct ComposeDraft {
    /// Whether this comes from a submitted form (else: a fresh form).
    pub submitted: bool,
    pub to: Vec<String>,
    pub cc: String,
    pub subject: String,
    pub body: String,
    pub reply_to: Option<i64>,
    pub send_at: String,
    /// Files that were chosen: a browser cannot be given them back, so the
    /// page asks for them again.
    pub files: Vec<String>,
}

/// The compose card's state after a refused submission: the reason and the draft.
#[derive(Debug, Clone, Default)]
pub struct ComposeRetry {
    pub error: Option<String>,
    pub draft: ComposeDraft,
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
    pub draft: ComposeDraft,
    /// The attachment limits, in words.
    pub max_attachment: String,
    pub max_total_attachment: String,
}

impl ComposeCard {
    /// Whether the To box of `address` is ticked: the first address on a
    /// fresh form, else what the recruiter ticked.
    pub fn to_checked(&self, address: &str, first: &bool) -> bool {
        if self.draft.submitted {
            self.draft
                .to
                .iter()
                .any(|t| t.trim().eq_ignore_ascii_case(address))
        } else {
            *first
        }
    }

    pub fn reply_selected(&self, thread: &i64) -> bool {
        self.draft.reply_to == Some(*thread)
    }
}

/// A byte count for people: `512 B`, `14 KB`, `3.2 MB` (binary units).
pub fn size_words(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    if bytes < KB {
        format!("{bytes} B")
    } else if bytes < MB {
        format!("{} KB", bytes.div_ceil(KB))
    } else if bytes.is_multiple_of(MB) {
        format!("{} MB", bytes / MB)
    } else {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    }
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
        attachments: item
            .attachments
            .iter()
            .map(|a| (a.filename.clone(), size_words(a.size)))
            .collect(),
    }
}

/// Loads the compose card for `viewer` on `candidate`'s page.
pub async fn card(
    state: &AppState,
    viewer: &Viewer,
    candidate: CandidateId,
    addresses: &[String],
    retry: ComposeRetry,
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
    let mut outgoing = state
        .store
        .list_outbox(
            user.org_id,
            OutboxFilter {
                user: Some(user.id),
                candidate: Some(candidate),
                ..OutboxFilter::default()
            },
        )
        .await?
        .iter()
        .map(|i| row(user, i))
        .collect::<Vec<_>>();
    let cfg = &state.config.outbox;
    let mut blocked = blocked;
    if not_enabled {
        let held = mark_held(&mut outgoing);
        if held > 0 {
            blocked = blocked.map(|b| format!("{b} {}", held_sentence(held)));
        }
    }
    Ok(ComposeCard {
        blocked,
        reauthorize,
        not_enabled,
        from,
        addresses: addresses.to_vec(),
        zone: user.time_zone.clone(),
        threads,
        outgoing,
        error: retry.error,
        draft: retry.draft,
        max_attachment: size_words(cfg.max_attachment_bytes as u64),
        max_total_attachment: size_words(cfg.max_total_attachment_bytes as u64),
    })
}

/// Why a queued message of a user without Email Connect waits (shown on
/// rows the worker has not reached yet, e.g. scheduled for later).
const HELD_FLAG_OFF: &str = "Held: Email Connect is turned off for you. It goes out when it is turned back on; cancel it if it should not.";

/// Gives queued rows without a reason the flag-off reason; returns how many
/// queued rows there are.
fn mark_held(rows: &mut [OutRow]) -> usize {
    let mut n = 0;
    for r in rows.iter_mut().filter(|r| r.status_code == "queued") {
        n += 1;
        if r.reason.is_none() {
            r.reason = Some(HELD_FLAG_OFF.to_owned());
        }
    }
    n
}

fn held_sentence(n: usize) -> String {
    format!(
        "Your {n} scheduled email{} {} held until Email Connect is turned back on for you; you can still cancel {}.",
        if n == 1 { "" } else { "s" },
        if n == 1 { "is" } else { "are" },
        if n == 1 { "it" } else { "them" },
    )
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

/// A submitted compose form.
#[derive(Default)]
struct ComposeForm {
    fields: Vec<(String, String)>,
    files: Vec<OutboxAttachment>,
    /// Names of every file chosen (kept or not).
    chosen: Vec<String>,
    /// A file over the limits: the form is refused with this reason.
    too_large: Option<String>,
}

/// Largest text field of the compose form (the body is at most 100,000 characters).
const MAX_FORM_TEXT: usize = 1024 * 1024;

/// Most bytes of a compose form read at all. Files over the attachment limits
/// are read to the end and dropped (so the browser gets the page that says so,
/// not a connection reset) up to this; beyond it the request is cut off.
pub fn compose_read_limit(cfg: &OutboxConfig) -> u64 {
    (cfg.max_total_attachment_bytes as u64)
        .saturating_mul(4)
        .saturating_add(16 * 1024 * 1024)
}

async fn read_compose_form(
    state: &AppState,
    viewer: &Viewer,
    req: Request,
) -> Result<ComposeForm, PageError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let form = if multipart {
        let mp = Multipart::from_request(req, state)
            .await
            .map_err(|e| PageError::bad_request(format!("The form could not be read: {e}")))?;
        read_multipart(&state.config.outbox, mp).await?
    } else {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM_TEXT)
            .await
            .map_err(|_| PageError::bad_request("The form is too large."))?;
        ComposeForm {
            fields: serde_urlencoded::from_bytes(&bytes)
                .map_err(|_| PageError::bad_request("The form could not be read."))?,
            ..ComposeForm::default()
        }
    };
    viewer.check_csrf(field(&form.fields, "_csrf").unwrap_or(""))?;
    Ok(form)
}

async fn read_multipart(cfg: &OutboxConfig, mut mp: Multipart) -> Result<ComposeForm, PageError> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        PageError::bad_request(format!("The form could not be read: {e}"))
    };
    let read_limit = compose_read_limit(cfg);
    let mut read: u64 = 0;
    let mut kept_total: usize = 0;
    let mut form = ComposeForm::default();
    while let Some(mut part) = mp.next_field().await.map_err(unreadable)? {
        let name = part.name().unwrap_or("").to_owned();
        // Some browsers send the whole path; only the last segment is the name.
        let file = part
            .file_name()
            .map(|f| f.rsplit(['/', '\\']).next().unwrap_or(f).to_owned());
        let content_type = part
            .content_type()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let cap = if file.is_some() {
            cfg.max_attachment_bytes
        } else {
            MAX_FORM_TEXT
        };
        let mut bytes = Vec::new();
        let mut size: u64 = 0;
        let mut fits = true;
        while let Some(chunk) = part.chunk().await.map_err(unreadable)? {
            size += chunk.len() as u64;
            read += chunk.len() as u64;
            if read > read_limit {
                return Err(PageError::too_large(format!(
                    "The upload is far over the attachment limits ({} each, {} in all). Go back, and choose smaller files.",
                    size_words(cfg.max_attachment_bytes as u64),
                    size_words(cfg.max_total_attachment_bytes as u64)
                )));
            }
            if fits && bytes.len() + chunk.len() <= cap {
                bytes.extend_from_slice(&chunk);
            } else {
                fits = false;
                bytes = Vec::new();
            }
        }
        let Some(filename) = file else {
            if !fits {
                return Err(PageError::bad_request(format!(
                    "The form field '{name}' is too long."
                )));
            }
            let text = String::from_utf8(bytes).map_err(|_| {
                PageError::bad_request(format!("The form field '{name}' is not UTF-8 text."))
            })?;
            form.fields.push((name, text));
            continue;
        };
        if filename.is_empty() && size == 0 {
            // The file input with nothing chosen.
            continue;
        }
        form.chosen.push(filename.clone());
        if form.too_large.is_some() {
            continue;
        }
        if !fits {
            form.too_large = Some(format!(
                "'{filename}' is {}; attachments can be at most {} each.",
                size_words(size),
                size_words(cfg.max_attachment_bytes as u64)
            ));
        } else if kept_total + bytes.len() > cfg.max_total_attachment_bytes {
            form.too_large = Some(format!(
                "The attachments add up to more than {}, the most one email can carry.",
                size_words(cfg.max_total_attachment_bytes as u64)
            ));
        } else {
            kept_total += bytes.len();
            form.files.push(OutboxAttachment {
                filename,
                content_type,
                bytes,
            });
        }
    }
    Ok(form)
}

async fn compose_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    req: Request,
) -> Result<Response, PageError> {
    let cid: CandidateId = id.parse().map_err(|_| PageError::not_found())?;
    let form = read_compose_form(&state, &viewer, req).await?;
    let fields = &form.fields;
    let reply = field(fields, "reply_to")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<i64>().ok());
    let draft = ComposeDraft {
        submitted: true,
        to: all(fields, "to"),
        cc: field(fields, "cc").unwrap_or("").to_owned(),
        subject: field(fields, "subject").unwrap_or("").to_owned(),
        body: field(fields, "body").unwrap_or("").to_owned(),
        reply_to: reply,
        send_at: field(fields, "send_at").unwrap_or("").to_owned(),
        files: form.chosen.clone(),
    };
    if let Some(why) = form.too_large {
        return again(
            &state,
            &viewer,
            &id,
            StatusCode::PAYLOAD_TOO_LARGE,
            why,
            draft,
        )
        .await;
    }
    let send_at = if field(fields, "mode") == Some("schedule") {
        match local_time(&viewer.user, &draft.send_at) {
            Ok(t) => Some(t),
            Err(e) => {
                return again(
                    &state,
                    &viewer,
                    &id,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e,
                    draft,
                )
                .await;
            }
        }
    } else {
        None
    };
    let input = ComposeInput {
        to: draft.to.clone(),
        cc: split_addresses(&draft.cc),
        subject: draft.subject.clone(),
        body_markdown: draft.body.clone(),
        attachments: form.files,
        reply_to_thread: reply.map(MailThreadId),
        send_at,
    };
    match outbox::submit(&state, &viewer.user, cid, input).await {
        Ok(_) => Ok(Redirect::to(&format!("/candidates/{cid}#outgoing")).into_response()),
        Err(SubmitError::CandidateNotFound) => Err(PageError::not_found()),
        Err(SubmitError::Store(e)) => Err(e.into()),
        Err(e) => {
            let status = match e.code() {
                "attachment_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            again(&state, &viewer, &id, status, e.to_string(), draft).await
        }
    }
}

/// The candidate page again, with `error` on the compose card and the form
/// filled in as it was sent.
async fn again(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    status: StatusCode,
    error: String,
    draft: ComposeDraft,
) -> Result<Response, PageError> {
    let (_, page) = crate::pages::render_candidate(
        state,
        viewer,
        id,
        None,
        None,
        String::new(),
        None,
        ComposeRetry {
            error: Some(error),
            draft,
        },
    )
    .await?;
    Ok((status, page).into_response())
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
    /// Email Connect is off for the viewer: what that means for their queue.
    held_notice: Option<String>,
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
                statuses: &[
                    OutboxStatus::Queued,
                    OutboxStatus::Sending,
                    OutboxStatus::Failed,
                    OutboxStatus::NeedsAttention,
                ],
                ..OutboxFilter::default()
            },
        )
        .await?;
    let mut rows: Vec<OutRow> = items.iter().map(|i| row(user, i)).collect();
    let mut held_notice = None;
    if !crate::flags::email_connect_enabled(&state, user).await? {
        let held = mark_held(&mut rows);
        held_notice = Some(if held > 0 {
            format!("{} {}", outbox::NOT_ENABLED, held_sentence(held))
        } else {
            outbox::NOT_ENABLED.to_owned()
        });
    }
    let page = ScheduledPage {
        nav: crate::pages::Nav::of(&viewer, "scheduled"),
        zone: user.time_zone.clone(),
        rows,
        csrf: viewer.csrf.clone(),
        held_notice,
    };
    let body = page.render().map_err(PageError::internal)?;
    Ok(axum::response::Html(body).into_response())
}

// ---- API ------------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    paths(api_create, api_list, api_get, api_patch, api_delete, api_email),
    components(schemas(
        EmailResource,
        AttachmentResource,
        NewEmailBody,
        AttachmentBody,
        PatchBody,
        EmailList
    ))
)]
pub struct EmailDoc;

/// A file of an outgoing email.
#[derive(Serialize, ToSchema)]
pub struct AttachmentResource {
    pub filename: String,
    pub content_type: String,
    /// Bytes.
    pub size: u64,
}

/// An outgoing email (sent now or scheduled) and where it is.
#[derive(Serialize, ToSchema)]
pub struct EmailResource {
    pub id: i64,
    pub candidate_id: i64,
    /// `scheduled` (waiting for `send_at`), `sending`, `retrying` (a temporary
    /// failure; tried again at `due_at`), `held` (waiting although due: send
    /// pacing, Email Connect turned off for the sender, a permission missing —
    /// see `status_reason`), `sent`, `failed`, `needs_attention` (the outcome
    /// is unknown and hirewire will not resend it on its own) or `cancelled`.
    pub status: &'static str,
    /// Why it is `held`, `retrying`, `failed` or `needs_attention`.
    pub status_reason: Option<String>,
    /// Whether it can still be edited or cancelled (it has not been handed to
    /// the provider yet).
    pub editable: bool,
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
    /// Provider calls made so far.
    pub attempts: u32,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
    /// Gmail message id / Graph immutable id, once sent.
    pub provider_message_id: Option<String>,
    /// Gmail threadId / Graph conversationId, once sent.
    pub provider_thread_id: Option<String>,
    pub sent_at: Option<String>,
    pub created_at: String,
}

/// Every value of [`EmailResource::status`].
pub const EMAIL_STATUSES: [&str; 8] = [
    "scheduled",
    "sending",
    "retrying",
    "held",
    "sent",
    "failed",
    "needs_attention",
    "cancelled",
];

/// The status the API reports for `item` at `now` (finer than the stored one).
pub fn email_status(item: &OutboxItem, now: Timestamp) -> &'static str {
    match item.status {
        OutboxStatus::Queued if item.hold_reason.is_some() => "held",
        OutboxStatus::Queued if item.attempts > 0 => "retrying",
        OutboxStatus::Queued if item.send_at.is_some_and(|t| t > now) => "scheduled",
        OutboxStatus::Queued | OutboxStatus::Sending => "sending",
        OutboxStatus::Sent => "sent",
        OutboxStatus::Failed => "failed",
        OutboxStatus::NeedsAttention => "needs_attention",
        OutboxStatus::Cancelled => "cancelled",
    }
}

/// The stored statuses an API status can be found in.
fn stored_statuses(status: &str) -> &'static [OutboxStatus] {
    match status {
        "scheduled" | "retrying" | "held" => &[OutboxStatus::Queued],
        "sending" => &[OutboxStatus::Queued, OutboxStatus::Sending],
        "sent" => &[OutboxStatus::Sent],
        "failed" => &[OutboxStatus::Failed],
        "needs_attention" => &[OutboxStatus::NeedsAttention],
        "cancelled" => &[OutboxStatus::Cancelled],
        _ => &[],
    }
}

fn resource(i: &OutboxItem, now: Timestamp) -> EmailResource {
    let status = email_status(i, now);
    let status_reason = match status {
        "held" => i.hold_reason.clone(),
        "retrying" | "failed" | "needs_attention" => i.last_error.clone(),
        _ => None,
    };
    EmailResource {
        id: i.id.get(),
        candidate_id: i.candidate_id.get(),
        status,
        status_reason,
        editable: i.status == OutboxStatus::Queued,
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
        provider_message_id: i.provider_message_id.clone(),
        provider_thread_id: i.provider_thread_id.clone(),
        sent_at: i.sent_at.map(|t| t.to_string()),
        created_at: i.created_at.to_string(),
    }
}

/// A file to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

/// An email to send now or schedule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEmailBody {
    /// One or more of the candidate's addresses.
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    /// May be empty on a reply (the conversation's subject is taken).
    #[serde(default)]
    subject: String,
    /// Markdown; sent as sanitized HTML with a text part.
    #[serde(default)]
    body_markdown: String,
    #[serde(default)]
    attachments: Vec<AttachmentBody>,
    /// Reply into this email conversation (thread id from the timeline).
    #[serde(default)]
    reply_to_thread_id: Option<i64>,
    /// RFC 3339 with an offset; absent or null: now.
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

/// Largest request body of `POST /candidates/{id}/emails`: the attachment
/// limit once base64-encoded, plus room for the rest of the JSON.
pub fn api_body_limit(cfg: &OutboxConfig) -> usize {
    cfg.max_total_attachment_bytes
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(2 * 1024 * 1024)
}

/// Sends an email to a candidate through the caller's own mailbox, now or at
/// `send_at`. It is stored (with its `Message-ID`) before any provider call and
/// sent by the outbox worker: follow it with `GET /emails/{id}`.
/// `Idempotency-Key` is honoured: a retry with the same key and body gets the
/// first answer (the same email) again, with `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/candidates/{id}/emails", tag = "email",
    params(("id" = i64, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    request_body = NewEmailBody,
    responses((status = 201, description = "Stored: sent at once (`sending`) or at `send_at` (`scheduled`)", body = EmailResource),
        (status = 400, description = "`invalid_json`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 403, description = "`feature_not_enabled`", body = ErrorBody),
        (status = 404, description = "`not_found`: the candidate or the conversation", body = ErrorBody),
        (status = 409, description = "What is missing to send: `inbox_not_connected`, `inbox_needs_reauthorization`, `send_permission_missing`, `access_view_only`, `email_access_off`, `no_provider`; or `idempotency_in_progress`", body = ErrorBody),
        (status = 413, description = "`request_too_large`: the body is over the attachment limit once base64-encoded", body = ErrorBody),
        (status = 422, description = "`recipient_not_candidate`, `no_recipient`, `invalid_address`, `header_injection`, `attachment_too_large`, `subject_required`, `body_required`, `send_at_in_past`, `invalid_send_at`, `invalid_attachment`, `invalid_message`, `invalid_field`, `idempotency_key_reused`", body = ErrorBody)))]
async fn api_create(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cfg = &state.config.outbox;
    let limit = api_body_limit(cfg);
    let body = read_capped(body, limit, (limit as u64).saturating_mul(2))
        .await
        .map_err(|()| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!(
                    "the request is too large: attachments may be at most {} each and {} in all",
                    size_words(cfg.max_attachment_bytes as u64),
                    size_words(cfg.max_total_attachment_bytes as u64)
                ),
            )
        })?;
    let path = format!("/candidates/{id}/emails");
    crate::api::idempotent(&state, &user, &headers, Method::POST, &path, &body, async {
        let cid: CandidateId = id.parse().map_err(|_| ApiError::not_found("candidate"))?;
        let b: NewEmailBody = crate::api::parse_json(&body)?;
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
            serde_json::to_value(resource(&item, state.now())).map_err(ApiError::internal)?,
        ))
    })
    .await
}

/// Reads `body`, keeping at most `keep` bytes. A longer body is read on and
/// dropped (up to `drain` bytes in all), so that the client gets the answer
/// rather than a reset connection; it is then `Err`.
async fn read_capped(mut body: Body, keep: usize, drain: u64) -> Result<axum::body::Bytes, ()> {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if over || kept.len() + data.len() > keep {
            over = true;
            kept = Vec::new();
            if seen > drain {
                return Err(());
            }
        } else {
            kept.extend_from_slice(&data);
        }
    }
    if over { Err(()) } else { Ok(kept.into()) }
}

#[derive(Deserialize, IntoParams)]
struct ListParams {
    /// Comma-separated statuses (see `EmailResource.status`). Default: everything
    /// not sent or cancelled yet — `scheduled`, `sending`, `retrying`, `held`,
    /// `failed`, `needs_attention`.
    status: Option<String>,
    /// Only emails to this candidate.
    candidate_id: Option<i64>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct EmailList {
    data: Vec<EmailResource>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

const OPEN_STATUSES: [&str; 6] = [
    "scheduled",
    "sending",
    "retrying",
    "held",
    "failed",
    "needs_attention",
];

/// The caller's outgoing emails, newest first: by default those not sent yet
/// (scheduled, sending, retrying, held) and those that went wrong (failed,
/// needs attention), each with its status and why.
#[utoipa::path(get, path = "/scheduled-emails", tag = "email", params(ListParams),
    responses((status = 200, body = EmailList),
        (status = 400, description = "`invalid_status`, `invalid_limit`, `invalid_cursor`", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn api_list(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Query(q): Query<ListParams>,
) -> Result<Json<EmailList>, ApiError> {
    let limit = crate::api::page_limit(q.limit)?;
    let mut before: Option<i64> = crate::api::parse_cursor(q.cursor.as_deref())?;
    let mut wanted: Vec<&'static str> = Vec::new();
    for s in q
        .status
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let known = EMAIL_STATUSES
            .into_iter()
            .find(|v| *v == s)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    format!("unknown status '{s}'; use {}", EMAIL_STATUSES.join(", ")),
                )
            })?;
        if !wanted.contains(&known) {
            wanted.push(known);
        }
    }
    if wanted.is_empty() {
        wanted = OPEN_STATUSES.to_vec();
    }
    let mut stored: Vec<OutboxStatus> = Vec::new();
    for s in &wanted {
        for st in stored_statuses(s) {
            if !stored.contains(st) {
                stored.push(*st);
            }
        }
    }
    // Rows are read a page at a time by stored status; the finer API status
    // (scheduled, held, …) is applied here, reading on until one match past
    // the page is found (so `next_cursor` is null exactly on the last page).
    let now = state.now();
    let want = limit as usize;
    let mut data: Vec<EmailResource> = Vec::new();
    'pages: loop {
        let rows = state
            .store
            .list_outbox(
                user.org_id,
                OutboxFilter {
                    user: Some(user.id),
                    candidate: q.candidate_id.map(CandidateId),
                    statuses: &stored,
                    before: before.map(OutboxId),
                    limit: Some(limit + 1),
                },
            )
            .await?;
        let last_page = rows.len() <= want;
        for item in &rows {
            before = Some(item.id.get());
            if wanted.contains(&email_status(item, now)) {
                data.push(resource(item, now));
                if data.len() > want {
                    break 'pages;
                }
            }
        }
        if last_page {
            break;
        }
    }
    let next_cursor = if data.len() > want {
        data.truncate(want);
        data.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(EmailList { data, next_cursor }))
}

async fn api_item(state: &AppState, user: &User, id: &str) -> Result<OutboxItem, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("email"))?;
    state
        .store
        .outbox_item(user.org_id, OutboxId(id))
        .await?
        .filter(|i| outbox::may_manage(user, i))
        .ok_or_else(|| ApiError::not_found("email"))
}

/// One of the caller's outgoing emails (the same as `GET /emails/{id}`).
#[utoipa::path(get, path = "/scheduled-emails/{id}", tag = "email", params(("id" = i64, Path)),
    responses((status = 200, body = EmailResource), (status = 404, description = "`not_found`: no such email of the caller", body = ErrorBody)))]
async fn api_get(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<EmailResource>, ApiError> {
    Ok(Json(resource(
        &api_item(&state, &user, &id).await?,
        state.now(),
    )))
}

/// An email's status (`sending`, `sent`, `scheduled`, `held`, `failed`,
/// `needs_attention`, …) with hirewire's `Message-ID` and, once sent, the
/// provider's message id and thread id.
#[utoipa::path(get, path = "/emails/{id}", tag = "email", params(("id" = i64, Path)),
    responses((status = 200, body = EmailResource), (status = 404, description = "`not_found`: no such email of the caller", body = ErrorBody)))]
async fn api_email(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<EmailResource>, ApiError> {
    Ok(Json(resource(
        &api_item(&state, &user, &id).await?,
        state.now(),
    )))
}

/// Changes to an email not sent yet (absent fields stay).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    /// One or more of the candidate's addresses.
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

/// The 409 for an email that can no longer change.
fn not_editable(item: &OutboxItem) -> ApiError {
    match item.status {
        OutboxStatus::Sent => ApiError::conflict(
            "already_sent",
            "the email has already been sent; it can no longer be edited or cancelled",
        ),
        OutboxStatus::Sending => ApiError::conflict(
            "not_editable",
            "the email is being sent right now; it can no longer be edited or cancelled",
        ),
        OutboxStatus::Cancelled => ApiError::conflict("not_editable", "the email was cancelled"),
        _ => ApiError::conflict(
            "not_editable",
            format!(
                "the email is {}; only an email not sent yet can be edited or cancelled",
                item.status.as_str().replace('_', " ")
            ),
        ),
    }
}

/// After the store refused a change: re-read the row to say why.
async fn refused(state: &AppState, user: &User, id: OutboxId, e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { .. } => match state.store.outbox_item(user.org_id, id).await {
            Ok(Some(item)) => not_editable(&item),
            Ok(None) => ApiError::not_found("email"),
            Err(e) => e.into(),
        },
        StoreError::Invalid(m) => ApiError::unprocessable("invalid_message", m),
        StoreError::NotFound => ApiError::not_found("email"),
        e => e.into(),
    }
}

fn header_safe(what: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "header_injection",
            format!("the {what} contains a line break or control character, which is not allowed"),
        ));
    }
    Ok(())
}

/// Edits an email that has not been sent yet: the addresses, subject, body
/// or time. Checked like a new one.
#[utoipa::path(patch, path = "/scheduled-emails/{id}", tag = "email", params(("id" = i64, Path)), request_body = PatchBody,
    responses((status = 200, body = EmailResource),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_sent`; `not_editable` (being sent, cancelled, failed or needing attention)", body = ErrorBody),
        (status = 422, description = "`recipient_not_candidate`, `no_recipient`, `invalid_address`, `header_injection`, `subject_required`, `send_at_in_past`, `invalid_send_at`, `invalid_field`", body = ErrorBody)))]
async fn api_patch(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<EmailResource>, ApiError> {
    let item = api_item(&state, &user, &id).await?;
    if item.status != OutboxStatus::Queued {
        return Err(not_editable(&item));
    }
    let b: PatchBody = crate::api::parse_json(&body)?;
    if let Some(s) = &b.subject {
        header_safe("subject", s)?;
        if s.trim().is_empty() {
            return Err(ApiError::unprocessable(
                "subject_required",
                "write a subject",
            ));
        }
    }
    let cand = state
        .store
        .candidate(user.org_id, item.candidate_id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    let mut to = None;
    if let Some(list) = &b.to {
        let mut found = Vec::new();
        for a in list {
            header_safe("To", a)?;
            let key = hirewire_domain::email::AddressKey::of(a.trim());
            let Some(e) = cand.emails.iter().find(|e| e.key == key) else {
                return Err(ApiError::unprocessable(
                    "recipient_not_candidate",
                    format!("'{}' is not an address of {}", a.trim(), cand.name),
                ));
            };
            let address = e.address.as_str().to_owned();
            if !found.contains(&address) {
                found.push(address);
            }
        }
        if found.is_empty() {
            return Err(ApiError::unprocessable(
                "no_recipient",
                "choose at least one of the candidate's addresses in To",
            ));
        }
        to = Some(found);
    }
    let mut cc = None;
    if let Some(list) = &b.cc {
        let mut parsed = Vec::new();
        for a in list.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            header_safe("Cc", a)?;
            let e = hirewire_domain::email::EmailAddress::parse(a).map_err(|_| {
                ApiError::unprocessable(
                    "invalid_address",
                    format!("'{a}' in Cc is not a valid email address"),
                )
            })?;
            parsed.push(e.as_str().to_owned());
        }
        cc = Some(parsed);
    }
    let now = state.now();
    let send_at = match b.send_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => {
            let at = parse_time(&s)?;
            if at < now - jiff::SignedDuration::from_secs(60) {
                return Err(ApiError::unprocessable(
                    "send_at_in_past",
                    "the scheduled time has passed",
                ));
            }
            Some(Some(at))
        }
    };
    let edit = OutboxEdit {
        to: to.as_deref(),
        cc: cc.as_deref(),
        subject: b.subject.as_deref().map(str::trim),
        body_markdown: b.body_markdown.as_deref(),
        send_at,
    };
    let item = match state
        .store
        .edit_outbox(user.org_id, item.id, &edit, now)
        .await
    {
        Ok(item) => item,
        Err(e) => return Err(refused(&state, &user, item.id, e).await),
    };
    Ok(Json(resource(&item, state.now())))
}

/// Cancels an email that has not been sent yet: it will never go out.
#[utoipa::path(delete, path = "/scheduled-emails/{id}", tag = "email", params(("id" = i64, Path)),
    responses((status = 200, description = "Cancelled", body = EmailResource),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_sent`; `not_editable` (being sent, already cancelled, failed or needing attention)", body = ErrorBody)))]
async fn api_delete(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<EmailResource>, ApiError> {
    let item = api_item(&state, &user, &id).await?;
    let item = match state
        .store
        .cancel_outbox(user.org_id, item.id, state.now())
        .await
    {
        Ok(item) => item,
        Err(e) => return Err(refused(&state, &user, item.id, e).await),
    };
    Ok(Json(resource(&item, state.now())))
}
