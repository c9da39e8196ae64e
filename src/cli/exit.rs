//! The errors a command reports about what the user asked for ([`CommandError`]), the one-line
//! rendering of any error, and [`Failure`]: a command's error with its exit code, which the error
//! itself says (`crate::exit::ExitStatus`, where the codes are documented).

pub use crate::exit::{
    BUSY, CONFIG, DATABASE, ExitStatus, INTERNAL, NOT_FOUND, OK, REFRESH_FAILED, SEALING,
};

/// The table shown at the end of `--help`.
pub const HELP: &str = "Exit codes: 0 ok; 1 a refresh or renewal failed; 2 usage or configuration \
error; 3 database error; 4 unknown or ambiguous credential, or no valid token; 5 tokens sealed \
under a key the configuration lacks; 6 migrate: the source database is in use (claims held); 70 \
internal error. `exec` exits with its command's code once \
the command runs (126/127: it cannot be run/found).";

/// What the user asked for cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("unknown provider {name:?} (configured: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownProvider { name: String, known: Vec<String> },
    #[error("credential {name:?} is {status}; it is not refreshed until it is authorized again")]
    NotActive { name: String, status: &'static str },
    #[error("{0}")]
    Input(String),
}

/// The error as one line: each cause in the chain once (many messages already embed their
/// source's), code snippets that parsers draw under a message left out.
#[must_use]
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains(" | ") && !l.starts_with('|'))
            .collect();
        let text = text.join(": ");
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// A command's error, with the exit code it ends with: decided where the typed error became a
/// `Failure` (`?` in a command), by that error's own [`ExitStatus`].
#[derive(Debug)]
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// The exit code.
    #[must_use]
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The error, with its chain of causes.
    #[must_use]
    pub fn error(&self) -> &anyhow::Error {
        &self.error
    }
}

impl<E: ExitStatus + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

impl ExitStatus for CommandError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::UnknownProvider { .. } | Self::Input(_) => CONFIG,
            _ => NOT_FOUND,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_drops_repeats_and_snippets() {
        let inner = std::io::Error::other(
            "TOML parse error at line 1, column 12\n  |\n1 | schedule = \n  |            ^\nstring values must be quoted\n",
        );
        let e = anyhow::Error::new(inner).context("configuration file a.toml");
        assert_eq!(
            one_line(&e),
            "configuration file a.toml: TOML parse error at line 1, column 12: string values must be quoted"
        );
        let e = anyhow::anyhow!("no such file").context("cannot read x: no such file");
        assert_eq!(one_line(&e), "cannot read x: no such file");
    }
}
