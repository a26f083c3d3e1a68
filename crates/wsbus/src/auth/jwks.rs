//! Keys from a JWKS URL (RFC 7517 §5), fetched and cached.
//!
//! Only the configured URL is ever fetched: a token's `jku`, `x5u` and `jwk`
//! header parameters are ignored (RFC 8725 §3.10 — a URL in the token would
//! let the token choose its own key).
//!
//! The cache belongs to one (issuer, URL) pair, the verifier's, so its
//! entries are keyed by `kid`. It is refreshed
//! * when a token names a `kid` it does not hold, at most once per
//!   [`AuthConfig::jwks_refresh_floor`] (default [`REFRESH_FLOOR`]), so a
//!   flood of tokens with made-up `kid`s costs one fetch per floor;
//! * in the background when it is older than [`AuthConfig::jwks_ttl`]
//!   (default [`JWKS_TTL`]), so rotated-out keys are dropped.
//!
//! Concurrent verifications that miss share one fetch: the fetch runs under
//! an async mutex, and a waiter that finds the generation changed when it
//! gets the lock uses that result instead of fetching again (single-flight).
//! A failed fetch (down, timeout, not 200, junk) keeps the cached keys and
//! logs one warning at target `wsbus::auth`, with the URL's host only.
//!
//! [`AuthConfig::jwks_refresh_floor`]: super::AuthConfig::jwks_refresh_floor
//! [`AuthConfig::jwks_ttl`]: super::AuthConfig::jwks_ttl

use std::collections::HashMap;
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use super::alg::Algorithm;
use super::keys::VerifyKey;
use super::{AuthConfigError, TokenError};

/// The least time between two fetches caused by unknown `kid`s. A key
/// rotation is picked up within this time; a flood of tokens with invented
/// `kid`s cannot turn into a flood of requests to the identity provider.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(30);

/// The age after which the cached JWKS is refreshed in the background, so a
/// key removed by the provider stops being accepted.
pub const JWKS_TTL: Duration = Duration::from_secs(10 * 60);

/// The time one fetch (connect, TLS, request, body) may take. Verifications
/// waiting for it wait at most this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS body accepted. Real sets are a few KiB (with `x5c`
/// certificate chains, tens of KiB); the cap bounds the memory a hostile or
/// broken endpoint can make us buffer.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The most keys kept from one JWKS; the rest are ignored. A provider
/// publishes a handful (current, next, previous).
pub const MAX_JWKS_KEYS: usize = 64;

/// Where the JWKS lives, parsed once from the configured URL.
struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host and port only: the path or query may carry an API key.
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, AuthConfigError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| AuthConfigError::InvalidJwksUrl("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(AuthConfigError::InvalidJwksUrl(
                    "scheme must be http or https",
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or(AuthConfigError::InvalidJwksUrl("no host in the URL"))?;
        if authority.as_str().contains('@') {
            return Err(AuthConfigError::InvalidJwksUrl(
                "credentials in the URL are not supported",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(AuthConfigError::InvalidJwksUrl("no host in the URL"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(tls_connector).transpose()?;
        Ok(Self {
            uri,
            host,
            port,
            tls,
        })
    }
}

/// A rustls client with Mozilla's roots (webpki-roots) and the ring
/// provider the rest of wsbus uses; HTTP/1.1 only.
fn tls_connector() -> Result<TlsConnector, AuthConfigError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| AuthConfigError::InvalidJwksUrl("TLS client configuration failed"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Why a fetch failed; for the log line, so it names no secret (the URL's
/// query and path are left out too: some providers put keys there).
#[derive(Debug)]
enum FetchError {
    Timeout,
    Connect(std::io::Error),
    Tls(std::io::Error),
    Http(hyper::Error),
    Status(StatusCode),
    TooLarge,
    Body,
    Json(&'static str),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => write!(f, "no answer within {FETCH_TIMEOUT:?}"),
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::Status(s) => write!(f, "status {s}"),
            Self::TooLarge => write!(f, "body larger than {MAX_JWKS_BYTES} bytes"),
            Self::Body => write!(f, "body read failed"),
            Self::Json(why) => write!(f, "not a JWKS: {why}"),
        }
    }
}

/// The keys of one successful fetch.
#[derive(Debug, Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    fn parse(body: &[u8]) -> Result<Self, FetchError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| FetchError::Json("bad JSON"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(FetchError::Json("no \"keys\" array"))?;
        let mut set = Self::default();
        for jwk in keys.iter().take(MAX_JWKS_KEYS) {
            match VerifyKey::from_jwk(jwk) {
                Ok((kid, key)) => {
                    let key = Arc::new(key);
                    if let Some(kid) = kid {
                        // RFC 7517 §4.5: kids should be unique; keep the first.
                        set.by_kid.entry(kid).or_insert_with(|| key.clone());
                    }
                    set.all.push(key);
                }
                Err(why) => tracing::debug!(target: "wsbus::auth", why, "JWKS key skipped"),
            }
        }
        Ok(set)
    }

    /// The key for a token: by `kid`; without one, the only key that allows
    /// `alg` (with several, which one is ambiguous and none is tried —
    /// trying them all would multiply the work of a bad token).
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => {
                let mut fitting = self.all.iter().filter(|k| k.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        }
    }
}

#[derive(Debug)]
struct State {
    keys: Arc<KeySet>,
    /// When the last successful fetch ended.
    fetched_at: Option<Instant>,
    /// When the last fetch, successful or not, started.
    attempted_at: Option<Instant>,
    /// Whether the last fetch failed.
    failing: bool,
    /// Incremented by every fetch, successful or not.
    generation: u64,
}

/// The JWKS cache of a verifier.
#[derive(Debug)]
pub(crate) struct Jwks {
    endpoint: Endpoint,
    floor: Duration,
    ttl: Duration,
    state: Mutex<State>,
    /// Held for the duration of a fetch: the single flight.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub(crate) fn new(url: &str, floor: Duration, ttl: Duration) -> Result<Self, AuthConfigError> {
        Ok(Self {
            endpoint: Endpoint::parse(url)?,
            floor,
            ttl,
            state: Mutex::new(State {
                keys: Arc::default(),
                fetched_at: None,
                attempted_at: None,
                failing: false,
                generation: 0,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data replaced whole; a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key a token with this `kid` and `alg` is to be checked against,
    /// fetching the JWKS if the cache cannot answer and the floor allows.
    pub(crate) async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, TokenError> {
        let (keys, generation, stale) = {
            let state = self.state();
            (
                state.keys.clone(),
                state.generation,
                self.refresh_due(&state),
            )
        };
        if let Some(key) = keys.find(kid, alg) {
            if stale {
                self.refresh_in_background();
            }
            return Ok(key.clone());
        }

        let _flight = self.fetching.lock().await;
        let fetch_now = {
            let state = self.state();
            // Someone else fetched while we waited: use their result.
            state.generation == generation
                && state
                    .attempted_at
                    .is_none_or(|at| at.elapsed() >= self.floor)
        };
        if fetch_now {
            self.fetch_locked().await;
        }
        let state = self.state();
        match state.keys.find(kid, alg) {
            Some(key) => Ok(key.clone()),
            None if state.failing || state.fetched_at.is_none() => Err(TokenError::KeysUnavailable),
            None => Err(TokenError::UnknownKey),
        }
    }

    /// Fetch now (subject to nothing but the single flight); for a server
    /// that wants its keys before the first client. Returns the number of
    /// usable keys.
    pub(crate) async fn prefetch(&self) -> Result<usize, TokenError> {
        let _flight = self.fetching.lock().await;
        self.fetch_locked().await;
        let state = self.state();
        if state.failing {
            Err(TokenError::KeysUnavailable)
        } else {
            Ok(state.keys.all.len())
        }
    }

    /// Whether the cache is older than the TTL and the floor allows a fetch.
    fn refresh_due(&self, state: &State) -> bool {
        state.fetched_at.is_some_and(|at| at.elapsed() >= self.ttl)
            && state
                .attempted_at
                .is_none_or(|at| at.elapsed() >= self.floor)
    }

    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        handle.spawn(async move {
            // Another fetch in flight will refresh the cache: nothing to do.
            let Ok(_flight) = this.fetching.try_lock() else {
                return;
            };
            let due = this.refresh_due(&this.state());
            if due {
                this.fetch_locked().await;
            }
        });
    }

    /// One fetch; the caller holds `fetching`.
    async fn fetch_locked(&self) {
        let started = Instant::now();
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.get()).await {
            Ok(Ok(body)) => KeySet::parse(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FetchError::Timeout),
        };
        let mut state = self.state();
        state.generation += 1;
        state.attempted_at = Some(started);
        match result {
            Ok(keys) => {
                if state.failing {
                    tracing::info!(target: "wsbus::auth", host = %self.endpoint.host, "JWKS fetch recovered");
                }
                tracing::debug!(target: "wsbus::auth", host = %self.endpoint.host, keys = keys.all.len(), "JWKS fetched");
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.failing = false;
            }
            Err(error) => {
                tracing::warn!(
                    target: "wsbus::auth",
                    host = %self.endpoint.host,
                    cached_keys = state.keys.all.len(),
                    %error,
                    "JWKS fetch failed; keeping the cached keys"
                );
                state.failing = true;
            }
        }
    }

    /// GET the JWKS: the body, at most [`MAX_JWKS_BYTES`].
    async fn get(&self) -> Result<Bytes, FetchError> {
        let endpoint = &self.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(FetchError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &endpoint.tls {
            None => self.request(tcp).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| FetchError::Tls(std::io::Error::other(e)))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(FetchError::Tls)?;
                self.request(tls).await
            }
        }
    }

    async fn request<IO>(&self, io: IO) -> Result<Bytes, FetchError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let uri = &self.endpoint.uri;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(FetchError::Http)?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or("", |a| a.as_str());
        let request = Request::get(path)
            .header(HOST, authority)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .header(USER_AGENT, concat!("wsbus/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::Body)?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(FetchError::Http)?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
                return Err(FetchError::TooLarge);
            }
            match Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
            {
                Ok(body) => Ok(body.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge),
                Err(_) => Err(FetchError::Body),
            }
        };
        // Drive the connection and the exchange together, in this task (no
        // spawned connection outliving a timeout). If the connection ends
        // first, the exchange still holds what arrived, so finish it.
        let mut exchange = pin!(exchange);
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            result = &mut exchange => result,
            _ = &mut conn => exchange.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/.well-known/jwks.json").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8080));
        assert!(e.tls.is_none());
        let e = Endpoint::parse("https://idp.example/keys").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("idp.example", 443));
        assert!(e.tls.is_some());
        let e = Endpoint::parse("http://[::1]/k").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        for (bad, why) in [
            ("ftp://x/k", "scheme"),
            ("/keys", "scheme"),
            ("http://user:pw@x/k", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("pw"));
        }
    }

    #[test]
    fn keyset_parse_and_find() {
        let pem = include_str!("../../tests/keys/ec_public.pem");
        let der = super::super::keys::pem_block(pem).unwrap().1;
        let point = &der[der.len() - 65..];
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&point[1..33]), b64(&point[33..]));
        let body = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "a"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "b", "alg": "ES256"},
        ]});
        let set = KeySet::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(set.all.len(), 2);
        assert!(set.find(Some("a"), Algorithm::ES256).is_some());
        assert!(set.find(Some("h"), Algorithm::HS256).is_none());
        // Two keys fit ES256 and the token names none: ambiguous.
        assert!(set.find(None, Algorithm::ES256).is_none());
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
        assert!(KeySet::parse(br#"{"keys": {}}"#).is_err());
    }
}
