//! End-to-end initial mail sync (issue 7, benchmark b): a generated sandbox
//! mailbox of `--messages` messages (default 100,000) over a year, `--share`
//! of it (default 5 %) with the org's candidates, no quotas, SQLite.
//! Benchmark (c), `--quotas`: the same with the providers' documented quotas
//! on at both ends (the sandbox enforces them and answers 429 over them;
//! hirewire's pacer keeps under them), reporting the achieved rate against the
//! quota and the sandbox's 429 counts.
//!
//! ```text
//! cargo build --release -p hirewire-bench --bin bench-sync
//! target/release/bench-sync [--provider microsoft|google] [--messages 100000] [--share 0.05] [--page-size 500]
//!                           [--concurrency 4] [--quotas]
//! ```
//!
//! The sandbox runs in a child process (this binary in `sandbox` mode), so the
//! figures of this process are hirewire's: the app on SQLite, the inbox
//! authorized through the sandbox's consent pages, then the sync engine's
//! steps (`hirewire_server::sync::run_until_idle`, one mailbox = one step at a
//! time, as in production) from the first page to the switch to incremental
//! sync. Printed: messages listed, candidate messages stored, seconds,
//! messages/s, and this process's peak RSS (VmHWM) before and after.

use std::time::{Duration, Instant};

use hirewire_domain::email::EmailAddress;
use hirewire_server::testing::{TestApp, TestOptions};
use hirewire_store::testing::TestDb;
use hirewire_store::{Backend, CapabilityKind, SyncPhase};
use serde_json::json;

const CANDIDATES: [&str; 4] = [
    "jordan.rivers@talentmail.example",
    "sam.okafor@outlook.example",
    "dana.wu@proton.example",
    "li.na@candidates.example",
];

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of process `pid` (`self` for this one), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if args.get(1).map(String::as_str) == Some("sandbox") {
        let port: u16 = args[2].parse().expect("port");
        rt.block_on(async {
            hirewire_sandbox::run(hirewire_sandbox::SandboxCliArgs {
                host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                port,
                scenario: None,
                state_dir: None,
            })
            .await
            .expect("sandbox");
        });
    } else {
        rt.block_on(bench(&args));
    }
}

async fn bench(args: &[String]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider: String = arg(args, "--provider", "microsoft".to_owned());
    let messages: u64 = arg(args, "--messages", 100_000);
    let share: f64 = arg(args, "--share", 0.05);
    let page_size: u32 = arg(args, "--page-size", 500);
    let concurrency: usize = arg(
        args,
        "--concurrency",
        hirewire_providers::DEFAULT_FETCH_CONCURRENCY,
    );
    let quotas = args.iter().any(|a| a == "--quotas");
    let (mailbox, domain) = if provider == "microsoft" {
        ("adele@acme.example", "acme.example")
    } else {
        ("hank@globex.example", "globex.example")
    };

    // The sandbox, in its own process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["sandbox", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sandbox process");
    let sandbox = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http
            .get(format!("{sandbox}/_sandbox/clock"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let control = |path: &str, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{sandbox}{path}");
        async move {
            let r = http.post(url).json(&body).send().await.expect("control");
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status} {text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
        }
    };
    let t = Instant::now();
    control(
        &format!("/_sandbox/mailboxes/{mailbox}/generate"),
        json!({"n": messages, "seed": 11, "candidates": CANDIDATES, "candidate_share": share,
               "start": "2026-01-10T00:00:00Z", "end": "2027-01-03T00:00:00Z"}),
    )
    .await;
    println!(
        "bench-sync: {provider} mailbox of {messages} messages ({:.0} % candidate mail) generated in the sandbox process in {:.1} s",
        share * 100.0,
        t.elapsed().as_secs_f64()
    );

    eprintln!("starting hirewire");
    // hirewire in this process, on SQLite.
    let db = TestDb::new(Backend::Sqlite).await.expect("SQLite");
    let app = TestApp::start_full(
        &db,
        TestOptions::default(),
        hirewire_providers::Endpoints::all_at(&format!("{sandbox}/")),
    )
    .await;
    let redirect = app.at(&format!("/oauth/{provider}/callback"));
    let scopes: &[&str] = if provider == "microsoft" {
        &[
            "User.Read",
            "Mail.Read",
            "Mail.ReadWrite",
            "Mail.Send",
            "Calendars.Read",
            "Calendars.ReadWrite",
        ]
    } else {
        &[]
    };
    let client = control(
        "/_sandbox/clients",
        json!({"provider": provider, "redirect_uris": [redirect], "app_scopes": scopes}),
    )
    .await;
    let org = app.org("Bench Talent", &[domain]).await;
    let user = app
        .user(
            org,
            "riley@talent.example",
            hirewire_server::testing::RECRUITER,
            "riley-password",
        )
        .await;
    for (i, a) in CANDIDATES.iter().enumerate() {
        app.store
            .create_candidate(
                org,
                &format!("Candidate {i}"),
                &[EmailAddress::parse(a).expect("address")],
                app.now(),
            )
            .await
            .expect("candidate");
    }
    hirewire_bench::live::use_sandbox_client(&app, org, &provider, &client).await;
    eprintln!("authorizing the inbox");
    let browser = app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    hirewire_bench::live::authorize_inbox(&app, &browser, &sandbox, mailbox).await;
    let grant = app
        .store
        .grant(user.id, CapabilityKind::Inbox)
        .await
        .expect("grant")
        .expect("the inbox is authorized");

    eprintln!("syncing");
    // The timed region: every sync step until the mailbox is caught up.
    let mut config = app.state.config.clone();
    config.sync.page_size = page_size;
    config.sync.fetch_concurrency = concurrency;
    // Benchmark (b) is "no quotas": the pacer only counts. (c), --quotas: the
    // documented limits in hirewire's pacer (the default config) and in the sandbox.
    if quotas {
        let s = http
            .patch(format!("{sandbox}/_sandbox/settings"))
            .json(&json!({"quotas": true}))
            .send()
            .await
            .expect("sandbox settings");
        assert!(s.status().is_success(), "turning the sandbox quotas on");
    } else {
        config.pacing = hirewire_providers::PacingConfig::unlimited();
    }
    // Count only the sync (the authorization made requests too); this also refills the quota buckets.
    let reset = http
        .delete(format!("{sandbox}/_sandbox/counters"))
        .send()
        .await
        .expect("reset the counters");
    assert!(
        reset.status().is_success(),
        "resetting the sandbox counters"
    );
    let state = hirewire_server::AppState::new(
        config,
        app.store.clone(),
        app.state.keyring.clone(),
        std::sync::Arc::new(app.clock.clone()),
    );
    let hwm_before = status_kb("VmHWM:");
    let child_pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let cpu_before = (cpu_seconds("self"), cpu_seconds(&child_pid));
    let started = Instant::now();
    let mut steps = 0usize;
    loop {
        while let Some(o) = hirewire_server::sync::run_one(&state, "bench").await {
            steps += 1;
            if std::env::var("BENCH_DEBUG").is_ok() {
                eprintln!("{o:?}");
            }
        }
        let s = app
            .store
            .mail_sync_state(grant.id)
            .await
            .expect("state")
            .expect("sync state");
        if s.phase == SyncPhase::Incremental && s.backfill_cursor.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "no progress: {s:?}"
        );
        if let Some(e) = &s.last_error {
            panic!("the sync failed: {e}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let s = app
        .store
        .mail_sync_state(grant.id)
        .await
        .expect("state")
        .expect("sync state");
    println!(
        "synced: {} messages listed, {} candidate messages stored, {steps} steps of up to {page_size}, in {secs:.2} s = {:.0} messages/s",
        s.messages_seen,
        s.messages_stored,
        s.messages_seen as f64 / secs
    );
    println!(
        "this process (hirewire, not the sandbox): peak RSS {} MB before the sync, {} MB after (VmHWM)",
        hwm_before / 1024,
        status_kb("VmHWM:") / 1024
    );
    println!(
        "CPU seconds during the sync: this process (hirewire) {:.2}, the sandbox process {:.2}",
        cpu_seconds("self") - cpu_before.0,
        cpu_seconds(&child_pid) - cpu_before.1
    );
    let counters: serde_json::Value = http
        .get(format!("{sandbox}/_sandbox/counters"))
        .send()
        .await
        .expect("counters")
        .json()
        .await
        .expect("counters JSON");
    let (api, what) = if provider == "microsoft" {
        ("graph", "requests")
    } else {
        ("gmail", "units")
    };
    let u = &counters["providers"][api]["users"][mailbox];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let used = n(what);
    println!(
        "sandbox counters ({api}, {mailbox}): {} requests, {} units, {} responses 429 (longest run {}), peak {} requests/s, {} units/s",
        n("requests"),
        n("units"),
        n("responses_429"),
        n("longest_429_run"),
        n("peak_requests_per_sec"),
        n("peak_units_per_sec"),
    );
    if quotas {
        // The documented limits the sandbox enforces with `quotas` on (PROVIDERS.md §2.3, §6.8, legacy model).
        let limit = if provider == "microsoft" {
            10_000.0 / 600.0
        } else {
            15_000.0 / 60.0
        };
        let achieved = used as f64 / secs;
        println!(
            "quota: limit {limit:.2} {what}/s, achieved {achieved:.2} {what}/s over the sync = {:.1} % of the limit; {} responses 429, longest run {}",
            100.0 * achieved / limit,
            n("responses_429"),
            n("longest_429_run"),
        );
    }
    let _ = child.kill().await;
}
