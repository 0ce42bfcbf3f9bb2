//! Auth over gRPC with the Rust `etcd-client` crate against a 3-member
//! cluster: per-role allowed and denied operations with etcd's codes and
//! texts, watch denial, tokens valid on every member, a password change
//! ending old tokens, and token expiry.

mod common;

use std::time::Duration;

use common::Cluster;
use etcd_client::{Client, ConnectOptions, Error, GetOptions, Permission, WatchOptions};
use tonic::Code;

fn status<T: std::fmt::Debug>(r: Result<T, Error>) -> (Code, String) {
    match r {
        Err(Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn as_user(ep: &str, user: &str, password: &str) -> Result<Client, Error> {
    let opts = ConnectOptions::new().with_user(user, password);
    Client::connect([ep], Some(opts)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_under_auth() {
    let cluster = Cluster::start(3, &["--bcrypt-cost", "4", "--auth-token-ttl", "3"]).await;
    let eps: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", cluster.members[i].spec.http))
        .collect();
    let mut admin = Client::connect([eps[0].as_str()], None).await.unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("alice", "apw", None).await.unwrap();
    admin.role_add("r1").await.unwrap();
    admin
        .role_grant_permission("r1", Permission::read_write("/app/").with_prefix())
        .await
        .unwrap();
    admin
        .role_grant_permission("r1", Permission::read("/cfg"))
        .await
        .unwrap();
    admin.user_grant_role("alice", "r1").await.unwrap();
    admin.auth_enable().await.unwrap();
    assert_eq!(
        status(admin.get("/app/x", None).await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );

    // alice authenticates against member 1 and uses member 2 too.
    let mut alice = as_user(&eps[1], "alice", "apw").await.unwrap();
    alice.put("/app/x", "1", None).await.unwrap();
    let mut alice2 = as_user(&eps[2], "alice", "apw").await.unwrap();
    let r = alice2
        .get("/app/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    alice.get("/cfg", None).await.unwrap();
    let denied = (
        Code::PermissionDenied,
        "etcdserver: permission denied".to_string(),
    );
    assert_eq!(status(alice.put("/cfg", "x", None).await), denied);
    assert_eq!(status(alice.get("/other", None).await), denied);
    assert_eq!(status(alice.user_list().await), denied);
    assert_eq!(
        status(alice.hash_kv(0).await),
        (Code::Unknown, "auth: permission denied".into())
    );
    alice.status().await.unwrap();
    let mut stream = alice
        .watch("/other", Some(WatchOptions::new()))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap();
    match resp {
        Ok(Some(r)) => {
            assert!(r.canceled(), "{r:?}");
            assert_eq!(r.cancel_reason(), "etcdserver: permission denied");
        }
        other => panic!("expected a canceled watch, got {other:?}"),
    }
    assert!(matches!(
        as_user(&eps[0], "alice", "nope").await,
        Err(Error::GRpcStatus(s)) if s.message() == "etcdserver: authentication failed, invalid user ID or password"
    ));

    // A password change ends alice's tokens on every member.
    let mut root = as_user(&eps[0], "root", "rootpw").await.unwrap();
    root.user_change_password("alice", "apw2").await.unwrap();
    assert_eq!(
        status(alice2.get("/app/x", None).await),
        (
            Code::Unauthenticated,
            "etcdserver: invalid auth token".into()
        )
    );
    let mut alice = as_user(&eps[0], "alice", "apw2").await.unwrap();
    alice.get("/app/x", None).await.unwrap();

    // Unused for longer than --auth-token-ttl: the token expires.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        status(alice.get("/app/x", None).await),
        (
            Code::Unauthenticated,
            "etcdserver: invalid auth token".into()
        )
    );
    root.auth_disable().await.ok();
}
