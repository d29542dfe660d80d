//! Hostile email HTML on the candidate page, in headless Chromium (SQLite):
//! an XSS corpus, sent as real mail into the recruiter's sandbox mailbox and
//! synced from there (the mail core sanitizes it for storage), runs no script (a `window.__pwned` sentinel and a beacon server) and
//! fetches nothing remote, before and after "show images".

use std::sync::{Arc, Mutex};

use fantoccini::Locator;
use hirewire_server::sync;
use hirewire_server::testing::{Answer, Landing, RECRUITER, World};
use hirewire_store::testing::TestDb;
use hirewire_store::{AccessLevelSetting, Backend, CapabilityKind};
use hirewire_testkit::page::{element, follow};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP server that records every request's path and answers
/// with a 1×1 GIF.
async fn beacon() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                seen.lock().unwrap().push(path);
                const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    GIF.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(GIF).await;
            });
        }
    });
    (port, hits)
}

/// The corpus: every way in we know of, with every payload aimed at the
/// top page's sentinel or at the beacon.
fn corpus(port: u16) -> String {
    let b = format!("http://127.0.0.1:{port}");
    format!(
        r#"<p>Hello from Ada, <b>about the role</b>.</p>
<img src=x onerror="window.top.__pwned=1">
<script>window.top.__pwned=1; new Image().src='{b}/script';</script>
<a href="javascript:window.top.__pwned=1" id="js-link">a javascript: link</a>
<a href="  JaVaScRiPt:window.top.__pwned=1">a disguised one</a>
<svg onload="window.top.__pwned=1"><script>window.top.__pwned=1</script></svg>
<body onload="window.top.__pwned=1">
<iframe src="{b}/iframe"></iframe>
<iframe srcdoc="<script>window.top.__pwned=1</script>"></iframe>
<object data="{b}/object"></object><embed src="{b}/embed">
<meta http-equiv="refresh" content="0;url={b}/refresh">
<link rel="stylesheet" href="{b}/link.css">
<style>@import url({b}/import.css); p {{ background: url({b}/style-tag) }}</style>
<div style="background-image:url({b}/style-attr)">styled</div>
<form action="{b}/form"><input type="image" src="{b}/input"><button>go</button></form>
<video src="{b}/video" autoplay></video><audio src="{b}/audio" autoplay></audio>
<math><mtext><table><mglyph><style><img src=x onerror="window.top.__pwned=1"></style></mglyph></table></mtext></math>
<img src="{b}/pixel" alt="tracking pixel">
<img srcset="{b}/srcset 2x">
"#
    )
}

async fn top_sentinel(b: &fantoccini::Client) -> serde_json::Value {
    b.execute("return typeof window.__pwned", vec![])
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_email_html_runs_no_script_and_fetches_nothing_remote() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let world = World::start(&db).await;
    let app = &world.app;
    let org = app.org("Acme Talent", &["acme.example"]).await;
    app.user(org, "riley@acme.example", RECRUITER, "riley-password")
        .await;
    world
        .use_provider(org, "microsoft", None, AccessLevelSetting::SendAndView)
        .await;
    let email = hirewire_domain::email::EmailAddress::parse("ada@cand.example").unwrap();
    let cand = app
        .store
        .create_candidate(org, "Ada Lovelace", &[email], app.now())
        .await
        .unwrap()
        .id;
    // The corpus arrives as real mail in the recruiter's sandbox mailbox
    // (HTML body, hostile display name and subject) and is synced from there.
    let mailbox = "adele@acme.example";
    let (port, hits) = beacon().await;
    let raw = format!(
        "From: \"Ada <script>window.top.__pwned=1</script>\" <ada@cand.example>\r\n\
         To: {mailbox}\r\n\
         Subject: <img src=x onerror=window.__pwned=1> Your application\r\n\
         Message-ID: <hostile@cand.example>\r\n\
         Date: Sun, 03 Jan 2027 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n{}",
        corpus(port).replace('\n', "\r\n")
    );
    world
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{mailbox}/messages"),
            Some(json!({"raw": raw, "received_at": "2027-01-03T10:00:00Z"})),
        )
        .await;
    let client = app.signed_in("riley@acme.example", "riley-password").await;
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
    sync::run_until_idle(&app.state, "w1", 20).await;
    let riley = app
        .store
        .user_by_email_key(&hirewire_domain::email::AddressKey::of(
            "riley@acme.example",
        ))
        .await
        .unwrap()
        .unwrap();
    let grant = app
        .store
        .grant(riley.id, CapabilityKind::Inbox)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.store.grant_message_ids(grant.id).await.unwrap(),
        vec![Some("hostile@cand.example".to_owned())],
        "the hostile mail was synced from the sandbox"
    );

    let b = hirewire_testkit::browser().await;
    b.goto(&app.at("/sign-in")).await.unwrap();
    element(&b, "#email")
        .await
        .send_keys("riley@acme.example")
        .await
        .unwrap();
    element(&b, "#password")
        .await
        .send_keys("riley-password")
        .await
        .unwrap();
    follow(&b, "#sign-in").await;
    b.goto(&app.at(&format!("/candidates/{cand}")))
        .await
        .unwrap();

    // The body rendered (its text is inside the frame), in an opaque origin.
    let frame = element(&b, "iframe.mail-body").await;
    let sandbox = frame.attr("sandbox").await.unwrap().unwrap();
    assert_eq!(sandbox, hirewire_mail::IFRAME_SANDBOX);
    assert!(!sandbox.contains("allow-scripts") && !sandbox.contains("allow-same-origin"));
    let title = element(&b, ".conv-title").await.text().await.unwrap();
    assert!(title.contains("<img src=x"), "the subject is text: {title}");
    frame.clone().enter_frame().await.unwrap();
    let text = element(&b, "body").await.text().await.unwrap();
    assert!(text.contains("Hello from Ada, about the role."), "{text}");
    // WebDriver reaches into the frame, but the page's own scripts cannot:
    // nothing in the frame defined anything, and its origin is opaque.
    let inside = b
        .execute("return [typeof window.__pwned, window.origin]", vec![])
        .await;
    b.enter_parent_frame().await.unwrap();
    let v = inside.unwrap();
    assert_eq!(v[0], "undefined", "{v}");
    assert_eq!(v[1], "null", "the frame's origin is opaque: {v}");
    let cross = b
        .execute(
            "return document.querySelector('iframe.mail-body').contentDocument === null",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        cross, true,
        "the top page cannot reach into the frame either (no same-origin)"
    );
    // Give any handler, redirect or lazy fetch time to happen.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(top_sentinel(&b).await, "undefined", "no script ran");
    assert_eq!(
        *hits.lock().unwrap(),
        Vec::<String>::new(),
        "nothing remote was fetched"
    );

    // "Show images" reloads only that frame, with remote images allowed by
    // the mail core's show-images CSP: HTTPS only. The beacon is plain HTTP
    // on loopback, so even now it is never contacted; that the frame did
    // switch is checked on the body it now shows.
    let link = element(&b, "a.show-images").await;
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(href.ends_with("?images=1"), "{href}");
    assert_eq!(
        link.attr("target").await.unwrap().unwrap(),
        frame.attr("name").await.unwrap().unwrap()
    );
    link.click().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        frame.clone().enter_frame().await.unwrap();
        let img = b
            .find(Locator::Css(&format!(
                "img[src=\"http://127.0.0.1:{port}/pixel\"]"
            )))
            .await;
        b.enter_parent_frame().await.unwrap();
        if img.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the frame never showed images"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(top_sentinel(&b).await, "undefined", "no script ran");
    assert_eq!(
        *hits.lock().unwrap(),
        Vec::<String>::new(),
        "the show-images CSP allows HTTPS images only: a plain-HTTP image is still not fetched"
    );
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/candidates/"),
        "the top page stayed"
    );
    // The beacon was reachable all along: the zeros above mean something.
    b.goto(&format!("http://127.0.0.1:{port}/reachable"))
        .await
        .unwrap();
    let seen = hits.lock().unwrap().clone();
    assert!(
        seen.contains(&"/reachable".to_owned())
            && seen
                .iter()
                .all(|p| p == "/reachable" || p == "/favicon.ico"),
        "{seen:?}"
    );
}
