//! Write-out of non-durable commits on a thread of their own.
//!
//! A non-durable commit (the apply loop's, one per Raft batch) used to
//! encode, checksum and `pwrite` every dirty page on the committing thread
//! (the Raft core). With a write-out thread the commit only moves its dirty
//! nodes into a [`PendingCommit`] and queues it; the thread encodes each
//! node, seals its checksum and writes it, in commit order. Until a pending
//! commit is written, readers and the next transaction find its pages in the
//! commit's [`Overlay`] (in memory) instead of the file mapping.
//!
//! Invariants:
//! 1. FIFO: commits are written in commit order, one at a time, so once
//!    commit `t` is written every older one is too. An overlay is searched
//!    newest first and stops at the first written commit: the file holds
//!    that commit's pages and every older commit's.
//! 2. A page held by a pending commit is reachable from that commit's root,
//!    so (copy-on-write, reader registry) it is neither freed nor reused
//!    while a snapshot that can reach it is registered; a newer commit
//!    reusing the id is newer in the overlay and later in the queue.
//! 3. Durability is unchanged: only non-durable commits are queued. A
//!    durable commit (and everything that reads the file as a whole) first
//!    waits until the queue is empty ([`WriteOut::drain`]), then writes and
//!    syncs on its own thread exactly as before. After a crash the file holds
//!    the last durable commit plus some not-yet-reachable pages; the WAL
//!    replays from the durable applied index.
//! 4. The first failed write latches: later commits are not written, and
//!    `drain` and every later commit report the failure (fail-stop).
//!
//! Bound: at most `queue_commits` commits wait; a commit beyond that blocks
//! until the thread catches up (back-pressure on the writer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::Backend;
use crate::error::{Result, StorageError};
use crate::node::{Node, NodeRef, PageView};
use crate::page::{PAGE_SIZE, PageBuf};

/// A page of a pending commit: a tree node (encoded by the write-out
/// thread) or a ready page image (overflow chain pages).
pub(crate) enum PendingPage {
    Node(Node),
    Raw(PageBuf),
}

/// The dirty pages of one non-durable commit, sorted by page id.
pub(crate) struct PendingCommit {
    pages: Vec<(u64, PendingPage)>,
    written: AtomicBool,
}

impl PendingCommit {
    pub(crate) fn new(mut pages: Vec<(u64, PendingPage)>) -> PendingCommit {
        pages.sort_unstable_by_key(|(id, _)| *id);
        PendingCommit {
            pages,
            written: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_written(&self) -> bool {
        self.written.load(Ordering::Acquire)
    }

    fn get(&self, id: u64) -> Option<&PendingPage> {
        self.pages
            .binary_search_by_key(&id, |(p, _)| *p)
            .ok()
            .map(|i| &self.pages[i].1)
    }
}

/// The commits not yet written when a snapshot was taken, oldest first.
#[derive(Clone, Default)]
pub(crate) struct Overlay(Arc<[Arc<PendingCommit>]>);

impl Overlay {
    pub(crate) fn new(commits: impl Iterator<Item = Arc<PendingCommit>>) -> Overlay {
        Overlay(commits.collect())
    }

    /// The newest unwritten version of page `id`, if one is pending
    /// (invariant 1: written commits and everything older are in the file).
    fn get(&self, id: u64) -> Option<&PendingPage> {
        for c in self.0.iter().rev() {
            if c.is_written() {
                return None;
            }
            if let Some(p) = c.get(id) {
                return Some(p);
            }
        }
        None
    }

    /// Page `id` as a tree node, if pending.
    pub(crate) fn node(&self, id: u64) -> Result<Option<NodeRef<'_>>> {
        Ok(match self.get(id) {
            None => None,
            Some(PendingPage::Node(Node::RawBranch { page, .. })) => {
                Some(NodeRef::Page(PageView::new(&page[..], id, false)?))
            }
            Some(PendingPage::Node(n)) => Some(NodeRef::Owned(n)),
            Some(PendingPage::Raw(_)) => {
                return Err(StorageError::corrupted(id, "tree page is an overflow page"));
            }
        })
    }

    /// Page `id`'s bytes, if pending as a page image (overflow chains; tree
    /// nodes are never read as bytes).
    pub(crate) fn raw(&self, id: u64) -> Option<&[u8]> {
        match self.get(id) {
            Some(PendingPage::Raw(p)) => Some(&p[..]),
            Some(PendingPage::Node(_)) | None => None,
        }
    }
}

enum Job {
    Write(Arc<PendingCommit>),
    /// Answered once every job before it is done.
    Drain(SyncSender<()>),
}

/// The write-out thread of one file and its queue.
pub(crate) struct WriteOut {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl WriteOut {
    pub(crate) fn start(backend: Arc<dyn Backend>, queue_commits: usize) -> Result<WriteOut> {
        let (tx, rx) = sync_channel(queue_commits.max(1));
        let failed = Arc::new(Mutex::new(None));
        let thread_failed = failed.clone();
        let thread = std::thread::Builder::new()
            .name("corekv-store-writeout".into())
            .spawn(move || run(&*backend, rx, &thread_failed))
            .map_err(|source| StorageError::Io {
                op: "spawn write-out thread",
                path: std::path::PathBuf::from("<store>"),
                source,
            })?;
        Ok(WriteOut {
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    pub(crate) fn check(&self) -> Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(msg) => Err(StorageError::Failed(format!("store write-out: {msg}"))),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        let gone = || StorageError::Failed("store write-out thread stopped".into());
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())
    }

    /// Queues a commit (blocks while `queue_commits` wait).
    pub(crate) fn push(&self, commit: Arc<PendingCommit>) -> Result<()> {
        self.check()?;
        self.send(Job::Write(commit))
    }

    /// Waits until every queued commit is written; the first failure if any.
    pub(crate) fn drain(&self) -> Result<()> {
        let (done_tx, done_rx) = sync_channel(1);
        self.send(Job::Drain(done_tx))?;
        done_rx
            .recv()
            .map_err(|_| StorageError::Failed("store write-out thread stopped".into()))?;
        self.check()
    }
}

impl Drop for WriteOut {
    /// Writes what is queued, then stops the thread.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(backend: &dyn Backend, rx: Receiver<Job>, failed: &Mutex<Option<String>>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write(commit) => {
                if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    continue;
                }
                match write_commit(backend, &commit) {
                    Ok(()) => commit.written.store(true, Ordering::Release),
                    Err(e) => {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                }
            }
            Job::Drain(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One `pwrite` per page, in file order (see `Db::commit_inner` for why
/// adjacent pages are not coalesced).
fn write_commit(backend: &dyn Backend, commit: &PendingCommit) -> Result<()> {
    crate::failpoint::hit("store-writeout");
    for (id, page) in &commit.pages {
        let offset = id * PAGE_SIZE as u64;
        match page {
            PendingPage::Node(n) => backend.write_at(offset, &n.encode()[..])?,
            PendingPage::Raw(p) => backend.write_at(offset, &p[..])?,
        }
        // A crash here leaves a commit half written (not reachable from
        // any durable meta).
        crate::failpoint::hit("store-writeout-page");
    }
    Ok(())
}

#[cfg(test)]
#[path = "writeout_tests.rs"]
mod tests;
