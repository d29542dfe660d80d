//! kill -9 during a mailbox backfill. The real `hirewire serve` process syncs
//! two generated sandbox mailboxes (one Microsoft 365, one Gmail) with small
//! pages, and is SIGKILLed at random points of the backfill, then restarted on
//! the same database, until both mailboxes are caught up. The stored mail must
//! then be exactly the candidate mail of each mailbox: nothing lost, nothing
//! stored twice. On SQLite (a temporary file) and PostgreSQL (a fresh schema).
//!
//! The kill points are drawn from a seeded RNG; the seed is printed, and
//! `HIREWIRE_CRASH_SEED=<seed>` replays its kill points (the timing of the
//! server's steps between them is the machine's).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hirewire_domain::email::{EmailAddress, MailDomain};
use hirewire_domain::ids::GrantId;
use hirewire_server::Keyring;
use hirewire_server::testing::{TEST_PASSWORD_COST, authorize_through, hidden_csrf};
use hirewire_store::testing::{ProcessDb, TestDb};
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, ConsentState, NewUser, ProviderSettings, Role, Store,
    SyncPhase, both_backends, normalize_message_id,
};
use hirewire_testkit::sandbox_pages::{Answer, Landing, SignInPages};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Messages per generated mailbox.
const MESSAGES: usize = 1500;
/// Share of them from or to a candidate.
const CANDIDATE_SHARE: f64 = 0.04;
/// Messages listed per backfill page (`--sync-page-size`).
const PAGE_SIZE: u32 = 20;
/// SIGKILLs during the backfill.
const KILLS: usize = 6;
/// External candidates of both orgs.
const CANDIDATES: [&str; 3] = [
    "jordan.rivers@talentmail.example",
    "sam.okafor@outlook.example",
    "li.chen@mailbox.example",
];

/// One org, its recruiter and the sandbox mailbox they authorize.
struct Inbox {
    provider: &'static str,
    /// The sandbox account (the recruiter's work mailbox).
    mailbox: &'static str,
    domain: &'static str,
    recruiter: &'static str,
    seed: u64,
}

const INBOXES: [Inbox; 2] = [
    Inbox {
        provider: "microsoft",
        mailbox: "adele@acme.example",
        domain: "acme.example",
        recruiter: "riley@acme.example",
        seed: 31,
    },
    Inbox {
        provider: "google",
        mailbox: "hank@globex.example",
        domain: "globex.example",
        recruiter: "gia@globex.example",
        seed: 32,
    },
];

const PASSWORD: &str = "a-long-test-password";

/// The `hirewire serve` process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn kill9(mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown hook runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start the server again and again on the same database.
struct Launch {
    db: ProcessDb,
    data_dir: PathBuf,
    key_file: PathBuf,
    log: PathBuf,
    port: u16,
    sandbox: String,
}

impl Launch {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&self) -> Server {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hirewire"));
        cmd.env_remove("DATABASE_URL")
            .env("HIREWIRE_LOG", "warn,hirewire_server::sync=info")
            .args(["serve", "--listen", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--secrets-key-file")
            .arg(&self.key_file)
            .args(["--provider-base-url", &self.sandbox])
            .args(["--sync-workers", "2", "--sync-interval-secs", "1"])
            .args(["--sync-page-size", &PAGE_SIZE.to_string()])
            .args(["--sync-lease-secs", "2"])
            .stdout(Stdio::null())
            .stderr(log);
        match &self.db {
            ProcessDb::DataDir(dir) => {
                cmd.arg("--data-dir").arg(dir);
            }
            ProcessDb::DatabaseUrl(url) => {
                cmd.env("DATABASE_URL", url)
                    .arg("--data-dir")
                    .arg(&self.data_dir);
            }
        }
        let mut server = Server {
            child: cmd.spawn().expect("start hirewire serve"),
        };
        let health = format!("{}/healthz", self.url());
        // A liveness bound, not a speed check: 30 s.
        for _ in 0..1200 {
            if let Ok(r) = reqwest::get(&health).await
                && r.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the server exited ({status}); log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the server did not answer /healthz; log:\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

async fn control(http: &reqwest::Client, sandbox: &str, path: &str, body: Option<Value>) -> Value {
    let rq = match body {
        Some(b) => http.post(format!("{sandbox}{path}")).json(&b),
        None => http.get(format!("{sandbox}{path}")),
    };
    let r = rq.send().await.expect("sandbox control call");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "control {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Message-IDs of the mailbox's mail from or to an external candidate, as the
/// sandbox holds it (read from the raw headers, independently of the app).
async fn candidate_mail(http: &reqwest::Client, sandbox: &str, mailbox: &str) -> BTreeSet<String> {
    let list = control(
        http,
        sandbox,
        &format!("/_sandbox/mailboxes/{mailbox}/messages"),
        None,
    )
    .await;
    let mut out = BTreeSet::new();
    for m in list["messages"].as_array().expect("messages") {
        let id = m["id"].as_str().expect("id");
        let one = control(
            http,
            sandbox,
            &format!("/_sandbox/mailboxes/{mailbox}/messages/{id}"),
            None,
        )
        .await;
        let raw = one["raw"].as_str().expect("raw").to_lowercase();
        let headers = raw.split("\r\n\r\n").next().unwrap_or("");
        if CANDIDATES.iter().any(|c| headers.contains(c)) {
            out.insert(
                normalize_message_id(m["internet_message_id"].as_str().expect("Message-ID"))
                    .expect("a Message-ID"),
            );
        }
    }
    out
}

/// Signs in to the running server and authorizes `inbox` through the sandbox's consent pages.
async fn authorize(launch: &Launch, inbox: &Inbox) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = launch.url();
    let page = client
        .get(format!("{url}/sign-in"))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("body");
    let csrf = hidden_csrf(&page).expect("csrf");
    let res = client
        .post(format!("{url}/sign-in"))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("email", inbox.recruiter),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 303, "signed in as {}", inbox.recruiter);
    match authorize_through(
        &SignInPages::new(&launch.sandbox),
        &client,
        &url,
        "/settings/email-calendar/inbox/authorize",
        &[],
        inbox.mailbox,
        Answer::AcceptAll,
    )
    .await
    {
        Landing::Redirect(back) => {
            let body = client.get(back).send().await.unwrap().text().await.unwrap();
            assert!(body.contains("data-code=\"authorized\""), "{body}");
        }
        Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
    }
}

/// Creates the org, its recruiter, its candidates and its provider settings.
async fn seed_org(
    store: &Store,
    keyring: &Keyring,
    inbox: &Inbox,
    client: &(String, String),
) -> hirewire_store::User {
    let now = jiff::Timestamp::now();
    let org = store
        .create_org(
            &format!("Org of {}", inbox.domain),
            &[MailDomain::parse(inbox.domain).unwrap()],
            now,
        )
        .await
        .unwrap();
    let email = EmailAddress::parse(inbox.recruiter).unwrap();
    let hash = TEST_PASSWORD_COST.hash(PASSWORD);
    let user = store
        .create_user(
            &NewUser {
                org_id: org.id,
                email: &email,
                display_name: "Recruiter",
                role: Role::Recruiter,
                time_zone: "UTC",
                password_hash: Some(&hash),
            },
            now,
        )
        .await
        .unwrap();
    for (i, a) in CANDIDATES.iter().enumerate() {
        store
            .create_candidate(
                org.id,
                &format!("Candidate {i}"),
                &[EmailAddress::parse(a).unwrap()],
                now,
            )
            .await
            .unwrap();
    }
    store
        .save_provider_settings(&ProviderSettings {
            org_id: org.id,
            provider: inbox.provider.parse().unwrap(),
            client_id: client.0.clone(),
            client_secret_sealed: Some(keyring.seal(client.1.as_bytes())),
            tenant: None,
            access_level: AccessLevelSetting::SendAndView,
            consent_state: ConsentState::Unknown,
            consent_by: None,
            consent_at: None,
            consent_detail: None,
            purge_on_deauthorize: false,
            updated_at: now,
        })
        .await
        .unwrap();
    user
}

/// Messages listed so far by both grants' backfills, and whether both are caught up.
async fn progress(store: &Store, grants: &[GrantId]) -> (u64, bool) {
    let mut seen = 0;
    let mut done = true;
    for &g in grants {
        match store.mail_sync_state(g).await.unwrap() {
            Some(s) => {
                seen += s.messages_seen;
                done &= s.phase == SyncPhase::Incremental
                    && s.backfill_cursor.is_none()
                    && s.incremental_cursor.is_some();
            }
            None => done = false,
        }
    }
    (seen, done)
}

async fn kill_during_backfill_then_restart(db: TestDb) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = std::env::var("HIREWIRE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("crash seed: {seed} (replay with HIREWIRE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    let keyring = Keyring::generate();
    keyring.save(&key_file).unwrap();
    let sandbox = hirewire_sandbox::Sandbox::start(hirewire_sandbox::SandboxConfig::default())
        .await
        .expect("start the sandbox");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let launch = Launch {
        db: db.for_another_process(),
        data_dir: dir.path().join("data"),
        key_file,
        log: dir.path().join("server.log"),
        port,
        sandbox: sandbox.base_url().trim_end_matches('/').to_owned(),
    };
    let http = reqwest::Client::new();
    let store = db.store();

    // The mailboxes: a year of mail, a few percent with candidates.
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let start = now - jiff::SignedDuration::from_hours(24 * 330);
    let end = now - jiff::SignedDuration::from_hours(24);
    let mut expected = Vec::new();
    let mut users = Vec::new();
    for inbox in &INBOXES {
        control(
            &http,
            &launch.sandbox,
            &format!("/_sandbox/mailboxes/{}/generate", inbox.mailbox),
            Some(json!({
                "n": MESSAGES, "seed": inbox.seed, "candidates": CANDIDATES,
                "candidate_share": CANDIDATE_SHARE, "start": start.to_string(), "end": end.to_string()
            })),
        )
        .await;
        let mail = candidate_mail(&http, &launch.sandbox, inbox.mailbox).await;
        assert!(
            mail.len() >= 20,
            "{}: candidate mail to sync: {}",
            inbox.mailbox,
            mail.len()
        );
        expected.push(mail);
        let redirect = format!("{}/oauth/{}/callback", launch.url(), inbox.provider);
        let app_scopes: &[&str] = if inbox.provider == "microsoft" {
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
            &http,
            &launch.sandbox,
            "/_sandbox/clients",
            Some(json!({"provider": inbox.provider, "redirect_uris": [redirect], "app_scopes": app_scopes})),
        )
        .await;
        let client = (
            client["client_id"].as_str().unwrap().to_owned(),
            client["client_secret"].as_str().unwrap().to_owned(),
        );
        users.push(seed_org(&store, &keyring, inbox, &client).await);
    }

    // Authorize both inboxes on a running server: the backfill starts at once.
    let mut server = launch.start().await;
    for inbox in &INBOXES {
        authorize(&launch, inbox).await;
    }
    let mut grants = Vec::new();
    for u in &users {
        grants.push(
            store
                .grant(u.id, CapabilityKind::Inbox)
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }

    // Kill points: after a random number of listed messages (within the
    // first 85% of the backfill), then a random few milliseconds more, so the
    // kill lands anywhere in a step (fetching, storing, settling the job).
    let total = (MESSAGES * INBOXES.len()) as u64;
    let mut points: Vec<u64> = (0..KILLS)
        .map(|_| rng.random_range(0..total * 85 / 100))
        .collect();
    points.sort_unstable();
    let mut kills = Vec::new();
    for &point in &points {
        loop {
            let (seen, done) = progress(&store, &grants).await;
            assert!(
                !done,
                "the backfill finished before kill {} (at {point} listed messages); log:\n{}",
                kills.len() + 1,
                launch.log_tail()
            );
            if seen >= point {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        let (seen, _) = progress(&store, &grants).await;
        server.kill9();
        kills.push(seen);
        server = launch.start().await;
    }
    println!("killed at {kills:?} of {total} listed messages");
    assert_eq!(kills.len(), KILLS);

    // The last run catches up on its own.
    let mut caught_up = false;
    // A liveness bound, not a speed check: 3 minutes.
    for _ in 0..3600 {
        if progress(&store, &grants).await.1 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();
    assert!(
        caught_up,
        "both mailboxes reach incremental sync; log:\n{}",
        launch.log_tail()
    );

    for ((inbox, grant), expected) in INBOXES.iter().zip(&grants).zip(&expected) {
        let rows = store.grant_message_ids(*grant).await.unwrap();
        let stored: Vec<String> = rows
            .iter()
            .map(|r| r.clone().expect("a Message-ID"))
            .collect();
        let unique: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "{}: no message stored twice (seed {seed})",
            inbox.provider
        );
        let lost: Vec<_> = expected.difference(&unique).collect();
        let extra: Vec<_> = unique.difference(expected).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "{}: exactly the candidate mail (seed {seed}); lost {lost:?}, not candidate mail {extra:?}",
            inbox.provider
        );
        let state = store.mail_sync_state(*grant).await.unwrap().unwrap();
        assert_eq!(
            state.messages_stored,
            expected.len() as u64,
            "{}",
            inbox.provider
        );
    }
    sandbox.shutdown().await;
    drop(dir);
}

both_backends! {
    async fn killing_the_server_during_backfill_loses_and_duplicates_no_candidate_mail(db: TestDb) {
        kill_during_backfill_then_restart(db).await;
    }
}
