//! Sealing of stored tokens, above the SQL so that every backend shares it: XChaCha20-Poly1305
//! (RustCrypto `chacha20poly1305`) with a random 192-bit nonce per write, the credential's row id,
//! name and column bound in as associated data, and the sealing key's short id in the stored text:
//! `tw1:<key id>:<base64url(nonce || ciphertext || tag)>`. Text without the `tw1:` prefix is
//! plaintext (a database from before sealing, or one without a key). Pure: no SQL, no files.
//! Imports `domain` only.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::domain::{Secret, Unreadable};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
/// What every sealed value starts with; the version of this format.
pub const PREFIX: &str = "tw1:";
/// Hex digits of a key id.
pub const KEY_ID_LEN: usize = 8;
/// `tw1:` + key id + `:`: the part of a stored value that names its key (what the
/// `oauth_credential_*_key` indexes hold).
pub const HEAD_LEN: usize = PREFIX.len() + KEY_ID_LEN + 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Why key material was refused. Never carries the material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "is not a key: a key is 32 bytes as base64 (44 characters) or hex (64 digits), or in a file also the 32 raw bytes"
    )]
    Encoding,
    #[error(
        "holds {0} bytes; a key is exactly 32, as base64 or hex, or in a file also raw (head -c 32 /dev/urandom)"
    )]
    Length(usize),
    #[error("key {0} is listed twice")]
    Duplicate(String),
}

/// The column a value is stored in: part of what is bound to its ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    RefreshToken,
    AccessToken,
}

impl Column {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh_token",
            Self::AccessToken => "access_token",
        }
    }
}

/// Where a value lives: its credential (immutable row id and name) and column. A ciphertext opens
/// only where it was sealed.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub id: i64,
    pub name: &'a str,
    pub column: Column,
}

impl Place<'_> {
    /// The associated data: id first and column last, so the name between them is unambiguous.
    fn aad(&self) -> String {
        format!(
            "tokenwarden/v1/{}/{}/{}",
            self.id,
            self.name,
            self.column.as_str()
        )
    }
}

/// One 32-byte key and its id. `Debug` shows the id only.
#[derive(Clone)]
pub struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    /// A key from its 32 bytes. Its id is the first 8 hex digits of SHA-256 over a label and the
    /// key: it names the key without revealing anything about it.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"tokenwarden key id v1\0");
        digest.update(bytes);
        let id = hex::encode(&digest.finalize()[..KEY_ID_LEN / 2]);
        Self {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// A key file's contents: exactly [`KEY_LEN`] bytes are the key itself (`head -c 32
    /// /dev/urandom`; 32 bytes cannot be the base64 or hex of a 32-byte key, so nothing is
    /// ambiguous), anything else is text for [`Key::parse`].
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if let Ok(raw) = <&[u8; KEY_LEN]>::try_from(bytes) {
            return Ok(Self::from_bytes(raw));
        }
        Self::parse(std::str::from_utf8(bytes).map_err(|_| KeyError::Encoding)?)
    }

    /// A key written as base64 (standard or URL-safe, padded or not) or as 64 hex digits;
    /// surrounding whitespace (a trailing newline) is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes: Zeroizing<Vec<u8>> =
            if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(text).map_err(|_| KeyError::Encoding)?)
            } else {
                let padless = text.trim_end_matches('=');
                let decoded = URL_SAFE_NO_PAD
                    .decode(padless.replace('+', "-").replace('/', "_"))
                    .map_err(|_| KeyError::Encoding)?;
                Zeroizing::new(decoded)
            };
        let array: &[u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self::from_bytes(array))
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The current key, which seals every write, and the retired keys, which only open.
#[derive(Debug)]
pub struct Keyring {
    current: Key,
    retired: Vec<Key>,
    seal_access_tokens: bool,
}

impl Keyring {
    /// A keyring; a key listed twice (as current and retired, say) is refused.
    pub fn new(
        current: Key,
        retired: Vec<Key>,
        seal_access_tokens: bool,
    ) -> Result<Self, KeyError> {
        let mut seen = vec![current.id.as_str()];
        for key in &retired {
            if seen.contains(&key.id.as_str()) {
                return Err(KeyError::Duplicate(key.id.clone()));
            }
            seen.push(&key.id);
        }
        Ok(Self {
            current,
            retired,
            seal_access_tokens,
        })
    }

    /// The id of the key new values are sealed under.
    #[must_use]
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// The ids of the retired keys, in configuration order.
    pub fn retired_ids(&self) -> impl Iterator<Item = &str> {
        self.retired.iter().map(|k| k.id.as_str())
    }

    /// Whether access tokens are sealed too.
    #[must_use]
    pub fn seals_access_tokens(&self) -> bool {
        self.seal_access_tokens
    }

    /// Whether a key with this id is listed.
    #[must_use]
    pub fn knows(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.id == id)
    }

    /// Seals `plain` for `place` under the current key, with a fresh random nonce.
    #[must_use]
    pub fn seal(&self, place: Place<'_>, plain: &Secret) -> Secret {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = place.aad();
        let payload = Payload {
            msg: plain.expose().as_bytes(),
            aad: aad.as_bytes(),
        };
        // Encryption with a valid key and nonce fails only for messages beyond 2^38 bytes.
        let sealed = self
            .current
            .cipher
            .encrypt(&nonce, payload)
            .unwrap_or_default();
        let mut body = Vec::with_capacity(NONCE_LEN + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        Secret::new(format!(
            "{PREFIX}{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(body)
        ))
    }

    /// Opens a sealed value stored at `place`, with whichever listed key its id names.
    pub fn open(&self, place: Place<'_>, stored: &str) -> Result<Secret, Unreadable> {
        let (id, body) = split(stored).ok_or(Unreadable::Malformed)?;
        let key = self
            .key(id)
            .ok_or_else(|| Unreadable::UnknownKey(id.to_owned()))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Unreadable::Malformed)?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(Unreadable::Malformed);
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unreadable::Malformed)?;
        let aad = place.aad();
        let plain = key
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Unreadable::Tampered)?;
        let plain = String::from_utf8(plain).map_err(|_| Unreadable::Tampered)?;
        Ok(Secret::new(plain))
    }
}

/// The id and base64 body of a sealed value, if it is well-formed.
fn split(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (id, body) = rest.split_once(':')?;
    is_key_id(id).then_some((id, body))
}

/// Whether `id` looks like a key id: 8 lower-case hex digits.
#[must_use]
pub fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether a stored value is sealed (rather than plaintext).
#[must_use]
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key id a stored value names: `Some` for a well-formed sealed value only.
#[must_use]
pub fn key_id_of(stored: &str) -> Option<&str> {
    split(stored).map(|(id, _)| id)
}

/// What the store applies to every token it writes and reads: a keyring, or none (plaintext).
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Sealer {
    keyring: Option<Arc<Keyring>>,
}

impl Sealer {
    /// No key: tokens are stored as they are, and a sealed value cannot be opened.
    #[must_use]
    pub fn plaintext() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: Some(Arc::new(keyring)),
        }
    }

    #[must_use]
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// Whether values in `column` are written sealed.
    #[must_use]
    pub fn seals(&self, column: Column) -> bool {
        self.keyring
            .as_ref()
            .is_some_and(|k| column == Column::RefreshToken || k.seal_access_tokens)
    }

    /// The form in which `plain` is stored at `place`: sealed under the current key, or as it is.
    #[must_use]
    pub fn to_stored(&self, place: Place<'_>, plain: &Secret) -> Secret {
        match &self.keyring {
            Some(keyring) if self.seals(place.column) => keyring.seal(place, plain),
            _ => plain.clone(),
        }
    }

    /// The value behind what is stored at `place`: opened if sealed, as it is if plaintext.
    pub fn open(&self, place: Place<'_>, stored: &Secret) -> Result<Secret, Unreadable> {
        if !is_sealed(stored.expose()) {
            return Ok(stored.clone());
        }
        match &self.keyring {
            Some(keyring) => keyring.open(place, stored.expose()),
            None => Err(
                key_id_of(stored.expose()).map_or(Unreadable::Malformed, |id| {
                    Unreadable::UnknownKey(id.to_owned())
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0x00, 0x01, … 0x1f.
    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn key(n: u8) -> Key {
        Key::from_bytes(&[n; KEY_LEN])
    }

    fn place(id: i64, column: Column) -> Place<'static> {
        Place {
            id,
            name: "sharepoint",
            column,
        }
    }

    fn ring(current: u8, retired: &[u8]) -> Keyring {
        Keyring::new(
            key(current),
            retired.iter().map(|n| key(*n)).collect(),
            false,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_a_fresh_nonce_per_seal() {
        let ring = ring(1, &[]);
        let token = Secret::new("refresh-token-canary-123");
        let p = place(7, Column::RefreshToken);
        let a = ring.seal(p, &token);
        let b = ring.seal(p, &token);
        assert_ne!(a, b, "random nonce: the same token seals differently");
        assert!(
            a.expose()
                .starts_with(&format!("tw1:{}:", ring.current_id()))
        );
        assert!(!a.expose().contains("canary"));
        assert_eq!(ring.open(p, a.expose()).unwrap(), token);
        assert_eq!(ring.open(p, b.expose()).unwrap(), token);
        assert_eq!(key_id_of(a.expose()), Some(ring.current_id()));
    }

    #[test]
    fn another_row_name_or_column_does_not_open() {
        let ring = ring(1, &[]);
        let sealed = ring.seal(place(7, Column::RefreshToken), &Secret::new("t"));
        for other in [
            place(8, Column::RefreshToken),
            place(7, Column::AccessToken),
            Place {
                id: 7,
                name: "other",
                column: Column::RefreshToken,
            },
        ] {
            assert_eq!(
                ring.open(other, sealed.expose()),
                Err(Unreadable::Tampered),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_different_key_is_unknown_and_one_with_a_forged_id_is_tampered() {
        let sealed = ring(1, &[]).seal(place(1, Column::RefreshToken), &Secret::new("t"));
        let other = ring(2, &[]);
        assert_eq!(
            other.open(place(1, Column::RefreshToken), sealed.expose()),
            Err(Unreadable::UnknownKey(key(1).id().to_owned()))
        );
        let forged = sealed.expose().replacen(key(1).id(), other.current_id(), 1);
        assert_eq!(
            other.open(place(1, Column::RefreshToken), &forged),
            Err(Unreadable::Tampered)
        );
    }

    #[test]
    fn truncated_or_edited_text_is_refused() {
        let ring = ring(1, &[]);
        let p = place(1, Column::RefreshToken);
        let sealed = ring
            .seal(p, &Secret::new("a-refresh-token"))
            .expose()
            .to_owned();
        for cut in [4, 5, 6] {
            let cut = &sealed[..sealed.len() - cut];
            assert!(
                matches!(
                    ring.open(p, cut),
                    Err(Unreadable::Tampered | Unreadable::Malformed)
                ),
                "{cut}"
            );
        }
        assert_eq!(
            ring.open(p, &sealed[..HEAD_LEN + 10]),
            Err(Unreadable::Malformed)
        );
        assert_eq!(ring.open(p, "tw1:zz:abc"), Err(Unreadable::Malformed));
        assert_eq!(
            ring.open(p, &format!("{sealed}!")),
            Err(Unreadable::Malformed)
        );
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            ring.open(p, std::str::from_utf8(&flipped).unwrap()),
            Err(Unreadable::Tampered)
        );
    }

    #[test]
    fn retired_keys_open_and_the_current_key_seals() {
        let old = ring(1, &[]);
        let p = place(3, Column::AccessToken);
        let sealed = old.seal(p, &Secret::new("at"));
        let rotated = ring(2, &[1]);
        assert_eq!(rotated.open(p, sealed.expose()).unwrap().expose(), "at");
        let resealed = rotated.seal(p, &Secret::new("at"));
        assert_eq!(key_id_of(resealed.expose()), Some(key(2).id()));
        assert!(rotated.knows(key(1).id()) && !rotated.knows(key(3).id()));
        assert_eq!(
            Keyring::new(key(1), vec![key(2), key(1)], false).unwrap_err(),
            KeyError::Duplicate(key(1).id().to_owned())
        );
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_nothing_else() {
        let b64 = Key::parse(&format!("{A}\n")).unwrap();
        let unpadded = Key::parse(A.trim_end_matches('=')).unwrap();
        assert_eq!(b64.id(), unpadded.id());
        assert_eq!(
            b64.id(),
            Key::from_bytes(&std::array::from_fn(|i| i as u8)).id()
        );
        let hex = Key::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(hex.id(), Key::from_bytes(&[0xab; 32]).id());
        assert!(is_key_id(hex.id()));
        assert_eq!(Key::parse("c2hvcnQ=").unwrap_err(), KeyError::Length(5));
        assert_eq!(Key::parse("not a key!").unwrap_err(), KeyError::Encoding);
        assert_eq!(Key::parse("").unwrap_err(), KeyError::Length(0));
        assert!(!format!("{b64:?}").contains(A));
    }

    #[test]
    fn a_key_file_may_hold_the_32_raw_bytes() {
        let raw: [u8; 32] = std::array::from_fn(|i| if i == 31 { b'\n' } else { 0xf0 ^ i as u8 });
        assert_eq!(
            Key::from_file_bytes(&raw).unwrap().id(),
            Key::from_bytes(&raw).id(),
            "all 32 bytes, a final newline byte included"
        );
        let text = format!("{A}\n");
        assert_eq!(
            Key::from_file_bytes(text.as_bytes()).unwrap().id(),
            Key::parse(A).unwrap().id()
        );
        assert_eq!(
            Key::from_file_bytes(&[0xff; 33]).unwrap_err(),
            KeyError::Encoding
        );
        assert!(KeyError::Encoding.to_string().contains("raw"));
    }

    #[test]
    fn the_sealer_passes_plaintext_through_and_seals_access_tokens_only_when_asked() {
        let plain = Sealer::plaintext();
        let p = place(1, Column::RefreshToken);
        let token = Secret::new("rt");
        assert_eq!(plain.to_stored(p, &token), token);
        assert_eq!(plain.open(p, &token).unwrap(), token);
        let sealer = Sealer::new(ring(1, &[]));
        let stored = sealer.to_stored(p, &token);
        assert!(is_sealed(stored.expose()));
        assert_eq!(sealer.open(p, &stored).unwrap(), token);
        assert_eq!(
            plain.open(p, &stored),
            Err(Unreadable::UnknownKey(key(1).id().to_owned())),
            "without a key, a sealed value is never taken for plaintext"
        );
        let at = place(1, Column::AccessToken);
        assert_eq!(
            sealer.to_stored(at, &token),
            token,
            "access tokens readable by default"
        );
        let both = Sealer::new(Keyring::new(key(1), vec![], true).unwrap());
        assert!(is_sealed(both.to_stored(at, &token).expose()));
        assert_eq!(
            sealer.open(at, &token).unwrap(),
            token,
            "plaintext still reads"
        );
    }
}
