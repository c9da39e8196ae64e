//! Who a unix peer is by name: the user database's entry for its uid, for routes that use the
//! peer's own credential (by provider and owner).

/// The user name of `uid` from `/etc/passwd`, if it has one there.
#[must_use]
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_in(&passwd, uid)
}

fn name_in(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid_field = fields.nth(1)?;
        (uid_field.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_come_from_the_uid_field() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n#bad\n";
        assert_eq!(super::name_in(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(super::name_in(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::name_in(passwd, 5), None);
    }
}
