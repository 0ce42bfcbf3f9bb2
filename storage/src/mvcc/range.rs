//! etcd Range: the streaming visitor [`range_visit`], which hands out each
//! result borrowed from the mapped pages, and [`range`], which builds owned
//! [`KeyValue`]s on top of it.
//!
//! Streaming (no heap allocation per result) covers every request whose
//! result order is key order: no sort, or ascending by key. The others
//! (descending, or by version/create/mod/value) need the whole result before
//! the first entry is known; they collect owned entries, sort them and then
//! visit them (a keys-only request sorted by value reads the values to sort
//! by and drops them after the cut, as etcd does). Values stored in overflow chains (longer than a leaf holds
//! inline) are read into one buffer per entry on both paths.

use std::borrow::Cow;

use super::keys::{self, Record};
use super::read::{self, Found};
use super::types::*;
use crate::error::{Result, StorageError};
use crate::node::ValRef;
use crate::splitkey::PageKey;
use crate::tree::{self, TreeRead};

/// One range result, borrowed for the duration of a [`range_visit`] call:
/// the key from the page (or a scratch buffer reused across entries when
/// the key has zero bytes), the value from the page (empty for
/// `keys_only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRef<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

impl KvRef<'_> {
    pub fn to_key_value(&self) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }

    fn of(kv: &KeyValue) -> KvRef<'_> {
        KvRef {
            key: &kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: &kv.value,
            lease: kv.lease,
        }
    }
}

/// Everything of a [`RangeResponse`] but its entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeSummary {
    pub more: bool,
    pub count: i64,
    pub revision: i64,
}

/// Most result entries a range reserves up front.
const RANGE_RESERVE_MAX: usize = 256;

/// A request's options resolved once.
struct Plan<'r> {
    req: &'r RangeRequest,
    /// `None` = key order (streamed); `Some` = collect and sort.
    sort: Option<(SortOrder, SortTarget)>,
    limit: Option<usize>,
}

impl<'r> Plan<'r> {
    fn new(req: &'r RangeRequest) -> Result<Plan<'r>> {
        if req.key.is_empty() {
            return Err(StorageError::KeyNotProvided);
        }
        let mut order = req.sort_order;
        if req.sort_target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        let sort = match (order, req.sort_target) {
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => None,
            other => Some(other),
        };
        let limit = usize::try_from(req.limit).ok().filter(|l| *l > 0);
        Ok(Plan { req, sort, limit })
    }

    /// The revision filters of the request.
    fn keep(&self, create: i64, modr: i64) -> bool {
        let r = self.req;
        (r.min_mod_revision == 0 || modr >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || modr <= r.max_mod_revision)
            && (r.min_create_revision == 0 || create >= r.min_create_revision)
            && (r.max_create_revision == 0 || create <= r.max_create_revision)
    }

    fn filtered(&self) -> bool {
        let r = self.req;
        r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0
    }

    fn reserve(&self) -> usize {
        if self.req.count_only {
            0
        } else if self.req.range_end.is_empty() {
            1
        } else {
            self.limit
                .map_or(RANGE_RESERVE_MAX, |l| l.min(RANGE_RESERVE_MAX))
        }
    }
}

/// The record of a found version and its value: borrowed from the page
/// for inline values, owned when read from an overflow chain.
fn load<'a, T: TreeRead + ?Sized>(t: &'a T, f: &Found<'a>) -> Result<(Record, Cow<'a, [u8]>)> {
    match f.val {
        ValRef::Inline(b) => {
            let (r, v) = keys::decode_record(b, f.main)?;
            Ok((r, Cow::Borrowed(v)))
        }
        ValRef::Overflow { .. } => {
            let bytes = tree::load_value(t, f.val)?;
            let (r, v) = keys::decode_record(&bytes, f.main)?;
            let v = v.to_vec();
            Ok((r, Cow::Owned(v)))
        }
    }
}

/// The scratch buffer user keys are decoded into during one scan. Keys of
/// one leaf share the leaf's prefix slice: once a key without zero bytes
/// has been decoded, the buffer keeps the part from that prefix, and the
/// next key of the same leaf only checks and appends its suffix.
#[derive(Default)]
struct KeyScratch<'t> {
    buf: Vec<u8>,
    /// The leaf prefix whose bytes (after the table byte, none zero) start
    /// `buf`.
    held: Option<&'t [u8]>,
}

impl<'t> KeyScratch<'t> {
    /// The user key of a found version ([`keys::user_key`]).
    #[inline]
    fn user_key<'s>(&'s mut self, prefix: &'s PageKey<'t>) -> Result<&'s [u8]> {
        if let PageKey::Borrowed(k) = prefix
            && let Some(held) = self.held
            && std::ptr::eq(held, k.pre)
            && let Some(body) = k.suf.strip_suffix(&[0, 0])
            && !keys::has_zero(body)
        {
            // `buf` holds `held[1..]`: the table byte is the prefix's first.
            self.buf.truncate(held.len() - 1);
            self.buf.extend_from_slice(body);
            return Ok(&self.buf);
        }
        self.held = None;
        // A plain key split across a leaf prefix longer than the table byte:
        // copied and held for the next keys of the leaf.
        if let PageKey::Borrowed(k) = prefix
            && k.pre.len() > 1
            && let Some(body) = k.suf.strip_suffix(&[0, 0])
            && !keys::has_zero(&k.pre[1..])
            && !keys::has_zero(body)
        {
            self.buf.clear();
            self.buf.extend_from_slice(&k.pre[1..]);
            self.buf.extend_from_slice(body);
            self.held = Some(k.pre);
            return Ok(&self.buf);
        }
        keys::user_key(prefix.parts(), &mut self.buf)
    }
}

/// Streams the results of a key-ordered request to `f` (values only when
/// `with_value`); returns the summary.
fn stream<T, F>(
    t: &T,
    plan: &Plan<'_>,
    rev: i64,
    with_value: bool,
    mut f: F,
) -> Result<RangeSummary>
where
    T: TreeRead + ?Sized,
    F: FnMut(&KvRef<'_>),
{
    let req = plan.req;
    let filtered = plan.filtered();
    let mut count = 0i64;
    let mut kept = 0usize;
    let mut more = false;
    let mut keys = KeyScratch::default();
    read::for_each_live_in(t, &req.key, &req.range_end, rev, |found| {
        count += 1;
        if req.count_only || more {
            return Ok(true);
        }
        if plan.limit.is_some_and(|l| kept >= l) && !filtered {
            more = true;
            return Ok(true);
        }
        let (r, value) = load(t, found)?;
        if !plan.keep(r.create, found.main) {
            return Ok(true);
        }
        if plan.limit.is_some_and(|l| kept >= l) {
            more = true;
            return Ok(true);
        }
        kept += 1;
        // A single-key request finds only versions of that key (`latest`
        // matches the whole `'k' enc(key)` prefix): its key is the request's,
        // with no decoding and no scratch buffer.
        let key = if req.range_end.is_empty() {
            &req.key[..]
        } else {
            keys.user_key(&found.prefix)?
        };
        f(&KvRef {
            key,
            create_revision: r.create,
            mod_revision: found.main,
            version: r.version,
            value: if with_value { &value[..] } else { &[] },
            lease: r.lease,
        });
        Ok(true)
    })?;
    Ok(RangeSummary {
        more,
        count,
        revision: rev,
    })
}

/// Collects, sorts and cuts the results of a sorted request (`order` and
/// `target` from [`Plan::sort`]).
fn sorted<T: TreeRead + ?Sized>(
    t: &T,
    plan: &Plan<'_>,
    rev: i64,
    (order, target): (SortOrder, SortTarget),
) -> Result<(Vec<KeyValue>, RangeSummary)> {
    let unlimited = Plan {
        req: plan.req,
        sort: None,
        limit: None,
    };
    // etcd sorts before it drops the values of a keys-only request.
    let keys_only = plan.req.keys_only;
    let with_value = !keys_only || target == SortTarget::Value;
    let mut kvs = Vec::with_capacity(plan.reserve());
    let sum = stream(t, &unlimited, rev, with_value, |kv| {
        kvs.push(kv.to_key_value())
    })?;
    match (order, target) {
        (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
        _ => kvs.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        }),
    }
    let mut more = false;
    if let Some(l) = plan.limit
        && kvs.len() > l
    {
        kvs.truncate(l);
        more = true;
    }
    if keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok((kvs, RangeSummary { more, ..sum }))
}

/// etcd Range at an already resolved revision, each result handed to `f`
/// in result order (see the module docs for which requests stream).
pub fn range_visit<T, F>(t: &T, req: &RangeRequest, rev: i64, mut f: F) -> Result<RangeSummary>
where
    T: TreeRead + ?Sized,
    F: FnMut(&KvRef<'_>),
{
    let plan = Plan::new(req)?;
    match plan.sort {
        None => stream(t, &plan, rev, !req.keys_only, f),
        Some(s) => {
            let (kvs, sum) = sorted(t, &plan, rev, s)?;
            for kv in &kvs {
                f(&KvRef::of(kv));
            }
            Ok(sum)
        }
    }
}

/// etcd Range at an already resolved revision, as owned entries.
pub fn range<T: TreeRead + ?Sized>(t: &T, req: &RangeRequest, rev: i64) -> Result<RangeResponse> {
    let plan = Plan::new(req)?;
    let (kvs, sum) = match plan.sort {
        None => {
            let mut kvs = Vec::with_capacity(plan.reserve());
            let sum = stream(t, &plan, rev, !req.keys_only, |kv| {
                kvs.push(kv.to_key_value())
            })?;
            (kvs, sum)
        }
        Some(s) => sorted(t, &plan, rev, s)?,
    };
    Ok(RangeResponse {
        kvs,
        more: sum.more,
        count: sum.count,
        revision: sum.revision,
    })
}
