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
    team_on(db, "microsoft", n).await
}

async fn team_on(db: &TestDb, provider: &str, n: u32) -> Team {
    let world = World::start(db).await;
    let (domain, mailboxes) = if provider == "microsoft" {
        ("acme.example", ["adele@acme.example", "ben@acme.example"])
    } else {
        (
            "globex.example",
            ["hank@globex.example", "mindy@globex.example"],
        )
    };
    let org = world.app.org("Talent Co", &[domain]).await;
    world
        .use_provider(org, provider, None, AccessLevelSetting::SendAndView)
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
    // The provider's clock reads the app's time (subscription expiries are compared across the two).
    let sandbox_now = world.control(Method::GET, "/_sandbox/clock", None).await["now"]
        .as_i64()
        .unwrap();
    let ahead = world.app.now().as_second() - sandbox_now;
    if ahead > 0 {
        world
            .control(
                Method::POST,
                "/_sandbox/clock/advance",
                Some(json!({"seconds": ahead})),
            )
            .await;
    }
    let mut recruiters = Vec::new();
    for (email, mailbox) in [
        ("riley@talent.example", mailboxes[0]),
        ("sky@talent.example", mailboxes[1]),
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

/// `/metrics`, parsed by an independent parser of the text format.
async fn scrape(world: &World) -> prometheus_parse::Scrape {
    let res = reqwest::get(world.app.at("/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of `metric` with `labels` (0 when absent); histograms: their count.
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |c| c.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
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

/// An instance on the team's store and clock with push on, serving its own
/// webhooks (and the API) on a port of its own; Gmail push goes to its
/// `/hooks/gmail` through the sandbox's topic. Provider retries are quick.
async fn push_instance(t: &Team) -> (AppState, String) {
    let app = &t.world.app;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = t.world.sandbox.base_url();
    let mut config = app.state.config.clone();
    config.push.allow_http = true;
    config.push.webhook_base = Some(base.parse().unwrap());
    config.push.gmail_topic = Some("projects/p/topics/gmail".into());
    config.push.pubsub_certs_url =
        Some(format!("{}/oauth2/v3/certs", sandbox.trim_end_matches('/')));
    config.push.unsubscribe_timeout = std::time::Duration::from_secs(2);
    config.pacing.backoff = hirewire_providers::pacing::BackoffConfig {
        max_attempts: 2,
        base: std::time::Duration::from_millis(20),
        max: std::time::Duration::from_millis(50),
        min: std::time::Duration::from_millis(10),
    };
    let state = AppState::new(
        config,
        app.store.clone(),
        app.state.keyring.clone(),
        Arc::new(app.clock.clone()),
    );
    let served = hirewire_server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, served).await });
    t.world
        .control(Method::POST, "/_sandbox/push/topics", Some(json!({"name": "projects/p/topics/gmail", "push_endpoint": format!("{base}/hooks/gmail")})))
        .await;
    (state, base)
}

/// The mailboxes the sandbox has a live Graph subscription or Gmail watch for.
async fn subscribed(world: &World) -> Vec<String> {
    let o = world.control(Method::GET, "/_sandbox/push", None).await;
    let mut owners: Vec<String> = o["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(o["watches"].as_array().unwrap())
        .filter(|s| s["expired"] == false)
        .map(|s| s["owner"].as_str().unwrap().to_owned())
        .collect();
    owners.sort();
    owners
}

/// `DELETE /api/v1/me/integrations/inbox` on the instance at `base` as recruiter `i`.
async fn deauthorize_inbox(t: &Team, base: &str, i: usize) -> Value {
    let token = t.world.app.api_token(&t.recruiters[i].0).await;
    let res = reqwest::Client::new()
        .delete(format!("{base}/api/v1/me/integrations/inbox"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
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

    async fn metrics_parse_and_move_with_the_sync(db: TestDb) {
        let t = team(&db, 12).await;
        let worker = t.worker();
        let before = scrape(&t.world).await;
        assert_eq!(value(&before, "hirewire_sync_messages_seen_total", &[]), 0.0);
        assert_eq!(value(&before, "hirewire_job_queue_depth", &[("kind", "mail.sync")]), 2.0, "one queued step per inbox");

        // The metrics belong to the instance that does the work: the worker here.
        sync::run_until_idle(&worker, "w1", 100).await;
        let render = |s: &AppState| {
            let s = s.clone();
            async move { hirewire_server::metrics::render(&s).await.unwrap() }
        };
        let text = render(&worker).await;
        let after = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        assert_eq!(value(&after, "hirewire_sync_messages_seen_total", &[]), 24.0, "both mailboxes listed whole");
        assert!(value(&after, "hirewire_sync_messages_stored_total", &[]) > 0.0);
        let graph = value(&after, "hirewire_provider_requests_total", &[("provider", "graph")]);
        assert!(graph > 0.0, "{text}");
        assert_eq!(value(&after, "hirewire_provider_throttled_total", &[("provider", "graph")]), 0.0);
        assert_eq!(value(&after, "hirewire_job_queue_depth", &[("kind", "mail.sync")]), 2.0, "each idle inbox has its next step queued");

        // A later step of a mailbox observes its lag; a throttled step counts an error and a 429.
        let grant = t.grant_id(0).await.to_string();
        t.world
            .control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": "graph.*", "user": t.recruiters[1].1, "fault": {"kind": "throttle", "retry_after_secs": 600}})))
            .await;
        t.world.app.clock.advance(SignedDuration::from_secs(90));
        sync::run_until_idle(&worker, "w1", 100).await;
        let text = render(&worker).await;
        let later = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        assert!(value(&later, "hirewire_sync_lag_seconds", &[("mailbox", grant.as_str())]) >= 1.0, "{text}");
        assert!(text.contains(&format!("hirewire_sync_lag_seconds_bucket{{mailbox=\"{grant}\",le=\"120\"}}")), "{text}");
        assert!(value(&later, "hirewire_sync_errors_total", &[("class", "throttled")]) >= 1.0, "{text}");
        assert!(value(&later, "hirewire_provider_throttled_total", &[("provider", "graph")]) >= 1.0, "{text}");
        assert!(value(&later, "hirewire_provider_requests_total", &[("provider", "graph")]) > graph);
    }

    async fn under_a_429_storm_a_5xx_burst_and_slow_responses_the_sync_never_exceeds_the_configured_quota(db: TestDb) {
        let t = team(&db, 30).await;
        // Test-scale quota: 20 Graph requests per second per mailbox, 4 in flight; the sandbox enforces the same.
        let app = &t.world.app;
        let mut config = app.state.config.clone();
        config.sync.page_size = 5;
        config.pacing.graph.per_mailbox = Some(hirewire_providers::pacing::RateLimit {
            units: 20,
            per: std::time::Duration::from_secs(1),
            burst: 5,
        });
        config.pacing.graph.max_concurrent_per_mailbox = Some(4);
        config.pacing.backoff = hirewire_providers::pacing::BackoffConfig {
            max_attempts: 3,
            base: std::time::Duration::from_millis(50),
            max: std::time::Duration::from_millis(400),
            min: std::time::Duration::from_millis(20),
        };
        config.pacing.max_pause_wait = std::time::Duration::from_secs(2);
        let worker = AppState::new(config, app.store.clone(), app.state.keyring.clone(), Arc::new(app.clock.clone()));
        t.world
            .control(
                Method::PATCH,
                "/_sandbox/settings",
                Some(json!({"graph_mailbox_requests_per_window": 20, "graph_mailbox_window_secs": 1, "graph_mailbox_concurrency": 4})),
            )
            .await;
        t.world.control(Method::DELETE, "/_sandbox/counters", None).await;
        let (a, b) = (t.recruiters[0].1, t.recruiters[1].1);
        for fault in [
            json!({"endpoint": "graph.*", "user": a, "count": 8, "fault": {"kind": "throttle", "retry_after_secs": 1}}),
            json!({"endpoint": "graph.*", "user": b, "count": 8, "fault": {"kind": "server_error", "status": 503}}),
            json!({"endpoint": "graph.*", "user": b, "count": 12, "fault": {"kind": "delay", "millis": 200}}),
        ] {
            t.world.control(Method::POST, "/_sandbox/faults", Some(fault)).await;
        }
        for _ in 0..30 {
            sync::run_until_idle(&worker, "w1", 200).await;
            if t.me(0).await["state"] == "up_to_date" && t.me(1).await["state"] == "up_to_date" {
                break;
            }
            // A step failed and waits for its retry: move both clocks (the app's and the provider's) together.
            t.world.app.clock.advance(SignedDuration::from_secs(2));
            t.world.control(Method::POST, "/_sandbox/clock/advance", Some(json!({"seconds": 2}))).await;
        }
        for i in 0..2 {
            let h = t.me(i).await;
            assert_eq!(h["state"], "up_to_date", "{h}");
            assert_eq!(h["messages_seen"], 30, "{h}");
        }
        let counters = t.world.control(Method::GET, "/_sandbox/counters", None).await;
        let users = &counters["providers"]["graph"]["users"];
        assert!(users[a]["responses_429"].as_u64().unwrap() >= 8, "the storm happened: {users}");
        for m in [a, b] {
            let u = &users[m];
            assert_eq!(u["quota_refusals"], 0, "never over the sandbox's quota or concurrency: {u}");
            assert!(u["peak_requests_per_sec"].as_u64().unwrap() <= 20, "{m}: {u}");
        }
    }

    async fn push_makes_a_new_message_sync_at_once_polling_catches_a_missed_one_and_subscriptions_are_renewed(db: TestDb) {
        let t = team(&db, 12).await;
        let app = &t.world.app;
        let mut config = app.state.config.clone();
        // The test app listens on plain http; production needs a public https URL.
        config.push.allow_http = true;
        let worker = AppState::new(config, app.store.clone(), app.state.keyring.clone(), Arc::new(app.clock.clone()));
        sync::run_until_idle(&worker, "w1", 200).await;
        assert_eq!(t.me(0).await["state"], "up_to_date");

        // Push is off for an http public URL, and the admin page says why.
        let admin = app.signed_in("ada@talent.example", "ada-password").await;
        let html = admin.get(app.at("/admin/sync-health")).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("data-enabled=\"false\""), "{html}");
        assert!(html.contains("Push is off"), "{html}");

        // The handshake is echoed as text/plain.
        let res = reqwest::Client::new().post(app.at("/hooks/graph?validationToken=a%20b%3Cc")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(res.text().await.unwrap(), "a b<c");

        // Subscriptions are created right after authorization (Graph validated our webhook), clientState sealed;
        // the maintenance pass then has nothing to do.
        let grant = hirewire_domain::ids::GrantId(t.grant_id(0).await);
        let other = hirewire_domain::ids::GrantId(t.grant_id(1).await);
        hirewire_server::push_hooks::inbox_authorized(&worker, grant);
        hirewire_server::push_hooks::inbox_authorized(&worker, other);
        for _ in 0..100 {
            if app.store.push_subscription(grant).await.unwrap().is_some()
                && app.store.push_subscription(other).await.unwrap().is_some()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(hirewire_server::push_hooks::maintain(&worker).await.unwrap(), Default::default());
        let sub = app.store.push_subscription(grant).await.unwrap().unwrap();
        let sealed = sub.client_state_sealed.clone().unwrap();
        assert!(app.state.keyring.open(&sealed).is_ok());

        // A forged notification (wrong clientState) enqueues nothing.
        let forged = json!({"value": [{"subscriptionId": sub.subscription_id, "clientState": "guess", "changeType": "created",
            "resource": "Users/x/Messages/y", "subscriptionExpirationDateTime": "2027-01-06T00:00:00Z", "tenantId": "t"}]});
        let res = reqwest::Client::new().post(app.at("/hooks/graph")).json(&forged).send().await.unwrap();
        assert_eq!(res.status(), 202);
        assert!(sync::run_one(&worker, "w1").await.is_none(), "nothing made due");

        // A candidate writes: the sandbox notifies, the webhook only makes the step due, and it runs without waiting for polling.
        let stored = |h: Value| h["messages_stored"].as_u64().unwrap();
        let before = stored(t.me(0).await);
        t.world
            .control(Method::POST, &format!("/_sandbox/mailboxes/{}/messages", t.recruiters[0].1),
                Some(json!({"from": CANDIDATES[0], "to": [t.recruiters[0].1], "subject": "Re: the role", "body": "Pushed.", "received_at": "2027-01-04T09:30:00Z"})))
            .await;
        let mut outcome = None;
        for _ in 0..100 {
            outcome = sync::run_one(&worker, "w1").await;
            if outcome.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(matches!(outcome, Some(SyncOutcome::Incremental { .. })), "{outcome:?}");
        assert_eq!(stored(t.me(0).await), before + 1, "the message appears");

        // A dropped notification: nothing is due until the polling interval, which catches it up.
        t.world.control(Method::POST, "/_sandbox/push/drop", Some(json!({"count": 1}))).await;
        t.world
            .control(Method::POST, &format!("/_sandbox/mailboxes/{}/messages", t.recruiters[0].1),
                Some(json!({"from": CANDIDATES[1], "to": [t.recruiters[0].1], "subject": "Missed", "body": "Dropped push.", "received_at": "2027-01-04T09:31:00Z"})))
            .await;
        assert!(sync::run_one(&worker, "w1").await.is_none());
        app.clock.advance(SignedDuration::try_from(worker.config.sync.incremental_interval).unwrap());
        sync::run_until_idle(&worker, "w1", 20).await;
        assert_eq!(stored(t.me(0).await), before + 2, "polling caught the missed one up");

        // Near its expiry a subscription is renewed (same id, later expiry); a fresh one is left alone.
        assert_eq!(hirewire_server::push_hooks::maintain(&worker).await.unwrap(), Default::default());
        let lifetime = sub.expires_at.duration_since(app.now());
        let by = lifetime - SignedDuration::from_hours(6);
        app.clock.advance(by);
        t.world.control(Method::POST, "/_sandbox/clock/advance", Some(json!({"seconds": by.as_secs()}))).await;
        let done = hirewire_server::push_hooks::maintain(&worker).await.unwrap();
        assert_eq!((done.renewed, done.failed), (2, 0), "{done:?}");
        let renewed = app.store.push_subscription(grant).await.unwrap().unwrap();
        assert_eq!(renewed.subscription_id, sub.subscription_id);
        assert!(renewed.expires_at > sub.expires_at);

        let text = hirewire_server::metrics::render(&app.state).await.unwrap();
        assert!(text.contains("hirewire_webhook_latency_seconds_count{hook=\"graph\"}"), "{text}");
    }

    async fn a_verified_gmail_push_makes_the_mailbox_sync_at_once_and_an_unsigned_one_is_refused(db: TestDb) {
        let t = team_on(&db, "google", 10).await;
        let app = &t.world.app;
        let base = t.world.sandbox.base_url();
        // This instance serves its own webhooks (the test app's configuration has no Gmail topic).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hooks = format!("http://{}", listener.local_addr().unwrap());
        let mut config = app.state.config.clone();
        config.push.allow_http = true;
        config.push.webhook_base = Some(hooks.parse().unwrap());
        config.push.gmail_topic = Some("projects/p/topics/gmail".into());
        config.push.pubsub_certs_url = Some(format!("{}/oauth2/v3/certs", base.trim_end_matches('/')));
        let worker = AppState::new(config, app.store.clone(), app.state.keyring.clone(), Arc::new(app.clock.clone()));
        let served = hirewire_server::router(worker.clone());
        tokio::spawn(async move { axum::serve(listener, served).await });
        t.world
            .control(Method::POST, "/_sandbox/push/topics", Some(json!({"name": "projects/p/topics/gmail", "push_endpoint": format!("{hooks}/hooks/gmail")})))
            .await;
        sync::run_until_idle(&worker, "w1", 200).await;
        assert_eq!(t.me(0).await["state"], "up_to_date");
        let done = hirewire_server::push_hooks::maintain(&worker).await.unwrap();
        assert_eq!((done.created, done.failed), (2, 0), "{done:?}");

        let res = reqwest::Client::new().post(format!("{hooks}/hooks/gmail"))
            .json(&json!({"message": {"data": "e30=", "messageId": "1"}, "subscription": "projects/p/subscriptions/s"}))
            .send().await.unwrap();
        assert_eq!(res.status(), 401, "no token, no enqueue");
        assert!(sync::run_one(&worker, "w1").await.is_none());

        let before = t.me(0).await["messages_stored"].as_u64().unwrap();
        t.world
            .control(Method::POST, &format!("/_sandbox/mailboxes/{}/messages", t.recruiters[0].1),
                Some(json!({"from": CANDIDATES[0], "to": [t.recruiters[0].1], "subject": "Re: the role", "body": "Pushed.", "received_at": "2027-01-04T09:30:00Z"})))
            .await;
        let mut outcome = None;
        for _ in 0..100 {
            outcome = sync::run_one(&worker, "w1").await;
            if outcome.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let deliveries = t.world.control(Method::GET, "/_sandbox/push/deliveries", None).await;
        assert!(matches!(outcome, Some(SyncOutcome::Incremental { .. })), "{outcome:?} {deliveries}");
        assert_eq!(t.me(0).await["messages_stored"].as_u64().unwrap(), before + 1);
    }
    async fn deauthorizing_an_inbox_deletes_its_graph_subscription_and_a_failed_delete_is_retried_by_a_job(db: TestDb) {
        let t = team(&db, 4).await;
        let (push, base) = push_instance(&t).await;
        let done = hirewire_server::push_hooks::maintain(&push).await.unwrap();
        assert_eq!((done.created, done.failed), (2, 0), "{done:?}");
        let (a, b) = (t.recruiters[0].1, t.recruiters[1].1);
        assert_eq!(subscribed(&t.world).await, vec![a.to_owned(), b.to_owned()]);
        let (grant_a, grant_b) = (t.grant_id(0).await, t.grant_id(1).await);

        // Riley deauthorizes: the subscription is deleted at Graph and forgotten here.
        deauthorize_inbox(&t, &base, 0).await;
        assert_eq!(subscribed(&t.world).await, vec![b.to_owned()]);
        let a_id = hirewire_domain::ids::GrantId(grant_a);
        assert!(t.world.app.store.push_subscription(a_id).await.unwrap().is_none());
        assert!(t.world.app.store.latest_job_with_key(&format!("push.unsubscribe:{grant_a}")).await.unwrap().is_none(), "nothing left to retry");

        // Graph fails while Sky deauthorizes: the inbox is deauthorized anyway and a job retries the delete.
        let fault = t.world
            .control(Method::POST, "/_sandbox/faults",
                Some(json!({"endpoint": "graph.subscriptions.delete", "user": b, "fault": {"kind": "server_error", "status": 503}})))
            .await;
        deauthorize_inbox(&t, &base, 1).await;
        assert!(t.world.app.store.grant(t.recruiters[1].0.id, CapabilityKind::Inbox).await.unwrap().is_none(), "deauthorized");
        let b_id = hirewire_domain::ids::GrantId(grant_b);
        assert!(t.world.app.store.push_subscription(b_id).await.unwrap().is_none(), "forgotten here");
        assert_eq!(subscribed(&t.world).await, vec![b.to_owned()], "still at Graph");
        let job = t.world.app.store.latest_job_with_key(&format!("push.unsubscribe:{grant_b}")).await.unwrap().expect("a retry job");
        assert!(job.run_at > t.world.app.now(), "retried later, not in a tight loop: {job:?}");
        let payload = job.payload.to_string();
        assert!(!payload.contains("Bearer") && payload.contains("token_sealed"), "the token is sealed in the job");
        assert!(hirewire_server::push_hooks::run_unsubscribe_job(&push, "w1").await.is_none(), "not due yet");

        // Still failing at the retry: queued again, later.
        t.world.app.clock.advance(job.run_at.duration_since(t.world.app.now()) + SignedDuration::from_secs(1));
        let r = hirewire_server::push_hooks::run_unsubscribe_job(&push, "w1").await;
        assert!(matches!(r, Some(Err(_))), "{r:?}");
        let again = t.world.app.store.latest_job_with_key(&format!("push.unsubscribe:{grant_b}")).await.unwrap().unwrap();
        assert_eq!(again.id, job.id);
        assert!(again.run_at > t.world.app.now());

        // Graph recovers: the next retry deletes it.
        let id = fault["id"].as_u64().unwrap();
        t.world.control(Method::DELETE, &format!("/_sandbox/faults/{id}"), None).await;
        t.world.app.clock.advance(again.run_at.duration_since(t.world.app.now()) + SignedDuration::from_secs(1));
        let r = hirewire_server::push_hooks::run_unsubscribe_job(&push, "w1").await;
        assert_eq!(r, Some(Ok(())));
        assert!(subscribed(&t.world).await.is_empty(), "no subscription left at Graph");
        assert!(hirewire_server::push_hooks::run_unsubscribe_job(&push, "w1").await.is_none());
    }

    async fn deauthorizing_a_gmail_inbox_stops_its_watch_before_revoking(db: TestDb) {
        let t = team_on(&db, "google", 4).await;
        let (push, base) = push_instance(&t).await;
        let done = hirewire_server::push_hooks::maintain(&push).await.unwrap();
        assert_eq!((done.created, done.failed), (2, 0), "{done:?}");
        let (a, b) = (t.recruiters[0].1, t.recruiters[1].1);
        assert_eq!(subscribed(&t.world).await, vec![a.to_owned(), b.to_owned()]);

        let said = deauthorize_inbox(&t, &base, 0).await;
        assert!(said["message"].as_str().unwrap().contains("revoked at Google"), "{said}");
        assert_eq!(subscribed(&t.world).await, vec![b.to_owned()], "users.stop was called with the token before it was revoked");
        assert!(t.world.app.store.push_subscription(hirewire_domain::ids::GrantId(t.grant_id(1).await)).await.unwrap().is_some());
        let counters = t.world.control(Method::GET, "/_sandbox/counters", None).await;
        assert!(counters.to_string().contains("gmail.users.stop"), "{counters}");

        // New mail for both: only the mailbox still watched is pushed (its push is the sign the other's would have come).
        for m in [a, b] {
            t.world
                .control(Method::POST, &format!("/_sandbox/mailboxes/{m}/messages"),
                    Some(json!({"from": CANDIDATES[0], "to": [m], "subject": "After", "body": "Who listens?", "received_at": "2027-01-04T09:30:00Z"})))
                .await;
        }
        let mut targets = Vec::new();
        for _ in 0..200 {
            let deliveries = t.world.control(Method::GET, "/_sandbox/push/deliveries", None).await;
            targets = deliveries.as_array().unwrap().iter().map(|d| d["target"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
            if targets.iter().any(|x| x == b) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(targets.iter().any(|x| x == b), "{targets:?}");
        assert!(!targets.iter().any(|x| x == a), "the stopped mailbox is not pushed: {targets:?}");
    }
}

/// The grants whose mail sync took a step in `outcomes`.
fn stepped(outcomes: &[SyncOutcome]) -> std::collections::BTreeSet<i64> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            SyncOutcome::Incremental { grant, .. } => Some(grant.get()),
            _ => None,
        })
        .collect()
}

both_backends! {
    async fn a_push_that_lands_while_its_mailbox_is_being_synced_still_brings_the_next_step_forward(db: TestDb) {
        let t = team(&db, 6).await;
        let worker = t.worker();
        sync::run_until_idle(&worker, "w1", 100).await;
        assert!(stepped(&sync::run_until_idle(&worker, "w1", 10).await).is_empty(), "both idle until the interval");
        // The polling interval passes; the provider is slow, so a push lands while a step runs.
        t.world.app.clock.advance(SignedDuration::try_from(worker.config.sync.incremental_interval).unwrap() + SignedDuration::from_secs(1));
        let slow = t.world
            .control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": "graph.*", "fault": {"kind": "delay", "millis": 700}})))
            .await;
        let w = worker.clone();
        let step = tokio::spawn(async move { sync::run_one(&w, "w1").await });
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let grants = [t.grant_id(0).await, t.grant_id(1).await];
        for g in grants {
            // What the webhooks do for a verified notification: one mailbox's step is running, the other's is queued.
            hirewire_server::push_hooks::sync_now(&worker, hirewire_domain::ids::GrantId(g)).await.unwrap();
        }
        let ran = step.await.unwrap();
        assert!(matches!(ran, Some(SyncOutcome::Incremental { .. })), "{ran:?}");
        t.world.control(Method::DELETE, &format!("/_sandbox/faults/{}", slow["id"].as_u64().unwrap()), None).await;

        // Both mailboxes take a step now, without waiting for the next interval: the running one too.
        let next = stepped(&sync::run_until_idle(&worker, "w1", 10).await);
        assert_eq!(next, grants.into_iter().collect(), "a push during a step is not lost");
    }
}

both_backends! {
    async fn a_background_worker_takes_every_due_incremental_step_without_waiting_for_its_poll(db: TestDb) {
        let t = team(&db, 6).await;
        sync::run_until_idle(&t.worker(), "w1", 100).await;
        t.world.app.clock.advance(SignedDuration::from_secs(3600));
        let due_since = t.world.app.now();
        // One worker whose idle poll is an hour: only an empty queue may make it wait.
        let mut config = t.worker().config.clone();
        config.sync.poll_interval = std::time::Duration::from_secs(3600);
        let state = AppState::new(config, t.world.app.store.clone(), t.world.app.state.keyring.clone(), Arc::new(t.world.app.clock.clone()));
        let workers = sync::spawn_workers(state, 1);
        let grants = [t.grant_id(0).await, t.grant_id(1).await];
        let mut synced = 0;
        for _ in 0..400 {
            synced = 0;
            for g in grants {
                let s = t.world.app.store.mail_sync_state(hirewire_domain::ids::GrantId(g)).await.unwrap().unwrap();
                if s.last_success_at.is_some_and(|at| at >= due_since) {
                    synced += 1;
                }
            }
            if synced == grants.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        workers.iter().for_each(tokio::task::JoinHandle::abort);
        assert_eq!(synced, grants.len(), "both mailboxes' due steps ran back to back");
    }
}

// ---- in a real browser (SQLite, one browser for this binary) -----------------------

mod browser {
    use super::*;
    use hirewire_store::Backend;
    use hirewire_testkit::page::{click, element, fill, follow, text};

    async fn sign_in(b: &fantoccini::Client, t: &Team, email: &str, password: &str) {
        b.goto(&t.world.app.at("/sign-in")).await.unwrap();
        fill(b, "#email", email).await;
        fill(b, "#password", password).await;
        follow(b, "#sign-in").await;
    }

    async fn attr(b: &fantoccini::Client, css: &str, name: &str) -> String {
        element(b, css)
            .await
            .attr(name)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_recruiter_sees_the_import_progress_then_what_to_do_and_the_admin_filters_to_who_needs_help()
     {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        let t = team(&db, 30).await;
        let worker = t.worker();
        sync::run_until_idle(&worker, "w1", 6).await;
        let b = hirewire_testkit::browser().await;

        // Riley reaches Email & calendar from the avatar menu and sees the import.
        sign_in(&b, &t, "riley@talent.example", "pw-12345678").await;
        click(&b, "#avatar").await;
        follow(&b, "#menu-product-settings").await;
        assert_eq!(attr(&b, "#sync-health", "data-state").await, "backfilling");
        assert_eq!(text(&b, "#sync-state").await, "Importing");
        let seen: u64 = text(&b, "#sync-seen").await.parse().unwrap();
        assert!(0 < seen && seen < 30, "{seen}");
        assert_eq!(text(&b, "#sync-estimate").await, "30");
        let percent: u64 = attr(&b, "#sync-progress", "value").await.parse().unwrap();
        assert_eq!(percent, seen * 100 / 30, "the bar shows the share imported");
        assert!(
            text(&b, "#sync-eta")
                .await
                .contains("left at your provider's pace")
        );
        assert!(
            text(&b, "#sync-last-success")
                .await
                .contains("Last successful sync")
        );

        // Riley's access is revoked at the provider; the sync stops and says why.
        t.world
            .control(
                Method::POST,
                &format!("/_sandbox/users/{}/revoke-grant", t.recruiters[0].1),
                None,
            )
            .await;
        t.world.app.clock.advance(SignedDuration::from_hours(2));
        sync::run_until_idle(&worker, "w1", 200).await;
        b.refresh().await.unwrap();
        assert_eq!(attr(&b, "#sync-health", "data-state").await, "paused");
        assert_eq!(attr(&b, "#sync-health", "data-attention").await, "true");
        assert!(
            text(&b, "#sync-state").await.contains("Paused"),
            "{}",
            text(&b, "#sync-state").await
        );
        assert!(
            text(&b, "#sync-summary").await.contains("reauthoriz"),
            "{}",
            text(&b, "#sync-summary").await
        );
        assert!(
            text(&b, "#authorize-inbox").await.contains("Reauthorize"),
            "the way out is one click away"
        );

        // The admin opens sync health and narrows it to the mailboxes that need help.
        click(&b, "#avatar").await;
        follow(&b, "#menu-sign-out").await;
        sign_in(&b, &t, "ada@talent.example", "ada-password").await;
        b.goto(&t.world.app.at("/admin/org")).await.unwrap();
        follow(&b, "#nav-sync-health").await;
        let riley = format!("#health-{}", t.grant_id(0).await);
        let sky = format!("#health-{}", t.grant_id(1).await);
        assert_eq!(attr(&b, &riley, "data-state").await, "paused");
        assert_eq!(attr(&b, &sky, "data-state").await, "up_to_date");
        follow(&b, "#filter-attention").await;
        element(&b, &riley).await;
        assert!(
            b.find(fantoccini::Locator::Css(&sky)).await.is_err(),
            "Sky's mailbox is fine, so the filter hides it"
        );
        follow(&b, "#filter-all").await;
        element(&b, &sky).await;
    }
}
