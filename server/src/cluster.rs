//! Cluster identity: the parsed `--initial-cluster`, member and cluster ids.
//!
//! Ids are derived deterministically from the bootstrap configuration (like
//! etcd, from peer URLs and the cluster token), so every member computes the
//! same ids without talking to the others. They are persisted in the store on
//! first start; later starts read them back and ignore the bootstrap flags.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One member as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// Native-protocol address clients use, when the member has told us.
    pub native_addr: Option<String>,
    pub is_learner: bool,
}

/// The cluster's membership and id, persisted in the store's meta table.
/// Changed only by applied membership changes (`node/membership`), so every
/// member holds the same value at the same applied index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: BTreeMap<u64, Member>,
    /// The voters at log index 0 (the `--initial-cluster`): what Raft
    /// starts from when it replays the log from the beginning. Empty in
    /// data written before membership changes existed (the members are the
    /// bootstrap set then).
    #[serde(default)]
    pub bootstrap_voters: Vec<u64>,
    /// Members removed from the cluster: they may never rejoin with the
    /// same id (a peer connection from one is answered "removed").
    #[serde(default)]
    pub removed: BTreeSet<u64>,
}

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // 0 means "none" in Raft.
    h.max(1)
}

/// The id of a member added at run time: from its peer URLs, the cluster
/// and a value unique to the proposal (etcd mixes in the time), so a member
/// re-added with the same URLs gets a new id.
pub fn added_member_id(peer_urls: &[String], cluster_id: u64, unique: &[u8]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let joined = urls.join(",");
    fnv1a64(&[joined.as_bytes(), &cluster_id.to_le_bytes(), unique])
}

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let joined = urls.join(",");
    fnv1a64(&[joined.as_bytes(), token.as_bytes()])
}

impl ClusterInfo {
    /// Parses `name1=http://a:2380,name2=http://b:2380` (a name may repeat
    /// to list several URLs, as in etcd).
    pub fn bootstrap(spec: &str, token: &str) -> Result<ClusterInfo, String> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster: '{item}' is not name=url"))?;
            if name.is_empty() || url.is_empty() {
                return Err(format!("--initial-cluster: '{item}' is not name=url"));
            }
            by_name
                .entry(name.to_string())
                .or_default()
                .push(url.to_string());
        }
        if by_name.is_empty() {
            return Err("--initial-cluster is empty".into());
        }
        let mut members = BTreeMap::new();
        for (name, peer_urls) in by_name {
            let id = member_id(&peer_urls, token);
            if members.contains_key(&id) {
                return Err(format!("--initial-cluster: duplicate peer URLs for {name}"));
            }
            members.insert(
                id,
                Member {
                    id,
                    name,
                    peer_urls,
                    client_urls: Vec::new(),
                    native_addr: None,
                    is_learner: false,
                },
            );
        }
        let mut ids: Vec<u64> = members.keys().copied().collect();
        ids.sort_unstable();
        let id_bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
        let cluster_id = fnv1a64(&[&id_bytes, token.as_bytes()]);
        Ok(ClusterInfo {
            cluster_id,
            members,
            bootstrap_voters: ids,
            removed: BTreeSet::new(),
        })
    }

    /// The cluster of `--initial-cluster` and this member's id in it; the
    /// member's entry must list exactly `advertise_peer_urls` (etcd's rule).
    /// Used by a first start and by `snapshot restore`.
    pub fn bootstrap_member(
        spec: &str,
        token: &str,
        name: &str,
        advertise_peer_urls: &[String],
    ) -> Result<(ClusterInfo, u64), String> {
        let cluster = ClusterInfo::bootstrap(spec, token)?;
        let me = cluster
            .find_by_name(name)
            .ok_or_else(|| format!("member name {name:?} is not in --initial-cluster {spec:?}"))?;
        if me.peer_urls != advertise_peer_urls {
            return Err(format!(
                "--initial-cluster has {name}={:?} but --initial-advertise-peer-urls is {:?}",
                me.peer_urls, advertise_peer_urls
            ));
        }
        let id = me.id;
        Ok((cluster, id))
    }

    pub fn find_by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    pub fn voters(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// The voters Raft starts from at log index 0.
    pub fn initial_voters(&self) -> Vec<u64> {
        if self.bootstrap_voters.is_empty() {
            self.voters()
        } else {
            self.bootstrap_voters.clone()
        }
    }

    pub fn learners(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_parses_and_ids_are_stable() {
        let spec = "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3";
        let one = ClusterInfo::bootstrap(spec, "t").unwrap();
        let two = ClusterInfo::bootstrap(
            "c=http://127.0.0.1:3,a=http://127.0.0.1:1,b=http://127.0.0.1:2",
            "t",
        )
        .unwrap();
        assert_eq!(one, two);
        assert_eq!(one.members.len(), 3);
        assert_ne!(
            one.cluster_id,
            ClusterInfo::bootstrap(spec, "other").unwrap().cluster_id
        );
        assert!(one.find_by_name("b").is_some());
    }

    #[test]
    fn bootstrap_rejects_garbage() {
        assert!(ClusterInfo::bootstrap("", "t").is_err());
        assert!(ClusterInfo::bootstrap("noequals", "t").is_err());
        assert!(ClusterInfo::bootstrap("a=", "t").is_err());
        assert!(ClusterInfo::bootstrap("a=http://x:1,b=http://x:1", "t").is_err());
    }
}
