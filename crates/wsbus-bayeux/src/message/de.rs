//! Reading messages: the hand-written serde visitors and batch parsing.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Advice, Batch, BatchLimits, InvalidMessage, Message, Subscription};
use crate::error::BayeuxError;

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

/// Parses a request body or a WebSocket text message: a JSON array of
/// messages, or a single message object (accepted as a batch of one).
///
/// A batch that cannot be read at all (too large, not JSON, neither object
/// nor array, empty, too many messages) is an `Err` to answer with
/// [`error_reply`](super::error_reply) alone. A message that is not a valid
/// Bayeux message only makes its own entry an `Err`: the others are still
/// processed.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outbound;
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
}
