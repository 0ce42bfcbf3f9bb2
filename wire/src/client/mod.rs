//! A small pipelined native-protocol client on tokio.
//!
//! One TCP connection, a writer task (coalesces queued frames into one
//! write) and a reader task (decodes frames and routes them by request id
//! to a waiting request or a stream). `Client` is `Clone + Send + Sync`;
//! clones share the connection. Requests are answered in any order.
//!
//! Bounds: `max_in_flight` unary requests (a semaphore), `write_queue_frames`
//! queued frames, `stream_buffer_frames` undelivered frames per watch or
//! snapshot stream. A full stream buffer makes the reader wait (no frame is
//! dropped), which pauses the whole connection until the stream is read.

mod conn;
mod response;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::WireError;
use crate::frame::{FRAME_ALIGN, FrameFlags, encode_frame, encode_frame_token};
use crate::limits::WireLimits;
use crate::messages::*;
pub use response::{ResponseFrame, WatchFrame};
pub use stream::{ResponseStream, WatchStream};

pub use conn::CONNECTION_REQUEST_ID;
use conn::{Route, Shared};

/// Client settings; every bound is here.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub dial_timeout: Duration,
    /// Deadline for a unary request (and for the first frame of a stream).
    pub request_timeout: Duration,
    /// Unary requests awaiting an answer at once.
    pub max_in_flight: usize,
    pub limits: WireLimits,
    /// Encoded frames queued for the writer task.
    pub write_queue_frames: usize,
    /// Bytes the writer coalesces into one socket write.
    pub write_coalesce_bytes: usize,
    /// Frames buffered per stream (watch, snapshot) before the reader waits.
    pub stream_buffer_frames: usize,
    /// Bytes asked from the socket per read.
    pub read_chunk_bytes: usize,
    /// Speak TLS (the server's `--cert-file`); `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// Largest frame accepted from the server. Larger than
    /// `limits.max_frame_bytes` (which bounds what we send) because etcd
    /// clients accept large range responses; a bigger frame closes the
    /// connection with `FrameTooLarge`.
    pub max_response_frame_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            limits: WireLimits::default(),
            write_queue_frames: 1024,
            write_coalesce_bytes: 256 * 1024,
            stream_buffer_frames: 256,
            read_chunk_bytes: 64 * 1024,
            tls: None,
            max_response_frame_bytes: 64 * 1024 * 1024,
        }
    }
}

/// TLS settings of a client connection.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name (or IP address) the server's certificate must carry.
    pub server_name: String,
}

/// A connection to a corekv server speaking the native protocol.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Auth token sent in every frame of this handle (frame flag `TOKEN`);
    /// clones made with `with_token` share the connection, not the token.
    token: Option<Arc<str>>,
}

struct Inner {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    write_tx: mpsc::Sender<Vec<u8>>,
    in_flight: Arc<Semaphore>,
    opts: ClientOptions,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends when `write_tx` drops; the reader would otherwise
        // wait on the socket forever.
        self.reader.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.shared.addr)
            .finish()
    }
}

impl Client {
    /// Connects to `addr` (e.g. "127.0.0.1:2379").
    pub async fn connect(addr: &str, opts: ClientOptions) -> Result<Client, WireError> {
        let stream =
            match tokio::time::timeout(opts.dial_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Err(_) => {
                    return Err(WireError::DialTimeout {
                        addr: addr.to_owned(),
                        timeout_ms: opts.dial_timeout.as_millis() as u64,
                    });
                }
                Ok(Err(source)) => {
                    return Err(WireError::Io {
                        operation: "connect",
                        addr: addr.to_owned(),
                        source,
                    });
                }
                Ok(Ok(s)) => s,
            };
        stream.set_nodelay(true).map_err(|source| WireError::Io {
            operation: "set_nodelay",
            addr: addr.to_owned(),
            source,
        })?;
        match &opts.tls {
            None => {
                let (read_half, write_half) = stream.into_split();
                Ok(Self::start(addr, read_half, write_half, opts))
            }
            Some(tls) => {
                let io_err = |source| WireError::Io {
                    operation: "tls handshake",
                    addr: addr.to_owned(),
                    source,
                };
                let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| {
                        io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                    })?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let handshake = connector.connect(name, stream);
                let stream = match tokio::time::timeout(opts.dial_timeout, handshake).await {
                    Ok(s) => s.map_err(io_err)?,
                    Err(_) => {
                        return Err(WireError::DialTimeout {
                            addr: addr.to_owned(),
                            timeout_ms: opts.dial_timeout.as_millis() as u64,
                        });
                    }
                };
                let (read_half, write_half) = tokio::io::split(stream);
                Ok(Self::start(addr, read_half, write_half, opts))
            }
        }
    }

    /// Starts the reader and writer tasks of a connected stream.
    fn start<R, W>(addr: &str, read_half: R, write_half: W, opts: ClientOptions) -> Client
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::new(addr.to_owned()));
        let (write_tx, write_rx) = mpsc::channel(opts.write_queue_frames.max(1));
        tokio::spawn(conn::writer(
            shared.clone(),
            write_half,
            write_rx,
            opts.write_coalesce_bytes,
        ));
        let recv_limits = WireLimits {
            max_frame_bytes: opts.max_response_frame_bytes,
            ..opts.limits.clone()
        };
        let reader = tokio::spawn(conn::reader(
            shared.clone(),
            read_half,
            recv_limits,
            opts.read_chunk_bytes,
        ))
        .abort_handle();
        Client {
            token: None,
            inner: Arc::new(Inner {
                shared,
                next_id: AtomicU64::new(1),
                write_tx,
                in_flight: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
                opts,
                reader,
            }),
        }
    }

    /// A handle on the same connection whose requests carry `token`
    /// (from `authenticate`); `None` sends none.
    #[must_use]
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            inner: self.inner.clone(),
            token: token.map(Arc::from),
        }
    }

    /// The token this handle sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// etcd's Authenticate: a token for `name` (use it with `with_token`).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, WireError> {
        let req = AuthRequest::Authenticate(AuthenticateRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        });
        match self.auth(req).await? {
            AuthResponse::Authenticate(a) => Ok(a.token),
            _ => Err(WireError::UnexpectedResponse {
                operation: "Authenticate",
                got: "another auth response",
            }),
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn timeout_err(&self, request_id: u64, operation: &'static str) -> WireError {
        WireError::Timeout {
            request_id,
            operation,
            timeout_ms: self.inner.opts.request_timeout.as_millis() as u64,
        }
    }

    /// Encodes `req`, refusing locally what the server would refuse by
    /// dropping the connection (a frame over `max_frame_bytes`).
    fn encode(&self, request_id: u64, req: &Request) -> Result<Vec<u8>, WireError> {
        let mut buf = Vec::with_capacity(128);
        match &self.token {
            Some(t) => {
                encode_frame_token(request_id, FrameFlags::NONE, t.as_bytes(), req, &mut buf)?
            }
            None => encode_frame(request_id, req, &mut buf)?,
        }
        if buf.len() > self.inner.opts.limits.max_frame_bytes {
            return Err(WireError::Api(crate::ApiError::RequestTooLarge));
        }
        debug_assert_eq!(buf.len() % FRAME_ALIGN, 0);
        Ok(buf)
    }

    async fn send(&self, buf: Vec<u8>) -> Result<(), WireError> {
        self.inner
            .write_tx
            .send(buf)
            .await
            .map_err(|_| self.inner.shared.closed_error())
    }

    /// Sends one request and waits for its answer. The returned frame owns
    /// the received bytes and exposes the archived response in place. An
    /// `Error` answer is returned as `WireError::Api`.
    pub async fn request(&self, req: &Request) -> Result<ResponseFrame, WireError> {
        let operation = req.name();
        let id = self.next_id();
        let fut = async {
            // The semaphore is never closed.
            let _permit = self
                .inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| self.inner.shared.closed_error())?;
            let buf = self.encode(id, req)?;
            let (tx, rx) = oneshot::channel();
            self.inner.shared.register(id, Route::Unary(tx))?;
            self.send(buf).await?;
            let frame = rx.await.map_err(|_| self.inner.shared.closed_error())?;
            ResponseFrame::new(frame)?.into_result()
        };
        match tokio::time::timeout(self.inner.opts.request_timeout, fut).await {
            Ok(r) => {
                if r.is_err() {
                    self.inner.shared.unregister(id);
                }
                r
            }
            Err(_) => {
                self.inner.shared.unregister(id);
                Err(self.timeout_err(id, operation))
            }
        }
    }

    /// Starts a streamed request (watch create, snapshot) and waits for its
    /// first frame.
    async fn open_stream(
        &self,
        req: &Request,
    ) -> Result<(ResponseStream, ResponseFrame), WireError> {
        let operation = req.name();
        let id = self.next_id();
        let (tx, rx) = mpsc::channel(self.inner.opts.stream_buffer_frames.max(1));
        let buf = self.encode(id, req)?;
        self.inner.shared.register(id, Route::Stream(tx))?;
        let mut stream = ResponseStream::new(self.clone(), id, rx);
        let first = async {
            self.send(buf).await?;
            stream.next_frame().await
        };
        match tokio::time::timeout(self.inner.opts.request_timeout, first).await {
            Ok(Ok(Some(f))) => Ok((stream, f)),
            Ok(Ok(None)) => Err(self.inner.shared.closed_error()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.timeout_err(id, operation)),
        }
    }

    /// Creates a watch. Returns once the server confirmed it (`created`);
    /// events then arrive on the returned stream.
    pub async fn watch(&self, create: WatchCreateRequest) -> Result<WatchStream, WireError> {
        let (stream, first) = self.open_stream(&Request::WatchCreate(create)).await?;
        let first = WatchFrame::new(first).ok_or(WireError::UnexpectedResponse {
            operation: "WatchCreate",
            got: "non-watch response",
        })?;
        WatchStream::new(stream, first)
    }

    /// Streams a snapshot of the backend: frames carry `Response::Snapshot`
    /// chunks, the last with `remaining_bytes == 0`. The first chunk is the
    /// first frame returned by the stream.
    pub async fn snapshot(&self) -> Result<ResponseStream, WireError> {
        let (mut stream, first) = self
            .open_stream(&Request::Snapshot(SnapshotRequest {}))
            .await?;
        stream.push_front(first);
        Ok(stream)
    }

    /// Sends a frame without waiting for (or routing) its answer; used to
    /// cancel a watch from `Drop`. Returns false if the write queue is full.
    fn send_detached(&self, req: &Request) -> bool {
        let id = self.next_id();
        match self.encode(id, req) {
            Ok(buf) => self.inner.write_tx.try_send(buf).is_ok(),
            Err(_) => false,
        }
    }

    fn unregister(&self, id: u64) {
        self.inner.shared.unregister(id);
    }

    fn closed_error(&self) -> WireError {
        self.inner.shared.closed_error()
    }

    async fn call<T>(
        &self,
        req: Request,
        pick: fn(Response) -> Result<T, &'static str>,
    ) -> Result<T, WireError> {
        let operation = req.name();
        let frame = self.request(&req).await?;
        let resp = frame.get().to_owned_response()?;
        pick(resp).map_err(|got| WireError::UnexpectedResponse { operation, got })
    }
}

macro_rules! owned_calls {
    ($($(#[$m:meta])* $fn:ident($req:ty) -> $resp:ty = $variant:ident / $rvariant:ident;)*) => {
        impl Client {
            $(
                $(#[$m])*
                pub async fn $fn(&self, req: $req) -> Result<$resp, WireError> {
                    self.call(Request::$variant(req), |r| match r {
                        Response::$rvariant(x) => Ok(x),
                        other => Err(other.name()),
                    })
                    .await
                }
            )*
        }
    };
}

owned_calls! {
    put(PutRequest) -> PutResponse = Put / Put;
    range(RangeRequest) -> RangeResponse = Range / Range;
    delete_range(DeleteRangeRequest) -> DeleteRangeResponse = DeleteRange / DeleteRange;
    txn(TxnRequest) -> TxnResponse = Txn / Txn;
    compact(CompactionRequest) -> CompactionResponse = Compact / Compact;
    lease_grant(LeaseGrantRequest) -> LeaseGrantResponse = LeaseGrant / LeaseGrant;
    lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse = LeaseRevoke / LeaseRevoke;
    lease_keep_alive(LeaseKeepAliveRequest) -> LeaseKeepAliveResponse = LeaseKeepAlive / LeaseKeepAlive;
    lease_time_to_live(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse = LeaseTimeToLive / LeaseTimeToLive;
    lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse = LeaseLeases / LeaseLeases;
    member_list(MemberListRequest) -> MemberListResponse = MemberList / MemberList;
    member_add(MemberAddRequest) -> MemberAddResponse = MemberAdd / MemberAdd;
    member_remove(MemberRemoveRequest) -> MemberRemoveResponse = MemberRemove / MemberRemove;
    member_update(MemberUpdateRequest) -> MemberUpdateResponse = MemberUpdate / MemberUpdate;
    member_promote(MemberPromoteRequest) -> MemberPromoteResponse = MemberPromote / MemberPromote;
    status(StatusRequest) -> StatusResponse = Status / Status;
    hash_kv(HashKvRequest) -> HashKvResponse = HashKv / HashKv;
    defragment(DefragmentRequest) -> DefragmentResponse = Defragment / Defragment;
    alarm(AlarmRequest) -> AlarmResponse = Alarm / Alarm;
    move_leader(MoveLeaderRequest) -> MoveLeaderResponse = MoveLeader / MoveLeader;
    /// One call of etcd's Auth service.
    auth(AuthRequest) -> AuthResponse = Auth / Auth;
    /// Asks for a progress notification (answered with `watch_id == -1`).
    watch_progress(WatchProgressRequest) -> WatchResponse = WatchProgress / Watch;
}

impl Client {
    /// Linearizable get of one key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, WireError> {
        let resp = self
            .range(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }
}
