//! Reading recruiters' mailboxes: [`MailReader`], one type for both providers.
//!
//! The sync engine needs four things, and each provider has one faithful way to do each:
//!
//! | need | Microsoft Graph | Gmail |
//! |---|---|---|
//! | backfill a window, newest first ([`MailReader::list_page`]) | `GET /me/messages` with `$filter=receivedDateTime ge …`, `$orderby=receivedDateTime desc`, `$top`, following `@odata.nextLink`, with the addressing properties selected (`from`, `sender`, `replyTo`, `toRecipients`, `ccRecipients`, `bccRecipients`: [`MessageRef::headers`]). **Not** a filtered delta: that is capped at 5,000 messages (PROVIDERS.md §14) | `messages.list` with `q=after:<epoch s>`, `maxResults`, `pageToken` (ids only) |
//! | who a message involves, without its body ([`MailReader::fetch_headers_many`]) | the listing has it; else `GET` of the message with the addressing properties selected | `messages.get?format=metadata&metadataHeaders=From&…` through the batch endpoint |
//! | the message bytes ([`MailReader::fetch_raw`], [`MailReader::fetch_raw_many`]) | rebuilt from the message JSON (see below), one message at a time (or `$batch`) | `messages.get?format=raw` (base64url of the exact bytes), many at once through the batch endpoint |
//! | a starting point for incremental sync ([`MailReader::start_incremental`]) | an **unfiltered** delta round per folder (Inbox, Sent Items), following `nextLink` to the `deltaLink` | `users.getProfile` `historyId` |
//! | what changed since ([`MailReader::changes`]) | each folder's `deltaLink`; `@removed` items are removals | `history.list` with `messageAdded` / `messageDeleted` |
//!
//! The `_many` fetches keep up to [`MailReader::with_concurrency`] requests in flight (the pacer, when there is one,
//! still gates each). Every call goes through [`HttpClient`] (timeouts, retries, `Retry-After`) with the grant's bearer token,
//! and fails with a [`ProviderError`] that says what to do: `Throttled { retry_after }` (reschedule),
//! `TokenRejected` (refresh, retry), `NeedsReauthorization(MissingPermissions)` (403 for a missing scope),
//! and [`ProviderError::CursorExpired`] when a delta token (Graph 410) or history id (Gmail 404) is too old:
//! run a full resync of the window with [`MailReader::list_page`], then [`MailReader::start_incremental`].
//! [`ProviderError::MessageGone`] means a message was deleted between listing and fetching: skip it.
//!
//! Graph requests carry `Prefer: IdType="ImmutableId"`, so message ids do not change when a message moves
//! (e.g. Inbox → Archive), and the ids from listing, fetching and delta agree.
//!
//! **Graph raw bytes.** Real Graph serves a message's MIME at `GET /me/messages/{id}/$value`; the sandbox does
//! not (docs/sandbox.md, "Not yet there"), so this adapter does not depend on it. It rebuilds an RFC 5322
//! message from what Graph returns as JSON: the original transport headers (`internetMessageHeaders`, minus
//! the MIME structure headers), the body as Graph renders it (HTML, UTF-8, base64), and each file attachment
//! (`/attachments`, `contentBytes`) as a part of a `multipart/mixed`. Addresses, ids, subject, date and
//! threading headers are the original ones, which is what `hirewire_mail::parse_envelope` reads; the body
//! part structure and charsets are Graph's rendering, not the sender's. When `internetMessageHeaders` is
//! missing, the headers are built from the structured fields (`from`, `toRecipients`, …). Switching to
//! `$value` later changes only [`MailReader::fetch_raw`].
//!
//! Wire structs are private to this module; everything returned is a plain Rust type.

use std::collections::{BTreeSet, HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::endpoints::Endpoints;
use crate::error::ProviderError;
use crate::http::{
    HttpClient, Request, Response, api_error, get_request, json_or_api_error, json_request,
    parse_json, retry_after,
};
use crate::pacing::{GmailMethod, Op, PaceKey, Pacer, send_paced};
use crate::{Provider, Secret};

/// Graph folders watched by incremental sync: mail from and to the recruiter.
const GRAPH_WATCHED_FOLDERS: [&str; 2] = ["inbox", "sentitems"];
/// Gmail labels whose messages are not conversation with anyone (skipped by [`MailReader::changes`]).
const GMAIL_SKIPPED_LABELS: [&str; 3] = ["DRAFT", "SPAM", "TRASH"];
/// Page size of Graph delta rounds.
const GRAPH_DELTA_PAGE: u32 = 500;
/// Messages per Gmail batch request: Google allows 100 but advises at most 50 (more trigger rate limits).
pub const GMAIL_BATCH: usize = 50;
/// Requests per Graph `$batch` (Graph's maximum, PROVIDERS.md §2.5).
pub const GRAPH_BATCH: usize = 20;
/// The message properties the Graph rebuild of RFC 5322 needs.
const GRAPH_MESSAGE_SELECT: &str = "id,conversationId,receivedDateTime,sentDateTime,internetMessageId,subject,from,sender,\
                     toRecipients,ccRecipients,bccRecipients,replyTo,hasAttachments,body,internetMessageHeaders";
/// The Graph message properties that say who a message involves: selected in the window listing, so a message
/// is fetched only when it involves a candidate.
const GRAPH_ADDRESSING: [&str; 6] = [
    "from",
    "sender",
    "replyTo",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
];
/// The headers asked of Gmail `messages.get?format=metadata` by [`MailReader::fetch_headers_many`].
const GMAIL_ADDRESSING: [&str; 6] = ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"];
/// Requests a reader keeps in flight at once by default (Outlook's per-mailbox limit; the pacer, when there is
/// one, still enforces its own limit).
pub const DEFAULT_FETCH_CONCURRENCY: usize = 4;
/// Page size of searches.
const SEARCH_PAGE: u32 = 500;
const PREFER_IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

/// The results of fetching a chunk of messages: one per id, or the whole request's failure.
type ChunkResult<T> = Result<Vec<Result<T, ProviderError>>, ProviderError>;

/// A message as listed: enough to decide whether to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef {
    /// The provider's message id (Gmail id; Graph immutable id). Pass it to [`MailReader::fetch_raw`].
    pub id: String,
    /// Gmail `threadId` or Graph `conversationId`, when the listing carries it (Graph `@removed` items and
    /// some delta updates do not).
    pub thread_id: Option<String>,
    /// When the provider received it. Gmail listings and history do not carry it (only `id`, `threadId`):
    /// `None` there; [`RawMessage::received_at`] has it.
    pub received_at: Option<Timestamp>,
    /// The message's addressing headers (From, Sender, Reply-To, To, Cc, Bcc) as an RFC 5322 header block,
    /// enough to tell whether it involves a candidate without fetching it: filled by the Graph window listing
    /// ([`MailReader::list_page`] selects the recipients) and by [`MailReader::fetch_headers_many`]; `None`
    /// elsewhere (Gmail listings, delta and history entries).
    pub headers: Option<Vec<u8>>,
}

/// One page of a window listing, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The messages of this page.
    pub items: Vec<MessageRef>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
    /// The provider's estimate of how many messages the whole listing holds, when it gives one (first page:
    /// Graph `@odata.count`, Gmail `resultSizeEstimate`), for a backfill's "n of about m".
    pub estimate: Option<u64>,
}

/// Where the next page of a listing starts (Graph `@odata.nextLink`, Gmail `nextPageToken`). Opaque; it can be
/// saved with [`PageCursor::as_str`] and restored with [`PageCursor::from_saved`] to resume a backfill. Pass the
/// same `since` when continuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor(String);

impl PageCursor {
    /// The cursor as a string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor saved with [`PageCursor::as_str`].
    pub fn from_saved(saved: impl Into<String>) -> Self {
        PageCursor(saved.into())
    }
}

/// A message's RFC 5322 bytes, as the mail pipeline (`hirewire_mail::parse_envelope`) reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The provider's message id.
    pub id: String,
    /// Gmail `threadId` or Graph `conversationId`.
    pub thread_id: Option<String>,
    /// Gmail `internalDate`, Graph `receivedDateTime`.
    pub received_at: Option<Timestamp>,
    /// The message. Gmail: the exact stored bytes. Graph: rebuilt from its JSON (see the module docs).
    pub raw: Vec<u8>,
}

/// The incremental-sync position of a mailbox (Graph: one delta link per watched folder; Gmail: a history id).
/// Opaque; save it with [`SyncCursor::as_str`] and restore it with [`SyncCursor::from_saved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCursor(String);

impl SyncCursor {
    /// The cursor as a string, for storage (it contains no token or secret).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor saved with [`SyncCursor::as_str`].
    pub fn from_saved(saved: impl Into<String>) -> Self {
        SyncCursor(saved.into())
    }

    fn encode(state: &CursorState) -> Self {
        SyncCursor(serde_json::to_string(state).expect("cursor state serializes"))
    }

    fn decode(&self) -> Result<CursorState, ProviderError> {
        serde_json::from_str(&self.0)
            .map_err(|e| ProviderError::Protocol(format!("unreadable sync cursor: {e}")))
    }
}

/// What is inside a [`SyncCursor`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "p", rename_all = "snake_case")]
enum CursorState {
    /// Folder well-known name → its `@odata.deltaLink`.
    Graph { delta_links: Vec<(String, String)> },
    /// Gmail `historyId`.
    Gmail { history_id: String },
}

/// What changed in the mailbox since a [`SyncCursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// New messages, and (Graph) messages that changed or moved into a watched folder. Merge idempotently:
    /// Graph may replay a round, and an entry may be one the engine already has.
    pub added: Vec<MessageRef>,
    /// Ids no longer in the mailbox (Gmail `messagesDeleted`) or no longer in a watched folder (Graph
    /// `@removed`: deleted, or moved out of Inbox / Sent Items; Graph does not say which).
    pub removed: Vec<String>,
    /// Where the next call starts. Save it only after `added` and `removed` are applied.
    pub next: SyncCursor,
}

/// Reads one recruiter's mailbox at Microsoft Graph or Gmail. Cheap to clone. The access token is passed to each
/// call, so the caller can refresh it between calls (after [`ProviderError::TokenRejected`]).
#[derive(Debug, Clone)]
pub struct MailReader {
    provider: Provider,
    endpoints: Endpoints,
    http: HttpClient,
    pacing: Option<(Pacer, PaceKey)>,
    graph_batch: bool,
    concurrency: usize,
}

impl MailReader {
    /// A reader for `provider`'s mail API at `endpoints`.
    pub fn new(provider: Provider, endpoints: Endpoints, http: HttpClient) -> Self {
        MailReader {
            provider,
            endpoints,
            http,
            pacing: None,
            graph_batch: false,
            concurrency: DEFAULT_FETCH_CONCURRENCY,
        }
    }

    /// How many requests [`MailReader::fetch_raw_many`] and [`MailReader::fetch_headers_many`] keep in flight at
    /// once (at least 1; default [`DEFAULT_FETCH_CONCURRENCY`]). A pacer's per-mailbox concurrency limit still
    /// applies on top: this only says how many the reader offers it.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether [`MailReader::fetch_raw_many`] fetches Graph messages through JSON batching (`POST /v1.0/$batch`,
    /// [`GRAPH_BATCH`] messages per request, then one batch of their attachment lists): two round trips per 20
    /// messages instead of 20 to 40. Off by default because the sandbox has no `$batch` yet; turn it on for
    /// the real Graph. Each inner request still counts against the mailbox's limits, and an inner 429 pauses the
    /// mailbox in the pacer.
    pub fn with_graph_batch(mut self, on: bool) -> Self {
        self.graph_batch = on;
        self
    }

    /// This reader with every request paced by `pacer` as the mailbox `key` (see [`crate::pacing`]): the
    /// mailbox's concurrency limit, quota and throttling pauses apply, and retries are the pacer's (bounded,
    /// full jitter) instead of the HTTP client's. Without it (the default) requests go straight to the client.
    /// Gmail batches are then sized so one batch never asks for more units than the mailbox's bucket holds.
    pub fn with_pacer(mut self, pacer: Pacer, key: PaceKey) -> Self {
        self.pacing = Some((pacer, key));
        self
    }

    /// Whose mail API this reads.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// One page of the messages received at or after `since`, newest first. Start with `cursor: None`, then pass
    /// the previous page's `next` (and the same `since`) until it is `None`. `page_size` is clamped to what the
    /// provider allows (Graph 1–1000, Gmail 1–500). Covers every folder but Gmail spam and trash.
    pub async fn list_page(
        &self,
        token: &Secret,
        cursor: Option<&PageCursor>,
        since: Timestamp,
        page_size: u32,
    ) -> Result<Page, ProviderError> {
        match self.provider {
            Provider::Microsoft => {
                let url = match cursor {
                    Some(c) => self.checked_graph_link(c.as_str())?,
                    // The first page also asks for the total, for the backfill's progress.
                    None => {
                        self.graph_list_url(since, page_size.clamp(1, 1000), &GRAPH_ADDRESSING)?
                            + "&$count=true"
                    }
                };
                let list: GraphList = self.graph_get(token, &url).await?;
                Ok(Page {
                    items: list
                        .value
                        .iter()
                        .filter_map(GraphItem::to_ref_with_headers)
                        .collect(),
                    next: list.next_link.map(PageCursor),
                    estimate: list.count,
                })
            }
            Provider::Google => {
                let q = format!("after:{}", since.as_second());
                let list = self
                    .gmail_list(
                        token,
                        &q,
                        page_size.clamp(1, 500),
                        cursor.map(PageCursor::as_str),
                    )
                    .await?;
                Ok(Page {
                    items: list.messages.into_iter().map(GmailId::into_ref).collect(),
                    next: list.next_page_token.map(PageCursor),
                    estimate: list.result_size_estimate,
                })
            }
        }
    }

    /// The message `id` as RFC 5322 bytes, with its thread and received time. A message deleted since it was
    /// listed is [`ProviderError::MessageGone`]. Gmail: one `messages.get` (5 quota units, 20 in the 2026
    /// model). Graph: one `GET` of the message, plus one of its attachments when it has any.
    pub async fn fetch_raw(&self, token: &Secret, id: &str) -> Result<RawMessage, ProviderError> {
        match self.provider {
            Provider::Google => {
                let url = self.gmail_url(&["messages", id], &[("format", "raw")])?;
                let m: GmailRaw = self.message_get(token, &url, &[]).await?;
                m.into_raw_message()
            }
            Provider::Microsoft => {
                let mut url = self.graph_url(&["me", "messages", id])?;
                url.query_pairs_mut()
                    .append_pair("$select", GRAPH_MESSAGE_SELECT);
                let m: GraphMessage = self
                    .message_get(token, url.as_str(), &[PREFER_IMMUTABLE])
                    .await?;
                let attachments = if m.has_attachments {
                    let url = self.graph_url(&["me", "messages", id, "attachments"])?;
                    let list: GraphAttachments = self
                        .message_get(token, url.as_str(), &[PREFER_IMMUTABLE])
                        .await?;
                    list.value
                } else {
                    Vec::new()
                };
                Ok(RawMessage {
                    raw: build_mime(&m, &attachments)?,
                    id: m.id,
                    thread_id: m.conversation_id,
                    received_at: m.received.as_deref().and_then(parse_ts),
                })
            }
        }
    }

    /// [`MailReader::fetch_raw`] for many messages. Gmail sends them as batch requests (`POST /batch/gmail/v1`,
    /// [`GMAIL_BATCH`] per request, fewer when a pacer's bucket holds less: see [`MailReader::with_pacer`]): fewer
    /// round trips, but each still costs a `messages.get` of quota. Graph fetches them one by one, or through
    /// `$batch` when [`MailReader::with_graph_batch`] is on. Up to [`MailReader::with_concurrency`] requests are
    /// in flight at once.
    ///
    /// The results are in the order of `ids`, one per id, except when a fetch fails in a way that would fail the
    /// rest too (throttled, token rejected, missing permission…): that error is the last element and the ids
    /// after it were not fetched, so the caller keeps what it got and reschedules the rest.
    /// [`ProviderError::MessageGone`] is per message and does not stop the others. The outer `Err` is a Gmail
    /// batch request that failed as a whole before any message was read.
    pub async fn fetch_raw_many(
        &self,
        token: &Secret,
        ids: &[String],
    ) -> Result<Vec<Result<RawMessage, ProviderError>>, ProviderError> {
        let chunk = match self.provider {
            Provider::Microsoft if !self.graph_batch => 1,
            Provider::Microsoft => GRAPH_BATCH,
            Provider::Google => self.gmail_batch_size(),
        };
        let chunks = ids
            .chunks(chunk)
            .map(|c| Box::pin(self.raw_chunk(token, c)) as BoxFuture<'_, _>)
            .collect();
        self.many(chunks).await
    }

    async fn raw_chunk(
        &self,
        token: &Secret,
        chunk: &[String],
    ) -> Result<Vec<Result<RawMessage, ProviderError>>, ProviderError> {
        match self.provider {
            Provider::Microsoft if !self.graph_batch => {
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    out.push(self.fetch_raw(token, id).await);
                }
                Ok(out)
            }
            Provider::Microsoft => self.graph_batch_raw(token, chunk).await,
            Provider::Google => self.gmail_batch_raw(token, chunk).await,
        }
    }

    /// The addressing headers of many messages (see [`MessageRef::headers`]), without their bodies: what a
    /// sync needs to tell candidate mail from the rest when the listing does not carry them. Gmail:
    /// `messages.get?format=metadata` with only the addressing `metadataHeaders`, through batch requests as
    /// [`MailReader::fetch_raw_many`] (each part a `messages.get` of quota). Graph: a `GET` of the message with
    /// only the addressing properties selected (through `$batch` when it is on). Results, concurrency and
    /// errors as [`MailReader::fetch_raw_many`]; each result is a [`MessageRef`] with `headers` filled.
    pub async fn fetch_headers_many(
        &self,
        token: &Secret,
        ids: &[String],
    ) -> Result<Vec<Result<MessageRef, ProviderError>>, ProviderError> {
        let chunk = match self.provider {
            Provider::Microsoft if !self.graph_batch => 1,
            Provider::Microsoft => GRAPH_BATCH,
            Provider::Google => self.gmail_batch_size(),
        };
        let chunks = ids
            .chunks(chunk)
            .map(|c| Box::pin(self.headers_chunk(token, c)) as BoxFuture<'_, _>)
            .collect();
        self.many(chunks).await
    }

    async fn headers_chunk(
        &self,
        token: &Secret,
        chunk: &[String],
    ) -> Result<Vec<Result<MessageRef, ProviderError>>, ProviderError> {
        match self.provider {
            Provider::Microsoft if !self.graph_batch => {
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    let url = self.graph_addressing_url(id)?;
                    let r = self
                        .message_get::<GraphItem>(token, url.as_str(), &[PREFER_IMMUTABLE])
                        .await
                        .and_then(graph_item_with_headers);
                    out.push(r);
                }
                Ok(out)
            }
            Provider::Microsoft => {
                let mut paths = Vec::with_capacity(chunk.len());
                for id in chunk {
                    paths.push(relative_graph_path(&self.graph_addressing_url(id)?));
                }
                Ok(self
                    .graph_batch(token, &paths)
                    .await?
                    .into_iter()
                    .map(|r| {
                        r.and_then(|body| parse_json::<GraphItem>("/v1.0/$batch", &body))
                            .and_then(graph_item_with_headers)
                    })
                    .collect())
            }
            Provider::Google => {
                let mut query = vec![("format", "metadata")];
                query.extend(GMAIL_ADDRESSING.iter().map(|h| ("metadataHeaders", *h)));
                self.gmail_batch_get(token, chunk, &query, |body| {
                    parse_json::<GmailMetadata>("/batch/gmail/v1", body)
                        .map(GmailMetadata::into_ref)
                })
                .await
            }
        }
    }

    /// Gmail messages per batch request: [`GMAIL_BATCH`], fewer when the pacer's bucket holds less.
    fn gmail_batch_size(&self) -> usize {
        match &self.pacing {
            Some((pacer, _)) => pacer.gmail_batch_size(GMAIL_BATCH),
            None => GMAIL_BATCH,
        }
    }

    /// Runs the fetches of `chunks` (one per chunk of ids, in order), up to the reader's concurrency at once, and
    /// gathers their results in order, stopping after the first error that stops the rest (see
    /// [`MailReader::fetch_raw_many`]).
    async fn many<T>(&self, chunks: Vec<BoxFuture<'_, ChunkResult<T>>>) -> ChunkResult<T> {
        let mut out = Vec::new();
        let mut results = futures::stream::iter(chunks).buffered(self.concurrency.max(1));
        while let Some(results) = results.next().await {
            let results = match results {
                Ok(r) => r,
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => vec![Err(e)],
            };
            for r in results {
                let stop = r.as_ref().is_err_and(stops_the_rest);
                out.push(r);
                if stop {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// `GET /me/messages/{id}` with only the id, thread, date and addressing properties selected.
    fn graph_addressing_url(&self, id: &str) -> Result<url::Url, ProviderError> {
        let mut url = self.graph_url(&["me", "messages", id])?;
        let mut select = "id,conversationId,receivedDateTime".to_owned();
        for f in GRAPH_ADDRESSING {
            select.push(',');
            select.push_str(f);
        }
        url.query_pairs_mut().append_pair("$select", &select);
        Ok(url)
    }

    /// One Graph `$batch` of message GETs, then one of the attachment lists of those that have attachments.
    async fn graph_batch_raw(
        &self,
        token: &Secret,
        ids: &[String],
    ) -> Result<Vec<Result<RawMessage, ProviderError>>, ProviderError> {
        let mut paths = Vec::with_capacity(ids.len());
        for id in ids {
            let mut url = self.graph_url(&["me", "messages", id])?;
            url.query_pairs_mut()
                .append_pair("$select", GRAPH_MESSAGE_SELECT);
            paths.push(relative_graph_path(&url));
        }
        let messages = self.graph_batch(token, &paths).await?;
        let mut slots: Vec<Result<GraphMessage, ProviderError>> = messages
            .into_iter()
            .map(|r| r.and_then(|body| parse_json::<GraphMessage>("/v1.0/$batch", &body)))
            .collect();
        // Attachment lists of the messages that have attachments, in one more batch.
        let wanted: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_ref().is_ok_and(|m| m.has_attachments))
            .map(|(i, _)| i)
            .collect();
        let mut attachments: HashMap<usize, Result<Vec<GraphAttachment>, ProviderError>> =
            HashMap::new();
        if !wanted.is_empty() {
            let mut paths = Vec::with_capacity(wanted.len());
            for &i in &wanted {
                let url = self.graph_url(&["me", "messages", &ids[i], "attachments"])?;
                paths.push(relative_graph_path(&url));
            }
            for (&i, r) in wanted.iter().zip(self.graph_batch(token, &paths).await?) {
                let list = r.and_then(|body| {
                    parse_json::<GraphAttachments>("/v1.0/$batch", &body).map(|l| l.value)
                });
                attachments.insert(i, list);
            }
        }
        Ok(slots
            .drain(..)
            .enumerate()
            .map(|(i, m)| {
                let m = m?;
                let files = match attachments.remove(&i) {
                    Some(list) => list?,
                    None => Vec::new(),
                };
                Ok(RawMessage {
                    raw: build_mime(&m, &files)?,
                    id: m.id,
                    thread_id: m.conversation_id,
                    received_at: m.received.as_deref().and_then(parse_ts),
                })
            })
            .collect())
    }

    /// Sends GETs of `paths` (relative to `/v1.0`) as one `$batch`; returns each one's body or error, in order.
    /// Inner answers come back in any order and are matched by `id`; an inner 429 pauses the mailbox in the pacer.
    async fn graph_batch(
        &self,
        token: &Secret,
        paths: &[String],
    ) -> Result<Vec<Result<Vec<u8>, ProviderError>>, ProviderError> {
        let requests: Vec<serde_json::Value> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({
                    "id": i.to_string(),
                    "method": "GET",
                    "url": p,
                    "headers": {PREFER_IMMUTABLE.0: PREFER_IMMUTABLE.1},
                })
            })
            .collect();
        let url = format!("{}/v1.0/$batch", self.endpoints.graph);
        let req = json_request(
            ::http::Method::POST,
            &url,
            token,
            &serde_json::json!({ "requests": requests }),
        )?;
        let count = u32::try_from(paths.len()).unwrap_or(u32::MAX);
        // Every inner request is a GET: safe to send again as a whole.
        let resp = self.send(Op::GraphBatch(count), req).await?;
        let answer: GraphBatchAnswer = self.json_or_error("/v1.0/$batch", resp)?;
        let mut slots: Vec<Option<Result<Vec<u8>, ProviderError>>> =
            (0..paths.len()).map(|_| None).collect();
        for r in answer.responses {
            let Some(slot) = r.id.parse::<usize>().ok().and_then(|i| slots.get_mut(i)) else {
                continue;
            };
            let retry_after = r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| match v {
                    serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
                    serde_json::Value::Number(n) => n.as_u64(),
                    _ => None,
                })
                .map(std::time::Duration::from_secs);
            let body = match &r.body {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(v) => serde_json::to_vec(v).unwrap_or_default(),
            };
            *slot = Some(match r.status {
                200..=299 => Ok(body),
                404 => Err(ProviderError::MessageGone {
                    provider: Provider::Microsoft,
                }),
                429 => {
                    if let Some((pacer, key)) = &self.pacing {
                        pacer.throttled(key, crate::pacing::Service::Graph, retry_after);
                    }
                    Err(ProviderError::Throttled { retry_after })
                }
                status @ 500..=599 => Err(ProviderError::Transient(format!(
                    "a Graph batch request answered {status}"
                ))),
                status => Err(api_error(Provider::Microsoft, status, &body)),
            });
        }
        Ok(slots
            .into_iter()
            .map(|s| {
                s.unwrap_or_else(|| {
                    Err(ProviderError::Protocol(
                        "Graph batch answer lacks a response".into(),
                    ))
                })
            })
            .collect())
    }

    async fn gmail_batch_raw(
        &self,
        token: &Secret,
        ids: &[String],
    ) -> Result<Vec<Result<RawMessage, ProviderError>>, ProviderError> {
        self.gmail_batch_get(token, ids, &[("format", "raw")], |body| {
            parse_json::<GmailRaw>("/batch/gmail/v1", body).and_then(GmailRaw::into_raw_message)
        })
        .await
    }

    /// One Gmail batch request of `messages.get` for `ids` with `query`; each part's body goes through `parse`.
    async fn gmail_batch_get<T>(
        &self,
        token: &Secret,
        ids: &[String],
        query: &[(&str, &str)],
        parse: impl Fn(&[u8]) -> Result<T, ProviderError>,
    ) -> Result<Vec<Result<T, ProviderError>>, ProviderError> {
        let boundary = format!("batch_hirewire_{:016x}", rand::random::<u64>());
        let mut body = String::new();
        for (i, id) in ids.iter().enumerate() {
            let url = url::Url::parse(&self.gmail_url(&["messages", id], query)?)
                .map_err(|e| ProviderError::Protocol(format!("bad Gmail URL: {e}")))?;
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <m{i}>\r\n\r\nGET {}?{}\r\n\r\n",
                url.path(),
                url.query().unwrap_or("")
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let url = format!("{}/batch/gmail/v1", self.endpoints.gmail);
        let req = ::http::Request::post(&url)
            .header(
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(
                ::http::header::CONTENT_TYPE,
                format!("multipart/mixed; boundary={boundary}"),
            )
            .body(body.into_bytes())
            .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))?;
        // Every part is a GET: safe to retry as a whole. Each part is a `messages.get` of quota.
        let parts = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let resp = self
            .send(Op::Gmail(GmailMethod::MessagesGet, parts), req)
            .await?;
        if !resp.status().is_success() {
            return Err(api_error(
                Provider::Google,
                resp.status().as_u16(),
                resp.body(),
            ));
        }
        let boundary = resp
            .headers()
            .get(::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(multipart_boundary)
            .ok_or_else(|| ProviderError::Protocol("Gmail batch answer is not multipart".into()))?;
        let mut slots: Vec<Option<Result<T, ProviderError>>> =
            (0..ids.len()).map(|_| None).collect();
        for (position, part) in batch_parts(resp.body(), &boundary).into_iter().enumerate() {
            // Parts come in request order and echo `Content-ID: <response-m{i}>`; trust the id when present.
            let index = part
                .content_id
                .as_deref()
                .and_then(|c| c.trim_matches(['<', '>']).strip_prefix("response-m"))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(position);
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            *slot = Some(match part.status {
                200..=299 => parse(&part.body),
                404 => Err(ProviderError::MessageGone {
                    provider: Provider::Google,
                }),
                // Parts are not retried one by one: the caller reschedules what is left, and the mailbox
                // pauses in the pacer so requests in line do not go out into the same limit.
                429 => {
                    if let Some((pacer, key)) = &self.pacing {
                        pacer.throttled(key, crate::pacing::Service::Gmail, part.retry_after);
                    }
                    Err(ProviderError::Throttled {
                        retry_after: part.retry_after,
                    })
                }
                status @ 500..=599 => Err(ProviderError::Transient(format!(
                    "a Gmail batch part answered {status}"
                ))),
                status => Err(api_error(Provider::Google, status, &part.body)),
            });
        }
        Ok(slots
            .into_iter()
            .map(|s| {
                s.unwrap_or_else(|| {
                    Err(ProviderError::Protocol(
                        "Gmail batch answer lacks a part".into(),
                    ))
                })
            })
            .collect())
    }

    /// A cursor for [`MailReader::changes`] at the mailbox's current state. Graph: an unfiltered delta round
    /// of Inbox and Sent Items (it pages through every message of both folders once and keeps only the final
    /// `deltaLink`s; a filtered delta would be capped at 5,000 messages). Gmail: the profile's `historyId`.
    /// Take it **before** a backfill so nothing that arrives during the backfill is missed.
    pub async fn start_incremental(&self, token: &Secret) -> Result<SyncCursor, ProviderError> {
        match self.provider {
            Provider::Google => {
                let url = self.gmail_url(&["profile"], &[])?;
                let p: GmailProfile = self
                    .google_get(GmailMethod::GetProfile, token, &url)
                    .await?;
                Ok(SyncCursor::encode(&CursorState::Gmail {
                    history_id: p.history_id,
                }))
            }
            Provider::Microsoft => {
                let mut delta_links = Vec::new();
                for folder in GRAPH_WATCHED_FOLDERS {
                    let mut url =
                        self.graph_url(&["me", "mailFolders", folder, "messages", "delta"])?;
                    url.query_pairs_mut()
                        .append_pair("$select", "id,conversationId,receivedDateTime")
                        .append_pair("$top", &GRAPH_DELTA_PAGE.to_string());
                    let (_, link) = self.graph_delta_round(token, url.into()).await?;
                    delta_links.push((folder.to_owned(), link));
                }
                Ok(SyncCursor::encode(&CursorState::Graph { delta_links }))
            }
        }
    }

    /// What changed since `cursor`. Fails with [`ProviderError::CursorExpired`] when the provider no longer
    /// accepts it (Graph 410, Gmail 404): resync the window, then [`MailReader::start_incremental`] again.
    pub async fn changes(
        &self,
        token: &Secret,
        cursor: &SyncCursor,
    ) -> Result<Changes, ProviderError> {
        match (self.provider, cursor.decode()?) {
            (Provider::Microsoft, CursorState::Graph { delta_links }) => {
                // Within a folder the last word on an item wins (items can repeat across pages); across folders
                // presence wins, so a move between watched folders is neither a removal nor lost.
                let mut all = ChangeSet::default();
                let mut next_links = Vec::new();
                for (folder, link) in delta_links {
                    let link = self.checked_graph_link(&link)?;
                    let (items, next) = self.graph_delta_round(token, link).await?;
                    let mut here = ChangeSet::default();
                    for item in items {
                        match item.to_ref() {
                            Some(r) => here.add(r),
                            None => here.remove(item.id, false),
                        }
                    }
                    let (added, removed) = here.finish();
                    added.into_iter().for_each(|r| all.add(r));
                    removed.into_iter().for_each(|id| all.remove(id, true));
                    next_links.push((folder, next));
                }
                let (added, removed) = all.finish();
                Ok(Changes {
                    added,
                    removed,
                    next: SyncCursor::encode(&CursorState::Graph {
                        delta_links: next_links,
                    }),
                })
            }
            (Provider::Google, CursorState::Gmail { history_id }) => {
                self.gmail_changes(token, &history_id).await
            }
            _ => Err(ProviderError::Protocol(
                "sync cursor belongs to the other provider".into(),
            )),
        }
    }

    /// Messages received at or after `since` from or to `address` (To and Cc), deduplicated.
    ///
    /// Gmail: two `messages.list` queries, `from:` and `to:` (the sandbox, like much of what hirewire relies on,
    /// has no `OR`), each with `after:`; order is unspecified (Gmail listings carry no time).
    /// Graph: the sandbox supports `$filter` only on dates and has no `$search`, so the window is listed with
    /// `from`/`toRecipients`/`ccRecipients`/`bccRecipients` selected and matched here (case-insensitive). That
    /// costs a listing of the whole window; with real Graph a `$search="participants:…"` would be cheaper but is
    /// not used until it can be tested. Newest first.
    pub async fn search_by_address(
        &self,
        token: &Secret,
        address: &str,
        since: Timestamp,
    ) -> Result<Vec<MessageRef>, ProviderError> {
        let address = address.trim();
        if address.is_empty() || address.contains(char::is_whitespace) || address.contains('"') {
            return Err(ProviderError::Protocol(format!(
                "not a searchable address: {address:?}"
            )));
        }
        match self.provider {
            Provider::Google => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for field in ["from", "to"] {
                    let q = format!("{field}:{address} after:{}", since.as_second());
                    let mut token_page: Option<String> = None;
                    loop {
                        let list = self
                            .gmail_list(token, &q, SEARCH_PAGE, token_page.as_deref())
                            .await?;
                        for m in list.messages {
                            if seen.insert(m.id.clone()) {
                                out.push(m.into_ref());
                            }
                        }
                        match list.next_page_token {
                            Some(t) => token_page = Some(t),
                            None => break,
                        }
                    }
                }
                Ok(out)
            }
            Provider::Microsoft => {
                let mut url = self.graph_list_url(
                    since,
                    1000,
                    &["from", "toRecipients", "ccRecipients", "bccRecipients"],
                )?;
                let mut out = Vec::new();
                loop {
                    let list: GraphList = self.graph_get(token, &url).await?;
                    for item in &list.value {
                        if item.involves(address)
                            && let Some(r) = item.to_ref()
                        {
                            out.push(r);
                        }
                    }
                    match list.next_link {
                        Some(next) => url = self.checked_graph_link(&next)?,
                        None => break,
                    }
                }
                Ok(out)
            }
        }
    }

    // ---- Graph ----

    fn graph_url(&self, segments: &[&str]) -> Result<url::Url, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/v1.0", self.endpoints.graph))
            .map_err(|e| ProviderError::Protocol(format!("bad Graph base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("bad Graph base URL".into()))?
            .extend(segments);
        Ok(url)
    }

    fn graph_list_url(
        &self,
        since: Timestamp,
        top: u32,
        extra_select: &[&str],
    ) -> Result<String, ProviderError> {
        let since = Timestamp::from_second(since.as_second())
            .map_err(|e| ProviderError::Protocol(format!("bad window start: {e}")))?;
        let mut select = "id,conversationId,receivedDateTime".to_owned();
        for s in extra_select {
            select.push(',');
            select.push_str(s);
        }
        let mut url = self.graph_url(&["me", "messages"])?;
        url.query_pairs_mut()
            .append_pair("$filter", &format!("receivedDateTime ge {since}"))
            .append_pair("$orderby", "receivedDateTime desc")
            .append_pair("$top", &top.to_string())
            .append_pair("$select", &select);
        Ok(url.into())
    }

    /// A `nextLink`/`deltaLink` from Graph or a saved cursor: followed only if it points at the configured Graph
    /// host, so the bearer token never goes anywhere else.
    fn checked_graph_link(&self, link: &str) -> Result<String, ProviderError> {
        let base = format!("{}/v1.0/", self.endpoints.graph);
        let url = url::Url::parse(link)
            .map_err(|_| ProviderError::Protocol("Graph paging link is not a URL".into()))?;
        let ours = url::Url::parse(&base)
            .map_err(|e| ProviderError::Protocol(format!("bad Graph base URL: {e}")))?;
        if url.origin() != ours.origin() || !url.path().starts_with(ours.path()) {
            return Err(ProviderError::Protocol(
                "Graph paging link points outside Microsoft Graph".into(),
            ));
        }
        Ok(link.to_owned())
    }

    async fn graph_get<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        url: &str,
    ) -> Result<T, ProviderError> {
        let resp = self.get(Op::Graph, url, token, &[PREFER_IMMUTABLE]).await?;
        self.json_or_error(url, resp)
    }

    /// Follows a delta round from `url` to its `@odata.deltaLink`; returns every item on the way and that link.
    /// 410 (or a `SyncStateNotFound` / `resyncRequired` code) is [`ProviderError::CursorExpired`].
    async fn graph_delta_round(
        &self,
        token: &Secret,
        mut url: String,
    ) -> Result<(Vec<GraphItem>, String), ProviderError> {
        let mut items = Vec::new();
        loop {
            let resp = self
                .get(Op::Graph, &url, token, &[PREFER_IMMUTABLE])
                .await?;
            if !resp.status().is_success() && graph_sync_state_gone(&resp) {
                return Err(ProviderError::CursorExpired {
                    provider: Provider::Microsoft,
                });
            }
            let page: GraphList = self.json_or_error(&url, resp)?;
            items.extend(page.value);
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = self.checked_graph_link(&next)?,
                (None, Some(delta)) => return Ok((items, self.checked_graph_link(&delta)?)),
                (None, None) => {
                    return Err(ProviderError::Protocol(
                        "Graph delta page has neither nextLink nor deltaLink".into(),
                    ));
                }
            }
        }
    }

    // ---- Gmail ----

    fn gmail_url(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/gmail/v1/users/me", self.endpoints.gmail))
            .map_err(|e| ProviderError::Protocol(format!("bad Gmail base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("bad Gmail base URL".into()))?
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url.into())
    }

    async fn google_get<T: serde::de::DeserializeOwned>(
        &self,
        method: GmailMethod,
        token: &Secret,
        url: &str,
    ) -> Result<T, ProviderError> {
        let resp = self.get(Op::Gmail(method, 1), url, token, &[]).await?;
        self.json_or_error(url, resp)
    }

    async fn gmail_list(
        &self,
        token: &Secret,
        q: &str,
        max: u32,
        page_token: Option<&str>,
    ) -> Result<GmailList, ProviderError> {
        let max = max.to_string();
        let mut query = vec![("q", q), ("maxResults", max.as_str())];
        if let Some(t) = page_token {
            query.push(("pageToken", t));
        }
        let url = self.gmail_url(&["messages"], &query)?;
        self.google_get(GmailMethod::MessagesList, token, &url)
            .await
    }

    async fn gmail_changes(&self, token: &Secret, start: &str) -> Result<Changes, ProviderError> {
        let mut changes = ChangeSet::default();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("startHistoryId", start),
                ("historyTypes", "messageAdded"),
                ("historyTypes", "messageDeleted"),
                ("maxResults", "500"),
            ];
            if let Some(t) = page_token.as_deref() {
                query.push(("pageToken", t));
            }
            let url = self.gmail_url(&["history"], &query)?;
            let resp = self
                .get(Op::Gmail(GmailMethod::HistoryList, 1), &url, token, &[])
                .await?;
            if resp.status() == 404 {
                return Err(ProviderError::CursorExpired {
                    provider: Provider::Google,
                });
            }
            let page: GmailHistory = self.json_or_error(&url, resp)?;
            // Records are in chronological order: the last word on a message wins.
            for record in page.history {
                for a in record.messages_added {
                    let skipped = a
                        .message
                        .label_ids
                        .iter()
                        .any(|l| GMAIL_SKIPPED_LABELS.contains(&l.as_str()));
                    if !skipped {
                        changes.add(a.message.into_ref());
                    }
                }
                for d in record.messages_deleted {
                    changes.remove(d.message.id, false);
                }
            }
            match page.next_page_token {
                Some(t) => page_token = Some(t),
                None => {
                    let (added, removed) = changes.finish();
                    return Ok(Changes {
                        added,
                        removed,
                        next: SyncCursor::encode(&CursorState::Gmail {
                            history_id: page.history_id,
                        }),
                    });
                }
            }
        }
    }

    /// A GET of one message (or its attachments): 404 is [`ProviderError::MessageGone`].
    async fn message_get<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<T, ProviderError> {
        let op = match self.provider {
            Provider::Microsoft => Op::Graph,
            Provider::Google => Op::Gmail(GmailMethod::MessagesGet, 1),
        };
        let resp = self.get(op, url, token, headers).await?;
        if resp.status() == 404 {
            return Err(ProviderError::MessageGone {
                provider: self.provider,
            });
        }
        self.json_or_error(url, resp)
    }

    /// A bearer GET, through the pacer when there is one.
    async fn get(
        &self,
        op: Op,
        url: &str,
        token: &Secret,
        headers: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        match &self.pacing {
            None => self.http.get(url, Some(token), headers).await,
            Some(_) => self.send(op, get_request(url, Some(token), headers)?).await,
        }
    }

    /// An idempotent request, through the pacer when there is one.
    async fn send(&self, op: Op, request: Request) -> Result<Response, ProviderError> {
        send_paced(&self.http, self.pacing.as_ref(), op, request, true).await
    }

    fn json_or_error<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        resp: Response,
    ) -> Result<T, ProviderError> {
        json_or_api_error(self.provider, url, resp)
    }
}

/// A Graph URL's path and query relative to `/v1.0`, as `$batch` wants them.
fn relative_graph_path(url: &url::Url) -> String {
    let path = url.path();
    let rel = path
        .find("/v1.0/")
        .map_or(path, |i| &path[i + "/v1.0".len()..]);
    match url.query() {
        Some(q) => format!("{rel}?{q}"),
        None => rel.to_owned(),
    }
}

/// Whether a failed fetch means the following fetches would fail too.
fn stops_the_rest(e: &ProviderError) -> bool {
    !matches!(e, ProviderError::MessageGone { .. })
}

/// The `boundary` parameter of a `multipart/*` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        return None;
    }
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// One `application/http` response of a batch.
#[derive(Debug)]
struct BatchPart {
    content_id: Option<String>,
    status: u16,
    retry_after: Option<std::time::Duration>,
    body: Vec<u8>,
}

/// Splits a `multipart/mixed` batch answer into its HTTP responses (CRLF or bare LF).
fn batch_parts(body: &[u8], boundary: &str) -> Vec<BatchPart> {
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for segment in text.split(delimiter.as_str()).skip(1) {
        if segment.starts_with("--") {
            break;
        }
        let segment = segment.trim_start_matches(['\r', '\n']);
        let (mime_head, http) = split_head(segment);
        let content_id = mime_head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-id")
                .then(|| v.trim().to_owned())
        });
        let (http_head, http_body) = split_head(http.trim_start_matches(['\r', '\n']));
        let status = http_head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = ::http::HeaderMap::new();
        for line in http_head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("retry-after")
                && let Ok(v) = ::http::HeaderValue::from_str(v.trim())
            {
                headers.insert(::http::header::RETRY_AFTER, v);
            }
        }
        out.push(BatchPart {
            content_id,
            status,
            retry_after: retry_after(&headers),
            body: http_body.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
        });
    }
    out
}

/// Head and body of a MIME entity or HTTP message, at the first empty line.
fn split_head(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => {
            let (i, n) = if a.0 <= b.0 { a } else { b };
            (&s[..i], &s[i + n..])
        }
        (Some((i, n)), None) | (None, Some((i, n))) => (&s[..i], &s[i + n..]),
        (None, None) => (s, ""),
    }
}

/// Additions and removals keyed by id, in order of first mention.
#[derive(Default)]
struct ChangeSet {
    order: Vec<String>,
    /// `Some`: present (added or changed); `None`: removed.
    state: HashMap<String, Option<MessageRef>>,
}

impl ChangeSet {
    fn add(&mut self, r: MessageRef) {
        if !self.state.contains_key(&r.id) {
            self.order.push(r.id.clone());
        }
        self.state.insert(r.id.clone(), Some(r));
    }

    /// Marks `id` removed; with `presence_wins`, an earlier addition stands.
    fn remove(&mut self, id: String, presence_wins: bool) {
        match self.state.get(&id) {
            Some(Some(_)) if presence_wins => {}
            Some(_) => {
                self.state.insert(id, None);
            }
            None => {
                self.order.push(id.clone());
                self.state.insert(id, None);
            }
        }
    }

    fn finish(mut self) -> (Vec<MessageRef>, Vec<String>) {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for id in self.order {
            match self.state.remove(&id) {
                Some(Some(r)) => added.push(r),
                Some(None) => removed.push(id),
                None => {}
            }
        }
        (added, removed)
    }
}

/// Graph's answer to a delta token it no longer has (410, or a `syncStateNotFound` / `resyncRequired` code).
pub(crate) fn graph_sync_state_gone(resp: &Response) -> bool {
    if resp.status() == 410 {
        return true;
    }
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("");
    code.eq_ignore_ascii_case("syncStateNotFound") || code.eq_ignore_ascii_case("resyncRequired")
}

fn parse_ts(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Gmail's base64url, with or without padding.
fn decode_base64url(s: &str) -> Result<Vec<u8>, ProviderError> {
    let trimmed: String = s
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .collect();
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|e| ProviderError::Protocol(format!("Gmail raw message is not base64url: {e}")))
}

// ---- Wire shapes (private) ----

#[derive(Debug, Deserialize)]
struct GraphBatchAnswer {
    #[serde(default)]
    responses: Vec<GraphBatchResponse>,
}

#[derive(Debug, Deserialize)]
struct GraphBatchResponse {
    id: String,
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct GraphList {
    #[serde(default)]
    value: Vec<GraphItem>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
    #[serde(rename = "@odata.count")]
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphItem {
    id: String,
    conversation_id: Option<String>,
    #[serde(rename = "receivedDateTime")]
    received: Option<String>,
    #[serde(rename = "@removed")]
    removed: Option<serde_json::Value>,
    from: Option<GraphRecipient>,
    sender: Option<GraphRecipient>,
    #[serde(default)]
    reply_to: Vec<GraphRecipient>,
    #[serde(default)]
    to_recipients: Vec<GraphRecipient>,
    #[serde(default)]
    cc_recipients: Vec<GraphRecipient>,
    #[serde(default)]
    bcc_recipients: Vec<GraphRecipient>,
}

impl GraphItem {
    fn to_ref(&self) -> Option<MessageRef> {
        if self.removed.is_some() {
            return None;
        }
        Some(MessageRef {
            id: self.id.clone(),
            thread_id: self.conversation_id.clone(),
            received_at: self.received.as_deref().and_then(parse_ts),
            headers: None,
        })
    }

    /// [`GraphItem::to_ref`] with the addressing headers rebuilt from the structured fields.
    fn to_ref_with_headers(&self) -> Option<MessageRef> {
        let mut r = self.to_ref()?;
        r.headers = Some(self.addressing_headers());
        Some(r)
    }

    /// `From`, `Sender`, `Reply-To`, `To`, `Cc` and `Bcc` as an RFC 5322 header block (empty fields left out).
    fn addressing_headers(&self) -> Vec<u8> {
        let mut out = String::new();
        fn one(r: &Option<GraphRecipient>) -> &[GraphRecipient] {
            r.as_ref().map(std::slice::from_ref).unwrap_or(&[])
        }
        for (name, list) in [
            ("From", one(&self.from)),
            ("Sender", one(&self.sender)),
            ("Reply-To", &self.reply_to[..]),
            ("To", &self.to_recipients[..]),
            ("Cc", &self.cc_recipients[..]),
            ("Bcc", &self.bcc_recipients[..]),
        ] {
            let value = address_list(list);
            if !value.is_empty() {
                push_header(&mut out, name, &value);
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn involves(&self, address: &str) -> bool {
        self.from
            .iter()
            .chain(&self.to_recipients)
            .chain(&self.cc_recipients)
            .chain(&self.bcc_recipients)
            .any(|r| {
                r.email_address
                    .address
                    .as_deref()
                    .is_some_and(|a| a.trim().eq_ignore_ascii_case(address))
            })
    }
}

/// A Graph message fetched with the addressing properties selected, as a [`MessageRef`] with headers.
fn graph_item_with_headers(item: GraphItem) -> Result<MessageRef, ProviderError> {
    item.to_ref_with_headers()
        .ok_or_else(|| ProviderError::Protocol("Graph answered a message as removed".into()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphRecipient {
    email_address: GraphEmailAddress,
}

#[derive(Debug, Deserialize)]
struct GraphEmailAddress {
    name: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphMessage {
    id: String,
    conversation_id: Option<String>,
    #[serde(rename = "receivedDateTime")]
    received: Option<String>,
    #[serde(rename = "sentDateTime")]
    sent: Option<String>,
    internet_message_id: Option<String>,
    subject: Option<String>,
    from: Option<GraphRecipient>,
    sender: Option<GraphRecipient>,
    #[serde(default)]
    to_recipients: Vec<GraphRecipient>,
    #[serde(default)]
    cc_recipients: Vec<GraphRecipient>,
    #[serde(default)]
    bcc_recipients: Vec<GraphRecipient>,
    #[serde(default)]
    reply_to: Vec<GraphRecipient>,
    #[serde(default)]
    has_attachments: bool,
    body: Option<GraphBody>,
    #[serde(default)]
    internet_message_headers: Vec<GraphHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphBody {
    content_type: Option<String>,
    #[serde(default)]
    content: String,
}

#[derive(Debug, Deserialize)]
struct GraphHeader {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct GraphAttachments {
    #[serde(default)]
    value: Vec<GraphAttachment>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphAttachment {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    name: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    is_inline: bool,
    content_id: Option<String>,
    content_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailList {
    #[serde(default)]
    messages: Vec<GmailId>,
    next_page_token: Option<String>,
    result_size_estimate: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailId {
    id: String,
    thread_id: Option<String>,
    #[serde(default)]
    label_ids: Vec<String>,
}

impl GmailId {
    fn into_ref(self) -> MessageRef {
        MessageRef {
            id: self.id,
            thread_id: self.thread_id,
            received_at: None,
            headers: None,
        }
    }
}

/// `messages.get?format=metadata`: the headers asked for, in `payload.headers`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailMetadata {
    id: String,
    thread_id: Option<String>,
    internal_date: Option<String>,
    #[serde(default)]
    payload: Option<GmailMetadataPayload>,
}

#[derive(Debug, Deserialize)]
struct GmailMetadataPayload {
    #[serde(default)]
    headers: Vec<GraphHeader>,
}

impl GmailMetadata {
    fn into_ref(self) -> MessageRef {
        let mut block = String::new();
        for h in self.payload.iter().flat_map(|p| &p.headers) {
            let name = h.name.trim();
            if GMAIL_ADDRESSING
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
            {
                push_header(&mut block, name, &h.value);
            }
        }
        block.push_str("\r\n");
        MessageRef {
            id: self.id,
            thread_id: self.thread_id,
            received_at: gmail_internal_date(self.internal_date.as_deref()),
            headers: Some(block.into_bytes()),
        }
    }
}

/// Gmail `internalDate` (epoch milliseconds as a string).
fn gmail_internal_date(ms: Option<&str>) -> Option<Timestamp> {
    ms.and_then(|ms| ms.parse::<i64>().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailRaw {
    id: String,
    thread_id: Option<String>,
    internal_date: Option<String>,
    raw: String,
}

impl GmailRaw {
    fn into_raw_message(self) -> Result<RawMessage, ProviderError> {
        let raw = decode_base64url(&self.raw)?;
        Ok(RawMessage {
            id: self.id,
            thread_id: self.thread_id,
            received_at: gmail_internal_date(self.internal_date.as_deref()),
            raw,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailProfile {
    history_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailHistory {
    #[serde(default)]
    history: Vec<GmailHistoryRecord>,
    history_id: String,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailHistoryRecord {
    #[serde(default)]
    messages_added: Vec<GmailHistoryMessage>,
    #[serde(default)]
    messages_deleted: Vec<GmailHistoryMessage>,
}

#[derive(Debug, Deserialize)]
struct GmailHistoryMessage {
    message: GmailId,
}

// ---- Rebuilding RFC 5322 from Graph JSON ----

/// Header names whose meaning belongs to the original MIME structure, which the rebuilt message replaces.
const MIME_STRUCTURE_HEADERS: [&str; 4] = [
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "content-disposition",
];

/// The message as RFC 5322 bytes (see the module docs for what is original and what is Graph's rendering).
fn build_mime(m: &GraphMessage, attachments: &[GraphAttachment]) -> Result<Vec<u8>, ProviderError> {
    let mut out = String::new();
    let mut present: HashSet<String> = HashSet::new();
    for h in &m.internet_message_headers {
        let name = h.name.trim();
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            || MIME_STRUCTURE_HEADERS.contains(&name.to_ascii_lowercase().as_str())
        {
            continue;
        }
        present.insert(name.to_ascii_lowercase());
        push_header(&mut out, name, &h.value);
    }
    // Whatever the transport headers lack (or all of them, when Graph gave none) comes from the structured fields.
    let mut fallback = |name: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && !present.contains(&name.to_ascii_lowercase())
        {
            push_header(&mut out, name, &v);
        }
    };
    fallback(
        "From",
        m.from
            .as_ref()
            .map(|r| address_list(std::slice::from_ref(r))),
    );
    if m.sender.as_ref().map(|s| &s.email_address.address)
        != m.from.as_ref().map(|f| &f.email_address.address)
    {
        fallback(
            "Sender",
            m.sender
                .as_ref()
                .map(|r| address_list(std::slice::from_ref(r))),
        );
    }
    fallback("To", Some(address_list(&m.to_recipients)));
    fallback("Cc", Some(address_list(&m.cc_recipients)));
    fallback("Bcc", Some(address_list(&m.bcc_recipients)));
    fallback("Reply-To", Some(address_list(&m.reply_to)));
    fallback("Subject", m.subject.as_deref().map(encode_word));
    fallback(
        "Date",
        m.sent
            .as_deref()
            .or(m.received.as_deref())
            .and_then(parse_ts)
            .map(|t| {
                jiff::fmt::rfc2822::DateTimePrinter::new()
                    .timestamp_to_string(&t)
                    .unwrap_or_default()
            }),
    );
    fallback("Message-ID", m.internet_message_id.clone());

    let (body_type, body) = match &m.body {
        Some(b)
            if b.content_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("text")) =>
        {
            ("text/plain", b.content.as_str())
        }
        Some(b) => ("text/html", b.content.as_str()),
        None => ("text/plain", ""),
    };
    out.push_str("MIME-Version: 1.0\r\n");
    let files: Vec<&GraphAttachment> = attachments
        .iter()
        .filter(|a| {
            a.content_bytes.is_some()
                && a.odata_type
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.fileAttachment"))
        })
        .collect();
    if files.is_empty() {
        push_text_part(&mut out, body_type, body);
        return Ok(out.into_bytes());
    }
    let boundary = format!("=_hirewire_{:016x}", rand::random::<u64>());
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str(&format!("--{boundary}\r\n"));
    push_text_part(&mut out, body_type, body);
    for a in files {
        let bytes = STANDARD
            .decode(a.content_bytes.as_deref().unwrap_or("").trim())
            .map_err(|e| ProviderError::Protocol(format!("attachment is not base64: {e}")))?;
        let ct = a
            .content_type
            .as_deref()
            .filter(|t| t.contains('/') && !t.contains(['\r', '\n', ';', '"']))
            .unwrap_or("application/octet-stream");
        let name = a.name.as_deref().unwrap_or("attachment");
        out.push_str(&format!("\r\n--{boundary}\r\n"));
        out.push_str(&format!("Content-Type: {ct}\r\n"));
        out.push_str(&format!(
            "Content-Disposition: {}; filename*=utf-8''{}\r\n",
            if a.is_inline { "inline" } else { "attachment" },
            percent_encode_2231(name)
        ));
        if let Some(cid) = a.content_id.as_deref().filter(|c| !c.is_empty()) {
            let cid = cid.trim_matches(['<', '>']).replace(['\r', '\n'], "");
            out.push_str(&format!("Content-ID: <{cid}>\r\n"));
        }
        out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        push_base64_lines(&mut out, &bytes);
    }
    out.push_str(&format!("\r\n--{boundary}--\r\n"));
    Ok(out.into_bytes())
}

fn push_header(out: &mut String, name: &str, value: &str) {
    // One line per header: unfold, and never let a value start a new header.
    let value: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value.trim());
    out.push_str("\r\n");
}

fn push_text_part(out: &mut String, content_type: &str, text: &str) {
    out.push_str(&format!(
        "Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    push_base64_lines(out, text.as_bytes());
}

fn push_base64_lines(out: &mut String, bytes: &[u8]) {
    let encoded = STANDARD.encode(bytes);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
}

/// `Name <address>, …` with non-ASCII names as RFC 2047 words and other names quoted.
fn address_list(list: &[GraphRecipient]) -> String {
    list.iter()
        .filter_map(|r| {
            let addr = r.email_address.address.as_deref()?.trim();
            if addr.is_empty() {
                return None;
            }
            Some(match r.email_address.name.as_deref().map(str::trim) {
                Some(n) if !n.is_empty() && n != addr => {
                    if n.is_ascii() {
                        format!("\"{}\" <{addr}>", n.replace(['\\', '"'], ""))
                    } else {
                        format!("{} <{addr}>", encode_word(n))
                    }
                }
                _ => addr.to_owned(),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An RFC 2047 `B` word for non-ASCII text; ASCII as is.
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        s.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(s.as_bytes()))
    }
}

/// RFC 2231 / 5987 value characters.
fn percent_encode_2231(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_golden_graph_batch_answer_decodes_into_the_batch_wire_shape() {
        let raw = include_str!("../../../fixtures/golden/microsoft/batch-response.json");
        let a: GraphBatchAnswer =
            serde_json::from_str(raw).expect("the golden $batch answer decodes");
        assert_eq!(a.responses.len(), 1);
        assert_eq!(
            (a.responses[0].id.as_str(), a.responses[0].status),
            ("1", 200)
        );
        assert!(a.responses[0].headers.contains_key("Content-Type"));
    }

    use super::*;

    fn recipient(name: &str, address: &str) -> GraphRecipient {
        GraphRecipient {
            email_address: GraphEmailAddress {
                name: Some(name.into()),
                address: Some(address.into()),
            },
        }
    }

    #[test]
    fn a_rebuilt_graph_message_keeps_transport_headers_and_drops_the_old_mime_structure() {
        let m = GraphMessage {
            id: "x".into(),
            conversation_id: None,
            received: None,
            sent: None,
            internet_message_id: Some("<a@b>".into()),
            subject: Some("ignored: header wins".into()),
            from: Some(recipient("Zoë", "zoe@example.org")),
            sender: None,
            to_recipients: vec![],
            cc_recipients: vec![],
            bcc_recipients: vec![],
            reply_to: vec![],
            has_attachments: true,
            body: Some(GraphBody {
                content_type: Some("html".into()),
                content: "<p>hi</p>".into(),
            }),
            internet_message_headers: vec![
                GraphHeader {
                    name: "Subject".into(),
                    value: "Hello\r\nBcc: evil@example.org".into(),
                },
                GraphHeader {
                    name: "Content-Type".into(),
                    value: "multipart/alternative; boundary=x".into(),
                },
            ],
        };
        let att = GraphAttachment {
            odata_type: Some("#microsoft.graph.fileAttachment".into()),
            name: Some("CV é.pdf".into()),
            content_type: Some("application/pdf".into()),
            is_inline: false,
            content_id: None,
            content_bytes: Some(STANDARD.encode(b"%PDF-1.4")),
        };
        let raw = String::from_utf8(build_mime(&m, &[att]).unwrap()).unwrap();
        assert!(
            raw.contains("Subject: Hello  Bcc: evil@example.org\r\n"),
            "{raw}"
        );
        assert!(!raw.contains("\nBcc:"), "{raw}");
        assert!(!raw.contains("boundary=x"), "{raw}");
        assert!(raw.contains("From: =?UTF-8?B?"), "{raw}");
        assert!(raw.contains("Message-ID: <a@b>\r\n"), "{raw}");
        assert!(raw.contains("filename*=utf-8''CV%20%C3%A9.pdf"), "{raw}");
        assert!(raw.contains("multipart/mixed"), "{raw}");
    }

    fn r(id: &str) -> MessageRef {
        MessageRef {
            id: id.into(),
            thread_id: None,
            received_at: None,
            headers: None,
        }
    }

    #[test]
    fn a_change_set_keeps_first_mention_order_and_lets_the_last_word_or_presence_win() {
        let mut c = ChangeSet::default();
        c.add(r("a"));
        c.remove("b".into(), false);
        c.add(r("c"));
        c.remove("a".into(), false);
        c.add(r("b"));
        c.remove("c".into(), true);
        let (added, removed) = c.finish();
        assert_eq!(added, [r("b"), r("c")]);
        assert_eq!(removed, ["a"]);
    }

    #[test]
    fn batch_answers_split_into_parts_with_crlf_or_bare_lf() {
        let body = "--b\r\nContent-Type: application/http\r\nContent-ID: <response-m1>\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n\r\n{}\r\n--b\nContent-Type: application/http\n\nHTTP/1.1 200 OK\nContent-Type: application/json\n\n{\"id\":\"x\"}\n--b--\n";
        let parts = batch_parts(body.as_bytes(), "b");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_id.as_deref(), Some("<response-m1>"));
        assert_eq!(parts[0].status, 429);
        assert_eq!(
            parts[0].retry_after,
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(parts[1].content_id, None);
        assert_eq!(parts[1].status, 200);
        assert_eq!(parts[1].body, b"{\"id\":\"x\"}");
        assert_eq!(
            multipart_boundary("multipart/mixed; boundary=\"batch_x\"").as_deref(),
            Some("batch_x")
        );
        assert_eq!(multipart_boundary("application/json"), None);
    }

    #[test]
    fn gmail_raw_decodes_with_or_without_padding() {
        assert_eq!(decode_base64url("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64url("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64url("-_8").unwrap(), [0xfb, 0xff]);
    }
}
