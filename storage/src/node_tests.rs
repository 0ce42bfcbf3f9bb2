//! Unit tests of the page encoding (`node.rs`), including format 5 leaf
//! key prefixes.

use super::*;

fn k(b: &[u8]) -> Key {
    Key::inline(b.to_vec())
}

#[test]
fn leaf_roundtrip() {
    let n = Node::Leaf(vec![
        (k(b"a"), Val::Inline(b"1".to_vec())),
        (k(b"b"), Val::Overflow { page: 9, len: 5000 }),
    ]);
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    assert!(matches!(v.key(1).unwrap(), KeyRef::Full(b) if b.to_vec() == b"b"));
    assert!(matches!(
        v.val(1).unwrap(),
        ValRef::Overflow { page: 9, len: 5000 }
    ));
    assert_eq!(v.size().unwrap(), n.size());
}

#[test]
fn long_key_stub_roundtrip() {
    let long: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let n = Node::Leaf(vec![
        (k(b"a"), Val::Inline(b"1".to_vec())),
        (
            Key::with_chain(long.clone(), 77),
            Val::Inline(vec![3; 1700]),
        ),
        (k(&[0xFF; KEY_INLINE_MAX]), Val::Inline(vec![4; 900])),
    ]);
    assert!(n.size() <= NODE_CAP);
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    match v.key(1).unwrap() {
        KeyRef::Stub { prefix, len, chain } => {
            assert_eq!(prefix, &long[..KEY_PREFIX_BYTES]);
            assert_eq!((len, chain), (5000, 77));
        }
        KeyRef::Full(_) => panic!("long key stored inline"),
    }
    assert!(matches!(v.val(1).unwrap(), ValRef::Inline(b) if b == [3; 1700]));
    assert!(matches!(v.key(2).unwrap(), KeyRef::Full(b) if b.len() == KEY_INLINE_MAX));
    assert!(matches!(v.val(2).unwrap(), ValRef::Inline(b) if b == [4; 900]));
    assert_eq!(v.size().unwrap(), n.size());
    let b = Node::Branch(vec![
        (Key::default(), 5),
        (Key::with_chain(long.clone(), 78), 6),
    ]);
    let p = b.encode();
    let v = PageView::new(&p[..], 4, true).unwrap();
    assert_eq!(v.child(1).unwrap(), 6);
    assert!(matches!(
        v.key(1).unwrap(),
        KeyRef::Stub {
            len: 5000,
            chain: 78,
            ..
        }
    ));
}

#[test]
fn bad_stub_is_corrupted() {
    let long = vec![7u8; 3000];
    let n = Node::Branch(vec![(Key::default(), 5), (Key::with_chain(long, 78), 6)]);
    let mut p = n.encode();
    // Entry 1 sits right after entry 0 (12 bytes); its stub length field
    // follows the 256-byte prefix.
    let off = u16::from_le_bytes([p[HEADER + SLOT], p[HEADER + SLOT + 1]]) as usize;
    let len_at = off + 10 + KEY_PREFIX_BYTES;
    for bad in [0u32, KEY_INLINE_MAX as u32, u32::MAX] {
        p[len_at..len_at + 4].copy_from_slice(&bad.to_le_bytes());
        let v = PageView::new(&p[..], 4, false).unwrap();
        assert!(matches!(v.key(1), Err(StorageError::Corrupted { .. })));
    }
    p[len_at..len_at + 4].copy_from_slice(&3000u32.to_le_bytes());
    p[len_at + 4..len_at + 12].copy_from_slice(&0u64.to_le_bytes());
    let v = PageView::new(&p[..], 4, false).unwrap();
    assert!(matches!(v.key(1), Err(StorageError::Corrupted { .. })));
    // An inline length above the limit is corruption too.
    p[off..off + 2].copy_from_slice(&((KEY_INLINE_MAX + 1) as u16).to_le_bytes());
    let v = PageView::new(&p[..], 4, false).unwrap();
    assert!(matches!(v.key(1), Err(StorageError::Corrupted { .. })));
}

#[test]
fn different_heads_order_keys_like_the_keys() {
    let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1]];
    let mut x = 7u64;
    for _ in 0..2000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (x >> 60) as usize;
        // Bytes drawn from {0, 1, 0xFF} so prefixes and padding collide often.
        keys.push(
            (0..len)
                .map(|j| [0u8, 1, 0xFF][((x >> (j * 3)) % 3) as usize])
                .collect(),
        );
    }
    for a in &keys {
        for b in keys.iter().take(300) {
            let (ha, hb) = (key_head(a), key_head(b));
            if ha != hb {
                assert_eq!(ha.cmp(&hb), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }
}

/// A tree reader for pages without long keys (no chain is ever read).
struct NoChains;

impl TreeRead for NoChains {
    fn root(&self) -> u64 {
        0
    }
    fn node(&self, id: u64) -> Result<NodeRef<'_>> {
        Err(corrupt(id, "no pages"))
    }
    fn page_bytes(&self, id: u64) -> Result<std::borrow::Cow<'_, [u8]>> {
        Err(corrupt(id, "no pages"))
    }
    fn range_tombs(&self) -> u64 {
        0
    }
}

#[test]
fn search_uses_heads_and_ties_fall_back_to_keys() {
    // Keys sharing their first 8 bytes (equal heads) and keys that differ early.
    let ks: Vec<Vec<u8>> = vec![
        b"aaaaaaaa1".to_vec(),
        b"aaaaaaaa2".to_vec(),
        b"aaaaaaab".to_vec(),
        b"b".to_vec(),
        b"b\0".to_vec(),
        b"b\0\0".to_vec(),
    ];
    let n = Node::Leaf(ks.iter().map(|x| (k(x), Val::Inline(vec![1]))).collect());
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    for (i, key) in ks.iter().enumerate() {
        assert_eq!(v.head(i), Some(key_head(key)));
    }
    let t = NoChains;
    for (i, key) in ks.iter().enumerate() {
        assert_eq!(tree::search(&t, &NodeRef::Page(v), key).unwrap(), i);
    }
    assert_eq!(
        tree::search(&t, &NodeRef::Page(v), b"aaaaaaaa15").unwrap(),
        1
    );
    assert_eq!(tree::search(&t, &NodeRef::Page(v), b"c").unwrap(), 6);
}

#[test]
fn long_runs_of_tied_heads_search_like_partition_point() {
    // 30 keys sharing their first 8 bytes (a tie run longer than the steps
    // `head_bounds` takes one by one), between keys with other heads.
    let mut ks: Vec<Vec<u8>> = vec![b"a".to_vec(), b"aaaaaaa".to_vec()];
    ks.extend((0..30u8).map(|i| [&b"tiedhead"[..], &[b'0' + i / 10, b'0' + i % 10]].concat()));
    ks.extend([b"tiedheae".to_vec(), b"z".to_vec()]);
    let mut probes: Vec<Vec<u8>> = vec![vec![], b"tiedhead".to_vec(), vec![0xFF; 9]];
    for key in &ks {
        probes.push(key.clone());
        probes.push([&key[..], &[0]].concat());
        probes.push(key[..key.len() - 1].to_vec());
    }
    let t = NoChains;
    let leaf = Node::Leaf(ks.iter().map(|x| (k(x), Val::Inline(vec![1]))).collect()).encode();
    let lv = PageView::new(&leaf[..], 3, true).unwrap();
    // Branch entry 0's key is stored empty.
    let mut bks = ks.clone();
    bks[0].clear();
    let branch = Node::Branch(
        bks.iter()
            .enumerate()
            .map(|(i, x)| (k(x), i as u64 + 10))
            .collect(),
    )
    .encode();
    let bv = PageView::new(&branch[..], 4, true).unwrap();
    for probe in &probes {
        let want = ks.partition_point(|x| x < probe);
        assert_eq!(
            tree::search(&t, &NodeRef::Page(lv), probe).unwrap(),
            want,
            "leaf {probe:?}"
        );
        let child = bks.partition_point(|x| x <= probe).saturating_sub(1);
        assert_eq!(
            tree::search(&t, &NodeRef::Page(bv), probe).unwrap(),
            child,
            "branch {probe:?}"
        );
    }
}

#[test]
fn garbage_pages_do_not_panic() {
    let mut p = Node::Branch(vec![(Key::default(), 5), (k(b"m"), 6)]).encode();
    for i in 0..PAGE_SIZE {
        p[i] = p[i].wrapping_mul(31).wrapping_add(i as u8);
        if let Ok(v) = PageView::new(&p[..], 1, false) {
            let _ = v.size();
            for j in 0..v.len() {
                let _ = v.key(j);
                let _ = v.child(j);
                let _ = v.val(j);
            }
        }
    }
}

/// Encodes a leaf of `keys` (sorted, distinct, at most `KEY_INLINE_MAX`
/// bytes) and checks the page against them: the stored prefix, whole keys
/// read back as prefix + suffix, heads of suffixes, sizes, decoding, and
/// `search` for every key, every key's neighbours and keys outside the leaf.
fn check_prefixed_leaf(keys: &[Vec<u8>], val_len: usize) -> usize {
    let n = Node::Leaf(
        keys.iter()
            .map(|x| (k(x), Val::Inline(vec![9; val_len])))
            .collect(),
    );
    assert!(n.size() <= NODE_CAP, "test leaf too large");
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    let first = keys.first().unwrap();
    let last = keys.last().unwrap();
    let lcp = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    let plen = lcp.min(MAX_LEAF_PREFIX);
    assert_eq!(v.prefix(), &first[..plen]);
    assert_eq!(p[5] as usize, plen);
    for (i, key) in keys.iter().enumerate() {
        match v.key(i).unwrap() {
            KeyRef::Full(s) => {
                assert_eq!(s.pre, &key[..plen]);
                assert_eq!(s.to_vec(), *key);
            }
            KeyRef::Stub { .. } => panic!("short key stored as a stub"),
        }
        assert_eq!(v.head(i), Some(key_head(&key[plen..])));
        assert!(matches!(v.val(i).unwrap(), ValRef::Inline(b) if b.len() == val_len));
    }
    assert_eq!(v.size().unwrap(), n.size());
    assert_eq!(
        v.size().unwrap(),
        crate::leaf_fill::leaf_size(match &n {
            Node::Leaf(e) => e,
            _ => unreachable!(),
        })
    );
    let Node::Leaf(back) = v.to_node(&NoChains).unwrap() else {
        panic!("leaf decoded as branch");
    };
    assert_eq!(back.len(), keys.len());
    for ((bk, _), key) in back.iter().zip(keys) {
        assert_eq!(bk.bytes.as_slice(), key.as_slice());
    }
    // Probes: every key, with a byte appended or its last byte dropped,
    // and keys before/after the prefix.
    let mut probes: Vec<Vec<u8>> = vec![vec![], vec![0xFF; 300], first[..plen / 2].to_vec()];
    for key in keys {
        probes.push(key.clone());
        let mut more = key.clone();
        more.push(0);
        probes.push(more);
        probes.push(key[..key.len().saturating_sub(1)].to_vec());
        let mut bumped = key.clone();
        if let Some(b) = bumped.get_mut(plen.saturating_sub(1)) {
            *b = b.wrapping_add(1);
        }
        probes.push(bumped);
    }
    for probe in &probes {
        let want = keys.partition_point(|x| x < probe);
        assert_eq!(
            tree::search(&NoChains, &NodeRef::Page(v), probe).unwrap(),
            want,
            "probe {probe:?}"
        );
    }
    plen
}

#[test]
fn leaf_prefix_roundtrips() {
    // Kubernetes-like keys of one namespace.
    let k8s: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("/registry/pods/ns-007/pod-{:08}", i * 37).into_bytes())
        .collect();
    assert_eq!(
        check_prefixed_leaf(&k8s, 40),
        "/registry/pods/ns-007/pod-0000".len()
    );
    // Many versions of one MVCC key: everything but the revision is shared.
    let versions: Vec<Vec<u8>> = (1..60i64)
        .map(|rev| {
            crate::mvcc::keys::key_entry(b"/registry/leases/kube-node-lease/node-1", rev * 1000, 0)
        })
        .collect();
    let plen = check_prefixed_leaf(&versions, 20);
    assert!(plen >= 1 + 40 + 2, "{plen}");
    // Keys sharing more than MAX_LEAF_PREFIX bytes: the prefix is capped.
    let long: Vec<Vec<u8>> = (0..5u8)
        .map(|i| {
            let mut x = vec![b'p'; 400];
            x.push(i);
            x
        })
        .collect();
    assert_eq!(check_prefixed_leaf(&long, 10), MAX_LEAF_PREFIX);
    // A single entry: its whole key is the prefix (suffix empty), capped.
    assert_eq!(check_prefixed_leaf(&[b"only".to_vec()], 5), 4);
    assert_eq!(check_prefixed_leaf(&[vec![b'x'; 600]], 5), MAX_LEAF_PREFIX);
    // The empty key (the prefix is empty) and keys with nothing in common.
    assert_eq!(
        check_prefixed_leaf(&[vec![], b"a".to_vec(), b"ab".to_vec()], 3),
        0
    );
    assert_eq!(check_prefixed_leaf(&[b"a".to_vec(), b"b".to_vec()], 3), 0);
    // One key is the prefix of all others.
    assert_eq!(
        check_prefixed_leaf(&[b"ab".to_vec(), b"ab\0".to_vec(), b"abc".to_vec()], 3),
        2
    );
}

#[test]
fn leaf_prefix_with_long_keys_keeps_whole_stubs() {
    let mut long = vec![b'q'; 3000];
    long.extend_from_slice(b"tail");
    let n = Node::Leaf(vec![
        (k(b"qqqa"), Val::Inline(b"1".to_vec())),
        (Key::with_chain(long.clone(), 77), Val::Inline(vec![3; 100])),
        (k(b"qqqz"), Val::Inline(b"2".to_vec())),
    ]);
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    assert_eq!(v.prefix(), b"qqq");
    match v.key(1).unwrap() {
        KeyRef::Stub { prefix, len, chain } => {
            assert_eq!(prefix, &long[..KEY_PREFIX_BYTES]);
            assert_eq!((len, chain), (3004, 77));
        }
        KeyRef::Full(_) => panic!("long key stored inline"),
    }
    assert_eq!(v.head(1), Some(key_head(&long[3..])));
    assert_eq!(v.size().unwrap(), n.size());
    // Only stubs: no prefix (nothing would be saved).
    let mut long2 = long.clone();
    long2.push(b'!');
    let n = Node::Leaf(vec![
        (Key::with_chain(long.clone(), 77), Val::Inline(vec![3; 100])),
        (Key::with_chain(long2, 78), Val::Inline(vec![3; 100])),
    ]);
    let p = n.encode();
    let v = PageView::new(&p[..], 3, true).unwrap();
    assert!(v.prefix().is_empty());
    assert_eq!(v.size().unwrap(), n.size());
}

#[test]
fn bad_prefix_length_is_corrupted() {
    let n = Node::Leaf(
        (0..20u8)
            .map(|i| (k(&[b'p', b'p', b'p', i]), Val::Inline(vec![1; 3])))
            .collect(),
    );
    let mut p = n.encode();
    assert_eq!(p[5], 3);
    // A longer prefix runs into the entries: offsets below the prefix end.
    for bad in [4u8, 100, 255] {
        p[5] = bad;
        if let Ok(v) = PageView::new(&p[..], 4, false) {
            assert!(
                matches!(v.key(0), Err(StorageError::Corrupted { .. })),
                "{bad}"
            );
        }
    }
    // A branch page with a prefix length.
    let mut b = Node::Branch(vec![(Key::default(), 5), (k(b"m"), 6)]).encode();
    b[5] = 1;
    assert!(matches!(
        PageView::new(&b[..], 4, false),
        Err(StorageError::Corrupted { .. })
    ));
    // An inline suffix that makes the whole key longer than KEY_INLINE_MAX.
    let long = vec![b'z'; KEY_INLINE_MAX];
    let mut long2 = long.clone();
    long2[KEY_INLINE_MAX - 1] = b'y';
    let n = Node::Leaf(vec![
        (k(&long2), Val::Inline(vec![1])),
        (k(&long), Val::Inline(vec![1])),
    ]);
    let mut p = n.encode();
    assert_eq!(p[5] as usize, MAX_LEAF_PREFIX);
    let off = u16::from_le_bytes([p[HEADER], p[HEADER + 1]]) as usize;
    p[off..off + 2].copy_from_slice(&((KEY_INLINE_MAX - MAX_LEAF_PREFIX + 1) as u16).to_le_bytes());
    let v = PageView::new(&p[..], 4, false).unwrap();
    assert!(matches!(v.key(0), Err(StorageError::Corrupted { .. })));
    assert!(matches!(v.size(), Err(StorageError::Corrupted { .. })));
}

proptest::proptest! {
    /// Random leaves of keys over a small alphabet (long shared prefixes):
    /// encode/decode round trips, `search` agrees with the sorted keys, and
    /// cutting any run of entries gives pieces that fit and encode.
    #[test]
    fn prefixed_leaves_roundtrip_and_cut(
        base in proptest::collection::vec(0u8..3, 0..40),
        tails in proptest::collection::btree_set(proptest::collection::vec(0u8..3, 0..12), 1..60),
        val_len in 0usize..120,
    ) {
        let keys: Vec<Vec<u8>> = tails
            .into_iter()
            .map(|t| {
                let mut x = base.clone();
                x.extend(t);
                x
            })
            .collect();
        let entries: Vec<(Key, Val)> = keys
            .iter()
            .map(|x| (k(x), Val::Inline(vec![1; val_len])))
            .collect();
        if crate::leaf_fill::leaf_size(&entries) <= NODE_CAP {
            check_prefixed_leaf(&keys, val_len);
        }
        let mut all = entries.clone();
        for _ in 0..3 {
            all.extend(entries.iter().cloned());
        }
        all.sort_by(|a, b| a.0.bytes.as_slice().cmp(b.0.bytes.as_slice()));
        all.dedup_by(|a, b| a.0 == b.0);
        for target in [NODE_CAP / 2, NODE_CAP * 15 / 16] {
            let pieces = crate::leaf_fill::cut_leaf(all.clone(), target);
            proptest::prop_assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), all.len());
            for piece in pieces {
                let n = Node::Leaf(piece);
                proptest::prop_assert!(n.size() <= NODE_CAP);
                let p = n.encode();
                let v = PageView::new(&p[..], 3, true).unwrap();
                proptest::prop_assert_eq!(v.size().unwrap(), n.size());
            }
        }
        // Merging two adjacent leaves: the merged size is computed exactly
        // from the two pages (the merged prefix may be shorter than both).
        let mid = all.len() / 2;
        let (l, r) = (Node::Leaf(all[..mid].to_vec()), Node::Leaf(all[mid..].to_vec()));
        if mid > 0 && l.size() <= NODE_CAP && r.size() <= NODE_CAP {
            let (lp, rp) = (l.encode(), r.encode());
            let lv = NodeRef::Page(PageView::new(&lp[..], 3, true).unwrap());
            let rv = NodeRef::Page(PageView::new(&rp[..], 4, true).unwrap());
            let want = crate::leaf_fill::leaf_size(&all);
            proptest::prop_assert_eq!(crate::leaf_fill::merged_leaf_size(&lv, &rv).unwrap(), want);
            proptest::prop_assert_eq!(
                crate::leaf_fill::merged_leaf_size(&NodeRef::Owned(&l), &NodeRef::Owned(&r)).unwrap(),
                want
            );
        }
        if all.len() >= 2 && crate::leaf_fill::leaf_size(&all) <= 2 * NODE_CAP {
            if let Some(at) = crate::leaf_fill::balanced_leaf_cut(&all) {
                proptest::prop_assert!(crate::leaf_fill::leaf_size(&all[..at]) <= NODE_CAP);
                proptest::prop_assert!(crate::leaf_fill::leaf_size(&all[at..]) <= NODE_CAP);
            }
        }
    }
}
