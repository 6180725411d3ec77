//! OpenID Connect Discovery 1.0: where an issuer's metadata lives and how to read its
//! `jwks_uri` safely. The fetch is the adapter's; the checks are here.

use super::providers::checked_url;
use super::IdpError;
use serde_json::Value;

/// `<issuer>/.well-known/openid-configuration`, the issuer's trailing `/` removed first
/// (OpenID Connect Discovery 1.0 §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim().trim_end_matches('/')
    )
}

/// The `jwks_uri` of a discovery document, after checking that its `issuer` is exactly the
/// configured one (§4.3: "MUST be identical", which stops one issuer's metadata from vouching
/// for another's keys) and that the URI is https (or loopback http).
pub fn jwks_uri_from_discovery(document: &str, expected_issuer: &str) -> Result<String, IdpError> {
    let doc: Value = serde_json::from_str(document)
        .map_err(|e| IdpError::Config(format!("discovery document is not JSON: {e}")))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == expected_issuer.trim() => {}
        Some(i) => {
            return Err(IdpError::Config(format!(
                "discovery document names issuer {i:?}, expected {expected_issuer:?} \
                 (OpenID Connect Discovery 1.0 §4.3)"
            )))
        }
        None => return Err(IdpError::Config("discovery document has no issuer".into())),
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| IdpError::Config("discovery document has no jwks_uri".into()))?;
    checked_url("discovery jwks_uri", uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn url_drops_the_trailing_slash() {
        assert_eq!(
            discovery_url("https://idp.example/realms/a/"),
            "https://idp.example/realms/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuer_must_be_identical_and_jwks_uri_https() {
        let doc = |iss: &str, jwks: &str| format!(r#"{{"issuer":"{iss}","jwks_uri":"{jwks}"}}"#);
        let iss = "https://idp.example";
        assert_eq!(
            jwks_uri_from_discovery(&doc(iss, "https://idp.example/jwks"), iss).unwrap(),
            "https://idp.example/jwks"
        );
        assert!(jwks_uri_from_discovery(
            &doc("https://evil.example", "https://idp.example/jwks"),
            iss
        )
        .is_err());
        assert!(jwks_uri_from_discovery(&doc(iss, "http://idp.example/jwks"), iss).is_err());
        assert!(jwks_uri_from_discovery(r#"{"issuer":"https://idp.example"}"#, iss).is_err());
        assert!(jwks_uri_from_discovery("<html>", iss).is_err());
    }
}
