//! The one HTTP client for every provider call.
//!
//! All provider HTTP in hirewire goes through [`HttpClient`] — the OAuth token endpoints (as the `oauth2`
//! crate's async client), Graph, Gmail, Calendar, revoke — so that every call gets the same timeouts,
//! `User-Agent`, retry policy and error mapping:
//!
//! - **Retries** ([`RetryPolicy`]): 429 and 503 are retried for every request (the provider says it did not
//!   do the work); 500, 502, 504, timeouts and connection failures only for idempotent requests (a code
//!   exchange is not: a code is single-use). A `Retry-After` (seconds or HTTP date) is honoured; without one
//!   the delay is exponential (`base_delay · 2^attempt`, capped at `max_delay`) with jitter in `[d/2, d]`, so
//!   retries never spin. A `Retry-After` longer than `max_delay` is not slept on: the call fails at once with
//!   [`ProviderError::Throttled`] so the caller can reschedule the work instead of holding a worker.
//! - **Errors**: after the last retry, 429 becomes [`ProviderError::Throttled`] and 5xx/timeouts
//!   [`ProviderError::Transient`]. For API calls ([`HttpClient::get_json`]) a 401 becomes
//!   [`ProviderError::TokenRejected`] and a 403 for a missing scope `NeedsReauthorization(MissingPermissions)`;
//!   token-endpoint bodies (`invalid_grant`, …) are classified in [`crate::identity`].
//! - **Sleeping** goes through a [`Sleeper`] so tests can record delays instead of waiting.
//! - Logs carry method, host, path, status and attempt; never a query string, header or body (tokens live there).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProviderError, ReauthReason};
use crate::{Provider, Secret};

/// Waits between retries. The default uses `tokio::time::sleep`; tests inject one that records delays.
pub trait Sleeper: Send + Sync + 'static {
    /// A future that completes after `delay`.
    fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// [`Sleeper`] on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// How many times and how long to retry throttled or failed calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// First backoff delay when the provider gives no `Retry-After`.
    pub base_delay: Duration,
    /// Cap on any single wait; a longer `Retry-After` is returned as [`ProviderError::Throttled`].
    pub max_delay: Duration,
    /// Spread backoff delays over `[d/2, d]` so many workers do not retry in step.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based) when there is no `Retry-After`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        if self.jitter {
            let half = full / 2;
            half + half.mul_f64(rand::random::<f64>())
        } else {
            full
        }
    }
}

/// Settings of the provider HTTP client.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// `User-Agent` sent on every request.
    pub user_agent: String,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("hirewire/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
        }
    }
}

/// The provider HTTP client (cheap to clone; clones share connections). Redirects are never followed.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    retry: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// An HTTP request as the `oauth2` crate builds it.
pub type Request = ::http::Request<Vec<u8>>;
/// An HTTP response with its whole body.
pub type Response = ::http::Response<Vec<u8>>;

impl HttpClient {
    /// Builds the client. A rustls crypto provider must be installed first (the server does it at start-up).
    pub fn new(config: HttpConfig) -> Result<Self, ProviderError> {
        let inner = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(HttpClient {
            inner,
            retry: config.retry,
            sleeper: Arc::new(TokioSleeper),
        })
    }

    /// Replaces how the client waits between retries.
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Sends `request`, retrying as the module docs say. Returns any non-retried response, including 4xx.
    pub async fn send(
        &self,
        request: Request,
        idempotent: bool,
    ) -> Result<Response, ProviderError> {
        let prepared = Prepared::new(request)?;
        let mut attempt = 0u32;
        loop {
            let (retry, wait, failure) = match self.send_once(&prepared, attempt).await {
                Err(t) => (t.retryable(idempotent), None, t.error),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers());
                    let always = status == 429 || status == 503;
                    let if_idempotent = matches!(status.as_u16(), 500 | 502 | 504);
                    if !(always || if_idempotent) {
                        return Ok(resp);
                    }
                    let failure = failure_of(&prepared, &resp);
                    if retry_after.is_some_and(|ra| ra > self.retry.max_delay) {
                        return Err(ProviderError::Throttled { retry_after });
                    }
                    (always || idempotent, retry_after, failure)
                }
            };
            if !retry || attempt >= self.retry.max_retries {
                return Err(failure);
            }
            let backoff = self.retry.backoff(attempt);
            // Honour Retry-After as given, but never less than half the base delay (no spinning on `0`).
            let delay = wait.map_or(backoff, |ra| ra.max(self.retry.base_delay / 2));
            tracing::info!(target = %prepared.log_target, attempt, delay_ms = delay.as_millis() as u64, "retrying provider request");
            self.sleeper.sleep(delay).await;
            attempt += 1;
        }
    }

    /// One try of a prepared request, never retried: any response (429 and 5xx included) is returned whole,
    /// transport failures say whether a retry may help. The pacer ([`crate::pacing`]) drives its own retries
    /// through this so that every try passes the mailbox's concurrency limit and quota.
    pub(crate) async fn send_once(
        &self,
        prepared: &Prepared,
        attempt: u32,
    ) -> Result<Response, TransportFailure> {
        let mut rq = reqwest::Request::new(prepared.method.clone(), prepared.url.clone());
        *rq.headers_mut() = prepared.headers.clone();
        *rq.body_mut() = Some(prepared.body.clone().into());
        let log_target = &prepared.log_target;
        let method = &prepared.method;
        match self.inner.execute(rq).await {
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                tracing::debug!(%method, target = %log_target, attempt, error = %e, "provider request {kind}");
                Err(TransportFailure {
                    connect: e.is_connect(),
                    timeout_or_request: e.is_timeout() || e.is_request(),
                    error: ProviderError::Transient(format!("{method} {log_target} {kind}")),
                })
            }
            Ok(resp) => {
                tracing::debug!(%method, target = %log_target, attempt, status = resp.status().as_u16(), "provider response");
                into_response(resp).await.map_err(|error| TransportFailure {
                    connect: false,
                    timeout_or_request: true,
                    error,
                })
            }
        }
    }

    /// A bearer-authenticated GET of a JSON API (Graph, Gmail, Calendar, tokeninfo), with API error mapping.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        provider: Provider,
        url: &str,
        bearer: Option<&Secret>,
    ) -> Result<T, ProviderError> {
        let resp = self.get(url, bearer, &[]).await?;
        let status = resp.status();
        if status.is_success() {
            return parse_json(url, resp.body());
        }
        Err(api_error(provider, status.as_u16(), resp.body()))
    }

    /// A bearer-authenticated, retried GET with extra headers (Graph `Prefer`). Returns any non-retried
    /// response, 4xx included, so callers can give some statuses their own meaning (410, 404) before
    /// [`api_error`].
    pub(crate) async fn get(
        &self,
        url: &str,
        bearer: Option<&Secret>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        self.send(get_request(url, bearer, headers)?, true).await
    }

    /// A form POST (Google `/revoke`). Not retried on 5xx.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish()
            .into_bytes();
        let req = ::http::Request::post(url)
            .header(
                ::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(::http::header::ACCEPT, "application/json")
            .body(body)
            .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))?;
        self.send(req, false).await
    }
}

/// A bearer-authenticated GET accepting JSON, with extra headers.
pub(crate) fn get_request(
    url: &str,
    bearer: Option<&Secret>,
    headers: &[(&str, &str)],
) -> Result<Request, ProviderError> {
    let mut b = ::http::Request::get(url).header(::http::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        b = b.header(
            ::http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()),
        );
    }
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(Vec::new())
        .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))
}

/// A bearer-authenticated request with a JSON body.
pub(crate) fn json_request<T: Serialize>(
    method: ::http::Method,
    url: &str,
    token: &Secret,
    body: &T,
) -> Result<Request, ProviderError> {
    let body = serde_json::to_vec(body)
        .map_err(|e| ProviderError::Protocol(format!("serializing a request: {e}")))?;
    ::http::Request::builder()
        .method(method)
        .uri(url)
        .header(
            ::http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()),
        )
        .header(::http::header::CONTENT_TYPE, "application/json")
        .header(::http::header::ACCEPT, "application/json")
        .body(body)
        .map_err(|e| ProviderError::Protocol(format!("building a request: {e}")))
}

/// A request ready to be sent (and sent again): the parts of an [`http::Request`] that a retry needs.
pub(crate) struct Prepared {
    pub(crate) method: ::http::Method,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: ::http::HeaderMap,
    pub(crate) body: Vec<u8>,
    /// Host and path, for logs (never the query: it may carry ids or tokens).
    pub(crate) log_target: String,
}

impl Prepared {
    pub(crate) fn new(request: Request) -> Result<Self, ProviderError> {
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| ProviderError::Protocol(format!("bad request URL: {e}")))?;
        let log_target = format!("{}{}", url.host_str().unwrap_or(""), url.path());
        Ok(Prepared {
            method: parts.method,
            url,
            headers: parts.headers,
            body,
            log_target,
        })
    }
}

/// A try that got no response.
pub(crate) struct TransportFailure {
    /// The connection was never made: the provider did no work, so any request may be retried.
    connect: bool,
    /// A timeout or a failure while sending: only an idempotent request may be retried.
    timeout_or_request: bool,
    pub(crate) error: ProviderError,
}

impl TransportFailure {
    pub(crate) fn retryable(&self, idempotent: bool) -> bool {
        self.connect || (idempotent && self.timeout_or_request)
    }
}

/// The error a retried-out 429 / 5xx response becomes.
pub(crate) fn failure_of(prepared: &Prepared, resp: &Response) -> ProviderError {
    let status = resp.status();
    if status == 429 {
        ProviderError::Throttled {
            retry_after: retry_after(resp.headers()),
        }
    } else {
        ProviderError::Transient(format!("{} answered {status}", prepared.log_target))
    }
}

/// Parses a success body, naming only the URL's path in the error (the query may carry ids or tokens).
pub(crate) fn parse_json<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderError::Protocol(format!(
            "unexpected body from {url_path}: {e}",
            url_path = path_of(url)
        ))
    })
}

/// A success body parsed as `T`, or the API error of a non-2xx answer.
pub(crate) fn json_or_api_error<T: DeserializeOwned>(
    provider: Provider,
    url: &str,
    resp: Response,
) -> Result<T, ProviderError> {
    if resp.status().is_success() {
        parse_json(url, resp.body())
    } else {
        Err(api_error(provider, resp.status().as_u16(), resp.body()))
    }
}

fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default()
}

async fn into_response(resp: reqwest::Response) -> Result<Response, ProviderError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ProviderError::Transient(format!("reading the response body: {e}")))?;
    let mut out = ::http::Response::new(body.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &::http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let secs = at.as_second() - jiff::Timestamp::now().as_second();
    Some(Duration::from_secs(secs.max(0) as u64))
}

/// Maps a non-2xx Graph / Google API response.
pub(crate) fn api_error(provider: Provider, status: u16, body: &[u8]) -> ProviderError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let err = &v["error"];
    let code = err["code"].as_str().unwrap_or("");
    let google_reason = err["errors"][0]["reason"].as_str().unwrap_or("");
    match status {
        401 => ProviderError::TokenRejected,
        // Google's rate-limit 403s also say `PERMISSION_DENIED`: the reason decides, so check it first.
        403 if matches!(google_reason, "userRateLimitExceeded" | "rateLimitExceeded") => {
            ProviderError::Throttled { retry_after: None }
        }
        403 if code == "ErrorAccessDenied"
            || google_reason == "insufficientPermissions"
            || err["status"] == "PERMISSION_DENIED" =>
        {
            ProviderError::reauth(provider, ReauthReason::MissingPermissions)
        }
        _ => ProviderError::Protocol(format!(
            "API answered {status}: {}",
            err["message"].as_str().unwrap_or(code)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_stays_under_the_cap_and_never_reaches_zero() {
        let p = RetryPolicy::default();
        for attempt in 0..20 {
            let d = p.backoff(attempt);
            assert!(d >= Duration::from_millis(250), "{d:?}");
            assert!(d <= p.max_delay);
        }
        let fixed = RetryPolicy { jitter: false, ..p };
        assert_eq!(fixed.backoff(0), Duration::from_millis(500));
        assert_eq!(fixed.backoff(2), Duration::from_secs(2));
        assert_eq!(fixed.backoff(10), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = ::http::HeaderMap::new();
        h.insert(::http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            ::http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
