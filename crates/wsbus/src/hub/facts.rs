//! What the hub knows of a socket besides how to reach it: the facts of its
//! opening handshake, for operators (the admin API's connection list).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wsbus_proto::DeflateParams;

use super::SocketId;
use crate::app::SocketInfo;

/// The facts of a socket's opening handshake, fixed for its life.
///
/// What operators are shown ([`SocketSnapshot`]); the hub keeps them in a
/// smaller form in the socket's entry (the [`SocketInfo`] the handler sees,
/// which has the path and the user, and [`Opened`] for the rest) and makes
/// this copy when asked. The negotiated extension is kept as its parameters
/// (7 bytes) and printed only when asked for.
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

/// What a socket's hub entry keeps of its handshake besides its
/// [`SocketInfo`]: with it, the [`SocketFacts`] operators see. Inline in the
/// entry (at most 64 bytes, guarded by a test): no allocation of its own
/// unless a subprotocol was negotiated.
#[derive(Clone, Debug)]
pub(crate) struct Opened {
    pub(crate) client: IpAddr,
    pub(crate) tls: bool,
    pub(crate) deflate: Option<DeflateParams>,
    pub(crate) subprotocol: Option<Box<str>>,
    pub(crate) at: Instant,
}

impl Opened {
    /// A socket opened now by `client` (no TLS, subprotocol nor extension).
    #[cfg(test)]
    pub(crate) fn now(client: IpAddr) -> Self {
        Opened {
            client,
            tls: false,
            deflate: None,
            subprotocol: None,
            at: Instant::now(),
        }
    }

    /// The facts of the socket `info` that was opened so.
    pub(crate) fn facts(&self, info: &SocketInfo) -> SocketFacts {
        SocketFacts {
            client: self.client,
            path: info.path.as_str().into(),
            user: info.user.as_ref().map(|u| u.login.as_str().into()),
            tls: self.tls,
            subprotocol: self.subprotocol.clone(),
            deflate: self.deflate.clone(),
            opened: self.at,
        }
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

    /// Every socket carries its handshake in its hub entry: an idle socket's
    /// memory budget (ARCHITECTURE.md) counts on this bound.
    #[test]
    fn socket_facts_stay_small() {
        let size = std::mem::size_of::<Opened>();
        eprintln!("Opened: {size} bytes");
        assert!(size <= 64, "Opened grew to {size} bytes");
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
