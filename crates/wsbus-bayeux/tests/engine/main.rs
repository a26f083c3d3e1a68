//! The bus's rules, driven through the public API as the runtime would.
//! One module per concern of the engine; `support` holds the test bus.

mod cluster;
mod connect;
mod expiry;
mod handshake;
mod input;
mod no_loss;
mod presence;
mod pubsub;
mod server_side;
mod shared_history;
mod special_channels;
mod support;
mod tokens;
