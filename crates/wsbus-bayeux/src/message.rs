//! Bayeux messages: their JSON form, batch parsing with limits, and the
//! pre-serialized messages the engine hands out.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::BayeuxError;

/// One Bayeux message, as received or sent. Every field is optional on the
/// wire; which ones a message needs depends on its channel. Fields this
/// crate does not know are kept in [`other`](Self::other) (and written back
/// if the message is serialized again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Echoed verbatim in the reply (Bayeux says a string; some clients send
    /// numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `Some(Value::Null)` for `"data": null`, `None` when absent.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Fields not defined by Bayeux 1.0.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Deserializes a present field, `null` included, as `Some`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subscription {
    One(String),
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// CometD's extension: how long the server keeps a session without a
    /// `/meta/connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<u64>,
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
    pub id: Option<Value>,
    pub channel: Option<String>,
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
