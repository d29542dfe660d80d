//! Calendars: one per user, runtime-only (not in the state file), shared by the Graph and Google Calendar
//! surfaces ([`crate::calendar_api`]) and the control API ([`crate::calendar_control`]).
//!
//! Every change bumps the calendar's change counter and stamps the event with it; Google sync tokens and
//! Graph delta tokens carry the counter they were issued at, so an incremental call returns the events
//! stamped later. Deleted events stay as tombstones (`cancelled`) so they can be reported as removed.
//! Every invitation an organizer's change sends is recorded as an [`Invitation`].

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rand::RngCore;
use serde::Serialize;
use serde_json::{Map, Value};

/// An attendee.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attendee {
    /// Address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Graph `type`: `required`, `optional` or `resource` (Google `optional: true` is `optional`).
    pub kind: String,
}

/// One event (single instance; recurrences are not modelled).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Google event id (base32hex).
    pub id: String,
    /// Graph REST id (`AAMkAG…`).
    pub graph_id: String,
    /// Graph immutable id (`AAkALg…`).
    pub immutable_id: String,
    /// iCalendar UID, shared by every copy of the invitation.
    pub ical_uid: String,
    /// Subject / summary.
    pub subject: String,
    /// Body / description.
    pub body: String,
    /// Graph body content type (`html` or `text`).
    pub body_type: String,
    /// Location display name.
    pub location: Option<String>,
    /// Start, unix milliseconds.
    pub start_ms: i64,
    /// End, unix milliseconds.
    pub end_ms: i64,
    /// Time zone the client gave (IANA or Windows name); `None`: UTC.
    pub time_zone: Option<String>,
    /// Graph `showAs`: `free`, `tentative`, `busy`, `oof`, `workingElsewhere`.
    pub show_as: String,
    /// Private (details hidden from others).
    pub is_private: bool,
    /// Attendees (the organizer is the calendar owner).
    pub attendees: Vec<Attendee>,
    /// iCalendar SEQUENCE, bumped by every organizer update and by cancellation.
    pub sequence: i64,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds.
    pub updated_ms: i64,
    /// Deleted (tombstone).
    pub cancelled: bool,
    /// Graph `transactionId`, if the client set one.
    pub transaction_id: Option<String>,
    /// Join URL of the online meeting (Teams or Meet), if one was created.
    pub online_url: Option<String>,
    /// Google `conferenceData.createRequest.requestId`.
    pub conference_request_id: Option<String>,
    /// Google `extendedProperties.private`.
    pub extended_private: Map<String, Value>,
    /// Google `extendedProperties.shared`.
    pub extended_shared: Map<String, Value>,
    /// Change counter value of the last change.
    pub change: u64,
    /// Who made it: `control`, `graph` or `google`.
    pub source: String,
}

impl Event {
    /// Whether the event overlaps `[from, to)` (milliseconds).
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.start_ms < to && self.end_ms > from
    }

    /// Whether a Graph id (REST or immutable) or Google id names this event.
    pub fn is(&self, id: &str) -> bool {
        self.id == id || self.graph_id == id || self.immutable_id == id
    }
}

/// An invitation (iTIP message) as the attendee received it.
#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    /// Recipient.
    pub to: String,
    /// Organizer (the calendar owner).
    pub organizer: String,
    /// `invite`, `update` or `cancel`.
    pub kind: String,
    /// iTIP method: `REQUEST` or `CANCEL`.
    pub method: String,
    /// iCalendar UID.
    pub ical_uid: String,
    /// iCalendar SEQUENCE.
    pub sequence: i64,
    /// Google id of the event.
    pub event_id: String,
    /// Graph REST id of the event.
    pub graph_id: String,
    /// Subject at the time of sending.
    pub subject: String,
    /// Start (RFC 3339, UTC).
    pub start: String,
    /// End (RFC 3339, UTC).
    pub end: String,
    /// Join URL, if any.
    pub online_url: Option<String>,
    /// `microsoft` or `google`: whose API sent it.
    pub via: String,
    /// Unix seconds.
    pub sent_at: i64,
}

/// A Google `events.watch` channel (recorded; notifications are not delivered yet).
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    /// Client's channel id.
    pub id: String,
    /// Opaque resource id.
    pub resource_id: String,
    /// Webhook address.
    pub address: String,
    /// Client's token.
    pub token: Option<String>,
    /// Unix milliseconds.
    pub expiration_ms: i64,
}

/// One user's calendar.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Calendar {
    /// Owner address.
    pub owner: String,
    /// Events, including tombstones.
    pub events: Vec<Event>,
    /// Change counter.
    pub change: u64,
    /// Sync and delta tokens issued at or below this counter are expired.
    pub sync_floor: u64,
    /// `events.watch` channels.
    pub channels: Vec<Channel>,
}

impl Calendar {
    /// Live events overlapping `[from, to)`, by start.
    pub fn live_in(&self, from: i64, to: i64) -> Vec<&Event> {
        let mut v: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| !e.cancelled && e.overlaps(from, to))
            .collect();
        v.sort_by_key(|e| (e.start_ms, e.end_ms));
        v
    }

    /// The event with this id (any kind), tombstones included.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.events.iter().position(|e| e.is(id))
    }

    /// Bumps the change counter; returns the new value.
    pub fn bump(&mut self) -> u64 {
        self.change += 1;
        self.change
    }
}

/// All calendars and every invitation sent.
#[derive(Debug, Default)]
pub struct Calendars {
    /// Owner address (lowercase) -> calendar.
    pub by_owner: HashMap<String, Calendar>,
    /// Every invitation, in sending order.
    pub invitations: Vec<Invitation>,
    next: u64,
}

impl Calendars {
    /// The calendar of `owner`, created empty when missing.
    pub fn of(&mut self, owner: &str) -> &mut Calendar {
        self.by_owner
            .entry(owner.to_ascii_lowercase())
            .or_insert_with(|| Calendar {
                owner: owner.to_ascii_lowercase(),
                ..Calendar::default()
            })
    }

    /// Fresh Graph ids (REST, immutable) for an event of `owner`.
    pub fn graph_ids(&mut self, owner: &str) -> (String, String) {
        self.next += 1;
        let n = self.next;
        (
            format!("AAMkAG{}", URL_SAFE.encode(format!("ev:{owner}:{n}"))),
            format!("AAkALg{}", URL_SAFE.encode(format!("imm:{owner}:{n}"))),
        )
    }

    /// Records invitations of `kind` for the event to `to`.
    pub fn invite(
        &mut self,
        e: &Event,
        organizer: &str,
        to: &[String],
        kind: &str,
        via: &str,
        now: i64,
    ) {
        for addr in to {
            self.invitations.push(Invitation {
                to: addr.clone(),
                organizer: organizer.to_string(),
                kind: kind.to_string(),
                method: if kind == "cancel" {
                    "CANCEL"
                } else {
                    "REQUEST"
                }
                .to_string(),
                ical_uid: e.ical_uid.clone(),
                sequence: e.sequence,
                event_id: e.id.clone(),
                graph_id: e.graph_id.clone(),
                subject: e.subject.clone(),
                start: rfc3339_ms(e.start_ms, false),
                end: rfc3339_ms(e.end_ms, false),
                online_url: e.online_url.clone(),
                via: via.to_string(),
                sent_at: now,
            });
        }
    }
}

/// A new event with defaults; ids are filled in by the caller.
pub fn blank_event(now_ms: i64) -> Event {
    Event {
        id: String::new(),
        graph_id: String::new(),
        immutable_id: String::new(),
        ical_uid: String::new(),
        subject: String::new(),
        body: String::new(),
        body_type: "text".into(),
        location: None,
        start_ms: 0,
        end_ms: 0,
        time_zone: None,
        show_as: "busy".into(),
        is_private: false,
        attendees: Vec::new(),
        sequence: 0,
        created_ms: now_ms,
        updated_ms: now_ms,
        cancelled: false,
        transaction_id: None,
        online_url: None,
        conference_request_id: None,
        extended_private: Map::new(),
        extended_shared: Map::new(),
        change: 0,
        source: String::new(),
    }
}

/// Whether `id` is a valid client-chosen Google event id: base32hex (`a`–`v`, `0`–`9`), 5–1024 characters.
pub fn valid_google_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// A random base32hex id of `n` characters.
pub fn random_base32hex(n: usize) -> String {
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| A[(*x & 31) as usize] as char).collect()
}

/// An Outlook-style iCalUId (`040000008200E00074C5B7101A82E008…`).
pub fn outlook_ical_uid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("040000008200E00074C5B7101A82E00800000000{hex}")
}

/// A Meet code (`abc-defg-hij`).
pub fn meet_code() -> String {
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    let c: Vec<char> = b.iter().map(|x| (b'a' + x % 26) as char).collect();
    format!(
        "{}-{}-{}",
        c[..3].iter().collect::<String>(),
        c[3..7].iter().collect::<String>(),
        c[7..].iter().collect::<String>()
    )
}

/// Windows time zone names Graph uses, mapped to IANA.
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central Standard Time", "America/Chicago"),
    ("Eastern Standard Time", "America/New_York"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("India Standard Time", "Asia/Kolkata"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
];

/// Resolves a time zone name (Windows or IANA; empty or `UTC`: UTC).
pub fn zone(name: &str) -> Option<TimeZone> {
    let n = name.trim();
    if n.is_empty()
        || n.eq_ignore_ascii_case("UTC")
        || n.eq_ignore_ascii_case("Coordinated Universal Time")
        || n.eq_ignore_ascii_case("Etc/UTC")
    {
        return Some(TimeZone::UTC);
    }
    let iana = WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(n))
        .map_or(n, |(_, i)| *i);
    TimeZone::get(iana).ok()
}

/// Parses a date-time: with an offset or `Z` it is absolute; without, it is local time in `tz`.
pub fn parse_local(date_time: &str, tz: &str) -> Option<i64> {
    let s = date_time.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t.as_millisecond());
    }
    let dt = s.parse::<jiff::civil::DateTime>().ok()?;
    zone(tz)?
        .to_ambiguous_zoned_datetime(dt)
        .compatible()
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// Graph `dateTimeTimeZone.dateTime`: local time in `tz`, seven fractional digits, no offset.
pub fn graph_local(ms: i64, tz: &str) -> String {
    let z = zone(tz).unwrap_or(TimeZone::UTC);
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(z)
        .strftime("%Y-%m-%dT%H:%M:%S.0000000")
        .to_string()
}

/// Google `EventDateTime.dateTime`: RFC 3339 with the zone's offset (`Z` for UTC).
pub fn google_local(ms: i64, tz: Option<&str>) -> String {
    let z = tz.and_then(zone).unwrap_or(TimeZone::UTC);
    let s = Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(z)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    match s.strip_suffix("+00:00") {
        Some(p) if tz.is_none_or(|t| zone(t) == Some(TimeZone::UTC)) => format!("{p}Z"),
        _ => s,
    }
}

/// RFC 3339 UTC: `2025-03-01T10:00:00.512Z` with `millis`, else `2025-03-01T10:00:00Z`.
pub fn rfc3339_ms(ms: i64, millis: bool) -> String {
    let t = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    if millis {
        t.strftime("%Y-%m-%dT%H:%M:%S.%3fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// A sync/delta token: who, the counter it was issued at, and an optional window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncToken {
    /// Calendar owner.
    pub owner: String,
    /// Counter at issue.
    pub change: u64,
    /// Window start (Graph calendarView delta), ms.
    pub from: Option<i64>,
    /// Window end, ms.
    pub to: Option<i64>,
}

impl SyncToken {
    /// Opaque text form.
    pub fn encode(&self) -> String {
        let w = match (self.from, self.to) {
            (Some(a), Some(b)) => format!("|{a}|{b}"),
            _ => String::new(),
        };
        format!(
            "CPD{}",
            URL_SAFE_NO_PAD.encode(format!("{}|{}{w}", self.owner, self.change))
        )
    }

    /// Parses [`SyncToken::encode`]'s output.
    pub fn decode(s: &str) -> Option<SyncToken> {
        let raw = URL_SAFE_NO_PAD.decode(s.strip_prefix("CPD")?).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut it = text.split('|');
        let owner = it.next()?.to_string();
        let change = it.next()?.parse().ok()?;
        let from = it.next().and_then(|x| x.parse().ok());
        let to = it.next().and_then(|x| x.parse().ok());
        Some(SyncToken {
            owner,
            change,
            from,
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_ids_are_base32hex() {
        assert!(valid_google_id("a1b2c3d4e5f60718293a4b5c6d7e8f90"));
        assert!(!valid_google_id("abcd"));
        assert!(!valid_google_id("Event-1234"));
        assert!(!valid_google_id("wxyz12345"));
        assert!(valid_google_id(&random_base32hex(26)));
    }

    #[test]
    fn windows_zone_names_resolve() {
        let ms = parse_local("2025-03-15T12:00:00", "Pacific Standard Time").unwrap();
        assert_eq!(rfc3339_ms(ms, false), "2025-03-15T19:00:00Z");
        assert_eq!(
            graph_local(ms, "Pacific Standard Time"),
            "2025-03-15T12:00:00.0000000"
        );
        assert_eq!(google_local(ms, None), "2025-03-15T19:00:00Z");
        assert_eq!(
            google_local(ms, Some("America/New_York")),
            "2025-03-15T15:00:00-04:00"
        );
    }

    #[test]
    fn sync_tokens_round_trip() {
        let t = SyncToken {
            owner: "a@b.example".into(),
            change: 7,
            from: Some(1),
            to: Some(2),
        };
        assert_eq!(SyncToken::decode(&t.encode()), Some(t));
        assert_eq!(SyncToken::decode("garbage"), None);
    }
}
