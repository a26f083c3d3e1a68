//! Access tokens on the bus: which token a batch presents, and what the
//! engine is told of it (a [`Credential`]).
//!
//! A batch presents the `ext.access_token` of its `/meta/handshake` or
//! `/meta/connect` (CometD and Faye clients put it there: browsers cannot
//! set headers on a WebSocket, and long-polling clients rarely do), else the
//! token of its transport: the WebSocket's upgrade (`Authorization` or
//! `?access_token=`, verified then) or the long-polling request's. The
//! engine then refuses a handshake with `401::<reason>`, refreshes a
//! session on a connect, and ends a session whose token expired (see
//! [`wsbus_bayeux::Credential`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use wsbus_bayeux::{Batch, ChannelPattern, Credential, Grant};

use crate::auth::{Claims, TokenError};
use crate::runtime::Runtime;

/// The `ext.access_token` of the batch's handshake or connect, if any.
pub(super) fn ext_token(batch: &Batch) -> Option<&str> {
    batch.iter().flatten().find_map(|message| {
        let channel = message.channel.as_deref()?;
        if channel != "/meta/handshake" && channel != "/meta/connect" {
            return None;
        }
        message.ext_field("access_token")?.as_str()
    })
}

/// Whether the batch holds a `/meta/handshake`.
pub(super) fn has_handshake(batch: &Batch) -> bool {
    batch
        .iter()
        .flatten()
        .any(|message| message.channel.as_deref() == Some("/meta/handshake"))
}

/// What a verified token grants a bus session: its `sub`, the patterns of
/// its `channels` claim (invalid ones are skipped: they match nothing), and
/// its expiry on the engine's clock.
pub(super) fn grant_of(claims: &Claims) -> Grant {
    let channels = claims.channels.as_ref().map(|patterns| {
        patterns
            .iter()
            .filter_map(|p| ChannelPattern::parse(p).ok())
            .collect::<Arc<[_]>>()
    });
    let expires_at = claims.expires_at.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    });
    // For applications: every claim, `sub` and `name` included.
    let mut all = claims.extra.clone();
    all.insert("sub".into(), claims.sub.clone().into());
    if let Some(name) = &claims.name {
        all.insert("name".into(), name.clone().into());
    }
    Grant {
        user: Arc::from(claims.sub.as_str()),
        channels,
        expires_at,
        claims: Some(Arc::new(all)),
    }
}

/// The engine's view of a verification, counted and logged when refused.
pub(super) fn credential(runtime: &Runtime, verified: Result<Claims, TokenError>) -> Credential {
    match verified {
        Ok(claims) => Credential::Verified(grant_of(&claims)),
        Err(error) => {
            runtime.metrics().auth_failure(error.label());
            tracing::info!(target: "wsbus::auth", reason = error.reason(), "bus access token refused");
            Credential::Refused(error.reason())
        }
    }
}
