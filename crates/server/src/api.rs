//! The REST API under `/api/v1`, and its OpenAPI document.
//!
//! Conventions (documented in the OpenAPI document too):
//! - Bearer API tokens (`hirewire token create`).
//! - Errors: `{"error":{"code":"snake_case","message":"…"}}` with a 4xx status.
//! - Lists: `{"data":[…],"next_cursor":"…"|null}`; pass `cursor` to continue.
//! - POSTs that create honour `Idempotency-Key`: a retry with the same key and
//!   body gets the first response again; the same key with another body is 422.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::CandidateId;
use hirewire_store::{Candidate, Direction, IdemBegin, InMail, NewInMail, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ErrorBody};
use crate::users::{CandidateInput, validate_inmail_body, validate_name};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/candidates", get(list_candidates).post(create_candidate))
        .route(
            "/candidates/{id}",
            get(get_candidate).patch(update_candidate),
        )
        .route("/candidates/{id}/addresses", post(add_address))
        .route("/candidates/{id}/addresses/{email}", delete(remove_address))
        .route(
            "/candidates/{id}/inmail",
            get(list_inmail).post(create_inmail),
        )
        .route("/me/integrations", get(list_integrations))
        .route(
            "/me/integrations/{kind}/authorize",
            post(authorize_integration),
        )
        .route("/me/integrations/{kind}", delete(deauthorize_integration))
        .route("/admin/email-provider", get(get_provider).put(put_provider))
        .fallback(|| async { ApiError::not_found("endpoint") })
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hirewire API", version = "1", description = "Candidates, InMail, email & calendar integrations and the signed-in user. Authenticate with `Authorization: Bearer <token>` from `hirewire token create`."),
    paths(me, list_candidates, create_candidate, get_candidate, update_candidate, add_address, remove_address, list_inmail, create_inmail,
        list_integrations, authorize_integration, deauthorize_integration, get_provider, put_provider),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub async fn openapi_json() -> impl IntoResponse {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::timeline::TimelineDoc::openapi());
    doc.merge(crate::scheduling_api::SchedulingDoc::openapi());
    doc.merge(crate::compose_pages::EmailDoc::openapi());
    doc.merge(crate::flag_admin::FlagDoc::openapi());
    // Paths are served under /api/v1.
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_json().unwrap_or_default(),
    )
}

/// Parses a JSON body with stable error codes instead of axum's rejection text.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("invalid_field", format!("the JSON body does not fit: {e}"))
        }
        _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
    })
}

fn parse_id(raw: &str) -> Result<CandidateId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("candidate"))
}

// ---- resources --------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    id: i64,
    email: String,
    display_name: String,
    /// `admin` or `recruiter`.
    role: String,
    time_zone: String,
    organization: OrganizationResource,
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationResource {
    id: i64,
    name: String,
    domains: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CandidateResource {
    id: i64,
    name: String,
    emails: Vec<String>,
    /// RFC 3339, UTC.
    created_at: String,
    updated_at: String,
}

impl From<Candidate> for CandidateResource {
    fn from(c: Candidate) -> Self {
        Self {
            id: c.id.get(),
            name: c.name,
            emails: c
                .emails
                .into_iter()
                .map(|e| e.address.to_string())
                .collect(),
            created_at: c.created_at.to_string(),
            updated_at: c.updated_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CandidateList {
    data: Vec<CandidateResource>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InMailResource {
    id: i64,
    candidate_id: i64,
    /// `outbound` (to the candidate) or `inbound` (from them).
    direction: String,
    author_user_id: Option<i64>,
    body: String,
    sent_at: String,
}

impl From<InMail> for InMailResource {
    fn from(m: InMail) -> Self {
        Self {
            id: m.id.get(),
            candidate_id: m.candidate_id.get(),
            direction: m.direction.as_str().to_owned(),
            author_user_id: m.author_user_id.map(|u| u.get()),
            body: m.body,
            sent_at: m.sent_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InMailList {
    data: Vec<InMailResource>,
    next_cursor: Option<String>,
}

// ---- handlers ---------------------------------------------------------------

/// The user this token belongs to, and their organization.
#[utoipa::path(get, path = "/me", tag = "me",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
async fn me(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<MeResponse>, ApiError> {
    let org = state
        .store
        .org_by_id(user.org_id)
        .await?
        .ok_or_else(|| ApiError::internal("user without organization"))?;
    Ok(Json(MeResponse {
        id: user.id.get(),
        email: user.email.to_string(),
        display_name: user.display_name,
        role: user.role.as_str().to_owned(),
        time_zone: user.time_zone,
        organization: OrganizationResource {
            id: org.id.get(),
            name: org.name,
            domains: org.domains.iter().map(|d| d.as_str().to_owned()).collect(),
        },
    }))
}

#[derive(Deserialize, IntoParams)]
struct ListParams {
    /// Matches part of the name or of an address (case-insensitive).
    q: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
}

pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=200 => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 200",
        )),
    }
}

/// A `cursor` query value as the id it encodes; empty means the first page.
pub(crate) fn parse_cursor<T: std::str::FromStr>(
    cursor: Option<&str>,
) -> Result<Option<T>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
            })
        })
        .transpose()
}

/// Candidates of the caller's organization, newest first.
#[utoipa::path(get, path = "/candidates", tag = "candidates", params(ListParams),
    responses((status = 200, body = CandidateList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_candidates(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Query(p): Query<ListParams>,
) -> Result<Json<CandidateList>, ApiError> {
    let limit = page_limit(p.limit)?;
    let after = parse_cursor(p.cursor.as_deref())?;
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let page = state
        .store
        .list_candidates(user.org_id, q, after, limit)
        .await?;
    Ok(Json(CandidateList {
        data: page.candidates.into_iter().map(Into::into).collect(),
        next_cursor: page.next_after.map(|c| c.to_string()),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCandidateBody {
    name: String,
    #[serde(default)]
    emails: Vec<String>,
}

/// Adds a candidate. An address already used by another candidate of the
/// organization is a 409 `address_taken`, and nothing is created.
#[utoipa::path(post, path = "/candidates", tag = "candidates", request_body = NewCandidateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = CandidateResource), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_candidate(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    idempotent(
        &state,
        &user,
        &headers,
        Method::POST,
        "/candidates",
        &body,
        async {
            let req: NewCandidateBody = parse_json(&body)?;
            let refs: Vec<&str> = req.emails.iter().map(String::as_str).collect();
            let input = CandidateInput::parse(&req.name, &refs).map_err(|e| {
                ApiError::unprocessable(
                    "invalid_candidate",
                    e.name.or(e.emails).unwrap_or_default(),
                )
            })?;
            let c = state
                .store
                .create_candidate(user.org_id, &input.name, &input.emails, state.now())
                .await
                .map_err(address_conflict)?;
            crate::sync::candidate_addresses_added(&state, user.org_id, &input.emails).await;
            Ok((
                StatusCode::CREATED,
                serde_json::to_value(CandidateResource::from(c)).map_err(ApiError::internal)?,
            ))
        },
    )
    .await
}

fn address_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { what } => ApiError::conflict("address_taken", what),
        other => other.into(),
    }
}

/// One candidate.
#[utoipa::path(get, path = "/candidates/{id}", tag = "candidates", params(("id" = i64, Path)),
    responses((status = 200, body = CandidateResource), (status = 404, body = ErrorBody)))]
async fn get_candidate(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<CandidateResource>, ApiError> {
    let c = state
        .store
        .candidate(user.org_id, parse_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    Ok(Json(c.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCandidateBody {
    name: String,
}

/// Renames a candidate.
#[utoipa::path(patch, path = "/candidates/{id}", tag = "candidates", params(("id" = i64, Path)), request_body = UpdateCandidateBody,
    responses((status = 200, body = CandidateResource), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_candidate(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<CandidateResource>, ApiError> {
    let id = parse_id(&id)?;
    let req: UpdateCandidateBody = parse_json(&body)?;
    let name = validate_name(&req.name, "name")
        .map_err(|m| ApiError::unprocessable("invalid_candidate", m))?;
    let c = state
        .store
        .update_candidate_name(user.org_id, id, &name, state.now())
        .await
        .map_err(not_found_as("candidate"))?;
    Ok(Json(c.into()))
}

fn not_found_as(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddEmailBody {
    email: String,
}

/// Adds an email address to a candidate. (Sending an email to a candidate is
/// `POST /candidates/{id}/emails`.)
#[utoipa::path(post, path = "/candidates/{id}/addresses", tag = "candidates", params(("id" = i64, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")), request_body = AddEmailBody,
    responses((status = 201, body = CandidateResource), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_address(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/candidates/{id}/addresses");
    idempotent(&state, &user, &headers, Method::POST, &path, &body, async {
        let id = parse_id(&id)?;
        let req: AddEmailBody = parse_json(&body)?;
        let email = EmailAddress::parse(&req.email)
            .map_err(|e| ApiError::unprocessable("invalid_email", format!("email: {e}")))?;
        let c = state
            .store
            .add_candidate_email(user.org_id, id, &email, state.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("candidate"),
                other => address_conflict(other),
            })?;
        crate::sync::candidate_addresses_added(&state, user.org_id, std::slice::from_ref(&email))
            .await;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(CandidateResource::from(c)).map_err(ApiError::internal)?,
        ))
    })
    .await
}

/// Removes an email address from a candidate (compared case-insensitively).
#[utoipa::path(delete, path = "/candidates/{id}/addresses/{email}", tag = "candidates",
    params(("id" = i64, Path), ("email" = String, Path)),
    responses((status = 200, body = CandidateResource), (status = 404, body = ErrorBody)))]
async fn remove_address(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path((id, email)): Path<(String, String)>,
) -> Result<Json<CandidateResource>, ApiError> {
    let id = parse_id(&id)?;
    let c = state
        .store
        .remove_candidate_email(user.org_id, id, &AddressKey::of(&email), state.now())
        .await
        .map_err(not_found_as("candidate or address"))?;
    Ok(Json(c.into()))
}

#[derive(Deserialize, IntoParams)]
struct InMailParams {
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
}

/// The InMail conversation with a candidate, newest first.
#[utoipa::path(get, path = "/candidates/{id}/inmail", tag = "inmail", params(("id" = i64, Path), InMailParams),
    responses((status = 200, body = InMailList), (status = 404, body = ErrorBody)))]
async fn list_inmail(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    Query(p): Query<InMailParams>,
) -> Result<Json<InMailList>, ApiError> {
    let id = parse_id(&id)?;
    let limit = page_limit(p.limit)?;
    let before = parse_cursor(p.cursor.as_deref())?;
    state
        .store
        .candidate(user.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    let messages = state
        .store
        .list_inmail(user.org_id, id, before, limit)
        .await?;
    let next_cursor = (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(InMailList {
        data: messages.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInMailBody {
    body: String,
    /// `outbound` (default: written by the caller) or `inbound` (a reply recorded from the candidate).
    #[serde(default)]
    direction: Option<String>,
}

/// Writes an InMail to (or records one from) a candidate.
#[utoipa::path(post, path = "/candidates/{id}/inmail", tag = "inmail", params(("id" = i64, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")), request_body = NewInMailBody,
    responses((status = 201, body = InMailResource), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_inmail(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/candidates/{id}/inmail");
    idempotent(&state, &user, &headers, Method::POST, &path, &body, async {
        let id = parse_id(&id)?;
        let req: NewInMailBody = parse_json(&body)?;
        let text = validate_inmail_body(&req.body)
            .map_err(|m| ApiError::unprocessable("invalid_body", m))?;
        let direction = match req.direction.as_deref() {
            None | Some("outbound") => Direction::Outbound,
            Some("inbound") => Direction::Inbound,
            Some(other) => {
                return Err(ApiError::unprocessable(
                    "invalid_direction",
                    format!("direction must be outbound or inbound, not {other:?}"),
                ));
            }
        };
        let now = state.now();
        let new = NewInMail {
            candidate_id: id,
            author_user_id: (direction == Direction::Outbound).then_some(user.id),
            direction,
            body: text,
            sent_at: now,
        };
        let m = state
            .store
            .create_inmail(user.org_id, &new, now)
            .await
            .map_err(not_found_as("candidate"))?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(InMailResource::from(m)).map_err(ApiError::internal)?,
        ))
    })
    .await
}

// ---- idempotency ------------------------------------------------------------

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Runs `work` at most once per (caller, `Idempotency-Key`): a repeat with the
/// same request replays the stored response; a repeat with a different request
/// is 422 `idempotency_key_reused`; one still running is 409. Errors are not
/// stored, so a failed request can be retried with the same key.
pub(crate) async fn idempotent(
    state: &AppState,
    user: &hirewire_store::User,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &[u8],
    work: impl Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 characters",
                ));
            }
            Some(k.to_owned())
        }
    };
    let Some(key) = key else {
        let (status, value) = work.await?;
        return Ok((status, Json(value)).into_response());
    };
    let fingerprint = hex_digest(&[
        method.as_str().as_bytes(),
        b" ",
        path.as_bytes(),
        b"\n",
        body,
    ]);
    match state
        .store
        .idempotency_begin(user.id, &key, &fingerprint, state.now())
        .await?
    {
        IdemBegin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            Ok((
                status,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::HeaderName::from_static("idempotent-replayed"),
                        "true",
                    ),
                ],
                body,
            )
                .into_response())
        }
        IdemBegin::InProgress => Err(ApiError::conflict(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
        IdemBegin::Mismatch => Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )),
        IdemBegin::New => match work.await {
            Ok((status, value)) => {
                let bytes = serde_json::to_vec(&value).map_err(ApiError::internal)?;
                state
                    .store
                    .idempotency_finish(user.id, &key, status.as_u16(), &bytes)
                    .await?;
                Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
            }
            Err(e) => {
                if let Err(abandon) = state.store.idempotency_abandon(user.id, &key).await {
                    tracing::error!(error = %abandon, "could not release an idempotency key");
                }
                Err(e)
            }
        },
    }
}

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ---- email & calendar integrations ------------------------------------------------

use crate::integrations::{self as integ, Notice};
use hirewire_store::{CapabilityKind, parse_capability};

#[derive(Serialize, ToSchema)]
pub struct IntegrationResource {
    /// `inbox` or `calendar`.
    kind: String,
    /// `active`, `needs_reauth`, `waiting_admin`, `not_connected` or `unavailable`.
    status: String,
    status_label: String,
    /// The synced account, as the provider reported it.
    address: Option<String>,
    /// Why, and who must act.
    detail: Option<String>,
    can_authorize: bool,
    can_deauthorize: bool,
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationList {
    /// `Microsoft 365`, `Google Workspace`, or null when none is chosen.
    provider: Option<String>,
    data: Vec<IntegrationResource>,
}

#[derive(Serialize, ToSchema)]
pub struct AuthorizationUrl {
    /// Open this in the user's browser; the provider redirects back to hirewire,
    /// where the user must be signed in as the same person.
    authorization_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct Message {
    message: String,
}

fn kind_param(raw: &str) -> Result<CapabilityKind, ApiError> {
    parse_capability(raw)
        .ok_or_else(|| ApiError::not_found("integration kind (use inbox or calendar)"))
}

fn notice_error(n: Notice) -> ApiError {
    let status = match n {
        Notice::NotConnected(_) => StatusCode::NOT_FOUND,
        Notice::NoProvider | Notice::NotConfigured | Notice::EmailOff => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, n.code(), n.message(None))
}

/// The caller's inbox and calendar connections.
#[utoipa::path(get, path = "/me/integrations", tag = "integrations",
    responses((status = 200, body = IntegrationList), (status = 401, body = ErrorBody)))]
async fn list_integrations(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<IntegrationList>, ApiError> {
    let (provider, rows) = integ::rows(&state, &user).await?;
    Ok(Json(IntegrationList {
        provider: provider.map(|p| p.display_name().to_owned()),
        data: rows
            .into_iter()
            .map(|r| IntegrationResource {
                kind: r.kind.as_str().to_owned(),
                status: r.status.to_owned(),
                status_label: r.status_label,
                address: r.address,
                detail: r.detail,
                can_authorize: r.can_authorize,
                can_deauthorize: r.can_deauthorize,
            })
            .collect(),
    }))
}

/// Starts authorizing `kind`: returns the provider URL for the user's browser.
#[utoipa::path(post, path = "/me/integrations/{kind}/authorize", tag = "integrations",
    params(("kind" = String, Path, description = "inbox or calendar")),
    responses((status = 200, body = AuthorizationUrl), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn authorize_integration(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(kind): Path<String>,
) -> Result<Json<AuthorizationUrl>, ApiError> {
    let kind = kind_param(&kind)?;
    let url = integ::start_authorize(&state, &user, integ::API_SESSION, kind, None)
        .await
        .map_err(notice_error)?;
    Ok(Json(AuthorizationUrl {
        authorization_url: url.to_string(),
    }))
}

/// Deauthorizes `kind`: deletes its tokens (and revokes at Google when nothing else uses the grant).
#[utoipa::path(delete, path = "/me/integrations/{kind}", tag = "integrations",
    params(("kind" = String, Path, description = "inbox or calendar")),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody)))]
async fn deauthorize_integration(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(kind): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let kind = kind_param(&kind)?;
    let notice = integ::deauthorize(&state, &user, kind)
        .await
        .map_err(notice_error)?;
    Ok(Json(Message {
        message: notice.message(None),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ProviderResource {
    /// `microsoft`, `google` or `none`.
    provider: String,
    client_id: String,
    /// Whether a client secret is stored (it is never returned).
    client_secret_set: bool,
    tenant: Option<String>,
    /// `send_and_view`, `view_only` or `off`.
    access_level: String,
    purge_on_deauthorize: bool,
    /// `recorded`, `not_required`, `unknown` or `needed`.
    consent_state: String,
    consent_detail: Option<String>,
    consent_at: Option<String>,
    /// Register these exactly with the provider.
    redirect_uris: Vec<String>,
}

fn admin_only(user: &hirewire_store::User) -> Result<(), ApiError> {
    if user.role == hirewire_store::Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only organization admins can do this",
        ))
    }
}

async fn provider_resource(
    state: &AppState,
    user: &hirewire_store::User,
) -> Result<ProviderResource, ApiError> {
    let s = state.store.provider_settings(user.org_id).await?;
    Ok(ProviderResource {
        provider: s
            .as_ref()
            .map(|s| s.provider.as_str())
            .unwrap_or("none")
            .to_owned(),
        client_id: s.as_ref().map(|s| s.client_id.clone()).unwrap_or_default(),
        client_secret_set: s.as_ref().is_some_and(|s| s.client_secret_sealed.is_some()),
        tenant: s.as_ref().and_then(|s| s.tenant.clone()),
        access_level: s
            .as_ref()
            .map(|s| s.access_level.as_str())
            .unwrap_or("send_and_view")
            .to_owned(),
        purge_on_deauthorize: s.as_ref().is_some_and(|s| s.purge_on_deauthorize),
        consent_state: s
            .as_ref()
            .map(|s| s.consent_state.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        consent_detail: s.as_ref().and_then(|s| s.consent_detail.clone()),
        consent_at: s.as_ref().and_then(|s| s.consent_at).map(|t| t.to_string()),
        redirect_uris: vec![
            integ::redirect_uri(state, hirewire_providers::Provider::Microsoft),
            integ::redirect_uri(state, hirewire_providers::Provider::Google),
        ],
    })
}

/// The organization's email provider settings (admins only).
#[utoipa::path(get, path = "/admin/email-provider", tag = "admin",
    responses((status = 200, body = ProviderResource), (status = 403, body = ErrorBody)))]
async fn get_provider(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<ProviderResource>, ApiError> {
    admin_only(&user)?;
    Ok(Json(provider_resource(&state, &user).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// `microsoft`, `google` or `none`.
    provider: String,
    #[serde(default)]
    client_id: String,
    /// Omit to keep the stored secret.
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    tenant: String,
    /// `send_and_view`, `view_only` or `off`.
    access_level: String,
    #[serde(default)]
    purge_on_deauthorize: bool,
    /// Required when the change affects existing grants (see the 409 `confirmation_required`).
    #[serde(default)]
    confirm: bool,
}

/// Changes the organization's email provider settings (admins only). A change
/// that affects existing grants answers 409 `confirmation_required` with what
/// would happen, until sent again with `"confirm": true`.
#[utoipa::path(put, path = "/admin/email-provider", tag = "admin", request_body = ProviderBody,
    responses((status = 200, body = ProviderResource), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_provider(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    body: Bytes,
) -> Result<Json<ProviderResource>, ApiError> {
    admin_only(&user)?;
    let req: ProviderBody = parse_json(&body)?;
    let existing = state.store.provider_settings(user.org_id).await?;
    let input = integ::ProviderInput {
        provider: &req.provider,
        client_id: &req.client_id,
        client_secret: &req.client_secret,
        tenant: &req.tenant,
        access_level: &req.access_level,
        purge_on_deauthorize: req.purge_on_deauthorize,
    };
    let change = integ::validate_provider_input(&input, existing.as_ref())
        .map_err(|m| ApiError::unprocessable("invalid_provider_settings", m))?;
    match integ::save_provider(&state, &user, existing, change, req.confirm).await? {
        integ::SaveOutcome::Saved => Ok(Json(provider_resource(&state, &user).await?)),
        integ::SaveOutcome::NeedsConfirmation(effects) => Err(ApiError::conflict(
            "confirmation_required",
            format!(
                "{} Send again with \"confirm\": true to go ahead.",
                effects.join(" ")
            ),
        )),
    }
}
