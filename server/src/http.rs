//! Version constants the client-URL endpoints (`/version`, Status.version)
//! report; the endpoints themselves are in `gateway`.

/// The etcd version corekv reports compatibility with (Status.version,
/// `/version`). Kubernetes enables watch progress requests from 3.4.31 on.
pub const ETCD_COMPAT_VERSION: &str = "3.4.31";
pub const ETCD_COMPAT_CLUSTER_VERSION: &str = "3.4.0";
