//! Fidelity: the sandbox's bodies have the shapes of the PROVIDERS.md examples (`fixtures/golden/`), every field
//! it emits on a Gmail/Calendar resource is in Google's discovery schema with the right JSON type, every Graph
//! property is a real wire property, and the §13 client-library conventions hold.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_shape(rel: &str, actual: &Value, extra_ok: &[&str]) {
    let errs = common::shape::diff(&golden(rel), actual, extra_ok);
    assert!(errs.is_empty(), "{rel}: {errs:?}\nsandbox sent: {actual}");
}

#[tokio::test]
async fn microsoft_bodies_match_the_golden_fixtures() {
    let t = start().await;
    let tokens = t.ms_tokens("adele@acme.example").await;
    assert_shape("microsoft/token-success.json", &tokens, &[]);
    let (_, refreshed) = t.ms_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("microsoft/token-success.json", &refreshed, &[]);

    let access = s(&tokens["access_token"]).to_string();
    let (_, _, me) = t.api(&access, "/v1.0/me").await;
    assert_shape("microsoft/me.json", &me, &[]);
    let (st, _, missing) = t.api(&access, "/v1.0/users/nobody@acme.example").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_shape("microsoft/graph-error.json", &missing, &[]);

    t.control(
        Method::POST,
        "/_sandbox/faults",
        Some(json!({"fault": {"kind": "throttle"}, "count": 1})),
    )
    .await;
    let (_, _, throttled) = t.api(&access, "/v1.0/me").await;
    assert_shape(
        "microsoft/graph-throttled.json",
        &throttled,
        &["error.innerError"],
    );

    t.control(
        Method::POST,
        "/_sandbox/users/adele@acme.example/revoke-grant",
        None,
    )
    .await;
    let (_, err) = t.ms_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("microsoft/token-error-consent-required.json", &err, &[]);
}

#[tokio::test]
async fn google_bodies_match_the_golden_fixtures() {
    let t = start().await;
    let tokens = t
        .google_tokens(
            "hank@globex.example",
            &format!("openid email {GMAIL_READ} {CAL_EVENTS}"),
        )
        .await;
    assert_shape("google/token-success.json", &tokens, &[]);
    let access = s(&tokens["access_token"]).to_string();

    let plain = t.google_tokens("mindy@globex.example", CAL_READ).await;
    let (_, refreshed) = t.google_refresh(s(&plain["refresh_token"])).await;
    assert_shape("google/refresh-success.json", &refreshed, &[]);

    let (_, _, info) = t
        .api(&access, &format!("/tokeninfo?access_token={access}"))
        .await;
    assert_shape("google/tokeninfo.json", &info, &[]);
    let (_, _, profile) = t.api(&access, "/gmail/v1/users/me/profile").await;
    assert_shape("google/gmail-profile.json", &profile, &[]);

    let (_, _, forbidden) = t.api(&access, "/calendar/v3/calendars/primary").await;
    assert_shape("google/api-error-insufficient-scope.json", &forbidden, &[]);
    let (_, _, unauth) = t.api("ya29.nope", "/gmail/v1/users/me/profile").await;
    assert_shape(
        "google/api-error-unauthenticated.json",
        &unauth,
        &["error.status"],
    );
    let mindy = s(&plain["access_token"]).to_string();
    let (st, _, not_found) = t
        .api(&mindy, "/calendar/v3/calendars/someone-else@globex.example")
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_shape("google/api-error-not-found.json", &not_found, &[]);

    let (_, bad_code) = t.google_redeem("4/0Anope").await;
    assert_shape("google/token-error-bad-code.json", &bad_code, &[]);
    let r = t
        .post_form(
            "/token",
            &[
                ("client_id", hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_ID),
                ("client_secret", "x"),
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
            ],
        )
        .await;
    assert_shape(
        "google/token-error-invalid-client.json",
        &r.json().await.unwrap(),
        &[],
    );

    assert_eq!(
        t.post_form("/revoke", &[("token", s(&tokens["refresh_token"]))])
            .await
            .status(),
        StatusCode::OK
    );
    let (_, revoked) = t.google_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("google/token-error-revoked.json", &revoked, &[]);
    let r = t
        .post_form("/revoke", &[("token", s(&tokens["refresh_token"]))])
        .await;
    assert_shape("google/revoke-error.json", &r.json().await.unwrap(), &[]);
}

#[tokio::test]
async fn gmail_and_calendar_resources_only_use_discovery_fields_with_their_types() {
    let t = start().await;
    let tok = t
        .google_tokens("hank@globex.example", &format!("{GMAIL_READ} {CAL_READ}"))
        .await;
    let access = s(&tok["access_token"]);
    let (_, _, profile) = t.api(access, "/gmail/v1/users/me/profile").await;
    let errs = schema::check_google(schema::gmail(), "Profile", &profile);
    assert!(errs.is_empty(), "{errs:?}");
    assert!(
        profile["historyId"].is_string(),
        "uint64 travels as a string"
    );
    let (_, _, cal) = t.api(access, "/calendar/v3/calendars/primary").await;
    let errs = schema::check_google(schema::calendar(), "Calendar", &cal);
    assert!(errs.is_empty(), "{errs:?}");
}

#[tokio::test]
async fn graph_user_only_uses_real_wire_properties() {
    let t = start().await;
    let tok = t.ms_tokens("adele@acme.example").await;
    let (_, _, me) = t.api(s(&tok["access_token"]), "/v1.0/me").await;
    let errs = schema::check_graph("user", &me);
    assert!(errs.is_empty(), "{errs:?}");
    let (_, _, selected) = t
        .api(s(&tok["access_token"]), "/v1.0/me?$select=displayName,mail")
        .await;
    assert_eq!(selected.as_object().unwrap().len(), 3, "{selected}");
    assert!(s(&selected["@odata.context"]).ends_with("#users(displayName,mail)/$entity"));
}

#[tokio::test]
async fn client_library_conventions_from_section_13_hold() {
    let t = start().await;
    let g = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    // google-api-python-client: alt=json on every call, Content-Length: 0 on GETs.
    let r = t
        .http
        .get(t.url("/gmail/v1/users/me/profile?alt=json"))
        .bearer_auth(s(&g["access_token"]))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Gmail's userId may be the caller's own address.
    assert_eq!(
        t.api(
            s(&g["access_token"]),
            "/gmail/v1/users/hank%40globex.example/profile"
        )
        .await
        .0,
        StatusCode::OK
    );

    let m = t.ms_tokens("adele@acme.example").await;
    let access = s(&m["access_token"]);
    // Links are built from the request's own Host, so the Graph SDK keeps sending its token.
    let r = t
        .http
        .get(t.url("/v1.0/me"))
        .bearer_auth(access)
        .header("host", "graph.sandbox.test:4444")
        .send()
        .await
        .unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!(
        me["@odata.context"],
        "http://graph.sandbox.test:4444/v1.0/$metadata#users/$entity"
    );
    let (_, _, me) = t.api(access, "/v1.0/me").await;
    assert!(s(&me["@odata.context"]).starts_with(&t.base));
    // OData key and function-call forms are routed like their plain forms.
    let (st, _, user) = t.api(access, "/v1.0/users('adele@acme.example')").await;
    assert_eq!(st, StatusCode::OK, "{user}");
    let (_, _, delta) = t
        .api(access, "/v1.0/me/mailFolders('inbox')/messages/delta()")
        .await;
    assert_eq!(
        delta["error"]["message"], "Resource not found for the segment 'delta'.",
        "delta() normalized to delta"
    );
    // Action parameters match case-insensitively (used by sendMail/getSchedule in later issues).
    let body = json!({"Message": {"subject": "x"}});
    assert!(hirewire_sandbox::wire::get_ci(&body, "message").is_some());
    // Telemetry headers are never required; client-request-id is echoed when sent.
    let r = t
        .http
        .get(t.url("/v1.0/me"))
        .bearer_auth(access)
        .header("client-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["client-request-id"], "abc-123");
    assert!(r.headers().contains_key("request-id"));
}
