//! What a front-end's request layer calls for auth: `gate`, the one check
//! every request passes (credentials, then etcd's permission table), and
//! `call`, the Auth service calls that need more than a proposal:
//! Authenticate (password check on the blocking pool, then a replicated
//! simple token or a signed JWT), UserAdd / UserChangePassword (the
//! password is hashed before the request enters the Raft log, so plain
//! passwords are never replicated or stored) and the reads (after a read
//! barrier, as etcd serves them linearizably through Raft).

use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};

use super::check;
use super::token::{AuthInfo, Tokens};
use super::{Auth, replicated};
use crate::node::Shared;

/// What `gate` let through: the auth stamp the request's entry carries to
/// apply (`Auth::admit`), and what the request still needs from its caller
/// once more is known (the keys of a lease, at apply or in the leader's
/// answer).
#[derive(Debug, Default)]
pub struct Admitted {
    pub stamp: u64,
    /// Set for a `LeaseRevoke`, or a `Put` naming a lease, under auth:
    /// proposed as this instead (`LeaseRevokeAs`, `PutAs`), so every member
    /// checks the lease's keys against the caller at apply.
    rewrite: Option<w::Request>,
    /// Set for a `LeaseTimeToLive` with `keys` under auth: the caller, who
    /// must be known and may read every key in the answer.
    ttl_keys: Option<Option<AuthInfo>>,
    /// Set for a range under auth: the caller's credentials, so a
    /// linearizable read whose auth state moved during its read barrier is
    /// checked again at the state it read at (etcd resolves the token and
    /// checks the range after its ReadIndex), not refused as old.
    credentials: Option<Credentials>,
}

#[derive(Debug)]
struct Credentials {
    token: Option<Vec<u8>>,
    cn: Option<String>,
}

impl Admitted {
    /// The frame to propose for a write that passed the gate: tagged with
    /// its stamp; under auth, a lease revoke or a put with a lease
    /// re-encoded with its caller.
    pub fn proposal(&self, frame: OwnedFrame) -> Result<OwnedFrame, ApiError> {
        match &self.rewrite {
            None => Ok(frame.with_tag(self.stamp)),
            Some(r) => frame_of(r, self.stamp),
        }
    }

    /// Checks an answer that carries what the request's permission depends
    /// on: the keys of a time-to-live, then that the auth state did not move
    /// since the gate (etcd: `revision of auth store is old`).
    pub fn check_answer(
        &self,
        auth: &Auth,
        result: &Result<w::Response, ApiError>,
    ) -> Result<(), ApiError> {
        let Some(who) = &self.ttl_keys else {
            return Ok(());
        };
        let view = auth.view();
        let keys = match result {
            Ok(w::Response::LeaseTimeToLive(t)) => &t.keys[..],
            _ => &[],
        };
        check::lease_ttl_keys_permitted(&view, who.as_ref(), keys.iter().map(Vec::as_slice))?;
        auth.admit_stamp(self.stamp)
    }

    /// Whether a linearizable read of `key..end` that passed its read
    /// barrier may be answered: the gate's check still holds, or, when the
    /// auth state moved meanwhile, the caller's credentials and permission
    /// hold at the state now (at least as new as the data read), so a token
    /// ended by the move is `invalid auth token` and a revoked permission
    /// `permission denied`, as etcd answers them.
    pub fn recheck_read(&self, auth: &Auth, key: &[u8], end: &[u8]) -> Result<(), ApiError> {
        match (auth.admit_stamp(self.stamp), &self.credentials) {
            (Err(ApiError::AuthOldRevision), Some(c)) => {
                let view = auth.view();
                let who = auth.who_at(&view, c.token.as_deref(), c.cn.as_deref())?;
                check::range_op(&view, who.as_ref(), key, end)
            }
            (result, _) => result,
        }
    }
}

/// Checks one validated request. `token` is the caller's token (frame flag
/// or gRPC metadata `token`), `cn` the verified client certificate's common
/// name under `--client-cert-auth`.
pub fn gate(
    auth: &Auth,
    token: Option<&[u8]>,
    cn: Option<&str>,
    req: &w::ArchivedRequest,
) -> Result<Admitted, ApiError> {
    use w::ArchivedRequest as R;
    if !auth.enabled() && !matches!(req, R::Auth(_) | R::LeaseRevokeAs(_) | R::PutAs(_)) {
        // The hot path with auth off: one atomic load. A request that races
        // with AuthEnable carries stamp 0 and is refused at apply.
        return Ok(Admitted::default());
    }
    let view = auth.view();
    let who = auth.who_at(&view, token, cn)?;
    check::request_permitted(&view, who.as_ref(), req)?;
    let mut admitted = Admitted {
        stamp: Auth::stamp(&view),
        ..Admitted::default()
    };
    if view.state.enabled {
        let user = || who.as_ref().map(|w| w.user.clone()).unwrap_or_default();
        let auth_revision = who.as_ref().map_or(0, |w| w.revision);
        match req {
            R::LeaseRevoke(r) => {
                admitted.rewrite = Some(w::Request::LeaseRevokeAs(w::LeaseRevokeAsRequest {
                    id: r.id.to_native(),
                    user: user(),
                    auth_revision,
                }));
            }
            R::Put(p) if p.lease != 0 => {
                let put = rkyv::deserialize::<w::PutRequest, rkyv::rancor::Error>(p)
                    .map_err(|e| ApiError::MalformedRequest(e.to_string()))?;
                admitted.rewrite = Some(w::Request::PutAs(w::PutAsRequest {
                    put,
                    user: user(),
                    auth_revision,
                }));
            }
            R::LeaseTimeToLive(t) if t.keys => admitted.ttl_keys = Some(who),
            R::Range(_) => {
                admitted.credentials = Some(Credentials {
                    token: token.map(<[u8]>::to_vec),
                    cn: cn.map(str::to_owned),
                })
            }
            _ => {}
        }
    }
    Ok(admitted)
}

/// The answer to a request `gate` refused: the error, except for a watch,
/// which etcd creates and cancels at once with the reason (watch id -1, as
/// the gRPC front-end's other refusals).
pub fn refusal(
    shared: &Shared,
    req: &w::ArchivedRequest,
    err: ApiError,
) -> Result<w::Response, ApiError> {
    match req {
        w::ArchivedRequest::WatchCreate(_) => Ok(w::Response::Watch(w::WatchResponse {
            header: shared.header(shared.store().current_revision()),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: err.message().to_owned(),
            ..Default::default()
        })),
        _ => Err(err),
    }
}

fn frame_of(req: &w::Request, tag: u64) -> Result<OwnedFrame, ApiError> {
    OwnedFrame::encode_request(0, req)
        .map(|f| f.with_tag(tag))
        .map_err(|e| ApiError::Internal(format!("encoding {}: {e}", req.name())))
}

/// Runs `f` on glommio's blocking pool (bcrypt takes milliseconds).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    glommio::executor().spawn_blocking(f).await
}

/// One Auth service call (`frame` holds a `Request::Auth` that passed
/// `gate`, tagged with its stamp). `propose` sends a frame to the Raft core
/// and waits for its answer; `barrier` is a linearizable read point.
pub async fn call<P, B>(
    shared: &Shared,
    frame: OwnedFrame,
    propose: P,
    barrier: B,
) -> Result<w::Response, ApiError>
where
    P: AsyncFnOnce(OwnedFrame) -> Result<w::Response, ApiError>,
    B: AsyncFnOnce() -> Result<(), ApiError>,
{
    use w::ArchivedAuthRequest as A;
    let auth: &Arc<Auth> = &shared.auth;
    let tag = frame.tag();
    let req = match frame.access::<w::Request>() {
        Ok(w::ArchivedRequest::Auth(a)) => a,
        Ok(other) => {
            return Err(ApiError::MalformedRequest(format!(
                "{} is not an auth call",
                other.name()
            )));
        }
        Err(e) => return Err(ApiError::MalformedRequest(e.to_string())),
    };
    let header = || shared.header(shared.store().current_revision());
    match req {
        A::Authenticate(a) => {
            // As etcd: the password is checked against state at least as
            // new as every write committed before the call.
            barrier().await?;
            let (name, password) = (a.name.to_string(), a.password.to_string());
            let checker = auth.clone();
            let user = name.clone();
            let revision = blocking(move || checker.check_password(&user, &password)).await?;
            if auth.tokens.is_simple() {
                let assign =
                    w::Request::Auth(w::AuthRequest::AssignToken(w::AuthAssignTokenRequest {
                        name,
                        token: Tokens::simple_prefix(),
                    }));
                propose(frame_of(&assign, tag)?).await
            } else {
                let token = auth.tokens.sign_jwt(&name, revision)?;
                Ok(w::Response::Auth(w::AuthResponse::Authenticate(
                    w::AuthenticateResponse {
                        header: header(),
                        token,
                    },
                )))
            }
        }
        A::UserAdd(u) if !u.no_password && u.hashed_password.is_empty() => {
            let (hasher, password) = (auth.clone(), u.password.to_string());
            let hash = blocking(move || hasher.hash_password(&password)).await?;
            let add = w::Request::Auth(w::AuthRequest::UserAdd(w::AuthUserAddRequest {
                name: u.name.to_string(),
                password: String::new(),
                no_password: false,
                hashed_password: hash,
            }));
            propose(frame_of(&add, tag)?).await
        }
        A::UserChangePassword(c) if c.hashed_password.is_empty() => {
            let (hasher, password) = (auth.clone(), c.password.to_string());
            let hash = blocking(move || hasher.hash_password(&password)).await?;
            let change = w::Request::Auth(w::AuthRequest::UserChangePassword(
                w::AuthUserChangePasswordRequest {
                    name: c.name.to_string(),
                    password: String::new(),
                    hashed_password: hash,
                },
            ));
            propose(frame_of(&change, tag)?).await
        }
        a if replicated(a) => propose(frame).await,
        a => {
            barrier().await?;
            // Checked before the barrier, maybe against an older state.
            auth.admit_stamp(tag)?;
            match auth.read(a, header()) {
                Some(r) => r.map(w::Response::Auth),
                None => Err(ApiError::Internal(format!(
                    "auth call {} has no route",
                    req_name(a)
                ))),
            }
        }
    }
}

fn req_name(a: &w::ArchivedAuthRequest) -> &'static str {
    match rkyv::deserialize::<w::AuthRequest, rkyv::rancor::Error>(a) {
        Ok(r) => r.rpc_name(),
        Err(_) => "?",
    }
}
