//! permessage-deflate (RFC 7692): negotiation and the per-connection
//! compression contexts. Section numbers in this module are RFC 7692's unless
//! RFC 6455 is named.
//!
//! # Memory
//!
//! By default a server answers every offer without context takeover in
//! either direction (§7.1.1.1, §7.1.1.2; [`DeflateConfig`] says why and what
//! context takeover costs). Each message is then compressed with a stream
//! shared by every connection on the thread (one per level and window size,
//! reset after use) — what uWebSockets calls its shared compressor — and
//! inflated with a stream borrowed from the thread's pool when the message
//! starts and given back, reset, when it ends (a message may arrive over
//! many reads, so that stream is the connection's meanwhile). An idle
//! connection holds no zlib state.
//!
//! With context takeover (an opt-in, capped by
//! [`DeflateConfig::context_takeover_max_connections`]) a direction's stream
//! is the connection's own, created on first use and kept until it closes:
//!
//! * deflate (our sending side): `2^(bits+2) + 2^(mem_level+9)` bytes, about
//!   256 KiB at 15 window bits (zlib's `memLevel` 8 is fixed by flate2);
//!   `2^(9+2)+128 KiB` ≈ 130 KiB at 9 bits.
//! * inflate (our receiving side): `2^bits` bytes of window (32 KiB at 15 bits)
//!   plus about 7 KiB of state.
//!
//! [`DeflateConfig::server_max_window_bits`] / `client_max_window_bits` lower
//! these.
//!
//! # Window size 8
//!
//! zlib (and zlib-rs) cannot compress with a 256-byte window: a raw deflate
//! stream asked for 8 window bits silently uses 9, which a strict peer may be
//! unable to inflate. When a peer limits our window to 8 bits we accept the
//! offer and send every message uncompressed, which RFC 7692 §6 allows
//! (RSV1 is per message). We still inflate the peer's compressed messages, with a
//! window of at least 9 bits because zlib-based peers compress with 9 when
//! told 8.

mod context;
mod negotiation;

pub(crate) use context::{DeflateContext, Side};
pub use negotiation::{
    DEFAULT_CONTEXT_TAKEOVER_MAX_CONNECTIONS, DeflateConfig, DeflateOffer, DeflateParams,
    EXTENSION_NAME, ExtensionElement, InvalidParams, parse_extensions,
};
