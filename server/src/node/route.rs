//! The request layer of a serve shard: what both client front-ends (the
//! native protocol, `serve.rs`, and etcd's gRPC / HTTP API, `gateway/`)
//! call. A request arrives validated (`corekv_wire::validate_*`, etcd's
//! rules, one copy for both front-ends) as an archived `Request`;
//! `Api::route` decides where it goes, in one exhaustive match:
//!
//! | route | what happens |
//! |---|---|
//! | `Done` | answered on the caller's task: serializable range from a store read snapshot, Status, MemberList, HashKV, Alarm list, and refusals (quota/alarms before a write, what is not built) |
//! | `Later(LinearizableRange)` | batched ReadIndex in the Raft core, then a snapshot read |
//! | `Propose` | the request's archive goes to the Raft core as the entry body (writes, alarm activate/deactivate) |
//! | `Snapshot` | a stream from `snapshot_stream::open`, written by the front-end |
//! | `Later(MoveLeader / Defragment)` | maintenance: Raft leader transfer, defragmentation on the blocking pool |
//! | `Later(LeaseKeepAlive / LeaseTimeToLive)` | the Raft core's lease driver (the leader's lessor; forwarded from a follower) |
//! | `Watch` | the caller's `WatchSession` on this shard's hub |
//! | `Auth` | etcd's Auth service (`auth::calls`) |
//! | `Member` | MemberAdd/Remove/Promote: a Raft conf change (`membership`); MemberUpdate is a `Propose` |
//!
//! On a learner, everything but Status and serializable ranges is refused
//! first (`membership::api::learner_may_serve`, etcd 3.4's rule).
//!
//! Before routing, every request passes `Api::gate` (auth: the caller's
//! token or certificate name against etcd's permission table); a write's
//! frame is tagged with the auth stamp its entry carries to apply.
//!
//! Errors are `ApiError`s: the native front-end sends them as they are, the
//! gRPC front-end maps them once (`gateway::status`) to etcd's code and text.
//! The boundary to the Raft core is `CoreMsg` (shard 0).

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use corekv_storage as st;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame, validate_owned_frame};
use tokio::sync::oneshot;

use super::alarm;
use super::watch::{Hub, WatchSession, WatchSink};
use super::{CoreMsg, Shared, auth};
use crate::http::ETCD_COMPAT_VERSION;
use crate::kv;

/// How long `/health` waits for its read-index round.
pub const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a progress request re-checks whether its session's watches are
/// synced (catch-up in progress).
const PROGRESS_POLL: Duration = Duration::from_millis(5);

/// Where a validated request goes.
pub enum Route<'a> {
    /// Answered on the caller's task, without a wait.
    Done(Result<w::Response, ApiError>),
    /// Needs a wait on the Raft core or the blocking pool; the caller runs
    /// `Api::finish` in a task of its own (bounded by its in-flight limit).
    Later(Later),
    /// A write: `Api::propose` with the request's archive.
    Propose,
    /// Watch control, run against the caller's watch session.
    Watch(WatchOp<'a>),
    /// Maintenance.Snapshot: a stream (`snapshot_stream::open`), served by
    /// each front-end's stream writer.
    Snapshot,
    /// An Auth service call (`auth::calls::call`): password checks and
    /// hashing on the blocking pool, then a proposal or a read.
    Auth,
    /// A membership change proposed as a Raft conf change
    /// (`Api::member_change`).
    Member,
}

/// The waits of `Route::Later`.
pub enum Later {
    /// ReadIndex (batched in the core with every other waiting read), then a
    /// read of this member's store.
    LinearizableRange(st::RangeRequest),
    MoveLeader {
        target: u64,
    },
    Defragment,
    LeaseKeepAlive(i64),
    LeaseTimeToLive {
        id: i64,
        keys: bool,
    },
}

pub enum WatchOp<'a> {
    Create(&'a w::ArchivedWatchCreateRequest),
    Cancel(i64),
    Progress,
}

/// One serve shard's request layer: the member's shared state and this
/// shard's watch hub. Single-threaded (`Rc`), like the shard.
pub struct Api {
    pub shared: Arc<Shared>,
    pub hub: Rc<Hub>,
    /// Who calls through this handle (gRPC: one handle per call or stream).
    pub caller: Caller,
}

/// A caller's credentials: the token it sent (gRPC metadata `token`) and
/// its verified client certificate's common name.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub token: Option<String>,
    pub cn: Option<String>,
}

impl Api {
    /// Starts this shard's watch hub; call once per shard.
    pub fn start(shared: Arc<Shared>) -> Rc<Api> {
        let hub = Hub::start(shared.clone());
        Rc::new(Api {
            shared,
            hub,
            caller: Caller::default(),
        })
    }

    /// This shard's layer for one caller.
    pub fn for_caller(&self, caller: Caller) -> Rc<Api> {
        Rc::new(Api {
            shared: self.shared.clone(),
            hub: self.hub.clone(),
            caller,
        })
    }

    /// `auth::calls::gate` for this handle's caller: what a request it may
    /// make carries on (its auth stamp), or why not.
    pub async fn gate(&self, req: &w::ArchivedRequest) -> Result<auth::calls::Admitted, ApiError> {
        let token = self.caller.token.as_deref().map(str::as_bytes);
        self.gate_as(token, self.caller.cn.as_deref(), req).await
    }

    /// `auth::calls::gate` for the given credentials. A refusal that may
    /// only mean this member lags (a simple token assigned by an entry it
    /// has not applied yet, because another member issued it; a permission
    /// granted by an entry not applied yet) is asked again once, after a
    /// read barrier, so a client is never refused for what the cluster
    /// already acknowledged to it.
    pub async fn gate_as(
        &self,
        token: Option<&[u8]>,
        cn: Option<&str>,
        req: &w::ArchivedRequest,
    ) -> Result<auth::calls::Admitted, ApiError> {
        match auth::calls::gate(&self.shared.auth, token, cn, req) {
            Err(ApiError::InvalidAuthToken | ApiError::PermissionDenied) => {
                self.read_barrier().await?;
                auth::calls::gate(&self.shared.auth, token, cn, req)
            }
            other => other,
        }
    }

    /// An Auth service call (`Route::Auth`), its frame tagged with its stamp.
    pub async fn auth_call(&self, frame: OwnedFrame) -> Result<w::Response, ApiError> {
        let propose = async |f| self.propose(f).await;
        auth::calls::call(&self.shared, frame, propose, async || {
            self.read_barrier().await
        })
        .await
    }

    /// The routing of every request kind: one exhaustive match, so a new
    /// request kind does not compile until it is routed here.
    pub fn route<'a>(&self, req: &'a w::ArchivedRequest) -> Route<'a> {
        use w::ArchivedRequest as R;
        if let Err(e) = self.learner_gate(req) {
            return Route::Done(Err(e));
        }
        match req {
            R::Range(r) if r.serializable => Route::Done(self.range(&kv::range_request(r))),
            R::Range(r) => Route::Later(Later::LinearizableRange(kv::range_request(r))),
            // The quota and active alarms may refuse a write before Raft.
            R::Put(_) | R::DeleteRange(_) | R::Txn(_) | R::Compact(_) => {
                match alarm::admit(&self.shared, req) {
                    Ok(()) => Route::Propose,
                    Err(e) => Route::Done(Err(e)),
                }
            }
            R::LeaseGrant(_) | R::LeaseRevoke(_) => match alarm::admit(&self.shared, req) {
                Ok(()) => Route::Propose,
                Err(e) => Route::Done(Err(e)),
            },
            R::LeaseKeepAlive(k) => Route::Later(Later::LeaseKeepAlive(k.id.to_native())),
            R::LeaseTimeToLive(t) => Route::Later(Later::LeaseTimeToLive {
                id: t.id.to_native(),
                keys: t.keys,
            }),
            R::LeaseLeases(_) => Route::Done(super::lease::serve::leases(&self.shared)),
            R::WatchCreate(c) => Route::Watch(WatchOp::Create(c)),
            R::WatchCancel(c) => Route::Watch(WatchOp::Cancel(c.watch_id.to_native())),
            R::WatchProgress(_) => Route::Watch(WatchOp::Progress),
            R::Status(_) => Route::Done(Ok(self.status())),
            R::MemberList(_) => Route::Done(Ok(self.member_list())),
            R::HashKv(h) => Route::Done(self.hash_kv(h.revision.to_native())),
            R::Alarm(a) if alarm::is_replicated_action(a) => Route::Propose,
            R::Alarm(_) => Route::Done(Ok(alarm::list(&self.shared))),
            R::Snapshot(_) => Route::Snapshot,
            R::Defragment(_) => Route::Later(Later::Defragment),
            R::MoveLeader(m) => Route::Later(Later::MoveLeader {
                target: m.target_id.to_native(),
            }),
            R::Auth(_) => Route::Auth,
            // Internal (the gate refuses it from clients).
            R::LeaseRevokeAs(_) | R::PutAs(_) => Route::Done(Err(ApiError::MalformedRequest(
                format!("{} is internal to the cluster", req.name()),
            ))),
            R::MemberAdd(_) | R::MemberRemove(_) | R::MemberPromote(_) => {
                self.route_member_change(req)
            }
            R::MemberUpdate(u) => self.route_member_update(u),
        }
    }

    /// A whole unary call from an in-process frame (gRPC, HTTP/JSON):
    /// validate, route, wait if the route needs it.
    pub async fn call(&self, frame: OwnedFrame) -> Result<w::Response, ApiError> {
        let req = validate_owned_frame(&frame, &self.shared.limits)?;
        super::ready::wait(&self.shared).await?;
        let admitted = self.gate(req).await?;
        let later = match self.route(req) {
            Route::Done(result) => return result,
            Route::Later(later) => later,
            Route::Propose => return self.propose(admitted.proposal(frame)?).await,
            Route::Auth => return self.auth_call(frame.with_tag(admitted.stamp)).await,
            Route::Member => return self.member_change(frame.with_tag(admitted.stamp)).await,
            Route::Watch(_) | Route::Snapshot => {
                return Err(ApiError::MalformedRequest(format!(
                    "{} belongs on a stream",
                    req.name()
                )));
            }
        };
        self.finish_as(later, &admitted).await
    }

    /// `finish` for a caller the gate `admitted`: a linearizable read is
    /// re-checked once its read barrier passed (this member may have
    /// checked against an auth state older than the one it reads at), an
    /// answer the permission depends on once it is known.
    pub async fn finish_as(
        &self,
        later: Later,
        admitted: &auth::calls::Admitted,
    ) -> Result<w::Response, ApiError> {
        // The range's bounds, kept for the re-check only under auth.
        let read = match &later {
            Later::LinearizableRange(r) if admitted.stamp != 0 => {
                Some((r.key.clone(), r.range_end.clone()))
            }
            Later::LinearizableRange(_) => Some(Default::default()),
            _ => None,
        };
        let result = self.finish(later).await;
        if let Some((key, end)) = read {
            admitted.recheck_read(&self.shared.auth, &key, &end)?;
        }
        admitted.check_answer(&self.shared.auth, &result)?;
        result
    }

    pub async fn finish(&self, later: Later) -> Result<w::Response, ApiError> {
        let shared = &self.shared;
        match later {
            Later::LinearizableRange(r) => {
                self.read_barrier().await?;
                self.range(&r)
            }
            Later::MoveLeader { target } => {
                let (reply, rx) = oneshot::channel();
                self.to_core(CoreMsg::MoveLeader { target, reply }).await?;
                rx.await.map_err(|_| ApiError::Stopped)??;
                Ok(w::Response::MoveLeader(w::MoveLeaderResponse {
                    header: shared.header(shared.store().current_revision()),
                }))
            }
            Later::LeaseKeepAlive(id) => super::lease::serve::keep_alive(shared, id).await,
            Later::LeaseTimeToLive { id, keys } => {
                super::lease::serve::time_to_live(shared, id, keys).await
            }
            Later::Defragment => {
                let store = shared.store();
                let result = glommio::executor()
                    .spawn_blocking(move || store.defragment())
                    .await;
                result.map_err(kv::storage_error)?;
                // The quota check reads this gauge: a write right after a
                // defragment must see the smaller file, not wait for a tick.
                crate::metrics::METRICS.publish_db_size(&shared.store());
                Ok(w::Response::Defragment(w::DefragmentResponse {
                    header: shared.header(shared.store().current_revision()),
                }))
            }
        }
    }

    /// Sends a validated write (its archive is the Raft entry body) to the
    /// core; answered once this member applied it.
    pub async fn propose(&self, frame: OwnedFrame) -> Result<w::Response, ApiError> {
        propose(&self.shared, frame).await
    }

    async fn to_core(&self, msg: CoreMsg) -> Result<(), ApiError> {
        self.shared
            .to_core
            .send(msg)
            .await
            .map_err(|_| ApiError::Stopped)
    }

    /// Waits until this member's store reflects every write committed before
    /// the call (ReadIndex, batched in the core with every other waiting read).
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.to_core(CoreMsg::ReadIndex { reply }).await?;
        rx.await.map_err(|_| ApiError::Stopped)?
    }

    /// etcd's `/health`: a leader is known and a linearizable round trip
    /// through the Raft core and the apply loop completes in time.
    pub async fn health(&self) -> Result<(), String> {
        if let Some(reason) = self.shared.fatal_reason() {
            return Err(reason);
        }
        if self.shared.leader().is_none() {
            return Err("RAFT NO LEADER".into());
        }
        let barrier = async { Some(self.read_barrier().await) };
        let timer = async {
            glommio::timer::sleep(HEALTH_READ_TIMEOUT).await;
            None
        };
        match futures_lite::future::or(barrier, timer).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.message().to_string()),
            None => Err("timed out waiting for a read index".into()),
        }
    }

    /// Creates a watch on this shard's hub for `session`; see
    /// `WatchSession::create` (refusals are answered in-band on `sink`).
    pub fn watch_create(
        &self,
        session: &WatchSession,
        req: &w::ArchivedWatchCreateRequest,
        sink: Rc<dyn WatchSink>,
    ) -> Option<i64> {
        session.create(&self.hub, req, sink)
    }

    /// Cancels a watch of `session`; its final response goes to its sink.
    /// The returned response answers the cancel request itself (the native
    /// protocol answers every request id; etcd's gRPC stream does not).
    pub fn watch_cancel(&self, session: &WatchSession, watch_id: i64) -> w::WatchResponse {
        session.cancel(&self.hub, watch_id);
        w::WatchResponse {
            header: self.shared.header(self.shared.store().current_revision()),
            watch_id,
            canceled: true,
            ..Default::default()
        }
    }

    /// etcd's RequestProgress: once every watch of the session is synced, a
    /// notification (watch id -1) at the revision all of them have reached.
    /// `Timeout` if they do not catch up within the request timeout (etcd
    /// sends nothing for unsynced watchers; the caller decides).
    pub async fn watch_progress(
        &self,
        session: &WatchSession,
    ) -> Result<w::WatchResponse, ApiError> {
        let deadline = std::time::Instant::now() + self.shared.cfg.request_timeout();
        while !session.all_synced() {
            if std::time::Instant::now() > deadline {
                return Err(ApiError::Timeout);
            }
            glommio::timer::sleep(PROGRESS_POLL).await;
        }
        Ok(w::WatchResponse {
            header: self.shared.header(self.hub.progress_revision()),
            watch_id: -1,
            ..Default::default()
        })
    }

    fn range(&self, r: &st::RangeRequest) -> Result<w::Response, ApiError> {
        let view = self.shared.store().read().map_err(kv::storage_error)?;
        let resp = view.range(r).map_err(kv::storage_error)?;
        let header = self.shared.header(view.revision());
        Ok(w::Response::Range(kv::range_response(header, resp)))
    }

    fn status(&self) -> w::Response {
        let shared = &self.shared;
        let store = shared.store();
        let mut errors = Vec::new();
        if let Some(reason) = shared.fatal_reason() {
            errors.push(reason);
        }
        w::Response::Status(w::StatusResponse {
            header: shared.header(store.current_revision()),
            version: ETCD_COMPAT_VERSION.to_string(),
            db_size: i64::try_from(store.db_size_bytes()).unwrap_or(i64::MAX),
            leader: shared.leader.load(Ordering::Relaxed),
            raft_index: shared.commit_index.load(Ordering::Relaxed),
            raft_term: shared.term.load(Ordering::Relaxed),
            raft_applied_index: shared.applied_index.load(Ordering::Relaxed),
            errors,
            db_size_in_use: i64::try_from(store.db_size_in_use_bytes()).unwrap_or(i64::MAX),
            is_learner: shared.is_learner.load(Ordering::Relaxed),
        })
    }

    /// etcd's MemberList header carries no revision (cluster state is not
    /// part of the key space).
    fn member_list(&self) -> w::Response {
        let shared = &self.shared;
        let cluster = shared
            .cluster
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let members = cluster
            .members
            .values()
            .map(|m| w::Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: if m.id == shared.member_id {
                    shared.cfg.advertise_client_urls.clone()
                } else {
                    m.client_urls.clone()
                },
                is_learner: m.is_learner,
                native_addr: if m.id == shared.member_id {
                    shared.cfg.native_advertise().to_string()
                } else {
                    m.native_addr.clone().unwrap_or_default()
                },
            })
            .collect();
        let header = shared.header(0);
        w::Response::MemberList(w::MemberListResponse { header, members })
    }

    fn hash_kv(&self, revision: i64) -> Result<w::Response, ApiError> {
        // A whole-store scan: through the scan mapping (`Store::read_scan`).
        let view = self.shared.store().read_scan().map_err(kv::storage_error)?;
        let (hash, compact_revision) = view.hash_kv(revision).map_err(kv::storage_error)?;
        let hash_revision = if revision == 0 {
            view.revision()
        } else {
            revision
        };
        Ok(w::Response::HashKv(w::HashKvResponse {
            header: self.shared.header(view.revision()),
            hash,
            compact_revision,
            hash_revision,
        }))
    }
}

/// Sends a validated write to the Raft core and waits for its applied
/// answer (also for requests the member makes itself, `internal.rs`).
pub async fn propose(shared: &Shared, frame: OwnedFrame) -> Result<w::Response, ApiError> {
    let (reply, rx) = oneshot::channel();
    let received = std::time::Instant::now();
    shared
        .to_core
        .send(CoreMsg::Propose {
            frame,
            reply,
            received,
        })
        .await
        .map_err(|_| ApiError::Stopped)?;
    let answer = rx.await.map_err(|_| ApiError::Stopped)?;
    crate::stages::observe_total(received);
    answer
}
