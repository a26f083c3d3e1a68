//! Verifier tests with static keys (JWKS tests: `tests/jwt.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const RSA_PRIV: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
const RSA_PUB: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
const RSA2_PRIV: &[u8] = include_bytes!("../../tests/keys/rsa2_private.pem");
const EC_PRIV: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
const EC_PUB: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
const ED_PRIV: &[u8] = include_bytes!("../../tests/keys/ed25519_private.pem");
const ED_PUB: &[u8] = include_bytes!("../../tests/keys/ed25519_public.pem");
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;

/// The DER inside a PEM fixture.
fn der(pem: &[u8]) -> Vec<u8> {
    keys::pem_block(std::str::from_utf8(pem).unwrap())
        .unwrap()
        .1
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn claims() -> Value {
    json!({"sub": "alice", "name": "Alice", "exp": NOW + 60, "channels": ["/chat/**"]})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn rs(claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_der(&der(RSA_PRIV)),
        claims,
    )
}

fn es(claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_der(&der(EC_PRIV)),
        claims,
    )
}

fn ed(claims: &Value) -> String {
    sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_der(&der(ED_PRIV)),
        claims,
    )
}

fn secret_verifier() -> TokenVerifier {
    TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn pem_verifier(pem: &[u8]) -> TokenVerifier {
    TokenVerifier::new(AuthConfig {
        jwt_public_key_pem: Some(pem.to_vec()),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with a hand-made header and payload, signed (when `key` is set)
/// with HS256 over exactly those bytes.
fn forge(header: &Value, payload: &Value, hmac_key: Option<&[u8]>) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = match hmac_key {
        Some(key) => jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(key),
            Algorithm::HS256,
        )
        .unwrap(),
        None => String::new(),
    };
    format!("{message}.{signature}")
}

#[tokio::test]
async fn each_algorithm_verifies() {
    let c = secret_verifier()
        .verify_at(&hs(&claims()), now())
        .await
        .unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!(c.name.as_deref(), Some("Alice"));
    assert_eq!(c.channels, Some(vec!["/chat/**".to_owned()]));
    assert_eq!(
        c.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(NOW + 60))
    );
    for (alg, key) in [(Algorithm::HS384, "x"), (Algorithm::HS512, "y")] {
        let secret = format!("{SECRET}{key}");
        let v = TokenVerifier::new(AuthConfig {
            jwt_secret: Some(Secret::new(secret.clone())),
            ..AuthConfig::default()
        })
        .unwrap();
        let t = sign(alg, &EncodingKey::from_secret(secret.as_bytes()), &claims());
        assert!(v.verify_at(&t, now()).await.is_ok(), "{alg:?}");
    }
    assert!(
        pem_verifier(RSA_PUB)
            .verify_at(&rs(&claims()), now())
            .await
            .is_ok()
    );
    let pkcs1 = include_bytes!("../../tests/keys/rsa_public_pkcs1.pem");
    let c = pem_verifier(pkcs1).verify_at(&rs(&claims()), now()).await;
    assert_eq!(c.unwrap().sub, "alice");
    let ps = sign(
        Algorithm::PS256,
        &EncodingKey::from_rsa_der(&der(RSA_PRIV)),
        &claims(),
    );
    assert!(pem_verifier(RSA_PUB).verify_at(&ps, now()).await.is_ok());
    assert!(
        pem_verifier(EC_PUB)
            .verify_at(&es(&claims()), now())
            .await
            .is_ok()
    );
    assert!(
        pem_verifier(ED_PUB)
            .verify_at(&ed(&claims()), now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_key_is_bad_signature() {
    let other = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_der(&der(RSA2_PRIV)),
        &claims(),
    );
    let err = pem_verifier(RSA_PUB)
        .verify_at(&other, now())
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        &claims(),
    );
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::BadSignature)
    );
    // A payload swapped under a valid signature.
    let good = hs(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = json!({"sub": "root", "exp": NOW + 60});
    let tampered = format!("{}.{}.{}", parts[0], b64(&evil), parts[2]);
    assert_eq!(
        secret_verifier().verify_at(&tampered, now()).await,
        Err(TokenError::BadSignature)
    );
}

#[tokio::test]
async fn alg_none_refused() {
    let payload = json!({"sub": "alice"});
    for alg in ["none", "None", "NONE"] {
        let t = forge(&json!({"alg": alg, "typ": "JWT"}), &payload, None);
        for v in [secret_verifier(), pem_verifier(RSA_PUB)] {
            assert_eq!(
                v.verify_at(&t, now()).await,
                Err(TokenError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
    }
    // Unknown algorithms, and a missing or non-string `alg`.
    let t = forge(&json!({"alg": "HS1"}), &payload, None);
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    let t = forge(&json!({"typ": "JWT"}), &payload, None);
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::Malformed)
    );
    let t = forge(&json!({"alg": 256}), &payload, None);
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::Malformed)
    );
}

#[tokio::test]
async fn algorithm_confusion_refused() {
    // The classic: HS256 keyed with the bytes of the RSA public key PEM.
    let t = forge(&json!({"alg": "HS256"}), &claims(), Some(RSA_PUB));
    assert_eq!(
        pem_verifier(RSA_PUB).verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    // A secret-only config never takes RS*/ES*/EdDSA, and vice versa.
    for t in [rs(&claims()), es(&claims()), ed(&claims())] {
        assert_eq!(
            secret_verifier().verify_at(&t, now()).await,
            Err(TokenError::AlgorithmNotAllowed)
        );
    }
    assert_eq!(
        pem_verifier(RSA_PUB).verify_at(&hs(&claims()), now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(
        pem_verifier(RSA_PUB).verify_at(&es(&claims()), now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(
        pem_verifier(EC_PUB).verify_at(&rs(&claims()), now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(
        pem_verifier(ED_PUB).verify_at(&es(&claims()), now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    // ES384 on a P-256 key: same family, wrong curve.
    let t = forge(&json!({"alg": "ES384"}), &claims(), None);
    assert_eq!(
        pem_verifier(EC_PUB).verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    // Both configured: each token goes to its own key kind only.
    let both = TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        jwt_public_key_pem: Some(RSA_PUB.to_vec()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(both.verify_at(&hs(&claims()), now()).await.is_ok());
    assert!(both.verify_at(&rs(&claims()), now()).await.is_ok());
    let t = forge(&json!({"alg": "HS256"}), &claims(), Some(RSA_PUB));
    assert_eq!(
        both.verify_at(&t, now()).await,
        Err(TokenError::BadSignature)
    );
}

#[tokio::test]
async fn header_urls_are_ignored_and_crit_refused() {
    // `jku`/`x5u`/`jwk` point elsewhere: never fetched, never used.
    let mut header = Header::new(Algorithm::HS256);
    header.jku = Some("http://127.0.0.1:1/evil.json".into());
    header.x5u = Some("http://127.0.0.1:1/evil.pem".into());
    let t = encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert!(secret_verifier().verify_at(&t, now()).await.is_ok());
    let t = forge(
        &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        &claims(),
        Some(SECRET.as_bytes()),
    );
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::Malformed)
    );
}

#[tokio::test]
async fn time_claims_use_the_leeway() {
    let v = secret_verifier();
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let t = hs(&json!({"sub": "a", "exp": NOW}));
    assert!(v.verify_at(&t, at(NOW + 4)).await.is_ok());
    assert_eq!(v.verify_at(&t, at(NOW + 5)).await, Err(TokenError::Expired));
    let t = hs(&json!({"sub": "a", "nbf": NOW}));
    assert!(v.verify_at(&t, at(NOW - 5)).await.is_ok());
    assert_eq!(
        v.verify_at(&t, at(NOW - 6)).await,
        Err(TokenError::NotYetValid)
    );
    // No `exp`: accepted, forever.
    let t = hs(&json!({"sub": "a"}));
    let c = v.verify_at(&t, at(u32::MAX as u64)).await.unwrap();
    assert_eq!(c.expires_at, None);
    // Leeway is configurable.
    let strict = TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    })
    .unwrap();
    let t = hs(&json!({"sub": "a", "exp": NOW}));
    assert_eq!(
        strict.verify_at(&t, at(NOW)).await,
        Err(TokenError::Expired)
    );
    // `verify` uses the real clock: a token from 2023 is long expired.
    assert_eq!(v.verify(&hs(&claims())).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn issuer_and_audience_when_configured() {
    let v = TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        issuer: Some("https://idp".into()),
        audience: Some("wsbus".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let ok = hs(&json!({"sub": "a", "iss": "https://idp", "aud": ["x", "wsbus"]}));
    let c = v.verify_at(&ok, now()).await.unwrap();
    assert_eq!(c.extra.get("iss"), Some(&json!("https://idp")));
    let ok = hs(&json!({"sub": "a", "iss": "https://idp", "aud": "wsbus"}));
    assert!(v.verify_at(&ok, now()).await.is_ok());
    let t = hs(&json!({"sub": "a", "iss": "https://other", "aud": "wsbus"}));
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::WrongIssuer));
    let t = hs(&json!({"sub": "a", "aud": "wsbus"}));
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::WrongIssuer));
    let t = hs(&json!({"sub": "a", "iss": "https://idp", "aud": ["x"]}));
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::WrongAudience));
    // Not configured: not checked.
    let t = hs(&json!({"sub": "a", "iss": "anyone", "aud": "anything"}));
    assert!(secret_verifier().verify_at(&t, now()).await.is_ok());
}

#[tokio::test]
async fn sub_required() {
    let t = hs(&json!({"name": "nobody", "exp": NOW + 60}));
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::MissingSubject)
    );
    let t = hs(&json!({"sub": 7}));
    assert_eq!(
        secret_verifier().verify_at(&t, now()).await,
        Err(TokenError::Malformed)
    );
}

#[tokio::test]
async fn garbage_and_oversize() {
    let v = secret_verifier();
    let huge = "a".repeat(64 * 1024);
    assert_eq!(v.verify_at(&huge, now()).await, Err(TokenError::TooLarge));
    let huge_jwt = format!(
        "{}.{}.{}",
        "e".repeat(30_000),
        "e".repeat(30_000),
        "e".repeat(5_000)
    );
    assert_eq!(
        v.verify_at(&huge_jwt, now()).await,
        Err(TokenError::TooLarge)
    );
    assert_eq!(v.verify_at("", now()).await, Err(TokenError::Missing));
    assert_eq!(v.verify_at("   ", now()).await, Err(TokenError::Missing));
    let good = hs(&claims());
    let p: Vec<&str> = good.split('.').collect();
    let bad_b64 = format!("{}.{}.{}=", p[0], p[1], p[2]);
    for t in [
        "garbage",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "...",
        "!!.??.**",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig",
        "bm90IGpzb24.e30.sig",
        &bad_b64,
        &format!("{}.{}.", p[0], p[1]),
        &format!("{}.{}.{}", p[0], b64(&json!([1, 2])), p[2]),
        "\u{0}\u{1}.\u{fffd}.é",
    ] {
        let err = v.verify_at(t, now()).await.unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed | TokenError::BadSignature),
            "{t:?}: {err:?}"
        );
    }
    // A valid header with a payload that is not an object: refused after
    // the signature check (which it passes).
    let t = forge(
        &json!({"alg": "HS256"}),
        &json!("just a string"),
        Some(SECRET.as_bytes()),
    );
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::Malformed));
}

#[tokio::test]
async fn errors_never_show_the_token() {
    let v = secret_verifier();
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"wrong"),
        &claims(),
    );
    let err = v.verify_at(&t, now()).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}"), err.www_authenticate()] {
        assert!(!shown.contains(&t[..20]), "{shown}");
    }
    assert_eq!(
        err.www_authenticate(),
        r#"Bearer error="invalid_token", error_description="Bad signature""#
    );
    assert_eq!(
        TokenError::Missing.www_authenticate(),
        r#"Bearer error="invalid_token", error_description="Missing token""#
    );
    let dbg = format!("{v:?}");
    assert!(!dbg.contains(SECRET), "{dbg}");
    let cfg = AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    };
    assert!(!format!("{cfg:?}").contains(SECRET));
}

#[test]
fn reasons_and_labels() {
    use TokenError::*;
    let all = [
        Missing,
        Malformed,
        BadSignature,
        Expired,
        NotYetValid,
        WrongIssuer,
        WrongAudience,
        MissingSubject,
        UnknownKey,
        AlgorithmNotAllowed,
        TooLarge,
        KeysUnavailable,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(TokenError::label).collect();
    assert_eq!(labels.len(), all.len());
    for e in all {
        assert!(
            e.label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
        assert_eq!(e.to_string(), e.reason());
    }
    assert_eq!(Expired.reason(), "Token expired");
    assert_eq!(TooLarge.label(), "too_large");
}

#[test]
fn config_errors() {
    let err = |c: AuthConfig| TokenVerifier::new(c).unwrap_err();
    assert_eq!(err(AuthConfig::default()), AuthConfigError::NoKey);
    let e = err(AuthConfig {
        jwt_secret: Some(Secret::new("")),
        ..AuthConfig::default()
    });
    assert_eq!(e, AuthConfigError::EmptySecret);
    let e = err(AuthConfig {
        jwt_public_key_pem: Some(RSA_PRIV.to_vec()),
        ..AuthConfig::default()
    });
    let msg = e.to_string();
    assert!(
        msg.starts_with("auth.jwt_public_key_pem: ") && msg.contains("private key"),
        "{msg}"
    );
    assert!(!msg.contains("MII"));
    let e = err(AuthConfig {
        jwks_url: Some("ftp://x".into()),
        ..AuthConfig::default()
    });
    assert!(e.to_string().starts_with("auth.jwks_url: "));
    assert_eq!(AuthConfig::default().leeway, DEFAULT_LEEWAY);
}
