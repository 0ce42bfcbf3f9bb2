//! What the HTTP endpoints (`/health`, `/version`, served by the gateway on
//! the client URL) share with the rest of the member.

use std::sync::Arc;

/// The etcd version corekv reports compatibility with (Status.version,
/// `/version`). Kubernetes enables watch progress requests from 3.4.31 on.
pub const ETCD_COMPAT_VERSION: &str = "3.4.31";
pub const ETCD_COMPAT_CLUSTER_VERSION: &str = "3.4.0";

/// Answers whether the member can serve: a leader is known and a
/// linearizable round trip through the Raft core and the apply loop works.
pub type HealthProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
