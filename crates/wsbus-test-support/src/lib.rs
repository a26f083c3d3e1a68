//! What the wsbus tests share, so that each is written once: raw WebSocket
//! frames over a blocking [`std::net::TcpStream`] ([`frame`], [`wire`]), the
//! 1 GiB permessage-deflate bomb ([`deflate`]), a server binary run as a child
//! process ([`process`]), a `redis-server` of the test's own ([`redis`]) and
//! the `/proc` figures of a process ([`procfs`]).
//!
//! Std and flate2 only: the support crate depends on no wsbus crate, so the
//! protocol core's own tests can use it without a cycle, and the frames it
//! writes and reads are checked against an encoder that is not the one under
//! test.

pub mod deflate;
pub mod frame;
pub mod process;
pub mod procfs;
pub mod redis;
pub mod wire;
