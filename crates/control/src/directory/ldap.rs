//! Reading a directory with `ldap3`: bind, paged subtree searches for users and groups, and
//! the entries mapped to [`DirUser`]s by the source's attribute names.

use super::{Attributes, DirUser, SourceConfig};
use anyhow::{bail, Context, Result};
use cloudsignal_core::ids::UserId;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// AD's `userAccountControl` ACCOUNTDISABLE bit.
pub const ACCOUNT_DISABLE: u32 = 0x2;

/// What one read found.
#[derive(Debug, Default)]
pub struct Read {
    /// The users.
    pub users: Vec<DirUser>,
    /// Group entries read.
    pub groups: usize,
    /// Entries skipped, with why (no id, a user name tokens cannot carry…).
    pub skipped: Vec<String>,
}

/// Reads every user of `source` (binding with `password`), within its timeout.
pub async fn read(source: &SourceConfig, password: Option<&str>) -> Result<Read> {
    let limit = Duration::from_secs(source.timeout);
    tokio::time::timeout(limit, read_inner(source, password))
        .await
        .map_err(|_| anyhow::anyhow!("the read took longer than {}s (timeout)", source.timeout))?
}

fn settings(source: &SourceConfig) -> Result<LdapConnSettings> {
    let mut s = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(10))
        .set_starttls(source.starttls);
    if let Some(ca) = &source.ca_file {
        let config = crate::tls_client::client_config(Some(ca))?;
        s = s.set_config(Arc::new(config));
    }
    Ok(s)
}

async fn read_inner(source: &SourceConfig, password: Option<&str>) -> Result<Read> {
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings(source)?, &source.url)
        .await
        .with_context(|| format!("connecting to {}", source.url))?;
    ldap3::drive!(conn);
    // no bind DN: an anonymous read
    if let (Some(dn), Some(pw)) = (&source.bind_dn, password) {
        ldap.simple_bind(dn, pw)
            .await
            .context("binding")?
            .success()
            .with_context(|| format!("binding as {dn}"))?;
    }
    let a = source.attributes();
    let mut attrs: Vec<&str> = vec![&a.id, &a.username, &a.email, &a.name, &a.member_of];
    attrs.extend(a.locked.as_deref());
    attrs.extend(a.account_control.as_deref());
    let entries = search(
        &mut ldap,
        &source.base_dn,
        source.user_filter(),
        &attrs,
        source.page_size,
    )
    .await
    .context("searching users")?;
    // group DN → name, and member DN → group names, from the group entries
    let mut group_names: HashMap<String, String> = HashMap::new();
    let mut members: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut groups = 0;
    if let Some(filter) = source.group_filter() {
        let base = source.group_base_dn.as_deref().unwrap_or(&source.base_dn);
        let found = search(
            &mut ldap,
            base,
            filter,
            &[&a.group_name, &a.member],
            source.page_size,
        )
        .await
        .context("searching groups")?;
        groups = found.len();
        for g in found {
            let Some(name) = first(&g, &a.group_name) else {
                continue;
            };
            for m in values(&g, &a.member) {
                members
                    .entry(dn_key(m))
                    .or_default()
                    .insert(name.to_owned());
            }
            group_names.insert(dn_key(&g.dn), name.to_owned());
        }
    }
    let _ = ldap.unbind().await;
    let mut out = Read {
        groups,
        ..Read::default()
    };
    for e in entries {
        match to_user(&e, &a, &group_names, &members) {
            Ok(u) => out.users.push(u),
            Err(why) => out.skipped.push(format!("{}: {why}", e.dn)),
        }
    }
    Ok(out)
}

/// A paged subtree search (the server's size limit applies per page, so a directory larger
/// than it is read whole).
async fn search(
    ldap: &mut ldap3::Ldap,
    base: &str,
    filter: &str,
    attrs: &[&str],
    page: u32,
) -> Result<Vec<SearchEntry>> {
    let adapters: Vec<Box<dyn Adapter<'_, _, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(i32::try_from(page).unwrap_or(500))),
    ];
    let mut stream = ldap
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.to_vec())
        .await?;
    let mut out = Vec::new();
    while let Some(entry) = stream.next().await? {
        out.push(SearchEntry::construct(entry));
    }
    stream
        .finish()
        .await
        .success()
        .with_context(|| format!("search under {base} with {filter}"))?;
    Ok(out)
}

/// DNs compare case-insensitively, without spaces after commas.
fn dn_key(dn: &str) -> String {
    dn.split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase()
}

fn values<'a>(e: &'a SearchEntry, attr: &str) -> impl Iterator<Item = &'a str> + 'a {
    let attr = attr.to_owned();
    e.attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(&attr))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
}

fn first<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    values(e, attr).next().filter(|v| !v.is_empty())
}

/// An attribute's first value as bytes, text or binary (`objectGUID` is binary, but a GUID
/// whose bytes happen to be UTF-8 arrives as text).
fn first_bytes(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    if let Some(v) = e
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
    {
        return Some(v.clone());
    }
    first(e, attr).map(|v| v.as_bytes().to_vec())
}

/// AD's `objectGUID` (16 bytes, the first three fields little-endian) in its usual text form.
pub fn guid_text(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The first RDN's value of a DN (`CN=MQTT Ops,OU=Groups,…` → `MQTT Ops`).
pub fn rdn_value(dn: &str) -> Option<&str> {
    let first = dn.split(',').next()?;
    let (_, v) = first.split_once('=')?;
    let v = v.trim();
    (!v.is_empty()).then_some(v)
}

/// Maps one user entry.
fn to_user(
    e: &SearchEntry,
    a: &Attributes,
    group_names: &HashMap<String, String>,
    members: &HashMap<String, BTreeSet<String>>,
) -> Result<DirUser> {
    let id = if a.id.eq_ignore_ascii_case("objectGUID") {
        let raw = first_bytes(e, &a.id).with_context(|| format!("no {}", a.id))?;
        guid_text(&raw).with_context(|| format!("{} is not 16 bytes", a.id))?
    } else {
        first(e, &a.id)
            .with_context(|| format!("no {} (is it readable by the bind DN?)", a.id))?
            .to_owned()
    };
    let username = first(e, &a.username).with_context(|| format!("no {}", a.username))?;
    if UserId::parse(username).is_err() {
        bail!(
            "user name {username:?} cannot be a token subject (1-128 letters, digits, . - _ : | ~)"
        );
    }
    let mut groups: BTreeSet<String> = members.get(&dn_key(&e.dn)).cloned().unwrap_or_default();
    for dn in values(e, &a.member_of) {
        let name = group_names
            .get(&dn_key(dn))
            .map(String::as_str)
            .or_else(|| rdn_value(dn));
        groups.extend(name.map(str::to_owned));
    }
    let locked = a.locked.as_deref().is_some_and(|l| first(e, l).is_some());
    let uac_disabled = a
        .account_control
        .as_deref()
        .and_then(|attr| first(e, attr))
        .and_then(|v| v.trim().parse::<i64>().ok())
        // AD returns the flags as a signed 32-bit integer
        .is_some_and(|v| (v as u32) & ACCOUNT_DISABLE != 0);
    Ok(DirUser {
        id,
        username: username.to_owned(),
        dn: e.dn.clone(),
        email: first(e, &a.email).map(str::to_owned),
        name: first(e, &a.name).map(str::to_owned),
        groups: groups.into_iter().collect(),
        disabled: locked || uac_disabled,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::directory::Preset;

    fn entry(dn: &str, attrs: &[(&str, &[&str])], bin: &[(&str, Vec<u8>)]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            bin_attrs: bin
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![v.clone()]))
                .collect(),
        }
    }

    #[test]
    fn guid_bytes_read_as_active_directory_writes_them() {
        // the GUID {01234567-89ab-cdef-0123-456789abcdef} as AD stores it
        let raw = [
            0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            guid_text(&raw).unwrap(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(guid_text(&raw[..15]), None);
    }

    #[test]
    fn an_active_directory_user_with_the_disable_bit() {
        let a = Preset::ActiveDirectory.attributes();
        let guid = vec![0xff; 16];
        let e = entry(
            "CN=Alice Doe,OU=Staff,DC=corp,DC=test",
            &[
                ("sAMAccountName", &["alice"]),
                ("userAccountControl", &["514"]), // NORMAL_ACCOUNT | ACCOUNTDISABLE
                (
                    "memberOf",
                    &[
                        "CN=MQTT Ops,OU=Groups,DC=corp,DC=test",
                        "CN=Staff,OU=Groups,DC=corp,DC=test",
                    ],
                ),
                ("mail", &["alice@corp.test"]),
            ],
            &[("objectGUID", guid)],
        );
        let u = to_user(&e, &a, &HashMap::new(), &HashMap::new()).unwrap();
        assert_eq!(u.id, "ffffffff-ffff-ffff-ffff-ffffffffffff");
        assert_eq!(u.username, "alice");
        assert!(u.disabled);
        assert_eq!(u.groups, vec!["MQTT Ops", "Staff"]);
        let mut enabled = e.clone();
        enabled
            .attrs
            .insert("userAccountControl".into(), vec!["512".into()]);
        assert!(
            !to_user(&enabled, &a, &HashMap::new(), &HashMap::new())
                .unwrap()
                .disabled
        );
        // a negative value (the high bit set) still reads its bits
        enabled
            .attrs
            .insert("userAccountControl".into(), vec!["-2147483646".into()]);
        assert!(
            to_user(&enabled, &a, &HashMap::new(), &HashMap::new())
                .unwrap()
                .disabled
        );
    }

    #[test]
    fn an_openldap_user_gets_groups_from_group_entries() {
        let a = Preset::Openldap.attributes();
        let e = entry(
            "uid=bob,ou=people,dc=example,dc=test",
            &[("uid", &["bob"]), ("entryUUID", &["5a1b…"])],
            &[],
        );
        let mut members = HashMap::new();
        members.insert(
            dn_key("uid=bob, ou=people,dc=EXAMPLE,dc=test"),
            BTreeSet::from(["sensors".to_owned()]),
        );
        let u = to_user(&e, &a, &HashMap::new(), &members).unwrap();
        assert_eq!(u.groups, vec!["sensors"]);
        assert!(!u.disabled);
        let mut locked = e.clone();
        locked
            .attrs
            .insert("pwdAccountLockedTime".into(), vec!["000001010000Z".into()]);
        assert!(
            to_user(&locked, &a, &HashMap::new(), &members)
                .unwrap()
                .disabled
        );
    }

    #[test]
    fn entries_tokens_cannot_carry_are_skipped_with_a_reason() {
        let a = Preset::Openldap.attributes();
        let no_id = entry("uid=x,dc=t", &[("uid", &["x"])], &[]);
        assert!(to_user(&no_id, &a, &HashMap::new(), &HashMap::new())
            .unwrap_err()
            .to_string()
            .contains("entryUUID"));
        let bad = entry(
            "uid=x,dc=t",
            &[("uid", &["x y@z"]), ("entryUUID", &["1"])],
            &[],
        );
        assert!(to_user(&bad, &a, &HashMap::new(), &HashMap::new()).is_err());
    }
}
