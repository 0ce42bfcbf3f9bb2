//! etcd's API error kinds, one-to-one, with etcd's exact messages and gRPC
//! codes (etcd 3.4 `rpctypes`). They travel inside `Response::Error`.

use rkyv::{Archive, Deserialize, Serialize};

/// Defines `ApiError` from one list of (kind, etcd message), so the enum,
/// `message()` and `all_kinds()` cannot drift apart. Variant order is the
/// archived discriminant order: append new kinds at the end of the list.
macro_rules! api_errors {
    ($($(#[$doc:meta])* $kind:ident $({ $field:ident: $ty:ty })? => $msg:literal,)*) => {
        /// An error answered by the server for one request. Clients (and the gRPC
        /// gateway) match on `message()` and `grpc_code()`, exactly like etcd's.
        #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
        #[rkyv(derive(Debug, PartialEq, Eq))]
        #[non_exhaustive]
        pub enum ApiError {
            $($(#[$doc])* $kind $({ $field: $ty })?,)*
            /// corekv-only: a native request whose structure cannot come from any
            /// etcd request (e.g. a nested-txn index that does not form a tree).
            MalformedRequest(String),
            /// Catch-all for server-side failures with no etcd equivalent.
            Internal(String),
        }

        impl ApiError {
            /// etcd's exact error text ("etcdserver: ...").
            #[allow(clippy::unneeded_struct_pattern)]
            pub fn message(&self) -> &str {
                match self {
                    $(ApiError::$kind { .. } => $msg,)*
                    ApiError::MalformedRequest(m) | ApiError::Internal(m) => m,
                }
            }

            /// Every fixed-message kind, for tests and for mapping etcd messages
            /// back (`from_message`). Kinds carrying data get default data.
            pub fn all_kinds() -> Vec<ApiError> {
                vec![$(ApiError::$kind $({ $field: <$ty>::default() })?,)*]
            }
        }
    };
}

api_errors! {
    EmptyKey => "etcdserver: key is not provided",
    KeyNotFound => "etcdserver: key not found",
    ValueProvided => "etcdserver: value is provided",
    LeaseProvided => "etcdserver: lease is provided",
    TooManyOps => "etcdserver: too many operations in txn request",
    DuplicateKey => "etcdserver: duplicate key given in txn request",
    InvalidSortOption => "etcdserver: invalid sort option",
    Compacted => "etcdserver: mvcc: required revision has been compacted",
    FutureRev => "etcdserver: mvcc: required revision is a future revision",
    NoSpace => "etcdserver: mvcc: database space exceeded",
    LeaseNotFound => "etcdserver: requested lease not found",
    LeaseExist => "etcdserver: lease already exists",
    LeaseTtlTooLarge => "etcdserver: too large lease TTL",
    MemberExist => "etcdserver: member ID already exist",
    PeerUrlExist => "etcdserver: Peer URLs already exists",
    MemberNotEnoughStarted => "etcdserver: re-configuration failed due to not enough started members",
    MemberBadUrls => "etcdserver: given member URLs are invalid",
    MemberNotFound => "etcdserver: member not found",
    MemberNotLearner => "etcdserver: can only promote a learner member",
    LearnerNotReady => "etcdserver: can only promote a learner member which is in sync with leader",
    TooManyLearners => "etcdserver: too many learner members in cluster",
    RequestTooLarge => "etcdserver: request is too large",
    TooManyRequests => "etcdserver: too many requests",
    RootUserNotExist => "etcdserver: root user does not exist",
    RootRoleNotExist => "etcdserver: root user does not have root role",
    UserAlreadyExist => "etcdserver: user name already exists",
    UserEmpty => "etcdserver: user name is empty",
    UserNotFound => "etcdserver: user name not found",
    RoleAlreadyExist => "etcdserver: role name already exists",
    RoleNotFound => "etcdserver: role name not found",
    RoleEmpty => "etcdserver: role name is empty",
    AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
    PermissionDenied => "etcdserver: permission denied",
    RoleNotGranted => "etcdserver: role is not granted to the user",
    PermissionNotGranted => "etcdserver: permission is not granted to the role",
    AuthNotEnabled => "etcdserver: authentication is not enabled",
    InvalidAuthToken => "etcdserver: invalid auth token",
    InvalidAuthMgmt => "etcdserver: invalid auth management",
    NoLeader => "etcdserver: no leader",
    /// This member is not the leader; `leader_hint` is the leader's member id
    /// when known (0 = unknown). The hint is a corekv addition.
    NotLeader { leader_hint: u64 } => "etcdserver: not leader",
    LeaderChanged => "etcdserver: leader changed",
    NotCapable => "etcdserver: not capable",
    Stopped => "etcdserver: server stopped",
    Timeout => "etcdserver: request timed out",
    TimeoutDueToLeaderFail => "etcdserver: request timed out, possibly due to previous leader failure",
    TimeoutDueToConnectionLost => "etcdserver: request timed out, possibly due to connection lost",
    Unhealthy => "etcdserver: unhealthy cluster",
    Corrupt => "etcdserver: corrupt cluster",
    NotSupportedForLearner => "etcdserver: rpc not supported for learner",
    BadLeaderTransferee => "etcdserver: bad leader transferee",
    /// The auth state changed after the request's credentials were checked
    /// (clients authenticate again and retry).
    AuthOldRevision => "etcdserver: revision of auth store is old",
    /// etcd 3.4's maintenance service (HashKV, Defragment, Snapshot) answers
    /// its admin check with the auth package's own errors, gRPC code Unknown.
    AuthRawUserEmpty => "auth: user name is empty",
    AuthRawUserNotFound => "auth: user name not found",
    AuthRawPermissionDenied => "auth: permission denied",
}

impl ApiError {
    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> tonic::Code {
        use ApiError::*;
        use tonic::Code;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | MemberBadUrls | RequestTooLarge | UserEmpty | RoleEmpty
            | AuthFailed | InvalidAuthMgmt | AuthOldRevision | MalformedRequest(_) => {
                Code::InvalidArgument
            }
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | RootUserNotExist
            | RootRoleNotExist
            | UserAlreadyExist
            | UserNotFound
            | RoleAlreadyExist
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled
            | NotLeader { .. }
            | BadLeaderTransferee => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoLeader
            | LeaderChanged
            | NotCapable
            | Stopped
            | Timeout
            | TimeoutDueToLeaderFail
            | TimeoutDueToConnectionLost
            | Unhealthy
            | NotSupportedForLearner => Code::Unavailable,
            Corrupt => Code::DataLoss,
            AuthRawUserEmpty | AuthRawUserNotFound | AuthRawPermissionDenied => Code::Unknown,
            Internal(_) => Code::Internal,
        }
    }

    /// Maps one of etcd's exact messages back to its kind (for a gateway in
    /// front of real etcd, or clients reading gRPC statuses). Unknown text
    /// becomes `Internal`.
    pub fn from_message(message: &str) -> ApiError {
        Self::all_kinds()
            .into_iter()
            .find(|k| k.message() == message)
            .unwrap_or_else(|| ApiError::Internal(message.to_owned()))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ApiError {}

impl ArchivedApiError {
    /// Owned copy (the archived form holds at most one string).
    pub fn to_owned_error(&self) -> ApiError {
        match rkyv::deserialize::<ApiError, rkyv::rancor::Error>(self) {
            Ok(e) => e,
            // Deserializing an already-validated archive of plain enums and
            // strings cannot fail.
            Err(e) => ApiError::Internal(format!("deserializing error: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_etcds_and_distinct() {
        let kinds = ApiError::all_kinds();
        let mut seen = std::collections::HashSet::new();
        for k in &kinds {
            assert!(
                k.message().starts_with("etcdserver: ") || k.message().starts_with("auth: "),
                "{k:?}"
            );
            assert!(
                seen.insert(k.message()),
                "duplicate message {}",
                k.message()
            );
            assert_eq!(ApiError::from_message(k.message()).message(), k.message());
        }
        assert_eq!(
            ApiError::from_message("something else"),
            ApiError::Internal("something else".into())
        );
    }

    #[test]
    fn codes_match_etcd_table() {
        use tonic::Code;
        assert_eq!(ApiError::EmptyKey.grpc_code(), Code::InvalidArgument);
        assert_eq!(ApiError::Compacted.grpc_code(), Code::OutOfRange);
        assert_eq!(ApiError::FutureRev.grpc_code(), Code::OutOfRange);
        assert_eq!(ApiError::NoSpace.grpc_code(), Code::ResourceExhausted);
        assert_eq!(ApiError::LeaseTtlTooLarge.grpc_code(), Code::OutOfRange);
        assert_eq!(ApiError::LeaseNotFound.grpc_code(), Code::NotFound);
        assert_eq!(
            ApiError::PermissionDenied.grpc_code(),
            Code::PermissionDenied
        );
        assert_eq!(
            ApiError::InvalidAuthToken.grpc_code(),
            Code::Unauthenticated
        );
        assert_eq!(ApiError::NoLeader.grpc_code(), Code::Unavailable);
        assert_eq!(ApiError::LeaderChanged.grpc_code(), Code::Unavailable);
        assert_eq!(ApiError::Timeout.grpc_code(), Code::Unavailable);
        assert_eq!(ApiError::Corrupt.grpc_code(), Code::DataLoss);
        assert_eq!(ApiError::RequestTooLarge.grpc_code(), Code::InvalidArgument);
        assert_eq!(ApiError::Internal("x".into()).grpc_code(), Code::Internal);
    }
}
