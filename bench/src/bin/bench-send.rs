//! Email Connect sending (issue 8): (a) the outbox's own overhead per send,
//! and (b) sends per second end to end to the provider sandbox, pacing off.
//!
//! ```text
//! cargo build --release -p hirewire-bench --bin bench-send
//! target/release/bench-send [--backend sqlite|postgres] [--overhead 2000] [--emails 500] [--workers 1]
//! ```
//!
//! (a) **Overhead**, no provider I/O: `--overhead` emails are put in the
//! outbox (`Store::create_outbox`, the Message-ID already generated), then one
//! worker takes each through the store calls of a send: claim (fenced lease),
//! begin (the attempt is recorded, the lease renewed), mark sent. Printed: µs
//! per email for enqueue and for claim → begin → sent, and sends/s.
//!
//! (b) **End to end**, per provider (Microsoft Graph: create the draft from
//! the MIME, then `/send`; Gmail: `messages.send`): `--emails` emails are
//! submitted (`outbox::submit`: checks, composing, Message-ID, enqueue), then
//! `--workers` outbox workers (`outbox::run_one`, as the server's worker runs
//! it) send them all to the sandbox, pacing off. Printed: sends/s of the
//! workers, and the sandbox's count of received emails (must equal
//! `--emails`: each exactly once).
//!
//! The sandbox runs in a child process (this binary in `sandbox` mode), so the
//! figures of this process are hirewire's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::CandidateId;
use hirewire_server::outbox::{self, ComposeInput, Turn};
use hirewire_server::testing::{TestApp, TestOptions};
use hirewire_store::testing::TestDb;
use hirewire_store::{Backend, CapabilityKind, GrantId, NewOutboxItem, OutboxOutcome, User};
use serde_json::json;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// A recruiter whose inbox at `provider` is authorized, and their candidate.
struct Sender {
    provider: &'static str,
    mailbox: &'static str,
    user: User,
    grant: GrantId,
    candidate: CandidateId,
    candidate_address: &'static str,
}

async fn sender(
    app: &TestApp,
    sandbox: &str,
    http: &reqwest::Client,
    provider: &'static str,
) -> Sender {
    let (mailbox, domain, recruiter, candidate_address) = if provider == "microsoft" {
        (
            "adele@acme.example",
            "acme.example",
            "riley@acme.example",
            "jordan.rivers@talentmail.example",
        )
    } else {
        (
            "hank@globex.example",
            "globex.example",
            "gia@globex.example",
            "sam.okafor@outlook.example",
        )
    };
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
    let client: serde_json::Value = http
        .post(format!("{sandbox}/_sandbox/clients"))
        .json(&json!({"provider": provider, "redirect_uris": [redirect], "app_scopes": scopes}))
        .send()
        .await
        .expect("register a client")
        .json()
        .await
        .expect("client");
    let org = app.org(&format!("Bench {provider}"), &[domain]).await;
    let user = app
        .user(
            org,
            recruiter,
            hirewire_server::testing::RECRUITER,
            "riley-password",
        )
        .await;
    let candidate = app
        .store
        .create_candidate(
            org,
            "Jordan Rivers",
            &[EmailAddress::parse(candidate_address).expect("address")],
            app.now(),
        )
        .await
        .expect("candidate")
        .id;
    hirewire_bench::live::use_sandbox_client(app, org, provider, &client).await;
    let browser = app.signed_in(recruiter, "riley-password").await;
    hirewire_bench::live::authorize_inbox(app, &browser, sandbox, mailbox).await;
    let grant = app
        .store
        .grant(user.id, CapabilityKind::Inbox)
        .await
        .expect("grant")
        .expect("the inbox is authorized")
        .id;
    Sender {
        provider,
        mailbox,
        user,
        grant,
        candidate,
        candidate_address,
    }
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

async fn bench(args: &[String]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = match arg(args, "--backend", "sqlite".to_owned()).as_str() {
        "postgres" => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let overhead_n: usize = arg(args, "--overhead", 2000);
    let emails: usize = arg(args, "--emails", 500);
    let workers: usize = arg(args, "--workers", 1).max(1);

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

    let db = TestDb::new(backend).await.expect("the database");
    let app = TestApp::start_full(
        &db,
        TestOptions::default(),
        hirewire_providers::Endpoints::all_at(&format!("{sandbox}/")),
    )
    .await;
    let senders = [
        sender(&app, &sandbox, &http, "microsoft").await,
        sender(&app, &sandbox, &http, "google").await,
    ];
    let mut config = app.state.config.clone();
    config.outbox.pacing = None;
    let state = hirewire_server::AppState::new(
        config,
        app.store.clone(),
        app.state.keyring.clone(),
        Arc::new(app.clock.clone()),
    );
    let store = &app.store;
    println!("bench-send on {backend}");

    // (a) The outbox's own overhead: store calls only.
    let s = &senders[0];
    let to = [s.candidate_address.to_owned()];
    let started = Instant::now();
    for i in 0..overhead_n {
        let message_id = format!("hw.bench.{i}@overhead.hirewire.example");
        store
            .create_outbox(
                s.user.org_id,
                &NewOutboxItem {
                    user_id: s.user.id,
                    candidate_id: s.candidate,
                    grant_id: s.grant,
                    to: &to,
                    cc: &[],
                    subject: "Interview next week",
                    body_markdown: "Hello,\n\nare you free **next Tuesday**?",
                    attachments: &[],
                    message_id: &message_id,
                    in_reply_to: None,
                    references: &[],
                    thread_hint: None,
                    send_at: None,
                },
                1 << 20,
                state.now(),
            )
            .await
            .expect("enqueue");
    }
    let enqueue = started.elapsed();
    let lease = state.config.outbox.lease;
    let started = Instant::now();
    let mut done = 0;
    while let Some(c) = store
        .claim_outbox("bench", state.now(), lease)
        .await
        .expect("claim")
    {
        store
            .begin_outbox_send(c.item.id, c.fencing_token, state.now(), lease)
            .await
            .expect("begin");
        store
            .finish_outbox(
                c.item.id,
                c.fencing_token,
                &OutboxOutcome::Sent {
                    provider_message_id: "bench",
                    provider_thread_id: None,
                },
                state.now(),
            )
            .await
            .expect("sent");
        done += 1;
    }
    let cycle = started.elapsed();
    assert_eq!(done, overhead_n, "every enqueued email was claimed once");
    println!(
        "(a) outbox overhead, {overhead_n} emails, no provider I/O: enqueue {:.0} µs/email; claim + begin + mark sent {:.0} µs/email = {:.0} sends/s; all three {:.0} µs/email",
        micros(enqueue, overhead_n),
        micros(cycle, overhead_n),
        overhead_n as f64 / cycle.as_secs_f64(),
        micros(enqueue + cycle, overhead_n),
    );

    // (b) End to end to the sandbox, per provider.
    for s in &senders {
        let started = Instant::now();
        for i in 0..emails {
            outbox::submit(
                &state,
                &s.user,
                s.candidate,
                ComposeInput {
                    to: vec![s.candidate_address.to_owned()],
                    subject: format!("Interview invitation {i}"),
                    body_markdown: "Hello **Jordan**,\n\nare you free on Tuesday at 10:00? \
                                    The team would like to meet you.\n\nBest,\nRiley"
                        .into(),
                    ..ComposeInput::default()
                },
            )
            .await
            .expect("submit");
        }
        let submit = started.elapsed();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("bench-{w}");
                let mut sent = 0usize;
                while let Some(turn) = outbox::run_one(&state, &owner).await.expect("worker") {
                    match turn {
                        Turn::Sent(_) => sent += 1,
                        other => panic!("not a plain send: {other:?}"),
                    }
                }
                sent
            }));
        }
        let mut sent = 0;
        for t in tasks {
            sent += t.await.expect("worker task");
        }
        let secs = started.elapsed().as_secs_f64();
        let received: serde_json::Value = http
            .get(format!("{sandbox}/_sandbox/mailboxes/{}/sent", s.mailbox))
            .send()
            .await
            .expect("sent list")
            .json()
            .await
            .expect("json");
        let received = received["value"].as_array().map_or(0, Vec::len);
        assert_eq!(sent, emails);
        assert_eq!(received, emails, "the sandbox received each email once");
        println!(
            "(b) {} end to end, {emails} emails, {workers} worker(s), pacing off: submit {:.0} µs/email; sending {secs:.2} s = {:.0} sends/s ({:.2} ms/send); the sandbox received {received}",
            s.provider,
            micros(submit, emails),
            emails as f64 / secs,
            secs * 1000.0 / emails as f64,
        );
    }
    let _ = child.kill().await;
}
