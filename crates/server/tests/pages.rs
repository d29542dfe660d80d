//! The web pages at HTTP level, on both storage backends: sign-in, CSRF,
//! forms with inline errors, admin-only areas, and org isolation.

use hirewire_server::SignInLimits;
use hirewire_server::testing::{ADMIN, RECRUITER, TestApp, TestOptions, hidden_csrf};
use hirewire_store::testing::TestDb;
use hirewire_store::{NewInMail, both_backends};

async fn acme(app: &TestApp) -> hirewire_domain::ids::OrgId {
    let org = app.org("Acme Talent", &["acme.example"]).await;
    app.user(org, "admin@acme.example", ADMIN, "admin-password")
        .await;
    app.user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    org
}

async fn page(client: &reqwest::Client, url: String) -> (u16, String) {
    let res = client.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

both_backends! {
    async fn a_signed_out_visitor_is_sent_to_sign_in_and_back_afterwards(db: TestDb) {
        let app = TestApp::start(&db).await;
        acme(&app).await;
        let client = app.browserless();
        let res = client.get(app.at("/")).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/sign-in");
        let res = client.get(app.at("/candidates?q=x")).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/sign-in?next=%2Fcandidates%3Fq%3Dx");
        let signin = client.get(app.at("/sign-in?next=%2Fadmin%2Forg")).send().await.unwrap().text().await.unwrap();
        let csrf = hidden_csrf(&signin).unwrap();
        let res = client
            .post(app.at("/sign-in"))
            .form(&[("_csrf", csrf.as_str()), ("email", "ADMIN@acme.example"), ("password", "admin-password"), ("next", "/admin/org")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/admin/org", "email is matched without case; next is honoured");
        let cookie = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with("hw_session=")).unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
        let res = client.get(app.at("/")).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/candidates", "signed in, / goes to the app");
    }

    async fn a_failed_sign_in_does_not_say_whether_the_account_exists_and_is_audited(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let client = app.browserless();
        let mut messages = Vec::new();
        for (email, password) in [("riley@acme.example", "wrong-password"), ("nobody@acme.example", "whatever")] {
            let csrf = hidden_csrf(&client.get(app.at("/sign-in")).send().await.unwrap().text().await.unwrap()).unwrap();
            let res = client.post(app.at("/sign-in")).form(&[("_csrf", csrf.as_str()), ("email", email), ("password", password), ("next", "/")]).send().await.unwrap();
            assert_eq!(res.status(), 401);
            let body = res.text().await.unwrap();
            let start = body.find("id=\"sign-in-error\">").unwrap();
            messages.push(body[start..start + 120].to_owned());
            assert!(body.contains(&format!("value=\"{email}\"")), "the email is kept in the form");
        }
        assert_eq!(messages[0], messages[1], "same message for a wrong password and an unknown account");
        let known = app.store.list_audit(Some(org), 50).await.unwrap();
        assert_eq!(known.iter().filter(|e| e.action == "auth.sign_in_failed").count(), 1, "a failure on an account is in its org's log");
        let unknown = app.store.list_audit(None, 50).await.unwrap();
        assert!(unknown.iter().any(|e| e.action == "auth.sign_in_failed" && e.target == "nobody@acme.example"));
        assert!(!format!("{known:?}{unknown:?}").contains("wrong-password"), "passwords are never logged");
    }

    async fn sign_in_is_rate_limited_per_account(db: TestDb) {
        let options = TestOptions { sign_in_limits: SignInLimits { per_account: 3, per_client: 100, window: std::time::Duration::from_secs(3600) }, ..Default::default() };
        let app = TestApp::start_with(&db, options).await;
        acme(&app).await;
        let client = app.browserless();
        let mut statuses = Vec::new();
        for password in ["bad-1", "bad-2", "bad-3", "riley-password"] {
            let csrf = hidden_csrf(&client.get(app.at("/sign-in")).send().await.unwrap().text().await.unwrap()).unwrap();
            let res = client.post(app.at("/sign-in")).form(&[("_csrf", csrf.as_str()), ("email", "riley@acme.example"), ("password", password), ("next", "/")]).send().await.unwrap();
            statuses.push(res.status().as_u16());
        }
        assert_eq!(statuses, [401, 401, 401, 429], "even the right password waits once the limit is reached");
    }

    async fn state_changing_forms_without_the_csrf_token_are_refused_and_write_nothing(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let res = client.post(app.at("/candidates/new")).form(&[("name", "Mallory"), ("emails", "m@x.example")]).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let res = client.post(app.at("/candidates/new")).form(&[("_csrf", "forged"), ("name", "Mallory"), ("emails", "m@x.example")]).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert!(app.store.list_candidates(org, None, None, 10).await.unwrap().candidates.is_empty());
        let csrf = hidden_csrf(&client.get(app.at("/sign-in")).send().await.unwrap().text().await.unwrap());
        let res = client.post(app.at("/sign-out")).form(&[("_csrf", csrf.unwrap_or_default().as_str())]).send().await.unwrap();
        assert_eq!(res.status(), 400, "sign-out needs the session's token, not the sign-in form's");
    }

    async fn adding_a_candidate_with_two_addresses_then_writing_an_inmail(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (_, form) = page(&client, app.at("/candidates/new")).await;
        let csrf = hidden_csrf(&form).unwrap();
        let res = client.post(app.at("/candidates/new")).form(&[("_csrf", csrf.as_str()), ("name", "Mei <b>Chen</b>"), ("emails", "mei@example.com\n  MeiChen@Example.org \n")]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let (status, body) = page(&client, app.at(&location)).await;
        assert_eq!(status, 200);
        assert!(!body.contains("<b>Chen</b>") && body.contains("Mei &#60;b&#62;Chen&#60;/b&#62;"), "names are escaped");
        assert!(body.contains("mei@example.com") && body.contains("MeiChen@Example.org"));
        let res = client.post(app.at(&format!("{location}/inmail"))).form(&[("_csrf", csrf.as_str()), ("body", "Hi Mei, <script>alert(1)</script> are you free?")]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let (_, body) = page(&client, app.at(&location)).await;
        assert!(!body.contains("<script>alert(1)") && body.contains("Hi Mei, &#60;script&#62;alert(1)&#60;/script&#62; are you free?"));
        let list = app.store.list_candidates(org, None, None, 10).await.unwrap();
        assert_eq!(list.candidates.len(), 1);
    }

    async fn the_conversation_is_shown_newest_first(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let c = app.store.create_candidate(org, "Kwame", &[], app.now()).await.unwrap();
        for (i, body) in ["first", "second", "third"].iter().enumerate() {
            let at = app.now() + jiff::SignedDuration::from_mins(i as i64);
            let new = NewInMail { candidate_id: c.id, author_user_id: None, direction: hirewire_store::Direction::Inbound, body, sent_at: at };
            app.store.create_inmail(org, &new, at).await.unwrap();
        }
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (_, body) = page(&client, app.at(&format!("/candidates/{}", c.id))).await;
        let pos = |s: &str| body.find(&format!(">{s}<")).unwrap();
        assert!(pos("third") < pos("second") && pos("second") < pos("first"));
    }

    async fn an_invalid_candidate_form_comes_back_with_inline_errors_and_its_input(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let csrf = hidden_csrf(&page(&client, app.at("/candidates/new")).await.1).unwrap();
        let res = client.post(app.at("/candidates/new")).form(&[("_csrf", csrf.as_str()), ("name", "Ana"), ("emails", "ana@x.example\nnot an address")]).send().await.unwrap();
        assert_eq!(res.status(), 422);
        let body = res.text().await.unwrap();
        assert!(body.contains("id=\"emails-error\"") && body.contains("not an address"));
        assert!(body.contains("value=\"Ana\""), "the name is kept");
        // Taken address: a clear message, nothing written.
        app.store.create_candidate(org, "Owner", &[hirewire_domain::email::EmailAddress::parse("taken@x.example").unwrap()], app.now()).await.unwrap();
        let res = client.post(app.at("/candidates/new")).form(&[("_csrf", csrf.as_str()), ("name", "Ana"), ("emails", "TAKEN@x.example")]).send().await.unwrap();
        assert_eq!(res.status(), 409);
        assert_eq!(app.store.list_candidates(org, None, None, 10).await.unwrap().candidates.len(), 1);
    }

    async fn a_recruiter_gets_a_403_page_in_the_admin_area_and_an_admin_can_edit_the_org(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = acme(&app).await;
        let recruiter = app.signed_in("riley@acme.example", "riley-password").await;
        for path in ["/admin/org", "/admin/email-provider"] {
            let (status, body) = page(&recruiter, app.at(path)).await;
            assert_eq!(status, 403, "{path}");
            assert!(body.contains("have access to this page"), "the 403 page explains itself");
        }
        let csrf = hidden_csrf(&page(&recruiter, app.at("/candidates")).await.1).unwrap();
        let res = recruiter.post(app.at("/admin/org")).form(&[("_csrf", csrf.as_str()), ("name", "Taken over"), ("domains", "")]).send().await.unwrap();
        assert_eq!(res.status(), 403);

        let admin = app.signed_in("admin@acme.example", "admin-password").await;
        let (status, body) = page(&admin, app.at("/admin/org")).await;
        assert_eq!(status, 200);
        let csrf = hidden_csrf(&body).unwrap();
        let res = admin.post(app.at("/admin/org")).form(&[("_csrf", csrf.as_str()), ("name", "Acme Talent"), ("domains", "acme.example\nnot a domain")]).send().await.unwrap();
        assert_eq!(res.status(), 422);
        let res = admin.post(app.at("/admin/org")).form(&[("_csrf", csrf.as_str()), ("name", "Acme Talent GmbH"), ("domains", "acme.example\n@ACME-talent.example")]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let saved = app.store.org_by_id(org).await.unwrap().unwrap();
        assert_eq!(saved.name, "Acme Talent GmbH");
        assert_eq!(saved.domains.iter().map(|d| d.as_str()).collect::<Vec<_>>(), ["acme-talent.example", "acme.example"]);
    }

    async fn pages_of_another_org_are_not_found(db: TestDb) {
        let app = TestApp::start(&db).await;
        acme(&app).await;
        let globex = app.org("Globex", &[]).await;
        let theirs = app.store.create_candidate(globex, "Hidden", &[], app.now()).await.unwrap();
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (status, body) = page(&client, app.at(&format!("/candidates/{}", theirs.id))).await;
        assert_eq!(status, 404);
        assert!(!body.contains("Hidden"));
        let csrf = hidden_csrf(&page(&client, app.at("/candidates")).await.1).unwrap();
        let res = client.post(app.at(&format!("/candidates/{}/inmail", theirs.id))).form(&[("_csrf", csrf.as_str()), ("body", "hello")]).send().await.unwrap();
        assert_eq!(res.status(), 404);
        assert!(app.store.list_inmail(globex, theirs.id, None, 10).await.unwrap().is_empty());
        let (_, list) = page(&client, app.at("/candidates?q=hidden")).await;
        assert!(!list.contains("Hidden"));
    }

    async fn email_and_calendar_settings_say_who_must_act_before_a_provider_is_chosen(db: TestDb) {
        let app = TestApp::start(&db).await;
        acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (status, body) = page(&client, app.at("/settings/email-calendar")).await;
        assert_eq!(status, 200);
        assert!(body.contains("Account settings") && body.contains("Authorize inbox") && body.contains("Authorize work calendar"));
        assert!(body.contains("has not chosen an email provider yet"));
        assert!(!body.contains("id=\"authorize-inbox\"") && !body.contains("id=\"authorize-calendar\""), "no buttons that cannot work yet");
    }

    async fn signing_out_ends_the_session(db: TestDb) {
        let app = TestApp::start(&db).await;
        acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let csrf = hidden_csrf(&page(&client, app.at("/candidates")).await.1).unwrap();
        let res = client.post(app.at("/sign-out")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/sign-in?signed_out=1");
        let res = client.get(app.at("/candidates")).send().await.unwrap();
        assert_eq!(res.status(), 303, "the session no longer works");
    }

    async fn sessions_expire_after_their_lifetime(db: TestDb) {
        let app = TestApp::start(&db).await;
        acme(&app).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        assert_eq!(client.get(app.at("/candidates")).send().await.unwrap().status(), 200);
        app.clock.advance(jiff::SignedDuration::from_hours(24 * 8));
        assert_eq!(client.get(app.at("/candidates")).send().await.unwrap().status(), 303);
    }
}

/// Posts the sign-in form as `email` from the given `X-Forwarded-For` address.
async fn attempt_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    forwarded: &str,
) -> u16 {
    let csrf = hidden_csrf(
        &client
            .get(app.at("/sign-in"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    client
        .post(app.at("/sign-in"))
        .header("x-forwarded-for", forwarded)
        .form(&[
            ("_csrf", csrf.as_str()),
            ("email", email),
            ("password", "wrong-password"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

both_backends! {
    async fn sign_in_is_rate_limited_per_client_address_which_honours_forwarded_for_only_behind_a_trusted_proxy(db: TestDb) {
        let limits = SignInLimits { per_account: 100, per_client: 2, window: std::time::Duration::from_secs(3600) };
        let app = TestApp::start_with(&db, TestOptions { sign_in_limits: limits, trust_proxy: true, ..Default::default() }).await;
        acme(&app).await;
        let client = app.browserless();
        let mut statuses = Vec::new();
        for email in ["a1@acme.example", "a2@acme.example", "a3@acme.example"] {
            statuses.push(attempt_from(&app, &client, email, "10.0.0.1").await);
        }
        assert_eq!(statuses, [401, 401, 429], "one address, many accounts: limited");
        assert_eq!(attempt_from(&app, &client, "a4@acme.example", "10.0.0.2").await, 401, "another client address is not");

        // Without --trust-proxy the header is ignored: every attempt is the socket's.
        let direct = TestApp::start_with(&db, TestOptions { sign_in_limits: limits, trust_proxy: false, ..Default::default() }).await;
        let client = direct.browserless();
        let mut statuses = Vec::new();
        for (email, ip) in [("b1@acme.example", "10.0.0.1"), ("b2@acme.example", "10.0.0.2"), ("b3@acme.example", "10.0.0.3")] {
            statuses.push(attempt_from(&direct, &client, email, ip).await);
        }
        assert_eq!(statuses, [401, 401, 429], "spoofed headers do not escape the limit");
    }

    async fn the_session_cookie_is_secure_when_the_public_url_is_https(db: TestDb) {
        let app = TestApp::start_with(&db, TestOptions { public_url: Some("https://hirewire.acme.example/".into()), ..Default::default() }).await;
        acme(&app).await;
        let client = app.browserless();
        let csrf = hidden_csrf(&client.get(app.at("/sign-in")).send().await.unwrap().text().await.unwrap()).unwrap();
        let res = client
            .post(app.at("/sign-in"))
            .form(&[("_csrf", csrf.as_str()), ("email", "riley@acme.example"), ("password", "riley-password"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let cookie = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("hw_session=")).unwrap();
        assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    }
}
