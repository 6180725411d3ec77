//! `cloudsignal`: the CloudSignal command.
//!
//! `serve` runs the broker; `keygen`, `jwks` and `token` manage keys and tokens offline. The
//! control-plane commands arrive with their issue.
#![forbid(unsafe_code)]
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout)]

mod admin;
mod directory;
mod issuers;
mod methods;
mod serve;
mod session;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::keys::{KeySet, SigningKey};
use cloudsignal_core::token::{issue, Jti, TokenClaims, TokenVerifier};
use cloudsignal_core::UnixTime;
use std::io::Write;
use std::path::PathBuf;

/// CloudSignal: short-lived, per-user MQTT credentials.
#[derive(Parser)]
#[command(name = "cloudsignal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MQTT broker.
    Serve(Box<serve::ServeArgs>),
    /// Generate an Ed25519 signing key as a private JWK (for CLOUDSIGNAL_SIGNING_KEY).
    ///
    /// Prints to stdout, or writes FILE with mode 0600. Example:
    /// `cloudsignal keygen | npx wrangler secret put CLOUDSIGNAL_SIGNING_KEY`
    Keygen {
        /// Key id (`kid`) published in the JWKS. Default: `cs-<date>-<random>`.
        #[arg(long)]
        kid: Option<String>,
        /// Write the key to this file (created with mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the public JWKS of a signing key file.
    Jwks {
        /// The private JWK file.
        key: PathBuf,
    },
    /// Issue or verify tkn_ tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Administration that needs the server's files, not the API.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// LDAP / Active Directory sync (configured with `[[directories]]` in the config file).
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Sign in through the browser (OAuth 2.1 with PKCE); the session is kept in
    /// ~/.cloudsignal/credentials.json (0600) and refreshed by itself.
    Login {
        /// The control plane's URL.
        #[arg(long, env = "CLOUDSIGNAL_API", default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Print the sign-in address instead of opening a browser (SSH, headless machines).
        #[arg(long)]
        no_browser: bool,
    },
    /// Sign out: revoke the session on the server and delete the credentials file.
    Logout,
    /// Who the admin commands act as (the signed-in person, or --api-key).
    Whoami(admin::ApiOpts),
    /// The org's API keys. Exit status: 0 done, 1 refused by the API, 2 usage, 3 not signed
    /// in, 4 the control plane unreachable (the same for every admin command).
    Keys {
        #[command(subcommand)]
        cmd: admin::KeysCmd,
        #[command(flatten)]
        api: admin::ApiOpts,
    },
    /// tkn_ tokens: issue for a user, revoke by id.
    Tokens {
        #[command(subcommand)]
        cmd: admin::TokensCmd,
        #[command(flatten)]
        api: admin::ApiOpts,
    },
    /// Users: revoke every token of one.
    Users {
        #[command(subcommand)]
        cmd: admin::UsersCmd,
        #[command(flatten)]
        api: admin::ApiOpts,
    },
    /// People's sign-in sessions (CLI and dashboard): list, kick.
    Sessions {
        #[command(subcommand)]
        cmd: admin::SessionsCmd,
        #[command(flatten)]
        api: admin::ApiOpts,
    },
    /// Usage per key and user for a day (default today, UTC).
    Usage {
        /// YYYY-MM-DD.
        #[arg(long)]
        day: Option<String>,
        #[command(flatten)]
        api: admin::ApiOpts,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Each directory's last sync: when, how long, users by standing, changes, errors.
    ///
    /// Reads the data directory's store, so it works while `cloudsignal serve` runs (the API
    /// has the same as GET /v1/directory/status). Exit status: 0 when every directory's last
    /// sync succeeded, 1 when one failed or was refused by the removal guard, 2 on a usage or
    /// read error.
    Status {
        /// The data directory of `cloudsignal serve`.
        #[arg(long, env = "CLOUDSIGNAL_DATA_DIR")]
        data_dir: PathBuf,
        /// Print JSON (the API's status objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Mint a new admin (sk_) key offline, when every admin key is lost or revoked.
    ///
    /// Needs the data directory (whoever holds its files already holds everything). The key is
    /// printed once and written to <data-dir>/admin.key (mode 0600); the act is recorded in the
    /// audit log. Works while `cloudsignal serve` runs: the new key is usable at once.
    Recover {
        /// The data directory of `cloudsignal serve`.
        #[arg(long, env = "CLOUDSIGNAL_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Create another org (a tenant: its own topics, keys, sessions and usage) with its first
    /// admin `sk_` key.
    ///
    /// The key is printed once and written to <data-dir>/admin-<org>.key (mode 0600). Works
    /// while `cloudsignal serve` runs: the org's keys work at once, its tokens within 10 s.
    CreateOrg {
        /// The data directory of `cloudsignal serve`.
        #[arg(long, env = "CLOUDSIGNAL_DATA_DIR")]
        data_dir: PathBuf,
        /// A name for people (the org's id is generated).
        #[arg(long, default_value = "org")]
        name: String,
    },
    /// Invite a person: prints a one-time link (24 hours) where they choose a password.
    ///
    /// Roles: owner and admin act on everything in the org; viewer reads keys, usage, audit,
    /// directory status and sessions. Works while `cloudsignal serve` runs.
    CreateUser {
        /// The data directory of `cloudsignal serve`.
        #[arg(long, env = "CLOUDSIGNAL_DATA_DIR")]
        data_dir: PathBuf,
        /// Their e-mail address (what they sign in with).
        #[arg(long)]
        email: String,
        /// owner, admin or viewer.
        #[arg(long, default_value = "viewer", value_parser = ["owner", "admin", "viewer"])]
        role: String,
        /// The control plane's public URL (the link's base).
        #[arg(
            long,
            env = "CLOUDSIGNAL_PUBLIC_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        public_url: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Verify a tkn_ token against an issuer's JWKS and print its claims as JSON.
    ///
    /// Exits with status 1 and the reason when the token is refused.
    Verify(VerifyArgs),
    /// Issue a tkn_ token with a signing key file (for tests and backends without the control plane).
    Issue(IssueArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// JWKS file of the issuer (e.g. saved from <worker>/.well-known/jwks.json).
    #[arg(long)]
    jwks: PathBuf,
    /// Expected issuer (`iss`).
    #[arg(long)]
    issuer: String,
    /// MQTT username the token must be bound to (`<sub>@<org>`); omit to skip the binding check.
    #[arg(long)]
    username: Option<String>,
    /// Verify as of this Unix time instead of now.
    #[arg(long)]
    at: Option<u64>,
    /// The token (`tkn_…`); `-` reads it from stdin.
    token: String,
}

#[derive(Args)]
struct IssueArgs {
    /// The private JWK file (from `cloudsignal keygen --out`).
    #[arg(long)]
    key: PathBuf,
    /// Issuer (`iss`).
    #[arg(long)]
    issuer: String,
    /// User id (`sub`).
    #[arg(long)]
    user: String,
    /// Org id (`org`).
    #[arg(long)]
    org: String,
    /// Lifetime in seconds, 5 to 86400 (24 h, the most a broker accepts).
    #[arg(long, default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(5..=86_400))]
    ttl: u64,
    /// Publish filter (repeatable; templates {user}, {org}, {client_id}).
    #[arg(long = "pub")]
    publish: Vec<String>,
    /// Subscribe filter (repeatable).
    #[arg(long = "sub")]
    subscribe: Vec<String>,
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(secs)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

fn write_secret_file(path: &PathBuf, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn read_key(path: &PathBuf) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::from_jwk_json(&text)
        .with_context(|| format!("{} is not an Ed25519 private JWK", path.display()))
}

/// An error and its causes on one line, each cause once: a context that already quotes its
/// cause (`reading x: No such file`) is not followed by the cause again. Never a backtrace
/// (even with `RUST_BACKTRACE` set): that is for bugs, and these are the user's errors.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            match e.downcast_ref::<admin::Exit>() {
                Some(admin::Exit(code, _)) => std::process::ExitCode::from(*code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

fn run() -> Result<()> {
    let mut tables = serve::FileTables::default();
    {
        use clap::CommandFactory;
        let cli = Cli::command();
        if let Some(serve) = cli.find_subcommand("serve") {
            tables = serve::apply_config_file(serve)?;
        }
    }
    match Cli::parse().command {
        Command::Serve(mut args) => {
            args.issuers = tables.issuers;
            args.auth_entries = tables.auth;
            args.directories = tables.directories;
            serve::run(*args)?
        }
        Command::Keygen { kid, out } => {
            let kid = match kid {
                Some(k) => k,
                None => format!(
                    "cs-{}-{:02x}{:02x}",
                    now().secs() / 86_400,
                    random::<2>()?[0],
                    random::<2>()?[1]
                ),
            };
            let key = SigningKey::from_seed(kid, random::<32>()?);
            let jwk = key.to_private_jwk_json();
            match out {
                Some(path) => {
                    write_secret_file(&path, &jwk)?;
                    eprintln!("wrote {} (mode 0600), kid {}", path.display(), key.kid());
                }
                None => println!("{jwk}"),
            }
        }
        Command::Admin(AdminCommand::Recover { data_dir }) => {
            let (key, username, file) = cloudsignal_control::recover_admin_key(&data_dir)?;
            println!(
                "New admin API key (shown once; also saved to {}, mode 0600):\n\n    {}\n\nIts MQTT username is {username}.",
                file.display(),
                key.expose()
            );
        }
        Command::Directory(DirectoryCommand::Status { data_dir, json }) => {
            if !directory::status(&data_dir, json)? {
                std::process::exit(1);
            }
        }
        Command::Admin(AdminCommand::CreateUser {
            data_dir,
            email,
            role,
            public_url,
        }) => {
            let link =
                cloudsignal_control::create_user_link(&data_dir, &public_url, &email, &role)?;
            println!(
                "Send this link to {email} ({role}); it works once, for 24 hours:\n\n    {link}"
            );
        }
        Command::Login { api, no_browser } => {
            let c = session::login(&api, !no_browser)?;
            println!(
                "Signed in as {} ({}) to {}. Credentials: {} (0600).",
                c.user["email"].as_str().unwrap_or("?"),
                c.user["role"].as_str().unwrap_or("?"),
                c.api,
                session::credentials_path()?.display()
            );
        }
        Command::Logout => {
            if !session::logout()? {
                std::process::exit(1);
            }
        }
        Command::Whoami(api) => admin::whoami(&api)?,
        Command::Keys { cmd, api } => admin::keys(&api, cmd)?,
        Command::Tokens { cmd, api } => admin::tokens(&api, cmd)?,
        Command::Users { cmd, api } => admin::users(&api, cmd)?,
        Command::Sessions { cmd, api } => admin::sessions(&api, cmd)?,
        Command::Usage { day, api } => admin::usage(&api, day)?,
        Command::Admin(AdminCommand::CreateOrg { data_dir, name }) => {
            let (org, key, file) = cloudsignal_control::create_org(&data_dir, &name)?;
            println!(
                "Created org {} ({name}). Its admin API key (shown once; also saved to {}, mode 0600):\n\n    {}\n\nIts MQTT username is admin@{}.",
                org.as_str(),
                file.display(),
                key.expose(),
                org.as_str()
            );
        }
        Command::Jwks { key } => {
            println!(
                "{}",
                KeySet::new(vec![read_key(&key)?.verifying_entry()]).to_jwks_json()
            );
        }
        Command::Token(TokenCommand::Verify(a)) => {
            let doc = std::fs::read_to_string(&a.jwks)
                .with_context(|| format!("reading {}", a.jwks.display()))?;
            let (keys, _) = KeySet::from_jwks_json(&doc)?;
            let mut verifier = TokenVerifier::default();
            verifier.trust(&a.issuer, keys.keys().iter().cloned());
            let token = if a.token == "-" {
                std::io::read_to_string(std::io::stdin())?.trim().to_owned()
            } else {
                a.token
            };
            let at = a.at.map_or_else(now, UnixTime);
            let verified = match &a.username {
                Some(u) => verifier.verify(&token, u, at),
                None => verifier.verify_unbound(&token, at),
            };
            let v = match verified {
                Ok(v) => v,
                Err(e) => bail!("token refused: {e}"),
            };
            let c = v.claims;
            let out = serde_json::json!({
                "valid": true, "kid": v.kid, "iss": c.iss, "sub": c.sub, "org": c.org,
                "username": c.username(), "iat": c.iat, "nbf": c.nbf, "exp": c.exp,
                "jti": c.jti, "acl": c.acl, "client_id": c.client_id,
            });
            println!("{out}");
        }
        Command::Token(TokenCommand::Issue(a)) => {
            let key = read_key(&a.key)?;
            let acl = AclRules::new(a.publish, a.subscribe)?;
            let claims = TokenClaims::new(
                &a.issuer,
                UserId::parse(&a.user)?,
                OrgId::parse(&a.org)?,
                acl.resolve_identity(&a.user, &a.org)?,
                now(),
                a.ttl,
                Jti::from_random(random::<16>()?),
            );
            println!("{}", issue(&claims, &key));
        }
    }
    Ok(())
}
