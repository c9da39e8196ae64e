//! Logging: tracing events to standard error as text (for terminals and journald) or JSON lines
//! (for containers and log shippers). Only tokenwarden's own events follow the configured level;
//! dependencies log warnings and errors only, so no library ever traces a request's contents.
//! Text from outside (a credential's name, a provider's message) cannot break a line or act on a
//! terminal: the text format escapes control characters in every field, span fields included;
//! JSON is escaped by serde. Imports `config` and `untrusted`.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;
use crate::untrusted::Escaped;

/// Installs the global subscriber. `level` was validated by the configuration.
pub fn init(format: LogFormat, level: &str) {
    // A fixed per-target filter, not `EnvFilter`: its directive parser pulls in regex, code every
    // start would load for a filter that never changes (RUST_LOG is not read either way).
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    let filter = Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("tokenwarden", level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::stderr);
    // journald stamps every line itself; a second timestamp is noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(filter)
            .init(),
        LogFormat::Text => {
            let text = builder.fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(escaped_field).delimited(" "),
            );
            if under_journald {
                text.with_ansi(false)
                    .without_time()
                    .finish()
                    .with(filter)
                    .init();
            } else {
                text.with_ansi(std::io::stderr().is_terminal())
                    .finish()
                    .with(filter)
                    .init();
            }
        }
    }
}

/// Writes one field of the text format as tracing-subscriber's default does (`name=value`, the
/// message bare, strings quoted), with every control character of the value escaped: `%name` and
/// the message are written as they are by default, newlines and ANSI sequences included.
fn escaped_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    // Metadata of `log` records, which the default formatter leaves out too.
    if name.starts_with("log.") {
        return Ok(());
    }
    let mut text = String::new();
    write!(text, "{value:?}")?;
    match name {
        "message" => write!(writer, "{}", Escaped(&text)),
        name => write!(
            writer,
            "{}={}",
            name.strip_prefix("r#").unwrap_or(name),
            Escaped(&text)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what a text subscriber with [`escaped_field`] writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_spans_and_messages_cannot_break_a_line() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || sink.clone())
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(escaped_field).delimited(" "))
            .finish();
        let name = "evil\n\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("handle", credential = %name);
            let _entered = span.enter();
            tracing::warn!(reason = name, error = %name, "refresh of {name} failed");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        for expected in [
            r"handle{credential=evil\n\u{1b}[2J}",
            r"refresh of evil\n\u{1b}[2J failed",
            r#"reason="evil\n\u{1b}[2J""#,
            r"error=evil\n\u{1b}[2J",
        ] {
            assert!(text.contains(expected), "{expected} in {text:?}");
        }
    }
}
