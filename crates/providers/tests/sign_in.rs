//! Both providers' authorization flows end to end against the in-process sandbox: authorize URL, the
//! person's consent, callback, code exchange, synced address, refresh, revoke, and the ways it goes wrong.

mod common;

use common::*;
use hirewire_providers::scopes::{self, ScopeNeed};
use hirewire_providers::{
    AccessLevel, AdminConsentCallback, Callback, Capability, ConfigProblem, Provider,
    ProviderError, ReauthReason, Revocation,
};
use reqwest::Method;
use serde_json::json;

const GMAIL_READ: &str = "https://www.googleapis.com/auth/gmail.readonly";
const GMAIL_SEND: &str = "https://www.googleapis.com/auth/gmail.send";

fn reason(e: ProviderError) -> ReauthReason {
    match e {
        ProviderError::NeedsReauthorization { reason, .. } => reason,
        other => panic!("expected NeedsReauthorization, got {other:?}"),
    }
}

fn scope_names(needs: &[ScopeNeed]) -> Vec<&'static str> {
    needs.iter().map(|n| n.scope).collect()
}

#[tokio::test]
async fn a_microsoft_recruiter_authorizes_the_inbox_and_refresh_tokens_rotate() {
    let w = start().await;
    let ms = w.client(Provider::Microsoft);
    let a = begin(
        &ms,
        scopes::request(
            Provider::Microsoft,
            Capability::Inbox,
            AccessLevel::SendAndView,
        ),
        false,
    );
    let q = query_map(a.url.query().unwrap());
    assert_eq!(q["response_mode"], "query");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(a.url.path(), "/organizations/oauth2/v2.0/authorize");

    let landing = w
        .sign_in(&a.url, "adele@acme.example", Answer::AcceptAll)
        .await;
    let (code, _) = code_of(&ms, &a, &landing.query());
    let tokens = ms
        .exchange_code(&code, redirect_uri(Provider::Microsoft), &a.verifier)
        .await
        .unwrap();
    assert!(
        scopes::missing(
            Provider::Microsoft,
            &tokens.scopes,
            &scopes::required(
                Provider::Microsoft,
                Capability::Inbox,
                AccessLevel::SendAndView
            )
        )
        .is_empty(),
        "{:?}",
        tokens.scopes
    );
    assert_eq!(tokens.expires_at.to_string(), "2026-11-27T09:59:59Z");
    assert_eq!(
        tokens.id_claims.as_ref().and_then(|c| c.email.as_deref()),
        Some("adele@acme.example")
    );
    assert_eq!(
        ms.account_address(Capability::Inbox, &tokens)
            .await
            .unwrap(),
        "adele@acme.example"
    );

    let old = tokens.refresh_token.clone().unwrap();
    let refreshed = ms.refresh(&old).await.unwrap();
    let new = refreshed.refresh_token.clone().unwrap();
    assert_ne!(
        new.expose(),
        old.expose(),
        "Microsoft rotates refresh tokens"
    );
    assert!(
        ms.refresh(&old).await.is_ok(),
        "the old refresh token keeps working"
    );
    assert!(ms.refresh(&new).await.is_ok());

    // The code is single use.
    let again = ms
        .exchange_code(&code, redirect_uri(Provider::Microsoft), &a.verifier)
        .await
        .unwrap_err();
    assert_eq!(reason(again), ReauthReason::CodeRejected);

    // No delegated revocation: nothing is called, the caller is told.
    assert_eq!(ms.revoke(&new).await.unwrap(), Revocation::NotSupported);

    w.control(
        Method::POST,
        "/_sandbox/users/adele@acme.example/password-change",
        None,
    )
    .await;
    assert_eq!(
        reason(ms.refresh(&new).await.unwrap_err()),
        ReauthReason::SessionRevoked
    );
}

#[tokio::test]
async fn a_google_recruiter_authorizes_the_inbox_then_revoking_makes_refresh_need_reauthorization()
{
    let w = start().await;
    let g = w.client(Provider::Google);
    let a = begin(
        &g,
        scopes::request(
            Provider::Google,
            Capability::Inbox,
            AccessLevel::SendAndView,
        ),
        false,
    );
    let q = query_map(a.url.query().unwrap());
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert!(!q.contains_key("include_granted_scopes"));

    let landing = w
        .sign_in(&a.url, "hank@globex.example", Answer::AcceptAll)
        .await;
    let (code, granted) = code_of(&g, &a, &landing.query());
    assert!(granted.unwrap().contains(&GMAIL_SEND.to_owned()));
    let tokens = g
        .exchange_code(&code, redirect_uri(Provider::Google), &a.verifier)
        .await
        .unwrap();
    assert!(
        tokens
            .scopes
            .contains(&"https://www.googleapis.com/auth/userinfo.email".to_owned())
    );
    assert_eq!(
        g.account_address(Capability::Inbox, &tokens).await.unwrap(),
        "hank@globex.example"
    );

    let rt = tokens.refresh_token.clone().unwrap();
    let refreshed = g.refresh(&rt).await.unwrap();
    assert_eq!(
        refreshed.refresh_token.as_ref().map(|s| s.expose()),
        Some(rt.expose()),
        "Google sends no new refresh token: the old one is kept"
    );
    assert_ne!(
        refreshed.access_token.expose(),
        tokens.access_token.expose()
    );

    assert_eq!(g.revoke(&rt).await.unwrap(), Revocation::Revoked);
    assert_eq!(
        reason(g.refresh(&rt).await.unwrap_err()),
        ReauthReason::ExpiredOrRevoked
    );
    assert_eq!(g.revoke(&rt).await.unwrap(), Revocation::AlreadyInvalid);
}

#[tokio::test]
async fn a_google_calendar_only_grant_shows_the_address_from_the_sign_in_scopes() {
    let w = start().await;
    let g = w.client(Provider::Google);
    let a = begin(
        &g,
        scopes::request(Provider::Google, Capability::Calendar, AccessLevel::Off),
        false,
    );
    let landing = w
        .sign_in(&a.url, "mindy@globex.example", Answer::AcceptAll)
        .await;
    let (code, _) = code_of(&g, &a, &landing.query());
    let mut tokens = g
        .exchange_code(&code, redirect_uri(Provider::Google), &a.verifier)
        .await
        .unwrap();
    assert!(
        scopes::missing(
            Provider::Google,
            &tokens.scopes,
            &scopes::required(Provider::Google, Capability::Calendar, AccessLevel::Off)
        )
        .is_empty()
    );
    assert_eq!(
        g.account_address(Capability::Calendar, &tokens)
            .await
            .unwrap(),
        "mindy@globex.example"
    );
    // Without an id_token the address comes from tokeninfo.
    tokens.id_claims = None;
    assert_eq!(
        g.account_address(Capability::Calendar, &tokens)
            .await
            .unwrap(),
        "mindy@globex.example"
    );
    // Gmail is not part of a calendar grant.
    assert_eq!(
        reason(
            g.account_address(Capability::Inbox, &tokens)
                .await
                .unwrap_err()
        ),
        ReauthReason::MissingPermissions
    );
}

#[tokio::test]
async fn a_google_partial_grant_names_the_missing_scopes_and_a_retry_for_them_completes_the_grant()
{
    let w = start().await;
    let g = w.client(Provider::Google);
    let need = scopes::required(
        Provider::Google,
        Capability::Inbox,
        AccessLevel::SendAndView,
    );
    let a = begin(
        &g,
        scopes::request(
            Provider::Google,
            Capability::Inbox,
            AccessLevel::SendAndView,
        ),
        false,
    );
    let landing = w
        .sign_in(&a.url, "hank@globex.example", Answer::Tick(&[GMAIL_READ]))
        .await;
    let (code, granted) = code_of(&g, &a, &landing.query());
    assert_eq!(
        scope_names(&scopes::missing(Provider::Google, &granted.unwrap(), &need)),
        vec![GMAIL_SEND]
    );
    let tokens = g
        .exchange_code(&code, redirect_uri(Provider::Google), &a.verifier)
        .await
        .unwrap();
    let missing = scopes::missing(Provider::Google, &tokens.scopes, &need);
    assert_eq!(scope_names(&missing), vec![GMAIL_SEND]);
    assert!(missing[0].purpose.starts_with("Send the emails"));

    // Ask again for just the missing scope, with include_granted_scopes.
    let mut retry_scopes: Vec<String> = scopes::sign_in(Provider::Google)
        .iter()
        .map(|n| n.scope.to_owned())
        .collect();
    retry_scopes.extend(missing.iter().map(|n| n.scope.to_owned()));
    let b = begin(&g, retry_scopes, true);
    assert_eq!(
        query_map(b.url.query().unwrap())["include_granted_scopes"],
        "true"
    );
    let landing = w
        .sign_in(&b.url, "hank@globex.example", Answer::AcceptAll)
        .await;
    let (code, _) = code_of(&g, &b, &landing.query());
    let tokens = g
        .exchange_code(&code, redirect_uri(Provider::Google), &b.verifier)
        .await
        .unwrap();
    assert!(
        scopes::missing(Provider::Google, &tokens.scopes, &need).is_empty(),
        "{:?}",
        tokens.scopes
    );
}

#[tokio::test]
async fn an_initech_user_needs_admin_approval_until_an_admin_consents_for_the_organization() {
    let w = start().await;
    let ms = w.client_with(Provider::Microsoft, MS_SECRET, Some("initech.example"));
    let req = scopes::request(
        Provider::Microsoft,
        Capability::Calendar,
        AccessLevel::SendAndView,
    );
    let a = begin(&ms, req.clone(), false);
    let page = w
        .sign_in(&a.url, "peter@initech.example", Answer::AcceptAll)
        .await
        .page();
    // Microsoft (and the sandbox) show "Need admin approval" as a page: hirewire never sees AADSTS90094 in a
    // redirect. Leaving the page sends a plain access_denied (AADSTS65004).
    assert!(page.contains("AADSTS90094"), "{page}");
    let back = w.leave_error_page(&page).await.query();
    assert!(matches!(
        ms.parse_callback(&back),
        Callback::Error {
            error: ProviderError::AccessDenied(Provider::Microsoft),
            ..
        }
    ));
    // If a redirect does carry the code (Microsoft's admin-consent workflow can), it is recognized.
    assert!(matches!(
        ms.parse_callback("error=access_denied&error_description=AADSTS90094%3A+The+grant+requires+admin+permission.&state=x"),
        Callback::Error { error: ProviderError::NeedAdminApproval(Provider::Microsoft), .. }
    ));

    // An admin consents through the admin-consent URL.
    let consent_url = ms
        .admin_consent_url(redirect_uri(Provider::Microsoft), "ac-1")
        .unwrap();
    assert_eq!(consent_url.path(), "/initech.example/v2.0/adminconsent");
    let non_admin = w
        .sign_in(&consent_url, "peter@initech.example", Answer::AcceptAll)
        .await
        .page();
    assert!(non_admin.contains("Need admin approval"), "{non_admin}");
    let back = w
        .sign_in(&consent_url, "bill@initech.example", Answer::AcceptAll)
        .await
        .query();
    match ms.parse_admin_consent_callback(&back) {
        AdminConsentCallback::Granted {
            tenant,
            scopes,
            state,
        } => {
            assert_eq!(tenant, INITECH_TENANT_ID);
            assert_eq!(state.as_deref(), Some("ac-1"));
            assert!(
                scopes.contains(&"Calendars.ReadWrite".to_owned()),
                "{scopes:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Now Peter connects without any consent screen.
    let b = begin(&ms, req, false);
    let landing = w
        .sign_in(&b.url, "peter@initech.example", Answer::AcceptAll)
        .await;
    let (code, _) = code_of(&ms, &b, &landing.query());
    let tokens = ms
        .exchange_code(&code, redirect_uri(Provider::Microsoft), &b.verifier)
        .await
        .unwrap();
    assert_eq!(
        ms.account_address(Capability::Calendar, &tokens)
            .await
            .unwrap(),
        "peter@initech.example"
    );
}

#[tokio::test]
async fn an_admin_who_cancels_admin_consent_is_access_denied() {
    let w = start().await;
    let ms = w.client_with(Provider::Microsoft, MS_SECRET, Some("initech.example"));
    let url = ms
        .admin_consent_url(redirect_uri(Provider::Microsoft), "ac-2")
        .unwrap();
    let back = w
        .sign_in(&url, "bill@initech.example", Answer::Cancel)
        .await
        .query();
    assert_eq!(query_map(&back)["admin_consent"], "True");
    assert!(matches!(
        ms.parse_admin_consent_callback(&back),
        AdminConsentCallback::Error { error: ProviderError::AccessDenied(Provider::Microsoft), state }
            if state.as_deref() == Some("ac-2")
    ));
    assert!(matches!(
        w.client(Provider::Google)
            .admin_consent_url("http://x/cb", "s"),
        Err(ProviderError::NotSupported { .. })
    ));
}

#[tokio::test]
async fn a_recruiter_who_cancels_consent_is_access_denied_with_either_provider() {
    let w = start().await;
    for (provider, user) in [
        (Provider::Microsoft, "ben@acme.example"),
        (Provider::Google, "mindy@globex.example"),
    ] {
        let c = w.client(provider);
        let a = begin(
            &c,
            scopes::request(provider, Capability::Inbox, AccessLevel::ViewOnly),
            false,
        );
        let back = w.sign_in(&a.url, user, Answer::Cancel).await.query();
        match c.parse_callback(&back) {
            Callback::Error { state, error } => {
                assert_eq!(state.as_deref(), Some(a.state.as_str()));
                assert!(
                    matches!(error, ProviderError::AccessDenied(p) if p == provider),
                    "{error:?}"
                );
                assert!(error.user_message().contains("cancelled"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_misconfiguration_with_either_provider() {
    let w = start().await;
    for (provider, user) in [
        (Provider::Microsoft, "ben@acme.example"),
        (Provider::Google, "mindy@globex.example"),
    ] {
        let good = w.client(provider);
        let a = begin(
            &good,
            scopes::request(provider, Capability::Inbox, AccessLevel::ViewOnly),
            false,
        );
        let back = w.sign_in(&a.url, user, Answer::AcceptAll).await.query();
        let (code, _) = code_of(&good, &a, &back);
        let bad = w.client_with(provider, "not-the-secret", None);
        let err = bad
            .exchange_code(&code, redirect_uri(provider), &a.verifier)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Misconfigured { what: ConfigProblem::ClientSecret, provider: p } if p == provider),
            "{err:?}"
        );
        assert!(
            err.user_message().contains("client secret"),
            "{}",
            err.user_message()
        );
        assert!(!format!("{err:?} {err}").contains("not-the-secret"));
    }
}

#[tokio::test]
async fn a_redirect_uri_that_differs_from_the_authorize_one_is_a_misconfiguration() {
    let w = start().await;
    let ms = w.client(Provider::Microsoft);
    let a = begin(
        &ms,
        scopes::request(
            Provider::Microsoft,
            Capability::Inbox,
            AccessLevel::ViewOnly,
        ),
        false,
    );
    let back = w
        .sign_in(&a.url, "ben@acme.example", Answer::AcceptAll)
        .await
        .query();
    let (code, _) = code_of(&ms, &a, &back);
    let err = ms
        .exchange_code(
            &code,
            "http://127.0.0.1:8080/oauth/microsoft/callback",
            &a.verifier,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Misconfigured {
                what: ConfigProblem::RedirectUri,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn revoked_consent_at_microsoft_needs_reauthorization_for_consent() {
    let w = start().await;
    let ms = w.client(Provider::Microsoft);
    let a = begin(
        &ms,
        scopes::request(Provider::Microsoft, Capability::Calendar, AccessLevel::Off),
        false,
    );
    let back = w
        .sign_in(&a.url, "ben@acme.example", Answer::AcceptAll)
        .await
        .query();
    let (code, _) = code_of(&ms, &a, &back);
    let tokens = ms
        .exchange_code(&code, redirect_uri(Provider::Microsoft), &a.verifier)
        .await
        .unwrap();
    w.control(
        Method::POST,
        "/_sandbox/users/ben@acme.example/revoke-grant",
        Some(json!({})),
    )
    .await;
    let err = ms
        .refresh(tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(err.user_message().contains("Authorize again"));
    assert_eq!(reason(err), ReauthReason::ConsentRevoked);
}
