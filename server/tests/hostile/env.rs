//! Shared by the hostile-input suites (hostile.rs, hostile_conn.rs): one
//! member, clients on both protocols, RSS measurement.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::common::{self, Cluster, put};
use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{Client, ClientOptions, WireLimits};
use pb::kv_client::KvClient;
use tonic::transport::Channel;

/// A single member with its native client and gRPC channel.
pub struct Env {
    pub cluster: Cluster,
    pub native: Client,
    pub grpc: Channel,
}

impl Env {
    pub async fn start() -> Env {
        let cluster = Cluster::start(1, &[]).await;
        let native = cluster.client(0).await;
        let grpc = channel(&cluster).await;
        Env {
            cluster,
            native,
            grpc,
        }
    }

    pub fn native_addr(&self) -> String {
        self.cluster.members[0].native_addr()
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster.members[0].spec.http)
    }

    pub fn pid(&self) -> u32 {
        self.cluster.members[0]
            .child
            .as_ref()
            .expect("running")
            .id()
    }

    /// Resident set of the member, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The member answers a put and a linearizable get, on both protocols,
    /// on fresh connections.
    pub async fn assert_serving(&self, what: &str) {
        let c = common::connect(&self.native_addr()).await;
        let key = format!("alive-{what}");
        c.put(put(&key, "1"))
            .await
            .unwrap_or_else(|e| panic!("native put after {what}: {e}"));
        let got = c.get(key.as_bytes()).await.expect("native get");
        assert_eq!(got.map(|kv| kv.value), Some(b"1".to_vec()), "after {what}");
        let mut kv = KvClient::new(channel(&self.cluster).await);
        kv.range(pb::RangeRequest {
            key: key.clone().into_bytes().into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("gRPC range after {what}: {e}"));
    }
}

pub async fn channel(c: &Cluster) -> Channel {
    let addr = format!("http://127.0.0.1:{}", c.members[0].spec.http);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Channel::from_shared(addr.clone()).unwrap().connect().await {
            Ok(ch) => return ch,
            Err(e) if Instant::now() > deadline => panic!("gRPC connect {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Anonymous resident memory (heap, buffers) of `pid`, KiB. File-backed
/// pages of the memory-mapped store are left out: they grow with the data
/// and the kernel reclaims them; buffering shows up here.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Anonymous RSS bound asserted after each hostile phase: above a healthy
/// member plus one full per-connection watch outbox (64 MiB), below what
/// unbounded buffering of the phase's input (160 MiB of events, 10,000
/// connections with 64 KiB buffers) would take.
pub const RSS_BOUND_KIB: u64 = 256 * 1024;

/// A client whose own limits do not stop oversized requests from leaving.
pub async fn unlimited_client(addr: &str) -> Client {
    let opts = ClientOptions {
        limits: WireLimits {
            max_frame_bytes: 64 << 20,
            max_request_bytes: 64 << 20,
            max_txn_ops: 100_000,
            max_key_bytes: 64 << 20,
            max_value_bytes: 64 << 20,
            max_nested_txns: 100_000,
        },
        ..ClientOptions::default()
    };
    Client::connect(addr, opts).await.expect("connect")
}

pub fn b(s: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s)
}

pub fn n_put(key: &[u8], value: &[u8], lease: i64) -> w::PutRequest {
    w::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }
}

pub fn g_put(key: &[u8], value: &[u8], lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: b(key),
        value: b(value),
        lease,
        ..Default::default()
    }
}
