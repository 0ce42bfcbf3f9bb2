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
            // the only requirement of `hw_append`'s target feature (and of
            // the functions it calls).
            return unsafe { hw_append(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

/// Bytes per stream of the three-way interleaved CRC (a multiple of 8):
/// three streams of this length cover a 4092-byte page body but 12 bytes.
#[cfg(target_arch = "x86_64")]
const STREAM: usize = 1360;

/// `shift[k][v]`: the raw CRC register after feeding `STREAM` zero bytes to
/// the register value `v << 8k` (the operator is linear, so a register's
/// image is the XOR of its four bytes' images).
#[cfg(target_arch = "x86_64")]
static SHIFT: std::sync::OnceLock<[[u32; 256]; 4]> = std::sync::OnceLock::new();

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn shift_tables() -> &'static [[u32; 256]; 4] {
    SHIFT.get_or_init(|| {
        let zeros = [0u8; STREAM];
        let mut basis = [0u32; 32];
        for (j, b) in basis.iter_mut().enumerate() {
            *b = hw_raw(1 << j, &zeros);
        }
        let mut t = [[0u32; 256]; 4];
        for (k, table) in t.iter_mut().enumerate() {
            for (v, e) in table.iter_mut().enumerate() {
                *e = (0..8)
                    .filter(|bit| v & (1 << bit) != 0)
                    .fold(0, |acc, bit| acc ^ basis[8 * k + bit]);
            }
        }
        t
    })
}

#[cfg(target_arch = "x86_64")]
fn shift(t: &[[u32; 256]; 4], x: u32) -> u32 {
    t[0][(x & 0xFF) as usize]
        ^ t[1][((x >> 8) & 0xFF) as usize]
        ^ t[2][((x >> 16) & 0xFF) as usize]
        ^ t[3][(x >> 24) as usize]
}

#[cfg(target_arch = "x86_64")]
fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// The raw register (no pre/post inversion) after feeding `data` to `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn hw_raw(c: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(c);
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
    c
}

/// Three-way interleaved CRC: the CRC instruction has a latency of three
/// cycles and a throughput of one, so three independent streams over
/// consecutive `STREAM`-byte blocks run about three times as fast as one
/// chain; the streams are joined with the linear "feed `STREAM` zero bytes"
/// operator: `crc(A‖B) = shift(crc(A)) ^ crc0(B)` for raw registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn hw_append(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    let mut c = !crc;
    let mut rest = data;
    if rest.len() >= 3 * STREAM {
        let t = shift_tables();
        while rest.len() >= 3 * STREAM {
            let (a, tail) = rest.split_at(STREAM);
            let (b, tail) = tail.split_at(STREAM);
            let (cc, tail) = tail.split_at(STREAM);
            let (mut x, mut y, mut z) = (u64::from(c), 0u64, 0u64);
            for i in 0..STREAM / 8 {
                x = _mm_crc32_u64(x, word(a, i));
                y = _mm_crc32_u64(y, word(b, i));
                z = _mm_crc32_u64(z, word(cc, i));
            }
            c = shift(t, shift(t, x as u32) ^ y as u32) ^ z as u32;
            rest = tail;
        }
    }
    !hw_raw(c, rest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_reference() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let s = 1360;
        for len in [
            0,
            1,
            7,
            8,
            9,
            3 * s - 1,
            3 * s,
            3 * s + 5,
            4092,
            4096,
            6 * s,
            10_000,
        ] {
            assert_eq!(super::crc32c(&data[..len]), crc32c::crc32c(&data[..len]));
        }
        let a = super::crc32c_append(super::crc32c(&data[..100]), &data[100..]);
        assert_eq!(a, crc32c::crc32c(&data));
        for split in [1, 13, 4080, 5000] {
            let a = super::crc32c_append(super::crc32c(&data[..split]), &data[split..]);
            assert_eq!(a, crc32c::crc32c(&data), "{split}");
        }
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
