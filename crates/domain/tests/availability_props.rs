//! Property tests of the availability engine around DST transitions, against
//! a naive reference written here: it resolves every wall-clock time through
//! jiff `Zoned` values and steps candidates one by one in real time.

use std::collections::{BTreeMap, BTreeSet};

use hirewire_domain::availability::{
    DateOverride, Interval, Request, Rules, TimeRange, WallTime, Weekdays, WorkingHours, compute,
};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;

const ZONES: [&str; 6] = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
];

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn mins(m: u32) -> SignedDuration {
    SignedDuration::from_mins(i64::from(m))
}

/// The instant of wall-clock `w` on `day` in `zone` (jiff `compatible`;
/// `24:00` is the next day's midnight).
fn resolve(zone: &TimeZone, day: Date, w: WallTime) -> Timestamp {
    let (day, m) = if w.minutes() == 1440 {
        (day.tomorrow().unwrap(), 0)
    } else {
        (day, w.minutes())
    };
    let time = Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).unwrap();
    day.to_datetime(time)
        .to_zoned_datetime(zone.clone())
        .unwrap()
        .timestamp()
}

struct Case {
    rules: Rules,
    organizer: &'static str,
    invitee: &'static str,
    now: Timestamp,
    window: Interval,
    busy: Vec<Interval>,
    bookings: Vec<Interval>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("organizer", &self.organizer)
            .field("invitee", &self.invitee)
            .field("now", &self.now)
            .field("window", &self.window)
            .field("rules", &self.rules)
            .field("busy", &self.busy)
            .field("bookings", &self.bookings)
            .finish()
    }
}

impl Case {
    fn request(&self) -> Request<'_> {
        Request {
            rules: &self.rules,
            organizer_time_zone: self.organizer,
            invitee_time_zone: self.invitee,
            now: self.now,
            window: self.window,
            busy: &self.busy,
            bookings: &self.bookings,
        }
    }

    fn widened(&self) -> Vec<(Timestamp, Timestamp)> {
        self.busy
            .iter()
            .chain(&self.bookings)
            .map(|b| {
                (
                    b.start - mins(self.rules.after_buffer_minutes),
                    b.end + mins(self.rules.before_buffer_minutes),
                )
            })
            .collect()
    }

    /// The working windows (organizer zone), clipped to the window and horizon.
    fn windows(&self) -> Vec<(Timestamp, Timestamp)> {
        let org = tz(self.organizer);
        let mut hi = self.window.end;
        if let Some(h) = self.rules.horizon_days {
            hi = hi.min(self.now + SignedDuration::from_hours(24 * i64::from(h)));
        }
        let mut out = Vec::new();
        let mut day = self
            .window
            .start
            .to_zoned_datetime(org.clone())
            .date()
            .yesterday()
            .unwrap();
        let last = self
            .window
            .end
            .to_zoned_datetime(org.clone())
            .date()
            .tomorrow()
            .unwrap();
        while day <= last {
            let overrides: Vec<&DateOverride> = self
                .rules
                .overrides
                .iter()
                .filter(|o| o.date == day)
                .collect();
            let ranges: Vec<TimeRange> = if overrides.is_empty() {
                let wd = day.weekday().to_sunday_zero_offset() as u8;
                self.rules
                    .working_hours
                    .iter()
                    .filter(|w| w.days.contains_sunday_zero(wd))
                    .map(|w| w.range)
                    .collect()
            } else {
                overrides
                    .iter()
                    .flat_map(|o| o.ranges.iter().copied())
                    .collect()
            };
            for r in ranges {
                let s = resolve(&org, day, r.start).max(self.window.start);
                let e = resolve(&org, day, r.end).min(hi);
                out.push((s, e));
            }
            day = day.tomorrow().unwrap();
        }
        out
    }

    /// The naive reference: every 5-minute UTC instant of every window,
    /// checked on its own.
    fn reference(&self) -> Vec<Timestamp> {
        let (org, inv) = (tz(self.organizer), tz(self.invitee));
        let r = &self.rules;
        let len = mins(r.slot_length_minutes);
        let step = i32::try_from(if r.slot_interval_minutes == 0 {
            r.slot_length_minutes
        } else {
            r.slot_interval_minutes
        })
        .unwrap();
        let lo = self
            .window
            .start
            .max(self.now + mins(r.minimum_notice_minutes));
        let widened = self.widened();
        let today = self.now.to_zoned_datetime(org.clone()).date();
        let mut booked: BTreeMap<Date, u32> = BTreeMap::new();
        for b in &self.bookings {
            *booked
                .entry(b.start.to_zoned_datetime(org.clone()).date())
                .or_default() += 1;
        }
        let mut out = BTreeSet::new();
        for (ws, we) in self.windows() {
            // First whole 5-minute UTC instant at or after ws.
            let mut secs = ws.as_second() + i64::from(ws.subsec_nanosecond() > 0);
            secs += (300 - secs.rem_euclid(300)) % 300;
            let mut t = Timestamp::from_second(secs).unwrap();
            while t + len <= we {
                let local = t.to_zoned_datetime(inv.clone());
                let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
                let date = t.to_zoned_datetime(org.clone()).date();
                let ok = minute % step == 0
                    && t >= lo
                    && !widened.iter().any(|&(bs, be)| bs < t + len && be > t)
                    && !(r.no_same_day && date == today)
                    && r.daily_cap
                        .is_none_or(|cap| booked.get(&date).copied().unwrap_or(0) < cap);
                if ok {
                    out.insert(t);
                }
                t += SignedDuration::from_mins(5);
            }
        }
        out.into_iter().collect()
    }
}

fn wall(m: u16) -> WallTime {
    WallTime::new((m / 60) as u8, (m % 60) as u8).unwrap()
}

fn range_strategy() -> impl Strategy<Value = TimeRange> {
    prop_oneof![
        // Night ranges that contain the usual 00:00-04:00 transition times.
        (0u16..=12, 36u16..=72).prop_map(|(s, e)| TimeRange::new(wall(s * 5), wall(e * 5))),
        // Anything, down to 5-minute resolution, up to 24:00.
        (0u16..288, 0u16..=144)
            .prop_map(|(s, d)| { TimeRange::new(wall(s * 5), wall((s * 5 + d * 5).min(1440))) }),
    ]
}

prop_compose! {
    fn interval_in(start: Timestamp, span_secs: i64, max_len_secs: i64)
        (off in 0..span_secs, len in 0..=max_len_secs, ms in prop_oneof![Just(0i64), 0i64..1000])
        -> Interval
    {
        let s = start + SignedDuration::from_secs(off) + SignedDuration::from_millis(ms);
        Interval { start: s, end: s + SignedDuration::from_secs(len) }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0usize..6,
        0usize..6,
        0usize..8,
        0i64..4 * 86_400,
        3_600i64..8 * 86_400,
    )
        .prop_flat_map(|(o, i, k, before_secs, span_secs)| {
            let (organizer, invitee) = (ZONES[o], ZONES[i]);
            // Anchor the window on a transition of either zone.
            let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
            let mut transitions: Vec<Timestamp> = [organizer, invitee]
                .iter()
                .flat_map(|z| {
                    tz(z)
                        .following(from)
                        .take(6)
                        .map(|t| t.timestamp())
                        .collect::<Vec<_>>()
                })
                .collect();
            transitions.sort();
            let anchor = transitions
                .get(k % transitions.len().max(1))
                .copied()
                .unwrap_or_else(|| "2027-03-10T00:00:00Z".parse().unwrap());
            let start = anchor - SignedDuration::from_secs(before_secs);
            let end = start + SignedDuration::from_secs(span_secs);
            let start_date = start.to_zoned_datetime(tz(organizer)).date();
            let rules = (
                prop::collection::vec((1u8..128, range_strategy()), 1..=3),
                prop::collection::vec(
                    (0i64..9, prop::collection::vec(range_strategy(), 0..=2)),
                    0..=2,
                ),
                prop::sample::select(vec![5u32, 10, 15, 20, 25, 30, 45, 60, 90]),
                prop::sample::select(vec![0u32, 5, 7, 10, 15, 20, 25, 30, 45, 60]),
                (0u32..=30, 0u32..=30, 0u32..=600),
                (
                    prop::option::of(1u32..=10),
                    prop::option::of(0u32..=3),
                    any::<bool>(),
                ),
            )
                .prop_map(
                    move |(wh, ov, len, interval, (bb, ab, notice), (horizon, cap, nsd))| Rules {
                        working_hours: wh
                            .into_iter()
                            .map(|(mask, range)| WorkingHours {
                                days: Weekdays::from_sunday_zero(
                                    &(0..7).filter(|d| mask & (1 << d) != 0).collect::<Vec<_>>(),
                                )
                                .unwrap(),
                                range,
                            })
                            .collect(),
                        overrides: ov
                            .into_iter()
                            .map(|(d, ranges)| DateOverride {
                                date: start_date.checked_add(d.days()).unwrap(),
                                ranges,
                            })
                            .collect(),
                        slot_length_minutes: len,
                        slot_interval_minutes: interval,
                        before_buffer_minutes: bb,
                        after_buffer_minutes: ab,
                        minimum_notice_minutes: notice,
                        horizon_days: horizon,
                        daily_cap: cap,
                        no_same_day: nsd,
                    },
                );
            (
                rules,
                -2 * 86_400i64..2 * 86_400,
                prop::collection::vec(interval_in(start, span_secs, 3 * 3600), 0..=25),
                prop::collection::vec(interval_in(start, span_secs, 2 * 3600), 0..=4),
            )
                .prop_map(move |(rules, now_off, busy, bookings)| Case {
                    rules,
                    organizer,
                    invitee,
                    now: start + SignedDuration::from_secs(now_off),
                    window: Interval { start, end },
                    busy,
                    bookings,
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn slots_obey_every_rule_and_match_the_reference(case in case_strategy()) {
        let got = compute(&case.request()).unwrap();
        let len = mins(case.rules.slot_length_minutes);

        // Sorted, no duplicates.
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "unsorted or duplicate: {got:?}");
        let lo = case.window.start.max(case.now + mins(case.rules.minimum_notice_minutes));
        let widened = case.widened();
        let windows = case.windows();
        for &t in &got {
            // None before now + notice (nor before the window).
            prop_assert!(t >= lo, "{t} before {lo}");
            // No overlap with busy time widened by the buffers.
            prop_assert!(
                !widened.iter().any(|&(bs, be)| bs < t + len && be > t),
                "{t} overlaps busy"
            );
            // Inside one working-hours window.
            prop_assert!(
                windows.iter().any(|&(ws, we)| ws <= t && t + len <= we),
                "{t} outside working hours"
            );
        }
        // Exactly the naive reference.
        prop_assert_eq!(got, case.reference());
    }
}
