//! Watchers of the whole workload prefix from the first revision, with
//! prev_kv. A broken stream resumes on another member from the revision
//! after the last one delivered; every stream is recorded as one segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use corekv_checker::history::{EventKind, WatchEvent, WatchResponse, WatchSegment, Watcher};
use corekv_checker::recorder::Recorder;
use corekv_wire::messages as w;

use crate::workload::{Endpoint, PREFIX, PREFIX_END, kv_of, native_client};

/// A watcher runs until it has covered `done_at` (0 = not yet known).
pub async fn run(id: u32, endpoints: Vec<Endpoint>, rec: Arc<Recorder>, done_at: Arc<AtomicI64>) {
    let mut segments = Vec::new();
    let mut next_start = 2i64;
    let mut target = id as usize % endpoints.len();
    let finished = |next_start: i64| {
        let d = done_at.load(Ordering::Relaxed);
        d > 0 && next_start > d
    };
    while !finished(next_start) {
        let Ok(c) = native_client(&endpoints[target].native).await else {
            target = (target + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let create = w::WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: PREFIX_END.as_bytes().to_vec(),
            start_revision: next_start,
            prev_kv: true,
            ..Default::default()
        };
        let Ok(mut stream) = c.watch(create).await else {
            target = (target + 1) % endpoints.len();
            continue;
        };
        let mut seg = WatchSegment {
            key: PREFIX.into(),
            range_end: PREFIX_END.into(),
            start_revision: next_start,
            prev_kv: true,
            created_revision: 0,
            responses: Vec::new(),
        };
        loop {
            if finished(next_start) {
                break;
            }
            let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            let frame = match next {
                Err(_) => continue,
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) | Ok(Err(_)) => break,
            };
            let Ok(r) = frame.to_owned_watch() else {
                break;
            };
            if r.created && r.events.is_empty() && !r.canceled {
                continue;
            }
            let events: Vec<WatchEvent> = r.events.iter().map(event_of).collect();
            if let Some(last) = events.last() {
                next_start = last.kv.mod_revision + 1;
            }
            seg.responses.push(WatchResponse {
                header_revision: r.header.revision,
                events,
                canceled: r.canceled,
                compact_revision: r.compact_revision,
            });
            if r.canceled {
                // Compacted past us: continue from the compaction point (the
                // gap is visible in the recorded segments).
                next_start = next_start.max(r.compact_revision);
                break;
            }
        }
        segments.push(seg);
        target = (target + 1) % endpoints.len();
    }
    rec.add_watcher(Watcher { id, segments });
}

fn event_of(e: &w::Event) -> WatchEvent {
    WatchEvent {
        kind: match e.event_type {
            w::EventType::Put => EventKind::Put,
            w::EventType::Delete => EventKind::Delete,
        },
        kv: kv_of(&e.kv),
        prev_kv: e.prev_kv.as_ref().map(kv_of),
    }
}
