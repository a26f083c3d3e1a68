//! How `fanout`'s payloads travel inside WebSocket messages: as they are
//! (`plain`), or as Socket.IO events over Engine.IO v4 (`socket-io`), so that
//! the same generator measures a Socket.IO server.
//!
//! Engine.IO v4 over WebSocket (`/socket.io/?EIO=4&transport=websocket`):
//! the server opens with `0{...}`, the client joins the default namespace
//! with `40` (answered by `40{...}`), an event is `42["name",...]`, and the
//! server's ping `2` must be answered with a pong `3` within its
//! `pingTimeout`.

use clap::ValueEnum;
use wsbus_proto::{Connection, Event, Message};

use super::socket::BenchSocket;

/// The Socket.IO event the generator emits and listens to; the peer server
/// (bench/cluster/server.mjs) relays it to its room.
const SOCKET_IO_EVENT_PREFIX: &[u8] = b"42[\"m\",\"";
/// What closes a one-string event.
const SOCKET_IO_EVENT_SUFFIX: &[u8] = b"\"]";

/// How payloads are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Framing {
    /// One payload per WebSocket message, as it is.
    #[default]
    Plain,
    /// One Socket.IO event `m` with the payload as its one string argument,
    /// over Engine.IO v4 on the WebSocket transport.
    SocketIo,
}

impl Framing {
    /// What a new connection does first: for Socket.IO, join the default
    /// namespace and wait for the server's answer (it closes a connection
    /// that sends an event before its namespace is joined; it puts the
    /// socket in its room on joining). Whatever arrives with the answer is
    /// dropped: a subscriber counts nothing before its first marker.
    pub(crate) async fn open(self, socket: &mut BenchSocket) -> std::io::Result<()> {
        if self == Framing::Plain {
            return Ok(());
        }
        socket
            .conn
            .send(Message::text("40"))
            .map_err(std::io::Error::other)?;
        socket.flush().await?;
        loop {
            let mut joined = false;
            let open = socket.process(|event, conn| {
                if let Event::Message(message) = event {
                    joined |= message.payload().starts_with(b"40");
                    self.unwrap(&message, conn);
                }
            });
            if joined {
                return socket.flush().await;
            }
            if !open {
                return Err(std::io::Error::other(
                    "the server closed the connection before Socket.IO's connect was answered",
                ));
            }
            socket.fill().await?;
        }
    }

    /// `payload` (ASCII without quotes or backslashes) as a message.
    pub(crate) fn wrap(self, payload: String) -> Message {
        match self {
            Framing::Plain => Message::text(payload),
            Framing::SocketIo => Message::text(format!("42[\"m\",\"{payload}\"]")),
        }
    }

    /// The payload a message carries, or `None` for a protocol packet (which
    /// is answered here if it needs an answer: a ping gets its pong).
    pub(crate) fn unwrap<'a>(
        self,
        message: &'a Message,
        conn: &mut Connection,
    ) -> Option<&'a [u8]> {
        let bytes: &[u8] = message.payload();
        match self {
            Framing::Plain => Some(bytes),
            Framing::SocketIo => {
                if bytes == b"2" {
                    // A closed connection is reported by the read loop.
                    let _ = conn.send(Message::text("3"));
                    return None;
                }
                bytes
                    .strip_prefix(SOCKET_IO_EVENT_PREFIX)?
                    .strip_suffix(SOCKET_IO_EVENT_SUFFIX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsbus_proto::Limits;

    fn client() -> Connection {
        Connection::client(Limits::uniform(1 << 20), Box::new(|| [0; 4]))
    }

    #[test]
    fn socket_io_events_round_trip_and_pings_get_pongs() {
        let mut conn = client();
        let framing = Framing::SocketIo;
        let message = framing.wrap("1:2:xx".into());
        assert_eq!(&message.payload()[..], b"42[\"m\",\"1:2:xx\"]");
        assert_eq!(framing.unwrap(&message, &mut conn), Some(&b"1:2:xx"[..]));
        assert!(conn.outgoing().is_empty());
        for packet in [
            "0{\"sid\":\"a\"}",
            "40{\"sid\":\"b\"}",
            "42[\"other\",\"x\"]",
        ] {
            assert_eq!(framing.unwrap(&Message::text(packet), &mut conn), None);
        }
        assert!(conn.outgoing().is_empty());
        assert_eq!(framing.unwrap(&Message::text("2"), &mut conn), None);
        assert!(!conn.outgoing().is_empty(), "the ping was answered");
    }

    #[test]
    fn plain_payloads_are_the_messages() {
        let mut conn = client();
        let message = Framing::Plain.wrap("1:2:xx".into());
        assert_eq!(&message.payload()[..], b"1:2:xx");
        assert_eq!(
            Framing::Plain.unwrap(&message, &mut conn),
            Some(&b"1:2:xx"[..])
        );
    }
}
