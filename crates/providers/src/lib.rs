//! Provider adapters: Microsoft 365 (Entra ID + Graph) and Google Workspace (OAuth + Gmail + Calendar).
//!
//! This is the only crate that knows the providers' wire formats (see `shared/PROVIDERS.md`); everything it
//! returns is a plain Rust type. This part is the identity half used by "Email & calendar authorization":
//!
//! - [`scopes`]: which permissions each (provider, capability, access level) needs, in plain words, and how to
//!   compare what a provider granted with what is required.
//! - [`IdentityClient`]: the OAuth 2.0 authorization-code + PKCE flow (authorize URL, callback parsing, code
//!   exchange, refresh), the signed-in address, revocation and Microsoft admin consent.
//! - [`ProviderError`]: every failure, as what the server must do next, with a sentence for the person.
//! - [`http::HttpClient`]: the one HTTP client all provider calls go through.
//! - [`MailReader`]: the mail-read half (issue "Email Integrations"): window listing, raw messages, incremental
//!   changes and address search over Graph and Gmail (see [`mail`]).
//! - [`CalendarClient`]: the Scheduler's calendar half: free/busy, and interview events created idempotently,
//!   moved and cancelled with the provider sending the invitations (see [`calendar`]).
//! - [`Pacer`]: quota-aware pacing per mailbox and per provider (Graph concurrency and `Retry-After`, Gmail
//!   quota units under either cost model, bounded full-jitter retries, counters and a backfill ETA; see
//!   [`pacing`]). Readers opt in with `with_pacer`.
//! - [`PushClient`]: Graph change-notification subscriptions and Gmail `users.watch`, and the webhook side that
//!   decodes and checks deliveries without provider I/O (see [`push`]).
//!
//! The same code talks to the real services and to the sandbox (`crates/sandbox`); only [`Endpoints`] differ.

pub mod calendar;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod identity;
pub mod mail;
pub mod pacing;
pub mod push;
pub mod scopes;
pub mod secret;
pub mod send;

mod id_token;
mod wire;

pub use calendar::{
    Attendee, Busy, BusyStatus, CalendarChanges, CalendarClient, CalendarEvent, ChangesCursor,
    CreatedEvent, EventsCursor, EventsPage, Location, NewEvent,
};
pub use endpoints::{AppCredentials, Endpoints};
pub use error::{ConfigProblem, ProviderError, ReauthReason};
pub use http::{HttpClient, HttpConfig, RetryPolicy, Sleeper};
pub use identity::{
    AdminConsentCallback, AuthorizeRequest, Callback, IdClaims, IdentityClient, PkceVerifier,
    Revocation, TokenSet,
};
pub use mail::{
    Changes, DEFAULT_FETCH_CONCURRENCY, MailReader, MessageRef, Page, PageCursor, RawMessage,
    SyncCursor,
};
pub use pacing::{GmailCostModel, GmailMethod, PaceKey, Pacer, PacingConfig, Service};
pub use push::{PushClient, PushConfig};
pub use secret::Secret;
pub use send::{FoundMessage, Lookup, MailSender, Outgoing, Rejection, SendError, Sent};

/// The email and calendar provider an organization uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Microsoft 365: Entra ID (identity platform v2.0) + Microsoft Graph.
    Microsoft,
    /// Google Workspace: Google OAuth 2.0 + Gmail API + Calendar API.
    Google,
}

impl Provider {
    /// The product name people know ("Microsoft 365", "Google Workspace").
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Microsoft => "Microsoft 365",
            Provider::Google => "Google Workspace",
        }
    }
}

/// What a recruiter authorizes separately: their inbox or their work calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Read (and, with [`AccessLevel::SendAndView`], send) mail.
    Inbox,
    /// Free/busy and event creation on the work calendar.
    Calendar,
}

impl Capability {
    /// Plain words for messages ("inbox", "calendar").
    pub fn noun(self) -> &'static str {
        match self {
            Capability::Inbox => "inbox",
            Capability::Calendar => "calendar",
        }
    }

    /// The version of this capability's permission set that new grants are made under
    /// (see [`scopes::INBOX_PERMISSION_SET_VERSION`] and [`scopes::CALENDAR_PERMISSION_SET_VERSION`]).
    pub fn permission_set_version(self) -> u32 {
        match self {
            Capability::Inbox => scopes::INBOX_PERMISSION_SET_VERSION,
            Capability::Calendar => scopes::CALENDAR_PERMISSION_SET_VERSION,
        }
    }
}

/// The organization admin's email access level. It decides the inbox scopes; the calendar is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessLevel {
    /// Read mail and send as the recruiter.
    SendAndView,
    /// Read mail only.
    ViewOnly,
    /// No mailbox access: the inbox cannot be authorized.
    Off,
}
