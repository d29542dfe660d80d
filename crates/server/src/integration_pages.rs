//! Pages of email & calendar authorization: the recruiter's "Email & calendar"
//! settings, the OAuth callbacks, and the admin's "Email provider" page.

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hirewire_providers::{AccessLevel, Capability, Provider, scopes};
use hirewire_store::{
    CapabilityKind, ConsentState, GrantStatus, ProviderChoice, ProviderSettings, parse_capability,
};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{AdminViewer, CsrfForm, Viewer};
use crate::error::PageError;
use crate::integrations::{self as integ, Notice, RowView};
use crate::pages::Nav;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings/email-calendar", get(email_calendar))
        .route("/settings/email-calendar/{kind}/authorize", post(authorize))
        .route(
            "/settings/email-calendar/{kind}/deauthorize",
            post(deauthorize),
        )
        .route("/oauth/{provider}/callback", get(callback))
        .route("/admin/email-provider", get(admin_page).post(save_provider))
        .route("/admin/email-provider/consent", post(admin_consent))
}

pub struct NoticeView {
    pub code: &'static str,
    pub message: String,
    pub error: bool,
    pub kind: &'static str,
    pub retry_only: Vec<String>,
}

#[derive(Template)]
#[template(path = "settings_email_calendar.html")]
struct EmailCalendarPage {
    nav: Option<Nav>,
    provider: Option<&'static str>,
    rows: Vec<RowView>,
    notice: Option<NoticeView>,
    health: Option<crate::health::HealthView>,
}

fn kind_from(raw: &str) -> Result<CapabilityKind, PageError> {
    parse_capability(raw).ok_or_else(PageError::not_found)
}

async fn render_settings(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    let (provider, rows) = integ::rows(state, &viewer.user).await?;
    let notice = notice.map(|n| {
        let (kind, retry_only) = match &n {
            Notice::Partial { kind, missing } if provider == Some(Provider::Google) => (
                kind.as_str(),
                missing.iter().map(|(scope, _)| scope.clone()).collect(),
            ),
            Notice::Partial { kind, .. }
            | Notice::Authorized(kind)
            | Notice::NotConnected(kind) => (kind.as_str(), Vec::new()),
            Notice::Deauthorized { kind, .. } => (kind.as_str(), Vec::new()),
            _ => ("", Vec::new()),
        };
        NoticeView {
            code: n.code(),
            message: n.message(provider),
            error: n.is_error(),
            kind,
            retry_only,
        }
    });
    let status = if notice.as_ref().is_some_and(|n| n.error) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = EmailCalendarPage {
        nav: Nav::of(viewer, "settings"),
        provider: provider.map(Provider::display_name),
        rows,
        notice,
        health: crate::health::view_for(state, &viewer.user).await,
    };
    Ok((status, Html(page.render()?)).into_response())
}

async fn email_calendar(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    render_settings(&state, &viewer, None).await
}

#[derive(Deserialize)]
struct AuthorizeForm {
    /// Space-separated scopes to re-ask (after a partial Google grant).
    #[serde(default)]
    only: String,
}

async fn authorize(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    CsrfForm(viewer, form): CsrfForm<AuthorizeForm>,
) -> Result<Response, PageError> {
    let kind = kind_from(&kind)?;
    let only: Vec<String> = form.only.split_whitespace().map(str::to_owned).collect();
    let only = (!only.is_empty()).then_some(only);
    match integ::start_authorize(&state, &viewer.user, &viewer.session_digest, kind, only).await {
        Ok(url) => Ok(Redirect::to(url.as_str()).into_response()),
        Err(n) => render_settings(&state, &viewer, Some(n)).await,
    }
}

async fn deauthorize(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    CsrfForm(viewer, _): CsrfForm<AuthorizeForm>,
) -> Result<Response, PageError> {
    let kind = kind_from(&kind)?;
    let notice = match integ::deauthorize(&state, &viewer.user, kind).await {
        Ok(n) | Err(n) => n,
    };
    render_settings(&state, &viewer, Some(notice)).await
}

async fn callback(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let provider = match provider.as_str() {
        "microsoft" => Provider::Microsoft,
        "google" => Provider::Google,
        _ => return Err(PageError::not_found()),
    };
    let query = query.unwrap_or_default();
    let outcome = integ::finish_callback(
        &state,
        &viewer.user,
        &viewer.session_digest,
        provider,
        &query,
    )
    .await;
    if outcome.admin && viewer.is_admin() {
        return render_admin(&state, &viewer, Some(outcome.notice)).await;
    }
    render_settings(&state, &viewer, Some(outcome.notice)).await
}

// ---- admin ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin_email_provider.html")]
struct ProviderPage {
    nav: Option<Nav>,
    notice: Option<(String, bool)>,
    form_error: Option<String>,
    provider: &'static str,
    client_id: String,
    secret_stored: bool,
    tenant: String,
    access_level: &'static str,
    purge: bool,
    configured: bool,
    redirect_microsoft: String,
    redirect_google: String,
    google_scopes: Vec<(String, String)>,
    consent_label: String,
    consent_detail: Option<String>,
    grants: Vec<(String, String, String)>,
}

fn consent_label(s: &ProviderSettings) -> String {
    match (s.consent_state, s.provider) {
        (ConsentState::Recorded, _) => format!(
            "Recorded{}",
            s.consent_at
                .map(|t| format!(" on {}", t.strftime("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default()
        ),
        (ConsentState::NotRequired, _) => "Not required".into(),
        (ConsentState::Needed, ProviderChoice::Microsoft) => {
            "Needed: recruiters are blocked until a Microsoft 365 admin grants consent".into()
        }
        (ConsentState::Needed, _) => {
            "Needed: a Google Workspace admin must trust hirewire's client id".into()
        }
        (ConsentState::Unknown, _) => {
            "Unknown (recruiters can still try; hirewire learns from the first failure)".into()
        }
    }
}

async fn render_admin(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    render_admin_with(state, viewer, notice, None, None).await
}

async fn render_admin_with(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
    form_error: Option<String>,
    draft: Option<&ProviderForm>,
) -> Result<Response, PageError> {
    let org = viewer.user.org_id;
    let settings = state.store.provider_settings(org).await?;
    let provider = settings
        .as_ref()
        .and_then(|s| integ::provider_of(s.provider));
    let google_scopes = [Capability::Inbox, Capability::Calendar]
        .iter()
        .flat_map(|c| {
            let access = settings
                .as_ref()
                .map(|s| integ::access_of(s.access_level))
                .unwrap_or(AccessLevel::SendAndView);
            scopes::sign_in(Provider::Google)
                .iter()
                .chain(scopes::required(Provider::Google, *c, access).iter())
                .cloned()
                .collect::<Vec<_>>()
        })
        .fold(Vec::<(String, String)>::new(), |mut acc, n| {
            if !acc.iter().any(|(s, _)| s == n.scope) {
                acc.push((n.scope.to_owned(), n.purpose.to_owned()));
            }
            acc
        });
    let users = state.store.list_users(org).await?;
    let mut grants = Vec::new();
    for g in state.store.org_grants(org).await? {
        let who = users
            .iter()
            .find(|u| u.id == g.user_id)
            .map(|u| u.display_name.clone())
            .unwrap_or_default();
        let what = format!(
            "{} ({})",
            if g.capability == CapabilityKind::Inbox {
                "Inbox"
            } else {
                "Calendar"
            },
            g.account_address.clone().unwrap_or_default()
        );
        let status = match g.status {
            GrantStatus::Active if g.legacy => {
                "Active (legacy grant: asked to reauthorize)".to_owned()
            }
            GrantStatus::Active => "Active".to_owned(),
            GrantStatus::NeedsReauth => format!(
                "Needs reauthorization: {}",
                g.status_reason.unwrap_or_default()
            ),
            GrantStatus::WaitingAdmin => "Waiting for the provider's admin".to_owned(),
        };
        grants.push((who, what, status));
    }
    let p = |s: &ProviderSettings| s.provider.as_str();
    let page = ProviderPage {
        nav: Nav::of(viewer, "admin"),
        notice: notice.map(|n| (n.message(provider), n.is_error())),
        form_error,
        provider: match draft {
            Some(d) => choice_str(&d.provider),
            None => settings.as_ref().map(p).unwrap_or("none"),
        },
        client_id: draft
            .map(|d| d.client_id.clone())
            .or_else(|| settings.as_ref().map(|s| s.client_id.clone()))
            .unwrap_or_default(),
        secret_stored: settings
            .as_ref()
            .is_some_and(|s| s.client_secret_sealed.is_some()),
        tenant: draft
            .map(|d| d.tenant.clone())
            .or_else(|| settings.as_ref().and_then(|s| s.tenant.clone()))
            .unwrap_or_default(),
        access_level: match draft {
            Some(d) => access_str(&d.access_level),
            None => settings
                .as_ref()
                .map(|s| s.access_level.as_str())
                .unwrap_or("send_and_view"),
        },
        purge: settings.as_ref().is_some_and(|s| s.purge_on_deauthorize),
        configured: settings
            .as_ref()
            .is_some_and(|s| !s.client_id.is_empty() && s.client_secret_sealed.is_some()),
        redirect_microsoft: integ::redirect_uri(state, Provider::Microsoft),
        redirect_google: integ::redirect_uri(state, Provider::Google),
        google_scopes,
        consent_label: settings.as_ref().map(consent_label).unwrap_or_default(),
        consent_detail: settings.as_ref().and_then(|s| s.consent_detail.clone()),
        grants,
    };
    let status = if page.form_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Html(page.render()?)).into_response())
}

fn choice_str(s: &str) -> &'static str {
    match s {
        "microsoft" => "microsoft",
        "google" => "google",
        _ => "none",
    }
}

fn access_str(s: &str) -> &'static str {
    match s {
        "view_only" => "view_only",
        "off" => "off",
        _ => "send_and_view",
    }
}

async fn admin_page(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
) -> Result<Response, PageError> {
    render_admin(&state, &viewer, None).await
}

#[derive(Deserialize, Clone)]
pub struct ProviderForm {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    access_level: String,
    #[serde(default)]
    purge_on_deauthorize: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_email_provider_confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    secret_needed: bool,
    fields: Vec<(&'static str, String)>,
    effects: Vec<String>,
}

async fn save_provider(
    State(state): State<AppState>,
    CsrfForm(viewer, form): CsrfForm<ProviderForm>,
) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::forbidden());
    }
    let existing = state.store.provider_settings(viewer.user.org_id).await?;
    let input = integ::ProviderInput {
        provider: &form.provider,
        client_id: &form.client_id,
        client_secret: &form.client_secret,
        tenant: &form.tenant,
        access_level: &form.access_level,
        purge_on_deauthorize: form.purge_on_deauthorize.is_some(),
    };
    let change = match integ::validate_provider_input(&input, existing.as_ref()) {
        Ok(c) => c,
        Err(e) => return render_admin_with(&state, &viewer, None, Some(e), Some(&form)).await,
    };
    let confirmed = form.confirm.as_deref() == Some("yes");
    match integ::save_provider(&state, &viewer.user, existing, change, confirmed).await? {
        integ::SaveOutcome::Saved => Ok(Redirect::to("/admin/email-provider").into_response()),
        integ::SaveOutcome::NeedsConfirmation(effects) => {
            let fields = vec![
                ("provider", form.provider.clone()),
                ("client_id", form.client_id.clone()),
                ("tenant", form.tenant.clone()),
                ("access_level", form.access_level.clone()),
                (
                    "purge_on_deauthorize",
                    form.purge_on_deauthorize.clone().unwrap_or_default(),
                ),
            ]
            .into_iter()
            .filter(|(k, v)| !(*k == "purge_on_deauthorize" && v.is_empty()))
            .collect();
            // The new secret is never echoed into a page: ask for it again.
            let page = ConfirmPage {
                nav: Nav::of(&viewer, "admin"),
                secret_needed: !form.client_secret.trim().is_empty(),
                fields,
                effects,
            };
            Ok(Html(page.render()?).into_response())
        }
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn admin_consent(
    State(state): State<AppState>,
    CsrfForm(viewer, _): CsrfForm<Empty>,
) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::forbidden());
    }
    match integ::start_admin_consent(&state, &viewer.user, &viewer.session_digest).await {
        Ok(url) => Ok(Redirect::to(url.as_str()).into_response()),
        Err(n) => render_admin(&state, &viewer, Some(n)).await,
    }
}
