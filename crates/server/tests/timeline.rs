//! A candidate's timeline at HTTP level, on both storage backends: email
//! conversations beside InMail ordered by latest message with keyset pages,
//! who sees which conversation (owner, another recruiter, the admin) and how
//! sharing changes that, one copy of a message two mailboxes share, the body
//! route's walls, and org isolation. Mail is stored directly through the store
//! (as the sync engine would), never synced.

use hirewire_domain::ids::{CandidateId, GrantId, OrgId};
use hirewire_server::testing::{ADMIN, RECRUITER, TestApp, hidden_csrf};
use hirewire_store::testing::TestDb;
use hirewire_store::{
    CapabilityKind, Direction, GrantStatus, MailAddress, MailAttachment, NewGrant, NewInMail,
    NewMailMessage, PageProgress, ProviderChoice, SyncPhase, User, both_backends,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

struct Acme {
    org: OrgId,
    riley: User,
    sam: User,
    admin: User,
    cand: CandidateId,
    riley_inbox: GrantId,
    sam_inbox: GrantId,
}

async fn inbox(app: &TestApp, u: &User) -> GrantId {
    app.store
        .put_grant(
            &NewGrant {
                org_id: u.org_id,
                user_id: u.id,
                capability: CapabilityKind::Inbox,
                provider: ProviderChoice::Google,
                status: GrantStatus::Active,
                status_reason: None,
                account_address: None,
                scopes: "gmail.readonly",
                permission_version: 1,
                legacy: false,
                access_token_sealed: None,
                refresh_token_sealed: None,
                access_expires_at: None,
            },
            app.now(),
        )
        .await
        .unwrap()
        .id
}

async fn acme(app: &TestApp) -> Acme {
    let org = app.org("Acme Talent", &["acme.example"]).await;
    let admin = app
        .user(org, "admin@acme.example", ADMIN, "admin-password")
        .await;
    let riley = app
        .user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    let sam = app
        .user(org, "sam@acme.example", RECRUITER, "sam-password")
        .await;
    let email = hirewire_domain::email::EmailAddress::parse("ada@cand.example").unwrap();
    let cand = app
        .store
        .create_candidate(org, "Ada Lovelace", &[email], app.now())
        .await
        .unwrap()
        .id;
    let riley_inbox = inbox(app, &riley).await;
    let sam_inbox = inbox(app, &sam).await;
    Acme {
        org,
        riley,
        sam,
        admin,
        cand,
        riley_inbox,
        sam_inbox,
    }
}

/// `mins` minutes before the app's clock.
fn ago(app: &TestApp, mins: i64) -> Timestamp {
    app.now() - SignedDuration::from_mins(mins)
}

/// An inbound message from the candidate in thread `key`.
fn mail(
    app: &TestApp,
    cand: CandidateId,
    provider_id: &str,
    key: &str,
    message_id: Option<&str>,
    mins_ago: i64,
    html: &str,
) -> NewMailMessage {
    NewMailMessage {
        provider_message_id: provider_id.into(),
        thread_key: key.into(),
        message_id_header: message_id.map(Into::into),
        direction: Direction::Inbound,
        from: MailAddress {
            name: Some("Ada Lovelace".into()),
            address: "ada@cand.example".into(),
        },
        to: vec![MailAddress {
            name: None,
            address: "riley@acme.example".into(),
        }],
        cc: vec![],
        subject: Some(format!("Subject {key}")),
        sent_at: ago(app, mins_ago),
        snippet: "snippet".into(),
        body_html_sanitized: Some(html.into()),
        body_text: Some("text".into()),
        attachments: vec![MailAttachment {
            name: Some(format!("cv-{provider_id}.pdf")),
            content_type: "application/pdf".into(),
            size: 100,
        }],
        candidates: vec![cand],
    }
}

/// Stores `page` as the next page of `grant`'s sync.
async fn store(app: &TestApp, grant: GrantId, page: &[NewMailMessage]) {
    let state = app
        .store
        .start_mail_sync(grant, ago(app, 525_600), app.now())
        .await
        .unwrap();
    let cursor = format!("page-{}", state.version);
    let progress = PageProgress {
        phase: SyncPhase::Backfill,
        backfill_cursor: Some(&cursor),
        incremental_cursor: None,
        seen: page.len() as u64,
    };
    app.store
        .store_page(grant, state.version, page, &progress, app.now())
        .await
        .unwrap();
}

async fn inmail(
    app: &TestApp,
    org: OrgId,
    cand: CandidateId,
    author: Option<&User>,
    body: &str,
    mins_ago: i64,
) {
    let at = ago(app, mins_ago);
    let new = NewInMail {
        candidate_id: cand,
        author_user_id: author.map(|u| u.id),
        direction: if author.is_some() {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        body,
        sent_at: at,
    };
    app.store.create_inmail(org, &new, at).await.unwrap();
}

async fn get_json(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let res = app.api(token).get(path).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Every conversation of the API timeline, `limit` at a time.
async fn whole_timeline(app: &TestApp, token: &str, cand: CandidateId, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get_json(
            app,
            token,
            &format!("/candidates/{cand}/timeline?limit={limit}&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        out.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

/// A conversation's label: the email subject, or `inmail:<recruiter id|inbound>`.
fn label(c: &Value) -> String {
    match c["kind"].as_str().unwrap() {
        "email" => c["subject"].as_str().unwrap().to_owned(),
        _ => format!(
            "inmail:{}",
            c["recruiter_user_id"]
                .as_i64()
                .map_or("inbound".into(), |i| i.to_string())
        ),
    }
}

fn subjects(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter(|c| c["kind"] == "email")
        .map(label)
        .collect()
}

async fn page(client: &reqwest::Client, url: String) -> (u16, String) {
    let res = client.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The conversation's thread id and its messages' ids, as `owner` sees them.
async fn thread_of(
    app: &TestApp,
    token: &str,
    cand: CandidateId,
    subject: &str,
) -> (i64, Vec<i64>) {
    let all = whole_timeline(app, token, cand, 100).await;
    let c = all
        .iter()
        .find(|c| c["subject"] == subject)
        .unwrap_or_else(|| panic!("{subject} not on the timeline"));
    (
        c["thread_id"].as_i64().unwrap(),
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect(),
    )
}

both_backends! {
    async fn conversations_of_both_channels_are_ordered_by_their_latest_message_and_paged_by_cursor(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        // k1: messages 90 and 10 minutes ago (latest 10); k2: 30 minutes ago.
        store(&app, w.riley_inbox, &[
            mail(&app, w.cand, "p1", "k1", Some("<a@x>"), 90, "<p>first of k1</p>"),
            mail(&app, w.cand, "p2", "k2", Some("<b@x>"), 30, "<p>k2</p>"),
            mail(&app, w.cand, "p3", "k1", Some("<c@x>"), 10, "<p>second of k1</p>"),
        ]).await;
        inmail(&app, w.org, w.cand, Some(&w.riley), "riley's InMail", 50).await;
        inmail(&app, w.org, w.cand, Some(&w.riley), "riley's older InMail", 120).await;
        inmail(&app, w.org, w.cand, None, "the candidate's InMail", 20).await;
        let token = app.api_token(&w.riley).await;
        let expected = vec!["Subject k1".to_owned(), "inmail:inbound".into(), "Subject k2".into(), format!("inmail:{}", w.riley.id)];
        for limit in [1, 2, 3, 100] {
            let all = whole_timeline(&app, &token, w.cand, limit).await;
            assert_eq!(all.iter().map(label).collect::<Vec<_>>(), expected, "limit {limit}");
        }
        let all = whole_timeline(&app, &token, w.cand, 100).await;
        let k1 = &all[0];
        assert_eq!(k1["latest_at"], ago(&app, 10).to_string());
        let msgs = k1["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "both messages of the thread");
        assert_eq!(msgs[0]["channel"], "email");
        assert_eq!(msgs[0]["direction"], "inbound");
        assert_eq!(msgs[0]["from"]["address"], "ada@cand.example");
        assert_eq!(msgs[0]["to"][0]["address"], "riley@acme.example");
        assert_eq!(msgs[0]["attachments"][0]["name"], "cv-p1.pdf");
        assert!(msgs[0]["body_html"].as_str().unwrap().contains("first of k1"), "oldest first in the API");
        let riley_inmail = &all[3]["messages"];
        assert_eq!(riley_inmail.as_array().unwrap().len(), 2, "all of a recruiter's InMail is one conversation");
        assert_eq!(riley_inmail[0]["channel"], "inmail");
        assert_eq!(riley_inmail[0]["body"], "riley's older InMail");

        // Bad cursors and limits are refused with stable codes.
        let (status, body) = get_json(&app, &token, &format!("/candidates/{}/timeline?cursor=nope", w.cand)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")));
        let (status, body) = get_json(&app, &token, &format!("/candidates/{}/timeline?limit=0", w.cand)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_limit")));
        let (status, _) = get_json(&app, &token, "/candidates/999999/timeline").await;
        assert_eq!(status, 404);

        // The page shows the same order, channel, participants, subject, attachments.
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (status, html) = page(&client, app.at(&format!("/candidates/{}", w.cand))).await;
        assert_eq!(status, 200);
        let pos = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(pos("Subject k1") < pos("InMail from the candidate") && pos("InMail from the candidate") < pos("Subject k2") && pos("Subject k2") < pos("InMail with riley"));
        assert!(html.contains("cv-p3.pdf") && html.contains("Ada Lovelace &#60;ada@cand.example&#62;") && html.contains("riley@acme.example"));
        assert!(!html.contains("timeline-older"), "one page only");
    }

    async fn the_page_links_to_older_conversations(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        let page_size = hirewire_server::timeline::PAGE_CONVERSATIONS as i64;
        let msgs: Vec<_> = (0..page_size + 2).map(|i| mail(&app, w.cand, &format!("p{i}"), &format!("t{i:02}"), None, i + 1, "<p>x</p>")).collect();
        store(&app, w.riley_inbox, &msgs).await;
        let client = app.signed_in("riley@acme.example", "riley-password").await;
        let (_, first) = page(&client, app.at(&format!("/candidates/{}", w.cand))).await;
        assert!(first.contains("Subject t00") && first.contains(&format!("Subject t{:02}", page_size - 1)));
        assert!(!first.contains(&format!("Subject t{page_size:02}")));
        let start = first.find("id=\"timeline-older\" href=\"").unwrap() + "id=\"timeline-older\" href=\"".len();
        let href = &first[start..start + first[start..].find('"').unwrap()];
        let (status, older) = page(&client, app.at(&href.replace("&#38;", "&"))).await;
        assert_eq!(status, 200);
        assert!(older.contains(&format!("Subject t{page_size:02}")) && older.contains(&format!("Subject t{:02}", page_size + 1)));
        assert!(!older.contains("Subject t00") && !older.contains("timeline-older"));
        let (status, _) = page(&client, app.at(&format!("/candidates/{}?before=garbage", w.cand))).await;
        assert_eq!(status, 400);
    }

    async fn a_private_conversation_is_its_owners_until_shared_and_unsharing_takes_it_back(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        store(&app, w.riley_inbox, &[mail(&app, w.cand, "p1", "private-key", Some("<m1@x>"), 5, "<p>salary expectations</p>")]).await;
        inmail(&app, w.org, w.cand, Some(&w.sam), "sam's InMail", 60).await;
        let riley_token = app.api_token(&w.riley).await;
        let sam_token = app.api_token(&w.sam).await;
        let admin_token = app.api_token(&w.admin).await;
        let (thread, ids) = thread_of(&app, &riley_token, w.cand, "Subject private-key").await;
        let message = ids[0];
        let body_url = format!("/mail/threads/{thread}/messages/{message}/body");

        let riley = app.signed_in("riley@acme.example", "riley-password").await;
        let sam = app.signed_in("sam@acme.example", "sam-password").await;
        let admin = app.signed_in("admin@acme.example", "admin-password").await;
        let cand_page = app.at(&format!("/candidates/{}", w.cand));

        // Private: only riley sees it, on the page, in the API and through the body route.
        let (_, html) = page(&riley, cand_page.clone()).await;
        assert!(html.contains("Subject private-key") && html.contains("Share with team") && html.contains(&body_url));
        assert!(html.contains("sam&#39;s InMail") && html.contains("InMail with sam"), "InMail is org-wide");
        for (client, token, who) in [(&sam, &sam_token, "another recruiter"), (&admin, &admin_token, "the admin")] {
            let (_, html) = page(client, cand_page.clone()).await;
            assert!(!html.contains("private-key") && !html.contains("salary"), "{who} does not see private mail");
            assert!(html.contains("InMail with sam"), "{who} sees the InMail");
            assert!(subjects(&whole_timeline(&app, token, w.cand, 10).await).is_empty(), "{who}: API");
            assert_eq!(page(client, app.at(&body_url)).await.0, 404, "{who}: body route");
            // Neither may share riley's thread.
            assert_eq!(app.api(token).post(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404, "{who} shares");
            assert_eq!(app.api(token).delete(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404, "{who} unshares a private thread");
        }
        assert_eq!(page(&riley, app.at(&body_url)).await.0, 200);

        // Riley shares it through the page form.
        let csrf = hidden_csrf(&html).unwrap();
        let res = riley.post(app.at(&format!("/mail/threads/{thread}/share"))).form(&[("_csrf", csrf.as_str()), ("candidate", &w.cand.to_string())]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], format!("/candidates/{}", w.cand).as_str());
        let res = riley.post(app.at(&format!("/mail/threads/{thread}/share"))).form(&[("_csrf", "forged"), ("candidate", &w.cand.to_string())]).send().await.unwrap();
        assert_eq!(res.status(), 400, "the form needs its CSRF token");
        let (_, html) = page(&riley, cand_page.clone()).await;
        assert!(html.contains("shared with team") && html.contains("Stop sharing") && !html.contains("Share with team"));
        for (client, token, who) in [(&sam, &sam_token, "another recruiter"), (&admin, &admin_token, "the admin")] {
            let (_, html) = page(client, cand_page.clone()).await;
            assert!(html.contains("Subject private-key") && html.contains("From riley&#39;s mailbox"), "{who} sees the shared conversation");
            assert!(!html.contains("Share with team"), "{who} cannot share another's thread");
            assert_eq!(subjects(&whole_timeline(&app, token, w.cand, 10).await), vec!["Subject private-key"], "{who}: API");
            assert_eq!(page(client, app.at(&body_url)).await.0, 200, "{who}: body route");
        }
        let (_, html) = page(&sam, cand_page.clone()).await;
        assert!(!html.contains("Stop sharing"), "another recruiter cannot take it back");
        let (_, html) = page(&admin, cand_page.clone()).await;
        assert!(html.contains("Stop sharing riley"), "the admin may take it back");
        assert_eq!(app.api(&sam_token).delete(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404);
        let csrf = hidden_csrf(&page(&sam, cand_page.clone()).await.1).unwrap();
        let res = sam.post(app.at(&format!("/mail/threads/{thread}/unshare"))).form(&[("_csrf", csrf.as_str()), ("candidate", &w.cand.to_string())]).send().await.unwrap();
        assert_eq!(res.status(), 404, "another recruiter's unshare form is refused");

        // The admin takes it back through the API.
        let res = app.api(&admin_token).delete(&format!("/mail/threads/{thread}/share")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let t: Value = res.json().await.unwrap();
        assert_eq!((t["id"].as_i64(), t["shared"].as_bool()), (Some(thread), Some(false)));
        for (client, token, who) in [(&sam, &sam_token, "another recruiter"), (&admin, &admin_token, "the admin")] {
            assert!(subjects(&whole_timeline(&app, token, w.cand, 10).await).is_empty(), "{who}: gone again");
            assert_eq!(page(client, app.at(&body_url)).await.0, 404, "{who}: body route");
        }
        assert_eq!(app.api(&admin_token).delete(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404, "an admin cannot touch it once private");

        // Riley shares through the API and takes it back through the page.
        let res = app.api(&riley_token).post(&format!("/mail/threads/{thread}/share")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let t: Value = res.json().await.unwrap();
        assert_eq!((t["shared"].as_bool(), t["shared_by"].as_i64()), (Some(true), Some(w.riley.id.get())));
        assert_eq!(subjects(&whole_timeline(&app, &sam_token, w.cand, 10).await), vec!["Subject private-key"]);
        let (_, html) = page(&riley, cand_page.clone()).await;
        let csrf = hidden_csrf(&html).unwrap();
        let res = riley.post(app.at(&format!("/mail/threads/{thread}/unshare"))).form(&[("_csrf", csrf.as_str()), ("candidate", &w.cand.to_string())]).send().await.unwrap();
        assert_eq!(res.status(), 303);
        assert!(subjects(&whole_timeline(&app, &sam_token, w.cand, 10).await).is_empty());
        assert_eq!(subjects(&whole_timeline(&app, &riley_token, w.cand, 10).await), vec!["Subject private-key"], "the owner still sees it");
        let audit = app.store.list_audit(Some(w.org), 50).await.unwrap();
        let target = format!("mail_thread:{thread}");
        let by = |action: &str, who: &User| audit.iter().filter(|e| e.action == action && e.target == target && e.actor_user_id == Some(who.id)).count();
        assert_eq!((by("mail.thread_shared", &w.riley), by("mail.thread_unshared", &w.riley), by("mail.thread_unshared", &w.admin)), (2, 1, 1), "sharing is audited");
        assert!(!format!("{audit:?}").contains("private-key"), "the audit log names no subject");
    }

    async fn a_message_in_two_mailboxes_shows_once(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        // Both recruiters were on the same thread (keyed by the root Message-ID).
        store(&app, w.riley_inbox, &[
            mail(&app, w.cand, "r1", "root@x", Some("<root@x>"), 30, "<p>the question</p>"),
            mail(&app, w.cand, "r2", "root@x", Some("<reply@x>"), 20, "<p>riley only</p>"),
        ]).await;
        store(&app, w.sam_inbox, &[mail(&app, w.cand, "s1", "root@x", Some("<root@x>"), 30, "<p>the question</p>")]).await;
        let riley_token = app.api_token(&w.riley).await;
        let sam_token = app.api_token(&w.sam).await;
        let (riley_thread, _) = thread_of(&app, &riley_token, w.cand, "Subject root@x").await;
        let (sam_thread, _) = thread_of(&app, &sam_token, w.cand, "Subject root@x").await;
        for (token, thread) in [(&riley_token, riley_thread), (&sam_token, sam_thread)] {
            assert_eq!(app.api(token).post(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 200);
        }
        let admin_token = app.api_token(&w.admin).await;
        for (token, who) in [(&riley_token, "riley"), (&sam_token, "sam"), (&admin_token, "admin")] {
            let all = whole_timeline(&app, token, w.cand, 10).await;
            assert_eq!(all.len(), 1, "{who}: one conversation for both mailboxes");
            assert_eq!(all[0]["threads"].as_array().unwrap().len(), 2, "{who}");
            let messages = all[0]["messages"].as_array().unwrap();
            let ids: Vec<&str> = messages.iter().map(|m| m["message_id"].as_str().unwrap()).collect();
            assert_eq!(ids.len(), 2, "{who}: the shared question once, riley's reply once: {ids:?}");
            assert_eq!(messages.iter().filter(|m| m["body_html"].as_str().unwrap().contains("the question")).count(), 1, "{who}");
        }
        let all = whole_timeline(&app, &sam_token, w.cand, 10).await;
        assert_eq!(all[0]["messages"][0]["owner_user_id"].as_i64(), Some(w.sam.id.get()), "the viewer's own copy is preferred");
        let client = app.signed_in("sam@acme.example", "sam-password").await;
        let (_, html) = page(&client, app.at(&format!("/candidates/{}", w.cand))).await;
        assert_eq!(html.matches("<iframe").count(), 2, "two bodies on the page, not three");
        assert!(html.contains("From riley&#39;s mailbox and your mailbox"), "{}", &html[html.find("conv-source").unwrap()..][..200]);
    }

    async fn the_body_route_serves_rendered_html_behind_the_mail_cores_csp(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        let stored = hirewire_mail::sanitize_for_storage("<p>Hello <b>there</b></p><img src=\"https://tracker.example/pixel.gif\"><img src=x onerror=\"window.top.__pwned=1\"><script>window.__pwned=1</script>");
        store(&app, w.riley_inbox, &[mail(&app, w.cand, "p1", "k", Some("<m@x>"), 5, &stored)]).await;
        let token = app.api_token(&w.riley).await;
        let (thread, ids) = thread_of(&app, &token, w.cand, "Subject k").await;
        let url = format!("/mail/threads/{thread}/messages/{}/body", ids[0]);
        let riley = app.signed_in("riley@acme.example", "riley-password").await;

        let res = riley.get(app.at(&url)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers().clone();
        assert_eq!(h["content-security-policy"], hirewire_mail::BODY_CSP);
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
        let body = res.text().await.unwrap();
        assert!(body.contains("Hello <b>there</b>"), "{body}");
        assert!(!body.contains("tracker.example") && body.contains(hirewire_mail::IMAGE_PLACEHOLDER), "remote image replaced: {body}");
        assert!(!body.contains("<script") && !body.contains("onerror") && !body.contains("__pwned"), "{body}");

        let res = riley.get(app.at(&format!("{url}?images=1"))).send().await.unwrap();
        assert_eq!(res.headers()["content-security-policy"], hirewire_mail::BODY_CSP_SHOW_IMAGES);
        let body = res.text().await.unwrap();
        assert!(body.contains("https://tracker.example/pixel.gif"), "shown on request: {body}");

        // The page embeds it in the sandboxed frame and offers "show images".
        let (_, html) = page(&riley, app.at(&format!("/candidates/{}", w.cand))).await;
        assert!(html.contains(&format!("sandbox=\"{}\"", hirewire_mail::IFRAME_SANDBOX)));
        assert!(html.contains(&format!("src=\"{url}\"")) && html.contains(&format!("href=\"{url}?images=1\"")));
        assert!(!html.contains("tracker.example"), "the page itself never carries the body");

        // Someone who cannot see it, a wrong thread, garbage: 404; signed out: sign-in.
        let sam = app.signed_in("sam@acme.example", "sam-password").await;
        assert_eq!(page(&sam, app.at(&url)).await.0, 404);
        assert_eq!(page(&sam, app.at(&format!("{url}?images=1"))).await.0, 404);
        assert_eq!(page(&riley, app.at(&format!("/mail/threads/{}/messages/{}/body", thread + 1000, ids[0]))).await.0, 404);
        assert_eq!(page(&riley, app.at("/mail/threads/x/messages/y/body")).await.0, 404);
        let res = app.browserless().get(app.at(&url)).send().await.unwrap();
        assert_eq!(res.status(), 303);
    }

    async fn another_org_sees_nothing_of_a_candidates_mail(db: TestDb) {
        let app = TestApp::start(&db).await;
        let w = acme(&app).await;
        store(&app, w.riley_inbox, &[mail(&app, w.cand, "p1", "k", Some("<m@x>"), 5, "<p>x</p>")]).await;
        let riley_token = app.api_token(&w.riley).await;
        let (thread, ids) = thread_of(&app, &riley_token, w.cand, "Subject k").await;
        assert_eq!(app.api(&riley_token).post(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 200);

        let other = app.org("Globex", &["globex.example"]).await;
        let boss = app.user(other, "boss@globex.example", ADMIN, "boss-password").await;
        let token = app.api_token(&boss).await;
        assert_eq!(get_json(&app, &token, &format!("/candidates/{}/timeline", w.cand)).await.0, 404);
        assert_eq!(app.api(&token).delete(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404);
        assert_eq!(app.api(&token).post(&format!("/mail/threads/{thread}/share")).send().await.unwrap().status(), 404);
        let client = app.signed_in("boss@globex.example", "boss-password").await;
        assert_eq!(page(&client, app.at(&format!("/candidates/{}", w.cand))).await.0, 404);
        assert_eq!(page(&client, app.at(&format!("/mail/threads/{thread}/messages/{}/body", ids[0]))).await.0, 404);
        // Still shared in Acme.
        let sam_token = app.api_token(&w.sam).await;
        assert_eq!(subjects(&whole_timeline(&app, &sam_token, w.cand, 10).await), vec!["Subject k"]);
    }

    async fn the_timeline_endpoints_are_in_the_openapi_document(db: TestDb) {
        let app = TestApp::start(&db).await;
        let doc: Value = reqwest::get(app.at("/api/openapi.json")).await.unwrap().json().await.unwrap();
        assert!(doc["paths"]["/candidates/{id}/timeline"]["get"].is_object());
        assert!(doc["paths"]["/mail/threads/{id}/share"]["post"].is_object());
        assert!(doc["paths"]["/mail/threads/{id}/share"]["delete"].is_object());
        assert!(doc["components"]["schemas"]["TimelineList"].is_object());
        assert!(doc["paths"]["/candidates"]["get"].is_object(), "the rest is still there");
    }
}
