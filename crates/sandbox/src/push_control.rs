//! Control API for push (`/_sandbox/push/...`): what is subscribed, every delivery attempt, Pub/Sub topics,
//! Graph lifecycle events, and the switch that drops the next notifications.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::push::{self, Target, Topic};
use crate::wire::json_response;

/// Routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/_sandbox/push", get(overview))
        .route(
            "/_sandbox/push/deliveries",
            get(deliveries).delete(clear_deliveries),
        )
        .route("/_sandbox/push/drop", post(drop_next))
        .route("/_sandbox/push/topics", get(topics).post(add_topic))
        .route("/_sandbox/push/topics/{*name}", delete(remove_topic))
        .route(
            "/_sandbox/push/subscriptions/{id}",
            delete(remove_subscription),
        )
        .route(
            "/_sandbox/push/subscriptions/{id}/lifecycle",
            post(lifecycle),
        )
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"error": msg.into()}))
}

async fn overview(State(app): State<App>) -> Response {
    let now = app.now();
    let body = app.push(|p| {
        json!({
            "subscriptions": p.subscriptions.values().map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                v["expired"] = json!(s.expiration <= now);
                v
            }).collect::<Vec<_>>(),
            "watches": p.watches.values().map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
                v["expired"] = json!(w.expiration <= now);
                v
            }).collect::<Vec<_>>(),
            "topics": p.topics.values().collect::<Vec<_>>(),
            "drop_next": p.drop_next,
        })
    });
    json_response(StatusCode::OK, body)
}

#[derive(Deserialize)]
struct DeliveryFilter {
    kind: Option<String>,
    target: Option<String>,
}

async fn deliveries(State(app): State<App>, Query(f): Query<DeliveryFilter>) -> Response {
    let list: Vec<Value> = app.push(|p| {
        p.deliveries
            .iter()
            .filter(|d| f.kind.as_deref().is_none_or(|k| k == d.kind))
            .filter(|d| {
                f.target
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case(&d.target))
            })
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect()
    });
    json_response(StatusCode::OK, json!(list))
}

async fn clear_deliveries(State(app): State<App>) -> Response {
    app.push(|p| p.deliveries.clear());
    json_response(StatusCode::OK, json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropSpec {
    count: u64,
}

async fn drop_next(State(app): State<App>, Json(spec): Json<DropSpec>) -> Response {
    let n = app.push(|p| {
        p.drop_next = spec.count;
        p.drop_next
    });
    json_response(StatusCode::OK, json!({"drop_next": n}))
}

async fn topics(State(app): State<App>) -> Response {
    let list: Vec<Topic> = app.push(|p| p.topics.values().cloned().collect());
    json_response(StatusCode::OK, json!(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicSpec {
    name: String,
    push_endpoint: String,
    audience: Option<String>,
    service_account: Option<String>,
    subscription: Option<String>,
}

async fn add_topic(State(app): State<App>, Json(spec): Json<TopicSpec>) -> Response {
    let parts: Vec<&str> = spec.name.split('/').collect();
    if parts.len() != 4 || parts[0] != "projects" || parts[2] != "topics" {
        return bad(
            StatusCode::BAD_REQUEST,
            "name must be projects/{project}/topics/{topic}",
        );
    }
    if url::Url::parse(&spec.push_endpoint).is_err() {
        return bad(
            StatusCode::BAD_REQUEST,
            "push_endpoint must be an absolute URL",
        );
    }
    let project = parts[1];
    let topic = Topic {
        audience: spec.audience.unwrap_or_else(|| spec.push_endpoint.clone()),
        service_account: spec
            .service_account
            .unwrap_or_else(|| format!("gmail-push@{project}.iam.gserviceaccount.com")),
        subscription: spec
            .subscription
            .unwrap_or_else(|| format!("projects/{project}/subscriptions/{}-push", parts[3])),
        name: spec.name.clone(),
        push_endpoint: spec.push_endpoint,
    };
    app.push(|p| p.topics.insert(spec.name, topic.clone()));
    json_response(StatusCode::OK, json!(topic))
}

async fn remove_topic(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.push(|p| p.topics.remove(&name)) {
        Some(_) => json_response(StatusCode::OK, json!({"ok": true})),
        None => bad(StatusCode::NOT_FOUND, format!("no topic {name}")),
    }
}

async fn remove_subscription(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.push(|p| p.subscriptions.remove(&id)) {
        Some(_) => json_response(StatusCode::OK, json!({"ok": true})),
        None => bad(StatusCode::NOT_FOUND, format!("no subscription {id}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSpec {
    event: String,
}

/// Sends a lifecycle notification (asynchronously, with retries); `subscriptionRemoved` also stops the
/// subscription's deliveries.
async fn lifecycle(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(spec): Json<LifecycleSpec>,
) -> Response {
    if !matches!(
        spec.event.as_str(),
        "reauthorizationRequired" | "subscriptionRemoved" | "missed"
    ) {
        return bad(
            StatusCode::BAD_REQUEST,
            "event must be reauthorizationRequired, subscriptionRemoved or missed",
        );
    }
    let found = app.push(|p| {
        let s = p.subscriptions.get_mut(&id)?;
        let body = push::lifecycle_body(s, &spec.event);
        if spec.event == "subscriptionRemoved" {
            s.removed = true;
        }
        Some((s.lifecycle_url.clone(), body))
    });
    let Some((url, body)) = found else {
        return bad(StatusCode::NOT_FOUND, format!("no subscription {id}"));
    };
    let Some(url) = url else {
        return bad(
            StatusCode::CONFLICT,
            "the subscription has no lifecycleNotificationUrl",
        );
    };
    let task_app = app.clone();
    let task_body = body.clone();
    tokio::spawn(async move {
        push::deliver(&task_app, Target::Lifecycle(id), url, task_body).await;
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}
