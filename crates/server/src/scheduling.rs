//! The Scheduler's service layer: links, slots, bookings and the provider
//! events behind them. Pages ([`crate::booking_pages`], [`crate::scheduler_pages`])
//! and the API ([`crate::scheduling_api`]) are thin shells over this module.
//!
//! **Slots** come from the availability engine
//! ([`hirewire_domain::availability::compute`]) fed with the recruiter's
//! settings, their calendar's busy time (through the providers crate, cached
//! per recruiter) and their confirmed bookings (their *blocked* ranges, so
//! buffers on both sides hold).
//!
//! **The busy-time cache** is refreshed from the provider's change feed
//! (Graph `calendarView/delta`, Google `events.list` with `syncToken`): the
//! feed's cursor is taken *before* busy time is read, and
//! [`refresh_calendars`] (every [`SchedulerConfig::changes_interval`]) asks each
//! cached calendar what changed since; any change, an expired cursor or an
//! error throws the copy away, so a meeting the recruiter accepts in Outlook
//! disappears from the booking page within one interval instead of one TTL.
//! A watched copy lives up to [`SchedulerConfig::watched_busy_ttl`]; a calendar
//! whose feed cannot be read falls back to [`SchedulerConfig::busy_ttl`].
//!
//! **Booking** always re-checks the chosen start against *fresh* busy time
//! (never the cache), then writes through the store, which refuses overlapping
//! blocked ranges in the database itself (exclusion constraint / trigger), so
//! two racing candidates can never both win; the loser gets `slot_taken` with
//! fresh slots. Then the event is created on the recruiter's calendar with the
//! booking's idempotency key (Graph `transactionId`, Google client event id),
//! so a retry never makes a second event. If the provider cannot be reached,
//! the booking stands and a leased job ([`EVENT_JOB`]) brings the calendar in
//! line later: create, move or delete, whichever the booking now needs.
//!
//! **Reschedule** moves the same provider event (the attendee gets an update
//! with the same iCalUID and a higher sequence); **cancel** deletes it (the
//! provider sends the cancellation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hirewire_domain::availability::{
    self, Interval, Request, Rules, TimeRange, WallTime, Weekdays,
};
use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::{BookingId, CandidateId, UserId};
use hirewire_domain::retry::Backoff;
use hirewire_providers::calendar::{
    Attendee, Busy, BusyStatus, CalendarClient, ChangesCursor, Location, NewEvent,
};
use hirewire_providers::{Provider, ProviderError, Secret};
use hirewire_store::{
    Booking, BookingStatus, CapabilityKind, DailyCap, GrantStatus, MeetingKind, MeetingLocation,
    MeetingType, NewBooking, NewJob, NewSchedulingLink, SchedulingLink, SchedulingSettings, Slot,
    StoreError, User,
};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::json;

use crate::app::AppState;
use crate::crypto::{random_token, token_digest};
use crate::integrations::{self, Notice};

/// Job kind that brings a booking's provider event in line with the booking.
pub const EVENT_JOB: &str = "scheduling.event";

/// Knobs of the Scheduler (in [`crate::Config::scheduler`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How long fetched busy time is reused for the booking page when the
    /// calendar's change feed cannot be watched (booking itself always
    /// fetches fresh).
    pub busy_ttl: Duration,
    /// How long busy time is reused while its calendar's change feed is
    /// watched and reports nothing (a backstop: changes drop it sooner).
    pub watched_busy_ttl: Duration,
    /// How often [`refresh_calendars`] asks watched calendars what changed.
    pub changes_interval: Duration,
    /// Lease of an event job.
    pub lease: Duration,
    /// How long a resolved link (recruiter, settings, meeting) is reused by
    /// the read-only booking endpoints. Writes through this instance drop it
    /// at once; booking always reads the database.
    pub link_ttl: Duration,
    /// Attempts of an event job before it fails for good.
    pub max_attempts: u32,
    /// Delay between attempts (a provider's `Retry-After` wins when longer).
    pub backoff: Backoff,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            busy_ttl: Duration::from_secs(60),
            watched_busy_ttl: Duration::from_secs(15 * 60),
            changes_interval: Duration::from_secs(15),
            link_ttl: Duration::from_secs(5),
            lease: Duration::from_secs(120),
            max_attempts: 12,
            backoff: Backoff::default(),
        }
    }
}

/// Link expiries a recruiter can pick, in weeks (the default is 2).
pub const EXPIRY_WEEKS: [u32; 3] = [1, 2, 3];
/// The expiry preselected on the candidate page.
pub const DEFAULT_EXPIRY_WEEKS: u32 = 2;
/// The longest slot window one request may ask for.
pub const MAX_QUERY_DAYS: i64 = 62;

/// The settings a recruiter starts with: Monday to Friday 09:00-17:00, a
/// 30-minute phone screen and a 60-minute video interview, no same-day
/// meetings (like the anchor product), four weeks ahead.
pub fn default_settings() -> SchedulingSettings {
    use hirewire_store::WorkingHours;
    SchedulingSettings {
        working_hours: vec![WorkingHours {
            days: vec![1, 2, 3, 4, 5],
            start: "09:00".into(),
            end: "17:00".into(),
        }],
        overrides: Vec::new(),
        meeting_types: vec![
            MeetingType {
                kind: MeetingKind::PhoneScreen,
                duration_minutes: 30,
                before_buffer_minutes: 0,
                after_buffer_minutes: 10,
                location: MeetingLocation::Phone,
            },
            MeetingType {
                kind: MeetingKind::Interview,
                duration_minutes: 60,
                before_buffer_minutes: 0,
                after_buffer_minutes: 15,
                location: MeetingLocation::Video,
            },
        ],
        minimum_notice_minutes: 240,
        no_same_day: true,
        horizon_days: 28,
        max_per_day: None,
        tentative_is_busy: true,
    }
}

/// The recruiter's saved settings, or the defaults.
pub async fn settings_of(state: &AppState, user: &User) -> Result<SchedulingSettings, StoreError> {
    Ok(state
        .store
        .get_scheduling_settings(user.org_id, user.id)
        .await?
        .unwrap_or_else(default_settings))
}

/// People's name for a meeting kind.
pub fn kind_label(kind: MeetingKind) -> &'static str {
    match kind {
        MeetingKind::PhoneScreen => "Phone screen",
        MeetingKind::Interview => "Interview",
    }
}

/// The engine's rules for one meeting type of `settings`.
pub fn rules_for(settings: &SchedulingSettings, meeting: &MeetingType) -> Result<Rules, String> {
    let wall = |s: &str| WallTime::parse(s).map_err(|e| e.to_string());
    let range = |start: &str, end: &str| -> Result<TimeRange, String> {
        Ok(TimeRange::new(wall(start)?, wall(end)?))
    };
    let mut working_hours = Vec::new();
    for w in &settings.working_hours {
        let days = w
            .days
            .iter()
            .map(|d| {
                jiff::civil::Weekday::from_monday_one_offset(i8::try_from(*d).unwrap_or(0))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        working_hours.push(availability::WorkingHours {
            days: Weekdays::from_weekdays(days),
            range: range(&w.start, &w.end)?,
        });
    }
    let mut overrides = Vec::new();
    for o in &settings.overrides {
        overrides.push(availability::DateOverride {
            date: o.date.parse().map_err(|e: jiff::Error| e.to_string())?,
            ranges: o
                .ranges
                .iter()
                .map(|r| range(&r.start, &r.end))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Rules {
        working_hours,
        overrides,
        slot_length_minutes: meeting.duration_minutes,
        // Starts on the quarter hour for short meetings, the half hour otherwise.
        slot_interval_minutes: meeting.duration_minutes.min(30),
        before_buffer_minutes: meeting.before_buffer_minutes,
        after_buffer_minutes: meeting.after_buffer_minutes,
        minimum_notice_minutes: settings.minimum_notice_minutes,
        horizon_days: Some(settings.horizon_days),
        daily_cap: settings.max_per_day,
        no_same_day: settings.no_same_day,
    })
}

// ---- links ----------------------------------------------------------------------

/// Why a link cannot be used; each has a stable code and a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    Unknown,
    Expired,
    Revoked,
    /// Booked, then cancelled: the manage link has nothing left to manage.
    Cancelled,
    /// Already booked (for operations that need an unbooked link).
    Used,
    /// Booked and the meeting has started: it can no longer be changed.
    Past,
}

impl LinkProblem {
    pub fn code(self) -> &'static str {
        match self {
            LinkProblem::Unknown => "link_not_found",
            LinkProblem::Expired => "link_expired",
            LinkProblem::Revoked => "link_revoked",
            LinkProblem::Cancelled => "booking_cancelled",
            LinkProblem::Used => "link_used",
            LinkProblem::Past => "booking_past",
        }
    }

    pub fn status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            LinkProblem::Unknown => StatusCode::NOT_FOUND,
            LinkProblem::Expired | LinkProblem::Revoked | LinkProblem::Cancelled => {
                StatusCode::GONE
            }
            LinkProblem::Used | LinkProblem::Past => StatusCode::CONFLICT,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            LinkProblem::Unknown => "This scheduling link does not exist",
            LinkProblem::Expired => "This scheduling link has expired",
            LinkProblem::Revoked => "This scheduling link was withdrawn",
            LinkProblem::Cancelled => "This meeting was cancelled",
            LinkProblem::Used => "This link was already used",
            LinkProblem::Past => "This meeting has already started",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            LinkProblem::Unknown => {
                "Check that you copied the whole link. If it still does not work, ask the recruiter for a new one."
            }
            LinkProblem::Expired => {
                "Links are valid for a limited time. Ask the recruiter who sent it for a new link."
            }
            LinkProblem::Revoked => {
                "The recruiter withdrew this link. Ask them for a new one if you still want to meet."
            }
            LinkProblem::Cancelled => {
                "The meeting booked with this link was cancelled. Ask the recruiter for a new link to book another time."
            }
            LinkProblem::Used => {
                "A meeting was already booked with this link; open the link again to see or change it."
            }
            LinkProblem::Past => {
                "A meeting that has started can no longer be changed here. Contact the recruiter directly."
            }
        }
    }
}

/// Everything about one link, resolved from its token.
#[derive(Debug, Clone)]
pub struct LinkContext {
    pub link: SchedulingLink,
    pub recruiter: User,
    pub candidate_name: String,
    /// The candidate's first known address (prefills the form).
    pub candidate_email: Option<String>,
    pub settings: SchedulingSettings,
    pub meeting: MeetingType,
    pub rules: Rules,
    /// The link's booking, when it was booked.
    pub booking: Option<Booking>,
}

/// [`open_link`] for read-only use (slots, the link's page): reuses a link
/// resolved less than [`SchedulerConfig::link_ttl`] ago. Expiry is re-derived
/// from `now`, so a cached link never outlives its `expires_at`.
pub async fn open_link_cached(
    state: &AppState,
    token: &str,
) -> Result<Arc<LinkContext>, OpenError> {
    let digest = token_digest(token);
    let now = state.now();
    let ttl =
        SignedDuration::try_from(state.config.scheduler.link_ttl).unwrap_or(SignedDuration::ZERO);
    let hit = {
        let links = state
            .scheduler
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links
            .get(&digest)
            .filter(|(at, _)| *at <= now && now.duration_since(*at) < ttl)
            .map(|(_, c)| c.clone())
    };
    let ctx = match hit {
        Some(c) => c,
        None => {
            let c = Arc::new(open_link(state, token).await?);
            let mut links = state
                .scheduler
                .links
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if links.len() >= MAX_CACHED_LINKS {
                links.clear();
            }
            links.insert(digest, (now, c.clone()));
            c
        }
    };
    if ctx.link.is_bookable() && ctx.link.expires_at <= now {
        let mut c = (*ctx).clone();
        c.link.status = hirewire_store::LinkStatus::Expired;
        return Ok(Arc::new(c));
    }
    Ok(ctx)
}

/// Resolves a link token (any org: the token is the credential). Opening a
/// `sent` link records it as `opened`.
pub async fn open_link(state: &AppState, token: &str) -> Result<LinkContext, OpenError> {
    if token.is_empty() || token.len() > 128 {
        return Err(OpenError::Link(LinkProblem::Unknown));
    }
    let now = state.now();
    let link = state
        .store
        .link_by_digest(&token_digest(token), now)
        .await?
        .ok_or(OpenError::Link(LinkProblem::Unknown))?;
    let mut link = link;
    if link.status == hirewire_store::LinkStatus::Sent
        && state.store.mark_link_opened(link.id, now).await?
    {
        link.status = hirewire_store::LinkStatus::Opened;
        link.opened_at = Some(now);
    }
    let recruiter = state
        .store
        .user_by_id(link.user_id)
        .await?
        .ok_or(OpenError::Link(LinkProblem::Unknown))?;
    let candidate = state
        .store
        .candidate(link.org_id, link.candidate_id)
        .await?
        .ok_or(OpenError::Link(LinkProblem::Unknown))?;
    let settings = settings_of(state, &recruiter).await?;
    // The meeting fixed when the link was made wins over today's settings.
    let meeting = link
        .meeting
        .clone()
        .or_else(|| settings.meeting_type(link.meeting_kind).cloned())
        .ok_or(OpenError::NotOffered)?;
    let rules = rules_for(&settings, &meeting).map_err(OpenError::Settings)?;
    let booking = match link.booking_id {
        Some(id) => state.store.booking(link.org_id, id).await?,
        None => None,
    };
    Ok(LinkContext {
        candidate_email: candidate.emails.first().map(|e| e.address.to_string()),
        candidate_name: candidate.name,
        link,
        recruiter,
        settings,
        meeting,
        rules,
        booking,
    })
}

/// Why [`open_link`] failed.
#[derive(Debug)]
pub enum OpenError {
    Link(LinkProblem),
    /// The recruiter no longer offers this meeting type.
    NotOffered,
    /// The recruiter's saved settings cannot be used (a bug: they are validated on save).
    Settings(String),
    Store(StoreError),
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        OpenError::Store(e)
    }
}

impl LinkContext {
    /// Whether a new booking can be made with this link.
    pub fn bookable(&self) -> Result<(), LinkProblem> {
        use hirewire_store::LinkStatus as S;
        match self.link.status {
            S::Sent | S::Opened => Ok(()),
            S::Expired => Err(LinkProblem::Expired),
            S::Revoked => Err(LinkProblem::Revoked),
            S::Booked => Err(LinkProblem::Used),
        }
    }

    /// The confirmed booking this manage link can still change at `now`.
    pub fn manageable(&self, now: Timestamp) -> Result<&Booking, LinkProblem> {
        match &self.booking {
            None => Err(self.bookable().err().unwrap_or(LinkProblem::Unknown)),
            Some(b) if b.status == BookingStatus::Cancelled => Err(LinkProblem::Cancelled),
            Some(b) if b.slot.starts_at <= now => Err(LinkProblem::Past),
            Some(b) => Ok(b),
        }
    }
}

/// A new link for `candidate`: returns it with its token (shown to the
/// recruiter; the store keeps the digest and the token sealed by the keyring).
pub async fn create_link(
    state: &AppState,
    recruiter: &User,
    candidate: CandidateId,
    kind: MeetingKind,
    duration_minutes: Option<u32>,
    expiry_weeks: u32,
) -> Result<(SchedulingLink, String), CreateLinkError> {
    if !EXPIRY_WEEKS.contains(&expiry_weeks) {
        return Err(CreateLinkError::Invalid(
            "links expire after 1, 2 or 3 weeks".into(),
        ));
    }
    calendar_ready(state, recruiter).await?;
    let settings = settings_of(state, recruiter).await?;
    let Some(mut meeting) = settings.meeting_type(kind).cloned() else {
        return Err(CreateLinkError::Invalid(format!(
            "you do not offer {} meetings; add it in your scheduling settings",
            kind_label(kind).to_lowercase()
        )));
    };
    if let Some(d) = duration_minutes {
        if !(15..=120).contains(&d) {
            return Err(CreateLinkError::Invalid(
                "a meeting lasts 15 to 120 minutes".into(),
            ));
        }
        meeting.duration_minutes = d;
    }
    let now = state.now();
    let token = random_token();
    let sealed = state.keyring.seal(token.as_bytes());
    let link = state
        .store
        .create_link(
            &NewSchedulingLink {
                org_id: recruiter.org_id,
                user_id: recruiter.id,
                candidate_id: candidate,
                meeting_kind: kind,
                token_digest: &token_digest(&token),
                token_sealed: Some(&sealed),
                meeting: Some(&meeting),
                expires_at: now + SignedDuration::from_hours(24 * 7 * i64::from(expiry_weeks)),
            },
            now,
        )
        .await?;
    Ok((link, token))
}

/// Why a link could not be made.
#[derive(Debug)]
pub enum CreateLinkError {
    /// The calendar is not authorized, or needs reauthorization: what to do.
    Calendar(String),
    Invalid(String),
    Store(StoreError),
}

impl From<StoreError> for CreateLinkError {
    fn from(e: StoreError) -> Self {
        CreateLinkError::Store(e)
    }
}

/// `Ok` when the recruiter's calendar can be used for free/busy and events;
/// otherwise the sentence telling them what to do.
pub async fn calendar_ready(state: &AppState, user: &User) -> Result<(), CreateLinkError> {
    let grant = state.store.grant(user.id, CapabilityKind::Calendar).await?;
    match grant {
        None => Err(CreateLinkError::Calendar(
            "Your work calendar is not authorized, so candidates cannot see your availability. Authorize it in Settings › Email & calendar first.".into(),
        )),
        Some(g) if g.status != GrantStatus::Active => Err(CreateLinkError::Calendar(format!(
            "Your work calendar needs to be authorized again before candidates can book: {} Reauthorize it in Settings › Email & calendar.",
            g.status_reason.as_deref().unwrap_or("the connection stopped working.")
        ))),
        Some(_) => Ok(()),
    }
}

/// The sealed token of a link, opened, so the page can show the URL again.
pub fn link_url(state: &AppState, link: &SchedulingLink) -> Option<String> {
    let sealed = link.token_sealed.as_deref()?;
    let token = String::from_utf8(state.keyring.open(sealed).ok()?).ok()?;
    Some(state.config.link(&format!("/book/{token}")))
}

// ---- busy time ------------------------------------------------------------------

/// The recruiter's calendar client, token and address.
async fn calendar(
    state: &AppState,
    user: &User,
) -> Result<(CalendarClient, Secret, String), ProviderTrouble> {
    let grant = state
        .store
        .grant(user.id, CapabilityKind::Calendar)
        .await
        .map_err(|e| ProviderTrouble::Internal(e.to_string()))?
        .ok_or_else(|| {
            ProviderTrouble::Unusable(Notice::NotConnected(CapabilityKind::Calendar).message(None))
        })?;
    let provider = integrations::provider_of(grant.provider).ok_or_else(|| {
        ProviderTrouble::Unusable("The calendar's provider is not configured.".into())
    })?;
    let token = integrations::access_token(state, user.id, CapabilityKind::Calendar)
        .await
        .map_err(|n| match n.code() {
            "provider_unavailable" => ProviderTrouble::Transient(n.message(Some(provider))),
            _ => ProviderTrouble::Unusable(n.message(Some(provider))),
        })?;
    let address = grant
        .account_address
        .clone()
        .unwrap_or_else(|| user.email.to_string());
    let client = CalendarClient::new(
        provider,
        state.config.provider_endpoints.clone(),
        state.provider_http.clone(),
    );
    Ok((client, token, address))
}

/// A provider problem, sorted by what the caller can do about it.
#[derive(Debug, Clone)]
pub enum ProviderTrouble {
    /// Try again later (throttled, 5xx, timeout).
    Transient(String),
    /// The recruiter must act (reauthorize, grant a permission).
    Unusable(String),
    Internal(String),
}

impl ProviderTrouble {
    fn of(e: &ProviderError) -> Self {
        match e {
            ProviderError::Throttled { .. } | ProviderError::Transient(_) => {
                ProviderTrouble::Transient(e.user_message())
            }
            ProviderError::NeedsReauthorization { .. }
            | ProviderError::TokenRejected
            | ProviderError::CalendarUnavailable { .. } => {
                ProviderTrouble::Unusable(e.user_message())
            }
            other => ProviderTrouble::Internal(other.to_string()),
        }
    }

    /// A sentence for the candidate (who cannot fix the recruiter's calendar).
    pub fn candidate_message(&self) -> &'static str {
        match self {
            ProviderTrouble::Transient(_) => {
                "The recruiter's calendar did not answer just now. Please try again in a minute."
            }
            ProviderTrouble::Unusable(_) | ProviderTrouble::Internal(_) => {
                "The recruiter's calendar cannot be reached right now, so times cannot be shown or booked. The recruiter has been told; please try again later or contact them."
            }
        }
    }
}

#[derive(Clone)]
struct BusyEntry {
    fetched_at: Timestamp,
    /// The watch generation the busy time was read under; `None` when the
    /// calendar is not watched (then only [`SchedulerConfig::busy_ttl`] holds).
    generation: Option<u64>,
    from: Timestamp,
    to: Timestamp,
    busy: Arc<Vec<Busy>>,
    /// Blocked ranges of the recruiter's confirmed bookings in `[from, to)`.
    bookings: Arc<Vec<Interval>>,
}

/// Busy time per recruiter, kept while its calendar's change feed reports
/// nothing (or for [`SchedulerConfig::busy_ttl`] when the feed cannot be
/// watched); one fetch at a time per recruiter (concurrent page loads wait for
/// it rather than all calling the provider).
#[derive(Default)]
pub struct BusyCache {
    entries: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<Option<BusyEntry>>>>>,
    /// Calendars whose change feed is watched, per recruiter.
    watched: Mutex<HashMap<UserId, Watch>>,
    /// Resolved links by token digest, with when they were read.
    links: Mutex<HashMap<Vec<u8>, CachedLink>>,
}

/// A recruiter's calendar change feed, watched while their busy time is cached.
struct Watch {
    /// Whose calendar.
    recruiter: User,
    /// Where the next round of the feed starts.
    cursor: ChangesCursor,
    /// The window the feed covers.
    from: Timestamp,
    to: Timestamp,
    /// Bumped whenever the feed reports a change: busy time read under an
    /// older generation is stale, even if it was stored after the change.
    generation: u64,
    /// When cached busy time of this calendar was last used; an idle watch is dropped.
    last_read: Timestamp,
}

/// A resolved link and when it was read.
type CachedLink = (Timestamp, Arc<LinkContext>);

/// Most links kept resolved at once (the map is emptied when it is full).
const MAX_CACHED_LINKS: usize = 50_000;

impl BusyCache {
    fn slot(&self, user: UserId) -> Arc<tokio::sync::Mutex<Option<BusyEntry>>> {
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(user).or_default().clone()
    }

    /// Forgets `user`'s busy time and resolved links (after their bookings
    /// or settings changed here).
    pub fn invalidate(&self, user: UserId) {
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&user);
        drop(map);
        self.forget_links(|c| c.recruiter.id == user);
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Watch>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current generation of `user`'s watch, if their calendar is watched
    /// over `[from, to)`.
    fn watch_generation(&self, user: UserId, from: Timestamp, to: Timestamp) -> Option<u64> {
        self.watches()
            .get(&user)
            .filter(|w| w.from <= from && to <= w.to)
            .map(|w| w.generation)
    }

    /// Whether `entry` may still be served at `now`.
    fn fresh(
        &self,
        user: UserId,
        entry: &BusyEntry,
        now: Timestamp,
        config: &SchedulerConfig,
    ) -> bool {
        let age = now.duration_since(entry.fetched_at);
        let within = |ttl: Duration| {
            entry.fetched_at <= now && age < SignedDuration::try_from(ttl).unwrap_or_default()
        };
        match entry.generation {
            None => within(config.busy_ttl),
            Some(g) => {
                let mut watches = self.watches();
                match watches.get_mut(&user) {
                    Some(w) if w.generation == g && within(config.watched_busy_ttl) => {
                        w.last_read = now;
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// Recruiters whose calendars are watched.
    pub fn watched_recruiters(&self) -> Vec<UserId> {
        self.watches().keys().copied().collect()
    }

    /// Forgets the resolved links `which` selects.
    pub fn forget_links(&self, which: impl Fn(&LinkContext) -> bool) {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links.retain(|_, (_, c)| !which(c));
    }
}

/// What blocks slots for `ctx`'s recruiter over `[from, to)`: calendar busy
/// time (tentative per the setting) and confirmed bookings' blocked ranges,
/// `except` one booking (the one being rescheduled). `fresh` bypasses the cache.
async fn blocking(
    state: &AppState,
    ctx: &LinkContext,
    from: Timestamp,
    to: Timestamp,
    fresh: bool,
    except: Option<&Booking>,
) -> Result<(Vec<Interval>, Vec<Interval>), ProviderTrouble> {
    let now = state.now();
    let user = &ctx.recruiter;
    let entry = if fresh {
        // Booking's re-check: never the cache, and no queue behind page loads.
        fetch_blocking(state, user, from, to, now).await?
    } else {
        let cell = state.scheduler.slot(user.id);
        let mut guard = cell.lock().await;
        let cache = &state.scheduler;
        match guard.as_ref().filter(|e| {
            e.from <= from && to <= e.to && cache.fresh(user.id, e, now, &state.config.scheduler)
        }) {
            Some(e) => e.clone(),
            None => {
                // Fetch the whole bookable horizon once, so the page's later
                // requests (other days, other zones) hit the cache; concurrent
                // page loads wait for this one fetch instead of each calling the provider.
                let horizon = now
                    + SignedDuration::from_hours(24 * (i64::from(ctx.settings.horizon_days) + 2));
                let (f, t) = (
                    from.min(now - SignedDuration::from_hours(24)),
                    to.max(horizon),
                );
                // The change feed's cursor first, then busy time: a change
                // between the two is reported by the next round, never lost.
                let generation = match cache.watch_generation(user.id, f, t) {
                    Some(g) => Some(g),
                    None => {
                        watch(state, user, f, t + SignedDuration::from_hours(24 * 7), now).await
                    }
                };
                let mut entry = fetch_blocking(state, user, f, t, now).await?;
                entry.generation = generation;
                *guard = Some(entry.clone());
                entry
            }
        }
    };
    let mut busy: Vec<Interval> = entry
        .busy
        .iter()
        .filter(|b| b.status != BusyStatus::Tentative || ctx.settings.tentative_is_busy)
        .map(|b| Interval {
            start: b.start,
            end: b.end,
        })
        .collect();
    let mut bookings: Vec<Interval> = entry.bookings.as_ref().clone();
    if let Some(own) = except {
        let blocked = Interval {
            start: own.slot.blocked_start,
            end: own.slot.blocked_end,
        };
        bookings.retain(|b| *b != blocked);
        // The booking's own event is busy time on the calendar: cut it out.
        busy = subtract(&busy, own.slot.starts_at, own.slot.ends_at);
    }
    Ok((busy, bookings))
}

/// The recruiter's calendar busy time and confirmed bookings over `[from, to)`, read now.
async fn fetch_blocking(
    state: &AppState,
    user: &User,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Result<BusyEntry, ProviderTrouble> {
    let (client, token, address) = calendar(state, user).await?;
    let busy = client
        .busy(&token, &address, from, to)
        .await
        .map_err(|e| ProviderTrouble::of(&e))?;
    let bookings = state
        .store
        .confirmed_bookings(user.org_id, user.id, from, to)
        .await
        .map_err(|e| ProviderTrouble::Internal(e.to_string()))?;
    Ok(BusyEntry {
        fetched_at: now,
        generation: None,
        from,
        to,
        busy: Arc::new(busy),
        bookings: Arc::new(
            bookings
                .iter()
                .map(|b| Interval {
                    start: b.slot.blocked_start,
                    end: b.slot.blocked_end,
                })
                .collect(),
        ),
    })
}

/// Starts watching `user`'s calendar change feed over `[from, to)`; the new
/// watch's generation, or `None` when the feed cannot be read (then the cached
/// copy only lives for [`SchedulerConfig::busy_ttl`]).
async fn watch(
    state: &AppState,
    user: &User,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Option<u64> {
    let (client, token, _) = calendar(state, user).await.ok()?;
    match client.changes(&token, None, from, to).await {
        Ok(first) => {
            let mut watches = state.scheduler.watches();
            let generation = watches.get(&user.id).map_or(0, |w| w.generation + 1);
            watches.insert(
                user.id,
                Watch {
                    recruiter: user.clone(),
                    cursor: first.cursor,
                    from,
                    to,
                    generation,
                    last_read: now,
                },
            );
            Some(generation)
        }
        Err(e) => {
            tracing::info!(user = %user.id, error = %e, "calendar change feed unavailable; busy time is cached by TTL only");
            None
        }
    }
}

/// What one round of [`refresh_calendars`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshReport {
    /// Calendars asked.
    pub checked: usize,
    /// Calendars whose cached busy time was thrown away (a change, an expired
    /// cursor or an error).
    pub dropped: usize,
    /// Idle watches ended.
    pub idle: usize,
}

/// Asks every watched calendar what changed since its cursor, and throws the
/// cached busy time of those that changed away (a later page load reads it
/// again). A watch not used for [`SchedulerConfig::watched_busy_ttl`] ends.
pub async fn refresh_calendars(state: &AppState) -> RefreshReport {
    let now = state.now();
    let idle_after =
        SignedDuration::try_from(state.config.scheduler.watched_busy_ttl).unwrap_or_default();
    let mut report = RefreshReport::default();
    let due: Vec<(User, ChangesCursor, Timestamp, Timestamp, u64)> = {
        let mut watches = state.scheduler.watches();
        let before = watches.len();
        watches.retain(|_, w| now.duration_since(w.last_read) < idle_after);
        report.idle = before - watches.len();
        watches
            .values()
            .map(|w| {
                (
                    w.recruiter.clone(),
                    w.cursor.clone(),
                    w.from,
                    w.to,
                    w.generation,
                )
            })
            .collect()
    };
    for (user, cursor, from, to, generation) in due {
        report.checked += 1;
        let user_id = user.id;
        let outcome = match calendar(state, &user).await {
            Ok((client, token, _)) => client
                .changes(&token, Some(&cursor), from, to)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:?}")),
        };
        let mut watches = state.scheduler.watches();
        let Some(w) = watches
            .get_mut(&user_id)
            .filter(|w| w.generation == generation)
        else {
            continue; // Re-seeded meanwhile by a page load: that one is current.
        };
        match outcome {
            Ok(c) if c.changed == 0 => w.cursor = c.cursor,
            Ok(c) => {
                w.cursor = c.cursor;
                w.generation += 1;
                report.dropped += 1;
            }
            Err(e) => {
                // Expired cursor or an error: nothing vouches for the copy any more.
                tracing::debug!(user = %user_id, error = %e, "calendar change feed lost; dropping cached busy time");
                watches.remove(&user_id);
                report.dropped += 1;
            }
        }
    }
    report
}

/// Spawns the loop that runs [`refresh_calendars`] every
/// [`SchedulerConfig::changes_interval`] (on every instance: each has its own cache).
pub fn spawn_calendar_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.config.scheduler.changes_interval).await;
            refresh_calendars(&state).await;
        }
    })
}

/// `list` without `[start, end)`.
fn subtract(list: &[Interval], start: Timestamp, end: Timestamp) -> Vec<Interval> {
    let mut out = Vec::with_capacity(list.len() + 1);
    for i in list {
        if i.end <= start || end <= i.start {
            out.push(*i);
            continue;
        }
        if i.start < start {
            out.push(Interval {
                start: i.start,
                end: start,
            });
        }
        if end < i.end {
            out.push(Interval {
                start: end,
                end: i.end,
            });
        }
    }
    out
}

// ---- slots ----------------------------------------------------------------------

/// A slot query: `[from, to)` in the candidate's zone.
#[derive(Debug, Clone)]
pub struct SlotQuery {
    pub time_zone: String,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Bookable starts for `ctx` in the query window (clipped to now and the
/// recruiter's horizon).
pub async fn slots(
    state: &AppState,
    ctx: &LinkContext,
    q: &SlotQuery,
    except: Option<&Booking>,
) -> Result<Vec<Timestamp>, ProviderTrouble> {
    let now = state.now();
    let horizon_end = now + SignedDuration::from_hours(24 * i64::from(ctx.settings.horizon_days));
    let from = q.from.max(now);
    let to = q.to.min(horizon_end);
    if to <= from {
        return Ok(Vec::new());
    }
    let (busy, bookings) = blocking(state, ctx, from, to, false, except).await?;
    compute(ctx, &q.time_zone, now, from, to, &busy, &bookings)
}

fn compute(
    ctx: &LinkContext,
    tz: &str,
    now: Timestamp,
    from: Timestamp,
    to: Timestamp,
    busy: &[Interval],
    bookings: &[Interval],
) -> Result<Vec<Timestamp>, ProviderTrouble> {
    availability::compute(&Request {
        rules: &ctx.rules,
        organizer_time_zone: &ctx.recruiter.time_zone,
        invitee_time_zone: tz,
        now,
        window: Interval {
            start: from,
            end: to,
        },
        busy,
        bookings,
    })
    .map_err(|e| ProviderTrouble::Internal(format!("availability: {e}")))
}

/// Whether `start` is still bookable, against fresh busy time.
async fn still_free(
    state: &AppState,
    ctx: &LinkContext,
    start: Timestamp,
    tz: &str,
    except: Option<&Booking>,
) -> Result<bool, ProviderTrouble> {
    let now = state.now();
    // A day around the start covers both buffers and the day's booking count.
    let from = start - SignedDuration::from_hours(36);
    let to = start + SignedDuration::from_hours(36);
    let (busy, bookings) = blocking(state, ctx, from, to, true, except).await?;
    let len = SignedDuration::from_mins(i64::from(ctx.meeting.duration_minutes));
    let found = compute(ctx, tz, now, start, start + len, &busy, &bookings)?;
    Ok(found.contains(&start))
}

/// Fresh slots to offer after a refusal: the week from the refused start's day.
async fn fresh_slots(
    state: &AppState,
    ctx: &LinkContext,
    tz: &str,
    around: Timestamp,
    except: Option<&Booking>,
) -> Vec<Timestamp> {
    state.scheduler.invalidate(ctx.recruiter.id);
    let zone = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    let day = around.to_zoned_datetime(zone.clone()).date();
    let from = day
        .to_zoned_datetime(zone)
        .map(|z| z.timestamp())
        .unwrap_or(around);
    let q = SlotQuery {
        time_zone: tz.to_owned(),
        from,
        to: from + SignedDuration::from_hours(24 * 7),
    };
    slots(state, ctx, &q, except).await.unwrap_or_default()
}

// ---- booking --------------------------------------------------------------------

/// What the candidate enters.
#[derive(Debug, Clone, Default)]
pub struct BookingInput {
    pub start: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub note: String,
    pub time_zone: String,
}

/// A field the candidate must fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Why a booking, reschedule or cancel did not happen.
#[derive(Debug)]
pub enum BookError {
    Link(LinkProblem),
    Invalid(Vec<FieldError>),
    /// Someone else took it, or the calendar changed: here are fresh slots.
    SlotTaken {
        slots: Vec<Timestamp>,
        day_full: bool,
    },
    Provider(ProviderTrouble),
    Store(StoreError),
}

impl From<StoreError> for BookError {
    fn from(e: StoreError) -> Self {
        BookError::Store(e)
    }
}

impl From<ProviderTrouble> for BookError {
    fn from(e: ProviderTrouble) -> Self {
        BookError::Provider(e)
    }
}

/// Checks an IANA zone name.
pub fn valid_zone(tz: &str) -> bool {
    !tz.is_empty() && tz.len() <= 64 && TimeZone::get(tz).is_ok()
}

/// Parses a slot start as RFC 3339 (an instant).
pub fn parse_start(s: &str) -> Option<Timestamp> {
    s.trim().parse::<Timestamp>().ok()
}

struct Valid {
    start: Timestamp,
    name: String,
    email: String,
    phone: Option<String>,
    note: Option<String>,
    time_zone: String,
}

fn validate(
    ctx: &LinkContext,
    input: &BookingInput,
    need_contact: bool,
) -> Result<Valid, BookError> {
    let mut errors = Vec::new();
    let mut err = |field, message: &str| {
        errors.push(FieldError {
            field,
            message: message.to_owned(),
        })
    };
    let start = parse_start(&input.start);
    if start.is_none() {
        err("start", "Pick one of the times offered.");
    }
    let tz = input.time_zone.trim();
    if !valid_zone(tz) {
        err("time_zone", "Pick a time zone from the list.");
    }
    let name = input.name.trim();
    let email = input.email.trim();
    let phone = input.phone.trim();
    let note = input.note.trim();
    let mut email_out = String::new();
    if need_contact {
        if name.is_empty() {
            err("name", "Enter your name.");
        } else if name.chars().count() > 200 {
            err("name", "Your name can be at most 200 characters.");
        }
        if email.is_empty() {
            match &ctx.candidate_email {
                Some(e) => email_out = e.clone(),
                None => err(
                    "email",
                    "Enter your email address, so the invitation can reach you.",
                ),
            }
        } else {
            match EmailAddress::parse(email) {
                Ok(e) => email_out = e.to_string(),
                Err(_) => err("email", "Enter an email address like name@example.com."),
            }
        }
        let phone_ok = phone.chars().filter(char::is_ascii_digit).count() >= 5
            && phone.len() <= 32
            && phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
        if ctx.link.meeting_kind == MeetingKind::PhoneScreen && phone.is_empty() {
            err("phone", "Enter the phone number the recruiter should call.");
        } else if !phone.is_empty() && !phone_ok {
            err(
                "phone",
                "Enter a phone number with digits, and optionally + ( ) - or spaces.",
            );
        }
        if note.chars().count() > 2000 {
            err("note", "The note can be at most 2,000 characters.");
        }
    }
    if !errors.is_empty() {
        return Err(BookError::Invalid(errors));
    }
    Ok(Valid {
        start: start.unwrap_or_default(),
        name: name.to_owned(),
        email: email_out,
        phone: Some(phone.to_owned()).filter(|p| !p.is_empty()),
        note: Some(note.to_owned()).filter(|n| !n.is_empty()),
        time_zone: tz.to_owned(),
    })
}

impl LinkContext {
    fn slot_at(&self, start: Timestamp) -> Slot {
        let end = start + SignedDuration::from_mins(i64::from(self.meeting.duration_minutes));
        Slot::with_buffers(
            start,
            end,
            self.meeting.before_buffer_minutes,
            self.meeting.after_buffer_minutes,
        )
    }

    /// The recruiter's day of `start`, for the daily cap.
    fn daily_cap(&self, start: Timestamp) -> Option<DailyCap> {
        let max = self.settings.max_per_day?;
        let zone = TimeZone::get(&self.recruiter.time_zone).ok()?;
        let day = start.to_zoned_datetime(zone.clone()).date();
        let day_start = day.to_zoned_datetime(zone.clone()).ok()?.timestamp();
        let day_end = day
            .checked_add(1.day())
            .ok()?
            .to_zoned_datetime(zone)
            .ok()?
            .timestamp();
        Some(DailyCap {
            max,
            day_start,
            day_end,
        })
    }
}

/// Books `input.start` through a link.
pub async fn book(
    state: &AppState,
    token: &str,
    input: &BookingInput,
) -> Result<(LinkContext, Booking), BookError> {
    let ctx = open_link(state, token).await.map_err(open_to_book)?;
    ctx.bookable().map_err(BookError::Link)?;
    let v = validate(&ctx, input, true)?;
    if !still_free(state, &ctx, v.start, &v.time_zone, None).await? {
        return Err(BookError::SlotTaken {
            slots: fresh_slots(state, &ctx, &v.time_zone, v.start, None).await,
            day_full: false,
        });
    }
    let now = state.now();
    let written = state
        .store
        .book(
            &NewBooking {
                org_id: ctx.link.org_id,
                link_id: ctx.link.id,
                slot: ctx.slot_at(v.start),
                attendee_name: &v.name,
                attendee_email: &v.email,
                attendee_phone: v.phone.as_deref(),
                attendee_note: v.note.as_deref(),
                attendee_time_zone: &v.time_zone,
                daily_cap: ctx.daily_cap(v.start),
            },
            now,
        )
        .await;
    let booking = match written {
        Ok(b) => b,
        Err(StoreError::Conflict { what }) => {
            return Err(conflict(state, &ctx, what, &v, None).await);
        }
        Err(e) => return Err(e.into()),
    };
    state.scheduler.invalidate(ctx.recruiter.id);
    audit(state, &ctx, "booking.created", booking.id).await;
    let booking = sync_event(state, &ctx, booking, EventChange::Create).await;
    let link_id = ctx.link.id;
    state.scheduler.forget_links(|c| c.link.id == link_id);
    Ok((ctx, booking))
}

/// Moves the link's booking to `input.start` (same provider event).
pub async fn reschedule(
    state: &AppState,
    token: &str,
    input: &BookingInput,
) -> Result<(LinkContext, Booking), BookError> {
    let ctx = open_link(state, token).await.map_err(open_to_book)?;
    let current = ctx
        .manageable(state.now())
        .map_err(BookError::Link)?
        .clone();
    let v = validate(&ctx, input, false)?;
    if v.start == current.slot.starts_at {
        return Ok((ctx, current));
    }
    if !still_free(state, &ctx, v.start, &v.time_zone, Some(&current)).await? {
        return Err(BookError::SlotTaken {
            slots: fresh_slots(state, &ctx, &v.time_zone, v.start, Some(&current)).await,
            day_full: false,
        });
    }
    let now = state.now();
    let moved = state
        .store
        .reschedule(
            ctx.link.org_id,
            current.id,
            &ctx.slot_at(v.start),
            ctx.daily_cap(v.start),
            now,
        )
        .await;
    let booking = match moved {
        Ok(b) => b,
        Err(StoreError::Conflict { what }) => {
            return Err(conflict(state, &ctx, what, &v, Some(&current)).await);
        }
        Err(e) => return Err(e.into()),
    };
    state.scheduler.invalidate(ctx.recruiter.id);
    audit(state, &ctx, "booking.rescheduled", booking.id).await;
    let booking = sync_event(state, &ctx, booking, EventChange::Move).await;
    let link_id = ctx.link.id;
    state.scheduler.forget_links(|c| c.link.id == link_id);
    Ok((ctx, booking))
}

/// Cancels the link's booking and deletes its event.
pub async fn cancel(state: &AppState, token: &str) -> Result<(LinkContext, Booking), BookError> {
    let ctx = open_link(state, token).await.map_err(open_to_book)?;
    let current = ctx
        .manageable(state.now())
        .map_err(BookError::Link)?
        .clone();
    let booking = state
        .store
        .cancel_booking(ctx.link.org_id, current.id, state.now())
        .await?;
    state.scheduler.invalidate(ctx.recruiter.id);
    audit(state, &ctx, "booking.cancelled", booking.id).await;
    let booking = sync_event(state, &ctx, booking, EventChange::Delete).await;
    let link_id = ctx.link.id;
    state.scheduler.forget_links(|c| c.link.id == link_id);
    Ok((ctx, booking))
}

fn open_to_book(e: OpenError) -> BookError {
    match e {
        OpenError::Link(p) => BookError::Link(p),
        OpenError::NotOffered => BookError::Invalid(vec![FieldError {
            field: "start",
            message:
                "The recruiter no longer offers this kind of meeting. Ask them for a new link."
                    .into(),
        }]),
        OpenError::Settings(s) => BookError::Store(StoreError::Corrupt(s)),
        OpenError::Store(s) => BookError::Store(s),
    }
}

async fn conflict(
    state: &AppState,
    ctx: &LinkContext,
    what: &'static str,
    v: &Valid,
    except: Option<&Booking>,
) -> BookError {
    use hirewire_store::{
        BOOKING_CANCELLED, DAY_FULL, LINK_EXPIRED, LINK_REVOKED, LINK_USED, SLOT_TAKEN,
    };
    match what {
        SLOT_TAKEN | DAY_FULL => BookError::SlotTaken {
            slots: fresh_slots(state, ctx, &v.time_zone, v.start, except).await,
            day_full: what == DAY_FULL,
        },
        LINK_USED => BookError::Link(LinkProblem::Used),
        LINK_EXPIRED => BookError::Link(LinkProblem::Expired),
        LINK_REVOKED => BookError::Link(LinkProblem::Revoked),
        BOOKING_CANCELLED => BookError::Link(LinkProblem::Cancelled),
        other => BookError::Store(StoreError::Conflict { what: other }),
    }
}

async fn audit(state: &AppState, ctx: &LinkContext, action: &str, booking: BookingId) {
    let target = format!("booking:{}", booking.get());
    let entry = hirewire_store::NewAudit {
        org_id: Some(ctx.link.org_id),
        actor_user_id: None,
        action,
        target: &target,
        detail: &json!({"link_id": ctx.link.id.get(), "candidate_id": ctx.link.candidate_id.get()}),
        ip: None,
    };
    if let Err(e) = state.store.record_audit(&entry, state.now()).await {
        tracing::warn!(error = %e, "recording a booking in the audit log failed");
    }
}

// ---- provider events ------------------------------------------------------------

/// What changed in a booking that its event must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventChange {
    Create,
    Move,
    Delete,
}

impl EventChange {
    fn as_str(self) -> &'static str {
        match self {
            EventChange::Create => "create",
            EventChange::Move => "move",
            EventChange::Delete => "delete",
        }
    }
}

/// Brings the provider event in line with `booking` now; when the provider
/// cannot be reached, leaves it to an [`EVENT_JOB`] and returns the booking
/// as it is.
async fn sync_event(
    state: &AppState,
    ctx: &LinkContext,
    booking: Booking,
    change: EventChange,
) -> Booking {
    match apply_event(state, ctx, &booking, change).await {
        Ok(Some(b)) => b,
        Ok(None) => booking,
        Err(trouble) => {
            tracing::warn!(
                booking = booking.id.get(),
                ?trouble,
                "calendar event left to a retry job"
            );
            let job = NewJob {
                kind: EVENT_JOB,
                payload: &json!({"booking_id": booking.id.get(), "org_id": booking.org_id.get(), "change": change.as_str()}),
                run_at: state.now(),
                max_attempts: state.config.scheduler.max_attempts,
                dedupe_key: None,
            };
            if let Err(e) = state.store.enqueue(&job, state.now()).await {
                tracing::error!(error = %e, "enqueueing a calendar event job failed");
            }
            booking
        }
    }
}

/// One attempt at the provider; `Some(booking)` when the store changed.
async fn apply_event(
    state: &AppState,
    ctx: &LinkContext,
    booking: &Booking,
    change: EventChange,
) -> Result<Option<Booking>, ProviderTrouble> {
    let (client, token, _) = calendar(state, &ctx.recruiter).await?;
    let fail = |e: ProviderError| ProviderTrouble::of(&e);
    match (booking.status, booking.provider_event_id.as_deref(), change) {
        (BookingStatus::Cancelled, None, _) => Ok(None),
        (BookingStatus::Cancelled, Some(id), _) => match client.cancel_event(&token, id).await {
            Ok(()) | Err(ProviderError::EventGone { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        },
        (BookingStatus::Confirmed, Some(id), EventChange::Move) => {
            match client
                .update_event_time(
                    &token,
                    id,
                    booking.slot.starts_at,
                    booking.slot.ends_at,
                    &ctx.recruiter.time_zone,
                )
                .await
            {
                Ok(()) => Ok(None),
                Err(e) => Err(fail(e)),
            }
        }
        (BookingStatus::Confirmed, Some(_), _) => Ok(None),
        (BookingStatus::Confirmed, None, _) => {
            let event = new_event(ctx, booking, client.provider());
            let created = client.create_event(&token, &event).await.map_err(fail)?;
            let internal = |e: StoreError| ProviderTrouble::Internal(e.to_string());
            state
                .store
                .set_booking_provider_event(
                    booking.org_id,
                    booking.id,
                    &created.provider_event_id,
                    Some(&created.ical_uid),
                    state.now(),
                )
                .await
                .map_err(internal)?;
            // The event is made at the booking's current time, so a move
            // stored before it was created needs nothing more.
            let b = state
                .store
                .booking(booking.org_id, booking.id)
                .await
                .map_err(internal)?;
            Ok(b)
        }
    }
}

fn new_event(ctx: &LinkContext, booking: &Booking, _provider: Provider) -> NewEvent {
    let kind = kind_label(booking.meeting_kind);
    let location = match &ctx.meeting.location {
        MeetingLocation::Phone => Location::Phone(
            booking
                .attendee
                .phone
                .clone()
                .map(|p| format!("Phone: {p}"))
                .unwrap_or_else(|| "Phone".into()),
        ),
        MeetingLocation::Video => Location::Video,
        MeetingLocation::Address(a) => Location::Address(a.clone()),
    };
    let mut body = format!(
        "{kind} with {} booked through hirewire Scheduler.\n",
        booking.attendee.name
    );
    if let Some(p) = &booking.attendee.phone {
        body.push_str(&format!("Phone: {p}\n"));
    }
    if let Some(n) = &booking.attendee.note {
        body.push_str(&format!("\nNote from {}:\n{n}\n", booking.attendee.name));
    }
    NewEvent {
        idempotency_key: booking.idempotency_key.clone(),
        subject: format!(
            "{kind}: {} and {}",
            booking.attendee.name, ctx.recruiter.display_name
        ),
        body_text: body,
        start: booking.slot.starts_at,
        end: booking.slot.ends_at,
        time_zone: ctx.recruiter.time_zone.clone(),
        attendee: Attendee {
            name: booking.attendee.name.clone(),
            email: booking.attendee.email.clone(),
        },
        location,
    }
}

/// Claims one due event job and runs it; `None` when nothing is due.
pub async fn run_event_job(state: &AppState, owner: &str) -> Option<Result<(), String>> {
    let cfg = state.config.scheduler;
    let job = match state
        .store
        .claim(owner, &[EVENT_JOB], state.now(), cfg.lease)
        .await
    {
        Ok(Some(j)) => j,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "claiming a calendar event job failed");
            return None;
        }
    };
    let outcome = run_event(state, &job.payload).await;
    let now = state.now();
    let done = match &outcome {
        Ok(()) => state
            .store
            .complete(job.id, job.fencing_token, now)
            .await
            .map(|_| ()),
        Err(error) => {
            let retry_at = now
                + SignedDuration::try_from(cfg.backoff.delay(job.attempt, rand::random::<f64>()))
                    .unwrap_or(SignedDuration::from_secs(60));
            state
                .store
                .fail(job.id, job.fencing_token, now, error, Some(retry_at))
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, "finishing a calendar event job failed");
    }
    Some(outcome)
}

async fn run_event(state: &AppState, payload: &serde_json::Value) -> Result<(), String> {
    let id = payload["booking_id"]
        .as_i64()
        .ok_or("the job has no booking_id")?;
    let org = payload["org_id"].as_i64().ok_or("the job has no org_id")?;
    let change = match payload["change"].as_str() {
        Some("move") => EventChange::Move,
        Some("delete") => EventChange::Delete,
        _ => EventChange::Create,
    };
    let booking = state
        .store
        .booking(hirewire_domain::ids::OrgId(org), BookingId(id))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the booking is gone")?;
    let link = state
        .store
        .link(booking.org_id, booking.link_id, state.now())
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the link is gone")?;
    let recruiter = state
        .store
        .user_by_id(booking.user_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the recruiter is gone")?;
    let settings = settings_of(state, &recruiter)
        .await
        .map_err(|e| e.to_string())?;
    let meeting = link
        .meeting
        .clone()
        .or_else(|| settings.meeting_type(booking.meeting_kind).cloned())
        .unwrap_or_else(|| {
            default_settings()
                .meeting_type(booking.meeting_kind)
                .cloned()
                .expect("both kinds have defaults")
        });
    let rules = rules_for(&settings, &meeting)?;
    let ctx = LinkContext {
        link,
        recruiter,
        candidate_name: String::new(),
        candidate_email: None,
        settings,
        meeting,
        rules,
        booking: Some(booking.clone()),
    };
    apply_event(state, &ctx, &booking, change)
        .await
        .map(|_| ())
        .map_err(|t| format!("{t:?}"))
}

// ---- add to calendar ------------------------------------------------------------

/// The `.ics` a candidate downloads: the same UID as the provider's invitation
/// (so calendars merge them), `METHOD:PUBLISH`, times in UTC.
pub fn ics(ctx: &LinkContext, booking: &Booking, manage_url: &str, now: Timestamp) -> String {
    use icalendar::{Calendar, Component, Event, EventLike, EventStatus};
    let uid = booking
        .ical_uid
        .clone()
        .unwrap_or_else(|| format!("{}@hirewire", booking.idempotency_key));
    let to_chrono = |t: Timestamp| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(t.as_second(), 0).unwrap_or_default()
    };
    let mut event = Event::new();
    event
        .uid(&uid)
        .summary(&summary(ctx, booking))
        .description(&format!("Manage or reschedule: {manage_url}"))
        .starts(to_chrono(booking.slot.starts_at))
        .ends(to_chrono(booking.slot.ends_at))
        .timestamp(to_chrono(now))
        .url(manage_url)
        .status(if booking.status == BookingStatus::Cancelled {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        });
    if let Some(loc) = location_text(ctx, booking) {
        event.location(&loc);
    }
    let mut cal = Calendar::new();
    cal.append_property(("METHOD", "PUBLISH"));
    cal.push(event.done());
    cal.to_string()
}

/// The meeting's title as the candidate sees it.
pub fn summary(ctx: &LinkContext, booking: &Booking) -> String {
    format!(
        "{} with {}",
        kind_label(booking.meeting_kind),
        ctx.recruiter.display_name
    )
}

/// Where, in words (`None` for a video call: the invitation has the link).
pub fn location_text(ctx: &LinkContext, booking: &Booking) -> Option<String> {
    match &ctx.meeting.location {
        MeetingLocation::Phone => Some(match &booking.attendee.phone {
            Some(p) => format!("{} will call you at {p}", ctx.recruiter.display_name),
            None => "Phone call".into(),
        }),
        MeetingLocation::Video => None,
        MeetingLocation::Address(a) => Some(a.clone()),
    }
}

/// "Add to Google Calendar" and "Add to Outlook" links.
pub fn calendar_links(ctx: &LinkContext, booking: &Booking, manage_url: &str) -> (String, String) {
    let title = summary(ctx, booking);
    let details = format!("Manage or reschedule: {manage_url}");
    let location = location_text(ctx, booking).unwrap_or_default();
    let g = |t: Timestamp| t.strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut google =
        url::Url::parse("https://calendar.google.com/calendar/render").expect("static url");
    google
        .query_pairs_mut()
        .append_pair("action", "TEMPLATE")
        .append_pair("text", &title)
        .append_pair(
            "dates",
            &format!("{}/{}", g(booking.slot.starts_at), g(booking.slot.ends_at)),
        )
        .append_pair("details", &details)
        .append_pair("location", &location);
    let mut outlook = url::Url::parse("https://outlook.office.com/calendar/0/deeplink/compose")
        .expect("static url");
    outlook
        .query_pairs_mut()
        .append_pair("path", "/calendar/action/compose")
        .append_pair("rru", "addevent")
        .append_pair("subject", &title)
        .append_pair("startdt", &booking.slot.starts_at.to_string())
        .append_pair("enddt", &booking.slot.ends_at.to_string())
        .append_pair("body", &details)
        .append_pair("location", &location);
    (google.into(), outlook.into())
}

/// Spawns the background worker that runs [`EVENT_JOB`]s.
pub fn spawn_worker(state: AppState) -> tokio::task::JoinHandle<()> {
    let owner = format!("scheduler-{:08x}", rand::random::<u32>());
    tokio::spawn(async move {
        loop {
            if run_event_job(&state, &owner).await.is_none() {
                tokio::time::sleep(state.config.sync.poll_interval).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(a: i64, b: i64) -> Interval {
        Interval {
            start: Timestamp::from_second(a).unwrap(),
            end: Timestamp::from_second(b).unwrap(),
        }
    }

    #[test]
    fn subtracting_an_event_cuts_it_out_of_busy_blocks_and_keeps_the_rest() {
        let busy = [iv(0, 10), iv(20, 60), iv(70, 80)];
        let t = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(
            subtract(&busy, t(30), t(40)),
            vec![iv(0, 10), iv(20, 30), iv(40, 60), iv(70, 80)]
        );
        assert_eq!(subtract(&busy, t(20), t(60)), vec![iv(0, 10), iv(70, 80)]);
        assert_eq!(subtract(&busy, t(100), t(110)), busy.to_vec());
    }

    #[test]
    fn the_default_settings_are_valid_and_offer_both_kinds() {
        let s = default_settings();
        s.validate().unwrap();
        for kind in [MeetingKind::PhoneScreen, MeetingKind::Interview] {
            let m = s.meeting_type(kind).unwrap();
            rules_for(&s, m).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn iso_weekdays_become_the_engines_weekdays() {
        let mut s = default_settings();
        s.working_hours[0].days = vec![1, 7];
        let r = rules_for(&s, &s.meeting_types[0]).unwrap();
        // Sunday-zero: Monday = 1, Sunday = 0.
        assert!(r.working_hours[0].days.contains_sunday_zero(1));
        assert!(r.working_hours[0].days.contains_sunday_zero(0));
        assert!(!r.working_hours[0].days.contains_sunday_zero(2));
    }
}
