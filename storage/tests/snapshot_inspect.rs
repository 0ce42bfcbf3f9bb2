//! `Store::inspect_snapshot` reads the same stream `restore_snapshot` does:
//! same entry count and checksum as the writer reported, trailing bytes
//! after the trailer ignored (etcd's padding), any damaged byte refused.

mod common;

use common::{mem_store, put};
use corekv_storage::Store;

fn image() -> (Vec<u8>, corekv_storage::SnapshotInfo) {
    let (s, _b) = mem_store();
    let mut b = s.write().unwrap();
    for i in 0..50 {
        put(&mut b, &format!("k{:03}", i % 20), &format!("v{i}"));
    }
    b.put_meta(b"corekv/test", b"meta");
    b.commit(7, false).unwrap();
    let mut buf = Vec::new();
    let info = s.write_snapshot(&mut buf).unwrap();
    (buf, info)
}

#[test]
fn inspect_matches_what_the_writer_reported() {
    let (buf, written) = image();
    let seen = Store::inspect_snapshot(&mut buf.as_slice()).unwrap();
    assert_eq!(seen, written);
    assert_eq!(seen.bytes, buf.len() as u64);
    assert_eq!(seen.revision, 51, "revisions start at 1");
    assert_eq!(seen.applied_index, 7);
    // 50 versions plus the test meta entry (and whatever meta the store keeps).
    assert!(seen.entries >= 51, "{seen:?}");
}

#[test]
fn padding_after_the_trailer_is_ignored() {
    let (mut buf, written) = image();
    buf.extend_from_slice(&[0u8; 300]);
    assert_eq!(
        Store::inspect_snapshot(&mut buf.as_slice()).unwrap(),
        written
    );
}

#[test]
fn every_damaged_byte_is_refused() {
    let (buf, _) = image();
    // Step through the stream (every byte would be slow in debug builds
    // with little gain: any flipped byte is covered by the checksum).
    for at in (0..buf.len()).step_by(7) {
        let mut bad = buf.clone();
        bad[at] ^= 0x5a;
        assert!(
            Store::inspect_snapshot(&mut bad.as_slice()).is_err(),
            "flip at {at} accepted"
        );
    }
    assert!(Store::inspect_snapshot(&mut &buf[..buf.len() - 1]).is_err());
}
