//! Provider quotas and the request accounting behind them, applied by the shared API pipeline
//! ([`crate::apis::call`]) to every Graph, Gmail and Calendar call (mail, calendar and send endpoints alike).
//!
//! - **Graph, per mailbox** (PROVIDERS.md §2.3): at most `graph_mailbox_concurrency` requests in flight, and at
//!   most `graph_mailbox_requests_per_window` per `graph_mailbox_window_secs` (a sliding window on the sandbox
//!   clock). Over either: 429 `ApplicationThrottled` with `Retry-After`.
//! - **Gmail, per user** (§6.8): a token bucket in quota units, each call charged its method's cost under the
//!   active cost model (legacy or 2026). A call passes when the bucket holds its cost, or when the bucket is full
//!   (so a call dearer than the whole bucket is not refused forever; the bucket then goes into debt). Over: 429
//!   `rateLimitExceeded` or 403 `userRateLimitExceeded` (setting `gmail_quota_error`), without `Retry-After`.
//!
//! - **Gmail, per user**: at most `gmail_user_concurrency` requests in flight (§6.9; off unless set). Over:
//!   429 `rateLimitExceeded` "Too many concurrent requests for user.".
//!
//! Every limit is off until set, or until `quotas` turns the documented values on. Whatever the limits, the
//! pipeline records per provider and per user: requests, 429s given, quota refusals, units charged, and the
//! peak number of requests (and units) seen in any one-second window of sandbox time, so a test or benchmark
//! can assert that a client's achieved rate never exceeded the quota.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::app::App;
use crate::faults::Family;
use crate::scenario::Settings;
use crate::wire::{google_api_error, graph_error, with_retry_after};

const NANOS: i64 = 1_000_000_000;

/// Counts of one user at one provider.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UserCount {
    /// Requests that reached the quota check (authenticated).
    pub requests: u64,
    /// Responses with status 429, whatever gave them (quota, injected fault, handler).
    pub responses_429: u64,
    /// Requests refused by a quota or concurrency limit (429 or 403).
    pub quota_refusals: u64,
    /// Gmail quota units charged (calls that passed).
    pub units: u64,
    /// Most requests seen in any one-second window of sandbox time.
    pub peak_requests_per_sec: u64,
    /// Most Gmail units charged in any one-second window of sandbox time.
    pub peak_units_per_sec: u64,
    /// The longest run of consecutive 429 responses this user got (a burst of throttling).
    pub longest_429_run: u64,
}

/// Counts of one provider API (`graph`, `gmail`, `calendar`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderCount {
    /// Requests.
    pub requests: u64,
    /// Responses with status 429.
    pub responses_429: u64,
    /// Requests refused by a quota or concurrency limit.
    pub quota_refusals: u64,
    /// Most requests seen in any one-second window (all users together).
    pub peak_requests_per_sec: u64,
    /// Per user (mailbox address).
    pub users: BTreeMap<String, UserCount>,
}

/// The name a family is counted under.
pub fn provider_name(family: Family) -> &'static str {
    match family {
        Family::Graph => "graph",
        Family::Gmail => "gmail",
        Family::Calendar => "calendar",
        Family::MsIdentity => "ms_identity",
        Family::GoogleIdentity => "google_identity",
    }
}

/// A sliding one-second window of weighted events, remembering its peak.
#[derive(Debug, Default)]
struct PeakWindow {
    events: VecDeque<(i64, u64)>,
    sum: u64,
}

impl PeakWindow {
    /// Adds `weight` at `at_ns`; returns the window's sum afterwards.
    fn add(&mut self, at_ns: i64, weight: u64) -> u64 {
        while let Some(&(t, w)) = self.events.front() {
            if t > at_ns - NANOS {
                break;
            }
            self.events.pop_front();
            self.sum -= w;
        }
        self.events.push_back((at_ns, weight));
        self.sum += weight;
        self.sum
    }
}

/// A token bucket in quota units.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at_ns: i64,
}

impl Bucket {
    /// A full bucket at `now_ns`.
    fn full(capacity: f64, now_ns: i64) -> Self {
        Bucket {
            tokens: capacity,
            at_ns: now_ns,
        }
    }

    /// Refills for the time since the last call, then takes `cost` if the bucket holds it or is full (a call
    /// dearer than the whole bucket still passes once it has refilled, leaving it in debt). Time never runs
    /// backwards here: an earlier `now_ns` refills nothing.
    fn take(&mut self, now_ns: i64, rate: f64, capacity: f64, cost: f64) -> bool {
        let elapsed = (now_ns - self.at_ns).max(0) as f64 / NANOS as f64;
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at_ns = self.at_ns.max(now_ns);
        if self.tokens < cost && self.tokens < capacity {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// Runtime quota state: buckets, windows, in-flight counts.
#[derive(Debug, Default)]
pub struct QuotaBook {
    inflight: HashMap<String, u32>,
    graph_windows: HashMap<String, VecDeque<i64>>,
    buckets: HashMap<String, Bucket>,
    request_peaks: HashMap<(&'static str, String), PeakWindow>,
    provider_peaks: HashMap<&'static str, PeakWindow>,
    unit_peaks: HashMap<String, PeakWindow>,
    /// Consecutive 429 responses per (provider, user) up to now.
    runs_429: HashMap<(&'static str, String), u64>,
}

impl QuotaBook {
    /// Forgets buckets and windows (in-flight counts stay: those requests are still running).
    pub fn reset(&mut self) {
        self.graph_windows.clear();
        self.buckets.clear();
        self.request_peaks.clear();
        self.provider_peaks.clear();
        self.unit_peaks.clear();
        self.runs_429.clear();
    }
}

/// Effective Graph concurrency limit.
fn graph_concurrency(s: &Settings) -> Option<u32> {
    s.graph_mailbox_concurrency.or(s.quotas.then_some(4))
}

/// Effective Graph requests per window.
fn graph_requests(s: &Settings) -> Option<u64> {
    s.graph_mailbox_requests_per_window
        .or(s.quotas.then_some(10_000))
}

/// Effective Gmail bucket: (refill units per second, capacity).
fn gmail_bucket(s: &Settings) -> Option<(f64, f64)> {
    if let Some(r) = s.gmail_units_per_user_per_second {
        return Some((r, s.gmail_burst_units.unwrap_or(r)));
    }
    let per_min = s
        .gmail_units_per_user_per_minute
        .or(s.quotas.then(|| s.gmail_user_budget()))? as f64;
    Some((per_min / 60.0, s.gmail_burst_units.unwrap_or(per_min)))
}

/// Holds a mailbox concurrency slot until dropped.
pub struct InflightGuard {
    app: App,
    user: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.app.rt(|rt| {
            if let Some(n) = rt.quota.inflight.get_mut(&self.user) {
                *n = n.saturating_sub(1);
            }
        });
    }
}

fn with_user<R>(app: &App, family: Family, user: &str, f: impl FnOnce(&mut UserCount) -> R) -> R {
    app.rt(|rt| {
        let p = rt
            .counters
            .providers
            .entry(provider_name(family).to_string())
            .or_default();
        f(p.users.entry(user.to_string()).or_default())
    })
}

/// Counts an authenticated request and updates the peak-rate windows.
pub fn record_request(app: &App, family: Family, user: &str) {
    let now = app.now_nanos();
    let name = provider_name(family);
    app.rt(|rt| {
        let user_peak = rt
            .quota
            .request_peaks
            .entry((name, user.to_string()))
            .or_default()
            .add(now, 1);
        let provider_peak = rt.quota.provider_peaks.entry(name).or_default().add(now, 1);
        let p = rt.counters.providers.entry(name.to_string()).or_default();
        p.requests += 1;
        p.peak_requests_per_sec = p.peak_requests_per_sec.max(provider_peak);
        let u = p.users.entry(user.to_string()).or_default();
        u.requests += 1;
        u.peak_requests_per_sec = u.peak_requests_per_sec.max(user_peak);
    });
}

/// Counts the status of the response an authenticated request got (429s, and runs of consecutive 429s).
pub fn record_status(app: &App, family: Family, user: &str, status: StatusCode) {
    let name = provider_name(family);
    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
    app.rt(|rt| {
        let key = (name, user.to_string());
        if !throttled {
            if let Some(run) = rt.quota.runs_429.get_mut(&key) {
                *run = 0;
            }
            return;
        }
        let run = rt.quota.runs_429.entry(key).or_default();
        *run += 1;
        let run = *run;
        let p = rt.counters.providers.entry(name.to_string()).or_default();
        p.responses_429 += 1;
        let u = p.users.entry(user.to_string()).or_default();
        u.responses_429 += 1;
        u.longest_429_run = u.longest_429_run.max(run);
    });
}

fn refused(app: &App, family: Family, endpoint: &str, user: &str) {
    app.count_outcome(endpoint, false);
    app.rt(|rt| {
        let p = rt
            .counters
            .providers
            .entry(provider_name(family).to_string())
            .or_default();
        p.quota_refusals += 1;
    });
    with_user(app, family, user, |u| u.quota_refusals += 1);
}

/// Graph's per-mailbox limits, checked before the call runs: a concurrency slot (held by the returned guard)
/// and a place in the request window. `Ok(None)` for other families.
pub fn enter(
    app: &App,
    family: Family,
    endpoint: &str,
    user: &str,
    headers: &HeaderMap,
) -> Result<Option<InflightGuard>, Response> {
    if family == Family::Gmail {
        return enter_gmail(app, endpoint, user);
    }
    if family != Family::Graph {
        return Ok(None);
    }
    let (concurrency, requests, window, retry_after) = app.read(|s| {
        (
            graph_concurrency(&s.settings),
            graph_requests(&s.settings),
            s.settings.graph_mailbox_window_secs.max(1) as i64,
            s.settings.graph_retry_after_secs,
        )
    });
    let now = app.now_nanos();
    let outcome = app.rt(|rt| {
        if let Some(limit) = requests {
            let w = rt.quota.graph_windows.entry(user.to_string()).or_default();
            while w.front().is_some_and(|t| *t <= now - window * NANOS) {
                w.pop_front();
            }
            if w.len() as u64 >= limit {
                let oldest = w.front().copied().unwrap_or(now);
                let wait_ns = (oldest + window * NANOS - now).max(1);
                let secs = (wait_ns + NANOS - 1) / NANOS;
                return Err(("RequestRate", secs.max(1) as u64));
            }
        }
        if let Some(limit) = concurrency {
            let n = rt.quota.inflight.entry(user.to_string()).or_default();
            if *n >= limit {
                return Err(("MailboxConcurrency", retry_after));
            }
            *n += 1;
        }
        if requests.is_some() {
            rt.quota
                .graph_windows
                .entry(user.to_string())
                .or_default()
                .push_back(now);
        }
        Ok(concurrency.is_some())
    });
    match outcome {
        Ok(true) => Ok(Some(InflightGuard {
            app: app.clone(),
            user: user.to_string(),
        })),
        Ok(false) => Ok(None),
        Err((limit, secs)) => {
            refused(app, family, endpoint, user);
            Err(with_retry_after(
                graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    &format!("Application is over its {limit} limit."),
                    headers,
                    app.now(),
                ),
                Some(secs),
            ))
        }
    }
}

/// Gmail's per-user concurrency limit (`gmail_user_concurrency`, off unless set: Google documents no number):
/// over it, 429 `rateLimitExceeded` "Too many concurrent requests for user." (PROVIDERS.md §6.9).
fn enter_gmail(app: &App, endpoint: &str, user: &str) -> Result<Option<InflightGuard>, Response> {
    let Some(limit) = app.read(|s| s.settings.gmail_user_concurrency) else {
        return Ok(None);
    };
    let admitted = app.rt(|rt| {
        let n = rt.quota.inflight.entry(user.to_string()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    });
    if admitted {
        return Ok(Some(InflightGuard {
            app: app.clone(),
            user: user.to_string(),
        }));
    }
    refused(app, Family::Gmail, endpoint, user);
    Err(google_api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rateLimitExceeded",
        "global",
        "Too many concurrent requests for user.",
    ))
}

/// Charges a Gmail call its method's units (always counted); refuses it when the user's bucket is short.
pub fn charge_gmail(app: &App, endpoint: &str, user: &str) -> Result<(), Response> {
    let (cost, bucket, error) = app.read(|s| {
        (
            s.settings.gmail_cost(endpoint),
            gmail_bucket(&s.settings),
            s.settings.gmail_quota_error.clone(),
        )
    });
    let now = app.now_nanos();
    let admitted = app.rt(|rt| {
        if let Some((rate, capacity)) = bucket {
            let b = rt
                .quota
                .buckets
                .entry(user.to_string())
                .or_insert_with(|| Bucket::full(capacity, now));
            if !b.take(now, rate, capacity, cost as f64) {
                return false;
            }
        }
        let peak = rt
            .quota
            .unit_peaks
            .entry(user.to_string())
            .or_default()
            .add(now, cost);
        *rt.counters.gmail_units.entry(user.to_string()).or_default() += cost;
        let u = rt
            .counters
            .providers
            .entry("gmail".to_string())
            .or_default()
            .users
            .entry(user.to_string())
            .or_default();
        u.units += cost;
        u.peak_units_per_sec = u.peak_units_per_sec.max(peak);
        true
    });
    if admitted {
        return Ok(());
    }
    refused(app, Family::Gmail, endpoint, user);
    Err(if error == "userRateLimitExceeded" {
        google_api_error(
            StatusCode::FORBIDDEN,
            "userRateLimitExceeded",
            "usageLimits",
            "User Rate Limit Exceeded",
        )
    } else {
        google_api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "usageLimits",
            "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'gmail.googleapis.com' for consumer 'project_number:1234567890'.",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client does, the units a bucket admits over any stretch of time stay within what the
        /// quota allows: a full bucket plus the refill, plus at most one call's debt when a call costs more than
        /// the bucket holds.
        #[test]
        fn a_bucket_never_admits_more_than_its_quota(
            rate in 1.0f64..500.0,
            capacity in 1.0f64..1000.0,
            calls in proptest::collection::vec((0i64..300_000_000, prop::sample::select(vec![1u64, 2, 5, 20, 40, 100])), 1..300),
        ) {
            let mut b = Bucket::full(capacity, 0);
            let mut now = 0i64;
            let mut admitted: Vec<(i64, f64)> = Vec::new();
            for (gap, cost) in &calls {
                now += gap;
                if b.take(now, rate, capacity, *cost as f64) {
                    admitted.push((now, *cost as f64));
                }
            }
            let max_cost = calls.iter().map(|(_, c)| *c as f64).fold(0.0, f64::max);
            let debt = (max_cost - capacity).max(0.0);
            for i in 0..admitted.len() {
                let mut sum = 0.0;
                for &(t, c) in &admitted[i..] {
                    sum += c;
                    let span = (t - admitted[i].0) as f64 / NANOS as f64;
                    prop_assert!(sum <= capacity + rate * span + debt + 1e-6,
                        "{sum} units in {span} s (rate {rate}, capacity {capacity})");
                }
            }
        }

        /// A client that paces itself at the quota's rate is never refused.
        #[test]
        fn a_client_paced_at_the_rate_is_never_refused(
            rate in 1.0f64..500.0,
            cost in prop::sample::select(vec![1u64, 2, 5, 20]),
            n in 1usize..200,
        ) {
            let capacity = rate.max(cost as f64);
            let mut b = Bucket::full(capacity, 0);
            let gap = (cost as f64 / rate * NANOS as f64).ceil() as i64;
            for i in 0..n as i64 {
                prop_assert!(b.take(i * gap, rate, capacity, cost as f64), "call {i} refused");
            }
        }
    }

    #[test]
    fn the_peak_window_counts_only_the_last_second() {
        let mut w = PeakWindow::default();
        assert_eq!(w.add(0, 1), 1);
        assert_eq!(w.add(NANOS / 2, 1), 2);
        assert_eq!(w.add(NANOS, 1), 2, "the event at 0 left the window");
        assert_eq!(w.add(3 * NANOS, 5), 5);
    }

    #[test]
    fn quotas_on_turns_on_the_documented_limits() {
        let mut s = Settings::default();
        assert_eq!(
            (graph_concurrency(&s), graph_requests(&s), gmail_bucket(&s)),
            (None, None, None)
        );
        s.quotas = true;
        assert_eq!(graph_concurrency(&s), Some(4));
        assert_eq!(graph_requests(&s), Some(10_000));
        assert_eq!(gmail_bucket(&s), Some((250.0, 15_000.0)));
        s.gmail_units_per_user_per_second = Some(50.0);
        assert_eq!(gmail_bucket(&s), Some((50.0, 50.0)));
    }
}
