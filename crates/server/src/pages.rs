//! Server-rendered pages. Templates auto-escape; forms carry a CSRF token and
//! come back with inline errors (and the input kept) when something is wrong.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar};
use hirewire_domain::email::MailDomain;
use hirewire_domain::ids::CandidateId;
use hirewire_store::{Direction, NewAudit, NewInMail, NewSession, StoreError};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{
    AdminViewer, ClientAddr, CsrfForm, PRESESSION_COOKIE, SESSION_COOKIE, Viewer, app_cookie,
    safe_next, session_token,
};
use crate::crypto::{constant_time_eq, random_token, token_digest, verify_password};
use crate::error::PageError;
use crate::users::{self, CandidateInput};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", axum::routing::post(sign_out))
        .route("/candidates", get(candidates))
        .route(
            "/candidates/new",
            get(new_candidate_page).post(create_candidate),
        )
        .route("/candidates/{id}", get(candidate_page))
        .route("/candidates/{id}/inmail", axum::routing::post(write_inmail))
        .route(
            "/settings",
            get(|| async { Redirect::to("/settings/email-calendar") }),
        )
        .route("/admin", get(|| async { Redirect::to("/admin/org") }))
        .route("/admin/org", get(admin_org).post(save_org))
}

/// What the top bar needs to know about the viewer.
pub struct Nav {
    pub name: String,
    pub email: String,
    pub initials: String,
    pub is_admin: bool,
    pub csrf: String,
    pub section: &'static str,
}

impl Nav {
    pub fn of(viewer: &Viewer, section: &'static str) -> Option<Nav> {
        Some(Nav {
            name: viewer.user.display_name.clone(),
            email: viewer.user.email.to_string(),
            initials: initials(&viewer.user.display_name),
            is_admin: viewer.is_admin(),
            csrf: viewer.csrf.clone(),
            section,
        })
    }
}

/// Up to two initials, Unicode-aware ("Élodie Durand" → "ÉD").
fn initials(name: &str) -> String {
    let s: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    if s.is_empty() { "?".into() } else { s }
}

fn html(t: &impl Template) -> Result<Response, PageError> {
    Ok(Html(t.render()?).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    status: u16,
    title: &'a str,
    message: &'a str,
}

pub fn render_error_page(status: StatusCode, title: &str, message: &str) -> String {
    ErrorPage {
        nav: None,
        status: status.as_u16(),
        title,
        message,
    }
    .render()
    .unwrap_or_else(|_| format!("{} {title}", status.as_u16()))
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        crate::error::ApiError::not_found("endpoint").into_response()
    } else {
        PageError::not_found().into_response()
    }
}

async fn home(State(state): State<AppState>, jar: CookieJar) -> Response {
    let signed_in = match session_token(&jar) {
        Some(t) => matches!(
            state
                .store
                .session_with_user(&token_digest(&t), state.now())
                .await,
            Ok(Some(_))
        ),
        None => false,
    };
    Redirect::to(if signed_in { "/candidates" } else { "/sign-in" }).into_response()
}

// ---- sign-in ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    csrf: String,
    next: String,
    email: String,
    error: Option<String>,
    signed_out: bool,
}

#[derive(Deserialize)]
struct SignInQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

async fn sign_in_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SignInQuery>,
) -> Result<Response, PageError> {
    let (jar, csrf) = presession(&state, jar);
    let page = SignInPage {
        nav: None,
        csrf,
        next: safe_next(q.next.as_deref().unwrap_or("/")).to_owned(),
        email: String::new(),
        error: None,
        signed_out: q.signed_out.is_some(),
    };
    Ok((jar, html(&page)?).into_response())
}

/// The pre-session CSRF token for the sign-in form, from its cookie or new.
fn presession(state: &AppState, jar: CookieJar) -> (CookieJar, String) {
    match jar.get(PRESESSION_COOKIE) {
        Some(c) if c.value().len() >= 32 => {
            let v = c.value().to_owned();
            (jar, v)
        }
        _ => {
            let token = random_token();
            (
                jar.add(app_cookie(state, PRESESSION_COOKIE, token.clone())),
                token,
            )
        }
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

const BAD_CREDENTIALS: &str =
    "That email and password don't match an account. Check both and try again.";

async fn sign_in(
    State(state): State<AppState>,
    jar: CookieJar,
    client: ClientAddr,
    axum::Form(form): axum::Form<SignInForm>,
) -> Result<Response, PageError> {
    let (jar, csrf) = presession(&state, jar);
    let again = |error: &str, status: StatusCode| -> Result<Response, PageError> {
        let page = SignInPage {
            nav: None,
            csrf: csrf.clone(),
            next: safe_next(&form.next).to_owned(),
            email: form.email.trim().to_owned(),
            error: Some(error.to_owned()),
            signed_out: false,
        };
        Ok((status, jar.clone(), html(&page)?).into_response())
    };
    if !constant_time_eq(form.csrf.as_bytes(), csrf.as_bytes()) {
        return again(
            "The sign-in form expired. Please try again.",
            StatusCode::BAD_REQUEST,
        );
    }
    let key = hirewire_domain::email::AddressKey::of(&form.email);
    let ip = client.text();
    let now = state.now();
    if !state.sign_in_limiter.allow(key.as_str(), ip.as_deref()) {
        audit_sign_in(
            &state,
            None,
            None,
            "auth.sign_in_throttled",
            key.as_str(),
            ip.as_deref(),
        )
        .await;
        return again(
            "Too many sign-in attempts. Wait a few minutes, then try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = state.store.user_by_email_key(&key).await?;
    let ok = match &user {
        Some(u) => u
            .password_hash
            .as_deref()
            .is_some_and(|h| verify_password(&form.password, h)),
        None => {
            // Spend the same effort as a real check, so timing does not tell
            // whether the account exists.
            users::burn_password_check(&state, &form.password);
            false
        }
    };
    let Some(user) = user.as_ref().filter(|_| ok).cloned() else {
        // A failure on a real account goes to its organization's log, where
        // its admins can see it; the page says the same thing either way.
        let org = user.as_ref().map(|u| u.org_id);
        audit_sign_in(
            &state,
            org,
            None,
            "auth.sign_in_failed",
            key.as_str(),
            ip.as_deref(),
        )
        .await;
        return again(BAD_CREDENTIALS, StatusCode::UNAUTHORIZED);
    };
    let token = random_token();
    let digest = token_digest(&token);
    let expires_at = now
        + jiff::SignedDuration::try_from(state.config.session_ttl).map_err(PageError::internal)?;
    state
        .store
        .create_session(
            &NewSession {
                token_digest: &digest,
                user_id: user.id,
                csrf_token: &random_token(),
                expires_at,
                user_agent: None,
                ip: ip.as_deref(),
            },
            now,
        )
        .await?;
    audit_sign_in(
        &state,
        Some(user.org_id),
        Some(user.id),
        "auth.signed_in",
        user.email.as_str(),
        ip.as_deref(),
    )
    .await;
    let jar = jar
        .remove(Cookie::build(PRESESSION_COOKIE).path("/").build())
        .add(app_cookie(&state, SESSION_COOKIE, token));
    let next = safe_next(&form.next);
    let next = if next == "/" { "/candidates" } else { next };
    Ok((jar, Redirect::to(next)).into_response())
}

async fn audit_sign_in(
    state: &AppState,
    org: Option<hirewire_domain::ids::OrgId>,
    actor: Option<hirewire_domain::ids::UserId>,
    action: &str,
    target: &str,
    ip: Option<&str>,
) {
    let detail = serde_json::json!({});
    let event = NewAudit {
        org_id: org,
        actor_user_id: actor,
        action,
        target,
        detail: &detail,
        ip,
    };
    if let Err(e) = state.store.record_audit(&event, state.now()).await {
        tracing::error!(error = %e, action, "could not record an audit event");
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(
    State(state): State<AppState>,
    jar: CookieJar,
    CsrfForm(viewer, _): CsrfForm<Empty>,
) -> Result<Response, PageError> {
    state.store.delete_session(&viewer.session_digest).await?;
    audit_sign_in(
        &state,
        Some(viewer.user.org_id),
        Some(viewer.user.id),
        "auth.signed_out",
        viewer.user.email.as_str(),
        None,
    )
    .await;
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/").build());
    Ok((jar, Redirect::to("/sign-in?signed_out=1")).into_response())
}

// ---- candidates -------------------------------------------------------------

pub struct CandidateRow {
    pub id: CandidateId,
    pub name: String,
    pub emails: Vec<String>,
    pub added: String,
}

#[derive(Template)]
#[template(path = "candidates.html")]
struct CandidatesPage {
    nav: Option<Nav>,
    q: String,
    candidates: Vec<CandidateRow>,
    next_cursor: Option<CandidateId>,
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    after: Option<String>,
}

const PAGE_SIZE: u32 = 50;

async fn candidates(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let search = q.q.unwrap_or_default().trim().to_owned();
    let after = match q.after.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<CandidateId>()
                .map_err(|_| PageError::bad_request("That page link is not valid."))?,
        ),
        None => None,
    };
    let page = state
        .store
        .list_candidates(
            viewer.user.org_id,
            Some(search.as_str()).filter(|s| !s.is_empty()),
            after,
            PAGE_SIZE,
        )
        .await?;
    let tz = viewer_zone(&viewer);
    let rows = page
        .candidates
        .into_iter()
        .map(|c| CandidateRow {
            id: c.id,
            name: c.name,
            emails: c
                .emails
                .into_iter()
                .map(|e| e.address.to_string())
                .collect(),
            added: c
                .created_at
                .to_zoned_datetime(tz.clone())
                .strftime("%b %-d, %Y")
                .to_string(),
        })
        .collect();
    html(&CandidatesPage {
        nav: Nav::of(&viewer, "candidates"),
        q: search,
        candidates: rows,
        next_cursor: page.next_after,
    })
}

fn viewer_zone(viewer: &Viewer) -> TimeZone {
    TimeZone::get(&viewer.user.time_zone).unwrap_or(TimeZone::UTC)
}

#[derive(Template, Default)]
#[template(path = "candidate_new.html")]
struct NewCandidatePage {
    nav: Option<Nav>,
    name: String,
    emails: String,
    name_error: Option<String>,
    emails_error: Option<String>,
    form_error: Option<String>,
}

async fn new_candidate_page(viewer: Viewer) -> Result<Response, PageError> {
    html(&NewCandidatePage {
        nav: Nav::of(&viewer, "candidates"),
        ..Default::default()
    })
}

#[derive(Deserialize)]
struct CandidateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    emails: String,
}

async fn create_candidate(
    State(state): State<AppState>,
    CsrfForm(viewer, form): CsrfForm<CandidateForm>,
) -> Result<Response, PageError> {
    let lines: Vec<&str> = form
        .emails
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut page = NewCandidatePage {
        nav: Nav::of(&viewer, "candidates"),
        name: form.name.clone(),
        emails: form.emails.clone(),
        ..Default::default()
    };
    let input = match CandidateInput::parse(&form.name, &lines) {
        Ok(input) => input,
        Err(errors) => {
            page.name_error = errors.name;
            page.emails_error = errors.emails;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, html(&page)?).into_response());
        }
    };
    match state
        .store
        .create_candidate(viewer.user.org_id, &input.name, &input.emails, state.now())
        .await
    {
        Ok(c) => {
            crate::sync::candidate_addresses_added(&state, c.org_id, &input.emails).await;
            Ok(Redirect::to(&format!("/candidates/{}", c.id)).into_response())
        }
        Err(StoreError::Conflict { what }) => {
            page.emails_error = Some(format!(
                "{what}. Open that candidate instead, or remove the address here."
            ));
            Ok((StatusCode::CONFLICT, html(&page)?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "candidate.html")]
struct CandidatePage {
    nav: Option<Nav>,
    id: CandidateId,
    name: String,
    emails: Vec<String>,
    timeline: crate::timeline::TimelineView,
    csrf: String,
    sandbox: &'static str,
    draft: String,
    body_error: Option<String>,
    scheduler: crate::scheduler_pages::SchedulerCard,
    compose: crate::compose_pages::ComposeCard,
}

#[derive(Deserialize)]
struct CandidateQuery {
    before: Option<String>,
    /// A Scheduler action's outcome, shown once on the Schedule card.
    scheduling: Option<String>,
}

async fn candidate_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<CandidateQuery>,
) -> Result<Response, PageError> {
    render_candidate(
        &state,
        &viewer,
        &id,
        q.before.as_deref(),
        q.scheduling.as_deref(),
        String::new(),
        None,
        Default::default(),
    )
    .await
    .map(IntoResponse::into_response)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn render_candidate(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    before: Option<&str>,
    scheduling: Option<&str>,
    draft: String,
    body_error: Option<String>,
    compose: crate::compose_pages::ComposeRetry,
) -> Result<(StatusCode, Response), PageError> {
    let id: CandidateId = id.parse().map_err(|_| PageError::not_found())?;
    let org = viewer.user.org_id;
    let candidate = state
        .store
        .candidate(org, id)
        .await?
        .ok_or_else(PageError::not_found)?;
    let timeline = crate::timeline::load(state, viewer, id, &candidate.name, before).await?;
    let scheduler = crate::scheduler_pages::card(state, viewer, id, scheduling).await?;
    let addresses: Vec<String> = candidate
        .emails
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    let compose = crate::compose_pages::card(state, viewer, id, &addresses, compose).await?;
    let status = if body_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = CandidatePage {
        nav: Nav::of(viewer, "candidates"),
        id,
        name: candidate.name,
        emails: candidate
            .emails
            .into_iter()
            .map(|e| e.address.to_string())
            .collect(),
        timeline,
        csrf: viewer.csrf.clone(),
        sandbox: hirewire_mail::IFRAME_SANDBOX,
        draft,
        body_error,
        scheduler,
        compose,
    };
    Ok((status, html(&page)?))
}

#[derive(Deserialize)]
struct InMailForm {
    #[serde(default)]
    body: String,
}

async fn write_inmail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, form): CsrfForm<InMailForm>,
) -> Result<Response, PageError> {
    match users::validate_inmail_body(&form.body) {
        Err(msg) => {
            let (status, page) = render_candidate(
                &state,
                &viewer,
                &id,
                None,
                None,
                form.body.clone(),
                Some(msg),
                Default::default(),
            )
            .await?;
            Ok((status, page).into_response())
        }
        Ok(body) => {
            let cid: CandidateId = id.parse().map_err(|_| PageError::not_found())?;
            let now = state.now();
            let new = NewInMail {
                candidate_id: cid,
                author_user_id: Some(viewer.user.id),
                direction: Direction::Outbound,
                body,
                sent_at: now,
            };
            state
                .store
                .create_inmail(viewer.user.org_id, &new, now)
                .await?;
            Ok(Redirect::to(&format!("/candidates/{cid}")).into_response())
        }
    }
}

// ---- settings & admin -------------------------------------------------------

#[derive(Template, Default)]
#[template(path = "admin_org.html")]
struct AdminOrgPage {
    nav: Option<Nav>,
    name: String,
    domains: String,
    name_error: Option<String>,
    domains_error: Option<String>,
    saved: bool,
}

#[derive(Deserialize)]
struct SavedQuery {
    saved: Option<String>,
}

async fn admin_org(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(q): Query<SavedQuery>,
) -> Result<Response, PageError> {
    let org = state
        .store
        .org_by_id(viewer.user.org_id)
        .await?
        .ok_or_else(PageError::not_found)?;
    html(&AdminOrgPage {
        nav: Nav::of(&viewer, "admin"),
        name: org.name,
        domains: org
            .domains
            .iter()
            .map(MailDomain::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        saved: q.saved.is_some(),
        ..Default::default()
    })
}

#[derive(Deserialize)]
struct OrgForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    domains: String,
}

async fn save_org(
    State(state): State<AppState>,
    CsrfForm(viewer, form): CsrfForm<OrgForm>,
) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::forbidden());
    }
    let mut page = AdminOrgPage {
        nav: Nav::of(&viewer, "admin"),
        name: form.name.clone(),
        domains: form.domains.clone(),
        ..Default::default()
    };
    let name = users::validate_name(&form.name, "The organization name");
    let mut domains = Vec::new();
    let mut bad = Vec::new();
    for line in form
        .domains
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match MailDomain::parse(line) {
            Ok(d) => domains.push(d),
            Err(_) => bad.push(line.to_owned()),
        }
    }
    if !bad.is_empty() {
        page.domains_error = Some(format!(
            "Not a mail domain: {}. Use a form like acme.example.",
            bad.join(", ")
        ));
    }
    match name {
        Err(e) => page.name_error = Some(e),
        Ok(name) if bad.is_empty() => {
            match state
                .store
                .update_org(viewer.user.org_id, &name, &domains)
                .await
            {
                Ok(_) => return Ok(Redirect::to("/admin/org?saved=1").into_response()),
                Err(StoreError::Conflict { what }) => page.name_error = Some(what.to_owned()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(_) => {}
    }
    Ok((StatusCode::UNPROCESSABLE_ENTITY, html(&page)?).into_response())
}

#[cfg(test)]
mod tests {
    use super::initials;

    #[test]
    fn initials_take_the_first_letters_of_two_words() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("élodie de la Tour"), "ÉD");
        assert_eq!(initials("  "), "?");
    }
}
