//! Writing messages: pre-serialized outbound messages, batches and error
//! replies.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Advice, Message, Reconnect};
use crate::error::BayeuxError;
use crate::id::ClientId;

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
