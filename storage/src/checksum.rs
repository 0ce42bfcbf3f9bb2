//! CRC-32C (Castagnoli) for pages and streams.
//!
//! On x86_64 with SSE4.2 this uses the CRC32 instruction directly, so the
//! checksum is fast even in test builds where dependencies are not optimised;
//! elsewhere it falls back to the `crc32c` crate. Both produce the standard
//! CRC-32C (same values as `crc32c::crc32c`).

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Extends `crc` (a previous result) with `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked just above), which is
            // the only requirement of `hw_append`'s target feature.
            return unsafe { hw_append(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn hw_append(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(!crc);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        c = _mm_crc32_u64(c, u64::from_le_bytes(w));
    }
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_reference() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 9, 4096, 10_000] {
            assert_eq!(super::crc32c(&data[..len]), crc32c::crc32c(&data[..len]));
        }
        let a = super::crc32c_append(super::crc32c(&data[..100]), &data[100..]);
        assert_eq!(a, crc32c::crc32c(&data));
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
