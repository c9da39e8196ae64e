//! Who holds a lease: this process's identity as written into `lease_owner` (host name, machine,
//! boot, pid namespace, pid, process start time), and whether a holder recorded on this host is
//! still running. Reads /proc; imports nothing from the crate.
//!
//! A claim is normally resolved when its lease runs out, because a process cannot tell a dead
//! holder on another host from a slow one. On its own host it can: a holder whose boot, pid
//! namespace and pid match ours but whose process is gone (or is another process that reused the
//! pid) is dead, and its claims can be taken over at once; one whose process still runs (stopped,
//! say) keeps a claim whose request it sent even past its lease, since taking it over would present
//! its refresh token twice.

use std::fmt;

/// Field separator of the stored form; host names never contain it.
const SEP: char = '/';
/// Hex digits kept of the machine and boot ids: enough to tell machines apart, short to read.
const ID_DIGITS: usize = 12;

/// A lease holder: one process on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The host name, for people; not used to decide anything.
    pub host: String,
    /// /etc/machine-id (shortened), empty when unknown.
    machine: String,
    /// The kernel's boot id (shortened), empty when unknown: it differs on every host and boot.
    boot: String,
    /// The pid namespace's inode: pids are comparable only inside one namespace.
    pidns: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot: tells a reused pid from its first owner.
    start: u64,
    /// Tells two holders in one process apart.
    nonce: String,
}

/// Whether a holder is still running, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Certainly not running: its claims may be taken over now.
    Gone,
    /// On another host, or unknowable here: its lease decides.
    Unknown,
}

impl Holder {
    /// This process, read from /proc; fields that cannot be read stay empty, which makes this
    /// holder never judge others (or be judged) as on the same host.
    #[must_use]
    pub fn this_process() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let pid = std::process::id();
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| {
                p.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            host: clean_host(read("/proc/sys/kernel/hostname").trim()),
            machine: short_id(&read("/etc/machine-id")),
            boot: short_id(&read("/proc/sys/kernel/random/boot_id")),
            pidns,
            pid,
            start: start_ticks(&read("/proc/self/stat")).unwrap_or(0),
            nonce: hex::encode(rand::random::<[u8; 4]>()),
        }
    }

    /// Reads the stored form; `None` for anything else (an older version's `pid-nonce` holders,
    /// which are then judged by their lease alone).
    #[must_use]
    pub fn parse(stored: &str) -> Option<Self> {
        let mut parts = stored.split(SEP);
        let mut next = || parts.next().map(str::to_owned);
        let holder = Self {
            host: next()?,
            machine: next()?,
            boot: next()?,
            pidns: next()?,
            pid: next()?.parse().ok()?,
            start: next()?.parse().ok()?,
            nonce: next()?,
        };
        parts.next().is_none().then_some(holder)
    }

    /// The part of the stored form shared by every holder this process can judge: stored holders
    /// that start with it are on this host, in this boot and pid namespace. `None` when this
    /// process cannot judge anyone.
    #[must_use]
    pub fn host_prefix(&self) -> Option<String> {
        (!self.boot.is_empty() && !self.pidns.is_empty() && self.start != 0).then(|| {
            format!(
                "{host}{SEP}{m}{SEP}{b}{SEP}{ns}{SEP}",
                host = self.host,
                m = self.machine,
                b = self.boot,
                ns = self.pidns
            )
        })
    }

    /// Whether `other` is still running, judged from this process.
    #[must_use]
    pub fn judge(&self, other: &Holder) -> Liveness {
        if self.boot.is_empty() || other.boot.is_empty() {
            return Liveness::Unknown;
        }
        if self.boot != other.boot {
            // The same machine booted since: every process of the old boot is gone.
            let same_machine = !self.machine.is_empty() && self.machine == other.machine;
            return if same_machine {
                Liveness::Gone
            } else {
                Liveness::Unknown
            };
        }
        if self.pidns.is_empty() || self.pidns != other.pidns {
            return Liveness::Unknown;
        }
        if other.pid == self.pid && other.start == self.start {
            return Liveness::Alive;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", other.pid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Gone,
            Err(_) => Liveness::Unknown,
            Ok(line) => match start_ticks(&line) {
                Some(ticks) if ticks == other.start => Liveness::Alive,
                Some(_) => Liveness::Gone,
                None => Liveness::Unknown,
            },
        }
    }

    /// Whether `other` is this very process (any of its holders).
    #[must_use]
    pub fn same_process(&self, other: &Holder) -> bool {
        !self.boot.is_empty()
            && self.boot == other.boot
            && self.pidns == other.pidns
            && self.pid == other.pid
            && self.start == other.start
    }

    /// How `status` names it: `host pid 1234`.
    #[must_use]
    pub fn describe(stored: &str) -> String {
        match Self::parse(stored) {
            Some(h) => format!("{} pid {}", h.host, h.pid),
            None => format!("process {stored}"),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{host}{SEP}{m}{SEP}{b}{SEP}{ns}{SEP}{pid}{SEP}{start}{SEP}{nonce}",
            host = self.host,
            m = self.machine,
            b = self.boot,
            ns = self.pidns,
            pid = self.pid,
            start = self.start,
            nonce = self.nonce
        )
    }
}

/// Where a credential's refresh attempt stands, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptState {
    /// No attempt is under way.
    Idle,
    /// A live (or, on another host, presumed live) process holds the claim until `until`.
    InFlight {
        holder: String,
        since: Option<i64>,
        until: i64,
    },
    /// A process alive on this host sent its request and was stopped (SIGSTOP, a paused VM or
    /// container) past its lease `lease_ended`: nobody takes the credential over, since that would
    /// present its refresh token twice; the process stores the answer when it runs again.
    HeldPastLease {
        holder: String,
        since: Option<i64>,
        lease_ended: i64,
    },
    /// The attempt's process died (or its lease ran out) before it finished; the next sweep or
    /// `refresh` resolves it `at` the latest (now, for a holder known to be gone): it sends the
    /// stored refresh token if it was never sent or the provider accepts a repeat, and flags the
    /// credential otherwise.
    Interrupted {
        holder: Option<String>,
        since: Option<i64>,
        at: i64,
    },
}

/// Judges a credential's lease and pending journal entry (started `pending_since`, its request
/// sent or not: `pending_sent`) from this process at `now`.
#[must_use]
pub fn attempt_state(
    me: &Holder,
    lease_owner: Option<&str>,
    lease_expires_at: Option<i64>,
    pending_since: Option<i64>,
    pending_sent: bool,
    now: i64,
) -> AttemptState {
    match (lease_owner, lease_expires_at) {
        (Some(owner), Some(until)) if until > now => {
            let gone = Holder::parse(owner).is_some_and(|h| me.judge(&h) == Liveness::Gone);
            if gone {
                AttemptState::Interrupted {
                    holder: Some(Holder::describe(owner)),
                    since: pending_since,
                    at: now,
                }
            } else {
                AttemptState::InFlight {
                    holder: Holder::describe(owner),
                    since: pending_since,
                    until,
                }
            }
        }
        (Some(owner), Some(ended)) if pending_since.is_some() && pending_sent => {
            let alive = Holder::parse(owner).is_some_and(|h| me.judge(&h) == Liveness::Alive);
            if alive {
                AttemptState::HeldPastLease {
                    holder: Holder::describe(owner),
                    since: pending_since,
                    lease_ended: ended,
                }
            } else {
                AttemptState::Interrupted {
                    holder: Some(Holder::describe(owner)),
                    since: pending_since,
                    at: now,
                }
            }
        }
        _ => match pending_since {
            Some(since) => AttemptState::Interrupted {
                holder: lease_owner.map(Holder::describe),
                since: Some(since),
                at: now,
            },
            None => AttemptState::Idle,
        },
    }
}

/// A host name as it may stand in the stored form: letters, digits, `.` and `-` only.
fn clean_host(raw: &str) -> String {
    let host: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .take(64)
        .collect();
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    }
}

/// The first hex digits of an id such as a machine id or boot id (dashes dropped).
fn short_id(raw: &str) -> String {
    raw.chars()
        .filter(char::is_ascii_hexdigit)
        .take(ID_DIGITS)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Field 22 (`starttime`) of a /proc/PID/stat line. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(boot: &str, pidns: &str, pid: u32, start: u64) -> Holder {
        Holder {
            host: "web1".to_owned(),
            machine: "aa".to_owned(),
            boot: boot.to_owned(),
            pidns: pidns.to_owned(),
            pid,
            start,
            nonce: "n".to_owned(),
        }
    }

    #[test]
    fn stored_form_round_trips_and_old_forms_are_not_holders() {
        let me = Holder::this_process();
        assert_eq!(Holder::parse(&me.to_string()), Some(me.clone()));
        assert!(me.to_string().starts_with(&me.host_prefix().unwrap()));
        assert_eq!(Holder::parse("1234-abcd"), None);
        assert_eq!(Holder::parse("a/b/c/d/notapid/1/n"), None);
        assert_eq!(Holder::parse("a/b/c/d/1/1/n/extra"), None);
        assert_eq!(
            Holder::describe(&me.to_string()),
            format!("{} pid {}", me.host, me.pid)
        );
    }

    #[test]
    fn start_time_is_read_after_the_command_name() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_gone() {
        let me = Holder::this_process();
        assert_eq!(me.judge(&me), Liveness::Alive);
        let mut twin = me.clone();
        twin.nonce = "other".to_owned();
        assert_eq!(
            me.judge(&twin),
            Liveness::Alive,
            "another holder in this process"
        );
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let mut gone = me.clone();
        gone.pid = 4_194_304 + 7;
        assert_eq!(me.judge(&gone), Liveness::Gone);
        // Our own pid with another start time: the pid was reused, its first owner is gone.
        let mut reused = me.clone();
        reused.start += 1;
        assert_eq!(me.judge(&reused), Liveness::Gone);
    }

    #[test]
    fn attempt_states() {
        let me = Holder::this_process();
        let mut gone = me.clone();
        gone.pid = 4_194_304 + 7;
        let (me_s, gone_s) = (me.to_string(), gone.to_string());
        assert_eq!(
            attempt_state(&me, None, None, None, false, 100),
            AttemptState::Idle
        );
        assert_eq!(
            attempt_state(&me, Some(&me_s), Some(200), Some(90), true, 100),
            AttemptState::InFlight {
                holder: Holder::describe(&me_s),
                since: Some(90),
                until: 200
            }
        );
        assert_eq!(
            attempt_state(&me, Some("1234-abcd"), Some(200), Some(90), true, 100),
            AttemptState::InFlight {
                holder: "process 1234-abcd".to_owned(),
                since: Some(90),
                until: 200
            },
            "an unparsable holder keeps its lease"
        );
        assert_eq!(
            attempt_state(&me, Some(&gone_s), Some(200), Some(90), true, 100),
            AttemptState::Interrupted {
                holder: Some(Holder::describe(&gone_s)),
                since: Some(90),
                at: 100
            }
        );
        assert_eq!(
            attempt_state(&me, Some(&me_s), Some(50), Some(40), false, 100),
            AttemptState::Interrupted {
                holder: Some(Holder::describe(&me_s)),
                since: Some(40),
                at: 100
            },
            "a lease that ran out with its attempt pending, never sent"
        );
        assert_eq!(
            attempt_state(&me, Some(&me_s), Some(50), Some(40), true, 100),
            AttemptState::HeldPastLease {
                holder: Holder::describe(&me_s),
                since: Some(40),
                lease_ended: 50
            },
            "a live holder's request is out past its lease"
        );
        assert_eq!(
            attempt_state(&me, Some(&gone_s), Some(50), Some(40), true, 100),
            AttemptState::Interrupted {
                holder: Some(Holder::describe(&gone_s)),
                since: Some(40),
                at: 100
            },
            "a gone holder's sent attempt is interrupted"
        );
        assert_eq!(
            attempt_state(&me, Some("1234-abcd"), Some(50), Some(40), true, 100),
            AttemptState::Interrupted {
                holder: Some("process 1234-abcd".to_owned()),
                since: Some(40),
                at: 100
            },
            "a holder that cannot be judged is not presumed alive past its lease"
        );
    }

    #[test]
    fn other_hosts_and_namespaces_are_left_to_the_lease() {
        let me = holder("b1", "ns1", 10, 5);
        assert_eq!(
            me.judge(&holder("b2", "ns1", 4_194_311, 5)),
            Liveness::Gone,
            "rebooted"
        );
        let mut elsewhere = holder("b2", "ns1", 4_194_311, 5);
        elsewhere.machine = "bb".to_owned();
        assert_eq!(me.judge(&elsewhere), Liveness::Unknown);
        assert_eq!(
            me.judge(&holder("b1", "ns2", 4_194_311, 5)),
            Liveness::Unknown
        );
        assert_eq!(holder("", "ns1", 1, 1).judge(&me), Liveness::Unknown);
        assert_eq!(holder("", "ns1", 1, 1).host_prefix(), None);
    }
}
