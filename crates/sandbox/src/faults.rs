//! Scriptable faults: throttling, 5xx bursts, slow responses, revoked grants and broken tokens, matched per
//! endpoint, per user or globally, changeable at runtime through the control API.
//!
//! Endpoint names are stable strings: Google methods use their discovery ids (`gmail.users.getProfile`,
//! `calendar.calendars.get`), Graph uses `graph.<path>` (`graph.me`), identity endpoints use `ms.token`,
//! `ms.authorize`, `ms.adminconsent`, `google.auth`, `google.token`, `google.revoke`, `google.tokeninfo`.
//! A pattern ending in `*` matches by prefix (`gmail.*`).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::wire::{
    google_api_error, google_oauth_error, graph_error, ms_identity_error, with_retry_after,
};

/// Why a token request fails with `invalid_grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantFailure {
    /// Microsoft AADSTS65001 with `suberror: consent_required` (consent removed).
    ConsentRequired,
    /// Microsoft AADSTS50173 (sessions revoked, password changed).
    SessionsRevoked,
    /// Microsoft AADSTS700082 (refresh token inactive too long).
    Inactive,
    /// Microsoft AADSTS70008 (expired or revoked grant).
    Expired,
}

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Graph: 429 `ApplicationThrottled` + `Retry-After`; Gmail: 429 `rateLimitExceeded`; Calendar: 429
    /// `rateLimitExceeded`; identity endpoints: 429 `temporarily_unavailable`.
    Throttle {
        /// `Retry-After` seconds (Graph default 1; Google sends none unless set).
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Gmail and Calendar: 403 `userRateLimitExceeded`; Graph: as `throttle`.
    UserRateLimit,
    /// A 5xx in the provider's error shape.
    ServerError {
        /// HTTP status, 500..=599.
        #[serde(default = "default_5xx")]
        status: u16,
        /// Optional `Retry-After` seconds.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Delay the response; combines with any other fault.
    Delay {
        /// Milliseconds.
        millis: u64,
    },
    /// Token endpoints only: the grant is gone. Google always says "Token has been expired or revoked.".
    InvalidGrant {
        /// Which Microsoft error to give.
        #[serde(default = "default_grant_failure")]
        reason: GrantFailure,
    },
    /// API endpoints only: the access token is rejected with 401.
    InvalidToken,
}

fn default_5xx() -> u16 {
    503
}

fn default_grant_failure() -> GrantFailure {
    GrantFailure::ConsentRequired
}

/// Where and how often a fault applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Endpoint name or `prefix*`; every endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// User email; every user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// What happens.
    pub fault: Fault,
    /// How many matching requests it hits before it disarms itself; forever when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

/// An armed fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Id for removal.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Requests it has hit so far.
    pub hits: u64,
}

/// The set of armed faults.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Vec<FaultRule>,
    next_id: u64,
}

/// What the faults decided for one request.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Total delay before answering.
    pub delay_ms: u64,
    /// The fault that replaces the response, if any.
    pub fault: Option<Fault>,
}

/// Which wire shape a response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Microsoft Graph.
    Graph,
    /// Gmail API.
    Gmail,
    /// Google Calendar API.
    Calendar,
    /// Microsoft identity platform.
    MsIdentity,
    /// Google OAuth endpoints.
    GoogleIdentity,
}

impl Family {
    /// The family of an endpoint name.
    pub fn of(endpoint: &str) -> Family {
        if endpoint.starts_with("graph.") {
            Family::Graph
        } else if endpoint.starts_with("gmail.") {
            Family::Gmail
        } else if endpoint.starts_with("calendar.") {
            Family::Calendar
        } else if endpoint.starts_with("ms.") {
            Family::MsIdentity
        } else {
            Family::GoogleIdentity
        }
    }
}

fn pattern_matches(pattern: &str, endpoint: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => endpoint.starts_with(prefix),
        None => pattern == endpoint,
    }
}

fn applies(fault: &Fault, endpoint: &str) -> bool {
    let token_endpoint = endpoint == "ms.token" || endpoint == "google.token";
    let api = matches!(
        Family::of(endpoint),
        Family::Graph | Family::Gmail | Family::Calendar
    );
    match fault {
        Fault::InvalidGrant { .. } => token_endpoint,
        Fault::InvalidToken => api,
        _ => true,
    }
}

impl FaultSpec {
    /// Checks the spec is meaningful.
    pub fn validate(&self) -> Result<(), String> {
        match &self.fault {
            Fault::ServerError { status, .. } if !(500..=599).contains(status) => {
                Err(format!("server_error status must be 5xx, got {status}"))
            }
            Fault::Delay { millis } if *millis > 120_000 => Err("delay above 120 s".into()),
            _ => Ok(()),
        }
    }
}

impl FaultBook {
    /// Arms a fault and returns it with its id.
    pub fn add(&mut self, spec: FaultSpec) -> FaultRule {
        self.next_id += 1;
        let rule = FaultRule {
            id: self.next_id,
            spec,
            hits: 0,
        };
        self.rules.push(rule.clone());
        rule
    }

    /// Disarms one fault.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// Disarms every fault.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The armed faults.
    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// Consumes the faults that hit this request: every matching delay adds up; the first matching other
    /// fault replaces the response. Rules whose count runs out are disarmed.
    pub fn take(&mut self, endpoint: &str, user: Option<&str>) -> Decision {
        let mut d = Decision::default();
        for r in &mut self.rules {
            let s = &r.spec;
            if let Some(p) = &s.endpoint
                && !pattern_matches(p, endpoint)
            {
                continue;
            }
            if let Some(u) = &s.user
                && !user.is_some_and(|x| x.eq_ignore_ascii_case(u))
            {
                continue;
            }
            if !applies(&s.fault, endpoint) {
                continue;
            }
            match &s.fault {
                Fault::Delay { millis } => d.delay_ms += millis,
                other if d.fault.is_none() => d.fault = Some(other.clone()),
                _ => continue,
            }
            r.hits += 1;
            if let Some(c) = r.spec.count.as_mut() {
                *c = c.saturating_sub(1);
            }
        }
        self.rules.retain(|r| r.spec.count != Some(0));
        d
    }
}

/// Renders a fault in the wire shape of the endpoint's provider.
pub fn render(fault: &Fault, endpoint: &str, headers: &HeaderMap, now: i64) -> Response {
    let family = Family::of(endpoint);
    match (fault, family) {
        (Fault::Throttle { .. } | Fault::UserRateLimit, Family::Graph) => {
            let secs = match fault {
                Fault::Throttle { retry_after_secs } => retry_after_secs.unwrap_or(1),
                _ => 1,
            };
            with_retry_after(
                graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers,
                    now,
                ),
                Some(secs),
            )
        }
        (Fault::Throttle { retry_after_secs }, Family::Gmail) => with_retry_after(
            google_api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "global",
                "Too many concurrent requests for user.",
            ),
            *retry_after_secs,
        ),
        (Fault::Throttle { retry_after_secs }, Family::Calendar) => with_retry_after(
            google_api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "usageLimits",
                "Rate Limit Exceeded",
            ),
            *retry_after_secs,
        ),
        (Fault::UserRateLimit, Family::Gmail | Family::Calendar) => google_api_error(
            StatusCode::FORBIDDEN,
            "userRateLimitExceeded",
            "usageLimits",
            "User Rate Limit Exceeded",
        ),
        (Fault::Throttle { retry_after_secs }, Family::MsIdentity) => with_retry_after(
            ms_identity_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                90055,
                "TenantThrottlingError: There are too many incoming requests. This exception is thrown for blocked tenants.",
                None,
                now,
            ),
            Some(retry_after_secs.unwrap_or(1)),
        ),
        (Fault::UserRateLimit, Family::MsIdentity) => render(
            &Fault::Throttle {
                retry_after_secs: None,
            },
            endpoint,
            headers,
            now,
        ),
        (Fault::Throttle { retry_after_secs }, Family::GoogleIdentity) => with_retry_after(
            google_oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit exceeded",
            ),
            *retry_after_secs,
        ),
        (Fault::UserRateLimit, Family::GoogleIdentity) => google_oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Rate limit exceeded",
        ),
        (
            Fault::ServerError {
                status,
                retry_after_secs,
            },
            fam,
        ) => {
            let st = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let r = match fam {
                Family::Graph => {
                    let (code, msg) = match st.as_u16() {
                        503 => ("serviceNotAvailable", "Service Unavailable"),
                        504 => ("UnknownError", "Gateway Timeout"),
                        _ => ("generalException", "An unspecified error has occurred."),
                    };
                    graph_error(st, code, msg, headers, now)
                }
                Family::Gmail | Family::Calendar => {
                    let msg = if st.as_u16() == 503 {
                        "The service is currently unavailable."
                    } else {
                        "Backend Error"
                    };
                    google_api_error(st, "backendError", "global", msg)
                }
                Family::MsIdentity => ms_identity_error(
                    st,
                    "temporarily_unavailable",
                    50000,
                    "There was an error issuing a token or an issue with our sign-in service.",
                    None,
                    now,
                ),
                Family::GoogleIdentity => {
                    google_oauth_error(st, "internal_failure", "Backend Error")
                }
            };
            with_retry_after(r, *retry_after_secs)
        }
        (Fault::InvalidGrant { reason }, Family::MsIdentity) => {
            let (code, msg, sub) = match reason {
                GrantFailure::ConsentRequired => (
                    65001,
                    "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource.",
                    Some("consent_required"),
                ),
                GrantFailure::SessionsRevoked => (
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
                    None,
                ),
                GrantFailure::Inactive => (
                    700082,
                    "The refresh token has expired due to inactivity.",
                    None,
                ),
                GrantFailure::Expired => (
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
                    None,
                ),
            };
            ms_identity_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                code,
                msg,
                sub,
                now,
            )
        }
        (Fault::InvalidGrant { .. }, _) => google_oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        ),
        (Fault::InvalidToken, Family::Graph) => graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            headers,
            now,
        ),
        (Fault::InvalidToken, _) => crate::apis::google_unauthenticated(),
        (Fault::Delay { .. }, _) => {
            // Delays never replace a response; `take` keeps them out of `fault`.
            google_api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backendError",
                "global",
                "Backend Error",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        endpoint: Option<&str>,
        user: Option<&str>,
        fault: Fault,
        count: Option<u32>,
    ) -> FaultSpec {
        FaultSpec {
            endpoint: endpoint.map(Into::into),
            user: user.map(Into::into),
            fault,
            count,
        }
    }

    #[test]
    fn counted_faults_disarm_themselves() {
        let mut b = FaultBook::default();
        b.add(spec(None, None, Fault::UserRateLimit, Some(2)));
        assert!(b.take("gmail.users.getProfile", None).fault.is_some());
        assert!(b.take("graph.me", None).fault.is_some());
        assert!(b.take("graph.me", None).fault.is_none());
        assert!(b.list().is_empty());
    }

    #[test]
    fn endpoint_prefix_and_user_filters_apply() {
        let mut b = FaultBook::default();
        b.add(spec(
            Some("gmail.*"),
            Some("a@x.example"),
            Fault::UserRateLimit,
            None,
        ));
        assert!(b.take("graph.me", Some("a@x.example")).fault.is_none());
        assert!(
            b.take("gmail.users.getProfile", Some("b@x.example"))
                .fault
                .is_none()
        );
        assert!(
            b.take("gmail.users.getProfile", Some("A@x.example"))
                .fault
                .is_some()
        );
    }

    #[test]
    fn delays_add_up_and_combine_with_a_fault() {
        let mut b = FaultBook::default();
        b.add(spec(None, None, Fault::Delay { millis: 5 }, None));
        b.add(spec(None, None, Fault::Delay { millis: 7 }, None));
        b.add(spec(None, None, Fault::UserRateLimit, Some(1)));
        let d = b.take("graph.me", None);
        assert_eq!(d.delay_ms, 12);
        assert_eq!(d.fault, Some(Fault::UserRateLimit));
    }

    #[test]
    fn invalid_grant_only_hits_token_endpoints() {
        let mut b = FaultBook::default();
        b.add(spec(
            None,
            None,
            Fault::InvalidGrant {
                reason: GrantFailure::Inactive,
            },
            Some(1),
        ));
        assert!(b.take("graph.me", None).fault.is_none());
        assert!(b.take("ms.token", None).fault.is_some());
    }
}
