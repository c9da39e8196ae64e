//! The local user database as the C library's files hold it (`/etc/passwd`, `/etc/group`): a
//! peer's user name and groups (primary and supplementary), and whether a name in a rule exists.
//! Read on each question, so a change to the files counts at once; no NSS modules (LDAP, sssd)
//! are asked. Imports nothing from the crate.

use std::collections::BTreeSet;
use std::path::Path;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Who a peer is, by the user database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    /// The user's name; `None` when the uid has no entry.
    pub name: Option<String>,
    /// Names of the peer's groups: its gid's, its user's primary group, and every group that
    /// lists the user as a member.
    pub groups: BTreeSet<String>,
}

/// A passwd line: name, uid, gid.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((name, uid, gid))
    })
}

/// A group line: name, gid, members.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some((name, gid, members))
    })
}

/// The identity of `uid` (whose effective gid is `gid`) from the two files' texts.
#[must_use]
pub fn identify_in(passwd: &str, group: &str, uid: u32, gid: u32) -> Identity {
    let user = passwd_entries(passwd).find(|(_, u, _)| *u == uid);
    let name = user.map(|(n, _, _)| n.to_owned());
    let primary = user.map(|(_, _, g)| g);
    let groups = group_entries(group)
        .filter(|(_, g, members)| {
            *g == gid
                || Some(*g) == primary
                || name.as_deref().is_some_and(|n| members.contains(&n))
        })
        .map(|(n, _, _)| n.to_owned())
        .collect();
    Identity { uid, name, groups }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(path)).unwrap_or_default()
}

/// The identity of a peer, from this machine's files.
#[must_use]
pub fn identify(uid: u32, gid: u32) -> Identity {
    identify_in(&read(PASSWD), &read(GROUP), uid, gid)
}

/// Whether a user of that name exists in this machine's files.
#[must_use]
pub fn user_exists(name: &str) -> bool {
    passwd_entries(&read(PASSWD)).any(|(n, _, _)| n == name)
}

/// The gid of the group of that name in this machine's files.
#[must_use]
pub fn group_id(name: &str) -> Option<u32> {
    group_entries(&read(GROUP))
        .find(|(n, _, _)| *n == name)
        .map(|(_, gid, _)| gid)
}

/// Whether a group of that name exists in this machine's files.
#[must_use]
pub fn group_exists(name: &str) -> bool {
    group_entries(&read(GROUP)).any(|(n, _, _)| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100::/home/bob:/bin/sh\nbroken line\n";
    const GROUP: &str =
        "root:x:0:\nalice:x:1000:\nusers:x:100:\nexport:x:2000:bob, alice\nother:x:2001:carol\n";

    #[test]
    fn primary_effective_and_supplementary_groups() {
        let alice = identify_in(PASSWD, GROUP, 1000, 1000);
        assert_eq!(alice.name.as_deref(), Some("alice"));
        assert_eq!(
            alice.groups.iter().map(String::as_str).collect::<Vec<_>>(),
            ["alice", "export"]
        );
        let bob = identify_in(PASSWD, GROUP, 1001, 2001);
        assert_eq!(
            bob.groups.iter().map(String::as_str).collect::<Vec<_>>(),
            ["export", "other", "users"]
        );
        let nobody = identify_in(PASSWD, GROUP, 4242, 4242);
        assert_eq!(nobody.name, None);
        assert!(nobody.groups.is_empty());
    }
}
