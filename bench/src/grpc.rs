//! gRPC connections (one HTTP/2 connection per `Channel`) and leader lookup.

use crate::error::BenchError;
use corekv_wire::proto::etcdserverpb::StatusRequest;
use corekv_wire::proto::etcdserverpb::kv_client::KvClient;
use corekv_wire::proto::etcdserverpb::lease_client::LeaseClient;
use corekv_wire::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use corekv_wire::proto::etcdserverpb::watch_client::WatchClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to establish one connection.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Largest gRPC message the bench accepts (etcd's own client default is
/// unbounded; this bounds a misbehaving server's reply).
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

pub fn normalize(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

pub async fn connect(endpoint: &str) -> Result<Channel, BenchError> {
    let url = normalize(endpoint);
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|source| BenchError::Endpoint {
            endpoint: url.clone(),
            source,
        })?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    ep.connect().await.map_err(|source| BenchError::Connect {
        endpoint: url,
        source,
    })
}

/// `conns` connections, connection j to `endpoints[j % endpoints.len()]`.
pub struct Conns {
    channels: Vec<Channel>,
}

impl Conns {
    pub async fn open(endpoints: &[String], conns: usize) -> Result<Conns, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::InvalidArgument("no endpoints".into()));
        }
        let mut channels = Vec::with_capacity(conns.max(1));
        for j in 0..conns.max(1) {
            channels.push(connect(&endpoints[j % endpoints.len()]).await?);
        }
        Ok(Conns { channels })
    }

    /// The connection client `i` uses.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i)).max_decoding_message_size(MAX_DECODE_BYTES)
    }

    pub fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i)).max_decoding_message_size(MAX_DECODE_BYTES)
    }

    pub fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i))
    }
}

/// The endpoint whose Status says it is the leader (leader == its member id).
pub async fn find_leader(endpoints: &[String]) -> Result<String, BenchError> {
    let mut seen = Vec::new();
    for ep in endpoints {
        let ch = match connect(ep).await {
            Ok(ch) => ch,
            Err(e) => {
                seen.push(format!("{ep}: {e}"));
                continue;
            }
        };
        match MaintenanceClient::new(ch).status(StatusRequest {}).await {
            Ok(resp) => {
                let s = resp.into_inner();
                let member = s.header.map(|h| h.member_id).unwrap_or(0);
                if s.leader != 0 && s.leader == member {
                    return Ok(ep.clone());
                }
                seen.push(format!("{ep}: leader {:x}, member {member:x}", s.leader));
            }
            Err(status) => seen.push(format!("{ep}: {status}")),
        }
    }
    Err(BenchError::NoLeader(seen.join("; ")))
}

/// Waits until the endpoint answers Status, up to `timeout`.
pub async fn wait_ready(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("never answered");
    while tokio::time::Instant::now() < deadline {
        match connect(endpoint).await {
            Ok(ch) => match MaintenanceClient::new(ch).status(StatusRequest {}).await {
                Ok(r) if r.get_ref().leader != 0 => return Ok(()),
                Ok(_) => last = "no leader yet".into(),
                Err(s) => last = s.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}
