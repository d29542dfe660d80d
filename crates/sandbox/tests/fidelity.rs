//! Fidelity: the sandbox's bodies have the shapes of the PROVIDERS.md examples (`fixtures/golden/`), every field
//! it emits on a Gmail/Calendar resource is in Google's discovery schema with the right JSON type, every Graph
//! property is a real wire property, and the §13 client-library conventions hold.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_shape(rel: &str, actual: &Value, extra_ok: &[&str]) {
    let errs = common::shape::diff(&golden(rel), actual, extra_ok);
    assert!(errs.is_empty(), "{rel}: {errs:?}\nsandbox sent: {actual}");
}

#[tokio::test]
async fn microsoft_bodies_match_the_golden_fixtures() {
    let t = start().await;
    let tokens = t.ms_tokens("adele@acme.example").await;
    assert_shape("microsoft/token-success.json", &tokens, &[]);
    let (_, refreshed) = t.ms_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("microsoft/token-success.json", &refreshed, &[]);

    let access = s(&tokens["access_token"]).to_string();
    let (_, _, me) = t.api(&access, "/v1.0/me").await;
    assert_shape("microsoft/me.json", &me, &[]);
    let (st, _, missing) = t.api(&access, "/v1.0/users/nobody@acme.example").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_shape("microsoft/graph-error.json", &missing, &[]);

    t.control(
        Method::POST,
        "/_sandbox/faults",
        Some(json!({"fault": {"kind": "throttle"}, "count": 1})),
    )
    .await;
    let (_, _, throttled) = t.api(&access, "/v1.0/me").await;
    assert_shape(
        "microsoft/graph-throttled.json",
        &throttled,
        &["error.innerError"],
    );

    t.control(
        Method::POST,
        "/_sandbox/users/adele@acme.example/revoke-grant",
        None,
    )
    .await;
    let (_, err) = t.ms_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("microsoft/token-error-consent-required.json", &err, &[]);
}

#[tokio::test]
async fn google_bodies_match_the_golden_fixtures() {
    let t = start().await;
    let tokens = t
        .google_tokens(
            "hank@globex.example",
            &format!("openid email {GMAIL_READ} {CAL_EVENTS}"),
        )
        .await;
    assert_shape("google/token-success.json", &tokens, &[]);
    let access = s(&tokens["access_token"]).to_string();

    let plain = t.google_tokens("mindy@globex.example", CAL_READ).await;
    let (_, refreshed) = t.google_refresh(s(&plain["refresh_token"])).await;
    assert_shape("google/refresh-success.json", &refreshed, &[]);

    let (_, _, info) = t
        .api(&access, &format!("/tokeninfo?access_token={access}"))
        .await;
    assert_shape("google/tokeninfo.json", &info, &[]);
    let (_, _, profile) = t.api(&access, "/gmail/v1/users/me/profile").await;
    assert_shape("google/gmail-profile.json", &profile, &[]);

    let (_, _, forbidden) = t.api(&access, "/calendar/v3/calendars/primary").await;
    assert_shape("google/api-error-insufficient-scope.json", &forbidden, &[]);
    let (_, _, unauth) = t.api("ya29.nope", "/gmail/v1/users/me/profile").await;
    assert_shape(
        "google/api-error-unauthenticated.json",
        &unauth,
        &["error.status"],
    );
    let mindy = s(&plain["access_token"]).to_string();
    let (st, _, not_found) = t
        .api(&mindy, "/calendar/v3/calendars/someone-else@globex.example")
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_shape("google/api-error-not-found.json", &not_found, &[]);

    let (_, bad_code) = t.google_redeem("4/0Anope").await;
    assert_shape("google/token-error-bad-code.json", &bad_code, &[]);
    let r = t
        .post_form(
            "/token",
            &[
                ("client_id", hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_ID),
                ("client_secret", "x"),
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
            ],
        )
        .await;
    assert_shape(
        "google/token-error-invalid-client.json",
        &r.json().await.unwrap(),
        &[],
    );

    assert_eq!(
        t.post_form("/revoke", &[("token", s(&tokens["refresh_token"]))])
            .await
            .status(),
        StatusCode::OK
    );
    let (_, revoked) = t.google_refresh(s(&tokens["refresh_token"])).await;
    assert_shape("google/token-error-revoked.json", &revoked, &[]);
    let r = t
        .post_form("/revoke", &[("token", s(&tokens["refresh_token"]))])
        .await;
    assert_shape("google/revoke-error.json", &r.json().await.unwrap(), &[]);
}

#[tokio::test]
async fn gmail_and_calendar_resources_only_use_discovery_fields_with_their_types() {
    let t = start().await;
    let tok = t
        .google_tokens("hank@globex.example", &format!("{GMAIL_READ} {CAL_READ}"))
        .await;
    let access = s(&tok["access_token"]);
    let (_, _, profile) = t.api(access, "/gmail/v1/users/me/profile").await;
    let errs = schema::check_google(schema::gmail(), "Profile", &profile);
    assert!(errs.is_empty(), "{errs:?}");
    assert!(
        profile["historyId"].is_string(),
        "uint64 travels as a string"
    );
    let (_, _, cal) = t.api(access, "/calendar/v3/calendars/primary").await;
    let errs = schema::check_google(schema::calendar(), "Calendar", &cal);
    assert!(errs.is_empty(), "{errs:?}");
}

#[tokio::test]
async fn graph_user_only_uses_real_wire_properties() {
    let t = start().await;
    let tok = t.ms_tokens("adele@acme.example").await;
    let (_, _, me) = t.api(s(&tok["access_token"]), "/v1.0/me").await;
    let errs = schema::check_graph("user", &me);
    assert!(errs.is_empty(), "{errs:?}");
    let (_, _, selected) = t
        .api(s(&tok["access_token"]), "/v1.0/me?$select=displayName,mail")
        .await;
    assert_eq!(selected.as_object().unwrap().len(), 3, "{selected}");
    assert!(s(&selected["@odata.context"]).ends_with("#users(displayName,mail)/$entity"));
}

#[tokio::test]
async fn client_library_conventions_from_section_13_hold() {
    let t = start().await;
    let g = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    // google-api-python-client: alt=json on every call, Content-Length: 0 on GETs.
    let r = t
        .http
        .get(t.url("/gmail/v1/users/me/profile?alt=json"))
        .bearer_auth(s(&g["access_token"]))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Gmail's userId may be the caller's own address.
    assert_eq!(
        t.api(
            s(&g["access_token"]),
            "/gmail/v1/users/hank%40globex.example/profile"
        )
        .await
        .0,
        StatusCode::OK
    );

    let m = t.ms_tokens("adele@acme.example").await;
    let access = s(&m["access_token"]);
    // Links are built from the request's own Host, so the Graph SDK keeps sending its token.
    let r = t
        .http
        .get(t.url("/v1.0/me"))
        .bearer_auth(access)
        .header("host", "graph.sandbox.test:4444")
        .send()
        .await
        .unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!(
        me["@odata.context"],
        "http://graph.sandbox.test:4444/v1.0/$metadata#users/$entity"
    );
    let (_, _, me) = t.api(access, "/v1.0/me").await;
    assert!(s(&me["@odata.context"]).starts_with(&t.base));
    // OData key and function-call forms are routed like their plain forms.
    let (st, _, user) = t.api(access, "/v1.0/users('adele@acme.example')").await;
    assert_eq!(st, StatusCode::OK, "{user}");
    let (st, _, delta) = t
        .api(access, "/v1.0/me/mailFolders('inbox')/messages/delta()")
        .await;
    assert_eq!(st, StatusCode::OK, "delta() routed like delta: {delta}");
    // The SDK follows links in the OData key form too.
    let link = s(&delta["@odata.deltaLink"]).replace(&t.base, "");
    let quoted = link.replace("/mailFolders/inbox/", "/mailFolders('inbox')/");
    assert_eq!(t.api(access, &quoted).await.0, StatusCode::OK);
    // Action parameters match case-insensitively (used by sendMail/getSchedule in later issues).
    let body = json!({"Message": {"subject": "x"}});
    assert!(hirewire_sandbox::wire::get_ci(&body, "message").is_some());
    // Telemetry headers are never required; client-request-id is echoed when sent.
    let r = t
        .http
        .get(t.url("/v1.0/me"))
        .bearer_auth(access)
        .header("client-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["client-request-id"], "abc-123");
    assert!(r.headers().contains_key("request-id"));
}

async fn mailbox(t: &Ctx, user: &str, n: usize) -> Vec<Value> {
    let (st, body) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{user}/generate"),
            Some(json!({"n": n, "seed": 99, "candidates": ["jane@candidates.example"], "candidate_share": 0.3})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, list) = t
        .control(
            Method::GET,
            &format!("/_sandbox/mailboxes/{user}/messages"),
            None,
        )
        .await;
    list["messages"].as_array().unwrap().clone()
}

fn assert_google(schema_name: &str, v: &Value) {
    let errs = schema::check_google(schema::gmail(), schema_name, v);
    assert!(errs.is_empty(), "{schema_name}: {errs:?}\n{v}");
}

#[tokio::test]
async fn gmail_mail_resources_only_use_discovery_fields_with_their_types() {
    let t = start().await;
    let msgs = mailbox(&t, "hank@globex.example", 120).await;
    let tok = t.google_tokens("hank@globex.example", GMAIL_READ).await;
    let access = s(&tok["access_token"]);
    let (_, _, list) = t
        .api(access, "/gmail/v1/users/me/messages?maxResults=10")
        .await;
    assert_google("ListMessagesResponse", &list);
    assert_shape("google/gmail-messages-list.json", &list, &[]);
    let mut seen_alternative = false;
    for m in &msgs {
        let id = s(&m["id"]);
        for format in ["full", "metadata", "raw", "minimal"] {
            let (st, _, msg) = t
                .api(
                    access,
                    &format!("/gmail/v1/users/me/messages/{id}?format={format}"),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{msg}");
            assert_google("Message", &msg);
            assert!(msg["historyId"].is_string() && msg["internalDate"].is_string());
            assert!(msg["sizeEstimate"].is_u64(), "sizeEstimate is an integer");
            if format == "full"
                && !seen_alternative
                && msg["payload"]["mimeType"] == "multipart/alternative"
            {
                assert_shape("google/gmail-message-full.json", &msg, &[]);
                seen_alternative = true;
            }
            if format == "full"
                && let Some(part) = msg["payload"]["parts"]
                    .as_array()
                    .and_then(|p| p.iter().find(|p| p["body"].get("attachmentId").is_some()))
            {
                let (_, _, att) = t
                    .api(
                        access,
                        &format!(
                            "/gmail/v1/users/me/messages/{id}/attachments/{}",
                            s(&part["body"]["attachmentId"])
                        ),
                    )
                    .await;
                assert_google("MessagePartBody", &att);
            }
        }
    }
    assert!(seen_alternative);

    let (_, _, profile) = t.api(access, "/gmail/v1/users/me/profile").await;
    assert_google("Profile", &profile);
    let start_id = s(&profile["historyId"]).to_string();
    let user = "hank@globex.example";
    t.control(
        Method::POST,
        &format!("/_sandbox/mailboxes/{user}/messages"),
        Some(json!({"from": "jane@candidates.example", "body": "Tuesday works"})),
    )
    .await;
    let (_, _, added) = t
        .api(
            access,
            &format!("/gmail/v1/users/me/history?startHistoryId={start_id}"),
        )
        .await;
    assert_shape("google/gmail-history.json", &added, &[]);
    t.control(
        Method::DELETE,
        &format!("/_sandbox/mailboxes/{user}/messages/{}", s(&msgs[0]["id"])),
        None,
    )
    .await;
    t.control(
        Method::PATCH,
        &format!("/_sandbox/mailboxes/{user}/messages/{}", s(&msgs[1]["id"])),
        Some(json!({"folder": "deleteditems", "is_read": !msgs[1]["is_read"].as_bool().unwrap()})),
    )
    .await;
    let (_, _, history) = t
        .api(
            access,
            &format!("/gmail/v1/users/me/history?startHistoryId={start_id}"),
        )
        .await;
    assert_eq!(history["history"].as_array().unwrap().len(), 3, "{history}");
    assert_google("ListHistoryResponse", &history);
}

#[tokio::test]
async fn graph_mail_resources_only_use_real_wire_properties() {
    let t = start().await;
    mailbox(&t, "adele@acme.example", 120).await;
    let tok = t.ms_tokens("adele@acme.example").await;
    let access = s(&tok["access_token"]);
    let nested = |m: &Value| {
        let mut errs = schema::check_graph("message", m);
        for k in ["body", "uniqueBody"] {
            if let Some(b) = m.get(k) {
                errs.extend(schema::check_graph("itemBody", b));
            }
        }
        for k in ["from", "sender"] {
            if let Some(r) = m.get(k) {
                errs.extend(schema::check_graph("recipient", r));
                errs.extend(schema::check_graph("emailAddress", &r["emailAddress"]));
            }
        }
        for k in ["toRecipients", "ccRecipients", "bccRecipients", "replyTo"] {
            for r in m.get(k).and_then(Value::as_array).into_iter().flatten() {
                errs.extend(schema::check_graph("recipient", r));
                errs.extend(schema::check_graph("emailAddress", &r["emailAddress"]));
            }
        }
        if let Some(f) = m.get("flag") {
            errs.extend(schema::check_graph("followupFlag", f));
        }
        for h in m
            .get("internetMessageHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            errs.extend(schema::check_graph("internetMessageHeader", h));
        }
        errs
    };
    let (_, _, list) = t.api(access, "/v1.0/me/messages?$top=50&$count=true").await;
    let mut errs = schema::check_graph("collection:message", &list);
    for m in list["value"].as_array().unwrap() {
        errs.extend(nested(m));
    }
    assert!(errs.is_empty(), "{errs:?}");
    let first = &list["value"][0];
    assert_shape("microsoft/message.json", first, &["categories"]);
    let (_, _, one) = t
        .api(
            access,
            &format!(
                "/v1.0/me/messages/{}?$select=internetMessageHeaders,uniqueBody,subject",
                s(&first["id"])
            ),
        )
        .await;
    let errs = nested(&one);
    assert!(
        errs.is_empty() && one["internetMessageHeaders"].is_array(),
        "{errs:?} {one}"
    );

    let (_, _, delta) = t
        .api(
            access,
            "/v1.0/me/mailFolders/inbox/messages/delta?$top=1000",
        )
        .await;
    let mut errs = schema::check_graph("function:messages.delta(response)", &delta);
    for m in delta["value"].as_array().unwrap() {
        errs.extend(nested(m));
    }
    assert!(errs.is_empty(), "{errs:?}");
    let gone = s(&delta["value"][0]["id"]).to_string();
    t.control(
        Method::DELETE,
        &format!("/_sandbox/mailboxes/adele@acme.example/messages/{gone}"),
        None,
    )
    .await;
    let link = s(&delta["@odata.deltaLink"]).replace(&t.base, "");
    let (_, _, changes) = t.api(access, &link).await;
    let removed = &changes["value"][0];
    assert_shape("microsoft/messages-delta-removed.json", removed, &[]);
    assert!(schema::check_graph("message", removed).is_empty());

    for m in list["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hasAttachments"] == true)
    {
        let (_, _, atts) = t
            .api(
                access,
                &format!("/v1.0/me/messages/{}/attachments", s(&m["id"])),
            )
            .await;
        for a in atts["value"].as_array().unwrap() {
            let errs = schema::check_graph("fileAttachment", a);
            assert!(errs.is_empty(), "{errs:?}");
        }
    }
}
