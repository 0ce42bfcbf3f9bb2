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

/// Client and peer TLS with one certificate, client certificates required
/// on both sides.
fn tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut flags = Vec::new();
    for side in ["", "peer-"] {
        flags.extend([
            format!("--{side}cert-file"),
            p(cert),
            format!("--{side}key-file"),
            p(key),
            format!("--{side}trusted-ca-file"),
            p(ca),
            format!("--{side}client-cert-auth"),
        ]);
    }
    flags
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
    let mut flags = tls_flags(&srv_pem, &srv_key, &ca_pem);
    flags.extend(["--bcrypt-cost".to_string(), "4".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
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

/// The certificate a TLS server at `addr` presents (None: no handshake).
fn served_cert(addr: &str, ca_pem: &Path, client: &(PathBuf, PathBuf)) -> Option<Vec<u8>> {
    let cfg = client_tls(ca_pem, Some(client)).config;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let mut conn = rustls::ClientConnection::new(cfg, name).ok()?;
    let mut sock = std::net::TcpStream::connect(addr).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).ok()?;
    }
    conn.peer_certificates()?
        .first()
        .map(|c| c.as_ref().to_vec())
}

/// Writes `from`'s bytes over `to`, keeping `to`'s modification time (a
/// renewal copied with its times preserved): only SIGHUP makes the member
/// look again.
fn overwrite_keeping_mtime(from: &Path, to: &Path) {
    let mtime = std::fs::metadata(to).unwrap().modified().unwrap();
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
    let f = std::fs::File::options().write(true).open(to).unwrap();
    f.set_modified(mtime).unwrap();
}

fn der_of(pem: &Path) -> Vec<u8> {
    corekv_server::tls::load_certs(pem).unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("corekv test ca");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca1.cert.pem()).unwrap();
    let (srv_pem, srv_key) = leaf(&ca1, dir.path(), "server", "corekv");
    let client = leaf(&ca1, dir.path(), "client", "client");
    let flags = tls_flags(&srv_pem, &srv_key, &ca_pem);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::launch(1, &flags);
    let spec = &cluster.members[0].spec;
    let ports = [
        ("native", format!("127.0.0.1:{}", spec.native)),
        ("client URL", format!("127.0.0.1:{}", spec.http)),
        ("peer", format!("127.0.0.1:{}", spec.peer)),
    ];
    let served = |which: usize| served_cert(&ports[which].1, &ca_pem, &client);
    let old = der_of(&srv_pem);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served(0).is_none() {
        assert!(Instant::now() < deadline, "the member never served TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, (what, _)) in ports.iter().enumerate() {
        assert_eq!(served(i).as_deref(), Some(&old[..]), "{what}");
    }

    // Renew (same CA, same names, a new key) with the old times kept.
    let (new_pem, new_key) = leaf(&ca1, dir.path(), "renewed", "corekv");
    let new = der_of(&new_pem);
    overwrite_keeping_mtime(&new_key, &srv_key);
    overwrite_keeping_mtime(&new_pem, &srv_pem);
    // Past the file poll's interval the member still serves the old pair.
    tokio::time::sleep(corekv_server::tls::RELOAD_CHECK_INTERVAL * 2).await;
    assert_eq!(served(0).as_deref(), Some(&old[..]));

    let pid = cluster.members[0].child.as_ref().unwrap().id();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, (what, _)) in ports.iter().enumerate() {
        while served(i).as_deref() != Some(&new[..]) {
            assert!(
                Instant::now() < deadline,
                "{what}: the renewed certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The same process, still serving.
    let member = &mut cluster.members[0];
    assert!(
        member.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "{}",
        member.log()
    );
    let c = tls_connect(&ports[0].1, client_tls(&ca_pem, Some(&client)))
        .await
        .unwrap();
    c.put(put("/after-hup", "1")).await.unwrap();
}
