//! Mail-read endpoints over HTTP: Graph messages, folders, attachments and delta; Gmail list, get,
//! attachments, history and batch; the mailbox generator; and the mailbox control API.

mod common;

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use common::*;
use hirewire_sandbox::mailgen::{GenerateSpec, generate};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADELE: &str = "adele@acme.example";
const HANK: &str = "hank@globex.example";
const CANDIDATES: [&str; 3] = [
    "jane.doe@candidates.example",
    "li.wei@candidates.example",
    "sam@people.example",
];

async fn generate_for(t: &Ctx, user: &str, n: usize, seed: u64) -> Value {
    let (st, body) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{user}/generate"),
            Some(json!({
                "n": n, "seed": seed, "candidates": CANDIDATES, "candidate_share": 0.3,
                "start": "2025-11-27T00:00:00Z", "end": "2026-11-27T00:00:00Z",
            })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

async fn listing(t: &Ctx, user: &str, folder: Option<&str>) -> Vec<Value> {
    let path = match folder {
        Some(f) => format!("/_sandbox/mailboxes/{user}/messages?folder={f}"),
        None => format!("/_sandbox/mailboxes/{user}/messages"),
    };
    let (st, body) = t.control(Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

async fn graph_token(t: &Ctx) -> String {
    s(&t.ms_tokens(ADELE).await["access_token"]).to_string()
}

async fn gmail_token(t: &Ctx) -> String {
    s(&t.google_tokens(HANK, GMAIL_READ).await["access_token"]).to_string()
}

/// GET with extra headers; follows nothing. A full URL is used as is (nextLink / deltaLink).
async fn get(
    t: &Ctx,
    token: &str,
    path_or_url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_string()
    } else {
        t.url(path_or_url)
    };
    let mut rq = t.http.get(url).bearer_auth(token);
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    let r = rq.send().await.unwrap();
    let st = r.status();
    let h = r.headers().clone();
    (st, h, r.json().await.unwrap_or(Value::Null))
}

/// Follows `@odata.nextLink` until a page has none (or a `@odata.deltaLink`); returns every item and the
/// delta link if any.
async fn follow(
    t: &Ctx,
    token: &str,
    first: &str,
    headers: &[(&str, &str)],
) -> (Vec<Value>, Option<String>) {
    let mut items = Vec::new();
    let mut url = first.to_string();
    for _ in 0..10_000 {
        let (st, _, page) = get(t, token, &url, headers).await;
        assert_eq!(st, StatusCode::OK, "{url}: {page}");
        items.extend(page["value"].as_array().unwrap().iter().cloned());
        match (page.get("@odata.nextLink"), page.get("@odata.deltaLink")) {
            (Some(next), None) => url = s(next).to_string(),
            (None, delta) => return (items, delta.map(|d| s(d).to_string())),
            (Some(_), Some(_)) => {
                panic!("a page carries exactly one of nextLink and deltaLink: {page}")
            }
        }
    }
    panic!("paging did not end");
}

fn ms_of(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

#[tokio::test]
async fn paging_through_me_messages_with_filter_orderby_and_top_returns_each_message_once() {
    let t = start().await;
    generate_for(&t, ADELE, 150, 7).await;
    let all = listing(&t, ADELE, None).await;
    let since = "2026-05-01T00:00:00Z";
    let expected: HashSet<String> = all
        .iter()
        .filter(|m| ms_of(s(&m["received"])) >= ms_of(since))
        .map(|m| s(&m["graph_id"]).to_string())
        .collect();
    assert!(
        expected.len() > 30 && expected.len() < all.len(),
        "{}",
        expected.len()
    );
    let token = graph_token(&t).await;
    let first = format!(
        "/v1.0/me/messages?$filter=receivedDateTime ge {since}&$orderby=receivedDateTime desc&$top=7&$select=subject,receivedDateTime"
    );
    let (items, delta) = follow(&t, &token, &first, &[]).await;
    assert!(delta.is_none());
    let ids: Vec<String> = items.iter().map(|m| s(&m["id"]).to_string()).collect();
    assert_eq!(ids.len(), expected.len(), "no message twice, none left out");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    let dates: Vec<&str> = items.iter().map(|m| s(&m["receivedDateTime"])).collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(
        items[0].as_object().unwrap().len(),
        4,
        "$select keeps id, etag and the two fields: {}",
        items[0]
    );

    // nextLink is absolute and built from the request's own Host.
    let r = t
        .http
        .get(t.url("/v1.0/me/messages?$top=5"))
        .bearer_auth(&token)
        .header("host", "graph.sandbox.test:4444")
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert!(
        s(&page["@odata.nextLink"]).starts_with("http://graph.sandbox.test:4444/v1.0/me/messages?"),
        "{page}"
    );
    assert_eq!(page["value"].as_array().unwrap().len(), 5);

    // $orderby on another property than the filter's first one is refused, as Graph does.
    let (st, _, err) = get(
        &t,
        &token,
        &format!(
            "/v1.0/me/messages?$filter=receivedDateTime ge {since}&$orderby=sentDateTime desc"
        ),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "InefficientFilter");
    let (st, _, err) = get(&t, &token, "/v1.0/me/messages?$select=nope", &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn mail_folders_are_addressed_by_well_known_name_or_id_and_messages_by_id() {
    let t = start().await;
    generate_for(&t, ADELE, 80, 3).await;
    let token = graph_token(&t).await;
    let inbox_n = listing(&t, ADELE, Some("inbox")).await.len();
    let sent_n = listing(&t, ADELE, Some("sentitems")).await.len();
    assert!(inbox_n > 0 && sent_n > 0);
    let (inbox, _) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages?$top=100",
        &[],
    )
    .await;
    assert_eq!(inbox.len(), inbox_n);
    let (sent, _) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders('SentItems')/messages?$top=100",
        &[],
    )
    .await;
    assert_eq!(sent.len(), sent_n);
    let folder_id = s(&inbox[0]["parentFolderId"]).to_string();
    let (by_id, _) = follow(
        &t,
        &token,
        &format!("/v1.0/me/mailFolders/{folder_id}/messages?$top=100"),
        &[],
    )
    .await;
    assert_eq!(by_id.len(), inbox_n);

    let id = s(&inbox[0]["id"]);
    let (st, _, m) = get(&t, &token, &format!("/v1.0/me/messages/{id}"), &[]).await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m["id"], inbox[0]["id"]);
    assert_eq!(m["body"]["contentType"], "html");
    assert!(
        m.get("internetMessageHeaders").is_none(),
        "only with $select"
    );
    let (_, h, text) = get(
        &t,
        &token,
        &format!("/v1.0/me/messages/{id}"),
        &[("prefer", "outlook.body-content-type=\"text\"")],
    )
    .await;
    assert_eq!(text["body"]["contentType"], "text");
    assert!(
        h["preference-applied"]
            .to_str()
            .unwrap()
            .contains("outlook.body-content-type")
    );
    let (_, _, sel) = get(
        &t,
        &token,
        &format!("/v1.0/me/messages/{id}?$select=internetMessageHeaders"),
        &[],
    )
    .await;
    assert!(
        sel["internetMessageHeaders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Message-ID")
    );
    let (st, _, err) = get(
        &t,
        &token,
        "/v1.0/me/mailFolders/nosuchfolder/messages",
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    let (st, _, err) = get(&t, &token, "/v1.0/me/messages/garbage", &[]).await;
    assert_eq!(
        (st, s(&err["error"]["code"])),
        (StatusCode::BAD_REQUEST, "ErrorInvalidIdMalformed")
    );
}

#[tokio::test]
async fn the_filtered_delta_stops_at_the_cap_and_the_unfiltered_one_does_not() {
    // The cap is configurable; a small one keeps this fast (the real value, 5,000, is the default and is
    // exercised by the ignored test below).
    let t = start().await;
    generate_for(&t, ADELE, 300, 11).await;
    let (st, _) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"graph_delta_filter_cap": 40})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let token = graph_token(&t).await;
    let inbox = listing(&t, ADELE, Some("inbox")).await;
    assert!(inbox.len() > 100);
    let (filtered, delta) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2025-01-01T00:00:00Z&$top=15",
        &[],
    )
    .await;
    assert_eq!(filtered.len(), 40);
    assert!(delta.is_some());
    let (all, _) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages/delta()",
        &[("prefer", "odata.maxpagesize=50")],
    )
    .await;
    assert_eq!(all.len(), inbox.len());
    assert_eq!(
        all.iter()
            .map(|m| s(&m["id"]))
            .collect::<HashSet<_>>()
            .len(),
        inbox.len()
    );
}

#[tokio::test]
async fn the_filtered_delta_stops_at_5000_messages() {
    let t = start().await;
    let token = graph_token(&t).await;
    let mut raws = Vec::new();
    for i in 0..5200 {
        raws.push(format!(
            "From: c{i}@candidates.example\r\nTo: {ADELE}\r\nSubject: m{i}\r\nMessage-ID: <m{i}@x>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\nhi\r\n"
        ));
    }
    for r in raws {
        let (st, body) = t
            .control(
                Method::POST,
                &format!("/_sandbox/mailboxes/{ADELE}/messages"),
                Some(json!({"raw": r, "received_at": "2026-03-02T10:00:00Z"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (items, _) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2026-01-01T00:00:00Z&$select=id",
        &[("prefer", "odata.maxpagesize=1000")],
    )
    .await;
    assert_eq!(items.len(), 5000);
}

#[tokio::test]
async fn delta_replays_since_a_token_reports_removals_and_answers_410_once_expired() {
    let t = start().await;
    generate_for(&t, ADELE, 60, 5).await;
    let token = graph_token(&t).await;
    let (first, delta) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages/delta?$select=subject,isRead",
        &[],
    )
    .await;
    let delta = delta.expect("deltaLink at the end of the first round");
    assert!(delta.starts_with(&t.base), "{delta}");
    let (again, delta_unchanged) = follow(&t, &token, &delta, &[]).await;
    assert!(again.is_empty(), "nothing changed: {again:?}");

    // A candidate replies, one message is deleted, one moves out, one is marked read.
    let (_, reply) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{ADELE}/messages"),
            Some(json!({"from": CANDIDATES[0], "from_name": "Jane Doe", "body": "Tuesday works for me", "in_reply_to": s(&first[0]["id"])})),
        )
        .await;
    let gone = s(&first[1]["id"]).to_string();
    let moved = s(&first[2]["id"]).to_string();
    let read = first
        .iter()
        .find(|m| m["isRead"] == false)
        .map(|m| s(&m["id"]).to_string());
    assert_eq!(
        t.control(
            Method::DELETE,
            &format!("/_sandbox/mailboxes/{ADELE}/messages/{gone}"),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        t.control(
            Method::PATCH,
            &format!("/_sandbox/mailboxes/{ADELE}/messages/{moved}"),
            Some(json!({"folder": "archive"}))
        )
        .await
        .0,
        StatusCode::OK
    );
    if let Some(r) = &read {
        t.control(
            Method::PATCH,
            &format!("/_sandbox/mailboxes/{ADELE}/messages/{r}"),
            Some(json!({"is_read": true})),
        )
        .await;
    }

    let (changes, next) = follow(&t, &token, &delta, &[]).await;
    let removed: HashSet<&str> = changes
        .iter()
        .filter(|c| c.get("@removed").is_some())
        .map(|c| s(&c["id"]))
        .collect();
    assert_eq!(
        removed,
        HashSet::from([gone.as_str(), moved.as_str()]),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .all(|c| c["@odata.type"] == "#microsoft.graph.message")
    );
    let added = changes
        .iter()
        .find(|c| c["id"] == reply["graph_id"])
        .expect("the reply arrives");
    assert_eq!(added["subject"], format!("Re: {}", s(&first[0]["subject"])));
    if let Some(r) = &read {
        let upd = changes
            .iter()
            .find(|c| c["id"] == r.as_str())
            .expect("read change");
        assert_eq!(upd["isRead"], true);
    }
    assert_eq!(changes.len(), 3 + usize::from(read.is_some()));
    // The same token replays the same changes; the new one has none.
    let (replay, _) = follow(&t, &token, &delta, &[]).await;
    assert_eq!(replay, changes);
    let (none, _) = follow(&t, &token, next.as_deref().unwrap(), &[]).await;
    assert!(none.is_empty());
    let _ = delta_unchanged;

    let (st, body) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{ADELE}/delta-tokens/expire"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, h, err) = get(&t, &token, &delta, &[]).await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(err["error"]["code"], "SyncStateNotFound");
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .ends_with("/v1.0/me/mailFolders/inbox/messages/delta")
    );

    // By age, with a configured lifetime.
    t.control(
        Method::PATCH,
        "/_sandbox/settings",
        Some(json!({"graph_delta_token_lifetime_secs": 3600})),
    )
    .await;
    let (_, fresh) = follow(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages/delta?$select=id",
        &[("prefer", "odata.maxpagesize=1000")],
    )
    .await;
    assert_eq!(
        get(&t, &token, fresh.as_deref().unwrap(), &[]).await.0,
        StatusCode::OK
    );
    t.control(
        Method::POST,
        "/_sandbox/clock/advance",
        Some(json!({"seconds": 3601})),
    )
    .await;
    let token = graph_token(&t).await;
    assert_eq!(
        get(&t, &token, fresh.as_deref().unwrap(), &[]).await.0,
        StatusCode::GONE
    );
}

#[tokio::test]
async fn the_immutable_id_preference_keeps_ids_stable_across_a_move() {
    let t = start().await;
    generate_for(&t, ADELE, 40, 9).await;
    let token = graph_token(&t).await;
    let imm = [("prefer", "IdType=\"ImmutableId\"")];
    let (_, h, page) = get(
        &t,
        &token,
        "/v1.0/me/mailFolders/inbox/messages?$top=1",
        &imm,
    )
    .await;
    assert!(
        h["preference-applied"]
            .to_str()
            .unwrap()
            .contains("ImmutableId")
    );
    let immutable = s(&page["value"][0]["id"]).to_string();
    let (_, _, rest) = get(&t, &token, &format!("/v1.0/me/messages/{immutable}"), &[]).await;
    let rest_id = s(&rest["id"]).to_string();
    assert_ne!(rest_id, immutable);

    t.control(
        Method::PATCH,
        &format!("/_sandbox/mailboxes/{ADELE}/messages/{immutable}"),
        Some(json!({"folder": "archive"})),
    )
    .await;
    let (st, _, m) = get(&t, &token, &format!("/v1.0/me/messages/{immutable}"), &imm).await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(
        m["id"],
        immutable.as_str(),
        "the immutable id survives the move"
    );
    assert_ne!(m["parentFolderId"], rest["parentFolderId"]);
    let (st, _, _) = get(&t, &token, &format!("/v1.0/me/messages/{rest_id}"), &[]).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "the regular id changed with the move"
    );
    let (_, _, moved) = get(&t, &token, &format!("/v1.0/me/messages/{immutable}"), &[]).await;
    assert_ne!(moved["id"], rest_id.as_str());
    let (st, _, _) = get(
        &t,
        &token,
        &format!("/v1.0/me/mailFolders/archive/messages/{}", s(&moved["id"])),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn graph_attachments_list_and_get_return_the_stored_bytes() {
    let t = start().await;
    generate_for(&t, ADELE, 120, 4).await;
    let token = graph_token(&t).await;
    let (all, _) = follow(
        &t,
        &token,
        "/v1.0/me/messages?$top=200&$select=hasAttachments",
        &[],
    )
    .await;
    let with = all
        .iter()
        .find(|m| m["hasAttachments"] == true)
        .expect("some message has attachments");
    let id = s(&with["id"]);
    let (st, _, list) = get(
        &t,
        &token,
        &format!("/v1.0/me/messages/{id}/attachments"),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let first = &list["value"][0];
    assert_eq!(first["@odata.type"], "#microsoft.graph.fileAttachment");
    let bytes = STANDARD.decode(s(&first["contentBytes"])).unwrap();
    assert_eq!(bytes.len() as u64, first["size"].as_u64().unwrap());
    let (st, _, one) = get(
        &t,
        &token,
        &format!("/v1.0/me/messages/{id}/attachments/{}", s(&first["id"])),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(one["contentBytes"], first["contentBytes"]);
    assert_eq!(
        get(
            &t,
            &token,
            &format!("/v1.0/me/messages/{id}/attachments/AAMkAGAttAAAA"),
            &[]
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

fn gmail_ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .map(|a| a.iter().map(|m| s(&m["id"]).to_string()).collect())
        .unwrap_or_default()
}

async fn gmail_all(t: &Ctx, token: &str, q: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut url = format!(
            "/gmail/v1/users/me/messages?maxResults=50&q={}",
            urlencode(q)
        );
        if let Some(p) = &page_token {
            url.push_str(&format!("&pageToken={p}"));
        }
        let (st, _, page) = get(t, token, &url, &[]).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        ids.extend(gmail_ids(&page));
        match page.get("nextPageToken") {
            Some(p) => page_token = Some(s(p).to_string()),
            None => return ids,
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn gmail_list_supports_each_q_operator() {
    let t = start().await;
    generate_for(&t, HANK, 200, 21).await;
    let token = gmail_token(&t).await;
    let all = listing(&t, HANK, None).await;
    let visible: Vec<&Value> = all
        .iter()
        .filter(|m| m["folder"] != "deleteditems")
        .collect();
    let by_id: HashMap<&str, &Value> = all.iter().map(|m| (s(&m["id"]), m)).collect();

    let everything = gmail_all(&t, &token, "").await;
    assert_eq!(everything.len(), visible.len());
    assert_eq!(
        everything.iter().collect::<HashSet<_>>().len(),
        everything.len(),
        "each once"
    );

    let from = gmail_all(&t, &token, &format!("from:{}", CANDIDATES[0])).await;
    assert!(!from.is_empty());
    assert!(
        from.iter()
            .all(|id| by_id[id.as_str()]["from"] == CANDIDATES[0])
    );
    let expected_from = visible
        .iter()
        .filter(|m| m["from"] == CANDIDATES[0])
        .count();
    assert_eq!(from.len(), expected_from);

    let to = gmail_all(&t, &token, &format!("to:{}", CANDIDATES[1])).await;
    assert!(!to.is_empty());
    assert!(
        to.iter().all(|id| by_id[id.as_str()]["from"] == HANK),
        "mail to a candidate is sent by the owner"
    );

    let target = visible[17];
    let mid = s(&target["internet_message_id"]);
    let found = gmail_all(
        &t,
        &token,
        &format!("rfc822msgid:{}", mid.trim_matches(['<', '>'])),
    )
    .await;
    assert_eq!(found, vec![s(&target["id"]).to_string()]);
    assert_eq!(
        gmail_all(&t, &token, &format!("rfc822msgid:{mid}"))
            .await
            .len(),
        1
    );

    let after = gmail_all(&t, &token, "after:2026/06/01").await;
    let before = gmail_all(&t, &token, "before:2026/06/01").await;
    assert_eq!(after.len() + before.len(), visible.len());
    let cut = ms_of("2026-06-01T00:00:00Z");
    assert!(
        after
            .iter()
            .all(|id| ms_of(s(&by_id[id.as_str()]["received"])) >= cut / 1000 * 1000)
    );
    assert!(!after.is_empty() && !before.is_empty());
    let window = gmail_all(
        &t,
        &token,
        &format!(
            "after:{} before:2026/06/01 from:{}",
            cut / 1000 - 90 * 86_400,
            CANDIDATES[0]
        ),
    )
    .await;
    assert!(
        window
            .iter()
            .all(|id| before.contains(id) && from.contains(id))
    );

    let (_, _, empty) = get(
        &t,
        &token,
        "/gmail/v1/users/me/messages?q=from:nobody@nowhere.example",
        &[],
    )
    .await;
    assert_eq!(empty, json!({"resultSizeEstimate": 0}));
}

#[tokio::test]
async fn gmail_get_serves_full_metadata_and_raw_formats_of_the_same_bytes() {
    let t = start().await;
    generate_for(&t, HANK, 60, 2).await;
    let token = gmail_token(&t).await;
    let all = listing(&t, HANK, None).await;
    let id = s(&all[5]["id"]);
    let (st, _, raw) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}?format=raw"),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{raw}");
    let (_, stored) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{HANK}/messages/{id}"),
            None,
        )
        .await;
    let bytes = URL_SAFE.decode(s(&raw["raw"])).unwrap();
    assert_eq!(
        bytes,
        s(&stored["raw"]).as_bytes(),
        "raw is base64url of the exact stored bytes"
    );
    assert_eq!(raw["sizeEstimate"].as_u64().unwrap() as usize, bytes.len());
    assert!(raw.get("payload").is_none());

    let (_, _, full) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}?format=full&alt=json"),
        &[],
    )
    .await;
    assert_eq!(full["payload"]["partId"], "");
    let headers = full["payload"]["headers"].as_array().unwrap();
    let header = |n: &str| {
        headers
            .iter()
            .find(|h| h["name"] == n)
            .map(|h| s(&h["value"]).to_string())
    };
    assert_eq!(
        header("Message-ID").as_deref(),
        Some(s(&all[5]["internet_message_id"]))
    );
    assert!(s(&full["internalDate"]).parse::<i64>().is_ok());
    assert!(s(&full["historyId"]).parse::<u64>().is_ok());
    assert_eq!(full["id"], id);
    // The text part's data decodes to text the Graph body also shows.
    fn text_part(p: &Value) -> Option<&Value> {
        if p["mimeType"] == "text/plain" {
            return Some(p);
        }
        p["parts"].as_array()?.iter().find_map(text_part)
    }
    let tp = text_part(&full["payload"]).expect("a text/plain part");
    let data = URL_SAFE.decode(s(&tp["body"]["data"])).unwrap();
    assert_eq!(data.len() as u64, tp["body"]["size"].as_u64().unwrap());

    let (_, _, meta) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}?format=metadata&metadataHeaders=Subject&metadataHeaders=From"),
        &[],
    )
    .await;
    let names: Vec<&str> = meta["payload"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| s(&h["name"]))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"Subject") && names.contains(&"From"));
    let (_, _, min) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}?format=minimal"),
        &[],
    )
    .await;
    assert!(min.get("payload").is_none() && min.get("raw").is_none());

    let (st, _, nf) = get(
        &t,
        &token,
        "/gmail/v1/users/me/messages/0000000000000000",
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{nf}");
    assert_eq!(nf["error"]["errors"][0]["reason"], "notFound");
}

#[tokio::test]
async fn odd_charsets_decode_the_same_in_both_providers_views() {
    let t = start().await;
    generate_for(&t, HANK, 300, 8).await;
    let token = gmail_token(&t).await;
    let all = listing(&t, HANK, None).await;
    let ja = all
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .contains("メンセツのごあんない")
        })
        .expect("an ISO-2022-JP subject");
    let (_, _, full) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{}", s(&ja["id"])),
        &[],
    )
    .await;
    let subject = full["payload"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "Subject")
        .unwrap();
    assert!(
        s(&subject["value"]).contains("メンセツのごあんない"),
        "RFC 2047 subject decoded: {subject}"
    );
    assert!(
        s(&full["snippet"]).contains("よろしくおねがいします"),
        "{}",
        full["snippet"]
    );
    let raw = URL_SAFE
        .decode(s(&get(
            &t,
            &token,
            &format!("/gmail/v1/users/me/messages/{}?format=raw", s(&ja["id"])),
            &[],
        )
        .await
        .2["raw"]))
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("charset=\"ISO-2022-JP\""));

    // A Windows-1252 body: Gmail's part data keeps the original bytes, the snippet is decoded text.
    let mut seen_cp1252 = false;
    for m in all.iter().take(300) {
        let (_, _, full) = get(
            &t,
            &token,
            &format!("/gmail/v1/users/me/messages/{}", s(&m["id"])),
            &[],
        )
        .await;
        let snippet = s(&full["snippet"]);
        if snippet.contains("€120k") {
            assert!(
                snippet.contains("&quot;") || snippet.contains('“'),
                "{snippet}"
            );
            fn leaf(p: &Value) -> Option<&Value> {
                if p["mimeType"] == "text/plain" {
                    Some(p)
                } else {
                    p["parts"].as_array()?.iter().find_map(leaf)
                }
            }
            let data = URL_SAFE
                .decode(s(&leaf(&full["payload"]).unwrap()["body"]["data"]))
                .unwrap();
            assert!(
                data.contains(&0x80) && data.contains(&0x93),
                "Windows-1252 bytes kept"
            );
            seen_cp1252 = true;
            break;
        }
    }
    assert!(seen_cp1252, "a Windows-1252 message exists in 300");
}

#[tokio::test]
async fn gmail_attachments_get_returns_the_attachment_bytes() {
    let t = start().await;
    generate_for(&t, HANK, 120, 4).await;
    let token = gmail_token(&t).await;
    let ids = gmail_all(&t, &token, "has:attachment").await;
    assert!(!ids.is_empty());
    let (_, _, full) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{}", ids[0]),
        &[],
    )
    .await;
    let att = full["payload"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| !s(&p["filename"]).is_empty())
        .expect("an attachment part")
        .clone();
    assert!(att["body"].get("data").is_none());
    let aid = s(&att["body"]["attachmentId"]);
    let (st, _, body) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{}/attachments/{aid}", ids[0]),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let bytes = URL_SAFE.decode(s(&body["data"])).unwrap();
    assert_eq!(bytes.len() as u64, body["size"].as_u64().unwrap());
    assert_eq!(body["size"], att["body"]["size"]);
    let (_, stored) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{HANK}/messages/{}", ids[0]),
            None,
        )
        .await;
    let b64: String = STANDARD.encode(&bytes).chars().take(60).collect();
    assert!(
        s(&stored["raw"]).contains(&b64),
        "the bytes are the attachment's in the stored message"
    );
    let magic = [&b"%PDF"[..], b"\x89PNG", b"PK\x03\x04"];
    assert!(magic.iter().any(|m| bytes.starts_with(m)));
}

#[tokio::test]
async fn gmail_history_lists_an_injected_message_and_404s_on_a_stale_id() {
    let t = start().await;
    generate_for(&t, HANK, 50, 6).await;
    let token = gmail_token(&t).await;
    let (_, _, profile) = get(&t, &token, "/gmail/v1/users/me/profile", &[]).await;
    assert_eq!(profile["messagesTotal"], 50);
    let start_id = s(&profile["historyId"]).to_string();
    let (_, _, empty) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/history?startHistoryId={start_id}"),
        &[],
    )
    .await;
    assert_eq!(empty, json!({"historyId": start_id}));

    let existing = listing(&t, HANK, Some("inbox")).await;
    let (st, reply) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{HANK}/messages"),
            Some(json!({"from": CANDIDATES[2], "body": "Thanks, Tuesday works", "in_reply_to": s(&existing[0]["internet_message_id"])})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["thread_id"], existing[0]["thread_id"],
        "threaded by In-Reply-To"
    );
    t.control(
        Method::DELETE,
        &format!(
            "/_sandbox/mailboxes/{HANK}/messages/{}",
            s(&existing[1]["id"])
        ),
        None,
    )
    .await;
    t.control(
        Method::PATCH,
        &format!(
            "/_sandbox/mailboxes/{HANK}/messages/{}",
            s(&existing[2]["id"])
        ),
        Some(json!({"folder": "deleteditems"})),
    )
    .await;

    let (st, _, h) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/history?startHistoryId={start_id}"),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{h}");
    let recs = h["history"].as_array().unwrap();
    assert_eq!(recs.len(), 3, "{h}");
    assert_eq!(recs[0]["messagesAdded"][0]["message"]["id"], reply["id"]);
    assert!(
        recs[0]["messagesAdded"][0]["message"]["labelIds"]
            .as_array()
            .unwrap()
            .contains(&json!("INBOX"))
    );
    assert_eq!(
        recs[1]["messagesDeleted"][0]["message"]["id"],
        existing[1]["id"]
    );
    assert!(
        recs[2]["labelsAdded"][0]["labelIds"]
            .as_array()
            .unwrap()
            .contains(&json!("TRASH"))
    );
    let ids: Vec<u64> = recs.iter().map(|r| s(&r["id"]).parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "chronological");
    let newest = s(&h["historyId"]).parse::<u64>().unwrap();
    assert!(newest >= *ids.last().unwrap() && newest > start_id.parse::<u64>().unwrap());
    let (_, _, only_added) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/history?startHistoryId={start_id}&historyTypes=messageAdded"),
        &[],
    )
    .await;
    assert_eq!(only_added["history"].as_array().unwrap().len(), 1);

    let (st, _) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{HANK}/history/expire"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, err) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/history?startHistoryId={start_id}"),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["errors"][0]["reason"], "notFound");
}

#[tokio::test]
async fn gmail_batch_returns_one_part_per_request_in_order() {
    let t = start().await;
    generate_for(&t, HANK, 30, 12).await;
    let token = gmail_token(&t).await;
    let ids: Vec<String> = listing(&t, HANK, None)
        .await
        .iter()
        .take(3)
        .map(|m| s(&m["id"]).to_string())
        .collect();
    let mut body = String::new();
    for (i, id) in ids.iter().enumerate() {
        // Bare LF line ends, as the Python client sends them.
        body.push_str(&format!(
            "--BOUNDARY\nContent-Type: application/http\nContent-ID: <item{i}>\n\nGET /gmail/v1/users/me/messages/{id}?format=metadata&alt=json\n\n"
        ));
    }
    body.push_str("--BOUNDARY\nContent-Type: application/http\nContent-ID: <item9>\n\nGET /gmail/v1/users/me/messages/ffffffffffffffff\n\n--BOUNDARY--\n");
    let r = t
        .http
        .post(t.url("/batch/gmail/v1"))
        .bearer_auth(&token)
        .header("content-type", "multipart/mixed; boundary=BOUNDARY")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let boundary = ct.split("boundary=").nth(1).unwrap().to_string();
    let text = r.text().await.unwrap();
    let parts: Vec<&str> = text
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("HTTP/1.1"))
        .collect();
    assert_eq!(parts.len(), 4, "{text}");
    for (i, id) in ids.iter().enumerate() {
        assert!(
            parts[i].contains(&format!("Content-ID: <response-item{i}>")),
            "{}",
            parts[i]
        );
        assert!(parts[i].contains("HTTP/1.1 200 OK"));
        assert!(parts[i].contains(&format!("\"id\":\"{id}\"")));
    }
    assert!(parts[3].contains("HTTP/1.1 404 Not Found"));
    let (_, counters) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(
        counters["endpoints"]["gmail.users.messages.get"]["requests"], 4,
        "each part is a call"
    );
}

#[tokio::test]
async fn scopes_faults_quotas_and_counters_apply_to_the_mail_endpoints() {
    let t = start().await;
    generate_for(&t, HANK, 20, 1).await;
    generate_for(&t, ADELE, 20, 1).await;
    // Graph without Mail.Read.
    let q = t
        .ms_sign_in(
            "organizations",
            "ben@acme.example",
            "openid offline_access User.Read",
        )
        .await;
    let (_, tok) = t.ms_redeem(&q["code"]).await;
    let (st, _, err) = get(&t, s(&tok["access_token"]), "/v1.0/me/messages", &[]).await;
    assert_eq!(
        (st, s(&err["error"]["code"])),
        (StatusCode::FORBIDDEN, "ErrorAccessDenied")
    );
    // Gmail with a Calendar-only grant, then with gmail.metadata.
    let cal = t.google_tokens("mindy@globex.example", CAL_READ).await;
    let (st, _, err) = get(
        &t,
        s(&cal["access_token"]),
        "/gmail/v1/users/me/messages",
        &[],
    )
    .await;
    assert_eq!(
        (st, s(&err["error"]["errors"][0]["reason"])),
        (StatusCode::FORBIDDEN, "insufficientPermissions")
    );
    let meta = t
        .google_tokens(HANK, "https://www.googleapis.com/auth/gmail.metadata")
        .await;
    let mt = s(&meta["access_token"]);
    assert_eq!(
        get(&t, mt, "/gmail/v1/users/me/messages", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&t, mt, "/gmail/v1/users/me/messages?q=from:x", &[])
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let id = s(&listing(&t, HANK, None).await[0]["id"]).to_string();
    assert_eq!(
        get(
            &t,
            mt,
            &format!("/gmail/v1/users/me/messages/{id}?format=metadata"),
            &[]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        get(
            &t,
            mt,
            &format!("/gmail/v1/users/me/messages/{id}?format=raw"),
            &[]
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );

    let token = gmail_token(&t).await;
    t.control(Method::DELETE, "/_sandbox/counters", None).await;
    get(&t, &token, "/gmail/v1/users/me/messages", &[]).await;
    get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}"),
        &[],
    )
    .await;
    get(
        &t,
        &token,
        "/gmail/v1/users/me/history?startHistoryId=1",
        &[],
    )
    .await;
    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["gmail_units"][HANK], 5 + 5 + 2, "{c}");
    assert_eq!(c["endpoints"]["gmail.users.history.list"]["requests"], 1);

    t.control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": "gmail.users.messages.*", "fault": {"kind": "user_rate_limit"}, "count": 1}))).await;
    let (st, _, err) = get(
        &t,
        &token,
        &format!("/gmail/v1/users/me/messages/{id}"),
        &[],
    )
    .await;
    assert_eq!(
        (st, s(&err["error"]["errors"][0]["reason"])),
        (StatusCode::FORBIDDEN, "userRateLimitExceeded")
    );
    t.control(Method::POST, "/_sandbox/faults", Some(json!({"endpoint": "graph.messages.delta", "fault": {"kind": "throttle", "retry_after_secs": 3}, "count": 1}))).await;
    let gt = graph_token(&t).await;
    let (st, h, _) = get(&t, &gt, "/v1.0/me/mailFolders/inbox/messages/delta", &[]).await;
    assert_eq!(
        (st, h["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "3")
    );
    t.control(
        Method::PATCH,
        "/_sandbox/settings",
        Some(json!({"gmail_units_per_user_per_minute": 12})),
    )
    .await;
    t.control(Method::DELETE, "/_sandbox/counters", None).await;
    assert_eq!(
        get(&t, &token, "/gmail/v1/users/me/messages", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&t, &token, "/gmail/v1/users/me/messages", &[]).await.0,
        StatusCode::OK
    );
    let (st, _, err) = get(&t, &token, "/gmail/v1/users/me/messages", &[]).await;
    assert_eq!(
        (st, s(&err["error"]["errors"][0]["reason"])),
        (StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded")
    );
}

// ---- generator ----------------------------------------------------------------------------------------

fn spec(n: usize, seed: u64) -> GenerateSpec {
    GenerateSpec {
        owner: "adele@acme.example".into(),
        owner_name: "Adele Vance".into(),
        n,
        seed,
        candidates: CANDIDATES.iter().map(|c| c.to_string()).collect(),
        candidate_share: 0.25,
        start: 1_764_201_600,
        end: 1_764_201_600 + 365 * 86_400,
    }
}

#[test]
fn the_generator_is_deterministic_for_a_seed() {
    let a = generate(&spec(300, 42));
    let b = generate(&spec(300, 42));
    let c = generate(&spec(300, 43));
    assert_eq!(a.len(), 300);
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.raw == y.raw && x.received_ms == y.received_ms && x.folder == y.folder)
    );
    assert!(a.iter().zip(&c).any(|(x, y)| x.raw != y.raw));
    assert!(a.windows(2).all(|w| w[0].received_ms <= w[1].received_ms));
    assert!(a.iter().all(|m| m.received_ms / 1000 >= 1_764_201_600
        && m.received_ms / 1000 <= 1_764_201_600 + 365 * 86_400 + 60));
}

#[test]
fn the_requested_share_of_messages_involves_candidate_addresses() {
    for share in [0.1, 0.25, 0.6] {
        let mut sp = spec(1000, 5);
        sp.candidate_share = share;
        let msgs = generate(&sp);
        let involved = msgs
            .iter()
            .filter(|m| {
                CANDIDATES.contains(&m.meta.from.as_str())
                    || m.meta
                        .recipients
                        .iter()
                        .any(|r| CANDIDATES.contains(&r.as_str()))
            })
            .count();
        let got = involved as f64 / msgs.len() as f64;
        assert!((got - share).abs() < 0.02, "share {share}: got {got}");
        // The metadata agrees with the bytes.
        for m in msgs.iter().step_by(97) {
            let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
            assert_eq!(
                parsed
                    .from()
                    .unwrap()
                    .first()
                    .unwrap()
                    .address()
                    .unwrap()
                    .to_ascii_lowercase(),
                m.meta.from
            );
            assert_eq!(
                format!("<{}>", parsed.message_id().unwrap()),
                m.meta.message_id
            );
        }
    }
    let mut none = spec(200, 5);
    none.candidate_share = 0.0;
    assert!(
        generate(&none)
            .iter()
            .all(|m| !CANDIDATES.contains(&m.meta.from.as_str()))
    );
}

#[test]
fn generated_threads_have_consistent_message_id_in_reply_to_and_references() {
    let msgs = generate(&spec(400, 77));
    let parsed: Vec<_> = msgs
        .iter()
        .map(|m| mail_parser::MessageParser::default().parse(&m.raw).unwrap())
        .collect();
    let by_id: HashMap<String, usize> = parsed
        .iter()
        .enumerate()
        .map(|(i, p)| (p.message_id().unwrap().to_string(), i))
        .collect();
    assert_eq!(by_id.len(), msgs.len(), "Message-IDs are unique");
    let mut replies = 0;
    for (i, p) in parsed.iter().enumerate() {
        let irt = match p.in_reply_to().as_text() {
            Some(x) => x.to_string(),
            None => {
                assert!(p.references().is_empty());
                continue;
            }
        };
        replies += 1;
        let parent = by_id[&irt];
        assert!(
            msgs[parent].received_ms <= msgs[i].received_ms,
            "a reply comes after its parent"
        );
        let refs: Vec<String> = match p.references() {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|x| x.to_string()).collect(),
            other => panic!("references: {other:?}"),
        };
        assert_eq!(refs.last(), Some(&irt), "References ends with the parent");
        let parent_refs: Vec<String> = match parsed[parent].references() {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|x| x.to_string()).collect(),
            _ => Vec::new(),
        };
        assert_eq!(
            refs[..refs.len() - 1],
            parent_refs[..],
            "References extends the parent's"
        );
        let subj = p.subject().unwrap();
        assert_eq!(
            subj,
            format!("Re: {}", parsed[by_id[&refs[0]]].subject().unwrap())
        );
    }
    assert!(replies > 100, "{replies}");
}

#[test]
fn odd_charsets_encoded_names_and_attachments_appear() {
    let msgs = generate(&spec(400, 3));
    let text: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .collect();
    let any = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(any("charset=\"ISO-8859-1\""));
    assert!(any("charset=\"windows-1252\""));
    assert!(any("charset=\"ISO-2022-JP\""));
    assert!(any("=?ISO-2022-JP?B?"));
    assert!(any("=?UTF-8?B?") || any("=?UTF-8?Q?"));
    assert!(any("=?ISO-8859-1?Q?"));
    assert!(any("Content-Disposition: attachment"));
    assert!(any("filename*=UTF-8''"));
    assert!(msgs.iter().any(|m| m.meta.has_attachments));
    assert!(
        msgs.iter().any(|m| m.folder == "sentitems") && msgs.iter().any(|m| m.folder == "inbox")
    );
    // Every message parses, and the decoders agree with what was encoded.
    for m in &msgs {
        let p = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
        assert_eq!(p.subject().unwrap(), m.meta.subject);
        assert!(p.body_text(0).is_some());
    }
    let ja = msgs
        .iter()
        .find(|m| m.meta.subject == "メンセツのごあんない")
        .unwrap();
    let p = mail_parser::MessageParser::default()
        .parse(&ja.raw)
        .unwrap();
    assert!(p.body_text(0).unwrap().contains("よろしくおねがいします"));
}
