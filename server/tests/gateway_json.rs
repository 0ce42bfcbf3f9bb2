//! etcd's HTTP/JSON gateway (`POST /v3/...`) on a real member, compared
//! field by field with etcd 3.4's answers to the same requests, recorded in
//! `fixtures/etcd-3.4-json.json` by `fixtures/record_etcd_json.py` (so the
//! suite runs without etcd).
//!
//! Normalised before comparing: header `cluster_id`, `member_id` and
//! `raft_term` (member identities; their presence is compared); steps marked
//! `shape_only` (Status, MemberList: versions, sizes, URLs) compare field
//! names only; a compaction cancel's `cancel_reason`, which corekv adds (etcd
//! 3.4 leaves it empty).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Cluster;
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/etcd-3.4-json.json");

/// POSTs `body`; returns the status and the raw (de-chunked) body. A watch
/// reads until one second passes without data.
fn post(port: u16, path: &str, body: &str, watch: bool) -> (u16, String) {
    post_as(port, path, body, watch, None)
}

/// `post` with an `Authorization` header (the token, as etcd's gateway
/// takes it).
fn post_as(port: u16, path: &str, body: &str, watch: bool, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let timeout = if watch { 1 } else { 10 };
    s.set_read_timeout(Some(Duration::from_secs(timeout)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if watch && e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if watch && e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("read {path}: {e}"),
        }
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some(i) = rest.find("\r\n") {
        let Ok(n) = usize::from_str_radix(rest[..i].trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < i + 2 + n {
            break;
        }
        out.push_str(&rest[i + 2..i + 2 + n]);
        rest = rest.get(i + 2 + n + 2..).unwrap_or("");
    }
    out
}

fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            // Simple tokens are random.
            if let Some(t) = map.get_mut("token") {
                *t = Value::String("<token>".into());
            }
            if let Some(Value::Object(h)) = map.get_mut("header") {
                for k in ["cluster_id", "member_id", "raft_term"] {
                    if let Some(x) = h.get_mut(k) {
                        *x = Value::String("<id>".into());
                    }
                }
            }
            if map.contains_key("compact_revision") {
                map.remove("cancel_reason");
            }
            for x in map.values_mut() {
                normalize(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Field names only: every scalar becomes null.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_answers_as_etcd_3_4() {
    replay(FIXTURE).await;
}

/// Auth over JSON (`/v3/auth/*`, the token in `Authorization`) and the
/// `/v3/lease/keepalive` stream, against etcd 3.4.23's recorded answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_auth_and_lease_keepalive_answer_as_etcd_3_4() {
    replay(AUTH_FIXTURE).await;
}

const AUTH_FIXTURE: &str = include_str!("fixtures/etcd-3.4-auth-json.json");

/// Runs a recorded script on a fresh member and compares every answer.
async fn replay(fixture: &str) {
    let fixture: Value = serde_json::from_str(fixture).unwrap();
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let port = cluster.members[0].spec.http;
    // Tokens corekv issued, by step (a step may send one back).
    let mut tokens: Vec<Option<String>> = Vec::new();
    for (i, step) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        let path = step["path"].as_str().unwrap().to_string();
        let body = step["body"].to_string();
        let watch = step["watch"].as_bool().unwrap_or(false);
        let token = match (step["token_from"].as_u64(), step["token"].as_str()) {
            (Some(from), _) => Some(
                tokens[from as usize]
                    .clone()
                    .unwrap_or_else(|| panic!("step {i}: step {from} issued no token")),
            ),
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => None,
        };
        let (code, text) = tokio::task::spawn_blocking({
            let (path, body) = (path.clone(), body.clone());
            move || post_as(port, &path, &body, watch, token.as_deref())
        })
        .await
        .unwrap();
        assert_eq!(
            u64::from(code),
            step["status"].as_u64().unwrap(),
            "step {i} {path} {body}: {text}"
        );
        let mut got: Value = if watch {
            Value::Array(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            )
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("step {i}: {e}: {text}"))
        };
        tokens.push(got["token"].as_str().map(str::to_owned));
        let mut want = step["response"].clone();
        normalize(&mut got);
        normalize(&mut want);
        if step["shape_only"].as_bool().unwrap_or(false) {
            (got, want) = (shape(&got), shape(&want));
        }
        assert_eq!(
            got, want,
            "step {i} {path} {body}\n got: {got}\nwant: {want}"
        );
    }
}

/// Routes that are not etcd's are not served; GET on a JSON route is not
/// the JSON gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_refuses_what_it_does_not_serve() {
    let cluster = Cluster::start(1, &[]).await;
    let port = cluster.members[0].spec.http;
    let (code, text) = tokio::task::spawn_blocking(move || {
        post(port, "/v3/kv/range", "{\"key\": 5, \"nope\": true}", false)
    })
    .await
    .unwrap();
    assert_eq!(code, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], 3, "{text}");
    let (code, _) = tokio::task::spawn_blocking(move || post(port, "/v3/kv/nothing", "{}", false))
        .await
        .unwrap();
    assert_eq!(code, 404);
}
