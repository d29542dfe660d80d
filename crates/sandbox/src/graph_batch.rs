//! Graph JSON batching, `POST /v1.0/$batch` (PROVIDERS.md §2.5): at most 20 requests with unique ids; each runs
//! as a request of its own through the whole router (so it is authenticated, counted, faulted and throttled on its
//! own: an inner 429 can appear), at most `graph_batch_parallelism` (4, as Outlook does per mailbox) at a time,
//! after the requests it `dependsOn`; one that depends on a failed request gets 424. Responses come back in
//! request order (Graph allows any order).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::app::App;
use crate::wire::{get_ci, graph_bad_request, json_response};

/// Most requests in one batch.
pub const MAX_REQUESTS: usize = 20;

/// Routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1.0/$batch", post(batch))
        .layer(middleware::from_fn(crate::apis::graph_headers))
}

/// One parsed inner request.
#[derive(Debug, Clone)]
struct Step {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(body: &Value) -> Result<Vec<Step>, String> {
    let requests = get_ci(body, "requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format.")?;
    if requests.len() > MAX_REQUESTS {
        return Err(format!(
            "Number of batch request steps exceeds the maximum of {MAX_REQUESTS}."
        ));
    }
    let mut steps = Vec::with_capacity(requests.len());
    for r in requests {
        let id = get_ci(r, "id")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .ok_or("Batch request step is missing its id.")?;
        if steps.iter().any(|s: &Step| s.id == id) {
            return Err(format!("Batch request ids must be unique; '{id}' repeats."));
        }
        let method = get_ci(r, "method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| format!("Batch request step '{id}' has no valid method."))?;
        let url = get_ci(r, "url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Batch request step '{id}' has no url."))?;
        if url.contains("://") {
            return Err(format!(
                "Batch request step '{id}': the url must be relative."
            ));
        }
        let headers: Vec<(String, String)> = get_ci(r, "headers")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let body = get_ci(r, "body").filter(|b| !b.is_null()).cloned();
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            return Err(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            ));
        }
        let depends_on = get_ci(r, "dependsOn")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        steps.push(Step {
            id,
            method,
            url: url.to_string(),
            headers,
            body,
            depends_on,
        });
    }
    for s in &steps {
        for d in &s.depends_on {
            if !steps.iter().any(|o| &o.id == d) || d == &s.id {
                return Err(format!(
                    "Batch request step '{}' depends on unknown step '{d}'.",
                    s.id
                ));
            }
        }
    }
    Ok(steps)
}

async fn batch(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("graph.batch", None);
    let now = app.now();
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|_| "Invalid batch payload format.".to_string())
        .and_then(|v| parse(&v));
    let steps = match parsed {
        Ok(s) => s,
        Err(msg) => return graph_bad_request(now, &headers, "BadRequest", &msg),
    };
    let parallel = app.read(|s| s.settings.graph_batch_parallelism.max(1));
    let svc = crate::router(app.clone());
    let outer = Arc::new(headers);
    let mut done: HashMap<String, Value> = HashMap::new();
    let mut pending: Vec<Step> = steps.clone();
    while !pending.is_empty() {
        // Steps whose dependencies are all answered; a step whose dependency failed answers 424 at once.
        let before = done.len();
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for s in pending {
            if s.depends_on.iter().all(|d| done.contains_key(d)) {
                let failed = s.depends_on.iter().any(|d| {
                    done[d]["status"]
                        .as_u64()
                        .is_none_or(|st| !(200..300).contains(&st))
                });
                if failed {
                    done.insert(s.id.clone(), failed_dependency(&s.id));
                } else {
                    ready.push(s);
                }
            } else {
                waiting.push(s);
            }
        }
        if ready.is_empty() && done.len() == before {
            // No progress: only possible with a dependency cycle.
            for s in &waiting {
                done.insert(s.id.clone(), failed_dependency(&s.id));
            }
            break;
        }
        for chunk in ready.chunks(parallel as usize) {
            let mut set = tokio::task::JoinSet::new();
            for s in chunk.iter().cloned() {
                let (svc, outer) = (svc.clone(), outer.clone());
                set.spawn(async move {
                    let r = run(svc, &outer, &s).await;
                    (s.id, r)
                });
            }
            while let Some(res) = set.join_next().await {
                if let Ok((id, v)) = res {
                    done.insert(id, v);
                }
            }
        }
        pending = waiting;
    }
    let responses: Vec<Value> = steps
        .iter()
        .map(|s| {
            done.remove(&s.id)
                .unwrap_or_else(|| failed_dependency(&s.id))
        })
        .collect();
    json_response(StatusCode::OK, json!({"responses": responses}))
}

fn failed_dependency(id: &str) -> Value {
    json!({
        "id": id,
        "status": 424,
        "headers": {"Content-Type": "application/json"},
        "body": {"error": {"code": "FailedDependency", "message": "The request failed because of a failed dependency."}},
    })
}

/// Response headers a batch step carries over.
const KEPT: &[&str] = &[
    "content-type",
    "retry-after",
    "location",
    "preference-applied",
    "odata-version",
];

async fn run(svc: Router, outer: &HeaderMap, s: &Step) -> Value {
    let path = if s.url.starts_with('/') {
        format!("/v1.0{}", s.url)
    } else {
        format!("/v1.0/{}", s.url)
    };
    let body = match &s.body {
        None => Body::empty(),
        Some(Value::String(text)) => Body::from(text.clone()),
        Some(v) => Body::from(v.to_string()),
    };
    let mut rq = Request::new(body);
    *rq.method_mut() = s.method.clone();
    match path.parse() {
        Ok(uri) => *rq.uri_mut() = uri,
        Err(_) => {
            return json!({"id": s.id, "status": 400, "headers": {"Content-Type": "application/json"},
                "body": {"error": {"code": "BadRequest", "message": format!("Invalid request URI '{}'.", s.url)}}});
        }
    }
    let h = rq.headers_mut();
    for name in [header::AUTHORIZATION, header::HOST] {
        if let Some(v) = outer.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(v) = outer.get("x-forwarded-proto") {
        h.insert("x-forwarded-proto", v.clone());
    }
    for (k, v) in &s.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    let rq = crate::normalize(rq);
    let r = match svc.oneshot(rq).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = r.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in r.headers() {
        if KEPT.contains(&k.as_str())
            && let Ok(v) = v.to_str()
        {
            headers.insert(canonical(k.as_str()), json!(v));
        }
    }
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| match std::str::from_utf8(&bytes) {
            Ok(t) => json!(t),
            Err(_) => json!(STANDARD.encode(&bytes)),
        })
    };
    json!({"id": s.id, "status": status, "headers": headers, "body": body})
}

/// `content-type` -> `Content-Type`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_refused_for_too_many_steps_duplicate_ids_bodies_without_content_type_and_unknown_dependencies()
     {
        let step = |id: &str| json!({"id": id, "method": "GET", "url": "/me"});
        let many: Vec<Value> = (0..21).map(|i| step(&i.to_string())).collect();
        assert!(
            parse(&json!({"requests": many}))
                .unwrap_err()
                .contains("20")
        );
        assert!(
            parse(&json!({"requests": [step("1"), step("1")]}))
                .unwrap_err()
                .contains("unique")
        );
        let write =
            json!({"id": "2", "method": "POST", "url": "/me/sendMail", "body": {"message": {}}});
        assert!(
            parse(&json!({"requests": [write]}))
                .unwrap_err()
                .contains("Content-Type")
        );
        let dep = json!({"id": "3", "method": "GET", "url": "/me", "dependsOn": ["9"]});
        assert!(parse(&json!({"requests": [dep]})).is_err());
        assert!(parse(&json!({"requests": [{"id": "4", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"}]})).is_err());
        let ok = parse(&json!({"requests": [step("a"), {"id": "b", "method": "get", "url": "me/messages", "dependsOn": ["a"]}]})).unwrap();
        assert_eq!(ok[1].method, Method::GET);
        assert_eq!(ok[1].depends_on, vec!["a".to_string()]);
    }

    #[test]
    fn header_names_are_written_the_way_graph_writes_them() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("retry-after"), "Retry-After");
    }
}
