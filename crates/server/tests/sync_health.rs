//! Sync health, as recruiters and admins see it (pages and API), driven by the
//! mail sync against the provider sandbox on a manual clock, on both backends.

use std::sync::Arc;

use hirewire_domain::ids::OrgId;
use hirewire_server::AppState;
use hirewire_server::sync::{self, SyncOutcome};
use hirewire_server::testing::{ADMIN, Answer, Landing, RECRUITER, World};
use hirewire_store::testing::TestDb;
use hirewire_store::{AccessLevelSetting, CapabilityKind, User, both_backends};
use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{Value, json};

const CANDIDATES: [&str; 2] = [
    "jordan.rivers@talentmail.example",
    "sam.okafor@outlook.example",
];

/// Two recruiters of one Microsoft 365 org, each with a generated mailbox of
/// `n` messages, and an admin with an API token.
struct Team {
    world: World,
    org: OrgId,
    recruiters: Vec<(User, &'static str, reqwest::Client)>,
    admin_token: String,
}

async fn team(db: &TestDb, n: u32) -> Team {
    let world = World::start(db).await;
    let org = world.app.org("Talent Co", &["acme.example"]).await;
    world
        .use_provider(org, "microsoft", None, AccessLevelSetting::SendAndView)
        .await;
    let admin = world
        .app
        .user(org, "ada@talent.example", ADMIN, "ada-password")
        .await;
    let admin_token = world.app.api_token(&admin).await;
    for c in CANDIDATES {
        world
            .app
            .store
            .create_candidate(
                org,
                c,
                &[hirewire_domain::email::EmailAddress::parse(c).unwrap()],
                world.app.now(),
            )
            .await
            .unwrap();
    }
    let mut recruiters = Vec::new();
    for (email, mailbox) in [
        ("riley@talent.example", "adele@acme.example"),
        ("sky@talent.example", "ben@acme.example"),
    ] {
        world
            .control(
                Method::POST,
                &format!("/_sandbox/mailboxes/{mailbox}/generate"),
                Some(json!({
                    "n": n, "seed": 3, "candidates": CANDIDATES, "candidate_share": 0.5,
                    "start": "2026-03-01", "end": "2026-11-01"
                })),
            )
            .await;
        let user = world.app.user(org, email, RECRUITER, "pw-12345678").await;
        let client = world.app.signed_in(email, "pw-12345678").await;
        match world
            .authorize(
                &client,
                "/settings/email-calendar/inbox/authorize",
                &[],
                mailbox,
                Answer::AcceptAll,
            )
            .await
        {
            Landing::Redirect(url) => {
                client.get(url).send().await.unwrap();
            }
            Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
        }
        recruiters.push((user, mailbox, client));
    }
    Team {
        world,
        org,
        recruiters,
        admin_token,
    }
}

impl Team {
    /// A worker on the same store and clock, with small pages.
    fn worker(&self) -> AppState {
        let app = &self.world.app;
        let mut config = app.state.config.clone();
        config.sync.page_size = 5;
        AppState::new(
            config,
            app.store.clone(),
            app.state.keyring.clone(),
            Arc::new(app.clock.clone()),
        )
    }

    async fn me(&self, i: usize) -> Value {
        let token = self.world.app.api_token(&self.recruiters[i].0).await;
        let res = self
            .world
            .app
            .api(&token)
            .get("/me/sync-health")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn admin(&self, attention: bool) -> Vec<Value> {
        let path = if attention {
            "/admin/sync-health?attention=1"
        } else {
            "/admin/sync-health"
        };
        let res = self
            .world
            .app
            .api(&self.admin_token)
            .get(path)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn settings_page(&self, i: usize) -> String {
        let res = self.recruiters[i]
            .2
            .get(self.world.app.at("/settings/email-calendar"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }

    async fn grant_id(&self, i: usize) -> i64 {
        self.world
            .app
            .store
            .grant(self.recruiters[i].0.id, CapabilityKind::Inbox)
            .await
            .unwrap()
            .unwrap()
            .id
            .get()
    }
}

both_backends! {
    async fn a_grant_revoked_mid_sync_shows_needs_reauthorization_while_the_other_mailbox_keeps_syncing(db: TestDb) {
        let t = team(&db, 30).await;
        let worker = t.worker();
        // Both start and import a page or two.
        let first = sync::run_until_idle(&worker, "w1", 6).await;
        assert!(first.iter().any(|o| matches!(o, SyncOutcome::Page { .. })), "{first:?}");
        for i in 0..2 {
            let h = t.me(i).await;
            assert_eq!(h["state"], "backfilling", "{h}");
            assert_eq!(h["messages_estimate"], 30, "the provider's count is the 'about m': {h}");
            let seen = h["messages_seen"].as_u64().unwrap();
            assert!(seen < 30, "{h}");
            assert_eq!(h["needs_attention"], false);
        }
        let page = t.settings_page(0).await;
        assert!(page.contains("id=\"sync-progress\""), "a progress bar while importing");
        assert!(page.contains("of about <span id=\"sync-estimate\">30</span> messages"), "{page}");

        // Riley's access is revoked at the provider; the access tokens lapse.
        t.world
            .control(Method::POST, &format!("/_sandbox/users/{}/revoke-grant", t.recruiters[0].1), None)
            .await;
        t.world.app.clock.advance(SignedDuration::from_hours(2));
        let rest = sync::run_until_idle(&worker, "w1", 200).await;
        assert!(rest.iter().any(|o| matches!(o, SyncOutcome::Stopped { .. })), "{rest:?}");

        let riley = t.me(0).await;
        assert_eq!(riley["state"], "paused", "{riley}");
        assert_eq!(riley["paused_reason"], "needs_reauthorization");
        assert_eq!(riley["needs_attention"], true);
        let sky = t.me(1).await;
        assert_eq!(sky["state"], "up_to_date", "the other mailbox kept syncing: {sky}");
        assert_eq!(sky["messages_seen"], 30);
        assert!(sky["last_success_at"].is_string());

        let page = t.settings_page(0).await;
        assert!(page.contains("data-state=\"paused\""), "{page}");
        assert!(page.contains("Needs reauthorization"), "{page}");

        let all = t.admin(false).await;
        assert_eq!(all.len(), 2);
        let attention = t.admin(true).await;
        assert_eq!(attention.len(), 1, "{attention:?}");
        assert_eq!(attention[0]["grant_id"], t.grant_id(0).await);

        // The admin page lists the mailbox that needs attention, with the filter.
        let admin = t.world.app.signed_in("ada@talent.example", "ada-password").await;
        let html = admin.get(t.world.app.at("/admin/sync-health?attention=1")).send().await.unwrap().text().await.unwrap();
        assert!(html.contains(&format!("id=\"health-{}\"", t.grant_id(0).await)), "{html}");
        assert!(!html.contains(&format!("id=\"health-{}\"", t.grant_id(1).await)), "{html}");
        assert!(html.contains("id=\"filter-all\""));
        let org_page = admin.get(t.world.app.at("/admin/org")).send().await.unwrap().text().await.unwrap();
        assert!(org_page.contains("href=\"/admin/sync-health\""), "linked from the admin nav");
        let _ = t.org;
    }

    async fn a_5xx_burst_shows_failing_with_the_next_retry_then_recovers(db: TestDb) {
        let t = team(&db, 12).await;
        let worker = t.worker();
        let mailbox = t.recruiters[0].1;
        let fault = t.world
            .control(
                Method::POST,
                "/_sandbox/faults",
                Some(json!({"endpoint": "graph.*", "user": mailbox, "fault": {"kind": "server_error", "status": 503}})),
            )
            .await;
        let outcomes = sync::run_until_idle(&worker, "w1", 20).await;
        assert!(outcomes.iter().any(|o| matches!(o, SyncOutcome::Retry { retry_at: Some(_), .. })), "{outcomes:?}");

        let h = t.me(0).await;
        assert_eq!(h["state"], "failing", "{h}");
        assert_eq!(h["needs_attention"], true);
        assert_eq!(h["error_class"], "provider_unavailable");
        assert_eq!(h["last_error"], "Microsoft 365 had a temporary problem and did not answer.");
        let next: jiff::Timestamp = h["next_retry_at"].as_str().unwrap().parse().unwrap();
        assert!(next > t.world.app.now(), "the retry is in the future: {h}");
        let page = t.settings_page(0).await;
        assert!(page.contains("data-state=\"failing\""), "{page}");
        assert!(page.contains("id=\"sync-next-retry\""), "{page}");
        assert_eq!(t.me(1).await["state"], "up_to_date", "the other mailbox is not held up");

        // The burst ends; at the retry the sync recovers.
        let id = fault["id"].as_u64().unwrap();
        t.world.control(Method::DELETE, &format!("/_sandbox/faults/{id}"), None).await;
        t.world.app.clock.advance(next.duration_since(t.world.app.now()) + SignedDuration::from_secs(1));
        sync::run_until_idle(&worker, "w1", 50).await;
        let h = t.me(0).await;
        assert_eq!(h["state"], "up_to_date", "{h}");
        assert_eq!(h["needs_attention"], false);
        assert!(h["last_error"].is_null());
        assert_eq!(t.admin(true).await.len(), 0);
    }
}
