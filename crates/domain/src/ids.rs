//! Typed row ids.
//!
//! Every table has a 64-bit autoincrement id; wrapping it per table makes it a
//! compile error to pass a candidate id where a job id is expected. They
//! serialize as plain numbers and display as digits.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw row id.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    )*};
}

id_type! {
    /// An organization (tenant).
    OrgId,
    /// A person who signs in (admin or recruiter).
    UserId,
    /// A candidate, scoped to one organization.
    CandidateId,
    /// An in-product message to or from a candidate.
    InMailId,
    /// A background job in the leased work queue.
    JobId,
    /// A personal API token.
    ApiTokenId,
    /// An audit log entry.
    AuditId,
    /// A recruiter's grant of one capability (inbox or calendar) at a provider.
    GrantId,
    /// A synced email thread in one recruiter's mailbox.
    MailThreadId,
    /// A synced email message (one mailbox's copy).
    MailMessageId,
    /// A recruiter's single-use scheduling link sent to one candidate.
    SchedulingLinkId,
    /// A meeting booked through a scheduling link.
    BookingId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_as_digits_and_parse_back() {
        let id = CandidateId(42);
        assert_eq!(id.to_string(), "42");
        assert_eq!("42".parse::<CandidateId>().unwrap(), id);
        assert!("x".parse::<CandidateId>().is_err());
        assert_eq!(i64::from(id), 42);
    }
}
