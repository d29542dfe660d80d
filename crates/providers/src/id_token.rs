//! Reading the claims of an `id_token`.
//!
//! The token comes straight from the provider's token endpoint over TLS in the code flow, which OpenID
//! Connect Core §3.1.3.7 accepts in place of checking the signature. hirewire uses the claims only to show
//! which address a grant belongs to, never to sign anyone in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::identity::IdClaims;

#[derive(Deserialize)]
struct Raw {
    sub: Option<String>,
    email: Option<String>,
    preferred_username: Option<String>,
    name: Option<String>,
    tid: Option<String>,
    hd: Option<String>,
}

/// The claims of a compact JWT, or `None` if it is not one.
pub(crate) fn claims(id_token: &str) -> Option<IdClaims> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let raw: Raw = serde_json::from_slice(&bytes).ok()?;
    Some(IdClaims {
        subject: raw.sub,
        email: raw.email,
        preferred_username: raw.preferred_username,
        name: raw.name,
        tenant_id: raw.tid,
        hosted_domain: raw.hd,
    })
}
