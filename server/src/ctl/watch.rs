//! `corekvctl watch [key [range_end]] [--prefix] [--rev N] [--prev-kv]` and
//! `watch -i` (watch commands read from stdin), etcdctl 3.4's output: per
//! event its type, the previous key-value (with `--prev-kv`) and the
//! key-value, each key and value on a line of its own.

use std::io::BufRead;

use clap::{Args, Parser};
use corekv_wire::messages as w;
use serde_json::{Value, json};

use super::fields::{self, Fields};
use super::output::{self, Format};
use super::{Cli, EXIT_BAD_ARGS, EXIT_ERROR, Failure, connect_any, key_range};
use crate::ctl::snapshot::EXIT_INTERRUPTED;

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    key: Option<String>,
    range_end: Option<String>,
    /// Interactive mode
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    prev_kv: bool,
    /// get periodic watch progress notification from server
    #[arg(long)]
    progress_notify: bool,
}

/// One line of `watch -i` input: `watch [options] <key> [range_end]`.
#[derive(Parser, Debug)]
#[command(name = "watch", no_binary_name = true)]
struct InteractiveLine {
    #[command(flatten)]
    args: WatchArgs,
}

pub async fn run(cli: &Cli, args: &WatchArgs) -> Result<(), Failure> {
    if !args.interactive {
        let req = request(args)?;
        return watch(cli, req).await;
    }
    if args.key.is_some() {
        return Err(bad("watch in interactive mode takes no key argument"));
    }
    // Each line starts a watch; the watches run side by side until the
    // input ends (as etcdctl, an EOF ends the command with an error).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.split_first() {
            Some((&"watch", rest)) => match InteractiveLine::try_parse_from(rest) {
                Ok(l) => match request(&l.args) {
                    Ok(req) => {
                        let cli_format = cli.write_out;
                        let client = connect_any(cli).await?;
                        tasks.push(tokio::spawn(async move {
                            if let Err(e) = stream(&client, req, cli_format).await {
                                eprintln!("Error: {}", e.message);
                            }
                        }));
                    }
                    Err(e) => eprintln!("Invalid command: {}", e.message),
                },
                Err(e) => eprintln!("Invalid command {line:?}: {e}"),
            },
            _ => eprintln!("Invalid command {line:?} (only support watch)"),
        }
    }
    for t in tasks {
        t.abort();
    }
    Err(Failure {
        code: EXIT_ERROR,
        message: "Error reading watch request line: EOF".into(),
    })
}

fn bad(message: &str) -> Failure {
    Failure {
        code: EXIT_BAD_ARGS,
        message: message.into(),
    }
}

fn request(args: &WatchArgs) -> Result<w::WatchCreateRequest, Failure> {
    let key = args
        .key
        .as_deref()
        .ok_or_else(|| bad("watch in non-interactive mode requires one or two arguments as key or prefix, with range end"))?;
    let (key, range_end) = key_range(key, args.range_end.as_ref(), args.prefix, false)?;
    Ok(w::WatchCreateRequest {
        key,
        range_end,
        start_revision: args.rev,
        progress_notify: args.progress_notify,
        prev_kv: args.prev_kv,
        ..Default::default()
    })
}

async fn watch(cli: &Cli, req: w::WatchCreateRequest) -> Result<(), Failure> {
    let client = connect_any(cli).await?;
    stream(&client, req, cli.write_out).await
}

/// Prints every response until the server cancels the watch (exit 5, as
/// etcdctl's "watch is canceled by the server") or the connection fails.
async fn stream(
    client: &corekv_wire::Client,
    req: w::WatchCreateRequest,
    format: Format,
) -> Result<(), Failure> {
    let mut watch = client.watch(req).await?;
    while let Some(frame) = watch.next().await? {
        let resp = frame.to_owned_watch()?;
        if resp.canceled {
            if !resp.cancel_reason.is_empty() {
                eprintln!("watch was canceled ({})", resp.cancel_reason);
            }
            break;
        }
        if resp.created || resp.events.is_empty() {
            continue;
        }
        print_response(format, &resp);
    }
    Err(Failure {
        code: EXIT_INTERRUPTED,
        message: "watch is canceled by the server".into(),
    })
}

fn kv_lines(kv: &w::KeyValue) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&kv.key);
    let _ = out.write_all(b"\n");
    let _ = out.write_all(&kv.value);
    let _ = out.write_all(b"\n");
}

fn event_name(e: &w::Event) -> &'static str {
    match e.event_type {
        w::EventType::Put => "PUT",
        w::EventType::Delete => "DELETE",
    }
}

pub fn print_response(format: Format, resp: &w::WatchResponse) {
    match format {
        Format::Simple | Format::Table => {
            for e in &resp.events {
                println!("{}", event_name(e));
                if let Some(prev) = &e.prev_kv {
                    kv_lines(prev);
                }
                kv_lines(&e.kv);
            }
        }
        // etcdctl marshals clientv3's WatchResponse (Go field names).
        Format::Json => {
            let events: Vec<Value> = resp
                .events
                .iter()
                .map(|e| {
                    let mut m = serde_json::Map::new();
                    if e.event_type == w::EventType::Delete {
                        m.insert("type".into(), json!(1));
                    }
                    m.insert("kv".into(), output::kv_json(&e.kv));
                    if let Some(prev) = &e.prev_kv {
                        m.insert("prev_kv".into(), output::kv_json(prev));
                    }
                    Value::Object(m)
                })
                .collect();
            // Field order as etcdctl prints it (serde_json sorts maps).
            println!(
                "{{\"Header\":{},\"Events\":{},\"CompactRevision\":{},\"Canceled\":{},\"Created\":{}}}",
                output::header_json(&resp.header),
                Value::Array(events),
                resp.compact_revision,
                resp.canceled,
                resp.created
            );
        }
        Format::Fields => {
            let mut f = Fields::default();
            f.header(&resp.header);
            for e in &resp.events {
                fields::event(&mut f, e);
            }
            f.print();
        }
    }
}
