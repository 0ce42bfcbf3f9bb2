//! The member's small HTTP endpoint: `/health`, `/readyz`, `/livez`,
//! `/metrics`, `/version`, as etcd serves them on its client URL.
//!
//! Plain blocking HTTP/1.1 on its own threads: it must keep answering when the
//! executors are saturated, and it carries a few requests per second.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::metrics::METRICS;

/// Bound on concurrently served HTTP connections; more are answered 503.
pub const MAX_HTTP_CONNS: usize = 64;
/// Bound on the size of a request head we read.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd version corekv reports compatibility with.
pub const ETCD_COMPAT_VERSION: &str = "3.4.31";
pub const ETCD_COMPAT_CLUSTER_VERSION: &str = "3.4.0";

/// Answers whether the member can serve: a leader is known and a
/// linearizable round trip through the Raft core and the apply loop works.
pub type HealthProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn spawn(addr: SocketAddr, probe: HealthProbe) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("corekv-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_HTTP_CONNS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let _ = respond(&stream, 503, "text/plain", "too many connections\n");
                    continue;
                }
                let probe = probe.clone();
                let active = active.clone();
                let spawned = std::thread::Builder::new()
                    .name("corekv-http-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &probe);
                        active.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    tracing::warn!("http: cannot spawn a connection thread");
                }
            }
        })?;
    Ok(bound)
}

fn serve(stream: TcpStream, probe: &HealthProbe) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the rest of the head, bounded.
    let mut head_bytes = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || head_bytes > MAX_REQUEST_HEAD_BYTES {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&stream, 405, "text/plain", "method not allowed\n");
    }
    match path {
        "/metrics" => respond(&stream, 200, "text/plain; version=0.0.4", &METRICS.render()),
        "/health" | "/readyz" => match probe() {
            Ok(()) => respond(
                &stream,
                200,
                "application/json",
                "{\"health\":\"true\",\"reason\":\"\"}",
            ),
            Err(reason) => {
                let body = serde_json::json!({"health": "false", "reason": reason}).to_string();
                respond(&stream, 503, "application/json", &body)
            }
        },
        "/livez" => respond(&stream, 200, "text/plain", "ok\n"),
        "/version" => {
            let body = serde_json::json!({
                "etcdserver": ETCD_COMPAT_VERSION,
                "etcdcluster": ETCD_COMPAT_CLUSTER_VERSION,
                "corekv": env!("CARGO_PKG_VERSION"),
            });
            respond(&stream, 200, "application/json", &body.to_string())
        }
        _ => respond(&stream, 404, "text/plain", "404 page not found\n"),
    }
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
