//! Auth tokens, as etcd's `--auth-token`: `simple` (random tokens kept in
//! memory on every member, each expiring `--auth-token-ttl` after its last
//! use) or `jwt,...` (signed, stateless; the claims carry the user and the
//! auth revision, so any auth change makes older tokens stale).
//!
//! A simple token is assigned on every member by a replicated entry
//! (`AuthRequest::AssignToken`), so it works on whichever member a client
//! talks to. Tokens are not persisted: a restarted member knows only those
//! whose assignment it replays from the WAL (with a fresh TTL; a later
//! password change, user deletion or AuthDisable replays too and ends them
//! again), and clients authenticate again on `invalid auth token`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corekv_wire::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Most simple tokens a member keeps. When full, expired tokens are dropped
/// first, then the one closest to expiring.
pub const MAX_SIMPLE_TOKENS: usize = 65_536;
/// Random characters in a simple token, before `.<raft index>` (etcd's 16).
pub const SIMPLE_TOKEN_CHARS: usize = 16;
/// etcd's default JWT lifetime (`ttl=5m`).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// Who a request comes from: the user and the auth revision its
/// credentials were valid at (etcd's `AuthInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

pub struct Jwt {
    alg: Algorithm,
    /// Absent on a member given only the public key: it verifies tokens but
    /// cannot issue them.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

pub enum TokenKind {
    Simple { ttl: Duration },
    Jwt(Box<Jwt>),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

impl TokenKind {
    /// Parses etcd's `--auth-token`: `simple`, or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m`.
    pub fn parse(spec: &str, simple_ttl: Duration) -> Result<TokenKind, String> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => Ok(TokenKind::Simple { ttl: simple_ttl }),
            "jwt" => {
                let mut opts = HashMap::new();
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| format!("--auth-token: option {p:?} is not key=value"))?;
                    opts.insert(k, v);
                }
                Jwt::from_options(&opts).map(|j| TokenKind::Jwt(Box::new(j)))
            }
            other => Err(format!(
                "--auth-token: unknown token type {other:?} (simple or jwt)"
            )),
        }
    }
}

impl Jwt {
    fn from_options(opts: &HashMap<&str, &str>) -> Result<Jwt, String> {
        let method = opts
            .get("sign-method")
            .ok_or("--auth-token jwt: sign-method is required")?;
        let alg: Algorithm = method
            .parse()
            .map_err(|_| format!("--auth-token jwt: unknown sign-method {method}"))?;
        let read = |k: &str| -> Result<Option<Vec<u8>>, String> {
            opts.get(k)
                .map(|p| std::fs::read(p).map_err(|e| format!("--auth-token jwt: {k} {p}: {e}")))
                .transpose()
        };
        let (public, private) = (read("pub-key")?, read("priv-key")?);
        let bad = |e: jsonwebtoken::errors::Error| format!("--auth-token jwt: key: {e}");
        let family = format!("{alg:?}");
        let (encoding, decoding) = if family.starts_with("HS") {
            // HMAC: the private key file is the shared secret.
            let secret = private.ok_or("--auth-token jwt: HS* needs priv-key")?;
            (
                Some(EncodingKey::from_secret(&secret)),
                DecodingKey::from_secret(&secret),
            )
        } else {
            let public = public.ok_or("--auth-token jwt: pub-key is required")?;
            let (enc, dec): (KeyParser<EncodingKey>, KeyParser<DecodingKey>) =
                if family.starts_with("ES") {
                    (EncodingKey::from_ec_pem, DecodingKey::from_ec_pem)
                } else if family.starts_with("EdDSA") {
                    (EncodingKey::from_ed_pem, DecodingKey::from_ed_pem)
                } else {
                    (EncodingKey::from_rsa_pem, DecodingKey::from_rsa_pem)
                };
            (
                private.map(|k| enc(&k)).transpose().map_err(bad)?,
                dec(&public).map_err(bad)?,
            )
        };
        let ttl = match opts.get("ttl") {
            None => DEFAULT_JWT_TTL,
            Some(t) => parse_duration(t)?,
        };
        Ok(Jwt {
            alg,
            encoding,
            decoding,
            ttl,
        })
    }
}

/// Go-style durations as etcd takes them: `300s`, `5m`, `1h`, `1h30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("--auth-token jwt: bad ttl {s:?}");
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A PEM key parser of jsonwebtoken.
type KeyParser<K> = fn(&[u8]) -> Result<K, jsonwebtoken::errors::Error>;

struct SimpleEntry {
    user: String,
    /// Milliseconds since `Tokens::epoch`; pushed forward on every use.
    expires_ms: AtomicU64,
}

pub struct Tokens {
    kind: TokenKind,
    simple: RwLock<HashMap<String, SimpleEntry>>,
    epoch: Instant,
}

impl Tokens {
    pub fn new(kind: TokenKind) -> Tokens {
        Tokens {
            kind,
            simple: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    pub fn is_simple(&self) -> bool {
        matches!(self.kind, TokenKind::Simple { .. })
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The user a token stands for. `revision` is the current auth
    /// revision: a simple token is valid at it (it is dropped on the changes
    /// that must end it); a JWT carries its own.
    pub fn resolve(&self, token: &str, revision: u64, now: Instant) -> Result<AuthInfo, ApiError> {
        match &self.kind {
            TokenKind::Simple { ttl } => {
                let map = self.simple.read().unwrap_or_else(|e| e.into_inner());
                let entry = map.get(token).ok_or(ApiError::InvalidAuthToken)?;
                let now_ms = self.ms(now);
                if entry.expires_ms.load(Ordering::Relaxed) <= now_ms {
                    return Err(ApiError::InvalidAuthToken);
                }
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                entry
                    .expires_ms
                    .fetch_max(now_ms.saturating_add(ttl_ms), Ordering::Relaxed);
                Ok(AuthInfo {
                    user: entry.user.clone(),
                    revision,
                })
            }
            TokenKind::Jwt(jwt) => {
                let mut v = Validation::new(jwt.alg);
                v.required_spec_claims = ["exp".to_string()].into_iter().collect();
                v.leeway = 0;
                let data = jsonwebtoken::decode::<Claims>(token, &jwt.decoding, &v)
                    .map_err(|_| ApiError::InvalidAuthToken)?;
                Ok(AuthInfo {
                    user: data.claims.username,
                    revision: data.claims.revision,
                })
            }
        }
    }

    /// A new random simple-token prefix (the applying member appends
    /// `.<raft index>`, as etcd).
    pub fn simple_prefix() -> String {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(SIMPLE_TOKEN_CHARS)
            .map(char::from)
            .collect()
    }

    /// Records a simple token on this member (applying `AssignToken`).
    pub fn assign_simple(&self, token: String, user: &str, now: Instant) {
        let TokenKind::Simple { ttl } = &self.kind else {
            return;
        };
        let now_ms = self.ms(now);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut map = self.simple.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SIMPLE_TOKENS {
            map.retain(|_, e| e.expires_ms.load(Ordering::Relaxed) > now_ms);
        }
        if map.len() >= MAX_SIMPLE_TOKENS {
            let soonest = map
                .iter()
                .min_by_key(|(_, e)| e.expires_ms.load(Ordering::Relaxed))
                .map(|(t, _)| t.clone());
            if let Some(t) = soonest {
                map.remove(&t);
            }
        }
        map.insert(
            token,
            SimpleEntry {
                user: user.to_owned(),
                expires_ms: AtomicU64::new(now_ms.saturating_add(ttl_ms)),
            },
        );
    }

    /// Signs a JWT for `user` at auth `revision`.
    pub fn sign_jwt(&self, user: &str, revision: u64) -> Result<String, ApiError> {
        let TokenKind::Jwt(jwt) = &self.kind else {
            return Err(ApiError::Internal("not a JWT token provider".into()));
        };
        let key = jwt.encoding.as_ref().ok_or_else(|| {
            ApiError::Internal("--auth-token jwt: no priv-key, cannot sign tokens".into())
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: user.to_owned(),
            revision,
            exp: (now + jwt.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(jwt.alg), &claims, key)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))
    }

    pub fn drop_user(&self, user: &str) {
        let mut map = self.simple.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| e.user != user);
    }

    pub fn drop_all(&self) {
        self.simple
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(ttl_s: u64) -> Tokens {
        Tokens::new(TokenKind::Simple {
            ttl: Duration::from_secs(ttl_s),
        })
    }

    #[test]
    fn simple_tokens_expire_after_ttl_without_use() {
        let t = simple(10);
        let t0 = Instant::now();
        t.assign_simple("tok.1".into(), "alice", t0);
        let info = t.resolve("tok.1", 7, t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(
            info,
            AuthInfo {
                user: "alice".into(),
                revision: 7
            }
        );
        // The use at 9 s pushed expiry to 19 s.
        assert!(t.resolve("tok.1", 7, t0 + Duration::from_secs(18)).is_ok());
        assert_eq!(
            t.resolve("tok.1", 7, t0 + Duration::from_secs(40)),
            Err(ApiError::InvalidAuthToken)
        );
        assert_eq!(t.resolve("nope", 7, t0), Err(ApiError::InvalidAuthToken));
    }

    #[test]
    fn dropping_users_and_all() {
        let t = simple(100);
        let now = Instant::now();
        t.assign_simple("a.1".into(), "alice", now);
        t.assign_simple("b.2".into(), "bob", now);
        t.drop_user("alice");
        assert!(t.resolve("a.1", 1, now).is_err());
        assert!(t.resolve("b.2", 1, now).is_ok());
        t.drop_all();
        assert!(t.resolve("b.2", 1, now).is_err());
    }

    #[test]
    fn simple_prefix_is_random_alphanumeric() {
        let (a, b) = (Tokens::simple_prefix(), Tokens::simple_prefix());
        assert_eq!(a.len(), SIMPLE_TOKEN_CHARS);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn jwt_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"a shared secret of enough length").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=1m", secret.display());
        let t = Tokens::new(TokenKind::parse(&spec, Duration::from_secs(1)).unwrap());
        let tok = t.sign_jwt("alice", 42).unwrap();
        let info = t.resolve(&tok, 99, Instant::now()).unwrap();
        assert_eq!(
            info,
            AuthInfo {
                user: "alice".into(),
                revision: 42
            }
        );
        let mut bad = tok.clone();
        bad.pop();
        assert_eq!(
            t.resolve(&bad, 1, Instant::now()),
            Err(ApiError::InvalidAuthToken)
        );
    }

    #[test]
    fn auth_token_spec_errors() {
        let ttl = Duration::from_secs(1);
        assert!(TokenKind::parse("simple", ttl).is_ok());
        assert!(TokenKind::parse("nope", ttl).is_err());
        assert!(TokenKind::parse("jwt", ttl).is_err());
        assert!(TokenKind::parse("jwt,sign-method=XX1", ttl).is_err());
        assert!(TokenKind::parse("jwt,sign-method=RS256,pub-key=/nonexistent", ttl).is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
