//! Watches on one serve shard.
//!
//! The Raft core broadcasts every applied batch's events (`EventBatch`) to
//! every shard; each shard's `Hub` fans them out to the watchers of the
//! native connections and gRPC Watch streams it owns. Both front-ends attach
//! watchers the same way: a `WatchSession` (one per native connection or
//! gRPC stream: watch ids, etcd's create rules) registers them in the hub
//! with a `WatchSink` that carries their responses to the client. A watcher
//! is either
//! - *synced*: it has seen every event below `next_rev`, and live batches
//!   deliver what it still needs (events with revision >= `next_rev`); or
//! - *unsynced*: a catch-up task reads history from the store
//!   (`ReadView::events_since`) until it reaches a revision the hub has
//!   already processed, then marks it synced. Watches from a past revision,
//!   slow consumers and a hub that fell behind the broadcast go through it.
//!
//! Invariant: a watcher never receives an event twice nor misses one:
//! delivery (live or catch-up) only takes events with revision >= next_rev
//! and then moves next_rev past the delivered revision; the switch to synced
//! happens only when next_rev > the hub's last processed batch, on this
//! single thread, so every later event arrives in a batch the hub has yet to
//! process.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use corekv_storage::{self as st, StorageError};
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WATCH_DUPLICATE_ID, WATCH_EMPTY_RANGE, watch_range_is_empty};
use tokio::sync::broadcast;

use super::Shared;
use crate::kv;
use crate::metrics::METRICS;

/// Batches of events the core may be ahead of a shard's hub before the hub
/// falls back to reading history.
pub const WATCH_BROADCAST_DEPTH: usize = 1024;
/// Events read from history per catch-up step.
const CATCH_UP_EVENTS: usize = 1000;
/// Pause before a catch-up retries when the store refused a reader
/// (`TooManyReaders`).
const CATCH_UP_RETRY: Duration = Duration::from_millis(20);
/// Events after which a watch response is closed at the next revision
/// boundary (one revision's events are never split across responses:
/// etcd's watch atomicity; a revision with more events goes out whole).
const MAX_EVENTS_PER_RESPONSE: usize = 1000;
/// Key and value bytes after which a watch response is closed at the next
/// revision boundary (so catch-up of large values stays well below gRPC
/// clients' default 4 MiB receive limit; one revision is never split for
/// size).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Watches one session (native connection or gRPC Watch stream) may hold.
pub const MAX_WATCHES_PER_SESSION: usize = 100_000;

/// Where a watcher's responses go: a native connection's outbox (frames on
/// the create request's id) or a gRPC stream's response queue.
pub trait WatchSink {
    /// Queues one response of the watch; `last` is its final (canceled)
    /// response.
    fn push(&self, resp: w::WatchResponse, last: bool);
    /// Bytes queued towards the client and not yet written to its socket.
    fn pending_bytes(&self) -> usize;
}

/// One applied batch, as the core broadcasts it.
pub struct EventBatch {
    pub revision: i64,
    pub events: Vec<st::Event>,
    /// The store was replaced by the leader's image (a snapshot install):
    /// the revisions up to `revision` are in the new store's history only,
    /// never in a batch, so every synced watcher must catch up from the
    /// store (etcd's watchableStore.Restore). `events` is empty.
    pub restored: bool,
}

impl EventBatch {
    /// The marker the core sends after installing an image at `revision`.
    pub fn restored(revision: i64) -> EventBatch {
        EventBatch {
            revision,
            events: Vec::new(),
            restored: true,
        }
    }
}

pub struct Watcher {
    pub watch_id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    sink: Rc<dyn WatchSink>,
    next_rev: Cell<i64>,
    synced: Cell<bool>,
    canceled: Cell<bool>,
}

impl Watcher {
    fn matches(&self, ev: &st::Event) -> bool {
        if ev.kv.mod_revision < self.next_rev.get() {
            return false;
        }
        match ev.kind {
            st::EventKind::Put if self.no_put => return false,
            st::EventKind::Delete if self.no_delete => return false,
            _ => {}
        }
        in_range(&ev.kv.key, &self.key, &self.range_end)
    }

    fn to_wire(&self, ev: &st::Event) -> w::Event {
        w::Event {
            event_type: match ev.kind {
                st::EventKind::Put => w::EventType::Put,
                st::EventKind::Delete => w::EventType::Delete,
            },
            kv: kv::key_value(ev.kv.clone()),
            prev_kv: if self.prev_kv {
                ev.prev_kv.clone().map(kv::key_value)
            } else {
                None
            },
        }
    }

    fn send(&self, shared: &Shared, revision: i64, events: Vec<w::Event>) {
        let resp = w::WatchResponse {
            header: shared.header(revision),
            watch_id: self.watch_id,
            events,
            ..Default::default()
        };
        self.sink.push(resp, false);
    }

    /// Delivers what matches among `events` (in revision order), in frames
    /// closed at revision boundaries once past the size bounds, and moves
    /// `next_rev` past `upto`.
    fn deliver(&self, shared: &Shared, events: &[st::Event], upto: i64) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut last_rev = 0;
        for ev in events.iter().filter(|e| self.matches(e)) {
            let rev = ev.kv.mod_revision;
            let full = bytes >= MAX_RESPONSE_BYTES || out.len() >= MAX_EVENTS_PER_RESPONSE;
            if full && rev != last_rev && !out.is_empty() {
                self.send(shared, upto, std::mem::take(&mut out));
                bytes = 0;
            }
            bytes += ev.kv.key.len()
                + ev.kv.value.len()
                + ev.prev_kv
                    .as_ref()
                    .filter(|_| self.prev_kv)
                    .map_or(0, |p| p.key.len() + p.value.len());
            last_rev = rev;
            out.push(self.to_wire(ev));
        }
        if !out.is_empty() {
            self.send(shared, upto, out);
        }
        self.next_rev.set(self.next_rev.get().max(upto + 1));
    }

    /// The watch's final response. A compaction cancel
    /// (`compact_revision != 0`) carries header revision 0, as etcd's does
    /// (its response is not at any revision); others the current one.
    pub fn cancel(&self, shared: &Shared, compact_revision: i64, reason: &str) {
        if self.canceled.replace(true) {
            return;
        }
        let revision = if compact_revision != 0 {
            0
        } else {
            shared.store().current_revision()
        };
        let resp = w::WatchResponse {
            header: shared.header(revision),
            watch_id: self.watch_id,
            canceled: true,
            compact_revision,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        self.sink.push(resp, true);
    }
}

/// etcd's key range rule: empty range_end = the key alone; "\0" = every key
/// >= key; otherwise [key, range_end).
fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

pub struct Hub {
    shared: Arc<Shared>,
    watchers: RefCell<HashMap<u64, Rc<Watcher>>>,
    next_key: Cell<u64>,
    /// Highest batch revision this hub has processed (or the store's
    /// revision when the hub subscribed).
    last_batch_rev: Cell<i64>,
}

impl Hub {
    /// Subscribes to the core's batches (before reading the store's revision,
    /// so no batch falls between) and starts the fan-out and progress tasks.
    pub fn start(shared: Arc<Shared>) -> Rc<Hub> {
        let mut rx = shared.events.subscribe();
        let hub = Rc::new(Hub {
            last_batch_rev: Cell::new(shared.store().current_revision()),
            shared,
            watchers: RefCell::new(HashMap::new()),
            next_key: Cell::new(1),
        });
        let h = hub.clone();
        glommio::spawn_local(async move {
            loop {
                match rx.recv().await {
                    Ok(batch) => h.on_batch(&batch),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "watch hub fell behind; catching watchers up from history"
                        );
                        h.resync_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
        .detach();
        let h = hub.clone();
        let interval =
            Duration::from_millis(h.shared.cfg.watch_progress_notify_interval_ms.max(10));
        glommio::spawn_local(async move {
            while !h.shared.stopping() {
                glommio::timer::sleep(interval).await;
                h.notify_progress();
            }
        })
        .detach();
        hub
    }

    fn on_batch(self: &Rc<Self>, batch: &EventBatch) {
        self.last_batch_rev
            .set(self.last_batch_rev.get().max(batch.revision));
        if batch.restored {
            // Synced watchers would otherwise jump from their next revision
            // straight to the first batch after the image: a silent gap.
            let moved = self.resync_all();
            if moved > 0 {
                tracing::info!(
                    watchers = moved,
                    revision = batch.revision,
                    "store replaced by a snapshot: watchers catch up from its history"
                );
            }
            return;
        }
        let watchers: Vec<Rc<Watcher>> = self.watchers.borrow().values().cloned().collect();
        let mut slow = 0usize;
        for w in watchers {
            if !w.synced.get() || w.canceled.get() {
                continue;
            }
            if w.sink.pending_bytes() > self.shared.cfg.watch_max_pending_bytes {
                w.synced.set(false);
                slow += 1;
                spawn_catch_up(self.shared.clone(), self.clone(), w);
                continue;
            }
            w.deliver(&self.shared, &batch.events, batch.revision);
        }
        if slow > 0 {
            tracing::info!(
                watchers = slow,
                revision = batch.revision,
                "slow watch consumers: watchers moved to catch-up from the store"
            );
        }
    }

    /// Moves every synced watcher to catch-up from the store; how many.
    fn resync_all(self: &Rc<Self>) -> usize {
        let watchers: Vec<Rc<Watcher>> = self.watchers.borrow().values().cloned().collect();
        let mut moved = 0;
        for w in watchers {
            if w.synced.replace(false) {
                moved += 1;
                spawn_catch_up(self.shared.clone(), self.clone(), w);
            }
        }
        moved
    }

    fn notify_progress(&self) {
        let rev = self.last_batch_rev.get();
        for w in self.watchers.borrow().values() {
            if w.progress_notify && w.synced.get() && !w.canceled.get() {
                w.send(&self.shared, rev, Vec::new());
            }
        }
    }

    /// Registers a watch and answers `created`; history (if asked) follows.
    fn add(
        self: &Rc<Hub>,
        req: &w::ArchivedWatchCreateRequest,
        watch_id: i64,
        sink: Rc<dyn WatchSink>,
    ) -> (u64, Rc<Watcher>) {
        let start = req.start_revision.to_native();
        let watcher = Rc::new(Watcher {
            watch_id,
            key: req.key.to_vec(),
            range_end: req.range_end.to_vec(),
            prev_kv: req.prev_kv,
            no_put: req
                .filters
                .iter()
                .any(|f| matches!(f, w::ArchivedWatchFilterType::NoPut)),
            no_delete: req
                .filters
                .iter()
                .any(|f| matches!(f, w::ArchivedWatchFilterType::NoDelete)),
            progress_notify: req.progress_notify,
            sink,
            next_rev: Cell::new(0),
            synced: Cell::new(false),
            canceled: Cell::new(false),
        });
        let current = self.shared.store().current_revision();
        let created = w::WatchResponse {
            header: self.shared.header(current),
            watch_id,
            created: true,
            ..Default::default()
        };
        watcher.sink.push(created, false);
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        self.watchers.borrow_mut().insert(key, watcher.clone());
        METRICS.watchers.fetch_add(1, Ordering::Relaxed);
        if start <= 0 {
            // From now on: everything up to what the store or the hub has seen
            // is "the past".
            watcher
                .next_rev
                .set(current.max(self.last_batch_rev.get()) + 1);
            watcher.synced.set(true);
        } else {
            watcher.next_rev.set(start);
            spawn_catch_up(self.shared.clone(), self.clone(), watcher.clone());
        }
        (key, watcher)
    }

    pub fn remove(&self, key: u64) {
        if self.watchers.borrow_mut().remove(&key).is_some() {
            METRICS.watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Revision up to which every synced watcher has been sent everything.
    pub fn progress_revision(&self) -> i64 {
        self.last_batch_rev.get()
    }
}

fn spawn_catch_up(shared: Arc<Shared>, hub: Rc<Hub>, w: Rc<Watcher>) {
    glommio::spawn_local(async move {
        while !w.canceled.get() && !shared.stopping() {
            while w.sink.pending_bytes() > shared.cfg.watch_max_pending_bytes / 2
                && !w.canceled.get()
            {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            let view = match shared.store().read() {
                Ok(v) => v,
                // Readers pin too many snapshots: catch up a little later
                // instead of cancelling the watch.
                Err(StorageError::TooManyReaders { .. }) => {
                    glommio::timer::sleep(CATCH_UP_RETRY).await;
                    continue;
                }
                Err(e) => {
                    w.cancel(&shared, 0, &e.to_string());
                    return;
                }
            };
            match view.events_since(w.next_rev.get(), &w.key, &w.range_end, CATCH_UP_EVENTS) {
                Err(StorageError::Compacted { .. }) => {
                    w.cancel(
                        &shared,
                        view.compacted_revision(),
                        ApiError::Compacted.message(),
                    );
                    return;
                }
                Err(e) => {
                    w.cancel(&shared, 0, &e.to_string());
                    return;
                }
                Ok((events, next)) => {
                    w.deliver(&shared, &events, next - 1);
                    if next > view.revision() && view.revision() >= hub.last_batch_rev.get() {
                        w.next_rev.set(next);
                        w.synced.set(true);
                        return;
                    }
                }
            }
            glommio::yield_if_needed().await;
        }
    })
    .detach();
}

/// The watches of one native connection or gRPC Watch stream, by watch id.
/// The one place watch ids are allocated and etcd's create rules applied,
/// for both front-ends.
#[derive(Default)]
pub struct WatchSession {
    by_id: RefCell<HashMap<i64, (u64, Rc<Watcher>)>>,
    next_id: Cell<i64>,
}

impl WatchSession {
    /// Creates a watch, as etcd's `watchStream`: a requested non-zero id is
    /// used if free; id 0 means the lowest free id counting up from the last
    /// one assigned. A refused create is answered in-band, as etcd does:
    /// `created` + `canceled`, watch id -1 and the reason, as the sink's
    /// final response. Returns the watch id, or None if refused.
    pub fn create(
        &self,
        hub: &Rc<Hub>,
        req: &w::ArchivedWatchCreateRequest,
        sink: Rc<dyn WatchSink>,
    ) -> Option<i64> {
        let requested = req.watch_id.to_native();
        let refusal = if requested != 0 && self.by_id.borrow().contains_key(&requested) {
            Some(WATCH_DUPLICATE_ID.to_string())
        } else if watch_range_is_empty(req.key.as_slice(), req.range_end.as_slice()) {
            Some(WATCH_EMPTY_RANGE.to_string())
        } else if self.by_id.borrow().len() >= MAX_WATCHES_PER_SESSION {
            Some(format!(
                "corekv: too many watches on this stream (limit {MAX_WATCHES_PER_SESSION})"
            ))
        } else {
            None
        };
        if let Some(cancel_reason) = refusal {
            let shared = &hub.shared;
            sink.push(
                w::WatchResponse {
                    header: shared.header(shared.store().current_revision()),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason,
                    ..Default::default()
                },
                true,
            );
            return None;
        }
        let watch_id = if requested != 0 {
            requested
        } else {
            let ids = self.by_id.borrow();
            let mut id = self.next_id.get();
            while ids.contains_key(&id) {
                id += 1;
            }
            self.next_id.set(id + 1);
            id
        };
        let (key, watcher) = hub.add(req, watch_id, sink);
        self.by_id.borrow_mut().insert(watch_id, (key, watcher));
        Some(watch_id)
    }

    /// Cancels one watch: its final (canceled) response goes to its sink.
    /// False for an unknown id.
    pub fn cancel(&self, hub: &Hub, watch_id: i64) -> bool {
        let Some((key, w)) = self.by_id.borrow_mut().remove(&watch_id) else {
            return false;
        };
        hub.remove(key);
        w.cancel(&hub.shared, 0, "");
        true
    }

    pub fn all_synced(&self) -> bool {
        self.by_id
            .borrow()
            .values()
            .all(|(_, w)| w.synced.get() || w.canceled.get())
    }

    pub fn len(&self) -> usize {
        self.by_id.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.borrow().is_empty()
    }

    /// Drops every watch of a closed connection or stream: they leave the
    /// hub (no more matching, no more memory) and their catch-up tasks end.
    pub fn clear(&self, hub: &Hub) {
        for (_, (key, w)) in self.by_id.borrow_mut().drain() {
            w.canceled.set(true);
            hub.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_range;

    #[test]
    fn range_rules_match_etcd() {
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zz", b"a", b"\0"));
        assert!(!in_range(b"0", b"a", b"\0"));
        assert!(in_range(b"ab", b"a", b"b"));
        assert!(!in_range(b"b", b"a", b"b"));
    }
}
