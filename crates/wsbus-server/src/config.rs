//! `wsbus serve` configuration: a TOML file, overridden by environment
//! variables `WSBUS_<SECTION>__<KEY>` (e.g. `WSBUS_BUS__WEBSOCKET_ENABLED`),
//! overridden by command-line flags. Invalid configuration fails at start with
//! a message that names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use wsbus::proto::{DeflateConfig, Limits};
use wsbus::{ServerConfig, SlowConsumerPolicy, SocketSettings};

/// The prefix of configuration environment variables.
const ENV_PREFIX: &str = "WSBUS_";

/// Top-level keys. Environment variables are read only under these, so that
/// `WSBUS_LOG` and the test tools' `WSBUS_*` variables are not taken for
/// configuration; an unknown key *inside* a section is still an error.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "demo",
    "auth",
    "websocket",
    "bus",
    "session",
    "limits",
    "keepalive",
    "outbound",
    "shutdown",
    "deflate",
    "tls",
    "log",
    "admin",
    "cluster",
];

/// `WSBUS_LOG`: the tracing filter of every command (see `crate::log`), not
/// the `[log]` section, though it has that section's name.
const LOG_FILTER_VAR: &str = "WSBUS_LOG";

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The chat demo, its page and its demo login (anyone signs in under any
    /// name). Unset: on for the no-config first run, off once `[auth]` is
    /// configured — see [`Config::demo_enabled`].
    pub demo: Option<bool>,
    /// Token authentication; absent: no tokens are checked.
    pub auth: Option<AuthSection>,
    /// Raw WebSocket endpoints' options.
    pub websocket: WebSocketSection,
    pub bus: BusConfig,
    pub session: SessionConfig,
    pub limits: LimitsConfig,
    pub keepalive: KeepaliveConfig,
    pub outbound: OutboundConfig,
    pub shutdown: ShutdownConfig,
    pub deflate: DeflateSection,
    pub tls: Option<TlsConfig>,
    /// `[log]`: the tracing filter and output format.
    pub log: LogConfig,
    /// `[admin]`: the admin API and page; off without a token.
    pub admin: AdminConfig,
    /// `[cluster]`: several nodes over one Redis; off without `redis_url`.
    pub cluster: crate::cluster::ClusterSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            demo: None,
            auth: None,
            websocket: WebSocketSection::default(),
            bus: BusConfig::default(),
            session: SessionConfig::default(),
            limits: LimitsConfig::default(),
            keepalive: KeepaliveConfig::default(),
            outbound: OutboundConfig::default(),
            shutdown: ShutdownConfig::default(),
            deflate: DeflateSection::default(),
            tls: None,
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            cluster: crate::cluster::ClusterSection::default(),
        }
    }
}

/// The message bus.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Where the bus is served: WebSocket at the path (and the path with a
    /// trailing `/`), long-polling POSTs at the path and below it
    /// (`/amb/connect`, …). Must not take a path of the page routes.
    pub path: String,
    /// The transport switch: `false` refuses WebSocket on the bus (400) and
    /// leaves every client on long-polling.
    pub websocket_enabled: bool,
    /// The bearer token of `POST /api/publish` (besides a JWT whose claims
    /// allow the channel, when `[auth]` is set); unset: only JWTs.
    pub publish_token: Option<Secret>,
    /// Channel policies, most specific pattern first (`[[bus.channels]]`).
    pub channels: Vec<ChannelSection>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            path: "/amb".into(),
            websocket_enabled: true,
            publish_token: None,
            channels: Vec::new(),
        }
    }
}

/// One `[[bus.channels]]` entry: the rules of the channels `pattern`
/// matches (the most specific matching pattern wins).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub pattern: wsbus_bayeux::ChannelPattern,
    #[serde(default)]
    pub subscribe: wsbus_bayeux::SubscribePolicy,
    #[serde(default)]
    pub publish: wsbus_bayeux::PublishPolicy,
    /// JSON Schema of the messages' `data`, both directions.
    pub schema: Option<PathBuf>,
    /// Whether messages are kept for replay (default true).
    #[serde(default = "yes")]
    pub history: bool,
}

fn yes() -> bool {
    true
}

/// `[auth]`: JWT verification (SPEC §5).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `true`: upgrades and bus handshakes without a valid token are refused.
    #[serde(default)]
    pub required: bool,
    /// HS256 secret.
    pub jwt_secret: Option<Secret>,
    /// RS256 / ES256 / EdDSA public key, a PEM file.
    pub jwt_public_key: Option<PathBuf>,
    /// Keys fetched from this JWKS URL and cached by issuer and `kid`.
    pub jwks_url: Option<String>,
    /// Checked when set (`iss`).
    pub issuer: Option<String>,
    /// Checked when set (`aud`).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default, with = "humantime_serde::option")]
    pub leeway: Option<Duration>,
}

/// `[websocket]`: the raw WebSocket endpoints (the demo's `/chat`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSection {
    /// JSON Schemas of text messages, per endpoint path.
    pub schemas: Vec<PathSchemaSection>,
}

/// One `[[websocket.schemas]]` entry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathSchemaSection {
    /// The endpoint's path, e.g. `/chat`.
    pub path: String,
    /// The JSON Schema file.
    pub schema: PathBuf,
    /// What an invalid inbound message does: `close` (1007) or `error` (an
    /// ERROR event to the application, the socket stays open).
    #[serde(default, serialize_with = "unit_variant")]
    pub on_invalid: wsbus::security::OnInvalid,
}

/// A configured secret: read like a string, never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret serializes as `"<redacted>"`: the admin API's server info shows
/// that it is set, never what it is.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// What a [`Secret`] serializes as.
pub const REDACTED: &str = "<redacted>";

/// A field-less enum of another crate that derives `Deserialize` with
/// `rename_all = "snake_case"` but not `Serialize`: its `Debug` name in
/// snake case, which is the name its configuration value has.
fn unit_variant<T: std::fmt::Debug, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let name = format!("{value:?}");
    let mut snake = String::with_capacity(name.len() + 2);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    serializer.serialize_str(&snake)
}

/// `[log]`: what is logged, and how.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The base filter, in `tracing` `EnvFilter` directives
    /// (`info`, `info,wsbus::bus=debug`, …). The `WSBUS_LOG` environment
    /// variable, when set, replaces it (as `RUST_LOG` does for most Rust
    /// programs); `PUT /admin/api/log` adds to it for a while.
    pub level: String,
    /// `text` (one line per event, for people) or `json` (one JSON object
    /// per line, for log pipelines).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The log's line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// tracing-subscriber's default text lines (coloured at a terminal).
    #[default]
    Text,
    /// One JSON object per event (tracing-subscriber's JSON format).
    Json,
}

/// `[admin]`: the admin API (`/admin/api/…`) and page (`/admin`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token every admin request must present in its
    /// `Authorization` header; unset: the admin API and page are off (404).
    pub token: Option<Secret>,
    /// JSON field names whose values traffic captures mask as
    /// `"<redacted>"` at any depth, besides `access_token`,
    /// `authorization`, `cookie` and `set-cookie` (always masked).
    pub capture_redact: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// HTTP sessions idle this long end (and close their bound sockets).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// 100 messages/s per connection or bus session: ten times what a person
/// typing or a UI tracking a pointer produces, far below what one client can
/// push to hurt the others.
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 100;
/// 1,000 sockets per client address: a large office behind one NAT, not a
/// single host exhausting the server's descriptors.
pub const DEFAULT_CONNECTIONS_PER_IP: usize = 1_000;
/// 100 sockets per user: tabs and devices of one person, not a stolen
/// token used to open thousands.
pub const DEFAULT_CONNECTIONS_PER_USER: usize = 100;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages per second per connection and per bus session (a token
    /// bucket); 0 disables the limit.
    pub messages_per_second: u32,
    /// Messages a client may send at once above the rate (the bucket's
    /// size); default: the rate, i.e. one second's worth.
    pub messages_burst: Option<u32>,
    /// WebSocket connections per client address; 0: no limit.
    pub connections_per_ip: usize,
    /// WebSocket connections per authenticated user; 0: no limit.
    pub connections_per_user: usize,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<String>,
    pub max_frame_size: usize,
    pub max_message_size: usize,
    pub max_inflated_size: usize,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let server = ServerConfig::default();
        LimitsConfig {
            messages_per_second: DEFAULT_MESSAGES_PER_SECOND,
            messages_burst: None,
            connections_per_ip: DEFAULT_CONNECTIONS_PER_IP,
            connections_per_user: DEFAULT_CONNECTIONS_PER_USER,
            trusted_proxies: Vec::new(),
            max_frame_size: server.limits.max_frame_size as usize,
            max_message_size: server.limits.max_message_size,
            max_inflated_size: server.limits.max_inflated_size,
            max_connections: server.max_connections,
            max_request_bytes: server.max_request_bytes,
            handshake_timeout: server.handshake_timeout,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        let socket = SocketSettings::default();
        KeepaliveConfig {
            interval: socket.keepalive_interval,
            timeout: socket.keepalive_timeout,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    pub max_bytes: usize,
    #[serde(serialize_with = "unit_variant")]
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        let socket = SocketSettings::default();
        OutboundConfig {
            max_bytes: socket.max_outbound_bytes,
            slow_consumer: socket.slow_consumer,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: ServerConfig::default().drain_timeout,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateSection {
    pub enabled: bool,
    pub level: u32,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
    /// Accept context takeover (RFC 7692 §7.1.1) when clients offer it: a
    /// better ratio, ~440 KiB per connection at 15 bits. Default off.
    pub context_takeover: bool,
    /// With `context_takeover`, how many connections may hold it at once.
    pub context_takeover_max_connections: usize,
}

impl Default for DeflateSection {
    fn default() -> Self {
        let d = DeflateConfig::default();
        DeflateSection {
            enabled: true,
            level: d.level,
            server_max_window_bits: d.server_max_window_bits,
            client_max_window_bits: d.client_max_window_bits,
            context_takeover: false,
            context_takeover_max_connections: d.context_takeover_max_connections,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why the configuration could not be loaded: where (a key, a file, an
/// environment variable or a flag) and why, printed as one line
/// `<where>: <why>`.
#[derive(Debug)]
pub struct ConfigError {
    pub place: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(place: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            place: place.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// `err`'s text for people: without the " (os error N)" suffix, starting
/// in lower case, as the rest of an `error: …` line.
pub fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `line:column` (from 1) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

impl Config {
    /// Whether the demo (chat at `/chat`, its page, the demo login) is on:
    /// `demo` if set, else on unless `[auth]` is configured.
    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or(self.auth.is_none())
    }

    /// Load from an optional file, then the environment, then `flags`
    /// (already parsed `key = value` overrides, e.g. `listen`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(&str, toml::Value)],
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        path.display().to_string(),
                        format!("cannot read: {}", io_reason(&e)),
                    )
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    let place = match e.span() {
                        Some(span) => {
                            let (line, column) = line_and_column(&text, span.start);
                            format!("{}:{line}:{column}", path.display())
                        }
                        None => path.display().to_string(),
                    };
                    ConfigError::new(place, e.message().trim_end())
                })?
            }
            None => toml::Table::new(),
        };
        // Which environment variable or flag set each key, to name it when
        // its value is refused.
        let mut origins: Vec<(String, String)> = Vec::new();
        for (name, raw) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) || name == LOG_FILTER_VAR {
                continue;
            }
            set(&mut table, &path, parse_env_value(&raw))
                .map_err(|reason| ConfigError::new(name.clone(), reason))?;
            origins.push((path.join("."), name));
        }
        for (key, value) in flags {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set(&mut table, &path, value.clone())
                .map_err(|reason| ConfigError::new(format!("--{key}"), reason))?;
            origins.push((key.to_string(), format!("--{key}")));
        }
        let config: Config = serde_path_to_error::deserialize(table).map_err(|err| {
            let key = err.path().to_string();
            let mut reason = err.into_inner().message().trim_end().to_owned();
            // The last setting of a key is the one that was read.
            if let Some((_, origin)) = origins.iter().rev().find(|(k, _)| *k == key) {
                reason.push_str(&format!(" (set by {origin})"));
            }
            ConfigError::new(key, reason)
        })?;
        if config
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            return Err(ConfigError::new(
                "admin.token",
                "must not be empty (leave it unset to turn the admin API off)",
            ));
        }
        Ok(config)
    }

    /// The runtime settings this configuration describes.
    pub fn server_config(&self) -> ServerConfig {
        let limits = Limits {
            max_frame_size: self.limits.max_frame_size as u64,
            max_message_size: self.limits.max_message_size,
            max_inflated_size: self.limits.max_inflated_size,
        };
        let deflate = self.deflate.enabled.then(|| DeflateConfig {
            level: self.deflate.level,
            server_max_window_bits: self.deflate.server_max_window_bits,
            client_max_window_bits: self.deflate.client_max_window_bits,
            context_takeover_max_connections: self.deflate.context_takeover_max_connections,
            ..if self.deflate.context_takeover {
                DeflateConfig::with_context_takeover()
            } else {
                DeflateConfig::default()
            }
        });
        ServerConfig {
            limits,
            deflate,
            handshake_timeout: self.limits.handshake_timeout,
            max_request_bytes: self.limits.max_request_bytes,
            max_connections: self.limits.max_connections,
            drain_timeout: self.shutdown.drain_timeout,
            session_idle_timeout: self.session.idle_timeout,
            socket: SocketSettings {
                keepalive_interval: self.keepalive.interval,
                keepalive_timeout: self.keepalive.timeout,
                max_outbound_bytes: self.outbound.max_bytes,
                slow_consumer: self.outbound.slow_consumer,
                ..SocketSettings::default()
            },
            ..ServerConfig::default()
        }
    }
}

/// An environment value as TOML when it parses as a TOML value (numbers,
/// booleans, arrays), else as a string (`30m`, `127.0.0.1:80`).
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set(inner, rest, value),
                _ => Err(format!("`{section}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, env(&[]), &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.bus.path, "/amb");
        assert!(config.bus.websocket_enabled);
        assert_eq!(config.session.idle_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("wsbus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wsbus.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:1\"\n[session]\nidle_timeout = \"5m\"\n[bus]\npath = \"/x\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("WSBUS_BUS__WEBSOCKET_ENABLED", "false"),
                ("WSBUS_LISTEN", "0.0.0.0:2"),
                ("HOME", "/"),
                ("WSBUS_LOG", "debug"),
            ]),
            &[("listen", toml::Value::String("127.0.0.1:3".into()))],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:3");
        assert!(!config.bus.websocket_enabled);
        assert_eq!(config.bus.path, "/x");
        assert_eq!(config.session.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn deflate_context_takeover_is_an_opt_in() {
        let deflate = |pairs: &[(&str, &str)]| {
            let config = Config::load(None, env(pairs), &[]).unwrap();
            config.server_config().deflate.unwrap()
        };
        let d = deflate(&[]);
        assert!(d.server_no_context_takeover && d.client_no_context_takeover);
        let d = deflate(&[
            ("WSBUS_DEFLATE__CONTEXT_TAKEOVER", "true"),
            ("WSBUS_DEFLATE__CONTEXT_TAKEOVER_MAX_CONNECTIONS", "10"),
        ]);
        assert!(!d.server_no_context_takeover && !d.client_no_context_takeover);
        assert_eq!(d.context_takeover_max_connections, 10);
    }

    #[test]
    fn log_and_admin_sections() {
        let config = Config::load(
            None,
            env(&[
                // The filter variable, not the `[log]` section.
                ("WSBUS_LOG", "debug"),
                ("WSBUS_LOG__FORMAT", "json"),
                ("WSBUS_ADMIN__TOKEN", "hunter2"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.admin.token.as_ref().unwrap().expose(), "hunter2");
        let err = Config::load(None, env(&[("WSBUS_LOG__FORMAT", "xml")]), &[]).unwrap_err();
        assert!(err.to_string().starts_with("log.format: "), "{err}");
        let err = Config::load(None, env(&[("WSBUS_ADMIN__TOKEN", "")]), &[]).unwrap_err();
        assert!(err.to_string().starts_with("admin.token: "), "{err}");
    }

    /// The admin API's server info: every secret redacted, the rest as
    /// configured.
    #[test]
    fn serialized_configuration_redacts_secrets() {
        let config = Config::load(
            None,
            env(&[
                ("WSBUS_ADMIN__TOKEN", "admin-secret"),
                ("WSBUS_BUS__PUBLISH_TOKEN", "publish-secret"),
                ("WSBUS_AUTH__JWT_SECRET", "jwt-secret"),
            ]),
            &[],
        )
        .unwrap();
        let view = serde_json::to_value(&config).unwrap();
        let text = view.to_string();
        for secret in ["admin-secret", "publish-secret", "jwt-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(view["admin"]["token"], REDACTED);
        assert_eq!(view["auth"]["jwt_secret"], REDACTED);
        assert_eq!(view["outbound"]["slow_consumer"], "close");
        assert_eq!(view["session"]["idle_timeout"], "30m");
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            Config::load(None, env(&[("WSBUS_BUS__WEBSOCKET_ENABLED", "maybe")]), &[]).unwrap_err();
        assert!(err.to_string().contains("bus.websocket_enabled"), "{err}");
        let err =
            Config::load(None, env(&[("WSBUS_SESSION__IDLE_TIMEOUT", "soon")]), &[]).unwrap_err();
        assert!(err.to_string().contains("session.idle_timeout"), "{err}");
        let err = Config::load(None, env(&[("WSBUS_BUS__NOPE", "1")]), &[]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Config::load(None, env(&[("WSBUS_LISTEN", "nowhere")]), &[]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn errors_are_one_line_naming_where_and_why() {
        let err =
            Config::load(None, env(&[("WSBUS_BUS__WEBSOCKET_ENABLED", "maybe")]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bus.websocket_enabled: invalid type: string \"maybe\", expected a boolean \
             (set by WSBUS_BUS__WEBSOCKET_ENABLED)"
        );
        let err = Config::load(None, env(&[]), &[("listen", "nowhere".into())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "listen: invalid socket address syntax (set by --listen)"
        );

        let dir = std::env::temp_dir().join(format!("wsbus-config-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(
            &file,
            "[bus]\npath = \"/amb\"\nwebsocket_enabled = = true\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[]), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", file.display())),
            "{err}"
        );
        for err in [err.to_string(), err.reason] {
            assert!(!err.contains('\n'), "{err:?}");
        }
        let missing = dir.join("missing.toml");
        let err = Config::load(Some(&missing), env(&[]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read: no such file or directory",
                missing.display()
            )
        );
    }
}
