//! # wsbus
//!
//! The tokio runtime of wsbus: it drives the sans-IO protocol core
//! (`wsbus-proto`) over TCP, for servers ([`Server`], with a [`Hub`] of
//! sockets and groups) and clients ([`client::connect`]).

pub mod client;
mod driver;
pub mod echo;
mod handler;
mod hub;
mod server;

pub use driver::CloseTimeouts;
pub use handler::{Handler, Socket, SocketCtx};
pub use hub::{Hub, SocketId};
pub use server::{Server, ServerConfig};
pub use wsbus_proto as proto;
