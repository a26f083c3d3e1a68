//! `wsbus serve`'s configuration turned into the runtime's [`Security`] and
//! the bus's channel policies and schemas. Every failure names the key (and
//! the file) that caused it; nothing here prints a secret.

use std::net::IpAddr;
use std::sync::Arc;

use wsbus::auth::{AuthConfig, TokenVerifier};
use wsbus::bayeux::{ChannelPattern, ChannelPolicy};
use wsbus::bus::ChannelSchemas;
use wsbus::limits::{ConnectionLimiter, RateLimit};
use wsbus::proxy::TrustedProxies;
use wsbus::schema::Schema;
use wsbus::security::{PathSchema, Security, TokenAuth};

use crate::config::{Config, ConfigError, io_reason};

/// The runtime's security settings from `[auth]`, `[limits]` and
/// `[[websocket.schemas]]`.
pub fn from_config(config: &Config) -> Result<Security, ConfigError> {
    let auth = match &config.auth {
        None => None,
        Some(section) => {
            let jwt_public_key_pem = match &section.jwt_public_key {
                None => None,
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "auth.jwt_public_key",
                        format!("cannot read {}: {}", path.display(), io_reason(&e)),
                    )
                })?),
            };
            let defaults = AuthConfig::default();
            let verifier = TokenVerifier::new(AuthConfig {
                jwt_secret: section
                    .jwt_secret
                    .as_ref()
                    .map(|s| wsbus::auth::Secret::new(s.expose())),
                jwt_public_key_pem,
                jwks_url: section.jwks_url.clone(),
                issuer: section.issuer.clone(),
                audience: section.audience.clone(),
                leeway: section.leeway.unwrap_or(defaults.leeway),
                ..defaults
            })
            .map_err(|e| ConfigError::new("auth", e.to_string()))?;
            Some(TokenAuth {
                verifier,
                required: section.required,
            })
        }
    };
    let limits = &config.limits;
    let trusted_proxies = TrustedProxies::parse(limits.trusted_proxies.iter().map(String::as_str))
        .map_err(|e| ConfigError::new("limits.trusted_proxies", e.to_string()))?;
    let message_rate = (limits.messages_per_second > 0).then(|| {
        let rate = RateLimit::new(limits.messages_per_second);
        match limits.messages_burst {
            Some(burst) => rate.with_burst(burst),
            None => rate,
        }
    });
    let mut schemas = std::collections::HashMap::new();
    for (i, entry) in config.websocket.schemas.iter().enumerate() {
        let schema = Schema::from_file(&entry.schema).map_err(|e| {
            ConfigError::new(format!("websocket.schemas[{i}].schema"), e.to_string())
        })?;
        schemas.insert(
            entry.path.clone(),
            PathSchema::new(schema, entry.on_invalid),
        );
    }
    Ok(Security {
        auth,
        trusted_proxies,
        connections_per_ip: (limits.connections_per_ip > 0)
            .then(|| ConnectionLimiter::<IpAddr>::new(limits.connections_per_ip)),
        connections_per_user: (limits.connections_per_user > 0)
            .then(|| ConnectionLimiter::<Arc<str>>::new(limits.connections_per_user)),
        message_rate,
        schemas,
    })
}

/// The bus's policies and schemas from `[[bus.channels]]`.
#[allow(clippy::type_complexity)]
pub fn bus_channels(
    config: &Config,
) -> Result<(Vec<(ChannelPattern, ChannelPolicy)>, ChannelSchemas), ConfigError> {
    let mut policies = Vec::new();
    let mut schemas = Vec::new();
    for (i, channel) in config.bus.channels.iter().enumerate() {
        policies.push((
            channel.pattern.clone(),
            ChannelPolicy {
                subscribe: channel.subscribe,
                publish: channel.publish,
                history: channel.history,
                ..ChannelPolicy::DEFAULT
            },
        ));
        if let Some(path) = &channel.schema {
            let schema = Schema::from_file(path).map_err(|e| {
                ConfigError::new(format!("bus.channels[{i}].schema"), e.to_string())
            })?;
            schemas.push((channel.pattern.clone(), schema));
        }
    }
    Ok((policies, ChannelSchemas::new(schemas)))
}
