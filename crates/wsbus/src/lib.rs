//! # wsbus
//!
//! The tokio runtime of wsbus. It drives the sans-IO protocol core
//! (`wsbus-proto`) for servers and clients, and carries the application API:
//!
//! * [`app`]: the upgrade decision and the ordered event handler
//!   ([`app::WebSocketApp`]);
//! * [`Hub`]: send to a socket or a group, manage groups, close sockets —
//!   from anywhere;
//! * [`session`]: HTTP sessions and the sockets bound to them;
//! * [`Server`]: one hyper listener for upgrades and plain HTTP (an axum
//!   `Router`), ws and wss, with graceful shutdown; or mount endpoints in
//!   an axum application of your own ([`axum`]);
//! * [`client`]: a `ws://` client;
//! * [`bus`]: the Bayeux message bus over WebSocket and long-polling, with
//!   server-side publishing and `/service` handlers ([`bus::Bus`]); the
//!   engine's types are re-exported as [`bayeux`];
//! * [`auth`]: JWT verification for handshakes ([`auth::TokenVerifier`]).

#![warn(missing_docs, unreachable_pub)]

pub mod app;
pub mod auth;
pub mod axum;
pub mod bus;
pub mod capture;
pub mod client;
mod driver;
pub mod echo;
mod hub;
pub mod limits;
pub mod metrics;
mod origin;
pub mod proxy;
mod runtime;
pub mod schema;
pub mod security;
mod server;
pub mod session;
mod transport;
mod upgrade;

pub use driver::{SlowConsumerPolicy, SocketSettings};
pub use hub::{
    GroupObserver, GroupSend, Hub, HubEngine, LocalHub, NodeId, Outcome, ParseSocketIdError,
    SocketFacts, SocketId, SocketSnapshot,
};
pub use metrics::Metrics;
pub use runtime::{HandshakeRefusal, Runtime, RuntimeBuilder, ServerConfig};
pub use server::{ConnectionInfo, Server, tls_acceptor};
pub use wsbus_bayeux as bayeux;
pub use wsbus_proto as proto;

/// The default origin rule of WebSocket endpoints (no `Origin`, or the
/// request's own origin after RFC 6454 normalisation), for HTTP routes that
/// need the same protection (form posts).
pub fn origin_allowed_by_default(origin: Option<&str>, host: &str, tls: bool) -> bool {
    origin::default_rule(origin, host, tls)
}
