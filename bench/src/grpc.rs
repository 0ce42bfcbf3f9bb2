//! gRPC connections (one HTTP/2 connection per `Channel`, over TLS when the
//! endpoint asks for it), their auth tokens, and leader lookup.

use crate::error::BenchError;
use crate::secure::{Dial, DialTls, Security};
use corekv_wire::proto::etcdserverpb::auth_client::AuthClient;
use corekv_wire::proto::etcdserverpb::kv_client::KvClient;
use corekv_wire::proto::etcdserverpb::lease_client::LeaseClient;
use corekv_wire::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use corekv_wire::proto::etcdserverpb::watch_client::WatchClient;
use corekv_wire::proto::etcdserverpb::{AuthenticateRequest, StatusRequest};
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// Time allowed to establish one connection.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Largest gRPC message the bench accepts (etcd's own client default is
/// unbounded; this bounds a misbehaving server's reply).
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;
/// gRPC metadata key of the auth token (etcd's clientv3 sends `token`).
pub const TOKEN_METADATA_KEY: &str = "token";

/// Adds the connection's auth token (if any) to every request and stream.
#[derive(Clone, Default)]
pub struct Token(Option<AsciiMetadataValue>);

impl Token {
    pub fn new(token: &str) -> Result<Token, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Token(Some(MetadataValue::try_from(token)?)))
    }
}

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert(TOKEN_METADATA_KEY, t.clone());
        }
        Ok(req)
    }
}

/// A connection whose requests carry its token: what every client uses.
pub type AuthChannel = InterceptedService<Channel, Token>;

/// TCP (no delay) then a TLS handshake offering ALPN `h2`.
async fn tls_stream(
    addr: &str,
    tls: &DialTls,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(tls.grpc.clone())
        .connect(tls.server_name.clone(), tcp)
        .await
}

/// One connection, plain or TLS as `dial` says.
async fn connect_dial(dial: &Dial) -> Result<Channel, BenchError> {
    let url = dial.url();
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|source| BenchError::Endpoint {
            endpoint: url.clone(),
            source,
        })?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    let connected = match &dial.tls {
        None => ep.connect().await,
        Some(tls) => {
            // tonic is built without its TLS features; the handshake is ours
            // (the same rustls as the native client). tonic reconnects
            // through this connector too.
            let (addr, tls) = (dial.addr.clone(), tls.clone());
            let connector = tower::service_fn(move |_: Uri| {
                let (addr, tls) = (addr.clone(), tls.clone());
                async move {
                    let s = tls_stream(&addr, &tls).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            });
            ep.connect_with_connector(connector).await
        }
    };
    connected.map_err(|source| BenchError::Connect {
        endpoint: url,
        source,
    })
}

/// One plain-text connection (the servers `compare` starts).
pub async fn connect(endpoint: &str) -> Result<Channel, BenchError> {
    connect_dial(&Security::plain().dial(endpoint)?).await
}

/// Authenticate on `channel` with the run's credentials (none: no token).
async fn authenticate(
    channel: &Channel,
    sec: &Security,
    endpoint: &str,
) -> Result<Token, BenchError> {
    let Some(c) = sec.credentials() else {
        return Ok(Token::default());
    };
    let err = |detail: String| BenchError::Auth {
        endpoint: endpoint.to_string(),
        user: c.name.clone(),
        detail,
    };
    let resp = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: c.name.clone(),
            password: c.password.clone(),
        })
        .await
        .map_err(|s| err(format!("{:?}: {}", s.code(), s.message())))?;
    Token::new(&resp.into_inner().token).map_err(|e| err(format!("token is not ASCII: {e}")))
}

/// `conns` connections, connection j to `endpoints[j % endpoints.len()]`,
/// each with its own token when the run authenticates.
pub struct Conns {
    channels: Vec<(Channel, Token)>,
}

impl Conns {
    /// Plain connections (no TLS, no auth), as the lease workloads and
    /// `compare` start their own servers.
    pub async fn open(endpoints: &[String], conns: usize) -> Result<Conns, BenchError> {
        Conns::open_secure(endpoints, conns, &Security::plain()).await
    }

    pub async fn open_secure(
        endpoints: &[String],
        conns: usize,
        sec: &Security,
    ) -> Result<Conns, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::InvalidArgument("no endpoints".into()));
        }
        let dials = endpoints
            .iter()
            .map(|e| sec.dial(e))
            .collect::<Result<Vec<_>, _>>()?;
        // Connect and authenticate concurrently: an Authenticate costs a
        // bcrypt on the server, 100 of them in a row take seconds.
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..conns.max(1) {
            let (dial, sec) = (dials[j % dials.len()].clone(), sec.clone());
            tasks.spawn(async move {
                let ch = connect_dial(&dial).await?;
                let token = authenticate(&ch, &sec, &dial.url()).await?;
                Ok::<_, BenchError>((j, ch, token))
            });
        }
        let mut channels = Vec::with_capacity(conns.max(1));
        while let Some(done) = tasks.join_next().await {
            let done = done.map_err(|e| BenchError::Protocol {
                operation: "open a gRPC connection",
                detail: e.to_string(),
            })?;
            channels.push(done?);
        }
        channels.sort_by_key(|(j, _, _)| *j);
        Ok(Conns {
            channels: channels.into_iter().map(|(_, c, t)| (c, t)).collect(),
        })
    }

    /// The connection client `i` uses, with its token.
    pub fn channel(&self, i: usize) -> AuthChannel {
        let (ch, token) = &self.channels[i % self.channels.len()];
        InterceptedService::new(ch.clone(), token.clone())
    }

    pub fn kv(&self, i: usize) -> KvClient<AuthChannel> {
        KvClient::new(self.channel(i)).max_decoding_message_size(MAX_DECODE_BYTES)
    }

    pub fn watch(&self, i: usize) -> WatchClient<AuthChannel> {
        WatchClient::new(self.channel(i)).max_decoding_message_size(MAX_DECODE_BYTES)
    }

    pub fn lease(&self, i: usize) -> LeaseClient<AuthChannel> {
        LeaseClient::new(self.channel(i))
    }
}

/// The endpoint whose Status says it is the leader (leader == its member id).
pub async fn find_leader(endpoints: &[String], sec: &Security) -> Result<String, BenchError> {
    let mut seen = Vec::new();
    for ep in endpoints {
        let ch = match connect_dial(&sec.dial(ep)?).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::test_certs::files;
    use crate::secure::{SecurityArgs, load_certs, load_key};
    use std::sync::Arc;
    use tokio_rustls::rustls;

    #[test]
    fn token_rides_in_metadata() {
        let mut t = Token::new("abc.12").unwrap();
        let req = t.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get(TOKEN_METADATA_KEY).unwrap(), "abc.12");
        let req = Token::default().call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get(TOKEN_METADATA_KEY).is_none());
        assert!(Token::new("bad\ntoken").is_err());
    }

    /// A TLS server with the leaf certificate that records the ALPN it
    /// negotiated; the bench's handshake must offer h2 and verify the server.
    #[tokio::test]
    async fn tls_stream_offers_h2_and_verifies_the_server() {
        let f = files();
        let mut server = rustls::ServerConfig::builder_with_provider(crate::secure::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(load_certs(&f.cert).unwrap(), load_key(&f.key).unwrap())
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let sec = |ca: &std::path::Path| {
            Security::from_args(&SecurityArgs {
                cacert: Some(ca.to_path_buf()),
                ..SecurityArgs::default()
            })
            .unwrap()
        };
        let dial = sec(&f.ca).dial(&format!("https://{addr}")).unwrap();
        let s = tls_stream(&dial.addr, dial.tls.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        // A server whose certificate does not chain to --cacert is refused.
        let other = files();
        let dial = sec(&other.ca).dial(&format!("https://{addr}")).unwrap();
        let err = tls_stream(&dial.addr, dial.tls.as_ref().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
