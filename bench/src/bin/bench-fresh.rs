//! Freshness (issue 7, benchmark d): from the sandbox's push to the message in
//! the timeline API.
//!
//! ```text
//! cargo build --release -p hirewire-bench --bin bench-fresh
//! target/release/bench-fresh [--provider microsoft|google] [--pushes 100] [--poll-secs 300] [--mailbox 200]
//! ```
//!
//! The sandbox runs in a child process. hirewire runs in this one on SQLite:
//! a TestApp where the recruiter authorizes the inbox through the sandbox's
//! consent pages, and a serving instance on the same store (real-time clock,
//! `sync.workers` background workers with the production `poll_interval`,
//! the push maintenance task, webhooks and the API) with push on for loopback
//! (`PushSettings::allow_http`; production needs a public https URL) and the
//! incremental polling interval at `--poll-secs` (300 s), so only push brings
//! a new message in quickly. Per push: a new candidate message is put into the
//! sandbox mailbox (control API); the sandbox notifies (Graph change
//! notification, or Gmail Pub/Sub push with a signed JWT) and records when it
//! sent it (`sent_unix_ms` at `/_sandbox/push/deliveries`); this process polls
//! `GET /api/v1/candidates/{id}/timeline` every 10 ms until the message's
//! subject appears. Printed: p50/p95/max of push-sent → visible, and of
//! message-put → visible.

use std::time::Duration;

use hirewire_bench::live::{self, Hirewire, Sandbox, arg, percentile, wait_until};
use hirewire_store::SyncPhase;
use serde_json::json;

const CANDIDATE: &str = "jordan.rivers@talentmail.example";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if !live::sandbox_mode(&args, &rt) {
        rt.block_on(bench(&args));
    }
}

fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn bench(args: &[String]) {
    // Warnings of the product (RUST_LOG overrides) go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let provider: String = arg(args, "--provider", "microsoft".to_owned());
    let pushes: usize = arg(args, "--pushes", 100);
    let poll_secs: u64 = arg(args, "--poll-secs", 300);
    let mailbox_size: u64 = arg(args, "--mailbox", 200);
    let workers: usize = arg(args, "--workers", 2);
    let mailbox = if provider == "microsoft" {
        "adele@acme.example"
    } else {
        "hank@globex.example"
    };

    let sandbox = Sandbox::start().await;
    sandbox
        .post(
            &format!("/_sandbox/mailboxes/{mailbox}/generate"),
            json!({"n": mailbox_size, "seed": 5, "candidates": [CANDIDATE], "candidate_share": 0.1,
                   "start": "2026-06-01T00:00:00Z", "end": "2027-01-03T00:00:00Z"}),
        )
        .await;
    let hw = Hirewire::start(&sandbox, &provider, &[CANDIDATE]).await;
    sandbox.align_clock(hw.app.now()).await;
    let (user, grant) = hw
        .authorized_recruiter(&sandbox, "riley@talent.example", mailbox)
        .await;
    let token = hw.app.api_token(&user).await;

    let topic = "projects/hirewire-bench/topics/gmail";
    let certs = format!("{}/oauth2/v3/certs", sandbox.base);
    let (state, base) = hw
        .serve_instance(|c, base| {
            c.push.allow_http = true;
            c.push.webhook_base = Some(base.parse().expect("url"));
            c.push.gmail_topic = Some(topic.into());
            c.push.pubsub_certs_url = Some(certs.clone());
            c.sync.workers = workers;
            c.sync.incremental_interval = Duration::from_secs(poll_secs);
        })
        .await;
    if provider == "google" {
        sandbox
            .post(
                "/_sandbox/push/topics",
                json!({"name": topic, "push_endpoint": format!("{base}/hooks/gmail")}),
            )
            .await;
    }
    // The backfill runs and the subscription (watch) is made at the serving instance's start.
    let store = state.store.clone();
    wait_until(
        "the backfill and the subscription",
        Duration::from_secs(300),
        || {
            let store = store.clone();
            async move {
                let synced = store
                    .mail_sync_state(grant.id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| {
                        s.phase == SyncPhase::Incremental && s.backfill_cursor.is_none()
                    });
                let subscribed = store
                    .push_subscription(grant.id)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                synced && subscribed
            }
        },
    )
    .await;
    let timeline = format!(
        "{base}/api/v1/candidates/{}/timeline",
        hw.candidates[0].get()
    );
    let http = reqwest::Client::new();
    let visible = |subject: String| {
        let http = http.clone();
        let url = timeline.clone();
        let token = token.clone();
        async move {
            let r = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("timeline");
            assert!(r.status().is_success(), "timeline: {}", r.status());
            r.text().await.expect("body").contains(&subject)
        }
    };
    println!(
        "bench-fresh: {provider}, mailbox of {mailbox_size} messages synced; {workers} sync workers polling the job queue every {:?}; incremental polling every {poll_secs} s; {pushes} pushes",
        state.config.sync.poll_interval
    );

    let mut from_push = Vec::new();
    let mut from_put = Vec::new();
    let mut delivery_ms = Vec::new();
    let nonce = wall_ms();
    for i in 0..pushes {
        sandbox
            .control(reqwest::Method::DELETE, "/_sandbox/push/deliveries", None)
            .await;
        let subject = format!("Fresh {i} of run {nonce}");
        let put = wall_ms();
        sandbox
            .post(
                &format!("/_sandbox/mailboxes/{mailbox}/messages"),
                json!({"from": CANDIDATE, "from_name": "Jordan Rivers", "to": [mailbox],
                       "subject": subject, "body": "Is the role still open?"}),
            )
            .await;
        let mut seen = None;
        for _ in 0..3000 {
            if visible(subject.clone()).await {
                seen = Some(wall_ms());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(seen) = seen else {
            let deliveries = sandbox
                .control(reqwest::Method::GET, "/_sandbox/push/deliveries", None)
                .await;
            let sync = state.store.mail_sync_state(grant.id).await;
            let page = http
                .get(&timeline)
                .bearer_auth(&token)
                .send()
                .await
                .expect("timeline")
                .text()
                .await;
            let job = state
                .store
                .latest_job_with_key(&format!("mail.sync:{}", grant.id.get()))
                .await;
            eprintln!("now {} job {job:?}", state.now());
            panic!(
                "push {i}: not in the timeline after 30 s\ndeliveries: {deliveries}\nsync: {sync:?}\ntimeline: {page:?}"
            );
        };
        let deliveries = sandbox
            .control(reqwest::Method::GET, "/_sandbox/push/deliveries", None)
            .await;
        let sent: Vec<&serde_json::Value> = deliveries
            .as_array()
            .expect("list")
            .iter()
            .filter(|d| {
                matches!(d["kind"].as_str(), Some("notification" | "pubsub"))
                    && d["dropped"] != true
            })
            .collect();
        let first = sent
            .iter()
            .filter_map(|d| d["sent_unix_ms"].as_i64())
            .min()
            .unwrap_or_else(|| panic!("push {i}: the sandbox sent no notification: {deliveries}"));
        assert!(
            sent.iter().any(|d| d["ok"] == true),
            "push {i}: not acknowledged: {deliveries}"
        );
        if let Some(l) = sent.iter().filter_map(|d| d["latency_ms"].as_i64()).min() {
            delivery_ms.push(l as f64);
        }
        from_push.push((seen - first) as f64);
        from_put.push((seen - put) as f64);
        // Pushes land at random points of the workers' polling.
        tokio::time::sleep(Duration::from_millis(100 + (rand_ms() % 400))).await;
    }
    let report = |name: &str, xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        println!(
            "{name}: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (n = {})",
            percentile(xs, 50.0),
            percentile(xs, 95.0),
            xs.last().copied().unwrap_or(f64::NAN),
            xs.len()
        );
    };
    report("push sent -> in the timeline API", &mut from_push);
    report(
        "message put into the mailbox -> in the timeline API",
        &mut from_put,
    );
    report(
        "webhook answer (sandbox-measured delivery latency)",
        &mut delivery_ms,
    );
    println!(
        "this process (hirewire + the bench loop): peak RSS {} MB",
        live::status_kb("VmHWM:") / 1024
    );
}

fn rand_ms() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos(),
    )
}
