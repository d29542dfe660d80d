//! Send endpoints on the shared pipeline ([`crate::apis::call`]), and delivery between sandbox mailboxes.
//!
//! Graph (PROVIDERS.md §3.5-3.7): `POST /v1.0/me/sendMail` (JSON, or base64 MIME as `text/plain`), drafts
//! (`POST /v1.0/me/messages` JSON or MIME, `PATCH`, `DELETE`, `POST .../send`), attachments on drafts
//! (`POST .../attachments` up to the inline limit, `createUploadSession` + chunked `PUT` above it), and deferred
//! send through the MAPI property `SystemTime 0x3FEF`: the message waits in the Outbox (configurable: Drafts)
//! until its time on the sandbox clock. Gmail (§6.5): `messages.send` (padded or unpadded base64url, LF or
//! CRLF), `threadId` with Gmail's three threading rules, `drafts.create` / `drafts.send`, and
//! `/upload/gmail/v1/users/{u}/messages/send` (`uploadType=media`, `multipart`, `resumable`).
//!
//! Every accepted send lands in the sender's Sent Items / `SENT` with the client's `Message-ID` (one is
//! generated only when absent, as the providers do) and in the Inbox of every sandbox user it is addressed to
//! (To, Cc, Bcc; the `Bcc` header is removed from delivered copies), whichever provider that user is at.
//!
//! Due deferred sends are released by [`release_due`], which runs before every request ([`release_layer`]), so
//! tests drive them with the sandbox clock alone. The control API (`/_sandbox/mailboxes/{user}/sent`,
//! `.../scheduled`, `/_sandbox/send/...`) lists what was sent and arms "uncertain outcome" rules: the send is
//! accepted and delivered, but the response hangs or turns into a 504, as when a client times out; and
//! "lookup refusals": the next Message-ID lookups are refused as a provider refuses a search it cannot run,
//! so the client cannot tell whether its message went out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::apis::{Needs, Principal, call, check_alt, gmail_user_ok};
use crate::app::App;
use crate::mailbox::{DRAFTS, FOLDERS, INBOX, Mailbox, Mailboxes, Placement, SENT, meta_from_raw};
use crate::mailview::{GraphOpts, graph_message, graph_ts, parse_ts_ms};
use crate::state::User;
use crate::wire::{
    GraphPrefer, Params, PreferScope, get_ci, google_api_error, graph_applied, graph_bad_request,
    graph_error, graph_not_found, json_response, link_base, random_token,
};

/// Folder number of `outbox`.
pub const OUTBOX: u8 = 6;

/// Graph scopes that allow sending.
pub const MAIL_SEND: &[&str] = &["Mail.Send", "Mail.Send.Shared"];
/// Graph scopes that allow writing drafts.
pub const MAIL_WRITE: &[&str] = &["Mail.ReadWrite", "Mail.ReadWrite.Shared"];

/// Limits and choices the real services leave uncertain (PROVIDERS.md marks them ⚠), settable through
/// `PUT /_sandbox/send/config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendConfig {
    /// Where a deferred Graph message waits: `outbox` or `drafts` (observed both ways, §3.7).
    pub deferred_folder: String,
    /// Largest Graph request body (JSON or base64 MIME), bytes; above it 413.
    pub graph_request_limit: usize,
    /// Largest inline (`contentBytes`) Graph attachment, decoded bytes; above it 413: use an upload session.
    pub graph_inline_attachment_limit: usize,
    /// Largest chunk of a Graph attachment upload session, bytes.
    pub graph_upload_chunk_limit: usize,
    /// Largest decoded `raw` on `POST /gmail/v1/.../messages/send` (no `/upload`), bytes; above it 413.
    pub gmail_simple_limit: usize,
    /// Largest message on `/upload/gmail/v1/.../messages/send` (the discovery `maxSize`), bytes.
    pub gmail_upload_limit: usize,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            deferred_folder: "outbox".into(),
            graph_request_limit: 4 << 20,
            graph_inline_attachment_limit: 3 << 20,
            graph_upload_chunk_limit: 4 << 20,
            gmail_simple_limit: 5 << 20,
            gmail_upload_limit: 36_700_160,
        }
    }
}

/// What happens to the response of a send that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertainMode {
    /// Answer only after `hang_millis` (the client times out first).
    Hang,
    /// Answer 504 in the provider's shape although the message was sent.
    GatewayTimeout,
}

/// An armed "uncertain outcome" rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncertainRule {
    /// Id for removal (assigned).
    #[serde(default)]
    pub id: u64,
    /// Sender address; every sender when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Endpoint name or `prefix*` (`graph.messages.send`, `gmail.users.messages.send`); every send when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// What the client sees.
    pub mode: UncertainMode,
    /// For `hang`: how long, milliseconds (at most 120 000).
    #[serde(default = "default_hang")]
    pub hang_millis: u64,
    /// Sends it hits before disarming; forever when absent.
    #[serde(default)]
    pub count: Option<u32>,
    /// Sends hit so far.
    #[serde(default)]
    pub hits: u64,
}

fn default_hang() -> u64 {
    30_000
}

/// An armed "the mailbox cannot search by Message-ID" rule: a matching lookup (Graph `$filter` with
/// `internetMessageId eq`, Gmail `q` with `rfc822msgid:`) is refused the way the provider refuses a search it
/// cannot run, so a client cannot tell whether its message was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRefusal {
    /// Id for listing (assigned).
    #[serde(default)]
    pub id: u64,
    /// Mailbox owner address; every mailbox when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Lookups it refuses before disarming; forever when absent.
    #[serde(default)]
    pub count: Option<u32>,
    /// Lookups refused so far.
    #[serde(default)]
    pub hits: u64,
}

/// Graph's answer to a `$filter` it cannot run: 400 `InefficientFilter` (PROVIDERS.md §2.2, §3.2).
pub fn graph_lookup_refused(now: i64, headers: &HeaderMap) -> Response {
    graph_bad_request(
        now,
        headers,
        "InefficientFilter",
        "The restriction or sort order is too complex for this operation.",
    )
}

/// Gmail's answer to a search it cannot run for this mailbox: 400 `failedPrecondition` (PROVIDERS.md §6.9).
pub fn gmail_lookup_refused() -> Response {
    let message = "Precondition check failed.";
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {
            "code": 400,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "failedPrecondition"}],
            "status": "FAILED_PRECONDITION",
        }}),
    )
}

/// State of a send as the control API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendState {
    /// Deferred, waiting for its time.
    Scheduled,
    /// Sent: in Sent Items and delivered.
    Sent,
    /// Deleted before its time.
    Cancelled,
}

/// One accepted send, as listed by the control API.
#[derive(Debug, Clone, Serialize)]
pub struct SendRecord {
    /// Sequence number of the record.
    pub id: u64,
    /// Sender address.
    pub user: String,
    /// Which endpoint accepted it.
    pub via: &'static str,
    /// `Message-ID`, with angle brackets.
    pub message_id: String,
    /// Decoded subject.
    pub subject: String,
    /// To addresses.
    pub to: Vec<String>,
    /// Cc addresses.
    pub cc: Vec<String>,
    /// Bcc addresses.
    pub bcc: Vec<String>,
    /// `In-Reply-To` / `References` ids.
    pub references: Vec<String>,
    /// Attachment file names.
    pub attachments: Vec<String>,
    /// Size of the message, bytes.
    pub size: usize,
    /// Gmail id of the sent copy (Gmail senders).
    pub gmail_id: Option<String>,
    /// Gmail thread id of the sent copy (Gmail senders).
    pub thread_id: Option<String>,
    /// Graph immutable id (Graph senders).
    pub graph_id: Option<String>,
    /// When the provider accepted it (RFC 3339).
    pub accepted_at: String,
    /// Deferred-send time (RFC 3339), if any.
    pub send_at: Option<String>,
    /// When it went out (RFC 3339).
    pub sent_at: Option<String>,
    /// Scheduled, sent or cancelled.
    pub state: SendState,
    /// Sandbox mailboxes it was delivered to.
    pub delivered_to: Vec<String>,
    #[serde(skip)]
    seq: u32,
    #[serde(skip)]
    due: i64,
    #[serde(skip)]
    save_copy: bool,
}

/// A Graph draft's send-side state.
#[derive(Debug, Clone)]
struct GraphDraft {
    /// The JSON model it was created from; `None` for MIME drafts (their bytes are the model).
    model: Option<GraphModel>,
    /// Deferred-send time, unix seconds.
    deferred: Option<i64>,
}

/// A Graph attachment upload session.
#[derive(Debug, Clone)]
struct UploadSession {
    owner: String,
    seq: u32,
    name: String,
    content_type: String,
    size: usize,
    data: Vec<u8>,
    expires: i64,
}

/// A Gmail resumable upload in progress.
#[derive(Debug, Clone)]
struct ResumableUpload {
    owner: String,
    thread_id: Option<String>,
}

/// Everything send-related, kept beside the mailboxes (under the same lock).
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Limits and choices.
    pub config: SendConfig,
    /// Accepted sends, oldest first.
    pub records: Vec<SendRecord>,
    /// Armed uncertain-outcome rules.
    pub uncertain: Vec<UncertainRule>,
    /// Armed lookup refusals.
    pub lookup_refusals: Vec<LookupRefusal>,
    graph_drafts: HashMap<(String, u32), GraphDraft>,
    gmail_drafts: HashMap<String, (String, u32)>,
    uploads: HashMap<String, UploadSession>,
    resumable: HashMap<String, ResumableUpload>,
    next_id: u64,
    /// Earliest due time of a scheduled send (may be stale-early after a cancel: then one scan fixes it), so
    /// [`release_due`], which runs on every request, costs nothing while nothing is due.
    min_due: Option<i64>,
}

impl Outgoing {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn has_due(&self, now: i64) -> bool {
        self.min_due.is_some_and(|d| d <= now)
    }

    fn recompute_min_due(&mut self) {
        self.min_due = self
            .records
            .iter()
            .filter(|r| r.state == SendState::Scheduled)
            .map(|r| r.due)
            .min();
    }

    /// Takes the uncertain-outcome rule that hits this send, if any.
    fn take_uncertain(&mut self, endpoint: &str, user: &str) -> Option<UncertainRule> {
        let i = self.uncertain.iter().position(|r| {
            r.user.as_ref().is_none_or(|u| u.eq_ignore_ascii_case(user))
                && r.endpoint
                    .as_ref()
                    .is_none_or(|p| match p.strip_suffix('*') {
                        Some(prefix) => endpoint.starts_with(prefix),
                        None => p == endpoint,
                    })
        })?;
        let r = &mut self.uncertain[i];
        r.hits += 1;
        if let Some(c) = r.count.as_mut() {
            *c = c.saturating_sub(1);
        }
        let hit = r.clone();
        if r.count == Some(0) {
            self.uncertain.remove(i);
        }
        Some(hit)
    }

    /// Whether an armed refusal hits this Message-ID lookup in `user`'s mailbox (counting it).
    pub fn take_lookup_refusal(&mut self, user: &str) -> bool {
        let Some(i) = self
            .lookup_refusals
            .iter()
            .position(|r| r.user.as_ref().is_none_or(|u| u.eq_ignore_ascii_case(user)))
        else {
            return false;
        };
        let r = &mut self.lookup_refusals[i];
        r.hits += 1;
        if let Some(c) = r.count.as_mut() {
            *c = c.saturating_sub(1);
        }
        if r.count == Some(0) {
            self.lookup_refusals.remove(i);
        }
        true
    }
}

/// Routes of the send endpoints and their control API.
pub fn routes() -> Router<App> {
    let graph = Router::new()
        .route("/v1.0/me/sendMail", post(graph_send_mail))
        .route("/v1.0/me/messages", post(graph_create))
        .route(
            "/v1.0/me/messages/{id}",
            patch(graph_update).delete(graph_delete),
        )
        .route("/v1.0/me/messages/{id}/send", post(graph_send_draft))
        .route(
            "/v1.0/me/messages/{id}/attachments",
            post(graph_add_attachment),
        )
        .route(
            "/v1.0/me/messages/{id}/attachments/createUploadSession",
            post(graph_create_upload_session),
        )
        .layer(middleware::from_fn(crate::apis::graph_headers));
    Router::new()
        .merge(graph)
        .route(
            "/api/v2.0/AttachmentSessions/{sid}",
            put(graph_upload_chunk),
        )
        .route("/gmail/v1/users/{user_id}/messages/send", post(gmail_send))
        .route(
            "/upload/gmail/v1/users/{user_id}/messages/send",
            post(gmail_upload_send).put(gmail_upload_put),
        )
        .route("/gmail/v1/users/{user_id}/drafts", post(gmail_draft_create))
        .route(
            "/gmail/v1/users/{user_id}/drafts/send",
            post(gmail_draft_send),
        )
        .route("/_sandbox/mailboxes/{user}/sent", get(control_sent))
        .route(
            "/_sandbox/mailboxes/{user}/scheduled",
            get(control_scheduled),
        )
        .route(
            "/_sandbox/send/uncertain",
            get(control_uncertain_list)
                .post(control_uncertain_add)
                .delete(control_uncertain_clear),
        )
        .route(
            "/_sandbox/send/lookup_refusals",
            get(control_refusal_list)
                .post(control_refusal_add)
                .delete(control_refusal_clear),
        )
        .route(
            "/_sandbox/send/config",
            get(control_config_get).put(control_config_put),
        )
        .layer(DefaultBodyLimit::max(64 << 20))
}

/// Middleware: releases due deferred sends before any request is handled.
pub async fn release_layer(State(app): State<App>, req: Request, next: Next) -> Response {
    release_due(&app);
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------------------
// Message bytes

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The header section of `raw` (up to the first empty line) and the line ending it uses.
fn header_end(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        let line_end = raw[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |p| i + p + 1);
        let line = &raw[i..line_end];
        if line == b"\n" || line == b"\r\n" {
            return i;
        }
        i = line_end;
    }
    raw.len()
}

fn line_ending(raw: &[u8]) -> &'static [u8] {
    match raw.iter().position(|b| *b == b'\n') {
        Some(p) if p > 0 && raw[p - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

/// Removes every `Bcc` field (with its folded continuation lines) from the header section. Hand-written
/// because it only deletes whole lines of an existing message: no header is formatted here.
fn strip_bcc(raw: &[u8]) -> Vec<u8> {
    let end = header_end(raw);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let mut skipping = false;
    while i < end {
        let line_end = raw[i..end]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(end, |p| i + p + 1);
        let line = &raw[i..line_end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        i = line_end;
    }
    out.extend_from_slice(&raw[end..]);
    out
}

/// Adds the fields a provider fills in when the client left them out: `Message-ID`, `Date`, `From`. Values
/// are produced by mail-builder's header writers, so only whole, well-formed fields are prepended.
fn complete_headers(
    raw: Vec<u8>,
    user: &User,
    domain: &str,
    now: i64,
) -> Result<(Vec<u8>, String), String> {
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw)
        .ok_or("not an RFC 5322 message")?;
    let mut builder = MessageBuilder::new();
    let message_id = match parsed.message_id() {
        Some(id) => format!("<{id}>"),
        None => {
            let id = format!("{}@{domain}", random_token(18).replace(['-', '_'], "x"));
            builder = builder.message_id(id.clone());
            format!("<{id}>")
        }
    };
    if parsed.date().is_none() {
        builder = builder.date(Date::new(now));
    }
    if parsed.from().is_none() {
        builder = builder.from((user.display_name.as_str(), user.email.as_str()));
    }
    if builder.headers.is_empty() {
        return Ok((raw, message_id));
    }
    let nl = line_ending(&raw);
    let mut fields = Vec::new();
    for (name, value) in &builder.headers {
        // `name` is one of the three constant field names above; the value is written by mail-builder.
        fields.extend_from_slice(name.as_bytes());
        fields.extend_from_slice(b": ");
        mail_builder::headers::Header::write_header(value, &mut fields, name.len() + 2);
    }
    if nl == b"\n" {
        fields.retain(|b| *b != b'\r');
    }
    let mut out = fields;
    out.extend_from_slice(&raw);
    Ok((out, message_id))
}

/// Addresses of a parsed message's To, Cc and Bcc.
struct Recipients {
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    invalid: Option<String>,
}

impl Recipients {
    fn of(msg: &mail_parser::Message<'_>) -> Self {
        let mut invalid = None;
        let mut field = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            let mut out = Vec::new();
            for x in a.into_iter().flat_map(|a| a.iter()) {
                match x.address() {
                    Some(addr) if valid_address(addr) => out.push(addr.to_ascii_lowercase()),
                    Some(addr) => invalid = Some(addr.to_string()),
                    None => {}
                }
            }
            out
        };
        let to = field(msg.to());
        let cc = field(msg.cc());
        let bcc = field(msg.bcc());
        Recipients {
            to,
            cc,
            bcc,
            invalid,
        }
    }

    fn all(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .filter(|a| seen.insert(a.as_str()))
            .cloned()
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.to.is_empty() && self.cc.is_empty() && self.bcc.is_empty()
    }
}

fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What the control API shows of a message.
struct Summary {
    message_id: String,
    subject: String,
    rcpt: Recipients,
    references: Vec<String>,
    attachments: Vec<String>,
}

fn summarize(raw: &[u8]) -> Option<Summary> {
    use mail_parser::MimeHeaders;
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let meta = meta_from_raw(raw).ok()?;
    Some(Summary {
        message_id: meta.message_id,
        subject: msg.subject().unwrap_or_default().to_string(),
        rcpt: Recipients::of(&msg),
        references: meta.parents,
        attachments: msg
            .attachments()
            .map(|a| a.attachment_name().unwrap_or_default().to_string())
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Sending and delivery

/// Users by address, read before the mail lock is taken (the state lock is never taken inside it).
fn users_by_address(app: &App) -> HashMap<String, User> {
    app.read(|s| {
        s.users
            .iter()
            .map(|u| (u.email.clone(), u.clone()))
            .collect()
    })
}

fn mailbox<'a>(mail: &'a mut Mailboxes, u: &User) -> &'a mut Mailbox {
    mail.by_owner
        .entry(u.email.clone())
        .or_insert_with(|| Mailbox::new(&u.email, &u.id, u.history_id))
}

/// Puts a copy of `raw` (without `Bcc`) in the Inbox of every sandbox user among `rcpts`.
fn deliver(
    mail: &mut Mailboxes,
    users: &HashMap<String, User>,
    raw: &[u8],
    rcpts: &[String],
    now: i64,
) -> Vec<String> {
    let copy = Arc::new(strip_bcc(raw));
    let Ok(meta) = meta_from_raw(&copy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in rcpts {
        let Some(u) = users.get(a) else { continue };
        let mb = mailbox(mail, u);
        let place = Placement {
            folder: INBOX,
            is_read: false,
            moves: 0,
        };
        if mb
            .insert(copy.clone(), meta.clone(), now * 1000, place, now, true)
            .is_ok()
        {
            out.push(u.email.clone());
        }
    }
    out
}

/// Moves a submitted message out (to Sent Items, or away when no copy is kept) and delivers it.
fn go_out(mail: &mut Mailboxes, users: &HashMap<String, User>, rec_idx: usize, now: i64) {
    let (owner, seq, save, message_id) = {
        let r = &mail.outgoing.records[rec_idx];
        (r.user.clone(), r.seq, r.save_copy, r.message_id.clone())
    };
    let Some(mb) = mail.by_owner.get_mut(&owner) else {
        mail.outgoing.records[rec_idx].state = SendState::Cancelled;
        return;
    };
    // The same message still (a mailbox replaced through the control API reuses sequence numbers).
    let live = mb
        .msgs
        .get(seq as usize)
        .is_some_and(|m| !m.deleted && m.meta.message_id == message_id);
    if !live {
        mail.outgoing.records[rec_idx].state = SendState::Cancelled;
        return;
    }
    let raw = mb.msgs[seq as usize].raw.clone();
    if save {
        mb.update(seq, Some(SENT), Some(true), now);
    } else {
        mb.delete(seq, now);
    }
    let rcpts = summarize(&raw).map(|s| s.rcpt.all()).unwrap_or_default();
    let delivered = deliver(mail, users, &raw, &rcpts, now);
    let r = &mut mail.outgoing.records[rec_idx];
    r.state = SendState::Sent;
    r.sent_at = Some(rfc3339(now));
    r.delivered_to = delivered;
}

/// Sends every deferred message whose time has come on the sandbox clock.
pub fn release_due(app: &App) {
    let now = app.now();
    if !app.mail(|m| m.outgoing.has_due(now)) {
        return;
    }
    let users = users_by_address(app);
    app.mail(|m| {
        let due: Vec<usize> = m
            .outgoing
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == SendState::Scheduled && r.due <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            go_out(m, &users, i, now);
        }
        m.outgoing.recompute_min_due();
    });
}

/// Records a submitted message (already in its mailbox at `seq`) and sends it now or at `deferred`.
#[allow(clippy::too_many_arguments)]
fn submit(
    mail: &mut Mailboxes,
    users: &HashMap<String, User>,
    owner: &str,
    seq: u32,
    via: &'static str,
    deferred: Option<i64>,
    save_copy: bool,
    now: i64,
) -> u64 {
    let (raw, gmail_id, thread_id, graph_id) = {
        let mb = mail
            .by_owner
            .get(owner)
            .expect("the sender's mailbox exists");
        let v = mb.view(seq);
        (v.raw.clone(), v.gmail_id, v.thread_id, v.immutable_id)
    };
    let gmail = via.starts_with("gmail");
    let s = summarize(&raw);
    let id = mail.outgoing.next();
    let due = deferred.filter(|t| *t > now);
    mail.outgoing.records.push(SendRecord {
        id,
        user: owner.to_string(),
        via,
        message_id: s.as_ref().map(|s| s.message_id.clone()).unwrap_or_default(),
        subject: s.as_ref().map(|s| s.subject.clone()).unwrap_or_default(),
        to: s.as_ref().map(|s| s.rcpt.to.clone()).unwrap_or_default(),
        cc: s.as_ref().map(|s| s.rcpt.cc.clone()).unwrap_or_default(),
        bcc: s.as_ref().map(|s| s.rcpt.bcc.clone()).unwrap_or_default(),
        references: s.as_ref().map(|s| s.references.clone()).unwrap_or_default(),
        attachments: s.map(|s| s.attachments).unwrap_or_default(),
        size: raw.len(),
        gmail_id: gmail.then_some(gmail_id),
        thread_id: gmail.then_some(thread_id),
        graph_id: (!gmail).then_some(graph_id),
        accepted_at: rfc3339(now),
        send_at: deferred.map(rfc3339),
        sent_at: None,
        state: SendState::Scheduled,
        delivered_to: Vec::new(),
        seq,
        due: due.unwrap_or(now),
        save_copy,
    });
    let idx = mail.outgoing.records.len() - 1;
    match due {
        Some(t) => {
            mail.outgoing.min_due = Some(mail.outgoing.min_due.map_or(t, |d| d.min(t)));
            let folder = if mail.outgoing.config.deferred_folder == "drafts" {
                DRAFTS
            } else {
                OUTBOX
            };
            if let Some(mb) = mail.by_owner.get_mut(owner) {
                mb.update(seq, Some(folder), Some(true), now);
            }
        }
        None => go_out(mail, users, idx, now),
    }
    id
}

/// After a send was accepted: applies an armed uncertain-outcome rule to the response.
async fn uncertain(app: &App, endpoint: &str, user: Option<&str>, r: Response) -> Response {
    let Some(user) = user else { return r };
    if !r.status().is_success() {
        return r;
    }
    let Some(rule) = app.mail(|m| m.outgoing.take_uncertain(endpoint, user)) else {
        return r;
    };
    match rule.mode {
        UncertainMode::Hang => {
            tokio::time::sleep(Duration::from_millis(rule.hang_millis.min(120_000))).await;
            r
        }
        UncertainMode::GatewayTimeout if endpoint.starts_with("graph.") => graph_error(
            StatusCode::GATEWAY_TIMEOUT,
            "UnknownError",
            "Gateway Timeout",
            &HeaderMap::new(),
            app.now(),
        ),
        UncertainMode::GatewayTimeout => google_api_error(
            StatusCode::GATEWAY_TIMEOUT,
            "backendError",
            "global",
            "Backend Error",
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Graph

fn send_needs() -> Needs<'static> {
    Needs::Graph {
        any_of: MAIL_SEND,
        code: "ErrorAccessDenied",
        message: "Access is denied. Check credentials and try again.",
    }
}

fn write_needs() -> Needs<'static> {
    Needs::Graph {
        any_of: MAIL_WRITE,
        code: "ErrorAccessDenied",
        message: "Access is denied. Check credentials and try again.",
    }
}

/// A Graph error as a value (rendered once the request headers are at hand).
struct GErr(StatusCode, &'static str, String);

impl GErr {
    fn bad(code: &'static str, msg: impl Into<String>) -> Self {
        GErr(StatusCode::BAD_REQUEST, code, msg.into())
    }
    fn render(self, app: &App, headers: &HeaderMap) -> Response {
        graph_error(self.0, self.1, &self.2, headers, app.now())
    }
}

fn too_large(limit: usize) -> GErr {
    GErr(
        StatusCode::PAYLOAD_TOO_LARGE,
        "ErrorRequestEntityTooLarge",
        format!("The request payload is too large: at most {limit} bytes."),
    )
}

/// A recipient of the JSON message resource.
#[derive(Debug, Clone)]
struct Rcpt {
    name: Option<String>,
    address: String,
}

/// A file attachment.
#[derive(Debug, Clone)]
struct Att {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// The parts of a JSON `message` the sandbox keeps.
#[derive(Debug, Clone, Default)]
struct GraphModel {
    subject: String,
    html: bool,
    body: String,
    to: Vec<Rcpt>,
    cc: Vec<Rcpt>,
    bcc: Vec<Rcpt>,
    reply_to: Vec<Rcpt>,
    headers: Vec<(String, String)>,
    attachments: Vec<Att>,
    message_id: Option<String>,
}

fn no_crlf(s: &str, what: &str) -> Result<(), GErr> {
    if s.contains(['\r', '\n']) {
        Err(GErr::bad(
            "ErrorInvalidRequest",
            format!("The {what} must not contain line breaks."),
        ))
    } else {
        Ok(())
    }
}

fn recipients_of(v: Option<&Value>, what: &str) -> Result<Vec<Rcpt>, GErr> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let arr = v.as_array().ok_or_else(|| {
        GErr::bad(
            "ErrorInvalidRequest",
            format!("'{what}' must be a collection of recipients."),
        )
    })?;
    let mut out = Vec::new();
    for r in arr {
        let e = get_ci(r, "emailAddress").unwrap_or(&Value::Null);
        let address = get_ci(e, "address")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let name = get_ci(e, "name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|n| !n.is_empty());
        if !valid_address(&address) {
            return Err(invalid_recipient(&address));
        }
        if let Some(n) = &name {
            no_crlf(n, "recipient name")?;
        }
        out.push(Rcpt { name, address });
    }
    Ok(out)
}

fn invalid_recipient(address: &str) -> GErr {
    GErr::bad(
        "ErrorInvalidRecipients",
        format!(
            "At least one recipient is not valid., Recipient '{address}' is not resolved. All recipients must be resolved before a message can be submitted."
        ),
    )
}

fn no_recipients() -> GErr {
    GErr::bad(
        "ErrorInvalidRecipients",
        "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
    )
}

fn attachment_of(app: &App, v: &Value) -> Result<Att, GErr> {
    let ty = get_ci(v, "@odata.type")
        .and_then(Value::as_str)
        .unwrap_or("#microsoft.graph.fileAttachment");
    if !ty.eq_ignore_ascii_case("#microsoft.graph.fileAttachment") {
        return Err(GErr::bad(
            "ErrorInvalidRequest",
            format!("The sandbox accepts file attachments only, not '{ty}'."),
        ));
    }
    let name = get_ci(v, "name")
        .and_then(Value::as_str)
        .unwrap_or("attachment")
        .to_string();
    no_crlf(&name, "attachment name")?;
    let content_type = get_ci(v, "contentType")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_string();
    no_crlf(&content_type, "attachment content type")?;
    let b64 = get_ci(v, "contentBytes")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| {
        GErr::bad(
            "ErrorInvalidRequest",
            "The attachment's contentBytes is not valid base64.",
        )
    })?;
    let limit = app.mail(|m| m.outgoing.config.graph_inline_attachment_limit);
    if bytes.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Att {
        name,
        content_type,
        bytes,
    })
}

/// Reads the writable fields of a `message` JSON into `m` (only the fields present).
fn apply_message_json(app: &App, m: &mut GraphModel, v: &Value) -> Result<Option<i64>, GErr> {
    if !v.is_object() {
        return Err(GErr::bad(
            "ErrorInvalidRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    if let Some(s) = get_ci(v, "subject") {
        let s = s.as_str().unwrap_or_default();
        no_crlf(s, "subject")?;
        m.subject = s.to_string();
    }
    if let Some(b) = get_ci(v, "body") {
        m.html = get_ci(b, "contentType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("html"));
        m.body = get_ci(b, "content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    if let Some(x) = get_ci(v, "toRecipients") {
        m.to = recipients_of(Some(x), "toRecipients")?;
    }
    if let Some(x) = get_ci(v, "ccRecipients") {
        m.cc = recipients_of(Some(x), "ccRecipients")?;
    }
    if let Some(x) = get_ci(v, "bccRecipients") {
        m.bcc = recipients_of(Some(x), "bccRecipients")?;
    }
    if let Some(x) = get_ci(v, "replyTo") {
        m.reply_to = recipients_of(Some(x), "replyTo")?;
    }
    if let Some(id) = get_ci(v, "internetMessageId").and_then(Value::as_str) {
        no_crlf(id, "internetMessageId")?;
        let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
        if !bare.contains('@') {
            return Err(GErr::bad(
                "ErrorInvalidInternetMessageHeader",
                "The internetMessageId must be in the format <id@domain>.",
            ));
        }
        m.message_id = Some(bare.to_string());
    }
    if let Some(hs) = get_ci(v, "internetMessageHeaders").and_then(Value::as_array) {
        m.headers.clear();
        for h in hs {
            let name = get_ci(h, "name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = get_ci(h, "value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !name.to_ascii_lowercase().starts_with("x-")
                || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            {
                return Err(GErr::bad(
                    "InvalidInternetMessageHeader",
                    format!(
                        "The internet message header name '{name}' should start with 'x-' or 'X-'."
                    ),
                ));
            }
            no_crlf(value, "internet message header value")?;
            m.headers.push((name.to_string(), value.to_string()));
        }
    }
    if let Some(atts) = get_ci(v, "attachments").and_then(Value::as_array) {
        for a in atts {
            m.attachments.push(attachment_of(app, a)?);
        }
    }
    deferred_of(v)
}

/// `singleValueExtendedProperties` `SystemTime 0x3FEF` (PidTagDeferredSendTime), unix seconds.
fn deferred_of(v: &Value) -> Result<Option<i64>, GErr> {
    let Some(props) = get_ci(v, "singleValueExtendedProperties").and_then(Value::as_array) else {
        return Ok(None);
    };
    for p in props {
        let id = get_ci(p, "id").and_then(Value::as_str).unwrap_or_default();
        let norm: String = id.split_whitespace().collect::<Vec<_>>().join(" ");
        if norm.eq_ignore_ascii_case("SystemTime 0x3FEF") {
            let value = get_ci(p, "value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return parse_ts_ms(value)
                .map(|ms| Some(ms.div_euclid(1000)))
                .ok_or_else(|| {
                    GErr::bad(
                        "ErrorInvalidExtendedPropertyValue",
                        format!("The value '{value}' is not a valid SystemTime."),
                    )
                });
        }
    }
    Ok(None)
}

fn addr_list(rs: &[Rcpt]) -> Address<'_> {
    Address::new_list(
        rs.iter()
            .map(|r| Address::new_address(r.name.as_deref(), r.address.as_str()))
            .collect(),
    )
}

/// Builds the MIME bytes of a JSON message with mail-builder.
fn build_mime(m: &GraphModel, from: &User, message_id: &str, now: i64) -> Vec<u8> {
    let mut b = MessageBuilder::new()
        .from((from.display_name.as_str(), from.email.as_str()))
        .subject(m.subject.as_str())
        .message_id(message_id)
        .date(Date::new(now));
    if !m.to.is_empty() {
        b = b.to(addr_list(&m.to));
    }
    if !m.cc.is_empty() {
        b = b.cc(addr_list(&m.cc));
    }
    if !m.bcc.is_empty() {
        b = b.bcc(addr_list(&m.bcc));
    }
    if !m.reply_to.is_empty() {
        b = b.reply_to(addr_list(&m.reply_to));
    }
    for (n, v) in &m.headers {
        b = b.header(n.as_str(), Raw::new(v.as_str()));
    }
    b = if m.html {
        b.html_body(m.body.as_str())
    } else {
        b.text_body(m.body.as_str())
    };
    for a in &m.attachments {
        b = b.attachment(a.content_type.as_str(), a.name.as_str(), a.bytes.as_slice());
    }
    b.write_to_vec().unwrap_or_default()
}

fn outlook_message_id() -> String {
    format!(
        "{}@SN7PR11MB{}.namprd11.prod.outlook.com",
        random_token(15)
            .replace(['-', '_'], "A")
            .to_ascii_uppercase(),
        rand::random_range(1000..9999)
    )
}

/// The body of a Graph request: JSON, or base64 MIME (`Content-Type: text/plain`).
enum GraphBody {
    Json(Value),
    Mime(Vec<u8>),
}

fn graph_body(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<GraphBody, GErr> {
    let limit = app.mail(|m| m.outgoing.config.graph_request_limit);
    if body.len() > limit {
        return Err(too_large(limit));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("text/plain") {
        let text: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let raw = STANDARD
            .decode(&text)
            .ok()
            .filter(|r| !r.is_empty() && mail_parser::MessageParser::default().parse(r).is_some())
            .ok_or_else(|| {
                GErr::bad(
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                )
            })?;
        return Ok(GraphBody::Mime(raw));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GErr::bad(
            "ErrorInvalidRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    serde_json::from_slice(body).map(GraphBody::Json).map_err(|e| {
        GErr::bad(
            "BadRequest",
            format!("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. ({e})"),
        )
    })
}

/// A message created from a request (sendMail or a new draft): its bytes and its draft state.
fn graph_new_message(
    app: &App,
    p: &Principal,
    body: GraphBody,
    now: i64,
) -> Result<(Vec<u8>, GraphDraft), GErr> {
    match body {
        GraphBody::Mime(raw) => {
            let (raw, _) = complete_headers(raw, &p.user, "namprd11.prod.outlook.com", now)
                .map_err(|_| {
                    GErr::bad(
                        "ErrorMimeContentInvalidBase64String",
                        "Invalid base64 string for MIME content.",
                    )
                })?;
            Ok((
                raw,
                GraphDraft {
                    model: None,
                    deferred: None,
                },
            ))
        }
        GraphBody::Json(v) => {
            let mut m = GraphModel::default();
            let deferred = apply_message_json(app, &mut m, &v)?;
            let id = m.message_id.clone().unwrap_or_else(outlook_message_id);
            m.message_id = Some(id.clone());
            Ok((
                build_mime(&m, &p.user, &id, now),
                GraphDraft {
                    model: Some(m),
                    deferred,
                },
            ))
        }
    }
}

fn check_recipients(raw: &[u8]) -> Result<(), GErr> {
    let msg = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or_else(|| GErr::bad("ErrorInvalidRequest", "The message is not valid MIME."))?;
    let r = Recipients::of(&msg);
    if let Some(bad) = r.invalid {
        return Err(invalid_recipient(&bad));
    }
    if r.is_empty() {
        return Err(no_recipients());
    }
    Ok(())
}

fn insert_own(mb: &mut Mailbox, raw: Vec<u8>, folder: u8, now: i64) -> Result<u32, GErr> {
    let meta = meta_from_raw(&raw).map_err(|e| GErr::bad("ErrorInvalidRequest", e))?;
    let place = Placement {
        folder,
        is_read: true,
        moves: 0,
    };
    mb.insert(Arc::new(raw), meta, now * 1000, place, now, true)
        .map_err(|e| GErr(StatusCode::INSUFFICIENT_STORAGE, "ErrorQuotaExceeded", e))
}

async fn graph_send_mail(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let mut sender = None;
    let r = call(&app, "graph.sendMail", &headers, send_needs(), |p| {
        let now = app.now();
        let (msg, save) = match graph_body(&app, &headers, &body) {
            Ok(GraphBody::Json(v)) => {
                let Some(m) = get_ci(&v, "message").cloned() else {
                    return GErr::bad(
                        "ErrorInvalidRequest",
                        "The 'message' parameter is required.",
                    )
                    .render(&app, &headers);
                };
                let save = get_ci(&v, "saveToSentItems")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                (GraphBody::Json(m), save)
            }
            Ok(mime) => (mime, true),
            Err(e) => return e.render(&app, &headers),
        };
        let (raw, draft) = match graph_new_message(&app, p, msg, now) {
            Ok(x) => x,
            Err(e) => return e.render(&app, &headers),
        };
        if let Err(e) = check_recipients(&raw) {
            return e.render(&app, &headers);
        }
        let users = users_by_address(&app);
        let out = app.mail(|m| {
            let seq = insert_own(mailbox(m, &p.user), raw, OUTBOX, now)?;
            submit(
                m,
                &users,
                &p.user.email,
                seq,
                "graph.sendMail",
                draft.deferred,
                save,
                now,
            );
            Ok::<_, GErr>(())
        });
        match out {
            Ok(()) => {
                sender = Some(p.user.email.clone());
                StatusCode::ACCEPTED.into_response()
            }
            Err(e) => e.render(&app, &headers),
        }
    })
    .await;
    uncertain(&app, "graph.sendMail", sender.as_deref(), r).await
}

fn render_message(
    app: &App,
    p: &Principal,
    seq: u32,
    pref: &GraphPrefer,
    status: StatusCode,
) -> Response {
    let v = app.mail(|m| mailbox(m, &p.user).view(seq));
    let opts = GraphOpts {
        immutable: pref.immutable,
        text_body: pref.text_body,
        select: None,
        odata_type: false,
    };
    graph_applied(json_response(status, graph_message(&v, &opts)), pref)
}

async fn graph_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let pref = GraphPrefer::only(&headers, PreferScope::Mail);
    call(
        &app,
        "graph.messages.create",
        &headers,
        write_needs(),
        |p| {
            let now = app.now();
            let made =
                graph_body(&app, &headers, &body).and_then(|b| graph_new_message(&app, p, b, now));
            let (raw, draft) = match made {
                Ok(x) => x,
                Err(e) => return e.render(&app, &headers),
            };
            let seq = app.mail(|m| {
                let seq = insert_own(mailbox(m, &p.user), raw, DRAFTS, now)?;
                m.outgoing
                    .graph_drafts
                    .insert((p.user.email.clone(), seq), draft);
                Ok::<_, GErr>(seq)
            });
            match seq {
                Ok(seq) => render_message(&app, p, seq, &pref, StatusCode::CREATED),
                Err(e) => e.render(&app, &headers),
            }
        },
    )
    .await
}

fn missing(app: &App, headers: &HeaderMap, id: &str) -> Response {
    if id.starts_with("AAkALg") || id.starts_with("AAMkAG") {
        graph_not_found(app.now(), headers)
    } else {
        graph_bad_request(
            app.now(),
            headers,
            "ErrorInvalidIdMalformed",
            "Id is malformed.",
        )
    }
}

/// A draft of the caller's by id: (sequence number, draft state).
fn find_draft(app: &App, p: &Principal, id: &str) -> Result<(u32, GraphDraft), Option<GErr>> {
    app.mail(|m| {
        let mb = mailbox(m, &p.user);
        let seq = mb.find(id).ok_or(None)?;
        if mb.msgs[seq as usize].place.folder != DRAFTS {
            return Err(Some(GErr::bad(
                "ErrorInvalidOperation",
                "This operation is valid only on a draft message.",
            )));
        }
        let d = m
            .outgoing
            .graph_drafts
            .get(&(p.user.email.clone(), seq))
            .cloned()
            .unwrap_or(GraphDraft {
                model: None,
                deferred: None,
            });
        Ok((seq, d))
    })
}

async fn graph_update(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pref = GraphPrefer::only(&headers, PreferScope::Mail);
    call(&app, "graph.messages.update", &headers, write_needs(), |p| {
        let now = app.now();
        let (seq, mut draft) = match find_draft(&app, p, &id) {
            Ok(x) => x,
            Err(None) => return missing(&app, &headers, &id),
            Err(Some(e)) => return e.render(&app, &headers),
        };
        let v = match graph_body(&app, &headers, &body) {
            Ok(GraphBody::Json(v)) => v,
            Ok(GraphBody::Mime(_)) => {
                return GErr::bad(
                    "ErrorInvalidRequest",
                    "A message can be updated with JSON only.",
                )
                .render(&app, &headers);
            }
            Err(e) => return e.render(&app, &headers),
        };
        let new_raw = match &mut draft.model {
            Some(model) => {
                match apply_message_json(&app, model, &v) {
                    Ok(Some(t)) => draft.deferred = Some(t),
                    Ok(None) => {}
                    Err(e) => return e.render(&app, &headers),
                }
                let mid = model.message_id.clone().unwrap_or_else(outlook_message_id);
                Some(build_mime(model, &p.user, &mid, now))
            }
            None => {
                // A MIME draft's bytes are its content: the sandbox changes only the deferred-send time.
                let content = v.as_object().is_some_and(|o| {
                    o.keys().any(|k| {
                        !k.eq_ignore_ascii_case("singleValueExtendedProperties")
                            && !k.starts_with('@')
                    })
                });
                if content {
                    return GErr::bad(
                        "ErrorInvalidRequest",
                        "The sandbox edits only singleValueExtendedProperties on a draft created from MIME.",
                    )
                    .render(&app, &headers);
                }
                match deferred_of(&v) {
                    Ok(Some(t)) => draft.deferred = Some(t),
                    Ok(None) => {}
                    Err(e) => return e.render(&app, &headers),
                }
                None
            }
        };
        app.mail(|m| {
            if let Some(raw) = new_raw
                && let Ok(meta) = meta_from_raw(&raw)
            {
                mailbox(m, &p.user).replace_content(seq, Arc::new(raw), meta, now);
            }
            m.outgoing
                .graph_drafts
                .insert((p.user.email.clone(), seq), draft);
        });
        render_message(&app, p, seq, &pref, StatusCode::OK)
    })
    .await
}

async fn graph_delete(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    call(
        &app,
        "graph.messages.delete",
        &headers,
        write_needs(),
        |p| {
            let now = app.now();
            let done = app.mail(|m| {
                let mb = mailbox(m, &p.user);
                let seq = mb.find(&id)?;
                mb.delete(seq, now);
                let owner = p.user.email.clone();
                for r in &mut m.outgoing.records {
                    if r.user == owner && r.seq == seq && r.state == SendState::Scheduled {
                        r.state = SendState::Cancelled;
                    }
                }
                m.outgoing.graph_drafts.remove(&(owner, seq));
                Some(())
            });
            match done {
                Some(()) => StatusCode::NO_CONTENT.into_response(),
                None => missing(&app, &headers, &id),
            }
        },
    )
    .await
}

async fn graph_send_draft(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut sender = None;
    let r = call(&app, "graph.messages.send", &headers, send_needs(), |p| {
        let now = app.now();
        let (seq, draft) = match find_draft(&app, p, &id) {
            Ok(x) => x,
            Err(None) => return missing(&app, &headers, &id),
            Err(Some(e)) => return e.render(&app, &headers),
        };
        let raw = app.mail(|m| mailbox(m, &p.user).msgs[seq as usize].raw.clone());
        if let Err(e) = check_recipients(&raw) {
            return e.render(&app, &headers);
        }
        let users = users_by_address(&app);
        app.mail(|m| {
            m.outgoing.graph_drafts.remove(&(p.user.email.clone(), seq));
            submit(
                m,
                &users,
                &p.user.email,
                seq,
                "graph.messages.send",
                draft.deferred,
                true,
                now,
            );
        });
        sender = Some(p.user.email.clone());
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    uncertain(&app, "graph.messages.send", sender.as_deref(), r).await
}

/// Adds a file to a draft (rebuilding a JSON draft's bytes, or appending a part to a MIME draft's).
fn add_to_draft(app: &App, p: &Principal, seq: u32, att: Att, now: i64) -> Result<(), GErr> {
    let key = (p.user.email.clone(), seq);
    let draft = app.mail(|m| m.outgoing.graph_drafts.get(&key).cloned());
    let (mut model, deferred) = match draft {
        Some(GraphDraft {
            model: Some(model),
            deferred,
        }) => (model, deferred),
        // A draft created from MIME (or unknown to the send state): the file becomes a new part of the
        // message's multipart/mixed.
        other => {
            let raw = app.mail(|m| mailbox(m, &p.user).msgs[seq as usize].raw.clone());
            let raw = append_attachment(&raw, &att).ok_or_else(|| {
                GErr::bad(
                    "ErrorInvalidRequest",
                    "The sandbox adds attachments to MIME drafts whose root is multipart/mixed only.",
                )
            })?;
            let meta = meta_from_raw(&raw).map_err(|e| GErr::bad("ErrorInvalidRequest", e))?;
            app.mail(|m| {
                mailbox(m, &p.user).replace_content(seq, Arc::new(raw), meta, now);
                if let Some(d) = other {
                    m.outgoing.graph_drafts.insert(key, d);
                }
            });
            return Ok(());
        }
    };
    model.attachments.push(att);
    let mid = model.message_id.clone().unwrap_or_else(outlook_message_id);
    let raw = build_mime(&model, &p.user, &mid, now);
    let meta = meta_from_raw(&raw).map_err(|e| GErr::bad("ErrorInvalidRequest", e))?;
    app.mail(|m| {
        mailbox(m, &p.user).replace_content(seq, Arc::new(raw), meta, now);
        m.outgoing.graph_drafts.insert(
            key,
            GraphDraft {
                model: Some(model),
                deferred,
            },
        );
    });
    Ok(())
}

/// Adds a file as the last part of a message whose root is `multipart/mixed`. The part is written by
/// mail-builder; it is inserted before the closing delimiter found through mail-parser's boundary.
fn append_attachment(raw: &[u8], att: &Att) -> Option<Vec<u8>> {
    use mail_parser::MimeHeaders;
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let ct = msg.root_part().content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("mixed"))
    {
        return None;
    }
    let boundary = ct.attribute("boundary")?.to_string();
    let close = format!("--{boundary}--");
    let at = raw
        .windows(close.len())
        .rposition(|w| w == close.as_bytes())?;
    let mut part = Vec::new();
    mail_builder::mime::MimePart::new(att.content_type.as_str(), att.bytes.as_slice())
        .attachment(att.name.as_str())
        .write_part(&mut part);
    let nl = line_ending(raw);
    let mut out = Vec::with_capacity(raw.len() + part.len() + boundary.len() + 8);
    out.extend_from_slice(&raw[..at]);
    out.extend_from_slice(format!("--{boundary}").as_bytes());
    out.extend_from_slice(nl);
    out.extend_from_slice(&part);
    if !part.ends_with(b"\n") {
        out.extend_from_slice(nl);
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

async fn graph_add_attachment(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        &app,
        "graph.attachments.create",
        &headers,
        write_needs(),
        |p| {
            let now = app.now();
            let seq = match find_draft(&app, p, &id) {
                Ok((s, _)) => s,
                Err(None) => return missing(&app, &headers, &id),
                Err(Some(e)) => return e.render(&app, &headers),
            };
            let v = match graph_body(&app, &headers, &body) {
                Ok(GraphBody::Json(v)) => v,
                Ok(GraphBody::Mime(_)) => {
                    return GErr::bad("ErrorInvalidRequest", "JSON content expected.")
                        .render(&app, &headers);
                }
                Err(e) => return e.render(&app, &headers),
            };
            let att = match attachment_of(&app, &v) {
                Ok(a) => a,
                Err(e) => return e.render(&app, &headers),
            };
            let out = json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": format!("AAMkAGatt{}", random_token(12)),
                "name": att.name,
                "contentType": att.content_type,
                "size": att.bytes.len(),
                "isInline": false,
                "lastModifiedDateTime": graph_ts(now),
            });
            match add_to_draft(&app, p, seq, att, now) {
                Ok(()) => json_response(StatusCode::CREATED, out),
                Err(e) => e.render(&app, &headers),
            }
        },
    )
    .await
}

async fn graph_create_upload_session(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = link_base(&headers);
    call(
        &app,
        "graph.attachments.createUploadSession",
        &headers,
        write_needs(),
        |p| {
            let now = app.now();
            let seq = match find_draft(&app, p, &id) {
                Ok((s, _)) => s,
                Err(None) => return missing(&app, &headers, &id),
                Err(Some(e)) => return e.render(&app, &headers),
            };
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let item = get_ci(&v, "AttachmentItem").unwrap_or(&Value::Null);
            let name = get_ci(item, "name").and_then(Value::as_str).unwrap_or_default();
            let size = get_ci(item, "size").and_then(Value::as_u64).unwrap_or(0) as usize;
            let content_type = get_ci(item, "contentType")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            if name.is_empty() || size == 0 {
                return GErr::bad(
                    "ErrorInvalidRequest",
                    "AttachmentItem needs attachmentType 'file', a name and a size.",
                )
                .render(&app, &headers);
            }
            if name.contains(['\r', '\n']) || content_type.contains(['\r', '\n']) {
                return GErr::bad("ErrorInvalidRequest", "Line breaks are not allowed here.")
                    .render(&app, &headers);
            }
            if size > 150 << 20 {
                return too_large(150 << 20).render(&app, &headers);
            }
            let sid = random_token(24);
            let expires = now + 3600 * 6;
            app.mail(|m| {
                m.outgoing.uploads.insert(
                    sid.clone(),
                    UploadSession {
                        owner: p.user.email.clone(),
                        seq,
                        name: name.to_string(),
                        content_type: content_type.to_string(),
                        size,
                        data: Vec::with_capacity(size),
                        expires,
                    },
                );
            });
            json_response(
                StatusCode::CREATED,
                json!({
                    "@odata.context": format!("{base}/v1.0/$metadata#microsoft.graph.uploadSession"),
                    "uploadUrl": format!("{base}/api/v2.0/AttachmentSessions/{sid}?authtoken={}", random_token(24)),
                    "expirationDateTime": graph_ts(expires),
                    "nextExpectedRanges": ["0-"],
                }),
            )
        },
    )
    .await
}

/// `Content-Range: bytes a-b/total`.
fn content_range(headers: &HeaderMap) -> Option<(usize, usize, usize)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// A chunk of an attachment upload session. The URL is pre-authenticated: no bearer token.
async fn graph_upload_chunk(
    State(app): State<App>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.count("graph.attachments.upload", None);
    let now = app.now();
    let bad = |code: &'static str, msg: &str| GErr::bad(code, msg).render(&app, &headers);
    let Some(sess) = app.mail(|m| m.outgoing.uploads.get(&sid).cloned()) else {
        return graph_not_found(now, &headers);
    };
    if sess.expires <= now {
        app.mail(|m| m.outgoing.uploads.remove(&sid));
        return graph_not_found(now, &headers);
    }
    let Some((a, b, total)) = content_range(&headers) else {
        return bad(
            "ErrorInvalidRequest",
            "The Content-Range header is missing or malformed.",
        );
    };
    let chunk_limit = app.mail(|m| m.outgoing.config.graph_upload_chunk_limit);
    if total != sess.size || a != sess.data.len() || b < a || b - a + 1 != body.len() {
        return bad(
            "InvalidContentRange",
            &format!(
                "The Content-Range 'bytes {a}-{b}/{total}' does not match the next expected range '{}-' of {} bytes.",
                sess.data.len(),
                sess.size
            ),
        );
    }
    if body.len() > chunk_limit {
        return too_large(chunk_limit).render(&app, &headers);
    }
    let done = app.mail(|m| {
        let s = m.outgoing.uploads.get_mut(&sid)?;
        s.data.extend_from_slice(&body);
        Some(s.data.len() == s.size)
    });
    match done {
        Some(false) => {
            let next = sess.data.len() + body.len();
            json_response(
                StatusCode::OK,
                json!({"expirationDateTime": graph_ts(sess.expires), "nextExpectedRanges": [format!("{next}-")]}),
            )
        }
        Some(true) => {
            let Some(s) = app.mail(|m| m.outgoing.uploads.remove(&sid)) else {
                return graph_not_found(now, &headers);
            };
            let user = app.read(|st| st.user(&s.owner).cloned());
            let Some(user) = user else {
                return graph_not_found(now, &headers);
            };
            let p = Principal {
                user,
                client_id: String::new(),
                scopes: Vec::new(),
            };
            let att = Att {
                name: s.name,
                content_type: s.content_type,
                bytes: s.data,
            };
            match add_to_draft(&app, &p, s.seq, att, now) {
                Ok(()) => {
                    let mut r = StatusCode::CREATED.into_response();
                    let loc = format!(
                        "{}/v1.0/me/messages/{}/attachments/{sid}",
                        link_base(&headers),
                        app.mail(|m| mailbox(m, &p.user).immutable_id(s.seq))
                    );
                    if let Ok(v) = HeaderValue::from_str(&loc) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r
                }
                Err(e) => e.render(&app, &headers),
            }
        }
        None => graph_not_found(now, &headers),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Gmail

fn gmail_bad(message: &str) -> Response {
    google_api_error(
        StatusCode::BAD_REQUEST,
        "invalidArgument",
        "global",
        message,
    )
}

fn gmail_too_large(limit: usize) -> Response {
    google_api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "uploadTooLarge",
        "global",
        &format!("Request payload size exceeds the limit: {limit} bytes."),
    )
}

/// Decodes `raw`: base64url with or without padding; the standard alphabet and line breaks are tolerated.
fn decode_raw(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(cleaned).ok()
}

/// Gmail's subject comparison for threading: prefixes `Re:` / `Fwd:` / `Fw:` and case ignored.
fn base_subject(s: &str) -> String {
    let mut t = s.trim();
    loop {
        let lower = t.to_ascii_lowercase();
        let cut = ["re:", "fwd:", "fw:", "aw:", "wg:"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => t = t[n..].trim_start(),
            None => break,
        }
    }
    t.to_lowercase()
}

/// Checks and sends a Gmail message: the sent copy goes to `SENT`; returns (id, threadId).
fn gmail_submit(
    app: &App,
    p: &Principal,
    raw: Vec<u8>,
    thread_id: Option<&str>,
    via: &'static str,
) -> Result<(String, String), Response> {
    let now = app.now();
    if let Some(t) = thread_id
        && !(t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(gmail_bad("Invalid thread_id value"));
    }
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| gmail_bad("Invalid RFC822 message"))?;
    let rcpt = Recipients::of(&parsed);
    if let Some(bad) = rcpt.invalid {
        return Err(gmail_bad(&format!("Invalid To header: {bad}")));
    }
    if rcpt.is_empty() {
        return Err(gmail_bad("Recipient address required"));
    }
    drop(parsed);
    let (raw, _) = complete_headers(raw, &p.user, "mail.gmail.com", now)
        .map_err(|_| gmail_bad("Invalid RFC822 message"))?;
    let users = users_by_address(app);
    let out = app.mail(|m| {
        let mb = mailbox(m, &p.user);
        if thread_id.is_some_and(|t| mb.find(t).is_none()) {
            return Err(google_api_error(
                StatusCode::NOT_FOUND,
                "notFound",
                "global",
                "Requested entity was not found.",
            ));
        }
        let meta = meta_from_raw(&raw).map_err(|e| gmail_bad(&e))?;
        let subject = base_subject(&meta.subject);
        let place = Placement {
            folder: SENT,
            is_read: true,
            moves: 0,
        };
        // Inserted in SENT directly (Gmail has no Outbox); delivery follows in `submit`.
        let seq = mb
            .insert(Arc::new(raw), meta, now * 1000, place, now, true)
            .map_err(|e| gmail_bad(&e))?;
        // Gmail's rules: the message joins the thread only when threadId names it, its In-Reply-To /
        // References name a message of that thread, and the subject matches. Otherwise a new thread.
        let auto = mb.msgs[seq as usize].thread;
        let joins = thread_id.and_then(|t| mb.find(t)).is_some_and(|named| {
            let named_thread = mb.msgs[named as usize].thread;
            auto == named_thread
                && auto != seq
                && base_subject(&mb.msgs[named_thread as usize].meta.subject) == subject
        });
        if !joins {
            mb.msgs[seq as usize].thread = seq;
        }
        let id = mb.gmail_id(seq);
        let tid = mb.gmail_id(mb.msgs[seq as usize].thread);
        // Sent straight away: submit records it and delivers; the copy stays in SENT.
        mb.update(seq, Some(SENT), Some(true), now);
        submit(m, &users, &p.user.email, seq, via, None, true, now);
        Ok((id, tid))
    })?;
    Ok(out)
}

fn sent_json(id: &str, thread: &str) -> Response {
    json_response(
        StatusCode::OK,
        json!({"id": id, "threadId": thread, "labelIds": ["SENT"]}),
    )
}

/// `message.raw` and `message.threadId` of a JSON body (`Message` or `{message: Message}`).
fn raw_and_thread(app: &App, v: &Value) -> Result<(Vec<u8>, Option<String>), Response> {
    let raw = v.get("raw").and_then(Value::as_str).ok_or_else(|| {
        gmail_bad(
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
        )
    })?;
    let bytes = decode_raw(raw).ok_or_else(|| {
        gmail_bad("Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed")
    })?;
    let limit = app.mail(|m| m.outgoing.config.gmail_simple_limit);
    if bytes.len() > limit {
        return Err(gmail_too_large(limit));
    }
    let thread = v
        .get("threadId")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((bytes, thread))
}

fn json_body(body: &[u8]) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| gmail_bad(&format!("Invalid JSON payload received. {e}")))
}

async fn gmail_send(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let mut sender = None;
    let r = call(
        &app,
        "gmail.users.messages.send",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let out = json_body(&body)
                .and_then(|v| raw_and_thread(&app, &v))
                .and_then(|(raw, t)| {
                    gmail_submit(&app, p, raw, t.as_deref(), "gmail.users.messages.send")
                });
            match out {
                Ok((id, tid)) => {
                    sender = Some(p.user.email.clone());
                    sent_json(&id, &tid)
                }
                Err(r) => r,
            }
        },
    )
    .await;
    uncertain(&app, "gmail.users.messages.send", sender.as_deref(), r).await
}

/// The two parts of a `multipart/related` upload: JSON metadata and the message bytes. Split with
/// mail-parser, which reads the MIME structure; the message part's bytes are taken verbatim.
fn split_related(content_type: &str, body: &[u8]) -> Option<(Value, Vec<u8>)> {
    use mail_parser::{MimeHeaders, PartType};
    let mut doc = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    doc.extend_from_slice(body);
    let msg = mail_parser::MessageParser::default().parse(&doc)?;
    let root = msg.root_part();
    let PartType::Multipart(children) = &root.body else {
        return None;
    };
    let mut meta = json!({});
    let mut raw = None;
    for &i in children {
        let part = msg.part(i)?;
        let ct = part
            .content_type()
            .map(|c| {
                format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()).to_ascii_lowercase()
            })
            .unwrap_or_default();
        let bytes = doc.get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)?;
        if ct == "application/json" {
            meta = serde_json::from_slice(bytes).ok()?;
        } else if raw.is_none() {
            raw = Some(bytes.to_vec());
        }
    }
    Some((meta, raw?))
}

async fn gmail_upload_send(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let base = link_base(&headers);
    let mut sender = None;
    let r = call(&app, "gmail.users.messages.send", &headers, Needs::Google, |p| {
        if let Err(r) = gmail_user_ok(p, &user_id) {
            return r;
        }
        let limit = app.mail(|m| m.outgoing.config.gmail_upload_limit);
        if body.len() > limit {
            return google_api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "uploadTooLarge",
                "global",
                &format!("Media larger than: {limit}"),
            );
        }
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (raw, thread) = match params.get("uploadType") {
            Some("media") => (body.to_vec(), None),
            Some("multipart") => match split_related(&ct, &body) {
                Some((meta, raw)) => (
                    raw,
                    meta.get("threadId").and_then(Value::as_str).map(str::to_string),
                ),
                None => {
                    return gmail_bad(
                        "The multipart upload needs a JSON part and a message/rfc822 part.",
                    );
                }
            },
            Some("resumable") => {
                let meta = match json_body(&body) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let up = random_token(24);
                app.mail(|m| {
                    m.outgoing.resumable.insert(
                        up.clone(),
                        ResumableUpload {
                            owner: p.user.email.clone(),
                            thread_id: meta
                                .get("threadId")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        },
                    )
                });
                let mut r = StatusCode::OK.into_response();
                let loc = format!(
                    "{base}/upload/gmail/v1/users/{user_id}/messages/send?uploadType=resumable&upload_id={up}"
                );
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return r;
            }
            other => {
                return gmail_bad(&format!(
                    "Invalid upload type '{}': use media, multipart or resumable.",
                    other.unwrap_or_default()
                ));
            }
        };
        if raw.is_empty() {
            return gmail_bad("Media upload is empty.");
        }
        match gmail_submit(&app, p, raw, thread.as_deref(), "gmail.upload.messages.send") {
            Ok((id, tid)) => {
                sender = Some(p.user.email.clone());
                sent_json(&id, &tid)
            }
            Err(r) => r,
        }
    })
    .await;
    uncertain(&app, "gmail.users.messages.send", sender.as_deref(), r).await
}

/// The bytes of a resumable upload (single request; the sandbox does not take partial uploads).
async fn gmail_upload_put(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let Some(up) = params.get("upload_id").map(str::to_string) else {
        return gmail_bad("upload_id is required.");
    };
    let mut sender = None;
    let r = call(
        &app,
        "gmail.users.messages.send",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let Some(session) = app.mail(|m| m.outgoing.resumable.remove(&up)) else {
                return google_api_error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "global",
                    "Requested entity was not found.",
                );
            };
            if session.owner != p.user.email {
                return google_api_error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "global",
                    "Requested entity was not found.",
                );
            }
            let limit = app.mail(|m| m.outgoing.config.gmail_upload_limit);
            if body.len() > limit {
                return google_api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "uploadTooLarge",
                    "global",
                    &format!("Media larger than: {limit}"),
                );
            }
            match gmail_submit(
                &app,
                p,
                body.to_vec(),
                session.thread_id.as_deref(),
                "gmail.upload.messages.send",
            ) {
                Ok((id, tid)) => {
                    sender = Some(p.user.email.clone());
                    sent_json(&id, &tid)
                }
                Err(r) => r,
            }
        },
    )
    .await;
    uncertain(&app, "gmail.users.messages.send", sender.as_deref(), r).await
}

async fn gmail_draft_create(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(&app, "gmail.users.drafts.create", &headers, Needs::Google, |p| {
        if let Err(r) = gmail_user_ok(p, &user_id) {
            return r;
        }
        let now = app.now();
        let v = match json_body(&body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let msg = v.get("message").cloned().unwrap_or(Value::Null);
        let (raw, thread) = match raw_and_thread(&app, &msg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let (raw, _) = match complete_headers(raw, &p.user, "mail.gmail.com", now) {
            Ok(x) => x,
            Err(_) => return gmail_bad("Invalid RFC822 message"),
        };
        let meta = match meta_from_raw(&raw) {
            Ok(m) => m,
            Err(e) => return gmail_bad(&e),
        };
        let out = app.mail(|m| {
            let mb = mailbox(m, &p.user);
            let place = Placement {
                folder: DRAFTS,
                is_read: true,
                moves: 0,
            };
            let seq = mb.insert(Arc::new(raw), meta, now * 1000, place, now, true)?;
            let in_thread = thread
                .as_deref()
                .and_then(|t| mb.find(t))
                .map(|s| mb.msgs[s as usize].thread);
            mb.msgs[seq as usize].thread = in_thread.unwrap_or(seq);
            let id = mb.gmail_id(seq);
            let tid = mb.gmail_id(mb.msgs[seq as usize].thread);
            let draft_id = format!("r-{}", rand::random_range(10u64.pow(18)..u64::MAX / 2));
            m.outgoing
                .gmail_drafts
                .insert(draft_id.clone(), (p.user.email.clone(), seq));
            Ok::<_, String>((draft_id, id, tid))
        });
        match out {
            Ok((did, id, tid)) => json_response(
                StatusCode::OK,
                json!({"id": did, "message": {"id": id, "threadId": tid, "labelIds": ["DRAFT"]}}),
            ),
            Err(e) => gmail_bad(&e),
        }
    })
    .await
}

async fn gmail_draft_send(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let mut sender = None;
    let r = call(
        &app,
        "gmail.users.drafts.send",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let now = app.now();
            let v = match json_body(&body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let Some(did) = v.get("id").and_then(Value::as_str) else {
                return gmail_bad("Draft id is required.");
            };
            let found = app.mail(|m| {
                let (owner, seq) = m.outgoing.gmail_drafts.get(did).cloned()?;
                if owner != p.user.email {
                    return None;
                }
                let mb = m.by_owner.get(&owner)?;
                let msg = mb.msgs.get(seq as usize).filter(|x| !x.deleted)?;
                let thread = (msg.thread != seq).then(|| mb.gmail_id(msg.thread));
                Some((seq, msg.raw.clone(), thread))
            });
            let Some((seq, raw, thread)) = found else {
                return google_api_error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "global",
                    "Requested entity was not found.",
                );
            };
            // A message in the request replaces the draft's content.
            let (raw, thread) = match v.get("message").filter(|m| m.get("raw").is_some()) {
                Some(m) => match raw_and_thread(&app, m) {
                    Ok((r, t)) => (r, t.or(thread)),
                    Err(r) => return r,
                },
                None => (raw.to_vec(), thread),
            };
            match gmail_submit(&app, p, raw, thread.as_deref(), "gmail.users.drafts.send") {
                Ok((id, tid)) => {
                    // The draft is gone; the sent message has a new id.
                    app.mail(|m| {
                        m.outgoing.gmail_drafts.remove(did);
                        mailbox(m, &p.user).delete(seq, now);
                    });
                    sender = Some(p.user.email.clone());
                    sent_json(&id, &tid)
                }
                Err(r) => r,
            }
        },
    )
    .await;
    uncertain(&app, "gmail.users.drafts.send", sender.as_deref(), r).await
}

// ---------------------------------------------------------------------------------------------------------
// Control API

fn control_bad(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"error": msg.into()}))
}

fn records_of(app: &App, user: &str, scheduled: bool) -> Response {
    release_due(app);
    let Some(u) = app.read(|s| s.user(user).cloned()) else {
        return control_bad(StatusCode::NOT_FOUND, format!("unknown user {user}"));
    };
    let list: Vec<SendRecord> = app.mail(|m| {
        m.outgoing
            .records
            .iter()
            .filter(|r| r.user == u.email)
            .filter(|r| (r.state == SendState::Scheduled) == scheduled)
            .cloned()
            .collect()
    });
    json_response(StatusCode::OK, json!({"user": u.email, "value": list}))
}

/// `GET /_sandbox/mailboxes/{user}/sent`: the user's accepted sends that went out (or were cancelled).
async fn control_sent(State(app): State<App>, Path(user): Path<String>) -> Response {
    records_of(&app, &user, false)
}

/// `GET /_sandbox/mailboxes/{user}/scheduled`: deferred sends still waiting.
async fn control_scheduled(State(app): State<App>, Path(user): Path<String>) -> Response {
    records_of(&app, &user, true)
}

async fn control_uncertain_list(State(app): State<App>) -> Response {
    let list = app.mail(|m| m.outgoing.uncertain.clone());
    json_response(StatusCode::OK, json!({"value": list}))
}

async fn control_uncertain_add(State(app): State<App>, body: Bytes) -> Response {
    let mut rule: UncertainRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return control_bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if rule.hang_millis > 120_000 {
        return control_bad(StatusCode::BAD_REQUEST, "hang_millis above 120 000");
    }
    let rule = app.mail(|m| {
        rule.id = m.outgoing.next();
        rule.hits = 0;
        m.outgoing.uncertain.push(rule.clone());
        rule
    });
    json_response(StatusCode::CREATED, json!(rule))
}

async fn control_uncertain_clear(State(app): State<App>) -> Response {
    app.mail(|m| m.outgoing.uncertain.clear());
    StatusCode::NO_CONTENT.into_response()
}

async fn control_refusal_list(State(app): State<App>) -> Response {
    let list = app.mail(|m| m.outgoing.lookup_refusals.clone());
    json_response(StatusCode::OK, json!({"value": list}))
}

async fn control_refusal_add(State(app): State<App>, body: Bytes) -> Response {
    let mut rule: LookupRefusal = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return control_bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if rule.count == Some(0) {
        return control_bad(StatusCode::BAD_REQUEST, "count must be at least 1");
    }
    let rule = app.mail(|m| {
        rule.id = m.outgoing.next();
        rule.hits = 0;
        m.outgoing.lookup_refusals.push(rule.clone());
        rule
    });
    json_response(StatusCode::CREATED, json!(rule))
}

async fn control_refusal_clear(State(app): State<App>) -> Response {
    app.mail(|m| m.outgoing.lookup_refusals.clear());
    StatusCode::NO_CONTENT.into_response()
}

async fn control_config_get(State(app): State<App>) -> Response {
    let c = app.mail(|m| m.outgoing.config.clone());
    json_response(StatusCode::OK, json!(c))
}

async fn control_config_put(State(app): State<App>, body: Bytes) -> Response {
    let c: SendConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return control_bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if c.deferred_folder != "outbox" && c.deferred_folder != "drafts" {
        return control_bad(
            StatusCode::BAD_REQUEST,
            format!(
                "deferred_folder must be outbox or drafts (folders: {})",
                FOLDERS.map(|(n, _)| n).join(", ")
            ),
        );
    }
    app.mail(|m| m.outgoing.config = c.clone());
    json_response(StatusCode::OK, json!(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcc_fields_and_their_continuations_are_removed_from_delivered_copies() {
        let raw = b"From: a@x.test\r\nBcc: hidden@x.test,\r\n more@x.test\r\nTo: b@x.test\r\n\r\nBcc: in body stays\r\n";
        let out = strip_bcc(raw);
        assert_eq!(
            out,
            b"From: a@x.test\r\nTo: b@x.test\r\n\r\nBcc: in body stays\r\n".to_vec()
        );
    }

    #[test]
    fn raw_decodes_padded_unpadded_and_standard_alphabet() {
        let text = b"Subject: ?>?\n\nhi";
        let padded = base64::engine::general_purpose::URL_SAFE.encode(text);
        let unpadded = URL_SAFE_NO_PAD.encode(text);
        let standard = STANDARD.encode(text);
        assert!(padded.ends_with('='));
        for s in [padded, unpadded, standard] {
            assert_eq!(decode_raw(&s).as_deref(), Some(&text[..]));
        }
        assert!(decode_raw("not base64 at all!").is_none());
    }

    #[test]
    fn gmail_subjects_compare_without_reply_prefixes() {
        assert_eq!(
            base_subject("Re: RE: Fwd: Senior Rust role"),
            "senior rust role"
        );
        assert_ne!(base_subject("Re: Other"), base_subject("Senior Rust role"));
    }
}
