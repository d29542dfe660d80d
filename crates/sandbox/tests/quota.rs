//! Provider quotas: off by default, Graph per-mailbox request windows and concurrency, Gmail token buckets under
//! both cost models, the errors each gives, and the counters a test or benchmark reads to check that a client's
//! achieved rate stayed within the quota.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADELE: &str = "adele@acme.example";
const HANK: &str = "hank@globex.example";

async fn settings(t: &Ctx, patch: Value) {
    let (st, body) = t
        .control(Method::PATCH, "/_sandbox/settings", Some(patch))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

async fn counters(t: &Ctx) -> Value {
    t.control(Method::GET, "/_sandbox/counters", None).await.1
}

async fn graph_token(t: &Ctx) -> String {
    s(&t.ms_tokens(ADELE).await["access_token"]).to_string()
}

async fn gmail_token(t: &Ctx) -> String {
    s(&t.google_tokens(HANK, GMAIL_READ).await["access_token"]).to_string()
}

#[tokio::test]
async fn quotas_are_off_by_default_and_requests_are_still_counted() {
    let t = start().await;
    let g = graph_token(&t).await;
    let m = gmail_token(&t).await;
    for _ in 0..50 {
        assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);
        assert_eq!(
            t.api(&m, "/gmail/v1/users/me/messages").await.0,
            StatusCode::OK
        );
    }
    let c = counters(&t).await;
    let graph = &c["providers"]["graph"];
    assert_eq!(graph["requests"], 50);
    assert_eq!(graph["responses_429"], 0);
    assert_eq!(
        graph["users"][ADELE]["peak_requests_per_sec"], 50,
        "one instant of sandbox time"
    );
    let gmail = &c["providers"]["gmail"]["users"][HANK];
    assert_eq!(
        (gmail["requests"].as_u64(), gmail["units"].as_u64()),
        (Some(50), Some(250))
    );
    assert_eq!(gmail["peak_units_per_sec"], 250);
}

#[tokio::test]
async fn graph_refuses_requests_over_the_mailbox_window_with_retry_after_until_the_window_moves() {
    let t = start().await;
    settings(
        &t,
        json!({"graph_mailbox_requests_per_window": 3, "graph_mailbox_window_secs": 10}),
    )
    .await;
    let g = graph_token(&t).await;
    for _ in 0..3 {
        assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);
    }
    let (st, h, body) = t.api(&g, "/v1.0/me/messages").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "10");
    assert_eq!(body["error"]["code"], "ApplicationThrottled");
    t.clock.advance_secs(4);
    let (_, h, _) = t.api(&g, "/v1.0/me/messages").await;
    assert_eq!(
        h["retry-after"], "6",
        "the oldest request leaves the window in 6 s"
    );
    t.clock.advance_secs(6);
    assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);

    let c = counters(&t).await;
    let u = &c["providers"]["graph"]["users"][ADELE];
    assert_eq!(
        (
            u["requests"].as_u64(),
            u["quota_refusals"].as_u64(),
            u["responses_429"].as_u64()
        ),
        (Some(6), Some(2), Some(2))
    );
    assert_eq!(c["providers"]["graph"]["responses_429"], 2);
    assert_eq!(u["longest_429_run"], 2, "the two refusals came in a row");

    // A success ends a run: one more refusal after it is a run of 1, and the longest stays 2.
    for _ in 0..2 {
        assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);
    }
    assert_eq!(
        t.api(&g, "/v1.0/me/messages").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    t.clock.advance_secs(10);
    assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);
    assert_eq!(t.api(&g, "/v1.0/me/messages").await.0, StatusCode::OK);
    let c = counters(&t).await;
    let u = &c["providers"]["graph"]["users"][ADELE];
    assert_eq!(u["responses_429"], 3);
    assert_eq!(u["longest_429_run"], 2);
}

#[tokio::test]
async fn quotas_on_turns_on_the_documented_graph_limits() {
    let t = start().await;
    settings(&t, json!({"quotas": true})).await;
    let (_, s) = t.control(Method::GET, "/_sandbox/settings", None).await;
    assert_eq!(s["quotas"], true);
    let g = graph_token(&t).await;
    // 10,000 per 10 minutes: far from reached here.
    for _ in 0..20 {
        assert_eq!(t.api(&g, "/v1.0/me").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn gmail_charges_a_per_second_token_bucket_and_refuses_with_rate_limit_exceeded() {
    let t = start().await;
    settings(&t, json!({"gmail_units_per_user_per_second": 10.0})).await;
    let m = gmail_token(&t).await;
    // messages.list costs 5: two fit in a full bucket of 10.
    for _ in 0..2 {
        assert_eq!(
            t.api(&m, "/gmail/v1/users/me/messages").await.0,
            StatusCode::OK
        );
    }
    let (st, h, body) = t.api(&m, "/gmail/v1/users/me/messages").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        h.get("retry-after").is_none(),
        "Gmail documents no Retry-After"
    );
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(body["error"]["errors"][0]["domain"], "usageLimits");

    // A second refills the bucket: two more calls.
    t.clock.advance_secs(1);
    assert_eq!(
        t.api(&m, "/gmail/v1/users/me/messages").await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.api(&m, "/gmail/v1/users/me/messages").await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.api(&m, "/gmail/v1/users/me/messages").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    let c = counters(&t).await;
    let u = &c["providers"]["gmail"]["users"][HANK];
    assert_eq!(u["units"], 20, "refused calls are not charged");
    assert_eq!(u["quota_refusals"], 2);
    assert_eq!(
        u["peak_units_per_sec"], 10,
        "the achieved rate never exceeded the quota"
    );
    assert_eq!(c["gmail_units"][HANK], 20);

    settings(&t, json!({"gmail_quota_error": "userRateLimitExceeded"})).await;
    let (st, _, body) = t.api(&m, "/gmail/v1/users/me/messages").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
}

#[tokio::test]
async fn the_2026_cost_model_makes_messages_get_dearer_against_the_same_bucket() {
    let t = start().await;
    let m = gmail_token(&t).await;
    let (_, injected) = t
        .control(
            Method::POST,
            &format!("/_sandbox/mailboxes/{HANK}/messages"),
            Some(json!({"from": "cand@example.org", "subject": "hi"})),
        )
        .await;
    let id = s(&injected["id"]).to_string();
    settings(
        &t,
        json!({"gmail_quota_model": "2026", "gmail_units_per_user_per_second": 40.0}),
    )
    .await;
    t.control(Method::DELETE, "/_sandbox/counters", None).await;
    let path = format!("/gmail/v1/users/me/messages/{id}?format=metadata");
    assert_eq!(t.api(&m, &path).await.0, StatusCode::OK);
    assert_eq!(t.api(&m, &path).await.0, StatusCode::OK);
    assert_eq!(
        t.api(&m, &path).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "20 units each"
    );
    settings(&t, json!({"gmail_quota_model": "legacy"})).await;
    t.control(Method::DELETE, "/_sandbox/counters", None).await;
    for _ in 0..8 {
        assert_eq!(t.api(&m, &path).await.0, StatusCode::OK, "5 units each");
    }
    assert_eq!(counters(&t).await["gmail_units"][HANK], 40);
}

#[tokio::test]
async fn a_client_pacing_itself_shows_a_peak_rate_within_the_quota() {
    let t = start().await;
    settings(&t, json!({"gmail_units_per_user_per_second": 10.0})).await;
    let m = gmail_token(&t).await;
    // Two 5-unit calls per second of sandbox time, for five seconds.
    for _ in 0..5 {
        for _ in 0..2 {
            assert_eq!(
                t.api(&m, "/gmail/v1/users/me/messages").await.0,
                StatusCode::OK
            );
        }
        t.clock.advance_secs(1);
    }
    let c = counters(&t).await;
    let u = &c["providers"]["gmail"]["users"][HANK];
    assert_eq!(u["quota_refusals"], 0);
    assert_eq!(u["peak_requests_per_sec"], 2);
    assert_eq!(u["peak_units_per_sec"], 10);
}

#[tokio::test]
async fn gmail_refuses_requests_over_the_per_user_concurrency_with_too_many_concurrent_requests() {
    let t = start().await;
    settings(&t, json!({"gmail_user_concurrency": 2})).await;
    let m = gmail_token(&t).await;
    let (st, _) = t
        .control(
            Method::POST,
            "/_sandbox/faults",
            Some(json!({"endpoint": "gmail.users.getProfile", "fault": {"kind": "delay", "millis": 1000}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let mut calls = Vec::new();
    for _ in 0..4 {
        let (http, url, tok) = (
            t.http.clone(),
            t.url("/gmail/v1/users/me/profile"),
            m.clone(),
        );
        calls.push(tokio::spawn(async move {
            let r = http.get(url).bearer_auth(tok).send().await.unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::TOO_MANY_REQUESTS, body) => {
                assert_eq!(
                    body["error"]["message"],
                    "Too many concurrent requests for user."
                );
                assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, refused), (2, 2));
    t.control(Method::DELETE, "/_sandbox/faults", None).await;
    assert_eq!(
        t.api(&m, "/gmail/v1/users/me/profile").await.0,
        StatusCode::OK,
        "slots are given back"
    );
}
