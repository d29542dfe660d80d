//! The recruiter's side of the Scheduler in the browser: the "Schedule" card on
//! the candidate page (create, copy, share and revoke links, with each link's
//! status) and Settings › Scheduling (hours, meeting types, rules).

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hirewire_domain::ids::{CandidateId, SchedulingLinkId};
use hirewire_store::{
    DateOverride, Direction, LinkFilter, LinkStatus, MeetingKind, MeetingLocation, MeetingType,
    NewInMail, SchedulingSettings, StoreError, TimeRange, User, WorkingHours,
};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{CsrfForm, Viewer};
use crate::error::PageError;
use crate::pages::Nav;
use crate::scheduling::{self as sched, CreateLinkError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/candidates/{id}/scheduling-links", post(create_link))
        .route("/scheduling-links/{id}/revoke", post(revoke_link))
        .route("/scheduling-links/{id}/inmail", post(share_by_inmail))
        .route("/scheduling-links/{id}/email", post(share_by_email))
        .route(
            "/settings/scheduling",
            get(settings_page).post(save_settings),
        )
}

// ---- the candidate page's card ------------------------------------------------------

pub struct LinkRow {
    pub id: i64,
    pub what: String,
    /// `sent`, `opened`, `booked`, `expired`, `revoked`.
    pub status: &'static str,
    pub status_label: String,
    pub created: String,
    pub expires: String,
    pub url: Option<String>,
    /// The booking, in words.
    pub booking: Option<String>,
    pub revocable: bool,
    pub mine: bool,
}

pub struct SchedulerCard {
    /// Why no link can be made now (calendar not usable), in words.
    pub calendar_problem: Option<String>,
    pub kinds: Vec<(String, String, u32)>,
    pub links: Vec<LinkRow>,
    /// Email Connect can send from the recruiter's mailbox: links can go by email.
    pub can_email: bool,
    /// One-off message after an action (`?scheduling=`).
    pub flash: Option<(bool, String)>,
}

/// Loads the card for `viewer` on `candidate`'s page.
pub async fn card(
    state: &AppState,
    viewer: &Viewer,
    candidate: CandidateId,
    flash: Option<&str>,
) -> Result<SchedulerCard, PageError> {
    let user = &viewer.user;
    let calendar_problem = match sched::calendar_ready(state, user).await {
        Ok(()) => None,
        Err(CreateLinkError::Calendar(msg)) => Some(msg),
        Err(CreateLinkError::Store(e)) => return Err(e.into()),
        Err(CreateLinkError::Invalid(msg)) => Some(msg),
    };
    let settings = sched::settings_of(state, user).await?;
    let kinds = settings
        .meeting_types
        .iter()
        .map(|m| {
            (
                m.kind.as_str().to_owned(),
                sched::kind_label(m.kind).to_owned(),
                m.duration_minutes,
            )
        })
        .collect();
    let now = state.now();
    let tz = TimeZone::get(&user.time_zone).unwrap_or(TimeZone::UTC);
    let fmt = |t: jiff::Timestamp| {
        t.to_zoned_datetime(tz.clone())
            .strftime("%a %-d %b %H:%M")
            .to_string()
    };
    let mut links = Vec::new();
    for l in state
        .store
        .list_links(user.org_id, LinkFilter::Candidate(candidate), now)
        .await?
    {
        let booking = match l.booking_id {
            Some(b) => state.store.booking(l.org_id, b).await?,
            None => None,
        };
        let minutes = l.meeting.as_ref().map(|m| m.duration_minutes);
        links.push(LinkRow {
            id: l.id.get(),
            what: match minutes {
                Some(m) => format!("{} · {m} min", sched::kind_label(l.meeting_kind)),
                None => sched::kind_label(l.meeting_kind).to_owned(),
            },
            status: l.status.as_str(),
            status_label: match l.status {
                LinkStatus::Sent => "Sent, not opened yet".into(),
                LinkStatus::Opened => "Opened".into(),
                LinkStatus::Booked => "Booked".into(),
                LinkStatus::Expired => "Expired".into(),
                LinkStatus::Revoked => "Revoked".into(),
            },
            created: fmt(l.created_at),
            expires: fmt(l.expires_at),
            url: (l.user_id == user.id && l.is_bookable())
                .then(|| sched::link_url(state, &l))
                .flatten(),
            booking: booking.map(|b| {
                let state_word = match b.status {
                    hirewire_store::BookingStatus::Confirmed => "booked for",
                    hirewire_store::BookingStatus::Cancelled => "cancelled, was",
                };
                format!("{} {state_word} {}", b.attendee.name, fmt(b.slot.starts_at))
            }),
            revocable: l.is_bookable() && (l.user_id == user.id || viewer.is_admin()),
            mine: l.user_id == user.id,
        });
    }
    let flash = flash.map(|f| match f {
        "created" => (
            false,
            "Link created. Copy it, or put it in an InMail below.".to_owned(),
        ),
        "shared" => (
            false,
            "The link is in an InMail to the candidate.".to_owned(),
        ),
        "emailed" => (
            false,
            "The link is on its way by email from your mailbox (see Outgoing).".to_owned(),
        ),
        "email_failed" => (
            true,
            "The email could not be queued: the compose box below says what is missing.".to_owned(),
        ),
        "revoked" => (
            false,
            "Link revoked: it no longer books anything.".to_owned(),
        ),
        "calendar_not_ready" => (
            true,
            "Authorize your work calendar first (Settings › Email & calendar).".to_owned(),
        ),
        "not_offered" => (
            true,
            "You do not offer that kind of meeting: add it in Settings › Scheduling.".to_owned(),
        ),
        "link_used" => (
            true,
            "That link was used to book: the candidate can cancel from it.".to_owned(),
        ),
        _ => (true, "That did not work; try again.".to_owned()),
    });
    let can_email = matches!(
        crate::outbox::readiness(state, user).await?,
        crate::outbox::Readiness::Ready { .. }
    );
    Ok(SchedulerCard {
        calendar_problem,
        kinds,
        links,
        can_email,
        flash,
    })
}

#[derive(Deserialize)]
struct NewLinkForm {
    meeting_kind: String,
    #[serde(default)]
    duration_minutes: String,
    #[serde(default)]
    expires_in_weeks: String,
}

fn back(candidate: CandidateId, flash: &str) -> Response {
    Redirect::to(&format!(
        "/candidates/{candidate}?scheduling={flash}#scheduler"
    ))
    .into_response()
}

async fn create_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, form): CsrfForm<NewLinkForm>,
) -> Result<Response, PageError> {
    let cid: CandidateId = id.parse().map_err(|_| PageError::not_found())?;
    state
        .store
        .candidate(viewer.user.org_id, cid)
        .await?
        .ok_or_else(PageError::not_found)?;
    let Ok(kind) = form.meeting_kind.parse::<MeetingKind>() else {
        return Ok(back(cid, "not_offered"));
    };
    let duration = form.duration_minutes.trim().parse::<u32>().ok();
    let weeks = form
        .expires_in_weeks
        .trim()
        .parse::<u32>()
        .unwrap_or(sched::DEFAULT_EXPIRY_WEEKS);
    Ok(
        match sched::create_link(&state, &viewer.user, cid, kind, duration, weeks).await {
            Ok(_) => back(cid, "created"),
            Err(CreateLinkError::Calendar(_)) => back(cid, "calendar_not_ready"),
            Err(CreateLinkError::Invalid(_)) => back(cid, "not_offered"),
            Err(CreateLinkError::Store(e)) => return Err(e.into()),
        },
    )
}

async fn own_link(
    state: &AppState,
    user: &User,
    id: &str,
) -> Result<hirewire_store::SchedulingLink, PageError> {
    let id: SchedulingLinkId = id.parse().map_err(|_| PageError::not_found())?;
    state
        .store
        .link(user.org_id, id, state.now())
        .await?
        .ok_or_else(PageError::not_found)
}

async fn revoke_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, _): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let link = own_link(&state, &viewer.user, &id).await?;
    match crate::scheduling_api::revoke(&state, &viewer.user, link.id).await {
        Ok(_) => Ok(back(link.candidate_id, "revoked")),
        Err(e) if e.code == "link_used" => Ok(back(link.candidate_id, "link_used")),
        Err(e) if e.status == StatusCode::FORBIDDEN => Err(PageError::forbidden()),
        Err(e) => Err(PageError::internal(e.message)),
    }
}

async fn share_by_inmail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, _): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (link, url) = match shareable(&state, &viewer, &id).await? {
        Ok(found) => found,
        Err(done) => return Ok(done),
    };
    let body = invitation_text(&viewer, &link, &url);
    let now = state.now();
    state
        .store
        .create_inmail(
            viewer.user.org_id,
            &NewInMail {
                candidate_id: link.candidate_id,
                author_user_id: Some(viewer.user.id),
                direction: Direction::Outbound,
                body: &body,
                sent_at: now,
            },
            now,
        )
        .await?;
    Ok(back(link.candidate_id, "shared"))
}

/// The viewer's own link `id` with its URL, while it can still book; else
/// where to send the browser back to (a used, expired or revoked link).
async fn shareable(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<Result<(hirewire_store::SchedulingLink, String), Response>, PageError> {
    let link = own_link(state, &viewer.user, id).await?;
    if link.user_id != viewer.user.id {
        return Err(PageError::forbidden());
    }
    Ok(
        match sched::link_url(state, &link).filter(|_| link.is_bookable()) {
            Some(url) => Ok((link, url)),
            None => Err(back(link.candidate_id, "link_used")),
        },
    )
}

/// The words that carry a link to the candidate (InMail and email alike).
fn invitation_text(viewer: &Viewer, link: &hirewire_store::SchedulingLink, url: &str) -> String {
    let what = sched::kind_label(link.meeting_kind).to_lowercase();
    format!(
        "Hi, please pick a time for our {what} that suits you: {url}\n\nThe link shows my current availability in your time zone.\n\n{}",
        viewer.user.display_name
    )
}

/// Sends the link to the candidate's first address through Email Connect
/// (the recruiter's own mailbox), now.
async fn share_by_email(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(viewer, _): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (link, url) = match shareable(&state, &viewer, &id).await? {
        Ok(found) => found,
        Err(done) => return Ok(done),
    };
    let candidate = state
        .store
        .candidate(viewer.user.org_id, link.candidate_id)
        .await?
        .ok_or_else(PageError::not_found)?;
    let Some(to) = candidate.emails.first().map(|e| e.address.to_string()) else {
        return Ok(back(link.candidate_id, "email_failed"));
    };
    let input = crate::outbox::ComposeInput {
        to: vec![to],
        subject: format!(
            "Pick a time for our {}",
            sched::kind_label(link.meeting_kind).to_lowercase()
        ),
        body_markdown: invitation_text(&viewer, &link, &url),
        ..Default::default()
    };
    match crate::outbox::submit(&state, &viewer.user, link.candidate_id, input).await {
        Ok(_) => Ok(back(link.candidate_id, "emailed")),
        Err(crate::outbox::SubmitError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::info!(code = e.code(), "a scheduling link could not be emailed");
            Ok(back(link.candidate_id, "email_failed"))
        }
    }
}

// ---- Settings › Scheduling -------------------------------------------------------------

pub struct TypeRow {
    pub kind: &'static str,
    pub label: &'static str,
    pub offered: bool,
    pub duration: u32,
    pub before: u32,
    pub after: u32,
    /// `phone`, `video`, `address`.
    pub location: &'static str,
    pub address: String,
}

#[derive(Template)]
#[template(path = "settings_scheduling.html")]
struct SettingsPage {
    nav: Option<Nav>,
    csrf: String,
    saved: bool,
    errors: Vec<String>,
    /// (name, label, value) per weekday, Monday first.
    days: Vec<(String, &'static str, String)>,
    overrides: String,
    types: Vec<TypeRow>,
    notice_hours: String,
    no_same_day: bool,
    horizon_days: String,
    max_per_day: String,
    tentative_is_busy: bool,
    time_zone: String,
}

const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn ranges_text(ranges: &[TimeRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

fn page_of(viewer: &Viewer, s: &SchedulingSettings) -> SettingsPage {
    let days = (1..=7u8)
        .map(|d| {
            let ranges: Vec<TimeRange> = s
                .working_hours
                .iter()
                .filter(|w| w.days.contains(&d))
                .map(|w| TimeRange {
                    start: w.start.clone(),
                    end: w.end.clone(),
                })
                .collect();
            (
                format!("day{d}"),
                DAY_NAMES[usize::from(d - 1)],
                ranges_text(&ranges),
            )
        })
        .collect();
    let overrides = s
        .overrides
        .iter()
        .map(|o| {
            if o.ranges.is_empty() {
                format!("{} off", o.date)
            } else {
                format!("{} {}", o.date, ranges_text(&o.ranges))
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let defaults = sched::default_settings();
    let types = [MeetingKind::PhoneScreen, MeetingKind::Interview]
        .into_iter()
        .map(|k| {
            let offered = s.meeting_type(k);
            let m = offered
                .or_else(|| defaults.meeting_type(k))
                .cloned()
                .expect("both kinds have defaults");
            let (location, address) = match &m.location {
                MeetingLocation::Phone => ("phone", String::new()),
                MeetingLocation::Video => ("video", String::new()),
                MeetingLocation::Address(a) => ("address", a.clone()),
            };
            TypeRow {
                kind: k.as_str(),
                label: sched::kind_label(k),
                offered: offered.is_some(),
                duration: m.duration_minutes,
                before: m.before_buffer_minutes,
                after: m.after_buffer_minutes,
                location,
                address,
            }
        })
        .collect();
    SettingsPage {
        nav: Nav::of(viewer, "settings"),
        csrf: viewer.csrf.clone(),
        saved: false,
        errors: Vec::new(),
        days,
        overrides,
        types,
        notice_hours: format!("{}", f64::from(s.minimum_notice_minutes) / 60.0),
        no_same_day: s.no_same_day,
        horizon_days: s.horizon_days.to_string(),
        max_per_day: s.max_per_day.map(|m| m.to_string()).unwrap_or_default(),
        tentative_is_busy: s.tentative_is_busy,
        time_zone: viewer.user.time_zone.clone(),
    }
}

#[derive(Deserialize)]
struct SavedQuery {
    saved: Option<String>,
}

async fn settings_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<SavedQuery>,
) -> Result<Response, PageError> {
    let s = sched::settings_of(&state, &viewer.user).await?;
    let mut page = page_of(&viewer, &s);
    page.saved = q.saved.is_some();
    Ok(Html(page.render()?).into_response())
}

/// Parses `"09:00-12:00, 13:00-17:00"`.
fn parse_ranges(text: &str, what: &str, errors: &mut Vec<String>) -> Vec<TimeRange> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.push(TimeRange {
                start: a.trim().to_owned(),
                end: b.trim().to_owned(),
            }),
            None => errors.push(format!(
                "{what}: \"{part}\" is not a range like 09:00-17:00."
            )),
        }
    }
    out
}

fn parse_settings(form: &[(String, String)], errors: &mut Vec<String>) -> SchedulingSettings {
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let checked = |name: &str| form.iter().any(|(k, _)| k == name);
    let mut working_hours = Vec::new();
    for d in 1..=7u8 {
        for r in parse_ranges(
            &get(&format!("day{d}")),
            DAY_NAMES[usize::from(d - 1)],
            errors,
        ) {
            working_hours.push(WorkingHours {
                days: vec![d],
                start: r.start,
                end: r.end,
            });
        }
    }
    let mut overrides = Vec::new();
    for line in get("overrides")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (date, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let ranges = if rest.eq_ignore_ascii_case("off") || rest.is_empty() {
            Vec::new()
        } else {
            parse_ranges(rest, date, errors)
        };
        overrides.push(DateOverride {
            date: date.to_owned(),
            ranges,
        });
    }
    let number = |name: &str, label: &str, errors: &mut Vec<String>| -> u32 {
        let v = get(name);
        v.parse::<u32>().unwrap_or_else(|_| {
            errors.push(format!("{label}: enter a whole number."));
            0
        })
    };
    let mut meeting_types = Vec::new();
    for kind in [MeetingKind::PhoneScreen, MeetingKind::Interview] {
        let k = kind.as_str();
        if !checked(&format!("{k}_offered")) {
            continue;
        }
        let label = sched::kind_label(kind);
        let location = match get(&format!("{k}_location")).as_str() {
            "video" => MeetingLocation::Video,
            "address" => MeetingLocation::Address(get(&format!("{k}_address"))),
            _ => MeetingLocation::Phone,
        };
        meeting_types.push(MeetingType {
            kind,
            duration_minutes: number(&format!("{k}_duration"), &format!("{label} length"), errors),
            before_buffer_minutes: number(
                &format!("{k}_before"),
                &format!("{label} buffer before"),
                errors,
            ),
            after_buffer_minutes: number(
                &format!("{k}_after"),
                &format!("{label} buffer after"),
                errors,
            ),
            location,
        });
    }
    let notice_hours: f64 = get("notice_hours").parse().unwrap_or_else(|_| {
        errors.push("Minimum notice: enter a number of hours.".into());
        0.0
    });
    let max = get("max_per_day");
    SchedulingSettings {
        working_hours,
        overrides,
        meeting_types,
        minimum_notice_minutes: if notice_hours.is_finite()
            && (0.0..=24.0 * 90.0).contains(&notice_hours)
        {
            (notice_hours * 60.0).round() as u32
        } else {
            errors.push("Minimum notice: between 0 and 2,160 hours.".into());
            0
        },
        no_same_day: checked("no_same_day"),
        horizon_days: number("horizon_days", "Booking horizon", errors),
        max_per_day: if max.is_empty() {
            None
        } else {
            Some(number("max_per_day", "Maximum bookings per day", errors))
        },
        tentative_is_busy: checked("tentative_is_busy"),
    }
}

async fn save_settings(
    State(state): State<AppState>,
    CsrfForm(viewer, form): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let mut errors = Vec::new();
    let settings = parse_settings(&form, &mut errors);
    if errors.is_empty() {
        match state
            .store
            .save_scheduling_settings(viewer.user.org_id, viewer.user.id, &settings, state.now())
            .await
        {
            Ok(()) => {
                state.scheduler.invalidate(viewer.user.id);
                return Ok(Redirect::to("/settings/scheduling?saved=1").into_response());
            }
            Err(StoreError::Invalid(msg)) => errors.push(msg),
            Err(e) => return Err(e.into()),
        }
    }
    let mut page = page_of(&viewer, &settings);
    page.errors = errors;
    // Keep what was typed, even where it did not parse.
    for (name, _, value) in &mut page.days {
        if let Some((_, v)) = form.iter().find(|(k, _)| k == name) {
            v.clone_into(value);
        }
    }
    if let Some((_, v)) = form.iter().find(|(k, _)| k == "overrides") {
        v.clone_into(&mut page.overrides);
    }
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page.render()?)).into_response())
}
