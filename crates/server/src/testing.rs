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
        }
    }
}

impl TestApp {
    pub async fn start(db: &TestDb) -> TestApp {
        Self::start_with(db, TestOptions::default()).await
    }

    pub async fn start_with(db: &TestDb, options: TestOptions) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let url = format!("http://{addr}");
        let mut config = Config::new(format!("{url}/").parse().expect("url"));
        config.password_cost = TEST_PASSWORD_COST;
        config.sign_in_limits = options.sign_in_limits;
        config.trust_proxy = options.trust_proxy;
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
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

/// Role shortcuts for tests.
pub const ADMIN: Role = Role::Admin;
pub const RECRUITER: Role = Role::Recruiter;
