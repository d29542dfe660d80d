//! Graph JSON batching for message fetches (`MailReader::with_graph_batch`, PROVIDERS.md §2.5) against a small
//! local `$batch` server: 20 messages per batch plus one batch of attachment lists, answers matched by `id` in any
//! order, per-request 404 and 429, and the pacer told about an inner 429.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::Uri;
use base64::Engine as _;
use common::no_retry_http;
use hirewire_providers::pacing::ManualClock;
use hirewire_providers::{
    Endpoints, MailReader, PaceKey, Pacer, PacingConfig, Provider, ProviderError, Secret, Service,
};
use serde_json::{Value, json};

fn golden_message() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/golden/microsoft/message.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Answers one inner request of a batch like Graph would for the mailbox this test imagines.
fn inner(url: &str) -> (u16, Value, Value) {
    let path = url.split('?').next().unwrap();
    let id = path
        .trim_start_matches("/me/messages/")
        .trim_end_matches("/attachments");
    if path.ends_with("/attachments") {
        let file = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 cv");
        return (
            200,
            json!({}),
            json!({"value":[{"@odata.type":"#microsoft.graph.fileAttachment","name":"cv.pdf","contentType":"application/pdf","isInline":false,"contentBytes":file}]}),
        );
    }
    match id {
        "gone" => (
            404,
            json!({}),
            json!({"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store."}}),
        ),
        "hot" => (
            429,
            json!({"Retry-After":"7"}),
            json!({"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}),
        ),
        _ => {
            let mut m = golden_message();
            m["id"] = json!(id);
            m["hasAttachments"] = json!(id.starts_with("att"));
            m["internetMessageId"] = json!(format!("<{id}@example.com>"));
            (200, json!({"Content-Type":"application/json"}), m)
        }
    }
}

struct Server {
    base: String,
    /// (path, number of inner requests) of every HTTP request.
    seen: Arc<Mutex<Vec<(String, usize)>>>,
}

async fn serve() -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, Json(batch): Json<Value>| {
        let log = log.clone();
        async move {
            let requests = batch["requests"].as_array().cloned().unwrap_or_default();
            log.lock()
                .unwrap()
                .push((uri.path().to_owned(), requests.len()));
            let mut responses: Vec<Value> = requests
                .iter()
                .map(|r| {
                    assert_eq!(r["method"], "GET");
                    assert_eq!(r["headers"]["Prefer"], "IdType=\"ImmutableId\"");
                    let (status, headers, body) = inner(r["url"].as_str().unwrap());
                    json!({"id": r["id"], "status": status, "headers": headers, "body": body})
                })
                .collect();
            // Graph may answer in any order.
            responses.reverse();
            Json(json!({ "responses": responses }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, seen }
}

#[tokio::test]
async fn twenty_graph_messages_are_fetched_per_batch_with_their_attachments_in_one_more() {
    let server = serve().await;
    let reader = MailReader::new(
        Provider::Microsoft,
        Endpoints::all_at(&server.base),
        no_retry_http(),
    )
    .with_graph_batch(true);
    let mut ids: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    ids[3] = "att3".into();
    ids[21] = "gone".into();
    let got = reader
        .fetch_raw_many(&Secret::new("at"), &ids)
        .await
        .unwrap();
    assert_eq!(got.len(), 25);
    for (id, r) in ids.iter().zip(&got) {
        match id.as_str() {
            "gone" => assert!(matches!(r, Err(ProviderError::MessageGone { .. })), "{r:?}"),
            _ => {
                let m = r.as_ref().unwrap();
                assert_eq!(&m.id, id);
                let raw = String::from_utf8(m.raw.clone()).unwrap();
                assert!(raw.contains(&format!("<{id}@example.com>")), "{raw}");
                assert_eq!(
                    raw.contains("filename*=utf-8''cv.pdf"),
                    id == "att3",
                    "{raw}"
                );
            }
        }
    }
    // The two batches of messages run at once (the reader keeps several requests in flight), so only the
    // set of requests is fixed: 20 messages, the one attachment list of those, and the last 5 messages.
    let mut seen = server.seen.lock().unwrap().clone();
    seen.sort_by_key(|(_, n)| *n);
    assert_eq!(
        seen,
        [
            ("/v1.0/$batch".to_owned(), 1),
            ("/v1.0/$batch".to_owned(), 5),
            ("/v1.0/$batch".to_owned(), 20)
        ]
    );
}

#[tokio::test]
async fn an_inner_429_stops_the_rest_and_pauses_the_mailbox_in_the_pacer() {
    let server = serve().await;
    let clock = ManualClock::new();
    let pacer =
        Pacer::with_parts(PacingConfig::default(), Arc::new(clock), Arc::new(|| 0.5)).unwrap();
    let key = PaceKey::new("app", "a@corp.example");
    let reader = MailReader::new(
        Provider::Microsoft,
        Endpoints::all_at(&server.base),
        no_retry_http(),
    )
    .with_graph_batch(true)
    .with_pacer(pacer.clone(), key.clone());
    let ids: Vec<String> = ["m0", "hot", "m2"].iter().map(|s| s.to_string()).collect();
    let got = reader
        .fetch_raw_many(&Secret::new("at"), &ids)
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        2,
        "kept what came before, then the throttling error"
    );
    assert!(got[0].is_ok());
    assert!(
        matches!(got[1], Err(ProviderError::Throttled { retry_after: Some(d) }) if d == Duration::from_secs(7))
    );
    let pace = pacer.mailbox(&key, Service::Graph);
    assert_eq!(pace.current_wait, Duration::from_secs(7));
    assert_eq!((pace.throttled, pace.units), (1, 3));
}
