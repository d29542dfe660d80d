//! Many mailboxes (issue 7, benchmark e): `--mailboxes` (1,000) small
//! mailboxes doing incremental sync on one instance; CPU and RSS in steady
//! state, and how long one full round takes.
//!
//! ```text
//! cargo build --release -p hirewire-bench --bin bench-many
//! target/release/bench-many [--provider microsoft|google] [--mailboxes 1000] [--messages 20]
//!     [--interval-secs 60] [--workers 2] [--measure-secs 180] [--new-per-min 60]
//! ```
//!
//! The sandbox runs in a child process with one user per mailbox, each with
//! a generated mailbox of `--messages` messages. hirewire runs in this
//! process on SQLite: every recruiter signs in and authorizes their inbox
//! through the sandbox's consent pages (the honest path, timed), then a
//! serving instance on the same store (`hirewire_server::serve`: `--workers`
//! background sync workers, the production job-queue poll of 1 s, incremental
//! sync every `--interval-secs`, push off as without a public https URL)
//! backfills them all and then keeps them in sync. Measured once every mailbox
//! is incremental and one interval has passed: this process's user+sys CPU
//! seconds over `--measure-secs` (while `--new-per-min` new messages arrive in
//! random mailboxes) and its RSS (sampled each second; the TestApp beside it
//! is idle); then a full round: every mailbox's next step made due at once,
//! timed until each has synced again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hirewire_bench::live::{self, Hirewire, Sandbox, arg, cpu_seconds, status_kb, wait_until};
use hirewire_domain::ids::GrantId;
use hirewire_store::{Store, SyncPhase};
use jiff::Timestamp;
use serde_json::json;

const CANDIDATES: [&str; 4] = [
    "jordan.rivers@talentmail.example",
    "sam.okafor@outlook.example",
    "dana.wu@proton.example",
    "li.na@candidates.example",
];

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

/// When each grant's last sync step ended: a finished step queues its successor (an incremental step that
/// found nothing new does not touch `last_success_at`).
async fn last_success(store: &Store, grants: &[GrantId]) -> Vec<Option<Timestamp>> {
    let mut out = Vec::with_capacity(grants.len());
    for g in grants {
        let key = format!("{}:{}", hirewire_server::sync::JOB_KIND, g.get());
        out.push(
            store
                .latest_job_with_key(&key)
                .await
                .ok()
                .flatten()
                .map(|j| j.created_at),
        );
    }
    out
}

async fn all_incremental(store: &Store, grants: &[GrantId]) -> usize {
    let mut n = 0;
    for g in grants {
        if store
            .mail_sync_state(*g)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.phase == SyncPhase::Incremental && s.backfill_cursor.is_none())
        {
            n += 1;
        }
    }
    n
}

/// (user, sys) CPU seconds of process `pid`.
fn cpu_of(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(11), tick(12))
}

async fn bench(args: &[String]) {
    let provider: String = arg(args, "--provider", "microsoft".to_owned());
    let n: usize = arg(args, "--mailboxes", 1000);
    let messages: u64 = arg(args, "--messages", 20);
    let interval: u64 = arg(args, "--interval-secs", 60);
    let workers: usize = arg(args, "--workers", 2);
    let measure: u64 = arg(args, "--measure-secs", 180);
    let new_per_min: u64 = arg(args, "--new-per-min", 60);
    let domain = live::domain_of(&provider);
    let tenant_key = if provider == "microsoft" {
        "tenant"
    } else {
        "domain"
    };

    let sandbox = Arc::new(Sandbox::start().await);
    let started = Instant::now();
    let mailboxes: Vec<String> = (0..n).map(|i| format!("rec{i:04}@{domain}")).collect();
    for (i, m) in mailboxes.iter().enumerate() {
        sandbox
            .post(
                "/_sandbox/users",
                json!({tenant_key: domain, "email": m, "display_name": format!("Recruiter {i}")}),
            )
            .await;
        sandbox
            .post(
                &format!("/_sandbox/mailboxes/{m}/generate"),
                json!({"n": messages, "seed": i, "candidates": CANDIDATES, "candidate_share": 0.25,
                       "start": "2026-09-01T00:00:00Z", "end": "2027-01-03T00:00:00Z"}),
            )
            .await;
    }
    eprintln!(
        "{n} sandbox users with {messages} messages each in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let hw = Arc::new(Hirewire::start(&sandbox, &provider, &CANDIDATES).await);
    sandbox.align_clock(hw.app.now()).await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mailboxes = Arc::new(mailboxes);
    for _ in 0..8 {
        let (hw, sandbox, next, mailboxes) =
            (hw.clone(), sandbox.clone(), next.clone(), mailboxes.clone());
        set.spawn(async move {
            let mut grants = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(m) = mailboxes.get(i) else { break };
                let (_, g) = hw
                    .authorized_recruiter(&sandbox, &format!("recruiter{i:04}@talent.example"), m)
                    .await;
                grants.push(g.id);
            }
            grants
        });
    }
    let mut grants = Vec::new();
    while let Some(r) = set.join_next().await {
        grants.extend(r.expect("authorizing"));
    }
    let authorize_secs = started.elapsed().as_secs_f64();
    println!(
        "bench-many: {provider}, {n} recruiters signed in and authorized their inboxes through the sandbox's consent pages in {authorize_secs:.1} s ({:.1} ms each, 8 at a time)",
        authorize_secs * 1000.0 / n as f64
    );

    let (state, _base) = hw
        .serve_instance(|c, _| {
            c.sync.workers = workers;
            c.sync.incremental_interval = Duration::from_secs(interval);
        })
        .await;
    let store = state.store.clone();
    let started = Instant::now();
    {
        let (store, grants) = (store.clone(), grants.clone());
        wait_until("every backfill", Duration::from_secs(3600), move || {
            let (store, grants) = (store.clone(), grants.clone());
            async move { all_incremental(&store, &grants).await == grants.len() }
        })
        .await;
    }
    println!(
        "backfill of {n} mailboxes x {messages} messages: {:.1} s; then waiting one interval ({interval} s) for steady state",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(interval)).await;

    // Steady state: CPU and RSS of this process over the window, with new mail arriving.
    let before = last_success(&store, &grants).await;
    let sandbox_pid = sandbox.pid();
    let (u0, s0) = cpu_seconds();
    let (su0, ss0) = sandbox_pid.map_or((0.0, 0.0), cpu_of);
    let window = Instant::now();
    let mut rss = Vec::new();
    let mut injected = 0u64;
    let mut tick = 0u64;
    while window.elapsed() < Duration::from_secs(measure) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        rss.push(status_kb("VmRSS:"));
        // `new_per_min` messages a minute, spread over the seconds.
        let due = new_per_min * tick / 60;
        while injected < due {
            let m = &mailboxes[(injected as usize * 7919) % n];
            sandbox
                .post(
                    &format!("/_sandbox/mailboxes/{m}/messages"),
                    json!({"from": CANDIDATES[injected as usize % CANDIDATES.len()], "to": [m],
                           "subject": format!("New {injected}"), "body": "Hello."}),
                )
                .await;
            injected += 1;
        }
    }
    let secs = window.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    let (su1, ss1) = sandbox_pid.map_or((0.0, 0.0), cpu_of);
    let after = last_success(&store, &grants).await;
    let advanced = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.is_some() && a > b)
        .count();
    let cpu = (u1 - u0) + (s1 - s0);
    rss.sort_unstable();
    println!(
        "steady state over {secs:.0} s, incremental sync every {interval} s by {workers} workers, {injected} new messages: hirewire CPU {:.2} s user + {:.2} s sys = {:.2} CPU-s per minute ({:.1} % of one core); RSS median {} MB, max {} MB; {advanced} of {n} mailboxes synced at least once in the window",
        u1 - u0,
        s1 - s0,
        cpu * 60.0 / secs,
        cpu * 100.0 / secs,
        rss[rss.len() / 2] / 1024,
        rss.last().copied().unwrap_or(0) / 1024,
    );
    println!(
        "(the sandbox process, not hirewire: {:.2} CPU-s per minute)",
        ((su1 - su0) + (ss1 - ss0)) * 60.0 / secs
    );

    // A full round: every mailbox's step due at once.
    let t0 = state.now();
    let (u0, s0) = cpu_seconds();
    let round = Instant::now();
    for g in &grants {
        let key = format!("{}:{}", hirewire_server::sync::JOB_KIND, g.get());
        store.hasten_job(&key, t0).await.expect("hasten");
    }
    {
        let (store, grants) = (store.clone(), grants.clone());
        wait_until("a full round", Duration::from_secs(3600), move || {
            let (store, grants) = (store.clone(), grants.clone());
            async move {
                last_success(&store, &grants)
                    .await
                    .iter()
                    .all(|t| t.is_some_and(|t| t >= t0))
            }
        })
        .await;
    }
    let round_secs = round.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    println!(
        "a full round (all {n} mailboxes due at once, each one incremental step): {round_secs:.1} s = {:.0} steps/s, {:.1} CPU-s (this process, including the bench's own polling of the {n} sync states)",
        n as f64 / round_secs,
        (u1 - u0) + (s1 - s0)
    );
    println!(
        "this process: RSS now {} MB, peak {} MB (VmHWM, includes the authorization phase)",
        status_kb("VmRSS:") / 1024,
        status_kb("VmHWM:") / 1024
    );
}
