//! `TestApp`: the real application on an ephemeral loopback port, on a fresh
//! database of either backend, with a manual clock and helpers named after
//! what people do (sign in, add a candidate, call the API).

use std::sync::Arc;

use hirewire_domain::email::{EmailAddress, MailDomain};
use hirewire_domain::ids::OrgId;
use hirewire_store::testing::TestDb;
use hirewire_store::{NewUser, Role, Store, User};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::clock::ManualClock;
use crate::config::Config;
use crate::crypto::{Keyring, PasswordCost, random_token, token_digest};
use crate::{AppState, SignInLimits};

/// Cheap argon2 parameters: tests hash many passwords.
pub const TEST_PASSWORD_COST: PasswordCost = PasswordCost {
    memory_kib: 256,
    iterations: 1,
};

pub struct TestApp {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    pub state: AppState,
    pub clock: ManualClock,
    pub store: Store,
    _shutdown: oneshot::Sender<()>,
    _db: TestDb,
}

/// Knobs for [`TestApp::start_with`].
pub struct TestOptions {
    pub sign_in_limits: SignInLimits,
    pub trust_proxy: bool,
    /// Pretend the app is published at this URL (e.g. https, for cookie flags).
    pub public_url: Option<String>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            sign_in_limits: SignInLimits {
                per_account: 1000,
                per_client: 1000,
                window: std::time::Duration::from_secs(60),
            },
            trust_proxy: false,
            public_url: None,
        }
    }
}

impl TestApp {
    pub async fn start(db: &TestDb) -> TestApp {
        Self::start_with(db, TestOptions::default()).await
    }

    pub async fn start_with(db: &TestDb, options: TestOptions) -> TestApp {
        Self::start_full(db, options, hirewire_providers::Endpoints::real()).await
    }

    /// With providers at `endpoints` (see [`World`] for the sandbox).
    pub async fn start_full(
        db: &TestDb,
        options: TestOptions,
        endpoints: hirewire_providers::Endpoints,
    ) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let url = format!("http://{addr}");
        let public = options
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{url}/"));
        let mut config = Config::new(public.parse().expect("url"));
        config.password_cost = TEST_PASSWORD_COST;
        config.sign_in_limits = options.sign_in_limits;
        config.trust_proxy = options.trust_proxy;
        config.provider_endpoints = endpoints;
        let clock = ManualClock::new("2027-01-04T09:00:00Z".parse().expect("a timestamp"));
        let store = db.store();
        let state = AppState::new(
            config,
            store.clone(),
            Keyring::generate(),
            Arc::new(clock.clone()),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let app_state = state.clone();
        tokio::spawn(async move {
            let _ = crate::serve(app_state, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        TestApp {
            url,
            state,
            clock,
            store,
            _shutdown: tx,
            _db: db.clone(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.state.now()
    }

    /// An absolute URL on this app.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn org(&self, name: &str, domains: &[&str]) -> OrgId {
        let domains: Vec<MailDomain> = domains
            .iter()
            .map(|d| MailDomain::parse(d).expect("a test domain"))
            .collect();
        self.store
            .create_org(name, &domains, self.now())
            .await
            .expect("create org")
            .id
    }

    /// A user with `password` (hashed cheaply), display name from the email.
    pub async fn user(&self, org: OrgId, email: &str, role: Role, password: &str) -> User {
        let email = EmailAddress::parse(email).expect("a test email");
        let hash = TEST_PASSWORD_COST.hash(password);
        let name = email
            .as_str()
            .split('@')
            .next()
            .unwrap_or("user")
            .replace('.', " ");
        self.store
            .create_user(
                &NewUser {
                    org_id: org,
                    email: &email,
                    display_name: &name,
                    role,
                    time_zone: "Europe/Berlin",
                    password_hash: Some(&hash),
                },
                self.now(),
            )
            .await
            .expect("create user")
    }

    /// A fresh API token for `user`.
    pub async fn api_token(&self, user: &User) -> String {
        let token = format!("hw_{}", random_token());
        self.store
            .create_api_token(user.id, "test", &token_digest(&token), self.now())
            .await
            .expect("create token");
        token
    }

    /// An HTTP client that keeps cookies and does not follow redirects.
    pub fn browserless(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client")
    }

    /// An API client sending `Authorization: Bearer token`.
    pub fn api(&self, token: &str) -> Api {
        Api {
            base: format!("{}/api/v1", self.url),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// Signs in through the form, like a browser would; returns the cookie-keeping client.
    pub async fn signed_in(&self, email: &str, password: &str) -> reqwest::Client {
        let client = self.browserless();
        let page = client
            .get(self.at("/sign-in"))
            .send()
            .await
            .expect("sign-in page")
            .text()
            .await
            .expect("body");
        let csrf = hidden_csrf(&page).expect("the sign-in form has a CSRF field");
        let res = client
            .post(self.at("/sign-in"))
            .form(&[
                ("_csrf", csrf.as_str()),
                ("email", email),
                ("password", password),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(res.status(), 303, "sign-in as {email} should redirect");
        client
    }
}

/// The value of the first `name="_csrf"` hidden field in a page.
pub fn hidden_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"_csrf\" value=\"")? + "name=\"_csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// A small API client for tests.
pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .patch(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

/// Role shortcuts for tests.
pub const ADMIN: Role = Role::Admin;
pub const RECRUITER: Role = Role::Recruiter;

/// The provider sandbox beside a [`TestApp`], with one Microsoft and one
/// Google client registered for the app's exact redirect URIs.
pub struct World {
    pub app: TestApp,
    pub sandbox: hirewire_sandbox::SandboxHandle,
    pub microsoft: (String, String),
    pub google: (String, String),
    /// A cookie-less client for the sandbox's control API.
    pub http: reqwest::Client,
    /// The sandbox's sign-in pages, walked over HTTP.
    pub pages: hirewire_testkit::sandbox_pages::SignInPages,
}

pub use hirewire_testkit::sandbox_pages::{Answer, Landing};

impl World {
    /// A TestApp whose providers are the sandbox.
    pub async fn start(db: &TestDb) -> World {
        Self::start_with(db, TestOptions::default()).await
    }

    pub async fn start_with(db: &TestDb, options: TestOptions) -> World {
        let sandbox = hirewire_sandbox::Sandbox::start(hirewire_sandbox::SandboxConfig::default())
            .await
            .expect("start the sandbox");
        let endpoints = hirewire_providers::Endpoints::all_at(&sandbox.base_url());
        let app = TestApp::start_full(db, options, endpoints).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let pages = hirewire_testkit::sandbox_pages::SignInPages::new(&sandbox.base_url());
        let mut world = World {
            app,
            pages,
            sandbox,
            microsoft: Default::default(),
            google: Default::default(),
            http,
        };
        for provider in ["microsoft", "google"] {
            let redirect = world.app.at(&format!("/oauth/{provider}/callback"));
            // The app registration's permissions (what `/.default` admin consent covers).
            let app_scopes: &[&str] = if provider == "microsoft" {
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
            let client = world
                .control(
                    reqwest::Method::POST,
                    "/_sandbox/clients",
                    Some(serde_json::json!({"provider": provider, "redirect_uris": [redirect], "app_scopes": app_scopes})),
                )
                .await;
            let pair = (
                client["client_id"].as_str().expect("client id").to_owned(),
                client["client_secret"]
                    .as_str()
                    .expect("client secret")
                    .to_owned(),
            );
            if provider == "microsoft" {
                world.microsoft = pair
            } else {
                world.google = pair
            }
        }
        world
    }

    /// Calls the sandbox control API; panics on a non-2xx answer.
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut rq = self
            .http
            .request(method, format!("{}{path}", self.sandbox.base_url()));
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.expect("sandbox control call");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "control {path}: {status} {body}");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Configures `org` to use `provider` ("microsoft" or "google") with this world's client.
    pub async fn use_provider(
        &self,
        org: OrgId,
        provider: &str,
        tenant: Option<&str>,
        access: hirewire_store::AccessLevelSetting,
    ) {
        let (id, secret) = if provider == "microsoft" {
            &self.microsoft
        } else {
            &self.google
        };
        let settings = hirewire_store::ProviderSettings {
            org_id: org,
            provider: provider.parse().expect("provider"),
            client_id: id.clone(),
            client_secret_sealed: Some(self.app.state.keyring.seal(secret.as_bytes())),
            tenant: tenant.map(str::to_owned),
            access_level: access,
            consent_state: hirewire_store::ConsentState::Unknown,
            consent_by: None,
            consent_at: None,
            consent_detail: None,
            purge_on_deauthorize: false,
            updated_at: self.app.now(),
        };
        self.app
            .store
            .save_provider_settings(&settings)
            .await
            .expect("save provider settings");
    }

    /// Clicks Authorize (or any form POST that redirects to the provider) for
    /// the signed-in `client`, walks the sandbox's pages as `account`, and
    /// returns where it ended.
    pub async fn authorize(
        &self,
        client: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
        account: &str,
        answer: Answer<'_>,
    ) -> Landing {
        authorize_through(
            &self.pages,
            client,
            &self.app.url,
            path,
            form,
            account,
            answer,
        )
        .await
    }

    /// Walks the sandbox's account picker and consent screen from `url`.
    pub async fn walk(&self, url: &str, account: &str, answer: Answer<'_>) -> Landing {
        self.pages.walk(url, account, answer).await
    }

    /// Presses "Return to the application" on a sandbox error page.
    pub async fn leave_error_page(&self, html: &str) -> Landing {
        self.pages.leave_error_page(html).await
    }
}

/// What [`World::recruiter_with_calendar`] made.
pub struct CalendarRecruiter {
    pub org: OrgId,
    pub user: User,
    /// An API token of the recruiter.
    pub token: String,
    /// The sandbox account whose calendar was authorized.
    pub calendar: &'static str,
}

impl World {
    /// An org on `provider` ("microsoft" or "google") with recruiter
    /// `riley@talent.example` (password `riley-password`, Europe/Berlin) whose
    /// work calendar is authorized, through the sandbox's consent pages, as the
    /// sandbox account `adele@acme.example` (Microsoft) or
    /// `hank@globex.example` (Google).
    pub async fn recruiter_with_calendar(&self, provider: &str) -> CalendarRecruiter {
        let (calendar, domain) = if provider == "microsoft" {
            ("adele@acme.example", "acme.example")
        } else {
            ("hank@globex.example", "globex.example")
        };
        let org = self.app.org("Talent Co", &[domain]).await;
        let user = self
            .app
            .user(
                org,
                "riley@talent.example",
                crate::testing::RECRUITER,
                "riley-password",
            )
            .await;
        self.use_provider(
            org,
            provider,
            None,
            hirewire_store::AccessLevelSetting::SendAndView,
        )
        .await;
        let client = self
            .app
            .signed_in("riley@talent.example", "riley-password")
            .await;
        let landing = self
            .authorize(
                &client,
                "/settings/email-calendar/calendar/authorize",
                &[],
                calendar,
                Answer::AcceptAll,
            )
            .await;
        match landing {
            Landing::Redirect(url) => {
                let res = client.get(url).send().await.expect("back to hirewire");
                assert!(res.status().is_redirection() || res.status().is_success());
            }
            Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
        }
        let token = self.app.api_token(&user).await;
        CalendarRecruiter {
            org,
            user,
            token,
            calendar,
        }
    }
}

/// Clicks Authorize (or any form POST that redirects to the provider) on the
/// hirewire at `app_url` for the signed-in `client`, then walks the sandbox's
/// pages (`pages`) as `account`: for a [`World`], and for a hirewire or a
/// sandbox running in another process.
pub async fn authorize_through(
    pages: &hirewire_testkit::sandbox_pages::SignInPages,
    client: &reqwest::Client,
    app_url: &str,
    path: &str,
    form: &[(&str, &str)],
    account: &str,
    answer: Answer<'_>,
) -> Landing {
    let app_url = app_url.trim_end_matches('/');
    let page = client
        .get(format!("{app_url}/settings/email-calendar"))
        .send()
        .await
        .expect("settings")
        .text()
        .await
        .expect("body");
    let csrf = hidden_csrf(&page).expect("csrf");
    let mut fields = vec![("_csrf", csrf.as_str())];
    fields.extend_from_slice(form);
    let res = client
        .post(format!("{app_url}{path}"))
        .form(&fields)
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        res.status(),
        303,
        "{path} redirects to the provider: {}",
        res.text().await.unwrap_or_default()
    );
    let url = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    pages.walk(&url, account, answer).await
}
