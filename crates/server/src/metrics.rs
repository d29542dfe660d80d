//! Prometheus `/metrics` (text exposition format, the `prometheus` crate).
//!
//! Each [`AppState`] has its own registry (tests run several apps in one
//! process). What is counted where:
//!
//! - `hirewire_sync_messages_seen_total` / `hirewire_sync_messages_stored_total`:
//!   messages listed by sync steps, and candidate mail stored
//!   (from each step's outcome, [`sync_step`]);
//! - `hirewire_sync_lag_seconds{mailbox}` (histogram): at each successful sync
//!   step of a mailbox, how long since its previous successful step on this
//!   instance: how stale a mailbox gets before it is caught up (push makes it
//!   short, polling bounds it by the interval). `mailbox` is the grant id, never
//!   an address;
//! - `hirewire_sync_errors_total{class}`: failed steps by
//!   [`crate::health::error_class`];
//! - `hirewire_provider_requests_total`, `hirewire_provider_throttled_total`
//!   (429s and rate-limit 403s), `hirewire_provider_retries_total`,
//!   `hirewire_provider_waiting` `{provider}`: the shared pacer's counters, read
//!   at scrape time;
//! - `hirewire_job_queue_depth{kind}`: unfinished jobs, read at scrape time;
//! - `hirewire_webhook_latency_seconds{hook}` (histogram): time to answer a
//!   provider webhook ([`Metrics::webhook`]).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hirewire_providers::Service;
use jiff::Timestamp;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::app::AppState;
use crate::sync::SyncOutcome;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Job kinds whose queue depth is reported.
const JOB_KINDS: [&str; 4] = [
    crate::sync::JOB_KIND,
    crate::sync::ADDRESS_JOB_KIND,
    crate::push_hooks::JOB_KIND,
    crate::push_hooks::UNSUBSCRIBE_JOB_KIND,
];

/// The metrics of one app instance. Cheap to clone (handles share state).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    messages_seen: IntCounterVec,
    messages_stored: IntCounterVec,
    sync_lag: HistogramVec,
    sync_errors: IntCounterVec,
    provider_requests: IntCounterVec,
    provider_throttled: IntCounterVec,
    provider_retries: IntCounterVec,
    provider_waiting: IntGaugeVec,
    queue_depth: IntGaugeVec,
    webhook_latency: HistogramVec,
    last_success: std::sync::Arc<Mutex<HashMap<i64, Timestamp>>>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            messages_seen: counter(
                &r,
                "hirewire_sync_messages_seen_total",
                "Messages listed by mail sync steps.",
                &[],
            ),
            messages_stored: counter(
                &r,
                "hirewire_sync_messages_stored_total",
                "Candidate messages stored by mail sync steps.",
                &[],
            ),
            sync_lag: histogram(
                &r,
                "hirewire_sync_lag_seconds",
                "Time since a mailbox's previous successful sync step, observed at each successful step.",
                &["mailbox"],
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0,
                ],
            ),
            sync_errors: counter(
                &r,
                "hirewire_sync_errors_total",
                "Failed mail sync steps by error class.",
                &["class"],
            ),
            provider_requests: counter(
                &r,
                "hirewire_provider_requests_total",
                "Provider requests sent (retries included).",
                &["provider"],
            ),
            provider_throttled: counter(
                &r,
                "hirewire_provider_throttled_total",
                "Throttling answers (429, rate-limit 403) from providers.",
                &["provider"],
            ),
            provider_retries: counter(
                &r,
                "hirewire_provider_retries_total",
                "Provider requests retried after a retryable failure.",
                &["provider"],
            ),
            provider_waiting: gauge(
                &r,
                "hirewire_provider_waiting",
                "Provider requests waiting for a pause, quota or slot.",
                &["provider"],
            ),
            queue_depth: gauge(
                &r,
                "hirewire_job_queue_depth",
                "Unfinished (queued or running) jobs.",
                &["kind"],
            ),
            webhook_latency: histogram(
                &r,
                "hirewire_webhook_latency_seconds",
                "Time to answer a provider webhook.",
                &["hook"],
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0],
            ),
            last_success: Default::default(),
            registry: r,
        }
    }

    /// Records the time a webhook took to answer.
    pub fn webhook(&self, hook: &str, took: std::time::Duration) {
        self.webhook_latency
            .with_label_values(&[hook])
            .observe(took.as_secs_f64());
    }

    fn success(&self, grant: i64, now: Timestamp) {
        let mut last = self.last_success.lock().expect("metrics lock");
        if let Some(prev) = last.insert(grant, now) {
            let secs = now.duration_since(prev).as_secs_f64().max(0.0);
            self.sync_lag
                .with_label_values(&[&grant.to_string()])
                .observe(secs);
        }
    }
}

/// Counts what one sync step did (called by the sync after each step).
pub fn sync_step(state: &AppState, outcome: &SyncOutcome) {
    let m = &state.metrics;
    let now = state.now();
    match outcome {
        SyncOutcome::Page { grant, report, .. } | SyncOutcome::Incremental { grant, report } => {
            m.messages_seen
                .with_label_values(&[] as &[&str])
                .inc_by(report.seen);
            m.messages_stored
                .with_label_values(&[] as &[&str])
                .inc_by(report.stored);
            m.success(grant.get(), now);
        }
        SyncOutcome::Started { grant } => m.success(grant.get(), now),
        SyncOutcome::Retry { error, .. } => {
            m.sync_errors
                .with_label_values(&[crate::health::error_class(error)])
                .inc();
        }
        _ => {}
    }
}

fn catch_up(c: &IntCounterVec, label: &str, total: u64) {
    let c = c.with_label_values(&[label]);
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

/// Renders the registry after refreshing what is read at scrape time.
pub async fn render(state: &AppState) -> Result<String, String> {
    let m = &state.metrics;
    for service in [Service::Graph, Service::Gmail, Service::GoogleCalendar] {
        let s = state.pacer.stats(service);
        let label = service.label();
        catch_up(&m.provider_requests, label, s.requests);
        catch_up(&m.provider_throttled, label, s.throttled);
        catch_up(&m.provider_retries, label, s.retries);
        m.provider_waiting
            .with_label_values(&[label])
            .set(i64::try_from(s.waiting).unwrap_or(i64::MAX));
    }
    for kind in JOB_KINDS {
        let n = state
            .store
            .count_unfinished_jobs(kind)
            .await
            .map_err(|e| e.to_string())?;
        m.queue_depth
            .with_label_values(&[kind])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

async fn scrape(State(state): State<AppState>) -> Response {
    match render(&state).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable").into_response()
        }
    }
}
