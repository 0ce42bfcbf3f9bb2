//! etcdctl-shaped output: `simple`, `json` (Go's encoding/json of etcd's
//! protobuf structs: the same field names, zero values omitted, bytes in
//! base64), `table` and `fields` (`fields.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use corekv_wire::messages as w;
use serde_json::{Map, Value, json};

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Simple,
    Json,
    Table,
    Fields,
}

fn insert_nonzero(m: &mut Map<String, Value>, k: &str, v: i64) {
    if v != 0 {
        m.insert(k.into(), json!(v));
    }
}

pub fn header_json(h: &w::ResponseHeader) -> Value {
    let mut m = Map::new();
    if h.cluster_id != 0 {
        m.insert("cluster_id".into(), json!(h.cluster_id));
    }
    if h.member_id != 0 {
        m.insert("member_id".into(), json!(h.member_id));
    }
    insert_nonzero(&mut m, "revision", h.revision);
    if h.raft_term != 0 {
        m.insert("raft_term".into(), json!(h.raft_term));
    }
    Value::Object(m)
}

pub fn kv_json(kv: &w::KeyValue) -> Value {
    let mut m = Map::new();
    if !kv.key.is_empty() {
        m.insert("key".into(), json!(B64.encode(&kv.key)));
    }
    insert_nonzero(&mut m, "create_revision", kv.create_revision);
    insert_nonzero(&mut m, "mod_revision", kv.mod_revision);
    insert_nonzero(&mut m, "version", kv.version);
    if !kv.value.is_empty() {
        m.insert("value".into(), json!(B64.encode(&kv.value)));
    }
    insert_nonzero(&mut m, "lease", kv.lease);
    Value::Object(m)
}

pub fn range_json(r: &w::RangeResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&r.header));
    if !r.kvs.is_empty() {
        m.insert(
            "kvs".into(),
            Value::Array(r.kvs.iter().map(kv_json).collect()),
        );
    }
    if r.more {
        m.insert("more".into(), json!(true));
    }
    insert_nonzero(&mut m, "count", r.count);
    Value::Object(m)
}

pub fn put_json(r: &w::PutResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&r.header));
    if let Some(kv) = &r.prev_kv {
        m.insert("prev_kv".into(), kv_json(kv));
    }
    Value::Object(m)
}

pub fn delete_json(r: &w::DeleteRangeResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&r.header));
    insert_nonzero(&mut m, "deleted", r.deleted);
    if !r.prev_kvs.is_empty() {
        m.insert(
            "prev_kvs".into(),
            Value::Array(r.prev_kvs.iter().map(kv_json).collect()),
        );
    }
    Value::Object(m)
}

pub fn member_json(mb: &w::Member) -> Value {
    let mut m = Map::new();
    m.insert("ID".into(), json!(mb.id));
    if !mb.name.is_empty() {
        m.insert("name".into(), json!(mb.name));
    }
    if !mb.peer_urls.is_empty() {
        m.insert("peerURLs".into(), json!(mb.peer_urls));
    }
    if !mb.client_urls.is_empty() {
        m.insert("clientURLs".into(), json!(mb.client_urls));
    }
    if mb.is_learner {
        m.insert("isLearner".into(), json!(true));
    }
    Value::Object(m)
}

pub fn status_json(endpoint: &str, s: &w::StatusResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&s.header));
    m.insert("version".into(), json!(s.version));
    insert_nonzero(&mut m, "dbSize", s.db_size);
    if s.leader != 0 {
        m.insert("leader".into(), json!(s.leader));
    }
    for (k, v) in [
        ("raftIndex", s.raft_index),
        ("raftTerm", s.raft_term),
        ("raftAppliedIndex", s.raft_applied_index),
    ] {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    if !s.errors.is_empty() {
        m.insert("errors".into(), json!(s.errors));
    }
    insert_nonzero(&mut m, "dbSizeInUse", s.db_size_in_use);
    if s.is_learner {
        m.insert("isLearner".into(), json!(true));
    }
    json!({"Endpoint": endpoint, "Status": Value::Object(m)})
}

/// Bytes in the style of Go's humanize.Bytes (SI units), as etcdctl prints
/// DB SIZE.
pub fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 10.0 {
        return format!("{n} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = (n.ln() / 1000f64.ln()).floor().min(6.0);
    let v = n / 1000f64.powf(e);
    let unit = units[e as usize];
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// etcdctl's simple form of a table: each row's cells joined by ", ".
pub fn print_simple_rows(rows: &[Vec<String>]) {
    for r in rows {
        println!("{}", r.join(", "));
    }
}

/// A plain ASCII table like etcdctl's (tablewriter).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let sep = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:^w$} "))
            .collect();
        format!("|{}|\n", padded.join("|"))
    };
    let mut out = sep.clone();
    out.push_str(&line(headers.iter().map(|h| h.to_string()).collect()));
    out.push_str(&sep);
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out.push_str(&sep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_etcdctl_shape() {
        let kv = w::KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        };
        assert_eq!(
            kv_json(&kv).to_string(),
            r#"{"create_revision":2,"key":"Zm9v","mod_revision":2,"value":"YmFy","version":1}"#
        );
    }

    #[test]
    fn human_bytes_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn table_has_borders() {
        let t = table(&["A", "BB"], &[vec!["x".into(), "y".into()]]);
        assert!(t.starts_with("+---+----+\n|"));
        assert_eq!(t.lines().count(), 5);
    }
}
