//! The candidate's side of the Scheduler: `/book/{token}`, no sign-in.
//!
//! One address does everything: before booking it offers the days with free
//! time and the slots of the chosen day; after booking it is the confirmation
//! and the manage page (reschedule, cancel, add to calendar). Plain forms and
//! links, so it works without JavaScript; the only script detects the
//! browser's time zone on the first visit (the candidate can change it).
//! There is no CSRF token: the link token in the address is the credential,
//! and a forged form would need to know it.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hirewire_store::{Booking, BookingStatus, MeetingKind};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::PageError;
use crate::pages::{Nav, render_error_page};
use crate::scheduling::{
    self as sched, BookError, BookingInput, FieldError, LinkContext, LinkProblem, OpenError,
    SlotQuery,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/book/{token}", get(page).post(book))
        .route("/book/{token}/reschedule", post(reschedule))
        .route("/book/{token}/cancel", post(cancel))
        .route("/book/{token}/invite.ics", get(invite))
}

fn problem_page(p: LinkProblem) -> Response {
    (
        p.status(),
        Html(render_error_page(p.status(), p.title(), p.message())),
    )
        .into_response()
}

fn open_failed(e: OpenError) -> Response {
    match e {
        OpenError::Link(p) => problem_page(p),
        OpenError::NotOffered => (
            StatusCode::GONE,
            Html(render_error_page(
                StatusCode::GONE,
                "This kind of meeting is no longer offered",
                "The recruiter changed what they offer. Ask them for a new link.",
            )),
        )
            .into_response(),
        OpenError::Settings(s) => PageError::internal(s).into_response(),
        OpenError::Store(s) => PageError::from(s).into_response(),
    }
}

// ---- the picker -----------------------------------------------------------------

struct DayView {
    date: String,
    label: String,
    count: usize,
    href: String,
    chosen: bool,
}

struct SlotView {
    value: String,
    label: String,
    checked: bool,
}

#[derive(Default)]
struct FieldErrors {
    start: Option<String>,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    note: Option<String>,
}

impl FieldErrors {
    fn of(list: &[FieldError]) -> Self {
        let mut f = FieldErrors::default();
        for e in list {
            let slot = match e.field {
                "name" => &mut f.name,
                "email" => &mut f.email,
                "phone" => &mut f.phone,
                "note" => &mut f.note,
                _ => &mut f.start,
            };
            *slot = Some(e.message.clone());
        }
        f
    }
}

#[derive(Default, Clone)]
struct FormValues {
    start: String,
    name: String,
    email: String,
    phone: String,
    note: String,
}

#[derive(Template)]
#[template(path = "book.html")]
struct PickerPage {
    nav: Option<Nav>,
    title: String,
    recruiter: String,
    duration: u32,
    location: String,
    base: String,
    action: String,
    rescheduling: bool,
    current: Option<String>,
    problem: Option<String>,
    tz: String,
    zones: Vec<String>,
    detect_zone: bool,
    horizon: u32,
    days: Vec<DayView>,
    chosen_label: String,
    slots: Vec<SlotView>,
    form: FormValues,
    field_errors: FieldErrors,
    email_optional: bool,
    phone_required: bool,
}

#[derive(Template)]
#[template(path = "book_done.html")]
struct DonePage {
    nav: Option<Nav>,
    title: String,
    recruiter: String,
    notice: Option<String>,
    when: String,
    tz: String,
    what: String,
    location: Option<String>,
    email: Option<String>,
    event_pending: bool,
    cancelled: bool,
    manageable: bool,
    base: String,
    google: String,
    outlook: String,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    tz: Option<String>,
    day: Option<String>,
    reschedule: Option<String>,
    done: Option<String>,
}

fn zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.to_string())
        .filter(|n| {
            n.contains('/')
                && !n.starts_with("Etc/")
                && !n.starts_with("posix/")
                && !n.starts_with("right/")
        })
        .collect();
    names.push("UTC".into());
    names.sort();
    names.dedup();
    names
}

fn location_label(ctx: &LinkContext) -> String {
    match &ctx.meeting.location {
        hirewire_store::MeetingLocation::Phone => {
            format!("{} calls you", ctx.recruiter.display_name)
        }
        hirewire_store::MeetingLocation::Video => {
            "Video call (the link comes with the invitation)".into()
        }
        hirewire_store::MeetingLocation::Address(a) => format!("In person at {a}"),
    }
}

fn title(ctx: &LinkContext) -> String {
    format!(
        "{} with {}",
        sched::kind_label(ctx.link.meeting_kind),
        ctx.recruiter.display_name
    )
}

/// "Monday 11 January 2027, 15:30–16:00".
fn when(b: &Booking, zone: &TimeZone) -> String {
    let s = b.slot.starts_at.to_zoned_datetime(zone.clone());
    let e = b.slot.ends_at.to_zoned_datetime(zone.clone());
    format!(
        "{}, {}–{}",
        s.strftime("%A %-d %B %Y"),
        s.strftime("%H:%M"),
        e.strftime("%H:%M")
    )
}

struct Picker<'a> {
    state: &'a AppState,
    ctx: &'a LinkContext,
    token: &'a str,
    tz: String,
    detect_zone: bool,
    day: Option<String>,
    rescheduling: bool,
}

impl Picker<'_> {
    async fn render(
        &self,
        status: StatusCode,
        problem: Option<String>,
        form: FormValues,
        errors: FieldErrors,
    ) -> Response {
        let ctx = self.ctx;
        let zone = TimeZone::get(&self.tz).unwrap_or(TimeZone::UTC);
        let now = self.state.now();
        let except = if self.rescheduling {
            ctx.booking.as_ref()
        } else {
            None
        };
        let q = SlotQuery {
            time_zone: self.tz.clone(),
            from: now,
            to: now + jiff::SignedDuration::from_hours(24 * i64::from(ctx.settings.horizon_days)),
        };
        let starts = match sched::slots(self.state, ctx, &q, except).await {
            Ok(s) => s,
            Err(t) => {
                if let sched::ProviderTrouble::Internal(cause) = &t {
                    tracing::error!(%cause, "booking page: slots failed");
                }
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Html(render_error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Times cannot be shown right now",
                        t.candidate_message(),
                    )),
                )
                    .into_response();
            }
        };
        let mut by_day: BTreeMap<jiff::civil::Date, Vec<Timestamp>> = BTreeMap::new();
        for s in starts {
            by_day
                .entry(s.to_zoned_datetime(zone.clone()).date())
                .or_default()
                .push(s);
        }
        let chosen = self
            .day
            .as_deref()
            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
            .filter(|d| by_day.contains_key(d))
            .or_else(|| by_day.keys().next().copied());
        let base = format!("/book/{}", self.token);
        let extra = if self.rescheduling {
            "&reschedule=1"
        } else {
            ""
        };
        let days = by_day
            .iter()
            .map(|(d, list)| DayView {
                date: d.to_string(),
                label: d.strftime("%a %-d %b").to_string(),
                count: list.len(),
                href: format!(
                    "{base}?tz={}&day={d}{extra}",
                    crate::auth::urlencode(&self.tz)
                ),
                chosen: Some(*d) == chosen,
            })
            .collect();
        let slots = chosen
            .and_then(|d| by_day.get(&d))
            .map(|list| {
                list.iter()
                    .map(|s| SlotView {
                        value: s.to_string(),
                        label: s
                            .to_zoned_datetime(zone.clone())
                            .strftime("%H:%M")
                            .to_string(),
                        checked: form.start == s.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let page = PickerPage {
            nav: None,
            title: if self.rescheduling {
                format!("Reschedule: {}", title(ctx))
            } else {
                title(ctx)
            },
            recruiter: ctx.recruiter.display_name.clone(),
            duration: ctx.meeting.duration_minutes,
            location: location_label(ctx),
            action: if self.rescheduling {
                format!("{base}/reschedule")
            } else {
                base.clone()
            },
            base,
            rescheduling: self.rescheduling,
            current: except.map(|b| when(b, &zone)),
            problem,
            tz: self.tz.clone(),
            zones: zone_names(),
            detect_zone: self.detect_zone,
            horizon: ctx.settings.horizon_days,
            days,
            chosen_label: chosen
                .map(|d| d.strftime("%A %-d %B").to_string())
                .unwrap_or_default(),
            slots,
            form: FormValues {
                email: if form.email.is_empty() && errors.email.is_none() {
                    ctx.candidate_email.clone().unwrap_or_default()
                } else {
                    form.email.clone()
                },
                ..form
            },
            field_errors: errors,
            email_optional: ctx.candidate_email.is_some(),
            phone_required: ctx.link.meeting_kind == MeetingKind::PhoneScreen,
        };
        match page.render() {
            Ok(h) => (status, Html(h)).into_response(),
            Err(e) => PageError::from(e).into_response(),
        }
    }
}

fn chosen_zone(ctx: &LinkContext, raw: Option<&str>) -> (String, bool) {
    match raw.map(str::trim).filter(|z| sched::valid_zone(z)) {
        Some(z) => (z.to_owned(), false),
        None => (ctx.recruiter.time_zone.clone(), raw.is_none()),
    }
}

async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let ctx = match sched::open_link_cached(&state, &token).await {
        Ok(c) => c,
        Err(e) => return open_failed(e),
    };
    let (tz, detect_zone) = chosen_zone(&ctx, q.tz.as_deref());
    let rescheduling = q.reschedule.is_some();
    if ctx.booking.is_some() && !rescheduling {
        return done_page(&state, &ctx, &token, &tz, q.done.as_deref());
    }
    if rescheduling {
        if let Err(p) = ctx.manageable(state.now()) {
            return problem_page(p);
        }
    } else if let Err(p) = ctx.bookable() {
        return problem_page(p);
    }
    let picker = Picker {
        state: &state,
        ctx: &ctx,
        token: &token,
        tz,
        detect_zone,
        day: q.day,
        rescheduling,
    };
    picker
        .render(
            StatusCode::OK,
            None,
            FormValues::default(),
            FieldErrors::default(),
        )
        .await
}

fn done_page(
    state: &AppState,
    ctx: &LinkContext,
    token: &str,
    tz: &str,
    done: Option<&str>,
) -> Response {
    let Some(b) = ctx.booking.as_ref() else {
        return problem_page(LinkProblem::Unknown);
    };
    // The candidate's own zone, unless they picked another one here.
    let tz = if tz == ctx.recruiter.time_zone && sched::valid_zone(&b.attendee.time_zone) {
        b.attendee.time_zone.as_str()
    } else {
        tz
    };
    let zone = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    let cancelled = b.status == BookingStatus::Cancelled;
    let manage_url = state.config.link(&format!("/book/{token}"));
    let (google, outlook) = sched::calendar_links(ctx, b, &manage_url);
    let notice = match done {
        Some("booked") => Some("You're booked. A calendar invitation is on its way.".to_owned()),
        Some("rescheduled") => {
            Some("Your meeting was moved. An updated invitation is on its way.".to_owned())
        }
        Some("cancelled") => Some("Your meeting is cancelled.".to_owned()),
        _ => None,
    };
    let page = DonePage {
        nav: None,
        title: if cancelled {
            format!("Cancelled: {}", sched::summary(ctx, b))
        } else {
            sched::summary(ctx, b)
        },
        recruiter: ctx.recruiter.display_name.clone(),
        notice,
        when: when(b, &zone),
        tz: tz.to_owned(),
        what: format!(
            "{} · {} minutes",
            sched::kind_label(b.meeting_kind),
            ctx.meeting.duration_minutes
        ),
        location: sched::location_text(ctx, b),
        email: Some(b.attendee.email.clone()).filter(|e| !e.is_empty()),
        event_pending: b.provider_event_id.is_none(),
        cancelled,
        manageable: ctx.manageable(state.now()).is_ok(),
        base: format!("/book/{token}"),
        google,
        outlook,
    };
    match page.render() {
        Ok(h) => Html(h).into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

#[derive(Deserialize, Default)]
struct BookForm {
    #[serde(default)]
    start: String,
    #[serde(default)]
    tz: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    note: String,
}

async fn submit(state: &AppState, token: &str, f: BookForm, rescheduling: bool) -> Response {
    let input = BookingInput {
        start: f.start.clone(),
        name: f.name.clone(),
        email: f.email.clone(),
        phone: f.phone.clone(),
        note: f.note.clone(),
        time_zone: f.tz.clone(),
    };
    let result = if rescheduling {
        sched::reschedule(state, token, &input).await
    } else {
        sched::book(state, token, &input).await
    };
    let err = match result {
        Ok(_) => {
            let done = if rescheduling {
                "rescheduled"
            } else {
                "booked"
            };
            return Redirect::to(&format!(
                "/book/{token}?done={done}&tz={}",
                crate::auth::urlencode(&f.tz)
            ))
            .into_response();
        }
        Err(e) => e,
    };
    let (status, problem, errors) = match err {
        BookError::Link(p) => return problem_page(p),
        BookError::Store(e) => return PageError::from(e).into_response(),
        BookError::Provider(t) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(render_error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The booking could not be made",
                    t.candidate_message(),
                )),
            )
                .into_response();
        }
        BookError::Invalid(list) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            FieldErrors::of(&list),
        ),
        BookError::SlotTaken { day_full, .. } => (
            StatusCode::CONFLICT,
            Some(if day_full {
                "That day just filled up. Pick a time on another day.".to_owned()
            } else {
                "Sorry, that time was just taken. Here are the times still free.".to_owned()
            }),
            FieldErrors::default(),
        ),
    };
    let ctx = match sched::open_link(state, token).await {
        Ok(c) => c,
        Err(e) => return open_failed(e),
    };
    let (tz, _) = chosen_zone(&ctx, Some(&f.tz));
    let day = sched::parse_start(&f.start).map(|s| {
        s.to_zoned_datetime(TimeZone::get(&tz).unwrap_or(TimeZone::UTC))
            .date()
            .to_string()
    });
    let picker = Picker {
        state,
        ctx: &ctx,
        token,
        tz,
        detect_zone: false,
        day,
        rescheduling,
    };
    let keep = FormValues {
        start: if status == StatusCode::CONFLICT {
            String::new()
        } else {
            f.start
        },
        name: f.name,
        email: f.email,
        phone: f.phone,
        note: f.note,
    };
    picker.render(status, problem, keep, errors).await
}

async fn book(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(f): Form<BookForm>,
) -> Response {
    submit(&state, &token, f, false).await
}

async fn reschedule(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(f): Form<BookForm>,
) -> Response {
    submit(&state, &token, f, true).await
}

#[derive(Deserialize, Default)]
struct CancelForm {
    #[serde(default)]
    confirm: String,
}

async fn cancel(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(f): Form<CancelForm>,
) -> Response {
    if f.confirm != "yes" {
        return Redirect::to(&format!("/book/{token}")).into_response();
    }
    match sched::cancel(&state, &token).await {
        Ok(_) => Redirect::to(&format!("/book/{token}?done=cancelled")).into_response(),
        Err(BookError::Link(p)) => problem_page(p),
        Err(BookError::Store(e)) => PageError::from(e).into_response(),
        Err(e) => PageError::internal(format!("{e:?}")).into_response(),
    }
}

async fn invite(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let ctx = match sched::open_link(&state, &token).await {
        Ok(c) => c,
        Err(e) => return open_failed(e),
    };
    let Some(b) = ctx.booking.as_ref() else {
        return problem_page(ctx.bookable().err().unwrap_or(LinkProblem::Unknown));
    };
    let manage_url = state.config.link(&format!("/book/{token}"));
    let body = sched::ics(&ctx, b, &manage_url, state.now());
    (
        [
            (
                header::CONTENT_TYPE,
                "text/calendar; charset=utf-8; method=PUBLISH",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"meeting.ics\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
