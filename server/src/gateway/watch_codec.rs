//! The Watch stream's wire encoding: each response is encoded to protobuf
//! once, when the hub pushes it, straight from the native
//! `w::WatchResponse` (borrowed: no per-watcher `pb` structs, no copies of
//! keys and values besides the output) into one exact-size buffer. The
//! stream queues those bytes, counts their length as pending, and its codec
//! copies them into tonic's frame buffer; requests still decode with prost.
//!
//! Invariant: `encode_response(r)` is byte-identical to prost's encoding of
//! `convert::watch_response(r)` (fields in tag order, proto3 defaults
//! omitted, `header` and `kv` always present as convert sets them). The
//! tests below check it field by field.

use bytes::{BufMut, Bytes};
use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The response encoded as etcd's `etcdserverpb.WatchResponse`.
pub fn encode_response(r: &w::WatchResponse) -> Bytes {
    let len = response_len(r);
    let mut buf = Vec::with_capacity(len);
    put_response(r, &mut buf);
    debug_assert_eq!(buf.len(), len, "watch response length miscomputed");
    Bytes::from(buf)
}

/// Decodes bytes made by `encode_response` (the JSON gateway renders pb).
pub fn decode_response(b: Bytes) -> Result<pb::WatchResponse, Status> {
    <pb::WatchResponse as prost::Message>::decode(b)
        .map_err(|e| Status::internal(format!("corekv: watch response decode: {e}")))
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_varint_field(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn bytes_field_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        message_len(tag, b.len())
    }
}

fn put_bytes_field(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(b.len() as u64, buf);
        buf.put_slice(b);
    }
}

/// A length-delimited field (always present, even when empty).
fn message_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

fn put_message_head(tag: u32, body: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body as u64, buf);
}

fn header_len(h: &w::ResponseHeader) -> usize {
    varint_field_len(1, h.cluster_id)
        + varint_field_len(2, h.member_id)
        + varint_field_len(3, h.revision as u64)
        + varint_field_len(4, h.raft_term)
}

fn put_header(h: &w::ResponseHeader, buf: &mut impl BufMut) {
    put_varint_field(1, h.cluster_id, buf);
    put_varint_field(2, h.member_id, buf);
    put_varint_field(3, h.revision as u64, buf);
    put_varint_field(4, h.raft_term, buf);
}

fn kv_len(kv: &w::KeyValue) -> usize {
    bytes_field_len(1, &kv.key)
        + varint_field_len(2, kv.create_revision as u64)
        + varint_field_len(3, kv.mod_revision as u64)
        + varint_field_len(4, kv.version as u64)
        + bytes_field_len(5, &kv.value)
        + varint_field_len(6, kv.lease as u64)
}

fn put_kv(kv: &w::KeyValue, buf: &mut impl BufMut) {
    put_bytes_field(1, &kv.key, buf);
    put_varint_field(2, kv.create_revision as u64, buf);
    put_varint_field(3, kv.mod_revision as u64, buf);
    put_varint_field(4, kv.version as u64, buf);
    put_bytes_field(5, &kv.value, buf);
    put_varint_field(6, kv.lease as u64, buf);
}

/// mvccpb.Event.EventType: PUT = 0, DELETE = 1.
fn event_type(t: &w::EventType) -> u64 {
    match t {
        w::EventType::Put => 0,
        w::EventType::Delete => 1,
    }
}

fn event_len(e: &w::Event) -> usize {
    varint_field_len(1, event_type(&e.event_type))
        + message_len(2, kv_len(&e.kv))
        + e.prev_kv.as_ref().map_or(0, |p| message_len(3, kv_len(p)))
}

fn put_event(e: &w::Event, buf: &mut impl BufMut) {
    put_varint_field(1, event_type(&e.event_type), buf);
    put_message_head(2, kv_len(&e.kv), buf);
    put_kv(&e.kv, buf);
    if let Some(p) = &e.prev_kv {
        put_message_head(3, kv_len(p), buf);
        put_kv(p, buf);
    }
}

fn response_len(r: &w::WatchResponse) -> usize {
    message_len(1, header_len(&r.header))
        + varint_field_len(2, r.watch_id as u64)
        + varint_field_len(3, u64::from(r.created))
        + varint_field_len(4, u64::from(r.canceled))
        + varint_field_len(5, r.compact_revision as u64)
        + bytes_field_len(6, r.cancel_reason.as_bytes())
        + varint_field_len(7, u64::from(r.fragment))
        + r.events
            .iter()
            .map(|e| message_len(11, event_len(e)))
            .sum::<usize>()
}

fn put_response(r: &w::WatchResponse, buf: &mut impl BufMut) {
    put_message_head(1, header_len(&r.header), buf);
    put_header(&r.header, buf);
    put_varint_field(2, r.watch_id as u64, buf);
    put_varint_field(3, u64::from(r.created), buf);
    put_varint_field(4, u64::from(r.canceled), buf);
    put_varint_field(5, r.compact_revision as u64, buf);
    put_bytes_field(6, r.cancel_reason.as_bytes(), buf);
    put_varint_field(7, u64::from(r.fragment), buf);
    for e in &r.events {
        put_message_head(11, event_len(e), buf);
        put_event(e, buf);
    }
}

/// Initial encode/decode buffer of a watch stream. tonic's default (8 KiB
/// each way) was most of an idle stream's memory; buffers grow for larger
/// messages.
const WATCH_CODEC_BUFFER_BYTES: usize = 512;
/// tonic's default: encoded responses a stream batches before yielding.
const WATCH_CODEC_YIELD_BYTES: usize = 32 * 1024;

fn buffers() -> BufferSettings {
    BufferSettings::new(WATCH_CODEC_BUFFER_BYTES, WATCH_CODEC_YIELD_BYTES)
}

/// Pre-encoded responses out, prost-decoded requests in, small buffers.
pub struct WatchCodec;

impl tonic::codec::Codec for WatchCodec {
    type Encode = Bytes;
    type Decode = pb::WatchRequest;
    type Encoder = PreEncoded;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(tonic_prost::ProstDecoder::new(buffers()))
    }
}

/// Copies a response's bytes (from `encode_response`) into the frame.
pub struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

/// prost's decoder with the stream's buffer settings.
pub struct RequestDecoder(tonic_prost::ProstDecoder<pb::WatchRequest>);

impl Decoder for RequestDecoder {
    type Item = pb::WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::WatchRequest>, Status> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::convert;
    use prost::Message;

    fn kv(key: &[u8], value: &[u8], rev: i64, lease: i64) -> w::KeyValue {
        w::KeyValue {
            key: key.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: rev % 3,
            value: value.to_vec(),
            lease,
        }
    }

    fn assert_same(r: w::WatchResponse) {
        let ours = encode_response(&r);
        let prost = convert::watch_response(r).encode_to_vec();
        assert_eq!(&ours[..], &prost[..]);
        assert_eq!(decode_response(ours).unwrap().encode_to_vec(), prost);
    }

    #[test]
    fn pre_encoded_bytes_equal_prost_encoding() {
        let header = w::ResponseHeader {
            cluster_id: u64::MAX,
            member_id: 0x1234_5678_9abc,
            revision: 300,
            raft_term: 7,
        };
        // Every field default: only the (empty) header is written.
        assert_same(w::WatchResponse::default());
        assert_same(w::WatchResponse {
            header: header.clone(),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            compact_revision: 17,
            ..Default::default()
        });
        let big = vec![0xa5u8; 70_000];
        assert_same(w::WatchResponse {
            header,
            watch_id: 42,
            fragment: true,
            events: vec![
                w::Event {
                    event_type: w::EventType::Put,
                    kv: kv(b"foo", b"bar", 300, 0x7fff_ffff_ffff),
                    prev_kv: Some(kv(b"foo", b"", 299, 0)),
                },
                w::Event {
                    event_type: w::EventType::Delete,
                    kv: kv(b"k", b"", i64::MAX, 0),
                    prev_kv: None,
                },
                w::Event {
                    event_type: w::EventType::Put,
                    kv: kv(b"", &big, -5, -1),
                    prev_kv: Some(w::KeyValue::default()),
                },
            ],
            ..Default::default()
        });
    }
}
