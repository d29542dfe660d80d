//! The store's specification: every test runs against SQLite and PostgreSQL,
//! each on a fresh database (`name::sqlite`, `name::postgres`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hirewire_domain::email::{AddressKey, EmailAddress, MailDomain};
use hirewire_store::testing::TestDb;
use hirewire_store::*;
use jiff::Timestamp;
use serde_json::json;

/// The injected clock: `t(s)` is `s` seconds after 2026-01-01T00:00:00Z.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn domain(s: &str) -> MailDomain {
    MailDomain::parse(s).unwrap()
}

async fn org(store: &Store, name: &str) -> OrgId {
    store.create_org(name, &[], t(0)).await.unwrap().id
}

async fn user(store: &Store, org: OrgId, email: &str) -> User {
    store
        .create_user(
            &NewUser {
                org_id: org,
                email: &addr(email),
                display_name: "Rita Recruiter",
                role: Role::Recruiter,
                time_zone: "Europe/Paris",
                password_hash: None,
            },
            t(0),
        )
        .await
        .unwrap()
}

async fn all_candidate_ids(
    store: &Store,
    org: OrgId,
    search: Option<&str>,
    page: u32,
) -> Vec<CandidateId> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .list_candidates(org, search, after, page)
            .await
            .unwrap();
        assert!(p.candidates.len() <= page as usize);
        ids.extend(p.candidates.iter().map(|c| c.id));
        match p.next_after {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

fn job<'a>(kind: &'a str, payload: &'a serde_json::Value, run_at: Timestamp) -> NewJob<'a> {
    NewJob {
        kind,
        payload,
        run_at,
        max_attempts: 3,
        dedupe_key: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

hirewire_store::both_backends! {
    async fn migrations_are_idempotent(store: Store) {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        let o = org(&store, "Acme").await;
        store.migrate().await.unwrap();
        assert!(store.org_by_id(o).await.unwrap().is_some(), "migrating again keeps the data");
    }

    async fn organizations_have_unique_names_and_a_replaceable_domain_list(store: Store) {
        let acme = store.create_org(" Acme ", &[domain("acme.example"), domain("ACME.example"), domain("b.example")], t(5)).await.unwrap();
        assert_eq!(acme.name, "Acme");
        assert_eq!(acme.domains, vec![domain("acme.example"), domain("b.example")]);
        assert_eq!(acme.created_at, t(5));
        assert_eq!(store.org_by_name("Acme").await.unwrap(), Some(acme.clone()));
        assert_eq!(store.org_by_id(acme.id).await.unwrap(), Some(acme.clone()));
        assert!(matches!(store.create_org("Acme", &[], t(6)).await, Err(StoreError::Conflict { .. })));

        let updated = store.update_org(acme.id, "Acme Corp", &[domain("c.example")]).await.unwrap();
        assert_eq!(updated.name, "Acme Corp");
        assert_eq!(updated.domains, vec![domain("c.example")]);
        assert_eq!(store.org_by_name("Acme").await.unwrap(), None);
        let other = org(&store, "Other").await;
        assert!(matches!(store.update_org(other, "Acme Corp", &[]).await, Err(StoreError::Conflict { .. })));
        assert!(matches!(store.update_org(OrgId(9_999), "X", &[]).await, Err(StoreError::NotFound)));
    }

    async fn a_sign_in_email_belongs_to_one_user_across_all_organizations(store: Store) {
        let a = org(&store, "A").await;
        let b = org(&store, "B").await;
        let u = user(&store, a, "Élodie@Acme.example").await;
        assert_eq!(u.email.as_str(), "Élodie@Acme.example");
        assert_eq!(u.role, Role::Recruiter);
        let found = store.user_by_email_key(&AddressKey::of("élodie@acme.EXAMPLE")).await.unwrap().unwrap();
        assert_eq!(found.id, u.id);
        let dup = store
            .create_user(&NewUser { org_id: b, email: &addr("ÉLODIE@acme.example"), display_name: "X", role: Role::Admin, time_zone: "UTC", password_hash: None }, t(1))
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
        assert!(store.list_users(b).await.unwrap().is_empty());
        assert_eq!(store.list_users(a).await.unwrap(), vec![u.clone()]);

        store.set_password_hash(u.id, "$argon2id$v=19$stub").await.unwrap();
        assert_eq!(store.user_by_id(u.id).await.unwrap().unwrap().password_hash.as_deref(), Some("$argon2id$v=19$stub"));
        assert!(matches!(store.set_password_hash(UserId(9_999), "x").await, Err(StoreError::NotFound)));
        assert!(!format!("{u:?}").contains("argon2"), "Debug of a user never shows the hash");
    }

    async fn sessions_are_found_by_digest_until_they_expire(store: Store) {
        let a = org(&store, "A").await;
        let u = user(&store, a, "rita@a.example").await;
        let digest = [7u8; 32];
        store
            .create_session(&NewSession { token_digest: &digest, user_id: u.id, csrf_token: "csrf", expires_at: t(100), user_agent: Some("UA"), ip: None }, t(0))
            .await
            .unwrap();
        let (s, su) = store.session_with_user(&digest, t(99)).await.unwrap().unwrap();
        assert_eq!(su.id, u.id);
        assert_eq!(s.csrf_token, "csrf");
        assert_eq!(s.user_agent.as_deref(), Some("UA"));
        assert_eq!(s.last_seen_at, t(0));
        assert!(store.session_with_user(&digest, t(100)).await.unwrap().is_none(), "expired at expires_at");
        assert!(store.session_with_user(&[8u8; 32], t(1)).await.unwrap().is_none());

        assert!(store.touch_session(&digest, t(50), Some(t(200))).await.unwrap());
        let (s, _) = store.session_with_user(&digest, t(150)).await.unwrap().unwrap();
        assert_eq!((s.last_seen_at, s.expires_at), (t(50), t(200)));

        assert_eq!(store.delete_expired_sessions(t(199)).await.unwrap(), 0);
        assert_eq!(store.delete_expired_sessions(t(200)).await.unwrap(), 1);
        assert!(!store.touch_session(&digest, t(201), None).await.unwrap());

        store.create_session(&NewSession { token_digest: &digest, user_id: u.id, csrf_token: "c2", expires_at: t(300), user_agent: None, ip: Some("10.0.0.1") }, t(0)).await.unwrap();
        store.delete_session(&digest).await.unwrap();
        assert!(store.session_with_user(&digest, t(1)).await.unwrap().is_none());
    }

    async fn api_tokens_are_found_by_digest_until_revoked(store: Store) {
        let a = org(&store, "A").await;
        let u = user(&store, a, "rita@a.example").await;
        let v = user(&store, a, "vic@a.example").await;
        let tok = store.create_api_token(u.id, "ci", &[1u8; 32], t(0)).await.unwrap();
        assert_eq!(tok.last_used_at, None);
        assert!(matches!(store.create_api_token(v.id, "dup", &[1u8; 32], t(0)).await, Err(StoreError::Conflict { .. })));

        let (found, owner) = store.user_by_api_token(&[1u8; 32], t(10)).await.unwrap().unwrap();
        assert_eq!((found.id, owner.id), (tok.id, u.id));
        assert_eq!(found.last_used_at, Some(t(10)));
        assert_eq!(store.list_api_tokens(u.id).await.unwrap()[0].last_used_at, Some(t(10)));
        assert!(store.user_by_api_token(&[2u8; 32], t(10)).await.unwrap().is_none());

        assert!(matches!(store.revoke_api_token(v.id, tok.id, t(20)).await, Err(StoreError::NotFound)), "only the owner revokes");
        store.revoke_api_token(u.id, tok.id, t(20)).await.unwrap();
        store.revoke_api_token(u.id, tok.id, t(30)).await.unwrap();
        assert!(store.user_by_api_token(&[1u8; 32], t(40)).await.unwrap().is_none());
        assert_eq!(store.list_api_tokens(u.id).await.unwrap()[0].revoked_at, Some(t(20)));
    }

    async fn an_organization_never_sees_another_organizations_candidates_inmail_or_audit(store: Store) {
        let a = org(&store, "A").await;
        let b = org(&store, "B").await;
        let ua = user(&store, a, "rita@a.example").await;
        let ub = user(&store, b, "bob@b.example").await;
        let c = store.create_candidate(a, "Jane Doe", &[addr("jane@x.example")], t(1)).await.unwrap();
        store.create_inmail(a, &NewInMail { candidate_id: c.id, author_user_id: Some(ua.id), direction: Direction::Outbound, body: "hi", sent_at: t(2) }, t(2)).await.unwrap();
        store.record_audit(&NewAudit { org_id: Some(a), actor_user_id: Some(ua.id), action: "candidate.created", target: "candidate:1", detail: &json!({}), ip: None }, t(3)).await.unwrap();

        assert_eq!(store.candidate(b, c.id).await.unwrap(), None);
        assert_eq!(store.candidate_by_address_key(b, &AddressKey::of("jane@x.example")).await.unwrap(), None);
        assert!(store.list_candidates(b, None, None, 50).await.unwrap().candidates.is_empty());
        assert!(store.list_candidates(b, Some("jane"), None, 50).await.unwrap().candidates.is_empty());
        assert!(store.list_inmail(b, c.id, None, 50).await.unwrap().is_empty());
        assert!(store.list_audit(Some(b), 50).await.unwrap().is_empty());
        assert!(matches!(store.update_candidate_name(b, c.id, "Mallory", t(4)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.add_candidate_email(b, c.id, &addr("m@x.example"), t(4)).await, Err(StoreError::NotFound)));
        assert!(matches!(store.remove_candidate_email(b, c.id, &AddressKey::of("jane@x.example"), t(4)).await, Err(StoreError::NotFound)));
        let write = store.create_inmail(b, &NewInMail { candidate_id: c.id, author_user_id: Some(ub.id), direction: Direction::Outbound, body: "x", sent_at: t(5) }, t(5)).await;
        assert!(matches!(write, Err(StoreError::NotFound)), "{write:?}");
        let foreign_author = store.create_inmail(a, &NewInMail { candidate_id: c.id, author_user_id: Some(ub.id), direction: Direction::Outbound, body: "x", sent_at: t(5) }, t(5)).await;
        assert!(matches!(foreign_author, Err(StoreError::NotFound)), "{foreign_author:?}");

        assert_eq!(store.candidate(a, c.id).await.unwrap().unwrap().name, "Jane Doe");
        assert_eq!(store.list_inmail(a, c.id, None, 50).await.unwrap().len(), 1);
        assert_eq!(store.list_audit(Some(a), 50).await.unwrap().len(), 1);
    }

    async fn an_address_belongs_to_one_candidate_per_org_compared_by_unicode_key(store: Store) {
        let a = org(&store, "A").await;
        let b = org(&store, "B").await;
        let c = store.create_candidate(a, "Élodie", &[addr("ÉLODIE@x.example"), addr("elo@y.example")], t(1)).await.unwrap();
        assert_eq!(c.emails.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["ÉLODIE@x.example", "elo@y.example"]);
        assert_eq!(c.emails[0].key, AddressKey::of("élodie@x.example"));
        assert_eq!((c.created_at, c.updated_at), (t(1), t(1)));

        let dup = store.create_candidate(a, "Someone Else", &[addr("new@z.example"), addr("élodie@x.example")], t(2)).await;
        assert!(matches!(dup, Err(StoreError::Conflict { what }) if what.contains("another candidate")), "{dup:?}");
        assert_eq!(store.list_candidates(a, None, None, 50).await.unwrap().candidates.len(), 1, "a failed create writes nothing");
        assert_eq!(store.candidate_by_address_key(a, &AddressKey::of("new@z.example")).await.unwrap(), None);

        let in_b = store.create_candidate(b, "Élodie (B)", &[addr("élodie@x.example")], t(3)).await.unwrap();
        assert_eq!(store.candidate_by_address_key(b, &addr("ÉLODIE@X.EXAMPLE").key()).await.unwrap().unwrap().id, in_b.id);
        assert_eq!(store.candidate_by_address_key(a, &addr("Élodie@x.example").key()).await.unwrap().unwrap().id, c.id);

        let same_twice = store.create_candidate(a, "Twice", &[addr("t@x.example"), addr("T@X.example")], t(4)).await.unwrap();
        assert_eq!(same_twice.emails.len(), 1, "equal keys in one request are kept once");
    }

    async fn addresses_can_be_added_and_removed_down_to_none(store: Store) {
        let a = org(&store, "A").await;
        let c = store.create_candidate(a, "Jane", &[addr("jane@x.example")], t(1)).await.unwrap();
        let d = store.create_candidate(a, "Dan", &[], t(1)).await.unwrap();
        assert!(d.emails.is_empty());

        let c2 = store.add_candidate_email(a, c.id, &addr("Jane.Doe@Work.example"), t(2)).await.unwrap();
        assert_eq!(c2.emails.len(), 2);
        assert_eq!(c2.updated_at, t(2));
        let again = store.add_candidate_email(a, c.id, &addr("JANE.DOE@work.example"), t(3)).await.unwrap();
        assert_eq!(again.emails.len(), 2, "adding an address the candidate has is a no-op");
        let taken = store.add_candidate_email(a, d.id, &addr("jane@X.example"), t(3)).await;
        assert!(matches!(taken, Err(StoreError::Conflict { .. })), "{taken:?}");

        let c3 = store.remove_candidate_email(a, c.id, &AddressKey::of("JANE@x.example"), t(4)).await.unwrap();
        assert_eq!(c3.emails.len(), 1);
        let c4 = store.remove_candidate_email(a, c.id, &AddressKey::of("jane.doe@work.example"), t(5)).await.unwrap();
        assert!(c4.emails.is_empty(), "the last address may be removed");
        assert!(matches!(store.remove_candidate_email(a, c.id, &AddressKey::of("jane@x.example"), t(6)).await, Err(StoreError::NotFound)));
        store.add_candidate_email(a, d.id, &addr("jane@x.example"), t(7)).await.unwrap();
        assert_eq!(store.candidate_by_address_key(a, &AddressKey::of("jane@x.example")).await.unwrap().unwrap().id, d.id, "a freed address can move");

        let renamed = store.update_candidate_name(a, d.id, "  Daniel  ", t(8)).await.unwrap();
        assert_eq!((renamed.name.as_str(), renamed.updated_at), ("Daniel", t(8)));
        assert!(matches!(store.update_candidate_name(a, d.id, "  ", t(9)).await, Err(StoreError::Invalid(_))));
    }

    async fn candidates_are_searched_by_name_or_address_with_unicode_case_and_literal_wildcards(store: Store) {
        let a = org(&store, "A").await;
        let elodie = store.create_candidate(a, "Élodie Martin", &[addr("em@work.example")], t(1)).await.unwrap();
        let omer = store.create_candidate(a, "Ömer Yılmaz", &[addr("omer_y@mail.example")], t(2)).await.unwrap();
        let percent = store.create_candidate(a, "100% Pat", &[addr("pat@ÉLODIE.example")], t(3)).await.unwrap();

        let search = |q: &'static str| {
            let store = store.clone();
            async move { all_candidate_ids(&store, a, Some(q), 10).await }
        };
        assert_eq!(search("élodie").await, vec![percent.id, elodie.id], "name or address, newest first");
        assert_eq!(search("ÉLODIE MAR").await, vec![elodie.id]);
        assert_eq!(search("ömer").await, vec![omer.id]);
        assert_eq!(search("WORK.EXAMPLE").await, vec![elodie.id]);
        assert_eq!(search("%").await, vec![percent.id], "% is literal");
        assert_eq!(search("r_y").await, vec![omer.id], "_ is literal");
        assert_eq!(search("e_w").await, Vec::<CandidateId>::new());
        assert_eq!(search("nobody").await, Vec::<CandidateId>::new());
        assert_eq!(search("  ").await.len(), 3, "a blank search lists everyone");
    }

    async fn cursor_pagination_returns_every_candidate_exactly_once_newest_first(store: Store) {
        let a = org(&store, "A").await;
        let b = org(&store, "B").await;
        let mut created = Vec::new();
        for i in 0..23 {
            created.push(store.create_candidate(a, &format!("Cand {i}"), &[addr(&format!("c{i}@x.example"))], t(i)).await.unwrap().id);
            store.create_candidate(b, &format!("Other {i}"), &[], t(i)).await.unwrap();
        }
        created.reverse();
        for page in [1, 5, 23, 100] {
            assert_eq!(all_candidate_ids(&store, a, None, page).await, created, "page size {page}");
        }
        let first = store.list_candidates(a, None, None, 5).await.unwrap();
        assert!(first.candidates.iter().all(|c| c.emails.len() == 1 && c.org_id == a));
        assert_eq!(all_candidate_ids(&store, a, Some("cand"), 4).await, created, "with a search too");
        assert!(matches!(store.list_candidates(a, None, None, 0).await, Err(StoreError::Invalid(_))));
    }

    async fn inmail_lists_newest_first_with_a_cursor(store: Store) {
        let a = org(&store, "A").await;
        let u = user(&store, a, "rita@a.example").await;
        let c = store.create_candidate(a, "Jane", &[], t(0)).await.unwrap();
        let other = store.create_candidate(a, "Other", &[], t(0)).await.unwrap();
        let mut ids = Vec::new();
        // Sent times out of insertion order, with a tie at t(20).
        for (sent, dir) in [(30, Direction::Outbound), (10, Direction::Inbound), (20, Direction::Outbound), (20, Direction::Inbound)] {
            let author = (dir == Direction::Outbound).then_some(u.id);
            let m = store.create_inmail(a, &NewInMail { candidate_id: c.id, author_user_id: author, direction: dir, body: "b", sent_at: t(sent) }, t(100)).await.unwrap();
            ids.push((sent, m.id));
        }
        store.create_inmail(a, &NewInMail { candidate_id: other.id, author_user_id: None, direction: Direction::Inbound, body: "x", sent_at: t(50) }, t(100)).await.unwrap();
        let expected = vec![ids[0].1, ids[3].1, ids[2].1, ids[1].1];
        let all = store.list_inmail(a, c.id, None, 10).await.unwrap();
        assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), expected);
        assert_eq!(all[1].direction, Direction::Inbound);
        assert_eq!(all[1].author_user_id, None);
        let page1 = store.list_inmail(a, c.id, None, 2).await.unwrap();
        let page2 = store.list_inmail(a, c.id, Some(page1[1].id), 2).await.unwrap();
        let page3 = store.list_inmail(a, c.id, Some(page2[1].id), 2).await.unwrap();
        let paged: Vec<_> = page1.iter().chain(&page2).map(|m| m.id).collect();
        assert_eq!(paged, expected);
        assert!(page3.is_empty());
        let bad = store.create_inmail(a, &NewInMail { candidate_id: c.id, author_user_id: None, direction: Direction::Outbound, body: "b", sent_at: t(1) }, t(1)).await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "outbound needs an author");
    }

    async fn audit_events_list_newest_first_per_organization(store: Store) {
        let a = org(&store, "A").await;
        let detail = json!({"reason": "bad password", "n": 3});
        let first = store.record_audit(&NewAudit { org_id: Some(a), actor_user_id: None, action: "auth.sign_in_failed", target: "user:rita@a.example", detail: &detail, ip: Some("10.0.0.1") }, t(1)).await.unwrap();
        let second = store.record_audit(&NewAudit { org_id: Some(a), actor_user_id: None, action: "auth.signed_in", target: "user:1", detail: &json!(null), ip: None }, t(2)).await.unwrap();
        let orgless = store.record_audit(&NewAudit { org_id: None, actor_user_id: None, action: "auth.sign_in_failed", target: "unknown", detail: &json!({}), ip: None }, t(3)).await.unwrap();
        let b = org(&store, "B").await;
        store.record_audit(&NewAudit { org_id: Some(b), actor_user_id: None, action: "auth.signed_in", target: "user:2", detail: &json!({}), ip: None }, t(4)).await.unwrap();
        let events = store.list_audit(Some(a), 10).await.unwrap();
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![second, first]);
        assert_eq!(events[1].detail, detail);
        assert_eq!(events[1].ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(events[1].at, t(1));
        assert_eq!(store.list_audit_before(Some(a), Some(second), 10).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![first]);
        assert_eq!(store.list_audit(Some(a), 1).await.unwrap().len(), 1);
        let without_org = store.list_audit(None, 10).await.unwrap();
        assert_eq!(without_org.iter().map(|e| e.id).collect::<Vec<_>>(), vec![orgless], "None lists only events without an organization");
    }

    async fn idempotency_keys_begin_replay_refuse_mismatches_and_expire(store: Store) {
        let a = org(&store, "A").await;
        let u = user(&store, a, "rita@a.example").await;
        let v = user(&store, a, "vic@a.example").await;
        assert_eq!(store.idempotency_begin(u.id, "k1", "fp", t(0)).await.unwrap(), IdemBegin::New);
        assert_eq!(store.idempotency_begin(u.id, "k1", "fp", t(1)).await.unwrap(), IdemBegin::InProgress);
        assert_eq!(store.idempotency_begin(u.id, "k1", "other", t(1)).await.unwrap(), IdemBegin::Mismatch);
        assert_eq!(store.idempotency_begin(v.id, "k1", "other", t(1)).await.unwrap(), IdemBegin::New, "keys are per user");
        store.idempotency_finish(u.id, "k1", 201, b"{\"id\":1}").await.unwrap();
        assert!(matches!(store.idempotency_finish(u.id, "k1", 500, b"").await, Err(StoreError::NotFound)), "finished once");
        assert_eq!(store.idempotency_begin(u.id, "k1", "fp", t(2)).await.unwrap(), IdemBegin::Replay { status: 201, body: b"{\"id\":1}".to_vec() });
        store.idempotency_abandon(u.id, "k1").await.unwrap();
        assert!(matches!(store.idempotency_begin(u.id, "k1", "fp", t(3)).await.unwrap(), IdemBegin::Replay { .. }), "a finished key is not abandoned");

        assert_eq!(store.idempotency_begin(u.id, "k2", "fp", t(0)).await.unwrap(), IdemBegin::New);
        store.idempotency_abandon(u.id, "k2").await.unwrap();
        assert_eq!(store.idempotency_begin(u.id, "k2", "fp2", t(1)).await.unwrap(), IdemBegin::New, "an abandoned key can be retried");

        let day = 24 * 3600;
        assert_eq!(store.idempotency_begin(u.id, "k1", "changed", t(day)).await.unwrap(), IdemBegin::New, "keys expire after 24 h");
        assert_eq!(store.purge_idempotency_keys(t(day)).await.unwrap(), 0, "nothing is 24 h old yet");
        assert_eq!(store.purge_idempotency_keys(t(day + 1)).await.unwrap(), 2, "k2 and v's k1 are 24 h old");
        assert_eq!(store.idempotency_begin(u.id, "k1", "changed", t(day + 1)).await.unwrap(), IdemBegin::InProgress);
    }

    async fn a_job_is_claimed_when_due_by_a_worker_of_its_kind_and_completed_once(store: Store) {
        let payload = json!({"mailbox": 7});
        let id = store.enqueue(&job("sync", &payload, t(10)), t(0)).await.unwrap();
        assert_eq!(store.claim("w1", &["sync"], t(9), LEASE).await.unwrap(), None, "not due yet");
        assert_eq!(store.claim("w1", &["send"], t(10), LEASE).await.unwrap(), None, "other kind");
        assert!(matches!(store.claim("w1", &[], t(10), LEASE).await, Err(StoreError::Invalid(_))));
        let c = store.claim("w1", &["send", "sync"], t(10), LEASE).await.unwrap().unwrap();
        assert_eq!((c.id, c.kind.as_str(), c.attempt, c.lease_until), (id, "sync", 1, t(40)));
        assert_eq!(c.payload, payload);
        assert_eq!(store.claim("w2", &["sync"], t(11), LEASE).await.unwrap(), None, "leased");
        assert_eq!(store.heartbeat(id, c.fencing_token, t(20), LEASE).await.unwrap(), t(50));
        assert_eq!(store.claim("w2", &["sync"], t(45), LEASE).await.unwrap(), None, "the heartbeat extended the lease");
        store.complete(id, c.fencing_token, t(46)).await.unwrap();
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.status, j.attempts, j.finished_at, j.lease_owner.as_deref()), (JobStatus::Done, 1, Some(t(46)), Some("w1")));
        assert!(matches!(store.complete(id, c.fencing_token, t(47)).await, Err(StoreError::StaleLease)));
        assert_eq!(store.claim("w2", &["sync"], t(1000), LEASE).await.unwrap(), None);
        assert!(matches!(store.complete(JobId(9_999), 1, t(47)).await, Err(StoreError::NotFound)));
        assert_eq!(store.count_jobs(JobStatus::Done).await.unwrap(), 1);
    }

    async fn an_expired_lease_is_reclaimed_and_the_stale_worker_is_refused(store: Store) {
        let payload = json!({});
        let id = store.enqueue(&job("send", &payload, t(0)), t(0)).await.unwrap();
        let a = store.claim("worker-a", &["send"], t(0), LEASE).await.unwrap().unwrap();
        // Worker A stalls past its lease: it may not extend it any more.
        assert!(matches!(store.heartbeat(id, a.fencing_token, t(30), LEASE).await, Err(StoreError::StaleLease)));
        let b = store.claim("worker-b", &["send"], t(31), LEASE).await.unwrap().unwrap();
        assert_eq!(b.id, id);
        assert_eq!(b.attempt, 2);
        assert!(b.fencing_token > a.fencing_token, "the token strictly increases per claim");
        // A wakes up within what would have been a fresh lease: still refused.
        assert!(matches!(store.heartbeat(id, a.fencing_token, t(32), LEASE).await, Err(StoreError::StaleLease)));
        assert!(matches!(store.complete(id, a.fencing_token, t(32)).await, Err(StoreError::StaleLease)));
        assert!(matches!(store.fail(id, a.fencing_token, t(32), "boom", Some(t(100))).await, Err(StoreError::StaleLease)));
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.status, j.lease_owner.as_deref(), j.lease_until, j.last_error), (JobStatus::Running, Some("worker-b"), Some(t(61)), None), "A changed nothing");
        store.heartbeat(id, b.fencing_token, t(40), LEASE).await.unwrap();
        store.complete(id, b.fencing_token, t(41)).await.unwrap();
        assert_eq!(store.job(id).await.unwrap().unwrap().status, JobStatus::Done);
    }

    async fn a_failed_attempt_is_retried_at_retry_at_until_max_attempts_then_fails(store: Store) {
        let payload = json!({"n": 1});
        let id = store.enqueue(&job("send", &payload, t(0)), t(0)).await.unwrap();
        let c1 = store.claim("w", &["send"], t(0), LEASE).await.unwrap().unwrap();
        assert_eq!(store.fail(id, c1.fencing_token, t(1), "smtp 451", Some(t(60))).await.unwrap(), JobStatus::Queued);
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.status, j.run_at, j.last_error.as_deref(), j.lease_until), (JobStatus::Queued, t(60), Some("smtp 451"), None));
        assert_eq!(store.claim("w", &["send"], t(59), LEASE).await.unwrap(), None, "not before retry_at");
        let c2 = store.claim("w", &["send"], t(60), LEASE).await.unwrap().unwrap();
        assert_eq!(c2.attempt, 2);
        assert!(matches!(store.fail(id, c1.fencing_token, t(61), "late", None).await, Err(StoreError::StaleLease)));
        assert_eq!(store.fail(id, c2.fencing_token, t(61), "smtp 451", Some(t(120))).await.unwrap(), JobStatus::Queued);
        let c3 = store.claim("w", &["send"], t(120), LEASE).await.unwrap().unwrap();
        assert_eq!(c3.attempt, 3);
        assert_eq!(store.fail(id, c3.fencing_token, t(121), "smtp 550", Some(t(180))).await.unwrap(), JobStatus::Failed, "no attempts left");
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.status, j.finished_at, j.attempts), (JobStatus::Failed, Some(t(121)), 3));
        assert_eq!(store.claim("w", &["send"], t(1000), LEASE).await.unwrap(), None);

        let permanent = store.enqueue(&job("send", &payload, t(0)), t(0)).await.unwrap();
        let c = store.claim("w", &["send"], t(1000), LEASE).await.unwrap().unwrap();
        assert_eq!(store.fail(permanent, c.fencing_token, t(1001), "bad address", None).await.unwrap(), JobStatus::Failed, "no retry_at: failed at once");
    }

    async fn a_lease_lost_on_the_last_attempt_fails_the_job(store: Store) {
        let payload = json!({});
        let id = store.enqueue(&NewJob { max_attempts: 1, ..job("send", &payload, t(0)) }, t(0)).await.unwrap();
        store.claim("w", &["send"], t(0), LEASE).await.unwrap().unwrap();
        assert_eq!(store.claim("w2", &["send"], t(31), LEASE).await.unwrap(), None);
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.status, j.attempts), (JobStatus::Failed, 1));
        assert!(j.last_error.unwrap().contains("lease"));
        assert!(matches!(store.enqueue(&NewJob { max_attempts: 0, ..job("send", &payload, t(0)) }, t(0)).await, Err(StoreError::Invalid(_))));
    }

    async fn a_dedupe_key_allows_one_unfinished_job(store: Store) {
        let payload = json!({});
        let new = NewJob { dedupe_key: Some("sync:mailbox:7"), ..job("sync", &payload, t(0)) };
        let first = store.enqueue(&new, t(0)).await.unwrap();
        assert_eq!(store.enqueue(&new, t(1)).await.unwrap(), first);
        let c = store.claim("w", &["sync"], t(2), LEASE).await.unwrap().unwrap();
        assert_eq!(store.enqueue(&new, t(3)).await.unwrap(), first, "running counts as unfinished");
        store.complete(first, c.fencing_token, t(4)).await.unwrap();
        let second = store.enqueue(&new, t(5)).await.unwrap();
        assert_ne!(second, first, "a finished job does not block a new one");
        let other = store.enqueue(&NewJob { dedupe_key: Some("sync:mailbox:8"), ..new }, t(5)).await.unwrap();
        assert_ne!(other, second);
        let plain = store.enqueue(&job("sync", &payload, t(0)), t(5)).await.unwrap();
        assert_ne!(store.enqueue(&job("sync", &payload, t(0)), t(5)).await.unwrap(), plain, "no key, no dedupe");
        assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 4);
    }

    async fn hastening_a_queued_job_moves_it_up_and_a_running_one_asks_for_one_more_run(store: Store) {
        let payload = json!({});
        let key = "sync:mailbox:9";
        let first = store.enqueue(&NewJob { dedupe_key: Some(key), ..job("sync", &payload, t(100)) }, t(0)).await.unwrap();
        assert!(store.hasten_job(key, t(10)).await.unwrap(), "queued for later: moved up");
        assert_eq!(store.job(first).await.unwrap().unwrap().run_at, t(10));
        assert!(!store.hasten_job(key, t(20)).await.unwrap(), "already due: nothing to move");

        // Claimed: a push while it runs is remembered until the run is over.
        let c = store.claim("w", &["sync"], t(10), LEASE).await.unwrap().unwrap();
        assert!(!store.rerun_requested(first).await.unwrap());
        assert!(store.hasten_job(key, t(11)).await.unwrap(), "running: marked");
        store.complete(first, c.fencing_token, t(12)).await.unwrap();
        assert!(store.rerun_requested(first).await.unwrap(), "seen after completing");

        // A run with no push in it is not marked; a new claim starts unmarked.
        let second = store.enqueue(&NewJob { dedupe_key: Some(key), ..job("sync", &payload, t(12)) }, t(12)).await.unwrap();
        let c = store.claim("w", &["sync"], t(13), LEASE).await.unwrap().unwrap();
        assert_eq!(c.id, second);
        store.complete(second, c.fencing_token, t(14)).await.unwrap();
        assert!(!store.rerun_requested(second).await.unwrap());
    }

    async fn two_instances_claiming_concurrently_run_every_job_exactly_once(db: TestDb) {
        let first = db.store();
        let second = db.open_another().await.unwrap();
        let payload = json!({});
        let now = Timestamp::now();
        for i in 0..200 {
            first.enqueue(&job(if i % 2 == 0 { "a" } else { "b" }, &payload, now), now).await.unwrap();
        }
        let claims: Arc<Mutex<HashMap<JobId, Vec<String>>>> = Arc::default();
        let mut workers = Vec::new();
        for (instance, store) in [first.clone(), second.clone()].into_iter().enumerate() {
            for w in 0..4 {
                let store = store.clone();
                let claims = claims.clone();
                let owner = format!("instance{instance}-worker{w}");
                workers.push(tokio::spawn(async move {
                    loop {
                        match store.claim(&owner, &["a", "b"], Timestamp::now(), Duration::from_secs(300)).await.unwrap() {
                            Some(c) => {
                                claims.lock().unwrap().entry(c.id).or_default().push(owner.clone());
                                tokio::task::yield_now().await;
                                store.complete(c.id, c.fencing_token, Timestamp::now()).await.unwrap();
                            }
                            None => {
                                let left = store.count_jobs(JobStatus::Queued).await.unwrap();
                                if left == 0 {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                    }
                }));
            }
        }
        for w in workers {
            w.await.unwrap();
        }
        let claims = std::mem::take(&mut *claims.lock().unwrap());
        assert_eq!(claims.len(), 200, "every job ran");
        let twice: Vec<_> = claims.iter().filter(|(_, owners)| owners.len() != 1).collect();
        assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
        let instances: std::collections::HashSet<_> = claims.values().flatten().map(|o| &o[..9]).collect();
        assert_eq!(instances.len(), 2, "both instances took part");
        assert_eq!(second.count_jobs(JobStatus::Done).await.unwrap(), 200);
        second.close().await;
    }
}

#[tokio::test]
async fn connect_picks_sqlite_in_the_data_dir_unless_the_url_is_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let store = Store::connect(&StoreConfig {
        database_url: None,
        data_dir: data_dir.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(data_dir.join("hirewire.db").exists());
    store.close().await;

    let url = hirewire_store::testing::test_database_url();
    let pg = Store::connect(&StoreConfig {
        database_url: Some(url),
        data_dir,
        max_connections: 1,
    })
    .await;
    let pg =
        pg.expect("PostgreSQL must be reachable at HIREWIRE_TEST_DATABASE_URL for the store tests");
    assert_eq!(pg.backend(), Backend::Postgres);
    pg.ping().await.unwrap();

    let unsupported = Store::connect(&StoreConfig {
        database_url: Some("mysql://root@127.0.0.1/test".into()),
        data_dir: dir.path().join("other"),
        max_connections: 1,
    })
    .await;
    assert!(
        matches!(unsupported, Err(hirewire_store::StoreError::Invalid(ref m)) if m.contains("mysql")),
        "a URL for another database is refused, never silently replaced by SQLite"
    );
    assert!(!dir.path().join("other").exists());
}

#[tokio::test]
async fn stale_test_schemas_are_dropped_but_fresh_ones_are_kept() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres)
        .await
        .expect("PostgreSQL must be reachable for the store tests");
    let url = hirewire_store::testing::test_database_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE SCHEMA IF NOT EXISTS hw_test_1000_leftover")
        .execute(&mut conn)
        .await
        .unwrap();
    let dropped = hirewire_store::testing::drop_stale_test_schemas(Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(dropped >= 1);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'hw\\_test\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!names.iter().any(|n| n == "hw_test_1000_leftover"));
    db.ping()
        .await
        .expect("this test's own schema is recent and kept");
    assert!(db.list_audit(None, 1).await.unwrap().is_empty());
}
