//! The JWS signature algorithms wsbus verifies (RFC 7518 §3.1), and how each
//! maps onto `ring`.

use std::str::FromStr;

/// A JWS `alg` value (RFC 7518 §3.1) that wsbus can verify.
///
/// `none` (RFC 7518 §3.6) is not one: an unsecured token is never accepted.
/// Neither is ES512 (P-521), which `ring` does not verify, nor any name not
/// listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Algorithm {
    /// HMAC with SHA-256 (RFC 7518 §3.2).
    HS256,
    /// HMAC with SHA-384 (RFC 7518 §3.2).
    HS384,
    /// HMAC with SHA-512 (RFC 7518 §3.2).
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (RFC 7518 §3.3).
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (RFC 7518 §3.3).
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256 (RFC 7518 §3.5).
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384 (RFC 7518 §3.5).
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512 (RFC 7518 §3.5).
    PS512,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4).
    ES256,
    /// ECDSA on P-384 with SHA-384 (RFC 7518 §3.4).
    ES384,
    /// EdDSA (RFC 8037 §3.1); wsbus takes Ed25519 keys only.
    EdDSA,
}

/// An `alg` value that is `none`, unknown, or not verifiable by wsbus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsupportedAlgorithm;

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    /// Case-sensitive, as RFC 7515 §4.1.1 says `alg` values are.
    fn from_str(alg: &str) -> Result<Self, Self::Err> {
        Ok(match alg {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return Err(UnsupportedAlgorithm),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        use Algorithm::*;
        for (name, alg) in [
            ("HS256", HS256),
            ("HS384", HS384),
            ("HS512", HS512),
            ("RS256", RS256),
            ("RS384", RS384),
            ("RS512", RS512),
            ("PS256", PS256),
            ("PS384", PS384),
            ("PS512", PS512),
            ("ES256", ES256),
            ("ES384", ES384),
            ("EdDSA", EdDSA),
        ] {
            assert_eq!(name.parse(), Ok(alg));
        }
    }

    #[test]
    fn none_and_unknown_refused() {
        for bad in [
            "none", "None", "NONE", "", "hs256", "ES512", "ES256K", "Ed25519", "HS256 ",
        ] {
            assert_eq!(bad.parse::<Algorithm>(), Err(UnsupportedAlgorithm), "{bad}");
        }
    }
}
