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

/// Retries a call refused with "revision of auth store is old" (checked on
/// a member that had not applied the latest auth change), as etcd clients do.
async fn settled<T, F, Fut>(mut call: F) -> Result<T, WireError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WireError>>,
{
    for _ in 0..50 {
        match call().await {
            Err(WireError::Api(ApiError::AuthOldRevision)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
    call().await
}

fn ttl_req(id: i64, keys: bool) -> w::LeaseTimeToLiveRequest {
    w::LeaseTimeToLiveRequest { id, keys }
}

/// etcd 3.4's checkLeasePuts at apply (LeaseRevoke) and checkLeaseTimeToLive
/// (TimeToLive with keys): a revoke needs write access to every key attached
/// to the lease, a time-to-live with keys read access to each, and a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoke_and_time_to_live_check_the_attached_keys() {
    let cluster = Cluster::start(3, &["--bcrypt-cost", "4"]).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(0).await;
    setup(&c).await;
    let root_token = c.authenticate("root", "rootpw").await.unwrap();
    let root = c.with_token(Some(&root_token));
    let alice_token = c.authenticate("alice", "apw").await.unwrap();
    // alice (read /a/, readwrite /b) on another member than the one that
    // issued the token: the revoke is checked where every member applies it.
    let alice = cluster.client(2).await.with_token(Some(&alice_token));
    let grant = |id: i64| {
        let root = root.clone();
        async move {
            root.lease_grant(w::LeaseGrantRequest { ttl: 600, id })
                .await
                .unwrap();
        }
    };
    let put_leased = |key: &'static str, lease: i64| {
        let root = root.clone();
        async move {
            root.put(w::PutRequest {
                lease,
                ..put(key, "v")
            })
            .await
            .unwrap();
        }
    };
    // 11: /b and /c (alice cannot touch /c); 12: /b only; 13: no keys;
    // 14: /a/x (alice may read it, not write it).
    for id in 11..=14 {
        grant(id).await;
    }
    put_leased("/b", 11).await;
    put_leased("/c", 11).await;
    put_leased("/b2", 12).await;
    put_leased("/a/x", 14).await;
    // /b2 is outside alice's "/b" (one key); give her a key of her own.
    auth(
        &root,
        grant_perm("r1", w::PermissionType::ReadWrite, "/b2", ""),
    )
    .await
    .unwrap();
    let alice_token = settled(|| c.authenticate("alice", "apw")).await.unwrap();
    let alice = alice.with_token(Some(&alice_token));

    // A put may attach a lease only if the caller could revoke it (etcd's
    // checkLeasePuts in Put): lease 11 holds /c, which alice cannot write.
    let put_with = |lease: i64| {
        let alice = alice.clone();
        async move {
            settled(|| {
                alice.put(w::PutRequest {
                    lease,
                    ..put("/b", "mine")
                })
            })
            .await
        }
    };
    assert_eq!(api_err(put_with(11).await), ApiError::PermissionDenied);
    assert_eq!(root.get(b"/b").await.unwrap().unwrap().value, b"v");
    put_with(12).await.unwrap();
    assert_eq!(root.get(b"/b").await.unwrap().unwrap().lease, 12);
    assert_eq!(api_err(put_with(98).await), ApiError::LeaseNotFound);

    let revoke = |client: &Client, id: i64| {
        let client = client.clone();
        async move { settled(|| client.lease_revoke(w::LeaseRevokeRequest { id })).await }
    };
    // Revoke: every attached key must be writable by the caller.
    assert_eq!(
        api_err(revoke(&alice, 11).await),
        ApiError::PermissionDenied
    );
    assert_eq!(
        api_err(revoke(&alice, 14).await),
        ApiError::PermissionDenied
    );
    assert_eq!(api_err(revoke(&c, 11).await), ApiError::UserEmpty);
    assert_eq!(
        root.get(b"/c").await.unwrap().unwrap().lease,
        11,
        "a refused revoke deletes nothing"
    );
    revoke(&alice, 12).await.unwrap();
    assert!(root.get(b"/b2").await.unwrap().is_none());
    assert!(root.get(b"/b").await.unwrap().is_none());
    // A lease without keys needs no permission, not even a user (etcd).
    revoke(&c, 13).await.unwrap();
    assert_eq!(api_err(revoke(&alice, 99).await), ApiError::LeaseNotFound);

    // TimeToLive: without keys nothing is checked; with keys every key must
    // be readable and a user is required, also for an unknown lease.
    let ttl = |client: &Client, id: i64, keys: bool| {
        let client = client.clone();
        async move { settled(|| client.lease_time_to_live(ttl_req(id, keys))).await }
    };
    assert_eq!(ttl(&alice, 11, false).await.unwrap().granted_ttl, 600);
    assert_eq!(ttl(&c, 11, false).await.unwrap().granted_ttl, 600);
    assert_eq!(
        api_err(ttl(&alice, 11, true).await),
        ApiError::PermissionDenied
    );
    assert_eq!(api_err(ttl(&c, 14, true).await), ApiError::UserEmpty);
    assert_eq!(api_err(ttl(&c, 99, true).await), ApiError::UserEmpty);
    assert_eq!(ttl(&alice, 99, true).await.unwrap().ttl, -1);
    assert_eq!(
        ttl(&alice, 14, true).await.unwrap().keys,
        [b"/a/x".to_vec()]
    );
    let all = ttl(&root, 11, true).await.unwrap().keys;
    assert_eq!(all, [b"/c".to_vec()]);

    // root revokes anything; the keys go with the lease.
    revoke(&root, 11).await.unwrap();
    assert!(root.get(b"/c").await.unwrap().is_none());
    // A client cannot hand in a revoke that names its own caller.
    let forged = w::Request::LeaseRevokeAs(w::LeaseRevokeAsRequest {
        id: 14,
        user: "root".into(),
        auth_revision: u64::MAX,
    });
    match c.request(&forged).await {
        Err(WireError::Api(ApiError::MalformedRequest(_))) => {}
        other => panic!("a forged LeaseRevokeAs got {:?}", other.err()),
    }
    assert_eq!(root.get(b"/a/x").await.unwrap().unwrap().lease, 14);
}
