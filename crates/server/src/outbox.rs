//! Email Connect: recruiters send and schedule email to candidates through
//! their own mailbox (issue 8).
//!
//! [`submit`] checks that the recruiter may send (rollout flag, inbox grant
//! with send permission, the org's access level), composes the message once
//! to refuse bad input early (header injection, sizes), generates the
//! `Message-ID` and stores the message in the outbox (`hirewire_store`'s
//! `outbox` table) — all before any provider call.
//!
//! A worker ([`run_one`], [`spawn_worker`]) claims due rows with a fenced
//! lease and sends them. The lease is renewed when the provider call starts
//! and the call is cut off at three quarters of it (an unknown outcome), so
//! no other worker can take a row over while its send may still be landing:
//! - **At most once, then reconcile.** A row whose previous attempt ended in
//!   an uncertain outcome (timeout, 500/502/504 on the commit request, or a
//!   worker that died mid-send) is looked up by its `Message-ID` first: found
//!   → sent; Graph's unsent draft → that same draft is sent; conclusively not
//!   found → sent again; inconclusive → `needs_attention`, never resent.
//! - **Failures** the provider says are temporary are retried with doubling
//!   backoff (or its `Retry-After`) up to `max_attempts`, then `failed` with
//!   the reason. Refusals fail at once.
//! - **Pacing.** At most `pacing.per_window` provider sends per mailbox per
//!   `pacing.window` (default 30 a minute, Exchange Online's limit); a row
//!   over it waits, with a `hold_reason` the pages show.
//! - **Holds.** The rollout flag (read from the database, [`crate::flags`]) and the permissions are checked again at send
//!   time; a row that may not go out waits with the reason, and goes when the
//!   recruiter is allowed again.

use std::time::Duration;

use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::{CandidateId, GrantId, MailThreadId};
use hirewire_mail::compose::{ComposeLimits, Draft, FileAttachment, Recipient, ReplyTo, compose};
use hirewire_providers::send::{Lookup, MailSender, Outgoing, SendError};
use hirewire_providers::{AccessLevel, Capability, Provider, scopes};
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, GrantStatus, MailViewer, NewOutboxItem, OutboxAttachment,
    OutboxId, OutboxItem, OutboxOutcome, Role, StoreError, User,
};
use jiff::Timestamp;

use crate::app::AppState;
use crate::integrations;

/// Per-mailbox send pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Provider sends allowed per mailbox in `window`.
    pub per_window: u32,
    pub window: Duration,
}

/// Who has Email Connect: the evaluation form of the stored flag (see
/// [`crate::flags`]; the database is the one source of truth).
pub use crate::flags::Rollout;

/// Settings of Email Connect.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// How long a worker holds a claimed message. Renewed when the provider
    /// call starts; the call is cut off at three quarters of it (its outcome
    /// then unknown: looked up before anything else), so a slow send is never
    /// claimed twice. Best kept above the provider HTTP timeout (30 s), so
    /// a slow provider is not cut off early.
    pub lease: Duration,
    /// How often an idle worker looks for due messages.
    pub poll_interval: Duration,
    /// Provider attempts before a message is `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `None`: no pacing.
    pub pacing: Option<Pacing>,
    /// How soon a held message (flag off, permission missing) is looked at again.
    pub hold_recheck: Duration,
    /// Largest single attachment, bytes.
    pub max_attachment_bytes: usize,
    /// Largest sum of a message's attachments, bytes.
    pub max_total_attachment_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            lease: Duration::from_secs(5 * 60),
            poll_interval: Duration::from_secs(1),
            max_attempts: 6,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30 * 60),
            pacing: Some(Pacing {
                per_window: 30,
                window: Duration::from_secs(60),
            }),
            hold_recheck: Duration::from_secs(5 * 60),
            max_attachment_bytes: 20 * 1024 * 1024,
            max_total_attachment_bytes: 25 * 1024 * 1024,
        }
    }
}

impl OutboxConfig {
    fn limits(&self) -> ComposeLimits {
        ComposeLimits {
            max_attachment_bytes: self.max_attachment_bytes,
            max_total_attachment_bytes: self.max_total_attachment_bytes,
            ..ComposeLimits::default()
        }
    }

    /// Delay before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What the recruiter must do before they can send, or that they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Sending works, through this grant.
    Ready {
        grant: GrantId,
        provider: Provider,
        from: String,
    },
    /// Email Connect is not rolled out to this user yet.
    NotEnabled,
    /// Something is missing; `message` says exactly what.
    Blocked {
        /// Stable code: `inbox_not_connected`, `inbox_needs_reauthorization`,
        /// `send_permission_missing`, `access_view_only`, `email_access_off`,
        /// `no_provider`.
        code: &'static str,
        message: String,
        /// The recruiter can fix it by authorizing the inbox again (else: ask the admin).
        reauthorize: bool,
    },
}

impl Readiness {
    pub fn code(&self) -> &'static str {
        match self {
            Readiness::Ready { .. } => "ready",
            Readiness::NotEnabled => "feature_not_enabled",
            Readiness::Blocked { code, .. } => code,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Readiness::Ready { from, .. } => format!("Emails are sent from {from}."),
            Readiness::NotEnabled => NOT_ENABLED.into(),
            Readiness::Blocked { message, .. } => message.clone(),
        }
    }
}

/// What a user without the rollout flag is told.
pub const NOT_ENABLED: &str = "Sending email from hirewire (Email Connect) is not available to you yet. It is being rolled out gradually; until then, write to candidates from your own mail app.";

/// Whether `user` may send now, and if not, why.
pub async fn readiness(state: &AppState, user: &User) -> Result<Readiness, StoreError> {
    if !crate::flags::email_connect_enabled(state, user).await? {
        return Ok(Readiness::NotEnabled);
    }
    let ask_admin = if user.role == Role::Admin {
        "Change it under Admin > Email provider."
    } else {
        "Ask your admin to change it."
    };
    let settings = state.store.provider_settings(user.org_id).await?;
    let Some(settings) = settings else {
        return Ok(Readiness::Blocked {
            code: "no_provider",
            message: format!(
                "Your organization has not connected an email provider yet. {ask_admin}"
            ),
            reauthorize: false,
        });
    };
    match settings.access_level {
        AccessLevelSetting::SendAndView => {}
        AccessLevelSetting::ViewOnly => {
            return Ok(Readiness::Blocked {
                code: "access_view_only",
                message: format!(
                    "Your organization's email access level is \"View only\": hirewire may read mail but not send it. Sending needs \"Send & view\". {ask_admin}"
                ),
                reauthorize: false,
            });
        }
        AccessLevelSetting::Off => {
            return Ok(Readiness::Blocked {
                code: "email_access_off",
                message: format!(
                    "Email access is turned off for your organization. Sending needs the access level \"Send & view\". {ask_admin}"
                ),
                reauthorize: false,
            });
        }
    }
    let Some(grant) = state.store.grant(user.id, CapabilityKind::Inbox).await? else {
        return Ok(Readiness::Blocked {
            code: "inbox_not_connected",
            message: "Your inbox is not connected to hirewire. Authorize your inbox (with permission to send) to email candidates from here.".into(),
            reauthorize: true,
        });
    };
    let Some(provider) = integrations::provider_of(grant.provider) else {
        return Ok(Readiness::Blocked {
            code: "no_provider",
            message: format!("Your inbox connection uses an unknown provider. {ask_admin}"),
            reauthorize: false,
        });
    };
    if grant.status != GrantStatus::Active {
        return Ok(Readiness::Blocked {
            code: "inbox_needs_reauthorization",
            message: format!(
                "Your inbox connection needs to be authorized again{}.",
                grant
                    .status_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            reauthorize: true,
        });
    }
    let granted = scopes::normalize_granted(provider, &grant.scopes);
    let needed = scopes::required(provider, Capability::Inbox, AccessLevel::SendAndView);
    let missing = scopes::missing(provider, &granted, &needed);
    if !missing.is_empty() {
        let what: Vec<String> = missing
            .iter()
            .map(|n| format!("{} ({})", n.scope, n.purpose))
            .collect();
        return Ok(Readiness::Blocked {
            code: "send_permission_missing",
            message: format!(
                "Your inbox connection does not include permission to send: missing {}. Authorize your inbox again and accept sending.",
                what.join("; ")
            ),
            reauthorize: true,
        });
    }
    Ok(Readiness::Ready {
        grant: grant.id,
        provider,
        from: grant
            .account_address
            .clone()
            .unwrap_or_else(|| user.email.as_str().to_owned()),
    })
}

/// A message as the recruiter wrote it.
#[derive(Debug, Clone, Default)]
pub struct ComposeInput {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_markdown: String,
    pub attachments: Vec<OutboxAttachment>,
    /// Reply into this email conversation of the candidate's timeline.
    pub reply_to_thread: Option<MailThreadId>,
    /// `None`: now.
    pub send_at: Option<Timestamp>,
}

/// Why a message was not put in the outbox. Each has a stable code.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{}", .0.message())]
    NotReady(Readiness),
    #[error("candidate not found")]
    CandidateNotFound,
    #[error("conversation not found")]
    ThreadNotFound,
    /// Input refused; `code` is stable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::NotReady(r) => r.code(),
            SubmitError::CandidateNotFound => "not_found",
            SubmitError::ThreadNotFound => "thread_not_found",
            SubmitError::Invalid { code, .. } => code,
            SubmitError::Store(_) => "internal",
        }
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> SubmitError {
    SubmitError::Invalid {
        code,
        message: message.into(),
    }
}

/// A new `Message-ID` (without brackets): random, on the public host.
pub fn new_message_id(state: &AppState) -> String {
    let host = state
        .config
        .public_url
        .host_str()
        .filter(|h| !h.is_empty() && h.parse::<std::net::IpAddr>().is_err())
        .unwrap_or("hirewire.invalid");
    format!(
        "hw.{}.{:016x}@{host}",
        state.now().as_millisecond(),
        rand::random::<u64>()
    )
}

/// Checks and stores a message for `candidate`; it goes out at `send_at` (or
/// at once) through the worker.
pub async fn submit(
    state: &AppState,
    user: &User,
    candidate: CandidateId,
    input: ComposeInput,
) -> Result<OutboxItem, SubmitError> {
    let (grant, from) = match readiness(state, user).await? {
        Readiness::Ready { grant, from, .. } => (grant, from),
        other => return Err(SubmitError::NotReady(other)),
    };
    let cand = state
        .store
        .candidate(user.org_id, candidate)
        .await?
        .ok_or(SubmitError::CandidateNotFound)?;
    let mut to = Vec::new();
    for a in &input.to {
        let key = AddressKey::of(a.trim());
        let Some(e) = cand.emails.iter().find(|e| e.key == key) else {
            return Err(invalid(
                "recipient_not_candidate",
                format!("'{}' is not an address of {}", a.trim(), cand.name),
            ));
        };
        if !to.contains(&e.address.as_str().to_owned()) {
            to.push(e.address.as_str().to_owned());
        }
    }
    if to.is_empty() {
        return Err(invalid(
            "no_recipient",
            "choose at least one of the candidate's addresses in To",
        ));
    }
    let mut cc = Vec::new();
    for a in input.cc.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        if a.contains(['\r', '\n']) {
            return Err(invalid(
                "header_injection",
                "the Cc contains a line break or control character, which is not allowed",
            ));
        }
        let e = EmailAddress::parse(a).map_err(|_| {
            invalid(
                "invalid_address",
                format!("'{a}' in Cc is not a valid email address"),
            )
        })?;
        cc.push(e.as_str().to_owned());
    }
    let reply = match input.reply_to_thread {
        Some(t) => Some(reply_headers(state, user, t).await?),
        None => None,
    };
    // A reply without a subject takes the conversation's ("Re: …"), which
    // Gmail also needs to keep it in the thread.
    let subject = match (&reply, input.subject.trim()) {
        (Some((_, Some(s), _)), "") if s.to_lowercase().starts_with("re:") => s.clone(),
        (Some((_, Some(s), _)), "") => format!("Re: {s}"),
        (_, s) => s.to_owned(),
    };
    let (reply, thread_hint) = match reply {
        Some((r, _, parent_copy)) => (Some(r), parent_copy),
        None => (None, None),
    };
    if subject.is_empty() {
        return Err(invalid("subject_required", "write a subject"));
    }
    if input.body_markdown.trim().is_empty() && input.attachments.is_empty() {
        return Err(invalid("body_required", "write a message"));
    }
    let now = state.now();
    if let Some(at) = input.send_at
        && at < now - jiff::SignedDuration::from_secs(60)
    {
        return Err(invalid("send_at_in_past", "the scheduled time has passed"));
    }
    let message_id = new_message_id(state);
    // Compose once now so that bad input is refused before anything is stored.
    let draft = draft(
        user,
        &from,
        &to,
        &cc,
        &subject,
        &input.body_markdown,
        input
            .attachments
            .iter()
            .map(|a| FileAttachment {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                bytes: a.bytes.clone(),
            })
            .collect(),
        &message_id,
        reply.clone(),
        now,
    );
    if let Err(e) = compose(&draft, &state.config.outbox.limits()) {
        let code = match e {
            hirewire_mail::compose::ComposeError::HeaderInjection(_) => "header_injection",
            hirewire_mail::compose::ComposeError::AttachmentTooLarge { .. }
            | hirewire_mail::compose::ComposeError::AttachmentsTooLarge { .. } => {
                "attachment_too_large"
            }
            hirewire_mail::compose::ComposeError::InvalidAddress { .. } => "invalid_address",
            _ => "invalid_message",
        };
        return Err(invalid(code, e.to_string()));
    }
    let references = reply
        .as_ref()
        .map(|r| r.references.clone())
        .unwrap_or_default();
    let item = state
        .store
        .create_outbox(
            user.org_id,
            &NewOutboxItem {
                user_id: user.id,
                candidate_id: candidate,
                grant_id: grant,
                to: &to,
                cc: &cc,
                subject: &subject,
                body_markdown: &input.body_markdown,
                attachments: &input.attachments,
                message_id: &message_id,
                in_reply_to: reply.as_ref().map(|r| r.in_reply_to.as_str()),
                references: &references,
                thread_hint: thread_hint.as_deref(),
                send_at: input.send_at,
            },
            state.config.outbox.max_total_attachment_bytes as u64,
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => SubmitError::CandidateNotFound,
            StoreError::Invalid(m) => invalid("invalid_message", m),
            e => SubmitError::Store(e),
        })?;
    Ok(item)
}

/// `In-Reply-To` (the conversation's latest message) and `References` (its
/// messages, oldest first) for a reply into `thread`, which the user must see,
/// the latest message's subject, and the provider id of the user's own copy
/// of the parent (the outbox's `thread_hint`, see [`reply_from_parent`]).
async fn reply_headers(
    state: &AppState,
    user: &User,
    thread: MailThreadId,
) -> Result<(ReplyTo, Option<String>, Option<String>), SubmitError> {
    let viewer = MailViewer {
        user: user.id,
        is_admin: user.role == Role::Admin,
    };
    let messages = match state
        .store
        .thread_messages(user.org_id, thread, viewer)
        .await
    {
        Ok(m) => m,
        Err(StoreError::NotFound) => return Err(SubmitError::ThreadNotFound),
        Err(e) => return Err(e.into()),
    };
    let mut refs: Vec<String> = Vec::new();
    for m in &messages {
        if let Some(id) = &m.message_id_header
            && !refs.contains(id)
        {
            refs.push(id.clone());
        }
    }
    let Some(last) = refs.last().cloned() else {
        return Err(invalid(
            "thread_without_ids",
            "this conversation's messages carry no Message-ID to reply to",
        ));
    };
    // Keep the root and the latest few (RFC 5322 §3.6.4 allows trimming).
    if refs.len() > 11 {
        let tail = refs.split_off(refs.len() - 10);
        refs.truncate(1);
        refs.extend(tail);
    }
    let subject = messages.iter().rev().find_map(|m| m.subject.clone());
    let parent_copy = messages
        .iter()
        .rev()
        .find(|m| {
            m.owner_user_id == user.id && m.message_id_header.as_deref() == Some(last.as_str())
        })
        .map(|m| m.provider_message_id.clone());
    Ok((
        ReplyTo {
            in_reply_to: last,
            references: refs,
        },
        subject,
        parent_copy,
    ))
}

/// The threading of a reply as sent. hirewire stores Message-IDs lowercased
/// (their comparison form), but ids are case-sensitive on the wire: when the
/// outbox row names the user's own copy of the parent (`thread_hint`), the
/// parent is read from the mailbox so `In-Reply-To`/`References` carry the
/// ids exactly as written, and Gmail's `threadId` comes with it. Without it
/// (or when the read fails) the stored ids are used and Gmail starts a new
/// thread — the headers still thread it for the recipient.
async fn reply_from_parent(
    state: &AppState,
    provider: Provider,
    access: &hirewire_providers::Secret,
    item: &OutboxItem,
) -> (Option<ReplyTo>, Option<String>) {
    let Some(parent) = item.in_reply_to.clone() else {
        return (None, None);
    };
    let mut reply = ReplyTo {
        in_reply_to: parent,
        references: item.references.clone(),
    };
    let Some(copy) = item.thread_hint.as_deref() else {
        return (Some(reply), None);
    };
    let reader = hirewire_providers::MailReader::new(
        provider,
        state.config.provider_endpoints.clone(),
        state.provider_http.clone(),
    );
    let raw = match reader.fetch_raw(access, copy).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the replied-to message");
            return (Some(reply), None);
        }
    };
    let env = hirewire_mail::parse_envelope(&raw.raw);
    let originals: Vec<String> = env
        .references
        .iter()
        .chain(env.in_reply_to.iter())
        .chain(env.message_id.iter())
        .cloned()
        .collect();
    let original = |id: &str| {
        originals
            .iter()
            .find(|o| o.eq_ignore_ascii_case(id))
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    };
    reply.in_reply_to = original(&reply.in_reply_to);
    reply.references = reply.references.iter().map(|r| original(r)).collect();
    let thread = match provider {
        Provider::Google => raw.thread_id,
        Provider::Microsoft => None,
    };
    (Some(reply), thread)
}

#[allow(clippy::too_many_arguments)]
fn draft(
    user: &User,
    from: &str,
    to: &[String],
    cc: &[String],
    subject: &str,
    body: &str,
    attachments: Vec<FileAttachment>,
    message_id: &str,
    reply: Option<ReplyTo>,
    now: Timestamp,
) -> Draft {
    Draft {
        from: Recipient::named(user.display_name.clone(), from),
        to: to.iter().map(Recipient::address).collect(),
        cc: cc.iter().map(Recipient::address).collect(),
        bcc: Vec::new(),
        subject: subject.to_owned(),
        body_markdown: body.to_owned(),
        attachments,
        message_id: message_id.to_owned(),
        reply,
        date: now.as_second(),
    }
}

/// What one worker turn did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    Sent(OutboxId),
    /// Found already sent by the lookup (no second send).
    Reconciled(OutboxId),
    Retry(OutboxId),
    Waiting(OutboxId),
    Failed(OutboxId),
    NeedsAttention(OutboxId),
    /// The lease was lost meanwhile; another worker has the row.
    Lost(OutboxId),
}

/// Claims and handles one due message; `None` when none is due.
pub async fn run_one(state: &AppState, owner: &str) -> Result<Option<Turn>, StoreError> {
    let cfg = &state.config.outbox;
    let Some(claimed) = state
        .store
        .claim_outbox(owner, state.now(), cfg.lease)
        .await?
    else {
        return Ok(None);
    };
    let item = claimed.item;
    let token = claimed.fencing_token;
    let id = item.id;
    let (outcome, turn) = match decide(state, &item, token).await {
        Ok(d) => d,
        Err(StoreError::StaleLease) => return Ok(Some(Turn::Lost(id))),
        Err(e) => return Err(e),
    };
    match state
        .store
        .finish_outbox(id, token, &outcome.as_outcome(), state.now())
        .await
    {
        Ok(()) => Ok(Some(turn)),
        Err(StoreError::StaleLease) => Ok(Some(Turn::Lost(id))),
        Err(e) => Err(e),
    }
}

/// An owned [`OutboxOutcome`].
enum Decision {
    Sent(String, Option<String>),
    Retry {
        at: Timestamp,
        error: String,
        needs_lookup: bool,
        draft_id: Option<String>,
    },
    Wait(Timestamp, String),
    Failed(String),
    NeedsAttention(String),
}

impl Decision {
    fn as_outcome(&self) -> OutboxOutcome<'_> {
        match self {
            Decision::Sent(m, t) => OutboxOutcome::Sent {
                provider_message_id: m,
                provider_thread_id: t.as_deref(),
            },
            Decision::Retry {
                at,
                error,
                needs_lookup,
                draft_id,
            } => OutboxOutcome::Retry {
                at: *at,
                error,
                needs_lookup: *needs_lookup,
                draft_id: draft_id.as_deref(),
            },
            Decision::Wait(at, reason) => OutboxOutcome::Wait { at: *at, reason },
            Decision::Failed(e) => OutboxOutcome::Failed { error: e },
            Decision::NeedsAttention(e) => OutboxOutcome::NeedsAttention { error: e },
        }
    }
}

fn later(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

async fn decide(
    state: &AppState,
    item: &OutboxItem,
    token: i64,
) -> Result<(Decision, Turn), StoreError> {
    let cfg = &state.config.outbox;
    let now = state.now();
    let id = item.id;
    let hold = |reason: String| {
        (
            Decision::Wait(later(now, cfg.hold_recheck), reason),
            Turn::Waiting(id),
        )
    };
    let Some(user) = state
        .store
        .user_by_id(item.user_id)
        .await?
        .filter(|u| u.org_id == item.org_id)
    else {
        return Ok((
            Decision::Failed("the sender's account no longer exists".into()),
            Turn::Failed(id),
        ));
    };
    let (grant, provider, from) = match readiness(state, &user).await? {
        Readiness::Ready {
            grant,
            provider,
            from,
        } => (grant, provider, from),
        Readiness::NotEnabled => {
            return Ok(hold(
                "Held: Email Connect has been turned off for you. It goes out when it is turned back on; cancel it if it should not."
                    .into(),
            ));
        }
        Readiness::Blocked { message, .. } => return Ok(hold(format!("Held: {message}"))),
    };
    let access = match integrations::access_token(state, user.id, CapabilityKind::Inbox).await {
        Ok(t) => t,
        Err(n) => {
            return Ok(hold(format!(
                "Held: the inbox connection cannot be used ({}).",
                n.message(Some(provider))
            )));
        }
    };
    let sender = MailSender::new(
        provider,
        state.config.provider_endpoints.clone(),
        state.provider_http.clone(),
    );
    let mut draft_id = item.draft_id.clone();
    let mut attempts = item.attempts;
    if item.needs_lookup {
        // The lookup is a provider call too: it counts, so a mailbox that can
        // never answer ends in "needs attention" rather than looping.
        state
            .store
            .begin_outbox_send(id, token, now, cfg.lease)
            .await?;
        attempts += 1;
        match sender.find_by_message_id(&access, &item.message_id).await {
            Ok(Lookup::Found(found)) => {
                let first = found.into_iter().next();
                return Ok((
                    Decision::Sent(
                        first
                            .as_ref()
                            .map(|f| f.id.clone())
                            .or_else(|| item.draft_id.clone())
                            .unwrap_or_default(),
                        first.and_then(|f| f.thread_id),
                    ),
                    Turn::Reconciled(id),
                ));
            }
            Ok(Lookup::Unsent { draft_id: d }) => draft_id = Some(d),
            Ok(Lookup::NotFound) => draft_id = None,
            Ok(Lookup::Inconclusive(why)) => {
                return Ok((
                    Decision::NeedsAttention(format!(
                        "The last attempt's outcome is unknown and the mailbox could not tell whether it went out ({why}). Check your Sent folder; hirewire will not send it again on its own."
                    )),
                    Turn::NeedsAttention(id),
                ));
            }
            Err(e) => {
                let error = format!("looking up an uncertain send failed: {}", e.user_message());
                if attempts >= cfg.max_attempts {
                    return Ok((
                        Decision::NeedsAttention(format!(
                            "{error}. Check your Sent folder; hirewire will not send it again on its own."
                        )),
                        Turn::NeedsAttention(id),
                    ));
                }
                return Ok((
                    Decision::Retry {
                        at: later(now, cfg.backoff(attempts)),
                        error,
                        needs_lookup: true,
                        draft_id: None,
                    },
                    Turn::Retry(id),
                ));
            }
        }
    }
    if let Some(p) = cfg.pacing
        && p.per_window > 0
    {
        // Sends strictly inside the last window (one exactly a window ago no longer counts).
        let since = now
            .checked_sub(jiff::SignedDuration::try_from(p.window).unwrap_or_default())
            .unwrap_or(now)
            + jiff::SignedDuration::from_millis(1);
        let recent = state.store.outbox_sends_since(grant, since).await?;
        let n = p.per_window as usize;
        if recent.len() >= n {
            let free_at = later(recent[recent.len() - n], p.window);
            let at = if free_at > now { free_at } else { now };
            return Ok((
                Decision::Wait(
                    at,
                    format!(
                        "Waiting for your mailbox's sending pace ({} per {} s); it goes out at {}.",
                        p.per_window,
                        p.window.as_secs(),
                        at.strftime("%H:%M:%S UTC")
                    ),
                ),
                Turn::Waiting(id),
            ));
        }
    }
    let (reply, gmail_thread) = reply_from_parent(state, provider, &access, item).await;
    let files = state.store.outbox_attachments(id).await?;
    let composed = match compose(
        &draft(
            &user,
            &from,
            &item.to,
            &item.cc,
            &item.subject,
            &item.body_markdown,
            files
                .into_iter()
                .map(|a| FileAttachment {
                    filename: a.filename,
                    content_type: a.content_type,
                    bytes: a.bytes,
                })
                .collect(),
            &item.message_id,
            reply,
            now,
        ),
        &cfg.limits(),
    ) {
        Ok(c) => c,
        Err(e) => {
            return Ok((
                Decision::Failed(format!("The message cannot be built: {e}")),
                Turn::Failed(id),
            ));
        }
    };
    state
        .store
        .begin_outbox_send(id, token, now, cfg.lease)
        .await?;
    let attempt = attempts + 1;
    // The provider call must end while this worker still holds the lease (just
    // renewed): past it, another worker may take the row over, look the
    // message up before this call has landed, and send it a second time. So
    // the call is cut off at three quarters of the lease, whatever the HTTP
    // timeout; its outcome is then unknown and the message is looked up first.
    let call = async {
        match (&draft_id, provider) {
            (Some(d), Provider::Microsoft) => sender
                .send_draft(&access, d)
                .await
                .map(|()| (d.clone(), None)),
            _ => sender
                .send(
                    &access,
                    &Outgoing {
                        raw: &composed.raw,
                        gmail_thread_id: gmail_thread.as_deref(),
                        send_at: None,
                    },
                )
                .await
                .map(|s| (s.provider_message_id, s.thread_id)),
        }
    };
    let result = match tokio::time::timeout(send_bound(cfg.lease), call).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Uncertain {
            detail: format!(
                "no answer within {} ms, the outbox lease's share for one send",
                send_bound(cfg.lease).as_millis()
            ),
            draft_id: None,
        }),
    };
    let now = state.now();
    Ok(match result {
        Ok((m, t)) => (Decision::Sent(m, t), Turn::Sent(id)),
        Err(SendError::Uncertain {
            detail,
            draft_id: d,
        }) => {
            if attempt >= cfg.max_attempts {
                (
                    Decision::NeedsAttention(format!(
                        "The provider did not confirm the send ({detail}) and attempts are used up. Check your Sent folder; hirewire will not send it again on its own."
                    )),
                    Turn::NeedsAttention(id),
                )
            } else {
                (
                    Decision::Retry {
                        at: later(now, cfg.backoff(attempt)),
                        error: format!(
                            "The provider did not confirm the send ({detail}); checking the mailbox before trying again."
                        ),
                        needs_lookup: true,
                        draft_id: d.or(draft_id),
                    },
                    Turn::Retry(id),
                )
            }
        }
        Err(SendError::Retryable {
            retry_after,
            detail,
            draft_id: d,
        }) => retry_or_fail(cfg, now, id, attempt, retry_after, detail, d.or(draft_id)),
        Err(SendError::TokenRejected) => retry_or_fail(
            cfg,
            now,
            id,
            attempt,
            None,
            "the provider rejected the access token".into(),
            draft_id,
        ),
        Err(SendError::Rejected { detail, .. }) => (
            Decision::Failed(format!("The provider refused the message: {detail}")),
            Turn::Failed(id),
        ),
        Err(e @ SendError::NeedsReauthorization(_)) => (
            Decision::Wait(
                later(now, cfg.hold_recheck),
                format!("Held: your inbox connection must be authorized again to send ({e})."),
            ),
            Turn::Waiting(id),
        ),
    })
}

/// How long one provider send may take: three quarters of the lease, so a
/// cut-off request has the last quarter to land before anyone can take over.
fn send_bound(lease: Duration) -> Duration {
    lease.saturating_sub(lease / 4)
}

fn retry_or_fail(
    cfg: &OutboxConfig,
    now: Timestamp,
    id: OutboxId,
    attempt: u32,
    retry_after: Option<Duration>,
    detail: String,
    draft_id: Option<String>,
) -> (Decision, Turn) {
    if attempt >= cfg.max_attempts {
        return (
            Decision::Failed(format!(
                "Not sent after {attempt} attempts; the last error: {detail}"
            )),
            Turn::Failed(id),
        );
    }
    let wait = cfg.backoff(attempt).max(retry_after.unwrap_or_default());
    (
        Decision::Retry {
            at: later(now, wait),
            error: format!("Not sent yet ({detail}); trying again."),
            needs_lookup: false,
            draft_id,
        },
        Turn::Retry(id),
    )
}

/// A background worker: handles due messages, sleeping `poll_interval` when
/// there are none.
pub fn spawn_worker(state: AppState) -> tokio::task::JoinHandle<()> {
    let owner = format!("outbox-{:08x}", rand::random::<u32>());
    tokio::spawn(async move {
        loop {
            match run_one(&state, &owner).await {
                Ok(Some(_)) => {}
                Ok(None) => tokio::time::sleep(state.config.outbox.poll_interval).await,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox worker");
                    tokio::time::sleep(state.config.outbox.poll_interval).await;
                }
            }
        }
    })
}

/// The user's own outbox view of `org`: whose messages a user may manage.
pub fn may_manage(user: &User, item: &OutboxItem) -> bool {
    item.org_id == user.org_id && (item.user_id == user.id || user.role == Role::Admin)
}

/// Short words for a status, for pages.
pub fn status_words(item: &OutboxItem) -> &'static str {
    use hirewire_store::OutboxStatus::*;
    match item.status {
        Queued if item.send_at.is_some() && item.attempts == 0 => "Scheduled",
        Queued if item.attempts > 0 => "Retrying",
        Queued | Sending => "Sending",
        Sent => "Sent",
        Failed => "Failed",
        NeedsAttention => "Needs attention",
        Cancelled => "Cancelled",
    }
}
