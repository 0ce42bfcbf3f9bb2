//! etcd's authentication and role-based access control.
//!
//! * `state`: users, roles, the enabled flag and the auth revision, and
//!   etcd's rules for changing them (pure).
//! * `perm`: a user's merged key permissions and the range checks (pure).
//! * `check`: which request needs which permission (etcd 3.4's table).
//! * `token`: simple tokens and JWTs.
//!
//! The state lives in the store as one metadata entry (`AUTH_META_KEY`,
//! JSON, written in the same commit as the entry that changed it), so it
//! travels with snapshots and survives restarts. Changes are replicated
//! client requests (`Request::Auth`) applied on every member by the apply
//! loop; every shard reads the current state through `Auth::view`.
//!
//! A request's credentials are checked where it arrives (the serve shard)
//! against the state at that moment; the entry it proposes carries a stamp
//! of that state's revision (`stamp`), and apply refuses the entry if the
//! auth state changed in between (`admit`, etcd's TOCTOU guard, answered
//! `revision of auth store is old`).

pub mod calls;
pub mod check;
pub mod perm;
pub mod state;
pub mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use corekv_storage::{Store, WriteBatch};
use corekv_wire::ApiError;
use corekv_wire::messages as w;

use perm::UserPerms;
use state::{AuthState, Change, Perm, PermType, TokenEffect};
use token::{AuthInfo, TokenKind, Tokens};

/// Store metadata entry holding the encoded `AuthState`.
pub const AUTH_META_KEY: &[u8] = b"auth.state";
/// Largest encoded auth state; a change that would exceed it is refused
/// with `request is too large` (bounds users x roles x permissions).
pub const MAX_AUTH_STATE_BYTES: usize = 1 << 20;
/// etcd's `--bcrypt-cost` bounds (Go's bcrypt.MinCost / MaxCost).
pub const BCRYPT_MIN_COST: u32 = 4;
pub const BCRYPT_MAX_COST: u32 = 31;
/// etcd's default `--bcrypt-cost` (Go's bcrypt.DefaultCost).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Whether an auth call changes the state (a replicated entry). Reads are
/// answered by the member that got them; Authenticate checks the password
/// where it arrives and then proposes `AssignToken` (simple tokens).
pub fn replicated(a: &w::ArchivedAuthRequest) -> bool {
    use w::ArchivedAuthRequest as A;
    match a {
        A::Enable
        | A::Disable
        | A::UserAdd(_)
        | A::UserDelete { .. }
        | A::UserChangePassword(_)
        | A::UserGrantRole(_)
        | A::UserRevokeRole(_)
        | A::RoleAdd { .. }
        | A::RoleDelete { .. }
        | A::RoleGrantPermission(_)
        | A::RoleRevokePermission(_)
        | A::AssignToken(_) => true,
        A::Status
        | A::Authenticate(_)
        | A::UserGet { .. }
        | A::UserList
        | A::RoleGet { .. }
        | A::RoleList => false,
    }
}

/// One auth state with every user's permissions merged.
pub struct AuthView {
    pub state: AuthState,
    perms: HashMap<String, UserPerms>,
}

impl AuthView {
    pub fn new(state: AuthState) -> AuthView {
        let perms = state
            .users
            .keys()
            .filter_map(|u| UserPerms::of(&state, u).map(|p| (u.clone(), p)))
            .collect();
        AuthView { state, perms }
    }

    pub fn user_perms(&self, user: &str) -> Option<&UserPerms> {
        self.perms.get(user)
    }
}

pub struct Auth {
    view: RwLock<Arc<AuthView>>,
    /// Mirrors `view.state.enabled` for the hot path.
    enabled: AtomicBool,
    pub tokens: Tokens,
    bcrypt_cost: u32,
}

impl Default for Auth {
    /// etcd's defaults: simple tokens with a 300 s TTL, bcrypt cost 10.
    fn default() -> Auth {
        let kind = TokenKind::Simple {
            ttl: std::time::Duration::from_secs(300),
        };
        Auth {
            view: RwLock::new(Arc::new(AuthView::new(AuthState::default()))),
            enabled: AtomicBool::new(false),
            tokens: Tokens::new(kind),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.enabled())
            .field("simple_tokens", &self.tokens.is_simple())
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(kind: TokenKind, bcrypt_cost: u32) -> Result<Auth, String> {
        if !(BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {bcrypt_cost} is out of range [{BCRYPT_MIN_COST}, {BCRYPT_MAX_COST}]"
            ));
        }
        Ok(Auth {
            tokens: Tokens::new(kind),
            bcrypt_cost,
            ..Auth::default()
        })
    }

    /// Reads the state from the store (start-up, or a snapshot installed).
    /// Issued simple tokens are dropped: they were valid for the old state.
    pub fn load(&self, store: &Store) -> Result<(), String> {
        let view = store.read().map_err(|e| format!("auth state: {e}"))?;
        let state = match view.get_meta(AUTH_META_KEY) {
            Some(bytes) => AuthState::decode(&bytes)?,
            None => AuthState::default(),
        };
        self.tokens.drop_all();
        self.publish(state);
        Ok(())
    }

    fn publish(&self, state: AuthState) {
        self.enabled.store(state.enabled, Ordering::Release);
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(AuthView::new(state));
    }

    pub fn view(&self) -> Arc<AuthView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The caller of a request, checked against `view`: its token resolved
    /// (`None` when it sent none), or `cn`, the client certificate's common
    /// name under `--client-cert-auth`, valid at the current revision. With
    /// auth disabled credentials are ignored.
    pub fn who_at(
        &self,
        view: &AuthView,
        token: Option<&[u8]>,
        cn: Option<&str>,
    ) -> Result<Option<AuthInfo>, ApiError> {
        if !view.state.enabled {
            return Ok(None);
        }
        let revision = view.state.revision;
        match (token, cn) {
            (Some(t), _) => {
                let t = std::str::from_utf8(t).map_err(|_| ApiError::InvalidAuthToken)?;
                self.tokens.resolve(t, revision, Instant::now()).map(Some)
            }
            (None, Some(cn)) if !cn.is_empty() => Ok(Some(AuthInfo {
                user: cn.to_owned(),
                revision,
            })),
            (None, _) => Ok(None),
        }
    }

    /// The stamp an entry carries to apply: 0 when auth was disabled at the
    /// check, else the checked revision + 1.
    pub fn stamp(view: &AuthView) -> u64 {
        if view.state.enabled {
            view.state.revision + 1
        } else {
            0
        }
    }

    /// Apply-time guard for a replicated client request checked with
    /// `stamp`: with auth enabled now, the check must have been made with
    /// auth enabled and at the current revision. `AssignToken` was checked
    /// by password, not by stamp (etcd's Authenticate has no such guard).
    pub fn admit(&self, req: &w::ArchivedRequest, stamp: u64) -> Result<(), ApiError> {
        if matches!(
            req,
            w::ArchivedRequest::Auth(w::ArchivedAuthRequest::AssignToken(_))
        ) {
            return Ok(());
        }
        self.admit_stamp(stamp)
    }

    /// Whether a check made with `stamp` still holds: auth disabled now, or
    /// enabled then and at the current revision. Also what a linearizable
    /// read re-checks after its read barrier (a lagging member may have
    /// checked against an older auth state; etcd's doSerialize compares the
    /// revision the same way).
    pub fn admit_stamp(&self, stamp: u64) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let revision = self.view().state.revision;
        match stamp {
            0 => Err(ApiError::UserEmpty),
            s if s - 1 < revision => Err(ApiError::AuthOldRevision),
            _ => Ok(()),
        }
    }

    /// etcd's CheckPassword (bcrypt: call it off the reactor).
    pub fn check_password(&self, name: &str, password: &str) -> Result<u64, ApiError> {
        let view = self.view();
        if !view.state.enabled {
            return Err(ApiError::AuthNotEnabled);
        }
        let user = view.state.users.get(name).ok_or(ApiError::AuthFailed)?;
        if user.no_password {
            return Err(ApiError::AuthFailed);
        }
        match bcrypt::verify(password, &user.password_hash) {
            Ok(true) => Ok(view.state.revision),
            _ => Err(ApiError::AuthFailed),
        }
    }

    /// bcrypt hash at `--bcrypt-cost` (call it off the reactor).
    pub fn hash_password(&self, password: &str) -> Result<String, ApiError> {
        bcrypt::hash(password, self.bcrypt_cost)
            .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
    }

    /// Answers the auth calls that only read the state (on any member,
    /// after a read barrier): AuthStatus, UserGet/List, RoleGet/List.
    /// `None` for calls that change it.
    pub fn read(
        &self,
        req: &w::ArchivedAuthRequest,
        header: w::ResponseHeader,
    ) -> Option<Result<w::AuthResponse, ApiError>> {
        use w::ArchivedAuthRequest as A;
        let view = self.view();
        let s = &view.state;
        Some(Ok(match req {
            A::Status => w::AuthResponse::Status(w::AuthStatusResponse {
                header,
                enabled: s.enabled,
                auth_revision: s.revision,
            }),
            A::UserGet { name } => match s.user_roles(name) {
                Ok(roles) => w::AuthResponse::UserGet { header, roles },
                Err(e) => return Some(Err(e)),
            },
            A::UserList => w::AuthResponse::UserList {
                header,
                users: s.users.keys().cloned().collect(),
            },
            A::RoleGet { role } => match s.role_perms(role) {
                Ok(perm) => w::AuthResponse::RoleGet { header, perm },
                Err(e) => return Some(Err(e)),
            },
            A::RoleList => w::AuthResponse::RoleList {
                header,
                roles: s.roles.keys().cloned().collect(),
            },
            A::Enable
            | A::Disable
            | A::Authenticate(_)
            | A::UserAdd(_)
            | A::UserDelete { .. }
            | A::UserChangePassword(_)
            | A::UserGrantRole(_)
            | A::UserRevokeRole(_)
            | A::RoleAdd { .. }
            | A::RoleDelete { .. }
            | A::RoleGrantPermission(_)
            | A::RoleRevokePermission(_)
            | A::AssignToken(_) => return None,
        }))
    }

    /// Applies a replicated auth request (apply loop, every member): the
    /// new state is written to `batch` and published.
    pub fn apply(
        &self,
        batch: &mut WriteBatch<'_>,
        req: &w::ArchivedAuthRequest,
        index: u64,
        header: w::ResponseHeader,
    ) -> Result<w::AuthResponse, ApiError> {
        use w::ArchivedAuthRequest as A;
        let change = match req {
            A::Enable => Change::Enable,
            A::Disable => Change::Disable,
            A::UserAdd(u) => Change::UserAdd {
                name: &u.name,
                hash: &u.hashed_password,
                no_password: u.no_password,
            },
            A::UserDelete { name } => Change::UserDelete(name),
            A::UserChangePassword(c) => Change::UserChangePassword {
                name: &c.name,
                hash: &c.hashed_password,
            },
            A::UserGrantRole(g) => Change::UserGrantRole {
                user: &g.user,
                role: &g.role,
            },
            A::UserRevokeRole(r) => Change::UserRevokeRole {
                user: &r.name,
                role: &r.role,
            },
            A::RoleAdd { name } => Change::RoleAdd(name),
            A::RoleDelete { role } => Change::RoleDelete(role),
            A::RoleGrantPermission(g) => Change::RoleGrantPermission {
                role: &g.name,
                perm: Perm {
                    perm_type: PermType::from_wire(&g.perm.perm_type),
                    key: g.perm.key.to_vec(),
                    range_end: g.perm.range_end.to_vec(),
                },
            },
            A::RoleRevokePermission(r) => Change::RoleRevokePermission {
                role: &r.role,
                key: &r.key,
                range_end: &r.range_end,
            },
            A::AssignToken(t) => return self.assign_token(&t.name, &t.token, index, header),
            A::Status | A::UserGet { .. } | A::UserList | A::RoleGet { .. } | A::RoleList => {
                return self
                    .read(req, header)
                    .unwrap_or_else(|| Err(ApiError::Internal("auth read".into())));
            }
            A::Authenticate(_) => {
                return Err(ApiError::MalformedRequest(
                    "Authenticate is not a replicated request".into(),
                ));
            }
        };
        let mut state = self.view().state.clone();
        let before = state.revision;
        let effect = state.apply(&change)?;
        if state.revision != before || state.enabled != self.enabled() {
            let bytes = state.encode();
            if bytes.len() > MAX_AUTH_STATE_BYTES {
                return Err(ApiError::RequestTooLarge);
            }
            batch.put_meta(AUTH_META_KEY, &bytes);
            match effect {
                TokenEffect::None => {}
                TokenEffect::DropUser(u) => self.tokens.drop_user(&u),
                TokenEffect::DropAll => self.tokens.drop_all(),
            }
            self.publish(state);
        }
        Ok(w::AuthResponse::Done(header))
    }

    /// etcd's apply of InternalAuthenticate: the token is `<prefix>.<index>`.
    fn assign_token(
        &self,
        name: &str,
        prefix: &str,
        index: u64,
        header: w::ResponseHeader,
    ) -> Result<w::AuthResponse, ApiError> {
        let view = self.view();
        if !view.state.enabled {
            return Err(ApiError::AuthNotEnabled);
        }
        if !view.state.users.contains_key(name) {
            return Err(ApiError::AuthFailed);
        }
        let token = format!("{prefix}.{index}");
        self.tokens
            .assign_simple(token.clone(), name, Instant::now());
        Ok(w::AuthResponse::Authenticate(w::AuthenticateResponse {
            header,
            token,
        }))
    }
}
