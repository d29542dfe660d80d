//! A real headless Chromium clicks through both providers' sign-in pages: consent, cancel, a partial Google
//! grant, and "Need admin approval".

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct App {
    client_id: String,
    secret: String,
    redirect: String,
}

async fn register(t: &Ctx, provider: &str) -> App {
    let redirect = t.url(&format!("/cb/{provider}"));
    let (st, c) = t
        .control(
            Method::POST,
            "/_sandbox/clients",
            Some(json!({"provider": provider, "name": "hirewire", "redirect_uris": [redirect]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    App {
        client_id: s(&c["client_id"]).into(),
        secret: s(&c["client_secret"]).into(),
        redirect,
    }
}

fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

async fn click(b: &Client, css: &str) {
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The page's text; empty while a navigation replaces the page (the body
/// found may go stale before its text is read), so callers poll.
async fn text(b: &Client) -> String {
    match b.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the browser is back at the app's redirect URI and returns its query.
async fn landed(b: &Client, redirect: &str) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = b.current_url().await.unwrap();
        if u.as_str().starts_with(redirect) {
            return u
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        }
        assert!(Instant::now() < deadline, "still at {u}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_text(b: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = text(b).await;
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "page never showed {needle:?}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms_url(t: &Ctx, app: &App, tenant: &str) -> String {
    t.url(&format!(
        "/{tenant}/oauth2/v2.0/authorize?client_id={}&response_type=code&response_mode=query&redirect_uri={}&scope={}&state=st-1&code_challenge={CHALLENGE}&code_challenge_method=S256",
        app.client_id, enc(&app.redirect), enc(MS_SCOPES)
    ))
}

fn google_url(t: &Ctx, app: &App, scope: &str) -> String {
    t.url(&format!(
        "/o/oauth2/v2/auth?client_id={}&response_type=code&redirect_uri={}&scope={}&state=gs-1&access_type=offline&prompt=consent&code_challenge={CHALLENGE}&code_challenge_method=S256",
        app.client_id, enc(&app.redirect), enc(scope)
    ))
}

async fn redeem(t: &Ctx, path: &str, app: &App, code: &str) -> Value {
    let r = t
        .post_form(
            path,
            &[
                ("client_id", &app.client_id),
                ("client_secret", &app.secret),
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &app.redirect),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_person_consents_and_cancels_on_the_microsoft_pages() {
    let t = start().await;
    let app = register(&t, "microsoft").await;
    let b = hirewire_testkit::browser().await;

    b.goto(&ms_url(&t, &app, "acme.example")).await.unwrap();
    wait_text(&b, "Pick an account").await;
    click(&b, "button[data-email='adele@acme.example']").await;
    let consent = wait_text(&b, "Permissions requested").await;
    assert!(
        consent.contains("Read and write access to your mail"),
        "{consent}"
    );
    click(&b, "#accept").await;
    let q = landed(&b, &app.redirect).await;
    assert_eq!(q["state"], "st-1");
    let tokens = redeem(&t, "/organizations/oauth2/v2.0/token", &app, &q["code"]).await;
    assert_eq!(
        tokens["scope"],
        "Calendars.ReadWrite Mail.ReadWrite Mail.Send User.Read profile openid email"
    );

    b.goto(&ms_url(&t, &app, "acme.example")).await.unwrap();
    click(&b, "button[data-email='ben@acme.example']").await;
    wait_text(&b, "Permissions requested").await;
    click(&b, "#cancel").await;
    let q = landed(&b, &app.redirect).await;
    assert_eq!(q["error"], "access_denied");
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn a_person_in_a_tenant_without_user_consent_sees_need_admin_approval() {
    let t = start().await;
    let app = register(&t, "microsoft").await;
    let b = hirewire_testkit::browser().await;
    b.goto(&ms_url(&t, &app, "initech.example")).await.unwrap();
    click(&b, "button[data-email='peter@initech.example']").await;
    let page = wait_text(&b, "Need admin approval").await;
    assert!(page.contains("AADSTS90094"), "{page}");
    click(&b, "#back").await;
    let q = landed(&b, &app.redirect).await;
    assert_eq!(q["error"], "access_denied");
}

#[tokio::test]
async fn a_person_grants_google_calendar_but_not_gmail() {
    let t = start().await;
    let app = register(&t, "google").await;
    let b = hirewire_testkit::browser().await;
    b.goto(&google_url(
        &t,
        &app,
        &format!("openid email {GMAIL_READ} {CAL_READ}"),
    ))
    .await
    .unwrap();
    wait_text(&b, "Choose an account").await;
    click(&b, "button[data-email='hank@globex.example']").await;
    let consent = wait_text(&b, "Select what").await;
    assert!(
        consent.contains("View your email messages and settings"),
        "{consent}"
    );
    click(&b, &format!("input[data-scope='{CAL_READ}']")).await;
    click(&b, "#accept").await;
    let q = landed(&b, &app.redirect).await;
    assert!(
        q["scope"].contains("calendar.readonly") && !q["scope"].contains("gmail"),
        "{q:?}"
    );
    let tokens = redeem(&t, "/token", &app, &q["code"]).await;
    assert!(!s(&tokens["scope"]).contains("gmail"));
    let (st, _, err) = t
        .api(s(&tokens["access_token"]), "/gmail/v1/users/me/profile")
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        err["error"]["errors"][0]["reason"],
        "insufficientPermissions"
    );

    // Cancel on the Google page.
    b.goto(&google_url(&t, &app, &format!("{GMAIL_READ} {CAL_READ}")))
        .await
        .unwrap();
    click(&b, "button[data-email='mindy@globex.example']").await;
    wait_text(&b, "Select what").await;
    click(&b, "#cancel").await;
    let q = landed(&b, &app.redirect).await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "gs-1");
}
