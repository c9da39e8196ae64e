//! The tokenwarden binary: parse the command line, run the command, turn an error into one line
//! on standard error and a documented exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One line, without the panic's message: nothing a panic carries may reach the terminal.
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("tokenwarden: error: internal error{place} (a bug: please report it)");
    }));
    let cli = tokenwarden::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        Err(e) => {
            // One line, whatever a name or a provider's message in the chain holds.
            let line = tokenwarden::cli::exit::one_line(&e);
            eprintln!(
                "tokenwarden: error: {}",
                tokenwarden::untrusted::Escaped(&line)
            );
            ExitCode::from(tokenwarden::cli::exit::code_for(&e))
        }
    }
}
