//! Google OAuth 2.0 web-server flow: `/o/oauth2/v2/auth`, `/token`, `/revoke`, `/tokeninfo` (PROVIDERS.md §4).

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::{App, Pending, PendingKind};
use crate::flow::{
    Mode, deliver, fault_gate, finish_pending, pending, set_pending_user, store_pending,
};
use crate::jwt;
use crate::pages::{self, ConsentView, PickUser, ScopeItem};
use crate::scenario::Provider;
use crate::scopes;
use crate::state::{AccessToken, Client, Code, RefreshToken, User};
use crate::wire::{Params, basic_auth, google_oauth_error, json_response, random_token};

/// Routes of `accounts.google.com` and `oauth2.googleapis.com`.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/o/oauth2/v2/auth", get(auth))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/tokeninfo", get(tokeninfo).post(tokeninfo))
}

fn page(status: StatusCode, title: &str, message: &str, code: &str) -> Response {
    pages::error(Provider::Google, status, title, message, code, None)
}

/// Sign-in scopes first (openid, email, profile), then the rest in order.
fn ordered(scopes: impl IntoIterator<Item = String>) -> Vec<String> {
    let set: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for s in scopes {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    };
    let mut out: Vec<String> = set
        .iter()
        .filter(|s| scopes::google_is_sign_in(s))
        .cloned()
        .collect();
    out.sort_by_key(|s| match s.as_str() {
        "openid" => 0,
        s if s.ends_with("userinfo.email") => 1,
        _ => 2,
    });
    out.extend(
        set.iter()
            .filter(|s| !scopes::google_is_sign_in(s))
            .cloned(),
    );
    out
}

async fn auth(State(app): State<App>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    app.count("google.auth", None);
    if let Some(r) = fault_gate(&app, "google.auth", None, &headers).await {
        return r;
    }
    let p = Params::parse(q.as_deref().unwrap_or(""));
    let now = app.now();
    let Some(client_id) = p.get("client_id") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Access blocked: Authorization Error",
            "Missing required parameter: client_id",
            "Error 400: invalid_request",
        );
    };
    let Some(client) = app.read(|s| {
        s.client(client_id)
            .filter(|c| c.provider == Provider::Google)
            .cloned()
    }) else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Access blocked: Authorization Error",
            "The OAuth client was not found.",
            "Error 401: invalid_client",
        );
    };
    let Some(redirect_uri) = p.get("redirect_uri").map(str::to_string) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Access blocked: This app's request is invalid",
            "Missing required parameter: redirect_uri",
            "Error 400: invalid_request",
        );
    };
    if !client.redirect_uris.contains(&redirect_uri) {
        return page(
            StatusCode::BAD_REQUEST,
            "Access blocked: This app's request is invalid",
            &format!(
                "You can't sign in because {} sent an invalid request. If you are a developer of {}, see error details.",
                client.name, client.name
            ),
            &format!("Error 400: redirect_uri_mismatch (redirect_uri={redirect_uri})"),
        );
    }
    let state = p.get("state");
    let fail = |error: &str| {
        let mut e = Params::default();
        e.push("error", error);
        if let Some(s) = state {
            e.push("state", s);
        }
        deliver(&redirect_uri, Mode::Query, &e)
    };
    if p.get("response_type") != Some("code") {
        return match p.get("response_type") {
            None => page(
                StatusCode::BAD_REQUEST,
                "Access blocked: This app's request is invalid",
                "Required parameter is missing: response_type",
                "Error 400: invalid_request",
            ),
            Some(_) => fail("unsupported_response_type"),
        };
    }
    let Some(raw_scope) = p.get("scope") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Access blocked: This app's request is invalid",
            "Missing required parameter: scope",
            "Error 400: invalid_request",
        );
    };
    let requested: Vec<String> = ordered(
        scopes::split(raw_scope)
            .iter()
            .map(|s| scopes::google_normalize(s)),
    );
    if let Some(bad) = requested.iter().find(|s| !scopes::google_known(s)) {
        return page(
            StatusCode::BAD_REQUEST,
            "Access blocked: This app's request is invalid",
            &format!("Some requested scopes were invalid. {{invalid=[{bad}]}}"),
            "Error 400: invalid_scope",
        );
    }
    if p.get("code_challenge").is_some() {
        if !app.read(|s| s.settings.google_accept_pkce) {
            return page(
                StatusCode::BAD_REQUEST,
                "Access blocked: This app's request is invalid",
                "code_challenge is not allowed for this client type.",
                "Error 400: invalid_request",
            );
        }
        if let Some(m) = p.get("code_challenge_method")
            && m != "S256"
            && m != "plain"
        {
            return page(
                StatusCode::BAD_REQUEST,
                "Access blocked: This app's request is invalid",
                "Invalid code_challenge_method value.",
                "Error 400: invalid_request",
            );
        }
    }
    let id = store_pending(
        &app,
        Pending {
            kind: PendingKind::GoogleAuth,
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            params: p.clone(),
            tenant_id: None,
            scopes: requested,
            user: None,
            created_at: now,
        },
    );
    let prompt = p.get("prompt").unwrap_or_default().to_string();
    let hinted = p.get("login_hint").and_then(|h| {
        app.read(|s| {
            s.user(h)
                .filter(|u| u.provider == Provider::Google)
                .map(|u| u.email.clone())
        })
    });
    if prompt.split(' ').any(|x| x == "none") {
        let Some(u) = hinted else {
            finish_pending(&app, &id);
            return fail("login_required");
        };
        let all_granted = app.read(|s| {
            let have = s
                .grant_for(&u, &client.client_id)
                .map(|g| g.scopes.clone())
                .unwrap_or_default();
            pending(&app, &id).is_some_and(|pd| pd.scopes.iter().all(|x| have.contains(x)))
        });
        if !all_granted {
            finish_pending(&app, &id);
            return fail("consent_required");
        }
        return after_account(&app, &id, &u);
    }
    if let Some(u) = hinted
        && !prompt.split(' ').any(|x| x == "select_account")
    {
        return after_account(&app, &id, &u);
    }
    let hd = p.get("hd").map(str::to_ascii_lowercase);
    let users: Vec<PickUser> = app.read(|s| {
        s.users
            .iter()
            .filter(|u| u.provider == Provider::Google)
            .filter(|u| hd.as_ref().is_none_or(|d| d == "*" || u.org == *d))
            .map(|u| PickUser {
                email: u.email.clone(),
                name: u.display_name.clone(),
            })
            .collect()
    });
    pages::picker(
        Provider::Google,
        &client.name,
        &format!("/_sandbox/ui/{id}/account"),
        &format!("/_sandbox/ui/{id}/cancel"),
        &users,
    )
}

fn lookup(app: &App, pd: &Pending, email: &str) -> Option<(Client, User)> {
    app.read(|s| {
        let c = s.client(&pd.client_id)?.clone();
        let u = s
            .user(email)
            .filter(|u| u.provider == Provider::Google)?
            .clone();
        Some((c, u))
    })
}

/// The account is picked: policy checks, then consent or straight back when everything was granted before.
pub fn after_account(app: &App, id: &str, email: &str) -> Response {
    let Some(pd) = pending(app, id) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in request has expired",
            "Go back to the app and start again.",
            "",
        );
    };
    let Some((client, user)) = lookup(app, &pd, email) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Couldn't find your Google Account",
            "Try another account.",
            "",
        );
    };
    set_pending_user(app, id, &user.email);
    let blocked = app.read(|s| {
        s.domain(&user.org)
            .is_some_and(|d| d.policy.blocked_clients.contains(&client.client_id))
    });
    if blocked {
        return page(
            StatusCode::FORBIDDEN,
            &format!("Access blocked: {}'s admin has restricted access", user.org),
            &format!(
                "{} is not allowed to access your Google Account data. Contact your administrator for help.",
                client.name
            ),
            "Error 400: admin_policy_enforced",
        );
    }
    let prior = app.read(|s| {
        s.grant_for(&user.email, &client.client_id)
            .map(|g| g.scopes.clone())
            .unwrap_or_default()
    });
    let prompt_consent = pd
        .params
        .get("prompt")
        .is_some_and(|p| p.split(' ').any(|x| x == "consent"));
    if pd.scopes.iter().all(|s| prior.contains(s)) && !prompt_consent {
        finish_pending(app, id);
        let granted = pd.scopes.clone();
        return issue_code(app, &pd, &client, &user, granted, false);
    }
    let sign_in = pd
        .scopes
        .iter()
        .filter(|s| scopes::google_is_sign_in(s) && s.as_str() != "openid")
        .map(|s| scopes::describe(s))
        .collect();
    let items: Vec<ScopeItem> = pd
        .scopes
        .iter()
        .filter(|s| !scopes::google_is_sign_in(s))
        .map(|s| ScopeItem {
            value: s.clone(),
            text: scopes::describe(s),
        })
        .collect();
    let checkboxes = items.len() > 1 && app.read(|s| s.settings.google_granular_consent);
    pages::consent(ConsentView {
        provider: Provider::Google,
        app_name: &client.name,
        user_email: &user.email,
        action: &format!("/_sandbox/ui/{id}/consent"),
        sign_in,
        scopes: items,
        checkboxes,
        admin_option: false,
        for_organization: None,
    })
}

/// The consent page was answered (or cancelled).
pub fn after_consent(app: &App, id: &str, pd: &Pending, accepted: bool, form: &Params) -> Response {
    finish_pending(app, id);
    if !accepted {
        let mut e = Params::default();
        e.push("error", "access_denied");
        if let Some(s) = pd.params.get("state") {
            e.push("state", s);
        }
        return deliver(&pd.redirect_uri, Mode::Query, &e);
    }
    let Some(email) = pd.user.clone() else {
        return page(
            StatusCode::BAD_REQUEST,
            "No account",
            "Choose an account first.",
            "",
        );
    };
    let Some((client, user)) = lookup(app, pd, &email) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No account",
            "Choose an account first.",
            "",
        );
    };
    let non_sign_in: Vec<&String> = pd
        .scopes
        .iter()
        .filter(|s| !scopes::google_is_sign_in(s))
        .collect();
    let checkboxes = non_sign_in.len() > 1 && app.read(|s| s.settings.google_granular_consent);
    let ticked: BTreeSet<&str> = form.all("scope").into_iter().collect();
    let select_all = form.get("select_all") == Some("1");
    let granted: Vec<String> = pd
        .scopes
        .iter()
        .filter(|s| {
            scopes::google_is_sign_in(s) || !checkboxes || select_all || ticked.contains(s.as_str())
        })
        .cloned()
        .collect();
    issue_code(app, pd, &client, &user, granted, true)
}

fn issue_code(
    app: &App,
    pd: &Pending,
    client: &Client,
    user: &User,
    granted: Vec<String>,
    consent_shown: bool,
) -> Response {
    let now = app.now();
    let include_granted = pd.params.get("include_granted_scopes") == Some("true");
    let offline = pd.params.get("access_type") == Some("offline");
    let prompt_consent = pd
        .params
        .get("prompt")
        .is_some_and(|p| p.split(' ').any(|x| x == "consent"));
    let lifetime = app.read(|s| s.settings.code_lifetime_secs);
    let code = format!("4/0A{}", random_token(48));
    let token_scopes = app.write(|s| {
        s.prune(now);
        let g = s.grant_for_mut(Provider::Google, &user.email, &client.client_id, now);
        let before = g.scopes.clone();
        let first = !g.refresh_token_issued;
        g.scopes.extend(granted.iter().cloned());
        let token_scopes = if include_granted {
            ordered(before.into_iter().chain(granted.iter().cloned()))
        } else {
            ordered(granted.iter().cloned())
        };
        let challenge = pd.params.get("code_challenge").map(|c| {
            (
                c.to_string(),
                pd.params
                    .get("code_challenge_method")
                    .unwrap_or("plain")
                    .to_string(),
            )
        });
        s.codes.insert(
            code.clone(),
            Code {
                provider: Provider::Google,
                user: user.email.clone(),
                client_id: client.client_id.clone(),
                redirect_uri: pd.redirect_uri.clone(),
                scopes: token_scopes.clone(),
                challenge,
                nonce: pd.params.get("nonce").map(str::to_string),
                tenant_id: None,
                expires_at: now + lifetime,
                redeemed: false,
                offline: offline && (first || prompt_consent),
            },
        );
        token_scopes
    });
    let mut out = Params::default();
    if let Some(s) = pd.params.get("state") {
        out.push("state", s);
    }
    if app.read(|s| s.settings.google_redirect_iss) {
        out.push("iss", "https://accounts.google.com");
    }
    out.push("code", &code);
    out.push("scope", &token_scopes.join(" "));
    out.push("authuser", "0");
    out.push("hd", &user.org);
    out.push("prompt", if consent_shown { "consent" } else { "none" });
    deliver(&pd.redirect_uri, Mode::Query, &out)
}

fn revoked() -> Response {
    google_oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "Token has been expired or revoked.",
    )
}

fn bad_request() -> Response {
    google_oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request")
}

async fn token(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("google.token", None);
    let p = Params::parse(&String::from_utf8_lossy(&body));
    let basic = basic_auth(&headers);
    let client_id = p
        .get("client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let secret = p
        .get("client_secret")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|b| b.1.clone()));
    let Some(client_id) = client_id else {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Could not determine client ID from request.",
        );
    };
    let Some(client) = app.read(|s| {
        s.client(&client_id)
            .filter(|c| c.provider == Provider::Google)
            .cloned()
    }) else {
        return google_oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    if secret.as_deref() != Some(client.client_secret.as_str()) {
        return google_oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
    }
    match p.get("grant_type") {
        Some("authorization_code") => redeem(&app, &client, &p, &headers).await,
        Some("refresh_token") => refresh(&app, &client, &p, &headers).await,
        Some(other) => google_oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
        None => google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: grant_type",
        ),
    }
}

async fn redeem(app: &App, client: &Client, p: &Params, headers: &HeaderMap) -> Response {
    let now = app.now();
    let Some(code_value) = p.get("code") else {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: code",
        );
    };
    let Some(code) = app.read(|s| {
        s.codes
            .get(code_value)
            .filter(|c| c.provider == Provider::Google)
            .cloned()
    }) else {
        return bad_request();
    };
    if let Some(r) = fault_gate(app, "google.token", Some(&code.user), headers).await {
        return r;
    }
    app.count("google.token.authorization_code", Some(&code.user));
    if code.client_id != client.client_id || code.redeemed || code.expires_at <= now {
        return bad_request();
    }
    if p.get("redirect_uri") != Some(code.redirect_uri.as_str()) {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            "Bad Request",
        );
    }
    if let Some((challenge, method)) = &code.challenge {
        match p.get("code_verifier") {
            None => {
                return google_oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Missing code verifier.",
                );
            }
            Some(v) if !crate::wire::pkce_matches(challenge, method, v) => {
                return google_oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid code verifier.",
                );
            }
            Some(_) => {}
        }
    }
    let Some(user) = app.read(|s| s.user(&code.user).cloned()) else {
        return bad_request();
    };
    let grant_alive = app.write(|s| {
        if let Some(c) = s.codes.get_mut(code_value) {
            c.redeemed = true;
        }
        match s
            .grants
            .values_mut()
            .find(|g| g.user == code.user && g.client_id == code.client_id)
        {
            Some(g) => {
                if code.offline {
                    g.refresh_token_issued = true;
                }
                true
            }
            None => false,
        }
    });
    if !grant_alive {
        return revoked();
    }
    issue(
        app,
        client,
        &user,
        code.scopes.clone(),
        code.offline,
        code.nonce.as_deref(),
    )
}

async fn refresh(app: &App, client: &Client, p: &Params, headers: &HeaderMap) -> Response {
    let now = app.now();
    let Some(rt_value) = p.get("refresh_token") else {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    let Some(rt) = app.read(|s| {
        s.refresh_tokens
            .get(rt_value)
            .filter(|t| t.provider == Provider::Google)
            .cloned()
    }) else {
        return bad_request();
    };
    if let Some(r) = fault_gate(app, "google.token", Some(&rt.user), headers).await {
        return r;
    }
    app.count("google.token.refresh_token", Some(&rt.user));
    if rt.client_id != client.client_id {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "Unauthorized",
        );
    }
    let settings = app.read(|s| s.settings.clone());
    let (user, grant) = app.read(|s| {
        (
            s.user(&rt.user).cloned(),
            s.grant_for(&rt.user, &rt.client_id).cloned(),
        )
    });
    let (Some(user), Some(grant)) = (user, grant) else {
        return revoked();
    };
    let dead = rt.revoked
        || rt.generation < user.token_generation
        || now - rt.last_used_at > settings.google_refresh_idle_secs
        || (client.testing_mode
            && now - rt.issued_at > settings.google_testing_refresh_lifetime_secs);
    if dead {
        return revoked();
    }
    app.write(|s| {
        if let Some(t) = s.refresh_tokens.get_mut(rt_value) {
            t.last_used_at = now;
        }
    });
    let scopes: Vec<String> = rt
        .scopes
        .iter()
        .filter(|s| grant.scopes.contains(*s))
        .cloned()
        .collect();
    let mut r = issue_body(app, client, &user, scopes, None, None);
    r.as_object_mut().map(|m| m.remove("refresh_token"));
    json_response(StatusCode::OK, r)
}

fn issue(
    app: &App,
    client: &Client,
    user: &User,
    scopes: Vec<String>,
    offline: bool,
    nonce: Option<&str>,
) -> Response {
    let now = app.now();
    let refresh_token = offline.then(|| format!("1//0{}", random_token(64)));
    if let Some(r) = &refresh_token {
        app.write(|s| {
            s.refresh_tokens.insert(
                r.clone(),
                RefreshToken {
                    provider: Provider::Google,
                    user: user.email.clone(),
                    client_id: client.client_id.clone(),
                    scopes: scopes.clone(),
                    tenant_id: None,
                    issued_at: now,
                    last_used_at: now,
                    generation: user.token_generation,
                    revoked: false,
                },
            );
        });
    }
    json_response(
        StatusCode::OK,
        issue_body(app, client, user, scopes, refresh_token, nonce),
    )
}

fn issue_body(
    app: &App,
    client: &Client,
    user: &User,
    scopes: Vec<String>,
    refresh_token: Option<String>,
    nonce: Option<&str>,
) -> Value {
    let now = app.now();
    let lifetime = app.read(|s| s.settings.google_access_token_lifetime_secs);
    let access = format!("ya29.a0{}", random_token(96));
    app.write(|s| {
        s.access_tokens.insert(
            access.clone(),
            AccessToken {
                provider: Provider::Google,
                user: user.email.clone(),
                client_id: client.client_id.clone(),
                scopes: scopes.clone(),
                audience: None,
                issued_at: now,
                expires_at: now + lifetime,
                revoked: false,
            },
        );
    });
    let mut body = json!({"access_token": access, "expires_in": lifetime});
    if let Some(r) = refresh_token {
        body["refresh_token"] = json!(r);
    }
    body["scope"] = json!(scopes.join(" "));
    body["token_type"] = json!("Bearer");
    if scopes.iter().any(|s| s == "openid") {
        body["id_token"] = json!(id_token(client, user, &scopes, &access, nonce, now));
    }
    body
}

fn id_token(
    client: &Client,
    user: &User,
    scopes: &[String],
    access: &str,
    nonce: Option<&str>,
    now: i64,
) -> String {
    let mut c = json!({
        "iss": "https://accounts.google.com",
        "azp": client.client_id,
        "aud": client.client_id,
        "sub": user.id,
        "hd": user.org,
        "at_hash": jwt::at_hash(access),
        "iat": now,
        "exp": now + 3600,
    });
    let m = c.as_object_mut().expect("object");
    if scopes.iter().any(|s| s.ends_with("userinfo.email")) {
        m.insert("email".into(), Value::from(user.email.clone()));
        m.insert("email_verified".into(), Value::from(true));
    }
    if scopes.iter().any(|s| s.ends_with("userinfo.profile")) {
        m.insert("name".into(), Value::from(user.display_name.clone()));
        m.insert("given_name".into(), Value::from(user.given_name.clone()));
        m.insert("family_name".into(), Value::from(user.surname.clone()));
    }
    if let Some(n) = nonce {
        m.insert("nonce".into(), Value::from(n));
    }
    jwt::sign_hs256(&c, &client.client_secret)
}

async fn revoke(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.count("google.revoke", None);
    if let Some(r) = fault_gate(&app, "google.revoke", None, &headers).await {
        return r;
    }
    let form = Params::parse(&String::from_utf8_lossy(&body));
    let query = Params::parse(q.as_deref().unwrap_or(""));
    let Some(token) = form
        .get("token")
        .or_else(|| query.get("token"))
        .map(str::to_string)
    else {
        return google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: token",
        );
    };
    let done = app.write(|s| {
        let owner = s
            .refresh_tokens
            .get(&token)
            .filter(|t| t.provider == Provider::Google && !t.revoked)
            .map(|t| (t.user.clone(), t.client_id.clone()))
            .or_else(|| {
                s.access_tokens
                    .get(&token)
                    .filter(|t| t.provider == Provider::Google && !t.revoked)
                    .map(|t| (t.user.clone(), t.client_id.clone()))
            });
        match owner {
            Some((u, c)) => {
                s.revoke_grant(&u, &c);
                true
            }
            None => false,
        }
    });
    if done {
        (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            "{}",
        )
            .into_response()
    } else {
        google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "Token expired or revoked",
        )
    }
}

async fn tokeninfo(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.count("google.tokeninfo", None);
    if let Some(r) = fault_gate(&app, "google.tokeninfo", None, &headers).await {
        return r;
    }
    let now = app.now();
    let query = Params::parse(q.as_deref().unwrap_or(""));
    let form = Params::parse(&String::from_utf8_lossy(&body));
    let token = query
        .get("access_token")
        .or_else(|| form.get("access_token"))
        .map(str::to_string);
    let info = token.and_then(|t| {
        app.read(|s| {
            let at = s
                .access_tokens
                .get(&t)
                .filter(|a| a.provider == Provider::Google && !a.revoked && a.expires_at > now)?;
            let user = s.user(&at.user)?;
            let offline = s
                .refresh_tokens
                .values()
                .any(|r| r.user == at.user && r.client_id == at.client_id && !r.revoked);
            Some((at.clone(), user.clone(), offline))
        })
    });
    let Some((at, user, offline)) = info else {
        return google_oauth_error(StatusCode::BAD_REQUEST, "invalid_token", "Invalid Value");
    };
    let mut body = json!({
        "azp": at.client_id,
        "aud": at.client_id,
        "sub": user.id,
        "scope": at.scopes.join(" "),
        "exp": (at.expires_at).to_string(),
        "expires_in": (at.expires_at - now).to_string(),
    });
    if at.scopes.iter().any(|s| s.ends_with("userinfo.email")) {
        body["email"] = json!(user.email);
        body["email_verified"] = json!("true");
    }
    body["access_type"] = json!(if offline { "offline" } else { "online" });
    json_response(StatusCode::OK, body)
}
