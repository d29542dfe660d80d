//! Exactly once under kill -9 (issue 8): two `hirewire serve` processes on one
//! PostgreSQL schema work through 500 scheduled emails, due within the next
//! seconds, from a Microsoft 365 and a Google mailbox (half each), with send
//! pacing off. The instances are SIGKILLed at seeded random points and
//! restarted until the outbox is settled. The provider sandbox runs in the test
//! process, so killing the servers never touches it.
//!
//! Besides the kills, the first sends of each mailbox have uncertain outcomes
//! (the provider takes the message but its answer hangs, or is a 504).
//!
//! Then the sandbox must have received every email **exactly once** (counted
//! by Message-ID in its control API), and the outbox must agree with it: every
//! row `sent` with the provider id the sandbox gave that message, nothing
//! failed, nothing left for a person (a kill always leaves a conclusive
//! lookup in the sandbox, so "needs attention" would be a bug here).
//!
//! The seed is printed; `HIREWIRE_CRASH_SEED=<seed>` replays its kill points
//! (the timing of the servers' steps between them is the machine's). A SQLite
//! variant (two processes on one database file) runs the same with fewer
//! emails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hirewire_domain::email::{EmailAddress, MailDomain};
use hirewire_domain::ids::{CandidateId, OrgId};
use hirewire_server::Keyring;
use hirewire_server::testing::{TEST_PASSWORD_COST, authorize_through, hidden_csrf};
use hirewire_store::testing::{ProcessDb, TestDb};
use hirewire_store::{
    AccessLevelSetting, Backend, CapabilityKind, ConsentState, NewOutboxItem, NewUser,
    OutboxFilter, OutboxItem, OutboxStatus, ProviderSettings, Role, Store, normalize_message_id,
};
use hirewire_testkit::sandbox_pages::{Answer, Landing, SignInPages};
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// SIGKILLs while the outbox is being worked through.
const KILLS: usize = 10;
/// The emails fall due evenly over this many seconds from a few seconds after
/// they are created: faster than two workers send them, so the workers are
/// busy and a kill lands in the middle of a send.
const DUE_SPREAD_SECS: i64 = 8;
/// Sends per mailbox and per kind ("hang", "504") that the provider takes but
/// answers uncertainly.
const UNCERTAIN_PER_MODE: usize = 3;
/// The outbox lease of both instances (`--outbox-lease-secs`): how long a
/// killed instance's claimed email waits before the other one takes it over.
const LEASE_SECS: u64 = 2;

/// One org, its recruiter, the sandbox mailbox they send from and a candidate.
struct Sender {
    provider: &'static str,
    mailbox: &'static str,
    domain: &'static str,
    recruiter: &'static str,
    candidate: &'static str,
}

const SENDERS: [Sender; 2] = [
    Sender {
        provider: "microsoft",
        mailbox: "adele@acme.example",
        domain: "acme.example",
        recruiter: "riley@acme.example",
        candidate: "jordan.rivers@talentmail.example",
    },
    Sender {
        provider: "google",
        mailbox: "hank@globex.example",
        domain: "globex.example",
        recruiter: "gia@globex.example",
        candidate: "sam.okafor@outlook.example",
    },
];

const PASSWORD: &str = "a-long-test-password";

/// A `hirewire serve` process; SIGKILLed when dropped.
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

/// How to start instance `i` again and again on the shared database.
struct Launch {
    db: ProcessDb,
    data_dir: PathBuf,
    key_file: PathBuf,
    log: PathBuf,
    ports: [u16; 2],
    sandbox: String,
}

impl Launch {
    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    async fn start(&self, i: usize) -> Server {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hirewire"));
        cmd.env_remove("DATABASE_URL")
            .env("HIREWIRE_LOG", "warn,hirewire_server::outbox=info")
            .args(["serve", "--listen", "127.0.0.1", "--port"])
            .arg(self.ports[i].to_string())
            .arg("--secrets-key-file")
            .arg(&self.key_file)
            .args(["--provider-base-url", &self.sandbox])
            // One sync worker (the outbox worker runs beside the sync workers); the
            // mailboxes are empty, so it has little to do.
            .args(["--sync-workers", "1", "--sync-interval-secs", "3600"])
            .args(["--outbox-lease-secs", &LEASE_SECS.to_string()])
            .args(["--outbox-poll-interval-ms", "50"])
            .args(["--outbox-pacing-per-window", "0"])
            .args(["--outbox-backoff-base-secs", "1"])
            .stdout(Stdio::null())
            .stderr(log);
        match &self.db {
            ProcessDb::DataDir(dir) => {
                cmd.arg("--data-dir").arg(dir);
            }
            ProcessDb::DatabaseUrl(url) => {
                cmd.env("DATABASE_URL", url)
                    .arg("--data-dir")
                    .arg(self.data_dir.join(i.to_string()));
            }
        }
        let mut server = Server {
            child: cmd.spawn().expect("start hirewire serve"),
        };
        let health = format!("{}/healthz", self.url(i));
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

/// Signs in to instance 0 and authorizes the sender's inbox (with send
/// permission) through the sandbox's consent pages.
async fn authorize(launch: &Launch, sender: &Sender) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = launch.url(0);
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
            ("email", sender.recruiter),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 303, "signed in as {}", sender.recruiter);
    match authorize_through(
        &SignInPages::new(&launch.sandbox),
        &client,
        &url,
        "/settings/email-calendar/inbox/authorize",
        &[],
        sender.mailbox,
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

/// Creates the org (Send & view), its recruiter and its candidate.
async fn seed_org(
    store: &Store,
    keyring: &Keyring,
    sender: &Sender,
    client: &(String, String),
) -> (hirewire_store::User, CandidateId) {
    let now = Timestamp::now();
    let org = store
        .create_org(
            &format!("Org of {}", sender.domain),
            &[MailDomain::parse(sender.domain).unwrap()],
            now,
        )
        .await
        .unwrap();
    let email = EmailAddress::parse(sender.recruiter).unwrap();
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
    let candidate = store
        .create_candidate(
            org.id,
            "Candidate",
            &[EmailAddress::parse(sender.candidate).unwrap()],
            now,
        )
        .await
        .unwrap()
        .id;
    store
        .save_provider_settings(&ProviderSettings {
            org_id: org.id,
            provider: sender.provider.parse().unwrap(),
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
    (user, candidate)
}

/// Every outbox row of the orgs.
async fn rows(store: &Store, orgs: &[OrgId]) -> Vec<OutboxItem> {
    let mut out = Vec::new();
    for &org in orgs {
        out.extend(
            store
                .list_outbox(org, OutboxFilter::default())
                .await
                .unwrap(),
        );
    }
    out
}

/// Rows no worker will touch again, of all.
async fn settled(store: &Store, orgs: &[OrgId]) -> (usize, usize) {
    let all = rows(store, orgs).await;
    let done = all
        .iter()
        .filter(|r| !matches!(r.status, OutboxStatus::Queued | OutboxStatus::Sending))
        .count();
    (done, all.len())
}

async fn two_instances_killed_at_random_send_each_email_exactly_once(db: TestDb, emails: usize) {
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
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let launch = Launch {
        db: db.for_another_process(),
        data_dir: dir.path().join("data"),
        key_file,
        log: dir.path().join("server.log"),
        ports: [free_port(), free_port()],
        sandbox: sandbox.base_url().trim_end_matches('/').to_owned(),
    };
    let http = reqwest::Client::new();
    let store = db.store();

    let mut people = Vec::new();
    for sender in &SENDERS {
        let redirect = format!("{}/oauth/{}/callback", launch.url(0), sender.provider);
        let app_scopes: &[&str] = if sender.provider == "microsoft" {
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
            Some(json!({"provider": sender.provider, "redirect_uris": [redirect], "app_scopes": app_scopes})),
        )
        .await;
        let client = (
            client["client_id"].as_str().unwrap().to_owned(),
            client["client_secret"].as_str().unwrap().to_owned(),
        );
        people.push(seed_org(&store, &keyring, sender, &client).await);
    }

    let mut servers = [Some(launch.start(0).await), Some(launch.start(1).await)];
    for sender in &SENDERS {
        authorize(&launch, sender).await;
    }
    let orgs: Vec<OrgId> = people.iter().map(|(u, _)| u.org_id).collect();
    // Besides the kills, each mailbox's first sends have uncertain outcomes: the
    // provider takes the message, then its answer hangs (the worker gives up at
    // its lease's bound) or is a 504.
    for sender in &SENDERS {
        let endpoint = if sender.provider == "microsoft" {
            "graph.messages.send"
        } else {
            "gmail.users.messages.send"
        };
        for mode in ["hang", "gateway_timeout"] {
            control(
                &http,
                &launch.sandbox,
                "/_sandbox/send/uncertain",
                Some(
                    json!({"user": sender.mailbox, "endpoint": endpoint, "mode": mode,
                            "hang_millis": 20_000, "count": UNCERTAIN_PER_MODE}),
                ),
            )
            .await;
        }
    }

    // The emails, alternating between the two mailboxes, due evenly over the
    // next seconds. Each gets its Message-ID before anything is sent, as
    // Email Connect does.
    let mut grants = Vec::new();
    for (user, _) in &people {
        grants.push(
            store
                .grant(user.id, CapabilityKind::Inbox)
                .await
                .unwrap()
                .expect("the inbox is authorized")
                .id,
        );
    }
    let start = Timestamp::now() + SignedDuration::from_secs(3);
    let spread_ms = DUE_SPREAD_SECS * 1000;
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..emails {
        let s = i % SENDERS.len();
        let (user, candidate) = &people[s];
        let message_id = format!("hw.{seed:x}.{i}@exactly-once.hirewire.example");
        let to = [SENDERS[s].candidate.to_owned()];
        let subject = format!("Interview invitation {i}");
        let send_at = start + SignedDuration::from_millis(spread_ms * i as i64 / emails as i64);
        store
            .create_outbox(
                user.org_id,
                &NewOutboxItem {
                    user_id: user.id,
                    candidate_id: *candidate,
                    grant_id: grants[s],
                    to: &to,
                    cc: &[],
                    subject: &subject,
                    body_markdown: "Hello,\n\nare you free **next Tuesday**?",
                    attachments: &[],
                    message_id: &message_id,
                    in_reply_to: None,
                    references: &[],
                    thread_hint: None,
                    send_at: Some(send_at),
                },
                1 << 20,
                Timestamp::now(),
            )
            .await
            .unwrap();
        expected.insert(message_id, s);
    }

    // Kill points: after a random number of settled emails (within the first
    // 90%), once a worker holds an email, and a random few milliseconds more,
    // so a kill lands anywhere in a send (claim, lookup, provider call,
    // recording the outcome). Each kill takes one instance or, one time in
    // three, both; they are restarted at once.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| rng.random_range(0..emails * 9 / 10))
        .collect();
    points.sort_unstable();
    let mut kills = Vec::new();
    for &point in &points {
        loop {
            let (done, total) = settled(&store, &orgs).await;
            assert!(
                done < total,
                "the outbox settled before kill {} (at {point}); log:\n{}",
                kills.len() + 1,
                launch.log_tail()
            );
            if done >= point {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill while a worker holds an email (claimed, maybe mid-call), a random
        // few milliseconds into its turn.
        for _ in 0..100 {
            if rows(&store, &orgs)
                .await
                .iter()
                .any(|r| r.status == OutboxStatus::Sending)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        let victims: &[usize] = match rng.random_range(0..3) {
            0 => &[0],
            1 => &[1],
            _ => &[0, 1],
        };
        let (done, _) = settled(&store, &orgs).await;
        for &v in victims {
            servers[v].take().expect("running").kill9();
        }
        kills.push((done, victims.to_vec()));
        for &v in victims {
            servers[v] = Some(launch.start(v).await);
        }
    }
    println!("killed (settled emails, instances): {kills:?} of {emails}");

    // The restarted instances settle the rest on their own.
    // A liveness bound, not a speed check: 3 minutes.
    let mut all_settled = false;
    for _ in 0..3600 {
        let (done, total) = settled(&store, &orgs).await;
        if done == total {
            all_settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in servers.iter_mut() {
        if let Some(s) = s.take() {
            s.kill9();
        }
    }
    assert!(
        all_settled,
        "the outbox settles (seed {seed}); log:\n{}",
        launch.log_tail()
    );

    // What the providers received, per Message-ID, with the id each gave it.
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sender in &SENDERS {
        let sent = control(
            &http,
            &launch.sandbox,
            &format!("/_sandbox/mailboxes/{}/sent", sender.mailbox),
            None,
        )
        .await;
        for r in sent["value"].as_array().expect("sent records") {
            assert_eq!(r["state"], "sent", "{r}");
            let id = normalize_message_id(r["message_id"].as_str().expect("Message-ID"))
                .expect("a Message-ID");
            let provider_id = r["graph_id"]
                .as_str()
                .or(r["gmail_id"].as_str())
                .expect("the provider's id")
                .to_owned();
            received.entry(id).or_default().push(provider_id);
        }
    }
    let twice: Vec<_> = received.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "no email reaches the provider twice (seed {seed}): {twice:?}"
    );
    let ours: BTreeSet<&String> = expected.keys().collect();
    let strangers: Vec<_> = received.keys().filter(|k| !ours.contains(k)).collect();
    assert!(
        strangers.is_empty(),
        "only the outbox's emails: {strangers:?}"
    );

    let rows = rows(&store, &orgs).await;
    assert_eq!(rows.len(), emails);
    let mut looked_up = 0;
    for row in &rows {
        let got = received.get(&row.message_id);
        assert!(
            row.status == OutboxStatus::Sent,
            "every email is sent, none failed or left for a person (seed {seed}): {row:?}; provider has it: {got:?}"
        );
        let got = got.unwrap_or_else(|| {
            panic!("marked sent, but the provider never received it (seed {seed}): {row:?}")
        });
        assert_eq!(
            row.provider_message_id.as_deref(),
            Some(got[0].as_str()),
            "the outbox records the provider's id of the one send: {row:?}"
        );
        if row.attempts > 1 {
            looked_up += 1;
        }
    }
    println!(
        "{} emails each received exactly once; {looked_up} needed more than one provider call (a lookup after an uncertain outcome or a kill)",
        rows.len()
    );
    assert!(
        looked_up >= 2 * SENDERS.len() * UNCERTAIN_PER_MODE,
        "every uncertain outcome was settled by a lookup, not a resend: {looked_up}"
    );
    sandbox.shutdown().await;
    drop(dir);
}

#[test]
fn postgres_two_instances_killed_at_random_send_each_of_500_emails_exactly_once() {
    hirewire_store::testing::run(Backend::Postgres, |db: TestDb| async move {
        two_instances_killed_at_random_send_each_email_exactly_once(db, 500).await;
    });
}

#[test]
fn sqlite_two_instances_killed_at_random_send_each_of_200_emails_exactly_once() {
    hirewire_store::testing::run(Backend::Sqlite, |db: TestDb| async move {
        two_instances_killed_at_random_send_each_email_exactly_once(db, 200).await;
    });
}
