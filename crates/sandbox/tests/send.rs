//! Send endpoints over HTTP: Graph sendMail, drafts, deferred send on the sandbox clock, attachments and
//! upload sessions; Gmail messages.send, threading, drafts and /upload; delivery between sandbox mailboxes
//! across providers; validation errors in each provider's shape; the control API's sent / scheduled lists
//! and the "uncertain outcome" and "lookup refusal" rules.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADELE: &str = "adele@acme.example";
const BEN: &str = "ben@acme.example";
const HANK: &str = "hank@globex.example";
const MINDY: &str = "mindy@globex.example";
const GMAIL_SEND: &str =
    "https://www.googleapis.com/auth/gmail.compose https://www.googleapis.com/auth/gmail.readonly";
const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

async fn graph_token(t: &Ctx, user: &str) -> String {
    s(&t.ms_tokens(user).await["access_token"]).to_string()
}

async fn gmail_token(t: &Ctx, user: &str) -> String {
    s(&t.google_tokens(user, GMAIL_SEND).await["access_token"]).to_string()
}

async fn send(
    t: &Ctx,
    method: Method,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    content_type: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        t.url(path)
    };
    let mut rq = t.http.request(method, url).bearer_auth(token);
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    if let Some(b) = body {
        rq = rq.header("content-type", content_type).body(b);
    }
    let r = rq.send().await.unwrap();
    let st = r.status();
    let h = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    (st, h, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn post_json(
    t: &Ctx,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    send(
        t,
        Method::POST,
        token,
        path,
        headers,
        Some(serde_json::to_vec(&body).unwrap()),
        "application/json",
    )
    .await
}

async fn sent_list(t: &Ctx, user: &str) -> Vec<Value> {
    let (st, b) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/sent"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["value"].as_array().unwrap().clone()
}

async fn scheduled_list(t: &Ctx, user: &str) -> Vec<Value> {
    let (st, b) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/scheduled"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["value"].as_array().unwrap().clone()
}

async fn folder(t: &Ctx, user: &str, f: &str) -> Vec<Value> {
    let (st, b) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/messages?folder={f}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["messages"].as_array().unwrap().clone()
}

async fn raw_of(t: &Ctx, user: &str, id: &str) -> String {
    let (st, b) = t
        .control(
            Method::GET,
            &format!(
                "/_sandbox/mailboxes/{user}/messages/{}",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    s(&b["raw"]).to_string()
}

fn graph_message(to: &[&str], subject: &str) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "HTML", "content": "<p>Hi there</p>"},
        "toRecipients": to.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>(),
    })
}

fn rfc822(from: &str, to: &str, subject: &str, message_id: &str, extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n"
    )
}

#[tokio::test]
async fn graph_send_mail_answers_202_and_the_message_is_in_sent_items_and_every_sandbox_recipients_inbox()
 {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let mut msg = graph_message(&[BEN, HANK], "Interview next week");
    msg["ccRecipients"] = json!([{"emailAddress": {"address": "outside@elsewhere.example"}}]);
    msg["internetMessageHeaders"] = json!([{"name": "x-ats-candidate-id", "value": "C-123"}]);
    let (st, _, body) = post_json(
        &t,
        &tok,
        "/v1.0/me/sendMail",
        &[],
        json!({"Message": msg, "SaveToSentItems": true}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, Value::Null, "202 has no body");

    let sent = sent_list(&t, ADELE).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["state"], "sent");
    assert_eq!(sent[0]["subject"], "Interview next week");
    assert_eq!(sent[0]["delivered_to"], json!([BEN, HANK]));
    let mid = s(&sent[0]["message_id"]).to_string();
    assert!(
        mid.starts_with('<') && mid.ends_with("prod.outlook.com>"),
        "{mid}"
    );

    let sent_items = folder(&t, ADELE, "sentitems").await;
    assert_eq!(sent_items.len(), 1);
    assert_eq!(sent_items[0]["internet_message_id"], mid.as_str());
    for who in [BEN, HANK] {
        let inbox = folder(&t, who, "inbox").await;
        assert_eq!(inbox.len(), 1, "{who}");
        assert_eq!(inbox[0]["internet_message_id"], mid.as_str());
        assert_eq!(inbox[0]["from"], ADELE);
        let raw = raw_of(&t, who, &mid).await;
        assert!(raw.contains("x-ats-candidate-id: C-123"), "{raw}");
    }
}

#[tokio::test]
async fn graph_send_mail_accepts_base64_mime_and_keeps_the_clients_message_id() {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let mime = rfc822(ADELE, BEN, "MIME path", "<hw-1@hirewire.example>", "");
    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/sendMail",
        &[],
        Some(STANDARD.encode(&mime).into_bytes()),
        "text/plain",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let inbox = folder(&t, BEN, "inbox").await;
    assert_eq!(inbox[0]["internet_message_id"], "<hw-1@hirewire.example>");
    assert_eq!(
        sent_list(&t, ADELE).await[0]["message_id"],
        "<hw-1@hirewire.example>"
    );
}

#[tokio::test]
async fn graph_rejects_bad_base64_no_recipients_and_a_missing_send_scope_in_graphs_error_shape() {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/sendMail",
        &[],
        Some(b"%%% not base64 %%%".to_vec()),
        "text/plain",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorMimeContentInvalidBase64String");
    assert!(body["error"]["innerError"]["request-id"].is_string());

    let (st, _, body) = post_json(
        &t,
        &tok,
        "/v1.0/me/sendMail",
        &[],
        json!({"message": graph_message(&[], "nobody")}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidRecipients");

    let (st, _, body) = post_json(
        &t,
        &tok,
        "/v1.0/me/sendMail",
        &[],
        json!({"message": {"subject": "Evil\r\nBcc: x@y.example", "toRecipients": [{"emailAddress": {"address": BEN}}]}}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // A token without Mail.Send.
    let q = t
        .ms_sign_in("organizations", BEN, "openid offline_access Mail.Read")
        .await;
    let (_, tokens) = t.ms_redeem(&q["code"]).await;
    let (st, _, body) = post_json(
        &t,
        s(&tokens["access_token"]),
        "/v1.0/me/sendMail",
        &[],
        json!({"message": graph_message(&[ADELE], "x")}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    assert!(sent_list(&t, ADELE).await.is_empty());
    assert!(folder(&t, ADELE, "inbox").await.is_empty());
}

#[tokio::test]
async fn a_graph_draft_keeps_its_immutable_id_from_drafts_to_sent_items() {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let (st, h, draft) = post_json(
        &t,
        &tok,
        "/v1.0/me/messages",
        &[IMMUTABLE],
        graph_message(&[BEN], "Draft first"),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{draft}");
    assert_eq!(h["preference-applied"], "IdType=\"ImmutableId\"");
    assert_eq!(draft["isDraft"], true);
    let id = s(&draft["id"]).to_string();

    let (st, _, patched) = send(
        &t,
        Method::PATCH,
        &tok,
        &format!("/v1.0/me/messages/{id}"),
        &[IMMUTABLE],
        Some(serde_json::to_vec(&json!({"subject": "Draft edited"})).unwrap()),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{patched}");
    assert_eq!(patched["subject"], "Draft edited");
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["internetMessageId"], draft["internetMessageId"]);

    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        &format!("/v1.0/me/messages/{id}/send"),
        &[IMMUTABLE],
        Some(Vec::new()),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _, after) = send(
        &t,
        Method::GET,
        &tok,
        &format!("/v1.0/me/messages/{id}"),
        &[IMMUTABLE],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{after}");
    assert_eq!(after["isDraft"], false);
    assert_eq!(after["subject"], "Draft edited");
    let (_, _, sent_folder) = send(
        &t,
        Method::GET,
        &tok,
        "/v1.0/me/mailFolders/sentitems/messages",
        &[IMMUTABLE],
        None,
        "",
    )
    .await;
    assert_eq!(sent_folder["value"][0]["id"], id.as_str());
    assert_eq!(folder(&t, BEN, "inbox").await.len(), 1);

    // Sending it again is refused: it is no longer a draft.
    let (st, _, body) = send(
        &t,
        Method::POST,
        &tok,
        &format!("/v1.0/me/messages/{id}/send"),
        &[IMMUTABLE],
        Some(Vec::new()),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(folder(&t, BEN, "inbox").await.len(), 1);
}

#[tokio::test]
async fn a_mime_draft_with_a_deferred_time_waits_in_the_outbox_until_the_sandbox_clock_reaches_it()
{
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let mime = rfc822(ADELE, HANK, "Later", "<later-1@hirewire.example>", "");
    let (st, _, draft) = send(
        &t,
        Method::POST,
        &tok,
        "/v1.0/me/messages",
        &[IMMUTABLE],
        Some(STANDARD.encode(&mime).into_bytes()),
        "text/plain",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{draft}");
    assert_eq!(draft["internetMessageId"], "<later-1@hirewire.example>");
    let id = s(&draft["id"]).to_string();
    let (st, _, body) = send(
        &t,
        Method::PATCH,
        &tok,
        &format!("/v1.0/me/messages/{id}"),
        &[IMMUTABLE],
        Some(
            serde_json::to_vec(&json!({"singleValueExtendedProperties": [
                {"id": "SystemTime 0x3FEF", "value": "2026-11-27T10:00:00Z"}
            ]}))
            .unwrap(),
        ),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        &format!("/v1.0/me/messages/{id}/send"),
        &[],
        Some(Vec::new()),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);

    let pending = scheduled_list(&t, ADELE).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["send_at"], "2026-11-27T10:00:00Z");
    assert_eq!(folder(&t, ADELE, "outbox").await.len(), 1);
    assert!(folder(&t, HANK, "inbox").await.is_empty());

    t.clock.advance_secs(59 * 60);
    assert!(folder(&t, HANK, "inbox").await.is_empty(), "not yet due");
    t.clock.advance_secs(60);
    let inbox = folder(&t, HANK, "inbox").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0]["internet_message_id"],
        "<later-1@hirewire.example>"
    );
    assert!(scheduled_list(&t, ADELE).await.is_empty());
    let sent = sent_list(&t, ADELE).await;
    assert_eq!(sent[0]["state"], "sent");
    assert_eq!(sent[0]["sent_at"], "2026-11-27T10:00:00Z");
    assert_eq!(sent[0]["graph_id"], id.as_str());
    assert_eq!(
        folder(&t, ADELE, "sentitems").await[0]["immutable_id"],
        id.as_str()
    );
}

#[tokio::test]
async fn deleting_a_deferred_message_before_its_time_cancels_it_and_send_mail_can_defer_too() {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let mut msg = graph_message(&[BEN], "Cancel me");
    msg["singleValueExtendedProperties"] =
        json!([{"id": "SystemTime 0x3FEF", "value": "2026-11-28T09:00:00Z"}]);
    let (st, _, _) = post_json(&t, &tok, "/v1.0/me/sendMail", &[], json!({"message": msg})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let outbox = folder(&t, ADELE, "outbox").await;
    assert_eq!(outbox.len(), 1);
    let (st, _, _) = send(
        &t,
        Method::DELETE,
        &tok,
        &format!("/v1.0/me/messages/{}", s(&outbox[0]["immutable_id"])),
        &[],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    t.clock.advance_secs(2 * 86_400);
    assert!(folder(&t, BEN, "inbox").await.is_empty());
    assert_eq!(sent_list(&t, ADELE).await[0]["state"], "cancelled");

    // A time in the past sends at once.
    let tok = graph_token(&t, ADELE).await;
    let mut msg = graph_message(&[BEN], "Past time");
    msg["singleValueExtendedProperties"] =
        json!([{"id": "SystemTime 0x3FEF", "value": "2020-01-01T00:00:00Z"}]);
    let (st, _, _) = post_json(&t, &tok, "/v1.0/me/sendMail", &[], json!({"message": msg})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(folder(&t, BEN, "inbox").await.len(), 1);
}

#[tokio::test]
async fn graph_attachments_go_inline_up_to_3_mb_and_through_an_upload_session_above() {
    let t = start().await;
    let tok = graph_token(&t, ADELE).await;
    let (_, _, draft) = post_json(
        &t,
        &tok,
        "/v1.0/me/messages",
        &[IMMUTABLE],
        graph_message(&[MINDY], "Files"),
    )
    .await;
    let id = s(&draft["id"]).to_string();
    let small = vec![7u8; 1000];
    let (st, _, att) = post_json(
        &t,
        &tok,
        &format!("/v1.0/me/messages/{id}/attachments"),
        &[],
        json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "cv.pdf", "contentType": "application/pdf", "contentBytes": STANDARD.encode(&small)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{att}");
    assert_eq!(att["size"], 1000);

    let big: Vec<u8> = (0..(3 << 20) + 100_000).map(|i| (i % 251) as u8).collect();
    let (st, _, err) = post_json(
        &t,
        &tok,
        &format!("/v1.0/me/messages/{id}/attachments"),
        &[],
        json!({"name": "big.bin", "contentBytes": STANDARD.encode(&big)}),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{err}");

    let (st, _, sess) = post_json(
        &t,
        &tok,
        &format!("/v1.0/me/messages/{id}/attachments/createUploadSession"),
        &[],
        json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": big.len()}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sess}");
    assert_eq!(sess["nextExpectedRanges"], json!(["0-"]));
    let url = s(&sess["uploadUrl"]).to_string();
    let chunk = 1 << 20;
    let mut start = 0;
    while start < big.len() {
        let end = (start + chunk).min(big.len());
        let r = t
            .http
            .put(&url)
            .header(
                "content-range",
                format!("bytes {}-{}/{}", start, end - 1, big.len()),
            )
            .body(big[start..end].to_vec())
            .send()
            .await
            .unwrap();
        let st = r.status();
        let b: Value = r.json().await.unwrap_or(Value::Null);
        if end < big.len() {
            assert_eq!(st, StatusCode::OK, "{b}");
            assert_eq!(b["nextExpectedRanges"], json!([format!("{end}-")]));
        } else {
            assert_eq!(st, StatusCode::CREATED, "{b}");
        }
        start = end;
    }
    let (st, _, _) = send(
        &t,
        Method::POST,
        &tok,
        &format!("/v1.0/me/messages/{id}/send"),
        &[],
        Some(Vec::new()),
        "application/json",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let sent = sent_list(&t, ADELE).await;
    assert_eq!(sent[0]["attachments"], json!(["cv.pdf", "big.bin"]));
    // The Gmail recipient gets both files, byte for byte.
    let gtok = gmail_token(&t, MINDY).await;
    let inbox = folder(&t, MINDY, "inbox").await;
    let (st, _, m) = send(
        &t,
        Method::GET,
        &gtok,
        &format!(
            "/gmail/v1/users/me/messages/{}?format=raw",
            s(&inbox[0]["id"])
        ),
        &[],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let raw = URL_SAFE.decode(s(&m["raw"])).unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let files: Vec<(String, usize)> = parsed
        .attachments()
        .map(|a| {
            use mail_parser::MimeHeaders;
            (
                a.attachment_name().unwrap_or_default().to_string(),
                a.contents().len(),
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![
            ("cv.pdf".to_string(), 1000),
            ("big.bin".to_string(), big.len())
        ]
    );
    assert_eq!(parsed.attachment(1).unwrap().contents(), &big[..]);
}

#[tokio::test]
async fn gmail_send_accepts_padded_and_unpadded_base64url_with_lf_or_crlf_and_delivers_to_graph_users()
 {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let crlf = rfc822(HANK, ADELE, "CRLF unpadded", "<g-1@hirewire.example>", "");
    let lf = rfc822(HANK, ADELE, "LF padded", "<g-2@hirewire.example>", "").replace("\r\n", "\n");
    for raw in [URL_SAFE_NO_PAD.encode(&crlf), URL_SAFE.encode(&lf)] {
        let (st, _, body) = post_json(
            &t,
            &tok,
            "/gmail/v1/users/me/messages/send?alt=json",
            &[],
            json!({"raw": raw}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["labelIds"], json!(["SENT"]));
        assert_eq!(s(&body["id"]).len(), 16);
    }
    let sent = sent_list(&t, HANK).await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|r| r["delivered_to"] == json!([ADELE])));
    let ids: Vec<String> = folder(&t, ADELE, "inbox")
        .await
        .iter()
        .map(|m| s(&m["internet_message_id"]).to_string())
        .collect();
    assert_eq!(ids, ["<g-1@hirewire.example>", "<g-2@hirewire.example>"]);
    // The Graph recipient reads it with its subject.
    let gt = graph_token(&t, ADELE).await;
    let (_, _, list) = send(&t, Method::GET, &gt, "/v1.0/me/messages", &[], None, "").await;
    let subjects: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert!(subjects.contains(&"LF padded") && subjects.contains(&"CRLF unpadded"));
}

#[tokio::test]
async fn gmail_generates_a_message_id_only_when_the_client_left_it_out_and_bcc_reaches_but_is_hidden()
 {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let raw =
        format!("From: {HANK}\r\nTo: {ADELE}\r\nBcc: {MINDY}\r\nSubject: No id\r\n\r\nbody\r\n");
    let (st, _, body) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&raw)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let rec = &sent_list(&t, HANK).await[0];
    let mid = s(&rec["message_id"]).to_string();
    assert!(mid.ends_with("@mail.gmail.com>"), "{mid}");
    assert_eq!(rec["bcc"], json!([MINDY]));
    let delivered = raw_of(&t, MINDY, &mid).await;
    assert!(
        !delivered.to_ascii_lowercase().contains("bcc:"),
        "{delivered}"
    );
    assert!(
        delivered.contains(&format!("Message-ID: {mid}")),
        "{delivered}"
    );
    let own = raw_of(&t, HANK, &mid).await;
    assert!(own.contains("Bcc:"), "the sender's copy keeps Bcc");
}

#[tokio::test]
async fn gmail_threads_a_reply_only_with_thread_id_references_and_a_matching_subject() {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let first = rfc822(
        HANK,
        ADELE,
        "Senior Rust role",
        "<root@hirewire.example>",
        "",
    );
    let (_, _, a) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&first)}),
    )
    .await;
    let thread = s(&a["threadId"]).to_string();
    let refs = "In-Reply-To: <root@hirewire.example>\r\nReferences: <root@hirewire.example>\r\n";
    let reply = rfc822(
        HANK,
        ADELE,
        "Re: Senior Rust role",
        "<r1@hirewire.example>",
        refs,
    );
    let (_, _, b) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&reply), "threadId": thread}),
    )
    .await;
    assert_eq!(b["threadId"], thread.as_str(), "all three rules hold");

    let no_thread_id = rfc822(
        HANK,
        ADELE,
        "Re: Senior Rust role",
        "<r2@hirewire.example>",
        refs,
    );
    let (_, _, c) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&no_thread_id)}),
    )
    .await;
    assert_ne!(c["threadId"], thread.as_str(), "no threadId: a new thread");

    let other_subject = rfc822(HANK, ADELE, "Something else", "<r3@hirewire.example>", refs);
    let (_, _, d) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&other_subject), "threadId": thread}),
    )
    .await;
    assert_ne!(
        d["threadId"],
        thread.as_str(),
        "subject differs: a new thread"
    );

    let (st, _, e) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&reply), "threadId": "ffffffffffffffff"}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn gmail_rejects_a_missing_raw_bad_base64_and_no_recipients_in_googles_error_shape() {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let cases = [
        (json!({}), "'raw' RFC822 payload"),
        (json!({"raw": "***"}), "Base64 decoding failed"),
        (
            json!({"raw": URL_SAFE.encode("From: hank@globex.example\r\nSubject: x\r\n\r\nhi")}),
            "Recipient address required",
        ),
    ];
    for (body, msg) in cases {
        let (st, _, e) = post_json(&t, &tok, "/gmail/v1/users/me/messages/send", &[], body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["code"], 400);
        assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
        assert!(s(&e["error"]["message"]).contains(msg), "{e}");
        assert_eq!(e["error"]["errors"][0]["domain"], "global");
    }
    assert!(sent_list(&t, HANK).await.is_empty());
}

#[tokio::test]
async fn gmail_drafts_send_removes_the_draft_and_gives_the_sent_message_a_new_id() {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let raw = rfc822(HANK, BEN, "Drafted", "<d1@hirewire.example>", "");
    let (st, _, d) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/drafts",
        &[],
        json!({"message": {"raw": URL_SAFE_NO_PAD.encode(&raw)}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert!(s(&d["id"]).starts_with("r-"));
    assert_eq!(d["message"]["labelIds"], json!(["DRAFT"]));
    assert_eq!(folder(&t, HANK, "drafts").await.len(), 1);
    let (st, _, m) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/drafts/send",
        &[],
        json!({"id": d["id"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_ne!(m["id"], d["message"]["id"]);
    assert_eq!(m["labelIds"], json!(["SENT"]));
    assert!(folder(&t, HANK, "drafts").await.is_empty());
    assert_eq!(
        folder(&t, BEN, "inbox").await[0]["internet_message_id"],
        "<d1@hirewire.example>"
    );
    let (st, _, _) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/drafts/send",
        &[],
        json!({"id": d["id"]}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gmail_upload_takes_large_messages_as_media_multipart_or_resumable() {
    let t = start().await;
    let tok = gmail_token(&t, HANK).await;
    let big = "x".repeat(6 << 20);
    let raw = rfc822(HANK, ADELE, "Big", "<big-1@hirewire.example>", "").replace("Hello.", &big);
    // Too big for the simple path.
    let (st, _, e) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&raw)}),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{e}");

    let (st, _, m) = send(
        &t,
        Method::POST,
        &tok,
        "/upload/gmail/v1/users/me/messages/send?uploadType=media",
        &[],
        Some(raw.clone().into_bytes()),
        "message/rfc822",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{m}");

    let raw2 = raw.replace("big-1@", "big-2@");
    let related = format!(
        "--b0und\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{\"threadId\":\"{}\"}}\r\n--b0und\r\nContent-Type: message/rfc822\r\n\r\n{raw2}\r\n--b0und--\r\n",
        s(&m["threadId"])
    );
    let (st, _, m2) = send(
        &t,
        Method::POST,
        &tok,
        "/upload/gmail/v1/users/me/messages/send?uploadType=multipart",
        &[],
        Some(related.into_bytes()),
        "multipart/related; boundary=b0und",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{m2}");

    let (st, h, _) = post_json(
        &t,
        &tok,
        "/upload/gmail/v1/users/me/messages/send?uploadType=resumable",
        &[],
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let loc = h["location"].to_str().unwrap().to_string();
    let raw3 = raw.replace("big-1@", "big-3@");
    let (st, _, m3) = send(
        &t,
        Method::PUT,
        &tok,
        &loc,
        &[],
        Some(raw3.into_bytes()),
        "message/rfc822",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{m3}");

    let mids: Vec<String> = folder(&t, ADELE, "inbox")
        .await
        .iter()
        .map(|m| s(&m["internet_message_id"]).to_string())
        .collect();
    assert_eq!(
        mids,
        [
            "<big-1@hirewire.example>",
            "<big-2@hirewire.example>",
            "<big-3@hirewire.example>"
        ]
    );
    let sent = sent_list(&t, HANK).await;
    assert!(sent.iter().all(|r| r["size"].as_u64().unwrap() > 6 << 20));
}

#[tokio::test]
async fn an_uncertain_outcome_rule_delivers_the_message_but_the_client_sees_a_504() {
    let t = start().await;
    let (st, rule) = t
        .control(
            Method::POST,
            "/_sandbox/send/uncertain",
            Some(json!({"user": HANK, "mode": "gateway_timeout", "count": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{rule}");
    let tok = gmail_token(&t, HANK).await;
    let raw = rfc822(HANK, ADELE, "Did it go?", "<u1@hirewire.example>", "");
    let (st, _, e) = post_json(
        &t,
        &tok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&raw)}),
    )
    .await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{e}");
    assert_eq!(e["error"]["errors"][0]["reason"], "backendError");
    // It went: the reconcile lookup by Message-ID finds it.
    let (st, _, found) = send(
        &t,
        Method::GET,
        &tok,
        "/gmail/v1/users/me/messages?q=rfc822msgid:%3Cu1@hirewire.example%3E",
        &[],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(found["messages"].as_array().unwrap().len(), 1);
    assert_eq!(folder(&t, ADELE, "inbox").await.len(), 1);
    // The rule was for one send only.
    let (_, rules) = t
        .control(Method::GET, "/_sandbox/send/uncertain", None)
        .await;
    assert_eq!(rules["value"], json!([]));
}

#[tokio::test]
async fn a_hanging_graph_send_is_accepted_before_the_client_times_out() {
    let t = start().await;
    t.control(
        Method::POST,
        "/_sandbox/send/uncertain",
        Some(json!({"endpoint": "graph.*", "mode": "hang", "hang_millis": 60_000, "count": 1})),
    )
    .await;
    let tok = graph_token(&t, ADELE).await;
    let r = t
        .http
        .post(t.url("/v1.0/me/sendMail"))
        .bearer_auth(&tok)
        .timeout(std::time::Duration::from_millis(300))
        .json(&json!({"message": graph_message(&[BEN], "Hang")}))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    // Found by the lookup the server's reconcile path uses.
    let mid = s(&sent_list(&t, ADELE).await[0]["message_id"]).to_string();
    let filter = format!("internetMessageId eq '{mid}'");
    let path = format!(
        "/v1.0/me/messages?$filter={}",
        url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
    );
    let (st, _, found) = send(&t, Method::GET, &tok, &path, &[], None, "").await;
    assert_eq!(st, StatusCode::OK, "{found}");
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    assert_eq!(found["value"][0]["internetMessageId"], mid.as_str());
    let (_, _, none) = send(
        &t,
        Method::GET,
        &tok,
        "/v1.0/me/messages?$filter=internetMessageId%20eq%20'%3Cnope%40x.example%3E'",
        &[],
        None,
        "",
    )
    .await;
    assert_eq!(none["value"], json!([]));
}

#[tokio::test]
async fn a_lookup_refusal_makes_the_message_id_search_fail_in_each_providers_shape() {
    let t = start().await;
    let gtok = gmail_token(&t, HANK).await;
    let mtok = graph_token(&t, ADELE).await;
    let raw = rfc822(HANK, ADELE, "Was it sent?", "<r1@hirewire.example>", "");
    let (st, _, _) = post_json(
        &t,
        &gtok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&raw)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for user in [HANK, ADELE] {
        let (st, rule) = t
            .control(
                Method::POST,
                "/_sandbox/send/lookup_refusals",
                Some(json!({"user": user, "count": 1})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{rule}");
    }
    let gmail_lookup = "/gmail/v1/users/me/messages?q=rfc822msgid:%3Cr1@hirewire.example%3E";
    // A search without a Message-ID is not a lookup: the rule leaves it alone.
    let (st, _, other) = send(
        &t,
        Method::GET,
        &gtok,
        "/gmail/v1/users/me/messages?q=in:sent",
        &[],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{other}");
    let (st, _, e) = send(&t, Method::GET, &gtok, gmail_lookup, &[], None, "").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["errors"][0]["reason"], "failedPrecondition");
    assert_eq!(e["error"]["status"], "FAILED_PRECONDITION");
    assert_shape("google/api-error-not-found.json", &e);
    let graph_lookup = format!(
        "/v1.0/me/messages?$filter={}",
        url::form_urlencoded::byte_serialize(b"internetMessageId eq '<r1@hirewire.example>'")
            .collect::<String>()
    );
    let (st, _, e) = send(
        &t,
        Method::GET,
        &mtok,
        &graph_lookup,
        &[IMMUTABLE],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "InefficientFilter");
    assert_shape("microsoft/graph-error.json", &e);
    // Each rule was for one lookup: the next ones answer.
    let (_, rules) = t
        .control(Method::GET, "/_sandbox/send/lookup_refusals", None)
        .await;
    assert_eq!(rules["value"], json!([]));
    let (st, _, found) = send(&t, Method::GET, &gtok, gmail_lookup, &[], None, "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(found["messages"].as_array().unwrap().len(), 1);
    let (st, _, found) = send(
        &t,
        Method::GET,
        &mtok,
        &graph_lookup,
        &[IMMUTABLE],
        None,
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{found}");
    assert_eq!(
        found["value"].as_array().unwrap().len(),
        1,
        "delivered to Adele"
    );
    // Armed without a user and count, it refuses every lookup until cleared.
    t.control(
        Method::POST,
        "/_sandbox/send/lookup_refusals",
        Some(json!({})),
    )
    .await;
    for _ in 0..2 {
        let (st, _, _) = send(&t, Method::GET, &gtok, gmail_lookup, &[], None, "").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
    }
    let (st, _) = t
        .control(Method::DELETE, "/_sandbox/send/lookup_refusals", None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = send(&t, Method::GET, &gtok, gmail_lookup, &[], None, "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = t
        .control(
            Method::POST,
            "/_sandbox/send/lookup_refusals",
            Some(json!({"count": 0})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
}

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_shape(rel: &str, actual: &Value) {
    // `categories` is a default message property the §3.3 example leaves out (fidelity.rs allows it too).
    let errs = common::shape::diff(&golden(rel), actual, &["categories"]);
    assert!(errs.is_empty(), "{rel}: {errs:?}\nsandbox sent: {actual}");
}

#[tokio::test]
async fn send_bodies_match_the_golden_fixtures() {
    let t = start().await;
    let gtok = gmail_token(&t, HANK).await;
    let raw = rfc822(HANK, ADELE, "Golden", "<golden@hirewire.example>", "");
    let (_, _, sent) = post_json(
        &t,
        &gtok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode(&raw)}),
    )
    .await;
    assert_shape("google/gmail-send.json", &sent);
    let (_, _, draft) = post_json(
        &t,
        &gtok,
        "/gmail/v1/users/me/drafts",
        &[],
        json!({"message": {"raw": URL_SAFE.encode(&raw)}}),
    )
    .await;
    assert_shape("google/gmail-draft.json", &draft);
    let (_, _, err) = post_json(
        &t,
        &gtok,
        "/gmail/v1/users/me/messages/send",
        &[],
        json!({"raw": URL_SAFE.encode("Subject: x\r\n\r\nhi")}),
    )
    .await;
    assert_shape("google/gmail-send-error-no-recipient.json", &err);

    let mtok = graph_token(&t, ADELE).await;
    let (_, _, err) = send(
        &t,
        Method::POST,
        &mtok,
        "/v1.0/me/sendMail",
        &[],
        Some(b"@@@".to_vec()),
        "text/plain",
    )
    .await;
    assert_shape("microsoft/send-error-invalid-mime.json", &err);
    let (_, _, draft) = post_json(
        &t,
        &mtok,
        "/v1.0/me/messages",
        &[IMMUTABLE],
        graph_message(&[BEN], "Golden draft"),
    )
    .await;
    assert_shape("microsoft/message.json", &draft);
    let (_, _, sess) = post_json(
        &t,
        &mtok,
        &format!(
            "/v1.0/me/messages/{}/attachments/createUploadSession",
            s(&draft["id"])
        ),
        &[],
        json!({"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": 5_000_000}}),
    )
    .await;
    assert_shape("microsoft/upload-session.json", &sess);
}
