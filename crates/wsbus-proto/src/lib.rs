//! # wsbus-proto
//!
//! A sans-IO implementation of the WebSocket protocol (RFC 6455) with
//! permessage-deflate (RFC 7692), for both the server and the client role.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: bytes,
//! masking keys and handshake keys are passed in, events and bytes come out.
//! That makes the same code drivable by the tokio runtime (`wsbus`), by the
//! fuzzers in `fuzz/`, and by in-memory tests that pair a client with a server.
//!
//! * [`handshake`]: the opening handshake, both roles, with exact `400` /
//!   `426` / `431` rejections, each with a [`handshake::RejectionKind`] a
//!   metric can count.
//! * [`Connection`]: framing, fragmentation, UTF-8, ping/pong, the closing
//!   handshake, limits and compression. Its docs state the driving contract.
//! * [`CloseCode`] and [`ProtocolError::close_code`]: the one place protocol
//!   faults map to close codes. [`ProtocolError`], [`ApiError`],
//!   [`handshake::RejectionKind`] and [`handshake::ClientHandshakeError`]
//!   have an `as_str`: a stable `snake_case` label for metrics and logs.
//!
//! Docs cite the RFCs by section (§); quoted text is the RFC's own wording
//! where it decides the behaviour.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod close;
mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod outgoing;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Connection, Event, Limits, MaskKeySource, Role, State};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::{ApiError, ProtocolError};
pub use message::{Message, PreparedMessage, Utf8Bytes};
pub use outgoing::{COPY_THRESHOLD, Outgoing};
