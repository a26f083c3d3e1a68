//! The verified claims of a token and their validation (RFC 7519 §4.1).
//!
//! wsbus validates the registered claims itself: the clock is passed in
//! (tests are deterministic), and a claim of the wrong JSON type is refused
//! instead of being skipped (a numeric `iss` must not pass an issuer check).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::TokenError;

/// The largest `exp`/`nbf` accepted: 9999-12-31T23:59:59Z. A larger
/// NumericDate is not a date anyone means, and refusing it keeps the
/// conversion to [`SystemTime`] free of overflow on every platform.
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The claims of a verified token.
///
/// `sub` becomes the session's user key, `name` its display name, `channels`
/// the channel patterns the token may use (the bus policy `claim`). Every
/// other claim, including the registered `exp`, `nbf`, `iat`, `iss`, `aud`
/// and `jti`, stays in [`Claims::extra`] as it was in the token, so an
/// application can read them; `exp` is also available as
/// [`Claims::expires_at`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The `sub` claim: who the token is about. Required.
    pub sub: String,
    /// The `name` claim (OpenID Connect Core §5.1), a display name.
    pub name: Option<String>,
    /// The `exp` claim as a time; `None` for a token without `exp`, which
    /// is accepted and never expires.
    pub expires_at: Option<SystemTime>,
    /// The `channels` claim: the channel patterns the token may use.
    pub channels: Option<Vec<String>>,
    /// Every other claim of the payload, in token order.
    pub extra: Map<String, Value>,
}

/// What the claims are checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRules<'a> {
    pub(crate) issuer: Option<&'a str>,
    pub(crate) audience: Option<&'a str>,
    pub(crate) leeway: Duration,
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly
/// fractional. Anything else is a malformed token.
fn numeric_date(value: &Value) -> Result<f64, TokenError> {
    let secs = value.as_f64().ok_or(TokenError::Malformed)?;
    if !secs.is_finite() || !(0.0..=MAX_NUMERIC_DATE).contains(&secs) {
        return Err(TokenError::Malformed);
    }
    Ok(secs)
}

/// Check the claims of a payload whose signature has been verified and
/// split them into [`Claims`].
pub(crate) fn validate(
    mut payload: Map<String, Value>,
    rules: ClaimRules<'_>,
    now: SystemTime,
) -> Result<Claims, TokenError> {
    // A clock before 1970 is a broken host; treat it as the epoch.
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let leeway = rules.leeway.as_secs_f64();

    // RFC 7519 §4.1.4: the current time MUST be before `exp`.
    let expires_at = match payload.get("exp") {
        None => None,
        Some(exp) => {
            let exp = numeric_date(exp)?;
            if now >= exp + leeway {
                return Err(TokenError::Expired);
            }
            Some(UNIX_EPOCH + Duration::from_secs_f64(exp))
        }
    };
    // RFC 7519 §4.1.5: the current time MUST be after or equal to `nbf`.
    if let Some(nbf) = payload.get("nbf") {
        if now + leeway < numeric_date(nbf)? {
            return Err(TokenError::NotYetValid);
        }
    }
    // RFC 7519 §4.1.1: `iss` is a case-sensitive string; compared only when
    // an issuer is configured. Missing or not a string: wrong issuer.
    if let Some(issuer) = rules.issuer {
        if payload.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(TokenError::WrongIssuer);
        }
    }
    // RFC 7519 §4.1.3: `aud` is a string or an array of strings, and the
    // configured audience must be one of them. Without a configured
    // audience the server has no identity to look for, so `aud` is not
    // checked (documented on `AuthConfig::audience`).
    if let Some(audience) = rules.audience {
        let ok = match payload.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !ok {
            return Err(TokenError::WrongAudience);
        }
    }

    let sub = match payload.remove("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        Some(Value::String(_)) | None => return Err(TokenError::MissingSubject),
        Some(_) => return Err(TokenError::Malformed),
    };
    let name = match payload.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(TokenError::Malformed),
    };
    // The channel patterns gate what the token may do, so a claim of the
    // wrong shape is refused rather than read as "no channels".
    let channels = match payload.remove("channels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(pattern) => Ok(pattern),
                    _ => Err(TokenError::Malformed),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok(Claims {
        sub,
        name,
        expires_at,
        channels,
        extra: payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rules() -> ClaimRules<'static> {
        ClaimRules {
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }
    }

    fn check(payload: Value, rules: ClaimRules<'_>) -> Result<Claims, TokenError> {
        let Value::Object(map) = payload else {
            panic!("object")
        };
        validate(map, rules, at(NOW))
    }

    #[test]
    fn splits_claims() {
        let c = check(
            json!({"sub": "u1", "name": "Ann", "exp": NOW + 60, "channels": ["/chat/*"], "role": "admin"}),
            rules(),
        )
        .unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.name.as_deref(), Some("Ann"));
        assert_eq!(c.expires_at, Some(at(NOW + 60)));
        assert_eq!(c.channels, Some(vec!["/chat/*".to_owned()]));
        assert_eq!(c.extra.get("role"), Some(&json!("admin")));
        assert_eq!(c.extra.get("exp"), Some(&json!(NOW + 60)));
        assert!(!c.extra.contains_key("sub"));
    }

    #[test]
    fn exp_with_leeway() {
        // Exactly at exp + leeway: expired (the time must be *before*).
        assert_eq!(
            check(json!({"sub": "u", "exp": NOW - 5}), rules()),
            Err(TokenError::Expired)
        );
        assert!(check(json!({"sub": "u", "exp": NOW - 4}), rules()).is_ok());
        assert!(check(json!({"sub": "u", "exp": NOW as f64 - 4.5}), rules()).is_ok());
        let strict = ClaimRules {
            leeway: Duration::ZERO,
            ..rules()
        };
        assert_eq!(
            check(json!({"sub": "u", "exp": NOW}), strict),
            Err(TokenError::Expired)
        );
        assert!(check(json!({"sub": "u", "exp": NOW + 1}), strict).is_ok());
    }

    #[test]
    fn no_exp_is_accepted() {
        let c = check(json!({"sub": "u"}), rules()).unwrap();
        assert_eq!(c.expires_at, None);
    }

    #[test]
    fn nbf_with_leeway() {
        assert!(check(json!({"sub": "u", "nbf": NOW + 5}), rules()).is_ok());
        assert_eq!(
            check(json!({"sub": "u", "nbf": NOW + 6}), rules()),
            Err(TokenError::NotYetValid)
        );
        assert!(check(json!({"sub": "u", "nbf": NOW}), rules()).is_ok());
    }

    #[test]
    fn bad_dates_are_malformed() {
        for exp in [
            json!("soon"),
            json!(-1),
            json!(1e300),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(
                check(json!({"sub": "u", "exp": exp}), rules()),
                Err(TokenError::Malformed)
            );
            assert_eq!(
                check(json!({"sub": "u", "nbf": exp}), rules()),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn issuer_only_when_configured() {
        assert!(check(json!({"sub": "u", "iss": "other"}), rules()).is_ok());
        let r = ClaimRules {
            issuer: Some("https://idp"),
            ..rules()
        };
        assert!(check(json!({"sub": "u", "iss": "https://idp"}), r).is_ok());
        for iss in [json!("https://IDP"), json!(1), json!(["https://idp"])] {
            assert_eq!(
                check(json!({"sub": "u", "iss": iss}), r),
                Err(TokenError::WrongIssuer)
            );
        }
        assert_eq!(check(json!({"sub": "u"}), r), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn audience_string_or_array() {
        assert!(check(json!({"sub": "u", "aud": "x"}), rules()).is_ok());
        let r = ClaimRules {
            audience: Some("wsbus"),
            ..rules()
        };
        assert!(check(json!({"sub": "u", "aud": "wsbus"}), r).is_ok());
        assert!(check(json!({"sub": "u", "aud": ["a", "wsbus"]}), r).is_ok());
        for aud in [
            json!("a"),
            json!(["a", "b"]),
            json!([]),
            json!(7),
            json!({"wsbus": 1}),
        ] {
            assert_eq!(
                check(json!({"sub": "u", "aud": aud}), r),
                Err(TokenError::WrongAudience)
            );
        }
        assert_eq!(
            check(json!({"sub": "u"}), r),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn sub_required() {
        assert_eq!(
            check(json!({"name": "x"}), rules()),
            Err(TokenError::MissingSubject)
        );
        assert_eq!(
            check(json!({"sub": ""}), rules()),
            Err(TokenError::MissingSubject)
        );
        assert_eq!(
            check(json!({"sub": 42}), rules()),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn typed_claims_are_checked() {
        assert_eq!(
            check(json!({"sub": "u", "name": 1}), rules()),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            check(json!({"sub": "u", "channels": "/a"}), rules()),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            check(json!({"sub": "u", "channels": ["/a", 1]}), rules()),
            Err(TokenError::Malformed)
        );
        let c = check(json!({"sub": "u", "channels": [], "name": null}), rules()).unwrap();
        assert_eq!(c.channels, Some(vec![]));
        assert_eq!(c.name, None);
    }
}
