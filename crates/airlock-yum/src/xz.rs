//! The size an `.xz` file says it decompresses to, read from its LZMA2 chunk headers
//! without decompressing anything.
//!
//! The xz decoder holds a whole block in memory before it writes a byte, so a bound checked
//! on its output comes too late: a few hundred KiB of xz can hold gigabytes of zeros. Each
//! LZMA2 chunk header names its unpacked size, and the decoder refuses a chunk that decodes
//! to anything else, so the sum of those sizes bounds what decoding can produce; it is
//! checked against the caller's limit before decoding starts.
//!
//! ```text
//! stream  := header(12) block* index footer(12)           (one stream; the decoder allows one)
//! block   := header((size+1)*4) chunk* 0x00 padding(to 4) check(0|4|8|32)
//! chunk   := 0x01|0x02 size(2) data(size+1)                uncompressed
//!          | 0x80..0xff size(2) packed(2) [props(1)] data(packed+1)   LZMA
//! ```
//! (The `.xz` file format 1.2.1, §2 and §3; LZMA2 chunk headers as liblzma writes them.)

use crate::RepodataError;

const MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The bytes the blocks of the xz stream `bytes` decompress to, at most `limit`.
///
/// # Errors
/// [`RepodataError::TooLarge`] once the chunk headers add up to more than `limit`;
/// [`RepodataError::Decompress`] for a stream whose structure cannot be walked (truncated,
/// an unknown check or chunk type, a block with more than one filter): the decoder would
/// refuse it too, or decode it without a bound.
pub(crate) fn declared_size(bytes: &[u8], limit: u64) -> Result<u64, RepodataError> {
    let corrupt = |why: &str| RepodataError::Decompress(format!("not a valid xz stream: {why}"));
    let truncated = || corrupt("it ends early");
    if bytes.len() < 12 || &bytes[..6] != MAGIC {
        return Err(corrupt("no xz header"));
    }
    let check_size = match bytes[7] & 0x0f {
        0x00 => 0,
        0x01 => 4,
        0x04 => 8,
        0x0a => 32,
        other => return Err(corrupt(&format!("unknown check type {other}"))),
    };
    let byte = |at: usize| bytes.get(at).copied().ok_or_else(truncated);
    let u16_at = |at: usize| {
        Ok::<_, RepodataError>(usize::from(byte(at)?) << 8 | usize::from(byte(at + 1)?))
    };
    let mut total: u64 = 0;
    let mut at = 12;
    loop {
        let header_size = byte(at)?;
        if header_size == 0 {
            // The index: every block has been counted.
            return Ok(total);
        }
        let block_start = at;
        // Bits 0-1: filters - 1. Two LZMA2 filters would decode a bomb's output again.
        if byte(at + 1)? & 0x03 != 0 {
            return Err(corrupt("a block with more than one filter"));
        }
        at += (usize::from(header_size) + 1) * 4;
        loop {
            let control = byte(at)?;
            let (unpacked, skip) = match control {
                0x00 => break,
                0x01 | 0x02 => {
                    let size = u16_at(at + 1)? + 1;
                    (size, 3 + size)
                }
                0x80.. => {
                    let unpacked = (usize::from(control & 0x1f) << 16 | u16_at(at + 1)?) + 1;
                    let packed = u16_at(at + 3)? + 1;
                    let props = usize::from(control >= 0xc0);
                    (unpacked, 5 + props + packed)
                }
                _ => return Err(corrupt(&format!("LZMA2 chunk type {control:#04x}"))),
            };
            total += unpacked as u64;
            if total > limit {
                return Err(RepodataError::TooLarge(limit));
            }
            at += skip;
            if at > bytes.len() {
                return Err(truncated());
            }
        }
        // Past the end marker, padded to four bytes from the block's start, then the check.
        at += 1;
        at = block_start + (at - block_start).next_multiple_of(4) + check_size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xz(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &*text, &mut out).unwrap();
        out
    }

    #[test]
    fn the_declared_size_is_the_decoded_size() {
        for len in [0, 1, 100, 70_000, 200_000] {
            let text: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(declared_size(&xz(&text), u64::MAX).unwrap(), len as u64);
        }
    }

    #[test]
    fn past_the_limit_and_cut_streams_are_refused() {
        let bytes = xz(&vec![7; 100_000]);
        assert!(matches!(
            declared_size(&bytes, 99_999),
            Err(RepodataError::TooLarge(99_999))
        ));
        for cut in [0, 5, 11, 12, 13, 30, bytes.len() / 2] {
            assert!(
                matches!(
                    declared_size(&bytes[..cut], u64::MAX),
                    Err(RepodataError::Decompress(_))
                ),
                "cut at {cut}"
            );
        }
    }
}
