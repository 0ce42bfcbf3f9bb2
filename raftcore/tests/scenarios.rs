//! Scripted scenario tests: each file in `testdata/` is a list of blocks
//!
//! ```text
//! command args...
//! ----
//! expected output
//! <blank line>
//! ```
//!
//! run against `common::Net`. Output is the full trace (every delivered
//! message, statuses), so any behaviour change shows up as a diff. After an
//! intended change, regenerate with `REWRITE=1 cargo test -p corekv-raftcore
//! --test scenarios` and review the diff.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{Net, fmt_msg};
use corekv_raftcore::{ConfChange, Config, NodeId, Role, SnapshotMeta};

fn ids(s: &str) -> Vec<NodeId> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("node id"))
        .collect()
}

fn arg<'a>(args: &'a [&'a str], i: usize) -> &'a str {
    args.get(i)
        .copied()
        .unwrap_or_else(|| panic!("missing argument {i}"))
}

fn num(args: &[&str], i: usize) -> u64 {
    arg(args, i).parse().expect("number")
}

struct Runner {
    net: Option<Net>,
}

impl Runner {
    fn net(&mut self) -> &mut Net {
        self.net.as_mut().expect("`cluster` must come first")
    }

    fn status(&mut self) -> String {
        let mut out = String::new();
        for (id, n) in &self.net().nodes {
            let s = n.raw.status();
            let role = match s.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            };
            let _ = writeln!(
                out,
                "{id}: {role} term={} leader={} commit={} applied={} log={}..{} voters={:?} learners={:?}",
                s.term,
                s.leader.unwrap_or(0),
                s.commit,
                s.applied,
                s.first_index,
                s.last_index,
                s.conf_state.voters,
                s.conf_state.learners
            );
        }
        out
    }

    fn run(&mut self, line: &str) -> String {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (parts[0], &parts[1..]);
        let res = match cmd {
            "cluster" => {
                let mut cfg = Config {
                    pre_vote: false,
                    check_quorum: false,
                    snapshot_catch_up_entries: 0,
                    ..Config::new(1)
                };
                let (mut voters, mut learners) = (Vec::new(), Vec::new());
                for a in args {
                    let (k, v) = a.split_once('=').expect("key=value");
                    match k {
                        "voters" => voters = ids(v),
                        "learners" => learners = ids(v),
                        "pre_vote" => cfg.pre_vote = v == "true",
                        "check_quorum" => cfg.check_quorum = v == "true",
                        _ => panic!("unknown cluster option {k}"),
                    }
                }
                self.net = Some(Net::new(&voters, &learners, cfg));
                Ok(String::new())
            }
            "campaign" => self
                .net()
                .node(num(args, 0))
                .campaign()
                .map(|_| String::new()),
            "tick" => {
                let (id, n) = (num(args, 0), num(args, 1));
                self.net().tick(id, n as usize);
                Ok(String::new())
            }
            "tick-all" => {
                let n = num(args, 0);
                self.net().tick_all(n as usize);
                Ok(String::new())
            }
            "propose" => self
                .net()
                .node(num(args, 0))
                .propose(arg(args, 1).as_bytes().to_vec())
                .map(|i| format!("index {i}\n")),
            "read-index" => {
                let (id, ctx) = (num(args, 0), num(args, 1));
                self.net().node(id).read_index(ctx).map(|_| String::new())
            }
            "transfer-leader" => {
                let (id, to) = (num(args, 0), num(args, 1));
                self.net().node(id).transfer_leader(to);
                Ok(String::new())
            }
            "add-node" => {
                let id = num(args, 0);
                self.net().add_node(id);
                Ok(String::new())
            }
            "conf-change" => {
                let (leader, id) = (num(args, 0), num(args, 2));
                let cc = match arg(args, 1) {
                    "add-voter" => ConfChange::AddVoter {
                        id,
                        context: vec![],
                    },
                    "add-learner" => ConfChange::AddLearner {
                        id,
                        context: vec![],
                    },
                    "promote" => ConfChange::Promote { id },
                    "remove" => ConfChange::Remove { id },
                    other => panic!("unknown conf change {other}"),
                };
                self.net()
                    .node(leader)
                    .propose_conf_change(cc)
                    .map(|i| format!("index {i}\n"))
            }
            "compact" => {
                let id = num(args, 0);
                let n = self.net().nodes.get_mut(&id).expect("node");
                let applied = n.applied.len() as u64;
                let meta = SnapshotMeta {
                    index: applied,
                    term: n.applied[applied as usize - 1].term,
                    conf_state: n.conf.clone(),
                };
                let base = n.snap.as_ref().map_or(0, |s| s.index);
                n.wal.drain(..(applied - base) as usize);
                n.snap = Some(meta.clone());
                n.raw.on_snapshot_taken(meta);
                Ok(format!("compacted to {applied}\n"))
            }
            "isolate" => {
                let id = num(args, 0);
                self.net().isolate(id);
                Ok(String::new())
            }
            "heal" => {
                self.net().heal();
                Ok(String::new())
            }
            "restart" => {
                let id = num(args, 0);
                self.net().restart(id);
                Ok(String::new())
            }
            "stabilize" => {
                let msgs = self.net().stabilize();
                let mut out: String = msgs.iter().map(|m| fmt_msg(m) + "\n").collect();
                let reads: Vec<String> = self
                    .net()
                    .nodes
                    .iter_mut()
                    .flat_map(|(id, n)| {
                        let id = *id;
                        n.read_states
                            .drain(..)
                            .map(move |r| format!("{id}: read ctx={} index={}\n", r.ctx, r.index))
                    })
                    .collect();
                out.extend(reads);
                Ok(out)
            }
            "status" => Ok(self.status()),
            "applied" => {
                let id = num(args, 0);
                let data: Vec<String> = self
                    .net()
                    .applied_data(id)
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect();
                Ok(format!("{}\n", data.join(" ")))
            }
            other => panic!("unknown command {other}"),
        };
        match res {
            Ok(s) if s.is_empty() => "ok\n".to_string(),
            Ok(s) => s,
            Err(e) => format!("error: {e}\n"),
        }
    }
}

fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read testdata");
    let mut runner = Runner { net: None };
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') || line.trim().is_empty() {
            rewritten += line;
            rewritten += "\n";
            continue;
        }
        let cmd = line;
        assert_eq!(
            lines.next(),
            Some("----"),
            "{}: `----` after `{cmd}`",
            path.display()
        );
        let mut expected = String::new();
        while let Some(l) = lines.peek() {
            if l.is_empty() {
                break;
            }
            expected += l;
            expected += "\n";
            lines.next();
        }
        let actual = runner.run(cmd);
        if actual != expected {
            failures.push(format!(
                "`{cmd}`:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
        rewritten += &format!("{cmd}\n----\n{actual}");
    }
    if std::env::var("REWRITE").is_ok() {
        std::fs::write(path, rewritten).expect("rewrite testdata");
        return;
    }
    assert!(
        failures.is_empty(),
        "{}: {} block(s) differ:\n{}",
        path.display(),
        failures.len(),
        failures.join("\n")
    );
}

fn scenario(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    run_file(&path);
}

#[test]
fn pre_vote() {
    scenario("pre_vote.txt");
}

#[test]
fn check_quorum() {
    scenario("check_quorum.txt");
}

#[test]
fn leader_transfer() {
    scenario("leader_transfer.txt");
}

#[test]
fn learner_promotion() {
    scenario("learner_promotion.txt");
}

#[test]
fn snapshot_catch_up() {
    scenario("snapshot_catch_up.txt");
}

#[test]
fn read_index() {
    scenario("read_index.txt");
}
