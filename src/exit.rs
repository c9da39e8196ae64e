//! Exit codes: the documented numbers, and [`ExitStatus`], the trait by which an error says its
//! own. Every error a command can end with implements it beside its definition (one `impl` per
//! boundary error: `ConfigError`, `StoreError`, `CommandError`, …); `cli::run` turns such an
//! error into a `cli::exit::Failure` that carries the code, and `main` exits with it. A new error
//! type that reaches the CLI (the token API, the proxy, invitations) implements `ExitStatus` with
//! the codes below; the compiler refuses `?` on one that does not. An error that wraps another
//! answers with the wrapped one's code where that decides (`TransferError::Store`). Imports
//! nothing of the crate.

/// Success.
pub const OK: u8 = 0;
/// A refresh failed: `run --once` or `refresh` could not refresh every credential it tried,
/// `token`/`exec` could not renew a token that expires too soon; or a provider's issuer metadata
/// could not be fetched.
pub const REFRESH_FAILED: u8 = 1;
/// Bad usage or configuration: a flag, the TOML, a missing secret or key file, an unknown provider.
pub const CONFIG: u8 = 2;
/// The database cannot be opened, read or written (missing, corrupt, read-only, locked).
pub const DATABASE: u8 = 3;
/// No such credential (by name, or by owner: none or several), or it has no valid access token
/// (`token`; a stored one that is not visible ASCII is not printed), or it is not active.
pub const NOT_FOUND: u8 = 4;
/// Stored tokens are sealed under a key the configuration does not list (or it lists none), or a
/// stored token does not open: nothing was claimed or sent.
pub const SEALING: u8 = 5;
/// `migrate`: claims run in the source database (a daemon or a command is using it); stop them
/// and run it again.
pub const BUSY: u8 = 6;
/// Anything else (the runtime or the scheduler failed).
pub const INTERNAL: u8 = 70;

/// An error that knows the exit code a command ending with it exits with.
pub trait ExitStatus: std::error::Error {
    /// One of this module's codes (or, for `exec`, the shell's for a command that cannot run).
    fn exit_code(&self) -> u8;
}

/// Another layer's error, boxed, that still says its exit code: what a caller hands back through
/// a lower module that cannot name its type (`enroll`'s store error through `lifecycle`, the CLI's
/// set-up error through `deliver`). Display, Debug and source are the boxed error's.
pub struct Boxed(pub Box<dyn ExitStatus + Send + Sync>);

impl<E: ExitStatus + Send + Sync + 'static> From<E> for Boxed {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Debug for Boxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Boxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Boxed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
