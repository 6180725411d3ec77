//! Client certificates (mTLS): what the TLS handshake verified, read into a [`ClientCert`],
//! and the chain method that turns one into a principal.
//!
//! The identity comes from a template over the certificate's fields (`{cn}`, `{ou}`, `{o}`,
//! `{dns}`, `{uri}`, `{email}`, `{fingerprint}`; the first value of each), e.g. `{cn}` or
//! `{ou}.{cn}`, and must be a valid user id; the user is `<identity>@<org>` in the configured
//! org. The ACL comes from the first role whose matcher the certificate satisfies: `OU=<v>`,
//! `O=<v>`, `CN=<v>` (equal), `URI:<prefix>`, `DNS:<name>` or `EMAIL:<address>`; with no
//! matching role, the default ACL (if configured) applies, otherwise the CONNECT is refused
//! 0x87. The session ends (0xA0) when the certificate expires; revoking its SHA-256
//! fingerprint closes it (0x98).

use crate::auth::{Principal, Refusal};
use crate::chain::{AuthMethod, Decision, DecisionFuture, PeerInfo};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::revocation::Credential;
use cloudsignal_core::session::ConnectRequest;
use cloudsignal_core::UnixTime;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The fields of a verified client certificate that identities and roles are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject, as text (`CN=alice, OU=sensors, O=Example`), for logs and webhooks.
    pub subject: String,
    /// Subject common names.
    pub cn: Vec<String>,
    /// Subject organisational units.
    pub ou: Vec<String>,
    /// Subject organisations.
    pub o: Vec<String>,
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN URIs.
    pub uri: Vec<String>,
    /// SAN email addresses.
    pub email: Vec<String>,
    /// When it expires.
    pub not_after: UnixTime,
    /// SHA-256 of its DER, lowercase hex (what revocation names).
    pub fingerprint: String,
}

impl ClientCert {
    /// Reads a DER certificate (already verified by the TLS handshake).
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("client certificate: {e}"))?;
        let strings =
            |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
        let subject = cert.subject();
        let mut c = Self {
            subject: subject.to_string(),
            cn: strings(&mut subject.iter_common_name()),
            ou: strings(&mut subject.iter_organizational_unit()),
            o: strings(&mut subject.iter_organization()),
            not_after: UnixTime(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0)),
            fingerprint: Sha256::digest(der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            ..Self::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => c.dns.push((*d).to_owned()),
                    GeneralName::URI(u) => c.uri.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => c.email.push((*e).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    fn field(&self, name: &str) -> Option<&str> {
        fn first(v: &[String]) -> Option<&str> {
            v.first().map(String::as_str)
        }
        match name {
            "cn" => first(&self.cn),
            "ou" => first(&self.ou),
            "o" => first(&self.o),
            "dns" => first(&self.dns),
            "uri" => first(&self.uri),
            "email" => first(&self.email),
            "fingerprint" => Some(&self.fingerprint),
            _ => None,
        }
    }

    /// The identity `template` names for this certificate.
    pub fn identity(&self, template: &str) -> Result<UserId, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("identity template {template:?}: unclosed {{"))?;
            let name = &rest[start + 1..start + end];
            let value = self.field(name).ok_or_else(|| {
                format!("the certificate has no {name} (identity template {template:?})")
            })?;
            out.push_str(value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        UserId::parse(&out)
            .map_err(|e| format!("the certificate maps to {out:?}, not a user id: {e}"))
    }

    /// Whether the certificate satisfies a role `matcher`.
    pub fn matches(&self, matcher: &str) -> bool {
        let any = |v: &Vec<String>, f: &dyn Fn(&str) -> bool| v.iter().any(|x| f(x));
        if let Some((kind, value)) = matcher.split_once('=') {
            return match kind.trim() {
                "OU" => any(&self.ou, &|x| x == value),
                "O" => any(&self.o, &|x| x == value),
                "CN" => any(&self.cn, &|x| x == value),
                _ => false,
            };
        }
        match matcher.split_once(':') {
            Some(("URI", prefix)) => any(&self.uri, &|x| x.starts_with(prefix)),
            Some(("DNS", name)) => any(&self.dns, &|x| x.eq_ignore_ascii_case(name)),
            Some(("EMAIL", addr)) => any(&self.email, &|x| x.eq_ignore_ascii_case(addr)),
            _ => false,
        }
    }
}

/// A role: certificates matching `matcher` get `acl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRole {
    /// `OU=…`, `O=…`, `CN=…`, `URI:<prefix>`, `DNS:<name>` or `EMAIL:<address>`.
    #[serde(rename = "match")]
    pub matcher: String,
    /// Publish filters (templates `{user}`, `{org}`, `{client_id}`).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Subscribe filters.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// The client-certificate method's configuration.
#[derive(Debug, Clone)]
pub struct MtlsConfig {
    /// The org certificate identities belong to.
    pub org: OrgId,
    /// The identity template (default `{cn}`).
    pub identity: String,
    /// Roles, first match wins.
    pub roles: Vec<CertRole>,
    /// The ACL of a certificate no role matches; `None` refuses it (0x87).
    pub default_acl: Option<AclRules>,
}

/// The client-certificate method: claims CONNECTs that carry a verified certificate and no
/// password (a certificate plus a token or key is decided by that credential's method, the
/// handshake having verified the certificate).
#[derive(Debug)]
pub struct Mtls {
    config: MtlsConfig,
}

impl Mtls {
    /// The method for `config` (its roles' filters are checked now).
    pub fn new(config: MtlsConfig) -> Result<Self, String> {
        for r in &config.roles {
            AclRules::new(
                r.publish.iter().map(String::as_str),
                r.subscribe.iter().map(String::as_str),
            )
            .map_err(|e| format!("mtls role {:?}: {e}", r.matcher))?;
        }
        ClientCert::default()
            .identity(&config.identity)
            .err()
            .filter(|e| e.contains("unclosed"))
            .map_or(Ok(()), Err)?;
        Ok(Self { config })
    }

    fn decide_now(&self, req: &ConnectRequest, cert: &ClientCert, now: UnixTime) -> Decision {
        let deny = |reason, cause: String| Decision::Deny(Refusal { reason, cause });
        let user = match cert.identity(&self.config.identity) {
            Ok(u) => u,
            Err(e) => return deny(ReasonCode::NOT_AUTHORIZED, e),
        };
        let org = self.config.org.as_str();
        let username = format!("{}@{org}", user.as_str());
        if let Some(sent) = req.username.as_deref() {
            if sent != username && sent != user.as_str() {
                return deny(
                    ReasonCode::BAD_USERNAME_OR_PASSWORD,
                    format!("username {sent:?} is not the certificate's identity {username:?}"),
                );
            }
        }
        if now >= cert.not_after {
            return deny(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                "client certificate expired".into(),
            );
        }
        let rules = match self.config.roles.iter().find(|r| cert.matches(&r.matcher)) {
            Some(r) => AclRules::new(
                r.publish.iter().map(String::as_str),
                r.subscribe.iter().map(String::as_str),
            ),
            None => match &self.config.default_acl {
                Some(acl) => Ok(acl.clone()),
                None => {
                    return deny(
                        ReasonCode::NOT_AUTHORIZED,
                        format!("no role matches the certificate {:?}", cert.subject),
                    )
                }
            },
        };
        let credential = Credential {
            org: Some(org.to_owned()),
            user: Some(user.as_str().to_owned()),
            iat: Some(now),
            cert: Some(cert.fingerprint.clone()),
            ..Credential::default()
        };
        let principal = rules.and_then(|r| {
            Principal::user(
                org,
                user.as_str(),
                &r,
                &req.client_id,
                Some(cert.not_after),
                credential,
            )
        });
        match principal {
            Ok(p) => Decision::Allow(std::sync::Arc::new(p)),
            Err(e) => deny(ReasonCode::NOT_AUTHORIZED, e.to_string()),
        }
    }
}

impl AuthMethod for Mtls {
    fn name(&self) -> &'static str {
        "mtls"
    }

    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        peer: &'a PeerInfo,
        now: UnixTime,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            match (&peer.cert, &req.password) {
                (Some(cert), None) => self.decide_now(req, cert, now),
                _ => Decision::NotMine,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cert() -> ClientCert {
        ClientCert {
            subject: "CN=sensor-7, OU=sensors, O=Example".into(),
            cn: vec!["sensor-7".into()],
            ou: vec!["sensors".into()],
            o: vec!["Example".into()],
            uri: vec!["spiffe://example.org/fleet/sensor-7".into()],
            not_after: UnixTime(2_000_000_000),
            fingerprint: "ab".repeat(32),
            ..ClientCert::default()
        }
    }

    #[test]
    fn identity_templates_and_role_matchers() {
        let c = cert();
        assert_eq!(c.identity("{cn}").unwrap().as_str(), "sensor-7");
        assert_eq!(
            c.identity("{ou}.{cn}").unwrap().as_str(),
            "sensors.sensor-7"
        );
        assert!(c.identity("{dns}").unwrap_err().contains("has no dns"));
        assert!(
            c.identity("{uri}").unwrap_err().contains("not a user id"),
            "a '/' never reaches a topic"
        );
        assert!(c.identity("{cn").unwrap_err().contains("unclosed"));
        assert!(c.matches("OU=sensors") && !c.matches("OU=admins"));
        assert!(c.matches("URI:spiffe://example.org/fleet/") && !c.matches("URI:spiffe://evil/"));
        assert!(!c.matches("OU sensors") && !c.matches("DNS:"));
    }
}
