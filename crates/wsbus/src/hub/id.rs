//! Socket and node ids.

use std::fmt;

/// The node a socket lives on. Every node of a cluster has its own (the
/// cluster engine assigns them); a single process is node 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u16);

/// A socket's id, unique across a cluster: the [`NodeId`] of the node that
/// holds the socket and a number unique on that node.
///
/// Opaque: compare, hash, print (`<node>.<number>`) and parse it back
/// ([`std::str::FromStr`]), but do not compute with it. Ids are never
/// reused within a node's life (48 bits of sequence: 2^48 sockets).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    /// Bits of the per-node sequence; the node id takes the 16 above them.
    const SEQUENCE_BITS: u32 = 48;

    pub(super) fn new(node: NodeId, sequence: u64) -> Self {
        debug_assert!(sequence < 1 << Self::SEQUENCE_BITS);
        SocketId(u64::from(node.0) << Self::SEQUENCE_BITS | sequence)
    }

    /// The node that holds the socket.
    pub fn node(self) -> NodeId {
        NodeId((self.0 >> Self::SEQUENCE_BITS) as u16)
    }

    /// The id as a number (for carrying it to another node).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id that [`as_u64`](Self::as_u64) gave.
    pub fn from_u64(id: u64) -> Self {
        SocketId(id)
    }

    /// The socket's number on its node.
    pub(crate) fn sequence(self) -> u64 {
        self.0 & ((1 << Self::SEQUENCE_BITS) - 1)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node().0, self.sequence())
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({self})")
    }
}

/// A string that is not a [`SocketId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSocketIdError;

impl fmt::Display for ParseSocketIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a socket id is <node>.<number>")
    }
}

impl std::error::Error for ParseSocketIdError {}

impl std::str::FromStr for SocketId {
    type Err = ParseSocketIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, sequence) = s.split_once('.').ok_or(ParseSocketIdError)?;
        let node = node.parse::<u16>().map_err(|_| ParseSocketIdError)?;
        let sequence = sequence.parse::<u64>().map_err(|_| ParseSocketIdError)?;
        if sequence >= 1 << Self::SEQUENCE_BITS {
            return Err(ParseSocketIdError);
        }
        Ok(SocketId::new(NodeId(node), sequence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, LocalHub};

    #[test]
    fn socket_ids_carry_their_node_and_print_and_parse() {
        let hub = Hub::with_local(std::sync::Arc::new(LocalHub::new(NodeId(7))));
        let a = hub.register().id();
        let b = hub.register().id();
        assert_ne!(a, b);
        assert_eq!(a.node(), NodeId(7));
        assert_eq!(a.to_string(), "7.1");
        assert_eq!("7.1".parse::<SocketId>(), Ok(a));
        for bad in ["", "7", "x.1", "7.x", "70000.1", "1.281474976710656"] {
            assert_eq!(bad.parse::<SocketId>(), Err(ParseSocketIdError), "{bad}");
        }
    }
}
