//! Microsoft identity platform v2.0: `/{tenant}/oauth2/v2.0/authorize`, `/{tenant}/oauth2/v2.0/token` and
//! `/{tenant}/v2.0/adminconsent` (PROVIDERS.md §1).

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::{App, Pending, PendingKind};
use crate::flow::{
    Mode, deliver, fault_gate, finish_pending, pending, set_pending_user, store_pending,
};
use crate::jwt;
use crate::pages::{self, ConsentView, PickUser, ScopeItem};
use crate::scenario::{MsScopeFormat, Provider};
use crate::scopes::{self, GRAPH, MS_OIDC};
use crate::state::{AccessToken, Client, Code, RefreshToken, State as St, Tenant, User};
use crate::wire::{
    Params, basic_auth, json_response, ms_identity_error, random_guid, random_token,
};

/// Routes of `login.microsoftonline.com`.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/v2.0/adminconsent", get(admin_consent))
}

/// What the `{tenant}` path segment names.
enum TenantPath {
    /// `common` / `organizations`: any work account.
    Any,
    /// A specific tenant (GUID).
    One(String),
}

fn resolve_tenant(app: &App, seg: &str) -> Result<TenantPath, Response> {
    match seg.to_ascii_lowercase().as_str() {
        "common" | "organizations" => Ok(TenantPath::Any),
        "consumers" => Err(page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "This sandbox has no personal Microsoft accounts.",
            9002331,
            "Application is configured for use by Microsoft Account users only. Please use the /consumers endpoint to serve this request.",
        )),
        other => app
            .read(|s| s.tenant(other).map(|t| t.id.clone()))
            .map(TenantPath::One)
            .ok_or_else(|| {
                page(
                    StatusCode::BAD_REQUEST,
                    "Sorry, but we're having trouble signing you in.",
                    "The tenant in the sign-in address does not exist.",
                    90002,
                    &format!("Tenant '{other}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
                )
            }),
    }
}

fn page(status: StatusCode, title: &str, message: &str, code: u32, detail: &str) -> Response {
    pages::error(
        Provider::Microsoft,
        status,
        title,
        message,
        &format!("AADSTS{code}: {detail}"),
        None,
    )
}

/// Client and redirect URI checks shared by authorize and adminconsent; their failures stay on the page.
fn check_client(app: &App, p: &Params, tenant_seg: &str) -> Result<(Client, String), Response> {
    let Some(client_id) = p.get("client_id") else {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "The request is missing the application identifier.",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let Some(client) = app.read(|s| {
        s.client(client_id)
            .filter(|c| c.provider == Provider::Microsoft)
            .cloned()
    }) else {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "The application was not found.",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_seg}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    };
    let Some(ru) = p.get("redirect_uri") else {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "The request is missing the redirect URI.",
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        ));
    };
    if !client.redirect_uris.iter().any(|r| r == ru) {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "The redirect URI does not match the application's registration.",
            50011,
            &format!(
                "The redirect URI '{ru}' specified in the request does not match the redirect URIs configured for the application '{}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal.",
                client.client_id
            ),
        ));
    }
    Ok((client, ru.to_string()))
}

/// Requested scopes, normalized, with `/.default` expanded to the registration's permissions.
fn requested_scopes(client: &Client, raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes::split(raw) {
        let n = scopes::ms_normalize(&s);
        let expanded = if n == ".default" || n.ends_with("/.default") {
            client.app_scopes.clone()
        } else {
            vec![n]
        };
        for e in expanded {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    out
}

fn resource_scopes(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| !MS_OIDC.contains(&s.as_str()))
        .cloned()
        .collect()
}

fn error_params(error: &str, code: u32, message: &str, state: Option<&str>, now: i64) -> Params {
    let mut p = Params::default();
    p.push("error", error);
    p.push(
        "error_description",
        &format!(
            "AADSTS{code}: {message}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            random_guid(),
            random_guid(),
            crate::wire::ms_timestamp(now)
        ),
    );
    if let Some(s) = state {
        p.push("state", s);
    }
    p
}

async fn authorize(
    State(app): State<App>,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    app.count("ms.authorize", None);
    if let Some(r) = fault_gate(&app, "ms.authorize", None, &headers).await {
        return r;
    }
    let p = Params::parse(q.as_deref().unwrap_or(""));
    let tenant_path = match resolve_tenant(&app, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (client, redirect_uri) = match check_client(&app, &p, &tenant) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = app.now();
    let state = p.get("state");
    let Some(mode) = Mode::parse(p.get("response_mode")) else {
        let e = error_params(
            "invalid_request",
            900144,
            "Invalid response_mode.",
            state,
            now,
        );
        return deliver(&redirect_uri, Mode::Query, &e);
    };
    let fail = |error: &str, code: u32, msg: &str| {
        deliver(
            &redirect_uri,
            mode,
            &error_params(error, code, msg, state, now),
        )
    };
    match p.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return fail(
                "unsupported_response_type",
                700054,
                &format!("response_type '{other}' is not enabled for the application."),
            );
        }
        None => {
            return fail(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'response_type'.",
            );
        }
    }
    let Some(raw_scope) = p.get("scope") else {
        return fail(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    if let Some(m) = p.get("code_challenge_method")
        && m != "S256"
        && m != "plain"
    {
        return fail(
            "invalid_request",
            501491,
            "Invalid code_challenge_method. Use 'S256' or 'plain'.",
        );
    }
    if let Some(c) = p.get("code_challenge")
        && !(43..=128).contains(&c.len())
    {
        return fail(
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        );
    }
    let requested = requested_scopes(&client, raw_scope);
    if resource_scopes(&requested).is_empty() && !requested.iter().any(|s| s == "openid") {
        return fail(
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{raw_scope}' is not valid."
            ),
        );
    }
    let tenant_id = match &tenant_path {
        TenantPath::Any => None,
        TenantPath::One(id) => Some(id.clone()),
    };
    let id = store_pending(
        &app,
        Pending {
            kind: PendingKind::MsAuthorize,
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            params: p.clone(),
            tenant_id: tenant_id.clone(),
            scopes: requested,
            user: None,
            created_at: now,
        },
    );
    let prompt = p.get("prompt").unwrap_or_default();
    let hinted = p.get("login_hint").and_then(|h| {
        app.read(|s| {
            s.user(h)
                .filter(|u| u.provider == Provider::Microsoft)
                .map(|u| u.email.clone())
        })
    });
    if prompt == "none" {
        return match hinted {
            Some(u) => silent(&app, &id, &u),
            None => {
                finish_pending(&app, &id);
                fail(
                    "login_required",
                    50058,
                    "A silent sign-in request was sent but no user is signed in.",
                )
            }
        };
    }
    if let Some(u) = hinted
        && prompt != "select_account"
        && prompt != "login"
    {
        return after_account(&app, &id, &u);
    }
    picker(
        &app,
        &id,
        &client,
        tenant_id.as_deref(),
        p.get("domain_hint"),
    )
}

fn picker(
    app: &App,
    id: &str,
    client: &Client,
    tenant_id: Option<&str>,
    domain_hint: Option<&str>,
) -> Response {
    let users: Vec<PickUser> = app.read(|s| {
        s.users
            .iter()
            .filter(|u| u.provider == Provider::Microsoft)
            .filter(|u| tenant_id.is_none_or(|t| u.org == t))
            .filter(|u| {
                domain_hint
                    .is_none_or(|d| u.email.ends_with(&format!("@{}", d.to_ascii_lowercase())))
            })
            .map(|u| PickUser {
                email: u.email.clone(),
                name: u.display_name.clone(),
            })
            .collect()
    });
    pages::picker(
        Provider::Microsoft,
        &client.name,
        &format!("/_sandbox/ui/{id}/account"),
        &format!("/_sandbox/ui/{id}/cancel"),
        &users,
    )
}

/// Tenant and assignment checks once the account is known. Errors are shown on the page.
fn check_user(
    st: &St,
    pd: &Pending,
    client: &Client,
    user: &User,
) -> Result<Tenant, (u32, String, String)> {
    let tenant = st.tenant(&user.org).cloned().ok_or_else(|| {
        (
            90002,
            "Tenant not found.".to_string(),
            "We couldn't find the account's organization.".to_string(),
        )
    })?;
    if let Some(t) = &pd.tenant_id
        && *t != user.org
    {
        let name = st.tenant(t).map(|x| x.name.clone()).unwrap_or_default();
        return Err((
            50020,
            format!(
                "User account '{}' from identity provider 'https://sts.windows.net/{}/' does not exist in tenant '{name}' and cannot access the application '{}'({}) in that tenant. The account needs to be added as an external user in the tenant first. Sign out and sign in again with a different Azure Active Directory user account.",
                user.email, user.org, client.client_id, client.name
            ),
            "This account does not belong to the organization the app asked for.".to_string(),
        ));
    }
    if let Some(home) = &client.home_tenant
        && *home != user.org
    {
        return Err((
            700016,
            format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                client.client_id, tenant.name
            ),
            "The application is not available in your organization.".to_string(),
        ));
    }
    if tenant.policy.assignment_required
        && !tenant
            .policy
            .assignments
            .get(&client.client_id)
            .is_some_and(|set| set.contains(&user.email))
    {
        return Err((
            50105,
            format!(
                "Your administrator has configured the application {} ('{}') to block users unless they are specifically granted ('assigned') access to the application. The signed in user '{}' is blocked because they are not a direct member of a group with access, nor had access directly assigned by an administrator. Please contact your administrator to assign access to this application.",
                client.name, client.client_id, user.email
            ),
            "Your administrator hasn't given you access to this application.".to_string(),
        ));
    }
    Ok(tenant)
}

fn consented(st: &St, tenant: &Tenant, user: &str, client_id: &str) -> BTreeSet<String> {
    let mut c: BTreeSet<String> = st
        .grant_for(user, client_id)
        .map(|g| g.scopes.clone())
        .unwrap_or_default();
    if let Some(a) = tenant.admin_consents.get(client_id) {
        c.extend(a.iter().cloned());
    }
    c
}

fn lookup(app: &App, pd: &Pending, email: &str) -> Option<(Client, User)> {
    app.read(|s| {
        let c = s.client(&pd.client_id)?.clone();
        let u = s
            .user(email)
            .filter(|u| u.provider == Provider::Microsoft)?
            .clone();
        Some((c, u))
    })
}

/// `prompt=none`: issue a code only if nothing needs the user.
fn silent(app: &App, id: &str, email: &str) -> Response {
    let Some(pd) = pending(app, id) else {
        return page(StatusCode::BAD_REQUEST, "Expired", "Start again.", 0, "");
    };
    finish_pending(app, id);
    let now = app.now();
    let state = pd.params.get("state");
    let mode = Mode::parse(pd.params.get("response_mode")).unwrap_or(Mode::Query);
    let Some((client, user)) = lookup(app, &pd, email) else {
        return deliver(
            &pd.redirect_uri,
            mode,
            &error_params(
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
                state,
                now,
            ),
        );
    };
    let checked = app.read(|s| {
        check_user(s, &pd, &client, &user)
            .map(|t| (consented(s, &t, &user.email, &client.client_id), t))
    });
    match checked {
        Err((code, msg, _)) => deliver(
            &pd.redirect_uri,
            mode,
            &error_params("interaction_required", code, &msg, state, now),
        ),
        Ok((have, _)) if !resource_scopes(&pd.scopes).iter().all(|s| have.contains(s)) => deliver(
            &pd.redirect_uri,
            mode,
            &error_params(
                "consent_required",
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.",
                    client.client_id, client.name
                ),
                state,
                now,
            ),
        ),
        Ok(_) => issue_code(app, &pd, &user),
    }
}

/// The account is picked: check policies, then show consent, "Need admin approval", or go straight back.
pub fn after_account(app: &App, id: &str, email: &str) -> Response {
    let Some(pd) = pending(app, id) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in request has expired",
            "Go back to the app and start again.",
            0,
            "",
        );
    };
    let Some((client, user)) = lookup(app, &pd, email) else {
        return page(
            StatusCode::BAD_REQUEST,
            "We couldn't find an account with that username.",
            "Try another account.",
            50034,
            &format!("The user account {email} does not exist in the directory."),
        );
    };
    set_pending_user(app, id, &user.email);
    let checked = app.read(|s| {
        check_user(s, &pd, &client, &user)
            .map(|t| (consented(s, &t, &user.email, &client.client_id), t))
    });
    let (have, tenant) = match checked {
        Ok(x) => x,
        Err((code, detail, message)) => {
            let title = if code == 50105 {
                "Your administrator has not given you access to this application"
            } else {
                "Sorry, but we're having trouble signing you in."
            };
            return page(StatusCode::BAD_REQUEST, title, &message, code, &detail);
        }
    };
    let needed = resource_scopes(&pd.scopes);
    if pd.kind == PendingKind::MsAdminConsent {
        if !user.admin {
            return pages::error(
                Provider::Microsoft,
                StatusCode::FORBIDDEN,
                "Need admin approval",
                &format!(
                    "{} needs permission to access resources in your organization that only an admin can grant. Sign in with an administrator account to grant consent for your organization.",
                    client.name
                ),
                &format!(
                    "AADSTS90094: The grant requires admin permission. The signed-in user '{}' is not an administrator of '{}'.",
                    user.email, tenant.name
                ),
                Some((
                    &format!("/_sandbox/ui/{id}/cancel"),
                    "Return to the application without granting consent",
                )),
            );
        }
        return consent_page(id, &client, &user, &needed, false, Some(&tenant.name));
    }
    let prompt_consent = pd
        .params
        .get("prompt")
        .is_some_and(|p| p.split(' ').any(|x| x == "consent"));
    if needed.iter().all(|s| have.contains(s)) && !prompt_consent {
        finish_pending(app, id);
        return issue_code(app, &pd, &user);
    }
    if !tenant.policy.user_consent_allowed && !user.admin {
        return pages::error(
            Provider::Microsoft,
            StatusCode::FORBIDDEN,
            "Need admin approval",
            &format!(
                "{} needs permission to access resources in your organization that only an admin can grant. Please ask an admin to grant permission to this app before you can use it.",
                client.name
            ),
            &format!(
                "AADSTS90094: The grant requires admin permission. Tenant '{}' does not allow users to consent to '{}' ({}).",
                tenant.name, client.name, client.client_id
            ),
            Some((
                &format!("/_sandbox/ui/{id}/cancel"),
                "Return to the application without granting consent",
            )),
        );
    }
    consent_page(id, &client, &user, &pd.scopes, user.admin, None)
}

fn consent_page(
    id: &str,
    client: &Client,
    user: &User,
    scopes: &[String],
    admin_option: bool,
    org: Option<&str>,
) -> Response {
    let items = scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .map(|s| ScopeItem {
            value: s.clone(),
            text: scopes::describe(s),
        })
        .collect();
    pages::consent(ConsentView {
        provider: Provider::Microsoft,
        app_name: &client.name,
        user_email: &user.email,
        action: &format!("/_sandbox/ui/{id}/consent"),
        sign_in: Vec::new(),
        scopes: items,
        checkboxes: false,
        admin_option,
        for_organization: org,
    })
}

/// The consent page was answered (or cancelled).
pub fn after_consent(app: &App, id: &str, pd: &Pending, accepted: bool, form: &Params) -> Response {
    finish_pending(app, id);
    let now = app.now();
    let state = pd.params.get("state");
    let mode = Mode::parse(pd.params.get("response_mode")).unwrap_or(Mode::Query);
    let admin_flow = pd.kind == PendingKind::MsAdminConsent;
    if !accepted {
        let mut e = Params::default();
        if admin_flow {
            e.push("admin_consent", "True");
        }
        let ep = error_params(
            "access_denied",
            65004,
            "User declined to consent to access the app.",
            None,
            now,
        );
        e.0.extend(ep.0);
        if !admin_flow && app.read(|s| s.settings.ms_cancel_error_subcode) {
            e.push("error_subcode", "cancel");
        }
        if let Some(s) = state {
            e.push("state", s);
        }
        return deliver(
            &pd.redirect_uri,
            if admin_flow { Mode::Query } else { mode },
            &e,
        );
    }
    let Some(email) = pd.user.clone() else {
        return page(
            StatusCode::BAD_REQUEST,
            "No account",
            "Pick an account first.",
            0,
            "",
        );
    };
    let Some((client, user)) = lookup(app, pd, &email) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No account",
            "Pick an account first.",
            0,
            "",
        );
    };
    let needed: BTreeSet<String> = resource_scopes(&pd.scopes).into_iter().collect();
    if admin_flow {
        app.write(|s| {
            if let Some(t) = s.tenant_mut(&user.org) {
                t.admin_consents
                    .entry(client.client_id.clone())
                    .or_default()
                    .extend(needed.iter().cloned());
            }
        });
        let granted: Vec<String> = pd
            .scopes
            .iter()
            .map(|s| match scopes::ms_resource(s) {
                Some("https://graph.microsoft.com") => format!("{GRAPH}{s}"),
                _ => s.clone(),
            })
            .collect();
        let mut ok = Params::default();
        ok.push("admin_consent", "True");
        ok.push("tenant", &user.org);
        ok.push("scope", &granted.join(" "));
        if let Some(s) = state {
            ok.push("state", s);
        }
        return deliver(&pd.redirect_uri, Mode::Query, &ok);
    }
    let org_consent = user.admin && form.get("org_consent") == Some("1");
    app.write(|s| {
        let g = s.grant_for_mut(Provider::Microsoft, &user.email, &client.client_id, now);
        g.scopes.extend(needed.iter().cloned());
        for o in MS_OIDC {
            if pd.scopes.iter().any(|x| x == o) {
                g.scopes.insert(o.to_string());
            }
        }
        if org_consent && let Some(t) = s.tenant_mut(&user.org) {
            t.admin_consents
                .entry(client.client_id.clone())
                .or_default()
                .extend(needed.iter().cloned());
        }
    });
    issue_code(app, pd, &user)
}

fn issue_code(app: &App, pd: &Pending, user: &User) -> Response {
    let now = app.now();
    let lifetime = app.read(|s| s.settings.code_lifetime_secs);
    let code = format!("0.AX{}", random_token(48));
    let challenge = pd.params.get("code_challenge").map(|c| {
        (
            c.to_string(),
            pd.params
                .get("code_challenge_method")
                .unwrap_or("plain")
                .to_string(),
        )
    });
    app.write(|s| {
        s.prune(now);
        s.codes.insert(
            code.clone(),
            Code {
                provider: Provider::Microsoft,
                user: user.email.clone(),
                client_id: pd.client_id.clone(),
                redirect_uri: pd.redirect_uri.clone(),
                scopes: pd.scopes.clone(),
                challenge,
                nonce: pd.params.get("nonce").map(str::to_string),
                tenant_id: Some(user.org.clone()),
                expires_at: now + lifetime,
                redeemed: false,
                offline: pd.scopes.iter().any(|s| s == "offline_access"),
            },
        );
    });
    let mut out = Params::default();
    out.push("code", &code);
    if let Some(s) = pd.params.get("state") {
        out.push("state", s);
    }
    out.push("session_state", &random_guid());
    let mode = Mode::parse(pd.params.get("response_mode")).unwrap_or(Mode::Query);
    deliver(&pd.redirect_uri, mode, &out)
}

async fn admin_consent(
    State(app): State<App>,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    app.count("ms.adminconsent", None);
    if let Some(r) = fault_gate(&app, "ms.adminconsent", None, &headers).await {
        return r;
    }
    let p = Params::parse(q.as_deref().unwrap_or(""));
    if tenant.eq_ignore_ascii_case("common") || tenant.eq_ignore_ascii_case("consumers") {
        return page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "Admin consent needs an organization in the address.",
            90130,
            &format!(
                "Application '{}' is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
                p.get("client_id").unwrap_or_default()
            ),
        );
    }
    let tenant_path = match resolve_tenant(&app, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (client, redirect_uri) = match check_client(&app, &p, &tenant) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = app.now();
    let Some(raw_scope) = p.get("scope") else {
        let mut e = Params::default();
        e.push("admin_consent", "True");
        e.0.extend(
            error_params(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
                p.get("state"),
                now,
            )
            .0,
        );
        return deliver(&redirect_uri, Mode::Query, &e);
    };
    let requested = requested_scopes(&client, raw_scope);
    let tenant_id = match tenant_path {
        TenantPath::Any => None,
        TenantPath::One(id) => Some(id),
    };
    let id = store_pending(
        &app,
        Pending {
            kind: PendingKind::MsAdminConsent,
            client_id: client.client_id.clone(),
            redirect_uri,
            params: p.clone(),
            tenant_id: tenant_id.clone(),
            scopes: requested,
            user: None,
            created_at: now,
        },
    );
    picker(&app, &id, &client, tenant_id.as_deref(), None)
}

fn token_error(
    app: &App,
    status: StatusCode,
    error: &str,
    code: u32,
    msg: &str,
    suberror: Option<&str>,
) -> Response {
    ms_identity_error(status, error, code, msg, suberror, app.now())
}

/// The scope string of a token response: resource scopes sorted, then the OIDC scopes requested.
fn scope_string(app: &App, scopes: &[String]) -> String {
    let full = app.read(|s| s.settings.ms_scope_format) == MsScopeFormat::Full;
    let mut res: Vec<String> = resource_scopes(scopes)
        .into_iter()
        .map(|s| {
            if full && scopes::ms_resource(&s) == Some("https://graph.microsoft.com") {
                format!("{GRAPH}{s}")
            } else {
                s
            }
        })
        .collect();
    res.sort();
    for o in ["profile", "openid", "email"] {
        if scopes.iter().any(|s| s == o) {
            res.push(o.to_string());
        }
    }
    res.join(" ")
}

/// Picks the scopes for one token: a single resource (Graph first) plus OIDC scopes. With `strict` (an
/// explicit `scope` parameter on the token request), naming several resources is an error (AADSTS700022).
fn one_resource(scopes: &[String], strict: bool) -> Result<(String, Vec<String>), ()> {
    let resources: BTreeSet<&str> = scopes
        .iter()
        .filter_map(|s| scopes::ms_resource(s))
        .collect();
    let audience = if resources.contains("https://graph.microsoft.com") || resources.is_empty() {
        "https://graph.microsoft.com"
    } else {
        resources
            .iter()
            .next()
            .copied()
            .unwrap_or("https://graph.microsoft.com")
    };
    let picked = scopes
        .iter()
        .filter(|s| scopes::ms_resource(s).is_none_or(|r| r == audience))
        .cloned()
        .collect();
    if strict && resources.len() > 1 {
        return Err(());
    }
    Ok((audience.to_string(), picked))
}

async fn token(
    State(app): State<App>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.count("ms.token", None);
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
        return token_error(
            &app,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
            None,
        );
    };
    let Some(client) = app.read(|s| {
        s.client(&client_id)
            .filter(|c| c.provider == Provider::Microsoft)
            .cloned()
    }) else {
        return token_error(
            &app,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
            None,
        );
    };
    let bad_client_status = StatusCode::from_u16(app.read(|s| s.settings.ms_invalid_client_status))
        .unwrap_or(StatusCode::UNAUTHORIZED);
    match secret {
        None => {
            return token_error(
                &app,
                StatusCode::BAD_REQUEST,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                None,
            );
        }
        Some(s) if s != client.client_secret => {
            return token_error(
                &app,
                bad_client_status,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    client.client_id
                ),
                None,
            );
        }
        Some(_) => {}
    }
    let tenant_id = match tenant.to_ascii_lowercase().as_str() {
        "common" | "organizations" => None,
        other => match app.read(|s| s.tenant(other).map(|t| t.id.clone())) {
            Some(t) => Some(t),
            None => {
                return token_error(
                    &app,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    90002,
                    &format!(
                        "Tenant '{other}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                    ),
                    None,
                );
            }
        },
    };
    match p.get("grant_type") {
        Some("authorization_code") => {
            redeem_code(&app, &client, tenant_id.as_deref(), &p, &headers).await
        }
        Some("refresh_token") => refresh(&app, &client, tenant_id.as_deref(), &p, &headers).await,
        Some(other) => token_error(
            &app,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
            None,
        ),
        None => token_error(
            &app,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
            None,
        ),
    }
}

async fn redeem_code(
    app: &App,
    client: &Client,
    tenant_id: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
) -> Response {
    let now = app.now();
    let Some(code_value) = p.get("code") else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
            None,
        );
    };
    let Some(code) = app.read(|s| {
        s.codes
            .get(code_value)
            .filter(|c| c.provider == Provider::Microsoft)
            .cloned()
    }) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
            None,
        );
    };
    if let Some(r) = fault_gate(app, "ms.token", Some(&code.user), headers).await {
        return r;
    }
    app.count("ms.token.authorization_code", Some(&code.user));
    if code.client_id != client.client_id {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "The provided authorization code was issued to a different client.",
            None,
        );
    }
    if code.redeemed {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            None,
        );
    }
    if code.expires_at <= now {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            None,
        );
    }
    if let (Some(t), Some(ct)) = (tenant_id, &code.tenant_id)
        && t != ct
    {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
            None,
        );
    }
    if p.get("redirect_uri") != Some(code.redirect_uri.as_str()) {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50011,
            &format!(
                "The redirect URI '{}' specified in the request does not match the redirect URI the authorization code was issued to.",
                p.get("redirect_uri").unwrap_or_default()
            ),
            None,
        );
    }
    if let Some((challenge, method)) = &code.challenge {
        let ok = p
            .get("code_verifier")
            .is_some_and(|v| crate::wire::pkce_matches(challenge, method, v));
        if !ok {
            return token_error(
                app,
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                None,
            );
        }
    }
    let requested = match p.get("scope") {
        Some(s) => requested_scopes(client, s),
        None => code.scopes.clone(),
    };
    let Ok((audience, token_scopes)) = one_resource(&requested, p.get("scope").is_some()) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            700022,
            "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope can only contain scopes from one resource.",
            None,
        );
    };
    let Some(user) = app.read(|s| s.user(&code.user).cloned()) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "The user no longer exists.",
            None,
        );
    };
    app.write(|s| {
        if let Some(c) = s.codes.get_mut(code_value) {
            c.redeemed = true;
        }
    });
    if let Err(r) = check_consent(app, client, &user, &token_scopes) {
        return r;
    }
    let offline = code.offline;
    issue_tokens(
        app,
        client,
        &user,
        &audience,
        &token_scopes,
        offline,
        code.nonce.as_deref(),
        code.scopes.iter().any(|s| s == "openid"),
    )
}

fn check_consent(
    app: &App,
    client: &Client,
    user: &User,
    token_scopes: &[String],
) -> Result<(), Response> {
    let have = app.read(|s| {
        s.tenant(&user.org)
            .map(|t| consented(s, t, &user.email, &client.client_id))
            .unwrap_or_default()
    });
    let missing = resource_scopes(token_scopes)
        .into_iter()
        .any(|s| !have.contains(&s));
    if missing {
        return Err(token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            65001,
            &format!(
                "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.",
                client.client_id, client.name
            ),
            Some("consent_required"),
        ));
    }
    Ok(())
}

async fn refresh(
    app: &App,
    client: &Client,
    _tenant_id: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
) -> Response {
    let now = app.now();
    let Some(rt_value) = p.get("refresh_token") else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
            None,
        );
    };
    let Some(rt) = app.read(|s| {
        s.refresh_tokens
            .get(rt_value)
            .filter(|t| t.provider == Provider::Microsoft)
            .cloned()
    }) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
            None,
        );
    };
    if let Some(r) = fault_gate(app, "ms.token", Some(&rt.user), headers).await {
        return r;
    }
    app.count("ms.token.refresh_token", Some(&rt.user));
    if rt.client_id != client.client_id {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed. The refresh token was issued to a different client.",
            Some("client_mismatch"),
        );
    }
    let Some(user) = app.read(|s| s.user(&rt.user).cloned()) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "The user no longer exists.",
            None,
        );
    };
    if rt.revoked {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            None,
        );
    }
    if rt.generation < user.token_generation {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50173,
            &format!(
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                crate::wire::ms_timestamp(rt.issued_at),
                crate::wire::ms_timestamp(user.tokens_valid_from)
            ),
            None,
        );
    }
    let idle = app.read(|s| s.settings.ms_refresh_idle_secs);
    if now - rt.last_used_at > idle {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            700082,
            &format!(
                "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for {}.00:00:00.",
                crate::wire::ms_timestamp(rt.issued_at),
                idle / 86_400
            ),
            None,
        );
    }
    let requested = match p.get("scope") {
        Some(s) => requested_scopes(client, s),
        None => rt.scopes.clone(),
    };
    let Ok((audience, token_scopes)) = one_resource(&requested, p.get("scope").is_some()) else {
        return token_error(
            app,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            700022,
            "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope can only contain scopes from one resource.",
            None,
        );
    };
    if let Err(r) = check_consent(app, client, &user, &token_scopes) {
        return r;
    }
    app.write(|s| {
        if let Some(t) = s.refresh_tokens.get_mut(rt_value) {
            t.last_used_at = now;
        }
    });
    let openid = token_scopes.iter().any(|s| s == "openid");
    issue_tokens(
        app,
        client,
        &user,
        &audience,
        &token_scopes,
        true,
        None,
        openid,
    )
}

#[allow(clippy::too_many_arguments)]
fn issue_tokens(
    app: &App,
    client: &Client,
    user: &User,
    audience: &str,
    token_scopes: &[String],
    offline: bool,
    nonce: Option<&str>,
    openid: bool,
) -> Response {
    let now = app.now();
    let lifetime = app.read(|s| s.settings.ms_access_token_lifetime_secs);
    let access = format!("EwB{}", random_token(64));
    let refresh_token = offline.then(|| format!("0.AX{}", random_token(96)));
    app.write(|s| {
        s.access_tokens.insert(
            access.clone(),
            AccessToken {
                provider: Provider::Microsoft,
                user: user.email.clone(),
                client_id: client.client_id.clone(),
                scopes: token_scopes.to_vec(),
                audience: Some(audience.to_string()),
                issued_at: now,
                expires_at: now + lifetime,
                revoked: false,
            },
        );
        if let Some(r) = &refresh_token {
            s.refresh_tokens.insert(
                r.clone(),
                RefreshToken {
                    provider: Provider::Microsoft,
                    user: user.email.clone(),
                    client_id: client.client_id.clone(),
                    scopes: token_scopes.to_vec(),
                    tenant_id: Some(user.org.clone()),
                    issued_at: now,
                    last_used_at: now,
                    generation: user.token_generation,
                    revoked: false,
                },
            );
        }
    });
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope_string(app, token_scopes),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
    });
    if let Some(r) = refresh_token {
        body["refresh_token"] = json!(r);
    }
    if openid {
        body["id_token"] = json!(id_token(client, user, token_scopes, nonce, now));
    }
    json_response(StatusCode::OK, body)
}

fn id_token(
    client: &Client,
    user: &User,
    scopes: &[String],
    nonce: Option<&str>,
    now: i64,
) -> String {
    let mut c = json!({
        "aud": client.client_id,
        "iss": format!("https://login.microsoftonline.com/{}/v2.0", user.org),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": user.id,
        "sub": crate::state::stable_guid(&format!("sub:{}:{}", user.id, client.client_id)).replace('-', ""),
        "tid": user.org,
        "ver": "2.0",
    });
    let m = c.as_object_mut().expect("object");
    if scopes.iter().any(|s| s == "profile") {
        m.insert("name".into(), Value::from(user.display_name.clone()));
        m.insert("preferred_username".into(), Value::from(user.email.clone()));
    }
    if scopes.iter().any(|s| s == "email") {
        m.insert("email".into(), Value::from(user.email.clone()));
    }
    if let Some(n) = nonce {
        m.insert("nonce".into(), Value::from(n));
    }
    jwt::sign_hs256(&c, &client.client_secret)
}
