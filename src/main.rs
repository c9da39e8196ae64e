//! The tokenwarden binary: parse the command line, run the command, turn an error into one line
//! on standard error and a documented exit code.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// Most tokio worker threads, whatever the machine. Idle workers sleep without timers, so they
/// cost a stack and a malloc arena each, not wake-ups. One worker for everything (a
/// current_thread runtime) refreshed 30% slower than two on two cores (1129/s against 1624/s,
/// 10k due, instant endpoint: the runtime thread was the bottleneck); a sweep's writes queue on
/// one SQLite lock, so many more than a few do not help it.
const RUNTIME_WORKERS_MAX: usize = 4;

fn main() -> ExitCode {
    // One line, without the panic's message: nothing a panic carries may reach the terminal.
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("tokenwarden: error: internal error{place} (a bug: please report it)");
    }));
    // Before any secret is read: a process full of them leaves no core file behind.
    if let Err(e) = tokenwarden::core_dumps::forbid() {
        eprintln!("tokenwarden: warning: cannot turn core dumps off: {e}");
    }
    let cli = match tokenwarden::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(RUNTIME_WORKERS_MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden: error: cannot start the async runtime: {e}");
            return ExitCode::from(tokenwarden::cli::exit::INTERNAL);
        }
    };
    match runtime.block_on(tokenwarden::cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            // One line, whatever a name or a provider's message in the chain holds.
            let line = tokenwarden::cli::exit::one_line(failure.error());
            eprintln!(
                "tokenwarden: error: {}",
                tokenwarden::untrusted::Escaped(&line)
            );
            ExitCode::from(failure.code())
        }
    }
}

/// `--help` and `--version` print as clap renders them (exit 0); a usage error becomes one line
/// `tokenwarden: error: …` and exit 2, like every other error.
fn usage_error(e: &clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            tokenwarden::cli::exit::CONFIG
        } else {
            tokenwarden::cli::exit::OK
        };
        return ExitCode::from(code);
    }
    // clap's first paragraph is the error (a list of missing arguments continues on its own
    // lines); tips and usage follow after a blank line.
    let rendered = e.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = paragraph.join(" ");
    let first = first.trim_end_matches(':');
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let message = if message.is_empty() {
        "invalid command line"
    } else {
        message
    };
    eprintln!("tokenwarden: error: {message} (see `tokenwarden --help`)");
    ExitCode::from(tokenwarden::cli::exit::CONFIG)
}
