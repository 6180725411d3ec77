//! Token issuance: `POST /v1/tokens` (a backend's token for a user; a directory user's ACL
//! comes from their groups) and `POST /v1/token/exchange` (an identity provider's JWT for MQTT
//! credentials, linked to a directory user when there is one).

use super::{authorize, parse_body, within, ApiResult, Problem};
use crate::{unix_now, ControlPlane};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::exchange::{refresh_at, MqttCredentials, TokenResponse, MAX_TTL, MIN_TTL};
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::token::{Jti, TokenClaims};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::info;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
    ttl: Option<u64>,
    acl: Option<AclRules>,
}

pub(super) async fn issue_token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<TokenResponse>> {
    let key = authorize(&cp, &headers, peer.ip(), "tokens:issue").await?;
    let req: TokenRequest = parse_body(body)?;
    let mut user = UserId::parse(&req.user)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_user", e.to_string()))?;
    // a token is for a user of the issuing key's org
    let org = OrgId::parse(&key.key.org).map_err(Problem::internal)?;
    // a directory user's token carries their groups' roles, and nothing wider
    let grant = directory_grant(&cp, &org, &mut user).await?;
    let acl = match (req.acl, key.key.kind.as_str(), &grant) {
        (Some(acl), ..) => acl,
        (None, _, Some(grant)) => grant.clone(),
        (None, "sk", None) => {
            AclRules::new(["users/{user}/#"], ["users/{user}/#"]).map_err(Problem::internal)?
        }
        (None, _, None) => AclRules {
            publish: key.key.mqtt_scopes("publish").map(str::to_owned).collect(),
            subscribe: key
                .key
                .mqtt_scopes("subscribe")
                .map(str::to_owned)
                .collect(),
        },
    };
    acl.validate()
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_acl", e.to_string()))?;
    let acl = acl
        .resolve_identity(user.as_str(), org.as_str())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_acl", e.to_string()))?;
    if let Some(grant) = &grant {
        for (kind, filters, allowed) in [
            ("publish", &acl.publish, &grant.publish),
            ("subscribe", &acl.subscribe, &grant.subscribe),
        ] {
            if let Some(f) = filters
                .iter()
                .find(|f| !within(f, allowed.iter().map(String::as_str)))
            {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "outside_directory_grant",
                    format!(
                        "{kind} filter {f:?} is wider than what {}'s directory groups grant",
                        user.as_str()
                    ),
                ));
            }
        }
    }
    if key.key.kind != "sk" {
        // an rk_ key may not issue a token wider than itself
        for (kind, filters) in [("publish", &acl.publish), ("subscribe", &acl.subscribe)] {
            if let Some(f) = filters
                .iter()
                .find(|f| !within(f, key.key.mqtt_scopes(kind)))
            {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "scope_escalation",
                    format!("{kind} filter {f:?} is wider than this key's mqtt:{kind} scopes"),
                ));
            }
        }
    }
    let max = cp.config.max_ttl.min(MAX_TTL);
    let ttl = req.ttl.unwrap_or(3600).clamp(MIN_TTL, max);
    if let Some(at) = cp
        .broker
        .get()
        .and_then(|b| b.user_revoked_at(org.as_str(), user.as_str()))
    {
        after_second(at).await;
    }
    let now = unix_now();
    let jti = Jti::from_random(crate::random::<16>().map_err(Problem::internal)?);
    let claims = TokenClaims::new(&cp.config.issuer, user, org, acl.clone(), now, ttl, jti);
    info!(key = %key.key.id, user = %claims.sub.as_str(), ttl, jti = %claims.jti.as_str(), "token issued");
    Ok(Json(TokenResponse {
        mqtt_credentials: MqttCredentials {
            username: claims.username(),
            password: cp.sign(&claims).map_err(Problem::internal)?,
            client_id: None,
        },
        expires_at: claims.exp,
        refresh_at: refresh_at(claims.iat, claims.exp),
        acl,
        broker: cp.config.broker.clone(),
    }))
}

/// The grant of `user` if a directory lists them (their name then spelled as the directory
/// spells it), `None` if none does; refused if they are deprovisioned.
async fn directory_grant(
    cp: &Arc<ControlPlane>,
    org: &OrgId,
    user: &mut UserId,
) -> ApiResult<Option<AclRules>> {
    use crate::directory::sync::Listing;
    let (cp2, org2, name) = (
        cp.clone(),
        org.as_str().to_owned(),
        user.as_str().to_owned(),
    );
    let listing = tokio::task::spawn_blocking(move || {
        cp2.directory_standing(&org2, crate::directory::sync::Lookup::Username(&name))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    match listing {
        Listing::NotListed => Ok(None),
        Listing::Deprovisioned(standing) => {
            info!(user = %user.as_str(), standing = standing.as_str(), "token refused: the user is deprovisioned in the directory");
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "user_deprovisioned",
                format!("{} is {} in the directory; no token is issued for them", user.as_str(), standing.as_str()),
            ))
        }
        Listing::Ambiguous => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "directory_conflict",
            format!("two directories list an active user named {}; no token is issued until one of them changes", user.as_str()),
        )),
        Listing::Active { username, roles } => {
            *user = UserId::parse(&username).map_err(Problem::internal)?;
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let grant = cp.config.role_map.grant(&roles).map_err(|e| {
                Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string())
            })?;
            let grant = grant
                .resolve_identity(user.as_str(), org.as_str())
                .map_err(|e| Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string()))?;
            Ok(Some(grant))
        }
    }
}

/// Links an identity provider's user to a directory user (their subject is the directory's
/// user name, or their e-mail address, verified by the provider, is the directory user's):
/// the token is then issued for the directory user, with their groups' roles added. Whether a
/// directory user was linked; refused if they are deprovisioned.
async fn link_directory_user(
    cp: &Arc<ControlPlane>,
    identity: &mut cloudsignal_core::idp::Identity,
) -> ApiResult<bool> {
    use crate::directory::sync::{Listing, Lookup};
    let cp2 = cp.clone();
    let org = cp.org.as_str().to_owned();
    let subject = identity.subject.as_str().to_owned();
    let email = identity.email.clone().filter(|_| identity.email_verified);
    let listing = tokio::task::spawn_blocking(move || {
        let by_name = cp2.directory_standing(&org, Lookup::Username(&subject))?;
        match (&by_name, &email) {
            (Listing::NotListed, Some(email)) => cp2.directory_standing(&org, Lookup::Email(email)),
            _ => Ok(by_name),
        }
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    match listing {
        Listing::NotListed => Ok(false),
        Listing::Deprovisioned(standing) => {
            info!(sub = %identity.subject.as_str(), standing = standing.as_str(), "exchange refused: the directory user is deprovisioned");
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "user_deprovisioned",
                format!("this user is {} in the directory", standing.as_str()),
            ))
        }
        Listing::Ambiguous => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "directory_conflict",
            "two directories list this user; no token is issued until one of them changes",
        )),
        Listing::Active { username, roles } => {
            info!(sub = %identity.subject.as_str(), directory_user = %username, "identity linked to a directory user");
            identity.subject = UserId::parse(&username).map_err(Problem::internal)?;
            identity.roles.extend(roles);
            Ok(true)
        }
    }
}

/// Waits until the Unix second after `at`: a token issued in the second a user was revoked
/// would be revoked too (revocations cover tokens issued at or before their second).
async fn after_second(at: cloudsignal_core::UnixTime) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let next_ms = u128::from(at.secs().saturating_add(1)) * 1000;
    if let Some(wait) = next_ms.checked_sub(now_ms).filter(|w| *w > 0 && *w <= 2000) {
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        ))
        .await;
    }
}

/// `POST /v1/token/exchange`: an identity provider's JWT (`Authorization: Bearer`) for `tkn_`
/// MQTT credentials, the worker's exchange run natively.
pub(super) async fn exchange_token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<TokenResponse>> {
    let Some(x) = cp.config.exchange.clone() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "exchange_not_configured",
            "no identity provider is configured (see --supabase-url)",
        ));
    };
    let rate_limited = |what: &str| {
        info!(what, "exchange refused: rate limited");
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many exchanges for this {what}; retry in a minute"),
        )
    };
    // before any cryptography, as the worker
    if !x
        .per_address
        .lock()
        .allow(&format!("ip:{}", peer.ip()), unix_now())
    {
        return Err(rate_limited("address"));
    }
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send Authorization: Bearer <identity provider JWT>",
            )
        })?;
    let invalid = |e: String| {
        info!(reason = %e, "exchange refused");
        Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", e)
    };
    let pending = x.idp.inspect(&jwt).map_err(|e| invalid(e.to_string()))?;
    let key = match x.idp.static_key(&pending) {
        Some(k) => k.clone(),
        None => {
            let source = crate::exchange::Source::of(x.idp.key_source(&pending))
                .ok_or_else(|| invalid("no key for this token".into()))?;
            let (kid, alg) = (pending.kid().map(str::to_owned), pending.alg());
            let x2 = x.clone();
            tokio::task::spawn_blocking(move || {
                crate::exchange::jwks_key(&x2, &source, kid.as_deref(), alg)
            })
            .await
            .map_err(Problem::internal)?
            .map_err(|p| match p {
                crate::exchange::KeyProblem::Unknown => {
                    invalid("the identity provider does not publish this token's key".into())
                }
                crate::exchange::KeyProblem::Unavailable => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "idp_unavailable",
                    "the identity provider's keys could not be fetched",
                ),
            })?
        }
    };
    let mut identity = x
        .idp
        .verify(pending, &key, unix_now())
        .map_err(|e| invalid(e.to_string()))?;
    let directory_user = link_directory_user(&cp, &mut identity).await?;
    let user = identity.subject.as_str();
    if !x
        .per_user
        .lock()
        .allow(&format!("user:{}|{user}", identity.issuer), unix_now())
    {
        return Err(rate_limited("user"));
    }
    let revoked_at = cp
        .broker
        .get()
        .and_then(|b| b.user_revoked_at(cp.org.as_str(), user));
    // a directory user's standing is the directory's to say (it is synced every interval);
    // their revocations still close sessions and refuse older tkn_ tokens
    if let (true, Some(at)) = (directory_user, revoked_at) {
        after_second(at).await;
    } else if cloudsignal_core::exchange::user_revoked(revoked_at, &identity, unix_now()) {
        info!(sub = %user, "exchange refused: the user's credentials were revoked");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "user_revoked",
            "this user's credentials were revoked; sign in again",
        ));
    }
    let policy = cloudsignal_core::exchange::ExchangePolicy {
        issuer: cp.config.issuer.clone(),
        org: cp.org.clone(),
        ttl: x.ttl.min(cp.config.max_ttl),
        role_map: x.role_map.clone(),
        broker: cp.config.broker.clone(),
    };
    let jti = Jti::from_random(crate::random::<16>().map_err(Problem::internal)?);
    let key = cp
        .signing
        .read()
        .map_err(|_| Problem::internal("signing key lock poisoned"))?;
    let resp = policy
        .exchange(&identity, unix_now(), jti, &key)
        .map_err(|e| Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string()))?;
    cp.exchanges
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    info!(provider = identity.provider.name(), sub = %identity.subject.as_str(), "identity exchanged for a token");
    Ok(Json(resp))
}
