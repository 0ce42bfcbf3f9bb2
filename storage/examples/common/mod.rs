//! Helpers shared by the storage examples and the storage bench
//! (`benches/storage_vs_redb.rs` includes this file by path): the key hash
//! and the process CPU clock. Not every includer uses every item.
#![allow(dead_code)]

/// The 64-bit mix (splitmix64 finalizer) that orders the random keys of
/// the examples and the bench.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The random key of index `i`: 16 hex digits of `mix(i)`, padded with
/// '.' to `len` bytes (the `load` example's and the bench's 64 B keys).
pub fn random_key(i: u64, len: usize) -> Vec<u8> {
    let mut k = format!("{:016x}", mix(i)).into_bytes();
    k.resize(len, b'.');
    k
}

/// CPU seconds (user + system) this process has used, in 10 ms ticks: on
/// a loaded host this is steadier than the wall clock.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Puts `key` with the examples' value of index `i`: `vlen` bytes of
/// `fill`, the first (up to) 8 the index (little-endian).
pub fn put_indexed(
    b: &mut corekv_storage::WriteBatch,
    key: Vec<u8>,
    i: u64,
    fill: u8,
    vlen: usize,
) {
    let mut value = vec![fill; vlen];
    let n = vlen.min(8);
    value[..n].copy_from_slice(&i.to_le_bytes()[..n]);
    b.put(&corekv_storage::PutRequest {
        key,
        value,
        ..Default::default()
    })
    .expect("put");
}

/// One `count_only` pass over every key: verifies each page's checksum (a
/// server's earlier reads would have), so the passes after it measure the
/// reads alone. Returns the key count.
pub fn warm_up(view: &corekv_storage::ReadView) -> i64 {
    view.range(&corekv_storage::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    })
    .expect("range")
    .count
}
