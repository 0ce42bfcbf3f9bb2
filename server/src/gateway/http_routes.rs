//! etcd's plain HTTP endpoints on the gRPC port: `/health`, `/readyz`,
//! `/livez`, `/metrics`, `/version`, with the same answers as
//! `crate::http` (the standalone HTTP listener).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::{ETCD_COMPAT_CLUSTER_VERSION, ETCD_COMPAT_VERSION, HealthProbe};
use crate::metrics::METRICS;

/// Adds the HTTP routes to the gRPC router.
pub fn add(router: Router, probe: HealthProbe) -> Router {
    let ready_probe = probe.clone();
    router
        .route("/health", get(move || health(probe.clone())))
        .route("/readyz", get(move || health(ready_probe.clone())))
        .route("/livez", get(|| async { text(StatusCode::OK, "ok\n") }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    METRICS.render(),
                )
                    .into_response()
            }),
        )
        .route(
            "/version",
            get(|| async { json(StatusCode::OK, version_body()) }),
        )
}

fn version_body() -> String {
    serde_json::json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_COMPAT_CLUSTER_VERSION,
        "corekv": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

/// The probe blocks (a linearizable round trip), so it runs off the
/// runtime's workers.
async fn health(probe: HealthProbe) -> Response {
    let result = tokio::task::spawn_blocking(move || probe())
        .await
        .unwrap_or_else(|e| Err(format!("health probe failed: {e}")));
    match result {
        Ok(()) => json(
            StatusCode::OK,
            "{\"health\":\"true\",\"reason\":\"\"}".into(),
        ),
        Err(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": reason}).to_string(),
        ),
    }
}

fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(code: StatusCode, body: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}
