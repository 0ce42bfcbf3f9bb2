//! The lease part of a workload client: grants with client-chosen ids (so
//! the checker knows every id), puts with a lease on the workload keys,
//! keep-alives, revokes, and leases left to expire. Short leases (a few
//! seconds, never kept alive) expire during the run; long ones are kept
//! alive every TTL/3 until the client drops or revokes them.

use std::time::{Duration, Instant};

use corekv_checker::history::{Outcome, Request, Response};
use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ApiError, Client, WireError};
use rand::Rng;
use rand::rngs::StdRng;
use tonic::transport::Channel;

/// Short TTLs (seconds): never kept alive, expire within the run.
const SHORT_TTL_S: std::ops::RangeInclusive<i64> = 2..=4;
/// Long TTLs (seconds): kept alive until dropped or revoked.
const LONG_TTL_S: std::ops::RangeInclusive<i64> = 8..=15;
/// Leases one client holds at most (more grants wait for expiries).
const MAX_HELD: usize = 6;

struct Held {
    id: i64,
    ttl_s: i64,
    /// Kept alive every TTL/3 while set.
    keep: bool,
    /// Last grant or keep-alive sent.
    renewed: Instant,
}

/// One client's leases.
pub struct Book {
    client: u32,
    granted: i64,
    held: Vec<Held>,
}

impl Book {
    pub fn new(client: u32) -> Book {
        Book {
            client,
            granted: 0,
            held: Vec::new(),
        }
    }

    /// A keep-alive that is due, if any.
    pub fn due_keep_alive(&mut self, now: Instant) -> Option<Request> {
        let h = self.held.iter_mut().find(|h| {
            h.keep && now.duration_since(h.renewed) >= Duration::from_secs(h.ttl_s as u64) / 3
        })?;
        h.renewed = now;
        Some(Request::LeaseKeepAlive { id: h.id })
    }

    /// A lease operation: grant, put with a lease, revoke, or dropping the
    /// keep-alives of a lease (then a put).
    pub fn next_request(&mut self, rng: &mut StdRng, key: String, value: String) -> Request {
        let now = Instant::now();
        // Short leases past their TTL are gone (or going): forget them.
        self.held.retain(|h| {
            h.keep || now.duration_since(h.renewed) < Duration::from_secs(h.ttl_s as u64)
        });
        let roll = rng.random_range(0..100);
        if self.held.is_empty() || (roll < 25 && self.held.len() < MAX_HELD) {
            self.granted += 1;
            // Positive, unique per client and run.
            let id = (i64::from(self.client) + 1) << 32 | self.granted;
            let ttl = if rng.random_bool(0.5) {
                rng.random_range(SHORT_TTL_S)
            } else {
                rng.random_range(LONG_TTL_S)
            };
            return Request::LeaseGrant { id, ttl };
        }
        let pick = rng.random_range(0..self.held.len());
        match roll {
            25..35 => {
                let id = self.held.swap_remove(pick).id;
                Request::LeaseRevoke { id }
            }
            35..45 => {
                // Left to expire from now on.
                self.held[pick].keep = false;
                self.held[pick].renewed = now;
                self.put(key, value, pick)
            }
            _ => self.put(key, value, pick),
        }
    }

    fn put(&self, key: String, value: String, pick: usize) -> Request {
        Request::Put {
            key,
            value,
            lease: self.held[pick].id,
        }
    }

    /// Learns from an answer: granted leases are held (long ones kept
    /// alive), leases found gone are forgotten.
    pub fn learn(&mut self, req: &Request, outcome: &Outcome, rng: &mut StdRng) {
        match (req, outcome) {
            (Request::LeaseGrant { id, ttl }, Outcome::Ok(_) | Outcome::Unknown(_)) => {
                self.held.push(Held {
                    id: *id,
                    ttl_s: *ttl,
                    keep: *ttl >= *LONG_TTL_S.start() && rng.random_bool(0.9),
                    renewed: Instant::now(),
                });
            }
            (Request::LeaseKeepAlive { id }, Outcome::Ok(Response::LeaseKeepAlive { ttl: 0 }))
            | (Request::Put { lease: id, .. }, Outcome::Failed(_)) => {
                self.held.retain(|h| h.id != *id);
            }
            _ => {}
        }
    }
}

/// Executes a lease request on a native connection (anything else is
/// refused, not sent).
pub async fn run_native(c: &Client, req: &Request) -> Result<Response, WireError> {
    Ok(match req {
        Request::LeaseGrant { id, ttl } => Response::LeaseGrant {
            revision: c
                .lease_grant(w::LeaseGrantRequest { ttl: *ttl, id: *id })
                .await?
                .header
                .revision,
        },
        Request::LeaseRevoke { id } => Response::LeaseRevoke {
            revision: c
                .lease_revoke(w::LeaseRevokeRequest { id: *id })
                .await?
                .header
                .revision,
        },
        Request::LeaseKeepAlive { id } => Response::LeaseKeepAlive {
            ttl: c
                .lease_keep_alive(w::LeaseKeepAliveRequest { id: *id })
                .await?
                .ttl,
        },
        Request::Put { .. }
        | Request::Delete { .. }
        | Request::Range { .. }
        | Request::Txn { .. }
        | Request::Compact { .. } => return Err(WireError::Api(ApiError::NotCapable)),
    })
}

fn revision(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// Executes a lease request over gRPC; a keep-alive is one request on a
/// fresh `LeaseKeepAlive` stream.
pub async fn run_grpc(
    c: &mut pb::lease_client::LeaseClient<Channel>,
    req: &Request,
) -> Result<Response, tonic::Status> {
    Ok(match req {
        Request::LeaseGrant { id, ttl } => {
            let r = c
                .lease_grant(pb::LeaseGrantRequest { ttl: *ttl, id: *id })
                .await?
                .into_inner();
            Response::LeaseGrant {
                revision: revision(&r.header),
            }
        }
        Request::LeaseRevoke { id } => {
            let r = c
                .lease_revoke(pb::LeaseRevokeRequest { id: *id })
                .await?
                .into_inner();
            Response::LeaseRevoke {
                revision: revision(&r.header),
            }
        }
        Request::LeaseKeepAlive { id } => {
            let mut answers = c
                .lease_keep_alive(tokio_stream::once(pb::LeaseKeepAliveRequest { id: *id }))
                .await?
                .into_inner();
            let r = answers
                .message()
                .await?
                .ok_or_else(|| tonic::Status::unavailable("keep-alive stream ended"))?;
            Response::LeaseKeepAlive { ttl: r.ttl }
        }
        Request::Put { .. }
        | Request::Delete { .. }
        | Request::Range { .. }
        | Request::Txn { .. }
        | Request::Compact { .. } => {
            return Err(tonic::Status::unimplemented("not a lease request"));
        }
    })
}
