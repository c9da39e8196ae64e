//! No core dumps of a process full of secrets: at start, this process makes itself non-dumpable
//! (`PR_SET_DUMPABLE` 0 through rustix's safe wrapper). The kernel then writes no core file of it
//! (unless `fs.suid_dumpable` is 2, and then readable by root only), and other processes of the
//! same user can neither `ptrace` it nor read its memory through `/proc`. A command that `exec`
//! runs is dumpable again (execve resets the flag), and the core size limit is left alone so that
//! it inherits the one it was given; the systemd units set `LimitCORE=0` as well. Imports nothing
//! from the crate.

/// Makes this process non-dumpable. Fails only where the kernel lacks `prctl` (not Linux).
pub fn forbid() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_no_longer_dumpable() {
        super::forbid().unwrap();
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
