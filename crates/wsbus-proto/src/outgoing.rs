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
/// is written the whole queue is released: an idle connection holds no write
/// buffer, and its `Outgoing` is one null pointer.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// `Some` exactly while bytes are queued.
    queue: Option<Box<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Sealed chunks, oldest first; `staging` follows them.
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    len: usize,
    /// Where each queued frame ends, counted in bytes ever queued, so that
    /// frames not yet started can be dropped whole ([`Outgoing::discard_unstarted`]).
    frame_ends: VecDeque<u64>,
    /// Bytes ever queued.
    queued_total: u64,
    /// Bytes ever written.
    written_total: u64,
    /// Where the last completely written frame ended.
    finished_total: u64,
}

impl Outgoing {
    /// Bytes waiting to be written: encoded frames, headers included.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// Whether everything queued has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Release the queue once it is empty: idle connections keep nothing.
    fn release_if_empty(&mut self) {
        if self.queue.as_ref().is_some_and(|q| q.len == 0) {
            self.queue = None;
        }
    }

    /// Queue an unmasked frame.
    pub(crate) fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        self.queue().push_frame(header, payload);
    }

    /// Queue a masked frame: the payload is copied and masked in the copy
    /// (the caller's bytes may be shared).
    pub(crate) fn push_masked(&mut self, header: &FrameHeader, payload: &[u8]) {
        self.queue().push_masked(header, payload);
    }

    /// Queue bytes that are already one or more complete encoded frames.
    pub(crate) fn push_encoded(&mut self, frame: Bytes) {
        self.queue().push_encoded(frame);
    }

    /// Drop every queued frame that has not started to go out, keeping the
    /// one in flight (a frame cut in the middle would corrupt the stream).
    /// Used when a consumer is too slow: its close frame then goes next
    /// instead of behind megabytes it will never read.
    pub(crate) fn discard_unstarted(&mut self) {
        if let Some(queue) = &mut self.queue {
            queue.discard_unstarted();
        }
        self.release_if_empty();
    }

    /// Fill `dst` with the queued bytes, in order; returns how many slices
    /// were filled (all of `dst` when more chunks are queued than it holds).
    pub fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.queue.as_ref().map_or(0, |q| q.chunks_vectored(dst))
    }

    /// The oldest contiguous chunk, for transports without vectored writes;
    /// empty when nothing is queued.
    pub fn chunk(&self) -> &[u8] {
        self.queue.as_ref().map_or(&[], |q| q.chunk())
    }

    /// Mark `n` bytes as written, after a write of the
    /// [`chunks_vectored`](Self::chunks_vectored) or [`chunk`](Self::chunk)
    /// returned.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Self::len).
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advanced past the queued bytes");
        if let Some(queue) = &mut self.queue {
            queue.advance(n);
        }
        self.release_if_empty();
    }
}

impl Queue {
    /// Queue an unmasked frame.
    fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        debug_assert!(header.mask.is_none());
        self.count(header.encoded_len() + payload.len());
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
    fn push_masked(&mut self, header: &FrameHeader, payload: &[u8]) {
        let key = header.mask.expect("masked frame has a key");
        self.count(header.encoded_len() + payload.len());
        header.encode(&mut self.staging);
        let start = self.staging.len();
        self.staging.extend_from_slice(payload);
        apply_mask(&mut self.staging[start..], key, 0);
    }

    /// Queue bytes that are already one or more complete encoded frames.
    fn push_encoded(&mut self, frame: Bytes) {
        self.count(frame.len());
        if frame.len() <= COPY_THRESHOLD {
            self.staging.extend_from_slice(&frame);
        } else {
            self.seal();
            self.chunks.push_back(frame);
        }
    }

    /// Account for one more frame of `len` bytes.
    fn count(&mut self, len: usize) {
        self.len += len;
        self.queued_total += len as u64;
        self.frame_ends.push_back(self.queued_total);
    }

    /// Drop every queued frame that has not started to go out, keeping the
    /// one in flight (a frame cut in the middle would corrupt the stream).
    /// Used when a consumer is too slow: its close frame then goes next
    /// instead of behind megabytes it will never read.
    fn discard_unstarted(&mut self) {
        // The front frame has started iff bytes past the previous frame's end
        // were written.
        let keep = match self.frame_ends.front() {
            Some(&end) if self.written_total > self.finished_total => {
                (end - self.written_total) as usize
            }
            _ => 0,
        };
        let mut left = keep;
        let mut kept = VecDeque::new();
        while let Some(mut chunk) = self.chunks.pop_front() {
            if left == 0 {
                break;
            }
            chunk.truncate(left);
            left -= chunk.len();
            kept.push_back(chunk);
        }
        self.chunks = kept;
        self.staging.truncate(left);
        self.len = keep;
        self.queued_total = self.written_total + keep as u64;
        self.frame_ends.retain(|&end| end <= self.queued_total);
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
    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let staged = (!self.staging.is_empty()).then_some(&self.staging[..]);
        let all = self.chunks.iter().map(|c| &c[..]).chain(staged);
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(all) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// See [`Outgoing::chunk`].
    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.staging,
        }
    }

    /// See [`Outgoing::advance`].
    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advanced past the queued bytes");
        self.len -= n;
        self.written_total += n as u64;
        while let Some(&end) = self.frame_ends.front()
            && end <= self.written_total
        {
            self.finished_total = end;
            self.frame_ends.pop_front();
        }
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
            assert!(out.queue.is_none(), "an idle queue keeps nothing");
        }
    }

    #[test]
    fn discard_keeps_only_the_frame_in_flight() {
        let frame = |len: usize, byte: u8| {
            let mut encoded = Vec::new();
            header(len).encode(&mut encoded);
            encoded.extend(std::iter::repeat_n(byte, len));
            encoded
        };
        // Nothing written yet: everything goes.
        let mut out = Outgoing::default();
        out.push_frame(&header(10), Bytes::from(vec![1u8; 10]));
        out.push_frame(&header(2000), Bytes::from(vec![2u8; 2000]));
        out.discard_unstarted();
        assert!(out.is_empty());

        // Half of the large frame written: its rest stays, later frames go.
        let mut out = Outgoing::default();
        out.push_frame(&header(10), Bytes::from(vec![1u8; 10]));
        out.push_frame(&header(2000), Bytes::from(vec![2u8; 2000]));
        out.push_frame(&header(5), Bytes::from(vec![3u8; 5]));
        out.push_frame(&header(3000), Bytes::from(vec![4u8; 3000]));
        let first = frame(10, 1).len();
        out.advance(first + 1000);
        out.discard_unstarted();
        let big = frame(2000, 2);
        assert_eq!(drain(&mut out, usize::MAX), big[1000..]);

        // A frame queued after the discard follows directly.
        let mut out = Outgoing::default();
        out.push_frame(&header(10), Bytes::from(vec![1u8; 10]));
        out.push_frame(&header(10), Bytes::from(vec![2u8; 10]));
        out.advance(3);
        out.discard_unstarted();
        out.push_frame(&header(1), Bytes::from(vec![9u8; 1]));
        let mut expected = frame(10, 1)[3..].to_vec();
        expected.extend(frame(1, 9));
        assert_eq!(drain(&mut out, 4), expected);
    }
}
