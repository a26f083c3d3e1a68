//! Logging: `tracing` to standard error, as text or JSON lines, through a
//! filter that the admin API can change at run time ([`LogControl`]).
//!
//! # The filter
//!
//! The *base* filter is `WSBUS_LOG` when that variable is set (the
//! convention of `RUST_LOG`, and what scripts and tests already use), else
//! `[log] level` (default `info`). `PUT /admin/api/log` sets an *override*:
//! the filter becomes the base followed by the override's directives (so
//! `wsbus::bus=debug` raises one target and leaves the rest as configured;
//! where both name the same target, `EnvFilter` takes the override's, the
//! later one), optionally for a time after which the base comes back by
//! itself. A new override replaces the previous one; it never stacks.
//!
//! # Targets
//!
//! Components log under `wsbus::<component>` (SPEC §6): `handshake`
//! (upgrades and their refusals), `frames` (protocol errors and closes),
//! `app` (application callbacks), `bus` (the Bayeux bus), `auth` (tokens),
//! `limits` (rate and connection limits), `cluster`, `admin` (this API:
//! filter changes and reverts, disconnects). Three more are kept because
//! they name what they log better than any of these: `wsbus::schema`
//! (messages a JSON Schema refused), `wsbus::session` (HTTP sessions'
//! expiry) and `wsbus::chat` (the demo chat, whose lines carry its module
//! path). The binary's own lines (start, shutdown) are under `wsbus`.
//! `wsbus=debug` raises them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing_subscriber::filter::{Directive, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::config::LogFormat;

/// The environment variable that replaces `[log] level`.
pub const LOG_ENV: &str = "WSBUS_LOG";

/// The longest override accepted, in bytes: directives name targets and
/// levels; every event is matched against them, and kilobytes of span-field
/// filters would only slow every log call down.
pub const MAX_DIRECTIVE_BYTES: usize = 1024;

/// The longest `ttl` accepted: a raised level is for a reproduction window
/// (minutes, hours); a day bounds one that was forgotten.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Install the subscriber of a command other than `serve`: `WSBUS_LOG` or
/// `info`, text. An invalid `WSBUS_LOG` falls back to `info` (these commands
/// have no configuration to report it against).
pub fn init_default() {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|value| parse_filter(&value).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    install(filter, LogFormat::Text);
}

/// Install the subscriber of `wsbus serve`: the base filter (`WSBUS_LOG`,
/// else `configured`) in `format`, behind a reload handle. `Err` names the
/// setting whose filter is invalid, and why.
pub fn init(configured: &str, format: LogFormat) -> Result<LogControl, (&'static str, String)> {
    let (setting, base) = match std::env::var(LOG_ENV) {
        Ok(value) => (LOG_ENV, value),
        Err(_) => ("log.level", configured.to_owned()),
    };
    let filter = parse_filter(&base).map_err(|why| (setting, why))?;
    let handle = install(filter, format);
    Ok(LogControl::new(handle, base))
}

type Handle = reload::Handle<EnvFilter, Registry>;

/// The global subscriber: `filter` (reloadable) in front of a formatter
/// writing to standard error.
fn install(filter: EnvFilter, format: LogFormat) -> Handle {
    use std::io::IsTerminal;
    let (filter, handle) = reload::Layer::new(filter);
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        // Colour codes only for a person at a terminal, not in log files.
        LogFormat::Text => output.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    // A second install (only tests could try) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    handle
}

/// `directives` as a filter, or why not (naming the directive at fault).
fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    check_directives(directives)?;
    EnvFilter::builder()
        .parse(directives)
        .map_err(|err| format!("invalid filter `{directives}`: {err}"))
}

/// Each comma-separated directive of `directives` parses (`EnvFilter`
/// splits on commas the same way), or the first that does not, named.
fn check_directives(directives: &str) -> Result<(), String> {
    for directive in directives.split(',').filter(|d| !d.trim().is_empty()) {
        directive
            .trim()
            .parse::<Directive>()
            .map_err(|err| format!("invalid directive `{}`: {err}", directive.trim()))?;
    }
    Ok(())
}

/// The run-time side of the filter: read it, override it, revert it.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogControl {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    base: String,
    state: Mutex<Option<Override>>,
    /// Numbers the overrides, so that a revert task reverts its own
    /// override and never a later one.
    generation: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The override in force.
struct Override {
    directive: String,
    generation: u64,
    /// When it reverts by itself, and the task that will revert it.
    revert: Option<(SystemTime, tokio::task::AbortHandle)>,
}

/// What `GET /admin/api/log` shows.
#[derive(Debug, serde::Serialize)]
pub struct LogState {
    /// The base filter (`WSBUS_LOG` or `[log] level`).
    pub base: String,
    /// The override's directives, if one is in force.
    pub directive: Option<String>,
    /// The filter in force, as `EnvFilter` prints it.
    pub filter: String,
    /// When the override reverts by itself: RFC 3339, UTC.
    pub revert_at: Option<String>,
    /// Seconds until then, rounded up.
    pub revert_in_seconds: Option<u64>,
}

/// Why an override was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum OverrideError {
    /// The directive does not parse (the message names it).
    InvalidDirective(String),
    /// The `ttl` is zero or above [`MAX_TTL`].
    InvalidTtl(String),
}

impl std::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverrideError::InvalidDirective(why) | OverrideError::InvalidTtl(why) => {
                f.write_str(why)
            }
        }
    }
}

impl LogControl {
    fn new(handle: Handle, base: String) -> Self {
        LogControl {
            inner: Arc::new(Inner {
                handle,
                base,
                state: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The filter now, and the override's revert if one is pending.
    pub fn state(&self) -> LogState {
        let filter = self
            .inner
            .handle
            .with_current(ToString::to_string)
            .unwrap_or_default();
        let state = self.inner.state.lock().expect("log state lock");
        let revert = state.as_ref().and_then(|o| o.revert.as_ref()).map(|r| r.0);
        LogState {
            base: self.inner.base.clone(),
            directive: state.as_ref().map(|o| o.directive.clone()),
            filter,
            revert_at: revert.map(|at| humantime::format_rfc3339_seconds(at).to_string()),
            // Rounded up: "0 s" only once it is due.
            revert_in_seconds: revert.map(|at| {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                left.as_secs() + u64::from(left.subsec_nanos() > 0)
            }),
        }
    }

    /// The filter becomes the base plus `directive`, until `ttl` has passed
    /// (then the base alone again) or the next change. Logged at `info` on
    /// `wsbus::admin` (under the new filter). Must run in a Tokio runtime
    /// when `ttl` is given. On error the filter is unchanged.
    pub fn set_override(
        &self,
        directive: &str,
        ttl: Option<Duration>,
    ) -> Result<LogState, OverrideError> {
        let directive = directive.trim();
        if directive.is_empty() {
            return Err(OverrideError::InvalidDirective(
                "`directive` is empty (DELETE /admin/api/log reverts to the base filter)".into(),
            ));
        }
        if directive.len() > MAX_DIRECTIVE_BYTES {
            return Err(OverrideError::InvalidDirective(format!(
                "`directive` is longer than {MAX_DIRECTIVE_BYTES} bytes"
            )));
        }
        if let Some(ttl) = ttl
            && (ttl.is_zero() || ttl > MAX_TTL)
        {
            return Err(OverrideError::InvalidTtl(format!(
                "`ttl` must be above 0 and at most {}",
                humantime::format_duration(MAX_TTL)
            )));
        }
        check_directives(directive).map_err(OverrideError::InvalidDirective)?;
        let combined = format!("{},{directive}", self.inner.base);
        let filter = parse_filter(&combined).map_err(OverrideError::InvalidDirective)?;
        {
            let mut state = self.inner.state.lock().expect("log state lock");
            // Reload under the state lock: two changes racing end with the
            // filter of the one whose state stays.
            self.inner
                .handle
                .reload(filter)
                .map_err(|err| OverrideError::InvalidDirective(err.to_string()))?;
            let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
            let revert = ttl.map(|ttl| {
                let control = self.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(ttl).await;
                    control.revert_expired(generation);
                });
                (SystemTime::now() + ttl, task.abort_handle())
            });
            if let Some(Override {
                revert: Some((_, previous)),
                ..
            }) = state.replace(Override {
                directive: directive.to_owned(),
                generation,
                revert,
            }) {
                previous.abort();
            }
        }
        match ttl {
            Some(ttl) => tracing::info!(
                target: "wsbus::admin",
                directive,
                ttl = %humantime::format_duration(ttl),
                "log filter raised: base plus the directive until the ttl ends"
            ),
            None => tracing::info!(
                target: "wsbus::admin",
                directive,
                "log filter changed: base plus the directive, until changed again"
            ),
        }
        Ok(self.state())
    }

    /// Back to the base filter now; `false` if no override was in force.
    pub fn clear_override(&self) -> bool {
        let previous = {
            let mut state = self.inner.state.lock().expect("log state lock");
            let previous = state.take();
            if previous.is_some() {
                self.reload_base();
            }
            previous
        };
        let Some(previous) = previous else {
            return false;
        };
        if let Some((_, task)) = previous.revert {
            task.abort();
        }
        tracing::info!(
            target: "wsbus::admin",
            directive = previous.directive,
            "log filter reverted to the base (by request)"
        );
        true
    }

    /// The end of override `generation`'s revert task: back to the base,
    /// unless a later change took over (the wall clock is not consulted: it
    /// may jump).
    fn revert_expired(&self, generation: u64) {
        let directive = {
            let mut state = self.inner.state.lock().expect("log state lock");
            if state.as_ref().is_none_or(|o| o.generation != generation) {
                return;
            }
            self.reload_base();
            state.take().map(|o| o.directive)
        };
        tracing::info!(
            target: "wsbus::admin",
            directive,
            "log filter reverted to the base: the ttl ended"
        );
    }

    fn reload_base(&self) {
        // The base parsed at start; it parses again.
        if let Ok(filter) = parse_filter(&self.inner.base) {
            let _ = self.inner.handle.reload(filter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control whose filter layer lives in a subscriber of its own (not
    /// the global one, which the handle would otherwise need).
    fn detached(base: &str) -> (LogControl, impl tracing::Subscriber) {
        let (layer, handle) = reload::Layer::new(parse_filter(base).unwrap());
        let subscriber = tracing_subscriber::registry().with(layer);
        (LogControl::new(handle, base.to_owned()), subscriber)
    }

    #[tokio::test(start_paused = true)]
    async fn an_override_reverts_after_its_ttl_and_a_later_one_stays() {
        let (control, _subscriber) = detached("info");
        let state = control
            .set_override("wsbus::bus=debug", Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(state.directive.as_deref(), Some("wsbus::bus=debug"));
        assert!(
            state.filter.contains("wsbus::bus=debug"),
            "{}",
            state.filter
        );
        assert_eq!(state.revert_in_seconds, Some(60));
        tokio::time::sleep(Duration::from_secs(61)).await;
        let state = control.state();
        assert_eq!(state.directive, None);
        assert_eq!(state.filter, "info");
        assert_eq!(state.revert_at, None);

        // A change replaces the previous one and its pending revert.
        control
            .set_override("wsbus::auth=trace", Some(Duration::from_secs(10)))
            .unwrap();
        control.set_override("wsbus::bus=debug", None).unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(
            control.state().directive.as_deref(),
            Some("wsbus::bus=debug")
        );
        assert!(control.clear_override());
        assert!(!control.clear_override());
        assert_eq!(control.state().filter, "info");
    }

    #[test]
    fn a_refused_override_keeps_the_filter() {
        let (control, _subscriber) = detached("warn");
        let err = control.set_override("wsbus::bus=loud", None).unwrap_err();
        assert!(err.to_string().contains("`wsbus::bus=loud`"), "{err}");
        assert!(control.set_override("", None).is_err());
        assert!(control.set_override(&"a".repeat(2000), None).is_err());
        assert!(matches!(
            control.set_override("debug", Some(Duration::ZERO)),
            Err(OverrideError::InvalidTtl(_))
        ));
        assert!(matches!(
            control.set_override("debug", Some(MAX_TTL * 2)),
            Err(OverrideError::InvalidTtl(_))
        ));
        let state = control.state();
        assert_eq!((state.directive, state.filter.as_str()), (None, "warn"));
    }

    #[test]
    fn invalid_directives_are_named() {
        assert!(check_directives("info,wsbus::bus=debug").is_ok());
        let err = check_directives("info,wsbus::bus=loud").unwrap_err();
        assert!(err.contains("`wsbus::bus=loud`"), "{err}");
        assert!(parse_filter("wsbus=[").is_err());
    }
}
