//! Worked examples of the product rules (overrides, cap, same day, horizon,
//! DST nights) and of every typed error.

use hirewire_domain::availability::{
    AvailabilityError, DateOverride, Interval, MAX_RANGES, MsInterval, MsRequest, Request,
    Rounding, Rules, TimeRange, WallTime, Weekdays, WorkingHours, compute, compute_ms,
    parse_timestamp_ms, time_zone,
};
use jiff::Timestamp;
use jiff::civil::date;

const BERLIN: &str = "Europe/Berlin";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn iv(a: &str, b: &str) -> Interval {
    Interval {
        start: ts(a),
        end: ts(b),
    }
}

fn range(a: &str, b: &str) -> TimeRange {
    TimeRange::new(WallTime::parse(a).unwrap(), WallTime::parse(b).unwrap())
}

fn rules_with(ranges: &[(&[u8], &str, &str)]) -> Rules {
    Rules {
        working_hours: ranges
            .iter()
            .map(|(days, a, b)| WorkingHours {
                days: Weekdays::from_sunday_zero(days).unwrap(),
                range: range(a, b),
            })
            .collect(),
        ..Rules::default()
    }
}

fn run(
    rules: &Rules,
    window: Interval,
    now: &str,
    busy: &[Interval],
    bookings: &[Interval],
) -> Vec<String> {
    compute(&Request {
        rules,
        organizer_time_zone: BERLIN,
        invitee_time_zone: BERLIN,
        now: ts(now),
        window,
        busy,
        bookings,
    })
    .unwrap()
    .iter()
    .map(|t| t.to_string())
    .collect()
}

#[test]
fn fall_back_night_is_six_real_hours() {
    // 2027-10-31: Berlin falls back 03:00 CEST -> 02:00 CET.
    let rules = rules_with(&[(&[0], "00:00", "05:00")]);
    let slots = run(
        &rules,
        iv("2027-10-30T12:00:00Z", "2027-10-31T12:00:00Z"),
        "2027-01-01T00:00:00Z",
        &[],
        &[],
    );
    assert_eq!(slots.len(), 12, "{slots:?}");
    assert_eq!(slots[0], "2027-10-30T22:00:00Z");
    assert_eq!(slots[11], "2027-10-31T03:30:00Z");
}

#[test]
fn spring_forward_night_is_four_real_hours() {
    // 2027-03-28: Berlin springs forward 02:00 CET -> 03:00 CEST.
    let rules = rules_with(&[(&[0], "00:00", "05:00")]);
    let slots = run(
        &rules,
        iv("2027-03-27T12:00:00Z", "2027-03-28T12:00:00Z"),
        "2027-01-01T00:00:00Z",
        &[],
        &[],
    );
    assert_eq!(slots.len(), 8, "{slots:?}");
    assert_eq!(slots[0], "2027-03-27T23:00:00Z");
    assert_eq!(slots[7], "2027-03-28T02:30:00Z");
}

#[test]
fn gap_start_moves_later() {
    // 02:30 does not exist on 2027-03-28 in Berlin: it resolves to 03:30 CEST.
    let rules = rules_with(&[(&[0], "02:30", "04:00")]);
    let slots = run(
        &rules,
        iv("2027-03-27T12:00:00Z", "2027-03-28T12:00:00Z"),
        "2027-01-01T00:00:00Z",
        &[],
        &[],
    );
    assert_eq!(slots, ["2027-03-28T01:30:00Z"]);
}

#[test]
fn date_overrides_replace_or_remove_a_day() {
    let mut rules = rules_with(&[(&[1, 2, 3, 4, 5], "09:00", "10:00")]);
    rules.overrides = vec![
        // Monday off.
        DateOverride {
            date: date(2027, 3, 1),
            ranges: vec![],
        },
        // Saturday 10:00-11:00.
        DateOverride {
            date: date(2027, 3, 6),
            ranges: vec![range("10:00", "11:00")],
        },
    ];
    let slots = run(
        &rules,
        iv("2027-03-01T00:00:00+01:00", "2027-03-08T00:00:00+01:00"),
        "2027-01-01T00:00:00Z",
        &[],
        &[],
    );
    assert_eq!(
        slots,
        [
            "2027-03-02T08:00:00Z",
            "2027-03-02T08:30:00Z",
            "2027-03-03T08:00:00Z",
            "2027-03-03T08:30:00Z",
            "2027-03-04T08:00:00Z",
            "2027-03-04T08:30:00Z",
            "2027-03-05T08:00:00Z",
            "2027-03-05T08:30:00Z",
            "2027-03-06T09:00:00Z",
            "2027-03-06T09:30:00Z",
        ]
    );
}

#[test]
fn daily_cap_counts_bookings_by_organizer_date() {
    let rules = Rules {
        daily_cap: Some(1),
        ..rules_with(&[(&[1, 2, 3, 4, 5], "09:00", "10:00")])
    };
    let window = iv("2027-03-01T00:00:00+01:00", "2027-03-03T00:00:00+01:00");
    // 23:30 UTC on March 1 is 00:30 on March 2 in Berlin: it caps March 2.
    let booking = [iv("2027-03-01T23:30:00Z", "2027-03-01T23:45:00Z")];
    let slots = run(&rules, window, "2027-01-01T00:00:00Z", &[], &booking);
    assert_eq!(slots, ["2027-03-01T08:00:00Z", "2027-03-01T08:30:00Z"]);
    // A cap of 2 is not reached by one booking.
    let rules = Rules {
        daily_cap: Some(2),
        ..rules
    };
    assert_eq!(
        run(&rules, window, "2027-01-01T00:00:00Z", &[], &booking).len(),
        4
    );
}

#[test]
fn bookings_block_time_with_buffers() {
    let rules = Rules {
        before_buffer_minutes: 15,
        ..rules_with(&[(&[1], "09:00", "11:00")])
    };
    let window = iv("2027-03-01T00:00:00+01:00", "2027-03-02T00:00:00+01:00");
    let booking = [iv("2027-03-01T09:00:00+01:00", "2027-03-01T09:30:00+01:00")];
    // 09:30 is inside the 15-minute buffer after the booking.
    let slots = run(&rules, window, "2027-01-01T00:00:00Z", &[], &booking);
    assert_eq!(slots, ["2027-03-01T09:00:00Z", "2027-03-01T09:30:00Z"]);
}

#[test]
fn no_same_day_uses_the_organizer_date() {
    let rules = rules_with(&[(&[1, 2, 3, 4, 5], "09:00", "10:00")]);
    let window = iv("2027-03-01T00:00:00+01:00", "2027-03-04T00:00:00+01:00");
    // 23:30 UTC on March 1 is already March 2 in Berlin.
    let now = "2027-03-01T23:30:00Z";
    let all = run(&rules, window, now, &[], &[]);
    assert_eq!(all[0], "2027-03-02T08:00:00Z");
    let rules = Rules {
        no_same_day: true,
        ..rules
    };
    let later = run(&rules, window, now, &[], &[]);
    assert_eq!(later[0], "2027-03-03T08:00:00Z");
    assert_eq!(later.len(), all.len() - 2);
}

#[test]
fn horizon_and_notice() {
    let rules = Rules {
        horizon_days: Some(2),
        ..rules_with(&[(&[0, 1, 2, 3, 4, 5, 6], "09:00", "10:00")])
    };
    let window = iv("2027-03-01T00:00:00+01:00", "2027-03-10T00:00:00+01:00");
    // now = March 1 09:30 Berlin; the horizon ends March 3 09:30 Berlin, so
    // 09:00-09:30 fits on March 3 but 09:30-10:00 does not.
    let now = "2027-03-01T08:30:00Z";
    let slots = run(&rules, window, now, &[], &[]);
    assert_eq!(
        slots,
        [
            "2027-03-01T08:30:00Z",
            "2027-03-02T08:00:00Z",
            "2027-03-02T08:30:00Z",
            "2027-03-03T08:00:00Z"
        ]
    );
    // One minute of notice removes the slot starting right now.
    let rules = Rules {
        minimum_notice_minutes: 1,
        ..rules
    };
    assert_eq!(run(&rules, window, now, &[], &[]), slots[1..]);
}

#[test]
fn invitee_grid_in_kathmandu() {
    // An hourly grid in Kathmandu (+05:45) seen from Berlin (+01:00): every
    // start is at :15 UTC.
    let rules = Rules {
        slot_length_minutes: 30,
        slot_interval_minutes: 60,
        ..rules_with(&[(&[1], "09:00", "12:00")])
    };
    let slots: Vec<String> = compute(&Request {
        rules: &rules,
        organizer_time_zone: BERLIN,
        invitee_time_zone: "Asia/Kathmandu",
        now: ts("2027-01-01T00:00:00Z"),
        window: iv("2027-03-01T00:00:00+01:00", "2027-03-02T00:00:00+01:00"),
        busy: &[],
        bookings: &[],
    })
    .unwrap()
    .iter()
    .map(|t| t.to_string())
    .collect();
    // Hourly in Kathmandu = hh:15 UTC; Berlin 09:00-12:00 = 08:00-11:00 UTC.
    assert_eq!(
        slots,
        [
            "2027-03-01T08:15:00Z",
            "2027-03-01T09:15:00Z",
            "2027-03-01T10:15:00Z"
        ]
    );
}

fn err(
    rules: &Rules,
    org: &str,
    inv: &str,
    window: Interval,
    busy: &[Interval],
    bookings: &[Interval],
) -> AvailabilityError {
    compute(&Request {
        rules,
        organizer_time_zone: org,
        invitee_time_zone: inv,
        now: ts("2027-01-01T00:00:00Z"),
        window,
        busy,
        bookings,
    })
    .unwrap_err()
}

#[test]
fn bad_input_is_a_typed_error() {
    let ok = Rules::default();
    let w = iv("2027-03-01T00:00:00Z", "2027-03-08T00:00:00Z");
    let b = iv("2027-03-01T10:00:00Z", "2027-03-01T09:00:00Z");
    assert_eq!(
        err(&ok, "Mars/Olympus", BERLIN, w, &[], &[]),
        AvailabilityError::UnknownTimeZone("Mars/Olympus".into())
    );
    assert_eq!(
        err(&ok, BERLIN, "Nope/Nope", w, &[], &[]),
        AvailabilityError::UnknownTimeZone("Nope/Nope".into())
    );
    assert_eq!(
        err(
            &ok,
            BERLIN,
            BERLIN,
            iv("2027-03-08T00:00:00Z", "2027-03-01T00:00:00Z"),
            &[],
            &[]
        ),
        AvailabilityError::EndBeforeStart {
            what: "window",
            index: 0
        }
    );
    let good = iv("2027-03-01T08:00:00Z", "2027-03-01T09:00:00Z");
    assert_eq!(
        err(&ok, BERLIN, BERLIN, w, &[good, b], &[]),
        AvailabilityError::EndBeforeStart {
            what: "busy",
            index: 1
        }
    );
    assert_eq!(
        err(&ok, BERLIN, BERLIN, w, &[], &[b]),
        AvailabilityError::EndBeforeStart {
            what: "booking",
            index: 0
        }
    );
    assert_eq!(
        err(
            &ok,
            BERLIN,
            BERLIN,
            iv("2027-01-01T00:00:00Z", "2028-01-02T00:00:01Z"),
            &[],
            &[]
        ),
        AvailabilityError::WindowTooLong { max_days: 366 }
    );
    // Exactly 366 days is fine.
    assert!(
        compute(&Request {
            rules: &ok,
            organizer_time_zone: BERLIN,
            invitee_time_zone: BERLIN,
            now: ts("2027-01-01T00:00:00Z"),
            window: iv("2027-01-01T00:00:00Z", "2028-01-02T00:00:00Z"),
            busy: &[],
            bookings: &[],
        })
        .is_ok()
    );
    for len in [0, 1441] {
        let r = Rules {
            slot_length_minutes: len,
            ..Rules::default()
        };
        assert_eq!(
            err(&r, BERLIN, BERLIN, w, &[], &[]),
            AvailabilityError::InvalidSlotLength(len)
        );
    }
    let r = Rules {
        slot_interval_minutes: 1441,
        ..Rules::default()
    };
    assert_eq!(
        err(&r, BERLIN, BERLIN, w, &[], &[]),
        AvailabilityError::InvalidSlotInterval(1441)
    );
    let r = rules_with(&[(&[1], "17:00", "09:00")]);
    assert_eq!(
        err(&r, BERLIN, BERLIN, w, &[], &[]),
        AvailabilityError::EndBeforeStart {
            what: "working hours",
            index: 0
        }
    );
    let r = Rules {
        working_hours: vec![Rules::default().working_hours[0]; MAX_RANGES + 1],
        ..Rules::default()
    };
    assert!(matches!(
        err(&r, BERLIN, BERLIN, w, &[], &[]),
        AvailabilityError::TooMany { .. }
    ));
    for bad in [
        "25:00", "24:30", "9", "09:5", "aa:bb", "09:60", "-1:00", "009:00", "",
    ] {
        assert!(
            matches!(
                WallTime::parse(bad),
                Err(AvailabilityError::InvalidWallTime(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(WallTime::parse("9:05").unwrap().minutes(), 545);
    assert_eq!(WallTime::parse("24:00").unwrap(), WallTime::END_OF_DAY);
    assert_eq!(
        Weekdays::from_sunday_zero(&[1, 7]),
        Err(AvailabilityError::InvalidWeekday(7))
    );
    assert!(matches!(
        parse_timestamp_ms("2027-02-30T00:00:00Z", Rounding::Floor),
        Err(AvailabilityError::InvalidTimestamp(_))
    ));
}

#[test]
fn extreme_instants_are_errors_not_panics() {
    let rules = Rules::default();
    let tz = time_zone(BERLIN).unwrap();
    const DAY: i64 = 86_400_000;
    for (start, end) in [
        (i64::MIN, i64::MIN + DAY),
        (i64::MAX - DAY, i64::MAX),
        (
            Timestamp::MIN.as_millisecond(),
            Timestamp::MIN.as_millisecond() + DAY,
        ),
        (
            Timestamp::MAX.as_millisecond() - DAY,
            Timestamp::MAX.as_millisecond(),
        ),
    ] {
        let mut busy = vec![MsInterval { start, end }];
        let mut out = Vec::new();
        let r = compute_ms(
            &MsRequest {
                rules: &rules,
                organizer: &tz,
                invitee: &tz,
                now_ms: i64::MIN,
                window_start_ms: start,
                window_end_ms: end,
                bookings: &[],
            },
            &mut busy,
            &mut out,
        );
        assert_eq!(r, Err(AvailabilityError::OutOfRange), "{start}..{end}");
    }
}

#[test]
fn overlapping_ranges_do_not_multiply_work_or_output() {
    let all_day = WorkingHours {
        days: Weekdays::ALL,
        range: range("00:00", "24:00"),
    };
    let one = Rules {
        working_hours: vec![all_day],
        slot_length_minutes: 5,
        slot_interval_minutes: 5,
        ..Rules::default()
    };
    let many = Rules {
        working_hours: vec![all_day; MAX_RANGES],
        ..one.clone()
    };
    let window = iv("2027-01-01T00:00:00Z", "2028-01-02T00:00:00Z");
    let a = run(&one, window, "2027-01-01T00:00:00Z", &[], &[]);
    let b = run(&many, window, "2027-01-01T00:00:00Z", &[], &[]);
    assert_eq!(a.len(), 366 * 288);
    assert_eq!(a, b);
}
