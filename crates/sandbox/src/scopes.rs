//! Scope names: normalization for both providers, plain-language descriptions for consent pages, and the
//! scopes each Google method accepts (read from Google's own discovery documents).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The OIDC scopes Microsoft treats specially.
pub const MS_OIDC: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Graph resource URI prefix.
pub const GRAPH: &str = "https://graph.microsoft.com/";
/// Outlook resource URI prefix (IMAP/SMTP tokens).
pub const OUTLOOK: &str = "https://outlook.office.com/";

/// Normalizes a Microsoft scope: Graph scopes become short names, other resources keep their URI.
pub fn ms_normalize(scope: &str) -> String {
    match scope.strip_prefix(GRAPH) {
        Some(short) => short.to_string(),
        None => scope.to_string(),
    }
}

/// The resource a (normalized) Microsoft scope belongs to; `None` for OIDC scopes.
pub fn ms_resource(scope: &str) -> Option<&'static str> {
    if MS_OIDC.contains(&scope) {
        None
    } else if scope.starts_with(OUTLOOK) {
        Some("https://outlook.office.com")
    } else {
        Some("https://graph.microsoft.com")
    }
}

/// Splits a space-delimited scope parameter.
pub fn split(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in s.split([' ', '+']).filter(|x| !x.is_empty()) {
        if !out.iter().any(|y| y == x) {
            out.push(x.to_string());
        }
    }
    out
}

/// Normalizes a Google scope (`email` -> `.../userinfo.email`, `profile` -> `.../userinfo.profile`).
pub fn google_normalize(scope: &str) -> String {
    match scope {
        "email" => "https://www.googleapis.com/auth/userinfo.email".into(),
        "profile" => "https://www.googleapis.com/auth/userinfo.profile".into(),
        other => other.to_string(),
    }
}

/// Google sign-in scopes (consented on the first page, never as checkboxes).
pub fn google_is_sign_in(scope: &str) -> bool {
    matches!(
        scope,
        "openid"
            | "https://www.googleapis.com/auth/userinfo.email"
            | "https://www.googleapis.com/auth/userinfo.profile"
    )
}

/// Whether a Google scope string is one Google would accept.
pub fn google_known(scope: &str) -> bool {
    google_is_sign_in(scope)
        || scope == "https://mail.google.com/"
        || google_method_scopes_all().contains(scope)
}

/// Plain words for a scope, as a consent screen shows them.
pub fn describe(scope: &str) -> String {
    let s = scope
        .strip_prefix(GRAPH)
        .or_else(|| scope.strip_prefix("https://www.googleapis.com/auth/"))
        .unwrap_or(scope);
    let text = match s {
        "openid" => "Sign you in",
        "profile" | "userinfo.profile" => {
            "See your personal info, including any personal info you've made publicly available"
        }
        "email" | "userinfo.email" => "See your primary email address",
        "offline_access" => "Maintain access to data you have given it access to",
        "User.Read" => "Sign you in and read your profile",
        "Mail.Read" => "Read your email",
        "Mail.ReadWrite" => "Read and write access to your mail",
        "Mail.Send" => "Send mail as you",
        "Calendars.Read" => "Read your calendars",
        "Calendars.ReadWrite" => "Have full access to your calendars",
        ".default" => "All permissions configured for the app",
        "https://mail.google.com/" => {
            "Read, compose, send, and permanently delete all your email from Gmail"
        }
        "gmail.readonly" => "View your email messages and settings",
        "gmail.send" => "Send email on your behalf",
        "gmail.modify" => "Read, compose, and send emails from your Gmail account",
        "gmail.compose" => "Manage drafts and send emails",
        "gmail.metadata" => {
            "View your email message metadata such as labels and headers, but not the email body"
        }
        "calendar" => {
            "See, edit, share, and permanently delete all the calendars you can access using Google Calendar"
        }
        "calendar.readonly" => {
            "See and download any calendar you can access using your Google Calendar"
        }
        "calendar.events" => "View and edit events on all your calendars",
        "calendar.events.owned" => {
            "See, create, change, and delete events on Google calendars you own"
        }
        "calendar.freebusy" => "View your availability in your calendars",
        "calendar.events.freebusy" => "See the availability on Google calendars you have access to",
        "https://outlook.office.com/IMAP.AccessAsUser.All" => {
            "Read and write access to your mailboxes via IMAP"
        }
        "https://outlook.office.com/SMTP.Send" => "Send emails from mailboxes using SMTP AUTH",
        _ => return format!("Access: {scope}"),
    };
    text.to_string()
}

const GMAIL_DISCOVERY: &str = include_str!("../../../fixtures/schemas/google/gmail.v1.json");
const CALENDAR_DISCOVERY: &str = include_str!("../../../fixtures/schemas/google/calendar.v3.json");

fn collect_methods(v: &Value, out: &mut HashMap<String, Vec<String>>) {
    if let Some(methods) = v.get("methods").and_then(Value::as_object) {
        for m in methods.values() {
            if let (Some(id), Some(scopes)) = (
                m.get("id").and_then(Value::as_str),
                m.get("scopes").and_then(Value::as_array),
            ) {
                out.insert(
                    id.to_string(),
                    scopes
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
    }
    if let Some(resources) = v.get("resources").and_then(Value::as_object) {
        for r in resources.values() {
            collect_methods(r, out);
        }
    }
}

fn table() -> &'static HashMap<String, Vec<String>> {
    static T: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut out = HashMap::new();
        for doc in [GMAIL_DISCOVERY, CALENDAR_DISCOVERY] {
            let v: Value = serde_json::from_str(doc).expect("bundled discovery document parses");
            collect_methods(&v, &mut out);
        }
        out
    })
}

fn google_method_scopes_all() -> &'static std::collections::HashSet<String> {
    static S: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    S.get_or_init(|| table().values().flatten().cloned().collect())
}

/// The scopes that allow a Google method (discovery id such as `gmail.users.getProfile`).
pub fn google_method_scopes(method: &str) -> &'static [String] {
    table().get(method).map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_scopes_are_loaded() {
        let s = google_method_scopes("gmail.users.getProfile");
        assert!(
            s.iter()
                .any(|x| x == "https://www.googleapis.com/auth/gmail.readonly")
        );
        assert!(!s.iter().any(|x| x.contains("calendar")));
        assert!(
            google_method_scopes("calendar.freebusy.query")
                .iter()
                .any(|x| x.ends_with("calendar.freebusy"))
        );
        assert!(google_known(
            "https://www.googleapis.com/auth/calendar.events"
        ));
        assert!(!google_known("https://www.googleapis.com/auth/made.up"));
    }

    #[test]
    fn microsoft_scopes_normalize_to_short_graph_names() {
        assert_eq!(
            ms_normalize("https://graph.microsoft.com/Mail.Read"),
            "Mail.Read"
        );
        assert_eq!(
            ms_resource("Mail.Read"),
            Some("https://graph.microsoft.com")
        );
        assert_eq!(
            ms_resource("https://outlook.office.com/IMAP.AccessAsUser.All"),
            Some("https://outlook.office.com")
        );
        assert_eq!(ms_resource("offline_access"), None);
    }
}
