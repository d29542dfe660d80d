//! Email Connect's rollout flag (issue 8, point 6): stored in the database,
//! changed by the operator (here through `flags::change_email_connect`, what
//! the CLI calls) and by org admins through the API and the admin page, on
//! both storage backends. Org admins see and change only their organization;
//! turning the flag off holds scheduled sends (after a confirmation) and
//! turning it back on releases them.

use std::collections::BTreeMap;
use std::sync::Arc;

use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::{CandidateId, OrgId, UserId};
use hirewire_server::AppState;
use hirewire_server::flags::{self, Changed, Rollout, bucket};
use hirewire_server::outbox::{self, ComposeInput, Readiness, Turn};
use hirewire_server::testing::{ADMIN, Answer, Landing, RECRUITER, TestApp, World, hidden_csrf};
use hirewire_store::testing::TestDb;
use hirewire_store::{
    AccessLevelSetting, EMAIL_CONNECT, FlagActor, FlagEdit, FlagMode, OrgRule, OutboxStatus, User,
    both_backends, normalize_message_id,
};
use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{Value, json};

const FLAG_API: &str = "/admin/feature-flags/email-connect";
const OPERATOR: FlagActor<'static> = FlagActor {
    user: None,
    label: "cli",
    ip: None,
};

/// The operator's change (what `hirewire flags set` does), confirmed.
async fn operator_sets(state: &AppState, edit: FlagEdit, user_orgs: &[(UserId, OrgId)]) {
    let user_orgs: BTreeMap<UserId, OrgId> = user_orgs.iter().copied().collect();
    let changed = flags::change_email_connect(state, None, &edit, &user_orgs, &OPERATOR, true)
        .await
        .unwrap();
    assert!(matches!(changed, Changed::Saved { .. }));
}

/// The path to queue an email to a candidate through the API.
fn compose_path(candidate: CandidateId) -> String {
    format!("/candidates/{candidate}/emails")
}

struct Two {
    app: TestApp,
    acme: OrgId,
    globex: OrgId,
    ada: User,
    riley: User,
    sam: User,
    gil: User,
}

async fn two_orgs(db: &TestDb) -> Two {
    let app = TestApp::start(db).await;
    let acme = app.org("Acme", &["acme.example"]).await;
    let globex = app.org("Globex", &["globex.example"]).await;
    let ada = app
        .user(acme, "ada@acme.example", ADMIN, "ada-password")
        .await;
    let riley = app
        .user(acme, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    let sam = app
        .user(acme, "sam@acme.example", RECRUITER, "sam-password")
        .await;
    let gil = app
        .user(globex, "gil@globex.example", ADMIN, "gil-password")
        .await;
    Two {
        app,
        acme,
        globex,
        ada,
        riley,
        sam,
        gil,
    }
}

fn member<'a>(resource: &'a Value, email: &str) -> &'a Value {
    resource["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == email)
        .unwrap_or_else(|| panic!("{email} in {resource}"))
}

/// A recruiter with an authorized Microsoft inbox (through the sandbox), a
/// candidate, and the org's admin.
struct Sending {
    world: World,
    org: OrgId,
    riley: User,
    candidate: CandidateId,
}

async fn sending(db: &TestDb) -> Sending {
    let world = World::start(db).await;
    let org = world.app.org("Talent Co", &["acme.example"]).await;
    world
        .app
        .user(org, "ada@talent.example", ADMIN, "ada-password")
        .await;
    let riley = world
        .app
        .user(org, "riley@talent.example", RECRUITER, "riley-password")
        .await;
    world
        .use_provider(org, "microsoft", None, AccessLevelSetting::SendAndView)
        .await;
    let client = world
        .app
        .signed_in("riley@talent.example", "riley-password")
        .await;
    match world
        .authorize(
            &client,
            "/settings/email-calendar/inbox/authorize",
            &[],
            "adele@acme.example",
            Answer::AcceptAll,
        )
        .await
    {
        Landing::Redirect(url) => {
            let body = client.get(url).send().await.unwrap().text().await.unwrap();
            assert!(body.contains("data-code=\"authorized\""), "{body}");
        }
        Landing::Page(status, html) => panic!("stuck at a sandbox page ({status}): {html}"),
    }
    let candidate = world
        .app
        .store
        .create_candidate(
            org,
            "Jordan Rivers",
            &[EmailAddress::parse("hank@globex.example").unwrap()],
            world.app.now(),
        )
        .await
        .unwrap()
        .id;
    Sending {
        world,
        org,
        riley,
        candidate,
    }
}

impl Sending {
    /// Another instance on the same database and clock (its own flag cache).
    fn instance(&self) -> AppState {
        let app = &self.world.app;
        let mut config = app.state.config.clone();
        config.outbox.pacing = None;
        AppState::new(
            config,
            app.store.clone(),
            app.state.keyring.clone(),
            Arc::new(app.clock.clone()),
        )
    }

    fn advance(&self, secs: i64) {
        self.world
            .app
            .clock
            .advance(SignedDuration::from_secs(secs));
    }

    async fn sends_of(&self, message_id: &str) -> usize {
        let r = self
            .world
            .control(
                Method::GET,
                "/_sandbox/mailboxes/adele@acme.example/sent",
                None,
            )
            .await;
        r["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r["message_id"]
                    .as_str()
                    .and_then(normalize_message_id)
                    .as_deref()
                    == Some(message_id)
            })
            .count()
    }

    async fn page(&self, client: &reqwest::Client, path: &str) -> String {
        client
            .get(self.world.app.at(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

both_backends! {
    async fn a_fresh_install_has_email_connect_for_everyone(db: TestDb) {
        let t = two_orgs(&db).await;
        let token = t.app.api_token(&t.ada).await;
        let got: Value = t.app.api(&token).get(FLAG_API).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["mode"], "everyone");
        assert_eq!(got["org"], "default");
        assert_eq!(member(&got, "sam@acme.example")["enabled"], true);
        assert_eq!(member(&got, "sam@acme.example")["reason"], "everyone");
        assert!(flags::email_connect_enabled(&t.app.state, &t.gil).await.unwrap());
        let doc: Value = reqwest::get(t.app.at("/api/openapi.json")).await.unwrap().json().await.unwrap();
        for m in ["get", "put"] {
            assert!(doc["paths"][FLAG_API][m].is_object(), "{m} {FLAG_API} is documented");
        }
    }

    async fn an_org_admin_sees_and_changes_only_their_own_org_through_the_api(db: TestDb) {
        let t = two_orgs(&db).await;
        let ada = t.app.api(&t.app.api_token(&t.ada).await);
        let gil = t.app.api(&t.app.api_token(&t.gil).await);
        let riley = t.app.api(&t.app.api_token(&t.riley).await);

        // Admins only.
        let r = riley.get(FLAG_API).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
        let r = riley.put(FLAG_API).json(&json!({"org": "in", "users": []})).send().await.unwrap();
        assert_eq!(r.status(), 403);

        // Acme opts out but keeps Riley.
        let r = ada.put(FLAG_API).json(&json!({"org": "out", "users": ["RILEY@acme.example"]})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let got: Value = r.json().await.unwrap();
        assert_eq!(got["org"], "out");
        assert_eq!(got["users"], json!(["riley@acme.example"]));
        assert_eq!(member(&got, "riley@acme.example")["reason"], "user_allowlisted");
        assert_eq!(member(&got, "sam@acme.example")["enabled"], false);
        assert_eq!(member(&got, "sam@acme.example")["reason"], "org_opted_out");
        assert!(flags::email_connect_enabled(&t.app.state, &t.riley).await.unwrap());
        assert!(!flags::email_connect_enabled(&t.app.state, &t.sam).await.unwrap());
        assert!(flags::email_connect_enabled(&t.app.state, &t.gil).await.unwrap(), "Globex is not affected");

        // Sam's API call to send gets 403 feature_not_enabled.
        let cand = t.app.store
            .create_candidate(t.acme, "Jordan", &[EmailAddress::parse("jordan@mail.example").unwrap()], t.app.now())
            .await
            .unwrap()
            .id;
        let sam = t.app.api(&t.app.api_token(&t.sam).await);
        let r = sam.post(&compose_path(cand))
            .json(&json!({"to": ["jordan@mail.example"], "subject": "Hi", "body_markdown": "Hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "feature_not_enabled");

        // Globex's admin sees Globex only: no Acme users, Acme's setting invisible.
        let g: Value = gil.get(FLAG_API).send().await.unwrap().json().await.unwrap();
        assert_eq!(g["org"], "default");
        assert_eq!(g["users"], json!([]));
        assert_eq!(g["members"].as_array().unwrap().len(), 1);
        assert!(!g.to_string().contains("acme.example"), "{g}");
        // ... and cannot allowlist Acme's users (no hint they exist).
        let r = gil.put(FLAG_API).json(&json!({"org": "default", "users": ["riley@acme.example"]})).send().await.unwrap();
        assert_eq!(r.status(), 422);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "unknown_user");
        assert!(e["error"]["message"].as_str().unwrap().contains("in your organization"), "{e}");

        // Bad input: stable codes, nothing changed.
        for (body, status, code) in [
            (json!({"org": "sideways", "users": []}), 422, "invalid_org_setting"),
            (json!({"org": "in", "users": [], "percent": 100}), 422, "invalid_field"),
            (json!({"org": "in"}), 422, "invalid_field"),
        ] {
            let r = ada.put(FLAG_API).json(&body).send().await.unwrap();
            assert_eq!(r.status(), status, "{body}");
            assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code, "{body}");
        }
        let r = ada.put(FLAG_API).header("content-type", "application/json").body("{").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_json");
        let flag = t.app.store.feature_flag(EMAIL_CONNECT).await.unwrap().unwrap();
        assert_eq!(flag.version, 1, "one change so far");

        // Audited in Acme's log only, by Ada, with Acme's part before and after.
        let acme_log: Vec<_> = t.app.store.list_audit(Some(t.acme), 50).await.unwrap()
            .into_iter().filter(|e| e.action == "feature_flag.changed").collect();
        assert_eq!(acme_log.len(), 1);
        assert_eq!(acme_log[0].actor_user_id, Some(t.ada.id));
        assert_eq!(acme_log[0].detail["before"]["org"], "default");
        assert_eq!(acme_log[0].detail["after"]["org"], "out");
        assert_eq!(acme_log[0].detail["after"]["users"], json!([t.riley.id.get()]));
        let globex_log = t.app.store.list_audit(Some(t.globex), 50).await.unwrap();
        assert!(globex_log.iter().all(|e| e.action != "feature_flag.changed"));

        // The operator's mode is theirs: off beats Acme's allowlist.
        operator_sets(&t.app.state, FlagEdit { mode: Some(FlagMode::Off), ..FlagEdit::default() }, &[]).await;
        let got: Value = ada.get(FLAG_API).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["mode"], "off");
        assert_eq!(member(&got, "riley@acme.example")["reason"], "off");
        assert!(!flags::email_connect_enabled(&t.app.state, &t.riley).await.unwrap());
    }

    async fn percent_0_and_100_and_the_stable_hash(db: TestDb) {
        let t = two_orgs(&db).await;
        let mut users = Vec::new();
        for i in 0..40 {
            users.push(t.app.user(t.globex, &format!("u{i}@globex.example"), RECRUITER, "pw-pw-pw-pw").await);
        }
        // A second instance on the same database (its own cache), and a clock past its TTL.
        let other = AppState::new(
            t.app.state.config.clone(),
            t.app.store.clone(),
            t.app.state.keyring.clone(),
            Arc::new(t.app.clock.clone()),
        );
        let ttl = SignedDuration::try_from(t.app.state.config.flags.cache_ttl).unwrap();
        let enabled = |state: AppState, users: Vec<User>| async move {
            let mut out = Vec::new();
            for u in &users {
                out.push(flags::email_connect_enabled(&state, u).await.unwrap());
            }
            out
        };

        operator_sets(&t.app.state, FlagEdit { mode: Some(FlagMode::Targeted), percent: Some(0), ..FlagEdit::default() }, &[]).await;
        t.app.clock.advance(ttl);
        assert!(enabled(t.app.state.clone(), users.clone()).await.iter().all(|e| !e), "nobody at 0%");
        assert!(enabled(other.clone(), users.clone()).await.iter().all(|e| !e));

        operator_sets(&t.app.state, FlagEdit { percent: Some(100), ..FlagEdit::default() }, &[]).await;
        t.app.clock.advance(ttl);
        assert!(enabled(t.app.state.clone(), users.clone()).await.iter().all(|e| *e), "everybody at 100%");

        operator_sets(&t.app.state, FlagEdit { percent: Some(50), ..FlagEdit::default() }, &[]).await;
        t.app.clock.advance(ttl);
        let here = enabled(t.app.state.clone(), users.clone()).await;
        let again = enabled(t.app.state.clone(), users.clone()).await;
        let there = enabled(other.clone(), users.clone()).await;
        assert_eq!(here, again, "the same answer on every evaluation");
        assert_eq!(here, there, "the same answer on every instance");
        let expected: Vec<bool> = users.iter().map(|u| bucket(u.id) < 50).collect();
        assert_eq!(here, expected, "a user is in a p% rollout exactly when their bucket is under p");
        assert!(here.iter().any(|e| *e) && here.iter().any(|e| !e), "50% splits 40 users: {here:?}");

        // At 0%, an allowlisted user and the users of an opted-in org have it.
        operator_sets(
            &t.app.state,
            FlagEdit { percent: Some(0), orgs: vec![(t.acme, Some(OrgRule::In))], add_users: vec![users[0].id], ..FlagEdit::default() },
            &[(users[0].id, t.globex)],
        ).await;
        assert!(flags::email_connect_enabled(&t.app.state, &users[0]).await.unwrap());
        assert!(!flags::email_connect_enabled(&t.app.state, &users[1]).await.unwrap());
        assert!(flags::email_connect_enabled(&t.app.state, &t.sam).await.unwrap());
        assert!(flags::email_connect_enabled(&t.app.state, &t.ada).await.unwrap());
        // The other instance sees the change once its cache expires (not before).
        assert!(flags::email_connect_enabled(&other, &users[1]).await.unwrap() == (bucket(users[1].id) < 50));
        t.app.clock.advance(ttl);
        assert!(!flags::email_connect_enabled(&other, &users[1]).await.unwrap());
        assert!(flags::email_connect_enabled(&other, &users[0]).await.unwrap());
        let r = Rollout::from_flag(&t.app.store.feature_flag(EMAIL_CONNECT).await.unwrap().unwrap());
        assert_eq!(r.percent, 0);
    }

    async fn turning_it_off_on_the_admin_page_asks_first_holds_scheduled_sends_and_turning_it_on_releases_them(db: TestDb) {
        let s = sending(&db).await;
        let app = &s.world.app;
        let worker = s.instance();
        let input = ComposeInput {
            to: vec!["hank@globex.example".into()],
            subject: "Tomorrow".into(),
            body_markdown: "Are you free?".into(),
            send_at: Some(app.now() + SignedDuration::from_hours(1)),
            ..ComposeInput::default()
        };
        let item = outbox::submit(&worker, &s.riley, s.candidate, input).await.unwrap();

        // The admin opts the org out on the page: first a confirmation naming the held email.
        let admin = app.signed_in("ada@talent.example", "ada-password").await;
        let page = s.page(&admin, "/admin/email-connect").await;
        assert!(page.contains("On for everyone"), "{page}");
        let csrf = hidden_csrf(&page).unwrap();
        let r = admin.post(app.at("/admin/email-connect")).form(&[("_csrf", csrf.as_str()), ("org", "out")]).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let confirm = r.text().await.unwrap();
        assert!(confirm.contains("1 scheduled email will be held"), "{confirm}");
        assert!(confirm.contains("riley@talent.example"), "{confirm}");
        assert!(
            matches!(outbox::readiness(&app.state, &s.riley).await.unwrap(), Readiness::Ready { .. }),
            "nothing changed before the confirmation"
        );
        // A form without the CSRF token is refused.
        let r = admin.post(app.at("/admin/email-connect")).form(&[("org", "out"), ("confirm", "yes")]).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("did not come from hirewire"));
        let csrf = hidden_csrf(&confirm).unwrap();
        let r = admin
            .post(app.at("/admin/email-connect"))
            .form(&[("_csrf", csrf.as_str()), ("org", "out"), ("confirm", "yes")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let page = s.page(&admin, "/admin/email-connect?saved=1").await;
        assert!(page.contains("Saved.") && page.contains("1 scheduled email is held"), "{page}");

        // Riley is told: the compose box is replaced by the notice, and the held email says why.
        let recruiter = app.signed_in("riley@talent.example", "riley-password").await;
        let cpage = s.page(&recruiter, &format!("/candidates/{}", s.candidate)).await;
        assert!(cpage.contains("data-code=\"feature_not_enabled\""), "{cpage}");
        assert!(!cpage.contains("id=\"compose-form\""));
        assert!(cpage.contains("Your 1 scheduled email is held"), "{cpage}");
        let sched = s.page(&recruiter, "/scheduled").await;
        assert!(sched.contains("id=\"held-notice\""), "{sched}");
        assert!(sched.contains("Held: Email Connect is turned off for you"), "{sched}");

        // Its time comes: the worker (another instance) holds it; nothing is sent.
        s.advance(3600);
        assert_eq!(outbox::run_one(&worker, "w1").await.unwrap(), Some(Turn::Waiting(item.id)));
        let held = app.store.outbox_item(s.org, item.id).await.unwrap().unwrap();
        assert_eq!(held.status, OutboxStatus::Queued);
        assert!(held.hold_reason.as_deref().unwrap_or("").contains("turned off"), "{held:?}");
        assert_eq!(s.sends_of(&item.message_id).await, 0);

        // Back on through the API: the held email is due again one cache TTL later, and goes out once.
        let token = app.api_token(&app.store.user_by_email_key(&hirewire_domain::email::AddressKey::of("ada@talent.example")).await.unwrap().unwrap()).await;
        let r = app.api(&token).put(FLAG_API).json(&json!({"org": "default", "users": []})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let ttl = SignedDuration::try_from(app.state.config.flags.cache_ttl).unwrap();
        let released = app.store.outbox_item(s.org, item.id).await.unwrap().unwrap();
        assert_eq!(released.due_at, app.now() + ttl, "not the hold's five-minute re-check");
        s.world.app.clock.advance(ttl);
        assert_eq!(outbox::run_one(&worker, "w1").await.unwrap(), Some(Turn::Sent(item.id)));
        assert_eq!(s.sends_of(&item.message_id).await, 1);
        assert_eq!(outbox::run_one(&worker, "w1").await.unwrap(), None);
    }
}
