//! Deciding whether a membership change may go ahead: `admit` on the member
//! that received the request, `plan` on the Raft leader. Both are pure
//! functions of the membership record and Raft's status.

use corekv_raftcore::{ConfChange, Status};
use corekv_wire::ApiError;

use super::{Change, LEARNER_READY_PERCENT, MAX_LEARNERS};
use crate::cluster::{ClusterInfo, added_member_id};

/// etcd's URL rule for peer URLs: `http(s)://host:port`, nothing after.
pub fn check_urls(urls: &[String]) -> Result<(), ApiError> {
    let valid = |url: &str| {
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return false;
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return false;
        };
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    };
    if urls.is_empty() || !urls.iter().all(|u| valid(u)) {
        return Err(ApiError::MemberBadUrls);
    }
    Ok(())
}

/// A member whose name is known has started (etcd: has published its
/// attributes).
fn started_voters(cluster: &ClusterInfo, except: Option<u64>) -> (usize, usize) {
    let voters = cluster
        .members
        .values()
        .filter(|m| !m.is_learner && Some(m.id) != except);
    voters.fold((0, 0), |(n, started), m| {
        (n + 1, started + usize::from(!m.name.is_empty()))
    })
}

/// etcd's strict reconfiguration check, on the member that received the
/// request (`cluster` is its view, names included).
pub fn admit(change: &Change, cluster: &ClusterInfo) -> Result<(), ApiError> {
    match change {
        Change::Add {
            peer_urls,
            is_learner,
        } => {
            check_urls(peer_urls)?;
            if *is_learner {
                return Ok(());
            }
            // The new voter counts as a member that has not started.
            let (voters, started) = started_voters(cluster, None);
            let members = voters + 1;
            // Growing a one-member cluster (etcd's special case).
            if started == 1 && members == 2 {
                return Ok(());
            }
            if started < members / 2 + 1 {
                return Err(ApiError::MemberNotEnoughStarted);
            }
            Ok(())
        }
        Change::Remove { id } => {
            if cluster.members.get(id).is_none_or(|m| m.is_learner) {
                return Ok(());
            }
            let (members, started) = started_voters(cluster, Some(*id));
            if started < members / 2 + 1 {
                return Err(ApiError::MemberNotEnoughStarted);
            }
            Ok(())
        }
        Change::Promote { .. } => {
            // The learner counts as a started voter-to-be.
            let (voters, started) = started_voters(cluster, None);
            let members = voters + 1;
            if started + 1 < members / 2 + 1 {
                return Err(ApiError::MemberNotEnoughStarted);
            }
            Ok(())
        }
    }
}

/// On the leader: the Raft change for `change` against the applied
/// membership `cluster` and the leader's `status`. `unique` makes a new
/// member's id unique (the proposal's origin).
pub fn plan(
    change: &Change,
    cluster: &ClusterInfo,
    status: &Status,
    unique: &[u8],
) -> Result<ConfChange, ApiError> {
    match change {
        Change::Add {
            peer_urls,
            is_learner,
        } => {
            let taken = cluster
                .members
                .values()
                .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)));
            if taken {
                return Err(ApiError::PeerUrlExist);
            }
            if *is_learner && cluster.learners().len() >= MAX_LEARNERS {
                return Err(ApiError::TooManyLearners);
            }
            let id = added_member_id(peer_urls, cluster.cluster_id, unique);
            if cluster.members.contains_key(&id) || cluster.removed.contains(&id) {
                return Err(ApiError::MemberExist);
            }
            Ok(if *is_learner {
                ConfChange::AddLearner {
                    id,
                    context: Vec::new(),
                }
            } else {
                ConfChange::AddVoter {
                    id,
                    context: Vec::new(),
                }
            })
        }
        Change::Remove { id } => {
            if !cluster.members.contains_key(id) {
                return Err(ApiError::MemberNotFound);
            }
            Ok(ConfChange::Remove { id: *id })
        }
        Change::Promote { id } => {
            let member = cluster.members.get(id).ok_or(ApiError::MemberNotFound)?;
            if !member.is_learner {
                return Err(ApiError::MemberNotLearner);
            }
            learner_ready(status, *id)?;
            Ok(ConfChange::Promote { id: *id })
        }
    }
}

/// etcd's `isLearnerReady`: the learner's log matches at least
/// `LEARNER_READY_PERCENT` of the leader's.
fn learner_ready(status: &Status, id: u64) -> Result<(), ApiError> {
    let Some(learner) = status.progress.get(&id) else {
        return Ok(());
    };
    let leader = status
        .progress
        .get(&status.id)
        .map_or(status.persisted, |p| p.match_index);
    if (learner.match_index as f64) < (leader as f64) * LEARNER_READY_PERCENT {
        return Err(ApiError::LearnerNotReady);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(names: &[(&str, bool)]) -> ClusterInfo {
        let spec: Vec<String> = (0..names.len())
            .map(|i| format!("n{i}=http://127.0.0.1:{}", 100 + i))
            .collect();
        let mut c = ClusterInfo::bootstrap(&spec.join(","), "t").unwrap();
        for (m, (name, learner)) in c.members.values_mut().zip(names) {
            m.name = (*name).to_owned();
            m.is_learner = *learner;
        }
        c
    }

    fn add(learner: bool) -> Change {
        Change::Add {
            peer_urls: vec!["http://127.0.0.1:9".into()],
            is_learner: learner,
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_urls(&["http://a:1".into(), "https://b:2".into()]).is_ok());
        for bad in ["a:1", "http://a", "http://:1", "http://a:x", "ftp://a:1"] {
            assert_eq!(
                check_urls(&[bad.into()]),
                Err(ApiError::MemberBadUrls),
                "{bad}"
            );
        }
        assert_eq!(check_urls(&[]), Err(ApiError::MemberBadUrls));
    }

    #[test]
    fn strict_reconfiguration_counts_started_voters() {
        // One started member may grow to two.
        assert_eq!(admit(&add(false), &cluster(&[("a", false)])), Ok(()));
        // Two voters, one not started: a third voter would need two started.
        let half = cluster(&[("a", false), ("", false)]);
        assert_eq!(
            admit(&add(false), &half),
            Err(ApiError::MemberNotEnoughStarted)
        );
        assert_eq!(admit(&add(true), &half), Ok(()));
        let one = cluster(&[("a", false)]);
        let id = *one.members.keys().next().unwrap();
        assert_eq!(
            admit(&Change::Remove { id }, &one),
            Err(ApiError::MemberNotEnoughStarted)
        );
    }

    #[test]
    fn plan_refuses_what_etcd_refuses() {
        let c = cluster(&[("a", false), ("b", true)]);
        let status = corekv_raftcore::Status {
            id: 1,
            term: 1,
            vote: 0,
            leader: Some(1),
            role: corekv_raftcore::Role::Leader,
            commit: 0,
            applied: 0,
            persisted: 0,
            first_index: 1,
            last_index: 0,
            conf_state: Default::default(),
            progress: Default::default(),
            lead_transferee: None,
        };
        let taken = Change::Add {
            peer_urls: vec!["http://127.0.0.1:100".into()],
            is_learner: false,
        };
        assert_eq!(plan(&taken, &c, &status, b"u"), Err(ApiError::PeerUrlExist));
        assert_eq!(
            plan(&add(true), &c, &status, b"u"),
            Err(ApiError::TooManyLearners)
        );
        assert!(matches!(
            plan(&add(false), &c, &status, b"u"),
            Ok(ConfChange::AddVoter { .. })
        ));
        let ids: Vec<u64> = c.members.keys().copied().collect();
        let voter = ids.iter().find(|id| !c.members[id].is_learner).unwrap();
        assert_eq!(
            plan(&Change::Promote { id: *voter }, &c, &status, b""),
            Err(ApiError::MemberNotLearner)
        );
        assert_eq!(
            plan(&Change::Remove { id: 12345 }, &c, &status, b""),
            Err(ApiError::MemberNotFound)
        );
    }
}
