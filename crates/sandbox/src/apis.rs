//! The API surfaces: Graph (`/v1.0/...`), Gmail (`/gmail/v1/...`) and Calendar (`/calendar/v3/...`), and the
//! pipeline every API call goes through: authenticate, concurrency, faults, quota, scope check, handler.
//! Later issues add mail and calendar handlers on the same pipeline ([`call`]).

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::faults::Family;
use crate::flow::fault_gate;
use crate::quota;
use crate::scenario::Provider;
use crate::scopes;
use crate::state::User;
use crate::wire::{
    Params, bearer, google_api_error, graph_error, json_response, link_base, random_guid,
};

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The mailbox owner.
    pub user: User,
    /// Client id the token was issued to.
    pub client_id: String,
    /// Scopes on the token.
    pub scopes: Vec<String>,
}

/// Which scopes allow a call.
pub enum Needs<'a> {
    /// Graph: any one of these (short names).
    Graph {
        /// Accepted scopes.
        any_of: &'a [&'a str],
        /// Error code for a missing scope (`ErrorAccessDenied`, `Authorization_RequestDenied`).
        code: &'a str,
        /// Error message.
        message: &'a str,
    },
    /// Google: the scopes the discovery document lists for the method named by the endpoint.
    Google,
}

/// Routes of the API hosts.
pub fn routes() -> Router<App> {
    let graph = Router::new()
        .route("/v1.0/me", get(graph_me))
        .route("/v1.0/users/{id}", get(graph_user))
        .layer(middleware::from_fn(graph_headers));
    Router::new()
        .merge(graph)
        .route("/gmail/v1/users/{user_id}/profile", get(gmail_profile))
        .route("/calendar/v3/calendars/{calendar_id}", get(calendar_get))
}

/// Graph responses carry `request-id` and echo `client-request-id`.
pub(crate) async fn graph_headers(req: Request, next: Next) -> Response {
    let client_request_id = req.headers().get("client-request-id").cloned();
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&random_guid()) {
        h.insert("request-id", v);
    }
    if let Some(v) = client_request_id {
        h.insert("client-request-id", v);
    }
    r
}

/// Google's 401 for a missing, unknown, expired or revoked token.
pub fn google_unauthenticated() -> Response {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header"}],
            "status": "UNAUTHENTICATED",
        }}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    r
}

fn graph_unauthenticated(app: &App, headers: &HeaderMap, message: &str) -> Response {
    let mut r = graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
        headers,
        app.now(),
    );
    if app.read(|s| s.settings.graph_www_authenticate) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\""),
        );
    }
    r
}

fn authenticate(app: &App, family: Family, headers: &HeaderMap) -> Result<Principal, Response> {
    let now = app.now();
    let google = family != Family::Graph;
    let Some(token) = bearer(headers) else {
        return Err(if google {
            google_unauthenticated()
        } else {
            graph_unauthenticated(app, headers, "Access token is empty.")
        });
    };
    let found = app.read(|s| {
        let t = s.access_tokens.get(token)?.clone();
        let u = s.user(&t.user)?.clone();
        Some((t, u))
    });
    let want = if google {
        Provider::Google
    } else {
        Provider::Microsoft
    };
    let Some((t, user)) = found.filter(|(t, _)| t.provider == want) else {
        return Err(if google {
            google_unauthenticated()
        } else {
            graph_unauthenticated(
                app,
                headers,
                "IDX14100: JWT is not well formed, there are no dots (.).",
            )
        });
    };
    if t.revoked || t.expires_at <= now {
        return Err(if google {
            google_unauthenticated()
        } else {
            graph_unauthenticated(
                app,
                headers,
                "Lifetime validation failed, the token is expired.",
            )
        });
    }
    if !google && t.audience.as_deref() != Some("https://graph.microsoft.com") {
        return Err(graph_unauthenticated(app, headers, "Invalid audience."));
    }
    Ok(Principal {
        user,
        client_id: t.client_id,
        scopes: t.scopes,
    })
}

fn google_insufficient(app: &App, endpoint: &str, accepted: &[String]) -> Response {
    let service = match Family::of(endpoint) {
        Family::Calendar => "calendar-json.googleapis.com",
        _ => "gmail.googleapis.com",
    };
    let mut r = json_response(
        StatusCode::FORBIDDEN,
        json!({"error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": service, "method": endpoint},
            }],
        }}),
    );
    if app.read(|s| s.settings.google_insufficient_scope_www_authenticate)
        && let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", scope=\"{}\"",
            accepted.join(" ")
        ))
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Runs one API call through the shared pipeline.
pub async fn call(
    app: &App,
    endpoint: &str,
    headers: &HeaderMap,
    needs: Needs<'_>,
    handler: impl FnOnce(&Principal) -> Response,
) -> Response {
    let family = Family::of(endpoint);
    let principal = match authenticate(app, family, headers) {
        Ok(p) => p,
        Err(r) => {
            app.count(endpoint, None);
            return r;
        }
    };
    let email = principal.user.email.clone();
    app.count(endpoint, Some(&email));
    quota::record_request(app, family, &email);
    let r = admitted(app, endpoint, family, &principal, headers, needs, handler).await;
    quota::record_status(app, family, &email, r.status());
    r
}

/// The part of [`call`] after authentication: quotas, faults, scopes, the handler.
async fn admitted(
    app: &App,
    endpoint: &str,
    family: Family,
    principal: &Principal,
    headers: &HeaderMap,
    needs: Needs<'_>,
    handler: impl FnOnce(&Principal) -> Response,
) -> Response {
    let email = principal.user.email.as_str();
    let _slot = match quota::enter(app, family, endpoint, email, headers) {
        Ok(slot) => slot,
        Err(r) => return r,
    };
    if let Some(r) = fault_gate(app, endpoint, Some(email), headers).await {
        return r;
    }
    match needs {
        Needs::Graph {
            any_of,
            code,
            message,
        } => {
            if !principal
                .scopes
                .iter()
                .any(|s| any_of.contains(&s.as_str()))
            {
                return graph_error(StatusCode::FORBIDDEN, code, message, headers, app.now());
            }
        }
        Needs::Google => {
            let accepted = scopes::google_method_scopes(endpoint);
            if !principal.scopes.iter().any(|s| accepted.contains(s)) {
                return google_insufficient(app, endpoint, accepted);
            }
        }
    }
    if family == Family::Gmail
        && let Err(r) = quota::charge_gmail(app, endpoint, email)
    {
        return r;
    }
    handler(principal)
}

/// Google's `alt` parameter: only `json` (the client libraries send it on every call).
pub(crate) fn check_alt(q: &Option<String>) -> Option<Response> {
    let p = Params::parse(q.as_deref().unwrap_or(""));
    match p.get("alt") {
        None | Some("json") => None,
        Some(other) => Some(google_api_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "global",
            &format!(
                "Invalid value '{other}'. Values must match the following regular expression: '(json|media|proto)'"
            ),
        )),
    }
}

const USER_READ: &[&str] = &[
    "User.Read",
    "User.ReadWrite",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

fn user_json(u: &User, base: &str, select: Option<&str>) -> Value {
    let full = json!({
        "businessPhones": [],
        "displayName": u.display_name,
        "givenName": u.given_name,
        "jobTitle": u.job_title,
        "mail": u.email,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": "en-US",
        "surname": u.surname,
        "userPrincipalName": u.email,
        "id": u.id,
    });
    let mut out = Map::new();
    match select {
        Some(sel) => {
            let fields: Vec<&str> = sel
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect();
            out.insert(
                "@odata.context".into(),
                json!(format!(
                    "{base}/v1.0/$metadata#users({})/$entity",
                    fields.join(",")
                )),
            );
            for f in fields {
                if let Some((k, v)) = full
                    .as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(f)))
                {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        None => {
            out.insert(
                "@odata.context".into(),
                json!(format!("{base}/v1.0/$metadata#users/$entity")),
            );
            if let Some(m) = full.as_object() {
                out.extend(m.clone());
            }
        }
    }
    Value::Object(out)
}

async fn graph_me(State(app): State<App>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let select = Params::parse(q.as_deref().unwrap_or(""))
        .get("$select")
        .map(str::to_string);
    let base = link_base(&headers);
    call(
        &app,
        "graph.me",
        &headers,
        Needs::Graph {
            any_of: USER_READ,
            code: "Authorization_RequestDenied",
            message: "Insufficient privileges to complete the operation.",
        },
        |p| json_response(StatusCode::OK, user_json(&p.user, &base, select.as_deref())),
    )
    .await
}

async fn graph_user(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let select = Params::parse(q.as_deref().unwrap_or(""))
        .get("$select")
        .map(str::to_string);
    let base = link_base(&headers);
    let now = app.now();
    let h2 = headers.clone();
    call(&app, "graph.users.get", &headers, Needs::Graph {
        any_of: USER_READ,
        code: "Authorization_RequestDenied",
        message: "Insufficient privileges to complete the operation.",
    }, |p| {
        let target = if id.eq_ignore_ascii_case(&p.user.id) || id.eq_ignore_ascii_case(&p.user.email) || id == "me" {
            Some(p.user.clone())
        } else {
            app.read(|s| s.users.iter().find(|u| u.provider == Provider::Microsoft && u.org == p.user.org && (u.id == id || u.email.eq_ignore_ascii_case(&id))).cloned())
        };
        match target {
            Some(u) if u.email == p.user.email || p.scopes.iter().any(|s| s != "User.Read" && USER_READ.contains(&s.as_str())) => {
                json_response(StatusCode::OK, user_json(&u, &base, select.as_deref()))
            }
            Some(_) => graph_error(StatusCode::FORBIDDEN, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.", &h2, now),
            None => graph_error(StatusCode::NOT_FOUND, "Request_ResourceNotFound", &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."), &h2, now),
        }
    })
    .await
}

/// Gmail's `{userId}`: `me` or the caller's own address.
pub(crate) fn gmail_user_ok(p: &Principal, user_id: &str) -> Result<(), Response> {
    if user_id == "me" || user_id.eq_ignore_ascii_case(&p.user.email) {
        Ok(())
    } else {
        Err(google_api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "global",
            &format!("Delegation denied for {}", p.user.email),
        ))
    }
}

async fn gmail_profile(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(
        &app,
        "gmail.users.getProfile",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let (messages, threads, history_id) =
                app.mail(|m| match m.by_owner.get(&p.user.email) {
                    Some(mb) => (mb.live().count(), mb.thread_count(), mb.history_id),
                    None => (0, 0, p.user.history_id),
                });
            json_response(
                StatusCode::OK,
                json!({
                    "emailAddress": p.user.email,
                    "messagesTotal": messages,
                    "threadsTotal": threads,
                    "historyId": history_id.to_string(),
                }),
            )
        },
    )
    .await
}

async fn calendar_get(
    State(app): State<App>,
    Path(calendar_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(
        &app,
        "calendar.calendars.get",
        &headers,
        Needs::Google,
        |p| {
            if calendar_id != "primary" && !calendar_id.eq_ignore_ascii_case(&p.user.email) {
                return google_api_error(StatusCode::NOT_FOUND, "notFound", "global", "Not Found");
            }
            json_response(
                StatusCode::OK,
                json!({
                    "kind": "calendar#calendar",
                    "etag": format!("\"{}\"", p.user.history_id),
                    "id": p.user.email,
                    "summary": p.user.email,
                    "timeZone": "UTC",
                    "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
                }),
            )
        },
    )
    .await
}

/// Answers unknown paths in the shape of the host they look like.
pub async fn fallback(State(app): State<App>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/v1.0/") {
        let seg = path
            .trim_start_matches("/v1.0/")
            .split('/')
            .next_back()
            .unwrap_or_default()
            .to_string();
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{seg}'."),
            req.headers(),
            app.now(),
        );
    }
    if path.starts_with("/gmail/") || path.starts_with("/calendar/") {
        return google_api_error(StatusCode::NOT_FOUND, "notFound", "global", "Not Found");
    }
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}
