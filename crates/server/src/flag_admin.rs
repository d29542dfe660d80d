//! An organization's admin and the Email Connect rollout: the API
//! (`GET`/`PUT /api/v1/admin/feature-flags/email-connect`) and the page
//! `/admin/email-connect`.
//!
//! Organizations are tenants. The server operator (`hirewire flags set`)
//! controls the mode (off / everyone / a percentage) and every organization;
//! an organization's admin sees the operator's mode and percentage, their
//! own organization's setting (`default`: follow the operator; `in`: every
//! user of the organization has it; `out`: nobody but allowlisted users) and
//! their own users, and changes only those. Other organizations are never
//! shown. A change that would hold scheduled emails needs a confirmation
//! (API: 409 `confirmation_required`, then `"confirm": true`).
//!
//! Stable API error codes: `forbidden` (403, not an admin),
//! `invalid_json` (400), `invalid_field` / `invalid_org_setting` /
//! `unknown_user` (422), `confirmation_required` (409).

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use hirewire_domain::email::AddressKey;
use hirewire_domain::ids::{OrgId, UserId};
use hirewire_store::{EMAIL_CONNECT, FlagActor, FlagEdit, FlagMode, OrgRule, Role, User};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::api::parse_json;
use crate::app::AppState;
use crate::auth::{AdminViewer, ApiCaller, CsrfForm};
use crate::error::{ApiError, ErrorBody, PageError};
use crate::flags::{self, Changed, Held, Rollout};
use crate::pages::Nav;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/email-connect", get(admin_page).post(admin_save))
}

/// The API routes, nested under `/api/v1`.
pub fn api_routes() -> Router<AppState> {
    Router::new().route(
        "/admin/feature-flags/email-connect",
        get(api_get).put(api_put),
    )
}

#[derive(OpenApi)]
#[openapi(
    paths(api_get, api_put),
    components(schemas(FlagResource, MemberResource, FlagBody))
)]
pub struct FlagDoc;

// ---- the organization's view ----------------------------------------------------------

/// A user of the organization and whether they have Email Connect.
#[derive(Serialize, ToSchema)]
pub struct MemberResource {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    /// On the organization's allowlist.
    pub allowlisted: bool,
    /// Has Email Connect now.
    pub enabled: bool,
    /// Why: `off`, `user_allowlisted`, `org_opted_in`, `org_opted_out`,
    /// `everyone`, `in_percentage` or `not_in_percentage`.
    pub reason: &'static str,
}

/// Email Connect's rollout as an organization's admin sees it.
#[derive(Serialize, ToSchema)]
pub struct FlagResource {
    /// `email_connect`.
    pub flag: &'static str,
    /// Set by the server operator: `off`, `everyone` or `targeted`.
    pub mode: &'static str,
    /// Set by the server operator: the share of users (by a stable hash of
    /// the user id) who have it in `targeted` mode.
    pub percent: u8,
    /// This organization's setting: `default`, `in` or `out`.
    pub org: &'static str,
    /// This organization's allowlisted users (emails).
    pub users: Vec<String>,
    pub members: Vec<MemberResource>,
    /// Queued emails of this organization's users who do not have Email
    /// Connect now: they are held until it is on for them again.
    pub held_emails: u64,
    pub updated_at: Option<String>,
}

struct OrgView {
    rollout: Rollout,
    mode: FlagMode,
    percent: u8,
    rule: Option<OrgRule>,
    members: Vec<User>,
    held: u64,
    updated_at: Option<jiff::Timestamp>,
}

async fn org_view(state: &AppState, org: OrgId) -> Result<OrgView, hirewire_store::StoreError> {
    let flag = state
        .store
        .feature_flag(EMAIL_CONNECT)
        .await?
        .ok_or(hirewire_store::StoreError::NotFound)?;
    let rollout = Rollout::from_flag(&flag);
    let held = state
        .store
        .queued_outbox_by_user(Some(org))
        .await?
        .into_iter()
        .filter(|(o, u, _)| !rollout.enabled(*o, *u))
        .map(|(_, _, n)| n)
        .sum();
    Ok(OrgView {
        mode: flag.mode,
        percent: flag.percent,
        rule: flag.org_rule(org),
        members: state.store.list_users(org).await?,
        rollout,
        held,
        updated_at: flag.updated_at,
    })
}

impl OrgView {
    fn resource(&self) -> FlagResource {
        let members: Vec<MemberResource> = self
            .members
            .iter()
            .map(|u| {
                let why = self.rollout.why(u.org_id, u.id);
                MemberResource {
                    id: u.id.get(),
                    email: u.email.to_string(),
                    display_name: u.display_name.clone(),
                    allowlisted: self.rollout.users.contains(&u.id),
                    enabled: why.enabled(),
                    reason: why.code(),
                }
            })
            .collect();
        FlagResource {
            flag: EMAIL_CONNECT,
            mode: self.mode.as_str(),
            percent: self.percent,
            org: rule_str(self.rule),
            users: members
                .iter()
                .filter(|m| m.allowlisted)
                .map(|m| m.email.clone())
                .collect(),
            members,
            held_emails: self.held,
            updated_at: self.updated_at.map(|t| t.to_string()),
        }
    }
}

fn rule_str(rule: Option<OrgRule>) -> &'static str {
    rule.map_or("default", OrgRule::as_str)
}

fn parse_rule(s: &str) -> Option<Option<OrgRule>> {
    match s {
        "default" => Some(None),
        "in" => Some(Some(OrgRule::In)),
        "out" => Some(Some(OrgRule::Out)),
        _ => None,
    }
}

/// The edit that sets `org`'s rule and allowlist to exactly these.
fn org_edit(
    view: &OrgView,
    org: OrgId,
    rule: Option<OrgRule>,
    wanted: &BTreeSet<UserId>,
) -> (FlagEdit, BTreeMap<UserId, OrgId>) {
    let current: BTreeSet<UserId> = view
        .members
        .iter()
        .map(|u| u.id)
        .filter(|u| view.rollout.users.contains(u))
        .collect();
    let edit = FlagEdit {
        orgs: vec![(org, rule)],
        add_users: wanted.difference(&current).copied().collect(),
        remove_users: current.difference(wanted).copied().collect(),
        ..FlagEdit::default()
    };
    let user_orgs = view.members.iter().map(|u| (u.id, org)).collect();
    (edit, user_orgs)
}

fn effects(view: &OrgView, held: &Held) -> Vec<String> {
    let mut out: Vec<String> = held.sentence().into_iter().collect();
    for (_, user, n) in &held.per_user {
        if let Some(u) = view.members.iter().find(|m| m.id == *user) {
            out.push(format!(
                "{} ({}): {n} scheduled email{}",
                u.display_name,
                u.email,
                if *n == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

// ---- API ------------------------------------------------------------------------------

fn admin_only(user: &User) -> Result<(), ApiError> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only organization admins can do this",
        ))
    }
}

/// Email Connect's rollout for the caller's organization (admins only).
#[utoipa::path(get, path = "/admin/feature-flags/email-connect", tag = "admin",
    responses((status = 200, body = FlagResource), (status = 403, body = ErrorBody)))]
async fn api_get(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<FlagResource>, ApiError> {
    admin_only(&user)?;
    Ok(Json(org_view(&state, user.org_id).await?.resource()))
}

/// The organization's setting and allowlist, replaced as a whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagBody {
    /// `default` (follow the operator), `in` (every user of the organization)
    /// or `out` (only allowlisted users).
    pub org: String,
    /// The organization's allowlisted users, by email; users not listed are
    /// taken off the allowlist.
    pub users: Vec<String>,
    /// Required when the change holds scheduled emails (see the 409 `confirmation_required`).
    #[serde(default)]
    pub confirm: bool,
}

/// Changes the organization's Email Connect setting and allowlist (admins
/// only). A change that would hold scheduled emails answers 409
/// `confirmation_required` saying how many, until sent again with
/// `"confirm": true`. The operator's mode and percentage are not changed here
/// (`hirewire flags set`). Every change is in the organization's audit log.
#[utoipa::path(put, path = "/admin/feature-flags/email-connect", tag = "admin", request_body = FlagBody,
    responses((status = 200, body = FlagResource), (status = 403, body = ErrorBody),
        (status = 409, description = "`confirmation_required`", body = ErrorBody),
        (status = 422, description = "`invalid_org_setting`, `unknown_user`, `invalid_field`", body = ErrorBody)))]
async fn api_put(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    body: Bytes,
) -> Result<Json<FlagResource>, ApiError> {
    admin_only(&user)?;
    let req: FlagBody = parse_json(&body)?;
    let rule = parse_rule(req.org.trim()).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_org_setting",
            format!("org is {:?}; use default, in or out", req.org),
        )
    })?;
    let view = org_view(&state, user.org_id).await?;
    let mut wanted = BTreeSet::new();
    let mut unknown = Vec::new();
    for email in &req.users {
        let key = AddressKey::of(email.trim());
        match view
            .members
            .iter()
            .find(|m| AddressKey::of(m.email.as_str()) == key)
        {
            Some(m) => {
                wanted.insert(m.id);
            }
            None => unknown.push(email.trim().to_owned()),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::unprocessable(
            "unknown_user",
            format!("no user {} in your organization", unknown.join(", ")),
        ));
    }
    let (edit, user_orgs) = org_edit(&view, user.org_id, rule, &wanted);
    let label = format!("admin {}", user.email);
    let actor = FlagActor {
        user: Some(user.id),
        label: &label,
        ip: None,
    };
    match flags::change_email_connect(
        &state,
        Some(user.org_id),
        &edit,
        &user_orgs,
        &actor,
        req.confirm,
    )
    .await?
    {
        Changed::Saved { .. } => Ok(Json(org_view(&state, user.org_id).await?.resource())),
        Changed::NeedsConfirmation(held) => Err(ApiError::conflict(
            "confirmation_required",
            format!(
                "{} Send again with \"confirm\": true to go ahead.",
                held.sentence().unwrap_or_default()
            ),
        )),
    }
}

// ---- page -----------------------------------------------------------------------------

struct MemberRow {
    id: i64,
    name: String,
    email: String,
    allowlisted: bool,
    enabled: bool,
    why: &'static str,
}

#[derive(Template)]
#[template(path = "admin_email_connect.html")]
struct FlagPage {
    nav: Option<Nav>,
    operator: String,
    operator_off: bool,
    org: &'static str,
    members: Vec<MemberRow>,
    held: u64,
    saved: bool,
}

#[derive(Template)]
#[template(path = "admin_email_connect_confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    org: String,
    users: Vec<i64>,
    effects: Vec<String>,
}

fn operator_words(mode: FlagMode, percent: u8) -> String {
    match mode {
        FlagMode::Off => "Turned off for everyone by the server operator: nobody can send from hirewire until it is turned back on. Your settings below apply from then.".into(),
        FlagMode::Everyone => "On for everyone by the server operator. You can opt your organization out, and still allow chosen users.".into(),
        FlagMode::Targeted => format!(
            "Rolled out gradually by the server operator: {percent}% of users, plus opted-in organizations and allowlisted users. You can opt your whole organization in or out, and allow chosen users."
        ),
    }
}

#[derive(Deserialize)]
struct SavedQuery {
    saved: Option<String>,
}

async fn admin_page(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(q): Query<SavedQuery>,
) -> Result<Response, PageError> {
    let view = org_view(&state, viewer.user.org_id).await?;
    let page = FlagPage {
        nav: Nav::of(&viewer, "admin"),
        operator: operator_words(view.mode, view.percent),
        operator_off: view.mode == FlagMode::Off,
        org: rule_str(view.rule),
        members: view
            .members
            .iter()
            .map(|u| {
                let why = view.rollout.why(u.org_id, u.id);
                MemberRow {
                    id: u.id.get(),
                    name: u.display_name.clone(),
                    email: u.email.to_string(),
                    allowlisted: view.rollout.users.contains(&u.id),
                    enabled: why.enabled(),
                    why: why.words(),
                }
            })
            .collect(),
        held: view.held,
        saved: q.saved.is_some(),
    };
    Ok(Html(page.render()?).into_response())
}

async fn admin_save(
    State(state): State<AppState>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::forbidden());
    }
    let org = viewer.user.org_id;
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let rule_raw = get("org").unwrap_or("default");
    let rule = parse_rule(rule_raw).ok_or_else(|| {
        PageError::bad_request("Choose how Email Connect applies to your organization.")
    })?;
    let view = org_view(&state, org).await?;
    let mut wanted = BTreeSet::new();
    for (_, v) in fields.iter().filter(|(k, _)| k == "user") {
        let id: i64 = v
            .parse()
            .map_err(|_| PageError::bad_request("The form names an unknown user."))?;
        // Only this organization's users can be chosen.
        let m = view
            .members
            .iter()
            .find(|m| m.id.get() == id)
            .ok_or_else(|| PageError::bad_request("The form names an unknown user."))?;
        wanted.insert(m.id);
    }
    let (edit, user_orgs) = org_edit(&view, org, rule, &wanted);
    let label = format!("admin {}", viewer.user.email);
    let actor = FlagActor {
        user: Some(viewer.user.id),
        label: &label,
        ip: None,
    };
    let confirmed = get("confirm") == Some("yes");
    match flags::change_email_connect(&state, Some(org), &edit, &user_orgs, &actor, confirmed)
        .await?
    {
        Changed::Saved { .. } => Ok(Redirect::to("/admin/email-connect?saved=1").into_response()),
        Changed::NeedsConfirmation(held) => {
            let page = ConfirmPage {
                nav: Nav::of(&viewer, "admin"),
                org: rule_raw.to_owned(),
                users: wanted.iter().map(|u| u.get()).collect(),
                effects: effects(&view, &held),
            };
            Ok(Html(page.render()?).into_response())
        }
    }
}
