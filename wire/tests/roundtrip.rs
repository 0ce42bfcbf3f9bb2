//! Every request and response variant survives encode -> frame decode ->
//! validation -> deserialize unchanged; malformed input never panics.

use corekv_wire::frame::{FrameFlags, HEADER_BYTES, encode_frame_flags};
use corekv_wire::*;
use proptest::prelude::*;

fn h() -> ResponseHeader {
    ResponseHeader {
        cluster_id: u64::MAX,
        member_id: 42,
        revision: -3,
        raft_term: 7,
    }
}

fn kv(k: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        create_revision: 1,
        mod_revision: 2,
        version: 3,
        value: vec![0, 255, 7],
        lease: -1,
    }
}

fn member() -> Member {
    Member {
        id: 9,
        name: "m1".into(),
        peer_urls: vec!["http://a:2380".into()],
        client_urls: vec!["http://a:2379".into()],
        is_learner: true,
        native_addr: "127.0.0.1:2378".into(),
    }
}

fn range_req() -> RangeRequest {
    RangeRequest {
        key: b"a".to_vec(),
        range_end: b"\0".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    }
}

fn put_req() -> PutRequest {
    PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 77,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    }
}

fn del_req() -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b"d".to_vec(),
        range_end: b"e".to_vec(),
        prev_kv: true,
    }
}

fn txn_req() -> TxnRequest {
    let cmp = |result, target| Compare {
        result,
        target,
        key: b"c".to_vec(),
        range_end: vec![],
    };
    Txn {
        compare: vec![
            cmp(CompareResult::Equal, CompareTarget::Version(1)),
            cmp(CompareResult::Greater, CompareTarget::CreateRevision(2)),
            cmp(CompareResult::Less, CompareTarget::ModRevision(3)),
            cmp(CompareResult::NotEqual, CompareTarget::Value(b"x".to_vec())),
            cmp(CompareResult::Equal, CompareTarget::Lease(4)),
        ],
        success: vec![
            Op::Range(range_req()),
            Op::Put(put_req()),
            Op::Txn(Txn {
                compare: vec![],
                success: vec![Op::DeleteRange(del_req())],
                failure: vec![Op::Put(PutRequest {
                    key: b"k2".to_vec(),
                    ..put_req()
                })],
            }),
        ],
        failure: vec![Op::DeleteRange(del_req())],
    }
    .into_request()
}

fn all_requests() -> Vec<Request> {
    vec![
        Request::Range(range_req()),
        Request::Put(put_req()),
        Request::DeleteRange(del_req()),
        Request::Txn(txn_req()),
        Request::Compact(CompactionRequest {
            revision: 100,
            physical: true,
        }),
        Request::WatchCreate(WatchCreateRequest {
            key: b"w".to_vec(),
            range_end: b"x".to_vec(),
            start_revision: 3,
            progress_notify: true,
            filters: vec![WatchFilterType::NoPut, WatchFilterType::NoDelete],
            prev_kv: true,
            watch_id: 12,
            fragment: true,
        }),
        Request::WatchCancel(WatchCancelRequest { watch_id: 12 }),
        Request::WatchProgress(WatchProgressRequest {}),
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 }),
        Request::LeaseRevoke(LeaseRevokeRequest { id: 5 }),
        Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: 5 }),
        Request::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 5, keys: true }),
        Request::LeaseLeases(LeaseLeasesRequest {}),
        Request::MemberList(MemberListRequest { linearizable: true }),
        Request::MemberAdd(MemberAddRequest {
            peer_urls: vec!["http://b:2380".into()],
            is_learner: true,
        }),
        Request::MemberRemove(MemberRemoveRequest { id: 9 }),
        Request::MemberUpdate(MemberUpdateRequest {
            id: 9,
            peer_urls: vec!["http://c:2380".into()],
        }),
        Request::MemberPromote(MemberPromoteRequest { id: 9 }),
        Request::Status(StatusRequest {}),
        Request::HashKv(HashKvRequest { revision: 8 }),
        Request::Defragment(DefragmentRequest {}),
        Request::Alarm(AlarmRequest {
            action: AlarmAction::Deactivate,
            member_id: 3,
            alarm: AlarmType::Nospace,
        }),
        Request::MoveLeader(MoveLeaderRequest { target_id: 4 }),
        Request::Snapshot(SnapshotRequest {}),
        Request::LeaseRevokeAs(LeaseRevokeAsRequest {
            id: 7,
            user: "alice".into(),
            auth_revision: 12,
        }),
        Request::PutAs(PutAsRequest {
            put: PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ..Default::default()
            },
            user: String::new(),
            auth_revision: 0,
        }),
    ]
}

fn all_responses() -> Vec<Response> {
    let members = vec![member(), Member::default()];
    let mut out = vec![
        Response::Range(RangeResponse {
            header: h(),
            kvs: vec![kv("a"), kv("b")],
            more: true,
            count: 2,
        }),
        Response::Put(PutResponse {
            header: h(),
            prev_kv: Some(kv("p")),
        }),
        Response::DeleteRange(DeleteRangeResponse {
            header: h(),
            deleted: 2,
            prev_kvs: vec![kv("d")],
        }),
        Response::Txn(TxnResponse {
            header: h(),
            succeeded: true,
            responses: vec![
                ResponseOp::Put(PutResponse {
                    header: h(),
                    prev_kv: None,
                }),
                ResponseOp::Txn(0),
            ],
            nested: vec![NestedTxnResponse {
                succeeded: false,
                responses: vec![
                    ResponseOp::Range(RangeResponse {
                        header: h(),
                        kvs: vec![kv("r")],
                        more: false,
                        count: 1,
                    }),
                    ResponseOp::DeleteRange(DeleteRangeResponse {
                        header: h(),
                        deleted: 0,
                        prev_kvs: vec![],
                    }),
                ],
            }],
        }),
        Response::Compact(CompactionResponse { header: h() }),
        Response::Watch(WatchResponse {
            header: h(),
            watch_id: -1,
            created: true,
            canceled: true,
            compact_revision: 4,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            fragment: true,
            events: vec![
                Event {
                    event_type: EventType::Put,
                    kv: kv("e"),
                    prev_kv: Some(kv("e0")),
                },
                Event {
                    event_type: EventType::Delete,
                    kv: kv("f"),
                    prev_kv: None,
                },
            ],
        }),
        Response::LeaseGrant(LeaseGrantResponse {
            header: h(),
            id: 1,
            ttl: 60,
            error: "e".into(),
        }),
        Response::LeaseRevoke(LeaseRevokeResponse { header: h() }),
        Response::LeaseKeepAlive(LeaseKeepAliveResponse {
            header: h(),
            id: 1,
            ttl: 0,
        }),
        Response::LeaseTimeToLive(LeaseTimeToLiveResponse {
            header: h(),
            id: 1,
            ttl: -1,
            granted_ttl: 60,
            keys: vec![b"k".to_vec()],
        }),
        Response::LeaseLeases(LeaseLeasesResponse {
            header: h(),
            leases: vec![LeaseStatus { id: 1 }, LeaseStatus { id: 2 }],
        }),
        Response::MemberList(MemberListResponse {
            header: h(),
            members: members.clone(),
        }),
        Response::MemberAdd(MemberAddResponse {
            header: h(),
            member: Some(member()),
            members: members.clone(),
        }),
        Response::MemberRemove(MemberRemoveResponse {
            header: h(),
            members: members.clone(),
        }),
        Response::MemberUpdate(MemberUpdateResponse {
            header: h(),
            members: members.clone(),
        }),
        Response::MemberPromote(MemberPromoteResponse {
            header: h(),
            members,
        }),
        Response::Status(StatusResponse {
            header: h(),
            version: "3.4.31".into(),
            db_size: 1 << 40,
            leader: 2,
            raft_index: 3,
            raft_term: 4,
            raft_applied_index: 5,
            errors: vec!["NOSPACE".into()],
            db_size_in_use: 6,
            is_learner: true,
        }),
        Response::HashKv(HashKvResponse {
            header: h(),
            hash: 0xdead_beef,
            compact_revision: 3,
            hash_revision: 9,
        }),
        Response::Defragment(DefragmentResponse { header: h() }),
        Response::Alarm(AlarmResponse {
            header: h(),
            alarms: vec![AlarmMember {
                member_id: 1,
                alarm: AlarmType::Corrupt,
            }],
        }),
        Response::MoveLeader(MoveLeaderResponse { header: h() }),
        Response::Snapshot(SnapshotResponse {
            header: h(),
            remaining_bytes: 512,
            blob: vec![9; 1000],
        }),
    ];
    out.extend(ApiError::all_kinds().into_iter().map(Response::Error));
    out.push(Response::Error(ApiError::NotLeader { leader_hint: 77 }));
    out.push(Response::Error(ApiError::Internal("boom".into())));
    out.push(Response::Error(ApiError::MalformedRequest("bad".into())));
    out
}

/// Encodes everything into one byte stream, then decodes it.
fn round_trip<T: Encode + Decode + PartialEq + std::fmt::Debug>(msgs: &[T])
where
    T::Archived: rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let mut wire = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let flags = if i % 2 == 0 {
            FrameFlags::MORE
        } else {
            FrameFlags::NONE
        };
        encode_frame_flags(1000 + i as u64, flags, m, &mut wire).unwrap();
    }
    let mut d = FrameDecoder::with_read_chunk(&WireLimits::default(), 100);
    let mut got = Vec::new();
    // Feed in odd-sized pieces to exercise partial frames.
    for chunk in wire.chunks(37) {
        d.extend(chunk);
        while let Some(f) = d.next_frame().unwrap() {
            let i = got.len();
            assert_eq!(f.request_id(), 1000 + i as u64);
            assert_eq!(f.flags().more(), i % 2 == 0);
            let a = f.access::<T>().unwrap();
            got.push(rkyv::deserialize::<T, rkyv::rancor::Error>(a).unwrap());
        }
    }
    d.finish().unwrap();
    assert_eq!(got.as_slice(), msgs);
}

#[test]
fn every_request_round_trips() {
    let reqs = all_requests();
    assert_eq!(reqs.len(), 26);
    for r in &reqs {
        let mut b = Vec::new();
        encode_frame(1, r, &mut b).unwrap();
        let mut d = FrameDecoder::new(&WireLimits::default());
        d.extend(&b);
        let f = d.next_frame().unwrap().unwrap();
        validate_request_frame(&f, &WireLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", r.name()));
    }
    round_trip(&reqs);
}

#[test]
fn every_response_round_trips() {
    round_trip(&all_responses());
}

#[test]
fn nested_txn_round_trips_through_tree_form() {
    let t = txn_req();
    assert_eq!(t.clone().into_tree().unwrap().into_request(), t);
}

fn sample_stream() -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, r) in all_requests().iter().enumerate() {
        encode_frame(i as u64, r, &mut wire).unwrap();
    }
    wire
}

/// Decodes everything it can; validation or framing errors are fine,
/// panics are not.
fn decode_anything(bytes: &[u8], limits: &WireLimits) {
    let mut d = FrameDecoder::with_read_chunk(limits, 64);
    for chunk in bytes.chunks(29) {
        d.extend(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    if let Ok(req) = validate_request_frame(&f, limits) {
                        let _ = req.to_owned_request();
                    }
                    let _ = f.access::<Response>().map(|r| r.to_owned_response());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = d.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_anything(&bytes, &WireLimits::default());
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        id in any::<u64>(),
    ) {
        let padded = payload.len().div_ceil(16) * 16;
        let mut frame = Vec::with_capacity(HEADER_BYTES + padded);
        frame.extend_from_slice(&((12 + padded) as u32).to_le_bytes());
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&[PROTOCOL_VERSION, 0, (padded - payload.len()) as u8, 0]);
        frame.extend_from_slice(&payload);
        frame.resize(HEADER_BYTES + padded, 0);
        decode_anything(&frame, &WireLimits::default());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = sample_stream();
        for (at, v) in flips {
            let i = at.index(wire.len());
            wire[i] = v;
        }
        let end = cut.index(wire.len() + 1);
        decode_anything(&wire[..end], &WireLimits::default());
    }

    #[test]
    fn small_limits_reject_without_panicking(max in 16usize..512) {
        let limits = WireLimits { max_frame_bytes: max, max_request_bytes: max, ..WireLimits::default() };
        decode_anything(&sample_stream(), &limits);
    }
}

/// Writes seed inputs for the libFuzzer target (`fuzz/fuzz_targets/frame.rs`:
/// one knob byte, then a frame stream). Run:
/// `COREKV_FUZZ_SEED_DIR=fuzz/corpus/frame cargo test -p corekv-wire --test roundtrip -- --ignored write_fuzz_seeds`
#[test]
#[ignore = "writes files; run by hand before fuzzing"]
fn write_fuzz_seeds() {
    let dir = std::env::var("COREKV_FUZZ_SEED_DIR").expect("set COREKV_FUZZ_SEED_DIR");
    std::fs::create_dir_all(&dir).unwrap();
    let reqs = all_requests();
    let resps = all_responses();
    for knob in [0u8, 1, 6] {
        for (i, r) in reqs.iter().enumerate() {
            let mut seed = vec![knob];
            encode_frame(i as u64, r, &mut seed).unwrap();
            std::fs::write(format!("{dir}/req-{knob}-{i}"), seed).unwrap();
        }
        for (i, r) in resps.iter().enumerate() {
            let mut seed = vec![knob];
            encode_frame_flags(i as u64, FrameFlags::MORE, r, &mut seed).unwrap();
            std::fs::write(format!("{dir}/resp-{knob}-{i}"), seed).unwrap();
        }
    }
}
