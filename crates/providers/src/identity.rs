//! The OAuth 2.0 authorization-code + PKCE flow with Microsoft and Google, and what surrounds it: callback
//! parsing, the signed-in address, revocation and Microsoft admin consent.
//!
//! Token requests are made by the `oauth2` crate through [`HttpClient`]; the client
//! secret goes in the request body (both providers accept it there).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse as _,
    TokenUrl,
};
use serde::Deserialize;

use crate::endpoints::{AppCredentials, Endpoints};
use crate::error::{ConfigProblem, GrantKind, ProviderError, classify_oauth_error};
use crate::http::HttpClient;
use crate::wire::{OAuthClient, TokenBody, TokenErrorBody};
use crate::{Capability, Provider, Secret, id_token, scopes};

/// Where "now" comes from when computing token expiry (injected in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// A PKCE code verifier (RFC 7636). Keep it in the server-side sign-in session; send only its
/// [`challenge`](PkceVerifier::challenge) in the authorize URL.
#[derive(Debug, Clone)]
pub struct PkceVerifier(Secret);

impl PkceVerifier {
    /// A fresh random verifier (32 random bytes, base64url).
    pub fn generate() -> Self {
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        PkceVerifier(Secret::new(verifier.into_secret()))
    }

    /// A verifier kept from earlier (for example in the sign-in session).
    pub fn from_secret(secret: Secret) -> Self {
        PkceVerifier(secret)
    }

    /// The verifier itself, to store.
    pub fn secret(&self) -> &Secret {
        &self.0
    }

    /// The `S256` challenge for the authorize URL.
    pub fn challenge(&self) -> String {
        let v = PkceCodeVerifier::new(self.0.expose().to_owned());
        PkceCodeChallenge::from_code_verifier_sha256(&v)
            .as_str()
            .to_owned()
    }
}

/// What to put in an authorize URL.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Registered redirect URI (exact match at the provider).
    pub redirect_uri: String,
    /// Scopes to request, usually [`scopes::request`].
    pub scopes: Vec<String>,
    /// Opaque value bound to the user's session; checked on the callback.
    pub state: String,
    /// [`PkceVerifier::challenge`]; sent with `code_challenge_method=S256`.
    pub pkce_challenge: String,
    /// Account to preselect (the recruiter's work address).
    pub login_hint: Option<String>,
    /// Google: ask for the union with earlier grants (`include_granted_scopes=true`), for re-asking only the
    /// missing scopes. Ignored for Microsoft.
    pub include_granted_scopes: bool,
    /// Microsoft: force the consent screen (`prompt=consent`). Google always gets `prompt=consent`, the only
    /// way to be sure of a refresh token.
    pub consent_prompt: bool,
}

/// The claims of an `id_token` hirewire uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdClaims {
    /// `sub`.
    pub subject: Option<String>,
    /// `email` (requested with the `email` scope).
    pub email: Option<String>,
    /// Microsoft `preferred_username`.
    pub preferred_username: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// Microsoft `tid`: the tenant the user signed in to.
    pub tenant_id: Option<String>,
    /// Google `hd`: the Workspace domain.
    pub hosted_domain: Option<String>,
}

/// The result of a code exchange or refresh.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// Bearer token for API calls.
    pub access_token: Secret,
    /// Refresh token. After a refresh: Microsoft's new (rotated) one, or for Google the one passed in.
    pub refresh_token: Option<Secret>,
    /// When the access token expires (the clock's now + `expires_in`).
    pub expires_at: Timestamp,
    /// Granted scopes, normalized ([`scopes::normalize_granted`]); empty if the provider sent no `scope`.
    pub scopes: Vec<String>,
    /// Claims of the `id_token`, if one came back.
    pub id_claims: Option<IdClaims>,
}

/// What the provider sent to the redirect URI.
#[derive(Debug)]
pub enum Callback {
    /// The user consented: exchange the code.
    Code {
        /// The authorization code (single use, about 10 minutes).
        code: Secret,
        /// The `state` echoed back: compare with the session's before anything else.
        state: String,
        /// Google's redirect `scope` (normalized), what the user ticked; Microsoft sends none.
        granted_scopes: Option<Vec<String>>,
    },
    /// The sign-in ended without a code.
    Error {
        /// The `state`, if echoed.
        state: Option<String>,
        /// What happened.
        error: ProviderError,
    },
}

/// What Microsoft sent to the admin-consent redirect URI.
#[derive(Debug)]
pub enum AdminConsentCallback {
    /// An admin consented for the organization.
    Granted {
        /// Tenant GUID. Do not trust it for authorization decisions (Microsoft's warning): only record it.
        tenant: String,
        /// Granted scopes, normalized.
        scopes: Vec<String>,
        /// The `state` echoed back.
        state: Option<String>,
    },
    /// Consent was not given.
    Error {
        /// The `state`, if echoed.
        state: Option<String>,
        /// What happened.
        error: ProviderError,
    },
}

/// Result of [`IdentityClient::revoke`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The provider revoked the grant (Google: the whole grant of that user and client, every capability).
    Revoked,
    /// The provider no longer knew the token (already revoked or expired): nothing left to revoke.
    AlreadyInvalid,
    /// The provider has no delegated revocation (Microsoft). Deleting the tokens is all hirewire can do; the
    /// user can remove the app at their account's app list. `revokeSignInSessions` is never called: it signs
    /// the user out everywhere.
    NotSupported,
}

/// OAuth and identity calls for one organization's app at one provider.
#[derive(Clone)]
pub struct IdentityClient {
    provider: Provider,
    endpoints: Endpoints,
    credentials: AppCredentials,
    http: HttpClient,
    clock: Clock,
}

impl std::fmt::Debug for IdentityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityClient")
            .field("provider", &self.provider)
            .field("endpoints", &self.endpoints)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl IdentityClient {
    /// A client for `provider` at `endpoints` with the organization's app credentials.
    pub fn new(
        provider: Provider,
        endpoints: Endpoints,
        credentials: AppCredentials,
        http: HttpClient,
    ) -> Self {
        IdentityClient {
            provider,
            endpoints,
            credentials,
            http,
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Replaces the clock used for `expires_at`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Which provider this client talks to.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    fn oauth(&self, redirect_uri: Option<&str>) -> Result<OAuthClient, ProviderError> {
        let (auth, token) = match self.provider {
            Provider::Microsoft => {
                let base = format!(
                    "{}/{}/oauth2/v2.0",
                    self.endpoints.microsoft_login,
                    self.credentials.tenant_or_organizations()
                );
                (format!("{base}/authorize"), format!("{base}/token"))
            }
            Provider::Google => (
                format!("{}/o/oauth2/v2/auth", self.endpoints.google_accounts),
                format!("{}/token", self.endpoints.google_oauth2),
            ),
        };
        let bad_endpoint = |e| ProviderError::Protocol(format!("invalid endpoint URL: {e}"));
        let client = oauth2::Client::new(ClientId::new(self.credentials.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.credentials.client_secret.expose().to_owned(),
            ))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::new(auth).map_err(bad_endpoint)?)
            .set_token_uri(TokenUrl::new(token).map_err(bad_endpoint)?);
        Ok(match redirect_uri {
            Some(r) => client.set_redirect_uri(RedirectUrl::new(r.to_owned()).map_err(|_| {
                ProviderError::misconfigured(self.provider, ConfigProblem::RedirectUri)
            })?),
            None => client,
        })
    }

    /// The URL to send the recruiter's browser to. Microsoft gets `response_mode=query` (a `form_post` is a
    /// cross-site POST that loses SameSite=Lax session cookies); Google gets `access_type=offline&prompt=consent`.
    pub fn authorize_url(&self, req: &AuthorizeRequest) -> Result<url::Url, ProviderError> {
        let client = self.oauth(Some(&req.redirect_uri))?;
        let state = req.state.clone();
        let mut a = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(req.scopes.iter().map(|s| Scope::new(s.clone())))
            .add_extra_param("code_challenge", req.pkce_challenge.clone())
            .add_extra_param("code_challenge_method", "S256");
        match self.provider {
            Provider::Microsoft => {
                a = a.add_extra_param("response_mode", "query");
                if req.consent_prompt {
                    a = a.add_extra_param("prompt", "consent");
                }
            }
            Provider::Google => {
                a = a
                    .add_extra_param("access_type", "offline")
                    .add_extra_param("prompt", "consent");
                if req.include_granted_scopes {
                    a = a.add_extra_param("include_granted_scopes", "true");
                }
            }
        }
        if let Some(hint) = &req.login_hint {
            a = a.add_extra_param("login_hint", hint.clone());
        }
        Ok(a.url().0)
    }

    /// Parses the query string of the redirect (with or without a leading `?`).
    pub fn parse_callback(&self, query: &str) -> Callback {
        let q = query_map(query);
        let state = q.get("state").cloned();
        if let Some(error) = q.get("error") {
            return Callback::Error {
                state,
                error: classify_oauth_error(
                    self.provider,
                    GrantKind::Code,
                    error,
                    q.get("error_description").map(String::as_str),
                    None,
                    q.get("error_subcode")
                        .filter(|s| *s != "cancel")
                        .map(String::as_str),
                ),
            };
        }
        match (q.get("code"), state) {
            (Some(code), Some(state)) if !code.is_empty() => Callback::Code {
                code: Secret::new(code.clone()),
                state,
                granted_scopes: q
                    .get("scope")
                    .map(|s| scopes::normalize_granted(self.provider, s)),
            },
            (_, state) => Callback::Error {
                state,
                error: ProviderError::Protocol("callback without a code and state".into()),
            },
        }
    }

    /// Exchanges an authorization code. A response without a refresh token is an error
    /// ([`ReauthReason::NoRefreshToken`](crate::ReauthReason::NoRefreshToken)): hirewire works while the
    /// recruiter is away and cannot without one.
    pub async fn exchange_code(
        &self,
        code: &Secret,
        redirect_uri: &str,
        pkce_verifier: &PkceVerifier,
    ) -> Result<TokenSet, ProviderError> {
        let client = self.oauth(Some(redirect_uri))?;
        let http = OAuthHttp {
            http: &self.http,
            idempotent: false,
        };
        let body = client
            .exchange_code(AuthorizationCode::new(code.expose().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                pkce_verifier.secret().expose().to_owned(),
            ))
            .request_async(&http)
            .await
            .map_err(|e| self.token_error(GrantKind::Code, e))?;
        let tokens = self.token_set(body, None)?;
        if tokens.refresh_token.is_none() {
            return Err(ProviderError::reauth(
                self.provider,
                crate::ReauthReason::NoRefreshToken,
            ));
        }
        Ok(tokens)
    }

    /// Gets a new access token. Microsoft rotates refresh tokens (the new one is returned; the old one keeps
    /// working until revoked); Google usually sends none, and then `refresh_token` is the one passed in.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenSet, ProviderError> {
        let client = self.oauth(None)?;
        let http = OAuthHttp {
            http: &self.http,
            idempotent: true,
        };
        let rt = RefreshToken::new(refresh_token.expose().to_owned());
        let body = client
            .exchange_refresh_token(&rt)
            .request_async(&http)
            .await
            .map_err(|e| self.token_error(GrantKind::Refresh, e))?;
        self.token_set(body, Some(refresh_token))
    }

    fn token_error(
        &self,
        kind: GrantKind,
        e: RequestTokenError<ProviderError, TokenErrorBody>,
    ) -> ProviderError {
        match e {
            RequestTokenError::ServerResponse(b) => {
                tracing::info!(provider = ?self.provider, error = %b, "token endpoint refused");
                classify_oauth_error(
                    self.provider,
                    kind,
                    &b.error,
                    b.error_description.as_deref(),
                    b.error_codes.as_deref(),
                    b.suberror.as_deref(),
                )
            }
            RequestTokenError::Request(e) => e,
            // Never include the body: it may hold tokens.
            RequestTokenError::Parse(e, _) => {
                ProviderError::Protocol(format!("unreadable token response at {}", e.path()))
            }
            RequestTokenError::Other(s) => ProviderError::Protocol(s),
        }
    }

    fn token_set(
        &self,
        body: TokenBody,
        old_refresh: Option<&Secret>,
    ) -> Result<TokenSet, ProviderError> {
        let expires_in = body
            .expires_in()
            .ok_or_else(|| ProviderError::Protocol("token response without expires_in".into()))?;
        let expires_at = (self.clock)()
            .checked_add(SignedDuration::try_from(expires_in).unwrap_or(SignedDuration::ZERO))
            .map_err(|e| ProviderError::Protocol(format!("expiry out of range: {e}")))?;
        let refresh_token = body
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone()))
            .or_else(|| old_refresh.cloned());
        Ok(TokenSet {
            access_token: Secret::new(body.access_token().secret().clone()),
            refresh_token,
            expires_at,
            scopes: body
                .scopes()
                .map(|s| scopes::normalize_all(self.provider, s.iter().map(|x| x.as_str())))
                .unwrap_or_default(),
            id_claims: body
                .extra_fields()
                .id_token
                .as_deref()
                .and_then(id_token::claims),
        })
    }

    /// The mailbox or calendar address the grant belongs to, to show under the setting.
    /// Microsoft: `GET /v1.0/me` (`mail`, else `userPrincipalName`). Google inbox: Gmail `users.getProfile`.
    /// Google calendar: the `id_token`'s `email` claim, else `/tokeninfo`'s `email` (Gmail scopes are not
    /// granted there).
    pub async fn account_address(
        &self,
        capability: Capability,
        tokens: &TokenSet,
    ) -> Result<String, ProviderError> {
        let bearer = Some(&tokens.access_token);
        match (self.provider, capability) {
            (Provider::Microsoft, _) => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Me {
                    mail: Option<String>,
                    user_principal_name: Option<String>,
                }
                let url = format!(
                    "{}/v1.0/me?$select=mail,userPrincipalName",
                    self.endpoints.graph
                );
                let me: Me = self.http.get_json(self.provider, &url, bearer).await?;
                me.mail
                    .filter(|m| !m.is_empty())
                    .or(me.user_principal_name)
                    .ok_or_else(|| {
                        ProviderError::Protocol("/me has neither mail nor userPrincipalName".into())
                    })
            }
            (Provider::Google, Capability::Inbox) => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Profile {
                    email_address: String,
                }
                let url = format!("{}/gmail/v1/users/me/profile", self.endpoints.gmail);
                let p: Profile = self.http.get_json(self.provider, &url, bearer).await?;
                Ok(p.email_address)
            }
            (Provider::Google, Capability::Calendar) => {
                if let Some(email) = tokens.id_claims.as_ref().and_then(|c| c.email.clone()) {
                    return Ok(email);
                }
                #[derive(Deserialize)]
                struct TokenInfo {
                    email: Option<String>,
                }
                let mut url =
                    url::Url::parse(&format!("{}/tokeninfo", self.endpoints.google_oauth2))
                        .map_err(|e| {
                            ProviderError::Protocol(format!("invalid endpoint URL: {e}"))
                        })?;
                url.query_pairs_mut()
                    .append_pair("access_token", tokens.access_token.expose());
                let info: TokenInfo = self
                    .http
                    .get_json(self.provider, url.as_str(), None)
                    .await?;
                info.email.ok_or_else(|| {
                    ProviderError::Protocol(
                        "no email in tokeninfo (was the email scope granted?)".into(),
                    )
                })
            }
        }
    }

    /// Revokes the grant behind `token` (access or refresh) where the provider can: Google `/revoke`, which
    /// ends the whole (user, client) grant, including a second capability's tokens. Microsoft:
    /// [`Revocation::NotSupported`], without any call.
    pub async fn revoke(&self, token: &Secret) -> Result<Revocation, ProviderError> {
        match self.provider {
            Provider::Microsoft => Ok(Revocation::NotSupported),
            Provider::Google => {
                let url = format!("{}/revoke", self.endpoints.google_oauth2);
                let resp = self
                    .http
                    .post_form(&url, &[("token", token.expose())])
                    .await?;
                match resp.status().as_u16() {
                    200 => Ok(Revocation::Revoked),
                    400 => {
                        #[derive(Deserialize)]
                        struct E {
                            error: String,
                        }
                        match serde_json::from_slice::<E>(resp.body()) {
                            Ok(e) if e.error == "invalid_token" => Ok(Revocation::AlreadyInvalid),
                            _ => Err(ProviderError::Protocol("revoke answered 400".into())),
                        }
                    }
                    s => Err(ProviderError::Protocol(format!("revoke answered {s}"))),
                }
            }
        }
    }

    /// Microsoft: the admin-consent URL for an organization admin
    /// (`/{tenant}/v2.0/adminconsent?client_id&scope=https://graph.microsoft.com/.default&redirect_uri&state`).
    /// `/.default` means every permission on the app registration. Uses the configured tenant, else
    /// `organizations` (`common` is not allowed there). Google has no such endpoint: its Workspace admins
    /// trust apps in the Admin console, invisibly to apps.
    pub fn admin_consent_url(
        &self,
        redirect_uri: &str,
        state: &str,
    ) -> Result<url::Url, ProviderError> {
        if self.provider != Provider::Microsoft {
            return Err(ProviderError::NotSupported {
                provider: self.provider,
                what: "admin consent URL",
            });
        }
        let mut u = url::Url::parse(&format!(
            "{}/{}/v2.0/adminconsent",
            self.endpoints.microsoft_login,
            self.credentials.tenant_or_organizations()
        ))
        .map_err(|e| ProviderError::Protocol(format!("invalid endpoint URL: {e}")))?;
        u.query_pairs_mut()
            .append_pair("client_id", &self.credentials.client_id)
            .append_pair("scope", "https://graph.microsoft.com/.default")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        Ok(u)
    }

    /// Parses Microsoft's admin-consent redirect. `admin_consent=True` comes on errors too, so `error` decides.
    pub fn parse_admin_consent_callback(&self, query: &str) -> AdminConsentCallback {
        let q = query_map(query);
        let state = q.get("state").cloned();
        if let Some(error) = q.get("error") {
            return AdminConsentCallback::Error {
                state,
                error: classify_oauth_error(
                    Provider::Microsoft,
                    GrantKind::Code,
                    error,
                    q.get("error_description").map(String::as_str),
                    None,
                    None,
                ),
            };
        }
        match (q.get("admin_consent"), q.get("tenant")) {
            (Some(a), Some(tenant)) if a.eq_ignore_ascii_case("true") => {
                AdminConsentCallback::Granted {
                    tenant: tenant.clone(),
                    scopes: q
                        .get("scope")
                        .map(|s| scopes::normalize_granted(Provider::Microsoft, s))
                        .unwrap_or_default(),
                    state,
                }
            }
            _ => AdminConsentCallback::Error {
                state,
                error: ProviderError::Protocol(
                    "admin-consent callback without admin_consent and tenant".into(),
                ),
            },
        }
    }
}

fn query_map(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// oauth2's HTTP client, over [`HttpClient::send`].
///
/// A named type rather than a closure: a closure's future is not `Send` for
/// every lifetime (a compiler limitation with higher-ranked closures), which
/// would make every caller's future non-`Send` and unusable in axum handlers.
struct OAuthHttp<'a> {
    http: &'a HttpClient,
    idempotent: bool,
}

type OAuthFuture<'c> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, ProviderError>> + Send + 'c>,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp<'_> {
    type Error = ProviderError;
    type Future = OAuthFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.http.send(request, self.idempotent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpConfig;

    fn client(provider: Provider) -> IdentityClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        IdentityClient::new(
            provider,
            Endpoints::real(),
            AppCredentials {
                client_id: "id".into(),
                client_secret: Secret::new("s"),
                tenant: None,
            },
            HttpClient::new(HttpConfig::default()).unwrap(),
        )
    }

    #[test]
    fn the_pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let v =
            PkceVerifier::from_secret(Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(v.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_ne!(
            PkceVerifier::generate().secret(),
            PkceVerifier::generate().secret()
        );
    }

    #[test]
    fn a_google_cancel_is_access_denied_and_a_policy_block_needs_an_admin() {
        let g = client(Provider::Google);
        match g.parse_callback("?error=access_denied&state=s1") {
            Callback::Error {
                state,
                error: ProviderError::AccessDenied(Provider::Google),
            } => {
                assert_eq!(state.as_deref(), Some("s1"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            g.parse_callback("error=admin_policy_enforced&state=s1"),
            Callback::Error {
                error: ProviderError::NeedAdminApproval(Provider::Google),
                ..
            }
        ));
    }
}
