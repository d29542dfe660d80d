//! Who is calling: browser sessions (cookie + CSRF token) and API tokens
//! (Bearer), plus the sign-in rate limits.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hirewire_store::{Role, User};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::config::SignInLimits;
use crate::crypto::{constant_time_eq, token_digest};
use crate::error::{ApiError, PageError};

pub const SESSION_COOKIE: &str = "hw_session";
/// Guards the sign-in form itself (no session exists yet): double-submit token.
pub const PRESESSION_COOKIE: &str = "hw_presession";

/// Builds a cookie with the app's policy: HttpOnly, SameSite=Lax, Path=/,
/// and Secure when the public URL is https.
pub fn app_cookie(state: &AppState, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(state.config.secure_cookies())
        .build()
}

/// The signed-in person behind a page request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub csrf: String,
    pub session_digest: Vec<u8>,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub(crate) fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if constant_time_eq(submitted.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(PageError::bad_request(
                "This form has expired or did not come from hirewire. Go back, reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()) {
            let digest = token_digest(&token);
            match state.store.session_with_user(&digest, state.now()).await {
                Ok(Some((session, user))) => {
                    return Ok(Viewer {
                        user,
                        csrf: session.csrf_token,
                        session_digest: digest,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(PageError::from(e).into_response()),
            }
        }
        let wanted = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let next = if parts.method == axum::http::Method::GET {
            wanted
        } else {
            "/"
        };
        let target = format!("/sign-in?next={}", urlencode(next));
        Err(Redirect::to(&target).into_response())
    }
}

/// A signed-in admin; anyone else gets the 403 page.
#[derive(Debug, Clone)]
pub struct AdminViewer(pub Viewer);

impl FromRequestParts<AppState> for AdminViewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        if viewer.is_admin() {
            Ok(AdminViewer(viewer))
        } else {
            Err(PageError::forbidden().into_response())
        }
    }
}

/// A state-changing form from a signed-in viewer, with its CSRF token checked.
/// The form's own fields deserialize into `T` (the `_csrf` field is ignored there).
pub struct CsrfForm<T>(pub Viewer, pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 1024 * 1024)
            .await
            .map_err(|_| PageError::bad_request("The form is too large.").into_response())?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| PageError::bad_request("The form could not be read.").into_response())?;
        let submitted = fields
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        viewer
            .check_csrf(submitted)
            .map_err(IntoResponse::into_response)?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError::bad_request(format!("The form is missing a field: {e}")).into_response()
        })?;
        Ok(CsrfForm(viewer, form))
    }
}

/// The user behind an API request (`Authorization: Bearer <token>`).
#[derive(Debug, Clone)]
pub struct ApiCaller(pub User);

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        match state
            .store
            .user_by_api_token(&token_digest(token), state.now())
            .await?
        {
            Some((_token, user)) => Ok(ApiCaller(user)),
            None => Err(ApiError::unauthenticated()),
        }
    }
}

/// The client's address: the socket peer, or with `--trust-proxy` the first
/// `X-Forwarded-For` entry.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if state.config.trust_proxy
            && let Some(ip) = forwarded_for(&parts.headers)
        {
            return Ok(ClientAddr(Some(ip)));
        }
        Ok(ClientAddr(peer))
    }
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Sign-in attempts allowed per account and per client address; a
/// [`governor`] GCRA limiter for each, refilling evenly over the window.
pub struct SignInLimiter {
    per_account: DefaultKeyedRateLimiter<String>,
    per_client: DefaultKeyedRateLimiter<String>,
}

impl SignInLimiter {
    pub fn new(limits: SignInLimits) -> Self {
        let quota = |n: u32| {
            let n = NonZeroU32::new(n.max(1)).expect("at least one attempt");
            Quota::with_period(limits.window / n.get())
                .expect("a positive period")
                .allow_burst(n)
        };
        Self {
            per_account: RateLimiter::keyed(quota(limits.per_account)),
            per_client: RateLimiter::keyed(quota(limits.per_client)),
        }
    }

    /// Counts one attempt; `false` when either limit is exhausted.
    pub fn allow(&self, account_key: &str, client: Option<&str>) -> bool {
        let client_ok = client.is_none_or(|c| self.per_client.check_key(&c.to_owned()).is_ok());
        let account_ok = self.per_account.check_key(&account_key.to_owned()).is_ok();
        client_ok && account_ok
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A local path to return to after sign-in; anything else becomes `/`.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    if local { next } else { "/" }
}

/// The session cookie from a jar, if any.
pub fn session_token(jar: &CookieJar) -> Option<String> {
    jar.get(SESSION_COOKIE).map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/candidates/3"), "/candidates/3");
        assert_eq!(safe_next("//evil.example/x"), "/");
        assert_eq!(safe_next("https://evil.example"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
    }

    #[test]
    fn the_limiter_stops_an_account_after_its_quota() {
        let l = SignInLimiter::new(SignInLimits {
            per_account: 3,
            per_client: 100,
            window: std::time::Duration::from_secs(3600),
        });
        assert!((0..3).all(|_| l.allow("a@x.example", Some("10.0.0.1"))));
        assert!(!l.allow("a@x.example", Some("10.0.0.2")));
        assert!(l.allow("b@x.example", Some("10.0.0.1")));
    }
}
