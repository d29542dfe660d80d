//! OAuth tokens and client secrets never reach the logs, even at TRACE level.
//! (The database side is checked in tests/integrations.rs.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use hirewire_server::testing::{ADMIN, Answer, Landing, RECRUITER, World};
use hirewire_store::testing::TestDb;
use hirewire_store::{AccessLevelSetting, Backend, CapabilityKind};
use reqwest::Method;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_authorize_refresh_and_deauthorize_logs_no_token_or_secret() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .init();

    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let world = World::start(&db).await;
    let org = world.app.org("Acme Talent", &["acme.example"]).await;
    world
        .app
        .user(org, "admin@acme.example", ADMIN, "admin-password")
        .await;
    let riley = world
        .app
        .user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    world
        .use_provider(org, "google", None, AccessLevelSetting::SendAndView)
        .await;
    let client = world
        .app
        .signed_in("riley@acme.example", "riley-password")
        .await;
    let mut codes = Vec::new();
    for path in [
        "/settings/email-calendar/inbox/authorize",
        "/settings/email-calendar/calendar/authorize",
    ] {
        let Landing::Redirect(url) = world
            .authorize(&client, path, &[], "hank@globex.example", Answer::AcceptAll)
            .await
        else {
            panic!("no callback")
        };
        let callback = url::Url::parse(&url).unwrap();
        codes.extend(
            callback
                .query_pairs()
                .filter(|(k, _)| k == "code" || k == "state")
                .map(|(_, v)| v.into_owned()),
        );
        assert!(
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("data-code=\"authorized\"")
        );
    }
    world.app.clock.advance(jiff::SignedDuration::from_hours(2));
    hirewire_server::integrations::access_token(&world.app.state, riley.id, CapabilityKind::Inbox)
        .await
        .unwrap();
    let issued = world.control(Method::GET, "/_sandbox/grants", None).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.len() > 1000,
        "TRACE logging captured the flow ({} bytes)",
        text.len()
    );
    let mut secrets = vec![world.google.1.clone(), "riley-password".to_owned()];
    assert_eq!(codes.len(), 4, "two codes and two states");
    secrets.extend(codes);
    for list in ["refresh_tokens", "access_tokens"] {
        for t in issued[list].as_array().unwrap() {
            secrets.push(t["token"].as_str().unwrap().to_owned());
        }
    }
    assert!(secrets.len() >= 4);
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret appears in the logs");
    }
}
