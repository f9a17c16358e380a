//! CRC32C of the small inputs the log checksums by the million (a frame's
//! header fields and payload are often under 100 bytes).
//!
//! The `crc32c` crate is fast on long inputs (three interleaved streams)
//! but pays a fixed cost per call that dominates a frame of a few dozen
//! bytes. Below [`LONG`] bytes this runs the SSE4.2 `crc32` instruction
//! over 8-byte words directly; longer inputs, and CPUs without SSE4.2, use
//! the crate.
//!
//! Invariant: [`append`] equals `crc32c::crc32c_append` for every input
//! (tested against it), so checksums on disk do not depend on the path.

/// Inputs at least this long go to the `crc32c` crate.
const LONG: usize = 256;

/// The CRC32C of `bytes` continuing from `crc` (the CRC32C of what came
/// before; 0 for none).
#[inline]
pub(crate) fn append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() < LONG && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return unsafe { append_sse42(crc, bytes) };
    }
    crc32c::crc32c_append(crc, bytes)
}

/// [`append`] with the `crc32` instruction, 8 bytes at a time.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[allow(
    unused_unsafe,
    reason = "the intrinsics are safe here from Rust 1.87, unsafe before"
)]
unsafe fn append_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};
    let mut state = u64::from(!crc);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        // SAFETY: SSE4.2 is enabled for this function.
        state = unsafe { _mm_crc32_u64(state, u64::from_le_bytes(le)) };
    }
    let mut state = state as u32;
    // The last 0-7 bytes in at most three steps (each has a latency of
    // three cycles, as one of 8 bytes does).
    let mut rest = words.remainder();
    if let Some((four, tail)) = rest.split_first_chunk::<4>() {
        // SAFETY: as above.
        state = unsafe { _mm_crc32_u32(state, u32::from_le_bytes(*four)) };
        rest = tail;
    }
    if let Some((two, tail)) = rest.split_first_chunk::<2>() {
        // SAFETY: as above.
        state = unsafe { _mm_crc32_u16(state, u16::from_le_bytes(*two)) };
        rest = tail;
    }
    if let Some(&byte) = rest.first() {
        // SAFETY: as above.
        state = unsafe { _mm_crc32_u8(state, byte) };
    }
    !state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_equals_the_crate_for_every_length_and_split() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in 0..data.len() {
            let bytes = &data[..len];
            assert_eq!(append(0, bytes), crc32c::crc32c(bytes), "length {len}");
            let split = len / 3;
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                append(append(0, a), b),
                crc32c::crc32c(bytes),
                "length {len} split at {split}"
            );
        }
        assert_eq!(
            append(0x1234_5678, b"abc"),
            crc32c::crc32c_append(0x1234_5678, b"abc")
        );
    }
}
