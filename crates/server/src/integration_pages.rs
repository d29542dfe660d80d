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
    AccessLevelSetting, CapabilityKind, ConsentState, GrantStatus, NewGrant, ProviderChoice,
    ProviderSettings, parse_capability,
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
            Notice::Partial { kind, missing } if provider == Some(Provider::Google) => {
                (kind.as_str(), missing.clone())
            }
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
    fields: Vec<(&'static str, String)>,
    effects: Vec<String>,
}

/// The admin's choice, validated.
pub struct ProviderChange {
    pub provider: ProviderChoice,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub tenant: Option<String>,
    pub access_level: AccessLevelSetting,
    pub purge: bool,
}

fn parse_form(
    f: &ProviderForm,
    existing: Option<&ProviderSettings>,
) -> Result<ProviderChange, String> {
    let provider = match f.provider.as_str() {
        "microsoft" => ProviderChoice::Microsoft,
        "google" => ProviderChoice::Google,
        "none" => ProviderChoice::None,
        _ => return Err("Choose Microsoft 365, Google Workspace or Do not integrate.".into()),
    };
    let access_level = match f.access_level.as_str() {
        "send_and_view" => AccessLevelSetting::SendAndView,
        "view_only" => AccessLevelSetting::ViewOnly,
        "off" => AccessLevelSetting::Off,
        _ => return Err("Choose an email access level.".into()),
    };
    let client_id = f.client_id.trim().to_owned();
    let secret = f.client_secret.trim();
    let tenant = f.tenant.trim();
    if provider != ProviderChoice::None {
        if client_id.is_empty()
            || client_id.len() > 255
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("Enter the OAuth client id from your app registration (no spaces).".into());
        }
        let has_secret = !secret.is_empty()
            || existing.is_some_and(|s| s.client_secret_sealed.is_some() && s.provider == provider);
        if !has_secret {
            return Err("Enter the OAuth client secret from your app registration.".into());
        }
        if secret.len() > 1024 || tenant.len() > 255 || tenant.chars().any(char::is_whitespace) {
            return Err("The client secret or tenant is not valid.".into());
        }
    }
    Ok(ProviderChange {
        provider,
        client_id,
        client_secret: (!secret.is_empty()).then(|| secret.to_owned()),
        tenant: (!tenant.is_empty() && provider == ProviderChoice::Microsoft)
            .then(|| tenant.to_owned()),
        access_level,
        purge: f.purge_on_deauthorize.is_some(),
    })
}

fn level_rank(l: AccessLevelSetting) -> u8 {
    match l {
        AccessLevelSetting::Off => 0,
        AccessLevelSetting::ViewOnly => 1,
        AccessLevelSetting::SendAndView => 2,
    }
}

async fn save_provider(
    State(state): State<AppState>,
    CsrfForm(viewer, form): CsrfForm<ProviderForm>,
) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::forbidden());
    }
    let org = viewer.user.org_id;
    let existing = state.store.provider_settings(org).await?;
    let change = match parse_form(&form, existing.as_ref()) {
        Ok(c) => c,
        Err(e) => return render_admin_with(&state, &viewer, None, Some(e), Some(&form)).await,
    };
    let grants = state.store.org_grants(org).await?;
    let mut effects = Vec::new();
    if let Some(old) = &existing {
        let n_all = grants.len();
        let n_inbox = grants
            .iter()
            .filter(|g| g.capability == CapabilityKind::Inbox)
            .count();
        if n_all > 0 && change.provider != old.provider {
            effects.push(match change.provider {
                ProviderChoice::None => format!("{n_all} connected inbox or calendar grant(s) stop working and their tokens are deleted; recruiters see that integrations are off."),
                _ => format!("{n_all} grant(s) made with {} stop working; each recruiter must authorize again with the new provider.", old.provider),
            });
        }
        if n_inbox > 0
            && change.provider == old.provider
            && level_rank(change.access_level) < level_rank(old.access_level)
        {
            effects.push(match change.access_level {
                AccessLevelSetting::Off => format!("{n_inbox} connected inbox(es) pause: nothing is read or sent, and their grants are kept so raising the level again resumes them."),
                _ => format!("{n_inbox} connected inbox(es) keep syncing but can no longer send email."),
            });
        }
    }
    if !effects.is_empty() && form.confirm.as_deref() != Some("yes") {
        let fields = vec![
            ("provider", form.provider.clone()),
            ("client_id", form.client_id.clone()),
            ("client_secret", form.client_secret.clone()),
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
        let page = ConfirmPage {
            nav: Nav::of(&viewer, "admin"),
            fields,
            effects,
        };
        return Ok(Html(page.render()?).into_response());
    }
    let now = state.now();
    let provider_changed = existing
        .as_ref()
        .is_some_and(|o| o.provider != change.provider);
    let secret_sealed = match &change.client_secret {
        Some(s) => Some(state.keyring.seal(s.as_bytes())),
        None if !provider_changed || change.provider == ProviderChoice::None => existing
            .as_ref()
            .and_then(|e| e.client_secret_sealed.clone()),
        None => None,
    };
    let (consent_state, consent_by, consent_at, consent_detail) = match &existing {
        Some(e)
            if !provider_changed
                && e.tenant == change.tenant
                && e.client_id == change.client_id =>
        {
            (
                e.consent_state,
                e.consent_by,
                e.consent_at,
                e.consent_detail.clone(),
            )
        }
        _ => (ConsentState::Unknown, None, None, None),
    };
    let settings = ProviderSettings {
        org_id: org,
        provider: change.provider,
        client_id: change.client_id.clone(),
        client_secret_sealed: if change.provider == ProviderChoice::None {
            None
        } else {
            secret_sealed
        },
        tenant: change.tenant.clone(),
        access_level: change.access_level,
        consent_state,
        consent_by,
        consent_at,
        consent_detail,
        purge_on_deauthorize: change.purge,
        updated_at: now,
    };
    state.store.save_provider_settings(&settings).await?;
    if provider_changed {
        // Old grants cannot be used with the new provider (or at all): drop
        // their tokens, keep the row so the recruiter sees why.
        let reason = match change.provider {
            ProviderChoice::None => {
                "Your organization's admin turned email and calendar integration off.".to_owned()
            }
            p => format!(
                "Your organization switched to {}. Authorize again to reconnect.",
                integ::provider_of(p)
                    .map(Provider::display_name)
                    .unwrap_or("another provider")
            ),
        };
        for g in &grants {
            state
                .store
                .put_grant(
                    &NewGrant {
                        org_id: g.org_id,
                        user_id: g.user_id,
                        capability: g.capability,
                        provider: g.provider,
                        status: GrantStatus::NeedsReauth,
                        status_reason: Some(&reason),
                        account_address: g.account_address.as_deref(),
                        scopes: "",
                        permission_version: g.permission_version,
                        legacy: g.legacy,
                        access_token_sealed: None,
                        refresh_token_sealed: None,
                        access_expires_at: None,
                    },
                    now,
                )
                .await?;
        }
    }
    let detail = serde_json::json!({"provider": change.provider.as_str(), "access_level": change.access_level.as_str(), "secret_changed": change.client_secret.is_some()});
    let _ = state
        .store
        .record_audit(
            &hirewire_store::NewAudit {
                org_id: Some(org),
                actor_user_id: Some(viewer.user.id),
                action: "integration.provider_saved",
                target: change.provider.as_str(),
                detail: &detail,
                ip: None,
            },
            now,
        )
        .await;
    Ok(Redirect::to("/admin/email-provider").into_response())
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
