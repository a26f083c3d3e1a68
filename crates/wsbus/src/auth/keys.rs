//! Verification keys: where they come from (a secret, a PEM public key, a
//! JWK) and which algorithms each one allows.
//!
//! The key decides the algorithm, never the token (RFC 8725 §2.1, §3.1):
//! every key has a [`KeyKind`], a token's `alg` must be one of that kind's
//! algorithms, and an HMAC key only ever comes from `jwt_secret`. That is
//! what defeats algorithm confusion: an HS256 token "signed" with the bytes
//! of the RSA public key finds no HMAC key to be checked against.
//!
//! Signatures are checked with `ring` (the crypto provider rustls already
//! uses in wsbus): each key is held in the form `ring` takes, prepared
//! once when the key is loaded, and `ring` is asked for exactly one
//! algorithm per `alg` (RFC 7518 §3.1), never for "any that fits".

use std::fmt;

use base64::DecodeSliceError;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

use super::alg::Algorithm;
use super::{AuthConfigError, TokenError};

/// The smallest RSA modulus accepted, in bits: RFC 7518 §3.3 ("a key of
/// size 2048 bits or larger MUST be used with these algorithms").
pub const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus accepted, in bits: the most `ring` verifies
/// (its `RSA_*_2048_8192_*` algorithms), so a longer key is refused when it
/// is loaded rather than failing every token.
pub const MAX_RSA_BITS: usize = 8192;

/// The largest RSA public exponent accepted, 2^33 - 1: `ring`'s bound on
/// the cost of a verification (its exponentiation is by squaring). Real
/// keys use 65537.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

/// The longest signature that can verify, in bytes: an RSA signature as
/// long as a [`MAX_RSA_BITS`] modulus (RFC 8017 §8.2.2). Longer ones are
/// refused without being decoded further; this also sizes the stack buffer
/// a signature is decoded into.
const MAX_SIGNATURE_BYTES: usize = MAX_RSA_BITS / 8;

/// The kind of a verification key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A shared secret: HS256, HS384, HS512.
    Hmac,
    /// An RSA public key: RS256/384/512 and PS256/384/512.
    Rsa,
    /// An EC public key on P-256: ES256.
    EcP256,
    /// An EC public key on P-384: ES384.
    EcP384,
    /// An Ed25519 public key: EdDSA.
    Ed25519,
}

impl KeyKind {
    pub(crate) fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Self::Hmac => &[HS256, HS384, HS512],
            Self::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Self::EcP256 => &[ES256],
            Self::EcP384 => &[ES384],
            Self::Ed25519 => &[EdDSA],
        }
    }
}

/// A key and the algorithms it may verify.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    kind: KeyKind,
    material: Material,
    /// The algorithm a JWK pins with its `alg` member (RFC 7517 §4.4).
    pinned: Option<Algorithm>,
}

/// Key material in the form `ring` verifies with.
#[derive(Clone)]
enum Material {
    /// One `ring` key per HS* hash (boxed: half a KiB of hash state).
    Hmac(Box<HmacKeys>),
    /// Modulus and exponent, big-endian without leading zeros (how `ring`
    /// wants them), already checked against `ring`'s limits.
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
    /// The uncompressed point `04 || X || Y` (SEC 1 §2.3.3) of a P-256 or
    /// P-384 key; the curve is the key's [`KeyKind`].
    Ec(Vec<u8>),
    /// The 32-byte Ed25519 public key (RFC 8032 §5.1.5).
    Ed25519([u8; 32]),
}

/// The shared secret as a `ring` key for each HS* hash (RFC 7518 §3.2):
/// building a key hashes the padded secret, which is then not redone for
/// every token.
#[derive(Clone)]
struct HmacKeys {
    sha256: hmac::Key,
    sha384: hmac::Key,
    sha512: hmac::Key,
}

/// Why an RSA modulus and exponent are not a usable key.
enum RsaKeyError {
    /// Shorter than [`MIN_RSA_BITS`].
    TooShort { bits: usize },
    /// Anything else; names the problem, never the bytes.
    Invalid(&'static str),
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material, not even a public key: it is noise in logs.
        f.debug_struct("VerifyKey")
            .field("kind", &self.kind)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An HMAC key from a shared secret.
    pub(crate) fn hmac(secret: &[u8]) -> Self {
        Self {
            kind: KeyKind::Hmac,
            material: Material::Hmac(Box::new(HmacKeys {
                sha256: hmac::Key::new(hmac::HMAC_SHA256, secret),
                sha384: hmac::Key::new(hmac::HMAC_SHA384, secret),
                sha512: hmac::Key::new(hmac::HMAC_SHA512, secret),
            })),
            pinned: None,
        }
    }

    /// A public key in PEM: SPKI `PUBLIC KEY` (RFC 7468 §13) holding an
    /// RSA, EC P-256/P-384 or Ed25519 key, or PKCS#1 `RSA PUBLIC KEY`.
    /// Errors name what is wrong, never the bytes.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, AuthConfigError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| AuthConfigError::InvalidPublicKey("not PEM text (not UTF-8)"))?;
        let (label, der) = pem_block(text)?;
        match label {
            "PUBLIC KEY" => Self::from_spki(&der),
            "RSA PUBLIC KEY" => Self::rsa_from_pkcs1(&der),
            "CERTIFICATE" => Err(AuthConfigError::InvalidPublicKey(
                "a certificate, not a public key (openssl x509 -pubkey -noout)",
            )),
            label if label.contains("PRIVATE") => Err(AuthConfigError::InvalidPublicKey(
                "holds a private key: configure the public key (openssl pkey -pubout)",
            )),
            _ => Err(AuthConfigError::InvalidPublicKey(
                "not a PUBLIC KEY or RSA PUBLIC KEY PEM block",
            )),
        }
    }

    /// RFC 5280 §4.1.2.7: `SEQUENCE { SEQUENCE { algorithm OID, parameters
    /// ANY OPTIONAL }, subjectPublicKey BIT STRING }`.
    fn from_spki(der: &[u8]) -> Result<Self, AuthConfigError> {
        const BAD: AuthConfigError =
            AuthConfigError::InvalidPublicKey("PUBLIC KEY is not valid DER");
        let (0x30, spki, _) = der_tlv(der).ok_or(BAD)? else {
            return Err(BAD);
        };
        let (0x30, algorithm, rest) = der_tlv(spki).ok_or(BAD)? else {
            return Err(BAD);
        };
        let (0x03, bits, _) = der_tlv(rest).ok_or(BAD)? else {
            return Err(BAD);
        };
        // The first content byte of a BIT STRING counts unused bits: 0 for keys.
        let Some((0, key)) = bits.split_first() else {
            return Err(BAD);
        };
        let (0x06, oid, params) = der_tlv(algorithm).ok_or(BAD)? else {
            return Err(BAD);
        };
        match oid {
            OID_RSA_ENCRYPTION => Self::rsa_from_pkcs1(key),
            OID_EC_PUBLIC_KEY => {
                let (0x06, curve, _) = der_tlv(params).ok_or(BAD)? else {
                    return Err(BAD);
                };
                let (kind, len) = match curve {
                    OID_P256 => (KeyKind::EcP256, 65),
                    OID_P384 => (KeyKind::EcP384, 97),
                    _ => {
                        return Err(AuthConfigError::InvalidPublicKey(
                            "EC public key is not on P-256 or P-384",
                        ));
                    }
                };
                // RFC 5480 §2.2: the point, uncompressed (04 || X || Y).
                if key.len() != len || key[0] != 0x04 {
                    return Err(AuthConfigError::InvalidPublicKey(
                        "EC public key is not an uncompressed point of its curve",
                    ));
                }
                Ok(Self {
                    kind,
                    material: Material::Ec(key.to_vec()),
                    pinned: None,
                })
            }
            OID_ED25519 => {
                let key = key.try_into().map_err(|_| {
                    AuthConfigError::InvalidPublicKey("Ed25519 key is not 32 bytes")
                })?;
                Ok(Self {
                    kind: KeyKind::Ed25519,
                    material: Material::Ed25519(key),
                    pinned: None,
                })
            }
            _ => Err(AuthConfigError::InvalidPublicKey(
                "not an RSA, EC (P-256, P-384) or Ed25519 public key",
            )),
        }
    }

    /// RFC 8017 §A.1.1: `RSAPublicKey ::= SEQUENCE { modulus INTEGER,
    /// publicExponent INTEGER }`.
    fn rsa_from_pkcs1(der: &[u8]) -> Result<Self, AuthConfigError> {
        const BAD: AuthConfigError =
            AuthConfigError::InvalidPublicKey("RSA public key is not valid DER");
        let (0x30, body, _) = der_tlv(der).ok_or(BAD)? else {
            return Err(BAD);
        };
        let (0x02, n, rest) = der_tlv(body).ok_or(BAD)? else {
            return Err(BAD);
        };
        let (0x02, e, _) = der_tlv(rest).ok_or(BAD)? else {
            return Err(BAD);
        };
        Self::rsa(n, e).map_err(|e| match e {
            RsaKeyError::TooShort { bits } => AuthConfigError::RsaKeyTooShort { bits },
            RsaKeyError::Invalid(why) => AuthConfigError::InvalidPublicKey(why),
        })
    }

    /// An RSA key from its big-endian modulus and exponent, checked now
    /// against what `ring` will verify with (modulus of [`MIN_RSA_BITS`] to
    /// [`MAX_RSA_BITS`], odd; exponent odd, 3 to [`MAX_RSA_EXPONENT`]), so a
    /// key `ring` would refuse is refused at load instead of failing every
    /// token as a bad signature.
    fn rsa(n: &[u8], e: &[u8]) -> Result<Self, RsaKeyError> {
        let (n, e) = (strip_zeros(n), strip_zeros(e));
        let bits = unsigned_bits(n);
        if bits < MIN_RSA_BITS {
            return Err(RsaKeyError::TooShort { bits });
        }
        if bits > MAX_RSA_BITS {
            return Err(RsaKeyError::Invalid("RSA key longer than 8192 bits"));
        }
        if n.last().is_none_or(|&b| b & 1 == 0) {
            return Err(RsaKeyError::Invalid("RSA modulus is even"));
        }
        let exponent = (e.len() <= 8)
            .then(|| e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
            .filter(|&v| (3..=MAX_RSA_EXPONENT).contains(&v) && v & 1 == 1);
        if exponent.is_none() {
            return Err(RsaKeyError::Invalid(
                "RSA public exponent is not odd and between 3 and 2^33 - 1",
            ));
        }
        Ok(Self {
            kind: KeyKind::Rsa,
            material: Material::Rsa(RsaPublicKeyComponents {
                n: n.to_vec(),
                e: e.to_vec(),
            }),
            pinned: None,
        })
    }

    /// A signature key from one member of a JWKS's `keys` (RFC 7517 §4),
    /// with its `kid`. `Err` carries why the key is skipped (for a debug log;
    /// it names no key material).
    pub(crate) fn from_jwk(jwk: &Value) -> Result<(Option<String>, Self), &'static str> {
        let str_member = |name: &str| jwk.get(name).and_then(Value::as_str);
        // RFC 7517 §4.2: a key for encryption is not for us.
        if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return Err("use is not \"sig\"");
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err("kid is not a string"),
        };
        let pinned = match jwk.get("alg") {
            None => None,
            Some(alg) => Some(
                alg.as_str()
                    .and_then(|a| a.parse::<Algorithm>().ok())
                    .ok_or("unsupported alg")?,
            ),
        };
        // RFC 7518 §6.2.1, §6.3.1 and RFC 8037 §2: the members are
        // base64url (no padding) big-endian integers and coordinates.
        let bytes_member = |name: &str, missing: &'static str, bad: &'static str| {
            let text = str_member(name).ok_or(missing)?;
            URL_SAFE_NO_PAD.decode(text).map_err(|_| bad)
        };
        let mut key = match str_member("kty") {
            Some("RSA") => {
                let n = bytes_member("n", "RSA key without n or e", "RSA n is not base64url")?;
                let e = bytes_member("e", "RSA key without n or e", "RSA e is not base64url")?;
                Self::rsa(&n, &e).map_err(|e| match e {
                    RsaKeyError::TooShort { .. } => "RSA key shorter than 2048 bits",
                    RsaKeyError::Invalid(why) => why,
                })?
            }
            Some("EC") => {
                let (size, kind) = match str_member("crv") {
                    Some("P-256") => (32, KeyKind::EcP256),
                    Some("P-384") => (48, KeyKind::EcP384),
                    _ => return Err("unsupported EC curve"),
                };
                let x = bytes_member("x", "EC key without x or y", "bad EC key")?;
                let y = bytes_member("y", "EC key without x or y", "bad EC key")?;
                // RFC 7518 §6.2.1.2, §6.2.1.3: each coordinate is the full
                // size of the curve's field, leading zeros included.
                if x.len() != size || y.len() != size {
                    return Err("EC coordinates of the wrong size");
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Self {
                    kind,
                    material: Material::Ec(point),
                    pinned: None,
                }
            }
            Some("OKP") => {
                if str_member("crv") != Some("Ed25519") {
                    return Err("unsupported OKP curve");
                }
                let x = bytes_member("x", "OKP key without x", "bad Ed25519 key")?;
                let x = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| "Ed25519 key of the wrong size")?;
                Self {
                    kind: KeyKind::Ed25519,
                    material: Material::Ed25519(x),
                    pinned: None,
                }
            }
            // A symmetric key must never come from a URL: whoever can serve
            // the JWKS could then mint tokens.
            Some("oct") => return Err("symmetric (oct) keys are never taken from a JWKS"),
            _ => return Err("unsupported kty"),
        };
        if let Some(alg) = pinned {
            if !key.kind.algorithms().contains(&alg) {
                return Err("alg does not match the key type");
            }
        }
        key.pinned = pinned;
        Ok((kid, key))
    }

    pub(crate) fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        match self.pinned {
            Some(pinned) => pinned == alg,
            None => self.kind.algorithms().contains(&alg),
        }
    }

    /// Verify `signature` (base64url, the token's third part) over
    /// `message` (the first two parts and their dot).
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &str,
        alg: Algorithm,
    ) -> Result<(), TokenError> {
        use Algorithm::*;
        if !self.allows(alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        // RFC 7515 §2: base64url without padding. Decoded on the stack: no
        // signature that can verify is longer than the buffer.
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let len = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut buf)
            .map_err(|e| match e {
                DecodeSliceError::DecodeError(_) => TokenError::Malformed,
                DecodeSliceError::OutputSliceTooSmall => TokenError::BadSignature,
            })?;
        let signature = &buf[..len];
        let checked = match (&self.material, alg) {
            // `hmac::verify` compares in constant time (RFC 7518 §3.2 asks
            // for a comparison that does not leak timing).
            (Material::Hmac(keys), HS256) => hmac::verify(&keys.sha256, message, signature),
            (Material::Hmac(keys), HS384) => hmac::verify(&keys.sha384, message, signature),
            (Material::Hmac(keys), HS512) => hmac::verify(&keys.sha512, message, signature),
            (Material::Rsa(key), _) => {
                let params = match alg {
                    RS256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    RS384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
                    RS512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
                    // RFC 7518 §3.5: MGF1 with the same hash, and a salt as
                    // long as the hash output, which is what ring's PSS
                    // verification requires.
                    PS256 => &ring::signature::RSA_PSS_2048_8192_SHA256,
                    PS384 => &ring::signature::RSA_PSS_2048_8192_SHA384,
                    PS512 => &ring::signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(TokenError::AlgorithmNotAllowed),
                };
                key.verify(params, message, signature)
            }
            // RFC 7518 §3.4: the JWS signature is R || S, each the size of
            // the curve's order, not the DER form of X.509: ring's `_FIXED`.
            (Material::Ec(point), ES256) => {
                UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (Material::Ec(point), ES384) => {
                UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (Material::Ed25519(key), EdDSA) => {
                UnparsedPublicKey::new(&ring::signature::ED25519, key).verify(message, signature)
            }
            // `allows` has matched the algorithm to the key's kind; a pair
            // not listed above cannot get here, and is refused if it does.
            _ => return Err(TokenError::AlgorithmNotAllowed),
        };
        checked.map_err(|_| TokenError::BadSignature)
    }
}

// DER contents of the algorithm OIDs (X.690 §8.19).
/// rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017 §A.1).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1 (RFC 5480 §2.1.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1, 1.2.840.10045.3.1.7 (RFC 5480 §2.1.1.1).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34 (RFC 5480 §2.1.1.1).
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519, 1.3.101.112 (RFC 8410 §3).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The label and DER contents of the first PEM block (RFC 7468 §2).
pub(crate) fn pem_block(text: &str) -> Result<(&str, Vec<u8>), AuthConfigError> {
    let (label, rest) = text
        .split_once("-----BEGIN ")
        .and_then(|(_, rest)| rest.split_once("-----"))
        .ok_or(AuthConfigError::InvalidPublicKey(
            "no PEM block (expected -----BEGIN PUBLIC KEY-----)",
        ))?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest
        .split_once(end.as_str())
        .ok_or(AuthConfigError::InvalidPublicKey(
            "PEM block without its END line",
        ))?;
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| AuthConfigError::InvalidPublicKey("PEM body is not base64"))?;
    Ok((label, der))
}

/// A big-endian unsigned integer without its leading zero bytes (a DER
/// INTEGER carries one when the top bit is set).
fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The size in bits of a big-endian unsigned integer.
fn unsigned_bits(bytes: &[u8]) -> usize {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    match bytes.get(start) {
        Some(&first) => (bytes.len() - start) * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// One DER TLV (X.690 §8.1): tag, contents, rest. Only definite lengths of
/// up to four bytes, which is all a public key needs.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_PUB: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
    const EC_PUB: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
    const ED_PUB: &[u8] = include_bytes!("../../tests/keys/ed25519_public.pem");
    const RSA_PRIV: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");

    #[test]
    fn pem_kinds() {
        assert_eq!(VerifyKey::from_pem(RSA_PUB).unwrap().kind(), KeyKind::Rsa);
        let pkcs1 = include_bytes!("../../tests/keys/rsa_public_pkcs1.pem");
        assert_eq!(VerifyKey::from_pem(pkcs1).unwrap().kind(), KeyKind::Rsa);
        assert_eq!(VerifyKey::from_pem(EC_PUB).unwrap().kind(), KeyKind::EcP256);
        assert_eq!(
            VerifyKey::from_pem(ED_PUB).unwrap().kind(),
            KeyKind::Ed25519
        );
    }

    #[test]
    fn pem_errors_name_the_problem() {
        let err = VerifyKey::from_pem(RSA_PRIV).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        let err = VerifyKey::from_pem(b"hello").unwrap_err();
        assert!(err.to_string().contains("no PEM block"), "{err}");
        let err = VerifyKey::from_pem(&[0xff, 0xfe]).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let junk = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = VerifyKey::from_pem(junk).unwrap_err();
        assert!(err.to_string().contains("not valid DER"), "{err}");
        assert!(!err.to_string().contains("AAAA"));
        // An X25519 key (RFC 8410): valid SPKI, not a signature key.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
        ];
        spki.extend([7u8; 32]);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&spki)
        );
        let err = VerifyKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not an RSA"), "{err}");
        // An Ed25519 SPKI with a short key.
        let spki = [
            0x30, 0x0b, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x02, 0x00, 0x01,
        ];
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki)
        );
        let err = VerifyKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let err = VerifyKey::from_pem(cert).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[test]
    fn short_rsa_key_refused() {
        let pem = include_bytes!("../../tests/keys/rsa1024_public.pem");
        match VerifyKey::from_pem(pem) {
            Err(AuthConfigError::RsaKeyTooShort { bits }) => assert_eq!(bits, 1024),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn algorithms_follow_the_key() {
        let rsa = VerifyKey::from_pem(RSA_PUB).unwrap();
        assert!(rsa.allows(Algorithm::RS256) && rsa.allows(Algorithm::PS512));
        assert!(!rsa.allows(Algorithm::HS256) && !rsa.allows(Algorithm::ES256));
        let hmac = VerifyKey::hmac(b"secret");
        assert!(hmac.allows(Algorithm::HS384));
        assert!(!hmac.allows(Algorithm::RS256) && !hmac.allows(Algorithm::EdDSA));
        let ec = VerifyKey::from_pem(EC_PUB).unwrap();
        assert!(ec.allows(Algorithm::ES256) && !ec.allows(Algorithm::ES384));
    }

    #[test]
    fn jwk_members() {
        let ed = VerifyKey::from_pem(ED_PUB).unwrap();
        let Material::Ed25519(bytes) = &ed.material else {
            panic!("not an Ed25519 key");
        };
        let x = URL_SAFE_NO_PAD.encode(bytes);
        let (kid, key) =
            VerifyKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "e1"}))
                .unwrap();
        assert_eq!(kid.as_deref(), Some("e1"));
        assert!(key.allows(Algorithm::EdDSA));

        let skip = |v: Value| VerifyKey::from_jwk(&v).unwrap_err();
        assert!(skip(json!({"kty": "oct", "k": "c2VjcmV0"})).contains("symmetric"));
        assert!(
            skip(json!({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc"})).contains("use")
        );
        assert!(
            skip(json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "RS256"})).contains("alg")
        );
        assert!(skip(json!({"kty": "OKP", "crv": "X25519", "x": x})).contains("curve"));
        assert!(skip(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})).contains("2048"));
        assert!(
            skip(json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"})).contains("size")
        );
        assert!(skip(json!({"kty": "XYZ"})).contains("kty"));
    }

    /// A signature by jsonwebtoken (another implementation) over `message`.
    fn jwt_sign(message: &[u8], alg: Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
        let alg: jsonwebtoken::Algorithm = format!("{alg:?}").parse().unwrap();
        jsonwebtoken::crypto::sign(message, key, alg).unwrap()
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        pem_block(std::str::from_utf8(pem).unwrap()).unwrap().1
    }

    #[test]
    fn every_algorithm_verifies_with_ring() {
        use jsonwebtoken::EncodingKey;
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let message = b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0";
        let check = |key: &VerifyKey, alg: Algorithm, signing: &EncodingKey| {
            let signature = jwt_sign(message, alg, signing);
            assert_eq!(key.verify(message, &signature, alg), Ok(()), "{alg:?}");
            // Another message under the same signature.
            assert_eq!(
                key.verify(b"x.y", &signature, alg),
                Err(TokenError::BadSignature),
                "{alg:?}"
            );
            // One bit flipped.
            let mut bytes = URL_SAFE_NO_PAD.decode(&signature).unwrap();
            bytes[0] ^= 1;
            let flipped = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                key.verify(message, &flipped, alg),
                Err(TokenError::BadSignature),
                "{alg:?}"
            );
        };

        let secret = b"0123456789abcdef0123456789abcdef";
        let hmac = VerifyKey::hmac(secret);
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            check(&hmac, alg, &EncodingKey::from_secret(secret));
        }
        let rsa = VerifyKey::from_pem(RSA_PUB).unwrap();
        let rsa_priv = EncodingKey::from_rsa_der(&der(RSA_PRIV));
        use Algorithm::*;
        for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
            check(&rsa, alg, &rsa_priv);
        }
        let ec_priv = include_bytes!("../../tests/keys/ec_private.pem");
        let ec = VerifyKey::from_pem(EC_PUB).unwrap();
        check(&ec, ES256, &EncodingKey::from_ec_der(&der(ec_priv)));
        let ed_priv = include_bytes!("../../tests/keys/ed25519_private.pem");
        let ed = VerifyKey::from_pem(ED_PUB).unwrap();
        check(&ed, EdDSA, &EncodingKey::from_ed_der(&der(ed_priv)));

        // P-384 has no fixture: a fresh key, its public half as a JWK.
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            pkcs8.as_ref(),
            &SystemRandom::new(),
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..49], &point[49..]);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-384",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        });
        let (_, p384) = VerifyKey::from_jwk(&jwk).unwrap();
        assert_eq!(p384.kind(), KeyKind::EcP384);
        check(&p384, ES384, &EncodingKey::from_ec_der(pkcs8.as_ref()));
    }

    #[test]
    fn signature_forms() {
        use jsonwebtoken::EncodingKey;
        let message = b"a.b";
        let ec = VerifyKey::from_pem(EC_PUB).unwrap();
        let ec_priv = include_bytes!("../../tests/keys/ec_private.pem");
        let fixed = jwt_sign(
            message,
            Algorithm::ES256,
            &EncodingKey::from_ec_der(&der(ec_priv)),
        );
        assert_eq!(ec.verify(message, &fixed, Algorithm::ES256), Ok(()));
        // RFC 7518 §3.4: R || S, not the DER SEQUENCE of X.509 signatures.
        let rs = URL_SAFE_NO_PAD.decode(&fixed).unwrap();
        let int = |v: &[u8]| {
            let mut out = vec![0x02];
            let v = strip_zeros(v);
            let pad = v[0] & 0x80 != 0;
            out.push((v.len() + usize::from(pad)) as u8);
            if pad {
                out.push(0);
            }
            out.extend_from_slice(v);
            out
        };
        let body = [int(&rs[..32]), int(&rs[32..])].concat();
        let der_sig = [vec![0x30, body.len() as u8], body].concat();
        assert_eq!(
            ec.verify(message, &URL_SAFE_NO_PAD.encode(der_sig), Algorithm::ES256),
            Err(TokenError::BadSignature)
        );
        let hmac = VerifyKey::hmac(b"secret");
        let tag = jwt_sign(
            message,
            Algorithm::HS256,
            &EncodingKey::from_secret(b"secret"),
        );
        assert_eq!(hmac.verify(message, &tag, Algorithm::HS256), Ok(()));
        // A truncated tag, padding, a non-base64url character, too long.
        let short = URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(&tag).unwrap()[..16]);
        for (signature, error) in [
            (short, TokenError::BadSignature),
            (String::new(), TokenError::BadSignature),
            (format!("{tag}="), TokenError::Malformed),
            (
                tag.replace(|c: char| c.is_ascii_alphabetic(), "+"),
                TokenError::Malformed,
            ),
            (
                "A".repeat(4 * MAX_SIGNATURE_BYTES),
                TokenError::BadSignature,
            ),
        ] {
            assert_eq!(
                hmac.verify(message, &signature, Algorithm::HS256),
                Err(error),
                "{signature}"
            );
        }
        // The key's kind decides, whatever the signature.
        assert_eq!(
            hmac.verify(message, &tag, Algorithm::RS256),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn rsa_keys_ring_would_refuse_are_refused_at_load() {
        let n = |bits: usize, last: u8| {
            let mut n = vec![0xff; bits / 8];
            *n.last_mut().unwrap() = last;
            n
        };
        let ok = VerifyKey::rsa(&n(2048, 0x01), &[1, 0, 1]);
        assert!(matches!(
            ok,
            Ok(VerifyKey {
                kind: KeyKind::Rsa,
                ..
            })
        ));
        // Leading zeros are not part of the size.
        assert!(VerifyKey::rsa(&[&[0, 0][..], &n(2048, 1)].concat(), &[0, 3]).is_ok());
        assert!(VerifyKey::rsa(&n(8192, 1), &[3]).is_ok());
        let why = |n: &[u8], e: &[u8]| match VerifyKey::rsa(n, e) {
            Err(RsaKeyError::Invalid(why)) => why,
            Err(RsaKeyError::TooShort { bits }) => panic!("too short: {bits}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(why(&n(8200, 1), &[1, 0, 1]).contains("8192"));
        assert!(why(&n(2048, 2), &[1, 0, 1]).contains("even"));
        for e in [&[][..], &[1], &[2], &[1, 0, 0], &[2, 0, 0, 0, 1], &[1; 9]] {
            assert!(why(&n(2048, 1), e).contains("exponent"), "{e:?}");
        }
        assert!(VerifyKey::rsa(&n(2048, 1), &[1, 0xff, 0xff, 0xff, 0xff]).is_ok());
        assert!(matches!(
            VerifyKey::rsa(&n(2040, 1), &[3]),
            Err(RsaKeyError::TooShort { bits: 2040 })
        ));
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "RSA", "n": b64(&n(2048, 2)), "e": "AQAB"});
        assert!(VerifyKey::from_jwk(&jwk).unwrap_err().contains("even"));
        let jwk = json!({"kty": "RSA", "n": b64(&n(2048, 1)), "e": "AQ=="});
        assert!(VerifyKey::from_jwk(&jwk).unwrap_err().contains("base64url"));
    }

    #[test]
    fn der_helpers() {
        assert_eq!(unsigned_bits(&[0, 0, 1]), 1);
        assert_eq!(unsigned_bits(&[0x80, 0]), 16);
        assert_eq!(unsigned_bits(&[]), 0);
        assert_eq!(der_tlv(&[0x30, 0x82, 0x01]), None);
        assert_eq!(
            der_tlv(&[0x02, 0x01, 0x05, 0xaa]),
            Some((0x02, &[5u8][..], &[0xaa][..]))
        );
        assert_eq!(strip_zeros(&[0, 0, 1, 0]), &[1, 0]);
        let pem = "x\n-----BEGIN A B-----\nAQ\nID\n-----END A B-----\n";
        assert_eq!(pem_block(pem).unwrap(), ("A B", vec![1, 2, 3]));
        assert!(pem_block("-----BEGIN A-----\nAQID\n-----END B-----").is_err());
    }
}
