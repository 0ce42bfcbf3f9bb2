//! etcdctl 3.4 against members changing membership: a session that grows
//! a cluster the way etcdctl says to (and corekvctl and the JSON gateway
//! agree), and the same `member` commands against a live etcd 3.4 and
//! corekv with the same output once ids and URLs are placeholders.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::members::*;
use common::*;
use corekv_wire::messages as w;

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=10s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl not found: run scripts/install-test-deps.sh")
}

/// etcdctl's error line (it logs its client's retries as JSON lines first,
/// against etcd too).
fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

/// POSTs JSON to a member's HTTP/JSON gateway; the status code and the
/// raw body (`Connection: close`, read to the end).
fn post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn stdout_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_session() {
    let dir = tmp();
    let mut cluster = Cluster::start(1, &[]).await;
    let ep = format!("127.0.0.1:{}", cluster.members[0].spec.http);
    let cid = cluster
        .client(0)
        .await
        .status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .cluster_id;
    let c1 = cluster.client(0).await;
    put_keys(&c1, "e", 0..20).await;

    let mut m2 = joiner(dir.path(), "m2", &[]);
    let url2 = peer_url(&m2);
    let out = {
        let (ep, url2) = (ep.clone(), url2.clone());
        tokio::task::spawn_blocking(move || {
            etcdctl(
                &ep,
                &["member", "add", "m2", &format!("--peer-urls={url2}")],
            )
        })
        .await
        .unwrap()
    };
    let text = stdout_ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    let head = format!("added to cluster {cid:16x}");
    assert!(
        lines[0].starts_with("Member ") && lines[0].ends_with(&head),
        "{text}"
    );
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[1..3], ["", "ETCD_NAME=\"m2\""], "{text}");
    assert_eq!(
        lines[4..],
        [
            format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{url2}\""),
            "ETCD_INITIAL_CLUSTER_STATE=\"existing\"".to_string(),
        ],
        "{text}"
    );
    // Members in id order (etcd's too), so either order.
    let printed = lines[3]
        .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER");
    let mut got: Vec<&str> = printed.split(',').collect();
    got.sort_unstable();
    let m1 = format!("m1={}", peer_url(&cluster.members[0]));
    let m2_entry = format!("m2={url2}");
    assert_eq!(got, [m1.as_str(), m2_entry.as_str()], "{text}");
    // Started exactly as etcdctl said.
    m2.initial_cluster = printed.to_string();
    m2.start();
    assert_same(&[&cluster.members[0], &m2], "e", 20).await;

    // The JSON gateway's member routes: etcd's errors as HTTP statuses.
    let http = cluster.members[0].spec.http;
    let (code, body) = tokio::task::spawn_blocking(move || {
        let bad = post_json(
            http,
            "/v3/cluster/member/add",
            r#"{"peerURLs":["127.0.0.1:9"]}"#,
        );
        let missing = post_json(http, "/v3/cluster/member/promote", r#"{"ID":"4660"}"#);
        assert_eq!(missing.0, 404, "{missing:?}");
        assert!(
            missing.1.contains("etcdserver: member not found"),
            "{missing:?}"
        );
        bad
    })
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("etcdserver: given member URLs are invalid"),
        "{body}"
    );

    let mut m3 = joiner(dir.path(), "m3", &[]);
    let url3 = peer_url(&m3);
    let run = |args: Vec<String>| {
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            etcdctl(&ep, &args)
        })
    };
    let out = run(vec![
        "member".into(),
        "add".into(),
        "m3".into(),
        format!("--peer-urls={url3}"),
        "--learner".into(),
    ])
    .await
    .unwrap();
    let text = stdout_ok(&out);
    let id3 = text
        .split_whitespace()
        .nth(1)
        .expect("Member <id> added ...")
        .to_string();
    let out = run(vec!["member".into(), "promote".into(), id3.clone()])
        .await
        .unwrap();
    assert_eq!(
        error_line(&out),
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    );
    m3.initial_cluster = initial_cluster(&[&cluster.members[0], &m2, &m3]);
    m3.start();
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(vec!["member".into(), "promote".into(), id3.clone()])
            .await
            .unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(
                text,
                format!("Member {id3:>16} promoted in cluster {cid:16x}\n")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run(vec!["member".into(), "list".into()]).await.unwrap();
    let text = stdout_ok(&out);
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(", ").map(str::to_owned).collect())
        .collect();
    rows.sort_by(|a, b| a[2].cmp(&b[2]));
    assert_eq!(rows.len(), 3, "{text}");
    for (row, (name, url)) in rows.iter().zip([
        ("m1", peer_url(&cluster.members[0])),
        ("m2", url2.clone()),
        ("m3", url3.clone()),
    ]) {
        assert_eq!(row[1], "started", "{text}");
        assert_eq!(row[2], name, "{text}");
        assert_eq!(row[3], url, "{text}");
        assert_eq!(row[5], "false", "{text}");
    }
    // corekvctl (native protocol) lists what etcdctl lists.
    let native = cluster.members[0].native_addr();
    let ctl = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_corekvctl"))
            .args(["--endpoints", &native, "member", "list"])
            .output()
            .expect("run corekvctl")
    })
    .await
    .unwrap();
    let mut ctl_lines: Vec<&str> = std::str::from_utf8(&ctl.stdout).unwrap().lines().collect();
    let mut etcdctl_lines: Vec<&str> = text.lines().collect();
    ctl_lines.sort_unstable();
    etcdctl_lines.sort_unstable();
    assert_eq!(ctl_lines, etcdctl_lines);
    let out = run(vec![
        "member".into(),
        "update".into(),
        id3.clone(),
        format!("--peer-urls={url3}"),
    ])
    .await
    .unwrap();
    assert_eq!(
        stdout_ok(&out),
        format!("Member {id3:>16} updated in cluster {cid:16x}\n")
    );
    let out = run(vec!["member".into(), "remove".into(), id3.clone()])
        .await
        .unwrap();
    assert_eq!(
        stdout_ok(&out),
        format!("Member {id3:>16} removed from cluster {cid:16x}\n")
    );
    let status = wait_exit(&mut m3);
    assert!(!status.success());
    let out = run(vec!["member".into(), "remove".into(), id3.clone()])
        .await
        .unwrap();
    assert_eq!(error_line(&out), "Error: etcdserver: member not found");
    assert_same(&[&cluster.members[0], &m2], "e", 20).await;
    cluster.members.extend([m2, m3]);
}

/// One etcdctl call: stdout, stderr without etcdctl's JSON log lines, and
/// the exit code.
fn etcdctl_run(endpoint: &str, args: &[String]) -> (String, String, Option<i32>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etcdctl(endpoint, &args);
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        out.status.code(),
    )
}

/// What differs between two servers, put back as placeholders: ids, URLs,
/// the first member's name and client URL; member lists and the printed
/// `--initial-cluster` are in id order (random ids), so they are sorted.
fn normalize(text: &str, subst: &[(String, &str)]) -> String {
    let mut s = text.to_string();
    for (from, to) in subst {
        s = s.replace(from.as_str(), to);
    }
    let mut lines: Vec<String> = s
        .lines()
        .map(|l| {
            if let Some(list) = l
                .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
                .and_then(|r| r.strip_suffix('"'))
            {
                let mut parts: Vec<&str> = list.split(',').collect();
                parts.sort_unstable();
                return format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","));
            }
            let mut cols: Vec<&str> = l.split(", ").collect();
            if cols.len() == 6 && !cols[4].is_empty() {
                cols[4] = "<CLIENT>";
            }
            cols.join(", ")
        })
        .collect();
    if lines.iter().all(|l| l.split(", ").count() == 6) {
        lines.sort();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The same `member` session against a fresh single member (etcd or
/// corekv): add a learner, the refusals etcd gives, update, remove.
fn member_session(ep: &str, name: &str, peer: &str) -> Vec<(String, String, String, Option<i32>)> {
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let (u2, u3, u4, u5) = (
        url(free_port()),
        url(free_port()),
        url(free_port()),
        url(free_port()),
    );
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let mut steps = vec![(
        "add learner".to_string(),
        etcdctl_run(
            ep,
            &args(&format!("member add n2 --peer-urls={u2} --learner")),
        ),
    )];
    let added = steps[0].1.0.clone();
    let mut words = added.split_whitespace();
    let id2 = words
        .nth(1)
        .unwrap_or_else(|| panic!("member add: {:?}", steps[0].1))
        .to_string();
    let cluster = words.nth(3).expect("cluster <id>").to_string();
    let list = etcdctl_run(ep, &args("member list"));
    let me = list
        .0
        .lines()
        .find(|l| l.split(", ").nth(2) == Some(name))
        .and_then(|l| l.split(", ").next())
        .expect("this member in the list")
        .to_string();
    steps.push(("list".into(), list));
    for cmd in [
        format!("member promote {id2}"),
        format!("member add n3 --peer-urls={u3} --learner"),
        format!("member update {id2} --peer-urls={u4}"),
        format!("member update {id2} --peer-urls={peer}"),
        format!("member update 1234 --peer-urls={u5}"),
        "member promote 1234".to_string(),
        format!("member promote {me}"),
        // No `member list` here: etcd 3.4 lists an updated learner as a
        // voter (its MemberUpdate overwrites the learner flag; Raft still
        // has a learner); corekv keeps it a learner.
        format!("member remove {id2}"),
        format!("member remove {id2}"),
        format!("member remove {me}"),
        "member list".to_string(),
    ] {
        steps.push((cmd.clone(), etcdctl_run(ep, &args(&cmd))));
    }
    let subst: Vec<(String, &str)> = vec![
        // etcdctl pads ids to 16 columns; ids differ in length.
        (format!("Member {id2:>16}"), "Member <ID2>"),
        (id2.clone(), "<ID2>"),
        (me.clone(), "<ME>"),
        (format!("cluster {cluster:>16}"), "cluster <CLUSTER>"),
        (cluster, "<CLUSTER>"),
        (u2, "<U2>"),
        (u3, "<U3>"),
        (u4, "<U4>"),
        (u5, "<U5>"),
        (peer.to_string(), "<PEER>"),
        (format!("{name}="), "<NAME>="),
        (format!(", {name}, "), ", <NAME>, "),
    ];
    steps
        .into_iter()
        .map(|(cmd, (out, err, code))| {
            let cmd = normalize(&cmd, &subst);
            (cmd, normalize(&out, &subst), normalize(&err, &subst), code)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_commands_answer_as_etcd() {
    let dir = tmp();
    let (client, peer) = (free_port(), free_port());
    let _etcd = etcd::start_etcd(dir.path(), client, peer, &[]);
    let ep = format!("127.0.0.1:{client}");
    let deadline = Instant::now() + WAIT;
    // Healthy, and done with its own start-up proposals (a change proposed
    // before etcd set its cluster version times out).
    let log = dir.path().join("etcd.log");
    while etcdctl_run(&ep, &["endpoint".into(), "health".into()]).2 != Some(0)
        || !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("enabled capabilities for version")
    {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want = {
        let peer = format!("http://127.0.0.1:{peer}");
        tokio::task::spawn_blocking(move || member_session(&ep, "e1", &peer))
            .await
            .unwrap()
    };
    drop(_etcd);

    let cluster = Cluster::start(1, &[]).await;
    let m = &cluster.members[0];
    let (ep, name, peer) = (
        format!("127.0.0.1:{}", m.spec.http),
        m.spec.name.clone(),
        peer_url(m),
    );
    let got = tokio::task::spawn_blocking(move || member_session(&ep, &name, &peer))
        .await
        .unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "step {:?}", w.0);
    }
    assert_eq!(got.len(), want.len());
}
