//! The admin commands over the control plane's API: `whoami`, `keys`, `tokens`, `users`,
//! `sessions`, `usage`. They act as the signed-in person (`cloudsignal login`; refreshed by
//! itself) or with `--api-key`/`CLOUDSIGNAL_API_KEY` for scripts; human tables by default,
//! `--json` for scripts.
//!
//! Exit status: 0 done; 1 the API refused or failed (its problem `code` and `detail` are
//! printed); 2 a usage error; 3 not signed in, or the session ended (run `cloudsignal login`);
//! 4 the control plane cannot be reached.

use crate::session::{self, Credentials};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// An error with its exit status.
#[derive(Debug)]
pub(crate) struct Exit(pub(crate) u8, pub(crate) String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// Where and as whom.
#[derive(Args, Debug, Clone)]
pub(crate) struct ApiOpts {
    /// The control plane's URL (default: the signed-in session's, else http://127.0.0.1:8080).
    #[arg(long, env = "CLOUDSIGNAL_API", global = true)]
    api: Option<String>,
    /// An API key (sk_… or rk_…) instead of the signed-in session, for scripts.
    #[arg(
        long,
        env = "CLOUDSIGNAL_API_KEY",
        hide_env_values = true,
        global = true
    )]
    api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `cloudsignal keys …`.
#[derive(Subcommand, Debug)]
pub(crate) enum KeysCmd {
    /// List the org's API keys (never their secrets).
    List,
    /// Create a key; its secret is printed once.
    Create {
        /// `sk` (every scope) or `rk` (only --scope).
        #[arg(long, default_value = "rk", value_parser = ["sk", "rk"])]
        kind: String,
        /// Its name (also its MQTT identity).
        #[arg(long)]
        name: String,
        /// A scope (repeat): tokens:issue, keys:read, mqtt:publish:<filter>, …
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A network it may be used from (repeat; CIDR).
        #[arg(long = "allow-cidr")]
        allow_cidrs: Vec<String>,
        /// Expire after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Replace a key; the old one keeps working for --grace seconds.
    Rotate {
        /// The key's id.
        id: String,
        /// Seconds the old key stays valid.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
    },
    /// Revoke a key: its sessions close at once (0x98).
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// `cloudsignal tokens …`.
#[derive(Subcommand, Debug)]
pub(crate) enum TokensCmd {
    /// Issue a tkn_ token for a user.
    Issue {
        /// The user (their MQTT identity is <user>@<org>).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// A publish filter (repeat; default users/{user}/#).
        #[arg(long = "pub")]
        publish: Vec<String>,
        /// A subscribe filter (repeat).
        #[arg(long = "sub")]
        subscribe: Vec<String>,
    },
    /// Revoke one token by its id (jti).
    Revoke {
        /// The token's jti.
        jti: String,
    },
}

/// `cloudsignal users …`.
#[derive(Subcommand, Debug)]
pub(crate) enum UsersCmd {
    /// Revoke every token of a user: their sessions close at once (0x98).
    Revoke {
        /// The user id.
        user: String,
    },
}

/// `cloudsignal sessions …` (people's sign-in sessions: CLI and dashboard).
#[derive(Subcommand, Debug)]
pub(crate) enum SessionsCmd {
    /// The org's live sign-in sessions.
    List,
    /// End a sign-in session (its tokens stop working at once).
    Kick {
        /// The session's id.
        id: String,
    },
}

/// A caller: a key, or the stored session (refreshed when due).
enum Caller {
    Key(String),
    Session(Credentials),
}

struct Api {
    base: String,
    caller: Caller,
}

fn not_signed_in() -> Exit {
    Exit(
        3,
        "not signed in: run `cloudsignal login` (or give --api-key / CLOUDSIGNAL_API_KEY)".into(),
    )
}

impl Api {
    fn new(opts: &ApiOpts) -> Result<Self, Exit> {
        if let Some(key) = &opts.api_key {
            let base = opts
                .api
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into());
            return Ok(Self {
                base: base.trim_end_matches('/').into(),
                caller: Caller::Key(key.clone()),
            });
        }
        let creds = Credentials::load()
            .map_err(|e| Exit(3, format!("{e:#}")))?
            .ok_or_else(not_signed_in)?;
        let base = opts.api.clone().unwrap_or_else(|| creds.api.clone());
        Ok(Self {
            base: base.trim_end_matches('/').into(),
            caller: Caller::Session(creds),
        })
    }

    fn bearer(&mut self) -> Result<String, Exit> {
        match &mut self.caller {
            Caller::Key(k) => Ok(k.clone()),
            Caller::Session(c) => {
                if c.due() {
                    c.refresh().map_err(|e| Exit(3, format!("{e:#}")))?;
                }
                Ok(c.access_token.clone())
            }
        }
    }

    /// Calls the API; a session whose access token was refused is refreshed once.
    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Exit> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let bearer = self.bearer()?;
            let (status, v) = session::call(method, &url, &bearer, body.as_ref())
                .map_err(|e| Exit(4, format!("{e:#}")))?;
            if status == 401 && attempt == 0 {
                if let Caller::Session(c) = &mut self.caller {
                    c.refresh().map_err(|e| Exit(3, format!("{e:#}")))?;
                    continue;
                }
            }
            if (200..300).contains(&status) {
                return Ok(v);
            }
            let code = v["code"].as_str().unwrap_or("error");
            let detail = v["detail"].as_str().unwrap_or("no detail");
            return Err(Exit(
                if status == 401 { 3 } else { 1 },
                format!("{code} (HTTP {status}): {detail}"),
            ));
        }
        Err(not_signed_in())
    }
}

fn time(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |t| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match now.checked_sub(t) {
            Some(s) if s < 120 => format!("{s} s ago"),
            Some(s) if s < 7200 => format!("{} min ago", s / 60),
            Some(s) if s < 172_800 => format!("{} h ago", s / 3600),
            Some(s) => format!("{} d ago", s / 86_400),
            None => format!("in {} min", (t - now).div_ceil(60)),
        }
    })
}

/// A left-aligned text table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let l: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        l.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `v` as JSON or through `human`.
fn show(json: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    #[allow(clippy::print_stdout)]
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

/// `cloudsignal whoami`.
pub(crate) fn whoami(opts: &ApiOpts) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    let v = api.call("GET", "/v1/me", None)?;
    show(opts.json, &v, |v| match v["kind"].as_str() {
        Some("person") => format!(
            "{} ({}) in {} at {}\n",
            s(&v["email"]),
            s(&v["role"]),
            s(&v["org"]),
            api.base
        ),
        _ => format!(
            "API key {} ({}, {}) in {} at {}\n",
            s(&v["name"]),
            s(&v["key"]),
            s(&v["key_kind"]),
            s(&v["org"]),
            api.base
        ),
    });
    Ok(())
}

/// `cloudsignal keys …`.
pub(crate) fn keys(opts: &ApiOpts, cmd: KeysCmd) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    match cmd {
        KeysCmd::List => {
            let v = api.call("GET", "/v1/keys", None)?;
            show(opts.json, &v, |v| {
                let rows: Vec<Vec<String>> = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        let state = if !k["revoked_at"].is_null() {
                            "revoked"
                        } else {
                            "live"
                        };
                        vec![
                            s(&k["id"]),
                            s(&k["kind"]),
                            s(&k["name"]),
                            s(&k["scopes"]),
                            time(&k["created_at"]),
                            time(&k["expires_at"]),
                            state.into(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "KIND", "NAME", "SCOPES", "CREATED", "EXPIRES", "STATE",
                    ],
                    &rows,
                )
            });
        }
        KeysCmd::Create {
            kind,
            name,
            scopes,
            allow_cidrs,
            expires_in,
        } => {
            let mut body =
                json!({ "kind": kind, "name": name, "scopes": scopes, "allow_cidrs": allow_cidrs });
            if let Some(secs) = expires_in {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                body["expires_at"] = json!(now + secs);
            }
            let v = api.call("POST", "/v1/keys", Some(body))?;
            show(opts.json, &v, |v| {
                format!(
                "Created {} key {} ({}). Its secret, shown once:\n\n    {}\n\nMQTT username: {}\n",
                s(&v["kind"]), s(&v["name"]), s(&v["id"]), s(&v["key"]), s(&v["mqtt_username"])
            )
            });
        }
        KeysCmd::Rotate { id, grace } => {
            let v = api.call(
                "POST",
                &format!("/v1/keys/{id}/rotate"),
                Some(json!({ "grace_seconds": grace })),
            )?;
            show(opts.json, &v, |v| {
                format!(
                "Rotated {id}: the new key {} (shown once):\n\n    {}\n\nThe old key works until {}.\n",
                s(&v["id"]), s(&v["key"]), time(&v["old_key_expires_at"])
            )
            });
        }
        KeysCmd::Revoke { id } => {
            let v = api.call("DELETE", &format!("/v1/keys/{id}"), None)?;
            show(opts.json, &v, |v| {
                format!(
                    "Revoked {id}; {} live sessions closed.\n",
                    v["closed_sessions"].as_u64().unwrap_or(0)
                )
            });
        }
    }
    Ok(())
}

/// `cloudsignal tokens …`.
pub(crate) fn tokens(opts: &ApiOpts, cmd: TokensCmd) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    match cmd {
        TokensCmd::Issue {
            user,
            ttl,
            publish,
            subscribe,
        } => {
            let mut body = json!({ "user": user, "ttl": ttl });
            if !publish.is_empty() || !subscribe.is_empty() {
                body["acl"] = json!({ "pub": publish, "sub": subscribe });
            }
            let v = api.call("POST", "/v1/tokens", Some(body))?;
            show(opts.json, &v, |v| {
                format!(
                    "username: {}\npassword: {}\nexpires:  {}\npublish:  {}\nsubscribe: {}\n",
                    s(&v["mqtt_credentials"]["username"]),
                    s(&v["mqtt_credentials"]["password"]),
                    time(&v["expires_at"]),
                    s(&v["acl"]["pub"]),
                    s(&v["acl"]["sub"])
                )
            });
        }
        TokensCmd::Revoke { jti } => {
            let v = api.call("DELETE", &format!("/v1/tokens/{jti}"), None)?;
            show(opts.json, &v, |v| {
                format!(
                    "Revoked token {jti}; {} live sessions closed.\n",
                    v["closed_sessions"].as_u64().unwrap_or(0)
                )
            });
        }
    }
    Ok(())
}

/// `cloudsignal users …`.
pub(crate) fn users(opts: &ApiOpts, cmd: UsersCmd) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    let UsersCmd::Revoke { user } = cmd;
    let v = api.call(
        "POST",
        &format!("/v1/users/{}/revoke", session_path(&user)),
        None,
    )?;
    show(opts.json, &v, |v| {
        format!(
            "Revoked every token of {user}; {} live sessions closed.\n",
            v["closed_sessions"].as_u64().unwrap_or(0)
        )
    });
    Ok(())
}

/// `cloudsignal sessions …`.
pub(crate) fn sessions(opts: &ApiOpts, cmd: SessionsCmd) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    match cmd {
        SessionsCmd::List => {
            let v = api.call("GET", "/v1/auth/sessions", None)?;
            show(opts.json, &v, |v| {
                let rows: Vec<Vec<String>> = v["sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        vec![
                            s(&x["id"]),
                            s(&x["email"]),
                            s(&x["role"]),
                            s(&x["client_id"]),
                            s(&x["peer"]),
                            time(&x["created_at"]),
                            time(&x["last_used_at"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "PERSON",
                        "ROLE",
                        "CLIENT",
                        "FROM",
                        "SIGNED IN",
                        "LAST USED",
                    ],
                    &rows,
                )
            });
        }
        SessionsCmd::Kick { id } => {
            let v = api.call(
                "DELETE",
                &format!("/v1/auth/sessions/{}", session_path(&id)),
                None,
            )?;
            show(opts.json, &v, |_| format!("Ended sign-in session {id}.\n"));
        }
    }
    Ok(())
}

/// `cloudsignal usage`.
pub(crate) fn usage(opts: &ApiOpts, day: Option<String>) -> Result<(), Exit> {
    let mut api = Api::new(opts)?;
    let path = match &day {
        Some(d) => format!("/v1/usage?day={}", session_path(d)),
        None => "/v1/usage".into(),
    };
    let v = api.call("GET", &path, None)?;
    show(opts.json, &v, |v| {
        let mut rows = Vec::new();
        for kind in ["keys", "users"] {
            for r in v[kind].as_array().into_iter().flatten() {
                rows.push(vec![
                    kind.trim_end_matches('s').to_owned(),
                    s(&r["subject"]),
                    s(&r["connects"]),
                    s(&r["auth_failures"]),
                    s(&r["published"]),
                    s(&r["published_bytes"]),
                    s(&r["delivered"]),
                    s(&r["delivered_bytes"]),
                    time(&r["last_used"]),
                ]);
            }
        }
        format!("Usage on {}:\n", s(&v["day"]))
            + &table(
                &[
                    "KIND",
                    "SUBJECT",
                    "CONNECTS",
                    "REFUSED",
                    "PUBLISHED",
                    "BYTES IN",
                    "DELIVERED",
                    "BYTES OUT",
                    "LAST USED",
                ],
                &rows,
            )
    });
    Ok(())
}

/// A path segment: only characters that need no escaping pass; anything else is escaped.
fn session_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:|@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_values_read_well() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "first".into()],
                vec!["long-id".into(), "-".into()],
            ],
        );
        assert_eq!(t, "ID       NAME\na        first\nlong-id  -\n");
        assert_eq!(s(&json!(["a", "b"])), "a,b");
        assert_eq!(s(&json!(null)), "-");
        assert_eq!(session_path("a/b c"), "a%2Fb%20c");
    }
}
