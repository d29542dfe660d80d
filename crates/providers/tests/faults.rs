//! The one HTTP client under sandbox faults: throttling and 5xx bursts are retried (with the recorded waits
//! honouring `Retry-After`) and then succeed; persistent ones surface as typed errors; `invalid_grant`
//! faults map to the right reauthorization reason.

mod common;

use std::time::Duration;

use common::*;
use hirewire_providers::scopes;
use hirewire_providers::{
    AccessLevel, Capability, IdentityClient, Provider, ProviderError, ReauthReason, TokenSet,
};
use serde_json::json;

async fn connected(w: &World, provider: Provider, user: &str) -> (IdentityClient, TokenSet) {
    let c = w.client(provider);
    let a = begin(
        &c,
        scopes::request(provider, Capability::Inbox, AccessLevel::SendAndView),
        false,
    );
    let back = w.sign_in(&a.url, user, Answer::AcceptAll).await.query();
    let (code, _) = code_of(&c, &a, &back);
    let tokens = c
        .exchange_code(&code, redirect_uri(provider), &a.verifier)
        .await
        .unwrap();
    (c, tokens)
}

#[tokio::test]
async fn throttled_token_requests_wait_for_retry_after_and_then_succeed() {
    let w = start().await;
    for (provider, user, endpoint) in [
        (Provider::Microsoft, "adele@acme.example", "ms.token"),
        (Provider::Google, "hank@globex.example", "google.token"),
    ] {
        let (c, tokens) = connected(&w, provider, user).await;
        w.sleeps.0.lock().unwrap().clear();
        w.arm_fault(json!({"endpoint": endpoint, "fault": {"kind": "throttle", "retry_after_secs": 2}, "count": 2}))
            .await;
        c.refresh(tokens.refresh_token.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(w.sleeps(), vec![Duration::from_secs(2); 2], "{provider:?}");
    }
}

#[tokio::test]
async fn a_burst_of_server_errors_on_the_profile_call_is_retried_with_backoff() {
    let w = start().await;
    for (provider, user, endpoint) in [
        (Provider::Microsoft, "adele@acme.example", "graph.me"),
        (
            Provider::Google,
            "hank@globex.example",
            "gmail.users.getProfile",
        ),
    ] {
        let (c, tokens) = connected(&w, provider, user).await;
        w.sleeps.0.lock().unwrap().clear();
        w.arm_fault(json!({"endpoint": endpoint, "fault": {"kind": "server_error", "status": 502}, "count": 3}))
            .await;
        assert_eq!(
            c.account_address(Capability::Inbox, &tokens).await.unwrap(),
            user
        );
        let sleeps = w.sleeps();
        assert_eq!(sleeps.len(), 3, "{provider:?}: {sleeps:?}");
        // Exponential with jitter in [d/2, d]: 0.5 s, 1 s, 2 s.
        for (i, s) in sleeps.iter().enumerate() {
            let full = Duration::from_millis(500) * (1 << i);
            assert!(*s >= full / 2 && *s <= full, "retry {i}: {s:?}");
        }
    }
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_retry_budget_with_throttled() {
    let w = start().await;
    let (c, tokens) = connected(&w, Provider::Microsoft, "adele@acme.example").await;
    w.sleeps.0.lock().unwrap().clear();
    w.arm_fault(
        json!({"endpoint": "graph.me", "fault": {"kind": "throttle", "retry_after_secs": 1}}),
    )
    .await;
    let err = c
        .account_address(Capability::Inbox, &tokens)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(w.sleeps().len(), 3, "three retries, then give up");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_retry_after_longer_than_the_cap_is_returned_at_once_instead_of_slept() {
    let w = start().await;
    let (c, tokens) = connected(&w, Provider::Google, "hank@globex.example").await;
    w.sleeps.0.lock().unwrap().clear();
    w.arm_fault(json!({"endpoint": "google.token", "fault": {"kind": "throttle", "retry_after_secs": 120}, "count": 1}))
        .await;
    let err = c
        .refresh(tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert!(w.sleeps().is_empty());
}

#[tokio::test]
async fn a_code_exchange_is_not_retried_after_an_ambiguous_server_error() {
    let w = start().await;
    let c = w.client(Provider::Microsoft);
    let a = begin(
        &c,
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
    let (code, _) = code_of(&c, &a, &back);
    w.sleeps.0.lock().unwrap().clear();
    w.arm_fault(json!({"endpoint": "ms.token", "fault": {"kind": "server_error", "status": 500}, "count": 1}))
        .await;
    let err = c
        .exchange_code(&code, redirect_uri(Provider::Microsoft), &a.verifier)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert!(
        w.sleeps().is_empty(),
        "a code is single use: no blind retry"
    );
    // 503 says "not processed": that one is retried even for a code.
    w.arm_fault(json!({"endpoint": "ms.token", "fault": {"kind": "server_error", "status": 503}, "count": 1}))
        .await;
    c.exchange_code(&code, redirect_uri(Provider::Microsoft), &a.verifier)
        .await
        .unwrap();
    assert_eq!(w.sleeps().len(), 1);
}

#[tokio::test]
async fn invalid_grant_faults_map_to_the_right_reauthorization_reason() {
    let w = start().await;
    let (ms, ms_tokens) = connected(&w, Provider::Microsoft, "adele@acme.example").await;
    let (g, g_tokens) = connected(&w, Provider::Google, "hank@globex.example").await;
    for (fault, want) in [
        ("consent_required", ReauthReason::ConsentRevoked),
        ("sessions_revoked", ReauthReason::SessionRevoked),
        ("inactive", ReauthReason::Inactive),
        ("expired", ReauthReason::ExpiredOrRevoked),
    ] {
        w.arm_fault(json!({"endpoint": "ms.token", "fault": {"kind": "invalid_grant", "reason": fault}, "count": 1}))
            .await;
        match ms.refresh(ms_tokens.refresh_token.as_ref().unwrap()).await {
            Err(ProviderError::NeedsReauthorization {
                reason,
                provider: Provider::Microsoft,
            }) => {
                assert_eq!(reason, want, "{fault}")
            }
            other => panic!("{fault}: {other:?}"),
        }
        w.arm_fault(json!({"endpoint": "google.token", "fault": {"kind": "invalid_grant", "reason": fault}, "count": 1}))
            .await;
        match g.refresh(g_tokens.refresh_token.as_ref().unwrap()).await {
            Err(ProviderError::NeedsReauthorization {
                reason,
                provider: Provider::Google,
            }) => {
                assert_eq!(reason, ReauthReason::ExpiredOrRevoked, "{fault}")
            }
            other => panic!("{fault}: {other:?}"),
        }
    }
    // The faults were one-shot: both grants still work.
    ms.refresh(ms_tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    g.refresh(g_tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rejected_access_token_asks_for_a_refresh() {
    let w = start().await;
    let (c, tokens) = connected(&w, Provider::Microsoft, "adele@acme.example").await;
    w.arm_fault(json!({"endpoint": "graph.me", "fault": {"kind": "invalid_token"}, "count": 1}))
        .await;
    let err = c
        .account_address(Capability::Inbox, &tokens)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::TokenRejected), "{err:?}");
}
