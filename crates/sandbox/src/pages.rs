//! The HTML pages a person (or a headless browser) clicks through: account picker, consent, errors.
//! Rendered with askama (auto-escaped), returned as `Html`.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::scenario::Provider;

/// An account on the picker.
pub struct PickUser {
    /// Address.
    pub email: String,
    /// Display name.
    pub name: String,
}

/// A permission line on a consent page.
pub struct ScopeItem {
    /// The scope string (checkbox value).
    pub value: String,
    /// Plain words.
    pub text: String,
}

#[derive(Template)]
#[template(path = "picker.html")]
struct Picker<'a> {
    brand: &'a str,
    brand_class: &'a str,
    heading: &'a str,
    app_name: &'a str,
    action: &'a str,
    cancel_action: &'a str,
    users: &'a [PickUser],
}

#[derive(Template)]
#[template(path = "consent.html")]
struct Consent<'a> {
    brand: &'a str,
    brand_class: &'a str,
    heading: &'a str,
    intro: &'a str,
    user_email: &'a str,
    app_name: &'a str,
    action: &'a str,
    sign_in: &'a [String],
    scopes: &'a [ScopeItem],
    checkboxes: bool,
    admin_option: bool,
    footnote: &'a str,
    accept_label: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    brand: &'a str,
    brand_class: &'a str,
    title: &'a str,
    message: &'a str,
    code: &'a str,
    back: Option<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "form_post.html")]
struct FormPost<'a> {
    action: &'a str,
    fields: &'a [(String, String)],
}

fn brand(p: Provider) -> (&'static str, &'static str) {
    match p {
        Provider::Microsoft => ("Microsoft", "microsoft"),
        Provider::Google => ("Google", "google"),
    }
}

fn html(status: StatusCode, r: askama::Result<String>) -> Response {
    match r {
        Ok(s) => (status, Html(s)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sandbox page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render").into_response()
        }
    }
}

/// The account picker.
pub fn picker(
    p: Provider,
    app_name: &str,
    action: &str,
    cancel_action: &str,
    users: &[PickUser],
) -> Response {
    let (b, c) = brand(p);
    let heading = match p {
        Provider::Microsoft => "Pick an account",
        Provider::Google => "Choose an account",
    };
    html(
        StatusCode::OK,
        Picker {
            brand: b,
            brand_class: c,
            heading,
            app_name,
            action,
            cancel_action,
            users,
        }
        .render(),
    )
}

/// What a consent page shows.
pub struct ConsentView<'a> {
    /// Provider look.
    pub provider: Provider,
    /// App name.
    pub app_name: &'a str,
    /// Signed-in account.
    pub user_email: &'a str,
    /// Form target.
    pub action: &'a str,
    /// Google: sign-in permissions (no checkbox).
    pub sign_in: Vec<String>,
    /// Permissions.
    pub scopes: Vec<ScopeItem>,
    /// Google granular consent: one checkbox per scope.
    pub checkboxes: bool,
    /// Microsoft admin: "Consent on behalf of your organization".
    pub admin_option: bool,
    /// Microsoft admin consent endpoint: accepting grants for the whole organization.
    pub for_organization: Option<&'a str>,
}

/// The consent page.
pub fn consent(v: ConsentView<'_>) -> Response {
    let (b, c) = brand(v.provider);
    let (heading, intro, footnote, accept) = match (v.provider, v.for_organization) {
        (Provider::Microsoft, Some(_)) => (
            "Permissions requested: Accept for your organization",
            "needs permission to access resources in your organization that only an admin can grant. Accepting grants these permissions for all users in your organization.",
            "Accepting these permissions means that you allow this app to use your organization's data as specified in their terms of service and privacy statement.",
            "Accept",
        ),
        (Provider::Microsoft, None) => (
            "Permissions requested",
            "needs your permission to:",
            "Accepting these permissions means that you allow this app to use your data as specified in their terms of service and privacy statement. You can change these permissions later.",
            "Accept",
        ),
        (Provider::Google, _) => (
            "Sign in to hirewire",
            "wants access to your Google Account",
            "Make sure you trust this app. You can see or remove access in your Google Account.",
            "Continue",
        ),
    };
    let heading = if v.provider == Provider::Google {
        format!("Sign in to {}", v.app_name)
    } else {
        heading.to_string()
    };
    html(
        StatusCode::OK,
        Consent {
            brand: b,
            brand_class: c,
            heading: &heading,
            intro,
            user_email: v.user_email,
            app_name: v.app_name,
            action: v.action,
            sign_in: &v.sign_in,
            scopes: &v.scopes,
            checkboxes: v.checkboxes,
            admin_option: v.admin_option,
            footnote,
            accept_label: accept,
        }
        .render(),
    )
}

/// An error shown on the provider's page (no redirect back), with an optional button that leaves.
pub fn error(
    p: Provider,
    status: StatusCode,
    title: &str,
    message: &str,
    code: &str,
    back: Option<(&str, &str)>,
) -> Response {
    let (b, c) = brand(p);
    html(
        status,
        ErrorPage {
            brand: b,
            brand_class: c,
            title,
            message,
            code,
            back,
        }
        .render(),
    )
}

/// `response_mode=form_post`: a self-submitting form.
pub fn form_post(action: &str, fields: &[(String, String)]) -> Response {
    html(StatusCode::OK, FormPost { action, fields }.render())
}
