//! Provider settings, grants and OAuth states: the same specification on
//! SQLite and PostgreSQL.

use std::time::Duration;

use hirewire_domain::email::EmailAddress;
use hirewire_store::testing::TestDb;
use hirewire_store::*;
use jiff::Timestamp;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

async fn recruiter(store: &Store, org_name: &str, email: &str) -> User {
    let org = match store.org_by_name(org_name).await.unwrap() {
        Some(o) => o.id,
        None => store.create_org(org_name, &[], t(0)).await.unwrap().id,
    };
    let email = EmailAddress::parse(email).unwrap();
    store
        .create_user(
            &NewUser {
                org_id: org,
                email: &email,
                display_name: "R",
                role: Role::Recruiter,
                time_zone: "UTC",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap()
}

fn grant<'a>(u: &User, capability: CapabilityKind, address: &'a str) -> NewGrant<'a> {
    NewGrant {
        org_id: u.org_id,
        user_id: u.id,
        capability,
        provider: ProviderChoice::Microsoft,
        status: GrantStatus::Active,
        status_reason: None,
        account_address: Some(address),
        scopes: "Mail.Read User.Read",
        permission_version: 2,
        legacy: false,
        access_token_sealed: Some("sealed-access"),
        refresh_token_sealed: Some("sealed-refresh"),
        access_expires_at: Some(t(3600)),
    }
}

both_backends! {
    async fn provider_settings_are_saved_replaced_and_scoped_to_their_org(store: Store) {
        let u = recruiter(&store, "Acme", "a@acme.example").await;
        let other = recruiter(&store, "Globex", "g@globex.example").await;
        assert_eq!(store.provider_settings(u.org_id).await.unwrap(), None);
        let mut s = ProviderSettings {
            org_id: u.org_id,
            provider: ProviderChoice::Microsoft,
            client_id: "client".into(),
            client_secret_sealed: Some("v1.k.n.c".into()),
            tenant: Some("acme.example".into()),
            access_level: AccessLevelSetting::SendAndView,
            consent_state: ConsentState::Unknown,
            consent_by: None,
            consent_at: None,
            consent_detail: None,
            purge_on_deauthorize: false,
            updated_at: t(1),
        };
        store.save_provider_settings(&s).await.unwrap();
        s.provider = ProviderChoice::Google;
        s.purge_on_deauthorize = true;
        store.save_provider_settings(&s).await.unwrap();
        assert_eq!(store.provider_settings(u.org_id).await.unwrap(), Some(s.clone()));
        assert_eq!(store.provider_settings(other.org_id).await.unwrap(), None);
        store.set_consent_state(u.org_id, ConsentState::Recorded, Some(u.id), Some("admin_consent=True"), t(5)).await.unwrap();
        let saved = store.provider_settings(u.org_id).await.unwrap().unwrap();
        assert_eq!((saved.consent_state, saved.consent_by, saved.consent_at), (ConsentState::Recorded, Some(u.id), Some(t(5))));
        assert!(matches!(store.set_consent_state(other.org_id, ConsentState::Recorded, None, None, t(5)).await, Err(StoreError::NotFound)));
    }

    async fn a_user_has_at_most_one_grant_per_capability_and_a_new_one_replaces_it(store: Store) {
        let u = recruiter(&store, "Acme", "a@acme.example").await;
        let inbox = store.put_grant(&grant(&u, CapabilityKind::Inbox, "a@acme.example"), t(1)).await.unwrap();
        let cal = store.put_grant(&grant(&u, CapabilityKind::Calendar, "a@acme.example"), t(1)).await.unwrap();
        assert_ne!(inbox.id, cal.id);
        let mut again = grant(&u, CapabilityKind::Inbox, "other@acme.example");
        again.status = GrantStatus::NeedsReauth;
        let replaced = store.put_grant(&again, t(2)).await.unwrap();
        assert_eq!(replaced.id, inbox.id, "same row, replaced");
        assert_eq!(replaced.account_address.as_deref(), Some("other@acme.example"));
        assert_eq!(store.org_grants(u.org_id).await.unwrap().len(), 2);
        let deleted = store.delete_grant(u.id, CapabilityKind::Inbox).await.unwrap().unwrap();
        assert_eq!(deleted.id, inbox.id);
        assert_eq!(store.grant(u.id, CapabilityKind::Inbox).await.unwrap(), None);
        assert!(store.grant(u.id, CapabilityKind::Calendar).await.unwrap().is_some(), "the other capability is untouched");
        assert!(!format!("{cal:?}").contains("sealed-refresh"), "Debug leaves secrets out");
    }

    async fn only_one_refresh_per_grant_runs_at_a_time_and_a_lapsed_refresher_is_fenced(db: TestDb) {
        let store = db.store();
        let other_instance = db.open_another().await.unwrap();
        let u = recruiter(&store, "Acme", "a@acme.example").await;
        let g = store.put_grant(&grant(&u, CapabilityKind::Inbox, "a@acme.example"), t(1)).await.unwrap();
        let lease = Duration::from_secs(30);
        let first = store.claim_grant_refresh(g.id, t(10), t(4000), lease).await.unwrap().expect("first claim");
        assert_eq!(other_instance.claim_grant_refresh(g.id, t(11), t(4000), lease).await.unwrap(), None, "held by the first");
        // The first refresher stalls past its lease; another takes over and finishes.
        let second = other_instance.claim_grant_refresh(g.id, t(41), t(4000), lease).await.unwrap().expect("lease lapsed");
        let fresh = RefreshedTokens { access_token_sealed: "new-access", refresh_token_sealed: Some("new-refresh"), access_expires_at: t(3700), scopes: "Mail.Read" };
        other_instance.finish_grant_refresh(g.id, second, Some(&fresh), t(42)).await.unwrap();
        let stale = RefreshedTokens { access_token_sealed: "stale", refresh_token_sealed: None, access_expires_at: t(99), scopes: "x" };
        assert!(matches!(store.finish_grant_refresh(g.id, first, Some(&stale), t(43)).await, Err(StoreError::StaleLease)));
        let now = store.grant_by_id(g.id).await.unwrap().unwrap();
        assert_eq!(now.access_token_sealed.as_deref(), Some("new-access"));
        assert_eq!(now.refresh_token_sealed.as_deref(), Some("new-refresh"));
        // Released, and fresh: not claimed again until it goes stale.
        assert_eq!(store.claim_grant_refresh(g.id, t(44), t(100), lease).await.unwrap(), None, "the token is fresh");
        assert!(store.claim_grant_refresh(g.id, t(44), t(3700), lease).await.unwrap().is_some());
        other_instance.close().await;
    }

    async fn an_oauth_state_is_valid_once_and_only_until_it_expires(store: Store) {
        let u = recruiter(&store, "Acme", "a@acme.example").await;
        let new = |digest: &'static [u8]| NewOAuthState {
            state_digest: digest,
            user_id: u.id,
            session_digest: b"session",
            purpose: "inbox",
            pkce_verifier_sealed: Some("sealed-verifier"),
            redirect_uri: "http://127.0.0.1/cb",
            scopes: "Mail.Read",
            expires_at: t(600),
        };
        store.create_oauth_state(&new(b"s1"), t(0)).await.unwrap();
        store.create_oauth_state(&new(b"s2"), t(0)).await.unwrap();
        match store.take_oauth_state(b"s1", t(10)).await.unwrap() {
            TakeState::Valid(s) => assert_eq!((s.user_id, s.purpose.as_str()), (u.id, "inbox")),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.take_oauth_state(b"s1", t(11)).await.unwrap(), TakeState::AlreadyUsed);
        assert_eq!(store.take_oauth_state(b"s2", t(600)).await.unwrap(), TakeState::Expired);
        assert_eq!(store.take_oauth_state(b"nope", t(1)).await.unwrap(), TakeState::Unknown);
    }
}
