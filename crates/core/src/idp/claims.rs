//! From verified claims to an [`Identity`]: the subject, the roles the profile reads, and the
//! provider-specific rules (Firebase `auth_time`, Clerk `azp`).

use super::{ClaimRules, Identity, IdpError, IssuerProfile};
use crate::ids::UserId;
use crate::jws::VerifiedJwt;
use crate::time::UnixTime;
use serde_json::{Map, Value};

/// A claim by exact name (Auth0's namespaced claims are URLs full of dots), else by a dot path
/// into nested objects (`app_metadata.roles`, Clerk's `o.rol`).
pub(super) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// Role names from a claim value: a string, or the strings of an array. Empty strings and
/// other types are ignored (a malformed custom claim grants nothing rather than failing).
fn push_roles(value: &Value, out: &mut Vec<String>) {
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|r| r == s) {
            out.push(s.to_owned());
        }
    };
    match value {
        Value::String(s) => push(s),
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(push),
        _ => {}
    }
}

fn roles(rules: &ClaimRules, claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for path in &rules.role_claims {
        if let Some(v) = lookup(claims, path) {
            push_roles(v, &mut out);
        }
    }
    if rules.namespaced_roles {
        for (name, v) in claims {
            if name.contains("://") && name.ends_with("/roles") {
                push_roles(v, &mut out);
            }
        }
    }
    out
}

fn check_rules(
    rules: &ClaimRules,
    jwt: &VerifiedJwt,
    leeway: u64,
    now: UnixTime,
) -> Result<(), IdpError> {
    if !rules.authorized_parties.is_empty() {
        // Clerk: the origin the session token was minted for must be one of ours
        match jwt.str_claim("azp") {
            Some(azp) if rules.authorized_parties.iter().any(|p| p == azp) => {}
            Some(_) => {
                return Err(IdpError::Claim {
                    claim: "azp",
                    reason: "the authorized party is not an allowed origin",
                })
            }
            None => {
                return Err(IdpError::Claim {
                    claim: "azp",
                    reason: "missing; this issuer's tokens must name an allowed origin",
                })
            }
        }
    }
    if rules.require_auth_time {
        // Firebase: "auth_time must be in the past"
        match jwt.claims.get("auth_time").and_then(Value::as_u64) {
            Some(t) if t <= now.secs().saturating_add(leeway) => {}
            Some(_) => {
                return Err(IdpError::Claim {
                    claim: "auth_time",
                    reason: "authentication time is in the future",
                })
            }
            None => {
                return Err(IdpError::Claim {
                    claim: "auth_time",
                    reason: "missing or not a number",
                })
            }
        }
    }
    Ok(())
}

/// The identity a verified token describes under `profile`'s rules.
pub(super) fn identity(
    profile: &IssuerProfile,
    jwt: &VerifiedJwt,
    now: UnixTime,
) -> Result<Identity, IdpError> {
    check_rules(&profile.rules, jwt, profile.validation.leeway, now)?;
    let subject = jwt
        .str_claim("sub")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or(IdpError::BadSubject)?;
    let mut all = roles(&profile.rules, &jwt.claims);
    let role = (!all.is_empty()).then(|| all.remove(0));
    Ok(Identity {
        provider: profile.provider,
        issuer: jwt.str_claim("iss").unwrap_or_default().to_owned(),
        subject,
        role,
        roles: all,
        email: jwt.str_claim("email").map(str::to_owned),
        email_verified: email_verified(&jwt.claims),
        expires_at: jwt.exp,
        issued_at: jwt.iat,
    })
}

/// `email_verified`: a boolean in OIDC, a string in some providers (AWS Cognito); absent or
/// anything else is unverified.
pub fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_true_email_verified_is_verified() {
        for (v, want) in [
            (serde_json::json!({"email_verified": true}), true),
            (serde_json::json!({"email_verified": "true"}), true),
            (serde_json::json!({"email_verified": false}), false),
            (serde_json::json!({"email_verified": "yes"}), false),
            (serde_json::json!({"email_verified": 1}), false),
            (serde_json::json!({}), false),
        ] {
            assert_eq!(email_verified(&claims(v.clone())), want, "{v}");
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn exact_names_before_dot_paths() {
        let c = claims(serde_json::json!({
            "https://app.example/roles": ["editor"],
            "app_metadata": {"roles": ["a", "b"]},
            "o": {"rol": "admin"}
        }));
        assert_eq!(
            lookup(&c, "https://app.example/roles").unwrap(),
            &serde_json::json!(["editor"])
        );
        assert_eq!(
            lookup(&c, "app_metadata.roles").unwrap(),
            &serde_json::json!(["a", "b"])
        );
        assert_eq!(lookup(&c, "o.rol").unwrap(), "admin");
        assert!(lookup(&c, "o.rol.x").is_none());
        assert!(lookup(&c, "missing").is_none());
    }

    #[test]
    fn roles_are_collected_in_order_without_repeats() {
        let rules = ClaimRules {
            role_claims: vec!["role".into(), "roles".into()],
            namespaced_roles: true,
            ..ClaimRules::default()
        };
        let c = claims(serde_json::json!({
            "role": "admin", "roles": ["admin", "editor", 7, ""],
            "https://x.example/roles": "ops", "plain/roles": "ignored", "other": "x"
        }));
        assert_eq!(roles(&rules, &c), ["admin", "editor", "ops"]);
    }
}
