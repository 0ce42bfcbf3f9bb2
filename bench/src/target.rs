//! The server under load, reached over gRPC (etcd or corekv's gateway) or
//! corekv's native protocol. Workloads talk to a `KvHandle` and do not care
//! which.

use crate::cli::Protocol;
use crate::error::{BenchError, OpError};
use crate::grpc::{AuthChannel, Conns};
use crate::secure::Security;
use bytes::Bytes;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::proto::etcdserverpb::kv_client::KvClient;
use corekv_wire::{ArchivedResponse, Client, ClientOptions, WireError};
use std::time::Duration;

/// Native connections: connection j to `endpoints[j % endpoints.len()]`.
pub struct NativeConns {
    clients: Vec<Client>,
}

pub fn native_addr(endpoint: &str) -> &str {
    let s = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    s.trim_end_matches('/')
}

/// Options of the bench's native connections: enough in-flight requests
/// for thousands of clients per connection.
pub fn native_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(30),
        max_in_flight: 16_384,
        ..ClientOptions::default()
    }
}

/// A native connection to `endpoint`, over TLS when the endpoint asks for
/// it (see `secure`); no auth yet.
async fn native_connect(endpoint: &str, sec: &Security) -> Result<Client, BenchError> {
    let dial = sec.dial(endpoint)?;
    let opts = ClientOptions {
        tls: dial.native_tls(),
        ..native_options()
    };
    Client::connect(&dial.addr, opts)
        .await
        .map_err(|e| BenchError::Native(format!("connect {}: {e}", dial.addr)))
}

impl NativeConns {
    /// Connections authenticate once each (a bcrypt on the server, so
    /// concurrently); every handle of a connection sends its token.
    pub async fn open(
        endpoints: &[String],
        conns: usize,
        sec: &Security,
    ) -> Result<NativeConns, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::InvalidArgument("no endpoints".into()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..conns.max(1) {
            let (ep, sec) = (endpoints[j % endpoints.len()].clone(), sec.clone());
            tasks.spawn(async move {
                let c = native_connect(&ep, &sec).await?;
                let Some(cred) = sec.credentials() else {
                    return Ok::<_, BenchError>((j, c));
                };
                let token = c
                    .authenticate(&cred.name, &cred.password)
                    .await
                    .map_err(|e| BenchError::Auth {
                        endpoint: ep.clone(),
                        user: cred.name.clone(),
                        detail: native_kind(&e).kind,
                    })?;
                Ok((j, c.with_token(Some(&token))))
            });
        }
        let mut clients = Vec::with_capacity(conns.max(1));
        while let Some(done) = tasks.join_next().await {
            let done = done.map_err(|e| BenchError::Native(format!("connect task: {e}")))?;
            clients.push(done?);
        }
        clients.sort_by_key(|(j, _)| *j);
        Ok(NativeConns {
            clients: clients.into_iter().map(|(_, c)| c).collect(),
        })
    }

    pub fn client(&self, i: usize) -> Client {
        self.clients[i % self.clients.len()].clone()
    }
}

pub enum Target {
    Grpc(Conns),
    Native(NativeConns),
}

impl Target {
    /// Plain-text connections without auth (the servers `compare` starts).
    pub async fn open(
        protocol: Protocol,
        endpoints: &[String],
        conns: usize,
    ) -> Result<Target, BenchError> {
        Target::open_secure(protocol, endpoints, conns, &Security::plain()).await
    }

    /// Connections with the run's TLS and auth settings.
    pub async fn open_secure(
        protocol: Protocol,
        endpoints: &[String],
        conns: usize,
        sec: &Security,
    ) -> Result<Target, BenchError> {
        Ok(match protocol {
            Protocol::Grpc => Target::Grpc(Conns::open_secure(endpoints, conns, sec).await?),
            Protocol::Native => Target::Native(NativeConns::open(endpoints, conns, sec).await?),
        })
    }

    pub fn kv(&self, i: usize) -> KvHandle {
        match self {
            Target::Grpc(c) => KvHandle::Grpc(c.kv(i)),
            Target::Native(n) => KvHandle::Native(n.client(i)),
        }
    }
}

/// The stable part of a native error: no request ids or addresses, so
/// errors of one kind group together in the report.
pub fn native_kind(e: &WireError) -> OpError {
    match e {
        WireError::Api(api) => OpError::new(format!("Api: {api}")),
        WireError::Timeout { operation, .. } => OpError::new(format!("timeout: {operation}")),
        WireError::ConnectionClosed { reason, .. } => {
            OpError::new(format!("connection closed: {reason}"))
        }
        WireError::Io {
            operation, source, ..
        } => OpError::new(format!("io: {operation}: {}", source.kind())),
        WireError::UnexpectedResponse { operation, got } => {
            OpError::new(format!("unexpected response to {operation}: {got}"))
        }
        other => OpError::new(format!("wire: {other}")),
    }
}

pub enum KvHandle {
    Grpc(KvClient<AuthChannel>),
    Native(Client),
}

fn native_range(r: &pb::RangeRequest) -> corekv_wire::RangeRequest {
    corekv_wire::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit,
        revision: r.revision,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        ..Default::default()
    }
}

fn native_put(key: &[u8], value: &[u8]) -> corekv_wire::PutRequest {
    corekv_wire::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// One operation inside a bench txn (the bench only sends compare-free txns
/// of puts and ranges).
pub enum TxnOp {
    Put { key: Bytes, value: Bytes },
    Range(pb::RangeRequest),
}

impl KvHandle {
    /// Puts and returns the revision of the write.
    pub async fn put(&mut self, key: Bytes, value: Bytes) -> Result<i64, OpError> {
        match self {
            KvHandle::Grpc(kv) => {
                let resp = kv
                    .put(pb::PutRequest {
                        key,
                        value,
                        ..Default::default()
                    })
                    .await?;
                Ok(resp.get_ref().header.as_ref().map_or(0, |h| h.revision))
            }
            KvHandle::Native(c) => {
                let req = corekv_wire::Request::Put(native_put(&key, &value));
                let frame = c.request(&req).await.map_err(|e| native_kind(&e))?;
                match frame.get() {
                    ArchivedResponse::Put(p) => Ok(p.header.revision.to_native()),
                    _ => Err(OpError::new("unexpected response to Put")),
                }
            }
        }
    }

    pub async fn range(&mut self, req: &pb::RangeRequest) -> Result<(), OpError> {
        match self {
            KvHandle::Grpc(kv) => {
                kv.range(req.clone()).await?;
            }
            KvHandle::Native(c) => {
                let r = corekv_wire::Request::Range(native_range(req));
                c.request(&r).await.map_err(|e| native_kind(&e))?;
            }
        }
        Ok(())
    }

    pub async fn txn(&mut self, ops: Vec<TxnOp>) -> Result<(), OpError> {
        match self {
            KvHandle::Grpc(kv) => {
                use pb::request_op::Request;
                let success = ops
                    .into_iter()
                    .map(|op| pb::RequestOp {
                        request: Some(match op {
                            TxnOp::Put { key, value } => Request::RequestPut(pb::PutRequest {
                                key,
                                value,
                                ..Default::default()
                            }),
                            TxnOp::Range(r) => Request::RequestRange(r),
                        }),
                    })
                    .collect();
                kv.txn(pb::TxnRequest {
                    compare: Vec::new(),
                    success,
                    failure: Vec::new(),
                })
                .await?;
            }
            KvHandle::Native(c) => {
                let success = ops
                    .iter()
                    .map(|op| match op {
                        TxnOp::Put { key, value } => {
                            corekv_wire::RequestOp::Put(native_put(key, value))
                        }
                        TxnOp::Range(r) => corekv_wire::RequestOp::Range(native_range(r)),
                    })
                    .collect();
                let req = corekv_wire::Request::Txn(corekv_wire::TxnRequest {
                    success,
                    ..Default::default()
                });
                c.request(&req).await.map_err(|e| native_kind(&e))?;
            }
        }
        Ok(())
    }

    pub async fn compact(&mut self, revision: i64) -> Result<(), OpError> {
        match self {
            KvHandle::Grpc(kv) => {
                kv.compact(pb::CompactionRequest {
                    revision,
                    physical: false,
                })
                .await?;
            }
            KvHandle::Native(c) => {
                c.compact(corekv_wire::CompactionRequest {
                    revision,
                    physical: false,
                })
                .await
                .map_err(|e| native_kind(&e))?;
            }
        }
        Ok(())
    }
}

/// The native endpoint whose Status says it is the leader.
pub async fn find_native_leader(
    endpoints: &[String],
    sec: &Security,
) -> Result<String, BenchError> {
    let mut seen = Vec::new();
    for ep in endpoints {
        match native_connect(ep, sec).await {
            Err(e) => seen.push(format!("{ep}: {e}")),
            Ok(c) => match c.status(corekv_wire::StatusRequest {}).await {
                Ok(s) if s.leader != 0 && s.leader == s.header.member_id => {
                    return Ok(ep.clone());
                }
                Ok(s) => seen.push(format!(
                    "{ep}: leader {:x}, member {:x}",
                    s.leader, s.header.member_id
                )),
                Err(e) => seen.push(format!("{ep}: {e}")),
            },
        }
    }
    Err(BenchError::NoLeader(seen.join("; ")))
}

/// Waits until the native endpoint answers Status with a leader.
pub async fn wait_native_ready(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("never answered");
    while tokio::time::Instant::now() < deadline {
        match Client::connect(native_addr(endpoint), native_options()).await {
            Ok(c) => match c.status(corekv_wire::StatusRequest {}).await {
                Ok(s) if s.leader != 0 => return Ok(()),
                Ok(_) => last = "no leader yet".into(),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_addr_strips_scheme() {
        assert_eq!(native_addr("http://127.0.0.1:2378"), "127.0.0.1:2378");
        assert_eq!(native_addr("127.0.0.1:2378/"), "127.0.0.1:2378");
    }

    #[test]
    fn native_errors_group_without_ids() {
        let a = native_kind(&WireError::Timeout {
            request_id: 1,
            operation: "Put",
            timeout_ms: 5,
        });
        let b = native_kind(&WireError::Timeout {
            request_id: 2,
            operation: "Put",
            timeout_ms: 5,
        });
        assert_eq!(a.kind, b.kind);
    }
}
