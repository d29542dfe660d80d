//! Microsoft and Google sign-in flows at the HTTP level: the pages, the redirects and the token endpoints.

mod common;

use common::*;
use hirewire_sandbox::jwt::verify_hs256;
use hirewire_sandbox::{
    DEFAULT_ACME_TENANT_ID, DEFAULT_GOOGLE_CLIENT_SECRET, DEFAULT_INITECH_TENANT_ID,
    DEFAULT_MS_CLIENT_ID, DEFAULT_MS_CLIENT_SECRET,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

// ---------- Microsoft ----------

#[tokio::test]
async fn microsoft_code_flow_with_pkce_returns_tokens_with_short_graph_scopes() {
    let t = start().await;
    let (status, picker) = t
        .get_page(&t.ms_authorize_url("acme.example", MS_SCOPES, &[]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(picker.contains("Pick an account") && picker.contains("adele@acme.example"));
    assert!(
        !picker.contains("hank@globex.example") && !picker.contains("peter@initech.example"),
        "only acme users: {picker}"
    );

    let consent = t
        .post_form(
            &form_action(&picker, "account"),
            &[("user", "adele@acme.example")],
        )
        .await;
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("Permissions requested") && html.contains("Send mail as you"),
        "{html}"
    );
    let q = t.answer(&html, "accept", &[]).await.redirect();
    assert_eq!(q["state"], "s-abc");

    let (st, body) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["scope"],
        "Calendars.ReadWrite Mail.ReadWrite Mail.Send User.Read profile openid email"
    );
    assert_eq!(body["expires_in"], 3599);
    assert!(s(&body["refresh_token"]).len() > 60);
    let claims = verify_hs256(s(&body["id_token"]), DEFAULT_MS_CLIENT_SECRET)
        .expect("id_token signed with the client secret");
    assert_eq!(claims["tid"], DEFAULT_ACME_TENANT_ID);
    assert_eq!(claims["aud"], DEFAULT_MS_CLIENT_ID);
    assert_eq!(claims["nonce"], "n-123");
    assert_eq!(claims["preferred_username"], "adele@acme.example");

    let (st, _, me) = t.api(s(&body["access_token"]), "/v1.0/me").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["mail"], "adele@acme.example");
    assert_eq!(me["displayName"], "Adele Vance");
}

#[tokio::test]
async fn microsoft_codes_are_single_use_and_short_lived() {
    let t = start().await;
    let q = t
        .ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    assert_eq!(t.ms_redeem(&q["code"]).await.0, StatusCode::OK);
    let (st, again) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(again["error"], "invalid_grant");
    assert_eq!(again["error_codes"], json!([54005]));

    // Second sign-in: consent is remembered, so the code comes straight back.
    let q = t
        .ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    t.clock.advance_secs(601);
    let (st, late) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(late["error_codes"], json!([70008]));
}

#[tokio::test]
async fn microsoft_checks_the_pkce_verifier() {
    let t = start().await;
    let q = t
        .ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    let (st, body) = t
        .ms_token(
            "organizations",
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", MS_REDIRECT),
                ("code_verifier", "x".repeat(43).as_str()),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([501481]));
    let (st, body) = t
        .ms_token(
            "organizations",
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", MS_REDIRECT),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn microsoft_refresh_rotates_the_refresh_token_and_the_old_one_keeps_working() {
    let t = start().await;
    let first = t.ms_tokens("adele@acme.example").await;
    let old = s(&first["refresh_token"]).to_string();
    let (st, second) = t.ms_refresh(&old).await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["scope"], first["scope"]);
    let (st, third) = t.ms_refresh(&old).await;
    assert_eq!(st, StatusCode::OK, "old refresh token still works: {third}");

    // A token for another resource from the same refresh token is refused until consented.
    let (st, imap) = t
        .ms_token(
            "organizations",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &old),
                (
                    "scope",
                    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
                ),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(imap["suberror"], "consent_required");
    let (st, multi) = t
        .ms_token(
            "organizations",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &old),
                ("scope", "Mail.Read https://outlook.office.com/SMTP.Send"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(multi["error_codes"], json!([700022]));
}

#[tokio::test]
async fn microsoft_outlook_tokens_are_minted_from_the_same_refresh_token_and_rejected_by_graph() {
    let t = start().await;
    let scope = format!("{MS_SCOPES} https://outlook.office.com/IMAP.AccessAsUser.All");
    let q = t
        .ms_sign_in("organizations", "ben@acme.example", &scope)
        .await;
    let (st, graph) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::OK, "{graph}");
    assert!(
        !s(&graph["scope"]).contains("IMAP"),
        "one resource per token: {graph}"
    );
    let (st, imap) = t
        .ms_token(
            "organizations",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", s(&graph["refresh_token"])),
                (
                    "scope",
                    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
                ),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{imap}");
    assert_eq!(
        imap["scope"],
        "https://outlook.office.com/IMAP.AccessAsUser.All"
    );
    let (st, _, err) = t.api(s(&imap["access_token"]), "/v1.0/me").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test]
async fn microsoft_revoked_consent_gives_65001_consent_required() {
    let t = start().await;
    let tokens = t.ms_tokens("adele@acme.example").await;
    let (st, _) = t
        .control(
            Method::POST,
            "/_sandbox/users/adele@acme.example/revoke-grant",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = t.ms_refresh(s(&tokens["refresh_token"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["suberror"], "consent_required");
    assert!(s(&body["error_description"]).starts_with("AADSTS65001:"));
}

#[tokio::test]
async fn microsoft_password_change_gives_50173_and_idle_refresh_tokens_give_700082() {
    let t = start().await;
    let a = t.ms_tokens("adele@acme.example").await;
    let b = t.ms_tokens("ben@acme.example").await;
    t.control(
        Method::POST,
        "/_sandbox/users/adele@acme.example/password-change",
        None,
    )
    .await;
    let (st, body) = t.ms_refresh(s(&a["refresh_token"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([50173]));
    // Tokens issued after the change work.
    let fresh = t.ms_tokens("adele@acme.example").await;
    assert_eq!(
        t.ms_refresh(s(&fresh["refresh_token"])).await.0,
        StatusCode::OK
    );

    t.clock.advance_secs(91 * 86_400);
    let (st, body) = t.ms_refresh(s(&b["refresh_token"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([700082]));
}

#[tokio::test]
async fn microsoft_client_errors_follow_the_documented_codes() {
    let t = start().await;
    let (st, html) = t
        .get_page(
            &t.ms_authorize_url("organizations", MS_SCOPES, &[])
                .replace(DEFAULT_MS_CLIENT_ID, "99999999-0000-0000-0000-000000000000"),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(html.contains("AADSTS700016"), "{html}");
    let (st, html) = t
        .get_page(
            &t.ms_authorize_url("organizations", MS_SCOPES, &[])
                .replace("8080", "9999"),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(html.contains("AADSTS50011"), "{html}");

    let q = t
        .ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    let r = t
        .post_form(
            "/organizations/oauth2/v2.0/token",
            &[
                ("client_id", DEFAULT_MS_CLIENT_ID),
                ("client_secret", "wrong"),
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", MS_REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    let r = t
        .post_form(
            "/organizations/oauth2/v2.0/token",
            &[
                ("client_id", "nope"),
                ("client_secret", "x"),
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    // HTTP Basic client authentication works too; the redirect URI must match the one the code was sent to.
    let r = t
        .http
        .post(t.url("/organizations/oauth2/v2.0/token"))
        .basic_auth(DEFAULT_MS_CLIENT_ID, Some(DEFAULT_MS_CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            (
                "redirect_uri",
                "http://127.0.0.1:8080/oauth/microsoft/callback",
            ),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([50011]));
}

#[tokio::test]
async fn microsoft_cancel_sends_access_denied_back() {
    let t = start().await;
    let html = match t
        .pick(
            &t.ms_authorize_url("organizations", MS_SCOPES, &[]),
            "ben@acme.example",
        )
        .await
    {
        Outcome::Page(_, h) => h,
        Outcome::Redirect(q) => panic!("{q:?}"),
    };
    let q = t.answer(&html, "cancel", &[]).await.redirect();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_subcode"], "cancel");
    assert_eq!(q["state"], "s-abc");
    assert!(q["error_description"].starts_with("AADSTS65004"));
}

#[tokio::test]
async fn microsoft_tenant_requiring_admin_consent_shows_need_admin_approval_until_an_admin_consents()
 {
    let t = start().await;
    let (_, html) = t
        .pick(
            &t.ms_authorize_url("initech.example", MS_SCOPES, &[]),
            "peter@initech.example",
        )
        .await
        .page();
    assert!(
        html.contains("Need admin approval") && html.contains("AADSTS90094"),
        "{html}"
    );
    let q = match t.post_form(&form_action(&html, "cancel"), &[]).await {
        r if r.status() == StatusCode::FOUND => query_of(&location(&r)),
        r => panic!("{}", r.status()),
    };
    assert_eq!(q["error"], "access_denied");

    // The admin consents for the organization through /adminconsent.
    let ac = format!(
        "/initech.example/v2.0/adminconsent?client_id={DEFAULT_MS_CLIENT_ID}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&redirect_uri={}&state=ac-1",
        url::form_urlencoded::byte_serialize(MS_REDIRECT.as_bytes()).collect::<String>()
    );
    // A non-admin cannot.
    let (_, denied) = t.pick(&ac, "peter@initech.example").await.page();
    assert!(denied.contains("Need admin approval"), "{denied}");
    let (_, consent) = t.pick(&ac, "bill@initech.example").await.page();
    assert!(
        consent.contains("Accept for your organization"),
        "{consent}"
    );
    let q = t.answer(&consent, "accept", &[]).await.redirect();
    assert_eq!(q["admin_consent"], "True");
    assert_eq!(q["tenant"], DEFAULT_INITECH_TENANT_ID);
    assert_eq!(q["state"], "ac-1");
    assert!(
        q["scope"].contains("https://graph.microsoft.com/Mail.Send"),
        "{q:?}"
    );

    // Now Peter signs in without any consent screen.
    let q = t
        .pick(
            &t.ms_authorize_url("initech.example", MS_SCOPES, &[]),
            "peter@initech.example",
        )
        .await
        .redirect();
    let (st, body) = t.ms_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["scope"],
        "Calendars.ReadWrite Mail.ReadWrite Mail.Send User.Read profile openid email"
    );
    let (_, html) = t
        .get_page(&format!(
            "/common/v2.0/adminconsent?client_id={DEFAULT_MS_CLIENT_ID}&scope=x"
        ))
        .await;
    assert!(html.contains("AADSTS90130"), "{html}");
}

#[tokio::test]
async fn microsoft_wrong_tenant_and_unassigned_users_get_their_errors() {
    let t = start().await;
    let (_, html) = t
        .get_page(&t.ms_authorize_url(
            "initech.example",
            MS_SCOPES,
            &[("login_hint", "adele@acme.example")],
        ))
        .await;
    assert!(html.contains("AADSTS50020"), "{html}");

    let (st, _) = t
        .control(
            Method::PUT,
            "/_sandbox/tenants/acme.example/policy",
            Some(json!({
                "user_consent_allowed": true, "assignment_required": true,
                "assignments": {DEFAULT_MS_CLIENT_ID: ["adele@acme.example"]}
            })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, html) = t
        .pick(
            &t.ms_authorize_url("organizations", MS_SCOPES, &[]),
            "ben@acme.example",
        )
        .await
        .page();
    assert!(html.contains("AADSTS50105"), "{html}");
    t.ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
}

#[tokio::test]
async fn microsoft_prompt_none_needs_an_earlier_consent() {
    let t = start().await;
    let silent = t.ms_authorize_url(
        "organizations",
        MS_SCOPES,
        &[("prompt", "none"), ("login_hint", "adele@acme.example")],
    );
    let r = t.http.get(t.url(&silent)).send().await.unwrap();
    assert_eq!(query_of(&location(&r))["error"], "consent_required");
    t.ms_sign_in("organizations", "adele@acme.example", MS_SCOPES)
        .await;
    let r = t.http.get(t.url(&silent)).send().await.unwrap();
    assert!(query_of(&location(&r)).contains_key("code"));
}

// ---------- Google ----------

#[tokio::test]
async fn google_offline_code_flow_returns_refresh_and_id_tokens() {
    let t = start().await;
    let scope = format!("openid email {GMAIL_READ} {CAL_EVENTS}");
    let (_, html) = t
        .pick(
            &t.google_auth_url(&scope, &[("access_type", "offline")]),
            "hank@globex.example",
        )
        .await
        .page();
    assert!(
        html.contains("type=\"checkbox\" name=\"scope\""),
        "granular consent: {html}"
    );
    assert_eq!(html.matches("name=\"scope\"").count(), 2);
    let q = t
        .answer(
            &html,
            "accept",
            &[("scope", GMAIL_READ), ("scope", CAL_EVENTS)],
        )
        .await
        .redirect();
    assert_eq!(q["state"], "g-state");
    assert_eq!(q["hd"], "globex.example");
    assert_eq!(
        q["scope"],
        format!("openid https://www.googleapis.com/auth/userinfo.email {GMAIL_READ} {CAL_EVENTS}")
    );
    let (st, tok) = t.google_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["scope"], q["scope"].as_str());
    assert!(s(&tok["refresh_token"]).starts_with("1//"));
    assert!(s(&tok["access_token"]).starts_with("ya29."));
    let claims = verify_hs256(s(&tok["id_token"]), DEFAULT_GOOGLE_CLIENT_SECRET).unwrap();
    assert_eq!(claims["email"], "hank@globex.example");
    assert_eq!(claims["hd"], "globex.example");

    let access = s(&tok["access_token"]);
    let (st, _, profile) = t.api(access, "/gmail/v1/users/me/profile?alt=json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(profile["emailAddress"], "hank@globex.example");
    let (st, _, info) = t
        .api(access, &format!("/tokeninfo?access_token={access}"))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(info["scope"], tok["scope"]);
    assert_eq!(info["access_type"], "offline");

    let (st, refreshed) = t.google_refresh(s(&tok["refresh_token"])).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        refreshed.get("refresh_token").is_none(),
        "Google does not rotate: {refreshed}"
    );
    assert_eq!(refreshed["scope"], tok["scope"]);
}

#[tokio::test]
async fn google_partial_grant_leaves_the_unticked_scope_out_and_its_api_calls_get_403() {
    let t = start().await;
    let q = t
        .google_sign_in(
            "mindy@globex.example",
            &format!("openid email {GMAIL_READ} {CAL_READ}"),
            &[("access_type", "offline")],
            Some(&[CAL_READ]),
        )
        .await;
    assert!(!q["scope"].contains("gmail"), "{q:?}");
    let (_, tok) = t.google_redeem(&q["code"]).await;
    assert!(!s(&tok["scope"]).contains("gmail") && s(&tok["scope"]).contains("calendar.readonly"));
    let access = s(&tok["access_token"]);
    let (st, headers, err) = t.api(access, "/gmail/v1/users/me/profile").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        err["error"]["errors"][0]["reason"],
        "insufficientPermissions"
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let (st, _, cal) = t.api(access, "/calendar/v3/calendars/primary").await;
    assert_eq!(st, StatusCode::OK, "{cal}");
}

#[tokio::test]
async fn google_sends_a_refresh_token_only_on_first_consent_or_with_prompt_consent() {
    let t = start().await;
    let scope = format!("openid {GMAIL_READ}");
    let first = t
        .google_sign_in(
            "hank@globex.example",
            &scope,
            &[("access_type", "offline")],
            None,
        )
        .await;
    assert!(
        t.google_redeem(&first["code"])
            .await
            .1
            .get("refresh_token")
            .is_some()
    );
    // Everything granted already: no consent page, no refresh token.
    let again = t
        .pick(
            &t.google_auth_url(&scope, &[("access_type", "offline")]),
            "hank@globex.example",
        )
        .await
        .redirect();
    assert_eq!(again["prompt"], "none");
    assert!(
        t.google_redeem(&again["code"])
            .await
            .1
            .get("refresh_token")
            .is_none()
    );
    let forced = t
        .google_sign_in(
            "hank@globex.example",
            &scope,
            &[("access_type", "offline"), ("prompt", "consent")],
            None,
        )
        .await;
    assert!(
        t.google_redeem(&forced["code"])
            .await
            .1
            .get("refresh_token")
            .is_some()
    );
}

#[tokio::test]
async fn google_include_granted_scopes_returns_the_union_with_earlier_grants() {
    let t = start().await;
    let q = t
        .google_sign_in(
            "hank@globex.example",
            CAL_EVENTS,
            &[("access_type", "offline")],
            None,
        )
        .await;
    assert_eq!(q["scope"], CAL_EVENTS);
    let q = t
        .google_sign_in(
            "hank@globex.example",
            GMAIL_READ,
            &[("include_granted_scopes", "true")],
            None,
        )
        .await;
    assert_eq!(q["scope"], format!("{CAL_EVENTS} {GMAIL_READ}"));
    let (_, tok) = t.google_redeem(&q["code"]).await;
    assert_eq!(tok["scope"], format!("{CAL_EVENTS} {GMAIL_READ}"));
    let q = t
        .google_sign_in("hank@globex.example", GMAIL_READ, &[], None)
        .await;
    assert_eq!(q["scope"], GMAIL_READ);
}

#[tokio::test]
async fn google_revoke_kills_every_token_of_the_user_and_client() {
    let t = start().await;
    let inbox = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    let calendar = t
        .google_tokens("hank@globex.example", &format!("{CAL_READ} {GMAIL_READ}"))
        .await;
    let r = t
        .post_form("/revoke", &[("token", s(&inbox["access_token"]))])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for tok in [&inbox, &calendar] {
        let (st, body) = t.google_refresh(s(&tok["refresh_token"])).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        );
        assert_eq!(
            t.api(s(&tok["access_token"]), "/calendar/v3/calendars/primary")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = t
        .post_form("/revoke", &[("token", s(&calendar["refresh_token"]))])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The next sign-in is a first consent again, so a refresh token comes back.
    let q = t
        .google_sign_in(
            "hank@globex.example",
            GMAIL_READ,
            &[("access_type", "offline")],
            None,
        )
        .await;
    assert!(
        t.google_redeem(&q["code"])
            .await
            .1
            .get("refresh_token")
            .is_some()
    );
}

#[tokio::test]
async fn google_password_change_and_testing_mode_expire_refresh_tokens() {
    let t = start().await;
    let tok = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    t.control(
        Method::POST,
        "/_sandbox/users/hank@globex.example/password-change",
        None,
    )
    .await;
    let (st, body) = t.google_refresh(s(&tok["refresh_token"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "Token has been expired or revoked."
    );

    let tok = t.google_tokens("mindy@globex.example", GMAIL_READ).await;
    t.sb.write(|st| st.clients.iter_mut().for_each(|c| c.testing_mode = true));
    assert_eq!(
        t.google_refresh(s(&tok["refresh_token"])).await.0,
        StatusCode::OK
    );
    t.clock.advance_secs(8 * 86_400);
    assert_eq!(
        t.google_refresh(s(&tok["refresh_token"])).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn google_client_and_code_errors_follow_the_documented_shapes() {
    let t = start().await;
    let (st, html) = t
        .get_page(
            &t.google_auth_url(GMAIL_READ, &[])
                .replace("1234567890-sandbox", "nobody"),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(html.contains("invalid_client"));
    let (st, html) = t
        .get_page(&t.google_auth_url(GMAIL_READ, &[]).replace("8080", "8081"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(html.contains("redirect_uri_mismatch"));

    let (_, html) = t
        .pick(
            &t.google_auth_url(&format!("{GMAIL_READ} {CAL_EVENTS}"), &[]),
            "hank@globex.example",
        )
        .await
        .page();
    let q = t.answer(&html, "cancel", &[]).await.redirect();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "g-state");

    let q = t
        .google_sign_in("hank@globex.example", GMAIL_READ, &[], None)
        .await;
    let r = t
        .post_form(
            "/token",
            &[
                ("client_id", hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_ID),
                ("client_secret", "bad"),
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let (st, body) = t
        .google_token(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", GOOGLE_REDIRECT),
            ("code_verifier", "y".repeat(43).as_str()),
        ])
        .await;
    assert_eq!(
        (st, s(&body["error"])),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(t.google_redeem(&q["code"]).await.0, StatusCode::OK);
    let (st, body) = t.google_redeem(&q["code"]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Bad Request"})
    );
}

#[tokio::test]
async fn google_admin_policy_blocks_a_client_on_the_page() {
    let t = start().await;
    t.control(
        Method::PUT,
        "/_sandbox/domains/globex.example/policy",
        Some(json!({"blocked_clients": [hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_ID]})),
    )
    .await;
    let (st, html) = t
        .pick(&t.google_auth_url(GMAIL_READ, &[]), "hank@globex.example")
        .await
        .page();
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(html.contains("admin_policy_enforced"));
}
