//! `wsbus::auth` against a JWKS endpoint: an HTTP server on 127.0.0.1 that
//! serves a key set, then junk, then nothing. Request counts prove the cache,
//! the refresh floor and the single flight.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wsbus::auth::{AuthConfig, FETCH_TIMEOUT, Secret, TokenError, TokenVerifier};

const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// The DER inside a PEM fixture.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_der(&der(include_str!("keys/rsa_private.pem")))
}

fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_der(&der(include_str!("keys/rsa2_private.pem")))
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_der(&der(include_str!("keys/ec_private.pem")))
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_der(&der(include_str!("keys/ed25519_private.pem")))
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

/// jsonwebtoken cannot make an Ed25519 JWK: the key is the last 32 bytes of
/// the SPKI.
fn ed_jwk(kid: &str) -> Value {
    let spki = der(include_str!("keys/ed25519_public.pem"));
    let x = URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]);
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"})
}

fn jwks(keys: &[Value]) -> String {
    // Round-trip through JwkSet to be sure the set is what a provider sends.
    let set: JwkSet = serde_json::from_value(json!({ "keys": keys })).unwrap();
    serde_json::to_string(&set).unwrap()
}

fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, sub: &str) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    encode(
        &header,
        &json!({"sub": sub, "exp": NOW + 600, "iss": "https://idp"}),
        key,
    )
    .unwrap()
}

/// What the test server answers.
#[derive(Clone)]
enum Reply {
    Jwks(String),
    Junk,
    Status(u16),
    Huge,
    /// Accept the request and never answer.
    Silent,
}

struct JwksServer {
    addr: std::net::SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(reply));
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (r, h, p) = (reply.clone(), hits.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (r, h, p) = (r.clone(), h.clone(), p.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (r, h, p) = (r.clone(), h.clone(), p.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            p.lock().unwrap().push(req.uri().to_string());
                            let reply = r.lock().unwrap().clone();
                            let (status, body) = match reply {
                                Reply::Jwks(body) => (200, body),
                                Reply::Junk => (200, "<html>not a key set</html>".to_owned()),
                                Reply::Status(code) => (code, String::new()),
                                Reply::Huge => (
                                    200,
                                    format!("{{\"keys\": [\"{}\"]}}", "x".repeat(300 * 1024)),
                                ),
                                Reply::Silent => std::future::pending().await,
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            reply,
            hits,
            paths,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop accepting: later connections are refused.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn verifier(url: String, floor: Duration) -> TokenVerifier {
    TokenVerifier::new(AuthConfig {
        jwks_url: Some(url),
        issuer: Some("https://idp".into()),
        jwks_refresh_floor: floor,
        ..AuthConfig::default()
    })
    .unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn jwks_keys_are_fetched_once_and_cached() {
    let set = jwks(&[
        jwk(&rsa_key(), Algorithm::RS256, "k1"),
        jwk(&ec_key(), Algorithm::ES256, "e1"),
        ed_jwk("d1"),
    ]);
    let server = JwksServer::start(Reply::Jwks(set)).await;
    let v = verifier(server.url(), HOUR);
    assert_eq!(server.hits(), 0, "nothing is fetched before it is needed");

    let c = v
        .verify_at(
            &token(&rsa_key(), Algorithm::RS256, Some("k1"), "ann"),
            now(),
        )
        .await;
    assert_eq!(c.unwrap().sub, "ann");
    assert_eq!(server.hits(), 1);
    for t in [
        token(&rsa_key(), Algorithm::RS256, Some("k1"), "bob"),
        token(&ec_key(), Algorithm::ES256, Some("e1"), "cy"),
        token(&ed_key(), Algorithm::EdDSA, Some("d1"), "di"),
    ] {
        let r = v.verify_at(&t, now()).await;
        assert!(r.is_ok(), "{r:?}");
    }
    // RS384 with the same RSA key: the JWK's `alg` pins RS256.
    let t = token(&rsa_key(), Algorithm::RS384, Some("k1"), "eve");
    assert_eq!(
        v.verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    // A kid naming a key of another type.
    let t = token(&rsa_key(), Algorithm::RS256, Some("e1"), "eve");
    assert_eq!(
        v.verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(server.hits(), 1, "cached keys are not fetched again");
    // Clones share the cache.
    let clone = v.clone();
    let t = token(&ec_key(), Algorithm::ES256, Some("e1"), "fay");
    assert!(clone.verify_at(&t, now()).await.is_ok());
    assert_eq!(server.hits(), 1);
    assert_eq!(*server.paths.lock().unwrap(), ["/.well-known/jwks.json"]);
}

#[tokio::test]
async fn unknown_kid_refreshes_at_most_once_per_floor() {
    let server = JwksServer::start(Reply::Jwks(jwks(&[jwk(
        &rsa_key(),
        Algorithm::RS256,
        "k1",
    )])))
    .await;
    let v = verifier(server.url(), HOUR);
    assert!(
        v.verify_at(&token(&rsa_key(), Algorithm::RS256, Some("k1"), "a"), now())
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);
    // The fetch happened just now: unknown kids do not trigger another.
    for kid in ["k2", "k3", "made-up", ""] {
        let t = token(&rsa2_key(), Algorithm::RS256, Some(kid), "a");
        assert_eq!(
            v.verify_at(&t, now()).await,
            Err(TokenError::UnknownKey),
            "{kid}"
        );
    }
    assert_eq!(server.hits(), 1, "the floor holds");
}

#[tokio::test]
async fn rotation_is_picked_up_after_the_floor() {
    let server = JwksServer::start(Reply::Jwks(jwks(&[jwk(
        &rsa_key(),
        Algorithm::RS256,
        "k1",
    )])))
    .await;
    // Floor zero: every miss may fetch (what 30 s later looks like).
    let v = verifier(server.url(), Duration::ZERO);
    let old = token(&rsa_key(), Algorithm::RS256, Some("k1"), "a");
    let new = token(&rsa2_key(), Algorithm::RS256, Some("k2"), "b");
    assert!(v.verify_at(&old, now()).await.is_ok());
    assert_eq!(v.verify_at(&new, now()).await, Err(TokenError::UnknownKey));
    assert_eq!(server.hits(), 2);
    server.set(Reply::Jwks(jwks(&[jwk(
        &rsa2_key(),
        Algorithm::RS256,
        "k2",
    )])));
    assert_eq!(v.verify_at(&new, now()).await.unwrap().sub, "b");
    assert_eq!(server.hits(), 3);
    // k1 is still cached until something refreshes the set; here the next
    // miss did, so k1 is gone.
    assert_eq!(v.verify_at(&old, now()).await, Err(TokenError::UnknownKey));
    assert_eq!(server.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_fetch() {
    let server =
        JwksServer::start(Reply::Jwks(jwks(&[jwk(&ec_key(), Algorithm::ES256, "e1")]))).await;
    // Floor zero, so only the single flight can keep this at one request.
    let v = verifier(server.url(), Duration::ZERO);
    let t = token(&ec_key(), Algorithm::ES256, Some("e1"), "a");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (v, t) = (v.clone(), t.clone());
            tokio::spawn(async move { v.verify_at(&t, now()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 1);
}

/// Collects log output, to check what the JWKS warnings say.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    fn warnings(&self) -> usize {
        self.text().lines().filter(|l| l.contains("WARN")).count()
    }
}

#[tokio::test]
async fn endpoint_junk_or_down_keeps_the_cache() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = JwksServer::start(Reply::Jwks(jwks(&[jwk(
        &rsa_key(),
        Algorithm::RS256,
        "k1",
    )])))
    .await;
    let url = format!("{}?api_key=sekrit", server.url());
    let v = verifier(url, Duration::ZERO);
    let known = token(&rsa_key(), Algorithm::RS256, Some("k1"), "a");
    let unknown = token(&rsa2_key(), Algorithm::RS256, Some("k2"), "b");
    assert!(v.verify_at(&known, now()).await.is_ok());
    assert_eq!(capture.warnings(), 0);

    for (i, reply) in [
        Reply::Junk,
        Reply::Status(500),
        Reply::Huge,
        Reply::Jwks("{}".into()),
    ]
    .into_iter()
    .enumerate()
    {
        server.set(reply);
        assert_eq!(
            v.verify_at(&unknown, now()).await,
            Err(TokenError::KeysUnavailable)
        );
        assert_eq!(capture.warnings(), i + 1, "one warning per failed fetch");
        // The cached key still works, without a fetch.
        let hits = server.hits();
        assert!(v.verify_at(&known, now()).await.is_ok());
        assert_eq!(server.hits(), hits);
    }

    server.stop().await;
    assert_eq!(
        v.verify_at(&unknown, now()).await,
        Err(TokenError::KeysUnavailable)
    );
    assert_eq!(capture.warnings(), 5);
    assert!(v.verify_at(&known, now()).await.is_ok());

    let log = capture.text();
    assert!(log.contains("wsbus::auth"), "{log}");
    assert!(log.contains("127.0.0.1"), "{log}");
    for why in ["not a JWKS", "status 500", "larger than", "connect"] {
        assert!(log.contains(why), "{why} not in {log}");
    }
    for secret in ["sekrit", &known[..40], &unknown[..40], "jwks.json"] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
}

#[tokio::test]
async fn unavailable_before_any_fetch() {
    // Bind then drop: the port refuses connections.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let v = verifier(format!("http://{addr}/jwks"), HOUR);
    let t = token(&rsa_key(), Algorithm::RS256, Some("k1"), "a");
    assert_eq!(
        v.verify_at(&t, now()).await,
        Err(TokenError::KeysUnavailable)
    );
    assert_eq!(v.prefetch_keys().await, Err(TokenError::KeysUnavailable));
    // https:// to a plain-HTTP server: the TLS handshake fails, cleanly.
    let server = JwksServer::start(Reply::Jwks(jwks(&[]))).await;
    let v = verifier(format!("https://{}/jwks", server.addr), HOUR);
    assert_eq!(
        v.verify_at(&t, now()).await,
        Err(TokenError::KeysUnavailable)
    );
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    let server = JwksServer::start(Reply::Silent).await;
    let v = verifier(server.url(), HOUR);
    let t = token(&rsa_key(), Algorithm::RS256, Some("k1"), "a");
    // Bounded by FETCH_TIMEOUT; the outer timeout only turns a hang into a
    // failure.
    let r = tokio::time::timeout(FETCH_TIMEOUT * 4, v.verify_at(&t, now())).await;
    assert_eq!(r.expect("no hang"), Err(TokenError::KeysUnavailable));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn prefetch_and_tokens_without_kid() {
    let server = JwksServer::start(Reply::Jwks(jwks(&[jwk(
        &rsa_key(),
        Algorithm::RS256,
        "k1",
    )])))
    .await;
    let v = verifier(server.url(), HOUR);
    assert_eq!(v.prefetch_keys().await, Ok(1));
    // No kid, one key that fits: used.
    let t = token(&rsa_key(), Algorithm::RS256, None, "a");
    assert!(v.verify_at(&t, now()).await.is_ok());
    // No kid, two keys that fit: ambiguous, none tried.
    server.set(Reply::Jwks(jwks(&[
        jwk(&rsa_key(), Algorithm::RS256, "k1"),
        jwk(&rsa2_key(), Algorithm::RS256, "k2"),
    ])));
    assert_eq!(v.prefetch_keys().await, Ok(2));
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn symmetric_keys_in_a_jwks_are_never_used() {
    let secret = b"a secret published in a key set!";
    let oct =
        json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret), "kid": "h1", "alg": "HS256"});
    let server = JwksServer::start(Reply::Jwks(jwks(&[oct]))).await;
    let v = verifier(server.url(), HOUR);
    let t = token(
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
        Some("h1"),
        "a",
    );
    assert_eq!(
        v.verify_at(&t, now()).await,
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(server.hits(), 0, "HS* never looks in the JWKS");
    // With a jwt_secret configured, HS256 goes to it, and only to it.
    let v = TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new("the configured secret, 32 bytes!")),
        jwks_url: Some(server.url()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(v.verify_at(&t, now()).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn pem_key_backs_up_the_jwks() {
    let server = JwksServer::start(Reply::Jwks(jwks(&[jwk(
        &rsa2_key(),
        Algorithm::RS256,
        "k2",
    )])))
    .await;
    let v = TokenVerifier::new(AuthConfig {
        jwt_public_key_pem: Some(include_bytes!("keys/rsa_public.pem").to_vec()),
        jwks_url: Some(server.url()),
        ..AuthConfig::default()
    })
    .unwrap();
    // Signed by the PEM key, naming a kid the set does not have.
    let t = token(&rsa_key(), Algorithm::RS256, Some("pem"), "a");
    assert!(v.verify_at(&t, now()).await.is_ok());
    // Without kid: the PEM key, no fetch needed.
    let t = token(&rsa_key(), Algorithm::RS256, None, "a");
    assert!(v.verify_at(&t, now()).await.is_ok());
    let t = token(&rsa2_key(), Algorithm::RS256, Some("k2"), "b");
    assert!(v.verify_at(&t, now()).await.is_ok());
    assert_eq!(server.hits(), 1);
}
