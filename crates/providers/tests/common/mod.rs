//! Shared helpers: an in-process sandbox, identity clients pointed at it whose retry sleeps are recorded
//! instead of waited, and a "person" who clicks through the sandbox's sign-in pages.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hirewire_providers::{
    AppCredentials, AuthorizeRequest, Callback, Endpoints, HttpClient, HttpConfig, IdentityClient,
    PkceVerifier, Provider, Secret, Sleeper,
};
use hirewire_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use hirewire_testkit::sandbox_pages;
use serde_json::Value;

pub const MS_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const MS_SECRET: &str = "sandbox-ms-secret";
pub const GOOGLE_CLIENT_ID: &str = "1234567890-sandbox.apps.googleusercontent.com";
pub const GOOGLE_SECRET: &str = "GOCSPX-sandbox-secret";
pub const INITECH_TENANT_ID: &str = "8c2d9e41-5b7a-4f3c-a1d8-6e0f2b9c7a35";

pub fn redirect_uri(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "http://localhost:8080/oauth/microsoft/callback",
        Provider::Google => "http://localhost:8080/oauth/google/callback",
    }
}

/// Records every retry delay instead of sleeping.
#[derive(Default)]
pub struct RecordingSleeper(pub Mutex<Vec<Duration>>);

impl Sleeper for RecordingSleeper {
    fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.0.lock().unwrap().push(delay);
        Box::pin(async {})
    }
}

/// A client that never retries by itself (for small local servers, and for the pacer, which retries on its own).
pub fn no_retry_http() -> HttpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpClient::new(HttpConfig {
        retry: hirewire_providers::RetryPolicy {
            max_retries: 0,
            ..hirewire_providers::RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap()
}

pub struct World {
    pub sandbox: SandboxHandle,
    pub base: String,
    pub browser: reqwest::Client,
    pub pages: sandbox_pages::SignInPages,
    pub sleeps: Arc<RecordingSleeper>,
}

pub async fn start() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts");
    let base = sandbox.base_url();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    World {
        pages: sandbox_pages::SignInPages::new(&base),
        sandbox,
        base,
        browser,
        sleeps: Arc::new(RecordingSleeper::default()),
    }
}

/// Where a sign-in ended: back at hirewire's redirect URI (its query), or on a provider page.
#[derive(Debug)]
pub enum Landing {
    Redirect(String),
    Page(u16, String),
}

impl Landing {
    pub fn query(self) -> String {
        match self {
            Landing::Redirect(q) => q,
            Landing::Page(s, html) => panic!("expected a redirect, got page {s}: {html}"),
        }
    }
    pub fn page(self) -> String {
        match self {
            Landing::Page(_, html) => html,
            Landing::Redirect(q) => panic!("expected a page, got redirect ?{q}"),
        }
    }
}

/// What the person does on a consent page.
pub use hirewire_testkit::sandbox_pages::Answer;

/// The shared walker's landing, as these tests use it: the redirect's query only.
fn local(l: sandbox_pages::Landing) -> Landing {
    match l {
        sandbox_pages::Landing::Redirect(location) => {
            assert!(
                !location.contains("/_sandbox/"),
                "unexpected internal redirect {location}"
            );
            let url = url::Url::parse(&location).expect("absolute redirect");
            Landing::Redirect(url.query().unwrap_or("").to_owned())
        }
        sandbox_pages::Landing::Page(status, html) => Landing::Page(status, html),
    }
}

impl World {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::all_at(&self.base)
    }

    pub fn http(&self) -> HttpClient {
        HttpClient::new(HttpConfig::default())
            .unwrap()
            .with_sleeper(self.sleeps.clone())
    }

    pub fn client_with(
        &self,
        provider: Provider,
        secret: &str,
        tenant: Option<&str>,
    ) -> IdentityClient {
        let id = match provider {
            Provider::Microsoft => MS_CLIENT_ID,
            Provider::Google => GOOGLE_CLIENT_ID,
        };
        IdentityClient::new(
            provider,
            self.endpoints(),
            AppCredentials {
                client_id: id.into(),
                client_secret: Secret::new(secret),
                tenant: tenant.map(str::to_owned),
            },
            self.http(),
        )
        .with_clock(Arc::new(|| "2026-11-27T09:00:00Z".parse().unwrap()))
    }

    pub fn client(&self, provider: Provider) -> IdentityClient {
        let secret = match provider {
            Provider::Microsoft => MS_SECRET,
            Provider::Google => GOOGLE_SECRET,
        };
        self.client_with(provider, secret, None)
    }

    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.0.lock().unwrap().clone()
    }

    /// Opens `url` in the "browser", picks `user` on the account picker and answers a consent page if one
    /// comes. Returns where it ended.
    pub async fn sign_in(&self, url: &url::Url, user: &str, answer: Answer<'_>) -> Landing {
        local(self.pages.walk(url.as_str(), user, answer).await)
    }

    /// Posts the "Return to the application" button of an error page.
    pub async fn leave_error_page(&self, html: &str) -> Landing {
        local(self.pages.leave_error_page(html).await)
    }

    /// Calls the sandbox control API.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rq = self.browser.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        assert!(r.status().is_success(), "control {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    pub async fn arm_fault(&self, rule: Value) {
        self.control(reqwest::Method::POST, "/_sandbox/faults", Some(rule))
            .await;
    }
}

/// One authorization as hirewire's server runs it: a PKCE verifier, a state, the authorize URL.
pub struct Attempt {
    pub verifier: PkceVerifier,
    pub state: String,
    pub url: url::Url,
}

pub fn begin(
    client: &IdentityClient,
    scopes: Vec<String>,
    include_granted_scopes: bool,
) -> Attempt {
    let verifier = PkceVerifier::generate();
    let state = format!("st-{}", rand_suffix());
    let url = client
        .authorize_url(&AuthorizeRequest {
            redirect_uri: redirect_uri(client.provider()).to_owned(),
            scopes,
            state: state.clone(),
            pkce_challenge: verifier.challenge(),
            login_hint: None,
            include_granted_scopes,
            consent_prompt: false,
        })
        .unwrap();
    Attempt {
        verifier,
        state,
        url,
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The code from a successful callback, checking the state.
pub fn code_of(
    client: &IdentityClient,
    attempt: &Attempt,
    query: &str,
) -> (Secret, Option<Vec<String>>) {
    match client.parse_callback(query) {
        Callback::Code {
            code,
            state,
            granted_scopes,
        } => {
            assert_eq!(state, attempt.state);
            (code, granted_scopes)
        }
        Callback::Error { error, .. } => panic!("callback error: {error:?}"),
    }
}

pub fn query_map(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
