//! A TLS-only 3-member cluster (client and peer TLS, client certificates
//! required) with auth: plain-text and certificate-less clients are refused,
//! the certificate's common name is the user, and a replaced server
//! certificate is served without a restart. Certificates are made at test
//! time (rcgen); no private key is committed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, ClientOptions, ClientTls, WireError};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A leaf certificate signed by `ca`, for server and client use (peers use
/// one certificate both ways, as etcd's do); written as `dir/name.{pem,key}`.
fn leaf(ca: &Ca, dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (pem, kpem) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&pem, cert.pem()).unwrap();
    std::fs::write(&kpem, key.serialize_pem()).unwrap();
    (pem, kpem)
}

fn client_tls(ca_pem: &Path, client: Option<&(PathBuf, PathBuf)>) -> ClientTls {
    let mut roots = rustls::RootCertStore::empty();
    for c in corekv_server::tls::load_certs(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(corekv_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                corekv_server::tls::load_certs(cert).unwrap(),
                corekv_server::tls::load_key(key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    ClientTls {
        config: Arc::new(config),
        server_name: "127.0.0.1".into(),
    }
}

async fn tls_connect(addr: &str, tls: ClientTls) -> Result<Client, WireError> {
    let opts = ClientOptions {
        tls: Some(tls),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    Client::connect(addr, opts).await
}

fn api_err<T: std::fmt::Debug>(r: Result<T, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_cluster_with_certificate_users() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("corekv test ca");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca1.cert.pem()).unwrap();
    let (srv_pem, srv_key) = leaf(&ca1, dir.path(), "server", "corekv");
    let root_cert = leaf(&ca1, dir.path(), "root", "root");
    let alice_cert = leaf(&ca1, dir.path(), "alice", "alice");
    let p = |x: &PathBuf| x.display().to_string();
    let flags = [
        "--cert-file",
        &p(&srv_pem),
        "--key-file",
        &p(&srv_key),
        "--trusted-ca-file",
        &p(&ca_pem),
        "--client-cert-auth",
        "--peer-cert-file",
        &p(&srv_pem),
        "--peer-key-file",
        &p(&srv_key),
        "--peer-trusted-ca-file",
        &p(&ca_pem),
        "--peer-client-cert-auth",
        "--bcrypt-cost",
        "4",
    ];
    let cluster = Cluster::launch(3, &flags);
    let addr = cluster.members[0].native_addr();

    // A leader over peer TLS, seen through client TLS.
    let deadline = Instant::now() + Duration::from_secs(30);
    let root = loop {
        if let Ok(c) = tls_connect(&addr, client_tls(&ca_pem, Some(&root_cert))).await
            && let Ok(s) = c.status(w::StatusRequest {}).await
            && s.leader != 0
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no leader over TLS: {}",
            cluster.members[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Plain text and TLS without a client certificate are refused.
    if let Ok(plain) = Client::connect(&addr, ClientOptions::default()).await {
        assert!(plain.status(w::StatusRequest {}).await.is_err());
    }
    if let Ok(anon) = tls_connect(&addr, client_tls(&ca_pem, None)).await {
        assert!(anon.status(w::StatusRequest {}).await.is_err());
    }

    // Users without passwords (certificate only), roles, auth on.
    let add = |name: &str| {
        w::AuthRequest::UserAdd(w::AuthUserAddRequest {
            name: name.into(),
            no_password: true,
            ..Default::default()
        })
    };
    root.auth(add("root")).await.unwrap();
    root.auth(w::AuthRequest::RoleAdd {
        name: "root".into(),
    })
    .await
    .unwrap();
    let grant = |user: &str, role: &str| {
        w::AuthRequest::UserGrantRole(w::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    };
    root.auth(grant("root", "root")).await.unwrap();
    root.auth(add("alice")).await.unwrap();
    root.auth(w::AuthRequest::RoleAdd { name: "r1".into() })
        .await
        .unwrap();
    root.auth(w::AuthRequest::RoleGrantPermission(
        w::AuthRoleGrantPermissionRequest {
            name: "r1".into(),
            perm: w::Permission {
                perm_type: w::PermissionType::ReadWrite,
                key: b"/b".to_vec(),
                range_end: b"/c".to_vec(),
            },
        },
    ))
    .await
    .unwrap();
    root.auth(grant("alice", "r1")).await.unwrap();
    root.auth(w::AuthRequest::Enable).await.unwrap();

    // The CN is the user: no token needed.
    let alice = tls_connect(&addr, client_tls(&ca_pem, Some(&alice_cert)))
        .await
        .unwrap();
    alice.put(common::put("/b/1", "v")).await.unwrap();
    assert_eq!(
        api_err(alice.put(common::put("/x", "v")).await),
        ApiError::PermissionDenied
    );
    assert_eq!(
        api_err(alice.auth(w::AuthRequest::UserList).await),
        ApiError::PermissionDenied
    );
    // A no-password user cannot get a token with a password.
    assert_eq!(
        api_err(alice.authenticate("alice", "").await),
        ApiError::AuthFailed
    );
    root.put(common::put("/x", "v")).await.unwrap();
    match root.auth(w::AuthRequest::UserList).await.unwrap() {
        w::AuthResponse::UserList { users, .. } => assert_eq!(users, ["alice", "root"]),
        other => panic!("{other:?}"),
    }

    // etcdctl over https with alice's certificate: the CN is the user.
    let https = format!("https://127.0.0.1:{}", cluster.members[1].spec.http);
    let etcdctl = |cert: Option<&(PathBuf, PathBuf)>, endpoint: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                endpoint,
                "--command-timeout=5s",
                "--dial-timeout=3s",
            ])
            .args(["--cacert", &p(&ca_pem)]);
        if let Some((c, k)) = cert {
            cmd.args(["--cert", &p(c), "--key", &p(k)]);
        }
        let out = cmd.args(args).output().expect("etcdctl not found");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = etcdctl(
        Some(&alice_cert),
        &https,
        &["get", "/b/1", "--print-value-only"],
    );
    assert!(ok && out == "v\n", "{out}{err}");
    let (ok, _, err) = etcdctl(Some(&alice_cert), &https, &["put", "/x", "1"]);
    assert!(
        !ok && err.contains("etcdserver: permission denied"),
        "{err}"
    );
    // Plain text to the https client URL, and https without a certificate, fail.
    let plain = format!("http://127.0.0.1:{}", cluster.members[1].spec.http);
    assert!(!etcdctl(Some(&alice_cert), &plain, &["get", "/b/1"]).0);
    assert!(!etcdctl(None, &https, &["get", "/b/1"]).0);

    // Rotate the server certificate to one from another CA: new connections
    // get it without a restart (clients trusting only the old CA fail).
    let ca2 = ca("corekv test ca 2");
    let ca2_pem = dir.path().join("ca2.pem");
    std::fs::write(&ca2_pem, ca2.cert.pem()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (new_pem, new_key) = leaf(&ca2, dir.path(), "server2", "corekv");
    std::fs::rename(&new_key, &srv_key).unwrap();
    std::fs::rename(&new_pem, &srv_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rotated = match tls_connect(&addr, client_tls(&ca2_pem, Some(&alice_cert))).await {
            Ok(c) => c.get(b"/b/1").await.is_ok(),
            Err(_) => false,
        };
        if rotated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_trust = match tls_connect(&addr, client_tls(&ca_pem, Some(&alice_cert))).await {
        Ok(c) => c.get(b"/b/1").await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !old_trust,
        "a client trusting only the old CA still connects"
    );
}
