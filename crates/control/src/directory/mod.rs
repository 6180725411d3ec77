//! Directory sync: users and groups read from LDAP or Active Directory on an interval, kept in
//! the store, and acted on.
//!
//! Each configured source (`[[directories]]` in the config file) is read with a paged search
//! ([`ldap`]), compared with what the store holds ([`plan`]), and the differences applied
//! ([`sync`]):
//!
//! | change in the directory | what CloudSignal does |
//! |---|---|
//! | a user appears | stored; `POST /v1/tokens` for them grants their groups' roles |
//! | a user is deleted, or disabled (AD `userAccountControl` bit 2, OpenLDAP `pwdAccountLockedTime`) | every token revoked, live sessions closed 0x98, stored sessions ended, new tokens refused |
//! | a user's groups change | their tokens revoked (sessions closed 0x98), so clients refresh into the new ACL |
//! | a user is renamed (same stable id) | the old name's tokens revoked |
//! | a user is re-enabled or comes back | new tokens allowed again |
//!
//! A failed read changes nothing. A read that would remove every user, or more than
//! `max_removed_fraction` of them (and more than `removal_floor`), is refused as a whole and
//! reported in `GET /v1/directory/status`; `POST /v1/directory/sync` with `confirm_removals`
//! applies it when it is meant.
//!
//! Groups map to roles (`group_roles`, else the group's own name) and roles to ACL through
//! the role map (`--role-map`), as for the token exchange.

pub mod ldap;
pub mod plan;
pub mod sync;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Attribute names for one kind of directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    /// The stable id (survives renames): `entryUUID` (OpenLDAP), `objectGUID` (AD).
    pub id: String,
    /// The user name tokens are issued for (`sub`): `uid`, `sAMAccountName`.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Group DNs on the user entry (`memberOf`), when the directory keeps them.
    pub member_of: String,
    /// Group entries' member attribute (`member` of `groupOfNames`).
    pub member: String,
    /// Group entries' name attribute (`cn`).
    pub group_name: String,
    /// An attribute whose presence marks the account disabled (OpenLDAP ppolicy's
    /// `pwdAccountLockedTime`), if any.
    pub locked: Option<String>,
    /// AD's `userAccountControl`: bit 2 (ACCOUNTDISABLE) marks the account disabled.
    pub account_control: Option<String>,
}

/// The defaults of a kind of directory; every field can be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// OpenLDAP: `inetOrgPerson` users by `uid`, `entryUUID`, `groupOfNames` groups.
    Openldap,
    /// Active Directory: `user` objects by `sAMAccountName`, `objectGUID`, `memberOf`,
    /// `userAccountControl`.
    ActiveDirectory,
}

impl Preset {
    /// The preset's attribute names.
    pub fn attributes(self) -> Attributes {
        match self {
            Self::Openldap => Attributes {
                id: "entryUUID".into(),
                username: "uid".into(),
                email: "mail".into(),
                name: "cn".into(),
                member_of: "memberOf".into(),
                member: "member".into(),
                group_name: "cn".into(),
                locked: Some("pwdAccountLockedTime".into()),
                account_control: None,
            },
            Self::ActiveDirectory => Attributes {
                id: "objectGUID".into(),
                username: "sAMAccountName".into(),
                email: "mail".into(),
                name: "displayName".into(),
                member_of: "memberOf".into(),
                member: "member".into(),
                group_name: "cn".into(),
                locked: None,
                account_control: Some("userAccountControl".into()),
            },
        }
    }

    /// The preset's user filter.
    pub fn user_filter(self) -> &'static str {
        match self {
            Self::Openldap => "(objectClass=inetOrgPerson)",
            // computers are users too in AD
            Self::ActiveDirectory => "(&(objectClass=user)(!(objectClass=computer)))",
        }
    }

    /// The preset's group filter (`None`: groups come from the users' `memberOf` only).
    pub fn group_filter(self) -> Option<&'static str> {
        match self {
            Self::Openldap => Some("(objectClass=groupOfNames)"),
            Self::ActiveDirectory => None,
        }
    }
}

/// Optional attribute overrides in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeOverrides {
    id: Option<String>,
    username: Option<String>,
    email: Option<String>,
    name: Option<String>,
    member_of: Option<String>,
    member: Option<String>,
    group_name: Option<String>,
    locked: Option<String>,
    account_control: Option<String>,
}

/// One `[[directories]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A short name (letters, digits, `-`, `_`): in the status, the audit log and the API.
    pub name: String,
    /// Attribute and filter defaults.
    pub preset: Preset,
    /// `ldap://host:389` (with `starttls = true` to encrypt) or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (refused if the server cannot).
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file of CA certificates to verify the server with (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// The DN to bind as (default: anonymous).
    pub bind_dn: Option<String>,
    /// A file holding the bind password (mode 0600).
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// Which entries are users (default: the preset's).
    pub user_filter: Option<String>,
    /// Where groups are searched (default: `base_dn`).
    pub group_base_dn: Option<String>,
    /// Which entries are groups (default: the preset's; `""` reads no group entries).
    pub group_filter: Option<String>,
    /// Attribute overrides.
    #[serde(default)]
    pub attributes: AttributeOverrides,
    /// Group name → role (default: a group's role is its own name).
    #[serde(default)]
    pub group_roles: BTreeMap<String, String>,
    /// Seconds between syncs (default 300).
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Entries per page of a search (default 500).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seconds a whole read may take (default 120).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// The largest fraction of users one sync may remove (default 0.1).
    #[serde(default = "default_fraction")]
    pub max_removed_fraction: f64,
    /// Removals always allowed in one sync, whatever the fraction (default 5).
    #[serde(default = "default_floor")]
    pub removal_floor: usize,
    /// The org its users belong to (default: the control plane's default org).
    pub org: Option<String>,
}

fn default_interval() -> u64 {
    300
}
fn default_page_size() -> u32 {
    500
}
fn default_timeout() -> u64 {
    120
}
fn default_fraction() -> f64 {
    0.1
}
fn default_floor() -> usize {
    5
}

impl SourceConfig {
    /// The attribute names: the preset's, with the overrides applied.
    pub fn attributes(&self) -> Attributes {
        let o = &self.attributes;
        let mut a = self.preset.attributes();
        let set = |slot: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        };
        set(&mut a.id, &o.id);
        set(&mut a.username, &o.username);
        set(&mut a.email, &o.email);
        set(&mut a.name, &o.name);
        set(&mut a.member_of, &o.member_of);
        set(&mut a.member, &o.member);
        set(&mut a.group_name, &o.group_name);
        if o.locked.is_some() {
            a.locked.clone_from(&o.locked);
        }
        if o.account_control.is_some() {
            a.account_control.clone_from(&o.account_control);
        }
        a
    }

    /// The user filter in effect.
    pub fn user_filter(&self) -> &str {
        self.user_filter
            .as_deref()
            .unwrap_or(self.preset.user_filter())
    }

    /// The group filter in effect (`None`: no group search).
    pub fn group_filter(&self) -> Option<&str> {
        match self.group_filter.as_deref() {
            Some("") => None,
            Some(f) => Some(f),
            None => self.preset.group_filter(),
        }
    }

    /// The role a group grants (group names compare without ASCII case, as LDAP compares
    /// them).
    pub fn role_of<'a>(&'a self, group: &'a str) -> &'a str {
        self.group_roles
            .iter()
            .find(|(g, _)| g.eq_ignore_ascii_case(group))
            .map_or(group, |(_, role)| role.as_str())
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            bail!(
                "directory name {:?}: use 1-64 letters, digits, - or _",
                self.name
            );
        }
        let ctx = || format!("directory {:?}", self.name);
        let scheme = self.url.split("://").next().unwrap_or("");
        match scheme {
            "ldap" | "ldaps" => {}
            _ => bail!(
                "{}: url {:?} must start with ldap:// or ldaps://",
                ctx(),
                self.url
            ),
        }
        if self.starttls && scheme == "ldaps" {
            bail!(
                "{}: starttls is for ldap:// URLs; ldaps:// is TLS already",
                ctx()
            );
        }
        if self.bind_dn.is_some() != self.bind_password_file.is_some() {
            bail!(
                "{}: bind_dn and bind_password_file go together (neither: anonymous bind)",
                ctx()
            );
        }
        if !(self.max_removed_fraction > 0.0 && self.max_removed_fraction <= 1.0) {
            bail!("{}: max_removed_fraction must be in (0, 1]", ctx());
        }
        if self.interval == 0 || self.page_size == 0 || self.timeout == 0 {
            bail!(
                "{}: interval, page_size and timeout must be positive",
                ctx()
            );
        }
        if let Some(org) = &self.org {
            cloudsignal_core::ids::OrgId::parse(org).with_context(|| format!("{}: org", ctx()))?;
        }
        Ok(())
    }

    /// Reads the bind password (refusing a file others may read).
    pub fn bind_password(&self) -> Result<Option<String>> {
        let Some(path) = &self.bind_password_file else {
            return Ok(None);
        };
        crate::read_secret_file(path)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("directory {:?}: {e:#}", self.name))
    }
}

/// Checks a list of sources (each valid, names unique).
pub fn validate_all(sources: &[SourceConfig]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for s in sources {
        s.validate()?;
        if !names.insert(s.name.as_str()) {
            bail!("two directories are named {:?}", s.name);
        }
    }
    Ok(())
}

/// What the config file's `[[directories]]` tables take (for its error message).
pub const CONFIG_KEYS: &str = "name, preset (openldap | active-directory), url, base_dn and optional starttls, ca_file, bind_dn, bind_password_file, user_filter, group_base_dn, group_filter, attributes, group_roles, interval, page_size, timeout, max_removed_fraction, removal_floor, org";

/// A directory user as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirUser {
    /// The stable id.
    pub id: String,
    /// The user name (`sub` of their tokens).
    pub username: String,
    /// The entry's DN.
    pub dn: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Group names, sorted, without duplicates.
    pub groups: Vec<String>,
    /// Disabled in the directory.
    pub disabled: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source_at(url: &str, extra: &str) -> SourceConfig {
        let text = format!(
            "name = \"corp\"\npreset = \"active-directory\"\nurl = \"{url}\"\nbase_dn = \"dc=corp\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    fn source(extra: &str) -> SourceConfig {
        source_at("ldap://dc1:389", extra)
    }

    #[test]
    fn configurations_that_cannot_work_are_refused_before_connecting() {
        assert!(source("").validate().is_ok());
        for (s, why) in [
            (source_at("http://dc1", ""), "ldap://"),
            (
                source_at("ldaps://dc1", "starttls = true"),
                "ldaps:// is TLS already",
            ),
            (source("bind_dn = \"cn=x\""), "go together"),
            (source("max_removed_fraction = 0.0"), "max_removed_fraction"),
            (source("max_removed_fraction = 1.5"), "max_removed_fraction"),
            (source("interval = 0"), "positive"),
            (source("org = \"acme\""), "org"),
            (
                SourceConfig {
                    name: "a b".into(),
                    ..source("")
                },
                "name",
            ),
        ] {
            let e = format!("{:#}", s.validate().unwrap_err());
            assert!(e.contains(why), "{s:?}: {e}");
        }
        let two = [source(""), source("")];
        assert!(validate_all(&two)
            .unwrap_err()
            .to_string()
            .contains("two directories"));
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let s = source("[attributes]\nusername = \"userPrincipalName\"\n");
        let a = s.attributes();
        assert_eq!(a.username, "userPrincipalName");
        assert_eq!(a.id, "objectGUID");
        assert_eq!(s.group_filter(), None, "AD reads memberOf");
        assert_eq!(s.role_of("MQTT-Ops"), "MQTT-Ops");
        let s = source("group_roles = { \"mqtt-ops\" = \"operator\" }");
        assert_eq!(s.role_of("MQTT-Ops"), "operator", "group names ignore case");
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cs-dir-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bind.secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut s = source("bind_dn = \"cn=sync\"");
        s.bind_password_file = Some(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = s.bind_password().unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(s.bind_password().unwrap().as_deref(), Some("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
