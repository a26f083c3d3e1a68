//! The bus configuration: advice, limits, history and channel policies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::Grant;
use crate::channel::{ChannelName, ChannelPattern};
use crate::message::BatchLimits;
use crate::rate::RateLimit;
use crate::session::Session;

/// Everything the [`Engine`](crate::Engine) is configured with. Every limit
/// has a name, a default, and a line saying why.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// How long a `/meta/connect` is held when there is nothing to deliver
    /// (`advice.timeout`). 30 s: below the idle timeouts of common proxies
    /// (60 s), so a held long-poll is answered before a proxy cuts it.
    pub timeout: Duration,
    /// How long a client waits after a connect reply before the next connect
    /// (`advice.interval`). 0: reconnect at once, so delivery latency is one
    /// round trip.
    pub interval: Duration,
    /// How long a session lives without a `/meta/connect` (CometD's
    /// `maxInterval`, default 10 s): long enough to survive a reconnect, short
    /// enough that a closed tab's subscriptions and presence go quickly.
    pub max_interval: Duration,
    /// Whether `websocket` is offered in `supportedConnectionTypes` and
    /// accepted on `/meta/connect`. `false` leaves every client on
    /// long-polling: a switch for telling whether a problem is WebSocket's
    /// (a proxy that drops upgrades, say) by comparing with and without it.
    pub websocket_enabled: bool,
    /// Per-client and per-batch bounds.
    pub limits: Limits,
    /// Per-channel history for replay.
    pub history: HistoryConfig,
    /// Who may subscribe and publish where no [`policies`](Self::policies)
    /// pattern matches. Default: anyone subscribes, subscribers publish.
    pub default_policy: ChannelPolicy,
    /// Policies per channel pattern. The most specific pattern matching a
    /// channel wins: the channel itself, then its parent's `/*`, then `/**`
    /// of the nearest ancestor. `/service/**` channels without a matching
    /// policy use [`ChannelPolicy::SERVICE`]; a presence channel
    /// (`/presence/chat/room`) without one of its own uses its subject's
    /// (`/chat/room`), so who may watch a room is who may join it.
    pub policies: Vec<(ChannelPattern, ChannelPolicy)>,
    /// Whether a handshake must present a verified token
    /// ([`Credential`](crate::Credential)); without one it is refused with
    /// `401::Missing token`. Default `false`.
    pub require_token: bool,
}

impl BusConfig {
    /// 30 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 0.
    pub const DEFAULT_INTERVAL: Duration = Duration::ZERO;
    /// 10 s, CometD's default.
    pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(10);
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            timeout: Self::DEFAULT_TIMEOUT,
            interval: Self::DEFAULT_INTERVAL,
            max_interval: Self::DEFAULT_MAX_INTERVAL,
            websocket_enabled: true,
            limits: Limits::default(),
            history: HistoryConfig::default(),
            default_policy: ChannelPolicy::default(),
            policies: Vec::new(),
            require_token: false,
        }
    }
}

/// Bounds that keep memory proportional to what the operator allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Size and message count of one batch.
    pub batch: BatchLimits,
    /// Most subscriptions one client may hold (default 1,000): a client
    /// needs a few; each costs an index entry, so 100,000 from one client
    /// must be refused (`403::Too many subscriptions`).
    pub max_subscriptions_per_client: usize,
    /// Most messages queued for one client, unacknowledged ones included
    /// (default 1,000). A client that falls further behind is disconnected
    /// (its next request gets `402`) and recovers what it missed from
    /// history on resubscribe: a slow consumer cannot grow the server's
    /// memory, and no message is dropped silently.
    pub max_queued_messages: usize,
    /// Most sessions at once (default 100,000). A long-polling handshake
    /// costs no connection, so connection limits do not bound sessions;
    /// beyond this, handshakes get `503::Too many sessions`.
    pub max_sessions: usize,
    /// Messages per second one session may send, besides `/meta/connect`
    /// and `/meta/handshake` (the transport's own); `None`: no limit
    /// (default: the runtime sets it from configuration). A message over it
    /// gets `429::Too many messages` and is not acted on; the session stays.
    pub messages_per_second: Option<RateLimit>,
}

impl Limits {
    /// 1,000.
    pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 1_000;
    /// 1,000.
    pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1_000;
    /// 100,000.
    pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch: BatchLimits::default(),
            max_subscriptions_per_client: Self::DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
            max_queued_messages: Self::DEFAULT_MAX_QUEUED_MESSAGES,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            messages_per_second: None,
        }
    }
}

/// Per-channel history: the messages a client that reconnects within
/// `window` can ask to have replayed (see the crate docs, "No loss").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a message stays replayable (default 60 s): several
    /// `maxInterval`s, so a client whose session expired during a network
    /// outage and who handshakes again still gets what it missed.
    /// `Duration::ZERO` disables history.
    pub window: Duration,
    /// Most messages kept per channel (default 100), so that one busy channel
    /// cannot push every other channel's history out.
    pub per_channel: usize,
    /// Most messages kept over all channels (default 100,000): bounds the
    /// index and the number of channels with history.
    pub max_messages: usize,
    /// Most bytes of serialized messages kept (default 64 MiB): the memory
    /// bound of history whatever the message sizes.
    pub max_bytes: usize,
}

impl HistoryConfig {
    /// 60 s.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    /// 100.
    pub const DEFAULT_PER_CHANNEL: usize = 100;
    /// 100,000.
    pub const DEFAULT_MAX_MESSAGES: usize = 100_000;
    /// 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

    /// No history at all.
    pub const DISABLED: HistoryConfig = HistoryConfig {
        window: Duration::ZERO,
        per_channel: 0,
        max_messages: 0,
        max_bytes: 0,
    };

    pub(crate) fn enabled(&self) -> bool {
        !self.window.is_zero()
            && self.per_channel > 0
            && self.max_messages > 0
            && self.max_bytes > 0
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: Self::DEFAULT_WINDOW,
            per_channel: Self::DEFAULT_PER_CHANNEL,
            max_messages: Self::DEFAULT_MAX_MESSAGES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// Who may subscribe to a channel (or pattern).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribePolicy {
    /// Every session.
    #[default]
    Anyone,
    /// Sessions with a user (authenticated at the transport or handshake).
    Authenticated,
    /// No client; the channel is for server-side code.
    Nobody,
    /// Sessions whose token's `channels` claim lists a pattern covering the
    /// subscription (see [`Grant::allows_pattern`]).
    Claim,
}

/// Who may publish on a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishPolicy {
    /// Every session.
    Anyone,
    /// Sessions with a user.
    Authenticated,
    /// Sessions subscribed to the channel (directly or through a wildcard):
    /// a client talks where it listens, so a publish cannot reach a channel
    /// its sender is not part of.
    #[default]
    Subscribers,
    /// No client; only the server-side publish API.
    Nobody,
    /// Sessions whose token's `channels` claim lists a pattern matching the
    /// channel.
    Claim,
}

impl SubscribePolicy {
    /// Whether `session` may subscribe to `pattern`.
    pub(crate) fn allows_pattern(self, session: &Session, pattern: &ChannelPattern) -> bool {
        match self {
            SubscribePolicy::Claim => session
                .grant
                .as_ref()
                .is_some_and(|g| g.allows_pattern(pattern)),
            other => other.allows_user(session),
        }
    }

    /// Whether `session` may receive a message on `channel` (reached through
    /// a wildcard subscription).
    pub(crate) fn allows_channel(self, session: &Session, channel: &ChannelName) -> bool {
        match self {
            SubscribePolicy::Claim => session
                .grant
                .as_ref()
                .is_some_and(|g| g.allows_channel(channel)),
            other => other.allows_user(session),
        }
    }

    fn allows_user(self, session: &Session) -> bool {
        match self {
            SubscribePolicy::Anyone => true,
            SubscribePolicy::Authenticated => session.user.is_some(),
            SubscribePolicy::Nobody | SubscribePolicy::Claim => false,
        }
    }
}

impl PublishPolicy {
    pub(crate) fn allows(
        self,
        session: &Session,
        channel: &ChannelName,
        subscribed: impl FnOnce() -> bool,
    ) -> bool {
        match self {
            PublishPolicy::Anyone => true,
            PublishPolicy::Authenticated => session.user.is_some(),
            PublishPolicy::Subscribers => subscribed(),
            PublishPolicy::Nobody => false,
            PublishPolicy::Claim => session
                .grant
                .as_ref()
                .is_some_and(|g| g.allows_channel(channel)),
        }
    }
}

/// The rules of the channels a pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelPolicy {
    /// Who may subscribe to the channels (checked when a client subscribes,
    /// and again per channel for messages reached through a wildcard).
    pub subscribe: SubscribePolicy,
    /// Who may publish on the channels (the server-side
    /// [`Engine::publish`](crate::Engine::publish) is not subject to it).
    pub publish: PublishPolicy,
    /// Whether a client's publish is also delivered back to it when it is
    /// subscribed. Default `false`: messages are relayed to the *other*
    /// subscribers, the publisher having its message already.
    pub deliver_to_publisher: bool,
    /// Whether messages are kept for replay. Default `true`.
    pub history: bool,
}

impl ChannelPolicy {
    /// The default: anyone subscribes, subscribers publish, history kept.
    pub const DEFAULT: ChannelPolicy = ChannelPolicy {
        subscribe: SubscribePolicy::Anyone,
        publish: PublishPolicy::Subscribers,
        deliver_to_publisher: false,
        history: true,
    };

    /// For `/service/**` without a configured policy: anyone may send to a
    /// server-side handler (the handler decides), nobody subscribes.
    pub const SERVICE: ChannelPolicy = ChannelPolicy {
        subscribe: SubscribePolicy::Nobody,
        publish: PublishPolicy::Anyone,
        deliver_to_publisher: false,
        history: false,
    };
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy::DEFAULT
    }
}
