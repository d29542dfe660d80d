//! Sending mail as the recruiter: [`MailSender`], one type for both providers.
//!
//! The caller builds the RFC 5322 message (the mail core's composer) with a `Message-ID` it generated and
//! recorded **before** calling [`MailSender::send`]. After an uncertain outcome ([`SendError::Uncertain`]) the
//! caller looks the message up by that id ([`MailSender::find_by_message_id`]) before anything else, and
//! never resends blindly.
//!
//! | | Microsoft Graph | Gmail |
//! |---|---|---|
//! | send | create a draft from the MIME (`POST /me/messages`, base64 `text/plain`), set the deferred time if any (`PATCH`, `SystemTime 0x3FEF`), then `POST /me/messages/{id}/send` | `messages.send` with `raw` (base64url), or `/upload/gmail/v1/.../messages/send?uploadType=multipart` above [`GMAIL_SIMPLE_LIMIT`] |
//! | ids returned | the draft's immutable id (`Prefer: IdType="ImmutableId"` on every call) and `conversationId` | `id` and `threadId` of the sent message |
//! | reconcile | `GET /me/messages?$filter=internetMessageId eq '…'` | `messages.list?q=rfc822msgid:…` |
//!
//! **Why the draft flow on Graph, not `sendMail`.** `sendMail` answers 202 with no id (PROVIDERS.md §3.5), so
//! hirewire could not show the message's provider id or conversation at once; the draft's immutable id is the
//! id the message keeps in Sent Items (§14). It is also what makes "at most once" hold after a timeout: the
//! send is `POST .../{draft}/send`, and one draft can be sent only once, so a retry after an uncertain outcome
//! sends *the same draft* ([`Lookup::Unsent`], [`MailSender::send_draft`]) and cannot produce a second message.
//! Deferred send needs the draft too (`PATCH` of the extended property before `/send`).
//!
//! **Large messages.** Graph takes at most about 4 MB per request. When a message's base64 form is larger than
//! [`GRAPH_MIME_LIMIT`], its largest attachments are cut out of the MIME (byte ranges, nothing rebuilt), the
//! draft is created from the rest, and each file is attached through an upload session
//! (`createUploadSession`, chunked `PUT`) before `/send`. Gmail messages above [`GMAIL_SIMPLE_LIMIT`] go
//! through the multipart upload endpoint, up to [`GMAIL_UPLOAD_LIMIT`].
//!
//! **Errors** ([`SendError`]): `Retryable` (the provider surely did not take the message: 429 with its
//! `Retry-After`, 503, a connection never made, or a failure before the commit request), `Rejected` (will not
//! succeed as is: bad recipients, too large, invalid MIME), `TokenRejected` (refresh, then retry),
//! `NeedsReauthorization` (e.g. the grant lacks send permission), and `Uncertain` (the commit request timed
//! out or answered 500/502/504: the provider may have sent it).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::endpoints::Endpoints;
use crate::error::{ProviderError, ReauthReason};
use crate::http::{HttpClient, Prepared, Request, Response, api_error, retry_after};
use crate::pacing::{GmailMethod, Op, PaceKey, Pacer};
use crate::{Provider, Secret};

/// Largest base64 MIME body hirewire posts to Graph (Graph's request limit is about 4 MB).
pub const GRAPH_MIME_LIMIT: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Largest message sent through Gmail's plain `messages.send` (JSON `raw`); larger ones use `/upload`.
pub const GMAIL_SIMPLE_LIMIT: usize = 5 * 1024 * 1024 - 64 * 1024;
/// Largest message Gmail accepts at all (`maxSize` of the upload endpoint: 35 MB).
pub const GMAIL_UPLOAD_LIMIT: usize = 36_700_160;

/// Chunk size of Graph attachment uploads (a multiple of 320 KiB, under Graph's 4 MB per request).
pub const GRAPH_UPLOAD_CHUNK: usize = 9 * 320 * 1024;

const PREFER_IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

/// A message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The complete RFC 5322 message (CRLF or LF line ends), with `From`, recipients and the `Message-ID`.
    pub raw: &'a [u8],
    /// Gmail `threadId` of the conversation a reply belongs to (Gmail threads it only when this is set, the
    /// `In-Reply-To`/`References` name a message of that thread, and the subject matches). Ignored by Graph,
    /// which threads on the headers alone.
    pub gmail_thread_id: Option<&'a str>,
    /// Graph deferred send (`PidTagDeferredSendTime`): the provider holds the message until then. Gmail has
    /// no such parameter (§6.5): the caller's scheduler sends at the time instead, so this must be `None` for
    /// Gmail (a time given is refused with [`Rejection::Invalid`] rather than silently sent now).
    pub send_at: Option<Timestamp>,
}

/// What the provider says about a message it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Gmail message id; Graph immutable id (stable from draft to Sent Items).
    pub provider_message_id: String,
    /// Gmail `threadId`; Graph `conversationId`.
    pub thread_id: Option<String>,
}

/// Why a provider refuses a message for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No recipient, or one the provider cannot use.
    InvalidRecipients,
    /// Larger than the provider takes.
    TooLarge,
    /// The message (or the request) is malformed.
    Invalid,
    /// The provider refuses this account or message for another reason (policy, the draft is gone).
    Refused,
}

/// A failed send, by what the caller must do next.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not sent; try again later (after `retry_after` when the provider gave one).
    #[error("not sent, retry later ({detail}; retry after {retry_after:?})")]
    Retryable {
        /// The provider's `Retry-After` (Gmail's sending limit names a time instead: converted to a wait).
        retry_after: Option<Duration>,
        /// What happened (no token, no message content).
        detail: String,
        /// Graph: the draft already made for this message. Retry with [`MailSender::send_draft`] on it, so
        /// no second draft is made.
        draft_id: Option<String>,
    },
    /// Not sent, and sending it again as it is will fail the same way.
    #[error("rejected by the provider ({reason:?}): {detail}")]
    Rejected {
        /// The kind of refusal.
        reason: Rejection,
        /// The provider's words.
        detail: String,
    },
    /// Not sent: the access token was rejected. Refresh it and try again.
    #[error("access token rejected")]
    TokenRejected,
    /// Not sent: the grant must be authorized again (for example it lacks send permission).
    #[error("the grant needs reauthorization: {0:?}")]
    NeedsReauthorization(ReauthReason),
    /// The provider may or may not have sent it (timeout or 500/502/504 on the commit request). Look it up
    /// with [`MailSender::find_by_message_id`] before doing anything else.
    #[error("send outcome unknown: {detail}")]
    Uncertain {
        /// What happened.
        detail: String,
        /// Graph: the draft the message was in, so a conclusive "not sent" can send this same draft again.
        draft_id: Option<String>,
    },
}

impl SendError {
    /// Whether the provider surely did not send the message (the outbox may retry without a lookup).
    pub fn surely_not_sent(&self) -> bool {
        !matches!(self, SendError::Uncertain { .. })
    }

    fn from_provider(e: ProviderError, draft_id: Option<&str>) -> Self {
        match e {
            ProviderError::Throttled { retry_after } => SendError::Retryable {
                retry_after,
                detail: "throttled".into(),
                draft_id: draft_id.map(str::to_owned),
            },
            ProviderError::TokenRejected => SendError::TokenRejected,
            ProviderError::NeedsReauthorization { reason, .. } => {
                SendError::NeedsReauthorization(reason)
            }
            ProviderError::Transient(d) => SendError::Retryable {
                retry_after: None,
                detail: d,
                draft_id: draft_id.map(str::to_owned),
            },
            other => SendError::Rejected {
                reason: Rejection::Refused,
                detail: other.to_string(),
            },
        }
    }
}

/// One message found by [`MailSender::find_by_message_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    /// Gmail id; Graph immutable id.
    pub id: String,
    /// Gmail `threadId`; Graph `conversationId`.
    pub thread_id: Option<String>,
}

/// What a lookup by `Message-ID` says about a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The message is in the mailbox as sent (or, Graph, accepted and waiting for its deferred time): mark
    /// the send done with these ids.
    Found(Vec<FoundMessage>),
    /// Graph: only the draft exists, so it was not sent. Send this same draft ([`MailSender::send_draft`]):
    /// one draft can be sent only once, so this cannot make a duplicate.
    Unsent {
        /// The draft's immutable id.
        draft_id: String,
    },
    /// Nothing with this `Message-ID`: it was not sent; sending again is safe.
    NotFound,
    /// The provider cannot say (the search is refused for this grant, or the result is contradictory): do
    /// not resend; ask a person.
    Inconclusive(String),
}

/// Sends mail as one recruiter at Microsoft Graph or Gmail. Cheap to clone; the token is passed per call.
#[derive(Debug, Clone)]
pub struct MailSender {
    provider: Provider,
    endpoints: Endpoints,
    http: HttpClient,
    pacing: Option<(Pacer, PaceKey)>,
}

#[derive(Deserialize)]
struct GraphCreated {
    id: String,
    #[serde(rename = "conversationId")]
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
struct GmailSent {
    id: String,
    #[serde(rename = "threadId")]
    thread_id: Option<String>,
}

#[derive(Deserialize)]
struct GraphList {
    #[serde(default)]
    value: Vec<GraphListItem>,
}

#[derive(Deserialize)]
struct GraphListItem {
    id: String,
    #[serde(rename = "conversationId")]
    conversation_id: Option<String>,
    #[serde(rename = "isDraft", default)]
    is_draft: bool,
}

#[derive(Deserialize)]
struct GmailList {
    #[serde(default)]
    messages: Vec<GmailListItem>,
}

#[derive(Deserialize)]
struct GmailListItem {
    id: String,
    #[serde(rename = "threadId")]
    thread_id: Option<String>,
}

fn request(
    method: ::http::Method,
    url: &str,
    token: &Secret,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Request, SendError> {
    let mut b = ::http::Request::builder()
        .method(method)
        .uri(url)
        .header(::http::header::ACCEPT, "application/json")
        .header(
            ::http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()),
        );
    if let Some(ct) = content_type {
        b = b.header(::http::header::CONTENT_TYPE, ct);
    }
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).map_err(|e| SendError::Rejected {
        reason: Rejection::Invalid,
        detail: format!("building a request: {e}"),
    })
}

/// The provider's error words (code and message), for `detail`; never the request.
fn error_words(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = &v["error"];
    let code = e["code"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| e["errors"][0]["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let msg = e["message"].as_str().unwrap_or_default().to_owned();
    (code, msg)
}

/// Gmail's sending-limit message names the time to retry at ("… Retry after 2025-03-07T18:03:15.961Z").
fn gmail_retry_at(message: &str) -> Option<Duration> {
    let at: Timestamp = message
        .rsplit_once("Retry after ")?
        .1
        .trim()
        .trim_end_matches('.')
        .parse()
        .ok()?;
    let wait = at.as_millisecond() - Timestamp::now().as_millisecond();
    Some(Duration::from_millis(wait.max(0) as u64))
}

impl MailSender {
    /// A sender for `provider`'s mail API at `endpoints`.
    pub fn new(provider: Provider, endpoints: Endpoints, http: HttpClient) -> Self {
        MailSender {
            provider,
            endpoints,
            http,
            pacing: None,
        }
    }

    /// This sender with every request paced by `pacer` as the mailbox `key` (the same pacer and key as the
    /// mailbox's [`crate::MailReader`]): API quota, the mailbox's concurrency limit and throttling pauses
    /// apply, and a 429 pauses the mailbox for its `Retry-After`. Requests are never retried here (a retry of
    /// a send is the outbox's decision). This is API pacing; the per-mailbox *sending* rate (Exchange about
    /// 30 messages a minute) is the outbox's.
    pub fn with_pacer(mut self, pacer: Pacer, key: PaceKey) -> Self {
        self.pacing = Some((pacer, key));
        self
    }

    /// Whose mail API this sends through.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Classifies a non-2xx answer to a request. `commit`: the request that sends (a 500/502/504 there may
    /// come after the message went out).
    fn classify(&self, resp: &Response, commit: bool, draft_id: Option<&str>) -> SendError {
        let status = resp.status().as_u16();
        let (code, msg) = error_words(resp.body());
        let detail = if msg.is_empty() {
            format!("{status} {code}")
        } else {
            format!("{status} {code}: {msg}")
        };
        match status {
            429 | 503 => SendError::Retryable {
                retry_after: retry_after(resp.headers()).or_else(|| gmail_retry_at(&msg)),
                detail,
                draft_id: draft_id.map(str::to_owned),
            },
            403 if matches!(
                code.as_str(),
                "userRateLimitExceeded" | "rateLimitExceeded" | "dailyLimitExceeded"
            ) =>
            {
                SendError::Retryable {
                    retry_after: gmail_retry_at(&msg),
                    detail,
                    draft_id: draft_id.map(str::to_owned),
                }
            }
            500 | 502 | 504 if commit => SendError::Uncertain {
                detail,
                draft_id: draft_id.map(str::to_owned),
            },
            500..=599 => SendError::Retryable {
                retry_after: retry_after(resp.headers()),
                detail,
                draft_id: draft_id.map(str::to_owned),
            },
            413 => SendError::Rejected {
                reason: Rejection::TooLarge,
                detail,
            },
            400 if code == "ErrorInvalidRecipients"
                || msg.contains("Recipient")
                || msg.contains("Invalid To") =>
            {
                SendError::Rejected {
                    reason: Rejection::InvalidRecipients,
                    detail,
                }
            }
            400 => SendError::Rejected {
                reason: Rejection::Invalid,
                detail,
            },
            404 => SendError::Rejected {
                reason: Rejection::Refused,
                detail,
            },
            _ => SendError::from_provider(api_error(self.provider, status, resp.body()), draft_id),
        }
    }

    /// One try of a request. A failure without a response is `Retryable` when the connection was never made;
    /// otherwise `Uncertain` for the commit request and `Retryable` for the others (they send nothing).
    async fn once(
        &self,
        req: Request,
        commit: bool,
        draft_id: Option<&str>,
    ) -> Result<Response, SendError> {
        let prepared = Prepared::new(req).map_err(|e| SendError::from_provider(e, draft_id))?;
        let op = match self.provider {
            Provider::Microsoft => Op::Graph,
            Provider::Google => Op::Gmail(GmailMethod::MessagesSend, 1),
        };
        let _ticket = match &self.pacing {
            Some((pacer, key)) => Some(
                pacer
                    .acquire(key, op)
                    .await
                    .map_err(|e| SendError::from_provider(e, draft_id))?,
            ),
            None => None,
        };
        let sent = self.http.send_once(&prepared, 0).await;
        if let (Some((pacer, key)), Ok(resp)) = (&self.pacing, &sent)
            && resp.status() == 429
        {
            pacer.throttled(key, op.service(), retry_after(resp.headers()));
        }
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(resp),
            Ok(resp) => Err(self.classify(&resp, commit, draft_id)),
            Err(t) if t.retryable(false) || !commit => Err(SendError::Retryable {
                retry_after: None,
                detail: t.error.to_string(),
                draft_id: draft_id.map(str::to_owned),
            }),
            Err(t) => Err(SendError::Uncertain {
                detail: t.error.to_string(),
                draft_id: draft_id.map(str::to_owned),
            }),
        }
    }

    /// Sends `msg`. On `Err(Uncertain)` look the message up by its `Message-ID` before anything else.
    pub async fn send(&self, token: &Secret, msg: &Outgoing<'_>) -> Result<Sent, SendError> {
        match self.provider {
            Provider::Microsoft => self.graph_send(token, msg).await,
            Provider::Google => self.gmail_send(token, msg).await,
        }
    }

    async fn graph_send(&self, token: &Secret, msg: &Outgoing<'_>) -> Result<Sent, SendError> {
        let (raw, uploads) = if base64_len(msg.raw.len()) > GRAPH_MIME_LIMIT {
            split_large_attachments(msg.raw, GRAPH_MIME_LIMIT).ok_or_else(|| {
                SendError::Rejected {
                    reason: Rejection::TooLarge,
                    detail: format!(
                        "the message is {} bytes and its text and small attachments alone exceed what Microsoft 365 takes in one request",
                        msg.raw.len()
                    ),
                }
            })?
        } else {
            (msg.raw.to_vec(), Vec::new())
        };
        let b64 = STANDARD.encode(&raw);
        let base = &self.endpoints.graph;
        let created = self
            .once(
                request(
                    ::http::Method::POST,
                    &format!("{base}/v1.0/me/messages"),
                    token,
                    &[PREFER_IMMUTABLE],
                    Some("text/plain"),
                    b64.into_bytes(),
                )?,
                false,
                None,
            )
            .await?;
        let draft: GraphCreated =
            serde_json::from_slice(created.body()).map_err(|e| SendError::Retryable {
                retry_after: None,
                detail: format!("unexpected draft body: {e}"),
                draft_id: None,
            })?;
        for file in &uploads {
            self.graph_upload(token, &draft.id, file).await?;
        }
        if let Some(at) = msg.send_at {
            let body = json!({"singleValueExtendedProperties": [
                {"id": "SystemTime 0x3FEF", "value": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}
            ]});
            self.once(
                request(
                    ::http::Method::PATCH,
                    &format!("{base}/v1.0/me/messages/{}", draft.id),
                    token,
                    &[PREFER_IMMUTABLE],
                    Some("application/json"),
                    serde_json::to_vec(&body).unwrap_or_default(),
                )?,
                false,
                Some(&draft.id),
            )
            .await?;
        }
        self.send_draft(token, &draft.id).await?;
        Ok(Sent {
            provider_message_id: draft.id,
            thread_id: draft.conversation_id,
        })
    }

    /// Graph: attaches a large file to a draft through an upload session (chunks of [`GRAPH_UPLOAD_CHUNK`]
    /// bytes to the pre-authenticated `uploadUrl`, which gets no bearer token).
    async fn graph_upload(
        &self,
        token: &Secret,
        draft_id: &str,
        file: &LargeFile,
    ) -> Result<(), SendError> {
        let url = format!(
            "{}/v1.0/me/messages/{}/attachments/createUploadSession",
            self.endpoints.graph,
            url::form_urlencoded::byte_serialize(draft_id.as_bytes()).collect::<String>()
        );
        let body = json!({"AttachmentItem": {
            "attachmentType": "file",
            "name": file.name,
            "size": file.bytes.len(),
            "contentType": file.content_type,
        }});
        let resp = self
            .once(
                request(
                    ::http::Method::POST,
                    &url,
                    token,
                    &[PREFER_IMMUTABLE],
                    Some("application/json"),
                    serde_json::to_vec(&body).unwrap_or_default(),
                )?,
                false,
                Some(draft_id),
            )
            .await?;
        let session: UploadSession =
            serde_json::from_slice(resp.body()).map_err(|e| SendError::Retryable {
                retry_after: None,
                detail: format!("unexpected upload session body: {e}"),
                draft_id: Some(draft_id.to_owned()),
            })?;
        let total = file.bytes.len();
        let mut start = 0;
        while start < total {
            let end = (start + GRAPH_UPLOAD_CHUNK).min(total);
            let req = ::http::Request::put(&session.upload_url)
                .header(::http::header::CONTENT_TYPE, "application/octet-stream")
                .header(
                    ::http::header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{total}", end - 1),
                )
                .body(file.bytes[start..end].to_vec())
                .map_err(|e| SendError::Rejected {
                    reason: Rejection::Invalid,
                    detail: format!("building an upload request: {e}"),
                })?;
            self.once(req, false, Some(draft_id)).await?;
            start = end;
        }
        Ok(())
    }

    /// Graph: sends an existing draft (`POST /me/messages/{id}/send`). Used by [`MailSender::send`], and after
    /// [`Lookup::Unsent`] to send the same draft again.
    pub async fn send_draft(&self, token: &Secret, draft_id: &str) -> Result<(), SendError> {
        let url = format!(
            "{}/v1.0/me/messages/{}/send",
            self.endpoints.graph,
            url::form_urlencoded::byte_serialize(draft_id.as_bytes()).collect::<String>()
        );
        // An empty body with `Content-Length: 0`: some stacks answer 411 without it (§3.6).
        self.once(
            request(
                ::http::Method::POST,
                &url,
                token,
                &[PREFER_IMMUTABLE, ("Content-Length", "0")],
                None,
                Vec::new(),
            )?,
            true,
            Some(draft_id),
        )
        .await?;
        Ok(())
    }

    async fn gmail_send(&self, token: &Secret, msg: &Outgoing<'_>) -> Result<Sent, SendError> {
        if msg.send_at.is_some() {
            return Err(SendError::Rejected {
                reason: Rejection::Invalid,
                detail: "Gmail has no deferred send: schedule the send in hirewire instead".into(),
            });
        }
        if msg.raw.len() > GMAIL_UPLOAD_LIMIT {
            return Err(SendError::Rejected {
                reason: Rejection::TooLarge,
                detail: format!(
                    "the message is {} bytes; Gmail takes at most {GMAIL_UPLOAD_LIMIT}",
                    msg.raw.len()
                ),
            });
        }
        let base = &self.endpoints.gmail;
        let req = if msg.raw.len() <= GMAIL_SIMPLE_LIMIT {
            let mut body = json!({"raw": URL_SAFE_NO_PAD.encode(msg.raw)});
            if let Some(t) = msg.gmail_thread_id {
                body["threadId"] = json!(t);
            }
            request(
                ::http::Method::POST,
                &format!("{base}/gmail/v1/users/me/messages/send"),
                token,
                &[],
                Some("application/json"),
                serde_json::to_vec(&body).unwrap_or_default(),
            )?
        } else {
            // multipart/related: JSON metadata, then the message. The boundary is random and checked
            // against the message so it cannot occur inside it.
            let meta = match msg.gmail_thread_id {
                Some(t) => json!({"threadId": t}),
                None => json!({}),
            };
            let mut boundary = format!("hirewire-{}", rand::random::<u64>());
            while msg
                .raw
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
            {
                boundary = format!("hirewire-{}", rand::random::<u64>());
            }
            let mut body = Vec::with_capacity(msg.raw.len() + 512);
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
            body.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(msg.raw);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            request(
                ::http::Method::POST,
                &format!("{base}/upload/gmail/v1/users/me/messages/send?uploadType=multipart"),
                token,
                &[],
                Some(&format!("multipart/related; boundary={boundary}")),
                body,
            )?
        };
        let resp = self.once(req, true, None).await?;
        let sent: GmailSent =
            serde_json::from_slice(resp.body()).map_err(|e| SendError::Uncertain {
                detail: format!("unreadable answer to a send: {e}"),
                draft_id: None,
            })?;
        Ok(Sent {
            provider_message_id: sent.id,
            thread_id: sent.thread_id,
        })
    }

    /// Looks a message up by its `Message-ID` (with or without angle brackets), to settle an uncertain send.
    /// Errors are failures of the lookup itself (throttled, token rejected, …): try the lookup again later.
    pub async fn find_by_message_id(
        &self,
        token: &Secret,
        message_id: &str,
    ) -> Result<Lookup, ProviderError> {
        let bare = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        if bare.is_empty() || bare.contains(['\r', '\n', '\'', ' ']) {
            return Ok(Lookup::Inconclusive(format!(
                "'{bare}' cannot be searched for"
            )));
        }
        match self.provider {
            Provider::Microsoft => {
                let filter = format!("internetMessageId eq '<{bare}>'");
                let url = format!(
                    "{}/v1.0/me/messages?$filter={}&$select=id,conversationId,isDraft&$top=10",
                    self.endpoints.graph,
                    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
                );
                let resp = self
                    .http
                    .get(&url, Some(token), &[PREFER_IMMUTABLE])
                    .await?;
                if !resp.status().is_success() {
                    return lookup_failure(self.provider, &resp);
                }
                let list: GraphList = crate::http::parse_json(&url, resp.body())?;
                let (drafts, sent): (Vec<_>, Vec<_>) =
                    list.value.into_iter().partition(|m| m.is_draft);
                Ok(match (sent.is_empty(), drafts.len()) {
                    (false, _) => Lookup::Found(
                        sent.into_iter()
                            .map(|m| FoundMessage {
                                id: m.id,
                                thread_id: m.conversation_id,
                            })
                            .collect(),
                    ),
                    (true, 0) => Lookup::NotFound,
                    (true, 1) => Lookup::Unsent {
                        draft_id: drafts.into_iter().next().map(|d| d.id).unwrap_or_default(),
                    },
                    (true, n) => Lookup::Inconclusive(format!(
                        "{n} drafts carry this Message-ID and none was sent"
                    )),
                })
            }
            Provider::Google => {
                let q = format!("rfc822msgid:<{bare}>");
                let url = format!(
                    "{}/gmail/v1/users/me/messages?q={}&includeSpamTrash=true&maxResults=10",
                    self.endpoints.gmail,
                    url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
                );
                let resp = self.http.get(&url, Some(token), &[]).await?;
                if !resp.status().is_success() {
                    return lookup_failure(self.provider, &resp);
                }
                let list: GmailList = crate::http::parse_json(&url, resp.body())?;
                Ok(if list.messages.is_empty() {
                    Lookup::NotFound
                } else {
                    Lookup::Found(
                        list.messages
                            .into_iter()
                            .map(|m| FoundMessage {
                                id: m.id,
                                thread_id: m.thread_id,
                            })
                            .collect(),
                    )
                })
            }
        }
    }
}

#[derive(Deserialize)]
struct UploadSession {
    #[serde(rename = "uploadUrl")]
    upload_url: String,
}

/// An attachment taken out of a message to go through a Graph upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LargeFile {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Takes attachments out of a `multipart/mixed` message, largest first, until its base64 form fits in
/// `limit`: returns the message without them and the files. The message is cut, not rebuilt: each removed
/// part goes with the delimiter line before it (mail-parser gives the parts' byte ranges), so every other
/// byte, headers included, stays as composed. `None` when the root is not `multipart/mixed` or the rest
/// alone is still too large.
fn split_large_attachments(raw: &[u8], limit: usize) -> Option<(Vec<u8>, Vec<LargeFile>)> {
    use mail_parser::{MimeHeaders, PartType};
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let root = msg.root_part();
    let ct = root.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("mixed"))
    {
        return None;
    }
    let PartType::Multipart(children) = &root.body else {
        return None;
    };
    // (removed range, size, file) for every attachment after the first part.
    let mut candidates = Vec::new();
    for w in children.windows(2) {
        let (prev, part) = (msg.part(w[0])?, msg.part(w[1])?);
        if part.is_message() || matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let Some(name) = part.attachment_name() else {
            continue;
        };
        let content_type = part
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
            .unwrap_or_else(|| "application/octet-stream".into());
        let range = prev.raw_end_offset() as usize..part.raw_end_offset() as usize;
        candidates.push((
            range,
            LargeFile {
                name: name.to_owned(),
                content_type,
                bytes: part.contents().to_vec(),
            },
        ));
    }
    candidates.sort_by_key(|(r, _)| std::cmp::Reverse(r.len()));
    let mut size = raw.len();
    let mut taken = Vec::new();
    for (range, file) in candidates {
        if base64_len(size) <= limit {
            break;
        }
        size -= range.len();
        taken.push((range, file));
    }
    if base64_len(size) > limit {
        return None;
    }
    // Cut from the end so earlier ranges stay valid; upload in the message's order.
    taken.sort_by_key(|(r, _)| r.start);
    let mut out = raw.to_vec();
    for (range, _) in taken.iter().rev() {
        out.drain(range.clone());
    }
    Some((out, taken.into_iter().map(|(_, f)| f).collect()))
}

/// A lookup the provider refused (400/403 other than auth): the search cannot settle it. Auth and throttling
/// stay errors, so the caller refreshes or waits and looks again.
fn lookup_failure(provider: Provider, resp: &Response) -> Result<Lookup, ProviderError> {
    let status = resp.status().as_u16();
    let err = api_error(provider, status, resp.body());
    match err {
        ProviderError::Protocol(_) if matches!(status, 400 | 403) => {
            let (code, msg) = error_words(resp.body());
            Ok(Lookup::Inconclusive(format!("{status} {code}: {msg}")))
        }
        ProviderError::Protocol(_) if status >= 500 => Err(ProviderError::Transient(format!(
            "message lookup answered {status}"
        ))),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmails_retry_after_time_becomes_a_wait() {
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let msg = format!("User-rate limit exceeded.  Retry after {later}");
        let wait = gmail_retry_at(&msg).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(
            gmail_retry_at("Too many concurrent requests for user."),
            None
        );
    }

    #[test]
    fn only_uncertain_errors_may_have_sent_the_message() {
        assert!(
            !SendError::Uncertain {
                detail: String::new(),
                draft_id: None
            }
            .surely_not_sent()
        );
        assert!(SendError::TokenRejected.surely_not_sent());
        assert!(
            SendError::Retryable {
                retry_after: None,
                detail: String::new(),
                draft_id: None,
            }
            .surely_not_sent()
        );
    }

    #[test]
    fn the_golden_send_bodies_decode_into_the_adapters_wire_types() {
        let sent: GmailSent = serde_json::from_str(include_str!(
            "../../../fixtures/golden/google/gmail-send.json"
        ))
        .unwrap();
        assert_eq!(sent.id, "18f2d3e4f5a6b7c8");
        assert_eq!(sent.thread_id.as_deref(), Some("18f2c1a2b3c4d5e6"));
        let draft: GraphCreated = serde_json::from_str(include_str!(
            "../../../fixtures/golden/microsoft/message.json"
        ))
        .unwrap();
        assert!(draft.id.starts_with("AAMk"));
        assert!(draft.conversation_id.is_some());
        let item: GraphListItem = serde_json::from_str(include_str!(
            "../../../fixtures/golden/microsoft/message.json"
        ))
        .unwrap();
        assert!(!item.is_draft);
        let session: UploadSession = serde_json::from_str(include_str!(
            "../../../fixtures/golden/microsoft/upload-session.json"
        ))
        .unwrap();
        assert!(session.upload_url.starts_with("https://"));
        let draft: serde_json::Value = serde_json::from_str(include_str!(
            "../../../fixtures/golden/google/gmail-draft.json"
        ))
        .unwrap();
        let in_draft: GmailSent = serde_json::from_value(draft["message"].clone()).unwrap();
        assert!(in_draft.thread_id.is_some());
        let list: GmailList = serde_json::from_str(include_str!(
            "../../../fixtures/golden/google/gmail-messages-list.json"
        ))
        .unwrap();
        assert_eq!(list.messages.len(), 1);
        assert_eq!(
            error_words(include_bytes!(
                "../../../fixtures/golden/microsoft/send-error-invalid-mime.json"
            )),
            (
                "ErrorMimeContentInvalidBase64String".to_owned(),
                "Invalid base64 string for MIME content.".to_owned()
            )
        );
        assert_eq!(
            error_words(include_bytes!(
                "../../../fixtures/golden/google/gmail-send-error-no-recipient.json"
            ))
            .1,
            "Recipient address required"
        );
    }

    fn mixed(files: &[(&str, usize)]) -> Vec<u8> {
        let mut m = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: s\r\nMessage-ID: <x@y>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nHello\r\n".to_vec();
        for (name, n) in files {
            m.extend_from_slice(
                format!("--BB\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes(),
            );
            m.extend_from_slice(STANDARD.encode(vec![b'z'; *n]).as_bytes());
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"--BB--\r\n");
        m
    }

    #[test]
    fn large_attachments_are_cut_out_whole_and_the_rest_stays_byte_for_byte() {
        let raw = mixed(&[("small.txt", 100), ("big.bin", 3000), ("mid.bin", 1000)]);
        let (rest, files) = split_large_attachments(&raw, base64_len(raw.len()) - 100).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "big.bin");
        assert_eq!(files[0].bytes, vec![b'z'; 3000]);
        assert_eq!(rest, mixed(&[("small.txt", 100), ("mid.bin", 1000)]));
        let (rest, files) = split_large_attachments(&raw, 2000).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["big.bin", "mid.bin"]);
        assert_eq!(rest, mixed(&[("small.txt", 100)]));
        assert!(
            split_large_attachments(&raw, 100).is_none(),
            "the text alone is too large"
        );
    }
}
