//! Email & calendar authorization: the admin's provider settings, each
//! recruiter's inbox and calendar grants, the OAuth round trip, token refresh
//! and deauthorization. Provider wire formats stay in `hirewire-providers`;
//! this module decides what to store, what to show and who must act.

use std::time::Duration;

use hirewire_domain::ids::UserId;
use hirewire_providers::scopes::{self, ScopeNeed};
use hirewire_providers::{
    AccessLevel, AdminConsentCallback, AppCredentials, AuthorizeRequest, Callback, Capability,
    IdentityClient, PkceVerifier, Provider, ProviderError, Revocation, Secret, TokenSet,
};
use hirewire_store::{
    AccessLevelSetting, CapabilityKind, ConsentState, Grant, GrantStatus, NewAudit, NewGrant,
    NewOAuthState, ProviderChoice, ProviderSettings, RefreshedTokens, TakeState, User,
};
use jiff::{SignedDuration, Timestamp};

use crate::app::AppState;
use crate::crypto::{random_token, token_digest};

/// How long an authorization may take from the click to the callback.
pub const STATE_TTL: SignedDuration = SignedDuration::from_mins(10);
/// Refresh access tokens this long before they expire.
pub const REFRESH_MARGIN: SignedDuration = SignedDuration::from_mins(2);
/// How long one instance may hold a grant's refresh before another may take over.
pub const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// `session_digest` of authorizations started through the API (no browser session).
pub const API_SESSION: &[u8] = b"api";

pub fn provider_of(choice: ProviderChoice) -> Option<Provider> {
    match choice {
        ProviderChoice::Microsoft => Some(Provider::Microsoft),
        ProviderChoice::Google => Some(Provider::Google),
        ProviderChoice::None => None,
    }
}

pub fn choice_of(provider: Provider) -> ProviderChoice {
    match provider {
        Provider::Microsoft => ProviderChoice::Microsoft,
        Provider::Google => ProviderChoice::Google,
    }
}

pub fn access_of(level: AccessLevelSetting) -> AccessLevel {
    match level {
        AccessLevelSetting::SendAndView => AccessLevel::SendAndView,
        AccessLevelSetting::ViewOnly => AccessLevel::ViewOnly,
        AccessLevelSetting::Off => AccessLevel::Off,
    }
}

pub fn capability_of(kind: CapabilityKind) -> Capability {
    match kind {
        CapabilityKind::Inbox => Capability::Inbox,
        CapabilityKind::Calendar => Capability::Calendar,
    }
}

pub fn provider_slug(p: Provider) -> &'static str {
    match p {
        Provider::Microsoft => "microsoft",
        Provider::Google => "google",
    }
}

/// The exact redirect URI to register with `provider`, built from `--public-url`.
pub fn redirect_uri(state: &AppState, provider: Provider) -> String {
    state
        .config
        .link(&format!("/oauth/{}/callback", provider_slug(provider)))
}

/// Why an authorization cannot start or finish; each maps to a notice shown on
/// the settings page (and a stable API code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Authorized(CapabilityKind),
    Deauthorized {
        kind: CapabilityKind,
        note: String,
    },
    NotConnected(CapabilityKind),
    NoProvider,
    NotConfigured,
    EmailOff,
    /// A partial grant: these scopes (normalized) are missing, each with what it is for.
    Partial {
        kind: CapabilityKind,
        missing: Vec<(String, String)>,
    },
    StateInvalid(&'static str),
    Provider {
        code: &'static str,
        message: String,
    },
    AdminConsentRecorded,
}

impl Notice {
    /// A stable, snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Notice::Authorized(_) => "authorized",
            Notice::Deauthorized { .. } => "deauthorized",
            Notice::NotConnected(_) => "not_connected",
            Notice::NoProvider => "no_provider",
            Notice::NotConfigured => "provider_not_configured",
            Notice::EmailOff => "email_access_off",
            Notice::Partial { .. } => "missing_permissions",
            Notice::StateInvalid(_) => "invalid_state",
            Notice::Provider { code, .. } => code,
            Notice::AdminConsentRecorded => "admin_consent_recorded",
        }
    }

    pub fn is_error(&self) -> bool {
        !matches!(
            self,
            Notice::Authorized(_) | Notice::Deauthorized { .. } | Notice::AdminConsentRecorded
        )
    }

    /// The sentence shown to the person.
    pub fn message(&self, provider: Option<Provider>) -> String {
        let p = provider
            .map(Provider::display_name)
            .unwrap_or("your provider");
        match self {
            Notice::Authorized(k) => format!("Your {} is connected.", noun(*k)),
            Notice::Deauthorized { kind, note } => format!("Your {} is disconnected. {note}", noun(*kind)),
            Notice::NotConnected(k) => format!("Your {} is not connected.", noun(*k)),
            Notice::NoProvider => "Your organization's admin has not chosen an email provider yet.".into(),
            Notice::NotConfigured => {
                "Your organization's admin has not finished setting up the email provider (app credentials are missing).".into()
            }
            Notice::EmailOff => "Your organization's admin has turned email access off.".into(),
            Notice::Partial { missing, .. } => format!(
                "{p} did not grant every permission hirewire asked for, so nothing was connected. Missing: {}. Authorize again and leave every permission ticked.",
                missing.iter().map(|(scope, purpose)| format!("{scope} ({purpose})")).collect::<Vec<_>>().join("; ")
            ),
            Notice::StateInvalid(why) => format!("That authorization could not be finished: {why}. Start again from this page."),
            Notice::Provider { message, .. } => message.clone(),
            Notice::AdminConsentRecorded => format!("Admin consent for {p} is recorded."),
        }
    }
}

fn noun(k: CapabilityKind) -> &'static str {
    match k {
        CapabilityKind::Inbox => "inbox",
        CapabilityKind::Calendar => "work calendar",
    }
}

/// A provider error as a notice (and, where hirewire can learn from it, a
/// change to the org's consent state).
fn provider_notice(e: &ProviderError) -> Notice {
    let code = match e {
        ProviderError::AccessDenied(_) => "access_denied",
        ProviderError::NeedAdminApproval(_) => "admin_approval_required",
        ProviderError::UserNotAssigned => "user_not_assigned",
        ProviderError::WrongTenant => "wrong_tenant",
        ProviderError::Misconfigured { .. } => "provider_misconfigured",
        ProviderError::NeedsReauthorization { .. } => "authorization_rejected",
        ProviderError::Throttled { .. } | ProviderError::Transient(_) => "provider_unavailable",
        _ => "provider_error",
    };
    Notice::Provider {
        code,
        message: e.user_message(),
    }
}

/// The organization's provider, ready to use.
pub struct OrgProvider {
    pub settings: ProviderSettings,
    pub provider: Provider,
    pub client: IdentityClient,
}

/// Loads the org's provider settings and builds the identity client.
pub async fn org_provider(
    state: &AppState,
    org: hirewire_domain::ids::OrgId,
) -> Result<OrgProvider, Notice> {
    let settings = state
        .store
        .provider_settings(org)
        .await
        .map_err(internal)?
        .ok_or(Notice::NoProvider)?;
    let provider = provider_of(settings.provider).ok_or(Notice::NoProvider)?;
    let client = identity_client(state, &settings, provider)?;
    Ok(OrgProvider {
        settings,
        provider,
        client,
    })
}

fn identity_client(
    state: &AppState,
    s: &ProviderSettings,
    provider: Provider,
) -> Result<IdentityClient, Notice> {
    let sealed = s
        .client_secret_sealed
        .as_deref()
        .filter(|_| !s.client_id.is_empty())
        .ok_or(Notice::NotConfigured)?;
    let creds = AppCredentials {
        client_id: s.client_id.clone(),
        client_secret: open_secret(state, sealed)?,
        tenant: s.tenant.clone(),
    };
    let clock = state.clock.clone();
    Ok(IdentityClient::new(
        provider,
        state.config.provider_endpoints.clone(),
        creds,
        state.provider_http.clone(),
    )
    .with_clock(std::sync::Arc::new(move || clock.now())))
}

fn internal(e: impl std::fmt::Display) -> Notice {
    tracing::error!(error = %e, "integration failure");
    Notice::Provider {
        code: "internal",
        message: "Something went wrong on our side. It has been logged; please try again.".into(),
    }
}

/// Starts an authorization: returns the provider URL to send the browser to.
/// `only` re-asks just those scopes on top of the earlier grant (Google).
pub async fn start_authorize(
    state: &AppState,
    user: &User,
    session_digest: &[u8],
    kind: CapabilityKind,
    only: Option<Vec<String>>,
) -> Result<url::Url, Notice> {
    let org = org_provider(state, user.org_id).await?;
    let access = access_of(org.settings.access_level);
    if kind == CapabilityKind::Inbox && access == AccessLevel::Off {
        return Err(Notice::EmailOff);
    }
    let cap = capability_of(kind);
    let (scope_list, include_granted) = match only {
        Some(missing) if org.provider == Provider::Google && !missing.is_empty() => {
            let mut s: Vec<String> = scopes::sign_in(org.provider)
                .iter()
                .map(|n| n.scope.to_owned())
                .collect();
            s.extend(missing);
            (s, true)
        }
        _ => (scopes::request(org.provider, cap, access), false),
    };
    let verifier = PkceVerifier::generate();
    let state_token = random_token();
    let redirect = redirect_uri(state, org.provider);
    let now = state.now();
    let sealed_verifier = seal_secret(state, verifier.secret());
    state
        .store
        .create_oauth_state(
            &NewOAuthState {
                state_digest: &token_digest(&state_token),
                user_id: user.id,
                session_digest,
                purpose: kind.as_str(),
                pkce_verifier_sealed: Some(&sealed_verifier),
                redirect_uri: &redirect,
                scopes: &scope_list.join(" "),
                expires_at: now + STATE_TTL,
            },
            now,
        )
        .await
        .map_err(internal)?;
    org.client
        .authorize_url(&AuthorizeRequest {
            redirect_uri: redirect,
            scopes: scope_list,
            state: state_token,
            pkce_challenge: verifier.challenge(),
            login_hint: Some(user.email.to_string()),
            include_granted_scopes: include_granted,
            consent_prompt: false,
        })
        .map_err(|e| provider_notice(&e))
}

/// Starts Microsoft admin consent for the admin's organization.
pub async fn start_admin_consent(
    state: &AppState,
    admin: &User,
    session_digest: &[u8],
) -> Result<url::Url, Notice> {
    let org = org_provider(state, admin.org_id).await?;
    let state_token = random_token();
    let redirect = redirect_uri(state, org.provider);
    let now = state.now();
    state
        .store
        .create_oauth_state(
            &NewOAuthState {
                state_digest: &token_digest(&state_token),
                user_id: admin.id,
                session_digest,
                purpose: "admin_consent",
                pkce_verifier_sealed: None,
                redirect_uri: &redirect,
                scopes: "",
                expires_at: now + STATE_TTL,
            },
            now,
        )
        .await
        .map_err(internal)?;
    org.client
        .admin_consent_url(&redirect, &state_token)
        .map_err(|e| provider_notice(&e))
}

/// Where the callback should send the browser, and what to tell them.
pub struct CallbackOutcome {
    pub admin: bool,
    pub notice: Notice,
    pub provider: Option<Provider>,
}

/// Finishes an authorization (or admin consent) from the provider's redirect.
pub async fn finish_callback(
    state: &AppState,
    viewer: &User,
    session_digest: &[u8],
    provider: Provider,
    query: &str,
) -> CallbackOutcome {
    let fail = |notice, admin| CallbackOutcome {
        admin,
        notice,
        provider: Some(provider),
    };
    let org = match org_provider(state, viewer.org_id).await {
        Ok(o) if o.provider == provider => o,
        Ok(_) => {
            return fail(
                Notice::StateInvalid("your organization now uses another provider"),
                false,
            );
        }
        Err(n) => return fail(n, false),
    };
    let is_admin_consent = query.contains("admin_consent=");
    let echoed = if is_admin_consent {
        match org.client.parse_admin_consent_callback(query) {
            AdminConsentCallback::Granted { state: s, .. } => s,
            AdminConsentCallback::Error { state: s, .. } => s,
        }
    } else {
        match org.client.parse_callback(query) {
            Callback::Code { ref state, .. } => Some(state.clone()),
            Callback::Error { ref state, .. } => state.clone(),
        }
    };
    let Some(echoed) = echoed.filter(|s| !s.is_empty()) else {
        return fail(
            Notice::StateInvalid("the provider's answer carried no state"),
            is_admin_consent,
        );
    };
    let now = state.now();
    let pending = match state
        .store
        .take_oauth_state(&token_digest(&echoed), now)
        .await
    {
        Ok(TakeState::Valid(p)) => p,
        Ok(TakeState::Expired) => {
            return fail(
                Notice::StateInvalid("it took longer than 10 minutes"),
                is_admin_consent,
            );
        }
        Ok(TakeState::AlreadyUsed) => {
            return fail(
                Notice::StateInvalid("this answer was already used"),
                is_admin_consent,
            );
        }
        Ok(TakeState::Unknown) => {
            return fail(
                Notice::StateInvalid("hirewire did not start it"),
                is_admin_consent,
            );
        }
        Err(e) => return fail(internal(e), is_admin_consent),
    };
    if pending.user_id != viewer.id
        || (pending.session_digest != session_digest && pending.session_digest != API_SESSION)
    {
        audit(
            state,
            viewer,
            "integration.callback_rejected",
            "state bound to another session",
            now,
        )
        .await;
        return fail(
            Notice::StateInvalid("it was started by another signed-in session"),
            pending.purpose == "admin_consent",
        );
    }
    if pending.purpose == "admin_consent" {
        return finish_admin_consent(state, viewer, &org, query, now).await;
    }
    let Some(kind) = hirewire_store::parse_capability(&pending.purpose) else {
        return fail(Notice::StateInvalid("it was for something else"), false);
    };
    let result = finish_grant(state, viewer, &org, kind, &pending, query, now).await;
    CallbackOutcome {
        admin: false,
        notice: result,
        provider: Some(provider),
    }
}

async fn finish_admin_consent(
    state: &AppState,
    admin: &User,
    org: &OrgProvider,
    query: &str,
    now: Timestamp,
) -> CallbackOutcome {
    let notice = match org.client.parse_admin_consent_callback(query) {
        AdminConsentCallback::Granted { tenant, .. } => {
            let detail = format!("tenant {tenant}");
            match state
                .store
                .set_consent_state(
                    admin.org_id,
                    ConsentState::Recorded,
                    Some(admin.id),
                    Some(&detail),
                    now,
                )
                .await
            {
                Ok(()) => {
                    audit(
                        state,
                        admin,
                        "integration.admin_consent_recorded",
                        &detail,
                        now,
                    )
                    .await;
                    Notice::AdminConsentRecorded
                }
                Err(e) => internal(e),
            }
        }
        AdminConsentCallback::Error { error, .. } => {
            audit(
                state,
                admin,
                "integration.admin_consent_failed",
                &error.to_string(),
                now,
            )
            .await;
            provider_notice(&error)
        }
    };
    CallbackOutcome {
        admin: true,
        notice,
        provider: Some(org.provider),
    }
}

async fn finish_grant(
    state: &AppState,
    user: &User,
    org: &OrgProvider,
    kind: CapabilityKind,
    pending: &hirewire_store::OAuthState,
    query: &str,
    now: Timestamp,
) -> Notice {
    let (code, redirect_scopes) = match org.client.parse_callback(query) {
        Callback::Code {
            code,
            granted_scopes,
            ..
        } => (code, granted_scopes),
        Callback::Error { error, .. } => return learn_from(state, user, &error, now).await,
    };
    let Some(verifier) = pending
        .pkce_verifier_sealed
        .as_deref()
        .and_then(|s| open_secret(state, s).ok())
    else {
        return Notice::StateInvalid("its security check could not be read");
    };
    let tokens = match org
        .client
        .exchange_code(
            &code,
            &pending.redirect_uri,
            &PkceVerifier::from_secret(verifier),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => return learn_from(state, user, &e, now).await,
    };
    let cap = capability_of(kind);
    let access = access_of(org.settings.access_level);
    let granted = if tokens.scopes.is_empty() {
        redirect_scopes.unwrap_or_default()
    } else {
        tokens.scopes.clone()
    };
    let required = scopes::required(org.provider, cap, access);
    let missing = scopes::missing(org.provider, &granted, &required);
    if !missing.is_empty() {
        audit(
            state,
            user,
            "integration.partial_grant",
            &missing
                .iter()
                .map(|n| n.scope)
                .collect::<Vec<_>>()
                .join(" "),
            now,
        )
        .await;
        return Notice::Partial {
            kind,
            missing: missing_list(&missing),
        };
    }
    let address = match org.client.account_address(cap, &tokens).await {
        Ok(a) => a,
        Err(e) => return learn_from(state, user, &e, now).await,
    };
    match store_tokens(
        state,
        user,
        org.provider,
        kind,
        &address,
        &granted,
        &tokens,
        now,
    )
    .await
    {
        Ok(()) => {
            // Someone got through without a recorded admin consent: for
            // Microsoft that shows user consent is allowed ("not required");
            // for Google whatever blocked the org is resolved (its admin
            // trust stays invisible, so "unknown").
            let learned = match (org.provider, org.settings.consent_state) {
                (Provider::Microsoft, ConsentState::Unknown | ConsentState::Needed) => {
                    Some(ConsentState::NotRequired)
                }
                (Provider::Google, ConsentState::Needed) => Some(ConsentState::Unknown),
                _ => None,
            };
            if let Some(learned) = learned {
                let detail = format!("{} authorized without an admin's approval", user.email);
                if let Err(e) = state
                    .store
                    .set_consent_state(user.org_id, learned, None, Some(&detail), now)
                    .await
                {
                    tracing::error!(error = %e, "could not record the consent state");
                }
            }
            audit(state, user, "integration.authorized", kind.as_str(), now).await;
            Notice::Authorized(kind)
        }
        Err(n) => n,
    }
}

fn missing_list(missing: &[ScopeNeed]) -> Vec<(String, String)> {
    missing
        .iter()
        .map(|n| (n.scope.to_owned(), n.purpose.to_owned()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn store_tokens(
    state: &AppState,
    user: &User,
    provider: Provider,
    kind: CapabilityKind,
    address: &str,
    granted: &[String],
    tokens: &TokenSet,
    now: Timestamp,
) -> Result<(), Notice> {
    let access = seal_secret(state, &tokens.access_token);
    let refresh = tokens.refresh_token.as_ref().map(|r| seal_secret(state, r));
    let previous = state.store.grant(user.id, kind).await.map_err(internal)?;
    let grant = state
        .store
        .put_grant(
            &NewGrant {
                org_id: user.org_id,
                user_id: user.id,
                capability: kind,
                provider: choice_of(provider),
                status: GrantStatus::Active,
                status_reason: None,
                account_address: Some(address),
                scopes: &granted.join(" "),
                permission_version: capability_of(kind).permission_set_version(),
                legacy: false,
                access_token_sealed: Some(&access),
                refresh_token_sealed: refresh.as_deref(),
                access_expires_at: Some(tokens.expires_at),
            },
            now,
        )
        .await
        .map_err(internal)?;
    if kind == CapabilityKind::Inbox {
        crate::sync::inbox_stored(state, &grant, previous.as_ref()).await;
    }
    Ok(())
}

/// Turns a provider failure into a notice, and records what the org's admin
/// must do when the failure says so.
async fn learn_from(state: &AppState, user: &User, e: &ProviderError, now: Timestamp) -> Notice {
    let detail = match e {
        ProviderError::NeedAdminApproval(_) => Some(format!(
            "{} saw “Need admin approval” when authorizing",
            user.email
        )),
        ProviderError::UserNotAssigned => Some(format!(
            "{} is not assigned to the app in Microsoft Entra",
            user.email
        )),
        _ => None,
    };
    if let Some(d) = detail
        && let Err(err) = state
            .store
            .set_consent_state(user.org_id, ConsentState::Needed, None, Some(&d), now)
            .await
    {
        tracing::error!(error = %err, "could not record the consent state");
    }
    audit(
        state,
        user,
        "integration.authorize_failed",
        &e.to_string(),
        now,
    )
    .await;
    provider_notice(e)
}

/// Deauthorizes one capability: deletes its tokens (an inbox: its push
/// subscription too, at the provider, best effort), revokes at Google when no
/// other capability still uses the grant, audits, and says what happened.
pub async fn deauthorize(
    state: &AppState,
    user: &User,
    kind: CapabilityKind,
) -> Result<Notice, Notice> {
    let now = state.now();
    // The inbox's push subscription is deleted at the provider with a token taken before the grant goes.
    let unsubscribe = match kind {
        CapabilityKind::Inbox => crate::push_hooks::prepare_unsubscribe(state, user.id).await,
        CapabilityKind::Calendar => None,
    };
    let Some(grant) = state
        .store
        .delete_grant(user.id, kind)
        .await
        .map_err(internal)?
    else {
        return Err(Notice::NotConnected(kind));
    };
    let other_kind = match kind {
        CapabilityKind::Inbox => CapabilityKind::Calendar,
        CapabilityKind::Calendar => CapabilityKind::Inbox,
    };
    let other = state
        .store
        .grant(user.id, other_kind)
        .await
        .map_err(internal)?;
    let shares_grant = other
        .as_ref()
        .is_some_and(|o| o.provider == grant.provider && o.provider == ProviderChoice::Google);
    let mut note = match grant.provider {
        ProviderChoice::Microsoft => "Microsoft has no way for apps to remove themselves: to remove hirewire from your account too, open myaccount.microsoft.com › Apps.".to_owned(),
        _ if shares_grant => format!("Google keeps hirewire listed in your account until you also disconnect your {}.", noun(other_kind)),
        _ => String::new(),
    };
    // Before revoking at Google: `users.stop` needs the token. The local record went with the grant.
    if let Some(u) = unsubscribe {
        crate::push_hooks::unsubscribe(state, u).await;
    }
    if grant.provider == ProviderChoice::Google && !shares_grant {
        let revoked = revoke_at_google(state, user, &grant).await;
        note = match revoked {
            Some(Revocation::Revoked) | Some(Revocation::AlreadyInvalid) => "hirewire's access was also revoked at Google.".to_owned(),
            _ => "hirewire could not reach Google to revoke its access; you can remove it at myaccount.google.com › Security › Third-party access.".to_owned(),
        };
    }
    if kind == CapabilityKind::Inbox {
        let purge = state
            .store
            .provider_settings(user.org_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.purge_on_deauthorize);
        if purge {
            match state.store.purge_grant_mail(user.org_id, grant.id).await {
                Ok(gone) => note.push_str(&format!(
                    " The {} email(s) synced from this inbox were deleted, as your organization requires.",
                    gone.messages
                )),
                Err(e) => {
                    tracing::error!(error = %e, grant.id = %grant.id, "could not purge a deauthorized inbox's mail");
                    note.push_str(" Deleting the email synced from this inbox failed; your admin has been told in the logs.");
                }
            }
        } else {
            note.push_str(" Email already synced stays on candidates' pages.");
        }
    }
    audit(state, user, "integration.deauthorized", kind.as_str(), now).await;
    Ok(Notice::Deauthorized {
        kind,
        note: note.trim().to_owned(),
    })
}

async fn revoke_at_google(state: &AppState, user: &User, grant: &Grant) -> Option<Revocation> {
    let org = org_provider(state, user.org_id)
        .await
        .ok()
        .filter(|o| o.provider == Provider::Google)?;
    let sealed = grant
        .refresh_token_sealed
        .as_deref()
        .or(grant.access_token_sealed.as_deref())?;
    let token = open_secret(state, sealed).ok()?;
    match org.client.revoke(&token).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "revocation at Google failed");
            None
        }
    }
}

/// A valid access token for the grant, refreshed (once across all instances)
/// when it is about to expire. On `invalid_grant` the grant becomes
/// "needs reauthorization" with the reason, and other grants are untouched.
pub async fn access_token(
    state: &AppState,
    user: UserId,
    kind: CapabilityKind,
) -> Result<Secret, Notice> {
    for _ in 0..50 {
        let grant = state
            .store
            .grant(user, kind)
            .await
            .map_err(internal)?
            .ok_or(Notice::NotConnected(kind))?;
        if grant.status != GrantStatus::Active {
            return Err(Notice::Provider {
                code: "needs_reauthorization",
                message: grant
                    .status_reason
                    .clone()
                    .unwrap_or_else(|| "Authorize again to reconnect.".into()),
            });
        }
        let now = state.now();
        if let (Some(sealed), Some(exp)) = (
            grant.access_token_sealed.as_deref(),
            grant.access_expires_at,
        ) && exp > now + REFRESH_MARGIN
        {
            return open_secret(state, sealed);
        }
        match state
            .store
            .claim_grant_refresh(grant.id, now, now + REFRESH_MARGIN, REFRESH_LEASE)
            .await
            .map_err(internal)?
        {
            Some(token) => return refresh_grant(state, &grant, token).await,
            // Another instance is refreshing (or just did): read again.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Err(Notice::Provider {
        code: "provider_unavailable",
        message: "Refreshing the connection took too long; try again.".into(),
    })
}

fn seal_secret(state: &AppState, secret: &Secret) -> String {
    state.keyring.seal(secret.expose().as_bytes())
}

fn open_secret(state: &AppState, sealed: &str) -> Result<Secret, Notice> {
    let bytes = state.keyring.open(sealed).map_err(internal)?;
    Ok(Secret::new(String::from_utf8(bytes).map_err(internal)?))
}

async fn refresh_grant(state: &AppState, grant: &Grant, lease: i64) -> Result<Secret, Notice> {
    let release = |state: &AppState| {
        let store = state.store.clone();
        let id = grant.id;
        let now = state.now();
        async move {
            let _ = store.finish_grant_refresh(id, lease, None, now).await;
        }
    };
    let org = match org_provider(state, grant.org_id).await {
        Ok(o) => o,
        Err(n) => {
            release(state).await;
            return Err(n);
        }
    };
    let Some(refresh) = grant.refresh_token_sealed.as_deref() else {
        release(state).await;
        return Err(Notice::NotConnected(grant.capability));
    };
    let refresh = match open_secret(state, refresh) {
        Ok(r) => r,
        Err(n) => {
            release(state).await;
            return Err(n);
        }
    };
    match org.client.refresh(&refresh).await {
        Ok(tokens) => {
            let access = seal_secret(state, &tokens.access_token);
            let rotated = tokens
                .refresh_token
                .as_ref()
                .filter(|r| r.expose() != refresh.expose())
                .map(|r| seal_secret(state, r));
            let scopes_text = if tokens.scopes.is_empty() {
                grant.scopes.clone()
            } else {
                tokens.scopes.join(" ")
            };
            let fresh = RefreshedTokens {
                access_token_sealed: &access,
                refresh_token_sealed: rotated.as_deref(),
                access_expires_at: tokens.expires_at,
                scopes: &scopes_text,
            };
            state
                .store
                .finish_grant_refresh(grant.id, lease, Some(&fresh), state.now())
                .await
                .map_err(internal)?;
            Ok(tokens.access_token)
        }
        Err(e @ ProviderError::NeedsReauthorization { .. }) => {
            let reason = e.user_message();
            let _ = state
                .store
                .set_grant_status(
                    grant.id,
                    GrantStatus::NeedsReauth,
                    Some(&reason),
                    state.now(),
                )
                .await;
            release(state).await;
            Err(Notice::Provider {
                code: "needs_reauthorization",
                message: reason,
            })
        }
        Err(e) => {
            release(state).await;
            Err(provider_notice(&e))
        }
    }
}

/// Imports a calendar-only grant from the older scheduling integration.
pub async fn import_legacy_grant(
    state: &AppState,
    user: &User,
    provider: Provider,
    refresh_token: &str,
    scope_text: &str,
    address: Option<&str>,
) -> Result<Grant, hirewire_store::StoreError> {
    let sealed = state.keyring.seal(refresh_token.trim().as_bytes());
    let granted = scopes::normalize_granted(provider, scope_text);
    state
        .store
        .put_grant(
            &NewGrant {
                org_id: user.org_id,
                user_id: user.id,
                capability: CapabilityKind::Calendar,
                provider: choice_of(provider),
                status: GrantStatus::Active,
                status_reason: None,
                account_address: address.or(Some(user.email.as_str())),
                scopes: &granted.join(" "),
                permission_version: 0,
                legacy: true,
                access_token_sealed: None,
                refresh_token_sealed: Some(&sealed),
                access_expires_at: None,
            },
            state.now(),
        )
        .await
}

/// Re-seals every stored secret under the keyring's current key.
pub async fn reseal_all(state: &AppState) -> Result<(usize, usize), anyhow::Error> {
    let reseal = |s: &str| -> Result<String, anyhow::Error> {
        Ok(state.keyring.seal(&state.keyring.open(s)?))
    };
    let mut grants = 0;
    for g in state.store.all_grants().await? {
        let access = g.access_token_sealed.as_deref().map(reseal).transpose()?;
        let refresh = g.refresh_token_sealed.as_deref().map(reseal).transpose()?;
        state
            .store
            .reseal_grant(g.id, access.as_deref(), refresh.as_deref())
            .await?;
        grants += 1;
    }
    let mut settings = 0;
    for mut s in state.store.all_provider_settings().await? {
        if let Some(sealed) = s.client_secret_sealed.as_deref() {
            s.client_secret_sealed = Some(reseal(sealed)?);
            state.store.save_provider_settings(&s).await?;
            settings += 1;
        }
    }
    Ok((grants, settings))
}

async fn audit(state: &AppState, user: &User, action: &str, target: &str, now: Timestamp) {
    let detail = serde_json::json!({});
    let e = NewAudit {
        org_id: Some(user.org_id),
        actor_user_id: Some(user.id),
        action,
        target,
        detail: &detail,
        ip: None,
    };
    if let Err(err) = state.store.record_audit(&e, now).await {
        tracing::error!(error = %err, action, "could not record an audit event");
    }
}

// ---- the admin's provider settings -------------------------------------------

/// The admin's provider form, as submitted (page or API).
pub struct ProviderInput<'a> {
    pub provider: &'a str,
    pub client_id: &'a str,
    /// Empty keeps the stored secret.
    pub client_secret: &'a str,
    pub tenant: &'a str,
    pub access_level: &'a str,
    pub purge_on_deauthorize: bool,
}

/// The admin's choice, validated.
pub struct ProviderChange {
    pub provider: ProviderChoice,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub tenant: Option<String>,
    pub access_level: AccessLevelSetting,
    pub purge: bool,
}

/// Validates the admin's provider form (page or API).
pub fn validate_provider_input(
    f: &ProviderInput<'_>,
    existing: Option<&ProviderSettings>,
) -> Result<ProviderChange, String> {
    let provider = match f.provider {
        "microsoft" => ProviderChoice::Microsoft,
        "google" => ProviderChoice::Google,
        "none" => ProviderChoice::None,
        _ => return Err("Choose Microsoft 365, Google Workspace or Do not integrate.".into()),
    };
    let access_level = match f.access_level {
        "send_and_view" => AccessLevelSetting::SendAndView,
        "view_only" => AccessLevelSetting::ViewOnly,
        "off" => AccessLevelSetting::Off,
        _ => return Err("Choose an email access level.".into()),
    };
    let client_id = f.client_id.trim().to_owned();
    let secret = f.client_secret.trim();
    let tenant = f.tenant.trim();
    if provider != ProviderChoice::None {
        if client_id.is_empty()
            || client_id.len() > 255
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("Enter the OAuth client id from your app registration (no spaces).".into());
        }
        let has_secret = !secret.is_empty()
            || existing.is_some_and(|s| s.client_secret_sealed.is_some() && s.provider == provider);
        if !has_secret {
            return Err("Enter the OAuth client secret from your app registration.".into());
        }
        if secret.len() > 1024 || tenant.len() > 255 || tenant.chars().any(char::is_whitespace) {
            return Err("The client secret or tenant is not valid.".into());
        }
    }
    Ok(ProviderChange {
        provider,
        client_id,
        client_secret: (!secret.is_empty()).then(|| secret.to_owned()),
        tenant: (!tenant.is_empty() && provider == ProviderChoice::Microsoft)
            .then(|| tenant.to_owned()),
        access_level,
        purge: f.purge_on_deauthorize,
    })
}

fn level_rank(l: AccessLevelSetting) -> u8 {
    match l {
        AccessLevelSetting::Off => 0,
        AccessLevelSetting::ViewOnly => 1,
        AccessLevelSetting::SendAndView => 2,
    }
}

/// What [`save_provider`] did.
pub enum SaveOutcome {
    Saved,
    /// The change affects existing grants: nothing was saved; ask the admin
    /// to confirm, showing these consequences.
    NeedsConfirmation(Vec<String>),
}

/// Saves the org's provider settings. A provider switch, "Do not integrate"
/// or a lower access level with grants in place needs `confirmed`.
pub async fn save_provider(
    state: &AppState,
    admin: &User,
    existing: Option<ProviderSettings>,
    change: ProviderChange,
    confirmed: bool,
) -> Result<SaveOutcome, hirewire_store::StoreError> {
    let org = admin.org_id;
    let grants = state.store.org_grants(org).await?;
    let mut effects = Vec::new();
    if let Some(old) = &existing {
        let n_all = grants.len();
        let n_inbox = grants
            .iter()
            .filter(|g| g.capability == CapabilityKind::Inbox)
            .count();
        if n_all > 0 && change.provider != old.provider {
            effects.push(match change.provider {
                ProviderChoice::None => format!("{n_all} connected inbox or calendar grant(s) stop working and their tokens are deleted; recruiters see that integrations are off."),
                _ => format!("{n_all} grant(s) made with {} stop working; each recruiter must authorize again with the new provider.", old.provider),
            });
        }
        if n_inbox > 0
            && change.provider == old.provider
            && level_rank(change.access_level) < level_rank(old.access_level)
        {
            effects.push(match change.access_level {
                AccessLevelSetting::Off => format!("{n_inbox} connected inbox(es) pause: nothing is read or sent, and their grants are kept so raising the level again resumes them."),
                _ => format!("{n_inbox} connected inbox(es) keep syncing but can no longer send email."),
            });
        }
    }
    if !effects.is_empty() && !confirmed {
        return Ok(SaveOutcome::NeedsConfirmation(effects));
    }
    let now = state.now();
    let provider_changed = existing
        .as_ref()
        .is_some_and(|o| o.provider != change.provider);
    let secret_sealed = match &change.client_secret {
        Some(s) => Some(state.keyring.seal(s.as_bytes())),
        None if !provider_changed || change.provider == ProviderChoice::None => existing
            .as_ref()
            .and_then(|e| e.client_secret_sealed.clone()),
        None => None,
    };
    let (consent_state, consent_by, consent_at, consent_detail) = match &existing {
        Some(e)
            if !provider_changed
                && e.tenant == change.tenant
                && e.client_id == change.client_id =>
        {
            (
                e.consent_state,
                e.consent_by,
                e.consent_at,
                e.consent_detail.clone(),
            )
        }
        _ => (ConsentState::Unknown, None, None, None),
    };
    let settings = ProviderSettings {
        org_id: org,
        provider: change.provider,
        client_id: change.client_id.clone(),
        client_secret_sealed: if change.provider == ProviderChoice::None {
            None
        } else {
            secret_sealed
        },
        tenant: change.tenant.clone(),
        access_level: change.access_level,
        consent_state,
        consent_by,
        consent_at,
        consent_detail,
        purge_on_deauthorize: change.purge,
        updated_at: now,
    };
    state.store.save_provider_settings(&settings).await?;
    if provider_changed {
        // Old grants cannot be used with the new provider (or at all): drop
        // their tokens, keep the row so the recruiter sees why.
        let reason = match change.provider {
            ProviderChoice::None => {
                "Your organization's admin turned email and calendar integration off.".to_owned()
            }
            p => format!(
                "Your organization switched to {}. Authorize again to reconnect.",
                provider_of(p)
                    .map(Provider::display_name)
                    .unwrap_or("another provider")
            ),
        };
        for g in &grants {
            state
                .store
                .put_grant(
                    &NewGrant {
                        org_id: g.org_id,
                        user_id: g.user_id,
                        capability: g.capability,
                        provider: g.provider,
                        status: GrantStatus::NeedsReauth,
                        status_reason: Some(&reason),
                        account_address: g.account_address.as_deref(),
                        scopes: "",
                        permission_version: g.permission_version,
                        legacy: g.legacy,
                        access_token_sealed: None,
                        refresh_token_sealed: None,
                        access_expires_at: None,
                    },
                    now,
                )
                .await?;
        }
    }
    let detail = serde_json::json!({"provider": change.provider.as_str(), "access_level": change.access_level.as_str(), "secret_changed": change.client_secret.is_some()});
    let _ = state
        .store
        .record_audit(
            &hirewire_store::NewAudit {
                org_id: Some(org),
                actor_user_id: Some(admin.id),
                action: "integration.provider_saved",
                target: change.provider.as_str(),
                detail: &detail,
                ip: None,
            },
            now,
        )
        .await;
    Ok(SaveOutcome::Saved)
}

// ---- what the settings page shows ------------------------------------------------

/// One row of "Email & calendar".
#[derive(Debug, Clone)]
pub struct RowView {
    pub kind: CapabilityKind,
    pub title: &'static str,
    /// The synced address, from the provider.
    pub address: Option<String>,
    /// `active`, `needs_reauth`, `waiting_admin`, `not_connected`, `unavailable`.
    pub status: &'static str,
    pub status_label: String,
    pub detail: Option<String>,
    pub can_authorize: bool,
    pub authorize_label: &'static str,
    pub can_deauthorize: bool,
    /// Scopes to re-ask (Google partial grants).
    pub retry_only: Vec<String>,
}

/// The two rows for `user`, showing only the actions that can work now.
pub async fn rows(
    state: &AppState,
    user: &User,
) -> Result<(Option<Provider>, Vec<RowView>), hirewire_store::StoreError> {
    let settings = state.store.provider_settings(user.org_id).await?;
    let provider = settings.as_ref().and_then(|s| provider_of(s.provider));
    let configured = settings
        .as_ref()
        .is_some_and(|s| !s.client_id.is_empty() && s.client_secret_sealed.is_some());
    let mut out = Vec::new();
    for (kind, title) in [
        (CapabilityKind::Inbox, "Authorize inbox"),
        (CapabilityKind::Calendar, "Authorize work calendar"),
    ] {
        let grant = state.store.grant(user.id, kind).await?;
        let mut row = RowView {
            kind,
            title,
            address: grant.as_ref().and_then(|g| g.account_address.clone()),
            status: "not_connected",
            status_label: "Not connected".into(),
            detail: None,
            can_authorize: false,
            authorize_label: "Authorize",
            can_deauthorize: grant.is_some(),
            retry_only: Vec::new(),
        };
        let Some(s) = settings.as_ref().filter(|_| provider.is_some()) else {
            row.status = "unavailable";
            row.status_label = "Not available yet".into();
            row.detail =
                Some("Your organization's admin has not chosen an email provider yet.".into());
            out.push(row);
            continue;
        };
        let p = provider.expect("checked above");
        let access = access_of(s.access_level);
        let email_off = kind == CapabilityKind::Inbox && access == AccessLevel::Off;
        let consent_blocked = s.consent_state == ConsentState::Needed;
        match &grant {
            _ if !configured => {
                row.status = "unavailable";
                row.status_label = "Not available yet".into();
                row.detail = Some(
                    "Your organization's admin has not finished setting up the email provider."
                        .into(),
                );
            }
            Some(g) if g.provider != choice_of(p) => {
                row.status = "needs_reauth";
                row.status_label = "Needs reauthorization".into();
                row.detail = Some(format!(
                    "Your organization now uses {}. Authorize again to reconnect.",
                    p.display_name()
                ));
                row.can_authorize = !email_off;
                row.authorize_label = "Reauthorize";
            }
            Some(_) if email_off => {
                row.status = "waiting_admin";
                row.status_label = "Paused by your admin".into();
                row.detail = Some("Your organization's admin has turned email access off; nothing is read from your inbox meanwhile.".into());
            }
            Some(g) if g.status == GrantStatus::NeedsReauth => {
                row.status = "needs_reauth";
                row.status_label = "Needs reauthorization".into();
                row.detail = g.status_reason.clone();
                row.can_authorize = true;
                row.authorize_label = "Reauthorize";
            }
            Some(g) => {
                let granted: Vec<String> = g.scopes.split_whitespace().map(str::to_owned).collect();
                let missing = scopes::missing(
                    p,
                    &granted,
                    &scopes::required(p, capability_of(kind), access),
                );
                row.status = "active";
                row.status_label = "Active".into();
                if g.legacy || !missing.is_empty() {
                    let what: Vec<&str> = missing.iter().map(|m| m.purpose).collect();
                    row.detail = Some(if g.legacy {
                        "This grant comes from the older scheduling integration. Reauthorize to keep scheduling working and to use everything hirewire offers.".to_owned()
                    } else {
                        format!(
                            "Reauthorize to keep everything working: hirewire now also needs permission to {}.",
                            what.join("; ").to_lowercase()
                        )
                    });
                    row.can_authorize = true;
                    row.authorize_label = "Reauthorize";
                }
            }
            None if email_off => {
                row.status = "unavailable";
                row.status_label = "Turned off".into();
                row.detail = Some("Your organization's admin has turned email access off.".into());
            }
            None if consent_blocked => {
                // hirewire cannot see when the provider's admin acts (Google's
                // trust is invisible; Entra assignments too), so the recruiter
                // can always try again.
                row.status = "waiting_admin";
                row.status_label = "Waiting for your admin".into();
                row.detail = Some(format!(
                    "Your {} admin must approve hirewire first ({}). Your hirewire admin sees this on the Email provider page; try again once they have.",
                    p.display_name(),
                    s.consent_detail
                        .clone()
                        .unwrap_or_else(|| "admin approval required".into())
                ));
                row.can_authorize = true;
                row.authorize_label = "Try again";
            }
            None => {
                row.can_authorize = true;
            }
        }
        out.push(row);
    }
    Ok((provider, out))
}
