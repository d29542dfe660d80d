//! OIDC `id_token`s: compact JWS, HS256, keyed with the client's own secret (OpenID Connect Core §10.1
//! allows exactly this for confidential clients), so a client can verify them without a JWKS endpoint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Signs `claims` as an HS256 JWT with `key`.
pub fn sign_hs256(claims: &Value, key: &str) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "sandbox-hs256"});
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// Verifies an HS256 JWT and returns its claims.
pub fn verify_hs256(token: &str, key: &str) -> Option<Value> {
    let (input, sig) = token.rsplit_once('.')?;
    let (_, payload) = input.split_once('.')?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()?;
    mac.update(input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).ok()?).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// OIDC `at_hash`: left half of SHA-256 of the access token, base64url.
pub fn at_hash(access_token: &str) -> String {
    let d = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_only_with_their_key() {
        let t = sign_hs256(&json!({"sub": "1"}), "k1");
        assert_eq!(verify_hs256(&t, "k1").unwrap()["sub"], "1");
        assert!(verify_hs256(&t, "k2").is_none());
    }
}
