//! Reading a file that holds a secret (a client secret, a private key, an encryption key), checked
//! the way ssh checks a private key: a file anyone may write to is refused, one that group or
//! others may read is read with a warning. Imports nothing from the crate.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Permission bits that let someone other than the owner read or write the file.
const OTHERS_MAY_ACCESS: u32 = 0o077;
/// The world-writable bit: anyone could swap the secret for their own.
const WORLD_WRITABLE: u32 = 0o002;

/// A secret file's contents, with its trailing line ending removed.
pub struct SecretFile {
    /// The contents without the trailing newline (`\n` or `\r\n`) editors and `echo` add.
    pub text: String,
    /// The file's permission bits (`0o600`).
    pub mode: u32,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile([redacted], mode {:04o})", self.mode)
    }
}

impl SecretFile {
    /// Whether group or others may read or write the file (it is still used).
    #[must_use]
    pub fn too_open(&self) -> bool {
        self.mode & OTHERS_MAY_ACCESS != 0
    }

    /// A warning line about a file that is [`too_open`](Self::too_open), naming `what` and `path`.
    #[must_use]
    pub fn warning(&self, what: &str, path: &Path) -> Option<String> {
        self.too_open().then(|| {
            format!(
                "{what} {} is accessible to group or others (mode {:04o}); chmod 0600 it (0400 or 0640 for a service group)",
                path.display(),
                self.mode
            )
        })
    }
}

/// Why a secret file cannot be used. Messages never carry its contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read it: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("it is empty")]
    Empty,
    #[error(
        "anyone may write to it (mode {mode:04o}), so anyone could replace the secret; chmod o-w it (0600)"
    )]
    WorldWritable { mode: u32 },
}

/// Reads the secret file at `path`: refused when it is empty or world-writable. The mode is taken
/// from the opened file (following a symlink, as systemd's credentials may be), not from the path,
/// so the checked file is the one read.
pub fn read(path: &Path) -> Result<SecretFile, SecretFileError> {
    let mut file = std::fs::File::open(path).map_err(SecretFileError::Unreadable)?;
    let mode = file
        .metadata()
        .map_err(SecretFileError::Unreadable)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & WORLD_WRITABLE != 0 {
        return Err(SecretFileError::WorldWritable { mode });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(SecretFileError::Unreadable)?;
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(SecretFileError::Empty);
    }
    Ok(SecretFile {
        text: trimmed.to_owned(),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(mode: u32, text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn a_private_file_is_read_without_its_newline_or_a_warning() {
        for mode in [0o600, 0o400] {
            let file = file_with(mode, "s3cr3t\r\n");
            let secret = read(file.path()).unwrap();
            assert_eq!((secret.text.as_str(), secret.mode), ("s3cr3t", mode));
            assert!(secret.warning("client_secret_file", file.path()).is_none());
        }
    }

    #[test]
    fn a_readable_file_warns_with_its_mode() {
        for (mode, shown) in [(0o644, "0644"), (0o640, "0640"), (0o620, "0620")] {
            let file = file_with(mode, "s3cr3t");
            let secret = read(file.path()).unwrap();
            let warning = secret.warning("client_secret_file", file.path()).unwrap();
            assert!(
                warning.contains(shown) && warning.contains(&file.path().display().to_string()),
                "{warning}"
            );
            assert!(!warning.contains("s3cr3t"));
        }
    }

    #[test]
    fn a_world_writable_or_empty_file_is_refused() {
        let file = file_with(0o666, "s3cr3t");
        let e = read(file.path()).unwrap_err().to_string();
        assert!(e.contains("mode 0666") && !e.contains("s3cr3t"), "{e}");
        let empty = file_with(0o600, "\n");
        assert!(matches!(read(empty.path()), Err(SecretFileError::Empty)));
    }
}
