//! Graph JSON batching (`POST /v1.0/$batch`): inner requests answer as they would alone, each is counted,
//! faulted and throttled on its own (inner 429s with Retry-After), dependencies run in order and a failed one
//! gives 424, and malformed batches get 400.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADELE: &str = "adele@acme.example";

async fn graph_token(t: &Ctx) -> String {
    s(&t.ms_tokens(ADELE).await["access_token"]).to_string()
}

async fn batch(t: &Ctx, token: &str, body: Value) -> (StatusCode, Value) {
    let r = t
        .http
        .post(t.url("/v1.0/$batch"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn inject(t: &Ctx, subject: &str) -> Value {
    let (st, m) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{ADELE}/messages"),
            Some(json!({"from": "cand@example.org", "subject": subject, "body": "hi"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{m}");
    m
}

fn golden(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn by_id<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no response {id} in {body}"))
}

#[tokio::test]
async fn inner_requests_answer_as_they_would_alone() {
    let t = start().await;
    let token = graph_token(&t).await;
    let m = inject(&t, "Batch me").await;
    let id = s(&m["graph_id"]);
    let (st, body) = batch(
        &t,
        &token,
        json!({"requests": [
            {"id": "1", "method": "GET", "url": "/me/messages?$top=5&$select=id,subject"},
            {"id": "2", "method": "GET", "url": format!("/me/messages/{id}?$select=subject")},
            {"id": "3", "method": "GET", "url": "me"},
            {"id": "4", "method": "GET", "url": "/me/messages/AAMkAGnope"},
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let errs = common::shape::diff(&golden("microsoft/batch-response.json"), &body, &[]);
    assert!(errs.is_empty(), "{errs:?}\n{body}");
    assert_eq!(by_id(&body, "1")["status"], 200);
    assert_eq!(by_id(&body, "1")["body"]["value"][0]["subject"], "Batch me");
    assert_eq!(by_id(&body, "2")["body"]["subject"], "Batch me");
    assert_eq!(
        by_id(&body, "2")["headers"]["Content-Type"],
        "application/json"
    );
    let (_, _, alone) = t.api(&token, "/v1.0/me").await;
    assert_eq!(by_id(&body, "3")["body"]["id"], alone["id"]);
    assert_eq!(by_id(&body, "4")["status"], 404, "{}", by_id(&body, "4"));
    assert_eq!(
        by_id(&body, "4")["body"]["error"]["code"],
        "ErrorItemNotFound"
    );

    let (_, c) = t.control(Method::GET, "/_sandbox/counters", None).await;
    assert_eq!(c["endpoints"]["graph.batch"]["requests"], 1);
    assert_eq!(c["endpoints"]["graph.messages.get"]["requests"], 2);
    assert_eq!(c["providers"]["graph"]["users"][ADELE]["requests"], 5);
}

#[tokio::test]
async fn each_inner_request_is_throttled_on_its_own_with_retry_after() {
    let t = start().await;
    let token = graph_token(&t).await;
    let (st, _) = t
        .control(
            Method::PATCH,
            "/_sandbox/settings",
            Some(json!({"graph_mailbox_requests_per_window": 3, "graph_mailbox_window_secs": 60})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let requests: Vec<Value> = (1..=5)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    let (st, body) = batch(&t, &token, json!({"requests": requests})).await;
    assert_eq!(st, StatusCode::OK, "the batch itself succeeds");
    let statuses: Vec<u64> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{body}");
    let throttled: Vec<&Value> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 429)
        .collect();
    assert_eq!(throttled.len(), 2);
    for r in throttled {
        assert_eq!(r["headers"]["Retry-After"], "60");
        assert_eq!(r["body"]["error"]["code"], "ApplicationThrottled");
    }

    // Faults hit inner requests too.
    t.control(Method::DELETE, "/_sandbox/counters", None).await;
    t.control(
        Method::POST,
        "/_sandbox/faults",
        Some(json!({"endpoint": "graph.me", "fault": {"kind": "server_error", "status": 503}, "count": 1})),
    )
    .await;
    let (_, body) = batch(
        &t,
        &token,
        json!({"requests": [{"id": "a", "method": "GET", "url": "/me"}]}),
    )
    .await;
    assert_eq!(by_id(&body, "a")["status"], 503);
}

#[tokio::test]
async fn dependencies_run_in_order_and_a_failed_one_gives_424() {
    let t = start().await;
    let token = graph_token(&t).await;
    let (st, body) = batch(
        &t,
        &token,
        json!({"requests": [
            {"id": "3", "method": "GET", "url": "/me", "dependsOn": ["2"]},
            {"id": "2", "method": "GET", "url": "/me/messages/AAMkAGnope", "dependsOn": ["1"]},
            {"id": "1", "method": "GET", "url": "/me"},
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(by_id(&body, "1")["status"], 200);
    assert_eq!(by_id(&body, "2")["status"], 404);
    assert_eq!(by_id(&body, "3")["status"], 424);
    assert_eq!(
        by_id(&body, "3")["body"]["error"]["code"],
        "FailedDependency"
    );
}

#[tokio::test]
async fn a_malformed_batch_gets_400_in_graphs_shape() {
    let t = start().await;
    let token = graph_token(&t).await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    for bad in [
        json!({"requests": many}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}, {"id": "1", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/me/sendMail", "body": {"message": {}}}]}),
        json!({"nope": []}),
    ] {
        let (st, err) = batch(&t, &token, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["code"], "BadRequest");
    }
}
