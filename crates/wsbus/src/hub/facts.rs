//! What the hub knows of a socket besides how to reach it: the facts of its
//! opening handshake, for operators (the admin API's connection list).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wsbus_proto::DeflateParams;

use super::SocketId;

/// The facts of a socket's opening handshake, fixed for its life.
///
/// Kept inline in the socket's hub entry (at most 96 bytes, guarded by a
/// test, plus heap copies of the path and the user's login, 16–32 bytes
/// each): no allocation of its own and nothing in the socket task's state,
/// whose size bounds an idle socket's memory (ARCHITECTURE.md, "Memory per
/// connection"). The negotiated extension is kept as its parameters (7
/// bytes) and printed only when asked for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketFacts {
    /// The client's address: the peer's, or the one a trusted proxy
    /// forwarded.
    pub client: IpAddr,
    /// The path of the request that opened it.
    pub path: Box<str>,
    /// The authenticated user's login when it opened (token `sub` or HTTP
    /// session), if any.
    pub user: Option<Box<str>>,
    /// Whether the client reached us over TLS (itself or through a trusted
    /// proxy).
    pub tls: bool,
    /// The negotiated subprotocol, if any.
    pub subprotocol: Option<Box<str>>,
    /// The negotiated permessage-deflate parameters, if any.
    pub deflate: Option<DeflateParams>,
    /// When the `101` was sent.
    pub opened: Instant,
}

impl SocketFacts {
    /// Facts of a socket opened now with `client`, `path` and nothing else
    /// (no user, no TLS, no subprotocol, no extension): fill in the rest
    /// with the `with_*` methods.
    pub fn new(client: IpAddr, path: impl Into<Box<str>>) -> Self {
        SocketFacts {
            client,
            path: path.into(),
            user: None,
            tls: false,
            subprotocol: None,
            deflate: None,
            opened: Instant::now(),
        }
    }

    /// The user the socket was opened for.
    pub fn with_user(mut self, user: Option<&str>) -> Self {
        self.user = user.map(Into::into);
        self
    }

    /// Whether the client came over TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The negotiated subprotocol.
    pub fn with_subprotocol(mut self, subprotocol: Option<&str>) -> Self {
        self.subprotocol = subprotocol.map(Into::into);
        self
    }

    /// The negotiated permessage-deflate parameters.
    pub fn with_deflate(mut self, deflate: Option<DeflateParams>) -> Self {
        self.deflate = deflate;
        self
    }

    /// The `Sec-WebSocket-Extensions` value the socket was opened with, if
    /// it negotiated one.
    pub fn extensions(&self) -> Option<String> {
        self.deflate.as_ref().map(DeflateParams::to_header_value)
    }

    /// How long the socket has been open.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }
}

impl Default for SocketFacts {
    /// A socket whose handshake is not known (tests, sockets made without
    /// one): unspecified address, empty path.
    fn default() -> Self {
        SocketFacts::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), "")
    }
}

/// An open socket as [`LocalHub::sockets`](super::LocalHub::sockets) lists
/// it: its id and handshake facts, its groups and what waits in its outbox.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketSnapshot {
    /// The socket's id (for [`Hub::close`](super::Hub::close)).
    pub id: SocketId,
    /// Its handshake's facts.
    pub facts: SocketFacts,
    /// The groups it is a member of.
    pub groups: Vec<Box<str>>,
    /// Payload bytes queued in its hub outbox that its task has not yet
    /// taken into its write queue (the write queue itself lives in the
    /// task, out of reach: it is not counted).
    pub outbox_bytes: usize,
    /// Frame bytes read from the socket so far (as of its task's last wake).
    pub bytes_in: u64,
    /// Frame bytes written to the socket so far (before TLS).
    pub bytes_out: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every socket carries these facts in its hub entry: an idle socket's
    /// memory budget (ARCHITECTURE.md) counts on this bound.
    #[test]
    fn socket_facts_stay_small() {
        let size = std::mem::size_of::<SocketFacts>();
        eprintln!("SocketFacts: {size} bytes");
        assert!(size <= 96, "SocketFacts grew to {size} bytes");
        let facts =
            SocketFacts::new([127, 0, 0, 1].into(), "/chat").with_deflate(Some(DeflateParams {
                client_max_window_bits: Some(10),
                ..DeflateParams::default()
            }));
        assert_eq!(
            facts.extensions().as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
    }
}
