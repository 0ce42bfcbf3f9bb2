//! Reaching a secured server, the same way for etcd and corekv: TLS
//! (`--cacert`, `--cert`, `--key`, `https://` endpoints, rustls) and auth
//! (`--user NAME:PASSWORD` or `--user NAME --password PASSWORD`, as
//! etcdctl). Each connection authenticates once; its token then rides on
//! every request (gRPC metadata `token`, the native frame's token).
//!
//! Endpoint rule (as corekvctl): `https://` speaks TLS and needs `--cacert`,
//! `http://` speaks plain text, a bare `host:port` speaks TLS exactly when
//! `--cacert` is given. The server's certificate is verified for `host`.

use crate::error::BenchError;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

/// ALPN of gRPC over TLS (HTTP/2); etcd's and corekv's client URLs pick
/// gRPC by it.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// User for auth-enabled servers: NAME:PASSWORD, or NAME with --password.
    /// Every connection authenticates once and sends the token with each request.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Password of --user (then --user is the whole name, as etcdctl).
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// CA certificates (PEM) the servers' certificates must chain to. With it a
    /// bare host:port endpoint speaks TLS; https:// endpoints need it.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) presented when the server asks for one; with --key.
    #[arg(long = "cert", id = "tls_cert", global = true)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", global = true)]
    pub key: Option<PathBuf>,
}

/// A user and password to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

/// `--user` / `--password` as etcdctl, except that the bench never prompts:
/// a user without a password is an error.
pub fn parse_user(
    user: Option<&str>,
    password: Option<&str>,
) -> Result<Option<Credentials>, BenchError> {
    let (name, password) = match (user, password) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(BenchError::InvalidArgument(
                "--password needs --user".into(),
            ));
        }
        (Some(user), Some(p)) => (user, p),
        (Some(user), None) => user.split_once(':').ok_or_else(|| {
            BenchError::InvalidArgument(format!(
                "--user {user:?} has no password: give NAME:PASSWORD or --password \
                 (the bench does not prompt)"
            ))
        })?,
    };
    if name.is_empty() {
        return Err(BenchError::InvalidArgument(
            "--user: the user name is empty".into(),
        ));
    }
    Ok(Some(Credentials {
        name: name.to_owned(),
        password: password.to_owned(),
    }))
}

fn tls_err(operation: &'static str, path: &Path, detail: impl ToString) -> BenchError {
    BenchError::Tls {
        operation,
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Every certificate in a PEM file; a file without one is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BenchError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err("read certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("read certificates", path, e))?;
    if certs.is_empty() {
        return Err(tls_err(
            "read certificates",
            path,
            "no PEM certificate in the file",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, BenchError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err("read private key", path, e))
}

/// ring, as corekv's server and native client (no C toolchain in the build).
/// rustls deprecates ring's provider for lacking post-quantum key exchange;
/// its classical suites are what etcd 3.4 negotiates.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client TLS configurations built from the options.
#[derive(Clone)]
struct TlsConfigs {
    /// gRPC: offers ALPN `h2`.
    grpc: Arc<rustls::ClientConfig>,
    /// corekv's native protocol: no ALPN.
    native: Arc<rustls::ClientConfig>,
}

fn client_configs(
    cacert: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsConfigs, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(cacert)? {
        roots
            .add(c)
            .map_err(|e| tls_err("trust CA certificate", cacert, e))?;
    }
    let client_auth = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, load_certs(cert)?, load_key(key)?)),
        (None, None) => None,
        _ => {
            return Err(BenchError::InvalidArgument(
                "--cert and --key go together".into(),
            ));
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("choose TLS versions", cacert, e))?
        .with_root_certificates(roots);
    let mut native = match client_auth {
        Some((path, certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_err("use client certificate and key", path, e))?,
        None => builder.with_no_client_auth(),
    };
    native.alpn_protocols.clear();
    let mut grpc = native.clone();
    grpc.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(TlsConfigs {
        grpc: Arc::new(grpc),
        native: Arc::new(native),
    })
}

/// How to reach one endpoint.
#[derive(Clone)]
pub struct Dial {
    /// `host:port`, without scheme.
    pub addr: String,
    /// `Some` when the endpoint speaks TLS.
    pub tls: Option<DialTls>,
}

#[derive(Clone)]
pub struct DialTls {
    pub grpc: Arc<rustls::ClientConfig>,
    pub native: Arc<rustls::ClientConfig>,
    /// The name (or IP address) the server's certificate must carry.
    pub server_name: ServerName<'static>,
}

impl Dial {
    /// The URL tonic is given (its scheme is what the HTTP/2 requests carry).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// corekv's native client settings for this endpoint.
    pub fn native_tls(&self) -> Option<corekv_wire::ClientTls> {
        self.tls.as_ref().map(|t| corekv_wire::ClientTls {
            config: t.native.clone(),
            server_name: t.server_name.to_str().into_owned(),
        })
    }
}

/// Credentials and TLS settings, checked and loaded once per run.
#[derive(Clone, Default)]
pub struct Security {
    credentials: Option<Credentials>,
    tls: Option<TlsConfigs>,
}

impl Security {
    /// No TLS, no auth (the servers `compare` starts).
    pub fn plain() -> Security {
        Security::default()
    }

    /// Loads the options; a missing or malformed file is a typed error here,
    /// before any connection.
    pub fn from_args(a: &SecurityArgs) -> Result<Security, BenchError> {
        let credentials = parse_user(a.user.as_deref(), a.password.as_deref())?;
        let tls = match &a.cacert {
            Some(ca) => Some(client_configs(ca, a.cert.as_deref(), a.key.as_deref())?),
            None if a.cert.is_some() || a.key.is_some() => {
                return Err(BenchError::InvalidArgument(
                    "--cert/--key need --cacert (the CA the server certificate chains to)".into(),
                ));
            }
            None => None,
        };
        Ok(Security { credentials, tls })
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Scheme, address and TLS settings of `endpoint` (see the module doc).
    pub fn dial(&self, endpoint: &str) -> Result<Dial, BenchError> {
        let (secure, rest) = match endpoint.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some((scheme, _)) => {
                return Err(BenchError::InvalidArgument(format!(
                    "endpoint {endpoint:?}: unknown URL scheme {scheme:?} (http or https)"
                )));
            }
            None => (self.tls.is_some(), endpoint),
        };
        let addr = rest.trim_end_matches('/').to_owned();
        if !secure {
            return Ok(Dial { addr, tls: None });
        }
        let Some(configs) = &self.tls else {
            return Err(BenchError::InvalidArgument(format!(
                "endpoint {endpoint:?} speaks TLS: give --cacert"
            )));
        };
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => addr.as_str(),
        };
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            BenchError::InvalidArgument(format!("endpoint {endpoint:?}: host {host:?}: {e}"))
        })?;
        Ok(Dial {
            tls: Some(DialTls {
                grpc: configs.grpc.clone(),
                native: configs.native.clone(),
                server_name,
            }),
            addr,
        })
    }
}

/// Throw-away certificates for tests (here and in `grpc`).
#[cfg(test)]
pub mod test_certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::path::PathBuf;

    pub struct Files {
        pub dir: tempfile::TempDir,
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    /// A CA and a leaf certificate for 127.0.0.1 signed by it (used as the
    /// client's or the server's), as PEM files.
    pub fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let f = Files {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("client.pem"),
            key: dir.path().join("client.key"),
            dir,
        };
        std::fs::write(&f.ca, ca.pem()).unwrap();
        std::fs::write(&f.cert, leaf.pem()).unwrap();
        std::fs::write(&f.key, key.serialize_pem()).unwrap();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::{Files, files};
    use super::*;

    fn creds(name: &str, password: &str) -> Option<Credentials> {
        Some(Credentials {
            name: name.into(),
            password: password.into(),
        })
    }

    #[test]
    fn user_parses_as_etcdctl() {
        assert_eq!(parse_user(None, None).unwrap(), None);
        assert_eq!(
            parse_user(Some("bench:pw"), None).unwrap(),
            creds("bench", "pw")
        );
        // Only the first colon splits: passwords may hold colons.
        assert_eq!(parse_user(Some("u:a:b"), None).unwrap(), creds("u", "a:b"));
        assert_eq!(parse_user(Some("u:"), None).unwrap(), creds("u", ""));
        // With --password the whole --user is the name.
        assert_eq!(
            parse_user(Some("a:b"), Some("pw")).unwrap(),
            creds("a:b", "pw")
        );
    }

    #[test]
    fn bad_users_are_invalid_arguments() {
        for (user, password) in [
            (Some("bench"), None),
            (None, Some("pw")),
            (Some(":pw"), None),
            (Some(""), Some("pw")),
        ] {
            match parse_user(user, password) {
                Err(BenchError::InvalidArgument(_)) => {}
                other => panic!("{user:?} {password:?}: {other:?}"),
            }
        }
    }

    fn args(f: &Files) -> SecurityArgs {
        SecurityArgs {
            cacert: Some(f.ca.clone()),
            cert: Some(f.cert.clone()),
            key: Some(f.key.clone()),
            ..SecurityArgs::default()
        }
    }

    fn tls_error(r: Result<Security, BenchError>) -> (&'static str, PathBuf) {
        match r {
            Err(BenchError::Tls {
                operation, path, ..
            }) => (operation, path),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("expected a TLS error, got Ok"),
        }
    }

    #[test]
    fn good_files_load_and_endpoints_pick_tls() {
        let f = files();
        let sec = Security::from_args(&args(&f)).unwrap();
        let d = sec.dial("https://127.0.0.1:2379/").unwrap();
        assert_eq!(d.addr, "127.0.0.1:2379");
        assert_eq!(d.url(), "https://127.0.0.1:2379");
        let tls = d.tls.as_ref().unwrap();
        assert_eq!(tls.grpc.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(tls.native.alpn_protocols.is_empty());
        assert!(tls.grpc.client_auth_cert_resolver.has_certs());
        assert_eq!(d.native_tls().unwrap().server_name, "127.0.0.1");
        // A bare address speaks TLS when --cacert is given; http:// never does.
        assert!(sec.dial("localhost:1").unwrap().tls.is_some());
        assert!(sec.dial("http://127.0.0.1:1").unwrap().tls.is_none());
        assert!(Security::plain().dial("127.0.0.1:1").unwrap().tls.is_none());
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let f = files();
        let missing = f.dir.path().join("missing.pem");
        let garbage = f.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let with = |edit: &dyn Fn(&mut SecurityArgs)| {
            let mut a = args(&f);
            edit(&mut a);
            Security::from_args(&a)
        };
        assert_eq!(
            tls_error(with(&|a| a.cacert = Some(missing.clone()))),
            ("read certificates", missing.clone())
        );
        assert_eq!(
            tls_error(with(&|a| a.cacert = Some(garbage.clone()))),
            ("read certificates", garbage.clone())
        );
        assert_eq!(
            tls_error(with(&|a| a.cert = Some(garbage.clone()))),
            ("read certificates", garbage.clone())
        );
        // A certificate where the key should be holds no key.
        assert_eq!(
            tls_error(with(&|a| a.key = Some(f.cert.clone()))),
            ("read private key", f.cert.clone())
        );
        // A key that does not match the certificate.
        let other = files();
        assert_eq!(
            tls_error(with(&|a| a.key = Some(other.key.clone()))),
            ("use client certificate and key", f.cert.clone())
        );
    }

    #[test]
    fn inconsistent_options_are_invalid_arguments() {
        let f = files();
        let cases: [&dyn Fn(&mut SecurityArgs); 3] =
            [&|a| a.key = None, &|a| a.cert = None, &|a| a.cacert = None];
        for edit in cases {
            let mut a = args(&f);
            edit(&mut a);
            assert!(matches!(
                Security::from_args(&a),
                Err(BenchError::InvalidArgument(_))
            ));
        }
        for ep in ["https://127.0.0.1:1", "ftp://127.0.0.1:1"] {
            assert!(matches!(
                Security::plain().dial(ep),
                Err(BenchError::InvalidArgument(_))
            ));
        }
    }
}
