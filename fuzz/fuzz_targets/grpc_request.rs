//! Fuzzes the decode step of the gRPC request path: the first byte picks an
//! etcd method, the rest is decoded as its request message exactly as the
//! gRPC server does (prost, `bytes::Bytes` fields). A message that decodes
//! must survive an encode/decode round trip unchanged. Any input: a
//! message or a decode error, never a panic or an unbounded allocation.
//! (The gateway's protobuf-to-native conversion is private to the server
//! and not reached from here.)
#![no_main]

use corekv_wire::proto::etcdserverpb as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = M::decode(bytes) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(m, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&method, body)) = data.split_first() else {
        return;
    };
    match method % 16 {
        0 => roundtrip::<pb::RangeRequest>(body),
        1 => roundtrip::<pb::PutRequest>(body),
        2 => roundtrip::<pb::DeleteRangeRequest>(body),
        3 => roundtrip::<pb::TxnRequest>(body),
        4 => roundtrip::<pb::CompactionRequest>(body),
        5 => roundtrip::<pb::WatchRequest>(body),
        6 => roundtrip::<pb::LeaseGrantRequest>(body),
        7 => roundtrip::<pb::LeaseRevokeRequest>(body),
        8 => roundtrip::<pb::LeaseKeepAliveRequest>(body),
        9 => roundtrip::<pb::LeaseTimeToLiveRequest>(body),
        10 => roundtrip::<pb::MemberAddRequest>(body),
        11 => roundtrip::<pb::HashKvRequest>(body),
        12 => roundtrip::<pb::AlarmRequest>(body),
        13 => roundtrip::<pb::MoveLeaderRequest>(body),
        14 => roundtrip::<pb::AuthenticateRequest>(body),
        _ => roundtrip::<pb::StatusRequest>(body),
    }
});
