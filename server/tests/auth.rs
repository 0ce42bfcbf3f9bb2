//! Auth on the native protocol against real members: users, roles, enable,
//! per-role allowed/denied operations, tokens on every member, password
//! change and user deletion ending tokens, token expiry, and the state
//! surviving a restart.

mod common;

use std::time::Duration;

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, WireError};

fn api_err<T: std::fmt::Debug>(r: Result<T, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn auth(c: &Client, req: w::AuthRequest) -> Result<w::AuthResponse, WireError> {
    c.auth(req).await
}

fn user_add(name: &str, password: &str) -> w::AuthRequest {
    w::AuthRequest::UserAdd(w::AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> w::AuthRequest {
    w::AuthRequest::UserGrantRole(w::AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant_perm(role: &str, t: w::PermissionType, key: &str, end: &str) -> w::AuthRequest {
    w::AuthRequest::RoleGrantPermission(w::AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: w::Permission {
            perm_type: t,
            key: key.into(),
            range_end: end.into(),
        },
    })
}

/// root (root role) and alice (read /a/ prefix, readwrite /b), auth enabled.
async fn setup(c: &Client) {
    assert_eq!(
        api_err(auth(c, w::AuthRequest::Enable).await),
        ApiError::RootUserNotExist
    );
    auth(c, user_add("root", "rootpw")).await.unwrap();
    assert_eq!(
        api_err(auth(c, w::AuthRequest::Enable).await),
        ApiError::RootRoleNotExist
    );
    auth(
        c,
        w::AuthRequest::RoleAdd {
            name: "root".into(),
        },
    )
    .await
    .unwrap();
    auth(c, grant_role("root", "root")).await.unwrap();
    auth(c, user_add("alice", "apw")).await.unwrap();
    auth(c, w::AuthRequest::RoleAdd { name: "r1".into() })
        .await
        .unwrap();
    auth(c, grant_perm("r1", w::PermissionType::Read, "/a/", "/a0"))
        .await
        .unwrap();
    auth(c, grant_perm("r1", w::PermissionType::ReadWrite, "/b", ""))
        .await
        .unwrap();
    auth(c, grant_role("alice", "r1")).await.unwrap();
    assert_eq!(
        api_err(c.authenticate("root", "rootpw").await),
        ApiError::AuthNotEnabled
    );
    auth(c, w::AuthRequest::Enable).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_each_user_may_do() {
    let cluster = Cluster::start(3, &["--bcrypt-cost", "4"]).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(0).await;
    setup(&c).await;

    // No token: etcd's "user name is empty"; bad credentials.
    assert_eq!(api_err(c.range(range("/b", "")).await), ApiError::UserEmpty);
    assert_eq!(api_err(c.put(put("/b", "x")).await), ApiError::UserEmpty);
    assert_eq!(
        api_err(c.authenticate("alice", "wrong").await),
        ApiError::AuthFailed
    );
    assert_eq!(
        api_err(c.authenticate("bob", "x").await),
        ApiError::AuthFailed
    );
    assert_eq!(
        api_err(c.with_token(Some("bogus.1")).range(range("/b", "")).await),
        ApiError::InvalidAuthToken
    );

    // alice, authenticated on member 0, uses her token on member 2.
    let token = c.authenticate("alice", "apw").await.unwrap();
    let alice = cluster.client(2).await.with_token(Some(&token));
    alice.put(put("/b", "1")).await.unwrap();
    assert_eq!(alice.get(b"/b").await.unwrap().unwrap().value, b"1");
    alice.range(range("/a/", "/a0")).await.unwrap();
    alice.range(range("/a/x", "")).await.unwrap();
    assert_eq!(
        api_err(alice.put(put("/a/x", "1")).await),
        ApiError::PermissionDenied
    );
    assert_eq!(
        api_err(alice.range(range("/a", "/b")).await),
        ApiError::PermissionDenied
    );
    alice
        .delete_range(w::DeleteRangeRequest {
            key: b"/b".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Txn: a compare on a key she cannot read is denied, even if the ops are fine.
    let txn = w::Txn {
        compare: vec![w::Compare {
            key: b"/c".to_vec(),
            target: w::CompareTarget::Version(0),
            ..Default::default()
        }],
        success: vec![w::Op::Put(put("/b", "2"))],
        failure: vec![],
    };
    assert_eq!(
        api_err(alice.txn(txn.into_request()).await),
        ApiError::PermissionDenied
    );
    // A watch she cannot read is created and canceled at once.
    let mut denied = alice
        .watch(w::WatchCreateRequest {
            key: b"/c".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = denied
        .next()
        .await
        .unwrap()
        .unwrap()
        .to_owned_watch()
        .unwrap();
    assert!(first.created && first.canceled, "{first:?}");
    assert_eq!(first.cancel_reason, "etcdserver: permission denied");
    // Admin-only calls, with etcd 3.4's texts.
    assert_eq!(
        api_err(auth(&alice, w::AuthRequest::UserList).await),
        ApiError::PermissionDenied
    );
    assert_eq!(
        api_err(alice.hash_kv(w::HashKvRequest::default()).await),
        ApiError::AuthRawPermissionDenied
    );
    assert_eq!(
        api_err(c.hash_kv(w::HashKvRequest::default()).await),
        ApiError::AuthRawUserEmpty
    );
    alice.status(w::StatusRequest {}).await.unwrap();
    c.status(w::StatusRequest {}).await.unwrap();
    // She may read herself and her roles, not others.
    match auth(
        &alice,
        w::AuthRequest::UserGet {
            name: "alice".into(),
        },
    )
    .await
    .unwrap()
    {
        w::AuthResponse::UserGet { roles, .. } => assert_eq!(roles, ["r1"]),
        other => panic!("{other:?}"),
    }
    auth(&alice, w::AuthRequest::RoleGet { role: "r1".into() })
        .await
        .unwrap();
    assert_eq!(
        api_err(
            auth(
                &alice,
                w::AuthRequest::RoleGet {
                    role: "root".into()
                }
            )
            .await
        ),
        ApiError::PermissionDenied
    );

    // root: everything; root cannot be removed while auth is on.
    let root_token = c.authenticate("root", "rootpw").await.unwrap();
    let root = c.with_token(Some(&root_token));
    root.put(put("/c", "1")).await.unwrap();
    root.hash_kv(w::HashKvRequest::default()).await.unwrap();
    assert_eq!(
        api_err(
            auth(
                &root,
                w::AuthRequest::UserDelete {
                    name: "root".into()
                }
            )
            .await
        ),
        ApiError::InvalidAuthMgmt
    );
    match auth(&root, w::AuthRequest::UserList).await.unwrap() {
        w::AuthResponse::UserList { users, .. } => assert_eq!(users, ["alice", "root"]),
        other => panic!("{other:?}"),
    }

    // Revoking her permission takes effect at once.
    auth(
        &root,
        w::AuthRequest::RoleRevokePermission(w::AuthRoleRevokePermissionRequest {
            role: "r1".into(),
            key: b"/b".to_vec(),
            range_end: Vec::new(),
        }),
    )
    .await
    .unwrap();
    // Her put may be checked on a member that has not applied the revoke
    // yet; apply then refuses it with "revision of auth store is old", and
    // an etcd client retries. The retry meets the new permissions.
    let mut err = api_err(alice.put(put("/b", "3")).await);
    for _ in 0..50 {
        if err != ApiError::AuthOldRevision {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        err = api_err(alice.put(put("/b", "3")).await);
    }
    assert_eq!(err, ApiError::PermissionDenied);

    // A password change ends her tokens on every member.
    auth(
        &root,
        w::AuthRequest::UserChangePassword(w::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        api_err(alice.range(range("/a/x", "")).await),
        ApiError::InvalidAuthToken
    );
    assert_eq!(
        api_err(c.authenticate("alice", "apw").await),
        ApiError::AuthFailed
    );
    let token = c.authenticate("alice", "new").await.unwrap();
    c.with_token(Some(&token))
        .range(range("/a/x", ""))
        .await
        .unwrap();

    // Disabling auth opens everything again.
    auth(&root, w::AuthRequest::Disable).await.unwrap();
    c.put(put("/a/x", "free")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tokens_expire_and_auth_state_survives_restart() {
    let mut cluster = Cluster::start(1, &["--bcrypt-cost", "4", "--auth-token-ttl", "1"]).await;
    let c = cluster.client(0).await;
    setup(&c).await;
    let token = c.authenticate("alice", "apw").await.unwrap();
    let alice = c.with_token(Some(&token));
    alice.put(put("/b", "1")).await.unwrap();
    // Unused for longer than --auth-token-ttl: gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api_err(alice.get(b"/b").await), ApiError::InvalidAuthToken);

    // Users, roles, passwords and the enabled flag come back after a
    // restart.
    drop(c);
    cluster.members[0].stop();
    cluster.members[0].start();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let c = cluster.client(0).await;
    assert_eq!(api_err(c.get(b"/b").await), ApiError::UserEmpty);
    assert_eq!(
        api_err(c.authenticate("alice", "wrong").await),
        ApiError::AuthFailed
    );
    let alice = c.with_token(Some(&token));
    assert_eq!(alice.get(b"/b").await.unwrap().unwrap().value, b"1");
    assert_eq!(
        api_err(alice.put(put("/a/x", "1")).await),
        ApiError::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_go_stale_with_the_auth_revision() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, b"a shared secret for the test cluster").unwrap();
    let spec = format!(
        "jwt,priv-key={},sign-method=HS256,ttl=10m",
        secret.display()
    );
    let cluster = Cluster::start(3, &["--bcrypt-cost", "4", "--auth-token", &spec]).await;
    let c = cluster.client(0).await;
    setup(&c).await;
    let token = c.authenticate("alice", "apw").await.unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // Stateless: valid on every member without replication.
    let alice = cluster.client(1).await.with_token(Some(&token));
    alice.put(put("/b", "1")).await.unwrap();
    let root_token = c.authenticate("root", "rootpw").await.unwrap();
    let root = c.with_token(Some(&root_token));
    auth(&root, w::AuthRequest::RoleAdd { name: "r2".into() })
        .await
        .unwrap();
    // Any auth change makes older JWTs stale: clients authenticate again.
    assert_eq!(
        api_err(alice.put(put("/b", "2")).await),
        ApiError::AuthOldRevision
    );
    let token = c.authenticate("alice", "apw").await.unwrap();
    c.with_token(Some(&token))
        .put(put("/b", "2"))
        .await
        .unwrap();
    assert_eq!(
        api_err(c.with_token(Some("not.a.jwt")).get(b"/b").await),
        ApiError::InvalidAuthToken
    );
}
