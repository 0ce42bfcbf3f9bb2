//! `corekvctl`: an etcdctl-like CLI over the native protocol.
//!
//! Commands, flags, output formats, messages and exit codes follow etcdctl
//! v3 so scripts written for etcdctl keep working: errors print
//! `Error: <etcd message>` on stderr and exit 1; a connection failure exits
//! 2 (etcdctl's ExitBadConnection); bad arguments exit 128 (ExitBadArgs).

pub mod auth;
pub mod check;
pub mod endpoint;
pub mod fields;
pub mod lease;
pub mod maint;
pub mod member;
pub mod output;
pub mod snapshot;
pub mod txn_parse;
pub mod watch;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use corekv_wire::messages as w;
use corekv_wire::{Client, ClientOptions, WireError};
use output::Format;
use serde_json::Value;

pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_BAD_ARGS: i32 = 128;

#[derive(Parser, Debug)]
#[command(
    name = "corekvctl",
    version,
    about = "A simple command line client for corekv (etcdctl-compatible)."
)]
pub struct Cli {
    /// Native-protocol endpoints (host:port), comma separated.
    #[arg(
        long,
        global = true,
        env = "COREKVCTL_ENDPOINTS",
        default_value = "127.0.0.1:2378",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Dial timeout for client connections.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Timeout for short running commands (excluding dial timeout).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Output format: simple, json, table or fields.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple"
    )]
    pub write_out: Format,
    /// Print hex member ids and revision numbers in JSON as hex strings (etcdctl's --hex).
    #[arg(long, global = true)]
    pub hex: bool,
    /// username[:password] for authentication (prompt if password is not supplied).
    #[arg(long = "user", id = "global-user", global = true)]
    pub user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password).
    #[arg(long = "password", id = "global-password", global = true)]
    pub password: Option<String>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long = "cacert", id = "global-cacert", global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// identify secure client using this TLS certificate file.
    #[arg(long = "cert", id = "global-cert", global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// identify secure client using this TLS key file.
    #[arg(long = "key", id = "global-key", global = true)]
    pub key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum SortBy {
    Create,
    Key,
    Modify,
    Value,
    Version,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Order {
    Ascend,
    Descend,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Puts the given key into the store.
    Put {
        key: String,
        /// The value; read from stdin when omitted.
        value: Option<String>,
        /// lease ID (in hexadecimal) to attach to the key.
        #[arg(long, default_value = "0")]
        lease: String,
        /// return the previous key-value pair before modification.
        #[arg(long)]
        prev_kv: bool,
        /// updates the key using its current value.
        #[arg(long)]
        ignore_value: bool,
        /// updates the key using its current lease.
        #[arg(long)]
        ignore_lease: bool,
    },
    /// Gets the key or a range of keys.
    Get {
        key: String,
        range_end: Option<String>,
        /// Linearizable(l) or Serializable(s).
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Order of results; ASCEND or DESCEND (ASCEND by default).
        #[arg(long, value_enum)]
        order: Option<Order>,
        /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
        #[arg(long, value_enum)]
        sort_by: Option<SortBy>,
        /// Maximum number of results.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Get keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Get keys that are greater than or equal to the given key using byte compare.
        #[arg(long)]
        from_key: bool,
        /// Specify the kv revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Get only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Get only the count.
        #[arg(long)]
        count_only: bool,
        /// Only write values when using the "simple" output format.
        #[arg(long)]
        print_value_only: bool,
    },
    /// Removes the specified key or range of keys [key, range_end).
    Del {
        key: String,
        range_end: Option<String>,
        /// delete keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// return deleted key-value pairs.
        #[arg(long)]
        prev_kv: bool,
        /// delete keys that are greater than or equal to the given key using byte compare.
        #[arg(long)]
        from_key: bool,
    },
    /// Txn processes all the requests in one transaction (etcdctl syntax, from stdin).
    Txn {
        /// Input from stdin with prompts.
        #[arg(short = 'i', long)]
        interactive: bool,
    },
    /// Compacts the event history in corekv.
    Compaction {
        revision: i64,
        /// wait for the compaction to physically remove all old revisions.
        #[arg(long)]
        physical: bool,
    },
    /// Endpoint related commands.
    Endpoint {
        /// use all endpoints from the cluster member list
        #[arg(long, global = true)]
        cluster: bool,
        #[command(subcommand)]
        cmd: endpoint::EndpointCmd,
    },
    /// Membership related commands.
    Member {
        #[command(subcommand)]
        cmd: member::MemberCmd,
    },
    /// Watches events stream on keys or prefixes.
    Watch(watch::WatchArgs),
    /// Defragments the storage of the corekv members with given endpoints.
    Defrag {
        /// use all endpoints from the cluster member list
        #[arg(long)]
        cluster: bool,
    },
    /// Transfers leadership to another corekv cluster member.
    MoveLeader {
        /// the member id (hex) of the new leader
        transferee_id: String,
    },
    /// Alarm related commands.
    Alarm {
        #[command(subcommand)]
        cmd: maint::AlarmCmd,
    },
    /// Commands for checking properties of the corekv cluster.
    Check {
        #[command(subcommand)]
        cmd: check::CheckCmd,
    },
    /// Manages corekv node snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
    },
    /// User related commands.
    User {
        #[command(subcommand)]
        cmd: auth::UserCmd,
    },
    /// Role related commands.
    Role {
        #[command(subcommand)]
        cmd: auth::RoleCmd,
    },
    /// Enable or disable authentication.
    Auth {
        #[command(subcommand)]
        cmd: auth::AuthCmd,
    },
    /// Lease related commands.
    Lease {
        #[command(subcommand)]
        cmd: lease::LeaseCmd,
    },
    /// Acquires a named lock (holds it until interrupted, or runs a command
    /// while holding it).
    Lock {
        lockname: String,
        /// Session TTL in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        /// Command (and arguments) to run while holding the lock.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Observes and participates in leader election.
    Elect {
        election: String,
        proposal: Option<String>,
        /// Observation mode: print every leader proclamation.
        #[arg(short = 'l', long)]
        listen: bool,
        /// Session TTL in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A failed command: what to print and the exit code.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Failure {
        match e {
            WireError::Api(api) => Failure {
                code: EXIT_ERROR,
                message: api.message().to_string(),
            },
            WireError::DialTimeout { .. }
            | WireError::ConnectionClosed { .. }
            | WireError::Io { .. } => Failure {
                code: EXIT_BAD_CONNECTION,
                message: e.to_string(),
            },
            WireError::Timeout { .. } => Failure {
                code: EXIT_ERROR,
                message: "context deadline exceeded".into(),
            },
            other => Failure {
                code: EXIT_ERROR,
                message: other.to_string(),
            },
        }
    }
}

fn bad_args(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_BAD_ARGS,
        message: message.into(),
    }
}

async fn connect(cli: &Cli, endpoint: &str) -> Result<Client, Failure> {
    let opts = ClientOptions {
        dial_timeout: cli.dial_timeout,
        request_timeout: cli.command_timeout,
        ..Default::default()
    };
    let (endpoint, tls) = auth::endpoint_tls(cli, endpoint)?;
    let opts = ClientOptions { tls, ..opts };
    let client = Client::connect(&endpoint, opts).await?;
    let Some((name, password)) = auth::credentials(cli)? else {
        return Ok(client);
    };
    // As etcd's clients: a cluster without auth ignores the credentials.
    match client.authenticate(&name, &password).await {
        Ok(token) => Ok(client.with_token(Some(&token))),
        Err(WireError::Api(corekv_wire::ApiError::AuthNotEnabled)) => Ok(client),
        Err(e) => Err(e.into()),
    }
}

/// Connects to the first endpoint that answers.
async fn connect_any(cli: &Cli) -> Result<Client, Failure> {
    let mut last = None;
    for ep in &cli.endpoints {
        match connect(cli, ep).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| bad_args("no endpoints given")))
}

fn print_json(v: &Value) {
    println!("{v}");
}

fn print_kvs(kvs: &[w::KeyValue], value_only: bool, keys_only: bool) {
    let mut out = std::io::stdout().lock();
    for kv in kvs {
        if !value_only {
            let _ = out.write_all(&kv.key);
            let _ = out.write_all(b"\n");
        }
        if !keys_only {
            let _ = out.write_all(&kv.value);
            let _ = out.write_all(b"\n");
        }
    }
}

/// The (key, range_end) etcdctl sends for its key flags. An empty key with
/// `--prefix` or `--from-key` means every key (`\0`, `\0`), as in clientv3.
fn key_range(
    key: &str,
    range_end: Option<&String>,
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let key = key.as_bytes();
    if key.is_empty() && (prefix || from_key) {
        if prefix && from_key {
            return Err(bad_args(
                "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            ));
        }
        return Ok((vec![0], vec![0]));
    }
    Ok((
        key.to_vec(),
        range_end_for(key, range_end, prefix, from_key)?,
    ))
}

fn range_end_for(
    key: &[u8],
    range_end: Option<&String>,
    prefix: bool,
    from_key: bool,
) -> Result<Vec<u8>, Failure> {
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if (prefix || from_key) && range_end.is_some() {
        return Err(bad_args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
    }
    Ok(if prefix {
        txn_parse::prefix_end(key)
    } else if from_key {
        vec![0]
    } else {
        range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    })
}

fn print_range(
    cli: &Cli,
    r: &w::RangeResponse,
    value_only: bool,
    keys_only: bool,
    count_only: bool,
) {
    match cli.write_out {
        Format::Json => print_json(&output::range_json(r)),
        Format::Fields => fields::range(r).print(),
        Format::Simple if count_only => println!("{}", r.count),
        Format::Simple => print_kvs(&r.kvs, value_only, keys_only),
        Format::Table => {
            let rows: Vec<Vec<String>> = r
                .kvs
                .iter()
                .map(|kv| {
                    vec![
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["KEY", "VALUE"], &rows));
        }
    }
}

fn print_txn_op(cli: &Cli, op: &w::ResponseOp, nested: &[w::NestedTxnResponse]) {
    match op {
        w::ResponseOp::Put(_) => println!("OK"),
        w::ResponseOp::DeleteRange(d) => println!("{}", d.deleted),
        w::ResponseOp::Range(r) => print_range(cli, r, false, false, false),
        w::ResponseOp::Txn(i) => {
            if let Some(n) = nested.get(*i as usize) {
                println!("{}", if n.succeeded { "SUCCESS" } else { "FAILURE" });
                for op in &n.responses {
                    println!();
                    print_txn_op(cli, op, nested);
                }
            }
        }
    }
}

fn read_txn_input(interactive: bool) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if !interactive {
        let mut input = String::new();
        stdin
            .lock()
            .read_to_string(&mut input)
            .map_err(|e| bad_args(e.to_string()))?;
        return Ok(input);
    }
    let mut input = String::new();
    for prompt in [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ] {
        println!("{prompt}");
        loop {
            let mut line = String::new();
            let n = stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| bad_args(e.to_string()))?;
            input.push_str(&line);
            if n == 0 || line.trim().is_empty() {
                if n == 0 {
                    input.push('\n');
                }
                break;
            }
        }
        println!();
    }
    Ok(input)
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::User { cmd } => auth::user(&cli, &connect_any(&cli).await?, cmd).await?,
        Cmd::Role { cmd } => auth::role(&cli, &connect_any(&cli).await?, cmd).await?,
        Cmd::Auth { cmd } => auth::auth(&connect_any(&cli).await?, cmd).await?,
        Cmd::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        } => {
            let value = match value {
                Some(v) => v.as_bytes().to_vec(),
                None if *ignore_value => Vec::new(),
                None if !std::io::stdin().is_terminal() => {
                    let mut v = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut v)
                        .map_err(|e| bad_args(e.to_string()))?;
                    v
                }
                None => {
                    return Err(bad_args(
                        "put command needs 1 argument and input from stdin or 2 arguments",
                    ));
                }
            };
            let lease = i64::from_str_radix(lease, 16)
                .map_err(|_| bad_args(format!("bad lease ID ({lease}), expecting ID in Hex")))?;
            let client = connect_any(&cli).await?;
            let req = w::PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease,
                prev_kv: *prev_kv,
                ignore_value: *ignore_value,
                ignore_lease: *ignore_lease,
            };
            let resp = client.put(req).await?;
            match cli.write_out {
                Format::Json => print_json(&output::put_json(&resp)),
                Format::Fields => fields::put(&resp).print(),
                _ => {
                    println!("OK");
                    if let Some(kv) = &resp.prev_kv {
                        print_kvs(std::slice::from_ref(kv), false, false);
                    }
                }
            }
        }
        Cmd::Get {
            key,
            range_end,
            consistency,
            order,
            sort_by,
            limit,
            prefix,
            from_key,
            rev,
            keys_only,
            count_only,
            print_value_only,
        } => {
            let serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return Err(bad_args(format!("unknown consistency flag {other:?}"))),
            };
            let (key_bytes, range_end) = key_range(key, range_end.as_ref(), *prefix, *from_key)?;
            let sort_order = match order {
                None if sort_by.is_some() => w::SortOrder::Ascend,
                None => w::SortOrder::None,
                Some(Order::Ascend) => w::SortOrder::Ascend,
                Some(Order::Descend) => w::SortOrder::Descend,
            };
            let sort_target = match sort_by.unwrap_or(SortBy::Key) {
                SortBy::Create => w::SortTarget::Create,
                SortBy::Key => w::SortTarget::Key,
                SortBy::Modify => w::SortTarget::Mod,
                SortBy::Value => w::SortTarget::Value,
                SortBy::Version => w::SortTarget::Version,
            };
            let client = connect_any(&cli).await?;
            let req = w::RangeRequest {
                key: key_bytes,
                range_end,
                limit: *limit,
                revision: *rev,
                sort_order,
                sort_target,
                serializable,
                keys_only: *keys_only,
                count_only: *count_only,
                ..Default::default()
            };
            let resp = client.range(req).await?;
            print_range(&cli, &resp, *print_value_only, *keys_only, *count_only);
        }
        Cmd::Del {
            key,
            range_end,
            prefix,
            prev_kv,
            from_key,
        } => {
            let (key_bytes, range_end) = key_range(key, range_end.as_ref(), *prefix, *from_key)?;
            let client = connect_any(&cli).await?;
            let resp = client
                .delete_range(w::DeleteRangeRequest {
                    key: key_bytes,
                    range_end,
                    prev_kv: *prev_kv,
                })
                .await?;
            match cli.write_out {
                Format::Json => print_json(&output::delete_json(&resp)),
                Format::Fields => fields::delete(&resp).print(),
                _ => {
                    println!("{}", resp.deleted);
                    print_kvs(&resp.prev_kvs, false, false);
                }
            }
        }
        Cmd::Txn { interactive } => {
            let input = read_txn_input(*interactive)?;
            let txn = txn_parse::parse_txn(&input).map_err(bad_args)?;
            let client = connect_any(&cli).await?;
            let resp = client.txn(txn.into_request()).await?;
            match cli.write_out {
                Format::Json => print_json(&serde_json::json!({
                    "header": output::header_json(&resp.header),
                    "succeeded": resp.succeeded,
                })),
                _ => {
                    println!("{}", if resp.succeeded { "SUCCESS" } else { "FAILURE" });
                    for op in &resp.responses {
                        println!();
                        print_txn_op(&cli, op, &resp.nested);
                    }
                }
            }
        }
        Cmd::Compaction { revision, physical } => {
            let client = connect_any(&cli).await?;
            client
                .compact(w::CompactionRequest {
                    revision: *revision,
                    physical: *physical,
                })
                .await?;
            println!("compacted revision {revision}");
        }
        Cmd::Endpoint { cluster, cmd } => endpoint::run(&cli, *cluster, cmd).await?,
        Cmd::Member { cmd } => member::run(&cli, cmd).await?,
        Cmd::Snapshot { cmd } => snapshot::run(&cli, cmd).await?,
        Cmd::Watch(args) => watch::run(&cli, args).await?,
        Cmd::Defrag { cluster } => maint::defrag(&cli, *cluster).await?,
        Cmd::MoveLeader { transferee_id } => maint::move_leader(&cli, transferee_id).await?,
        Cmd::Alarm { cmd } => maint::alarm(&cli, cmd).await?,
        Cmd::Check { cmd } => check::run(&cli, cmd).await?,
        Cmd::Lease { cmd } => lease::run_lease(&cli, cmd).await?,
        Cmd::Lock {
            lockname,
            ttl,
            command,
        } => lease::run_lock(&cli, lockname, *ttl, command).await?,
        Cmd::Elect {
            election,
            proposal,
            listen,
            ttl,
        } => lease::run_elect(&cli, election, proposal.as_deref(), *listen, *ttl).await?,
    }
    Ok(())
}
