//! `corekvctl alarm list|disarm`, `defrag [--cluster]`, `move-leader`,
//! with etcdctl 3.4's output and exit codes.

use clap::Subcommand;
use corekv_wire::messages as w;
use serde_json::{Value, json};

use super::fields::Fields;
use super::output::Format;
use super::{Cli, EXIT_BAD_ARGS, EXIT_ERROR, Failure, connect, connect_any, print_json};

/// etcdctl's ExitBadFeature: a valid flag with an unsupported value.
pub const EXIT_BAD_FEATURE: i32 = 4;

#[derive(Subcommand, Debug)]
pub enum AlarmCmd {
    /// Lists all alarms.
    List,
    /// Disarms all alarms.
    Disarm,
}

fn alarm_name(a: &w::AlarmType) -> &'static str {
    match a {
        w::AlarmType::None => "NONE",
        w::AlarmType::Nospace => "NOSPACE",
        w::AlarmType::Corrupt => "CORRUPT",
    }
}

fn alarm_number(a: &w::AlarmType) -> u8 {
    match a {
        w::AlarmType::None => 0,
        w::AlarmType::Nospace => 1,
        w::AlarmType::Corrupt => 2,
    }
}

pub async fn alarm(cli: &Cli, cmd: &AlarmCmd) -> Result<(), Failure> {
    if cli.write_out == Format::Table {
        return Err(Failure {
            code: EXIT_BAD_FEATURE,
            message: "table not supported as output format".into(),
        });
    }
    let client = connect_any(cli).await?;
    let list = client
        .alarm(w::AlarmRequest {
            action: w::AlarmAction::Get,
            member_id: 0,
            alarm: w::AlarmType::None,
        })
        .await?;
    let resp = match cmd {
        AlarmCmd::List => list,
        // clientv3's AlarmDisarm with no member and no type: list, then
        // deactivate each alarm; the answer lists what was disarmed.
        AlarmCmd::Disarm => {
            let mut disarmed = w::AlarmResponse {
                header: list.header.clone(),
                alarms: Vec::new(),
            };
            for a in list.alarms {
                let r = client
                    .alarm(w::AlarmRequest {
                        action: w::AlarmAction::Deactivate,
                        member_id: a.member_id,
                        alarm: a.alarm,
                    })
                    .await?;
                disarmed.header = r.header;
                disarmed.alarms.extend(r.alarms);
            }
            disarmed
        }
    };
    print_alarms(cli.write_out, &resp);
    Ok(())
}

fn print_alarms(format: Format, resp: &w::AlarmResponse) {
    match format {
        // etcdctl prints the proto text form: note the trailing space.
        Format::Simple | Format::Table => {
            for a in &resp.alarms {
                println!("memberID:{} alarm:{} ", a.member_id, alarm_name(&a.alarm));
            }
        }
        // etcd's Alarm answer carries no header; its JSON has none either.
        Format::Json => {
            let mut m = serde_json::Map::new();
            if !resp.alarms.is_empty() {
                let alarms: Vec<Value> = resp
                    .alarms
                    .iter()
                    .map(|a| json!({"memberID": a.member_id, "alarm": alarm_number(&a.alarm)}))
                    .collect();
                m.insert("alarms".into(), Value::Array(alarms));
            }
            print_json(&Value::Object(m));
        }
        Format::Fields => {
            let mut f = Fields::default();
            f.header(&resp.header);
            for a in &resp.alarms {
                f.line("MemberID", a.member_id)
                    .line("AlarmType", alarm_name(&a.alarm));
            }
            f.print();
        }
    }
}

/// Defragments each endpoint in turn (etcdctl's messages); exit 1 if any failed.
pub async fn defrag(cli: &Cli, cluster: bool) -> Result<(), Failure> {
    let endpoints = super::endpoint::endpoints(cli, cluster).await?;
    let mut failures = 0;
    for ep in &endpoints {
        let result = async {
            let c = connect(cli, ep).await?;
            c.defragment(w::DefragmentRequest {}).await?;
            Ok::<_, Failure>(())
        }
        .await;
        match result {
            Ok(()) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({})", e.message);
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(Failure {
            code: EXIT_ERROR,
            message: format!(
                "{failures} of {} members failed to defragment",
                endpoints.len()
            ),
        });
    }
    Ok(())
}

/// Finds the leader among `--endpoints` (Status) and asks it to hand over.
pub async fn move_leader(cli: &Cli, target: &str) -> Result<(), Failure> {
    let target = u64::from_str_radix(target, 16).map_err(|e| Failure {
        code: EXIT_BAD_ARGS,
        message: format!("strconv.ParseUint: parsing {target:?}: {e}"),
    })?;
    let mut leader = None;
    for ep in &cli.endpoints {
        let c = connect(cli, ep).await?;
        let s = c.status(w::StatusRequest {}).await?;
        if s.leader != 0 && s.leader == s.header.member_id {
            leader = Some((c, s.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        return Err(Failure {
            code: EXIT_BAD_ARGS,
            message: format!("no leader endpoint given at {:?}", cli.endpoints),
        });
    };
    let resp = client
        .move_leader(w::MoveLeaderRequest { target_id: target })
        .await?;
    match cli.write_out {
        Format::Json => print_json(&json!({"header": super::output::header_json(&resp.header)})),
        Format::Fields => Fields::default().header(&resp.header).print(),
        Format::Simple | Format::Table => {
            println!("Leadership transferred from {leader_id:x} to {target:x}")
        }
    }
    Ok(())
}
