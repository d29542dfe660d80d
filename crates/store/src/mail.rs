//! Email sync storage: per-grant sync progress, recruiters' synced threads and
//! messages (only mail that involves a candidate), and a candidate's timeline
//! that merges email conversations with InMail conversations.
//!
//! Rules:
//! - Mail belongs to the recruiter whose mailbox it came from (the grant's
//!   user, `owner_user_id`). Threads are keyed by (owner, thread key) and are
//!   not tied to a grant: re-authorizing (a new grant) continues the same
//!   threads. Each message remembers its grant (`grant_id`, a plain column, not
//!   a foreign key), so deauthorizing keeps the mail unless the org purges it
//!   ([`Store::purge_grant_mail`], called after `delete_grant`). Deleting the
//!   recruiter (user) deletes their threads and messages, shared ones included.
//!   Deleting a candidate removes their links; a message left without any
//!   candidate is no longer on any timeline (it stays until purged).
//! - Crash safety: [`Store::store_page`] writes a page's messages *and* the
//!   cursor after that page in one transaction, fenced by the sync state's
//!   `version`. A crash before the commit leaves neither (the page is fetched
//!   again from the old cursor); a crash after it leaves both (the next page is
//!   fetched). A worker that does not know whether its commit landed re-reads
//!   the state: the cursor and `version` say. Messages are unique per (grant,
//!   provider message id), so a page fetched again after a reset (resync)
//!   stores nothing twice. When a grant is replaced in place by another
//!   mailbox (`put_grant` keeps the id), call [`Store::reset_mail_sync`].
//! - Visibility of email: a viewer sees the threads they own and the threads
//!   shared with the org. Admins get no more than that (they do not read
//!   private mail); they may only take a shared thread back. InMail is visible
//!   org-wide, as before.
//! - A conversation on the timeline is one thread key: the visible threads of
//!   several owners with the same key (e.g. the root Message-ID) form one
//!   conversation, and a message present in several of them (same Message-ID)
//!   is shown once. Provider thread ids (Gmail `threadId`, Graph
//!   `conversationId`) are per mailbox, so copies in two mailboxes only meet in
//!   one conversation when the sync engine keys threads by something shared
//!   (the root Message-ID). All InMail between one recruiter and the candidate is one
//!   InMail conversation; inbound InMail has no recruiter in the model
//!   (`author_user_id` is NULL), so it forms its own conversation with
//!   `recruiter: None`.

use std::collections::{HashMap, HashSet};

use hirewire_domain::ids::{
    CandidateId, GrantId, InMailId, MailMessageId, MailThreadId, OrgId, UserId,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{decode_enum, string_enum};
use crate::time::{ms, opt_ts, ts};
use crate::{Direction, InMail, Store, StoreError};

string_enum! {
    /// Where a grant's mail sync stands: `backfill` (newest first over the
    /// window, resumable from `backfill_cursor`), then `incremental` (provider
    /// deltas from `incremental_cursor`); `resync` is a backfill started over
    /// after the provider rejected a cursor.
    SyncPhase { Backfill = "backfill", Incremental = "incremental", Resync = "resync" }
}

/// Largest page [`Store::candidate_timeline`] returns.
pub const MAX_TIMELINE_PAGE: u32 = 100;

/// Sync progress of one inbox grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSyncState {
    pub grant_id: GrantId,
    pub phase: SyncPhase,
    /// Oldest instant the backfill reaches back to.
    pub window_start: Timestamp,
    /// Opaque provider cursor of the next backfill page; `None` at the start.
    pub backfill_cursor: Option<String>,
    /// Opaque provider delta/history cursor (may be captured during backfill).
    pub incremental_cursor: Option<String>,
    /// Messages the provider listed (candidate mail or not, re-listings on a
    /// resync included).
    pub messages_seen: u64,
    /// Messages held now: inserted (each at most once), less those removed
    /// because they left the mailbox ([`Store::remove_synced_mail`]).
    pub messages_stored: u64,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// Increases on every page and reset; [`Store::store_page`] is fenced by it.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The sync state after a page (input of [`Store::store_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageProgress<'a> {
    pub phase: SyncPhase,
    pub backfill_cursor: Option<&'a str>,
    pub incremental_cursor: Option<&'a str>,
    /// Messages the provider listed in this page, stored or not.
    pub seen: u64,
}

/// A participant as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAddress {
    pub name: Option<String>,
    pub address: String,
}

/// An attachment as listed (its bytes are not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAttachment {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
}

/// A message of a page (input of [`Store::store_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailMessage {
    /// Gmail message id / Graph message id (unique per grant).
    pub provider_message_id: String,
    /// Provider thread id or the root Message-ID, as the sync engine chose.
    pub thread_key: String,
    /// `Message-ID` as read (normalized by the store, see [`normalize_message_id`]).
    pub message_id_header: Option<String>,
    pub direction: Direction,
    pub from: MailAddress,
    pub to: Vec<MailAddress>,
    pub cc: Vec<MailAddress>,
    pub subject: Option<String>,
    pub sent_at: Timestamp,
    pub snippet: String,
    /// Already sanitized by the caller.
    pub body_html_sanitized: Option<String>,
    pub body_text: Option<String>,
    pub attachments: Vec<MailAttachment>,
    /// The candidates (of the grant's org) the message involves; at least one.
    pub candidates: Vec<CandidateId>,
}

/// Outcome of [`Store::store_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageStored {
    /// Messages inserted by this page.
    pub stored: u64,
    /// Messages of the page that were already stored (skipped).
    pub already_stored: u64,
    /// The state after the page (its `version` fences the next page).
    pub state: MailSyncState,
}

/// One owner's email thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailThread {
    pub id: MailThreadId,
    pub org_id: OrgId,
    pub owner_user_id: UserId,
    pub thread_key: String,
    /// Subject of the latest message.
    pub subject: Option<String>,
    pub latest_at: Timestamp,
    pub shared: bool,
    pub shared_by: Option<UserId>,
    pub shared_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One mailbox's copy of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailMessage {
    pub id: MailMessageId,
    pub org_id: OrgId,
    pub thread_id: MailThreadId,
    pub owner_user_id: UserId,
    /// The grant it was synced through (may since have been deleted).
    pub grant_id: GrantId,
    pub provider_message_id: String,
    /// Normalized (see [`normalize_message_id`]).
    pub message_id_header: Option<String>,
    pub direction: Direction,
    pub from: MailAddress,
    pub to: Vec<MailAddress>,
    pub cc: Vec<MailAddress>,
    pub subject: Option<String>,
    pub sent_at: Timestamp,
    pub snippet: String,
    pub body_html_sanitized: Option<String>,
    pub body_text: Option<String>,
    pub attachments: Vec<MailAttachment>,
    pub created_at: Timestamp,
}

/// Who reads. `is_admin` never widens what is read (admins see their own and
/// shared mail only); it lets an admin take a shared thread back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailViewer {
    pub user: UserId,
    pub is_admin: bool,
}

/// Kind of a timeline item; on equal `latest_at`, email comes before InMail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimelineKind {
    InMail,
    Email,
    Booking,
}

/// Keyset position on a timeline: items are ordered by (`latest_at`, `kind`,
/// `id`) descending. `id` is the conversation's smallest visible thread id for
/// email, the recruiter's user id (0 for inbound InMail) for InMail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimelineCursor {
    pub latest_at: Timestamp,
    pub kind: TimelineKind,
    pub id: i64,
}

/// The visible threads of one thread key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConversation {
    /// The smallest visible thread id: pass it to [`Store::thread_messages`].
    pub thread_id: MailThreadId,
    pub thread_key: String,
    pub latest_at: Timestamp,
    /// The visible threads (one per owner) by id.
    pub threads: Vec<MailThread>,
}

/// All InMail between one recruiter and the candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMailConversation {
    /// `None`: inbound InMail (no recruiter recorded) and InMail of deleted authors.
    pub recruiter: Option<UserId>,
    pub latest_at: Timestamp,
    pub messages: u64,
}

/// One conversation on a candidate's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineItem {
    Email(EmailConversation),
    InMail(InMailConversation),
    /// A Scheduler booking, placed by its last change (booked, moved, cancelled).
    Booking(Box<crate::Booking>),
}

impl TimelineItem {
    pub fn latest_at(&self) -> Timestamp {
        match self {
            TimelineItem::Email(e) => e.latest_at,
            TimelineItem::InMail(i) => i.latest_at,
            TimelineItem::Booking(b) => b.updated_at,
        }
    }

    /// The position of this item (pass the last one as `before`).
    pub fn cursor(&self) -> TimelineCursor {
        match self {
            TimelineItem::Email(e) => TimelineCursor {
                latest_at: e.latest_at,
                kind: TimelineKind::Email,
                id: e.thread_id.get(),
            },
            TimelineItem::InMail(i) => TimelineCursor {
                latest_at: i.latest_at,
                kind: TimelineKind::InMail,
                id: i.recruiter.map_or(0, UserId::get),
            },
            TimelineItem::Booking(b) => TimelineCursor {
                latest_at: b.updated_at,
                kind: TimelineKind::Booking,
                id: b.id.get(),
            },
        }
    }
}

/// One page of [`Store::candidate_timeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePage {
    /// Newest first by latest message.
    pub items: Vec<TimelineItem>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<TimelineCursor>,
}

/// Outcome of [`Store::purge_grant_mail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgedMail {
    pub messages: u64,
    pub threads: u64,
}

/// The comparison form of a `Message-ID`: trimmed, without angle brackets,
/// lowercased. `None` when empty.
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s).trim();
    (!s.is_empty()).then(|| s.to_lowercase())
}

macro_rules! sync_cols {
    () => {
        "grant_id, phase, window_start, backfill_cursor, incremental_cursor, messages_seen, messages_stored, \
         last_success_at, last_error, last_error_at, version, created_at, updated_at"
    };
}

macro_rules! thread_cols {
    () => {
        "id, org_id, owner_user_id, thread_key, subject, latest_at, shared, shared_by, shared_at, created_at, updated_at"
    };
}

macro_rules! message_cols {
    () => {
        "m.id, m.org_id, m.thread_id, m.owner_user_id, m.grant_id, m.provider_message_id, m.message_id_header, \
         m.direction, m.from_name, m.from_address, m.to_json, m.cc_json, m.subject, m.sent_at, m.snippet, \
         m.body_html_sanitized, m.body_text, m.attachments_json, m.created_at"
    };
}

#[derive(sqlx::FromRow)]
struct SyncRow {
    grant_id: i64,
    phase: String,
    window_start: i64,
    backfill_cursor: Option<String>,
    incremental_cursor: Option<String>,
    messages_seen: i64,
    messages_stored: i64,
    last_success_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("count {n} is too large")))
}

impl TryFrom<SyncRow> for MailSyncState {
    type Error = StoreError;
    fn try_from(r: SyncRow) -> Result<Self, StoreError> {
        Ok(Self {
            grant_id: GrantId(r.grant_id),
            phase: decode_enum(&r.phase)?,
            window_start: ts(r.window_start)?,
            backfill_cursor: r.backfill_cursor,
            incremental_cursor: r.incremental_cursor,
            messages_seen: count(r.messages_seen)?,
            messages_stored: count(r.messages_stored)?,
            last_success_at: opt_ts(r.last_success_at)?,
            last_error: r.last_error,
            last_error_at: opt_ts(r.last_error_at)?,
            version: r.version,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ThreadRow {
    id: i64,
    org_id: i64,
    owner_user_id: i64,
    thread_key: String,
    subject: Option<String>,
    latest_at: i64,
    shared: bool,
    shared_by: Option<i64>,
    shared_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ThreadRow> for MailThread {
    type Error = StoreError;
    fn try_from(r: ThreadRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: MailThreadId(r.id),
            org_id: OrgId(r.org_id),
            owner_user_id: UserId(r.owner_user_id),
            thread_key: r.thread_key,
            subject: r.subject,
            latest_at: ts(r.latest_at)?,
            shared: r.shared,
            shared_by: r.shared_by.map(UserId),
            shared_at: opt_ts(r.shared_at)?,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    org_id: i64,
    thread_id: i64,
    owner_user_id: i64,
    grant_id: i64,
    provider_message_id: String,
    message_id_header: Option<String>,
    direction: String,
    from_name: Option<String>,
    from_address: String,
    to_json: String,
    cc_json: String,
    subject: Option<String>,
    sent_at: i64,
    snippet: String,
    body_html_sanitized: Option<String>,
    body_text: Option<String>,
    attachments_json: String,
    created_at: i64,
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("stored {what}: {e}")))
}

fn encode_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

impl TryFrom<MessageRow> for MailMessage {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: MailMessageId(r.id),
            org_id: OrgId(r.org_id),
            thread_id: MailThreadId(r.thread_id),
            owner_user_id: UserId(r.owner_user_id),
            grant_id: GrantId(r.grant_id),
            provider_message_id: r.provider_message_id,
            message_id_header: r.message_id_header,
            direction: decode_enum(&r.direction)?,
            from: MailAddress {
                name: r.from_name,
                address: r.from_address,
            },
            to: decode_json("to", &r.to_json)?,
            cc: decode_json("cc", &r.cc_json)?,
            subject: r.subject,
            sent_at: ts(r.sent_at)?,
            snippet: r.snippet,
            body_html_sanitized: r.body_html_sanitized,
            body_text: r.body_text,
            attachments: decode_json("attachments", &r.attachments_json)?,
            created_at: ts(r.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EmailGroupRow {
    id: i64,
    thread_key: String,
    latest_at: i64,
}

#[derive(sqlx::FromRow)]
struct InMailGroupRow {
    conv: i64,
    latest_at: i64,
    messages: i64,
}

#[derive(sqlx::FromRow)]
struct InMailRow {
    id: i64,
    org_id: i64,
    candidate_id: i64,
    author_user_id: Option<i64>,
    direction: String,
    body: String,
    sent_at: i64,
    created_at: i64,
}

/// A page message with its JSON columns encoded, validated before the
/// transaction starts.
struct Prepared<'a> {
    m: &'a NewMailMessage,
    message_id: Option<String>,
    to_json: String,
    cc_json: String,
    attachments_json: String,
    candidates: Vec<i64>,
}

fn prepare(m: &NewMailMessage) -> Result<Prepared<'_>, StoreError> {
    if m.provider_message_id.trim().is_empty() {
        return Err(StoreError::Invalid(
            "a message needs its provider id".into(),
        ));
    }
    if m.thread_key.trim().is_empty() {
        return Err(StoreError::Invalid("a message needs a thread key".into()));
    }
    if m.candidates.is_empty() {
        return Err(StoreError::Invalid(
            "mail that involves no candidate is not stored".into(),
        ));
    }
    let mut seen = HashSet::new();
    let candidates = m
        .candidates
        .iter()
        .map(|c| c.get())
        .filter(|c| seen.insert(*c))
        .collect();
    Ok(Prepared {
        m,
        message_id: m
            .message_id_header
            .as_deref()
            .and_then(normalize_message_id),
        to_json: encode_json(&m.to)?,
        cc_json: encode_json(&m.cc)?,
        attachments_json: encode_json(&m.attachments)?,
        candidates,
    })
}

/// `(latest_at bound, id bound)` selecting the items of `kind` strictly after
/// `before` in (latest_at, kind, id) descending order.
fn keyset(before: Option<TimelineCursor>, kind: TimelineKind) -> (Option<i64>, i64) {
    match before {
        None => (None, 0),
        Some(c) => {
            let id = match c.kind.cmp(&kind) {
                std::cmp::Ordering::Equal => c.id,
                // The cursor's kind sorts first on ties: all of ours follow it.
                std::cmp::Ordering::Greater => i64::MAX,
                std::cmp::Ordering::Less => i64::MIN,
            };
            (Some(ms(c.latest_at)), id)
        }
    }
}

impl Store {
    // ---- sync state ---------------------------------------------------------------

    pub async fn mail_sync_state(
        &self,
        grant: GrantId,
    ) -> Result<Option<MailSyncState>, StoreError> {
        let sql = concat!(
            "SELECT ",
            sync_cols!(),
            " FROM mail_sync_state WHERE grant_id = $1"
        );
        let row: Option<SyncRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(grant.get())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The sync state of an inbox grant, created in phase `backfill` with
    /// `window_start` if there is none yet (an existing one is returned as is).
    /// No such inbox grant → `NotFound`.
    pub async fn start_mail_sync(
        &self,
        grant: GrantId,
        window_start: Timestamp,
        now: Timestamp,
    ) -> Result<MailSyncState, StoreError> {
        let select = concat!(
            "SELECT ",
            sync_cols!(),
            " FROM mail_sync_state WHERE grant_id = $1"
        );
        let row: Option<SyncRow> = write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO mail_sync_state (grant_id, phase, window_start, created_at, updated_at) \
                 SELECT id, $2, $3, $4, $4 FROM grants WHERE id = $1 AND capability = $5 \
                 ON CONFLICT (grant_id) DO NOTHING",
            )
            .bind(grant.get())
            .bind(SyncPhase::Backfill.as_str())
            .bind(ms(window_start))
            .bind(ms(now))
            .bind(crate::CapabilityKind::Inbox.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query_as(select)
                .bind(grant.get())
                .fetch_optional(&mut *tx)
                .await?
        });
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Starts the sync over (creating the state if needed): `phase` (usually
    /// `resync` after a rejected cursor), `window_start`, both cursors cleared,
    /// counters kept. Bumps `version`, so a worker still holding the old
    /// version gets `StaleLease` on its next page. No such inbox grant → `NotFound`.
    pub async fn reset_mail_sync(
        &self,
        grant: GrantId,
        phase: SyncPhase,
        window_start: Timestamp,
        now: Timestamp,
    ) -> Result<MailSyncState, StoreError> {
        let sql = concat!(
            "INSERT INTO mail_sync_state (grant_id, phase, window_start, created_at, updated_at) \
             SELECT id, $2, $3, $4, $4 FROM grants WHERE id = $1 AND capability = $5 \
             ON CONFLICT (grant_id) DO UPDATE SET phase = excluded.phase, window_start = excluded.window_start, \
             backfill_cursor = NULL, incremental_cursor = NULL, version = mail_sync_state.version + 1, \
             updated_at = excluded.updated_at RETURNING ",
            sync_cols!()
        );
        let row: Option<SyncRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(grant.get())
                .bind(phase.as_str())
                .bind(ms(window_start))
                .bind(ms(now))
                .bind(crate::CapabilityKind::Inbox.as_str())
                .fetch_optional(&mut *tx)
                .await?
        });
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Records why the last sync attempt failed (does not change `version`).
    pub async fn record_mail_sync_error(
        &self,
        grant: GrantId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let n = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE mail_sync_state SET last_error = $2, last_error_at = $3, updated_at = $3 WHERE grant_id = $1",
            )
            .bind(grant.get())
            .bind(error)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        crate::error::touched(n, StoreError::NotFound)
    }

    /// Stores one page of a grant's candidate mail and the progress after it,
    /// in one transaction: either all of it is written or nothing.
    ///
    /// `expected_version` is the `version` of the state the page was fetched
    /// with; if it changed (another worker stored a page, a reset, the page
    /// was already stored) → `StaleLease` and nothing is written: re-read the
    /// state. No sync state (never started, or the grant was deleted) →
    /// `NotFound`. A message already stored for this grant (same provider id)
    /// is not stored again; only the candidates it names that are not yet
    /// linked to it are. Every message must name at least one candidate of the
    /// grant's org; any failure (e.g. a foreign candidate) rolls the whole page
    /// back, cursor included. An empty page just saves the progress.
    pub async fn store_page(
        &self,
        grant: GrantId,
        expected_version: i64,
        page: &[NewMailMessage],
        progress: &PageProgress<'_>,
        now: Timestamp,
    ) -> Result<PageStored, StoreError> {
        self.store_mail(grant, Some((expected_version, progress)), page, now)
            .await
    }

    /// Stores candidate mail found outside the page sequence (a search for a
    /// candidate's new address), with the same rules as
    /// [`Store::store_page`], but leaving the sync's cursors, phase and
    /// `version` alone: it never supersedes a page in flight, and no page
    /// supersedes it. Serialized with the grant's pages and its deletion
    /// through the sync state row. No sync state → `NotFound`.
    pub async fn store_found_mail(
        &self,
        grant: GrantId,
        page: &[NewMailMessage],
        now: Timestamp,
    ) -> Result<PageStored, StoreError> {
        self.store_mail(grant, None, page, now).await
    }

    async fn store_mail(
        &self,
        grant: GrantId,
        fence: Option<(i64, &PageProgress<'_>)>,
        page: &[NewMailMessage],
        now: Timestamp,
    ) -> Result<PageStored, StoreError> {
        let prepared = page.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        let finish = concat!(
            "UPDATE mail_sync_state SET messages_stored = messages_stored + $2 WHERE grant_id = $1 RETURNING ",
            sync_cols!()
        );
        let (row, stored, already): (SyncRow, u64, u64) = write_tx!(self, |tx| {
            // First statement: claims the state row (a row lock on PostgreSQL,
            // the write lock on SQLite), so pages of one grant and the grant's
            // deletion are serialized.
            let claimed = match fence {
                Some((expected_version, progress)) => sqlx::query(
                    "UPDATE mail_sync_state SET phase = $3, backfill_cursor = $4, incremental_cursor = $5, \
                     messages_seen = messages_seen + $6, last_success_at = $7, updated_at = $7, version = version + 1 \
                     WHERE grant_id = $1 AND version = $2",
                )
                .bind(grant.get())
                .bind(expected_version)
                .bind(progress.phase.as_str())
                .bind(progress.backfill_cursor)
                .bind(progress.incremental_cursor)
                .bind(to_i64(progress.seen)?)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "UPDATE mail_sync_state SET updated_at = $2 WHERE grant_id = $1",
                )
                .bind(grant.get())
                .bind(ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if claimed == 0 {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM mail_sync_state WHERE grant_id = $1")
                        .bind(grant.get())
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match exists {
                    Some(_) => StoreError::StaleLease,
                    None => StoreError::NotFound,
                });
            }
            let (org, owner): (i64, i64) =
                sqlx::query_as("SELECT org_id, user_id FROM grants WHERE id = $1")
                    .bind(grant.get())
                    .fetch_one(&mut *tx)
                    .await?;
            let mut stored = 0u64;
            let mut already = 0u64;
            for p in &prepared {
                let m = p.m;
                let exists: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT id, thread_id FROM mail_messages WHERE grant_id = $1 AND provider_message_id = $2",
                )
                .bind(grant.get())
                .bind(&m.provider_message_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((id, thread_id)) = exists {
                    // Already stored; link the candidates it names now (one who
                    // gained an address since), so it shows on their timeline too.
                    for &candidate in &p.candidates {
                        sqlx::query(
                            "INSERT INTO mail_message_candidates (message_id, candidate_id, org_id, thread_id) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (message_id, candidate_id) DO NOTHING",
                        )
                        .bind(id)
                        .bind(candidate)
                        .bind(org)
                        .bind(thread_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    already += 1;
                    continue;
                }
                let thread_id: i64 = sqlx::query_scalar(
                    "INSERT INTO mail_threads (org_id, owner_user_id, thread_key, subject, latest_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (owner_user_id, thread_key) DO UPDATE SET \
                     subject = CASE WHEN excluded.latest_at >= mail_threads.latest_at THEN excluded.subject ELSE mail_threads.subject END, \
                     latest_at = CASE WHEN excluded.latest_at > mail_threads.latest_at THEN excluded.latest_at ELSE mail_threads.latest_at END, \
                     updated_at = excluded.updated_at \
                     RETURNING id",
                )
                .bind(org)
                .bind(owner)
                .bind(&m.thread_key)
                .bind(&m.subject)
                .bind(ms(m.sent_at))
                .bind(ms(now))
                .fetch_one(&mut *tx)
                .await?;
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO mail_messages (org_id, thread_id, owner_user_id, grant_id, provider_message_id, \
                     message_id_header, direction, from_name, from_address, to_json, cc_json, subject, sent_at, \
                     snippet, body_html_sanitized, body_text, attachments_json, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                     ON CONFLICT (grant_id, provider_message_id) DO NOTHING RETURNING id",
                )
                .bind(org)
                .bind(thread_id)
                .bind(owner)
                .bind(grant.get())
                .bind(&m.provider_message_id)
                .bind(&p.message_id)
                .bind(m.direction.as_str())
                .bind(&m.from.name)
                .bind(&m.from.address)
                .bind(&p.to_json)
                .bind(&p.cc_json)
                .bind(&m.subject)
                .bind(ms(m.sent_at))
                .bind(&m.snippet)
                .bind(&m.body_html_sanitized)
                .bind(&m.body_text)
                .bind(&p.attachments_json)
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    already += 1;
                    continue;
                };
                for &candidate in &p.candidates {
                    sqlx::query(
                        "INSERT INTO mail_message_candidates (message_id, candidate_id, org_id, thread_id) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(candidate)
                    .bind(org)
                    .bind(thread_id)
                    .execute(&mut *tx)
                    .await?;
                }
                stored += 1;
            }
            let row: SyncRow = sqlx::query_as(finish)
                .bind(grant.get())
                .bind(to_i64(stored)?)
                .fetch_one(&mut *tx)
                .await?;
            (row, stored, already)
        });
        Ok(PageStored {
            stored,
            already_stored: already,
            state: row.try_into()?,
        })
    }

    /// Saves the progress of a page that holds no candidate mail (cursor and
    /// `seen` only); the same as [`Store::store_page`] with an empty page.
    /// The stored counter is never the caller's: it counts what was inserted.
    pub async fn save_page_progress(
        &self,
        grant: GrantId,
        expected_version: i64,
        progress: &PageProgress<'_>,
        now: Timestamp,
    ) -> Result<MailSyncState, StoreError> {
        Ok(self
            .store_page(grant, expected_version, &[], progress, now)
            .await?
            .state)
    }

    // ---- threads and timeline -----------------------------------------------------

    /// A thread of `org` the viewer may see (own or shared), else `NotFound`.
    pub async fn mail_thread(
        &self,
        org: OrgId,
        thread: MailThreadId,
        viewer: MailViewer,
    ) -> Result<MailThread, StoreError> {
        let sql = concat!(
            "SELECT ",
            thread_cols!(),
            " FROM mail_threads WHERE org_id = $1 AND id = $2 AND (owner_user_id = $3 OR shared)"
        );
        let row: Option<ThreadRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(org.get())
            .bind(thread.get())
            .bind(viewer.user.get())
            .fetch_optional(pool)
            .await)?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// A candidate's conversations, newest first by latest message: the email
    /// conversations visible to `viewer` (one per thread key) and the InMail
    /// conversations (one per recruiter), merged. `limit` is clamped to
    /// 1..=[`MAX_TIMELINE_PAGE`]. Another org's candidate yields an empty page.
    pub async fn candidate_timeline(
        &self,
        org: OrgId,
        candidate: CandidateId,
        viewer: MailViewer,
        before: Option<TimelineCursor>,
        limit: u32,
    ) -> Result<TimelinePage, StoreError> {
        let limit = usize::try_from(limit.clamp(1, MAX_TIMELINE_PAGE)).unwrap_or(1);
        let fetch = i64::try_from(limit).unwrap_or(1) + 1;
        let (email_at, email_id) = keyset(before, TimelineKind::Email);
        let (inmail_at, inmail_id) = keyset(before, TimelineKind::InMail);
        let groups: Vec<EmailGroupRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT g.id, g.thread_key, g.latest_at FROM ( \
                   SELECT MIN(t.id) AS id, t.thread_key AS thread_key, MAX(t.latest_at) AS latest_at \
                   FROM (SELECT DISTINCT c.thread_id FROM mail_message_candidates c \
                         WHERE c.org_id = $1 AND c.candidate_id = $2) ct \
                   JOIN mail_threads t ON t.id = ct.thread_id \
                   WHERE t.org_id = $1 AND (t.owner_user_id = $3 OR t.shared) \
                   GROUP BY t.thread_key) g \
                 WHERE ($4 IS NULL OR g.latest_at < $4 OR (g.latest_at = $4 AND g.id < $5)) \
                 ORDER BY g.latest_at DESC, g.id DESC LIMIT $6",
            )
            .bind(org.get())
            .bind(candidate.get())
            .bind(viewer.user.get())
            .bind(email_at)
            .bind(email_id)
            .bind(fetch)
            .fetch_all(pool)
            .await
        })?;
        let inmail: Vec<InMailGroupRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT g.conv, g.latest_at, g.messages FROM ( \
                   SELECT COALESCE(author_user_id, 0) AS conv, MAX(sent_at) AS latest_at, COUNT(*) AS messages \
                   FROM inmail_messages WHERE org_id = $1 AND candidate_id = $2 \
                   GROUP BY COALESCE(author_user_id, 0)) g \
                 WHERE ($3 IS NULL OR g.latest_at < $3 OR (g.latest_at = $3 AND g.conv < $4)) \
                 ORDER BY g.latest_at DESC, g.conv DESC LIMIT $5",
            )
            .bind(org.get())
            .bind(candidate.get())
            .bind(inmail_at)
            .bind(inmail_id)
            .bind(fetch)
            .fetch_all(pool)
            .await
        })?;

        let (booking_at, booking_id) = keyset(before, TimelineKind::Booking);
        let bookings = self
            .candidate_bookings_before(org, candidate, booking_at, booking_id, fetch)
            .await?;
        let mut items = Vec::with_capacity(groups.len() + inmail.len() + bookings.len());
        items.extend(
            bookings
                .into_iter()
                .map(|b| TimelineItem::Booking(Box::new(b))),
        );
        for r in inmail {
            items.push(TimelineItem::InMail(InMailConversation {
                recruiter: (r.conv != 0).then_some(UserId(r.conv)),
                latest_at: ts(r.latest_at)?,
                messages: count(r.messages)?,
            }));
        }
        // Driven by the candidate's links (not by the org's threads); only the
        // groups that make it onto this page get their threads read.
        let mut merged: Vec<(TimelineCursor, Option<EmailGroupRow>)> =
            items.iter().map(|i| (i.cursor(), None)).collect();
        for g in groups {
            let c = TimelineCursor {
                latest_at: ts(g.latest_at)?,
                kind: TimelineKind::Email,
                id: g.id,
            };
            merged.push((c, Some(g)));
        }
        merged.sort_by(|(a, _), (b, _)| {
            (b.latest_at, b.kind, b.id).cmp(&(a.latest_at, a.kind, a.id))
        });
        let more = merged.len() > limit;
        merged.truncate(limit);
        let mut inmail_by_cursor: HashMap<TimelineCursor, TimelineItem> =
            items.into_iter().map(|i| (i.cursor(), i)).collect();
        let threads_sql = concat!(
            "SELECT ",
            thread_cols!(),
            " FROM mail_threads t WHERE t.org_id = $1 AND t.thread_key = $2 AND (t.owner_user_id = $3 OR t.shared) \
             AND EXISTS (SELECT 1 FROM mail_message_candidates c \
                         WHERE c.org_id = $1 AND c.candidate_id = $4 AND c.thread_id = t.id) \
             ORDER BY t.id"
        );
        let mut out = Vec::with_capacity(merged.len());
        for (cursor, group) in merged {
            match group {
                None => {
                    if let Some(item) = inmail_by_cursor.remove(&cursor) {
                        out.push(item);
                    }
                }
                Some(g) => {
                    let rows: Vec<ThreadRow> = on_pool!(self, |pool| sqlx::query_as(threads_sql)
                        .bind(org.get())
                        .bind(&g.thread_key)
                        .bind(viewer.user.get())
                        .bind(candidate.get())
                        .fetch_all(pool)
                        .await)?;
                    let threads =
                        rows.into_iter()
                            .map(TryInto::try_into)
                            .collect::<Result<Vec<MailThread>, _>>()?;
                    out.push(TimelineItem::Email(EmailConversation {
                        thread_id: MailThreadId(g.id),
                        thread_key: g.thread_key,
                        latest_at: ts(g.latest_at)?,
                        threads,
                    }));
                }
            }
        }
        let next = if more {
            out.last().map(TimelineItem::cursor)
        } else {
            None
        };
        Ok(TimelinePage { items: out, next })
    }

    /// The messages of the conversation of `thread` (every thread of its key
    /// the viewer may see), oldest first; a message present in several of
    /// them (same Message-ID) is listed once, the viewer's own copy preferred.
    /// A thread the viewer may not see → `NotFound`.
    pub async fn thread_messages(
        &self,
        org: OrgId,
        thread: MailThreadId,
        viewer: MailViewer,
    ) -> Result<Vec<MailMessage>, StoreError> {
        let t = self.mail_thread(org, thread, viewer).await?;
        let sql = concat!(
            "SELECT ",
            message_cols!(),
            " FROM mail_messages m JOIN mail_threads t ON t.id = m.thread_id \
             WHERE t.org_id = $1 AND t.thread_key = $2 AND (t.owner_user_id = $3 OR t.shared) \
             ORDER BY m.sent_at, m.id"
        );
        let rows: Vec<MessageRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(org.get())
            .bind(&t.thread_key)
            .bind(viewer.user.get())
            .fetch_all(pool)
            .await)?;
        let all = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<Vec<MailMessage>, _>>()?;
        // Per Message-ID, the copy to show: the viewer's own, else the first.
        let mut chosen: HashMap<&str, usize> = HashMap::new();
        for (i, m) in all.iter().enumerate() {
            if let Some(h) = m.message_id_header.as_deref() {
                let own = m.owner_user_id == viewer.user;
                chosen
                    .entry(h)
                    .and_modify(|c| {
                        if own && all[*c].owner_user_id != viewer.user {
                            *c = i;
                        }
                    })
                    .or_insert(i);
            }
        }
        let keep: Vec<bool> = all
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.message_id_header
                    .as_deref()
                    .is_none_or(|h| chosen.get(h) == Some(&i))
            })
            .collect();
        Ok(all
            .into_iter()
            .zip(keep)
            .filter_map(|(m, k)| k.then_some(m))
            .collect())
    }

    /// Shows the thread to the whole org. Only its owner may share it (an
    /// admin cannot: that would expose private mail) → else `NotFound`.
    pub async fn share_thread(
        &self,
        org: OrgId,
        thread: MailThreadId,
        by: MailViewer,
        now: Timestamp,
    ) -> Result<MailThread, StoreError> {
        let sql = concat!(
            "UPDATE mail_threads SET shared = $4, shared_by = $3, shared_at = $5, updated_at = $5 \
             WHERE org_id = $1 AND id = $2 AND owner_user_id = $3 RETURNING ",
            thread_cols!()
        );
        let row: Option<ThreadRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(org.get())
                .bind(thread.get())
                .bind(by.user.get())
                .bind(true)
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await?
        });
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Takes a shared thread back (private to its owner again). Allowed to
    /// the owner, and to an admin for a thread that is shared → else `NotFound`.
    pub async fn unshare_thread(
        &self,
        org: OrgId,
        thread: MailThreadId,
        by: MailViewer,
        now: Timestamp,
    ) -> Result<MailThread, StoreError> {
        let sql = concat!(
            "UPDATE mail_threads SET shared = $3, shared_by = NULL, shared_at = NULL, updated_at = $4 \
             WHERE org_id = $1 AND id = $2 AND (owner_user_id = $5 OR ($6 AND shared)) RETURNING ",
            thread_cols!()
        );
        let row: Option<ThreadRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(org.get())
                .bind(thread.get())
                .bind(false)
                .bind(ms(now))
                .bind(by.user.get())
                .bind(by.is_admin)
                .fetch_optional(&mut *tx)
                .await?
        });
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Deletes the mail synced through `grant` (of `org`), then the threads
    /// left without messages, and recomputes the remaining threads' latest
    /// instant. Call it after `delete_grant` (which stops the sync: a page in
    /// flight either committed before the deletion, and is purged, or fails).
    pub async fn purge_grant_mail(
        &self,
        org: OrgId,
        grant: GrantId,
    ) -> Result<PurgedMail, StoreError> {
        let out = write_tx!(self, |tx| {
            let owners: Vec<i64> = sqlx::query_scalar(
                "SELECT DISTINCT owner_user_id FROM mail_messages WHERE org_id = $1 AND grant_id = $2",
            )
            .bind(org.get())
            .bind(grant.get())
            .fetch_all(&mut *tx)
            .await?;
            let mut threads = 0;
            for &owner in &owners {
                // Waits for (and then holds off) pages of the owner's grants in
                // flight, so that a thread receiving a message from another
                // grant is never taken for empty (each later statement reads
                // what they committed).
                sqlx::query(
                    "UPDATE mail_sync_state SET updated_at = updated_at \
                     WHERE grant_id IN (SELECT id FROM grants WHERE org_id = $1 AND user_id = $2)",
                )
                .bind(org.get())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            let messages =
                sqlx::query("DELETE FROM mail_messages WHERE org_id = $1 AND grant_id = $2")
                    .bind(org.get())
                    .bind(grant.get())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            for owner in owners {
                threads += sqlx::query(
                    "DELETE FROM mail_threads WHERE org_id = $1 AND owner_user_id = $2 \
                     AND NOT EXISTS (SELECT 1 FROM mail_messages m WHERE m.thread_id = mail_threads.id)",
                )
                .bind(org.get())
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE mail_threads SET latest_at = \
                     (SELECT MAX(m.sent_at) FROM mail_messages m WHERE m.thread_id = mail_threads.id) \
                     WHERE org_id = $1 AND owner_user_id = $2",
                )
                .bind(org.get())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            PurgedMail { messages, threads }
        });
        Ok(out)
    }

    /// Whether `grant` has stored the message with this provider id.
    pub async fn has_synced_message(
        &self,
        grant: GrantId,
        provider_message_id: &str,
    ) -> Result<bool, StoreError> {
        let id: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM mail_messages WHERE grant_id = $1 AND provider_message_id = $2"
        )
        .bind(grant.get())
        .bind(provider_message_id)
        .fetch_optional(pool)
        .await)?;
        Ok(id.is_some())
    }

    /// Deletes the messages of `grant` with these provider ids (gone from the
    /// mailbox), their candidate links, and threads left empty; a thread that
    /// keeps messages gets its latest time again. Serialized with the grant's
    /// pages through the sync state row; `messages_stored` goes down by what
    /// was deleted. Unknown ids are ignored. No sync state → `NotFound`.
    /// Returns how many messages were deleted.
    pub async fn remove_synced_mail(
        &self,
        grant: GrantId,
        provider_message_ids: &[String],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let n = write_tx!(self, |tx| {
            let claimed =
                sqlx::query("UPDATE mail_sync_state SET updated_at = $2 WHERE grant_id = $1")
                    .bind(grant.get())
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if claimed == 0 {
                return Err(StoreError::NotFound);
            }
            let mut threads: Vec<i64> = Vec::new();
            for id in provider_message_ids {
                let thread: Option<i64> = sqlx::query_scalar(
                    "DELETE FROM mail_messages WHERE grant_id = $1 AND provider_message_id = $2 RETURNING thread_id",
                )
                .bind(grant.get())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                threads.extend(thread);
            }
            let deleted = threads.len() as u64;
            threads.sort_unstable();
            threads.dedup();
            for t in threads {
                let gone = sqlx::query(
                    "DELETE FROM mail_threads WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM mail_messages m WHERE m.thread_id = mail_threads.id)",
                )
                .bind(t)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if gone == 0 {
                    sqlx::query(
                        "UPDATE mail_threads SET latest_at = \
                         (SELECT MAX(m.sent_at) FROM mail_messages m WHERE m.thread_id = mail_threads.id), \
                         updated_at = $2 WHERE id = $1",
                    )
                    .bind(t)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query(
                "UPDATE mail_sync_state SET messages_stored = messages_stored - $2 WHERE grant_id = $1",
            )
            .bind(grant.get())
            .bind(to_i64(deleted)?)
            .execute(&mut *tx)
            .await?;
            deleted
        });
        Ok(n)
    }

    /// The Message-ID header of every message stored from `grant`, one entry
    /// per stored row (duplicates would show twice; `None`: no Message-ID),
    /// sorted. For audits and tests of "exactly the candidate mail".
    pub async fn grant_message_ids(
        &self,
        grant: GrantId,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let ids: Vec<Option<String>> = on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT message_id_header FROM mail_messages WHERE grant_id = $1 ORDER BY message_id_header, id"
        )
        .bind(grant.get())
        .fetch_all(pool)
        .await
        })?;
        Ok(ids)
    }

    /// The InMail between `recruiter` (`None`: inbound and authorless InMail)
    /// and the candidate, oldest first.
    pub async fn inmail_conversation(
        &self,
        org: OrgId,
        candidate: CandidateId,
        recruiter: Option<UserId>,
    ) -> Result<Vec<InMail>, StoreError> {
        let rows: Vec<InMailRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, org_id, candidate_id, author_user_id, direction, body, sent_at, created_at \
                 FROM inmail_messages WHERE org_id = $1 AND candidate_id = $2 AND COALESCE(author_user_id, 0) = $3 \
                 ORDER BY sent_at, id",
            )
            .bind(org.get())
            .bind(candidate.get())
            .bind(recruiter.map_or(0, UserId::get))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(InMail {
                    id: InMailId(r.id),
                    org_id: OrgId(r.org_id),
                    candidate_id: CandidateId(r.candidate_id),
                    author_user_id: r.author_user_id.map(UserId),
                    direction: decode_enum(&r.direction)?,
                    body: r.body,
                    sent_at: ts(r.sent_at)?,
                    created_at: ts(r.created_at)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_compared_without_brackets_space_or_case() {
        assert_eq!(
            normalize_message_id(" <ABC@Example.COM> ").as_deref(),
            Some("abc@example.com")
        );
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(normalize_message_id("  "), None);
    }

    #[test]
    fn the_keyset_bound_follows_kind_order_on_equal_instants() {
        let at = Timestamp::from_second(10).unwrap();
        let c = |kind| TimelineCursor {
            latest_at: at,
            kind,
            id: 7,
        };
        assert_eq!(keyset(None, TimelineKind::Email), (None, 0));
        assert_eq!(
            keyset(Some(c(TimelineKind::Email)), TimelineKind::Email),
            (Some(10_000), 7)
        );
        assert_eq!(
            keyset(Some(c(TimelineKind::Email)), TimelineKind::InMail),
            (Some(10_000), i64::MAX)
        );
        assert_eq!(
            keyset(Some(c(TimelineKind::InMail)), TimelineKind::Email),
            (Some(10_000), i64::MIN)
        );
    }
}
