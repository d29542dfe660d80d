//! Feature flags: the seeded Email Connect flag, operator and org-scoped
//! changes, their audit entries (same transaction, before/after, never
//! another organization's part), and the outbox queries a flag change
//! needs — the same specification on SQLite and PostgreSQL.

use std::time::Duration;

use hirewire_domain::email::EmailAddress;
use hirewire_store::*;
use jiff::Timestamp;
use serde_json::json;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

const CLI: FlagActor<'static> = FlagActor {
    user: None,
    label: "cli",
    ip: None,
};

async fn org_with_user(store: &Store, name: &str, role: Role) -> (OrgId, User) {
    let org = store.create_org(name, &[], t(0)).await.unwrap().id;
    let user = user_in(
        store,
        org,
        &format!("a@{}.example", name.to_lowercase()),
        role,
    )
    .await;
    (org, user)
}

async fn user_in(store: &Store, org: OrgId, email: &str, role: Role) -> User {
    store
        .create_user(
            &NewUser {
                org_id: org,
                email: &EmailAddress::parse(email).unwrap(),
                display_name: "U",
                role,
                time_zone: "UTC",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap()
}

async fn flag(store: &Store) -> FeatureFlag {
    store.feature_flag(EMAIL_CONNECT).await.unwrap().unwrap()
}

async fn flag_audit(store: &Store, org: Option<OrgId>) -> Vec<AuditEvent> {
    store
        .list_audit(org, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == FLAG_CHANGED)
        .collect()
}

both_backends! {
    async fn a_fresh_database_has_email_connect_on_for_everyone(store: Store) {
        let f = flag(&store).await;
        assert_eq!(f.name, EMAIL_CONNECT);
        assert_eq!(f.mode, FlagMode::Everyone);
        assert_eq!(f.percent, 0);
        assert!(f.orgs.is_empty() && f.users.is_empty());
        assert_eq!(f.version, 0);
        assert!(store.feature_flag("no_such_flag").await.unwrap().is_none());
    }

    async fn the_operator_sets_mode_percent_orgs_and_users_and_each_change_is_audited(store: Store) {
        let (acme, ada) = org_with_user(&store, "Acme", Role::Admin).await;
        let (globex, gil) = org_with_user(&store, "Globex", Role::Recruiter).await;
        let edit = FlagEdit {
            mode: Some(FlagMode::Targeted),
            percent: Some(20),
            orgs: vec![(acme, Some(OrgRule::In)), (globex, Some(OrgRule::Out))],
            add_users: vec![gil.id],
            remove_users: vec![],
        };
        let (before, after) = store.update_feature_flag(EMAIL_CONNECT, None, &edit, &CLI, t(10)).await.unwrap();
        assert_eq!(before.mode, FlagMode::Everyone);
        assert_eq!(after.mode, FlagMode::Targeted);
        assert_eq!(after.percent, 20);
        assert_eq!(after.org_rule(acme), Some(OrgRule::In));
        assert_eq!(after.org_rule(globex), Some(OrgRule::Out));
        assert_eq!(after.users.get(&gil.id), Some(&globex), "a user is kept with their org");
        assert_eq!(after.version, 1);
        assert_eq!(after.updated_at, Some(t(10)));
        assert_eq!(flag(&store).await, after, "read back as written");

        // The operator's log (no org) has the whole flag, before and after, by "cli".
        let global = flag_audit(&store, None).await;
        assert_eq!(global.len(), 1);
        assert_eq!(global[0].target, EMAIL_CONNECT);
        assert_eq!(global[0].actor_user_id, None);
        assert_eq!(global[0].detail["actor"], "cli");
        assert_eq!(global[0].detail["before"]["mode"], "everyone");
        assert_eq!(global[0].detail["after"], json!({"mode": "targeted", "percent": 20,
            "orgs_in": [acme.get()], "orgs_out": [globex.get()], "users": [gil.id.get()]}));
        // Each touched org sees its own part only.
        let a = flag_audit(&store, Some(acme)).await;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].detail["before"]["org"], "default");
        assert_eq!(a[0].detail["after"], json!({"mode": "targeted", "percent": 20, "org": "in", "users": []}));
        let g = flag_audit(&store, Some(globex)).await;
        assert_eq!(g[0].detail["after"], json!({"mode": "targeted", "percent": 20, "org": "out", "users": [gil.id.get()]}));

        // Clearing rules and users; the mode alone.
        let edit = FlagEdit { orgs: vec![(acme, None)], remove_users: vec![gil.id], ..FlagEdit::default() };
        let (_, after) = store.update_feature_flag(EMAIL_CONNECT, None, &edit, &CLI, t(20)).await.unwrap();
        assert_eq!(after.org_rule(acme), None);
        assert!(after.users.is_empty());
        assert_eq!(after.version, 2);
        let (_, after) = store
            .update_feature_flag(EMAIL_CONNECT, None, &FlagEdit { mode: Some(FlagMode::Off), ..FlagEdit::default() }, &CLI, t(30))
            .await
            .unwrap();
        assert_eq!((after.mode, after.percent), (FlagMode::Off, 20), "the percentage is kept for later");
        assert_eq!(flag_audit(&store, None).await.len(), 3);
        let _ = ada;
    }

    async fn bad_changes_are_refused_and_write_nothing(store: Store) {
        let (acme, _) = org_with_user(&store, "Acme", Role::Admin).await;
        let refused = [
            FlagEdit { percent: Some(101), ..FlagEdit::default() },
            FlagEdit { orgs: vec![(OrgId(987_654), Some(OrgRule::In))], ..FlagEdit::default() },
            FlagEdit { add_users: vec![UserId(987_654)], ..FlagEdit::default() },
        ];
        for edit in &refused {
            let err = store.update_feature_flag(EMAIL_CONNECT, None, edit, &CLI, t(1)).await.unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_) | StoreError::NotFound), "{edit:?}: {err:?}");
        }
        let err = store
            .update_feature_flag("no_such_flag", None, &FlagEdit { orgs: vec![(acme, Some(OrgRule::In))], ..FlagEdit::default() }, &CLI, t(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound));
        assert_eq!(flag(&store).await.version, 0, "nothing changed");
        assert!(flag_audit(&store, None).await.is_empty());
        assert!(flag_audit(&store, Some(acme)).await.is_empty());
        // A change that changes nothing is not a change: no audit entry.
        let same = FlagEdit { mode: Some(FlagMode::Everyone), ..FlagEdit::default() };
        let (b, a) = store.update_feature_flag(EMAIL_CONNECT, None, &same, &CLI, t(2)).await.unwrap();
        assert_eq!(b, a);
        assert!(flag_audit(&store, None).await.is_empty());
    }

    async fn an_org_admin_changes_only_their_own_org_and_sees_only_their_part(store: Store) {
        let (acme, ada) = org_with_user(&store, "Acme", Role::Admin).await;
        let riley = user_in(&store, acme, "riley@acme.example", Role::Recruiter).await;
        let (globex, gil) = org_with_user(&store, "Globex", Role::Recruiter).await;
        // The operator allowlists a Globex user first.
        store
            .update_feature_flag(EMAIL_CONNECT, None, &FlagEdit { add_users: vec![gil.id], orgs: vec![(globex, Some(OrgRule::In))], ..FlagEdit::default() }, &CLI, t(1))
            .await
            .unwrap();
        let admin = FlagActor { user: Some(ada.id), label: "admin a@acme.example", ip: Some("10.0.0.1") };
        let own = FlagEdit { orgs: vec![(acme, Some(OrgRule::Out))], add_users: vec![riley.id], ..FlagEdit::default() };
        let (_, after) = store.update_feature_flag(EMAIL_CONNECT, Some(acme), &own, &admin, t(5)).await.unwrap();
        assert_eq!(after.org_rule(acme), Some(OrgRule::Out));
        assert!(after.users.contains_key(&riley.id));
        assert!(after.users.contains_key(&gil.id), "the other org's part is untouched");

        for (edit, what) in [
            (FlagEdit { orgs: vec![(globex, Some(OrgRule::Out))], ..FlagEdit::default() }, "another org's rule"),
            (FlagEdit { add_users: vec![gil.id], ..FlagEdit::default() }, "another org's user"),
            (FlagEdit { remove_users: vec![gil.id], ..FlagEdit::default() }, "removing another org's user"),
            (FlagEdit { mode: Some(FlagMode::Off), ..FlagEdit::default() }, "the mode"),
            (FlagEdit { percent: Some(50), ..FlagEdit::default() }, "the percentage"),
        ] {
            let err = store.update_feature_flag(EMAIL_CONNECT, Some(acme), &edit, &admin, t(6)).await.unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_) | StoreError::NotFound), "{what}: {err:?}");
        }
        assert_eq!(flag(&store).await, after, "refused changes wrote nothing");

        // Acme's log: its own change, by Ada, with only Acme's part.
        let a = flag_audit(&store, Some(acme)).await;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].actor_user_id, Some(ada.id));
        assert_eq!(a[0].ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(a[0].detail["before"], json!({"mode": "everyone", "percent": 0, "org": "default", "users": []}));
        assert_eq!(a[0].detail["after"], json!({"mode": "everyone", "percent": 0, "org": "out", "users": [riley.id.get()]}));
        // (The exact values above hold no other org's rule or users: no `orgs_in`, no Gil.)
        assert!(a[0].detail["after"].get("orgs_in").is_none());
        // The org admin's change is not in Globex's log, nor in the operator's (org-less) log.
        assert_eq!(flag_audit(&store, Some(globex)).await.len(), 1);
        assert_eq!(flag_audit(&store, None).await.len(), 1);
    }

    async fn held_outbox_messages_are_counted_per_sender_and_released_together(store: Store) {
        let (acme, riley) = org_with_user(&store, "Acme", Role::Recruiter).await;
        let (globex, gil) = org_with_user(&store, "Globex", Role::Recruiter).await;
        let mut ids = Vec::new();
        for (i, (org, user)) in [(acme, &riley), (acme, &riley), (globex, &gil)].into_iter().enumerate() {
            let grant = store
                .put_grant(&NewGrant {
                    org_id: org, user_id: user.id, capability: CapabilityKind::Inbox,
                    provider: ProviderChoice::Google, status: GrantStatus::Active, status_reason: None,
                    account_address: None, scopes: "gmail.send", permission_version: 1, legacy: false,
                    access_token_sealed: None, refresh_token_sealed: None, access_expires_at: None,
                }, t(0))
                .await
                .unwrap();
            let cand = store
                .create_candidate(org, &format!("Cand {i}"), &[EmailAddress::parse(&format!("c{i}@mail.example")).unwrap()], t(0))
                .await
                .unwrap()
                .id;
            let to = vec![format!("c{i}@mail.example")];
            let item = store
                .create_outbox(org, &NewOutboxItem {
                    user_id: user.id, candidate_id: cand, grant_id: grant.id, to: &to, cc: &[],
                    subject: "Hello", body_markdown: "Hi", attachments: &[], message_id: &format!("m{i}@hirewire.test"),
                    in_reply_to: None, references: &[], thread_hint: None, send_at: Some(t(100)),
                }, 1_000_000, t(0))
                .await
                .unwrap();
            ids.push(item.id);
        }
        let mut counts = store.queued_outbox_by_user(None).await.unwrap();
        counts.sort();
        assert_eq!(counts, vec![(acme, riley.id, 2), (globex, gil.id, 1)]);
        assert_eq!(store.queued_outbox_by_user(Some(globex)).await.unwrap(), vec![(globex, gil.id, 1)]);

        // Two are held (claimed when due, then told to wait an hour), one is cancelled.
        for _ in 0..2 {
            let c = store.claim_outbox("w", t(100), Duration::from_secs(60)).await.unwrap().unwrap();
            store
                .finish_outbox(c.item.id, c.fencing_token, &OutboxOutcome::Wait { at: t(3700), reason: "Held: off" }, t(100))
                .await
                .unwrap();
        }
        store.cancel_outbox(globex, ids[2], t(101)).await.unwrap();
        assert_eq!(store.queued_outbox_by_user(None).await.unwrap(), vec![(acme, riley.id, 2)]);
        assert_eq!(store.release_outbox_holds(Some(globex), t(200)).await.unwrap(), 0, "another org's holds stay");
        assert_eq!(store.release_outbox_holds(None, t(200)).await.unwrap(), 2);
        for id in &ids[..2] {
            let item = store.outbox_item(acme, *id).await.unwrap().unwrap();
            assert_eq!(item.due_at, t(200));
        }
        assert_eq!(store.release_outbox_holds(None, t(300)).await.unwrap(), 0, "nothing waits past t(300) now");
    }
}
