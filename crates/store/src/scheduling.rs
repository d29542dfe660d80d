//! Scheduler: recruiters' scheduling settings, single-use scheduling links and
//! the bookings made through them.
//!
//! **No double booking.** Among one recruiter's *confirmed* bookings the
//! blocked ranges `[blocked_start, blocked_end)` (the meeting widened by its
//! before/after buffers) never overlap, whatever the durations or slot grids.
//! The database enforces it, not a read-then-write in Rust: PostgreSQL with an
//! exclusion constraint (`btree_gist`, `EXCLUDE USING gist (user_id WITH =,
//! int8range(blocked_start, blocked_end) WITH &&) WHERE (status =
//! 'confirmed')`), SQLite with `BEFORE INSERT` / `BEFORE UPDATE` triggers that
//! `RAISE(ABORT, 'slot_taken')`, the write running under `BEGIN IMMEDIATE`.
//! Both violations come back as `StoreError::Conflict { what: SLOT_TAKEN }`
//! (HTTP 409 `slot_taken`), and the whole write is rolled back: the loser's
//! link stays usable. Touching ranges (one ends where the next starts) are
//! allowed; cancelled bookings block nothing. On PostgreSQL the writes that
//! add a confirmed row version (book, reschedule, provider event) first take a
//! per-recruiter advisory transaction lock. It does not enforce the overlap
//! rule (the constraint does); it queues racing writers so that the loser gets
//! `slot_taken` at once instead of a deadlock between two exclusion checks, and
//! it makes the optional per-day cap ([`DailyCap`], counted inside the same
//! transaction) exact under concurrency, as `BEGIN IMMEDIATE` does on SQLite.
//!
//! **Links.** The store only sees the SHA-256 digest of a link's token. A link
//! is `sent`, then `opened`, then `booked` (once: it becomes the booking's
//! manage link) or `revoked`. `expired` is never stored: a link that is still
//! `sent`/`opened` at or after `expires_at` reads as [`LinkStatus::Expired`]
//! (so the status is always computed against the caller's `now`). A booked link
//! stays `booked` after `expires_at`; whether a manage link still works is the
//! caller's policy.
//!
//! **Provider events.** Each booking has an [`Booking::idempotency_key`] fixed
//! when it is created from its id: it is the `idempotency_key` of the
//! providers crate's calendar `NewEvent` (the Graph `transactionId`; the Google
//! event id is derived from it there), so a retried create never makes a second
//! event. Reschedule updates that event; cancel deletes it.

use hirewire_domain::ids::{BookingId, CandidateId, OrgId, SchedulingLinkId, UserId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{decode_enum, string_enum};
use crate::time::{ms, opt_ts, ts};
use crate::{Store, StoreError};

/// `Conflict` reason: the slot overlaps another confirmed booking of the recruiter.
pub const SLOT_TAKEN: &str = "slot_taken";
/// `Conflict` reason: the link was already used to book.
pub const LINK_USED: &str = "link_used";
/// `Conflict` reason: the link expired before it was used.
pub const LINK_EXPIRED: &str = "link_expired";
/// `Conflict` reason: the recruiter revoked the link.
pub const LINK_REVOKED: &str = "link_revoked";
/// `Conflict` reason: the recruiter's maximum of bookings for that day is reached.
pub const DAY_FULL: &str = "day_full";
/// `Conflict` reason: the booking was cancelled (it cannot be rescheduled).
pub const BOOKING_CANCELLED: &str = "booking_cancelled";

string_enum! {
    /// The kinds of meeting a recruiter offers.
    MeetingKind { PhoneScreen = "phone_screen", Interview = "interview" }
}

string_enum! {
    /// A scheduling link's status (`expired` is derived, never stored).
    LinkStatus { Sent = "sent", Opened = "opened", Booked = "booked", Expired = "expired", Revoked = "revoked" }
}

string_enum! {
    /// A booking's status.
    BookingStatus { Confirmed = "confirmed", Cancelled = "cancelled" }
}

// ---- settings -----------------------------------------------------------------

/// A time-of-day range in the recruiter's time zone: `"HH:MM"` to `"HH:MM"`
/// (`end` may be `"24:00"`), start before end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

/// Working hours: one range on each of `days` (ISO weekdays, 1 = Monday … 7 =
/// Sunday). Several entries may cover the same day (e.g. 09:00–12:00 and
/// 13:00–17:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingHours {
    pub days: Vec<u8>,
    pub start: String,
    pub end: String,
}

/// Replaces the working hours of one date (`"YYYY-MM-DD"`); no ranges = day off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateOverride {
    pub date: String,
    pub ranges: Vec<TimeRange>,
}

/// Where a meeting takes place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingLocation {
    /// The recruiter calls the candidate's phone number.
    Phone,
    /// A video conference created by the calendar provider (Teams / Meet).
    Video,
    /// In person, at this address.
    Address(String),
}

/// A meeting type the recruiter offers (at most one per kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingType {
    pub kind: MeetingKind,
    /// 15 to 120.
    pub duration_minutes: u32,
    /// Kept free before the meeting (at most 120).
    pub before_buffer_minutes: u32,
    /// Kept free after the meeting (at most 120).
    pub after_buffer_minutes: u32,
    pub location: MeetingLocation,
}

/// A recruiter's scheduling settings, stored as JSON (one row per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulingSettings {
    pub working_hours: Vec<WorkingHours>,
    pub overrides: Vec<DateOverride>,
    pub meeting_types: Vec<MeetingType>,
    /// No slot starts sooner than this after now.
    pub minimum_notice_minutes: u32,
    /// No slot today (in the recruiter's zone), whatever the notice.
    pub no_same_day: bool,
    /// How many days ahead slots are offered (1 to 365).
    pub horizon_days: u32,
    /// At most this many confirmed bookings per day (at least 1 when set).
    pub max_per_day: Option<u32>,
    /// Whether tentative calendar events count as busy.
    pub tentative_is_busy: bool,
}

/// Minutes since midnight of `"HH:MM"` (`"24:00"` allowed when `end`).
fn minute_of_day(s: &str, end: bool) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn check_range(start: &str, end: &str) -> Result<(), StoreError> {
    match (minute_of_day(start, false), minute_of_day(end, true)) {
        (Some(s), Some(e)) if s < e => Ok(()),
        _ => Err(StoreError::Invalid(format!(
            "time range {start:?}–{end:?}: expected HH:MM–HH:MM, start before end"
        ))),
    }
}

impl SchedulingSettings {
    /// The meeting type of `kind`, if offered.
    pub fn meeting_type(&self, kind: MeetingKind) -> Option<&MeetingType> {
        self.meeting_types.iter().find(|m| m.kind == kind)
    }

    /// Checks the rules stated on each field; `Invalid` says what is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |s: String| Err(StoreError::Invalid(s));
        for w in &self.working_hours {
            if w.days.is_empty() || w.days.iter().any(|d| !(1..=7).contains(d)) {
                return invalid(format!(
                    "working-hours days {:?}: expected 1 (Monday) to 7 (Sunday)",
                    w.days
                ));
            }
            check_range(&w.start, &w.end)?;
        }
        for o in &self.overrides {
            if o.date.len() != 10 || o.date.parse::<jiff::civil::Date>().is_err() {
                return invalid(format!("override date {:?}: expected YYYY-MM-DD", o.date));
            }
            for r in &o.ranges {
                check_range(&r.start, &r.end)?;
            }
        }
        for (i, m) in self.meeting_types.iter().enumerate() {
            if self.meeting_types[..i].iter().any(|p| p.kind == m.kind) {
                return invalid(format!("meeting type {} is defined twice", m.kind));
            }
            if !(15..=120).contains(&m.duration_minutes) {
                return invalid(format!(
                    "{} duration {} minutes: expected 15 to 120",
                    m.kind, m.duration_minutes
                ));
            }
            if m.before_buffer_minutes > 120 || m.after_buffer_minutes > 120 {
                return invalid(format!("{} buffers: at most 120 minutes each", m.kind));
            }
            if matches!(&m.location, MeetingLocation::Address(a) if a.trim().is_empty()) {
                return invalid(format!("{} address is empty", m.kind));
            }
        }
        if !(1..=365).contains(&self.horizon_days) {
            return invalid(format!(
                "horizon {} days: expected 1 to 365",
                self.horizon_days
            ));
        }
        if self.max_per_day == Some(0) {
            return invalid("maximum bookings per day: at least 1 (or none)".into());
        }
        Ok(())
    }
}

// ---- links ----------------------------------------------------------------------

/// A scheduling link (its token digest is never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulingLink {
    pub id: SchedulingLinkId,
    pub org_id: OrgId,
    /// The recruiter.
    pub user_id: UserId,
    pub candidate_id: CandidateId,
    pub meeting_kind: MeetingKind,
    /// As of the `now` of the read (see the module docs for `expired`).
    pub status: LinkStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub opened_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Set once booked.
    pub booking_id: Option<BookingId>,
    /// The token sealed by the caller's keyring (opaque here), so the link
    /// can be shown again; `None` for links made without it.
    pub token_sealed: Option<String>,
    /// The meeting offered, fixed at creation (`None`: the recruiter's
    /// current settings for `meeting_kind`).
    pub meeting: Option<MeetingType>,
}

impl SchedulingLink {
    /// True when a booking can still be made with it.
    pub fn is_bookable(&self) -> bool {
        matches!(self.status, LinkStatus::Sent | LinkStatus::Opened)
    }
}

/// Input of [`Store::create_link`].
#[derive(Debug, Clone, Copy)]
pub struct NewSchedulingLink<'a> {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub candidate_id: CandidateId,
    pub meeting_kind: MeetingKind,
    /// SHA-256 of the token (the token itself has at least 128 random bits).
    pub token_digest: &'a [u8],
    /// The token sealed by the caller (opaque to the store), or `None`.
    pub token_sealed: Option<&'a str>,
    /// The meeting offered; its kind must be `meeting_kind`.
    pub meeting: Option<&'a MeetingType>,
    pub expires_at: Timestamp,
}

/// Which links [`Store::list_links`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFilter {
    Candidate(CandidateId),
    User(UserId),
}

// ---- bookings -------------------------------------------------------------------

/// A meeting's time and the range it blocks in the recruiter's calendar.
/// `blocked_start <= starts_at < ends_at <= blocked_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// `starts_at` − before buffer.
    pub blocked_start: Timestamp,
    /// `ends_at` + after buffer.
    pub blocked_end: Timestamp,
}

impl Slot {
    /// The slot `[starts_at, ends_at)` with buffers in minutes.
    pub fn with_buffers(
        starts_at: Timestamp,
        ends_at: Timestamp,
        before_minutes: u32,
        after_minutes: u32,
    ) -> Slot {
        let minutes = |m: u32| jiff::SignedDuration::from_mins(i64::from(m));
        Slot {
            starts_at,
            ends_at,
            blocked_start: starts_at
                .saturating_sub(minutes(before_minutes))
                .unwrap_or(Timestamp::MIN),
            blocked_end: ends_at
                .saturating_add(minutes(after_minutes))
                .unwrap_or(Timestamp::MAX),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.blocked_start <= self.starts_at
            && self.starts_at < self.ends_at
            && self.ends_at <= self.blocked_end
        {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "slot {self:?}: expected blocked_start <= starts_at < ends_at <= blocked_end"
            )))
        }
    }
}

/// Who booked (as the candidate entered it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub note: Option<String>,
    /// IANA zone the candidate picked, validated by the caller.
    pub time_zone: String,
}

/// A booked meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub id: BookingId,
    pub org_id: OrgId,
    /// The recruiter.
    pub user_id: UserId,
    pub link_id: SchedulingLinkId,
    pub candidate_id: CandidateId,
    pub meeting_kind: MeetingKind,
    pub slot: Slot,
    pub status: BookingStatus,
    pub attendee: Attendee,
    /// The provider's event id, once created.
    pub provider_event_id: Option<String>,
    pub ical_uid: Option<String>,
    /// Stable for the booking's life: the key of the provider event's
    /// idempotent create. Only `0-9a-v`, so it is itself a valid Google event
    /// id too.
    pub idempotency_key: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
}

/// Input of [`Store::book`].
#[derive(Debug, Clone, Copy)]
pub struct NewBooking<'a> {
    pub org_id: OrgId,
    /// The recruiter, candidate and meeting kind come from the link.
    pub link_id: SchedulingLinkId,
    pub slot: Slot,
    pub attendee_name: &'a str,
    pub attendee_email: &'a str,
    pub attendee_phone: Option<&'a str>,
    pub attendee_note: Option<&'a str>,
    pub attendee_time_zone: &'a str,
    /// The recruiter's maximum bookings per day, checked in the same
    /// transaction (so racing bookings cannot exceed it).
    pub daily_cap: Option<DailyCap>,
}

/// At most `max` confirmed bookings of the recruiter start in `[day_start,
/// day_end)`: the slot's day in the recruiter's zone, computed by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCap {
    /// At least 1.
    pub max: u32,
    pub day_start: Timestamp,
    pub day_end: Timestamp,
}

impl DailyCap {
    fn check(&self, slot: &Slot) -> Result<(), StoreError> {
        if self.max >= 1 && self.day_start <= slot.starts_at && slot.starts_at < self.day_end {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "daily cap {self:?}: expected max >= 1 and the slot starting within the day"
            )))
        }
    }
}

/// Counts the recruiter's other confirmed bookings starting in the cap's day
/// (call after the row is written, inside the transaction) and refuses with
/// `DAY_FULL` when they already reach the cap.
macro_rules! check_daily_cap {
    ($tx:ident, $cap:expr, $user:expr, $booking:expr) => {
        if let Some(cap) = $cap {
            let others: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM bookings WHERE user_id = $1 AND status = 'confirmed' \
                 AND starts_at >= $2 AND starts_at < $3 AND id <> $4",
            )
            .bind($user)
            .bind(ms(cap.day_start))
            .bind(ms(cap.day_end))
            .bind($booking)
            .fetch_one(&mut *$tx)
            .await?;
            if others >= i64::from(cap.max) {
                return Err(StoreError::Conflict { what: DAY_FULL });
            }
        }
    };
}

/// First key of the PostgreSQL advisory lock that orders one recruiter's
/// booking writes (the second key is the recruiter's id): without it, two
/// transactions inserting overlapping ranges each wait for the other's
/// exclusion check and one dies as a deadlock after `deadlock_timeout`.
/// (The two-key space never meets the single-key one sqlx's migrator uses.)
const RECRUITER_LOCK: i32 = 0x6877_626b; // "hwbk"

/// PostgreSQL: takes the recruiter's booking lock for the rest of the
/// transaction, the recruiter being found by `$2` through `$1`'s subquery.
/// SQLite needs nothing: `BEGIN IMMEDIATE` already serializes writers.
macro_rules! lock_recruiter {
    ($store:expr, $tx:ident, $user_of:literal, $id:expr) => {
        if $store.backend() == crate::Backend::Postgres {
            sqlx::query(concat!(
                "SELECT pg_advisory_xact_lock($1, CAST((",
                $user_of,
                ") % 2147483647 AS INTEGER))"
            ))
            .bind(RECRUITER_LOCK)
            .bind($id)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

/// Why `link` cannot be booked.
fn unusable(link: &SchedulingLink) -> StoreError {
    StoreError::Conflict {
        what: match link.status {
            LinkStatus::Expired => LINK_EXPIRED,
            LinkStatus::Revoked => LINK_REVOKED,
            LinkStatus::Booked => LINK_USED,
            LinkStatus::Sent | LinkStatus::Opened => "the link changed; try again",
        },
    }
}

/// The booking's idempotency key: only `0-9` and `a-v` (Google event ids are
/// base32hex); the creation instant keeps two installations (or a restored
/// database) from reusing one for the same booking id.
fn idempotency_key(id: i64, created_ms: i64) -> String {
    format!("hirebooking{id}t{created_ms}")
}

/// Maps the overlap rule's violation (either backend) to `SLOT_TAKEN` and a
/// second booking of the same link to `LINK_USED`.
fn booking_write_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if matches!(d.kind(), sqlx::error::ErrorKind::ExclusionViolation)
            || d.message().contains(SLOT_TAKEN)
        {
            return StoreError::Conflict { what: SLOT_TAKEN };
        }
        if d.is_unique_violation()
            && (d.constraint().is_some_and(|c| c.contains("link_id"))
                || d.message().contains("link_id"))
        {
            return StoreError::Conflict { what: LINK_USED };
        }
    }
    StoreError::Database(e)
}

macro_rules! link_cols {
    () => {
        "id, org_id, user_id, candidate_id, meeting_kind, status, created_at, expires_at, opened_at, \
         revoked_at, booking_id, token_sealed, meeting"
    };
}

macro_rules! booking_cols {
    () => {
        "id, org_id, user_id, link_id, candidate_id, meeting_kind, starts_at, ends_at, blocked_start, \
         blocked_end, status, attendee_name, attendee_email, attendee_phone, attendee_note, \
         attendee_time_zone, provider_event_id, ical_uid, idempotency_key, created_at, updated_at, cancelled_at"
    };
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    id: i64,
    org_id: i64,
    user_id: i64,
    candidate_id: i64,
    meeting_kind: String,
    status: String,
    created_at: i64,
    expires_at: i64,
    opened_at: Option<i64>,
    revoked_at: Option<i64>,
    booking_id: Option<i64>,
    token_sealed: Option<String>,
    meeting: Option<String>,
}

impl LinkRow {
    fn decode(self, now: Timestamp) -> Result<SchedulingLink, StoreError> {
        let mut status: LinkStatus = decode_enum(&self.status)?;
        if matches!(status, LinkStatus::Sent | LinkStatus::Opened) && self.expires_at <= ms(now) {
            status = LinkStatus::Expired;
        }
        Ok(SchedulingLink {
            id: SchedulingLinkId(self.id),
            org_id: OrgId(self.org_id),
            user_id: UserId(self.user_id),
            candidate_id: CandidateId(self.candidate_id),
            meeting_kind: decode_enum(&self.meeting_kind)?,
            status,
            created_at: ts(self.created_at)?,
            expires_at: ts(self.expires_at)?,
            opened_at: opt_ts(self.opened_at)?,
            revoked_at: opt_ts(self.revoked_at)?,
            booking_id: self.booking_id.map(BookingId),
            token_sealed: self.token_sealed,
            meeting: self
                .meeting
                .map(|m| {
                    serde_json::from_str(&m)
                        .map_err(|e| StoreError::Corrupt(format!("link meeting: {e}")))
                })
                .transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: i64,
    org_id: i64,
    user_id: i64,
    link_id: i64,
    candidate_id: i64,
    meeting_kind: String,
    starts_at: i64,
    ends_at: i64,
    blocked_start: i64,
    blocked_end: i64,
    status: String,
    attendee_name: String,
    attendee_email: String,
    attendee_phone: Option<String>,
    attendee_note: Option<String>,
    attendee_time_zone: String,
    provider_event_id: Option<String>,
    ical_uid: Option<String>,
    idempotency_key: Option<String>,
    created_at: i64,
    updated_at: i64,
    cancelled_at: Option<i64>,
}

impl TryFrom<BookingRow> for Booking {
    type Error = StoreError;
    fn try_from(r: BookingRow) -> Result<Self, StoreError> {
        Ok(Booking {
            id: BookingId(r.id),
            org_id: OrgId(r.org_id),
            user_id: UserId(r.user_id),
            link_id: SchedulingLinkId(r.link_id),
            candidate_id: CandidateId(r.candidate_id),
            meeting_kind: decode_enum(&r.meeting_kind)?,
            slot: Slot {
                starts_at: ts(r.starts_at)?,
                ends_at: ts(r.ends_at)?,
                blocked_start: ts(r.blocked_start)?,
                blocked_end: ts(r.blocked_end)?,
            },
            status: decode_enum(&r.status)?,
            attendee: Attendee {
                name: r.attendee_name,
                email: r.attendee_email,
                phone: r.attendee_phone,
                note: r.attendee_note,
                time_zone: r.attendee_time_zone,
            },
            provider_event_id: r.provider_event_id,
            ical_uid: r.ical_uid,
            idempotency_key: r.idempotency_key.ok_or_else(|| {
                StoreError::Corrupt(format!("booking {} has no idempotency key", r.id))
            })?,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
            cancelled_at: opt_ts(r.cancelled_at)?,
        })
    }
}

impl Store {
    // ---- settings ---------------------------------------------------------------

    /// The recruiter's settings; `None` until saved (or for another org's user).
    pub async fn get_scheduling_settings(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<SchedulingSettings>, StoreError> {
        let text: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT settings FROM scheduling_settings WHERE user_id = $1 AND org_id = $2"
        )
        .bind(user.get())
        .bind(org.get())
        .fetch_optional(pool)
        .await)?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("scheduling settings: {e}")))
        })
        .transpose()
    }

    /// Validates and stores (inserts or replaces) the recruiter's settings.
    /// `NotFound` when the user is not in `org`.
    pub async fn save_scheduling_settings(
        &self,
        org: OrgId,
        user: UserId,
        settings: &SchedulingSettings,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        settings.validate()?;
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Invalid(format!("scheduling settings: {e}")))?;
        let n = write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO scheduling_settings (user_id, org_id, settings, updated_at) \
                 SELECT id, org_id, $3, $4 FROM users WHERE id = $1 AND org_id = $2 \
                 ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(user.get())
            .bind(org.get())
            .bind(json.as_str())
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        crate::error::touched(n, StoreError::NotFound)
    }

    // ---- links ------------------------------------------------------------------

    /// Creates a `sent` link. `NotFound` when the recruiter or the candidate is
    /// not in the org; `Conflict` if the digest is already in use.
    pub async fn create_link(
        &self,
        l: &NewSchedulingLink<'_>,
        now: Timestamp,
    ) -> Result<SchedulingLink, StoreError> {
        if l.expires_at <= now {
            return Err(StoreError::Invalid("the link expires before now".into()));
        }
        let meeting = match l.meeting {
            Some(m) if m.kind != l.meeting_kind => {
                return Err(StoreError::Invalid(format!(
                    "the link's meeting is a {}, not a {}",
                    m.kind, l.meeting_kind
                )));
            }
            Some(m) => {
                let probe = SchedulingSettings {
                    working_hours: Vec::new(),
                    overrides: Vec::new(),
                    meeting_types: vec![m.clone()],
                    minimum_notice_minutes: 0,
                    no_same_day: false,
                    horizon_days: 1,
                    max_per_day: None,
                    tentative_is_busy: false,
                };
                probe.validate()?;
                Some(
                    serde_json::to_string(m)
                        .map_err(|e| StoreError::Invalid(format!("link meeting: {e}")))?,
                )
            }
            None => None,
        };
        let sql = concat!(
            "INSERT INTO scheduling_links (org_id, user_id, candidate_id, meeting_kind, token_digest, status, \
             created_at, expires_at, token_sealed, meeting) \
             SELECT u.org_id, u.id, c.id, $4, $5, 'sent', $6, $7, $8, $9 FROM users u JOIN candidates c ON c.org_id = u.org_id \
             WHERE u.id = $2 AND u.org_id = $1 AND c.id = $3 RETURNING ",
            link_cols!()
        );
        let row: Option<LinkRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(l.org_id.get())
                .bind(l.user_id.get())
                .bind(l.candidate_id.get())
                .bind(l.meeting_kind.as_str())
                .bind(l.token_digest)
                .bind(ms(now))
                .bind(ms(l.expires_at))
                .bind(l.token_sealed)
                .bind(meeting.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(crate::error::conflict("the link token is already in use"))?
        });
        row.ok_or(StoreError::NotFound)?.decode(now)
    }

    /// The link whose token has this digest (any org: the token is the
    /// credential), with its status as of `now`.
    pub async fn link_by_digest(
        &self,
        digest: &[u8],
        now: Timestamp,
    ) -> Result<Option<SchedulingLink>, StoreError> {
        let sql = concat!(
            "SELECT ",
            link_cols!(),
            " FROM scheduling_links WHERE token_digest = $1"
        );
        let row: Option<LinkRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(digest)
            .fetch_optional(pool)
            .await)?;
        row.map(|r| r.decode(now)).transpose()
    }

    /// One link of the org, with its status as of `now`.
    pub async fn link(
        &self,
        org: OrgId,
        id: SchedulingLinkId,
        now: Timestamp,
    ) -> Result<Option<SchedulingLink>, StoreError> {
        let sql = concat!(
            "SELECT ",
            link_cols!(),
            " FROM scheduling_links WHERE id = $1 AND org_id = $2"
        );
        let row: Option<LinkRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id.get())
            .bind(org.get())
            .fetch_optional(pool)
            .await)?;
        row.map(|r| r.decode(now)).transpose()
    }

    /// Records the first opening of a `sent`, unexpired link; returns whether
    /// it changed anything (later openings, expired, booked or revoked links
    /// are left alone).
    pub async fn mark_link_opened(
        &self,
        id: SchedulingLinkId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let n = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE scheduling_links SET status = 'opened', opened_at = $2 \
                 WHERE id = $1 AND status = 'sent' AND expires_at > $2",
            )
            .bind(id.get())
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Revokes a link that was not booked (expired ones included); revoking
    /// twice is a no-op. `Conflict { what: LINK_USED }` for a booked link
    /// (cancel the booking instead), `NotFound` outside the org.
    pub async fn revoke_link(
        &self,
        org: OrgId,
        id: SchedulingLinkId,
        now: Timestamp,
    ) -> Result<SchedulingLink, StoreError> {
        let sql = concat!(
            "UPDATE scheduling_links SET status = 'revoked', revoked_at = $3 \
             WHERE id = $1 AND org_id = $2 AND status IN ('sent', 'opened') RETURNING ",
            link_cols!()
        );
        let row: Option<LinkRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(id.get())
                .bind(org.get())
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await?
        });
        if let Some(row) = row {
            return row.decode(now);
        }
        let link = self.link(org, id, now).await?.ok_or(StoreError::NotFound)?;
        match link.status {
            LinkStatus::Revoked => Ok(link),
            LinkStatus::Booked => Err(StoreError::Conflict { what: LINK_USED }),
            // Changed between the two statements: let the caller retry.
            _ => Err(StoreError::Conflict {
                what: "the link changed; try again",
            }),
        }
    }

    /// The org's links for one candidate or one recruiter, newest first, with
    /// their status as of `now`.
    pub async fn list_links(
        &self,
        org: OrgId,
        filter: LinkFilter,
        now: Timestamp,
    ) -> Result<Vec<SchedulingLink>, StoreError> {
        let (sql, id) = match filter {
            LinkFilter::Candidate(c) => (
                concat!(
                    "SELECT ",
                    link_cols!(),
                    " FROM scheduling_links WHERE org_id = $1 AND candidate_id = $2 ORDER BY id DESC"
                ),
                c.get(),
            ),
            LinkFilter::User(u) => (
                concat!(
                    "SELECT ",
                    link_cols!(),
                    " FROM scheduling_links WHERE org_id = $1 AND user_id = $2 ORDER BY id DESC"
                ),
                u.get(),
            ),
        };
        let rows: Vec<LinkRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(org.get())
            .bind(id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(|r| r.decode(now)).collect()
    }

    // ---- bookings ---------------------------------------------------------------

    /// Books a slot through a link, atomically: the link must be bookable
    /// (`sent`/`opened` and unexpired at `now`), the booking is inserted
    /// (`confirmed`) and the link becomes `booked` with its `booking_id`.
    ///
    /// Errors (nothing is written): `Conflict` with [`SLOT_TAKEN`] (the blocked
    /// range overlaps another confirmed booking of the recruiter), [`DAY_FULL`]
    /// (with a `daily_cap`),
    /// [`LINK_USED`], [`LINK_EXPIRED`] or [`LINK_REVOKED`]; `NotFound` for a
    /// link outside the org; `Invalid` for a malformed slot.
    pub async fn book(&self, b: &NewBooking<'_>, now: Timestamp) -> Result<Booking, StoreError> {
        b.slot.check()?;
        if let Some(cap) = &b.daily_cap {
            cap.check(&b.slot)?;
        }
        let now_ms = ms(now);
        let sql = concat!(
            "UPDATE bookings SET idempotency_key = $2 WHERE id = $1 RETURNING ",
            booking_cols!()
        );
        let row: Option<BookingRow> = write_tx!(self, |tx| {
            lock_recruiter!(
                self,
                tx,
                "SELECT user_id FROM scheduling_links WHERE id = $2",
                b.link_id.get()
            );
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO bookings (org_id, user_id, link_id, candidate_id, meeting_kind, starts_at, ends_at, \
                 blocked_start, blocked_end, status, attendee_name, attendee_email, attendee_phone, attendee_note, \
                 attendee_time_zone, created_at, updated_at) \
                 SELECT l.org_id, l.user_id, l.id, l.candidate_id, l.meeting_kind, $3, $4, $5, $6, 'confirmed', \
                 $7, $8, $9, $10, $11, $12, $12 FROM scheduling_links l \
                 WHERE l.id = $1 AND l.org_id = $2 AND l.status IN ('sent', 'opened') AND l.expires_at > $12 \
                 RETURNING id",
            )
            .bind(b.link_id.get())
            .bind(b.org_id.get())
            .bind(ms(b.slot.starts_at))
            .bind(ms(b.slot.ends_at))
            .bind(ms(b.slot.blocked_start))
            .bind(ms(b.slot.blocked_end))
            .bind(b.attendee_name)
            .bind(b.attendee_email)
            .bind(b.attendee_phone)
            .bind(b.attendee_note)
            .bind(b.attendee_time_zone)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(booking_write_err)?;
            match id {
                None => None,
                Some(id) => {
                    // PostgreSQL: a concurrent revoke or booking of this link
                    // committed after our snapshot; the row lock makes us see it.
                    let claimed = sqlx::query(
                        "UPDATE scheduling_links SET status = 'booked', booking_id = $2 \
                         WHERE id = $1 AND status IN ('sent', 'opened')",
                    )
                    .bind(b.link_id.get())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed == 0 {
                        // Say why from this transaction's own fresh read;
                        // returning rolls the booking back.
                        let link: LinkRow = sqlx::query_as(concat!(
                            "SELECT ",
                            link_cols!(),
                            " FROM scheduling_links WHERE id = $1"
                        ))
                        .bind(b.link_id.get())
                        .fetch_one(&mut *tx)
                        .await?;
                        return Err(unusable(&link.decode(now)?));
                    }
                    let row: BookingRow = sqlx::query_as(sql)
                        .bind(id)
                        .bind(idempotency_key(id, now_ms))
                        .fetch_one(&mut *tx)
                        .await?;
                    check_daily_cap!(tx, b.daily_cap, row.user_id, id);
                    Some(row)
                }
            }
        });
        if let Some(row) = row {
            return row.try_into();
        }
        // Nothing was written: say why.
        let link = self
            .link(b.org_id, b.link_id, now)
            .await?
            .ok_or(StoreError::NotFound)?;
        Err(unusable(&link))
    }

    /// Moves a confirmed booking to `slot` under the same no-overlap rule (its
    /// own old range does not count) and, with `daily_cap`, the new day's cap
    /// (itself not counted). On `Conflict` with [`SLOT_TAKEN`] or [`DAY_FULL`]
    /// the booking is unchanged; `Conflict { what: BOOKING_CANCELLED }` for a
    /// cancelled one; `NotFound` outside the org.
    pub async fn reschedule(
        &self,
        org: OrgId,
        id: BookingId,
        slot: &Slot,
        daily_cap: Option<DailyCap>,
        now: Timestamp,
    ) -> Result<Booking, StoreError> {
        slot.check()?;
        if let Some(cap) = &daily_cap {
            cap.check(slot)?;
        }
        let sql = concat!(
            "UPDATE bookings SET starts_at = $3, ends_at = $4, blocked_start = $5, blocked_end = $6, updated_at = $7 \
             WHERE id = $1 AND org_id = $2 AND status = 'confirmed' RETURNING ",
            booking_cols!()
        );
        let row: Option<BookingRow> = write_tx!(self, |tx| {
            lock_recruiter!(
                self,
                tx,
                "SELECT user_id FROM bookings WHERE id = $2",
                id.get()
            );
            let row: Option<BookingRow> = sqlx::query_as(sql)
                .bind(id.get())
                .bind(org.get())
                .bind(ms(slot.starts_at))
                .bind(ms(slot.ends_at))
                .bind(ms(slot.blocked_start))
                .bind(ms(slot.blocked_end))
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await
                .map_err(booking_write_err)?;
            if let Some(r) = &row {
                check_daily_cap!(tx, daily_cap, r.user_id, r.id);
            }
            row
        });
        match row {
            Some(row) => row.try_into(),
            None => match self.booking(org, id).await? {
                None => Err(StoreError::NotFound),
                Some(_) => Err(StoreError::Conflict {
                    what: BOOKING_CANCELLED,
                }),
            },
        }
    }

    /// Cancels a booking, freeing its range; cancelling twice returns the
    /// cancelled booking unchanged. `NotFound` outside the org.
    pub async fn cancel_booking(
        &self,
        org: OrgId,
        id: BookingId,
        now: Timestamp,
    ) -> Result<Booking, StoreError> {
        let sql = concat!(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = $3, updated_at = $3 \
             WHERE id = $1 AND org_id = $2 AND status = 'confirmed' RETURNING ",
            booking_cols!()
        );
        let row: Option<BookingRow> = write_tx!(self, |tx| {
            sqlx::query_as(sql)
                .bind(id.get())
                .bind(org.get())
                .bind(ms(now))
                .fetch_optional(&mut *tx)
                .await?
        });
        match row {
            Some(row) => row.try_into(),
            None => self.booking(org, id).await?.ok_or(StoreError::NotFound),
        }
    }

    /// Records the provider's event for a booking. `NotFound` outside the org.
    pub async fn set_booking_provider_event(
        &self,
        org: OrgId,
        id: BookingId,
        event_id: &str,
        ical_uid: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let n = write_tx!(self, |tx| {
            // A non-HOT update re-checks the exclusion constraint: order it too.
            lock_recruiter!(
                self,
                tx,
                "SELECT user_id FROM bookings WHERE id = $2",
                id.get()
            );
            sqlx::query(
                "UPDATE bookings SET provider_event_id = $3, ical_uid = $4, updated_at = $5 \
                 WHERE id = $1 AND org_id = $2",
            )
            .bind(id.get())
            .bind(org.get())
            .bind(event_id)
            .bind(ical_uid)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        crate::error::touched(n, StoreError::NotFound)
    }

    pub async fn booking(&self, org: OrgId, id: BookingId) -> Result<Option<Booking>, StoreError> {
        let sql = concat!(
            "SELECT ",
            booking_cols!(),
            " FROM bookings WHERE id = $1 AND org_id = $2"
        );
        let row: Option<BookingRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id.get())
            .bind(org.get())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The booking made through the link with this token digest (its manage
    /// link), whatever its status.
    pub async fn booking_by_link_digest(
        &self,
        digest: &[u8],
    ) -> Result<Option<Booking>, StoreError> {
        let sql = concat!(
            "SELECT ",
            booking_cols!(),
            " FROM bookings WHERE link_id = (SELECT id FROM scheduling_links WHERE token_digest = $1)"
        );
        let row: Option<BookingRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(digest)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// A candidate's bookings (any status) before the keyset `(updated_at,
    /// id)`, newest change first: the timeline's booking items.
    pub(crate) async fn candidate_bookings_before(
        &self,
        org: OrgId,
        candidate: CandidateId,
        before_at: Option<i64>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<Booking>, StoreError> {
        let sql = concat!(
            "SELECT ",
            booking_cols!(),
            " FROM bookings WHERE org_id = $1 AND candidate_id = $2 \
             AND ($3 IS NULL OR updated_at < $3 OR (updated_at = $3 AND id < $4)) \
             ORDER BY updated_at DESC, id DESC LIMIT $5"
        );
        let rows: Vec<BookingRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(org.get())
            .bind(candidate.get())
            .bind(before_at)
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The recruiter's confirmed bookings whose *blocked* range overlaps
    /// `[from, to)`, by start time: the availability engine's existing
    /// bookings, and (every booking starting in a day is included when the
    /// window covers the day) its per-day count.
    pub async fn confirmed_bookings(
        &self,
        org: OrgId,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Booking>, StoreError> {
        let sql = concat!(
            "SELECT ",
            booking_cols!(),
            " FROM bookings WHERE user_id = $1 AND org_id = $2 AND status = 'confirmed' \
             AND blocked_start < $4 AND blocked_end > $3 ORDER BY starts_at, id"
        );
        let rows: Vec<BookingRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(user.get())
            .bind(org.get())
            .bind(ms(from))
            .bind(ms(to))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_are_strict_hh_mm() {
        assert_eq!(minute_of_day("09:30", false), Some(570));
        assert_eq!(minute_of_day("24:00", true), Some(1440));
        for bad in ["24:00", "9:30", "09:60", "0930", "+9:30", "09:3x"] {
            assert_eq!(minute_of_day(bad, false), None, "{bad}");
        }
        assert!(check_range("09:00", "09:00").is_err());
    }

    #[test]
    fn idempotency_keys_are_valid_google_event_ids() {
        let key = idempotency_key(42, 1_767_225_600_000);
        assert!(key.len() >= 5);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{key}"
        );
    }
}
