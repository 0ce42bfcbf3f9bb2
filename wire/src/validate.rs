//! etcd's request validation (etcd `v3rpc/key.go`: checkRangeRequest,
//! checkPutRequest, checkDeleteRequest, checkTxnRequest, checkIntervals),
//! applied to archived requests in place, plus corekv's size limits.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use crate::api_error::ApiError;
use crate::frame::{Frame, OwnedFrame};
use crate::limits::WireLimits;
use crate::messages::{
    ArchivedDeleteRangeRequest, ArchivedPutRequest, ArchivedRangeRequest, ArchivedRequest,
    ArchivedRequestOp, ArchivedTxnRequest,
};

/// etcd's `MaxLeaseTTL` (seconds).
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

/// Validates a request frame: size limit, payload validation (a payload that
/// is not a valid archived `Request` is answered with `MalformedRequest`;
/// the connection stays usable), then `validate_request`.
pub fn validate_request_frame<'a>(
    frame: &Frame<'a>,
    limits: &WireLimits,
) -> Result<&'a ArchivedRequest, ApiError> {
    validate_request_payload(frame.payload(), limits)
}

/// `validate_request_frame` for an in-process frame (`OwnedFrame::encode_request`,
/// used by the gRPC and HTTP/JSON front-ends): the same rules, one copy.
pub fn validate_owned_frame<'a>(
    frame: &'a OwnedFrame,
    limits: &WireLimits,
) -> Result<&'a ArchivedRequest, ApiError> {
    validate_request_payload(frame.payload(), limits)
}

fn validate_request_payload<'a>(
    payload: &'a [u8],
    limits: &WireLimits,
) -> Result<&'a ArchivedRequest, ApiError> {
    if payload.len() > limits.max_request_bytes {
        return Err(ApiError::RequestTooLarge);
    }
    let req = rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(payload)
        .map_err(|e| ApiError::MalformedRequest(e.to_string()))?;
    validate_request(req, limits)?;
    Ok(req)
}

/// etcd's text for a watch create whose id is already used on its stream
/// (answered in-band: `created` + `canceled`, watch id -1).
pub const WATCH_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's text for a watch create on an empty key range (in-band, as above).
pub const WATCH_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// etcd's rule for watch ranges: a range_end other than "" (one key) and
/// "\0" (every key from `key` on) must be greater than `key`.
pub fn watch_range_is_empty(key: &[u8], range_end: &[u8]) -> bool {
    !range_end.is_empty() && range_end != [0] && key >= range_end
}

/// etcd's validation of one request; the first error found is returned.
pub fn validate_request(req: &ArchivedRequest, limits: &WireLimits) -> Result<(), ApiError> {
    match req {
        ArchivedRequest::Range(r) => check_range(r, limits),
        ArchivedRequest::Put(p) => check_put(p, limits),
        ArchivedRequest::DeleteRange(d) => check_delete(d, limits),
        ArchivedRequest::Txn(t) => check_txn(t, limits),
        ArchivedRequest::WatchCreate(w) => {
            check_key_size(w.key.as_slice(), limits)?;
            check_key_size(w.range_end.as_slice(), limits)
        }
        ArchivedRequest::LeaseGrant(g) if g.ttl.to_native() > MAX_LEASE_TTL_S => {
            Err(ApiError::LeaseTtlTooLarge)
        }
        _ => Ok(()),
    }
}

fn check_key_size(key: &[u8], limits: &WireLimits) -> Result<(), ApiError> {
    if key.len() > limits.max_key_bytes {
        return Err(ApiError::RequestTooLarge);
    }
    Ok(())
}

fn check_key(key: &[u8], range_end: &[u8], limits: &WireLimits) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    check_key_size(key, limits)?;
    check_key_size(range_end, limits)
}

fn check_range(r: &ArchivedRangeRequest, limits: &WireLimits) -> Result<(), ApiError> {
    // Sort order/target are typed enums: bytecheck has already rejected
    // unknown values (the gateway maps them with `SortOrder::from_i32`).
    check_key(r.key.as_slice(), r.range_end.as_slice(), limits)
}

fn check_put(p: &ArchivedPutRequest, limits: &WireLimits) -> Result<(), ApiError> {
    check_key(p.key.as_slice(), &[], limits)?;
    if p.value.len() > limits.max_value_bytes {
        return Err(ApiError::RequestTooLarge);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(ApiError::ValueProvided);
    }
    if p.ignore_lease && p.lease.to_native() != 0 {
        return Err(ApiError::LeaseProvided);
    }
    Ok(())
}

fn check_delete(d: &ArchivedDeleteRangeRequest, limits: &WireLimits) -> Result<(), ApiError> {
    check_key(d.key.as_slice(), d.range_end.as_slice(), limits)
}

/// One txn level, borrowed from the archive (root or a nested body).
#[derive(Clone, Copy)]
struct Level<'a> {
    compare: &'a [crate::messages::ArchivedCompare],
    success: &'a [ArchivedRequestOp],
    failure: &'a [ArchivedRequestOp],
}

fn levels(t: &ArchivedTxnRequest) -> Vec<Level<'_>> {
    let root = Level {
        compare: t.compare.as_slice(),
        success: t.success.as_slice(),
        failure: t.failure.as_slice(),
    };
    std::iter::once(root)
        .chain(t.nested.iter().map(|n| Level {
            compare: n.compare.as_slice(),
            success: n.success.as_slice(),
            failure: n.failure.as_slice(),
        }))
        .collect()
}

/// Level index of `RequestOp::Txn(i)`: nested[i] is level i + 1.
fn child_level(i: u32) -> usize {
    i as usize + 1
}

/// Checks that nested references form a tree: in range, forward-only,
/// each nested body referenced exactly once.
fn check_tree(levels: &[Level<'_>]) -> Result<(), ApiError> {
    let mut referenced = vec![false; levels.len()];
    for (li, level) in levels.iter().enumerate() {
        for op in level.success.iter().chain(level.failure) {
            if let ArchivedRequestOp::Txn(i) = op {
                let c = child_level(i.to_native());
                if c >= levels.len() || c <= li {
                    return Err(ApiError::MalformedRequest(format!(
                        "nested txn index {} out of order or range in level {li}",
                        i.to_native()
                    )));
                }
                if std::mem::replace(&mut referenced[c], true) {
                    return Err(ApiError::MalformedRequest(format!(
                        "nested txn index {} referenced twice",
                        i.to_native()
                    )));
                }
            }
        }
    }
    if let Some(unref) = referenced.iter().skip(1).position(|r| !r) {
        return Err(ApiError::MalformedRequest(format!(
            "nested txn {unref} is unreferenced"
        )));
    }
    Ok(())
}

fn check_txn(t: &ArchivedTxnRequest, limits: &WireLimits) -> Result<(), ApiError> {
    if t.nested.len() > limits.max_nested_txns {
        return Err(ApiError::TooManyOps);
    }
    let levels = levels(t);
    check_tree(&levels)?;
    for level in &levels {
        let ops = level
            .compare
            .len()
            .max(level.success.len())
            .max(level.failure.len());
        if ops > limits.max_txn_ops {
            return Err(ApiError::TooManyOps);
        }
        for c in level.compare {
            if c.key.is_empty() {
                return Err(ApiError::EmptyKey);
            }
            check_key_size(c.key.as_slice(), limits)?;
            check_key_size(c.range_end.as_slice(), limits)?;
        }
        for op in level.success.iter().chain(level.failure) {
            match op {
                ArchivedRequestOp::Range(r) => check_range(r, limits)?,
                ArchivedRequestOp::Put(p) => check_put(p, limits)?,
                ArchivedRequestOp::DeleteRange(d) => check_delete(d, limits)?,
                ArchivedRequestOp::Txn(_) => {}
            }
        }
    }
    check_intervals(&levels, levels[0].success)?;
    check_intervals(&levels, levels[0].failure)?;
    Ok(())
}

/// End of a half-open key interval; `None` is +infinity (etcd's "\0").
type End<'a> = Option<&'a [u8]>;

fn cmp_end(a: End<'_>, b: End<'_>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// `[start, end)`; end `None` is +infinity.
type Interval<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// Delete ranges of a txn subtree, answering "is key k deleted".
/// Sorted by start with a running maximum of ends, rebuilt lazily.
#[derive(Default)]
struct DelSet<'a> {
    /// (start, end); end `None` is +infinity.
    ivs: Vec<Interval<'a>>,
    sorted: bool,
    /// `max_end[i]`: index of the largest end among `ivs[..=i]`.
    max_end: Vec<usize>,
}

impl<'a> DelSet<'a> {
    fn insert(&mut self, key: &'a [u8], range_end: &'a [u8]) {
        let end = if range_end.is_empty() {
            // A single key k is the interval [k, k ++ "\0").
            let mut succ = key.to_vec();
            succ.push(0);
            Some(Cow::Owned(succ))
        } else if range_end == [0] {
            None
        } else {
            Some(Cow::Borrowed(range_end))
        };
        self.ivs.push((key, end));
        self.sorted = false;
    }

    fn end(&self, i: usize) -> End<'_> {
        self.ivs[i].1.as_deref()
    }

    fn union(&mut self, other: DelSet<'a>) {
        self.ivs.extend(other.ivs);
        self.sorted = false;
    }

    fn contains(&mut self, k: &[u8]) -> bool {
        if !self.sorted {
            self.ivs.sort_by(|a, b| a.0.cmp(b.0));
            self.max_end.clear();
            for i in 0..self.ivs.len() {
                let best = match self.max_end.last() {
                    Some(&b) if cmp_end(self.end(b), self.end(i)) != Ordering::Less => b,
                    _ => i,
                };
                self.max_end.push(best);
            }
            self.sorted = true;
        }
        // Intervals with start <= k are a prefix; k is deleted iff the
        // largest end among them is > k.
        let n = self.ivs.partition_point(|iv| iv.0 <= k);
        n > 0 && cmp_end(self.end(self.max_end[n - 1]), Some(k)) == Ordering::Greater
    }
}

/// etcd's checkIntervals: within one branch, no key may be put twice and no
/// key may be put inside a range deleted in the same branch. A key put in both
/// the success and failure branch of one nested txn is fine (exclusive).
fn check_intervals<'a>(
    levels: &[Level<'a>],
    ops: &'a [ArchivedRequestOp],
) -> Result<(HashSet<&'a [u8]>, DelSet<'a>), ApiError> {
    let mut dels = DelSet::default();
    for op in ops {
        if let ArchivedRequestOp::DeleteRange(d) = op {
            dels.insert(d.key.as_slice(), d.range_end.as_slice());
        }
    }
    let mut puts: HashSet<&'a [u8]> = HashSet::new();
    for op in ops {
        let ArchivedRequestOp::Txn(i) = op else {
            continue;
        };
        // check_tree guarantees the index is valid and the nesting is a tree
        // of depth <= max_nested_txns, which bounds this recursion.
        let child = levels[child_level(i.to_native())];
        let (puts_then, dels_then) = check_intervals(levels, child.success)?;
        let (puts_else, dels_else) = check_intervals(levels, child.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(ApiError::DuplicateKey);
            }
            puts.insert(k);
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || dels.contains(k) {
                return Err(ApiError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.union(dels_then);
        dels.union(dels_else);
    }
    for op in ops {
        let ArchivedRequestOp::Put(p) = op else {
            continue;
        };
        let k = p.key.as_slice();
        if puts.contains(k) || dels.contains(k) {
            return Err(ApiError::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, encode_frame};
    use crate::messages::*;

    fn check(req: &Request) -> Result<(), ApiError> {
        check_with(req, &WireLimits::default())
    }

    fn check_with(req: &Request, limits: &WireLimits) -> Result<(), ApiError> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(req).unwrap();
        let archived = rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(&bytes).unwrap();
        validate_request(archived, limits)
    }

    fn put(k: &str) -> Op {
        Op::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }
    fn del(k: &str, end: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }
    fn txn(success: Vec<Op>, failure: Vec<Op>) -> Txn {
        Txn {
            compare: vec![],
            success,
            failure,
        }
    }
    fn req(t: Txn) -> Request {
        Request::Txn(t.into_request())
    }

    #[test]
    fn empty_watch_ranges_follow_etcd() {
        assert!(!watch_range_is_empty(b"a", b""), "single key");
        assert!(!watch_range_is_empty(b"a", b"\0"), "from key");
        assert!(!watch_range_is_empty(b"a", b"b"));
        assert!(watch_range_is_empty(b"b", b"a"));
        assert!(watch_range_is_empty(b"a", b"a"));
    }

    #[test]
    fn owned_frames_validate_like_socket_frames() {
        let req = Request::Put(PutRequest {
            key: Vec::new(),
            ..Default::default()
        });
        let frame = OwnedFrame::encode_request(3, &req).unwrap();
        assert_eq!(frame.request_id(), 3);
        let e = validate_owned_frame(&frame, &WireLimits::default()).unwrap_err();
        assert_eq!(e, ApiError::EmptyKey);
        let ok = Request::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        let frame = OwnedFrame::encode_request(4, &ok).unwrap();
        let archived = validate_owned_frame(&frame, &WireLimits::default()).unwrap();
        assert!(matches!(archived, ArchivedRequest::Put(_)));
    }

    #[test]
    fn single_ops_follow_etcd() {
        assert_eq!(
            check(&Request::Put(PutRequest::default())),
            Err(ApiError::EmptyKey)
        );
        assert_eq!(
            check(&Request::Range(RangeRequest::default())),
            Err(ApiError::EmptyKey)
        );
        assert_eq!(
            check(&Request::DeleteRange(DeleteRangeRequest::default())),
            Err(ApiError::EmptyKey)
        );
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check(&Request::Put(p)), Err(ApiError::ValueProvided));
        let p = PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check(&Request::Put(p)), Err(ApiError::LeaseProvided));
        let p = PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert_eq!(check(&Request::Put(p)), Ok(()));
        let g = LeaseGrantRequest {
            ttl: MAX_LEASE_TTL_S + 1,
            id: 0,
        };
        assert_eq!(
            check(&Request::LeaseGrant(g)),
            Err(ApiError::LeaseTtlTooLarge)
        );
        let limits = WireLimits {
            max_key_bytes: 4,
            ..Default::default()
        };
        let p = PutRequest {
            key: b"12345".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            check_with(&Request::Put(p), &limits),
            Err(ApiError::RequestTooLarge)
        );
    }

    #[test]
    fn txn_op_count_and_compare_keys() {
        let many: Vec<Op> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(
            check(&req(txn(many.clone(), vec![]))),
            Err(ApiError::TooManyOps)
        );
        assert_eq!(check(&req(txn(many[..128].to_vec(), vec![]))), Ok(()));
        let nested = txn(vec![Op::Txn(txn(vec![], many))], vec![]);
        assert_eq!(check(&req(nested)), Err(ApiError::TooManyOps));
        let mut t = txn(vec![], vec![]);
        t.compare.push(Compare::default());
        assert_eq!(check(&req(t)), Err(ApiError::EmptyKey));
        assert_eq!(
            check(&req(txn(vec![put("")], vec![]))),
            Err(ApiError::EmptyKey)
        );
    }

    #[test]
    fn duplicate_keys_follow_etcd_intervals() {
        let dup = ApiError::DuplicateKey;
        assert_eq!(
            check(&req(txn(vec![put("a"), put("a")], vec![]))),
            Err(dup.clone())
        );
        // The same key in success and failure of the top level is fine.
        assert_eq!(check(&req(txn(vec![put("a")], vec![put("a")]))), Ok(()));
        assert_eq!(
            check(&req(txn(vec![del("a", "c"), put("b")], vec![]))),
            Err(dup.clone())
        );
        assert_eq!(
            check(&req(txn(vec![del("a", "c"), put("c")], vec![]))),
            Ok(())
        );
        assert_eq!(
            check(&req(txn(vec![del("a", ""), put("a")], vec![]))),
            Err(dup.clone())
        );
        assert_eq!(
            check(&req(txn(vec![del("a", ""), put("a0")], vec![]))),
            Ok(())
        );
        assert_eq!(
            check(&req(txn(vec![del("a", "\0"), put("zzz")], vec![]))),
            Err(dup.clone())
        );
        assert_eq!(
            check(&req(txn(vec![del("b", "\0"), put("a")], vec![]))),
            Ok(())
        );
        // Nested: then/else of one txn are exclusive; across levels they clash.
        let inner = txn(vec![put("k")], vec![put("k")]);
        assert_eq!(
            check(&req(txn(vec![Op::Txn(inner.clone())], vec![]))),
            Ok(())
        );
        let t = txn(vec![Op::Txn(inner.clone()), put("k")], vec![]);
        assert_eq!(check(&req(t)), Err(dup.clone()));
        let t = txn(vec![Op::Txn(inner.clone()), Op::Txn(inner)], vec![]);
        assert_eq!(check(&req(t)), Err(dup.clone()));
        let t = txn(
            vec![Op::Txn(txn(vec![del("a", "z")], vec![])), put("m")],
            vec![],
        );
        assert_eq!(check(&req(t)), Err(dup.clone()));
        let t = txn(
            vec![del("a", "z"), Op::Txn(txn(vec![], vec![put("m")]))],
            vec![],
        );
        assert_eq!(check(&req(t)), Err(dup));
    }

    #[test]
    fn nested_indices_must_form_a_tree() {
        let leaf = NestedTxn::default();
        let mut t = TxnRequest {
            success: vec![RequestOp::Txn(0)],
            nested: vec![leaf.clone()],
            ..Default::default()
        };
        assert_eq!(check(&Request::Txn(t.clone())), Ok(()));
        t.failure.push(RequestOp::Txn(0));
        assert!(matches!(
            check(&Request::Txn(t.clone())),
            Err(ApiError::MalformedRequest(_))
        ));
        t.failure = vec![RequestOp::Txn(7)];
        assert!(matches!(
            check(&Request::Txn(t.clone())),
            Err(ApiError::MalformedRequest(_))
        ));
        let self_ref = NestedTxn {
            success: vec![RequestOp::Txn(0)],
            ..Default::default()
        };
        let t = TxnRequest {
            success: vec![RequestOp::Txn(0)],
            nested: vec![self_ref],
            ..Default::default()
        };
        assert!(matches!(
            check(&Request::Txn(t)),
            Err(ApiError::MalformedRequest(_))
        ));
        let t = TxnRequest {
            nested: vec![leaf],
            ..Default::default()
        };
        assert!(matches!(
            check(&Request::Txn(t)),
            Err(ApiError::MalformedRequest(_))
        ));
    }

    #[test]
    fn tree_flattening_round_trips() {
        let t = txn(
            vec![
                put("a"),
                Op::Txn(txn(
                    vec![Op::Txn(txn(vec![put("x")], vec![]))],
                    vec![put("y")],
                )),
            ],
            vec![Op::Txn(txn(vec![del("q", "")], vec![]))],
        );
        let flat = t.clone().into_request();
        assert_eq!(flat.nested.len(), 3);
        assert_eq!(flat.into_tree(), Some(t));
    }

    #[test]
    fn frame_over_max_request_bytes_is_too_large() {
        let limits = WireLimits {
            max_request_bytes: 64,
            ..Default::default()
        };
        let p = PutRequest {
            key: b"k".to_vec(),
            value: vec![1; 100],
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_frame(1, &Request::Put(p), &mut out).unwrap();
        let mut d = FrameDecoder::new(&limits);
        d.extend(&out);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            validate_request_frame(&f, &limits).err(),
            Some(ApiError::RequestTooLarge)
        );
        assert!(validate_request_frame(&f, &WireLimits::default()).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn delset_matches_naive_model(
            ivs in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..3),
                                              proptest::collection::vec(0u8..4, 0..3)), 0..8),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 1..16),
        ) {
            let mut set = DelSet::default();
            for (k, e) in &ivs {
                set.insert(k, e);
            }
            for p in &probes {
                let naive = ivs.iter().any(|(k, e)| {
                    if e.is_empty() { k == p }
                    else if e.as_slice() == [0] { p >= k }
                    else { p >= k && p < e }
                });
                proptest::prop_assert_eq!(set.contains(p), naive, "probe {:?} in {:?}", p, ivs);
            }
        }
    }
}
