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
        warning(self.mode, what, path)
    }
}

/// A secret file's bytes as they are (an encryption key may be 32 raw bytes), wiped when dropped.
pub struct RawSecretFile {
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
    /// The file's permission bits (`0o600`).
    pub mode: u32,
}

impl std::fmt::Debug for RawSecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawSecretFile([redacted], mode {:04o})", self.mode)
    }
}

impl RawSecretFile {
    /// As [`SecretFile::warning`].
    #[must_use]
    pub fn warning(&self, what: &str, path: &Path) -> Option<String> {
        warning(self.mode, what, path)
    }
}

fn warning(mode: u32, what: &str, path: &Path) -> Option<String> {
    (mode & OTHERS_MAY_ACCESS != 0).then(|| {
        format!(
            "{what} {} is accessible to group or others (mode {mode:04o}); chmod 0600 it (0400 or 0640 for a service group)",
            path.display(),
        )
    })
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
    let raw = read_bytes(path)?;
    let text = std::str::from_utf8(&raw.bytes).map_err(|_| {
        SecretFileError::Unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not text (UTF-8)",
        ))
    })?;
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(SecretFileError::Empty);
    }
    Ok(SecretFile {
        text: trimmed.to_owned(),
        mode: raw.mode,
    })
}

/// As [`read`], the bytes as they are: nothing trimmed, no encoding demanded (only emptiness is
/// refused).
pub fn read_bytes(path: &Path) -> Result<RawSecretFile, SecretFileError> {
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
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(SecretFileError::Unreadable)?;
    if bytes.is_empty() {
        return Err(SecretFileError::Empty);
    }
    Ok(RawSecretFile { bytes, mode })
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

    #[test]
    fn raw_bytes_are_read_as_they_are() {
        let file = file_with(0o620, "");
        std::fs::write(file.path(), [0xff, b'\n', 0, 7]).unwrap();
        let raw = read_bytes(file.path()).unwrap();
        assert_eq!(raw.bytes.as_slice(), &[0xff, b'\n', 0, 7]);
        assert!(
            raw.warning("key_file", file.path())
                .unwrap()
                .contains("0620")
        );
        let e = read(file.path()).unwrap_err().to_string();
        assert!(e.contains("not text"), "{e}");
    }
}
