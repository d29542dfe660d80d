//! Compact JWS for the sandbox's tokens.
//!
//! - OIDC `id_token`s: HS256, keyed with the client's own secret (OpenID Connect Core §10.1 allows exactly this
//!   for confidential clients), so a client can verify them without a JWKS endpoint.
//! - Pub/Sub push tokens: RS256 with a fixed **test** key (`push_test_key.pem`, checked in on purpose: it
//!   signs nothing outside the sandbox), published as a JWKS at `/oauth2/v3/certs` like Google's. `ring`
//!   signs; it cannot generate RSA keys, hence the file.

use base64::Engine;
use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
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

const PUSH_KEY_PEM: &str = include_str!("push_test_key.pem");

struct PushKey {
    pair: RsaKeyPair,
    kid: String,
}

fn push_key() -> &'static PushKey {
    static KEY: OnceLock<PushKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let b64: String = PUSH_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(b64).expect("push test key is base64");
        let pair = RsaKeyPair::from_pkcs8(&der).expect("push test key is a PKCS#8 RSA key");
        // Google's key ids are 40 hex digits; derive ours from the public key so it changes with the key.
        let kid: String = Sha256::digest(pair.public_key().as_ref())[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PushKey { pair, kid }
    })
}

/// Key id (`kid`) of the push signing key.
pub fn push_key_id() -> &'static str {
    &push_key().kid
}

/// Signs `claims` as an RS256 JWT with the push test key (header carries its `kid`).
pub fn sign_rs256(claims: &Value) -> String {
    let key = push_key();
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair
        .sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .expect("RSA signing");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The JWKS document (`{"keys": [...]}`) that verifies [`sign_rs256`] tokens, in the shape of Google's
/// `https://www.googleapis.com/oauth2/v3/certs`.
pub fn jwks() -> Value {
    let key = push_key();
    let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.pair.public());
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let (n, e) = (strip(&parts.n), strip(&parts.e));
    json!({"keys": [{
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": key.kid,
        "n": URL_SAFE_NO_PAD.encode(n),
        "e": URL_SAFE_NO_PAD.encode(e),
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rs256_tokens_verify_with_the_published_jwks() {
        let t = sign_rs256(&json!({"aud": "x"}));
        let jwks = jwks();
        let k = &jwks["keys"][0];
        let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(k["e"].as_str().unwrap()).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert!(
            public
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    input.as_bytes(),
                    &sig
                )
                .is_ok()
        );
        let mut forged = input.as_bytes().to_vec();
        forged[0] ^= 1;
        assert!(
            public
                .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &forged, &sig)
                .is_err()
        );
        assert_eq!(k["kid"], push_key_id());
    }

    #[test]
    fn signed_tokens_verify_only_with_their_key() {
        let t = sign_hs256(&json!({"sub": "1"}), "k1");
        assert_eq!(verify_hs256(&t, "k1").unwrap()["sub"], "1");
        assert!(verify_hs256(&t, "k2").is_none());
    }
}
