//! Quota-aware pacing of provider calls, per mailbox and per provider: [`Pacer`].
//!
//! The server holds one [`Pacer`] (cheap to clone) and hands it, with the mailbox's [`PaceKey`], to the readers it
//! builds ([`crate::MailReader::with_pacer`], [`crate::CalendarClient::with_pacer`]). Every try of every paced
//! request then goes through the same gate:
//!
//! 1. **Pause.** After a throttling answer (429, Gmail 403 `userRateLimitExceeded` / `rateLimitExceeded`) the
//!    mailbox's lane is paused until the provider's `Retry-After` (or a backoff delay when it gives none): no
//!    request of that mailbox is sent before then; other mailboxes are not affected. A pause longer than
//!    [`PacingConfig::max_pause_wait`] is not waited on: the call fails at once with
//!    [`ProviderError::Throttled`] so the caller reschedules the work instead of holding a worker.
//! 2. **Quota.** Token buckets ([`TokenBucket`]), per mailbox and per app/project, in the provider's units: Gmail
//!    quota units with a per-method cost table ([`GmailCosts`], both documented cost models, PROVIDERS.md §6.8);
//!    Graph requests (10,000 per 10 minutes per mailbox, 130,000 per 10 s per app, §2.3). A request waits until
//!    its units are free, then sends; it keeps its place in line while it waits (a reservation), so large batch
//!    requests are not starved by small ones.
//! 3. **Concurrency.** At most N requests in flight per mailbox (Graph: 4, the Outlook `MailboxConcurrency`
//!    limit).
//!
//! Retryable failures are retried here, a bounded number of times ([`BackoffConfig::max_attempts`]), each retry
//! after a full-jitter delay and through the gate again: never a tight loop. The clock and the jitter source are
//! injected ([`PaceClock`], [`Jitter`]), so tests run at test speed and deterministically ([`ManualClock`]).
//!
//! The pacer counts what it does ([`Pacer::stats`], [`Pacer::mailbox`]) for `/metrics` and the sync health page,
//! and turns a quota into a backfill ETA ([`Pacer::eta`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ProviderError;
use crate::http::{HttpClient, Prepared, Request, Response, failure_of, retry_after};

// ---------------------------------------------------------------------------------------------------------------
// Configuration

/// A provider rate limit: at most `units` in any window of length `per`.
///
/// It is enforced as a token bucket of capacity `burst` refilled at `(units - burst) / per`, so that even a full
/// bucket spent at the start of a window keeps the window within `units` (capacity + rate · per = units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The provider's limit per window.
    pub units: u64,
    /// The window.
    pub per: Duration,
    /// How many units may go at once after a quiet spell (the bucket's capacity). Must be below `units`.
    pub burst: u64,
}

impl RateLimit {
    /// The refill rate in units per second.
    pub fn refill_per_second(&self) -> f64 {
        self.units.saturating_sub(self.burst) as f64 / self.per.as_secs_f64()
    }

    fn check(&self, what: &str) -> Result<(), String> {
        if self.per.is_zero() || self.burst == 0 || self.burst >= self.units {
            return Err(format!(
                "{what}: need per > 0 and 0 < burst < units (got {} units per {:?}, burst {})",
                self.units, self.per, self.burst
            ));
        }
        Ok(())
    }
}

/// Limits of one API (Graph, Gmail, Google Calendar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePacing {
    /// Requests in flight at once per mailbox (`None`: unlimited).
    pub max_concurrent_per_mailbox: Option<usize>,
    /// The per-mailbox (per-user) quota.
    pub per_mailbox: Option<RateLimit>,
    /// The per-app (per-project) ceiling, shared by every mailbox of one app registration.
    pub per_app: Option<RateLimit>,
}

impl ServicePacing {
    /// No limits at all.
    pub fn unlimited() -> Self {
        ServicePacing {
            max_concurrent_per_mailbox: None,
            per_mailbox: None,
            per_app: None,
        }
    }
}

/// Which Gmail quota-unit prices apply (PROVIDERS.md §6.8): the project's creation date decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GmailCostModel {
    /// Projects created before 2026-05-01: 15,000 units per minute per user, `messages.get` 5.
    Legacy,
    /// Projects created on or after 2026-05-01: 6,000 units per minute per user, `messages.get` 20,
    /// `threads.get` 40.
    Y2026,
}

impl GmailCostModel {
    /// The documented per-user quota: units per minute.
    pub fn units_per_user_per_minute(self) -> u64 {
        match self {
            GmailCostModel::Legacy => 15_000,
            GmailCostModel::Y2026 => 6_000,
        }
    }

    /// The documented per-project quota: units per minute (both models).
    pub fn units_per_project_per_minute(self) -> u64 {
        1_200_000
    }
}

/// A Gmail API method, for its quota cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GmailMethod {
    /// `users.getProfile`.
    GetProfile,
    /// `users.messages.list`.
    MessagesList,
    /// `users.messages.get`.
    MessagesGet,
    /// `users.messages.attachments.get`.
    AttachmentsGet,
    /// `users.history.list`.
    HistoryList,
    /// `users.threads.get`.
    ThreadsGet,
    /// `users.messages.send`.
    MessagesSend,
    /// `users.drafts.create`.
    DraftsCreate,
    /// `users.drafts.send`.
    DraftsSend,
    /// `users.watch`.
    Watch,
    /// `users.stop`.
    Stop,
}

/// Gmail quota units per method. Starts from a [`GmailCostModel`]; [`GmailCosts::with`] overrides one price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmailCosts(BTreeMap<GmailMethod, u64>);

impl GmailCosts {
    /// The documented prices of `model` (PROVIDERS.md §6.8). `attachments.get` (5), `drafts.create` (10) and
    /// `stop` (50) are not in PROVIDERS.md: they are the legacy quota page's values from memory [U], used for both
    /// models; override them when the project's console says otherwise.
    pub fn of(model: GmailCostModel) -> Self {
        use GmailMethod as M;
        let get = match model {
            GmailCostModel::Legacy => 5,
            GmailCostModel::Y2026 => 20,
        };
        let threads_get = match model {
            GmailCostModel::Legacy => 10,
            GmailCostModel::Y2026 => 40,
        };
        GmailCosts(BTreeMap::from([
            (M::GetProfile, 1),
            (M::MessagesList, 5),
            (M::MessagesGet, get),
            (M::AttachmentsGet, 5),
            (M::HistoryList, 2),
            (M::ThreadsGet, threads_get),
            (M::MessagesSend, 100),
            (M::DraftsCreate, 10),
            (M::DraftsSend, 100),
            (M::Watch, 100),
            (M::Stop, 50),
        ]))
    }

    /// These prices with `method` costing `units`.
    pub fn with(mut self, method: GmailMethod, units: u64) -> Self {
        self.0.insert(method, units);
        self
    }

    /// The units one call of `method` costs.
    pub fn cost(&self, method: GmailMethod) -> u64 {
        self.0.get(&method).copied().unwrap_or(1)
    }
}

/// Retries of retryable failures: bounded, each after a full-jitter delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Tries in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay; it doubles with each retry.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// No retry comes sooner than this, whatever the jitter draws (no tight loop).
    pub min: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            max_attempts: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            min: Duration::from_millis(100),
        }
    }
}

impl BackoffConfig {
    /// The ceiling before retry `retry` (1 = the first retry): `min(max, base · 2^(retry-1))`, never below `min`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max).max(self.min)
    }

    /// The delay before retry `retry` for a jitter draw `r` in `[0, 1]`: "full jitter" over `[min, ceiling]`.
    pub fn delay(&self, retry: u32, r: f64) -> Duration {
        let r = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        let ceiling = self.ceiling(retry);
        let spread = ceiling.saturating_sub(self.min);
        self.min + spread.mul_f64(r).min(spread)
    }
}

/// Everything the pacer enforces. Build it with [`PacingConfig::documented`] and adjust the fields (the server
/// exposes them as settings; tests shrink them to test scale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacingConfig {
    /// Microsoft Graph (mail and calendar share the Outlook per-mailbox limits).
    pub graph: ServicePacing,
    /// Gmail, in quota units.
    pub gmail: ServicePacing,
    /// Gmail's prices per method.
    pub gmail_costs: GmailCosts,
    /// Google Calendar (its quota is per request, not in Gmail units).
    pub google_calendar: ServicePacing,
    /// Retries of retryable failures.
    pub backoff: BackoffConfig,
    /// A mailbox paused for longer than this fails fast with [`ProviderError::Throttled`] instead of waiting.
    pub max_pause_wait: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig::documented(GmailCostModel::Legacy)
    }
}

impl PacingConfig {
    /// The providers' documented limits (PROVIDERS.md §2.3, §6.8), with Gmail priced by `model`:
    ///
    /// - Graph: 4 requests in flight per mailbox; 10,000 requests per 10 minutes per mailbox (burst 100);
    ///   130,000 requests per 10 s per app (burst 13,000).
    /// - Gmail: the model's units per minute per user with one second's worth as the burst (legacy 250,
    ///   2026 100: "about 250 units per user per second" under the legacy model); 1,200,000 units per minute per
    ///   project (burst 20,000).
    /// - Google Calendar: no documented number in PROVIDERS.md; unlimited here, throttling answers still pause.
    pub fn documented(model: GmailCostModel) -> Self {
        let per_user = model.units_per_user_per_minute();
        PacingConfig {
            graph: ServicePacing {
                max_concurrent_per_mailbox: Some(4),
                per_mailbox: Some(RateLimit {
                    units: 10_000,
                    per: Duration::from_secs(600),
                    burst: 100,
                }),
                per_app: Some(RateLimit {
                    units: 130_000,
                    per: Duration::from_secs(10),
                    burst: 13_000,
                }),
            },
            gmail: ServicePacing {
                max_concurrent_per_mailbox: None,
                per_mailbox: Some(RateLimit {
                    units: per_user,
                    per: Duration::from_secs(60),
                    burst: per_user / 60,
                }),
                per_app: Some(RateLimit {
                    units: model.units_per_project_per_minute(),
                    per: Duration::from_secs(60),
                    burst: model.units_per_project_per_minute() / 60,
                }),
            },
            gmail_costs: GmailCosts::of(model),
            google_calendar: ServicePacing::unlimited(),
            backoff: BackoffConfig::default(),
            max_pause_wait: Duration::from_secs(60),
        }
    }

    /// No quotas and no concurrency limit (retries and throttling pauses still apply).
    pub fn unlimited() -> Self {
        PacingConfig {
            graph: ServicePacing::unlimited(),
            gmail: ServicePacing::unlimited(),
            gmail_costs: GmailCosts::of(GmailCostModel::Legacy),
            google_calendar: ServicePacing::unlimited(),
            backoff: BackoffConfig::default(),
            max_pause_wait: Duration::from_secs(60),
        }
    }

    /// Rejects settings that cannot work (a zero concurrency, a burst not below the limit, no tries).
    pub fn validate(&self) -> Result<(), String> {
        for (name, s) in [
            ("graph", &self.graph),
            ("gmail", &self.gmail),
            ("google_calendar", &self.google_calendar),
        ] {
            if s.max_concurrent_per_mailbox == Some(0) {
                return Err(format!(
                    "{name}: max_concurrent_per_mailbox must be at least 1"
                ));
            }
            if let Some(r) = &s.per_mailbox {
                r.check(&format!("{name}.per_mailbox"))?;
            }
            if let Some(r) = &s.per_app {
                r.check(&format!("{name}.per_app"))?;
            }
        }
        if self.backoff.max_attempts == 0 {
            return Err("backoff.max_attempts must be at least 1".into());
        }
        Ok(())
    }

    fn service(&self, service: Service) -> &ServicePacing {
        match service {
            Service::Graph => &self.graph,
            Service::Gmail => &self.gmail,
            Service::GoogleCalendar => &self.google_calendar,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Keys and operations

/// An API whose limits are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Microsoft Graph, mail and calendar.
    Graph,
    /// Gmail API.
    Gmail,
    /// Google Calendar API.
    GoogleCalendar,
}

impl Service {
    /// A label for metrics (`graph`, `gmail`, `google_calendar`).
    pub fn label(self) -> &'static str {
        match self {
            Service::Graph => "graph",
            Service::Gmail => "gmail",
            Service::GoogleCalendar => "google_calendar",
        }
    }
}

/// Whose limits a request counts against: the app registration (Google Cloud project, Entra app) and the mailbox.
///
/// Use the mailbox's address (or the grant's stable id) as `mailbox`; for Microsoft, mail and calendar readers of
/// one mailbox should share a key, since Outlook's per-mailbox limits cover both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaceKey {
    app: Arc<str>,
    mailbox: Arc<str>,
}

impl PaceKey {
    /// The key of `mailbox` under the app registration `app` (e.g. the OAuth client id).
    pub fn new(app: impl AsRef<str>, mailbox: impl AsRef<str>) -> Self {
        PaceKey {
            app: Arc::from(app.as_ref()),
            mailbox: Arc::from(mailbox.as_ref().trim().to_ascii_lowercase()),
        }
    }

    /// The mailbox part.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

/// What a request is, for its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// One Graph request (1 unit).
    Graph,
    /// A Graph `$batch` of `count` requests: each counts against the mailbox on its own (`count` units), and Outlook
    /// runs up to 4 of them at once, so it takes up to that many of the mailbox's slots.
    GraphBatch(u32),
    /// `count` calls of a Gmail method (a batch of `count` parts costs `count` calls).
    Gmail(GmailMethod, u32),
    /// One Google Calendar request (1 unit).
    GoogleCalendar,
}

impl Op {
    /// The API it counts against.
    pub fn service(self) -> Service {
        match self {
            Op::Graph | Op::GraphBatch(_) => Service::Graph,
            Op::Gmail(..) => Service::Gmail,
            Op::GoogleCalendar => Service::GoogleCalendar,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clock and jitter

/// The time source of the pacer. [`TokioClock`] in production; [`ManualClock`] in tests.
pub trait PaceClock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
    /// A future that completes once [`PaceClock::now`] is at or after `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// [`PaceClock`] on the system clock and the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl PaceClock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// A clock that moves only when told: [`ManualClock::advance`], or by itself to each sleeper's deadline when
/// built with [`ManualClock::auto_advance`] (every wait then takes no real time, and time never goes back).
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: Instant,
    auto: bool,
    sleepers: Vec<(Instant, Waker)>,
}

impl ManualClock {
    /// A clock that stands still until [`ManualClock::advance`].
    pub fn new() -> Self {
        Self::build(false)
    }

    /// A clock that jumps to a sleeper's deadline as soon as it sleeps.
    pub fn auto_advance() -> Self {
        Self::build(true)
    }

    fn build(auto: bool) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now: Instant::now(),
                auto,
                sleepers: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward by `by` and wakes the sleepers whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let woken: Vec<Waker> = {
            let mut s = self.inner.lock().expect("clock lock");
            s.now += by;
            let now = s.now;
            let (due, later): (Vec<_>, Vec<_>) = s.sleepers.drain(..).partition(|(d, _)| *d <= now);
            s.sleepers = later;
            due.into_iter().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// How many futures are sleeping on this clock.
    pub fn sleepers(&self) -> usize {
        self.inner.lock().expect("clock lock").sleepers.len()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PaceClock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().expect("clock lock").now
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(ManualSleep {
            clock: self.inner.clone(),
            deadline,
        })
    }
}

struct ManualSleep {
    clock: Arc<Mutex<ManualState>>,
    deadline: Instant,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.clock.lock().expect("clock lock");
        if s.now >= self.deadline {
            return Poll::Ready(());
        }
        if s.auto {
            s.now = self.deadline;
            return Poll::Ready(());
        }
        s.sleepers.push((self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

/// Where the backoff jitter comes from: a fraction in `[0, 1]`.
pub trait Jitter: Send + Sync + 'static {
    /// The next draw.
    fn fraction(&self) -> f64;
}

/// [`Jitter`] from the thread RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn fraction(&self) -> f64 {
        rand::random::<f64>()
    }
}

impl<F: Fn() -> f64 + Send + Sync + 'static> Jitter for F {
    fn fraction(&self) -> f64 {
        self()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Token bucket

/// A token bucket with reservations, in provider units (the GCRA form: one "theoretical arrival time").
///
/// Hand-written rather than `governor`'s: governor admits or refuses a cost at the moment of asking and waits on
/// its own timer, while the pacer needs a request to *reserve* its units and learn when they are free (so a large
/// batch keeps its place in line), on an injected clock.
///
/// Invariant (tested as a property): the units of the requests released in any window of length `t` total at
/// most `capacity + rate · t`, when no single request costs more than `capacity`. A request costing more than the
/// capacity is released once the bucket could have refilled that much.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Time per unit.
    interval: Duration,
    /// `capacity · interval`: how far ahead of now the reservations may run.
    tolerance: Duration,
    capacity: u64,
    /// When the bucket will be full again, given every reservation so far (`None`: full).
    full_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket enforcing `limit` (see [`RateLimit`]).
    pub fn new(limit: RateLimit) -> Self {
        let rate = limit.refill_per_second().max(f64::MIN_POSITIVE);
        let interval = Duration::from_secs_f64((1.0 / rate).min(1e9));
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(u32::try_from(limit.burst).unwrap_or(u32::MAX)),
            capacity: limit.burst,
            full_at: None,
        }
    }

    /// Reserves `cost` units asked for at `now`; returns when they may be used (`now` if at once).
    pub fn reserve(&mut self, now: Instant, cost: u64) -> Instant {
        let start = self.full_at.map_or(now, |f| f.max(now));
        let needed = self
            .interval
            .saturating_mul(u32::try_from(cost).unwrap_or(u32::MAX));
        let full_at = start + needed;
        self.full_at = Some(full_at);
        let ready = full_at.checked_sub(self.tolerance).unwrap_or(now).max(now);
        // A cost above the capacity is admitted once the bucket could have refilled that much: from a full bucket
        // that is after `needed - tolerance`; the formula above already gives that.
        ready
    }

    /// How long a 1-unit request asked for at `now` would wait.
    pub fn wait(&self, now: Instant) -> Duration {
        match self.full_at {
            Some(f) => (f + self.interval)
                .checked_sub(self.tolerance)
                .map_or(Duration::ZERO, |ready| ready.saturating_duration_since(now)),
            None => Duration::ZERO,
        }
    }

    /// The capacity in units.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The pacer

/// Counters of one API, for `/metrics` ([`Pacer::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Tries sent (retries included).
    pub requests: u64,
    /// Throttling answers received (429, Gmail rate-limit 403s).
    pub throttled: u64,
    /// Retries made after a retryable failure.
    pub retries: u64,
    /// Quota units consumed (Gmail units; Graph and Calendar: requests).
    pub units: u64,
    /// Requests waiting right now (for a pause, their units or a free slot).
    pub waiting: u64,
}

/// One mailbox's pacing figures, for the sync health page ([`Pacer::mailbox`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxPace {
    /// Tries sent.
    pub requests: u64,
    /// Throttling answers received.
    pub throttled: u64,
    /// Quota units consumed.
    pub units: u64,
    /// How long a request made now would wait: the rest of a throttling pause, or for its quota.
    pub current_wait: Duration,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    units: AtomicU64,
    waiting: AtomicU64,
}

struct Lane {
    slots: Option<Arc<Semaphore>>,
    paused_until: Option<Instant>,
    bucket: Option<TokenBucket>,
    pace: MailboxPace,
}

struct Inner {
    config: PacingConfig,
    clock: Arc<dyn PaceClock>,
    jitter: Arc<dyn Jitter>,
    lanes: Mutex<HashMap<(Service, PaceKey), Lane>>,
    apps: Mutex<HashMap<(Service, Arc<str>), TokenBucket>>,
    counters: [Counters; 3],
}

/// Paces provider calls per mailbox and per provider (see the module docs). Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Pacer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A slot to send one request: hold it while the request is in flight, then drop it.
#[derive(Debug)]
pub struct Ticket {
    _slot: Option<OwnedSemaphorePermit>,
}

fn index(service: Service) -> usize {
    match service {
        Service::Graph => 0,
        Service::Gmail => 1,
        Service::GoogleCalendar => 2,
    }
}

/// Decrements the waiting gauge when a wait ends, however it ends.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn start(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Waiting(c)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a try ended, as the pacer sees it.
enum Verdict {
    Done(Response),
    Throttled(Option<Duration>, ProviderError),
    Retry(Option<Duration>, ProviderError),
    Fail(ProviderError),
}

impl Pacer {
    /// A pacer enforcing `config` on the system clock with random jitter. Fails on settings that cannot work
    /// ([`PacingConfig::validate`]).
    pub fn new(config: PacingConfig) -> Result<Self, String> {
        Self::with_parts(config, Arc::new(TokioClock), Arc::new(RandomJitter))
    }

    /// A pacer with an injected clock and jitter source (tests).
    pub fn with_parts(
        config: PacingConfig,
        clock: Arc<dyn PaceClock>,
        jitter: Arc<dyn Jitter>,
    ) -> Result<Self, String> {
        config.validate()?;
        Ok(Pacer {
            inner: Arc::new(Inner {
                config,
                clock,
                jitter,
                lanes: Mutex::new(HashMap::new()),
                apps: Mutex::new(HashMap::new()),
                counters: Default::default(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &PacingConfig {
        &self.inner.config
    }

    /// The units one `op` costs.
    pub fn cost(&self, op: Op) -> u64 {
        match op {
            Op::Gmail(method, count) => {
                self.inner.config.gmail_costs.cost(method) * u64::from(count)
            }
            Op::GraphBatch(count) => u64::from(count.max(1)),
            Op::Graph | Op::GoogleCalendar => 1,
        }
    }

    /// How many Gmail `messages.get` parts fit in one batch request without asking for more units than the
    /// per-user bucket holds (at most `max`, at least 1).
    pub fn gmail_batch_size(&self, max: usize) -> usize {
        let cost = self
            .inner
            .config
            .gmail_costs
            .cost(GmailMethod::MessagesGet)
            .max(1);
        match &self.inner.config.gmail.per_mailbox {
            Some(limit) => ((limit.burst / cost) as usize).clamp(1, max.max(1)),
            None => max.max(1),
        }
    }

    /// Waits until `key` may send `op` (its pause is over, its units are reserved and due, a slot is free) and
    /// returns the slot. Fails fast with [`ProviderError::Throttled`] when the mailbox is paused for longer than
    /// [`PacingConfig::max_pause_wait`]. Prefer the readers' paced paths; this is for calls made elsewhere.
    pub async fn acquire(&self, key: &PaceKey, op: Op) -> Result<Ticket, ProviderError> {
        let service = op.service();
        let counters = &self.inner.counters[index(service)];
        let _waiting = Waiting::start(&counters.waiting);
        let cost = self.cost(op);
        self.wait_for_pause(key, service).await?;
        // Reserve the units (mailbox and app), then wait for them.
        let ready = {
            let now = self.inner.clock.now();
            let cfg = self.inner.config.service(service);
            let mut ready = now;
            if let Some(limit) = cfg.per_app {
                let mut apps = self.inner.apps.lock().expect("pacer lock");
                let b = apps
                    .entry((service, key.app.clone()))
                    .or_insert_with(|| TokenBucket::new(limit));
                ready = ready.max(b.reserve(now, cost));
            }
            let mut lanes = self.inner.lanes.lock().expect("pacer lock");
            let lane = self.lane(&mut lanes, key, service);
            if let Some(b) = lane.bucket.as_mut() {
                ready = ready.max(b.reserve(now, cost));
            }
            lane.pace.units += cost;
            ready
        };
        counters.units.fetch_add(cost, Ordering::Relaxed);
        if ready > self.inner.clock.now() {
            self.inner.clock.sleep_until(ready).await;
        }
        loop {
            let slots = {
                let mut lanes = self.inner.lanes.lock().expect("pacer lock");
                self.lane(&mut lanes, key, service).slots.clone()
            };
            let slot = match slots {
                Some(s) => {
                    let want = match op {
                        Op::GraphBatch(count) => {
                            let limit = self
                                .inner
                                .config
                                .graph
                                .max_concurrent_per_mailbox
                                .unwrap_or(1);
                            count.clamp(1, u32::try_from(limit).unwrap_or(u32::MAX))
                        }
                        _ => 1,
                    };
                    Some(
                        s.acquire_many_owned(want)
                            .await
                            .expect("the semaphore is never closed"),
                    )
                }
                None => None,
            };
            // A throttling answer may have come while this request waited for its slot.
            if self.pause_left(key, service).is_some() {
                drop(slot);
                self.wait_for_pause(key, service).await?;
                continue;
            }
            let mut lanes = self.inner.lanes.lock().expect("pacer lock");
            self.lane(&mut lanes, key, service).pace.requests += 1;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            return Ok(Ticket { _slot: slot });
        }
    }

    /// Tells the pacer that `key` was throttled on `service`: no request of that mailbox goes out before
    /// `retry_after` (or a backoff delay when the provider gave none) has passed.
    pub fn throttled(&self, key: &PaceKey, service: Service, retry_after: Option<Duration>) {
        let delay = retry_after.unwrap_or_else(|| self.backoff_delay(1));
        self.pause(key, service, delay);
        self.inner.counters[index(service)]
            .throttled
            .fetch_add(1, Ordering::Relaxed);
        let mut lanes = self.inner.lanes.lock().expect("pacer lock");
        self.lane(&mut lanes, key, service).pace.throttled += 1;
    }

    /// The counters of `service` (all mailboxes).
    pub fn stats(&self, service: Service) -> ServiceStats {
        let c = &self.inner.counters[index(service)];
        ServiceStats {
            requests: c.requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            units: c.units.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
        }
    }

    /// The figures of one mailbox on `service` (zeros for a mailbox never paced).
    pub fn mailbox(&self, key: &PaceKey, service: Service) -> MailboxPace {
        let now = self.inner.clock.now();
        let lanes = self.inner.lanes.lock().expect("pacer lock");
        let Some(lane) = lanes.get(&(service, key.clone())) else {
            return MailboxPace::default();
        };
        let pause = lane
            .paused_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        let quota = lane.bucket.as_ref().map_or(Duration::ZERO, |b| b.wait(now));
        MailboxPace {
            current_wait: pause.max(quota),
            ..lane.pace
        }
    }

    /// How long `remaining` more items will take at the mailbox's quota, each costing `cost_per_item` units
    /// (see [`Pacer::backfill_cost_per_message`]), plus the mailbox's current wait. `None` when no quota applies
    /// to `service` (the time then depends on the provider's speed, not on a limit).
    pub fn eta(
        &self,
        key: &PaceKey,
        service: Service,
        remaining: u64,
        cost_per_item: f64,
    ) -> Option<Duration> {
        let cfg = self.inner.config.service(service);
        let rate = match (cfg.per_mailbox, cfg.per_app) {
            (Some(m), Some(a)) => m.refill_per_second().min(a.refill_per_second()),
            (Some(m), None) => m.refill_per_second(),
            (None, Some(a)) => a.refill_per_second(),
            (None, None) => return None,
        };
        if rate <= 0.0 {
            return None;
        }
        let secs = remaining as f64 * cost_per_item.max(0.0) / rate;
        Some(Duration::from_secs_f64(secs.min(1e9)) + self.mailbox(key, service).current_wait)
    }

    /// The units one backfilled message costs, listing included: Gmail `messages.get` plus a share of a 500-item
    /// `messages.list` page; Graph one message GET plus a share of a 1,000-item listing page (messages with
    /// attachments cost one more request).
    pub fn backfill_cost_per_message(&self, service: Service) -> f64 {
        match service {
            Service::Gmail => {
                let c = &self.inner.config.gmail_costs;
                c.cost(GmailMethod::MessagesGet) as f64
                    + c.cost(GmailMethod::MessagesList) as f64 / 500.0
            }
            Service::Graph => 1.0 + 1.0 / 1000.0,
            Service::GoogleCalendar => 1.0,
        }
    }

    /// Drops what the pacer keeps about a mailbox (after its grant is removed).
    pub fn forget(&self, key: &PaceKey) {
        self.inner
            .lanes
            .lock()
            .expect("pacer lock")
            .retain(|(_, k), _| k != key);
    }

    /// Sends `request` for `key` through the gate, retrying retryable failures (bounded, full jitter) through
    /// the gate again. Returns any response that is not retried (4xx included, as [`HttpClient::send`]); a
    /// throttling or 5xx answer still there after the last try becomes [`ProviderError::Throttled`] /
    /// [`ProviderError::Transient`].
    pub(crate) async fn send(
        &self,
        http: &HttpClient,
        key: &PaceKey,
        op: Op,
        request: Request,
        idempotent: bool,
    ) -> Result<Response, ProviderError> {
        let prepared = Prepared::new(request)?;
        let service = op.service();
        let max_attempts = self.inner.config.backoff.max_attempts.max(1);
        let mut attempt = 0u32;
        loop {
            let ticket = self.acquire(key, op).await?;
            let outcome = http.send_once(&prepared, attempt).await;
            drop(ticket);
            attempt += 1;
            let verdict = match outcome {
                Err(t) if t.retryable(idempotent) => Verdict::Retry(None, t.error),
                Err(t) => Verdict::Fail(t.error),
                Ok(resp) => classify(service, resp, &prepared, idempotent),
            };
            let last = attempt >= max_attempts;
            match verdict {
                Verdict::Done(resp) => return Ok(resp),
                Verdict::Fail(e) => return Err(e),
                Verdict::Throttled(ra, e) => {
                    self.throttled(
                        key,
                        service,
                        ra.or_else(|| Some(self.backoff_delay(attempt))),
                    );
                    if last || ra.is_some_and(|ra| ra > self.inner.config.max_pause_wait) {
                        return Err(e);
                    }
                }
                Verdict::Retry(ra, e) => {
                    if last {
                        return Err(e);
                    }
                    let delay = ra.unwrap_or_else(|| self.backoff_delay(attempt));
                    if delay > self.inner.config.max_pause_wait {
                        return Err(e);
                    }
                    let until = self.inner.clock.now() + delay;
                    self.inner.clock.sleep_until(until).await;
                }
            }
            self.inner.counters[index(service)]
                .retries
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(target = %prepared.log_target, attempt, "retrying a paced provider request");
        }
    }

    fn backoff_delay(&self, retry: u32) -> Duration {
        self.inner
            .config
            .backoff
            .delay(retry, self.inner.jitter.fraction())
    }

    fn lane<'a>(
        &self,
        lanes: &'a mut HashMap<(Service, PaceKey), Lane>,
        key: &PaceKey,
        service: Service,
    ) -> &'a mut Lane {
        lanes.entry((service, key.clone())).or_insert_with(|| {
            let cfg = self.inner.config.service(service);
            Lane {
                slots: cfg
                    .max_concurrent_per_mailbox
                    .map(|n| Arc::new(Semaphore::new(n))),
                paused_until: None,
                bucket: cfg.per_mailbox.map(TokenBucket::new),
                pace: MailboxPace::default(),
            }
        })
    }

    fn pause(&self, key: &PaceKey, service: Service, delay: Duration) {
        let until = self.inner.clock.now() + delay;
        let mut lanes = self.inner.lanes.lock().expect("pacer lock");
        let lane = self.lane(&mut lanes, key, service);
        lane.paused_until = Some(lane.paused_until.map_or(until, |u| u.max(until)));
    }

    /// The rest of the mailbox's pause, if it is paused.
    fn pause_left(&self, key: &PaceKey, service: Service) -> Option<(Instant, Duration)> {
        let now = self.inner.clock.now();
        let lanes = self.inner.lanes.lock().expect("pacer lock");
        let until = lanes.get(&(service, key.clone()))?.paused_until?;
        (until > now).then(|| (until, until - now))
    }

    async fn wait_for_pause(&self, key: &PaceKey, service: Service) -> Result<(), ProviderError> {
        // The pause may be extended while we sleep: look again after each wake.
        while let Some((until, left)) = self.pause_left(key, service) {
            if left > self.inner.config.max_pause_wait {
                return Err(ProviderError::Throttled {
                    retry_after: Some(left),
                });
            }
            self.inner.clock.sleep_until(until).await;
        }
        Ok(())
    }
}

/// Sends `request` through `pacing`'s pacer when a reader has one, else straight through `http` (its own retries).
pub(crate) async fn send_paced(
    http: &HttpClient,
    pacing: Option<&(Pacer, PaceKey)>,
    op: Op,
    request: Request,
    idempotent: bool,
) -> Result<Response, ProviderError> {
    match pacing {
        None => http.send(request, idempotent).await,
        Some((pacer, key)) => pacer.send(http, key, op, request, idempotent).await,
    }
}

/// What a response means for pacing: throttling (pause the mailbox), a retryable failure, or an answer.
fn classify(service: Service, resp: Response, prepared: &Prepared, idempotent: bool) -> Verdict {
    let status = resp.status().as_u16();
    let ra = retry_after(resp.headers());
    match status {
        429 => Verdict::Throttled(ra, failure_of(prepared, &resp)),
        403 if matches!(service, Service::Gmail | Service::GoogleCalendar)
            && google_rate_limited(resp.body()) =>
        {
            Verdict::Throttled(ra, ProviderError::Throttled { retry_after: ra })
        }
        // A 503 with `Retry-After` is the provider asking the mailbox to slow down (PROVIDERS.md §2.3).
        503 if ra.is_some() => Verdict::Throttled(ra, failure_of(prepared, &resp)),
        503 => Verdict::Retry(None, failure_of(prepared, &resp)),
        500 | 502 | 504 if idempotent => Verdict::Retry(ra, failure_of(prepared, &resp)),
        500 | 502 | 504 => Verdict::Fail(failure_of(prepared, &resp)),
        _ => Verdict::Done(resp),
    }
}

/// Google's 403 `userRateLimitExceeded` / `rateLimitExceeded` (PROVIDERS.md §6.9): throttling, not a permission.
fn google_rate_limited(body: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    matches!(
        v["error"]["errors"][0]["reason"].as_str(),
        Some("userRateLimitExceeded" | "rateLimitExceeded")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(units: u64, per_ms: u64, burst: u64) -> RateLimit {
        RateLimit {
            units,
            per: Duration::from_millis(per_ms),
            burst,
        }
    }

    proptest! {
        /// The bucket's promise: in any window of length t, released units ≤ capacity + rate · t.
        #[test]
        fn a_token_bucket_never_releases_more_than_capacity_plus_rate_times_any_window(
            burst in 1u64..200,
            extra in 1u64..2000,
            per_ms in 100u64..10_000,
            asks in proptest::collection::vec((0u64..2_000, 1u64..200), 1..80),
        ) {
            let l = limit(burst + extra, per_ms, burst);
            let mut b = TokenBucket::new(l);
            let t0 = Instant::now();
            let mut now = t0;
            let mut released = Vec::new();
            for (gap_ms, cost) in asks {
                now += Duration::from_millis(gap_ms);
                let cost = cost.min(burst);
                let ready = b.reserve(now, cost);
                prop_assert!(ready >= now);
                released.push((ready, cost));
            }
            let rate = l.refill_per_second();
            released.sort();
            for i in 0..released.len() {
                let mut units = 0u64;
                for j in i..released.len() {
                    units += released[j].1;
                    let t = (released[j].0 - released[i].0).as_secs_f64();
                    // A nanosecond of rounding per reservation.
                    let allowed = burst as f64 + rate * (t + 1e-6 * released.len() as f64);
                    prop_assert!(units as f64 <= allowed + 1e-6, "{units} units in {t}s > {allowed}");
                }
            }
        }

        #[test]
        fn full_jitter_stays_between_the_floor_and_the_growing_ceiling(retry in 1u32..40, r in 0.0f64..=1.0) {
            let b = BackoffConfig::default();
            let d = b.delay(retry, r);
            prop_assert!(d >= b.min);
            prop_assert!(d <= b.ceiling(retry));
            prop_assert!(d <= b.max);
        }
    }

    proptest! {
        /// Whatever the interleaving of arrivals and completions across mailboxes, no mailbox ever has more than its
        /// limit in flight, and every request is eventually let through.
        #[test]
        fn no_mailbox_ever_has_more_than_its_limit_in_flight(
            limit in 1usize..6,
            arrivals in proptest::collection::vec((0usize..3, 0usize..6), 1..60),
        ) {
            let mut config = PacingConfig::unlimited();
            config.graph.max_concurrent_per_mailbox = Some(limit);
            let pacer = Pacer::with_parts(config, Arc::new(ManualClock::auto_advance()), Arc::new(|| 0.5)).unwrap();
            let keys: Vec<PaceKey> = (0..3).map(|i| PaceKey::new("app", format!("m{i}"))).collect();
            let mut cx = Context::from_waker(Waker::noop());
            type Acquire = Pin<Box<dyn Future<Output = Result<Ticket, ProviderError>> + Send>>;
            let mut waiting: Vec<(usize, usize, Acquire)> = Vec::new();
            // (mailbox, steps left, ticket)
            let mut held: Vec<(usize, usize, Ticket)> = Vec::new();
            let mut done = 0usize;
            let total = arrivals.len();
            let mut step = 0usize;
            while done < total {
                if let Some(&(mailbox, hold)) = arrivals.get(step) {
                    let (p, k) = (pacer.clone(), keys[mailbox].clone());
                    waiting.push((mailbox, hold, Box::pin(async move { p.acquire(&k, Op::Graph).await })));
                }
                step += 1;
                held.retain_mut(|(_, left, _)| {
                    if *left == 0 {
                        false
                    } else {
                        *left -= 1;
                        true
                    }
                });
                let mut still = Vec::new();
                for (mailbox, hold, mut f) in waiting.drain(..) {
                    match f.as_mut().poll(&mut cx) {
                        Poll::Ready(t) => {
                            held.push((mailbox, hold, t.unwrap()));
                            done += 1;
                        }
                        Poll::Pending => still.push((mailbox, hold, f)),
                    }
                }
                waiting = still;
                for m in 0..3 {
                    let in_flight = held.iter().filter(|h| h.0 == m).count();
                    prop_assert!(in_flight <= limit, "mailbox {m}: {in_flight} > {limit}");
                }
                prop_assert!(step < 10_000, "requests starved");
            }
        }
    }

    #[test]
    fn a_quiet_bucket_releases_its_burst_at_once_then_paces_at_the_refill_rate() {
        // 10 units per second after a burst of 10: 20 per 1 s window.
        let mut b = TokenBucket::new(limit(20, 1000, 10));
        let t0 = Instant::now();
        assert_eq!(b.reserve(t0, 10), t0);
        assert_eq!(b.reserve(t0, 5), t0 + Duration::from_millis(500));
        assert_eq!(b.wait(t0), Duration::from_millis(600));
        // After a long pause the bucket is full again, not fuller.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.reserve(later, 10), later);
        assert_eq!(b.reserve(later, 1), later + Duration::from_millis(100));
    }

    #[test]
    fn the_documented_models_price_gmail_and_size_batches_to_the_bucket() {
        let legacy = Pacer::new(PacingConfig::documented(GmailCostModel::Legacy)).unwrap();
        let new = Pacer::new(PacingConfig::documented(GmailCostModel::Y2026)).unwrap();
        assert_eq!(legacy.cost(Op::Gmail(GmailMethod::MessagesGet, 3)), 15);
        assert_eq!(new.cost(Op::Gmail(GmailMethod::MessagesGet, 3)), 60);
        assert_eq!(new.cost(Op::Gmail(GmailMethod::ThreadsGet, 1)), 40);
        assert_eq!(legacy.cost(Op::Gmail(GmailMethod::HistoryList, 1)), 2);
        assert_eq!(legacy.cost(Op::Graph), 1);
        assert_eq!(legacy.config().gmail.per_mailbox.unwrap().burst, 250);
        assert_eq!(legacy.gmail_batch_size(50), 50);
        assert_eq!(new.gmail_batch_size(50), 5);
        // 100,000 messages at 20 units under 6,000 units/min (less the burst): hours, as PROVIDERS.md §14 warns.
        let key = PaceKey::new("app", "r@corp.example");
        let eta = new
            .eta(
                &key,
                Service::Gmail,
                100_000,
                new.backfill_cost_per_message(Service::Gmail),
            )
            .unwrap();
        assert!(
            eta > Duration::from_secs(5 * 3600) && eta < Duration::from_secs(6 * 3600),
            "{eta:?}"
        );
        assert!(
            Pacer::new(PacingConfig::unlimited())
                .unwrap()
                .eta(&key, Service::Gmail, 10, 5.0)
                .is_none()
        );
    }

    /// Lets every task that can run, run (the manual clock does no I/O, so a few rounds suffice).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_units_in_turn_and_never_beyond_the_bucket() {
        let clock = ManualClock::new();
        let mut config = PacingConfig::unlimited();
        let l = limit(20, 1000, 10);
        config.gmail.per_mailbox = Some(l);
        let pacer = Pacer::with_parts(config, Arc::new(clock.clone()), Arc::new(|| 0.5)).unwrap();
        let key = PaceKey::new("app", "u");
        let released = Arc::new(Mutex::new(Vec::new()));
        for i in 0..15u32 {
            let (pacer, key, clock, released) =
                (pacer.clone(), key.clone(), clock.clone(), released.clone());
            let count = 1 + i % 2;
            tokio::spawn(async move {
                let _t = pacer
                    .acquire(&key, Op::Gmail(GmailMethod::MessagesGet, count))
                    .await
                    .unwrap();
                released
                    .lock()
                    .unwrap()
                    .push((clock.now(), 5 * u64::from(count)));
            });
        }
        settle().await;
        // The first asks 5 units of the burst of 10; the second asks 10 and must wait for 5 more.
        assert_eq!(pacer.stats(Service::Gmail).waiting, 14);
        for _ in 0..200 {
            clock.advance(Duration::from_millis(50));
            settle().await;
        }
        let released = released.lock().unwrap().clone();
        assert_eq!(released.len(), 15);
        let total: u64 = released.iter().map(|r| r.1).sum();
        assert_eq!(pacer.stats(Service::Gmail).units, total);
        for (i, (start, _)) in released.iter().enumerate() {
            let mut units = 0;
            for (end, cost) in released.iter().skip(i) {
                units += cost;
                let t = end.duration_since(*start).as_secs_f64();
                assert!(
                    units as f64 <= 10.0 + l.refill_per_second() * t + 1e-6,
                    "{units} in {t}s"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_mailbox_has_at_most_n_requests_in_flight_and_other_mailboxes_are_not_held_up() {
        let pacer = Pacer::with_parts(
            PacingConfig::default(),
            Arc::new(ManualClock::auto_advance()),
            Arc::new(|| 0.5),
        )
        .unwrap();
        let a = PaceKey::new("app", "A@corp.example");
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pacer.acquire(&a, Op::Graph).await.unwrap());
        }
        let fifth = pacer.acquire(&a, Op::Graph);
        let mut fifth = std::pin::pin!(fifth);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            fifth.as_mut().poll(&mut cx).is_pending(),
            "a fifth request waits"
        );
        let b = PaceKey::new("app", "b@corp.example");
        let other = pacer.acquire(&b, Op::Graph).await.unwrap();
        drop(other);
        assert_eq!(pacer.stats(Service::Graph).waiting, 1);
        held.pop();
        assert!(
            fifth.as_mut().poll(&mut cx).is_ready(),
            "it goes once one finishes"
        );
        // Keys fold the address's case.
        assert_eq!(
            pacer
                .mailbox(&PaceKey::new("app", "a@corp.example"), Service::Graph)
                .requests,
            5
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let mut c = PacingConfig::default();
        c.graph.max_concurrent_per_mailbox = Some(0);
        assert!(Pacer::new(c).is_err());
        let mut c = PacingConfig::default();
        c.gmail.per_mailbox = Some(limit(100, 1000, 100));
        assert!(Pacer::new(c).is_err());
        let mut c = PacingConfig::default();
        c.backoff.max_attempts = 0;
        assert!(c.validate().is_err());
    }
}
