//! TLS with rustls, configured by etcd's flags: `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth` for clients, the `--peer-*`
//! set for peers.
//!
//! The certificate and key are re-read when either file changes (checked at
//! a handshake at most once per `RELOAD_CHECK_INTERVAL`) and at once on
//! SIGHUP (`Reloaders::reload_all`, called by the member's signal loop), so
//! a rotated certificate takes effect without a restart, on the client URL,
//! the native port and the peer port, and as the certificate a member
//! presents when it dials a peer. A pair that fails to load keeps the
//! previous one in use (and is logged). The trusted CA is read at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often a handshake may look at the certificate files' mtimes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One side's TLS files (etcd's `--cert-file` ... or `--peer-cert-file` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client (or peer) certificates must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Require and verify a client certificate (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// The set from flags: none when no certificate is given; a certificate
    /// without a key (or the reverse) is an error.
    pub fn from_flags(
        what: &str,
        cert: &Option<PathBuf>,
        key: &Option<PathBuf>,
        trusted_ca: &Option<PathBuf>,
        client_cert_auth: bool,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (None, None) if client_cert_auth => Err(format!(
                "--{what}client-cert-auth needs --{what}cert-file and --{what}key-file"
            )),
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                if client_cert_auth && trusted_ca.is_none() {
                    return Err(format!(
                        "--{what}client-cert-auth needs --{what}trusted-ca-file"
                    ));
                }
                Ok(Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: trusted_ca.clone(),
                    client_cert_auth,
                }))
            }
            _ => Err(format!(
                "--{what}cert-file and --{what}key-file go together"
            )),
        }
    }
}

/// ring, not aws-lc-rs: no C/cmake toolchain in the build. rustls 0.23.48
/// deprecates ring's provider for lacking post-quantum key exchange; the
/// classical suites it offers are those etcd 3.4 negotiates.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    CertifiedKey::from_der(certs, key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("{} / {}: {e}", files.cert.display(), files.key.display()))
}

/// Modification times of the certificate and key files.
type Mtimes = (Option<SystemTime>, Option<SystemTime>);

fn mtimes(files: &TlsFiles) -> Mtimes {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

/// Serves the current certificate, re-reading the files when they change
/// or on request (SIGHUP).
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Mtimes)>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last mtime check.
    checked_ms: AtomicU64,
}

impl Reloading {
    fn new(files: TlsFiles) -> Result<Reloading, String> {
        let stamp = mtimes(&files);
        let key = certified_key(&files)?;
        Ok(Reloading {
            files,
            current: RwLock::new((key, stamp)),
            epoch: Instant::now(),
            checked_ms: AtomicU64::new(0),
        })
    }

    /// Re-reads the files now, whatever their modification times say (a
    /// renewed pair copied with its old times preserved is still taken).
    /// On an error the previous pair stays in use.
    pub fn reload_now(&self) -> Result<(), String> {
        let stamp = mtimes(&self.files);
        let key = certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, stamp);
        tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
        Ok(())
    }

    /// The pair in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    fn maybe_reload(&self) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked_ms.load(Ordering::Relaxed);
        let interval = RELOAD_CHECK_INTERVAL.as_millis() as u64;
        if now_ms < last + interval
            || self
                .checked_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let stamp = mtimes(&self.files);
        if stamp == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return;
        }
        match certified_key(&self.files) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, stamp);
                tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the previous one")
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        Some(self.current())
    }
}

/// The certificate a member presents when it dials a peer.
impl ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Every certificate source of a member, for SIGHUP.
#[derive(Debug, Default)]
pub struct Reloaders {
    sources: Vec<Arc<Reloading>>,
}

impl Reloaders {
    /// Loads the pair of `files` and keeps it for `reload_all`.
    pub fn open(&mut self, files: &TlsFiles) -> Result<Arc<Reloading>, String> {
        let source = Arc::new(Reloading::new(files.clone())?);
        self.sources.push(source.clone());
        Ok(source)
    }

    /// Re-reads every certificate and key now (SIGHUP). A pair that does
    /// not load is logged and the previous one stays in use.
    pub fn reload_all(&self) {
        for s in &self.sources {
            if let Err(e) = s.reload_now() {
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the previous one");
            }
        }
    }
}

/// The server side: the certificate of `cert` (reloaded on change) and,
/// with client certificate auth, a verifier for the trusted CA. `alpn`
/// lists the protocols offered (gRPC needs `h2`).
pub fn server_config(
    files: &TlsFiles,
    cert: Arc<Reloading>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&files.trusted_ca, files.client_cert_auth) {
        (Some(ca), true) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The client side of a peer connection: trusts `--peer-trusted-ca-file`
/// and presents the peer certificate of `cert` (etcd peers authenticate
/// both ways; reloaded like the served one).
pub fn peer_client_config(
    files: &TlsFiles,
    cert: Arc<Reloading>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca = files
        .trusted_ca
        .as_ref()
        .ok_or("peer TLS needs --peer-trusted-ca-file")?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(load_roots(ca)?)
        .with_client_cert_resolver(cert);
    Ok(Arc::new(cfg))
}

/// The common name of a verified client certificate (etcd uses it as the
/// user name under `--client-cert-auth`).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A byte stream that may or may not be TLS (peer connections).
pub trait Io: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> Io for T {}

/// Wraps a dialled connection in TLS when `cfg` is set; the server is
/// verified by the IP address dialled (peer certificates carry IP SANs).
pub async fn connect<S: Io + 'static>(
    cfg: Option<&Arc<rustls::ClientConfig>>,
    addr: std::net::SocketAddr,
    stream: S,
) -> std::io::Result<Box<dyn Io>> {
    let Some(cfg) = cfg else {
        return Ok(Box::new(stream));
    };
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = futures_rustls::TlsConnector::from(cfg.clone())
        .connect(name, stream)
        .await?;
    Ok(Box::new(tls))
}

/// Accepts TLS on an accepted connection when `cfg` is set.
pub async fn accept<S: Io + 'static>(
    cfg: Option<Arc<ServerConfig>>,
    stream: S,
) -> std::io::Result<Box<dyn Io>> {
    match cfg {
        None => Ok(Box::new(stream)),
        Some(cfg) => Ok(Box::new(
            futures_rustls::TlsAcceptor::from(cfg)
                .accept(stream)
                .await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fresh self-signed pair for `cn` over `files`, keeping the
    /// files' previous modification times (as a copy that preserves them
    /// would): only an explicit reload notices.
    fn write_pair(files: &TlsFiles, cn: &str, keep_times: Option<Mtimes>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        if let Some((Some(c), Some(k))) = keep_times {
            for (path, t) in [(&files.cert, c), (&files.key, k)] {
                let f = std::fs::File::options().write(true).open(path).unwrap();
                f.set_modified(t).unwrap();
            }
        }
        cert.der().to_vec()
    }

    fn served(r: &Reloading) -> Vec<u8> {
        r.current().cert[0].as_ref().to_vec()
    }

    #[test]
    fn reload_now_takes_a_renewed_pair_whatever_its_times() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("c.key"),
            trusted_ca: None,
            client_cert_auth: false,
        };
        let first = write_pair(&files, "one", None);
        let mut reloaders = Reloaders::default();
        let r = reloaders.open(&files).unwrap();
        assert_eq!(served(&r), first);
        let times = mtimes(&files);
        let second = write_pair(&files, "two", Some(times));
        assert_eq!(mtimes(&files), times);
        // The mtime poll sees nothing new: still the first pair.
        r.checked_ms.store(0, Ordering::Relaxed);
        std::thread::sleep(RELOAD_CHECK_INTERVAL);
        r.maybe_reload();
        assert_eq!(served(&r), first);
        // SIGHUP's reload takes the renewed pair, for serving and dialling.
        reloaders.reload_all();
        assert_eq!(served(&r), second);
        let dialled = ResolvesClientCert::resolve(&*r, &[], &[]).unwrap();
        assert_eq!(dialled.cert[0].as_ref(), &second[..]);
        // A pair that does not load keeps the previous one.
        std::fs::write(&files.key, b"not a key").unwrap();
        reloaders.reload_all();
        assert_eq!(served(&r), second);
    }
}
