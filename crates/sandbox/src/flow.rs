//! Pieces every sign-in flow shares: fault gates, delivering the result to the redirect URI, pending
//! sign-ins, and the sandbox UI form targets (`/_sandbox/ui/{id}/...`) the pages post to.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;

use crate::app::{App, Pending, PendingKind};
use crate::faults;
use crate::pages;
use crate::scenario::Provider;
use crate::wire::{Params, append_query, random_token, redirect};
use crate::{google_identity, ms_identity};

/// Applies armed faults to a request: sleeps for delays, and returns the fault response if one hits.
pub async fn fault_gate(
    app: &App,
    endpoint: &str,
    user: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response> {
    let d = app.rt(|rt| rt.faults.take(endpoint, user));
    if d.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
    }
    let f = d.fault?;
    app.count_outcome(endpoint, true);
    Some(faults::render(&f, endpoint, headers, app.now()))
}

/// How the authorization response travels back (`response_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `?code=...` (the default for `response_type=code`).
    Query,
    /// `#code=...`.
    Fragment,
    /// A self-submitting HTML form.
    FormPost,
}

impl Mode {
    /// Parses `response_mode`.
    pub fn parse(s: Option<&str>) -> Option<Mode> {
        match s {
            None | Some("query") => Some(Mode::Query),
            Some("fragment") => Some(Mode::Fragment),
            Some("form_post") => Some(Mode::FormPost),
            Some(_) => None,
        }
    }
}

/// Sends `params` to the redirect URI.
pub fn deliver(redirect_uri: &str, mode: Mode, params: &Params) -> Response {
    match mode {
        Mode::Query => redirect(&append_query(redirect_uri, params)),
        Mode::Fragment => redirect(&format!("{redirect_uri}#{}", params.encode())),
        Mode::FormPost => pages::form_post(redirect_uri, &params.0),
    }
}

/// Stores a pending sign-in and returns its id.
pub fn store_pending(app: &App, p: Pending) -> String {
    let id = random_token(18);
    let ttl = app.read(|s| s.settings.pending_login_lifetime_secs);
    let now = app.now();
    app.rt(|rt| {
        rt.pending.retain(|_, x| x.created_at + ttl > now);
        rt.pending.insert(id.clone(), p);
    });
    id
}

/// A pending sign-in, if still alive.
pub fn pending(app: &App, id: &str) -> Option<Pending> {
    let ttl = app.read(|s| s.settings.pending_login_lifetime_secs);
    let now = app.now();
    app.rt(|rt| {
        rt.pending
            .get(id)
            .filter(|p| p.created_at + ttl > now)
            .cloned()
    })
}

/// Records the account picked for a pending sign-in.
pub fn set_pending_user(app: &App, id: &str, user: &str) {
    app.rt(|rt| {
        if let Some(p) = rt.pending.get_mut(id) {
            p.user = Some(user.to_string());
        }
    });
}

/// Ends a pending sign-in.
pub fn finish_pending(app: &App, id: &str) {
    app.rt(|rt| {
        rt.pending.remove(id);
    });
}

/// Form targets of the sign-in pages.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/_sandbox/ui/{id}/account", post(account))
        .route("/_sandbox/ui/{id}/consent", post(consent))
        .route("/_sandbox/ui/{id}/cancel", post(cancel))
}

fn expired(p: Provider) -> Response {
    pages::error(
        p,
        StatusCode::BAD_REQUEST,
        "This sign-in request has expired",
        "Go back to the app and start signing in again.",
        "",
        None,
    )
}

async fn account(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Response {
    let form = Params::parse(&String::from_utf8_lossy(&body));
    let Some(p) = pending(&app, &id) else {
        return expired(Provider::Microsoft);
    };
    let Some(user) = form.get("user") else {
        return expired(provider_of(&p));
    };
    match p.kind {
        PendingKind::MsAuthorize | PendingKind::MsAdminConsent => {
            ms_identity::after_account(&app, &id, user)
        }
        PendingKind::GoogleAuth => google_identity::after_account(&app, &id, user),
    }
}

async fn consent(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Response {
    let form = Params::parse(&String::from_utf8_lossy(&body));
    let Some(p) = pending(&app, &id) else {
        return expired(Provider::Microsoft);
    };
    if p.user.is_none() {
        return expired(provider_of(&p));
    }
    let accepted = form.get("decision") == Some("accept");
    match p.kind {
        PendingKind::MsAuthorize | PendingKind::MsAdminConsent => {
            ms_identity::after_consent(&app, &id, &p, accepted, &form)
        }
        PendingKind::GoogleAuth => google_identity::after_consent(&app, &id, &p, accepted, &form),
    }
}

async fn cancel(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Some(p) = pending(&app, &id) else {
        return expired(Provider::Microsoft);
    };
    let empty = Params::default();
    match p.kind {
        PendingKind::MsAuthorize | PendingKind::MsAdminConsent => {
            ms_identity::after_consent(&app, &id, &p, false, &empty)
        }
        PendingKind::GoogleAuth => google_identity::after_consent(&app, &id, &p, false, &empty),
    }
}

fn provider_of(p: &Pending) -> Provider {
    match p.kind {
        PendingKind::GoogleAuth => Provider::Google,
        _ => Provider::Microsoft,
    }
}
