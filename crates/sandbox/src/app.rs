//! Shared application state: the persisted [`State`], plus runtime-only parts (faults, counters, pending
//! sign-ins, quota windows, in-flight requests per mailbox).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::calendar::Calendars;
use crate::clock::Clock;
use crate::faults::FaultBook;
use crate::mailbox::Mailboxes;
use crate::scenario::Provider;
use crate::state::State;
use crate::wire::Params;

/// Requests seen by one endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointCount {
    /// Every request, including failed ones.
    pub requests: u64,
    /// Requests per authenticated user.
    pub by_user: BTreeMap<String, u64>,
    /// Requests answered by an injected fault.
    pub faulted: u64,
    /// Requests refused by quota or concurrency accounting.
    pub throttled: u64,
}

/// Request counters, as the control API returns them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Endpoint name -> counts.
    pub endpoints: BTreeMap<String, EndpointCount>,
    /// Gmail quota units charged per user since the last reset.
    pub gmail_units: BTreeMap<String, u64>,
    /// Per provider API (`graph`, `gmail`, `calendar`) and user: requests, 429s, quota refusals, units, peak
    /// rates (see [`crate::quota`]).
    pub providers: BTreeMap<String, crate::quota::ProviderCount>,
}

/// What a pending sign-in page is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    /// Microsoft `/oauth2/v2.0/authorize`.
    MsAuthorize,
    /// Microsoft `/v2.0/adminconsent`.
    MsAdminConsent,
    /// Google `/o/oauth2/v2/auth`.
    GoogleAuth,
}

/// A sign-in in progress (between the authorize request and the redirect back).
#[derive(Debug, Clone)]
pub struct Pending {
    /// Flow.
    pub kind: PendingKind,
    /// Client id.
    pub client_id: String,
    /// Validated redirect URI.
    pub redirect_uri: String,
    /// The original request parameters.
    pub params: Params,
    /// Microsoft: the resolved tenant GUID when the URL named one.
    pub tenant_id: Option<String>,
    /// Requested scopes, normalized.
    pub scopes: Vec<String>,
    /// The account picked so far.
    pub user: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Runtime-only state.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Armed faults.
    pub faults: FaultBook,
    /// Counters.
    pub counters: Counters,
    /// Pending sign-ins by id.
    pub pending: HashMap<String, Pending>,
    /// Quota buckets, windows and in-flight requests.
    pub quota: crate::quota::QuotaBook,
}

pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub mail: Mutex<Mailboxes>,
    pub cal: Mutex<Calendars>,
    pub rt: Mutex<Runtime>,
    pub clock: Arc<dyn Clock>,
    pub clock_offset: AtomicI64,
    pub state_file: Option<PathBuf>,
    pub push: Mutex<crate::push::PushBook>,
    pub push_wake: tokio::sync::Notify,
    pub push_active: AtomicBool,
}

/// Cheap-to-clone handle on everything the handlers share.
#[derive(Clone)]
pub struct App(pub(crate) Arc<Inner>);

impl App {
    pub(crate) fn new(state: State, clock: Arc<dyn Clock>, state_file: Option<PathBuf>) -> Self {
        App(Arc::new(Inner {
            state: Mutex::new(state),
            mail: Mutex::new(Mailboxes::default()),
            cal: Mutex::new(Calendars::default()),
            rt: Mutex::new(Runtime::default()),
            clock,
            clock_offset: AtomicI64::new(0),
            state_file,
            push: Mutex::new(crate::push::PushBook::default()),
            push_wake: tokio::sync::Notify::new(),
            push_active: AtomicBool::new(false),
        }))
    }

    /// Now, in unix seconds (the injected clock plus any offset set through the control API).
    pub fn now(&self) -> i64 {
        self.0.clock.now().as_second() + self.0.clock_offset.load(Ordering::Relaxed)
    }

    /// Now, in unix nanoseconds on the same clock as [`App::now`] (quota buckets and rate windows).
    pub fn now_nanos(&self) -> i64 {
        let ns = self.0.clock.now().as_nanosecond() as i64;
        ns + self.0.clock_offset.load(Ordering::Relaxed) * 1_000_000_000
    }

    /// Moves the sandbox's notion of time forward by `secs`.
    pub fn advance_clock(&self, secs: i64) {
        self.0.clock_offset.fetch_add(secs, Ordering::Relaxed);
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.0.state.lock().expect("state lock"))
    }

    /// Changes the state and writes the state file.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, snapshot) = {
            let mut st = self.0.state.lock().expect("state lock");
            let r = f(&mut st);
            let snapshot = self
                .0
                .state_file
                .as_ref()
                .map(|_| serde_json::to_vec_pretty(&*st));
            (r, snapshot)
        };
        if let (Some(path), Some(Ok(bytes))) = (&self.0.state_file, snapshot)
            && let Err(e) = persist(path, &bytes)
        {
            tracing::warn!(path = %path.display(), error = %e, "sandbox state not saved");
        }
        r
    }

    /// Uses the mailboxes (runtime-only; see [`crate::mailbox`]). Wakes the push dispatcher when anything
    /// subscribes to mailbox changes, so every change (control API, send, delete) is noticed in one place.
    pub fn mail<R>(&self, f: impl FnOnce(&mut Mailboxes) -> R) -> R {
        let r = f(&mut self.0.mail.lock().expect("mail lock"));
        if self.0.push_active.load(Ordering::Relaxed) {
            self.0.push_wake.notify_one();
        }
        r
    }

    /// Uses the push state (subscriptions, watches, topics, deliveries; see [`crate::push`]).
    pub fn push<R>(&self, f: impl FnOnce(&mut crate::push::PushBook) -> R) -> R {
        let mut book = self.0.push.lock().expect("push lock");
        let r = f(&mut book);
        self.0
            .push_active
            .store(book.is_active(), Ordering::Relaxed);
        r
    }

    /// Wakes the push dispatcher.
    pub(crate) fn push_wake(&self) -> &tokio::sync::Notify {
        &self.0.push_wake
    }

    /// Uses the calendars (runtime-only; see [`crate::calendar`]); wakes the push dispatcher like [`App::mail`].
    pub fn cal<R>(&self, f: impl FnOnce(&mut Calendars) -> R) -> R {
        let r = f(&mut self.0.cal.lock().expect("calendar lock"));
        if self.0.push_active.load(Ordering::Relaxed) {
            self.0.push_wake.notify_one();
        }
        r
    }

    /// Reads the mailboxes without waking the push dispatcher (the dispatcher itself).
    pub(crate) fn mail_quiet<R>(&self, f: impl FnOnce(&Mailboxes) -> R) -> R {
        f(&self.0.mail.lock().expect("mail lock"))
    }

    /// Reads the calendars without waking the push dispatcher.
    pub(crate) fn cal_quiet<R>(&self, f: impl FnOnce(&Calendars) -> R) -> R {
        f(&self.0.cal.lock().expect("calendar lock"))
    }

    /// Uses the runtime-only state.
    pub fn rt<R>(&self, f: impl FnOnce(&mut Runtime) -> R) -> R {
        f(&mut self.0.rt.lock().expect("runtime lock"))
    }

    /// Counts a request to `endpoint`.
    pub fn count(&self, endpoint: &str, user: Option<&str>) {
        self.rt(|rt| {
            let e = rt
                .counters
                .endpoints
                .entry(endpoint.to_string())
                .or_default();
            e.requests += 1;
            if let Some(u) = user {
                *e.by_user.entry(u.to_string()).or_default() += 1;
            }
        });
    }

    /// Marks the last request to `endpoint` as answered by a fault or by throttling.
    pub fn count_outcome(&self, endpoint: &str, faulted: bool) {
        self.rt(|rt| {
            let e = rt
                .counters
                .endpoints
                .entry(endpoint.to_string())
                .or_default();
            if faulted {
                e.faulted += 1;
            } else {
                e.throttled += 1;
            }
        });
    }

    /// The provider of a client, if registered.
    pub fn client_provider(&self, client_id: &str) -> Option<Provider> {
        self.read(|s| s.client(client_id).map(|c| c.provider))
    }
}

fn persist(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
