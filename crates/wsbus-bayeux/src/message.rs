//! Bayeux messages: their JSON form, batch parsing with limits, and the
//! pre-serialized messages the engine hands out.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::BayeuxError;
use crate::id::ClientId;

/// One Bayeux message, as received or sent. Every field is optional on the
/// wire; which ones a message needs depends on its channel. Fields this
/// crate does not know are kept in [`other`](Self::other) (and written back
/// if the message is serialized again).
///
/// Deserialized by hand (below) rather than derived: the derive of a struct
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

/// The fields of [`Message`] and [`Advice`], told apart without allocating
/// (an unknown key is kept for `other`).
enum Field {
    Channel,
    Id,
    ClientId,
    Data,
    Subscription,
    Successful,
    Error,
    Advice,
    Ext,
    SupportedConnectionTypes,
    Version,
    MinimumVersion,
    ConnectionType,
    Timestamp,
    Reconnect,
    Interval,
    Timeout,
    MaxInterval,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                Ok(match key {
                    "channel" => Field::Channel,
                    "id" => Field::Id,
                    "clientId" => Field::ClientId,
                    "data" => Field::Data,
                    "subscription" => Field::Subscription,
                    "successful" => Field::Successful,
                    "error" => Field::Error,
                    "advice" => Field::Advice,
                    "ext" => Field::Ext,
                    "supportedConnectionTypes" => Field::SupportedConnectionTypes,
                    "version" => Field::Version,
                    "minimumVersion" => Field::MinimumVersion,
                    "connectionType" => Field::ConnectionType,
                    "timestamp" => Field::Timestamp,
                    "reconnect" => Field::Reconnect,
                    "interval" => Field::Interval,
                    "timeout" => Field::Timeout,
                    "maxInterval" => Field::MaxInterval,
                    other => Field::Other(other.to_owned()),
                })
            }
            fn visit_string<E: de::Error>(self, key: String) -> Result<Field, E> {
                match self.visit_str::<E>(&key)? {
                    Field::Other(_) => Ok(Field::Other(key)),
                    known => Ok(known),
                }
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl Field {
    /// The key as written, for a field that belongs to the other struct.
    fn into_key(self) -> String {
        let known = match self {
            Field::Other(key) => return key,
            Field::Channel => "channel",
            Field::Id => "id",
            Field::ClientId => "clientId",
            Field::Data => "data",
            Field::Subscription => "subscription",
            Field::Successful => "successful",
            Field::Error => "error",
            Field::Advice => "advice",
            Field::Ext => "ext",
            Field::SupportedConnectionTypes => "supportedConnectionTypes",
            Field::Version => "version",
            Field::MinimumVersion => "minimumVersion",
            Field::ConnectionType => "connectionType",
            Field::Timestamp => "timestamp",
            Field::Reconnect => "reconnect",
            Field::Interval => "interval",
            Field::Timeout => "timeout",
            Field::MaxInterval => "maxInterval",
        };
        known.to_owned()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bayeux message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut m = Message::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Channel => m.channel = map.next_value()?,
                Field::Id => m.id = map.next_value()?,
                Field::ClientId => m.client_id = map.next_value()?,
                // Present, `null` included.
                Field::Data => m.data = Some(map.next_value()?),
                Field::Subscription => m.subscription = map.next_value()?,
                Field::Successful => m.successful = map.next_value()?,
                Field::Error => m.error = map.next_value()?,
                Field::Advice => m.advice = map.next_value()?,
                Field::Ext => m.ext = map.next_value()?,
                Field::SupportedConnectionTypes => {
                    m.supported_connection_types = map.next_value()?
                }
                Field::Version => m.version = map.next_value()?,
                Field::MinimumVersion => m.minimum_version = map.next_value()?,
                Field::ConnectionType => m.connection_type = map.next_value()?,
                Field::Timestamp => m.timestamp = map.next_value()?,
                other => {
                    let value = map.next_value()?;
                    m.other.insert(other.into_key(), value);
                }
            }
        }
        Ok(m)
    }
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

impl<'de> Deserialize<'de> for Subscription {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SubscriptionVisitor;
        impl<'de> Visitor<'de> for SubscriptionVisitor {
            type Value = Subscription;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel pattern or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Subscription, E> {
                Ok(Subscription::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Subscription, E> {
                Ok(Subscription::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Subscription, A::Error> {
                let mut many = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(pattern) = seq.next_element()? {
                    many.push(pattern);
                }
                Ok(Subscription::Many(many))
            }
        }
        deserializer.deserialize_any(SubscriptionVisitor)
    }
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

impl<'de> Deserialize<'de> for Advice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AdviceVisitor;
        impl<'de> Visitor<'de> for AdviceVisitor {
            type Value = Advice;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an advice object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Advice, A::Error> {
                let mut a = Advice::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Reconnect => a.reconnect = map.next_value()?,
                        Field::Interval => a.interval = map.next_value()?,
                        Field::Timeout => a.timeout = map.next_value()?,
                        Field::MaxInterval => a.max_interval = map.next_value()?,
                        other => {
                            let value = map.next_value()?;
                            a.other.insert(other.into_key(), value);
                        }
                    }
                }
                Ok(a)
            }
        }
        deserializer.deserialize_map(AdviceVisitor)
    }
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

/// Parses a request body or a WebSocket text message: a JSON array of
/// messages, or a single message object (accepted as a batch of one).
///
/// A batch that cannot be read at all (too large, not JSON, neither object
/// nor array, empty, too many messages) is an `Err` to answer with
/// [`error_reply`] alone. A message that is not a valid Bayeux message only
/// makes its own entry an `Err`: the others are still processed.
pub fn parse_batch(body: &[u8], limits: &BatchLimits) -> Result<Batch, BayeuxError> {
    if body.len() > limits.max_bytes {
        return Err(BayeuxError::BATCH_TOO_LARGE);
    }
    // A batch whose messages are all readable (nearly every batch) is read
    // straight into messages. Anything else takes the second path, through
    // `Value`s, which tells each bad message apart: the outcome is the same,
    // the first path is only cheaper.
    if let Ok(ValidBatch(batch)) = serde_json::from_slice(body) {
        if batch.is_empty() {
            return Err(BayeuxError::EMPTY_BATCH);
        }
        if batch.len() > limits.max_messages {
            return Err(BayeuxError::TOO_MANY_MESSAGES);
        }
        return Ok(batch);
    }
    let value: Value = serde_json::from_slice(body).map_err(BayeuxError::malformed_json)?;
    let values = match value {
        Value::Array(values) => values,
        object @ Value::Object(_) => vec![object],
        _ => return Err(BayeuxError::NOT_A_BATCH),
    };
    if values.is_empty() {
        return Err(BayeuxError::EMPTY_BATCH);
    }
    if values.len() > limits.max_messages {
        return Err(BayeuxError::TOO_MANY_MESSAGES);
    }
    Ok(values.into_iter().map(parse_message).collect())
}

/// A batch in which every message is readable: an array of message objects,
/// or one message object.
struct ValidBatch(Batch);

impl<'de> Deserialize<'de> for ValidBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = ValidBatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bayeux message or an array of them")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValidBatch, A::Error> {
                let mut batch = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(message) = seq.next_element::<Message>()? {
                    batch.push(Ok(message));
                }
                Ok(ValidBatch(batch))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValidBatch, A::Error> {
                Ok(ValidBatch(vec![Ok(MessageVisitor.visit_map(map)?)]))
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

// The error echoes the message's id (a JSON value), so it is about as large
// as a message; both live side by side in a `Batch` anyway.
#[allow(clippy::result_large_err)]
fn parse_message(value: Value) -> Result<Message, InvalidMessage> {
    let Value::Object(object) = value else {
        return Err(InvalidMessage {
            id: None,
            channel: None,
            error: BayeuxError::NOT_AN_OBJECT,
        });
    };
    // Keep what the error reply needs before the object is consumed.
    let id = object.get("id").cloned();
    let channel = object
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Message::deserialize(Value::Object(object)).map_err(|e| InvalidMessage {
        id,
        channel,
        error: BayeuxError::invalid_message(e),
    })
}

/// A message ready to send: serialized once, shared by every recipient (a
/// broadcast to ten thousand subscribers is one string and ten thousand
/// reference counts).
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound {
    json: Arc<str>,
}

impl Outbound {
    /// Serializes `message`.
    pub fn new(message: &Message) -> Self {
        // Serializing a Message cannot fail: every map key is a string.
        let json = serde_json::to_string(message).expect("a Message always serializes");
        Outbound { json: json.into() }
    }

    /// A successful `/meta/connect` reply, `{"channel", "id", "clientId",
    /// "successful": true, "advice", "ext": {"ack"}}`, written directly: the
    /// same text as [`Outbound::new`] of that [`Message`], for a fraction of
    /// the cost (there is one per long-polling delivery). `advice` is the
    /// advice as JSON.
    pub(crate) fn connect_reply(
        id: Option<&Value>,
        client_id: &ClientId,
        advice: &str,
        ack: Option<u64>,
    ) -> Self {
        let mut json = Vec::with_capacity(80 + client_id.as_str().len() + advice.len());
        json.extend_from_slice(br#"{"channel":"/meta/connect""#);
        if let Some(id) = id {
            json.extend_from_slice(br#","id":"#);
            serde_json::to_writer(&mut json, id).expect("a Value always serializes");
        }
        // Client ids are base-36 digits: nothing to escape.
        json.extend_from_slice(br#","clientId":""#);
        json.extend_from_slice(client_id.as_str().as_bytes());
        json.extend_from_slice(br#"","successful":true,"advice":"#);
        json.extend_from_slice(advice.as_bytes());
        if let Some(ack) = ack {
            json.extend_from_slice(br#","ext":{"ack":"#);
            json.extend_from_slice(ack.to_string().as_bytes());
            json.push(b'}');
        }
        json.push(b'}');
        let json = String::from_utf8(json).expect("JSON text is UTF-8");
        Outbound { json: json.into() }
    }

    /// The message as a JSON object text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Reads the message back (for tests, logging, outbound validation).
    pub fn to_message(&self) -> Message {
        serde_json::from_str(&self.json).expect("an Outbound holds a serialized Message")
    }

    /// Size in bytes, for memory accounting.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Never true: a message is at least `{}`.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

/// Writes messages as one JSON array, the body of a long-polling response or
/// one WebSocket text message. `None` for no messages: the bus never sends an
/// empty array.
pub fn encode_batch(messages: &[Outbound]) -> Option<String> {
    if messages.is_empty() {
        return None;
    }
    let len = messages.iter().map(|m| m.len() + 1).sum::<usize>() + 1;
    let mut out = String::with_capacity(len);
    out.push('[');
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(message.json());
    }
    out.push(']');
    Some(out)
}

/// The reply reporting `error` for a message on `channel` with `id` (both
/// echoed when known). A `402` carries advice to handshake again.
pub fn error_reply(channel: Option<&str>, id: Option<Value>, error: &BayeuxError) -> Message {
    Message {
        channel: channel.map(str::to_owned),
        id,
        successful: Some(false),
        error: Some(error.to_string()),
        advice: error.requires_handshake().then(|| Advice {
            reconnect: Some(Reconnect::Handshake),
            interval: Some(0),
            ..Advice::default()
        }),
        ..Message::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> BatchLimits {
        BatchLimits::default()
    }

    #[test]
    fn array_and_single_object_are_both_batches() {
        let batch = parse_batch(
            br#"[{"channel":"/a","id":"1"},{"channel":"/b"}]"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].as_ref().unwrap().channel.as_deref(), Some("/a"));
        let single = parse_batch(
            br#"{"channel":"/meta/handshake","version":"1.0"}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].as_ref().unwrap().version.as_deref(), Some("1.0"));
    }

    #[test]
    fn whole_batch_errors() {
        let err = parse_batch(b"{not json", &limits()).unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(err.message().starts_with("Malformed JSON"), "{err}");
        assert_eq!(parse_batch(b"[]", &limits()), Err(BayeuxError::EMPTY_BATCH));
        assert_eq!(parse_batch(b"42", &limits()), Err(BayeuxError::NOT_A_BATCH));
        let small = BatchLimits {
            max_bytes: 10,
            max_messages: 1,
        };
        assert_eq!(
            parse_batch(&[b' '; 11], &small),
            Err(BayeuxError::BATCH_TOO_LARGE)
        );
        assert_eq!(
            parse_batch(b"[{},{}]", &small),
            Err(BayeuxError::TOO_MANY_MESSAGES)
        );
    }

    #[test]
    fn a_bad_message_spoils_only_itself() {
        let batch = parse_batch(
            br#"[{"channel":"/a","id":"7","clientId":5},"x",{"channel":"/b"}]"#,
            &limits(),
        )
        .unwrap();
        let bad = batch[0].as_ref().unwrap_err();
        assert_eq!(bad.id, Some(json!("7")));
        assert_eq!(bad.channel.as_deref(), Some("/a"));
        assert!(
            bad.error.message().starts_with("Invalid message"),
            "{}",
            bad.error
        );
        assert_eq!(
            batch[1].as_ref().unwrap_err().error,
            BayeuxError::NOT_AN_OBJECT
        );
        assert!(batch[2].is_ok());
    }

    #[test]
    fn null_data_is_present_and_unknown_fields_survive() {
        let batch = parse_batch(
            br#"{"channel":"/a","data":null,"custom":{"x":1}}"#,
            &limits(),
        )
        .unwrap();
        let message = batch[0].as_ref().unwrap();
        assert_eq!(message.data, Some(Value::Null));
        assert_eq!(message.other.get("custom"), Some(&json!({"x":1})));
        let again: Value = serde_json::from_str(Outbound::new(message).json()).unwrap();
        assert_eq!(again, json!({"channel":"/a","data":null,"custom":{"x":1}}));
    }

    #[test]
    fn subscription_one_or_many() {
        let batch = parse_batch(
            br#"[{"channel":"/meta/subscribe","subscription":"/a"},{"channel":"/meta/subscribe","subscription":["/a","/b"]}]"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(
            batch[0]
                .as_ref()
                .unwrap()
                .subscription
                .as_ref()
                .unwrap()
                .patterns(),
            ["/a"]
        );
        assert_eq!(
            batch[1]
                .as_ref()
                .unwrap()
                .subscription
                .as_ref()
                .unwrap()
                .patterns(),
            ["/a", "/b"]
        );
    }

    #[test]
    fn connect_replies_are_written_as_serde_would() {
        let client = ClientId::from_random([9; 16]);
        let advice = Advice {
            reconnect: Some(Reconnect::Retry),
            interval: Some(0),
            timeout: Some(30_000),
            max_interval: Some(10_000),
            ..Advice::default()
        };
        let advice_json = serde_json::to_string(&advice).unwrap();
        for id in [
            None,
            Some(json!("7")),
            Some(json!(42)),
            Some(json!("a\"b\\c\u{1}")),
        ] {
            for ack in [None, Some(0), Some(u64::MAX)] {
                let mut reply = Message::on("/meta/connect");
                reply.id = id.clone();
                reply.client_id = Some(client.to_string());
                reply.successful = Some(true);
                reply.advice = Some(advice.clone());
                if let Some(ack) = ack {
                    reply.set_ext_field("ack", ack.into());
                }
                assert_eq!(
                    Outbound::connect_reply(id.as_ref(), &client, &advice_json, ack).json(),
                    Outbound::new(&reply).json()
                );
            }
        }
    }

    #[test]
    fn both_parsing_paths_agree() {
        // Valid batches take the direct path; the same messages read through
        // `Value`s (the path of batches with a bad message) must be equal.
        let bodies: [&[u8]; 4] = [
            br#"[{"channel":"/meta/connect","clientId":"abc","connectionType":"long-polling","advice":{"timeout":0,"x":[1]},"ext":{"ack":3}}]"#,
            br#"{"channel":"/a","data":null,"id":5,"custom":{"k":"v"},"channel":"/b"}"#,
            br#"[{"channel":"/meta/subscribe","subscription":["/a","/b/**"],"id":"x"},{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["websocket"],"timestamp":"t","successful":true,"error":"e","reconnect":1}]"#,
            br#"[{"channel":"/meta/unsubscribe","subscription":"/a"},{}]"#,
        ];
        for body in bodies {
            let direct = parse_batch(body, &limits()).unwrap();
            let value: Value = serde_json::from_slice(body).unwrap();
            let values = match value {
                Value::Array(values) => values,
                object => vec![object],
            };
            let through_values: Batch = values.into_iter().map(parse_message).collect();
            assert_eq!(direct, through_values, "{}", String::from_utf8_lossy(body));
        }
        // A key given twice: its last value, as in a `Value`.
        let batch = parse_batch(br#"{"channel":"/a","channel":"/b"}"#, &limits()).unwrap();
        assert_eq!(batch[0].as_ref().unwrap().channel.as_deref(), Some("/b"));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_batch(&[]), None);
        let a = Outbound::new(&Message::on("/a"));
        let b = Outbound::new(&Message::on("/b"));
        assert_eq!(
            encode_batch(&[a, b]).unwrap(),
            r#"[{"channel":"/a"},{"channel":"/b"}]"#
        );
        let reply = error_reply(
            Some("/meta/connect"),
            Some(json!("3")),
            &BayeuxError::UNKNOWN_CLIENT,
        );
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"channel":"/meta/connect","id":"3","successful":false,
                   "error":"402::Unknown client","advice":{"reconnect":"handshake","interval":0}})
        );
    }
}
