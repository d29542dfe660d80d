//! Input rules shared by pages, API and CLI, and the account tasks the CLI runs.

use std::collections::HashMap;

use hirewire_domain::email::EmailAddress;
use hirewire_domain::ids::{OrgId, UserId};
use hirewire_store::{InMail, NewUser, Role, Store, StoreError, User};
use jiff::Timestamp;

use crate::app::AppState;
use crate::crypto::{PasswordCost, random_token, token_digest, verify_password};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_INMAIL_CHARS: usize = 20_000;
pub const MAX_ADDRESSES: usize = 20;

/// A trimmed, non-empty name of bounded length without control characters.
pub fn validate_name(raw: &str, what: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(format!("{what} is required."));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "{what} can be at most {MAX_NAME_CHARS} characters."
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} cannot contain control characters."));
    }
    Ok(name.to_owned())
}

/// An InMail body: not blank, bounded, and without NUL bytes.
pub fn validate_inmail_body(raw: &str) -> Result<&str, String> {
    let body = raw.trim_end();
    if body.trim().is_empty() {
        return Err("Write a message before sending.".into());
    }
    if body.chars().count() > MAX_INMAIL_CHARS {
        return Err(format!(
            "A message can be at most {MAX_INMAIL_CHARS} characters."
        ));
    }
    if body.contains('\0') {
        return Err("The message contains a NUL character.".into());
    }
    Ok(body)
}

/// A validated new candidate.
#[derive(Debug)]
pub struct CandidateInput {
    pub name: String,
    pub emails: Vec<EmailAddress>,
}

/// Field errors of a candidate form.
#[derive(Debug, Default)]
pub struct CandidateErrors {
    pub name: Option<String>,
    pub emails: Option<String>,
}

impl CandidateInput {
    pub fn parse(name: &str, emails: &[&str]) -> Result<Self, CandidateErrors> {
        let mut errors = CandidateErrors::default();
        let name = validate_name(name, "The name")
            .map_err(|e| errors.name = Some(e))
            .ok();
        let mut parsed: Vec<EmailAddress> = Vec::new();
        let mut bad = Vec::new();
        for raw in emails {
            match EmailAddress::parse(raw) {
                Ok(a) if parsed.iter().any(|p| p.key() == a.key()) => {}
                Ok(a) => parsed.push(a),
                Err(e) => bad.push(format!("“{}” ({e})", raw.trim())),
            }
        }
        if !bad.is_empty() {
            errors.emails = Some(format!("Not an email address: {}.", bad.join(", ")));
        } else if parsed.len() > MAX_ADDRESSES {
            errors.emails = Some(format!(
                "A candidate can have at most {MAX_ADDRESSES} addresses."
            ));
        }
        match name {
            Some(name) if errors.emails.is_none() => Ok(Self {
                name,
                emails: parsed,
            }),
            _ => Err(errors),
        }
    }
}

/// Display names of the authors of `messages` (one query per distinct author).
pub async fn author_names(
    state: &AppState,
    org: OrgId,
    messages: &[InMail],
) -> Result<HashMap<UserId, String>, StoreError> {
    let mut names = HashMap::new();
    for id in messages.iter().filter_map(|m| m.author_user_id) {
        if names.contains_key(&id) {
            continue;
        }
        if let Some(u) = state
            .store
            .user_by_id(id)
            .await?
            .filter(|u| u.org_id == org)
        {
            names.insert(id, u.display_name);
        }
    }
    Ok(names)
}

/// Verifies `password` against a throwaway hash of the configured cost, so an
/// unknown account takes as long to reject as a wrong password.
pub fn burn_password_check(state: &AppState, password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let cost = state.config.password_cost;
    let phc = DUMMY.get_or_init(|| cost.hash("not a real password"));
    let _ = verify_password(password, phc);
}

/// What `hirewire user add` was asked to do.
pub struct AddUser<'a> {
    pub org_name: &'a str,
    pub email: &'a str,
    pub display_name: Option<&'a str>,
    pub role: Role,
    pub time_zone: &'a str,
    pub password: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Minimum password length for accounts created from the CLI.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Creates a user, and their organization when it does not exist yet.
/// Returns the user and whether the organization was created.
pub async fn add_user(
    store: &Store,
    cost: PasswordCost,
    req: AddUser<'_>,
    now: Timestamp,
) -> Result<(User, bool), AccountError> {
    let email = EmailAddress::parse(req.email)
        .map_err(|e| AccountError::Invalid(format!("--email: {e}")))?;
    let org_name = validate_name(req.org_name, "--org").map_err(AccountError::Invalid)?;
    jiff::tz::TimeZone::get(req.time_zone).map_err(|_| {
        AccountError::Invalid(format!(
            "--time-zone: {:?} is not an IANA time zone",
            req.time_zone
        ))
    })?;
    let display = match req.display_name {
        Some(d) => validate_name(d, "--name").map_err(AccountError::Invalid)?,
        None => email
            .as_str()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    let hash = match req.password {
        Some(p) if p.chars().count() < MIN_PASSWORD_CHARS => {
            return Err(AccountError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        Some(p) => Some(cost.hash(p)),
        None => None,
    };
    let (org, created) = match store.org_by_name(&org_name).await? {
        Some(org) => (org, false),
        None => (store.create_org(&org_name, &[], now).await?, true),
    };
    let user = store
        .create_user(
            &NewUser {
                org_id: org.id,
                email: &email,
                display_name: &display,
                role: req.role,
                time_zone: req.time_zone,
                password_hash: hash.as_deref(),
            },
            now,
        )
        .await?;
    Ok((user, created))
}

/// Creates an API token for the user with this email; returns the token,
/// which is shown once and stored only as a digest.
pub async fn create_api_token(
    store: &Store,
    email: &str,
    name: &str,
    now: Timestamp,
) -> Result<String, AccountError> {
    let key = hirewire_domain::email::AddressKey::of(email);
    let user = store
        .user_by_email_key(&key)
        .await?
        .ok_or_else(|| AccountError::Invalid(format!("no user with email {email}")))?;
    let token = format!("hw_{}", random_token());
    store
        .create_api_token(user.id, name, &token_digest(&token), now)
        .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_input_collects_every_field_error() {
        let err = CandidateInput::parse("  ", &["ok@x.example", "nope"]).unwrap_err();
        assert!(err.name.is_some());
        assert!(err.emails.unwrap().contains("nope"));
    }

    #[test]
    fn candidate_input_drops_repeats_of_one_address() {
        let c = CandidateInput::parse("Ada", &["Ada@X.example", "ada@x.example", "a2@x.example"])
            .unwrap();
        assert_eq!(c.emails.len(), 2);
    }

    #[test]
    fn inmail_bodies_must_have_text() {
        assert!(validate_inmail_body(" \n ").is_err());
        assert!(validate_inmail_body("a\0b").is_err());
        assert_eq!(validate_inmail_body("Hello\n\n").unwrap(), "Hello");
    }
}
