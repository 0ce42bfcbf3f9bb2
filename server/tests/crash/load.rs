//! Write load and verification shared by the crash suites (failpoints.rs,
//! crash_loop.rs): writers put unique keys and remember what was
//! acknowledged at which revision; after a restart a linearizable read must
//! show every acknowledged key at exactly that revision and a revision no
//! lower than any acknowledged one.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, put};
use corekv_wire::messages as w;

/// Acknowledged writes: key -> revision.
pub type Acked = BTreeMap<String, i64>;

/// What the load does besides puts, so compaction and defrag run.
#[derive(Clone, Copy)]
pub enum Extra {
    None,
    /// Compact every 64 puts per writer.
    Compact,
    /// Write and delete filler, compact and defragment every 64 puts.
    Churn,
}

/// When writers give up.
#[derive(Clone, Copy)]
pub enum Until {
    /// At the first error (the member went down).
    FirstError,
    /// At the deadline, moving to the next address after an error.
    Deadline,
}

/// Runs 4 writers (writer t starts on `addrs[t % len]`) for at most
/// `within`; keys are `{prefix}{t}-{i}`. Returns what was acknowledged.
pub async fn write_load(
    addrs: &[String],
    prefix: &str,
    extra: Extra,
    until: Until,
    within: Duration,
) -> Acked {
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let value = "v".repeat(2048);
    let stop_at = Instant::now() + within;
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let acked = acked.clone();
        let value = value.clone();
        let addrs = addrs.to_vec();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut at = t as usize % addrs.len();
            let mut client = None;
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let Some(c) = &client else {
                    client = common::try_connect(&addrs[at]).await.ok();
                    if client.is_none() {
                        at = (at + 1) % addrs.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                };
                i += 1;
                let key = format!("{prefix}{t}-{i:06}");
                let mut ok = match c.put(put(&key, &value)).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(key, r.header.revision);
                        true
                    }
                    Err(_) => false,
                };
                if ok && i % 64 == 0 {
                    ok = side_work(c, extra, t, i).await.is_ok();
                }
                if !ok {
                    if let Until::FirstError = until {
                        return;
                    }
                    client = None;
                    at = (at + 1) % addrs.len();
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    acked.lock().unwrap().clone()
}

async fn side_work(c: &corekv_wire::Client, extra: Extra, t: u32, i: u64) -> Result<(), ()> {
    if let Extra::None = extra {
        return Ok(());
    }
    if let Extra::Churn = extra {
        let filler = "f".repeat(8192);
        for j in 0..32 {
            c.put(put(&format!("f{t}-{i}-{j}"), &filler))
                .await
                .map_err(drop)?;
        }
        c.delete_range(w::DeleteRangeRequest {
            key: format!("f{t}-").into_bytes(),
            range_end: format!("f{t}.").into_bytes(),
            prev_kv: false,
        })
        .await
        .map_err(drop)?;
    }
    let rev = c
        .status(w::StatusRequest {})
        .await
        .map_err(drop)?
        .header
        .revision;
    // Another writer may have compacted past us: not an error.
    let _ = c
        .compact(w::CompactionRequest {
            revision: rev,
            physical: false,
        })
        .await;
    if let Extra::Churn = extra {
        c.defragment(w::DefragmentRequest {}).await.map_err(drop)?;
    }
    Ok(())
}

/// A linearizable read through `addr` (retried while the member recovers)
/// shows every acknowledged key at its revision and a revision at least
/// `floor` and the highest acknowledged one. Returns the read's revision.
pub async fn verify(addr: &str, acked: &Acked, floor: i64) -> i64 {
    let max_acked = acked.values().copied().max().unwrap_or(0).max(floor);
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let c = common::connect(addr).await;
        let r = c
            .range(w::RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                keys_only: true,
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("linearizable read via {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        r.header.revision >= max_acked,
        "revision went back: {} after restart, {max_acked} acknowledged or seen before",
        r.header.revision
    );
    let have: BTreeMap<String, i64> = r
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(k, rev)| have.get(*k) != Some(rev))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost or changed, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    r.header.revision
}
