//! The queue of encoded bytes waiting for the transport.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::FrameHeader;
use crate::mask::apply_mask;

/// Payloads up to this size are copied next to their frame header, so that a
/// burst of small frames becomes one contiguous buffer (one `write`); larger
/// payloads are queued by reference, never copied. 1 KiB: copying that much
/// costs less than an extra iovec entry and a refcount.
pub const COPY_THRESHOLD: usize = 1024;

/// Encoded frames waiting to be written, in order.
///
/// Small frames accumulate in a contiguous staging buffer; large payloads and
/// frames prepared for many connections are held as shared [`Bytes`]. A
/// runtime writes them with [`Outgoing::chunks_vectored`] (many frames per
/// syscall) and reports progress with [`Outgoing::advance`]. Once everything
/// is written the staging buffer is released, so an idle connection holds no
/// write buffer.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Sealed chunks, oldest first; `staging` follows them.
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    len: usize,
}

impl Outgoing {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue an unmasked frame.
    pub(crate) fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        debug_assert!(header.mask.is_none());
        self.len += header.encoded_len() + payload.len();
        header.encode(&mut self.staging);
        if payload.len() <= COPY_THRESHOLD {
            self.staging.extend_from_slice(&payload);
        } else {
            self.seal();
            self.chunks.push_back(payload);
        }
    }

    /// Queue a masked frame: the payload is copied and masked in the copy
    /// (the caller's bytes may be shared).
    pub(crate) fn push_masked(&mut self, header: &FrameHeader, payload: &[u8]) {
        let key = header.mask.expect("masked frame has a key");
        self.len += header.encoded_len() + payload.len();
        header.encode(&mut self.staging);
        let start = self.staging.len();
        self.staging.extend_from_slice(payload);
        apply_mask(&mut self.staging[start..], key, 0);
    }

    /// Queue bytes that are already one or more complete encoded frames.
    pub(crate) fn push_encoded(&mut self, frame: Bytes) {
        self.len += frame.len();
        if frame.len() <= COPY_THRESHOLD {
            self.staging.extend_from_slice(&frame);
        } else {
            self.seal();
            self.chunks.push_back(frame);
        }
    }

    /// Move the staged bytes into a chunk of their own, so that a chunk can
    /// be queued after them. `split` keeps the rest of the allocation for the
    /// next small frames.
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Fill `dst` with the queued bytes, in order; returns how many slices
    /// were filled.
    pub fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let staged = (!self.staging.is_empty()).then_some(&self.staging[..]);
        let all = self.chunks.iter().map(|c| &c[..]).chain(staged);
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(all) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// The oldest contiguous chunk, for transports without vectored writes.
    pub fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.staging,
        }
    }

    /// Mark `n` bytes as written.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advanced past the queued bytes");
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() <= n => {
                    n -= chunk.len();
                    self.chunks.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(n);
                    n = 0;
                }
                None => {
                    self.staging.advance(n);
                    n = 0;
                }
            }
        }
        if self.len == 0 {
            // Idle connections keep no write buffer.
            self.staging = BytesMut::new();
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn header(len: usize) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::BINARY,
            mask: None,
            payload_len: len as u64,
        }
    }

    fn drain(out: &mut Outgoing, step: usize) -> Vec<u8> {
        let mut written = Vec::new();
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = out.chunks_vectored(&mut slices);
            let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let take = bytes.len().min(step);
            written.extend_from_slice(&bytes[..take]);
            out.advance(take);
        }
        written
    }

    #[test]
    fn small_and_large_frames_keep_order_across_partial_writes() {
        for step in [1, 3, 100, 5000, usize::MAX] {
            let mut out = Outgoing::default();
            let big = Bytes::from(vec![9u8; 4000]);
            out.push_frame(&header(3), Bytes::from_static(b"abc"));
            out.push_frame(&header(big.len()), big.clone());
            out.push_frame(&header(2), Bytes::from_static(b"de"));
            let mut expected = Vec::new();
            header(3).encode(&mut expected);
            expected.extend_from_slice(b"abc");
            header(4000).encode(&mut expected);
            expected.extend_from_slice(&big);
            header(2).encode(&mut expected);
            expected.extend_from_slice(b"de");
            assert_eq!(out.len(), expected.len());
            assert_eq!(drain(&mut out, step), expected, "step {step}");
            assert_eq!(out.staging.capacity(), 0, "idle queue keeps no buffer");
        }
    }
}
