//! The mail sync engine: one leased job per inbox grant (`mail.sync`), each run
//! doing ONE step, then re-enqueueing itself.
//!
//! Steps, per grant (state in `mail_sync_state`):
//! 1. `backfill`/`resync` without an incremental cursor: take the provider's
//!    incremental starting point first (Graph: an unfiltered delta round of
//!    Inbox and Sent Items; Gmail: the profile's `historyId`), so nothing that
//!    arrives during the backfill is missed.
//! 2. `backfill`/`resync`: one page of the window, newest first (Graph: the
//!    filtered, ordered `/messages` listing; Gmail: `messages.list`), resumable
//!    from the saved page cursor. The last page switches to `incremental`.
//! 3. `incremental`: what changed since the cursor (a stored message the
//!    provider reports removed is deleted only when it is really gone, see
//!    `apply_removals`); then idle for [`SyncConfig::incremental_interval`].
//!    A rejected cursor resets the grant to `resync` (the store skips what it
//!    already has, so no duplicates).
//!
//! Every page goes through the mail core: headers first ([`parse_envelope`]),
//! candidate matching ([`CandidateIndex`]), and only messages that involve a
//! candidate (and are not internal-only) are parsed whole, sanitized and
//! stored; the rest only count. In a backfill the headers are only the
//! addressing ones and come without the bodies (Graph: in the listing itself;
//! Gmail: `format=metadata` in batches), so only candidate mail is fetched
//! whole; fetches run up to [`SyncConfig::fetch_concurrency`] at once. The
//! page and its cursor commit together
//! ([`hirewire_store::Store::store_page`], fenced by the state's version).
//!
//! Jobs are claimed with fenced leases, so one worker syncs a mailbox at a
//! time across instances. A job is completed *before* its successor is
//! enqueued (the dedupe key admits one unfinished job per grant);
//! [`ensure_sync_jobs`], run by the background loop, re-creates a lost one.
//! Nothing sleeps here: the clock decides what is due, tests call [`run_one`].
//!
//! ## A candidate gains an address
//!
//! Mail that involved no candidate when it was synced was never stored, so
//! when a candidate gains an address (a new candidate, or an address added to
//! one), the past mail with it must be found again. Two ways were possible:
//! keep a compact index of every synced message's participants, or ask the
//! provider. hirewire asks the provider ([`MailReader::search_by_address`]:
//! Gmail `q=from:… / to:… after:…`, Graph a participants listing of the
//! window), because a local index would be exactly what the product promises
//! not to keep: who the recruiter writes to when it is no candidate's
//! business. The cost is bounded and rare: one search per (inbox, address),
//! queued when the address is added ([`candidate_addresses_added`]), within
//! the grant's sync window, and only the matches are fetched. The matches go
//! through the same matching and storing path as the sync
//! ([`hirewire_store::Store::store_found_mail`]: a message already stored is
//! not stored again; it only gains the link to the candidate), so later pages
//! and searches never duplicate it. A grant whose sync has not started yet is
//! skipped: its backfill will see the address.

use std::time::Duration;

use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::{CandidateId, GrantId, OrgId};
use hirewire_domain::retry::Backoff;
use hirewire_mail::{
    AddressNormalizer, AddressOptions, CandidateIndex, Envelope, Mailbox, ParsedMessage, Problem,
    ThreadKey, parse_envelope, parse_full, sanitize_for_storage, threading_keys,
};
use hirewire_providers::{
    MailReader, MessageRef, PageCursor, ProviderError, RawMessage, Secret, SyncCursor,
};
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, ClaimedJob, Direction, Grant, GrantStatus, MailAddress,
    MailAttachment, MailSyncState, NewJob, NewMailMessage, PageProgress, StoreError, SyncPhase,
    normalize_message_id,
};
use jiff::{SignedDuration, Timestamp};

use crate::app::AppState;
use crate::integrations::{self, Notice};

/// The job kind of a grant's sync step.
pub const JOB_KIND: &str = "mail.sync";

/// The job kind of a search of one grant's mailbox for a candidate's new address.
pub const ADDRESS_JOB_KIND: &str = "mail.address_search";

/// Longest snippet stored, in characters.
const SNIPPET_CHARS: usize = 200;

/// Knobs of the sync engine (in [`crate::Config::sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// How far back the backfill reaches.
    pub window_days: u32,
    /// Messages listed per backfill page.
    pub page_size: u32,
    /// Provider requests a step keeps in flight at once while it fetches a page's messages (the pacer's
    /// per-mailbox limit still applies on top).
    pub fetch_concurrency: usize,
    /// Pause between incremental steps of an idle mailbox.
    pub incremental_interval: Duration,
    /// Lease of a claimed step (renewed while it runs).
    pub lease: Duration,
    /// Attempts of one step before its job fails for good.
    pub max_attempts: u32,
    /// Delay before retrying a failed step (a provider's `Retry-After` wins when longer).
    pub backoff: Backoff,
    /// Background workers started by `serve` (0: none; the binary sets it).
    pub workers: usize,
    /// How often an idle background worker polls for due jobs.
    pub poll_interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            window_days: 365,
            page_size: 100,
            fetch_concurrency: hirewire_providers::DEFAULT_FETCH_CONCURRENCY,
            incremental_interval: Duration::from_secs(60),
            lease: Duration::from_secs(120),
            max_attempts: 5,
            backoff: Backoff::default(),
            workers: 0,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Took the incremental starting point before backfilling.
    Started { grant: GrantId },
    /// Stored one backfill page (`done`: it was the last one).
    Page {
        grant: GrantId,
        phase: SyncPhase,
        report: PageReport,
        done: bool,
    },
    /// Applied the changes since the incremental cursor; next step after the interval.
    Incremental { grant: GrantId, report: PageReport },
    /// The provider rejected the incremental cursor: the window is synced again.
    Resync { grant: GrantId },
    /// The step failed and runs again at `retry_at` (or not at all: `retry_at` is `None`).
    Retry {
        grant: Option<GrantId>,
        retry_at: Option<Timestamp>,
        error: String,
    },
    /// The org's admin turned email access off: nothing is read; checked again after the interval.
    Paused { grant: GrantId },
    /// Sync of this grant stopped (no successor job).
    Stopped { grant: GrantId, why: StopReason },
    /// Another worker or a reset moved the state on; the step is repeated from the new state.
    Superseded { grant: GrantId },
    /// This worker's lease lapsed mid-step; whoever holds it now carries on.
    LeaseLost { grant: GrantId },
    /// Searched the mailbox for a candidate's new address and stored what matched.
    AddressSearched {
        grant: GrantId,
        /// `false`: the grant's sync had not started (its backfill will find the mail).
        searched: bool,
        report: PageReport,
    },
}

/// Why a grant's sync stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Deauthorized (the grant is gone) or not an inbox grant.
    GrantGone,
    /// The grant needs reauthorization (already marked on the grant).
    NeedsReauthorization,
    /// The org no longer uses this grant's provider.
    ProviderChanged,
}

/// Counts of one page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageReport {
    /// Messages the provider listed.
    pub seen: u64,
    /// Candidate mail handed to the store.
    pub matched: u64,
    /// Inserted (new) messages.
    pub stored: u64,
    /// Unreadable messages skipped.
    pub unreadable: u64,
    /// Listed but gone before fetching.
    pub gone: u64,
    /// Stored messages deleted because they left the mailbox (incremental steps).
    pub removed: u64,
}

fn dedupe_key(grant: GrantId) -> String {
    format!("{JOB_KIND}:{}", grant.get())
}

/// Queues a search of `grant`'s mailbox for `address` at `run_at` (one
/// unfinished search per grant and address).
pub async fn enqueue_address_search_at(
    state: &AppState,
    grant: GrantId,
    address: &str,
    run_at: Timestamp,
) -> Result<(), StoreError> {
    let payload = serde_json::json!({ "grant_id": grant.get(), "address": address });
    let key = format!(
        "{ADDRESS_JOB_KIND}:{}:{}",
        grant.get(),
        AddressKey::of(address).as_str()
    );
    state
        .store
        .enqueue(
            &NewJob {
                kind: ADDRESS_JOB_KIND,
                payload: &payload,
                run_at,
                max_attempts: state.config.sync.max_attempts.max(1),
                dedupe_key: Some(&key),
            },
            state.now(),
        )
        .await
        .map(|_| ())
}

/// Called when candidates of `org` gain `addresses` (created with them, or
/// added): queues a search for each address in every active inbox of the org,
/// so the past mail with it appears (see the module docs for why the provider
/// is searched). Failures are logged, not returned: the address is saved
/// either way.
pub async fn candidate_addresses_added(state: &AppState, org: OrgId, addresses: &[EmailAddress]) {
    if addresses.is_empty() {
        return;
    }
    let grants = match state.store.org_grants(org).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(org = org.get(), error = %e, "could not list the org's inboxes to search a new address");
            return;
        }
    };
    for g in grants
        .iter()
        .filter(|g| g.capability == CapabilityKind::Inbox && g.status == GrantStatus::Active)
    {
        for a in addresses {
            if let Err(e) = enqueue_address_search_at(state, g.id, a.as_str(), state.now()).await {
                tracing::error!(grant = g.id.get(), error = %e, "could not queue an address search");
            }
        }
    }
}

/// Queues a sync step of `grant` at `run_at` (nothing when one is already queued or running).
pub async fn enqueue_sync_at(
    state: &AppState,
    grant: GrantId,
    run_at: Timestamp,
) -> Result<(), StoreError> {
    let payload = serde_json::json!({ "grant_id": grant.get() });
    let key = dedupe_key(grant);
    state
        .store
        .enqueue(
            &NewJob {
                kind: JOB_KIND,
                payload: &payload,
                run_at,
                max_attempts: state.config.sync.max_attempts.max(1),
                dedupe_key: Some(&key),
            },
            state.now(),
        )
        .await
        .map(|_| ())
}

/// Called when an inbox grant is stored (`previous`: the row it replaced, if
/// any): a grant replaced in place by another mailbox starts its sync over
/// (the old mailbox's cursors mean nothing there), then a step is queued now.
pub async fn inbox_stored(state: &AppState, grant: &Grant, previous: Option<&Grant>) {
    let key = |g: &Grant| g.account_address.as_deref().map(AddressKey::of);
    let replaced = previous.is_some_and(|p| key(p) != key(grant));
    if replaced {
        let now = state.now();
        let window_start =
            now - SignedDuration::from_hours(24 * i64::from(state.config.sync.window_days));
        match state
            .store
            .reset_mail_sync(grant.id, SyncPhase::Backfill, window_start, now)
            .await
        {
            Ok(_) => tracing::info!(
                grant = grant.id.get(),
                "another mailbox: the sync starts over"
            ),
            Err(e) => {
                tracing::error!(grant = grant.id.get(), error = %e, "could not reset the mail sync")
            }
        }
    }
    enqueue_sync(state, grant.id).await;
    crate::push_hooks::inbox_authorized(state, grant.id);
}

/// Queues a sync step of `grant` now.
pub async fn enqueue_sync(state: &AppState, grant: GrantId) {
    if let Err(e) = enqueue_sync_at(state, grant, state.now()).await {
        tracing::error!(grant = grant.get(), error = %e, "could not queue the mail sync");
    }
}

/// Queues a step for every active inbox grant that has none (recovers a job
/// lost between a step's completion and its successor's enqueue).
pub async fn ensure_sync_jobs(state: &AppState) -> Result<usize, StoreError> {
    let mut n = 0;
    for g in state.store.all_grants().await? {
        if g.capability == CapabilityKind::Inbox && g.status == GrantStatus::Active {
            let at = state.now() + signed(state.config.sync.incremental_interval);
            enqueue_sync_at(state, g.id, at).await?;
            n += 1;
        }
    }
    Ok(n)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Claims one due sync job as `owner` and runs one step of it. `None` when
/// nothing is due.
pub async fn run_one(state: &AppState, owner: &str) -> Option<SyncOutcome> {
    let cfg = state.config.sync;
    let job = match state
        .store
        .claim(owner, &[JOB_KIND, ADDRESS_JOB_KIND], state.now(), cfg.lease)
        .await
    {
        Ok(Some(j)) => j,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "claiming a mail sync job failed");
            return None;
        }
    };
    let Some(grant) = job
        .payload
        .get("grant_id")
        .and_then(serde_json::Value::as_i64)
        .map(GrantId)
    else {
        let error = "the job has no grant_id".to_owned();
        let _ = state
            .store
            .fail(job.id, job.fencing_token, state.now(), &error, None)
            .await;
        return Some(SyncOutcome::Retry {
            grant: None,
            retry_at: None,
            error,
        });
    };
    let address = if job.kind == ADDRESS_JOB_KIND {
        let Some(a) = job
            .payload
            .get("address")
            .and_then(serde_json::Value::as_str)
        else {
            let error = "the job has no address".to_owned();
            let _ = state
                .store
                .fail(job.id, job.fencing_token, state.now(), &error, None)
                .await;
            return Some(SyncOutcome::Retry {
                grant: Some(grant),
                retry_at: None,
                error,
            });
        };
        Some(a.to_owned())
    } else {
        None
    };
    let step = Step {
        state,
        job: &job,
        grant,
        address,
    };
    let outcome = step.run().await;
    crate::metrics::sync_step(state, &outcome);
    Some(outcome)
}

/// Runs steps until nothing is due (tests and the demo; the clock does not move).
pub async fn run_until_idle(state: &AppState, owner: &str, max_steps: usize) -> Vec<SyncOutcome> {
    let mut out = Vec::new();
    while out.len() < max_steps {
        match run_one(state, owner).await {
            Some(o) => out.push(o),
            None => break,
        }
    }
    out
}

/// Starts `n` background workers (and a sweep that re-creates lost jobs).
pub fn spawn_workers(state: AppState, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let instance = format!("{:08x}", rand::random::<u32>());
    (0..n)
        .map(|i| {
            let state = state.clone();
            let owner = format!("sync-{instance}-{i}");
            tokio::spawn(async move {
                let poll = state.config.sync.poll_interval;
                let sweep_every = state.config.sync.incremental_interval.max(poll);
                let mut last_sweep: Option<Timestamp> = None;
                loop {
                    if i == 0 && last_sweep.is_none_or(|t| state.now() >= t + signed(sweep_every)) {
                        last_sweep = Some(state.now());
                        if let Err(e) = ensure_sync_jobs(&state).await {
                            tracing::warn!(error = %e, "the mail sync sweep failed");
                        }
                    }
                    match run_one(&state, &owner).await {
                        // A step ran (whatever its outcome, its job is settled and the
                        // successor is scheduled): look for the next due one at once. Only
                        // an empty queue waits, else one worker could do no more than one
                        // incremental step per poll interval, far too few for many mailboxes.
                        Some(_) => tokio::task::yield_now().await,
                        // Idle: poll again later, or at once when a push makes a step due here.
                        None => {
                            tokio::select! {
                                () = tokio::time::sleep(poll) => {}
                                () = state.sync_wake.notified() => {}
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

struct Step<'a> {
    state: &'a AppState,
    job: &'a ClaimedJob,
    grant: GrantId,
    /// `Some`: an address search ([`ADDRESS_JOB_KIND`]), else a sync step.
    address: Option<String>,
}

/// How a step ended, before the job is settled.
enum End {
    /// Done; the successor (the next sync step, or this search again) runs at this instant.
    Next(Timestamp, SyncOutcome),
    /// Done for good (an address search that ran).
    Done(SyncOutcome),
    /// Done; no successor.
    Stop(StopReason),
    /// Failed; retry (with the provider's delay when it gave one).
    Fail(String, Option<Duration>),
    /// The lease is gone: touch nothing.
    Lost,
}

impl Step<'_> {
    async fn run(&self) -> SyncOutcome {
        let end = self.work().await;
        let state = self.state;
        let now = state.now();
        let (id, token) = (self.job.id, self.job.fencing_token);
        match end {
            End::Next(at, outcome) => match state.store.complete(id, token, now).await {
                Ok(()) => {
                    let queued = match &self.address {
                        None => enqueue_sync_at(state, self.grant, at).await,
                        Some(a) => enqueue_address_search_at(state, self.grant, a, at).await,
                    };
                    if let Err(e) = queued {
                        tracing::error!(grant = self.grant.get(), error = %e, "could not queue the next sync step");
                    }
                    // A push that came in while this step ran: the step may have read the
                    // mailbox before the change, so the next one runs now, not after the interval.
                    if self.address.is_none()
                        && state.store.rerun_requested(id).await.unwrap_or(false)
                        && let Err(e) = crate::push_hooks::sync_now(state, self.grant).await
                    {
                        tracing::error!(grant = self.grant.get(), error = %e, "could not bring a pushed sync step forward");
                    }
                    outcome
                }
                Err(_) => SyncOutcome::LeaseLost { grant: self.grant },
            },
            End::Done(outcome) => match state.store.complete(id, token, now).await {
                Ok(()) => outcome,
                Err(_) => SyncOutcome::LeaseLost { grant: self.grant },
            },
            End::Stop(why) => {
                let _ = state.store.complete(id, token, now).await;
                tracing::info!(grant = self.grant.get(), ?why, "mail sync stopped");
                SyncOutcome::Stopped {
                    grant: self.grant,
                    why,
                }
            }
            End::Lost => SyncOutcome::LeaseLost { grant: self.grant },
            End::Fail(error, provider_delay) => {
                let backoff = state
                    .config
                    .sync
                    .backoff
                    .delay(self.job.attempt, rand::random::<f64>());
                let delay = provider_delay.unwrap_or(backoff);
                let retry_at = now + signed(delay.max(Duration::from_secs(1)));
                let _ = state
                    .store
                    .record_mail_sync_error(self.grant, &error, now)
                    .await;
                tracing::warn!(grant = self.grant.get(), attempt = self.job.attempt, %error, "mail sync step failed");
                match state
                    .store
                    .fail(id, token, now, &error, Some(retry_at))
                    .await
                {
                    Ok(hirewire_store::JobStatus::Queued) => SyncOutcome::Retry {
                        grant: Some(self.grant),
                        retry_at: Some(retry_at),
                        error,
                    },
                    Ok(_) => SyncOutcome::Retry {
                        grant: Some(self.grant),
                        retry_at: None,
                        error,
                    },
                    Err(_) => SyncOutcome::LeaseLost { grant: self.grant },
                }
            }
        }
    }

    async fn heartbeat(&self) -> bool {
        let s = self.state;
        s.store
            .heartbeat(
                self.job.id,
                self.job.fencing_token,
                s.now(),
                s.config.sync.lease,
            )
            .await
            .is_ok()
    }

    async fn work(&self) -> End {
        let state = self.state;
        let cfg = state.config.sync;
        let grant = match state.store.grant_by_id(self.grant).await {
            Ok(Some(g)) if g.capability == CapabilityKind::Inbox => g,
            Ok(_) => return End::Stop(StopReason::GrantGone),
            Err(e) => return End::Fail(format!("reading the grant: {e}"), None),
        };
        if grant.status != GrantStatus::Active {
            return End::Stop(StopReason::NeedsReauthorization);
        }
        let Some(provider) = integrations::provider_of(grant.provider) else {
            return End::Stop(StopReason::GrantGone);
        };
        match state.store.provider_settings(grant.org_id).await {
            Ok(Some(s)) if s.provider == grant.provider => {
                if s.access_level == AccessLevelSetting::Off {
                    let at = state.now() + signed(cfg.incremental_interval);
                    return End::Next(at, SyncOutcome::Paused { grant: grant.id });
                }
            }
            Ok(_) => return End::Stop(StopReason::ProviderChanged),
            Err(e) => return End::Fail(format!("reading the provider settings: {e}"), None),
        }
        let now = state.now();
        let window_start = now - SignedDuration::from_hours(24 * i64::from(cfg.window_days));
        let sync = if self.address.is_some() {
            match state.store.mail_sync_state(grant.id).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return End::Done(SyncOutcome::AddressSearched {
                        grant: grant.id,
                        searched: false,
                        report: PageReport::default(),
                    });
                }
                Err(e) => return End::Fail(format!("reading the sync state: {e}"), None),
            }
        } else {
            match state
                .store
                .start_mail_sync(grant.id, window_start, now)
                .await
            {
                Ok(s) => s,
                Err(StoreError::NotFound) => return End::Stop(StopReason::GrantGone),
                Err(e) => return End::Fail(format!("reading the sync state: {e}"), None),
            }
        };
        let token =
            match integrations::access_token(state, grant.user_id, CapabilityKind::Inbox).await {
                Ok(t) => t,
                Err(Notice::NotConnected(_)) => return End::Stop(StopReason::GrantGone),
                Err(n) if n.code() == "needs_reauthorization" => {
                    return End::Stop(StopReason::NeedsReauthorization);
                }
                Err(n) => return End::Fail(format!("no access token: {}", n.code()), None),
            };
        if !self.heartbeat().await {
            return End::Lost;
        }
        let reader = crate::health::paced(
            state,
            &grant,
            MailReader::new(
                provider,
                state.config.provider_endpoints.clone(),
                state.provider_http.clone(),
            )
            .with_concurrency(cfg.fetch_concurrency),
        )
        .await;
        let result = match (&self.address, sync.phase) {
            (Some(address), _) => self.search(&reader, &token, &grant, &sync, address).await,
            (None, SyncPhase::Backfill | SyncPhase::Resync) => {
                self.backfill(&reader, &token, &grant, &sync).await
            }
            (None, SyncPhase::Incremental) => {
                self.incremental(&reader, &token, &grant, &sync).await
            }
        };
        match result {
            Ok(end) => end,
            Err(e) => self.provider_failure(e).await,
        }
    }

    async fn provider_failure(&self, e: ProviderError) -> End {
        match e {
            ProviderError::Throttled { retry_after } => End::Fail(e.to_string(), retry_after),
            ProviderError::NeedsReauthorization { .. } => {
                let reason = e.user_message();
                let _ = self
                    .state
                    .store
                    .set_grant_status(
                        self.grant,
                        GrantStatus::NeedsReauth,
                        Some(&reason),
                        self.state.now(),
                    )
                    .await;
                End::Stop(StopReason::NeedsReauthorization)
            }
            other => End::Fail(other.to_string(), None),
        }
    }

    async fn backfill(
        &self,
        reader: &MailReader,
        token: &Secret,
        grant: &Grant,
        sync: &MailSyncState,
    ) -> Result<End, ProviderError> {
        let state = self.state;
        let Some(incremental) = sync.incremental_cursor.as_deref() else {
            let cursor = reader.start_incremental(token).await?;
            let progress = PageProgress {
                phase: sync.phase,
                backfill_cursor: sync.backfill_cursor.as_deref(),
                incremental_cursor: Some(cursor.as_str()),
                seen: 0,
            };
            return Ok(self
                .save(sync, &[], &progress, PageReport::default())
                .await
                .map(|_| End::Next(state.now(), SyncOutcome::Started { grant: grant.id }))
                .unwrap_or_else(|e| e));
        };
        let cursor = sync.backfill_cursor.clone().map(PageCursor::from_saved);
        let page = reader
            .list_page(
                token,
                cursor.as_ref(),
                sync.window_start,
                state.config.sync.page_size,
            )
            .await?;
        crate::health::page_listed(state, grant.id, cursor.is_none(), page.estimate).await;
        if !self.heartbeat().await {
            return Ok(End::Lost);
        }
        let (messages, report) = match self.pipeline(reader, token, grant, &page.items, true).await
        {
            Ok(x) => x,
            Err(end) => return Ok(end),
        };
        let done = page.next.is_none();
        let next_cursor = page.next.as_ref().map(|c| c.as_str().to_owned());
        let progress = PageProgress {
            phase: if done {
                SyncPhase::Incremental
            } else {
                sync.phase
            },
            backfill_cursor: next_cursor.as_deref(),
            incremental_cursor: Some(incremental),
            seen: report.seen,
        };
        Ok(match self.save(sync, &messages, &progress, report).await {
            Ok(report) => End::Next(
                state.now(),
                SyncOutcome::Page {
                    grant: grant.id,
                    phase: sync.phase,
                    report,
                    done,
                },
            ),
            Err(end) => end,
        })
    }

    async fn incremental(
        &self,
        reader: &MailReader,
        token: &Secret,
        grant: &Grant,
        sync: &MailSyncState,
    ) -> Result<End, ProviderError> {
        let state = self.state;
        let Some(saved) = sync.incremental_cursor.as_deref() else {
            // Should not happen (the backfill takes it first): start over.
            return Ok(self.resync().await);
        };
        let changes = match reader.changes(token, &SyncCursor::from_saved(saved)).await {
            Ok(c) => c,
            Err(ProviderError::CursorExpired { .. }) => return Ok(self.resync().await),
            Err(e) => return Err(e),
        };
        if !self.heartbeat().await {
            return Ok(End::Lost);
        }
        // Removals first (idempotent): the cursor is saved only after both.
        let removed = match self
            .apply_removals(reader, token, grant, &changes.removed)
            .await
        {
            Ok(n) => n,
            Err(end) => return Ok(end),
        };
        let (messages, mut report) = match self
            .pipeline(reader, token, grant, &changes.added, false)
            .await
        {
            Ok(x) => x,
            Err(end) => return Ok(end),
        };
        report.removed = removed;
        let progress = PageProgress {
            phase: SyncPhase::Incremental,
            backfill_cursor: None,
            incremental_cursor: Some(changes.next.as_str()),
            seen: report.seen,
        };
        let next = state.now() + signed(state.config.sync.incremental_interval);
        Ok(match self.save(sync, &messages, &progress, report).await {
            Ok(report) => End::Next(
                next,
                SyncOutcome::Incremental {
                    grant: grant.id,
                    report,
                },
            ),
            Err(end) => end,
        })
    }

    /// Deletes the stored copies of messages that left the mailbox. The
    /// provider's word is not taken as is: a Graph per-folder delta reports a
    /// message moved out of Inbox or Sent Items (archived, or deleted to
    /// Deleted Items) as `@removed` too, and that mail is still the
    /// recruiter's. So each reported id that was stored is fetched: only a
    /// 404 ([`ProviderError::MessageGone`]) deletes it (Gmail
    /// `messagesDeleted` is a permanent deletion and confirms the same way).
    /// Ids never stored (not candidate mail) cost nothing.
    async fn apply_removals(
        &self,
        reader: &MailReader,
        token: &Secret,
        grant: &Grant,
        removed: &[String],
    ) -> Result<u64, End> {
        let state = self.state;
        let mut gone = Vec::new();
        for id in removed {
            match state.store.has_synced_message(grant.id, id).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Err(End::Fail(format!("reading stored mail: {e}"), None)),
            }
            match reader.fetch_raw(token, id).await {
                Err(ProviderError::MessageGone { .. }) => gone.push(id.clone()),
                // Moved to a folder incremental sync does not watch: kept.
                Ok(_) => {}
                Err(e) => return Err(self.provider_failure(e).await),
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        if !self.heartbeat().await {
            return Err(End::Lost);
        }
        match state
            .store
            .remove_synced_mail(grant.id, &gone, state.now())
            .await
        {
            Ok(n) => Ok(n),
            Err(StoreError::NotFound) => Err(End::Stop(StopReason::GrantGone)),
            Err(e) => Err(End::Fail(format!("removing deleted mail: {e}"), None)),
        }
    }

    /// Searches the mailbox for `address` within the grant's window and stores
    /// the candidate mail found, a page at a time (the sync's cursors untouched).
    async fn search(
        &self,
        reader: &MailReader,
        token: &Secret,
        grant: &Grant,
        sync: &MailSyncState,
        address: &str,
    ) -> Result<End, ProviderError> {
        let state = self.state;
        let found = reader
            .search_by_address(token, address, sync.window_start)
            .await?;
        let mut total = PageReport::default();
        for chunk in found.chunks(state.config.sync.page_size.max(1) as usize) {
            if !self.heartbeat().await {
                return Ok(End::Lost);
            }
            let (messages, report) = match self.pipeline(reader, token, grant, chunk, false).await {
                Ok(x) => x,
                Err(end) => return Ok(end),
            };
            let stored = match state
                .store
                .store_found_mail(grant.id, &messages, state.now())
                .await
            {
                Ok(s) => s.stored,
                Err(StoreError::NotFound) => return Ok(End::Stop(StopReason::GrantGone)),
                Err(e) => return Ok(End::Fail(format!("storing found mail: {e}"), None)),
            };
            total.seen += report.seen;
            total.matched += report.matched;
            total.stored += stored;
            total.unreadable += report.unreadable;
            total.gone += report.gone;
        }
        tracing::info!(
            grant = grant.id.get(),
            found = total.seen,
            stored = total.stored,
            "searched the mailbox for a candidate's new address"
        );
        Ok(End::Done(SyncOutcome::AddressSearched {
            grant: grant.id,
            searched: true,
            report: total,
        }))
    }

    async fn resync(&self) -> End {
        let state = self.state;
        let now = state.now();
        let window_start =
            now - SignedDuration::from_hours(24 * i64::from(state.config.sync.window_days));
        tracing::info!(
            grant = self.grant.get(),
            "the provider rejected the sync cursor: full resync"
        );
        match state
            .store
            .reset_mail_sync(self.grant, SyncPhase::Resync, window_start, now)
            .await
        {
            Ok(_) => End::Next(now, SyncOutcome::Resync { grant: self.grant }),
            Err(StoreError::NotFound) => End::Stop(StopReason::GrantGone),
            Err(e) => End::Fail(format!("resetting the sync: {e}"), None),
        }
    }

    /// Stores a page with its progress; the error is how the step ends.
    async fn save(
        &self,
        sync: &MailSyncState,
        messages: &[NewMailMessage],
        progress: &PageProgress<'_>,
        mut report: PageReport,
    ) -> Result<PageReport, End> {
        if !self.heartbeat().await {
            return Err(End::Lost);
        }
        match self
            .state
            .store
            .store_page(
                self.grant,
                sync.version,
                messages,
                progress,
                self.state.now(),
            )
            .await
        {
            Ok(stored) => {
                report.stored = stored.stored;
                Ok(report)
            }
            Err(StoreError::StaleLease) => Err(End::Next(
                self.state.now(),
                SyncOutcome::Superseded { grant: self.grant },
            )),
            Err(StoreError::NotFound) => Err(End::Stop(StopReason::GrantGone)),
            Err(e) => Err(End::Fail(format!("storing a page: {e}"), None)),
        }
    }

    /// Matches `refs` against the org's candidates and builds the candidate mail
    /// among them. Who a message involves is read from its addressing headers
    /// first, where the listing carries them or (`headers_first`) they can be
    /// fetched without the bodies; only the messages that involve a candidate
    /// (or whose headers could not be read) are then fetched whole. Without
    /// headers and `headers_first`, every message is fetched whole. A fetch
    /// failure that stops the rest ends the step (nothing of the page is
    /// stored; it is fetched again).
    async fn pipeline(
        &self,
        reader: &MailReader,
        token: &Secret,
        grant: &Grant,
        refs: &[MessageRef],
        headers_first: bool,
    ) -> Result<(Vec<NewMailMessage>, PageReport), End> {
        let mut report = PageReport {
            seen: refs.len() as u64,
            ..PageReport::default()
        };
        if refs.is_empty() {
            return Ok((Vec::new(), report));
        }
        let matcher = match Matcher::load(self.state, grant).await {
            Ok(m) => m,
            Err(e) => return Err(End::Fail(format!("loading candidates: {e}"), None)),
        };
        // Stage 1: the addressing headers.
        let mut wanted: Vec<String> = Vec::new();
        let mut without_headers: Vec<String> = Vec::new();
        for r in refs {
            match &r.headers {
                Some(h) if !matcher.wants(h) => {}
                None if headers_first => without_headers.push(r.id.clone()),
                _ => wanted.push(r.id.clone()),
            }
        }
        if !without_headers.is_empty() {
            let fetched = match reader.fetch_headers_many(token, &without_headers).await {
                Ok(f) => f,
                Err(e) => return Err(self.provider_failure(e).await),
            };
            for r in fetched {
                match r {
                    Ok(r) => {
                        if r.headers.as_deref().is_none_or(|h| matcher.wants(h)) {
                            wanted.push(r.id);
                        }
                    }
                    Err(ProviderError::MessageGone { .. }) => report.gone += 1,
                    Err(e) => return Err(self.provider_failure(e).await),
                }
            }
        }
        if wanted.is_empty() {
            return Ok((Vec::new(), report));
        }
        // Stage 2: the candidate mail, whole.
        let fetched = match reader.fetch_raw_many(token, &wanted).await {
            Ok(f) => f,
            Err(e) => return Err(self.provider_failure(e).await),
        };
        let mut out = Vec::new();
        for r in fetched {
            match r {
                Ok(raw) => match matcher.build(&raw, self.state.now()) {
                    Built::Candidate(m) => {
                        report.matched += 1;
                        out.push(*m);
                    }
                    Built::NotCandidate => {}
                    Built::Unreadable => {
                        report.unreadable += 1;
                        tracing::warn!(
                            grant = grant.id.get(),
                            provider_message_id = %raw.id,
                            "skipped a message that could not be read"
                        );
                    }
                },
                Err(ProviderError::MessageGone { .. }) => report.gone += 1,
                Err(e) => return Err(self.provider_failure(e).await),
            }
        }
        Ok((out, report))
    }
}

enum Built {
    Candidate(Box<NewMailMessage>),
    NotCandidate,
    Unreadable,
}

/// The org's candidates and the mailbox owner, for one page.
struct Matcher {
    index: CandidateIndex<CandidateId>,
    owner_key: Option<String>,
}

impl Matcher {
    async fn load(state: &AppState, grant: &Grant) -> Result<Matcher, StoreError> {
        let org = state
            .store
            .org_by_id(grant.org_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let options = AddressOptions::default()
            .with_internal_domains(org.domains.iter().map(|d| d.as_str().to_owned()));
        let normalizer = AddressNormalizer::new(options);
        let mut entries: Vec<(String, CandidateId)> = Vec::new();
        let mut after = None;
        loop {
            let page = state
                .store
                .list_candidates(grant.org_id, None, after, 500)
                .await?;
            for c in &page.candidates {
                for e in &c.emails {
                    entries.push((e.address.as_str().to_owned(), c.id));
                }
            }
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        // Oldest candidate first, so a conflicting address keeps its first owner.
        entries.sort_by_key(|(_, c)| c.get());
        let (index, conflicts) = CandidateIndex::build(normalizer, entries);
        if !conflicts.is_empty() {
            tracing::warn!(
                org = grant.org_id.get(),
                conflicts = conflicts.len(),
                "candidate addresses that normalize alike"
            );
        }
        let owner = match &grant.account_address {
            Some(a) => Some(a.clone()),
            None => state
                .store
                .user_by_id(grant.user_id)
                .await?
                .map(|u| u.email.as_str().to_owned()),
        };
        let owner_key = owner.map(|a| index.normalizer().key(&a).as_str().to_owned());
        Ok(Matcher { index, owner_key })
    }

    /// Whether a message whose addressing headers are `headers` must be
    /// fetched whole: it involves a candidate and not only the org, or its
    /// headers cannot be read (the whole message then decides).
    fn wants(&self, headers: &[u8]) -> bool {
        let envelope = parse_envelope(headers);
        if envelope
            .problems
            .iter()
            .any(|p| matches!(p, Problem::NoHeaders | Problem::ParserFailure))
        {
            return true;
        }
        let involvement = self.index.involvement(&envelope.participants);
        involvement.involves_candidates() && !involvement.internal_only
    }

    fn build(&self, raw: &RawMessage, now: Timestamp) -> Built {
        let envelope = parse_envelope(&raw.raw);
        if envelope
            .problems
            .iter()
            .any(|p| matches!(p, Problem::NoHeaders | Problem::ParserFailure))
        {
            return Built::Unreadable;
        }
        let involvement = self.index.involvement(&envelope.participants);
        if !involvement.involves_candidates() || involvement.internal_only {
            return Built::NotCandidate;
        }
        let Some(from) = envelope
            .participants
            .from
            .first()
            .or(envelope.participants.sender.first())
            .cloned()
        else {
            return Built::Unreadable;
        };
        let full = parse_full(&raw.raw);
        if full.problems.contains(&Problem::ParserFailure) {
            return Built::Unreadable;
        }
        let outbound = self
            .owner_key
            .as_deref()
            .is_some_and(|k| self.index.normalizer().key(&from.address).as_str() == k);
        let sent_at = envelope
            .date
            .and_then(|s| Timestamp::from_second(s).ok())
            .or(raw.received_at)
            .unwrap_or(now);
        Built::Candidate(Box::new(NewMailMessage {
            provider_message_id: raw.id.clone(),
            thread_key: thread_key(&envelope, raw),
            message_id_header: envelope.message_id.clone(),
            direction: if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            from: address(&from),
            to: envelope.participants.to.iter().map(address).collect(),
            cc: envelope.participants.cc.iter().map(address).collect(),
            subject: envelope.subject.clone(),
            sent_at,
            snippet: snippet(&full),
            body_html_sanitized: full.html.as_deref().map(sanitize_for_storage),
            body_text: full.text.clone(),
            attachments: full
                .attachments
                .iter()
                .filter(|a| !a.inline)
                .map(|a| MailAttachment {
                    name: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    size: a.size as u64,
                })
                .collect(),
            candidates: involvement.candidates.iter().map(|h| h.candidate).collect(),
        }))
    }
}

/// The root Message-ID (shared by every mailbox's copy), not the per-mailbox
/// provider thread id; the provider's id only when the message has no ids.
fn thread_key(envelope: &Envelope, raw: &RawMessage) -> String {
    match threading_keys(envelope, None).key {
        Some(ThreadKey::Root(id)) => {
            normalize_message_id(&id).unwrap_or_else(|| format!("provider:{}", raw.id))
        }
        Some(ThreadKey::Provider(p)) => format!("provider:{p}"),
        None => format!(
            "provider:{}",
            raw.thread_id.as_deref().unwrap_or(raw.id.as_str())
        ),
    }
}

fn address(m: &Mailbox) -> MailAddress {
    MailAddress {
        name: m.name.clone(),
        address: m.address.clone(),
    }
}

fn snippet(full: &ParsedMessage) -> String {
    let text = full.text_or_from_html().unwrap_or_default();
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= SNIPPET_CHARS {
            break;
        }
    }
    out.chars().take(SNIPPET_CHARS).collect()
}
