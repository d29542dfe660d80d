//! The push endpoints clients call: Graph `/v1.0/subscriptions` (create with the validation call, list, get,
//! renew, delete, reauthorize), Gmail `users.watch` / `users.stop`, and the JWKS that verifies Pub/Sub push
//! tokens (`/oauth2/v3/certs`). Delivery itself is in [`crate::push`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::apis::{Needs, Principal, call, check_alt, gmail_user_ok};
use crate::app::App;
use crate::mailbox::Mailbox;
use crate::push::{self, Subscription, Watch, Watched, subscription_json};
use crate::wire::{
    GraphPrefer, get_ci, google_api_error, graph_error, json_response, link_base, random_guid,
};

/// Routes.
pub fn routes() -> Router<App> {
    let graph = Router::new()
        .route("/v1.0/subscriptions", get(list).post(create))
        .route(
            "/v1.0/subscriptions/{id}",
            get(get_one).patch(renew).delete(remove),
        )
        .route("/v1.0/subscriptions/{id}/reauthorize", post(reauthorize))
        .layer(middleware::from_fn(crate::apis::graph_headers));
    Router::new()
        .merge(graph)
        .route("/gmail/v1/users/{user_id}/watch", post(gmail_watch))
        .route("/gmail/v1/users/{user_id}/stop", post(gmail_stop))
        .route("/oauth2/v3/certs", get(certs))
}

const MESSAGE_SCOPES: &[&str] = &[
    "Mail.ReadBasic",
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.Read.Shared",
    "Mail.ReadWrite.Shared",
];

const EVENT_SCOPES: &[&str] = &[
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
];

const ANY_SCOPES: &[&str] = &[
    "Mail.ReadBasic",
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.Read.Shared",
    "Mail.ReadWrite.Shared",
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
];

fn forbidden_needs(any_of: &'static [&'static str]) -> Needs<'static> {
    Needs::Graph {
        any_of,
        code: "ExtensionError",
        message: "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. Check credentials and try again.]",
    }
}

/// Authenticates through the shared pipeline (counters, quotas, faults, scopes); `Err` is the pipeline's answer.
async fn authorize(
    app: &App,
    endpoint: &str,
    headers: &HeaderMap,
    needs: Needs<'_>,
) -> Result<Principal, Response> {
    let mut who = None;
    let r = call(app, endpoint, headers, needs, |p| {
        who = Some(p.clone());
        StatusCode::NO_CONTENT.into_response()
    })
    .await;
    who.ok_or(r)
}

fn bad(app: &App, headers: &HeaderMap, msg: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequest",
        msg,
        headers,
        app.now(),
    )
}

fn not_found(app: &App, headers: &HeaderMap) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The object was not found.",
        headers,
        app.now(),
    )
}

/// What a `resource` names before the caller is known: (who: `None` for `me`, watched with a folder name).
enum Parsed {
    Messages(Option<String>),
    Events,
}

fn parse_resource(resource: &str) -> Option<(Option<String>, Parsed)> {
    let r = resource.trim().trim_start_matches('/');
    let lower = r.to_ascii_lowercase();
    let (who, rest, rest_lower) = if let Some(rest_lower) = lower.strip_prefix("me/") {
        (None, &r[3..], rest_lower)
    } else if let Some(x) = lower.strip_prefix("users/") {
        let slash = x.find('/')?;
        let who = r[6..6 + slash].trim_matches(|c| c == '\'' || c == '(' || c == ')');
        (Some(who.to_string()), &r[7 + slash..], &x[slash + 1..])
    } else {
        return None;
    };
    match rest_lower {
        "messages" => return Some((who, Parsed::Messages(None))),
        "events" | "calendar/events" => return Some((who, Parsed::Events)),
        _ => {}
    }
    let folder = rest_lower
        .strip_prefix("mailfolders")?
        .strip_suffix("/messages")?;
    let start = rest.len() - "/messages".len() - folder.len();
    let name = &rest[start..start + folder.len()];
    let name = match name.strip_prefix("('").and_then(|n| n.strip_suffix("')")) {
        Some(inner) => inner,
        None => name.strip_prefix('/')?,
    };
    (!name.is_empty() && !name.contains('/'))
        .then(|| (who, Parsed::Messages(Some(name.to_string()))))
}

fn parse_time(v: &str) -> Option<i64> {
    v.parse::<Timestamp>()
        .or_else(|_| format!("{v}Z").parse::<Timestamp>())
        .ok()
        .map(|t| t.as_second())
}

/// The expiry a request may have: checked against now and the maximum lifetime (capped or refused).
fn expiry(app: &App, headers: &HeaderMap, body: &Value) -> Result<i64, Response> {
    let Some(raw) = get_ci(body, "expirationDateTime").and_then(Value::as_str) else {
        return Err(bad(
            app,
            headers,
            "expirationDateTime is a required property for subscription creation.",
        ));
    };
    let Some(at) = parse_time(raw) else {
        return Err(bad(
            app,
            headers,
            &format!("Cannot convert '{raw}' to a DateTimeOffset."),
        ));
    };
    let now = app.now();
    let (max_minutes, reject) = app.read(|s| {
        (
            s.settings.graph_subscription_max_minutes,
            s.settings.graph_subscription_reject_over_max,
        )
    });
    if at <= now {
        return Err(bad(
            app,
            headers,
            "Subscription expiration can only be in the future.",
        ));
    }
    let max = now + max_minutes * 60;
    if at > max {
        if reject {
            return Err(bad(
                app,
                headers,
                &format!(
                    "Subscription expiration can only be {max_minutes} minutes in the future."
                ),
            ));
        }
        return Ok(max);
    }
    Ok(at)
}

fn parse_body(app: &App, headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            bad(
                app,
                headers,
                "Invalid request body: a JSON object is expected.",
            )
        })
}

async fn create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_body(&app, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| get_ci(&body, k).and_then(Value::as_str).map(str::to_string);
    let resource = text("resource").unwrap_or_default();
    let Some((who, parsed)) = parse_resource(&resource) else {
        return bad(
            &app,
            &headers,
            &format!("Resource '{resource}' is not supported for change notifications."),
        );
    };
    let needs = match parsed {
        Parsed::Events => forbidden_needs(EVENT_SCOPES),
        Parsed::Messages(_) => forbidden_needs(MESSAGE_SCOPES),
    };
    let p = match authorize(&app, "graph.subscriptions.create", &headers, needs).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(w) = &who
        && !w.eq_ignore_ascii_case(&p.user.id)
        && !w.eq_ignore_ascii_case(&p.user.email)
    {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. Check credentials and try again.]",
            &headers,
            app.now(),
        );
    }
    let watched = match parsed {
        Parsed::Events => Watched::Events,
        Parsed::Messages(None) => Watched::Messages(None),
        Parsed::Messages(Some(name)) => {
            match Mailbox::new(&p.user.email, &p.user.id, 0).folder_index(&name) {
                Some(f) => Watched::Messages(Some(f)),
                None => {
                    return graph_error(
                        StatusCode::NOT_FOUND,
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                        &headers,
                        app.now(),
                    );
                }
            }
        }
    };
    let change_types: Vec<String> = text("changeType")
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if change_types.is_empty()
        || change_types
            .iter()
            .any(|c| !matches!(c.as_str(), "created" | "updated" | "deleted"))
    {
        return bad(
            &app,
            &headers,
            "changeType must be a comma-separated list of created, updated and deleted.",
        );
    }
    let Some(notification_url) = text("notificationUrl") else {
        return bad(&app, &headers, "notificationUrl is a required property.");
    };
    let lifecycle_url = text("lifecycleNotificationUrl");
    for u in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        match url::Url::parse(u) {
            Ok(x) if x.scheme() == "https" || x.scheme() == "http" => {}
            _ => return bad(&app, &headers, &format!("Invalid notification url '{u}'.")),
        }
    }
    let client_state = text("clientState");
    if client_state
        .as_ref()
        .is_some_and(|c| c.chars().count() > 128)
    {
        return bad(
            &app,
            &headers,
            "clientState must be at most 128 characters long.",
        );
    }
    let expiration = match expiry(&app, &headers, &body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = random_guid();
    for u in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        if let Err(msg) = push::validate(&app, &id, u).await {
            return bad(&app, &headers, &msg);
        }
    }
    let sub = Subscription {
        id: id.clone(),
        owner: p.user.email.to_ascii_lowercase(),
        owner_id: p.user.id.clone(),
        tenant_id: p.user.org.clone(),
        client_id: p.client_id.clone(),
        resource,
        watched,
        change_types,
        notification_url,
        lifecycle_url,
        client_state,
        expiration,
        immutable_ids: GraphPrefer::parse(&headers).immutable,
        removed: false,
    };
    let from = push::cursors_now(&app, &sub.owner);
    let out = subscription_json(&sub, &link_base(&headers), true);
    app.push(|b| {
        b.watch_from(&sub.owner, from);
        b.subscriptions.insert(id, sub)
    });
    json_response(StatusCode::CREATED, out)
}

/// The caller's live subscription `id`.
fn mine(app: &App, p: &Principal, id: &str) -> Option<Subscription> {
    let now = app.now();
    app.push(|b| {
        b.subscriptions
            .get(id)
            .filter(|s| {
                s.client_id == p.client_id
                    && s.owner.eq_ignore_ascii_case(&p.user.email)
                    && s.expiration > now
                    && !s.removed
            })
            .cloned()
    })
}

async fn list(State(app): State<App>, headers: HeaderMap) -> Response {
    let p = match authorize(
        &app,
        "graph.subscriptions.list",
        &headers,
        forbidden_needs(ANY_SCOPES),
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = link_base(&headers);
    let now = app.now();
    let value: Vec<Value> = app.push(|b| {
        b.subscriptions
            .values()
            .filter(|s| {
                s.client_id == p.client_id
                    && s.owner.eq_ignore_ascii_case(&p.user.email)
                    && s.expiration > now
                    && !s.removed
            })
            .map(|s| subscription_json(s, &base, false))
            .collect()
    });
    json_response(
        StatusCode::OK,
        json!({"@odata.context": format!("{base}/v1.0/$metadata#subscriptions"), "value": value}),
    )
}

async fn get_one(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let p = match authorize(
        &app,
        "graph.subscriptions.get",
        &headers,
        forbidden_needs(ANY_SCOPES),
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    match mine(&app, &p, &id) {
        Some(s) => json_response(
            StatusCode::OK,
            subscription_json(&s, &link_base(&headers), true),
        ),
        None => not_found(&app, &headers),
    }
}

async fn renew(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match parse_body(&app, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p = match authorize(
        &app,
        "graph.subscriptions.update",
        &headers,
        forbidden_needs(ANY_SCOPES),
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    if mine(&app, &p, &id).is_none() {
        return not_found(&app, &headers);
    }
    let expiration = match expiry(&app, &headers, &body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let updated = app.push(|b| {
        b.subscriptions.get_mut(&id).map(|s| {
            s.expiration = expiration;
            s.clone()
        })
    });
    match updated {
        Some(s) => json_response(
            StatusCode::OK,
            subscription_json(&s, &link_base(&headers), true),
        ),
        None => not_found(&app, &headers),
    }
}

async fn remove(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let p = match authorize(
        &app,
        "graph.subscriptions.delete",
        &headers,
        forbidden_needs(ANY_SCOPES),
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    if mine(&app, &p, &id).is_none() {
        return not_found(&app, &headers);
    }
    app.push(|b| b.subscriptions.remove(&id));
    StatusCode::NO_CONTENT.into_response()
}

async fn reauthorize(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(
        &app,
        "graph.subscriptions.reauthorize",
        &headers,
        forbidden_needs(ANY_SCOPES),
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    if mine(&app, &p, &id).is_none() {
        return not_found(&app, &headers);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn topic_name_ok(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == "topics"
        && !parts[1].is_empty()
        && !parts[3].is_empty()
}

async fn gmail_watch(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    call(&app, "gmail.users.watch", &headers, Needs::Google, |p| {
        if let Err(r) = gmail_user_ok(p, &user_id) {
            return r;
        }
        let topic = body["topicName"].as_str().unwrap_or_default().to_string();
        if !topic_name_ok(&topic) {
            return google_api_error(
                StatusCode::BAD_REQUEST,
                "invalidArgument",
                "global",
                "Invalid topicName does not match projects/SOME_PROJECT/topics/*",
            );
        }
        if !app.push(|b| b.topics.contains_key(&topic)) {
            return google_api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "global",
                &format!("Error sending test message to Cloud PubSub {topic} : User not authorized to perform this operation."),
            );
        }
        let label_ids: Vec<String> = body["labelIds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let behavior = body["labelFilterBehavior"]
            .as_str()
            .or(body["labelFilterAction"].as_str())
            .unwrap_or("include")
            .to_ascii_lowercase();
        if behavior != "include" && behavior != "exclude" {
            return google_api_error(
                StatusCode::BAD_REQUEST,
                "invalidArgument",
                "global",
                &format!("Invalid value for labelFilterBehavior: {behavior}"),
            );
        }
        let owner = p.user.email.to_ascii_lowercase();
        let history_id = app
            .mail_quiet(|m| m.by_owner.get(&owner).map(|mb| mb.history_id))
            .unwrap_or(p.user.history_id);
        let lifetime = app.read(|s| s.settings.gmail_watch_lifetime_secs);
        let expiration = app.now() + lifetime;
        let from = push::cursors_now(&app, &owner);
        app.push(|b| {
            b.watch_from(&owner, from);
            b.watches.insert(
                owner.clone(),
                Watch {
                    owner: owner.clone(),
                    topic,
                    label_ids,
                    label_filter_behavior: behavior,
                    expiration,
                    history_id,
                },
            )
        });
        json_response(
            StatusCode::OK,
            json!({"historyId": history_id.to_string(), "expiration": (expiration * 1000).to_string()}),
        )
    })
    .await
}

async fn gmail_stop(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(&app, "gmail.users.stop", &headers, Needs::Google, |p| {
        if let Err(r) = gmail_user_ok(p, &user_id) {
            return r;
        }
        let owner = p.user.email.to_ascii_lowercase();
        app.push(|b| b.watches.remove(&owner));
        StatusCode::NO_CONTENT.into_response()
    })
    .await
}

async fn certs() -> Response {
    let mut r = json_response(StatusCode::OK, crate::jwt::jwks());
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=19204, must-revalidate, no-transform"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_messages_folders_and_events() {
        let m = |r: &str| match parse_resource(r) {
            Some((who, Parsed::Messages(f))) => Some((who, f)),
            _ => None,
        };
        assert_eq!(m("me/messages"), Some((None, None)));
        assert_eq!(m("/me/messages"), Some((None, None)));
        assert_eq!(
            m("me/mailFolders('Inbox')/messages"),
            Some((None, Some("Inbox".into())))
        );
        assert_eq!(
            m("/me/mailfolders/AQMkADabc/messages"),
            Some((None, Some("AQMkADabc".into())))
        );
        assert_eq!(
            m("users/adele@acme.example/messages"),
            Some((Some("adele@acme.example".into()), None))
        );
        assert!(matches!(
            parse_resource("me/events"),
            Some((None, Parsed::Events))
        ));
        assert!(parse_resource("me/contacts").is_none());
        assert!(parse_resource("groups/x/conversations").is_none());
    }
}
