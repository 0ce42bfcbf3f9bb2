//! etcdctl's txn syntax, parsed into a native `Txn`.
//!
//! ```text
//! compares:          value("k") = "v"   |  mod("k") > "5"   |  create("k") = "0"
//!                    version("k") != "3" | lease("k") = "694d77aa9e38260f"
//! requests:          put k v [--lease=ID] [--prev-kv] | get k [range_end] [--prefix] ... | del k [--prefix]
//! ```
//! Keys and values may be quoted with double quotes; `\"` and `\\` escape.

use corekv_wire::messages as w;

/// Splits a line into words, honouring double quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => cur.push(e),
                            None => return Err(format!("unterminated escape in {line:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated quote in {line:?}")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses one compare line, e.g. `mod("key") > "5"`.
pub fn parse_compare(line: &str) -> Result<w::Compare, String> {
    let bad = || format!("malformed comparison: {line:?}");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let target = line[..open].trim();
    let key_words = split_words(&line[open + 1..close])?;
    let [key] = key_words.as_slice() else {
        return Err(bad());
    };
    let rest = split_words(&line[close + 1..])?;
    let [op, operand] = rest.as_slice() else {
        return Err(bad());
    };
    let result = match op.as_str() {
        "=" | "==" => w::CompareResult::Equal,
        "!=" => w::CompareResult::NotEqual,
        ">" => w::CompareResult::Greater,
        "<" => w::CompareResult::Less,
        other => return Err(format!("unknown comparison operator {other:?} in {line:?}")),
    };
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("invalid number {s:?} in {line:?}"))
    };
    let target = match target.to_ascii_lowercase().as_str() {
        "ver" | "version" => w::CompareTarget::Version(int(operand)?),
        "c" | "create" => w::CompareTarget::CreateRevision(int(operand)?),
        "m" | "mod" => w::CompareTarget::ModRevision(int(operand)?),
        "val" | "value" => w::CompareTarget::Value(operand.as_bytes().to_vec()),
        "lease" => w::CompareTarget::Lease(
            i64::from_str_radix(operand, 16)
                .map_err(|_| format!("invalid lease ID {operand:?} in {line:?}"))?,
        ),
        other => return Err(format!("unknown compare target {other:?} in {line:?}")),
    };
    Ok(w::Compare {
        result,
        target,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
    })
}

/// The key range etcdctl's `--prefix` denotes: every key starting with `key`
/// (`\0` for an empty key: the whole key space).
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key and range end of a `get`/`del` line: `key [range_end]`, or
/// `--prefix` / `--from-key` ranges.
fn key_and_end(
    cmd: &str,
    pos: &[&String],
    has: &dyn Fn(&str) -> bool,
    line: &str,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (key, end) = match pos {
        [k] => (k.as_bytes().to_vec(), Vec::new()),
        [k, e] => (k.as_bytes().to_vec(), e.as_bytes().to_vec()),
        _ => {
            return Err(format!(
                "{cmd} needs a key and an optional range end: {line:?}"
            ));
        }
    };
    let end = if has("--prefix") {
        prefix_end(&key)
    } else if has("--from-key") {
        vec![0]
    } else {
        end
    };
    Ok((key, end))
}

/// Parses one request line of a txn (`put`, `get`, `del`).
pub fn parse_op(line: &str) -> Result<w::Op, String> {
    let words = split_words(line)?;
    let (cmd, args) = words
        .split_first()
        .ok_or_else(|| "empty request".to_string())?;
    let (flags, pos): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.starts_with("--"));
    let has = |f: &str| flags.iter().any(|x| x.as_str() == f);
    let flag_value = |f: &str| flags.iter().find_map(|x| x.strip_prefix(&format!("{f}=")));
    match cmd.as_str() {
        "put" => {
            let [k, v] = pos.as_slice() else {
                return Err(format!("put needs a key and a value: {line:?}"));
            };
            let lease = match flag_value("--lease") {
                Some(l) => {
                    i64::from_str_radix(l, 16).map_err(|_| format!("invalid lease ID {l:?}"))?
                }
                None => 0,
            };
            Ok(w::Op::Put(w::PutRequest {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
                lease,
                prev_kv: has("--prev-kv"),
                ignore_value: has("--ignore-value"),
                ignore_lease: has("--ignore-lease"),
            }))
        }
        "get" => {
            let (key, end) = key_and_end("get", &pos, &has, line)?;
            let limit = match flag_value("--limit") {
                Some(l) => l.parse().map_err(|_| format!("invalid --limit {l:?}"))?,
                None => 0,
            };
            Ok(w::Op::Range(w::RangeRequest {
                key,
                range_end: end,
                limit,
                keys_only: has("--keys-only"),
                count_only: has("--count-only"),
                ..Default::default()
            }))
        }
        "del" | "delete" => {
            let (key, end) = key_and_end("del", &pos, &has, line)?;
            Ok(w::Op::DeleteRange(w::DeleteRangeRequest {
                key,
                range_end: end,
                prev_kv: has("--prev-kv"),
            }))
        }
        other => Err(format!(
            "unknown request {other:?} (expected put, get or del)"
        )),
    }
}

/// Reads etcdctl's non-interactive txn input: compares, a blank line,
/// success requests, a blank line, failure requests.
pub fn parse_txn(input: &str) -> Result<w::Txn, String> {
    let mut sections: [Vec<&str>; 3] = Default::default();
    let mut section = 0;
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() {
            section += 1;
            if section > 2 {
                break;
            }
            continue;
        }
        sections[section].push(line);
    }
    Ok(w::Txn {
        compare: sections[0]
            .iter()
            .map(|l| parse_compare(l))
            .collect::<Result<_, _>>()?,
        success: sections[1]
            .iter()
            .map(|l| parse_op(l))
            .collect::<Result<_, _>>()?,
        failure: sections[2]
            .iter()
            .map(|l| parse_op(l))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_parse() {
        let c = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(c.key, b"key1");
        assert_eq!(c.result, w::CompareResult::Greater);
        assert_eq!(c.target, w::CompareTarget::ModRevision(0));
        let c = parse_compare(r#"value("a b") = "x y""#).unwrap();
        assert_eq!(c.key, b"a b");
        assert_eq!(c.target, w::CompareTarget::Value(b"x y".to_vec()));
        assert!(parse_compare(r#"mod("k") ~ "1""#).is_err());
        assert!(parse_compare(r#"mod("k") > "x""#).is_err());
        assert!(parse_compare("nonsense").is_err());
    }

    #[test]
    fn txn_sections() {
        let t = parse_txn("mod(\"k\") > \"0\"\n\nput k v\nget k --prefix\n\ndel k\n").unwrap();
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.success.len(), 2);
        assert_eq!(t.failure.len(), 1);
        match &t.success[1] {
            w::Op::Range(r) => assert_eq!(r.range_end, b"l"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
