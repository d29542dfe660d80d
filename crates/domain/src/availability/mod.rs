//! The availability engine: bookable slot starts from working hours and busy
//! time, correct across DST changes.
//!
//! A pure function (no I/O of its own, no async): the Scheduler hands it a
//! recruiter's [`Rules`], their busy time and existing bookings, and gets the
//! start instants a candidate may book.
//!
//! # Semantics
//!
//! These are exactly those of the slots benchmark contract
//! (`shared/bench/README.md`, `slots/ref_slots.py`), plus three product
//! extensions (date overrides, a daily cap, "no same day").
//!
//! * **Working hours** are wall-clock ranges in the organizer's (recruiter's)
//!   zone, applied to every local date touching the window. A local time in a
//!   DST gap moves later, one in a fold takes the earlier instant (jiff's
//!   `compatible`), so `00:00-05:00` on a fall-back night lasts 6 real hours.
//!   `24:00` means the next day's `00:00`. Each window is clipped to the
//!   request window.
//! * **Date overrides** replace the weekly ranges of one local date; an
//!   override without ranges makes the date unavailable.
//! * **Busy time** (and existing bookings) is widened to
//!   `[start - after_buffer, end + before_buffer]`, so a new meeting keeps its
//!   own buffers clear of existing ones.
//! * **The grid**: a start `t` is on the grid when its wall-clock minute of day
//!   in the **invitee's** zone is a multiple of the slot interval. Candidates
//!   are whole 5-minute UTC instants stepped in real time, so a DST change
//!   inside a window neither drops nor duplicates a slot.
//! * **A slot `[t, t + length)` counts** when it lies inside one working-hours
//!   window, overlaps no widened busy interval, and
//!   `t >= max(window.start, now + minimum_notice)`; with a horizon it must
//!   also end by `now + horizon`.
//! * **Daily cap**: with `daily_cap = Some(n)`, a local date (organizer zone)
//!   on which `n` or more existing bookings start offers no slot.
//! * **No same day**: no slot starts on the organizer-local date of `now`.
//!
//! Output: sorted, unique start instants.
//!
//! # Entry points
//!
//! * [`compute`] takes a [`Request`] of jiff [`Timestamp`]s and zone names.
//! * [`compute_ms`] is the lower-level entry on Unix milliseconds with
//!   resolved zones and caller-owned buffers (used by `bench-slots`, and by
//!   callers that already hold instants as integers); together with
//!   [`parse_timestamp_ms`] and [`push_timestamp_ms`] it lets a caller go from
//!   strings to strings without intermediate allocations.
//!
//! # Limits
//!
//! A window of at most [`MAX_WINDOW_DAYS`] days, at most [`MAX_INTERVALS`]
//! busy intervals plus bookings, at most [`MAX_RANGES`] working-hours ranges
//! and override ranges. Cost is `O(n log n)` in busy intervals plus
//! `O(days x ranges x candidates)`; memory is the intervals plus the output.

mod engine;
mod error;
mod timestamp;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

pub use engine::compute_ms;
pub use error::AvailabilityError;
pub use timestamp::{
    DAY_MS, Rounding, ms_to_timestamp, parse_timestamp_ms, push_timestamp_ms, timestamp_to_ms,
};

/// Longest accepted request window, in days.
pub const MAX_WINDOW_DAYS: u32 = 366;
/// Most busy intervals plus bookings accepted in one request.
pub const MAX_INTERVALS: usize = 1 << 22;
/// Most working-hours ranges, and most date-override ranges, in one [`Rules`].
pub const MAX_RANGES: usize = 1024;

/// A wall-clock time of day, minute precision, `00:00..=24:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(u16);

impl WallTime {
    /// `00:00`.
    pub const MIDNIGHT: WallTime = WallTime(0);
    /// `24:00`, the end of the day (the next day's `00:00`).
    pub const END_OF_DAY: WallTime = WallTime(1440);

    /// `hour:minute`; `24:00` is allowed as the end of the day.
    ///
    /// # Errors
    /// [`AvailabilityError::InvalidWallTime`] outside `00:00..=24:00`.
    pub fn new(hour: u8, minute: u8) -> Result<Self, AvailabilityError> {
        if minute > 59 || hour > 24 || (hour == 24 && minute != 0) {
            return Err(AvailabilityError::InvalidWallTime(format!(
                "{hour:02}:{minute:02}"
            )));
        }
        Ok(WallTime(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// Parses `H:MM` or `HH:MM` (e.g. `"09:00"`, `"24:00"`).
    ///
    /// # Errors
    /// [`AvailabilityError::InvalidWallTime`] for anything else.
    pub fn parse(s: &str) -> Result<Self, AvailabilityError> {
        let bad = || AvailabilityError::InvalidWallTime(s.to_owned());
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let num = |p: &str| -> Option<u8> {
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        if m.len() != 2 {
            return Err(bad());
        }
        let (h, m) = (num(h).ok_or_else(bad)?, num(m).ok_or_else(bad)?);
        Self::new(h, m).map_err(|_| bad())
    }

    /// Minutes since the start of the day, `0..=1440`.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

/// A wall-clock range on one local date, `start..end` (`end` may be `24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// Opening time.
    pub start: WallTime,
    /// Closing time; not before `start` (an equal end gives an empty range).
    pub end: WallTime,
}

impl TimeRange {
    /// A range; see [`Rules::validate`] for the `end >= start` check.
    pub fn new(start: WallTime, end: WallTime) -> Self {
        TimeRange { start, end }
    }
}

/// A set of weekdays (bit 0 = Sunday ..= bit 6 = Saturday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    /// Monday to Friday.
    pub const WORKWEEK: Weekdays = Weekdays(0b011_1110);
    /// Every day.
    pub const ALL: Weekdays = Weekdays(0b111_1111);

    /// From day numbers with 0 = Sunday ..= 6 = Saturday (the JavaScript /
    /// Cal.com convention used by the slots contract).
    ///
    /// # Errors
    /// [`AvailabilityError::InvalidWeekday`] for a number above 6.
    pub fn from_sunday_zero(days: &[u8]) -> Result<Self, AvailabilityError> {
        let mut bits = 0u8;
        for &d in days {
            if d > 6 {
                return Err(AvailabilityError::InvalidWeekday(d));
            }
            bits |= 1 << d;
        }
        Ok(Weekdays(bits))
    }

    /// From jiff weekdays.
    pub fn from_weekdays(days: impl IntoIterator<Item = Weekday>) -> Self {
        Weekdays(
            days.into_iter()
                .fold(0, |bits, d| bits | 1 << d.to_sunday_zero_offset()),
        )
    }

    /// Whether `day` (0 = Sunday) is in the set.
    pub fn contains_sunday_zero(self, day: u8) -> bool {
        day < 7 && self.0 & (1 << day) != 0
    }
}

/// Weekly working hours: one range on some weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkingHours {
    /// The weekdays this range applies to.
    pub days: Weekdays,
    /// The wall-clock range, organizer zone.
    pub range: TimeRange,
}

/// A date that does not follow the weekly hours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DateOverride {
    /// The organizer-local date.
    pub date: Date,
    /// Its own ranges; empty = unavailable all day.
    pub ranges: Vec<TimeRange>,
}

/// A recruiter's booking rules: everything except the instants of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Weekly hours, several ranges a day allowed.
    pub working_hours: Vec<WorkingHours>,
    /// Per-date replacements of the weekly hours (several entries for one
    /// date add up).
    pub overrides: Vec<DateOverride>,
    /// Meeting length, `1..=1440` minutes.
    pub slot_length_minutes: u32,
    /// Grid step in the invitee's wall clock, `0..=1440` minutes; 0 = slot
    /// length.
    pub slot_interval_minutes: u32,
    /// Free time required before a new meeting (existing meetings' ends are
    /// pushed later by this much).
    pub before_buffer_minutes: u32,
    /// Free time required after a new meeting (existing meetings' starts are
    /// pulled earlier by this much).
    pub after_buffer_minutes: u32,
    /// No slot starts before `now + minimum_notice`.
    pub minimum_notice_minutes: u32,
    /// If set, no slot ends after `now + horizon_days` days.
    pub horizon_days: Option<u32>,
    /// If set, an organizer-local date with this many existing bookings
    /// starting on it offers no slots.
    pub daily_cap: Option<u32>,
    /// If set, no slot starts on the organizer-local date of `now`.
    pub no_same_day: bool,
}

impl Default for Rules {
    /// Mon-Fri 09:00-17:00, 30-minute slots on a 30-minute grid, no buffers,
    /// no notice, no horizon, no cap.
    fn default() -> Self {
        Rules {
            working_hours: vec![WorkingHours {
                days: Weekdays::WORKWEEK,
                range: TimeRange::new(WallTime(9 * 60), WallTime(17 * 60)),
            }],
            overrides: Vec::new(),
            slot_length_minutes: 30,
            slot_interval_minutes: 0,
            before_buffer_minutes: 0,
            after_buffer_minutes: 0,
            minimum_notice_minutes: 0,
            horizon_days: None,
            daily_cap: None,
            no_same_day: false,
        }
    }
}

impl Rules {
    /// Checks the rules on their own (no instants needed).
    ///
    /// # Errors
    /// Slot length/interval out of range, a range ending before it starts,
    /// too many ranges.
    pub fn validate(&self) -> Result<(), AvailabilityError> {
        if self.slot_length_minutes == 0 || self.slot_length_minutes > 1440 {
            return Err(AvailabilityError::InvalidSlotLength(
                self.slot_length_minutes,
            ));
        }
        if self.slot_interval_minutes > 1440 {
            return Err(AvailabilityError::InvalidSlotInterval(
                self.slot_interval_minutes,
            ));
        }
        if self.working_hours.len() > MAX_RANGES {
            return Err(AvailabilityError::TooMany {
                what: "working-hours ranges",
                got: self.working_hours.len(),
                max: MAX_RANGES,
            });
        }
        let n_override: usize = self.overrides.iter().map(|o| o.ranges.len().max(1)).sum();
        if n_override > MAX_RANGES {
            return Err(AvailabilityError::TooMany {
                what: "date-override ranges",
                got: n_override,
                max: MAX_RANGES,
            });
        }
        for (index, w) in self.working_hours.iter().enumerate() {
            if w.range.end < w.range.start {
                return Err(AvailabilityError::EndBeforeStart {
                    what: "working hours",
                    index,
                });
            }
        }
        for (index, o) in self.overrides.iter().enumerate() {
            if o.ranges.iter().any(|r| r.end < r.start) {
                return Err(AvailabilityError::EndBeforeStart {
                    what: "date override",
                    index,
                });
            }
        }
        Ok(())
    }
}

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    /// First instant.
    pub start: Timestamp,
    /// End instant; not before `start`.
    pub end: Timestamp,
}

/// One availability question.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The recruiter's rules.
    pub rules: &'a Rules,
    /// The recruiter's IANA zone (working hours, cap, "same day").
    pub organizer_time_zone: &'a str,
    /// The candidate's IANA zone (the grid).
    pub invitee_time_zone: &'a str,
    /// The current instant.
    pub now: Timestamp,
    /// The span to offer slots in (at most [`MAX_WINDOW_DAYS`] long).
    pub window: Interval,
    /// Busy time from the recruiter's calendars.
    pub busy: &'a [Interval],
    /// Existing bookings: they block time like busy intervals and count
    /// toward the daily cap.
    pub bookings: &'a [Interval],
}

/// An interval in Unix milliseconds, for [`compute_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsInterval {
    /// Start, Unix ms.
    pub start: i64,
    /// End, Unix ms.
    pub end: i64,
}

/// The lower-level form of a [`Request`]: resolved zones, Unix milliseconds.
///
/// When converting from finer instants, round with [`Rounding::Ceil`] for
/// `now` and `window_start_ms` and [`Rounding::Floor`] for `window_end_ms`
/// (busy: floor the start, ceil the end); the result is then exactly the one
/// at full precision.
#[derive(Debug, Clone, Copy)]
pub struct MsRequest<'a> {
    /// The recruiter's rules.
    pub rules: &'a Rules,
    /// The recruiter's zone.
    pub organizer: &'a TimeZone,
    /// The candidate's zone.
    pub invitee: &'a TimeZone,
    /// The current instant.
    pub now_ms: i64,
    /// Window start.
    pub window_start_ms: i64,
    /// Window end.
    pub window_end_ms: i64,
    /// Existing bookings (block time, count toward the daily cap).
    pub bookings: &'a [MsInterval],
}

/// Resolves an IANA zone name through jiff's time zone database.
///
/// # Errors
/// [`AvailabilityError::UnknownTimeZone`].
pub fn time_zone(name: &str) -> Result<TimeZone, AvailabilityError> {
    TimeZone::get(name).map_err(|_| AvailabilityError::UnknownTimeZone(name.to_owned()))
}

/// Computes the bookable slot starts of `req`, sorted and unique.
///
/// Zone names are resolved through jiff's time zone database (the system
/// zoneinfo, cached by jiff).
///
/// # Errors
/// See [`AvailabilityError`]: unknown zone, an interval ending before it
/// starts, a window longer than [`MAX_WINDOW_DAYS`], a bad slot length or
/// interval, too many intervals or ranges.
///
/// # Example
/// ```
/// use hirewire_domain::availability::{compute, Interval, Request, Rules};
/// let rules = Rules::default(); // Mon-Fri 09:00-17:00, 30-minute slots
/// let window = Interval {
///     start: "2027-03-01T00:00:00+01:00".parse()?,
///     end: "2027-03-02T00:00:00+01:00".parse()?,
/// };
/// let busy = [Interval {
///     start: "2027-03-01T09:00:00+01:00".parse()?,
///     end: "2027-03-01T12:00:00+01:00".parse()?,
/// }];
/// let slots = compute(&Request {
///     rules: &rules,
///     organizer_time_zone: "Europe/Berlin",
///     invitee_time_zone: "America/New_York",
///     now: "2027-01-01T00:00:00Z".parse()?,
///     window,
///     busy: &busy,
///     bookings: &[],
/// })?;
/// assert_eq!(slots.len(), 10); // 12:00, 12:30, ..., 16:30 Berlin
/// assert_eq!(slots[0].to_string(), "2027-03-01T11:00:00Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compute(req: &Request<'_>) -> Result<Vec<Timestamp>, AvailabilityError> {
    let organizer = time_zone(req.organizer_time_zone)?;
    let invitee = if req.invitee_time_zone == req.organizer_time_zone {
        organizer.clone()
    } else {
        time_zone(req.invitee_time_zone)?
    };
    let to_ms = |list: &[Interval], what: &'static str| -> Result<Vec<MsInterval>, _> {
        if list.len() > MAX_INTERVALS {
            return Err(AvailabilityError::TooMany {
                what,
                got: list.len(),
                max: MAX_INTERVALS,
            });
        }
        Ok(list
            .iter()
            .map(|i| MsInterval {
                start: timestamp_to_ms(i.start, Rounding::Floor),
                end: timestamp_to_ms(i.end, Rounding::Ceil),
            })
            .collect::<Vec<_>>())
    };
    let mut busy = to_ms(req.busy, "busy intervals")?;
    let bookings = to_ms(req.bookings, "bookings")?;
    if req.window.end < req.window.start {
        return Err(AvailabilityError::EndBeforeStart {
            what: "window",
            index: 0,
        });
    }
    let ms_req = MsRequest {
        rules: req.rules,
        organizer: &organizer,
        invitee: &invitee,
        now_ms: timestamp_to_ms(req.now, Rounding::Ceil),
        window_start_ms: timestamp_to_ms(req.window.start, Rounding::Ceil),
        // A window shorter than a millisecond must not turn into "end before start".
        window_end_ms: timestamp_to_ms(req.window.end, Rounding::Floor)
            .max(timestamp_to_ms(req.window.start, Rounding::Ceil)),
        bookings: &bookings,
    };
    let mut out = Vec::new();
    compute_ms(&ms_req, &mut busy, &mut out)?;
    out.into_iter().map(ms_to_timestamp).collect()
}
