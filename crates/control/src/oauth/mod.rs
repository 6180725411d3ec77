//! The control plane as an OAuth 2.1 authorization server for its own public clients (the
//! `cloudsignal` CLI and the dashboard): authorization code with mandatory PKCE S256, exact
//! redirect URIs (any port on a loopback IP for the CLI, RFC 8252), `state` required and
//! returned, requests and codes valid 5 minutes and single-use, short access tokens and
//! rotating refresh tokens (a rotated one presented again revokes its whole session),
//! revocation (RFC 7009) and discovery (RFC 8414).
//!
//! | route | what |
//! |---|---|
//! | `GET /.well-known/oauth-authorization-server` | discovery |
//! | `GET /oauth/authorize` | validates the request, shows the sign-in page |
//! | `POST /oauth/authorize` | checks the password, redirects with a code |
//! | `POST /oauth/token` | `authorization_code` and `refresh_token` grants |
//! | `POST /oauth/revoke` | revokes the session of a token |
//! | `GET`/`POST /setup?token=` | a one-time link: create an account |

pub mod flow;
mod pages;
pub mod password;
pub mod sso;

use crate::store::{Account, AuthSession, Code, Invitation, Redeemed};
use crate::{unix_now, ControlPlane};
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect as HttpRedirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use flow::AuthorizeParams;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// The routes, to merge into the API's router.
pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/oauth/authorize", get(authorize_page).post(sign_in))
        .route("/oauth/token", axum::routing::post(token))
        .route("/oauth/revoke", axum::routing::post(revoke))
        .route("/setup", get(setup_page).post(setup))
        .route("/oauth/sso", get(sso::start))
        .route("/oauth/sso/callback", get(sso::callback))
}

fn issuer(cp: &ControlPlane) -> String {
    cp.config.issuer.trim_end_matches('/').to_owned()
}

async fn discovery(State(cp): State<Arc<ControlPlane>>) -> Json<serde_json::Value> {
    let base = issuer(&cp);
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
    }))
}

fn internal(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "sign-in failed on a server error");
    pages::page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "<p>The server could not complete this step; try again.</p>",
    )
}

fn random32() -> Option<[u8; 32]> {
    crate::random::<32>().ok()
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    cp: &Arc<ControlPlane>,
    f: impl FnOnce(&ControlPlane) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let cp = cp.clone();
    tokio::task::spawn_blocking(move || f(&cp))
        .await
        .map_err(|e| anyhow::anyhow!("blocking task: {e}"))?
}

async fn authorize_page(
    State(cp): State<Arc<ControlPlane>>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    let clients = flow::clients(&issuer(&cp));
    let valid = match flow::validate(&clients, &params) {
        Ok(v) => v,
        Err(e) if e.redirectable() => {
            let mut to = format!(
                "{}?error={}&error_description={}",
                params.redirect_uri.as_deref().unwrap_or_default(),
                e.code(),
                urlencode(&e.to_string())
            );
            if let Some(state) = &params.state {
                to.push_str(&format!("&state={}", urlencode(state)));
            }
            return HttpRedirect::to(&to).into_response();
        }
        Err(e) => {
            info!(error = %e, client = ?params.client_id, "authorization request refused");
            return pages::page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is not valid",
                &format!("<p class=\"error\">{}.</p>", pages::escape(&e.to_string())),
            );
        }
    };
    let Some(id) = random32().map(|r| flow::secret("req_", r)) else {
        return internal("no randomness");
    };
    let (id2, valid2) = (id.clone(), valid.clone());
    if let Err(e) = blocking(&cp, move |cp| {
        cp.store.add_auth_request(&id2, &valid2, unix_now())
    })
    .await
    {
        return internal(e);
    }
    pages::sign_in(
        StatusCode::OK,
        &id,
        &valid.client_id,
        "",
        None,
        cp.config.sso.is_some(),
    )
}

/// The page for a request that is gone, used, or older than 5 minutes.
fn expired_page() -> Response {
    pages::page(
        StatusCode::BAD_REQUEST,
        "This sign-in request has expired",
        "<p>Sign-in requests are valid for 5 minutes and once. Start again from where you came from (run <code>cloudsignal login</code> again, or reload the dashboard).</p>",
    )
}

/// Ends a sign-in for `account` on request `request_id`: the request is used (once), a code
/// issued, and the browser sent back to the client with it and the client's `state`.
async fn finish_sign_in(cp: &Arc<ControlPlane>, request_id: &str, account: &Account) -> Response {
    let now = unix_now();
    let id = request_id.to_owned();
    let found = match blocking(cp, move |cp| cp.store.auth_request(&id)).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let Some((request, _)) = found.filter(|(_, c)| flow::within_window(c.secs(), now.secs()))
    else {
        return expired_page();
    };
    let Some(code) = random32().map(|r| flow::secret("csc_", r)) else {
        return internal("no randomness");
    };
    let stored = Code {
        account_id: account.id.clone(),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        created_at: now,
    };
    let (id, digest) = (request_id.to_owned(), flow::digest(&code));
    let used = blocking(cp, move |cp| {
        if !cp.store.use_auth_request(&id, now)? {
            return Ok(false);
        }
        cp.store.add_code(&digest, &stored)?;
        Ok(true)
    })
    .await;
    match used {
        Ok(true) => {}
        Ok(false) => return expired_page(),
        Err(e) => return internal(e),
    }
    info!(account = %account.id, client = %request.client_id, "signed in; code issued");
    let to = format!(
        "{}?code={}&state={}",
        request.redirect_uri,
        code,
        urlencode(&request.state)
    );
    HttpRedirect::to(&to).into_response()
}

#[derive(Deserialize)]
struct SignIn {
    request: String,
    email: String,
    password: String,
}

async fn sign_in(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<SignIn>,
) -> Response {
    let expired = expired_page;
    let id = form.request.clone();
    let found = match blocking(&cp, move |cp| cp.store.auth_request(&id)).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let Some((request, created)) = found else {
        return expired();
    };
    let now = unix_now();
    if !flow::within_window(created.secs(), now.secs()) {
        info!(client = %request.client_id, "sign-in refused: the request is older than 5 minutes");
        return expired();
    }
    if cp
        .api_throttle
        .lock()
        .is_banned(peer.ip(), std::time::Instant::now())
    {
        return pages::sign_in(
            StatusCode::TOO_MANY_REQUESTS,
            &form.request,
            &request.client_id,
            &form.email,
            Some("Too many failed sign-ins from this address; wait a few minutes."),
            cp.config.sso.is_some(),
        );
    }
    let email = form.email.trim().to_owned();
    let (email2, password) = (email.clone(), form.password.clone());
    let checked = blocking(&cp, move |cp| {
        let account = cp.store.account_by_email(&email2)?;
        let usable = account.as_ref().filter(|a| a.disabled_at.is_none());
        let ok = password::verify(&password, usable.and_then(|a| a.password_hash.as_deref()));
        Ok(account.filter(|_| ok))
    })
    .await;
    let account = match checked {
        Ok(Some(a)) => a,
        Ok(None) => {
            cp.api_throttle
                .lock()
                .record_failure(peer.ip(), None, std::time::Instant::now());
            info!(%peer, "sign-in refused: wrong e-mail or password");
            return pages::sign_in(
                StatusCode::UNAUTHORIZED,
                &form.request,
                &request.client_id,
                &email,
                Some("Wrong e-mail or password."),
                cp.config.sso.is_some(),
            );
        }
        Err(e) => return internal(e),
    };
    finish_sign_in(&cp, &form.request, &account).await
}

/// An RFC 6749 §5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

async fn token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<TokenForm>,
) -> Response {
    let invalid = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let now = unix_now();
    match f.grant_type.as_str() {
        "authorization_code" => {
            let (Some(code), Some(redirect), Some(client), Some(verifier)) =
                (f.code, f.redirect_uri, f.client_id, f.code_verifier)
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code, redirect_uri, client_id and code_verifier are required (PKCE)",
                );
            };
            let digest = flow::digest(&code);
            let d2 = digest.clone();
            let redeemed = match blocking(&cp, move |cp| cp.store.redeem_code(&d2, now)).await {
                Ok(r) => r,
                Err(e) => {
                    return oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &e.to_string(),
                    )
                }
            };
            let code = match redeemed {
                Redeemed::Fresh(c) => c,
                Redeemed::Replayed(session) => {
                    // RFC 6749 §4.1.2: a code used twice revokes what it was used for
                    if let Some(s) = session {
                        warn!(session = %s, %peer, "authorization code replayed: its session is revoked");
                        let _ = blocking(&cp, move |cp| cp.store.revoke_session(&s, now)).await;
                    }
                    return invalid("this code was already used");
                }
                Redeemed::Unknown => return invalid("unknown code"),
            };
            if !flow::within_window(code.created_at.secs(), now.secs()) {
                return invalid("the code expired (codes are valid for 5 minutes)");
            }
            if code.client_id != client || code.redirect_uri != redirect {
                return invalid("client_id or redirect_uri differ from the authorization request");
            }
            if !flow::pkce_matches(&verifier, &code.code_challenge) {
                info!(%peer, "token refused: the PKCE verifier does not match");
                return invalid("code_verifier does not match the code_challenge");
            }
            let account_id = code.account_id.clone();
            let session = AuthSession {
                id: String::new(),
                account_id,
                email: String::new(),
                role: String::new(),
                org: String::new(),
                client_id: client,
                created_at: now,
                expires_at: now.plus(flow::SESSION_TTL),
                last_used_at: now,
                revoked_at: None,
                peer: Some(peer.ip().to_string()),
            };
            issue(&cp, session, Some(digest)).await
        }
        "refresh_token" => {
            let (Some(refresh), Some(client)) = (f.refresh_token, f.client_id) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token and client_id are required",
                );
            };
            let digest = flow::digest(&refresh);
            let rotated = match blocking(&cp, move |cp| cp.store.rotate_refresh(&digest, now)).await
            {
                Ok(r) => r,
                Err(e) => {
                    return oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &e.to_string(),
                    )
                }
            };
            match rotated {
                Redeemed::Fresh(s)
                    if s.revoked_at.is_none() && s.expires_at > now && s.client_id == client =>
                {
                    issue(&cp, s, None).await
                }
                Redeemed::Fresh(_) => invalid("the session has ended; sign in again"),
                Redeemed::Replayed(session) => {
                    if let Some(s) = session {
                        warn!(session = %s, %peer, "a rotated refresh token was presented again: the whole session is revoked");
                        let _ = blocking(&cp, move |cp| cp.store.revoke_session(&s, now)).await;
                    }
                    invalid("this refresh token was already used; the session is revoked, sign in again")
                }
                Redeemed::Unknown => invalid("unknown or expired refresh token"),
            }
        }
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other:?} is not supported"),
        ),
    }
}

/// Issues an access and a refresh token for `session` (created first when new).
async fn issue(cp: &Arc<ControlPlane>, mut session: AuthSession, code: Option<String>) -> Response {
    let (Some(a), Some(r), Some(sid)) = (random32(), random32(), random32()) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no randomness",
        );
    };
    let (access, refresh) = (flow::secret("csa_", a), flow::secret("csr_", r));
    let ttl = cp.config.access_ttl;
    let now = unix_now();
    let (da, dr) = (flow::digest(&access), flow::digest(&refresh));
    let new = code.is_some();
    if new {
        session.id = flow::secret("ses_", sid)[..20].to_owned();
    }
    let s2 = session.clone();
    let done = blocking(cp, move |cp| {
        if new {
            let account = cp
                .store
                .account_by_id(&s2.account_id)?
                .ok_or_else(|| anyhow::anyhow!("no such account"))?;
            let s = AuthSession {
                org: account.org.clone(),
                ..s2.clone()
            };
            cp.store.create_session(&s, code.as_deref())?;
        }
        cp.store
            .add_auth_token(&da, &s2.id, "access", now, now.plus(ttl))?;
        cp.store
            .add_auth_token(&dr, &s2.id, "refresh", now, s2.expires_at)?;
        cp.store.auth_session(&s2.id)
    })
    .await;
    let session = match done {
        Ok(Some(s)) => s,
        Ok(None) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the session is gone",
            )
        }
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        }
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "session": session.id,
            "user": { "email": session.email, "role": session.role, "org": session.org },
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    token: String,
}

/// RFC 7009: always 200; a known token's session ends (every token of it).
async fn revoke(State(cp): State<Arc<ControlPlane>>, Form(f): Form<RevokeForm>) -> Response {
    let digest = flow::digest(&f.token);
    let _ = blocking(&cp, move |cp| {
        if let Some(s) = cp.store.session_of_token(&digest)? {
            if cp.store.revoke_session(&s, unix_now())? {
                info!(session = %s, "session revoked (signed out)");
            }
        }
        Ok(())
    })
    .await;
    StatusCode::OK.into_response()
}

#[derive(Deserialize)]
struct SetupQuery {
    token: String,
}

async fn setup_page(State(cp): State<Arc<ControlPlane>>, Query(q): Query<SetupQuery>) -> Response {
    let digest = flow::digest(&q.token);
    match blocking(&cp, move |cp| cp.store.invitation(&digest, unix_now())).await {
        Ok(Some(inv)) => pages::setup(StatusCode::OK, &q.token, inv.email.as_deref(), &inv.role, None),
        Ok(None) => pages::page(StatusCode::NOT_FOUND, "This link is not valid", "<p>Setup links work once and expire after 24 hours. Ask for a new one (<code>cloudsignal admin create-user</code>).</p>"),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    email: Option<String>,
    name: Option<String>,
    password: String,
}

async fn setup(State(cp): State<Arc<ControlPlane>>, Form(f): Form<SetupForm>) -> Response {
    let digest = flow::digest(&f.token);
    let d2 = digest.clone();
    let inv = match blocking(&cp, move |cp| cp.store.invitation(&d2, unix_now())).await {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            return pages::page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "<p>Setup links work once and expire after 24 hours.</p>",
            )
        }
        Err(e) => return internal(e),
    };
    let email = inv
        .email
        .clone()
        .or(f.email.clone())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let again = |why: &str| {
        pages::setup(
            StatusCode::BAD_REQUEST,
            &f.token,
            inv.email.as_deref(),
            &inv.role,
            Some(why),
        )
    };
    if !email.contains('@') || email.len() > 254 {
        return again("Give a valid e-mail address.");
    }
    if let Some(why) = password::weakness(&f.password, &email) {
        return again(&format!("Choose another password: {why}."));
    }
    let (Ok(salt), Some(id)) = (crate::random::<16>(), random32()) else {
        return internal("no randomness");
    };
    let password = f.password.clone();
    let name = f.name.clone().unwrap_or_default();
    let invited = inv.clone();
    let result = blocking(&cp, move |cp| {
        let inv = invited;
        let account = Account {
            id: flow::secret("acct_", id)[..21].to_owned(),
            org: inv.org.clone(),
            email: email.clone(),
            name,
            role: inv.role.clone(),
            password_hash: Some(password::hash(&password, salt)?),
            created_at: unix_now(),
            disabled_at: None,
        };
        // a taken address leaves the link usable (a typo must not burn the owner's link)
        if cp.store.account_by_email(&account.email)?.is_some() {
            return Ok(Err("An account with this e-mail address exists already."));
        }
        let Some(inv) = cp.store.take_invitation(&digest, unix_now())? else {
            return Ok(Err("This link was used meanwhile."));
        };
        if !cp.store.create_account(&account)? {
            return Ok(Err("An account with this e-mail address exists already."));
        }
        cp.audit_local(
            &inv.org,
            &format!("invitation:{}", &digest[..12]),
            "account.create",
            Some(&account.email),
            format!("role {}", account.role),
        );
        Ok(Ok(account))
    })
    .await;
    match result {
        Ok(Ok(a)) => {
            info!(account = %a.id, role = %a.role, "account created from a setup link");
            pages::page(StatusCode::CREATED, "Your account is ready", &format!(
                "<p>Signed up as <strong>{}</strong> ({}). Sign in with <code>cloudsignal login --api {}</code>.</p>",
                pages::escape(&a.email), pages::escape(&a.role), pages::escape(&issuer(&cp))))
        }
        Ok(Err(why)) => again(why),
        Err(e) => internal(e),
    }
}

/// A one-time setup link for a new account with `role` (and `email`, if fixed) in `org`,
/// valid 24 hours.
pub fn invite(
    store: &dyn crate::store::Store,
    issuer: &str,
    org: &str,
    email: Option<&str>,
    role: &str,
) -> anyhow::Result<String> {
    let token = flow::secret("inv_", crate::random::<32>()?);
    store.add_invitation(
        &flow::digest(&token),
        &Invitation {
            org: org.to_owned(),
            email: email.map(str::to_owned),
            role: role.to_owned(),
        },
        unix_now(),
        86_400,
    )?;
    Ok(format!(
        "{}/setup?token={token}",
        issuer.trim_end_matches('/')
    ))
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The scopes a role holds on the admin API (`None`: every scope, as an `sk_` key).
pub fn role_scopes(role: &str) -> Option<&'static [&'static str]> {
    match role {
        "owner" | "admin" => None,
        _ => Some(&[
            "keys:read",
            "usage:read",
            "audit:read",
            "directory:read",
            "sessions:read",
        ]),
    }
}
