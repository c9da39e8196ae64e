//! Who may read which credential over the token API, decided per request from the peer's
//! identity: root and the service user read everything; an `[[access]]` block grants its
//! `credentials` (names or globs) to its `users` and to members of its `groups`; with
//! `api.owners_read_own`, a user reads the credentials whose owner is that user's name (checked
//! by the caller against the store). Nothing else is allowed. Pure; imports `config` and
//! `api::users`.

use super::users::{self, Identity};
use crate::config::AccessRule;

/// Why a read is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Root, or the user the daemon runs as.
    Privileged,
    /// The `[[access]]` block of that index (from 0).
    Rule(usize),
    /// The credential's owner is the peer's user name.
    Owner,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Privileged => f.write_str("root or the service user"),
            Self::Rule(i) => write!(f, "access[{i}]"),
            Self::Owner => f.write_str("owner"),
        }
    }
}

/// The rules of one configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    blocks: Vec<AccessRule>,
    owners_read_own: bool,
    service_uid: u32,
}

impl Rules {
    #[must_use]
    pub fn new(blocks: Vec<AccessRule>, owners_read_own: bool, service_uid: u32) -> Self {
        Self {
            blocks,
            owners_read_own,
            service_uid,
        }
    }

    /// Whether the owner rule is on.
    #[must_use]
    pub fn owners_read_own(&self) -> bool {
        self.owners_read_own
    }

    /// The grant by which `who` may read the credential `name`, not counting the owner rule.
    #[must_use]
    pub fn grant(&self, who: &Identity, name: &str) -> Option<Grant> {
        if who.uid == 0 || who.uid == self.service_uid {
            return Some(Grant::Privileged);
        }
        self.blocks
            .iter()
            .position(|rule| {
                rule.credentials.iter().any(|pattern| glob(pattern, name))
                    && (who.name.as_ref().is_some_and(|n| rule.users.contains(n))
                        || rule.groups.iter().any(|g| who.groups.contains(g)))
            })
            .map(Grant::Rule)
    }
}

/// Whether `name` matches `pattern`: `*` any run of characters (also none), `?` exactly one.
#[must_use]
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Warnings about rules that name users or groups this machine does not know (they grant
/// nothing until such a user or group exists).
#[must_use]
pub fn warnings(rules: &[AccessRule]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for user in rule.users.iter().filter(|u| !users::user_exists(u)) {
            out.push(format!(
                "access[{i}]: no user named {user:?} on this machine; the rule grants it nothing"
            ));
        }
        for group in rule.groups.iter().filter(|g| !users::group_exists(g)) {
            out.push(format!(
                "access[{i}]: no group named {group:?} on this machine; the rule grants it nothing"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, name: &str, groups: &[&str]) -> Identity {
        Identity {
            uid,
            name: Some(name.to_owned()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("sf-*", "sf-api"));
        assert!(glob("*", "anything"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*-prod-*", "x-prod-y"));
        assert!(!glob("sf-*", "sharepoint"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn nothing_by_default_root_and_service_read_all_rules_by_user_or_group() {
        let rules = Rules::new(
            vec![AccessRule {
                credentials: vec!["sharepoint".to_owned(), "sf-*".to_owned()],
                users: vec!["backup".to_owned()],
                groups: vec!["export".to_owned()],
            }],
            false,
            998,
        );
        assert_eq!(
            rules.grant(&who(0, "root", &[]), "x"),
            Some(Grant::Privileged)
        );
        assert_eq!(
            rules.grant(&who(998, "tokenwarden", &[]), "x"),
            Some(Grant::Privileged)
        );
        assert_eq!(
            rules.grant(&who(1000, "backup", &[]), "sharepoint"),
            Some(Grant::Rule(0))
        );
        assert_eq!(
            rules.grant(&who(1001, "eve", &["export"]), "sf-api"),
            Some(Grant::Rule(0))
        );
        assert_eq!(rules.grant(&who(1001, "eve", &["export"]), "other"), None);
        assert_eq!(
            rules.grant(&who(1002, "mallory", &["users"]), "sharepoint"),
            None
        );
        let none = Rules::new(vec![], true, 998);
        assert_eq!(none.grant(&who(1000, "alice", &[]), "alice-token"), None);
    }
}
