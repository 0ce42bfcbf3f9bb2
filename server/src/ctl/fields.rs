//! etcdctl's `-w fields` format: one `"Name" : value` line per field, the
//! response header first, strings quoted like Go's `%q`.

use std::fmt::Write as _;

use corekv_wire::messages as w;

/// Go's `%q` of a byte string: printable UTF-8 kept, quotes and
/// backslashes escaped, control characters and invalid bytes as escapes.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\x0b' => out.push_str("\\v"),
                c if c.is_control() => {
                    let n = c as u32;
                    if n < 0x80 {
                        let _ = write!(out, "\\x{n:02x}");
                    } else if n <= 0xffff {
                        let _ = write!(out, "\\u{n:04x}");
                    } else {
                        let _ = write!(out, "\\U{n:08x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// Accumulates the lines of one answer.
#[derive(Default)]
pub struct Fields(String);

impl Fields {
    pub fn line(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.0, "\"{name}\" : {value}");
        self
    }

    pub fn quoted(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.line(name, go_quote(value))
    }

    pub fn header(&mut self, h: &w::ResponseHeader) -> &mut Self {
        self.line("ClusterID", h.cluster_id)
            .line("MemberID", h.member_id)
            .line("Revision", h.revision)
            .line("RaftTerm", h.raft_term)
    }

    /// A key-value; `prefix` is "" or "Prev" (etcdctl's PrevKey, ...).
    pub fn kv(&mut self, prefix: &str, kv: &w::KeyValue) -> &mut Self {
        self.quoted(&format!("{prefix}Key"), &kv.key)
            .line(&format!("{prefix}CreateRevision"), kv.create_revision)
            .line(&format!("{prefix}ModRevision"), kv.mod_revision)
            .line(&format!("{prefix}Version"), kv.version)
            .quoted(&format!("{prefix}Value"), &kv.value)
            .line(&format!("{prefix}Lease"), kv.lease)
    }

    pub fn blank(&mut self) -> &mut Self {
        self.0.push('\n');
        self
    }

    pub fn print(&self) {
        print!("{}", self.0);
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

pub fn range(r: &w::RangeResponse) -> Fields {
    let mut f = Fields::default();
    f.header(&r.header);
    for kv in &r.kvs {
        f.kv("", kv);
    }
    f.line("More", r.more).line("Count", r.count);
    f
}

pub fn put(r: &w::PutResponse) -> Fields {
    let mut f = Fields::default();
    f.header(&r.header);
    if let Some(kv) = &r.prev_kv {
        f.kv("Prev", kv);
    }
    f
}

pub fn delete(r: &w::DeleteRangeResponse) -> Fields {
    let mut f = Fields::default();
    f.header(&r.header).line("Deleted", r.deleted);
    for kv in &r.prev_kvs {
        f.kv("Prev", kv);
    }
    f
}

pub fn event(f: &mut Fields, ev: &w::Event) {
    let kind = match ev.event_type {
        w::EventType::Put => "PUT",
        w::EventType::Delete => "DELETE",
    };
    f.line("Type", kind);
    if let Some(prev) = &ev.prev_kv {
        f.kv("Prev", prev);
    }
    f.kv("", &ev.kv);
}

pub fn member(f: &mut Fields, m: &w::Member) {
    f.line("ID", m.id).quoted("Name", m.name.as_bytes());
    for u in &m.peer_urls {
        f.quoted("PeerURL", u.as_bytes());
    }
    for u in &m.client_urls {
        f.quoted("ClientURL", u.as_bytes());
    }
    f.line("IsLearner", m.is_learner).blank();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote(b"\x01\xff"), "\"\\x01\\xff\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }

    #[test]
    fn range_fields_match_etcdctl() {
        let r = w::RangeResponse {
            header: w::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 5,
                raft_term: 2,
            },
            kvs: vec![w::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 5,
                mod_revision: 5,
                version: 1,
                value: b"x".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            range(&r).into_string(),
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 5\n\"RaftTerm\" : 2\n\
             \"Key\" : \"foo\"\n\"CreateRevision\" : 5\n\"ModRevision\" : 5\n\"Version\" : 1\n\
             \"Value\" : \"x\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
        );
    }
}
