//! Records read from and written to the store.

use std::fmt;
use std::str::FromStr;

use hirewire_domain::email::{AddressKey, EmailAddress, MailDomain};
use hirewire_domain::ids::{ApiTokenId, AuditId, CandidateId, InMailId, JobId, OrgId, UserId};
use jiff::Timestamp;

use crate::StoreError;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            /// The text stored in the database (and used in the API).
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(StoreError::Invalid(format!(
                        concat!("unknown ", stringify!($name), " {:?}"), other
                    ))),
                }
            }
        }
    };
}

pub(crate) use string_enum;

string_enum! {
    /// What a user may do in their organization.
    Role { Admin = "admin", Recruiter = "recruiter" }
}

string_enum! {
    /// Whether an InMail went to or came from the candidate.
    Direction { Outbound = "outbound", Inbound = "inbound" }
}

string_enum! {
    /// Life cycle of a job: `queued` → `running` → `done` | `failed`
    /// (or back to `queued` for a retry).
    JobStatus { Queued = "queued", Running = "running", Done = "done", Failed = "failed" }
}

/// Decodes a stored enum value; an unknown value is corruption, not bad input.
pub(crate) fn decode_enum<T: FromStr<Err = StoreError>>(s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|e: StoreError| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode_address(s: &str) -> Result<EmailAddress, StoreError> {
    EmailAddress::parse(s).map_err(|e| StoreError::Corrupt(format!("stored address {s:?}: {e}")))
}

/// An organization (tenant) and the mail domains it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    /// Sorted, without duplicates.
    pub domains: Vec<MailDomain>,
    pub created_at: Timestamp,
}

/// A person who signs in.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    /// As entered.
    pub email: EmailAddress,
    /// Globally unique sign-in key.
    pub email_key: AddressKey,
    pub display_name: String,
    pub role: Role,
    /// IANA zone name, validated by the caller.
    pub time_zone: String,
    /// Argon2 PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
    pub created_at: Timestamp,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("time_zone", &self.time_zone)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Input of [`Store::create_user`](crate::Store::create_user).
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub org_id: OrgId,
    pub email: &'a EmailAddress,
    pub display_name: &'a str,
    pub role: Role,
    pub time_zone: &'a str,
    pub password_hash: Option<&'a str>,
}

/// A signed-in browser session. The store only ever sees the SHA-256 digest
/// of the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub token_digest: Vec<u8>,
    pub user_id: UserId,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("csrf_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// Input of [`Store::create_session`](crate::Store::create_session).
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub token_digest: &'a [u8],
    pub user_id: UserId,
    pub csrf_token: &'a str,
    pub expires_at: Timestamp,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// A personal API token (its digest is never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Timestamp,
    /// Updated on use, at most once a minute.
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// One address of a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateEmail {
    pub address: EmailAddress,
    pub key: AddressKey,
}

/// A candidate with their addresses (in the order they were added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: CandidateId,
    pub org_id: OrgId,
    pub name: String,
    pub emails: Vec<CandidateEmail>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One page of [`Store::list_candidates`](crate::Store::list_candidates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidatePage {
    /// Newest first (id descending).
    pub candidates: Vec<Candidate>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next_after: Option<CandidateId>,
}

/// An in-product message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMail {
    pub id: InMailId,
    pub org_id: OrgId,
    pub candidate_id: CandidateId,
    /// `None` for inbound messages (and for authors since deleted).
    pub author_user_id: Option<UserId>,
    pub direction: Direction,
    pub body: String,
    pub sent_at: Timestamp,
    pub created_at: Timestamp,
}

/// Input of [`Store::create_inmail`](crate::Store::create_inmail).
#[derive(Debug, Clone, Copy)]
pub struct NewInMail<'a> {
    pub candidate_id: CandidateId,
    pub author_user_id: Option<UserId>,
    pub direction: Direction,
    pub body: &'a str,
    pub sent_at: Timestamp,
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: AuditId,
    pub org_id: Option<OrgId>,
    pub actor_user_id: Option<UserId>,
    /// Dotted verb, e.g. `auth.sign_in_failed`.
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub ip: Option<String>,
    pub at: Timestamp,
}

/// Input of [`Store::record_audit`](crate::Store::record_audit).
#[derive(Debug, Clone, Copy)]
pub struct NewAudit<'a> {
    pub org_id: Option<OrgId>,
    pub actor_user_id: Option<UserId>,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a serde_json::Value,
    pub ip: Option<&'a str>,
}

/// Outcome of [`Store::idempotency_begin`](crate::Store::idempotency_begin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// First time this key is seen: do the work, then `idempotency_finish`
    /// (or `idempotency_abandon` on error).
    New,
    /// The request already completed: send this response again.
    Replay { status: u16, body: Vec<u8> },
    /// The same request is still being processed (answer 409).
    InProgress,
    /// The key was used for a different request (answer 422).
    Mismatch,
}

/// Input of [`Store::enqueue`](crate::Store::enqueue).
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    /// Not claimable before this instant.
    pub run_at: Timestamp,
    /// At least 1.
    pub max_attempts: u32,
    /// While an unfinished (queued or running) job has this key, enqueueing
    /// another returns the existing job's id.
    pub dedupe_key: Option<&'a str>,
}

/// A job as stored (for inspection).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: Timestamp,
    pub lease_until: Option<Timestamp>,
    pub lease_owner: Option<String>,
    pub fencing_token: i64,
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A job a worker holds a lease on.
///
/// Pass `id` and `fencing_token` to heartbeat/complete/fail; the token also
/// fences provider writes (include it where a provider accepts a version).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: JobId,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 for the first run.
    pub attempt: u32,
    /// Strictly increases on every claim of this job.
    pub fencing_token: i64,
    pub lease_until: Timestamp,
}
