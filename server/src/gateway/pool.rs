//! Native-protocol connections for unary calls, and the mapping of native
//! errors to gRPC statuses.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use corekv_wire::{ApiError, Client, ClientOptions, WireError};
use tonic::Status;

/// A fixed number of lazily opened native connections used round-robin.
/// Each `Client` pipelines many requests, so a few connections carry all
/// unary traffic. A slot whose connection failed is emptied and reopened by
/// the next call that picks it; a failed request is never retried (it may
/// have been applied).
pub struct NativePool {
    addr: String,
    opts: ClientOptions,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

impl NativePool {
    pub fn new(addr: String, opts: ClientOptions, connections: usize) -> Self {
        NativePool {
            addr,
            opts,
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Client>> {
        // The slot holds a plain Option; a panic elsewhere cannot leave it
        // half-written.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn pick(&self) -> Result<(usize, Client), WireError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(c) = self.slot(i).clone() {
            return Ok((i, c));
        }
        let c = Client::connect(&self.addr, self.opts.clone()).await?;
        let mut slot = self.slot(i);
        // Another caller may have filled the slot meanwhile; keep one.
        let c = slot.get_or_insert(c).clone();
        Ok((i, c))
    }

    /// Runs `f` on a pooled connection; native errors become gRPC statuses.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, WireError>>,
    {
        let (i, client) = self.pick().await.map_err(|e| status(&self.addr, e))?;
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_connection_error(&e) {
                    self.slot(i).take();
                }
                Err(status(&self.addr, e))
            }
        }
    }

    /// A new connection of its own (for a watch stream).
    pub async fn dedicated(&self) -> Result<Client, Status> {
        Client::connect(&self.addr, self.opts.clone())
            .await
            .map_err(|e| status(&self.addr, e))
    }
}

fn is_connection_error(e: &WireError) -> bool {
    !matches!(
        e,
        WireError::Api(_) | WireError::Timeout { .. } | WireError::Encode { .. }
    )
}

/// etcd's status for an API error: its gRPC code and exact message, which
/// clients match on. Transport failures are `Unavailable` (clients retry).
pub fn status(native_addr: &str, e: WireError) -> Status {
    match e {
        WireError::Api(e) => api_status(&e),
        WireError::Timeout { .. } => api_status(&ApiError::Timeout),
        WireError::ConnectionClosed { .. }
        | WireError::Io { .. }
        | WireError::DialTimeout { .. } => Status::unavailable(format!(
            "corekv gateway: native endpoint {native_addr}: {e}"
        )),
        other => Status::internal(format!(
            "corekv gateway: native endpoint {native_addr}: {other}"
        )),
    }
}

pub fn api_status(e: &ApiError) -> Status {
    Status::new(e.grpc_code(), e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_etcd_code_and_message() {
        let s = status("x", WireError::Api(ApiError::Compacted));
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = status(
            "x",
            WireError::Timeout {
                request_id: 1,
                operation: "Put",
                timeout_ms: 5,
            },
        );
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: request timed out");
        let s = status(
            "127.0.0.1:1",
            WireError::ConnectionClosed {
                addr: "a".into(),
                reason: "r".into(),
            },
        );
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("127.0.0.1:1"), "{}", s.message());
    }

    #[tokio::test]
    async fn unreachable_native_endpoint_is_unavailable() {
        // A port nothing listens on: bind, read the port, drop the listener.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let pool = NativePool::new(format!("127.0.0.1:{port}"), ClientOptions::default(), 2);
        let err = pool
            .call(|c| async move { c.status(corekv_wire::StatusRequest {}).await })
            .await
            .expect_err("nothing listens there");
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}
