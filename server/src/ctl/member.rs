//! `corekvctl member list|add|remove|update|promote`, etcdctl 3.4's flags,
//! output and exit codes (the rules are the server's, `node/membership`).

use clap::Subcommand;
use corekv_wire::messages as w;
use serde_json::Value;

use super::fields::{self, Fields};
use super::output::{self, Format};
use super::{Cli, EXIT_BAD_ARGS, Failure, connect_any, print_json};

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Lists all members in the cluster.
    List,
    /// Adds a member into the cluster.
    Add {
        name: String,
        /// comma separated peer URLs for the new member.
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove { id: String },
    /// Updates a member in the cluster.
    Update {
        id: String,
        /// comma separated peer URLs for the updated member.
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
    },
    /// Promotes a non-voting member in the cluster.
    Promote { id: String },
}

fn parse_id(id: &str) -> Result<u64, Failure> {
    u64::from_str_radix(id, 16).map_err(|_| Failure {
        code: EXIT_BAD_ARGS,
        message: format!("bad member ID arg ({id}), expecting ID in Hex"),
    })
}

fn need_urls(urls: &[String]) -> Result<(), Failure> {
    if urls.is_empty() {
        return Err(Failure {
            code: EXIT_BAD_ARGS,
            message: "member peer urls not provided".into(),
        });
    }
    Ok(())
}

fn members_json(
    header: &w::ResponseHeader,
    members: &[w::Member],
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("header".into(), output::header_json(header));
    m.insert(
        "members".into(),
        Value::Array(members.iter().map(output::member_json).collect()),
    );
    m
}

pub async fn run(cli: &Cli, cmd: &MemberCmd) -> Result<(), Failure> {
    let client = connect_any(cli).await?;
    let format = cli.write_out;
    match cmd {
        MemberCmd::List => {
            let resp = client
                .member_list(w::MemberListRequest {
                    linearizable: false,
                })
                .await?;
            print_list(format, &resp);
        }
        MemberCmd::Add {
            name,
            peer_urls,
            learner,
        } => {
            need_urls(peer_urls)?;
            let resp = client
                .member_add(w::MemberAddRequest {
                    peer_urls: peer_urls.clone(),
                    is_learner: *learner,
                })
                .await?;
            print_add(format, name, peer_urls, &resp);
        }
        MemberCmd::Remove { id } => {
            let id = parse_id(id)?;
            let resp = client.member_remove(w::MemberRemoveRequest { id }).await?;
            print_change(format, "removed from", id, &resp.header, &resp.members);
        }
        MemberCmd::Update { id, peer_urls } => {
            let id = parse_id(id)?;
            need_urls(peer_urls)?;
            let resp = client
                .member_update(w::MemberUpdateRequest {
                    id,
                    peer_urls: peer_urls.clone(),
                })
                .await?;
            print_change(format, "updated in", id, &resp.header, &resp.members);
        }
        MemberCmd::Promote { id } => {
            let id = parse_id(id)?;
            let resp = client
                .member_promote(w::MemberPromoteRequest { id })
                .await?;
            print_change(format, "promoted in", id, &resp.header, &resp.members);
        }
    }
    Ok(())
}

/// etcdctl shows a member without a name (added, not started yet) as
/// "unstarted".
fn status_of(m: &w::Member) -> &'static str {
    if m.name.is_empty() {
        "unstarted"
    } else {
        "started"
    }
}

fn print_list(format: Format, resp: &w::MemberListResponse) {
    let rows: Vec<Vec<String>> = resp
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                status_of(m).into(),
                m.name.clone(),
                m.peer_urls.join(","),
                m.client_urls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    match format {
        Format::Json => print_json(&Value::Object(members_json(&resp.header, &resp.members))),
        Format::Simple => output::print_simple_rows(&rows),
        Format::Table => print!(
            "{}",
            output::table(
                &[
                    "ID",
                    "STATUS",
                    "NAME",
                    "PEER ADDRS",
                    "CLIENT ADDRS",
                    "IS LEARNER"
                ],
                &rows
            )
        ),
        Format::Fields => {
            let mut f = Fields::default();
            f.header(&resp.header);
            for m in &resp.members {
                fields::member(&mut f, m);
            }
            f.print();
        }
    }
}

fn print_add(format: Format, name: &str, peer_urls: &[String], resp: &w::MemberAddResponse) {
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    match format {
        Format::Json => {
            let mut m = members_json(&resp.header, &resp.members);
            if let Some(member) = &resp.member {
                m.insert("member".into(), output::member_json(member));
            }
            print_json(&Value::Object(m));
        }
        Format::Fields => {
            let mut f = Fields::default();
            f.header(&resp.header);
            if let Some(member) = &resp.member {
                fields::member(&mut f, member);
            }
            f.print();
        }
        Format::Simple | Format::Table => {
            println!(
                "Member {new_id:16x} added to cluster {:16x}",
                resp.header.cluster_id
            );
            // What the new member needs to start (etcdctl's env block).
            let conf: Vec<String> = resp
                .members
                .iter()
                .flat_map(|m| {
                    let n = if m.id == new_id { name } else { &m.name };
                    m.peer_urls.iter().map(move |u| format!("{n}={u}"))
                })
                .collect();
            println!();
            println!("ETCD_NAME={:?}", name);
            println!("ETCD_INITIAL_CLUSTER={:?}", conf.join(","));
            println!("ETCD_INITIAL_ADVERTISE_PEER_URLS={:?}", peer_urls.join(","));
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
        }
    }
}

fn print_change(
    format: Format,
    verb: &str,
    id: u64,
    header: &w::ResponseHeader,
    members: &[w::Member],
) {
    match format {
        Format::Json => print_json(&Value::Object(members_json(header, members))),
        Format::Fields => {
            let mut f = Fields::default();
            f.header(header);
            for m in members {
                fields::member(&mut f, m);
            }
            f.print();
        }
        Format::Simple | Format::Table => {
            println!("Member {id:16x} {verb} cluster {:16x}", header.cluster_id)
        }
    }
}
