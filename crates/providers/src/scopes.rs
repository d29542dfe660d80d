//! Which permissions hirewire asks for, why, and whether a grant covers them.
//!
//! Scope strings are compared in a normalized form ([`normalize`]):
//! - Microsoft: Graph permissions as short names (`Mail.Read`), because token responses list short names but
//!   may list `https://graph.microsoft.com/Mail.Read`; OIDC scopes (`openid`, `email`, `profile`,
//!   `offline_access`) as they are; other resources (`https://outlook.office.com/IMAP.AccessAsUser.All`) keep
//!   their URI.
//! - Google: full URLs, because Google expands `email`/`profile` to `…/auth/userinfo.email`/`…/userinfo.profile`
//!   in every `scope` it returns; `openid` stays.
//!
//! A broader granted scope satisfies a narrower need where the provider documents it ([`satisfies`]):
//! `Mail.ReadWrite` ⊇ `Mail.Read`, `gmail.modify` ⊇ `gmail.readonly`, `calendar` ⊇ every `calendar.*`.
//!
//! # Permission-set versions
//! Each grant records the version of its capability's permission set it was made under. A version changes
//! only when the scopes hirewire requires for that capability change, so a stored grant whose version is below
//! the current one is known to predate the change (and is checked with [`missing`] or sent to reauthorize).
//! - Inbox: **1** = the first inbox set (this one).
//! - Calendar: **1** = the legacy scheduler grant, calendar scopes only, made before email sync existed, with
//!   no `offline_access`/sign-in scopes and so no synced address; **2** = the current set (sign-in scopes +
//!   calendar read/write + free/busy).

use std::collections::BTreeSet;

use crate::{AccessLevel, Capability, Provider};

/// Inbox permission-set version new grants are made under (see the module docs).
pub const INBOX_PERMISSION_SET_VERSION: u32 = 1;
/// Calendar permission-set version new grants are made under; 1 is the legacy scheduler grant.
pub const CALENDAR_PERMISSION_SET_VERSION: u32 = 2;

/// One permission hirewire needs, with what it is for in words a recruiter understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeNeed {
    /// The scope in normalized form.
    pub scope: &'static str,
    /// Why hirewire needs it, as a sentence.
    pub purpose: &'static str,
}

const fn need(scope: &'static str, purpose: &'static str) -> ScopeNeed {
    ScopeNeed { scope, purpose }
}

/// Google's scope URL prefix.
pub const GOOGLE_PREFIX: &str = "https://www.googleapis.com/auth/";
/// Microsoft Graph's resource prefix, which Graph short names stand for.
pub const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";

const MS_SIGN_IN: &[ScopeNeed] = &[
    need("openid", "Sign you in with your work account"),
    need("email", "See your email address"),
    need("profile", "See your name"),
    need(
        "offline_access",
        "Keep working while you are away, without asking you to sign in again",
    ),
    need(
        "User.Read",
        "Read your profile so hirewire can show which address it synced",
    ),
];
const GOOGLE_SIGN_IN: &[ScopeNeed] = &[
    need("openid", "Sign you in with your work account"),
    need(
        "https://www.googleapis.com/auth/userinfo.email",
        "See your email address so hirewire can show which account it synced",
    ),
];

const MS_MAIL_READ: ScopeNeed = need(
    "Mail.Read",
    "Read your mail so conversations with candidates appear in hirewire",
);
const MS_MAIL_READWRITE: ScopeNeed = need(
    "Mail.ReadWrite",
    "Read your mail so conversations with candidates appear in hirewire, and save the drafts of emails you schedule",
);
const MS_MAIL_SEND: ScopeNeed = need(
    "Mail.Send",
    "Send the emails you write to candidates in hirewire from your own mailbox",
);
const MS_CALENDAR: ScopeNeed = need(
    "Calendars.ReadWrite",
    "See when you are busy and put booked interviews on your calendar",
);
const GMAIL_READ: ScopeNeed = need(
    "https://www.googleapis.com/auth/gmail.readonly",
    "Read your mail so conversations with candidates appear in hirewire",
);
const GMAIL_SEND: ScopeNeed = need(
    "https://www.googleapis.com/auth/gmail.send",
    "Send the emails you write to candidates in hirewire from your own mailbox",
);
const GCAL_EVENTS: ScopeNeed = need(
    "https://www.googleapis.com/auth/calendar.events",
    "Put booked interviews on your calendar and keep them up to date",
);
const GCAL_FREEBUSY: ScopeNeed = need(
    "https://www.googleapis.com/auth/calendar.freebusy",
    "See when you are busy so candidates are only offered free times",
);

/// The sign-in scopes requested with every authorization (identity and a refresh token).
pub fn sign_in(provider: Provider) -> &'static [ScopeNeed] {
    match provider {
        Provider::Microsoft => MS_SIGN_IN,
        Provider::Google => GOOGLE_SIGN_IN,
    }
}

/// The capability's own scopes at this access level (without the sign-in scopes). Empty for an inbox when
/// the admin turned email access [`AccessLevel::Off`]; the calendar ignores the access level.
pub fn required(provider: Provider, capability: Capability, access: AccessLevel) -> Vec<ScopeNeed> {
    match (provider, capability, access) {
        (_, Capability::Inbox, AccessLevel::Off) => Vec::new(),
        (Provider::Microsoft, Capability::Inbox, AccessLevel::SendAndView) => {
            vec![MS_MAIL_READWRITE, MS_MAIL_SEND]
        }
        (Provider::Microsoft, Capability::Inbox, AccessLevel::ViewOnly) => vec![MS_MAIL_READ],
        (Provider::Microsoft, Capability::Calendar, _) => vec![MS_CALENDAR],
        (Provider::Google, Capability::Inbox, AccessLevel::SendAndView) => {
            vec![GMAIL_READ, GMAIL_SEND]
        }
        (Provider::Google, Capability::Inbox, AccessLevel::ViewOnly) => vec![GMAIL_READ],
        (Provider::Google, Capability::Calendar, _) => vec![GCAL_EVENTS, GCAL_FREEBUSY],
    }
}

/// Everything to put in an authorize request: sign-in scopes, then the capability's.
pub fn request(provider: Provider, capability: Capability, access: AccessLevel) -> Vec<String> {
    sign_in(provider)
        .iter()
        .chain(required(provider, capability, access).iter())
        .map(|n| n.scope.to_owned())
        .collect()
}

/// Normalizes one scope string (see the module docs). Unknown scopes pass through trimmed.
pub fn normalize(provider: Provider, scope: &str) -> String {
    let s = scope.trim();
    match provider {
        Provider::Microsoft => match s.strip_prefix(GRAPH_PREFIX) {
            Some(short) if !short.is_empty() => short.to_owned(),
            _ => s.to_owned(),
        },
        Provider::Google => match s {
            "email" => format!("{GOOGLE_PREFIX}userinfo.email"),
            "profile" => format!("{GOOGLE_PREFIX}userinfo.profile"),
            _ => s.to_owned(),
        },
    }
}

/// Splits a space-separated granted `scope` value (token response or redirect) and normalizes each scope;
/// sorted, without duplicates.
pub fn normalize_granted(provider: Provider, granted: &str) -> Vec<String> {
    normalize_all(provider, granted.split_whitespace())
}

/// Normalizes a list of scopes; sorted, without duplicates.
pub fn normalize_all<'a>(
    provider: Provider,
    scopes: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    scopes
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| normalize(provider, s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Broader scope → the narrower ones it covers, where the provider documents it (normalized names).
const IMPLIES: &[(&str, &[&str])] = &[
    ("Mail.ReadWrite", &["Mail.Read"]),
    ("Calendars.ReadWrite", &["Calendars.Read"]),
    (
        "https://mail.google.com/",
        &[
            "https://www.googleapis.com/auth/gmail.modify",
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/gmail.send",
            "https://www.googleapis.com/auth/gmail.compose",
            "https://www.googleapis.com/auth/gmail.metadata",
        ],
    ),
    (
        "https://www.googleapis.com/auth/gmail.modify",
        &[
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/gmail.send",
            "https://www.googleapis.com/auth/gmail.compose",
            "https://www.googleapis.com/auth/gmail.metadata",
        ],
    ),
    (
        "https://www.googleapis.com/auth/gmail.readonly",
        &["https://www.googleapis.com/auth/gmail.metadata"],
    ),
    (
        "https://www.googleapis.com/auth/gmail.compose",
        &["https://www.googleapis.com/auth/gmail.send"],
    ),
    (
        "https://www.googleapis.com/auth/calendar",
        &[
            "https://www.googleapis.com/auth/calendar.readonly",
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/calendar.events.readonly",
            "https://www.googleapis.com/auth/calendar.freebusy",
            "https://www.googleapis.com/auth/calendar.events.freebusy",
        ],
    ),
    (
        "https://www.googleapis.com/auth/calendar.readonly",
        &[
            "https://www.googleapis.com/auth/calendar.events.readonly",
            "https://www.googleapis.com/auth/calendar.freebusy",
            "https://www.googleapis.com/auth/calendar.events.freebusy",
        ],
    ),
    (
        "https://www.googleapis.com/auth/calendar.events",
        &["https://www.googleapis.com/auth/calendar.events.readonly"],
    ),
];

/// Whether a granted scope (normalized) covers a needed one (normalized): equal, or documented as broader.
pub fn satisfies(granted: &str, needed: &str) -> bool {
    granted == needed
        || IMPLIES
            .iter()
            .any(|(broad, narrow)| *broad == granted && narrow.contains(&needed))
}

/// The needs that `granted` does not cover. Both sides are normalized for `provider` first, so raw provider
/// strings may be passed. Order follows `required`.
pub fn missing(provider: Provider, granted: &[String], required: &[ScopeNeed]) -> Vec<ScopeNeed> {
    let granted = normalize_all(provider, granted.iter().map(String::as_str));
    required
        .iter()
        .filter(|need| {
            let n = normalize(provider, need.scope);
            !granted.iter().any(|g| satisfies(g, &n))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_full_graph_urls_and_short_names_normalize_alike() {
        assert_eq!(
            normalize(Provider::Microsoft, "https://graph.microsoft.com/Mail.Read"),
            "Mail.Read"
        );
        assert_eq!(normalize(Provider::Microsoft, "Mail.Read"), "Mail.Read");
        assert_eq!(normalize(Provider::Microsoft, "email"), "email");
        assert_eq!(
            normalize(
                Provider::Microsoft,
                "https://outlook.office.com/IMAP.AccessAsUser.All"
            ),
            "https://outlook.office.com/IMAP.AccessAsUser.All"
        );
    }

    #[test]
    fn google_email_and_profile_become_userinfo_urls() {
        assert_eq!(
            normalize_granted(Provider::Google, "openid email profile"),
            vec![
                "https://www.googleapis.com/auth/userinfo.email".to_owned(),
                "https://www.googleapis.com/auth/userinfo.profile".to_owned(),
                "openid".to_owned(),
            ]
        );
    }

    #[test]
    fn an_inbox_with_email_access_off_needs_nothing_and_the_calendar_ignores_the_access_level() {
        for p in [Provider::Microsoft, Provider::Google] {
            assert!(required(p, Capability::Inbox, AccessLevel::Off).is_empty());
            assert_eq!(
                required(p, Capability::Calendar, AccessLevel::Off),
                required(p, Capability::Calendar, AccessLevel::SendAndView)
            );
        }
    }

    #[test]
    fn every_need_has_a_purpose_sentence_and_is_already_normalized() {
        for p in [Provider::Microsoft, Provider::Google] {
            for c in [Capability::Inbox, Capability::Calendar] {
                for a in [AccessLevel::SendAndView, AccessLevel::ViewOnly] {
                    for n in sign_in(p).iter().chain(required(p, c, a).iter()) {
                        assert!(n.purpose.len() > 10, "{n:?}");
                        assert_eq!(normalize(p, n.scope), n.scope);
                    }
                }
            }
        }
    }

    #[test]
    fn read_write_scopes_satisfy_read_needs_but_not_the_other_way() {
        let g = |s: &str| vec![s.to_owned()];
        let read = required(
            Provider::Microsoft,
            Capability::Inbox,
            AccessLevel::ViewOnly,
        );
        assert!(missing(Provider::Microsoft, &g("Mail.ReadWrite"), &read).is_empty());
        assert!(
            missing(
                Provider::Microsoft,
                &g("https://graph.microsoft.com/Mail.ReadWrite"),
                &read
            )
            .is_empty()
        );
        let rw = required(
            Provider::Microsoft,
            Capability::Inbox,
            AccessLevel::SendAndView,
        );
        assert_eq!(
            missing(Provider::Microsoft, &g("Mail.Read"), &rw)
                .iter()
                .map(|n| n.scope)
                .collect::<Vec<_>>(),
            vec!["Mail.ReadWrite", "Mail.Send"]
        );
        let gread = required(
            Provider::Google,
            Capability::Inbox,
            AccessLevel::SendAndView,
        );
        assert!(
            missing(
                Provider::Google,
                &g("https://www.googleapis.com/auth/gmail.modify"),
                &gread
            )
            .is_empty()
        );
        let cal = required(
            Provider::Google,
            Capability::Calendar,
            AccessLevel::SendAndView,
        );
        assert!(
            missing(
                Provider::Google,
                &g("https://www.googleapis.com/auth/calendar"),
                &cal
            )
            .is_empty()
        );
        assert_eq!(
            missing(
                Provider::Google,
                &g("https://www.googleapis.com/auth/calendar.events"),
                &cal
            ),
            vec![GCAL_FREEBUSY]
        );
        assert!(!satisfies(
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/gmail.modify"
        ));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn any_scope() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("Mail.Read".to_owned()),
                Just("Mail.ReadWrite".to_owned()),
                Just("Mail.Send".to_owned()),
                Just("Calendars.ReadWrite".to_owned()),
                Just("https://graph.microsoft.com/Mail.Read".to_owned()),
                Just("openid".to_owned()),
                Just("email".to_owned()),
                Just("https://www.googleapis.com/auth/gmail.readonly".to_owned()),
                Just("https://www.googleapis.com/auth/gmail.modify".to_owned()),
                Just("https://www.googleapis.com/auth/calendar".to_owned()),
                Just("https://www.googleapis.com/auth/calendar.events".to_owned()),
                "[A-Za-z.]{1,12}",
            ]
        }
        fn any_provider() -> impl Strategy<Value = Provider> {
            prop_oneof![Just(Provider::Microsoft), Just(Provider::Google)]
        }
        fn any_need() -> impl Strategy<Value = ScopeNeed> {
            (any_provider(), any::<bool>(), any::<bool>()).prop_map(|(p, inbox, send)| {
                let c = if inbox {
                    Capability::Inbox
                } else {
                    Capability::Calendar
                };
                let a = if send {
                    AccessLevel::SendAndView
                } else {
                    AccessLevel::ViewOnly
                };
                let all = required(p, c, a);
                all[0]
            })
        }

        proptest! {
            #[test]
            fn normalizing_is_idempotent(p in any_provider(), s in any_scope()) {
                let once = normalize(p, &s);
                prop_assert_eq!(normalize(p, &once), once);
            }

            #[test]
            fn normalize_granted_is_sorted_unique_and_order_independent(
                p in any_provider(), mut v in prop::collection::vec(any_scope(), 0..8)
            ) {
                let a = normalize_granted(p, &v.join(" "));
                v.reverse();
                let b = normalize_granted(p, &v.join("  "));
                prop_assert_eq!(&a, &b);
                prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            }

            #[test]
            fn granting_a_missing_scope_removes_it_and_adding_grants_never_adds_missing(
                p in any_provider(),
                granted in prop::collection::vec(any_scope(), 0..6),
                extra in any_scope(),
                needs in prop::collection::vec(any_need(), 0..4),
            ) {
                let before = missing(p, &granted, &needs);
                let mut more = granted.clone();
                more.push(extra);
                let after = missing(p, &more, &needs);
                prop_assert!(after.iter().all(|n| before.contains(n)));
                let mut all = granted.clone();
                all.extend(before.iter().map(|n| n.scope.to_owned()));
                prop_assert!(missing(p, &all, &needs).is_empty());
            }
        }
    }
}
