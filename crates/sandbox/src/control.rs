//! The control API under `/_sandbox/`: JSON in, JSON out. Tests, the demo and people use it to shape the
//! sandbox at runtime (clients, users, policies, grants, faults, counters, settings, clock).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::faults::FaultSpec;
use crate::scenario::{ClientSpec, DomainPolicy, Provider, Settings, TenantPolicy, UserSpec};
use crate::wire::{json_response, random_guid, random_token};

/// Routes under `/_sandbox/`.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/_sandbox/health",
            get(|| async { Json(json!({"ok": true})) }),
        )
        .route("/_sandbox/clients", get(list_clients).post(add_client))
        .route("/_sandbox/users", get(list_users).post(add_user))
        .route("/_sandbox/users/{email}/revoke-grant", post(revoke_grant))
        .route(
            "/_sandbox/users/{email}/password-change",
            post(password_change),
        )
        .route("/_sandbox/tenants", get(list_tenants))
        .route("/_sandbox/tenants/{tenant}/policy", put(set_tenant_policy))
        .route(
            "/_sandbox/tenants/{tenant}/admin-consents/{client_id}",
            put(set_admin_consent).delete(remove_admin_consent),
        )
        .route("/_sandbox/domains", get(list_domains))
        .route("/_sandbox/domains/{domain}/policy", put(set_domain_policy))
        .route("/_sandbox/grants", get(list_grants))
        .route("/_sandbox/counters", get(counters).delete(reset_counters))
        .route(
            "/_sandbox/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/faults/{id}", delete(remove_fault))
        .route(
            "/_sandbox/settings",
            get(get_settings).patch(patch_settings),
        )
        .route("/_sandbox/clock", get(clock))
        .route("/_sandbox/clock/advance", post(advance_clock))
}

type Reply = Result<Json<Value>, Response>;

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({"error": msg.into()}))
}

fn ok(v: impl serde::Serialize) -> Reply {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, Response> {
    serde_json::from_value(body.clone()).map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn list_clients(State(app): State<App>) -> Reply {
    ok(app.read(|s| s.clients.clone()))
}

/// `POST /_sandbox/clients`: like a scenario client, with id and secret generated when absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    provider: Provider,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    name: Option<String>,
    redirect_uris: Vec<String>,
    #[serde(default)]
    home_tenant: Option<String>,
    #[serde(default)]
    app_scopes: Vec<String>,
    #[serde(default)]
    testing_mode: bool,
}

async fn add_client(State(app): State<App>, Json(body): Json<Value>) -> Reply {
    let n: NewClient = parse(&body)?;
    let spec = ClientSpec {
        provider: n.provider,
        client_id: n.client_id.unwrap_or_else(|| match n.provider {
            Provider::Microsoft => random_guid(),
            Provider::Google => format!(
                "{}-{}.apps.googleusercontent.com",
                &random_guid()[..8],
                random_token(12).to_ascii_lowercase()
            ),
        }),
        client_secret: n.client_secret.unwrap_or_else(|| random_token(24)),
        name: n.name.unwrap_or_else(|| "hirewire".into()),
        redirect_uris: n.redirect_uris,
        home_tenant: n.home_tenant,
        app_scopes: n.app_scopes,
        testing_mode: n.testing_mode,
    };
    app.write(|s| s.add_client(&spec))
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e))
        .and_then(ok)
}

async fn list_users(State(app): State<App>) -> Reply {
    ok(app.read(|s| s.users.clone()))
}

/// `POST /_sandbox/users`: a user spec plus `tenant` (Microsoft, id or domain) or `domain` (Google).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(flatten)]
    user: UserSpec,
}

async fn add_user(State(app): State<App>, Json(body): Json<Value>) -> Reply {
    let n: NewUser = parse(&body)?;
    let r = app.write(|s| match (&n.tenant, &n.domain) {
        (Some(t), None) => {
            let id = s
                .tenant(t)
                .map(|t| t.id.clone())
                .ok_or(format!("unknown tenant {t}"))?;
            s.add_user(Provider::Microsoft, &id, &n.user)
        }
        (None, Some(d)) => {
            let d = s
                .domain(d)
                .map(|d| d.domain.clone())
                .ok_or(format!("unknown domain {d}"))?;
            s.add_user(Provider::Google, &d, &n.user)
        }
        _ => Err("give exactly one of `tenant` (Microsoft) or `domain` (Google)".to_string()),
    });
    r.map_err(|e| bad(StatusCode::BAD_REQUEST, e)).and_then(ok)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn revoke_grant(
    State(app): State<App>,
    Path(email): Path<String>,
    body: Option<Json<Value>>,
) -> Reply {
    let b: RevokeBody = match body {
        Some(Json(v)) => parse(&v)?,
        None => RevokeBody::default(),
    };
    let r = app.write(|s| {
        let user = s
            .user(&email)
            .cloned()
            .ok_or(format!("unknown user {email}"))?;
        let clients: Vec<String> = s
            .grants
            .values()
            .filter(|g| g.user == user.email)
            .filter(|g| b.client_id.as_ref().is_none_or(|c| *c == g.client_id))
            .map(|g| g.client_id.clone())
            .collect();
        let mut changed = Vec::new();
        for c in clients {
            match &b.scopes {
                Some(remove) => {
                    let remove: BTreeSet<String> = remove
                        .iter()
                        .map(|x| match user.provider {
                            Provider::Microsoft => crate::scopes::ms_normalize(x),
                            Provider::Google => crate::scopes::google_normalize(x),
                        })
                        .collect();
                    if let Some(g) = s
                        .grants
                        .values_mut()
                        .find(|g| g.user == user.email && g.client_id == c)
                    {
                        g.scopes.retain(|x| !remove.contains(x));
                    }
                }
                None => {
                    s.revoke_grant(&user.email, &c);
                }
            }
            changed.push(c);
        }
        Ok::<_, String>(changed)
    });
    let changed = r.map_err(|e| bad(StatusCode::NOT_FOUND, e))?;
    ok(json!({"clients": changed}))
}

async fn password_change(State(app): State<App>, Path(email): Path<String>) -> Reply {
    let now = app.now();
    let r = app.write(|s| {
        let u = s.user_mut(&email).ok_or(format!("unknown user {email}"))?;
        u.token_generation += 1;
        u.tokens_valid_from = now;
        Ok::<_, String>(u.clone())
    });
    r.map_err(|e| bad(StatusCode::NOT_FOUND, e)).and_then(ok)
}

async fn list_tenants(State(app): State<App>) -> Reply {
    ok(app.read(|s| s.tenants.clone()))
}

async fn set_tenant_policy(
    State(app): State<App>,
    Path(tenant): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let policy: TenantPolicy = parse(&body)?;
    let r = app.write(|s| {
        let t = s
            .tenant_mut(&tenant)
            .ok_or(format!("unknown tenant {tenant}"))?;
        t.policy = policy;
        Ok::<_, String>(t.clone())
    });
    r.map_err(|e| bad(StatusCode::NOT_FOUND, e)).and_then(ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesBody {
    scopes: Vec<String>,
}

async fn set_admin_consent(
    State(app): State<App>,
    Path((tenant, client_id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let b: ScopesBody = parse(&body)?;
    let r = app.write(|s| {
        if s.client(&client_id).is_none() {
            return Err(format!("unknown client {client_id}"));
        }
        let t = s
            .tenant_mut(&tenant)
            .ok_or(format!("unknown tenant {tenant}"))?;
        t.admin_consents.insert(
            client_id.clone(),
            b.scopes
                .iter()
                .map(|x| crate::scopes::ms_normalize(x))
                .collect(),
        );
        Ok(t.clone())
    });
    r.map_err(|e| bad(StatusCode::NOT_FOUND, e)).and_then(ok)
}

async fn remove_admin_consent(
    State(app): State<App>,
    Path((tenant, client_id)): Path<(String, String)>,
) -> Reply {
    let r = app.write(|s| {
        let t = s
            .tenant_mut(&tenant)
            .ok_or(format!("unknown tenant {tenant}"))?;
        t.admin_consents.remove(&client_id);
        Ok::<_, String>(t.clone())
    });
    r.map_err(|e| bad(StatusCode::NOT_FOUND, e)).and_then(ok)
}

async fn list_domains(State(app): State<App>) -> Reply {
    ok(app.read(|s| s.domains.clone()))
}

async fn set_domain_policy(
    State(app): State<App>,
    Path(domain): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let policy: DomainPolicy = parse(&body)?;
    let r = app.write(|s| {
        let d = s
            .domains
            .iter_mut()
            .find(|d| d.domain.eq_ignore_ascii_case(&domain))
            .ok_or(format!("unknown domain {domain}"))?;
        d.policy = policy;
        Ok::<_, String>(d.clone())
    });
    r.map_err(|e| bad(StatusCode::NOT_FOUND, e)).and_then(ok)
}

async fn list_grants(State(app): State<App>) -> Reply {
    let now = app.now();
    ok(app.read(|s| {
        json!({
            "grants": s.grants.values().collect::<Vec<_>>(),
            "refresh_tokens": s.refresh_tokens.iter().map(|(k, t)| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["token"] = json!(k);
                v
            }).collect::<Vec<_>>(),
            "access_tokens": s.access_tokens.iter().map(|(k, t)| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["token"] = json!(k);
                v["expired"] = json!(t.expires_at <= now);
                v
            }).collect::<Vec<_>>(),
        })
    }))
}

async fn counters(State(app): State<App>) -> Reply {
    ok(app.rt(|rt| rt.counters.clone()))
}

async fn reset_counters(State(app): State<App>) -> Reply {
    app.rt(|rt| {
        rt.counters = Default::default();
        rt.quota.reset();
    });
    ok(json!({"ok": true}))
}

async fn list_faults(State(app): State<App>) -> Reply {
    ok(app.rt(|rt| rt.faults.list()))
}

async fn add_fault(State(app): State<App>, Json(body): Json<Value>) -> Reply {
    let spec: FaultSpec = parse(&body)?;
    spec.validate()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    ok(app.rt(|rt| rt.faults.add(spec)))
}

async fn clear_faults(State(app): State<App>) -> Reply {
    app.rt(|rt| rt.faults.clear());
    ok(json!({"ok": true}))
}

async fn remove_fault(State(app): State<App>, Path(id): Path<u64>) -> Reply {
    if app.rt(|rt| rt.faults.remove(id)) {
        ok(json!({"ok": true}))
    } else {
        Err(bad(StatusCode::NOT_FOUND, format!("no fault {id}")))
    }
}

async fn get_settings(State(app): State<App>) -> Reply {
    ok(app.read(|s| s.settings.clone()))
}

/// Merges the given fields into the current settings.
async fn patch_settings(State(app): State<App>, Json(body): Json<Value>) -> Reply {
    let Some(patch) = body.as_object() else {
        return Err(bad(StatusCode::BAD_REQUEST, "expected a JSON object"));
    };
    let mut current = serde_json::to_value(app.read(|s| s.settings.clone()))
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for (k, v) in patch {
        current[k] = v.clone();
    }
    let next: Settings = parse(&current)?;
    app.write(|s| s.settings = next.clone());
    ok(next)
}

async fn clock(State(app): State<App>) -> Reply {
    let now = app.now();
    ok(
        json!({"now": now, "rfc3339": jiff::Timestamp::from_second(now).map(|t| t.to_string()).unwrap_or_default()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(app): State<App>, Json(body): Json<Value>) -> Reply {
    let a: Advance = parse(&body)?;
    app.advance_clock(a.seconds);
    clock(State(app)).await
}
