//! A live hirewire beside a sandbox in a child process, for the sync benchmarks that run in real time
//! (bench-fresh, bench-many): the sandbox process, its control API, recruiters authorized through its consent
//! pages, and a serving instance with background workers on a clock that moves with the wall clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::{CandidateId, OrgId};
use hirewire_server::testing::{Answer, Landing, RECRUITER, TestApp, TestOptions};
use hirewire_store::testing::TestDb;
use hirewire_store::{AccessLevelSetting, Backend, CapabilityKind, Grant, User};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Wall-clock time moved to the test app's epoch (its manual clock starts at 2027-01-04T09:00Z): it moves in
/// real time, so polling intervals, leases and token expiries behave as in production.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedClock {
    offset: SignedDuration,
}

impl ShiftedClock {
    /// A clock that reads `epoch` now.
    pub fn starting_at(epoch: Timestamp) -> Self {
        Self {
            offset: epoch.duration_since(Timestamp::now()),
        }
    }
}

impl hirewire_server::Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + self.offset
    }
}

/// `field` of /proc/self/status in kB (VmRSS, VmHWM).
pub fn status_kb(field: &str) -> u64 {
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

/// This process's user and system CPU seconds so far (/proc/self/stat, clock ticks of 1/100 s).
pub fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3.
    (tick(11), tick(12))
}

/// The value after `name` on the command line, else `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the sandbox in this process when started as `BIN sandbox PORT` (and returns true).
pub fn sandbox_mode(args: &[String], rt: &tokio::runtime::Runtime) -> bool {
    if args.get(1).map(String::as_str) != Some("sandbox") {
        return false;
    }
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
    true
}

/// The sandbox child process and its control API.
pub struct Sandbox {
    pub base: String,
    pub http: reqwest::Client,
    child: tokio::process::Child,
}

impl Sandbox {
    /// Starts this binary as `sandbox PORT` and waits until it answers.
    pub async fn start() -> Sandbox {
        // reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["sandbox", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the sandbox process");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        for _ in 0..400 {
            if http
                .get(format!("{base}/_sandbox/clock"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Sandbox { base, http, child }
    }

    /// The sandbox process id (for its CPU and RSS).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// A control call; panics on a non-2xx answer.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rq = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.expect("control");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_default()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    /// Moves the sandbox's clock to read the same as `clock` (subscription and watch expiries are compared
    /// across the two).
    pub async fn align_clock(&self, now: Timestamp) {
        let sandbox_now = self
            .control(reqwest::Method::GET, "/_sandbox/clock", None)
            .await["now"]
            .as_i64()
            .expect("sandbox now");
        let ahead = now.as_second() - sandbox_now;
        self.post("/_sandbox/clock/advance", json!({"seconds": ahead}))
            .await;
    }
}

/// The scenario's Microsoft tenant domain and Google Workspace domain.
pub fn domain_of(provider: &str) -> &'static str {
    if provider == "microsoft" {
        "acme.example"
    } else {
        "globex.example"
    }
}

/// hirewire (SQLite, a TestApp for sign-in and authorization) with one org using the sandbox's `provider`.
pub struct Hirewire {
    pub app: TestApp,
    pub org: OrgId,
    pub provider: String,
    /// The org's candidates, in the order given.
    pub candidates: Vec<CandidateId>,
}

impl Hirewire {
    pub async fn start(sandbox: &Sandbox, provider: &str, candidates: &[&str]) -> Hirewire {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::new(Backend::Sqlite).await.expect("SQLite");
        let app = TestApp::start_full(
            &db,
            TestOptions::default(),
            hirewire_providers::Endpoints::all_at(&format!("{}/", sandbox.base)),
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
        let client = sandbox
            .post(
                "/_sandbox/clients",
                json!({"provider": provider, "redirect_uris": [redirect], "app_scopes": scopes}),
            )
            .await;
        let org = app.org("Bench Talent", &[domain_of(provider)]).await;
        let mut ids = Vec::new();
        for (i, a) in candidates.iter().enumerate() {
            let c = app
                .store
                .create_candidate(
                    org,
                    &format!("Candidate {i}"),
                    &[EmailAddress::parse(a).expect("address")],
                    app.now(),
                )
                .await
                .expect("candidate");
            ids.push(c.id);
        }
        use_sandbox_client(&app, org, provider, &client).await;
        Hirewire {
            app,
            org,
            provider: provider.to_owned(),
            candidates: ids,
        }
    }

    /// A recruiter `email` who authorizes the sandbox `mailbox` through its consent pages (what a person does).
    pub async fn authorized_recruiter(
        &self,
        sandbox: &Sandbox,
        email: &str,
        mailbox: &str,
    ) -> (User, Grant) {
        let user = self
            .app
            .user(self.org, email, RECRUITER, "pw-12345678")
            .await;
        let browser = self.app.signed_in(email, "pw-12345678").await;
        authorize_inbox(&self.app, &browser, &sandbox.base, mailbox).await;
        let grant = self
            .app
            .store
            .grant(user.id, CapabilityKind::Inbox)
            .await
            .expect("grant")
            .expect("the inbox is authorized");
        (user, grant)
    }

    /// A second instance on the same store, configured by `configure`, serving (webhooks, API, background
    /// workers: `hirewire_server::serve`) on a port of its own with a [`ShiftedClock`]. Returns its state and
    /// base URL.
    pub async fn serve_instance(
        &self,
        configure: impl FnOnce(&mut hirewire_server::Config, &str),
    ) -> (hirewire_server::AppState, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = self.app.state.config.clone();
        configure(&mut config, &base);
        let state = hirewire_server::AppState::new(
            config,
            self.app.store.clone(),
            self.app.state.keyring.clone(),
            Arc::new(ShiftedClock::starting_at(self.app.now())),
        );
        let served = state.clone();
        tokio::spawn(async move {
            let _ = hirewire_server::serve(served, listener, std::future::pending()).await;
        });
        (state, base)
    }
}

/// Makes `org` use `provider` with the sandbox's registered app `client` (its `client_id` and `client_secret`,
/// sealed), at Send & view.
pub async fn use_sandbox_client(app: &TestApp, org: OrgId, provider: &str, client: &Value) {
    let settings = hirewire_store::ProviderSettings {
        org_id: org,
        provider: provider.parse().expect("provider"),
        client_id: client["client_id"].as_str().expect("id").to_owned(),
        client_secret_sealed: Some(
            app.state
                .keyring
                .seal(client["client_secret"].as_str().expect("secret").as_bytes()),
        ),
        tenant: None,
        access_level: AccessLevelSetting::SendAndView,
        consent_state: hirewire_store::ConsentState::Unknown,
        consent_by: None,
        consent_at: None,
        consent_detail: None,
        purge_on_deauthorize: false,
        updated_at: app.now(),
    };
    app.store
        .save_provider_settings(&settings)
        .await
        .expect("provider settings");
}

/// Authorizes the sandbox `mailbox` as the inbox of the recruiter signed in on `browser`, through the sandbox's
/// consent pages at `sandbox` (its base URL), and checks hirewire says it is authorized.
pub async fn authorize_inbox(
    app: &TestApp,
    browser: &reqwest::Client,
    sandbox: &str,
    mailbox: &str,
) {
    match hirewire_server::testing::authorize_through(
        &hirewire_testkit::sandbox_pages::SignInPages::new(&format!(
            "{}/",
            sandbox.trim_end_matches('/')
        )),
        browser,
        &app.url,
        "/settings/email-calendar/inbox/authorize",
        &[],
        mailbox,
        Answer::AcceptAll,
    )
    .await
    {
        Landing::Redirect(back) => {
            let body = browser
                .get(back)
                .send()
                .await
                .expect("back")
                .text()
                .await
                .expect("body");
            assert!(body.contains("data-code=\"authorized\""), "{body}");
        }
        Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
    }
}

/// Waits (polling every 100 ms, at most `limit`) until `done` holds; panics with `what` otherwise.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percentile `p` (0-100) of sorted `xs` (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
