//! Alarms (etcd's NOSPACE and CORRUPT) and the backend quota.
//!
//! Alarms are cluster state: raising or clearing one is an `Alarm` request
//! that goes through Raft, and applying it updates the set in memory and in
//! the store's meta table (same commit as the entry), so every member agrees
//! and a restart keeps them. While an alarm is active the apply path refuses
//! what etcd's appliers refuse:
//!
//! - NOSPACE (etcd's "capped" applier): Put, a Txn with any Put, LeaseGrant
//!   get `etcdserver: mvcc: database space exceeded`; reads, deletes,
//!   compaction and defragmentation work, so an operator can free space.
//! - CORRUPT: every write gets `etcdserver: corrupt cluster`; reads work.
//!
//! The refusal is decided by the replicated alarm set only, never by a
//! member's local file size, so all members apply every entry alike.
//! The quota is checked before a write is proposed (`admit`, like etcd's
//! quota KV server), against this member's file size; a member that refused
//! a write for it raises NOSPACE for itself (`spawn_monitor`).
//!
//! Persisted form (meta key `corekv/alarms`): version byte 1, then per alarm
//! member id (u64 LE) and kind (u8: 1 NOSPACE, 2 CORRUPT), sorted.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corekv_storage::{ReadView, WriteBatch};
use corekv_wire::ApiError;
use corekv_wire::messages as w;

use super::Shared;
use crate::metrics::METRICS;

/// Store meta key of the alarm set.
pub const ALARMS_META_KEY: &[u8] = b"corekv/alarms";
const FORMAT_VERSION: u8 = 1;
/// How often shard 0 compares its file size with the quota.
pub const QUOTA_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// etcd's default quota, used for `--quota-backend-bytes 0`.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Most alarms kept (one per member and kind; a cluster has few members).
pub const MAX_ALARMS: usize = 1024;

const BIT_NOSPACE: u8 = 1;
const BIT_CORRUPT: u8 = 2;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    NoSpace = 1,
    Corrupt = 2,
}

impl Kind {
    fn from_wire(t: &w::ArchivedAlarmType) -> Option<Kind> {
        match t {
            w::ArchivedAlarmType::None => None,
            w::ArchivedAlarmType::Nospace => Some(Kind::NoSpace),
            w::ArchivedAlarmType::Corrupt => Some(Kind::Corrupt),
        }
    }

    fn to_wire(self) -> w::AlarmType {
        match self {
            Kind::NoSpace => w::AlarmType::Nospace,
            Kind::Corrupt => w::AlarmType::Corrupt,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Kind::NoSpace => BIT_NOSPACE,
            Kind::Corrupt => BIT_CORRUPT,
        }
    }
}

/// The active alarms. Written only by the apply loop; read by every shard.
#[derive(Debug, Default)]
pub struct Alarms {
    set: RwLock<BTreeSet<(u64, Kind)>>,
    /// Which kinds are active (any member), for the hot path.
    active: AtomicU8,
    /// A write was refused by this member's quota check since the monitor
    /// last looked: raise NOSPACE (etcd raises on such a refusal only).
    quota_refused: AtomicBool,
}

impl Alarms {
    /// The set recorded in `view` (empty if none or unreadable: a damaged
    /// entry must not keep a member from starting; it is logged).
    pub fn load(view: &ReadView) -> Alarms {
        let alarms = Alarms::default();
        alarms.reload(view);
        alarms
    }

    /// Replaces the set with the one recorded in `view` (after a snapshot
    /// from the leader replaced the store).
    pub fn reload(&self, view: &ReadView) {
        let set = match view.get_meta(ALARMS_META_KEY).map(|b| decode(&b)) {
            None => BTreeSet::new(),
            Some(Ok(set)) => set,
            Some(Err(reason)) => {
                tracing::error!(%reason, "stored alarms unreadable; starting with none");
                BTreeSet::new()
            }
        };
        self.replace(set);
    }

    fn replace(&self, set: BTreeSet<(u64, Kind)>) {
        let bits = set.iter().fold(0, |b, (_, k)| b | k.bit());
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        self.active.store(bits, Ordering::Release);
    }

    fn snapshot(&self) -> BTreeSet<(u64, Kind)> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn has(&self, member: u64, kind: Kind) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(member, kind))
    }

    fn any(&self, kind: Kind) -> bool {
        self.active.load(Ordering::Acquire) & kind.bit() != 0
    }

    /// etcd's Alarm GET: every active alarm.
    pub fn list(&self) -> Vec<w::AlarmMember> {
        to_wire(&self.snapshot())
    }
}

fn to_wire<'a>(alarms: impl IntoIterator<Item = &'a (u64, Kind)>) -> Vec<w::AlarmMember> {
    alarms
        .into_iter()
        .map(|&(member_id, kind)| w::AlarmMember {
            member_id,
            alarm: kind.to_wire(),
        })
        .collect()
}

fn encode(set: &BTreeSet<(u64, Kind)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + set.len() * 9);
    out.push(FORMAT_VERSION);
    for &(member, kind) in set {
        out.extend_from_slice(&member.to_le_bytes());
        out.push(kind as u8);
    }
    out
}

fn decode(bytes: &[u8]) -> Result<BTreeSet<(u64, Kind)>, String> {
    let (&version, rest) = bytes.split_first().ok_or("empty alarm record")?;
    if version != FORMAT_VERSION {
        return Err(format!("unknown alarm record version {version}"));
    }
    if rest.len() % 9 != 0 || rest.len() / 9 > MAX_ALARMS {
        return Err(format!("alarm record of {} bytes", bytes.len()));
    }
    rest.chunks_exact(9)
        .map(|c| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&c[..8]);
            let kind = match c[8] {
                1 => Kind::NoSpace,
                2 => Kind::Corrupt,
                k => return Err(format!("unknown alarm kind {k}")),
            };
            Ok((u64::from_le_bytes(id), kind))
        })
        .collect()
}

/// The quota in bytes (`--quota-backend-bytes`, 0 = etcd's default).
pub fn quota_bytes(shared: &Shared) -> u64 {
    match shared.cfg.quota_backend_bytes {
        0 => DEFAULT_QUOTA_BYTES,
        q => q,
    }
}

/// Whether a request adds data (etcd's quota cost > 0).
fn costs(req: &w::ArchivedRequest) -> bool {
    match req {
        w::ArchivedRequest::Put(_)
        | w::ArchivedRequest::PutAs(_)
        | w::ArchivedRequest::LeaseGrant(_) => true,
        w::ArchivedRequest::Txn(t) => {
            let is_put = |op: &w::ArchivedRequestOp| matches!(op, w::ArchivedRequestOp::Put(_));
            t.success.iter().chain(t.failure.iter()).any(is_put)
                || t.nested
                    .iter()
                    .any(|n| n.success.iter().chain(n.failure.iter()).any(is_put))
        }
        w::ArchivedRequest::Range(_)
        | w::ArchivedRequest::DeleteRange(_)
        | w::ArchivedRequest::Compact(_)
        | w::ArchivedRequest::WatchCreate(_)
        | w::ArchivedRequest::WatchCancel(_)
        | w::ArchivedRequest::WatchProgress(_)
        | w::ArchivedRequest::LeaseRevoke(_)
        | w::ArchivedRequest::LeaseRevokeAs(_)
        | w::ArchivedRequest::LeaseKeepAlive(_)
        | w::ArchivedRequest::LeaseTimeToLive(_)
        | w::ArchivedRequest::LeaseLeases(_)
        | w::ArchivedRequest::MemberList(_)
        | w::ArchivedRequest::MemberAdd(_)
        | w::ArchivedRequest::MemberRemove(_)
        | w::ArchivedRequest::MemberUpdate(_)
        | w::ArchivedRequest::MemberPromote(_)
        | w::ArchivedRequest::Status(_)
        | w::ArchivedRequest::HashKv(_)
        | w::ArchivedRequest::Defragment(_)
        | w::ArchivedRequest::Alarm(_)
        | w::ArchivedRequest::MoveLeader(_)
        | w::ArchivedRequest::Snapshot(_)
        | w::ArchivedRequest::Auth(_) => false,
    }
}

/// Writes refused while CORRUPT is active (etcd's corrupt applier): every
/// replicated request but the alarm requests themselves.
fn writes(req: &w::ArchivedRequest) -> bool {
    super::core::is_replicated(req) && !matches!(req, w::ArchivedRequest::Alarm(_))
}

/// Before proposing a client request: refuses a write that adds data when
/// this member's file has reached the quota (the monitor raises NOSPACE),
/// or while NOSPACE / CORRUPT is active.
pub fn admit(shared: &Shared, req: &w::ArchivedRequest) -> Result<(), ApiError> {
    check_apply(&shared.alarms, req)?;
    if costs(req) && METRICS.db_total_size_bytes.load(Ordering::Relaxed) >= quota_bytes(shared) {
        shared.alarms.quota_refused.store(true, Ordering::Release);
        return Err(ApiError::NoSpace);
    }
    Ok(())
}

/// At apply: the refusal etcd's capped and corrupt appliers make. Depends
/// only on the replicated alarm set.
pub fn check_apply(alarms: &Alarms, req: &w::ArchivedRequest) -> Result<(), ApiError> {
    if alarms.any(Kind::Corrupt) && writes(req) {
        return Err(ApiError::Corrupt);
    }
    if alarms.any(Kind::NoSpace) && costs(req) {
        return Err(ApiError::NoSpace);
    }
    Ok(())
}

/// Whether an Alarm request goes through Raft (activate, deactivate) or is
/// answered by the member (get).
pub fn is_replicated_action(a: &w::ArchivedAlarmRequest) -> bool {
    !matches!(a.action, w::ArchivedAlarmAction::Get)
}

/// etcd's Alarm GET, answered by any member.
pub fn list(shared: &Shared) -> w::Response {
    w::Response::Alarm(w::AlarmResponse {
        header: shared.header(shared.store().current_revision()),
        alarms: shared.alarms.list(),
    })
}

/// Applies an activate/deactivate entry: updates the set and records it in
/// the batch. Answers the alarms that changed, as etcd does.
pub fn apply(
    alarms: &Alarms,
    batch: &mut WriteBatch<'_>,
    header: w::ResponseHeader,
    a: &w::ArchivedAlarmRequest,
) -> Result<w::Response, ApiError> {
    let mut set = alarms.snapshot();
    let member = a.member_id.to_native();
    let changed: Vec<(u64, Kind)> = match (&a.action, Kind::from_wire(&a.alarm)) {
        (w::ArchivedAlarmAction::Get, _) => to_owned(&set),
        (w::ArchivedAlarmAction::Activate, None) => Vec::new(),
        (w::ArchivedAlarmAction::Activate, Some(kind)) => {
            if set.len() >= MAX_ALARMS && !set.contains(&(member, kind)) {
                return Err(ApiError::TooManyRequests);
            }
            if set.insert((member, kind)) {
                tracing::warn!(member = format_args!("{member:x}"), ?kind, "alarm raised");
            }
            vec![(member, kind)]
        }
        (w::ArchivedAlarmAction::Deactivate, kind) => {
            let gone: Vec<(u64, Kind)> = set
                .iter()
                .filter(|(m, k)| *m == member && kind.is_none_or(|want| *k == want))
                .copied()
                .collect();
            for g in &gone {
                set.remove(g);
                tracing::info!(member = format_args!("{:x}", g.0), kind = ?g.1, "alarm cleared");
            }
            gone
        }
    };
    batch.put_meta(ALARMS_META_KEY, &encode(&set));
    alarms.replace(set);
    Ok(w::Response::Alarm(w::AlarmResponse {
        header,
        alarms: to_wire(&changed),
    }))
}

fn to_owned(set: &BTreeSet<(u64, Kind)>) -> Vec<(u64, Kind)> {
    set.iter().copied().collect()
}

/// Proposes an Alarm request through this member's Raft core, as a client
/// write would be.
pub async fn propose(
    shared: &Shared,
    action: w::AlarmAction,
    member_id: u64,
    alarm: w::AlarmType,
) -> Result<w::Response, ApiError> {
    let req = w::Request::Alarm(w::AlarmRequest {
        action,
        member_id,
        alarm,
    });
    super::internal::propose(shared, &req).await
}

/// On shard 0: raises NOSPACE for this member once a write was refused by
/// its quota check (looked at every `QUOTA_CHECK_INTERVAL`; one proposal at
/// a time). As in etcd, a disarmed alarm is raised again only by the next
/// refused write.
pub fn spawn_monitor(shared: Arc<Shared>) {
    glommio::spawn_local(async move {
        while !shared.stopping() {
            glommio::timer::sleep(QUOTA_CHECK_INTERVAL).await;
            let size = METRICS.db_total_size_bytes.load(Ordering::Relaxed);
            let me = shared.member_id;
            if shared.leader().is_none()
                || !shared.alarms.quota_refused.swap(false, Ordering::AcqRel)
                || shared.alarms.has(me, Kind::NoSpace)
            {
                continue;
            }
            tracing::warn!(
                size,
                quota = quota_bytes(&shared),
                "database space exceeded: raising NOSPACE"
            );
            let raised = propose(&shared, w::AlarmAction::Activate, me, w::AlarmType::Nospace);
            if let Err(e) = raised.await {
                tracing::warn!(error = %e, "raising NOSPACE failed; retrying");
                shared.alarms.quota_refused.store(true, Ordering::Release);
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_refuses_garbage() {
        let set: BTreeSet<(u64, Kind)> = [
            (7, Kind::NoSpace),
            (7, Kind::Corrupt),
            (u64::MAX, Kind::NoSpace),
        ]
        .into_iter()
        .collect();
        assert_eq!(decode(&encode(&set)).unwrap(), set);
        assert_eq!(decode(&encode(&BTreeSet::new())).unwrap(), BTreeSet::new());
        assert!(decode(&[]).is_err());
        assert!(decode(&[2]).is_err());
        assert!(decode(&[1, 0, 0]).is_err());
        let mut bad = encode(&set);
        bad[9] = 3;
        assert!(decode(&bad).is_err());
    }
}
