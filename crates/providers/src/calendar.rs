//! The recruiter's work calendar for the Scheduler: [`CalendarClient`], one type for both providers.
//!
//! | need | Microsoft Graph | Google Calendar |
//! |---|---|---|
//! | free/busy ([`CalendarClient::busy`]) | `POST /me/calendar/getSchedule`, the window split into chunks of at most [`GRAPH_SCHEDULE_MAX_DAYS`] days, times requested and answered in UTC (`Prefer: outlook.timezone="UTC"`); `scheduleItems`, with `availabilityView` only as a fallback | `POST /calendar/v3/freeBusy` (busy blocks only: Google reports no tentative) |
//! | book ([`CalendarClient::create_event`]) | `POST /me/events` with `transactionId` = the booking's idempotency key; Graph invites the attendees itself | `events.insert?sendUpdates=all&conferenceDataVersion=1` with a client `id` derived from the key ([`google_event_id`]) |
//! | reschedule ([`CalendarClient::update_event_time`]) | `PATCH /me/events/{id}` (Graph sends the update) | `events.patch?sendUpdates=all` |
//! | the calendar's events ([`CalendarClient::list_events`], [`CalendarClient::get_event`]) | `calendarView`, `GET /me/events/{id}` | `events.list` (`singleEvents`, by start), `events.get` |
//! | what changed ([`CalendarClient::changes`]) | `calendarView/delta` for the window, to its `@odata.deltaLink` | `events.list` for the window, then with `syncToken`, to its `nextSyncToken` |
//! | cancel ([`CalendarClient::cancel_event`]) | `DELETE /me/events/{id}` (the organizer's delete sends the cancellation) | `events.delete?sendUpdates=all` |
//!
//! **Idempotent create.** A booking is created at most once per idempotency key, even when hirewire crashes after
//! the provider created the event and retries:
//! - Graph: the key is the event's `transactionId`. Graph does not document what a repeated one answers
//!   (PROVIDERS.md §3.10); the sandbox's default (and the one this adapter is tested against) answers with the
//!   original event and sends no second invitation. A `409` (the sandbox's `"conflict"` switch) is reported as
//!   [`ProviderError::Protocol`]: the event exists but this adapter cannot look it up by transaction id.
//! - Google: the event `id` is [`google_event_id`] of the key, so a repeat answers `409 duplicate`; the adapter then
//!   reads that id with `events.get` and returns it. The key is also stored as the private extended property
//!   `hirewireIdempotencyKey`, and a duplicate whose property names another key is an error, not a match.
//!
//! A repeat whose event was cancelled since is [`ProviderError::EventGone`] on both providers: the booking's event
//! is gone and the same key cannot make it again (Google never reuses an id, even of a deleted event).
//!
//! Every call goes through [`HttpClient`] (timeouts, retries, `Retry-After`) and is retried as idempotent: the
//! creates carry their idempotency key, updates set absolute times, deletes of a gone event succeed. Errors:
//! `TokenRejected` (401), `NeedsReauthorization(MissingPermissions)` (403 for a missing scope), `Throttled`
//! (429, Google rate-limit 403s), [`ProviderError::CalendarUnavailable`] (free/busy of an address the provider
//! cannot resolve) and [`ProviderError::EventGone`] (updating or reading an event that was deleted).
//!
//! Graph calls carry `Prefer: IdType="ImmutableId"`, so event ids stay valid. Times are plain [`Timestamp`]s (UTC
//! instants); an event's `time_zone` is an IANA name, sent as is to both providers and resolved with the system's
//! time zone database (`/usr/share/zoneinfo`): a server image without it cannot create events in named zones.
//!
//! Wire structs are private to this module; everything returned is a plain Rust type.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::endpoints::Endpoints;
use crate::error::ProviderError;
use crate::http::{HttpClient, Response, api_error, json_or_api_error};
use crate::mail::graph_sync_state_gone;
use crate::pacing::{Op, PaceKey, Pacer, send_paced};
use crate::{Provider, Secret};

/// The longest window one Graph `getSchedule` call accepts (PROVIDERS.md §3.8).
pub const GRAPH_SCHEDULE_MAX_DAYS: i64 = 62;
/// `availabilityViewInterval` asked of Graph, in minutes (used only when `scheduleItems` are missing).
const GRAPH_VIEW_INTERVAL_MIN: i64 = 15;
const PREFER_IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");
const PREFER_UTC: (&str, &str) = ("Prefer", "outlook.timezone=\"UTC\"");
const PREFER_IMMUTABLE_UTC: (&str, &str) =
    ("Prefer", "IdType=\"ImmutableId\", outlook.timezone=\"UTC\"");
/// Private extended property (Google) holding the booking's idempotency key.
const GOOGLE_KEY_PROPERTY: &str = "hirewireIdempotencyKey";
/// Page size of [`CalendarClient::list_events`].
const LIST_PAGE: u32 = 250;
/// Page size of a Google sync round (`events.list` allows up to 2,500).
const SYNC_PAGE: u32 = 2500;

/// How a busy block counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BusyStatus {
    /// Busy (Google reports every block as busy, out of office included).
    Busy,
    /// Tentatively busy. Only Graph reports it; the Scheduler decides whether it blocks a slot.
    Tentative,
    /// Out of office (Graph `oof`).
    OutOfOffice,
}

/// A busy block, in UTC instants, clipped to the asked window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Busy {
    /// Start (inclusive).
    pub start: Timestamp,
    /// End (exclusive).
    pub end: Timestamp,
    /// How it counts.
    pub status: BusyStatus,
}

/// Where an interview takes place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A phone call; the text (number or instructions) becomes the event's location.
    Phone(String),
    /// A video meeting made by the provider: Microsoft Teams (Graph), Google Meet (Google).
    Video,
    /// In person, at this address.
    Address(String),
}

/// The candidate invited to the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// An interview to put on the recruiter's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The booking id. The same key never creates a second event (see the module docs).
    pub idempotency_key: String,
    /// Title.
    pub subject: String,
    /// Description, plain text.
    pub body_text: String,
    /// Start instant.
    pub start: Timestamp,
    /// End instant.
    pub end: Timestamp,
    /// IANA time zone the event is shown in (`Europe/Paris`).
    pub time_zone: String,
    /// The candidate, invited by the provider.
    pub attendee: Attendee,
    /// Where.
    pub location: Location,
}

/// What the provider made of a [`NewEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedEvent {
    /// The provider's event id (Graph immutable id; Google event id). Pass it to update and cancel.
    pub provider_event_id: String,
    /// The iCalendar UID the invitations carry: an "Add to calendar" file must reuse it.
    pub ical_uid: String,
    /// The video meeting's join URL (Teams or Meet), when there is one. Google may answer a Meet request as
    /// `pending`; then it is `None` here and [`CalendarClient::get_event`] has it later.
    pub join_url: Option<String>,
}

/// An event as it is now on the provider's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarEvent {
    /// The provider's event id.
    pub provider_event_id: String,
    /// The iCalendar UID.
    pub ical_uid: String,
    /// Start instant.
    pub start: Timestamp,
    /// End instant.
    pub end: Timestamp,
    /// The join URL, if any.
    pub join_url: Option<String>,
    /// Cancelled (Google keeps deleted events readable with `status: "cancelled"`).
    pub cancelled: bool,
    /// Attendee addresses.
    pub attendees: Vec<String>,
}

/// One page of [`CalendarClient::list_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    /// The events of this page, by start.
    pub events: Vec<CalendarEvent>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<EventsCursor>,
}

/// Where the next page of [`CalendarClient::list_events`] starts (Graph `@odata.nextLink`, Google
/// `nextPageToken`). Opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsCursor(String);

/// What [`CalendarClient::changes`] found: how many entries changed in the round, and where the next round starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarChanges {
    /// Entries the round reported (created, updated or removed events; every event of the window on a first round).
    pub changed: usize,
    /// Where the next round starts.
    pub cursor: ChangesCursor,
}

/// Where the next round of [`CalendarClient::changes`] starts (Graph `@odata.deltaLink`, Google `nextSyncToken`).
/// Opaque; never shown (a Graph delta link is a URL, not a secret, but it is nobody's business).
#[derive(Clone, PartialEq, Eq)]
pub struct ChangesCursor(String);

impl std::fmt::Debug for ChangesCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangesCursor(..)")
    }
}

/// The Google event id for an idempotency key: the SHA-256 of `hirewire-event:` followed by the key, written in
/// base32hex (RFC 4648 §7, lowercase, no padding). That is 52 characters of `0`–`9` and `a`–`v`, inside what Google
/// accepts (base32hex, 5–1024 characters), the same for the same key on every run and every machine, and without
/// collisions in practice (256 bits, where Google itself may not detect them).
pub fn google_event_id(idempotency_key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"hirewire-event:")
        .chain_update(idempotency_key.as_bytes())
        .finalize();
    base32hex(&digest)
}

fn base32hex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// One recruiter's calendar at Microsoft Graph or Google Calendar. Cheap to clone. The access token is passed to
/// each call, so the caller can refresh it between calls (after [`ProviderError::TokenRejected`]).
#[derive(Debug, Clone)]
pub struct CalendarClient {
    provider: Provider,
    endpoints: Endpoints,
    http: HttpClient,
    pacing: Option<(Pacer, PaceKey)>,
}

impl CalendarClient {
    /// A client for `provider`'s calendar API at `endpoints`.
    pub fn new(provider: Provider, endpoints: Endpoints, http: HttpClient) -> Self {
        CalendarClient {
            provider,
            endpoints,
            http,
            pacing: None,
        }
    }

    /// This client with every request paced by `pacer` as the mailbox `key` (see [`crate::pacing`]; for
    /// Microsoft, use the key of the mailbox's [`crate::MailReader`]: Outlook's limits cover mail and calendar).
    /// Retries are then the pacer's. Without it (the default) requests go straight to the HTTP client.
    pub fn with_pacer(mut self, pacer: Pacer, key: PaceKey) -> Self {
        self.pacing = Some((pacer, key));
        self
    }

    /// Whose calendar API this talks to.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The busy blocks of `calendar_address` between `window_start` and `window_end`, in UTC, clipped to the window,
    /// sorted by start. The address is the recruiter's own or a colleague's in the same tenant / domain. An address
    /// the provider cannot resolve is [`ProviderError::CalendarUnavailable`].
    ///
    /// Graph: one `getSchedule` per [`GRAPH_SCHEDULE_MAX_DAYS`]-day chunk; `busy`, `tentative` and `oof` items (an
    /// `unknown` status counts as busy; `free` and `workingElsewhere` do not block). Google: one `freeBusy.query`;
    /// every block is [`BusyStatus::Busy`] (Google merges busy and out-of-office events and skips tentative ones).
    pub async fn busy(
        &self,
        token: &Secret,
        calendar_address: &str,
        window_start: Timestamp,
        window_end: Timestamp,
    ) -> Result<Vec<Busy>, ProviderError> {
        if window_end <= window_start {
            return Ok(Vec::new());
        }
        let mut out = match self.provider {
            Provider::Microsoft => {
                let chunk = SignedDuration::from_hours(24 * GRAPH_SCHEDULE_MAX_DAYS);
                let mut out = Vec::new();
                let mut from = window_start;
                while from < window_end {
                    let to = from
                        .checked_add(chunk)
                        .map_or(window_end, |t| t.min(window_end));
                    out.extend(
                        self.graph_schedule(token, calendar_address, from, to)
                            .await?,
                    );
                    from = to;
                }
                out
            }
            Provider::Google => {
                self.google_freebusy(token, calendar_address, window_start, window_end)
                    .await?
            }
        };
        // Clip to the window; an event across a chunk boundary is reported by both chunks.
        for b in &mut out {
            b.start = b.start.max(window_start);
            b.end = b.end.min(window_end);
        }
        out.retain(|b| b.start < b.end);
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Puts `event` on the recruiter's calendar with the candidate as attendee; the provider sends the invitation.
    /// A repeat with the same [`NewEvent::idempotency_key`] returns the event already made (see the module docs).
    pub async fn create_event(
        &self,
        token: &Secret,
        event: &NewEvent,
    ) -> Result<CreatedEvent, ProviderError> {
        let tz = time_zone(&event.time_zone)?;
        if event.end <= event.start {
            return Err(ProviderError::Protocol(
                "an event must end after it starts".into(),
            ));
        }
        match self.provider {
            Provider::Microsoft => {
                let (location, online) = match &event.location {
                    Location::Phone(p) => (Some(p.as_str()), false),
                    Location::Address(a) => (Some(a.as_str()), false),
                    Location::Video => (None, true),
                };
                let body = GraphNewEvent {
                    subject: &event.subject,
                    body: GraphBodyOut {
                        content_type: "text",
                        content: &event.body_text,
                    },
                    start: graph_time(event.start, &tz, &event.time_zone)?,
                    end: graph_time(event.end, &tz, &event.time_zone)?,
                    location: location.map(|d| GraphLocationOut { display_name: d }),
                    attendees: vec![GraphAttendeeOut {
                        email_address: GraphAddressOut {
                            address: &event.attendee.email,
                            name: &event.attendee.name,
                        },
                        kind: "required",
                    }],
                    is_online_meeting: online,
                    online_meeting_provider: online.then_some("teamsForBusiness"),
                    transaction_id: &event.idempotency_key,
                };
                let url = self.graph_url(&["me", "events"])?;
                let resp = self
                    .send(
                        ::http::Method::POST,
                        &url,
                        token,
                        &[PREFER_IMMUTABLE],
                        Some(json_body(&body)?),
                    )
                    .await?;
                if resp.status() == 409 {
                    return Err(ProviderError::Protocol(
                        "Graph refused a repeated transactionId: the event exists but cannot be looked up by it"
                            .into(),
                    ));
                }
                let e: GraphEvent = self.json_or_error(&url, resp)?;
                if e.is_cancelled {
                    // A repeat answered with the original event, cancelled since.
                    return Err(ProviderError::EventGone {
                        provider: Provider::Microsoft,
                    });
                }
                Ok(e.into_created())
            }
            Provider::Google => {
                let id = google_event_id(&event.idempotency_key);
                let (location, conference) = match &event.location {
                    Location::Phone(p) => (Some(p.as_str()), None),
                    Location::Address(a) => (Some(a.as_str()), None),
                    Location::Video => (
                        None,
                        Some(GoogleConferenceOut {
                            create_request: GoogleCreateRequestOut {
                                // Makes the Meet creation itself idempotent too.
                                request_id: id.clone(),
                                conference_solution_key: GoogleSolutionKey {
                                    kind: "hangoutsMeet",
                                },
                            },
                        }),
                    ),
                };
                let body = GoogleNewEvent {
                    id: &id,
                    summary: &event.subject,
                    description: &event.body_text,
                    start: google_time(event.start, &tz, &event.time_zone)?,
                    end: google_time(event.end, &tz, &event.time_zone)?,
                    location,
                    attendees: vec![GoogleAttendeeOut {
                        email: &event.attendee.email,
                        display_name: &event.attendee.name,
                    }],
                    conference_data: conference,
                    extended_properties: GoogleExtendedOut {
                        private: HashMap::from([(
                            GOOGLE_KEY_PROPERTY,
                            event.idempotency_key.as_str(),
                        )]),
                    },
                };
                let url = self.google_url(
                    &["events"],
                    &[("sendUpdates", "all"), ("conferenceDataVersion", "1")],
                )?;
                let resp = self
                    .send(
                        ::http::Method::POST,
                        &url,
                        token,
                        &[],
                        Some(json_body(&body)?),
                    )
                    .await?;
                if resp.status() == 409 && google_reason(resp.body()) == "duplicate" {
                    // Created before (a retry after a crash): that event is the answer.
                    let existing = self.google_get(token, &id).await?;
                    let owner = existing
                        .extended_properties
                        .as_ref()
                        .and_then(|p| p.private.get(GOOGLE_KEY_PROPERTY));
                    if owner.is_some_and(|k| *k != event.idempotency_key) {
                        return Err(ProviderError::Protocol(
                            "Google event id collision: the id belongs to another booking".into(),
                        ));
                    }
                    if existing.status.as_deref() == Some("cancelled") {
                        return Err(ProviderError::EventGone {
                            provider: Provider::Google,
                        });
                    }
                    return Ok(existing.into_created());
                }
                let e: GoogleEvent = self.json_or_error(&url, resp)?;
                Ok(e.into_created())
            }
        }
    }

    /// Moves the event to `start`–`end` (shown in the IANA zone `time_zone`), in place; the attendee gets the
    /// update. A deleted event is [`ProviderError::EventGone`].
    pub async fn update_event_time(
        &self,
        token: &Secret,
        provider_event_id: &str,
        start: Timestamp,
        end: Timestamp,
        time_zone_name: &str,
    ) -> Result<(), ProviderError> {
        let tz = time_zone(time_zone_name)?;
        if end <= start {
            return Err(ProviderError::Protocol(
                "an event must end after it starts".into(),
            ));
        }
        let (url, body, headers): (String, Vec<u8>, &[(&str, &str)]) = match self.provider {
            Provider::Microsoft => (
                self.graph_url(&["me", "events", provider_event_id])?,
                json_body(&GraphTimes {
                    start: graph_time(start, &tz, time_zone_name)?,
                    end: graph_time(end, &tz, time_zone_name)?,
                })?,
                &[PREFER_IMMUTABLE],
            ),
            Provider::Google => (
                self.google_url(&["events", provider_event_id], &[("sendUpdates", "all")])?,
                json_body(&GoogleTimes {
                    start: google_time(start, &tz, time_zone_name)?,
                    end: google_time(end, &tz, time_zone_name)?,
                })?,
                &[],
            ),
        };
        let resp = self
            .send(::http::Method::PATCH, &url, token, headers, Some(body))
            .await?;
        if self.event_gone(&resp) {
            return Err(ProviderError::EventGone {
                provider: self.provider,
            });
        }
        if resp.status().is_success() {
            return Ok(());
        }
        Err(api_error(
            self.provider,
            resp.status().as_u16(),
            resp.body(),
        ))
    }

    /// Deletes the event; the provider sends the attendee a cancellation. An event already gone is `Ok`.
    pub async fn cancel_event(
        &self,
        token: &Secret,
        provider_event_id: &str,
    ) -> Result<(), ProviderError> {
        let (url, headers): (String, &[(&str, &str)]) = match self.provider {
            Provider::Microsoft => (
                self.graph_url(&["me", "events", provider_event_id])?,
                &[PREFER_IMMUTABLE],
            ),
            Provider::Google => (
                self.google_url(&["events", provider_event_id], &[("sendUpdates", "all")])?,
                &[],
            ),
        };
        let resp = self
            .send(::http::Method::DELETE, &url, token, headers, None)
            .await?;
        if resp.status().is_success() || self.event_gone(&resp) {
            return Ok(());
        }
        Err(api_error(
            self.provider,
            resp.status().as_u16(),
            resp.body(),
        ))
    }

    /// The event as it is now. Graph: a deleted event is [`ProviderError::EventGone`]; Google keeps it readable
    /// with [`CalendarEvent::cancelled`] set.
    pub async fn get_event(
        &self,
        token: &Secret,
        provider_event_id: &str,
    ) -> Result<CalendarEvent, ProviderError> {
        match self.provider {
            Provider::Microsoft => {
                let url = self.graph_url(&["me", "events", provider_event_id])?;
                let resp = self.graph_get(&url, token).await?;
                if self.event_gone(&resp) {
                    return Err(ProviderError::EventGone {
                        provider: Provider::Microsoft,
                    });
                }
                let e: GraphEvent = self.json_or_error(&url, resp)?;
                e.into_event()
            }
            Provider::Google => self
                .google_get(token, provider_event_id)
                .await?
                .into_event(),
        }
    }

    /// One page of the events on the recruiter's own calendar overlapping `window_start`–`window_end`, by start.
    /// Start with `cursor: None`, then pass the previous page's `next` (and the same window) until it is `None`.
    /// Graph: `calendarView` (times in UTC), following `@odata.nextLink`. Google: `events.list` with `timeMin`,
    /// `timeMax`, `singleEvents=true`, `orderBy=startTime`, following `nextPageToken`. Cancelled events are not
    /// listed. For checking that booked interviews are still on the calendar; free/busy is [`CalendarClient::busy`].
    pub async fn list_events(
        &self,
        token: &Secret,
        window_start: Timestamp,
        window_end: Timestamp,
        cursor: Option<&EventsCursor>,
    ) -> Result<EventsPage, ProviderError> {
        match self.provider {
            Provider::Microsoft => {
                let url = match cursor {
                    Some(c) => self.checked_graph_link(&c.0)?,
                    None => self.graph_window_url(
                        &["me", "calendarView"],
                        window_start,
                        window_end,
                        &[("$top", &LIST_PAGE.to_string())],
                    )?,
                };
                let resp = self.graph_get(&url, token).await?;
                let page: GraphEventList = self.json_or_error(&url, resp)?;
                Ok(EventsPage {
                    events: page
                        .value
                        .into_iter()
                        .filter(|e| !e.is_cancelled)
                        .map(GraphEvent::into_event)
                        .collect::<Result<_, _>>()?,
                    next: page.next_link.map(EventsCursor),
                })
            }
            Provider::Google => {
                let (from, to, max) = (
                    window_start.to_string(),
                    window_end.to_string(),
                    LIST_PAGE.to_string(),
                );
                let mut query = vec![
                    ("timeMin", from.as_str()),
                    ("timeMax", to.as_str()),
                    ("singleEvents", "true"),
                    ("orderBy", "startTime"),
                    ("maxResults", max.as_str()),
                ];
                if let Some(c) = cursor {
                    query.push(("pageToken", c.0.as_str()));
                }
                let url = self.google_url(&["events"], &query)?;
                let resp = self
                    .send(::http::Method::GET, &url, token, &[], None)
                    .await?;
                let page: GoogleEventList = self.json_or_error(&url, resp)?;
                Ok(EventsPage {
                    events: page
                        .items
                        .into_iter()
                        .filter(|e| e.status.as_deref() != Some("cancelled"))
                        .map(GoogleEvent::into_event)
                        .collect::<Result<_, _>>()?,
                    next: page.next_page_token.map(EventsCursor),
                })
            }
        }
    }

    /// Whether anything changed on the recruiter's own calendar since `since`, and the cursor to ask with next
    /// time: one whole round of the provider's change feed, paged to its end. With `since: None` it starts the
    /// feed for events overlapping `window_start`–`window_end` (every event in it counts as a change; callers
    /// seed with it and ignore that count). Only the number of changed entries is reported: a cache of free/busy
    /// time throws its copy away on any change rather than patching it.
    ///
    /// Graph: `calendarView/delta` with the window, following `@odata.nextLink` to the `@odata.deltaLink`.
    /// Google: `events.list` with the window (no `orderBy`: it cannot be combined with sync), then with
    /// `syncToken`, following `nextPageToken` to the `nextSyncToken`. A cursor the provider no longer accepts
    /// (Graph 410 / `syncStateNotFound` / `resyncRequired`, Google 410 `fullSyncRequired`) is
    /// [`ProviderError::CursorExpired`]: start again with `since: None`, and treat it as "changed".
    pub async fn changes(
        &self,
        token: &Secret,
        since: Option<&ChangesCursor>,
        window_start: Timestamp,
        window_end: Timestamp,
    ) -> Result<CalendarChanges, ProviderError> {
        let mut changed = 0usize;
        match self.provider {
            Provider::Microsoft => {
                let mut url = match since {
                    Some(c) => self.checked_graph_link(&c.0)?,
                    None => self.graph_window_url(
                        &["me", "calendarView", "delta"],
                        window_start,
                        window_end,
                        &[],
                    )?,
                };
                loop {
                    let resp = self.graph_get(&url, token).await?;
                    if !resp.status().is_success() && graph_sync_state_gone(&resp) {
                        return Err(ProviderError::CursorExpired {
                            provider: Provider::Microsoft,
                        });
                    }
                    let page: DeltaPage = self.json_or_error(&url, resp)?;
                    changed += page.value.len();
                    match (page.next_link, page.delta_link) {
                        (Some(next), _) => url = self.checked_graph_link(&next)?,
                        (None, Some(delta)) => {
                            return Ok(CalendarChanges {
                                changed,
                                cursor: ChangesCursor(self.checked_graph_link(&delta)?),
                            });
                        }
                        (None, None) => {
                            return Err(ProviderError::Protocol(
                                "Graph delta page has neither nextLink nor deltaLink".into(),
                            ));
                        }
                    }
                }
            }
            Provider::Google => {
                let (from, to, max) = (
                    window_start.to_string(),
                    window_end.to_string(),
                    SYNC_PAGE.to_string(),
                );
                let mut page_token: Option<String> = None;
                loop {
                    let mut query = vec![("singleEvents", "true"), ("maxResults", max.as_str())];
                    match since {
                        Some(c) => query.push(("syncToken", c.0.as_str())),
                        None => {
                            query.push(("timeMin", from.as_str()));
                            query.push(("timeMax", to.as_str()));
                        }
                    }
                    if let Some(t) = page_token.as_deref() {
                        query.push(("pageToken", t));
                    }
                    let url = self.google_url(&["events"], &query)?;
                    let resp = self
                        .send(::http::Method::GET, &url, token, &[], None)
                        .await?;
                    if resp.status() == 410 && google_reason(resp.body()) == "fullSyncRequired" {
                        return Err(ProviderError::CursorExpired {
                            provider: Provider::Google,
                        });
                    }
                    let page: SyncPage = self.json_or_error(&url, resp)?;
                    changed += page.items.len();
                    match (page.next_page_token, page.next_sync_token) {
                        (Some(next), _) => page_token = Some(next),
                        (None, Some(sync)) => {
                            return Ok(CalendarChanges {
                                changed,
                                cursor: ChangesCursor(sync),
                            });
                        }
                        (None, None) => {
                            return Err(ProviderError::Protocol(
                                "events.list page has neither nextPageToken nor nextSyncToken"
                                    .into(),
                            ));
                        }
                    }
                }
            }
        }
    }

    // ---- Graph ----

    /// A `nextLink` from Graph: followed only if it points at the configured Graph host, so the bearer token
    /// never goes anywhere else.
    fn checked_graph_link(&self, link: &str) -> Result<String, ProviderError> {
        let url = url::Url::parse(link)
            .map_err(|_| ProviderError::Protocol("Graph paging link is not a URL".into()))?;
        let ours = url::Url::parse(&format!("{}/v1.0/", self.endpoints.graph))
            .map_err(|e| ProviderError::Protocol(format!("bad Graph base URL: {e}")))?;
        if url.origin() != ours.origin() || !url.path().starts_with(ours.path()) {
            return Err(ProviderError::Protocol(
                "Graph paging link points outside Microsoft Graph".into(),
            ));
        }
        Ok(link.to_owned())
    }

    async fn graph_schedule(
        &self,
        token: &Secret,
        address: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Busy>, ProviderError> {
        let url = self.graph_url(&["me", "calendar", "getSchedule"])?;
        let body = GraphScheduleRequest {
            schedules: [address],
            start_time: GraphTimeOut {
                date_time: utc_civil(from),
                time_zone: "UTC".into(),
            },
            end_time: GraphTimeOut {
                date_time: utc_civil(to),
                time_zone: "UTC".into(),
            },
            availability_view_interval: GRAPH_VIEW_INTERVAL_MIN,
        };
        let resp = self
            .send(
                ::http::Method::POST,
                &url,
                token,
                &[PREFER_UTC],
                Some(json_body(&body)?),
            )
            .await?;
        let answer: GraphScheduleAnswer = self.json_or_error(&url, resp)?;
        let Some(info) = answer
            .value
            .into_iter()
            .find(|s| s.schedule_id.eq_ignore_ascii_case(address))
        else {
            return Err(ProviderError::Protocol(
                "getSchedule answered without the asked schedule".into(),
            ));
        };
        info.into_busy(address, from, to)
    }

    /// A GET with immutable ids and UTC times.
    async fn graph_get(&self, url: &str, token: &Secret) -> Result<Response, ProviderError> {
        self.send(
            ::http::Method::GET,
            url,
            token,
            &[PREFER_IMMUTABLE_UTC],
            None,
        )
        .await
    }

    /// `segments` under Graph with a calendarView window (in UTC) and `extra` query pairs.
    fn graph_window_url(
        &self,
        segments: &[&str],
        from: Timestamp,
        to: Timestamp,
        extra: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&self.graph_url(segments)?)
            .map_err(|e| ProviderError::Protocol(format!("bad Graph URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("startDateTime", &from.to_string())
            .append_pair("endDateTime", &to.to_string())
            .extend_pairs(extra);
        Ok(url.into())
    }

    fn graph_url(&self, segments: &[&str]) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/v1.0", self.endpoints.graph))
            .map_err(|e| ProviderError::Protocol(format!("bad Graph base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("bad Graph base URL".into()))?
            .extend(segments);
        Ok(url.into())
    }

    // ---- Google ----

    async fn google_freebusy(
        &self,
        token: &Secret,
        address: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Busy>, ProviderError> {
        let url = format!("{}/calendar/v3/freeBusy", self.endpoints.google_calendar);
        let body = GoogleFreeBusyRequest {
            time_min: from.to_string(),
            time_max: to.to_string(),
            time_zone: "UTC",
            items: [GoogleItem { id: address }],
        };
        let resp = self
            .send(
                ::http::Method::POST,
                &url,
                token,
                &[],
                Some(json_body(&body)?),
            )
            .await?;
        let answer: GoogleFreeBusy = self.json_or_error(&url, resp)?;
        let cal = answer
            .calendars
            .into_iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(address))
            .map(|(_, c)| c)
            .ok_or_else(|| {
                ProviderError::Protocol("freeBusy answered without the asked calendar".into())
            })?;
        if let Some(e) = cal.errors.first() {
            return Err(ProviderError::CalendarUnavailable {
                provider: Provider::Google,
                address: address.to_owned(),
                reason: e.reason.clone().unwrap_or_default(),
            });
        }
        cal.busy
            .iter()
            .map(|b| {
                Ok(Busy {
                    start: parse_rfc3339(&b.start)?,
                    end: parse_rfc3339(&b.end)?,
                    status: BusyStatus::Busy,
                })
            })
            .collect()
    }

    async fn google_get(&self, token: &Secret, id: &str) -> Result<GoogleEvent, ProviderError> {
        let url = self.google_url(&["events", id], &[])?;
        let resp = self
            .send(::http::Method::GET, &url, token, &[], None)
            .await?;
        if resp.status() == 404 {
            return Err(ProviderError::EventGone {
                provider: Provider::Google,
            });
        }
        self.json_or_error(&url, resp)
    }

    /// `…/calendar/v3/calendars/primary/{segments}?{query}`: the token owner's own calendar.
    fn google_url(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&format!(
            "{}/calendar/v3/calendars/primary",
            self.endpoints.google_calendar
        ))
        .map_err(|e| ProviderError::Protocol(format!("bad Google Calendar base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("bad Google Calendar base URL".into()))?
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url.into())
    }

    // ---- Both ----

    /// Graph 404 (`ErrorItemNotFound`); Google 404 or 410 `deleted`.
    fn event_gone(&self, resp: &Response) -> bool {
        match (self.provider, resp.status().as_u16()) {
            (_, 404) => true,
            // A 410 can also be `fullSyncRequired` (a sync token), which says nothing about the event.
            (Provider::Google, 410) => google_reason(resp.body()) == "deleted",
            _ => false,
        }
    }

    async fn send(
        &self,
        method: ::http::Method,
        url: &str,
        token: &Secret,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ProviderError> {
        let mut b = ::http::Request::builder()
            .method(method)
            .uri(url)
            .header(::http::header::ACCEPT, "application/json")
            .header(
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
        if body.is_some() {
            b = b.header(::http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        let req = b
            .body(body.unwrap_or_default())
            .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))?;
        // Every calendar call is safe to repeat (see the module docs).
        let op = match self.provider {
            Provider::Microsoft => Op::Graph,
            Provider::Google => Op::GoogleCalendar,
        };
        send_paced(&self.http, self.pacing.as_ref(), op, req, true).await
    }

    fn json_or_error<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        resp: Response,
    ) -> Result<T, ProviderError> {
        json_or_api_error(self.provider, url, resp)
    }
}

fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(value)
        .map_err(|e| ProviderError::Protocol(format!("serializing a request: {e}")))
}

fn google_reason(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["error"]["errors"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn time_zone(name: &str) -> Result<TimeZone, ProviderError> {
    TimeZone::get(name)
        .map_err(|_| ProviderError::Protocol(format!("unknown IANA time zone {name:?}")))
}

/// `2025-03-10T14:00:00` in UTC (Graph `dateTimeTimeZone.dateTime` with `timeZone: "UTC"`).
fn utc_civil(t: Timestamp) -> String {
    t.to_zoned_datetime(TimeZone::UTC)
        .datetime()
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn graph_time(t: Timestamp, tz: &TimeZone, name: &str) -> Result<GraphTimeOut, ProviderError> {
    Ok(GraphTimeOut {
        date_time: t
            .to_zoned_datetime(tz.clone())
            .datetime()
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string(),
        time_zone: name.to_owned(),
    })
}

fn google_time(t: Timestamp, tz: &TimeZone, name: &str) -> Result<GoogleTimeOut, ProviderError> {
    Ok(GoogleTimeOut {
        date_time: t
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        time_zone: name.to_owned(),
    })
}

fn parse_rfc3339(s: &str) -> Result<Timestamp, ProviderError> {
    s.parse()
        .map_err(|e| ProviderError::Protocol(format!("bad time {s:?}: {e}")))
}

/// The zone of a Graph `dateTimeTimeZone`: UTC, an IANA name, or one of the Windows names Graph uses most (those
/// the sandbox knows). Another Windows name is a protocol error: [`CalendarClient`] asks for UTC everywhere it
/// reads times, so only a provider ignoring `Prefer` can bring one.
fn graph_zone(name: &str) -> Result<TimeZone, ProviderError> {
    const WINDOWS: &[(&str, &str)] = &[
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Mountain Standard Time", "America/Denver"),
        ("Central Standard Time", "America/Chicago"),
        ("Eastern Standard Time", "America/New_York"),
        ("GMT Standard Time", "Europe/London"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Romance Standard Time", "Europe/Paris"),
        ("India Standard Time", "Asia/Kolkata"),
        ("China Standard Time", "Asia/Shanghai"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
    ];
    let name = name.trim();
    if name.is_empty()
        || name.eq_ignore_ascii_case("UTC")
        || name.eq_ignore_ascii_case("Coordinated Universal Time")
    {
        return Ok(TimeZone::UTC);
    }
    let iana = WINDOWS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
        .map_or(name, |(_, i)| i);
    TimeZone::get(iana)
        .map_err(|_| ProviderError::Protocol(format!("unknown Graph time zone {name:?}")))
}

fn graph_instant(t: &GraphTime) -> Result<Timestamp, ProviderError> {
    let tz = graph_zone(t.time_zone.as_deref().unwrap_or("UTC"))?;
    let civil: jiff::civil::DateTime = t
        .date_time
        .parse()
        .map_err(|e| ProviderError::Protocol(format!("bad Graph time {:?}: {e}", t.date_time)))?;
    civil
        .to_zoned_datetime(tz)
        .map(|z| z.timestamp())
        .map_err(|e| ProviderError::Protocol(format!("bad Graph time {:?}: {e}", t.date_time)))
}

// ---- Wire structs: Graph ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphScheduleRequest<'a> {
    schedules: [&'a str; 1],
    start_time: GraphTimeOut,
    end_time: GraphTimeOut,
    availability_view_interval: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphTimeOut {
    date_time: String,
    time_zone: String,
}

#[derive(Serialize)]
struct GraphTimes {
    start: GraphTimeOut,
    end: GraphTimeOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphNewEvent<'a> {
    subject: &'a str,
    body: GraphBodyOut<'a>,
    start: GraphTimeOut,
    end: GraphTimeOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<GraphLocationOut<'a>>,
    attendees: Vec<GraphAttendeeOut<'a>>,
    is_online_meeting: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    online_meeting_provider: Option<&'static str>,
    transaction_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphBodyOut<'a> {
    content_type: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphLocationOut<'a> {
    display_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphAttendeeOut<'a> {
    email_address: GraphAddressOut<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct GraphAddressOut<'a> {
    address: &'a str,
    name: &'a str,
}

#[derive(Deserialize)]
struct GraphScheduleAnswer {
    #[serde(default)]
    value: Vec<GraphScheduleInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphScheduleInfo {
    #[serde(default)]
    schedule_id: String,
    availability_view: Option<String>,
    schedule_items: Option<Vec<GraphScheduleItem>>,
    error: Option<GraphFreeBusyError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphFreeBusyError {
    response_code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct GraphScheduleItem {
    status: Option<String>,
    start: GraphTime,
    end: GraphTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphTime {
    date_time: String,
    time_zone: Option<String>,
}

impl GraphScheduleInfo {
    /// Busy blocks from `scheduleItems`; from `availabilityView` when the items are missing (or empty while the
    /// view shows the time taken), one block per run of equal digits.
    fn into_busy(
        self,
        address: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Busy>, ProviderError> {
        if let Some(e) = self.error {
            return Err(ProviderError::CalendarUnavailable {
                provider: Provider::Microsoft,
                address: address.to_owned(),
                reason: e.response_code.or(e.message).unwrap_or_default(),
            });
        }
        let view = self.availability_view.unwrap_or_default();
        let view_taken = view.bytes().any(|d| view_status(d).is_some());
        match self.schedule_items {
            Some(items) if !items.is_empty() || !view_taken => {
                let mut out = Vec::new();
                for it in items {
                    let status = match it.status.as_deref().unwrap_or("unknown") {
                        "busy" | "unknown" => BusyStatus::Busy,
                        "tentative" => BusyStatus::Tentative,
                        "oof" => BusyStatus::OutOfOffice,
                        // `free`, `workingElsewhere`: the recruiter can take an interview.
                        _ => continue,
                    };
                    out.push(Busy {
                        start: graph_instant(&it.start)?,
                        end: graph_instant(&it.end)?,
                        status,
                    });
                }
                Ok(out)
            }
            _ => {
                let step = SignedDuration::from_mins(GRAPH_VIEW_INTERVAL_MIN);
                let mut out: Vec<Busy> = Vec::new();
                let mut t = from;
                for d in view.bytes() {
                    if t >= to {
                        break;
                    }
                    let end = t.checked_add(step).map_or(to, |e| e.min(to));
                    if let Some(status) = view_status(d) {
                        match out.last_mut() {
                            Some(last) if last.end == t && last.status == status => last.end = end,
                            _ => out.push(Busy {
                                start: t,
                                end,
                                status,
                            }),
                        }
                    }
                    t = end;
                }
                Ok(out)
            }
        }
    }
}

/// An `availabilityView` digit: `0` free and `4` working elsewhere do not block.
fn view_status(d: u8) -> Option<BusyStatus> {
    match d {
        b'1' => Some(BusyStatus::Tentative),
        b'2' => Some(BusyStatus::Busy),
        b'3' => Some(BusyStatus::OutOfOffice),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphEvent {
    id: String,
    #[serde(rename = "iCalUId")]
    ical_uid: Option<String>,
    start: Option<GraphTime>,
    end: Option<GraphTime>,
    #[serde(default)]
    is_cancelled: bool,
    online_meeting: Option<GraphOnlineMeeting>,
    online_meeting_url: Option<String>,
    #[serde(default)]
    attendees: Vec<GraphAttendee>,
}

#[derive(Deserialize)]
struct GraphEventList {
    #[serde(default)]
    value: Vec<GraphEvent>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphOnlineMeeting {
    join_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphAttendee {
    email_address: GraphAddress,
}

#[derive(Deserialize)]
struct GraphAddress {
    address: Option<String>,
}

impl GraphEvent {
    fn join_url(&self) -> Option<String> {
        self.online_meeting
            .as_ref()
            .and_then(|m| m.join_url.clone())
            .or_else(|| self.online_meeting_url.clone())
            .filter(|u| !u.is_empty())
    }

    fn into_created(self) -> CreatedEvent {
        CreatedEvent {
            join_url: self.join_url(),
            ical_uid: self.ical_uid.unwrap_or_default(),
            provider_event_id: self.id,
        }
    }

    fn into_event(self) -> Result<CalendarEvent, ProviderError> {
        let missing = || ProviderError::Protocol("Graph event without start or end".into());
        Ok(CalendarEvent {
            start: graph_instant(self.start.as_ref().ok_or_else(missing)?)?,
            end: graph_instant(self.end.as_ref().ok_or_else(missing)?)?,
            join_url: self.join_url(),
            cancelled: self.is_cancelled,
            attendees: self
                .attendees
                .into_iter()
                .filter_map(|a| a.email_address.address)
                .collect(),
            ical_uid: self.ical_uid.unwrap_or_default(),
            provider_event_id: self.id,
        })
    }
}

// ---- Wire structs: Google ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleFreeBusyRequest<'a> {
    time_min: String,
    time_max: String,
    time_zone: &'static str,
    items: [GoogleItem<'a>; 1],
}

#[derive(Serialize)]
struct GoogleItem<'a> {
    id: &'a str,
}

#[derive(Deserialize)]
struct GoogleFreeBusy {
    #[serde(default)]
    calendars: HashMap<String, GoogleFreeBusyCalendar>,
}

#[derive(Deserialize)]
struct GoogleFreeBusyCalendar {
    #[serde(default)]
    busy: Vec<GoogleBusy>,
    #[serde(default)]
    errors: Vec<GoogleFreeBusyError>,
}

#[derive(Deserialize)]
struct GoogleBusy {
    start: String,
    end: String,
}

#[derive(Deserialize)]
struct GoogleFreeBusyError {
    reason: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleTimeOut {
    date_time: String,
    time_zone: String,
}

#[derive(Serialize)]
struct GoogleTimes {
    start: GoogleTimeOut,
    end: GoogleTimeOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleNewEvent<'a> {
    id: &'a str,
    summary: &'a str,
    description: &'a str,
    start: GoogleTimeOut,
    end: GoogleTimeOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    attendees: Vec<GoogleAttendeeOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conference_data: Option<GoogleConferenceOut>,
    extended_properties: GoogleExtendedOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleAttendeeOut<'a> {
    email: &'a str,
    display_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleConferenceOut {
    create_request: GoogleCreateRequestOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoogleCreateRequestOut {
    request_id: String,
    conference_solution_key: GoogleSolutionKey,
}

#[derive(Serialize)]
struct GoogleSolutionKey {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct GoogleExtendedOut<'a> {
    private: HashMap<&'static str, &'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleEvent {
    id: String,
    status: Option<String>,
    #[serde(rename = "iCalUID")]
    ical_uid: Option<String>,
    start: Option<GoogleTime>,
    end: Option<GoogleTime>,
    hangout_link: Option<String>,
    conference_data: Option<GoogleConferenceData>,
    #[serde(default)]
    attendees: Vec<GoogleAttendee>,
    extended_properties: Option<GoogleExtended>,
}

#[derive(Deserialize)]
struct DeltaPage {
    /// Only counted: any change throws a cached copy away.
    #[serde(default)]
    value: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncPage {
    /// Only counted, like [`DeltaPage::value`].
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleEventList {
    #[serde(default)]
    items: Vec<GoogleEvent>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleTime {
    date_time: Option<String>,
    date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleConferenceData {
    #[serde(default)]
    entry_points: Vec<GoogleEntryPoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleEntryPoint {
    entry_point_type: Option<String>,
    uri: Option<String>,
}

#[derive(Deserialize)]
struct GoogleAttendee {
    email: Option<String>,
}

#[derive(Deserialize)]
struct GoogleExtended {
    #[serde(default)]
    private: HashMap<String, String>,
}

impl GoogleTime {
    fn instant(&self) -> Result<Timestamp, ProviderError> {
        match (&self.date_time, &self.date) {
            (Some(dt), _) => parse_rfc3339(dt),
            // An all-day event: midnight UTC (hirewire never makes one).
            (None, Some(d)) => parse_rfc3339(&format!("{d}T00:00:00Z")),
            (None, None) => Err(ProviderError::Protocol(
                "Google event time without dateTime or date".into(),
            )),
        }
    }
}

impl GoogleEvent {
    fn join_url(&self) -> Option<String> {
        self.hangout_link
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                self.conference_data.as_ref().and_then(|c| {
                    c.entry_points
                        .iter()
                        .find(|e| e.entry_point_type.as_deref() == Some("video"))
                        .and_then(|e| e.uri.clone())
                })
            })
    }

    fn into_created(self) -> CreatedEvent {
        CreatedEvent {
            join_url: self.join_url(),
            ical_uid: self.ical_uid.unwrap_or_default(),
            provider_event_id: self.id,
        }
    }

    fn into_event(self) -> Result<CalendarEvent, ProviderError> {
        let missing = || ProviderError::Protocol("Google event without start or end".into());
        Ok(CalendarEvent {
            start: self.start.as_ref().ok_or_else(missing)?.instant()?,
            end: self.end.as_ref().ok_or_else(missing)?.instant()?,
            join_url: self.join_url(),
            cancelled: self.status.as_deref() == Some("cancelled"),
            attendees: self.attendees.into_iter().filter_map(|a| a.email).collect(),
            ical_uid: self.ical_uid.unwrap_or_default(),
            provider_event_id: self.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_event_ids_are_stable_base32hex_within_googles_limits() {
        let id = google_event_id("booking-42");
        assert_eq!(id, google_event_id("booking-42"));
        assert_ne!(id, google_event_id("booking-43"));
        assert_eq!(id.len(), 52);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{id}"
        );
    }

    #[test]
    fn base32hex_matches_rfc_4648_test_vectors() {
        // RFC 4648 §10, lowercase and unpadded.
        for (input, expected) in [
            ("", ""),
            ("f", "co"),
            ("fo", "cpng"),
            ("foo", "cpnmu"),
            ("foob", "cpnmuog"),
            ("fooba", "cpnmuoj1"),
            ("foobar", "cpnmuoj1e8"),
        ] {
            assert_eq!(base32hex(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn graph_times_are_read_in_their_zone() {
        let t = |dt: &str, tz: &str| {
            graph_instant(&GraphTime {
                date_time: dt.into(),
                time_zone: Some(tz.into()),
            })
            .unwrap()
            .to_string()
        };
        assert_eq!(
            t("2025-03-15T12:00:00.0000000", "UTC"),
            "2025-03-15T12:00:00Z"
        );
        assert_eq!(
            t("2025-03-15T12:00:00.0000000", "Pacific Standard Time"),
            "2025-03-15T19:00:00Z"
        );
        assert_eq!(
            t("2025-03-15T12:00:00", "Europe/Paris"),
            "2025-03-15T11:00:00Z"
        );
    }

    #[test]
    fn an_availability_view_becomes_runs_of_busy_blocks() {
        let info = GraphScheduleInfo {
            schedule_id: "a@b".into(),
            availability_view: Some("0221130".into()),
            schedule_items: None,
            error: None,
        };
        let from: Timestamp = "2025-03-15T09:00:00Z".parse().unwrap();
        let to: Timestamp = "2025-03-15T10:40:00Z".parse().unwrap();
        let busy = info.into_busy("a@b", from, to).unwrap();
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert_eq!(
            busy,
            [
                Busy {
                    start: at("2025-03-15T09:15:00Z"),
                    end: at("2025-03-15T09:45:00Z"),
                    status: BusyStatus::Busy
                },
                Busy {
                    start: at("2025-03-15T09:45:00Z"),
                    end: at("2025-03-15T10:15:00Z"),
                    status: BusyStatus::Tentative
                },
                Busy {
                    start: at("2025-03-15T10:15:00Z"),
                    end: at("2025-03-15T10:30:00Z"),
                    status: BusyStatus::OutOfOffice
                },
            ]
        );
    }
}
