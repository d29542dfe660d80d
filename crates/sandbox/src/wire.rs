//! Wire helpers shared by every provider surface: random tokens, form/query parsing, error envelopes,
//! links built from the request's own `Host`, and Graph URL normalization.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A high-entropy URL-safe random string of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A random GUID (version 4 layout).
pub fn random_guid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// `BASE64URL(SHA256(verifier))`, the S256 PKCE transform.
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether a PKCE verifier matches the stored challenge.
pub fn pkce_matches(challenge: &str, method: &str, verifier: &str) -> bool {
    match method {
        "S256" => pkce_s256(verifier) == challenge,
        _ => verifier == challenge,
    }
}

/// Parsed `application/x-www-form-urlencoded` pairs (body or query), keeping repeats.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses a urlencoded string.
    pub fn parse(s: &str) -> Self {
        Params(
            url::form_urlencoded::parse(s.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, if non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Adds a pair.
    pub fn push(&mut self, k: &str, v: &str) {
        self.0.push((k.to_string(), v.to_string()));
    }

    /// Encodes as a query string.
    pub fn encode(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// Client credentials from an `Authorization: Basic` header (RFC 6749 §2.3.1: urlencoded id and secret).
pub fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `scheme://host[:port]` of the request itself, so links lead back to whichever address the client used
/// (PROVIDERS.md §13: the Graph SDK only sends its token to the host it was configured with).
pub fn link_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|s| *s == "https" || *s == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// `2019-09-19 08:55:37Z`, the Microsoft identity error timestamp format.
pub fn ms_timestamp(now: i64) -> String {
    Timestamp::from_second(now)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string()
}

/// `2025-02-13T10:17:05`, the Graph `innerError.date` format.
pub fn graph_date(now: i64) -> String {
    Timestamp::from_second(now)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A Microsoft identity platform (`/oauth2/v2.0/token`) error (PROVIDERS.md §1.5).
pub fn ms_identity_error(
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
    suberror: Option<&str>,
    now: i64,
) -> Response {
    let trace = random_guid();
    let corr = random_guid();
    let ts = ms_timestamp(now);
    let mut body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    if let Some(s) = suberror {
        body["suberror"] = json!(s);
    }
    json_response(status, body)
}

/// A Graph error body (PROVIDERS.md §2.2), echoing `client-request-id`.
pub fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    headers: &HeaderMap,
    now: i64,
) -> Response {
    let client_request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(random_guid);
    json_response(
        status,
        json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": graph_date(now),
                "request-id": random_guid(),
                "client-request-id": client_request_id,
            }
        }}),
    )
}

/// The gRPC status name Google pairs with an HTTP status.
fn google_status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        410 => "NOT_FOUND",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A Google API error envelope (PROVIDERS.md §5).
pub fn google_api_error(status: StatusCode, reason: &str, domain: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": google_status_name(status),
        }}),
    )
}

/// A Google OAuth endpoint error (`{"error": ..., "error_description": ...}`).
pub fn google_oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// Adds `Retry-After: secs` to a response.
pub fn with_retry_after(mut r: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A 302 redirect.
pub fn redirect(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Appends query parameters to a URL that may already carry some.
pub fn append_query(base: &str, params: &Params) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", params.encode())
}

/// Rewrites OData path forms to one canonical form, so handlers are routed once:
/// `mailFolders('inbox')` -> `mailFolders/inbox`, `delta()` -> `delta`, `messages(id='x')` -> `messages/x`.
pub fn normalize_graph_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if let Some(open) = seg.find('(')
            && seg.ends_with(')')
            && open > 0
        {
            let name = &seg[..open];
            let inner = &seg[open + 1..seg.len() - 1];
            out.push_str(name);
            if !inner.is_empty() {
                let key = inner.split_once('=').map_or(inner, |(_, v)| v);
                let key = key
                    .trim_matches('\'')
                    .trim_start_matches("%27")
                    .trim_end_matches("%27");
                out.push('/');
                out.push_str(key);
            }
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// Looks up a JSON object member case-insensitively: Graph matches action parameter names that way
/// (`{"Message": ...}` from the SDK, `{"message": ...}` from hand-written clients).
pub fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert!(a.len() >= 43);
        assert_ne!(a, random_token(32));
    }

    #[test]
    fn graph_paths_are_normalized() {
        assert_eq!(
            normalize_graph_path("/v1.0/me/mailFolders('inbox')/messages/delta()"),
            "/v1.0/me/mailFolders/inbox/messages/delta"
        );
        assert_eq!(
            normalize_graph_path("/v1.0/me/mailFolders/inbox/messages/delta"),
            "/v1.0/me/mailFolders/inbox/messages/delta"
        );
        assert_eq!(
            normalize_graph_path("/v1.0/users(id='abc')/messages"),
            "/v1.0/users/abc/messages"
        );
    }

    #[test]
    fn action_parameters_match_case_insensitively() {
        let v = json!({"Message": {"subject": "x"}, "SaveToSentItems": true});
        assert!(get_ci(&v, "message").is_some());
        assert_eq!(get_ci(&v, "saveToSentItems"), Some(&json!(true)));
        assert!(get_ci(&v, "comment").is_none());
    }

    #[test]
    fn basic_auth_decodes_urlencoded_credentials() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("id%3Ax:s%2Bcret"));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        assert_eq!(basic_auth(&h), Some(("id:x".into(), "s+cret".into())));
    }

    #[test]
    fn links_come_from_the_request_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:5555".parse().unwrap());
        assert_eq!(link_base(&h), "http://127.0.0.1:5555");
    }
}

/// Graph `Prefer` header preferences the sandbox honours; what was honoured is
/// echoed in `Preference-Applied`. Each endpoint family keeps only the
/// preferences Graph honours there (see [`GraphPrefer::only`]).
#[derive(Debug, Default, Clone)]
pub struct GraphPrefer {
    /// `IdType="ImmutableId"`.
    pub immutable: bool,
    /// `outlook.body-content-type="text"` (mail).
    pub text_body: bool,
    /// `outlook.timezone="…"` (calendar).
    pub tz: Option<String>,
    /// `odata.maxpagesize=N`.
    pub max_page: Option<usize>,
}

/// Which optional preferences an endpoint family honours.
#[derive(Debug, Clone, Copy)]
pub enum PreferScope {
    Mail,
    Calendar,
}

impl GraphPrefer {
    /// Parses every `Prefer` header (names case-insensitive, values may be quoted).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut p = Self::default();
        for v in headers.get_all("prefer") {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let (k, val) = item.split_once('=').unwrap_or((item, ""));
                let val = val.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "idtype" => p.immutable = val.eq_ignore_ascii_case("ImmutableId"),
                    "outlook.body-content-type" => p.text_body = val.eq_ignore_ascii_case("text"),
                    "outlook.timezone" => p.tz = Some(val.to_string()),
                    "odata.maxpagesize" => p.max_page = val.parse().ok(),
                    _ => {}
                }
            }
        }
        p
    }

    /// Parses and keeps only what `scope` honours.
    pub fn only(headers: &HeaderMap, scope: PreferScope) -> Self {
        let mut p = Self::parse(headers);
        match scope {
            PreferScope::Mail => p.tz = None,
            PreferScope::Calendar => p.text_body = false,
        }
        p
    }

    /// Adds `Preference-Applied` for the honoured preferences.
    pub fn applied(&self, mut r: Response) -> Response {
        let mut parts = Vec::new();
        if self.immutable {
            parts.push("IdType=\"ImmutableId\"".to_string());
        }
        if self.text_body {
            parts.push("outlook.body-content-type=\"text\"".to_string());
        }
        if let Some(tz) = &self.tz {
            parts.push(format!("outlook.timezone=\"{tz}\""));
        }
        if let Some(n) = self.max_page {
            parts.push(format!("odata.maxpagesize={n}"));
        }
        if !parts.is_empty()
            && let Ok(v) = HeaderValue::from_str(&parts.join(", "))
        {
            r.headers_mut().insert("preference-applied", v);
        }
        r
    }
}

/// Adds `Preference-Applied` to `r` (see [`GraphPrefer::applied`]).
pub fn graph_applied(r: Response, p: &GraphPrefer) -> Response {
    p.applied(r)
}

/// Graph 400 with `code`.
pub fn graph_bad_request(now: i64, headers: &HeaderMap, code: &str, msg: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, code, msg, headers, now)
}

/// Graph 404 `ErrorItemNotFound`.
pub fn graph_not_found(now: i64, headers: &HeaderMap) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        headers,
        now,
    )
}
