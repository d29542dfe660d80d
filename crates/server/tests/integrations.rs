//! Email & calendar authorization through the sandbox's real consent pages, at
//! HTTP level on both storage backends.

use hirewire_server::testing::{ADMIN, Answer, Landing, RECRUITER, TestApp, World, hidden_csrf};
use hirewire_store::testing::TestDb;
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, ConsentState, GrantStatus, both_backends,
};
use reqwest::Method;
use serde_json::{Value, json};

const GMAIL_READ: &str = "https://www.googleapis.com/auth/gmail.readonly";

async fn page(client: &reqwest::Client, url: String) -> (u16, String) {
    let res = client.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Follows the provider's redirect back into hirewire with the recruiter's browser.
async fn come_back(world: &World, client: &reqwest::Client, landing: Landing) -> (u16, String) {
    match landing {
        Landing::Redirect(url) => {
            assert!(url.starts_with(&world.app.url), "back to hirewire: {url}");
            page(client, url).await
        }
        Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
    }
}

async fn counter(world: &World, endpoint: &str) -> u64 {
    let c = world.control(Method::GET, "/_sandbox/counters", None).await;
    c["endpoints"][endpoint]["requests"].as_u64().unwrap_or(0)
}

async fn setup(world: &World, provider: &str) -> (hirewire_domain::ids::OrgId, reqwest::Client) {
    let org = world.app.org("Acme Talent", &["acme.example"]).await;
    world
        .app
        .user(org, "admin@acme.example", ADMIN, "admin-password")
        .await;
    world
        .app
        .user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    world
        .use_provider(org, provider, None, AccessLevelSetting::SendAndView)
        .await;
    let client = world
        .app
        .signed_in("riley@acme.example", "riley-password")
        .await;
    (org, client)
}

both_backends! {
    async fn microsoft_inbox_and_calendar_are_authorized_shown_and_deauthorized_without_a_revoke_call(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "microsoft").await;
        for (kind, path) in [("inbox", "/settings/email-calendar/inbox/authorize"), ("calendar", "/settings/email-calendar/calendar/authorize")] {
            let landing = world.authorize(&client, path, &[], "adele@acme.example", Answer::AcceptAll).await;
            let (status, body) = come_back(&world, &client, landing).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("data-code=\"authorized\""), "{body}");
            assert!(body.contains(&format!("id=\"address-{kind}\">adele@acme.example<")), "the synced address comes from the provider");
        }
        let grants = world.app.store.org_grants(world.app.store.org_by_name("Acme Talent").await.unwrap().unwrap().id).await.unwrap();
        assert_eq!(grants.len(), 2);
        assert!(grants.iter().all(|g| g.status == GrantStatus::Active && g.refresh_token_sealed.is_some()));

        let csrf = hidden_csrf(&page(&client, world.app.at("/settings/email-calendar")).await.1).unwrap();
        let res = client.post(world.app.at("/settings/email-calendar/inbox/deauthorize")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
        let body = res.text().await.unwrap();
        assert!(body.contains("Your inbox is disconnected") && body.contains("myaccount.microsoft.com"), "{body}");
        assert!(!body.contains("id=\"address-inbox\""));
        assert!(body.contains("id=\"address-calendar\""), "the calendar stays connected");
        assert_eq!(counter(&world, "google.revoke").await, 0);
    }

    async fn google_revokes_only_when_no_other_capability_still_uses_the_grant(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "google").await;
        for path in ["/settings/email-calendar/inbox/authorize", "/settings/email-calendar/calendar/authorize"] {
            let landing = world.authorize(&client, path, &[], "hank@globex.example", Answer::AcceptAll).await;
            let (_, body) = come_back(&world, &client, landing).await;
            assert!(body.contains("data-code=\"authorized\""), "{body}");
            assert!(body.contains(">hank@globex.example<"));
        }
        let deauth = |kind: &'static str| {
            let client = client.clone();
            let url = world.app.at(&format!("/settings/email-calendar/{kind}/deauthorize"));
            let settings = world.app.at("/settings/email-calendar");
            async move {
                let csrf = hidden_csrf(&client.get(settings).send().await.unwrap().text().await.unwrap()).unwrap();
                client.post(url).form(&[("_csrf", csrf.as_str())]).send().await.unwrap().text().await.unwrap()
            }
        };
        let body = deauth("inbox").await;
        assert!(body.contains("Google keeps hirewire listed"), "{body}");
        assert_eq!(counter(&world, "google.revoke").await, 0, "the calendar still uses the grant");
        let body = deauth("calendar").await;
        assert!(body.contains("revoked at Google"), "{body}");
        assert_eq!(counter(&world, "google.revoke").await, 1);
    }

    async fn a_partial_google_grant_is_not_activated_and_the_retry_asks_only_for_the_missing_scopes(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "google").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "hank@globex.example", Answer::Tick(&[GMAIL_READ])).await;
        let (status, body) = come_back(&world, &client, landing).await;
        assert_eq!(status, 400);
        assert!(body.contains("data-code=\"missing_permissions\"") && body.contains("gmail.send"), "{body}");
        assert!(!body.contains("id=\"address-inbox\""), "nothing was activated");
        // The retry form asks only for what is missing, on top of the earlier grant.
        let only = body.split("name=\"only\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        assert!(only.contains("gmail.send") && !only.contains("gmail.readonly"), "{only}");
        let csrf = hidden_csrf(&body).unwrap();
        let res = client.post(world.app.at("/settings/email-calendar/inbox/authorize")).form(&[("_csrf", csrf.as_str()), ("only", only.as_str())]).send().await.unwrap();
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("include_granted_scopes=true"));
        assert!(!location.contains("gmail.readonly"), "only the missing scope is requested: {location}");
        let landing = world.walk(&location, "hank@globex.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &client, landing).await;
        assert!(body.contains("data-code=\"authorized\""), "{body}");
    }

    async fn a_cancelled_consent_explains_itself_and_stores_nothing(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::Cancel).await;
        let (status, body) = come_back(&world, &client, landing).await;
        assert_eq!(status, 400);
        assert!(body.contains("data-code=\"access_denied\""), "{body}");
        assert!(world.app.store.org_grants(org).await.unwrap().is_empty());
    }

    async fn admin_consent_is_needed_then_recorded_and_then_recruiters_get_through(db: TestDb) {
        let world = World::start(&db).await;
        let org = world.app.org("Initech Hiring", &["initech.example"]).await;
        world.app.user(org, "bill@initech.example", ADMIN, "admin-password").await;
        world.app.user(org, "peter@initech.example", RECRUITER, "peter-password").await;
        world.use_provider(org, "microsoft", Some("initech.example"), AccessLevelSetting::SendAndView).await;
        let peter = world.app.signed_in("peter@initech.example", "peter-password").await;
        match world.authorize(&peter, "/settings/email-calendar/inbox/authorize", &[], "peter@initech.example", Answer::AcceptAll).await {
            Landing::Page(_, html) => assert!(html.contains("Need admin approval"), "{html}"),
            other => panic!("expected the approval page, got {other:?}"),
        }
        // The admin grants consent from Admin settings > Email provider.
        let admin = world.app.signed_in("bill@initech.example", "admin-password").await;
        let (_, body) = page(&admin, world.app.at("/admin/email-provider")).await;
        assert!(body.contains("id=\"grant-admin-consent\""));
        let csrf = hidden_csrf(&body).unwrap();
        let res = admin.post(world.app.at("/admin/email-provider/consent")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("/adminconsent"));
        let landing = world.walk(&location, "bill@initech.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &admin, landing).await;
        assert!(body.contains("Admin consent for Microsoft 365 is recorded"), "{body}");
        let settings = world.app.store.provider_settings(org).await.unwrap().unwrap();
        assert_eq!(settings.consent_state, ConsentState::Recorded);
        assert!(settings.consent_by.is_some() && settings.consent_at.is_some(), "who and when");
        let landing = world.authorize(&peter, "/settings/email-calendar/inbox/authorize", &[], "peter@initech.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &peter, landing).await;
        assert!(body.contains("data-code=\"authorized\""), "{body}");
    }

    async fn a_revoked_grant_becomes_needs_reauthorization_on_refresh_and_others_keep_working(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        for path in ["/settings/email-calendar/inbox/authorize", "/settings/email-calendar/calendar/authorize"] {
            let landing = world.authorize(&client, path, &[], "adele@acme.example", Answer::AcceptAll).await;
            come_back(&world, &client, landing).await;
        }
        let riley = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("riley@acme.example")).await.unwrap().unwrap();
        // Fresh tokens are used as they are.
        hirewire_server::integrations::access_token(&world.app.state, riley.id, CapabilityKind::Inbox).await.unwrap();
        assert_eq!(counter(&world, "ms.token").await, 2, "no refresh while the token is fresh");
        world.control(Method::POST, "/_sandbox/users/adele@acme.example/revoke-grant", Some(json!({}))).await;
        world.app.clock.advance(jiff::SignedDuration::from_hours(2));
        let err = hirewire_server::integrations::access_token(&world.app.state, riley.id, CapabilityKind::Inbox).await.unwrap_err();
        assert_eq!(err.code(), "needs_reauthorization");
        let inbox = world.app.store.grant(riley.id, CapabilityKind::Inbox).await.unwrap().unwrap();
        assert_eq!(inbox.status, GrantStatus::NeedsReauth);
        let (_, body) = page(&client, world.app.at("/settings/email-calendar")).await;
        assert!(body.contains("id=\"row-inbox\" data-status=\"needs_reauth\""), "{body}");
        assert!(body.contains("id=\"authorize-inbox\">Reauthorize<"));
        // Another org's grant is untouched.
        let _ = org;
        let calendar = world.app.store.grant(riley.id, CapabilityKind::Calendar).await.unwrap().unwrap();
        assert_eq!(calendar.status, GrantStatus::Active, "only the grant that failed changes");
    }

    async fn two_instances_refreshing_one_grant_at_once_refresh_it_once(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "microsoft").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        come_back(&world, &client, landing).await;
        let riley = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("riley@acme.example")).await.unwrap().unwrap();
        let second_store = db.open_another().await.unwrap();
        let second = hirewire_server::AppState::new(
            world.app.state.config.clone(),
            second_store,
            world.app.state.keyring.clone(),
            std::sync::Arc::new(world.app.clock.clone()),
        );
        world.app.clock.advance(jiff::SignedDuration::from_hours(2));
        let before = counter(&world, "ms.token").await;
        let (a, b) = tokio::join!(
            hirewire_server::integrations::access_token(&world.app.state, riley.id, CapabilityKind::Inbox),
            hirewire_server::integrations::access_token(&second, riley.id, CapabilityKind::Inbox),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.expose(), b.expose(), "both instances use the one refreshed token");
        assert_eq!(counter(&world, "ms.token").await - before, 1, "one refresh at the provider");
    }

    async fn oauth_state_is_single_use_bound_to_the_session_and_expires(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "microsoft").await;
        let Landing::Redirect(url) = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await else { panic!() };
        // Another user's session gets the callback: refused, and the state is spent.
        let org = world.app.store.org_by_name("Acme Talent").await.unwrap().unwrap().id;
        world.app.user(org, "sam@acme.example", RECRUITER, "sam-password").await;
        let sam = world.app.signed_in("sam@acme.example", "sam-password").await;
        let (status, body) = page(&sam, url.clone()).await;
        assert_eq!(status, 400);
        assert!(body.contains("data-code=\"invalid_state\"") && body.contains("another signed-in session"), "{body}");
        // Replayed (also covers a reused code): refused.
        let (_, body) = page(&client, url.clone()).await;
        assert!(body.contains("already used"), "{body}");
        // Tampered and missing.
        let tampered = url.replace("state=", "state=x");
        assert!(page(&client, tampered).await.1.contains("hirewire did not start it"));
        let without: String = url.split('&').filter(|p| !p.starts_with("state=")).collect::<Vec<_>>().join("&");
        assert!(page(&client, without).await.1.contains("carried no state"));
        // Expired: 10 minutes.
        let Landing::Redirect(url) = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await else { panic!() };
        world.app.clock.advance(jiff::SignedDuration::from_mins(11));
        assert!(page(&client, url).await.1.contains("longer than 10 minutes"));
        let riley = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("riley@acme.example")).await.unwrap().unwrap();
        assert!(world.app.store.grant(riley.id, CapabilityKind::Inbox).await.unwrap().is_none(), "nothing was stored");
    }

    async fn lowering_the_access_level_keeps_grants_serving_what_is_still_allowed(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        come_back(&world, &client, landing).await;
        let status_of = |body: &str| body.split("id=\"row-inbox\" data-status=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        for (level, expected) in [(AccessLevelSetting::ViewOnly, "active"), (AccessLevelSetting::Off, "waiting_admin"), (AccessLevelSetting::SendAndView, "active")] {
            let mut s = world.app.store.provider_settings(org).await.unwrap().unwrap();
            s.access_level = level;
            world.app.store.save_provider_settings(&s).await.unwrap();
            let (_, body) = page(&client, world.app.at("/settings/email-calendar")).await;
            assert_eq!(status_of(&body), expected, "{level:?}");
        }
        // A grant made under View only asks to reauthorize once sending is allowed.
        let mut s = world.app.store.provider_settings(org).await.unwrap().unwrap();
        s.access_level = AccessLevelSetting::ViewOnly;
        world.app.store.save_provider_settings(&s).await.unwrap();
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &client, landing).await;
        assert!(body.contains("data-code=\"authorized\""));
        s.access_level = AccessLevelSetting::SendAndView;
        world.app.store.save_provider_settings(&s).await.unwrap();
        let (_, body) = page(&client, world.app.at("/settings/email-calendar")).await;
        assert_eq!(status_of(&body), "active");
        assert!(body.contains("Reauthorize to keep everything working") && body.contains("id=\"authorize-inbox\">Reauthorize<"), "{body}");
    }

    async fn the_admin_page_shows_redirect_uris_and_confirms_risky_changes(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        come_back(&world, &client, landing).await;
        let admin = world.app.signed_in("admin@acme.example", "admin-password").await;
        let (status, body) = page(&admin, world.app.at("/admin/email-provider")).await;
        assert_eq!(status, 200);
        assert!(body.contains(&world.app.at("/oauth/microsoft/callback")) && body.contains(&world.app.at("/oauth/google/callback")));
        assert!(!body.contains(&world.microsoft.1), "the client secret is never shown");
        let csrf = hidden_csrf(&body).unwrap();
        let form = |provider: &'static str, level: &'static str| vec![("_csrf", csrf.clone()), ("provider", provider.into()), ("client_id", world.google.0.clone()), ("client_secret", world.google.1.clone()), ("tenant", String::new()), ("access_level", level.into())];
        // Switching provider asks first and changes nothing until confirmed.
        let res = admin.post(world.app.at("/admin/email-provider")).form(&form("google", "send_and_view")).send().await.unwrap();
        let body = res.text().await.unwrap();
        assert!(body.contains("id=\"confirm-change\"") && body.contains("1 grant(s) made with microsoft stop working"), "{body}");
        assert!(!body.contains(&world.google.1), "the secret just entered is not echoed into the page");
        assert_eq!(world.app.store.provider_settings(org).await.unwrap().unwrap().provider.as_str(), "microsoft");
        let mut confirmed = form("google", "send_and_view");
        confirmed.push(("confirm", "yes".into()));
        let res = admin.post(world.app.at("/admin/email-provider")).form(&confirmed).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let (_, body) = page(&client, world.app.at("/settings/email-calendar")).await;
        assert!(body.contains("now uses Google Workspace") || body.contains("switched to Google Workspace"), "{body}");
        let (_, body) = page(&admin, world.app.at("/admin/email-provider")).await;
        assert!(body.contains(&world.google.0) && body.contains("gmail.readonly"), "Google: client id and scopes to trust");
        // Bad input: a clear inline error, nothing saved.
        let res = admin.post(world.app.at("/admin/email-provider")).form(&[("_csrf", csrf.as_str()), ("provider", "yahoo"), ("access_level", "off")]).send().await.unwrap();
        assert_eq!(res.status(), 422);
        assert!(res.text().await.unwrap().contains("id=\"form-error\""));
        let recruiter_res = client.post(world.app.at("/admin/email-provider")).form(&[("_csrf", "x")]).send().await.unwrap();
        assert_eq!(recruiter_res.status(), 400);
        let (status, _) = page(&client, world.app.at("/admin/email-provider")).await;
        assert_eq!(status, 403);
    }

    async fn no_issued_token_is_stored_in_plaintext(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "google").await;
        for path in ["/settings/email-calendar/inbox/authorize", "/settings/email-calendar/calendar/authorize"] {
            let landing = world.authorize(&client, path, &[], "hank@globex.example", Answer::AcceptAll).await;
            come_back(&world, &client, landing).await;
        }
        let issued = world.control(Method::GET, "/_sandbox/grants", None).await;
        let mut secrets: Vec<String> = Vec::new();
        for list in ["refresh_tokens", "access_tokens"] {
            for t in issued[list].as_array().unwrap() {
                secrets.push(t["token"].as_str().or_else(|| t["value"].as_str()).expect("token value").to_owned());
            }
        }
        secrets.push(world.google.1.clone());
        assert!(secrets.len() >= 3);
        let dump = hirewire_store::testing::raw_dump(&db).await;
        for s in &secrets {
            assert!(!contains(&dump, s.as_bytes()), "a secret is in the database in plaintext");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[allow(dead_code)]
fn _unused(_: Value) {}

#[tokio::test]
async fn without_a_provider_recruiters_see_no_authorize_button() {
    let db = TestDb::new(hirewire_store::Backend::Sqlite).await.unwrap();
    let app = TestApp::start(&db).await;
    let org = app.org("Acme", &[]).await;
    app.user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    let client = app.signed_in("riley@acme.example", "riley-password").await;
    let csrf = hidden_csrf(&page(&client, app.at("/settings/email-calendar")).await.1).unwrap();
    let res = client
        .post(app.at("/settings/email-calendar/inbox/authorize"))
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("data-code=\"no_provider\"")
    );
}

both_backends! {
    async fn the_api_lists_starts_and_removes_integrations_and_guards_admin_settings(db: TestDb) {
        let world = World::start(&db).await;
        let (org, browser) = setup(&world, "google").await;
        let riley = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("riley@acme.example")).await.unwrap().unwrap();
        let api = world.app.api(&world.app.api_token(&riley).await);
        let list: Value = api.get("/me/integrations").send().await.unwrap().json().await.unwrap();
        assert_eq!(list["provider"], "Google Workspace");
        assert_eq!(list["data"][0]["kind"], "inbox");
        assert_eq!(list["data"][0]["status"], "not_connected");
        assert_eq!(list["data"][0]["can_authorize"], true);
        // Started through the API, finished in the user's signed-in browser.
        let started: Value = api.post("/me/integrations/inbox/authorize").send().await.unwrap().json().await.unwrap();
        let url = started["authorization_url"].as_str().unwrap();
        assert!(url.contains("access_type=offline") && url.contains("prompt=consent") && url.contains("code_challenge_method=S256"));
        let landing = world.walk(url, "hank@globex.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &browser, landing).await;
        assert!(body.contains("data-code=\"authorized\""), "{body}");
        let list: Value = api.get("/me/integrations").send().await.unwrap().json().await.unwrap();
        assert_eq!(list["data"][0]["status"], "active");
        assert_eq!(list["data"][0]["address"], "hank@globex.example");
        assert!(!list.to_string().contains("v1."), "no sealed or plain tokens in API responses");
        assert_eq!(api.post("/me/integrations/mailbox/authorize").send().await.unwrap().status(), 404);
        let gone = api.delete("/me/integrations/inbox").send().await.unwrap();
        assert_eq!(gone.status(), 200);
        let again = api.delete("/me/integrations/inbox").send().await.unwrap();
        assert_eq!(again.status(), 404);
        assert_eq!(again.json::<Value>().await.unwrap()["error"]["code"], "not_connected");
        // Admin settings: recruiters are refused; admins never see the secret.
        assert_eq!(api.get("/admin/email-provider").send().await.unwrap().status(), 403);
        let admin = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("admin@acme.example")).await.unwrap().unwrap();
        let admin_api = world.app.api(&world.app.api_token(&admin).await);
        let settings: Value = admin_api.get("/admin/email-provider").send().await.unwrap().json().await.unwrap();
        assert_eq!(settings["provider"], "google");
        assert_eq!(settings["client_secret_set"], true);
        assert!(!settings.to_string().contains(&world.google.1));
        let bad = admin_api.put("/admin/email-provider").json(&json!({"provider": "aol", "access_level": "off"})).send().await.unwrap();
        assert_eq!(bad.status(), 422);
        let _ = org;
        let lower = json!({"provider": "google", "client_id": world.google.0, "access_level": "off"});
        let conn = browser.clone();
        let landing = world.authorize(&conn, "/settings/email-calendar/inbox/authorize", &[], "hank@globex.example", Answer::AcceptAll).await;
        come_back(&world, &conn, landing).await;
        let res = admin_api.put("/admin/email-provider").json(&lower).send().await.unwrap();
        assert_eq!(res.status(), 409);
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "confirmation_required");
        let mut confirmed = lower.clone();
        confirmed["confirm"] = json!(true);
        let res = admin_api.put("/admin/email-provider").json(&confirmed).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["access_level"], "off");
    }
}

both_backends! {
    async fn a_legacy_calendar_grant_keeps_working_and_asks_for_reauthorization(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        // A refresh token the older scheduling integration obtained (calendar only).
        let landing = world.authorize(&client, "/settings/email-calendar/calendar/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        come_back(&world, &client, landing).await;
        let issued = world.control(Method::GET, "/_sandbox/grants", None).await;
        let old_refresh = issued["refresh_tokens"][0]["token"].as_str().unwrap().to_owned();
        let riley = world.app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("riley@acme.example")).await.unwrap().unwrap();
        world.app.store.delete_grant(riley.id, CapabilityKind::Calendar).await.unwrap();
        let grant = hirewire_server::integrations::import_legacy_grant(&world.app.state, &riley, hirewire_providers::Provider::Microsoft, &old_refresh, "Calendars.Read offline_access", Some("adele@acme.example")).await.unwrap();
        assert!(grant.legacy);
        assert_eq!(grant.permission_version, 0);
        let (_, body) = page(&client, world.app.at("/settings/email-calendar")).await;
        assert!(body.contains("older scheduling integration") && body.contains("id=\"authorize-calendar\">Reauthorize<"), "{body}");
        assert!(body.contains("id=\"row-calendar\" data-status=\"active\""), "it keeps serving meanwhile");
        // It serves what it can: the old refresh token still gets an access token.
        hirewire_server::integrations::access_token(&world.app.state, riley.id, CapabilityKind::Calendar).await.unwrap();
        // One click: Reauthorize replaces it with a current grant.
        let landing = world.authorize(&client, "/settings/email-calendar/calendar/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        let (_, body) = come_back(&world, &client, landing).await;
        assert!(body.contains("data-code=\"authorized\"") && !body.contains("older scheduling integration"), "{body}");
        let g = world.app.store.grant(riley.id, CapabilityKind::Calendar).await.unwrap().unwrap();
        assert!(!g.legacy && g.permission_version >= 2);
        let _ = org;
    }
}

/// Starts an authorization and returns the `state` hirewire put in the provider URL.
async fn started_state(world: &World, client: &reqwest::Client, kind: &str) -> String {
    let settings = page(client, world.app.at("/settings/email-calendar"))
        .await
        .1;
    let csrf = hidden_csrf(&settings).unwrap();
    let res = client
        .post(
            world
                .app
                .at(&format!("/settings/email-calendar/{kind}/authorize")),
        )
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

both_backends! {
    async fn failures_that_need_an_admin_are_learned_and_shown_to_everyone_who_must_act(db: TestDb) {
        for (provider, error) in [
            ("microsoft", "error=access_denied&error_description=AADSTS50105%3A+The+signed+in+user+is+not+assigned+to+a+role+for+the+application."),
            ("microsoft", "error=consent_required&error_description=AADSTS90094%3A+The+grant+requires+admin+permission."),
            ("google", "error=admin_policy_enforced"),
        ] {
            let world = World::start(&db).await;
            let org_name = format!("Org {provider} {}", error.len());
            let org = world.app.org(&org_name, &[]).await;
            let domain = if provider == "microsoft" { "ms" } else { "g" };
            world.app.user(org, &format!("admin@{domain}{}.example", error.len()), ADMIN, "admin-password").await;
            let first = format!("first@{domain}{}.example", error.len());
            let second = format!("second@{domain}{}.example", error.len());
            world.app.user(org, &first, RECRUITER, "riley-password").await;
            world.app.user(org, &second, RECRUITER, "riley-password").await;
            world.use_provider(org, provider, None, AccessLevelSetting::SendAndView).await;
            let client = world.app.signed_in(&first, "riley-password").await;
            // The provider sends the browser back with the failure.
            let state = started_state(&world, &client, "inbox").await;
            let (status, body) = page(&client, world.app.at(&format!("/oauth/{provider}/callback?{error}&state={state}"))).await;
            assert_eq!(status, 400);
            assert!(body.contains("data-code=\"admin_approval_required\"") || body.contains("data-code=\"user_not_assigned\""), "{body}");
            let settings = world.app.store.provider_settings(org).await.unwrap().unwrap();
            assert_eq!(settings.consent_state, ConsentState::Needed, "{error}");
            assert!(settings.consent_detail.unwrap().contains(&first), "who hit it is recorded");
            // Another recruiter is told who must act, and can still try.
            let other = world.app.signed_in(&second, "riley-password").await;
            let (_, body) = page(&other, world.app.at("/settings/email-calendar")).await;
            assert!(body.contains("id=\"row-inbox\" data-status=\"waiting_admin\"") && body.contains("admin must approve hirewire first"), "{body}");
            assert!(body.contains("id=\"authorize-inbox\">Try again<"));
        }
    }

    async fn a_recruiter_consenting_without_an_admin_shows_admin_consent_is_not_required(db: TestDb) {
        let world = World::start(&db).await;
        let (org, client) = setup(&world, "microsoft").await;
        let landing = world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await;
        come_back(&world, &client, landing).await;
        assert_eq!(world.app.store.provider_settings(org).await.unwrap().unwrap().consent_state, ConsentState::NotRequired);
    }

    async fn a_user_not_assigned_to_the_app_is_stopped_at_microsoft(db: TestDb) {
        let world = World::start(&db).await;
        let (_, client) = setup(&world, "microsoft").await;
        world.control(Method::PUT, "/_sandbox/tenants/acme.example/policy", Some(json!({"user_consent_allowed": true, "assignment_required": true, "assignments": {}}))).await;
        match world.authorize(&client, "/settings/email-calendar/inbox/authorize", &[], "adele@acme.example", Answer::AcceptAll).await {
            // Microsoft shows AADSTS50105 on its own page and does not come back.
            Landing::Page(_, html) => assert!(html.contains("AADSTS50105"), "{html}"),
            other => panic!("{other:?}"),
        }
    }
}
