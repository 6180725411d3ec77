//! What one sync changes: the users read, compared with the users stored (sans-IO: no LDAP, no
//! store, no clock), and the guard that keeps a bad read from deprovisioning everyone.

use super::DirUser;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A stored user's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// In the directory and enabled: tokens carry their groups' roles.
    Active,
    /// Disabled in the directory: no tokens.
    Disabled,
    /// No longer in the directory: no tokens (kept as a tombstone so a backend cannot mint
    /// one for them either).
    Removed,
}

impl Standing {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Removed => "removed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }
}

/// A user as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// What was last read.
    pub user: DirUser,
    /// Their standing.
    pub standing: Standing,
}

/// Why a user's tokens are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Deleted from the directory (or moved out of the search).
    Removed,
    /// Disabled in the directory.
    Disabled,
    /// Their groups changed: clients refresh into the new ACL.
    GroupsChanged,
    /// Renamed: the old name's tokens.
    Renamed,
}

/// Counts of one sync's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// New users.
    pub added: usize,
    /// Users gone from the directory.
    pub removed: usize,
    /// Users disabled.
    pub disabled: usize,
    /// Disabled or removed users back and enabled.
    pub reenabled: usize,
    /// Users whose groups changed.
    pub groups_changed: usize,
    /// Users renamed.
    pub renamed: usize,
    /// Users whose other attributes changed (e-mail, name, DN).
    pub updated: usize,
    /// Entries skipped: a user name two entries claim (both are refused until it is resolved).
    pub conflicts: usize,
}

/// The plan: rows to write and users to revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rows to write (new or changed), by stable id.
    pub upserts: Vec<Stored>,
    /// User names whose tokens are revoked, and why.
    pub revoke: Vec<(String, Reason)>,
    /// The counts.
    pub changes: Changes,
    /// Active users after the sync.
    pub active: usize,
}

/// The limits on what one sync may remove.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// Largest fraction of the active users one sync may remove.
    pub max_fraction: f64,
    /// Removals always allowed.
    pub floor: usize,
    /// Removals an operator confirmed for this sync (`POST /v1/directory/sync`).
    pub confirmed: usize,
}

/// Why a sync was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The read found no users while some are active: a wrong filter, base or permission
    /// looks like this, and deprovisioning everyone would be the worst answer.
    #[error("the directory returned no users while {active} are active; nothing was changed (a wrong base_dn, filter or bind permission looks like this; if everyone really left, confirm the removals)")]
    Empty {
        /// Active users before.
        active: usize,
    },
    /// More removals than the guard allows.
    #[error("this sync would remove {removed} of {active} active users, more than max_removed_fraction allows ({limit}); nothing was changed (confirm the removals if they are meant)")]
    TooMany {
        /// Users it would remove.
        removed: usize,
        /// Active users before.
        active: usize,
        /// What the guard allows.
        limit: usize,
    },
}

/// Compares `read` with `stored` and plans the sync, or refuses it.
pub fn plan(stored: &[Stored], read: Vec<DirUser>, guard: Guard) -> Result<Plan, Refusal> {
    let mut p = Plan::default();
    // a user name two entries claim is refused for both (fail closed: the wrong person must
    // never get the other's groups)
    let mut claims: HashMap<&str, usize> = HashMap::new();
    for u in &read {
        *claims.entry(u.username.as_str()).or_default() += 1;
    }
    let conflicted: HashSet<String> = claims
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut seen = HashSet::new();
    let entries_read = read.len();
    let read: Vec<DirUser> = read
        .into_iter()
        .filter(|u| {
            if conflicted.contains(&u.username) {
                p.changes.conflicts += 1;
                false
            } else {
                seen.insert(u.id.clone())
            }
        })
        .collect();
    let before: HashMap<&str, &Stored> = stored.iter().map(|s| (s.user.id.as_str(), s)).collect();
    let active_before = stored
        .iter()
        .filter(|s| s.standing == Standing::Active)
        .count();
    let present: HashSet<&str> = read.iter().map(|u| u.id.as_str()).collect();

    // removals first, for the guard
    let gone: Vec<&Stored> = stored
        .iter()
        .filter(|s| s.standing != Standing::Removed && !present.contains(s.user.id.as_str()))
        .collect();
    let removing = gone
        .iter()
        .filter(|s| s.standing == Standing::Active)
        .count();
    if removing > guard.confirmed {
        if entries_read == 0 && active_before > 0 {
            return Err(Refusal::Empty {
                active: active_before,
            });
        }
        // the fraction is floored: 10% of 3 users is no removal at all
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let limit = guard
            .floor
            .max((guard.max_fraction * active_before as f64).floor() as usize);
        if removing > limit {
            return Err(Refusal::TooMany {
                removed: removing,
                active: active_before,
                limit,
            });
        }
    }
    for s in gone {
        if s.standing == Standing::Active {
            p.changes.removed += 1;
            p.revoke.push((s.user.username.clone(), Reason::Removed));
        }
        p.upserts.push(Stored {
            user: s.user.clone(),
            standing: Standing::Removed,
        });
    }
    for u in read {
        let standing = if u.disabled {
            Standing::Disabled
        } else {
            Standing::Active
        };
        if standing == Standing::Active {
            p.active += 1;
        }
        let Some(old) = before.get(u.id.as_str()) else {
            if standing == Standing::Active {
                p.changes.added += 1;
            }
            p.upserts.push(Stored { user: u, standing });
            continue;
        };
        let was_active = old.standing == Standing::Active;
        match (was_active, standing) {
            (true, Standing::Disabled) => {
                p.changes.disabled += 1;
                p.revoke.push((u.username.clone(), Reason::Disabled));
            }
            (false, Standing::Active) => p.changes.reenabled += 1,
            (true, _) if old.user.groups != u.groups => {
                p.changes.groups_changed += 1;
                p.revoke.push((u.username.clone(), Reason::GroupsChanged));
            }
            _ => {}
        }
        if old.user.username != u.username {
            p.changes.renamed += 1;
            if old.standing != Standing::Removed {
                p.revoke.push((old.user.username.clone(), Reason::Renamed));
            }
        }
        if old.standing != standing || old.user != u {
            if old.standing == standing
                && old.user.groups == u.groups
                && old.user.username == u.username
            {
                p.changes.updated += 1;
            }
            p.upserts.push(Stored { user: u, standing });
        }
    }
    // one revocation per name is enough (a rename and a group change of the same user)
    let mut names = HashSet::new();
    p.revoke.retain(|(name, _)| names.insert(name.clone()));
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str, groups: &[&str]) -> DirUser {
        DirUser {
            id: id.into(),
            username: name.into(),
            dn: format!("uid={name},ou=people,dc=example,dc=test"),
            email: Some(format!("{name}@example.test")),
            name: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            disabled: false,
        }
    }

    fn active(u: DirUser) -> Stored {
        Stored {
            user: u,
            standing: Standing::Active,
        }
    }

    const GUARD: Guard = Guard {
        max_fraction: 0.1,
        floor: 1,
        confirmed: 0,
    };

    fn people(n: usize) -> Vec<DirUser> {
        (0..n)
            .map(|i| user(&format!("id{i}"), &format!("u{i}"), &["staff"]))
            .collect()
    }

    #[test]
    fn a_first_sync_adds_everyone_and_revokes_no_one() {
        let p = plan(&[], people(3), GUARD).unwrap();
        assert_eq!(p.changes.added, 3);
        assert_eq!(p.active, 3);
        assert!(p.revoke.is_empty());
        assert_eq!(p.upserts.len(), 3);
    }

    #[test]
    fn an_unchanged_directory_writes_nothing() {
        let stored: Vec<Stored> = people(3).into_iter().map(active).collect();
        let p = plan(&stored, people(3), GUARD).unwrap();
        assert_eq!(
            p,
            Plan {
                active: 3,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn removal_disable_group_change_and_rename_revoke() {
        let stored = vec![
            active(user("1", "alice", &["staff"])),
            active(user("2", "bob", &["staff"])),
            active(user("3", "carol", &["staff"])),
            active(user("4", "dave", &["staff"])),
            active(user("5", "erin", &["staff"])),
        ];
        let mut bob = user("2", "bob", &["staff"]);
        bob.disabled = true;
        let read = vec![
            bob,
            user("3", "carol", &["ops", "staff"]),
            user("4", "david", &["staff"]),
            user("5", "erin", &["staff"]),
            user("6", "frank", &[]),
        ];
        let guard = Guard { floor: 1, ..GUARD };
        let p = plan(&stored, read, guard).unwrap();
        assert_eq!(
            p.revoke,
            vec![
                ("alice".into(), Reason::Removed),
                ("bob".into(), Reason::Disabled),
                ("carol".into(), Reason::GroupsChanged),
                ("dave".into(), Reason::Renamed),
            ]
        );
        let c = &p.changes;
        assert_eq!(
            (c.added, c.removed, c.disabled, c.groups_changed, c.renamed),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(p.active, 4, "carol, david, erin and frank");
        let standing = |id: &str| {
            p.upserts
                .iter()
                .find(|s| s.user.id == id)
                .map(|s| s.standing)
        };
        assert_eq!(standing("1"), Some(Standing::Removed));
        assert_eq!(standing("2"), Some(Standing::Disabled));
        assert_eq!(standing("5"), None, "unchanged: not rewritten");
    }

    #[test]
    fn a_returning_user_is_reenabled_and_tombstones_stay_quiet() {
        let stored = vec![
            Stored {
                user: user("1", "alice", &[]),
                standing: Standing::Removed,
            },
            Stored {
                user: user("2", "bob", &[]),
                standing: Standing::Disabled,
            },
            Stored {
                user: user("3", "carol", &[]),
                standing: Standing::Removed,
            },
        ];
        let p = plan(
            &stored,
            vec![user("1", "alice", &[]), user("2", "bob", &[])],
            GUARD,
        )
        .unwrap();
        assert_eq!(p.changes.reenabled, 2);
        assert!(p.revoke.is_empty());
        assert!(
            p.upserts.iter().all(|s| s.user.id != "3"),
            "carol stays a tombstone"
        );
    }

    #[test]
    fn an_empty_read_changes_nothing() {
        let stored: Vec<Stored> = people(3).into_iter().map(active).collect();
        let e = plan(
            &stored,
            Vec::new(),
            Guard {
                floor: 100,
                ..GUARD
            },
        )
        .unwrap_err();
        assert_eq!(e, Refusal::Empty { active: 3 });
        // …unless confirmed
        let p = plan(
            &stored,
            Vec::new(),
            Guard {
                confirmed: 3,
                ..GUARD
            },
        )
        .unwrap();
        assert_eq!(p.changes.removed, 3);
    }

    #[test]
    fn the_guard_refuses_a_mass_removal() {
        let stored: Vec<Stored> = people(100).into_iter().map(active).collect();
        let guard = Guard {
            max_fraction: 0.1,
            floor: 5,
            confirmed: 0,
        };
        // 10 of 100 is allowed, 11 is not
        assert_eq!(
            plan(&stored, people(90), guard).unwrap().changes.removed,
            10
        );
        let e = plan(&stored, people(89), guard).unwrap_err();
        assert_eq!(
            e,
            Refusal::TooMany {
                removed: 11,
                active: 100,
                limit: 10
            }
        );
        assert!(plan(
            &stored,
            people(89),
            Guard {
                confirmed: 11,
                ..guard
            }
        )
        .is_ok());
        // the floor: a small directory may lose a few users at a time
        let small: Vec<Stored> = people(6).into_iter().map(active).collect();
        assert_eq!(plan(&small, people(1), guard).unwrap().changes.removed, 5);
        assert!(plan(&small, Vec::new(), guard).is_err());
    }

    #[test]
    fn a_user_name_claimed_twice_is_refused_for_both() {
        let stored = vec![active(user("1", "alice", &["staff"]))];
        let read = vec![
            user("1", "alice", &["staff"]),
            user("9", "alice", &["admins"]),
        ];
        let p = plan(&stored, read, GUARD).unwrap();
        assert_eq!(p.changes.conflicts, 2);
        assert_eq!(p.revoke, vec![("alice".into(), Reason::Removed)]);
        assert_eq!(p.active, 0);
    }
}
