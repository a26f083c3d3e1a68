//! A permessage-deflate decompression bomb.

use flate2::{Compress, Compression, FlushCompress};

/// Bytes of zeros the bomb inflates to: 1 GiB.
pub const BOMB_INFLATED_SIZE: usize = 1 << 30;

/// Size of one deflated block of zeros; the bomb repeats it.
const BLOCK: usize = 1 << 20;

/// A 1 GiB message of zeros, deflated: a message body as RFC 7692 §7.2.1
/// sends it (the final `00 00 FF FF` removed). DEFLATE cannot beat about
/// 1032:1, so the smallest such bomb is about 1 MiB; it is built from one
/// deflated 1 MiB block repeated, since with a window full of zeros every
/// block after the first compresses to the same bytes.
pub fn deflate_bomb_1_gib() -> Vec<u8> {
    let zeros = vec![0u8; BLOCK];
    let mut deflater = Compress::new(Compression::best(), false);
    let mut block = |input: &[u8]| {
        let mut out = Vec::with_capacity(64 * 1024);
        deflater
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .expect("deflate a block of zeros");
        out
    };
    let first = block(&zeros);
    let second = block(&zeros);
    assert_eq!(block(&zeros), second, "steady-state blocks repeat");
    let mut bomb = first;
    for _ in 1..BOMB_INFLATED_SIZE / BLOCK {
        bomb.extend_from_slice(&second);
    }
    bomb.truncate(bomb.len() - 4);
    bomb
}
