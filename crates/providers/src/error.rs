//! [`ProviderError`]: every failure of a provider call, as what the server must do next.
//!
//! Microsoft identity errors are classified by `error` + `suberror` first and the AADSTS number second (the
//! docs warn that numbers change); Google's by `error` and its fixed `error_description` strings.

use std::time::Duration;

use crate::Provider;

/// Why a grant can no longer be used and the recruiter must authorize again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReauthReason {
    /// The user or an admin removed the app's consent (Microsoft AADSTS65001 / `consent_required`).
    ConsentRevoked,
    /// Sessions were revoked or the password changed (Microsoft AADSTS50173, 50132, 50133).
    SessionRevoked,
    /// The refresh token went unused too long (Microsoft AADSTS700082).
    Inactive,
    /// Expired or revoked, the provider does not say which (Google "Token has been expired or revoked.",
    /// Microsoft AADSTS70008 / 70000).
    ExpiredOrRevoked,
    /// MFA, Conditional Access or sign-in frequency needs the user at the keyboard (AADSTS50076, 50079,
    /// 53003, 70043, `interaction_required`).
    InteractionRequired,
    /// The authorization code was rejected: expired, already used, or the PKCE verifier does not match
    /// (AADSTS54005, 70008 at the code leg, 501481; Google `invalid_grant` "Bad Request"). Start over.
    CodeRejected,
    /// The provider granted no refresh token (no `offline_access`, or Google without `prompt=consent`).
    NoRefreshToken,
    /// A permission hirewire needs is not (or no longer) granted (Graph 403 `ErrorAccessDenied`, Google 403
    /// `insufficientPermissions`).
    MissingPermissions,
}

/// Which part of the organization's provider setup is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigProblem {
    /// The client id is not known to the provider (AADSTS700016, Google `invalid_client` at sign-in).
    UnknownClient,
    /// The client secret is wrong or expired (AADSTS7000215 / 7000222, `invalid_client` at the token endpoint).
    ClientSecret,
    /// The redirect URI is not registered on the app (AADSTS50011, Google `redirect_uri_mismatch`).
    RedirectUri,
    /// The tenant does not exist or cannot be used here (AADSTS90002, 90130).
    Tenant,
    /// The requested scopes are invalid (AADSTS70011, 700022, `invalid_scope`).
    Scopes,
    /// Anything else the provider blames on the request (`invalid_request`, `unsupported_grant_type`).
    Request,
    /// Graph could not validate hirewire's webhook address when creating a push subscription: the public URL
    /// does not reach this server, or the server did not echo the `validationToken` in time.
    NotificationUrl,
}

impl ConfigProblem {
    fn words(self) -> &'static str {
        match self {
            ConfigProblem::UnknownClient => "the client id is not known to the provider",
            ConfigProblem::ClientSecret => "the client secret is wrong or has expired",
            ConfigProblem::RedirectUri => "the redirect URI is not registered on the app",
            ConfigProblem::Tenant => "the tenant is not valid for this app",
            ConfigProblem::Scopes => "the app asked for permissions the provider does not accept",
            ConfigProblem::Request => "the provider rejected hirewire's request",
            ConfigProblem::NotificationUrl => {
                "the provider could not reach hirewire's public webhook address to validate it"
            }
        }
    }
}

/// A failed provider call. Variants follow what the server must do; [`ProviderError::user_message`] says it
/// to a person. Nothing in here contains a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Mark the grant "needs reauthorization" and ask the recruiter to authorize again.
    #[error("{provider:?} grant needs reauthorization: {reason:?}")]
    NeedsReauthorization {
        /// Whose grant.
        provider: Provider,
        /// Why.
        reason: ReauthReason,
    },
    /// The recruiter cancelled or declined consent.
    #[error("{0:?} consent was declined")]
    AccessDenied(Provider),
    /// An organization admin must approve the app first (AADSTS90094/90095, Google `admin_policy_enforced`).
    #[error("{0:?} requires admin approval")]
    NeedAdminApproval(Provider),
    /// The tenant requires assignment and the user is not assigned to the app (AADSTS50105).
    #[error("Microsoft user is not assigned to the app")]
    UserNotAssigned,
    /// The account belongs to another tenant than the one configured (AADSTS50020, 700005).
    #[error("Microsoft account is from another tenant")]
    WrongTenant,
    /// The organization's app registration or settings are wrong: an admin must fix them.
    #[error("{provider:?} app is misconfigured: {what:?}")]
    Misconfigured {
        /// Whose app.
        provider: Provider,
        /// What is wrong.
        what: ConfigProblem,
    },
    /// The provider asks hirewire to slow down; try again after `retry_after` (when given).
    #[error("throttled by the provider (retry after {retry_after:?})")]
    Throttled {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A temporary failure (5xx, timeout, connection): try again later.
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// The access token was rejected (401): refresh it and try again.
    #[error("access token rejected")]
    TokenRejected,
    /// The provider has no such operation (Microsoft delegated token revocation).
    #[error("not supported by {provider:?}: {what}")]
    NotSupported {
        /// Which provider.
        provider: Provider,
        /// Which operation.
        what: &'static str,
    },
    /// The provider said something hirewire does not understand. Logged; shown as a generic failure.
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// An incremental-sync cursor is no longer accepted (Graph delta token expired: 410; Gmail history id too
    /// old: 404). Nothing is lost on the provider side: run a full resync of the window, then start a new
    /// incremental cursor ([`crate::mail::MailReader::start_incremental`]).
    #[error("{provider:?} sync cursor expired; a full resync is needed")]
    CursorExpired {
        /// Whose mailbox.
        provider: Provider,
    },
    /// The push subscription no longer exists at the provider (Graph 404 on renew): create a new one, and catch
    /// up by polling.
    #[error("{provider:?} push subscription no longer exists")]
    SubscriptionGone {
        /// Whose subscription.
        provider: Provider,
    },
    /// The message no longer exists (deleted between listing and fetching: Graph 404 `ErrorItemNotFound`,
    /// Gmail 404 `notFound`). Skip it; incremental sync reports the deletion.
    #[error("{provider:?} message no longer exists")]
    MessageGone {
        /// Whose mailbox.
        provider: Provider,
    },
    /// Free/busy of this address cannot be read: the provider does not know it or will not tell (Graph
    /// `getSchedule` per-schedule `error`, Google `freeBusy` per-calendar `errors`). The rest of the request is fine.
    #[error("{provider:?} calendar of {address} is unavailable: {reason}")]
    CalendarUnavailable {
        /// Whose calendar API.
        provider: Provider,
        /// The address asked for.
        address: String,
        /// The provider's reason (`ErrorMailboxNotFound`, `notFound`, …).
        reason: String,
    },
    /// The calendar event no longer exists (deleted on the provider: Graph 404, Google 404 / 410 `deleted`, or a
    /// repeated create whose event was cancelled since).
    #[error("{provider:?} calendar event no longer exists")]
    EventGone {
        /// Whose calendar.
        provider: Provider,
    },
}

impl ProviderError {
    /// A sentence for the person on the settings page: what happened and who must act.
    pub fn user_message(&self) -> String {
        match self {
            ProviderError::NeedsReauthorization { provider, reason } => {
                let p = provider.display_name();
                match reason {
                    ReauthReason::ConsentRevoked => format!(
                        "hirewire's access to your {p} account was removed. Authorize again to reconnect."
                    ),
                    ReauthReason::SessionRevoked => format!(
                        "Your {p} sign-in was reset (for example after a password change). Authorize again to reconnect."
                    ),
                    ReauthReason::Inactive => format!(
                        "hirewire's access to your {p} account expired after a long time unused. Authorize again to reconnect."
                    ),
                    ReauthReason::ExpiredOrRevoked => format!(
                        "hirewire's access to your {p} account has expired or was revoked. Authorize again to reconnect."
                    ),
                    ReauthReason::InteractionRequired => format!(
                        "Your {p} organization requires you to sign in again (for example for multi-factor authentication). Authorize again to reconnect."
                    ),
                    ReauthReason::CodeRejected => {
                        "The sign-in took too long or was already used. Please click Authorize and try again.".to_owned()
                    }
                    ReauthReason::NoRefreshToken => format!(
                        "{p} did not give hirewire lasting access, so it could not stay connected. Please click Authorize and try again."
                    ),
                    ReauthReason::MissingPermissions => format!(
                        "hirewire is missing a permission on your {p} account. Authorize again and allow every permission listed."
                    ),
                }
            }
            ProviderError::AccessDenied(_) => {
                "You cancelled the authorization, so nothing was connected. Click Authorize to try again."
                    .to_owned()
            }
            ProviderError::NeedAdminApproval(p) => format!(
                "Your {} admin must approve hirewire before you can connect your inbox or calendar.",
                p.display_name()
            ),
            ProviderError::UserNotAssigned => {
                "Your Microsoft 365 admin has not given you access to hirewire. Ask them to assign you to the app."
                    .to_owned()
            }
            ProviderError::WrongTenant => {
                "You signed in with an account from a different organization. Sign in with your work account for this workspace."
                    .to_owned()
            }
            ProviderError::Misconfigured { provider, what } => format!(
                "hirewire's {} connection is set up incorrectly ({}). An organization admin must fix it in Admin settings > Email provider.",
                provider.display_name(),
                what.words()
            ),
            ProviderError::Throttled { .. } => {
                "The email provider is busy right now. hirewire will try again shortly.".to_owned()
            }
            ProviderError::Transient(_) => {
                "The email provider is temporarily unavailable. Please try again in a few minutes."
                    .to_owned()
            }
            ProviderError::TokenRejected => {
                "The email provider rejected hirewire's access for a moment. hirewire will reconnect by itself."
                    .to_owned()
            }
            ProviderError::NotSupported { provider, .. } => format!(
                "{} does not let hirewire do this automatically.",
                provider.display_name()
            ),
            ProviderError::Protocol(_) => {
                "Something went wrong talking to the email provider. Please try again; if it keeps happening, tell your admin."
                    .to_owned()
            }
            ProviderError::SubscriptionGone { .. } => {
                "hirewire's live updates for this mailbox stopped; it is setting them up again.".to_owned()
            }
            ProviderError::MessageGone { .. } => {
                "A message was deleted before hirewire could read it.".to_owned()
            }
            ProviderError::CalendarUnavailable { address, .. } => format!(
                "hirewire cannot see when {address} is free: the calendar provider does not know this address or does not share it."
            ),
            ProviderError::EventGone { .. } => {
                "The calendar event was deleted in the calendar, so hirewire cannot change it.".to_owned()
            }
            ProviderError::CursorExpired { provider } => format!(
                "hirewire is catching up with your {} mailbox from the start of the sync window. This happens by itself.",
                provider.display_name()
            ),
        }
    }

    /// Whether trying the same call later may succeed without anyone acting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. }
                | ProviderError::Transient(_)
                | ProviderError::TokenRejected
        )
    }

    pub(crate) fn reauth(provider: Provider, reason: ReauthReason) -> Self {
        ProviderError::NeedsReauthorization { provider, reason }
    }

    pub(crate) fn misconfigured(provider: Provider, what: ConfigProblem) -> Self {
        ProviderError::Misconfigured { provider, what }
    }
}

/// The AADSTS number of a Microsoft error: the first of `error_codes`, else `AADSTSnnnn` in the description.
pub fn aadsts_code(error_codes: Option<&[u64]>, description: Option<&str>) -> Option<u64> {
    if let Some(&c) = error_codes.and_then(|c| c.first()) {
        return Some(c);
    }
    let d = description?;
    let at = d.find("AADSTS")? + "AADSTS".len();
    let digits: String = d[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which token grant failed: it changes what `invalid_grant` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantKind {
    /// Authorization code exchange (also the authorize redirect).
    Code,
    /// Refresh token.
    Refresh,
}

/// Classifies an OAuth error (token endpoint body or authorize/admin-consent redirect).
pub(crate) fn classify_oauth_error(
    provider: Provider,
    kind: GrantKind,
    error: &str,
    description: Option<&str>,
    error_codes: Option<&[u64]>,
    suberror: Option<&str>,
) -> ProviderError {
    use ConfigProblem as C;
    use ReauthReason as R;
    let reauth = |r| ProviderError::reauth(provider, r);
    let mis = |w| ProviderError::misconfigured(provider, w);

    match suberror {
        Some("consent_required") => return reauth(R::ConsentRevoked),
        Some("user_password_expired") => return reauth(R::SessionRevoked),
        Some("basic_action" | "additional_action") => return reauth(R::InteractionRequired),
        _ => {}
    }
    if provider == Provider::Microsoft
        && let Some(code) = aadsts_code(error_codes, description)
    {
        let by_code = match code {
            65001 => Some(reauth(R::ConsentRevoked)),
            50173 | 50132 | 50133 => Some(reauth(R::SessionRevoked)),
            700082 => Some(reauth(R::Inactive)),
            54005 | 501481 => Some(reauth(R::CodeRejected)),
            70008 | 70000 => Some(match kind {
                GrantKind::Code => reauth(R::CodeRejected),
                GrantKind::Refresh => reauth(R::ExpiredOrRevoked),
            }),
            50076 | 50078 | 50079 | 53003 | 70043 => Some(reauth(R::InteractionRequired)),
            65004 => Some(ProviderError::AccessDenied(provider)),
            90094 | 90095 => Some(ProviderError::NeedAdminApproval(provider)),
            50105 => Some(ProviderError::UserNotAssigned),
            50020 | 700005 => Some(ProviderError::WrongTenant),
            700016 => Some(mis(C::UnknownClient)),
            7000215 | 7000222 => Some(mis(C::ClientSecret)),
            50011 => Some(mis(C::RedirectUri)),
            90002 | 90130 => Some(mis(C::Tenant)),
            70011 | 700022 => Some(mis(C::Scopes)),
            50000 => Some(ProviderError::Transient(format!("AADSTS{code}"))),
            _ => None,
        };
        if let Some(e) = by_code {
            return e;
        }
    }
    match error {
        "invalid_grant" => match (provider, kind) {
            (Provider::Google, _) if description == Some("Token has been expired or revoked.") => {
                reauth(R::ExpiredOrRevoked)
            }
            (_, GrantKind::Code) => reauth(R::CodeRejected),
            (_, GrantKind::Refresh) => reauth(R::ExpiredOrRevoked),
        },
        "consent_required" => reauth(R::ConsentRevoked),
        "interaction_required" | "login_required" => reauth(R::InteractionRequired),
        "access_denied" => ProviderError::AccessDenied(provider),
        "admin_policy_enforced" | "org_internal" => ProviderError::NeedAdminApproval(provider),
        "invalid_client" => match kind {
            // At the token endpoint `invalid_client` is a bad secret (Google: or an unknown client).
            GrantKind::Refresh => mis(C::ClientSecret),
            GrantKind::Code => mis(if description.is_some_and(|d| d.contains("not found")) {
                C::UnknownClient
            } else {
                C::ClientSecret
            }),
        },
        "unauthorized_client" => mis(C::UnknownClient),
        "redirect_uri_mismatch" => mis(C::RedirectUri),
        "invalid_scope" => mis(C::Scopes),
        "invalid_request" | "unsupported_grant_type" | "unsupported_response_type" => {
            mis(C::Request)
        }
        "temporarily_unavailable" | "server_error" | "internal_failure" => {
            ProviderError::Transient(error.to_owned())
        }
        "rate_limit_exceeded" => ProviderError::Throttled { retry_after: None },
        other => ProviderError::Protocol(format!(
            "unexpected OAuth error `{other}`: {}",
            description.unwrap_or("")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aadsts_number_comes_from_error_codes_or_the_description() {
        assert_eq!(aadsts_code(Some(&[65001]), None), Some(65001));
        assert_eq!(
            aadsts_code(
                None,
                Some("AADSTS50173: The provided grant has expired.\r\nTrace ID: x")
            ),
            Some(50173)
        );
        assert_eq!(aadsts_code(None, Some("Bad Request")), None);
    }

    #[test]
    fn every_error_has_a_sentence_that_says_who_acts() {
        let e = ProviderError::NeedAdminApproval(Provider::Microsoft);
        assert_eq!(
            e.user_message(),
            "Your Microsoft 365 admin must approve hirewire before you can connect your inbox or calendar."
        );
        let e = ProviderError::misconfigured(Provider::Google, ConfigProblem::RedirectUri);
        assert!(
            e.user_message().contains("admin must fix"),
            "{}",
            e.user_message()
        );
        assert!(
            ProviderError::reauth(Provider::Google, ReauthReason::ExpiredOrRevoked)
                .user_message()
                .contains("Authorize again")
        );
    }

    #[test]
    fn microsoft_codes_map_to_what_the_server_must_do() {
        let c = |code: u64, kind| {
            classify_oauth_error(
                Provider::Microsoft,
                kind,
                "invalid_grant",
                None,
                Some(&[code]),
                None,
            )
        };
        use ReauthReason as R;
        let reason = |e: ProviderError| match e {
            ProviderError::NeedsReauthorization { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(c(65001, GrantKind::Refresh)), R::ConsentRevoked);
        assert_eq!(reason(c(50173, GrantKind::Refresh)), R::SessionRevoked);
        assert_eq!(reason(c(700082, GrantKind::Refresh)), R::Inactive);
        assert_eq!(reason(c(70008, GrantKind::Refresh)), R::ExpiredOrRevoked);
        assert_eq!(reason(c(70008, GrantKind::Code)), R::CodeRejected);
        assert_eq!(reason(c(54005, GrantKind::Code)), R::CodeRejected);
        assert!(matches!(
            c(90094, GrantKind::Code),
            ProviderError::NeedAdminApproval(_)
        ));
        assert!(matches!(
            c(50105, GrantKind::Code),
            ProviderError::UserNotAssigned
        ));
        assert!(matches!(
            c(50020, GrantKind::Code),
            ProviderError::WrongTenant
        ));
        assert!(matches!(
            c(7000215, GrantKind::Code),
            ProviderError::Misconfigured {
                what: ConfigProblem::ClientSecret,
                ..
            }
        ));
        assert!(matches!(
            c(700016, GrantKind::Code),
            ProviderError::Misconfigured {
                what: ConfigProblem::UnknownClient,
                ..
            }
        ));
        assert!(matches!(
            c(50011, GrantKind::Code),
            ProviderError::Misconfigured {
                what: ConfigProblem::RedirectUri,
                ..
            }
        ));
        // suberror wins over the number.
        assert_eq!(
            reason(classify_oauth_error(
                Provider::Microsoft,
                GrantKind::Refresh,
                "invalid_grant",
                None,
                Some(&[70000]),
                Some("consent_required")
            )),
            R::ConsentRevoked
        );
    }

    #[test]
    fn google_errors_map_by_error_and_description() {
        let g = |e: &str, d: &str, kind| {
            classify_oauth_error(Provider::Google, kind, e, Some(d), None, None)
        };
        assert!(matches!(
            g(
                "invalid_grant",
                "Token has been expired or revoked.",
                GrantKind::Refresh
            ),
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::ExpiredOrRevoked,
                ..
            }
        ));
        assert!(matches!(
            g("invalid_grant", "Bad Request", GrantKind::Code),
            ProviderError::NeedsReauthorization {
                reason: ReauthReason::CodeRejected,
                ..
            }
        ));
        assert!(matches!(
            g("admin_policy_enforced", "", GrantKind::Code),
            ProviderError::NeedAdminApproval(Provider::Google)
        ));
        assert!(matches!(
            g("redirect_uri_mismatch", "Bad Request", GrantKind::Code),
            ProviderError::Misconfigured {
                what: ConfigProblem::RedirectUri,
                ..
            }
        ));
        assert!(matches!(
            g(
                "invalid_client",
                "The OAuth client was not found.",
                GrantKind::Code
            ),
            ProviderError::Misconfigured {
                what: ConfigProblem::UnknownClient,
                ..
            }
        ));
    }
}
