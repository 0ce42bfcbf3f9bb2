//! etcd's plain HTTP endpoints on the client URL: `/health`, `/readyz`,
//! `/livez`, `/metrics`, `/version`.

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tonic::body::Body;

use crate::http::{ETCD_COMPAT_CLUSTER_VERSION, ETCD_COMPAT_VERSION};
use crate::metrics::METRICS;
use crate::node::route::Api;

pub async fn dispatch(api: &Api, req: http::Request<Incoming>) -> http::Response<Body> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/health" | "/readyz" | "/livez" | "/metrics" | "/version"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/health" | "/readyz" => health(api).await,
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            METRICS.render().into(),
        ),
        "/version" => json(StatusCode::OK, version_body()),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn version_body() -> String {
    serde_json::json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_COMPAT_CLUSTER_VERSION,
        "corekv": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

async fn health(api: &Api) -> http::Response<Body> {
    match api.health().await {
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

pub fn json(code: StatusCode, body: String) -> http::Response<Body> {
    respond(code, "application/json", body.into())
}

pub fn text(code: StatusCode, body: &'static str) -> http::Response<Body> {
    respond(
        code,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn respond(code: StatusCode, content_type: &'static str, body: Bytes) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(Full::new(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
