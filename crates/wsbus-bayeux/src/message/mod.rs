//! Bayeux messages: their JSON form, batch parsing with limits, and the
//! pre-serialized messages the engine hands out.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::BayeuxError;

mod de;
mod encode;

pub use de::parse_batch;
pub use encode::{Outbound, encode_batch, error_reply};

/// One Bayeux message, as received or sent. Every field is optional on the
/// wire; which ones a message needs depends on its channel. Fields this
/// crate does not know are kept in [`other`](Self::other) (and written back
/// if the message is serialized again).
///
/// Deserialized by hand (`de.rs`) rather than derived: the derive of a struct
/// with a `flatten`ed field buffers every field before reading it, which
/// made parsing most of the engine's cost per long-polling request. A key
/// given twice takes its last value, as in a `serde_json::Value`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The channel, as written (validated by the engine, not here): a
    /// `/meta/…` channel for the protocol, any other for a publish or a
    /// delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Echoed verbatim in the reply (Bayeux says a string; some clients send
    /// numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The session the message belongs to, given by the handshake reply;
    /// required on every message but the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `Some(Value::Null)` for `"data": null`, `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The pattern(s) of a `/meta/subscribe` or `/meta/unsubscribe`, echoed
    /// in its reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// In a reply: whether the request it answers succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful: Option<bool>,
    /// In a failed reply: the [`BayeuxError`] in its wire form
    /// `code::message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the client should do next (handshake and connect replies, and
    /// `402` errors); a client may send `timeout` on `/meta/connect` to ask
    /// for a shorter hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    /// Extension fields: `ack` (the `ack` extension), `replay` and
    /// `offset` (history), `presence` (subscribe replies), tokens for an
    /// [`Authorizer`](crate::Authorizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
    /// Handshake and its reply: the transport names (`websocket`,
    /// `long-polling`) the sender supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    /// Handshake and its reply: the Bayeux version, `1.0` (any `1.x` is
    /// accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Handshake and its reply: the oldest version the sender accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
    /// `/meta/connect`: the transport the client says it uses. Informative
    /// only: the engine goes by the transport the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
    /// When the message was sent, as the sender wrote it; kept, never
    /// interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Fields not defined by Bayeux 1.0.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Message {
    /// An empty message on `channel`.
    pub fn on(channel: impl Into<String>) -> Self {
        Message {
            channel: Some(channel.into()),
            ..Message::default()
        }
    }

    /// `ext[key]`, if the message has an `ext` object with that key.
    pub fn ext_field(&self, key: &str) -> Option<&Value> {
        self.ext.as_ref()?.get(key)
    }

    /// Sets `ext[key]`, creating `ext` if needed.
    pub fn set_ext_field(&mut self, key: &str, value: Value) {
        self.ext
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value);
    }
}

/// A subscribe or unsubscribe message's `subscription`: one pattern or a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Subscription {
    /// `"subscription": "/chat/*"`.
    One(String),
    /// `"subscription": ["/chat/a", "/chat/b"]`: all or nothing.
    Many(Vec<String>),
}

impl Subscription {
    /// The patterns, whichever form was used.
    pub fn patterns(&self) -> &[String] {
        match self {
            Subscription::One(one) => std::slice::from_ref(one),
            Subscription::Many(many) => many,
        }
    }
}

/// What a client should do after a reply (Bayeux 1.0 §3.5). Durations are
/// milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Advice {
    /// What to do after this reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// Milliseconds to wait before the next `/meta/connect` (or handshake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Milliseconds the server holds a `/meta/connect` with nothing to
    /// deliver; sent by a client, the longest hold it wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// CometD's extension: how long the server keeps a session without a
    /// `/meta/connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<u64>,
    /// Fields not defined by Bayeux 1.0 or CometD, kept as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `advice.reconnect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reconnect {
    /// Send the next `/meta/connect` after `interval`.
    Retry,
    /// Handshake again: the session is gone.
    Handshake,
    /// Stop: the server ended the session on purpose.
    None,
}

/// A message that could not be read as a [`Message`]. Its `id` and `channel`
/// are kept when they were readable, so that the error reply can echo them.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidMessage {
    /// The message's `id`, if it had one (echoed in the error reply).
    pub id: Option<Value>,
    /// The message's `channel`, if it was a string.
    pub channel: Option<String>,
    /// Why it could not be read (`400`).
    pub error: BayeuxError,
}

/// A parsed request body or WebSocket text message: one entry per message,
/// in order, each either readable or not.
pub type Batch = Vec<Result<Message, InvalidMessage>>;

/// Limits on what one batch may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest batch in bytes, checked before parsing. Bounds the memory a
    /// request or frame makes the parser allocate.
    pub max_bytes: usize,
    /// Most messages in one batch. Bounds the work and the size of the reply
    /// one request can cause.
    pub max_messages: usize,
}

impl BatchLimits {
    /// 1 MiB: a bus message is small (chat lines, record updates); a megabyte
    /// holds any sensible batch, and nothing larger is buffered.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
    /// 1,000: far above what clients batch (CometD batches a handful), low
    /// enough that one request cannot keep the engine busy for long.
    pub const DEFAULT_MAX_MESSAGES: usize = 1_000;
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_messages: Self::DEFAULT_MAX_MESSAGES,
        }
    }
}
