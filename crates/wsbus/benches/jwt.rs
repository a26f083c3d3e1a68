//! Cost of `TokenVerifier::verify` per algorithm, for a token with five
//! claims: the work added to every authenticated handshake.
//!
//! `cargo bench -p wsbus --bench jwt`

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use wsbus::auth::{AuthConfig, Secret, TokenVerifier};

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn pem_verifier(pem: &[u8]) -> TokenVerifier {
    TokenVerifier::new(AuthConfig {
        jwt_public_key_pem: Some(pem.to_vec()),
        issuer: Some("https://idp.example".into()),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let claims = json!({
        "sub": "user-1234",
        "name": "Ann Example",
        "iss": "https://idp.example",
        "exp": NOW + 3600,
        "channels": ["/chat/**", "/presence/*"],
    });
    let token =
        |alg: Algorithm, key: &EncodingKey| encode(&Header::new(alg), &claims, key).unwrap();
    let cases = [
        (
            "HS256",
            TokenVerifier::new(AuthConfig {
                jwt_secret: Some(Secret::new(SECRET)),
                issuer: Some("https://idp.example".into()),
                ..AuthConfig::default()
            })
            .unwrap(),
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        (
            "RS256",
            pem_verifier(include_bytes!("../tests/keys/rsa_public.pem")),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_der(&der(include_str!("../tests/keys/rsa_private.pem"))),
            ),
        ),
        (
            "ES256",
            pem_verifier(include_bytes!("../tests/keys/ec_public.pem")),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_der(&der(include_str!("../tests/keys/ec_private.pem"))),
            ),
        ),
        (
            "EdDSA",
            pem_verifier(include_bytes!("../tests/keys/ed25519_public.pem")),
            token(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_der(&der(include_str!("../tests/keys/ed25519_private.pem"))),
            ),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let mut group = c.benchmark_group("verify");
    for (name, verifier, token) in &cases {
        // A wrong result would make the numbers meaningless.
        assert!(
            rt.block_on(verifier.verify_at(token, now)).is_ok(),
            "{name}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(verifier.verify_at(black_box(token), black_box(now))))
        });
    }
    group.finish();
}

// criterion's macros define undocumented `pub fn`s.
#[allow(missing_docs)]
mod entry {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30);
        targets = bench_verify
    }
}
criterion_main!(entry::benches);
