//! Group commit for many submitters on one glommio executor.
//!
//! A flusher task owns the [`Wal`]. Submitters enqueue entries (indices are
//! assigned in submission order) and wait for the durable index to pass
//! theirs. While one `Wal::append` (write + fdatasync) is in flight, new
//! submissions queue up; the flusher takes them all (up to
//! `max_batch_bytes`) as the next batch. The queue is bounded by
//! `max_queued_bytes`: a submitter waits for room before enqueueing.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::Task;

use super::error::WalError;
use super::log::{Wal, WalStats};
use crate::types::{Entry, EntryKind};

/// Bounds of the group committer.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Entry bytes (`Entry::size_bytes`) that may wait for the next batch.
    pub max_queued_bytes: usize,
    /// Entry bytes handed to one `Wal::append`; keep it at or below
    /// `WalOptions::max_batch_bytes` for one write per batch.
    pub max_batch_bytes: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            max_queued_bytes: 8 << 20,
            max_batch_bytes: 1 << 20,
        }
    }
}

/// Counters of the committer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub batches: u64,
    pub entries: u64,
    pub largest_batch_entries: u64,
    /// The WAL's own counters after the latest batch.
    pub wal: WalStats,
}

struct Inner {
    queue: VecDeque<Entry>,
    queued_bytes: usize,
    next_index: u64,
    term: u64,
    durable_index: u64,
    failed: Option<String>,
    closing: bool,
    flusher: Option<Waker>,
    /// Submitters waiting for durability, by their entry's index.
    waiters: BTreeMap<u64, Waker>,
    /// Submitters waiting for queue room.
    room_waiters: Vec<Waker>,
    stats: GroupStats,
}

/// Many tasks submit entries; one fdatasync covers everything queued
/// while the previous one ran. Single executor (`!Send`).
pub struct GroupCommitter {
    inner: Rc<RefCell<Inner>>,
    opts: GroupOptions,
    flusher: Task<Wal>,
}

impl GroupCommitter {
    /// Takes ownership of `wal` and starts the flusher task on the current
    /// executor. New entries get term `term` and indices after the WAL's
    /// last index.
    pub fn start(wal: Wal, term: u64, opts: GroupOptions) -> Self {
        let inner = Rc::new(RefCell::new(Inner {
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_index: wal.last_index() + 1,
            term,
            durable_index: wal.last_index(),
            failed: wal.failure().map(str::to_string),
            closing: false,
            flusher: None,
            waiters: BTreeMap::new(),
            room_waiters: Vec::new(),
            stats: GroupStats {
                wal: wal.stats(),
                ..GroupStats::default()
            },
        }));
        let flusher = glommio::spawn_local(flush_loop(wal, inner.clone(), opts.max_batch_bytes));
        Self {
            inner,
            opts,
            flusher,
        }
    }

    /// Term given to entries submitted from now on (never lower).
    pub fn set_term(&self, term: u64) {
        let mut inner = self.inner.borrow_mut();
        inner.term = inner.term.max(term);
    }

    /// Highest index known durable.
    pub fn durable_index(&self) -> u64 {
        self.inner.borrow().durable_index
    }

    pub fn stats(&self) -> GroupStats {
        self.inner.borrow().stats
    }

    /// Appends one entry and resolves with its index once it (and every
    /// entry before it) is durable. Fails if the WAL failed before that.
    pub async fn submit(&self, kind: EntryKind, data: Vec<u8>) -> Result<u64, WalError> {
        let bytes = data.len() + 24;
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if let Some(cause) = &inner.failed {
                return Poll::Ready(Err(WalError::Failed {
                    op: "submit",
                    cause: cause.clone(),
                }));
            }
            if inner.closing {
                return Poll::Ready(Err(WalError::InvalidArgument {
                    op: "submit",
                    reason: "the group committer is closing".into(),
                }));
            }
            if inner.queue.is_empty() || inner.queued_bytes + bytes <= self.opts.max_queued_bytes {
                return Poll::Ready(Ok(()));
            }
            inner.room_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;

        let index = {
            let mut inner = self.inner.borrow_mut();
            let index = inner.next_index;
            inner.next_index += 1;
            let term = inner.term;
            inner.queue.push_back(Entry {
                term,
                index,
                kind,
                data,
            });
            inner.queued_bytes += bytes;
            if let Some(w) = inner.flusher.take() {
                w.wake();
            }
            index
        };

        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.durable_index >= index {
                return Poll::Ready(Ok(index));
            }
            if let Some(cause) = &inner.failed {
                return Poll::Ready(Err(WalError::Failed {
                    op: "submit",
                    cause: cause.clone(),
                }));
            }
            inner.waiters.insert(index, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Stops accepting entries, lets the flusher write what is queued, and
    /// returns the WAL.
    pub async fn close(self) -> Wal {
        {
            let mut inner = self.inner.borrow_mut();
            inner.closing = true;
            if let Some(w) = inner.flusher.take() {
                w.wake();
            }
        }
        self.flusher.await
    }
}

async fn flush_loop(mut wal: Wal, inner: Rc<RefCell<Inner>>, max_batch_bytes: usize) -> Wal {
    loop {
        let batch = poll_fn(|cx| {
            let mut st = inner.borrow_mut();
            if st.failed.is_some() {
                return Poll::Ready(None);
            }
            if !st.queue.is_empty() {
                let mut bytes = 0;
                let mut n = 0;
                for e in &st.queue {
                    if n > 0 && bytes + e.size_bytes() > max_batch_bytes {
                        break;
                    }
                    bytes += e.size_bytes();
                    n += 1;
                }
                let batch: Vec<Entry> = st.queue.drain(..n).collect();
                st.queued_bytes -= bytes;
                return Poll::Ready(Some(batch));
            }
            if st.closing {
                return Poll::Ready(None);
            }
            st.flusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(batch) = batch else { return wal };
        let room = std::mem::take(&mut inner.borrow_mut().room_waiters);
        room.into_iter().for_each(Waker::wake);

        let last = batch.last().expect("batches are never empty").index;
        let result = wal.append(&batch, None).await;
        let to_wake: Vec<Waker> = {
            let mut st = inner.borrow_mut();
            st.stats.wal = wal.stats();
            match result {
                Ok(()) => {
                    st.durable_index = last;
                    st.stats.batches += 1;
                    st.stats.entries += batch.len() as u64;
                    st.stats.largest_batch_entries =
                        st.stats.largest_batch_entries.max(batch.len() as u64);
                    let later = st.waiters.split_off(&(last + 1));
                    std::mem::replace(&mut st.waiters, later)
                        .into_values()
                        .collect()
                }
                Err(e) => {
                    // Fail-stop: every waiter, present and future, gets an error.
                    st.failed = Some(e.to_string());
                    let mut all: Vec<Waker> =
                        std::mem::take(&mut st.waiters).into_values().collect();
                    all.append(&mut st.room_waiters);
                    all
                }
            }
        };
        to_wake.into_iter().for_each(Waker::wake);
    }
}
