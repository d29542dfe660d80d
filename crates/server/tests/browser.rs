//! The main path through the web shell, in headless Chromium (SQLite).
//! One browser serves every test in this binary (see hirewire-testkit).

use fantoccini::Locator;
use hirewire_server::testing::{ADMIN, RECRUITER, TestApp};
use hirewire_store::Backend;
use hirewire_store::testing::TestDb;
use hirewire_testkit::page::{click, fill, follow, text};

async fn sign_in(b: &fantoccini::Client, app: &TestApp, email: &str, password: &str) {
    b.goto(&app.at("/")).await.unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/sign-in")
    );
    fill(b, "#email", email).await;
    fill(b, "#password", password).await;
    follow(b, "#sign-in").await;
}

#[tokio::test]
async fn a_recruiter_signs_in_adds_a_candidate_writes_an_inmail_finds_settings_and_signs_out() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::start(&db).await;
    let org = app.org("Acme Talent", &["acme.example"]).await;
    app.user(
        org,
        "riley.recruiter@acme.example",
        RECRUITER,
        "riley-password",
    )
    .await;
    let b = hirewire_testkit::browser().await;

    // 1. Sign in.
    sign_in(&b, &app, "riley.recruiter@acme.example", "riley-password").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/candidates");
    assert_eq!(
        text(&b, "#avatar").await,
        "RR",
        "initials in the top-right avatar"
    );

    // 2. Add a candidate with two addresses.
    follow(&b, "#add-candidate").await;
    fill(&b, "#name", "Élodie Durand").await;
    fill(
        &b,
        "#emails",
        "elodie@example.org\ne.durand@mailbox.example",
    )
    .await;
    follow(&b, "#save-candidate").await;
    assert_eq!(text(&b, "#candidate-name").await, "Élodie Durand");
    let emails = text(&b, "#candidate-emails").await;
    assert!(
        emails.contains("elodie@example.org") && emails.contains("e.durand@mailbox.example"),
        "{emails}"
    );

    // 3. Write an InMail and see it in the conversation.
    fill(
        &b,
        "#body",
        "Hi Élodie, are you open to a chat about our platform team?",
    )
    .await;
    follow(&b, "#send-inmail").await;
    let timeline = text(&b, "#timeline").await;
    assert!(timeline.contains("are you open to a chat"), "{timeline}");
    assert!(
        timeline.contains("riley recruiter"),
        "the author is shown: {timeline}"
    );

    // The candidate is found by address from the list.
    b.goto(&app.at("/candidates?q=E.DURAND@mailbox"))
        .await
        .unwrap();
    assert!(text(&b, "table").await.contains("Élodie Durand"));

    // 4. Avatar menu -> Product settings -> Email & calendar.
    let menu_link = b
        .find(Locator::Css("#menu-product-settings"))
        .await
        .unwrap();
    assert!(
        !menu_link.is_displayed().await.unwrap(),
        "the menu starts closed"
    );
    click(&b, "#avatar").await;
    assert!(
        menu_link.is_displayed().await.unwrap(),
        "the avatar opens the menu"
    );
    follow(&b, "#menu-product-settings").await;
    follow(&b, "#nav-email-calendar").await;
    assert_eq!(
        b.current_url().await.unwrap().path(),
        "/settings/email-calendar"
    );
    assert!(
        text(&b, "#row-inbox")
            .await
            .contains("has not chosen an email provider yet")
    );

    // 5. Sign out.
    click(&b, "#avatar").await;
    follow(&b, "#menu-sign-out").await;
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/sign-in")
    );
    b.goto(&app.at("/candidates")).await.unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/sign-in"),
        "signed out for real"
    );
}

#[tokio::test]
async fn a_recruiter_opening_the_admin_area_sees_a_403_page_and_an_admin_does_not() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::start(&db).await;
    let org = app.org("Acme Talent", &["acme.example"]).await;
    app.user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    app.user(org, "avery@acme.example", ADMIN, "avery-password")
        .await;
    {
        let b = hirewire_testkit::browser().await;
        sign_in(&b, &app, "riley@acme.example", "riley-password").await;
        assert!(
            b.find(Locator::LinkText("Admin")).await.is_err(),
            "no Admin link for recruiters"
        );
        b.goto(&app.at("/admin/org")).await.unwrap();
        assert!(text(&b, "h1").await.contains("have access"));
    }
    let b = hirewire_testkit::browser().await;
    sign_in(&b, &app, "avery@acme.example", "avery-password").await;
    b.find(Locator::LinkText("Admin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/admin/org");
    assert_eq!(
        b.find(Locator::Css("#name"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Acme Talent")
    );
    b.find(Locator::LinkText("Email provider"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        b.find(Locator::Css("#provider-none"))
            .await
            .unwrap()
            .is_selected()
            .await
            .unwrap(),
        "Do not integrate until chosen"
    );
}

#[tokio::test]
async fn a_wrong_password_shows_an_inline_message_in_the_browser() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::start(&db).await;
    let org = app.org("Acme Talent", &[]).await;
    app.user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    let b = hirewire_testkit::browser().await;
    sign_in(&b, &app, "riley@acme.example", "not-the-password").await;
    assert!(text(&b, "#sign-in-error").await.contains("don't match"));
    let kept = b
        .find(Locator::Css("#email"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("riley@acme.example"));
}

/// Clicks through the sandbox's account picker and consent screen.
async fn consent_at_provider(b: &fantoccini::Client, account: &str) {
    b.wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Css(&format!("button[data-email='{account}']")))
        .await
        .unwrap_or_else(|e| panic!("account picker: {e}"))
        .click()
        .await
        .unwrap();
    let accept = b
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Css("#accept"))
        .await
        .unwrap();
    // Google asks per permission; hirewire needs every one.
    if let Ok(all) = b.find(Locator::Css("#select-all")).await {
        all.click().await.unwrap();
    }
    accept.click().await.unwrap();
}

async fn wait_for_path(b: &fantoccini::Client, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.current_url().await.unwrap().path().starts_with(path) {
        assert!(std::time::Instant::now() < deadline, "never reached {path}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_recruiter_authorizes_inbox_and_calendar_at_each_provider_sees_the_address_and_deauthorizes()
 {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let world = hirewire_server::testing::World::start(&db).await;
    let app = &world.app;
    for (org_name, provider, account) in [
        ("Acme Talent", "microsoft", "adele@acme.example"),
        ("Globex Hiring", "google", "hank@globex.example"),
    ] {
        let org = app.org(org_name, &[]).await;
        let email = format!("riley@{provider}.example");
        app.user(org, &email, RECRUITER, "riley-password").await;
        world
            .use_provider(
                org,
                provider,
                None,
                hirewire_store::AccessLevelSetting::SendAndView,
            )
            .await;
        let b = hirewire_testkit::browser().await;
        sign_in(&b, app, &email, "riley-password").await;
        click(&b, "#avatar").await;
        follow(&b, "#menu-product-settings").await;
        follow(&b, "#nav-email-calendar").await;
        for kind in ["inbox", "calendar"] {
            follow(&b, &format!("#authorize-{kind}")).await;
            consent_at_provider(&b, account).await;
            wait_for_path(&b, "/oauth/").await;
            assert!(
                text(&b, "#notice").await.contains("is connected"),
                "{provider} {kind}"
            );
            assert_eq!(
                text(&b, &format!("#address-{kind}")).await,
                account,
                "the synced address shows under the setting"
            );
            assert_eq!(text(&b, &format!("#status-{kind}")).await, "Active");
        }
        follow(&b, "#deauthorize-inbox").await;
        assert!(
            text(&b, "#notice")
                .await
                .contains("Your inbox is disconnected")
        );
        assert!(b.find(Locator::Css("#address-inbox")).await.is_err());
        assert!(
            b.find(Locator::Css("#authorize-inbox")).await.is_ok(),
            "Authorize is offered again"
        );
        assert_eq!(
            text(&b, "#address-calendar").await,
            account,
            "the calendar is untouched"
        );
    }
}
