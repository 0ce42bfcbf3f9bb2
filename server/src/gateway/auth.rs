//! etcdserverpb.Auth: proto <-> `Request::Auth`, through the request layer
//! (`node::auth::calls` does the work: password checks, hashing, tokens).

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::authpb;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;

use super::{call, convert};
use crate::node::route::Api;

async fn auth(api: &Api, req: w::AuthRequest) -> Result<w::AuthResponse, Status> {
    match call(api, w::Request::Auth(req)).await? {
        w::Response::Auth(r) => Ok(r),
        other => Err(super::unexpected("Auth", &other)),
    }
}

/// The header of an answer that carries only a header.
async fn done(api: &Api, req: w::AuthRequest) -> Result<Option<pb::ResponseHeader>, Status> {
    match auth(api, req).await? {
        w::AuthResponse::Done(h) => Ok(convert::header(h)),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(got: &w::AuthResponse) -> Status {
    Status::internal(format!("corekv: unexpected auth answer {got:?}"))
}

fn perm_type(t: i32) -> Result<w::PermissionType, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(w::PermissionType::Read),
        Ok(authpb::permission::Type::Write) => Ok(w::PermissionType::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(w::PermissionType::ReadWrite),
        Err(_) => Err(Status::invalid_argument(format!(
            "corekv: unknown permission type {t}"
        ))),
    }
}

fn perm_to_pb(p: w::Permission) -> authpb::Permission {
    let t = match p.perm_type {
        w::PermissionType::Read => authpb::permission::Type::Read,
        w::PermissionType::Write => authpb::permission::Type::Write,
        w::PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.key.into(),
        range_end: p.range_end.into(),
    }
}

macro_rules! header_only {
    ($($fn:ident($req:ty) -> $resp:ident = |$r:ident| $native:expr;)*) => {$(
        pub async fn $fn(api: Rc<Api>, $r: $req) -> Result<pb::$resp, Status> {
            Ok(pb::$resp { header: done(&api, $native).await? })
        }
    )*};
}

header_only! {
    auth_enable(pb::AuthEnableRequest) -> AuthEnableResponse = |_r| w::AuthRequest::Enable;
    auth_disable(pb::AuthDisableRequest) -> AuthDisableResponse = |_r| w::AuthRequest::Disable;
    user_add(pb::AuthUserAddRequest) -> AuthUserAddResponse = |r| w::AuthRequest::UserAdd(w::AuthUserAddRequest {
        name: r.name,
        password: r.password,
        no_password: r.options.is_some_and(|o| o.no_password),
        hashed_password: r.hashed_password,
    });
    user_delete(pb::AuthUserDeleteRequest) -> AuthUserDeleteResponse = |r| w::AuthRequest::UserDelete { name: r.name };
    user_change_password(pb::AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse = |r| {
        w::AuthRequest::UserChangePassword(w::AuthUserChangePasswordRequest {
            name: r.name,
            password: r.password,
            hashed_password: r.hashed_password,
        })
    };
    user_grant_role(pb::AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse = |r| {
        w::AuthRequest::UserGrantRole(w::AuthUserGrantRoleRequest { user: r.user, role: r.role })
    };
    user_revoke_role(pb::AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse = |r| {
        w::AuthRequest::UserRevokeRole(w::AuthUserRevokeRoleRequest { name: r.name, role: r.role })
    };
    role_add(pb::AuthRoleAddRequest) -> AuthRoleAddResponse = |r| w::AuthRequest::RoleAdd { name: r.name };
    role_delete(pb::AuthRoleDeleteRequest) -> AuthRoleDeleteResponse = |r| w::AuthRequest::RoleDelete { role: r.role };
    role_revoke_permission(pb::AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse = |r| {
        w::AuthRequest::RoleRevokePermission(w::AuthRoleRevokePermissionRequest {
            role: r.role,
            key: r.key.to_vec(),
            range_end: r.range_end.to_vec(),
        })
    };
}

pub async fn role_grant_permission(
    api: Rc<Api>,
    r: pb::AuthRoleGrantPermissionRequest,
) -> Result<pb::AuthRoleGrantPermissionResponse, Status> {
    let p = r.perm.unwrap_or_default();
    let req = w::AuthRequest::RoleGrantPermission(w::AuthRoleGrantPermissionRequest {
        name: r.name,
        perm: w::Permission {
            perm_type: perm_type(p.perm_type)?,
            key: p.key.to_vec(),
            range_end: p.range_end.to_vec(),
        },
    });
    Ok(pb::AuthRoleGrantPermissionResponse {
        header: done(&api, req).await?,
    })
}

pub async fn auth_status(
    api: Rc<Api>,
    _r: pb::AuthStatusRequest,
) -> Result<pb::AuthStatusResponse, Status> {
    match auth(&api, w::AuthRequest::Status).await? {
        w::AuthResponse::Status(s) => Ok(pb::AuthStatusResponse {
            header: convert::header(s.header),
            enabled: s.enabled,
            auth_revision: s.auth_revision,
        }),
        other => Err(unexpected(&other)),
    }
}

pub async fn authenticate(
    api: Rc<Api>,
    r: pb::AuthenticateRequest,
) -> Result<pb::AuthenticateResponse, Status> {
    let req = w::AuthRequest::Authenticate(w::AuthenticateRequest {
        name: r.name,
        password: r.password,
    });
    match auth(&api, req).await? {
        w::AuthResponse::Authenticate(a) => Ok(pb::AuthenticateResponse {
            header: convert::header(a.header),
            token: a.token,
        }),
        other => Err(unexpected(&other)),
    }
}

pub async fn user_get(
    api: Rc<Api>,
    r: pb::AuthUserGetRequest,
) -> Result<pb::AuthUserGetResponse, Status> {
    match auth(&api, w::AuthRequest::UserGet { name: r.name }).await? {
        w::AuthResponse::UserGet { header, roles } => Ok(pb::AuthUserGetResponse {
            header: convert::header(header),
            roles,
        }),
        other => Err(unexpected(&other)),
    }
}

pub async fn user_list(
    api: Rc<Api>,
    _r: pb::AuthUserListRequest,
) -> Result<pb::AuthUserListResponse, Status> {
    match auth(&api, w::AuthRequest::UserList).await? {
        w::AuthResponse::UserList { header, users } => Ok(pb::AuthUserListResponse {
            header: convert::header(header),
            users,
        }),
        other => Err(unexpected(&other)),
    }
}

pub async fn role_get(
    api: Rc<Api>,
    r: pb::AuthRoleGetRequest,
) -> Result<pb::AuthRoleGetResponse, Status> {
    match auth(&api, w::AuthRequest::RoleGet { role: r.role }).await? {
        w::AuthResponse::RoleGet { header, perm } => Ok(pb::AuthRoleGetResponse {
            header: convert::header(header),
            perm: perm.into_iter().map(perm_to_pb).collect(),
        }),
        other => Err(unexpected(&other)),
    }
}

pub async fn role_list(
    api: Rc<Api>,
    _r: pb::AuthRoleListRequest,
) -> Result<pb::AuthRoleListResponse, Status> {
    match auth(&api, w::AuthRequest::RoleList).await? {
        w::AuthResponse::RoleList { header, roles } => Ok(pb::AuthRoleListResponse {
            header: convert::header(header),
            roles,
        }),
        other => Err(unexpected(&other)),
    }
}
