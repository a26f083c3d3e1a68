//! Verification keys: where they come from (a secret, a PEM public key, a
//! JWK) and which algorithms each one allows.
//!
//! The key decides the algorithm, never the token (RFC 8725 §2.1, §3.1):
//! every key has a [`KeyKind`], a token's `alg` must be one of that kind's
//! algorithms, and an HMAC key only ever comes from `jwt_secret`. That is
//! what defeats algorithm confusion: an HS256 token "signed" with the bytes
//! of the RSA public key finds no HMAC key to be checked against.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::{AuthConfigError, TokenError};

/// The smallest RSA modulus accepted, in bits: RFC 7518 §3.3 ("a key of
/// size 2048 bits or larger MUST be used with these algorithms").
pub const MIN_RSA_BITS: usize = 2048;

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
    key: DecodingKey,
    /// The algorithm a JWK pins with its `alg` member (RFC 7517 §4.4).
    pinned: Option<Algorithm>,
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
            key: DecodingKey::from_secret(secret),
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
                    key: DecodingKey::from_ec_der(key),
                    pinned: None,
                })
            }
            OID_ED25519 => {
                if key.len() != 32 {
                    return Err(AuthConfigError::InvalidPublicKey(
                        "Ed25519 key is not 32 bytes",
                    ));
                }
                Ok(Self {
                    kind: KeyKind::Ed25519,
                    key: DecodingKey::from_ed_der(key),
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
        let bits = unsigned_bits(n);
        if bits < MIN_RSA_BITS {
            return Err(AuthConfigError::RsaKeyTooShort { bits });
        }
        let key = DecodingKey::from_rsa_raw_components(strip_zeros(n), strip_zeros(e));
        Ok(Self {
            kind: KeyKind::Rsa,
            key,
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
        let (kind, key) = match str_member("kty") {
            Some("RSA") => {
                let (Some(n), Some(e)) = (str_member("n"), str_member("e")) else {
                    return Err("RSA key without n or e");
                };
                let n_bytes = URL_SAFE_NO_PAD
                    .decode(n)
                    .map_err(|_| "RSA n is not base64url")?;
                if unsigned_bits(&n_bytes) < MIN_RSA_BITS {
                    return Err("RSA key shorter than 2048 bits");
                }
                let key = DecodingKey::from_rsa_components(n, e).map_err(|_| "bad RSA key")?;
                (KeyKind::Rsa, key)
            }
            Some("EC") => {
                let (size, kind) = match str_member("crv") {
                    Some("P-256") => (32, KeyKind::EcP256),
                    Some("P-384") => (48, KeyKind::EcP384),
                    _ => return Err("unsupported EC curve"),
                };
                let (Some(x), Some(y)) = (str_member("x"), str_member("y")) else {
                    return Err("EC key without x or y");
                };
                let key = DecodingKey::from_ec_components(x, y).map_err(|_| "bad EC key")?;
                if key.as_bytes().len() != 1 + 2 * size {
                    return Err("EC coordinates of the wrong size");
                }
                (kind, key)
            }
            Some("OKP") => {
                if str_member("crv") != Some("Ed25519") {
                    return Err("unsupported OKP curve");
                }
                let x = str_member("x").ok_or("OKP key without x")?;
                let key = DecodingKey::from_ed_components(x).map_err(|_| "bad Ed25519 key")?;
                if key.as_bytes().len() != 32 {
                    return Err("Ed25519 key of the wrong size");
                }
                (KeyKind::Ed25519, key)
            }
            // A symmetric key must never come from a URL: whoever can serve
            // the JWKS could then mint tokens.
            Some("oct") => return Err("symmetric (oct) keys are never taken from a JWKS"),
            _ => return Err("unsupported kty"),
        };
        if let Some(alg) = pinned {
            if !kind.algorithms().contains(&alg) {
                return Err("alg does not match the key type");
            }
        }
        Ok((kid, Self { kind, key, pinned }))
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
        if !self.allows(alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        match jsonwebtoken::crypto::verify(signature, message, &self.key, alg) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::BadSignature),
            Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => Err(TokenError::Malformed),
            Err(_) => Err(TokenError::BadSignature),
        }
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
        let x = URL_SAFE_NO_PAD.encode(ed.key.as_bytes());
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
