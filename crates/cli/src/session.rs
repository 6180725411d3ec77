//! `cloudsignal login`, `logout`, and the stored session every admin command uses.
//!
//! `login` runs the OAuth 2.1 authorization-code flow with PKCE (S256) against the control
//! plane: a loopback listener on 127.0.0.1 (any free port, RFC 8252), the browser opened on
//! the sign-in page (or the URL printed), the callback's `state` checked, the code exchanged.
//! The session is kept in `~/.cloudsignal/credentials.json` (directory 0700, file 0600; a file
//! others can read is refused) and refreshed by itself when its access token is due.

use anyhow::{bail, Context, Result};
use base64ct::{Base64UrlUnpadded, Encoding};
use cloudsignal_control::oauth::urlencode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The CLI's OAuth client id.
const CLIENT_ID: &str = "cloudsignal-cli";
/// How long `login` waits for the browser (the server's request window).
const LOGIN_WAIT: Duration = Duration::from_secs(300);

/// What `credentials.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// The control plane's URL.
    pub(crate) api: String,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    /// When the access token expires (Unix seconds).
    pub(crate) expires_at: u64,
    /// The sign-in session's id.
    pub(crate) session: String,
    /// Who signed in: `email`, `role`, `org`.
    pub(crate) user: serde_json::Value,
}

/// `$CLOUDSIGNAL_HOME` or `~/.cloudsignal`.
fn home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("CLOUDSIGNAL_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CLOUDSIGNAL_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cloudsignal"))
}

pub(crate) fn credentials_path() -> Result<PathBuf> {
    Ok(home()?.join("credentials.json"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Credentials {
    /// The stored session, if any; refuses a file others may read.
    pub(crate) fn load() -> Result<Option<Self>> {
        use std::os::unix::fs::PermissionsExt;
        let path = credentials_path()?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {mode:o}): its tokens may have leaked. Run `chmod 600 {}` if you are sure they did not, or `cloudsignal logout` and sign in again",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)?;
        let c = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a CloudSignal credentials file; remove it and run cloudsignal login",
                path.display()
            )
        })?;
        Ok(Some(c))
    }

    /// Writes the file (0600, in a 0700 directory) through a temporary file.
    pub(crate) fn save(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = credentials_path()?;
        let dir = path.parent().context("credentials path has no directory")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.new");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Whether the access token is due for a refresh (within 30 s of expiry).
    pub(crate) fn due(&self) -> bool {
        now() + 30 >= self.expires_at
    }

    fn from_token_response(api: &str, v: &serde_json::Value) -> Result<Self> {
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("the token response has no {k}"))
        };
        Ok(Self {
            api: api.to_owned(),
            access_token: s("access_token")?,
            refresh_token: s("refresh_token")?,
            expires_at: now() + v["expires_in"].as_u64().unwrap_or(0),
            session: s("session")?,
            user: v["user"].clone(),
        })
    }

    /// Refreshes the session (rotating the refresh token) and saves it.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        let (status, v) = post_form(
            &format!("{}/oauth/token", self.api),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &self.refresh_token),
                ("client_id", CLIENT_ID),
            ],
        )?;
        if status != 200 {
            bail!(
                "your session could not be refreshed ({}); run cloudsignal login",
                v["error_description"].as_str().unwrap_or("refused")
            );
        }
        *self = Self::from_token_response(&self.api, &v)?;
        self.save()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// POSTs a form; returns the status and the JSON body (`null` when empty).
pub(crate) fn post_form(url: &str, form: &[(&str, &str)]) -> Result<(u16, serde_json::Value)> {
    let mut resp = agent()
        .post(url)
        .send_form(form.iter().copied())
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// Sends a JSON request with a bearer credential; returns the status and the JSON body.
pub(crate) fn call(
    method: &str,
    url: &str,
    bearer: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let agent = agent();
    let auth = format!("Bearer {bearer}");
    let result = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        (_, Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(b)?.as_slice()),
        (_, None) => agent.post(url).header("Authorization", &auth).send_empty(),
    };
    let mut resp = result.with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

fn urldecode(s: &str) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request target.
fn query_params(target: &str) -> Vec<(String, String)> {
    target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (urldecode(k), urldecode(v))
        })
        .collect()
}

fn respond(stream: &mut std::net::TcpStream, status: &str, message: &str) {
    let body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>CloudSignal</title><body style=\"font:16px system-ui;margin:3rem\"><p>{message}</p></body></html>"
    );
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Waits on `listener` for the browser's callback; returns the code once `state` matches.
fn await_callback(listener: &std::net::TcpListener, state: &str) -> Result<String> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + LOGIN_WAIT;
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("no sign-in within 5 minutes; run cloudsignal login again");
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        if !target.starts_with("/callback") {
            respond(&mut stream, "404 Not Found", "Not here.");
            continue;
        }
        let params = query_params(target);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("state") != Some(state) {
            respond(&mut stream, "400 Bad Request", "This sign-in answer does not belong to the sign-in the command started (state mismatch). The command has stopped; run cloudsignal login again.");
            bail!("the callback's state does not match this login (a forged or stale sign-in answer); nothing was stored");
        }
        if let Some(error) = get("error") {
            respond(
                &mut stream,
                "400 Bad Request",
                "Sign-in failed; see the terminal.",
            );
            bail!(
                "sign-in refused: {error}: {}",
                get("error_description").unwrap_or("")
            );
        }
        let Some(code) = get("code").filter(|c| !c.is_empty()) else {
            respond(&mut stream, "400 Bad Request", "No code in this answer.");
            bail!("the callback carried no code");
        };
        respond(
            &mut stream,
            "200 OK",
            "Signed in to CloudSignal. You can close this tab and return to the terminal.",
        );
        return Ok(code.to_owned());
    }
}

/// `cloudsignal login`.
pub(crate) fn login(api: &str, open_browser: bool) -> Result<Credentials> {
    let api = api.trim_end_matches('/').to_owned();
    let (status, meta) = {
        let mut resp = agent()
            .get(&format!("{api}/.well-known/oauth-authorization-server"))
            .call()
            .with_context(|| {
                format!(
                    "cannot reach the control plane at {api} (is cloudsignal serve running? --api)"
                )
            })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    if status != 200 {
        bail!("{api} does not look like a CloudSignal control plane (discovery answered HTTP {status})");
    }
    let endpoint = |k: &str| {
        meta[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the discovery document has no {k}"))
    };
    let (authorize, token) = (
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("opening a loopback port for the browser's answer")?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let verifier = Base64UrlUnpadded::encode_string(&random::<32>()?);
    let challenge = Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()));
    let state = Base64UrlUnpadded::encode_string(&random::<16>()?);
    let url = format!(
        "{authorize}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state={state}",
        urlencode(&redirect)
    );
    #[allow(clippy::print_stdout)]
    {
        println!("Open this address in a browser to sign in (valid for 5 minutes):\n\n    {url}\n");
    }
    let _ = std::io::stdout().flush();
    if open_browser {
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok();
        if !opened {
            #[allow(clippy::print_stdout)]
            {
                println!("(could not open a browser here: open the address yourself)");
            }
        }
    }
    let code = await_callback(&listener, &state)?;
    let (status, v) = post_form(
        &token,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", CLIENT_ID),
            ("code_verifier", &verifier),
        ],
    )?;
    if status != 200 {
        bail!(
            "the code was refused: {}",
            v["error_description"].as_str().unwrap_or("unknown error")
        );
    }
    let creds = Credentials::from_token_response(&api, &v)?;
    creds.save()?;
    Ok(creds)
}

/// `cloudsignal logout`: revokes the session on the server, then deletes the file. An
/// unreachable server still loses the file, and the command says so (exit 1).
pub(crate) fn logout() -> Result<bool> {
    let path = credentials_path()?;
    let creds = match Credentials::load() {
        Ok(Some(c)) => c,
        Ok(None) => {
            #[allow(clippy::print_stdout)]
            {
                println!("Not signed in.");
            }
            return Ok(true);
        }
        Err(e) => {
            // loose permissions: the tokens may have leaked, so revoke is still wanted; but
            // the file cannot be trusted either: remove it
            let _ = std::fs::remove_file(&path);
            return Err(e.context("removed the credentials file"));
        }
    };
    let revoked = post_form(
        &format!("{}/oauth/revoke", creds.api),
        &[("token", &creds.refresh_token)],
    );
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    match revoked {
        Ok((200, _)) => {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "Signed out: the session is revoked and {} removed.",
                    path.display()
                );
            }
            Ok(true)
        }
        Ok((status, _)) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("Removed {}, but the server answered HTTP {status} to the revocation: the session may live until it expires.", path.display());
            }
            Ok(false)
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("Removed {}, but the session could not be revoked on the server ({e:#}): it lives until it expires.", path.display());
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn callback_queries_decode() {
        let p = query_params("/callback?code=csc_a-b_c&state=x%2By%3D&error_description=a+b");
        assert_eq!(p[0], ("code".into(), "csc_a-b_c".into()));
        assert_eq!(p[1], ("state".into(), "x+y=".into()));
        assert_eq!(p[2].1, "a b");
        assert_eq!(
            urldecode("%zz%4"),
            "%zz%4",
            "malformed escapes stay as they are"
        );
        assert_eq!(
            urlencode("http://127.0.0.1:5/callback"),
            "http%3A%2F%2F127.0.0.1%3A5%2Fcallback"
        );
    }
}
