//! The request layer's side of membership: routing of the Cluster service's
//! calls, etcd's learner rule, and the names and client addresses that
//! answers carry (known at run time, from peers' hellos).

use std::sync::atomic::Ordering;

use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use tokio::sync::oneshot;

use super::{Change, plan};
use crate::node::route::{Api, Route};
use crate::node::{CoreMsg, Shared};

/// etcd 3.4's rule: a learner serves only Status and serializable ranges
/// (`etcdserver: rpc not supported for learner` otherwise).
pub fn learner_may_serve(req: &w::ArchivedRequest) -> bool {
    match req {
        w::ArchivedRequest::Range(r) => r.serializable,
        w::ArchivedRequest::Status(_) => true,
        _ => false,
    }
}

impl Api {
    /// Refuses what a learner may not serve (checked before routing).
    pub fn learner_gate(&self, req: &w::ArchivedRequest) -> Result<(), ApiError> {
        if self.shared.is_learner.load(Ordering::Relaxed) && !learner_may_serve(req) {
            return Err(ApiError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// MemberAdd / MemberRemove / MemberPromote: etcd's checks on the
    /// receiving member, then `Route::Member` (a Raft conf change).
    pub fn route_member_change(&self, req: &w::ArchivedRequest) -> Route<'static> {
        let Some(change) = Change::of(req) else {
            let reason = format!("{} is not a membership change", req.name());
            return Route::Done(Err(ApiError::MalformedRequest(reason)));
        };
        let cluster = self
            .shared
            .cluster
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match plan::admit(&change, &cluster) {
            Ok(()) => Route::Member,
            Err(e) => Route::Done(Err(e)),
        }
    }

    /// MemberUpdate: the URLs are checked here, the rest at apply.
    pub fn route_member_update(&self, req: &w::ArchivedMemberUpdateRequest) -> Route<'static> {
        let urls: Vec<String> = req
            .peer_urls
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        match plan::check_urls(&urls) {
            Ok(()) => Route::Propose,
            Err(e) => Route::Done(Err(e)),
        }
    }

    /// Sends a membership change to the Raft core and waits until this
    /// member applied it.
    pub async fn member_change(&self, frame: OwnedFrame) -> Result<w::Response, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .to_core
            .send(CoreMsg::MemberChange { frame, reply })
            .await
            .map_err(|_| ApiError::Stopped)?;
        let resp = rx.await.map_err(|_| ApiError::Stopped)??;
        Ok(with_runtime_facts(&self.shared, resp))
    }
}

/// Fills in what the replicated record does not hold: names of members
/// added at run time and client addresses, as peers told this member.
pub fn with_runtime_facts(shared: &Shared, resp: w::Response) -> w::Response {
    let cluster = shared.cluster.read().unwrap_or_else(|e| e.into_inner());
    let fill = |m: &mut w::Member| {
        if let Some(known) = cluster.members.get(&m.id) {
            if m.name.is_empty() {
                m.name = known.name.clone();
            }
            if m.client_urls.is_empty() {
                m.client_urls = known.client_urls.clone();
            }
            if m.native_addr.is_empty() {
                m.native_addr = known.native_addr.clone().unwrap_or_default();
            }
        }
    };
    let mut resp = resp;
    match &mut resp {
        w::Response::MemberAdd(r) => {
            r.members.iter_mut().for_each(fill);
            if let Some(m) = &mut r.member {
                fill(m);
            }
        }
        w::Response::MemberRemove(r) => r.members.iter_mut().for_each(fill),
        w::Response::MemberUpdate(r) => r.members.iter_mut().for_each(fill),
        w::Response::MemberPromote(r) => r.members.iter_mut().for_each(fill),
        _ => {}
    }
    resp
}
