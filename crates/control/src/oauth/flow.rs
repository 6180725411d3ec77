//! The OAuth 2.1 rules for the control plane's own public clients, sans-IO: which clients and
//! redirect URIs exist, what an authorization request must carry, PKCE, and the windows (time
//! is passed in). The HTTP handlers and the store carry them out.

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long an authorization request and its code stay valid (seconds): the 5-minute window.
pub const REQUEST_TTL: u64 = 300;
/// Access token lifetime (seconds) unless configured otherwise.
pub const ACCESS_TTL: u64 = 900;
/// A session's absolute lifetime (seconds): its refresh tokens stop working after it.
pub const SESSION_TTL: u64 = 30 * 86_400;

/// The CLI (`cloudsignal login`): a native app on a loopback redirect (RFC 8252 §7.3).
pub const CLI: &str = "cloudsignal-cli";
/// The dashboard, on the control plane's own origin.
pub const DASHBOARD: &str = "cloudsignal-dashboard";

/// Where a client may be sent back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `http://127.0.0.1:<any port><path>` or `http://[::1]:<any port><path>`.
    Loopback {
        /// The exact path.
        path: &'static str,
    },
    /// Exactly this URI.
    Exact(String),
}

/// A registered public client (no secret: PKCE proves the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `client_id`.
    pub id: &'static str,
    /// Its redirect rule.
    pub redirect: Redirect,
}

/// The registered clients for a control plane reachable at `public_url`.
pub fn clients(public_url: &str) -> Vec<Client> {
    vec![
        Client {
            id: CLI,
            redirect: Redirect::Loopback { path: "/callback" },
        },
        Client {
            id: DASHBOARD,
            redirect: Redirect::Exact(format!(
                "{}/dashboard/callback",
                public_url.trim_end_matches('/')
            )),
        },
    ]
}

impl Redirect {
    /// Whether `uri` is allowed: exact, or a loopback IP literal with any port (never
    /// `localhost`, which a hosts file or DNS could point elsewhere; RFC 8252 §8.3).
    pub fn allows(&self, uri: &str) -> bool {
        match self {
            Self::Exact(want) => uri == want,
            Self::Loopback { path } => {
                let Some(rest) = uri.strip_prefix("http://") else {
                    return false;
                };
                let (host_port, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                if tail != *path {
                    return false;
                }
                let (host, port) = match host_port.rsplit_once(':') {
                    Some((h, p)) => (h, p),
                    None => return false,
                };
                (host == "127.0.0.1" || host == "[::1]")
                    && !port.is_empty()
                    && port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            }
        }
    }
}

/// An authorization request's parameters, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct AuthorizeParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// A registered client.
    pub client_id: Option<String>,
    /// Allowed for that client.
    pub redirect_uri: Option<String>,
    /// BASE64URL(SHA-256(verifier)), 43 characters.
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// Required: the client's CSRF binding, returned unchanged.
    pub state: Option<String>,
    /// Ignored (the account's role decides what the session may do).
    pub scope: Option<String>,
}

/// A request that may proceed to sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    /// The client.
    pub client_id: String,
    /// Where the code goes.
    pub redirect_uri: String,
    /// The PKCE challenge.
    pub code_challenge: String,
    /// The client's state.
    pub state: String,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// Unknown client: shown, never redirected.
    #[error("unknown client_id")]
    UnknownClient,
    /// A redirect URI the client did not register: shown, never redirected (an open redirect
    /// would hand the code to whoever wrote the link).
    #[error("redirect_uri is not registered for this client")]
    BadRedirect,
    /// `response_type` is not `code`.
    #[error("response_type must be code")]
    UnsupportedResponseType,
    /// No PKCE challenge (OAuth 2.1 requires it for every client).
    #[error("code_challenge is required (PKCE, S256)")]
    PkceRequired,
    /// A method other than S256 (`plain` is refused).
    #[error("code_challenge_method must be S256")]
    PkceMethod,
    /// No `state`.
    #[error("state is required")]
    StateRequired,
}

impl AuthorizeError {
    /// The RFC 6749 §4.1.2.1 error code, for errors that go back to the client.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownClient | Self::BadRedirect | Self::StateRequired => "invalid_request",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::PkceRequired | Self::PkceMethod => "invalid_request",
        }
    }

    /// Whether the error may be sent to the redirect URI (it was checked and is the client's).
    pub fn redirectable(&self) -> bool {
        !matches!(self, Self::UnknownClient | Self::BadRedirect)
    }
}

/// Checks an authorization request against the registered `clients`.
pub fn validate(clients: &[Client], p: &AuthorizeParams) -> Result<ValidRequest, AuthorizeError> {
    let client = clients
        .iter()
        .find(|c| Some(c.id) == p.client_id.as_deref())
        .ok_or(AuthorizeError::UnknownClient)?;
    let redirect_uri = p
        .redirect_uri
        .clone()
        .filter(|r| client.redirect.allows(r))
        .ok_or(AuthorizeError::BadRedirect)?;
    if p.response_type.as_deref() != Some("code") {
        return Err(AuthorizeError::UnsupportedResponseType);
    }
    let challenge = p
        .code_challenge
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or(AuthorizeError::PkceRequired)?;
    if p.code_challenge_method.as_deref() != Some("S256")
        || challenge.len() != 43
        || Base64UrlUnpadded::decode_vec(&challenge).is_err()
    {
        return Err(AuthorizeError::PkceMethod);
    }
    let state = p
        .state
        .clone()
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .ok_or(AuthorizeError::StateRequired)?;
    Ok(ValidRequest {
        client_id: client.id.to_owned(),
        redirect_uri,
        code_challenge: challenge,
        state,
    })
}

/// The S256 challenge of a verifier.
pub fn challenge_of(verifier: &str) -> String {
    Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` (43-128 unreserved characters, RFC 7636 §4.1) answers `challenge`,
/// compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed
        && bool::from(
            challenge_of(verifier)
                .as_bytes()
                .ct_eq(challenge.as_bytes()),
        )
}

/// Whether something created at `created` is still inside the 5-minute window at `now`.
pub fn within_window(created: u64, now: u64) -> bool {
    now >= created && now - created < REQUEST_TTL
}

/// A random secret with a prefix (`csa_` access, `csr_` refresh, `csc_` code…), 256 bits.
pub fn secret(prefix: &str, random: [u8; 32]) -> String {
    format!("{prefix}{}", Base64UrlUnpadded::encode_string(&random))
}

/// What the store keeps of a secret: its SHA-256, hex (a stolen database holds no usable
/// token; 256-bit secrets need no slow hash).
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(redirect: &str) -> AuthorizeParams {
        AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some(CLI.into()),
            redirect_uri: Some(redirect.into()),
            code_challenge: Some(challenge_of(&"v".repeat(43))),
            code_challenge_method: Some("S256".into()),
            state: Some("xyz".into()),
            scope: None,
        }
    }

    #[test]
    fn pkce_rfc7636_appendix_b() {
        // RFC 7636 Appendix B's verifier and challenge
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(challenge_of(verifier), challenge);
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(
            !pkce_matches("short", &challenge_of("short")),
            "too short a verifier"
        );
    }

    #[test]
    fn loopback_redirects_take_any_port_and_nothing_else() {
        let c = clients("http://127.0.0.1:8080");
        for ok in ["http://127.0.0.1:53211/callback", "http://[::1]:9/callback"] {
            assert!(validate(&c, &params(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost:5000/callback",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:99999/callback",
            "https://127.0.0.1:5000/callback",
            "http://127.0.0.1:5000/callback/../x",
            "http://127.0.0.1:5000/other",
            "http://127.0.0.1:5000/callback?x=1",
            "http://127.0.0.1.evil.example:5000/callback",
            "http://evil.example/callback#127.0.0.1:1/callback",
        ] {
            assert_eq!(
                validate(&c, &params(bad)),
                Err(AuthorizeError::BadRedirect),
                "{bad}"
            );
        }
        let mut dash = params("http://127.0.0.1:8080/dashboard/callback");
        dash.client_id = Some(DASHBOARD.into());
        assert!(validate(&c, &dash).is_ok());
        dash.redirect_uri = Some("http://127.0.0.1:8081/dashboard/callback".into());
        assert_eq!(validate(&c, &dash), Err(AuthorizeError::BadRedirect));
    }

    #[test]
    fn pkce_s256_and_state_are_required() {
        let c = clients("http://127.0.0.1:8080");
        let ok = params("http://127.0.0.1:1234/callback");
        let mut p = ok.clone();
        p.code_challenge = None;
        assert_eq!(validate(&c, &p), Err(AuthorizeError::PkceRequired));
        let mut p = ok.clone();
        p.code_challenge_method = Some("plain".into());
        assert_eq!(validate(&c, &p), Err(AuthorizeError::PkceMethod));
        let mut p = ok.clone();
        p.state = None;
        assert_eq!(validate(&c, &p), Err(AuthorizeError::StateRequired));
        let mut p = ok.clone();
        p.response_type = Some("token".into());
        assert_eq!(
            validate(&c, &p),
            Err(AuthorizeError::UnsupportedResponseType)
        );
        let mut p = ok;
        p.client_id = Some("evil".into());
        assert_eq!(validate(&c, &p), Err(AuthorizeError::UnknownClient));
        assert!(!AuthorizeError::BadRedirect.redirectable());
    }

    #[test]
    fn the_window_is_five_minutes() {
        assert!(within_window(1_000, 1_000));
        assert!(within_window(1_000, 1_299));
        assert!(!within_window(1_000, 1_300));
        assert!(!within_window(1_000, 999), "from the future");
    }
}
