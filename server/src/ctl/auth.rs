//! `corekvctl user|role|auth ...`, with etcdctl 3.4's arguments and output
//! texts, and the global `--user` / `--password` login.

use std::io::BufRead;

use clap::Subcommand;
use corekv_wire::Client;
use corekv_wire::messages as w;
use serde_json::json;

use super::output::Format;
use super::{Cli, Failure, bad_args, print_json};

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Adds a new user (`name` or `name:password`).
    Add {
        #[arg(value_name = "USER")]
        name: String,
        /// Supply password from the command line flag.
        #[arg(long)]
        new_user_password: Option<String>,
        /// Create a user without a password (certificate CN login only).
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user.
    Delete {
        #[arg(value_name = "USER")]
        name: String,
    },
    /// Gets detailed information of a user.
    Get {
        #[arg(value_name = "USER")]
        name: String,
        /// Show permissions of roles granted to the user.
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users.
    List,
    /// Changes the password of a user.
    Passwd {
        #[arg(value_name = "USER")]
        name: String,
    },
    /// Grants a role to a user.
    GrantRole {
        #[arg(value_name = "USER")]
        name: String,
        role: String,
    },
    /// Revokes a role from a user.
    RevokeRole {
        #[arg(value_name = "USER")]
        name: String,
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Adds a new role.
    Add { role: String },
    /// Deletes a role.
    Delete { role: String },
    /// Gets detailed information of a role.
    Get { role: String },
    /// Lists all roles.
    List,
    /// Grants a key to a role (perm type: read, write or readwrite).
    GrantPermission {
        role: String,
        perm_type: String,
        key: String,
        range_end: Option<String>,
        /// Grant a prefix permission.
        #[arg(long)]
        prefix: bool,
        /// Grant a permission of keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
    },
    /// Revokes a key from a role.
    RevokePermission {
        role: String,
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
}

/// `--user name[:password]` and `--password`, as etcdctl: the password
/// is read from stdin when neither gives it.
pub fn credentials(cli: &Cli) -> Result<Option<(String, String)>, Failure> {
    let Some(user) = &cli.user else {
        return Ok(None);
    };
    if let Some(p) = &cli.password {
        return Ok(Some((user.clone(), p.clone())));
    }
    match user.split_once(':') {
        Some((name, password)) => Ok(Some((name.to_owned(), password.to_owned()))),
        None => Ok(Some((user.clone(), read_password("Password: ")?))),
    }
}

fn read_password(prompt: &str) -> Result<String, Failure> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| bad_args(e.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn call(c: &Client, req: w::AuthRequest) -> Result<w::AuthResponse, Failure> {
    Ok(c.auth(req).await?)
}

/// etcdctl's range end for `--prefix` / `--from-key`.
fn perm_range(
    key: &str,
    end: &Option<String>,
    prefix: bool,
    from_key: bool,
) -> Result<Vec<u8>, Failure> {
    super::range_end_for(key.as_bytes(), end.as_ref(), prefix, from_key)
}

fn print_perms(perms: &[w::Permission], read: bool) {
    for p in perms {
        let wanted = match p.perm_type {
            w::PermissionType::Read => read,
            w::PermissionType::Write => !read,
            w::PermissionType::ReadWrite => true,
        };
        if !wanted {
            continue;
        }
        let key = String::from_utf8_lossy(&p.key);
        if p.range_end.is_empty() {
            println!("\t{key}");
            continue;
        }
        let end = String::from_utf8_lossy(&p.range_end);
        if p.range_end == [0] {
            print!("\t[{key}, <open ended>");
        } else {
            print!("\t[{key}, {end})");
        }
        if super::txn_parse::prefix_end(&p.key) == p.range_end {
            print!(" (prefix {key})");
        }
        println!();
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn print_role(cli: &Cli, role: &str, perms: &[w::Permission]) {
    if cli.write_out == Format::Json {
        let perm: Vec<_> = perms
            .iter()
            .map(|p| json!({"permType": p.perm_type.clone() as i32, "key": b64(&p.key), "range_end": b64(&p.range_end)}))
            .collect();
        print_json(&json!({"perm": perm}));
        return;
    }
    println!("Role {role}");
    println!("KV Read:");
    print_perms(perms, true);
    println!("KV Write:");
    print_perms(perms, false);
}

pub async fn user(cli: &Cli, c: &Client, cmd: &UserCmd) -> Result<(), Failure> {
    use w::AuthRequest as A;
    match cmd {
        UserCmd::Add {
            name: user,
            new_user_password,
            no_password,
        } => {
            let (name, password) = match (user.split_once(':'), new_user_password) {
                _ if *no_password => (user.clone(), String::new()),
                (Some((n, p)), _) => (n.to_owned(), p.to_owned()),
                (None, Some(p)) => (user.clone(), p.clone()),
                (None, None) => (
                    user.clone(),
                    read_password(&format!("Password of {user}: "))?,
                ),
            };
            call(
                c,
                A::UserAdd(w::AuthUserAddRequest {
                    name: name.clone(),
                    password,
                    no_password: *no_password,
                    hashed_password: String::new(),
                }),
            )
            .await?;
            println!("User {name} created");
        }
        UserCmd::Delete { name: user } => {
            call(c, A::UserDelete { name: user.clone() }).await?;
            println!("User {user} deleted");
        }
        UserCmd::Get { name: user, detail } => {
            let roles = match call(c, A::UserGet { name: user.clone() }).await? {
                w::AuthResponse::UserGet { roles, .. } => roles,
                other => return Err(unexpected(&other)),
            };
            if cli.write_out == Format::Json {
                print_json(&json!({"roles": roles}));
                return Ok(());
            }
            println!("User: {user}");
            if !detail {
                println!("Roles: {}", roles.join(" "));
                return Ok(());
            }
            for role in roles {
                let perms = role_perms(c, &role).await?;
                println!();
                print_role(cli, &role, &perms);
            }
        }
        UserCmd::List => match call(c, A::UserList).await? {
            w::AuthResponse::UserList { users, .. } => list(cli, "users", &users),
            other => return Err(unexpected(&other)),
        },
        UserCmd::Passwd { name: user } => {
            let password = read_password(&format!("Password of {user}: "))?;
            call(
                c,
                A::UserChangePassword(w::AuthUserChangePasswordRequest {
                    name: user.clone(),
                    password,
                    hashed_password: String::new(),
                }),
            )
            .await?;
            println!("Password updated");
        }
        UserCmd::GrantRole { name: user, role } => {
            let req = w::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            call(c, A::UserGrantRole(req)).await?;
            println!("Role {role} is granted to user {user}");
        }
        UserCmd::RevokeRole { name: user, role } => {
            let req = w::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            call(c, A::UserRevokeRole(req)).await?;
            println!("Role {role} is revoked from user {user}");
        }
    }
    Ok(())
}

fn list(cli: &Cli, field: &str, names: &[String]) {
    if cli.write_out == Format::Json {
        print_json(&json!({ field: names }));
    } else {
        for n in names {
            println!("{n}");
        }
    }
}

fn unexpected(got: &w::AuthResponse) -> Failure {
    Failure {
        code: super::EXIT_ERROR,
        message: format!("unexpected response {got:?}"),
    }
}

async fn role_perms(c: &Client, role: &str) -> Result<Vec<w::Permission>, Failure> {
    match call(c, w::AuthRequest::RoleGet { role: role.into() }).await? {
        w::AuthResponse::RoleGet { perm, .. } => Ok(perm),
        other => Err(unexpected(&other)),
    }
}

pub async fn role(cli: &Cli, c: &Client, cmd: &RoleCmd) -> Result<(), Failure> {
    use w::AuthRequest as A;
    match cmd {
        RoleCmd::Add { role } => {
            call(c, A::RoleAdd { name: role.clone() }).await?;
            println!("Role {role} created");
        }
        RoleCmd::Delete { role } => {
            call(c, A::RoleDelete { role: role.clone() }).await?;
            println!("Role {role} deleted");
        }
        RoleCmd::Get { role } => {
            let perms = role_perms(c, role).await?;
            print_role(cli, role, &perms);
        }
        RoleCmd::List => match call(c, A::RoleList).await? {
            w::AuthResponse::RoleList { roles, .. } => list(cli, "roles", &roles),
            other => return Err(unexpected(&other)),
        },
        RoleCmd::GrantPermission {
            role,
            perm_type,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let perm_type = match perm_type.to_ascii_lowercase().as_str() {
                "read" => w::PermissionType::Read,
                "write" => w::PermissionType::Write,
                "readwrite" => w::PermissionType::ReadWrite,
                other => return Err(bad_args(format!("invalid permission type {other}"))),
            };
            let range_end = perm_range(key, range_end, *prefix, *from_key)?;
            let req = w::AuthRoleGrantPermissionRequest {
                name: role.clone(),
                perm: w::Permission {
                    perm_type,
                    key: key.as_bytes().to_vec(),
                    range_end,
                },
            };
            call(c, A::RoleGrantPermission(req)).await?;
            println!("Role {role} updated");
        }
        RoleCmd::RevokePermission {
            role,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let end = perm_range(key, range_end, *prefix, *from_key)?;
            let req = w::AuthRoleRevokePermissionRequest {
                role: role.clone(),
                key: key.as_bytes().to_vec(),
                range_end: end.clone(),
            };
            call(c, A::RoleRevokePermission(req)).await?;
            if end.is_empty() {
                println!("Permission of key {key} is revoked from role {role}");
            } else {
                let end = if end == [0] {
                    "<open ended>".to_string()
                } else {
                    String::from_utf8_lossy(&end).into_owned()
                };
                println!("Permission of range [{key}, {end}) is revoked from role {role}");
            }
        }
    }
    Ok(())
}

pub async fn auth(c: &Client, cmd: &AuthCmd) -> Result<(), Failure> {
    match cmd {
        AuthCmd::Enable => {
            call(c, w::AuthRequest::Enable).await?;
            println!("Authentication Enabled");
        }
        AuthCmd::Disable => {
            call(c, w::AuthRequest::Disable).await?;
            println!("Authentication Disabled");
        }
    }
    Ok(())
}

/// `https://host:port` (or `--cacert`) means TLS: trust `--cacert`, present
/// `--cert`/`--key` if given, verify the server as `host`. Returns the
/// endpoint without its scheme.
pub fn endpoint_tls(
    cli: &Cli,
    endpoint: &str,
) -> Result<(String, Option<corekv_wire::ClientTls>), Failure> {
    let (secure, addr) = match endpoint.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => return Err(bad_args(format!("unknown URL scheme {scheme}"))),
        None => (cli.cacert.is_some(), endpoint),
    };
    let addr = addr.trim_end_matches('/').to_owned();
    if !secure {
        return Ok((addr, None));
    }
    let ca = cli
        .cacert
        .as_ref()
        .ok_or_else(|| bad_args("an https endpoint needs --cacert"))?;
    let roots = crate::tls::load_roots(ca).map_err(bad_args)?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad_args(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => {
            let certs = crate::tls::load_certs(cert).map_err(bad_args)?;
            let key = crate::tls::load_key(key).map_err(bad_args)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad_args(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(bad_args("--cert and --key go together")),
    };
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => addr.clone(),
    };
    Ok((
        addr,
        Some(corekv_wire::ClientTls {
            config: std::sync::Arc::new(config),
            server_name: host,
        }),
    ))
}
