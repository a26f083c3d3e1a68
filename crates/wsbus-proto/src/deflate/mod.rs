//! permessage-deflate (RFC 7692): negotiation and the per-connection
//! compression contexts. Section numbers in this module are RFC 7692's unless
//! RFC 6455 is named.
//!
//! # Memory
//!
//! Contexts are created on first use, so a connection that never sends (or
//! never receives) a compressed message holds no zlib state for that
//! direction. Once created, a context costs roughly:
//!
//! * deflate (our sending side): `2^(bits+2) + 2^(mem_level+9)` bytes, about
//!   256 KiB at 15 window bits (zlib's `memLevel` 8 is fixed by flate2);
//!   `2^(9+2)+128 KiB` ≈ 130 KiB at 9 bits.
//! * inflate (our receiving side): `2^bits` bytes of window (32 KiB at 15 bits)
//!   plus about 7 KiB of state.
//!
//! [`DeflateConfig::server_max_window_bits`] / `client_max_window_bits` lower
//! these. A side that sends **without context takeover** holds no deflate
//! state at all: each such message starts from an empty window, so it is
//! compressed with a stream shared by every connection on the thread (one
//! per level and window size) and reset after use — what uWebSockets calls
//! its shared compressor. The receiving side's context is reset, not
//! dropped, after each message without context takeover (a message may
//! arrive over many reads, so its stream cannot be shared).
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
    DeflateConfig, DeflateOffer, DeflateParams, EXTENSION_NAME, ExtensionElement, InvalidParams,
    parse_extensions,
};
