//! The Scheduler's REST API: the public booking endpoints (the link token is
//! the credential; no sign-in) and the recruiter's settings and links.
//!
//! Errors keep the API's shape, `{"error":{"code","message"}}`, and add what a
//! client needs to recover: `fields` for validation problems and `slots` (fresh
//! ones) with `slot_taken`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hirewire_domain::ids::{CandidateId, SchedulingLinkId};
use hirewire_store::{
    Booking, BookingStatus, LinkFilter, MeetingKind, MeetingLocation, Role, SchedulingLink,
    SchedulingSettings, StoreError,
};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ErrorBody};
use crate::scheduling::{
    self as sched, BookError, BookingInput, CreateLinkError, LinkContext, LinkProblem, OpenError,
    ProviderTrouble, SlotQuery,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/booking/{token}", get(get_link).post(post_booking))
        .route("/booking/{token}/slots", get(get_slots))
        .route("/booking/{token}/reschedule", post(post_reschedule))
        .route("/booking/{token}/cancel", post(post_cancel))
        .route(
            "/me/scheduling-settings",
            get(get_settings).put(put_settings),
        )
        .route("/scheduling-links", get(my_links))
        .route("/scheduling-links/{id}/revoke", post(revoke_link))
        .route(
            "/candidates/{id}/scheduling-links",
            get(candidate_links).post(create_link),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        get_link,
        get_slots,
        post_booking,
        post_reschedule,
        post_cancel,
        get_settings,
        put_settings,
        my_links,
        candidate_links,
        create_link,
        revoke_link
    ),
    components(schemas(
        SlotList,
        SlotResource,
        BookingResource,
        AttendeeResource,
        LinkResource,
        PublicLink,
        BookingBody,
        RescheduleBody,
        NewLinkBody,
        BookingErrorBody,
        BookingErrorDetail,
        FieldProblem
    ))
)]
pub struct SchedulingDoc;

// ---- resources ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct SlotResource {
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
}

#[derive(Serialize, ToSchema)]
pub struct SlotList {
    /// The zone the window and the grid were computed in.
    pub time_zone: String,
    pub slots: Vec<SlotResource>,
}

#[derive(Serialize, ToSchema)]
pub struct AttendeeResource {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub note: Option<String>,
    pub time_zone: String,
}

#[derive(Serialize, ToSchema)]
pub struct BookingResource {
    pub id: i64,
    /// `confirmed` or `cancelled`.
    pub status: String,
    /// `phone_screen` or `interview`.
    pub meeting_kind: String,
    pub start: String,
    pub end: String,
    pub attendee: AttendeeResource,
    /// The invitation's iCalendar UID, once the calendar event exists.
    pub ical_uid: Option<String>,
    /// `created`, or `pending` while the recruiter's calendar is being updated.
    pub calendar_event: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Booking> for BookingResource {
    fn from(b: &Booking) -> Self {
        BookingResource {
            id: b.id.get(),
            status: b.status.as_str().to_owned(),
            meeting_kind: b.meeting_kind.as_str().to_owned(),
            start: b.slot.starts_at.to_string(),
            end: b.slot.ends_at.to_string(),
            attendee: AttendeeResource {
                name: b.attendee.name.clone(),
                email: b.attendee.email.clone(),
                phone: b.attendee.phone.clone(),
                note: b.attendee.note.clone(),
                time_zone: b.attendee.time_zone.clone(),
            },
            ical_uid: b.ical_uid.clone(),
            calendar_event:
                if b.provider_event_id.is_some() || b.status == BookingStatus::Cancelled {
                    "created"
                } else {
                    "pending"
                }
                .to_owned(),
            created_at: b.created_at.to_string(),
            updated_at: b.updated_at.to_string(),
        }
    }
}

/// What the public side may know about a link.
#[derive(Serialize, ToSchema)]
pub struct PublicLink {
    /// `sent`, `opened`, `booked`, `expired` or `revoked`.
    pub status: String,
    pub meeting_kind: String,
    pub duration_minutes: u32,
    /// `phone`, `video` or `address`.
    pub location: String,
    pub address: Option<String>,
    pub recruiter_name: String,
    /// The recruiter's zone (the default for slot queries).
    pub recruiter_time_zone: String,
    pub candidate_name: String,
    /// Prefills the form's email.
    pub candidate_email: Option<String>,
    pub expires_at: String,
    pub booking: Option<BookingResource>,
}

/// A link as its recruiter's org sees it.
#[derive(Serialize, ToSchema)]
pub struct LinkResource {
    pub id: i64,
    pub candidate_id: i64,
    pub recruiter_id: i64,
    pub meeting_kind: String,
    pub duration_minutes: Option<u32>,
    /// `sent`, `opened`, `booked`, `expired` or `revoked`.
    pub status: String,
    /// The booking page (`null` for links made before tokens were kept).
    pub url: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub opened_at: Option<String>,
    pub revoked_at: Option<String>,
    pub booking: Option<BookingResource>,
}

async fn link_resource(state: &AppState, l: &SchedulingLink) -> Result<LinkResource, StoreError> {
    let booking = match l.booking_id {
        Some(id) => state.store.booking(l.org_id, id).await?,
        None => None,
    };
    Ok(LinkResource {
        id: l.id.get(),
        candidate_id: l.candidate_id.get(),
        recruiter_id: l.user_id.get(),
        meeting_kind: l.meeting_kind.as_str().to_owned(),
        duration_minutes: l.meeting.as_ref().map(|m| m.duration_minutes),
        status: l.status.as_str().to_owned(),
        url: sched::link_url(state, l),
        created_at: l.created_at.to_string(),
        expires_at: l.expires_at.to_string(),
        opened_at: l.opened_at.map(|t| t.to_string()),
        revoked_at: l.revoked_at.map(|t| t.to_string()),
        booking: booking.as_ref().map(Into::into),
    })
}

// ---- errors ---------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct BookingErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
    /// With `slot_taken`/`day_full`: fresh slots to pick from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<Vec<SlotResource>>,
}

#[derive(Serialize, ToSchema)]
pub struct BookingErrorBody {
    pub error: BookingErrorDetail,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(BookingErrorBody {
            error: BookingErrorDetail {
                code: code.into(),
                message: message.into(),
                fields: Vec::new(),
                slots: None,
            },
        }),
    )
        .into_response()
}

fn link_error(p: LinkProblem) -> Response {
    error(
        p.status(),
        p.code(),
        format!("{}. {}", p.title(), p.message()),
    )
}

fn open_error(e: OpenError) -> Response {
    match e {
        OpenError::Link(p) => link_error(p),
        OpenError::NotOffered => error(
            StatusCode::GONE,
            "meeting_not_offered",
            "The recruiter no longer offers this kind of meeting. Ask them for a new link.",
        ),
        OpenError::Settings(s) => ApiError::internal(s).into_response(),
        OpenError::Store(s) => ApiError::from(s).into_response(),
    }
}

fn trouble(t: &ProviderTrouble) -> Response {
    if let ProviderTrouble::Internal(cause) = t {
        tracing::error!(%cause, "scheduler provider failure");
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "calendar_unavailable",
        t.candidate_message(),
    )
}

fn slot_resources(ctx: &LinkContext, starts: &[Timestamp]) -> Vec<SlotResource> {
    let len = SignedDuration::from_mins(i64::from(ctx.meeting.duration_minutes));
    starts
        .iter()
        .map(|s| SlotResource {
            start: s.to_string(),
            end: (*s + len).to_string(),
        })
        .collect()
}

fn book_error(e: BookError, ctx_for_slots: Option<&LinkContext>) -> Response {
    match e {
        BookError::Link(p) => link_error(p),
        BookError::Invalid(fields) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(BookingErrorBody {
                error: BookingErrorDetail {
                    code: "invalid".into(),
                    message: fields
                        .iter()
                        .map(|f| f.message.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    fields: fields
                        .into_iter()
                        .map(|f| FieldProblem {
                            field: f.field.into(),
                            message: f.message,
                        })
                        .collect(),
                    slots: None,
                },
            }),
        )
            .into_response(),
        BookError::SlotTaken { slots, day_full } => {
            let (code, message) = if day_full {
                (
                    "day_full",
                    "The recruiter's day is fully booked. Pick another day.",
                )
            } else {
                ("slot_taken", "That time was just taken. Pick another time.")
            };
            (
                StatusCode::CONFLICT,
                Json(BookingErrorBody {
                    error: BookingErrorDetail {
                        code: code.into(),
                        message: message.into(),
                        fields: Vec::new(),
                        slots: Some(
                            ctx_for_slots
                                .map(|c| slot_resources(c, &slots))
                                .unwrap_or_default(),
                        ),
                    },
                }),
            )
                .into_response()
        }
        BookError::Provider(t) => trouble(&t),
        BookError::Store(s) => ApiError::from(s).into_response(),
    }
}

// ---- public: booking --------------------------------------------------------------

#[utoipa::path(get, path = "/booking/{token}", tag = "booking", params(("token" = String, Path)),
    responses((status = 200, body = PublicLink), (status = 404, body = BookingErrorBody), (status = 410, body = BookingErrorBody)))]
async fn get_link(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let ctx = match sched::open_link_cached(&state, &token).await {
        Ok(c) => c,
        Err(e) => return open_error(e),
    };
    let (location, address) = match &ctx.meeting.location {
        MeetingLocation::Phone => ("phone", None),
        MeetingLocation::Video => ("video", None),
        MeetingLocation::Address(a) => ("address", Some(a.clone())),
    };
    Json(PublicLink {
        status: ctx.link.status.as_str().into(),
        meeting_kind: ctx.link.meeting_kind.as_str().into(),
        duration_minutes: ctx.meeting.duration_minutes,
        location: location.into(),
        address,
        recruiter_name: ctx.recruiter.display_name.clone(),
        recruiter_time_zone: ctx.recruiter.time_zone.clone(),
        candidate_name: ctx.candidate_name.clone(),
        candidate_email: ctx.candidate_email.clone(),
        expires_at: ctx.link.expires_at.to_string(),
        booking: ctx.booking.as_ref().map(Into::into),
    })
    .into_response()
}

#[derive(Deserialize, IntoParams)]
pub struct SlotParams {
    /// RFC 3339 instant, or a date `YYYY-MM-DD` (its start in `tz`). Default: now.
    pub from: Option<String>,
    /// RFC 3339 instant, or a date (exclusive; its start in `tz`). Default: `from` + 7 days. At most 62 days after `from`.
    pub to: Option<String>,
    /// IANA zone of the candidate (the grid). Default: the recruiter's.
    pub tz: Option<String>,
}

/// Parses a window bound: an instant, or a date's start in `zone`.
pub fn parse_bound(raw: &str, zone: &TimeZone) -> Option<Timestamp> {
    let raw = raw.trim();
    if let Ok(t) = raw.parse::<Timestamp>() {
        return Some(t);
    }
    let date: jiff::civil::Date = raw.parse().ok()?;
    date.to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| z.timestamp())
}

/// Resolves `tz`/`from`/`to` of a slot request (shared with the booking page).
pub fn slot_query(
    ctx: &LinkContext,
    now: Timestamp,
    p: &SlotParams,
) -> Result<SlotQuery, (&'static str, String)> {
    let tz =
        p.tz.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(&ctx.recruiter.time_zone)
            .to_owned();
    if !sched::valid_zone(&tz) {
        return Err((
            "invalid_time_zone",
            format!("{tz:?} is not an IANA time zone such as Europe/Paris"),
        ));
    }
    let zone = TimeZone::get(&tz).map_err(|e| ("invalid_time_zone", e.to_string()))?;
    let bound =
        |raw: &Option<String>, name: &str| -> Result<Option<Timestamp>, (&'static str, String)> {
            match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(r) => parse_bound(r, &zone).map(Some).ok_or((
                    "invalid_window",
                    format!("`{name}` must be an RFC 3339 instant or a date YYYY-MM-DD"),
                )),
            }
        };
    let from = bound(&p.from, "from")?.unwrap_or(now);
    let to = bound(&p.to, "to")?.unwrap_or(from + SignedDuration::from_hours(24 * 7));
    if to <= from {
        return Err(("invalid_window", "`to` must be after `from`".into()));
    }
    if to.duration_since(from) > SignedDuration::from_hours(24 * sched::MAX_QUERY_DAYS) {
        return Err((
            "window_too_long",
            format!("ask for at most {} days at a time", sched::MAX_QUERY_DAYS),
        ));
    }
    Ok(SlotQuery {
        time_zone: tz,
        from,
        to,
    })
}

#[utoipa::path(get, path = "/booking/{token}/slots", tag = "booking", params(("token" = String, Path), SlotParams),
    responses((status = 200, body = SlotList), (status = 400, body = BookingErrorBody), (status = 404, body = BookingErrorBody),
        (status = 410, body = BookingErrorBody), (status = 503, body = BookingErrorBody)))]
async fn get_slots(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(p): Query<SlotParams>,
) -> Response {
    let ctx = match sched::open_link_cached(&state, &token).await {
        Ok(c) => c,
        Err(e) => return open_error(e),
    };
    // A booked link offers slots for rescheduling (its own meeting excluded).
    let except = match ctx.bookable() {
        Ok(()) => None,
        Err(_) => match ctx.manageable(state.now()) {
            Ok(b) => Some(b.clone()),
            Err(p) => return link_error(p),
        },
    };
    let q = match slot_query(&ctx, state.now(), &p) {
        Ok(q) => q,
        Err((code, msg)) => return error(StatusCode::BAD_REQUEST, code, msg),
    };
    match sched::slots(&state, &ctx, &q, except.as_ref()).await {
        Ok(starts) => Json(SlotList {
            time_zone: q.time_zone,
            slots: slot_resources(&ctx, &starts),
        })
        .into_response(),
        Err(t) => trouble(&t),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct BookingBody {
    /// One of the offered slot starts (RFC 3339).
    pub start: String,
    pub name: String,
    /// Defaults to the candidate's known address.
    #[serde(default)]
    pub email: Option<String>,
    /// Required for phone screens.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// The candidate's IANA zone.
    pub time_zone: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RescheduleBody {
    pub start: String,
    pub time_zone: String,
}

/// The link's context, for the slots of a refusal (best effort).
async fn context_for(state: &AppState, token: &str) -> Option<LinkContext> {
    sched::open_link(state, token).await.ok()
}

#[utoipa::path(post, path = "/booking/{token}", tag = "booking", params(("token" = String, Path)), request_body = BookingBody,
    responses((status = 201, body = BookingResource), (status = 409, body = BookingErrorBody), (status = 410, body = BookingErrorBody),
        (status = 422, body = BookingErrorBody), (status = 503, body = BookingErrorBody)))]
async fn post_booking(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let b: BookingBody = match crate::api::parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let input = BookingInput {
        start: b.start,
        name: b.name,
        email: b.email.unwrap_or_default(),
        phone: b.phone.unwrap_or_default(),
        note: b.note.unwrap_or_default(),
        time_zone: b.time_zone,
    };
    match sched::book(&state, &token, &input).await {
        Ok((_, booking)) => {
            (StatusCode::CREATED, Json(BookingResource::from(&booking))).into_response()
        }
        Err(e) => {
            let ctx = context_for(&state, &token).await;
            book_error(e, ctx.as_ref())
        }
    }
}

#[utoipa::path(post, path = "/booking/{token}/reschedule", tag = "booking", params(("token" = String, Path)), request_body = RescheduleBody,
    responses((status = 200, body = BookingResource), (status = 409, body = BookingErrorBody), (status = 410, body = BookingErrorBody),
        (status = 422, body = BookingErrorBody)))]
async fn post_reschedule(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let b: RescheduleBody = match crate::api::parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let input = BookingInput {
        start: b.start,
        time_zone: b.time_zone,
        ..Default::default()
    };
    match sched::reschedule(&state, &token, &input).await {
        Ok((_, booking)) => Json(BookingResource::from(&booking)).into_response(),
        Err(e) => {
            let ctx = context_for(&state, &token).await;
            book_error(e, ctx.as_ref())
        }
    }
}

#[utoipa::path(post, path = "/booking/{token}/cancel", tag = "booking", params(("token" = String, Path)),
    responses((status = 200, body = BookingResource), (status = 409, body = BookingErrorBody), (status = 410, body = BookingErrorBody)))]
async fn post_cancel(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match sched::cancel(&state, &token).await {
        Ok((_, booking)) => Json(BookingResource::from(&booking)).into_response(),
        Err(e) => book_error(e, None),
    }
}

// ---- recruiter: settings ------------------------------------------------------------

#[utoipa::path(get, path = "/me/scheduling-settings", tag = "scheduling",
    responses((status = 200, description = "The settings (the defaults until saved)", body = Object)))]
async fn get_settings(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<SchedulingSettings>, ApiError> {
    Ok(Json(sched::settings_of(&state, &user).await?))
}

#[utoipa::path(put, path = "/me/scheduling-settings", tag = "scheduling", request_body = Object,
    responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    body: Bytes,
) -> Result<Json<SchedulingSettings>, ApiError> {
    let settings: SchedulingSettings = crate::api::parse_json(&body)?;
    state
        .store
        .save_scheduling_settings(user.org_id, user.id, &settings, state.now())
        .await?;
    state.scheduler.invalidate(user.id);
    Ok(Json(settings))
}

// ---- recruiter: links -------------------------------------------------------------

#[utoipa::path(get, path = "/scheduling-links", tag = "scheduling",
    responses((status = 200, description = "The caller's links, newest first", body = [LinkResource])))]
async fn my_links(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
) -> Result<Json<Vec<LinkResource>>, ApiError> {
    let links = state
        .store
        .list_links(user.org_id, LinkFilter::User(user.id), state.now())
        .await?;
    let mut out = Vec::with_capacity(links.len());
    for l in &links {
        out.push(link_resource(&state, l).await?);
    }
    Ok(Json(out))
}

fn candidate_id(raw: &str) -> Result<CandidateId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("candidate"))
}

#[utoipa::path(get, path = "/candidates/{id}/scheduling-links", tag = "scheduling", params(("id" = i64, Path)),
    responses((status = 200, body = [LinkResource]), (status = 404, body = ErrorBody)))]
async fn candidate_links(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<Vec<LinkResource>>, ApiError> {
    let id = candidate_id(&id)?;
    state
        .store
        .candidate(user.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    let links = state
        .store
        .list_links(user.org_id, LinkFilter::Candidate(id), state.now())
        .await?;
    let mut out = Vec::with_capacity(links.len());
    for l in &links {
        out.push(link_resource(&state, l).await?);
    }
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
pub struct NewLinkBody {
    /// `phone_screen` or `interview`.
    pub meeting_kind: String,
    /// 15 to 120; default: the meeting type's duration in the recruiter's settings.
    #[serde(default)]
    pub duration_minutes: Option<u32>,
    /// 1, 2 or 3 (default 2).
    #[serde(default)]
    pub expires_in_weeks: Option<u32>,
}

#[utoipa::path(post, path = "/candidates/{id}/scheduling-links", tag = "scheduling", params(("id" = i64, Path)), request_body = NewLinkBody,
    responses((status = 201, body = LinkResource), (status = 404, body = ErrorBody), (status = 409, description = "`calendar_not_ready`: authorize the calendar first", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_link(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<LinkResource>), ApiError> {
    let id = candidate_id(&id)?;
    let b: NewLinkBody = crate::api::parse_json(&body)?;
    let kind: MeetingKind = b.meeting_kind.parse().map_err(|_| {
        ApiError::unprocessable(
            "invalid_field",
            "meeting_kind must be phone_screen or interview",
        )
    })?;
    state
        .store
        .candidate(user.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    match sched::create_link(
        &state,
        &user,
        id,
        kind,
        b.duration_minutes,
        b.expires_in_weeks.unwrap_or(sched::DEFAULT_EXPIRY_WEEKS),
    )
    .await
    {
        Ok((link, _token)) => Ok((
            StatusCode::CREATED,
            Json(link_resource(&state, &link).await?),
        )),
        Err(CreateLinkError::Calendar(msg)) => Err(ApiError::conflict("calendar_not_ready", msg)),
        Err(CreateLinkError::Invalid(msg)) => Err(ApiError::unprocessable("invalid", msg)),
        Err(CreateLinkError::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/scheduling-links/{id}/revoke", tag = "scheduling", params(("id" = i64, Path)),
    responses((status = 200, body = LinkResource), (status = 404, body = ErrorBody), (status = 409, description = "`link_used`: cancel the booking instead", body = ErrorBody)))]
async fn revoke_link(
    State(state): State<AppState>,
    ApiCaller(user): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<LinkResource>, ApiError> {
    let id: SchedulingLinkId = id
        .parse()
        .map_err(|_| ApiError::not_found("scheduling link"))?;
    let link = revoke(&state, &user, id).await?;
    Ok(Json(link_resource(&state, &link).await?))
}

/// Revokes a link of the org: its recruiter or an admin may.
pub async fn revoke(
    state: &AppState,
    user: &hirewire_store::User,
    id: SchedulingLinkId,
) -> Result<SchedulingLink, ApiError> {
    let link = state
        .store
        .link(user.org_id, id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("scheduling link"))?;
    if link.user_id != user.id && user.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the link's recruiter or an admin can revoke it",
        ));
    }
    match state.store.revoke_link(user.org_id, id, state.now()).await {
        Ok(l) => {
            state.scheduler.forget_links(|c| c.link.id == id);
            Ok(l)
        }
        Err(StoreError::Conflict {
            what: hirewire_store::LINK_USED,
        }) => Err(ApiError::conflict(
            "link_used",
            "this link was used to book a meeting; the candidate can cancel it from the link",
        )),
        Err(e) => Err(e.into()),
    }
}
