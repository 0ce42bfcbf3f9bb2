//! Applying committed membership changes to the membership record in the
//! store (on every member, in log order, deterministic).

use corekv_raftcore::ConfChange;
use corekv_storage::WriteBatch;
use corekv_wire::ApiError;
use corekv_wire::messages as w;
use rkyv::util::AlignedVec;

use super::{CLUSTER_META_KEY, members_to_wire, plan::check_urls, to_wire};
use crate::cluster::{ClusterInfo, Member};
use crate::node::entry::{self, Origin};

/// A committed Raft configuration change, applied.
pub struct ConfApplied {
    /// The answer for the client that asked, when corekv proposed it.
    pub answer: Option<(Origin, Result<w::Response, ApiError>)>,
    /// The membership after the change.
    pub cluster: ClusterInfo,
}

fn read(batch: &WriteBatch<'_>) -> Result<ClusterInfo, String> {
    super::load(batch.get_meta(CLUSTER_META_KEY))?
        .ok_or_else(|| "the store holds no cluster membership".to_string())
}

fn write(batch: &mut WriteBatch<'_>, cluster: &ClusterInfo) -> Result<(), String> {
    let bytes = serde_json::to_vec(cluster).map_err(|e| format!("cluster info: {e}"))?;
    batch.put_meta(CLUSTER_META_KEY, &bytes);
    Ok(())
}

/// Applies the committed change `cc` whose entry carried `context` (the
/// encoded entry of the client's request, or empty). Never refuses: the
/// leader checked the change before proposing it, against the membership
/// every earlier change had already been applied to. Replaying a change
/// the record already reflects (a member that joined with the current
/// membership and replays the log from the start) leaves it as it is.
/// An error is fatal (the store holds no membership record).
pub fn conf_change(
    batch: &mut WriteBatch<'_>,
    cc: &ConfChange,
    context: &[u8],
    header: w::ResponseHeader,
) -> Result<ConfApplied, String> {
    let mut cluster = read(batch)?;
    let mut aligned = AlignedVec::<16>::new();
    let request = match request_of(context, &mut aligned) {
        Ok(request) => request,
        // Raft applies the change anyway; so does the record (without the
        // request, a new member has no peer URLs until a MemberUpdate).
        Err(e) => {
            tracing::error!(error = %e, ?cc, "conf change with an unreadable context");
            None
        }
    };
    match cc {
        ConfChange::AddVoter { id, .. } | ConfChange::AddLearner { id, .. } => {
            let peer_urls = match request {
                Some((_, w::ArchivedRequest::MemberAdd(a))) => {
                    a.peer_urls.iter().map(|u| u.as_str().to_owned()).collect()
                }
                _ => Vec::new(),
            };
            let is_learner = matches!(cc, ConfChange::AddLearner { .. });
            let member = cluster.members.entry(*id).or_insert_with(|| Member {
                id: *id,
                name: String::new(),
                peer_urls: Vec::new(),
                client_urls: Vec::new(),
                native_addr: None,
                is_learner,
            });
            // Already there (a replay): a later promotion stays.
            if !peer_urls.is_empty() {
                member.peer_urls = peer_urls;
            }
        }
        ConfChange::Promote { id } => {
            if let Some(m) = cluster.members.get_mut(id) {
                m.is_learner = false;
            }
        }
        ConfChange::Remove { id } => {
            cluster.members.remove(id);
            cluster.removed.insert(*id);
        }
    }
    write(batch, &cluster)?;
    let answer = request.map(|(origin, req)| (origin, answer(req, cc, &cluster, header)));
    Ok(ConfApplied { answer, cluster })
}

/// Who asked for the change and what (None for a change without context).
fn request_of<'a>(
    context: &[u8],
    aligned: &'a mut AlignedVec<16>,
) -> Result<Option<(Origin, &'a w::ArchivedRequest)>, String> {
    if context.is_empty() {
        return Ok(None);
    }
    let decoded = entry::decode(context)?;
    aligned.extend_from_slice(decoded.body);
    let req = rkyv::access::<w::ArchivedRequest, rkyv::rancor::Error>(aligned)
        .map_err(|e| format!("conf change context: {e}"))?;
    Ok(Some((decoded.origin, req)))
}

fn answer(
    req: &w::ArchivedRequest,
    cc: &ConfChange,
    cluster: &ClusterInfo,
    header: w::ResponseHeader,
) -> Result<w::Response, ApiError> {
    let members = members_to_wire(cluster);
    match (req, cc) {
        (
            w::ArchivedRequest::MemberAdd(_),
            ConfChange::AddVoter { id, .. } | ConfChange::AddLearner { id, .. },
        ) => Ok(w::Response::MemberAdd(w::MemberAddResponse {
            header,
            member: cluster.members.get(id).map(to_wire),
            members,
        })),
        (w::ArchivedRequest::MemberRemove(_), ConfChange::Remove { .. }) => {
            Ok(w::Response::MemberRemove(w::MemberRemoveResponse {
                header,
                members,
            }))
        }
        (w::ArchivedRequest::MemberPromote(_), ConfChange::Promote { .. }) => {
            Ok(w::Response::MemberPromote(w::MemberPromoteResponse {
                header,
                members,
            }))
        }
        (other, _) => Err(ApiError::Internal(format!(
            "a conf change entry carried a {} request",
            other.name()
        ))),
    }
}

/// MemberUpdate (an ordinary replicated request): new peer URLs for a
/// member. Refusals are decided from the replicated record, so every
/// member decides alike.
pub fn update(
    batch: &mut WriteBatch<'_>,
    req: &w::ArchivedMemberUpdateRequest,
    header: w::ResponseHeader,
) -> Result<(w::Response, ClusterInfo), ApiError> {
    let mut cluster = read(batch).map_err(ApiError::Internal)?;
    let id = req.id.to_native();
    let peer_urls: Vec<String> = req
        .peer_urls
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    check_urls(&peer_urls)?;
    if !cluster.members.contains_key(&id) {
        return Err(ApiError::MemberNotFound);
    }
    let taken = cluster
        .members
        .values()
        .filter(|m| m.id != id)
        .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)));
    if taken {
        return Err(ApiError::PeerUrlExist);
    }
    if let Some(m) = cluster.members.get_mut(&id) {
        m.peer_urls = peer_urls;
    }
    write(batch, &cluster).map_err(ApiError::Internal)?;
    let resp = w::Response::MemberUpdate(w::MemberUpdateResponse {
        header,
        members: members_to_wire(&cluster),
    });
    Ok((resp, cluster))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use corekv_storage::{MemBackend, Store, StoreOptions};

    use super::*;

    fn store_with(cluster: &ClusterInfo) -> Store {
        let store = Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default())
            .expect("store");
        let mut batch = store.write().unwrap();
        write(&mut batch, cluster).unwrap();
        batch.commit(0, true).unwrap();
        store
    }

    fn record(store: &Store) -> ClusterInfo {
        let view = store.read().unwrap();
        super::super::load(view.get_meta(CLUSTER_META_KEY))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn replayed_and_context_less_changes_apply_without_refusal() {
        let cluster = ClusterInfo::bootstrap("a=http://127.0.0.1:1", "t").unwrap();
        let store = store_with(&cluster);
        let header = w::ResponseHeader::default();
        let mut batch = store.write().unwrap();
        // No context, then an unreadable one: applied all the same.
        let add = ConfChange::AddLearner {
            id: 7,
            context: Vec::new(),
        };
        assert!(
            conf_change(&mut batch, &add, &[], header.clone())
                .unwrap()
                .answer
                .is_none()
        );
        let promote = ConfChange::Promote { id: 7 };
        let done = conf_change(&mut batch, &promote, b"garbage", header.clone()).unwrap();
        assert!(done.answer.is_none() && !done.cluster.members[&7].is_learner);
        // A replayed add leaves the later promotion in place.
        let done = conf_change(&mut batch, &add, &[], header.clone()).unwrap();
        assert!(!done.cluster.members[&7].is_learner);
        let remove = ConfChange::Remove { id: 7 };
        let done = conf_change(&mut batch, &remove, &[], header).unwrap();
        assert!(!done.cluster.members.contains_key(&7) && done.cluster.removed.contains(&7));
        batch.commit(1, false).unwrap();
        assert_eq!(record(&store), done.cluster);
    }

    #[test]
    fn update_refusals_come_from_the_record() {
        let cluster =
            ClusterInfo::bootstrap("a=http://127.0.0.1:1,b=http://127.0.0.1:2", "t").unwrap();
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        let store = store_with(&cluster);
        let update = |id: u64, url: &str| {
            let req = w::Request::MemberUpdate(w::MemberUpdateRequest {
                id,
                peer_urls: vec![url.to_owned()],
            });
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&req).unwrap();
            let mut batch = store.write().unwrap();
            let archived = rkyv::access::<w::ArchivedRequest, rkyv::rancor::Error>(&bytes).unwrap();
            let w::ArchivedRequest::MemberUpdate(u) = archived else {
                unreachable!()
            };
            update(&mut batch, u, w::ResponseHeader::default()).map(|(_, c)| c)
        };
        assert_eq!(
            update(12345, "http://127.0.0.1:3").unwrap_err(),
            ApiError::MemberNotFound
        );
        assert_eq!(
            update(ids[0], "http://127.0.0.1:2").unwrap_err(),
            ApiError::PeerUrlExist
        );
        assert_eq!(update(ids[0], "nope").unwrap_err(), ApiError::MemberBadUrls);
        let changed = update(ids[0], "http://127.0.0.1:1").unwrap();
        assert_eq!(changed.members[&ids[0]].peer_urls, ["http://127.0.0.1:1"]);
    }
}
