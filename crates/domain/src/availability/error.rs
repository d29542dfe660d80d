//! Typed errors of the availability engine.

/// Everything that can be wrong with an availability request.
///
/// The engine never panics on bad input: every rejected input maps to one of
/// these variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AvailabilityError {
    /// The IANA zone name is not in the time zone database.
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    /// An interval (the window, a busy interval, a booking, a working-hours
    /// range) ends before it starts. `index` is the position in its list
    /// (0 for the window).
    #[error("{what} #{index} ends before it starts")]
    EndBeforeStart {
        /// Which list the interval came from: "window", "busy", "booking",
        /// "working hours" or "date override".
        what: &'static str,
        /// Position in that list.
        index: usize,
    },
    /// The requested window is longer than [`MAX_WINDOW_DAYS`](super::MAX_WINDOW_DAYS).
    #[error("window is longer than {max_days} days")]
    WindowTooLong {
        /// The limit.
        max_days: u32,
    },
    /// The slot length is 0 or longer than a day.
    #[error("slot length must be 1..=1440 minutes, got {0}")]
    InvalidSlotLength(u32),
    /// The slot interval (grid step) is longer than a day.
    #[error("slot interval must be 0..=1440 minutes (0 = slot length), got {0}")]
    InvalidSlotInterval(u32),
    /// A wall-clock time is not `H:MM`/`HH:MM` in `00:00..=24:00`.
    #[error("invalid wall-clock time {0:?} (want HH:MM in 00:00..=24:00)")]
    InvalidWallTime(String),
    /// A weekday number is not in `0..=6` (0 = Sunday).
    #[error("invalid weekday {0} (0 = Sunday ..= 6 = Saturday)")]
    InvalidWeekday(u8),
    /// A timestamp string is not RFC 3339 with an offset.
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// A list is longer than the engine accepts (keeps time and memory bounded).
    #[error("too many {what}: {got} > {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A computation left the range of representable instants
    /// (jiff supports years -9999..=9999).
    #[error("date/time out of the supported range")]
    OutOfRange,
}
