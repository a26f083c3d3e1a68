//! Payload masking (RFC 6455 §5.3): `octet[i] ^= key[i % 4]`.
//!
//! The key is widened to a 64-bit word so that the bulk of the payload is
//! masked eight bytes at a time; the loop over `chunks_exact_mut(8)` is plain
//! safe code that the compiler turns into SIMD on every target we build for.
//! Only the unaligned head and the tail are masked byte by byte.

/// XOR `buf` with `key`, where `buf[0]` is byte number `offset` of the frame's
/// payload (so a payload can be unmasked in pieces as it arrives).
///
/// Returns the offset of the byte after `buf`, for the next piece.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let rotation = offset % 4;
    let key = rotate(key, rotation);
    apply_mask_aligned(buf, key);
    offset + buf.len()
}

/// The key as seen by a piece that starts `rotation` bytes into the cycle.
fn rotate(key: [u8; 4], rotation: usize) -> [u8; 4] {
    let mut out = [0; 4];
    for (i, b) in out.iter_mut().enumerate() {
        *b = key[(i + rotation) % 4];
    }
    out
}

/// Mask with `key` applying to `buf[0]`.
fn apply_mask_aligned(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8-byte chunk")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so it starts at key[0] again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Reference implementation used by tests and benchmarks as the baseline.
#[doc(hidden)]
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn matches_reference_at_every_alignment_offset_and_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        // A backing buffer lets the slice start at every alignment 0..16.
        for align in 0..16 {
            for len in 0..80 {
                for offset in 0..4 {
                    let mut backing = pattern(align + len);
                    let mut expected = backing.clone();
                    apply_mask(&mut backing[align..], key, offset);
                    apply_mask_bytewise(&mut expected[align..], key, offset);
                    assert_eq!(backing, expected, "align {align} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn pieces_compose_to_the_whole() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original = pattern(1000);
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in [1, 3, 7, 8, 9, 500, 999] {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            let next = apply_mask(a, key, 0);
            apply_mask(b, key, next);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn masking_twice_is_identity() {
        let original = pattern(333);
        let mut buf = original.clone();
        apply_mask(&mut buf, [9, 8, 7, 6], 2);
        apply_mask(&mut buf, [9, 8, 7, 6], 2);
        assert_eq!(buf, original);
    }
}
