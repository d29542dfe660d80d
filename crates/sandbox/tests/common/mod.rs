//! Shared test helpers: a sandbox on an ephemeral port with a manual clock, an HTTP client that does not
//! follow redirects, and helpers named after what a person does on the sign-in pages.
#![allow(dead_code)]

pub mod schema;
pub mod shape;

use std::collections::HashMap;
use std::sync::Arc;

use hirewire_sandbox::{
    DEFAULT_GOOGLE_CLIENT_ID, DEFAULT_GOOGLE_CLIENT_SECRET, DEFAULT_MS_CLIENT_ID,
    DEFAULT_MS_CLIENT_SECRET, ManualClock, Sandbox, SandboxConfig, SandboxHandle,
};
use reqwest::StatusCode;
use serde_json::Value;

pub const MS_REDIRECT: &str = "http://localhost:8080/oauth/microsoft/callback";
pub const GOOGLE_REDIRECT: &str = "http://localhost:8080/oauth/google/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const MS_SCOPES: &str =
    "openid profile email offline_access User.Read Mail.ReadWrite Mail.Send Calendars.ReadWrite";
pub const GMAIL_READ: &str = "https://www.googleapis.com/auth/gmail.readonly";
pub const CAL_EVENTS: &str = "https://www.googleapis.com/auth/calendar.events";
pub const CAL_READ: &str = "https://www.googleapis.com/auth/calendar.readonly";

pub struct Ctx {
    pub sb: SandboxHandle,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub base: String,
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

pub async fn start() -> Ctx {
    start_with(SandboxConfig::default()).await
}

pub async fn start_with(mut cfg: SandboxConfig) -> Ctx {
    let clock = Arc::new(ManualClock::new("2026-11-27T09:00:00Z".parse().unwrap()));
    cfg.clock = clock.clone();
    let sb = Sandbox::start(cfg).await.expect("sandbox starts");
    let base = sb.base_url();
    Ctx {
        sb,
        clock,
        http: http(),
        base,
    }
}

/// The `/_sandbox/ui/{id}/...` form target in a page.
pub fn form_action(html: &str, suffix: &str) -> String {
    let start = html
        .find("/_sandbox/ui/")
        .unwrap_or_else(|| panic!("no sign-in form in page: {html}"));
    let rest = &html[start..];
    let id_end = rest["/_sandbox/ui/".len()..].find('/').unwrap() + "/_sandbox/ui/".len();
    format!("{}/{suffix}", &rest[..id_end])
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .expect("absolute redirect")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("expected a redirect, got {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Where a sign-in ended: a redirect to the app, or a page.
pub enum Outcome {
    Redirect(HashMap<String, String>),
    Page(StatusCode, String),
}

impl Outcome {
    pub fn redirect(self) -> HashMap<String, String> {
        match self {
            Outcome::Redirect(q) => q,
            Outcome::Page(s, html) => panic!("expected a redirect, got page {s}: {html}"),
        }
    }
    pub fn page(self) -> (StatusCode, String) {
        match self {
            Outcome::Page(s, h) => (s, h),
            Outcome::Redirect(q) => panic!("expected a page, got redirect {q:?}"),
        }
    }
}

async fn outcome(r: reqwest::Response) -> Outcome {
    if r.status() == StatusCode::FOUND {
        Outcome::Redirect(query_of(&location(&r)))
    } else {
        let s = r.status();
        Outcome::Page(s, r.text().await.unwrap())
    }
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get_page(&self, path_and_query: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rq = self.http.request(method, self.url(path));
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub fn ms_authorize_url(&self, tenant: &str, scope: &str, extra: &[(&str, &str)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", DEFAULT_MS_CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("response_mode", "query")
            .append_pair("redirect_uri", MS_REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", "s-abc")
            .append_pair("nonce", "n-123")
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("/{tenant}/oauth2/v2.0/authorize?{}", q.finish())
    }

    /// Opens the authorize URL and picks `user` on the account picker; returns the next step.
    pub async fn pick(&self, authorize_path: &str, user: &str) -> Outcome {
        let (status, html) = self.get_page(authorize_path).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(user), "picker lists {user}: {html}");
        let r = self
            .post_form(&form_action(&html, "account"), &[("user", user)])
            .await;
        outcome(r).await
    }

    /// Answers a consent page.
    pub async fn answer(
        &self,
        consent_html: &str,
        decision: &str,
        extra: &[(&str, &str)],
    ) -> Outcome {
        let mut form: Vec<(&str, &str)> = vec![("decision", decision)];
        form.extend_from_slice(extra);
        let r = self
            .post_form(&form_action(consent_html, "consent"), &form)
            .await;
        outcome(r).await
    }

    /// Microsoft: sign in as `user`, accept consent if asked, return the redirect query.
    pub async fn ms_sign_in(
        &self,
        tenant: &str,
        user: &str,
        scope: &str,
    ) -> HashMap<String, String> {
        match self
            .pick(&self.ms_authorize_url(tenant, scope, &[]), user)
            .await
        {
            Outcome::Redirect(q) => q,
            Outcome::Page(_, html) => {
                assert!(html.contains("Permissions requested"), "{html}");
                self.answer(&html, "accept", &[]).await.redirect()
            }
        }
    }

    pub async fn ms_token(&self, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut f: Vec<(&str, &str)> = vec![
            ("client_id", DEFAULT_MS_CLIENT_ID),
            ("client_secret", DEFAULT_MS_CLIENT_SECRET),
        ];
        f.extend_from_slice(form);
        let r = self
            .post_form(&format!("/{tenant}/oauth2/v2.0/token"), &f)
            .await;
        let s = r.status();
        (s, r.json().await.unwrap())
    }

    pub async fn ms_redeem(&self, code: &str) -> (StatusCode, Value) {
        self.ms_token(
            "organizations",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", MS_REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    /// Microsoft: a full sign-in plus code redemption; returns the token response.
    pub async fn ms_tokens(&self, user: &str) -> Value {
        let q = self.ms_sign_in("organizations", user, MS_SCOPES).await;
        let (s, body) = self.ms_redeem(&q["code"]).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body
    }

    pub async fn ms_refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.ms_token(
            "organizations",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    pub fn google_auth_url(&self, scope: &str, extra: &[(&str, &str)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", DEFAULT_GOOGLE_CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", GOOGLE_REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", "g-state")
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("/o/oauth2/v2/auth?{}", q.finish())
    }

    /// Google: sign in as `user`; on a consent page tick `ticked` (all when `None`) and continue.
    pub async fn google_sign_in(
        &self,
        user: &str,
        scope: &str,
        extra: &[(&str, &str)],
        ticked: Option<&[&str]>,
    ) -> HashMap<String, String> {
        match self.pick(&self.google_auth_url(scope, extra), user).await {
            Outcome::Redirect(q) => q,
            Outcome::Page(_, html) => {
                let mut form: Vec<(&str, &str)> = Vec::new();
                match ticked {
                    None => form.push(("select_all", "1")),
                    Some(t) => form.extend(t.iter().map(|s| ("scope", *s))),
                }
                self.answer(&html, "accept", &form).await.redirect()
            }
        }
    }

    pub async fn google_token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut f: Vec<(&str, &str)> = vec![
            ("client_id", DEFAULT_GOOGLE_CLIENT_ID),
            ("client_secret", DEFAULT_GOOGLE_CLIENT_SECRET),
        ];
        f.extend_from_slice(form);
        let r = self.post_form("/token", &f).await;
        let s = r.status();
        (s, r.json().await.unwrap())
    }

    pub async fn google_redeem(&self, code: &str) -> (StatusCode, Value) {
        self.google_token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", GOOGLE_REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    /// Google: a full offline sign-in granting every scope; returns the token response.
    pub async fn google_tokens(&self, user: &str, scope: &str) -> Value {
        let q = self
            .google_sign_in(
                user,
                scope,
                &[("access_type", "offline"), ("prompt", "consent")],
                None,
            )
            .await;
        let (s, body) = self.google_redeem(&q["code"]).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body
    }

    pub async fn google_refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.google_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    pub async fn api(
        &self,
        token: &str,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status();
        let h = r.headers().clone();
        (s, h, r.json().await.unwrap_or(Value::Null))
    }
}

pub fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}
