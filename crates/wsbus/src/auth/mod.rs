//! Token authentication (JWT, RFC 7519) for handshakes: SPEC §5.
//!
//! A [`TokenVerifier`] is built once from an [`AuthConfig`] (the `[auth]`
//! section of `wsbus serve`'s configuration) and checks the bearer tokens
//! that [`token_from_request`] finds in a request, or that a Bayeux
//! handshake carries in `ext.access_token`:
//!
//! ```no_run
//! # async fn demo(headers: http::HeaderMap, query: Option<&str>) {
//! use wsbus::auth::{AuthConfig, Secret, TokenError, TokenVerifier, token_from_request};
//!
//! let verifier = TokenVerifier::new(AuthConfig {
//!     jwt_secret: Some(Secret::new("a secret of at least 32 bytes....")),
//!     issuer: Some("https://idp.example".into()),
//!     ..AuthConfig::default()
//! })
//! .expect("valid auth config");
//! let result = match token_from_request(&headers, query) {
//!     Some(token) => verifier.verify(&token).await,
//!     None => Err(TokenError::Missing),
//! };
//! match result {
//!     Ok(claims) => println!("user {}", claims.sub),
//!     // 401, `WWW-Authenticate: Bearer error="invalid_token", ...`
//!     Err(e) => println!("refused: {} ({})", e.reason(), e.label()),
//! }
//! # }
//! ```
//!
//! What is checked, in order:
//! 1. size: at most [`MAX_TOKEN_BYTES`], before any parsing;
//! 2. form: JWS compact serialization, three base64url parts (RFC 7515 §7.1);
//!    a JOSE header with `crit` is refused (RFC 7515 §4.1.11: wsbus
//!    understands no extension); `jku`, `x5u`, `jwk` are ignored;
//! 3. algorithm: `alg` must be one that a configured key allows — the key's
//!    type decides (HS* for `jwt_secret`; RS*/PS*, ES256/ES384 or EdDSA for
//!    a PEM or JWKS key). `none` and algorithm confusion are refused;
//! 4. signature, with the key chosen by `alg` and `kid`;
//! 5. claims (see [`Claims`]): `exp` and `nbf` with [`AuthConfig::leeway`]
//!    (a token without `exp` is accepted and never expires: deployments that
//!    want expiry issue tokens with `exp`), `iss` and `aud` only when
//!    configured, `sub` required.
//!
//! Nothing here logs a token, a secret or key material, and no error's
//! `Display` contains one. Verification failures are not logged here (the
//! caller logs them once, with the connection); JWKS fetch failures are,
//! at target `wsbus::auth`.
//!
//! The signature is checked with `ring`, the crypto provider rustls
//! already uses in wsbus (`keys.rs`: HMAC compared in constant time, RSA
//! PKCS#1 v1.5 and PSS, ECDSA P-256/P-384 in JWS's fixed `R || S` form,
//! Ed25519); the claims are checked here (`claims.rs`), with the clock
//! passed in.

mod alg;
mod claims;
mod extract;
mod jwks;
mod keys;
mod now;
mod secret;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

pub use claims::{Claims, MAX_NUMERIC_DATE};
pub use extract::{ACCESS_TOKEN_PARAM, token_from_request};
pub use jwks::{FETCH_TIMEOUT, JWKS_TTL, MAX_JWKS_BYTES, MAX_JWKS_KEYS, REFRESH_FLOOR};
pub use keys::{MAX_RSA_BITS, MIN_RSA_BITS};
pub use now::verify_now;
pub use secret::{Secret, constant_time_eq};

use alg::Algorithm;
use claims::ClaimRules;
use jwks::Jwks;
use keys::{KeyKind, VerifyKey};

/// The longest token accepted, in bytes; a longer one is refused as
/// [`TokenError::TooLarge`] before any decoding. Real tokens are well under
/// 2 KiB (an RS256 signature is 342 characters); 8 KiB is the usual request
/// header line limit of proxies, so a longer token could not have come
/// through a header anyway, and the cap bounds the base64 and JSON work an
/// unauthenticated client can ask for.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The default clock-skew allowance for `exp` and `nbf` (RFC 7519 §4.1.4
/// allows "some small leeway"): small, because it extends every token's life.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The HMAC secret length below which a warning is logged: RFC 7518 §3.2
/// requires a key at least as long as the hash output (32 bytes for HS256).
/// Shorter secrets still work, to keep test setups simple.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Where verification keys come from and what the claims must say: the
/// `[auth]` section of `wsbus serve`'s configuration.
///
/// At least one of `jwt_secret`, `jwt_public_key_pem` and `jwks_url` must be
/// set; several may be. Each configured key kind allows its own algorithms
/// and no others.
#[derive(Clone)]
pub struct AuthConfig {
    /// The shared secret for HS256, HS384 and HS512 tokens.
    pub jwt_secret: Option<Secret>,
    /// A public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`): RSA
    /// ([`MIN_RSA_BITS`] to [`MAX_RSA_BITS`]) for RS256/384/512 and
    /// PS256/384/512, EC P-256 for ES256, P-384 for ES384, Ed25519 for EdDSA.
    pub jwt_public_key_pem: Option<Vec<u8>>,
    /// An `http://` or `https://` URL serving a JWKS (RFC 7517 §5). Keys
    /// are chosen by the token's `kid` and cached; a symmetric (`oct`) key in
    /// the set is ignored.
    pub jwks_url: Option<String>,
    /// The required `iss`; when `None`, `iss` is not checked.
    pub issuer: Option<String>,
    /// This server's audience, which `aud` (a string or an array) must
    /// contain; when `None`, `aud` is not checked.
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`; default [`DEFAULT_LEEWAY`].
    pub leeway: Duration,
    /// The least time between two JWKS fetches caused by unknown `kid`s;
    /// default [`REFRESH_FLOOR`].
    pub jwks_refresh_floor: Duration,
    /// The age after which the JWKS is refreshed in the background; default
    /// [`JWKS_TTL`].
    pub jwks_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_pem: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            jwks_refresh_floor: REFRESH_FLOOR,
            jwks_ttl: JWKS_TTL,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &self.jwt_secret)
            .field(
                "jwt_public_key_pem",
                &self.jwt_public_key_pem.as_ref().map(|_| "<PEM>"),
            )
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("jwks_refresh_floor", &self.jwks_refresh_floor)
            .field("jwks_ttl", &self.jwks_ttl)
            .finish()
    }
}

/// An [`AuthConfig`] that cannot work. The message names the configuration
/// key and what is wrong with it, never a secret or key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// None of `jwt_secret`, `jwt_public_key_pem`, `jwks_url` is set.
    NoKey,
    /// `jwt_secret` is the empty string.
    EmptySecret,
    /// `jwt_public_key_pem` is not a usable public key; the reason.
    InvalidPublicKey(&'static str),
    /// `jwt_public_key_pem` is an RSA key shorter than [`MIN_RSA_BITS`].
    RsaKeyTooShort {
        /// The key's modulus size.
        bits: usize,
    },
    /// `jwks_url` is not a usable URL; the reason.
    InvalidJwksUrl(&'static str),
}

impl fmt::Display for AuthConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKey => f.write_str(
                "auth: no key configured (set jwt_secret, jwt_public_key_pem or jwks_url)",
            ),
            Self::EmptySecret => f.write_str("auth.jwt_secret: empty"),
            Self::InvalidPublicKey(why) => write!(f, "auth.jwt_public_key_pem: {why}"),
            Self::RsaKeyTooShort { bits } => write!(
                f,
                "auth.jwt_public_key_pem: RSA key of {bits} bits, at least {MIN_RSA_BITS} required"
            ),
            Self::InvalidJwksUrl(why) => write!(f, "auth.jwks_url: {why}"),
        }
    }
}

impl std::error::Error for AuthConfigError {}

/// Why a token was refused. [`TokenError::reason`] is the short text for the
/// wire (`401::<reason>`, `error_description`), [`TokenError::label`] the
/// metric label; `Display` is the reason. Neither ever contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was presented.
    Missing,
    /// Not a JWS compact token, bad base64url or JSON, an unsupported `crit`
    /// header, or a claim of the wrong type.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or does not contain the configured audience.
    WrongAudience,
    /// The token has no (non-empty) `sub`.
    MissingSubject,
    /// No key for the token's `kid` (or, without `kid`, no single key for
    /// its algorithm) in a JWKS that was fetched.
    UnknownKey,
    /// `alg` is `none`, unknown, or not one the configured keys allow.
    AlgorithmNotAllowed,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// The JWKS could not be fetched and the cache has no key for the token.
    KeysUnavailable,
}

impl TokenError {
    /// A short human reason, for `401::<reason>` and `error_description`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "Missing token",
            Self::Malformed => "Malformed token",
            Self::BadSignature => "Bad signature",
            Self::Expired => "Token expired",
            Self::NotYetValid => "Token not yet valid",
            Self::WrongIssuer => "Wrong issuer",
            Self::WrongAudience => "Wrong audience",
            Self::MissingSubject => "Missing subject",
            Self::UnknownKey => "Unknown key",
            Self::AlgorithmNotAllowed => "Algorithm not allowed",
            Self::TooLarge => "Token too large",
            Self::KeysUnavailable => "Keys unavailable",
        }
    }

    /// A metric label (`auth_failures{reason="..."}`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingSubject => "missing_subject",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::TooLarge => "too_large",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The `WWW-Authenticate` value of a `401` for this refusal (RFC 6750
    /// §3): `Bearer error="invalid_token", error_description="<reason>"`.
    /// [`TokenError::Missing`] too: RFC 6750 §3.1 only says a server
    /// SHOULD NOT send an error code without credentials, and SPEC §5 (what
    /// tools rely on) gives every refusal this one form, the description
    /// telling them apart.
    pub fn www_authenticate(&self) -> String {
        format!(
            r#"Bearer error="invalid_token", error_description="{}""#,
            self.reason()
        )
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TokenError {}

/// Checks bearer tokens against an [`AuthConfig`]. Cheap to clone (an `Arc`
/// inside); clones share the JWKS cache.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    hmac: Option<Arc<VerifyKey>>,
    public: Option<Arc<VerifyKey>>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("TokenVerifier")
            .field("hmac", &inner.hmac.is_some())
            .field("public", &inner.public.as_ref().map(|k| k.kind()))
            .field("jwks", &inner.jwks.is_some())
            .field("issuer", &inner.issuer)
            .field("audience", &inner.audience)
            .field("leeway", &inner.leeway)
            .finish()
    }
}

impl TokenVerifier {
    /// Build a verifier; the PEM key is parsed and the JWKS URL checked now
    /// (the JWKS itself is fetched on first use, or by
    /// [`TokenVerifier::prefetch_keys`]).
    pub fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        let hmac = match &config.jwt_secret {
            None => None,
            Some(secret) if secret.is_empty() => return Err(AuthConfigError::EmptySecret),
            Some(secret) => {
                if secret.len() < MIN_HMAC_SECRET_BYTES {
                    tracing::warn!(
                        target: "wsbus::auth",
                        bytes = secret.len(),
                        "auth.jwt_secret is shorter than {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 §3.2)"
                    );
                }
                Some(Arc::new(VerifyKey::hmac(secret.expose().as_bytes())))
            }
        };
        let public = config
            .jwt_public_key_pem
            .as_deref()
            .map(|pem| VerifyKey::from_pem(pem).map(Arc::new))
            .transpose()?;
        let jwks = config
            .jwks_url
            .as_deref()
            .map(|url| Jwks::new(url, config.jwks_refresh_floor, config.jwks_ttl).map(Arc::new))
            .transpose()?;
        if hmac.is_none() && public.is_none() && jwks.is_none() {
            return Err(AuthConfigError::NoKey);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                hmac,
                public,
                jwks,
                issuer: config.issuer,
                audience: config.audience,
                leeway: config.leeway,
            }),
        })
    }

    /// Verify a token now. May fetch the JWKS for an unknown `kid` (bounded
    /// by [`FETCH_TIMEOUT`] and the refresh floor).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// Verify a token as of `now` (for tests, and for re-checking a stored
    /// token against a given time).
    pub async fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let inner = &*self.inner;
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        // RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.'
        // BASE64URL(signature). Five parts would be a JWE: not supported.
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let message = &token.as_bytes()[..header.len() + 1 + payload.len()];

        let header = decode_json_object(header)?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood;
        // wsbus understands none (not even RFC 7797's `b64`).
        if header.contains_key("crit") {
            return Err(TokenError::Malformed);
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg
                .parse::<Algorithm>()
                .map_err(|_| TokenError::AlgorithmNotAllowed)?,
            _ => return Err(TokenError::Malformed),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Malformed),
        };

        let key = inner.key_for(alg, kid).await?;
        key.verify(message, signature, alg)?;

        let payload = decode_json_object(payload)?;
        let rules = ClaimRules {
            issuer: inner.issuer.as_deref(),
            audience: inner.audience.as_deref(),
            leeway: inner.leeway,
        };
        claims::validate(payload, rules, now)
    }

    /// Fetch the JWKS now, so the first client does not wait for it; the
    /// number of usable keys. `Ok(0)` when no `jwks_url` is configured.
    pub async fn prefetch_keys(&self) -> Result<usize, TokenError> {
        match &self.inner.jwks {
            Some(jwks) => jwks.prefetch().await,
            None => Ok(0),
        }
    }
}

impl Inner {
    /// The key for a token: the algorithm's family picks the source, and
    /// a source only answers for the algorithms of its key kind.
    async fn key_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Arc<VerifyKey>, TokenError> {
        if KeyKind::Hmac.algorithms().contains(&alg) {
            // Only `jwt_secret` is ever an HMAC key.
            return self.hmac.clone().ok_or(TokenError::AlgorithmNotAllowed);
        }
        let public = self.public.as_ref().filter(|k| k.allows(alg));
        if let Some(jwks) = &self.jwks {
            // The token names a key, or only the JWKS can have one: look it
            // up; if the set does not have it, the PEM key may still fit.
            if kid.is_some() || public.is_none() {
                return match (jwks.key(kid, alg).await, public) {
                    (Ok(key), _) => Ok(key),
                    (Err(TokenError::UnknownKey | TokenError::KeysUnavailable), Some(public)) => {
                        Ok(public.clone())
                    }
                    (Err(e), _) => Err(e),
                };
            }
        }
        public.cloned().ok_or(TokenError::AlgorithmNotAllowed)
    }
}

/// Decode one base64url part (RFC 7515 §2: no padding) holding a JSON
/// object.
fn decode_json_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests;
