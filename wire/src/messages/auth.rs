//! etcd's Auth service (`etcdserverpb.Auth`, `authpb`): users, roles,
//! permissions, enabling auth and authenticating.
//!
//! Every auth call travels as `Request::Auth(AuthRequest)` and is answered
//! with `Response::Auth(AuthResponse)` (or `Response::Error`).

use super::common::ResponseHeader;

wire_default_enums! {
    /// `authpb.Permission.Type`.
    pub enum PermissionType {
        #[default]
        Read,
        Write,
        ReadWrite,
    }
}

wire_structs! {
    /// `authpb.Permission`: access to `[key, range_end)`; an empty
    /// `range_end` is the single key, `range_end == [0]` every key from `key`.
    pub struct Permission {
        pub perm_type: PermissionType,
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
    }

    pub struct AuthenticateRequest {
        pub name: String,
        pub password: String,
    }

    pub struct AuthUserAddRequest {
        pub name: String,
        pub password: String,
        /// `UserAddOptions.no_password`: a user that cannot authenticate with
        /// a password (certificate CN only).
        pub no_password: bool,
        /// bcrypt hash; when set, `password` is ignored (etcd 3.5's field;
        /// the server fills it before the request enters the Raft log, so
        /// plain passwords are never replicated).
        pub hashed_password: String,
    }

    pub struct AuthUserChangePasswordRequest {
        pub name: String,
        pub password: String,
        pub hashed_password: String,
    }

    pub struct AuthUserGrantRoleRequest {
        pub user: String,
        pub role: String,
    }

    pub struct AuthUserRevokeRoleRequest {
        pub name: String,
        pub role: String,
    }

    pub struct AuthRoleGrantPermissionRequest {
        pub name: String,
        pub perm: Permission,
    }

    pub struct AuthRoleRevokePermissionRequest {
        pub role: String,
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
    }

    /// Server-internal (never accepted from a client): assigns a simple
    /// token on every member (etcd's `InternalAuthenticateRequest`). The
    /// password was checked by the member that proposed it.
    pub struct AuthAssignTokenRequest {
        pub name: String,
        pub token: String,
    }

    pub struct AuthStatusResponse {
        pub header: ResponseHeader,
        pub enabled: bool,
        pub auth_revision: u64,
    }

    pub struct AuthenticateResponse {
        pub header: ResponseHeader,
        pub token: String,
    }
}

wire_enums! {
    /// One call of etcd's Auth service. Append new variants at the end.
    pub enum AuthRequest {
        Enable,
        Disable,
        Status,
        Authenticate(AuthenticateRequest),
        UserAdd(AuthUserAddRequest),
        UserGet { name: String },
        UserList,
        UserDelete { name: String },
        UserChangePassword(AuthUserChangePasswordRequest),
        UserGrantRole(AuthUserGrantRoleRequest),
        UserRevokeRole(AuthUserRevokeRoleRequest),
        RoleAdd { name: String },
        RoleGet { role: String },
        RoleList,
        RoleDelete { role: String },
        RoleGrantPermission(AuthRoleGrantPermissionRequest),
        RoleRevokePermission(AuthRoleRevokePermissionRequest),
        AssignToken(AuthAssignTokenRequest),
    }

    /// The answer to an `AuthRequest`. Calls whose etcd response carries
    /// only a header are answered `Done`.
    pub enum AuthResponse {
        Done(ResponseHeader),
        Status(AuthStatusResponse),
        Authenticate(AuthenticateResponse),
        UserGet { header: ResponseHeader, roles: Vec<String> },
        UserList { header: ResponseHeader, users: Vec<String> },
        RoleGet { header: ResponseHeader, perm: Vec<Permission> },
        RoleList { header: ResponseHeader, roles: Vec<String> },
    }
}

impl AuthRequest {
    /// etcd's RPC name, for errors, logs and metrics.
    pub fn rpc_name(&self) -> &'static str {
        match self {
            AuthRequest::Enable => "AuthEnable",
            AuthRequest::Disable => "AuthDisable",
            AuthRequest::Status => "AuthStatus",
            AuthRequest::Authenticate(_) => "Authenticate",
            AuthRequest::UserAdd(_) => "UserAdd",
            AuthRequest::UserGet { .. } => "UserGet",
            AuthRequest::UserList => "UserList",
            AuthRequest::UserDelete { .. } => "UserDelete",
            AuthRequest::UserChangePassword(_) => "UserChangePassword",
            AuthRequest::UserGrantRole(_) => "UserGrantRole",
            AuthRequest::UserRevokeRole(_) => "UserRevokeRole",
            AuthRequest::RoleAdd { .. } => "RoleAdd",
            AuthRequest::RoleGet { .. } => "RoleGet",
            AuthRequest::RoleList => "RoleList",
            AuthRequest::RoleDelete { .. } => "RoleDelete",
            AuthRequest::RoleGrantPermission(_) => "RoleGrantPermission",
            AuthRequest::RoleRevokePermission(_) => "RoleRevokePermission",
            AuthRequest::AssignToken(_) => "AssignToken",
        }
    }
}
