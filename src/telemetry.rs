//! Logging: tracing events to standard error as text (for terminals and journald) or JSON lines
//! (for containers and log shippers). Only tokenwarden's own events follow the configured level;
//! dependencies log warnings and errors only, so no library ever traces a request's contents.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` was validated by the configuration.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::new(format!("warn,tokenwarden={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps every line itself; a second timestamp is noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text if under_journald => builder.with_ansi(false).without_time().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
