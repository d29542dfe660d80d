//! The sweep: merged busy time, per-date working windows, a real-time grid.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::timestamp::{civil_from_days, days_from_civil};
use super::{
    AvailabilityError, DAY_MS, MAX_INTERVALS, MAX_WINDOW_DAYS, MsInterval, MsRequest, Rounding,
    TimeRange, ms_to_timestamp, timestamp_to_ms,
};

const MINUTE_MS: i64 = 60_000;
/// Candidate starts are whole 5-minute UTC instants (every IANA offset in use
/// is a multiple of 5 minutes, so this loses no grid point).
const STEP_MS: i64 = 5 * MINUTE_MS;
/// Zone offsets are tabulated this far around the window: working hours of the
/// days next to the window, and `24:00`, resolve inside it.
const MARGIN_MS: i64 = 4 * DAY_MS;

#[inline]
fn offset_ms(o: Offset) -> i64 {
    i64::from(o.seconds()) * 1000
}

/// Smallest multiple of `m` that is `>= x`.
#[inline]
fn ceil_to(x: i64, m: i64) -> i64 {
    let r = x.rem_euclid(m);
    if r == 0 { x } else { x - r + m }
}

/// The UTC offsets of one zone over `[lo, hi)`, as sorted segments: segment
/// `i` starts at `starts[i]` and has offset `offs[i]`. Built with one
/// `to_offset` and one walk over jiff's transitions, so that the hot loop
/// never calls into the zone database.
struct Segments {
    starts: Vec<i64>,
    offs: Vec<i64>,
    lo: i64,
    hi: i64,
}

impl Segments {
    fn new(tz: &TimeZone, lo: i64, hi: i64) -> Result<Self, AvailabilityError> {
        let ts = ms_to_timestamp(lo)?;
        ms_to_timestamp(hi)?;
        let mut starts = vec![i64::MIN];
        let mut offs = vec![offset_ms(tz.to_offset(ts))];
        for tr in tz.following(ts) {
            let t = tr.timestamp().as_millisecond();
            if t >= hi {
                break;
            }
            let o = offset_ms(tr.offset());
            // Transitions that change only the abbreviation or DST flag are
            // not boundaries for us.
            if offs.last() != Some(&o) {
                starts.push(t);
                offs.push(o);
            }
        }
        Ok(Segments {
            starts,
            offs,
            lo,
            hi,
        })
    }

    /// Index of the segment containing `t` (`starts[0]` is `i64::MIN`).
    #[inline]
    fn index_at(&self, t: i64) -> usize {
        self.starts.partition_point(|&s| s <= t).saturating_sub(1)
    }

    #[inline]
    fn end_of(&self, i: usize) -> i64 {
        self.starts.get(i + 1).copied().unwrap_or(i64::MAX)
    }

    /// Offset at `t`, which must lie in `[lo, hi)`.
    #[inline]
    fn offset_at(&self, t: i64) -> i64 {
        self.offs[self.index_at(t)]
    }

    /// Organizer-local day number (days since 1970-01-01) of instant `t`.
    #[inline]
    fn local_day(&self, t: i64) -> i64 {
        (t + self.offset_at(t)).div_euclid(DAY_MS)
    }

    /// The instant of local wall-clock `local` (ms since the local epoch),
    /// resolved like jiff's `compatible`: in a gap the later instant, in a
    /// fold the earlier one.
    ///
    /// If exactly one segment holds `local - offset`, that is the answer (the
    /// common case, no zone lookup). Gaps, folds and anything near the edges
    /// of the tabulated span are handed to jiff itself.
    fn local_to_utc(&self, tz: &TimeZone, local: i64) -> Result<i64, AvailabilityError> {
        let mut found = None;
        let mut count = 0;
        for (i, (&start, &off)) in self.starts.iter().zip(&self.offs).enumerate() {
            let c = local - off;
            if c >= start && c < self.end_of(i) {
                count += 1;
                found = Some(c);
            }
        }
        match found {
            Some(c) if count == 1 && c >= self.lo && c < self.hi => Ok(c),
            _ => jiff_local_to_utc(tz, local),
        }
    }
}

/// The reference path of [`Segments::local_to_utc`], through jiff.
fn jiff_local_to_utc(tz: &TimeZone, local: i64) -> Result<i64, AvailabilityError> {
    let days = local.div_euclid(DAY_MS);
    let rem = local.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let year = i16::try_from(y).map_err(|_| AvailabilityError::OutOfRange)?;
    let secs = rem / 1000;
    let dt = DateTime::new(
        year,
        m as i8,
        d as i8,
        (secs / 3600) as i8,
        (secs / 60 % 60) as i8,
        (secs % 60) as i8,
        ((rem % 1000) * 1_000_000) as i32,
    )
    .map_err(|_| AvailabilityError::OutOfRange)?;
    let ts = tz
        .to_ambiguous_timestamp(dt)
        .compatible()
        .map_err(|_| AvailabilityError::OutOfRange)?;
    Ok(timestamp_to_ms(ts, Rounding::Floor))
}

/// Everything the per-window sweep needs, fixed for one request.
struct Sweep<'a> {
    busy: &'a [MsInterval],
    invitee: &'a Segments,
    organizer: &'a Segments,
    blocked_days: &'a [i64],
    len: i64,
    /// Grid step in minutes.
    step: i64,
    /// `step` divides a day and is a multiple of 5: the grid is an arithmetic
    /// progression wherever the invitee offset is a multiple of 5 minutes.
    fast_grid: bool,
}

impl Sweep<'_> {
    /// Pushes every valid start `t` with `ws <= t` and `t + len <= we`.
    #[inline]
    fn run(&self, ws: i64, we: i64, out: &mut Vec<i64>) {
        let last = we - self.len;
        let mut t = ceil_to(ws, STEP_MS);
        if t > last {
            return;
        }
        let period = self.step * MINUTE_MS;
        let busy = self.busy;
        let mut bi = busy.partition_point(|b| b.end <= t);
        let mut si = self.invitee.index_at(t);
        let mut seg_end = self.invitee.end_of(si);
        let mut off = self.invitee.offs[si];
        while t <= last {
            if t >= seg_end {
                si = self.invitee.index_at(t);
                seg_end = self.invitee.end_of(si);
                off = self.invitee.offs[si];
            }
            // The grid, in the invitee's wall clock at `t`.
            if self.fast_grid && off % STEP_MS == 0 {
                let r = (t + off).rem_euclid(period);
                if r != 0 {
                    let next = t + period - r;
                    // Never jump across an offset change: restart there.
                    t = if next >= seg_end {
                        ceil_to(seg_end, STEP_MS)
                    } else {
                        next
                    };
                    continue;
                }
            } else {
                let minute_of_day = (t + off).div_euclid(MINUTE_MS).rem_euclid(1440);
                if minute_of_day % self.step != 0 {
                    t += STEP_MS;
                    continue;
                }
            }
            // Busy time (merged, so ends are sorted too).
            while bi < busy.len() && busy[bi].end <= t {
                bi += 1;
            }
            if bi < busy.len() && busy[bi].start < t + self.len {
                t = ceil_to(busy[bi].end, STEP_MS);
                continue;
            }
            if !self.blocked_days.is_empty()
                && self
                    .blocked_days
                    .binary_search(&self.organizer.local_day(t))
                    .is_ok()
            {
                t += STEP_MS;
                continue;
            }
            out.push(t);
            t += STEP_MS;
        }
    }
}

fn check_intervals(list: &[MsInterval], what: &'static str) -> Result<(), AvailabilityError> {
    match list.iter().position(|b| b.end < b.start) {
        Some(index) => Err(AvailabilityError::EndBeforeStart { what, index }),
        None => Ok(()),
    }
}

/// The engine on Unix milliseconds; see the [module docs](super) for the
/// semantics.
///
/// `busy` holds the raw busy intervals on entry and is used as scratch space:
/// on return it holds the widened, merged busy time including bookings.
/// `out` is cleared and receives the sorted, unique slot starts (Unix ms).
/// Reusing both buffers across calls avoids allocation.
///
/// # Errors
/// As [`compute`](super::compute), except unknown zones (the zones are
/// already resolved here).
pub fn compute_ms(
    req: &MsRequest<'_>,
    busy: &mut Vec<MsInterval>,
    out: &mut Vec<i64>,
) -> Result<(), AvailabilityError> {
    let rules = req.rules;
    rules.validate()?;
    out.clear();
    let (win_start, win_end) = (req.window_start_ms, req.window_end_ms);
    if win_end < win_start {
        return Err(AvailabilityError::EndBeforeStart {
            what: "window",
            index: 0,
        });
    }
    if i128::from(win_end) - i128::from(win_start)
        > i128::from(MAX_WINDOW_DAYS) * i128::from(DAY_MS)
    {
        return Err(AvailabilityError::WindowTooLong {
            max_days: MAX_WINDOW_DAYS,
        });
    }
    let total = busy.len().saturating_add(req.bookings.len());
    if total > MAX_INTERVALS {
        return Err(AvailabilityError::TooMany {
            what: "busy intervals and bookings",
            got: total,
            max: MAX_INTERVALS,
        });
    }
    check_intervals(busy, "busy")?;
    check_intervals(req.bookings, "booking")?;

    let min = |m: u32| i64::from(m) * MINUTE_MS;
    let len = min(rules.slot_length_minutes);
    let step = i64::from(if rules.slot_interval_minutes == 0 {
        rules.slot_length_minutes
    } else {
        rules.slot_interval_minutes
    });
    let lo = win_start.max(req.now_ms.saturating_add(min(rules.minimum_notice_minutes)));
    let mut hi = win_end;
    if let Some(days) = rules.horizon_days {
        hi = hi.min(
            req.now_ms
                .saturating_add(i64::from(days).saturating_mul(DAY_MS)),
        );
    }
    if lo.saturating_add(len) > hi || rules.daily_cap == Some(0) {
        return Ok(());
    }

    // Busy time: widen by the buffers, sort, merge overlapping and touching
    // intervals (a merged interval blocks exactly what its parts block).
    busy.extend_from_slice(req.bookings);
    let (before, after) = (
        min(rules.before_buffer_minutes),
        min(rules.after_buffer_minutes),
    );
    if before != 0 || after != 0 {
        for b in busy.iter_mut() {
            b.start = b.start.saturating_sub(after);
            b.end = b.end.saturating_add(before);
        }
    }
    if !busy.is_sorted_by_key(|b| b.start) {
        busy.sort_unstable_by_key(|b| b.start);
    }
    let mut w = 0usize;
    for r in 0..busy.len() {
        let b = busy[r];
        if w > 0 && b.start <= busy[w - 1].end {
            let prev = &mut busy[w - 1];
            prev.end = prev.end.max(b.end);
        } else {
            busy[w] = b;
            w += 1;
        }
    }
    busy.truncate(w);

    // Zone offsets over the window and its margins.
    let span_lo = win_start
        .checked_sub(MARGIN_MS)
        .ok_or(AvailabilityError::OutOfRange)?;
    let span_hi = win_end
        .checked_add(MARGIN_MS)
        .ok_or(AvailabilityError::OutOfRange)?;
    let organizer = Segments::new(req.organizer, span_lo, span_hi)?;
    let invitee = Segments::new(req.invitee, span_lo, span_hi)?;

    // Organizer-local days that offer nothing: today (no same day), capped days.
    let mut blocked_days = Vec::new();
    if rules.no_same_day {
        let off = offset_ms(req.organizer.to_offset(ms_to_timestamp(req.now_ms)?));
        blocked_days.push((req.now_ms + off).div_euclid(DAY_MS));
    }
    if let Some(cap) = rules.daily_cap {
        // Bookings outside the tabulated span cannot share a day with a slot.
        let mut days: Vec<i64> = req
            .bookings
            .iter()
            .filter(|b| b.start >= span_lo && b.start < span_hi)
            .map(|b| organizer.local_day(b.start))
            .collect();
        days.sort_unstable();
        for run in days.chunk_by(|a, b| a == b) {
            if run.len() >= cap as usize {
                blocked_days.push(run[0]);
            }
        }
    }
    blocked_days.sort_unstable();
    blocked_days.dedup();

    // Date overrides by local day number.
    let mut overrides: Vec<(i64, &[TimeRange])> = rules
        .overrides
        .iter()
        .map(|o| {
            let d = o.date;
            (
                days_from_civil(
                    i64::from(d.year()),
                    d.month().unsigned_abs().into(),
                    d.day().unsigned_abs().into(),
                ),
                o.ranges.as_slice(),
            )
        })
        .collect();
    overrides.sort_by_key(|o| o.0);

    let sweep = Sweep {
        busy,
        invitee: &invitee,
        organizer: &organizer,
        blocked_days: &blocked_days,
        len,
        step,
        fast_grid: step % 5 == 0 && 1440 % step == 0,
    };
    // Working windows as instants, clipped; swept once all are known.
    let mut windows: Vec<(i64, i64)> = Vec::new();
    let mut window = |day: i64, r: &TimeRange| -> Result<(), AvailabilityError> {
        if r.end <= r.start {
            return Ok(());
        }
        let base = day * DAY_MS;
        let s = organizer.local_to_utc(req.organizer, base + min(r.start.minutes().into()))?;
        let e = organizer.local_to_utc(req.organizer, base + min(r.end.minutes().into()))?;
        let (s, e) = (s.max(lo), e.min(hi));
        if e - s >= len {
            windows.push((s, e));
        }
        Ok(())
    };

    // Every local date touching the window, one day of margin each side (as
    // the reference does).
    let first_day = organizer.local_day(win_start) - 1;
    let last_day = organizer.local_day(win_end) + 1;
    let mut oi = overrides.partition_point(|o| o.0 < first_day);
    for day in first_day..=last_day {
        while oi < overrides.len() && overrides[oi].0 < day {
            oi += 1;
        }
        if oi < overrides.len() && overrides[oi].0 == day {
            let mut j = oi;
            while j < overrides.len() && overrides[j].0 == day {
                for r in overrides[j].1 {
                    window(day, r)?;
                }
                j += 1;
            }
        } else {
            // 1970-01-01 was a Thursday (4 with Sunday = 0).
            let weekday = (day + 4).rem_euclid(7) as u8;
            for wh in &rules.working_hours {
                if wh.days.contains_sunday_zero(weekday) {
                    window(day, &wh.range)?;
                }
            }
        }
    }

    // Windows can overlap (several ranges a day, overrides, a fold). In start
    // order, a start `t` with `t + len <= covered` (the furthest end so far)
    // lies inside an earlier window, whose sweep already decided it: each
    // window only sweeps past that point, and one that ends by `covered` is
    // skipped. So every candidate is looked at once, the output comes out
    // sorted and unique, and its size is bounded by the number of distinct
    // 5-minute instants, whatever the number of overlapping ranges.
    if !windows.is_sorted() {
        windows.sort_unstable();
    }
    let mut covered = i64::MIN;
    for (ws, we) in windows {
        if we <= covered {
            continue;
        }
        let from = if covered == i64::MIN {
            ws
        } else {
            ws.max(covered - len + 1)
        };
        sweep.run(from, we, out);
        covered = we;
    }
    debug_assert!(out.is_sorted_by(|a, b| a < b));
    Ok(())
}
