//! `bench-slots`: the slots contract of `shared/bench/README.md`.
//!
//! ```text
//! bench-slots INPUT [--iters N] [--warmup W] [--out OUT]
//! bench-slots --busy-stress N_BUSY [--iters N] [--warmup W] [--out OUT]
//! ```
//!
//! The timed region starts from the parsed JSON document with its strings
//! still strings (zone names, `HH:MM` times, RFC 3339 timestamps) and ends
//! with the canonical output document `{"slots": [...]}` formatted in memory,
//! byte-identical to `ref_slots.py`'s stdout. `--busy-stress` builds a
//! 365-day input with that many busy intervals in memory instead of reading a
//! file, and also reports the process's peak resident memory.

use std::process::ExitCode;
use std::time::Instant;

use hirewire_domain::availability::{
    AvailabilityError, MsInterval, MsRequest, Rounding, Rules, TimeRange, WallTime, Weekdays,
    WorkingHours, compute_ms, parse_timestamp_ms, push_timestamp_ms, time_zone,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    name: String,
    now: String,
    organizer_time_zone: String,
    invitee_time_zone: String,
    working_hours: Vec<Hours>,
    range: Span,
    busy: Vec<Span>,
    slot_interval_minutes: u32,
    event_length_minutes: u32,
    before_buffer_minutes: u32,
    after_buffer_minutes: u32,
    minimum_notice_minutes: u32,
}

#[derive(Deserialize)]
struct Hours {
    days: Vec<u8>,
    start: String,
    end: String,
}

#[derive(Deserialize)]
struct Span {
    start: String,
    end: String,
}

/// The timed work: strings in, canonical output document out.
fn run(doc: &Doc) -> Result<(usize, String), AvailabilityError> {
    let organizer = time_zone(&doc.organizer_time_zone)?;
    let invitee = if doc.invitee_time_zone == doc.organizer_time_zone {
        organizer.clone()
    } else {
        time_zone(&doc.invitee_time_zone)?
    };
    let mut working_hours = Vec::with_capacity(doc.working_hours.len());
    for w in &doc.working_hours {
        working_hours.push(WorkingHours {
            days: Weekdays::from_sunday_zero(&w.days)?,
            range: TimeRange::new(WallTime::parse(&w.start)?, WallTime::parse(&w.end)?),
        });
    }
    let rules = Rules {
        working_hours,
        slot_length_minutes: doc.event_length_minutes,
        slot_interval_minutes: doc.slot_interval_minutes,
        before_buffer_minutes: doc.before_buffer_minutes,
        after_buffer_minutes: doc.after_buffer_minutes,
        minimum_notice_minutes: doc.minimum_notice_minutes,
        ..Rules::default()
    };
    let mut busy = Vec::with_capacity(doc.busy.len());
    for b in &doc.busy {
        busy.push(MsInterval {
            start: parse_timestamp_ms(&b.start, Rounding::Floor)?,
            end: parse_timestamp_ms(&b.end, Rounding::Ceil)?,
        });
    }
    let req = MsRequest {
        rules: &rules,
        organizer: &organizer,
        invitee: &invitee,
        now_ms: parse_timestamp_ms(&doc.now, Rounding::Ceil)?,
        window_start_ms: parse_timestamp_ms(&doc.range.start, Rounding::Ceil)?,
        window_end_ms: parse_timestamp_ms(&doc.range.end, Rounding::Floor)?,
        bookings: &[],
    };
    let mut slots = Vec::new();
    compute_ms(&req, &mut busy, &mut slots)?;
    // Exactly Python's json.dumps({"slots": [...]}).
    let mut out = String::with_capacity(slots.len() * 28 + 16);
    out.push_str("{\"slots\": [");
    for (i, &t) in slots.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        push_timestamp_ms(t, &mut out);
        out.push('"');
    }
    out.push_str("]}");
    Ok((slots.len(), out))
}

/// A deterministic 365-day Europe/Berlin input with `n` busy intervals in
/// random order.
fn stress_doc(n: usize) -> Doc {
    const START: i64 = 1_799_017_200_000; // 2027-01-04T00:00:00+01:00
    const SPAN_MIN: i64 = 365 * 1440;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let fmt = |ms: i64| {
        let mut s = String::new();
        push_timestamp_ms(ms, &mut s);
        s.replace(".000Z", "Z")
    };
    let busy: Vec<(i64, i64)> = (0..n)
        .map(|_| {
            let start = START + (next() % (SPAN_MIN as u64 / 5)) as i64 * 300_000;
            let dur = [15, 30, 45, 60][(next() % 4) as usize] * 60_000;
            (start, start + dur)
        })
        .collect();
    // Left in random order on purpose: the engine has to sort (worst case).
    Doc {
        name: format!("busy_stress_{n}"),
        now: "2027-01-01T00:00:00Z".into(),
        organizer_time_zone: "Europe/Berlin".into(),
        invitee_time_zone: "Europe/Berlin".into(),
        working_hours: vec![Hours {
            days: vec![1, 2, 3, 4, 5],
            start: "09:00".into(),
            end: "17:00".into(),
        }],
        range: Span {
            start: "2027-01-04T00:00:00.000+01:00".into(),
            end: "2028-01-02T23:59:59.999+01:00".into(),
        },
        busy: busy
            .into_iter()
            .map(|(s, e)| Span {
                start: fmt(s),
                end: fmt(e),
            })
            .collect(),
        slot_interval_minutes: 30,
        event_length_minutes: 30,
        before_buffer_minutes: 0,
        after_buffer_minutes: 0,
        minimum_notice_minutes: 120,
    }
}

/// Peak resident set size of this process, from /proc (Linux only).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Args {
    input: Option<String>,
    stress: Option<usize>,
    iters: usize,
    warmup: usize,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        input: None,
        stress: None,
        iters: 100,
        warmup: 10,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--iters" => args.iters = value("--iters")?.parse().map_err(|e| format!("{e}"))?,
            "--warmup" => args.warmup = value("--warmup")?.parse().map_err(|e| format!("{e}"))?,
            "--out" => args.out = Some(value("--out")?),
            "--busy-stress" => {
                args.stress = Some(
                    value("--busy-stress")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if args.input.is_none() => args.input = Some(a),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if args.input.is_none() == args.stress.is_none() {
        return Err(
            "usage: bench-slots INPUT|--busy-stress N [--iters N] [--warmup W] [--out OUT]".into(),
        );
    }
    args.iters = args.iters.max(1);
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-slots: {e}");
            return ExitCode::from(2);
        }
    };
    let doc: Doc = match (&args.input, args.stress) {
        (Some(path), _) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("bench-slots: {path}: {e}");
                    return ExitCode::from(2);
                }
            };
            match serde_json::from_str(&text) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("bench-slots: {path}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, Some(n)) => stress_doc(n),
        (None, None) => return ExitCode::from(2),
    };
    let rss_before = peak_rss_kb();

    let mut times = Vec::with_capacity(args.iters);
    let mut last = None;
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        let result = run(&doc);
        let dt = t0.elapsed();
        match result {
            Ok(r) => {
                if i >= args.warmup {
                    times.push(dt.as_secs_f64() * 1e3);
                }
                last = Some(r);
            }
            Err(e) => {
                eprintln!("bench-slots: {}: {e}", doc.name);
                return ExitCode::from(1);
            }
        }
    }
    let Some((n_slots, out)) = last else {
        return ExitCode::from(1);
    };
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    let p90 = times[((n * 9).div_ceil(10)).saturating_sub(1)];
    let mut line = serde_json::json!({
        "peer": "hirewire",
        "input": doc.name,
        "n_slots": n_slots,
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": times[0],
    });
    if args.stress.is_some() {
        line["n_busy"] = doc.busy.len().into();
        line["peak_rss_kb_before"] = rss_before.into();
        line["peak_rss_kb"] = peak_rss_kb().into();
    }
    println!("{line}");
    if let Some(path) = &args.out
        && let Err(e) = std::fs::write(path, format!("{out}\n"))
    {
        eprintln!("bench-slots: {path}: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
