//! Encode/decode cost of the native protocol: a Put request (8 B key,
//! 256 B value) and a 100-key Range response (16 B keys, 256 B values).
//! Decode = frame parse + bytecheck validation of the whole payload + one
//! read of every key/value in place.
//!
//! cargo bench -p corekv-wire --bench codec -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use corekv_wire::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn put() -> Request {
    Request::Put(PutRequest {
        key: b"key00001".to_vec(),
        value: vec![7; 256],
        ..Default::default()
    })
}

fn range_response() -> Response {
    let kvs = (0..100)
        .map(|i| KeyValue {
            key: format!("/registry/k{i:05}").into_bytes(),
            create_revision: 100 + i,
            mod_revision: 200 + i,
            version: 1,
            value: vec![i as u8; 256],
            lease: 0,
        })
        .collect();
    Response::Range(RangeResponse {
        header: ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 300,
            raft_term: 4,
        },
        kvs,
        more: false,
        count: 100,
    })
}

fn bench_encode<T: Encode>(c: &mut Criterion, name: &str, msg: &T) {
    let mut out = Vec::with_capacity(64 * 1024);
    encode_frame(1, msg, &mut out).unwrap();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(black_box(1), black_box(msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion, name: &str, frame: &[u8], read: fn(&Frame<'_>) -> usize) {
    let mut dec = FrameDecoder::new(&WireLimits::default());
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            dec.extend(black_box(frame));
            let f = dec.next_frame().unwrap().unwrap();
            black_box(read(&f))
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let put = put();
    bench_encode(c, "put", &put);
    let mut put_frame = Vec::new();
    encode_frame(1, &put, &mut put_frame).unwrap();
    bench_decode(c, "put", &put_frame, |f| {
        match f.access::<Request>().unwrap() {
            ArchivedRequest::Put(p) => p.key.len() + p.value.len(),
            _ => unreachable!(),
        }
    });

    let range = range_response();
    bench_encode(c, "range100_response", &range);
    let mut range_frame = Vec::new();
    encode_frame(1, &range, &mut range_frame).unwrap();
    bench_decode(c, "range100_response", &range_frame, |f| {
        match f.access::<Response>().unwrap() {
            ArchivedResponse::Range(r) => {
                r.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum()
            }
            _ => unreachable!(),
        }
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
