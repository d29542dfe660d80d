//! A candidate's timeline: email conversations from recruiters' synced
//! mailboxes beside InMail conversations, newest conversation first.
//!
//! - Pages: the candidate page shows it (see [`load`]); an email body is served
//!   on its own route, `GET /mail/threads/{thread}/messages/{message}/body`,
//!   with the mail core's CSP and headers and embedded in a sandboxed iframe
//!   (`?images=1`: remote images allowed, as the viewer chose for that
//!   message). "Share with team" / "Stop sharing" are CSRF forms posting to
//!   `/mail/threads/{id}/share` and `/mail/threads/{id}/unshare`.
//! - API: `GET /api/v1/candidates/{id}/timeline`, `POST` / `DELETE
//!   /api/v1/mail/threads/{id}/share`.
//! - Visibility is the store's ([`hirewire_store::MailViewer`]): own threads and
//!   shared ones; admins read no more, but may take a shared thread back.
//!   Anything not visible answers 404, as if it did not exist.
//! - The body route names the thread as well as the message: the store reads
//!   messages by conversation (visibility and the Message-ID dedupe both live
//!   there), so a message is served only when it is on the viewer's view of
//!   that conversation.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hirewire_domain::ids::{CandidateId, MailMessageId, MailThreadId, UserId};
use hirewire_store::{
    Direction, EmailConversation, InMailConversation, MailAddress, MailMessage, MailThread,
    MailViewer, Role, StoreError, TimelineCursor, TimelineItem, TimelineKind, User,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{ApiCaller, CsrfForm, Viewer};
use crate::error::{ApiError, ErrorBody, PageError};

/// Conversations per page on the candidate page.
pub const PAGE_CONVERSATIONS: u32 = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/mail/threads/{thread}/messages/{message}/body",
            get(message_body),
        )
        .route("/mail/threads/{id}/share", post(share_page))
        .route("/mail/threads/{id}/unshare", post(unshare_page))
        .route("/api/v1/candidates/{id}/timeline", get(api_timeline))
        .route(
            "/api/v1/mail/threads/{id}/share",
            post(api_share).delete(api_unshare),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(api_timeline, api_share, api_unshare),
    components(schemas(
        TimelineList,
        ConversationResource,
        TimelineMessageResource,
        AddressResource,
        AttachmentResource,
        ThreadResource
    ))
)]
pub struct TimelineDoc;

fn mail_viewer(user: &User) -> MailViewer {
    MailViewer {
        user: user.id,
        is_admin: user.role == Role::Admin,
    }
}

// ---- cursors ----------------------------------------------------------------

/// `{latest_at ms}.{e|i}.{id}`: opaque to clients.
pub fn encode_cursor(c: &TimelineCursor) -> String {
    let kind = match c.kind {
        TimelineKind::Email => 'e',
        TimelineKind::InMail => 'i',
        TimelineKind::Booking => 'b',
    };
    format!("{}.{kind}.{}", c.latest_at.as_millisecond(), c.id)
}

pub fn decode_cursor(s: &str) -> Option<TimelineCursor> {
    let mut parts = s.split('.');
    let ms: i64 = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "e" => TimelineKind::Email,
        "i" => TimelineKind::InMail,
        "b" => TimelineKind::Booking,
        _ => return None,
    };
    let id: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(TimelineCursor {
        latest_at: Timestamp::from_millisecond(ms).ok()?,
        kind,
        id,
    })
}

// ---- what both the page and the API read -------------------------------------

/// One conversation with its messages, as the viewer may see it.
enum Loaded {
    Email {
        conv: EmailConversation,
        messages: Vec<MailMessage>,
    },
    InMail {
        conv: InMailConversation,
        messages: Vec<hirewire_store::InMail>,
    },
    Booking(Box<hirewire_store::Booking>),
}

struct LoadedPage {
    items: Vec<Loaded>,
    next: Option<TimelineCursor>,
}

async fn load_page(
    state: &AppState,
    user: &User,
    candidate: CandidateId,
    before: Option<TimelineCursor>,
    limit: u32,
) -> Result<LoadedPage, StoreError> {
    let org = user.org_id;
    let viewer = mail_viewer(user);
    let page = state
        .store
        .candidate_timeline(org, candidate, viewer, before, limit)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for item in page.items {
        items.push(match item {
            TimelineItem::Email(conv) => {
                let messages = match state
                    .store
                    .thread_messages(org, conv.thread_id, viewer)
                    .await
                {
                    Ok(m) => m,
                    // Unshared between the two reads: not visible any more.
                    Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                Loaded::Email { conv, messages }
            }
            TimelineItem::InMail(conv) => {
                let messages = state
                    .store
                    .inmail_conversation(org, candidate, conv.recruiter)
                    .await?;
                Loaded::InMail { conv, messages }
            }
            TimelineItem::Booking(b) => Loaded::Booking(b),
        });
    }
    Ok(LoadedPage {
        items,
        next: page.next,
    })
}

/// A Scheduler booking as a timeline item: what was booked, for when, and
/// what the candidate wrote.
async fn booking_view(
    names: &mut Names<'_>,
    b: &hirewire_store::Booking,
    tz: &TimeZone,
) -> Result<ConversationView, StoreError> {
    let recruiter = names.of(b.user_id).await?;
    let kind = crate::scheduling::kind_label(b.meeting_kind);
    let at = when(b.slot.starts_at, tz);
    let (title, subject) = match b.status {
        hirewire_store::BookingStatus::Confirmed => (
            format!("{kind} booked with {recruiter}"),
            format!("{kind} on {at}"),
        ),
        hirewire_store::BookingStatus::Cancelled => (
            format!("{kind} with {recruiter} cancelled"),
            format!("Cancelled: {kind} that was on {at}"),
        ),
    };
    let mut text = format!("Booked by {} <{}>", b.attendee.name, b.attendee.email);
    if let Some(p) = &b.attendee.phone {
        text.push_str(&format!(" · phone {p}"));
    }
    text.push_str(&format!(" · their time zone {}", b.attendee.time_zone));
    if let Some(n) = &b.attendee.note {
        text.push_str(&format!("\nNote: {n}"));
    }
    Ok(ConversationView {
        kind: "booking",
        channel: "Scheduler",
        title,
        latest: when(b.updated_at, tz),
        shared: true,
        source: String::new(),
        actions: Vec::new(),
        messages: vec![MessageView {
            id: format!("booking-{}", b.id),
            channel: "Scheduler",
            direction: "inbound",
            from: b.attendee.name.clone(),
            to: recruiter,
            cc: String::new(),
            subject,
            when: when(b.updated_at, tz),
            attachments: Vec::new(),
            text: Some(text),
            body_url: None,
            images_url: None,
        }],
    })
}

/// Display names of users of the org, read once each.
struct Names<'a> {
    state: &'a AppState,
    org: hirewire_domain::ids::OrgId,
    known: std::collections::HashMap<UserId, String>,
}

impl Names<'_> {
    async fn of(&mut self, id: UserId) -> Result<String, StoreError> {
        if let Some(n) = self.known.get(&id) {
            return Ok(n.clone());
        }
        let name = self
            .state
            .store
            .user_by_id(id)
            .await?
            .filter(|u| u.org_id == self.org)
            .map_or_else(|| "A former user".to_owned(), |u| u.display_name);
        self.known.insert(id, name.clone());
        Ok(name)
    }
}

fn address_text(a: &MailAddress) -> String {
    match a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => format!("{n} <{}>", a.address),
        None => a.address.clone(),
    }
}

fn join_addresses(list: &[MailAddress]) -> String {
    list.iter().map(address_text).collect::<Vec<_>>().join(", ")
}

fn when(at: Timestamp, tz: &TimeZone) -> String {
    at.to_zoned_datetime(tz.clone())
        .strftime("%b %-d, %Y %H:%M %Z")
        .to_string()
}

fn body_path(thread: MailThreadId, message: MailMessageId) -> String {
    format!("/mail/threads/{thread}/messages/{message}/body")
}

// ---- the candidate page's part ------------------------------------------------

/// A button on a conversation: share or take back one thread.
pub struct ShareAction {
    pub thread_id: MailThreadId,
    /// `share` or `unshare`.
    pub action: &'static str,
    pub label: String,
}

pub struct MessageView {
    pub id: String,
    /// `InMail` or `Email`.
    pub channel: &'static str,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub when: String,
    pub attachments: Vec<String>,
    /// InMail: the text (auto-escaped by the template).
    pub text: Option<String>,
    /// Email: the iframe's `src`.
    pub body_url: Option<String>,
    /// Email with remote images replaced: the "show images" link's `href`.
    pub images_url: Option<String>,
}

pub struct ConversationView {
    /// `email` or `inmail`.
    pub kind: &'static str,
    pub channel: &'static str,
    pub title: String,
    pub latest: String,
    pub shared: bool,
    /// Who the conversation comes from ("riley's mailbox", …).
    pub source: String,
    pub actions: Vec<ShareAction>,
    /// Newest first (the API lists them oldest first).
    pub messages: Vec<MessageView>,
}

pub struct TimelineView {
    pub candidate: CandidateId,
    pub conversations: Vec<ConversationView>,
    /// The "Older" link's `before` value.
    pub older: Option<String>,
    /// This page is not the first.
    pub paged: bool,
}

/// The candidate page's timeline for `viewer`, from `before` (a cursor from
/// an "Older" link; an invalid one is a 400).
pub async fn load(
    state: &AppState,
    viewer: &Viewer,
    candidate: CandidateId,
    candidate_name: &str,
    before: Option<&str>,
) -> Result<TimelineView, PageError> {
    let before = match before.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            decode_cursor(s)
                .ok_or_else(|| PageError::bad_request("That page link is not valid."))?,
        ),
        None => None,
    };
    let user = &viewer.user;
    let page = load_page(state, user, candidate, before, PAGE_CONVERSATIONS).await?;
    let tz = TimeZone::get(&user.time_zone).unwrap_or(TimeZone::UTC);
    let mut names = Names {
        state,
        org: user.org_id,
        known: Default::default(),
    };
    let mut conversations = Vec::with_capacity(page.items.len());
    for item in page.items {
        conversations.push(match item {
            Loaded::Email { conv, messages } => {
                email_view(&mut names, user, &conv, messages, &tz).await?
            }
            Loaded::InMail { conv, messages } => {
                let recruiter = match conv.recruiter {
                    Some(r) => names.of(r).await?,
                    None => "A former user".to_owned(),
                };
                let mut views = Vec::with_capacity(messages.len());
                // The page reads newest first, messages too.
                for m in messages.into_iter().rev() {
                    let from = match (m.direction, m.author_user_id) {
                        (Direction::Inbound, _) => candidate_name.to_owned(),
                        (Direction::Outbound, Some(a)) => names.of(a).await?,
                        (Direction::Outbound, None) => "A former user".to_owned(),
                    };
                    views.push(MessageView {
                        id: format!("inmail-{}", m.id),
                        channel: "InMail",
                        direction: m.direction.as_str(),
                        to: match m.direction {
                            Direction::Inbound => String::new(),
                            Direction::Outbound => candidate_name.to_owned(),
                        },
                        from,
                        cc: String::new(),
                        subject: String::new(),
                        when: when(m.sent_at, &tz),
                        attachments: Vec::new(),
                        text: Some(m.body),
                        body_url: None,
                        images_url: None,
                    });
                }
                ConversationView {
                    kind: "inmail",
                    channel: "InMail",
                    title: match conv.recruiter {
                        Some(_) => format!("InMail with {recruiter}"),
                        None => "InMail from the candidate".to_owned(),
                    },
                    latest: when(conv.latest_at, &tz),
                    shared: true,
                    source: "InMail is visible to the whole team".to_owned(),
                    actions: Vec::new(),
                    messages: views,
                }
            }
            Loaded::Booking(b) => booking_view(&mut names, &b, &tz).await?,
        });
    }
    Ok(TimelineView {
        candidate,
        conversations,
        older: page.next.as_ref().map(encode_cursor),
        paged: before.is_some(),
    })
}

async fn email_view(
    names: &mut Names<'_>,
    user: &User,
    conv: &EmailConversation,
    messages: Vec<MailMessage>,
    tz: &TimeZone,
) -> Result<ConversationView, StoreError> {
    let is_admin = user.role == Role::Admin;
    let mut actions = Vec::new();
    let mut owners = Vec::new();
    for t in &conv.threads {
        let owner = names.of(t.owner_user_id).await?;
        let own = t.owner_user_id == user.id;
        owners.push(if own {
            "your mailbox".to_owned()
        } else {
            format!("{owner}'s mailbox")
        });
        if own && !t.shared {
            actions.push(ShareAction {
                thread_id: t.id,
                action: "share",
                label: "Share with team".into(),
            });
        } else if t.shared && (own || is_admin) {
            actions.push(ShareAction {
                thread_id: t.id,
                action: "unshare",
                label: if own {
                    "Stop sharing".into()
                } else {
                    format!("Stop sharing {owner}'s copy")
                },
            });
        }
    }
    let title = conv
        .threads
        .iter()
        .find_map(|t| t.subject.clone())
        .or_else(|| messages.iter().find_map(|m| m.subject.clone()))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "(no subject)".to_owned());
    let views = messages
        .into_iter()
        .rev()
        .map(|m| {
            let body_url = body_path(conv.thread_id, m.id);
            let blocked = m.body_html_sanitized.as_deref().map_or(0, |h| {
                hirewire_mail::render_html(h, false).blocked_remote_images
            });
            MessageView {
                id: format!("mail-{}", m.id),
                channel: "Email",
                direction: m.direction.as_str(),
                from: address_text(&m.from),
                to: join_addresses(&m.to),
                cc: join_addresses(&m.cc),
                subject: m.subject.unwrap_or_default(),
                when: when(m.sent_at, tz),
                attachments: m
                    .attachments
                    .into_iter()
                    .map(|a| {
                        a.name
                            .unwrap_or_else(|| format!("unnamed ({})", a.content_type))
                    })
                    .collect(),
                text: None,
                images_url: (blocked > 0).then(|| format!("{body_url}?images=1")),
                body_url: Some(body_url),
            }
        })
        .collect();
    Ok(ConversationView {
        kind: "email",
        channel: "Email",
        title,
        latest: when(conv.latest_at, tz),
        shared: conv.threads.iter().any(|t| t.shared),
        source: format!("From {}", owners.join(" and ")),
        actions,
        messages: views,
    })
}

// ---- the body route -----------------------------------------------------------

#[derive(Deserialize)]
struct BodyQuery {
    images: Option<String>,
}

async fn message_body(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((thread, message)): Path<(String, String)>,
    Query(q): Query<BodyQuery>,
) -> Result<Response, PageError> {
    let thread: MailThreadId = thread.parse().map_err(|_| PageError::not_found())?;
    let message: MailMessageId = message.parse().map_err(|_| PageError::not_found())?;
    let show_images = q.images.as_deref() == Some("1");
    let messages = match state
        .store
        .thread_messages(viewer.user.org_id, thread, mail_viewer(&viewer.user))
        .await
    {
        Ok(m) => m,
        Err(StoreError::NotFound) => return Err(PageError::not_found()),
        Err(e) => return Err(e.into()),
    };
    let m = messages
        .into_iter()
        .find(|m| m.id == message)
        .ok_or_else(PageError::not_found)?;
    let inner = match (&m.body_html_sanitized, &m.body_text) {
        (Some(h), _) => hirewire_mail::render_html(h, show_images).html,
        (None, Some(t)) => hirewire_mail::text_to_html(t),
        (None, None) => hirewire_mail::text_to_html(&m.snippet),
    };
    let doc = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>body{{font:14px/1.5 system-ui,sans-serif;margin:8px;color:#1d2939;overflow-wrap:anywhere}}img{{max-width:100%;height:auto}}</style></head><body>{inner}</body></html>"
    );
    let mut res = doc.into_response();
    let headers = res.headers_mut();
    for (name, value) in hirewire_mail::body_response_headers(show_images) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(PageError::internal)?;
        headers.insert(name, HeaderValue::from_static(value));
    }
    // The app answers DENY elsewhere; the body is framed by the app's own pages.
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(res)
}

// ---- share / unshare (pages) --------------------------------------------------

/// Shares (`share`) or takes back a thread as `user`, and records it in the
/// audit log (who, which thread, whose mailbox; never the subject).
async fn set_sharing(
    state: &AppState,
    user: &User,
    thread: MailThreadId,
    share: bool,
) -> Result<MailThread, StoreError> {
    let (org, viewer, now) = (user.org_id, mail_viewer(user), state.now());
    let t = if share {
        state.store.share_thread(org, thread, viewer, now).await?
    } else {
        state.store.unshare_thread(org, thread, viewer, now).await?
    };
    let detail = serde_json::json!({ "owner_user_id": t.owner_user_id.get() });
    let action = if share {
        "mail.thread_shared"
    } else {
        "mail.thread_unshared"
    };
    let event = hirewire_store::NewAudit {
        org_id: Some(org),
        actor_user_id: Some(user.id),
        action,
        target: &format!("mail_thread:{}", t.id),
        detail: &detail,
        ip: None,
    };
    if let Err(e) = state.store.record_audit(&event, now).await {
        tracing::error!(error = %e, action, "could not record an audit event");
    }
    Ok(t)
}

#[derive(Deserialize)]
struct ShareForm {
    #[serde(default)]
    candidate: String,
}

fn back_to(candidate: &str) -> Response {
    match candidate.parse::<CandidateId>() {
        Ok(c) => Redirect::to(&format!("/candidates/{c}")).into_response(),
        Err(_) => Redirect::to("/candidates").into_response(),
    }
}

async fn share_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, form): CsrfForm<ShareForm>,
) -> Result<Response, PageError> {
    let thread: MailThreadId = id.parse().map_err(|_| PageError::not_found())?;
    match set_sharing(&state, &viewer.user, thread, true).await {
        Ok(_) => Ok(back_to(&form.candidate)),
        Err(StoreError::NotFound) => Err(PageError::not_found()),
        Err(e) => Err(e.into()),
    }
}

async fn unshare_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, form): CsrfForm<ShareForm>,
) -> Result<Response, PageError> {
    let thread: MailThreadId = id.parse().map_err(|_| PageError::not_found())?;
    match set_sharing(&state, &viewer.user, thread, false).await {
        Ok(_) => Ok(back_to(&form.candidate)),
        Err(StoreError::NotFound) => Err(PageError::not_found()),
        Err(e) => Err(e.into()),
    }
}

// ---- API ----------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct AddressResource {
    name: Option<String>,
    address: String,
}

impl From<MailAddress> for AddressResource {
    fn from(a: MailAddress) -> Self {
        Self {
            name: a.name,
            address: a.address,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttachmentResource {
    name: Option<String>,
    content_type: String,
    size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadResource {
    id: i64,
    owner_user_id: i64,
    shared: bool,
    shared_by: Option<i64>,
    shared_at: Option<String>,
}

impl From<&MailThread> for ThreadResource {
    fn from(t: &MailThread) -> Self {
        Self {
            id: t.id.get(),
            owner_user_id: t.owner_user_id.get(),
            shared: t.shared,
            shared_by: t.shared_by.map(|u| u.get()),
            shared_at: t.shared_at.map(|a| a.to_string()),
        }
    }
}

/// One message of a conversation. Email fields are null for InMail and the
/// other way round.
#[derive(Serialize, ToSchema)]
pub struct TimelineMessageResource {
    id: i64,
    /// `email` or `inmail`.
    channel: &'static str,
    /// `inbound` (from the candidate) or `outbound`.
    direction: String,
    /// RFC 3339, UTC.
    sent_at: String,
    /// InMail: its author (null for inbound).
    author_user_id: Option<i64>,
    /// InMail: the text.
    body: Option<String>,
    /// Email: the mailbox it was synced from.
    owner_user_id: Option<i64>,
    from: Option<AddressResource>,
    to: Vec<AddressResource>,
    cc: Vec<AddressResource>,
    subject: Option<String>,
    /// Email: its Message-ID (normalized), if any.
    message_id: Option<String>,
    attachments: Vec<AttachmentResource>,
    snippet: Option<String>,
    /// Email: the body as safe HTML (sanitized by the mail core, remote images
    /// replaced by a placeholder). Show it only in a sandboxed frame.
    body_html: Option<String>,
    /// Email: how many remote images `body_html` replaced.
    remote_images_blocked: Option<usize>,
    body_text: Option<String>,
}

/// One conversation: an email thread (the visible threads of one thread key,
/// one per mailbox) or all InMail between one recruiter and the candidate.
#[derive(Serialize, ToSchema)]
pub struct ConversationResource {
    /// `email`, `inmail` or `booking`.
    kind: &'static str,
    /// RFC 3339, UTC: its latest message (the timeline's order).
    latest_at: String,
    /// Email: the thread to pass to the share endpoints (the smallest visible one).
    thread_id: Option<i64>,
    /// Email: the visible threads (one per owner).
    threads: Vec<ThreadResource>,
    subject: Option<String>,
    /// InMail: the recruiter (null: inbound InMail and former users).
    recruiter_user_id: Option<i64>,
    /// Oldest first; a message in several mailboxes (same Message-ID) appears once.
    messages: Vec<TimelineMessageResource>,
    /// `booking`: the Scheduler booking (by its last change: booked, moved or cancelled).
    booking: Option<crate::scheduling_api::BookingResource>,
}

#[derive(Serialize, ToSchema)]
pub struct TimelineList {
    data: Vec<ConversationResource>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
struct TimelineParams {
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1–100, default 20.
    limit: Option<u32>,
}

fn email_message(m: MailMessage) -> TimelineMessageResource {
    let rendered = m
        .body_html_sanitized
        .as_deref()
        .map(|h| hirewire_mail::render_html(h, false));
    TimelineMessageResource {
        id: m.id.get(),
        channel: "email",
        direction: m.direction.as_str().to_owned(),
        sent_at: m.sent_at.to_string(),
        author_user_id: None,
        body: None,
        owner_user_id: Some(m.owner_user_id.get()),
        from: Some(m.from.into()),
        to: m.to.into_iter().map(Into::into).collect(),
        cc: m.cc.into_iter().map(Into::into).collect(),
        subject: m.subject,
        message_id: m.message_id_header,
        attachments: m
            .attachments
            .into_iter()
            .map(|a| AttachmentResource {
                name: a.name,
                content_type: a.content_type,
                size: a.size,
            })
            .collect(),
        snippet: Some(m.snippet),
        remote_images_blocked: rendered.as_ref().map(|r| r.blocked_remote_images),
        body_html: rendered.map(|r| r.html),
        body_text: m.body_text,
    }
}

fn inmail_message(m: hirewire_store::InMail) -> TimelineMessageResource {
    TimelineMessageResource {
        id: m.id.get(),
        channel: "inmail",
        direction: m.direction.as_str().to_owned(),
        sent_at: m.sent_at.to_string(),
        author_user_id: m.author_user_id.map(|u| u.get()),
        body: Some(m.body),
        owner_user_id: None,
        from: None,
        to: Vec::new(),
        cc: Vec::new(),
        subject: None,
        message_id: None,
        attachments: Vec::new(),
        snippet: None,
        body_html: None,
        remote_images_blocked: None,
        body_text: None,
    }
}

/// A candidate's conversations (email and InMail), newest first by latest
/// message. Email shows the caller's own synced conversations and those
/// shared with the team.
#[utoipa::path(get, path = "/candidates/{id}/timeline", tag = "timeline", params(("id" = i64, Path), TimelineParams),
    responses((status = 200, body = TimelineList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn api_timeline(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    Query(p): Query<TimelineParams>,
) -> Result<Json<TimelineList>, ApiError> {
    let id: CandidateId = id.parse().map_err(|_| ApiError::not_found("candidate"))?;
    let limit = match p.limit.unwrap_or(PAGE_CONVERSATIONS) {
        n @ 1..=hirewire_store::MAX_TIMELINE_PAGE => n,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!(
                    "limit must be between 1 and {}",
                    hirewire_store::MAX_TIMELINE_PAGE
                ),
            ));
        }
    };
    let before = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
        })?),
        None => None,
    };
    state
        .store
        .candidate(user.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    let page = load_page(&state, &user, id, before, limit).await?;
    let data = page
        .items
        .into_iter()
        .map(|item| match item {
            Loaded::Email { conv, messages } => ConversationResource {
                kind: "email",
                latest_at: conv.latest_at.to_string(),
                thread_id: Some(conv.thread_id.get()),
                threads: conv.threads.iter().map(Into::into).collect(),
                subject: conv
                    .threads
                    .iter()
                    .find_map(|t| t.subject.clone())
                    .or_else(|| messages.iter().find_map(|m| m.subject.clone())),
                recruiter_user_id: None,
                messages: messages.into_iter().map(email_message).collect(),
                booking: None,
            },
            Loaded::InMail { conv, messages } => ConversationResource {
                kind: "inmail",
                latest_at: conv.latest_at.to_string(),
                thread_id: None,
                threads: Vec::new(),
                subject: None,
                recruiter_user_id: conv.recruiter.map(|u| u.get()),
                messages: messages.into_iter().map(inmail_message).collect(),
                booking: None,
            },
            Loaded::Booking(b) => ConversationResource {
                kind: "booking",
                latest_at: b.updated_at.to_string(),
                thread_id: None,
                threads: Vec::new(),
                subject: None,
                recruiter_user_id: Some(b.user_id.get()),
                messages: Vec::new(),
                booking: Some(b.as_ref().into()),
            },
        })
        .collect();
    Ok(Json(TimelineList {
        data,
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

fn thread_id(raw: &str) -> Result<MailThreadId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("thread"))
}

fn thread_not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("thread"),
        other => other.into(),
    }
}

/// Shares one of the caller's email threads with the whole team. Only the
/// thread's owner may (an admin cannot share someone's private mail).
#[utoipa::path(post, path = "/mail/threads/{id}/share", tag = "timeline", params(("id" = i64, Path)),
    responses((status = 200, body = ThreadResource), (status = 404, body = ErrorBody)))]
async fn api_share(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ThreadResource>), ApiError> {
    let t = set_sharing(&state, &user, thread_id(&id)?, true)
        .await
        .map_err(thread_not_found)?;
    Ok((StatusCode::OK, Json((&t).into())))
}

/// Takes a shared thread back: private to its owner again. Allowed to the
/// owner, and to an admin for a thread that is shared.
#[utoipa::path(delete, path = "/mail/threads/{id}/share", tag = "timeline", params(("id" = i64, Path)),
    responses((status = 200, body = ThreadResource), (status = 404, body = ErrorBody)))]
async fn api_unshare(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<ThreadResource>, ApiError> {
    let t = set_sharing(&state, &user, thread_id(&id)?, false)
        .await
        .map_err(thread_not_found)?;
    Ok(Json((&t).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let c = TimelineCursor {
            latest_at: Timestamp::from_millisecond(1_767_225_600_123).unwrap(),
            kind: TimelineKind::Email,
            id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        let i = TimelineCursor {
            kind: TimelineKind::InMail,
            id: 0,
            ..c
        };
        assert_eq!(decode_cursor(&encode_cursor(&i)), Some(i));
        for bad in ["", "x", "1.e", "1.q.2", "1.e.2.3", "a.e.1"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
