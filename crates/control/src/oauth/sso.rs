//! Single sign-on: the sign-in page offers the organisation's OpenID Connect provider (Auth0,
//! Okta, Keycloak, Google, Supabase…). CloudSignal is then a relying party: authorization code
//! with PKCE and a nonce, the ID token verified by core's one JWS path (the provider's JWKS,
//! an algorithm allow-list, `iss`, `aud` = our client id, `exp`, the nonce), and ordered rules
//! on the verified e-mail domain or a groups claim decide who may sign in and with which role.
//! The person's account is created at first sign-in and their role re-decided at each one.

use super::{blocking, pages, urlencode};
use crate::store::Account;
use crate::{unix_now, ControlPlane};
use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use cloudsignal_core::jws::{Inspected, Validation};
use cloudsignal_core::keys::{Alg, KeySet};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Who may sign in, and as what: the first rule that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it matches.
    pub matcher: Matcher,
    /// The role it gives.
    pub role: String,
}

/// A rule's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// A verified e-mail address at this domain (exact, case ignored).
    EmailDomain(String),
    /// A value of the groups claim.
    Group(String),
}

impl Rule {
    /// Parses `domain:<domain>=<role>` or `group:<group>=<role>`.
    pub fn parse(s: &str) -> Result<Self> {
        let (cond, role) = s.rsplit_once('=').with_context(|| {
            format!("SSO rule {s:?}: write domain:<domain>=<role> or group:<group>=<role>")
        })?;
        if !matches!(role, "owner" | "admin" | "viewer") {
            bail!("SSO rule {s:?}: the role must be owner, admin or viewer");
        }
        let matcher = match cond.split_once(':') {
            Some(("domain", d)) if !d.is_empty() => Matcher::EmailDomain(d.to_ascii_lowercase()),
            Some(("group", g)) if !g.is_empty() => Matcher::Group(g.to_owned()),
            _ => bail!("SSO rule {s:?}: write domain:<domain>=<role> or group:<group>=<role>"),
        };
        Ok(Self {
            matcher,
            role: role.to_owned(),
        })
    }
}

/// The role the rules give a person, if any.
pub fn decide(
    rules: &[Rule],
    email: Option<&str>,
    email_verified: bool,
    groups: &[String],
) -> Option<String> {
    let domain = email
        .filter(|_| email_verified)
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase());
    rules
        .iter()
        .find(|r| match &r.matcher {
            Matcher::EmailDomain(d) => domain.as_deref() == Some(d.as_str()),
            Matcher::Group(g) => groups.iter().any(|x| x == g),
        })
        .map(|r| r.role.clone())
}

/// The provider and the rules.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// The provider's issuer (its discovery document is `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// Our client id there.
    pub client_id: String,
    /// Our client secret there.
    pub client_secret: String,
    /// The claim holding groups (default `groups`).
    pub groups_claim: String,
    /// Who may sign in, in order.
    pub rules: Vec<Rule>,
}

/// A sign-in waiting for the provider's answer.
#[derive(Debug)]
struct Pending {
    request: String,
    nonce: String,
    verifier: String,
    at: std::time::Instant,
}

/// In-flight SSO sign-ins (5 minutes, like the requests they serve).
#[derive(Debug, Default)]
pub struct SsoState {
    pending: Mutex<HashMap<String, Pending>>,
}

fn callback_url(cp: &ControlPlane) -> String {
    format!("{}/oauth/sso/callback", super::issuer(cp))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn get_json(url: &str) -> Result<serde_json::Value> {
    let url = cloudsignal_core::idp::checked_url("URL", url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut r = agent()
        .get(&url)
        .call()
        .with_context(|| format!("fetching {url}"))?;
    if r.status() != 200 {
        bail!("{url} answered HTTP {}", r.status());
    }
    let text = r.body_mut().with_config().limit(1 << 20).read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

fn discovery(c: &SsoConfig) -> Result<serde_json::Value> {
    let d = get_json(&format!(
        "{}/.well-known/openid-configuration",
        c.issuer.trim_end_matches('/')
    ))?;
    if d["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(c.issuer.trim_end_matches('/'))
    {
        bail!("the provider's discovery document names another issuer");
    }
    Ok(d)
}

#[derive(Deserialize)]
pub(super) struct Start {
    request: String,
}

/// `GET /oauth/sso?request=<id>`: to the provider.
pub(super) async fn start(State(cp): State<Arc<ControlPlane>>, Query(q): Query<Start>) -> Response {
    let Some(sso) = cp.config.sso.clone() else {
        return pages::page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured",
            "<p>Sign in with your e-mail and password.</p>",
        );
    };
    let id = q.request.clone();
    let found = blocking(&cp, move |cp| cp.store.auth_request(&id)).await;
    match found {
        Ok(Some((_, created))) if super::flow::within_window(created.secs(), unix_now().secs()) => {
        }
        Ok(_) => return super::expired_page(),
        Err(e) => return super::internal(e),
    }
    let meta = match tokio::task::spawn_blocking(move || discovery(&sso)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return provider_down(&e),
        Err(e) => return super::internal(e),
    };
    let Some(authorize) = meta["authorization_endpoint"].as_str() else {
        return provider_down(&anyhow::anyhow!("no authorization_endpoint"));
    };
    let (Some(s), Some(n), Some(v)) = (super::random32(), super::random32(), super::random32())
    else {
        return super::internal("no randomness");
    };
    let (state, nonce, verifier) = (
        super::flow::secret("", s),
        super::flow::secret("", n),
        super::flow::secret("", v),
    );
    let challenge = super::flow::challenge_of(&verifier);
    {
        let mut pending = cp.sso.pending.lock();
        pending.retain(|_, p| p.at.elapsed() < Duration::from_secs(super::flow::REQUEST_TTL));
        pending.insert(
            state.clone(),
            Pending {
                request: q.request,
                nonce: nonce.clone(),
                verifier,
                at: std::time::Instant::now(),
            },
        );
    }
    let Some(c) = cp.config.sso.as_ref() else {
        return super::internal("SSO vanished");
    };
    let to = format!(
        "{authorize}?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        urlencode(&c.client_id),
        urlencode(&callback_url(&cp))
    );
    Redirect::to(&to).into_response()
}

fn provider_down(e: &anyhow::Error) -> Response {
    warn!(error = %format!("{e:#}"), "single sign-on: the provider could not be reached");
    pages::page(
        StatusCode::BAD_GATEWAY,
        "The sign-in provider is unavailable",
        "<p>Try again in a moment, or sign in with your e-mail and password.</p>",
    )
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// What the ID token says about the person.
struct Person {
    email: String,
    name: String,
    role: String,
}

/// Redeems the provider's code and verifies its ID token (blocking: HTTP).
fn verify(
    cp: &ControlPlane,
    c: &SsoConfig,
    code: &str,
    p: &Pending,
) -> Result<Result<Person, String>> {
    let meta = discovery(c)?;
    let token_url = meta["token_endpoint"]
        .as_str()
        .context("no token_endpoint")?;
    let jwks_url = meta["jwks_uri"].as_str().context("no jwks_uri")?;
    let token_url = cloudsignal_core::idp::checked_url("token_endpoint", token_url)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let callback = callback_url(cp);
    let mut r = agent()
        .post(&token_url)
        .send_form([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback.as_str()),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("code_verifier", p.verifier.as_str()),
        ])
        .context("redeeming the provider's code")?;
    let status = r.status();
    let body: serde_json::Value =
        serde_json::from_str(&r.body_mut().with_config().limit(1 << 20).read_to_string()?)?;
    if status != 200 {
        return Ok(Err(format!(
            "the provider refused the code: {}",
            body["error"].as_str().unwrap_or("?")
        )));
    }
    let id_token = body["id_token"]
        .as_str()
        .context("no id_token in the provider's answer")?;
    let (keys, _) = KeySet::from_jwks_json(&get_json(jwks_url)?.to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let inspected = Inspected::parse(id_token, 16 * 1024, &[Alg::RS256, Alg::ES256, Alg::EdDSA])
        .map_err(|e| anyhow::anyhow!("ID token: {e}"))?;
    let key = keys
        .find(inspected.kid(), inspected.algorithm())
        .context("the provider does not publish the ID token's key")?
        .clone();
    let jwt = inspected
        .verify(
            &key,
            &Validation::new(Some(c.issuer.trim_end_matches('/')), &c.client_id),
            unix_now(),
        )
        .map_err(|e| anyhow::anyhow!("ID token: {e}"))?;
    if jwt.str_claim("nonce") != Some(p.nonce.as_str()) {
        bail!("the ID token's nonce is not this sign-in's");
    }
    let email = jwt.str_claim("email").map(str::to_owned);
    let verified = cloudsignal_core::idp::email_verified(&jwt.claims);
    let groups: Vec<String> = match jwt.claims.get(&c.groups_claim) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    };
    let Some(email) = email.filter(|_| verified) else {
        return Ok(Err(
            "the provider did not vouch for an e-mail address (email_verified)".into(),
        ));
    };
    let Some(role) = decide(&c.rules, Some(&email), verified, &groups) else {
        return Ok(Err(format!(
            "{email} is not allowed to sign in here (no rule admits its domain or groups)"
        )));
    };
    let name = jwt.str_claim("name").unwrap_or_default().to_owned();
    Ok(Ok(Person { email, name, role }))
}

/// `GET /oauth/sso/callback`: the provider's answer; on success, the code for our client.
pub(super) async fn callback(
    State(cp): State<Arc<ControlPlane>>,
    Query(q): Query<Callback>,
) -> Response {
    let Some(sso) = cp.config.sso.clone() else {
        return pages::page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured",
            "",
        );
    };
    let pending = q
        .state
        .as_deref()
        .and_then(|s| cp.sso.pending.lock().remove(s));
    let Some(p) =
        pending.filter(|p| p.at.elapsed() < Duration::from_secs(super::flow::REQUEST_TTL))
    else {
        return pages::page(StatusCode::BAD_REQUEST, "This sign-in answer is not valid", "<p>It does not belong to a sign-in started here in the last 5 minutes. Start again.</p>");
    };
    let Some(code) = q.code.filter(|_| q.error.is_none()) else {
        return pages::page(
            StatusCode::FORBIDDEN,
            "Sign-in cancelled",
            "<p>The provider did not sign you in.</p>",
        );
    };
    let cp2 = cp.clone();
    let checked =
        tokio::task::spawn_blocking(move || verify(&cp2, &sso, &code, &p).map(|r| (r, p))).await;
    let (person, p) = match checked {
        Ok(Ok((Ok(person), p))) => (person, p),
        Ok(Ok((Err(why), _))) => {
            info!(reason = %why, "single sign-on refused");
            return pages::page(
                StatusCode::FORBIDDEN,
                "You cannot sign in here",
                &format!("<p class=\"error\">{}.</p>", pages::escape(&why)),
            );
        }
        Ok(Err(e)) => return provider_down(&e),
        Err(e) => return super::internal(e),
    };
    let org = cp.org.as_str().to_owned();
    let account = blocking(&cp, move |cp| {
        let now = unix_now();
        if let Some(a) = cp.store.account_by_email(&person.email)? {
            if a.disabled_at.is_some() || a.org != org {
                return Ok(None);
            }
            if a.role != person.role {
                cp.store.set_account_role(&a.id, &person.role)?;
                cp.audit_local(
                    &org,
                    "sso",
                    "account.role",
                    Some(&a.email),
                    format!("{} → {} by the SSO rules", a.role, person.role),
                );
            }
            return Ok(Some(Account {
                role: person.role,
                ..a
            }));
        }
        let id = super::flow::secret("acct_", crate::random::<32>()?)[..21].to_owned();
        let a = Account {
            id,
            org: org.clone(),
            email: person.email,
            name: person.name,
            role: person.role,
            password_hash: None,
            created_at: now,
            disabled_at: None,
        };
        if !cp.store.create_account(&a)? {
            bail!("the account could not be created");
        }
        cp.audit_local(
            &org,
            "sso",
            "account.create",
            Some(&a.email),
            format!("role {} by the SSO rules", a.role),
        );
        Ok(Some(a))
    })
    .await;
    match account {
        Ok(Some(a)) => super::finish_sign_in(&cp, &p.request, &a).await,
        Ok(None) => pages::page(
            StatusCode::FORBIDDEN,
            "You cannot sign in here",
            "<p>This account is disabled.</p>",
        ),
        Err(e) => super::internal(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = vec![
            Rule::parse("group:mqtt-admins=admin").unwrap(),
            Rule::parse("domain:Example.com=viewer").unwrap(),
        ];
        let g = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            decide(&rules, Some("a@example.com"), true, &g(&["mqtt-admins"])).as_deref(),
            Some("admin")
        );
        assert_eq!(
            decide(&rules, Some("a@EXAMPLE.com"), true, &[]).as_deref(),
            Some("viewer")
        );
        assert_eq!(
            decide(&rules, Some("a@example.com"), false, &[]),
            None,
            "an unverified address matches no domain"
        );
        assert_eq!(decide(&rules, Some("a@example.com.evil"), true, &[]), None);
        assert_eq!(decide(&rules, None, true, &g(&["other"])), None);
        for bad in [
            "domain:x.com",
            "domain:x.com=root",
            "user:x=admin",
            "domain:=admin",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }
}
