//! Where the providers live ([`Endpoints`]) and who hirewire is to them ([`AppCredentials`]).

use crate::secret::Secret;

/// Every provider base URL, without a trailing slash. Paths are appended as the providers document them
/// (`/{tenant}/oauth2/v2.0/token`, `/v1.0/me`, `/o/oauth2/v2/auth`, `/token`, `/gmail/v1/...`, `/calendar/v3/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Microsoft identity platform (`https://login.microsoftonline.com`).
    pub microsoft_login: String,
    /// Microsoft Graph (`https://graph.microsoft.com`).
    pub graph: String,
    /// Google's sign-in host (`https://accounts.google.com`).
    pub google_accounts: String,
    /// Google's token, revoke and tokeninfo host (`https://oauth2.googleapis.com`).
    pub google_oauth2: String,
    /// Gmail API (`https://gmail.googleapis.com`).
    pub gmail: String,
    /// Google Calendar API (`https://www.googleapis.com`).
    pub google_calendar: String,
}

impl Endpoints {
    /// The real services.
    pub fn real() -> Self {
        Endpoints {
            microsoft_login: "https://login.microsoftonline.com".into(),
            graph: "https://graph.microsoft.com".into(),
            google_accounts: "https://accounts.google.com".into(),
            google_oauth2: "https://oauth2.googleapis.com".into(),
            gmail: "https://gmail.googleapis.com".into(),
            google_calendar: "https://www.googleapis.com".into(),
        }
    }

    /// Every host at one base URL, as the sandbox serves them (`http://127.0.0.1:PORT`).
    pub fn all_at(base_url: &str) -> Self {
        let b = base_url.trim_end_matches('/').to_owned();
        Endpoints {
            microsoft_login: b.clone(),
            graph: b.clone(),
            google_accounts: b.clone(),
            google_oauth2: b.clone(),
            gmail: b.clone(),
            google_calendar: b,
        }
    }
}

/// The organization's OAuth app registration at its provider.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// Microsoft application (client) id GUID, or Google `….apps.googleusercontent.com` id.
    pub client_id: String,
    /// The client secret (redacted in `Debug`).
    pub client_secret: Secret,
    /// Microsoft only: tenant GUID, verified domain or `organizations` (the default when `None`).
    /// Ignored for Google.
    pub tenant: Option<String>,
}

impl AppCredentials {
    /// The Microsoft tenant segment of identity URLs: the configured tenant, else `organizations`
    /// (work accounts of any tenant; `common` would also admit personal accounts).
    pub fn tenant_or_organizations(&self) -> &str {
        match self.tenant.as_deref() {
            Some(t) if !t.trim().is_empty() => t.trim(),
            _ => "organizations",
        }
    }
}
