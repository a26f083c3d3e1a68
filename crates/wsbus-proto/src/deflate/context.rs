//! The per-connection compression contexts: the zlib streams, created on
//! first use, the compressor shared by the thread and the pool of
//! decompressors for messages without context takeover (§7.2), and the
//! process-wide count of connections that hold context takeover state.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;
use crate::error::ProtocolError;

/// The 4 octets a sync flush ends with; RFC 7692 §7.2.1 removes them from each
/// compressed message and §7.2.2 appends them before inflating.
const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Idle decompressors each thread keeps per window size for messages
/// received without context takeover. Each holds about 40 KiB at 15 bits
/// (window plus state), so a thread caches at most 7 sizes × 4 ≈ 1.1 MiB;
/// 4 covers the messages a thread can have in flight at once in practice
/// (one being inflated per socket poll), and a miss costs only a new stream.
pub(crate) const INFLATER_POOL_PER_WINDOW: usize = 4;

/// Server-side connections whose negotiated parameters keep context takeover
/// in at least one direction, process-wide; [`DeflateConfig`] caps it with
/// `context_takeover_max_connections` (see `negotiate_server`).
///
/// [`DeflateConfig`]: super::DeflateConfig
static TAKEOVER_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// How many server-side connections hold context takeover now.
pub(crate) fn takeover_connections() -> usize {
    TAKEOVER_CONNECTIONS.load(Ordering::Relaxed)
}

/// Which side of the connection we are, for reading negotiated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// The compression state of one connection.
pub(crate) struct DeflateContext {
    /// Boxed: a zlib stream object is 144 bytes, and most connections never
    /// compress or never receive compressed messages.
    deflater: Option<Box<Compress>>,
    inflater: Option<Box<Decompress>>,
    /// Our compressor's window; `None` when we must send uncompressed (8 bits).
    send_window_bits: Option<u8>,
    send_no_context_takeover: bool,
    recv_window_bits: u8,
    recv_no_context_takeover: bool,
    /// This connection is counted in [`TAKEOVER_CONNECTIONS`] until dropped.
    counted: bool,
    /// The current message's DEFLATE stream ended with a final block
    /// (BFINAL); its remaining bytes are ignored until the message ends, so
    /// the outcome does not depend on how reads split the message.
    recv_stream_ended: bool,
    level: u32,
    threshold: usize,
}

impl std::fmt::Debug for DeflateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateContext")
            .field("deflater", &self.deflater.is_some())
            .field("inflater", &self.inflater.is_some())
            .field("send_window_bits", &self.send_window_bits)
            .field("recv_window_bits", &self.recv_window_bits)
            .finish()
    }
}

thread_local! {
    /// Compressors for messages sent without context takeover, by level and
    /// window bits, shared by every connection on this thread (see the
    /// module's "Memory").
    static SHARED_DEFLATERS: RefCell<Vec<(u32, u8, Compress)>> = const { RefCell::new(Vec::new()) };

    /// Idle decompressors by window bits, reset, for messages received
    /// without context takeover: taken when such a message starts and given
    /// back when it ends. A message may span reads and its task may move
    /// threads in between; the pool is only a cache, so a stream taken on
    /// one thread may be given back on another.
    static INFLATER_POOL: RefCell<Vec<(u8, Box<Decompress>)>> = const { RefCell::new(Vec::new()) };
}

/// A reset decompressor for `bits` from this thread's pool, or a new one.
fn take_inflater(bits: u8) -> Box<Decompress> {
    INFLATER_POOL
        .with_borrow_mut(|pool| {
            let index = pool.iter().rposition(|(b, _)| *b == bits)?;
            Some(pool.swap_remove(index).1)
        })
        .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, bits)))
}

/// Reset `inflater` and keep it for the next message, unless the pool
/// already holds [`INFLATER_POOL_PER_WINDOW`] of its size.
fn give_back_inflater(bits: u8, mut inflater: Box<Decompress>) {
    inflater.reset(false);
    INFLATER_POOL.with_borrow_mut(|pool| {
        if pool.iter().filter(|(b, _)| *b == bits).count() < INFLATER_POOL_PER_WINDOW {
            pool.push((bits, inflater));
        }
    });
}

/// Deflate one whole message with a sync flush, then drop the trailing
/// `00 00 FF FF` (RFC 7692 §7.2.1).
fn deflate_message(deflater: &mut Compress, input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = deflater.total_in();
    loop {
        let consumed = (deflater.total_in() - start) as usize;
        deflater
            .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate on valid state cannot fail");
        let consumed = (deflater.total_in() - start) as usize;
        // A sync flush is complete once all input is in and zlib left
        // output space unused.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&SYNC_FLUSH_TAIL) {
        out.truncate(out.len() - 4);
    } else if out.is_empty() {
        // zlib emits nothing for empty input right after a flush; §7.2.3.6
        // gives the single byte 0x00 (an empty fixed-Huffman block).
        out.push(0x00);
    } else {
        unreachable!("a sync flush ends with 00 00 FF FF");
    }
    Bytes::from(out)
}

impl DeflateContext {
    pub(crate) fn new(side: Side, params: &DeflateParams, level: u32, threshold: usize) -> Self {
        let (send_bits, send_nct, recv_bits, recv_nct) = match side {
            Side::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
                params.client_max_window_bits,
                params.client_no_context_takeover,
            ),
            Side::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
        };
        let send_bits = send_bits.unwrap_or(15);
        let counted = side == Side::Server && !(send_nct && recv_nct);
        if counted {
            TAKEOVER_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        }
        DeflateContext {
            counted,
            deflater: None,
            inflater: None,
            send_window_bits: (send_bits >= 9).then_some(send_bits),
            send_no_context_takeover: send_nct,
            recv_window_bits: recv_bits.unwrap_or(15).max(9),
            recv_no_context_takeover: recv_nct,
            recv_stream_ended: false,
            level: level.min(9),
            threshold,
        }
    }

    /// Whether a message of `len` bytes should be sent compressed.
    pub(crate) fn should_compress(&self, len: usize) -> bool {
        self.send_window_bits.is_some() && len >= self.threshold
    }

    /// Compress one whole message (RFC 7692 §7.2.1).
    pub(crate) fn compress(&mut self, input: &[u8]) -> Bytes {
        let bits = self
            .send_window_bits
            .expect("should_compress checked the window");
        let level = self.level;
        let new = || Compress::new_with_window_bits(Compression::new(level), false, bits);
        if self.send_no_context_takeover {
            return SHARED_DEFLATERS.with_borrow_mut(|shared| {
                let index = match shared.iter().position(|s| (s.0, s.1) == (level, bits)) {
                    Some(index) => index,
                    None => {
                        shared.push((level, bits, new()));
                        shared.len() - 1
                    }
                };
                let deflater = &mut shared[index].2;
                let out = deflate_message(deflater, input);
                deflater.reset();
                out
            });
        }
        let deflater = self.deflater.get_or_insert_with(|| Box::new(new()));
        deflate_message(deflater, input)
    }

    /// Inflate the next piece of a compressed message into `out`, failing
    /// once `out` would exceed `limit` bytes. `last` marks the message's final
    /// piece, after which the sync-flush tail is appended (§7.2.2).
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        if !self.recv_stream_ended {
            self.inflate(input, out, limit)?;
        }
        if last {
            if !std::mem::take(&mut self.recv_stream_ended) {
                self.inflate(&SYNC_FLUSH_TAIL, out, limit)?;
            }
            // §7.1.1.2: without context takeover the peer starts each
            // message with an empty window, so nothing of ours needs to
            // outlive the message: the idle connection holds no stream.
            if self.recv_no_context_takeover
                && let Some(inflater) = self.inflater.take()
            {
                give_back_inflater(self.recv_window_bits, inflater);
            }
        }
        Ok(())
    }

    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        let bits = self.recv_window_bits;
        let inflater = self.inflater.get_or_insert_with(|| take_inflater(bits));
        let start = inflater.total_in();
        loop {
            let consumed = (inflater.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(ProtocolError::InflatedTooLarge { limit });
                }
                // Grow geometrically (amortised O(n) copies) but never past
                // `limit + 1`: one byte over the limit proves the breach, so a
                // bomb costs at most `limit` bytes of memory.
                let room = out
                    .capacity()
                    .max(4096)
                    .min(limit.saturating_add(1) - out.len());
                out.reserve_exact(room);
            }
            let status = inflater
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidDeflateData)?;
            if out.len() > limit {
                return Err(ProtocolError::InflatedTooLarge { limit });
            }
            let consumed = (inflater.total_in() - start) as usize;
            match status {
                // A final block (BFINAL) ends the stream; the next message
                // starts a fresh one and anything after the end is ignored.
                Status::StreamEnd => {
                    inflater.reset(false);
                    self.recv_stream_ended = true;
                    return Ok(());
                }
                _ if consumed == input.len() && out.len() < out.capacity() => return Ok(()),
                Status::BufError if out.len() < out.capacity() => return Ok(()),
                _ => {}
            }
        }
    }
}

impl Drop for DeflateContext {
    fn drop(&mut self) {
        if self.counted {
            TAKEOVER_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(params: &DeflateParams, messages: &[&[u8]]) {
        let mut server = DeflateContext::new(Side::Server, params, 6, 0);
        let mut client = DeflateContext::new(Side::Client, params, 6, 0);
        for msg in messages {
            let wire = server.compress(msg);
            let mut out = Vec::new();
            client
                .decompress(&wire, true, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(&out, msg);
        }
    }

    #[test]
    fn compress_roundtrip_with_and_without_context_takeover() {
        let msgs: &[&[u8]] = &[
            b"Hello, hello, hello!",
            b"",
            b"Hello, hello, hello again!",
            &[7u8; 100_000],
        ];
        roundtrip(&DeflateParams::default(), msgs);
        roundtrip(
            &DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(9),
                client_max_window_bits: Some(9),
            },
            msgs,
        );
    }

    #[test]
    fn without_context_takeover_connections_share_one_compressor() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let mut servers: Vec<_> = (0..3)
            .map(|_| DeflateContext::new(Side::Server, &params, 1, 0))
            .collect();
        let mut clients: Vec<_> = (0..3)
            .map(|_| DeflateContext::new(Side::Client, &params, 1, 0))
            .collect();
        // Interleaved: each message must not depend on another
        // connection's (or its own earlier) messages.
        for round in 0..3 {
            for (i, (server, client)) in servers.iter_mut().zip(&mut clients).enumerate() {
                let msg = format!("round {round} connection {i}: hello, hello, hello").repeat(20);
                let wire = server.compress(msg.as_bytes());
                let mut out = Vec::new();
                client
                    .decompress(&wire, true, &mut out, usize::MAX)
                    .unwrap();
                assert_eq!(out, msg.as_bytes());
                assert!(server.deflater.is_none(), "no deflate state of its own");
            }
        }
    }

    #[test]
    fn window_of_8_sends_uncompressed() {
        let params = DeflateParams {
            server_max_window_bits: Some(8),
            ..DeflateParams::default()
        };
        assert!(!DeflateContext::new(Side::Server, &params, 1, 0).should_compress(1000));
        assert!(DeflateContext::new(Side::Client, &params, 1, 0).should_compress(1000));
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let params = DeflateParams::default();
        let mut tx = DeflateContext::new(Side::Client, &params, 9, 0);
        let bomb = tx.compress(&vec![0u8; 10 << 20]);
        assert!(
            bomb.len() < 20 * 1024,
            "10 MiB of zeros deflates to {} bytes",
            bomb.len()
        );
        let mut rx = DeflateContext::new(Side::Server, &params, 1, 0);
        let mut out = Vec::new();
        let err = rx.decompress(&bomb, true, &mut out, 1 << 20).unwrap_err();
        assert_eq!(err, ProtocolError::InflatedTooLarge { limit: 1 << 20 });
        assert!(
            out.capacity() <= (1 << 20) + 1,
            "reserved {}",
            out.capacity()
        );
    }

    /// The parameters a server answers by default (RFC 7692 §7.1.1.1,
    /// §7.1.1.2: no context takeover in either direction).
    fn no_takeover() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        }
    }

    fn pooled(bits: u8) -> usize {
        INFLATER_POOL.with_borrow(|pool| pool.iter().filter(|(b, _)| *b == bits).count())
    }

    #[test]
    fn without_context_takeover_an_idle_connection_holds_no_stream() {
        let params = no_takeover();
        let mut server = DeflateContext::new(Side::Server, &params, 1, 0);
        let mut client = DeflateContext::new(Side::Client, &params, 1, 0);
        for round in 0..3 {
            let msg = format!(r#"{{"round":{round},"text":"hello, hello, hello"}}"#).repeat(5);
            let wire = client.compress(msg.as_bytes());
            let mut out = Vec::new();
            server
                .decompress(&wire, true, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(out, msg.as_bytes());
            let reply = server.compress(&out);
            out.clear();
            client
                .decompress(&reply, true, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(out, msg.as_bytes());
            assert!(server.deflater.is_none() && server.inflater.is_none());
            assert!(client.deflater.is_none() && client.inflater.is_none());
        }
        // The stream went back to this thread's pool and is reused: the
        // steady state creates no stream per message.
        assert!(pooled(15) >= 1);
    }

    #[test]
    fn a_pooled_inflater_serves_a_message_split_over_many_reads() {
        let params = no_takeover();
        let mut client = DeflateContext::new(Side::Client, &params, 6, 0);
        let mut servers: Vec<_> = (0..3)
            .map(|_| DeflateContext::new(Side::Server, &params, 1, 0))
            .collect();
        let messages: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                format!("message {i}: the quick brown fox ")
                    .repeat(200)
                    .into_bytes()
            })
            .collect();
        let wires: Vec<Bytes> = messages.iter().map(|m| client.compress(m)).collect();
        // The three messages arrive interleaved, 7 bytes per read: each
        // connection holds its own stream from its message's first piece to
        // its last, whatever the pool does in between.
        let mut outs = vec![Vec::new(); 3];
        let longest = wires.iter().map(Bytes::len).max().unwrap();
        for start in (0..longest).step_by(7) {
            for ((server, wire), out) in servers.iter_mut().zip(&wires).zip(&mut outs) {
                if start >= wire.len() {
                    continue;
                }
                let end = (start + 7).min(wire.len());
                server
                    .decompress(&wire[start..end], end == wire.len(), out, usize::MAX)
                    .unwrap();
                assert_eq!(server.inflater.is_some(), end < wire.len());
            }
        }
        assert_eq!(outs, messages);
        assert!(pooled(15) >= 3);
        assert!(pooled(15) <= INFLATER_POOL_PER_WINDOW);
    }

    #[test]
    fn the_inflater_pool_is_bounded_per_window() {
        let params = DeflateParams {
            client_max_window_bits: Some(11),
            ..no_takeover()
        };
        let mut client = DeflateContext::new(Side::Client, &params, 1, 0);
        let wire = client.compress(&[b'x'; 300]);
        let mut servers: Vec<_> = (0..INFLATER_POOL_PER_WINDOW + 3)
            .map(|_| DeflateContext::new(Side::Server, &params, 1, 0))
            .collect();
        let mut out = Vec::new();
        for server in &mut servers {
            server
                .decompress(&wire[..1], false, &mut out, usize::MAX)
                .unwrap();
        }
        for server in &mut servers {
            server
                .decompress(&wire[1..], true, &mut out, usize::MAX)
                .unwrap();
        }
        assert_eq!(pooled(11), INFLATER_POOL_PER_WINDOW);
    }

    #[test]
    fn with_context_takeover_the_inflater_stays() {
        let params = DeflateParams::default();
        let mut client = DeflateContext::new(Side::Client, &params, 1, 0);
        let mut server = DeflateContext::new(Side::Server, &params, 1, 0);
        for _ in 0..2 {
            let wire = client.compress(b"hello, hello, hello, hello, hello");
            let mut out = Vec::new();
            server
                .decompress(&wire, true, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(out, b"hello, hello, hello, hello, hello");
            assert!(server.inflater.is_some());
        }
    }
}
