//! Faults switched at runtime through the control API, quota accounting, counters, and the rest of the
//! control API (clients, users, grants, persistence).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hirewire_sandbox::{DEFAULT_MS_CLIENT_ID, SandboxConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn arm(t: &Ctx, spec: Value) -> u64 {
    let (st, rule) = t
        .control(Method::POST, "/_sandbox/faults", Some(spec))
        .await;
    assert_eq!(st, StatusCode::OK, "{rule}");
    rule["id"].as_u64().unwrap()
}

async fn graph_token(t: &Ctx, user: &str) -> String {
    s(&t.ms_tokens(user).await["access_token"]).to_string()
}

async fn google_token(t: &Ctx, user: &str) -> String {
    s(&t.google_tokens(user, &format!("{GMAIL_READ} {CAL_READ}"))
        .await["access_token"])
    .to_string()
}

#[tokio::test]
async fn graph_throttling_fault_gives_429_application_throttled_with_retry_after_then_clears() {
    let t = start().await;
    let tok = graph_token(&t, "adele@acme.example").await;
    arm(&t, json!({"endpoint": "graph.*", "fault": {"kind": "throttle", "retry_after_secs": 7}, "count": 2})).await;
    for _ in 0..2 {
        let (st, h, body) = t.api(&tok, "/v1.0/me").await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h["retry-after"], "7");
        assert_eq!(body["error"]["code"], "ApplicationThrottled");
        assert_eq!(
            body["error"]["message"],
            "Application is over its MailboxConcurrency limit."
        );
    }
    assert_eq!(t.api(&tok, "/v1.0/me").await.0, StatusCode::OK);
    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["endpoints"]["graph.me"]["requests"], 3);
    assert_eq!(c["endpoints"]["graph.me"]["faulted"], 2);
    assert_eq!(
        c["endpoints"]["graph.me"]["by_user"]["adele@acme.example"],
        3
    );
}

#[tokio::test]
async fn gmail_throttling_faults_apply_per_user() {
    let t = start().await;
    let hank = google_token(&t, "hank@globex.example").await;
    let mindy = google_token(&t, "mindy@globex.example").await;
    let id = arm(&t, json!({"endpoint": "gmail.users.getProfile", "user": "hank@globex.example", "fault": {"kind": "throttle"}})).await;
    let (st, _, body) = t.api(&hank, "/gmail/v1/users/me/profile").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(
        body["error"]["message"],
        "Too many concurrent requests for user."
    );
    assert_eq!(
        t.api(&mindy, "/gmail/v1/users/me/profile").await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.api(&hank, "/calendar/v3/calendars/primary").await.0,
        StatusCode::OK
    );

    let (st, _) = t
        .control(Method::DELETE, &format!("/_sandbox/faults/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    arm(
        &t,
        json!({"endpoint": "gmail.*", "fault": {"kind": "user_rate_limit"}, "count": 1}),
    )
    .await;
    let (st, _, body) = t.api(&hank, "/gmail/v1/users/me/profile").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
    assert_eq!(body["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(
        t.api(&hank, "/gmail/v1/users/me/profile").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn server_error_bursts_end_after_their_count() {
    let t = start().await;
    let tok = google_token(&t, "hank@globex.example").await;
    arm(&t, json!({"endpoint": "calendar.*", "fault": {"kind": "server_error", "status": 503, "retry_after_secs": 2}, "count": 2})).await;
    for _ in 0..2 {
        let (st, h, body) = t.api(&tok, "/calendar/v3/calendars/primary").await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h["retry-after"], "2");
        assert_eq!(body["error"]["errors"][0]["reason"], "backendError");
    }
    assert_eq!(
        t.api(&tok, "/calendar/v3/calendars/primary").await.0,
        StatusCode::OK
    );

    let g = graph_token(&t, "adele@acme.example").await;
    arm(
        &t,
        json!({"fault": {"kind": "server_error", "status": 500}, "count": 1}),
    )
    .await;
    let (st, _, body) = t.api(&g, "/v1.0/me").await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "generalException");
    let (st, _) = t
        .control(
            Method::POST,
            "/_sandbox/faults",
            Some(json!({"fault": {"kind": "server_error", "status": 404}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn slow_responses_wait_the_configured_delay() {
    let t = start().await;
    let tok = graph_token(&t, "adele@acme.example").await;
    let started = Instant::now();
    assert_eq!(t.api(&tok, "/v1.0/me").await.0, StatusCode::OK);
    let fast = started.elapsed();
    arm(
        &t,
        json!({"endpoint": "graph.me", "fault": {"kind": "delay", "millis": 120}, "count": 1}),
    )
    .await;
    let started = Instant::now();
    assert_eq!(t.api(&tok, "/v1.0/me").await.0, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "{:?} vs {fast:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn revoked_grant_faults_give_each_documented_invalid_grant() {
    let t = start().await;
    let ms = t.ms_tokens("adele@acme.example").await;
    let rt = s(&ms["refresh_token"]).to_string();
    for (reason, code) in [
        ("consent_required", 65001),
        ("sessions_revoked", 50173),
        ("inactive", 700082),
        ("expired", 70008),
    ] {
        arm(&t, json!({"endpoint": "ms.token", "fault": {"kind": "invalid_grant", "reason": reason}, "count": 1})).await;
        let (st, body) = t.ms_refresh(&rt).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_codes"], json!([code]));
        assert_eq!(body.get("suberror").is_some(), code == 65001, "{body}");
    }
    assert_eq!(t.ms_refresh(&rt).await.0, StatusCode::OK);

    let g = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    arm(
        &t,
        json!({"user": "hank@globex.example", "fault": {"kind": "invalid_grant"}, "count": 1}),
    )
    .await;
    let (st, body) = t.google_refresh(s(&g["refresh_token"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "Token has been expired or revoked."
    );
    assert_eq!(
        t.google_refresh(s(&g["refresh_token"])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn invalid_token_fault_gives_401_in_each_api_shape() {
    let t = start().await;
    let g = graph_token(&t, "adele@acme.example").await;
    let gg = google_token(&t, "hank@globex.example").await;
    arm(&t, json!({"fault": {"kind": "invalid_token"}, "count": 2})).await;
    let (st, h, body) = t.api(&g, "/v1.0/me").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(h.contains_key("request-id"));
    let (st, _, body) = t.api(&gg, "/gmail/v1/users/me/profile").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
}

#[tokio::test]
async fn identity_endpoints_can_be_throttled_too() {
    let t = start().await;
    let g = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    arm(
        &t,
        json!({"endpoint": "google.token", "fault": {"kind": "throttle"}, "count": 1}),
    )
    .await;
    assert_eq!(
        t.google_refresh(s(&g["refresh_token"])).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    arm(
        &t,
        json!({"endpoint": "ms.authorize", "fault": {"kind": "server_error"}, "count": 1}),
    )
    .await;
    let (st, _) = t
        .get_page(&t.ms_authorize_url("organizations", MS_SCOPES, &[]))
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let (_, faults) = t.control(Method::GET, "/_sandbox/faults", None).await;
    assert_eq!(faults, json!([]), "counted faults disarm themselves");
}

#[tokio::test]
async fn gmail_quota_is_charged_per_user_per_minute() {
    let t = start().await;
    let hank = google_token(&t, "hank@globex.example").await;
    let mindy = google_token(&t, "mindy@globex.example").await;
    let (st, settings) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"gmail_units_per_user_per_minute": 3})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{settings}");
    for _ in 0..3 {
        assert_eq!(
            t.api(&hank, "/gmail/v1/users/me/profile").await.0,
            StatusCode::OK
        );
    }
    let (st, _, body) = t.api(&hank, "/gmail/v1/users/me/profile").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(
        t.api(&mindy, "/gmail/v1/users/me/profile").await.0,
        StatusCode::OK
    );
    t.clock.advance_secs(60);
    assert_eq!(
        t.api(&hank, "/gmail/v1/users/me/profile").await.0,
        StatusCode::OK
    );
    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["gmail_units"]["hank@globex.example"], 4);
    assert_eq!(c["endpoints"]["gmail.users.getProfile"]["throttled"], 1);

    // Costs follow the model; the 2026 model makes messages.get four times dearer.
    let (_, s2) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"gmail_quota_model": "2026", "gmail_units_per_user_per_minute": null})),
        )
        .await;
    assert_eq!(s2["gmail_quota_model"], "2026");
    let settings: hirewire_sandbox::Settings = serde_json::from_value(s2).unwrap();
    assert_eq!(settings.gmail_cost("gmail.users.messages.get"), 20);
    assert_eq!(settings.gmail_user_budget(), 6000);
    assert_eq!(
        hirewire_sandbox::Settings::default().gmail_cost("gmail.users.messages.get"),
        5
    );
}

#[tokio::test]
async fn graph_allows_only_four_concurrent_requests_per_mailbox_once_quotas_are_on() {
    let t = start().await;
    let (st, _) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"quotas": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let adele = graph_token(&t, "adele@acme.example").await;
    let ben = graph_token(&t, "ben@acme.example").await;
    arm(
        &t,
        json!({"endpoint": "graph.me", "fault": {"kind": "delay", "millis": 150}}),
    )
    .await;
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (http, url, tok) = (t.http.clone(), t.url("/v1.0/me"), adele.clone());
        calls.push(tokio::spawn(async move {
            http.get(url).bearer_auth(tok).send().await.unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another mailbox has its own slots.
    assert_eq!(t.api(&ben, "/v1.0/me").await.0, StatusCode::OK);
    let mut ok = 0;
    let mut throttled = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(r.headers().contains_key("retry-after"));
                let b: Value = r.json().await.unwrap();
                assert_eq!(b["error"]["code"], "ApplicationThrottled");
                throttled += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!((ok, throttled), (4, 2));
    // Slots are given back.
    t.control(Method::DELETE, "/_sandbox/faults", None).await;
    assert_eq!(t.api(&adele, "/v1.0/me").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_control_api_registers_clients_adds_users_and_lists_grants() {
    let t = start().await;
    let (st, client) = t.control(Method::POST, "/_sandbox/clients", Some(json!({"provider": "microsoft", "redirect_uris": ["http://app.test/cb"], "name": "Other app"}))).await;
    assert_eq!(st, StatusCode::OK, "{client}");
    let (st, user) = t.control(Method::POST, "/_sandbox/users", Some(json!({"tenant": "acme.example", "email": "new@acme.example", "display_name": "New Person"}))).await;
    assert_eq!(st, StatusCode::OK, "{user}");
    assert_eq!(user["given_name"], "New");
    let (st, _) = t
        .control(
            Method::POST,
            "/_sandbox/users",
            Some(json!({"tenant": "nowhere.example", "email": "x@y", "display_name": "X"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let url = t
        .ms_authorize_url("acme.example", MS_SCOPES, &[])
        .replace(DEFAULT_MS_CLIENT_ID, s(&client["client_id"]))
        .replace(
            &url::form_urlencoded::byte_serialize(MS_REDIRECT.as_bytes()).collect::<String>(),
            "http%3A%2F%2Fapp.test%2Fcb",
        );
    let (_, html) = t.pick(&url, "new@acme.example").await.page();
    assert!(html.contains("Other app"));
    let q = t.answer(&html, "accept", &[]).await.redirect();
    let r = t
        .post_form(
            "/acme.example/oauth2/v2.0/token",
            &[
                ("client_id", s(&client["client_id"])),
                ("client_secret", s(&client["client_secret"])),
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", "http://app.test/cb"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let (_, grants) = t.control(Method::GET, "/_sandbox/grants", None).await;
    let g = grants["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["user"] == "new@acme.example")
        .unwrap();
    assert!(
        g["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("Mail.Send"))
    );
    assert_eq!(grants["refresh_tokens"].as_array().unwrap().len(), 1);
    assert!(
        grants["access_tokens"][0]["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("Calendars.ReadWrite"))
    );

    // Removing one permission from the grant is seen on the next refresh.
    t.control(
        Method::POST,
        "/_sandbox/users/new@acme.example/revoke-grant",
        Some(json!({"scopes": ["Mail.Send"]})),
    )
    .await;
    let rt = s(&grants["refresh_tokens"][0]["token"]).to_string();
    let r = t
        .post_form(
            "/organizations/oauth2/v2.0/token",
            &[
                ("client_id", s(&client["client_id"])),
                ("client_secret", s(&client["client_secret"])),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
            ],
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["suberror"],
        "consent_required"
    );
    let r = t
        .post_form(
            "/organizations/oauth2/v2.0/token",
            &[
                ("client_id", s(&client["client_id"])),
                ("client_secret", s(&client["client_secret"])),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("scope", "User.Read Mail.ReadWrite"),
            ],
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["scope"],
        "Mail.ReadWrite User.Read"
    );
}

#[tokio::test]
async fn grants_survive_a_restart_with_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    let t = start_with(cfg.clone()).await;
    let ms = t.ms_tokens("adele@acme.example").await;
    let g = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    t.sb.shutdown().await;
    assert!(dir.path().join(hirewire_sandbox::STATE_FILE).exists());

    let t = start_with(cfg).await;
    assert_eq!(
        t.ms_refresh(s(&ms["refresh_token"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.google_refresh(s(&g["refresh_token"])).await.0,
        StatusCode::OK
    );
    // Consent is remembered: the next sign-in goes straight back with a code.
    assert!(
        t.pick(
            &t.ms_authorize_url("organizations", MS_SCOPES, &[]),
            "adele@acme.example"
        )
        .await
        .redirect()
        .contains_key("code")
    );
}

#[tokio::test]
async fn the_clock_can_be_advanced_through_the_control_api() {
    let t = start().await;
    let q = t
        .ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    let (st, clock) = t
        .control(
            Method::POST,
            "/_sandbox/clock/advance",
            Some(json!({"seconds": 3600})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(clock["rfc3339"], "2026-11-27T10:00:00Z");
    assert_eq!(
        t.ms_redeem(&q["code"]).await.1["error_codes"],
        json!([70008])
    );
}
